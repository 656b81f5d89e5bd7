//! The loop every replica runs: claim a runnable operation, run it through the [`Executor`]
//! while a heartbeat keeps the lease, finish it. If the replica dies, its lease runs out and
//! another replica's runner claims the operation and calls the executor again, which resumes
//! from the last checkpoint saved in the operation's progress.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

use crate::lease;
use crate::model::{Operation, OperationError, Status};
use crate::store::OperationStore;

/// How an executor's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed(OperationError),
    /// Stopped on request, everything it had done undone.
    Canceled,
    /// The lease was lost (another replica has the operation now): nothing more may be
    /// written.
    Lost,
}

/// A checkpoint could not be saved because the lease is no longer this replica's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operation's lease was lost")]
pub struct Lost;

/// What a checkpoint asks of the executor next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// A cancel was requested: stop at the next point where that is possible.
    CancelRequested,
}

/// The operation being run, and the way to save progress.
pub struct Work {
    store: Arc<dyn OperationStore>,
    operation: Operation,
    owner: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
}

impl Work {
    pub fn operation(&self) -> &Operation {
        &self.operation
    }

    /// Saves `phase` and `progress` (the executor's checkpoint), if the lease is still held.
    pub async fn checkpoint(&mut self, phase: &str, progress: Value) -> Result<Step, Lost> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(Lost);
        }
        let until = lease::until(Utc::now(), self.lease);
        match self
            .store
            .checkpoint_operation(self.operation.id, &self.owner, phase, &progress, until)
            .await
        {
            Ok(Some(cancel)) => {
                self.operation.phase = phase.to_owned();
                self.operation.progress = progress;
                if cancel {
                    self.cancel.store(true, Ordering::Relaxed);
                }
                Ok(self.step())
            }
            Ok(None) => {
                self.lost.store(true, Ordering::Relaxed);
                Err(Lost)
            }
            Err(error) => {
                // The store is down: the work goes on; the heartbeat says if the lease is lost.
                tracing::warn!(%error, operation = %self.operation.id, "checkpoint not saved");
                if self.lost.load(Ordering::Relaxed) {
                    Err(Lost)
                } else {
                    Ok(self.step())
                }
            }
        }
    }

    /// Whether the lease is still this replica's (as far as the heartbeat knows).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    pub fn step(&self) -> Step {
        if self.cancel.load(Ordering::Relaxed) || self.operation.cancel_requested {
            Step::CancelRequested
        } else {
            Step::Continue
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Does the work of operations (the gateway's search moves, provisioning, offboarding).
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs `work` to its end, or to a lost lease. Called again after a takeover, with the
    /// progress the last checkpoint saved: every phase must be safe to repeat.
    async fn run(&self, work: &mut Work) -> Outcome;
}

#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// This replica's name in leases (unique per process).
    pub owner: String,
    pub lease: Duration,
    /// How often to look for runnable operations (besides [`Runner::kick`]).
    pub poll: Duration,
    /// Operations this replica runs at once.
    pub concurrency: usize,
}

/// Claims and runs operations until dropped... or forever: it is meant to run for the
/// process's life.
pub struct Runner {
    store: Arc<dyn OperationStore>,
    executor: Arc<dyn Executor>,
    settings: RunnerSettings,
    wake: Notify,
    slots: Arc<Semaphore>,
}

