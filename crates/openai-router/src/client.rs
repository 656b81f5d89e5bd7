//! Doing what the plan decided: the call to each member in turn, retries and failover, the
//! response (plain or streamed) back to the caller, and a [`Usage`] for every finished call.
//!
//! Retried, on the next eligible member: 429 (after putting the member in cooldown for its
//! `retry-after-ms` / `retry-after`, 10 s when absent), 5xx, connection errors and timeouts,
//! within a budget of attempts and time, and never once a byte went to the client. Never
//! retried: any other 4xx, which is the caller's to see.

use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use entra::{AuthHeader, TokenBroker, TokenError, OPENAI_SCOPE};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::RwLock;
use serde_json::{json, Value};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::body::{upstream_body, with_model, BodyFacts};
use crate::health::HealthBook;
use crate::plan::{plan, NoMember};
use crate::target::{Member, Target};
use crate::RouteError;

/// Headers of the upstream's answer that the caller gets as they are. Not the upstream's
/// `x-ratelimit-remaining-*`: they describe a deployment shared by many tenants (the router
/// reads them for steering; `api` answers with the tenant's own quota instead).
pub const PASSED_HEADERS: &[&str] = &[
    "x-ms-region",
    "apim-request-id",
    "x-request-id",
    "retry-after",
    "retry-after-ms",
    "x-ms-client-request-id",
];

/// How long to cool a member down after a 429 that does not say.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub connect_timeout: Duration,
    /// Until the upstream's response headers arrive.
    pub first_byte_timeout: Duration,
    /// Between two chunks of a streamed answer.
    pub idle_timeout: Duration,
    /// The whole call, retries included, until the answer starts (a stream may run longer,
    /// bounded by `idle_timeout` between chunks).
    pub total_timeout: Duration,
    /// Upstream attempts per call, the first included.
    pub max_attempts: u32,
    /// The `api-version` sent on deployment paths.
    pub api_version: String,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(120),
            max_attempts: 3,
            api_version: "2024-10-21".into(),
        }
    }
}

/// The Azure OpenAI operations the router knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Completions,
    Embeddings,
    /// The stateful responses API (v1 path; the deployment goes in `model`).
    Responses,
}

impl Operation {
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Responses => "responses",
        }
    }

    fn can_stream(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }

    /// The upstream URL of this operation on `member`.
    fn url(self, member: &Member, api_version: &str) -> String {
        match self {
            Self::Responses => format!("{}/openai/v1/responses", member.endpoint),
            _ => format!(
                "{}/openai/deployments/{}/{}?api-version={api_version}",
                member.endpoint,
                member.deployment,
                self.path()
            ),
        }
    }
}

/// One call as the caller made it.
pub struct Call {
    pub operation: Operation,
    /// The caller's JSON body (an object); the router adds `stream_options` and `user`.
    pub body: Bytes,
    /// What [`BodyFacts::read`] found in `body`.
    pub facts: BodyFacts,
    /// The `user` to send when the caller gave none (the tenant id, so Azure's abuse
    /// monitoring can tell tenants apart).
    pub default_user: String,
    /// Forwarded as `x-ms-client-request-id` so the upstream logs can be joined with ours.
    pub request_id: Option<String>,
    /// W3C `traceparent`, sent upstream so Azure's side joins the caller's trace.
    pub traceparent: Option<HeaderValue>,
    /// Estimated tokens (prompt + max output), to steer away from members short of them.
    pub estimated_tokens: u64,
    /// The prompt's tokens as admission counted (or estimated) them: what is metered when the
    /// call ends before Azure's usage arrives.
    pub prompt_tokens: u64,
    /// Counts relayed text, for a stream cut before its usage arrives.
    pub count: Option<TokenCounter>,
}

/// What a finished call consumed and where it went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub member: Option<String>,
    pub deployment: Option<String>,
    pub region: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub status: u16,
    pub latency: Duration,
    pub streamed: bool,
    pub attempts: u32,
    /// The counts are the gateway's own, not Azure's: the call ended before its usage came
    /// (a stream cut by the upstream, the caller or a shutdown), so the prompt is the one
    /// admission counted (or estimated) and the completion what was relayed.
    pub cut: bool,
}

/// Counts the tokens of relayed text (the model's tokenizer), for a stream cut before its
/// usage came.
pub type TokenCounter = Arc<dyn Fn(&str) -> u64 + Send + Sync>;

/// Called once per finished call (a stream finishes when its last byte is sent or it fails).
pub type OnDone = Box<dyn FnOnce(Usage) + Send + 'static>;

/// Calls [`OnDone`] exactly once: with the call's usage, or, when the call is dropped before
/// it finished (the caller hung up), with status 499 so the record is never lost.
struct Meter {
    on_done: Option<OnDone>,
    started: Instant,
    /// Metered when the call is dropped unfinished (Azure may well have read the prompt).
    prompt_tokens: u64,
}

impl Meter {
    fn done(mut self, usage: Usage) {
        if let Some(on_done) = self.on_done.take() {
            on_done(usage);
        }
    }

