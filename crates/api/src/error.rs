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
use tenant_registry::RegistryError;

/// An error on a data-plane route (Azure/OpenAI error JSON).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (code, message) = match &self {
            // Azure answers an unusable key with code "401" and this message.
            Self::Unauthenticated(why) => ("401", format!("Access denied: {why}.")),
            Self::Forbidden(why) => ("403", format!("Forbidden: {why}.")),
            Self::BadRequest(why) => ("BadRequest", why.clone()),
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                ("InternalServerError", "The server had an error.".to_owned())
            }
        };
        azure_error(status, code, &message)
    }
}

/// A response in Azure's error shape.
pub fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// [`azure_error`] naming the request parameter at fault (`"param"`), as Azure OpenAI does.
pub fn azure_error_with_param(
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
}

impl Audience {
    pub fn of(path: &str) -> Self {
        if path == "/admin" || path.starts_with("/admin/") || path == "/metrics" {
            Self::Admin
        } else {
            Self::DataPlane
        }
    }
}

/// The answer to a path no route serves, in its caller's format.
pub fn route_not_found(path: &str) -> Response {
    match Audience::of(path) {
        Audience::DataPlane => azure_error(StatusCode::NOT_FOUND, "404", "Resource not found"),
        Audience::Admin => AdminError::NotFound("no such admin route".into()).into_response(),
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
    if !(status.is_client_error() || status.is_server_error()) {
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
        Audience::Admin => ADMIN_BODY_LIMIT,
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
        Audience::Admin => admin_code,
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
}
