//! [`Registry`]: the rules of the registry (validation, placement, ownership) over a
//! [`Store`], and the in-memory [`Snapshot`] the hot path reads.
//!
//! The view follows the store's change log (migration 0006): after a write here, when another
//! replica writes (on Postgres, LISTEN/NOTIFY wakes every replica) and on a one-second poll
//! (a notification lost with a connection is caught up), each replica reads the change rows
//! after the last one it applied and re-reads only the tenants and keys they name; a catalog
//! change (resources, pools, services, templates: rare, and every tenant's view depends on
//! it) reads everything. A full read also runs every `BULKHEAD_REGISTRY_REFRESH_SECONDS` as a
//! consistency check. Sequence numbers become visible in commit order, not in the order they
//! were taken, and a rolled-back write leaves a hole: a hole is waited for ([`GAP_WAIT`])
//! before it is passed, and what was applied above it is not applied twice.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, SubsecRound, Utc};
use entra::{Credential, CredentialSpec, UpstreamAuth};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::crypto::{generate_api_key, hash_api_key, MasterKey};
use crate::model::{
    ApiKey, ApiKeyPatch, AuthView, Deployment, DeploymentKind, DeploymentType, IndexTemplate,
    KeyScope, Member, NewApiKey, NewDeployment, NewIndexTemplate, NewOpenAiResource, NewPool,
    NewSearchService, NewTenant, NewTenantWithKeys, Onboarded, OpenAiPlacementSpec, OpenAiResource,
    Page, Pool, ResponseCacheSettings, SearchMove, SearchPlacement, SearchService, Tenant,
    TenantFilter, TenantPatch, TenantStatus, RESERVED_FIELD_PREFIX,
};
use crate::names::{DataZone, DeploymentName, ModelAlias, ResourceName, TenantSlug};
use crate::prices::{Micros, NewPrice, Price};
use crate::snapshot::{resource_context, service_context, tenant_context, Snapshot};
use crate::store::{
    ConsoleSessionRow, DeploymentRow, KeyLimitsChange, KeyRow, MemberRow, Owned, PoolRow, PriceRow,
    ResourceRow, SealedRow, ServiceRow, Store, TemplateRow, TenantRecord, TenantRow,
};
use crate::RegistryError;

type Result<T> = std::result::Result<T, RegistryError>;

/// The current time at the precision both stores keep (microseconds), so what a write
/// returns equals what a later read returns.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// What [`Registry::reseal_credentials`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResealReport {
    /// The id of the key everything is now sealed under (a hash prefix, not the key).
    pub primary_key_id: String,
    pub resealed: u64,
    pub already_current: u64,
    /// Changed by another writer between the read and the write: that writer sealed it anew.
    pub changed_meanwhile: u64,
    /// Opened by no configured key: left as it was.
    pub unreadable: u64,
}

const MAX_MEMBERS: usize = 64;
const MAX_PRIORITY: u32 = 1000;
const MAX_WEIGHT: u32 = 1000;
const MAX_PAGE: u32 = 200;
/// The most tenants one bulk onboarding takes.
pub const MAX_BATCH: usize = 1000;
/// How many items of a bulk onboarding are written at once (each its own transaction).
const BATCH_WRITERS: usize = 4;

/// How long a hole in the change log's sequence numbers is waited for (a write still being
/// committed) before it is taken for a rolled-back write and passed.
pub const GAP_WAIT: Duration = Duration::from_secs(10);

/// Change rows read per query while catching up.
const CHANGES_PER_READ: u32 = 2_000;

/// Where this replica is in the change log.
#[derive(Debug, Default)]
struct Cursor {
    /// Every change up to this sequence number is applied.
    applied: i64,
    /// Changes above `applied` already applied (a hole below them is being waited for).
    above: BTreeSet<i64>,
    /// Since when the hole right above `applied` has been seen.
    gap_since: Option<Instant>,
}

impl Cursor {
    fn at(mark: i64) -> Self {
        Self {
            applied: mark,
            ..Self::default()
        }
    }

    /// Whether the change `seq` still has to be applied.
    fn wants(&self, seq: i64) -> bool {
        seq > self.applied && !self.above.contains(&seq)
    }

    /// Records `seq` as applied and moves `applied` up as far as there is no hole; a hole
    /// older than [`GAP_WAIT`] is passed.
    fn applied(&mut self, seqs: impl IntoIterator<Item = i64>, now: Instant) {
        self.above
            .extend(seqs.into_iter().filter(|s| *s > self.applied));
        loop {
            while self.above.remove(&(self.applied + 1)) {
                self.applied += 1;
            }
            let Some(&next) = self.above.first() else {
                self.gap_since = None;
                return;
            };
            let since = *self.gap_since.get_or_insert(now);
            if now.duration_since(since) < GAP_WAIT {
                return;
            }
            // Waited long enough: the missing numbers belong to writes that were rolled back.
            self.applied = next - 1;
            self.gap_since = None;
        }
    }
}

/// How the view has been kept current since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewCounters {
    /// Change rows applied without reading everything.
    pub changes_applied: u64,
    /// Times everything was read (start, catalog changes, the periodic check, falling behind).
    pub full_reloads: u64,
    /// The last change-log sequence number the view includes.
    pub mark: i64,
}

pub struct Registry {
    store: Arc<dyn Store>,
    master: MasterKey,
    snapshot: ArcSwap<Snapshot>,
    reload_lock: tokio::sync::Mutex<Cursor>,
    changes_applied: AtomicU64,
    full_reloads: AtomicU64,
    /// False while the last attempt to reach the store failed; the data plane keeps serving
    /// from the last good snapshot meanwhile.
    store_healthy: AtomicBool,
}

impl Registry {
    /// Applies migrations, reads the registry once and returns it ready to serve.
    pub async fn open(store: Arc<dyn Store>, master: MasterKey) -> Result<Arc<Self>> {
        store.migrate().await?;
        let registry = Arc::new(Self {
            store,
            master,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            reload_lock: tokio::sync::Mutex::new(Cursor::default()),
            changes_applied: AtomicU64::new(0),
            full_reloads: AtomicU64::new(0),
            store_healthy: AtomicBool::new(true),
        });
        registry.reload().await?;
        Ok(registry)
    }