    fn into_inner(mut self) -> Option<OnDone> {
        self.on_done.take()
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(on_done) = self.on_done.take() {
            on_done(Usage {
                status: 499,
                latency: self.started.elapsed(),
                prompt_tokens: self.prompt_tokens,
                cut: true,
                ..Usage::default()
            });
        }
    }
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// The answer to give the caller.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: AnswerBody,
    /// The member that answered (`resource/deployment`), for an optional response header.
    pub member: Option<String>,
}

pub enum AnswerBody {
    Full(Bytes),
    Stream(ByteStream),
}

/// The upstream HTTP client: hyper's pooled client over plain TCP or rustls (HTTP/1.1,
/// keep-alive). reqwest was here before; per call it parsed the URL with IDNA processing,
/// cloned its default headers and ran a redirect layer, none of which a router needs.
type Upstream = Client<HttpsConnector<crate::connect::Connector>, Full<Bytes>>;

pub struct OpenAiRouter {
    http: Upstream,
    health: HealthBook,
    settings: RouterSettings,
    /// Cancelled when streams in flight must end (a shutdown's grace period is over).
    cut: CancellationToken,
    rotations: RwLock<std::collections::HashMap<String, Arc<AtomicU64>>>,
    /// Entra ID tokens for members that use a credential instead of a key.
    tokens: TokenBroker,
}

enum Attempt {
    /// An answer to hand over (success, or a 4xx that is not ours to retry).
    Done(http::Response<Incoming>),
    /// Retry elsewhere; `throttled` says whether it was a 429.
    Retry {
        throttled: bool,
        last: Option<(StatusCode, Bytes, HeaderMap)>,
    },
}

