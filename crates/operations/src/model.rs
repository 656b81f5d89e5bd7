//! What an operation is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Create the indexes a tenant's search placement needs.
    Provision,
    /// Move a tenant's documents to another search placement, then switch to it.
    SearchMove,
    /// Suspend a tenant, remove its search data, then remove the tenant.
    Offboard,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::SearchMove => "search_move",
            Self::Offboard => "offboard",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "provision" => Some(Self::Provision),
            "search_move" => Some(Self::SearchMove),
            "offboard" => Some(Self::Offboard),
            _ => None,
        }
    }
}

/// Where an operation is, in the spelling of Azure's long-running operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    NotStarted,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "notStarted",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "notStarted" => Some(Self::NotStarted),
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }

    /// Not finished: at most one such operation per tenant.
    pub fn is_active(self) -> bool {
        matches!(self, Self::NotStarted | Self::Running)
    }
}

/// Why an operation failed, in the admin envelope's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationError {
    pub code: String,
    pub message: String,
}

/// An operation to start.
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub kind: Kind,
    /// What to do (the executor's own JSON: source and target placements, ...).
    pub spec: Value,
    /// The first phase.
    pub phase: String,
    pub created_at: DateTime<Utc>,
}

/// An operation as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub kind: Kind,
    pub status: Status,
    pub phase: String,
    pub spec: Value,
    /// The executor's checkpoint and what admins see of it (documents copied per index...).
    pub progress: Value,
    pub error: Option<OperationError>,
    pub cancel_requested: bool,
    /// The replica running it, while it runs.
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// How many times a replica has claimed it (more than one: taken over or resumed).
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// When it last changed: `lastActionDateTime`.
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}
