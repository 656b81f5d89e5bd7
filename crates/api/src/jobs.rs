//! What the gateway's long-running operations do (the [`operations::Executor`]): a tenant's
//! search indexes provisioned, its documents moved to another search placement, the tenant
//! offboarded. The `operations` crate stores them, leases them to one replica at a time and
//! hands them over when a replica dies; every phase here is safe to run again from the last
//! checkpoint.
//!
//! A search move, phase by phase:
//! 1. `creating_target`: the target placement's indexes are created (retried, honouring the
//!    service's 429 / 503 and `Retry-After`); the tenant's move is recorded in the registry,
//!    so every replica mirrors the tenant's writes to the target from then on.
//! 2. `copying`: every document of every template is copied, in key order, 1,000 at a time;
//!    the last key copied is checkpointed per template, so a takeover resumes where the copy
//!    was.
//! 3. `catching_up`: source and target are compared document by document (every field) and
//!    the target corrected, until a pass finds nothing to correct.
//! 4. `switching`: the tenant's writes are held (not refused) on every replica; after they
//!    have settled, a last comparison makes the target equal to the source, then one registry
//!    write switches reads and writes to the target and ends the move. No cancel after this.
//! 5. `waiting_grace`: the source is kept for `BULKHEAD_MOVE_SOURCE_GRACE_SECONDS`.
//! 6. `removing_source`: the tenant's documents are purged from a shared source index, or
//!    its dedicated source indexes deleted.
//!
//! A cancel (or a failure) before the switch removes what the move created and leaves the
//! tenant where it was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use operations::{Executor, Kind, Outcome, Step, Work};
use search_router::documents::Copied;
use search_router::schema::physical_definition;
use search_router::{Retry, SearchClient, SearchError, Target};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tenant_registry::model::{SearchMove, SearchPlacement, TenantStatus};
use tenant_registry::{Registry, RegistryError, Snapshot};
use uuid::Uuid;

use crate::search::placement_target;

/// Comparison passes before the switch that may still find differences.
const MAX_CATCH_UP_PASSES: u32 = 5;
/// Comparison passes with writes held; the first that finds nothing to correct ends it (nothing
/// else writes the tenant's documents then, so the sides are equal).
const MAX_FENCED_PASSES: u32 = 3;

/// How moves run.
#[derive(Debug, Clone)]
pub struct MoveSettings {
    /// How long the registry's change takes to reach every replica, and a write begun before
    /// it to finish: the wait between holding writes and the last comparison.
    pub fence_settle: Duration,
    pub retry: Retry,
}

/// What a search move is asked to do (the operation's `spec`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveSpec {
    pub from: SearchPlacement,
    pub to: SearchPlacement,
    /// Seconds the source is kept after the switch.
    pub grace_seconds: u64,
}

/// Per template: how far the copy is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexProgress {
    /// Documents in the source when the copy began.
    pub total: u64,
    pub copied: u64,
    /// The last key copied (the copy resumes after it).
    pub last_key: Option<String>,
    pub done: bool,
}

/// A move's checkpoint, and what admins see of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MoveProgress {
    #[serde(default)]
    pub indexes: BTreeMap<String, IndexProgress>,
    /// Documents corrected by the comparisons.
    #[serde(default)]
    pub corrected: u64,
    #[serde(default)]
    pub passes: u32,
    /// When reads and writes switched to the target.
    #[serde(default)]
    pub switched_at: Option<DateTime<Utc>>,
    /// Documents purged from a shared source index.
    #[serde(default)]
    pub removed: u64,
}

/// An offboarding's checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OffboardProgress {
    /// Documents purged from shared indexes.
    #[serde(default)]
    pub removed: u64,
    /// Indexes deleted or purged so far, `service/index`.
    #[serde(default)]
    pub cleaned: Vec<String>,
}

/// The operations of this gateway: where they are stored and the runner that takes them.
pub struct Operations {
    pub store: Arc<dyn operations::OperationStore>,
    pub runner: Arc<operations::Runner>,
    /// Seconds a move keeps the source after its switch.
    pub grace_seconds: u64,
}

/// Runs the gateway's operations.
pub struct Jobs {
    pub registry: Arc<Registry>,
    pub search: Arc<SearchClient>,
    pub settings: MoveSettings,
}

/// A failure in an operation's words.
fn failure(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed(operations::OperationError {
        code: code.to_owned(),
        message: message.into(),
    })
}

/// What ends a phase early.
enum Stop {
    Lost,
    Cancel,
    Fail(String),
}

impl From<SearchError> for Stop {
    fn from(error: SearchError) -> Self {
        Self::Fail(error.to_string())
    }
}

