//! The gateway's configuration: flags, each with an environment variable. Nothing below this
//! crate reads the environment. `bulkhead --help` lists every variable:
//!
//! | variable | meaning |
//! |---|---|
//! | `BULKHEAD_LISTEN` | address to serve on (default `127.0.0.1:8080`) |
//! | `DATABASE_URL` | `postgres://...` for Postgres; unset or `sqlite:` for the embedded SQLite store |
//! | `BULKHEAD_DATA_DIR` | where the embedded store and its generated secrets live (default `.bulkhead`) |
//! | `BULKHEAD_DATABASE_MAX_CONNECTIONS` | Postgres pool size (default 16) |
//! | `BULKHEAD_MASTER_KEY` | base64 of 32 bytes; seals upstream credentials at rest |
//! | `BULKHEAD_MASTER_KEYS_PREVIOUS` | earlier master keys, comma-separated: open only (rotation) |
//! | `BULKHEAD_ADMIN_TOKEN` | bearer token of the admin API |
//! | `BULKHEAD_JWT_SECRET` | HS256 secret of gateway-issued tenant tokens |
//! | `BULKHEAD_JWT_ISSUER` | `iss` of gateway-issued tokens (default `bulkhead`) |
//! | `BULKHEAD_JWT_TTL_SECONDS` | default lifetime of issued tokens (default 900) |
//! | `BULKHEAD_JWKS_URL` | JWKS of an external identity provider (RS256/ES256) |
//! | `BULKHEAD_JWT_EXTERNAL_ISSUER` | required `iss` of external tokens |
//! | `BULKHEAD_JWT_EXTERNAL_AUDIENCE` | required `aud` of external tokens |
//! | `BULKHEAD_JWT_TENANT_CLAIM` | claim naming the tenant, by id or slug (default `tid`) |
//! | `BULKHEAD_REGISTRY_REFRESH_SECONDS` | interval of the full registry read that checks the view (changes arrive through the change log; default 300) |
//! | `BULKHEAD_SHUTDOWN_GRACE_SECONDS` | how long in-flight requests may run once the listener closed after SIGTERM (default 30) |
//! | `BULKHEAD_SHUTDOWN_DELAY_SECONDS` | how long the listener keeps accepting after SIGTERM, `/readyz` already 503 (default 5) |
//! | `BULKHEAD_HEADER_READ_TIMEOUT_SECONDS` | time to send a complete request head (default 10) |
//! | `BULKHEAD_KEEPALIVE_IDLE_SECONDS` | idle time allowed between requests on a keep-alive connection (default 75) |
//! | `BULKHEAD_BODY_READ_TIMEOUT_SECONDS` | time for a request body to arrive, or an answer to be taken (default 60) |
//! | `BULKHEAD_MAX_CONNECTIONS` | client connections open at once, beyond which 503 (default 10000; held below the open-file limit) |
//! | `BULKHEAD_EMULATOR` | also run the Azure emulator in this process, on this address |
//! | `BULKHEAD_EMULATOR_CONFIG` | the emulator's configuration file (default: `deploy/azure-sim.json`, built in) |
//! | `BULKHEAD_UPSTREAM_CONNECT_TIMEOUT_MS` | connect timeout to Azure (default 3000) |
//! | `BULKHEAD_UPSTREAM_FIRST_BYTE_TIMEOUT_MS` | until an upstream's response headers arrive (default 60000) |
//! | `BULKHEAD_UPSTREAM_IDLE_TIMEOUT_MS` | between two chunks of a stream (default 30000) |
//! | `BULKHEAD_UPSTREAM_TOTAL_TIMEOUT_MS` | a whole call, retries included, until it answers (default 120000) |
//! | `BULKHEAD_UPSTREAM_MAX_ATTEMPTS` | upstream attempts per call (default 3) |
//! | `BULKHEAD_UPSTREAM_API_VERSION` | `api-version` sent to Azure OpenAI (default `2024-10-21`) |
//! | `BULKHEAD_BREAKER_THRESHOLD` | consecutive failures that open a deployment's breaker (default 5) |
//! | `BULKHEAD_BREAKER_OPEN_SECONDS` | how long it stays open before one probe (default 30) |
//! | `BULKHEAD_EXPOSE_DEPLOYMENT_HEADER` | answer with `x-bulkhead-deployment: resource/deployment` (default false) |
//! | `BULKHEAD_LEDGER_SPILL_DIR` | where usage records wait on disk while the store is down (default `DATA_DIR/ledger-spill`; one per replica) |
//! | `BULKHEAD_CONSOLE_SECURE_COOKIE` | console session cookie always `Secure` (`__Host-` name); default: only when `X-Forwarded-Proto: https` |
//! | `BULKHEAD_METRICS_TENANT_LABELS` | label token metrics by tenant (default true; turn off for very large fleets) |
//! | `REDIS_URL` | quota counters in Redis, shared by every replica; unset: in process |
//! | `BULKHEAD_REDIS_CLUSTER` | `REDIS_URL` is a Redis Cluster (seed nodes, comma-separated; default false) |
//! | `BULKHEAD_QUOTA_ON_REDIS_ERROR` | `open` (default: decide in process, per replica) or `closed` (refuse with 503) |
//! | `BULKHEAD_QUOTA_TIMEOUT_MS` | the longest a quota check waits for Redis (default 50) |
//! | `BULKHEAD_QUOTA_LEASE_CALLS` | calls' worth of each limited scope a replica may hold, decided without Redis (default 8; 0: ask Redis for every call) |
//! | `BULKHEAD_QUOTA_LEASE_IDLE_MS` | a slice unused this long goes back to Redis (default 1000) |
//! | `BULKHEAD_QUOTA_RECALL_WAIT_MS` | how long a call refused while other replicas hold slices waits for them to come back (default 100) |
//! | `BULKHEAD_CACHE_KEY_PREFIX` | prefix of the response cache's Redis keys (default `bulkhead:cache:`; the cache shares `REDIS_URL`) |
//! | `BULKHEAD_CACHE_TIMEOUT_MS` | the longest a cache lookup or store waits for Redis before it is a miss (default 50) |
//! | `BULKHEAD_CACHE_LOCAL_MAX_BYTES` | bytes of cached answers each replica keeps in memory (default 64 MiB; 0: none, with Redis) |
//! | `BULKHEAD_CACHE_LOCAL_TTL_MS` | how long a replica keeps its copy of an answer read from Redis (default 2000) |
//! | `BULKHEAD_CACHE_MAX_ENTRY_BYTES` | the largest answer the cache stores (default 4 MiB) |
//! | `BULKHEAD_TOKENIZER_MAP` | model to encoding overrides, e.g. `my-model=cl100k_base,ft-*=o200k_base` |
//! | `BULKHEAD_MODEL_LIMITS` | context window / output cap overrides, e.g. `my-model=32000/4096` |
//! | `BULKHEAD_TOKENIZE_MAX_BYTES` | the most text one request may have tokenized (default 8 MiB; 400 beyond) |
//! | `BULKHEAD_TOKENIZE_THREADS` | large counts running at once, off the async workers (default: CPUs - 1, at least 1) |
//! | `BULKHEAD_TOKENIZE_WAIT_MS` | how long a large count may wait for its turn before a 503 (default 2000) |
//! | `BULKHEAD_MOVE_SOURCE_GRACE_SECONDS` | how long a search move keeps the source after switching (default 300) |
//! | `BULKHEAD_MOVE_FENCE_SETTLE_MS` | a move's wait between holding writes and its last comparison (default 2000) |
//! | `BULKHEAD_SEARCH_RETRY_ATTEMPTS` | tries of the gateway's own search calls when throttled or unreachable (default 8) |
//! | `BULKHEAD_OPERATION_LEASE_SECONDS` | an operation's lease; a dead replica's operation is taken over after it (default 15) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `BULKHEAD_OTLP_ENDPOINT` | OpenTelemetry collector (OTLP/HTTP base URL, e.g. `http://collector:4318`; the second wins); unset: no traces |
//! | `OTEL_SERVICE_NAME` | `service.name` of the spans (default `bulkhead`); the SDK reads `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER(_ARG)` itself |
//! | `AZURE_AUTHORITY_HOST` | Entra ID authority for `client_secret` / `workload_identity` credentials (default `https://login.microsoftonline.com`) |
//! | `BULKHEAD_IMDS_ENDPOINT` | instance metadata token endpoint for `managed_identity` |
//! | `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` | App Service / Container Apps managed identity (instead of IMDS when both are set) |
//! | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` | AKS workload identity: the defaults of a `workload_identity` credential |
//! | `BULKHEAD_IDENTITY_CA_FILE` | an extra root certificate (PEM) for the identity endpoints |
//! | `BULKHEAD_LOG` | log filter (default `info`) |
//! | `BULKHEAD_LOG_FORMAT` | `json` (default) or `text` |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use secrecy::SecretString;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "bulkhead",
    version,
    about = "Multitenant gateway for Azure OpenAI and Azure AI Search"
)]
pub struct Config {
    /// Address to serve on.
    #[arg(long, env = "BULKHEAD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// `postgres://...` for Postgres (several replicas); unset or `sqlite:` for the embedded store.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory of the embedded store and the secrets generated on its first start.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    pub data_dir: PathBuf,

