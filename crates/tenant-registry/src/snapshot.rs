//! The in-memory view of the registry that the hot path reads: built from one consistent
//! read of the store, with credentials opened, and swapped in whole on every change.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::catalog::Catalog;
use entra::UpstreamAuth;

use crate::crypto::{hash_api_key, KeyHash, MasterKey};
use crate::model::{ContextOverflow, KeyScope, Limits, Tenant};
use crate::names::ResourceName;
use crate::store::{KeyRow, Rows, TenantRecord};
use crate::RegistryError;

/// A tenant as the data plane needs it.
#[derive(Debug)]
pub struct TenantEntry {
    pub tenant: Tenant,
    /// The tenant's own Azure OpenAI key, for `tenant_provided`.
    pub openai_credential: Option<UpstreamAuth>,
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

/// The view: persistent maps (structural sharing), so a change of a few tenants or keys makes
/// a new view in O(log n) without copying the rest, and readers keep the one they loaded.
/// B-trees rather than hash tries: about 40 bytes an entry against 165 (a trie's sparse nodes),
/// for a lookup that stays well under a microsecond.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub catalog: Arc<Catalog>,
    tenants: imbl::OrdMap<Uuid, Arc<TenantEntry>>,
    slugs: imbl::OrdMap<Arc<str>, Uuid>,
    keys: imbl::OrdMap<KeyHash, Arc<KeyEntry>>,
    key_ids: imbl::OrdMap<Uuid, KeyHash>,
    credentials: Arc<Credentials>,
    /// The last change-log sequence number this view includes.
    pub mark: i64,
}

/// The opened upstream credentials of the catalog.
#[derive(Debug, Default)]
struct Credentials {
    resources: HashMap<ResourceName, UpstreamAuth>,
    services: HashMap<ResourceName, UpstreamAuth>,
}

/// A tenant's current rows (`None`: it no longer exists), for [`Snapshot::with_changes`].
pub(crate) type TenantChange = (Uuid, Option<TenantRecord>);
/// A key's current row (`None`: revoked or deleted).
pub(crate) type KeyChange = (Uuid, Option<KeyRow>);

impl Snapshot {
    /// Builds the view. A row that cannot be read (or a credential that does not open under
    /// this master key) is left out and reported, so one bad row never takes down the rest.
    pub(crate) fn build(
        rows: Rows,
        master: &MasterKey,
    ) -> Result<(Self, Vec<String>), RegistryError> {
        let mut problems = Vec::new();
        let catalog = Catalog::from_rows(rows.catalog)?;
        let mut credentials = Credentials::default();
        for (name, entry) in &catalog.resources {
            match open_auth(master, &resource_context(name), &entry.sealed) {
                Ok(secret) => {
                    credentials.resources.insert(name.clone(), secret);
                }
                Err(_) => problems.push(format!("credential of resource {name} does not open")),
            }
        }
        for (name, entry) in &catalog.services {
            match open_auth(master, &service_context(name), &entry.sealed) {
                Ok(secret) => {
                    credentials.services.insert(name.clone(), secret);
                }
                Err(_) => problems.push(format!("credential of service {name} does not open")),
            }
        }
        let mut snapshot = Snapshot {
            catalog: Arc::new(catalog),
            credentials: Arc::new(credentials),
            mark: rows.mark,
            ..Snapshot::default()
        };
        let tenants = rows
            .tenants
            .into_iter()
            .map(|r| (r.row.id, Some(r)))
            .collect();
        let keys = rows.keys.into_iter().map(|k| (k.id, Some(k))).collect();
        snapshot.apply(tenants, keys, master, &mut problems);
        Ok((snapshot, problems))
    }

    /// This view with the current rows of some tenants and keys (the catalog unchanged), as
    /// of change-log sequence number `mark`.
    pub(crate) fn with_changes(
        &self,
        tenants: Vec<TenantChange>,
        keys: Vec<KeyChange>,
        master: &MasterKey,
        mark: i64,
    ) -> (Self, Vec<String>) {
        let mut next = self.clone();
        let mut problems = Vec::new();
        next.apply(tenants, keys, master, &mut problems);
        next.mark = next.mark.max(mark);
        (next, problems)
    }

