//! Long-running operations on the admin API, in Azure's convention: a request that starts one
//! answers `202 Accepted` with `Operation-Location: /admin/v1/operations/{id}` and
//! `Retry-After`; `GET` on it gives its status (`notStarted`, `running`, `succeeded`,
//! `failed`, `canceled`), kind, tenant, phase, progress and timestamps;
//! `POST /admin/v1/operations/{id}:cancel` asks it to stop. Every replica reads the same
//! operations from the store, before and after a restart.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use operations::{Kind, NewOperation, Operation, Status, StoreError, Whose};
use serde::Deserialize;
use serde_json::{json, Value};
use tenant_registry::model::{SearchPlacement, Tenant};
use tenant_registry::Snapshot;
use uuid::Uuid;

use crate::error::AdminError;
use crate::jobs::{placed_templates, MoveSpec};
use crate::state::AppState;

type Result<T> = std::result::Result<T, AdminError>;

/// How often a client should poll an operation.
const RETRY_AFTER_SECONDS: &str = "1";

/// An operation as admins see it.
pub fn view(operation: &Operation) -> Value {
    json!({
        "id": operation.id,
        "kind": operation.kind.as_str(),
        "tenant": operation.tenant_slug,
        "status": operation.status.as_str(),
        "phase": operation.phase,
        "progress": operation.progress,
        "cancelRequested": operation.cancel_requested,
        "attempts": operation.attempts,
        // The replica running it (`{pid}-{id}`), while it runs.
        "runner": operation.lease_owner,
        "createdDateTime": operation.created_at,
        "lastActionDateTime": operation.updated_at,
        "finishedDateTime": operation.finished_at,
        "error": operation.error.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
    })
}

fn store_error(error: StoreError) -> AdminError {
    match error {
        StoreError::Busy(id) => AdminError::Conflict(format!(
            "the tenant already has an operation running: /admin/v1/operations/{id}"
        )),
        StoreError::Store(message) => {
            tracing::error!(%message, "operations store failed");
            AdminError::Unavailable("the operations store is unavailable".into())
        }
    }
}

/// Starts an operation for `tenant` and wakes this replica's runner.
pub async fn start(
    state: &AppState,
    tenant: &Tenant,
    kind: Kind,
    spec: Value,
    phase: &str,
) -> Result<Operation> {
    let new = NewOperation {
        id: Uuid::now_v7(),
        tenant_id: tenant.id,
        tenant_slug: tenant.slug.to_string(),
        kind,
        spec,
        phase: phase.to_owned(),
        created_at: Utc::now(),
    };
    state
        .operations
        .store
        .insert_operation(&new)
        .await
        .map_err(store_error)?;
    state.operations.runner.kick();
    state
        .operations
        .store
        .operation(new.id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AdminError::Unavailable("the operation could not be read back".into()))
}

/// `202 Accepted` with the operation's location and `body`.
pub fn accepted(operation: &Operation, body: Value) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/admin/v1/operations/{}", operation.id)) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("operation-location"), location);
    }
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    response
}

/// `tenant` as admins see it: with its operation in progress and the state of its search
/// indexes (from its operations, so every replica says the same).
pub async fn tenant_view(state: &AppState, tenant: &Tenant) -> Value {
    let mut value = serde_json::to_value(tenant).unwrap_or(Value::Null);
    let recent = state
        .operations
        .store
        .operations(Whose::Tenant(tenant.id), None, 10)
        .await
        .unwrap_or_default();
    let active = recent.iter().find(|o| o.status.is_active());
    let last_search = recent
        .iter()
        .find(|o| matches!(o.kind, Kind::Provision | Kind::SearchMove));
    let snapshot = state.registry.snapshot();
    let indexes: Vec<String> = tenant
        .search
        .as_ref()
        .and_then(|p| {
            placed_templates(&snapshot, tenant.id, p)
                .ok()
                .map(|placed| (p, placed))
        })
        .map(|(p, placed)| {
            placed
                .iter()
                .map(|(t, _)| format!("{}/{}", p.service(), t.index))
                .collect()
        })
        .unwrap_or_default();
    let provisioning = match (&tenant.search, last_search) {
        (None, _) => json!({"state": "none", "indexes": [], "error": null}),
        (Some(_), Some(op)) if op.status.is_active() && !switched(op) => {
            json!({"state": "pending", "indexes": indexes, "operation": op.id, "error": null})
        }
        (Some(_), Some(op)) if op.status == Status::Failed => json!({
            "state": "failed", "indexes": indexes, "operation": op.id,
            "error": op.error.as_ref().map(|e| e.message.clone()),
        }),
        (Some(_), last) => json!({
            "state": "ready", "indexes": indexes, "operation": last.map(|o| o.id), "error": null
        }),
    };
    if let Some(obj) = value.as_object_mut() {
        obj.insert("search_provisioning".into(), provisioning);
        obj.insert("operation".into(), active.map(view).unwrap_or(Value::Null));
    }
    value
}

/// Whether `op` is a move past its switch: the tenant is served from the target, and what is
/// left is removing the source after the grace period.
fn switched(op: &Operation) -> bool {
    op.kind == Kind::SearchMove
        && op
            .progress
            .get("switched_at")
            .is_some_and(|at| !at.is_null())
}

