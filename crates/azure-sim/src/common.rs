//! Pieces every emulated API shares: the per-request context the dispatcher hands to the
//! API routers, Azure's error body, and the standard response headers.

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::server::ConnCtl;
use crate::state::Resource;

pub const APIM_REQUEST_ID: HeaderName = HeaderName::from_static("apim-request-id");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_MS_REGION: HeaderName = HeaderName::from_static("x-ms-region");

/// Inserted into every request's extensions by the dispatcher before the OpenAI or search
/// router sees it. The URI those routers see is the path below `/r/{name}`.
#[derive(Clone)]
pub struct ReqCtx {
    /// The value of `apim-request-id` / `x-request-id` for this request.
    pub request_id: String,
    /// The resource the request was addressed to.
    pub resource: Resource,
    /// Lets a handler drop the client's TCP connection (the `reset` fault).
    pub conn: Option<ConnCtl>,
    /// Whether the request came in on the TLS listener (links then use `https`).
    pub tls: bool,
}

/// An error in Azure's shape: `{"error":{"code":..,"message":..}}` plus any extra fields.
#[derive(Debug, Clone)]
pub struct AzureError {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl AzureError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: serde_json::json!({"error": {"code": code, "message": message.into()}}),
            headers: Vec::new(),
        }
    }

    /// A 400 in the shape Azure OpenAI uses for request validation errors.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::json!({"error": {
                "code": "BadRequest",
                "message": message.into(),
                "param": param,
                "type": "invalid_request_error",
            }}),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, v));
        }
        self
    }
}

impl IntoResponse for AzureError {
    fn into_response(self) -> Response {
        let mut response = (self.status, json_response_body(&self.body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// A JSON body with `content-type: application/json`.
pub fn json_response_body(value: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// A default error body for an injected status fault.
pub fn default_fault_error(status: StatusCode, retry_after: Option<u64>) -> serde_json::Value {
    let (code, message) = match status.as_u16() {
        429 => (
            "429".to_owned(),
            format!(
                "Requests to the API have exceeded the rate limit of your current pricing tier. Please retry after {} seconds. (injected fault)",
                retry_after.unwrap_or(1)
            ),
        ),
        500 => (
            "InternalServerError".to_owned(),
            "The server had an error while processing your request. Sorry about that! (injected fault)".to_owned(),
        ),
        503 => (
            "ServiceUnavailable".to_owned(),
            "The service is temporarily unable to process your request. Please try again later. (injected fault)".to_owned(),
        ),
        other => (other.to_string(), format!("Injected fault with status {other}.")),
    };
    serde_json::json!({"error": {"code": code, "message": message}})
}
