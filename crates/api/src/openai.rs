//! The Azure OpenAI data plane: the tenant's alias resolved by its placement into a routing
//! [`Target`], then handed to the [`OpenAiRouter`].
//!
//! An alias the tenant may not use answers exactly like an alias that does not exist
//! (404 `DeploymentNotFound`): another tenant's deployments are never revealed.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use openai_router::{AnswerBody, BodyFacts, Call, Member, Operation, Target};
use serde_json::{Map, Value};
use tenant_registry::model::OpenAiPlacement;
use tenant_registry::{Snapshot, TenantEntry};

use tracing::Instrument;

use crate::admission;
use crate::auth::{Caller, Credential};
use crate::error::ApiError;
use crate::metering::UsageRecord;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::telemetry::TraceParent;

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
            let deployment = catalog.deployments.get(reference)?;
            Some(Member {
                key: reference.to_string(),
                endpoint: resource.view.endpoint.to_string(),
                deployment: reference.deployment.to_string(),
                model: deployment.view.model.clone(),
                region: resource.view.region.to_string(),
                data_zone: resource.view.data_zone.as_ref().map(ToString::to_string),
                credential: snapshot.resource_credential(&reference.resource)?.clone(),
                priority,
                weight,
            })
        };
    let (members, rotation) = match t.openai.as_ref()? {
        OpenAiPlacement::Shared => {
            let pool = catalog.pools.get(alias)?;
            let members = pool
                .members
                .iter()
                .filter_map(|m| member_of(&m.deployment, m.priority, m.weight))
                .collect();
            (members, format!("pool:{alias}"))
        }
        OpenAiPlacement::DedicatedDeployment { models } => {
            let members = models
                .get(alias)?
                .iter()
                .filter_map(|m| member_of(&m.deployment, m.priority, m.weight))
                .collect();
            (members, format!("tenant:{}:{alias}", t.id))
        }
        OpenAiPlacement::DedicatedResource { resources } => {
            let deployment = tenant_registry::names::DeploymentName::parse(alias).ok()?;
            let members = resources
                .iter()
                .filter_map(|resource| {
                    let reference = tenant_registry::model::DeploymentRef {
                        resource: resource.clone(),
                        deployment: deployment.clone(),
                    };
                    member_of(&reference, 0, 1)
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
                // The tenant's own deployment: its name is all we know of its model.
                model: alias.to_owned(),
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

/// The model an alias reaches (its members serve one model), which picks the tokenizer and
/// the model's limits; the alias itself when nothing better is known.
fn model_of<'a>(target: &'a Target, alias: &'a str) -> &'a str {
    target.members.first().map_or(alias, |m| m.model.as_str())
}

fn deployment_not_found() -> Response {
    ApiError::DeploymentNotFound.into_response()
}

fn bad_request(message: &str) -> Response {
    ApiError::bad_request(message).into_response()
}

/// Which operation a data-plane path names (its routes are registered one by one, so this
/// only tells apart the paths that reach the same handler).
fn operation_of(uri: &axum::http::Uri) -> Operation {
    let path = uri.path();
    if path.ends_with("/chat/completions") {
        Operation::ChatCompletions
    } else if path.ends_with("/embeddings") {
        Operation::Embeddings
    } else {
        Operation::Completions
    }
}

/// `POST /openai/deployments/{alias}/chat/completions|completions|embeddings?api-version=`
#[expect(
    clippy::too_many_arguments,
    reason = "an axum handler: one argument per extractor"
)]
pub async fn deployment_call(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    trace: Option<axum::Extension<TraceParent>>,
    Path(alias): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let has_version = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.starts_with("api-version=") && p.len() > 12)
    });
    if !has_version {
        return bad_request("Missing required query parameter: api-version");
    }
    let facts = match BodyFacts::read(&body) {
        Ok(facts) => facts,
        Err(message) => return bad_request(&message),
    };
    let cache = match crate::cache::directive(&headers) {
        Ok(cache) => cache,
        Err(refused) => return refused.into_response(),
    };
    match Flow::new(caller, request_id.map(|r| r.0), alias, operation_of(&uri)) {
        Ok(flow) => {
            let flow = flow.traced(trace.map(|t| t.0)).cached(cache);
            route_to(&state, flow, body, facts).await
        }
        Err(refused) => refused.into_response(),
    }
}

