//! Serving: the accept loop (one hyper HTTP/1.1 connection task per socket, TCP_NODELAY, a
//! per-connection kill switch for the `reset` fault) and the in-process [`Sim`] / [`SimHandle`]
//! API that Rust tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::{ConfigError, ResourceConfig, SimConfig};
use crate::faults::{Fault, FaultSpec};
use crate::reqlog::{LogFilter, LoggedRequest};
use crate::search::SearchServiceConfig;
use crate::state::AppState;

/// Lets a handler close the client's connection without answering. Inserted into every
/// request's extensions by the accept loop.
#[derive(Clone)]
pub struct ConnCtl(Arc<ConnCtlInner>);

struct ConnCtlInner {
    killed: Notify,
    /// A duplicate of the connection's socket, used to set SO_LINGER 0 so that closing
    /// sends a TCP reset rather than an orderly FIN.
    socket: Option<socket2::Socket>,
}

impl ConnCtl {
    fn new(socket: Option<socket2::Socket>) -> Self {
        ConnCtl(Arc::new(ConnCtlInner {
            killed: Notify::new(),
            socket,
        }))
    }

    /// Resets the connection: the connection task drops it at once, without a response.
    pub fn reset(&self) {
        if let Some(socket) = &self.0.socket {
            let _ = socket.set_linger(Some(Duration::ZERO));
        }
        self.0.killed.notify_one();
    }
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The emulator. Start it in-process with [`Sim::start`] (127.0.0.1, ephemeral port) or
/// [`Sim::start_on`].
pub struct Sim;

impl Sim {
    /// Starts the emulator on `127.0.0.1:0` in the current tokio runtime.
    pub async fn start(config: SimConfig) -> Result<SimHandle, StartError> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the emulator on `addr` in the current tokio runtime.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, StartError> {
        let state = AppState::new(&config)?;
        token_count::warm_up_all();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let app = crate::router::app(state.clone());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, shutdown.clone()));
        Ok(SimHandle {
            addr: local,
            state,
            shutdown,
            task: Some(task),
        })
    }
}

/// A running emulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL of a resource or search service: `http://127.0.0.1:PORT/r/{name}`, the
    /// value to register as its endpoint.
    pub fn resource_url(&self, name: &str) -> String {
        format!("http://{}/r/{name}", self.addr)
    }

    /// The shared state, for direct inspection.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Adds an Azure OpenAI resource at runtime.
    pub fn add_resource(&self, config: ResourceConfig) -> Result<(), ConfigError> {
        self.state.add_openai_resource(config)
    }

    /// Adds a search service at runtime.
    pub fn add_search_service(&self, config: SearchServiceConfig) -> Result<(), ConfigError> {
        self.state.add_search_service(config)
    }

    /// Injects a fault; returns its id.
    pub fn inject_fault(&self, spec: FaultSpec) -> u64 {
        self.state.faults.add(spec)
    }

    /// Removes every fault (and nothing else).
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// Faults still active.
    pub fn faults(&self) -> Vec<Fault> {
        self.state.faults.list()
    }

    /// Requests received (oldest first), optionally only those of one resource.
    pub fn requests(&self, resource: Option<&str>) -> Vec<LoggedRequest> {
        self.state.log.list(&LogFilter {
            resource: resource.map(str::to_owned),
            ..LogFilter::default()
        })
    }

    /// Moves the rate limiter's clock forward (crosses windows without sleeping).
    pub fn advance_clock(&self, by: Duration) {
        self.state
            .clock
            .advance(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
    }

    /// Same as `POST /_sim/reset`: clears faults, the request log, rate-limit windows and
    /// stored responses; keeps resources.
    pub fn reset(&self) {
        crate::control::reset(&self.state);
    }

    /// Stops accepting connections and closes open ones.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let dup = socket2::SockRef::from(&stream).try_clone().ok();
        let ctl = ConnCtl::new(dup);
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn_ctl = ctl.clone();
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(conn_ctl.clone());
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = ctl.0.killed.notified() => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}
