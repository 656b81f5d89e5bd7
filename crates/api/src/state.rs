//! What every handler can reach.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tenant_registry::Registry;

use crate::auth::AdminToken;
use crate::jwt::JwtAuthority;
use crate::metering::UsageSink;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub jwt: Arc<JwtAuthority>,
    pub admin_token: Arc<AdminToken>,
    /// Default lifetime of gateway-issued tenant tokens.
    pub token_ttl: Duration,
    pub openai: Arc<openai_router::OpenAiRouter>,
    pub usage: Arc<dyn UsageSink>,
    /// Whether responses name the deployment that answered (`x-bulkhead-deployment`).
    pub expose_member: bool,
    /// Seals the ids of stateful objects (responses) to their tenant and resource.
    pub ids: Arc<tenant_registry::MasterKey>,
    /// Calls Azure AI Search services with the gateway's admin keys.
    pub search: Arc<search_router::SearchClient>,
    /// Token and request quotas (Redis when configured).
    pub quota: quota::Limiter,
    /// The per-tenant response cache (Redis when configured, and each replica's memory).
    pub cache: Arc<response_cache::ResponseCache>,
    /// The durable usage ledger (what `/v1/usage` and the admin usage route read).
    pub ledger: Arc<usage_ledger::Ledger>,
    /// Whether token metrics carry a `tenant` label.
    pub metrics_tenant_labels: bool,
    /// Prompt token counting and model limits.
    pub tokens: token_count::Counter,
    /// Where and within what bounds counts run (off the async workers when large).
    pub counting: Arc<crate::counting::CountPool>,
    /// Long-running operations (provisioning, moves, offboarding).
    pub operations: Arc<crate::jobs::Operations>,
    /// Draining or not, and the connections' counters.
    pub lifecycle: Arc<crate::server::Lifecycle>,
    /// The console's settings and shared state (overview cache, sign-in throttle).
    pub console: Arc<crate::console::ConsoleState>,
}

impl AppState {
    pub fn admin_token_matches(&self, headers: &HeaderMap) -> bool {
        self.admin_token.matches(headers)
    }
}