    /// The current view. Cheap: an atomic load of an `Arc`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Whether the store answers with every migration applied.
    pub async fn ready(&self) -> Result<()> {
        let result = self.store.ready().await;
        self.store_healthy.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    /// Stores an admin console session.
    pub async fn insert_console_session(&self, session: &ConsoleSessionRow) -> Result<()> {
        self.store.insert_console_session(session).await
    }

    /// The CSRF token of a live console session opened with the admin token `admin`
    /// fingerprints.
    pub async fn console_session(&self, id_hash: &str, admin: &str) -> Result<Option<String>> {
        self.store
            .console_session(id_hash, admin, chrono::Utc::now().timestamp())
            .await
    }

    pub async fn delete_console_session(&self, id_hash: &str) -> Result<bool> {
        self.store.delete_console_session(id_hash).await
    }

    pub fn store_healthy(&self) -> bool {
        self.store_healthy.load(Ordering::Relaxed)
    }

    /// How the view has been kept current.
    pub fn view_counters(&self) -> ViewCounters {
        ViewCounters {
            changes_applied: self.changes_applied.load(Ordering::Relaxed),
            full_reloads: self.full_reloads.load(Ordering::Relaxed),
            mark: self.snapshot.load().mark,
        }
    }

    /// Reads the whole registry and swaps the new view in.
    pub async fn reload(&self) -> Result<()> {
        let mut cursor = self.reload_lock.lock().await;
        self.reload_locked(&mut cursor).await
    }

    async fn reload_locked(&self, cursor: &mut Cursor) -> Result<()> {
        let rows = match self.store.load().await {
            Ok(rows) => rows,
            Err(error) => {
                self.store_healthy.store(false, Ordering::Relaxed);
                return Err(error);
            }
        };
        self.store_healthy.store(true, Ordering::Relaxed);
        let (snapshot, problems) = Snapshot::build(rows, &self.master)?;
        for problem in problems {
            tracing::error!(problem, "registry row left out of the in-memory view");
        }
        *cursor = Cursor::at(snapshot.mark);
        self.snapshot.store(Arc::new(snapshot));
        self.full_reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Applies the change log since the last change applied: the tenants and keys it names
    /// are read again and replaced in the view; a catalog change, or a log that no longer
    /// reaches back far enough, reads everything.
    pub async fn catch_up(&self) -> Result<()> {
        let mut cursor = self.reload_lock.lock().await;
        loop {
            let (changes, oldest) = match self
                .store
                .changes_since(cursor.applied, CHANGES_PER_READ)
                .await
            {
                Ok(found) => found,
                Err(error) => {
                    self.store_healthy.store(false, Ordering::Relaxed);
                    return Err(error);
                }
            };
            self.store_healthy.store(true, Ordering::Relaxed);
            if oldest.is_some_and(|oldest| oldest > cursor.applied + 1) && cursor.applied > 0 {
                // Rows this replica never read were pruned (or a hole sits right above
                // it): read everything.
                return self.reload_locked(&mut cursor).await;
            }
            let fresh: Vec<_> = changes.iter().filter(|c| cursor.wants(c.seq)).collect();
            if fresh.is_empty() {
                cursor.applied(std::iter::empty(), Instant::now());
                return Ok(());
            }
            if fresh.iter().any(|c| c.catalog) {
                return self.reload_locked(&mut cursor).await;
            }
            // A key's row names its tenant too; the tenant itself did not change.
            let tenant_ids: Vec<Uuid> = fresh
                .iter()
                .filter(|c| c.key_id.is_none())
                .filter_map(|c| c.tenant_id)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let key_ids: Vec<Uuid> = fresh
                .iter()
                .filter_map(|c| c.key_id)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let mut tenants = self.store.tenants_by_id(&tenant_ids).await?;
            let mut keys = self.store.live_keys_by_id(&key_ids).await?;
            let tenant_changes = tenant_ids
                .iter()
                .map(|id| {
                    let found = tenants.iter().position(|t| t.row.id == *id);
                    (*id, found.map(|i| tenants.swap_remove(i)))
                })
                .collect();
            let key_changes = key_ids
                .iter()
                .map(|id| {
                    let found = keys.iter().position(|k| k.id == *id);
                    (*id, found.map(|i| keys.swap_remove(i)))
                })
                .collect();
            let last = fresh.iter().map(|c| c.seq).max().unwrap_or(cursor.applied);
            let count = fresh.len() as u64;
            let seqs: Vec<i64> = fresh.iter().map(|c| c.seq).collect();
            let current = self.snapshot.load_full();
            let (next, problems) =
                current.with_changes(tenant_changes, key_changes, &self.master, last);
            for problem in problems {
                tracing::error!(problem, "registry row left out of the in-memory view");
            }
            self.snapshot.store(Arc::new(next));
            self.changes_applied.fetch_add(count, Ordering::Relaxed);
            cursor.applied(seqs, Instant::now());
            if changes.len() < CHANGES_PER_READ as usize {
                return Ok(());
            }
        }
    }

    async fn catch_up_logged(&self) {
        if let Err(error) = self.catch_up().await {
            tracing::warn!(%error, "registry catch-up failed; serving the last good view");
        }
    }

    /// Keeps the view current: the change log is applied on every change notification (on
    /// Postgres) and every second; everything is read again every `interval`, and after a
    /// reconnect of the listener.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let registry = Arc::clone(self);
        tokio::spawn(async move {
            let poll = Duration::from_secs(1);
            let mut full =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let listener = match registry.store.listener().await {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "registry change listener unavailable; retrying");
                        registry.store_healthy.store(false, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // Whatever was written before the listener was there (since the view was
                // read, or while it was lost) is in the change log: catch up from it (a full
                // read only if the log no longer holds it), not read everything again.
                registry.catch_up_logged().await;
                let Some(mut listener) = listener else {
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(poll) => registry.catch_up_logged().await,
                            _ = full.tick() => registry.check().await,
                        }
                    }
                };
                loop {
                    tokio::select! {
                        received = listener.try_recv() => match received {
                            Ok(Some(_)) => {
                                // Coalesce a burst of notifications into one catch-up.
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                while listener.next_buffered().is_some() {}
                                registry.catch_up_logged().await;
                            }
                            Ok(None) => registry.reload_logged().await,
                            Err(error) => {
                                tracing::warn!(%error, "registry change listener lost; reconnecting");
                                registry.store_healthy.store(false, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                break;
                            }
                        },
                        () = tokio::time::sleep(poll) => registry.catch_up_logged().await,
                        _ = full.tick() => registry.check().await,
                    }
                }
            }
        })
    }

