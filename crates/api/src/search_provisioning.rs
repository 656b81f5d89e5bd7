//! What a tenant's search placement needs on its service, created and removed by the admin
//! API: onboarding and a change of placement PUT every template's index for the tenant (the
//! shared index with its partition field, the tenant's dedicated index, or the index on its
//! own service); offboarding deletes dedicated indexes and purges the tenant's documents from
//! shared ones before the tenant row goes.
//!
//! Provisioning is idempotent (PUT of the definition). The admin call makes a first attempt
//! synchronously; if that fails, a background task retries with backoff. The
//! state is kept in memory by the replica that ran it (`GET /admin/v1/tenants/{slug}` shows
//! it as `search_provisioning`); another replica, or a restart, shows `unknown`.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use search_router::client::ADMIN_API_VERSION;
use search_router::schema::physical_definition;
use search_router::{IndexKind, Target};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tenant_registry::model::SearchPlacement;
use tenant_registry::{Snapshot, TenantEntry};
use uuid::Uuid;

use crate::search::search_target;
use crate::state::AppState;

/// Tries of the background loop (after the one in the admin call).
const BACKGROUND_TRIES: u32 = 8;
/// Most purge rounds (of up to 1000 documents each) in one offboarding.
const MAX_PURGE_ROUNDS: usize = 10_000;

/// A tenant's search provisioning, as admins see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Provisioning {
    /// `ready`, `pending` (retrying in the background), `failed` (retries exhausted), `none`
    /// (no search placement).
    pub state: &'static str,
    /// Physical indexes in place, `service/index`.
    pub indexes: Vec<String>,
    pub error: Option<String>,
    pub attempts: u32,
    pub updated_at: DateTime<Utc>,
}

/// The provisioning state of each tenant this replica provisioned.
#[derive(Debug, Default)]
pub struct Book(RwLock<HashMap<Uuid, Provisioning>>);

impl Book {
    pub fn get(&self, tenant: Uuid) -> Option<Provisioning> {
        self.0.read().get(&tenant).cloned()
    }

    fn set(&self, tenant: Uuid, state: Provisioning) {
        self.0.write().insert(tenant, state);
    }

    fn remove(&self, tenant: Uuid) {
        self.0.write().remove(&tenant);
    }
}

/// `tenant` (an admin view) with its `search_provisioning`.
pub fn with_status(state: &AppState, tenant: &impl Serialize, id: Uuid) -> Value {
    let mut value = serde_json::to_value(tenant).unwrap_or(Value::Null);
    let status = match state.provisioning.get(id) {
        Some(p) => serde_json::to_value(p).unwrap_or(Value::Null),
        None => json!({"state": "unknown", "indexes": [], "error": null}),
    };
    if let Some(obj) = value.as_object_mut() {
        obj.insert("search_provisioning".into(), status);
    }
    value
}

/// A template's target for a tenant, and the definition to PUT there.
type Placed = (Target, Map<String, Value>);

/// The targets of every template for `tenant`, or why one cannot be placed.
fn targets(tenant: &TenantEntry, snapshot: &Snapshot) -> Result<Vec<Placed>, String> {
    let shared = matches!(
        tenant.tenant.search,
        Some(SearchPlacement::SharedIndex { .. })
    );
    snapshot
        .catalog
        .templates
        .iter()
        .map(|(name, template)| {
            let target = search_target(tenant, snapshot, name.as_str()).ok_or_else(|| {
                format!("template '{name}' cannot be placed (no key field, no service credential, or a name too long for the placement)")
            })?;
            let def = physical_definition(&template.definition, &target.index, shared);
            Ok((target, def))
        })
        .collect()
}

