//! The writer task: the only reader of the channel and the only writer to the store. It
//! batches events, writes each batch in one transaction, holds events in memory while the
//! store is down (spilling the oldest beyond the memory limit), retries with capped backoff,
//! and replays spill files once the store answers again.
//!
//! An event leaves the writer's hands only when a commit that contains it succeeded or an
//! fsync of the spill file that contains it did; until then it stays in memory.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Counters;
use crate::spill::{self, Chunk, Pending, Spill};
use crate::{LedgerConfig, LedgerStore, UsageEvent};

const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// What the request path and the writer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub spill: Spill,
    pub counters: Counters,
    /// Last resort when `record` finds the channel full and the spill append fails: the
    /// writer takes these into memory on its next step.
    pub overflow: Mutex<Vec<UsageEvent>>,
}

/// Writing to the store, and when to try again after a failure.
struct Link {
    store: LedgerStore,
    shared: Arc<Shared>,
    write_timeout: Duration,
    retry_min: Duration,
    retry_max: Duration,
    backoff: Duration,
    /// No write (or spill read) before this instant: the last one failed.
    paused_until: Option<Instant>,
}

impl Link {
    fn paused(&self) -> bool {
        self.paused_until.is_some_and(|t| Instant::now() < t)
    }

    /// Writes one batch; on failure marks the store down and schedules the next try.
    async fn write(&mut self, events: &[UsageEvent]) -> bool {
        let counters = &self.shared.counters;
        let error = match tokio::time::timeout(self.write_timeout, self.store.write(events)).await {
            Ok(Ok(outcome)) => {
                Counters::add(&counters.written, events.len());
                Counters::add(&counters.duplicates, outcome.duplicates);
                if !counters.store_up.swap(true, Ordering::Relaxed) {
                    tracing::info!(target: "bulkhead::usage", "usage store is back");
                }
                self.backoff = self.retry_min;
                self.paused_until = None;
                return true;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.write_timeout),
        };
        Counters::add(&counters.write_errors, 1);
        counters.store_up.store(false, Ordering::Relaxed);
        tracing::warn!(
            target: "bulkhead::usage",
            %error,
            retry_in_ms = self.backoff.as_millis() as u64,
            "usage batch not written; kept for retry"
        );
        self.pause();
        false
    }

    fn pause(&mut self) {
        self.paused_until = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.retry_max);
    }
}

pub(crate) struct Writer {
    rx: mpsc::Receiver<UsageEvent>,
    link: Link,
    batch_size: usize,
    flush_interval: Duration,
    memory_limit: usize,
    memory: VecDeque<UsageEvent>,
    /// Earliest `finished_at` (µs) in `memory`; `i64::MAX` when empty.
    memory_oldest: i64,
    /// When the oldest unflushed event in memory arrived (the flush interval runs from it).
    waiting_since: Option<Instant>,
    /// Spill files to replay, oldest first.
    pending: VecDeque<Pending>,
    /// Events read from `pending[0]` and not yet committed.
    replay: Option<Chunk>,
}

impl Writer {
    pub fn new(
        rx: mpsc::Receiver<UsageEvent>,
        store: LedgerStore,
        shared: Arc<Shared>,
        config: &LedgerConfig,
        pending: Vec<Pending>,
    ) -> Self {
        // Zero intervals would make an idle or failing writer spin.
        let retry_min = config.retry_min.max(MIN_INTERVAL);
        let batch_size = config.batch_size.max(1);
        Self {
            rx,
            link: Link {
                store,
                shared,
                write_timeout: config.write_timeout,
                retry_min,
                retry_max: config.retry_max.max(retry_min),
                backoff: retry_min,
                paused_until: None,
            },
            batch_size,
            flush_interval: config.flush_interval.max(MIN_INTERVAL),
            // Below one batch, batches would go to disk before they could fill.
            memory_limit: config.memory_limit.max(batch_size),
            memory: VecDeque::new(),
            memory_oldest: i64::MAX,
            waiting_since: None,
            pending: pending.into(),
            replay: None,
        }
    }

