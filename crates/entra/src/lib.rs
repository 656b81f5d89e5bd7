//! Keyless authentication to Azure: Entra ID access tokens for the gateway's upstream calls.
//!
//! A [`Credential`] says how to get a token (a service principal's secret, AKS workload
//! identity, a managed identity); the [`TokenBroker`] gets, caches and refreshes them. One
//! token is cached per (credential, scope); a background task per cached token refreshes it
//! at half its lifetime, so no caller waits on the identity platform once the first token is
//! in. A failed refresh keeps the cached token until it expires; after that the calls that
//! need it fail fast with [`TokenError::Unavailable`] (the gateway answers 503 with
//! `Retry-After`) while the task keeps trying. No token or secret is ever logged: tokens are
//! kept as sensitive header values, secrets as [`secrecy::SecretString`].

mod broker;
mod credential;
mod fetch;
mod upstream;

pub use broker::{IdentitySettings, TokenBroker, TokenError, Workload};

/// The public cloud's endpoints, the defaults of [`IdentitySettings`].
pub mod broker_defaults {
    pub use crate::broker::{IMDS_TOKEN_ENDPOINT, PUBLIC_AUTHORITY};
}
pub use credential::{Credential, CredentialError, CredentialSpec};
pub use upstream::{AuthHeader, UpstreamAuth};

/// The scope of Azure OpenAI (Cognitive Services) data-plane calls.
pub const OPENAI_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// The scope of Azure AI Search data-plane calls.
pub const SEARCH_SCOPE: &str = "https://search.azure.com/.default";
