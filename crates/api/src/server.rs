//! The HTTP server: accepting connections within a cap, timing out clients that stall, and
//! a drain that load balancers understand.
//!
//! Per connection (all configurable, see [`ServerSettings`]):
//! - a new connection must send a complete request head within the header timeout, and so
//!   must a keep-alive connection once it has sent the first byte of its next request (a
//!   slowloris sending a byte a second is closed);
//! - a keep-alive connection may stay idle between requests for the keep-alive timeout;
//! - a request body must arrive within the body timeout (a slow body gets 408 and the
//!   connection is closed), and a client that stops reading its answer is dropped after the
//!   same time;
//! - beyond the connection cap a new connection gets `503` with `Connection: close` at once
//!   and is closed; the cap is also held below the open-file limit, which is raised to its
//!   hard maximum at start, keeping a reserve of file descriptors for the gateway's own
//!   needs (the ledger's spill files, the store, upstream connections).
//!
//! A drain ([`Server::run`] once `stop` completes): `/readyz` answers 503 at once and every
//! answer carries `Connection: close`, while the listener keeps accepting for the shutdown
//! delay (the time a load balancer needs to take the endpoint out); then the listener
//! closes, idle connections are closed, and calls in flight have the grace period to finish.
//! A stream still running at its end is cut with an error event and metered with what was
//! relayed (see `openai_router`). The process then exits without waiting for anything else.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::{AdminError, Audience};
use crate::gate::Gate;

/// File descriptors kept for the gateway's own use, beyond two per client connection (the
/// connection and, while it is proxied, its upstream connection).
pub const FD_RESERVE: u64 = 256;

/// How a connection is allowed to behave, and how the server drains.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_timeout: Duration,
    pub keepalive_idle: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_delay: Duration,
    pub grace: Duration,
}

impl ServerSettings {
    /// The connection cap actually used: the configured one, held below what the open-file
    /// limit leaves after [`FD_RESERVE`] (two descriptors per proxied connection).
    pub fn effective_max_connections(&self, open_files: u64) -> usize {
        let by_files = open_files.saturating_sub(FD_RESERVE) / 2;
        self.max_connections
            .min(usize::try_from(by_files).unwrap_or(usize::MAX))
            .max(1)
    }
}

/// Raises the soft open-file limit to the hard one; the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Where the process is in its life, as readiness and every answer see it.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    /// Tripped when the grace period is over: streams still running end with an error event.
    cut: CancellationToken,
    /// Connections open now, and refused for the cap since start.
    open: AtomicUsize,
    refused: AtomicU64,
    timed_out: AtomicU64,
}

impl Lifecycle {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Cancelled when streams in flight must end (the grace period is over).
    pub fn cut_streams(&self) -> CancellationToken {
        self.cut.clone()
    }

    /// (open connections, connections refused at the cap, connections closed for a timeout).
    pub fn connections(&self) -> (usize, u64, u64) {
        (
            self.open.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.timed_out.load(Ordering::Relaxed),
        )
    }
}

/// The server: a listener, the service in front of the router, and its settings.
pub struct Server {
    pub listener: TcpListener,
    pub gate: Gate,
    pub settings: ServerSettings,
    pub lifecycle: Arc<Lifecycle>,
}

