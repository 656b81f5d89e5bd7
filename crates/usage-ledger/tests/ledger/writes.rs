//! Batching, rollups, idempotent replays, shutdown and a full channel, on both backends.

use std::collections::BTreeSet;
use std::time::Duration;

use usage_ledger::{Ledger, LedgerStore, UsageEvent, UsageKind, WriteOutcome};
use uuid::Uuid;

use crate::support::{config, expected_hourly, spilled_lines, temp_dir, until, varied_event, Db};

fn keys() -> Vec<Uuid> {
    (0..3).map(|_| Uuid::new_v4()).collect()
}

fn events(count: u64) -> Vec<UsageEvent> {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (keys_a, keys_b) = (keys(), keys());
    (0..count)
        .map(|n| {
            if n % 4 == 0 {
                varied_event(b, &keys_b, n)
            } else {
                varied_event(a, &keys_a, n)
            }
        })
        .collect()
}

async fn batches_write_exactly_the_recorded_events(db: Db) {
    let spill = temp_dir("spill");
    let ledger = Ledger::start(&db.url, config(&spill)).await.unwrap();
    let recorded = events(1000);
    for event in &recorded {
        ledger.record(event.clone());
    }
    // Written by the batching writer alone, before any shutdown. The counters are separate
    // atomics: `written` counts a batch as soon as the store took it, and the writer releases
    // it from memory just after, so wait for both rather than read a snapshot in between.
    until(&ledger, "every event is written and released", |m| {
        m.written == 1000 && m.buffered() == 0
    })
    .await;
    let metrics = ledger.metrics();
    assert_eq!(
        (metrics.accepted, metrics.duplicates, metrics.buffered()),
        (1000, 0, 0)
    );
    assert_eq!((metrics.write_errors, metrics.spilled), (0, 0));
    assert!(metrics.store_up);
    assert_eq!(metrics.lag, None, "nothing is waiting");

    let stored: BTreeSet<Uuid> = db.check.ids().await.into_iter().collect();
    let expected: BTreeSet<Uuid> = recorded.iter().map(|e| e.id).collect();
    assert_eq!(stored, expected);

    // Every field round-trips (timestamps to the microsecond).
    for original in recorded.iter().take(20) {
        let e = db.check.event(original.id).await;
        assert_eq!((e.id, e.tenant_id), (original.id, original.tenant_id));
        assert_eq!(e.key_id, original.key_id);
        assert_eq!(e.kind, original.kind.as_str());
        assert_eq!(
            (&e.alias, &e.operation),
            (&original.alias, &original.operation)
        );
        assert_eq!(
            (&e.member, &e.deployment, &e.region),
            (&original.member, &original.deployment, &original.region)
        );
        assert_eq!(
            [
                e.prompt_tokens,
                e.completion_tokens,
                e.cached_tokens,
                e.documents,
                e.latency_ms
            ],
            [
                original.prompt_tokens,
                original.completion_tokens,
                original.cached_tokens,
                original.documents,
                original.latency_ms
            ]
            .map(|n| n as i64)
        );
        assert_eq!(
            (e.status, e.streamed, e.cache_hit),
            (
                i32::from(original.status),
                original.streamed,
                original.cache_hit
            )
        );
        assert_eq!(
            e.finished_at.timestamp_micros(),
            original.finished_at.timestamp_micros()
        );
    }
    ledger.shutdown().await.unwrap();
}

async fn rollups_match_the_events(db: Db) {
    let spill = temp_dir("spill");
    let ledger = Ledger::start(&db.url, config(&spill)).await.unwrap();
    let recorded = events(2000);
    for event in &recorded {
        ledger.record(event.clone());
    }
    ledger.shutdown().await.unwrap();
    let rollups = db.check.hourly().await;
    assert_eq!(rollups, expected_hourly(&recorded));
    let requests: i64 = rollups.values().map(|sums| sums[0]).sum();
    assert_eq!(requests, db.check.count().await);
}

