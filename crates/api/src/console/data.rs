//! What each page shows, gathered from the in-memory registry view, the ledger, the router's
//! health book and the limiter; [`super::pages`] renders it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Deserialize;
use tenant_registry::model::{Tenant, TenantStatus};
use usage_ledger::{MinuteTotal, TenantTotal};
use uuid::Uuid;

use super::pages::{self, Nav};
use super::Session;
use crate::state::AppState;

/// Rows per page of the tenants list.
pub const PAGE_SIZE: usize = 50;
/// How long the overview's fleet-wide figures are reused (they scan the ledger).
const OVERVIEW_TTL: Duration = Duration::from_secs(10);
/// The overview's traffic window (its events are counted from the `finished_at` index).
pub const RECENT_MINUTES: i64 = 15;
/// The longest the overview waits for each of its ledger queries.
const OVERVIEW_PATIENCE: Duration = Duration::from_secs(3);

pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

#[derive(Debug, Default, Deserialize)]
pub struct TenantQuery {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub placement: String,
    #[serde(default)]
    pub page: Option<usize>,
}

/// One row of the tenants list.
pub struct TenantRow {
    pub tenant: Tenant,
    pub month: Option<TenantTotal>,
}

pub struct TenantsView {
    pub query: TenantQuery,
    pub rows: Vec<TenantRow>,
    pub matched: usize,
    pub page: usize,
    pub pages: usize,
    /// The ledger did not answer: usage columns are blank.
    pub usage_unavailable: bool,
    pub services: Vec<String>,
}

pub fn openai_isolation(t: &Tenant) -> &'static str {
    t.openai.as_ref().map_or("none", |p| p.isolation())
}

pub fn search_isolation(t: &Tenant) -> &'static str {
    t.search.as_ref().map_or("none", |p| p.isolation())
}

/// Whether `t` matches the query: search in slug and display name (case-insensitive), status,
/// and placement (`openai:<isolation>` or `search:<isolation>`).
fn matches(t: &Tenant, q: &TenantQuery, needle: &str) -> bool {
    if !needle.is_empty()
        && !t.slug.as_str().contains(needle)
        && !t.display_name.to_lowercase().contains(needle)
    {
        return false;
    }
    if !q.status.is_empty() && t.status.as_str() != q.status {
        return false;
    }
    match q.placement.split_once(':') {
        Some(("openai", iso)) => openai_isolation(t) == iso,
        Some(("search", iso)) => search_isolation(t) == iso,
        _ => true,
    }
}

pub async fn tenants(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<TenantQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    // A malformed query is an empty one: the list, unfiltered.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let needle = query.q.trim().to_lowercase();
    let view = state.registry.snapshot();
    let mut found: Vec<&Tenant> = view
        .tenants()
        .map(|e| &e.tenant)
        .filter(|t| matches(t, &query, &needle))
        .collect();
    let matched = found.len();
    let pages = matched.div_ceil(PAGE_SIZE).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    // Only the page is sorted in full; the rest is partitioned around it.
    let start = (page - 1) * PAGE_SIZE;
    let end = (start + PAGE_SIZE).min(matched);
    if start < matched {
        let by_slug = |a: &&Tenant, b: &&Tenant| a.slug.as_str().cmp(b.slug.as_str());
        if start > 0 {
            found.select_nth_unstable_by(start, by_slug);
        }
        let rest = &mut found[start..];
        if end - start < rest.len() {
            rest.select_nth_unstable_by(end - start, by_slug);
        }
        found[start..end].sort_unstable_by(by_slug);
    }
    let shown: Vec<Tenant> = found
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|t| (*t).clone())
        .collect();
    let ids: Vec<Uuid> = shown.iter().map(|t| t.id).collect();
    let now = Utc::now();
    let totals = if ids.is_empty() {
        Ok(Vec::new())
    } else {
        state
            .ledger
            .store()
            .tenant_totals(&ids, month_start(now), now, 0)
            .await
    };
    let usage_unavailable = totals.is_err();
    let totals = totals.unwrap_or_default();
    let rows = shown
        .into_iter()
        .map(|tenant| TenantRow {
            month: totals.iter().find(|t| t.tenant_id == tenant.id).copied(),
            tenant,
        })
        .collect();
    let services = state
        .registry
        .services()
        .await
        .map(|list| list.iter().map(|s| s.name.as_str().to_owned()).collect())
        .unwrap_or_default();
    let view = TenantsView {
        query,
        rows,
        matched,
        page,
        pages,
        usage_unavailable,
        services,
    };
    pages::page(&session, "Tenants", Nav::Tenants, pages::tenants(&view)).into_response()
}

