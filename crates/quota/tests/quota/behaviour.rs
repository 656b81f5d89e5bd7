//! The behaviour every backend owes: each scenario runs once on Redis (three independent
//! limiters playing three replicas) and once in process (three clones of one limiter).

use std::time::Duration;

use futures::future::join_all;
use quota::{Admission, Decider, Dimension, Limits, Refusal, Scope};

use crate::support::{eventually, key, limits, tenant, Harness};

macro_rules! with_leases_too {
    ($($scenario:ident),+ $(,)?) => {
        mod on_redis_with_leases {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let h = crate::support::Harness::leased(stringify!($scenario)).await;
                    super::$scenario(&h).await;
                    h.cleanup().await;
                }
            )+
        }
    };
}

macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let h = crate::support::Harness::redis(stringify!($scenario)).await;
                    super::$scenario(&h).await;
                    h.cleanup().await;
                }
            )+
        }
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&crate::support::Harness::local()).await;
                }
            )+
        }
    };
}

on_both_backends!(
    a_monthly_budget_admits_exactly_what_fits_among_200_concurrent_reservations_on_3_replicas,
    a_burst_admits_no_more_than_the_token_bucket_holds,
    a_burst_admits_no_more_requests_than_the_request_bucket_holds,
    the_bucket_refills_at_the_rate_its_retry_after_announces,
    settlement_refunds_and_charges_the_monthly_budget_exactly,
    settlement_refunds_into_the_bucket_and_a_charge_beyond_it_delays_the_next_call,
    a_key_limit_refusal_consumes_nothing_from_the_tenant,
    an_estimate_larger_than_the_minute_limit_is_refused_for_good,
    a_dropped_admission_gives_its_tokens_back,
    an_admission_reports_the_tightest_remaining_tokens_and_requests,
    scopes_without_limits_are_admitted_without_counting,
    refusals_and_admissions_are_counted,
);

// With leases, a replica holds slices the others do not see, so only the scenarios whose
// outcome does not depend on the exact remaining figures seen across replicas run there too
// (every limit, exactly reached and never exceeded).
with_leases_too!(
    a_monthly_budget_admits_exactly_what_fits_among_200_concurrent_reservations_on_3_replicas,
    a_burst_admits_no_more_than_the_token_bucket_holds,
    a_burst_admits_no_more_requests_than_the_request_bucket_holds,
    the_bucket_refills_at_the_rate_its_retry_after_announces,
    an_estimate_larger_than_the_minute_limit_is_refused_for_good,
    a_dropped_admission_gives_its_tokens_back,
    an_admission_reports_the_tightest_remaining_tokens_and_requests,
    scopes_without_limits_are_admitted_without_counting,
    refusals_and_admissions_are_counted,
);

