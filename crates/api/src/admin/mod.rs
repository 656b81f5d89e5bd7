//! The admin API under `/admin/v1`: upstream resources, shared pools, search services, index
//! templates, tenants, their keys and tokens. Handlers are thin: extract, call the registry,
//! map the result. Secrets go in (upstream keys) and come out once (a new tenant key, an
//! issued token); no response ever repeats one.

use std::time::Duration;

use ::operations::Kind;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenant_registry::model::{
    ApiKeyPatch, KeyScope, NewApiKey, NewDeployment, NewIndexTemplate, NewOpenAiResource, NewPool,
    NewSearchService, NewTenant, TenantPatch, TenantStatus,
};

use crate::error::AdminError;
use crate::jwt::MAX_TTL;
use crate::state::AppState;

pub mod operations;

/// The OpenAPI document of this API, served at `/admin/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A JSON object body whose errors answer in the admin envelope, naming the field. The body
/// must be an object (serde would also build a struct from an array), with no key twice.
pub struct Body<T>(T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AdminError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self> {
        let is_json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !is_json {
            return Err(AdminError::Invalid {
                field: None,
                message: "send the body as JSON with `Content-Type: application/json`".into(),
            });
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AdminError::PayloadTooLarge
                } else {
                    AdminError::Invalid {
                        field: None,
                        message: rejection.body_text(),
                    }
                }
            })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(AdminError::Invalid {
                field: None,
                message: "the body must be a JSON object".into(),
            });
        }
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        if let Err(duplicate) = strict_json::check_parsed(&bytes) {
            return Err(AdminError::Invalid {
                field: Some(duplicate.key().to_owned()),
                message: duplicate.to_string(),
            });
        }
        Ok(Self(value))
    }
}

type Result<T> = std::result::Result<T, AdminError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/openapi.json", get(openapi))
        .route(
            "/admin/v1/openai/resources",
            post(create_resource).get(resources),
        )
        .route("/admin/v1/openai/resources/{name}", delete(delete_resource))
        .route(
            "/admin/v1/openai/deployments",
            post(create_deployment).get(deployments),
        )
        .route(
            "/admin/v1/openai/deployments/{resource}/{name}",
            delete(delete_deployment),
        )
        .route("/admin/v1/openai/pools", post(create_pool).get(pools))
        .route("/admin/v1/openai/pools/{alias}", delete(delete_pool))
        .route(
            "/admin/v1/search/services",
            post(create_service).get(services),
        )
        .route("/admin/v1/search/services/{name}", delete(delete_service))
        .route(
            "/admin/v1/search/index-templates",
            post(create_template).get(templates),
        )
        .route(
            "/admin/v1/search/index-templates/{name}",
            delete(delete_template),
        )
        .route("/admin/v1/master-key:reseal", post(reseal))
        .route("/admin/v1/operations", get(operations::list))
        .route(
            "/admin/v1/operations/{id}",
            get(operations::get).post(operations::cancel),
        )
        .route("/admin/v1/tenants", post(onboard).get(tenants))
        .route(
            "/admin/v1/tenants/{slug}",
            get(tenant).patch(update_tenant).delete(offboard),
        )
        .route("/admin/v1/tenants/{slug}/keys", post(create_key).get(keys))
        .route(
            "/admin/v1/tenants/{slug}/keys/{id}",
            delete(revoke_key).patch(update_key),
        )
        .route("/admin/v1/tenants/{slug}/tokens", post(issue_token))
        .route(
            "/admin/v1/tenants/{slug}/usage",
            get(crate::usage::admin_usage),
        )
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn list<T: Serialize>(data: Vec<T>) -> Response {
    Json(json!({ "data": data })).into_response()
}

/// Seals every stored credential again under the primary master key (after a rotation).
async fn reseal(State(state): State<AppState>) -> Result<Response> {
    Ok(Json(state.registry.reseal_credentials().await?).into_response())
}

async fn create_resource(
    State(state): State<AppState>,
    Body(new): Body<NewOpenAiResource>,
) -> Result<Response> {
    Ok(created(state.registry.create_resource(new).await?))
}

async fn resources(State(state): State<AppState>) -> Result<Response> {
    Ok(list(state.registry.resources().await?))
}

