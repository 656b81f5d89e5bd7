//! The arithmetic of admission and settlement, pure: the in-process limiter runs it, and the
//! Redis scripts (`reserve.lua`, `settle.lua`) are a line-by-line transliteration of it, which
//! the shared behavioural tests hold to the same results.
//!
//! **Minute limits are token buckets.** A limit of `L` per minute is a bucket of capacity `L`
//! that refills continuously at `L / 60` per second. A reservation of `c` is admitted when the
//! bucket holds at least `c`, and takes it; otherwise it is refused with the exact time until
//! the shortfall has refilled. There is no window boundary to burst across: over any interval
//! of `t` seconds, admissions total at most `L + L·t/60` (a full bucket, then the refill), and
//! the sustained rate is `L` per minute. Levels count in 1/60000 of a token (`UNITS`), so a
//! limit of `L` per minute refills exactly `L` units per millisecond and all arithmetic is on
//! integers. Settlement refunds into the bucket (never above capacity) or charges the
//! difference, which may leave the bucket in debt: that debt, the usage of requests already
//! admitted beyond their estimate, is the only way a minute limit is exceeded.
//!
//! **Monthly budgets** are calendar months in UTC. A reservation is admitted only if
//! `used + estimate <= budget`, so concurrent requests never overshoot the budget with their
//! estimates. A settlement applies to the month it was reserved in; once that month is over,
//! its difference is dropped.

use crate::scope::{Dimension, Limits};

/// Bucket levels count in 1/60000 of a token: a limit of `L` per minute refills `L` units per
/// millisecond.
pub(crate) const UNITS: i64 = 60_000;

/// What one scope has consumed: the `tl tt rl rt m mu` fields of its Redis hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ScopeState {
    pub tokens: Option<Bucket>,
    pub requests: Option<Bucket>,
    /// `YYYYMM` of the month `month_used` counts.
    pub month: u32,
    pub month_used: u64,
}

/// A bucket's level (in [`UNITS`], negative when in debt) at a time (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub level: i64,
    pub at_ms: i64,
}

/// What is left of a quota, for `x-ratelimit-remaining-tokens` and `-requests`: the smallest
/// figure over every scope of the admission, `None` when nothing limits it.
///
/// `tokens` counts both minute buckets and monthly budgets (whichever runs out first);
/// `requests` counts the minute request buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Remaining {
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
}

impl Remaining {
    fn lower_tokens(&mut self, units_or_tokens: u64) {
        self.tokens = Some(
            self.tokens
                .map_or(units_or_tokens, |t| t.min(units_or_tokens)),
        );
    }

    fn lower_requests(&mut self, v: u64) {
        self.requests = Some(self.requests.map_or(v, |r| r.min(v)));
    }
}

/// The decision on a reservation; scopes are indices into the admission's scope list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admitted {
        month: u32,
        remaining: Remaining,
    },
    /// The estimate is larger than the limit itself: it can never be admitted.
    ExceedsLimit {
        scope: usize,
        dimension: Dimension,
        limit: u64,
    },
    BudgetExhausted {
        scope: usize,
        remaining_budget: u64,
        remaining: Remaining,
    },
    RateLimited {
        scope: usize,
        dimension: Dimension,
        retry_after_ms: u64,
        remaining: Remaining,
    },
}

