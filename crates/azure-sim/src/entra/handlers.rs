//! The identity endpoints, served on the main router (plain and TLS listeners alike):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /{tenant}/v2.0/.well-known/openid-configuration` | OpenID discovery (MSAL reads `token_endpoint`) |
//! | `GET /{tenant}/discovery/v2.0/keys`, `GET /common/discovery/keys` | JWKS |
//! | `POST /{tenant}/oauth2/v2.0/token` | client credentials: secret or federated assertion |
//! | `GET /metadata/identity/oauth2/token` | IMDS (`Metadata: true`) |
//! | `GET /msi/token` | App Service / Container Apps (`X-IDENTITY-HEADER`) |
//!
//! URLs in discovery documents are built from the request's `Host` and whether it came in
//! over TLS, so MSAL pointed at `https://127.0.0.1:PORT` stays there. These requests are not
//! written to the request log, and nothing here logs a form field.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

use super::config::{IdentityConfig, PrincipalConfig};
use super::errors::{app_service_error, imds_error, AadError};
use super::keys::SigningKey;
use super::tokens::{self, TokenRejection, TokenSubject};
use super::{is_known_resource, Entra};
use crate::common::json_response_body;
use crate::server::ConnInfo;
use crate::state::AppState;

/// `client_assertion_type` of a JWT assertion (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Tenants every Entra instance answers discovery for.
const MULTI_TENANT: &[&str] = &["common", "organizations", "consumers"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route("/{tenant}/discovery/keys", get(jwks))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/metadata/identity/oauth2/token", get(imds_token))
        .route("/msi/token", get(app_service_token))
}

/// `https://host:port` or `http://host:port`, as the request reached the emulator.
fn origin(headers: &HeaderMap, conn: Option<&ConnInfo>) -> String {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if conn.is_some_and(|c| c.tls) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned()
}

/// MSAL's `client-request-id`, echoed as the correlation id like Entra does.
fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| uuid::Uuid::parse_str(v).is_ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn openid_configuration(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
) -> Response {
    if !state.entra.knows_tenant(&tenant) && !MULTI_TENANT.contains(&tenant.as_str()) {
        let mut error = AadError::tenant_not_found(&tenant);
        error.error = "invalid_tenant";
        return error.into_response(
            &correlation_id(&headers),
            &host(&headers),
            state.clock.unix_seconds(),
        );
    }
    let base = format!("{}/{tenant}", origin(&headers, conn.as_deref()));
    let issuer_tenant = if MULTI_TENANT.contains(&tenant.as_str()) {
        "{tenantid}"
    } else {
        tenant.as_str()
    };
    let root = origin(&headers, conn.as_deref());
    json_response_body(&json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{root}/{issuer_tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    }))
}

