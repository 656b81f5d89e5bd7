//! azure-sim: a local emulator of the Azure OpenAI and Azure AI Search REST APIs, as Azurite
//! is for Azure Storage. One process emulates many resources; each Azure OpenAI resource and
//! each search service has its own base URL `http://HOST:PORT/r/{name}`, region, keys and
//! deployments or indexes. The control API under `/_sim/` adds resources, injects faults,
//! lists received requests and resets state.
//!
//! In-process use from Rust tests:
//!
//! ```no_run
//! # async fn demo() -> Result<(), azure_sim::StartError> {
//! use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig};
//! let sim = Sim::start(SimConfig::default().with_resource(
//!     ResourceConfig::new("aoai-eastus", "eastus", "key-1")
//!         .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o").with_tpm(30_000)),
//! ))
//! .await?;
//! let endpoint = sim.resource_url("aoai-eastus"); // register this as the endpoint
//! # let _ = endpoint; Ok(()) }
//! ```

pub mod clock;
pub mod common;
pub mod config;
pub mod control;
pub mod entra;
pub mod faults;
pub mod openai;
pub mod reqlog;
mod router;
pub mod search;
pub mod server;
pub mod state;
pub mod tls;

pub use config::{
    ConfigError, DeploymentConfig, EntraConfig, FederatedCredentialConfig, IdentityConfig,
    ManagedIdentityConfig, PrincipalConfig, RateLimitSettings, ResourceConfig, SearchServiceConfig,
    SimConfig,
};
pub use faults::{FaultAction, FaultSpec};
pub use reqlog::{fingerprint, LoggedRequest};
pub use router::app;
pub use server::{serve, Sim, SimHandle, StartError};
pub use state::AppState;
