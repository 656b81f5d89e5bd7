//! The Azure OpenAI data plane: the tenant's alias resolved by its placement into a routing
//! [`Target`], then handed to the [`OpenAiRouter`].
//!
//! An alias the tenant may not use answers exactly like an alias that does not exist
//! (404 `DeploymentNotFound`): another tenant's deployments are never revealed.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use openai_router::{AnswerBody, Call, Member, Operation, Target};
use serde_json::{Map, Value};
use tenant_registry::model::OpenAiPlacement;
use tenant_registry::{Snapshot, TenantEntry};

use crate::auth::{Caller, Credential};
use crate::error::azure_error;
use crate::metering::UsageRecord;
use crate::request_id::RequestId;
use crate::state::AppState;

/// The routing target of `alias` for `tenant`, and the name of its round-robin counter.
/// `None` when the tenant may not use the alias (or it does not exist).
pub fn openai_target(
    tenant: &TenantEntry,
    snapshot: &Snapshot,
    alias: &str,
) -> Option<(Target, String)> {
    let t = &tenant.tenant;
    let catalog = &snapshot.catalog;
    let member_of =
        |reference: &tenant_registry::model::DeploymentRef, priority: u32, weight: u32| {
            let resource = catalog.resources.get(&reference.resource)?;
            Some(Member {
                key: reference.to_string(),
                endpoint: resource.view.endpoint.to_string(),
                deployment: reference.deployment.to_string(),
                region: resource.view.region.to_string(),
                data_zone: resource.view.data_zone.as_ref().map(ToString::to_string),
                credential: snapshot.resource_credential(&reference.resource)?.clone(),
                priority,
                weight,
            })
        };
    let (members, rotation) = match t.openai.as_ref()? {
        OpenAiPlacement::Shared => {
            let pool = catalog.pools.iter().find(|(a, _)| a.as_str() == alias)?.1;
            let members = pool
                .members
                .iter()
                .filter_map(|m| member_of(&m.deployment, m.priority, m.weight))
                .collect();
            (members, format!("pool:{alias}"))
        }
        OpenAiPlacement::DedicatedDeployment { models } => {
            let members = models
                .iter()
                .find(|(a, _)| a.as_str() == alias)?
                .1
                .iter()
                .filter_map(|m| member_of(&m.deployment, m.priority, m.weight))
                .collect();
            (members, format!("tenant:{}:{alias}", t.id))
        }
        OpenAiPlacement::DedicatedResource { resources } => {
            let members = resources
                .iter()
                .filter_map(|resource| {
                    let reference = catalog
                        .deployments
                        .keys()
                        .find(|d| &d.resource == resource && d.deployment.as_str() == alias)?;
                    member_of(reference, 0, 1)
                })
                .collect();
            (members, format!("tenant:{}:{alias}", t.id))
        }
        OpenAiPlacement::TenantProvided { endpoint, region } => {
            tenant_registry::names::DeploymentName::parse(alias).ok()?;
            let member = Member {
                key: format!("tenant:{}/{alias}", t.id),
                endpoint: endpoint.to_string(),
                deployment: alias.to_owned(),
                region: region.to_string(),
                data_zone: t.data_zone.as_ref().map(ToString::to_string),
                credential: tenant.openai_credential.clone()?,
                priority: 0,
                weight: 1,
            };
            (vec![member], format!("tenant:{}:{alias}", t.id))
        }
    };
    let target = Target::new(alias, members).in_zone(t.data_zone.as_ref().map(|z| z.as_str()));
    (!target.members.is_empty()).then_some((target, rotation))
}

fn deployment_not_found() -> Response {
    azure_error(
        StatusCode::NOT_FOUND,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
    )
}

