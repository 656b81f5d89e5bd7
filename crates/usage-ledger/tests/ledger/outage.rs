//! The store goes away: a TCP proxy between the ledger and Postgres is cut (live connections
//! dropped, new ones closed on accept) and later restored. Nothing recorded may be lost and
//! nothing may be stored or counted twice.

use std::collections::BTreeSet;
use std::sync::Arc;

use usage_ledger::{Ledger, UsageEvent};
use uuid::Uuid;

use crate::support::{
    config, expected_hourly, spilled_lines, temp_dir, until, varied_event, Db, Proxy,
};

const PRODUCERS: u64 = 8;
const PER_PRODUCER: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_while_recording_concurrently_loses_nothing_and_counts_nothing_twice() {
    let db = Db::postgres().await;
    let proxy = Arc::new(Proxy::postgres().await);
    let spill = temp_dir("spill");
    let mut tight = config(&spill);
    // Small enough that the outage fills memory (spilled by the writer) and the channel
    // (spilled by `record` itself).
    tight.channel_capacity = 64;
    tight.memory_limit = 200;
    let ledger = Arc::new(Ledger::start(&db.via(&proxy), tight).await.unwrap());
    let tenant = Uuid::new_v4();
    let keys: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (ledger, proxy, keys) = (Arc::clone(&ledger), Arc::clone(&proxy), keys.clone());
            tokio::spawn(async move {
                let mut recorded = Vec::new();
                let mut during_outage = None;
                for n in 0..PER_PRODUCER {
                    // Producer 0 also plays the outage, while the others keep recording: the
                    // cut drops connections the pool is using.
                    if p == 0 && n == 300 {
                        until(&ledger, "some events are written", |m| m.written > 0).await;
                        proxy.cut();
                    }
                    if p == 0 && n == 700 {
                        until(&ledger, "the outage is held and spilled", |m| {
                            !m.store_up && m.write_errors > 0 && m.in_spill > 0
                        })
                        .await;
                        during_outage = Some(ledger.metrics());
                        proxy.restore();
                    }
                    let event = varied_event(tenant, &keys, p * PER_PRODUCER + n);
                    recorded.push(event.clone());
                    ledger.record(event);
                    if n.is_multiple_of(20) {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
                (recorded, during_outage)
            })
        })
        .collect();
    let mut recorded: Vec<UsageEvent> = Vec::new();
    let mut during_outage = None;
    for producer in futures::future::join_all(producers).await {
        let (events, seen) = producer.unwrap();
        recorded.extend(events);
        during_outage = during_outage.or(seen);
    }
    let total = PRODUCERS * PER_PRODUCER;
    assert_eq!(recorded.len() as u64, total);

    // While the store was away the ledger said so, and held and spilled the events.
    let seen = during_outage.unwrap();
    assert!(!seen.store_up, "{seen:?}");
    assert!(seen.write_errors > 0 && seen.spilled > 0, "{seen:?}");
    assert!(seen.buffered() > 0 && seen.lag.is_some(), "{seen:?}");

    until(&ledger, "everything recorded is in the store", |m| {
        m.buffered() == 0 && m.written - m.duplicates == total
    })
    .await;
    let metrics = ledger.shutdown().await.unwrap();
    assert!(metrics.store_up);
    assert_eq!(metrics.accepted, total);
    assert_eq!(
        metrics.replayed, metrics.spilled,
        "every spilled event came back"
    );
    assert_eq!((metrics.in_spill, metrics.corrupt_spill_lines), (0, 0));
    assert_eq!(spilled_lines(&spill), 0);

    // Exactly one row per recorded event, and rollups that count each once.
    assert_eq!(db.check.count().await, total as i64);
    let stored: BTreeSet<Uuid> = db.check.ids().await.into_iter().collect();
    assert_eq!(stored, recorded.iter().map(|e| e.id).collect());
    assert_eq!(db.check.hourly().await, expected_hourly(&recorded));
}

fn events(count: u64) -> Vec<UsageEvent> {
    let (tenant, keys) = (Uuid::new_v4(), vec![Uuid::new_v4(), Uuid::new_v4()]);
    (0..count).map(|n| varied_event(tenant, &keys, n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_spills_and_the_next_ledger_replays_it_once() {
    let db = Db::postgres().await;
    let proxy = Proxy::postgres().await;
    let spill = temp_dir("spill");
    let mut small = config(&spill);
    small.memory_limit = 100;
    let ledger = Ledger::start(&db.via(&proxy), small.clone()).await.unwrap();
    let before = events(50);
    for event in &before {
        ledger.record(event.clone());
    }
    until(&ledger, "the first events are written", |m| m.written == 50).await;

    proxy.cut();
    let during = events(500);
    for event in &during {
        ledger.record(event.clone());
    }
    until(&ledger, "the store is seen down", |m| !m.store_up).await;
    let metrics = ledger.shutdown().await.unwrap();
    // Nothing is left in memory: what the store did not take is on disk.
    assert_eq!((metrics.in_channel, metrics.in_memory), (0, 0));
    assert_eq!((metrics.spilled, metrics.in_spill), (500, 500));
    assert!(metrics.lag.is_some());
    assert_eq!(spilled_lines(&spill), 500);
    assert_eq!(db.check.count().await, 50);
    drop(ledger);

    // The next process starts while the store is still away: it keeps the file and retries.
    let next = Ledger::start(&db.via(&proxy), small.clone()).await.unwrap();
    until(&next, "the replay was tried", |m| m.write_errors > 0).await;
    assert_eq!(db.check.count().await, 50);
    proxy.restore();
    until(&next, "the spill file is replayed", |m| {
        m.in_spill == 0 && m.replayed == 500
    })
    .await;
    next.shutdown().await.unwrap();
    drop(next);
    let all: Vec<UsageEvent> = before.iter().chain(&during).cloned().collect();
    let stored: BTreeSet<Uuid> = db.check.ids().await.into_iter().collect();
    assert_eq!(stored, all.iter().map(|e| e.id).collect());
    assert_eq!(db.check.hourly().await, expected_hourly(&all));
    assert_eq!(spilled_lines(&spill), 0);

    // A third start finds nothing to replay: the file went once it was committed.
    let third = Ledger::start(&db.url, small).await.unwrap();
    assert_eq!(third.metrics().in_spill, 0);
    let metrics = third.shutdown().await.unwrap();
    assert_eq!((metrics.replayed, metrics.written), (0, 0));
    assert_eq!(db.check.count().await, 550);
    assert_eq!(db.check.hourly().await, expected_hourly(&all));
}

#[tokio::test]
async fn a_spill_directory_serves_one_ledger_at_a_time() {
    let db = Db::sqlite().await;
    let spill = temp_dir("spill");
    let first = Ledger::start(&db.url, config(&spill)).await.unwrap();
    let second = Ledger::start(&db.url, config(&spill)).await;
    assert!(matches!(
        second,
        Err(usage_ledger::LedgerError::SpillDirInUse(_))
    ));
    first.shutdown().await.unwrap();
    drop(first);
    let again = Ledger::start(&db.url, config(&spill)).await.unwrap();
    again.shutdown().await.unwrap();
}