    /// Postgres connection pool size.
    #[arg(long, env = "BULKHEAD_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Base64 of 32 random bytes; seals upstream credentials at rest. Generated into the data
    /// directory on first start with the embedded store; required with Postgres.
    #[arg(long, env = "BULKHEAD_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<SecretString>,

    /// Earlier master keys, comma-separated: they still open what they sealed (credentials
    /// not yet resealed, response ids already handed out) but never seal anything new.
    #[arg(long, env = "BULKHEAD_MASTER_KEYS_PREVIOUS", hide_env_values = true)]
    pub master_keys_previous: Option<SecretString>,

    /// Bearer token of the admin API. Generated like the master key when absent.
    #[arg(long, env = "BULKHEAD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// HS256 secret that signs gateway-issued tenant tokens. Generated like the master key
    /// when absent with the embedded store; with Postgres, token issuance is off without it.
    #[arg(long, env = "BULKHEAD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// `iss` of gateway-issued tokens.
    #[arg(long, env = "BULKHEAD_JWT_ISSUER", default_value = "bulkhead")]
    pub jwt_issuer: String,

    /// Default lifetime of gateway-issued tokens, in seconds (at most 86400).
    #[arg(long, env = "BULKHEAD_JWT_TTL_SECONDS", default_value_t = 900)]
    pub jwt_ttl_seconds: u64,

