//! Usage records: one per finished data-plane call, handed to a [`UsageSink`]. The durable
//! ledger (batched into the store, buffered while it is down) comes with the quota issue;
//! until then the default sink writes each record to the log.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

/// What one call consumed, for chargeback.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub tenant_id: Uuid,
    pub tenant: String,
    /// The API key used, when it was one (a token has none).
    pub key_id: Option<Uuid>,
    pub alias: String,
    pub operation: &'static str,
    pub usage: openai_router::Usage,
    pub at: DateTime<Utc>,
}

/// What one Azure AI Search call did, for chargeback.
#[derive(Debug, Clone)]
pub struct SearchUsageRecord {
    pub tenant_id: Uuid,
    pub tenant: String,
    pub key_id: Option<Uuid>,
    /// The logical index (template name).
    pub index: String,
    /// `search`, `index`, `lookup`, `count`, `suggest` or `autocomplete`.
    pub operation: &'static str,
    /// Documents returned (reads) or actions sent (index batches).
    pub documents: u64,
    pub status: u16,
    pub latency: std::time::Duration,
    pub at: DateTime<Utc>,
}

pub trait UsageSink: Send + Sync + 'static {
    fn record(&self, record: UsageRecord);

    /// A search call; by default written to the log like [`LogSink`] does.
    fn record_search(&self, r: SearchUsageRecord) {
        tracing::info!(
            target: "bulkhead::usage",
            tenant = %r.tenant,
            key_id = ?r.key_id,
            index = %r.index,
            operation = r.operation,
            documents = r.documents,
            status = r.status,
            latency_ms = r.latency.as_secs_f64() * 1000.0,
            "search usage"
        );
    }
}

/// Writes each record as a structured log line (target `bulkhead::usage`).
#[derive(Debug, Default)]
pub struct LogSink;

impl UsageSink for LogSink {
    fn record(&self, r: UsageRecord) {
        tracing::info!(
            target: "bulkhead::usage",
            tenant = %r.tenant,
            key_id = ?r.key_id,
            alias = %r.alias,
            operation = r.operation,
            member = r.usage.member.as_deref().unwrap_or("-"),
            region = r.usage.region.as_deref().unwrap_or("-"),
            prompt_tokens = r.usage.prompt_tokens,
            completion_tokens = r.usage.completion_tokens,
            cached_tokens = r.usage.cached_tokens,
            status = r.usage.status,
            latency_ms = r.usage.latency.as_secs_f64() * 1000.0,
            streamed = r.usage.streamed,
            attempts = r.usage.attempts,
            "usage"
        );
    }
}

/// Keeps records in memory, for tests that assert what was metered.
#[derive(Debug, Default, Clone)]
pub struct CollectingSink(
    Arc<Mutex<Vec<UsageRecord>>>,
    Arc<Mutex<Vec<SearchUsageRecord>>>,
);

impl CollectingSink {
    pub fn records(&self) -> Vec<UsageRecord> {
        self.0.lock().clone()
    }

    pub fn search_records(&self) -> Vec<SearchUsageRecord> {
        self.1.lock().clone()
    }
}

impl UsageSink for CollectingSink {
    fn record(&self, record: UsageRecord) {
        self.0.lock().push(record);
    }

    fn record_search(&self, record: SearchUsageRecord) {
        self.1.lock().push(record);
    }
}