    /// The periodic consistency check: everything read again, and the change log pruned.
    async fn check(&self) {
        self.reload_logged().await;
        match self.store.prune_changes().await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "registry change log pruned"),
            Err(error) => tracing::debug!(%error, "registry change log not pruned"),
        }
    }

    async fn reload_logged(&self) {
        if let Err(error) = self.reload().await {
            tracing::warn!(%error, "registry reload failed; serving the last good view");
        }
    }

    async fn catalog(&self) -> Result<Catalog> {
        Catalog::from_rows(self.store.catalog().await?)
    }

    /// Applies a write to the view (through the change log, like every other replica); the
    /// write itself succeeded, so a failure here is only logged (the watcher will catch up).
    async fn written(&self) {
        self.catch_up_logged().await;
    }

    // ---- Master key rotation ----------------------------------------------------------

    /// Seals every stored credential that is not yet under the primary master key (or still
    /// in the format before key ids) again under it. Safe to repeat and to run on several
    /// replicas at once: a row is only replaced if it still holds what was read. A credential
    /// that no configured key opens is counted, never touched.
    pub async fn reseal_credentials(&self) -> Result<ResealReport> {
        let rows = self.store.load().await?;
        let mut report = ResealReport {
            primary_key_id: hex::encode(self.master.primary_id()),
            ..ResealReport::default()
        };
        let mut sealed: Vec<(SealedRow, String, Vec<u8>)> = Vec::new();
        for row in rows.catalog.resources {
            sealed.push((
                SealedRow::Resource(row.id),
                resource_context(&row.name),
                row.credential,
            ));
        }
        for row in rows.catalog.services {
            sealed.push((
                SealedRow::Service(row.id),
                service_context(&row.name),
                row.credential,
            ));
        }
        for record in rows.tenants {
            if let Some(credential) = record.row.openai_credential {
                sealed.push((
                    SealedRow::Tenant(record.row.id),
                    tenant_context(record.row.id),
                    credential,
                ));
            }
        }
        for (row, context, old) in sealed {
            if !self.master.needs_reseal(&old) {
                report.already_current += 1;
                continue;
            }
            let Ok(secret) = self.master.open(&context, &old) else {
                tracing::error!(
                    ?row,
                    "a stored credential opens under no configured master key"
                );
                report.unreadable += 1;
                continue;
            };
            let new = self.master.seal(&context, &secret)?;
            if self.store.reseal(row, &old, &new).await? {
                report.resealed += 1;
            } else {
                report.changed_meanwhile += 1;
            }
        }
        if report.resealed > 0 {
            self.written().await;
        }
        Ok(report)
    }

    // ---- Azure OpenAI resources -------------------------------------------------------

    pub async fn create_resource(&self, new: NewOpenAiResource) -> Result<OpenAiResource> {
        let auth = upstream_auth("", new.api_key.as_ref(), new.auth.as_ref(), false)?;
        let row = ResourceRow {
            id: Uuid::now_v7(),
            name: new.name.to_string(),
            endpoint: new.endpoint.to_string(),
            region: new.region.to_string(),
            data_zone: new.data_zone.as_ref().map(ToString::to_string),
            credential: self
                .master
                .seal(&resource_context(&new.name), &auth.to_stored())?,
            owner_tenant: new.owner_tenant.as_ref().map(ToString::to_string),
            created_at: now(),
        };
        self.store.insert_resource(&row).await?;
        self.written().await;
        Ok(OpenAiResource {
            id: row.id,
            name: new.name,
            endpoint: new.endpoint,
            region: new.region,
            data_zone: new.data_zone,
            owner_tenant: new.owner_tenant,
            created_at: row.created_at,
            auth: Some(AuthView::of(&auth)),
        })
    }

    pub async fn resources(&self) -> Result<Vec<OpenAiResource>> {
        Ok(self
            .catalog()
            .await?
            .resources
            .into_values()
            .map(|e| OpenAiResource {
                auth: Some(self.auth_view(&resource_context(&e.view.name), &e.sealed)),
                ..e.view
            })
            .collect())
    }

    /// The kind and principal of a sealed upstream credential, for the admin reads.
    fn auth_view(&self, context: &str, sealed: &[u8]) -> AuthView {
        crate::snapshot::open_auth(&self.master, context, sealed)
            .ok()
            .map_or(
                AuthView {
                    kind: "unreadable",
                    client_id: None,
                },
                |auth| AuthView::of(&auth),
            )
    }

    pub async fn delete_resource(&self, name: &str) -> Result<()> {
        if !self.store.delete_resource(name).await? {
            return Err(RegistryError::not_found("resource", name));
        }
        self.written().await;
        Ok(())
    }

    pub async fn create_deployment(&self, new: NewDeployment) -> Result<Deployment> {
        let catalog = self.catalog().await?;
        let resource = catalog.resources.get(&new.resource).ok_or_else(|| {
            RegistryError::invalid("resource", format!("no resource named '{}'", new.resource))
        })?;
        if let (Some(resource_owner), Some(owner)) =
            (&resource.view.owner_tenant, &new.owner_tenant)
        {
            if resource_owner != owner {
                return Err(RegistryError::invalid(
                    "owner_tenant",
                    "a deployment in a tenant's resource belongs to that tenant",
                ));
            }
        }
        let model = new.model.trim();
        if model.is_empty() || model.len() > 100 {
            return Err(RegistryError::invalid(
                "model",
                "must be 1 to 100 characters",
            ));
        }
        let deployment_type = new
            .deployment_type
            .unwrap_or_else(|| DeploymentType::default_for(new.kind));
        if (deployment_type == DeploymentType::Provisioned)
            != (new.kind == DeploymentKind::Provisioned)
        {
            return Err(RegistryError::invalid(
                "deployment_type",
                "a provisioned deployment has deployment_type 'provisioned', and only it does",
            ));
        }
        let model_version = match new.model_version.as_deref() {
            None => None,
            Some(v)
                if !v.is_empty()
                    && v.len() <= 32
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
            {
                Some(v.to_owned())
            }
            Some(_) => {
                return Err(RegistryError::invalid(
                    "model_version",
                    "must be 1 to 32 letters, digits, '-' or '.'",
                ))
            }
        };
        let row = DeploymentRow {
            id: Uuid::now_v7(),
            resource_id: resource.view.id,
            name: new.name.to_string(),
            model: model.to_owned(),
            kind: new.kind.as_str().to_owned(),
            capacity_tpm: to_i64("capacity_tpm", new.capacity_tpm)?,
            owner_tenant: new.owner_tenant.as_ref().map(ToString::to_string),
            created_at: now(),
            deployment_type: Some(deployment_type.as_str().to_owned()),
            model_version: model_version.clone(),
        };
        self.store.insert_deployment(&row).await?;
        self.written().await;
        Ok(Deployment {
            id: row.id,
            resource: new.resource,
            name: new.name,
            model: row.model,
            model_version,
            kind: new.kind,
            deployment_type,
            capacity_tpm: new.capacity_tpm,
            owner_tenant: new.owner_tenant,
            created_at: row.created_at,
        })
    }

    pub async fn deployments(&self) -> Result<Vec<Deployment>> {
        Ok(self
            .catalog()
            .await?
            .deployments
            .into_values()
            .map(|e| e.view)
            .collect())
    }

    pub async fn delete_deployment(&self, resource: &str, name: &str) -> Result<()> {
        let catalog = self.catalog().await?;
        let not_found = || RegistryError::not_found("deployment", format!("{resource}/{name}"));
        let resource = ResourceName::parse(resource).map_err(|_| not_found())?;
        let entry = catalog.resources.get(&resource).ok_or_else(not_found)?;
        DeploymentName::parse(name).map_err(|_| not_found())?;
        if !self.store.delete_deployment(entry.view.id, name).await? {
            return Err(not_found());
        }
        self.written().await;
        Ok(())
    }

    // ---- shared pools -----------------------------------------------------------------

    pub async fn create_pool(&self, new: NewPool) -> Result<Pool> {
        let catalog = self.catalog().await?;
        let members =
            resolve_members(
                &catalog,
                "members",
                &new.members,
                |deployment| match &deployment.owner {
                    None => Ok(()),
                    Some(_) => Err("belongs to a tenant and cannot be in a shared pool".into()),
                },
            )?;
        let row = PoolRow {
            id: Uuid::now_v7(),
            alias: new.alias.to_string(),
            created_at: now(),
        };
        let rows: Vec<MemberRow> = members
            .iter()
            .map(|(id, m)| member_row(row.id, &new.alias, *id, m))
            .collect();
        self.store.insert_pool(&row, &rows).await?;
        self.written().await;
        Ok(Pool {
            id: row.id,
            alias: new.alias,
            members: new.members,
            created_at: row.created_at,
        })
    }

    pub async fn pools(&self) -> Result<Vec<Pool>> {
        Ok(self.catalog().await?.pools.into_values().collect())
    }

    pub async fn delete_pool(&self, alias: &str) -> Result<()> {
        if !self.store.delete_pool(alias).await? {
            return Err(RegistryError::not_found("pool", alias));
        }
        self.written().await;
        Ok(())
    }

    // ---- search services and index templates -------------------------------------------

    pub async fn create_service(&self, new: NewSearchService) -> Result<SearchService> {
        let auth = upstream_auth("", new.api_key.as_ref(), new.auth.as_ref(), false)?;
        if new.index_capacity == 0 || new.index_capacity > 10_000 {
            return Err(RegistryError::invalid(
                "index_capacity",
                "must be 1 to 10000",
            ));
        }
        let row = ServiceRow {
            id: Uuid::now_v7(),
            name: new.name.to_string(),
            endpoint: new.endpoint.to_string(),
            region: new.region.to_string(),
            data_zone: new.data_zone.as_ref().map(ToString::to_string),
            credential: self
                .master
                .seal(&service_context(&new.name), &auth.to_stored())?,
            owner_tenant: new.owner_tenant.as_ref().map(ToString::to_string),
            index_capacity: i32::try_from(new.index_capacity).unwrap_or(i32::MAX),
            created_at: now(),
        };
        self.store.insert_service(&row).await?;
        self.written().await;
        Ok(SearchService {
            id: row.id,
            name: new.name,
            endpoint: new.endpoint,
            region: new.region,
            data_zone: new.data_zone,
            owner_tenant: new.owner_tenant,
            index_capacity: new.index_capacity,
            created_at: row.created_at,
            auth: Some(AuthView::of(&auth)),
        })
    }

    pub async fn services(&self) -> Result<Vec<SearchService>> {
        Ok(self
            .catalog()
            .await?
            .services
            .into_values()
            .map(|e| SearchService {
                auth: Some(self.auth_view(&service_context(&e.view.name), &e.sealed)),
                ..e.view
            })
            .collect())
    }

    pub async fn delete_service(&self, name: &str) -> Result<()> {
        if !self.store.delete_service(name).await? {
            return Err(RegistryError::not_found("search service", name));
        }
        self.written().await;
        Ok(())
    }

    pub async fn create_template(&self, new: NewIndexTemplate) -> Result<IndexTemplate> {
        check_index_definition(&new.definition)?;
        let row = TemplateRow {
            id: Uuid::now_v7(),
            name: new.name.to_string(),
            definition: sqlx::types::Json(new.definition.clone()),
            created_at: now(),
        };
        self.store.insert_template(&row).await?;
        self.written().await;
        Ok(IndexTemplate {
            id: row.id,
            name: new.name,
            definition: new.definition,
            created_at: row.created_at,
        })
    }

    pub async fn templates(&self) -> Result<Vec<IndexTemplate>> {
        Ok(self.catalog().await?.templates.into_values().collect())
    }

    pub async fn delete_template(&self, name: &str) -> Result<()> {
        if !self.store.delete_template(name).await? {
            return Err(RegistryError::not_found("index template", name));
        }
        self.written().await;
        Ok(())
    }

    // ---- prices -------------------------------------------------------------------------

    /// Adds a price. A price for one deployment must match that deployment's model and type
    /// (and version, when it names one); every price is in the table's one currency.
    pub async fn create_price(&self, new: NewPrice) -> Result<Price> {
        let created_at = now();
        crate::prices::check(&new, created_at)?;
        let catalog = self.catalog().await?;
        if let Some(reference) = &new.deployment {
            let Some(entry) = catalog.deployments.get(reference) else {
                return Err(RegistryError::invalid(
                    "deployment",
                    format!("deployment '{reference}' does not exist"),
                ));
            };
            let d = &entry.view;
            let version_differs = matches!(
                (&new.model_version, &d.model_version),
                (Some(wanted), Some(actual)) if wanted != actual
            ) || (new.model_version.is_some() && d.model_version.is_none());
            if d.model != new.model || d.deployment_type != new.deployment_type || version_differs {
                return Err(RegistryError::invalid(
                    "deployment",
                    format!(
                        "deployment '{reference}' runs {} {} as {}: the price must name the same \
                         model, version and deployment type",
                        d.model,
                        d.model_version.as_deref().unwrap_or("(any version)"),
                        d.deployment_type.as_str()
                    ),
                ));
            }
        }
        let effective_from = new
            .effective_from
            .map(|t| t.trunc_subsecs(6))
            .unwrap_or(created_at);
        let input = new.input_per_million;
        let price = Price {
            id: Uuid::now_v7(),
            model: new.model,
            model_version: new.model_version,
            deployment_type: new.deployment_type,
            deployment: new.deployment,
            currency: new.currency,
            input_per_million: input,
            cached_input_per_million: new.cached_input_per_million.unwrap_or(input),
            output_per_million: new.output_per_million.unwrap_or_default(),
            monthly_cost: new.monthly_cost,
            effective_from,
            created_at,
        };
        let signed = |m: Micros| i64::try_from(m.0).unwrap_or(i64::MAX);
        let row = PriceRow {
            id: price.id,
            model: price.model.clone(),
            model_version: price.model_version.clone().unwrap_or_default(),
            deployment_type: price.deployment_type.as_str().to_owned(),
            deployment: price
                .deployment
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            currency: price.currency.clone(),
            input_per_million: signed(input),
            cached_input_per_million: new.cached_input_per_million.map(signed),
            output_per_million: signed(price.output_per_million),
            monthly_cost: price.monthly_cost.map(signed),
            effective_from,
            created_at,
        };
        self.store.insert_price(&row).await?;
        self.written().await;
        Ok(price)
    }

    /// Every price, as stored (not the view: an admin reads what was just written).
    pub async fn prices(&self) -> Result<(Option<String>, Vec<Price>)> {
        let catalog = self.catalog().await?;
        let currency = catalog.prices.currency().map(str::to_owned);
        Ok((currency, catalog.prices.all().cloned().collect()))
    }

    /// Deletes a price that has not taken effect yet; one in force has priced calls already
    /// and stays (a correction is a new price from now on).
    pub async fn delete_price(&self, id: Uuid) -> Result<()> {
        match self.store.delete_future_price(id, now()).await? {
            Some(true) => {
                self.written().await;
                Ok(())
            }
            Some(false) => Err(RegistryError::Conflict(
                "the price is in force already: costs recorded with it are never rewritten; \
                 add a new price from now on instead"
                    .to_owned(),
            )),
            None => Err(RegistryError::not_found("price", id)),
        }
    }

    // ---- tenants ------------------------------------------------------------------------

    /// Onboards a tenant: validates the whole body and every placement rule, then writes it
    /// in one transaction (nothing is written on any error).
    pub async fn onboard(&self, new: NewTenant) -> Result<Tenant> {
        let catalog = self.catalog().await?;
        let record = self.tenant_record(&catalog, &new)?;
        self.store.insert_tenant(&record, &[]).await?;
        self.written().await;
        catalog.tenant(&record)
    }

    /// Onboards many tenants, each with the keys to issue it. Checked whole, written item by
    /// item: every item is checked first against the same rules as a single onboarding, and
    /// one that breaks a rule refuses the batch (`Invalid`, its field under `tenants[i]`) with
    /// nothing written. Then each item is written in its own transaction (the tenant, its
    /// placements and its keys, all or nothing) and answered on its own, in order: a slug
    /// taken (before, or by an earlier item) or a resource removed meanwhile fails that item
    /// alone. The in-memory view catches up once, after all of them.
    pub async fn onboard_many(
        &self,
        items: Vec<NewTenantWithKeys>,
    ) -> Result<Vec<Result<Onboarded>>> {
        use futures::StreamExt as _;
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(RegistryError::invalid(
                "tenants",
                format!("must hold 1 to {MAX_BATCH} tenants"),
            ));
        }
        let catalog = self.catalog().await?;
        let mut prepared = Vec::with_capacity(items.len());
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("tenants[{i}]");
            let record = self
                .tenant_record(&catalog, &item.tenant)
                .map_err(|error| error.within(&at))?;
            let keys = item
                .keys
                .iter()
                .enumerate()
                .map(|(k, new)| {
                    key_row(record.row.id, new)
                        .map_err(|error| error.within(&format!("{at}.keys[{k}]")))
                })
                .collect::<Result<Vec<_>>>()?;
            let earlier = *first_of.entry(item.tenant.slug.as_str()).or_insert(i);
            prepared.push((earlier, record, keys));
        }
        let results = futures::stream::iter(prepared.into_iter().enumerate())
            .map(|(i, (earlier, record, keys))| {
                let catalog = &catalog;
                async move {
                    if earlier != i {
                        return Err(RegistryError::Conflict(format!(
                            "slug '{}' is onboarded by tenants[{earlier}] of this batch",
                            record.row.slug
                        )));
                    }
                    let (rows, secrets): (Vec<KeyRow>, Vec<SecretString>) =
                        keys.into_iter().unzip();
                    self.store.insert_tenant(&record, &rows).await?;
                    let keys = rows
                        .iter()
                        .zip(secrets)
                        .map(|(row, secret)| Ok((key_view(row, &record.row.slug)?, secret)))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(Onboarded {
                        tenant: catalog.tenant(&record)?,
                        keys,
                    })
                }
            })
            .buffered(BATCH_WRITERS)
            .collect::<Vec<_>>()
            .await;
        if results.iter().any(Result::is_ok) {
            self.written().await;
        }
        Ok(results)
    }

    /// The rows of a new tenant, checked against the catalog; nothing is written.
    fn tenant_record(&self, catalog: &Catalog, new: &NewTenant) -> Result<TenantRecord> {
        check_display_name(&new.display_name)?;
        let id = Uuid::now_v7();
        let now = now();
        let mut row = TenantRow {
            id,
            slug: new.slug.to_string(),
            display_name: new.display_name.trim().to_owned(),
            status: TenantStatus::Active.as_str().to_owned(),
            data_zone: new.data_zone.as_ref().map(ToString::to_string),
            openai_isolation: None,
            openai_endpoint: None,
            openai_region: None,
            openai_credential: None,
            search_isolation: None,
            search_service_id: None,
            tokens_per_minute: opt_i64("limits.tokens_per_minute", new.limits.tokens_per_minute)?,
            requests_per_minute: opt_i64(
                "limits.requests_per_minute",
                new.limits.requests_per_minute,
            )?,
            monthly_tokens: opt_i64("limits.monthly_tokens", new.limits.monthly_tokens)?,
            monthly_budget: budget(new.limits.monthly_budget),
            context_overflow: new.context_overflow.as_str().to_owned(),
            created_at: now,
            updated_at: now,
            search_move: None,
            response_cache_ttl_seconds: None,
            response_cache_max_bytes: None,
        };
        set_response_cache(&mut row, new.response_cache.as_ref())?;
        let mut record = TenantRecord {
            row,
            members: Vec::new(),
            resources: Vec::new(),
        };
        if let Some(spec) = &new.openai {
            self.place_openai(
                catalog,
                &new.slug,
                new.data_zone.as_ref(),
                spec,
                &mut record,
            )?;
        }
        if let Some(search) = &new.search {
            place_search(
                catalog,
                &new.slug,
                new.data_zone.as_ref(),
                search,
                &mut record,
            )?;
        }
        Ok(record)
    }

    pub async fn tenant(&self, slug: &str) -> Result<Tenant> {
        let record = self.record(slug).await?;
        self.catalog().await?.tenant(&record)
    }

    async fn record(&self, slug: &str) -> Result<TenantRecord> {
        self.store
            .tenant(slug)
            .await?
            .ok_or_else(|| RegistryError::not_found("tenant", slug))
    }

    /// Tenants in slug order, `limit` at a time, after the cursor `after`.
    pub async fn tenants(&self, after: Option<&str>, limit: Option<u32>) -> Result<Page<Tenant>> {
        self.tenants_matching(&TenantFilter::default(), after, limit)
            .await
    }

    /// The tenants that match `filter`, in slug order, `limit` at a time, after the cursor
    /// `after`: one page read from the store, never the whole registry.
    pub async fn tenants_matching(
        &self,
        filter: &TenantFilter,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Tenant>> {
        let limit = limit.unwrap_or(50);
        if limit == 0 || limit > MAX_PAGE {
            return Err(RegistryError::invalid(
                "limit",
                format!("must be 1 to {MAX_PAGE}"),
            ));
        }
        let records = self
            .store
            .tenants_after(after.unwrap_or(""), limit, filter)
            .await?;
        let catalog = self.catalog().await?;
        let data = records
            .iter()
            .map(|r| catalog.tenant(r))
            .collect::<Result<Vec<_>>>()?;
        let next = (data.len() == limit as usize)
            .then(|| data.last().map(|t| t.slug.to_string()))
            .flatten();
        Ok(Page { data, next })
    }

    /// Changes a tenant. Every rule is checked against the tenant as it would be after the
    /// change (a new data zone must hold for the placement it keeps).
    pub async fn update_tenant(&self, slug: &str, patch: TenantPatch) -> Result<Tenant> {
        let mut record = self.record(slug).await?;
        let catalog = self.catalog().await?;
        let current = catalog.tenant(&record)?;
        if current.status == TenantStatus::Offboarding {
            return Err(RegistryError::Conflict(
                "the tenant is being offboarded".into(),
            ));
        }
        if let Some(name) = &patch.display_name {
            check_display_name(name)?;
            record.row.display_name = name.trim().to_owned();
        }
        match patch.status {
            Some(TenantStatus::Offboarding) => {
                return Err(RegistryError::invalid(
                    "status",
                    "offboarding is started with DELETE",
                ))
            }
            Some(status) => record.row.status = status.as_str().to_owned(),
            None => {}
        }
        let zone = match &patch.data_zone {
            Some(zone) => zone.clone(),
            None => current.data_zone.clone(),
        };
        record.row.data_zone = zone.as_ref().map(ToString::to_string);
        if let Some(limits) = patch.limits {
            let mut merged = current.limits;
            limits.apply(&mut merged);
            record.row.tokens_per_minute =
                opt_i64("limits.tokens_per_minute", merged.tokens_per_minute)?;
            record.row.requests_per_minute =
                opt_i64("limits.requests_per_minute", merged.requests_per_minute)?;
            record.row.monthly_tokens = opt_i64("limits.monthly_tokens", merged.monthly_tokens)?;
            record.row.monthly_budget = budget(merged.monthly_budget);
        }
        if let Some(policy) = patch.context_overflow {
            record.row.context_overflow = policy.as_str().to_owned();
        }
        if let Some(cache) = &patch.response_cache {
            set_response_cache(&mut record.row, cache.as_ref())?;
        }
        match &patch.openai {
            Some(spec) => {
                clear_openai(&mut record);
                if let Some(spec) = spec {
                    self.place_openai(&catalog, &current.slug, zone.as_ref(), spec, &mut record)?;
                }
            }
            None => check_openai_zone(&catalog, zone.as_ref(), &record)?,
        }
        if current.search_move.is_some() && (patch.search.is_some() || patch.data_zone.is_some()) {
            return Err(RegistryError::Conflict(
                "the tenant's search placement is being moved; wait for the move or cancel it"
                    .into(),
            ));
        }
        let search = match &patch.search {
            Some(search) => search.clone(),
            None => current.search.clone(),
        };
        record.row.search_isolation = None;
        record.row.search_service_id = None;
        if let Some(search) = &search {
            place_search(&catalog, &current.slug, zone.as_ref(), search, &mut record)?;
        }
        record.row.updated_at = now();
        self.store.update_tenant(&record).await?;
        self.written().await;
        catalog.tenant(&record)
    }

    /// Whether `placement` would be accepted for the tenant now (service, ownership, data
    /// zone), without changing anything.
    pub async fn check_search_placement(
        &self,
        slug: &str,
        placement: &SearchPlacement,
    ) -> Result<()> {
        let mut record = self.record(slug).await?;
        let catalog = self.catalog().await?;
        let current = catalog.tenant(&record)?;
        place_search(
            &catalog,
            &current.slug,
            current.data_zone.as_ref(),
            placement,
            &mut record,
        )
    }

    /// Records (or, with `None`, clears) the tenant's search move in progress. Every replica
    /// sees it through the registry's change notification.
    pub async fn set_search_move(
        &self,
        slug: &str,
        search_move: Option<&SearchMove>,
    ) -> Result<()> {
        let mut record = self.record(slug).await?;
        record.row.search_move = search_move
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        record.row.updated_at = now();
        self.store.update_tenant(&record).await?;
        self.written().await;
        Ok(())
    }

    /// Switches the tenant's search placement to `to` and ends its move, in one write: every
    /// replica reads and writes the new placement from the same registry change.
    pub async fn switch_search(&self, slug: &str, to: &SearchPlacement) -> Result<Tenant> {
        let mut record = self.record(slug).await?;
        let catalog = self.catalog().await?;
        let current = catalog.tenant(&record)?;
        place_search(
            &catalog,
            &current.slug,
            current.data_zone.as_ref(),
            to,
            &mut record,
        )?;
        record.row.search_move = None;
        record.row.updated_at = now();
        self.store.update_tenant(&record).await?;
        self.written().await;
        catalog.tenant(&record)
    }

    /// Sets a tenant's status without the other rules of a patch (offboarding's first step).
    pub async fn set_status(&self, slug: &str, status: TenantStatus) -> Result<()> {
        let mut record = self.record(slug).await?;
        if record.row.status != status.as_str() {
            record.row.status = status.as_str().to_owned();
            record.row.updated_at = now();
            self.store.update_tenant(&record).await?;
            self.written().await;
        }
        Ok(())
    }

    /// Offboards a tenant: it is refused everywhere at once (status `offboarding`), then its
    /// keys, placements and the resources reserved for it are deleted. A failure leaves it
    /// `offboarding`, and DELETE may be repeated.
    pub async fn offboard(&self, slug: &str) -> Result<()> {
        let mut record = self.record(slug).await?;
        if record.row.status != TenantStatus::Offboarding.as_str() {
            record.row.status = TenantStatus::Offboarding.as_str().to_owned();
            record.row.updated_at = now();
            self.store.update_tenant(&record).await?;
            self.written().await;
        }
        let result = self
            .store
            .delete_tenant(Owned {
                tenant_id: record.row.id,
                slug,
            })
            .await;
        self.written().await;
        result
    }

    fn place_openai(
        &self,
        catalog: &Catalog,
        slug: &TenantSlug,
        zone: Option<&DataZone>,
        spec: &OpenAiPlacementSpec,
        record: &mut TenantRecord,
    ) -> Result<()> {
        let owned_by_tenant = |owner: &Option<TenantSlug>| -> std::result::Result<(), String> {
            match owner {
                Some(owner) if owner == slug => Ok(()),
                Some(_) => Err("belongs to another tenant".into()),
                None => Err(
                    "is shared; a dedicated placement needs one reserved for this tenant".into(),
                ),
            }
        };
        match spec {
            OpenAiPlacementSpec::Shared {} => {
                record.row.openai_isolation = Some("shared".into());
            }
            OpenAiPlacementSpec::DedicatedDeployment { models } => {
                if models.is_empty() {
                    return Err(RegistryError::invalid(
                        "openai.models",
                        "must name at least one model",
                    ));
                }
                for (alias, members) in models {
                    let field = format!("openai.models.{alias}");
                    let resolved = resolve_members(catalog, &field, members, |deployment| {
                        owned_by_tenant(&deployment.owner)?;
                        check_zone(catalog, zone, deployment.resource_id)
                    })?;
                    record.members.extend(
                        resolved
                            .iter()
                            .map(|(id, m)| member_row(record.row.id, alias, *id, m)),
                    );
                }
                record.row.openai_isolation = Some("dedicated_deployment".into());
            }
            OpenAiPlacementSpec::DedicatedResource { resources } => {
                if resources.is_empty() || resources.len() > MAX_MEMBERS {
                    return Err(RegistryError::invalid(
                        "openai.resources",
                        format!("must name 1 to {MAX_MEMBERS} resources"),
                    ));
                }
                let mut seen = HashSet::new();
                for (i, name) in resources.iter().enumerate() {
                    let field = format!("openai.resources[{i}]");
                    if !seen.insert(name) {
                        return Err(RegistryError::invalid(field, "is listed twice"));
                    }
                    let entry = catalog.resources.get(name).ok_or_else(|| {
                        RegistryError::invalid(&field, format!("no resource named '{name}'"))
                    })?;
                    owned_by_tenant(&entry.view.owner_tenant)
                        .and_then(|()| check_zone(catalog, zone, entry.view.id))
                        .map_err(|m| {
                            RegistryError::invalid(&field, format!("resource '{name}' {m}"))
                        })?;
                    record.resources.push(entry.view.id);
                }
                record.row.openai_isolation = Some("dedicated_resource".into());
            }
            OpenAiPlacementSpec::TenantProvided {
                endpoint,
                api_key,
                auth,
                region,
            } => {
                let auth = upstream_auth("openai.", api_key.as_ref(), auth.as_ref(), true)?;
                record.row.openai_isolation = Some("tenant_provided".into());
                record.row.openai_endpoint = Some(endpoint.to_string());
                record.row.openai_region = Some(region.to_string());
                record.row.openai_credential = Some(
                    self.master
                        .seal(&tenant_context(record.row.id), &auth.to_stored())?,
                );
            }
        }
        Ok(())
    }

    // ---- API keys -----------------------------------------------------------------------

    /// Issues a key; the secret is returned here and never again.
    pub async fn create_key(&self, slug: &str, new: NewApiKey) -> Result<(ApiKey, SecretString)> {
        let record = self.record(slug).await?;
        let (row, secret) = key_row(record.row.id, &new)?;
        self.store.insert_key(&row).await?;
        self.written().await;
        Ok((key_view(&row, slug)?, secret))
    }

    pub async fn keys(&self, slug: &str) -> Result<Vec<ApiKey>> {
        let record = self.record(slug).await?;
        self.store
            .keys(record.row.id)
            .await?
            .iter()
            .map(|row| key_view(row, slug))
            .collect()
    }

    pub async fn revoke_key(&self, slug: &str, id: &str) -> Result<()> {
        let record = self.record(slug).await?;
        let not_found = || RegistryError::not_found("key", id);
        let id = Uuid::parse_str(id).map_err(|_| not_found())?;
        if !self.store.revoke_key(record.row.id, id, now()).await? {
            return Err(not_found());
        }
        self.written().await;
        Ok(())
    }

    /// Changes a key's limits: an absent limit keeps its value, `null` removes it. Only a key
    /// of the tenant `slug` can be changed through it; any other id is not found.
    pub async fn update_key(&self, slug: &str, id: &str, patch: ApiKeyPatch) -> Result<ApiKey> {
        let record = self.record(slug).await?;
        let not_found = || RegistryError::not_found("key", id);
        let id = Uuid::parse_str(id).map_err(|_| not_found())?;
        let limits = patch.limits.unwrap_or_default();
        let change = KeyLimitsChange {
            tokens_per_minute: patch_i64("limits.tokens_per_minute", limits.tokens_per_minute)?,
            requests_per_minute: patch_i64(
                "limits.requests_per_minute",
                limits.requests_per_minute,
            )?,
            monthly_tokens: patch_i64("limits.monthly_tokens", limits.monthly_tokens)?,
            monthly_budget: limits.monthly_budget.map(budget),
        };
        let row = self
            .store
            .update_key_limits(record.row.id, id, &change)
            .await?
            .ok_or_else(not_found)?;
        self.written().await;
        key_view(&row, slug)
    }
}

