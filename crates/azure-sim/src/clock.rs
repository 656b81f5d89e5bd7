//! The emulator's clock: real monotonic time since start plus an offset that tests move
//! forward with `POST /_sim/clock/advance`, so rate-limit windows can be crossed without
//! sleeping. The rate limiter and the identity platform (token `iat`/`exp` and their checks)
//! read it; latency and delays use real time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Milliseconds since the emulator started, plus any advance.
pub struct SimClock {
    start: Instant,
    /// Unix time (ms) at `start`.
    start_unix_ms: u64,
    offset_ms: AtomicU64,
}

impl SimClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            start_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            offset_ms: AtomicU64::new(0),
        }
    }

    /// Current time in milliseconds on the emulator's clock.
    pub fn now_ms(&self) -> u64 {
        let real = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        real.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Unix time in seconds on the emulator's clock: real time plus any advance. Tokens are
    /// issued and checked against it, so advancing the clock expires them.
    pub fn unix_seconds(&self) -> i64 {
        let ms = self.start_unix_ms.saturating_add(self.now_ms());
        i64::try_from(ms / 1000).unwrap_or(i64::MAX)
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