    /// JWKS URL of an external identity provider whose RS256/ES256 tokens are accepted.
    #[arg(long, env = "BULKHEAD_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Required `iss` of external tokens (required with a JWKS URL).
    #[arg(long, env = "BULKHEAD_JWT_EXTERNAL_ISSUER")]
    pub jwt_external_issuer: Option<String>,

    /// Required `aud` of external tokens (required with a JWKS URL).
    #[arg(long, env = "BULKHEAD_JWT_EXTERNAL_AUDIENCE")]
    pub jwt_external_audience: Option<String>,

    /// Claim that names the tenant (its id or slug).
    #[arg(long, env = "BULKHEAD_JWT_TENANT_CLAIM", default_value = "tid")]
    pub jwt_tenant_claim: String,

    /// Seconds between full registry reads, a consistency check: changes arrive through the
    /// change log (on notification, and a one-second poll).
    #[arg(long, env = "BULKHEAD_REGISTRY_REFRESH_SECONDS", default_value_t = 300)]
    pub registry_refresh_seconds: u64,

    /// Seconds in-flight requests may run once the listener has closed after SIGTERM.
    #[arg(long, env = "BULKHEAD_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// Seconds the listener keeps accepting after SIGTERM, with `/readyz` already 503, so a
    /// load balancer can take the endpoint out before connections are refused.
    #[arg(long, env = "BULKHEAD_SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    pub shutdown_delay_seconds: u64,

    /// Seconds a connection has to send a complete request head (from its start, or from the
    /// first byte of its next request).
    #[arg(
        long,
        env = "BULKHEAD_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub header_read_timeout_seconds: u64,

    /// Seconds a keep-alive connection may stay idle between requests (keep it above the
    /// load balancer's own idle timeout, 60 s on most).
    #[arg(long, env = "BULKHEAD_KEEPALIVE_IDLE_SECONDS", default_value_t = 75)]
    pub keepalive_idle_seconds: u64,

    /// Seconds a request body may take to arrive in full (408 beyond), and a client may
    /// leave its answer unread before the connection is dropped.
    #[arg(long, env = "BULKHEAD_BODY_READ_TIMEOUT_SECONDS", default_value_t = 60)]
    pub body_read_timeout_seconds: u64,

    /// Most client connections open at once; beyond, a new one gets 503 and is closed. Held
    /// below what the open-file limit allows (two descriptors per connection, and a reserve).
    #[arg(long, env = "BULKHEAD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    #[command(flatten)]
    pub upstream: UpstreamConfig,

