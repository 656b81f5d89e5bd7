//! Prometheus metrics at `GET /metrics` (admin token required: tenant names are labels).
//!
//! Recorded as calls finish:
//! - `bulkhead_requests_total` and `bulkhead_request_duration_seconds` by `route` (the
//!   operation), `alias` (model alias or logical index), `member` (`resource/deployment`, or
//!   `none` when no upstream answered) and `status`;
//! - `bulkhead_tokens_total` by `tenant` (dropped with `BULKHEAD_METRICS_TENANT_LABELS=false`
//!   for very large fleets), `model` and `type` (`prompt`, `completion`, `cached`);
//! - `bulkhead_cost_nanos_total` by `tenant` (same switch) and `model`: the calls' cost in
//!   nano-units of the price table's currency (the ledger holds the exact cost);
//! - `bulkhead_unpriced_calls_total` by `tenant` (same switch) and `model`: calls that consumed tokens but matched no
//!   price (their cost is unknown: add a price).
//!
//! Read at scrape time from the components that own them:
//! - `bulkhead_member_breaker_state` (0 closed, 1 half-open, 2 open) and
//!   `bulkhead_member_cooldown_seconds` per member;
//! - `bulkhead_quota_*`: admissions, refusals by reason, Redis errors, fail-open decisions, leases
//!   (admissions decided from a slice, grants, recalls, slices given back or lost);
//! - `bulkhead_ledger_*`: buffered records, lag, written, spilled, write errors, store up;
//! - `bulkhead_connections_open`, `bulkhead_connections_refused_total` (at the connection
//!   cap), `bulkhead_connections_timed_out_total` (header, idle or write timeouts);
//! - `bulkhead_cache_*`: the response cache's hits (by `layer`: `local` memory or `redis`),
//!   misses, bypasses (requests that did not read it: `no-cache`, `no-store`, `skip`),
//!   stores, answers too large to store, evictions (by `layer`), Redis errors and calls
//!   skipped while Redis is down, and the bytes held in memory (no tenant label: a hit is
//!   also in `bulkhead_requests_total` with `member="cache"`, and in the tenant's usage);
//! - `bulkhead_token_counts_offloaded_total` (counts run on the blocking pool) and
//!   `bulkhead_token_counts_busy_total` (refused for want of a counting thread);
//! - `bulkhead_registry_changes_applied_total` (change-log rows applied to the in-memory
//!   view), `bulkhead_registry_full_reloads_total` (times everything was read),
//!   `bulkhead_registry_change_mark` (the last change included), `bulkhead_registry_tenants`
//!   and `bulkhead_registry_keys`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;

use crate::state::AppState;

/// The `member` label of calls answered from the response cache (no deployment answered).
pub const CACHE_MEMBER: &str = "cache";

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

/// Registered series, by the hash of their labels, so that a call after the first records
/// into its handles directly: looking a series up in the recorder (owned label strings,
/// hashing, a sharded map) cost more than recording into it. Entries keep their labels and
/// are checked on every hit; a label set that collides with another, or one beyond
/// [`MAX_CACHED`], is looked up in the recorder every time as before.
struct SeriesCache<L, H> {
    entries: RwLock<HashMap<u64, (L, H)>>,
}

/// Series kept per cache: enough for every alias x member x status (calls) and tenant x model
/// (tokens) of a large fleet; beyond it, series are still recorded, only slower.
const MAX_CACHED: usize = 100_000;

impl<L, H: Clone> SeriesCache<L, H> {
    fn new() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, hash: u64, labels: &impl Fn(&L) -> bool) -> Option<H> {
        let entries = self.entries.read();
        let (kept, handles) = entries.get(&hash)?;
        labels(kept).then(|| handles.clone())
    }

    fn keep(&self, hash: u64, labels: L, handles: H) {
        let mut entries = self.entries.write();
        if entries.len() < MAX_CACHED {
            entries.entry(hash).or_insert((labels, handles));
        }
    }
}

