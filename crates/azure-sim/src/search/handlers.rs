//! The HTTP surface of a search service: path parsing (both the SDK's OData routes and the
//! friendly ones), `api-version`, keys, and one function per operation.
//!
//! | operation | SDK route | friendly route |
//! |---|---|---|
//! | list / create index | `GET` / `POST /indexes` | same |
//! | get / create-or-update / delete index | `/indexes('{name}')` | `/indexes/{name}` |
//! | index statistics | `GET /indexes('{name}')/search.stats` | `/indexes/{name}/stats` |
//! | search | `POST .../docs/search.post.search`, `GET .../docs` | `POST .../docs/search` |
//! | index batch | `POST .../docs/search.index` | `POST .../docs/index` |
//! | lookup | `GET .../docs('{key}')` | `GET .../docs/{key}` |
//! | count | `GET .../docs/$count` | same |
//! | suggest | `POST .../docs/search.post.suggest`, `GET .../docs/search.suggest` | `.../docs/suggest` |
//! | autocomplete | `POST .../docs/search.post.autocomplete`, `GET .../docs/search.autocomplete` | `.../docs/autocomplete` |
//! | service statistics | `GET /servicestats` | same |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use parking_lot::RwLock;
use serde_json::{json, Map, Value};

use super::query::{prepare_select, project, run, Prepared, SearchParams};
use super::schema::Schema;
use super::store::{Index, MAX_BATCH_ACTIONS};
use super::suggest::{autocomplete, suggest, SuggestParams};
use super::{bad_request, SearchApiError, SearchService};
use crate::common::{json_response_body, AzureError, ReqCtx};
use crate::entra::auth::{presented, Credential};
use crate::entra::tokens::SEARCH_AUDIENCE;
use crate::state::{AppState, Resource};

/// Largest index batch body, as in Azure.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// What a key lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Query,
    Admin,
}

/// The operations, as parsed from method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    ListIndexes,
    CreateIndex,
    GetIndex(String),
    PutIndex(String),
    DeleteIndex(String),
    IndexStats(String),
    ServiceStats,
    SearchGet(String),
    SearchPost(String),
    Batch(String),
    Lookup(String, String),
    Count(String),
    SuggestGet(String),
    SuggestPost(String),
    AutocompleteGet(String),
    AutocompletePost(String),
}