impl Runner {
    pub fn new(
        store: Arc<dyn OperationStore>,
        executor: Arc<dyn Executor>,
        settings: RunnerSettings,
    ) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Arc::new(Self {
            store,
            executor,
            settings,
            wake: Notify::new(),
            slots,
        })
    }

    /// Looks for work now (an operation was just created here).
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// The claim loop, on its own task.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let runner = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                runner.claim_what_it_can().await;
                tokio::select! {
                    () = tokio::time::sleep(runner.settings.poll) => {}
                    () = runner.wake.notified() => {}
                }
            }
        })
    }

    async fn claim_what_it_can(self: &Arc<Self>) {
        loop {
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                return;
            };
            let claimed = self
                .store
                .claim_operation(&self.settings.owner, Utc::now(), self.settings.lease)
                .await;
            let operation = match claimed {
                Ok(Some(operation)) => operation,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim operations");
                    return;
                }
            };
            let runner = Arc::clone(self);
            tokio::spawn(async move {
                runner.run(operation).await;
                drop(slot);
                runner.wake.notify_one();
            });
        }
    }

    /// Runs one claimed operation to its end.
    pub async fn run(&self, operation: Operation) {
        let span = tracing::info_span!(
            "operation",
            operation = %operation.id,
            kind = operation.kind.as_str(),
            tenant = %operation.tenant_slug,
            attempt = operation.attempts
        );
        self.run_claimed(operation).instrument(span).await;
    }

    async fn run_claimed(&self, operation: Operation) {
        let id = operation.id;
        tracing::info!(phase = %operation.phase, "running");
        let lost = Arc::new(AtomicBool::new(false));
        let cancel = Arc::new(AtomicBool::new(operation.cancel_requested));
        // Aborted when the run ends or is dropped: a lease is only kept while the work runs.
        let heartbeat = AbortOnDrop({
            let (store, owner, lease) = (
                Arc::clone(&self.store),
                self.settings.owner.clone(),
                self.settings.lease,
            );
            let (lost, cancel) = (Arc::clone(&lost), Arc::clone(&cancel));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease::heartbeat_every(lease)).await;
                    match store
                        .heartbeat_operation(id, &owner, lease::until(Utc::now(), lease))
                        .await
                    {
                        Ok(Some(requested)) => cancel.store(requested, Ordering::Relaxed),
                        Ok(None) => {
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(error) => tracing::warn!(%error, operation = %id, "heartbeat failed"),
                    }
                }
            })
        });
        let mut work = Work {
            store: Arc::clone(&self.store),
            operation,
            owner: self.settings.owner.clone(),
            lease: self.settings.lease,
            lost: Arc::clone(&lost),
            cancel,
        };
        let outcome = self.executor.run(&mut work).await;
        drop(heartbeat);
        let (status, error) = match outcome {
            Outcome::Succeeded => (Status::Succeeded, None),
            Outcome::Failed(error) => (Status::Failed, Some(error)),
            Outcome::Canceled => (Status::Canceled, None),
            Outcome::Lost => {
                tracing::warn!("lease lost; another replica has the operation");
                return;
            }
        };
        if lost.load(Ordering::Relaxed) {
            tracing::warn!("lease lost before the end; another replica has the operation");
            return;
        }
        match self
            .store
            .finish_operation(id, &self.settings.owner, status, error.as_ref())
            .await
        {
            Ok(true) => tracing::info!(status = status.as_str(), "finished"),
            Ok(false) => tracing::warn!("lease lost at the end; another replica has the operation"),
            Err(error) => tracing::error!(%error, "cannot record the end of an operation"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;

    use chrono::DateTime;
    use parking_lot_free::Mutex;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::model::{Kind, NewOperation};
    use crate::store::StoreError;

    /// std's mutex, poisoning ignored: these tests only need a map behind a lock.
    mod parking_lot_free {
        pub struct Mutex<T>(std::sync::Mutex<T>);
        impl<T> Mutex<T> {
            pub fn new(value: T) -> Self {
                Self(std::sync::Mutex::new(value))
            }
            pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }
        }
    }

    /// The store's semantics in memory (the SQL store is checked against the same rules by
    /// the registry's conformance tests).
    #[derive(Default)]
    struct Memory {
        rows: Mutex<HashMap<Uuid, Operation>>,
    }

    impl Default for Mutex<HashMap<Uuid, Operation>> {
        fn default() -> Self {
            Mutex::new(HashMap::new())
        }
    }

    #[async_trait]
    impl OperationStore for Memory {
        async fn insert_operation(&self, new: &NewOperation) -> Result<(), StoreError> {
            let mut rows = self.rows.lock();
            if let Some(active) = rows
                .values()
                .find(|o| o.tenant_id == new.tenant_id && o.status.is_active())
            {
                return Err(StoreError::Busy(active.id));
            }
            rows.insert(
                new.id,
                Operation {
                    id: new.id,
                    tenant_id: new.tenant_id,
                    tenant_slug: new.tenant_slug.clone(),
                    kind: new.kind,
                    status: Status::NotStarted,
                    phase: new.phase.clone(),
                    spec: new.spec.clone(),
                    progress: json!({}),
                    error: None,
                    cancel_requested: false,
                    lease_owner: None,
                    lease_until: None,
                    attempts: 0,
                    created_at: new.created_at,
                    updated_at: new.created_at,
                    finished_at: None,
                },
            );
            Ok(())
        }
        async fn operation(&self, id: Uuid) -> Result<Option<Operation>, StoreError> {
            Ok(self.rows.lock().get(&id).cloned())
        }
        async fn operations(
            &self,
            _: crate::Whose<'_>,
            _: Option<Status>,
            _: u32,
        ) -> Result<Vec<Operation>, StoreError> {
            Ok(self.rows.lock().values().cloned().collect())
        }
        async fn active_operation(&self, tenant: Uuid) -> Result<Option<Operation>, StoreError> {
            Ok(self
                .rows
                .lock()
                .values()
                .find(|o| o.tenant_id == tenant && o.status.is_active())
                .cloned())
        }
        async fn claim_operation(
            &self,
            owner: &str,
            now: DateTime<Utc>,
            lease: Duration,
        ) -> Result<Option<Operation>, StoreError> {
            let mut rows = self.rows.lock();
            let Some(op) = rows
                .values_mut()
                .filter(|o| lease::claimable(o.status, o.lease_until, now))
                .min_by_key(|o| o.created_at)
            else {
                return Ok(None);
            };
            op.status = Status::Running;
            op.lease_owner = Some(owner.to_owned());
            op.lease_until = Some(lease::until(now, lease));
            op.attempts += 1;
            Ok(Some(op.clone()))
        }
        async fn heartbeat_operation(
            &self,
            id: Uuid,
            owner: &str,
            until: DateTime<Utc>,
        ) -> Result<Option<bool>, StoreError> {
            let mut rows = self.rows.lock();
            Ok(rows
                .get_mut(&id)
                .filter(|o| o.lease_owner.as_deref() == Some(owner) && o.status == Status::Running)
                .map(|o| {
                    o.lease_until = Some(until);
                    o.cancel_requested
                }))
        }
        async fn checkpoint_operation(
            &self,
            id: Uuid,
            owner: &str,
            phase: &str,
            progress: &Value,
            until: DateTime<Utc>,
        ) -> Result<Option<bool>, StoreError> {
            let mut rows = self.rows.lock();
            Ok(rows
                .get_mut(&id)
                .filter(|o| o.lease_owner.as_deref() == Some(owner) && o.status == Status::Running)
                .map(|o| {
                    o.phase = phase.to_owned();
                    o.progress = progress.clone();
                    o.lease_until = Some(until);
                    o.cancel_requested
                }))
        }
        async fn finish_operation(
            &self,
            id: Uuid,
            owner: &str,
            status: Status,
            error: Option<&OperationError>,
        ) -> Result<bool, StoreError> {
            let mut rows = self.rows.lock();
            Ok(rows
                .get_mut(&id)
                .filter(|o| o.lease_owner.as_deref() == Some(owner) && o.status == Status::Running)
                .map(|o| {
                    o.status = status;
                    o.error = error.cloned();
                    o.lease_owner = None;
                })
                .is_some())
        }
        async fn request_cancel(&self, id: Uuid) -> Result<Option<Operation>, StoreError> {
            let mut rows = self.rows.lock();
            Ok(rows.get_mut(&id).map(|o| {
                match o.status {
                    Status::NotStarted => o.status = Status::Canceled,
                    Status::Running => o.cancel_requested = true,
                    _ => {}
                }
                o.clone()
            }))
        }
    }

    fn new_operation(tenant: Uuid) -> NewOperation {
        NewOperation {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            tenant_slug: "acme".into(),
            kind: Kind::SearchMove,
            spec: json!({}),
            phase: "start".into(),
            created_at: Utc::now(),
        }
    }

    fn settings(owner: &str, lease_ms: u64) -> RunnerSettings {
        RunnerSettings {
            owner: owner.into(),
            lease: Duration::from_millis(lease_ms),
            poll: Duration::from_millis(20),
            concurrency: 2,
        }
    }

    /// Counts to `total` in steps, checkpointing each; resumes from the checkpoint. Stalls
    /// (without heartbeating work) when `stall_at` is reached, like a replica that died.
    struct Counter {
        total: u64,
        stall_at: Option<u64>,
        runs: AtomicUsize,
        steps: AtomicUsize,
    }

    #[async_trait]
    impl Executor for Counter {
        async fn run(&self, work: &mut Work) -> Outcome {
            self.runs.fetch_add(1, Ordering::Relaxed);
            let mut done = work.operation().progress["done"].as_u64().unwrap_or(0);
            while done < self.total {
                if Some(done) == self.stall_at && work.operation().attempts == 1 {
                    std::future::pending::<()>().await;
                }
                done += 1;
                self.steps.fetch_add(1, Ordering::Relaxed);
                match work.checkpoint("counting", json!({ "done": done })).await {
                    Ok(Step::Continue) => {}
                    Ok(Step::CancelRequested) => return Outcome::Canceled,
                    Err(Lost) => return Outcome::Lost,
                }
            }
            Outcome::Succeeded
        }
    }

    #[tokio::test]
    async fn one_replica_runs_an_operation_to_its_end_and_records_it() {
        let store = Arc::new(Memory::default());
        let op = new_operation(Uuid::now_v7());
        store.insert_operation(&op).await.unwrap();
        let counter = Arc::new(Counter {
            total: 5,
            stall_at: None,
            runs: AtomicUsize::new(0),
            steps: AtomicUsize::new(0),
        });
        let (one, two) = (
            Runner::new(store.clone(), counter.clone(), settings("one", 1000)),
            Runner::new(store.clone(), counter.clone(), settings("two", 1000)),
        );
        let (a, b) = (one.start(), two.start());
        for _ in 0..200 {
            if store.operation(op.id).await.unwrap().unwrap().status == Status::Succeeded {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let done = store.operation(op.id).await.unwrap().unwrap();
        assert_eq!(done.status, Status::Succeeded);
        assert_eq!(
            counter.runs.load(Ordering::Relaxed),
            1,
            "exactly one replica ran it"
        );
        assert_eq!(counter.steps.load(Ordering::Relaxed), 5);
        assert_eq!(done.progress["done"], 5);
        a.abort();
        b.abort();
    }

    #[tokio::test]
    async fn a_second_operation_for_a_busy_tenant_is_refused_naming_the_first() {
        let store = Memory::default();
        let tenant = Uuid::now_v7();
        let first = new_operation(tenant);
        store.insert_operation(&first).await.unwrap();
        match store.insert_operation(&new_operation(tenant)).await {
            Err(StoreError::Busy(id)) => assert_eq!(id, first.id),
            other => panic!("{other:?}"),
        }
        assert!(store
            .insert_operation(&new_operation(Uuid::now_v7()))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_dead_replicas_operation_is_taken_over_after_its_lease_and_resumed_from_its_checkpoint(
    ) {
        let store = Arc::new(Memory::default());
        let op = new_operation(Uuid::now_v7());
        store.insert_operation(&op).await.unwrap();
        let counter = Arc::new(Counter {
            total: 10,
            stall_at: Some(4),
            runs: AtomicUsize::new(0),
            steps: AtomicUsize::new(0),
        });
        // The first replica stalls at 4 and its heartbeat dies with it (the task is aborted).
        let one = Runner::new(store.clone(), counter.clone(), settings("one", 200));
        let claimed = store
            .claim_operation("one", Utc::now(), Duration::from_millis(200))
            .await
            .unwrap()
            .unwrap();
        let dying = tokio::spawn({
            let one = Arc::clone(&one);
            async move { one.run(claimed).await }
        });
        for _ in 0..100 {
            if store.operation(op.id).await.unwrap().unwrap().progress["done"] == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        dying.abort();
        let two = Runner::new(store.clone(), counter.clone(), settings("two", 200));
        let handle = two.start();
        for _ in 0..300 {
            if store.operation(op.id).await.unwrap().unwrap().status == Status::Succeeded {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let done = store.operation(op.id).await.unwrap().unwrap();
        assert_eq!(done.status, Status::Succeeded);
        assert_eq!(done.attempts, 2, "taken over once");
        assert_eq!(
            counter.steps.load(Ordering::Relaxed),
            10,
            "nothing done before the takeover was done again"
        );
        handle.abort();
    }

    #[tokio::test]
    async fn a_replica_whose_lease_was_taken_writes_nothing_more() {
        let store = Arc::new(Memory::default());
        let op = new_operation(Uuid::now_v7());
        store.insert_operation(&op).await.unwrap();
        let claimed = store
            .claim_operation("old", Utc::now(), Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        // Another replica took it over (as after an expiry).
        {
            let mut rows = store.rows.lock();
            let row = rows.get_mut(&op.id).unwrap();
            row.lease_owner = Some("new".into());
            row.progress = json!({"done": 7});
        }
        let mut work = Work {
            store: store.clone(),
            operation: claimed,
            owner: "old".into(),
            lease: Duration::from_secs(60),
            lost: Arc::new(AtomicBool::new(false)),
            cancel: Arc::new(AtomicBool::new(false)),
        };
        assert_eq!(
            work.checkpoint("counting", json!({"done": 1})).await,
            Err(Lost)
        );
        assert!(work.lost());
        let row = store.operation(op.id).await.unwrap().unwrap();
        assert_eq!(
            row.progress["done"], 7,
            "the new owner's progress is intact"
        );
        assert!(!store
            .finish_operation(op.id, "old", Status::Failed, None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_cancel_reaches_a_running_operation_through_its_checkpoints() {
        let store = Arc::new(Memory::default());
        let op = new_operation(Uuid::now_v7());
        store.insert_operation(&op).await.unwrap();
        // Not started: canceled at once.
        let pending = new_operation(Uuid::now_v7());
        store.insert_operation(&pending).await.unwrap();
        let canceled = store.request_cancel(pending.id).await.unwrap().unwrap();
        assert_eq!(canceled.status, Status::Canceled);
        // Running: flagged, and the executor stops at its next checkpoint.
        let claimed = store
            .claim_operation("one", Utc::now(), Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.id, op.id);
        store.request_cancel(op.id).await.unwrap();
        let mut work = Work {
            store: store.clone(),
            operation: claimed,
            owner: "one".into(),
            lease: Duration::from_secs(60),
            lost: Arc::new(AtomicBool::new(false)),
            cancel: Arc::new(AtomicBool::new(false)),
        };
        // The heartbeat carries the request, and so does the next checkpoint.
        let requested = store
            .heartbeat_operation(op.id, "one", Utc::now())
            .await
            .unwrap();
        assert_eq!(requested, Some(true));
        assert_eq!(
            work.checkpoint("copying", json!({})).await,
            Ok(Step::CancelRequested)
        );
    }
}
