//! Routes a tenant's Azure AI Search call to its index and keeps the tenant boundary in
//! shared indexes (filter rewriting through `odata-filter`, key namespacing). It knows
//! upstreams, never tenants: `api` turns a tenant's placement into a routing [`Target`].
//!
//! Deciding is pure and separate from doing:
//! - [`names`]: physical index names and the fixed-width partition code;
//! - [`schema`]: the shared-index schema (with the partition field) and the caller's view;
//! - [`rewrite`]: every request and answer crossing the boundary of a shared index;
//! - [`client`]: the HTTP calls to the search service (reqwest).

pub mod client;
pub mod documents;
pub mod names;
pub mod rewrite;
pub mod schema;
mod target;

pub use client::{Answer, Job, Offload, SearchClient};
pub use documents::Retry;
pub use names::{partition_code, physical_index, IndexKind, PARTITION_CODE_LEN};
pub use rewrite::Boundary;
pub use schema::{key_field, PARTITION_FIELD, RESERVED_PREFIX};
pub use target::{Target, Upstream};

/// What went wrong, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The caller's request is not acceptable (400).
    #[error("{0}")]
    BadRequest(String),
    /// A name cannot be mapped to a physical index (configuration; ours).
    #[error("{0}")]
    Naming(String),
    /// The search service did not answer in time.
    #[error("the search service timed out")]
    UpstreamTimeout,
    /// The search service could not be reached, or answered something unreadable.
    #[error("the search service failed: {0}")]
    Upstream(String),
    /// The service refused the gateway's Entra ID token (no role assignment): the service
    /// and its answer, never a secret.
    #[error("{0}")]
    AuthRefused(String),
    /// The service is reached with an Entra ID credential and no token can be had now.
    #[error("{message}")]
    Token {
        retry_after: std::time::Duration,
        message: String,
    },
}

impl SearchError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }
}