impl OpenAiRouter {
    /// `cut` ends every stream in flight with an error event when cancelled.
    pub fn new(
        settings: RouterSettings,
        health: HealthBook,
        cut: CancellationToken,
        tokens: TokenBroker,
    ) -> Result<Self, RouteError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        // Without TCP_NODELAY a small request can wait ~40 ms for the peer's delayed ACK.
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(settings.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(crate::connect::Connector::new(
                tcp,
                hyper_util::client::proxy::matcher::Matcher::from_env(),
            ));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            http,
            health,
            settings,
            cut,
            rotations: RwLock::new(std::collections::HashMap::new()),
            tokens,
        })
    }

    /// A bodiless `method` (GET, DELETE) of `path` (below the resource's base URL) on one
    /// member: for state that lives on that resource only (a stored response). Not retried
    /// elsewhere.
    pub async fn fetch(
        &self,
        method: Method,
        member: &Member,
        path: &str,
    ) -> Result<(StatusCode, HeaderMap, Bytes), RouteError> {
        let auth = member
            .credential
            .header(&self.tokens, OPENAI_SCOPE)
            .await
            .map_err(|e| {
                RouteError::Upstream(format!("no Entra ID token for {}: {e}", member.key))
            })?;
        let request = upstream_request(
            method,
            &format!("{}{path}", member.endpoint),
            member,
            auth,
            None,
            None,
            Bytes::new(),
        )?;
        let response =
            tokio::time::timeout(self.settings.first_byte_timeout, self.http.request(request))
                .await
                .map_err(|_| RouteError::Upstream("timed out".into()))?
                .map_err(|e| RouteError::Upstream(e.to_string()))?;
        let status = response.status();
        let headers = passed_headers(response.headers());
        let body = tokio::time::timeout(
            self.settings.first_byte_timeout,
            response.into_body().collect(),
        )
        .await
        .map_err(|_| RouteError::Upstream("timed out".into()))?
        .map_err(|e| RouteError::Upstream(e.to_string()))?
        .to_bytes();
        Ok((status, headers, body))
    }

    pub fn health(&self) -> &HealthBook {
        &self.health
    }

    fn rotation(&self, key: &str) -> Arc<AtomicU64> {
        if let Some(found) = self.rotations.read().get(key) {
            return Arc::clone(found);
        }
        Arc::clone(self.rotations.write().entry(key.to_owned()).or_default())
    }

    /// Routes `call` to `target`. `rotation_key` names the round-robin counter (the pool, or
    /// the tenant's own alias), so every caller of a shared pool shares one rotation.
    pub async fn send(
        &self,
        target: &Target,
        rotation_key: &str,
        call: Call,
        on_done: OnDone,
    ) -> Result<Answer, RouteError> {
        let started = Instant::now();
        let meter = Meter {
            on_done: Some(on_done),
            started,
            prompt_tokens: call.prompt_tokens,
        };
        let deadline = started + self.settings.total_timeout;
        let wants_stream = call.operation.can_stream() && call.facts.stream;
        let client_wants_usage = call.facts.wants_usage();
        // To meter a stream we need its usage; that chunk is removed before the caller sees it.
        let ask_usage = wants_stream && !client_wants_usage;
        let user = (call.operation != Operation::Embeddings).then_some(call.default_user.as_str());
        let body = upstream_body(&call.body, &call.facts, ask_usage, user)
            .map_err(|e| RouteError::Internal(e.to_string()))?;
        let rotation = self.rotation(rotation_key);
        let mut tried: Vec<&str> = Vec::new();
        let mut attempts = 0u32;
        let mut last: Option<(StatusCode, Bytes, HeaderMap)> = None;
        let mut all_throttled = true;
        while attempts < self.settings.max_attempts && Instant::now() < deadline {
            let now = Instant::now();
            let order = match plan(target, &self.health, &rotation, call.estimated_tokens, now) {
                Ok(plan) => plan.order,
                Err(no) => return self.give_up(no, last, attempts, started, meter),
            };
            let Some(member) = order
                .into_iter()
                .filter(|m| !tried.contains(&m.key.as_str()))
                .find(|m| self.health.try_acquire(&m.key, now))
            else {
                break;
            };
            if attempts > 0 {
                tracing::info!(member = %member.key, attempt = attempts + 1, "retrying");
            }
            tried.push(&member.key);
            attempts += 1;
            let span = tracing::info_span!(
                "upstream attempt",
                member = %member.key,
                attempt = attempts,
                outcome = tracing::field::Empty,
                status = tracing::field::Empty,
            );
            let outcome = self
                .attempt(member, &call, body.clone(), deadline)
                .instrument(span.clone())
                .await;
            match &outcome {
                Attempt::Done(response) => {
                    span.record("outcome", "answered");
                    span.record("status", response.status().as_u16());
                }
                Attempt::Retry { throttled, last } => {
                    span.record("outcome", if *throttled { "throttled" } else { "failed" });
                    if let Some((status, _, _)) = last {
                        span.record("status", status.as_u16());
                    }
                }
            }
            match outcome {
                Attempt::Done(response) => {
                    return Ok(self
                        .answer(
                            member,
                            response,
                            attempts,
                            started,
                            meter,
                            Relay {
                                wants_stream,
                                keep_usage: client_wants_usage,
                                prompt_tokens: call.prompt_tokens,
                                count: call.count.clone(),
                            },
                        )
                        .await);
                }
                Attempt::Retry {
                    throttled,
                    last: answered,
                } => {
                    if !throttled {
                        all_throttled = false;
                    }
                    if answered.is_some() {
                        last = answered;
                    }
                }
            }
        }
        let now = Instant::now();
        let no = match plan(target, &self.health, &rotation, call.estimated_tokens, now) {
            Err(no) => no,
            Ok(_) if all_throttled && attempts > 0 => NoMember::Throttled {
                retry_after: DEFAULT_COOLDOWN,
            },
            Ok(_) => NoMember::Unavailable,
        };
        self.give_up(no, last, attempts, started, meter)
    }

    async fn attempt(
        &self,
        member: &Member,
        call: &Call,
        body: Bytes,
        deadline: Instant,
    ) -> Attempt {
        let url = call.operation.url(member, &self.settings.api_version);
        // The v1 responses API names the deployment in the body.
        let body = if call.operation == Operation::Responses {
            with_model(&body, &member.deployment).unwrap_or(body)
        } else {
            body
        };
        let auth = match member.credential.header(&self.tokens, OPENAI_SCOPE).await {
            Ok(auth) => auth,
            // Not the deployment's fault: its health is left alone, another member may use
            // another credential, and if none answers the caller gets this 503.
            Err(error) => {
                return Attempt::Retry {
                    throttled: false,
                    last: Some(token_unavailable(member, &error)),
                }
            }
        };
        let mut response = match self
            .send_once(member, &url, call, body.clone(), &auth, deadline)
            .await
        {
            Ok(response) => response,
            Err(attempt) => return attempt,
        };
        // A 401 on a cached token (revoked, or a key rotation on Azure's side): one new token
        // and one more try on the same member.
        if response.status() == StatusCode::UNAUTHORIZED {
            if let Some(auth) = member
                .credential
                .renewed(&self.tokens, OPENAI_SCOPE, &auth)
                .await
            {
                tracing::info!(member = %member.key, "upstream refused the cached token; retrying with a new one");
                response = match self
                    .send_once(member, &url, call, body, &auth, deadline)
                    .await
                {
                    Ok(response) => response,
                    Err(attempt) => return attempt,
                };
            }
        }
        // Azure refused the gateway's own identity (no role assignment, wrong tenant): the
        // caller did nothing wrong, so it never sees a 401/403 of ours. The member counts as
        // failed (another may answer) and the refusal is named with the member.
        if member.credential.is_entra()
            && matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            )
        {
            let status = response.status();
            self.health.failed(&member.key, Instant::now());
            let body =
                read_error_body(response.into_body(), self.settings.first_byte_timeout).await;
            tracing::warn!(member = %member.key, status = status.as_u16(), "upstream refused the gateway's Entra ID token");
            return Attempt::Retry {
                throttled: false,
                last: Some(token_refused(member, status, &body)),
            };
        }
        self.judge(member, response).await
    }

    /// One request to one member, bounded by the first-byte timeout.
    async fn send_once(
        &self,
        member: &Member,
        url: &str,
        call: &Call,
        body: Bytes,
        auth: &AuthHeader,
        deadline: Instant,
    ) -> Result<http::Response<Incoming>, Attempt> {
        let request = match upstream_request(
            Method::POST,
            url,
            member,
            auth.clone(),
            call.request_id.as_deref(),
            call.traceparent.as_ref(),
            body,
        ) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(member = %member.key, %error, "cannot build the upstream request");
                return Err(Attempt::Retry {
                    throttled: false,
                    last: None,
                });
            }
        };
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(self.settings.first_byte_timeout);
        let now = Instant::now();
        match tokio::time::timeout(budget, self.http.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                tracing::warn!(member = %member.key, error = %error, "upstream attempt failed");
                self.health.failed(&member.key, now);
                Err(Attempt::Retry {
                    throttled: false,
                    last: None,
                })
            }
            Err(_) => {
                tracing::warn!(member = %member.key, "upstream attempt timed out");
                self.health.failed(&member.key, now);
                Err(Attempt::Retry {
                    throttled: false,
                    last: None,
                })
            }
        }
    }

    /// What a member's answer means for this call and for the member's health.
    async fn judge(&self, member: &Member, response: http::Response<Incoming>) -> Attempt {
        let status = response.status();
        if let Some(left) = header_u64(response.headers(), "x-ratelimit-remaining-tokens") {
            self.health.remaining_tokens(&member.key, left);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after(response.headers()).unwrap_or(DEFAULT_COOLDOWN);
            tracing::info!(member = %member.key, wait_ms = wait.as_millis() as u64, "upstream throttled");
            self.health.throttled(&member.key, wait, Instant::now());
            let (parts, body) = response.into_parts();
            let body = read_error_body(body, self.settings.first_byte_timeout).await;
            let headers = parts.headers;
            return Attempt::Retry {
                throttled: true,
                last: Some((status, body, headers)),
            };
        }
        if status.is_server_error() {
            tracing::warn!(member = %member.key, status = status.as_u16(), "upstream error");
            self.health.failed(&member.key, Instant::now());
            let (parts, body) = response.into_parts();
            let body = read_error_body(body, self.settings.first_byte_timeout).await;
            let headers = parts.headers;
            return Attempt::Retry {
                throttled: false,
                last: Some((status, body, headers)),
            };
        }
        self.health.succeeded(&member.key);
        Attempt::Done(response)
    }

    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        member: &Member,
        response: http::Response<Incoming>,
        attempts: u32,
        started: Instant,
        meter: Meter,
        relay: Relay,
    ) -> Answer {
        let wants_stream = relay.wants_stream;
        let status = response.status();
        let headers = passed_headers(response.headers());
        let is_sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut usage = Usage {
            member: Some(member.key.clone()),
            deployment: Some(member.deployment.clone()),
            region: Some(member.region.clone()),
            status: status.as_u16(),
            streamed: wants_stream && is_sse,
            attempts,
            ..Usage::default()
        };
        if wants_stream && is_sse && status.is_success() {
            let stream = relay_stream(
                BodyDataStream::new(response.into_body()),
                relay,
                self.settings.idle_timeout,
                self.cut.clone(),
                usage,
                started,
                meter.into_inner(),
            );
            let mut headers = headers;
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            return Answer {
                status,
                headers,
                body: AnswerBody::Stream(stream),
                member: Some(member.key.clone()),
            };
        }
        let body = match tokio::time::timeout(
            self.settings.first_byte_timeout,
            response.into_body().collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            _ => {
                usage.status = StatusCode::BAD_GATEWAY.as_u16();
                usage.latency = started.elapsed();
                meter.done(usage);
                return error_answer(
                    StatusCode::BAD_GATEWAY,
                    "UpstreamError",
                    "The upstream answer was cut short.",
                    None,
                );
            }
        };
        if status.is_success() {
            read_usage(&body, &mut usage);
        }
        usage.latency = started.elapsed();
        meter.done(usage);
        let mut headers = headers;
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Answer {
            status,
            headers,
            body: AnswerBody::Full(body),
            member: Some(member.key.clone()),
        }
    }

    fn give_up(
        &self,
        no: NoMember,
        last: Option<(StatusCode, Bytes, HeaderMap)>,
        attempts: u32,
        started: Instant,
        meter: Meter,
    ) -> Result<Answer, RouteError> {
        let answer = match (no, last) {
            (NoMember::Throttled { retry_after }, _) => {
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                error_answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    "429",
                    &format!("Every deployment of this model is at its rate limit. Please retry after {seconds} seconds."),
                    Some(retry_after),
                )
            }
            (NoMember::Unavailable, Some((status, body, headers))) if status.is_server_error() => {
                Answer {
                    status,
                    headers: {
                        let mut h = passed_headers(&headers);
                        h.insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        h
                    },
                    body: AnswerBody::Full(body),
                    member: None,
                }
            }
            (NoMember::Unavailable, _) => error_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "No deployment of this model is available right now. Please retry later.",
                None,
            ),
        };
        meter.done(Usage {
            status: answer.status.as_u16(),
            latency: started.elapsed(),
            attempts,
            ..Usage::default()
        });
        Ok(answer)
    }
}