fn key_view(row: &KeyRow, slug: &str) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.id,
        tenant: crate::catalog::parse("slug", slug, TenantSlug::parse)?,
        name: row.name.clone(),
        scope: KeyScope::from_db(&row.scope)
            .ok_or_else(|| RegistryError::Corrupt(format!("scope {}", row.scope)))?,
        hint: row.hint.clone(),
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
        limits: crate::catalog::limits(
            row.tokens_per_minute,
            row.requests_per_minute,
            row.monthly_tokens,
            row.monthly_budget,
        )?,
        created_at: row.created_at,
    })
}

fn clear_openai(record: &mut TenantRecord) {
    record.row.openai_isolation = None;
    record.row.openai_endpoint = None;
    record.row.openai_region = None;
    record.row.openai_credential = None;
    record.members.clear();
    record.resources.clear();
}

/// Validates a list of members: each deployment exists, appears once, has sane priority and
/// weight, and passes `allowed`. Returns each member with its deployment id.
fn resolve_members<'m>(
    catalog: &Catalog,
    field: &str,
    members: &'m [Member],
    allowed: impl Fn(&crate::catalog::DeploymentEntry) -> std::result::Result<(), String>,
) -> Result<Vec<(Uuid, &'m Member)>> {
    if members.is_empty() || members.len() > MAX_MEMBERS {
        return Err(RegistryError::invalid(
            field,
            format!("must list 1 to {MAX_MEMBERS} members"),
        ));
    }
    let mut seen = HashSet::new();
    let mut resolved = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let field = format!("{field}[{i}]");
        if !seen.insert(&member.deployment) {
            return Err(RegistryError::invalid(
                format!("{field}.deployment"),
                "is listed twice",
            ));
        }
        if member.priority > MAX_PRIORITY {
            return Err(RegistryError::invalid(
                format!("{field}.priority"),
                format!("must be 0 to {MAX_PRIORITY}"),
            ));
        }
        if member.weight == 0 || member.weight > MAX_WEIGHT {
            return Err(RegistryError::invalid(
                format!("{field}.weight"),
                format!("must be 1 to {MAX_WEIGHT}"),
            ));
        }
        let entry = catalog.deployments.get(&member.deployment).ok_or_else(|| {
            RegistryError::invalid(
                format!("{field}.deployment"),
                format!("no deployment '{}'", member.deployment),
            )
        })?;
        allowed(entry).map_err(|m| {
            RegistryError::invalid(
                format!("{field}.deployment"),
                format!("deployment '{}' {m}", member.deployment),
            )
        })?;
        resolved.push((entry.view.id, member));
    }
    Ok(resolved)
}

