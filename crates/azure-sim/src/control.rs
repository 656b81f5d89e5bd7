//! The control API under `/_sim/` (no authentication: bind to localhost). Tests and
//! harnesses use it to add resources, inject faults, read the request log, move the
//! rate-limit clock and reset.
//!
//! | method and path | body / query | effect |
//! |---|---|---|
//! | `GET /_sim/health` | | `{"status":"ok"}` |
//! | `GET /_sim/resources` | | Azure OpenAI resources with their deployments |
//! | `POST /_sim/resources` | `ResourceConfig` | adds a resource (201; 409 if the name is taken) |
//! | `DELETE /_sim/resources/{name}` | | removes it (204; 404) |
//! | `POST /_sim/resources/{name}/deployments` | `DeploymentConfig` | adds a deployment (201) |
//! | `DELETE /_sim/resources/{name}/deployments/{d}` | | removes it (204; 404) |
//! | `GET /_sim/search-services` | | search services |
//! | `POST /_sim/search-services` | `SearchServiceConfig` | adds one (201; 409) |
//! | `DELETE /_sim/search-services/{name}` | | removes it (204; 404) |
//! | `POST /_sim/faults` | `FaultSpec` | injects a fault, answers `{"id":N}` (201) |
//! | `GET /_sim/faults` | | active faults with their `hits` |
//! | `DELETE /_sim/faults` / `DELETE /_sim/faults/{id}` | | clears all / one |
//! | `GET /_sim/requests` | `?resource=&since=&limit=` | `{"requests":[...]}`, oldest first |
//! | `DELETE /_sim/requests` | | clears the request log |
//! | `GET /_sim/clock` | | `{"now_ms":N}` on the rate limiter's clock |
//! | `POST /_sim/clock/advance` | `{"ms":N}` | moves that clock forward |
//! | `PUT /_sim/entra/outage` | `{"down":bool}` | token, IMDS and App Service identity endpoints answer 503 while down |
//! | `GET /_sim/entra/issued` | | `[{"client_id","resource","count"}]`: access tokens issued so far |
//! | `PUT /_sim/entra/lifetime` | `{"seconds":N}` | lifetime of tokens issued from now on |
//! | `POST /_sim/entra/federated-token` | `{"issuer","subject","audience"?,"lifetime_seconds"?}` | `{"token":"<jwt>"}` signed as the cluster's OIDC issuer |
//! | `POST /_sim/reset` | | clears faults, log, rate-limit windows, stored responses, Entra's issued counters and outage; restores the configured token lifetime |
//!
//! Resources and search services take `disable_local_auth` and `role_assignments` (object
//! ids) in the bodies of `POST /_sim/resources` and `POST /_sim/search-services`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::common::{json_response_body, AzureError};
use crate::config::{ConfigError, DeploymentConfig, ResourceConfig};
use crate::faults::FaultSpec;
use crate::reqlog::LogFilter;
use crate::search::SearchServiceConfig;
use crate::state::{AppState, Resource, ResourceKind};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/resources", get(list_resources).post(add_resource))
        .route("/resources/{name}", delete(delete_resource))
        .route("/resources/{name}/deployments", post(add_deployment))
        .route(
            "/resources/{name}/deployments/{deployment}",
            delete(delete_deployment),
        )
        .route(
            "/search-services",
            get(list_search_services).post(add_search_service),
        )
        .route("/search-services/{name}", delete(delete_search_service))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/faults/{id}", delete(delete_fault))
        .route("/requests", get(list_requests).delete(clear_requests))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance_clock))
        .route("/reset", post(reset_handler))
        .route("/entra/outage", put(entra_outage))
        .route("/entra/issued", get(entra_issued))
        .route("/entra/lifetime", put(entra_lifetime))
        .route("/entra/federated-token", post(entra_federated_token))
        .fallback(|| async {
            control_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "No such control endpoint.",
            )
        })
}