fn error_answer(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
            headers.insert(http::header::RETRY_AFTER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&wait.as_millis().max(1).to_string()) {
            headers.insert(HeaderName::from_static("retry-after-ms"), v);
        }
    }
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    Answer {
        status,
        headers,
        body: AnswerBody::Full(Bytes::from(body)),
        member: None,
    }
}

fn passed_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in PASSED_HEADERS {
        if let Some(value) = from.get(*name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    headers
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long a 429 asks us to wait: `retry-after-ms`, else `retry-after` in seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers.get("retry-after-ms").and_then(|v| v.to_str().ok()) {
        if let Ok(ms) = ms.trim().parse::<f64>() {
            if ms.is_finite() && ms >= 0.0 {
                return Some(Duration::from_secs_f64(ms / 1000.0));
            }
        }
    }
    let seconds = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// An upstream request: the member's key (marked sensitive, so no debug output shows it),
/// a JSON body and our request id for joining logs.
fn upstream_request(
    method: Method,
    url: &str,
    member: &Member,
    auth: AuthHeader,
    request_id: Option<&str>,
    traceparent: Option<&HeaderValue>,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, RouteError> {
    let uri = http::Uri::try_from(url)
        .map_err(|e| RouteError::Internal(format!("upstream request for {}: {e}", member.key)))?;
    let json = !body.is_empty();
    // Filled in place: `http::request::Builder` moves the whole request head on every call.
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    match auth {
        AuthHeader::ApiKey(key) => headers.insert(API_KEY, key),
        AuthHeader::Bearer(token) => headers.insert(http::header::AUTHORIZATION, token),
    };
    if json {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(CLIENT_REQUEST_ID, id);
    }
    if let Some(trace) = traceparent {
        headers.insert(HeaderName::from_static("traceparent"), trace.clone());
    }
    Ok(request)
}

const API_KEY: HeaderName = HeaderName::from_static("api-key");

/// TLS to upstreams: the built-in roots (Mozilla's, so a minimal image works) and the system's
/// store (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), where a platform team puts its
/// private CA. A system store that cannot be read leaves the built-in roots.
fn tls_config() -> Result<rustls::ClientConfig, RouteError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let system = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(system.certs);
    if !system.errors.is_empty() {
        tracing::warn!(
            errors = system.errors.len(),
            "part of the system certificate store could not be read"
        );
    }
    tracing::debug!(system_roots = added, "upstream TLS roots loaded");
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| RouteError::Internal(format!("TLS configuration: {e}")))
}

/// The answer given when Azure refused a member's Entra ID token: 502, naming the member
/// and Azure's own code and message (which name the principal, never a secret).
fn token_refused(
    member: &Member,
    status: StatusCode,
    body: &[u8],
) -> (StatusCode, Bytes, HeaderMap) {
    let azure = serde_json::from_slice::<Value>(body).ok();
    let error = azure.as_ref().and_then(|v| v.get("error"));
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let said = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.chars().take(400).collect::<String>())
        .unwrap_or_default();
    let message = format!(
        "Azure refused the gateway's Entra ID token for {} (HTTP {} {code}: {said}). Check the role assignment of the gateway's identity on that resource.",
        member.key,
        status.as_u16()
    );
    let body = json!({"error": {"code": "UpstreamAuthenticationFailed", "message": message}});
    (
        StatusCode::BAD_GATEWAY,
        Bytes::from(body.to_string()),
        HeaderMap::new(),
    )
}

