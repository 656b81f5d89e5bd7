//! The store of operations: the registry's database (Postgres or SQLite) implements it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::model::{NewOperation, Operation, OperationError, Status};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The tenant already has an operation that is not finished.
    #[error("the tenant already has an operation running: {0}")]
    Busy(Uuid),
    #[error("the operations store failed: {0}")]
    Store(String),
}

/// Whose operations a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose<'a> {
    Everyone,
    /// One tenant, by id.
    Tenant(Uuid),
    /// Tenants by slug, whether they still exist or not (an offboarded tenant's history; a
    /// slug taken again later lists both).
    Slug(&'a str),
}

/// Where operations live. Every write that a runner makes names the lease it holds
/// (`owner`) and is refused (`false`) once the lease is someone else's: a replica that lost
/// its lease can never overwrite the progress of the one that took the operation over.
#[async_trait]
pub trait OperationStore: Send + Sync {
    /// Stores a new operation (`notStarted`). [`StoreError::Busy`] with the running one's id
    /// when the tenant already has an active operation.
    async fn insert_operation(&self, new: &NewOperation) -> Result<(), StoreError>;

    async fn operation(&self, id: Uuid) -> Result<Option<Operation>, StoreError>;

    /// Operations, newest first, of `whose` tenants, optionally in one status.
    async fn operations(
        &self,
        whose: Whose<'_>,
        status: Option<Status>,
        limit: u32,
    ) -> Result<Vec<Operation>, StoreError>;

    /// The tenant's active operation, if any.
    async fn active_operation(&self, tenant: Uuid) -> Result<Option<Operation>, StoreError>;

    /// Takes the oldest runnable operation (not started, or running under a lease that has
    /// expired) for `owner` until `now + lease`, atomically: two replicas never claim the
    /// same one. Counts the attempt.
    async fn claim_operation(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<Operation>, StoreError>;

    /// Extends the lease, if `owner` still holds it: `None` when it does not (another replica
    /// took the operation over), else whether a cancel has been requested.
    async fn heartbeat_operation(
        &self,
        id: Uuid,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<bool>, StoreError>;

    /// Saves the phase and progress and extends the lease, if `owner` still holds it: `None`
    /// when it does not, else whether a cancel has been requested.
    async fn checkpoint_operation(
        &self,
        id: Uuid,
        owner: &str,
        phase: &str,
        progress: &Value,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<bool>, StoreError>;

    /// Ends the operation in `status` (succeeded, failed, canceled), if `owner` still holds
    /// its lease.
    async fn finish_operation(
        &self,
        id: Uuid,
        owner: &str,
        status: Status,
        error: Option<&OperationError>,
    ) -> Result<bool, StoreError>;

    /// Asks an active operation to stop: one not started yet is canceled at once; a running
    /// one is flagged, and its executor decides whether it still can stop (before a move's
    /// switch, it rolls back; after, it finishes). The operation as it now is (`None` if
    /// unknown).
    async fn request_cancel(&self, id: Uuid) -> Result<Option<Operation>, StoreError>;
}
