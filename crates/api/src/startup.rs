//! Building and running the gateway: store, registry, secrets, router, server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::{any, get, post};
use axum::Router;
use secrecy::SecretString;
use tenant_registry::{crypto, MasterKey, Registry, SqlStore, SqliteLocation, Store};
use tokio::net::TcpListener;

use crate::auth::AdminToken;
use crate::config::Config;
use crate::gate::Gate;
use crate::jwt::{ExternalIdp, JwtAuthority};
use crate::metering::{LedgerSink, UsageSink};
use crate::state::AppState;
use crate::{admin, health, me, openai, search, usage};

/// A built gateway, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Gate,
    state: AppState,
    server: crate::server::ServerSettings,
}

/// The secrets the gateway runs with.
struct Secrets {
    master: MasterKey,
    admin: SecretString,
    jwt: Option<SecretString>,
}

/// `--migrate-only`: brings the store's schema (registry, operations, usage ledger) up to this
/// build's migrations and returns. Needs only the database settings, no secrets.
pub async fn migrate_only(config: &Config) -> anyhow::Result<()> {
    let store = match config.postgres_url() {
        Some(url) => SqlStore::postgres(url, 2)
            .await
            .context("connecting to Postgres")?,
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            match config.database_url.as_deref() {
                Some(url) if url.len() > "sqlite:".len() => {
                    SqlStore::sqlite(SqliteLocation::Url(url)).await
                }
                _ => SqlStore::sqlite(SqliteLocation::Dir(&config.data_dir)).await,
            }
            .context("opening the embedded SQLite store")?
        }
    };
    Store::migrate(&store)
        .await
        .context("applying the migrations")?;
    Store::ready(&store)
        .await
        .context("checking the migrations")?;
    Ok(())
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (store, secrets) = match config.postgres_url() {
            Some(url) => {
                let store = SqlStore::postgres(url, config.database_max_connections)
                    .await
                    .context("connecting to Postgres")?;
                let master = config
                    .master_key
                    .as_ref()
                    .context("BULKHEAD_MASTER_KEY is required with Postgres")?;
                let admin = config
                    .admin_token
                    .clone()
                    .context("BULKHEAD_ADMIN_TOKEN is required with Postgres")?;
                let secrets = Secrets {
                    master: MasterKey::with_previous(master, &config.previous_master_keys())
                        .map_err(anyhow::Error::msg)?,
                    admin,
                    jwt: config.jwt_secret.clone(),
                };
                (Arc::new(store), secrets)
            }
            None => {
                std::fs::create_dir_all(&config.data_dir)
                    .with_context(|| format!("creating {}", config.data_dir.display()))?;
                let store = match config.database_url.as_deref() {
                    Some(url) if url.len() > "sqlite:".len() => {
                        SqlStore::sqlite(SqliteLocation::Url(url)).await
                    }
                    _ => SqlStore::sqlite(SqliteLocation::Dir(&config.data_dir)).await,
                }
                .context("opening the embedded SQLite store")?;
                (Arc::new(store), embedded_secrets(&config)?)
            }
        };
        let operation_store: Arc<dyn operations::OperationStore> = Arc::clone(&store) as _;
        let store: Arc<dyn Store> = store;
        let ids = Arc::new(secrets.master.clone());
        let registry = Registry::open(store, secrets.master)
            .await
            .context("opening the registry")?;
        let external = match (
            &config.jwks_url,
            &config.jwt_external_issuer,
            &config.jwt_external_audience,
        ) {
            (Some(url), Some(issuer), Some(audience)) => Some(ExternalIdp {
                jwks_url: url.clone(),
                issuer: issuer.clone(),
                audience: audience.clone(),
            }),
            (None, _, _) => None,
            _ => anyhow::bail!(
                "BULKHEAD_JWKS_URL needs BULKHEAD_JWT_EXTERNAL_ISSUER and BULKHEAD_JWT_EXTERNAL_AUDIENCE"
            ),
        };
        let jwt = Arc::new(JwtAuthority::new(
            secrets.jwt.as_ref(),
            config.jwt_issuer.clone(),
            config.jwt_tenant_claim.clone(),
            external,
        ));
        if config.jwks_url.is_some() {
            let jwt = Arc::clone(&jwt);
            tokio::spawn(async move {
                loop {
                    match jwt.refresh_jwks().await {
                        Ok(count) => tracing::info!(keys = count, "JWKS loaded"),
                        Err(error) => tracing::warn!(%error, "JWKS fetch failed"),
                    }
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
            });
        }
        registry.watch(Duration::from_secs(config.registry_refresh_seconds.max(1)));
        let lifecycle = Arc::new(crate::server::Lifecycle::default());
        let (router_settings, breakers) = config.upstream.build();
        let tokens = config.identity.build()?;
        let openai = openai_router::OpenAiRouter::new(
            router_settings,
            openai_router::HealthBook::new(breakers),
            lifecycle.cut_streams(),
            tokens.clone(),
        )?;
        let quota = config.quota.build().await?;
        let cache = Arc::new(config.cache.build(&config.quota).await?);
        crate::metrics::install();
        let ledger_url = match config.postgres_url() {
            Some(url) => url.to_owned(),
            None => match config.database_url.as_deref() {
                Some(url) if url.len() > "sqlite:".len() => url.to_owned(),
                _ => format!("sqlite://{}", config.data_dir.join("registry.db").display()),
            },
        };
        let spill_dir = config
            .ledger_spill_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("ledger-spill"));
        let ledger = Arc::new(
            usage_ledger::Ledger::start(&ledger_url, usage_ledger::LedgerConfig::new(spill_dir))
                .await
                .context("starting the usage ledger")?,
        );
        // The JSON of the pages moves copy and compare runs on one low-priority thread: a
        // replica's moves never take more than a core, and never one a request is waiting for.
        let search = Arc::new(
            search_router::SearchClient::new(
                Duration::from_millis(config.upstream.connect_timeout_ms),
                Duration::from_millis(config.upstream.total_timeout_ms),
                tokens,
            )?
            .with_offload(Arc::new(crate::background::PageThreads(
                crate::background::LowPriorityThreads::start("bulkhead-pages", 1),
            ))),
        );
        let jobs = Arc::new(crate::jobs::Jobs {
            registry: Arc::clone(&registry),
            search: Arc::clone(&search),
            settings: crate::jobs::MoveSettings {
                fence_settle: Duration::from_millis(config.move_fence_settle_ms),
                retry: search_router::Retry {
                    attempts: config.search_retry_attempts.max(1),
                    ..search_router::Retry::default()
                },
            },
        });
        let runner = operations::Runner::new(
            Arc::clone(&operation_store),
            jobs,
            operations::RunnerSettings {
                // Unique per process: a restarted replica never mistakes an old lease for its own.
                owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
                lease: Duration::from_secs(config.operation_lease_seconds.max(1)),
                poll: Duration::from_secs(1),
                concurrency: 2,
            },
        );
        runner.start();
        let state = AppState {
            operations: Arc::new(crate::jobs::Operations {
                store: operation_store,
                runner,
                grace_seconds: config.move_source_grace_seconds,
            }),
            registry,
            jwt,
            admin_token: Arc::new(AdminToken::new(&secrets.admin)),
            token_ttl: Duration::from_secs(config.jwt_ttl_seconds).min(crate::jwt::MAX_TTL),
            openai: Arc::new(openai),
            usage: Arc::new(LedgerSink(Arc::clone(&ledger))),
            ledger,
            metrics_tenant_labels: config.metrics_tenant_labels,
            expose_member: config.expose_deployment_header,
            ids,
            search,
            lifecycle,
            quota,
            cache,
            console: Arc::new(crate::console::ConsoleState::new(
                config.console_secure_cookie,
            )),
            counting: Arc::new(crate::counting::CountPool::new(
                config.tokenize_threads.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map_or(1, |n| n.get().saturating_sub(1))
                        .max(1)
                }),
                Duration::from_millis(config.tokenize_wait_ms),
                config.tokenize_max_bytes,
            )),
            tokens: token_count::Counter::new(
                config.tokenizer_map.clone(),
                config.model_limits.clone(),
            ),
        };
        // The tokenizers of the models the catalog deploys are built in the background now;
        // another is built the first time a count needs it, on the counting threads.
        token_count::warm_up(
            state
                .registry
                .snapshot()
                .catalog
                .deployments
                .values()
                .map(|d| state.tokens.encoding(&d.view.model)),
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let open_files = crate::server::raise_open_file_limit();
        let server = crate::server::ServerSettings {
            header_timeout: Duration::from_secs(config.header_read_timeout_seconds.max(1)),
            keepalive_idle: Duration::from_secs(config.keepalive_idle_seconds.max(1)),
            body_timeout: Duration::from_secs(config.body_read_timeout_seconds.max(1)),
            max_connections: config.max_connections.max(1),
            shutdown_delay: Duration::from_secs(config.shutdown_delay_seconds),
            grace: Duration::from_secs(config.shutdown_grace_seconds),
        };
        let max_connections = server.effective_max_connections(open_files);
        if max_connections < server.max_connections {
            tracing::warn!(
                open_files,
                configured = server.max_connections,
                max_connections,
                "the open-file limit holds the connection cap lower than configured"
            );
        }
        let server = crate::server::ServerSettings {
            max_connections,
            ..server
        };
        Ok(Self {
            listener,
            router: router(state.clone()),
            state,
            server,
        })
    }

    /// Sends usage records to `sink` instead of the log (tests, custom ledgers).
    pub fn with_usage_sink(mut self, sink: Arc<dyn UsageSink>) -> Self {
        self.state.usage = sink;
        self.router = router(self.state.clone());
        self
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes, then drains (see [`crate::server`]) and flushes the
    /// usage ledger.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let ledger = Arc::clone(&self.state.ledger);
        let quota = self.state.quota.clone();
        crate::server::Server {
            listener: self.listener,
            gate: self.router,
            settings: self.server,
            lifecycle: Arc::clone(&self.state.lifecycle),
        }
        .run(stop)
        .await;
        // The slices of quota this replica leased go back for the others to use.
        quota.release().await;
        // Every finished call's record reaches the store (or, with the store down, the spill
        // file that the next start replays).
        match ledger.shutdown().await {
            Ok(metrics) => tracing::info!(
                written = metrics.written,
                spilled = metrics.in_spill,
                "usage ledger flushed"
            ),
            Err(error) => tracing::error!(%error, "usage ledger flush failed"),
        }
        Ok(())
    }
}

