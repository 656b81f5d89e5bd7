//! The Bulkhead gateway: authentication, the admin API, and the composition of the tenant
//! registry with the Azure OpenAI and Azure AI Search routers. This is the only crate that
//! knows both tenants and upstreams.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod background;
pub mod cache;
pub mod chargeback;
pub mod config;
pub mod console;
pub mod cost;
pub mod counting;
mod documents;
pub mod emulator;
pub mod error;
pub mod gate;
pub mod health;
pub mod jobs;
pub mod jwt;
pub mod me;
pub mod metering;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod request_id;
pub mod search;
pub mod search_provisioning;
pub mod server;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod usage;

pub use config::Config;
pub use startup::Application;
