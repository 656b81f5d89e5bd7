//! The quota crate against real Redis (at `REDIS_URL`, default 127.0.0.1:6379, each test under
//! a key prefix of its own) and in process: one binary, three modules.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and their helpers fail loudly"
)]

mod behaviour;
mod failures;
mod layout;
mod leases;
mod support;
