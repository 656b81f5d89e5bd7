//! Injected faults: what the next requests to a resource (or one of its deployments) should
//! suffer instead of, or before, their normal answer.
//!
//! Faults are matched in the order they were added. Delays accumulate and the request goes
//! on; the first matching terminal fault (status, reset, cut stream) decides the outcome.
//! A `cut_stream` fault only matches streaming requests. `count` is how many requests a
//! fault affects (default 1); `0` means every request until cleared.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault as posted to `POST /_sim/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Resource or search service name.
    pub resource: String,
    /// Restrict to one deployment (Azure OpenAI); all of the resource's requests otherwise.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Number of requests affected; 0 = unlimited.
    #[serde(default = "one")]
    pub count: u64,
    #[serde(flatten)]
    pub action: FaultAction,
}

fn one() -> u64 {
    1
}

impl FaultSpec {
    fn new(resource: impl Into<String>, action: FaultAction) -> Self {
        Self {
            resource: resource.into(),
            deployment: None,
            count: 1,
            action,
        }
    }

    /// The next request answers `status` with a default Azure error body and no
    /// `retry-after` headers.
    pub fn status(resource: impl Into<String>, status: u16) -> Self {
        Self::new(
            resource,
            FaultAction::Status {
                status,
                retry_after: None,
                retry_after_ms: None,
                headers: BTreeMap::new(),
                body: None,
            },
        )
    }

    /// The next request waits `delay_ms` first.
    pub fn delay(resource: impl Into<String>, delay_ms: u64) -> Self {
        Self::new(resource, FaultAction::Delay { delay_ms })
    }

    /// The next request's connection is reset without an answer.
    pub fn reset(resource: impl Into<String>) -> Self {
        Self::new(resource, FaultAction::Reset)
    }

    /// The next streaming request is cut after `after_chunks` SSE frames.
    pub fn cut_stream(resource: impl Into<String>, after_chunks: usize) -> Self {
        Self::new(resource, FaultAction::CutStream { after_chunks })
    }

    /// Only requests to this deployment.
    pub fn for_deployment(mut self, deployment: impl Into<String>) -> Self {
        self.deployment = Some(deployment.into());
        self
    }

    /// Affects `count` requests (0: every request until cleared).
    pub fn times(mut self, count: u64) -> Self {
        self.count = count;
        self
    }

    /// Adds `retry-after: seconds` (status faults only).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        if let FaultAction::Status { retry_after, .. } = &mut self.action {
            *retry_after = Some(seconds);
        }
        self
    }

    /// Adds `retry-after-ms: ms` (status faults only).
    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        if let FaultAction::Status { retry_after_ms, .. } = &mut self.action {
            *retry_after_ms = Some(ms);
        }
        self
    }

    /// Adds a response header (status faults only), e.g. `x-should-retry: false`.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let FaultAction::Status { headers, .. } = &mut self.action {
            headers.insert(name.into(), value.into());
        }
        self
    }
}

/// What happens to a matched request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with `status` and an Azure error body. For 429 the `retry-after` (seconds) and
    /// `retry-after-ms` headers are sent only when given; `headers` adds any other header
    /// (e.g. `x-should-retry`); `body` replaces the default error body.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        retry_after_ms: Option<u64>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<serde_json::Value>,
    },
    /// Wait `delay_ms` before handling the request normally.
    Delay { delay_ms: u64 },
    /// Close the TCP connection (with a reset) without answering.
    Reset,
    /// Stream `after_chunks` SSE events, then drop the connection (no `[DONE]`).
    CutStream { after_chunks: usize },
}

impl FaultAction {
    fn is_terminal(&self) -> bool {
        !matches!(self, FaultAction::Delay { .. })
    }
}

/// A registered fault and how many more requests it affects.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Requests already affected.
    pub hits: u64,
}

/// The outcome of matching a request against the fault table.
#[derive(Debug, Default)]
pub struct Injected {
    /// Total delay to apply first.
    pub delay: Duration,
    /// The terminal fault, if any.
    pub terminal: Option<FaultAction>,
}

/// All registered faults. Empty is the common case and costs one atomic load.
#[derive(Default)]
pub struct FaultTable {
    faults: parking_lot::Mutex<Vec<Fault>>,
    len: AtomicUsize,
    next_id: AtomicU64,
}

