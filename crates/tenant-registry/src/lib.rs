//! The tenant registry: where each tenant lives (its Azure OpenAI and Azure AI Search
//! placement), the upstream resources it may be placed on, and its API keys.
//!
//! [`Registry`] enforces the placement rules on every write and keeps an in-memory
//! [`Snapshot`] that the hot path reads without touching the database. [`Store`] persists
//! it, on Postgres in production and on SQLite as the embedded default.

mod catalog;
pub mod crypto;
mod error;
pub mod model;
pub mod names;
pub mod prices;
mod registry;
mod snapshot;
pub mod store;

pub use catalog::{Catalog, DeploymentEntry, ResourceEntry, ServiceEntry};
pub use crypto::MasterKey;
pub use error::RegistryError;
pub use registry::{Registry, ResealReport, MAX_BATCH};
pub use snapshot::{KeyEntry, Snapshot, TenantEntry};
pub use store::{SqlStore, SqliteLocation, Store};
