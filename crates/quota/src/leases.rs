//! Leases: most admissions decided in this process, with the same guarantee as asking Redis
//! for every call.
//!
//! **Design.** When a call finds no slice of its scopes here, it asks Redis once (`lease.lua`):
//! Redis decides the call exactly as it decides a single reservation and, if it is admitted,
//! leases this replica a *slice* of each scope beyond it, taken from the scope's counters as if
//! it were reserved (`window::grant`). The next calls are admitted from the slices without a
//! round trip; their settlements refund into the slice or charge it. A slice goes back to
//! Redis when it has not been used for `idle`, when its month is over, when its limits
//! changed, when another replica recalls it, and on shutdown.
//!
//! **Invariant.** Every token and request a slice holds has been taken from the scope's
//! counters in Redis, so admissions from slices can never total more than Redis would admit
//! call by call: across N replicas a limit of K is never exceeded. What a slice gives back it
//! gives only once (it is zeroed here before the give-back is sent; if the give-back is lost,
//! the tokens stay consumed: a lost give-back can strand tokens, never create them). A replica
//! that dies strands at most its slices, which are never taken over by another (the dead
//! replica may have spent them). Slices are sized so that this stays small: at most `calls`
//! calls' worth, and at most what the scope has left divided by twice its number of holders,
//! so near a limit each call takes only its need.
//!
//! **Recall.** A call refused while other replicas hold slices of its scopes publishes a
//! recall; every holder gives its slices of those scopes back at once, and the refused call
//! asks again (for at most `recall_wait`). So a limit is not only never exceeded but also
//! reached: the last tokens are not left on an idle replica.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::redis_store::{Failure, Grant, RedisStore};
use crate::scope::{Limits, Scope};
use crate::window::{self, Remaining, Returned, Slice, Verdict};

/// Tries of a call refused while slices are held elsewhere (5, 10, 20, 40, 40... ms apart).
const MAX_TRIES: u32 = 8;

/// How leases are sized and kept.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// A slice holds at most this many calls' worth (tokens and requests) beyond the call
    /// that asked for it. 0 turns leases off: every call asks Redis.
    pub calls: u64,
    /// A slice unused this long goes back to Redis.
    pub idle: Duration,
    /// How long Redis keeps a holder's record without hearing from it (a dead replica's
    /// record lapses after it; its slices stay consumed).
    pub ttl: Duration,
    /// How long a refused call waits for recalled slices before its refusal stands.
    pub recall_wait: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            calls: 8,
            idle: Duration::from_secs(1),
            ttl: Duration::from_secs(30),
            recall_wait: Duration::from_millis(100),
        }
    }
}

/// This replica's slice of one scope.
#[derive(Debug, Clone, Copy)]
struct Held {
    tokens: u64,
    requests: u64,
    month: u32,
    limits: Limits,
    /// What the scope had left in Redis right after the slice (for remaining headers).
    left_tokens: Option<u64>,
    left_requests: Option<u64>,
    used_at: Instant,
    granted_at: Instant,
    /// Grants in flight for the scope.
    in_flight: u32,
    /// Recalled while a grant was in flight: what that grant brings goes straight back.
    recalled: bool,
}

impl Held {
    fn empty(limits: Limits) -> Self {
        let now = Instant::now();
        Self {
            tokens: 0,
            requests: 0,
            month: 0,
            limits,
            left_tokens: None,
            left_requests: None,
            used_at: now,
            granted_at: now,
            in_flight: 0,
            recalled: false,
        }
    }

    /// Adds a granted slice. Returns what must go back at once: a slice of another month or
    /// other limits still held (from a concurrent grant), and everything if the scope was
    /// recalled while this grant was on its way. A give-back names the month its tokens were
    /// leased in (Redis refunds a month's usage only to that month).
    fn receive(
        &mut self,
        slice: Slice,
        month: u32,
        limits: Limits,
        now: Instant,
    ) -> Vec<(Limits, Returned)> {
        let mut back = Vec::new();
        if (self.month != month || self.limits != limits) && !self.is_empty() {
            back.push((self.limits, self.take()));
        }
        self.month = month;
        self.limits = limits;
        self.left_tokens = slice.left_tokens;
        self.left_requests = slice.left_requests;
        self.used_at = now;
        self.granted_at = now;
        self.tokens += slice.tokens;
        self.requests += slice.requests;
        if std::mem::take(&mut self.recalled) && !self.is_empty() {
            back.push((limits, self.take()));
        }
        back
    }

