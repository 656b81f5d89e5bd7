//! The token cache: one cached token per (credential, scope), refreshed in the background.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::HeaderValue;
use parking_lot::Mutex;
use secrecy::SecretString;
use tokio::time::Instant;

use crate::fetch::{fetch, Fetched};
use crate::Credential;

/// Where the identity platform is. Every endpoint is configurable so tests (azure-sim) and
/// sovereign clouds work.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// `AZURE_AUTHORITY_HOST`: `https://login.microsoftonline.com` in the public cloud.
    pub authority_host: String,
    /// The instance metadata token endpoint (VMs, VM scale sets, AKS nodes).
    pub imds_endpoint: String,
    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (App Service, Container Apps): used for
    /// managed identity instead of IMDS when both are set.
    pub identity_endpoint: Option<String>,
    pub identity_header: Option<SecretString>,
    /// What AKS workload identity injects into the pod.
    pub workload: Workload,
    /// Extra root certificate (PEM) trusted for the identity platform, e.g. azure-sim's.
    pub ca_file: Option<PathBuf>,
    /// Bound on one token request (connect to last byte).
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub token_file: Option<PathBuf>,
}

pub const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";
pub const IMDS_TOKEN_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            authority_host: PUBLIC_AUTHORITY.into(),
            imds_endpoint: IMDS_TOKEN_ENDPOINT.into(),
            identity_endpoint: None,
            identity_header: None,
            workload: Workload::default(),
            ca_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why no token can be had. The messages name what failed, never a secret or token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("the identity platform could not be reached ({0})")]
    Unreachable(String),
    #[error("the identity platform refused the credential (HTTP {status}: {error})")]
    Refused { status: u16, error: String },
    #[error("the credential cannot be used: {0}")]
    Misconfigured(&'static str),
    /// No valid token and the last attempt failed; the next one is at most `retry_after` away.
    #[error("no valid token: {reason}")]
    Unavailable {
        retry_after: Duration,
        reason: String,
    },
}

