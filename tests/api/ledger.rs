//! The usage ledger end to end, with the real binary: every finished call is one record,
//! also across a Postgres outage; usage queries and the CSV export; a tenant sees only its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig, SimHandle};
use bulkhead_tests::{
    admin_call, eventually, fresh_postgres_database, CutProxy, GatewayProcess, ADMIN_TOKEN,
    MASTER_KEY,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const CHAT: &str = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

async fn sim() -> SimHandle {
    Sim::start(
        SimConfig::default().with_resource(
            ResourceConfig::new("aoai-l", "eastus", "key-of-aoai-l")
                .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o")),
        ),
    )
    .await
    .unwrap()
}

/// Tenants `acme` and `beta` on a shared pool; returns their ids and keys.
async fn set_up(http: &reqwest::Client, base: &str, sim: &SimHandle) -> Vec<(String, String)> {
    for (path, body) in [
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-l", "endpoint": sim.resource_url("aoai-l"),
            "region": "eastus", "api_key": "key-of-aoai-l"}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-l", "name": "gpt-4o",
            "model": "gpt-4o", "capacity_tpm": 1_000_000}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "gpt-4o",
            "members": [{"deployment": "aoai-l/gpt-4o"}]}),
        ),
    ] {
        let (status, answer) = admin_call(http, base, Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
    }
    let mut tenants = Vec::new();
    for slug in ["acme", "beta"] {
        let (status, tenant) = admin_call(
            http,
            base,
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"slug": slug, "display_name": slug, "openai": {"isolation": "shared"}})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{tenant}");
        let (status, key) = admin_call(
            http,
            base,
            Method::POST,
            &format!("/admin/v1/tenants/{slug}/keys"),
            Some(json!({"name": "k"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        tenants.push((
            tenant["id"].as_str().unwrap().to_owned(),
            key["key"].as_str().unwrap().to_owned(),
        ));
    }
    tenants
}

async fn chat(http: &reqwest::Client, base: &str, key: &str) -> StatusCode {
    http.post(format!("{base}{CHAT}"))
        .header("api-key", key)
        .json(&json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

/// A tenant's GET of `url`, as JSON.
async fn tenant_get(http: &reqwest::Client, url: &str, key: &str) -> Value {
    http.get(url)
        .header("api-key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn events_in_postgres(database: &str, tenant: &str) -> (i64, i64) {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(database).await.unwrap();
    let tenant = uuid::Uuid::parse_str(tenant).unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_events WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let rolled: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(requests), 0)::bigint FROM usage_hourly WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&mut db)
    .await
    .unwrap();
    (events, rolled)
}

#[tokio::test]
async fn with_postgres_gone_mid_load_keys_keep_working_and_no_usage_record_is_lost() {
    let sim = sim().await;
    let database = fresh_postgres_database().await;
    let proxy = CutProxy::start("127.0.0.1:5432").await;
    let proxied = database.replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    assert_ne!(proxied, database, "the database URL goes through the proxy");
    let gateway = GatewayProcess::start(&[
        ("DATABASE_URL", proxied.as_str()),
        ("BULKHEAD_MASTER_KEY", MASTER_KEY),
        ("BULKHEAD_LOG", "warn"),
    ])
    .await;
    let http = reqwest::Client::new();
    let tenants = set_up(&http, &gateway.base, &sim).await;
    let (tenant, key) = tenants[0].clone();

    let finished = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (http, base, key) = (http.clone(), gateway.base.clone(), key.clone());
            let (finished, failed, running) = (finished.clone(), failed.clone(), running.clone());
            tokio::spawn(async move {
                while running.load(Ordering::SeqCst) {
                    let status = chat(&http, &base, &key).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    if status != StatusCode::OK {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.cut();
    let cut_at = finished.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready: Value = http
        .get(format!("{}/readyz", gateway.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["ledger"]["store_up"], false, "{ready}");
    let during_cut = finished.load(Ordering::SeqCst) - cut_at;
    assert!(
        during_cut > 20,
        "calls kept flowing while the store was down: {during_cut}"
    );
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "every call of a valid key succeeded"
    );
    let calls = finished.load(Ordering::SeqCst) as i64;

    eventually(
        Duration::from_secs(30),
        Duration::from_millis(250),
        async || {
            let (events, rolled) = events_in_postgres(&database, &tenant).await;
            assert!(events <= calls, "{events} records for {calls} calls");
            if events < calls {
                return Err(format!(
                    "{events} of {calls} records written; output:\n{}",
                    gateway.output()
                ));
            }
            assert_eq!(rolled, calls, "the hourly rollups count each call once");
            Ok(())
        },
    )
    .await;
    let ready: Value = http
        .get(format!("{}/readyz", gateway.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
}

#[tokio::test]
async fn usage_is_queryable_as_json_and_csv_and_each_tenant_sees_only_its_own() {
    let sim = sim().await;
    let gateway = GatewayProcess::start(&[("BULKHEAD_LOG", "warn")]).await;
    let http = reqwest::Client::new();
    let tenants = set_up(&http, &gateway.base, &sim).await;
    let (_, acme) = &tenants[0];
    let (_, beta) = &tenants[1];
    for _ in 0..5 {
        assert_eq!(chat(&http, &gateway.base, acme).await, StatusCode::OK);
    }
    assert_eq!(chat(&http, &gateway.base, beta).await, StatusCode::OK);

    // The ledger writes in batches: wait for the five calls to be there.
    let admin = eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || {
            let (status, usage) = admin_call(
                &http,
                &gateway.base,
                Method::GET,
                "/admin/v1/tenants/acme/usage?granularity=hour&group_by=model",
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{usage}");
            if usage["rows"][0]["requests"] == 5 {
                Ok(usage)
            } else {
                Err(usage.to_string())
            }
        },
    )
    .await;
    let row = &admin["rows"][0];
    assert_eq!(row["group"], "gpt-4o");
    assert_eq!(row["completion_tokens"], 15);
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0);

    // The tenant's own view: the same numbers, and never another tenant's.
    let own = tenant_get(
        &http,
        &format!("{}/v1/usage?group_by=model", gateway.base),
        acme,
    )
    .await;
    assert_eq!(own["tenant"], "acme");
    assert_eq!(own["rows"][0]["requests"], 5, "{own}");
    let theirs = tenant_get(&http, &format!("{}/v1/usage", gateway.base), beta).await;
    assert_eq!(theirs["tenant"], "beta");
    assert_eq!(theirs["rows"][0]["requests"], 1, "{theirs}");
    // No query parameter names another tenant: `tenant=acme` is not a parameter at all, and
    // an unknown parameter is refused rather than ignored.
    let sneaky = tenant_get(
        &http,
        &format!("{}/v1/usage?tenant=acme&tenant_id=acme", gateway.base),
        beta,
    )
    .await;
    assert_eq!(sneaky["error"]["code"], "BadRequest", "{sneaky}");
    assert!(sneaky.get("rows").is_none(), "{sneaky}");

    let csv = http
        .get(format!(
            "{}/admin/v1/tenants/acme/usage?group_by=key",
            gateway.base
        ))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("period_start,"), "{text}");
    assert_eq!(lines.count(), 1, "{text}");

    // Bad queries are refused, in each caller's format.
    let (status, error) = admin_call(
        &http,
        &gateway.base,
        Method::GET,
        "/admin/v1/tenants/acme/usage?granularity=minute",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let bad = http
        .get(format!("{}/v1/usage?from=yesterday", gateway.base))
        .header("api-key", acme)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let error: Value = bad.json().await.unwrap();
    assert_eq!(error["error"]["param"], "from", "{error}");
}
