//! Traces over OTLP: the real binary sends its spans (authentication, routing, each upstream
//! attempt with its member and outcome, the retry between) to a collector in the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use azure_sim::{DeploymentConfig, FaultSpec, ResourceConfig, Sim, SimConfig};
use bulkhead_tests::{admin_call, admin_posts, GatewayProcess};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// What the collector received: path, content type, body.
type Received = Arc<Mutex<Vec<(String, String, Bytes)>>>;

async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new().fallback({
        let received = Arc::clone(&received);
        move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let received = Arc::clone(&received);
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                received
                    .lock()
                    .unwrap()
                    .push((uri.path().to_owned(), content_type, body));
                StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, received)
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn spans_of_authentication_routing_and_every_upstream_attempt_reach_the_collector() {
    let sim = Sim::start(
        SimConfig::default()
            .with_resource(
                ResourceConfig::new("aoai-a", "eastus", "key-of-aoai-a")
                    .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o")),
            )
            .with_resource(
                ResourceConfig::new("aoai-b", "westus", "key-of-aoai-b")
                    .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o")),
            ),
    )
    .await
    .unwrap();
    // The first attempt fails, so the call is retried on the other member.
    sim.inject_fault(FaultSpec::status("aoai-a", 500).times(1));
    let (endpoint, received) = collector().await;
    // The standard OpenTelemetry variables.
    let gateway = GatewayProcess::start(&[
        ("BULKHEAD_LOG", "warn"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "bulkhead-under-test"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=ci-check",
        ),
    ])
    .await;
    let http = reqwest::Client::new();
    let base = &gateway.base;
    let steps = vec![
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-a", "endpoint": sim.resource_url("aoai-a"),
            "region": "eastus", "api_key": "key-of-aoai-a"}),
        ),
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-b", "endpoint": sim.resource_url("aoai-b"),
            "region": "westus", "api_key": "key-of-aoai-b"}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-a", "name": "gpt-4o",
            "model": "gpt-4o", "capacity_tpm": 100000}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-b", "name": "gpt-4o",
            "model": "gpt-4o", "capacity_tpm": 100000}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "gpt-4o", "members": [
            {"deployment": "aoai-a/gpt-4o", "priority": 0},
            {"deployment": "aoai-b/gpt-4o", "priority": 1}]}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "acme", "display_name": "Acme",
            "openai": {"isolation": "shared"}}),
        ),
    ];
    admin_posts(&http, base, steps).await;
    let (_, key) = admin_call(
        &http,
        base,
        Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    let answer = http
        .post(format!(
            "{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        ))
        .header("api-key", key["key"].as_str().unwrap())
        // The caller's trace: the gateway's spans continue it, and Azure is told.
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // Both upstream attempts carried the caller's trace id, with a span of the gateway's.
    let sent: Vec<String> = ["aoai-a", "aoai-b"]
        .iter()
        .flat_map(|r| sim.requests(Some(r)))
        .filter_map(|r| r.header("traceparent").map(ToOwned::to_owned))
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    for traceparent in &sent {
        assert!(
            traceparent.starts_with(&format!("00-{TRACE_ID}-")),
            "{traceparent}"
        );
        assert!(
            !traceparent.contains("00f067aa0ba902b7"),
            "the gateway's own span is the parent"
        );
    }

    // Spans are exported in batches (every second) and flushed on SIGTERM.
    let started = Instant::now();
    let all = loop {
        let all: Vec<u8> = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, _, body)| body.to_vec())
            .collect();
        if contains(&all, "upstream attempt") || started.elapsed() > Duration::from_secs(10) {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    gateway.terminate().await;
    for (path, content_type, _) in received.lock().unwrap().iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
    }
    // The spans are in the caller's trace (OTLP carries the id as 16 raw bytes).
    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&TRACE_ID[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(
        all.windows(16).any(|w| w == trace_id.as_slice()),
        "the exported spans are not in the caller's trace"
    );
    for needle in [
        "bulkhead-under-test",
        "deployment.environment",
        "ci-check",
        "request",
        "authenticate",
        "route",
        "upstream attempt",
        "aoai-a/gpt-4o",
        "aoai-b/gpt-4o",
        "failed",
        "answered",
        "retrying",
    ] {
        assert!(
            contains(&all, needle),
            "no {needle:?} in the exported spans"
        );
    }
    // Secrets never travel in spans.
    for secret in [
        "key-of-aoai-a",
        "key-of-aoai-b",
        key["key"].as_str().unwrap(),
    ] {
        assert!(!contains(&all, secret), "a secret reached the collector");
    }
}