/// The answer given for a member whose Entra ID token cannot be had (if no other member
/// answers): 503 with `Retry-After`, naming the member and why, never a secret.
fn token_unavailable(member: &Member, error: &TokenError) -> (StatusCode, Bytes, HeaderMap) {
    let wait = error.retry_after().as_secs().max(1);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
        headers.insert(http::header::RETRY_AFTER, value);
    }
    let message = format!(
        "The gateway has no Entra ID token for {} ({}). Please retry after {wait} seconds.",
        member.key, error
    );
    let body = json!({"error": {"code": "UpstreamAuthenticationUnavailable", "message": message}});
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from(body.to_string()),
        headers,
    )
}
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");

/// The body of an upstream error, to hand over if no other member answers; empty when it
/// does not arrive in time.
async fn read_error_body(body: Incoming, wait: Duration) -> Bytes {
    match tokio::time::timeout(wait, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    }
}

/// The `usage` of an answer or a stream chunk. Only that member is deserialized: serde skips
/// the rest of the document without building it. Both spellings: chat, completions and
/// embeddings say `prompt_tokens`/`completion_tokens`; the Responses API says
/// `input_tokens`/`output_tokens`, and its stream carries the usage in the
/// `response.completed` event's `response`.
fn read_usage(json: &[u8], usage: &mut Usage) {
    #[derive(serde::Deserialize)]
    struct Answer {
        usage: Option<Counts>,
        response: Option<Response>,
    }
    #[derive(serde::Deserialize)]
    struct Response {
        usage: Option<Counts>,
    }
    #[derive(serde::Deserialize)]
    struct Counts {
        #[serde(default, alias = "input_tokens")]
        prompt_tokens: u64,
        #[serde(default, alias = "output_tokens")]
        completion_tokens: u64,
        #[serde(default, alias = "input_tokens_details")]
        prompt_tokens_details: Option<Details>,
    }
    #[derive(serde::Deserialize)]
    struct Details {
        #[serde(default)]
        cached_tokens: u64,
    }
    let Ok(answer) = serde_json::from_slice::<Answer>(json) else {
        return;
    };
    let Some(counts) = answer.usage.or(answer.response.and_then(|r| r.usage)) else {
        return;
    };
    usage.prompt_tokens = counts.prompt_tokens;
    usage.completion_tokens = counts.completion_tokens;
    usage.cached_tokens = counts.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
}