impl Op {
    /// The Azure RBAC data action the operation needs (named in 403 answers to tokens).
    fn data_action(&self) -> &'static str {
        match self {
            Op::SearchGet(_)
            | Op::SearchPost(_)
            | Op::Lookup(..)
            | Op::Count(_)
            | Op::SuggestGet(_)
            | Op::SuggestPost(_)
            | Op::AutocompleteGet(_)
            | Op::AutocompletePost(_) => "Microsoft.Search/searchServices/indexes/documents/read",
            Op::Batch(_) => "Microsoft.Search/searchServices/indexes/documents/write",
            Op::ListIndexes | Op::GetIndex(_) | Op::IndexStats(_) => {
                "Microsoft.Search/searchServices/indexes/read"
            }
            Op::CreateIndex | Op::PutIndex(_) => "Microsoft.Search/searchServices/indexes/write",
            Op::DeleteIndex(_) => "Microsoft.Search/searchServices/indexes/delete",
            Op::ServiceStats => "Microsoft.Search/searchServices/read",
        }
    }

    fn access(&self) -> Access {
        match self {
            Op::SearchGet(_)
            | Op::SearchPost(_)
            | Op::Lookup(..)
            | Op::Count(_)
            | Op::SuggestGet(_)
            | Op::SuggestPost(_)
            | Op::AutocompleteGet(_)
            | Op::AutocompletePost(_) => Access::Query,
            _ => Access::Admin,
        }
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
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

/// `name('value')` -> `value` (with `''` unescaped).
fn odata_key<'a>(segment: &'a str, name: &str) -> Option<String> {
    let inner: &'a str = segment
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
    if segs == ["servicestats"] && method == Method::GET {
        return Some(Op::ServiceStats);
    }
    let (index, rest): (String, &[&str]) = match segs.as_slice() {
        ["indexes"] => {
            return match *method {
                Method::GET => Some(Op::ListIndexes),
                Method::POST => Some(Op::CreateIndex),
                _ => None,
            }
        }
        ["indexes", name, rest @ ..] => ((*name).to_owned(), rest),
        [first, rest @ ..] => (odata_key(first, "indexes")?, rest),
        [] => return None,
    };
    let op = match (method, rest) {
        (&Method::GET, []) => Op::GetIndex(index),
        (&Method::PUT, []) => Op::PutIndex(index),
        (&Method::DELETE, []) => Op::DeleteIndex(index),
        (&Method::GET, ["search.stats" | "stats"]) => Op::IndexStats(index),
        (&Method::GET, ["docs"]) => Op::SearchGet(index),
        (&Method::POST, ["docs", "search" | "search.post.search"]) => Op::SearchPost(index),
        (&Method::POST, ["docs", "index" | "search.index"]) => Op::Batch(index),
        (&Method::GET, ["docs", "$count"]) => Op::Count(index),
        (&Method::GET, ["docs", "suggest" | "search.suggest"]) => Op::SuggestGet(index),
        (&Method::POST, ["docs", "suggest" | "search.post.suggest"]) => Op::SuggestPost(index),
        (&Method::GET, ["docs", "autocomplete" | "search.autocomplete"]) => {
            Op::AutocompleteGet(index)
        }
        (&Method::POST, ["docs", "autocomplete" | "search.post.autocomplete"]) => {
            Op::AutocompletePost(index)
        }
        (&Method::GET, ["docs", key]) => Op::Lookup(index, (*key).to_owned()),
        (&Method::GET, [docs]) => Op::Lookup(index, odata_key(docs, "docs")?),
        _ => return None,
    };
    Some(op)
}

/// Checks the caller's key or Entra token against the service.
fn authorize(
    state: &AppState,
    service: &SearchService,
    headers: &HeaderMap,
    op: &Op,
) -> Result<(), SearchApiError> {
    let is_key = |value: &str| service.access_of(value).is_some() && !service.keys_open();
    let key = match presented(headers, is_key) {
        Credential::Missing => {
            return Err(AzureError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Access denied: an 'api-key' header (or Authorization: Bearer) is required.",
            ))
        }
        Credential::Token(token) => return authorize_token(state, service, token, op),
        Credential::Key(_) if service.config.disable_local_auth => {
            return Err(AzureError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Key based authentication is disabled for this search service. Use a Microsoft Entra ID access token.",
            ))
        }
        Credential::Key(key) => key,
    };
    let needed = op.access();
    let access = match service.access_of(key) {
        Some(access) => access,
        None => {
            return Err(AzureError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Authorization failed: the api-key is not valid for this search service.",
            ))
        }
    };
    let access = if access { Access::Admin } else { Access::Query };
    if access < needed {
        return Err(AzureError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Authorization failed: this operation requires an admin key; query keys can only read documents.",
        ));
    }
    Ok(())
}

