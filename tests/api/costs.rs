//! Prices and the cost of every usage record: the price table through the admin API, and cost
//! = tokens × the price in force when the call finished, for chat, streaming, embeddings and
//! responses calls, across a price change, in the ledger's events and in its rollups.

use std::collections::HashMap;
use std::time::Duration;

use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig, SimHandle};
use bulkhead_tests::{
    admin_call, admin_posts, eventually, fresh_postgres_database, GatewayProcess, TestApp,
    ADMIN_TOKEN, MASTER_KEY,
};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn sim() -> SimHandle {
    Sim::start(
        SimConfig::default().with_resource(
            ResourceConfig::new("aoai-c", "eastus", "key-of-aoai-c")
                .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o"))
                .with_deployment(DeploymentConfig::new("embed", "text-embedding-3-small"))
                .with_deployment(DeploymentConfig::new("mini", "gpt-4o-mini"))
                .with_deployment(DeploymentConfig::new("ptu", "gpt-4o")),
        ),
    )
    .await
    .unwrap()
}

/// The resource, three deployments and their pools (`mini` has no price), tenant `acme`.
async fn set_up(http: &reqwest::Client, base: &str, sim: &SimHandle) -> String {
    let deployment = |name: &str, model: &str| {
        json!({"resource": "aoai-c", "name": name, "model": model,
            "model_version": "2024-08-06", "capacity_tpm": 1_000_000})
    };
    let pool = |alias: &str| json!({"alias": alias, "members": [{"deployment": format!("aoai-c/{alias}")}]});
    admin_posts(
        http,
        base,
        vec![
            (
                "/admin/v1/openai/resources",
                json!({"name": "aoai-c", "endpoint": sim.resource_url("aoai-c"),
                    "region": "eastus", "api_key": "key-of-aoai-c"}),
            ),
            (
                "/admin/v1/openai/deployments",
                deployment("gpt-4o", "gpt-4o"),
            ),
            (
                "/admin/v1/openai/deployments",
                deployment("embed", "text-embedding-3-small"),
            ),
            (
                "/admin/v1/openai/deployments",
                deployment("mini", "gpt-4o-mini"),
            ),
            ("/admin/v1/openai/pools", pool("gpt-4o")),
            ("/admin/v1/openai/pools", pool("embed")),
            ("/admin/v1/openai/pools", pool("mini")),
            (
                "/admin/v1/tenants",
                json!({"slug": "acme", "display_name": "Acme", "openai": {"isolation": "shared"}}),
            ),
        ],
    )
    .await;
    let (status, key) = admin_call(
        http,
        base,
        Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

/// One call of each kind (chat, streamed chat, responses) on `alias`, and an embedding.
async fn calls(http: &reqwest::Client, base: &str, key: &str, alias: &str) {
    let chat = json!({"model": alias, "messages": [{"role": "user", "content": "price me"}],
        "max_tokens": 7});
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    for (path, body) in [
        ("/openai/v1/chat/completions", chat),
        ("/openai/v1/chat/completions", streamed),
        (
            "/openai/v1/responses",
            json!({"model": alias, "input": "price me too", "max_output_tokens": 16}),
        ),
        (
            "/openai/v1/embeddings",
            json!({"model": "embed", "input": ["one", "two three"]}),
        ),
    ] {
        let response = http
            .post(format!("{base}{path}"))
            .header("api-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        // A stream is finished (and metered) once read to its end.
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
    }
}

async fn price(http: &reqwest::Client, base: &str, body: Value) -> Value {
    let (status, price) =
        admin_call(http, base, Method::POST, "/admin/v1/prices", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{price}");
    price
}

/// Micro-units per million tokens from a price's decimal string.
fn micros(value: &Value) -> u128 {
    let text = value.as_str().unwrap();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    whole.parse::<u128>().unwrap() * 1_000_000 + format!("{fraction:0<6}").parse::<u128>().unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct Event {
    alias: String,
    operation: String,
    streamed: bool,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    cost: Option<i64>,
    unpriced: bool,
    finished_at: DateTime<Utc>,
}

#[tokio::test]
async fn every_call_costs_its_tokens_times_the_price_in_force_when_it_finished() {
    let sim = sim().await;
    let database = fresh_postgres_database().await;
    let gateway = GatewayProcess::start(&[
        ("DATABASE_URL", database.as_str()),
        ("BULKHEAD_MASTER_KEY", MASTER_KEY),
        ("BULKHEAD_LOG", "warn"),
    ])
    .await;
    let http = reqwest::Client::new();
    let base = gateway.base.as_str();
    let key = set_up(&http, base, &sim).await;

    // In force from now: gpt-4o whatever its version, and the embedding model.
    let first = price(
        &http,
        base,
        json!({"model": "gpt-4o", "deployment_type": "global_standard", "currency": "USD",
            "input_per_million": "2.50", "cached_input_per_million": "1.25",
            "output_per_million": "10"}),
    )
    .await;
    let embedding = price(
        &http,
        base,
        json!({"model": "text-embedding-3-small", "deployment_type": "global_standard",
            "currency": "USD", "input_per_million": "0.02"}),
    )
    .await;
    // A price change later in the month: the deployments' version, from two seconds on.
    let change_at = Utc::now() + chrono::Duration::seconds(2);
    let second = price(
        &http,
        base,
        json!({"model": "gpt-4o", "model_version": "2024-08-06",
            "deployment_type": "global_standard", "currency": "USD",
            "input_per_million": "5.000001", "output_per_million": "20",
            "effective_from": change_at}),
    )
    .await;

    calls(&http, base, &key, "gpt-4o").await;
    let response = http
        .post(format!("{base}/openai/v1/chat/completions"))
        .header("api-key", &key)
        .json(&json!({"model": "mini", "messages": [{"role": "user", "content": "no price"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let wait = (change_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    calls(&http, base, &key, "gpt-4o").await;

    // Every record is in the ledger (it writes in batches).
    let events: Vec<Event> = eventually(
        Duration::from_secs(15),
        Duration::from_millis(200),
        async || {
            use sqlx::Connection;
            let mut db = sqlx::PgConnection::connect(&database).await.unwrap();
            let events: Vec<Event> = sqlx::query_as(
                "SELECT alias, operation, streamed, prompt_tokens, completion_tokens, \
                 cached_tokens, cost, unpriced, finished_at FROM usage_events \
                 ORDER BY finished_at",
            )
            .fetch_all(&mut db)
            .await
            .unwrap();
            if events.len() == 9 {
                Ok(events)
            } else {
                Err(format!("{} events", events.len()))
            }
        },
    )
    .await;

    let mut expected_by_model: HashMap<String, u128> = HashMap::new();
    let mut after_change = 0;
    for e in &events {
        assert!(e.prompt_tokens > 0, "{e:?}");
        if e.alias == "mini" {
            assert!(e.unpriced && e.cost.is_none(), "no price applies: {e:?}");
            continue;
        }
        let in_force = if e.alias == "embed" {
            &embedding
        } else if e.finished_at >= change_at {
            after_change += 1;
            &second
        } else {
            &first
        };
        let (prompt, cached, completion) = (
            e.prompt_tokens as u128,
            e.cached_tokens as u128,
            e.completion_tokens as u128,
        );
        let output = if in_force["output_per_million"].is_string() {
            micros(&in_force["output_per_million"])
        } else {
            0
        };
        let expected = (prompt - cached) * micros(&in_force["input_per_million"])
            + cached * micros(&in_force["cached_input_per_million"])
            + completion * output;
        assert!(!e.unpriced, "{e:?}");
        assert_eq!(e.cost.map(|c| c as u128), Some(expected), "{e:?}");
        assert!(expected > 0, "never 0 because a field was missing: {e:?}");
        *expected_by_model.entry(e.alias.clone()).or_default() += expected;
    }
    assert_eq!(
        after_change, 3,
        "chat, stream and responses after the change"
    );
    assert!(events.iter().any(|e| e.streamed && e.cost.unwrap_or(0) > 0));
    assert!(events.iter().any(|e| e.operation == "responses"));

    // The month's rollups: the change splits the month, each part at its price.
    let month_start = Utc::now().format("%Y-%m-01T00:00:00Z").to_string();
    let (status, usage) = admin_call(
        &http,
        base,
        Method::GET,
        &format!("/admin/v1/tenants/acme/usage?granularity=day&group_by=model&from={month_start}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["currency"], "USD");
    let mut billed: HashMap<String, u128> = HashMap::new();
    let mut unpriced = 0;
    for row in usage["rows"].as_array().unwrap() {
        let cost = row["cost"].as_str().unwrap();
        let (whole, fraction) = cost.split_once('.').unwrap_or((cost, ""));
        let pico = whole.parse::<u128>().unwrap() * 1_000_000_000_000
            + format!("{fraction:0<12}").parse::<u128>().unwrap();
        *billed
            .entry(row["group"].as_str().unwrap().to_owned())
            .or_default() += pico;
        unpriced += row["unpriced"].as_u64().unwrap();
    }
    assert_eq!(unpriced, 1, "{usage}");
    for (alias, expected) in &expected_by_model {
        assert_eq!(billed.get(alias), Some(expected), "{alias}: {usage}");
    }

    // The chargeback CSV carries the cost; Prometheus counts cost and unpriced calls.
    let csv = http
        .get(format!(
            "{base}/admin/v1/tenants/acme/usage?from={month_start}"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.ends_with(",cost,unpriced"), "{csv}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("bulkhead_unpriced_calls_total{tenant=\"acme\",model=\"mini\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("bulkhead_cost_nanos_total{tenant=\"acme\",model=\"gpt-4o\"}"));
}

#[tokio::test]
async fn a_price_never_takes_effect_in_the_past_and_one_in_force_stays() {
    let app = TestApp::spawn().await;
    let sim = sim().await;
    set_up(&app.http, &app.base, &sim).await;
    let post = |body: Value| app.admin(Method::POST, "/admin/v1/prices", Some(body));
    let base = json!({"model": "gpt-4o", "deployment_type": "global_standard",
        "currency": "USD", "input_per_million": "2.5", "output_per_million": "10"});
    let with = |patch: Value| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    // Refused, each naming its field, and nothing written.
    for (patch, field) in [
        (
            json!({"effective_from": "2020-01-01T00:00:00Z"}),
            "effective_from",
        ),
        (json!({"input_per_million": "2.5.1"}), "input_per_million"),
        (json!({"input_per_million": 2.5}), "input_per_million"),
        (
            json!({"output_per_million": "0.0000001"}),
            "output_per_million",
        ),
        (json!({"currency": "usd"}), "currency"),
        (json!({"monthly_cost": "1000"}), "monthly_cost"),
        (json!({"deployment": "aoai-c/embed"}), "deployment"),
        (json!({"deployment": "aoai-c/nope"}), "deployment"),
        (json!({"deployment_type": "cheap"}), "deployment_type"),
    ] {
        let (status, error) = post(with(patch.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {error}");
        assert_eq!(error["error"]["field"], field, "{patch}: {error}");
    }
    let (_, table) = app.admin(Method::GET, "/admin/v1/prices", None).await;
    assert_eq!(table["data"], json!([]), "{table}");
    assert_eq!(table["currency"], Value::Null);

    let (status, now) = post(base.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{now}");
    assert_eq!(now["input_per_million"], "2.5");
    assert_eq!(
        now["cached_input_per_million"], "2.5",
        "defaults to the input price"
    );
    // One currency per table.
    let (status, error) = post(with(json!({"currency": "EUR", "model": "other"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    // A scheduled change can be withdrawn; a price in force cannot.
    let (status, later) = post(with(
        json!({"effective_from": Utc::now() + chrono::Duration::days(30), "input_per_million": "3"}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{later}");
    let (status, _) = app.admin(Method::GET, "/admin/v1/prices", None).await;
    assert_eq!(status, StatusCode::OK);
    let delete = async |id: &str| {
        app.admin(Method::DELETE, &format!("/admin/v1/prices/{id}"), None)
            .await
    };
    let (status, error) = delete(now["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    let (status, _) = delete(later["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(later["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = delete("not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, table) = app.admin(Method::GET, "/admin/v1/prices", None).await;
    assert_eq!(table["currency"], "USD");
    assert_eq!(table["data"].as_array().unwrap().len(), 1, "{table}");

    // Prices are the platform's: a tenant's credential reaches none of these routes.
    let (_, key) = app.key("acme", "read-write").await;
    let response = app
        .http
        .get(app.url("/admin/v1/prices"))
        .header("api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_key_spends_within_its_own_budget_and_its_tenant_sees_what_is_left() {
    let app = TestApp::spawn().await;
    let sim = sim().await;
    let key = set_up(&app.http, &app.base, &sim).await;
    let (other_id, other) = app.key("acme", "read-write").await;
    let (status, _) = app
        .admin(
            Method::POST,
            "/admin/v1/prices",
            Some(
                json!({"model": "gpt-4o", "deployment_type": "global_standard",
                "currency": "USD", "input_per_million": "1000", "output_per_million": "1000"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // 0.05 USD: a call of a few dozen tokens at 0.001 a token fits once or twice, not ten times.
    let (status, patched) = app
        .admin(
            Method::PATCH,
            &format!("/admin/v1/tenants/acme/keys/{other_id}"),
            Some(json!({"limits": {"monthly_budget": "0.05"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["limits"]["monthly_budget"], "0.05");
    let (status, error) = app
        .admin(
            Method::PATCH,
            &format!("/admin/v1/tenants/acme/keys/{other_id}"),
            Some(json!({"limits": {"monthly_budget": 0.05}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let chat = async |key: &str| {
        app.http
            .post(app.url("/openai/v1/chat/completions"))
            .header("api-key", key)
            .json(&json!({"model": "gpt-4o", "max_tokens": 5,
                "messages": [{"role": "user", "content": "a short question"}]}))
            .send()
            .await
            .unwrap()
    };
    let mut refused = None;
    let mut left = Vec::new();
    for _ in 0..10 {
        let answer = chat(&other).await;
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(answer.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(answer.status(), StatusCode::OK);
        left.push(
            answer.headers()["x-bulkhead-budget-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let refused = refused.expect("the key's budget ran out");
    assert_eq!(refused["error"]["code"], "insufficient_quota", "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("spending budget"));
    assert!(!left.is_empty(), "at least one call fit");
    // The other key of the same tenant has no budget of its own and no header.
    let answer = chat(&key).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer
        .headers()
        .get("x-bulkhead-budget-remaining")
        .is_none());
}

#[tokio::test]
async fn a_provisioned_deployment_s_month_is_shared_by_token_share() {
    let sim = sim().await;
    let gateway = GatewayProcess::start(&[("BULKHEAD_LOG", "warn")]).await;
    let http = reqwest::Client::new();
    let base = gateway.base.as_str();
    let acme = set_up(&http, base, &sim).await;
    admin_posts(
        &http,
        base,
        vec![
            (
                "/admin/v1/openai/deployments",
                json!({"resource": "aoai-c", "name": "ptu", "model": "gpt-4o",
                    "kind": "provisioned", "capacity_tpm": 100_000}),
            ),
            (
                "/admin/v1/openai/pools",
                json!({"alias": "ptu", "members": [{"deployment": "aoai-c/ptu"}]}),
            ),
            (
                "/admin/v1/tenants",
                json!({"slug": "beta", "display_name": "Beta", "openai": {"isolation": "shared"}}),
            ),
            (
                "/admin/v1/prices",
                json!({"model": "gpt-4o", "deployment_type": "provisioned", "currency": "USD",
                    "input_per_million": "0", "monthly_cost": "3000"}),
            ),
        ],
    )
    .await;
    let (_, beta) = admin_call(
        &http,
        base,
        Method::POST,
        "/admin/v1/tenants/beta/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    let beta = beta["key"].as_str().unwrap().to_owned();
    for (key, calls) in [(&acme, 3), (&beta, 1)] {
        for _ in 0..calls {
            let answer = http
                .post(format!("{base}/openai/v1/chat/completions"))
                .header("api-key", key)
                .json(&json!({"model": "ptu", "max_tokens": 4,
                    "messages": [{"role": "user", "content": "share the bill"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
        }
    }
    let report = eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || {
            let (status, report) =
                admin_call(&http, base, Method::GET, "/admin/v1/chargeback", None).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            match report["deployments"][0]["tenants"].as_array().map(Vec::len) {
                Some(2) => Ok(report),
                _ => Err(report.to_string()),
            }
        },
    )
    .await;
    let deployment = &report["deployments"][0];
    assert_eq!(deployment["deployment"], "aoai-c/ptu", "{report}");
    assert_eq!(report["currency"], "USD");
    let micros = |v: &Value| {
        let text = v.as_str().unwrap();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        whole.parse::<u64>().unwrap() * 1_000_000
            + format!("{fraction:0<6}").parse::<u64>().unwrap()
    };
    // In force from now: the month's cost is prorated to the part of the month left.
    let cost = micros(&deployment["cost"]);
    assert!(cost > 0 && cost <= 3_000_000_000, "{report}");
    let total = deployment["tokens"].as_u64().unwrap();
    let mut allocated = 0;
    for tenant in deployment["tenants"].as_array().unwrap() {
        let tokens = tenant["tokens"].as_u64().unwrap();
        let share = micros(&tenant["share"]);
        assert_eq!(
            share as u128,
            cost as u128 * tokens as u128 / total as u128,
            "{report}"
        );
        allocated += share;
    }
    assert_eq!(allocated + micros(&deployment["unallocated"]), cost);
    let tokens_of = |slug: &str| {
        deployment["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == slug)
            .map(|t| t["tokens"].as_u64().unwrap())
            .unwrap()
    };
    assert_eq!(tokens_of("acme"), 3 * tokens_of("beta"), "{report}");

    let (status, error) = admin_call(
        &http,
        base,
        Method::GET,
        "/admin/v1/chargeback?month=2026-13",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["field"], "month");
}
