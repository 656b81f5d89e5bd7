//! Counters readable without a lock, for the gateway's metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub admitted: Counter,
    pub rate_limited: Counter,
    pub budget_exhausted: Counter,
    pub exceeds_limit: Counter,
    pub unavailable: Counter,
    pub redis_errors: Counter,
    pub fail_open: Counter,
    pub settled: Counter,
    pub settle_failures: Counter,
}

/// The limiter's counters since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Reservations admitted, wherever decided.
    pub admitted: u64,
    /// Refusals by kind.
    pub refused_rate_limited: u64,
    pub refused_budget_exhausted: u64,
    pub refused_exceeds_limit: u64,
    pub refused_unavailable: u64,
    /// Calls to Redis that failed or timed out (calls skipped while it is known down are not
    /// counted).
    pub redis_errors: u64,
    /// Reservations decided in process because Redis did not answer.
    pub fail_open: u64,
    /// Settlements applied (or with nothing to change).
    pub settled: u64,
    /// Settlements Redis did not take.
    pub settle_failures: u64,
    /// Admissions decided from a slice leased to this replica, without a round trip.
    pub lease_local: u64,
    /// Calls of the lease script that decided an admission (and leased slices).
    pub lease_grants: u64,
    /// Top-ups: lease script calls made off the callers' path when a slice was half spent.
    pub lease_top_ups: u64,
    /// Recalls published by calls refused while other replicas held slices.
    pub lease_recalls: u64,
    /// Slices given back (idle, recalled, refunds of another month, shutdown).
    pub lease_given_back: u64,
    /// Give-backs (or grants handing slices back) Redis did not take: their tokens stay
    /// consumed.
    pub lease_lost: u64,
}

impl Metrics {
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            admitted: self.admitted.get(),
            refused_rate_limited: self.rate_limited.get(),
            refused_budget_exhausted: self.budget_exhausted.get(),
            refused_exceeds_limit: self.exceeds_limit.get(),
            refused_unavailable: self.unavailable.get(),
            redis_errors: self.redis_errors.get(),
            fail_open: self.fail_open.get(),
            settled: self.settled.get(),
            settle_failures: self.settle_failures.get(),
            ..MetricsSnapshot::default()
        }
    }
}
