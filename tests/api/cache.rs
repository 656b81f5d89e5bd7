//! The per-tenant response cache end to end: the gateway on a real Redis, azure-sim upstream,
//! upstream calls counted in the sim's request log. The same request twice reaches Azure
//! once; another tenant's identical request reaches it; `no-cache` / `no-store` / `skip`
//! reach it; TTLs and a tenant's byte bound; a cached stream replayed as a valid SSE
//! stream; hits metered with zero tokens and counted against requests per minute; no hit
//! crosses tenants under concurrent load; Redis down, calls still answered.

use std::collections::{HashMap, HashSet};

use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig, SimHandle};
use bulkhead_tests::{redis_address, TestApp, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const API: &str = "api-version=2024-10-21";
const RESOURCE: &str = "aoai-cache";

struct World {
    app: TestApp,
    sim: SimHandle,
    keys: HashMap<String, String>,
}

/// One resource with a chat deployment, an embeddings deployment and `dedicated` chat
/// deployments of their own (`d0`, `d1`, ...); the shared pools `gpt-4o` and `emb`; tenants
/// `acme` and `beta` (cache on, 60 s, 1 MiB) and `off` (cache off), all shared. `redis`: the
/// gateway's Redis URL (the real one when `None`).
async fn world(dedicated: usize, redis: Option<String>) -> World {
    let mut resource = ResourceConfig::new(RESOURCE, "eastus", "key-of-cache")
        .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o"))
        .with_deployment(DeploymentConfig::new("emb", "text-embedding-3-small"));
    for n in 0..dedicated {
        resource = resource.with_deployment(DeploymentConfig::new(format!("d{n}"), "gpt-4o"));
    }
    let sim = Sim::start(SimConfig::default().with_resource(resource))
        .await
        .unwrap();
    let redis = redis.unwrap_or_else(|| format!("redis://{}", redis_address()));
    let prefix = format!("test:cache:{}:", uuid::Uuid::new_v4().simple());
    let app = TestApp::spawn_with(move |c| {
        c.quota.redis_url = Some(redis.into());
        c.quota.timeout_ms = 200;
        c.cache.key_prefix = prefix;
        c.cache.timeout_ms = 200;
    })
    .await;
    let post = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            let (status, answer) = app.admin(Method::POST, path, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
        }
    };
    post(
        "/admin/v1/openai/resources",
        json!({"name": RESOURCE, "endpoint": sim.resource_url(RESOURCE), "region": "eastus",
            "api_key": "key-of-cache"}),
    )
    .await;
    let mut deployments = vec![
        ("gpt-4o".to_owned(), "gpt-4o", None),
        ("emb".to_owned(), "text-embedding-3-small", None),
    ];
    deployments.extend((0..dedicated).map(|n| (format!("d{n}"), "gpt-4o", Some(format!("t{n}")))));
    for (name, model, owner) in &deployments {
        post(
            "/admin/v1/openai/deployments",
            json!({"resource": RESOURCE, "name": name, "model": model, "capacity_tpm": 1000000,
                "owner_tenant": owner}),
        )
        .await;
    }
    for alias in ["gpt-4o", "emb"] {
        post(
            "/admin/v1/openai/pools",
            json!({"alias": alias, "members": [{"deployment": format!("{RESOURCE}/{alias}")}]}),
        )
        .await;
    }
    let on = json!({"ttl_seconds": 60, "max_bytes": 1048576});
    let mut tenants = vec![
        json!({"slug": "acme", "display_name": "A", "openai": {"isolation": "shared"}, "response_cache": on}),
        json!({"slug": "beta", "display_name": "B", "openai": {"isolation": "shared"}, "response_cache": on}),
        json!({"slug": "off", "display_name": "Off", "openai": {"isolation": "shared"}}),
    ];
    // Tenants whose alias `gpt-4o` reaches a deployment of their own: their answers are told
    // apart by where they were made.
    for n in 0..dedicated {
        tenants.push(
            json!({"slug": format!("t{n}"), "display_name": "T", "response_cache": on,
            "openai": {"isolation": "dedicated_deployment",
                "models": {"gpt-4o": [{"deployment": format!("{RESOURCE}/d{n}")}]}}}),
        );
    }
    let mut keys = HashMap::new();
    for tenant in tenants {
        let slug = tenant["slug"].as_str().unwrap().to_owned();
        post("/admin/v1/tenants", tenant).await;
        keys.insert(slug.clone(), app.key(&slug, "read").await.1);
    }
    World { app, sim, keys }
}

