//! The response cache on the OpenAI data plane: who may use it, what a request asks of it,
//! and how a hit is answered and a miss is kept (the cache itself is `response_cache`).
//!
//! - A tenant uses the cache only when its admin turned it on (`response_cache` on the
//!   tenant: TTL and byte bound). Its requests then say, per call: `x-bulkhead-cache: use`
//!   (the default), `refresh` (do not read; store the new answer), or `skip` (neither read
//!   nor store); `Cache-Control: no-cache` (or `max-age=0`) is `refresh`, `no-store` is `skip`.
//!   The strongest of them wins.
//! - Cached: chat completions, completions and embeddings, plain and streamed. Not the
//!   Responses API: its answers are stored objects with ids sealed to the resource that holds
//!   them, and a cached id would chain follow-ups onto a conversation the caller never had.
//! - Only a complete `200` answer is stored: a plain one as it was answered, a stream only
//!   when it ended with `data: [DONE]` and the router metered it as finished (never a stream
//!   cut by the upstream, the caller or a shutdown).
//! - A hit is answered without Azure, with `x-bulkhead-cache: hit` and `Age`: a stream as a
//!   stream (the stored events, one chunk each). It counts one request against the tenant's
//!   and the key's `requests_per_minute` and reserves no tokens; it is metered as a cache hit
//!   with zero tokens (`usage_events.cache_hit`).
//! - Every answer of a tenant using the cache says `x-bulkhead-cache: hit | miss | refresh |
//!   bypass`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use openai_router::{ByteStream, Operation};
use response_cache::{CacheKey, EntryKind, Hit, KeyMaterial, TenantPolicy};
use tenant_registry::model::Tenant;

use crate::error::ApiError;
use crate::state::AppState;

/// The request header that asks something of the cache, and the answer's header that says
/// what it did.
pub const HEADER: HeaderName = HeaderName::from_static("x-bulkhead-cache");

/// What a request asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Directive {
    /// Read, and store on a miss.
    Use,
    /// Do not read; store the new answer.
    Refresh,
    /// Neither read nor store.
    Skip,
}

/// The request's directive: `x-bulkhead-cache` and `Cache-Control`, the strongest winning.
/// An `x-bulkhead-cache` value the gateway does not know is refused (a typo must not
/// silently serve cached answers).
pub fn directive(headers: &HeaderMap) -> Result<Directive, ApiError> {
    let mut directive = Directive::Use;
    if let Some(value) = headers.get(&HEADER) {
        let asked = match value.to_str().map(|v| v.trim().to_ascii_lowercase()) {
            Ok(v) if v == "use" => Directive::Use,
            Ok(v) if v == "refresh" => Directive::Refresh,
            Ok(v) if v == "skip" => Directive::Skip,
            _ => {
                return Err(ApiError::BadRequest {
                    message: "The x-bulkhead-cache header must be 'use', 'refresh' or 'skip'."
                        .into(),
                    param: Some("x-bulkhead-cache".into()),
                })
            }
        };
        directive = directive.max(asked);
    }
    for value in headers.get_all(axum::http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
            let asked = match token.as_str() {
                "no-store" => Directive::Skip,
                "no-cache" | "max-age=0" => Directive::Refresh,
                _ => Directive::Use,
            };
            directive = directive.max(asked);
        }
    }
    Ok(directive)
}

/// What the cache does for one call of a tenant that uses it.
pub struct Plan {
    pub key: CacheKey,
    pub policy: TenantPolicy,
    pub directive: Directive,
}

impl Plan {
    /// The plan of a call, `None` when the cache has no part in it: the tenant has not turned
    /// it on, the operation is not cached, or the key could not be made in time.
    pub async fn new(
        state: &AppState,
        tenant: &Tenant,
        alias: &str,
        operation: Operation,
        model: &str,
        body: &Bytes,
        directive: Directive,
    ) -> Option<Self> {
        let settings = tenant.response_cache?;
        if !matches!(
            operation,
            Operation::ChatCompletions | Operation::Completions | Operation::Embeddings
        ) {
            return None;
        }
        let policy = TenantPolicy {
            ttl: Duration::from_secs(u64::from(settings.ttl_seconds)),
            max_bytes: settings.max_bytes,
        };
        let (tenant_id, alias, model) = (tenant.id, alias.to_owned(), model.to_owned());
        let variant = tenant.context_overflow.as_str();
        let owned = body.clone();
        // Hashing costs a small fraction of counting tokens: bodies up to eight times the
        // counting pool's inline size are keyed where they are, larger ones on its threads.
        let work = move || {
            response_cache::key::derive(
                &KeyMaterial {
                    tenant: tenant_id,
                    alias: &alias,
                    operation: operation.path(),
                    model: &model,
                    variant,
                },
                &owned,
            )
        };
        let key = match state.counting.run(body.len() / 8, true, work).await {
            Ok(Ok(key)) => key,
            // Not an object (the router refuses it), or no thread free: no cache this time.
            Ok(Err(_)) | Err(_) => return None,
        };
        if directive != Directive::Use {
            state.cache.bypassed();
        }
        Some(Self {
            key,
            policy,
            directive,
        })
    }

    /// The cached answer, when the request may read one and there is one.
    pub async fn lookup(&self, state: &AppState) -> Option<Hit> {
        if self.directive != Directive::Use {
            return None;
        }
        state.cache.get(&self.key, self.policy).await
    }

    /// Whether this call's answer may be stored.
    pub fn stores(&self) -> bool {
        self.directive != Directive::Skip
    }

    /// What the answer's `x-bulkhead-cache` says when it did not come from the cache.
    pub fn outcome(&self) -> HeaderValue {
        HeaderValue::from_static(match self.directive {
            Directive::Use => "miss",
            Directive::Refresh => "refresh",
            Directive::Skip => "bypass",
        })
    }