impl Server {
    /// Serves until `stop` completes, then drains (see the module documentation).
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) {
        let Server {
            listener,
            gate,
            settings,
            lifecycle,
        } = self;
        let permits = Arc::new(Semaphore::new(settings.max_connections));
        let closing = CancellationToken::new();
        let stop_accepting = {
            let lifecycle = Arc::clone(&lifecycle);
            let delay = settings.shutdown_delay;
            async move {
                stop.await;
                tracing::info!(
                    delay_s = delay.as_secs_f64(),
                    "draining: readiness is 503 and every answer closes its connection; still accepting for the shutdown delay"
                );
                lifecycle.draining.store(true, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
            }
        };
        tokio::pin!(stop_accepting);
        let mut accept_errors_logged_at: Option<Instant> = None;
        loop {
            tokio::select! {
                () = &mut stop_accepting => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                            refuse(tcp, &lifecycle);
                            continue;
                        };
                        if let Err(error) = tcp.set_nodelay(true) {
                            tracing::debug!(%error, "could not set TCP_NODELAY");
                        }
                        let connection = Connection {
                            gate: gate.clone(),
                            settings: settings.clone(),
                            lifecycle: Arc::clone(&lifecycle),
                            closing: closing.clone(),
                        };
                        tokio::spawn(async move {
                            connection.serve(tcp).await;
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors (or a transient error): back off rather than
                        // spin, and say so at most once a second.
                        if accept_errors_logged_at.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
                            tracing::warn!(%error, "accept failed");
                            accept_errors_logged_at = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
        drop(listener);
        let open = settings.max_connections - permits.available_permits();
        tracing::info!(
            open,
            grace_s = settings.grace.as_secs_f64(),
            "no longer accepting; closing idle connections and letting calls in flight finish"
        );
        closing.cancel();
        let all_closed = async {
            // Every connection holds a permit until it is closed.
            let _all = permits
                .acquire_many(u32::try_from(settings.max_connections).unwrap_or(u32::MAX))
                .await;
        };
        if tokio::time::timeout(settings.grace, all_closed)
            .await
            .is_err()
        {
            let left = settings.max_connections - permits.available_permits();
            tracing::warn!(
                connections = left,
                "grace period over; cutting the streams still running"
            );
            lifecycle.cut.cancel();
            // The cut streams write their error event and end; give them a moment to go out.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _all = permits
                    .acquire_many(u32::try_from(settings.max_connections).unwrap_or(u32::MAX))
                    .await;
            })
            .await;
        }
    }
}

/// The answer beyond the connection cap, written without waiting (the socket is new, its
/// send buffer empty), then the connection is closed.
fn refuse(tcp: TcpStream, lifecycle: &Lifecycle) {
    lifecycle.refused.fetch_add(1, Ordering::Relaxed);
    const BODY: &str = r#"{"error":{"code":"ServiceUnavailable","message":"Too many connections; retry shortly."}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tcp.try_write(answer.as_bytes());
}

/// What one connection needs.
struct Connection {
    gate: Gate,
    settings: ServerSettings,
    lifecycle: Arc<Lifecycle>,
    closing: CancellationToken,
}

/// What a connection's IO and its requests share.
struct ConnState {
    started: Instant,
    /// Requests whose answer has not been fully written.
    in_flight: AtomicUsize,
    /// Requests begun (the IO watches it to know a head was completed).
    begun: AtomicU64,
    /// Milliseconds since `started` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    /// The read side, parked while a request was in flight: woken when it becomes idle, so
    /// that its idle deadline starts (hyper may poll the read before the answer's body ends).
    idle_waker: futures::task::AtomicWaker,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Connection {
    async fn serve(self, tcp: TcpStream) {
        self.lifecycle.open.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            idle_waker: futures::task::AtomicWaker::new(),
        });
        let io = GuardedIo::new(tcp, Arc::clone(&state), &self.settings);
        let timed_out = Arc::clone(&io.timed_out);
        let service = ConnectionService {
            gate: self.gate.clone(),
            state,
            lifecycle: Arc::clone(&self.lifecycle),
            body_timeout: self.settings.body_timeout,
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    break;
                }
                () = self.closing.cancelled(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        if timed_out.load(Ordering::Relaxed) {
            self.lifecycle.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        self.lifecycle.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The per-connection service: counts requests in flight (until their answer's body is
/// dropped, i.e. written or abandoned), bounds the time a request body may take, and closes
/// connections while draining.
#[derive(Clone)]
struct ConnectionService {
    gate: Gate,
    state: Arc<ConnState>,
    lifecycle: Arc<Lifecycle>,
    body_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let state = Arc::clone(&self.state);
        state.begun.fetch_add(1, Ordering::Relaxed);
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(Arc::clone(&state));
        let gate = self.gate.clone();
        let lifecycle = Arc::clone(&self.lifecycle);
        let expired = Arc::new(AtomicBool::new(false));
        let audience = Audience::of(request.uri().path());
        let request: Request = request.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                sleep: Box::pin(tokio::time::sleep(self.body_timeout)),
                expired: Arc::clone(&expired),
            })
        });
        Box::pin(async move {
            let mut response = match gate.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if expired.load(Ordering::Relaxed) {
                response = body_timed_out(audience);
            }
            if lifecycle.draining() || expired.load(Ordering::Relaxed) {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| {
                Body::new(Guarded {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    }
}

fn body_timed_out(audience: Audience) -> Response {
    let message = "The request body did not arrive in time.";
    match audience {
        Audience::DataPlane => crate::error::ApiError::BodyTimedOut.into_response(),
        Audience::Admin | Audience::Console => {
            let mut response = AdminError::Invalid {
                field: None,
                message: message.to_owned(),
            }
            .into_response();
            *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
            response
        }
    }
}

/// Marks a request finished (its answer written or abandoned) when dropped.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        if state.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            state.idle_since_ms.store(state.now_ms(), Ordering::Relaxed);
            state.idle_waker.wake();
        }
    }
}

/// An answer's body that keeps its request counted in flight until it is dropped.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that must arrive before its deadline; past it, reading it fails (and the
/// answer becomes a 408).
struct DeadlineBody {
    inner: Incoming,
    sleep: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, with the read deadlines of a connection between requests (header timeout,
/// keep-alive idle) and a deadline on writes a client does not take.
struct GuardedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
    header_timeout: Duration,
    keepalive_idle: Duration,
    write_timeout: Duration,
    read_sleep: Pin<Box<Sleep>>,
    write_sleep: Pin<Box<Sleep>>,
    /// When the first byte of the next request head arrived, and how many requests had begun
    /// then (a new one begun means that head was completed).
    head_started: Option<(Instant, u64)>,
    write_blocked_since: Option<Instant>,
    timed_out: Arc<AtomicBool>,
}

impl GuardedIo {
    fn new(inner: TcpStream, state: Arc<ConnState>, settings: &ServerSettings) -> Self {
        Self {
            inner,
            state,
            header_timeout: settings.header_timeout,
            keepalive_idle: settings.keepalive_idle,
            write_timeout: settings.body_timeout,
            read_sleep: Box::pin(tokio::time::sleep(settings.header_timeout)),
            write_sleep: Box::pin(tokio::time::sleep(settings.body_timeout)),
            head_started: None,
            write_blocked_since: None,
            timed_out: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The read deadline now: none while a request is in flight (its body deadline and the
    /// upstream's timeouts govern), else the header timeout from the first byte of the next
    /// head (or from the connection's start), else the keep-alive timeout from idleness.
    fn read_deadline(&mut self) -> Option<tokio::time::Instant> {
        let begun = self.state.begun.load(Ordering::Relaxed);
        if let Some((_, at_begun)) = self.head_started {
            if at_begun != begun {
                self.head_started = None;
            }
        }
        if self.state.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let started = tokio::time::Instant::from_std(self.state.started);
        Some(match self.head_started {
            Some((at, _)) => tokio::time::Instant::from_std(at) + self.header_timeout,
            None if begun == 0 => started + self.header_timeout,
            None => {
                started
                    + Duration::from_millis(self.state.idle_since_ms.load(Ordering::Relaxed))
                    + self.keepalive_idle
            }
        })
    }

    fn expire(&self, what: &str) -> std::io::Error {
        self.timed_out.store(true, Ordering::Relaxed);
        tracing::debug!(what, "closing a connection that stalled");
        std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned())
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let idle = this.state.in_flight.load(Ordering::Relaxed) == 0;
                if buf.filled().len() > before && idle && this.head_started.is_none() {
                    this.head_started =
                        Some((Instant::now(), this.state.begun.load(Ordering::Relaxed)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let Some(deadline) = this.read_deadline() else {
                    this.state.idle_waker.register(cx.waker());
                    // Became idle meanwhile: its deadline applies from now on.
                    if this.state.in_flight.load(Ordering::Relaxed) == 0 {
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                };
                this.read_sleep.as_mut().reset(deadline);
                if this.read_sleep.as_mut().poll(cx).is_ready() {
                    let what = if this.head_started.is_some()
                        || this.state.begun.load(Ordering::Relaxed) == 0
                    {
                        "request head not received in time"
                    } else {
                        "keep-alive connection idle for too long"
                    };
                    return Poll::Ready(Err(this.expire(what)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => {
                let since = *this.write_blocked_since.get_or_insert_with(Instant::now);
                this.write_sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(since) + this.write_timeout);
                if this.write_sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(this.expire("the client stopped reading its answer")));
                }
                Poll::Pending
            }
            ready => {
                this.write_blocked_since = None;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => {
                let since = *this.write_blocked_since.get_or_insert_with(Instant::now);
                this.write_sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(since) + this.write_timeout);
                if this.write_sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(this.expire("the client stopped reading its answer")));
                }
                Poll::Pending
            }
            ready => {
                this.write_blocked_since = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_stays_below_the_open_file_limit() {
        let settings = ServerSettings {
            header_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            shutdown_delay: Duration::from_secs(5),
            grace: Duration::from_secs(30),
        };
        assert_eq!(settings.effective_max_connections(1_048_576), 10_000);
        assert_eq!(settings.effective_max_connections(1024), (1024 - 256) / 2);
        assert_eq!(settings.effective_max_connections(256), 1, "never zero");
    }
}
