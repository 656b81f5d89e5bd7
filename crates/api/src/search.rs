//! The Azure AI Search data plane: a tenant's logical index (an index template) resolved by
//! its placement into a [`Target`], the request checked and rewritten by `search_router`, and
//! sent with the service's admin key (the tenant's credential never goes upstream).
//!
//! Both route styles are served: the SDK's OData forms (`/indexes('x')/docs/search.post.search`)
//! and the friendly ones (`/indexes/x/docs/search`). The path is parsed here, as the emulator
//! does, because axum cannot match `('x')` inside a segment. An index the tenant may not use
//! answers exactly like one that does not exist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use search_router::rewrite::{self, Boundary};
use search_router::schema::caller_view;
use search_router::{physical_index, Answer, IndexKind, SearchError, Target, Upstream};
use serde_json::{json, Map, Value};
use tenant_registry::model::{KeyScope, SearchPlacement};
use tenant_registry::{Snapshot, TenantEntry};

use crate::auth::{Caller, Credential};
use crate::error::ApiError;
use crate::metering::SearchUsageRecord;
use crate::state::AppState;

/// The routing target of the logical index `logical` for `tenant`; `None` when the tenant
/// has no search placement or no such index.
pub fn search_target(tenant: &TenantEntry, snapshot: &Snapshot, logical: &str) -> Option<Target> {
    let placement = tenant.tenant.search.as_ref()?;
    placement_target(tenant.tenant.id, placement, snapshot, logical)
}

/// Where the logical index `logical` of tenant `id` is under `placement` (its current one, or
/// the one a move is copying it to).
pub fn placement_target(
    id: uuid::Uuid,
    placement: &SearchPlacement,
    snapshot: &Snapshot,
    logical: &str,
) -> Option<Target> {
    let template = snapshot
        .catalog
        .templates
        .iter()
        .find(|(name, _)| name.as_str() == logical)?
        .1;
    let key_field = search_router::key_field(&template.definition)?;
    let service = snapshot.catalog.services.get(placement.service())?;
    let credential = snapshot.service_credential(placement.service())?.clone();
    let (kind, boundary) = match placement {
        SearchPlacement::SharedIndex { .. } => {
            (IndexKind::Shared, Some(Boundary::new(id, &key_field).ok()?))
        }
        SearchPlacement::DedicatedIndex { .. } => (IndexKind::Dedicated(id), None),
        SearchPlacement::DedicatedService { .. } => (IndexKind::OwnService, None),
    };
    Some(Target {
        upstream: Upstream {
            endpoint: service.view.endpoint.to_string(),
            credential,
        },
        logical: logical.to_owned(),
        index: physical_index(kind, logical).ok()?,
        key_field,
        boundary,
    })
}

/// How long a write waits while the tenant's move switches placement (writes are held, not
/// refused; the switch takes seconds).
const FENCE_MAX_WAIT: Duration = Duration::from_secs(60);

