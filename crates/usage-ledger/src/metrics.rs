//! Counters the ledger keeps in atomics, so a `/metrics` scrape or a health check reads them
//! without taking a lock the writer or the request path could hold.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;

#[derive(Debug)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub written: AtomicU64,
    pub duplicates: AtomicU64,
    pub spilled: AtomicU64,
    pub replayed: AtomicU64,
    pub in_memory: AtomicU64,
    pub in_spill: AtomicU64,
    pub write_errors: AtomicU64,
    pub spill_errors: AtomicU64,
    pub corrupt_lines: AtomicU64,
    pub lost: AtomicU64,
    pub store_up: AtomicBool,
    /// Earliest `finished_at` (µs) of an event the writer holds unwritten; `i64::MAX` if none.
    pub oldest_unwritten: AtomicI64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            accepted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            in_memory: AtomicU64::new(0),
            in_spill: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            spill_errors: AtomicU64::new(0),
            corrupt_lines: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            store_up: AtomicBool::new(true),
            oldest_unwritten: AtomicI64::new(i64::MAX),
        }
    }
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: usize) {
        // Saturating: a spill file replayed twice after a crash must not wrap the gauge.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n as u64))
        });
    }

    pub fn snapshot(&self, in_channel: usize) -> LedgerMetrics {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let oldest = self.oldest_unwritten.load(Ordering::Relaxed);
        let lag = (oldest != i64::MAX).then(|| {
            let micros = Utc::now().timestamp_micros().saturating_sub(oldest);
            Duration::from_micros(u64::try_from(micros).unwrap_or(0))
        });
        LedgerMetrics {
            accepted: load(&self.accepted),
            written: load(&self.written),
            duplicates: load(&self.duplicates),
            spilled: load(&self.spilled),
            replayed: load(&self.replayed),
            in_channel: in_channel as u64,
            in_memory: load(&self.in_memory),
            in_spill: load(&self.in_spill),
            write_errors: load(&self.write_errors),
            spill_errors: load(&self.spill_errors),
            corrupt_spill_lines: load(&self.corrupt_lines),
            lost: load(&self.lost),
            store_up: self.store_up.load(Ordering::Relaxed),
            lag,
        }
    }
}

/// A point-in-time view of the ledger. Counters only grow; `in_*` are gauges. Once the
/// ledger is idle: `accepted == written - duplicates + in_spill` (plus `lost`, which only a
/// failing disk after shutdown can make non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerMetrics {
    /// Events handed to `record`.
    pub accepted: u64,
    /// Events confirmed in the store (committed, whether new or already there).
    pub written: u64,
    /// Of `written`, events the store already held (retries after an ambiguous commit).
    pub duplicates: u64,
    /// Events appended to a spill file (by a full channel, the memory limit or shutdown).
    pub spilled: u64,
    /// Events read back from spill files and committed.
    pub replayed: u64,
    /// Events queued between `record` and the writer.
    pub in_channel: u64,
    /// Events the writer holds in memory.
    pub in_memory: u64,
    /// Events in spill files not yet replayed.
    pub in_spill: u64,
    /// Failed batch writes (each is retried).
    pub write_errors: u64,
    /// Failed spill appends or reads (the events stay in memory and are retried).
    pub spill_errors: u64,
    /// Spill lines that could not be parsed (torn by a crash): the only loss a crash causes.
    pub corrupt_spill_lines: u64,
    /// Events recorded after shutdown whose spill append failed; logged in full instead.
    pub lost: u64,
    /// Whether the last write attempt succeeded.
    pub store_up: bool,
    /// Age of the oldest event in memory or in a spill file (by `finished_at`).
    pub lag: Option<Duration>,
}

impl LedgerMetrics {
    /// Events accepted and not yet in the store: queued, in memory or spilled.
    pub fn buffered(&self) -> u64 {
        self.in_channel + self.in_memory + self.in_spill
    }
}