fn bad_request(message: &str) -> Response {
    azure_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// `POST /openai/deployments/{alias}/chat/completions|completions|embeddings`
pub async fn deployment_call(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    Path((alias, operation)): Path<(String, String)>,
    query: axum::extract::RawQuery,
    body: Bytes,
) -> Response {
    let Some(operation) = operation_of(&operation) else {
        return azure_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    };
    let has_version = query.0.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p.starts_with("api-version=") && p.len() > 12)
    });
    if !has_version {
        return bad_request("Missing required query parameter: api-version");
    }
    let raw_len = body.len();
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(message) => return bad_request(&message),
    };
    route(
        &state,
        &caller,
        request_id.map(|r| r.0),
        &alias,
        operation,
        body,
        raw_len,
    )
    .await
}

/// `POST /openai/v1/chat/completions|embeddings` and `/v1/...`: the alias is `model`.
pub async fn model_call(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    Path(operation): Path<String>,
    body: Bytes,
) -> Response {
    let Some(operation) = operation_of(&operation).filter(|o| *o != Operation::Completions) else {
        return azure_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    };
    let raw_len = body.len();
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(message) => return bad_request(&message),
    };
    let Some(alias) = body
        .get("model")
        .and_then(Value::as_str)
        .map(ToOwned::to_owned)
    else {
        return bad_request("'model' is a required property.");
    };
    route(
        &state,
        &caller,
        request_id.map(|r| r.0),
        &alias,
        operation,
        body,
        raw_len,
    )
    .await
}

fn operation_of(path: &str) -> Option<Operation> {
    match path {
        "chat/completions" => Some(Operation::ChatCompletions),
        "completions" => Some(Operation::Completions),
        "embeddings" => Some(Operation::Embeddings),
        _ => None,
    }
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("The request body must be a JSON object.".into()),
        Err(error) => Err(format!(
            "We could not parse the JSON body of your request: {error}."
        )),
    }
}

/// A rough estimate for steering (prompt bytes / 4 + the output cap); the quota issue brings
/// a real tokenizer.
fn estimate(body: &Map<String, Value>, raw_len: usize) -> u64 {
    let output = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    (raw_len as u64 / 4) + output * n
}

async fn route(
    state: &AppState,
    caller: &Caller,
    request_id: Option<RequestId>,
    alias: &str,
    operation: Operation,
    body: Map<String, Value>,
    raw_len: usize,
) -> Response {
    let snapshot = state.registry.snapshot();
    let Some((target, rotation)) = openai_target(&caller.tenant, &snapshot, alias) else {
        return deployment_not_found();
    };
    let tenant = &caller.tenant.tenant;
    let call = Call {
        operation,
        estimated_tokens: estimate(&body, raw_len),
        body,
        default_user: tenant.id.to_string(),
        request_id: request_id.and_then(|r| r.0.to_str().ok().map(ToOwned::to_owned)),
    };
    let sink = Arc::clone(&state.usage);
    let record = UsageRecord {
        tenant_id: tenant.id,
        tenant: tenant.slug.to_string(),
        key_id: match caller.credential {
            Credential::ApiKey { id } => Some(id),
            Credential::Token => None,
        },
        alias: alias.to_owned(),
        operation: operation.path(),
        usage: Default::default(),
        at: chrono::Utc::now(),
    };
    let started = Instant::now();
    let on_done = Box::new(move |usage: openai_router::Usage| {
        sink.record(UsageRecord { usage, ..record });
    });
    let answer = match state.openai.send(&target, &rotation, call, on_done).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::error!(%error, "routing failed");
            return azure_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The server had an error.",
            );
        }
    };
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "routed");
    let mut response = match answer.body {
        AnswerBody::Full(bytes) => (answer.status, bytes).into_response(),
        AnswerBody::Stream(stream) => (answer.status, Body::from_stream(stream)).into_response(),
    };
    response.headers_mut().extend(answer.headers);
    if state.expose_member {
        if let Some(member) = answer.member.and_then(|m| HeaderValue::from_str(&m).ok()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-bulkhead-deployment"), member);
        }
    }
    response
}
