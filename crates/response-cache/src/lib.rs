//! The per-tenant response cache: a successful answer kept for a while, served again to the
//! same tenant's identical request without reaching Azure.
//!
//! - [`key`]: what makes two requests the same (a canonical body, the tenant, alias,
//!   operation and model in the key material: another tenant's identical request has another
//!   key, by construction);
//! - [`Entry`]: the answer as stored, naming its tenant and key (checked on every read);
//! - a Redis layer shared by every replica (TTL, a byte bound per tenant with the entries
//!   that expire first evicted, atomically in a script), behind a small in-process layer
//!   (bounded by bytes, short-lived copies) so a hot key costs no round trip.
//!
//! The cache never fails a call: Redis errors and timeouts are misses (or stores not made),
//! counted in [`MetricsSnapshot`]. It knows neither HTTP nor the registry: `api` decides who
//! may use it (the tenant's setting, the request's headers) and what is cacheable.

mod entry;
pub mod key;
mod local;
mod redis_store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};

pub use entry::{Entry, EntryKind};
pub use key::{CacheKey, KeyMaterial};

use local::LocalLayer;
use redis_store::RedisLayer;

/// How the cache runs (the gateway's `BULKHEAD_CACHE_*` settings).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Redis shared by every replica; `None`: the in-process layer is the whole cache.
    pub redis_url: Option<SecretString>,
    /// `redis_url` is a Redis Cluster (seed nodes, comma-separated).
    pub cluster: bool,
    /// Prepended to every key (no `{` or `}`: the tenant is the hash tag).
    pub key_prefix: String,
    /// The longest a lookup or a store waits for Redis.
    pub timeout: Duration,
    /// After a Redis failure, calls skip Redis this long before one probes it.
    pub retry_interval: Duration,
    /// Bytes the in-process layer holds at most (0: no in-process layer when Redis is used).
    pub local_max_bytes: usize,
    /// How long the in-process layer keeps a copy of a Redis entry.
    pub local_ttl: Duration,
    /// The largest answer stored (larger ones are served, not kept).
    pub max_entry_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            cluster: false,
            key_prefix: "bulkhead:cache:".into(),
            timeout: Duration::from_millis(50),
            retry_interval: Duration::from_secs(1),
            local_max_bytes: 64 * 1024 * 1024,
            local_ttl: Duration::from_secs(5),
            max_entry_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A tenant's cache settings, as its admin set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantPolicy {
    /// How long an answer is served; an entry older than the tenant's current TTL is not
    /// served even if Redis still holds it (the TTL was lowered).
    pub ttl: Duration,
    /// Bytes of entries the tenant may hold in Redis (and in each replica's memory).
    pub max_bytes: u64,
}

/// The cache could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Where a hit was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Local,
    Redis,
}

/// A cached answer for the key asked for.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Entry,
    pub layer: Layer,
}

impl Hit {
    /// Seconds since the answer was stored (the `Age` header).
    pub fn age_seconds(&self) -> u64 {
        now_ms().saturating_sub(self.entry.created_ms) / 1000
    }
}

/// What a store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Yes,
    /// Larger than the largest entry, or than the tenant's whole bound.
    TooLarge,
    /// Redis did not take it (down, slow): only this replica's memory has it.
    Failed,
}

#[derive(Debug, Default)]
struct Counters {
    hits_local: AtomicU64,
    hits_redis: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    stores: AtomicU64,
    too_large: AtomicU64,
    evictions_local: AtomicU64,
    evictions_redis: AtomicU64,
    redis_errors: AtomicU64,
    redis_skipped: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The cache's counters since it was built (no tenant in them: a fleet of tenants would be
/// a fleet of series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    pub hits_local: u64,
    pub hits_redis: u64,
    /// Lookups that found nothing usable (Redis down included).
    pub misses: u64,
    /// Requests that did not read the cache though their tenant uses it (`no-store`,
    /// `no-cache`, `x-bulkhead-cache: skip|refresh`).
    pub bypasses: u64,
    /// Answers stored (in Redis, or in memory without Redis).
    pub stores: u64,
    /// Answers too large to store.
    pub too_large: u64,
    /// Entries evicted from memory (the layer's or a tenant's bound) and from Redis (a
    /// tenant's bound).
    pub evictions_local: u64,
    pub evictions_redis: u64,
    /// Redis calls that failed or timed out.
    pub redis_errors: u64,
    /// Redis calls not made because Redis failed recently (it is probed once per interval).
    pub redis_skipped: u64,
    /// Bytes the in-process layer holds.
    pub local_bytes: u64,
}

/// The cache: an in-process layer and, when configured, Redis.
pub struct ResponseCache {
    local: Option<LocalLayer>,
    redis: Option<RedisLayer>,
    max_entry_bytes: usize,
    counters: Counters,
}

impl ResponseCache {
    pub fn new(config: &CacheConfig) -> Result<Self, CacheError> {
        let redis = match &config.redis_url {
            Some(url) => Some(RedisLayer::new(
                url.expose_secret(),
                config.cluster,
                config.key_prefix.clone(),
                config.timeout.max(Duration::from_millis(1)),
                config.retry_interval,
            )?),
            None => None,
        };
        // Without Redis the memory layer is the cache (entries live their TTL); with it, a
        // short-lived copy.
        let local = match (&redis, config.local_max_bytes) {
            (Some(_), 0) => None,
            (Some(_), bytes) => Some(LocalLayer::new(bytes, Some(config.local_ttl))),
            (None, bytes) => Some(LocalLayer::new(bytes.max(1), None)),
        };
        Ok(Self {
            local,
            redis,
            max_entry_bytes: config.max_entry_bytes,
            counters: Counters::default(),
        })
    }

