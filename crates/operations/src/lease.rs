//! The rules of leases, pure. The SQL store implements the same rule in its claim query:
//! an operation is claimable when it has not started, or when it is running under a lease
//! that has run out (its replica died or stalled).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::Status;

/// Whether a replica may take an operation in `status` whose lease runs `until`, at `now`.
pub fn claimable(status: Status, until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match status {
        Status::NotStarted => true,
        Status::Running => until.is_none_or(|until| until <= now),
        Status::Succeeded | Status::Failed | Status::Canceled => false,
    }
}

/// When a lease taken or extended at `now` for `lease` ends.
pub fn until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

/// How often a runner extends its lease: three times per lease, so two missed heartbeats
/// (a stalled store, a long pause) still leave it held.
pub fn heartbeat_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unstarted_operations_and_running_ones_with_a_lapsed_lease_are_claimable() {
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(5);
        let earlier = now - chrono::Duration::seconds(5);
        let cases = [
            (Status::NotStarted, None, true),
            (Status::NotStarted, Some(later), true),
            (Status::Running, Some(later), false),
            (Status::Running, Some(now), true),
            (Status::Running, Some(earlier), true),
            (Status::Running, None, true),
            (Status::Succeeded, Some(earlier), false),
            (Status::Failed, None, false),
            (Status::Canceled, None, false),
        ];
        for (status, until, expected) in cases {
            assert_eq!(
                claimable(status, until, now),
                expected,
                "{status:?} {until:?}"
            );
        }
    }

    #[test]
    fn a_lease_is_renewed_well_before_it_ends() {
        let lease = Duration::from_secs(15);
        assert_eq!(heartbeat_every(lease), Duration::from_secs(5));
        assert!(heartbeat_every(lease) * 2 < lease);
        let now = Utc::now();
        assert_eq!(until(now, lease) - now, chrono::Duration::seconds(15));
    }
}
