//! Authentication for every route. [`crate::gate::Gate`] calls [`authenticate`] in front of
//! the whole router, the fallback included, so a route someone forgets to protect fails
//! closed:
//!
//! - the routes in [`PUBLIC_ROUTES`] need nothing;
//! - everything under `/admin/`, and `/metrics` (its labels name tenants), needs the admin
//!   token;
//! - everything else needs a tenant credential: an API key (`api-key: bk_...`, or
//!   `Authorization: Bearer bk_...`; `api-key` wins when both are present) or a JWT in
//!   `Authorization: Bearer`.
//!
//! A verified caller is put in the request's extensions as a [`Caller`]; handlers take it
//! from there and nowhere else. The hot path reads only the in-memory registry snapshot.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tenant_registry::model::{KeyScope, Limits, TenantStatus};
use tenant_registry::{Snapshot, TenantEntry};
use uuid::Uuid;

use crate::error::{AdminError, ApiError};
use crate::state::AppState;

/// Routes that need no credential at all.
pub const PUBLIC_ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/admin/v1/openapi.json",
    "/v1/openapi.json",
];

/// How a tenant proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey { id: Uuid },
    Token,
}

/// The verified tenant behind a data-plane request, and the registry view it was found in:
/// every later step of the call (placement, limits, routing) reads that one view, so a call
/// sees one consistent registry and loads it once.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Arc<TenantEntry>,
    pub scope: KeyScope,
    pub credential: Credential,
    /// The key's own limits (on top of its tenant's); unlimited for a token.
    pub key_limits: Limits,
    pub view: Arc<Snapshot>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Only the middleware inserts a Caller; its absence means a route escaped it.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthenticated("no credential"))
    }
}

/// The scope a data-plane request needs: writes are index batches and any PUT, PATCH or
/// DELETE; everything else (queries, inference) reads.
pub fn required_scope(method: &Method, path: &str) -> KeyScope {
    let write_path = path.ends_with("/docs/index") || path.ends_with("/docs/search.index");
    if write_path || matches!(*method, Method::PUT | Method::PATCH | Method::DELETE) {
        KeyScope::ReadWrite
    } else {
        KeyScope::Read
    }
}

/// Lets `request` through (with its [`Caller`] in the extensions, for tenant routes) or
/// answers it with the refusal.
pub async fn authenticate(state: &AppState, request: &mut Request) -> Result<(), Response> {
    let path = request.uri().path();
    if PUBLIC_ROUTES.contains(&path) {
        return Ok(());
    }
    if crate::console::is_console_path(path) {
        // The console's own routes: every one but sign-in and its static files sits behind
        // its session check (`console::routes`). A tenant credential opens none of them.
        return Ok(());
    }
    if crate::error::Audience::of(path) == crate::error::Audience::Admin {
        if state.admin_token_matches(request.headers()) {
            return Ok(());
        }
        // A console session opens the admin API too; a state-changing request must carry
        // the session's CSRF token.
        let Some(session) = crate::console::session(state, request.headers()).await else {
            return Err(AdminError::Unauthenticated.into_response());
        };
        let presented = request
            .headers()
            .get(crate::console::CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        if !crate::console::is_safe(request.method())
            && !crate::console::csrf_ok(&session, presented)
        {
            return Err(AdminError::Forbidden(
                "a console session must send its CSRF token in x-csrf-token".into(),
            )
            .into_response());
        }
        return Ok(());
    }
    match tenant_caller(state, request.method(), path, request.headers()).await {
        Ok(caller) => {
            tracing::Span::current().record("tenant", caller.tenant.tenant.slug.as_str());
            request.extensions_mut().insert(caller);
            Ok(())
        }
        Err(error) => Err(error.into_response()),
    }
}

async fn tenant_caller(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let presented = presented_credential(headers)?;
    let snapshot = state.registry.snapshot();
    let (tenant, scope, credential, key_limits) =
        if presented.starts_with(tenant_registry::crypto::API_KEY_PREFIX) {
            let key = snapshot
                .key(presented)
                .ok_or(ApiError::Unauthenticated("invalid API key"))?;
            if key.is_expired(Utc::now()) {
                return Err(ApiError::Unauthenticated("the API key has expired"));
            }
            let tenant = snapshot
                .tenant(key.tenant_id)
                .ok_or(ApiError::Unauthenticated("invalid API key"))?;
            (
                Arc::clone(tenant),
                key.scope,
                Credential::ApiKey { id: key.id },
                key.limits,
            )
        } else {
            let claims = state.jwt.verify(presented).await.map_err(|error| {
                tracing::debug!(%error, "token refused");
                ApiError::Unauthenticated("invalid token")
            })?;
            let tenant = Uuid::parse_str(&claims.tenant)
                .ok()
                .and_then(|id| snapshot.tenant(id))
                .or_else(|| snapshot.tenant_by_slug(&claims.tenant))
                .ok_or(ApiError::Unauthenticated("the token names no known tenant"))?;
            (
                Arc::clone(tenant),
                claims.scope,
                Credential::Token,
                Limits::default(),
            )
        };
    match tenant.tenant.status {
        TenantStatus::Active => {}
        TenantStatus::Suspended => return Err(ApiError::Forbidden("the tenant is suspended")),
        TenantStatus::Offboarding => {
            return Err(ApiError::Forbidden("the tenant is being offboarded"))
        }
    }
    if !scope.allows(required_scope(method, path)) {
        return Err(ApiError::Forbidden("this credential may only read"));
    }
    Ok(Caller {
        tenant,
        scope,
        credential,
        key_limits,
        view: snapshot,
    })
}

/// The credential a request carries: `api-key` first (Azure SDK style; some openai-python
/// versions send both headers), then `Authorization: Bearer`.
fn presented_credential(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing =
        ApiError::Unauthenticated("no credential; send an api-key header or a Bearer token");
    if let Some(value) = headers.get("api-key") {
        let key = value
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("invalid API key"))?
            .trim();
        if !key.is_empty() {
            return Ok(key);
        }
    }
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(missing);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("invalid authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(missing),
    }
}

