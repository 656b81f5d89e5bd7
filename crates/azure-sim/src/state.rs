//! Shared state: the registry of emulated resources and the emulator-wide services (clock,
//! faults, request log) that every handler reaches through [`AppState`].
//!
//! Azure OpenAI resources and search services live side by side in one name space: a name
//! is unique across both kinds, and `/r/{name}/...` dispatches on the kind it finds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::SimClock;
use crate::config::{
    validate_name, ConfigError, RateLimitSettings, ResourceConfig, SimConfig,
    DEFAULT_REQUEST_LOG_CAPACITY,
};
use crate::entra::Entra;
use crate::faults::FaultTable;
use crate::openai::OpenAiResource;
use crate::reqlog::RequestLog;
use crate::search::{SearchService, SearchServiceConfig};

/// Cheap-to-clone handle on everything the emulator holds.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The emulator's shared services.
pub struct Inner {
    /// Emulated resources by name.
    pub registry: Registry,
    /// The clock used by rate-limit windows (real time plus a test-controlled offset).
    pub clock: SimClock,
    /// Injected faults.
    pub faults: FaultTable,
    /// Recent requests, for `GET /_sim/requests`.
    pub log: RequestLog,
    /// Rate-limit window lengths.
    pub rate_limits: RateLimitSettings,
    /// Accepted Azure OpenAI api-versions (empty: any well-formed date).
    pub openai_api_versions: Vec<String>,
    /// Where search services persist their data, if anywhere.
    pub data_dir: Option<PathBuf>,
    /// The emulated identity platform.
    pub entra: Entra,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state and registers every resource and search service of `config`.
    pub fn new(config: &SimConfig) -> Result<Self, ConfigError> {
        let capacity = config
            .request_log_capacity
            .unwrap_or(DEFAULT_REQUEST_LOG_CAPACITY);
        let state = AppState(Arc::new(Inner {
            registry: Registry::default(),
            clock: SimClock::new(),
            faults: FaultTable::default(),
            log: RequestLog::new(capacity),
            rate_limits: config.rate_limits.clone(),
            openai_api_versions: config.openai_api_versions.clone(),
            data_dir: config.data_dir.clone(),
            entra: Entra::new(config.entra.clone()),
        }));
        for resource in &config.resources {
            state.add_openai_resource(resource.clone())?;
        }
        for service in &config.search_services {
            state.add_search_service(service.clone())?;
        }
        state.restore_registry();
        Ok(state)
    }

    /// `DATA_DIR/registry.json`, where resources and services are saved when persisting.
    fn registry_file(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("registry.json"))
    }

    /// Adds the resources and services saved by a previous run, except those whose names the
    /// configuration file already defines (the file wins).
    fn restore_registry(&self) {
        let Some(path) = self.registry_file() else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let saved: SavedRegistry = match serde_json::from_str(&text) {
            Ok(saved) => saved,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring unreadable registry file");
                return;
            }
        };
        for resource in saved.resources {
            if self.registry.get(&resource.name).is_none() {
                if let Err(error) = self.add_openai_resource(resource) {
                    tracing::warn!(%error, "cannot restore a saved resource");
                }
            }
        }
        for service in saved.search_services {
            if self.registry.get(&service.name).is_none() {
                if let Err(error) = self.add_search_service(service) {
                    tracing::warn!(%error, "cannot restore a saved search service");
                }
            }
        }
    }

    /// Saves every resource (with its current deployments) and search service to the data
    /// directory, so runtime additions survive a restart. No-op without a data directory.
    pub fn persist_registry(&self) {
        let Some(path) = self.registry_file() else {
            return;
        };
        let mut saved = SavedRegistry::default();
        for resource in self.registry.all() {
            match resource {
                Resource::OpenAi(r) => saved.resources.push(r.current_config()),
                Resource::Search(s) => saved.search_services.push(s.config.clone()),
            }
        }
        let result = serde_json::to_vec_pretty(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "cannot save the registry");
        }
    }

    /// Registers an Azure OpenAI resource; its name must be unused by any resource or service.
    pub fn add_openai_resource(&self, config: ResourceConfig) -> Result<(), ConfigError> {
        validate_name(&config.name)?;
        let resource = OpenAiResource::new(config)?;
        self.registry.insert(Resource::OpenAi(Arc::new(resource)))
    }

    /// Registers a search service; its name must be unused by any resource or service.
    pub fn add_search_service(&self, config: SearchServiceConfig) -> Result<(), ConfigError> {
        validate_name(&config.name)?;
        let service = SearchService::new(config, self)?;
        self.registry.insert(Resource::Search(Arc::new(service)))
    }
}

/// What `DATA_DIR/registry.json` holds.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct SavedRegistry {
    #[serde(default)]
    resources: Vec<ResourceConfig>,
    #[serde(default)]
    search_services: Vec<SearchServiceConfig>,
}

/// An emulated resource of either kind.
#[derive(Clone)]
pub enum Resource {
    OpenAi(Arc<OpenAiResource>),
    Search(Arc<SearchService>),
}

impl Resource {
    pub fn name(&self) -> &str {
        match self {
            Resource::OpenAi(r) => &r.config.name,
            Resource::Search(s) => s.name(),
        }
    }

    pub fn region(&self) -> &str {
        match self {
            Resource::OpenAi(r) => &r.config.region,
            Resource::Search(s) => s.region(),
        }
    }

    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::OpenAi(_) => ResourceKind::OpenAi,
            Resource::Search(_) => ResourceKind::Search,
        }
    }
}

/// Which API a resource speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    OpenAi,
    Search,
}

/// Resources by name. Reads (every request) are lock-free; writes copy the map.
#[derive(Default)]
pub struct Registry {
    map: ArcSwap<HashMap<String, Resource>>,
    write: parking_lot::Mutex<()>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Resource> {
        self.map.load().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Resource> {
        let mut all: Vec<Resource> = self.map.load().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    fn insert(&self, resource: Resource) -> Result<(), ConfigError> {
        let _guard = self.write.lock();
        let current = self.map.load();
        if current.contains_key(resource.name()) {
            return Err(ConfigError::DuplicateName(resource.name().to_owned()));
        }
        let mut next = HashMap::clone(&current);
        next.insert(resource.name().to_owned(), resource);
        self.map.store(Arc::new(next));
        Ok(())
    }

    /// Removes a resource of the given kind; returns it if it existed.
    pub fn remove(&self, name: &str, kind: ResourceKind) -> Option<Resource> {
        let _guard = self.write.lock();
        let current = self.map.load();
        match current.get(name) {
            Some(r) if r.kind() == kind => {
                let mut next = HashMap::clone(&current);
                let removed = next.remove(name);
                self.map.store(Arc::new(next));
                removed
            }
            _ => None,
        }
    }
}
