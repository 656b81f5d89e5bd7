//! What leases add on Redis: most calls decided without a round trip, slices that go back
//! when idle, on recall and at release, and limits still reached exactly, never exceeded.

use std::time::Duration;

use futures::future::join_all;
use quota::{Decider, Refusal};

use crate::support::{eventually, limits, tenant, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_calls_are_decided_from_a_slice_without_a_round_trip() {
    let h = Harness::leased("most_calls_local").await;
    let scopes = [tenant(
        "acme",
        limits(Some(10_000_000), Some(100_000), Some(1_000_000_000)),
    )];
    let limiter = h.limiter();
    let mut deciders = Vec::new();
    for _ in 0..200 {
        let a = limiter.reserve(&scopes, 100).await.unwrap();
        deciders.push(a.decider());
        a.settle(60).await;
    }
    let metrics = limiter.metrics();
    let local = deciders.iter().filter(|d| **d == Decider::Lease).count();
    // A slice holds 8 calls' worth beyond the one that asks (refunds make it last longer;
    // top-ups, below, longer still).
    assert!(local >= 170, "{local} of 200 decided locally; {metrics:?}");
    assert_eq!(metrics.lease_local as usize, local);
    assert_eq!(metrics.lease_grants as usize, 200 - local);
    assert_eq!(metrics.admitted, 200);
    h.cleanup().await;
}

/// A slice half spent is topped up off the callers' path: calls that come a little apart (as
/// they do at a steady rate) never wait on Redis after the first, and the top-ups hold the
/// replica's share without ever giving it more than the scope has (the exactness tests run
/// with top-ups on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_spent_slice_is_topped_up_before_a_caller_needs_redis() {
    let h = Harness::leased("top_up").await;
    let scopes = [tenant(
        "acme",
        limits(Some(10_000_000), Some(100_000), Some(1_000_000_000)),
    )];
    let limiter = h.limiter();
    for _ in 0..30 {
        let a = limiter.reserve(&scopes, 100).await.unwrap();
        a.settle(100).await;
        // 4 calls' slack (a quarter of a second at this pace) for each top-up's round trip.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let metrics = limiter.metrics();
    assert_eq!(metrics.lease_grants, 1, "{metrics:?}");
    assert_eq!(metrics.lease_local, 29, "{metrics:?}");
    assert!(metrics.lease_top_ups >= 3, "{metrics:?}");
    assert_eq!(metrics.admitted, 30);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_left_on_an_idle_replica_is_recalled_so_the_budget_is_reached_exactly() {
    // Idle slices would only go back after a minute: what comes back, comes by recall.
    let h = Harness::leased_with("recall", Duration::from_secs(60)).await;
    const K: u64 = 40;
    const E: u64 = 1_000;
    let scopes = [tenant("acme", limits(None, None, Some(K * E)))];
    // Replica 0 takes one call and, with it, a slice of several more; then it goes quiet.
    let first = h.replica(0).reserve(&scopes, E).await.unwrap();
    first.settle(E).await;
    // The two others use the rest, one call at a time: they reach the budget exactly,
    // which needs the slice replica 0 sits on.
    let mut admitted = 1;
    loop {
        let i = 1 + (admitted % 2) as usize;
        match h.replica(i).reserve(&scopes, E).await {
            Ok(a) => {
                a.settle(E).await;
                admitted += 1;
            }
            Err(Refusal::BudgetExhausted { .. }) => break,
            Err(other) => panic!("{other:?}"),
        }
        assert!(admitted <= K, "more than the budget holds");
    }
    assert_eq!(admitted, K);
    let recalls: u64 = (1..3).map(|i| h.replica(i).metrics().lease_recalls).sum();
    assert!(
        recalls >= 1,
        "the idle replica's slice came back by a recall"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slices_go_back_and_release_gives_back_the_rest() {
    let h = Harness::leased("idle").await;
    let scopes = [tenant("acme", limits(None, None, Some(100_000)))];
    let a = h.replica(0).reserve(&scopes, 1_000).await.unwrap();
    a.settle(1_000).await;
    // Right after, replica 1 sees the slice replica 0 holds as consumed...
    let probe = h.replica(1).reserve(&scopes, 0).await.unwrap();
    assert!(probe.remaining_tokens().unwrap() < 99_000, "{probe:?}");
    probe.settle(0).await;
    // ...and once it has been idle for 200 ms, it is back: only the 1,000 used are gone.
    let back = eventually(Duration::from_secs(3), || async {
        let probe = h.replica(2).reserve(&scopes, 0).await.unwrap();
        let seen = probe.remaining_tokens();
        probe.settle(0).await;
        h.replica(0).release().await;
        h.replica(1).release().await;
        seen == Some(99_000)
    })
    .await;
    assert!(back, "the idle slices never came back");
    for i in 0..3 {
        h.replica(i).release().await;
    }
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_limit_is_held_exactly_by_concurrent_calls_on_three_replicas() {
    let h = Harness::leased("requests").await;
    let scopes = [tenant("acme", limits(None, Some(60), None))];
    let results = join_all((0..300).map(|i| {
        let limiter = h.replica(i).clone();
        let scopes = scopes.clone();
        async move { limiter.reserve(&scopes, 10).await }
    }))
    .await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    // 60 a minute refills one a second: the burst takes well under one.
    assert_eq!(admitted, 60);
    for r in results.into_iter().flatten() {
        r.settle(10).await;
    }
    h.cleanup().await;
}