/// `POST /openai/v1/chat/completions|embeddings` and `/v1/...`: the alias is `model`.
pub async fn model_call(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    trace: Option<axum::Extension<TraceParent>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let facts = match BodyFacts::read(&body) {
        Ok(facts) => facts,
        Err(message) => return bad_request(&message),
    };
    let Some(alias) = facts.model.clone() else {
        return bad_request("'model' is a required property.");
    };
    let cache = match crate::cache::directive(&headers) {
        Ok(cache) => cache,
        Err(refused) => return refused.into_response(),
    };
    match Flow::new(caller, request_id.map(|r| r.0), alias, operation_of(&uri)) {
        Ok(flow) => {
            let flow = flow.traced(trace.map(|t| t.0)).cached(cache);
            route_to(&state, flow, body, facts).await
        }
        Err(refused) => refused.into_response(),
    }
}

/// One OpenAI call from authentication to metering (pingora's `ProxyHttp::CTX`): the caller
/// with the registry view it was authenticated in, what it asks, and where that goes. Made
/// once by the handler; admission, routing and the meter read it, and nothing in it is looked
/// up twice.
struct Flow {
    caller: Caller,
    request_id: Option<RequestId>,
    /// The `traceparent` that goes upstream (see [`crate::telemetry::continue_trace`]).
    traceparent: Option<TraceParent>,
    alias: String,
    operation: Operation,
    target: Target,
    rotation: String,
    /// What the request asks of the response cache (its tenant's setting decides whether
    /// the cache is used at all).
    cache: crate::cache::Directive,
}

impl Flow {
    /// Where `alias` goes for this caller, in the view it was authenticated in; 404
    /// `DeploymentNotFound` when its placement does not reach one.
    fn new(
        caller: Caller,
        request_id: Option<RequestId>,
        alias: String,
        operation: Operation,
    ) -> Result<Self, ApiError> {
        let Some((target, rotation)) = openai_target(&caller.tenant, &caller.view, &alias) else {
            return Err(ApiError::DeploymentNotFound);
        };
        Ok(Self {
            caller,
            request_id,
            traceparent: None,
            alias,
            operation,
            target,
            rotation,
            cache: crate::cache::Directive::Use,
        })
    }

    fn traced(mut self, traceparent: Option<TraceParent>) -> Self {
        self.traceparent = traceparent;
        self
    }

    fn cached(mut self, directive: crate::cache::Directive) -> Self {
        self.cache = directive;
        self
    }

    /// The model of the deployments the alias reaches.
    fn model(&self) -> &str {
        model_of(&self.target, &self.alias)
    }

    /// The record this call is metered under; its usage is filled in when the call ends.
    fn record(&self) -> UsageRecord {
        let tenant = &self.caller.tenant.tenant;
        UsageRecord {
            tenant_id: tenant.id,
            tenant: tenant.slug.to_string(),
            key_id: match self.caller.credential {
                Credential::ApiKey { id } => Some(id),
                Credential::Token => None,
            },
            alias: self.alias.clone(),
            operation: self.operation.path(),
            usage: Default::default(),
            priced: crate::cost::Priced::Unpriced,
            cache_hit: false,
            at: chrono::Utc::now(),
        }
    }
}