/// Waits while the tenant's writes are held for a move's switch; the registry as it then is.
/// `None` when the hold lasted longer than [`FENCE_MAX_WAIT`].
async fn past_the_fence(state: &AppState, tenant: uuid::Uuid) -> Option<Arc<Snapshot>> {
    let started = Instant::now();
    loop {
        let snapshot = state.registry.snapshot();
        let fenced = snapshot
            .tenant(tenant)
            .and_then(|t| t.tenant.search_move.as_ref())
            .is_some_and(|m| m.fenced);
        if !fenced {
            return Some(snapshot);
        }
        if started.elapsed() > FENCE_MAX_WAIT {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether a read goes by query string or by JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Get,
    Post,
}

/// A data-plane search operation, parsed from method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    ListIndexes,
    GetIndex(String),
    Search(String, Form),
    Batch(String),
    Lookup(String, String),
    Count(String),
    Suggest(String, Form),
    Autocomplete(String, Form),
    /// Creating, changing or deleting indexes: admins only, through templates.
    Manage,
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `name('value')` -> `value`, with `''` unescaped.
fn odata_key(segment: &str, name: &str) -> Option<String> {
    let inner = segment
        .strip_prefix(name)?
        .strip_prefix("('")?
        .strip_suffix("')")?;
    Some(inner.replace("''", "'"))
}

fn route(method: &Method, path: &str) -> Option<Op> {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (index, rest): (String, &[&str]) = match segs.as_slice() {
        ["indexes"] => {
            return match *method {
                Method::GET => Some(Op::ListIndexes),
                _ => Some(Op::Manage),
            }
        }
        ["indexes", name, rest @ ..] => ((*name).to_owned(), rest),
        [first, rest @ ..] => (odata_key(first, "indexes")?, rest),
        [] => return None,
    };
    let op = match (method, rest) {
        (&Method::GET, []) => Op::GetIndex(index),
        (_, []) => Op::Manage,
        (&Method::GET, ["docs"]) => Op::Search(index, Form::Get),
        (&Method::POST, ["docs", "search" | "search.post.search"]) => Op::Search(index, Form::Post),
        (&Method::POST, ["docs", "index" | "search.index"]) => Op::Batch(index),
        (&Method::GET, ["docs", "$count"]) => Op::Count(index),
        (&Method::GET, ["docs", "suggest" | "search.suggest"]) => Op::Suggest(index, Form::Get),
        (&Method::POST, ["docs", "suggest" | "search.post.suggest"]) => {
            Op::Suggest(index, Form::Post)
        }
        (&Method::GET, ["docs", "autocomplete" | "search.autocomplete"]) => {
            Op::Autocomplete(index, Form::Get)
        }
        (&Method::POST, ["docs", "autocomplete" | "search.post.autocomplete"]) => {
            Op::Autocomplete(index, Form::Post)
        }
        (&Method::GET, ["docs", key]) => Op::Lookup(index, (*key).to_owned()),
        (&Method::GET, [docs]) => Op::Lookup(index, odata_key(docs, "docs")?),
        _ => return None,
    };
    Some(op)
}

fn bad_request(message: &str) -> Response {
    ApiError::SearchParameter(message.to_owned()).into_response()
}

fn index_not_found(name: &str) -> Response {
    ApiError::IndexNotFound(name.to_owned()).into_response()
}

fn search_error(error: SearchError) -> Response {
    match error {
        SearchError::BadRequest(message) => ApiError::SearchParameter(message),
        SearchError::UpstreamTimeout => ApiError::SearchTimedOut,
        SearchError::AuthRefused(message) => ApiError::UpstreamAuthRefused(message),
        SearchError::Token {
            retry_after,
            message,
        } => ApiError::UpstreamAuthUnavailable {
            message,
            retry_after,
        },
        SearchError::Upstream(cause) | SearchError::Naming(cause) => {
            tracing::error!(%cause, "search call failed");
            ApiError::SearchUnreachable
        }
    }
    .into_response()
}

/// The `api-version` the caller sent, if it has the shape of one.
fn api_version(pairs: &[(String, String)]) -> Result<String, String> {
    let Some((_, version)) = pairs.iter().find(|(k, _)| k == "api-version") else {
        return Err(
            "The api-version query parameter (?api-version=) is required for all requests.".into(),
        );
    };
    let date = version.strip_suffix("-preview").unwrap_or(version);
    let shaped = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return Err(format!(
            "Invalid or missing api-version query string parameter: '{}' is not supported.",
            version.chars().take(40).collect::<String>()
        ));
    }
    Ok(version.clone())
}

/// The caller's JSON object. A key named twice anywhere is refused: the gateway rewrites what
/// it reads (filters, keys), and Azure must not act on a value it did not see.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match strict_json::check_parsed(body) {
            Ok(()) => Ok(map),
            Err(duplicate) => Err(format!("The request body is ambiguous: {duplicate}.")),
        },
        Ok(_) => Err("The request body must be a JSON object.".into()),
        Err(error) => Err(format!("The request body is not valid JSON: {error}")),
    }
}

