//! The admin console at `/console`: server-rendered pages (maud escapes every value) and one
//! small script, served by the gateway itself.
//!
//! Sign-in exchanges the admin token for a session: a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` when the request came over TLS), stored in the registry's
//! database as its SHA-256 so any replica serves it and signing out ends it everywhere. The
//! session opens the console's pages and, with the session's CSRF token in `x-csrf-token` on
//! every state-changing request, the admin API itself: the console's forms call the same
//! routes, with the same validation and messages, as any other admin client. Tenant
//! credentials never open it. Every response carries a strict `Content-Security-Policy` (no
//! inline script or style).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::AppState;

mod assets;
mod data;
mod pages;

use data::FleetCache;

/// Failed sign-ins a replica takes per minute before it answers 429 until the minute ends.
const FAILED_SIGN_INS_PER_MINUTE: u32 = 20;

/// The console's settings and what its requests share on this replica.
pub struct ConsoleState {
    /// The session cookie is always `Secure` (and `__Host-` named).
    secure_cookie: bool,
    fleet: FleetCache,
    /// Failed sign-ins in the current minute: (minute since start, count).
    failures: parking_lot::Mutex<(u64, u32)>,
    started: std::time::Instant,
}

impl ConsoleState {
    pub fn new(secure_cookie: bool) -> Self {
        Self {
            secure_cookie,
            fleet: FleetCache::default(),
            failures: parking_lot::Mutex::new((0, 0)),
            started: std::time::Instant::now(),
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure_cookie {
            SECURE_COOKIE
        } else {
            COOKIE
        }
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    /// Whether sign-in is closed for the rest of this minute.
    fn throttled(&self) -> bool {
        let failures = self.failures.lock();
        failures.0 == self.minute() && failures.1 >= FAILED_SIGN_INS_PER_MINUTE
    }

    fn failed_sign_in(&self) {
        let minute = self.minute();
        let mut failures = self.failures.lock();
        if failures.0 != minute {
            *failures = (minute, 0);
        }
        failures.1 = failures.1.saturating_add(1);
    }
}

/// The session cookie.
pub const COOKIE: &str = "bulkhead_console";
/// Its name when it is always `Secure` (the browser then also requires `Path=/` and no domain).
pub const SECURE_COOKIE: &str = "__Host-bulkhead_console";
/// A session lasts this long from sign-in.
const SESSION_SECONDS: i64 = 8 * 3600;
/// The header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    id_hash: String,
    pub csrf: String,
}

pub fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

pub fn routes(state: AppState) -> Router<AppState> {
    let signed_in = Router::new()
        .route("/console", get(data::overview))
        .route("/console/tenants", get(data::tenants))
        .route("/console/tenants/{slug}", get(data::tenant))
        .route("/console/tenants/{slug}/usage.csv", get(data::usage_csv))
        .route("/console/upstreams", get(data::upstreams))
        .route("/console/logout", post(logout))
        .route("/console/{*rest}", get(not_found))
        .route_layer(axum::middleware::from_fn_with_state(state, require_session));
    Router::new()
        .route("/console/login", get(login_page).post(login))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/assets/{version}/{name}", get(assets::serve))
        .merge(signed_in)
        .layer(axum::middleware::from_fn(security_headers))
}

/// The session a request's cookie names, if it is live.
pub async fn session(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let id = cookie(headers, state.console.cookie_name())?;
    // Only what sign-in issues (32 random bytes, base64url) is looked up in the store.
    if id.len() != 43
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let id_hash = hex::encode(Sha256::digest(id.as_bytes()));
    let admin = state.admin_token.fingerprint();
    match state.registry.console_session(&id_hash, &admin).await {
        Ok(Some(csrf)) => Some(Session { id_hash, csrf }),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "console: the session store did not answer");
            None
        }
    }
}

/// Whether a state-changing request carries its session's CSRF token.
pub fn csrf_ok(session: &Session, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| p.as_bytes().ct_eq(session.csrf.as_bytes()).into())
}

pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Over TLS directly, or behind a proxy that says it terminated TLS.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

async fn require_session(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(session) = session(&state, request.headers()).await else {
        if is_safe(request.method()) {
            return Redirect::to("/console/login").into_response();
        }
        return pages::refused(StatusCode::UNAUTHORIZED, "Sign in first.");
    };
    if !is_safe(request.method()) {
        // Script requests send the token in the header. The one form (sign out) sends it as a
        // field, which its handler checks (the body is not read here).
        let header = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let form_route = is_form && request.uri().path() == "/console/logout";
        if !form_route && !csrf_ok(&session, header) {
            return pages::refused(StatusCode::FORBIDDEN, "Missing or wrong CSRF token.");
        }
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/console/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session(&state, &headers).await.is_some() {
        return Redirect::to("/console").into_response();
    }
    pages::login(None).into_response()
}

/// Only the admin token opens a session (a tenant's key or token is just a wrong token).
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if state.console.throttled() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(Some("Too many failed sign-ins; try again in a minute.")),
        )
            .into_response();
    }
    let Ok(Form(form)) = form else {
        return (
            StatusCode::BAD_REQUEST,
            pages::login(Some("Enter the admin token.")),
        )
            .into_response();
    };
    let mut presented = HeaderMap::new();
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {}", form.token.trim())) else {
        return (
            StatusCode::UNAUTHORIZED,
            pages::login(Some("That is not the admin token.")),
        )
            .into_response();
    };
    presented.insert(header::AUTHORIZATION, bearer);
    if !state.admin_token_matches(&presented) {
        state.console.failed_sign_in();
        tracing::warn!("console: a sign-in with a wrong token was refused");
        return (
            StatusCode::UNAUTHORIZED,
            pages::login(Some("That is not the admin token.")),
        )
            .into_response();
    }
    let id = random_token();
    let row = tenant_registry::store::ConsoleSessionRow {
        id_hash: hex::encode(Sha256::digest(id.as_bytes())),
        csrf: random_token(),
        admin: state.admin_token.fingerprint(),
        expires_at: chrono::Utc::now().timestamp() + SESSION_SECONDS,
    };
    if let Err(error) = state.registry.insert_console_session(&row).await {
        tracing::warn!(%error, "console: cannot store the session");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            pages::login(Some("The store is unavailable; try again shortly.")),
        )
            .into_response();
    }
    let name = state.console.cookie_name();
    let secure = if state.console.secure_cookie || over_tls(&headers) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{name}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}"
    );
    let mut response = Redirect::to("/console").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    axum::Extension(session): axum::Extension<Session>,
    form: Result<Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let presented = form.as_ref().ok().map(|Form(f)| f.csrf.as_str());
    if !csrf_ok(&session, presented) {
        return pages::refused(StatusCode::FORBIDDEN, "Missing or wrong CSRF token.");
    }
    if let Err(error) = state
        .registry
        .delete_console_session(&session.id_hash)
        .await
    {
        tracing::warn!(%error, "console: cannot delete the session");
        return pages::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "The store is unavailable; you are still signed in. Try again shortly.",
        );
    }
    let mut response = Redirect::to("/console/login").into_response();
    let secure = if state.console.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let expired = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        state.console.cookie_name()
    );
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn not_found(axum::Extension(session): axum::Extension<Session>) -> Response {
    (
        StatusCode::NOT_FOUND,
        pages::page(&session, "Not found", pages::Nav::None, pages::not_found()),
    )
        .into_response()
}
