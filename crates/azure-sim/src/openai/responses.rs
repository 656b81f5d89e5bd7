//! The responses API (`/openai/v1/responses` and `/openai/responses?api-version=...`):
//! create, get and delete. It is stateful: a response lives on the resource that created it,
//! so getting it, deleting it or continuing from it (`previous_response_id`) through another
//! resource fails exactly as it would on Azure. Streaming is not emulated (400).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::auth::{actions, authenticate, DataAction};
use super::handlers::{
    apply_faults, charge, check_api_version, find_deployment, new_id, openai_resource, parse_body,
    FaultOutcome,
};
use super::textgen;
use super::ModelKind;
use crate::common::{json_response_body, AzureError, ReqCtx};
use crate::state::AppState;

/// Responses kept per resource; the oldest are forgotten first.
const MAX_STORED_RESPONSES: usize = 10_000;

struct Stored {
    /// The response object as returned.
    object: Value,
    /// The conversation up to and including this response's output, as chat messages.
    conversation: Vec<Value>,
}

/// The responses of one resource.
#[derive(Default)]
pub struct ResponseStore {
    inner: parking_lot::Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    by_id: HashMap<String, Stored>,
    order: VecDeque<String>,
}

impl ResponseStore {
    fn insert(&self, id: String, stored: Stored) {
        let mut inner = self.inner.lock();
        if inner.order.len() >= MAX_STORED_RESPONSES {
            if let Some(oldest) = inner.order.pop_front() {
                inner.by_id.remove(&oldest);
            }
        }
        inner.order.push_back(id.clone());
        inner.by_id.insert(id, stored);
    }

    fn get(&self, id: &str) -> Option<(Value, Vec<Value>)> {
        let inner = self.inner.lock();
        inner
            .by_id
            .get(id)
            .map(|s| (s.object.clone(), s.conversation.clone()))
    }

    fn remove(&self, id: &str) -> bool {
        let mut inner = self.inner.lock();
        let removed = inner.by_id.remove(id).is_some();
        if removed {
            inner.order.retain(|i| i != id);
        }
        removed
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.by_id.clear();
        inner.order.clear();
    }

    /// Number of stored responses.
    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn openai_style_error(
    status: StatusCode,
    message: String,
    param: Option<&str>,
    code: &str,
) -> Response {
    AzureError {
        status,
        body: json!({"error": {
            "code": code,
            "message": message,
            "param": param,
            "type": "invalid_request_error",
        }}),
        headers: Vec::new(),
    }
    .into_response()
}

fn not_found(id: &str) -> Response {
    openai_style_error(
        StatusCode::NOT_FOUND,
        format!("Response with id '{id}' not found."),
        None,
        "not_found",
    )
}

/// The input of a create request as chat messages.
fn input_messages(body: &Map<String, Value>) -> Result<Vec<Value>, AzureError> {
    let mut messages = Vec::new();
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match body.get("input") {
        None | Some(Value::Null) => {
            return Err(AzureError::bad_request(
                "Missing required parameter: 'input'.",
                Some("input"),
            ))
        }
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for item in items {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let content = match item.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => item.to_string(),
                };
                messages.push(json!({"role": role, "content": content}));
            }
        }
        Some(_) => {
            return Err(AzureError::bad_request(
                "Invalid type for 'input': expected a string or an array of input items.",
                Some("input"),
            ))
        }
    }
    Ok(messages)
}

