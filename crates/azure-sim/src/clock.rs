//! The emulator's clock: real monotonic time since start plus an offset that tests move
//! forward with `POST /_sim/clock/advance`, so rate-limit windows can be crossed without
//! sleeping. Only the rate limiter reads it; latency and delays use real time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Milliseconds since the emulator started, plus any advance.
pub struct SimClock {
    start: Instant,
    offset_ms: AtomicU64,
}

impl SimClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            offset_ms: AtomicU64::new(0),
        }
    }

    /// Current time in milliseconds on the emulator's clock.
    pub fn now_ms(&self) -> u64 {
        let real = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        real.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}
