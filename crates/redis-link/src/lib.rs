//! The Redis side both the quota and the response cache stand on: a [`Link`] to one Redis or
//! to a Redis Cluster (seed nodes), holding one multiplexed connection that every caller
//! shares and that is opened again after a failure, and a [`Breaker`] that, after a failure,
//! lets one probe through per retry interval so no request waits on a Redis known to be down.
//!
//! What each user does with the connection (its scripts, its key layout, what a failure
//! means for its callers) stays in that crate; this one only connects, reconnects and decides
//! when to try again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

/// A standalone Redis, or a cluster reached through its seed nodes.
enum Backend {
    Single(Client),
    Cluster {
        cluster: Box<ClusterClient>,
        /// Classic pub/sub through the first seed: a cluster delivers it on every node.
        pubsub: Client,
    },
}

/// A connection to either, cheap to clone (clones share the multiplexed connection).
#[derive(Clone)]
pub enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The process's connection to Redis: opened on first use (so a process starts while Redis is
/// down), shared by every caller, forgotten by [`Link::reset`] after a failure.
pub struct Link {
    backend: Backend,
    connection: ArcSwapOption<Connection>,
    connecting: tokio::sync::Mutex<()>,
    timeout: Duration,
}

impl Link {
    /// `urls`: one Redis URL, or (with `cluster`) seed nodes of a cluster, comma-separated.
    /// `timeout` bounds connecting; callers bound each call themselves.
    pub fn new(urls: &str, cluster: bool, timeout: Duration) -> Result<Self, RedisError> {
        let backend = if cluster {
            let seeds: Vec<&str> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect();
            let first = seeds.first().copied().unwrap_or_default();
            Backend::Cluster {
                cluster: Box::new(
                    ClusterClient::builder(seeds.iter().copied())
                        .connection_timeout(timeout)
                        .build()?,
                ),
                pubsub: Client::open(first)?,
            }
        } else {
            Backend::Single(Client::open(urls)?)
        };
        Ok(Self {
            backend,
            connection: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            timeout,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }

    /// The shared connection, opened if there is none (one caller opens it; the others
    /// wait for it rather than each opening their own).
    pub async fn connection(&self) -> Result<Connection, RedisError> {
        if let Some(conn) = self.connection.load().as_deref() {
            return Ok(conn.clone());
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.connection.load().as_deref() {
            return Ok(conn.clone());
        }
        // The caller's timeout bounds the whole call; the driver's own response timeout
        // would only duplicate it.
        let conn = match &self.backend {
            Backend::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(None);
                Connection::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            Backend::Cluster { cluster, .. } => {
                Connection::Cluster(cluster.get_async_connection().await?)
            }
        };
        self.connection.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// Forgets the connection: one that timed out may be hung rather than slow, so the next
    /// call starts afresh.
    pub fn reset(&self) {
        self.connection.store(None);
    }

    /// A pub/sub connection of its own (subscriptions cannot share the multiplexed one).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        match &self.backend {
            Backend::Single(client) => client.get_async_pubsub().await,
            Backend::Cluster { pubsub, .. } => pubsub.get_async_pubsub().await,
        }
    }
}

/// Whether to call Redis: always while it answers; after a failure, one probe per
/// `retry_interval` (the one caller that moves the probe time forward is the probe).
pub struct Breaker {
    /// Names the user in the log lines (`quota`, `response cache`).
    what: &'static str,
    /// What callers do meanwhile, for the log line of the first failure.
    meanwhile: &'static str,
    healthy: AtomicBool,
    /// Milliseconds since `epoch` before which no probe is sent.
    next_probe_ms: AtomicU64,
    epoch: Instant,
    retry_interval: Duration,
}

impl Breaker {
    pub fn new(what: &'static str, meanwhile: &'static str, retry_interval: Duration) -> Self {
        Self {
            what,
            meanwhile,
            healthy: AtomicBool::new(true),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            retry_interval,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn interval_ms(&self) -> u64 {
        u64::try_from(self.retry_interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this call may go to Redis.
    pub fn allows(&self) -> bool {
        if self.healthy.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.now_ms();
        let at = self.next_probe_ms.load(Ordering::Relaxed);
        now >= at
            && self
                .next_probe_ms
                .compare_exchange(
                    at,
                    now + self.interval_ms(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn success(&self) {
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!("{}: redis answers again", self.what);
        }
    }

    pub fn failure(&self, error: &dyn std::fmt::Display) {
        self.next_probe_ms
            .store(self.now_ms() + self.interval_ms(), Ordering::Release);
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(%error, retry_in = ?self.retry_interval, "{}: redis unreachable; {}", self.what, self.meanwhile);
        } else {
            tracing::debug!(%error, "{}: redis still unreachable", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_failure_one_probe_goes_through_per_interval() {
        let breaker = Breaker::new("test", "nothing", Duration::from_millis(40));
        assert!(breaker.allows() && breaker.allows(), "healthy: every call");
        breaker.failure(&"down");
        assert!(!breaker.allows(), "no call before the interval");
        std::thread::sleep(Duration::from_millis(50));
        assert!(breaker.allows(), "one probe");
        assert!(!breaker.allows(), "only one");
        breaker.success();
        assert!(breaker.allows() && breaker.is_healthy());
    }
}
