//! Counters in Redis, shared by every replica: one `EVALSHA` per reservation and one per
//! settlement over a multiplexed connection (concurrent calls are pipelined on it), each bounded
//! by the configured timeout.
//!
//! Key layout: one hash per scope, `<key_prefix><scope>` (`bulkhead:quota:t:{<tenant>}`,
//! `bulkhead:quota:k:{<tenant>}:<key>`), fields `tl tt` (token bucket level in 1/60000 token
//! and its time in ms), `rl rt` (request bucket), `m mu` (month `YYYYMM` and tokens used in
//! it), and the lease holders of a scope in the sorted set `<hash>:h`. Every write sets a
//! 35-day expiry: a scope idle that long has full buckets and a past month, which is the same
//! as no hash at all. The tenant is a hash tag, so every key of one call is in one slot and
//! the scripts run on Redis Cluster (`cluster: true`, several seed URLs).
//!
//! Earlier releases named keys without the tag (`t:<tenant>`, `k:<key>`). On a standalone
//! Redis the scripts carry both names and the marker `<key_prefix>layout`: while it is unset
//! every replica, old or new, counts under the old names, so a rolling upgrade stays exact;
//! once it says `tagged` (set by `bulkhead --quota-keys-tagged` after the rollout, or at
//! start-up on a Redis holding no old names) each old key is folded into its new name on first
//! touch. A later release drops the old names, 35 days after the switch at the earliest.
//!
//! Reconnection is ours rather than the driver's: after a failure (an error or the timeout) the
//! connection is dropped and Redis is left alone for `retry_interval`, during which calls fail at
//! once (no request waits on a Redis known to be down); then one call probes it with a fresh
//! connection. A Redis restart loses the scripts; the driver reloads one on `NOSCRIPT` and runs
//! it again, and the `NOSCRIPT` run has changed nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::{RedisError, Script, ScriptInvocation};
use redis_link::{Breaker, Connection, Link};

use crate::scope::{Dimension, Limits, Scope};
use crate::window::{Remaining, Returned, Slice, Verdict};

const RESERVE: &str = include_str!("reserve.lua");
const SETTLE: &str = include_str!("settle.lua");
const LEASE: &str = include_str!("lease.lua");
const KEYS_TAGGED: &str = include_str!("keys_tagged.lua");
const KEYS_COMPAT: &str = include_str!("keys_compat.lua");

/// The marker's value once the tagged names are in force.
const TAGGED: &str = "tagged";

/// The three scripts over one key layout.
struct Scripts {
    reserve: Script,
    settle: Script,
    lease: Script,
}

impl Scripts {
    fn new(prelude: &str) -> Self {
        let with =
            |per: u8, body: &str| Script::new(&format!("local PER = {per}\n{prelude}\n{body}"));
        Self {
            reserve: with(1, RESERVE),
            settle: with(1, SETTLE),
            lease: with(2, LEASE),
        }
    }

