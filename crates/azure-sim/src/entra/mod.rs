//! Entra ID (keyless) authentication: the emulator plays Microsoft's identity platform
//! (OpenID discovery, JWKS, the client-credentials token endpoint with client secrets and
//! federated assertions), the managed-identity endpoints of a VM (IMDS) and of App Service /
//! Container Apps, and the OIDC issuer of an AKS cluster (federated tokens minted through the
//! control API). Resources and search services then accept the access tokens it issues.
//!
//! [`config`] holds the `entra` section; [`keys`] the signing key; [`tokens`] minting and
//! checking tokens; [`errors`] the error shapes; [`handlers`] the HTTP endpoints; [`auth`] how
//! a data-plane request's credential (key or token) is told apart and checked.

pub mod auth;
pub mod config;
pub mod errors;
pub mod handlers;
pub mod keys;
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use config::{
    EntraConfig, FederatedCredentialConfig, IdentityConfig, ManagedIdentityConfig, PrincipalConfig,
    Secret,
};
use keys::SigningKey;
use tokens::{AccessClaims, TokenRejection};

/// Resources (token audiences) the emulated tenants know: scopes must name one of them.
pub const KNOWN_RESOURCES: &[&str] = &[
    tokens::COGNITIVE_SERVICES_AUDIENCE,
    tokens::SEARCH_AUDIENCE,
    "https://ai.azure.com",
    "https://management.azure.com",
];

/// Whether `resource` (with or without a trailing slash) is a known resource.
pub fn is_known_resource(resource: &str) -> bool {
    let trimmed = resource.trim_end_matches('/');
    KNOWN_RESOURCES.contains(&trimmed)
}

/// Live state of the identity platform.
pub struct Entra {
    config: EntraConfig,
    lifetime: AtomicU64,
    down: AtomicBool,
    issued: parking_lot::Mutex<BTreeMap<(String, String), u64>>,
}

/// One line of `GET /_sim/entra/issued`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuedCount {
    pub client_id: String,
    pub resource: String,
    pub count: u64,
}

impl Entra {
    pub fn new(config: EntraConfig) -> Self {
        let lifetime = AtomicU64::new(config.token_lifetime_seconds);
        Self {
            config,
            lifetime,
            down: AtomicBool::new(false),
            issued: parking_lot::Mutex::new(BTreeMap::new()),
        }
    }

    pub fn config(&self) -> &EntraConfig {
        &self.config
    }

    /// The signing key (made on first use, once per process).
    pub fn key(&self) -> Option<&'static SigningKey> {
        match SigningKey::shared() {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::error!(%error, "no token signing key");
                None
            }
        }
    }

    /// Whether a tenant id is one the emulator knows (a principal's or the managed
    /// identity's).
    pub fn knows_tenant(&self, tenant: &str) -> bool {
        self.config.principals.iter().any(|p| p.tenant_id == tenant)
            || self
                .config
                .managed_identity
                .as_ref()
                .is_some_and(|m| m.tenant_id == tenant)
    }

    /// The principal `client_id` of `tenant`.
    pub fn principal(&self, tenant: &str, client_id: &str) -> Option<&PrincipalConfig> {
        self.config
            .principals
            .iter()
            .find(|p| p.tenant_id == tenant && p.client_id == client_id)
    }

    /// Token lifetime in seconds.
    pub fn lifetime(&self) -> u64 {
        self.lifetime.load(Ordering::Relaxed)
    }

    pub fn set_lifetime(&self, seconds: u64) {
        self.lifetime.store(seconds, Ordering::Relaxed);
    }

    /// Whether an outage is injected (token and managed-identity endpoints answer 503).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Counts a token issued to `client_id` for `resource`.
    pub fn record_issued(&self, client_id: &str, resource: &str) {
        *self
            .issued
            .lock()
            .entry((client_id.to_owned(), resource.to_owned()))
            .or_insert(0) += 1;
    }

    /// Tokens issued so far, by client and resource.
    pub fn issued(&self) -> Vec<IssuedCount> {
        self.issued
            .lock()
            .iter()
            .map(|((client_id, resource), count)| IssuedCount {
                client_id: client_id.clone(),
                resource: resource.clone(),
                count: *count,
            })
            .collect()
    }

    /// Back to the configured state: counters cleared, outage off, configured lifetime.
    pub fn reset(&self) {
        self.issued.lock().clear();
        self.set_down(false);
        self.set_lifetime(self.config.token_lifetime_seconds);
    }

    /// Checks a bearer token for a resource whose audience is `audience` at time `now`.
    pub fn verify(
        &self,
        token: &str,
        audience: &str,
        now: i64,
    ) -> Result<AccessClaims, TokenRejection> {
        let key = self.key().ok_or(TokenRejection::BadSignature)?;
        tokens::verify_access_token(key, token, audience, now)
    }
}