fn hash_of(parts: impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

type CallLabels = (&'static str, Box<str>, Box<str>, u16);
static CALLS: LazyLock<SeriesCache<CallLabels, (Counter, Histogram)>> =
    LazyLock::new(SeriesCache::new);

type TokenLabels = (Option<Box<str>>, Box<str>);
static TOKENS: LazyLock<SeriesCache<TokenLabels, [Counter; 5]>> = LazyLock::new(SeriesCache::new);

/// One finished call.
pub fn call(route: &'static str, alias: &str, member: Option<&str>, status: u16, seconds: f64) {
    let member = member.unwrap_or("none");
    let hash = hash_of((route, alias, member, status));
    let same = |l: &CallLabels| l.0 == route && &*l.1 == alias && &*l.2 == member && l.3 == status;
    let (requests, duration) = match CALLS.get(hash, &same) {
        Some(handles) => handles,
        None => {
            let labels = [
                ("route", route.to_owned()),
                ("alias", alias.to_owned()),
                ("member", member.to_owned()),
                ("status", status.to_string()),
            ];
            let handles = (
                counter!("bulkhead_requests_total", &labels),
                histogram!("bulkhead_request_duration_seconds", &labels),
            );
            CALLS.keep(
                hash,
                (route, alias.into(), member.into(), status),
                handles.clone(),
            );
            handles
        }
    };
    requests.increment(1);
    duration.record(seconds);
}

/// Tokens one call consumed and what they cost; `tenant` is `None` when tenant labels are off.
pub fn tokens(
    tenant: Option<&str>,
    model: &str,
    prompt: u64,
    completion: u64,
    cached: u64,
    priced: crate::cost::Priced,
) {
    let (nanos, unpriced) = match priced {
        crate::cost::Priced::Cost(cost) => (u64::try_from(cost.0 / 1_000).unwrap_or(u64::MAX), 0),
        crate::cost::Priced::Unpriced => (0, 1),
    };
    if prompt == 0 && completion == 0 && cached == 0 && nanos == 0 && unpriced == 0 {
        return;
    }
    let hash = hash_of((tenant, model));
    let same = |l: &TokenLabels| l.0.as_deref() == tenant && &*l.1 == model;
    let counters = match TOKENS.get(hash, &same) {
        Some(counters) => counters,
        None => {
            let tokens = ["prompt", "completion", "cached"].map(|kind| match tenant {
                Some(tenant) => counter!("bulkhead_tokens_total",
                    "tenant" => tenant.to_owned(), "model" => model.to_owned(), "type" => kind),
                None => {
                    counter!("bulkhead_tokens_total", "model" => model.to_owned(), "type" => kind)
                }
            });
            let [prompt, completion, cached] = tokens;
            let [cost, unpriced] = ["bulkhead_cost_nanos_total", "bulkhead_unpriced_calls_total"]
                .map(|name| match tenant {
                    Some(tenant) => counter!(name,
                            "tenant" => tenant.to_owned(), "model" => model.to_owned()),
                    None => counter!(name, "model" => model.to_owned()),
                });
            let counters = [prompt, completion, cached, cost, unpriced];
            TOKENS.keep(
                hash,
                (tenant.map(Into::into), model.into()),
                counters.clone(),
            );
            counters
        }
    };
    for (counter, n) in counters
        .iter()
        .zip([prompt, completion, cached, nanos, unpriced])
    {
        if n > 0 {
            counter.increment(n);
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
    let view = state.registry.view_counters();
    counter!("bulkhead_registry_changes_applied_total").absolute(view.changes_applied);
    counter!("bulkhead_registry_full_reloads_total").absolute(view.full_reloads);
    gauge!("bulkhead_registry_change_mark").set(view.mark as f64);
    let snapshot = state.registry.snapshot();
    gauge!("bulkhead_registry_tenants").set(snapshot.tenant_count() as f64);
    gauge!("bulkhead_registry_keys").set(snapshot.key_count() as f64);
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
    counter!("bulkhead_quota_lease_admissions_total").absolute(quota.lease_local);
    counter!("bulkhead_quota_lease_grants_total").absolute(quota.lease_grants);
    counter!("bulkhead_quota_lease_top_ups_total").absolute(quota.lease_top_ups);
    counter!("bulkhead_quota_lease_recalls_total").absolute(quota.lease_recalls);
    counter!("bulkhead_quota_lease_given_back_total").absolute(quota.lease_given_back);
    counter!("bulkhead_quota_lease_lost_total").absolute(quota.lease_lost);
    let ledger = state.ledger.metrics();
    gauge!("bulkhead_ledger_buffered").set(ledger.buffered() as f64);
    gauge!("bulkhead_ledger_in_spill").set(ledger.in_spill as f64);
    gauge!("bulkhead_ledger_lag_seconds").set(ledger.lag.map_or(0.0, |l| l.as_secs_f64()));
    gauge!("bulkhead_ledger_store_up").set(if ledger.store_up { 1.0 } else { 0.0 });
    counter!("bulkhead_ledger_written_total").absolute(ledger.written);
    counter!("bulkhead_ledger_spilled_total").absolute(ledger.spilled);
    counter!("bulkhead_ledger_write_errors_total").absolute(ledger.write_errors);
    let (open, refused, timed_out) = state.lifecycle.connections();
    gauge!("bulkhead_connections_open").set(open as f64);
    counter!("bulkhead_connections_refused_total").absolute(refused);
    counter!("bulkhead_connections_timed_out_total").absolute(timed_out);
    let cache = state.cache.metrics();
    for (layer, n) in [("local", cache.hits_local), ("redis", cache.hits_redis)] {
        counter!("bulkhead_cache_hits_total", "layer" => layer).absolute(n);
    }
    counter!("bulkhead_cache_misses_total").absolute(cache.misses);
    counter!("bulkhead_cache_bypasses_total").absolute(cache.bypasses);
    counter!("bulkhead_cache_stores_total").absolute(cache.stores);
    counter!("bulkhead_cache_too_large_total").absolute(cache.too_large);
    for (layer, n) in [
        ("local", cache.evictions_local),
        ("redis", cache.evictions_redis),
    ] {
        counter!("bulkhead_cache_evictions_total", "layer" => layer).absolute(n);
    }
    counter!("bulkhead_cache_redis_errors_total").absolute(cache.redis_errors);
    counter!("bulkhead_cache_redis_skipped_total").absolute(cache.redis_skipped);
    gauge!("bulkhead_cache_local_bytes").set(cache.local_bytes as f64);
    let (offloaded, busy) = state.counting.totals();
    counter!("bulkhead_token_counts_offloaded_total").absolute(offloaded);
    counter!("bulkhead_token_counts_busy_total").absolute(busy);
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn cached_series_keep_counting_and_other_labels_get_their_own() {
        let handle = install().expect("a recorder");
        call("chat/completions", "cache-a", Some("r/d"), 200, 0.01);
        call("chat/completions", "cache-a", Some("r/d"), 200, 0.02);
        call("chat/completions", "cache-a", Some("r/d"), 429, 0.02);
        call("embeddings", "cache-a", Some("r/d"), 200, 0.02);
        call("chat/completions", "cache-b", None, 200, 0.02);
        let priced = |pico| crate::cost::Priced::Cost(tenant_registry::prices::Cost(pico));
        tokens(Some("tenant-1"), "cache-model", 5, 7, 0, priced(3_000));
        tokens(Some("tenant-1"), "cache-model", 1, 1, 2, priced(2_999));
        tokens(
            Some("tenant-2"),
            "cache-model",
            3,
            0,
            0,
            crate::cost::Priced::Unpriced,
        );
        tokens(None, "cache-model", 4, 0, 0, priced(0));
        let text = handle.render();
        let requests = |route: &str, alias: &str, member: &str, status: u16| {
            value(
                &text,
                &format!(
                    r#"bulkhead_requests_total{{route="{route}",alias="{alias}",member="{member}",status="{status}"}}"#
                ),
            )
        };
        assert_eq!(
            requests("chat/completions", "cache-a", "r/d", 200),
            Some(2.0)
        );
        assert_eq!(
            requests("chat/completions", "cache-a", "r/d", 429),
            Some(1.0)
        );
        assert_eq!(requests("embeddings", "cache-a", "r/d", 200), Some(1.0));
        assert_eq!(
            requests("chat/completions", "cache-b", "none", 200),
            Some(1.0)
        );
        let tokens = |tenant: Option<&str>, kind: &str| {
            let tenant = tenant.map_or(String::new(), |t| format!(r#"tenant="{t}","#));
            value(
                &text,
                &format!(r#"bulkhead_tokens_total{{{tenant}model="cache-model",type="{kind}"}}"#),
            )
        };
        assert_eq!(tokens(Some("tenant-1"), "prompt"), Some(6.0));
        assert_eq!(tokens(Some("tenant-1"), "completion"), Some(8.0));
        assert_eq!(tokens(Some("tenant-1"), "cached"), Some(2.0));
        assert_eq!(tokens(Some("tenant-2"), "prompt"), Some(3.0));
        assert_eq!(tokens(None, "prompt"), Some(4.0));
        // Nano-units, each call's cost rounded down (3000 + 2999 pico = 3 + 2 nano).
        let series = |name: &str, tenant: &str| {
            value(
                &text,
                &format!(r#"{name}{{tenant="{tenant}",model="cache-model"}}"#),
            )
        };
        assert_eq!(series("bulkhead_cost_nanos_total", "tenant-1"), Some(5.0));
        assert_eq!(
            series("bulkhead_unpriced_calls_total", "tenant-2"),
            Some(1.0)
        );
        assert_eq!(
            series("bulkhead_unpriced_calls_total", "tenant-1"),
            Some(0.0)
        );
    }
}
