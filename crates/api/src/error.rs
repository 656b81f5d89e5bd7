//! The gateway's errors and their wire shapes.
//!
//! Data-plane routes answer in Azure's shape, `{"error":{"code","message"}}`, because that is
//! what the official SDKs parse. Admin routes answer in one envelope of their own,
//! `{"error":{"code","message","field"?}}` with snake_case codes. A 5xx body says nothing
//! internal; the cause is logged once, here.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;
use tenant_registry::RegistryError;

/// An error on a data-plane route, answered in Azure's error JSON (`{"error": {"code",
/// "message", "param"?}}`, the shape the official SDKs parse). Every data-plane refusal is a
/// variant here; its status, code, message, parameter and `Retry-After` come from one match
/// each, so a wire shape is decided in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// Index definitions go through the admin API's templates, never the data plane.
    #[error("indexes are managed by administrators")]
    ManagedByAdministrators,
    /// A request the OpenAI routes cannot take; `param` names the field at fault.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// A request the search routes cannot take.
    #[error("{0}")]
    SearchParameter(String),
    #[error("{0}")]
    ContextLengthExceeded(String),
    /// The call can never fit a limit, whatever the wait.
    #[error("the request can never fit the {dimension} limit of {limit}")]
    ExceedsQuota { dimension: String, limit: u64 },
    #[error("no such route")]
    RouteNotFound,
    #[error("no such deployment")]
    DeploymentNotFound,
    #[error("no such index")]
    IndexNotFound(String),
    #[error("no such document")]
    DocumentNotFound { key: String, index: String },
    #[error("no such response")]
    ResponseNotFound(String),
    #[error("the request body did not arrive in time")]
    BodyTimedOut,
    #[error("{dimension} limit reached")]
    RateLimited {
        dimension: String,
        retry_after: Duration,
    },
    #[error("monthly token budget exhausted")]
    BudgetExhausted,
    /// The monthly spending budget (the tenant's or the key's) cannot hold the call's
    /// estimated cost.
    #[error("monthly spending budget exhausted")]
    SpendingExhausted,
    /// The search service answered nothing usable.
    #[error("the search service could not be reached")]
    SearchUnreachable,
    #[error("the search service did not answer in time")]
    SearchTimedOut,
    /// Azure refused the gateway's Entra ID token (a missing role assignment): 502, naming
    /// the upstream.
    #[error("{0}")]
    UpstreamAuthRefused(String),
    /// The upstream is reached with an Entra ID credential and no token can be had now. The
    /// message names the upstream and why, never a secret.
    #[error("{message}")]
    UpstreamAuthUnavailable {
        message: String,
        retry_after: Duration,
    },
    /// An upstream answer the gateway had to read could not be (cut short, not JSON).
    #[error("{0}")]
    Upstream(&'static str),
    /// Refused for now; retry (after `retry_after`, when given).
    #[error("{message}")]
    Unavailable {
        message: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    /// The index or response being moved, the gateway draining, a pool busy: 503.
    pub fn unavailable(message: &'static str, retry_after: Option<Duration>) -> Self {
        Self::Unavailable {
            message,
            retry_after,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::ManagedByAdministrators => StatusCode::FORBIDDEN,
            Self::BadRequest { .. }
            | Self::SearchParameter(_)
            | Self::ContextLengthExceeded(_)
            | Self::ExceedsQuota { .. } => StatusCode::BAD_REQUEST,
            Self::RouteNotFound
            | Self::DeploymentNotFound
            | Self::IndexNotFound(_)
            | Self::DocumentNotFound { .. }
            | Self::ResponseNotFound(_) => StatusCode::NOT_FOUND,
            Self::BodyTimedOut => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } | Self::BudgetExhausted | Self::SpendingExhausted => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::SearchUnreachable | Self::Upstream(_) | Self::UpstreamAuthRefused(_) => {
                StatusCode::BAD_GATEWAY
            }
            Self::SearchTimedOut => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable { .. } | Self::UpstreamAuthUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` Azure (or OpenAI, on the routes it shares) answers for it.
    pub fn code(&self) -> &'static str {
        match self {
            // Azure answers an unusable key with code "401", a missing route with "404".
            Self::Unauthenticated(_) => "401",
            Self::Forbidden(_) => "403",
            Self::ManagedByAdministrators => "Forbidden",
            Self::BadRequest { .. } => "BadRequest",
            Self::SearchParameter(_) => "InvalidRequestParameter",
            Self::ContextLengthExceeded(_) => "context_length_exceeded",
            Self::ExceedsQuota { .. } => "RequestExceedsQuota",
            Self::RouteNotFound => "404",
            Self::DeploymentNotFound => "DeploymentNotFound",
            Self::IndexNotFound(_) => "IndexNotFound",
            Self::DocumentNotFound { .. } => "DocumentNotFound",
            Self::ResponseNotFound(_) => "not_found",
            Self::BodyTimedOut => "RequestTimeout",
            Self::RateLimited { .. } => "429",
            Self::BudgetExhausted | Self::SpendingExhausted => "insufficient_quota",
            Self::SearchUnreachable => "BadGateway",
            Self::SearchTimedOut => "GatewayTimeout",
            Self::Upstream(_) => "UpstreamError",
            Self::Unavailable { .. } => "ServiceUnavailable",
            Self::UpstreamAuthUnavailable { .. } => "UpstreamAuthenticationUnavailable",
            Self::UpstreamAuthRefused(_) => "UpstreamAuthenticationFailed",
            Self::Internal(_) => "InternalServerError",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Unauthenticated(why) => format!("Access denied: {why}."),
            Self::Forbidden(why) => format!("Forbidden: {why}."),
            Self::ManagedByAdministrators => {
                "Indexes are managed by administrators through index templates.".into()
            }
            Self::BadRequest { message, .. }
            | Self::SearchParameter(message)
            | Self::ContextLengthExceeded(message) => message.clone(),
            Self::ExceedsQuota { dimension, limit } => format!(
                "This request can never fit your {dimension} limit of {limit}: lower max_tokens \
                 (or n) or shorten the prompt."
            ),
            Self::RouteNotFound => "Resource not found".into(),
            Self::DeploymentNotFound => "The API deployment for this resource does not exist. \
                If you created the deployment within the last 5 minutes, please wait a moment \
                and try again."
                .into(),
            // The names are the caller's own input, shown cut to a bounded length.
            Self::IndexNotFound(name) => format!(
                "The index '{}' was not found.",
                name.chars().take(128).collect::<String>()
            ),
            Self::DocumentNotFound { key, index } => format!(
                "No document with key '{}' was found in index '{index}'.",
                key.chars().take(100).collect::<String>()
            ),
            Self::ResponseNotFound(id) => format!(
                "Response with id '{}' not found.",
                id.chars().take(200).collect::<String>()
            ),
            Self::BodyTimedOut => "The request body did not arrive in time.".into(),
            Self::RateLimited {
                dimension,
                retry_after,
            } => format!(
                "Requests to this model have exceeded the {dimension} limit of your quota. \
                 Please retry after {} seconds.",
                whole_seconds(*retry_after)
            ),
            Self::BudgetExhausted => "You exceeded your monthly token budget. It renews at the \
                start of the next month (UTC); ask your administrator to raise it."
                .into(),
            Self::SpendingExhausted => "You exceeded your monthly spending budget: the cost of \
                this request at its maximum output does not fit what is left. It renews at the \
                start of the next month (UTC); a smaller max_tokens may fit, or ask your \
                administrator to raise it."
                .into(),
            Self::SearchUnreachable => "The search service could not be reached.".into(),
            Self::SearchTimedOut => "The search service did not answer in time.".into(),
            Self::Upstream(message) | Self::Unavailable { message, .. } => (*message).to_owned(),
            Self::UpstreamAuthRefused(message) => message.clone(),
            Self::UpstreamAuthUnavailable {
                message,
                retry_after,
            } => format!(
                "The gateway cannot authenticate to the upstream: {message}. Please retry after \
                 {} seconds.",
                whole_seconds(*retry_after)
            ),
            Self::Internal(_) => "The server had an error.".into(),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::BadRequest { param, .. } => param.as_deref(),
            Self::ContextLengthExceeded(_) => Some("messages"),
            Self::ExceedsQuota { .. } => Some("max_tokens"),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::Unavailable { retry_after, .. } => *retry_after,
            Self::UpstreamAuthUnavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A wait as `Retry-After` says it: whole seconds, rounded up, at least one.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let mut response =
            azure_error_with_param(self.status(), self.code(), &self.message(), self.param());
        if let Some(wait) = self.retry_after() {
            set_retry_after(response.headers_mut(), wait);
        }
        response
    }
}

/// `Retry-After` (whole seconds) and Azure OpenAI's `retry-after-ms`.
pub fn set_retry_after(headers: &mut axum::http::HeaderMap, wait: Duration) {
    headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(wait)));
    headers.insert(
        axum::http::HeaderName::from_static("retry-after-ms"),
        HeaderValue::from(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)),
    );
}

/// A response in Azure's error shape, naming the request parameter at fault (`"param"`) as
/// Azure OpenAI does.
fn azure_error_with_param(
    status: StatusCode,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

/// The largest body a data-plane route buffers (a chat with images, a 1,000-document batch).
pub const DATA_PLANE_BODY_LIMIT: usize = 32 * 1024 * 1024;
/// The largest body an admin route buffers.
pub const ADMIN_BODY_LIMIT: usize = 2 * 1024 * 1024;
/// How much of a framework's plain-text rejection is read to become the message.
const REJECTION_TEXT_LIMIT: usize = 4096;

/// Who a response is for, which decides the shape of its error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Tenants and their SDKs: Azure's `{"error":{"code","message"}}`.
    DataPlane,
    /// `/admin/*` and `/metrics`: the admin envelope.
    Admin,
    /// `/console/*`: people in a browser; the console answers its errors as pages.
    Console,
}

impl Audience {
    pub fn of(path: &str) -> Self {
        if path == "/admin" || path.starts_with("/admin/") || path == "/metrics" {
            Self::Admin
        } else if path == "/console" || path.starts_with("/console/") {
            Self::Console
        } else {
            Self::DataPlane
        }
    }
}

/// The answer to a path no route serves, in its caller's format.
pub fn route_not_found(path: &str) -> Response {
    match Audience::of(path) {
        Audience::DataPlane => ApiError::RouteNotFound.into_response(),
        Audience::Admin | Audience::Console => {
            AdminError::NotFound("no such admin route".into()).into_response()
        }
    }
}

/// Every error answer in its caller's format. Handlers already answer in it; what remains are
/// the framework's own rejections (a body over the size limit, a method a route does not
/// take, a malformed path or query), which come as plain text or with no body at all. They
/// keep their status and headers (`Allow` on a 405) and get a JSON body. Success answers and
/// JSON errors pass untouched (one status check and one header look-up).
pub async fn in_callers_format(
    audience: Audience,
    method: &Method,
    response: Response,
) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || audience == Audience::Console {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_TEXT_LIMIT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let allowed = parts
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(ToOwned::to_owned);
    let limit = match audience {
        Audience::DataPlane => DATA_PLANE_BODY_LIMIT,
        Audience::Admin | Audience::Console => ADMIN_BODY_LIMIT,
    };
    let (azure_code, admin_code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "RequestEntityTooLarge",
            "payload_too_large",
            format!(
                "The request body is larger than this route accepts ({} MiB).",
                limit / (1024 * 1024)
            ),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "MethodNotAllowed",
            "method_not_allowed",
            match allowed {
                Some(allowed) if !allowed.is_empty() => format!(
                    "The method {method} is not allowed on this route; it accepts {allowed}."
                ),
                _ => format!("The method {method} is not allowed on this route."),
            },
        ),
        StatusCode::NOT_FOUND => ("404", "not_found", "Resource not found".to_owned()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "UnsupportedMediaType",
            "unsupported_media_type",
            "Send the body as JSON with `Content-Type: application/json`.".to_owned(),
        ),
        _ if status.is_server_error() => {
            tracing::error!(status = status.as_u16(), body = %text, "a plain-text server error");
            (
                "InternalServerError",
                "internal_error",
                "The server had an error.".to_owned(),
            )
        }
        _ => (
            "BadRequest",
            "invalid_request",
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("The request is not valid.")
                    .to_owned()
            } else {
                text
            },
        ),
    };
    let code = match audience {
        Audience::DataPlane => azure_code,
        Audience::Admin | Audience::Console => admin_code,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// An error on an admin route.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or invalid admin token")]
    Unauthenticated,
    /// A console session's state-changing request without its CSRF token.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// A store the answer needs is down.
    #[error("{0}")]
    Unavailable(String),
    #[error("the request body is larger than this route accepts ({} MiB)", ADMIN_BODY_LIMIT / (1024 * 1024))]
    PayloadTooLarge,
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Registry(error) => match error {
                RegistryError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
                RegistryError::Conflict(_) => StatusCode::CONFLICT,
                RegistryError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                RegistryError::Corrupt(_) | RegistryError::Crypto => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::Invalid { .. } => "invalid_request",
            Self::Conflict(_) => "conflict",
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "store_unavailable",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Registry(error) => match error {
                RegistryError::Invalid { .. } => "invalid_request",
                RegistryError::NotFound { .. } => "not_found",
                RegistryError::Conflict(_) => "conflict",
                RegistryError::Store(_) => "store_unavailable",
                RegistryError::Corrupt(_) | RegistryError::Crypto => "internal_error",
            },
        }
    }
}

impl AdminError {
    /// The same error with the field it names (or, naming none, the error itself) placed
    /// under `prefix`: `tenants[3]` + `slug` is `tenants[3].slug`.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { field, message } => Self::Invalid {
                field: Some(match field {
                    Some(field) if field.starts_with('[') => format!("{prefix}{field}"),
                    Some(field) => format!("{prefix}.{field}"),
                    None => prefix.to_owned(),
                }),
                message,
            },
            Self::Registry(error) => Self::Registry(error.within(prefix)),
            other => other,
        }
    }

    /// The status and the envelope (`{"error": {"code", "message", "field"?}}`) this error
    /// answers with; a server error is logged here and described without its cause.
    pub fn envelope(&self) -> (StatusCode, serde_json::Value) {
        let status = self.status();
        let field = match self {
            Self::Invalid { field, .. } => field.clone(),
            Self::Registry(RegistryError::Invalid { field, .. }) => Some(field.clone()),
            _ => None,
        };
        let message = if status.is_server_error() {
            tracing::error!(error = ?self, "admin request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => "the registry store is unavailable".to_owned(),
                _ => "internal error".to_owned(),
            }
        } else {
            match self {
                Self::Registry(RegistryError::Invalid { message, .. }) => message.clone(),
                other => other.to_string(),
            }
        };
        let mut error = json!({"code": self.code(), "message": message});
        if let Some(field) = field {
            error["field"] = json!(field);
        }
        (status, json!({ "error": error }))
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, body) = self.envelope();
        (status, Json(body)).into_response()
    }
}

/// The field a JSON body error is about. axum reports serde errors with their path
/// (`openai.models: ...`); an unknown or missing field names itself in backquotes. serde_json
/// reports some type errors as syntax errors (a number where an enum's string belongs), which
/// axum words differently but still gives the path of.
fn field_of(message: &str) -> Option<String> {
    let detail = message
        .split_once("target type: ")
        .or_else(|| message.split_once("as JSON: "))?
        .1;
    let (path, rest) = match detail.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (Some(path), rest),
        _ => (None, detail),
    };
    // An unknown field is already the last segment of the path; a missing one is not.
    let named = if rest.starts_with("missing field")
        || (path.is_none() && rest.starts_with("unknown field"))
    {
        rest.split('`').nth(1)
    } else {
        None
    };
    match (path, named) {
        (Some(path), Some(name)) => Some(format!("{path}.{name}")),
        (Some(path), None) => Some(path.to_owned()),
        (None, Some(name)) => Some(name.to_owned()),
        (None, None) => None,
    }
}

impl From<JsonRejection> for AdminError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::PayloadTooLarge;
        }
        let message = rejection.body_text();
        Self::Invalid {
            field: field_of(&message),
            message,
        }
    }
}

impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Invalid {
            field: None,
            message: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for AdminError {
    fn from(rejection: PathRejection) -> Self {
        Self::NotFound(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn json_errors_name_their_field() {
        let cases = [
            ("Failed to deserialize the JSON body into the target type: slug: slug must be 2 to 40 characters long at line 1 column 9", Some("slug")),
            ("Failed to deserialize the JSON body into the target type: unknown field `nmae`, expected one of `name` at line 1 column 7", Some("nmae")),
            ("Failed to deserialize the JSON body into the target type: colour: unknown field `colour`, expected one of `slug` at line 1 column 9", Some("colour")),
            ("Failed to deserialize the JSON body into the target type: openai: missing field `resources` at line 1 column 40", Some("openai.resources")),
            ("Failed to parse the request body as JSON: EOF while parsing", None),
            ("Failed to parse the request body as JSON: context_overflow: expected value at line 1 column 21", Some("context_overflow")),
            ("Failed to parse the request body as JSON: key must be a string at line 1 column 2", None),
        ];
        for (message, field) in cases {
            assert_eq!(field_of(message).as_deref(), field, "{message}");
        }
    }

    /// Each data-plane error's wire shape, in one table: status, code, `param`, and whether
    /// it says when to retry. A secret-free message is checked for the internal error.
    #[tokio::test]
    async fn every_data_plane_error_answers_in_azures_shape() {
        use super::ApiError;
        use axum::response::IntoResponse;
        use std::time::Duration;
        // (error, status, code, param, Retry-After)
        type Case = (
            ApiError,
            u16,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                ApiError::Unauthenticated("invalid API key"),
                401,
                "401",
                None,
                None,
            ),
            (
                ApiError::Forbidden("the tenant is suspended"),
                403,
                "403",
                None,
                None,
            ),
            (
                ApiError::ManagedByAdministrators,
                403,
                "Forbidden",
                None,
                None,
            ),
            (
                ApiError::BadRequest {
                    message: "no".into(),
                    param: Some("max_tokens".into()),
                },
                400,
                "BadRequest",
                Some("max_tokens"),
                None,
            ),
            (
                ApiError::SearchParameter("x".into()),
                400,
                "InvalidRequestParameter",
                None,
                None,
            ),
            (
                ApiError::ContextLengthExceeded("long".into()),
                400,
                "context_length_exceeded",
                Some("messages"),
                None,
            ),
            (
                ApiError::ExceedsQuota {
                    dimension: "tokens-per-minute".into(),
                    limit: 10,
                },
                400,
                "RequestExceedsQuota",
                Some("max_tokens"),
                None,
            ),
            (ApiError::RouteNotFound, 404, "404", None, None),
            (
                ApiError::DeploymentNotFound,
                404,
                "DeploymentNotFound",
                None,
                None,
            ),
            (
                ApiError::IndexNotFound("docs".into()),
                404,
                "IndexNotFound",
                None,
                None,
            ),
            (
                ApiError::ResponseNotFound("resp_1".into()),
                404,
                "not_found",
                None,
                None,
            ),
            (ApiError::BodyTimedOut, 408, "RequestTimeout", None, None),
            (
                ApiError::RateLimited {
                    dimension: "requests-per-minute".into(),
                    retry_after: Duration::from_millis(1500),
                },
                429,
                "429",
                None,
                Some("2"),
            ),
            (
                ApiError::BudgetExhausted,
                429,
                "insufficient_quota",
                None,
                None,
            ),
            (
                ApiError::SpendingExhausted,
                429,
                "insufficient_quota",
                None,
                None,
            ),
            (ApiError::SearchUnreachable, 502, "BadGateway", None, None),
            (
                ApiError::Upstream("cut short"),
                502,
                "UpstreamError",
                None,
                None,
            ),
            (ApiError::SearchTimedOut, 504, "GatewayTimeout", None, None),
            (
                ApiError::UpstreamAuthRefused("no role".into()),
                502,
                "UpstreamAuthenticationFailed",
                None,
                None,
            ),
            (
                ApiError::UpstreamAuthUnavailable {
                    message: "no token".into(),
                    retry_after: Duration::from_secs(3),
                },
                503,
                "UpstreamAuthenticationUnavailable",
                None,
                Some("3"),
            ),
            (
                ApiError::unavailable("moving", Some(Duration::from_secs(5))),
                503,
                "ServiceUnavailable",
                None,
                Some("5"),
            ),
            (
                ApiError::Internal(anyhow::anyhow!("password=hunter2")),
                500,
                "InternalServerError",
                None,
                None,
            ),
        ];
        for (error, status, code, param, retry_after) in cases {
            let shown = format!("{error:?}");
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{shown}");
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                retry_after,
                "{shown}"
            );
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            assert_eq!(body["error"]["code"], code, "{shown}");
            assert_eq!(body["error"]["param"].as_str(), param, "{shown}");
            assert!(body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            assert!(!body.to_string().contains("hunter2"), "{body}");
        }
    }
}
