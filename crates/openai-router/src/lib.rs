//! Routes a tenant's Azure OpenAI call to a deployment: member choice by priority and weight,
//! 429 cooldowns, circuit breaking, retry and failover, streaming. It knows upstreams, never
//! tenants: `api` turns a tenant's placement into a [`Target`].
//!
//! Deciding is separate from doing: [`plan`] and [`health`] are pure and tested without I/O.
//! The HTTP client that performs the plan is still to come (see the routing issue).

pub mod health;
pub mod plan;
pub mod target;

pub use health::{BreakerSettings, HealthBook};
pub use plan::{plan, NoMember, Plan};
pub use target::{Member, Target};