async fn jwks(State(state): State<AppState>) -> Response {
    match state.entra.key() {
        Some(key) => json_response_body(&key.jwks(None)),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A granted access token.
#[derive(Debug)]
pub struct Grant {
    pub access_token: String,
    pub expires_in: u64,
    pub client_id: String,
    pub resource: String,
}

fn form_value<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The client-credentials grant, decided without I/O: every refusal is Entra's error.
pub fn client_credentials(
    entra: &Entra,
    key: &SigningKey,
    tenant: &str,
    form: &[(String, String)],
    now: i64,
) -> Result<Grant, AadError> {
    if !entra.knows_tenant(tenant) {
        return Err(AadError::tenant_not_found(tenant));
    }
    let grant_type =
        form_value(form, "grant_type").ok_or_else(|| AadError::missing_parameter("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(AadError::unsupported_grant_type(grant_type));
    }
    let client_id =
        form_value(form, "client_id").ok_or_else(|| AadError::missing_parameter("client_id"))?;
    let principal = entra
        .principal(tenant, client_id)
        .ok_or_else(|| AadError::unknown_client(client_id, tenant))?;
    let appidacr = authenticate_client(principal, form, key, now)?;
    let scope = form_value(form, "scope").ok_or_else(|| AadError::missing_parameter("scope"))?;
    let resource = resource_of_scope(scope, tenant)?;
    let lifetime = entra.lifetime();
    let subject = TokenSubject {
        tenant_id: tenant,
        client_id,
        object_id: &principal.object_id,
        appidacr,
    };
    let access_token = mint(key, subject, &resource, now, lifetime)?;
    Ok(Grant {
        access_token,
        expires_in: lifetime,
        client_id: client_id.to_owned(),
        resource,
    })
}

fn mint(
    key: &SigningKey,
    subject: TokenSubject<'_>,
    resource: &str,
    now: i64,
    lifetime: u64,
) -> Result<String, AadError> {
    let lifetime = i64::try_from(lifetime).unwrap_or(i64::MAX);
    tokens::mint_access_token(key, subject, resource, now, lifetime).map_err(|error| {
        tracing::error!(%error, "cannot sign an access token");
        AadError::outage()
    })
}

/// `{resource}/.default` -> resource; Entra's errors otherwise.
fn resource_of_scope(scope: &str, tenant: &str) -> Result<String, AadError> {
    let scope = scope.trim();
    if scope.contains(' ') {
        return Err(AadError::invalid_scope(scope));
    }
    match scope.strip_suffix("/.default") {
        Some(resource) if is_known_resource(resource) => Ok(resource.to_owned()),
        Some(resource) => Err(AadError::unknown_resource(resource, tenant)),
        None if is_known_resource(scope) => Err(AadError::scope_without_default(scope)),
        None => Err(AadError::invalid_scope(scope)),
    }
}

/// Checks the client's secret or federated assertion; returns its `appidacr`.
fn authenticate_client(
    principal: &PrincipalConfig,
    form: &[(String, String)],
    key: &SigningKey,
    now: i64,
) -> Result<&'static str, AadError> {
    if let Some(assertion) = form_value(form, "client_assertion") {
        if form_value(form, "client_assertion_type") != Some(JWT_BEARER) {
            return Err(AadError::missing_credential());
        }
        check_assertion(principal, assertion, key, now)?;
        return Ok("2");
    }
    let Some(secret) = form_value(form, "client_secret") else {
        return Err(AadError::missing_credential());
    };
    match &principal.client_secret {
        Some(expected) if expected.expose() == secret => Ok("1"),
        _ => Err(AadError::invalid_secret(&principal.client_id)),
    }
}

/// Matches an assertion against the principal's federated credentials, then checks its
/// signature (the emulator is the only issuer) and lifetime.
fn check_assertion(
    principal: &PrincipalConfig,
    assertion: &str,
    key: &SigningKey,
    now: i64,
) -> Result<(), AadError> {
    let claims = tokens::peek_assertion(assertion).map_err(|_| AadError::malformed_assertion())?;
    let by_issuer: Vec<_> = principal
        .federated
        .iter()
        .filter(|f| f.issuer == claims.iss)
        .collect();
    if by_issuer.is_empty() {
        return Err(AadError::no_federated_issuer(&claims.iss));
    }
    let by_subject: Vec<_> = by_issuer
        .into_iter()
        .filter(|f| f.subject == claims.sub)
        .collect();
    if by_subject.is_empty() {
        return Err(AadError::no_federated_subject(&claims.sub));
    }
    if !by_subject.iter().any(|f| claims.aud.contains(&f.audience)) {
        return Err(AadError::no_federated_audience(&claims.aud.joined()));
    }
    match tokens::verify_assertion(key, assertion, now) {
        Ok(_) => Ok(()),
        Err(TokenRejection::Expired | TokenRejection::NotYetValid) => Err(
            AadError::assertion_time(now, claims.nbf.unwrap_or(claims.iat), claims.exp),
        ),
        Err(TokenRejection::Malformed) => Err(AadError::malformed_assertion()),
        Err(_) => Err(AadError::assertion_signature()),
    }
}

async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let correlation = correlation_id(&headers);
    let host = host(&headers);
    let now = state.clock.unix_seconds();
    let fail = |error: AadError| no_store(error.into_response(&correlation, &host, now));
    if state.entra.is_down() {
        return fail(AadError::outage());
    }
    let Some(key) = state.entra.key() else {
        return fail(AadError::outage());
    };
    // An unparseable body is treated as an empty form (Entra then names the first missing
    // parameter). The body is never logged: it may hold a secret or an assertion.
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    match client_credentials(&state.entra, key, &tenant, &form, now) {
        Ok(grant) => {
            state.entra.record_issued(&grant.client_id, &grant.resource);
            let mut response = no_store(json_response_body(&json!({
                "token_type": "Bearer",
                "expires_in": grant.expires_in,
                "ext_expires_in": grant.expires_in,
                "access_token": grant.access_token,
            })));
            if let Ok(value) = HeaderValue::from_str(&correlation) {
                response.headers_mut().insert("client-request-id", value);
            }
            response
        }
        Err(error) => fail(error),
    }
}

/// Query parameters of a managed-identity request.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

/// The identity a managed-identity request names (`client_id`, `object_id` or
/// `principal_id`), or the system-assigned one when it names none.
fn pick_identity<'a>(entra: &'a Entra, pairs: &[(String, String)]) -> Option<&'a IdentityConfig> {
    let mi = entra.config().managed_identity.as_ref()?;
    if let Some(client_id) = form_value(pairs, "client_id") {
        return mi.user_assigned.iter().find(|i| i.client_id == client_id);
    }
    if let Some(object_id) = form_value(pairs, "object_id").or(form_value(pairs, "principal_id")) {
        return mi.user_assigned.iter().find(|i| i.object_id == object_id);
    }
    if form_value(pairs, "msi_res_id").is_some() || form_value(pairs, "mi_res_id").is_some() {
        return None;
    }
    mi.system_assigned.as_ref()
}