    /// Runs until `stop` fires (or its sender is dropped), then flushes: see [`Self::finish`].
    pub async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = &mut stop => break,
                received = self.rx.recv() => match received {
                    Some(event) => {
                        self.push(event);
                        // Take what else is queued, so one step covers a burst.
                        while self.memory.len() < self.memory_limit {
                            match self.rx.try_recv() {
                                Ok(event) => self.push(event),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(wake) => {}
            }
            self.step().await;
        }
        self.finish().await;
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        // Regularly in any case: fsync what `record` spilled, and hand it to replay.
        let tick = now + self.flush_interval;
        if let Some(until) = self.link.paused_until.filter(|&t| t > now) {
            return tick.min(until);
        }
        let replaying = !self.pending.is_empty() || self.replay.is_some();
        let retry = self.store_down() && !self.memory.is_empty();
        if replaying || retry || self.memory.len() >= self.batch_size {
            return now;
        }
        match self.waiting_since {
            Some(since) => tick.min(since + self.flush_interval),
            None => tick,
        }
    }

    fn store_down(&self) -> bool {
        !self.link.shared.counters.store_up.load(Ordering::Relaxed)
    }

    fn push(&mut self, event: UsageEvent) {
        if self.memory.is_empty() {
            self.waiting_since = Some(Instant::now());
        }
        self.memory_oldest = self.memory_oldest.min(event.finished_at.timestamp_micros());
        self.memory.push_back(event);
    }

    /// Removes the first `n` events from memory (they are committed or fsynced).
    fn release(&mut self, n: usize) {
        self.memory.drain(..n);
        self.memory_oldest = self
            .memory
            .iter()
            .map(|e| e.finished_at.timestamp_micros())
            .min()
            .unwrap_or(i64::MAX);
        self.waiting_since = (!self.memory.is_empty()).then(Instant::now);
    }

    async fn step(&mut self) {
        self.take_overflow();
        self.sync_spill().await;
        if !self.link.paused() {
            if self.pending.is_empty() && self.replay.is_none() {
                self.rotate_spill().await;
            }
            if !self.pending.is_empty() {
                // The spill files go first; a full memory batch may follow, so a long replay
                // does not push new events to disk too.
                if self.replay_one().await && self.memory.len() >= self.batch_size {
                    self.write_memory_batch().await;
                }
            } else if self.memory_due() {
                self.write_memory_batch().await;
            }
        }
        self.enforce_memory_limit().await;
        self.publish();
    }

    fn memory_due(&self) -> bool {
        !self.memory.is_empty()
            && (self.memory.len() >= self.batch_size
                || self.store_down()
                || self
                    .waiting_since
                    .is_some_and(|t| t.elapsed() >= self.flush_interval))
    }

    fn take_overflow(&mut self) {
        let taken = std::mem::take(&mut *self.link.shared.overflow.lock());
        for event in taken {
            self.push(event);
        }
    }

    /// Group commit for lines `record` appended without an fsync.
    async fn sync_spill(&mut self) {
        if !self.link.shared.spill.is_dirty() {
            return;
        }
        let shared = Arc::clone(&self.link.shared);
        match tokio::task::spawn_blocking(move || shared.spill.sync_if_dirty()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.spill_error("fsync", &error.to_string()),
            Err(error) => self.spill_error("fsync", &error.to_string()),
        }
    }

    /// Hands what `record` and the memory limit spilled to replay.
    async fn rotate_spill(&mut self) {
        if self.link.shared.spill.is_empty() {
            return;
        }
        let shared = Arc::clone(&self.link.shared);
        match tokio::task::spawn_blocking(move || shared.spill.rotate()).await {
            Ok(Ok(Some(file))) => self.pending.push_back(file),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => self.spill_error("rotate", &error.to_string()),
            Err(error) => self.spill_error("rotate", &error.to_string()),
        }
    }

    fn spill_error(&self, what: &str, error: &str) {
        Counters::add(&self.link.shared.counters.spill_errors, 1);
        tracing::error!(target: "bulkhead::usage", what, %error, "usage spill file");
    }

    async fn write_memory_batch(&mut self) -> bool {
        let n = self.batch_size.min(self.memory.len());
        if n == 0 {
            return true;
        }
        let written = self.link.write(&self.memory.make_contiguous()[..n]).await;
        if written {
            self.release(n);
        }
        written
    }

    /// Writes the next chunk of the oldest spill file; true when it was committed.
    async fn replay_one(&mut self) -> bool {
        let Some(file) = self.pending.front() else {
            return false;
        };
        let chunk = match self.replay.take() {
            Some(chunk) => chunk,
            None => {
                let (path, offset, max) = (file.path.clone(), file.offset, self.batch_size);
                let read =
                    tokio::task::spawn_blocking(move || spill::read_chunk(&path, offset, max))
                        .await;
                match read {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                        self.spill_error("vanished before replay", &error.to_string());
                        if let Some(gone) = self.pending.pop_front() {
                            Counters::sub(&self.link.shared.counters.in_spill, gone.lines as usize);
                        }
                        return false;
                    }
                    Ok(Err(error)) => {
                        self.spill_error("read", &error.to_string());
                        self.link.pause();
                        return false;
                    }
                    Err(error) => {
                        self.spill_error("read", &error.to_string());
                        self.link.pause();
                        return false;
                    }
                }
            }
        };
        if !self.link.write(&chunk.events).await {
            self.replay = Some(chunk);
            return false;
        }
        let counters = &self.link.shared.counters;
        let done = chunk.events.len() + chunk.corrupt as usize;
        Counters::add(&counters.replayed, chunk.events.len());
        Counters::add(&counters.corrupt_lines, chunk.corrupt as usize);
        Counters::sub(&counters.in_spill, done);
        if let Some(file) = self.pending.front_mut() {
            file.offset = chunk.next_offset;
            file.lines = file.lines.saturating_sub(done as u64);
            if chunk.eof {
                // Every event in the file is committed; a crash before this line only means
                // the file is read again, and its events are skipped as duplicates.
                if let Err(error) = spill::remove(&file.path) {
                    self.spill_error("remove", &error.to_string());
                }
                if let Some(file) = self.pending.pop_front() {
                    Counters::sub(&self.link.shared.counters.in_spill, file.lines as usize);
                }
            }
        }
        true
    }

