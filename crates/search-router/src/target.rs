//! Where one call goes: a search service and an index on it, and, for a shared index, the
//! boundary that confines the caller to its partition.

use entra::UpstreamAuth;

use crate::rewrite::Boundary;

/// A search service: its base URL and the gateway's admin key for it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL without a trailing slash (`https://x.search.windows.net`).
    pub endpoint: String,
    /// How to authenticate to the service (its admin key, or an Entra ID credential);
    /// never a tenant's credential.
    pub credential: UpstreamAuth,
}

/// The physical destination of a call on a logical index.
#[derive(Debug, Clone)]
pub struct Target {
    pub upstream: Upstream,
    /// The logical name the caller uses.
    pub logical: String,
    /// The index on the service.
    pub index: String,
    /// The template's key field.
    pub key_field: String,
    /// `Some` for a shared index: every read is filtered, every key namespaced.
    pub boundary: Option<Boundary>,
}