    fn apply(
        &mut self,
        tenants: Vec<TenantChange>,
        keys: Vec<KeyChange>,
        master: &MasterKey,
        problems: &mut Vec<String>,
    ) {
        for (id, record) in tenants {
            if let Some(old) = self.tenants.remove(&id) {
                self.slugs.remove(old.tenant.slug.as_str());
            }
            let Some(record) = record else {
                continue;
            };
            match tenant_entry(&self.catalog, &record, master, problems) {
                Ok(entry) => {
                    self.slugs.insert(Arc::from(entry.tenant.slug.as_str()), id);
                    self.tenants.insert(id, Arc::new(entry));
                }
                Err(problem) => problems.push(problem),
            }
        }
        for (id, row) in keys {
            if let Some(hash) = self.key_ids.remove(&id) {
                self.keys.remove(&hash);
            }
            let Some(row) = row else {
                continue;
            };
            match key_entry(&row) {
                Some((hash, entry)) => {
                    self.key_ids.insert(id, hash);
                    self.keys.insert(hash, Arc::new(entry));
                }
                // A key whose row cannot be read is left out: it stops working (fails closed).
                None => problems.push(format!("api key {id} is unreadable")),
            }
        }
    }

    /// The live key whose secret is `presented`, if any (revoked keys are not in the view).
    pub fn key(&self, presented: &str) -> Option<&KeyEntry> {
        self.keys.get(&hash_api_key(presented)).map(Arc::as_ref)
    }

    /// The live key with this id, if any: for a caller already authenticated by
    /// [`Snapshot::key`] (revoked keys are not in the view).
    pub fn key_by_id(&self, id: Uuid) -> Option<&KeyEntry> {
        self.key_ids
            .get(&id)
            .and_then(|hash| self.keys.get(hash))
            .map(Arc::as_ref)
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

    pub fn resource_credential(&self, name: &ResourceName) -> Option<&UpstreamAuth> {
        self.credentials.resources.get(name)
    }

    pub fn service_credential(&self, name: &ResourceName) -> Option<&UpstreamAuth> {
        self.credentials.services.get(name)
    }

    /// How many live keys the view holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// A tenant as the data plane needs it, from its rows. A credential of its own that does not
/// open is reported and left out (the tenant stays; calls needing it fail).
fn tenant_entry(
    catalog: &Catalog,
    record: &TenantRecord,
    master: &MasterKey,
    problems: &mut Vec<String>,
) -> Result<TenantEntry, String> {
    let tenant = catalog
        .tenant(record)
        .map_err(|error| format!("tenant {}: {error}", record.row.slug))?;
    let openai_credential = match &record.row.openai_credential {
        Some(sealed) => match open_auth(master, &tenant_context(tenant.id), sealed) {
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
    Ok(TenantEntry {
        tenant,
        openai_credential,
    })
}

/// A live key's entry and hash, if its row can be read.
fn key_entry(row: &KeyRow) -> Option<(KeyHash, KeyEntry)> {
    let hash = KeyHash::try_from(row.hash.as_slice()).ok()?;
    let scope = KeyScope::from_db(&row.scope)?;
    let limits = crate::catalog::limits(
        row.tokens_per_minute,
        row.requests_per_minute,
        row.monthly_tokens,
        row.monthly_budget,
    )
    .ok()?;
    Some((
        hash,
        KeyEntry {
            id: row.id,
            tenant_id: row.tenant_id,
            scope,
            expires_at: row.expires_at,
            limits,
        },
    ))
}

/// Opens a sealed upstream credential: a key, or an Entra ID credential's stored form.
pub(crate) fn open_auth(
    master: &MasterKey,
    context: &str,
    sealed: &[u8],
) -> Result<UpstreamAuth, ()> {
    let secret = master.open(context, sealed).map_err(|_| ())?;
    UpstreamAuth::from_stored(secret).map_err(|_| ())
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