    /// Name the deployment that answered in `x-bulkhead-deployment` (off: it reveals topology).
    #[arg(
        long,
        env = "BULKHEAD_EXPOSE_DEPLOYMENT_HEADER",
        default_value_t = false
    )]
    pub expose_deployment_header: bool,

    /// Mark the console's session cookie `Secure` (and name it `__Host-bulkhead_console`)
    /// whatever the request says: for a gateway served over HTTPS by a proxy that does not send
    /// `X-Forwarded-Proto`. Off: `Secure` only when that header says `https`.
    #[arg(long, env = "BULKHEAD_CONSOLE_SECURE_COOKIE", default_value_t = false)]
    pub console_secure_cookie: bool,

    /// Also run the Azure emulator (azure-sim) in this process, on this address (default
    /// 127.0.0.1:8090 when the flag is given without one). For local development.
    #[arg(long, env = "BULKHEAD_EMULATOR", num_args = 0..=1, default_missing_value = "127.0.0.1:8090")]
    pub emulator: Option<SocketAddr>,

    /// The emulator's configuration file; without it, the built-in copy of
    /// `deploy/azure-sim.json`.
    #[arg(long, env = "BULKHEAD_EMULATOR_CONFIG")]
    pub emulator_config: Option<PathBuf>,

    /// Where usage records wait on disk while the store is down (default
    /// `<data dir>/ledger-spill`). Each replica needs its own.
    #[arg(long, env = "BULKHEAD_LEDGER_SPILL_DIR")]
    pub ledger_spill_dir: Option<PathBuf>,

    /// Label token metrics by tenant (off for very large fleets: one series per tenant and
    /// model).
    #[arg(long, env = "BULKHEAD_METRICS_TENANT_LABELS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_tenant_labels: bool,

    #[command(flatten)]
    pub quota: QuotaConfig,

    #[command(flatten)]
    pub cache: CacheConfig,

    #[command(flatten)]
    pub identity: IdentityConfig,

    /// Which tokenizer a model uses, over the built-in table: `model=encoding` pairs, a
    /// model name or a prefix ending in `*` (`my-model=cl100k_base,ft-*=o200k_base`).
    #[arg(long, env = "BULKHEAD_TOKENIZER_MAP", default_value = "")]
    pub tokenizer_map: token_count::EncodingMap,

    /// Context window and output cap per model, over the built-in table
    /// (`my-model=32000/4096`).
    #[arg(long, env = "BULKHEAD_MODEL_LIMITS", default_value = "")]
    pub model_limits: token_count::LimitsMap,

    /// The most text one request may have tokenized, in bytes; a body with more is refused
    /// with a 400 when its tokens must be counted.
    #[arg(long, env = "BULKHEAD_TOKENIZE_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub tokenize_max_bytes: u64,

    /// Large token counts running at once, on the blocking pool (default: one fewer than the
    /// CPUs the process may use, at least one), so counting never takes every CPU.
    #[arg(long, env = "BULKHEAD_TOKENIZE_THREADS")]
    pub tokenize_threads: Option<usize>,

    /// How long a large count may wait for a free counting thread before it is refused with
    /// 503 and `Retry-After`.
    #[arg(long, env = "BULKHEAD_TOKENIZE_WAIT_MS", default_value_t = 2000)]
    pub tokenize_wait_ms: u64,

    /// Seconds a search move keeps the tenant's documents on the source after switching to
    /// the target (then they are purged).
    #[arg(
        long,
        env = "BULKHEAD_MOVE_SOURCE_GRACE_SECONDS",
        default_value_t = 300
    )]
    pub move_source_grace_seconds: u64,

    /// Milliseconds a move waits between holding the tenant's writes and its last comparison:
    /// more than the registry takes to reach every replica and a write to finish.
    #[arg(long, env = "BULKHEAD_MOVE_FENCE_SETTLE_MS", default_value_t = 2000)]
    pub move_fence_settle_ms: u64,

    /// Tries of each call the gateway makes on its own to a search service (provisioning,
    /// moves, offboarding) when it is throttled or unreachable.
    #[arg(long, env = "BULKHEAD_SEARCH_RETRY_ATTEMPTS", default_value_t = 8)]
    pub search_retry_attempts: u32,

    /// Seconds an operation's lease lasts (renewed every third of it); a replica that dies
    /// leaves its operation to another after this.
    #[arg(long, env = "BULKHEAD_OPERATION_LEASE_SECONDS", default_value_t = 15)]
    pub operation_lease_seconds: u64,

    /// OpenTelemetry collector to send traces to, over OTLP/HTTP with protobuf (its base URL;
    /// `/v1/traces` is appended). Unset: no traces.
    #[arg(long, env = "BULKHEAD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The standard name of the same setting; `BULKHEAD_OTLP_ENDPOINT` wins when both are set.
    #[arg(
        long = "otel-exporter-otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// `service.name` of the exported spans.
    #[arg(
        long = "otel-service-name",
        env = "OTEL_SERVICE_NAME",
        default_value = "bulkhead"
    )]
    pub otel_service_name: String,

    /// Threads that serve requests. Default: one per CPU the process may run on (its
    /// affinity and cgroup quota count). With one, the gateway runs tokio's single-threaded
    /// scheduler, which costs less per request than a one-worker pool: no cross-thread
    /// wake-ups, no work stealing.
    #[arg(long, env = "BULKHEAD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Apply the store's schema migrations and exit (a Kubernetes init container or Job runs
    /// this before the gateway starts; concurrent runs wait on Postgres' advisory lock).
    #[arg(long, default_value_t = false)]
    pub migrate_only: bool,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "BULKHEAD_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "BULKHEAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Where the gateway gets Entra ID tokens for upstreams that use a credential instead of a
