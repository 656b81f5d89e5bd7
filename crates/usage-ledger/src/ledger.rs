//! The handle the gateway holds: `record` on the request path, metrics, queries, shutdown.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::metrics::Counters;
use crate::spill::Spill;
use crate::writer::{log_lost, Shared, Writer};
use crate::{
    Granularity, GroupBy, LedgerConfig, LedgerError, LedgerMetrics, LedgerStore, UsageEvent,
    UsageRow,
};

/// The usage ledger. Share it behind an `Arc`; call [`Ledger::shutdown`] before the runtime
/// stops (dropping it also flushes, but only while the runtime still runs the writer).
pub struct Ledger {
    tx: mpsc::Sender<UsageEvent>,
    shared: Arc<Shared>,
    store: LedgerStore,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.store.backend())
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens the ledger's own pool on `database_url` (`postgres://...` or `sqlite:...`; the
    /// tables come from the workspace migrations), locks `config.spill_dir` and starts the
    /// writer, which first replays any spill file a previous process left. Does not need the
    /// store to be up: until it is, events are held and spilled.
    pub async fn start(database_url: &str, config: LedgerConfig) -> Result<Self, LedgerError> {
        let store = LedgerStore::connect_lazy(
            database_url,
            config.max_connections.max(1),
            config.acquire_timeout,
        )?;
        let dir = config.spill_dir.clone();
        let (spill, pending) = tokio::task::spawn_blocking(move || Spill::open(&dir))
            .await
            .map_err(|e| LedgerError::Writer(e.to_string()))??;
        let left: u64 = pending.iter().map(|file| file.lines).sum();
        if left > 0 {
            tracing::info!(
                target: "bulkhead::usage",
                events = left,
                files = pending.len(),
                "replaying usage spilled by an earlier process"
            );
        }
        let shared = Arc::new(Shared {
            spill,
            counters: Counters::default(),
            overflow: Mutex::new(Vec::new()),
        });
        Counters::add(&shared.counters.in_spill, left as usize);
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let (stop, stopped) = oneshot::channel();
        let writer = Writer::new(rx, store.clone(), Arc::clone(&shared), &config, pending);
        let handle = tokio::spawn(writer.run(stopped));
        Ok(Self {
            tx,
            shared,
            store,
            stop: Mutex::new(Some(stop)),
            writer: tokio::sync::Mutex::new(Some(handle)),
        })
    }

    /// Takes one event. Never waits and never drops: the event is queued for the writer or,
    /// when the queue is full, appended to the spill file (a write to the page cache under
    /// a short lock, fsynced by the writer within `flush_interval`). After shutdown it is
    /// appended and fsynced at once, for the next ledger to replay.
    pub fn record(&self, event: UsageEvent) {
        let counters = &self.shared.counters;
        Counters::add(&counters.accepted, 1);
        let (event, after_shutdown) = match self.tx.try_send(event) {
            Ok(()) => return,
            Err(TrySendError::Full(event)) => (event, false),
            Err(TrySendError::Closed(event)) => (event, true),
        };
        let spill = &self.shared.spill;
        let appended = spill.append_unsynced(&event).and_then(|()| {
            if after_shutdown {
                spill.sync_if_dirty()
            } else {
                Ok(())
            }
        });
        match appended {
            Ok(()) => {
                Counters::add(&counters.spilled, 1);
                Counters::add(&counters.in_spill, 1);
            }
            Err(error) => {
                Counters::add(&counters.spill_errors, 1);
                tracing::error!(target: "bulkhead::usage", %error, "usage spill append failed");
                if after_shutdown {
                    Counters::add(&counters.lost, 1);
                    log_lost(&event);
                } else {
                    self.shared.overflow.lock().push(event);
                }
            }
        }
    }

    /// The ledger's counters, read from atomics.
    pub fn metrics(&self) -> LedgerMetrics {
        let queued = self.tx.max_capacity() - self.tx.capacity();
        self.shared.counters.snapshot(queued)
    }

    /// The ledger's store, for queries.
    pub fn store(&self) -> &LedgerStore {
        &self.store
    }

    /// A tenant's usage from the hourly rollups: see [`LedgerStore::usage`].
    pub async fn usage(
        &self,
        tenant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Granularity,
        group_by: GroupBy,
    ) -> Result<Vec<UsageRow>, LedgerError> {
        self.store
            .usage(tenant_id, from, to, granularity, group_by)
            .await
    }

    /// Stops the writer after it has taken every queued event and written memory to the
    /// store, or, if the store does not take it, to the spill file (fsynced); spill files are
    /// then replayed while the store takes them. Returns the final metrics. Later `record`
    /// calls go straight to the spill file. Calling it again returns at once.
    pub async fn shutdown(&self) -> Result<LedgerMetrics, LedgerError> {
        let mut writer = self.writer.lock().await;
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
        if let Some(handle) = writer.take() {
            handle
                .await
                .map_err(|e| LedgerError::Writer(e.to_string()))?;
        }
        Ok(self.metrics())
    }
}
