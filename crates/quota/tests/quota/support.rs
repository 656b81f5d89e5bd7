//! What the scenarios run on: a harness per backend (Redis with a key prefix of its own, or
//! in process), a TCP proxy to cut or stall Redis, and a private redis-server to restart.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quota::{LeaseConfig, Limiter, Limits, OnRedisError, QuotaConfig, Scope, ScopeLimits};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The shared Redis of the machine (`make test` and CI export `REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A limiter on Redis that asks it for every call (no leases).
pub fn config(url: &str, prefix: &str) -> QuotaConfig {
    QuotaConfig {
        redis_url: Some(SecretString::from(url.to_owned())),
        cluster: false,
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_millis(50),
        on_redis_error: OnRedisError::FailClosed,
        retry_interval: Duration::from_millis(100),
        lease: LeaseConfig {
            calls: 0,
            ..LeaseConfig::default()
        },
    }
}

/// A limiter on Redis with leases, idle slices going back after 200 ms.
pub fn leased_config(url: &str, prefix: &str) -> QuotaConfig {
    QuotaConfig {
        lease: LeaseConfig {
            calls: 8,
            idle: Duration::from_millis(200),
            ttl: Duration::from_secs(30),
            recall_wait: Duration::from_millis(300),
        },
        // Three limiters in one test process on a busy machine.
        timeout: Duration::from_millis(500),
        ..config(url, prefix)
    }
}

pub fn limits(tpm: Option<u64>, rpm: Option<u64>, monthly: Option<u64>) -> Limits {
    Limits {
        tokens_per_minute: tpm,
        requests_per_minute: rpm,
        monthly_tokens: monthly,
    }
}

pub fn tenant(name: &str, limits: Limits) -> ScopeLimits {
    ScopeLimits::new(Scope::tenant(name), limits)
}

/// A key of the tenant its name starts with (`acme-key-1` is acme's), so both scopes of a call
/// share a hash slot as the gateway's do.
pub fn key(name: &str, limits: Limits) -> ScopeLimits {
    let tenant = name.split('-').next().unwrap_or(name);
    ScopeLimits::new(Scope::api_key(tenant, name), limits)
}

pub fn unique_prefix(test: &str) -> String {
    format!("quota-test:{test}:{}:", uuid::Uuid::new_v4().simple())
}

/// Limiters that play the replicas of one gateway: on Redis, independent `Limiter`s (each its
/// own connection) sharing a key prefix; in process, clones of one limiter.
pub struct Harness {
    pub on_redis: bool,
    pub leased: bool,
    prefix: String,
    replicas: Vec<Limiter>,
}

impl Harness {
    pub async fn redis(test: &str) -> Self {
        Self::on_redis(test, config).await
    }

    pub async fn leased(test: &str) -> Self {
        Self::leased_with(test, Duration::from_millis(200)).await
    }

    /// Leases whose idle slices go back after `idle`.
    pub async fn leased_with(test: &str, idle: Duration) -> Self {
        let mut h = Self::on_redis(test, |url, prefix| {
            let mut config = leased_config(url, prefix);
            config.lease.idle = idle;
            config
        })
        .await;
        h.leased = true;
        h
    }

    async fn on_redis(test: &str, config: impl Fn(&str, &str) -> QuotaConfig) -> Self {
        let prefix = unique_prefix(test);
        let mut replicas = Vec::new();
        for _ in 0..3 {
            let limiter = Limiter::new(config(&redis_url(), &prefix)).unwrap();
            limiter
                .warm_up(Duration::from_secs(5))
                .await
                .expect("these tests need Redis at REDIS_URL (default 127.0.0.1:6379)");
            replicas.push(limiter);
        }
        Self {
            on_redis: true,
            leased: false,
            prefix,
            replicas,
        }
    }

    pub fn local() -> Self {
        let limiter = Limiter::in_process();
        Self {
            on_redis: false,
            leased: false,
            prefix: String::new(),
            replicas: vec![limiter.clone(), limiter.clone(), limiter],
        }
    }

    pub fn limiter(&self) -> &Limiter {
        &self.replicas[0]
    }

    pub fn replica(&self, i: usize) -> &Limiter {
        &self.replicas[i % self.replicas.len()]
    }

    /// Deletes the test's keys (they would expire in 35 days anyway).
    pub async fn cleanup(self) {
        if self.on_redis {
            delete_prefix(&redis_url(), &self.prefix).await;
        }
    }
}

pub async fn delete_prefix(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Polls `check` until it holds or `within` has passed.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow both ways.
    Forward,
    /// Connections stay open but nothing flows: a hung Redis.
    Stall,
    /// Open connections are cut and new ones closed at once: a Redis that is gone.
    Refuse,
}

/// A TCP proxy in front of Redis whose behaviour a test switches.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Forward);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let mode = mode.clone();
            let connections = connections.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if *mode.borrow() == Mode::Refuse {
                        drop(client);
                        continue;
                    }
                    let rx = mode.subscribe();
                    let task = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            pump_both(client, server, rx).await;
                        }
                    });
                    connections.lock().push(task);
                }
            }
        });
        Self {
            addr,
            mode,
            connections,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
        if mode == Mode::Refuse {
            for task in self.connections.lock().drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().drain(..) {
            task.abort();
        }
    }
}

async fn pump_both(client: TcpStream, server: TcpStream, mode: watch::Receiver<Mode>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pump(cr, sw, mode.clone()), pump(sr, cw, mode));
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Hold the bytes while stalled; a cut aborts the task.
        if mode.wait_for(|m| *m == Mode::Forward).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A redis-server of the test's own, on a port of its own, to stop and start again.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let mut this = Self { port, child: None };
        this.restart().await;
        this
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port, empty: no data, no scripts.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let up = eventually(Duration::from_secs(5), || async {
            TcpStream::connect(("127.0.0.1", self.port)).await.is_ok()
        })
        .await;
        assert!(up, "private redis-server did not start");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The address of the shared Redis, for the proxy.
pub async fn redis_addr() -> SocketAddr {
    let url = redis_url();
    let host_port = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}