/// Clears faults, the request log, rate-limit windows and stored responses; puts the
/// identity platform back as configured (no outage, no issued tokens counted).
pub fn reset(state: &AppState) {
    state.faults.clear();
    state.log.clear();
    state.entra.reset();
    for resource in state.registry.all() {
        match resource {
            Resource::OpenAi(r) => r.reset(),
            Resource::Search(s) => s.reset(),
        }
    }
}

fn control_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    AzureError::new(status, code, message).into_response()
}

fn config_error(error: ConfigError) -> Response {
    let status = match error {
        ConfigError::DuplicateName(_) | ConfigError::DuplicateDeployment { .. } => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::BAD_REQUEST,
    };
    control_error(status, "InvalidConfiguration", error.to_string())
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, AzureError> {
    serde_json::from_slice(body).map_err(|e| {
        AzureError::new(
            StatusCode::BAD_REQUEST,
            "InvalidBody",
            format!("invalid JSON body: {e}"),
        )
    })
}

fn created(value: serde_json::Value) -> Response {
    (StatusCode::CREATED, json_response_body(&value)).into_response()
}

async fn health() -> Response {
    json_response_body(&serde_json::json!({"status": "ok"}))
}

async fn list_resources(State(state): State<AppState>) -> Response {
    let resources: Vec<serde_json::Value> = state
        .registry
        .all()
        .into_iter()
        .filter_map(|r| match r {
            Resource::OpenAi(r) => Some(r.describe()),
            Resource::Search(_) => None,
        })
        .collect();
    json_response_body(&serde_json::json!({ "resources": resources }))
}

async fn add_resource(State(state): State<AppState>, body: Bytes) -> Response {
    let config: ResourceConfig = match parse(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let name = config.name.clone();
    match state.add_openai_resource(config) {
        Ok(()) => {
            state.persist_registry();
            created(serde_json::json!({ "name": name }))
        }
        Err(e) => config_error(e),
    }
}

async fn delete_resource(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.registry.remove(&name, ResourceKind::OpenAi) {
        Some(_) => {
            state.persist_registry();
            StatusCode::NO_CONTENT.into_response()
        }
        None => control_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no resource {name}"),
        ),
    }
}

async fn add_deployment(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let config: DeploymentConfig = match parse(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some(Resource::OpenAi(resource)) = state.registry.get(&name) else {
        return control_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no resource {name}"),
        );
    };
    let deployment = config.name.clone();
    match resource.add_deployment(config) {
        Ok(()) => {
            state.persist_registry();
            created(serde_json::json!({ "resource": name, "deployment": deployment }))
        }
        Err(e) => config_error(e),
    }
}

async fn delete_deployment(
    State(state): State<AppState>,
    Path((name, deployment)): Path<(String, String)>,
) -> Response {
    let removed = match state.registry.get(&name) {
        Some(Resource::OpenAi(resource)) => resource.remove_deployment(&deployment),
        _ => false,
    };
    if removed {
        state.persist_registry();
        StatusCode::NO_CONTENT.into_response()
    } else {
        control_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no deployment {deployment} in resource {name}"),
        )
    }
}

async fn list_search_services(State(state): State<AppState>) -> Response {
    let services: Vec<serde_json::Value> = state
        .registry
        .all()
        .into_iter()
        .filter_map(|r| match r {
            Resource::Search(s) => Some(s.describe()),
            Resource::OpenAi(_) => None,
        })
        .collect();
    json_response_body(&serde_json::json!({ "search_services": services }))
}

async fn add_search_service(State(state): State<AppState>, body: Bytes) -> Response {
    let config: SearchServiceConfig = match parse(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let name = config.name.clone();
    match state.add_search_service(config) {
        Ok(()) => {
            state.persist_registry();
            created(serde_json::json!({ "name": name }))
        }
        Err(e) => config_error(e),
    }
}

async fn delete_search_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    match state.registry.remove(&name, ResourceKind::Search) {
        Some(Resource::Search(service)) => {
            service.on_delete();
            state.persist_registry();
            StatusCode::NO_CONTENT.into_response()
        }
        _ => control_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no search service {name}"),
        ),
    }
}

