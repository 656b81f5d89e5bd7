//! Azure AI Search emulation: search services with their keys, indexes and documents.
//!
//! Each service keeps its indexes in memory (and, when the emulator has a data directory, in
//! `DATA_DIR/search/{service}/{index}.json`, rewritten after every change and read back at
//! start). The modules: [`schema`] (index definitions, document validation), [`analysis`] (the
//! analyzer), [`store`] (documents, BM25 statistics, index batches), [`fulltext`] (query
//! syntax and scoring), [`query`] (search requests), [`suggest`] (suggest, autocomplete) and
//! [`handlers`] (routes, `api-version`, keys).
//!
//! # How requests arrive here
//! The dispatcher in `crate::router` serves every search service under `/r/{name}/...`.
//! For a request to a search service it:
//! - records the request in the request log and applies resource-level faults
//!   (`POST /_sim/faults` with `"resource": "<service name>"`) before calling [`routes`];
//! - strips `/r/{name}` from the URI, so the router below sees Azure's own paths
//!   (`/indexes`, `/indexes('hotels')/docs/search.post.search`, `/indexes/hotels/docs/...`),
//!   query string included;
//! - inserts a [`crate::common::ReqCtx`] into the request extensions; its `resource` is
//!   `Resource::Search(Arc<SearchService>)`, i.e. the service the request is for;
//! - adds `apim-request-id`, `x-request-id` and `x-ms-region` to whatever is answered.
//!
//! Errors should use [`crate::common::AzureError`] (`{"error":{"code","message"}}`).
//!
//! # What belongs here
//! [`SearchServiceConfig`] (the `search_services` entries of the config file and of
//! `POST /_sim/search-services`), [`SearchService`] (a service's state: keys, indexes,
//! documents) and [`routes`]. Everything in this module may change freely.

pub mod analysis;
pub mod fulltext;
pub mod handlers;
pub mod query;
pub mod schema;
pub mod store;
pub mod suggest;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::AzureError;
use crate::config::ConfigError;
use crate::state::AppState;
use schema::{Invalid, Schema};
use store::{Index, ItemResult};

/// The error every search handler returns: Azure's `{"error":{"code","message"}}`.
pub type SearchApiError = AzureError;

/// A 400 in Azure Search's shape.
pub fn bad_request(message: impl Into<String>) -> SearchApiError {
    AzureError::new(
        http::StatusCode::BAD_REQUEST,
        "InvalidRequestParameter",
        message,
    )
}

/// `api-version` values accepted when a service configures none: the stable versions and
/// those the pinned `azure-search-documents` SDKs send (11.6: 2025-09-01, 12.0: 2026-04-01).
pub const DEFAULT_API_VERSIONS: &[&str] = &[
    "2020-06-30",
    "2023-11-01",
    "2024-07-01",
    "2025-09-01",
    "2026-04-01",
];

/// One search service as configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchServiceConfig {
    /// Unique across resources and search services; the base URL is `/r/{name}`.
    pub name: String,
    /// Azure region, echoed in `x-ms-region`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Data zone (`us`, `eu`, ...), informational.
    #[serde(default)]
    pub data_zone: Option<String>,
    /// Admin keys (read and write). With no admin and no query keys, any non-empty key is an
    /// admin key.
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// Query keys (read only: search, lookup, count, suggest, autocomplete).
    #[serde(default)]
    pub query_keys: Vec<String>,
    /// Accepted `api-version` values; empty means [`DEFAULT_API_VERSIONS`].
    #[serde(default)]
    pub api_versions: Vec<String>,
    /// Refuse keys (`disableLocalAuth: true`): only Entra tokens are accepted.
    #[serde(default)]
    pub disable_local_auth: bool,
    /// Object ids of the principals holding the search data roles ("Search Index Data
    /// Contributor" and "Search Service Contributor") on the service: the only ones whose
    /// Entra tokens are accepted (empty: nobody).
    #[serde(default)]
    pub role_assignments: Vec<String>,
}

fn default_region() -> String {
    "eastus".to_owned()
}