fn check_api_version(
    service: &SearchService,
    pairs: &[(String, String)],
) -> Result<String, SearchApiError> {
    let Some((_, version)) = pairs.iter().find(|(k, _)| k == "api-version") else {
        return Err(bad_request(
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if !service.accepts_api_version(version) {
        return Err(bad_request(format!(
            "Invalid or missing api-version query string parameter: '{version}' is not supported. Supported versions: {}.",
            service.api_versions().join(", ")
        )));
    }
    Ok(version.clone())
}

fn json_status(status: StatusCode, value: &Value) -> Response {
    (status, json_response_body(value)).into_response()
}

fn parse_json_object(body: &Bytes) -> Result<Map<String, Value>, SearchApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(bad_request("The request body must be a JSON object.")),
        Err(e) => Err(bad_request(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// Everything a handler needs about the request.
struct Call<'a> {
    service: &'a SearchService,
    pairs: Vec<(String, String)>,
    body: Bytes,
    api_version: String,
    /// `http://host/r/{service}`, for links.
    base: String,
}

/// The search router's fallback: every request to a search service lands here.
pub async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let Some(ReqCtx {
        resource: Resource::Search(service),
        tls,
        ..
    }) = request.extensions().get::<ReqCtx>().cloned()
    else {
        return AzureError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "No search service in context.",
        )
        .into_response();
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    match dispatch(&state, &service, &parts, body, tls) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// An Entra token: valid for `https://search.azure.com` and held by a principal with a role
/// on the service. Refusals follow `aadAuthFailureMode: http401WithBearerChallenge` (401 with
/// a `WWW-Authenticate: Bearer` challenge) for bad tokens, 403 for a missing role.
fn authorize_token(
    state: &AppState,
    service: &SearchService,
    token: &str,
    op: &Op,
) -> Result<(), SearchApiError> {
    let now = state.clock.unix_seconds();
    let claims = match state.entra.verify(token, SEARCH_AUDIENCE, now) {
        Ok(claims) => claims,
        Err(rejection) => {
            tracing::debug!(service = service.name(), %rejection, "bearer token refused");
            return Err(AzureError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Authentication failed: the access token is missing, invalid, issued for another audience than https://search.azure.com, or expired.",
            )
            .with_header(
                http::header::WWW_AUTHENTICATE,
                "Bearer authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", resource_id=\"https://search.azure.com\"",
            ));
        }
    };
    if service.config.role_assignments.contains(&claims.oid) {
        Ok(())
    } else {
        Err(AzureError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Authorization failed: the principal '{}' does not have a role assignment granting '{}' on this search service.",
                claims.oid,
                op.data_action()
            ),
        ))
    }
}

fn dispatch(
    state: &AppState,
    service: &Arc<SearchService>,
    parts: &http::request::Parts,
    body: Bytes,
    tls: bool,
) -> Result<Response, SearchApiError> {
    let op = route(&parts.method, parts.uri.path()).ok_or_else(|| {
        AzureError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "No search operation matches {} {}.",
                parts.method,
                parts.uri.path()
            ),
        )
    })?;
    let pairs: Vec<(String, String)> =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .map_err(|_| bad_request("The query string is malformed."))?;
    let api_version = check_api_version(service, &pairs)?;
    authorize(state, service, &parts.headers, &op)?;
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    let call = Call {
        service,
        pairs,
        body,
        api_version,
        base: format!("{scheme}://{host}/r/{}", service.name()),
    };
    match op {
        Op::ListIndexes => list_indexes(&call),
        Op::CreateIndex => create_index(&call),
        Op::GetIndex(name) => get_index(&call, &name),
        Op::PutIndex(name) => put_index(&call, &name),
        Op::DeleteIndex(name) => delete_index(&call, &name),
        Op::IndexStats(name) => index_stats(&call, &name),
        Op::ServiceStats => service_stats(&call),
        Op::SearchGet(name) => {
            let params = SearchParams::from_query(&call.pairs)?;
            search(&call, &name, &params, None)
        }
        Op::SearchPost(name) => {
            let body = parse_json_object(&call.body)?;
            let params = SearchParams::from_body(&body)?;
            search(&call, &name, &params, Some(body))
        }
        Op::Batch(name) => batch(&call, &name),
        Op::Lookup(name, key) => lookup(&call, &name, &key),
        Op::Count(name) => count(&call, &name),
        Op::SuggestGet(name) => {
            let p = SuggestParams::from_query(&call.pairs)?;
            with_index(&call, &name, |ix| suggest(ix, &p)).map(|v| json_status(StatusCode::OK, &v))
        }
        Op::SuggestPost(name) => {
            let p = SuggestParams::from_object(&parse_json_object(&call.body)?)?;
            with_index(&call, &name, |ix| suggest(ix, &p)).map(|v| json_status(StatusCode::OK, &v))
        }
        Op::AutocompleteGet(name) => {
            let p = SuggestParams::from_query(&call.pairs)?;
            with_index(&call, &name, |ix| autocomplete(ix, &p))
                .map(|v| json_status(StatusCode::OK, &v))
        }
        Op::AutocompletePost(name) => {
            let p = SuggestParams::from_object(&parse_json_object(&call.body)?)?;
            with_index(&call, &name, |ix| autocomplete(ix, &p))
                .map(|v| json_status(StatusCode::OK, &v))
        }
    }
}