/// One provisioning pass: PUT every index the placement needs.
async fn provision_once(state: &AppState, tenant_id: Uuid) -> Result<Vec<String>, String> {
    let snapshot = state.registry.snapshot();
    let Some(tenant) = snapshot.tenant(tenant_id) else {
        return Err("the tenant is not in the registry".into());
    };
    let Some(placement) = &tenant.tenant.search else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    for (target, def) in targets(tenant, &snapshot)? {
        let answer = state
            .search
            .call(
                &target.upstream,
                Method::PUT,
                &format!("/indexes('{}')", target.index),
                &format!("api-version={ADMIN_API_VERSION}"),
                Some(&def),
            )
            .await
            .map_err(|e| format!("index '{}': {e}", target.index))?;
        if !answer.status.is_success() {
            let detail: String = String::from_utf8_lossy(&answer.body)
                .chars()
                .take(300)
                .collect();
            return Err(format!(
                "index '{}': the service answered {}: {detail}",
                target.index, answer.status
            ));
        }
        done.push(format!("{}/{}", placement.service(), target.index));
    }
    Ok(done)
}

fn record(
    state: &AppState,
    tenant: Uuid,
    result: &Result<Vec<String>, String>,
    attempts: u32,
    last: bool,
) {
    let p = match result {
        Ok(indexes) => Provisioning {
            state: "ready",
            indexes: indexes.clone(),
            error: None,
            attempts,
            updated_at: Utc::now(),
        },
        Err(error) => Provisioning {
            state: if last { "failed" } else { "pending" },
            indexes: Vec::new(),
            error: Some(error.clone()),
            attempts,
            updated_at: Utc::now(),
        },
    };
    state.provisioning.set(tenant, p);
}

/// Provisions `tenant`'s search placement: one try now (the admin call waits for it), then
/// on failure a background retry loop with exponential backoff (2 s to 64 s, 8 tries). A tenant without a search placement is
/// marked `none`.
pub async fn provision(state: &AppState, tenant: Uuid) {
    let has_search = state
        .registry
        .snapshot()
        .tenant(tenant)
        .is_some_and(|t| t.tenant.search.is_some());
    if !has_search {
        state.provisioning.set(
            tenant,
            Provisioning {
                state: "none",
                indexes: Vec::new(),
                error: None,
                attempts: 0,
                updated_at: Utc::now(),
            },
        );
        return;
    }
    let result = provision_once(state, tenant).await;
    record(state, tenant, &result, 1, false);
    match &result {
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(%tenant, %error, "search provisioning failed; retrying in the background")
        }
    }
    let state = state.clone();
    tokio::spawn(async move {
        for attempt in 1..=BACKGROUND_TRIES {
            tokio::time::sleep(Duration::from_secs(1 << attempt.min(6))).await;
            if state.registry.snapshot().tenant(tenant).is_none() {
                state.provisioning.remove(tenant);
                return;
            }
            let result = provision_once(&state, tenant).await;
            record(
                &state,
                tenant,
                &result,
                1 + attempt,
                attempt == BACKGROUND_TRIES,
            );
            if result.is_ok() {
                return;
            }
        }
    });
}

