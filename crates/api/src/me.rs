//! `GET /v1/me`: the calling tenant's own placement summary, without any secret.

use axum::Json;
use serde::Serialize;
use tenant_registry::model::{KeyScope, Limits, OpenAiPlacement, SearchPlacement, TenantStatus};
use tenant_registry::names::{DataZone, TenantSlug};
use uuid::Uuid;

use crate::auth::{Caller, Credential};

#[derive(Debug, Serialize)]
pub struct Me {
    pub id: Uuid,
    pub slug: TenantSlug,
    pub display_name: String,
    pub status: TenantStatus,
    pub data_zone: Option<DataZone>,
    pub openai: Option<OpenAiPlacement>,
    /// The model aliases this tenant can call (unknown for a tenant-provided resource).
    pub models: Vec<String>,
    pub search: Option<SearchPlacement>,
    pub limits: Limits,
    pub credential: CredentialView,
}

#[derive(Debug, Serialize)]
pub struct CredentialView {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    pub scope: KeyScope,
}

pub async fn me(caller: Caller) -> Json<Me> {
    let tenant = &caller.tenant.tenant;
    let snapshot = &caller.view;
    // What a call would actually reach: the same list as GET /v1/models.
    let models = crate::models::usable_models(&caller.tenant, snapshot)
        .into_iter()
        .map(|listed| listed.id)
        .collect();
    let (kind, key_id) = match caller.credential {
        Credential::ApiKey { id } => ("api_key", Some(id)),
        Credential::Token => ("token", None),
    };
    Json(Me {
        id: tenant.id,
        slug: tenant.slug.clone(),
        display_name: tenant.display_name.clone(),
        status: tenant.status,
        data_zone: tenant.data_zone.clone(),
        openai: tenant.openai.clone(),
        models,
        search: tenant.search.clone(),
        limits: tenant.limits,
        credential: CredentialView {
            kind,
            key_id,
            scope: caller.scope,
        },
    })
}
