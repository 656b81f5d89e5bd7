//! The top-level router: `/_sim/...` is the control API, `/r/{name}/...` is an emulated
//! resource. The dispatcher looks the resource up, logs the request, strips `/r/{name}` from
//! the URI, attaches a [`ReqCtx`] and hands the request to the router of the resource's kind
//! (OpenAI or search). It adds `apim-request-id`, `x-request-id` and `x-ms-region` to every
//! answer, whichever router produced it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http::{HeaderValue, StatusCode, Uri};
use tower::ServiceExt;

use crate::common::{AzureError, ReqCtx, APIM_REQUEST_ID, X_MS_REGION, X_REQUEST_ID};
use crate::server::{ConnCtl, ConnInfo};
use crate::state::{AppState, Resource};

/// Largest request body accepted (search index batches may be 16 MB).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone)]
struct Dispatch {
    state: AppState,
    openai: Router,
    search: Router,
}

/// Builds the whole application.
pub fn app(state: AppState) -> Router {
    let dispatch = Dispatch {
        state: state.clone(),
        openai: crate::openai::routes().with_state(state.clone()),
        search: crate::search::routes().with_state(state.clone()),
    };
    let resources = Router::new()
        .route("/r/{name}", any(dispatch_request))
        .route("/r/{name}/", any(dispatch_request))
        .route("/r/{name}/{*rest}", any(dispatch_request))
        .with_state(dispatch);
    Router::new()
        .nest("/_sim", crate::control::routes().with_state(state.clone()))
        .merge(crate::entra::handlers::routes().with_state(state))
        .merge(resources)
        .fallback(unknown_path)
}

async fn unknown_path() -> Response {
    AzureError::new(
        StatusCode::NOT_FOUND,
        "404",
        "Resource not found. Emulated resources live under /r/{name}/.",
    )
    .into_response()
}

/// A fresh request id: a UUID made of a per-process random prefix and a counter (cheap, and
/// unique within the process).
fn new_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // SplitMix64's finaliser is a bijection: distinct counters give distinct, random-looking ids.
    let mut z = n.wrapping_add(prefix).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    uuid::Uuid::from_u64_pair(prefix, z)
        .hyphenated()
        .to_string()
}

async fn dispatch_request(State(dispatch): State<Dispatch>, request: Request) -> Response {
    let request_id = new_request_id();
    let (mut parts, body) = request.into_parts();
    let full_path = parts.uri.path();
    let after = full_path.strip_prefix("/r/").unwrap_or(full_path);
    let (name, rest) = match after.split_once('/') {
        Some((name, rest)) => (name, format!("/{rest}")),
        None => (after, "/".to_owned()),
    };
    let Some(resource) = dispatch.state.registry.get(name) else {
        let error = AzureError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("No emulated resource or search service is named '{name}'."),
        );
        return with_standard_headers(error.into_response(), &request_id, None);
    };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest,
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            let error = AzureError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "The request body is too large or could not be read.",
            );
            return with_standard_headers(error.into_response(), &request_id, Some(&resource));
        }
    };
    dispatch.state.log.record(
        &request_id,
        resource.name(),
        &parts.method,
        &path_and_query,
        &parts.headers,
        &body,
    );
    parts.uri = match Uri::builder().path_and_query(path_and_query).build() {
        Ok(uri) => uri,
        Err(_) => {
            let error = AzureError::new(StatusCode::BAD_REQUEST, "BadRequest", "Invalid URI.");
            return with_standard_headers(error.into_response(), &request_id, Some(&resource));
        }
    };
    let conn = parts.extensions.remove::<ConnCtl>();
    let tls = parts.extensions.get::<ConnInfo>().is_some_and(|c| c.tls);
    // A fresh request: the outer router's path parameters must not leak into the inner one.
    let mut request = Request::new(Body::from(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = parts.uri;
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers;
    request.extensions_mut().insert(ReqCtx {
        request_id: request_id.clone(),
        resource: resource.clone(),
        conn: conn.clone(),
        tls,
    });
    let router = match &resource {
        Resource::OpenAi(_) => dispatch.openai.clone(),
        Resource::Search(_) => {
            // Search services get resource-level faults here; the OpenAI handlers apply
            // theirs once they know the deployment.
            if let Some(response) =
                crate::faults::apply_resource_faults(&dispatch.state, resource.name(), conn).await
            {
                return with_standard_headers(response, &request_id, Some(&resource));
            }
            dispatch.search.clone()
        }
    };
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    with_standard_headers(response, &request_id, Some(&resource))
}

/// Adds `apim-request-id`, `x-request-id` and (when known) `x-ms-region`.
fn with_standard_headers(
    mut response: Response,
    request_id: &str,
    resource: Option<&Resource>,
) -> Response {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(APIM_REQUEST_ID, id.clone());
        headers.insert(X_REQUEST_ID, id);
    }
    if let Some(region) = resource.and_then(|r| HeaderValue::from_str(r.region()).ok()) {
        headers.insert(X_MS_REGION, region);
    }
    response
}