/// A bucket's level at `now_ms`: refilled at `limit` units per ms, never above its capacity.
/// A scope never seen before starts full.
fn refilled(bucket: Option<Bucket>, limit: u64, now_ms: i64) -> i64 {
    let rate = to_i64(limit);
    let cap = rate.saturating_mul(UNITS);
    match bucket {
        None => cap,
        Some(b) => {
            let elapsed = now_ms.saturating_sub(b.at_ms).max(0);
            b.level
                .saturating_add(elapsed.saturating_mul(rate))
                .min(cap)
        }
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whole tokens in a level, 0 when in debt.
fn whole(level: i64) -> u64 {
    u64::try_from(level.max(0) / UNITS).unwrap_or(0)
}

/// Milliseconds until `rate` units per ms have refilled `shortfall` units, rounded up.
fn wait_ms(shortfall: i64, rate: u64) -> u64 {
    let rate = to_i64(rate).max(1);
    u64::try_from((shortfall + rate - 1) / rate).unwrap_or(0)
}

/// Decides a reservation of `estimate` tokens and one request against every scope at once,
/// and applies it to `states` only if every scope admits it.
///
/// Precedence when several limits refuse: an estimate over a limit itself, then an exhausted
/// budget (both permanent), then the longest wait of the minute buckets.
pub(crate) fn reserve(
    states: &mut [ScopeState],
    limits: &[Limits],
    estimate: u64,
    now_ms: i64,
    month: u32,
) -> Verdict {
    let cost = to_i64(estimate).saturating_mul(UNITS);
    let mut next = states.to_vec();
    let mut before = Remaining::default();
    let mut after = Remaining::default();
    let mut exceeds: Option<(usize, Dimension, u64)> = None;
    let mut budget: Option<(usize, u64)> = None;
    let mut rate: Option<(usize, Dimension, u64)> = None;
    let mut note_wait = |scope: usize, dim: Dimension, wait: u64| {
        if rate.is_none_or(|(_, _, w)| wait > w) {
            rate = Some((scope, dim, wait));
        }
    };

    for (i, (state, limits)) in next.iter_mut().zip(limits).enumerate() {
        if let Some(tpm) = limits.tokens_per_minute {
            let level = refilled(state.tokens, tpm, now_ms);
            if estimate > tpm {
                exceeds.get_or_insert((i, Dimension::TokensPerMinute, tpm));
            } else if level < cost {
                note_wait(i, Dimension::TokensPerMinute, wait_ms(cost - level, tpm));
            }
            before.lower_tokens(whole(level));
            after.lower_tokens(whole(level - cost));
            state.tokens = Some(Bucket {
                level: level - cost,
                at_ms: now_ms,
            });
        }
        if let Some(rpm) = limits.requests_per_minute {
            let level = refilled(state.requests, rpm, now_ms);
            if rpm == 0 {
                exceeds.get_or_insert((i, Dimension::RequestsPerMinute, rpm));
            } else if level < UNITS {
                note_wait(i, Dimension::RequestsPerMinute, wait_ms(UNITS - level, rpm));
            }
            before.lower_requests(whole(level));
            after.lower_requests(whole(level - UNITS));
            state.requests = Some(Bucket {
                level: level - UNITS,
                at_ms: now_ms,
            });
        }
        if let Some(monthly) = limits.monthly_tokens {
            let used = if state.month == month {
                state.month_used
            } else {
                0
            };
            let left = monthly.saturating_sub(used);
            if estimate > monthly {
                exceeds.get_or_insert((i, Dimension::MonthlyTokens, monthly));
            } else if estimate > left {
                budget.get_or_insert((i, left));
            }
            before.lower_tokens(left);
            after.lower_tokens(left.saturating_sub(estimate));
            state.month = month;
            state.month_used = used.saturating_add(estimate);
        }
    }

    if let Some((scope, dimension, limit)) = exceeds {
        return Verdict::ExceedsLimit {
            scope,
            dimension,
            limit,
        };
    }
    if let Some((scope, remaining_budget)) = budget {
        return Verdict::BudgetExhausted {
            scope,
            remaining_budget,
            remaining: before,
        };
    }
    if let Some((scope, dimension, retry_after_ms)) = rate {
        return Verdict::RateLimited {
            scope,
            dimension,
            retry_after_ms,
            remaining: before,
        };
    }
    states.copy_from_slice(&next);
    Verdict::Admitted {
        month,
        remaining: after,
    }
}

/// Settles one scope of an admission reserved in `month` for `estimate` tokens to `actual`:
/// refunds or charges the difference in the token bucket (refunds never above capacity) and
/// in the monthly usage if that month is still the one counted. Requests are not refunded:
/// an admitted request counts.
pub(crate) fn settle(
    state: &mut ScopeState,
    limits: &Limits,
    estimate: u64,
    actual: u64,
    month: u32,
    now_ms: i64,
) {
    let delta = i128::from(actual) - i128::from(estimate);
    if delta == 0 {
        return;
    }
    if let (Some(tpm), Some(bucket)) = (limits.tokens_per_minute, state.tokens) {
        let cap = to_i64(tpm).saturating_mul(UNITS);
        let level = refilled(Some(bucket), tpm, now_ms);
        let units = i64::try_from(delta.saturating_mul(i128::from(UNITS)))
            .unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
        state.tokens = Some(Bucket {
            level: level.saturating_sub(units).min(cap),
            at_ms: now_ms,
        });
    }
    if limits.monthly_tokens.is_some() && state.month == month {
        let used = i128::from(state.month_used) + delta;
        state.month_used = u64::try_from(used.max(0)).unwrap_or(u64::MAX);
    }
}

/// What a holder hands back to one scope: tokens leased in `month` and requests it did not
/// spend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Returned {
    pub tokens: u64,
    pub requests: u64,
    pub month: u32,
}

/// (`give_back` and `grant` are the model `lease.lua` transliterates; only Redis runs leases,
/// so here they serve the tests.)
///
/// Gives back what a holder did not spend: like a settlement of `tokens` to 0 (into the token
/// bucket, never above its capacity, and out of the month's usage if that month is still the
/// one counted), and the requests into the request bucket, never above its capacity.
#[cfg(test)]
pub(crate) fn give_back(state: &mut ScopeState, limits: &Limits, returned: Returned, now_ms: i64) {
    if returned.tokens > 0 {
        settle(state, limits, returned.tokens, 0, returned.month, now_ms);
    }
    if let (Some(rpm), Some(bucket), true) = (
        limits.requests_per_minute,
        state.requests,
        returned.requests > 0,
    ) {
        let cap = to_i64(rpm).saturating_mul(UNITS);
        let level = refilled(Some(bucket), rpm, now_ms);
        let units = to_i64(returned.requests).saturating_mul(UNITS);
        state.requests = Some(Bucket {
            level: level.saturating_add(units).min(cap),
            at_ms: now_ms,
        });
    }
}

/// What one scope leased to its holder beyond the call that asked (`tokens`, `requests`), and
/// what the scope has left after it (`None`: that dimension is unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slice {
    pub tokens: u64,
    pub requests: u64,
    pub left_tokens: Option<u64>,
    pub left_requests: Option<u64>,
}