/// The whole HTTP surface. The [`Gate`] (request id, authentication) wraps every route and the
/// fallback; see [`crate::auth`].
pub fn router(state: AppState) -> Gate {
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::metrics::render))
        .route("/v1/me", get(me::me))
        // Model discovery, in every spelling the SDKs use (see `models`).
        .route("/v1/openapi.json", get(crate::models::tenant_openapi))
        .route("/v1/models", get(crate::models::list_models))
        .route("/openai/v1/models", get(crate::models::list_models))
        .route("/openai/models", get(crate::models::list_models))
        .route(
            "/openai/deployments/{alias}/chat/completions",
            post(openai::deployment_call),
        )
        .route(
            "/openai/deployments/{alias}/completions",
            post(openai::deployment_call),
        )
        .route(
            "/openai/deployments/{alias}/embeddings",
            post(openai::deployment_call),
        )
        .route("/openai/v1/chat/completions", post(openai::model_call))
        .route("/openai/v1/embeddings", post(openai::model_call))
        // The Responses API in every spelling the SDKs use: the v1 API, the Azure client's
        // versioned path, and the plain OpenAI client with `base_url=.../v1`.
        .route("/openai/v1/responses", post(openai::create_response))
        .route("/openai/responses", post(openai::create_response))
        .route("/v1/responses", post(openai::create_response))
        .route(
            "/openai/v1/responses/{id}",
            get(openai::get_response).delete(openai::delete_response),
        )
        .route(
            "/openai/responses/{id}",
            get(openai::get_response).delete(openai::delete_response),
        )
        .route(
            "/v1/responses/{id}",
            get(openai::get_response).delete(openai::delete_response),
        )
        .route("/v1/chat/completions", post(openai::model_call))
        .route("/v1/embeddings", post(openai::model_call))
        .route("/v1/tokenize", post(openai::tokenize))
        .route("/v1/usage", get(usage::tenant_usage))
        // Azure AI Search, friendly and OData routes; `search::handle` parses the path.
        .route("/indexes", any(search::handle))
        .route("/indexes/{*rest}", any(search::handle))
        .route("/{odata}", any(search::handle))
        .route("/{odata}/{*rest}", any(search::handle))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::error::DATA_PLANE_BODY_LIMIT,
        ))
        .merge(admin::routes().layer(axum::extract::DefaultBodyLimit::max(
            crate::error::ADMIN_BODY_LIMIT,
        )))
        .merge(
            crate::console::routes(state.clone())
                .layer(axum::extract::DefaultBodyLimit::max(16 * 1024)),
        )
        .fallback(not_found)
        .with_state(state.clone());
    Gate::new(state, routes)
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    crate::error::route_not_found(uri.path())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// With the embedded store, secrets not given in the configuration are generated on first
/// start and kept in the data directory (mode 0600), so restarts keep them. Their paths are
/// logged; their values never are.
fn embedded_secrets(config: &Config) -> anyhow::Result<Secrets> {
    let dir = &config.data_dir;
    let master = match &config.master_key {
        Some(key) => key.clone(),
        None => stored_secret(&dir.join("master-key"), MasterKey::generate_base64)?,
    };
    let admin = match &config.admin_token {
        Some(token) => token.clone(),
        None => {
            let path = dir.join("admin-token");
            let token = stored_secret(&path, crypto::generate_token)?;
            tracing::info!(path = %path.display(), "the admin token is in this file");
            token
        }
    };
    let jwt = match &config.jwt_secret {
        Some(secret) => secret.clone(),
        None => stored_secret(&dir.join("jwt-secret"), crypto::generate_token)?,
    };
    Ok(Secrets {
        master: MasterKey::with_previous(&master, &config.previous_master_keys())
            .map_err(anyhow::Error::msg)?,
        admin,
        jwt: Some(jwt),
    })
}

fn stored_secret(path: &Path, generate: fn() -> SecretString) -> anyhow::Result<SecretString> {
    use secrecy::ExposeSecret;
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(SecretString::from(existing.to_owned()));
        }
    }
    let secret = generate();
    write_private(path, secret.expose_secret())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a secret on first start");
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{contents}\n"))
}
