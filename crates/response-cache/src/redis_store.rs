//! Entries in Redis, shared by every replica: a `GET` per lookup and one `EVALSHA` per store
//! (`put.lua`), over a multiplexed connection, each bounded by the configured timeout.
//!
//! Key layout (the tenant is a Redis Cluster hash tag, as in the quota crate, so every key of
//! a tenant is in one slot and the store script runs on a cluster):
//! - `<prefix>t:{<tenant>}:e:<digest hex>`: an entry ([`crate::Entry`]'s encoding), with
//!   its TTL as the key's expiry (`PX`);
//! - `<prefix>t:{<tenant>}:idx`: a sorted set of the tenant's digests by expiry (ms);
//! - `<prefix>t:{<tenant>}:sz`: a hash of their sizes, and `#`, their total.
//!
//! The store script drops the books of expired entries, evicts the tenant's entries that
//! expire first until the new one fits the tenant's bound, then writes it, atomically: two
//! replicas storing at once never take a tenant past its bound. A tenant's books expire a
//! minute after its last entry.
//!
//! Failures never fail a call: the caller treats them as a miss (or a store not made). After a
//! failure (an error or the timeout) the connection is dropped and Redis is left alone for
//! `retry_interval`, during which calls fail at once without waiting; then one call probes
//! it with a fresh connection (the quota crate's breaker, for the same reason: no request
//! waits on a Redis known to be down).

use std::time::Duration;

use bytes::Bytes;
use redis::{RedisError, Script};
use redis_link::{Breaker, Connection, Link};

use crate::key::CacheKey;

const PUT: &str = include_str!("put.lua");

/// Why a call to Redis did not give an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis error: {0}")]
    Redis(#[from] RedisError),
    /// Redis failed recently and is not being probed yet: nothing was sent.
    #[error("redis is down (waiting before the next probe)")]
    Skipped,
}

impl Failure {
    /// Whether Redis was asked (a skipped call is not an error of Redis's).
    pub(crate) fn was_sent(&self) -> bool {
        !matches!(self, Self::Skipped)
    }
}

/// What storing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RedisPut {
    pub stored: bool,
    pub evicted: u64,
}

pub(crate) struct RedisLayer {
    link: Link,
    put: Script,
    prefix: String,
    timeout: Duration,
    breaker: Breaker,
}

impl RedisLayer {
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
                "the cache key prefix may not contain '{' or '}' (the tenant is the hash tag)",
            )));
        }
        Ok(Self {
            link: Link::new(urls, cluster, timeout)?,
            put: Script::new(PUT),
            prefix,
            timeout,
            breaker: Breaker::new(
                "response cache",
                "lookups are misses until it answers",
                retry_interval,
            ),
        })
    }

    /// `<prefix>t:{<tenant>}`: every key of the tenant starts so.
    fn tenant_base(&self, key: &CacheKey) -> String {
        format!("{}t:{{{}}}", self.prefix, key.tenant())
    }

    pub(crate) fn entry_name(&self, key: &CacheKey) -> String {
        format!("{}:e:{}", self.tenant_base(key), key.hex())
    }

    /// Connects and loads the script, with a patient timeout: for start-up.
    pub(crate) async fn warm_up(&self, patience: Duration) -> Result<(), Failure> {
        let work = async {
            let mut conn = self.connection().await?;
            self.put.load_async(&mut conn).await?;
            Ok::<_, Failure>(())
        };
        let result = match tokio::time::timeout(patience, work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout(patience)),
        };
        self.record(&result);
        result
    }

    /// The bytes stored under `key`'s entry name, if any.
    pub(crate) async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, Failure> {
        let name = self.entry_name(key);
        self.guarded(async {
            let mut conn = self.connection().await?;
            let value: Option<Vec<u8>> =
                redis::cmd("GET").arg(&name).query_async(&mut conn).await?;
            Ok(value.map(Bytes::from))
        })
        .await
    }

    /// Stores `encoded` under `key` for `ttl`, within the tenant's `bound` in bytes.
    pub(crate) async fn put(
        &self,
        key: &CacheKey,
        encoded: Vec<u8>,
        ttl: Duration,
        bound: u64,
        now_ms: u64,
    ) -> Result<RedisPut, Failure> {
        let base = self.tenant_base(key);
        let mut call = self.put.prepare_invoke();
        call.key(format!("{base}:e:{}", key.hex()))
            .key(format!("{base}:idx"))
            .key(format!("{base}:sz"))
            .arg(key.hex())
            .arg(encoded)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .arg(bound)
            .arg(now_ms)
            .arg(format!("{base}:e:"));
        let reply: Vec<i64> = self
            .guarded(async {
                let mut conn = self.connection().await?;
                Ok(call.invoke_async(&mut conn).await?)
            })
            .await?;
        Ok(match reply.as_slice() {
            [stored, evicted, ..] => RedisPut {
                stored: *stored == 1,
                evicted: u64::try_from(*evicted).unwrap_or(0),
            },
            _ => RedisPut::default(),
        })
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
            Err(Failure::Skipped) => {}
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