/// How to relay a stream and meter it.
pub(crate) struct Relay {
    wants_stream: bool,
    /// The caller asked for the usage chunk (else it is read and dropped).
    keep_usage: bool,
    /// Metered as the prompt when the stream ends before its usage.
    prompt_tokens: u64,
    /// Counts the relayed text when the stream ends before its usage.
    count: Option<TokenCounter>,
}

/// The text a chunk adds to the answer (`choices[].delta.content`, tool call arguments, a
/// legacy completion's `choices[].text`), for metering a stream cut before its usage.
fn chunk_text(data: &[u8], into: &mut String) {
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow, default)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Choice<'a> {
        #[serde(borrow, default)]
        delta: Option<Delta<'a>>,
        #[serde(borrow, default)]
        text: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Delta<'a> {
        #[serde(borrow, default)]
        content: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        tool_calls: Option<Vec<ToolCall<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct ToolCall<'a> {
        #[serde(borrow, default)]
        function: Option<Function<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Function<'a> {
        #[serde(borrow, default)]
        arguments: Option<std::borrow::Cow<'a, str>>,
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return;
    };
    for choice in chunk.choices {
        if let Some(text) = choice.text {
            into.push_str(&text);
        }
        if let Some(delta) = choice.delta {
            if let Some(content) = delta.content {
                into.push_str(&content);
            }
            for call in delta.tool_calls.unwrap_or_default() {
                if let Some(arguments) = call.function.and_then(|f| f.arguments) {
                    into.push_str(&arguments);
                }
            }
        }
    }
}

/// Passes a server-sent event stream through event by event. The usage chunk (the one with
/// a non-null `usage`) is read for metering and dropped when the caller did not ask for it.
/// A stream the upstream cuts ends with an error event, never a silent truncation; so does
/// one still running when `cut` is cancelled (a shutdown's grace period is over). A stream
/// that ends before its usage chunk, whoever ended it, is metered with the prompt admission
/// counted and the tokens of the text relayed so far, marked `cut`.
fn relay_stream<E: std::fmt::Display + Send + 'static>(
    upstream: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    relay: Relay,
    idle: Duration,
    cut: CancellationToken,
    usage: Usage,
    started: Instant,
    on_done: Option<OnDone>,
) -> ByteStream {
    struct State<S> {
        upstream: Pin<Box<S>>,
        pending: BytesMut,
        usage: Usage,
        on_done: Option<OnDone>,
        finished: bool,
        saw_done: bool,
        saw_usage: bool,
        /// The answer's text so far, while no usage has come.
        relayed: String,
        relay: Relay,
        started: Instant,
    }
    // A caller that hangs up mid-stream still consumed tokens: meter what was seen, as 499.
    impl<S> Drop for State<S> {
        fn drop(&mut self) {
            self.finish(Some(499));
        }
    }
    impl<S> State<S> {
        fn finish(&mut self, status: Option<u16>) {
            if let Some(done) = self.on_done.take() {
                if let Some(status) = status {
                    self.usage.status = status;
                }
                if !self.saw_usage {
                    self.usage.cut = true;
                    self.usage.prompt_tokens = self.relay.prompt_tokens;
                    self.usage.completion_tokens = match &self.relay.count {
                        Some(count) => count(&self.relayed),
                        // Without a tokenizer, a byte per token never counts too little...
                        // nor is it ever close: four is the usual ratio.
                        None => (self.relayed.len() as u64).div_ceil(4),
                    };
                }
                self.usage.latency = self.started.elapsed();
                done(std::mem::take(&mut self.usage));
            }
        }
    }
    let state = State {
        upstream: Box::pin(upstream),
        pending: BytesMut::new(),
        usage,
        on_done,
        finished: false,
        saw_done: false,
        saw_usage: false,
        relayed: String::new(),
        relay,
        started,
    };
    Box::pin(futures::stream::unfold(state, move |mut st| {
        let cut = cut.clone();
        async move {
            loop {
                if st.finished {
                    return None;
                }
                // Hand over every complete event we hold.
                if let Some(end) = find_event_end(&st.pending) {
                    let event = st.pending.split_to(end).freeze();
                    let payload = event_data(&event);
                    if payload == Some(b"[DONE]".as_slice()) {
                        st.saw_done = true;
                    } else if let Some(data) = payload.filter(|d| has_usage(d)) {
                        if let Ok(value) = serde_json::from_slice::<Value>(data) {
                            read_usage(data, &mut st.usage);
                            st.saw_usage = true;
                            st.relayed = String::new();
                            let only_usage = value
                                .get("choices")
                                .and_then(Value::as_array)
                                .is_some_and(Vec::is_empty);
                            if only_usage && !st.relay.keep_usage {
                                continue;
                            }
                        }
                    } else if let Some(data) = payload.filter(|_| !st.saw_usage) {
                        chunk_text(data, &mut st.relayed);
                    }
                    return Some((Ok(event), st));
                }
                let next = tokio::select! {
                    biased;
                    () = cut.cancelled() => None,
                    next = tokio::time::timeout(idle, st.upstream.next()) => Some(next),
                };
                match next {
                    None => {
                        tracing::warn!("shutting down; cutting a stream still running");
                        st.finished = true;
                        st.finish(Some(503));
                        return Some((
                            Ok(stream_error_event_with(
                                "ServiceUnavailable",
                                "The gateway is shutting down and cut this stream. Retry the request.",
                            )),
                            st,
                        ));
                    }
                    Some(Ok(Some(Ok(chunk)))) => st.pending.extend_from_slice(&chunk),
                    Some(Ok(None)) => {
                        st.finished = true;
                        let rest = st.pending.split().freeze();
                        let cut = !st.saw_done;
                        st.finish(cut.then_some(502));
                        if cut {
                            return Some((
                                Ok(stream_error_event("The upstream ended the stream early.")),
                                st,
                            ));
                        }
                        return (!rest.is_empty()).then_some((Ok(rest), st));
                    }
                    Some(Ok(Some(Err(error)))) => {
                        tracing::warn!(%error, "upstream stream failed");
                        st.finished = true;
                        st.finish(Some(502));
                        return Some((Ok(stream_error_event("The upstream stream failed.")), st));
                    }
                    Some(Err(_)) => {
                        tracing::warn!("upstream stream idle for too long");
                        st.finished = true;
                        st.finish(Some(504));
                        return Some((Ok(stream_error_event("The upstream stream stalled.")), st));
                    }
                }
            }
        }
    }))
}

