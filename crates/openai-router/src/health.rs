//! What the gateway has learnt about each upstream deployment: 429 cooldowns, circuit
//! breakers, and the upstream's last reported remaining tokens. Shared by every tenant and
//! every call that reaches the same deployment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

/// An upstream's `x-ratelimit-remaining-tokens` is about its current minute: older figures
/// say nothing.
const REMAINING_TOKENS_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures (5xx, resets, timeouts) that open the breaker.
    pub threshold: u32,
    /// How long it stays open before one half-open probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; its outcome closes or re-opens the breaker.
    HalfOpen,
}

/// Minutes of outcomes kept per member (for an operator's "recent error rate").
const RECENT_MINUTES: usize = 5;

#[derive(Debug)]
struct MemberHealth {
    cooldown_until: Option<Instant>,
    breaker: BreakerState,
    remaining_tokens: Option<(u64, Instant)>,
    /// Per minute (since the book's epoch) slot: the minute, answers, failures (5xx, resets,
    /// timeouts and 429s).
    recent: [(u64, u32, u32); RECENT_MINUTES],
}

impl Default for MemberHealth {
    fn default() -> Self {
        Self {
            cooldown_until: None,
            breaker: BreakerState::Closed { failures: 0 },
            remaining_tokens: None,
            recent: [(u64::MAX, 0, 0); RECENT_MINUTES],
        }
    }
}