    fn all(&self) -> [&Script; 3] {
        [&self.reserve, &self.settle, &self.lease]
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis error: {0}")]
    Redis(#[from] RedisError),
    #[error("unexpected script reply {0:?}")]
    Reply(Vec<i64>),
    /// Redis failed recently and is not being probed yet: nothing was sent.
    #[error("redis is down (waiting before the next probe)")]
    Skipped,
}

pub(crate) struct RedisStore {
    link: Link,
    tagged: Scripts,
    compat: Scripts,
    /// Only the tagged names are in use (a cluster, or the marker seen set): calls carry no
    /// legacy names. Never goes back to false.
    tagged_only: AtomicBool,
    prefix: String,
    timeout: Duration,
    breaker: Breaker,
}

impl RedisStore {
    /// `urls`: one Redis, or (with `cluster`) seed nodes of a cluster, comma-separated.
    pub(crate) fn new(
        urls: &str,
        cluster: bool,
        prefix: String,
        timeout: Duration,
        retry_interval: Duration,
    ) -> Result<Self, RedisError> {
        if prefix.contains(['{', '}']) {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "the quota key prefix may not contain '{' or '}' (the tenant is the hash tag)",
            )));
        }
        Ok(Self {
            link: Link::new(urls, cluster, timeout)?,
            tagged: Scripts::new(KEYS_TAGGED),
            compat: Scripts::new(KEYS_COMPAT),
            tagged_only: AtomicBool::new(cluster),
            prefix,
            timeout,
            breaker: Breaker::new(
                "quota",
                "deciding per replica (fail open) or refusing (fail closed) until it answers",
                retry_interval,
            ),
        })
    }

    /// Connects, learns the key layout and loads the scripts, with a patient timeout: for
    /// start-up, so the first requests do not pay for it.
    pub(crate) async fn warm_up(&self, patience: Duration) -> Result<(), Failure> {
        let work = async {
            let mut conn = self.connection().await?;
            if !self.tagged_only.load(Ordering::Acquire) {
                self.adopt_tags_if_unused(&mut conn).await?;
            }
            for script in self.scripts().all() {
                script.load_async(&mut conn).await?;
            }
            Ok::<_, Failure>(())
        };
        let result = match tokio::time::timeout(patience, work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout(patience)),
        };
        self.record(&result);
        result
    }

    /// On a standalone Redis: if the marker is set, or no key has a legacy name (a new
    /// install), the tagged names are in force from now on.
    async fn adopt_tags_if_unused(&self, conn: &mut Connection) -> Result<(), Failure> {
        let marker = self.marker();
        let value: Option<String> = redis::cmd("GET").arg(&marker).query_async(conn).await?;
        if value.as_deref() != Some(TAGGED) {
            if self.legacy_keys_may_exist(conn).await? {
                tracing::info!(
                    "quota: Redis holds counters under the names of an earlier release; once \
                     every replica runs this one, run `bulkhead --quota-keys-tagged`"
                );
                return Ok(());
            }
            redis::cmd("SET")
                .arg(&marker)
                .arg(TAGGED)
                .query_async::<()>(conn)
                .await?;
        }
        self.tagged_only.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a key with a legacy name may exist: a bounded scan (a very large keyspace
    /// counts as "may").
    async fn legacy_keys_may_exist(&self, conn: &mut Connection) -> Result<bool, Failure> {
        const ROUNDS: usize = 64;
        for pattern in ["t:[^{]*", "k:[^{]*"] {
            let pattern = format!("{}{pattern}", glob_escape(&self.prefix));
            let mut cursor = 0u64;
            let mut done = false;
            for _ in 0..ROUNDS {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(conn)
                    .await?;
                if !keys.is_empty() {
                    return Ok(true);
                }
                cursor = next;
                if cursor == 0 {
                    done = true;
                    break;
                }
            }
            if !done {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Puts the tagged names in force on a standalone Redis (after a rolling upgrade: every
    /// replica running now folds each legacy key into its tagged name on first touch). Returns
    /// whether the marker was already set.
    pub(crate) async fn use_tagged_names(&self) -> Result<bool, Failure> {
        if self.link.is_cluster() {
            return Ok(true);
        }
        let mut conn = self.connection().await?;
        let before: Option<String> = redis::cmd("SET")
            .arg(self.marker())
            .arg(TAGGED)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        Ok(before.as_deref() == Some(TAGGED))
    }

    fn marker(&self) -> String {
        format!("{}layout", self.prefix)
    }

    /// The scripts of the layout in force (read once per call: the keys must match them).
    fn scripts(&self) -> &Scripts {
        if self.tagged_only.load(Ordering::Acquire) {
            &self.tagged
        } else {
            &self.compat
        }
    }

    /// The keys of `scopes` in the order the layout prelude of `scripts` reads them.
    fn keys(
        &self,
        scripts: &Scripts,
        call: &mut ScriptInvocation<'_>,
        scopes: &[(Scope, Limits)],
        holders: bool,
    ) {
        let prefix = &self.prefix;
        let mut names = |name: &dyn Fn(&Scope) -> std::borrow::Cow<'_, str>| {
            for (scope, _) in scopes {
                call.key(format!("{prefix}{}", name(scope)));
            }
            if holders {
                for (scope, _) in scopes {
                    call.key(format!("{prefix}{}:h", name(scope)));
                }
            }
        };
        names(&|s| s.as_str().into());
        if std::ptr::eq(scripts, &self.compat) {
            names(&|s| s.legacy().into());
            call.key(self.marker());
        }
    }

    /// Runs the reserve script over `scopes` (each with at least one limit).
    pub(crate) async fn reserve(
        &self,
        scopes: &[(Scope, Limits)],
        estimate: u64,
    ) -> Result<Verdict, Failure> {
        let scripts = self.scripts();
        let mut call = scripts.reserve.prepare_invoke();
        call.arg(estimate);
        self.keys(scripts, &mut call, scopes, false);
        for (_, limits) in scopes {
            call.arg(or_minus_one(limits.tokens_per_minute))
                .arg(or_minus_one(limits.requests_per_minute))
                .arg(or_minus_one(limits.monthly_tokens));
        }
        let reply = self
            .guarded(async {
                let mut conn = self.connection().await?;
                Ok(call.invoke_async::<Vec<i64>>(&mut conn).await?)
            })
            .await?;
        parse_reserve(reply)
    }

    pub(crate) async fn settle(
        &self,
        scopes: &[(Scope, Limits)],
        estimate: u64,
        actual: u64,
        month: u32,
    ) -> Result<(), Failure> {
        let scripts = self.scripts();
        let mut call = scripts.settle.prepare_invoke();
        call.arg(estimate).arg(actual).arg(month);
        self.keys(scripts, &mut call, scopes, false);
        for (_, limits) in scopes {
            call.arg(or_minus_one(limits.tokens_per_minute))
                .arg(or_minus_one(limits.monthly_tokens));
        }
        self.guarded(async {
            let mut conn = self.connection().await?;
            Ok(call.invoke_async::<i64>(&mut conn).await?)
        })
        .await
        .map(|_| ())
    }

    /// Runs the lease script: gives back `returned` to each scope, then (with `need`) decides
    /// the call and leases slices of `calls` calls' worth. `keep[i]`: the holder keeps a
    /// record on scope `i` whatever it is granted. Returns the verdict, each scope's slice, and
    /// how many other holders hold a lease on these scopes.
    pub(crate) async fn grant(
        &self,
        request: &Grant<'_>,
    ) -> Result<(Verdict, Vec<Slice>, u64), Failure> {
        let scripts = self.scripts();
        let mut call = scripts.lease.prepare_invoke();
        call.arg(request.holder)
            .arg(
                request
                    .need
                    .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            )
            .arg(request.calls)
            .arg(u64::try_from(request.ttl.as_millis()).unwrap_or(u64::MAX));
        self.keys(scripts, &mut call, request.scopes, true);
        for (i, (_, limits)) in request.scopes.iter().enumerate() {
            let back = request.returned.get(i).copied().unwrap_or_default();
            call.arg(or_minus_one(limits.tokens_per_minute))
                .arg(or_minus_one(limits.requests_per_minute))
                .arg(or_minus_one(limits.monthly_tokens))
                .arg(back.tokens)
                .arg(back.requests)
                .arg(back.month)
                .arg(i64::from(request.keep.get(i).copied().unwrap_or(false)));
        }
        let reply = self
            .guarded(async {
                let mut conn = self.connection().await?;
                Ok(call.invoke_async::<Vec<i64>>(&mut conn).await?)
            })
            .await?;
        parse_grant(reply, request.scopes.len())
    }

    /// Publishes `message` on the recall channel.
    pub(crate) async fn publish(&self, channel: &str, message: &str) -> Result<(), Failure> {
        self.guarded(async {
            let mut conn = self.connection().await?;
            Ok(redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<i64>(&mut conn)
                .await?)
        })
        .await
        .map(|_| ())
    }

    /// A subscription to `channel` on a connection of its own (no timeout: it waits).
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, Failure> {
        let mut pubsub = tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), async {
            self.link.pubsub().await
        })
        .await
        .map_err(|_| Failure::Timeout(self.timeout))??;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}recall", self.prefix)
    }

    /// Runs one call if the breaker lets it, within the timeout, and records the outcome.
    async fn guarded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        if !self.breaker.allows() {
            return Err(Failure::Skipped);
        }
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout(self.timeout)),
        };
        self.record(&result);
        result
    }

    fn record<T>(&self, result: &Result<T, Failure>) {
        match result {
            Ok(_) => self.breaker.success(),
            // The script refused to run (a bug of ours, or a wrong server): the connection is
            // fine, and so is Redis.
            Err(Failure::Reply(_)) | Err(Failure::Skipped) => {}
            Err(e) => {
                // A connection that timed out may be hung rather than slow: start afresh.
                self.link.reset();
                self.breaker.failure(e);
            }
        }
    }

    async fn connection(&self) -> Result<Connection, Failure> {
        Ok(self.link.connection().await?)
    }
}

