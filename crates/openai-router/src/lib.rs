//! Routes a tenant's Azure OpenAI call to a deployment: member choice by priority and weight,
//! 429 cooldowns, circuit breaking, retry and failover, streaming. It knows upstreams, never
//! tenants: `api` turns a tenant's placement into a [`Target`].
//!
//! Deciding is separate from doing: [`plan`] and [`health`] are pure and tested without I/O;
//! [`client`] performs a plan with hyper's client.

pub mod body;
pub mod client;
mod connect;
pub mod health;
pub mod plan;
pub mod target;

pub use body::BodyFacts;
pub use client::{
    Answer, AnswerBody, ByteStream, Call, OnDone, OpenAiRouter, Operation, RouterSettings, Usage,
};
pub use health::{BreakerSettings, HealthBook};
pub use plan::{plan, NoMember, Plan};
pub use target::{Member, Target};

/// What went wrong that is ours, not the upstream's nor the caller's.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("internal routing error: {0}")]
    Internal(String),
    /// The one upstream that holds the state asked for did not answer.
    #[error("upstream unreachable: {0}")]
    Upstream(String),
}