/// key. The variables are the ones Azure sets (AKS workload identity, App Service, Container
/// Apps) and azure-identity reads, so a pod or app needs no extra configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityConfig {
    /// The identity platform (sovereign clouds, tests: azure-sim).
    #[arg(long = "authority-host", env = "AZURE_AUTHORITY_HOST", default_value = entra::broker_defaults::PUBLIC_AUTHORITY)]
    pub authority_host: String,

    /// The instance metadata token endpoint, for managed identity on VMs and AKS nodes.
    #[arg(long = "imds-endpoint", env = "BULKHEAD_IMDS_ENDPOINT", default_value = entra::broker_defaults::IMDS_TOKEN_ENDPOINT)]
    pub imds_endpoint: String,

    /// App Service / Container Apps managed identity endpoint (used instead of IMDS when
    /// set with IDENTITY_HEADER).
    #[arg(long = "identity-endpoint", env = "IDENTITY_ENDPOINT")]
    pub identity_endpoint: Option<String>,

    #[arg(
        long = "identity-header",
        env = "IDENTITY_HEADER",
        hide_env_values = true
    )]
    pub identity_header: Option<String>,

    /// Workload identity: the directory (tenant) id, client id and federated token file AKS
    /// injects.
    #[arg(long = "workload-tenant-id", env = "AZURE_TENANT_ID")]
    pub workload_tenant_id: Option<String>,

    #[arg(long = "workload-client-id", env = "AZURE_CLIENT_ID")]
    pub workload_client_id: Option<String>,

    #[arg(long = "federated-token-file", env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub federated_token_file: Option<PathBuf>,

    /// An extra root certificate (PEM) trusted for the identity platform's endpoints.
    #[arg(long = "identity-ca-file", env = "BULKHEAD_IDENTITY_CA_FILE")]
    pub identity_ca_file: Option<PathBuf>,
}

impl IdentityConfig {
    /// The token broker every router shares.
    pub fn build(&self) -> anyhow::Result<entra::TokenBroker> {
        let settings = entra::IdentitySettings {
            authority_host: self.authority_host.clone(),
            imds_endpoint: self.imds_endpoint.clone(),
            identity_endpoint: self.identity_endpoint.clone(),
            identity_header: self.identity_header.clone().map(Into::into),
            workload: entra::Workload {
                tenant_id: self.workload_tenant_id.clone(),
                client_id: self.workload_client_id.clone(),
                token_file: self.federated_token_file.clone(),
            },
            ca_file: self.identity_ca_file.clone(),
            ..entra::IdentitySettings::default()
        };
        entra::TokenBroker::new(settings).map_err(|e| anyhow::anyhow!("identity settings: {e}"))
    }
}