async fn create(
    state: AppState,
    ctx: ReqCtx,
    versioned: bool,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match create_inner(&state, &ctx, versioned, query.as_deref(), &headers, &body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn create_inner(
    state: &AppState,
    ctx: &ReqCtx,
    versioned: bool,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Response> {
    let e = IntoResponse::into_response;
    let resource = openai_resource(ctx).map_err(e)?;
    let api_version = if versioned {
        check_api_version(state, query).map_err(e)?
    } else {
        "v1".to_owned()
    };
    authenticate(state, &resource, headers, actions::RESPONSES_CREATE).map_err(e)?;
    let body = parse_body(body).map_err(e)?;
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return Err(
            AzureError::bad_request("Missing required parameter: 'model'.", Some("model"))
                .into_response(),
        );
    };
    let deployment = find_deployment(&resource, model).map_err(e)?;
    if deployment.model.kind != ModelKind::Chat {
        return Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            "OperationNotSupported",
            format!(
                "The responses operation does not work with the specified model, {}.",
                deployment.config.model_name()
            ),
        )
        .into_response());
    }
    super::validate::responses(&body).map_err(e)?;
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(AzureError::bad_request(
            "Streaming of the responses API is not supported by azure-sim.",
            Some("stream"),
        )
        .into_response());
    }
    let previous_id = body.get("previous_response_id").and_then(Value::as_str);
    let mut conversation = match previous_id {
        None => Vec::new(),
        Some(id) => match resource.responses.get(id) {
            Some((_, conversation)) => conversation,
            None => {
                return Err(openai_style_error(
                    StatusCode::BAD_REQUEST,
                    format!("Previous response with id '{id}' not found."),
                    Some("previous_response_id"),
                    "previous_response_not_found",
                ))
            }
        },
    };
    conversation.extend(input_messages(&body).map_err(e)?);
    let limit = match body.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 16 => Some(n),
            _ => return Err(AzureError::bad_request(
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16.",
                Some("max_output_tokens"),
            )
            .into_response()),
        },
    };
    let input_tokens = token_count::count_chat_messages(
        deployment.model.encoding,
        &conversation,
        body.get("tools"),
        None,
    )
    .map_err(|error| e(super::handlers::count_error(error)))?
    .total;
    match apply_faults(
        state,
        ctx,
        &resource.config.name,
        &deployment.config.name,
        false,
    )
    .await
    {
        FaultOutcome::Proceed { .. } => {}
        FaultOutcome::Respond(response) => return Err(response),
    }
    let estimate = input_tokens + limit.unwrap_or(deployment.config.default_max_tokens);
    let limit_headers = charge(
        state,
        &deployment,
        "Responses_Create",
        &api_version,
        estimate,
    )
    .map_err(e)?;
    let seed = textgen::hash_json_items(&conversation);
    let generated = textgen::generate(seed, limit);
    let text = generated.text();
    let ttft = Duration::from_millis(deployment.config.ttft_ms);
    let per_token = Duration::from_millis(deployment.config.per_token_ms);
    let wait = ttft + per_token * u32::try_from(generated.tokens().saturating_sub(1)).unwrap_or(0);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let id = new_id("resp_");
    let output_tokens = generated.tokens();
    let object = json!({
        "id": id,
        "object": "response",
        "created_at": chrono::Utc::now().timestamp(),
        "status": if generated.truncated { "incomplete" } else { "completed" },
        "error": null,
        "incomplete_details": if generated.truncated { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": body.get("instructions").cloned().unwrap_or(Value::Null),
        "max_output_tokens": limit,
        "model": deployment.config.model_name(),
        "output": [{
            "type": "message",
            "id": new_id("msg_"),
            "status": if generated.truncated { "incomplete" } else { "completed" },
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }],
        "parallel_tool_calls": true,
        "previous_response_id": previous_id,
        "reasoning": {"effort": null, "summary": null},
        "store": body.get("store").and_then(Value::as_bool).unwrap_or(true),
        "temperature": body.get("temperature").cloned().unwrap_or(json!(1.0)),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p").cloned().unwrap_or(json!(1.0)),
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": null,
        "metadata": body.get("metadata").cloned().unwrap_or(json!({})),
    });
    conversation.push(json!({"role": "assistant", "content": text}));
    if body.get("store").and_then(Value::as_bool) != Some(false) {
        resource.responses.insert(
            id.clone(),
            Stored {
                object: object.clone(),
                conversation,
            },
        );
    }
    let mut response = json_response_body(&object);
    for (name, value) in limit_headers {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

/// Authentication and (for the versioned path) api-version for get and delete.
fn check_read(
    state: &AppState,
    ctx: &ReqCtx,
    versioned: bool,
    query: Option<&str>,
    headers: &HeaderMap,
    action: DataAction,
) -> Result<std::sync::Arc<super::OpenAiResource>, AzureError> {
    let resource = openai_resource(ctx)?;
    if versioned {
        check_api_version(state, query)?;
    }
    authenticate(state, &resource, headers, action)?;
    Ok(resource)
}

async fn get(
    state: AppState,
    ctx: ReqCtx,
    versioned: bool,
    id: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Response {
    let resource = match check_read(
        &state,
        &ctx,
        versioned,
        query.as_deref(),
        &headers,
        actions::RESPONSES_READ,
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match resource.responses.get(&id) {
        Some((object, _)) => json_response_body(&object),
        None => not_found(&id),
    }
}

async fn delete(
    state: AppState,
    ctx: ReqCtx,
    versioned: bool,
    id: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Response {
    let resource = match check_read(
        &state,
        &ctx,
        versioned,
        query.as_deref(),
        &headers,
        actions::RESPONSES_DELETE,
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if resource.responses.remove(&id) {
        json_response_body(&json!({"id": id, "object": "response.deleted", "deleted": true}))
    } else {
        not_found(&id)
    }
}

pub async fn create_v1(
    State(state): State<AppState>,
    Extension(ctx): Extension<ReqCtx>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, ctx, false, query, headers, body).await
}

pub async fn create_versioned(
    State(state): State<AppState>,
    Extension(ctx): Extension<ReqCtx>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, ctx, true, query, headers, body).await
}

pub async fn get_v1(
    State(state): State<AppState>,
    Extension(ctx): Extension<ReqCtx>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    get(state, ctx, false, id, query, headers).await
}

pub async fn get_versioned(
    State(state): State<AppState>,
    Extension(ctx): Extension<ReqCtx>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    get(state, ctx, true, id, query, headers).await
}

pub async fn delete_v1(
    State(state): State<AppState>,
    Extension(ctx): Extension<ReqCtx>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    delete(state, ctx, false, id, query, headers).await
}

pub async fn delete_versioned(
    State(state): State<AppState>,
    Extension(ctx): Extension<ReqCtx>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    delete(state, ctx, true, id, query, headers).await
}