/// `text` matched literally by a `SCAN MATCH` pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn or_minus_one(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

fn remaining(tokens: i64, requests: i64) -> Remaining {
    Remaining {
        tokens: u64::try_from(tokens).ok(),
        requests: u64::try_from(requests).ok(),
    }
}

fn index(one_based: i64) -> usize {
    usize::try_from(one_based.saturating_sub(1)).unwrap_or(0)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn parse_reserve(reply: Vec<i64>) -> Result<Verdict, Failure> {
    Ok(match *reply.as_slice() {
        [1, month, t, r] => Verdict::Admitted {
            month: u32::try_from(month).unwrap_or(0),
            remaining: remaining(t, r),
        },
        [2, scope, dim, limit] => Verdict::ExceedsLimit {
            scope: index(scope),
            dimension: Dimension::from_code(dim),
            limit: unsigned(limit),
        },
        [3, scope, left, t, r] => Verdict::BudgetExhausted {
            scope: index(scope),
            remaining_budget: unsigned(left),
            remaining: remaining(t, r),
        },
        [4, scope, dim, wait, t, r] => Verdict::RateLimited {
            scope: index(scope),
            dimension: Dimension::from_code(dim),
            retry_after_ms: unsigned(wait),
            remaining: remaining(t, r),
        },
        _ => return Err(Failure::Reply(reply)),
    })
}

/// One call of the lease script.
pub(crate) struct Grant<'a> {
    pub holder: &'a str,
    /// The call's tokens; `None` only gives back.
    pub need: Option<u64>,
    pub calls: u64,
    pub ttl: Duration,
    pub scopes: &'a [(Scope, Limits)],
    pub returned: &'a [Returned],
    pub keep: &'a [bool],
}

