//! Chat completions, completions and embeddings, on both the deployment paths and the v1
//! paths.
//!
//! Every request goes through the same steps, in Azure's order: api-version (deployment
//! paths only), key, body, deployment, operation/model compatibility, parameter validation,
//! injected faults, rate limit, then the deterministic answer with the latency model applied.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::auth::{actions, DataAction};
use super::ratelimit::{Admission, Limit};
use super::sse::{self, Frame};
use super::textgen::{self, fnv1a, Generated, Rng};
use super::{wire, Deployment, ModelKind, OpenAiResource};
use crate::common::{json_response_body, AzureError, ReqCtx};
use crate::faults::{reset_connection, status_response, FaultAction};
use crate::state::{AppState, Resource};
use token_count::{CountError, Encoding};

/// The data-plane operation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Operation {
    /// The RBAC data action and Azure's name of the operation, for token callers.
    fn data_action(self, addressing: &Addressing) -> DataAction {
        let v1 = matches!(addressing, Addressing::V1);
        match (self, v1) {
            (Operation::ChatCompletions, false) => actions::CHAT,
            (Operation::ChatCompletions, true) => actions::CHAT_V1,
            (Operation::Completions, false) => actions::COMPLETIONS,
            (Operation::Completions, true) => actions::COMPLETIONS_V1,
            (Operation::Embeddings, false) => actions::EMBEDDINGS,
            (Operation::Embeddings, true) => actions::EMBEDDINGS_V1,
        }
    }

    /// Azure's operation id, used in 429 messages.
    fn operation_id(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "ChatCompletions_Create",
            Operation::Completions => "Completions_Create",
            Operation::Embeddings => "Embeddings_Create",
        }
    }

    /// The name used in "operation does not work with the specified model" errors.
    fn short_name(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chatCompletion",
            Operation::Completions => "completion",
            Operation::Embeddings => "embeddings",
        }
    }

    fn supported_by(self, kind: ModelKind) -> bool {
        matches!(
            (self, kind),
            (Operation::ChatCompletions, ModelKind::Chat)
                | (
                    Operation::Completions,
                    ModelKind::Chat | ModelKind::Completion
                )
                | (Operation::Embeddings, ModelKind::Embedding)
        )
    }
}

/// Where the deployment name comes from.
enum Addressing {
    /// `/openai/deployments/{d}/...`: api-version required.
    Path(String),
    /// `/openai/v1/...`: the deployment is the body's `model`; api-version optional.
    V1,
}

macro_rules! operation_handlers {
    ($($deployment_fn:ident, $v1_fn:ident => $op:expr;)*) => {$(
        /// Handler for the operation on `/openai/deployments/{d}/...`.
        pub async fn $deployment_fn(
            State(state): State<AppState>,
            Extension(ctx): Extension<ReqCtx>,
            Path(deployment): Path<String>,
            RawQuery(query): RawQuery,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            handle(state, ctx, $op, Addressing::Path(deployment), query, headers, body).await
        }

        /// Handler for the operation on `/openai/v1/...`.
        pub async fn $v1_fn(
            State(state): State<AppState>,
            Extension(ctx): Extension<ReqCtx>,
            RawQuery(query): RawQuery,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            handle(state, ctx, $op, Addressing::V1, query, headers, body).await
        }
    )*};
}

operation_handlers! {
    chat_completions, chat_completions_v1 => Operation::ChatCompletions;
    completions, completions_v1 => Operation::Completions;
    embeddings_handler, embeddings_v1 => Operation::Embeddings;
}

/// Azure's answer to a path it does not serve.
pub async fn not_found() -> Response {
    AzureError::new(StatusCode::NOT_FOUND, "404", "Resource not found").into_response()
}

/// `GET /openai/v1/models`: the resource's deployments as OpenAI model objects.
pub async fn list_models_v1(
    State(state): State<AppState>,
    Extension(ctx): Extension<ReqCtx>,
    headers: HeaderMap,
) -> Response {
    let resource = match openai_resource(&ctx) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = authenticate(&state, &resource, &headers, actions::LIST_MODELS_V1) {
        return e.into_response();
    }
    let data: Vec<Value> = resource
        .deployments()
        .iter()
        .map(|d| {
            json!({"id": d.config.name, "object": "model", "created": 0, "owned_by": "system",
                   "model": d.config.model_name()})
        })
        .collect();
    json_response_body(&json!({"object": "list", "data": data}))
}