    /// Connects to Redis and loads the script, waiting up to `patience` (start-up). A Redis
    /// that does not answer is not fatal: lookups are misses until it does.
    pub async fn warm_up(&self, patience: Duration) -> Result<(), String> {
        match &self.redis {
            Some(redis) => redis.warm_up(patience).await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Whether Redis is configured (entries are shared by every replica).
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// The largest answer worth collecting for a store.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// The answer stored for `key`, if one is, younger than the tenant's TTL, and for `key`
    /// (its tenant and digest). Never fails: anything else is a miss.
    pub async fn get(&self, key: &CacheKey, policy: TenantPolicy) -> Option<Hit> {
        let now = now_ms();
        let ttl_ms = millis(policy.ttl);
        let fresh = |entry: &Entry| {
            entry.is_for(key)
                && entry.expires_ms > now
                && now.saturating_sub(entry.created_ms) < ttl_ms
        };
        if let Some(entry) = self.local.as_ref().and_then(|l| l.get(key, now)) {
            if fresh(&entry) {
                add(&self.counters.hits_local, 1);
                return Some(Hit {
                    entry,
                    layer: Layer::Local,
                });
            }
        }
        let found = match &self.redis {
            Some(redis) => match redis.get(key).await {
                Ok(found) => found.and_then(Entry::decode),
                Err(error) => {
                    self.count_failure(&error);
                    None
                }
            },
            None => None,
        };
        match found.filter(|entry| fresh(entry)) {
            Some(entry) => {
                if let Some(local) = &self.local {
                    let put = local.put(entry.clone(), bound(policy.max_bytes), now);
                    add(&self.counters.evictions_local, put.evicted);
                }
                add(&self.counters.hits_redis, 1);
                Some(Hit {
                    entry,
                    layer: Layer::Redis,
                })
            }
            None => {
                add(&self.counters.misses, 1);
                None
            }
        }
    }

    /// Stores a successful answer under `key` for the tenant's TTL, within its bound.
    pub async fn put(
        &self,
        key: &CacheKey,
        kind: EntryKind,
        body: Bytes,
        policy: TenantPolicy,
    ) -> Stored {
        let now = now_ms();
        let entry = Entry::new(key, kind, body, now, millis(policy.ttl));
        let size = entry.size();
        if size > self.max_entry_bytes || size as u64 > policy.max_bytes {
            add(&self.counters.too_large, 1);
            return Stored::TooLarge;
        }
        let encoded = self.redis.as_ref().map(|_| entry.encode());
        if let Some(local) = &self.local {
            let put = local.put(entry, bound(policy.max_bytes), now);
            add(&self.counters.evictions_local, put.evicted);
            if self.redis.is_none() {
                if put.stored {
                    add(&self.counters.stores, 1);
                }
                return if put.stored {
                    Stored::Yes
                } else {
                    Stored::TooLarge
                };
            }
        }
        let (Some(redis), Some(encoded)) = (&self.redis, encoded) else {
            return Stored::Failed;
        };
        match redis
            .put(key, encoded, policy.ttl, policy.max_bytes, now)
            .await
        {
            Ok(put) => {
                add(&self.counters.evictions_redis, put.evicted);
                if put.stored {
                    add(&self.counters.stores, 1);
                    Stored::Yes
                } else {
                    add(&self.counters.too_large, 1);
                    Stored::TooLarge
                }
            }
            Err(error) => {
                self.count_failure(&error);
                Stored::Failed
            }
        }
    }

    /// A request of a tenant that uses the cache did not read it (its headers said so).
    pub fn bypassed(&self) {
        add(&self.counters.bypasses, 1);
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            hits_local: get(&c.hits_local),
            hits_redis: get(&c.hits_redis),
            misses: get(&c.misses),
            bypasses: get(&c.bypasses),
            stores: get(&c.stores),
            too_large: get(&c.too_large),
            evictions_local: get(&c.evictions_local),
            evictions_redis: get(&c.evictions_redis),
            redis_errors: get(&c.redis_errors),
            redis_skipped: get(&c.redis_skipped),
            local_bytes: self.local.as_ref().map_or(0, |l| l.bytes() as u64),
        }
    }

    /// The Redis name of `key`'s entry (tests look at what Redis holds).
    pub fn redis_entry_name(&self, key: &CacheKey) -> Option<String> {
        self.redis.as_ref().map(|r| r.entry_name(key))
    }

    fn count_failure(&self, error: &redis_store::Failure) {
        if error.was_sent() {
            add(&self.counters.redis_errors, 1);
            tracing::debug!(%error, "response cache: redis call failed");
        } else {
            add(&self.counters.redis_skipped, 1);
        }
    }
}

fn bound(max_bytes: u64) -> usize {
    usize::try_from(max_bytes).unwrap_or(usize::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock in ms since the Unix epoch: entries' times are compared across replicas.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
