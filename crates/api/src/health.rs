//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::AppState;

/// How long readiness waits for the store before calling it unreachable.
const STORE_PATIENCE: Duration = Duration::from_secs(2);

/// The process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 503 `draining` once a shutdown has begun. Else `ready` when the store answers and every migration is applied. `degraded` (still 200)
/// when the store does not answer: the data plane keeps serving from the in-memory registry
/// and the ledger buffers usage, but admin writes fail and registry changes made elsewhere
/// are not seen until the store is back. Taking the replica out of rotation then would turn
/// a database outage into a full outage.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.lifecycle.draining() {
        // Shutting down: out of rotation at once, while the listener still accepts.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    let backend = state.registry.backend();
    let tenants = state.registry.snapshot().tenant_count();
    let ledger = state.ledger.metrics();
    let store = tokio::time::timeout(STORE_PATIENCE, state.registry.ready()).await;
    let (status, store_state) = match store {
        Ok(Ok(())) => ("ready", "ok"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "store unreachable; serving from the in-memory registry");
            ("degraded", "unreachable")
        }
        Err(_) => {
            tracing::warn!("store did not answer in time; serving from the in-memory registry");
            ("degraded", "unreachable")
        }
    };
    (
        StatusCode::OK,
        Json(json!({
            "status": status,
            "store": backend,
            "store_state": store_state,
            "tenants": tenants,
            "ledger": {
                "store_up": ledger.store_up,
                "buffered": ledger.buffered(),
                "lag_ms": ledger.lag.map(|l| l.as_millis() as u64),
            },
        })),
    )
}