fn stream_error_event(message: &str) -> Bytes {
    stream_error_event_with("UpstreamStreamError", message)
}

/// An error event in the OpenAI streaming format (what the SDKs raise from mid-stream).
fn stream_error_event_with(code: &str, message: &str) -> Bytes {
    let event = json!({"error": {"code": code, "message": message}});
    Bytes::from(format!("data: {event}\n\n"))
}

/// The end (exclusive) of the first complete event: after a blank line (`\n\n` or `\r\n\r\n`).
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `data:` payload of an event (single-line data, as Azure sends).
fn event_data(event: &[u8]) -> Option<&[u8]> {
    let line = event
        .split(|b| *b == b'\n')
        .find(|l| l.starts_with(b"data:"))?;
    let data = &line[5..];
    let data = data.strip_prefix(b" ").unwrap_or(data);
    Some(data.strip_suffix(b"\r").unwrap_or(data))
}

/// Whether a chunk carries a usage object (chunks of a stream with usage carry `"usage":null`).
fn has_usage(data: &[u8]) -> bool {
    data.windows(8).any(|w| w == b"\"usage\":") && !data.windows(12).any(|w| w == b"\"usage\":null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_in_both_spellings_and_from_a_responses_stream_event() {
        let mut usage = Usage::default();
        read_usage(
            br#"{"id":"r","usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"total_tokens":18}}"#,
            &mut usage,
        );
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.completion_tokens
            ),
            (11, 4, 7)
        );
        let mut usage = Usage::default();
        read_usage(
            br#"{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"output_tokens":2}}}"#,
            &mut usage,
        );
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 2));
        let mut usage = Usage::default();
        read_usage(
            br#"{"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#,
            &mut usage,
        );
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.completion_tokens
            ),
            (3, 2, 1)
        );
    }

    /// A relay whose counter counts words (one token each), so tests can predict it.
    fn relay(keep_usage: bool, prompt_tokens: u64) -> Relay {
        Relay {
            wants_stream: true,
            keep_usage,
            prompt_tokens,
            count: Some(Arc::new(|text: &str| {
                text.split_whitespace().count() as u64
            })),
        }
    }

    fn delta(text: &str) -> Bytes {
        Bytes::from(format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}],\"usage\":null}}\n\n"
        ))
    }

    #[tokio::test]
    async fn a_stream_cut_at_shutdown_ends_with_an_error_event_and_meters_what_was_relayed() {
        let (tx_chunks, rx_chunks) =
            futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        tx_chunks.unbounded_send(Ok(delta("one two "))).unwrap();
        tx_chunks.unbounded_send(Ok(delta("three"))).unwrap();
        let cut = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut relayed = relay_stream(
            rx_chunks,
            relay(false, 42),
            Duration::from_secs(30),
            cut.clone(),
            Usage::default(),
            Instant::now(),
            Some(Box::new(move |u| tx.send(u).unwrap())),
        );
        assert!(relayed.next().await.is_some());
        assert!(relayed.next().await.is_some());
        // The upstream is still open (tx_chunks alive) when the grace period ends.
        cut.cancel();
        let last = relayed.next().await.unwrap().unwrap();
        let last = String::from_utf8_lossy(&last).into_owned();
        assert!(last.starts_with("data: {\"error\""), "{last}");
        assert!(last.contains("ServiceUnavailable"), "{last}");
        assert!(relayed.next().await.is_none(), "the stream ends");
        let usage = rx.recv().unwrap();
        assert_eq!(
            (
                usage.status,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cut
            ),
            (503, 42, 3, true),
            "never a record of 0 tokens"
        );
        drop(relayed);
        assert!(rx.try_recv().is_err(), "exactly one record");
        drop(tx_chunks);
    }

    #[tokio::test]
    async fn a_hangup_before_the_usage_meters_the_relayed_text_and_the_prompt() {
        let upstream = futures::stream::iter(vec![
            Ok::<_, std::io::Error>(delta("alpha beta")),
            Ok(delta("gamma")),
        ]);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut relayed = relay_stream(
            upstream,
            relay(false, 7),
            Duration::from_secs(1),
            CancellationToken::new(),
            Usage::default(),
            Instant::now(),
            Some(Box::new(move |u| tx.send(u).unwrap())),
        );
        assert!(relayed.next().await.is_some());
        drop(relayed);
        let usage = rx.recv().unwrap();
        assert_eq!(
            (
                usage.status,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cut
            ),
            (499, 7, 2, true)
        );
    }

    #[test]
    fn the_text_of_chunks_is_read_from_every_kind_of_delta() {
        let mut text = String::new();
        chunk_text(
            br#"{"choices":[{"delta":{"content":"Hi "}},{"delta":{"content":"there"}}]}"#,
            &mut text,
        );
        chunk_text(
            br#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}]}"#,
            &mut text,
        );
        chunk_text(br#"{"choices":[{"text":" legacy"}]}"#, &mut text);
        chunk_text(br#"{"choices":[],"prompt_filter_results":[]}"#, &mut text);
        chunk_text(b"not json", &mut text);
        assert_eq!(text, "Hi there{\"a\":1} legacy");
    }

    #[test]
    fn retry_after_prefers_milliseconds_then_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn events_are_cut_at_blank_lines() {
        assert_eq!(find_event_end(b"data: {}\n\ndata: x"), Some(10));
        assert_eq!(find_event_end(b"data: {}\r\n\r\n"), Some(12));
        assert_eq!(find_event_end(b"data: {}\n"), None);
        assert_eq!(event_data(b"data: [DONE]\n\n"), Some(b"[DONE]".as_slice()));
        assert!(has_usage(br#"{"choices":[],"usage":{"prompt_tokens":3}}"#));
        assert!(!has_usage(br#"{"choices":[{}],"usage":null}"#));
    }

    #[tokio::test]
    async fn the_usage_chunk_is_metered_and_dropped_unless_asked_for() {
        let events = [
            "data: {\"choices\":[],\"prompt_filter_results\":[]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":1}}}\n\ndata: [DONE]\n\n",
        ];
        for keep in [false, true] {
            let (tx, rx) = std::sync::mpsc::channel();
            let upstream = futures::stream::iter(
                events.map(|e| Ok::<_, std::io::Error>(Bytes::from_static(e.as_bytes()))),
            );
            let relayed: Vec<Bytes> = relay_stream(
                upstream,
                relay(keep, 0),
                Duration::from_secs(1),
                CancellationToken::new(),
                Usage::default(),
                Instant::now(),
                Some(Box::new(move |u| tx.send(u).unwrap())),
            )
            .map(|r| r.unwrap())
            .collect()
            .await;
            let text: String = relayed
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            assert_eq!(text.contains("\"usage\":{"), keep, "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
            let usage = rx.recv().unwrap();
            assert_eq!(
                (
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens
                ),
                (5, 2, 1)
            );
        }
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_mid_stream_is_still_metered() {
        let upstream = futures::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(
                b"data: {\"choices\":[{}],\"usage\":null}\n\n",
            )),
            Ok(Bytes::from_static(
                b"data: {\"choices\":[{}],\"usage\":null}\n\n",
            )),
        ]);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut relayed = relay_stream(
            upstream,
            relay(false, 0),
            Duration::from_secs(1),
            CancellationToken::new(),
            Usage::default(),
            Instant::now(),
            Some(Box::new(move |u| tx.send(u).unwrap())),
        );
        assert!(relayed.next().await.is_some());
        drop(relayed);
        assert_eq!(rx.recv().unwrap().status, 499);
        assert!(rx.try_recv().is_err(), "exactly one record");
    }

    #[tokio::test]
    async fn a_cut_stream_ends_with_an_error_event() {
        let upstream = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
            b"data: {\"choices\":[{}],\"usage\":null}\n\n",
        ))]);
        let (tx, rx) = std::sync::mpsc::channel();
        let relayed: Vec<Bytes> = relay_stream(
            upstream,
            relay(false, 0),
            Duration::from_secs(1),
            CancellationToken::new(),
            Usage::default(),
            Instant::now(),
            Some(Box::new(move |u| tx.send(u).unwrap())),
        )
        .map(|r| r.unwrap())
        .collect()
        .await;
        let last = String::from_utf8_lossy(relayed.last().unwrap()).into_owned();
        assert!(last.starts_with("data: {\"error\""), "{last}");
        assert_eq!(rx.recv().unwrap().status, 502);
    }
}
