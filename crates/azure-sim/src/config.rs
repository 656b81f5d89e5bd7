//! Configuration of the emulator: which resources exist and how they behave.
//!
//! The same types are read from the `--config` file (JSON, or TOML when the file name ends in
//! `.toml`), accepted by the control API (`POST /_sim/resources`, `POST /_sim/search-services`)
//! and built directly by Rust tests. Every field except a resource's `name` has a default, so
//! `{"resources":[{"name":"aoai-eastus","keys":["k"],"deployments":[{"name":"gpt-4o"}]}]}` is a
//! complete file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::entra::config::{
    EntraConfig, FederatedCredentialConfig, IdentityConfig, ManagedIdentityConfig, PrincipalConfig,
};
pub use crate::search::SearchServiceConfig;

/// Everything the emulator needs to start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Azure OpenAI resources, each served under `/r/{name}`.
    pub resources: Vec<ResourceConfig>,
    /// Azure AI Search services, each served under `/r/{name}`.
    pub search_services: Vec<SearchServiceConfig>,
    /// Window lengths of the rate limiter (shorten them in tests).
    pub rate_limits: RateLimitSettings,
    /// Capacity of the request log ring buffer (`GET /_sim/requests`); 0 disables logging.
    pub request_log_capacity: Option<usize>,
    /// Accepted `api-version` values for Azure OpenAI; empty accepts any `YYYY-MM-DD[-preview]`.
    pub openai_api_versions: Vec<String>,
    /// Directory where search services persist their indexes; in memory when absent.
    pub data_dir: Option<PathBuf>,
    /// The emulated identity platform: principals, managed identity, token lifetime.
    pub entra: EntraConfig,
}

/// Default capacity of the request log.
pub const DEFAULT_REQUEST_LOG_CAPACITY: usize = 10_000;

impl SimConfig {
    /// Reads a configuration file: TOML if the name ends in `.toml`, JSON otherwise.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))
        } else {
            serde_json::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))
        }
    }

    /// Adds an Azure OpenAI resource (builder style, for tests).
    pub fn with_resource(mut self, resource: ResourceConfig) -> Self {
        self.resources.push(resource);
        self
    }

    /// Sets the `entra` section (builder style, for tests).
    pub fn with_entra(mut self, entra: EntraConfig) -> Self {
        self.entra = entra;
        self
    }

    /// Adds a search service (builder style, for tests).
    pub fn with_search_service(mut self, service: SearchServiceConfig) -> Self {
        self.search_services.push(service);
        self
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("a resource or search service named {0:?} already exists")]
    DuplicateName(String),
    #[error("invalid resource name {0:?}: use letters, digits and '-' (2 to 64 characters)")]
    InvalidName(String),
    #[error("resource {resource:?} has two deployments named {deployment:?}")]
    DuplicateDeployment {
        resource: String,
        deployment: String,
    },
}

/// Checks a resource or service name: it becomes a URL path segment.
pub(crate) fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidName(name.to_owned()))
    }
}

/// Rate limiter windows. Windows are fixed and aligned to the emulator's start (its clock,
/// which `POST /_sim/clock/advance` can move forward).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Length of the token (TPM) window in milliseconds; Azure's is one minute.
    pub token_window_ms: u64,
    /// Length of the request (RPM) window in milliseconds; Azure's is ten seconds, admitting
    /// RPM/6 requests in each.
    pub request_window_ms: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            token_window_ms: 60_000,
            request_window_ms: 10_000,
        }
    }
}

/// One Azure OpenAI resource (an account with its own endpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Unique across resources and search services; the base URL is `/r/{name}`.
    pub name: String,
    /// Azure region, echoed in `x-ms-region` (e.g. `eastus`).
    #[serde(default = "default_region")]
    pub region: String,
    /// Data zone (`us`, `eu`, ...) for data-zone deployments.
    #[serde(default)]
    pub data_zone: Option<String>,
    /// Accepted keys (Azure gives two). Empty accepts any non-empty key.
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
    /// Refuse keys (Azure's `disableLocalAuth`): only Entra tokens are accepted.
    #[serde(default)]
    pub disable_local_auth: bool,
    /// Object ids of the principals holding "Cognitive Services OpenAI User" on the
    /// resource: the only ones whose Entra tokens are accepted (empty: nobody).
    #[serde(default)]
    pub role_assignments: Vec<String>,
}

fn default_region() -> String {
    "eastus".to_owned()
}

impl ResourceConfig {
    /// A resource in `region` accepting `key`, with no deployments yet.
    pub fn new(name: impl Into<String>, region: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            region: region.into(),
            data_zone: None,
            keys: vec![key.into()],
            deployments: Vec::new(),
            disable_local_auth: false,
            role_assignments: Vec::new(),
        }
    }

    /// Grants a principal (by object id) data-plane access with Entra tokens.
    pub fn with_role_assignment(mut self, object_id: impl Into<String>) -> Self {
        self.role_assignments.push(object_id.into());
        self
    }

    /// Refuses keys: Entra tokens only (`disableLocalAuth: true`).
    pub fn with_local_auth_disabled(mut self) -> Self {
        self.disable_local_auth = true;
        self
    }

    /// Adds a deployment (builder style).
    pub fn with_deployment(mut self, deployment: DeploymentConfig) -> Self {
        self.deployments.push(deployment);
        self
    }
}

/// One model deployment of a resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Deployment name as used in the URL (or as `model` on the v1 API).
    pub name: String,
    /// Model name; decides the tokenizer, the embedding size and which operations work.
    /// Defaults to the deployment name.
    #[serde(default)]
    pub model: Option<String>,
    /// Model version reported nowhere but kept for listings.
    #[serde(default)]
    pub version: Option<String>,
    /// Tokens per minute; `None` means unlimited (and no `x-ratelimit-*` headers).
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests per minute; defaults to 6 per 1000 TPM when `tpm` is set.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Completion budget assumed in the rate-limit estimate when a request sets no
    /// `max_tokens`.
    #[serde(default = "default_estimate_max_tokens")]
    pub default_max_tokens: u64,
    /// Embedding vector length; defaults from the model (1536 or 3072).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Milliseconds before the first token (plain and streaming responses).
    #[serde(default)]
    pub ttft_ms: u64,
    /// Milliseconds per generated token after the first.
    #[serde(default)]
    pub per_token_ms: u64,
}

fn default_estimate_max_tokens() -> u64 {
    4096
}

impl DeploymentConfig {
    /// A deployment of `model` named `name`, unlimited and without latency.
    pub fn new(name: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            model: Some(model.into()),
            version: None,
            tpm: None,
            rpm: None,
            default_max_tokens: default_estimate_max_tokens(),
            dimensions: None,
            ttft_ms: 0,
            per_token_ms: 0,
        }
    }

    /// Sets the TPM limit (RPM follows at 6 per 1000 TPM unless set).
    pub fn with_tpm(mut self, tpm: u64) -> Self {
        self.tpm = Some(tpm);
        self
    }

    /// Sets the RPM limit explicitly.
    pub fn with_rpm(mut self, rpm: u64) -> Self {
        self.rpm = Some(rpm);
        self
    }

    /// Sets the latency model.
    pub fn with_latency(mut self, ttft_ms: u64, per_token_ms: u64) -> Self {
        self.ttft_ms = ttft_ms;
        self.per_token_ms = per_token_ms;
        self
    }

    /// Sets the embedding dimension.
    pub fn with_dimensions(mut self, dimensions: usize) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// The model name, defaulting to the deployment name.
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or(&self.name)
    }
}