async fn add_fault(State(state): State<AppState>, body: Bytes) -> Response {
    let spec: FaultSpec = match parse(&body) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if state.registry.get(&spec.resource).is_none() {
        return control_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no resource or search service {}", spec.resource),
        );
    }
    let id = state.faults.add(spec);
    created(serde_json::json!({ "id": id }))
}

async fn list_faults(State(state): State<AppState>) -> Response {
    let faults = serde_json::to_value(state.faults.list()).unwrap_or_default();
    json_response_body(&serde_json::json!({ "faults": faults }))
}

async fn clear_faults(State(state): State<AppState>) -> Response {
    state.faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_fault(State(state): State<AppState>, Path(id): Path<u64>) -> Response {
    if state.faults.remove(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        control_error(StatusCode::NOT_FOUND, "NotFound", format!("no fault {id}"))
    }
}

async fn list_requests(State(state): State<AppState>, Query(filter): Query<LogFilter>) -> Response {
    let requests: Vec<serde_json::Value> = state
        .log
        .list(&filter)
        .iter()
        .map(|e| e.to_json())
        .collect();
    json_response_body(&serde_json::json!({ "requests": requests }))
}

async fn clear_requests(State(state): State<AppState>) -> Response {
    state.log.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn clock(State(state): State<AppState>) -> Response {
    json_response_body(&serde_json::json!({ "now_ms": state.clock.now_ms() }))
}

#[derive(serde::Deserialize)]
struct Advance {
    ms: u64,
}

async fn advance_clock(State(state): State<AppState>, body: Bytes) -> Response {
    let advance: Advance = match parse(&body) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    state.clock.advance(advance.ms);
    json_response_body(&serde_json::json!({ "now_ms": state.clock.now_ms() }))
}

async fn reset_handler(State(state): State<AppState>) -> Response {
    reset(&state);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Outage {
    down: bool,
}

async fn entra_outage(State(state): State<AppState>, body: Bytes) -> Response {
    let outage: Outage = match parse(&body) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    state.entra.set_down(outage.down);
    json_response_body(&serde_json::json!({ "down": outage.down }))
}

async fn entra_issued(State(state): State<AppState>) -> Response {
    let issued = serde_json::to_value(state.entra.issued()).unwrap_or_default();
    json_response_body(&issued)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Lifetime {
    seconds: u64,
}

async fn entra_lifetime(State(state): State<AppState>, body: Bytes) -> Response {
    let lifetime: Lifetime = match parse(&body) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    if lifetime.seconds == 0 {
        return control_error(
            StatusCode::BAD_REQUEST,
            "InvalidBody",
            "seconds must be at least 1",
        );
    }
    state.entra.set_lifetime(lifetime.seconds);
    json_response_body(&serde_json::json!({ "seconds": lifetime.seconds }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FederatedTokenRequest {
    issuer: String,
    subject: String,
    #[serde(default = "default_exchange_audience")]
    audience: String,
    #[serde(default = "default_federated_lifetime")]
    lifetime_seconds: i64,
}

fn default_exchange_audience() -> String {
    crate::entra::config::TOKEN_EXCHANGE_AUDIENCE.to_owned()
}

/// Kubernetes projects service-account tokens for an hour by default.
fn default_federated_lifetime() -> i64 {
    3600
}

async fn entra_federated_token(State(state): State<AppState>, body: Bytes) -> Response {
    let request: FederatedTokenRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(key) = state.entra.key() else {
        return control_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "NoSigningKey",
            "the signing key could not be made",
        );
    };
    match crate::entra::tokens::mint_federated_token(
        key,
        &request.issuer,
        &request.subject,
        &request.audience,
        state.clock.unix_seconds(),
        request.lifetime_seconds,
    ) {
        Ok(token) => json_response_body(&serde_json::json!({ "token": token })),
        Err(_) => control_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SigningFailed",
            "the token could not be signed",
        ),
    }
}