pub async fn tenant(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(slug): Path<String>,
) -> Response {
    let view = state.registry.snapshot();
    let Some(entry) = view.tenant_by_slug(&slug) else {
        return (
            StatusCode::NOT_FOUND,
            pages::page(&session, "Not found", Nav::Tenants, pages::not_found()),
        )
            .into_response();
    };
    let tenant = entry.tenant.clone();
    let keys = state.registry.keys(&slug).await.ok();
    let title = format!("Tenant {}", tenant.slug.as_str());
    pages::page(
        &session,
        &title,
        Nav::Tenants,
        pages::tenant(&tenant, keys.as_deref()),
    )
    .into_response()
}

/// The chargeback CSV, exactly as `GET /admin/v1/tenants/{slug}/usage` with
/// `Accept: text/csv` gives it (a download link cannot set the header).
pub async fn usage_csv(
    state: State<AppState>,
    slug: Path<String>,
    query: Result<Query<crate::usage::UsageQuery>, axum::extract::rejection::QueryRejection>,
    mut headers: HeaderMap,
) -> Response {
    headers.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
    match crate::usage::admin_usage(state, slug, query, headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// A member of an upstream pool or a tenant's deployments, as the router sees it.
pub struct MemberView {
    pub key: String,
    pub region: String,
    pub data_zone: String,
    pub owner: String,
    pub model: String,
    pub deployment_type: &'static str,
    pub breaker: &'static str,
    pub cooldown: Option<Duration>,
    pub remaining_tokens: Option<u64>,
    pub recent: Option<(u64, u64)>,
}

/// A resource or search service.
pub struct UpstreamRow {
    pub name: String,
    pub region: String,
    pub data_zone: String,
    pub auth: String,
    pub owner: String,
}

impl UpstreamRow {
    /// A resource's or a service's row (they share these fields, as different types).
    fn new(
        name: &impl AsRef<str>,
        region: &impl AsRef<str>,
        data_zone: &Option<impl AsRef<str>>,
        auth: &Option<tenant_registry::model::AuthView>,
        owner: &Option<impl AsRef<str>>,
    ) -> Self {
        Self {
            name: name.as_ref().to_owned(),
            region: region.as_ref().to_owned(),
            data_zone: data_zone
                .as_ref()
                .map_or("-".to_owned(), |z| z.as_ref().to_owned()),
            auth: auth.as_ref().map_or("-", |a| a.kind).to_owned(),
            owner: owner
                .as_ref()
                .map_or("shared".to_owned(), |o| o.as_ref().to_owned()),
        }
    }
}

pub struct UpstreamsView {
    pub resources: Vec<UpstreamRow>,
    pub members: Vec<MemberView>,
    pub pools: Vec<(String, Vec<String>)>,
    pub services: Vec<UpstreamRow>,
}

pub async fn upstreams(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let registry = &state.registry;
    let (resources, deployments, pools, services) = match (
        registry.resources().await,
        registry.deployments().await,
        registry.pools().await,
        registry.services().await,
    ) {
        (Ok(r), Ok(d), Ok(p), Ok(s)) => (r, d, p, s),
        _ => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                pages::page(&session, "Upstreams", Nav::Upstreams, pages::unavailable()),
            )
                .into_response()
        }
    };
    let owner = |o: Option<&str>| o.unwrap_or("shared").to_owned();
    let zone = |z: Option<&str>| z.unwrap_or("-").to_owned();
    let health = state.openai.health();
    let now = Instant::now();
    let members = deployments
        .iter()
        .map(|d| {
            let key = format!("{}/{}", d.resource.as_str(), d.name.as_str());
            let resource = resources.iter().find(|r| r.name == d.resource);
            let (breaker, cooldown, remaining_tokens) = health.describe(&key, now);
            MemberView {
                recent: health.recent(&key, now),
                region: resource.map_or("-".to_owned(), |r| r.region.as_str().to_owned()),
                data_zone: zone(resource.and_then(|r| r.data_zone.as_ref().map(|z| z.as_str()))),
                owner: owner(
                    d.owner_tenant
                        .as_ref()
                        .or_else(|| resource.and_then(|r| r.owner_tenant.as_ref()))
                        .map(|s| s.as_str()),
                ),
                model: match &d.model_version {
                    Some(v) => format!("{} {v}", d.model),
                    None => d.model.clone(),
                },
                deployment_type: d.deployment_type.as_str(),
                key,
                breaker,
                cooldown,
                remaining_tokens,
            }
        })
        .collect();
    let view = UpstreamsView {
        resources: resources
            .iter()
            .map(|r| UpstreamRow::new(&r.name, &r.region, &r.data_zone, &r.auth, &r.owner_tenant))
            .collect(),
        members,
        pools: pools
            .iter()
            .map(|p| {
                (
                    p.alias.as_str().to_owned(),
                    p.members
                        .iter()
                        .map(|m| {
                            format!(
                                "{} (priority {}, weight {})",
                                m.deployment, m.priority, m.weight
                            )
                        })
                        .collect(),
                )
            })
            .collect(),
        services: services
            .iter()
            .map(|s| UpstreamRow::new(&s.name, &s.region, &s.data_zone, &s.auth, &s.owner_tenant))
            .collect(),
    };
    pages::page(
        &session,
        "Upstreams",
        Nav::Upstreams,
        pages::upstreams(&view),
    )
    .into_response()
}