async fn delete_resource(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    state.registry.delete_resource(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_deployment(
    State(state): State<AppState>,
    Body(new): Body<NewDeployment>,
) -> Result<Response> {
    Ok(created(state.registry.create_deployment(new).await?))
}

async fn deployments(State(state): State<AppState>) -> Result<Response> {
    Ok(list(state.registry.deployments().await?))
}

async fn delete_deployment(
    State(state): State<AppState>,
    Path((resource, name)): Path<(String, String)>,
) -> Result<StatusCode> {
    state.registry.delete_deployment(&resource, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_pool(State(state): State<AppState>, Body(new): Body<NewPool>) -> Result<Response> {
    Ok(created(state.registry.create_pool(new).await?))
}

async fn pools(State(state): State<AppState>) -> Result<Response> {
    Ok(list(state.registry.pools().await?))
}

async fn delete_pool(
    State(state): State<AppState>,
    Path(alias): Path<String>,
) -> Result<StatusCode> {
    state.registry.delete_pool(&alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_service(
    State(state): State<AppState>,
    Body(new): Body<NewSearchService>,
) -> Result<Response> {
    Ok(created(state.registry.create_service(new).await?))
}

async fn services(State(state): State<AppState>) -> Result<Response> {
    Ok(list(state.registry.services().await?))
}

async fn delete_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    state.registry.delete_service(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_template(
    State(state): State<AppState>,
    Body(new): Body<NewIndexTemplate>,
) -> Result<Response> {
    let template = state.registry.create_template(new).await?;
    // Tenants already placed need the new logical index too: one operation each.
    provision_all(&state).await;
    Ok(created(template))
}

async fn templates(State(state): State<AppState>) -> Result<Response> {
    Ok(list(state.registry.templates().await?))
}

async fn delete_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    state.registry.delete_template(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Onboarding: the tenant at once (201); with a search placement, its indexes are created by
/// an operation (202 with `Operation-Location`).
async fn onboard(State(state): State<AppState>, Body(new): Body<NewTenant>) -> Result<Response> {
    let tenant = state.registry.onboard(new).await?;
    if tenant.search.is_none() {
        return Ok(created(operations::tenant_view(&state, &tenant).await));
    }
    let operation = operations::start(
        &state,
        &tenant,
        Kind::Provision,
        json!({}),
        "creating_indexes",
    )
    .await?;
    Ok(operations::accepted(
        &operation,
        operations::tenant_view(&state, &tenant).await,
    ))
}

/// A provisioning operation for every tenant with a search placement (a new template needs
/// its index). A tenant busy with another operation gets the index from it: a move creates
/// every template's index on its target.
async fn provision_all(state: &AppState) {
    let snapshot = state.registry.snapshot();
    for entry in snapshot.tenants().filter(|t| t.tenant.search.is_some()) {
        match operations::start(
            state,
            &entry.tenant,
            Kind::Provision,
            json!({}),
            "creating_indexes",
        )
        .await
        {
            Ok(_) | Err(AdminError::Conflict(_)) => {}
            Err(error) => {
                tracing::warn!(%error, tenant = %entry.tenant.slug, "cannot start provisioning")
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<u32>,
}

async fn tenants(
    State(state): State<AppState>,
    query: std::result::Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(page) = query?;
    Ok(Json(
        state
            .registry
            .tenants(page.after.as_deref(), page.limit)
            .await?,
    )
    .into_response())
}

async fn tenant(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response> {
    let tenant = state.registry.tenant(&slug).await?;
    Ok(Json(operations::tenant_view(&state, &tenant).await).into_response())
}

/// A patch. A new search placement for a tenant that has one is a move (202 with
/// `Operation-Location`; checked up front, the rest of the patch applied at once, the
/// placement switched when the documents are across); a first one is provisioned (202).
/// OpenAI placement changes take effect at once (200): there is nothing to copy.
async fn update_tenant(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Body(mut patch): Body<TenantPatch>,
) -> Result<Response> {
    let current = state.registry.tenant(&slug).await?;
    let moving_to = match (&current.search, &patch.search) {
        (Some(from), Some(Some(to))) if from != to => Some((from.clone(), to.clone())),
        (Some(_), Some(None)) => {
            return Err(AdminError::Invalid {
                field: Some("search".into()),
                message: "a tenant's search placement cannot be removed while it holds documents; move it, or offboard the tenant".into(),
            })
        }
        _ => None,
    };
    let provisioning = current.search.is_none() && matches!(patch.search, Some(Some(_)));
    if let Some((from, to)) = moving_to {
        if let Some(active) = state
            .operations
            .store
            .active_operation(current.id)
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))?
        {
            return Err(AdminError::Conflict(format!(
                "the tenant already has an operation running: /admin/v1/operations/{}",
                active.id
            )));
        }
        if patch.data_zone.is_some() {
            return Err(AdminError::Invalid {
                field: Some("data_zone".into()),
                message: "change the data zone and move the search placement in two requests"
                    .into(),
            });
        }
        operations::check_move(&state, &current, &to).await?;
        patch.search = None;
        let tenant = state.registry.update_tenant(&slug, patch).await?;
        let spec = operations::move_spec(&state, from, to);
        let operation =
            operations::start(&state, &tenant, Kind::SearchMove, spec, "creating_target").await?;
        return Ok(operations::accepted(
            &operation,
            operations::tenant_view(&state, &tenant).await,
        ));
    }
    let tenant = state.registry.update_tenant(&slug, patch).await?;
    if provisioning {
        let operation = operations::start(
            &state,
            &tenant,
            Kind::Provision,
            json!({}),
            "creating_indexes",
        )
        .await?;
        return Ok(operations::accepted(
            &operation,
            operations::tenant_view(&state, &tenant).await,
        ));
    }
    Ok(Json(operations::tenant_view(&state, &tenant).await).into_response())
}

/// Offboarding is an operation (202): suspend, remove the tenant's search data, remove the
/// tenant. A second DELETE while it runs answers the same operation.
async fn offboard(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response> {
    let tenant = state.registry.tenant(&slug).await?;
    let active = state
        .operations
        .store
        .active_operation(tenant.id)
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    let operation = match active {
        Some(op) if op.kind == Kind::Offboard => op,
        Some(op) => {
            return Err(AdminError::Conflict(format!(
                "the tenant already has an operation running: /admin/v1/operations/{}",
                op.id
            )))
        }
        None => operations::start(&state, &tenant, Kind::Offboard, json!({}), "suspending").await?,
    };
    Ok(operations::accepted(
        &operation,
        operations::view(&operation),
    ))
}

async fn create_key(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Body(new): Body<NewApiKey>,
) -> Result<Response> {
    use secrecy::ExposeSecret;
    let (key, secret) = state.registry.create_key(&slug, new).await?;
    Ok(created(json!({
        "id": key.id,
        "key": secret.expose_secret(),
        "name": key.name,
        "scope": key.scope,
        "hint": key.hint,
        "expires_at": key.expires_at,
        "limits": key.limits,
        "created_at": key.created_at,
    })))
}

async fn keys(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response> {
    Ok(list(state.registry.keys(&slug).await?))
}

async fn update_key(
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
    Body(patch): Body<ApiKeyPatch>,
) -> Result<Response> {
    Ok(Json(state.registry.update_key(&slug, &id, patch).await?).into_response())
}

async fn revoke_key(
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    state.registry.revoke_key(&slug, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    scope: KeyScope,
    #[serde(default, deserialize_with = "tenant_registry::model::not_null")]
    ttl_seconds: Option<u64>,
}

async fn issue_token(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    // The body is optional: no body means the defaults.
    let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AdminError::Invalid {
            field: None,
            message: "the body must be a JSON object".into(),
        });
    } else {
        serde_json::from_slice(&body).map_err(|e| AdminError::Invalid {
            field: None,
            message: format!("invalid token request: {e}"),
        })?
    };
    let ttl = match request.ttl_seconds {
        Some(0) => {
            return Err(AdminError::Invalid {
                field: Some("ttl_seconds".into()),
                message: "must be positive".into(),
            })
        }
        Some(secs) if Duration::from_secs(secs) > MAX_TTL => {
            return Err(AdminError::Invalid {
                field: Some("ttl_seconds".into()),
                message: format!("must be at most {}", MAX_TTL.as_secs()),
            })
        }
        Some(secs) => Duration::from_secs(secs),
        None => state.token_ttl,
    };
    let tenant = state.registry.tenant(&slug).await?;
    if tenant.status != TenantStatus::Active {
        return Err(AdminError::Conflict(format!(
            "tenant '{slug}' is {}",
            tenant.status.as_str()
        )));
    }
    let Some(issued) = state
        .jwt
        .issue(tenant.id, tenant.slug.as_str(), request.scope, ttl)
    else {
        return Err(AdminError::Conflict(
            "token issuance is not configured (set BULKHEAD_JWT_SECRET)".into(),
        ));
    };
    let (token, expires_at) = issued.map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        AdminError::Conflict("the token could not be signed".into())
    })?;
    use secrecy::ExposeSecret;
    Ok(created(json!({
        "token": token.expose_secret(),
        "token_type": "Bearer",
        "scope": request.scope,
        "expires_at": expires_at,
    })))
}
