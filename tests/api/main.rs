//! End-to-end tests of the gateway: the real app on port 0, real HTTP, real stores.

mod admin;
mod auth;
mod isolation;
mod processes;