    /// Beyond the memory limit, the oldest events go to disk, down to half the limit (so
    /// each fsync covers many events). They stay in memory until the fsync succeeded.
    async fn enforce_memory_limit(&mut self) {
        if self.memory.len() <= self.memory_limit {
            return;
        }
        let n = self.memory.len() - self.memory_limit / 2;
        self.spill_memory(n).await;
    }

    async fn spill_memory(&mut self, n: usize) -> bool {
        let batch: Vec<UsageEvent> = self.memory.iter().take(n).cloned().collect();
        let shared = Arc::clone(&self.link.shared);
        let appended =
            tokio::task::spawn_blocking(move || shared.spill.append_synced(&batch)).await;
        let error = match appended {
            Ok(Ok(())) => {
                let counters = &self.link.shared.counters;
                Counters::add(&counters.spilled, n);
                Counters::add(&counters.in_spill, n);
                self.release(n);
                return true;
            }
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        self.spill_error("append", &error);
        false
    }

    fn publish(&self) {
        let counters = &self.link.shared.counters;
        counters
            .in_memory
            .store(self.memory.len() as u64, Ordering::Relaxed);
        let spill = &self.link.shared.spill;
        spill.clear_oldest_if_empty(self.pending.is_empty() && self.replay.is_none());
        let oldest = spill
            .oldest_micros()
            .unwrap_or(i64::MAX)
            .min(self.memory_oldest);
        counters.oldest_unwritten.store(oldest, Ordering::Relaxed);
    }

    /// Takes every queued event, writes memory to the store (or, failing that, to the spill
    /// file), then replays spill files while the store takes them. Returns with nothing held
    /// in memory unless the disk failed too, in which case each event is logged in full.
    async fn finish(mut self) {
        self.rx.close();
        while let Some(event) = self.rx.recv().await {
            self.push(event);
        }
        self.take_overflow();
        // Memory first: it is the only copy of these events. One try, no waiting for backoff.
        self.link.paused_until = None;
        while !self.memory.is_empty() {
            if !self.write_memory_batch().await {
                break;
            }
        }
        if !self.memory.is_empty() {
            let n = self.memory.len();
            if !self.spill_memory(n).await {
                let counters = &self.link.shared.counters;
                for event in self.memory.drain(..) {
                    Counters::add(&counters.lost, 1);
                    log_lost(&event);
                }
            }
        }
        if !self.store_down() {
            loop {
                if self.pending.is_empty() && self.replay.is_none() {
                    self.rotate_spill().await;
                }
                if self.pending.is_empty() || !self.replay_one().await {
                    break;
                }
            }
        }
        self.sync_spill().await;
        self.publish();
    }
}

/// The last resort for an event neither the store nor the disk would take: the log line
/// holds the whole event, so it can still be re-entered by hand.
pub(crate) fn log_lost(event: &UsageEvent) {
    let json = serde_json::to_string(event).unwrap_or_default();
    tracing::error!(target: "bulkhead::usage::lost", event = %json, "usage event not stored");
}
