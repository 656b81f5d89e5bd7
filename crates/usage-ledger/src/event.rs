//! What one finished data-plane call consumed: the unit the ledger records, spills and
//! writes. Owned and serde-serializable so it can sit in a channel, in memory and in a spill
//! file (one JSON object per line) without losing a field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which data plane a call went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageKind {
    OpenAi,
    Search,
}

impl UsageKind {
    /// The value stored in the `kind` columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Search => "search",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "openai" => Some(Self::OpenAi),
            "search" => Some(Self::Search),
            _ => None,
        }
    }
}

/// One finished call. `id` is generated when the event is made and never changes: it is the
/// primary key in the store, so writing the same event twice (a retried batch, a replayed
/// spill file) stores it once and counts it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The API key used, when it was one (a token has none).
    pub key_id: Option<Uuid>,
    pub kind: UsageKind,
    /// The alias the tenant called (OpenAI) or the logical index (Search).
    pub alias: String,
    /// `chat.completions`, `embeddings`, `search`, `index`, ...
    pub operation: String,
    /// The resource (member) that served the call, when one did.
    pub member: Option<String>,
    /// The Azure deployment that served the call (OpenAI only).
    pub deployment: Option<String>,
    pub region: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the prompt cache (a part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// Documents returned (reads) or actions sent (index batches).
    pub documents: u64,
    /// The HTTP status the caller got (499 when the caller hung up first).
    pub status: u16,
    pub latency_ms: u64,
    pub streamed: bool,
    /// The counts are the gateway's, not Azure's: the call ended before its usage arrived
    /// (a stream cut by the upstream, the caller or a shutdown), so the prompt is the one
    /// admission counted or estimated and the completion the text relayed. Absent in spill
    /// files written before the field existed: false.
    #[serde(default)]
    pub cut: bool,
    /// What the call cost, in pico-units of the price table's currency, from the price in
    /// force when it finished; computed once, before the event is queued, so a replayed spill
    /// file stores the cost it was recorded with. `None` when no price applied (`unpriced`)
    /// or the call is not billed per call (search).
    #[serde(default)]
    pub cost: Option<u64>,
    /// No price applied to a call that is billed per token: its cost is unknown, not 0.
    #[serde(default)]
    pub unpriced: bool,
    /// Answered from the response cache: Azure was not called, so no tokens were spent (the
    /// counts are zero) and there is nothing to price. Absent in older spill files: false.
    #[serde(default)]
    pub cache_hit: bool,
    pub finished_at: DateTime<Utc>,
}

impl UsageEvent {
    /// An OpenAI call with a fresh id and no usage yet; set the remaining fields directly.
    pub fn openai(
        tenant_id: Uuid,
        alias: impl Into<String>,
        operation: impl Into<String>,
        finished_at: DateTime<Utc>,
    ) -> Self {
        Self::new(UsageKind::OpenAi, tenant_id, alias, operation, finished_at)
    }

    /// A Search call on a logical index, with a fresh id.
    pub fn search(
        tenant_id: Uuid,
        index: impl Into<String>,
        operation: impl Into<String>,
        finished_at: DateTime<Utc>,
    ) -> Self {
        Self::new(UsageKind::Search, tenant_id, index, operation, finished_at)
    }

    fn new(
        kind: UsageKind,
        tenant_id: Uuid,
        alias: impl Into<String>,
        operation: impl Into<String>,
        finished_at: DateTime<Utc>,
    ) -> Self {
        Self {
            // Time-ordered ids keep inserts at the right edge of the primary key's B-tree.
            id: Uuid::now_v7(),
            tenant_id,
            key_id: None,
            kind,
            alias: alias.into(),
            operation: operation.into(),
            member: None,
            deployment: None,
            region: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            documents: 0,
            status: 200,
            latency_ms: 0,
            streamed: false,
            cut: false,
            cost: None,
            unpriced: false,
            cache_hit: false,
            finished_at,
        }
    }

    /// Whether the call counts as an error in the rollups: any status of 400 or more.
    pub fn is_error(&self) -> bool {
        self.status >= 400
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;

    #[test]
    fn a_spilled_event_written_before_cache_hits_existed_reads_as_no_hit() {
        let mut event = UsageEvent::openai(Uuid::new_v4(), "gpt", "embeddings", Utc::now());
        event.cache_hit = true;
        let mut line = serde_json::to_value(&event).unwrap();
        assert_eq!(line["cache_hit"], true);
        line.as_object_mut().unwrap().remove("cache_hit");
        let old: UsageEvent = serde_json::from_value(line).unwrap();
        assert!(!old.cache_hit);
        assert_eq!(old.id, event.id);
    }
}