fn member_row(owner: Uuid, alias: &ModelAlias, deployment_id: Uuid, member: &Member) -> MemberRow {
    MemberRow {
        owner,
        alias: alias.to_string(),
        deployment_id,
        // Bounded by MAX_PRIORITY and MAX_WEIGHT above.
        priority: i32::try_from(member.priority).unwrap_or(i32::MAX),
        weight: i32::try_from(member.weight).unwrap_or(i32::MAX),
    }
}

/// A tenant with a data zone may only be placed on resources in that zone.
fn check_zone(
    catalog: &Catalog,
    zone: Option<&DataZone>,
    resource_id: Uuid,
) -> std::result::Result<(), String> {
    let Some(zone) = zone else { return Ok(()) };
    let resource_zone = catalog
        .resources
        .values()
        .find(|r| r.view.id == resource_id)
        .and_then(|r| r.view.data_zone.as_ref());
    match resource_zone {
        Some(z) if z == zone => Ok(()),
        Some(z) => Err(format!("is in data zone '{z}', not '{zone}'")),
        None => Err(format!("has no data zone; the tenant requires '{zone}'")),
    }
}

fn check_openai_zone(
    catalog: &Catalog,
    zone: Option<&DataZone>,
    record: &TenantRecord,
) -> Result<()> {
    let deployments = record.members.iter().filter_map(|m| {
        catalog
            .deployments
            .values()
            .find(|d| d.view.id == m.deployment_id)
            .map(|d| d.resource_id)
    });
    for resource_id in deployments.chain(record.resources.iter().copied()) {
        check_zone(catalog, zone, resource_id)
            .map_err(|m| RegistryError::invalid("data_zone", format!("a placed resource {m}")))?;
    }
    Ok(())
}