/// A query parameter named twice (other than `facet`, which is a list) is refused, like a
/// key named twice in a body.
fn repeated_parameter(pairs: &[(String, String)]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    pairs
        .iter()
        .map(|(name, _)| name.as_str())
        .find(|name| *name != "facet" && !seen.insert(*name))
}

/// What one request needs besides the target.
struct Call {
    pairs: Vec<(String, String)>,
    version: String,
    /// `http://host` of the gateway as the caller reached it, for continuation links.
    base: String,
}

/// Every search data-plane route (registered on `/indexes...` and on the catch-alls that the
/// OData form `/indexes('x')/...` needs).
pub async fn handle(
    state: State<AppState>,
    caller: Option<Extension<Caller>>,
    trace: Option<Extension<crate::telemetry::TraceParent>>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let work = serve(state, caller, method, uri, headers, body);
    // The caller's trace reaches the search service with every request this call makes.
    match trace {
        Some(Extension(trace)) => {
            search_router::client::TRACEPARENT
                .scope(trace.0, work)
                .await
        }
        None => work.await,
    }
}

async fn serve(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The catch-all routes also see paths that are not search paths (and, under `/admin/`,
    // requests without a tenant): those answer like the router's fallback.
    let (Some(op), Some(Extension(caller))) = (route(&method, uri.path()), caller) else {
        return crate::error::route_not_found(uri.path());
    };
    let pairs: Vec<(String, String)> =
        match axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri) {
            Ok(q) => q.0,
            Err(_) => return bad_request("The query string is malformed."),
        };
    if let Some(name) = repeated_parameter(&pairs) {
        let shown: String = name.chars().take(100).collect();
        return bad_request(&format!(
            "The query parameter '{shown}' is given more than once."
        ));
    }
    let version = match api_version(&pairs) {
        Ok(v) => v,
        Err(message) => return bad_request(&message),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let call = Call {
        pairs,
        version,
        base: format!("http://{host}"),
    };
    // The middleware decides the scope from the raw path; a write reached by another
    // spelling of it (a trailing slash, percent-encoding) is refused here too.
    if matches!(op, Op::Batch(_)) && caller.scope != KeyScope::ReadWrite {
        return ApiError::Forbidden("this credential may only read").into_response();
    }
    let started = Instant::now();
    let (snapshot, tenant) = if matches!(op, Op::Batch(_)) {
        // A write waits while the tenant's move switches placement, then goes where the
        // registry then says.
        let Some(snapshot) = past_the_fence(&state, caller.tenant.tenant.id).await else {
            return ApiError::unavailable(
                "The index is being moved; retry shortly.",
                Some(Duration::from_secs(5)),
            )
            .into_response();
        };
        let tenant = snapshot
            .tenant(caller.tenant.tenant.id)
            .cloned()
            .unwrap_or_else(|| Arc::clone(&caller.tenant));
        (snapshot, tenant)
    } else {
        (Arc::clone(&caller.view), Arc::clone(&caller.tenant))
    };
    let tenant = &tenant;
    let (name, operation, response) = match op {
        Op::Manage => return ApiError::ManagedByAdministrators.into_response(),
        Op::ListIndexes => return list_indexes(tenant, &snapshot),
        Op::GetIndex(name) => return get_index(tenant, &snapshot, &name),
        Op::Search(name, form) => {
            let r = with_target(tenant, &snapshot, &name, |t| {
                search(&state, t, &call, form, &body)
            })
            .await;
            (name, "search", r)
        }
        Op::Batch(name) => {
            let r = with_target(tenant, &snapshot, &name, |t| batch(&state, t, &call, &body)).await;
            if r.status().is_success() {
                mirror_to_move(&state, tenant, &snapshot, &name, &body).await;
            }
            (name, "index", r)
        }
        Op::Lookup(name, key) => {
            let r = with_target(tenant, &snapshot, &name, |t| lookup(&state, t, &call, &key)).await;
            (name, "lookup", r)
        }
        Op::Count(name) => {
            let r = with_target(tenant, &snapshot, &name, |t| count(&state, t, &call)).await;
            (name, "count", r)
        }
        Op::Suggest(name, form) => {
            let r = with_target(tenant, &snapshot, &name, |t| {
                suggest(&state, t, &call, form, &body, "suggest")
            })
            .await;
            (name, "suggest", r)
        }
        Op::Autocomplete(name, form) => {
            let r = with_target(tenant, &snapshot, &name, |t| {
                suggest(&state, t, &call, form, &body, "autocomplete")
            })
            .await;
            (name, "autocomplete", r)
        }
    };
    let documents = response.extensions().get::<Documents>().map_or(0, |d| d.0);
    crate::metrics::call(
        operation,
        &name,
        None,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    state.usage.record_search(SearchUsageRecord {
        tenant_id: tenant.tenant.id,
        tenant: tenant.tenant.slug.to_string(),
        key_id: match caller.credential {
            Credential::ApiKey { id } => Some(id),
            Credential::Token => None,
        },
        index: name,
        operation,
        documents,
        status: response.status().as_u16(),
        latency: started.elapsed(),
        at: chrono::Utc::now(),
    });
    response
}

/// While the tenant's documents are copied to a new placement, a write that succeeded on
/// the current one is also made on the new one, so what the copy already passed is kept up
/// to date. Best effort: the move's last comparison, with writes held, makes the new
/// placement equal to the current one before the switch whatever happened here.
async fn mirror_to_move(
    state: &AppState,
    tenant: &TenantEntry,
    snapshot: &Snapshot,
    logical: &str,
    body: &[u8],
) {
    let Some(moving) = tenant.tenant.search_move.as_ref() else {
        return;
    };
    let Some(target) = placement_target(tenant.tenant.id, &moving.to, snapshot, logical) else {
        return;
    };
    let Ok(caller_body) = parse_object(body) else {
        return;
    };
    let Ok(upstream) =
        rewrite::batch_request(&caller_body, &target.key_field, target.boundary.as_ref())
    else {
        return;
    };
    let answer = state
        .search
        .call(
            &target.upstream,
            Method::POST,
            &docs_path(&target, "/search.index"),
            &format!("api-version={}", search_router::client::ADMIN_API_VERSION),
            Some(&upstream),
        )
        .await;
    match answer {
        Ok(answer) if answer.status.is_success() => {}
        Ok(answer) => tracing::info!(
            status = answer.status.as_u16(),
            "a write was not mirrored to the move's target; the move's comparison will fix it"
        ),
        Err(error) => tracing::info!(%error, "a write was not mirrored to the move's target"),
    }
}

async fn with_target<'a, F, Fut>(
    tenant: &TenantEntry,
    snapshot: &Snapshot,
    name: &str,
    f: F,
) -> Response
where
    F: FnOnce(Target) -> Fut,
    Fut: std::future::Future<Output = Response> + 'a,
{
    match search_target(tenant, snapshot, name) {
        Some(target) => f(target).await,
        None => index_not_found(name),
    }
}

fn list_indexes(tenant: &TenantEntry, snapshot: &Snapshot) -> Response {
    if tenant.tenant.search.is_none() {
        return json_response(StatusCode::OK, &json!({"value": []}));
    }
    let value: Vec<Value> = snapshot
        .catalog
        .templates
        .iter()
        .map(|(name, t)| Value::Object(caller_view(&t.definition, name.as_str())))
        .collect();
    json_response(StatusCode::OK, &json!({ "value": value }))
}

fn get_index(tenant: &TenantEntry, snapshot: &Snapshot, name: &str) -> Response {
    if search_target(tenant, snapshot, name).is_none() {
        return index_not_found(name);
    }
    match snapshot
        .catalog
        .templates
        .iter()
        .find(|(n, _)| n.as_str() == name)
    {
        Some((n, t)) => json_response(
            StatusCode::OK,
            &Value::Object(caller_view(&t.definition, n.as_str())),
        ),
        None => index_not_found(name),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; odata.metadata=minimal"),
        )],
        value.to_string(),
    )
        .into_response()
}