/// How calls reach Azure: timeouts, attempts, the `api-version`, the breakers.
#[derive(Debug, Clone, clap::Args)]
pub struct UpstreamConfig {
    /// Connect timeout to upstreams, in milliseconds.
    #[arg(
        long = "upstream-connect-timeout-ms",
        env = "BULKHEAD_UPSTREAM_CONNECT_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub connect_timeout_ms: u64,

    /// How long an upstream may take to send its response headers, in milliseconds.
    #[arg(
        long = "upstream-first-byte-timeout-ms",
        env = "BULKHEAD_UPSTREAM_FIRST_BYTE_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub first_byte_timeout_ms: u64,

    /// How long a stream may go quiet between two chunks, in milliseconds.
    #[arg(
        long = "upstream-idle-timeout-ms",
        env = "BULKHEAD_UPSTREAM_IDLE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub idle_timeout_ms: u64,

    /// How long a call, retries included, may take until it answers, in milliseconds.
    #[arg(
        long = "upstream-total-timeout-ms",
        env = "BULKHEAD_UPSTREAM_TOTAL_TIMEOUT_MS",
        default_value_t = 120_000
    )]
    pub total_timeout_ms: u64,

    /// Upstream attempts per call, the first included.
    #[arg(
        long = "upstream-max-attempts",
        env = "BULKHEAD_UPSTREAM_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub max_attempts: u32,

    /// The `api-version` sent to Azure OpenAI deployment paths.
    #[arg(
        long = "upstream-api-version",
        env = "BULKHEAD_UPSTREAM_API_VERSION",
        default_value = "2024-10-21"
    )]
    pub api_version: String,

    /// Consecutive failures (5xx, resets, timeouts) that open a deployment's breaker.
    #[arg(
        long = "breaker-threshold",
        env = "BULKHEAD_BREAKER_THRESHOLD",
        default_value_t = 5
    )]
    pub breaker_threshold: u32,

    /// Seconds a breaker stays open before one half-open probe.
    #[arg(
        long = "breaker-open-seconds",
        env = "BULKHEAD_BREAKER_OPEN_SECONDS",
        default_value_t = 30
    )]
    pub breaker_open_seconds: u64,
}

impl UpstreamConfig {
    /// The OpenAI router's settings and its breakers'.
    pub fn build(
        &self,
    ) -> (
        openai_router::RouterSettings,
        openai_router::BreakerSettings,
    ) {
        (
            openai_router::RouterSettings {
                connect_timeout: Duration::from_millis(self.connect_timeout_ms),
                first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                total_timeout: Duration::from_millis(self.total_timeout_ms),
                max_attempts: self.max_attempts.max(1),
                api_version: self.api_version.clone(),
            },
            openai_router::BreakerSettings {
                threshold: self.breaker_threshold.max(1),
                open_for: Duration::from_secs(self.breaker_open_seconds),
            },
        )
    }
}

/// Where quota counters live and how replicas share them.
#[derive(Debug, Clone, clap::Args)]
pub struct QuotaConfig {
    /// Redis for quota counters (`redis://[:password@]host:port[/db]`), shared by every
    /// replica. Without it each replica counts in its own memory.
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// `REDIS_URL` is a Redis Cluster: one or more seed nodes, comma-separated.
    #[arg(
        long = "redis-cluster",
        env = "BULKHEAD_REDIS_CLUSTER",
        default_value_t = false
    )]
    pub cluster: bool,

    /// Put the quota keys' hash-tagged names in force on a standalone Redis that still holds
    /// the names of an earlier release, and exit. Run it once every replica runs this release
    /// (a new install, or a cluster, needs nothing).
    #[arg(long = "quota-keys-tagged", default_value_t = false)]
    pub keys_tagged: bool,

    /// What a quota check does when Redis does not answer: `open` decides in this process
    /// (each replica alone; logged and counted), `closed` refuses with 503.
    #[arg(long = "quota-on-redis-error", env = "BULKHEAD_QUOTA_ON_REDIS_ERROR", value_enum, default_value_t = OnRedisError::Open)]
    pub on_redis_error: OnRedisError,

    /// The longest a quota check waits for Redis.
    #[arg(
        long = "quota-timeout-ms",
        env = "BULKHEAD_QUOTA_TIMEOUT_MS",
        default_value_t = 50
    )]
    pub timeout_ms: u64,

    /// How many calls' worth of each limited scope a replica may lease from Redis and decide
    /// on its own (slices shrink near a limit; a limit is never exceeded). 0: every call asks
    /// Redis.
    #[arg(
        long = "quota-lease-calls",
        env = "BULKHEAD_QUOTA_LEASE_CALLS",
        default_value_t = 8
    )]
    pub lease_calls: u64,

    /// A leased slice unused this long goes back to Redis.
    #[arg(
        long = "quota-lease-idle-ms",
        env = "BULKHEAD_QUOTA_LEASE_IDLE_MS",
        default_value_t = 1000
    )]
    pub lease_idle_ms: u64,

    /// How long a call refused while other replicas hold slices of its limits waits for them
    /// to give the slices back (a recall) before its refusal stands.
    #[arg(
        long = "quota-recall-wait-ms",
        env = "BULKHEAD_QUOTA_RECALL_WAIT_MS",
        default_value_t = 100
    )]
    pub recall_wait_ms: u64,
}

