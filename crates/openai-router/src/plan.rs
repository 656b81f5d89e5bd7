//! Deciding where a call goes, without doing any I/O: which members of a target are
//! eligible now, in which order to try them, and what to answer when none is.
//!
//! - Priority groups: a lower group is used only when every member of the higher ones is
//!   unavailable (provisioned throughput first, then pay-as-you-go).
//! - Inside a group, weighted round robin: the n-th call lands on the member whose slice of
//!   `0..total_weight` holds `n % total_weight`, so shares are exact over any whole number of
//!   rounds, and concurrent callers only share one atomic counter.
//! - A member in cooldown (after a 429) or with an open breaker is skipped; a member whose
//!   last known remaining tokens cannot fit the request is tried after those that can.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::health::{Availability, HealthBook};
use crate::target::{Member, Target};

/// What to do when no member can take the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoMember {
    /// Every eligible member is cooling down after a 429; retry after this long.
    Throttled { retry_after: Duration },
    /// Every eligible member's breaker is open (or no member is eligible at all).
    Unavailable,
}

/// The members to try for one call, best first.
#[derive(Debug)]
pub struct Plan<'t> {
    pub order: Vec<&'t Member>,
}

/// Orders the members of `target` for a call that needs about `estimated_tokens`.
///
/// `rotation` is the target's round-robin counter; it advances once per call.
pub fn plan<'t>(
    target: &'t Target,
    health: &HealthBook,
    rotation: &AtomicU64,
    estimated_tokens: u64,
    now: Instant,
) -> Result<Plan<'t>, NoMember> {
    let turn = rotation.fetch_add(1, Ordering::Relaxed);
    let mut earliest_recovery: Option<Duration> = None;
    let mut order = Vec::with_capacity(target.members.len());
    let mut tight = Vec::new();
    for group in target.priority_groups() {
        let mut ready: Vec<&Member> = Vec::with_capacity(group.len());
        for member in group {
            match health.availability(&member.key, now) {
                Availability::Ready { remaining_tokens } => {
                    if remaining_tokens.is_some_and(|left| left < estimated_tokens) {
                        tight.push(member);
                    } else {
                        ready.push(member);
                    }
                }
                Availability::CoolingDown { for_ } => {
                    earliest_recovery = Some(earliest_recovery.map_or(for_, |e| e.min(for_)));
                }
                Availability::Open => {}
            }
        }
        order.extend(weighted_rotation(&ready, turn));
    }
    // Members that probably cannot fit the request still beat answering 429 ourselves.
    order.extend(tight);
    if order.is_empty() {
        return Err(match earliest_recovery {
            Some(retry_after) => NoMember::Throttled { retry_after },
            None => NoMember::Unavailable,
        });
    }
    Ok(Plan { order })
}

/// `members` rotated so the one whose weight slice holds `turn` comes first, the rest in
/// their weighted order after it.
fn weighted_rotation<'m>(members: &[&'m Member], turn: u64) -> Vec<&'m Member> {
    let total: u64 = members.iter().map(|m| u64::from(m.weight.max(1))).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut point = turn % total;
    let mut first = 0;
    for (i, member) in members.iter().enumerate() {
        let weight = u64::from(member.weight.max(1));
        if point < weight {
            first = i;
            break;
        }
        point -= weight;
    }
    members[first..]
        .iter()
        .chain(members[..first].iter())
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::health::BreakerSettings;
    use crate::target::tests::member;

    fn target(members: Vec<Member>) -> Target {
        Target::new("gpt-4o", members)
    }

    fn firsts(target: &Target, health: &HealthBook, calls: usize) -> HashMap<String, usize> {
        let rotation = AtomicU64::new(0);
        let mut counts = HashMap::new();
        for _ in 0..calls {
            let plan = plan(target, health, &rotation, 10, Instant::now()).unwrap();
            *counts.entry(plan.order[0].key.clone()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn weights_share_calls_exactly_over_whole_rounds() {
        let t = target(vec![member("a", 0, 3), member("b", 0, 1)]);
        let counts = firsts(&t, &HealthBook::new(BreakerSettings::default()), 1000);
        assert_eq!(counts["a/gpt-4o"], 750);
        assert_eq!(counts["b/gpt-4o"], 250);
    }

    #[test]
    fn a_lower_priority_group_is_used_only_when_the_higher_one_is_out() {
        let t = target(vec![member("ptu", 0, 1), member("paygo", 1, 1)]);
        let health = HealthBook::new(BreakerSettings::default());
        let now = Instant::now();
        let rotation = AtomicU64::new(0);
        let order: Vec<_> = plan(&t, &health, &rotation, 10, now)
            .unwrap()
            .order
            .iter()
            .map(|m| m.key.clone())
            .collect();
        assert_eq!(order, ["ptu/gpt-4o", "paygo/gpt-4o"]);
        health.throttled("ptu/gpt-4o", Duration::from_secs(5), now);
        let order: Vec<_> = plan(&t, &health, &rotation, 10, now)
            .unwrap()
            .order
            .iter()
            .map(|m| m.key.clone())
            .collect();
        assert_eq!(order, ["paygo/gpt-4o"]);
    }

    #[test]
    fn all_cooling_down_answers_the_earliest_recovery() {
        let t = target(vec![member("a", 0, 1), member("b", 1, 1)]);
        let health = HealthBook::new(BreakerSettings::default());
        let now = Instant::now();
        health.throttled("a/gpt-4o", Duration::from_secs(7), now);
        health.throttled("b/gpt-4o", Duration::from_secs(3), now);
        let result = plan(&t, &health, &AtomicU64::new(0), 10, now);
        assert_eq!(
            result.map(|p| p.order.len()),
            Err(NoMember::Throttled {
                retry_after: Duration::from_secs(3)
            })
        );
        // once the cooldown is over, b is back
        let later = now + Duration::from_secs(3);
        let order = plan(&t, &health, &AtomicU64::new(0), 10, later)
            .unwrap()
            .order;
        assert_eq!(order[0].key, "b/gpt-4o");
    }

    #[test]
    fn members_short_of_tokens_go_last() {
        let t = target(vec![member("a", 0, 1), member("b", 0, 1)]);
        let health = HealthBook::new(BreakerSettings::default());
        health.remaining_tokens("a/gpt-4o", 50);
        health.remaining_tokens("b/gpt-4o", 5_000);
        for turn in 0..4 {
            let order = plan(&t, &health, &AtomicU64::new(turn), 1_000, Instant::now())
                .unwrap()
                .order;
            assert_eq!(
                order.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
                ["b/gpt-4o", "a/gpt-4o"]
            );
        }
    }
}
