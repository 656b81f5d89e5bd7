//! The in-memory view of the registry that the hot path reads: built from one consistent
//! read of the store, with credentials opened, and swapped in whole on every change.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::crypto::{hash_api_key, KeyHash, MasterKey};
use crate::model::{ContextOverflow, KeyScope, Limits, Tenant};
use crate::names::ResourceName;
use crate::store::Rows;
use crate::RegistryError;

/// A tenant as the data plane needs it.
#[derive(Debug)]
pub struct TenantEntry {
    pub tenant: Tenant,
    /// The tenant's own Azure OpenAI key, for `tenant_provided`.
    pub openai_credential: Option<SecretString>,
}

impl TenantEntry {
    /// The tenant's limits (`None` is unlimited).
    pub fn limits(&self) -> Limits {
        self.tenant.limits
    }

    /// What to do with a chat request larger than the model's context window.
    pub fn context_overflow(&self) -> ContextOverflow {
        self.tenant.context_overflow
    }
}

/// A live (unrevoked) API key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scope: KeyScope,
    pub expires_at: Option<DateTime<Utc>>,
    /// The key's own limits, which apply on top of its tenant's (`None` is unlimited).
    pub limits: Limits,
}

impl KeyEntry {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub catalog: Catalog,
    tenants: HashMap<Uuid, Arc<TenantEntry>>,
    slugs: HashMap<String, Uuid>,
    keys: HashMap<KeyHash, KeyEntry>,
    key_ids: HashMap<Uuid, KeyHash>,
    resource_credentials: HashMap<ResourceName, SecretString>,
    service_credentials: HashMap<ResourceName, SecretString>,
}

impl Snapshot {
    /// Builds the view. A row that cannot be read (or a credential that does not open under
    /// this master key) is left out and reported, so one bad row never takes down the rest.
    pub(crate) fn build(
        rows: Rows,
        master: &MasterKey,
    ) -> Result<(Self, Vec<String>), RegistryError> {
        let mut problems = Vec::new();
        let catalog = Catalog::from_rows(rows.catalog)?;
        let mut snapshot = Snapshot::default();
        for (name, entry) in &catalog.resources {
            match master.open(&resource_context(name), &entry.sealed) {
                Ok(secret) => {
                    snapshot.resource_credentials.insert(name.clone(), secret);
                }
                Err(_) => problems.push(format!("credential of resource {name} does not open")),
            }
        }
        for (name, entry) in &catalog.services {
            match master.open(&service_context(name), &entry.sealed) {
                Ok(secret) => {
                    snapshot.service_credentials.insert(name.clone(), secret);
                }
                Err(_) => problems.push(format!("credential of service {name} does not open")),
            }
        }
        for record in &rows.tenants {
            let tenant = match catalog.tenant(record) {
                Ok(tenant) => tenant,
                Err(error) => {
                    problems.push(format!("tenant {}: {error}", record.row.slug));
                    continue;
                }
            };
            let openai_credential = match &record.row.openai_credential {
                Some(sealed) => match master.open(&tenant_context(tenant.id), sealed) {
                    Ok(secret) => Some(secret),
                    Err(_) => {
                        problems.push(format!(
                            "credential of tenant {} does not open",
                            tenant.slug
                        ));
                        None
                    }
                },
                None => None,
            };
            snapshot.slugs.insert(tenant.slug.to_string(), tenant.id);
            snapshot.tenants.insert(
                tenant.id,
                Arc::new(TenantEntry {
                    tenant,
                    openai_credential,
                }),
            );
        }
        for row in rows.keys {
            // A key whose row cannot be read is left out: it stops working (fails closed).
            let (Ok(hash), Some(scope), Ok(limits)) = (
                KeyHash::try_from(row.hash.as_slice()),
                KeyScope::from_db(&row.scope),
                crate::catalog::limits(
                    row.tokens_per_minute,
                    row.requests_per_minute,
                    row.monthly_tokens,
                ),
            ) else {
                problems.push(format!("api key {} is unreadable", row.id));
                continue;
            };
            snapshot.key_ids.insert(row.id, hash);
            snapshot.keys.insert(
                hash,
                KeyEntry {
                    id: row.id,
                    tenant_id: row.tenant_id,
                    scope,
                    expires_at: row.expires_at,
                    limits,
                },
            );
        }
        snapshot.catalog = catalog;
        Ok((snapshot, problems))
    }

    /// The live key whose secret is `presented`, if any (revoked keys are not in the view).
    pub fn key(&self, presented: &str) -> Option<&KeyEntry> {
        self.keys.get(&hash_api_key(presented))
    }

    /// The live key with this id, if any: for a caller already authenticated by
    /// [`Snapshot::key`] (revoked keys are not in the view).
    pub fn key_by_id(&self, id: Uuid) -> Option<&KeyEntry> {
        self.key_ids.get(&id).and_then(|hash| self.keys.get(hash))
    }

    pub fn tenant(&self, id: Uuid) -> Option<&Arc<TenantEntry>> {
        self.tenants.get(&id)
    }

    pub fn tenant_by_slug(&self, slug: &str) -> Option<&Arc<TenantEntry>> {
        self.slugs.get(slug).and_then(|id| self.tenants.get(id))
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Every tenant, in no particular order.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<TenantEntry>> {
        self.tenants.values()
    }

    pub fn resource_credential(&self, name: &ResourceName) -> Option<&SecretString> {
        self.resource_credentials.get(name)
    }

    pub fn service_credential(&self, name: &ResourceName) -> Option<&SecretString> {
        self.service_credentials.get(name)
    }
}

/// The associated data that binds a sealed credential to its row.
pub(crate) fn resource_context(name: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("openai_resources:{name}")
}

pub(crate) fn service_context(name: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("search_services:{name}")
}

pub(crate) fn tenant_context(id: Uuid) -> String {
    format!("tenants:{id}:openai")
}
