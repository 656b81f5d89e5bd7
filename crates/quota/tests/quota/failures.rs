//! Redis going away, hanging, restarting: the limiter never panics, waits at most its timeout,
//! fails open or closed as configured, and uses Redis again without a restart of its own.

use std::time::{Duration, Instant};

use quota::{Decider, Limiter, OnRedisError, Refusal};

use crate::support::{
    config, delete_prefix, eventually, free_port, limits, redis_addr, redis_url, tenant,
    unique_prefix, Mode, PrivateRedis, Proxy,
};

/// Far below what a stuck call would take, far above a 50 ms timeout on a busy machine.
const BOUND: Duration = Duration::from_millis(500);

async fn back_on_redis(limiter: &Limiter, scopes: &[quota::ScopeLimits]) -> bool {
    eventually(Duration::from_secs(5), || async {
        match limiter.reserve(scopes, 1).await {
            Ok(a) => {
                let on_redis = a.decider() == Decider::Redis;
                a.settle(1).await;
                on_redis
            }
            Err(_) => false,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_decides_in_process_while_redis_hangs_and_the_timeout_bounds_the_wait() {
    let proxy = Proxy::start(redis_addr().await).await;
    let prefix = unique_prefix("fail_open_hang");
    let mut cfg = config(&proxy.url(), &prefix);
    cfg.on_redis_error = OnRedisError::FailOpen;
    cfg.retry_interval = Duration::from_millis(200);
    let limiter = Limiter::new(cfg).unwrap();
    let scopes = [tenant("acme", limits(Some(100), None, None))];

    let a = limiter.reserve(&scopes, 10).await.unwrap();
    assert_eq!(a.decider(), Decider::Redis);
    a.settle(10).await;

    proxy.set(Mode::Stall);
    let started = Instant::now();
    let a = limiter.reserve(&scopes, 60).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(a.decider(), Decider::Local);
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(waited < BOUND, "{waited:?}");

    // The in-process limits hold: 40 of the local bucket's 100 are left. Redis, known down, is
    // not tried again within the retry interval, so this one does not wait at all.
    let refusal = limiter.reserve(&scopes, 60).await.unwrap_err();
    assert!(
        matches!(refusal, Refusal::RateLimited { .. }),
        "{refusal:?}"
    );
    let m = limiter.metrics();
    assert_eq!(m.fail_open, 2);
    assert_eq!(m.redis_errors, 1);
    a.settle(60).await;

    proxy.set(Mode::Forward);
    assert!(back_on_redis(&limiter, &scopes).await);
    delete_prefix(&redis_url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_while_redis_is_cut_and_uses_it_again_once_restored() {
    let proxy = Proxy::start(redis_addr().await).await;
    let prefix = unique_prefix("fail_closed_cut");
    let limiter = Limiter::new(config(&proxy.url(), &prefix)).unwrap();
    let scopes = [tenant("acme", limits(None, None, Some(1_000)))];

    let a = limiter.reserve(&scopes, 100).await.unwrap();
    assert_eq!(a.decider(), Decider::Redis);
    a.settle(100).await;

    proxy.set(Mode::Refuse);
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(
            limiter.reserve(&scopes, 100).await.unwrap_err(),
            Refusal::Unavailable
        );
        assert!(started.elapsed() < BOUND);
    }
    let m = limiter.metrics();
    assert_eq!(m.refused_unavailable, 3);
    assert_eq!(m.fail_open, 0);
    assert!(m.redis_errors >= 1);

    proxy.set(Mode::Forward);
    assert!(back_on_redis(&limiter, &scopes).await);
    // The counters were in Redis all along: 100 of 1000 used, plus the probe's 1.
    let a = limiter.reserve(&scopes, 0).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(899));
    a.settle(0).await;
    delete_prefix(&redis_url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_fails_open_or_closed_at_once() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let scopes = [tenant("acme", limits(Some(100), Some(10), Some(1_000)))];

    let mut cfg = config(&url, "unused:");
    cfg.on_redis_error = OnRedisError::FailOpen;
    let open = Limiter::new(cfg).unwrap();
    assert!(open.warm_up(Duration::from_millis(200)).await.is_err());
    let started = Instant::now();
    let a = open.reserve(&scopes, 100).await.unwrap();
    assert!(started.elapsed() < BOUND);
    assert_eq!(a.decider(), Decider::Local);
    assert_eq!(a.remaining_tokens(), Some(0));
    assert_eq!(a.remaining_requests(), Some(9));
    a.settle(100).await;
    assert_eq!(open.metrics().fail_open, 1);

    let closed = Limiter::new(config(&url, "unused:")).unwrap();
    let started = Instant::now();
    assert_eq!(
        closed.reserve(&scopes, 100).await.unwrap_err(),
        Refusal::Unavailable
    );
    assert!(started.elapsed() < BOUND);
    assert_eq!(closed.metrics().refused_unavailable, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_redis_does_not_take_is_counted_not_raised() {
    let proxy = Proxy::start(redis_addr().await).await;
    let prefix = unique_prefix("settle_lost");
    let limiter = Limiter::new(config(&proxy.url(), &prefix)).unwrap();
    let scopes = [tenant("acme", limits(None, None, Some(1_000)))];
    let a = limiter.reserve(&scopes, 100).await.unwrap();
    proxy.set(Mode::Refuse);
    let started = Instant::now();
    a.settle(10).await;
    assert!(started.elapsed() < BOUND);
    let m = limiter.metrics();
    assert_eq!(m.settle_failures, 1);
    assert_eq!(m.settled, 0);
    delete_prefix(&redis_url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_is_used_again_with_its_scripts_reloaded() {
    let mut redis = PrivateRedis::start().await;
    let limiter = Limiter::new(config(&redis.url(), "restart:")).unwrap();
    limiter.warm_up(Duration::from_secs(5)).await.unwrap();
    let scopes = [tenant("acme", limits(None, None, Some(1_000)))];
    let a = limiter.reserve(&scopes, 300).await.unwrap();
    assert_eq!(a.decider(), Decider::Redis);
    a.settle(300).await;

    redis.stop();
    assert_eq!(
        limiter.reserve(&scopes, 100).await.unwrap_err(),
        Refusal::Unavailable
    );
    redis.restart().await;
    assert!(back_on_redis(&limiter, &scopes).await);
    // Without persistence the restarted Redis starts from zero: 1 used by the probe.
    let a = limiter.reserve(&scopes, 0).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(999));
    a.settle(0).await;

    // A script cache flushed under a live connection is reloaded on NOSCRIPT, transparently.
    let errors = limiter.metrics().redis_errors;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let a = limiter.reserve(&scopes, 100).await.unwrap();
    assert_eq!(a.decider(), Decider::Redis);
    assert_eq!(a.remaining_tokens(), Some(899));
    a.settle(50).await;
    let a = limiter.reserve(&scopes, 0).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(949));
    a.settle(0).await;
    assert_eq!(limiter.metrics().redis_errors, errors);
}

#[tokio::test]
async fn the_month_counted_in_redis_is_the_current_utc_month() {
    let prefix = unique_prefix("month");
    let limiter = Limiter::new(config(&redis_url(), &prefix)).unwrap();
    let scopes = [tenant("acme", limits(None, None, Some(1_000)))];
    limiter.reserve(&scopes, 10).await.unwrap().settle(10).await;

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (month, used): (u32, u64) = redis::cmd("HMGET")
        .arg(format!("{prefix}t:acme"))
        .arg("m")
        .arg("mu")
        .query_async(&mut conn)
        .await
        .unwrap();
    let now: u32 = chrono::Utc::now()
        .format("%Y%m")
        .to_string()
        .parse()
        .unwrap();
    assert_eq!(month, now);
    assert_eq!(used, 10);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}t:acme"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 34 * 24 * 3600 * 1000, "{ttl}");
    delete_prefix(&redis_url(), &prefix).await;
}