    /// Stores a plain answer, in the background (the caller is not kept waiting for Redis).
    pub fn store_full(&self, state: &AppState, body: Bytes) {
        if body.len() > state.cache.max_entry_bytes() {
            return;
        }
        let (cache, key, policy) = (Arc::clone(&state.cache), self.key, self.policy);
        tokio::spawn(async move {
            cache.put(&key, EntryKind::Json, body, policy).await;
        });
    }

    /// The stream handed to the caller, unchanged, keeping a copy of its bytes: stored once
    /// it has ended cleanly (`finished` says the router metered it as a complete 200, and the
    /// last event is `data: [DONE]`). A stream larger than the largest entry is not kept.
    pub fn store_stream(
        &self,
        state: &AppState,
        stream: ByteStream,
        finished: Arc<OnceLock<bool>>,
    ) -> ByteStream {
        struct Tee {
            inner: ByteStream,
            copy: Option<Vec<u8>>,
            limit: usize,
            finished: Arc<OnceLock<bool>>,
            store: Option<Box<dyn FnOnce(Bytes) + Send>>,
        }
        let (cache, key, policy) = (Arc::clone(&state.cache), self.key, self.policy);
        let store = Box::new(move |bytes: Bytes| {
            tokio::spawn(async move {
                cache.put(&key, EntryKind::EventStream, bytes, policy).await;
            });
        });
        let tee = Tee {
            inner: stream,
            copy: Some(Vec::new()),
            limit: state.cache.max_entry_bytes(),
            finished,
            store: Some(store),
        };
        Box::pin(futures::stream::unfold(tee, |mut tee| async move {
            match tee.inner.next().await {
                Some(Ok(chunk)) => {
                    if let Some(copy) = &mut tee.copy {
                        if copy.len() + chunk.len() > tee.limit {
                            tee.copy = None;
                        } else {
                            copy.extend_from_slice(&chunk);
                        }
                    }
                    Some((Ok(chunk), tee))
                }
                Some(Err(error)) => {
                    tee.copy = None;
                    Some((Err(error), tee))
                }
                None => {
                    let clean = tee.finished.get().copied() == Some(true);
                    if let (true, Some(copy), Some(store)) =
                        (clean, tee.copy.take(), tee.store.take())
                    {
                        if ends_with_done(&copy) {
                            store(Bytes::from(copy));
                        }
                    }
                    None
                }
            }
        }))
    }
}

/// Whether a stream's last event is `data: [DONE]`.
fn ends_with_done(stream: &[u8]) -> bool {
    let trimmed = stream.trim_ascii_end();
    trimmed.ends_with(b"data: [DONE]") || trimmed.ends_with(b"data:[DONE]")
}

/// The answer of a hit: the stored body (a stream as one chunk per event), its content type,
/// `x-bulkhead-cache: hit` and its `Age`.
pub fn answer(hit: &Hit) -> Response {
    let entry = &hit.entry;
    let body = match entry.kind {
        EntryKind::Json => Body::from(entry.body.clone()),
        EntryKind::EventStream => {
            let events = split_events(&entry.body);
            Body::from_stream(futures::stream::iter(
                events.into_iter().map(Ok::<_, std::io::Error>),
            ))
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(entry.kind.content_type()),
    );
    headers.insert(HEADER, HeaderValue::from_static("hit"));
    headers.insert(
        axum::http::header::AGE,
        HeaderValue::from(hit.age_seconds()),
    );
    response
}

/// The events of a stored stream, each with its blank line (slices of `body`, no copies).
fn split_events(body: &Bytes) -> Vec<Bytes> {
    let mut events = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while let Some(found) = memchr::memmem::find(&body[at..], b"\n\n") {
        let end = at + found + 2;
        events.push(body.slice(start..end));
        start = end;
        at = end;
    }
    if start < body.len() {
        events.push(body.slice(start..));
    }
    events
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_strongest_directive_of_the_headers_wins() {
        let cases: &[(&[(&str, &str)], Directive)] = &[
            (&[], Directive::Use),
            (&[("x-bulkhead-cache", "use")], Directive::Use),
            (&[("x-bulkhead-cache", "Refresh")], Directive::Refresh),
            (&[("x-bulkhead-cache", "skip")], Directive::Skip),
            (&[("cache-control", "no-cache")], Directive::Refresh),
            (&[("cache-control", "max-age=0")], Directive::Refresh),
            (&[("cache-control", "private, no-store")], Directive::Skip),
            (&[("cache-control", "max-age=60")], Directive::Use),
            (
                &[("x-bulkhead-cache", "use"), ("cache-control", "no-store")],
                Directive::Skip,
            ),
            (
                &[("x-bulkhead-cache", "skip"), ("cache-control", "no-cache")],
                Directive::Skip,
            ),
            (
                &[("cache-control", "no-cache"), ("cache-control", "no-store")],
                Directive::Skip,
            ),
        ];
        for (given, expected) in cases {
            assert_eq!(directive(&headers(given)).unwrap(), *expected, "{given:?}");
        }
    }

    #[test]
    fn an_unknown_cache_header_value_is_refused() {
        for bad in ["yes", "", "no-store"] {
            assert!(
                directive(&headers(&[("x-bulkhead-cache", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_stored_stream_is_replayed_event_by_event() {
        let body = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n");
        let events = split_events(&body);
        assert_eq!(events.len(), 3);
        assert_eq!(&events[2][..], b"data: [DONE]\n\n");
        assert_eq!(events.concat(), body.to_vec());
        assert!(ends_with_done(&body));
        assert!(!ends_with_done(b"data: {\"a\":1}\n\n"));
    }
}
