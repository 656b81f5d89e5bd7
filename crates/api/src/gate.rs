//! The one service in front of the router: it gives every request its id and tracing span,
//! authenticates it ([`crate::auth::authenticate`]), then hands it to the router; an error
//! the framework answered in plain text leaves in the caller's format
//! ([`crate::error::in_callers_format`]).
//!
//! Written as a plain `tower::Service` rather than two `axum::middleware::from_fn` layers:
//! those wrap every route separately and clone and box the inner service on every request,
//! which showed in the gateway's profile. Here a request costs one `Arc` clone and one boxed
//! future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::error::{in_callers_format, Audience};
use crate::request_id;
use crate::state::AppState;

#[derive(Clone)]
pub struct Gate(Arc<Inner>);

struct Inner {
    state: AppState,
    router: Router,
}

impl Gate {
    pub fn new(state: AppState, router: Router) -> Self {
        Self(Arc::new(Inner { state, router }))
    }
}

impl Service<Request> for Gate {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { Ok(serve(&inner, request).await) })
    }
}

async fn serve(inner: &Inner, mut request: Request) -> Response {
    let id = request_id::assign(&mut request);
    let audience = Audience::of(request.uri().path());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %String::from_utf8_lossy(id.as_bytes()),
        method = %request.method(),
        path = %request.uri().path(),
        tenant = tracing::field::Empty,
    );
    if let Some(trace) = crate::telemetry::continue_trace(&span, request.headers()) {
        request.extensions_mut().insert(trace);
    }
    let started = Instant::now();
    let response = async {
        let authenticated = crate::auth::authenticate(&inner.state, &mut request)
            .instrument(tracing::info_span!("authenticate"))
            .await;
        match authenticated {
            Ok(()) => match inner.router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            Err(refusal) => refusal,
        }
    }
    .instrument(span.clone())
    .await;
    let mut response = in_callers_format(audience, &method, response).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "served"
        );
    });
    let headers = response.headers_mut();
    headers.insert(request_id::HEADER, id);
    // No answer is ever read as another type than it says (a tenant's search text as HTML
    // would run with the console's origin).
    headers.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}