async fn replaying_a_batch_never_counts_twice(db: Db) {
    let store = LedgerStore::connect_lazy(&db.url, 2, Duration::from_secs(5)).unwrap();
    let all = events(300);
    let (first, second) = all.split_at(200);

    let outcome = store.write(first).await.unwrap();
    assert_eq!(
        outcome,
        WriteOutcome {
            inserted: 200,
            duplicates: 0
        }
    );
    let after_first = db.check.hourly().await;
    assert_eq!(after_first, expected_hourly(first));

    // The same batch again (a retry after an ambiguous commit): nothing changes.
    let again = store.write(first).await.unwrap();
    assert_eq!(
        again,
        WriteOutcome {
            inserted: 0,
            duplicates: 200
        }
    );
    assert_eq!(db.check.hourly().await, after_first);

    // A batch overlapping the first, carrying one event twice: each new event counts once.
    let mut overlapping: Vec<UsageEvent> = first[150..].to_vec();
    overlapping.extend_from_slice(second);
    overlapping.push(second[0].clone());
    let outcome = store.write(&overlapping).await.unwrap();
    assert_eq!(
        outcome,
        WriteOutcome {
            inserted: 100,
            duplicates: 51
        }
    );
    assert_eq!(db.check.count().await, 300);
    assert_eq!(db.check.hourly().await, expected_hourly(&all));
}

async fn shutdown_writes_what_is_held_and_later_records_wait_for_the_next_ledger(db: Db) {
    let spill = temp_dir("spill");
    let mut held = config(&spill);
    // Nothing would be written before shutdown on its own.
    held.batch_size = 100_000;
    held.flush_interval = Duration::from_secs(3600);
    let ledger = Ledger::start(&db.url, held.clone()).await.unwrap();
    let recorded = events(300);
    for event in &recorded {
        ledger.record(event.clone());
    }
    until(&ledger, "the writer holds every event", |m| {
        m.in_memory == 300
    })
    .await;
    assert_eq!(db.check.count().await, 0);
    assert!(ledger.metrics().lag.is_some());

    let metrics = ledger.shutdown().await.unwrap();
    assert_eq!((metrics.written, metrics.buffered()), (300, 0));
    assert_eq!(db.check.count().await, 300);
    assert_eq!(db.check.hourly().await, expected_hourly(&recorded));
    assert_eq!(
        ledger.shutdown().await.unwrap().written,
        300,
        "a second shutdown returns at once"
    );

    // After shutdown, a record goes to the spill file, fsynced, for the next ledger.
    let late = UsageEvent::search(Uuid::new_v4(), "docs", "index", chrono::Utc::now());
    ledger.record(late.clone());
    let metrics = ledger.metrics();
    assert_eq!((metrics.spilled, metrics.in_spill), (1, 1));
    assert_eq!(spilled_lines(&spill), 1);
    drop(ledger);

    let next = Ledger::start(&db.url, held).await.unwrap();
    until(&next, "the late record is replayed", |m| m.replayed == 1).await;
    next.shutdown().await.unwrap();
    assert_eq!(db.check.count().await, 301);
    assert_eq!(
        db.check.event(late.id).await.kind,
        UsageKind::Search.as_str()
    );
    assert_eq!(spilled_lines(&spill), 0);
}

async fn a_full_channel_spills_instead_of_dropping(db: Db) {
    let spill = temp_dir("spill");
    let mut tiny = config(&spill);
    tiny.channel_capacity = 1;
    let ledger = Ledger::start(&db.url, tiny).await.unwrap();
    let recorded = events(3000);
    // No await in between: the writer cannot keep up with a channel of one.
    for event in &recorded {
        ledger.record(event.clone());
    }
    let metrics = ledger.metrics();
    assert_eq!(metrics.accepted, 3000);
    assert!(metrics.spilled > 0, "{metrics:?}");
    until(&ledger, "spilled events are replayed", |m| {
        m.written == 3000 && m.buffered() == 0
    })
    .await;
    let metrics = ledger.shutdown().await.unwrap();
    assert_eq!(metrics.replayed, metrics.spilled);
    let stored: BTreeSet<Uuid> = db.check.ids().await.into_iter().collect();
    assert_eq!(stored, recorded.iter().map(|e| e.id).collect());
    assert_eq!(db.check.hourly().await, expected_hourly(&recorded));
    assert_eq!(spilled_lines(&spill), 0);
}

crate::on_both_backends!(
    batches_write_exactly_the_recorded_events,
    rollups_match_the_events,
    replaying_a_batch_never_counts_twice,
    shutdown_writes_what_is_held_and_later_records_wait_for_the_next_ledger,
    a_full_channel_spills_instead_of_dropping,
);