/// Admits, routes and meters one call; answers it from the response cache when the tenant
/// uses it and holds the answer (see [`crate::cache`]).
async fn route_to(state: &AppState, flow: Flow, body: Bytes, facts: BodyFacts) -> Response {
    let tenant = &flow.caller.tenant.tenant;
    let operation = flow.operation;
    let model = flow.model().to_owned();
    let cache = crate::cache::Plan::new(
        state,
        tenant,
        &flow.alias,
        operation,
        &model,
        &body,
        flow.cache,
    )
    .await;
    if let Some(plan) = &cache {
        if let Some(hit) = plan.lookup(state).await {
            return answer_hit(state, &flow, &hit).await;
        }
    }
    let admitted = match admission::admit(
        state,
        &flow.caller,
        operation,
        &model,
        &flow.target,
        body,
        facts,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let remaining = admitted.remaining;
    let budget_left = admission::spending_left(admitted.spending.as_ref());
    let mut reservation = admitted.admission;
    let mut spending = admitted.spending;
    let encoding = state.tokens.encoding(&model);
    let call = Call {
        operation,
        estimated_tokens: admitted.estimate,
        prompt_tokens: admitted.prompt,
        count: Some(Arc::new(move |text: &str| encoding.count(text))),
        body: admitted.body,
        facts: admitted.facts,
        default_user: tenant.id.to_string(),
        request_id: flow
            .request_id
            .as_ref()
            .and_then(|r| r.0.to_str().ok().map(ToOwned::to_owned)),
        traceparent: flow.traceparent.as_ref().map(|t| t.0.clone()),
    };
    let sink = Arc::clone(&state.usage);
    let record = flow.record();
    let started = Instant::now();
    let tenant_labels = state.metrics_tenant_labels;
    // Set when the call ends: whether it was a complete 200 (a stream may only be cached then).
    let finished = Arc::new(std::sync::OnceLock::<bool>::new());
    let finished_ok = Arc::clone(&finished);
    let registry = Arc::clone(&state.registry);
    let on_done = Box::new(move |usage: openai_router::Usage| {
        let finished_at = chrono::Utc::now();
        let priced = crate::cost::price_call(
            &registry.snapshot().catalog,
            usage.member.as_deref(),
            tenant_registry::prices::Tokens {
                prompt: usage.prompt_tokens,
                cached: usage.cached_tokens,
                completion: usage.completion_tokens,
            },
            finished_at,
        );
        let _ = finished_ok.set(usage.status == 200 && !usage.cut);
        if let Some(reservation) = reservation.take() {
            admission::settle(reservation, &usage);
        }
        if let Some(spending) = spending.take() {
            admission::settle_spending(spending, priced, &usage);
        }
        crate::metrics::call(
            record.operation,
            &record.alias,
            usage.member.as_deref(),
            usage.status,
            usage.latency.as_secs_f64(),
        );
        crate::metrics::tokens(
            tenant_labels.then_some(record.tenant.as_str()),
            &record.alias,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            priced,
        );
        sink.record(UsageRecord {
            usage,
            priced,
            at: finished_at,
            ..record
        });
    });
    let span = tracing::info_span!(
        "route",
        alias = flow.alias,
        operation = operation.path(),
        members = flow.target.members.len()
    );
    let cut = state.lifecycle.cut_streams();
    let sent = tokio::select! {
        sent = state.openai.send(&flow.target, &flow.rotation, call, on_done).instrument(span) => sent,
        // A shutdown's grace period is over: the call is dropped (and metered as cut).
        () = cut.cancelled() => {
            return ApiError::unavailable("The gateway is shutting down. Retry the request.", None)
                .into_response();
        }
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => {
            return ApiError::Internal(anyhow::anyhow!("routing failed: {error}")).into_response()
        }
    };
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "routed");
    let storing = cache
        .as_ref()
        .filter(|plan| plan.stores() && answer.status == StatusCode::OK);
    let mut response = match (answer.body, storing) {
        (AnswerBody::Full(bytes), Some(plan)) => {
            plan.store_full(state, bytes.clone());
            (answer.status, bytes).into_response()
        }
        (AnswerBody::Full(bytes), None) => (answer.status, bytes).into_response(),
        (AnswerBody::Stream(stream), Some(plan)) => {
            let stream = plan.store_stream(state, stream, finished);
            (answer.status, Body::from_stream(stream)).into_response()
        }
        (AnswerBody::Stream(stream), None) => {
            (answer.status, Body::from_stream(stream)).into_response()
        }
    };
    response.headers_mut().extend(answer.headers);
    admission::set_remaining(response.headers_mut(), remaining);
    if let Some(left) = budget_left {
        admission::set_budget_remaining(response.headers_mut(), left);
    }
    if let Some(plan) = &cache {
        response
            .headers_mut()
            .insert(crate::cache::HEADER, plan.outcome());
    }
    if operation == Operation::Responses {
        // Internal: tells the response-id rewriting which member holds the state.
        if let Some(member) = answer
            .member
            .as_deref()
            .and_then(|m| HeaderValue::from_str(m).ok())
        {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-bulkhead-member"), member);
        }
    }
    if state.expose_member {
        if let Some(member) = answer.member.and_then(|m| HeaderValue::from_str(&m).ok()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-bulkhead-deployment"), member);
        }
    }
    response
}

/// A call answered from the cache: one request against the tenant's (and key's) request
/// limits and no tokens, metered as a cache hit with zero tokens, never reaching Azure.
async fn answer_hit(state: &AppState, flow: &Flow, hit: &response_cache::Hit) -> Response {
    let started = Instant::now();
    let remaining = match admission::admit_cache_hit(state, &flow.caller).await {
        Ok(remaining) => remaining,
        Err(refusal) => return *refusal,
    };
    let mut response = crate::cache::answer(hit);
    admission::set_remaining(response.headers_mut(), remaining);
    let usage = openai_router::Usage {
        status: 200,
        streamed: hit.entry.kind == response_cache::EntryKind::EventStream,
        latency: started.elapsed(),
        ..openai_router::Usage::default()
    };
    crate::metrics::call(
        flow.operation.path(),
        &flow.alias,
        Some(crate::metrics::CACHE_MEMBER),
        200,
        usage.latency.as_secs_f64(),
    );
    state.usage.record(UsageRecord {
        usage,
        cache_hit: true,
        // Azure was not called: nothing was spent, and the record says so (never unpriced).
        priced: crate::cost::Priced::Cost(Default::default()),
        ..flow.record()
    });
    response
}