/// The fleet-wide figures of the overview, shared by requests for [`OVERVIEW_TTL`].
#[derive(Clone, Default)]
pub struct Fleet {
    pub minutes: Vec<MinuteTotal>,
    /// Each top tenant's slug (`None`: offboarded since) and totals.
    pub top: Vec<(Option<String>, TenantTotal)>,
    pub unavailable: bool,
}

/// `work`'s rows, or `Err` when it failed or took longer than [`OVERVIEW_PATIENCE`].
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<Vec<T>, usage_ledger::LedgerError>>,
) -> Result<Vec<T>, ()> {
    match tokio::time::timeout(OVERVIEW_PATIENCE, work).await {
        Ok(Ok(rows)) => Ok(rows),
        _ => Err(()),
    }
}

/// The last [`Fleet`] of this gateway and when it was read. One request refreshes it while
/// the others wait for its answer, so the ledger sees at most one overview query at a time
/// per replica.
#[derive(Default)]
pub struct FleetCache(pub(super) tokio::sync::Mutex<Option<(Instant, Arc<Fleet>)>>);

async fn fleet(state: &AppState) -> Arc<Fleet> {
    let mut cached = state.console.fleet.0.lock().await;
    if let Some((at, fleet)) = cached.as_ref() {
        if at.elapsed() < OVERVIEW_TTL {
            return Arc::clone(fleet);
        }
    }
    let now = Utc::now();
    let store = state.ledger.store();
    let minutes =
        bounded(store.recent_minutes(now - chrono::Duration::minutes(RECENT_MINUTES))).await;
    let top = bounded(store.tenant_totals(&[], month_start(now), now, 10)).await;
    let view = state.registry.snapshot();
    let fleet = Arc::new(Fleet {
        unavailable: minutes.is_err() || top.is_err(),
        minutes: minutes.unwrap_or_default(),
        top: top
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let slug = view
                    .tenant(t.tenant_id)
                    .map(|e| e.tenant.slug.as_str().to_owned());
                (slug, t)
            })
            .collect(),
    });
    *cached = Some((Instant::now(), Arc::clone(&fleet)));
    fleet
}

pub struct OverviewView {
    pub fleet: Arc<Fleet>,
    pub tenants: usize,
    pub active: usize,
    pub keys: usize,
    pub quota: quota::MetricsSnapshot,
    pub ledger: usage_ledger::LedgerMetrics,
    pub store_ok: bool,
    pub store: &'static str,
    pub draining: bool,
}

pub async fn overview(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let fleet = fleet(&state).await;
    let view = state.registry.snapshot();
    let store_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.registry.ready()).await,
        Ok(Ok(()))
    );
    let overview = OverviewView {
        fleet,
        tenants: view.tenant_count(),
        active: view
            .tenants()
            .filter(|t| t.tenant.status == TenantStatus::Active)
            .count(),
        keys: view.key_count(),
        quota: state.quota.metrics(),
        ledger: state.ledger.metrics(),
        store_ok,
        store: state.registry.backend(),
        draining: state.lifecycle.draining(),
    };
    pages::page(
        &session,
        "Overview",
        Nav::Overview,
        pages::overview(&overview),
    )
    .into_response()
}
