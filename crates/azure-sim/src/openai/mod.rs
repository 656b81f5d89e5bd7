//! Azure OpenAI emulation: resources, deployments, and the data-plane routes.
//!
//! Routes (relative to a resource's base URL `/r/{name}`):
//! - `POST /openai/deployments/{d}/chat/completions|completions|embeddings?api-version=...`
//! - `POST /openai/v1/chat/completions|completions|embeddings` (deployment as `model`)
//! - `POST /openai/v1/responses`, `GET|DELETE /openai/v1/responses/{id}` (and the same under
//!   `/openai/responses?api-version=...`)
//! - `GET /openai/v1/models`, `GET /openai/deployments?api-version=...` (the deployments)

pub mod auth;
pub mod handlers;
pub mod ratelimit;
pub mod responses;
pub mod sse;
pub mod textgen;
pub mod validate;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::routing::{get, post};
use axum::Router;

use crate::config::{ConfigError, DeploymentConfig, ResourceConfig};
use crate::state::AppState;
use ratelimit::RateLimiter;
use token_count::Encoding;

/// What a model can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Chat completions (and legacy completions).
    Chat,
    /// Legacy completions only (`gpt-35-turbo-instruct`, `davinci-002`, ...).
    Completion,
    /// Embeddings only.
    Embedding,
}

/// Facts about a deployed model derived from its name.
#[derive(Debug, Clone, Copy)]
pub struct ModelInfo {
    pub kind: ModelKind,
    pub encoding: Encoding,
    /// Native embedding size.
    pub embedding_dimensions: usize,
    /// Whether the request's `dimensions` parameter is accepted (text-embedding-3 models).
    pub supports_dimensions: bool,
    /// o-series reasoning models: `max_tokens` is refused in favour of
    /// `max_completion_tokens`.
    pub reasoning: bool,
}

impl ModelInfo {
    pub fn for_model(model: &str) -> Self {
        let m = model.to_ascii_lowercase();
        let kind = if m.contains("embedding") {
            ModelKind::Embedding
        } else if m.contains("instruct") || m.starts_with("davinci") || m.starts_with("babbage") {
            ModelKind::Completion
        } else {
            ModelKind::Chat
        };
        let embedding_dimensions = if m.contains("3-large") { 3072 } else { 1536 };
        let reasoning = ["o1", "o3", "o4"].iter().any(|p| m.starts_with(p));
        Self {
            kind,
            encoding: Encoding::for_model(&m),
            embedding_dimensions,
            supports_dimensions: m.contains("embedding-3"),
            reasoning,
        }
    }
}

/// One deployment with its live rate-limit state.
pub struct Deployment {
    pub config: DeploymentConfig,
    pub model: ModelInfo,
    pub limiter: RateLimiter,
}

impl Deployment {
    pub fn new(config: DeploymentConfig) -> Self {
        let model = ModelInfo::for_model(config.model_name());
        let limiter = RateLimiter::new(config.tpm, config.rpm);
        Self {
            config,
            model,
            limiter,
        }
    }

    /// The model name reported in responses (`gpt-4o-2024-11-20` when a version is set).
    pub fn reported_model(&self) -> String {
        match &self.config.version {
            Some(v) if !v.is_empty() => format!("{}-{v}", self.config.model_name()),
            _ => self.config.model_name().to_owned(),
        }
    }

    /// The embedding size: configured, else the model's native one.
    pub fn dimensions(&self) -> usize {
        self.config
            .dimensions
            .unwrap_or(self.model.embedding_dimensions)
    }
}

/// One emulated Azure OpenAI resource.
pub struct OpenAiResource {
    /// The resource's configuration (its `deployments` field is the initial set only).
    pub config: ResourceConfig,
    deployments: ArcSwap<HashMap<String, Arc<Deployment>>>,
    write: parking_lot::Mutex<()>,
    /// Responses created on this resource (the responses API is stateful).
    pub responses: responses::ResponseStore,
}

