//! Hostile and unlucky clients against the real binary: connections that never send, send a
//! byte at a time, send a body slowly or sit idle are closed within their configured times
//! while other calls keep answering; the connection cap refuses the extra connections and
//! recovers; SIGTERM drains the way a load balancer expects, and a stream still running when
//! the grace period ends gets an error event and a usage record of what it relayed.

use std::time::{Duration, Instant};

use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig};
use bulkhead_tests::{admin_call, eventually, fresh_postgres_database, GatewayProcess, MASTER_KEY};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or `within` passes): what arrived, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
        }
    }
}

async fn healthz(http: &reqwest::Client, base: &str) -> StatusCode {
    match http.get(format!("{base}/healthz")).send().await {
        Ok(response) => response.status(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::test]
async fn stalled_connections_are_closed_within_their_timeouts_while_calls_keep_answering() {
    let gateway = GatewayProcess::start(&[
        ("BULKHEAD_HEADER_READ_TIMEOUT_SECONDS", "1"),
        ("BULKHEAD_KEEPALIVE_IDLE_SECONDS", "3"),
        ("BULKHEAD_BODY_READ_TIMEOUT_SECONDS", "2"),
    ])
    .await;
    let address = gateway.address().to_owned();
    let http = reqwest::Client::new();
    let slack = Duration::from_secs(4);
    let key = tenant_key(&http, &gateway.base).await;

    // Idle: connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    // Slowloris: one byte of a request head every 300 ms.
    let slowloris: Vec<_> = (0..10)
        .map(|_| {
            let address = address.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&address).await.unwrap();
                let head =
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                let started = Instant::now();
                for byte in head {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return (started.elapsed(), true);
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(1)).await;
                (started.elapsed(), closed && !answer.contains("200 OK"))
            })
        })
        .collect();
    // Slow body: an authenticated head at once, then a byte of the body every 300 ms.
    let slow_bodies: Vec<_> = (0..5)
        .map(|_| {
            let (address, key) = (address.clone(), key.clone());
            tokio::spawn(async move {
                let stream = TcpStream::connect(&address).await.unwrap();
                let (mut read, mut write) = stream.into_split();
                let head = format!(
                    "POST /v1/tokenize HTTP/1.1\r\nHost: x\r\napi-key: {key}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
                );
                write.write_all(head.as_bytes()).await.unwrap();
                let started = Instant::now();
                let trickle = tokio::spawn(async move {
                    for _ in 0..100 {
                        if write.write_all(b" ").await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                });
                let mut seen = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut seen)).await;
                trickle.abort();
                (started.elapsed(), String::from_utf8_lossy(&seen).into_owned())
            })
        })
        .collect();
    // Meanwhile, ordinary calls answer.
    for _ in 0..10 {
        assert_eq!(healthz(&http, &gateway.base).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    for mut stream in idle {
        let (_, closed) = read_until_closed(&mut stream, slack).await;
        assert!(closed, "an idle connection was kept open");
    }
    assert!(
        started.elapsed() < slack,
        "idle connections were closed late"
    );
    for slow in slowloris {
        let (took, refused) = slow.await.unwrap();
        assert!(refused, "a slowloris got its answer");
        assert!(
            took < Duration::from_secs(1) + slack,
            "closed after {took:?}"
        );
    }
    for slow in slow_bodies {
        let (took, answer) = slow.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            took < Duration::from_secs(2) + slack,
            "answered after {took:?}"
        );
    }

    // Keep-alive: a second request on the same connection after a pause shorter than the
    // idle timeout is answered; left idle past it, the connection is closed.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "kept alive within the idle timeout"
    );
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(3) + slack).await;
    assert!(
        closed,
        "an idle keep-alive connection was kept past its timeout"
    );
    assert_eq!(healthz(&http, &gateway.base).await, StatusCode::OK);

    let (status, metrics) = metrics(&http, &gateway.base).await;
    assert_eq!(status, StatusCode::OK);
    let timed_out = counter(&metrics, "bulkhead_connections_timed_out_total");
    assert!(
        timed_out >= 61.0,
        "idle, slowloris and keep-alive closures counted: {timed_out}"
    );
}