impl From<RegistryError> for Stop {
    fn from(error: RegistryError) -> Self {
        Self::Fail(error.to_string())
    }
}

impl From<operations::runner::Lost> for Stop {
    fn from(_: operations::runner::Lost) -> Self {
        Self::Lost
    }
}

/// A template's target and the definition its index needs there.
pub type Placed = (Target, Map<String, Value>);

/// Every template's target for `placement`, with the definition its index needs.
pub fn placed_templates(
    snapshot: &Snapshot,
    tenant: Uuid,
    placement: &SearchPlacement,
) -> Result<Vec<Placed>, String> {
    let shared = matches!(placement, SearchPlacement::SharedIndex { .. });
    snapshot
        .catalog
        .templates
        .iter()
        .map(|(name, template)| {
            let target = placement_target(tenant, placement, snapshot, name.as_str())
                .ok_or_else(|| {
                    format!(
                        "template '{name}' cannot be placed on '{}' (no key field, no service credential, or a name too long)",
                        placement.service()
                    )
                })?;
            let definition = physical_definition(&template.definition, &target.index, shared);
            Ok((target, definition))
        })
        .collect()
}

#[async_trait]
impl Executor for Jobs {
    async fn run(&self, work: &mut Work) -> Outcome {
        match work.operation().kind {
            Kind::Provision => self.provision(work).await,
            Kind::SearchMove => self.search_move(work).await,
            Kind::Offboard => self.offboard(work).await,
        }
    }
}

impl Jobs {
    /// Creates the indexes of the tenant's current placement.
    async fn provision(&self, work: &mut Work) -> Outcome {
        let tenant = work.operation().tenant_id;
        let snapshot = self.registry.snapshot();
        let Some(entry) = snapshot.tenant(tenant) else {
            return failure("tenant_not_found", "the tenant no longer exists");
        };
        let Some(placement) = entry.tenant.search.clone() else {
            return Outcome::Succeeded;
        };
        let placed = match placed_templates(&snapshot, tenant, &placement) {
            Ok(placed) => placed,
            Err(message) => return failure("cannot_place", message),
        };
        let mut created = Vec::new();
        for (target, definition) in &placed {
            if let Err(error) = self
                .search
                .put_index(target, definition, self.settings.retry)
                .await
            {
                return failure("index_not_created", error.to_string());
            }
            created.push(format!("{}/{}", placement.service(), target.index));
            match work
                .checkpoint("creating_indexes", json!({ "indexes": created }))
                .await
            {
                Ok(_) => {}
                Err(_) => return Outcome::Lost,
            }
        }
        Outcome::Succeeded
    }

    async fn offboard(&self, work: &mut Work) -> Outcome {
        match self.offboard_phases(work).await {
            Ok(()) => Outcome::Succeeded,
            Err(Stop::Lost) => Outcome::Lost,
            // Offboarding is not canceled half way: it finishes or fails (and may be retried).
            Err(Stop::Cancel) => Outcome::Succeeded,
            Err(Stop::Fail(message)) => failure("offboarding_failed", message),
        }
    }

