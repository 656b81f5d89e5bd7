//! What a credential is: the admin's description of how to get a token, checked once.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How the gateway authenticates to one Azure resource, as the admin API takes it (`auth`,
/// tagged by `kind`) and as it is stored, sealed.
#[derive(Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialSpec {
    /// A service principal and one of its client secrets.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        client_secret: SecretString,
    },
    /// AKS workload identity: a federated token read from `AZURE_FEDERATED_TOKEN_FILE` on
    /// every token request, exchanged for an access token. The tenant and client ids default
    /// to the process's `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`.
    WorkloadIdentity {
        #[serde(default)]
        tenant_id: Option<String>,
        #[serde(default)]
        client_id: Option<String>,
    },
    /// The host's managed identity (IMDS, or App Service / Container Apps through
    /// `IDENTITY_ENDPOINT`): system-assigned, or the user-assigned one with this client id.
    ManagedIdentity {
        #[serde(default)]
        client_id: Option<String>,
    },
}

/// Why a credential description was refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct CredentialError {
    pub field: &'static str,
    pub problem: &'static str,
}

impl fmt::Debug for CredentialSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        if let Some(client_id) = self.client_id() {
            write!(f, "({client_id})")?;
        }
        Ok(())
    }
}

impl CredentialSpec {
    /// `client_secret`, `workload_identity` or `managed_identity`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } => "client_secret",
            Self::WorkloadIdentity { .. } => "workload_identity",
            Self::ManagedIdentity { .. } => "managed_identity",
        }
    }

    /// The client id the admin gave, if any (not a secret: it names the principal).
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Self::ClientSecret { client_id, .. } => Some(client_id),
            Self::WorkloadIdentity { client_id, .. } | Self::ManagedIdentity { client_id } => {
                client_id.as_deref()
            }
        }
    }

    /// Whether this credential stands for the gateway's own identity (its pod's or host's)
    /// rather than a principal whose secret the admin gave. The gateway's own identity must
    /// never be used for an endpoint a tenant chose: the token would go to that endpoint.
    pub fn is_ambient(&self) -> bool {
        !matches!(self, Self::ClientSecret { .. })
    }

    /// Checks every field; the ids end up in URLs and form bodies.
    pub fn validate(&self) -> Result<(), CredentialError> {
        match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
            } => {
                check_tenant(tenant_id)?;
                check_client(client_id)?;
                let secret = client_secret.expose_secret();
                if secret.is_empty()
                    || secret.len() > 1024
                    || secret.chars().any(|c| c.is_control())
                {
                    return Err(CredentialError {
                        field: "client_secret",
                        problem: "must be 1 to 1024 characters without control characters",
                    });
                }
                Ok(())
            }
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
            } => {
                if let Some(tenant) = tenant_id {
                    check_tenant(tenant)?;
                }
                if let Some(client) = client_id {
                    check_client(client)?;
                }
                Ok(())
            }
            Self::ManagedIdentity { client_id } => {
                if let Some(client) = client_id {
                    check_client(client)?;
                }
                Ok(())
            }
        }
    }

    /// The stored form (JSON, secret included): only ever sealed, never logged or shown.
    pub fn to_stored_json(&self) -> String {
        let value = match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
            } => serde_json::json!({
                "kind": "client_secret",
                "tenant_id": tenant_id,
                "client_id": client_id,
                "client_secret": client_secret.expose_secret(),
            }),
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
            } => serde_json::json!({
                "kind": "workload_identity",
                "tenant_id": tenant_id,
                "client_id": client_id,
            }),
            Self::ManagedIdentity { client_id } => serde_json::json!({
                "kind": "managed_identity",
                "client_id": client_id,
            }),
        };
        value.to_string()
    }

    /// Reads the stored form back.
    pub fn from_stored_json(text: &str) -> Result<Self, CredentialError> {
        let spec: Self = serde_json::from_str(text).map_err(|_| CredentialError {
            field: "auth",
            problem: "is not a stored credential",
        })?;
        spec.validate()?;
        Ok(spec)
    }
}

/// A tenant (directory) id: a GUID or a verified domain name (`contoso.onmicrosoft.com`).
fn check_tenant(tenant: &str) -> Result<(), CredentialError> {
    let ok = (1..=256).contains(&tenant.len())
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !tenant.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(CredentialError {
            field: "tenant_id",
            problem: "must be a directory id (a GUID) or domain name",
        })
    }
}

/// A client (application) id: a GUID.
fn check_client(client: &str) -> Result<(), CredentialError> {
    let groups: Vec<&str> = client.split('-').collect();
    let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(CredentialError {
            field: "client_id",
            problem: "must be a GUID (the application's client id)",
        })
    }
}

/// A checked credential, cheap to clone. Two credentials with the same description (secret
/// included) share one cached token per scope.
#[derive(Clone)]
pub struct Credential(Arc<Inner>);

struct Inner {
    spec: CredentialSpec,
    /// A digest of the stored form: the cache key. A rotated secret is another credential.
    id: String,
}

impl Credential {
    pub fn new(spec: CredentialSpec) -> Result<Self, CredentialError> {
        spec.validate()?;
        let id = hex::encode(Sha256::digest(spec.to_stored_json().as_bytes()));
        Ok(Self(Arc::new(Inner { spec, id })))
    }

    pub fn spec(&self) -> &CredentialSpec {
        &self.0.spec
    }

    pub(crate) fn id(&self) -> &str {
        &self.0.id
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0.spec, f)
    }
}

impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "11111111-2222-3333-4444-555555555555";

    fn secret_spec(secret: &str) -> CredentialSpec {
        CredentialSpec::ClientSecret {
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: CLIENT.into(),
            client_secret: secret.into(),
        }
    }

    #[test]
    fn the_stored_form_reads_back_and_a_rotated_secret_is_another_credential() {
        let spec = secret_spec("s3cret");
        let back = CredentialSpec::from_stored_json(&spec.to_stored_json()).unwrap();
        let (a, b) = (
            Credential::new(spec).unwrap(),
            Credential::new(back).unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, Credential::new(secret_spec("rotated")).unwrap());
    }

    #[test]
    fn debug_output_names_the_principal_never_the_secret() {
        let credential = Credential::new(secret_spec("very-secret-value")).unwrap();
        let shown = format!("{credential:?} {:?}", credential.spec());
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains(CLIENT), "{shown}");
    }

    #[test]
    fn ids_that_would_leave_their_place_in_a_url_are_refused() {
        for (spec, field) in [
            (
                CredentialSpec::ClientSecret {
                    tenant_id: "../evil".into(),
                    client_id: CLIENT.into(),
                    client_secret: "x".into(),
                },
                "tenant_id",
            ),
            (
                CredentialSpec::ManagedIdentity {
                    client_id: Some("abc&resource=x".into()),
                },
                "client_id",
            ),
            (secret_spec(""), "client_secret"),
        ] {
            assert_eq!(spec.validate().unwrap_err().field, field);
        }
        let parsed: Result<CredentialSpec, _> =
            serde_json::from_str(r#"{"kind":"managed_identity","extra":1}"#);
        assert!(parsed.is_err());
    }
}