impl QuotaConfig {
    /// The limiter these settings describe: on Redis when a URL is given (warmed up; Redis
    /// not answering yet is not fatal: the limiter reconnects by itself and fails open or
    /// closed meanwhile), in process otherwise.
    pub async fn build(&self) -> anyhow::Result<quota::Limiter> {
        let Some(url) = &self.redis_url else {
            return Ok(quota::Limiter::in_process());
        };
        let limiter = quota::Limiter::new(quota::QuotaConfig {
            redis_url: Some(url.clone()),
            cluster: self.cluster,
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            on_redis_error: match self.on_redis_error {
                OnRedisError::Open => quota::OnRedisError::FailOpen,
                OnRedisError::Closed => quota::OnRedisError::FailClosed,
            },
            lease: quota::LeaseConfig {
                calls: self.lease_calls,
                idle: Duration::from_millis(self.lease_idle_ms.max(1)),
                recall_wait: Duration::from_millis(self.recall_wait_ms),
                ..quota::LeaseConfig::default()
            },
            ..quota::QuotaConfig::default()
        })
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
        if let Err(error) = limiter.warm_up(Duration::from_secs(2)).await {
            tracing::warn!(%error, "Redis is not answering yet; quotas follow BULKHEAD_QUOTA_ON_REDIS_ERROR until it does");
        }
        Ok(limiter)
    }
}

/// The response cache's settings (which tenants use it is theirs, in the registry). It uses
/// the quota's `REDIS_URL` (and cluster flag) under a prefix of its own; without Redis each
/// replica caches in its own memory.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheConfig {
    /// Prefix of the cache's Redis keys (no `{` or `}`: the tenant is the hash tag).
    #[arg(
        id = "cache_key_prefix",
        long = "cache-key-prefix",
        env = "BULKHEAD_CACHE_KEY_PREFIX",
        default_value = "bulkhead:cache:"
    )]
    pub key_prefix: String,

    /// The longest a cache lookup or store waits for Redis (then: a miss, or not stored).
    #[arg(
        id = "cache_timeout_ms",
        long = "cache-timeout-ms",
        env = "BULKHEAD_CACHE_TIMEOUT_MS",
        default_value_t = 50
    )]
    pub timeout_ms: u64,

    /// Bytes of cached answers each replica keeps in memory.
    #[arg(
        id = "cache_local_max_bytes",
        long = "cache-local-max-bytes",
        env = "BULKHEAD_CACHE_LOCAL_MAX_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub local_max_bytes: usize,

    /// How long a replica keeps its copy of an answer read from Redis: the longest another
    /// replica's newer answer (a `no-cache` refresh) may go unseen here.
    #[arg(
        id = "cache_local_ttl_ms",
        long = "cache-local-ttl-ms",
        env = "BULKHEAD_CACHE_LOCAL_TTL_MS",
        default_value_t = 2000
    )]
    pub local_ttl_ms: u64,

    /// The largest answer stored (a larger one is answered, not kept).
    #[arg(
        id = "cache_max_entry_bytes",
        long = "cache-max-entry-bytes",
        env = "BULKHEAD_CACHE_MAX_ENTRY_BYTES",
        default_value_t = 4 * 1024 * 1024
    )]
    pub max_entry_bytes: usize,
}

