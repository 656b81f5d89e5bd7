//! What reading a caller's body costs on the hot path: `BodyFacts::read` (the fields routing
//! needs, then `strict_json::check_parsed`: no object names a key twice) beside a bare
//! serde_json pass that validates the same bytes and keeps nothing (the floor of any
//! one-pass reader), and the duplicate-key scan on its own.
//!
//! Measured when the scan was added (this 2-core VM): `BodyFacts::read` 352 ns before,
//! 645 ns after; the scan alone 286 ns (serde_json's own pass: 270 ns).
//!
//! `cargo bench -p openai-router --bench body_facts` (release build; on demand, never a test).
//! The body is `bench/gateway/body.json` (1,027 bytes, the gateway benchmark's chat body).
//! `BODY_BENCH_ITERS` (default 2,000,000) reads per measurement; three measurements each.

#![expect(clippy::print_stdout, reason = "a benchmark reports on the terminal")]
#![expect(clippy::expect_used, reason = "a benchmark fails loudly")]

use std::hint::black_box;
use std::time::Instant;

use openai_router::BodyFacts;

fn per_call_ns(iters: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..iters {
        f();
    }
    started.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn main() {
    let body = include_bytes!("../../../bench/gateway/body.json");
    let iters: u32 = std::env::var("BODY_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    assert!(BodyFacts::read(body).is_ok());
    println!("body: {} bytes, {iters} reads per measurement", body.len());
    for round in 1..=3 {
        let floor = per_call_ns(iters, || {
            black_box(
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).expect("valid"),
            );
        });
        let facts = per_call_ns(iters, || {
            black_box(BodyFacts::read(black_box(body)).expect("valid"));
        });
        let scan = per_call_ns(iters, || {
            black_box(strict_json::check_parsed(black_box(body)).is_ok());
        });
        println!(
            "round {round}: serde_json IgnoredAny {floor:.0} ns, BodyFacts::read {facts:.0} ns (of which the duplicate-key scan {scan:.0} ns), difference {:.0} ns",
            facts - floor
        );
    }
}
