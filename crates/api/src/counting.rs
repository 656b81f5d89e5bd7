//! Token counting kept off the async workers, with its work bounded.
//!
//! Counting is linear in the text (see `token_count`), and bounded per request: each text is
//! counted only up to the model's context window (past it, the request is refused or the
//! message dropped, whatever the rest says), and at most `BULKHEAD_TOKENIZE_MAX_BYTES` of
//! text are tokenized (a clear 400 beyond). A body small enough to count in well under a
//! millisecond is counted where it is; a larger one on a pool of its own, of
//! `BULKHEAD_TOKENIZE_THREADS` threads that run at a lower priority (nice 10) than the
//! threads serving requests: counting can never take every CPU from the requests being
//! served, and the scheduler lets a request thread in first. A request that waits longer
//! than `BULKHEAD_TOKENIZE_WAIT_MS` for its turn is refused with 503 and `Retry-After`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use token_count::CountBudget;

use crate::background::{Job, LowPriorityThreads};
use tokio::sync::Semaphore;

/// Bodies up to this size are counted inline: the slowest text to tokenize costs ~65 ns a
/// byte on a slow core, so at most about a millisecond.
pub const INLINE_BYTES: usize = 16 * 1024;

/// No counting slot came free in time.
#[derive(Debug, thiserror::Error)]
#[error("every token-counting slot is busy")]
pub struct Busy;

pub struct CountPool {
    /// The counting threads (they exit when this is dropped).
    threads: LowPriorityThreads,
    permits: Arc<Semaphore>,
    wait: Duration,
    max_bytes: u64,
    offloaded: AtomicU64,
    refused: AtomicU64,
}

impl CountPool {
    pub fn new(threads: usize, wait: Duration, max_bytes: u64) -> Self {
        let threads = threads.max(1);
        Self {
            threads: LowPriorityThreads::start("bulkhead-count", threads),
            permits: Arc::new(Semaphore::new(threads)),
            wait,
            max_bytes,
            offloaded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The budget of one count for a model with this context window.
    pub fn budget(&self, context_window: u32) -> CountBudget {
        CountBudget {
            max_text_tokens: u64::from(context_window),
            max_bytes: self.max_bytes,
        }
    }

    /// Runs `work` (a count over a body of `body_len` bytes): inline for a small body whose
    /// tokenizer is built (`ready`), else on the blocking pool once a slot is free (building a
    /// tokenizer takes tens of milliseconds, once).
    pub async fn run<T: Send + 'static>(
        &self,
        body_len: usize,
        ready: bool,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        if body_len <= INLINE_BYTES && ready {
            return Ok(work());
        }
        let permit = match tokio::time::timeout(
            self.wait,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Busy);
            }
        };
        self.offloaded.fetch_add(1, Ordering::Relaxed);
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _ = done.send(work());
        });
        if let Err(gone) = self.threads.submit(job, "token counting") {
            tracing::error!(%gone);
            return Err(Busy);
        }
        result.await.map_err(|_| {
            tracing::error!("a token count ended without an answer");
            Busy
        })
    }

    /// Counts run on the blocking pool, and counts refused for want of a slot, since start.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.offloaded.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_work_runs_inline_and_large_work_waits_for_a_slot() {
        let pool = Arc::new(CountPool::new(1, Duration::from_millis(50), 1 << 20));
        let here = std::thread::current().id();
        let inline = pool
            .run(10, true, move || std::thread::current().id())
            .await
            .unwrap();
        assert_eq!(inline, here, "a small body is counted where it is");
        let unbuilt = pool
            .run(10, false, || {
                std::thread::current().name().map(ToOwned::to_owned)
            })
            .await
            .unwrap();
        assert_eq!(
            unbuilt.as_deref(),
            Some("bulkhead-count-0"),
            "a small one whose tokenizer is not built yet goes to the pool too"
        );
        let name = pool
            .run(INLINE_BYTES + 1, true, || {
                std::thread::current().name().map(ToOwned::to_owned)
            })
            .await
            .unwrap();
        assert_eq!(
            name.as_deref(),
            Some("bulkhead-count-0"),
            "a large one on the pool"
        );
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(INLINE_BYTES + 1, true, move || {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv();
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv())
            .await
            .unwrap()
            .unwrap();
        // The only slot is taken: the next large count waits 50 ms, then is refused.
        assert!(pool.run(INLINE_BYTES + 1, true, || ()).await.is_err());
        release_tx.send(()).unwrap();
        assert!(holder.await.unwrap().is_ok());
        assert!(
            pool.run(INLINE_BYTES + 1, true, || ()).await.is_ok(),
            "free again"
        );
        assert_eq!(pool.totals(), (4, 1));
    }
}