impl FaultTable {
    /// Registers a fault and returns its id.
    pub fn add(&self, spec: FaultSpec) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut faults = self.faults.lock();
        faults.push(Fault { id, spec, hits: 0 });
        self.len.store(faults.len(), Ordering::Release);
        id
    }

    /// Faults still active.
    pub fn list(&self) -> Vec<Fault> {
        self.faults.lock().clone()
    }

    /// Removes one fault; false if no such id.
    pub fn remove(&self, id: u64) -> bool {
        let mut faults = self.faults.lock();
        let before = faults.len();
        faults.retain(|f| f.id != id);
        self.len.store(faults.len(), Ordering::Release);
        faults.len() != before
    }

    /// Removes every fault.
    pub fn clear(&self) {
        let mut faults = self.faults.lock();
        faults.clear();
        self.len.store(0, Ordering::Release);
    }

    /// Matches a request and consumes the faults that apply to it.
    pub fn take(&self, resource: &str, deployment: Option<&str>, streaming: bool) -> Injected {
        let mut injected = Injected::default();
        if self.len.load(Ordering::Acquire) == 0 {
            return injected;
        }
        let mut faults = self.faults.lock();
        for fault in faults.iter_mut() {
            let spec = &fault.spec;
            let applies = spec.resource == resource
                && spec
                    .deployment
                    .as_deref()
                    .is_none_or(|d| Some(d) == deployment)
                && (streaming || !matches!(spec.action, FaultAction::CutStream { .. }));
            if !applies {
                continue;
            }
            fault.hits += 1;
            match &spec.action {
                FaultAction::Delay { delay_ms } => {
                    injected.delay += Duration::from_millis(*delay_ms);
                }
                action => {
                    injected.terminal = Some(action.clone());
                }
            }
            if spec.action.is_terminal() {
                break;
            }
        }
        faults.retain(|f| f.spec.count == 0 || f.hits < f.spec.count);
        self.len.store(faults.len(), Ordering::Release);
        injected
    }
}

/// The answer to a terminal `status` fault.
pub fn status_response(
    status: u16,
    retry_after: Option<u64>,
    retry_after_ms: Option<u64>,
    headers: &BTreeMap<String, String>,
    body: Option<&serde_json::Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let body = body
        .cloned()
        .unwrap_or_else(|| crate::common::default_fault_error(status, retry_after));
    let mut response = (status, crate::common::json_response_body(&body)).into_response();
    let out = response.headers_mut();
    if let Some(seconds) = retry_after {
        out.insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    if let Some(ms) = retry_after_ms {
        out.insert(
            http::HeaderName::from_static("retry-after-ms"),
            http::HeaderValue::from(ms),
        );
    }
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            out.insert(name, value);
        }
    }
    response
}

/// Drops the client's connection and never answers (the connection task ends this future).
pub async fn reset_connection(conn: Option<&crate::server::ConnCtl>) -> axum::response::Response {
    match conn {
        Some(conn) => {
            conn.reset();
            std::future::pending::<axum::response::Response>().await
        }
        // Not on a real connection (e.g. a router driven directly): the best we can do.
        None => status_response(502, None, None, &BTreeMap::new(), None),
    }
}

/// Applies resource-level faults before a request is handled: sleeps for any delay, and
/// returns the answer of a terminal fault. `cut_stream` never matches here.
pub async fn apply_resource_faults(
    state: &crate::state::AppState,
    resource: &str,
    conn: Option<crate::server::ConnCtl>,
) -> Option<axum::response::Response> {
    let injected = state.faults.take(resource, None, false);
    if !injected.delay.is_zero() {
        tokio::time::sleep(injected.delay).await;
    }
    match injected.terminal? {
        FaultAction::Status {
            status,
            retry_after,
            retry_after_ms,
            headers,
            body,
        } => Some(status_response(
            status,
            retry_after,
            retry_after_ms,
            &headers,
            body.as_ref(),
        )),
        FaultAction::Reset => Some(reset_connection(conn.as_ref()).await),
        FaultAction::Delay { .. } | FaultAction::CutStream { .. } => None,
    }
}