/// A managed-identity token for `resource`, counted as issued.
fn managed_identity_token(
    state: &AppState,
    identity: &IdentityConfig,
    tenant: &str,
    resource: &str,
    now: i64,
) -> Result<(String, u64), AadError> {
    let key = state.entra.key().ok_or_else(AadError::outage)?;
    let lifetime = state.entra.lifetime();
    let subject = TokenSubject {
        tenant_id: tenant,
        client_id: &identity.client_id,
        object_id: &identity.object_id,
        appidacr: "2",
    };
    let token = mint(key, subject, resource, now, lifetime)?;
    state.entra.record_issued(&identity.client_id, resource);
    Ok((token, lifetime))
}

async fn imds_token(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if state.entra.is_down() {
        return imds_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "The managed identity endpoint is temporarily unavailable. (injected outage)",
        );
    }
    let metadata = headers.get("metadata").and_then(|v| v.to_str().ok());
    if !metadata.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let pairs = query_pairs(query.as_deref());
    if form_value(&pairs, "api-version").is_none() {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = form_value(&pairs, "resource") else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let Some(identity) = pick_identity(&state.entra, &pairs) else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        );
    };
    let tenant = state
        .entra
        .config()
        .managed_identity
        .as_ref()
        .map(|m| m.tenant_id.clone())
        .unwrap_or_default();
    let now = state.clock.unix_seconds();
    let correlation = correlation_id(&headers);
    if !is_known_resource(resource) {
        return AadError::unknown_resource(resource, &tenant).into_response(
            &correlation,
            &host(&headers),
            now,
        );
    }
    match managed_identity_token(&state, identity, &tenant, resource, now) {
        Ok((token, lifetime)) => {
            let expires_on = now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX));
            json_response_body(&json!({
                "access_token": token,
                "client_id": identity.client_id,
                "expires_in": lifetime.to_string(),
                "expires_on": expires_on.to_string(),
                "ext_expires_in": lifetime.to_string(),
                "not_before": now.to_string(),
                "resource": resource,
                "token_type": "Bearer",
            }))
        }
        Err(error) => error.into_response(&correlation, &host(&headers), now),
    }
}

async fn app_service_token(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if state.entra.is_down() {
        return app_service_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The managed identity endpoint is temporarily unavailable. (injected outage)",
        );
    }
    let Some(mi) = state.entra.config().managed_identity.as_ref() else {
        return app_service_error(
            StatusCode::NOT_FOUND,
            "No managed identity is configured for this app.",
        );
    };
    let presented = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    if presented != Some(mi.identity_header.expose()) {
        return app_service_error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        );
    }
    let pairs = query_pairs(query.as_deref());
    if form_value(&pairs, "api-version").is_none() {
        return app_service_error(
            StatusCode::BAD_REQUEST,
            "The api-version query parameter is required.",
        );
    }
    let Some(resource) = form_value(&pairs, "resource") else {
        return app_service_error(
            StatusCode::BAD_REQUEST,
            "The resource query parameter is required.",
        );
    };
    let Some(identity) = pick_identity(&state.entra, &pairs) else {
        return app_service_error(
            StatusCode::BAD_REQUEST,
            "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
        );
    };
    if !is_known_resource(resource) {
        // App Service relays Entra's refusal as a vague 500 (MSAL notes the same).
        return app_service_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("AADSTS500011: The resource principal named {resource} was not found in the tenant named {}.", mi.tenant_id),
        );
    }
    let now = state.clock.unix_seconds();
    match managed_identity_token(&state, identity, &mi.tenant_id, resource, now) {
        Ok((token, lifetime)) => {
            let expires_on = now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX));
            json_response_body(&json!({
                "access_token": token,
                "expires_on": expires_on.to_string(),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            }))
        }
        Err(_) => app_service_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The token could not be issued.",
        ),
    }
}
