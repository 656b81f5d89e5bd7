//! Usage records: one per finished data-plane call, handed to a [`UsageSink`]. The gateway's
//! sink is [`LedgerSink`]: the durable ledger (`usage-ledger`), batched into the store and
//! buffered (in memory, then on disk) while the store is down.

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
    /// What the call cost (see [`crate::cost`]), computed once when it ended.
    pub priced: crate::cost::Priced,
    /// Answered from the response cache (Azure not called; the usage is all zeros).
    pub cache_hit: bool,
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
            cut = r.usage.cut,
            cache_hit = r.cache_hit,
            attempts = r.usage.attempts,
            cost = r.priced.cost().map(|c| c.to_string()),
            "usage"
        );
    }
}

/// Hands every record to the durable usage ledger (which never blocks nor drops), and counts
/// tokens for `/metrics`.
pub struct LedgerSink(pub Arc<usage_ledger::Ledger>);

impl UsageSink for LedgerSink {
    fn record(&self, r: UsageRecord) {
        let mut event =
            usage_ledger::UsageEvent::openai(r.tenant_id, r.alias, r.operation, Utc::now());
        event.key_id = r.key_id;
        event.member = r.usage.member;
        event.deployment = r.usage.deployment;
        event.region = r.usage.region;
        event.prompt_tokens = r.usage.prompt_tokens;
        event.completion_tokens = r.usage.completion_tokens;
        event.cached_tokens = r.usage.cached_tokens;
        event.status = r.usage.status;
        event.latency_ms = u64::try_from(r.usage.latency.as_millis()).unwrap_or(u64::MAX);
        event.streamed = r.usage.streamed;
        event.cut = r.usage.cut;
        event.cost = r
            .priced
            .cost()
            .map(|c| u64::try_from(c.0).unwrap_or(u64::MAX));
        event.unpriced = r.priced == crate::cost::Priced::Unpriced;
        event.cache_hit = r.cache_hit;
        self.0.record(event);
    }

    fn record_search(&self, r: SearchUsageRecord) {
        let mut event =
            usage_ledger::UsageEvent::search(r.tenant_id, r.index, r.operation, Utc::now());
        event.key_id = r.key_id;
        event.documents = r.documents;
        event.status = r.status;
        event.latency_ms = u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX);
        self.0.record(event);
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