/// A tenant `acme` and the secret of a key of it.
async fn tenant_key(http: &reqwest::Client, base: &str) -> String {
    let (status, _) = admin_call(
        http,
        base,
        Method::POST,
        "/admin/v1/tenants",
        Some(json!({"slug": "acme", "display_name": "Acme"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, key) = admin_call(
        http,
        base,
        Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    key["key"].as_str().unwrap().to_owned()
}

/// A request body that trickles in is answered 408 once its time is up.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_closes() {
    let gateway = GatewayProcess::start(&[("BULKHEAD_BODY_READ_TIMEOUT_SECONDS", "1")]).await;
    let http = reqwest::Client::new();
    let key = tenant_key(&http, &gateway.base).await;
    let mut stream = TcpStream::connect(gateway.address()).await.unwrap();
    let head = format!(
        "POST /v1/tokenize HTTP/1.1\r\nHost: x\r\napi-key: {key}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            if write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(6), read.read_to_end(&mut seen)).await;
    let answer = String::from_utf8_lossy(&seen).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains(r#""code":"RequestTimeout""#), "{answer}");
    trickle.abort();
}

async fn metrics(http: &reqwest::Client, base: &str) -> (StatusCode, String) {
    let response = http
        .get(format!("{base}/metrics"))
        .bearer_auth(bulkhead_tests::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_connection_cap_refuses_the_extra_connections_and_recovers() {
    let gateway = GatewayProcess::start(&[
        ("BULKHEAD_MAX_CONNECTIONS", "20"),
        ("BULKHEAD_HEADER_READ_TIMEOUT_SECONDS", "30"),
    ])
    .await;
    let address = gateway.address().to_owned();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // The readiness probe's connection may still be open on the server's side: wait until
    // the only one left is the metrics call itself, so the 20 below take every slot.
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(20),
        async || {
            let (_, text) = metrics(&http, &gateway.base).await;
            match counter(&text, "bulkhead_connections_open") {
                1.0 => Ok(()),
                open => Err(format!("{open} connections open")),
            }
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // Every slot is taken: the next connection is told so at once and closed.
    let mut extra = TcpStream::connect(&address).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(closed);
    // Freed, the slots serve again.
    drop(held);
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        async || match healthz(&http, &gateway.base).await {
            StatusCode::OK => Ok(()),
            other => Err(format!("{other}")),
        },
    )
    .await;
    let (_, text) = metrics(&http, &gateway.base).await;
    assert!(
        counter(&text, "bulkhead_connections_refused_total") >= 1.0,
        "{text}"
    );
}

/// SIGTERM: readiness 503 at once while the listener still accepts for the shutdown delay; an
/// answer on a kept-alive connection carries `Connection: close`; then new connections are
/// refused, a call in flight finishes, a stream still running at the end of the grace period
/// gets an error event, its usage (what it relayed, marked cut) reaches the store, and the
/// process exits.
#[tokio::test]
async fn sigterm_drains_the_way_a_load_balancer_expects() {
    let sim = Sim::start(
        SimConfig::default().with_resource(
            ResourceConfig::new("aoai", "eastus", "key-of-aoai")
                .with_deployment(DeploymentConfig::new("slow", "gpt-4o").with_latency(0, 1000))
                .with_deployment(DeploymentConfig::new("medium", "gpt-4o").with_latency(0, 200)),
        ),
    )
    .await
    .unwrap();
    let database = fresh_postgres_database().await;
    let mut gateway = GatewayProcess::start(&[
        ("DATABASE_URL", &database),
        ("BULKHEAD_MASTER_KEY", MASTER_KEY),
        ("BULKHEAD_SHUTDOWN_DELAY_SECONDS", "2"),
        ("BULKHEAD_SHUTDOWN_GRACE_SECONDS", "2"),
    ])
    .await;
    let http = reqwest::Client::new();
    let base = gateway.base.clone();
    for (path, body) in [
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai", "endpoint": sim.resource_url("aoai"), "region": "eastus",
                   "api_key": "key-of-aoai"}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai", "name": "slow", "model": "gpt-4o", "capacity_tpm": 1000000}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai", "name": "medium", "model": "gpt-4o", "capacity_tpm": 1000000}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "slow", "members": [{"deployment": "aoai/slow"}]}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "medium", "members": [{"deployment": "aoai/medium"}]}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "acme", "display_name": "Acme", "openai": {"isolation": "shared"}}),
        ),
    ] {
        let (status, answer) = admin_call(&http, &base, Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
    }
    let (_, key) = admin_call(
        &http,
        &base,
        Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    let key = key["key"].as_str().unwrap().to_owned();
    let chat = |alias: &str, stream: bool, max_tokens: u64| {
        http.post(format!(
            "{base}/openai/deployments/{alias}/chat/completions?api-version=2024-10-21"
        ))
        .header("api-key", &key)
        .json(
            &json!({"messages": [{"role": "user", "content": "Tell me a long story"}],
                      "max_tokens": max_tokens, "stream": stream}),
        )
        .send()
    };
    // A keep-alive connection, opened before the signal.
    let mut kept = TcpStream::connect(gateway.address()).await.unwrap();
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    kept.write_all(get).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // A stream that will outlive the grace period (at least 8 tokens at a second each), and a
    // call that finishes within it (at most 10 tokens at 200 ms).
    let stream = chat("slow", true, 1000).await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut events = stream.bytes_stream();
    let first = events.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let in_flight = tokio::spawn(chat("medium", false, 10));

    let signalled = Instant::now();
    gateway.sigterm();
    // Readiness goes 503 at once; liveness and new connections still work.
    eventually(
        Duration::from_secs(1),
        Duration::from_millis(20),
        async || match http.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => Ok(()),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
    assert!(signalled.elapsed() < Duration::from_secs(2));
    assert_eq!(
        healthz(&http, &base).await,
        StatusCode::OK,
        "still accepting"
    );
    // The kept-alive connection's next answer says it closes.
    kept.write_all(get).await.unwrap();
    let (answer, closed) = read_until_closed(&mut kept, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(closed, "closed after its answer");
    // After the delay, the listener is closed.
    eventually(
        Duration::from_secs(4),
        Duration::from_millis(50),
        async || match TcpStream::connect(gateway.address()).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_owned()),
        },
    )
    .await;
    assert!(
        signalled.elapsed() >= Duration::from_millis(1800),
        "accepted for the shutdown delay"
    );
    // The call in flight finished.
    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(finished.status(), StatusCode::OK);
    // The stream is cut with an error event in the OpenAI format.
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(Ok(chunk)) = events.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let last = text
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.starts_with("data: {\"error\""), "{last}");
    assert!(last.contains("ServiceUnavailable"), "{last}");
    let relayed = text.matches("\"delta\":{\"content\"").count();
    assert!(relayed > 0, "{text}");
    // The process exits soon after the grace period.
    let status = gateway
        .exited_within(Duration::from_secs(6))
        .await
        .expect("the gateway exits after its drain");
    assert!(status.success(), "{status:?}");
    // The stream's record reached the store: the tokens it relayed, marked cut.
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let rows: Vec<(i64, i64, bool, i32, bool)> = sqlx::query_as(
        "SELECT prompt_tokens, completion_tokens, cut, status, streamed FROM usage_events ORDER BY finished_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let cut: Vec<_> = rows.iter().filter(|r| r.2).collect();
    assert_eq!(cut.len(), 1, "{rows:?}");
    let (prompt, completion, _, status, streamed) = *cut[0];
    assert!(
        prompt > 0 && completion > 0,
        "never a record of 0 tokens: {rows:?}"
    );
    assert!(
        completion >= i64::try_from(relayed).unwrap() - 2,
        "{rows:?} vs {relayed}"
    );
    assert_eq!((status, streamed), (503, true));
    assert!(
        rows.iter().any(|r| !r.2 && r.3 == 200 && r.1 > 0),
        "the call that finished is metered from Azure's usage: {rows:?}"
    );
}