async fn a_monthly_budget_admits_exactly_what_fits_among_200_concurrent_reservations_on_3_replicas(
    h: &Harness,
) {
    const K: usize = 37;
    const ESTIMATE: u64 = 1_000;
    let scopes = [tenant(
        "acme",
        limits(None, None, Some(K as u64 * ESTIMATE)),
    )];
    let results: Vec<Result<Admission, Refusal>> = join_all((0..200).map(|i| {
        let limiter = h.replica(i).clone();
        let scopes = scopes.clone();
        async move { limiter.reserve(&scopes, ESTIMATE).await }
    }))
    .await;
    let (admitted, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(admitted.len(), K);
    for r in &refused {
        assert!(
            matches!(
                r,
                Err(Refusal::BudgetExhausted {
                    remaining_budget: 0,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    for a in admitted {
        let a = a.unwrap();
        match (h.on_redis, h.leased) {
            (false, _) => assert_eq!(a.decider(), Decider::Local),
            (true, false) => assert_eq!(a.decider(), Decider::Redis),
            (true, true) => assert!(matches!(a.decider(), Decider::Redis | Decider::Lease)),
        }
        a.settle(ESTIMATE).await;
    }
    // Every replica sees the same exhausted budget.
    for i in 0..3 {
        assert!(matches!(
            h.replica(i).reserve(&scopes, 1).await,
            Err(Refusal::BudgetExhausted { .. })
        ));
    }
}

async fn a_burst_admits_no_more_than_the_token_bucket_holds(h: &Harness) {
    // 1000 per minute: the burst would have to last 6 s to refill one more 100-token
    // reservation.
    let scopes = [tenant("acme", limits(Some(1_000), None, None))];
    let results = join_all((0..150).map(|i| {
        let limiter = h.replica(i).clone();
        let scopes = scopes.clone();
        async move { limiter.reserve(&scopes, 100).await }
    }))
    .await;
    let admitted: Vec<Admission> = results.into_iter().filter_map(Result::ok).collect();
    assert_eq!(admitted.len(), 10);
    for a in admitted {
        a.settle(100).await;
    }
}

async fn a_burst_admits_no_more_requests_than_the_request_bucket_holds(h: &Harness) {
    let scopes = [tenant("acme", limits(None, Some(5), None))];
    let results = join_all((0..40).map(|i| {
        let limiter = h.replica(i).clone();
        let scopes = scopes.clone();
        async move { limiter.reserve(&scopes, 10).await }
    }))
    .await;
    let mut admitted = Vec::new();
    for r in results {
        match r {
            Ok(a) => admitted.push(a),
            Err(Refusal::RateLimited {
                dimension: Dimension::RequestsPerMinute,
                retry_after,
                ..
            }) => {
                // 5 per minute: one request every 12 s.
                assert!(retry_after <= Duration::from_secs(12), "{retry_after:?}");
                assert!(retry_after > Duration::from_secs(11), "{retry_after:?}");
            }
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!(admitted.len(), 5);
    // Settling does not give a request back.
    for a in admitted {
        a.settle(0).await;
    }
    assert!(matches!(
        h.limiter().reserve(&scopes, 10).await,
        Err(Refusal::RateLimited { .. })
    ));
}

async fn the_bucket_refills_at_the_rate_its_retry_after_announces(h: &Harness) {
    // 600_000 per minute = 10 tokens per ms.
    let scopes = [tenant("acme", limits(Some(600_000), None, None))];
    h.limiter()
        .reserve(&scopes, 600_000)
        .await
        .unwrap()
        .settle(600_000)
        .await;
    let refusal = h.replica(1).reserve(&scopes, 4_000).await.unwrap_err();
    let retry = refusal.retry_after().unwrap();
    // 4000 tokens need 400 ms from empty, less what refilled since the first reservation.
    assert!(retry <= Duration::from_millis(400), "{retry:?}");
    assert!(retry >= Duration::from_millis(300), "{retry:?}");
    assert_eq!(
        refusal.remaining().unwrap().tokens.map(|t| t < 1_000),
        Some(true)
    );

    // Well before the announced time it is still refused...
    tokio::time::sleep(retry.saturating_sub(Duration::from_millis(150))).await;
    let early = h.replica(2).reserve(&scopes, 4_000).await.unwrap_err();
    assert!(early.retry_after().unwrap() <= Duration::from_millis(150));
    // ...and at the announced time it is admitted.
    tokio::time::sleep(early.retry_after().unwrap()).await;
    let a = h.replica(0).reserve(&scopes, 4_000).await.unwrap();
    a.settle(4_000).await;
}

async fn settlement_refunds_and_charges_the_monthly_budget_exactly(h: &Harness) {
    let scopes = [tenant("acme", limits(None, None, Some(100_000)))];
    let a = h.limiter().reserve(&scopes, 4_000).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(96_000));
    a.settle(1_000).await;
    let a = h.replica(1).reserve(&scopes, 0).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(99_000));
    a.settle(0).await;
    let a = h.replica(2).reserve(&scopes, 1_000).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(98_000));
    // The call used more than its estimate: the difference is charged.
    a.settle(3_000).await;
    let a = h.limiter().reserve(&scopes, 0).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(96_000));
    a.settle(0).await;
}

async fn settlement_refunds_into_the_bucket_and_a_charge_beyond_it_delays_the_next_call(
    h: &Harness,
) {
    // 60 per minute = 1 token per second: the test's few milliseconds refill nothing whole.
    let scopes = [tenant("acme", limits(Some(60), None, None))];
    let a = h.limiter().reserve(&scopes, 50).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(10));
    a.settle(20).await;
    let a = h.replica(1).reserve(&scopes, 40).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(0));
    // 5 tokens beyond the bucket: in debt until they and the next token have refilled.
    a.settle(45).await;
    let refusal = h.replica(2).reserve(&scopes, 1).await.unwrap_err();
    let retry = refusal.retry_after().unwrap();
    assert!(retry <= Duration::from_secs(6), "{retry:?}");
    assert!(retry > Duration::from_millis(5_500), "{retry:?}");
}

async fn a_key_limit_refusal_consumes_nothing_from_the_tenant(h: &Harness) {
    let tenant_only = [tenant("acme", limits(None, None, Some(10_000)))];
    let with_key = [
        tenant("acme", limits(None, None, Some(10_000))),
        key("acme-key-1", limits(Some(100), None, None)),
    ];
    let a = h.limiter().reserve(&with_key, 80).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(20));
    let refusal = h.replica(1).reserve(&with_key, 50).await.unwrap_err();
    match &refusal {
        Refusal::RateLimited {
            scope, dimension, ..
        } => {
            assert_eq!(*scope, Scope::api_key("acme", "acme-key-1"));
            assert_eq!(*dimension, Dimension::TokensPerMinute);
        }
        other => panic!("unexpected refusal {other:?}"),
    }
    let probe = h.replica(2).reserve(&tenant_only, 0).await.unwrap();
    assert_eq!(probe.remaining_tokens(), Some(9_920));
    probe.settle(0).await;
    a.settle(80).await;

    // And the other way round: a tenant refusal consumes nothing from the key.
    let tight_tenant = [
        tenant("acme", limits(None, None, Some(9_920))),
        key("acme-key-2", limits(None, Some(10), Some(1_000_000))),
    ];
    assert!(matches!(
        h.limiter().reserve(&tight_tenant, 9_850).await,
        Err(Refusal::BudgetExhausted { ref scope, .. }) if *scope == Scope::tenant("acme")
    ));
    let key_only = [key("acme-key-2", limits(None, Some(10), Some(1_000_000)))];
    let probe = h.limiter().reserve(&key_only, 0).await.unwrap();
    assert_eq!(probe.remaining_requests(), Some(9));
    assert_eq!(probe.remaining_tokens(), Some(1_000_000));
    probe.settle(0).await;
}

async fn an_estimate_larger_than_the_minute_limit_is_refused_for_good(h: &Harness) {
    let scopes = [tenant(
        "acme",
        limits(Some(1_000), Some(100), Some(1_000_000)),
    )];
    let refusal = h.limiter().reserve(&scopes, 1_001).await.unwrap_err();
    assert_eq!(
        refusal,
        Refusal::ExceedsLimit {
            scope: Scope::tenant("acme"),
            dimension: Dimension::TokensPerMinute,
            limit: 1_000,
            estimate: 1_001
        }
    );
    assert_eq!(refusal.retry_after(), None);
    // Nothing was consumed: the whole bucket is still there.
    let a = h.limiter().reserve(&scopes, 1_000).await.unwrap();
    assert_eq!(a.remaining_tokens(), Some(0));
    assert_eq!(a.remaining_requests(), Some(99));
    a.settle(1_000).await;

    let closed = [tenant("closed", limits(None, Some(0), None))];
    assert!(matches!(
        h.limiter().reserve(&closed, 1).await,
        Err(Refusal::ExceedsLimit {
            dimension: Dimension::RequestsPerMinute,
            ..
        })
    ));
}

async fn a_dropped_admission_gives_its_tokens_back(h: &Harness) {
    let scopes = [tenant("acme", limits(None, None, Some(1_000)))];
    let a = h.limiter().reserve(&scopes, 600).await.unwrap();
    drop(a);
    let back = eventually(Duration::from_secs(2), || async {
        match h.replica(1).reserve(&scopes, 1_000).await {
            Ok(a) => {
                a.settle(0).await;
                true
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(back, "the dropped admission's 600 tokens never came back");
}

async fn an_admission_reports_the_tightest_remaining_tokens_and_requests(h: &Harness) {
    let scopes = [
        tenant("acme", limits(Some(100_000), Some(1_000), Some(5_000))),
        key("acme-key", limits(Some(2_000), Some(50), None)),
    ];
    let a = h.limiter().reserve(&scopes, 1_500).await.unwrap();
    // min(100_000 - 1500, 5000 - 1500, 2000 - 1500) and min(999, 49).
    assert_eq!(a.remaining_tokens(), Some(500));
    assert_eq!(a.remaining_requests(), Some(49));
    assert_eq!(a.estimate(), 1_500);
    a.settle(1_500).await;
}

async fn scopes_without_limits_are_admitted_without_counting(h: &Harness) {
    let scopes = [
        tenant("acme", Limits::default()),
        key("acme-key", Limits::default()),
    ];
    let a = h.limiter().reserve(&scopes, u64::MAX).await.unwrap();
    assert_eq!(a.decider(), Decider::Unlimited);
    assert_eq!(a.remaining_tokens(), None);
    assert_eq!(a.remaining_requests(), None);
    a.settle(10).await;
    let a = h.limiter().reserve(&[], 10).await.unwrap();
    assert_eq!(a.decider(), Decider::Unlimited);
}

async fn refusals_and_admissions_are_counted(h: &Harness) {
    let limiter = h.limiter();
    let before = limiter.metrics();
    let scopes = [tenant("acme", limits(Some(100), None, Some(150)))];
    let a = limiter.reserve(&scopes, 100).await.unwrap();
    a.settle(100).await;
    assert!(matches!(
        limiter.reserve(&scopes, 10).await,
        Err(Refusal::RateLimited { .. })
    ));
    assert!(matches!(
        limiter.reserve(&scopes, 101).await,
        Err(Refusal::ExceedsLimit { .. })
    ));
    let budget_only = [tenant("acme", limits(None, None, Some(150)))];
    assert!(matches!(
        limiter.reserve(&budget_only, 60).await,
        Err(Refusal::BudgetExhausted { .. })
    ));
    let after = limiter.metrics();
    assert_eq!(after.admitted - before.admitted, 1);
    assert_eq!(after.settled - before.settled, 1);
    assert_eq!(after.refused_rate_limited - before.refused_rate_limited, 1);
    assert_eq!(
        after.refused_exceeds_limit - before.refused_exceeds_limit,
        1
    );
    assert_eq!(
        after.refused_budget_exhausted - before.refused_budget_exhausted,
        1
    );
    assert_eq!(after.redis_errors, 0);
    assert_eq!(after.fail_open, 0);
}