    async fn offboard_phases(&self, work: &mut Work) -> Result<(), Stop> {
        let slug = work.operation().tenant_slug.clone();
        let tenant = work.operation().tenant_id;
        let mut progress: OffboardProgress =
            serde_json::from_value(work.operation().progress.clone()).unwrap_or_default();
        // Refused everywhere from now on.
        match self
            .registry
            .set_status(&slug, TenantStatus::Offboarding)
            .await
        {
            Ok(()) => {}
            Err(RegistryError::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
        work.checkpoint("removing_search_data", to_value(&progress))
            .await?;
        let snapshot = self.registry.snapshot();
        if let Some(entry) = snapshot.tenant(tenant) {
            for target in crate::search_provisioning::every_place(entry, &snapshot) {
                let place = format!("{}/{}", target.upstream.endpoint, target.index);
                if progress.cleaned.contains(&place) {
                    continue;
                }
                progress.removed += self.search.purge(&target, self.settings.retry).await?;
                progress.cleaned.push(place);
                work.checkpoint("removing_search_data", to_value(&progress))
                    .await?;
            }
        }
        work.checkpoint("removing_tenant", to_value(&progress))
            .await?;
        match self.registry.offboard(&slug).await {
            Ok(()) | Err(RegistryError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn search_move(&self, work: &mut Work) -> Outcome {
        let spec: MoveSpec = match serde_json::from_value(work.operation().spec.clone()) {
            Ok(spec) => spec,
            Err(error) => return failure("bad_spec", error.to_string()),
        };
        let result = self.move_phases(work, &spec).await;
        let switched = work
            .operation()
            .progress
            .get("switched_at")
            .is_some_and(|v| !v.is_null());
        match result {
            Ok(()) => Outcome::Succeeded,
            Err(Stop::Lost) => Outcome::Lost,
            Err(Stop::Cancel) if !switched => match self.roll_back(work, &spec).await {
                Ok(()) => Outcome::Canceled,
                Err(message) => failure("rollback_failed", message),
            },
            // After the switch there is nothing to cancel: the source is only removed.
            Err(Stop::Cancel) => Outcome::Succeeded,
            Err(Stop::Fail(message)) if !switched => {
                tracing::warn!(%message, "move failed before the switch; rolling back");
                match self.roll_back(work, &spec).await {
                    Ok(()) => failure("move_failed", message),
                    Err(rollback) => failure(
                        "move_failed",
                        format!("{message}; and rolling back failed: {rollback}"),
                    ),
                }
            }
            Err(Stop::Fail(message)) => failure("source_not_removed", message),
        }
    }

    /// Where a cancel or a failure before the switch leaves the tenant: where it was, the
    /// target's copy removed, writes no longer mirrored nor held.
    async fn roll_back(&self, work: &mut Work, spec: &MoveSpec) -> Result<(), String> {
        let slug = work.operation().tenant_slug.clone();
        let tenant = work.operation().tenant_id;
        let snapshot = self.registry.snapshot();
        let still_moving = snapshot
            .tenant(tenant)
            .and_then(|t| t.tenant.search_move.as_ref())
            .is_some_and(|m| m.operation == work.operation().id);
        if still_moving {
            self.registry
                .set_search_move(&slug, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        let placed = placed_templates(&self.registry.snapshot(), tenant, &spec.to)?;
        for (target, _) in placed {
            self.search
                .purge(&target, self.settings.retry)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn move_phases(&self, work: &mut Work, spec: &MoveSpec) -> Result<(), Stop> {
        let id = work.operation().id;
        let slug = work.operation().tenant_slug.clone();
        let tenant = work.operation().tenant_id;
        let mut progress: MoveProgress =
            serde_json::from_value(work.operation().progress.clone()).unwrap_or_default();
        let phase = work.operation().phase.clone();
        let before_switch = progress.switched_at.is_none();

        if before_switch {
            if matches!(phase.as_str(), "validating" | "creating_target") {
                let snapshot = self.registry.snapshot();
                let placed = placed_templates(&snapshot, tenant, &spec.to).map_err(Stop::Fail)?;
                for (target, definition) in &placed {
                    self.search
                        .put_index(target, definition, self.settings.retry)
                        .await?;
                    step(work, "creating_target", &progress).await?;
                }
                self.registry
                    .set_search_move(
                        &slug,
                        Some(&SearchMove {
                            operation: id,
                            to: spec.to.clone(),
                            fenced: false,
                        }),
                    )
                    .await?;
                step(work, "copying", &progress).await?;
            }
            if matches!(work.operation().phase.as_str(), "copying") {
                self.copy(work, tenant, spec, &mut progress).await?;
                step(work, "catching_up", &progress).await?;
            }
            if matches!(work.operation().phase.as_str(), "catching_up") {
                for _ in 0..MAX_CATCH_UP_PASSES {
                    let fixed = self.compare(tenant, spec, &mut progress).await?;
                    step(work, "catching_up", &progress).await?;
                    if fixed == 0 {
                        break;
                    }
                }
                step(work, "switching", &progress).await?;
            }
            if matches!(work.operation().phase.as_str(), "switching") {
                if work.step() == Step::CancelRequested {
                    return Err(Stop::Cancel);
                }
                self.switch(work, &slug, tenant, spec, &mut progress)
                    .await?;
            }
        }
        // After the switch: keep the source for the grace period, then remove it.
        if matches!(work.operation().phase.as_str(), "waiting_grace") {
            let until = progress.switched_at.unwrap_or_else(Utc::now)
                + chrono::Duration::seconds(i64::try_from(spec.grace_seconds).unwrap_or(i64::MAX));
            loop {
                let left = until - Utc::now();
                if left <= chrono::Duration::zero() {
                    break;
                }
                let nap = left
                    .to_std()
                    .unwrap_or_default()
                    .min(Duration::from_secs(2));
                tokio::time::sleep(nap).await;
                if work.lost() {
                    return Err(Stop::Lost);
                }
            }
            // A cancel asked for now changes nothing: the move is done.
            let _ = work
                .checkpoint("removing_source", to_value(&progress))
                .await?;
        }
        if matches!(work.operation().phase.as_str(), "removing_source") {
            let placed = placed_templates(&self.registry.snapshot(), tenant, &spec.from)
                .map_err(Stop::Fail)?;
            for (target, _) in placed {
                progress.removed += self.search.purge(&target, self.settings.retry).await?;
                let _ = work
                    .checkpoint("removing_source", to_value(&progress))
                    .await?;
            }
        }
        Ok(())
    }

    /// Copies every template's documents in key order from where the last checkpoint left.
    async fn copy(
        &self,
        work: &mut Work,
        tenant: Uuid,
        spec: &MoveSpec,
        progress: &mut MoveProgress,
    ) -> Result<(), Stop> {
        let snapshot = self.registry.snapshot();
        let sources = placed_templates(&snapshot, tenant, &spec.from).map_err(Stop::Fail)?;
        let targets = placed_templates(&snapshot, tenant, &spec.to).map_err(Stop::Fail)?;
        for ((source, _), (target, _)) in sources.iter().zip(&targets) {
            let entry = progress.indexes.entry(source.logical.clone()).or_default();
            if entry.done {
                continue;
            }
            if entry.total == 0 && entry.copied == 0 {
                entry.total = self
                    .search
                    .count(source, self.settings.retry)
                    .await?
                    .unwrap_or(0);
            }
            loop {
                let after = progress
                    .indexes
                    .get(&source.logical)
                    .and_then(|p| p.last_key.clone());
                let copied = self
                    .search
                    .copy_page(source, target, after.as_deref(), self.settings.retry)
                    .await?;
                let entry = progress.indexes.entry(source.logical.clone()).or_default();
                match copied {
                    Copied::Done => {
                        entry.done = true;
                        step(work, "copying", progress).await?;
                        break;
                    }
                    Copied::Page { count, last_key } => {
                        entry.copied += count;
                        entry.last_key = Some(last_key);
                        step(work, "copying", progress).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// One comparison of every template, source against target, in key order: a document
    /// missing from the target or different in any field is written again, one the source
    /// no longer has is deleted. Returns how many were corrected.
    async fn compare(
        &self,
        tenant: Uuid,
        spec: &MoveSpec,
        progress: &mut MoveProgress,
    ) -> Result<u64, Stop> {
        let snapshot = self.registry.snapshot();
        let sources = placed_templates(&snapshot, tenant, &spec.from).map_err(Stop::Fail)?;
        let targets = placed_templates(&snapshot, tenant, &spec.to).map_err(Stop::Fail)?;
        let mut fixed = 0;
        for ((source, _), (target, _)) in sources.iter().zip(&targets) {
            fixed += self
                .search
                .reconcile(source, target, self.settings.retry)
                .await?;
        }
        progress.corrected += fixed;
        progress.passes += 1;
        Ok(fixed)
    }

    /// Holds the tenant's writes, makes the target equal to the source, switches.
    async fn switch(
        &self,
        work: &mut Work,
        slug: &str,
        tenant: Uuid,
        spec: &MoveSpec,
        progress: &mut MoveProgress,
    ) -> Result<(), Stop> {
        let id = work.operation().id;
        self.registry
            .set_search_move(
                slug,
                Some(&SearchMove {
                    operation: id,
                    to: spec.to.clone(),
                    fenced: true,
                }),
            )
            .await?;
        tokio::time::sleep(self.settings.fence_settle).await;
        let mut clean = false;
        for _ in 0..MAX_FENCED_PASSES {
            let fixed = self.compare(tenant, spec, progress).await?;
            step(work, "switching", progress).await?;
            if fixed == 0 {
                clean = true;
                break;
            }
        }
        if !clean {
            // Writes that began before the fence keep landing: let writes through and try
            // again later rather than hold them longer.
            self.registry
                .set_search_move(
                    slug,
                    Some(&SearchMove {
                        operation: id,
                        to: spec.to.clone(),
                        fenced: false,
                    }),
                )
                .await?;
            return Err(Stop::Fail(
                "the source kept changing while writes were held".into(),
            ));
        }
        if work.step() == Step::CancelRequested {
            return Err(Stop::Cancel);
        }
        self.registry.switch_search(slug, &spec.to).await?;
        progress.switched_at = Some(Utc::now());
        tracing::info!(
            to = spec.to.isolation(),
            "switched the tenant's search placement"
        );
        // Past this point the move completes whatever happens; the checkpoint may be lost.
        let _ = work.checkpoint("waiting_grace", to_value(progress)).await;
        Ok(())
    }
}

/// Saves a checkpoint; a cancel request stops a move before its switch.
async fn step(work: &mut Work, phase: &str, progress: &MoveProgress) -> Result<(), Stop> {
    match work.checkpoint(phase, to_value(progress)).await? {
        Step::Continue => Ok(()),
        Step::CancelRequested => Err(Stop::Cancel),
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