fn place_search(
    catalog: &Catalog,
    slug: &TenantSlug,
    zone: Option<&DataZone>,
    placement: &SearchPlacement,
    record: &mut TenantRecord,
) -> Result<()> {
    let name = placement.service();
    let field = "search.service";
    let entry = catalog.services.get(name).ok_or_else(|| {
        RegistryError::invalid(field, format!("no search service named '{name}'"))
    })?;
    match (&entry.view.owner_tenant, placement.needs_owned_service()) {
        (Some(owner), true) if owner == slug => {}
        (None, false) => {}
        (Some(owner), _) if owner != slug => {
            return Err(RegistryError::invalid(
                field,
                format!("service '{name}' belongs to another tenant"),
            ))
        }
        (_, true) => {
            return Err(RegistryError::invalid(
                field,
                format!(
                "dedicated_service needs a service reserved for this tenant; '{name}' is shared"
            ),
            ))
        }
        (_, false) => {
            return Err(RegistryError::invalid(
                field,
                format!(
                    "{} needs a shared service; '{name}' is reserved for this tenant",
                    placement.isolation()
                ),
            ))
        }
    }
    if let Some(zone) = zone {
        if entry.view.data_zone.as_ref() != Some(zone) {
            return Err(RegistryError::invalid(
                field,
                format!("service '{name}' is not in the tenant's data zone '{zone}'"),
            ));
        }
    }
    record.row.search_isolation = Some(placement.isolation().to_owned());
    record.row.search_service_id = Some(entry.view.id);
    Ok(())
}