impl MemberHealth {
    fn count(&mut self, minute: u64, failed: bool) {
        let slot = &mut self.recent[(minute % RECENT_MINUTES as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        if failed {
            slot.2 = slot.2.saturating_add(1);
        } else {
            slot.1 = slot.1.saturating_add(1);
        }
    }
}

/// How a member looks to the planner right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready { remaining_tokens: Option<u64> },
    CoolingDown { for_: Duration },
    Open,
}

#[derive(Debug)]
pub struct HealthBook {
    settings: BreakerSettings,
    epoch: Instant,
    members: RwLock<HashMap<String, Arc<Mutex<MemberHealth>>>>,
}

impl HealthBook {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            epoch: Instant::now(),
            members: RwLock::new(HashMap::new()),
        }
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / 60
    }

    fn member(&self, key: &str) -> Arc<Mutex<MemberHealth>> {
        if let Some(found) = self.members.read().get(key) {
            return Arc::clone(found);
        }
        Arc::clone(self.members.write().entry(key.to_owned()).or_default())
    }

    /// A read-only look, for planning.
    pub fn availability(&self, key: &str, now: Instant) -> Availability {
        let Some(member) = self.members.read().get(key).cloned() else {
            return Availability::Ready {
                remaining_tokens: None,
            };
        };
        let health = member.lock();
        if let Some(until) = health.cooldown_until.filter(|u| *u > now) {
            return Availability::CoolingDown { for_: until - now };
        }
        match health.breaker {
            BreakerState::Open { until } if until > now => Availability::Open,
            BreakerState::HalfOpen => Availability::Open,
            _ => Availability::Ready {
                remaining_tokens: health
                    .remaining_tokens
                    .filter(|(_, at)| now.duration_since(*at) < REMAINING_TOKENS_TTL)
                    .map(|(left, _)| left),
            },
        }
    }

    /// Claims the right to call `key` now: false while it cools down, while its breaker is
    /// open, or while its one half-open probe is in flight.
    pub fn try_acquire(&self, key: &str, now: Instant) -> bool {
        let member = self.member(key);
        let mut health = member.lock();
        if health.cooldown_until.is_some_and(|u| u > now) {
            return false;
        }
        match health.breaker {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if until <= now => {
                health.breaker = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// The call answered (anything but a 5xx): the breaker closes.
    pub fn succeeded(&self, key: &str) {
        let minute = self.minute(Instant::now());
        let member = self.member(key);
        let mut health = member.lock();
        health.breaker = BreakerState::Closed { failures: 0 };
        health.count(minute, false);
    }

    /// A 5xx, a reset or a timeout.
    pub fn failed(&self, key: &str, now: Instant) {
        let member = self.member(key);
        let mut health = member.lock();
        health.count(self.minute(now), true);
        health.breaker = match health.breaker {
            BreakerState::Closed { failures } if failures + 1 < self.settings.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            _ => BreakerState::Open {
                until: now + self.settings.open_for,
            },
        };
    }

    /// A 429: no call until `for_` has passed. It says nothing about the breaker.
    pub fn throttled(&self, key: &str, for_: Duration, now: Instant) {
        let member = self.member(key);
        let mut health = member.lock();
        health.count(self.minute(now), true);
        let until = now + for_;
        health.cooldown_until = Some(health.cooldown_until.map_or(until, |u| u.max(until)));
        if health.breaker == BreakerState::HalfOpen {
            // The probe reached a live upstream: that is enough to close.
            health.breaker = BreakerState::Closed { failures: 0 };
        }
    }

    /// The upstream's `x-ratelimit-remaining-tokens` from its last answer.
    pub fn remaining_tokens(&self, key: &str, left: u64) {
        self.member(key).lock().remaining_tokens = Some((left, Instant::now()));
    }

    /// Every member seen so far, with its breaker and how long its cooldown still runs: for
    /// the metrics endpoint.
    pub fn states(&self, now: Instant) -> Vec<(String, BreakerState, Option<Duration>)> {
        let members: Vec<_> = self
            .members
            .read()
            .iter()
            .map(|(key, member)| (key.clone(), Arc::clone(member)))
            .collect();
        members
            .into_iter()
            .map(|(key, member)| {
                let health = member.lock();
                let cooling = health
                    .cooldown_until
                    .filter(|until| *until > now)
                    .map(|until| until - now);
                (key, health.breaker, cooling)
            })
            .collect()
    }

    /// For an operator: the breaker (`closed`, `open`, `half_open`), the cooldown left, and
    /// the upstream's last `x-ratelimit-remaining-tokens` while still fresh.
    pub fn describe(
        &self,
        key: &str,
        now: Instant,
    ) -> (&'static str, Option<Duration>, Option<u64>) {
        let Some(member) = self.members.read().get(key).cloned() else {
            return ("closed", None, None);
        };
        let health = member.lock();
        let breaker = match health.breaker {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { until } if until > now => "open",
            BreakerState::Open { .. } | BreakerState::HalfOpen => "half_open",
        };
        let cooldown = health.cooldown_until.filter(|u| *u > now).map(|u| u - now);
        let remaining = health
            .remaining_tokens
            .filter(|(_, at)| now.duration_since(*at) < REMAINING_TOKENS_TTL)
            .map(|(left, _)| left);
        (breaker, cooldown, remaining)
    }

    /// Answers and failures of `key` over the last few minutes (this replica's calls), or
    /// `None` when it has not been called in them.
    pub fn recent(&self, key: &str, now: Instant) -> Option<(u64, u64)> {
        let member = self.members.read().get(key).cloned()?;
        let health = member.lock();
        let current = self.minute(now);
        let (ok, failed) = health
            .recent
            .iter()
            .filter(|(m, _, _)| *m <= current && current - *m < RECENT_MINUTES as u64)
            .fold((0u64, 0u64), |(o, f), (_, a, b)| {
                (o + u64::from(*a), f + u64::from(*b))
            });
        (ok + failed > 0).then_some((ok, failed))
    }

    pub fn breaker(&self, key: &str) -> BreakerState {
        self.members
            .read()
            .get(key)
            .map_or(BreakerState::Closed { failures: 0 }, |m| m.lock().breaker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> HealthBook {
        HealthBook::new(BreakerSettings {
            threshold: 3,
            open_for: Duration::from_secs(10),
        })
    }

    #[test]
    fn an_operator_sees_the_breaker_cooldown_and_the_last_minutes_outcomes() {
        let h = book();
        let now = Instant::now();
        assert_eq!(h.describe("a", now), ("closed", None, None));
        assert_eq!(h.recent("a", now), None, "never called");
        h.succeeded("a");
        h.succeeded("a");
        h.failed("a", Instant::now());
        h.throttled("a", Duration::from_secs(4), Instant::now());
        h.remaining_tokens("a", 900);
        let now = Instant::now();
        let (breaker, cooldown, remaining) = h.describe("a", now);
        assert_eq!(breaker, "closed");
        assert!(cooldown.is_some_and(|c| c <= Duration::from_secs(4)));
        assert_eq!(remaining, Some(900));
        assert_eq!(h.recent("a", now), Some((2, 2)));
        // Five minutes on, those outcomes have left the window.
        assert_eq!(h.recent("a", now + Duration::from_secs(6 * 60)), None);
        for _ in 0..2 {
            h.failed("a", now);
        }
        assert_eq!(h.describe("a", now).0, "open");
    }

    #[test]
    fn consecutive_failures_open_the_breaker_then_one_probe_half_opens_it() {
        let h = book();
        let now = Instant::now();
        for _ in 0..2 {
            h.failed("a", now);
        }
        assert!(h.try_acquire("a", now), "two failures keep it closed");
        h.failed("a", now);
        assert_eq!(h.availability("a", now), Availability::Open);
        assert!(!h.try_acquire("a", now + Duration::from_secs(9)));
        let later = now + Duration::from_secs(10);
        assert!(matches!(
            h.availability("a", later),
            Availability::Ready { .. }
        ));
        assert!(h.try_acquire("a", later), "one probe");
        assert!(!h.try_acquire("a", later), "only one");
        assert_eq!(h.availability("a", later), Availability::Open);
        h.failed("a", later);
        assert_eq!(
            h.breaker("a"),
            BreakerState::Open {
                until: later + Duration::from_secs(10)
            }
        );
        let again = later + Duration::from_secs(10);
        assert!(h.try_acquire("a", again));
        h.succeeded("a");
        assert_eq!(h.breaker("a"), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let h = book();
        let now = Instant::now();
        h.failed("a", now);
        h.failed("a", now);
        h.succeeded("a");
        h.failed("a", now);
        h.failed("a", now);
        assert!(h.try_acquire("a", now));
    }

    #[test]
    fn a_cooldown_lasts_exactly_its_retry_after() {
        let h = book();
        let now = Instant::now();
        h.throttled("a", Duration::from_millis(1500), now);
        assert_eq!(
            h.availability("a", now),
            Availability::CoolingDown {
                for_: Duration::from_millis(1500)
            }
        );
        assert!(!h.try_acquire("a", now + Duration::from_millis(1499)));
        assert!(h.try_acquire("a", now + Duration::from_millis(1500)));
        // a shorter second 429 does not shorten the first
        h.throttled("a", Duration::from_secs(5), now);
        h.throttled("a", Duration::from_secs(1), now);
        assert!(!h.try_acquire("a", now + Duration::from_secs(4)));
    }
}