impl CacheConfig {
    /// The cache these settings describe, on `quota`'s Redis when it has one (warmed up; a
    /// Redis not answering yet only makes lookups misses until it does).
    pub async fn build(
        &self,
        quota: &QuotaConfig,
    ) -> anyhow::Result<response_cache::ResponseCache> {
        let cache = response_cache::ResponseCache::new(&response_cache::CacheConfig {
            redis_url: quota.redis_url.clone(),
            cluster: quota.cluster,
            key_prefix: self.key_prefix.clone(),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            retry_interval: Duration::from_secs(1),
            local_max_bytes: self.local_max_bytes,
            local_ttl: Duration::from_millis(self.local_ttl_ms),
            max_entry_bytes: self.max_entry_bytes,
        })
        .map_err(|e| anyhow::anyhow!("response cache: {e}"))?;
        if let Err(error) = cache.warm_up(Duration::from_secs(2)).await {
            tracing::warn!(%error, "Redis is not answering yet; response cache lookups are misses until it does");
        }
        Ok(cache)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnRedisError {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

impl Config {
    /// The earlier master keys, in the order given.
    pub fn previous_master_keys(&self) -> Vec<SecretString> {
        use secrecy::ExposeSecret;
        self.master_keys_previous
            .as_ref()
            .map(|keys| {
                keys.expose_secret()
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| SecretString::from(k.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The Postgres URL, or `None` for the embedded store.
    pub fn postgres_url(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|url| !url.is_empty() && !url.starts_with("sqlite:"))
    }

    /// A configuration for tests: embedded store in `data_dir`, port 0, fixed secrets.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: None,
            data_dir,
            database_max_connections: 4,
            master_key: None,
            master_keys_previous: None,
            admin_token: None,
            jwt_secret: None,
            jwt_issuer: "bulkhead".into(),
            jwt_ttl_seconds: 900,
            jwks_url: None,
            jwt_external_issuer: None,
            jwt_external_audience: None,
            jwt_tenant_claim: "tid".into(),
            registry_refresh_seconds: 300,
            shutdown_grace_seconds: 5,
            shutdown_delay_seconds: 0,
            header_read_timeout_seconds: 10,
            keepalive_idle_seconds: 75,
            body_read_timeout_seconds: 60,
            max_connections: 10_000,
            emulator: None,
            emulator_config: None,
            upstream: UpstreamConfig {
                connect_timeout_ms: 1_000,
                first_byte_timeout_ms: 10_000,
                idle_timeout_ms: 5_000,
                total_timeout_ms: 20_000,
                max_attempts: 3,
                api_version: "2024-10-21".into(),
                breaker_threshold: 5,
                breaker_open_seconds: 30,
            },
            expose_deployment_header: true,
            console_secure_cookie: false,
            ledger_spill_dir: None,
            metrics_tenant_labels: true,
            quota: QuotaConfig {
                redis_url: None,
                cluster: false,
                keys_tagged: false,
                on_redis_error: OnRedisError::Open,
                timeout_ms: 50,
                lease_calls: 8,
                lease_idle_ms: 1000,
                recall_wait_ms: 100,
            },
            cache: CacheConfig {
                key_prefix: "bulkhead:cache:".into(),
                timeout_ms: 50,
                local_max_bytes: 64 * 1024 * 1024,
                local_ttl_ms: 2000,
                max_entry_bytes: 4 * 1024 * 1024,
            },
            identity: IdentityConfig {
                authority_host: entra::broker_defaults::PUBLIC_AUTHORITY.into(),
                imds_endpoint: entra::broker_defaults::IMDS_TOKEN_ENDPOINT.into(),
                identity_endpoint: None,
                identity_header: None,
                workload_tenant_id: None,
                workload_client_id: None,
                federated_token_file: None,
                identity_ca_file: None,
            },
            tokenizer_map: token_count::EncodingMap::default(),
            model_limits: token_count::LimitsMap::default(),
            tokenize_max_bytes: 8 * 1024 * 1024,
            tokenize_threads: None,
            tokenize_wait_ms: 2000,
            move_source_grace_seconds: 0,
            move_fence_settle_ms: 200,
            operation_lease_seconds: 15,
            search_retry_attempts: 2,
            otlp_endpoint: None,
            otel_exporter_otlp_endpoint: None,
            otel_service_name: "bulkhead".into(),
            log: "warn".into(),
            log_format: LogFormat::Text,
            worker_threads: None,
            migrate_only: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks its own rules (every argument id unique across the flattened sections,
    /// ...) only when the command is built: a section whose field shares another's name
    /// would make the binary panic at start.
    #[test]
    fn the_command_line_is_well_formed() {
        <Config as clap::CommandFactory>::command().debug_assert();
    }
}
