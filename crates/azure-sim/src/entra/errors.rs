//! Error answers of the identity endpoints, in the shapes the real services use:
//! - the token endpoint (and IMDS when it relays Entra): OAuth 2.0 `{"error",
//!   "error_description":"AADSTSnnn: ...\r\nTrace ID: ..\r\nCorrelation ID: ..\r\nTimestamp: ..",
//!   "error_codes":[n],"timestamp","trace_id","correlation_id","error_uri"}`;
//! - IMDS's own checks: `{"error","error_description"}`;
//! - the App Service identity endpoint: `{"statusCode","message"}`.
//!
//! No message ever contains a secret or an assertion: only ids, issuers, subjects, audiences.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::common::json_response_body;

/// An Entra (AADSTS) error from the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AadError {
    pub status: StatusCode,
    /// The OAuth 2.0 `error` value (`invalid_client`, `invalid_request`, ...).
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    /// The message after `AADSTSnnn: `.
    pub message: String,
}

impl AadError {
    fn new(status: StatusCode, error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    /// AADSTS900144: a required form parameter is missing.
    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// AADSTS70003: a grant type other than the ones supported.
    pub fn unsupported_grant_type(grant_type: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
    }

    /// AADSTS90002: no such tenant.
    pub fn tenant_not_found(tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."),
        )
    }

    /// AADSTS700016: no application with this client id in the tenant.
    pub fn unknown_client(client_id: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
        )
    }

    /// AADSTS7000215: the client secret does not match.
    pub fn invalid_secret(client_id: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
        )
    }

    /// AADSTS7000218: neither a secret nor an assertion.
    pub fn missing_credential() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    }

    /// AADSTS70011: a scope that is not a resource identifier.
    pub fn invalid_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!("The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
        )
    }

    /// AADSTS1002012: client credentials need `{resource}/.default`.
    pub fn scope_without_default(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )
    }

    /// AADSTS500011: the resource (audience) does not exist in the tenant.
    pub fn unknown_resource(resource: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!("The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
        )
    }

    /// AADSTS50027: the assertion is not a JWT.
    pub fn malformed_assertion() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        )
    }

    /// AADSTS700211: no federated credential of the app trusts the assertion's issuer.
    pub fn no_federated_issuer(issuer: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            700211,
            format!("No matching federated identity record found for presented assertion issuer '{issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
        )
    }

    /// AADSTS700212: the issuer matches but no credential accepts the assertion's audience.
    pub fn no_federated_audience(audience: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            700212,
            format!("No matching federated identity record found for presented assertion audience '{audience}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
        )
    }

    /// AADSTS700213: the issuer matches but no credential names the assertion's subject.
    pub fn no_federated_subject(subject: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            700213,
            format!("No matching federated identity record found for presented assertion subject '{subject}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
        )
    }

    /// AADSTS50013: the assertion's signature does not verify with the issuer's keys.
    pub fn assertion_signature() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            50013,
            "Assertion failed signature validation. [Reason - The key was not found.]",
        )
    }

    /// AADSTS700024: the assertion is expired or not valid yet.
    pub fn assertion_time(now: i64, nbf: i64, exp: i64) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                iso(now),
                iso(nbf),
                iso(exp)
            ),
        )
    }

    /// The answer while an outage is injected (`PUT /_sim/entra/outage`).
    pub fn outage() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again. (injected outage)",
        )
    }

    /// The JSON body, with trace and correlation ids and Entra's timestamp format.
    pub fn body(&self, correlation_id: &str, host: &str, now: i64) -> serde_json::Value {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let timestamp = chrono::DateTime::from_timestamp(now, 0)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M:%SZ")
            .to_string();
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.message
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://{host}/error?code={}", self.code),
        })
    }

    pub fn into_response(self, correlation_id: &str, host: &str, now: i64) -> Response {
        let body = self.body(correlation_id, host, now);
        (self.status, json_response_body(&body)).into_response()
    }
}

/// `2024-05-01T10:00:00.0000000Z`, how Entra writes times in messages.
fn iso(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S.0000000Z")
        .to_string()
}

/// An IMDS answer of its own (not relayed from Entra): `{"error","error_description"}`.
pub fn imds_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        json_response_body(&json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// An App Service identity endpoint error: `{"statusCode","message"}`.
pub fn app_service_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        json_response_body(&json!({"statusCode": status.as_u16(), "message": message})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_entras_fields_and_the_code_in_the_description() {
        let body = AadError::invalid_secret("app-1").body("corr-1", "login.example", 0);
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(body["error_codes"], json!([7000215]));
        assert_eq!(body["correlation_id"], "corr-1");
        assert_eq!(body["timestamp"], "1970-01-01 00:00:00Z");
        let description = body["error_description"].as_str().unwrap_or_default();
        assert!(description.starts_with("AADSTS7000215: Invalid client secret provided."));
        assert!(description.contains("\r\nCorrelation ID: corr-1\r\n"));
        assert_eq!(
            body["error_uri"],
            "https://login.example/error?code=7000215"
        );
    }
}