fn index_not_found(call: &Call<'_>, name: &str) -> SearchApiError {
    AzureError::new(
        StatusCode::NOT_FOUND,
        "IndexNotFound",
        format!(
            "The index '{name}' for service '{}' was not found.",
            call.service.name()
        ),
    )
}

fn find_index(call: &Call<'_>, name: &str) -> Result<Arc<RwLock<Index>>, SearchApiError> {
    call.service
        .index(name)
        .ok_or_else(|| index_not_found(call, name))
}

fn with_index<T>(
    call: &Call<'_>,
    name: &str,
    f: impl FnOnce(&Index) -> Result<T, SearchApiError>,
) -> Result<T, SearchApiError> {
    let index = find_index(call, name)?;
    let guard = index.read();
    f(&guard)
}

fn with_context(call: &Call<'_>, mut def: Value) -> Value {
    if let Some(obj) = def.as_object_mut() {
        obj.insert(
            "@odata.context".into(),
            Value::String(format!("{}/$metadata#indexes/$entity", call.base)),
        );
    }
    def
}

fn list_indexes(call: &Call<'_>) -> Result<Response, SearchApiError> {
    let select = call
        .pairs
        .iter()
        .find(|(k, _)| k == "$select")
        .map(|(_, v)| v.clone());
    let value: Vec<Value> = call
        .service
        .indexes()
        .into_iter()
        .map(|ix| {
            let def = ix.read().definition();
            match select.as_deref().filter(|s| s.trim() != "*") {
                Some(list) => {
                    let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
                    let mut obj = Map::new();
                    if let Some(full) = def.as_object() {
                        for (k, v) in full {
                            if wanted.contains(&k.as_str()) {
                                obj.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    Value::Object(obj)
                }
                None => def,
            }
        })
        .collect();
    Ok(json_status(
        StatusCode::OK,
        &json!({"@odata.context": format!("{}/$metadata#indexes", call.base), "value": value}),
    ))
}

fn schema_from_body(call: &Call<'_>, name: Option<&str>) -> Result<Schema, SearchApiError> {
    let body = parse_json_object(&call.body)?;
    let name = match name {
        Some(n) => n.to_owned(),
        None => body
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request("The index definition must have a 'name'."))?
            .to_owned(),
    };
    Schema::parse(&name, &Value::Object(body)).map_err(|e| bad_request(e.0))
}

fn create_index(call: &Call<'_>) -> Result<Response, SearchApiError> {
    let schema = schema_from_body(call, None)?;
    let name = schema.name.clone();
    let def = call.service.create_index(schema).map_err(|()| {
        AzureError::new(
            StatusCode::CONFLICT,
            "ResourceNameAlreadyInUse",
            format!("Cannot create index '{name}' because it already exists."),
        )
    })?;
    Ok(json_status(StatusCode::CREATED, &with_context(call, def)))
}

fn get_index(call: &Call<'_>, name: &str) -> Result<Response, SearchApiError> {
    let def = with_index(call, name, |ix| Ok(ix.definition()))?;
    Ok(json_status(StatusCode::OK, &with_context(call, def)))
}

fn put_index(call: &Call<'_>, name: &str) -> Result<Response, SearchApiError> {
    let schema = schema_from_body(call, Some(name))?;
    let (created, def) = call
        .service
        .put_index(schema)
        .map_err(|e| bad_request(e.0))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_status(status, &with_context(call, def)))
}

fn delete_index(call: &Call<'_>, name: &str) -> Result<Response, SearchApiError> {
    if call.service.delete_index(name) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(index_not_found(call, name))
    }
}

