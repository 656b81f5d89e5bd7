//! Token and request quotas for tenants and their API keys, the same on every gateway replica.
//!
//! Before calling Azure the gateway [`Limiter::reserve`]s its admission estimate (prompt tokens
//! plus max output tokens × n) in every scope that limits the call (the tenant, and the key when
//! it has limits of its own), all or nothing. When the call ends, [`Admission::settle`] replaces
//! the estimate by the real usage, refunding or charging the difference. An admission dropped
//! unsettled (the call never reached Azure) settles at 0 tokens by itself.
//!
//! The semantics of minute limits (token buckets) and monthly budgets are in `src/window.rs`'s
//! doc. With a Redis URL the counters live in Redis (`src/redis_store.rs` has the key layout), so
//! any number of replicas enforce one limit; without one, in this process. When Redis does not
//! answer within the timeout, [`OnRedisError`] decides: refuse, or decide in process (each
//! replica then enforces the limits on its own).

mod leases;
mod local;
mod metrics;
mod redis_store;
mod scope;
mod window;

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use leases::LeaseConfig;
pub use metrics::MetricsSnapshot;
pub use scope::{Dimension, Limits, Scope, ScopeLimits, MAX_LIMIT};
pub use window::Remaining;

use leases::{Leases, Settlement};
use local::LocalLimiter;
use metrics::Metrics;
use redis_store::{Failure, RedisStore};
use window::{Returned, Verdict};

/// What to do with a reservation when Redis is configured but does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisError {
    /// Decide in process with the same limits, per replica (so N replicas may admit up to N
    /// times a limit while Redis is down). Logged when Redis goes and comes back; counted in
    /// [`MetricsSnapshot::fail_open`].
    #[default]
    FailOpen,
    /// Refuse with [`Refusal::Unavailable`].
    FailClosed,
}

#[derive(Debug, Clone)]
pub struct QuotaConfig {
    /// `redis://[:password@]host:port[/db]`; `None` keeps every counter in process.
    pub redis_url: Option<SecretString>,
    /// `redis_url` is a Redis Cluster: seed nodes, comma-separated.
    pub cluster: bool,
    /// Prefix of every Redis key (no `{` or `}`: the tenant is the keys' hash tag), so several gateways (or tests) can share one Redis.
    pub key_prefix: String,
    /// The longest a reservation or settlement waits for Redis (connecting included).
    pub timeout: Duration,
    pub on_redis_error: OnRedisError,
    /// After a Redis failure, how long calls skip Redis before one probes it again.
    pub retry_interval: Duration,
    /// Slices of each scope leased to this replica, so most calls are decided without a
    /// round trip (see `leases`); `calls: 0` asks Redis for every call.
    pub lease: LeaseConfig,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            cluster: false,
            key_prefix: "bulkhead:quota:".to_owned(),
            timeout: Duration::from_millis(50),
            on_redis_error: OnRedisError::FailOpen,
            retry_interval: Duration::from_secs(1),
            lease: LeaseConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The URL is not a Redis URL (the message never repeats the URL, which may hold a
    /// password).
    #[error("invalid Redis URL: {0}")]
    InvalidRedisUrl(String),
    #[error("Redis unreachable: {0}")]
    RedisUnreachable(String),
}

/// Why a reservation was refused. Nothing was consumed in any scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A minute limit has not refilled enough yet; it will have after `retry_after`, if nothing
    /// else consumes it meanwhile.
    #[error("{dimension} limit of {scope} reached; retry after {retry_after:?}")]
    RateLimited {
        scope: Scope,
        dimension: Dimension,
        retry_after: Duration,
        remaining: Remaining,
    },
    /// The monthly token budget cannot hold the estimate until the next UTC month.
    #[error("monthly token budget of {scope} exhausted ({remaining_budget} tokens left)")]
    BudgetExhausted {
        scope: Scope,
        remaining_budget: u64,
        remaining: Remaining,
    },
    /// The call can never be admitted: its estimate is larger than a limit itself (or a
    /// request limit is 0). Waiting will not help; a smaller `max_tokens` may.
    #[error("the request can never fit the {dimension} limit of {scope} ({limit})")]
    ExceedsLimit {
        scope: Scope,
        dimension: Dimension,
        limit: u64,
        estimate: u64,
    },
    /// Redis did not answer and the limiter fails closed.
    #[error("quota store unavailable")]
    Unavailable,
}

