//! Routes a tenant's Azure AI Search call to its index and keeps the tenant boundary in
//! shared indexes (filter rewriting through `odata-filter`, key namespacing). It knows
//! upstreams, never tenants: `api` turns a tenant's placement into a routing target.
//!
//! Not built yet: this crate is an empty placeholder in the workspace layout until the
//! search routing issue lands.
