//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::AppState;

/// The process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The store answers and every migration is applied.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let backend = state.registry.backend();
    let tenants = state.registry.snapshot().tenant_count();
    match state.registry.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "store": backend, "tenants": tenants})),
        ),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "store": backend, "tenants": tenants})),
            )
        }
    }
}