/// A response id as tenants see it: the upstream id, the member that holds the response and
/// the tenant, sealed under the master key. Any replica can route a follow-up to the right
/// resource without a lookup, and no tenant can use (or even read) another tenant's ids.
mod response_ids {
    use base64::Engine;
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Serialize};
    use tenant_registry::MasterKey;
    use uuid::Uuid;

    const PREFIX: &str = "resp_bk";
    const CONTEXT: &str = "openai-response-id";

    #[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
    pub struct Binding {
        #[serde(rename = "t")]
        pub tenant: Uuid,
        #[serde(rename = "m")]
        pub member: String,
        #[serde(rename = "u")]
        pub upstream: String,
    }

    pub fn wrap(key: &MasterKey, binding: &Binding) -> Option<String> {
        let plain = serde_json::to_string(binding).ok()?;
        let sealed = key.seal_stable(CONTEXT, &SecretString::from(plain)).ok()?;
        Some(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    /// The binding of `id` when it is ours and belongs to `tenant`.
    pub fn unwrap(key: &MasterKey, id: &str, tenant: Uuid) -> Option<Binding> {
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id.strip_prefix(PREFIX)?)
            .ok()?;
        let plain = key.open(CONTEXT, &sealed).ok()?;
        let binding: Binding = serde_json::from_str(plain.expose_secret()).ok()?;
        (binding.tenant == tenant).then_some(binding)
    }
}

fn response_not_found(id: &str) -> Response {
    // The shape OpenAI answers for an unknown response id.
    ApiError::ResponseNotFound(id.to_owned()).into_response()
}

/// Where a response's state lives, as the member key in its binding says: a resource of the
/// catalog (`resource/deployment`), or the tenant's own endpoint (`tenant:{id}/{alias}`).
/// Azure keeps a response on the resource that created it, whichever deployment did.
#[derive(Debug, PartialEq, Eq)]
enum Holder<'a> {
    Resource(&'a str),
    TenantProvided,
}

fn holder_of(member_key: &str) -> Option<Holder<'_>> {
    if member_key.starts_with("tenant:") {
        return Some(Holder::TenantProvided);
    }
    member_key
        .split_once('/')
        .map(|(resource, _)| Holder::Resource(resource))
}

/// The resource that holds a bound response, as a member to read it from. It need not be in
/// the tenant's placement any more (the binding is sealed with the tenant, so only a
/// response the tenant created opens here): its responses stay where they were made.
fn holder_member(
    tenant: &TenantEntry,
    snapshot: &Snapshot,
    binding: &response_ids::Binding,
) -> Option<Member> {
    let (endpoint, region, data_zone, credential) = match holder_of(&binding.member)? {
        Holder::Resource(name) => {
            let name = tenant_registry::names::ResourceName::parse(name).ok()?;
            let resource = snapshot.catalog.resources.get(&name)?;
            (
                resource.view.endpoint.to_string(),
                resource.view.region.to_string(),
                resource.view.data_zone.as_ref().map(ToString::to_string),
                snapshot.resource_credential(&name)?.clone(),
            )
        }
        Holder::TenantProvided => match tenant.tenant.openai.as_ref()? {
            OpenAiPlacement::TenantProvided { endpoint, region } => (
                endpoint.to_string(),
                region.to_string(),
                tenant.tenant.data_zone.as_ref().map(ToString::to_string),
                tenant.openai_credential.clone()?,
            ),
            _ => return None,
        },
    };
    Some(Member {
        key: binding.member.clone(),
        endpoint,
        // Reading, deleting: the v1 path names no deployment.
        deployment: String::new(),
        model: String::new(),
        region,
        data_zone,
        credential,
        priority: 0,
        weight: 1,
    })
}

/// Whether `uri` is the Azure SDK's spelling (`/openai/responses...`), which needs an
/// `api-version` like every other versioned Azure route; the v1 spellings do not.
fn needs_api_version(uri: &axum::http::Uri) -> bool {
    uri.path().starts_with("/openai/responses")
}

