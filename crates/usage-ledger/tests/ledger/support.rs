//! Throwaway stores (a fresh Postgres database or an SQLite file per test, migrated with the
//! workspace migrations), a direct pool to check what was stored, a TCP proxy that can cut
//! the ledger off from Postgres, and event generators.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use parking_lot::Mutex;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{Connection, FromRow};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use usage_ledger::{Ledger, LedgerConfig, LedgerMetrics, UsageEvent};
use uuid::Uuid;

/// The Postgres server the tests use (`DATABASE_URL`, default the local `test` database).
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(what: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("usage-ledger-{what}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

enum Kind {
    Postgres { server: String, name: String },
    Sqlite { _dir: TempDir },
}

/// One test's store; dropped (database or file) when the test ends, even on failure.
pub struct Db {
    pub url: String,
    pub check: Check,
    kind: Kind,
}

/// A pool of the test's own, to look at what the ledger stored.
pub enum Check {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

macro_rules! on_check {
    ($check:expr, |$pool:ident| $body:expr) => {
        match $check {
            Check::Postgres($pool) => $body,
            Check::Sqlite($pool) => $body,
        }
    };
}

impl Db {
    /// A fresh `bulkhead_it_*` database with the Postgres migrations applied.
    pub async fn postgres() -> Self {
        let admin_url = postgres_url();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("Postgres is reachable at DATABASE_URL");
        let name = format!("bulkhead_it_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let server = admin_url.rsplit_once('/').unwrap().0.to_owned();
        let url = format!("{server}/{name}");
        let pool = PgPool::connect(&url).await.unwrap();
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .unwrap();
        Self {
            url,
            check: Check::Postgres(pool),
            kind: Kind::Postgres { server, name },
        }
    }

    /// A new SQLite file in a temporary directory with the SQLite migrations applied.
    pub async fn sqlite() -> Self {
        let dir = temp_dir("sqlite");
        let url = format!("sqlite://{}", dir.join("usage.db").display());
        let options: SqliteConnectOptions = url.parse().unwrap();
        let pool = SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap();
        sqlx::migrate!("../../migrations/sqlite")
            .run(&pool)
            .await
            .unwrap();
        Self {
            url,
            check: Check::Sqlite(pool),
            kind: Kind::Sqlite { _dir: dir },
        }
    }

    /// The database's URL through `proxy` (Postgres only).
    pub fn via(&self, proxy: &Proxy) -> String {
        match &self.kind {
            Kind::Postgres { name, .. } => {
                format!("postgres://postgres@127.0.0.1:{}/{name}", proxy.port)
            }
            Kind::Sqlite { .. } => panic!("only Postgres goes through a proxy"),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Postgres { server, name } => {
                let (admin, name) = (format!("{server}/postgres"), name.clone());
                // A runtime of its own: the test's may be shutting down.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let mut admin = sqlx::PgConnection::connect(&admin).await?;
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await
                    })
                })
                .join();
            }
            Kind::Sqlite { .. } => {}
        }
    }
}

/// An event as the store holds it.
#[derive(Debug, FromRow)]
pub struct StoredEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub key_id: Option<Uuid>,
    pub kind: String,
    pub alias: String,
    pub operation: String,
    pub member: Option<String>,
    pub deployment: Option<String>,
    pub region: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub documents: i64,
    pub status: i32,
    pub latency_ms: i64,
    pub streamed: bool,
    pub cache_hit: bool,
    pub finished_at: DateTime<Utc>,
}

/// A rollup row's key, as the tests compute it from events.
pub type HourKey = (Uuid, DateTime<Utc>, String, String, String, Uuid);

/// requests, prompt, completion, cached, documents, errors, cache hits
pub type HourSums = [i64; 7];

#[derive(Debug, FromRow)]
struct HourlyRow {
    tenant_id: Uuid,
    hour: DateTime<Utc>,
    kind: String,
    alias: String,
    deployment: String,
    key_id: Uuid,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    documents: i64,
    errors: i64,
    cache_hits: i64,
}

impl Check {
    pub async fn ids(&self) -> Vec<Uuid> {
        on_check!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM usage_events"
        )
        .fetch_all(pool)
        .await
        .unwrap())
    }

    pub async fn count(&self) -> i64 {
        on_check!(self, |pool| sqlx::query_scalar(
            "SELECT count(*) FROM usage_events"
        )
        .fetch_one(pool)
        .await
        .unwrap())
    }

    pub async fn event(&self, id: Uuid) -> StoredEvent {
        on_check!(self, |pool| sqlx::query_as(
            "SELECT * FROM usage_events WHERE id = $1"
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap())
    }

    pub async fn hourly(&self) -> BTreeMap<HourKey, HourSums> {
        let rows: Vec<HourlyRow> =
            on_check!(self, |pool| sqlx::query_as("SELECT * FROM usage_hourly")
                .fetch_all(pool)
                .await
                .unwrap());
        rows.into_iter()
            .map(|r| {
                (
                    (r.tenant_id, r.hour, r.kind, r.alias, r.deployment, r.key_id),
                    [
                        r.requests,
                        r.prompt_tokens,
                        r.completion_tokens,
                        r.cached_tokens,
                        r.documents,
                        r.errors,
                        r.cache_hits,
                    ],
                )
            })
            .collect()
    }
}