fn optional(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

fn parse_grant(reply: Vec<i64>, scopes: usize) -> Result<(Verdict, Vec<Slice>, u64), Failure> {
    let others = |v: i64| unsigned(v);
    let verdict = match *reply.as_slice() {
        [0, o] => {
            return Ok((
                Verdict::Admitted {
                    month: 0,
                    remaining: Remaining::default(),
                },
                Vec::new(),
                others(o),
            ))
        }
        [1, month, t, r, o, ref rest @ ..] if rest.len() == 4 * scopes => {
            let slices = rest
                .chunks_exact(4)
                .map(|c| Slice {
                    tokens: unsigned(c[0]),
                    requests: unsigned(c[1]),
                    left_tokens: optional(c[2]),
                    left_requests: optional(c[3]),
                })
                .collect();
            return Ok((
                Verdict::Admitted {
                    month: u32::try_from(month).unwrap_or(0),
                    remaining: remaining(t, r),
                },
                slices,
                others(o),
            ));
        }
        [2, scope, dim, limit, o] => (
            Verdict::ExceedsLimit {
                scope: index(scope),
                dimension: Dimension::from_code(dim),
                limit: unsigned(limit),
            },
            o,
        ),
        [3, scope, left, t, r, o] => (
            Verdict::BudgetExhausted {
                scope: index(scope),
                remaining_budget: unsigned(left),
                remaining: remaining(t, r),
            },
            o,
        ),
        [4, scope, dim, wait, t, r, o] => (
            Verdict::RateLimited {
                scope: index(scope),
                dimension: Dimension::from_code(dim),
                retry_after_ms: unsigned(wait),
                remaining: remaining(t, r),
            },
            o,
        ),
        _ => return Err(Failure::Reply(reply)),
    };
    Ok((verdict.0, Vec::new(), others(verdict.1)))
}