impl World {
    async fn call(
        &self,
        tenant: &str,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .app
            .http
            .post(self.app.url(path))
            .header("api-key", &self.keys[tenant])
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn embed(
        &self,
        tenant: &str,
        input: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let path = format!("/openai/deployments/emb/embeddings?{API}");
        self.call(tenant, &path, &json!({"input": input}), headers)
            .await
    }

    async fn chat(
        &self,
        tenant: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let path = format!("/openai/deployments/gpt-4o/chat/completions?{API}");
        self.call(tenant, &path, body, headers).await
    }

    /// Upstream calls whose path contains `fragment`.
    fn upstream(&self, fragment: &str) -> usize {
        self.sim
            .requests(Some(RESOURCE))
            .iter()
            .filter(|r| r.path.contains(fragment))
            .count()
    }
}

fn outcome(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-bulkhead-cache")
        .map(|v| v.to_str().unwrap().to_owned())
}

fn chat_body(content: &str) -> Value {
    json!({"messages": [{"role": "user", "content": content}], "max_tokens": 8})
}

#[tokio::test]
async fn the_same_request_twice_reaches_azure_once_and_another_tenants_identical_request_reaches_it(
) {
    let w = world(0, None).await;
    let first = w.embed("acme", "cache me", &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(outcome(&first).as_deref(), Some("miss"));
    let first: Value = first.json().await.unwrap();
    let second = w.embed("acme", "cache me", &[]).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(outcome(&second).as_deref(), Some("hit"));
    assert!(second.headers().contains_key("age"));
    assert_eq!(second.headers()["content-type"], "application/json");
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    assert_eq!(w.upstream("/embeddings"), 1, "the hit did not reach Azure");
    // `user` does not change the answer, so it is not part of the key.
    let with_user = w
        .call(
            "acme",
            &format!("/openai/deployments/emb/embeddings?{API}"),
            &json!({"input": "cache me", "user": "someone"}),
            &[],
        )
        .await;
    assert_eq!(outcome(&with_user).as_deref(), Some("hit"));
    // Tenant B's identical request is B's own miss, answered by Azure.
    let other = w.embed("beta", "cache me", &[]).await;
    assert_eq!(outcome(&other).as_deref(), Some("miss"));
    assert_eq!(w.upstream("/embeddings"), 2);
    // A tenant without the cache: every call reaches Azure, and no header says otherwise.
    for _ in 0..2 {
        let off = w.embed("off", "cache me", &[]).await;
        assert_eq!(off.status(), StatusCode::OK);
        assert_eq!(outcome(&off), None);
    }
    assert_eq!(w.upstream("/embeddings"), 4);
    // The hit is metered as a cache hit with zero tokens; the miss with Azure's counts.
    let records = w.app.usage.records();
    let of_a: Vec<_> = records.iter().filter(|r| r.tenant == "acme").collect();
    assert_eq!(of_a.len(), 3);
    assert!(!of_a[0].cache_hit && of_a[0].usage.prompt_tokens > 0);
    for hit in &of_a[1..] {
        assert!(hit.cache_hit);
        assert_eq!(
            (
                hit.usage.prompt_tokens,
                hit.usage.completion_tokens,
                hit.usage.status
            ),
            (0, 0, 200)
        );
        assert_eq!(hit.usage.member, None);
    }
    assert!(records
        .iter()
        .filter(|r| r.tenant != "acme")
        .all(|r| !r.cache_hit));
    let metrics = w
        .app
        .http
        .get(w.app.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("bulkhead_cache_hits_total{layer="),
        "{metrics}"
    );
    assert!(metrics.contains("bulkhead_cache_stores_total"), "{metrics}");
    assert!(
        metrics.contains(
            r#"bulkhead_requests_total{route="embeddings",alias="emb",member="cache",status="200"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn no_cache_refreshes_no_store_and_skip_bypass_and_an_unknown_directive_is_refused() {
    let w = world(0, None).await;
    let body = chat_body("directives");
    assert_eq!(
        outcome(&w.chat("acme", &body, &[]).await).as_deref(),
        Some("miss")
    );
    assert_eq!(w.upstream("/chat/completions"), 1);
    let refreshed = w
        .chat("acme", &body, &[("cache-control", "no-cache")])
        .await;
    assert_eq!(outcome(&refreshed).as_deref(), Some("refresh"));
    assert_eq!(w.upstream("/chat/completions"), 2, "no-cache reaches Azure");
    let refreshed: Value = refreshed.json().await.unwrap();
    for headers in [
        &[("cache-control", "no-store")][..],
        &[("x-bulkhead-cache", "skip")][..],
    ] {
        let bypass = w.chat("acme", &body, headers).await;
        assert_eq!(outcome(&bypass).as_deref(), Some("bypass"), "{headers:?}");
    }
    assert_eq!(
        w.upstream("/chat/completions"),
        4,
        "no-store and skip reach Azure"
    );
    // The refreshed answer is the one now cached; the bypassed ones were not stored.
    let hit = w.chat("acme", &body, &[]).await;
    assert_eq!(outcome(&hit).as_deref(), Some("hit"));
    assert_eq!(hit.json::<Value>().await.unwrap()["id"], refreshed["id"]);
    assert_eq!(w.upstream("/chat/completions"), 4);
    // A new request with no-store is not stored either.
    let fresh = chat_body("never stored");
    w.chat("acme", &fresh, &[("cache-control", "no-store")])
        .await;
    assert_eq!(
        outcome(&w.chat("acme", &fresh, &[]).await).as_deref(),
        Some("miss")
    );
    let refused = w
        .chat("acme", &body, &[("x-bulkhead-cache", "maybe")])
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-bulkhead-cache"),
        "{error}"
    );
}

#[tokio::test]
async fn an_answer_expires_with_the_tenants_ttl() {
    let w = world(0, None).await;
    let (status, _) = w
        .app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"response_cache": {"ttl_seconds": 1, "max_bytes": 1048576}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    bulkhead_tests::eventually(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(50),
        async || {
            let r = w.embed("acme", "ttl warm-up", &[]).await;
            (outcome(&r).as_deref() == Some("miss"))
                .then_some(())
                .ok_or("not on yet".to_owned())
        },
    )
    .await;
    assert_eq!(
        outcome(&w.embed("acme", "short lived", &[]).await).as_deref(),
        Some("miss")
    );
    assert_eq!(
        outcome(&w.embed("acme", "short lived", &[]).await).as_deref(),
        Some("hit")
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = w.upstream("/embeddings");
    assert_eq!(
        outcome(&w.embed("acme", "short lived", &[]).await).as_deref(),
        Some("miss")
    );
    assert_eq!(
        w.upstream("/embeddings"),
        before + 1,
        "expired: Azure answers again"
    );
}

#[tokio::test]
async fn a_tenant_over_its_byte_bound_loses_its_oldest_answers() {
    let w = world(0, None).await;
    let size = w
        .embed("acme", "one", &[])
        .await
        .bytes()
        .await
        .unwrap()
        .len() as u64;
    // Room for one answer and a half: the second evicts the first.
    let bound = size * 3 / 2;
    let (status, body) = w
        .app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"response_cache": {"ttl_seconds": 60, "max_bytes": bound}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    bulkhead_tests::eventually(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(50),
        async || {
            let r = w.embed("acme", "uno", &[]).await;
            (outcome(&r).as_deref() == Some("miss"))
                .then_some(())
                .ok_or("not applied".to_owned())
        },
    )
    .await;
    assert_eq!(
        outcome(&w.embed("acme", "uno", &[]).await).as_deref(),
        Some("hit")
    );
    assert_eq!(
        outcome(&w.embed("acme", "dos", &[]).await).as_deref(),
        Some("miss")
    );
    assert_eq!(
        outcome(&w.embed("acme", "dos", &[]).await).as_deref(),
        Some("hit")
    );
    assert_eq!(
        outcome(&w.embed("acme", "uno", &[]).await).as_deref(),
        Some("miss"),
        "evicted"
    );
    // Tenant B's entries are not its to lose.
    w.embed("beta", "kept", &[]).await;
    assert_eq!(
        outcome(&w.embed("acme", "tres", &[]).await).as_deref(),
        Some("miss")
    );
    assert_eq!(
        outcome(&w.embed("beta", "kept", &[]).await).as_deref(),
        Some("hit")
    );
}

/// The events of an SSE body (their `data:` payloads).
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or_else(|| panic!("an event without data: {e:?}"))
                .to_owned()
        })
        .collect()
}

fn text_of(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(ToOwned::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn a_streamed_answer_is_served_from_the_cache_as_a_valid_event_stream() {
    let w = world(0, None).await;
    let mut body = chat_body("stream me please");
    body["stream"] = json!(true);
    let first = w.chat("acme", &body, &[]).await;
    assert_eq!(outcome(&first).as_deref(), Some("miss"));
    let first = events(&first.text().await.unwrap());
    assert_eq!(first.last().map(String::as_str), Some("[DONE]"));
    let second = w.chat("acme", &body, &[]).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(outcome(&second).as_deref(), Some("hit"));
    assert_eq!(second.headers()["content-type"], "text/event-stream");
    let second = events(&second.text().await.unwrap());
    assert_eq!(second, first, "the same events, in order");
    assert!(!text_of(&second).is_empty());
    assert_eq!(w.upstream("/chat/completions"), 1);
    // The plain request is another key: it reaches Azure.
    body["stream"] = json!(false);
    assert_eq!(
        outcome(&w.chat("acme", &body, &[]).await).as_deref(),
        Some("miss")
    );
    assert_eq!(w.upstream("/chat/completions"), 2);
    let hit = w
        .app
        .usage
        .records()
        .into_iter()
        .find(|r| r.cache_hit)
        .unwrap();
    assert!(hit.usage.streamed);
}

#[tokio::test]
async fn a_hit_counts_one_request_against_the_tenants_requests_per_minute() {
    let w = world(0, None).await;
    let (status, _) = w
        .app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"limits": {"requests_per_minute": 2}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    bulkhead_tests::eventually(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(50),
        async || {
            let r = w.embed("acme", "limited", &[]).await;
            r.headers()
                .contains_key("x-ratelimit-remaining-requests")
                .then_some(())
                .ok_or("no limit yet".to_owned())
        },
    )
    .await;
    // The call above was the first of the minute; this one is a hit and the second.
    let hit = w.embed("acme", "limited", &[]).await;
    assert_eq!(outcome(&hit).as_deref(), Some("hit"));
    assert_eq!(hit.headers()["x-ratelimit-remaining-requests"], "0");
    let refused = w.embed("acme", "limited", &[]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn under_concurrent_identical_requests_no_tenant_is_ever_served_another_tenants_answer() {
    const TENANTS: usize = 4;
    const CALLS: usize = 30;
    let w = std::sync::Arc::new(world(TENANTS, None).await);
    let body = chat_body("the very same question from everyone");
    let mut ids: Vec<HashSet<String>> = vec![HashSet::new(); TENANTS];
    let mut hits = 0;
    // Waves of concurrent calls: the first all misses racing to store, the later ones hits
    // read while every fifth call refreshes its tenant's entry (concurrent writes).
    for _wave in 0..3 {
        let mut tasks = Vec::new();
        for round in 0..CALLS {
            for n in 0..TENANTS {
                let (w, body) = (w.clone(), body.clone());
                tasks.push(tokio::spawn(async move {
                    let refresh: &[(&str, &str)] = if round % 5 == 4 {
                        &[("cache-control", "no-cache")]
                    } else {
                        &[]
                    };
                    let response = w.chat(&format!("t{n}"), &body, refresh).await;
                    assert_eq!(response.status(), StatusCode::OK);
                    let hit = outcome(&response).as_deref() == Some("hit");
                    let answer: Value = response.json().await.unwrap();
                    (n, answer["id"].as_str().unwrap().to_owned(), hit)
                }));
            }
        }
        for task in tasks {
            let (n, id, hit) = task.await.unwrap();
            ids[n].insert(id);
            hits += usize::from(hit);
        }
    }
    assert!(hits > 0, "the load was served from the cache in part");
    for n in 0..TENANTS {
        // Every answer a tenant got was made by Azure for that tenant's own deployment:
        // at most as many distinct answers as its deployment was called...
        let made = w.upstream(&format!("/deployments/d{n}/"));
        assert!(
            made >= 1 && ids[n].len() <= made,
            "t{n}: {} answers, {made} made",
            ids[n].len()
        );
        // ...and none of them was ever served to another tenant.
        for m in 0..TENANTS {
            if m != n {
                assert!(ids[n].is_disjoint(&ids[m]), "t{n} and t{m} share an answer");
            }
        }
    }
}

#[tokio::test]
async fn with_redis_down_calls_are_still_answered() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", dead.local_addr().unwrap());
    drop(dead);
    let w = world(0, Some(url)).await;
    for _ in 0..3 {
        let response = w.embed("acme", "redis is gone", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(matches!(
            outcome(&response).as_deref(),
            Some("miss" | "hit")
        ));
    }
    assert!(w.upstream("/embeddings") >= 1);
}