/// The leasing step, in one go per admission (Redis runs it as one script):
///
/// 1. every scope takes back what the holder returns (`give_back`), whatever follows;
/// 2. the call itself (`need` tokens and one request) is decided exactly like [`reserve`];
/// 3. if it is admitted, each scope leases the holder a slice beyond it: at most `calls`
///    calls' worth (`calls × need` tokens, in whole calls of this size; `calls` requests),
///    and at most what the scope has left divided by twice its number of holders (`holders[i]`, the asker included). A slice
///    is taken from the scope exactly as reservations are, so leased tokens are consumed as far
///    as every other replica can tell.
///
/// **Invariant.** Whatever is leased has been taken from the scope's counters: admissions
/// made from slices can never total more than the scope admits when asked call by call.
/// Slices shrink as the scope nears its limit (the `holders` term), so near the limit each
/// call takes only its need and no holder sits on tokens another one could use.
#[cfg(test)]
#[expect(
    clippy::too_many_arguments,
    reason = "the script's arguments, one for one"
)]
pub(crate) fn grant(
    states: &mut [ScopeState],
    limits: &[Limits],
    returned: &[Returned],
    need: u64,
    calls: u64,
    holders: &[u64],
    now_ms: i64,
    month: u32,
) -> (Verdict, Vec<Slice>) {
    for ((state, limits), back) in states.iter_mut().zip(limits).zip(returned) {
        give_back(state, limits, *back, now_ms);
    }
    let verdict = reserve(states, limits, need, now_ms, month);
    if !matches!(verdict, Verdict::Admitted { .. }) {
        return (verdict, Vec::new());
    }
    let mut slices = Vec::with_capacity(states.len());
    for (i, (state, limits)) in states.iter_mut().zip(limits).enumerate() {
        let share = 2 * holders.get(i).copied().unwrap_or(1).max(1);
        let mut slice = Slice::default();
        let mut left_tokens: Option<u64> = None;
        if let Some(tpm) = limits.tokens_per_minute {
            let level = refilled(state.tokens, tpm, now_ms);
            left_tokens = Some(left_tokens.map_or(whole(level), |l| l.min(whole(level))));
        }
        if let Some(monthly) = limits.monthly_tokens {
            let left = monthly.saturating_sub(state.month_used);
            left_tokens = Some(left_tokens.map_or(left, |l| l.min(left)));
        }
        if let Some(left) = left_tokens {
            let most = calls.saturating_mul(need).min(left / share);
            // Whole calls of this size: no fragment is left that fits no call.
            let tokens = if need > 0 { most - most % need } else { 0 };
            slice.tokens = tokens;
            slice.left_tokens = Some(left - tokens);
            if let (Some(tpm), true) = (limits.tokens_per_minute, tokens > 0) {
                let level = refilled(state.tokens, tpm, now_ms);
                state.tokens = Some(Bucket {
                    level: level.saturating_sub(to_i64(tokens).saturating_mul(UNITS)),
                    at_ms: now_ms,
                });
            }
            if limits.monthly_tokens.is_some() {
                state.month_used = state.month_used.saturating_add(tokens);
            }
        }
        if let Some(rpm) = limits.requests_per_minute {
            let level = refilled(state.requests, rpm, now_ms);
            let left = whole(level);
            let requests = calls.min(left / share);
            slice.requests = requests;
            slice.left_requests = Some(left - requests);
            state.requests = Some(Bucket {
                level: level.saturating_sub(to_i64(requests).saturating_mul(UNITS)),
                at_ms: now_ms,
            });
        }
        slices.push(slice);
    }
    (verdict, slices)
}

