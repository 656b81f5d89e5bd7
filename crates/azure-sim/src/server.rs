//! Serving: the accept loop (one hyper HTTP/1.1 connection task per socket, TCP_NODELAY, a
//! per-connection kill switch for the `reset` fault), optionally a second, TLS listener serving
//! the same router, and the in-process [`Sim`] / [`SimHandle`] API that Rust tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::{ConfigError, ResourceConfig, SimConfig};
use crate::faults::{Fault, FaultSpec};
use crate::reqlog::{LogFilter, LoggedRequest};
use crate::search::SearchServiceConfig;
use crate::state::AppState;
use crate::tls::{TlsError, TlsIdentity};

/// How the request's connection arrived; inserted into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Whether it came in on the TLS listener.
    pub tls: bool,
}

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
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The emulator. Start it in-process with [`Sim::start`] (127.0.0.1, ephemeral port) or
/// [`Sim::start_on`]; [`Sim::start_with_tls`] adds an HTTPS listener (needed for Entra
/// clients: MSAL and azure-identity refuse a non-https authority, azure-core refuses bearer
/// tokens over http).
pub struct Sim;

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local))
}

impl Sim {
    /// Starts the emulator on `127.0.0.1:0` in the current tokio runtime.
    pub async fn start(config: SimConfig) -> Result<SimHandle, StartError> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the emulator on `addr` in the current tokio runtime.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, StartError> {
        Self::start_inner(config, addr, None).await
    }

    /// Starts the emulator on `127.0.0.1:0` over http and on another `127.0.0.1:0` over
    /// https (see [`SimHandle::tls_base_url`] and [`SimHandle::tls_ca_pem`]).
    pub async fn start_with_tls(config: SimConfig) -> Result<SimHandle, StartError> {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_inner(config, local, Some(local)).await
    }

    /// Starts the emulator on `addr` (http) and `tls_addr` (https, same router).
    pub async fn start_on_with_tls(
        config: SimConfig,
        addr: SocketAddr,
        tls_addr: SocketAddr,
    ) -> Result<SimHandle, StartError> {
        Self::start_inner(config, addr, Some(tls_addr)).await
    }

    async fn start_inner(
        config: SimConfig,
        addr: SocketAddr,
        tls_addr: Option<SocketAddr>,
    ) -> Result<SimHandle, StartError> {
        let state = AppState::new(&config)?;
        token_count::warm_up_all();
        let (listener, local) = bind(addr).await?;
        let tls = match tls_addr {
            Some(tls_addr) => {
                let identity = TlsIdentity::generate()?;
                let (listener, local) = bind(tls_addr).await?;
                Some((listener, local, identity))
            }
            None => None,
        };
        let app = crate::router::app(state.clone());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app.clone(), shutdown.clone()));
        let (tls_addr, tls_ca_pem, tls_task) = match tls {
            Some((listener, local, identity)) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config.clone());
                let task = tokio::spawn(serve_tls(listener, acceptor, app, shutdown.clone()));
                (Some(local), Some(identity.ca_pem), Some(task))
            }
            None => (None, None, None),
        };
        Ok(SimHandle {
            addr: local,
            tls_addr,
            tls_ca_pem,
            state,
            shutdown,
            task: Some(task),
            tls_task,
        })
    }
}

/// A running emulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tls_ca_pem: Option<String>,
    state: AppState,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    tls_task: Option<tokio::task::JoinHandle<()>>,
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

    /// The TLS listener's address, when started with TLS.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// `https://127.0.0.1:PORT` (no trailing slash), when started with TLS: the Entra
    /// authority host (`{tls_base_url}/{tenant}`) and an https base for every resource.
    pub fn tls_base_url(&self) -> Option<String> {
        self.tls_addr.map(|addr| format!("https://{addr}"))
    }

    /// `https://127.0.0.1:PORT/r/{name}`, when started with TLS.
    pub fn tls_resource_url(&self, name: &str) -> Option<String> {
        self.tls_addr.map(|addr| format!("https://{addr}/r/{name}"))
    }

    /// PEM of the CA certificate clients must trust to reach the TLS listener.
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls_ca_pem.as_deref()
    }

    /// The emulated identity platform (outage switch, lifetime, issued-token counters).
    pub fn entra(&self) -> &crate::entra::Entra {
        &self.state.entra
    }

    /// A federated token (as the emulated AKS OIDC issuer signs it) for a workload identity
    /// whose federated credential names `issuer` and `subject`; audience
    /// `api://AzureADTokenExchange`, valid for an hour on the emulator's clock.
    pub fn federated_token(&self, issuer: &str, subject: &str) -> Option<String> {
        let key = self.state.entra.key()?;
        crate::entra::tokens::mint_federated_token(
            key,
            issuer,
            subject,
            crate::entra::config::TOKEN_EXCHANGE_AUDIENCE,
            self.state.clock.unix_seconds(),
            3600,
        )
        .ok()
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

    /// Same as `POST /_sim/reset`: clears faults, the request log, rate-limit windows,
    /// stored responses and Entra's issued-token counters, ends an Entra outage and restores
    /// the configured token lifetime; keeps resources.
    pub fn reset(&self) {
        crate::control::reset(&self.state);
    }

    /// Stops accepting connections and closes open ones.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.tls_task.take() {
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
    accept_loop(listener, None, app, shutdown).await;
}

/// Accepts TLS connections until `shutdown` is cancelled; the same router serves them.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shutdown: CancellationToken,
) {
    accept_loop(listener, Some(acceptor), app, shutdown).await;
}

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) {
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
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, false, app, ctl, shutdown).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        serve_connection(stream, true, app, ctl, shutdown).await;
                    }
                }
            }
        });
    }
}

/// Serves one connection (plain or TLS) until it ends, is killed or the server stops.
async fn serve_connection<I>(
    io: I,
    tls: bool,
    app: Router,
    ctl: ConnCtl,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn_ctl = ctl.clone();
    let info = ConnInfo { tls };
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(conn_ctl.clone());
        req.extensions_mut().insert(info);
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        () = ctl.0.killed.notified() => {}
        () = shutdown.cancelled() => {}
    }
}