fn has_api_version(uri: &axum::http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.starts_with("api-version=") && p.len() > 12)
    })
}

fn missing_api_version() -> Response {
    bad_request("Missing required query parameter: api-version")
}

/// `POST /openai/v1/responses`, `/openai/responses?api-version=`, `/v1/responses`: created
/// on a member of the alias in `model`, or on the resource that holds
/// `previous_response_id`.
pub async fn create_response(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    if needs_api_version(&uri) && !has_api_version(&uri) {
        return missing_api_version();
    }
    if let Err(message) = BodyFacts::read(&body) {
        return bad_request(&message);
    }
    let mut body = match serde_json::from_slice::<Map<String, Value>>(&body) {
        Ok(body) => body,
        Err(error) => {
            return bad_request(&format!(
                "We could not parse the JSON body of your request: {error}."
            ))
        }
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return bad_request(
            "Streaming is not supported on the responses API through this gateway yet.",
        );
    }
    let Some(alias) = body
        .get("model")
        .and_then(Value::as_str)
        .map(ToOwned::to_owned)
    else {
        return bad_request("'model' is a required property.");
    };
    let tenant_id = caller.tenant.tenant.id;
    let mut flow = match Flow::new(caller, request_id.map(|r| r.0), alias, Operation::Responses) {
        Ok(flow) => flow,
        Err(refused) => return refused.into_response(),
    };
    let (alias, target, caller) = (flow.alias.clone(), &mut flow.target, &flow.caller);
    if let Some(previous) = body.get("previous_response_id").and_then(Value::as_str) {
        let Some(binding) = response_ids::unwrap(&state.ids, previous, tenant_id) else {
            return response_not_found(previous);
        };
        // A follow-up must reach the resource that holds the state, and only it; any of the
        // alias's deployments on that resource will do.
        let holder = holder_of(&binding.member);
        let alias_model = model_of(target, &alias).to_owned();
        target
            .members
            .retain(|m| holder.is_some() && holder_of(&m.key) == holder);
        if target.members.is_empty() {
            // The tenant's placement no longer reaches that resource (it moved): the state is
            // still there, so the follow-up goes to the deployment that made the response.
            let Some(mut member) = holder_member(&caller.tenant, &caller.view, &binding) else {
                return response_not_found(previous);
            };
            member.deployment = match binding.member.split_once('/') {
                Some((_, deployment)) if !binding.member.starts_with("tenant:") => {
                    deployment.to_owned()
                }
                _ => alias.clone(),
            };
            member.model = alias_model;
            target.members = vec![member];
        }
        body.insert(
            "previous_response_id".into(),
            Value::String(binding.upstream),
        );
    }
    let body = match serde_json::to_vec(&body) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => {
            return ApiError::Internal(anyhow::anyhow!("cannot write a responses body: {error}"))
                .into_response()
        }
    };
    let facts = match BodyFacts::read(&body) {
        Ok(facts) => facts,
        Err(message) => return bad_request(&message),
    };
    let response = route_to(&state, flow, body, facts).await;
    rewrite_response_id(&state, tenant_id, response).await
}

/// `GET .../responses/{id}`: read from the one resource that holds it.
pub async fn get_response(
    State(state): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> Response {
    stored_response(&state, &caller, &uri, Method::GET, &id).await
}

/// `DELETE .../responses/{id}`: deleted on the one resource that holds it (read-write
/// credentials only, like every DELETE).
pub async fn delete_response(
    State(state): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> Response {
    stored_response(&state, &caller, &uri, Method::DELETE, &id).await
}

async fn stored_response(
    state: &AppState,
    caller: &Caller,
    uri: &axum::http::Uri,
    method: Method,
    id: &str,
) -> Response {
    if needs_api_version(uri) && !has_api_version(uri) {
        return missing_api_version();
    }
    let tenant_id = caller.tenant.tenant.id;
    let Some(binding) = response_ids::unwrap(&state.ids, id, tenant_id) else {
        return response_not_found(id);
    };
    let Some(member) = holder_member(&caller.tenant, &caller.view, &binding) else {
        return response_not_found(id);
    };
    let path = format!("/openai/v1/responses/{}", binding.upstream);
    match state.openai.fetch(method, &member, &path).await {
        Ok((status, headers, bytes)) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().extend(headers);
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(member) = HeaderValue::from_str(&member.key) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static("x-bulkhead-member"), member);
            }
            rewrite_response_id(state, tenant_id, response).await
        }
        Err(error) => {
            tracing::warn!(%error, "reaching a stored response failed");
            ApiError::Upstream("The resource holding this response did not answer.").into_response()
        }
    }
}