fn check_display_name(name: &str) -> Result<()> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            "display_name",
            "must be 1 to 200 printable characters",
        ));
    }
    Ok(())
}

/// An upstream's one credential: `api_key` or `auth`, exactly one. An endpoint a tenant chose
/// only takes a key or the tenant's own service principal: the gateway's own identity (its
/// pod's or host's) would hand that endpoint a token for every resource the gateway may use.
fn upstream_auth(
    prefix: &str,
    api_key: Option<&SecretString>,
    auth: Option<&CredentialSpec>,
    chosen_by_tenant: bool,
) -> Result<UpstreamAuth> {
    match (api_key, auth) {
        (Some(key), None) => {
            check_secret(&format!("{prefix}api_key"), key)?;
            Ok(UpstreamAuth::ApiKey(key.clone()))
        }
        (None, Some(spec)) => {
            if chosen_by_tenant && spec.is_ambient() {
                return Err(RegistryError::invalid(
                    format!("{prefix}auth.kind"),
                    "must be client_secret for an endpoint the tenant provides: the gateway's own identity is never sent there",
                ));
            }
            let credential = Credential::new(spec.clone()).map_err(|e| {
                RegistryError::invalid(format!("{prefix}auth.{}", e.field), e.problem)
            })?;
            Ok(UpstreamAuth::Entra(credential))
        }
        (Some(_), Some(_)) => Err(RegistryError::invalid(
            format!("{prefix}auth"),
            "give either api_key or auth, not both",
        )),
        (None, None) => Err(RegistryError::invalid(
            format!("{prefix}api_key"),
            "is required (or auth, for Entra ID)",
        )),
    }
}

fn check_secret(field: &str, secret: &SecretString) -> Result<()> {
    let secret = secret.expose_secret();
    if secret.is_empty()
        || secret.len() > 4096
        || secret.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(RegistryError::invalid(
            field,
            "must be a non-empty key without spaces",
        ));
    }
    Ok(())
}

