//! Durable long-running operations: provisioning a tenant's search indexes, moving a tenant
//! between search isolation models, offboarding. An operation is a row in the registry's
//! store; any replica may run it, exactly one runs it at a time.
//!
//! - [`model`]: what an operation is (kind, status in Azure's long-running-operation
//!   spelling, phase, progress, error), as stored and as shown.
//! - [`OperationStore`]: the small trait the store implements (insert with one active
//!   operation per tenant, claim with a lease, heartbeat, checkpoint, finish, cancel).
//! - [`lease`]: the pure rules of leases (who may claim, when a lease is lost).
//! - [`runner`]: the loop every replica runs: claim, run through an [`Executor`] with a
//!   heartbeat, finish; a replica that dies leaves its lease to expire and another resumes
//!   the operation from its last checkpoint.

pub mod lease;
pub mod model;
pub mod runner;
pub mod store;

pub use model::{Kind, NewOperation, Operation, OperationError, Status};
pub use runner::{Executor, Outcome, Runner, RunnerSettings, Step, Work};
pub use store::{OperationStore, StoreError, Whose};
