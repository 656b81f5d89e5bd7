//! How the gateway authenticates to one upstream: an API key, or an Entra ID credential. The
//! registry seals it as one secret: a key as it is (keys never hold control characters), a
//! credential as [`STORED_MARKER`] followed by its JSON.

use std::fmt;

use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use crate::{Credential, CredentialError, CredentialSpec, TokenBroker, TokenError};

/// Starts the stored form of an Entra credential. An API key cannot start with it: keys
/// with control characters are refused.
const STORED_MARKER: &str = "\u{0}entra\u{0}";

#[derive(Clone)]
pub enum UpstreamAuth {
    /// Sent as `api-key`.
    ApiKey(SecretString),
    /// A token for the call's scope, sent as `Authorization: Bearer`.
    Entra(Credential),
}

impl fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ApiKey(_) => f.write_str("api_key"),
            Self::Entra(credential) => fmt::Debug::fmt(credential, f),
        }
    }
}

/// The header an upstream call carries.
#[derive(Clone)]
pub enum AuthHeader {
    ApiKey(HeaderValue),
    Bearer(HeaderValue),
}

impl UpstreamAuth {
    /// `api_key`, `client_secret`, `workload_identity` or `managed_identity`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "api_key",
            Self::Entra(credential) => credential.spec().kind(),
        }
    }

    /// The single secret the registry seals.
    pub fn to_stored(&self) -> SecretString {
        match self {
            Self::ApiKey(key) => key.clone(),
            Self::Entra(credential) => {
                format!("{STORED_MARKER}{}", credential.spec().to_stored_json()).into()
            }
        }
    }

    /// Reads what [`Self::to_stored`] made (an opened seal).
    pub fn from_stored(stored: SecretString) -> Result<Self, CredentialError> {
        match stored.expose_secret().strip_prefix(STORED_MARKER) {
            Some(json) => Ok(Self::Entra(Credential::new(
                CredentialSpec::from_stored_json(json)?,
            )?)),
            None => Ok(Self::ApiKey(stored)),
        }
    }

    /// The header for a call in `scope`: the key, or the broker's current token.
    pub async fn header(
        &self,
        broker: &TokenBroker,
        scope: &str,
    ) -> Result<AuthHeader, TokenError> {
        match self {
            Self::ApiKey(key) => {
                let mut value = HeaderValue::from_str(key.expose_secret()).map_err(|_| {
                    TokenError::Misconfigured("the API key is not a valid header value")
                })?;
                value.set_sensitive(true);
                Ok(AuthHeader::ApiKey(value))
            }
            Self::Entra(credential) => broker
                .token(credential, scope)
                .await
                .map(AuthHeader::Bearer),
        }
    }
}

impl UpstreamAuth {
    /// After Azure answered 401 to `sent`: a new token to try once more, if there is one
    /// (not for a key, and not when the broker has nothing newer than what was refused).
    pub async fn renewed(
        &self,
        broker: &TokenBroker,
        scope: &str,
        sent: &AuthHeader,
    ) -> Option<AuthHeader> {
        let (Self::Entra(credential), AuthHeader::Bearer(rejected)) = (self, sent) else {
            return None;
        };
        let fresh = broker
            .token_after_rejection(credential, scope, rejected)
            .await
            .ok()?;
        (fresh != rejected).then_some(AuthHeader::Bearer(fresh))
    }

    /// Whether a 401/403 from Azure refuses the gateway's own identity rather than a key.
    pub fn is_entra(&self) -> bool {
        matches!(self, Self::Entra(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_credentials_survive_the_stored_form() {
        let key = UpstreamAuth::from_stored("plain-key-123".to_owned().into()).unwrap();
        assert!(matches!(&key, UpstreamAuth::ApiKey(k) if k.expose_secret() == "plain-key-123"));
        let credential = UpstreamAuth::Entra(
            Credential::new(CredentialSpec::ManagedIdentity { client_id: None }).unwrap(),
        );
        let back = UpstreamAuth::from_stored(credential.to_stored()).unwrap();
        assert_eq!(back.kind(), "managed_identity");
        assert!(UpstreamAuth::from_stored(format!("{STORED_MARKER}{{}}").into()).is_err());
    }
}
