//! Doing: the HTTP calls to a search service, with the gateway's admin key. One attempt per
//! call (a search service's 503 is passed to the caller with its `Retry-After`, as Azure's
//! SDKs retry on their own); connection errors and timeouts are [`SearchError`]s.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use entra::{AuthHeader, TokenBroker, SEARCH_SCOPE};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use crate::target::Upstream;
use crate::SearchError;

/// Headers of the upstream's answer that the caller gets as they are.
pub const PASSED_HEADERS: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "x-ms-region",
    "request-id",
    "x-request-id",
    "apim-request-id",
    "elapsed-time",
];

/// The `api-version` of the gateway's own calls (provisioning, purges).
pub const ADMIN_API_VERSION: &str = "2024-07-01";

/// An upstream answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// Only [`PASSED_HEADERS`].
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as a JSON object, if it is one.
    pub fn json(&self) -> Option<Map<String, Value>> {
        match serde_json::from_slice(&self.body) {
            Ok(Value::Object(obj)) => Some(obj),
            _ => None,
        }
    }
}

/// Work handed to an [`Offload`].
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Where the CPU-heavy part of copying and comparing documents runs: a page is up to 16 MB of
/// JSON (vectors), too much to parse or write on an async worker that serves requests.
pub trait Offload: Send + Sync {
    /// Runs `job` elsewhere than the async workers; false when it cannot be queued.
    fn run(&self, job: Job) -> bool;
}

/// Calls search services.
#[derive(Clone)]
pub struct SearchClient {
    http: reqwest::Client,
    /// Entra ID tokens for services reached with a credential instead of a key.
    tokens: TokenBroker,
    /// Page work; tokio's blocking threads when not set.
    pub(crate) offload: Option<Arc<dyn Offload>>,
}

impl std::fmt::Debug for SearchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchClient")
            .field("offload", &self.offload.is_some())
            .finish_non_exhaustive()
    }
}

impl SearchClient {
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        tokens: TokenBroker,
    ) -> Result<Self, SearchError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| SearchError::Upstream(e.to_string()))?;
        Ok(Self {
            http,
            tokens,
            offload: None,
        })
    }

    /// Runs the JSON work of copies and comparisons on `offload`.
    #[must_use]
    pub fn with_offload(mut self, offload: Arc<dyn Offload>) -> Self {
        self.offload = Some(offload);
        self
    }

    /// `method {endpoint}{path}?api-version={version}` with an optional JSON body.
    pub async fn call(
        &self,
        upstream: &Upstream,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&Map<String, Value>>,
    ) -> Result<Answer, SearchError> {
        let body = body.map(json_bytes).transpose()?;
        self.call_bytes(upstream, method, path, query, body).await
    }

    /// [`SearchClient::call`] with a body already serialized (JSON).
    pub async fn call_bytes(
        &self,
        upstream: &Upstream,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, SearchError> {
        let url = if query.is_empty() {
            format!("{}{path}", upstream.endpoint)
        } else {
            format!("{}{path}?{query}", upstream.endpoint)
        };
        let auth = upstream
            .credential
            .header(&self.tokens, SEARCH_SCOPE)
            .await
            .map_err(|error| SearchError::Token {
                retry_after: error.retry_after(),
                message: format!(
                    "no Entra ID token for the search service at {}: {error}",
                    upstream.endpoint
                ),
            })?;
        let mut response = self.send(method.clone(), &url, &auth, body.clone()).await?;
        // A 401 on a cached token: one new token and one more try.
        if response.status() == StatusCode::UNAUTHORIZED {
            if let Some(auth) = upstream
                .credential
                .renewed(&self.tokens, SEARCH_SCOPE, &auth)
                .await
            {
                response = self.send(method, &url, &auth, body).await?;
            }
        }
        if upstream.credential.is_entra()
            && matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            )
        {
            let status = response.status().as_u16();
            let said = response.text().await.unwrap_or_default();
            let said: String = said.chars().take(400).collect();
            tracing::warn!(endpoint = %upstream.endpoint, status, "search service refused the gateway's Entra ID token");
            return Err(SearchError::AuthRefused(format!(
                "Azure refused the gateway's Entra ID token for the search service at {} (HTTP {status}: {said}). Check the role assignment of the gateway's identity on that service.",
                upstream.endpoint
            )));
        }
        let status = response.status();
        let mut headers = HeaderMap::new();
        for name in PASSED_HEADERS {
            if let Some(value) = response.headers().get(*name) {
                headers.insert(*name, value.clone());
            }
        }
        let body = response.bytes().await.map_err(map_error)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

tokio::task_local! {
    /// The W3C `traceparent` of the call being served: set by the caller of the client around
    /// a request's work (`TRACEPARENT.scope(..)`), sent with every search request it makes.
    pub static TRACEPARENT: http::HeaderValue;
}

impl SearchClient {
    async fn send(
        &self,
        method: Method,
        url: &str,
        auth: &AuthHeader,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, SearchError> {
        let request = self.http.request(method, url);
        let mut request = match auth {
            AuthHeader::ApiKey(key) => request.header("api-key", key.clone()),
            AuthHeader::Bearer(token) => request.header(http::header::AUTHORIZATION, token.clone()),
        }
        .header("accept", "application/json");
        if let Ok(trace) = TRACEPARENT.try_with(Clone::clone) {
            request = request.header("traceparent", trace);
        }
        if let Some(bytes) = body {
            request = request
                .header("content-type", "application/json")
                .body(bytes);
        }
        request.send().await.map_err(map_error)
    }
}

/// A JSON object as request bytes.
pub fn json_bytes(body: &Map<String, Value>) -> Result<Bytes, SearchError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| SearchError::Upstream(e.to_string()))
}

fn map_error(error: reqwest::Error) -> SearchError {
    if error.is_timeout() {
        SearchError::UpstreamTimeout
    } else {
        SearchError::Upstream(error.to_string())
    }
}