fn docs_path(target: &Target, rest: &str) -> String {
    format!("/indexes('{}')/docs{rest}", target.index)
}

async fn post(
    state: &AppState,
    target: &Target,
    call: &Call,
    rest: &str,
    body: &Map<String, Value>,
) -> Result<Answer, Response> {
    state
        .search
        .call(
            &target.upstream,
            Method::POST,
            &docs_path(target, rest),
            &rewrite::encode_query(&[("api-version".into(), call.version.clone())]),
            Some(body),
        )
        .await
        .map_err(search_error)
}

/// Upstream's error, passed on with its status and retry headers, cleaned of the physical
/// index name and the partition's code.
fn upstream_error(target: &Target, answer: Answer) -> Response {
    let mut value = serde_json::from_slice::<Value>(&answer.body).unwrap_or_else(
        |_| json!({"error": {"code": answer.status.as_u16().to_string(), "message": "The search service answered with an error."}}),
    );
    rewrite::clean_answer(&mut value, target.boundary.as_ref());
    let text = value.to_string().replace(&target.index, &target.logical);
    let mut response = (
        answer.status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response();
    response.headers_mut().extend(answer.headers);
    response
}

fn answer_json(
    target: &Target,
    answer: Answer,
) -> Result<(Map<String, Value>, HeaderMap), Box<Response>> {
    if !answer.status.is_success() {
        return Err(Box::new(upstream_error(target, answer)));
    }
    match answer.json() {
        Some(obj) => Ok((obj, answer.headers)),
        None => Err(Box::new(search_error(SearchError::Upstream(
            "the search service's answer is not a JSON object".into(),
        )))),
    }
}

/// How many documents a response carries (read) or a batch acted on, for the usage record.
#[derive(Debug, Clone, Copy)]
struct Documents(u64);

fn finish(status: StatusCode, headers: HeaderMap, value: Value) -> Response {
    let documents = match value.get("value").and_then(Value::as_array) {
        Some(items) => items.len() as u64,
        None => u64::from(value.is_object()),
    };
    let mut response = json_response(status, &value);
    response.headers_mut().extend(headers);
    response.extensions_mut().insert(Documents(documents));
    response
}

async fn search(
    state: &AppState,
    target: Target,
    call: &Call,
    form: Form,
    body: &[u8],
) -> Response {
    let caller_body = match form {
        Form::Post => match parse_object(body) {
            Ok(b) => b,
            Err(m) => return bad_request(&m),
        },
        Form::Get => match rewrite::search_body_from_query(&call.pairs) {
            Ok(b) => b,
            Err(e) => return search_error(e),
        },
    };
    let upstream_body = match rewrite::search_request(&caller_body, target.boundary.as_ref()) {
        Ok(b) => b,
        Err(e) => return search_error(e),
    };
    let answer = match post(state, &target, call, "/search.post.search", &upstream_body).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let status = answer.status;
    let (mut obj, headers) = match answer_json(&target, answer) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    rewrite::continue_with(&mut obj, &caller_body, |next| match form {
        Form::Post => format!(
            "{}/indexes('{}')/docs/search.post.search?api-version={}",
            call.base, target.logical, call.version
        ),
        Form::Get => {
            let mut pairs: Vec<(String, String)> = call
                .pairs
                .iter()
                .filter(|(k, _)| k != "$skip" && k != "$top")
                .cloned()
                .collect();
            for (name, param) in [("skip", "$skip"), ("top", "$top")] {
                if let Some(n) = next.get(name).and_then(Value::as_u64) {
                    pairs.push((param.into(), n.to_string()));
                }
            }
            format!(
                "{}/indexes/{}/docs?{}",
                call.base,
                target.logical,
                rewrite::encode_query(&pairs)
            )
        }
    });
    if form == Form::Get {
        obj.remove("@search.nextPageParameters");
    }
    let mut value = Value::Object(obj);
    rewrite::clean_answer(&mut value, target.boundary.as_ref());
    finish(status, headers, value)
}

async fn suggest(
    state: &AppState,
    target: Target,
    call: &Call,
    form: Form,
    body: &[u8],
    kind: &str,
) -> Response {
    let caller_body = match form {
        Form::Post => match parse_object(body) {
            Ok(b) => b,
            Err(m) => return bad_request(&m),
        },
        Form::Get => match rewrite::suggest_body_from_query(&call.pairs) {
            Ok(b) => b,
            Err(e) => return search_error(e),
        },
    };
    let upstream_body = match rewrite::suggest_request(&caller_body, target.boundary.as_ref()) {
        Ok(b) => b,
        Err(e) => return search_error(e),
    };
    let rest = format!("/search.post.{kind}");
    let answer = match post(state, &target, call, &rest, &upstream_body).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let status = answer.status;
    match answer_json(&target, answer) {
        Ok((obj, headers)) => {
            let mut value = Value::Object(obj);
            rewrite::clean_answer(&mut value, target.boundary.as_ref());
            finish(status, headers, value)
        }
        Err(r) => *r,
    }
}

async fn batch(state: &AppState, target: Target, call: &Call, body: &[u8]) -> Response {
    let caller_body = match parse_object(body) {
        Ok(b) => b,
        Err(m) => return bad_request(&m),
    };
    let upstream_body =
        match rewrite::batch_request(&caller_body, &target.key_field, target.boundary.as_ref()) {
            Ok(b) => b,
            Err(e) => return search_error(e),
        };
    let answer = match post(state, &target, call, "/search.index", &upstream_body).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let status = answer.status;
    match answer_json(&target, answer) {
        Ok((obj, headers)) => {
            let mut value = Value::Object(obj);
            rewrite::clean_answer(&mut value, target.boundary.as_ref());
            finish(status, headers, value)
        }
        Err(r) => *r,
    }
}

fn document_not_found(target: &Target, key: &str) -> Response {
    ApiError::DocumentNotFound {
        key: key.to_owned(),
        index: target.logical.to_string(),
    }
    .into_response()
}

async fn lookup(state: &AppState, target: Target, call: &Call, key: &str) -> Response {
    let select = call
        .pairs
        .iter()
        .find(|(k, _)| k == "$select")
        .map(|(_, v)| v.as_str());
    if let Some((unknown, _)) = call
        .pairs
        .iter()
        .find(|(k, _)| k != "$select" && k != "api-version")
    {
        return bad_request(&format!(
            "The parameter '{}' is not supported on a lookup.",
            unknown.chars().take(100).collect::<String>()
        ));
    }
    let Some(boundary) = &target.boundary else {
        if let Err(e) = rewrite::validate_key(key) {
            return search_error(e);
        }
        let mut query = vec![("api-version".to_owned(), call.version.clone())];
        if let Some(select) = select {
            query.push(("$select".into(), select.to_owned()));
        }
        let answer = match state
            .search
            .call(
                &target.upstream,
                Method::GET,
                &docs_path(&target, &format!("('{key}')")),
                &rewrite::encode_query(&query),
                None,
            )
            .await
        {
            Ok(a) => a,
            Err(e) => return search_error(e),
        };
        if answer.status == StatusCode::NOT_FOUND {
            return document_not_found(&target, key);
        }
        let status = answer.status;
        return match answer_json(&target, answer) {
            Ok((obj, headers)) => {
                let mut value = Value::Object(obj);
                rewrite::clean_answer(&mut value, None);
                finish(status, headers, value)
            }
            Err(r) => *r,
        };
    };
    let body = match rewrite::lookup_request(boundary, key, select) {
        Ok(b) => b,
        Err(e) => return search_error(e),
    };
    let answer = match post(state, &target, call, "/search.post.search", &body).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (obj, headers) = match answer_json(&target, answer) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(Value::Object(mut doc)) = obj
        .get("value")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
        .cloned()
    else {
        return document_not_found(&target, key);
    };
    doc.retain(|k, _| !k.starts_with("@search."));
    let mut value = Value::Object(doc);
    rewrite::clean_answer(&mut value, Some(boundary));
    finish(StatusCode::OK, headers, value)
}

async fn count(state: &AppState, target: Target, call: &Call) -> Response {
    let text = match &target.boundary {
        Some(boundary) => {
            let answer = match post(
                state,
                &target,
                call,
                "/search.post.search",
                &rewrite::count_request(boundary),
            )
            .await
            {
                Ok(a) => a,
                Err(r) => return r,
            };
            match answer_json(&target, answer) {
                Ok((obj, _)) => match obj.get("@odata.count").and_then(Value::as_u64) {
                    Some(n) => n.to_string(),
                    None => {
                        return search_error(SearchError::Upstream(
                            "no @odata.count in the answer".into(),
                        ))
                    }
                },
                Err(r) => return *r,
            }
        }
        None => {
            let answer = match state
                .search
                .call(
                    &target.upstream,
                    Method::GET,
                    &docs_path(&target, "/$count"),
                    &rewrite::encode_query(&[("api-version".into(), call.version.clone())]),
                    None,
                )
                .await
            {
                Ok(a) => a,
                Err(e) => return search_error(e),
            };
            if !answer.status.is_success() {
                return upstream_error(&target, answer);
            }
            String::from_utf8_lossy(&answer.body).trim().to_owned()
        }
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_route_styles_map_to_the_same_operations() {
        let h = || "hotels".to_owned();
        let cases = [
            (Method::GET, "/indexes", Op::ListIndexes),
            (Method::POST, "/indexes", Op::Manage),
            (Method::GET, "/indexes/hotels", Op::GetIndex(h())),
            (Method::GET, "/indexes('hotels')", Op::GetIndex(h())),
            (Method::PUT, "/indexes('hotels')", Op::Manage),
            (Method::DELETE, "/indexes/hotels", Op::Manage),
            (
                Method::GET,
                "/indexes/hotels/docs",
                Op::Search(h(), Form::Get),
            ),
            (
                Method::POST,
                "/indexes/hotels/docs/search",
                Op::Search(h(), Form::Post),
            ),
            (
                Method::POST,
                "/indexes('hotels')/docs/search.post.search",
                Op::Search(h(), Form::Post),
            ),
            (Method::POST, "/indexes/hotels/docs/index", Op::Batch(h())),
            (
                Method::POST,
                "/indexes('hotels')/docs/search.index",
                Op::Batch(h()),
            ),
            (
                Method::GET,
                "/indexes/hotels/docs/42",
                Op::Lookup(h(), "42".into()),
            ),
            (
                Method::GET,
                "/indexes(%27hotels%27)/docs(%274%3D2%27)",
                Op::Lookup(h(), "4=2".into()),
            ),
            (
                Method::GET,
                "/indexes('hotels')/docs/$count",
                Op::Count(h()),
            ),
            (Method::GET, "/indexes/hotels/docs/%24count", Op::Count(h())),
            (
                Method::POST,
                "/indexes('hotels')/docs/search.post.suggest",
                Op::Suggest(h(), Form::Post),
            ),
            (
                Method::GET,
                "/indexes/hotels/docs/autocomplete",
                Op::Autocomplete(h(), Form::Get),
            ),
        ];
        for (method, path, op) in cases {
            assert_eq!(route(&method, path), Some(op), "{method} {path}");
        }
        assert_eq!(route(&Method::GET, "/nothing"), None);
        assert_eq!(route(&Method::GET, "/indexes('hotels'"), None);
    }

    #[test]
    fn api_versions_must_look_like_dates() {
        let v = |s: &str| api_version(&[("api-version".into(), s.into())]).is_ok();
        assert!(v("2024-07-01") && v("2025-03-01-preview"));
        assert!(!v("2024-7-01") && !v("x") && !v("2024-07-01&x=1"));
        assert!(api_version(&[]).is_err());
    }
}
