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
use serde_json::{json, Value};
use tenant_registry::model::{
    ApiKey, ApiKeyPatch, KeyScope, NewApiKey, NewDeployment, NewIndexTemplate, NewOpenAiResource,
    NewPool, NewSearchService, NewTenant, NewTenantWithKeys, TenantFilter, TenantPatch,
    TenantStatus,
};

use crate::error::AdminError;
use crate::jwt::MAX_TTL;
use crate::state::AppState;
use tenant_registry::MAX_BATCH;

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
        .route("/admin/v1/prices", post(create_price).get(prices))
        .route("/admin/v1/prices/{id}", delete(delete_price))
        .route("/admin/v1/chargeback", get(crate::chargeback::chargeback))
        .route("/admin/v1/master-key:reseal", post(reseal))
        .route("/admin/v1/operations", get(operations::list))
        .route(
            "/admin/v1/operations/{id}",
            get(operations::get).post(operations::cancel),
        )
        .route("/admin/v1/tenants", post(onboard).get(tenants))
        .route("/admin/v1/tenants:batch", post(onboard_batch))
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

async fn create_price(
    State(state): State<AppState>,
    Body(new): Body<tenant_registry::prices::NewPrice>,
) -> Result<Response> {
    Ok(created(state.registry.create_price(new).await?))
}

/// The price table: every price ever in force or scheduled, and the table's currency.
async fn prices(State(state): State<AppState>) -> Result<Response> {
    let (currency, prices) = state.registry.prices().await?;
    Ok(Json(json!({ "currency": currency, "data": prices })).into_response())
}

async fn delete_price(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Err(AdminError::from(tenant_registry::RegistryError::not_found(
            "price", id,
        )));
    };
    state.registry.delete_price(id).await?;
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

/// The most keys one item of a bulk onboarding issues.
const MAX_BATCH_KEYS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    tenants: Vec<serde_json::Value>,
}

/// Bulk onboarding: up to [`MAX_BATCH`] tenants, each with the keys to issue it (`keys`, as
/// `POST .../keys` takes them). Checked whole: an item that is malformed or breaks a rule
/// refuses the call (422 naming `tenants[i].field`) and nothing is written. Written item by
/// item: each all or nothing, answered in order with `status` 201 (or 202 with the
/// `operation` creating its indexes), the tenant and its keys' secrets (shown once), or the
/// conflict that item met (a slug taken, by an earlier item too). 200 once checked.
async fn onboard_batch(
    State(state): State<AppState>,
    Body(batch): Body<Batch>,
) -> Result<Response> {
    use secrecy::ExposeSecret;
    if batch.tenants.is_empty() || batch.tenants.len() > MAX_BATCH {
        return Err(AdminError::Invalid {
            field: Some("tenants".into()),
            message: format!("must hold 1 to {MAX_BATCH} tenants"),
        });
    }
    let items = batch
        .tenants
        .into_iter()
        .enumerate()
        .map(|(i, item)| batch_item(item).map_err(|error| error.within(&format!("tenants[{i}]"))))
        .collect::<Result<Vec<_>>>()?;
    let outcomes = state.registry.onboard_many(items).await?;
    let mut results = Vec::with_capacity(outcomes.len());
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let onboarded = match outcome {
            Ok(onboarded) => onboarded,
            Err(error) => {
                let (status, mut body) = AdminError::from(error).envelope();
                body["index"] = json!(i);
                body["status"] = json!(status.as_u16());
                results.push(body);
                continue;
            }
        };
        let keys: Vec<Value> = onboarded
            .keys
            .iter()
            .map(|(key, secret)| key_view(key, secret.expose_secret()))
            .collect();
        let operation = match onboarded.tenant.search {
            None => None,
            Some(_) => Some(
                operations::start(
                    &state,
                    &onboarded.tenant,
                    Kind::Provision,
                    json!({}),
                    "creating_indexes",
                )
                .await,
            ),
        };
        let (status, operation) = match operation {
            None => (StatusCode::CREATED, Value::Null),
            Some(Ok(operation)) => (StatusCode::ACCEPTED, operations::view(&operation)),
            // The tenant is onboarded; its indexes come with the next provisioning (a new
            // template, or `PATCH` with its placement), and its view says they are missing.
            Some(Err(error)) => {
                tracing::warn!(%error, tenant = %onboarded.tenant.slug, "cannot start provisioning");
                (StatusCode::CREATED, Value::Null)
            }
        };
        results.push(json!({
            "index": i,
            "status": status.as_u16(),
            "tenant": operations::tenant_view(&state, &onboarded.tenant).await,
            "keys": keys,
            "operation": operation,
        }));
    }
    let created = results
        .iter()
        .filter(|r| r["status"].as_u64().is_some_and(|s| s < 300))
        .count();
    Ok(Json(json!({
        "created": created,
        "failed": results.len() - created,
        "results": results,
    }))
    .into_response())
}

/// One item of a bulk onboarding: the tenant's fields, and its `keys`.
fn batch_item(item: Value) -> std::result::Result<NewTenantWithKeys, AdminError> {
    let Value::Object(mut fields) = item else {
        return Err(AdminError::Invalid {
            field: None,
            message: "must be a JSON object".into(),
        });
    };
    let keys: Vec<NewApiKey> = match fields.remove("keys") {
        None => Vec::new(),
        Some(keys) => from_value(keys).map_err(|error| error.within("keys"))?,
    };
    if keys.len() > MAX_BATCH_KEYS {
        return Err(AdminError::Invalid {
            field: Some("keys".into()),
            message: format!("at most {MAX_BATCH_KEYS} keys per tenant"),
        });
    }
    let tenant: NewTenant = from_value(Value::Object(fields))?;
    Ok(NewTenantWithKeys { tenant, keys })
}

/// A value read into `T`; an error names the field at fault, as a body's would.
fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> std::result::Result<T, AdminError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        // A missing field names itself in backquotes, at its object's path (an unknown one is
        // already the path's last segment).
        let named = inner
            .starts_with("missing field")
            .then(|| inner.split('`').nth(1))
            .flatten();
        let field = match (path.as_str(), named) {
            (".", None) => None,
            (".", Some(name)) => Some(name.to_owned()),
            (path, Some(name)) => Some(format!("{path}.{name}")),
            (path, None) => Some(path.to_owned()),
        };
        AdminError::Invalid {
            field,
            message: inner,
        }
    })
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
    slug_prefix: Option<String>,
    status: Option<String>,
    openai: Option<String>,
    search: Option<String>,
}

/// A page of tenants, by cursor, narrowed by slug prefix, status and placement (`none`: not
/// placed). Only the page is read from the store.
async fn tenants(
    State(state): State<AppState>,
    query: std::result::Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(page) = query?;
    let filter = TenantFilter::parse(
        page.slug_prefix.as_deref(),
        page.status.as_deref(),
        page.openai.as_deref(),
        page.search.as_deref(),
    )
    .map_err(|(field, message)| AdminError::Invalid {
        field: Some(field.to_owned()),
        message,
    })?;
    Ok(Json(
        state
            .registry
            .tenants_matching(&filter, page.after.as_deref(), page.limit)
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
    Ok(created(key_view(&key, secret.expose_secret())))
}

/// A key just issued, with its secret: the only answer that ever carries it.
fn key_view(key: &ApiKey, secret: &str) -> Value {
    json!({
        "id": key.id,
        "key": secret,
        "name": key.name,
        "scope": key.scope,
        "hint": key.hint,
        "expires_at": key.expires_at,
        "limits": key.limits,
        "created_at": key.created_at,
    })
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