impl OpenAiResource {
    pub fn new(config: ResourceConfig) -> Result<Self, ConfigError> {
        let mut map = HashMap::new();
        for d in &config.deployments {
            if map
                .insert(d.name.clone(), Arc::new(Deployment::new(d.clone())))
                .is_some()
            {
                return Err(ConfigError::DuplicateDeployment {
                    resource: config.name.clone(),
                    deployment: d.name.clone(),
                });
            }
        }
        Ok(Self {
            config,
            deployments: ArcSwap::from_pointee(map),
            write: parking_lot::Mutex::new(()),
            responses: responses::ResponseStore::default(),
        })
    }

    pub fn deployment(&self, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.load().get(name).cloned()
    }

    /// Every deployment, sorted by name.
    pub fn deployments(&self) -> Vec<Arc<Deployment>> {
        let mut all: Vec<_> = self.deployments.load().values().cloned().collect();
        all.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        all
    }

    pub fn add_deployment(&self, config: DeploymentConfig) -> Result<(), ConfigError> {
        let _guard = self.write.lock();
        let current = self.deployments.load();
        if current.contains_key(&config.name) {
            return Err(ConfigError::DuplicateDeployment {
                resource: self.config.name.clone(),
                deployment: config.name,
            });
        }
        let mut next = HashMap::clone(&current);
        next.insert(config.name.clone(), Arc::new(Deployment::new(config)));
        self.deployments.store(Arc::new(next));
        Ok(())
    }

    pub fn remove_deployment(&self, name: &str) -> bool {
        let _guard = self.write.lock();
        let current = self.deployments.load();
        if !current.contains_key(name) {
            return false;
        }
        let mut next = HashMap::clone(&current);
        next.remove(name);
        self.deployments.store(Arc::new(next));
        true
    }

    /// Whether `key` opens this resource (any non-empty key when none are configured).
    pub fn accepts_key(&self, key: &str) -> bool {
        if self.config.keys.is_empty() {
            !key.is_empty()
        } else {
            self.config.keys.iter().any(|k| k == key)
        }
    }

    /// Clears rate-limit windows and stored responses.
    pub fn reset(&self) {
        for d in self.deployments.load().values() {
            d.limiter.reset();
        }
        self.responses.clear();
    }

    /// The resource's configuration with its current deployments.
    pub fn current_config(&self) -> ResourceConfig {
        let mut config = self.config.clone();
        config.deployments = self
            .deployments()
            .iter()
            .map(|d| d.config.clone())
            .collect();
        config
    }

    /// What `GET /_sim/resources` shows.
    pub fn describe(&self) -> serde_json::Value {
        let deployments: Vec<_> = self
            .deployments()
            .iter()
            .map(|d| serde_json::to_value(&d.config).unwrap_or_default())
            .collect();
        serde_json::json!({
            "name": self.config.name,
            "kind": "openai",
            "region": self.config.region,
            "data_zone": self.config.data_zone,
            "keys": self.config.keys,
            "disable_local_auth": self.config.disable_local_auth,
            "role_assignments": self.config.role_assignments,
            "deployments": deployments,
        })
    }
}

/// The Azure OpenAI router (paths relative to the resource's base URL).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(handlers::chat_completions),
        )
        .route(
            "/openai/deployments/{deployment}/completions",
            post(handlers::completions),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(handlers::embeddings_handler),
        )
        .route(
            "/openai/v1/chat/completions",
            post(handlers::chat_completions_v1),
        )
        .route("/openai/v1/completions", post(handlers::completions_v1))
        .route("/openai/v1/embeddings", post(handlers::embeddings_v1))
        .route("/openai/v1/responses", post(responses::create_v1))
        .route(
            "/openai/v1/responses/{id}",
            get(responses::get_v1).delete(responses::delete_v1),
        )
        .route("/openai/responses", post(responses::create_versioned))
        .route(
            "/openai/responses/{id}",
            get(responses::get_versioned).delete(responses::delete_versioned),
        )
        .route("/openai/v1/models", get(handlers::list_models_v1))
        .route("/openai/deployments", get(handlers::list_deployments))
        .fallback(handlers::not_found)
}
