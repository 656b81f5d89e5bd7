//! Reserve + settle round trips against Redis (at `REDIS_URL`, default 127.0.0.1:6379) and in
//! process, reporting p50/p99/p99.9 microseconds per reservation and per settlement.
//!
//! `cargo bench -p quota --bench reserve_settle` (release build; run on demand, never a test).
//! `QUOTA_BENCH_ITERS` (default 20000) operations per run, `QUOTA_BENCH_TASKS` (default 16)
//! tasks in the concurrent run. Each admission covers two scopes (tenant and key) with all three
//! limits set high enough never to refuse, and settles to a different amount, so that every
//! settlement is a real round trip.

#![expect(clippy::print_stdout, reason = "a benchmark reports on the terminal")]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly"
)]

use std::time::{Duration, Instant};

use quota::{Limiter, Limits, OnRedisError, QuotaConfig, Scope, ScopeLimits};
use secrecy::SecretString;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn scopes(tenant: usize) -> Vec<ScopeLimits> {
    let generous = Limits {
        tokens_per_minute: Some(quota::MAX_LIMIT),
        requests_per_minute: Some(quota::MAX_LIMIT),
        monthly_tokens: Some(quota::MAX_LIMIT),
    };
    vec![
        ScopeLimits::new(Scope::tenant(format!("bench-{tenant}")), generous),
        ScopeLimits::new(Scope::api_key(format!("bench-{tenant}"), "key"), generous),
    ]
}

#[derive(Default)]
struct Samples {
    reserve: Vec<Duration>,
    settle: Vec<Duration>,
}

impl Samples {
    fn extend(&mut self, other: Samples) {
        self.reserve.extend(other.reserve);
        self.settle.extend(other.settle);
    }
}

async fn run(limiter: Limiter, tenant: usize, iterations: usize) -> Samples {
    let scopes = scopes(tenant);
    let mut samples = Samples::default();
    for _ in 0..iterations {
        let started = Instant::now();
        let admission = limiter.reserve(&scopes, 1_000).await.expect("admitted");
        let reserved = Instant::now();
        admission.settle(400).await;
        samples.reserve.push(reserved - started);
        samples.settle.push(reserved.elapsed());
    }
    samples
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank].as_nanos() as f64 / 1_000.0
}

fn report(name: &str, mut samples: Samples, wall: Duration) {
    samples.reserve.sort();
    samples.settle.sort();
    let n = samples.reserve.len();
    println!(
        "{name:<28} {n:>7} admissions in {:>6.2} s = {:>7.0}/s",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    for (what, s) in [("reserve", &samples.reserve), ("settle", &samples.settle)] {
        println!(
            "  {what:<8} p50 {:>7.1} µs   p99 {:>7.1} µs   p99.9 {:>7.1} µs   max {:>8.1} µs",
            percentile(s, 0.50),
            percentile(s, 0.99),
            percentile(s, 0.999),
            percentile(s, 1.0),
        );
    }
}

async fn measure(name: &str, limiter: &Limiter, tasks: usize, iterations: usize) {
    // Warm-up: connection, scripts, allocator.
    run(limiter.clone(), 0, 500).await;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| tokio::spawn(run(limiter.clone(), t, iterations / tasks)))
        .collect();
    let mut all = Samples::default();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    report(name, all, started.elapsed());
}

/// The floor: a bare `PING` round trip on one multiplexed connection.
async fn ping_baseline(url: &str, iterations: usize) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "{:<28} p50 {:>7.1} µs   p99 {:>7.1} µs",
        "redis PING (baseline)",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99)
    );
}

#[tokio::main]
async fn main() {
    let iterations = env("QUOTA_BENCH_ITERS", 20_000);
    let tasks = env("QUOTA_BENCH_TASKS", 16);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("quota-bench:{}:", std::process::id());
    let shared = Limiter::new(QuotaConfig {
        redis_url: Some(SecretString::from(url.clone())),
        cluster: false,
        key_prefix: prefix.clone(),
        timeout: Duration::from_millis(50),
        on_redis_error: OnRedisError::FailClosed,
        retry_interval: Duration::from_secs(1),
        lease: quota::LeaseConfig {
            calls: 0,
            ..quota::LeaseConfig::default()
        },
    })
    .unwrap();
    shared
        .warm_up(Duration::from_secs(5))
        .await
        .expect("Redis at REDIS_URL");

    println!("quota reserve+settle, {iterations} admissions per run, 2 scopes each");
    ping_baseline(&url, iterations).await;
    measure("redis, 1 task", &shared, 1, iterations).await;
    measure(&format!("redis, {tasks} tasks"), &shared, tasks, iterations).await;
    let local = Limiter::in_process();
    measure("in process, 1 task", &local, 1, iterations).await;
    measure(
        &format!("in process, {tasks} tasks"),
        &local,
        tasks,
        iterations,
    )
    .await;
    let m = shared.metrics();
    println!(
        "redis limiter: {} admitted, {} refused, {} redis errors, {} settle failures",
        m.admitted,
        m.refused_rate_limited + m.refused_budget_exhausted + m.refused_exceeds_limit,
        m.redis_errors,
        m.settle_failures
    );

    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