/// The admin token, kept only as its digest and compared in constant time.
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &secrecy::SecretString) -> Self {
        use secrecy::ExposeSecret;
        Self(Sha256::digest(token.expose_secret().as_bytes()).into())
    }

    /// Names this token without revealing it (a digest of its digest): stored with each console
    /// session, so a session opened with a token since rotated away opens nothing.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"bulkhead console session\0");
        hash.update(self.0);
        hex::encode(hash.finalize())
    }

    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn api_key_header_wins_over_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert("api-key", HeaderValue::from_static("bk_a"));
        headers.insert("authorization", HeaderValue::from_static("Bearer bk_b"));
        assert_eq!(presented_credential(&headers).ok(), Some("bk_a"));
        headers.remove("api-key");
        assert_eq!(presented_credential(&headers).ok(), Some("bk_b"));
        headers.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert!(presented_credential(&headers).is_err());
        headers.insert("authorization", HeaderValue::from_static("Bearer "));
        assert!(presented_credential(&headers).is_err());
    }

    #[test]
    fn writes_need_read_write_scope() {
        let cases = [
            (
                Method::POST,
                "/indexes/docs/docs/index",
                KeyScope::ReadWrite,
            ),
            (
                Method::POST,
                "/indexes('docs')/docs/search.index",
                KeyScope::ReadWrite,
            ),
            (
                Method::DELETE,
                "/openai/v1/responses/x",
                KeyScope::ReadWrite,
            ),
            (Method::PUT, "/anything", KeyScope::ReadWrite),
            (Method::POST, "/indexes/docs/docs/search", KeyScope::Read),
            (
                Method::POST,
                "/openai/deployments/gpt-4o/chat/completions",
                KeyScope::Read,
            ),
            (Method::GET, "/v1/me", KeyScope::Read),
        ];
        for (method, path, scope) in cases {
            assert_eq!(required_scope(&method, path), scope, "{method} {path}");
        }
    }

    #[test]
    fn admin_token_compares_whole_bearer_value() {
        let token = AdminToken::new(&secrecy::SecretString::from("s3cret-token"));
        let mut headers = HeaderMap::new();
        assert!(!token.matches(&headers));
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer s3cret-token"),
        );
        assert!(token.matches(&headers));
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer s3cret-toke"),
        );
        assert!(!token.matches(&headers));
        headers.insert("authorization", HeaderValue::from_static("s3cret-token"));
        assert!(!token.matches(&headers));
    }
}