fn to_i64(field: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| RegistryError::invalid(field, "is too large"))
}

fn opt_i64(field: &str, value: Option<u64>) -> Result<Option<i64>> {
    value.map(|v| to_i64(field, v)).transpose()
}

/// A budget's column (micro-units never exceed [`crate::prices::MAX_MICROS`], far inside an i64).
fn budget(value: Option<Micros>) -> Option<i64> {
    value.map(|m| i64::try_from(m.0).unwrap_or(i64::MAX))
}

/// Checks a response cache setting and writes it into the row (`None`: off).
fn set_response_cache(row: &mut TenantRow, cache: Option<&ResponseCacheSettings>) -> Result<()> {
    let Some(cache) = cache else {
        row.response_cache_ttl_seconds = None;
        row.response_cache_max_bytes = None;
        return Ok(());
    };
    if cache.ttl_seconds == 0 || cache.ttl_seconds > ResponseCacheSettings::MAX_TTL_SECONDS {
        return Err(RegistryError::invalid(
            "response_cache.ttl_seconds",
            format!(
                "must be 1 to {} (30 days)",
                ResponseCacheSettings::MAX_TTL_SECONDS
            ),
        ));
    }
    if !(ResponseCacheSettings::MIN_BYTES..=ResponseCacheSettings::MAX_BYTES)
        .contains(&cache.max_bytes)
    {
        return Err(RegistryError::invalid(
            "response_cache.max_bytes",
            format!(
                "must be {} to {} (1 KiB to 1 TiB)",
                ResponseCacheSettings::MIN_BYTES,
                ResponseCacheSettings::MAX_BYTES
            ),
        ));
    }
    row.response_cache_ttl_seconds = Some(i32::try_from(cache.ttl_seconds).unwrap_or(i32::MAX));
    row.response_cache_max_bytes = Some(to_i64("response_cache.max_bytes", cache.max_bytes)?);
    Ok(())
}

fn patch_i64(field: &str, value: Option<Option<u64>>) -> Result<Option<Option<i64>>> {
    value.map(|v| opt_i64(field, v)).transpose()
}

const FIELD_TYPES: &[&str] = &[
    "Edm.String",
    "Edm.Int32",
    "Edm.Int64",
    "Edm.Double",
    "Edm.Boolean",
    "Edm.DateTimeOffset",
    "Edm.GeographyPoint",
    "Edm.Single",
    "Collection(Edm.String)",
    "Collection(Edm.Int32)",
    "Collection(Edm.Int64)",
    "Collection(Edm.Double)",
    "Collection(Edm.Boolean)",
    "Collection(Edm.DateTimeOffset)",
    "Collection(Edm.GeographyPoint)",
    "Collection(Edm.Single)",
];

/// An index template must define its fields like Azure does: unique names starting with a
/// letter, known types, exactly one `Edm.String` key, none of the gateway's reserved fields.
fn check_index_definition(definition: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let Some(fields) = definition.get("fields").and_then(|f| f.as_array()) else {
        return Err(RegistryError::invalid(
            "fields",
            "must be a non-empty array",
        ));
    };
    if fields.is_empty() || fields.len() > 1000 {
        return Err(RegistryError::invalid(
            "fields",
            "must hold 1 to 1000 fields",
        ));
    }
    let mut names = HashSet::new();
    let mut keys = 0;
    for (i, field) in fields.iter().enumerate() {
        let at = format!("fields[{i}]");
        let name = field
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let valid_name = name.len() <= 128
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(RegistryError::invalid(
                format!("{at}.name"),
                "must start with a letter and hold only letters, digits and underscores",
            ));
        }
        if name.to_ascii_lowercase().starts_with(RESERVED_FIELD_PREFIX) {
            return Err(RegistryError::invalid(
                format!("{at}.name"),
                format!(
                    "names starting with '{RESERVED_FIELD_PREFIX}' are reserved for the gateway"
                ),
            ));
        }
        if !names.insert(name.to_owned()) {
            return Err(RegistryError::invalid(
                format!("{at}.name"),
                "is defined twice",
            ));
        }
        let kind = field
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        if !FIELD_TYPES.contains(&kind) {
            return Err(RegistryError::invalid(
                format!("{at}.type"),
                format!("unknown type '{kind}'"),
            ));
        }
        if field.get("key").and_then(|k| k.as_bool()) == Some(true) {
            if kind != "Edm.String" {
                return Err(RegistryError::invalid(
                    format!("{at}.type"),
                    "the key field must be Edm.String",
                ));
            }
            keys += 1;
        }
    }
    if keys != 1 {
        return Err(RegistryError::invalid(
            "fields",
            "exactly one field must be the key",
        ));
    }
    Ok(())
}

/// A new key's row and its secret (shown once); nothing is written.
fn key_row(tenant_id: Uuid, new: &NewApiKey) -> Result<(KeyRow, SecretString)> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            "name",
            "must be 1 to 100 printable characters",
        ));
    }
    let now = now();
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(RegistryError::invalid(
            "expires_at",
            "must be in the future",
        ));
    }
    let secret = generate_api_key();
    let exposed = secret.expose_secret();
    let hint = exposed[exposed.len().saturating_sub(4)..].to_owned();
    let row = KeyRow {
        id: Uuid::now_v7(),
        tenant_id,
        name: name.to_owned(),
        scope: new.scope.as_str().to_owned(),
        hash: hash_api_key(exposed).to_vec(),
        hint,
        expires_at: new.expires_at,
        revoked_at: None,
        created_at: now,
        tokens_per_minute: opt_i64("limits.tokens_per_minute", new.limits.tokens_per_minute)?,
        requests_per_minute: opt_i64("limits.requests_per_minute", new.limits.requests_per_minute)?,
        monthly_tokens: opt_i64("limits.monthly_tokens", new.limits.monthly_tokens)?,
        monthly_budget: budget(new.limits.monthly_budget),
    };
    Ok((row, secret))
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn changes_in_order_move_the_cursor_along() {
        let mut c = Cursor::at(10);
        let now = Instant::now();
        c.applied([11, 12, 13], now);
        assert_eq!((c.applied, c.above.len()), (13, 0));
        assert!(!c.wants(12) && c.wants(14));
    }

    #[test]
    fn a_hole_is_waited_for_and_what_was_applied_above_it_is_not_applied_again() {
        let mut c = Cursor::at(10);
        let t0 = Instant::now();
        // 11 is still being committed elsewhere; 12 and 13 are visible.
        c.applied([12, 13], t0);
        assert_eq!(c.applied, 10);
        assert!(c.wants(11), "the hole is read again");
        assert!(
            !c.wants(12) && !c.wants(13),
            "what is above it is not applied twice"
        );
        // 11 commits: everything up to 13 is done.
        c.applied([11], t0 + Duration::from_secs(1));
        assert_eq!((c.applied, c.gap_since), (13, None));
    }

    #[test]
    fn a_hole_older_than_the_wait_is_a_rolled_back_write_and_is_passed() {
        let mut c = Cursor::at(10);
        let t0 = Instant::now();
        c.applied([12], t0);
        c.applied([], t0 + GAP_WAIT / 2);
        assert_eq!(c.applied, 10);
        c.applied([14], t0 + GAP_WAIT);
        // 11 is passed; 13 is a new hole, waited for from now.
        assert_eq!(c.applied, 12);
        assert!(c.wants(13) && !c.wants(14));
        c.applied([], t0 + GAP_WAIT * 2 + Duration::from_millis(1));
        assert_eq!((c.applied, c.above.len()), (14, 0));
    }
}