/// Replaces the upstream's response id (and `previous_response_id`) with sealed ones.
async fn rewrite_response_id(
    state: &AppState,
    tenant: uuid::Uuid,
    mut response: Response,
) -> Response {
    if !response.status().is_success() {
        response.headers_mut().remove("x-bulkhead-member");
        return response;
    }
    let member = response
        .headers()
        .get("x-bulkhead-member")
        .and_then(|v| v.to_str().ok())
        .map(ToOwned::to_owned);
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return ApiError::Upstream("The upstream answer was cut short.").into_response();
    };
    let (Some(member), Ok(mut value)) = (member, serde_json::from_slice::<Value>(&bytes)) else {
        return ApiError::Upstream("The upstream answer could not be read.").into_response();
    };
    for field in ["id", "previous_response_id"] {
        if let Some(upstream) = value.get(field).and_then(Value::as_str) {
            let binding = response_ids::Binding {
                tenant,
                member: member.clone(),
                upstream: upstream.to_owned(),
            };
            if let Some(wrapped) = response_ids::wrap(&state.ids, &binding) {
                value[field] = Value::String(wrapped);
            }
        }
    }
    parts.headers.remove("x-bulkhead-member");
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(value.to_string()))
}

/// `POST /v1/tokenize`: the prompt tokens of a chat (`messages`), embeddings (`input`) or
/// completions (`prompt`) body, counted as admission counts them, without calling Azure.
/// `model` is an alias the tenant may use (its deployments' model picks the tokenizer).
/// Counting stops once a text is past the model's context window (admission would refuse
/// it): `exact` is then false and `prompt_tokens` a lower bound past the window.
pub async fn tokenize(State(state): State<AppState>, caller: Caller, body: Bytes) -> Response {
    // Everything that reads the body, reading its fields included, runs where the counting
    // pool puts it: a large body never costs the request threads more than its upload.
    let snapshot = Arc::clone(&caller.view);
    let tokens = state.tokens.clone();
    let counting = Arc::clone(&state.counting);
    let body_len = body.len();
    let work = move || -> Result<Value, Box<Response>> {
        let facts = BodyFacts::read(&body).map_err(|message| Box::new(bad_request(&message)))?;
        let Some(alias) = facts.model else {
            return Err(Box::new(bad_request("'model' is a required property.")));
        };
        let Some((target, _)) = openai_target(&caller.tenant, &snapshot, &alias) else {
            return Err(Box::new(deployment_not_found()));
        };
        let model = model_of(&target, &alias).to_owned();
        let limits = tokens.limits(&model);
        let budget = counting.budget(limits.context_window);
        let value: Value = serde_json::from_slice(&body).map_err(|error| {
            Box::new(bad_request(&format!(
                "We could not parse the JSON body of your request: {error}."
            )))
        })?;
        let operation = if value.get("messages").is_some() {
            token_count::Operation::ChatCompletions
        } else if value.get("input").is_some() {
            token_count::Operation::Embeddings
        } else if value.get("prompt").is_some() {
            token_count::Operation::Completions
        } else {
            return Err(Box::new(bad_request(
                "The body needs 'messages' (chat), 'input' (embeddings) or 'prompt' (completions).",
            )));
        };
        let counted = tokens
            .count_prompt_within(operation, &model, &value, budget)
            .map_err(|error| {
                Box::new(
                    ApiError::BadRequest {
                        message: error.to_string(),
                        param: error.param().map(ToOwned::to_owned),
                    }
                    .into_response(),
                )
            })?;
        Ok(serde_json::json!({
            "model": alias,
            "encoding": tokens.encoding(&model).name(),
            "prompt_tokens": counted.tokens,
            "exact": counted.exact,
            "context_window": limits.context_window,
            "max_output_tokens": limits.max_output,
            "admission_estimate":
                token_count::admission_estimate(operation, counted.tokens, &value, limits),
        }))
    };
    // The model is read inside `work`: inline only once every tokenizer is built.
    let ready =
        token_count::Encoding::O200kBase.is_ready() && token_count::Encoding::Cl100kBase.is_ready();
    match state.counting.run(body_len, ready, work).await {
        Ok(Ok(answer)) => axum::Json(answer).into_response(),
        Ok(Err(refusal)) => *refusal,
        Err(crate::counting::Busy) => admission::busy_counting(),
    }
}