/// `GET /openai/deployments?api-version=...`: the resource's deployments.
pub async fn list_deployments(
    State(state): State<AppState>,
    Extension(ctx): Extension<ReqCtx>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let resource = match openai_resource(&ctx) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = check_api_version(&state, query.as_deref()) {
        return e.into_response();
    }
    if let Err(e) = authenticate(&state, &resource, &headers, actions::LIST_DEPLOYMENTS) {
        return e.into_response();
    }
    let data: Vec<Value> = resource
        .deployments()
        .iter()
        .map(|d| {
            json!({"id": d.config.name, "object": "deployment", "model": d.config.model_name(),
                   "status": "succeeded", "owner": "organization-owner"})
        })
        .collect();
    json_response_body(&json!({"object": "list", "data": data}))
}

pub(crate) use super::auth::authenticate;

pub(crate) fn openai_resource(ctx: &ReqCtx) -> Result<Arc<OpenAiResource>, AzureError> {
    match &ctx.resource {
        Resource::OpenAi(r) => Ok(Arc::clone(r)),
        Resource::Search(_) => Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "404",
            "Resource not found",
        )),
    }
}

/// The value of `api-version` in a raw query string.
pub(crate) fn api_version(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("api-version="))
        .filter(|v| !v.is_empty())
}

