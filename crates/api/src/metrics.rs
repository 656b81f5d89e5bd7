//! Prometheus metrics at `GET /metrics` (admin token required: tenant names are labels).
//!
//! Recorded as calls finish:
//! - `bulkhead_requests_total` and `bulkhead_request_duration_seconds` by `route` (the
//!   operation), `alias` (model alias or logical index), `member` (`resource/deployment`, or
//!   `none` when no upstream answered) and `status`;
//! - `bulkhead_tokens_total` by `tenant` (dropped with `BULKHEAD_METRICS_TENANT_LABELS=false`
//!   for very large fleets), `model` and `type` (`prompt`, `completion`, `cached`).
//!
//! Read at scrape time from the components that own them:
//! - `bulkhead_member_breaker_state` (0 closed, 1 half-open, 2 open) and
//!   `bulkhead_member_cooldown_seconds` per member;
//! - `bulkhead_quota_*`: admissions, refusals by reason, Redis errors, fail-open decisions;
//! - `bulkhead_ledger_*`: buffered records, lag, written, spilled, write errors, store up.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Latency buckets (seconds): from a cached embedding to a long completion.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (several gateways in one test process share it).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("bulkhead_request_duration_seconds".into()),
                    BUCKETS,
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "a metrics recorder was already installed");
                    None
                }
            }
        })
        .clone()
}

/// One finished call.
pub fn call(route: &'static str, alias: &str, member: Option<&str>, status: u16, seconds: f64) {
    let labels = [
        ("route", route.to_owned()),
        ("alias", alias.to_owned()),
        ("member", member.unwrap_or("none").to_owned()),
        ("status", status.to_string()),
    ];
    counter!("bulkhead_requests_total", &labels).increment(1);
    histogram!("bulkhead_request_duration_seconds", &labels).record(seconds);
}

/// Tokens one call consumed; `tenant` is `None` when tenant labels are off.
pub fn tokens(tenant: Option<&str>, model: &str, prompt: u64, completion: u64, cached: u64) {
    for (kind, n) in [
        ("prompt", prompt),
        ("completion", completion),
        ("cached", cached),
    ] {
        if n == 0 {
            continue;
        }
        match tenant {
            Some(tenant) => counter!("bulkhead_tokens_total",
                "tenant" => tenant.to_owned(), "model" => model.to_owned(), "type" => kind)
            .increment(n),
            None => counter!("bulkhead_tokens_total", "model" => model.to_owned(), "type" => kind)
                .increment(n),
        }
    }
}

/// `GET /metrics`: the recorded series plus the state of breakers, quotas and the ledger.
pub async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = install() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are not recorded").into_response();
    };
    let now = Instant::now();
    for (member, breaker, cooling) in state.openai.health().states(now) {
        let value = match breaker {
            openai_router::health::BreakerState::Closed { .. } => 0.0,
            openai_router::health::BreakerState::HalfOpen => 1.0,
            openai_router::health::BreakerState::Open { until } if until > now => 2.0,
            openai_router::health::BreakerState::Open { .. } => 1.0,
        };
        gauge!("bulkhead_member_breaker_state", "member" => member.clone()).set(value);
        gauge!("bulkhead_member_cooldown_seconds", "member" => member)
            .set(cooling.map_or(0.0, |c| c.as_secs_f64()));
    }
    let quota = state.quota.metrics();
    counter!("bulkhead_quota_admissions_total").absolute(quota.admitted);
    for (reason, n) in [
        ("rate_limited", quota.refused_rate_limited),
        ("budget_exhausted", quota.refused_budget_exhausted),
        ("exceeds_limit", quota.refused_exceeds_limit),
        ("unavailable", quota.refused_unavailable),
    ] {
        counter!("bulkhead_quota_refusals_total", "reason" => reason).absolute(n);
    }
    counter!("bulkhead_quota_redis_errors_total").absolute(quota.redis_errors);
    counter!("bulkhead_quota_fail_open_total").absolute(quota.fail_open);
    counter!("bulkhead_quota_settle_failures_total").absolute(quota.settle_failures);
    let ledger = state.ledger.metrics();
    gauge!("bulkhead_ledger_buffered").set(ledger.buffered() as f64);
    gauge!("bulkhead_ledger_in_spill").set(ledger.in_spill as f64);
    gauge!("bulkhead_ledger_lag_seconds").set(ledger.lag.map_or(0.0, |l| l.as_secs_f64()));
    gauge!("bulkhead_ledger_store_up").set(if ledger.store_up { 1.0 } else { 0.0 });
    counter!("bulkhead_ledger_written_total").absolute(ledger.written);
    counter!("bulkhead_ledger_spilled_total").absolute(ledger.spilled);
    counter!("bulkhead_ledger_write_errors_total").absolute(ledger.write_errors);
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
