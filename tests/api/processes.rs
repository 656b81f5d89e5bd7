//! Gateways as separate OS processes on one Postgres: what one replica changes, the others
//! enforce; nothing secret reaches a log; SIGTERM stops cleanly.

use std::time::{Duration, Instant};

use bulkhead_tests::{
    admin_call, admin_posts, eventually, fresh_postgres_database, issue_key, GatewayProcess,
    MASTER_KEY,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn replica(database: &str) -> GatewayProcess {
    GatewayProcess::start(&[
        ("DATABASE_URL", database),
        ("BULKHEAD_MASTER_KEY", MASTER_KEY),
        ("BULKHEAD_LOG", "debug"),
    ])
    .await
}

#[tokio::test]
async fn a_key_revoked_through_one_replica_is_refused_by_another_within_two_seconds() {
    let database = fresh_postgres_database().await;
    let one = replica(&database).await;
    let two = replica(&database).await;
    let http = reqwest::Client::new();
    let (status, _) = admin_call(
        &http,
        &one.base,
        Method::POST,
        "/admin/v1/tenants",
        Some(json!({"slug": "acme", "display_name": "Acme"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, key) = admin_call(
        &http,
        &one.base,
        Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    let me = |base: String| {
        let http = http.clone();
        let secret = secret.to_owned();
        async move {
            http.get(format!("{base}/v1/me"))
                .header("api-key", secret)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // the new key reaches the second replica by notification
    eventually(
        Duration::from_secs(2),
        Duration::from_millis(20),
        async || match me(two.base.clone()).await {
            StatusCode::OK => Ok(()),
            status => Err(format!("the new key never reached replica two ({status})")),
        },
    )
    .await;
    let (status, _) = admin_call(
        &http,
        &one.base,
        Method::DELETE,
        &format!("/admin/v1/tenants/acme/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked = Instant::now();
    loop {
        let status = me(two.base.clone()).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked.elapsed() < Duration::from_secs(2),
            "replica two still accepts a revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(me(one.base.clone()).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn no_secret_reaches_the_logs_and_sigterm_exits_cleanly() {
    let database = fresh_postgres_database().await;
    let gateway = replica(&database).await;
    let http = reqwest::Client::new();
    let upstream = "upstream-secret-never-logged-42";
    let tenant_provided = "tenant-secret-never-logged-43";
    for (path, body) in [
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-1", "endpoint": "http://127.0.0.1:9/r/a", "region": "eastus", "api_key": upstream}),
        ),
        (
            "/admin/v1/search/services",
            json!({"name": "search-1", "endpoint": "http://127.0.0.1:9/r/s", "region": "eastus", "api_key": upstream}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "acme", "display_name": "Acme", "openai": {"isolation": "tenant_provided",
            "endpoint": "http://127.0.0.1:9/r/t", "api_key": tenant_provided, "region": "eastus"}}),
        ),
        // refused bodies that carry a secret must not echo it either
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-1", "endpoint": "http://127.0.0.1:9/r/a", "region": "eastus", "api_key": upstream}),
        ),
        (
            "/admin/v1/openai/resources",
            json!({"name": "bad name!", "endpoint": "http://127.0.0.1:9/r/a", "region": "eastus", "api_key": upstream}),
        ),
    ] {
        let (_, answer) = admin_call(&http, &gateway.base, Method::POST, path, Some(body)).await;
        assert!(
            !answer.to_string().contains(upstream) && !answer.to_string().contains(tenant_provided),
            "{answer}"
        );
    }
    let (_, key) = admin_call(
        &http,
        &gateway.base,
        Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    let key = key["key"].as_str().unwrap().to_owned();
    let (_, token) = admin_call(
        &http,
        &gateway.base,
        Method::POST,
        "/admin/v1/tenants/acme/tokens",
        None,
    )
    .await;
    let token = token["token"].as_str().unwrap().to_owned();
    for headers in [
        vec![("api-key", key.clone())],
        vec![("authorization", format!("Bearer {token}"))],
        vec![("api-key", format!("{key}x"))],
        vec![("authorization", format!("Bearer {token}x"))],
    ] {
        let mut request = http.get(format!("{}/v1/me", gateway.base));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let body = request.send().await.unwrap().text().await.unwrap();
        assert!(!body.contains(&key) && !body.contains(&token));
    }
    let output = gateway.output();
    assert!(
        output.contains("\"request_id\""),
        "the logs are JSON with request ids: {output}"
    );
    for secret in [
        upstream,
        tenant_provided,
        &key,
        &token,
        bulkhead_tests::ADMIN_TOKEN,
        MASTER_KEY,
        bulkhead_tests::JWT_SECRET,
    ] {
        assert!(!output.contains(secret), "a secret reached the log");
    }
    let status = gateway.terminate().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig};
    let sim = Sim::start(
        SimConfig::default().with_resource(
            ResourceConfig::new("aoai-slow", "eastus", "key-of-aoai-slow")
                .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o").with_latency(600, 0)),
        ),
    )
    .await
    .unwrap();
    let gateway = GatewayProcess::start(&[("BULKHEAD_LOG", "warn")]).await;
    let key = one_pool_tenant(
        &gateway.base,
        "aoai-slow",
        &sim.resource_url("aoai-slow"),
        "key-of-aoai-slow",
    )
    .await;
    let url = format!(
        "{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        gateway.base
    );
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("api-key", key)
            .json(&json!({"messages": [{"role": "user", "content": "take your time"}], "max_tokens": 3}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = gateway.terminate().await;
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the process waited for the request"
    );
}

/// A replica's `bulkhead_registry_*` series, by name.
async fn registry_series(
    http: &reqwest::Client,
    base: &str,
) -> std::collections::HashMap<String, f64> {
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
        .filter(|l| l.starts_with("bulkhead_registry_"))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn new_key(http: &reqwest::Client, base: &str, slug: &str) -> String {
    let (status, key) = admin_call(
        http,
        base,
        Method::POST,
        &format!("/admin/v1/tenants/{slug}/keys"),
        Some(json!({"name": "k", "scope": "read"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

async fn serves(http: &reqwest::Client, base: &str, key: &str) -> bool {
    http.get(format!("{base}/v1/me"))
        .header("api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        == StatusCode::OK
}

#[tokio::test]
async fn another_replica_applies_a_change_by_itself_without_reading_everything_and_catches_up_a_missed_notification(
) {
    let database = fresh_postgres_database().await;
    let one = replica(&database).await;
    let two = replica(&database).await;
    let http = reqwest::Client::new();
    let (status, _) = admin_call(
        &http,
        &one.base,
        Method::POST,
        "/admin/v1/tenants",
        Some(json!({"slug": "acme", "display_name": "Acme"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Both replicas have settled after the start (their first reads are full ones).
    let first = new_key(&http, &one.base, "acme").await;
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        async || {
            if serves(&http, &two.base, &first).await {
                Ok(())
            } else {
                Err("replica two never saw the first key".to_owned())
            }
        },
    )
    .await;
    let before = registry_series(&http, &two.base).await;

    // A key made through replica one is applied by replica two from the change log alone.
    let second = new_key(&http, &one.base, "acme").await;
    eventually(
        Duration::from_secs(2),
        Duration::from_millis(20),
        async || {
            if serves(&http, &two.base, &second).await {
                Ok(())
            } else {
                Err("replica two never applied the new key".to_owned())
            }
        },
    )
    .await;
    let after = registry_series(&http, &two.base).await;
    assert_eq!(
        after["bulkhead_registry_full_reloads_total"],
        before["bulkhead_registry_full_reloads_total"],
        "no full read: {before:?} -> {after:?}"
    );
    assert!(
        after["bulkhead_registry_changes_applied_total"]
            > before["bulkhead_registry_changes_applied_total"],
        "{before:?} -> {after:?}"
    );
    assert!(after["bulkhead_registry_change_mark"] > before["bulkhead_registry_change_mark"]);

    // Notifications of key writes silenced (as if the listener's connection had dropped one):
    // replica two still applies the next key, from its poll of the change log.
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    sqlx::query("ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed")
        .execute(&pool)
        .await
        .unwrap();
    let third = new_key(&http, &one.base, "acme").await;
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        async || {
            if serves(&http, &two.base, &third).await {
                Ok(())
            } else {
                Err("replica two never caught up the key whose notification was lost".to_owned())
            }
        },
    )
    .await;
    sqlx::query("ALTER TABLE api_keys ENABLE TRIGGER api_keys_changed")
        .execute(&pool)
        .await
        .unwrap();
    let caught_up = registry_series(&http, &two.base).await;
    assert_eq!(
        caught_up["bulkhead_registry_full_reloads_total"],
        before["bulkhead_registry_full_reloads_total"],
        "caught up without a full read"
    );
}

/// `--migrate-only` (the Kubernetes init container) brings a fresh database to this build's
/// schema and exits 0 without serving; run again, it changes nothing and still succeeds.
#[tokio::test]
async fn migrate_only_applies_the_schema_and_exits() {
    let database = fresh_postgres_database().await;
    for _ in 0..2 {
        let output = tokio::process::Command::new(bulkhead_tests::binary("bulkhead"))
            .env_clear()
            .env("DATABASE_URL", &database)
            .env("BULKHEAD_LOG", "info")
            .arg("--migrate-only")
            .output()
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr).to_string()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{log}");
        assert!(log.contains("migrations applied"), "{log}");
    }
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    let known = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/postgres"
    ))
    .unwrap()
    .count();
    assert_eq!(applied as usize, known);
}

/// A private CA the platform trusts through the system store (`SSL_CERT_FILE` here; the
/// distribution's bundle in an image) is accepted for upstream TLS, and without it the same
/// upstream is refused: the built-in roots alone do not trust it.
#[tokio::test]
async fn a_private_ca_in_the_system_store_is_trusted_for_upstream_tls() {
    use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig};
    let sim = Sim::start_with_tls(
        SimConfig::default().with_resource(
            ResourceConfig::new("aoai-private", "eastus", "key-of-aoai-private")
                .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o")),
        ),
    )
    .await
    .unwrap();
    let endpoint = sim.tls_resource_url("aoai-private").unwrap();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let ca = bulkhead_tests::temp_dir("private-ca").join("ca.pem");
    std::fs::write(&ca, sim.tls_ca_pem().unwrap()).unwrap();
    let (proxy, tunnelled) = connect_proxy().await;
    let upstream = endpoint
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let host = upstream.split(':').next().unwrap().to_owned();
    for (trusted, envs) in [
        (true, vec![("SSL_CERT_FILE", ca.to_str().unwrap())]),
        (false, vec![]),
        // Through an HTTPS_PROXY: a CONNECT tunnel, TLS inside it.
        (
            true,
            vec![
                ("SSL_CERT_FILE", ca.to_str().unwrap()),
                ("HTTPS_PROXY", proxy.as_str()),
            ],
        ),
        // NO_PROXY exempts the host: straight to it again.
        (
            true,
            vec![
                ("SSL_CERT_FILE", ca.to_str().unwrap()),
                ("HTTPS_PROXY", proxy.as_str()),
                ("NO_PROXY", host.as_str()),
            ],
        ),
    ] {
        let tunnels_before = tunnelled.lock().unwrap().len();
        let gateway = GatewayProcess::start(&envs).await;
        let key = one_pool_tenant(
            &gateway.base,
            "aoai-private",
            &endpoint,
            "key-of-aoai-private",
        )
        .await;
        let http = reqwest::Client::new();
        let answer = http
            .post(format!(
                "{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                gateway.base
            ))
            .header("api-key", &key)
            .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}))
            .send()
            .await
            .unwrap();
        if trusted {
            assert_eq!(
                answer.status(),
                StatusCode::OK,
                "{}",
                answer.text().await.unwrap()
            );
        } else {
            assert!(answer.status().is_server_error(), "{}", answer.status());
        }
        let through_proxy = envs.iter().any(|(k, _)| *k == "HTTPS_PROXY")
            && !envs.iter().any(|(k, _)| *k == "NO_PROXY");
        let tunnels: Vec<String> = tunnelled.lock().unwrap()[tunnels_before..].to_vec();
        if through_proxy {
            assert_eq!(
                tunnels,
                vec![upstream.clone()],
                "one tunnel, to the upstream"
            );
        } else {
            assert!(tunnels.is_empty(), "{tunnels:?}");
        }
    }
}

/// The smallest OpenAI world: one resource with a `gpt-4o` deployment in the `gpt-4o` pool,
/// and the shared tenant `acme`. Returns a read-write key of `acme`.
async fn one_pool_tenant(base: &str, resource: &str, endpoint: &str, api_key: &str) -> String {
    let http = reqwest::Client::new();
    let steps = vec![
        (
            "/admin/v1/openai/resources",
            json!({"name": resource, "endpoint": endpoint, "region": "eastus", "api_key": api_key}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": resource, "name": "gpt-4o", "model": "gpt-4o", "capacity_tpm": 1000}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "gpt-4o", "members": [{"deployment": format!("{resource}/gpt-4o")}]}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "acme", "display_name": "Acme", "openai": {"isolation": "shared"}}),
        ),
    ];
    admin_posts(&http, base, steps).await;
    issue_key(&http, base, "acme").await
}

/// A minimal HTTP CONNECT proxy: records each tunnel's target (`host:port`) and relays bytes.
async fn connect_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tunnelled = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::clone(&tunnelled);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let Some(target) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                else {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                seen.lock().unwrap().push(target.to_owned());
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (address, tunnelled)
}
