//! End-to-end tests of the gateway: the real app on port 0, real HTTP, real stores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first thing that is not as expected"
)]

mod admin;
mod auth;
mod bodies;
mod cache;
mod connections;
mod console;
mod costs;
mod entra;
mod isolation;
mod ledger;
mod moves;
mod openai;
mod processes;
mod quota;
mod responses;
mod search;
mod traces;