impl SearchServiceConfig {
    /// A service in `region` with one admin key and one query key.
    pub fn new(
        name: impl Into<String>,
        region: impl Into<String>,
        admin_key: impl Into<String>,
        query_key: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            region: region.into(),
            data_zone: None,
            admin_keys: vec![admin_key.into()],
            query_keys: vec![query_key.into()],
            api_versions: Vec::new(),
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

    /// Replaces the accepted `api-version` values (builder style).
    pub fn with_api_versions(mut self, versions: &[&str]) -> Self {
        self.api_versions = versions.iter().map(|v| (*v).to_owned()).collect();
        self
    }
}

/// The state of one emulated search service.
pub struct SearchService {
    pub config: SearchServiceConfig,
    indexes: RwLock<BTreeMap<String, Arc<RwLock<Index>>>>,
    /// `DATA_DIR/search/{service}` when persisting.
    dir: Option<PathBuf>,
}

impl SearchService {
    /// Builds a service from its configuration, loading persisted indexes when the emulator
    /// has a data directory (`state.data_dir`).
    pub fn new(config: SearchServiceConfig, state: &AppState) -> Result<Self, ConfigError> {
        let dir = state
            .data_dir
            .as_ref()
            .map(|d| d.join("search").join(&config.name));
        let mut indexes = BTreeMap::new();
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|source| ConfigError::Read {
                path: dir.clone(),
                source,
            })?;
            let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let loaded = std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .and_then(|v| Index::from_json(&v));
                match loaded {
                    Some(index) => {
                        indexes.insert(index.schema.name.clone(), Arc::new(RwLock::new(index)));
                    }
                    None => {
                        tracing::warn!(path = %path.display(), "ignoring unreadable persisted index")
                    }
                }
            }
        }
        Ok(Self {
            config,
            indexes: RwLock::new(indexes),
            dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn region(&self) -> &str {
        &self.config.region
    }

    /// `Some(true)` for an admin key, `Some(false)` for a query key, `None` otherwise.
    pub fn access_of(&self, key: &str) -> Option<bool> {
        let c = &self.config;
        if c.admin_keys.iter().any(|k| k == key) {
            Some(true)
        } else if c.query_keys.iter().any(|k| k == key) {
            Some(false)
        } else if c.admin_keys.is_empty() && c.query_keys.is_empty() && !key.is_empty() {
            Some(true)
        } else {
            None
        }
    }

    /// Whether any non-empty key opens the service (no keys configured).
    pub fn keys_open(&self) -> bool {
        self.config.admin_keys.is_empty() && self.config.query_keys.is_empty()
    }

    /// The accepted `api-version` values.
    pub fn api_versions(&self) -> Vec<String> {
        if self.config.api_versions.is_empty() {
            DEFAULT_API_VERSIONS
                .iter()
                .map(|v| (*v).to_owned())
                .collect()
        } else {
            self.config.api_versions.clone()
        }
    }

    pub fn accepts_api_version(&self, version: &str) -> bool {
        self.api_versions().iter().any(|v| v == version)
    }

    /// Called by `POST /_sim/reset`: indexes and documents are data, not test state, and stay.
    pub fn reset(&self) {}

    /// Called when the service is deleted with `DELETE /_sim/search-services/{name}`. Persisted
    /// files stay, so re-adding the service restores its indexes.
    pub fn on_delete(&self) {
        self.indexes.write().clear();
    }

    /// What `GET /_sim/search-services` shows for this service.
    pub fn describe(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(&self.config).unwrap_or_default();
        let indexes: serde_json::Map<String, Value> = self
            .indexes
            .read()
            .iter()
            .map(|(name, ix)| (name.clone(), Value::from(ix.read().len())))
            .collect();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("indexes".into(), Value::Object(indexes));
        }
        value
    }

    /// The index named `name`.
    pub fn index(&self, name: &str) -> Option<Arc<RwLock<Index>>> {
        self.indexes.read().get(name).cloned()
    }

    /// Every index, by name.
    pub fn indexes(&self) -> Vec<Arc<RwLock<Index>>> {
        self.indexes.read().values().cloned().collect()
    }

    /// Creates an index; `Err(())` if the name is taken. Returns its definition.
    #[expect(
        clippy::result_unit_err,
        reason = "the only failure is a name conflict"
    )]
    pub fn create_index(&self, schema: Schema) -> Result<Value, ()> {
        let mut indexes = self.indexes.write();
        if indexes.contains_key(&schema.name) {
            return Err(());
        }
        let name = schema.name.clone();
        let index = Index::new(schema);
        let def = index.definition();
        self.persist(&index);
        indexes.insert(name, Arc::new(RwLock::new(index)));
        Ok(def)
    }

    /// Creates or updates an index: `(created, definition)`. An update may add fields only.
    pub fn put_index(&self, schema: Schema) -> Result<(bool, Value), Invalid> {
        let mut indexes = self.indexes.write();
        if let Some(existing) = indexes.get(&schema.name) {
            let mut index = existing.write();
            schema.check_update(&index.schema)?;
            index.redefine(schema);
            self.persist(&index);
            return Ok((false, index.definition()));
        }
        let name = schema.name.clone();
        let index = Index::new(schema);
        let def = index.definition();
        self.persist(&index);
        indexes.insert(name, Arc::new(RwLock::new(index)));
        Ok((true, def))
    }

    /// Deletes an index; false if there was none.
    pub fn delete_index(&self, name: &str) -> bool {
        let removed = self.indexes.write().remove(name).is_some();
        if removed {
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_file(dir.join(format!("{name}.json")));
            }
        }
        removed
    }

    /// Applies an index batch; `None` if the index does not exist.
    pub fn apply_batch(&self, name: &str, actions: &[Value]) -> Option<Vec<ItemResult>> {
        let index = self.index(name)?;
        let mut guard = index.write();
        let results = guard.apply_batch(actions);
        self.persist(&guard);
        Some(results)
    }

    /// Writes the index to the data directory, if any (write then rename).
    fn persist(&self, index: &Index) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(format!("{}.json", index.schema.name));
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&index.to_json())
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "could not persist index");
        }
    }
}

/// The search API router. Paths are relative to the service's base URL (see module docs);
/// every request goes through [`handlers::handle`], which parses both route styles.
pub fn routes() -> Router<AppState> {
    Router::new().fallback(handlers::handle)
}