/// Requires a supported `api-version`.
pub(crate) fn check_api_version(
    state: &AppState,
    query: Option<&str>,
) -> Result<String, AzureError> {
    let Some(version) = api_version(query) else {
        return Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let supported = if state.openai_api_versions.is_empty() {
        looks_like_api_version(version)
    } else {
        state.openai_api_versions.iter().any(|v| v == version)
    };
    if supported {
        Ok(version.to_owned())
    } else {
        Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "API version not supported",
        ))
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DD-preview`.
fn looks_like_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Parses a JSON object body (400 in Azure's words otherwise).
pub(crate) fn parse_body(body: &Bytes) -> Result<Map<String, Value>, AzureError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AzureError::bad_request(
            "The request body must be a JSON object.",
            None,
        )),
        Err(_) => Err(AzureError::bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            None,
        )),
    }
}

/// Finds a deployment (404 `DeploymentNotFound` otherwise).
pub(crate) fn find_deployment(
    resource: &OpenAiResource,
    name: &str,
) -> Result<Arc<Deployment>, AzureError> {
    resource.deployment(name).ok_or_else(|| {
        AzureError::new(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        )
    })
}

/// Reads an optional positive integer parameter.
fn positive_int(body: &Map<String, Value>, name: &str) -> Result<Option<u64>, AzureError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(AzureError::bad_request(
                format!(
                    "Invalid value for '{name}': expected an integer greater than or equal to 1."
                ),
                Some(name),
            )),
        },
    }
}

fn bool_param(body: &Map<String, Value>, name: &str) -> Result<bool, AzureError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(AzureError::bad_request(
            format!("Invalid type for '{name}': expected a boolean."),
            Some(name),
        )),
    }
}

/// Validated parameters of a generating request (chat or completions).
struct Generation {
    /// Prompt tokens for the whole request.
    prompt_tokens: u64,
    /// Per-prompt seeds (one prompt for chat; one per prompt for completions).
    prompts: Vec<PromptSeed>,
    n: u64,
    /// The completion cap the request set (`max_completion_tokens` or `max_tokens`).
    limit: Option<u64>,
    /// Completions' `best_of` (charged in the estimate).
    best_of: u64,
    stream: bool,
    include_usage: bool,
    /// Completions' `echo`.
    echo: bool,
}

struct PromptSeed {
    seed: u64,
    /// The prompt text, for `echo`.
    text: String,
}

impl Generation {
    /// The rate-limit estimate: (prompt + completion budget) times max(n, best_of).
    fn estimate(&self, default_max_tokens: u64) -> u64 {
        let budget = self.limit.unwrap_or(default_max_tokens);
        self.prompt_tokens
            .saturating_add(budget.saturating_mul(self.prompts.len() as u64))
            .saturating_mul(self.n.max(self.best_of))
    }
}

/// Common parameters of chat and completions.
fn common_generation_params(
    body: &Map<String, Value>,
    deployment: &Deployment,
) -> Result<(u64, Option<u64>, bool, bool), AzureError> {
    let n = positive_int(body, "n")?.unwrap_or(1);
    if n > 128 {
        return Err(AzureError::bad_request(
            format!("{n} is greater than the maximum of 128 - 'n'"),
            Some("n"),
        ));
    }
    let max_tokens = positive_int(body, "max_tokens")?;
    if max_tokens.is_some() && deployment.model.reasoning {
        return Err(AzureError {
            status: StatusCode::BAD_REQUEST,
            body: json!({"error": {
                "code": "unsupported_parameter",
                "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                "param": "max_tokens",
                "type": "invalid_request_error",
            }}),
            headers: Vec::new(),
        });
    }
    let limit = positive_int(body, "max_completion_tokens")?.or(max_tokens);
    let stream = bool_param(body, "stream")?;
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(options) => {
            if !stream {
                return Err(AzureError::bad_request(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    Some("stream_options"),
                ));
            }
            options
                .get("include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        }
    };
    Ok((n, limit, stream, include_usage))
}

const ROLES: &[&str] = &[
    "system",
    "assistant",
    "user",
    "function",
    "tool",
    "developer",
];

fn chat_generation(
    body: &Map<String, Value>,
    deployment: &Deployment,
) -> Result<Generation, AzureError> {
    let messages = match body.get("messages") {
        None | Some(Value::Null) => {
            return Err(AzureError::bad_request(
                "'messages' is a required property",
                Some("messages"),
            ))
        }
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(AzureError::bad_request(
                "[] is too short - 'messages'",
                Some("messages"),
            ))
        }
        Some(Value::Array(m)) => m,
        Some(_) => {
            return Err(AzureError::bad_request(
                "Invalid type for 'messages': expected an array of message objects.",
                Some("messages"),
            ))
        }
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        match role {
            Some(r) if ROLES.contains(&r) => {}
            Some(r) => {
                return Err(AzureError::bad_request(
                    format!("Invalid value: '{r}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."),
                    Some(&format!("messages[{i}].role")),
                ))
            }
            None => {
                return Err(AzureError::bad_request(
                    format!("Missing required parameter: 'messages[{i}].role'."),
                    Some(&format!("messages[{i}].role")),
                ))
            }
        }
    }
    let (n, limit, stream, include_usage) = common_generation_params(body, deployment)?;
    let prompt_tokens = token_count::count_chat_messages(
        deployment.model.encoding,
        messages,
        body.get("tools"),
        body.get("functions"),
    )
    .map_err(count_error)?
    .total;
    let mut seed = textgen::hash_json_items(messages);
    if let Some(s) = body.get("seed").and_then(Value::as_i64) {
        seed ^= s as u64;
    }
    Ok(Generation {
        prompt_tokens,
        prompts: vec![PromptSeed {
            seed,
            text: String::new(),
        }],
        n,
        limit,
        best_of: 1,
        stream,
        include_usage,
        echo: false,
    })
}

/// A body the counter refuses, as the service's 400.
pub(crate) fn count_error(error: CountError) -> AzureError {
    AzureError::bad_request(error.to_string(), error.param())
}

/// Default `max_tokens` of the legacy completions API.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u64 = 16;

fn completion_generation(
    body: &Map<String, Value>,
    deployment: &Deployment,
) -> Result<Generation, AzureError> {
    let encoding = deployment.model.encoding;
    let prompts: Vec<(String, u64)> = match body.get("prompt") {
        None | Some(Value::Null) => {
            return Err(AzureError::bad_request(
                "'prompt' is a required property",
                Some("prompt"),
            ))
        }
        Some(Value::String(s)) => vec![(s.clone(), encoding.count(s))],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| (s.to_owned(), encoding.count(s)))
            .collect(),
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
            vec![(Value::Array(items.clone()).to_string(), items.len() as u64)]
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|t| {
                let len = t.as_array().map_or(0, Vec::len) as u64;
                (t.to_string(), len)
            })
            .collect(),
        Some(_) => {
            return Err(AzureError::bad_request(
                "Invalid type for 'prompt': expected a string, an array of strings or an array of token arrays.",
                Some("prompt"),
            ))
        }
    };
    if prompts.is_empty() {
        return Err(AzureError::bad_request(
            "[] is too short - 'prompt'",
            Some("prompt"),
        ));
    }
    let (n, limit, stream, include_usage) = common_generation_params(body, deployment)?;
    let best_of = positive_int(body, "best_of")?.unwrap_or(n);
    if best_of < n {
        return Err(AzureError::bad_request(
            "best_of must be greater than or equal to n.",
            Some("best_of"),
        ));
    }
    let echo = bool_param(body, "echo")?;
    Ok(Generation {
        prompt_tokens: prompts.iter().map(|(_, t)| t).sum(),
        prompts: prompts
            .into_iter()
            .map(|(text, _)| PromptSeed {
                seed: fnv1a(text.as_bytes()),
                text,
            })
            .collect(),
        n,
        limit: Some(limit.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS)),
        best_of,
        stream,
        include_usage,
        echo,
    })
}

/// Everything a validated request needs from the first steps.
struct Admitted {
    resource: Arc<OpenAiResource>,
    deployment: Arc<Deployment>,
    api_version: String,
    body: Map<String, Value>,
}

/// The steps every data-plane request takes before operation-specific validation.
fn admit_request(
    state: &AppState,
    ctx: &ReqCtx,
    op: Operation,
    addressing: Addressing,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Admitted, AzureError> {
    let resource = openai_resource(ctx)?;
    let api_version = match addressing {
        Addressing::Path(_) => check_api_version(state, query)?,
        Addressing::V1 => api_version(query).unwrap_or("v1").to_owned(),
    };
    authenticate(state, &resource, headers, op.data_action(&addressing))?;
    let body = parse_body(body)?;
    let name = match &addressing {
        Addressing::Path(name) => name.as_str(),
        Addressing::V1 => match body.get("model") {
            Some(Value::String(model)) if !model.is_empty() => model.as_str(),
            _ => {
                return Err(AzureError::bad_request(
                    "Missing required parameter: 'model'.",
                    Some("model"),
                ))
            }
        },
    };
    let deployment = find_deployment(&resource, name)?;
    if !op.supported_by(deployment.model.kind) {
        return Err(AzureError::new(
            StatusCode::BAD_REQUEST,
            "OperationNotSupported",
            format!(
                "The {} operation does not work with the specified model, {}. Please choose different model and try again. You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.",
                op.short_name(),
                deployment.config.model_name()
            ),
        ));
    }
    super::validate::parameters(op, &body)?;
    Ok(Admitted {
        resource,
        deployment,
        api_version,
        body,
    })
}

/// What injected faults decided for a request that passed validation.
pub(crate) enum FaultOutcome {
    Proceed { cut_after: Option<usize> },
    Respond(Response),
}

/// Applies faults for `(resource, deployment)`; sleeps for injected delays.
pub(crate) async fn apply_faults(
    state: &AppState,
    ctx: &ReqCtx,
    resource: &str,
    deployment: &str,
    streaming: bool,
) -> FaultOutcome {
    let injected = state.faults.take(resource, Some(deployment), streaming);
    if !injected.delay.is_zero() {
        tokio::time::sleep(injected.delay).await;
    }
    match injected.terminal {
        None | Some(FaultAction::Delay { .. }) => FaultOutcome::Proceed { cut_after: None },
        Some(FaultAction::CutStream { after_chunks }) => FaultOutcome::Proceed {
            cut_after: Some(after_chunks),
        },
        Some(FaultAction::Status {
            status,
            retry_after,
            retry_after_ms,
            headers,
            body,
        }) => FaultOutcome::Respond(status_response(
            status,
            retry_after,
            retry_after_ms,
            &headers,
            body.as_ref(),
        )),
        Some(FaultAction::Reset) => {
            FaultOutcome::Respond(reset_connection(ctx.conn.as_ref()).await)
        }
    }
}

/// Rate-limit headers to add to a successful answer.
pub(crate) type LimitHeaders = Vec<(HeaderName, HeaderValue)>;

/// Charges the estimate; a 429 in Azure's words when refused.
pub(crate) fn charge(
    state: &AppState,
    deployment: &Deployment,
    op_id: &str,
    api_version: &str,
    estimate: u64,
) -> Result<LimitHeaders, AzureError> {
    match deployment
        .limiter
        .admit(state.clock.now_ms(), &state.rate_limits, estimate)
    {
        Admission::Unlimited => Ok(Vec::new()),
        Admission::Admitted {
            remaining_tokens,
            remaining_requests,
        } => {
            let mut headers = Vec::with_capacity(2);
            if deployment.config.tpm.is_some() {
                headers.push((
                    HeaderName::from_static("x-ratelimit-remaining-tokens"),
                    HeaderValue::from(remaining_tokens),
                ));
            }
            if remaining_requests != u64::MAX {
                headers.push((
                    HeaderName::from_static("x-ratelimit-remaining-requests"),
                    HeaderValue::from(remaining_requests),
                ));
            }
            Ok(headers)
        }
        Admission::Refused {
            limit,
            retry_after_ms,
        } => {
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            let what = match limit {
                Limit::Tokens => "token rate limit",
                Limit::Requests => "call rate limit",
            };
            let message = format!(
                "Requests to the {op_id} Operation under Azure OpenAI API version {api_version} have exceeded {what} of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
            );
            let mut error = AzureError::new(StatusCode::TOO_MANY_REQUESTS, "429", message)
                .with_header(http::header::RETRY_AFTER, seconds)
                .with_header(HeaderName::from_static("retry-after-ms"), retry_after_ms)
                .with_header(HeaderName::from_static("x-ratelimit-remaining-requests"), 0)
                .with_header(HeaderName::from_static("x-ratelimit-remaining-tokens"), 0);
            if limit == Limit::Tokens {
                error = error.with_header(
                    HeaderName::from_static("x-rate-limit-reset-tokens"),
                    seconds,
                );
            }
            Err(error)
        }
    }
}

async fn handle(
    state: AppState,
    ctx: ReqCtx,
    op: Operation,
    addressing: Addressing,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = match admit_request(
        &state,
        &ctx,
        op,
        addressing,
        query.as_deref(),
        &headers,
        &body,
    ) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let result = match op {
        Operation::ChatCompletions | Operation::Completions => {
            generate(&state, &ctx, op, admitted, body.len()).await
        }
        Operation::Embeddings => embeddings(&state, &ctx, admitted, body.len()).await,
    };
    result.unwrap_or_else(|response| response)
}

/// Sleeps for a latency model duration (no-op when zero).
async fn latency(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn with_headers(mut response: Response, extra: LimitHeaders) -> Response {
    for (name, value) in extra {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A random id with a prefix (`chatcmpl-...`).
pub(crate) fn new_id(prefix: &str) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut id = String::with_capacity(prefix.len() + 29);
    id.push_str(prefix);
    for _ in 0..29 {
        id.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    id
}

/// A stable `system_fingerprint` per model.
fn system_fingerprint(model: &str) -> String {
    format!("fp_{:010x}", fnv1a(model.as_bytes()) & 0xff_ffff_ffff)
}

/// One generated choice.
struct Choice {
    index: usize,
    generated: Generated,
    /// Text before the generated part (completions' `echo`).
    prefix: String,
}

impl Choice {
    fn finish_reason(&self) -> &'static str {
        if self.generated.truncated {
            "length"
        } else {
            "stop"
        }
    }
}

/// Chat completions and completions.
/// Bodies larger than this are counted on the blocking pool.
const OFFLOAD_BYTES: usize = 16 * 1024;

async fn generate(
    state: &AppState,
    ctx: &ReqCtx,
    op: Operation,
    admitted: Admitted,
    admitted_len: usize,
) -> Result<Response, Response> {
    let Admitted {
        resource,
        deployment,
        api_version,
        body,
    } = admitted;
    // Counting a large prompt takes milliseconds: off the async workers (which the gateway
    // shares when the emulator runs in its process).
    let generation = {
        let deployment = Arc::clone(&deployment);
        let work = move || match op {
            Operation::ChatCompletions => chat_generation(&body, &deployment),
            _ => completion_generation(&body, &deployment),
        };
        if admitted_len > OFFLOAD_BYTES {
            tokio::task::spawn_blocking(work).await.map_err(|_| {
                AzureError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "The server had an error while processing your request.",
                )
                .into_response()
            })?
        } else {
            work()
        }
    };
    let generation = generation.map_err(IntoResponse::into_response)?;
    let cut_after = match apply_faults(
        state,
        ctx,
        &resource.config.name,
        &deployment.config.name,
        generation.stream,
    )
    .await
    {
        FaultOutcome::Proceed { cut_after } => cut_after,
        FaultOutcome::Respond(response) => return Err(response),
    };
    let limit_headers = charge(
        state,
        &deployment,
        op.operation_id(),
        &api_version,
        generation.estimate(deployment.config.default_max_tokens),
    )
    .map_err(IntoResponse::into_response)?;

    let mut choices = Vec::new();
    for prompt in &generation.prompts {
        for i in 0..generation.n {
            let seed = prompt.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            choices.push(Choice {
                index: choices.len(),
                generated: textgen::generate(seed, generation.limit),
                prefix: if generation.echo {
                    prompt.text.clone()
                } else {
                    String::new()
                },
            });
        }
    }
    let completion_tokens: u64 = choices.iter().map(|c| c.generated.tokens()).sum();
    let longest = choices
        .iter()
        .map(|c| c.generated.tokens())
        .max()
        .unwrap_or(0);
    let ttft = Duration::from_millis(deployment.config.ttft_ms);
    let per_token = Duration::from_millis(deployment.config.per_token_ms);
    let model = deployment.reported_model();
    let id = new_id(match op {
        Operation::ChatCompletions => "chatcmpl-",
        _ => "cmpl-",
    });
    let created = chrono::Utc::now().timestamp();
    let usage = wire::Usage::new(generation.prompt_tokens, completion_tokens);

    if generation.stream {
        let frames = match op {
            Operation::ChatCompletions => chat_frames(
                &id,
                created,
                &model,
                &choices,
                &generation,
                usage,
                ttft,
                per_token,
            ),
            _ => completion_frames(
                &id,
                created,
                &model,
                &choices,
                &generation,
                usage,
                ttft,
                per_token,
            ),
        };
        return Ok(with_headers(
            sse::response(frames, cut_after),
            limit_headers,
        ));
    }

    latency(ttft + per_token * u32::try_from(longest.saturating_sub(1)).unwrap_or(u32::MAX)).await;
    let fingerprint = system_fingerprint(&model);
    let response = match op {
        Operation::ChatCompletions => wire::json_response(&wire::ChatCompletion {
            choices: choices
                .iter()
                .map(|c| wire::ChatChoice {
                    content_filter_results: wire::SAFE,
                    finish_reason: c.finish_reason(),
                    index: c.index,
                    logprobs: None,
                    message: wire::AssistantMessage {
                        annotations: [],
                        content: c.generated.text(),
                        refusal: None,
                        role: "assistant",
                    },
                })
                .collect(),
            created,
            id: &id,
            model: &model,
            object: "chat.completion",
            prompt_filter_results: wire::prompt_filter_results(1),
            system_fingerprint: &fingerprint,
            usage,
        }),
        _ => wire::json_response(&wire::TextCompletion {
            choices: choices
                .iter()
                .map(|c| wire::TextChoice {
                    content_filter_results: wire::SAFE,
                    finish_reason: c.finish_reason(),
                    index: c.index,
                    logprobs: None,
                    text: format!("{}{}", c.prefix, c.generated.text()),
                })
                .collect(),
            created,
            id: &id,
            model: &model,
            object: "text_completion",
            prompt_filter_results: wire::prompt_filter_results(generation.prompts.len()),
            system_fingerprint: &fingerprint,
            usage,
        }),
    };
    Ok(with_headers(response, limit_headers))
}

/// The `usage` member of every chunk but the last.
fn no_usage(include_usage: bool) -> wire::ChunkUsage {
    if include_usage {
        wire::ChunkUsage::Null
    } else {
        wire::ChunkUsage::Absent
    }
}

/// Azure's opening chunk: no choices, the prompt filter results, blank id and model.
fn opening_frame<C: serde::Serialize>(prompts: usize, include_usage: bool) -> Frame {
    Frame::json(
        Duration::ZERO,
        &wire::Chunk::<C> {
            choices: Vec::new(),
            created: 0,
            id: "",
            model: "",
            object: "",
            prompt_filter_results: Some(wire::prompt_filter_results(prompts)),
            system_fingerprint: None,
            usage: no_usage(include_usage),
        },
    )
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one answer, kept apart for clarity"
)]
fn chat_frames(
    id: &str,
    created: i64,
    model: &str,
    choices: &[Choice],
    generation: &Generation,
    usage: wire::Usage,
    ttft: Duration,
    per_token: Duration,
) -> Vec<Frame> {
    let include_usage = generation.include_usage;
    let fingerprint = system_fingerprint(model);
    let frame =
        |delay: Duration, choice: Option<wire::ChatChunkChoice>, usage: wire::ChunkUsage| {
            Frame::json(
                delay,
                &wire::Chunk {
                    choices: choice.into_iter().collect(),
                    created,
                    id,
                    model,
                    object: "chat.completion.chunk",
                    prompt_filter_results: None,
                    system_fingerprint: Some(&fingerprint),
                    usage,
                },
            )
        };
    let mut frames = vec![opening_frame::<wire::ChatChunkChoice>(1, include_usage)];
    for (ci, c) in choices.iter().enumerate() {
        let role = wire::ChatChunkChoice {
            content_filter_results: wire::ChunkFilter::Empty {},
            delta: wire::Delta::Role {
                content: "",
                refusal: None,
                role: "assistant",
            },
            finish_reason: None,
            index: c.index,
            logprobs: None,
        };
        let delay = if ci == 0 { ttft } else { Duration::ZERO };
        frames.push(frame(delay, Some(role), no_usage(include_usage)));
        for (ti, piece) in c.generated.pieces.iter().enumerate() {
            let delta = wire::ChatChunkChoice {
                content_filter_results: wire::ChunkFilter::Safe(wire::SAFE),
                delta: wire::Delta::Content { content: piece },
                finish_reason: None,
                index: c.index,
                logprobs: None,
            };
            let delay = if ti == 0 { Duration::ZERO } else { per_token };
            frames.push(frame(delay, Some(delta), no_usage(include_usage)));
        }
        let finish = wire::ChatChunkChoice {
            content_filter_results: wire::ChunkFilter::Empty {},
            delta: wire::Delta::Empty {},
            finish_reason: Some(c.finish_reason()),
            index: c.index,
            logprobs: None,
        };
        frames.push(frame(Duration::ZERO, Some(finish), no_usage(include_usage)));
    }
    if include_usage {
        frames.push(frame(
            Duration::ZERO,
            None,
            wire::ChunkUsage::Present(usage),
        ));
    }
    frames.push(Frame::done());
    frames
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one answer, kept apart for clarity"
)]
fn completion_frames(
    id: &str,
    created: i64,
    model: &str,
    choices: &[Choice],
    generation: &Generation,
    usage: wire::Usage,
    ttft: Duration,
    per_token: Duration,
) -> Vec<Frame> {
    let include_usage = generation.include_usage;
    let frame =
        |delay: Duration, choice: Option<wire::TextChunkChoice>, usage: wire::ChunkUsage| {
            Frame::json(
                delay,
                &wire::Chunk {
                    choices: choice.into_iter().collect(),
                    created,
                    id,
                    model,
                    object: "text_completion",
                    prompt_filter_results: None,
                    system_fingerprint: None,
                    usage,
                },
            )
        };
    let mut frames = vec![opening_frame::<wire::TextChunkChoice>(
        generation.prompts.len(),
        include_usage,
    )];
    for (ci, c) in choices.iter().enumerate() {
        let prefix = (!c.prefix.is_empty()).then_some(c.prefix.as_str());
        let pieces = prefix.into_iter().chain(c.generated.pieces.iter().copied());
        for (ti, piece) in pieces.enumerate() {
            let delay = match (ci, ti) {
                (0, 0) => ttft,
                (_, 0) => Duration::ZERO,
                _ => per_token,
            };
            let delta = wire::TextChunkChoice {
                content_filter_results: wire::ChunkFilter::Safe(wire::SAFE),
                finish_reason: None,
                index: c.index,
                logprobs: None,
                text: piece,
            };
            frames.push(frame(delay, Some(delta), no_usage(include_usage)));
        }
        let finish = wire::TextChunkChoice {
            content_filter_results: wire::ChunkFilter::Empty {},
            finish_reason: Some(c.finish_reason()),
            index: c.index,
            logprobs: None,
            text: "",
        };
        frames.push(frame(Duration::ZERO, Some(finish), no_usage(include_usage)));
    }
    if include_usage {
        frames.push(frame(
            Duration::ZERO,
            None,
            wire::ChunkUsage::Present(usage),
        ));
    }
    frames.push(Frame::done());
    frames
}

/// One embedding input: its text (for the vector) and its token count.
enum EmbeddingInput {
    Text(String),
    Tokens(Vec<u64>),
}

fn embedding_inputs(body: &Map<String, Value>) -> Result<Vec<EmbeddingInput>, AzureError> {
    let invalid = || {
        AzureError::bad_request(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            Some("input"),
        )
    };
    let inputs = match body.get("input") {
        None | Some(Value::Null) => {
            return Err(AzureError::bad_request(
                "'input' is a required property",
                Some("input"),
            ))
        }
        Some(Value::String(s)) => vec![EmbeddingInput::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => return Err(invalid()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| EmbeddingInput::Text(s.to_owned()))
            .collect(),
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
            vec![EmbeddingInput::Tokens(
                items.iter().filter_map(Value::as_u64).collect(),
            )]
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|t| {
                EmbeddingInput::Tokens(
                    t.as_array()
                        .map(|a| a.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default(),
                )
            })
            .collect(),
        Some(_) => return Err(invalid()),
    };
    if inputs.len() > 2048 {
        return Err(AzureError::bad_request(
            "Too many inputs. The max number of inputs is 2048.",
            Some("input"),
        ));
    }
    let empty = inputs.iter().any(|i| match i {
        EmbeddingInput::Text(t) => t.is_empty(),
        EmbeddingInput::Tokens(t) => t.is_empty(),
    });
    if empty {
        return Err(invalid());
    }
    Ok(inputs)
}

/// A deterministic unit vector for `input`: the normalised sum of one pseudo-random vector
/// per lower-cased word, so texts sharing words have a higher cosine similarity (useful for
/// vector-search tests); token-array inputs are hashed as a whole.
pub fn embedding_vector(input: &str, dimensions: usize) -> Vec<f32> {
    let mut sum = vec![0f32; dimensions];
    let words: Vec<String> = input
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut add = |seed: u64| {
        let mut rng = Rng::new(seed);
        for x in sum.iter_mut() {
            // Uniform in [-1, 1).
            *x += (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        }
    };
    if words.is_empty() {
        add(fnv1a(input.as_bytes()));
    } else {
        for word in &words {
            add(fnv1a(word.as_bytes()));
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in sum.iter_mut() {
            *x /= norm;
        }
    }
    sum
}

async fn embeddings(
    state: &AppState,
    ctx: &ReqCtx,
    admitted: Admitted,
    admitted_len: usize,
) -> Result<Response, Response> {
    let Admitted {
        resource,
        deployment,
        api_version,
        body,
    } = admitted;
    let inputs = embedding_inputs(&body).map_err(IntoResponse::into_response)?;
    let native = deployment.dimensions();
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => native,
        Some(value) => {
            if !deployment.model.supports_dimensions {
                return Err(AzureError::bad_request(
                    "This model does not support specifying dimensions.",
                    Some("dimensions"),
                )
                .into_response());
            }
            match value.as_u64() {
                Some(d) if d >= 1 && d as usize <= native => d as usize,
                _ => {
                    return Err(AzureError::bad_request(
                        format!(
                            "Invalid value for 'dimensions': it must be between 1 and {native}."
                        ),
                        Some("dimensions"),
                    )
                    .into_response())
                }
            }
        }
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(AzureError::bad_request(
                format!("Invalid value for 'encoding_format': '{other}'. Supported values are: 'float' and 'base64'."),
                Some("encoding_format"),
            )
            .into_response())
        }
    };
    let encoding: Encoding = deployment.model.encoding;
    let prompt_tokens = match body.get("input") {
        Some(input) if admitted_len > OFFLOAD_BYTES => {
            let input = input.clone();
            tokio::task::spawn_blocking(move || {
                token_count::count_embeddings_input(encoding, &input)
            })
            .await
            .map_err(|_| {
                AzureError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "The server had an error while processing your request.",
                )
                .into_response()
            })?
            .map_err(|e| count_error(e).into_response())?
        }
        Some(input) => token_count::count_embeddings_input(encoding, input)
            .map_err(|e| count_error(e).into_response())?,
        None => 0,
    };
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
    let limit_headers = charge(
        state,
        &deployment,
        Operation::Embeddings.operation_id(),
        &api_version,
        prompt_tokens,
    )
    .map_err(IntoResponse::into_response)?;
    latency(Duration::from_millis(deployment.config.ttft_ms)).await;
    let data: Vec<wire::Embedding> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let text = match input {
                EmbeddingInput::Text(t) => t.clone(),
                EmbeddingInput::Tokens(t) => format!("{t:?}"),
            };
            let vector = embedding_vector(&text, dimensions);
            let embedding = if base64 {
                use base64::Engine as _;
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                wire::EmbeddingData::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                wire::EmbeddingData::Float(vector)
            };
            wire::Embedding {
                embedding,
                index,
                object: "embedding",
            }
        })
        .collect();
    let response = wire::json_response(&wire::EmbeddingList {
        data,
        model: deployment.config.model_name(),
        object: "list",
        usage: wire::EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    });
    Ok(with_headers(response, limit_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_dates_with_an_optional_preview_suffix() {
        for ok in ["2024-10-21", "2025-04-01-preview"] {
            assert!(looks_like_api_version(ok), "{ok}");
        }
        for bad in ["", "2024-10", "latest", "2024-10-21-beta", "20241021xx"] {
            assert!(!looks_like_api_version(bad), "{bad}");
        }
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors_closer_for_shared_words() {
        let a = embedding_vector("the red fox", 256);
        assert_eq!(a, embedding_vector("the red fox", 256));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        let cos = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        let near = embedding_vector("a red fox", 256);
        let far = embedding_vector("quantum tax law", 256);
        assert!(cos(&a, &near) > cos(&a, &far));
    }
}