/// `YYYYMM` of the UTC calendar month containing `unix_secs` (Hinnant's days-to-civil, the
/// same as the Lua scripts'): every replica and the scripts agree on month boundaries.
pub(crate) fn month_of(unix_secs: i64) -> u32 {
    let days = unix_secs.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    u32::try_from(y * 100 + m).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const MONTH: u32 = 202_311;

    fn limits(tpm: Option<u64>, rpm: Option<u64>, monthly: Option<u64>) -> Limits {
        Limits {
            tokens_per_minute: tpm,
            requests_per_minute: rpm,
            monthly_tokens: monthly,
        }
    }

    #[test]
    fn a_new_scope_starts_with_a_full_bucket_and_reports_what_is_left() {
        let mut s = [ScopeState::default()];
        let v = reserve(
            &mut s,
            &[limits(Some(1000), Some(10), None)],
            300,
            T0,
            MONTH,
        );
        assert_eq!(
            v,
            Verdict::Admitted {
                month: MONTH,
                remaining: Remaining {
                    tokens: Some(700),
                    requests: Some(9)
                }
            }
        );
    }

    #[test]
    fn a_shortfall_waits_exactly_until_it_has_refilled() {
        // 60_000 per minute = 1 token per ms.
        let l = [limits(Some(60_000), None, None)];
        let mut s = [ScopeState::default()];
        assert!(matches!(
            reserve(&mut s, &l, 60_000, T0, MONTH),
            Verdict::Admitted { .. }
        ));
        let v = reserve(&mut s, &l, 250, T0 + 100, MONTH);
        assert_eq!(
            v,
            Verdict::RateLimited {
                scope: 0,
                dimension: Dimension::TokensPerMinute,
                retry_after_ms: 150,
                remaining: Remaining {
                    tokens: Some(100),
                    requests: None
                }
            }
        );
        assert!(matches!(
            reserve(&mut s, &l, 250, T0 + 249, MONTH),
            Verdict::RateLimited { .. }
        ));
        assert!(matches!(
            reserve(&mut s, &l, 250, T0 + 250, MONTH),
            Verdict::Admitted { .. }
        ));
    }

    #[test]
    fn the_wait_rounds_up_to_the_next_millisecond() {
        // 60 per minute = 1 token per second; a shortfall of 1 token is 1000 ms.
        let l = [limits(Some(60), None, None)];
        let mut s = [ScopeState::default()];
        reserve(&mut s, &l, 60, T0, MONTH);
        let Verdict::RateLimited { retry_after_ms, .. } = reserve(&mut s, &l, 1, T0 + 1, MONTH)
        else {
            panic!("expected a refusal")
        };
        assert_eq!(retry_after_ms, 999);
    }

    #[test]
    fn an_estimate_over_the_limit_itself_is_never_admissible() {
        let mut s = [ScopeState::default()];
        let v = reserve(&mut s, &[limits(Some(100), None, None)], 101, T0, MONTH);
        assert_eq!(
            v,
            Verdict::ExceedsLimit {
                scope: 0,
                dimension: Dimension::TokensPerMinute,
                limit: 100
            }
        );
        let v = reserve(&mut s, &[limits(None, Some(0), None)], 1, T0, MONTH);
        assert!(matches!(
            v,
            Verdict::ExceedsLimit {
                dimension: Dimension::RequestsPerMinute,
                ..
            }
        ));
        assert_eq!(s, [ScopeState::default()]);
    }

    #[test]
    fn a_refusal_by_one_scope_consumes_nothing_from_another() {
        let l = [
            limits(Some(1000), Some(100), Some(10_000)),
            limits(Some(100), None, None),
        ];
        let mut s = [ScopeState::default(); 2];
        assert!(matches!(
            reserve(&mut s, &l, 80, T0, MONTH),
            Verdict::Admitted { .. }
        ));
        let snapshot = s;
        let v = reserve(&mut s, &l, 50, T0, MONTH);
        assert!(matches!(v, Verdict::RateLimited { scope: 1, .. }));
        assert_eq!(s, snapshot);
    }

    #[test]
    fn a_budget_admits_exactly_what_fits() {
        let l = [limits(None, None, Some(1000))];
        let mut s = [ScopeState::default()];
        for _ in 0..10 {
            assert!(matches!(
                reserve(&mut s, &l, 100, T0, MONTH),
                Verdict::Admitted { .. }
            ));
        }
        assert_eq!(
            reserve(&mut s, &l, 1, T0, MONTH),
            Verdict::BudgetExhausted {
                scope: 0,
                remaining_budget: 0,
                remaining: Remaining {
                    tokens: Some(0),
                    requests: None
                }
            }
        );
        // A new month starts from zero.
        assert!(matches!(
            reserve(&mut s, &l, 1000, T0, MONTH + 1),
            Verdict::Admitted { .. }
        ));
    }

    #[test]
    fn the_permanent_refusal_wins_over_a_wait() {
        let l = [limits(Some(100), None, None), limits(None, None, Some(10))];
        let mut s = [ScopeState::default(); 2];
        reserve(&mut s, &[l[0], Limits::default()], 100, T0, MONTH);
        assert!(matches!(
            reserve(&mut s, &l, 20, T0, MONTH),
            Verdict::ExceedsLimit {
                scope: 1,
                dimension: Dimension::MonthlyTokens,
                ..
            }
        ));
    }

    #[test]
    fn settlement_refunds_up_to_capacity_and_charges_into_debt() {
        let l = limits(Some(60_000), None, Some(1_000_000));
        let mut s = [ScopeState::default()];
        reserve(&mut s, &[l], 1000, T0, MONTH);
        settle(&mut s[0], &l, 1000, 400, MONTH, T0);
        assert_eq!(s[0].tokens.unwrap().level, (60_000 - 400) * UNITS);
        assert_eq!(s[0].month_used, 400);
        // A refund never lifts the bucket above capacity.
        settle(&mut s[0], &l, 1000, 0, MONTH, T0 + 60_000);
        assert_eq!(s[0].tokens.unwrap().level, 60_000 * UNITS);
        assert_eq!(s[0].month_used, 0);
        // A charge beyond the bucket leaves it in debt, which delays the next admission.
        reserve(&mut s, &[l], 60_000, T0 + 60_000, MONTH);
        settle(&mut s[0], &l, 60_000, 61_000, MONTH, T0 + 60_000);
        assert_eq!(s[0].tokens.unwrap().level, -1000 * UNITS);
        assert!(matches!(
            reserve(&mut s, &[l], 1, T0 + 60_000, MONTH),
            Verdict::RateLimited {
                retry_after_ms: 1001,
                ..
            }
        ));
    }

    #[test]
    fn a_settlement_after_its_month_leaves_the_new_month_alone() {
        let l = limits(None, None, Some(1000));
        let mut s = [ScopeState::default()];
        reserve(&mut s, &[l], 500, T0, MONTH);
        reserve(&mut s, &[l], 100, T0, MONTH + 1);
        settle(&mut s[0], &l, 500, 0, MONTH, T0);
        assert_eq!(s[0].month_used, 100);
    }

    #[test]
    fn a_lowered_limit_caps_the_bucket_at_the_new_capacity() {
        let mut s = [ScopeState::default()];
        reserve(&mut s, &[limits(Some(1000), None, None)], 1, T0, MONTH);
        let v = reserve(&mut s, &[limits(Some(10), None, None)], 10, T0 + 1, MONTH);
        assert!(matches!(
            v,
            Verdict::Admitted {
                remaining: Remaining {
                    tokens: Some(0),
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn months_agree_with_chrono_over_four_centuries() {
        use chrono::{Datelike, TimeZone, Utc};
        // Every ~9.7 days from 1900 to 2300, and both sides of every month boundary on the way.
        let mut secs: i64 = -2_208_988_800;
        while secs < 10_413_792_000 {
            let date = Utc.timestamp_opt(secs, 0).unwrap();
            let expected = u32::try_from(date.year()).unwrap() * 100 + date.month();
            assert_eq!(month_of(secs), expected, "{date}");
            secs += 838_861;
        }
        for year in 1970..2200 {
            for month in 1..=12 {
                let start = Utc
                    .with_ymd_and_hms(year, month, 1, 0, 0, 0)
                    .unwrap()
                    .timestamp();
                let ym = u32::try_from(year).unwrap() * 100 + month;
                assert_eq!(month_of(start), ym);
                let before = if month == 1 { ym - 100 + 11 } else { ym - 1 };
                assert_eq!(month_of(start - 1), before);
            }
        }
    }

    #[test]
    fn months_are_utc_calendar_months() {
        for (secs, month) in [
            (0, 197_001),
            (951_782_400, 200_002),   // 2000-02-29 00:00:00
            (951_868_799, 200_002),   // 2000-02-29 23:59:59
            (951_868_800, 200_003),   // 2000-03-01
            (1_704_067_199, 202_312), // 2023-12-31 23:59:59
            (1_704_067_200, 202_401), // 2024-01-01
            (-1, 196_912),
        ] {
            assert_eq!(month_of(secs), month, "{secs}");
        }
    }

    /// The lease arithmetic as replicas use it, on random histories: calls admitted from
    /// slices or by a grant, settlements above and below their estimates, slices given back,
    /// replicas that die holding slices. Time stands still, so minute buckets are budgets too.
    mod leases {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Call { replica: usize, estimate: u64 },
            Settle { pick: usize, actual_percent: u64 },
            GiveBack { replica: usize },
            Crash { replica: usize },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0..4usize, 0..400u64).prop_map(|(replica, estimate)| Op::Call { replica, estimate }),
                4 => (0..64usize, 0..200u64).prop_map(|(pick, actual_percent)| Op::Settle { pick, actual_percent }),
                1 => (0..4usize).prop_map(|replica| Op::GiveBack { replica }),
                1 => (0..4usize).prop_map(|replica| Op::Crash { replica }),
            ]
        }

        fn some_limits() -> impl Strategy<Value = Limits> {
            (
                prop::option::of(500..20_000u64),
                prop::option::of(1..200u64),
                prop::option::of(500..20_000u64),
            )
                .prop_filter("at least one limit", |(t, r, m)| {
                    t.is_some() || r.is_some() || m.is_some()
                })
                .prop_map(|(t, r, m)| limits(t, r, m))
        }

        #[derive(Debug, Default, Clone, Copy)]
        struct Replica {
            slice: Returned,
            dead: bool,
        }

        fn counts_tokens(l: &Limits) -> bool {
            l.tokens_per_minute.is_some() || l.monthly_tokens.is_some()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

            #[test]
            fn slices_never_let_replicas_admit_more_than_the_scope_holds(
                l in some_limits(),
                calls in 0..12u64,
                ops in prop::collection::vec(op(), 1..120),
            ) {
                let mut state = [ScopeState::default()];
                let mut replicas = [Replica::default(); 4];
                // (replica, estimate) of calls admitted and not settled yet.
                let mut open: Vec<(usize, u64)> = Vec::new();
                let (mut settled, mut overcharged, mut admitted_requests) = (0u64, 0u64, 0u64);
                for op in ops {
                    match op {
                        Op::Call { replica, estimate } => {
                            let r = replicas[replica];
                            if r.dead {
                                continue;
                            }
                            // A slice is only used in the month it was leased (the real one is
                            // also dropped when it is empty).
                            let covered = r.slice.month == MONTH
                                && (!counts_tokens(&l) || r.slice.tokens >= estimate)
                                && (l.requests_per_minute.is_none() || r.slice.requests > 0);
                            if covered {
                                let s = &mut replicas[replica].slice;
                                if counts_tokens(&l) {
                                    s.tokens -= estimate;
                                }
                                if l.requests_per_minute.is_some() {
                                    s.requests -= 1;
                                }
                            } else {
                                let back = std::mem::take(&mut replicas[replica].slice);
                                let holders = 1 + replicas
                                    .iter()
                                    .enumerate()
                                    .filter(|(i, o)| *i != replica && (o.slice.tokens > 0 || o.slice.requests > 0))
                                    .count() as u64;
                                let (verdict, slices) = grant(
                                    &mut state, &[l], &[back], estimate, calls, &[holders], T0, MONTH,
                                );
                                if !matches!(verdict, Verdict::Admitted { .. }) {
                                    continue;
                                }
                                let s = &mut replicas[replica].slice;
                                s.tokens += slices[0].tokens;
                                s.requests += slices[0].requests;
                                s.month = MONTH;
                            }
                            admitted_requests += 1;
                            open.push((replica, estimate));
                        }
                        Op::Settle { pick, actual_percent } => {
                            if open.is_empty() {
                                continue;
                            }
                            let (replica, estimate) = open.remove(pick % open.len());
                            if replicas[replica].dead {
                                // A dead replica settles nothing: its estimate stays consumed.
                                settled += estimate;
                                continue;
                            }
                            let actual = estimate * actual_percent / 100;
                            settled += actual;
                            if !counts_tokens(&l) {
                                continue;
                            }
                            // Into the replica's slice when it holds one of the call's month,
                            // else straight to the scope (as `Leases::settle` does).
                            let s = &mut replicas[replica].slice;
                            let has_slice = s.month == MONTH;
                            if actual <= estimate {
                                let refund = estimate - actual;
                                if has_slice {
                                    s.tokens += refund;
                                } else {
                                    give_back(&mut state[0], &l, Returned { tokens: refund, requests: 0, month: MONTH }, T0);
                                }
                            } else {
                                let charge = actual - estimate;
                                let taken = if has_slice { s.tokens.min(charge) } else { 0 };
                                s.tokens -= taken;
                                overcharged += charge;
                                if charge > taken {
                                    settle(&mut state[0], &l, 0, charge - taken, MONTH, T0);
                                }
                            }
                        }
                        Op::GiveBack { replica } => {
                            if !replicas[replica].dead {
                                let back = std::mem::take(&mut replicas[replica].slice);
                                give_back(&mut state[0], &l, back, T0);
                            }
                        }
                        Op::Crash { replica } => replicas[replica].dead = true,
                    }
                }
                let in_slices: u64 = replicas.iter().map(|r| r.slice.tokens).sum();
                let requests_in_slices: u64 = replicas.iter().map(|r| r.slice.requests).sum();
                let open_estimates: u64 = open.iter().map(|(_, e)| e).sum();
                let consumed = settled + open_estimates + in_slices;
                // Conservation: what the scope counts as consumed is exactly what was used,
                // is still reserved, or sits in a slice (a dead replica's included).
                if let Some(monthly) = l.monthly_tokens {
                    prop_assert_eq!(state[0].month_used, consumed);
                    // Safety: never more than the budget, but for what calls used beyond
                    // their estimates (charged, as a single reservation's would be).
                    prop_assert!(consumed <= monthly + overcharged, "{} > {} + {}", consumed, monthly, overcharged);
                }
                if let (Some(tpm), Some(bucket)) = (l.tokens_per_minute, state[0].tokens) {
                    let taken = i64::try_from(tpm).unwrap() * UNITS - bucket.level;
                    prop_assert_eq!(taken, i64::try_from(consumed).unwrap() * UNITS);
                    prop_assert!(consumed <= tpm + overcharged);
                }
                if let (Some(rpm), Some(bucket)) = (l.requests_per_minute, state[0].requests) {
                    let taken = i64::try_from(rpm).unwrap() * UNITS - bucket.level;
                    prop_assert_eq!(taken, i64::try_from(admitted_requests + requests_in_slices).unwrap() * UNITS);
                    prop_assert!(admitted_requests <= rpm);
                }
            }

            #[test]
            fn slices_shrink_as_the_scope_nears_its_limit(
                budget in 1_000..100_000u64,
                need in 1..500u64,
                calls in 1..32u64,
                holders in 1..8u64,
                used_percent in 0..100u64,
            ) {
                let l = limits(None, None, Some(budget));
                let mut state = [ScopeState { month: MONTH, month_used: budget * used_percent / 100, ..ScopeState::default() }];
                let left_before = budget - state[0].month_used;
                let (verdict, slices) = grant(&mut state, &[l], &[Returned::default()], need, calls, &[holders], T0, MONTH);
                if need > left_before {
                    prop_assert!(matches!(verdict, Verdict::BudgetExhausted { .. }), "{:?}", verdict);
                    prop_assert_eq!(state[0].month_used, budget * used_percent / 100);
                } else {
                    let slice = slices[0];
                    prop_assert!(slice.tokens <= calls * need);
                    prop_assert_eq!(slice.tokens % need, 0);
                    prop_assert!(slice.tokens * 2 * holders <= left_before - need);
                    prop_assert_eq!(slice.left_tokens, Some(left_before - need - slice.tokens));
                    prop_assert_eq!(state[0].month_used, budget - slice.left_tokens.unwrap());
                }
            }
        }
    }
}