/// Removes a tenant's search data from the service of its placement, whichever placement
/// put it there (so a change between `shared_index` and `dedicated_index` on one service
/// leaves nothing behind): on a shared service, the tenant's dedicated index of each template
/// is deleted and its documents are purged from the shared index of each template (rounds of
/// search by partition, then delete by key); on its own service, the template indexes are
/// deleted. Absent indexes are skipped. Data left on a service of an earlier placement is not
/// found (placement history is not kept).
pub async fn purge(state: &AppState, tenant_id: Uuid) -> Result<(), String> {
    let snapshot = state.registry.snapshot();
    let Some(tenant) = snapshot.tenant(tenant_id) else {
        return Ok(());
    };
    for target in every_place(tenant, &snapshot) {
        match &target.boundary {
            None => {
                let answer = state
                    .search
                    .call(
                        &target.upstream,
                        Method::DELETE,
                        &format!("/indexes('{}')", target.index),
                        &format!("api-version={ADMIN_API_VERSION}"),
                        None,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if !answer.status.is_success() && answer.status != StatusCode::NOT_FOUND {
                    return Err(format!(
                        "deleting index '{}': {}",
                        target.index, answer.status
                    ));
                }
            }
            Some(boundary) => purge_shared(state, &target, boundary).await?,
        }
    }
    state.provisioning.remove(tenant_id);
    Ok(())
}

/// Every index that may hold the tenant's documents, whatever its placement was.
fn every_place(tenant: &TenantEntry, snapshot: &Snapshot) -> Vec<Target> {
    let t = &tenant.tenant;
    let mut places = Vec::new();
    let Some(placement) = &t.search else {
        return places;
    };
    let current = snapshot
        .catalog
        .services
        .iter()
        .filter(|(name, _)| *name == placement.service());
    for (service_name, service) in current {
        let Some(credential) = snapshot.service_credential(service_name) else {
            continue;
        };
        let upstream = search_router::Upstream {
            endpoint: service.view.endpoint.to_string(),
            credential: credential.clone(),
        };
        let kinds: &[IndexKind] = match &service.view.owner_tenant {
            None => &[IndexKind::Shared, IndexKind::Dedicated(t.id)],
            Some(owner) if owner == &t.slug => &[IndexKind::OwnService],
            Some(_) => &[],
        };
        for (name, template) in &snapshot.catalog.templates {
            let Some(key_field) = search_router::key_field(&template.definition) else {
                continue;
            };
            for kind in kinds {
                let Ok(index) = search_router::physical_index(*kind, name.as_str()) else {
                    continue;
                };
                let boundary = match kind {
                    IndexKind::Shared => match search_router::Boundary::new(t.id, &key_field) {
                        Ok(b) => Some(b),
                        Err(_) => continue,
                    },
                    _ => None,
                };
                places.push(Target {
                    upstream: upstream.clone(),
                    logical: name.to_string(),
                    index,
                    key_field: key_field.clone(),
                    boundary,
                });
            }
        }
    }
    places
}

async fn purge_shared(
    state: &AppState,
    target: &Target,
    boundary: &search_router::Boundary,
) -> Result<(), String> {
    let path = |op: &str| format!("/indexes('{}')/docs/{op}", target.index);
    let query = format!("api-version={ADMIN_API_VERSION}");
    for _ in 0..MAX_PURGE_ROUNDS {
        let mut search = search_router::rewrite::count_request(boundary);
        search.insert("top".into(), json!(1000));
        search.insert("select".into(), json!(target.key_field));
        let answer = state
            .search
            .call(
                &target.upstream,
                Method::POST,
                &path("search.post.search"),
                &query,
                Some(&search),
            )
            .await
            .map_err(|e| e.to_string())?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let found = answer
            .json()
            .filter(|_| answer.status.is_success())
            .ok_or_else(|| format!("searching index '{}': {}", target.index, answer.status))?;
        let keys: Vec<Value> = found
            .get("value")
            .and_then(Value::as_array)
            .map(|docs| {
                docs.iter()
                    .filter_map(|d| d.get(&target.key_field).and_then(Value::as_str))
                    .filter(|k| boundary.unwrap_key(k).is_some())
                    .map(|k| {
                        let mut action = Map::new();
                        action.insert("@search.action".into(), json!("delete"));
                        action.insert(target.key_field.clone(), json!(k));
                        Value::Object(action)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = Map::new();
        batch.insert("value".into(), Value::Array(keys));
        let answer = state
            .search
            .call(
                &target.upstream,
                Method::POST,
                &path("search.index"),
                &query,
                Some(&batch),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !answer.status.is_success() {
            return Err(format!(
                "purging index '{}': {}",
                target.index, answer.status
            ));
        }
    }
    Err(format!("purging index '{}': too many rounds", target.index))
}

/// Provisions every tenant that has a search placement (a new template needs its index for
/// each of them). Runs in the background: a failure is in each tenant's state.
pub fn provision_all(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut after: Option<String> = None;
        loop {
            let page = match state.registry.tenants(after.as_deref(), Some(100)).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "cannot list tenants to provision a new template");
                    return;
                }
            };
            for tenant in page.data.iter().filter(|t| t.search.is_some()) {
                provision(&state, tenant.id).await;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return,
            }
        }
    });
}