impl Refusal {
    /// For a `Retry-After` header: only a minute limit says when to come back.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// What is left of the quota, when the refusal knows it.
    pub fn remaining(&self) -> Option<Remaining> {
        match self {
            Self::RateLimited { remaining, .. } | Self::BudgetExhausted { remaining, .. } => {
                Some(*remaining)
            }
            _ => None,
        }
    }
}

/// Where an admission was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    /// In Redis: every replica sees it.
    Redis,
    /// From a slice Redis leased to this replica: consumed in Redis before it was admitted,
    /// so every replica sees it too.
    Lease,
    /// In this process: no Redis configured, or Redis down and failing open.
    Local,
    /// No scope had any limit: nothing was counted.
    Unlimited,
}

/// Checks and counts quotas. Cheap to clone; clones share their counters and connection.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    local: LocalLimiter,
    redis: Option<Arc<RedisStore>>,
    leases: Option<Arc<Leases>>,
    on_redis_error: OnRedisError,
    metrics: Metrics,
}

impl Limiter {
    /// Builds a limiter; it connects to Redis lazily (see [`Limiter::warm_up`]), so a gateway
    /// starts even while Redis is down.
    pub fn new(config: QuotaConfig) -> Result<Self, QuotaError> {
        let redis = match &config.redis_url {
            None => None,
            Some(url) => Some(Arc::new(
                RedisStore::new(
                    url.expose_secret(),
                    config.cluster,
                    config.key_prefix.clone(),
                    config.timeout,
                    config.retry_interval,
                )
                .map_err(|e| QuotaError::InvalidRedisUrl(e.to_string()))?,
            )),
        };
        let leases = (redis.is_some() && config.lease.calls > 0)
            .then(|| Arc::new(Leases::new(config.lease)));
        Ok(Self {
            inner: Arc::new(Inner {
                local: LocalLimiter::default(),
                redis,
                leases,
                on_redis_error: config.on_redis_error,
                metrics: Metrics::default(),
            }),
        })
    }

    /// A limiter with every counter in this process.
    pub fn in_process() -> Self {
        Self {
            inner: Arc::new(Inner {
                local: LocalLimiter::default(),
                redis: None,
                leases: None,
                on_redis_error: OnRedisError::FailOpen,
                metrics: Metrics::default(),
            }),
        }
    }

    /// Connects to Redis and loads the scripts, waiting up to `patience`: for start-up, so the
    /// first requests do not pay for it. Without Redis, does nothing.
    pub async fn warm_up(&self, patience: Duration) -> Result<(), QuotaError> {
        let Some(redis) = &self.inner.redis else {
            return Ok(());
        };
        redis
            .warm_up(patience)
            .await
            .map_err(|e| QuotaError::RedisUnreachable(e.to_string()))?;
        if let Some(leases) = &self.inner.leases {
            // Listening for recalls before the first call, so none is missed.
            leases
                .warm_up(redis)
                .await
                .map_err(|e| QuotaError::RedisUnreachable(e.to_string()))?;
        }
        Ok(())
    }

    /// Puts the hash-tagged key names in force on a standalone Redis that still holds the
    /// names of an earlier release (`bulkhead --quota-keys-tagged`, once every replica runs
    /// this release). Returns whether they already were. Without Redis, or on a cluster,
    /// there is nothing to switch.
    pub async fn use_tagged_names(&self) -> Result<bool, QuotaError> {
        let Some(redis) = &self.inner.redis else {
            return Ok(true);
        };
        redis
            .use_tagged_names()
            .await
            .map_err(|e| QuotaError::RedisUnreachable(e.to_string()))
    }

