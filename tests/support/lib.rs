//! Helpers for the end-to-end tests: the real gateway on port 0 (in-process, or as a child
//! process of the built binary), fresh Postgres databases, and a small admin client.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a broken fixture fails the test loudly"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use bulkhead_api::metering::CollectingSink;
use bulkhead_api::{Application, Config};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};

/// Runs `check` every `every` until it gives `Ok`, and returns that. Each `Err` says what was
/// seen instead; the last one is the failure message once `within` has passed. For what the
/// gateway does in the background (ledger batches, registry notifications, reconnections).
pub async fn eventually<T>(
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = std::time::Instant::now();
    loop {
        match check().await {
            Ok(done) => return done,
            Err(seen) if started.elapsed() >= within => panic!("after {within:?}: {seen}"),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";

/// A gateway serving on 127.0.0.1, stopped when dropped.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// Every usage record the gateway produced.
    pub usage: CollectingSink,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    dir: PathBuf,
}

impl TestApp {
    /// The gateway on the embedded store in a fresh directory.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = temp_dir("gateway");
        let mut config = Config::for_tests(dir.clone());
        config.admin_token = Some(SecretString::from(ADMIN_TOKEN));
        config.jwt_secret = Some(SecretString::from(JWT_SECRET));
        configure(&mut config);
        let usage = CollectingSink::default();
        let app = Application::build(config)
            .await
            .expect("gateway builds")
            .with_usage_sink(Arc::new(usage.clone()));
        let base = format!("http://{}", app.local_addr().expect("bound"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            usage,
            stop: Some(stop),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An admin call; returns the status and the JSON body (`Null` when empty).
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        admin_call(&self.http, &self.base, method, path, body).await
    }

    /// Onboards a tenant with no placement and returns its id.
    pub async fn onboard(&self, slug: &str) -> String {
        let (status, body) = self
            .admin(
                Method::POST,
                "/admin/v1/tenants",
                Some(json!({"slug": slug, "display_name": slug})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Issues a key and returns its id and secret.
    pub async fn key(&self, slug: &str, scope: &str) -> (String, String) {
        let (status, body) = self
            .admin(
                Method::POST,
                &format!("/admin/v1/tenants/{slug}/keys"),
                Some(json!({"name": "test", "scope": scope})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["key"].as_str().expect("key").to_owned(),
        )
    }

    /// `GET /v1/me` with the given headers.
    pub async fn me(&self, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url("/v1/me"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("gateway answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An admin call. A `202 Accepted` (an operation: provisioning, a move, offboarding) is
/// waited for, its operation polled until it ends, so the next step of a test sees its
/// effects; the answer returned is still the 202's. [`admin_call_no_wait`] does not wait.
pub async fn admin_call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, location, answer) = admin_request(http, base, method, path, body).await;
    if let (StatusCode::ACCEPTED, Some(location)) = (status, location) {
        let operation = wait_for_operation(http, base, &location, Duration::from_secs(60)).await;
        assert_eq!(
            operation["status"], "succeeded",
            "the operation of {path} did not succeed: {operation}"
        );
    }
    (status, answer)
}

/// Admin POSTs in order, each of which must succeed (an operation it starts included).
pub async fn admin_posts(http: &reqwest::Client, base: &str, steps: Vec<(&str, Value)>) {
    for (path, body) in steps {
        let (status, answer) = admin_call(http, base, Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
    }
}

/// A new read-write API key of `slug`: its secret.
pub async fn issue_key(http: &reqwest::Client, base: &str, slug: &str) -> String {
    let (status, key) = admin_call(
        http,
        base,
        Method::POST,
        &format!("/admin/v1/tenants/{slug}/keys"),
        Some(json!({"name": "k", "scope": "read-write"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["key"].as_str().expect("the key's secret").to_owned()
}

/// An admin call, not waiting for the operation a 202 starts.
pub async fn admin_call_no_wait(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    admin_request(http, base, method, path, body).await
}

async fn admin_request(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status();
    let location = response
        .headers()
        .get("operation-location")
        .and_then(|v| v.to_str().ok())
        .map(ToOwned::to_owned);
    let text = response.text().await.unwrap_or_default();
    (
        status,
        location,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Polls the operation at `location` (`/admin/v1/operations/{id}`) until it ends; its last
/// view. Panics if it has not ended `within`.
pub async fn wait_for_operation(
    http: &reqwest::Client,
    base: &str,
    location: &str,
    within: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, _, operation) = admin_request(http, base, Method::GET, location, None).await;
        assert_eq!(status, StatusCode::OK, "{location}: {operation}");
        let done = matches!(
            operation["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        );
        if done {
            return operation;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{location} has not ended: {operation}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bulkhead-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The Postgres server the tests use (`DATABASE_URL`, default the local `test` database).
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let url = postgres_url();
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("Postgres is reachable at DATABASE_URL");
    let name = format!("bulkhead_it_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("DATABASE_URL has no database part"),
    }
}

/// A binary of this workspace, built by `cargo build --workspace --bins` (`make test` does).
pub fn binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A gateway running as its own OS process, killed when dropped. Its output is kept so tests
/// can check what it logged.
pub struct GatewayProcess {
    pub base: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl GatewayProcess {
    pub async fn start(envs: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = temp_dir("process");
        let log = dir.join("gateway.log");
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let mut command = tokio::process::Command::new(binary("bulkhead"));
        command
            .env_clear()
            .env("BULKHEAD_LISTEN", format!("127.0.0.1:{port}"))
            .env("BULKHEAD_DATA_DIR", &dir)
            .env("BULKHEAD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("BULKHEAD_JWT_SECRET", JWT_SECRET)
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        for (name, value) in envs {
            command.env(name, value);
        }
        let child = command.spawn().expect("gateway starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = http.get(format!("{base}/readyz")).send().await {
                if response.status().is_success() {
                    return Self { base, child, log };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("gateway at {base} never became ready:\n{output}");
    }

    /// Everything the process has written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL: no drain, no flush), like a crashed replica.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits (at most `within`) for the process to exit; `None` if it is still running.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// `host:port` of the gateway.
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the gateway exits after SIGTERM")
            .expect("exit status")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Base64 of 32 fixed bytes: a master key for tests.
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A TCP proxy a test can cut: the way to take Redis or Postgres away from a gateway (and
/// give it back) without stopping the machine's server, which other tests use.
pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Forwards every connection to `upstream` (`host:port`) until [`CutProxy::cut`].
    pub async fn start(upstream: &str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_owned();
        let accept = tokio::spawn({
            let up = Arc::clone(&up);
            let connections = Arc::clone(&connections);
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().expect("proxy lock").push(task);
                }
            }
        });
        Self {
            addr,
            up,
            connections,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones: the server is gone.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().expect("proxy lock").drain(..) {
            task.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut connections) = self.connections.lock() {
            for task in connections.drain(..) {
                task.abort();
            }
        }
    }
}

/// The Redis server the tests use (`REDIS_URL`, default the local one).
pub fn redis_address() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .and_then(|url| {
            url.strip_prefix("redis://")
                .map(|rest| rest.trim_end_matches('/').to_owned())
        })
        .unwrap_or_else(|| "127.0.0.1:6379".into())
}
