//! How a ledger buffers, batches and retries.

use std::path::PathBuf;
use std::time::Duration;

/// Tuning for a [`crate::Ledger`]. Memory held at most: `channel_capacity + memory_limit`
/// events (plus one batch being written); everything beyond goes to the spill file.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Events queued between `record` and the writer. When it is full, `record` appends the
    /// event to the spill file instead (it never waits and never drops).
    pub channel_capacity: usize,
    /// Events written per transaction.
    pub batch_size: usize,
    /// A partial batch is written when its first event has waited this long; also how often
    /// the writer fsyncs and hands over what `record` spilled.
    pub flush_interval: Duration,
    /// Events the writer holds in memory while the store is down; beyond this it spills the
    /// oldest to disk (down to half the limit, so each fsync covers many events). Raised to
    /// `batch_size` if below it.
    pub memory_limit: usize,
    /// Where spill files live. One ledger per directory (a lock file enforces it).
    pub spill_dir: PathBuf,
    /// Connections in the ledger's own pool (one writes, one serves queries).
    pub max_connections: u32,
    /// How long a write waits for a connection (and so how long a dead store blocks a try).
    pub acquire_timeout: Duration,
    /// A batch write that takes longer than this is abandoned and retried (it is idempotent).
    pub write_timeout: Duration,
    /// First wait after a failed write; doubled after each failure up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl LedgerConfig {
    /// Defaults for a gateway replica: 8192 queued, batches of 500 or every 500 ms, 50 000
    /// events in memory during an outage, retries from 100 ms up to 5 s.
    pub fn new(spill_dir: impl Into<PathBuf>) -> Self {
        Self {
            channel_capacity: 8192,
            batch_size: 500,
            flush_interval: Duration::from_millis(500),
            memory_limit: 50_000,
            spill_dir: spill_dir.into(),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}