    pub fn uses_redis(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Counters since start; reading takes no lock.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snapshot = self.inner.metrics.snapshot();
        if let Some(leases) = &self.inner.leases {
            snapshot.lease_local = leases.counts.local.get();
            snapshot.lease_grants = leases.counts.grants.get();
            snapshot.lease_top_ups = leases.counts.top_ups.get();
            snapshot.lease_recalls = leases.counts.recalls.get();
            snapshot.lease_given_back = leases.counts.given_back.get();
            snapshot.lease_lost = leases.counts.lost.get();
        }
        snapshot
    }

    /// Gives every slice leased to this replica back to Redis (at shutdown, so its tokens are
    /// not stranded until they would have gone back by themselves).
    pub async fn release(&self) {
        if let (Some(leases), Some(redis)) = (&self.inner.leases, &self.inner.redis) {
            leases.give_back_all(redis).await;
        }
    }

    /// Reserves `estimate` tokens and one request in every scope, all or nothing. Scopes with
    /// no limit are skipped; a scope listed twice counts once (its first limits apply).
    ///
    /// Cancel-safe: if the caller stops waiting, a reservation made meanwhile is settled at 0.
    pub async fn reserve(
        &self,
        scopes: &[ScopeLimits],
        estimate: u64,
    ) -> Result<Admission, Refusal> {
        let mut limited: Vec<(Scope, Limits)> = Vec::with_capacity(scopes.len());
        for s in scopes {
            if !s.limits.is_unlimited() && !limited.iter().any(|(seen, _)| *seen == s.scope) {
                limited.push((s.scope.clone(), s.limits.clamped()));
            }
        }
        let estimate = scope::clamp(estimate);
        if limited.is_empty() {
            self.inner.metrics.admitted.inc();
            return Ok(Admission {
                remaining: Remaining::default(),
                estimate,
                decider: Decider::Unlimited,
                ticket: None,
            });
        }
        let scopes: Arc<[(Scope, Limits)]> = limited.into();
        if let Some(leases) = &self.inner.leases {
            // Most calls end here: decided from this replica's slices, no I/O.
            if let Some((verdict, top_up)) = leases.try_local(&scopes, estimate) {
                if let (true, Some(redis)) = (top_up, &self.inner.redis) {
                    leases.spawn_top_up(redis, &scopes, estimate);
                }
                return Inner::conclude(&self.inner, verdict, Decider::Lease, scopes, estimate);
            }
        }
        if self.inner.redis.is_none() {
            let verdict = self.inner.local.reserve(&scopes, estimate);
            return Inner::conclude(&self.inner, verdict, Decider::Local, scopes, estimate);
        }
        // The call runs in its own task so that an admission made after the caller stopped
        // waiting is dropped there, which settles it.
        let work = Inner::reserve_on_redis(self.inner.clone(), scopes, estimate);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return work.await;
        };
        match runtime.spawn(work).await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "quota: reservation task failed");
                self.inner.metrics.unavailable.inc();
                Err(Refusal::Unavailable)
            }
        }
    }
}

impl Inner {
    async fn reserve_on_redis(
        this: Arc<Self>,
        scopes: Arc<[(Scope, Limits)]>,
        estimate: u64,
    ) -> Result<Admission, Refusal> {
        let Some(redis) = &this.redis else {
            let verdict = this.local.reserve(&scopes, estimate);
            return Self::conclude(&this, verdict, Decider::Local, scopes, estimate);
        };
        let decided = match &this.leases {
            Some(leases) => Leases::reserve(leases, redis, &scopes, estimate)
                .await
                .map(|d| {
                    (
                        d.verdict,
                        if d.local {
                            Decider::Lease
                        } else {
                            Decider::Redis
                        },
                    )
                }),
            None => redis
                .reserve(&scopes, estimate)
                .await
                .map(|v| (v, Decider::Redis)),
        };
        match decided {
            Ok((verdict, decider)) => Self::conclude(&this, verdict, decider, scopes, estimate),
            Err(failure) => {
                if !matches!(failure, Failure::Skipped) {
                    this.metrics.redis_errors.inc();
                }
                match this.on_redis_error {
                    OnRedisError::FailClosed => {
                        tracing::debug!(error = %failure, "quota: refusing, redis unavailable");
                        this.metrics.unavailable.inc();
                        Err(Refusal::Unavailable)
                    }
                    OnRedisError::FailOpen => {
                        tracing::debug!(error = %failure, "quota: deciding in process");
                        this.metrics.fail_open.inc();
                        let verdict = this.local.reserve(&scopes, estimate);
                        Self::conclude(&this, verdict, Decider::Local, scopes, estimate)
                    }
                }
            }
        }
    }