    fn is_empty(&self) -> bool {
        self.tokens == 0 && self.requests == 0
    }

    /// Takes everything out, for a give-back.
    fn take(&mut self) -> Returned {
        let back = Returned {
            tokens: self.tokens,
            requests: self.requests,
            month: self.month,
        };
        self.tokens = 0;
        self.requests = 0;
        back
    }
}

fn counts_tokens(limits: &Limits) -> bool {
    limits.tokens_per_minute.is_some() || limits.monthly_tokens.is_some()
}

fn current_month() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    window::month_of(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// What a lease-mode reservation decided.
pub(crate) struct Decided {
    pub verdict: Verdict,
    /// Decided from slices held here, without Redis.
    pub local: bool,
}

/// Counters of the lease machinery.
#[derive(Debug, Default)]
pub(crate) struct LeaseCounts {
    pub local: crate::metrics::Counter,
    pub grants: crate::metrics::Counter,
    pub top_ups: crate::metrics::Counter,
    pub recalls: crate::metrics::Counter,
    pub given_back: crate::metrics::Counter,
    pub lost: crate::metrics::Counter,
}

pub(crate) struct Leases {
    holder: String,
    config: LeaseConfig,
    held: Mutex<HashMap<Scope, Held>>,
    started: std::sync::Once,
    pub counts: LeaseCounts,
}

impl Leases {
    pub(crate) fn new(config: LeaseConfig) -> Self {
        Self {
            holder: format!(
                "{}-{:x}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            ),
            config,
            held: Mutex::new(HashMap::new()),
            started: std::sync::Once::new(),
            counts: LeaseCounts::default(),
        }
    }

    /// Admits the call from the slices held here if every scope has enough; nothing is
    /// taken otherwise. `true` with the verdict: a slice is down to half its calls and no
    /// grant is on its way, so the caller starts a top-up ([`Leases::top_up`], already
    /// counted in flight here) and the next calls find a slice instead of waiting on Redis.
    pub(crate) fn try_local(
        &self,
        scopes: &[(Scope, Limits)],
        estimate: u64,
    ) -> Option<(Verdict, bool)> {
        let month = current_month();
        let now = Instant::now();
        let mut held = self.held.lock();
        for (scope, limits) in scopes {
            let h = held.get(scope)?;
            if h.limits != *limits || h.month != month {
                return None;
            }
            if counts_tokens(limits) && h.tokens < estimate {
                return None;
            }
            if limits.requests_per_minute.is_some() && h.requests == 0 {
                return None;
            }
        }
        let mut remaining = Remaining::default();
        for (scope, limits) in scopes {
            let h = held.get_mut(scope)?;
            if counts_tokens(limits) {
                h.tokens -= estimate;
                let seen = h.left_tokens.unwrap_or(0).saturating_add(h.tokens);
                remaining.tokens = Some(remaining.tokens.map_or(seen, |t| t.min(seen)));
            }
            if limits.requests_per_minute.is_some() {
                h.requests -= 1;
                let seen = h.left_requests.unwrap_or(0).saturating_add(h.requests);
                remaining.requests = Some(remaining.requests.map_or(seen, |r| r.min(seen)));
            }
            h.used_at = now;
        }
        let half = self.config.calls / 2;
        let low = scopes.iter().any(|(scope, limits)| {
            held.get(scope).is_some_and(|h| {
                h.in_flight == 0
                    && ((limits.requests_per_minute.is_some() && h.requests <= half)
                        || (counts_tokens(limits)
                            && h.tokens < estimate.max(1).saturating_mul(half)))
            })
        });
        let top_up = low
            && half > 0
            && scopes
                .iter()
                .all(|(scope, _)| held.get(scope).is_some_and(|h| h.in_flight == 0));
        if top_up {
            for (scope, _) in scopes {
                if let Some(h) = held.get_mut(scope) {
                    h.in_flight += 1;
                }
            }
        }
        self.counts.local.inc();
        Some((Verdict::Admitted { month, remaining }, top_up))
    }

    /// Starts [`Leases::top_up`] on the current runtime (or, with none, counts it out).
    pub(crate) fn spawn_top_up(
        self: &Arc<Self>,
        redis: &Arc<RedisStore>,
        scopes: &[(Scope, Limits)],
        estimate: u64,
    ) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(Arc::clone(self).top_up(
                    Arc::clone(redis),
                    scopes.to_vec(),
                    estimate,
                ));
            }
            Err(_) => {
                let mut held = self.held.lock();
                for (scope, _) in scopes {
                    if let Some(h) = held.get_mut(scope) {
                        h.in_flight = h.in_flight.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// Leases more of `scopes` while what is held of them is still spendable: one lease
    /// script call that gives nothing back and asks for a call of `estimate` plus slices.
    /// What Redis reserves for that call (there is none) joins the slice: it is budget
    /// counted in Redis and held here, like the rest of a slice, so nothing can be admitted
    /// twice. Refused, it changes nothing: the next call that finds too little asks Redis
    /// itself. [`Leases::try_local`] counted it in flight; it is counted out here whatever
    /// happens.
    async fn top_up(
        self: Arc<Self>,
        redis: Arc<RedisStore>,
        scopes: Vec<(Scope, Limits)>,
        estimate: u64,
    ) {
        let month = current_month();
        let returned = vec![
            Returned {
                tokens: 0,
                requests: 0,
                month,
            };
            scopes.len()
        ];
        let keep = vec![true; scopes.len()];
        self.counts.top_ups.inc();
        let answer = self
            .lease_call(&redis, &scopes, estimate, &returned, &keep)
            .await;
        let stale = self.absorb(&scopes, &answer, Some(estimate));
        if let Err(error) = &answer {
            tracing::debug!(%error, "quota: a top-up failed; calls ask Redis when the slice is spent");
        }
        for (scope, limits, back) in stale {
            self.give_back(&redis, vec![(scope, limits, back)]).await;
        }
    }

    /// Decides the call: from the slices held here, else by Redis (giving back what is held
    /// of these scopes and taking new slices), recalling other holders' slices once if Redis
    /// refuses while they hold some.
    pub(crate) async fn reserve(
        this: &Arc<Self>,
        redis: &Arc<RedisStore>,
        scopes: &[(Scope, Limits)],
        estimate: u64,
    ) -> Result<Decided, Failure> {
        if let Some((verdict, top_up)) = this.try_local(scopes, estimate) {
            if top_up {
                this.spawn_top_up(redis, scopes, estimate);
            }
            return Ok(Decided {
                verdict,
                local: true,
            });
        }
        this.start(redis);
        let deadline = Instant::now() + this.config.recall_wait;
        let mut pause = Duration::from_millis(5);
        let mut tries = 0;
        loop {
            tries += 1;
            let (verdict, others) = this.grant(redis, scopes, estimate).await?;
            let refused_for_now = matches!(
                verdict,
                Verdict::BudgetExhausted { .. } | Verdict::RateLimited { .. }
            );
            // Slices may be held elsewhere (recalled below) or here, brought by grants of
            // other calls that were on their way (handed back by the next try).
            let held_somewhere = others > 0 || this.holds_any(scopes);
            if !refused_for_now
                || !held_somewhere
                || tries >= MAX_TRIES
                || Instant::now() >= deadline
            {
                return Ok(Decided {
                    verdict,
                    local: false,
                });
            }
            if others > 0 {
                // The holders give back at once. Asked again on every try: a slice granted
                // after the last recall (its call was on its way) would stay out otherwise.
                // Both names: replicas of an earlier release still know only the legacy one.
                let mut message = this.holder.clone();
                for (scope, _) in scopes {
                    message.push('\t');
                    message.push_str(scope.as_str());
                    message.push('\t');
                    message.push_str(&scope.legacy());
                }
                if redis.publish(&redis.channel(), &message).await.is_ok() {
                    this.counts.recalls.inc();
                }
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(40));
            if let Some((verdict, top_up)) = this.try_local(scopes, estimate) {
                if top_up {
                    this.spawn_top_up(redis, scopes, estimate);
                }
                return Ok(Decided {
                    verdict,
                    local: true,
                });
            }
        }
    }

    /// Whether this replica holds, or is being granted, anything of these scopes.
    fn holds_any(&self, scopes: &[(Scope, Limits)]) -> bool {
        let held = self.held.lock();
        scopes.iter().any(|(s, _)| {
            held.get(s)
                .is_some_and(|h| !h.is_empty() || h.in_flight > 0)
        })
    }

    /// One call of the lease script for `scopes`, handing back what is held of them here.
    async fn grant(
        &self,
        redis: &RedisStore,
        scopes: &[(Scope, Limits)],
        estimate: u64,
    ) -> Result<(Verdict, u64), Failure> {
        let mut returned = Vec::with_capacity(scopes.len());
        let mut keep = Vec::with_capacity(scopes.len());
        {
            let mut held = self.held.lock();
            for (scope, limits) in scopes {
                let h = held
                    .entry(scope.clone())
                    .or_insert_with(|| Held::empty(*limits));
                returned.push(h.take());
                h.in_flight += 1;
                keep.push(h.in_flight > 1);
            }
        }
        self.counts.grants.inc();
        let answer = self
            .lease_call(redis, scopes, estimate, &returned, &keep)
            .await;
        let stale = self.absorb(scopes, &answer, None);
        if answer.is_err() && returned.iter().any(|r| r.tokens > 0 || r.requests > 0) {
            // Redis may or may not have taken them back: they are not held here any more
            // either way (stranded rather than counted twice).
            self.counts.lost.inc();
        }
        for (scope, limits, back) in stale {
            self.give_back(redis, vec![(scope, limits, back)]).await;
        }
        let (verdict, _, others) = answer?;
        Ok((verdict, others))
    }

    /// One call of the lease script: gives back `returned`, asks for a call of `estimate`
    /// and slices beyond it.
    async fn lease_call(
        &self,
        redis: &RedisStore,
        scopes: &[(Scope, Limits)],
        estimate: u64,
        returned: &[Returned],
        keep: &[bool],
    ) -> Result<(Verdict, Vec<Slice>, u64), Failure> {
        redis
            .grant(&Grant {
                holder: &self.holder,
                need: Some(estimate),
                calls: self.config.calls,
                ttl: self.config.ttl,
                scopes,
                returned,
                keep,
            })
            .await
    }

    /// Takes a lease call's answer into the slices held here, each scope counted out of
    /// flight. With `call` (a top-up, which has no call), what Redis reserved for the call
    /// itself (`call` tokens and a request) joins the slice too. Returns what must go back at
    /// once (see [`Held::receive`]).
    fn absorb(
        &self,
        scopes: &[(Scope, Limits)],
        answer: &Result<(Verdict, Vec<Slice>, u64), Failure>,
        call: Option<u64>,
    ) -> Vec<(Scope, Limits, Returned)> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let mut held = self.held.lock();
        for (i, (scope, limits)) in scopes.iter().enumerate() {
            let Some(h) = held.get_mut(scope) else {
                continue;
            };
            h.in_flight = h.in_flight.saturating_sub(1);
            if let Ok((Verdict::Admitted { month, .. }, slices, _)) = answer {
                let mut slice: Slice = slices.get(i).copied().unwrap_or_default();
                if let Some(estimate) = call {
                    if counts_tokens(limits) {
                        slice.tokens = slice.tokens.saturating_add(estimate);
                    }
                    if limits.requests_per_minute.is_some() {
                        slice.requests = slice.requests.saturating_add(1);
                    }
                }
                for (limits, back) in h.receive(slice, *month, *limits, now) {
                    stale.push((scope.clone(), limits, back));
                }
            }
            if h.is_empty() && h.in_flight == 0 {
                held.remove(scope);
            }
        }
        stale
    }

    /// Settles a call admitted in lease mode: a refund goes into this replica's slice, a
    /// charge comes out of it; what the slice cannot take (another month, limits changed, a
    /// charge larger than the slice) is returned for Redis to apply.
    pub(crate) fn settle(
        &self,
        scopes: &[(Scope, Limits)],
        estimate: u64,
        actual: u64,
        month: u32,
    ) -> Vec<(Scope, Limits, Settlement)> {
        let mut for_redis = Vec::new();
        if actual == estimate {
            return for_redis;
        }
        let mut held = self.held.lock();
        for (scope, limits) in scopes {
            if !counts_tokens(limits) {
                continue;
            }
            let slice = held
                .get_mut(scope)
                .filter(|h| h.month == month && h.limits == *limits);
            if actual < estimate {
                let refund = estimate - actual;
                match slice {
                    Some(h) => h.tokens = h.tokens.saturating_add(refund),
                    None => for_redis.push((scope.clone(), *limits, Settlement::Refund(refund))),
                }
            } else {
                let mut charge = actual - estimate;
                if let Some(h) = slice {
                    let taken = h.tokens.min(charge);
                    h.tokens -= taken;
                    charge -= taken;
                }
                if charge > 0 {
                    for_redis.push((scope.clone(), *limits, Settlement::Charge(charge)));
                }
            }
        }
        for_redis
    }

    /// Gives slices back to Redis (best effort: a give-back that fails strands its tokens).
    pub(crate) async fn give_back(
        &self,
        redis: &RedisStore,
        slices: Vec<(Scope, Limits, Returned)>,
    ) {
        if slices.is_empty() {
            return;
        }
        let keep: Vec<bool> = {
            let held = self.held.lock();
            slices
                .iter()
                .map(|(s, _, _)| {
                    held.get(s)
                        .is_some_and(|h| h.in_flight > 0 || !h.is_empty())
                })
                .collect()
        };
        let scopes: Vec<(Scope, Limits)> = slices.iter().map(|(s, l, _)| (s.clone(), *l)).collect();
        let returned: Vec<Returned> = slices.iter().map(|(_, _, r)| *r).collect();
        let result = redis
            .grant(&Grant {
                holder: &self.holder,
                need: None,
                calls: 0,
                ttl: self.config.ttl,
                scopes: &scopes,
                returned: &returned,
                keep: &keep,
            })
            .await;
        match result {
            Ok(_) => self.counts.given_back.inc(),
            Err(error) => {
                self.counts.lost.inc();
                tracing::debug!(%error, "quota: a slice given back was lost; its tokens stay consumed");
            }
        }
    }

    /// Takes the slices that should go back now: unused for `idle`, of a past month, or
    /// older than half the holder record's lifetime (so the record never lapses under a
    /// live holder). `all` takes every slice (shutdown).
    fn due(&self, all: bool) -> Vec<(Scope, Limits, Returned)> {
        let month = current_month();
        let now = Instant::now();
        let mut held = self.held.lock();
        let mut out = Vec::new();
        held.retain(|scope, h| {
            let due = all
                || h.month != month
                || now.duration_since(h.used_at) >= self.config.idle
                || now.duration_since(h.granted_at) >= self.config.ttl / 2;
            if due && h.in_flight == 0 && !h.is_empty() {
                out.push((scope.clone(), h.limits, h.take()));
            }
            !(h.is_empty() && h.in_flight == 0)
        });
        out
    }

    /// Takes this replica's slices of the named scopes (a recall).
    fn recalled(&self, names: &[&str]) -> Vec<(Scope, Limits, Returned)> {
        let mut held = self.held.lock();
        let mut out = Vec::new();
        for (scope, h) in held.iter_mut() {
            if !names.contains(&scope.as_str()) && !names.contains(&scope.legacy().as_str()) {
                continue;
            }
            if h.in_flight > 0 {
                h.recalled = true;
            }
            if !h.is_empty() {
                out.push((scope.clone(), h.limits, h.take()));
            }
        }
        out
    }

    /// Gives every slice back (shutdown).
    pub(crate) async fn give_back_all(&self, redis: &RedisStore) {
        let all = self.due(true);
        self.give_back(redis, all).await;
    }

    /// Starts the upkeep (idle slices given back) and the recall listener, once, on the
    /// current runtime; both stop when the limiter is dropped. `subscribed` is the recall
    /// subscription when the caller made it already (at warm-up, so that no recall published
    /// afterwards is missed).
    fn start_with(
        self: &Arc<Self>,
        redis: &Arc<RedisStore>,
        subscribed: Option<redis::aio::PubSub>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut subscribed = subscribed;
        self.started.call_once(|| {
            let (leases, store) = (Arc::downgrade(self), Arc::downgrade(redis));
            runtime.spawn(upkeep(leases.clone(), store.clone()));
            runtime.spawn(listen(leases, store, subscribed.take()));
        });
    }

    fn start(self: &Arc<Self>, redis: &Arc<RedisStore>) {
        if !self.started.is_completed() {
            self.start_with(redis, None);
        }
    }

    /// Subscribes to recalls and starts the upkeep now (the gateway's start-up).
    pub(crate) async fn warm_up(self: &Arc<Self>, redis: &Arc<RedisStore>) -> Result<(), Failure> {
        if self.started.is_completed() {
            return Ok(());
        }
        let subscription = redis.subscribe(&redis.channel()).await?;
        self.start_with(redis, Some(subscription));
        Ok(())
    }
}

/// A settlement the slice could not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    Refund(u64),
    Charge(u64),
}

async fn upkeep(leases: Weak<Leases>, redis: Weak<RedisStore>) {
    let every = {
        let Some(l) = leases.upgrade() else {
            return;
        };
        (l.config.idle / 4).clamp(Duration::from_millis(20), Duration::from_millis(250))
    };
    loop {
        tokio::time::sleep(every).await;
        let (Some(leases), Some(redis)) = (leases.upgrade(), redis.upgrade()) else {
            return;
        };
        let due = leases.due(false);
        leases.give_back(&redis, due).await;
    }
}

async fn listen(
    leases: Weak<Leases>,
    redis: Weak<RedisStore>,
    mut subscribed: Option<redis::aio::PubSub>,
) {
    use futures::StreamExt;
    loop {
        let subscription = match subscribed.take() {
            Some(pubsub) => Ok(pubsub),
            None => {
                let Some(redis) = redis.upgrade() else {
                    return;
                };
                redis.subscribe(&redis.channel()).await
            }
        };
        let mut pubsub = match subscription {
            Ok(p) => p,
            Err(error) => {
                tracing::debug!(%error, "quota: cannot listen for recalls; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let (Some(leases), Some(redis)) = (leases.upgrade(), redis.upgrade()) else {
                return;
            };
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            let mut parts = text.split('\t');
            if parts.next() == Some(leases.holder.as_str()) {
                continue;
            }
            let names: Vec<&str> = parts.collect();
            let slices = leases.recalled(&names);
            leases.give_back(&redis, slices).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(tokens: u64) -> Limits {
        Limits {
            monthly_tokens: Some(tokens),
            ..Limits::default()
        }
    }

    fn slice(tokens: u64) -> Slice {
        Slice {
            tokens,
            ..Slice::default()
        }
    }

    #[test]
    fn a_slice_recalled_on_its_way_goes_back_as_of_the_month_it_was_leased_in() {
        let mut h = Held::empty(budget(1_000));
        h.in_flight = 1;
        h.recalled = true;
        let back = h.receive(slice(300), 202_612, budget(1_000), Instant::now());
        assert_eq!(
            back,
            vec![(
                budget(1_000),
                Returned {
                    tokens: 300,
                    requests: 0,
                    month: 202_612
                }
            )]
        );
        assert!(h.is_empty() && !h.recalled);
    }

    #[test]
    fn a_slice_of_an_older_month_goes_back_on_its_own_when_a_new_one_comes() {
        let mut h = Held::empty(budget(1_000));
        h.receive(slice(100), 202_611, budget(1_000), Instant::now());
        let back = h.receive(slice(40), 202_612, budget(1_000), Instant::now());
        assert_eq!(
            back,
            vec![(
                budget(1_000),
                Returned {
                    tokens: 100,
                    requests: 0,
                    month: 202_611
                }
            )]
        );
        assert_eq!((h.tokens, h.month), (40, 202_612));
    }

    #[test]
    fn slices_of_one_month_add_up() {
        let mut h = Held::empty(budget(1_000));
        assert!(h
            .receive(slice(100), 202_612, budget(1_000), Instant::now())
            .is_empty());
        assert!(h
            .receive(slice(50), 202_612, budget(1_000), Instant::now())
            .is_empty());
        assert_eq!(h.tokens, 150);
    }
}