/// What the rollups must hold for `events`, computed independently of the ledger.
pub fn expected_hourly<'a>(
    events: impl IntoIterator<Item = &'a UsageEvent>,
) -> BTreeMap<HourKey, HourSums> {
    let mut rows: BTreeMap<HourKey, HourSums> = BTreeMap::new();
    for e in events {
        let hour = e.finished_at.duration_trunc(TimeDelta::hours(1)).unwrap();
        let key = (
            e.tenant_id,
            hour,
            e.kind.as_str().to_owned(),
            e.alias.clone(),
            e.deployment.clone().unwrap_or_default(),
            e.key_id.unwrap_or(Uuid::nil()),
        );
        let sums = rows.entry(key).or_default();
        let add = [
            1,
            e.prompt_tokens as i64,
            e.completion_tokens as i64,
            e.cached_tokens as i64,
            e.documents as i64,
            i64::from(e.status >= 400),
            i64::from(e.cache_hit),
        ];
        for (sum, value) in sums.iter_mut().zip(add) {
            *sum += value;
        }
    }
    rows
}

/// A base time on the hour, far from now so no test depends on the clock.
pub fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-03-10T08:00:00Z")
        .unwrap()
        .to_utc()
}

/// The `n`th of a varied stream of events: two tenants' keys, aliases, deployments, an
/// index, errors, and times spread over a few hours.
pub fn varied_event(tenant: Uuid, keys: &[Uuid], n: u64) -> UsageEvent {
    let at = base() + TimeDelta::seconds((n * 97 % (5 * 3600)) as i64);
    let mut e = if n.is_multiple_of(7) {
        let mut e = UsageEvent::search(tenant, "docs", "search", at);
        e.documents = n % 11;
        e
    } else {
        let alias = if n.is_multiple_of(3) {
            "embed"
        } else {
            "gpt-4o"
        };
        let mut e = UsageEvent::openai(tenant, alias, "chat.completions", at);
        e.deployment = Some(format!("dep-{}", n % 2));
        e.member = Some("eastus-1".into());
        e.region = Some("eastus".into());
        e.prompt_tokens = 100 + n % 50;
        e.completion_tokens = n % 30;
        e.cached_tokens = n % 5;
        e.streamed = n.is_multiple_of(2);
        // A cache hit: answered without Azure, so no tokens.
        if n.is_multiple_of(11) {
            e.cache_hit = true;
            e.prompt_tokens = 0;
            e.completion_tokens = 0;
            e.cached_tokens = 0;
        }
        e
    };
    e.key_id = if n.is_multiple_of(5) {
        None
    } else {
        Some(keys[n as usize % keys.len()])
    };
    e.status = if n.is_multiple_of(13) { 429 } else { 200 };
    e.latency_ms = n % 900;
    e
}

/// A ledger configuration for tests: small batches, short intervals, fast retries.
pub fn config(spill_dir: &std::path::Path) -> LedgerConfig {
    let mut config = LedgerConfig::new(spill_dir);
    config.batch_size = 64;
    config.flush_interval = Duration::from_millis(20);
    config.acquire_timeout = Duration::from_millis(500);
    config.write_timeout = Duration::from_secs(5);
    config.retry_min = Duration::from_millis(20);
    config.retry_max = Duration::from_millis(200);
    config
}

/// Waits (up to 30 s) until `done` holds for the ledger's metrics.
pub async fn until(ledger: &Ledger, what: &str, done: impl Fn(&LedgerMetrics) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = ledger.metrics();
        if done(&metrics) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lines in the spill files of `dir` (what is still waiting to be replayed).
pub fn spilled_lines(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .map(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .filter(|l| !l.is_empty())
                .count()
        })
        .sum()
}

/// A TCP proxy in front of Postgres that can be cut: established connections are dropped
/// and new ones are accepted and closed at once, as a dead store or a partition looks.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (up, connections) = (Arc::clone(&up), Arc::clone(&connections));
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    let mut relays = connections.lock();
                    relays.push(relay);
                    // cut() may have run since `up` was read: then this one goes too.
                    if !up.load(Ordering::SeqCst) {
                        relays.drain(..).for_each(|relay| relay.abort());
                    }
                }
            }
        });
        Self {
            port,
            up,
            connections,
            accept,
        }
    }

    /// In front of the Postgres server of `DATABASE_URL`.
    pub async fn postgres() -> Self {
        let url = postgres_url();
        let host_port = url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap();
        let target = tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap();
        Self::start(target).await
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for relay in self.connections.lock().drain(..) {
            relay.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