    fn conclude(
        this: &Arc<Self>,
        verdict: Verdict,
        decider: Decider,
        scopes: Arc<[(Scope, Limits)]>,
        estimate: u64,
    ) -> Result<Admission, Refusal> {
        let name = |i: usize| {
            scopes
                .get(i)
                .map(|(s, _)| s.clone())
                .unwrap_or_else(|| Scope::tenant("?"))
        };
        match verdict {
            Verdict::Admitted { month, remaining } => {
                this.metrics.admitted.inc();
                Ok(Admission {
                    remaining,
                    estimate,
                    decider,
                    ticket: Some(Ticket {
                        inner: this.clone(),
                        decider,
                        scopes,
                        estimate,
                        month,
                    }),
                })
            }
            Verdict::ExceedsLimit {
                scope,
                dimension,
                limit,
            } => {
                this.metrics.exceeds_limit.inc();
                Err(Refusal::ExceedsLimit {
                    scope: name(scope),
                    dimension,
                    limit,
                    estimate,
                })
            }
            Verdict::BudgetExhausted {
                scope,
                remaining_budget,
                remaining,
            } => {
                this.metrics.budget_exhausted.inc();
                Err(Refusal::BudgetExhausted {
                    scope: name(scope),
                    remaining_budget,
                    remaining,
                })
            }
            Verdict::RateLimited {
                scope,
                dimension,
                retry_after_ms,
                remaining,
            } => {
                this.metrics.rate_limited.inc();
                Err(Refusal::RateLimited {
                    scope: name(scope),
                    dimension,
                    retry_after: Duration::from_millis(retry_after_ms),
                    remaining,
                })
            }
        }
    }
}

/// An admitted reservation. Settle it once with the real usage ([`Admission::settle`] takes it
/// by value); dropped unsettled, it settles at 0 tokens (for a call that never reached Azure).
/// The request itself stays counted either way.
#[must_use = "an admission dropped at once refunds its tokens; settle it when the call ends"]
#[derive(Debug)]
pub struct Admission {
    remaining: Remaining,
    estimate: u64,
    decider: Decider,
    ticket: Option<Ticket>,
}

/// What settling needs: where, what was reserved, and in which month.
struct Ticket {
    inner: Arc<Inner>,
    decider: Decider,
    scopes: Arc<[(Scope, Limits)]>,
    estimate: u64,
    month: u32,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("decider", &self.decider)
            .field("scopes", &self.scopes)
            .field("estimate", &self.estimate)
            .field("month", &self.month)
            .finish()
    }
}

impl Admission {
    /// What is left after this admission, for `x-ratelimit-remaining-*`.
    pub fn remaining(&self) -> Remaining {
        self.remaining
    }

    pub fn remaining_tokens(&self) -> Option<u64> {
        self.remaining.tokens
    }

    pub fn remaining_requests(&self) -> Option<u64> {
        self.remaining.requests
    }

    /// The tokens reserved (clamped to [`MAX_LIMIT`]).
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    pub fn decider(&self) -> Decider {
        self.decider
    }

