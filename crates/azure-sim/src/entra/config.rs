//! The `entra` section of the configuration: service principals (client secret and federated
//! credentials), the managed identity of the "machine" the emulator plays, and how long the
//! tokens it issues live.

use serde::{Deserialize, Serialize};

/// Audience a federated credential expects by default (Entra's token-exchange audience).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Default access-token lifetime in seconds (Entra's usual value for app tokens).
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 3600;

/// Everything the emulated identity platform knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntraConfig {
    /// Lifetime of issued access tokens (`PUT /_sim/entra/lifetime` changes it at runtime).
    pub token_lifetime_seconds: u64,
    /// App registrations (service principals) that may use the client-credentials grant.
    pub principals: Vec<PrincipalConfig>,
    /// The managed identity behind the IMDS and App Service token endpoints, if any.
    pub managed_identity: Option<ManagedIdentityConfig>,
}

impl Default for EntraConfig {
    fn default() -> Self {
        Self {
            token_lifetime_seconds: DEFAULT_TOKEN_LIFETIME_SECONDS,
            principals: Vec::new(),
            managed_identity: None,
        }
    }
}

impl EntraConfig {
    /// Adds a service principal (builder style).
    pub fn with_principal(mut self, principal: PrincipalConfig) -> Self {
        self.principals.push(principal);
        self
    }

    /// Sets the managed identity (builder style).
    pub fn with_managed_identity(mut self, identity: ManagedIdentityConfig) -> Self {
        self.managed_identity = Some(identity);
        self
    }

    /// Sets the token lifetime (builder style).
    pub fn with_token_lifetime(mut self, seconds: u64) -> Self {
        self.token_lifetime_seconds = seconds;
        self
    }
}

/// A string that never shows in `Debug` output (client secrets, identity headers).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; compare it, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One app registration with its service principal in a tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// Directory (tenant) id; the token endpoint answers only under this tenant.
    pub tenant_id: String,
    /// Application (client) id: `client_id` in token requests, `appid` in tokens.
    pub client_id: String,
    /// Object id of the service principal: `oid` in tokens, what role assignments name.
    pub object_id: String,
    /// Client secret; without one only federated credentials work.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Federated identity credentials (workload identity): assertions from these
    /// issuer/subject pairs are accepted instead of a secret.
    #[serde(default)]
    pub federated: Vec<FederatedCredentialConfig>,
}

impl PrincipalConfig {
    /// A principal without credentials yet.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        object_id: impl Into<String>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            object_id: object_id.into(),
            client_secret: None,
            federated: Vec::new(),
        }
    }

    /// Sets the client secret (builder style).
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(Secret::new(secret));
        self
    }

    /// Adds a federated credential with the default audience (builder style).
    pub fn with_federated(mut self, issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        self.federated.push(FederatedCredentialConfig {
            issuer: issuer.into(),
            subject: subject.into(),
            audience: default_audience(),
        });
        self
    }
}

/// A federated identity credential: which external tokens stand for the principal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredentialConfig {
    /// `iss` of accepted assertions (e.g. the AKS cluster's OIDC issuer URL).
    pub issuer: String,
    /// `sub` of accepted assertions (`system:serviceaccount:{namespace}:{name}` on AKS).
    pub subject: String,
    /// `aud` the assertion must carry.
    #[serde(default = "default_audience")]
    pub audience: String,
}

fn default_audience() -> String {
    TOKEN_EXCHANGE_AUDIENCE.to_owned()
}

/// The managed identities of the host the emulator pretends to be (a VM behind IMDS, or an
/// App Service / Container App behind `IDENTITY_ENDPOINT`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentityConfig {
    /// Tenant the identities belong to (`tid` of their tokens).
    pub tenant_id: String,
    /// Value `X-IDENTITY-HEADER` must carry on `/msi/token` (the `IDENTITY_HEADER` variable).
    pub identity_header: Secret,
    /// The system-assigned identity, used when a request names no identity.
    #[serde(default)]
    pub system_assigned: Option<IdentityConfig>,
    /// User-assigned identities, chosen by `client_id` (or `object_id`) in the request.
    #[serde(default)]
    pub user_assigned: Vec<IdentityConfig>,
}

impl ManagedIdentityConfig {
    /// A host with no identity assigned yet.
    pub fn new(tenant_id: impl Into<String>, identity_header: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            identity_header: Secret::new(identity_header),
            system_assigned: None,
            user_assigned: Vec::new(),
        }
    }

    /// Sets the system-assigned identity (builder style).
    pub fn with_system_assigned(
        mut self,
        client_id: impl Into<String>,
        object_id: impl Into<String>,
    ) -> Self {
        self.system_assigned = Some(IdentityConfig::new(client_id, object_id));
        self
    }

    /// Adds a user-assigned identity (builder style).
    pub fn with_user_assigned(
        mut self,
        client_id: impl Into<String>,
        object_id: impl Into<String>,
    ) -> Self {
        self.user_assigned
            .push(IdentityConfig::new(client_id, object_id));
        self
    }
}

/// One managed identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Client (application) id: `appid` in tokens, `client_id` in IMDS requests.
    pub client_id: String,
    /// Object (principal) id: `oid` in tokens, what role assignments name.
    pub object_id: String,
}

impl IdentityConfig {
    pub fn new(client_id: impl Into<String>, object_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            object_id: object_id.into(),
        }
    }
}
