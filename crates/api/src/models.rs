//! Model discovery as OpenAI-compatible tools expect it: `GET /v1/models`, `/openai/v1/models`
//! and `/openai/models` list the aliases the calling tenant can call right now, in OpenAI's
//! list shape. An alias is listed only if a call to it would be routed (its placement allows
//! it and a member is left in the tenant's data zone), so no tenant ever sees another's
//! dedicated deployments, and a tenant-provided resource (whose deployments the gateway does
//! not know) lists nothing.

use std::collections::BTreeMap;

use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tenant_registry::model::OpenAiPlacement;
use tenant_registry::{Snapshot, TenantEntry};

use crate::auth::Caller;
use crate::openai::openai_target;

/// One entry of the list (OpenAI's `Model`, plus the model an alias reaches).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub object: &'static str,
    /// Unix seconds: when the alias (pool) or deployment was registered.
    pub created: i64,
    pub owned_by: &'static str,
    /// The model its deployments serve (`gpt-4o`), which may differ from the alias.
    pub model: String,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Listed>,
}

pub async fn list_models(caller: Caller) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: usable_models(&caller.tenant, &caller.view),
    })
}

/// The aliases `tenant` can call, sorted, each checked through the router's own placement
/// rules.
pub fn usable_models(tenant: &TenantEntry, snapshot: &Snapshot) -> Vec<Listed> {
    let catalog = &snapshot.catalog;
    let mut candidates: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut offer = |alias: String, created: DateTime<Utc>| {
        let earliest = candidates.entry(alias).or_insert(created);
        *earliest = (*earliest).min(created);
    };
    match &tenant.tenant.openai {
        Some(OpenAiPlacement::Shared) => {
            for (alias, pool) in &catalog.pools {
                offer(alias.to_string(), pool.created_at);
            }
        }
        Some(OpenAiPlacement::DedicatedDeployment { models }) => {
            for (alias, members) in models {
                for member in members {
                    if let Some(entry) = catalog.deployments.get(&member.deployment) {
                        offer(alias.to_string(), entry.view.created_at);
                    }
                }
            }
        }
        Some(OpenAiPlacement::DedicatedResource { resources }) => {
            for (reference, entry) in &catalog.deployments {
                if resources.contains(&reference.resource) {
                    offer(reference.deployment.to_string(), entry.view.created_at);
                }
            }
        }
        Some(OpenAiPlacement::TenantProvided { .. }) | None => {}
    }
    candidates
        .into_iter()
        .filter_map(|(alias, created)| {
            let (target, _) = openai_target(tenant, snapshot, &alias)?;
            let model = target.members.first()?.model.clone();
            Some(Listed {
                id: alias,
                object: "model",
                created: created.timestamp(),
                owned_by: "bulkhead",
                model,
            })
        })
        .collect()
}

/// The tenant API's OpenAPI document (`/v1/me`, `/v1/usage`, `/v1/tokenize`, the model
/// listings), served without authentication at `/v1/openapi.json`.
pub const TENANT_OPENAPI: &str = include_str!("tenant_openapi.json");

pub async fn tenant_openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        TENANT_OPENAPI,
    )
}
