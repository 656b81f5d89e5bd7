//! The durable usage ledger: every metered data-plane call, recorded off the request path,
//! batched into the store (Postgres or SQLite), and never lost while the store is down.
//!
//! # Schema (`migrations/*/0002_usage.sql`)
//!
//! `usage_events` holds one row per call, keyed by a client-generated UUID (v7, so inserts
//! stay at the right edge of the key). `usage_hourly` holds one row per tenant, UTC hour,
//! kind, alias-or-index, deployment and key, maintained **in the same transaction** as the
//! events and only from the events that transaction newly inserted. The usage queries read
//! only the rollups, by a prefix of their primary key `(tenant_id, hour, ...)`.
//!
//! Why events plus rollups rather than a partitioned events table: the same design runs on
//! SQLite, which has no partitioning; chargeback queries cost hours × groups instead of
//! events (a busy tenant makes millions of calls a month); the rollups cannot drift from the
//! events because both change in one commit, so there is no aggregation job to run, lag or
//! fail; and idempotency needs a unique id across all events, which Postgres partitioning
//! only offers when the partition key is part of it. The events stay for audit and
//! reconciliation (`usage_events (tenant_id, finished_at)`); a Postgres-only migration can
//! later partition or prune that table by time without changing a query.
//!
//! # Idempotency, on both backends
//!
//! A batch is `INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id` (one statement per 500
//! events), then one upsert per rollup row adding the sums of the events whose id came back,
//! then `COMMIT`. `RETURNING` yields only rows that statement inserted, on Postgres and on
//! SQLite (3.35+) alike, so an event already stored adds nothing. The usual retry hazard,
//! a commit that succeeded but whose answer was lost, is therefore harmless: the retried
//! batch inserts nothing and adds nothing. Concurrent writers are safe too: on Postgres a
//! second insert of the same id waits for the first transaction and then does nothing; on
//! SQLite writers are serialized. Rollup rows are upserted in key order so two replicas
//! never deadlock on them. Rollup keys are NOT NULL (`''` for no deployment, the nil uuid
//! for no key) because NULLs never conflict, which would make the upsert insert.
//!
//! # No loss
//!
//! - **Request path**: [`Ledger::record`] is synchronous and never waits: `try_send` on a
//!   bounded channel. When the channel is full it appends the event to the spill file (one
//!   `write` under a short lock, no fsync; the writer fsyncs within `flush_interval`).
//!   Chosen over awaiting the channel because backpressure would put the database's
//!   latency on every API call, and over an unbounded queue because memory must be bounded
//!   during a long outage.
//! - **Store down**: the writer keeps failed batches in memory, up to `memory_limit`; beyond
//!   it, the oldest go to the spill file (JSON lines, one fsync per append batch) and leave
//!   memory only once fsynced. Writes are retried with capped exponential backoff. When a
//!   write succeeds again, spill files are replayed first (each file is deleted only after
//!   its last batch committed), then memory.
//! - **Shutdown**: [`Ledger::shutdown`] closes the channel, takes what is queued, writes
//!   memory to the store or, failing that, to the spill file, and returns with nothing in
//!   memory. Events recorded afterwards go to the spill file (fsynced each).
//! - **Restart**: [`Ledger::start`] replays every spill file in `spill_dir`. Replaying twice
//!   (a crash mid-replay) stores nothing twice. `spill_dir` is locked (`flock`) so two
//!   ledgers never share it.
//! - **What a crash can lose**: events still in the channel or memory (at most
//!   `channel_capacity + memory_limit`), and lines written but not yet fsynced if the
//!   machine itself goes down. A torn spill line is skipped and counted.
//!
//! # Layout
//! - [`event`]: [`UsageEvent`], the owned, serializable record.
//! - [`store`]: [`LedgerStore`], batch writes and the usage queries (one SQL body for both
//!   backends).
//! - `spill`: the spill directory. `writer`: the writer task. [`ledger`]: the [`Ledger`] handle.
//! - [`metrics`]: lock-free counters. [`csv`]: chargeback export.

pub mod csv;
pub mod event;
pub mod ledger;
pub mod metrics;
pub mod store;

mod config;
mod error;
mod spill;
mod writer;

pub use config::LedgerConfig;
pub use csv::{pico_decimal, usage_csv};
pub use error::LedgerError;
pub use event::{UsageEvent, UsageKind};
pub use ledger::Ledger;
pub use metrics::LedgerMetrics;
pub use store::{
    Granularity, GroupBy, LedgerStore, MemberTokens, MinuteTotal, TenantTotal, UsageRow,
    WriteOutcome,
};