impl TokenError {
    /// How long a caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => FIRST_BACKOFF,
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A 401 from Azure forces at most one new token per cell in this time.
const FORCED_REFRESH_SPACING: Duration = Duration::from_secs(10);
/// A cell nobody asked for in this long (or a lifetime, if longer) stops refreshing.
const IDLE_AFTER: Duration = Duration::from_secs(600);

/// Gets, caches and refreshes tokens. Cheap to clone; one per process.
#[derive(Clone)]
pub struct TokenBroker {
    shared: Arc<Shared>,
}

struct Shared {
    http: reqwest::Client,
    settings: IdentitySettings,
    /// By credential id, then scope: a lookup borrows both, so a call allocates nothing.
    cells: Mutex<HashMap<String, HashMap<String, Arc<Cell>>>>,
}

/// One (credential, scope): its token and the one refresh task that keeps it fresh.
struct Cell {
    credential: Credential,
    scope: String,
    state: Mutex<State>,
    /// Single flight: one token request per cell at a time.
    fetching: tokio::sync::Mutex<()>,
}

struct State {
    token: Option<Cached>,
    /// The last attempt failed: why, how many in a row, and when the next may be made.
    failure: Option<Failure>,
    last_used: Instant,
    /// When a 401 last forced a new token.
    last_forced: Option<Instant>,
    refreshing: bool,
}

struct Cached {
    header: HeaderValue,
    fetched_at: Instant,
    lifetime: Duration,
    /// Used until a little before it expires (clock skew, requests in flight).
    usable_until: Instant,
}

struct Failure {
    reason: String,
    in_a_row: u32,
    next_attempt: Instant,
}

impl TokenBroker {
    pub fn new(settings: IdentitySettings) -> Result<Self, String> {
        let mut http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &settings.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))?;
            http = http.add_root_certificate(certificate);
        }
        let http = http.build().map_err(|e| e.to_string())?;
        Ok(Self {
            shared: Arc::new(Shared {
                http,
                settings,
                cells: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn settings(&self) -> &IdentitySettings {
        &self.shared.settings
    }

    /// `Bearer <token>` for `credential` and `scope`: the cached token, or (first call, or
    /// after the cached one expired) one fetched now by a single caller while the others
    /// wait for it.
    pub async fn token(
        &self,
        credential: &Credential,
        scope: &str,
    ) -> Result<HeaderValue, TokenError> {
        let cell = self.cell(credential, scope);
        if let Some(ready) = cell.ready(true) {
            return ready;
        }
        let _flight = cell.fetching.lock().await;
        if let Some(ready) = cell.ready(false) {
            return ready;
        }
        self.fetch_into(&cell).await
    }

    /// Azure refused `rejected` (401): a new token unless another caller already got one, or
    /// a 401 forced one less than 10 s ago (an upstream answering 401 to everything must not turn
    /// every call into a token request).
    pub async fn token_after_rejection(
        &self,
        credential: &Credential,
        scope: &str,
        rejected: &HeaderValue,
    ) -> Result<HeaderValue, TokenError> {
        let cell = self.cell(credential, scope);
        let _flight = cell.fetching.lock().await;
        {
            let mut state = cell.state.lock();
            if let Some(token) = &state.token {
                let forced_lately = state
                    .last_forced
                    .is_some_and(|at| at.elapsed() < FORCED_REFRESH_SPACING);
                if token.header != rejected || forced_lately {
                    return Ok(token.header.clone());
                }
            }
            state.last_forced = Some(Instant::now());
        }
        self.fetch_into(&cell).await
    }

    /// How many (credential, scope) tokens are cached (for metrics and tests).
    pub fn cached(&self) -> usize {
        self.shared.cells.lock().values().map(HashMap::len).sum()
    }

    fn cell(&self, credential: &Credential, scope: &str) -> Arc<Cell> {
        let mut cells = self.shared.cells.lock();
        if let Some(cell) = cells.get(credential.id()).and_then(|by| by.get(scope)) {
            return Arc::clone(cell);
        }
        let cell = Arc::new(Cell {
            credential: credential.clone(),
            scope: scope.to_owned(),
            state: Mutex::new(State {
                token: None,
                failure: None,
                last_used: Instant::now(),
                last_forced: None,
                refreshing: false,
            }),
            fetching: tokio::sync::Mutex::new(()),
        });
        cells
            .entry(credential.id().to_owned())
            .or_default()
            .insert(scope.to_owned(), Arc::clone(&cell));
        cell
    }

    /// One token request for `cell` (the caller holds its flight lock); the refresh task is
    /// started after the first success.
    async fn fetch_into(&self, cell: &Arc<Cell>) -> Result<HeaderValue, TokenError> {
        let (outcome, start_refreshing) = self.request(cell).await;
        if start_refreshing {
            tokio::spawn(refresh(Arc::downgrade(&self.shared), Arc::clone(cell)));
        }
        outcome
    }

    /// Asks for a token and keeps the answer; says whether the refresh task must start.
    async fn request(&self, cell: &Cell) -> (Result<HeaderValue, TokenError>, bool) {
        let outcome = fetch(
            &self.shared.http,
            &self.shared.settings,
            cell.credential.spec(),
            &cell.scope,
        )
        .await;
        let kind = cell.credential.spec().kind();
        let now = Instant::now();
        let mut state = cell.state.lock();
        match outcome {
            Ok(Fetched { header, lifetime }) => {
                metrics::counter!("bulkhead_entra_token_requests_total", "kind" => kind, "outcome" => "ok")
                    .increment(1);
                if state.failure.take().is_some() {
                    tracing::info!(target: "bulkhead::entra", credential = ?cell.credential, scope = %cell.scope, "token refresh recovered");
                }
                let skew = (lifetime / 10).min(Duration::from_secs(30));
                state.token = Some(Cached {
                    header: header.clone(),
                    fetched_at: now,
                    lifetime,
                    usable_until: now + lifetime.saturating_sub(skew),
                });
                let start = !state.refreshing;
                state.refreshing = true;
                (Ok(header), start)
            }
            Err(error) => {
                let outcome = match error {
                    TokenError::Refused { .. } => "refused",
                    TokenError::Misconfigured(_) => "misconfigured",
                    _ => "unreachable",
                };
                metrics::counter!("bulkhead_entra_token_requests_total", "kind" => kind, "outcome" => outcome)
                    .increment(1);
                tracing::warn!(target: "bulkhead::entra", credential = ?cell.credential, scope = %cell.scope, %error, "token request failed");
                let in_a_row = state.failure.as_ref().map_or(0, |f| f.in_a_row) + 1;
                let backoff = backoff(in_a_row);
                state.failure = Some(Failure {
                    reason: error.to_string(),
                    in_a_row,
                    next_attempt: now + backoff,
                });
                (Err(error), false)
            }
        }
    }
}

impl Cell {
    /// The cached token if it is still usable; an error while the last attempt's back-off
    /// runs (callers fail fast instead of all asking the identity platform); `None` when a
    /// request should be made.
    fn ready(&self, touch: bool) -> Option<Result<HeaderValue, TokenError>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        if touch {
            state.last_used = now;
        }
        if let Some(token) = state.token.as_ref().filter(|t| now < t.usable_until) {
            return Some(Ok(token.header.clone()));
        }
        let failure = state.failure.as_ref().filter(|f| now < f.next_attempt)?;
        Some(Err(TokenError::Unavailable {
            retry_after: failure.next_attempt - now,
            reason: failure.reason.clone(),
        }))
    }

    /// When the refresh task should next ask: at half the token's life, or when the last
    /// failure's back-off ends.
    fn next_refresh(&self) -> (Instant, Duration) {
        let state = self.state.lock();
        let lifetime = state.token.as_ref().map_or(Duration::ZERO, |t| t.lifetime);
        let at = match (&state.failure, &state.token) {
            (Some(failure), _) => failure.next_attempt,
            (None, Some(token)) => token.fetched_at + (token.lifetime / 2).max(FIRST_BACKOFF),
            (None, None) => Instant::now() + FIRST_BACKOFF,
        };
        (at, lifetime)
    }
}

fn backoff(in_a_row: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << in_a_row.saturating_sub(1).min(5))
        .min(MAX_BACKOFF)
}

/// The one task per cell: refreshes at half life (retrying with back-off after a failure)
/// until the broker is gone or nobody has asked for the token in a while.
async fn refresh(shared: Weak<Shared>, cell: Arc<Cell>) {
    loop {
        let (at, lifetime) = cell.next_refresh();
        tokio::time::sleep_until(at).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let idle = cell.state.lock().last_used.elapsed() > IDLE_AFTER.max(lifetime);
        if idle {
            let mut cells = shared.cells.lock();
            let id = cell.credential.id();
            if let Some(by_scope) = cells.get_mut(id) {
                if by_scope
                    .get(&cell.scope)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell))
                {
                    by_scope.remove(&cell.scope);
                }
                if by_scope.is_empty() {
                    cells.remove(id);
                }
            }
            return;
        }
        let broker = TokenBroker { shared };
        let _flight = cell.fetching.lock().await;
        // A caller may have fetched while this task slept.
        let due = cell.next_refresh().0 <= Instant::now();
        if due {
            let _ = broker.request(&cell).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One cell per (credential, scope); after a failed request, callers fail fast with the
    /// back-off's wait instead of asking the identity platform again.
    #[tokio::test]
    async fn cells_are_per_credential_and_scope_and_a_failure_backs_callers_off() {
        let broker = TokenBroker::new(IdentitySettings {
            // Nothing listens there: every request fails at once.
            imds_endpoint: "http://127.0.0.1:9/metadata/identity/oauth2/token".into(),
            timeout: Duration::from_secs(2),
            ..IdentitySettings::default()
        })
        .unwrap();
        let system =
            Credential::new(crate::CredentialSpec::ManagedIdentity { client_id: None }).unwrap();
        let user = Credential::new(crate::CredentialSpec::ManagedIdentity {
            client_id: Some("11111111-2222-3333-4444-555555555555".into()),
        })
        .unwrap();
        let first = broker
            .token(&system, crate::OPENAI_SCOPE)
            .await
            .unwrap_err();
        assert!(matches!(first, TokenError::Unreachable(_)), "{first:?}");
        let again = broker
            .token(&system, crate::OPENAI_SCOPE)
            .await
            .unwrap_err();
        match again {
            TokenError::Unavailable { retry_after, .. } => {
                assert!(retry_after <= FIRST_BACKOFF, "{retry_after:?}")
            }
            other => panic!("not backed off: {other:?}"),
        }
        let _ = broker.token(&system, crate::SEARCH_SCOPE).await;
        let _ = broker.token(&user, crate::OPENAI_SCOPE).await;
        assert_eq!(broker.cached(), 3);
    }

    #[test]
    fn back_off_doubles_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }
}