/// Why a search move cannot be done, before anything is changed: the target's service must
/// accept the tenant (ownership, data zone: the registry's rules), have room for its indexes,
/// and every template's documents must be readable back in full, in key order.
pub async fn check_move(state: &AppState, tenant: &Tenant, to: &SearchPlacement) -> Result<()> {
    state
        .registry
        .check_search_placement(tenant.slug.as_str(), to)
        .await?;
    let snapshot = state.registry.snapshot();
    check_capacity(&snapshot, tenant, to)?;
    for (name, template) in &snapshot.catalog.templates {
        let fields = template
            .definition
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for field in &fields {
            let field_name = field.get("name").and_then(Value::as_str).unwrap_or("?");
            if field.get("retrievable").and_then(Value::as_bool) == Some(false) {
                return Err(AdminError::Invalid {
                    field: Some("search".into()),
                    message: format!(
                        "template '{name}' has field '{field_name}' that is not retrievable: its values cannot be read back to be copied, so the tenant cannot be moved"
                    ),
                });
            }
            if field.get("key").and_then(Value::as_bool) == Some(true)
                && (field.get("sortable").and_then(Value::as_bool) == Some(false)
                    || field.get("filterable").and_then(Value::as_bool) == Some(false))
            {
                return Err(AdminError::Invalid {
                    field: Some("search".into()),
                    message: format!(
                        "template '{name}' has key field '{field_name}' that is not sortable and filterable: documents are copied in key order, so the tenant cannot be moved"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The indexes the target service would hold after the move, against its `index_capacity`.
fn check_capacity(snapshot: &Snapshot, tenant: &Tenant, to: &SearchPlacement) -> Result<()> {
    let Some(service) = snapshot.catalog.services.get(to.service()) else {
        return Ok(());
    };
    let templates = snapshot.catalog.templates.len() as u64;
    let dedicated_here = |t: &Tenant| matches!(&t.search, Some(SearchPlacement::DedicatedIndex { service }) if service == to.service());
    let others = snapshot
        .tenants()
        .filter(|t| t.tenant.id != tenant.id && dedicated_here(&t.tenant))
        .count() as u64;
    let needed = match to {
        SearchPlacement::SharedIndex { .. } => templates * (1 + others),
        SearchPlacement::DedicatedIndex { .. } => templates * (2 + others),
        SearchPlacement::DedicatedService { .. } => templates,
    };
    let capacity = u64::from(service.view.index_capacity);
    if needed > capacity {
        return Err(AdminError::Invalid {
            field: Some("search.service".into()),
            message: format!(
                "service '{}' is at its index capacity ({capacity} indexes; the move needs {needed})",
                to.service()
            ),
        });
    }
    Ok(())
}

/// The spec of a move of `tenant` to `to`.
pub fn move_spec(state: &AppState, from: SearchPlacement, to: SearchPlacement) -> Value {
    serde_json::to_value(MoveSpec {
        from,
        to,
        grace_seconds: state.operations.grace_seconds,
    })
    .unwrap_or(Value::Null)
}

/// `GET /admin/v1/operations/{id}`
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let id = Uuid::parse_str(&id).map_err(|_| AdminError::NotFound("no such operation".into()))?;
    let operation = state
        .operations
        .store
        .operation(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AdminError::NotFound("no such operation".into()))?;
    let mut response = Json(view(&operation)).into_response();
    if operation.status.is_active() {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    tenant: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /admin/v1/operations?tenant=&status=&limit=`, newest first.
pub async fn list(
    State(state): State<AppState>,
    query: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > 200 {
        return Err(AdminError::Invalid {
            field: Some("limit".into()),
            message: "must be 1 to 200".into(),
        });
    }
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| AdminError::Invalid {
            field: Some("status".into()),
            message: "must be notStarted, running, succeeded, failed or canceled".into(),
        })?),
    };
    // By slug, so an offboarded tenant's operations can still be listed.
    if let Some(slug) = &query.tenant {
        tenant_registry::names::TenantSlug::parse(slug.as_str()).map_err(|e| {
            AdminError::Invalid {
                field: Some("tenant".into()),
                message: e.0,
            }
        })?;
    }
    let whose = query.tenant.as_deref().map_or(Whose::Everyone, Whose::Slug);
    let found = state
        .operations
        .store
        .operations(whose, status, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"data": found.iter().map(view).collect::<Vec<_>>()})).into_response())
}

/// `POST /admin/v1/operations/{id}:cancel`: a move stops and rolls back if it has not
/// switched yet; one not started is canceled at once; a finished one is left as it is (409).
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let id = id
        .strip_suffix(":cancel")
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| AdminError::NotFound("no such operation".into()))?;
    let known = state
        .operations
        .store
        .operation(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AdminError::NotFound("no such operation".into()))?;
    if known.status.is_active() && switched(&known) {
        return Err(AdminError::Conflict(
            "the move has switched the tenant to its target: it can no longer be canceled (the source is removed after the grace period)".into(),
        ));
    }
    let operation = state
        .operations
        .store
        .request_cancel(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AdminError::NotFound("no such operation".into()))?;
    if !operation.status.is_active() && operation.status != Status::Canceled {
        return Err(AdminError::Conflict(format!(
            "the operation has already {}",
            operation.status.as_str()
        )));
    }
    Ok(accepted(&operation, view(&operation)))
}
