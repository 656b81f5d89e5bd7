//! The cache on a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`): entries shared
//! by replicas, scoped to their tenant, a tenant's byte bound held under concurrent stores,
//! TTLs, and a Redis that does not answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::Duration;

use bytes::Bytes;
use response_cache::{
    key, CacheConfig, CacheKey, Entry, EntryKind, KeyMaterial, Layer, ResponseCache, Stored,
    TenantPolicy,
};
use secrecy::SecretString;
use uuid::Uuid;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A replica's cache on Redis under a prefix of this test's own; `local` bytes in memory.
fn replica(prefix: &str, local: usize) -> ResponseCache {
    ResponseCache::new(&CacheConfig {
        redis_url: Some(SecretString::from(redis_url())),
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_millis(500),
        local_max_bytes: local,
        ..CacheConfig::default()
    })
    .unwrap()
}

fn prefix() -> String {
    format!("test:cache:{}:", Uuid::new_v4().simple())
}

fn key_of(tenant: Uuid, body: &str) -> CacheKey {
    key::derive(
        &KeyMaterial {
            tenant,
            alias: "emb",
            operation: "embeddings",
            model: "text-embedding-3-small",
            variant: "reject",
        },
        body.as_bytes(),
    )
    .unwrap()
}

const POLICY: TenantPolicy = TenantPolicy {
    ttl: Duration::from_secs(60),
    max_bytes: 1 << 20,
};

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_answer_stored_by_one_replica_is_a_hit_on_another() {
    let prefix = prefix();
    let (a, b) = (replica(&prefix, 0), replica(&prefix, 1 << 20));
    let tenant = Uuid::new_v4();
    let k = key_of(tenant, r#"{"input":"hello"}"#);
    assert!(b.get(&k, POLICY).await.is_none());
    let body = Bytes::from_static(br#"{"data":[]}"#);
    assert_eq!(
        a.put(&k, EntryKind::Json, body.clone(), POLICY).await,
        Stored::Yes
    );
    let hit = b.get(&k, POLICY).await.expect("a hit");
    assert_eq!(
        (hit.layer, hit.entry.body.clone(), hit.entry.kind),
        (Layer::Redis, body.clone(), EntryKind::Json)
    );
    // The second read on that replica is served from its memory.
    assert_eq!(b.get(&k, POLICY).await.unwrap().layer, Layer::Local);
    let m = b.metrics();
    assert_eq!((m.hits_redis, m.hits_local, m.misses), (1, 1, 1));
}

#[tokio::test]
async fn another_tenants_identical_request_never_finds_the_entry() {
    let prefix = prefix();
    let cache = replica(&prefix, 1 << 20);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let body = r#"{"input":"the very same words"}"#;
    cache
        .put(
            &key_of(a, body),
            EntryKind::Json,
            Bytes::from_static(b"{\"a\":1}"),
            POLICY,
        )
        .await;
    assert!(cache.get(&key_of(b, body), POLICY).await.is_none());
    assert!(replica(&prefix, 0)
        .get(&key_of(b, body), POLICY)
        .await
        .is_none());
}

#[tokio::test]
async fn an_entry_copied_under_another_tenants_name_is_not_served() {
    // Whatever Redis holds under B's name, an entry that names A is never B's answer.
    let prefix = prefix();
    let cache = replica(&prefix, 0);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let body = r#"{"input":"x"}"#;
    let (ka, kb) = (key_of(a, body), key_of(b, body));
    let entry = Entry::new(
        &ka,
        EntryKind::Json,
        Bytes::from_static(b"{}"),
        response_cache::now_ms(),
        60_000,
    );
    let mut conn = redis().await;
    let _: () = redis::cmd("SET")
        .arg(cache.redis_entry_name(&kb).unwrap())
        .arg(entry.encode())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(cache.get(&kb, POLICY).await.is_none());
    // ...and B's own entry under B's name is (the check is not refusing everything).
    let own = Entry::new(
        &kb,
        EntryKind::Json,
        Bytes::from_static(b"{}"),
        response_cache::now_ms(),
        60_000,
    );
    let _: () = redis::cmd("SET")
        .arg(cache.redis_entry_name(&kb).unwrap())
        .arg(own.encode())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(cache.get(&kb, POLICY).await.is_some());
}

#[tokio::test]
async fn an_entry_expires_with_its_ttl_and_a_lowered_ttl_applies_at_once() {
    let prefix = prefix();
    let cache = replica(&prefix, 0);
    let k = key_of(Uuid::new_v4(), r#"{"input":"short"}"#);
    let short = TenantPolicy {
        ttl: Duration::from_millis(300),
        ..POLICY
    };
    cache
        .put(&k, EntryKind::Json, Bytes::from_static(b"{}"), short)
        .await;
    assert!(cache.get(&k, short).await.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(cache.get(&k, short).await.is_none(), "expired");
    cache
        .put(&k, EntryKind::Json, Bytes::from_static(b"{}"), POLICY)
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lowered = TenantPolicy {
        ttl: Duration::from_millis(10),
        ..POLICY
    };
    assert!(
        cache.get(&k, lowered).await.is_none(),
        "older than the TTL now in force"
    );
    assert!(cache.get(&k, POLICY).await.is_some());
}

#[tokio::test]
async fn a_tenant_over_its_bound_loses_its_oldest_entries_and_no_other_tenants() {
    let prefix = prefix();
    let cache = replica(&prefix, 0);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let body = Bytes::from(vec![b'x'; 1000]);
    let size = Entry::new(&key_of(a, "{}"), EntryKind::Json, body.clone(), 0, 1).size() as u64;
    let tight = TenantPolicy {
        max_bytes: 3 * size,
        ..POLICY
    };
    cache
        .put(
            &key_of(b, r#"{"n":0}"#),
            EntryKind::Json,
            body.clone(),
            tight,
        )
        .await;
    for n in 0..5 {
        let k = key_of(a, &format!(r#"{{"n":{n}}}"#));
        assert_eq!(
            cache.put(&k, EntryKind::Json, body.clone(), tight).await,
            Stored::Yes
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut held = Vec::new();
    for n in 0..5 {
        held.push(
            cache
                .get(&key_of(a, &format!(r#"{{"n":{n}}}"#)), tight)
                .await
                .is_some(),
        );
    }
    assert_eq!(held, [false, false, true, true, true]);
    assert!(cache.get(&key_of(b, r#"{"n":0}"#), tight).await.is_some());
    assert_eq!(cache.metrics().evictions_redis, 2);
    let too_big = TenantPolicy {
        max_bytes: size - 1,
        ..POLICY
    };
    assert_eq!(
        cache
            .put(&key_of(a, r#"{"n":9}"#), EntryKind::Json, body, too_big)
            .await,
        Stored::TooLarge
    );
}

#[tokio::test]
async fn concurrent_stores_from_several_replicas_never_take_a_tenant_past_its_bound() {
    let prefix = prefix();
    let replicas: Vec<_> = (0..3)
        .map(|_| std::sync::Arc::new(replica(&prefix, 0)))
        .collect();
    let tenant = Uuid::new_v4();
    let body = Bytes::from(vec![b'y'; 500]);
    let size = Entry::new(&key_of(tenant, "{}"), EntryKind::Json, body.clone(), 0, 1).size() as u64;
    let policy = TenantPolicy {
        max_bytes: 10 * size,
        ..POLICY
    };
    let mut tasks = Vec::new();
    for (r, cache) in replicas.iter().enumerate() {
        for n in 0..40 {
            let (cache, body) = (cache.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let k = key_of(tenant, &format!(r#"{{"r":{r},"n":{n}}}"#));
                cache.put(&k, EntryKind::Json, body, policy).await
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Stored::Yes);
    }
    let mut conn = redis().await;
    let pattern = format!("{prefix}t:{{{tenant}}}:e:*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        keys.len(),
        10,
        "exactly the bound's worth of entries remain"
    );
    let total: u64 = redis::cmd("HGET")
        .arg(format!("{prefix}t:{{{tenant}}}:sz"))
        .arg("#")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total, 10 * size);
}

#[tokio::test]
async fn a_redis_that_does_not_answer_is_a_miss_within_the_timeout() {
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let cache = ResponseCache::new(&CacheConfig {
        redis_url: Some(SecretString::from(format!("redis://{addr}"))),
        timeout: Duration::from_millis(100),
        ..CacheConfig::default()
    })
    .unwrap();
    let k = key_of(Uuid::new_v4(), r#"{"input":"x"}"#);
    let started = std::time::Instant::now();
    assert!(cache.get(&k, POLICY).await.is_none());
    assert_eq!(
        cache
            .put(&k, EntryKind::Json, Bytes::from_static(b"{}"), POLICY)
            .await,
        Stored::Failed
    );
    assert!(
        cache.get(&k, POLICY).await.is_some(),
        "this replica's memory still serves it"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let m = cache.metrics();
    assert!(m.redis_errors >= 1, "{m:?}");
    assert_eq!(m.redis_errors + m.redis_skipped, 2, "{m:?}");
}

#[tokio::test]
async fn without_redis_the_memory_layer_holds_entries_for_their_ttl_within_the_bound() {
    let cache = ResponseCache::new(&CacheConfig::default()).unwrap();
    assert!(!cache.is_shared());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let k = key_of(a, r#"{"input":"x"}"#);
    assert_eq!(
        cache
            .put(
                &k,
                EntryKind::EventStream,
                Bytes::from_static(b"data: [DONE]\n\n"),
                POLICY
            )
            .await,
        Stored::Yes
    );
    let hit = cache.get(&k, POLICY).await.unwrap();
    assert_eq!(hit.entry.kind, EntryKind::EventStream);
    assert!(cache
        .get(&key_of(b, r#"{"input":"x"}"#), POLICY)
        .await
        .is_none());
}