fn index_stats(call: &Call<'_>, name: &str) -> Result<Response, SearchApiError> {
    let stats = with_index(call, name, |ix| {
        Ok(
            json!({"documentCount": ix.len(), "storageSize": ix.storage_size(), "vectorIndexSize": 0}),
        )
    })?;
    Ok(json_status(StatusCode::OK, &stats))
}

fn service_stats(call: &Call<'_>) -> Result<Response, SearchApiError> {
    let indexes = call.service.indexes();
    let docs: usize = indexes.iter().map(|ix| ix.read().len()).sum();
    let storage: usize = indexes.iter().map(|ix| ix.read().storage_size()).sum();
    Ok(json_status(
        StatusCode::OK,
        &json!({"counters": {
            "documentCount": {"usage": docs, "quota": null},
            "indexesCount": {"usage": indexes.len(), "quota": 50},
            "storageSize": {"usage": storage, "quota": null},
            "vectorIndexSize": {"usage": 0, "quota": null},
        }, "limits": {}}),
    ))
}

fn search(
    call: &Call<'_>,
    name: &str,
    params: &SearchParams,
    body: Option<Map<String, Value>>,
) -> Result<Response, SearchApiError> {
    let outcome = with_index(call, name, |ix| {
        let prepared = Prepared::new(ix, params)?;
        Ok(run(ix, &prepared))
    })?;
    let mut response = Map::new();
    response.insert(
        "@odata.context".into(),
        Value::String(format!("{}/indexes('{name}')/$metadata#docs(*)", call.base)),
    );
    if let Some(count) = outcome.count {
        response.insert("@odata.count".into(), Value::from(count));
    }
    if let Some(facets) = outcome.facets {
        response.insert("@search.facets".into(), facets);
    }
    response.insert("value".into(), Value::Array(outcome.value));
    if let Some((skip, top)) = outcome.next {
        match body {
            Some(mut next) => {
                next.insert("skip".into(), Value::from(skip));
                match top {
                    Some(t) => next.insert("top".into(), Value::from(t)),
                    None => next.remove("top"),
                };
                response.insert("@search.nextPageParameters".into(), Value::Object(next));
                response.insert(
                    "@odata.nextLink".into(),
                    Value::String(format!(
                        "{}/indexes('{name}')/docs/search.post.search?api-version={}",
                        call.base, call.api_version
                    )),
                );
            }
            None => {
                let mut query: Vec<(String, String)> = call
                    .pairs
                    .iter()
                    .filter(|(k, _)| k != "$skip" && k != "$top")
                    .cloned()
                    .collect();
                query.push(("$skip".into(), skip.to_string()));
                if let Some(t) = top {
                    query.push(("$top".into(), t.to_string()));
                }
                let qs = query
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                response.insert(
                    "@odata.nextLink".into(),
                    Value::String(format!("{}/indexes('{name}')/docs?{qs}", call.base)),
                );
            }
        }
    }
    Ok(json_status(StatusCode::OK, &Value::Object(response)))
}

/// Percent-encodes a query-string component.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'$') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn batch(call: &Call<'_>, name: &str) -> Result<Response, SearchApiError> {
    if call.body.len() > MAX_BATCH_BYTES {
        // The SDK answers a 413 by splitting the batch in two and retrying.
        return Err(AzureError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The index batch is larger than 16 MB.",
        ));
    }
    let body = parse_json_object(&call.body)?;
    let Some(Value::Array(actions)) = body.get("value") else {
        return Err(bad_request(
            "The request body must have a 'value' array of actions.",
        ));
    };
    if actions.is_empty() {
        return Err(bad_request("The batch must contain at least one action."));
    }
    if actions.len() > MAX_BATCH_ACTIONS {
        return Err(bad_request(format!(
            "The batch has {} actions; at most {MAX_BATCH_ACTIONS} are allowed in one request.",
            actions.len()
        )));
    }
    let results = call
        .service
        .apply_batch(name, actions)
        .ok_or_else(|| index_not_found(call, name))?;
    let all_ok = results.iter().all(|r| r.error.is_none());
    let value: Vec<Value> = results.iter().map(|r| r.to_json()).collect();
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok(json_status(status, &json!({ "value": value })))
}

