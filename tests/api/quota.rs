//! Token accounting and quotas end to end: prompt counting, the context window, `/v1/tokenize`,
//! and limits that hold across gateway processes sharing Redis (and when Redis goes away).

use std::time::{Duration, Instant};

use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig, SimHandle};
use bulkhead_tests::{
    admin_call, eventually, fresh_postgres_database, redis_address, CutProxy, GatewayProcess,
    TestApp, MASTER_KEY,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const CHAT: &str = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

async fn sim() -> SimHandle {
    Sim::start(
        SimConfig::default().with_resource(
            ResourceConfig::new("aoai-q", "eastus", "key-of-aoai-q")
                .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o")),
        ),
    )
    .await
    .unwrap()
}

/// A shared pool `gpt-4o` on the sim's one deployment and tenant `acme` on it (with
/// `limits`), set up through the admin API at `base`; returns acme's id and key.
async fn set_up(
    http: &reqwest::Client,
    base: &str,
    sim: &SimHandle,
    limits: Value,
) -> (String, String) {
    let calls = [
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-q", "endpoint": sim.resource_url("aoai-q"),
            "region": "eastus", "api_key": "key-of-aoai-q"}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-q", "name": "gpt-4o",
            "model": "gpt-4o", "capacity_tpm": 1_000_000}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "gpt-4o",
            "members": [{"deployment": "aoai-q/gpt-4o"}]}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "acme", "display_name": "Acme",
            "openai": {"isolation": "shared"}, "limits": limits}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "other", "display_name": "Other",
            "openai": {"isolation": "shared"}}),
        ),
    ];
    let mut tenant = String::new();
    for (path, body) in calls {
        let (status, answer) = admin_call(http, base, Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
        if answer["slug"] == "acme" {
            tenant = answer["id"].as_str().unwrap().to_owned();
        }
    }
    let (status, key) = admin_call(
        http,
        base,
        Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    (tenant, key["key"].as_str().unwrap().to_owned())
}

async fn other_key(http: &reqwest::Client, base: &str) -> String {
    let (status, key) = admin_call(
        http,
        base,
        Method::POST,
        "/admin/v1/tenants/other/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

/// A chat body whose completion the sim cuts at exactly `max_tokens`, so the real usage
/// equals the admission estimate and nothing is refunded.
fn body(max_tokens: u64) -> Value {
    json!({"messages": [{"role": "user", "content": "Tell me about the tides of the world."}],
        "max_tokens": max_tokens})
}

async fn chat(http: &reqwest::Client, base: &str, key: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{base}{CHAT}"))
        .header("api-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn set_limits(http: &reqwest::Client, base: &str, limits: Value) {
    let (status, answer) = admin_call(
        http,
        base,
        Method::PATCH,
        "/admin/v1/tenants/acme",
        Some(json!({ "limits": limits })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// Debug builds of three gateways on a busy 2-core machine: a generous Redis timeout, so no
/// reservation falls back to in-process counting (fail-open is per replica by design), and a
/// generous wait for recalled slices, so a refusal only stands once they are back.
const SLOW_MACHINE: &[(&str, &str)] = &[
    ("BULKHEAD_QUOTA_TIMEOUT_MS", "3000"),
    ("BULKHEAD_QUOTA_RECALL_WAIT_MS", "1000"),
];

async fn replicas(database: &str, redis: &str, extra: &[(&str, &str)]) -> Vec<GatewayProcess> {
    let mut envs = vec![
        ("DATABASE_URL", database),
        ("BULKHEAD_MASTER_KEY", MASTER_KEY),
        ("REDIS_URL", redis),
        ("BULKHEAD_LOG", "warn"),
    ];
    envs.extend_from_slice(extra);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(GatewayProcess::start(&envs).await);
    }
    replicas
}

/// A replica's `bulkhead_quota_*` metrics, for a failure's message.
async fn quota_lines(http: &reqwest::Client, base: &str) -> String {
    let text = http
        .get(format!("{base}/metrics"))
        .bearer_auth(bulkhead_tests::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("bulkhead_quota"))
        .map(|l| format!("{base} {l}\n"))
        .collect()
}

/// Waits until every replica refuses a call whose estimate no budget below `limit` holds:
/// then each has the new limits in its registry snapshot.
async fn until_every_replica_enforces(
    http: &reqwest::Client,
    replicas: &[GatewayProcess],
    key: &str,
    probe: &Value,
) {
    for replica in replicas {
        eventually(
            Duration::from_secs(5),
            Duration::from_millis(50),
            async || match chat(http, &replica.base, key, probe).await.status() {
                StatusCode::TOO_MANY_REQUESTS | StatusCode::BAD_REQUEST => Ok(()),
                status => Err(format!("a replica never saw the new limits ({status})")),
            },
        )
        .await;
    }
}

/// The usage of one call through `base`, made while the tenant has no limits.
async fn tokens_of_one_call(http: &reqwest::Client, base: &str, key: &str, body: &Value) -> u64 {
    let answer = chat(http, base, key, body).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let value: Value = answer.json().await.unwrap();
    assert_eq!(value["usage"]["completion_tokens"], body["max_tokens"]);
    value["usage"]["total_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn three_replicas_sharing_redis_admit_exactly_the_calls_a_monthly_budget_holds() {
    let sim = sim().await;
    let database = fresh_postgres_database().await;
    let redis = format!("redis://{}", redis_address());
    let replicas = replicas(&database, &redis, SLOW_MACHINE).await;
    let http = reqwest::Client::new();
    let (tenant, key) = set_up(&http, &replicas[0].base, &sim, json!({})).await;
    let other = other_key(&http, &replicas[0].base).await;
    let per_call = tokens_of_one_call(&http, &replicas[0].base, &key, &body(5)).await;
    const K: u64 = 37;
    set_limits(
        &http,
        &replicas[0].base,
        json!({"monthly_tokens": K * per_call}),
    )
    .await;
    until_every_replica_enforces(&http, &replicas, &key, &body(K * per_call)).await;

    let calls = (0..200).map(|i| {
        let http = http.clone();
        let base = replicas[i % 3].base.clone();
        let key = key.clone();
        async move {
            let answer = chat(&http, &base, &key, &body(5)).await;
            let status = answer.status();
            let value: Value = answer.json().await.unwrap_or(Value::Null);
            (status, value)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let admitted = answers.iter().filter(|(s, _)| s.is_success()).count() as u64;
    if admitted != K {
        let logs: String = replicas.iter().map(GatewayProcess::output).collect();
        let mut quota_metrics = String::new();
        for replica in &replicas {
            quota_metrics += &quota_lines(&http, &replica.base).await;
        }
        let used = month_used_in_redis(&tenant).await;
        panic!(
            "{admitted} admitted, the budget holds exactly {K} ({per_call} tokens each, {used:?} used in Redis)\n{quota_metrics}\nlogs:\n{logs}"
        );
    }
    for (status, value) in answers.iter().filter(|(s, _)| !s.is_success()) {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{value}");
        assert_eq!(value["error"]["code"], "insufficient_quota", "{value}");
    }
    // Another tenant on the same pool is not touched by acme's budget.
    let answer = chat(&http, &replicas[1].base, &other, &body(5)).await;
    assert_eq!(answer.status(), StatusCode::OK);
}

/// A monthly budget in tokens, or in currency (micro-units, at the prices of
/// [`price_at_one_and_two`]), each held in a scope of its own (`t:` or `b:`).
#[derive(Clone, Copy)]
enum Budget {
    Tokens,
    Currency,
}

#[tokio::test]
async fn a_replica_killed_holding_a_slice_cannot_push_admissions_past_the_budget() {
    killed_replica_holding_a_slice(Budget::Tokens).await;
}

#[tokio::test]
async fn a_replica_killed_holding_a_slice_cannot_push_spending_past_the_budget() {
    killed_replica_holding_a_slice(Budget::Currency).await;
}

async fn killed_replica_holding_a_slice(budget: Budget) {
    let sim = sim().await;
    let database = fresh_postgres_database().await;
    let redis = format!("redis://{}", redis_address());
    let mut replicas = replicas(&database, &redis, SLOW_MACHINE).await;
    let http = reqwest::Client::new();
    let (tenant, key) = set_up(&http, &replicas[0].base, &sim, json!({})).await;
    const K: u64 = 40;
    let (per_call, limits, scope) = match budget {
        Budget::Tokens => {
            let per_call = tokens_of_one_call(&http, &replicas[0].base, &key, &body(5)).await;
            (per_call, json!({"monthly_tokens": K * per_call}), "t")
        }
        Budget::Currency => {
            price_at_one_and_two(&http, &replicas[0].base).await;
            let per_call = micros_of_one_call(&http, &replicas[0].base, &key, &body(5)).await;
            (
                per_call,
                json!({"monthly_budget": decimal(K * per_call)}),
                "b",
            )
        }
    };
    set_limits(&http, &replicas[0].base, limits).await;
    until_every_replica_enforces(&http, &replicas, &key, &body(K * per_call)).await;

    // Replica 0 serves two calls and, with the first, leases a slice of several more; then it
    // is killed without a chance to give the slice back.
    let mut admitted = 0;
    for _ in 0..2 {
        let answer = chat(&http, &replicas[0].base, &key, &body(5)).await;
        assert_eq!(answer.status(), StatusCode::OK);
        admitted += 1;
    }
    let dead = replicas.remove(0);
    dead.kill().await;
    let used_at_kill = scope_used_in_redis(scope, &tenant).await.unwrap_or(0);
    let stranded = used_at_kill.saturating_sub(admitted * per_call) / per_call;
    assert!(
        stranded > 0,
        "the dead replica held a slice ({used_at_kill} used)"
    );

    // The two survivors are driven far past the budget.
    let calls = (0..200).map(|i| {
        let http = http.clone();
        let base = replicas[i % 2].base.clone();
        let key = key.clone();
        async move { chat(&http, &base, &key, &body(5)).await.status() }
    });
    let statuses = futures::future::join_all(calls).await;
    admitted += statuses.iter().filter(|s| s.is_success()).count() as u64;
    for status in statuses.iter().filter(|s| !s.is_success()) {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    }
    // Never past the budget: the dead replica's slice stays counted as consumed, and no one
    // else may spend it (it could have been spent already).
    assert!(admitted <= K, "{admitted} admitted, the budget holds {K}");
    assert_eq!(
        admitted,
        K - stranded,
        "everything but the dead replica's slice was used"
    );
    assert!(scope_used_in_redis(scope, &tenant).await.unwrap() <= K * per_call);
}

/// The cost of one call in micro-units at 1 per million input tokens and 2 per million
/// output tokens (exact micro-units, so no rounding separates the budget from the ledger).
async fn micros_of_one_call(http: &reqwest::Client, base: &str, key: &str, body: &Value) -> u64 {
    let answer = chat(http, base, key, body).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let value: Value = answer.json().await.unwrap();
    let usage = &value["usage"];
    usage["prompt_tokens"].as_u64().unwrap() + 2 * usage["completion_tokens"].as_u64().unwrap()
}

/// gpt-4o at 1 per million input tokens and 2 per million output tokens, in EUR.
async fn price_at_one_and_two(http: &reqwest::Client, base: &str) {
    let (status, price) = admin_call(
        http,
        base,
        Method::POST,
        "/admin/v1/prices",
        Some(
            json!({"model": "gpt-4o", "deployment_type": "global_standard",
            "currency": "EUR", "input_per_million": "1", "output_per_million": "2"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{price}");
}

fn decimal(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[tokio::test]
async fn three_replicas_sharing_redis_never_spend_past_a_currency_budget() {
    let sim = sim().await;
    let database = fresh_postgres_database().await;
    let redis = format!("redis://{}", redis_address());
    let replicas = replicas(&database, &redis, SLOW_MACHINE).await;
    let http = reqwest::Client::new();
    let (tenant, key) = set_up(&http, &replicas[0].base, &sim, json!({})).await;
    price_at_one_and_two(&http, &replicas[0].base).await;
    let per_call = micros_of_one_call(&http, &replicas[0].base, &key, &body(5)).await;
    const K: u64 = 37;
    let budget = K * per_call;
    set_limits(
        &http,
        &replicas[0].base,
        json!({"monthly_budget": decimal(budget)}),
    )
    .await;
    // A call whose output cap alone costs more than the budget is refused everywhere.
    until_every_replica_enforces(&http, &replicas, &key, &body(budget)).await;

    let calls = (0..200).map(|i| {
        let http = http.clone();
        let base = replicas[i % 3].base.clone();
        let key = key.clone();
        async move {
            let answer = chat(&http, &base, &key, &body(5)).await;
            let status = answer.status();
            let left = answer
                .headers()
                .get("x-bulkhead-budget-remaining")
                .map(|v| v.to_str().unwrap().to_owned());
            let value: Value = answer.json().await.unwrap_or(Value::Null);
            (status, left, value)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let admitted = answers.iter().filter(|(s, _, _)| s.is_success()).count() as u64;
    for (status, _, value) in answers.iter().filter(|(s, _, _)| !s.is_success()) {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{value}");
        assert_eq!(value["error"]["code"], "insufficient_quota", "{value}");
    }
    // The tenant reads what is left of its budget on every admitted call.
    for (_, left, _) in answers.iter().filter(|(s, _, _)| s.is_success()) {
        let left = left
            .as_deref()
            .expect("x-bulkhead-budget-remaining on an admitted call");
        assert!(left.parse::<f64>().unwrap() < budget as f64 / 1e6, "{left}");
    }
    assert_eq!(
        admitted, K,
        "the budget holds exactly {K} calls of {per_call} micro-units"
    );

    // What the ledger recorded as spent: never above the budget, and at least the budget
    // minus one call's estimate (here the estimate is the cost: the sim answers max_tokens).
    let spent: i64 = eventually(
        Duration::from_secs(15),
        Duration::from_millis(200),
        async || {
            use sqlx::Connection;
            let mut db = sqlx::PgConnection::connect(&database).await.unwrap();
            let (calls, cost): (i64, Option<i64>) = sqlx::query_as(
                "SELECT count(*), CAST(sum(cost) AS bigint) FROM usage_events \
                 WHERE tenant_id = $1 AND status = 200",
            )
            .bind(uuid::Uuid::parse_str(&tenant).unwrap())
            .fetch_one(&mut db)
            .await
            .unwrap();
            match calls as u64 == K + 1 {
                true => Ok(cost.unwrap_or(0)),
                false => Err(format!("{calls} calls in the ledger")),
            }
        },
    )
    .await;
    let spent_micros = (spent as u64 / 1_000_000) - per_call;
    assert!(
        spent_micros <= budget,
        "{spent_micros} spent, budget {budget}"
    );
    assert!(
        spent_micros + per_call > budget,
        "{spent_micros} spent, budget {budget}"
    );
    // Another tenant on the same pool and prices is not touched by acme's spent budget.
    let other = other_key(&http, &replicas[2].base).await;
    let answer = chat(&http, &replicas[2].base, &other, &body(5)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer
        .headers()
        .get("x-bulkhead-budget-remaining")
        .is_none());
}

#[tokio::test]
async fn three_replicas_hold_a_per_minute_token_limit_within_its_refill() {
    let sim = sim().await;
    let database = fresh_postgres_database().await;
    let redis = format!("redis://{}", redis_address());
    let replicas = replicas(&database, &redis, SLOW_MACHINE).await;
    let http = reqwest::Client::new();
    let (_, key) = set_up(&http, &replicas[0].base, &sim, json!({})).await;
    let per_call = tokens_of_one_call(&http, &replicas[0].base, &key, &body(5)).await;
    let limit = 10 * per_call;
    set_limits(
        &http,
        &replicas[0].base,
        json!({"tokens_per_minute": limit}),
    )
    .await;
    // An estimate above the whole limit can never be admitted: 400, not a 429 to wait on.
    until_every_replica_enforces(&http, &replicas, &key, &body(limit + 1)).await;
    // Let the probes' bucket state settle (they consumed nothing) and start full.
    let started = Instant::now();
    let calls = (0..60).map(|i| {
        let http = http.clone();
        let base = replicas[i % 3].base.clone();
        let key = key.clone();
        async move {
            let answer = chat(&http, &base, &key, &body(5)).await;
            let retry_after = answer
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = answer.status();
            let value: Value = answer.json().await.unwrap_or(Value::Null);
            (status, retry_after, value)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = answers.iter().filter(|(s, _, _)| s.is_success()).count() as u64;
    // The bucket holds `limit` and refills limit/60 per second: nothing more can get in.
    let refill = (elapsed * limit as f64 / 60.0 / per_call as f64).ceil() as u64;
    assert!(
        (10..=10 + refill).contains(&admitted),
        "{admitted} admitted in {elapsed:.2}s (limit holds 10, refill {refill})"
    );
    for (status, retry_after, value) in answers.iter().filter(|(s, _, _)| !s.is_success()) {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{value}");
        assert_eq!(value["error"]["code"], "429", "{value}");
        let seconds: u64 = retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=60).contains(&seconds), "retry-after {seconds}");
    }
}

/// A gateway whose quota Redis sits behind a proxy the test cuts.
async fn gateway_behind_cut_redis(
    sim: &SimHandle,
    fail: bulkhead_api::config::OnRedisError,
) -> (TestApp, CutProxy, String, String) {
    let proxy = CutProxy::start(&redis_address()).await;
    let url = format!("redis://{}", proxy.addr);
    let app = TestApp::spawn_with(|c| {
        c.quota.redis_url = Some(url.into());
        c.quota.on_redis_error = fail;
    })
    .await;
    let (tenant, key) = set_up(
        &app.http,
        &app.base,
        sim,
        json!({"monthly_tokens": 1_000_000, "requests_per_minute": 100_000}),
    )
    .await;
    (app, proxy, tenant, key)
}

/// The tenant's month count, under the hash-tagged name (or the name of earlier releases, on a
/// Redis that still holds some: a developer's long-lived one).
async fn month_used_in_redis(tenant: &str) -> Option<u64> {
    scope_used_in_redis("t", tenant).await
}

/// The month count of the tenant's scope of `kind` (`t` tokens, `b` spending).
async fn scope_used_in_redis(kind: &str, tenant: &str) -> Option<u64> {
    let client = redis::Client::open(format!("redis://{}", redis_address())).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for name in [format!("{kind}:{{{tenant}}}"), format!("{kind}:{tenant}")] {
        let used = redis::cmd("HGET")
            .arg(format!("bulkhead:quota:{name}"))
            .arg("mu")
            .query_async::<Option<u64>>(&mut connection)
            .await
            .unwrap();
        if used.is_some() {
            return used;
        }
    }
    None
}

#[tokio::test]
async fn with_redis_gone_a_fail_open_gateway_keeps_serving_and_returns_to_redis() {
    let sim = sim().await;
    let (app, proxy, tenant, key) =
        gateway_behind_cut_redis(&sim, bulkhead_api::config::OnRedisError::Open).await;
    let ok = chat(&app.http, &app.base, &key, &body(5)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let before = month_used_in_redis(&tenant).await.unwrap();
    assert!(before > 0, "counted in Redis");

    proxy.cut();
    for _ in 0..10 {
        let started = Instant::now();
        let answer = chat(&app.http, &app.base, &key, &body(5)).await;
        assert_eq!(answer.status(), StatusCode::OK, "fail-open keeps serving");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(
        month_used_in_redis(&tenant).await.unwrap(),
        before,
        "Redis was not reached"
    );

    proxy.restore();
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || {
            let answer = chat(&app.http, &app.base, &key, &body(5)).await;
            assert_eq!(answer.status(), StatusCode::OK);
            if month_used_in_redis(&tenant).await.unwrap() > before {
                Ok(())
            } else {
                Err("never went back to Redis".to_owned())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn with_redis_gone_a_fail_closed_gateway_refuses_limited_tenants_until_it_returns() {
    let sim = sim().await;
    let (app, proxy, _, key) =
        gateway_behind_cut_redis(&sim, bulkhead_api::config::OnRedisError::Closed).await;
    let other = other_key(&app.http, &app.base).await;
    assert_eq!(
        chat(&app.http, &app.base, &key, &body(5)).await.status(),
        StatusCode::OK
    );

    proxy.cut();
    // What the replica had already leased from Redis was taken from the tenant's counters
    // there: it is spent (safely) first, and only then does fail-closed refuse.
    let mut from_slice = 0;
    let answer = loop {
        let answer = chat(&app.http, &app.base, &key, &body(5)).await;
        if answer.status() != StatusCode::OK {
            break answer;
        }
        from_slice += 1;
        assert!(
            from_slice <= 8,
            "more calls than a slice holds were served without Redis"
        );
    };
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    let value: Value = answer.json().await.unwrap();
    assert_eq!(value["error"]["code"], "ServiceUnavailable");
    // A tenant without limits needs no counter and is served.
    assert_eq!(
        chat(&app.http, &app.base, &other, &body(5)).await.status(),
        StatusCode::OK
    );

    proxy.restore();
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || match chat(&app.http, &app.base, &key, &body(5)).await.status() {
            StatusCode::OK => Ok(()),
            status => Err(format!("never recovered ({status})")),
        },
    )
    .await;
}

#[tokio::test]
async fn remaining_headers_describe_the_tenants_quota_never_the_upstreams() {
    let sim = sim().await;
    let app = TestApp::spawn().await;
    let (_, key) = set_up(
        &app.http,
        &app.base,
        &sim,
        json!({"monthly_tokens": 100_000, "requests_per_minute": 50}),
    )
    .await;
    let other = other_key(&app.http, &app.base).await;

    let answer = chat(&app.http, &app.base, &key, &body(5)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap())
    };
    assert_eq!(header("x-ratelimit-remaining-requests"), Some(49));
    let tokens = header("x-ratelimit-remaining-tokens").unwrap();
    assert!(tokens < 100_000 && tokens > 99_000, "{tokens}");

    // The sim sends its own x-ratelimit-* figures; a tenant without limits sees none.
    let answer = chat(&app.http, &app.base, &other, &body(5)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(!answer
        .headers()
        .contains_key("x-ratelimit-remaining-tokens"));
    assert!(!answer
        .headers()
        .contains_key("x-ratelimit-remaining-requests"));
}

#[tokio::test]
async fn a_prompt_over_the_context_window_is_refused_before_azure() {
    let sim = sim().await;
    let app = TestApp::spawn_with(|c| {
        c.model_limits = "gpt-4o=60/20".parse().unwrap();
    })
    .await;
    let (_, key) = set_up(&app.http, &app.base, &sim, json!({})).await;
    let before = sim.requests(None).len();
    let long = json!({"messages": [{"role": "user", "content": "word ".repeat(100)}]});
    let answer = chat(&app.http, &app.base, &key, &long).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let value: Value = answer.json().await.unwrap();
    assert_eq!(value["error"]["code"], "context_length_exceeded", "{value}");
    assert!(value["error"]["message"]
        .as_str()
        .unwrap()
        .contains("60 tokens"));
    assert_eq!(sim.requests(None).len(), before, "Azure was not called");
    // Short enough, it goes through.
    let answer = chat(&app.http, &app.base, &key, &body(5)).await;
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn tokenize_counts_like_azure_and_only_for_the_tenants_aliases() {
    let sim = sim().await;
    let app = TestApp::spawn().await;
    let (_, key) = set_up(&app.http, &app.base, &sim, json!({})).await;
    let request = json!({"model": "gpt-4o", "messages": [{"role": "user",
        "content": "Tell me about the tides of the world."}], "max_tokens": 5});
    let answer = app
        .http
        .post(app.url("/v1/tokenize"))
        .header("api-key", &key)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let counted: Value = answer.json().await.unwrap();
    assert_eq!(counted["encoding"], "o200k_base");
    // What the emulator (Azure's stand-in) says the same prompt cost.
    let billed: Value = chat(&app.http, &app.base, &key, &request)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(counted["prompt_tokens"], billed["usage"]["prompt_tokens"]);
    assert_eq!(
        counted["admission_estimate"],
        json!(counted["prompt_tokens"].as_u64().unwrap() + 5)
    );

    for (model, status) in [("no-such-model", StatusCode::NOT_FOUND)] {
        let answer = app
            .http
            .post(app.url("/v1/tokenize"))
            .header("api-key", &key)
            .json(&json!({"model": model, "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status);
    }
    let bad = app
        .http
        .post(app.url("/v1/tokenize"))
        .header("api-key", &key)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let value: Value = bad.json().await.unwrap();
    assert_eq!(value["error"]["param"], "messages[0].content", "{value}");
}

async fn tokenize(app: &TestApp, key: &str, body: &Value) -> (StatusCode, Value) {
    let answer = app
        .http
        .post(app.url("/v1/tokenize"))
        .header("api-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    (answer.status(), answer.json().await.unwrap())
}

/// A run of one letter made tiktoken's merge loop quadratic (400 kB: a minute of CPU). It is
/// counted in linear time, and only up to the context window: past it the request is refused
/// anyway.
#[tokio::test]
async fn a_huge_run_of_one_letter_is_counted_up_to_the_window_and_refused_before_azure() {
    let sim = sim().await;
    let app = TestApp::spawn().await;
    let (_, key) = set_up(&app.http, &app.base, &sim, json!({})).await;
    let message = |n: usize| json!([{"role": "user", "content": "a".repeat(n)}]);

    let (status, counted) = tokenize(
        &app,
        &key,
        &json!({"model": "gpt-4o", "messages": message(100_000)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(counted["exact"], true);
    let request = json!({"messages": message(100_000), "max_tokens": 5});
    let billed: Value = chat(&app.http, &app.base, &key, &request)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        counted["prompt_tokens"], billed["usage"]["prompt_tokens"],
        "the gateway's count is the emulator's"
    );

    let (status, counted) = tokenize(
        &app,
        &key,
        &json!({"model": "gpt-4o", "messages": message(1_100_000)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(counted["exact"], false, "{counted}");
    assert!(
        counted["prompt_tokens"].as_u64().unwrap() > 128_000,
        "{counted}"
    );

    let before = sim.requests(None).len();
    let answer = chat(
        &app.http,
        &app.base,
        &key,
        &json!({"messages": message(1_100_000), "max_tokens": 200_000}),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let value: Value = answer.json().await.unwrap();
    assert_eq!(value["error"]["code"], "context_length_exceeded", "{value}");
    assert!(value["error"]["message"]
        .as_str()
        .unwrap()
        .contains("more than 128000 tokens"));
    assert_eq!(sim.requests(None).len(), before, "Azure was not called");
}

#[tokio::test]
async fn more_text_than_the_tokenize_cap_is_a_400_that_says_so() {
    let sim = sim().await;
    let app = TestApp::spawn_with(|c| c.tokenize_max_bytes = 50_000).await;
    let (_, key) = set_up(
        &app.http,
        &app.base,
        &sim,
        json!({"tokens_per_minute": 10_000_000}),
    )
    .await;
    let messages = json!([{"role": "user", "content": "word ".repeat(12_000)}]);
    let (status, answer) = tokenize(
        &app,
        &key,
        &json!({"model": "gpt-4o", "messages": messages}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let said = answer["error"]["message"].as_str().unwrap().to_owned();
    assert!(said.contains("more than 50000 bytes"), "{said}");
    let before = sim.requests(None).len();
    let answer = chat(&app.http, &app.base, &key, &json!({"messages": messages})).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.requests(None).len(), before, "Azure was not called");
}

#[tokio::test]
async fn a_keys_own_limits_apply_on_top_of_its_tenants_and_touch_no_other_key() {
    let sim = sim().await;
    let app = TestApp::spawn().await;
    let (_, unlimited) = set_up(&app.http, &app.base, &sim, json!({})).await;
    let (status, limited) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"name": "batch-job", "limits": {"requests_per_minute": 2}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{limited}");
    let limited = limited["key"].as_str().unwrap().to_owned();
    let first = chat(&app.http, &app.base, &limited, &body(5)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(
        chat(&app.http, &app.base, &limited, &body(5))
            .await
            .status(),
        StatusCode::OK
    );
    let third = chat(&app.http, &app.base, &limited, &body(5)).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    // The tenant's other key, and the other tenant, are not held back by it.
    assert_eq!(
        chat(&app.http, &app.base, &unlimited, &body(5))
            .await
            .status(),
        StatusCode::OK
    );
    let other = other_key(&app.http, &app.base).await;
    assert_eq!(
        chat(&app.http, &app.base, &other, &body(5)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn truncate_oldest_drops_the_oldest_turns_to_fit_and_keeps_system_and_last_user() {
    let sim = sim().await;
    let app = TestApp::spawn_with(|c| {
        c.model_limits = "gpt-4o=120/20".parse().unwrap();
    })
    .await;
    let (_, key) = set_up(&app.http, &app.base, &sim, json!({})).await;
    let (status, answer) = app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"context_overflow": "truncate_oldest"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let old = "an old turn about the weather ".repeat(6);
    let request = json!({"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": format!("first {old}")},
        {"role": "assistant", "content": format!("second {old}")},
        {"role": "user", "content": format!("third {old}")},
        {"role": "assistant", "content": "fourth"},
        {"role": "user", "content": "What now?"}], "max_tokens": 5});
    let started = Instant::now();
    let answer = loop {
        // The policy reaches the snapshot at once on the embedded store; be patient anyway.
        let answer = chat(&app.http, &app.base, &key, &request).await;
        if answer.status() == StatusCode::OK || started.elapsed() > Duration::from_secs(3) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer.status(), StatusCode::OK);
    let sent: Value = serde_json::from_slice(&sim.requests(None).last().unwrap().body).unwrap();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents.first(), Some(&"You are terse."));
    assert_eq!(contents.last(), Some(&"What now?"));
    assert!(
        !contents.iter().any(|c| c.starts_with("first")),
        "{contents:?}"
    );
    assert!(contents.len() < 6, "{contents:?}");

    // Another tenant keeps the default policy: the same request is refused.
    let other = other_key(&app.http, &app.base).await;
    let refused = chat(&app.http, &app.base, &other, &request).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_need_the_admin_token_and_count_calls_tokens_and_refusals() {
    let sim = sim().await;
    let app = TestApp::spawn().await;
    let (_, key) = set_up(
        &app.http,
        &app.base,
        &sim,
        json!({"requests_per_minute": 1}),
    )
    .await;
    assert_eq!(
        chat(&app.http, &app.base, &key, &body(5)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        chat(&app.http, &app.base, &key, &body(5)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A tenant's key does not open the metrics (their labels name every tenant).
    let denied = app
        .http
        .get(app.url("/metrics"))
        .header("api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let text = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(bulkhead_tests::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let has = |needle: &str| text.lines().any(|l| l.contains(needle));
    assert!(
        has(
            r#"bulkhead_requests_total{route="chat/completions",alias="gpt-4o",member="aoai-q/gpt-4o",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        has(r#"bulkhead_tokens_total{tenant="acme",model="gpt-4o",type="completion"}"#),
        "{text}"
    );
    assert!(has("bulkhead_request_duration_seconds_bucket"), "{text}");
    let refusals: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"bulkhead_quota_refusals_total{reason="rate_limited"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(refusals >= 1.0, "{text}");
    assert!(
        has(r#"bulkhead_member_breaker_state{member="aoai-q/gpt-4o"} 0"#),
        "{text}"
    );
    assert!(has("bulkhead_ledger_buffered"), "{text}");
}