    /// Replaces the estimate by `actual_tokens` in every scope. Never fails the caller: a
    /// settlement Redis does not take is logged and counted
    /// ([`MetricsSnapshot::settle_failures`]); a lost refund leaves the tenant charged the
    /// estimate. Cancel-safe: it completes even if the caller stops waiting.
    pub async fn settle(mut self, actual_tokens: u64) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let actual = scope::clamp(actual_tokens);
        if ticket.leased() {
            ticket.settle_leased(actual).await;
            return;
        }
        match ticket.decider {
            Decider::Redis if actual != ticket.estimate => {
                // Its own task, so a caller that stops waiting does not lose the settlement.
                let work = ticket.settle_on_redis(actual);
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        if let Err(e) = runtime.spawn(work).await {
                            tracing::error!(error = %e, "quota: settlement task failed");
                        }
                    }
                    Err(_) => work.await,
                }
            }
            _ => ticket.settle_now(actual),
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if ticket.leased() {
            // Into this replica's slice, without I/O (what it cannot take goes to Redis).
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(ticket.settle_leased(0));
                }
                Err(_) => {
                    let (leases, rest) = ticket.settle_into_slices(0);
                    if leases && !rest.is_empty() {
                        tracing::warn!(
                            "quota: admission dropped outside a runtime; its refund is lost"
                        );
                        ticket.inner.metrics.settle_failures.inc();
                    }
                }
            }
            return;
        }
        match (ticket.decider, tokio::runtime::Handle::try_current()) {
            (Decider::Redis, _) if ticket.estimate == 0 => ticket.settle_now(0),
            (Decider::Redis, Ok(runtime)) => {
                runtime.spawn(ticket.settle_on_redis(0));
            }
            (Decider::Redis, Err(_)) => {
                tracing::warn!("quota: admission dropped outside a runtime; its refund is lost");
                ticket.inner.metrics.settle_failures.inc();
            }
            _ => ticket.settle_now(0),
        }
    }
}

impl Ticket {
    /// Whether the admission was made in lease mode (its settlement goes to the slices).
    fn leased(&self) -> bool {
        self.inner.leases.is_some() && matches!(self.decider, Decider::Lease | Decider::Redis)
    }

    /// Applies the settlement to this replica's slices; returns whether leases are on and
    /// what the slices could not take.
    fn settle_into_slices(&self, actual: u64) -> (bool, Vec<(Scope, Limits, Settlement)>) {
        match &self.inner.leases {
            Some(leases) => (
                true,
                leases.settle(&self.scopes, self.estimate, actual, self.month),
            ),
            None => (false, Vec::new()),
        }
    }

    /// A lease-mode settlement: into the slices, the rest to Redis.
    async fn settle_leased(self, actual: u64) {
        let (_, rest) = self.settle_into_slices(actual);
        let (Some(leases), Some(redis)) = (&self.inner.leases, &self.inner.redis) else {
            return;
        };
        let mut failed = false;
        for (scope, limits, settlement) in rest {
            match settlement {
                Settlement::Refund(tokens) => {
                    let back = Returned {
                        tokens,
                        requests: 0,
                        month: self.month,
                    };
                    leases.give_back(redis, vec![(scope, limits, back)]).await;
                }
                Settlement::Charge(tokens) => {
                    let one = [(scope, limits)];
                    if redis.settle(&one, 0, tokens, self.month).await.is_err() {
                        failed = true;
                    }
                }
            }
        }
        if failed {
            self.inner.metrics.settle_failures.inc();
        } else {
            self.inner.metrics.settled.inc();
        }
    }

    /// Settles what needs no I/O: an in-process admission, or an unchanged amount.
    fn settle_now(self, actual: u64) {
        if self.decider == Decider::Local && actual != self.estimate {
            self.inner
                .local
                .settle(&self.scopes, self.estimate, actual, self.month);
        }
        self.inner.metrics.settled.inc();
    }

    async fn settle_on_redis(self, actual: u64) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        match redis
            .settle(&self.scopes, self.estimate, actual, self.month)
            .await
        {
            Ok(()) => self.inner.metrics.settled.inc(),
            Err(error) => {
                if !matches!(error, Failure::Skipped) {
                    self.inner.metrics.redis_errors.inc();
                }
                self.inner.metrics.settle_failures.inc();
                tracing::debug!(%error, estimate = self.estimate, actual, "quota: settlement lost");
            }
        }
    }
}