fn lookup(call: &Call<'_>, name: &str, key: &str) -> Result<Response, SearchApiError> {
    let select = call
        .pairs
        .iter()
        .find(|(k, _)| k == "$select")
        .map(|(_, v)| v.clone());
    let doc = with_index(call, name, |ix| {
        let select = prepare_select(&ix.schema, select.as_deref())?;
        Ok(ix
            .get(key)
            .map(|d| project(&ix.schema, &d.fields, select.as_deref())))
    })?;
    match doc {
        Some(obj) => Ok(json_status(StatusCode::OK, &Value::Object(obj))),
        None => Err(AzureError::new(
            StatusCode::NOT_FOUND,
            "DocumentNotFound",
            format!("No document with key '{key}' was found in index '{name}'."),
        )),
    }
}

fn count(call: &Call<'_>, name: &str) -> Result<Response, SearchApiError> {
    let n = with_index(call, name, |ix| Ok(ix.len()))?;
    Ok((
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        n.to_string(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_route_styles_map_to_the_same_operations() {
        let cases = [
            (Method::GET, "/indexes", Op::ListIndexes),
            (Method::POST, "/indexes", Op::CreateIndex),
            (
                Method::GET,
                "/indexes/hotels",
                Op::GetIndex("hotels".into()),
            ),
            (
                Method::GET,
                "/indexes('hotels')",
                Op::GetIndex("hotels".into()),
            ),
            (
                Method::PUT,
                "/indexes(%27hotels%27)",
                Op::PutIndex("hotels".into()),
            ),
            (
                Method::DELETE,
                "/indexes/hotels",
                Op::DeleteIndex("hotels".into()),
            ),
            (
                Method::GET,
                "/indexes('hotels')/search.stats",
                Op::IndexStats("hotels".into()),
            ),
            (
                Method::GET,
                "/indexes/hotels/docs",
                Op::SearchGet("hotels".into()),
            ),
            (
                Method::POST,
                "/indexes/hotels/docs/search",
                Op::SearchPost("hotels".into()),
            ),
            (
                Method::POST,
                "/indexes('hotels')/docs/search.post.search",
                Op::SearchPost("hotels".into()),
            ),
            (
                Method::POST,
                "/indexes/hotels/docs/index",
                Op::Batch("hotels".into()),
            ),
            (
                Method::POST,
                "/indexes('hotels')/docs/search.index",
                Op::Batch("hotels".into()),
            ),
            (
                Method::GET,
                "/indexes/hotels/docs/42",
                Op::Lookup("hotels".into(), "42".into()),
            ),
            (
                Method::GET,
                "/indexes('hotels')/docs('4%3D2')",
                Op::Lookup("hotels".into(), "4=2".into()),
            ),
            (
                Method::GET,
                "/indexes('hotels')/docs/$count",
                Op::Count("hotels".into()),
            ),
            (
                Method::GET,
                "/indexes/hotels/docs/%24count",
                Op::Count("hotels".into()),
            ),
            (
                Method::POST,
                "/indexes('hotels')/docs/search.post.suggest",
                Op::SuggestPost("hotels".into()),
            ),
            (
                Method::GET,
                "/indexes/hotels/docs/suggest",
                Op::SuggestGet("hotels".into()),
            ),
            (
                Method::POST,
                "/indexes/hotels/docs/autocomplete",
                Op::AutocompletePost("hotels".into()),
            ),
            (
                Method::GET,
                "/indexes('hotels')/docs/search.autocomplete",
                Op::AutocompleteGet("hotels".into()),
            ),
            (Method::GET, "/servicestats", Op::ServiceStats),
        ];
        for (method, path, op) in cases {
            assert_eq!(route(&method, path), Some(op), "{method} {path}");
        }
        assert_eq!(route(&Method::PATCH, "/indexes/hotels"), None);
        assert_eq!(route(&Method::GET, "/nothing"), None);
        assert_eq!(route(&Method::GET, "/indexes('hotels'"), None);
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%20b%zz%"), "a b%zz%");
    }
}
