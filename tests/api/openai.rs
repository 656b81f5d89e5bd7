//! The Azure OpenAI data plane against azure-sim: each isolation model reaches its own
//! deployment with the resource's credential, failover, cooldowns, streaming, and that no
//! tenant reaches another's deployments.

use azure_sim::{
    fingerprint, DeploymentConfig, FaultSpec, ResourceConfig, Sim, SimConfig, SimHandle,
};
use bulkhead_tests::{admin_posts, TestApp};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const API: &str = "api-version=2024-10-21";

struct World {
    app: TestApp,
    sim: SimHandle,
    keys: std::collections::HashMap<&'static str, String>,
}

fn resource(name: &str, region: &str, deployments: &[&str]) -> ResourceConfig {
    deployments.iter().fold(
        ResourceConfig::new(name, region, format!("key-of-{name}")),
        |r, d| r.with_deployment(DeploymentConfig::new(*d, "gpt-4o")),
    )
}

/// Three shared resources (two in the US, one in the EU), one reserved for `dr`, a
/// tenant-provided one, and a tenant on each isolation model.
async fn world() -> World {
    let sim = Sim::start(
        SimConfig::default()
            .with_resource(resource("aoai-eastus", "eastus", &["gpt-4o", "dd-gpt4o"]))
            .with_resource(resource("aoai-westus", "westus", &["gpt-4o"]))
            .with_resource(resource("aoai-westeurope", "westeurope", &["gpt-4o"]))
            .with_resource(resource("aoai-dr", "eastus", &["gpt-4o"]))
            .with_resource(resource("aoai-byo", "northeurope", &["my-gpt"])),
    )
    .await
    .unwrap();
    let app = TestApp::spawn().await;
    let post = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            let (status, answer) = app.admin(Method::POST, path, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
        }
    };
    for (name, region, zone, owner) in [
        ("aoai-eastus", "eastus", "us", None),
        ("aoai-westus", "westus", "us", None),
        ("aoai-westeurope", "westeurope", "eu", None),
        ("aoai-dr", "eastus", "us", Some("dr")),
    ] {
        post("/admin/v1/openai/resources", json!({"name": name, "endpoint": sim.resource_url(name),
            "region": region, "data_zone": zone, "api_key": format!("key-of-{name}"), "owner_tenant": owner})).await;
    }
    for (resource, name, owner) in [
        ("aoai-eastus", "gpt-4o", None),
        ("aoai-westus", "gpt-4o", None),
        ("aoai-westeurope", "gpt-4o", None),
        ("aoai-eastus", "dd-gpt4o", Some("dd")),
        ("aoai-dr", "gpt-4o", None),
    ] {
        post(
            "/admin/v1/openai/deployments",
            json!({"resource": resource, "name": name, "model": "gpt-4o",
            "capacity_tpm": 100000, "owner_tenant": owner}),
        )
        .await;
    }
    post(
        "/admin/v1/openai/pools",
        json!({"alias": "gpt-4o", "members": [
        {"deployment": "aoai-eastus/gpt-4o", "priority": 0, "weight": 1},
        {"deployment": "aoai-westus/gpt-4o", "priority": 0, "weight": 1},
        {"deployment": "aoai-westeurope/gpt-4o", "priority": 1, "weight": 1}]}),
    )
    .await;
    post(
        "/admin/v1/tenants",
        json!({"slug": "shared", "display_name": "Shared", "openai": {"isolation": "shared"}}),
    )
    .await;
    post("/admin/v1/tenants", json!({"slug": "eu-shared", "display_name": "EU", "data_zone": "eu", "openai": {"isolation": "shared"}})).await;
    post(
        "/admin/v1/tenants",
        json!({"slug": "dd", "display_name": "DD", "openai": {"isolation": "dedicated_deployment",
        "models": {"gpt-4o": [{"deployment": "aoai-eastus/dd-gpt4o"}]}}}),
    )
    .await;
    post("/admin/v1/tenants", json!({"slug": "dr", "display_name": "DR", "openai": {"isolation": "dedicated_resource", "resources": ["aoai-dr"]}})).await;
    post("/admin/v1/tenants", json!({"slug": "byo", "display_name": "BYO", "openai": {"isolation": "tenant_provided",
        "endpoint": sim.resource_url("aoai-byo"), "api_key": "key-of-aoai-byo", "region": "northeurope"}})).await;
    let mut keys = std::collections::HashMap::new();
    for slug in ["shared", "eu-shared", "dd", "dr", "byo"] {
        keys.insert(slug, app.key(slug, "read").await.1);
    }
    World { app, sim, keys }
}

impl World {
    async fn chat(&self, tenant: &str, alias: &str, extra: Value) -> reqwest::Response {
        let mut body =
            json!({"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.app
            .http
            .post(self.app.url(&format!(
                "/openai/deployments/{alias}/chat/completions?{API}"
            )))
            .header("api-key", &self.keys[tenant])
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    fn calls(&self, resource: &str) -> Vec<azure_sim::LoggedRequest> {
        self.sim.requests(Some(resource))
    }
}

#[tokio::test]
async fn each_isolation_model_reaches_its_deployment_with_the_resources_own_key() {
    let w = world().await;
    let cases = [
        (
            "shared",
            "gpt-4o",
            &["aoai-eastus", "aoai-westus"][..],
            "/openai/deployments/gpt-4o/chat/completions",
        ),
        (
            "dd",
            "gpt-4o",
            &["aoai-eastus"][..],
            "/openai/deployments/dd-gpt4o/chat/completions",
        ),
        (
            "dr",
            "gpt-4o",
            &["aoai-dr"][..],
            "/openai/deployments/gpt-4o/chat/completions",
        ),
        (
            "byo",
            "my-gpt",
            &["aoai-byo"][..],
            "/openai/deployments/my-gpt/chat/completions",
        ),
    ];
    for (tenant, alias, resources, path) in cases {
        w.sim.reset();
        let response = w.chat(tenant, alias, json!({})).await;
        assert_eq!(response.status(), StatusCode::OK, "{tenant}");
        let member = response.headers()["x-bulkhead-deployment"]
            .to_str()
            .unwrap()
            .to_owned();
        let region = response.headers()["x-ms-region"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(response.headers().contains_key("apim-request-id"));
        let body: Value = response.json().await.unwrap();
        assert!(body["choices"][0]["message"]["content"].is_string());
        let hit: Vec<_> = [
            "aoai-eastus",
            "aoai-westus",
            "aoai-westeurope",
            "aoai-dr",
            "aoai-byo",
        ]
        .into_iter()
        .flat_map(|r| w.calls(r))
        .collect();
        assert_eq!(hit.len(), 1, "{tenant}: exactly one upstream call");
        let call = &hit[0];
        assert!(
            resources.contains(&call.resource.as_str()),
            "{tenant} reached {}",
            call.resource
        );
        assert!(
            member.starts_with(&call.resource) || tenant == "byo",
            "{member}"
        );
        assert!(!region.is_empty());
        assert!(call.path.starts_with(path), "{tenant}: {}", call.path);
        assert_eq!(
            call.header("api-key"),
            Some(
                format!(
                    "<masked:{}>",
                    fingerprint(&format!("key-of-{}", call.resource))
                )
                .as_str()
            ),
            "{tenant}"
        );
        let tenant_key_print = fingerprint(&w.keys[tenant]);
        assert!(
            !call
                .headers
                .iter()
                .any(|(_, v)| v.contains(&tenant_key_print)),
            "{tenant}: the tenant's key went upstream"
        );
        let sent = call.body_json().unwrap();
        let me: Value = w
            .app
            .http
            .get(w.app.url("/v1/me"))
            .header("api-key", &w.keys[tenant])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            sent["user"], me["id"],
            "{tenant}: user defaults to the tenant id"
        );
    }
    let records = w.app.usage.records();
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.usage.prompt_tokens > 0
        && r.usage.completion_tokens > 0
        && r.usage.status == 200));
}

#[tokio::test]
async fn no_alias_path_or_header_reaches_another_tenants_deployment() {
    let w = world().await;
    let unknown = w.chat("shared", "no-such-model", json!({})).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["error"]["code"], "DeploymentNotFound");
    // dd's own deployment name, dr's resource, byo's alias: all look like nothing to others
    for (tenant, alias) in [
        ("shared", "dd-gpt4o"),
        ("dr", "dd-gpt4o"),
        ("shared", "my-gpt"),
        ("dd", "my-gpt"),
        ("byo", "gpt-4o-x"),
        ("dd", "aoai-dr"),
        ("shared", "aoai-eastus/dd-gpt4o"),
    ] {
        let response = w.chat(tenant, alias, json!({})).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status == StatusCode::NOT_FOUND,
            "{tenant} -> {alias}: {status} {body}"
        );
        if !alias.contains('/') {
            assert_eq!(
                body, unknown,
                "{tenant} -> {alias}: identical to an unknown alias"
            );
        }
    }
    // a header naming another deployment changes nothing
    let response = w
        .app
        .http
        .post(w.app.url(&format!(
            "/openai/deployments/gpt-4o/chat/completions?{API}"
        )))
        .header("api-key", &w.keys["shared"])
        .header("x-ms-deployment", "dd-gpt4o")
        .json(&json!({"messages": [{"role": "user", "content": "x"}], "model": "dd-gpt4o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(w
        .calls("aoai-eastus")
        .iter()
        .chain(w.calls("aoai-westus").iter())
        .all(|c| !c.path.contains("dd-gpt4o")));
    assert!(
        w.calls("aoai-dr").is_empty(),
        "dr's reserved resource was reached by another tenant"
    );
    // byo's own resource only ever saw byo (its 404 for an unknown name is its own)
    assert!(w
        .calls("aoai-byo")
        .iter()
        .all(|c| c.path.contains("gpt-4o-x")));
}

#[tokio::test]
async fn a_failing_region_fails_over_and_a_throttled_member_cools_down() {
    let w = world().await;
    w.sim.inject_fault(
        FaultSpec::status("aoai-eastus", 500)
            .for_deployment("gpt-4o")
            .times(1),
    );
    w.sim.inject_fault(
        FaultSpec::status("aoai-westus", 500)
            .for_deployment("gpt-4o")
            .times(1),
    );
    let response = w.chat("shared", "gpt-4o", json!({})).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "spilled over to the lower priority"
    );
    assert_eq!(
        response.headers()["x-bulkhead-deployment"],
        "aoai-westeurope/gpt-4o"
    );
    assert_eq!(
        w.calls("aoai-eastus").len() + w.calls("aoai-westus").len(),
        2
    );
    w.sim.reset();
    w.sim.inject_fault(
        FaultSpec::status("aoai-eastus", 429)
            .for_deployment("gpt-4o")
            .times(1)
            .with_retry_after(30),
    );
    for _ in 0..6 {
        assert_eq!(
            w.chat("shared", "gpt-4o", json!({})).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        w.calls("aoai-eastus").len(),
        1,
        "not called again during its cooldown"
    );
    assert_eq!(w.calls("aoai-westus").len(), 6);
}

#[tokio::test]
async fn a_tenant_with_a_data_zone_never_leaves_it_even_in_failover() {
    let w = world().await;
    w.sim
        .inject_fault(FaultSpec::status("aoai-westeurope", 503).times(0));
    let response = w.chat("eu-shared", "gpt-4o", json!({})).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(w.calls("aoai-eastus").is_empty() && w.calls("aoai-westus").is_empty());
    assert!(!w.calls("aoai-westeurope").is_empty());
}

#[tokio::test]
async fn every_member_throttled_answers_429_with_the_earliest_retry_after() {
    let w = world().await;
    for (resource, seconds) in [
        ("aoai-eastus", 20),
        ("aoai-westus", 7),
        ("aoai-westeurope", 12),
    ] {
        w.sim.inject_fault(
            FaultSpec::status(resource, 429)
                .times(0)
                .with_retry_after(seconds),
        );
    }
    let response = w.chat("shared", "gpt-4o", json!({})).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((6..=7).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "429");
    // the next call does not even try: everything is cooling down
    let before: usize = ["aoai-eastus", "aoai-westus", "aoai-westeurope"]
        .iter()
        .map(|r| w.calls(r).len())
        .sum();
    assert_eq!(
        w.chat("shared", "gpt-4o", json!({})).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let after: usize = ["aoai-eastus", "aoai-westus", "aoai-westeurope"]
        .iter()
        .map(|r| w.calls(r).len())
        .sum();
    assert_eq!(before, after);
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let w = world().await;
    w.sim
        .inject_fault(FaultSpec::status("aoai-eastus", 400).times(0));
    w.sim
        .inject_fault(FaultSpec::status("aoai-westus", 400).times(0));
    let response = w.chat("shared", "gpt-4o", json!({})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let total: usize = ["aoai-eastus", "aoai-westus", "aoai-westeurope"]
        .iter()
        .map(|r| w.calls(r).len())
        .sum();
    assert_eq!(total, 1);
}

async fn stream_text(response: reqwest::Response) -> String {
    let mut text = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    text
}

#[tokio::test]
async fn streams_keep_the_callers_usage_chunk_and_drop_the_one_the_gateway_asked_for() {
    let w = world().await;
    let plain = w.chat("dr", "gpt-4o", json!({"stream": true})).await;
    assert_eq!(plain.headers()["content-type"], "text/event-stream");
    let text = stream_text(plain).await;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"usage\":{"), "no usage chunk: {text}");
    let sent = w.calls("aoai-dr").pop().unwrap().body_json().unwrap();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway asked for usage"
    );
    let with = w
        .chat(
            "dr",
            "gpt-4o",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
    let text = stream_text(with).await;
    assert!(text.contains("\"usage\":{"), "{text}");
    let records = w.app.usage.records();
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r.usage.streamed && r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0));
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_in_an_error_event_after_one_call() {
    let w = world().await;
    w.sim
        .inject_fault(FaultSpec::cut_stream("aoai-dr", 2).times(1));
    let response = w
        .chat("dr", "gpt-4o", json!({"stream": true, "max_tokens": 50}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = stream_text(response).await;
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("data: {\"error\""), "{text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(
        w.calls("aoai-dr").len(),
        1,
        "never retried after the first byte"
    );
}

#[tokio::test]
async fn the_v1_paths_take_the_alias_from_model() {
    let w = world().await;
    for path in ["/openai/v1/chat/completions", "/v1/chat/completions"] {
        let response = w
            .app
            .http
            .post(w.app.url(path))
            .header("authorization", format!("Bearer {}", w.keys["dd"]))
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()["x-bulkhead-deployment"],
            "aoai-eastus/dd-gpt4o"
        );
    }
    let embeddings = w
        .app
        .http
        .post(w.app.url("/v1/embeddings"))
        .header("api-key", &w.keys["dd"])
        .json(&json!({"model": "nope", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(embeddings.status(), StatusCode::NOT_FOUND);
    let no_model = w
        .app
        .http
        .post(w.app.url("/v1/chat/completions"))
        .header("api-key", &w.keys["dd"])
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_model.status(), StatusCode::BAD_REQUEST);
    let bad_json = w
        .app
        .http
        .post(w.app.url(&format!(
            "/openai/deployments/gpt-4o/chat/completions?{API}"
        )))
        .header("api-key", &w.keys["dd"])
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    let no_version = w
        .app
        .http
        .post(w.app.url("/openai/deployments/gpt-4o/chat/completions"))
        .header("api-key", &w.keys["dd"])
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        w.calls("aoai-eastus")
            .iter()
            .filter(|c| c.path.contains("dd-gpt4o"))
            .count(),
        2
    );
}

#[tokio::test]
async fn response_ids_are_bound_to_their_resource_and_their_tenant() {
    let w = world().await;
    let create = |tenant: &'static str, body: Value| {
        let w = &w;
        async move {
            w.app
                .http
                .post(w.app.url("/openai/v1/responses"))
                .header("api-key", &w.keys[tenant])
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = create(
        "shared",
        json!({"model": "gpt-4o", "input": "remember the number 7"}),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    let holder = first.headers()["x-bulkhead-deployment"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        first.headers().get("x-bulkhead-member").is_none(),
        "internal header leaked"
    );
    let first: Value = first.json().await.unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_bk"), "{id}");
    let holder_resource = holder.split('/').next().unwrap().to_owned();
    assert_eq!(w.calls(&holder_resource).len(), 1);
    // follow-ups go to the holder, whatever the rotation says
    for _ in 0..4 {
        let next = create(
            "shared",
            json!({"model": "gpt-4o", "input": "and now?", "previous_response_id": id}),
        )
        .await;
        assert_eq!(next.status(), StatusCode::OK);
        assert_eq!(
            next.headers()["x-bulkhead-deployment"].to_str().unwrap(),
            holder
        );
        let body: Value = next.json().await.unwrap();
        assert_eq!(
            body["previous_response_id"],
            id.as_str(),
            "the caller sees its own id back"
        );
    }
    let fetched = w
        .app
        .http
        .get(w.app.url(&format!("/openai/v1/responses/{id}")))
        .header("api-key", &w.keys["shared"])
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    let fetched: Value = fetched.json().await.unwrap();
    assert_eq!(fetched["id"], id.as_str());
    // another tenant: not found, by retrieval or as a previous id; so is a tampered id
    let other = w
        .app
        .http
        .get(w.app.url(&format!("/openai/v1/responses/{id}")))
        .header("api-key", &w.keys["dd"])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let other = create(
        "dd",
        json!({"model": "gpt-4o", "input": "x", "previous_response_id": id}),
    )
    .await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let mut tampered = id.clone();
    tampered.pop();
    tampered.push(if id.ends_with('A') { 'B' } else { 'A' });
    let tampered = w
        .app
        .http
        .get(w.app.url(&format!("/openai/v1/responses/{tampered}")))
        .header("api-key", &w.keys["shared"])
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), StatusCode::NOT_FOUND);
    let upstream_id_direct = w
        .app
        .http
        .get(w.app.url("/openai/v1/responses/resp_123"))
        .header("api-key", &w.keys["shared"])
        .send()
        .await
        .unwrap();
    assert_eq!(upstream_id_direct.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn weighted_members_share_calls_within_ten_percent_over_a_thousand_calls() {
    let w = world().await;
    let (status, body) = w.app.admin(Method::POST, "/admin/v1/openai/pools", Some(json!({"alias": "weighted", "members": [
        {"deployment": "aoai-eastus/gpt-4o", "weight": 3}, {"deployment": "aoai-westus/gpt-4o", "weight": 1}]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut east = 0;
    for _ in 0..1000 {
        let response = w.chat("shared", "weighted", json!({"max_tokens": 1})).await;
        assert_eq!(response.status(), StatusCode::OK);
        if response.headers()["x-bulkhead-deployment"] == "aoai-eastus/gpt-4o" {
            east += 1;
        }
    }
    assert!(
        (675..=825).contains(&east),
        "east got {east} of 1000 at weight 3:1"
    );
}

/// A gateway whose shared pool `gpt-4o` holds deployment `gpt-4o` of each of `resources`
/// (on `sim`, keys `key-of-NAME`), in that order of priority, and the key of a tenant on it.
async fn one_pool(
    sim: &SimHandle,
    resources: &[&str],
    configure: impl FnOnce(&mut bulkhead_api::Config),
) -> (TestApp, String) {
    let app = TestApp::spawn_with(configure).await;
    let mut members = Vec::new();
    for (priority, name) in resources.iter().enumerate() {
        let (status, body) = app.admin(Method::POST, "/admin/v1/openai/resources", Some(json!({"name": name,
            "endpoint": sim.resource_url(name), "region": "eastus", "api_key": format!("key-of-{name}")}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        app.admin(
            Method::POST,
            "/admin/v1/openai/deployments",
            Some(json!({"resource": name, "name": "gpt-4o",
            "model": "gpt-4o", "capacity_tpm": 1000})),
        )
        .await;
        members.push(json!({"deployment": format!("{name}/gpt-4o"), "priority": priority}));
    }
    app.admin(
        Method::POST,
        "/admin/v1/openai/pools",
        Some(json!({"alias": "gpt-4o", "members": members})),
    )
    .await;
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"slug": "acme", "display_name": "Acme",
        "openai": {"isolation": "shared"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, key) = app.key("acme", "read").await;
    (app, key)
}

#[tokio::test]
async fn consecutive_failures_open_the_breaker_and_one_probe_half_opens_it() {
    let sim = Sim::start(
        SimConfig::default()
            .with_resource(resource("aoai-a", "eastus", &["gpt-4o"]))
            .with_resource(resource("aoai-b", "eastus", &["gpt-4o"])),
    )
    .await
    .unwrap();
    let (app, key) = one_pool(&sim, &["aoai-a", "aoai-b"], |c| {
        c.upstream.breaker_threshold = 2;
        c.upstream.breaker_open_seconds = 1;
        c.upstream.max_attempts = 1;
    })
    .await;
    let chat = || async {
        app.http
            .post(app.url(&format!(
                "/openai/deployments/gpt-4o/chat/completions?{API}"
            )))
            .header("api-key", &key)
            .json(&json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}))
            .send()
            .await
            .unwrap()
    };
    sim.inject_fault(FaultSpec::status("aoai-a", 500).times(0));
    // one attempt per call: two failures on a open its breaker
    assert_eq!(chat().await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(chat().await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    for _ in 0..3 {
        let response = chat().await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["x-bulkhead-deployment"],
            "aoai-b/gpt-4o",
            "a is open"
        );
    }
    assert_eq!(sim.requests(Some("aoai-a")).len(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    sim.reset();
    // half-open: one probe to a, which now succeeds and closes the breaker
    let probe = chat().await;
    assert_eq!(probe.headers()["x-bulkhead-deployment"], "aoai-a/gpt-4o");
    assert_eq!(
        chat().await.headers()["x-bulkhead-deployment"],
        "aoai-a/gpt-4o"
    );
}

#[tokio::test]
async fn a_caller_that_hangs_up_is_still_metered_once() {
    let sim = Sim::start(
        SimConfig::default().with_resource(
            ResourceConfig::new("aoai-slow", "eastus", "key-of-aoai-slow")
                .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o").with_latency(400, 0)),
        ),
    )
    .await
    .unwrap();
    let (app, key) = one_pool(&sim, &["aoai-slow"], |_| {}).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let result = impatient
        .post(app.url(&format!(
            "/openai/deployments/gpt-4o/chat/completions?{API}"
        )))
        .header("api-key", &key)
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await;
    assert!(result.is_err(), "the caller gave up");
    let mut records = Vec::new();
    for _ in 0..50 {
        records = app.usage.records();
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].usage.status, 499);
    assert_eq!(records[0].tenant, "acme");
}

/// Model discovery (`GET /v1/models`, `/openai/v1/models`, `/openai/models`): each tenant sees
/// exactly the aliases a call would reach: its placement's, and only those with a member in
/// its data zone; never a deployment reserved for another tenant.
#[tokio::test]
async fn each_tenant_lists_only_the_models_it_can_call() {
    let sim = Sim::start(
        SimConfig::default()
            .with_resource(resource("aoai-us", "eastus", &["gpt-4o", "mini"]))
            .with_resource(resource("aoai-eu", "westeurope", &["gpt-4o"]))
            .with_resource(resource("aoai-acme", "eastus", &["acme-private"])),
    )
    .await
    .unwrap();
    let app = TestApp::spawn().await;
    let mut steps = Vec::new();
    for (name, region, zone, owner) in [
        ("aoai-us", "eastus", "us", None),
        ("aoai-eu", "westeurope", "eu", None),
        ("aoai-acme", "eastus", "us", Some("acme")),
    ] {
        steps.push((
            "/admin/v1/openai/resources",
            json!({"name": name,
            "endpoint": sim.resource_url(name), "region": region, "data_zone": zone,
            "api_key": format!("key-of-{name}"), "owner_tenant": owner}),
        ));
    }
    for (resource, name) in [
        ("aoai-us", "gpt-4o"),
        ("aoai-us", "mini"),
        ("aoai-eu", "gpt-4o"),
        ("aoai-acme", "acme-private"),
    ] {
        steps.push((
            "/admin/v1/openai/deployments",
            json!({"resource": resource, "name": name,
            "model": "gpt-4o", "capacity_tpm": 1000}),
        ));
    }
    steps.extend([
        (
            "/admin/v1/openai/pools",
            json!({"alias": "gpt-4o", "members": [
            {"deployment": "aoai-us/gpt-4o"}, {"deployment": "aoai-eu/gpt-4o"}]}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "mini", "members": [{"deployment": "aoai-us/mini"}]}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "anywhere", "display_name": "A",
            "openai": {"isolation": "shared"}}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "eu-only", "display_name": "E", "data_zone": "eu",
            "openai": {"isolation": "shared"}}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "acme", "display_name": "Acme",
            "openai": {"isolation": "dedicated_resource", "resources": ["aoai-acme"]}}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "byo", "display_name": "B", "openai": {
            "isolation": "tenant_provided", "endpoint": sim.resource_url("aoai-us"),
            "api_key": "key-of-aoai-us", "region": "eastus"}}),
        ),
    ]);
    admin_posts(&app.http, &app.base, steps).await;

    for (tenant, expected) in [
        ("anywhere", vec!["gpt-4o", "mini"]),
        ("eu-only", vec!["gpt-4o"]),
        ("acme", vec!["acme-private"]),
        ("byo", vec![]),
    ] {
        let key = app.key(tenant, "read").await.1;
        let mut seen = Vec::new();
        for path in [
            "/v1/models",
            "/openai/v1/models",
            "/openai/models?api-version=2024-10-21",
        ] {
            let response = app
                .http
                .get(app.url(path))
                .header("api-key", &key)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{tenant} {path}");
            let list: Value = response.json().await.unwrap();
            assert_eq!(list["object"], "list");
            let ids: Vec<&str> = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    assert_eq!(m["object"], "model");
                    assert!(m["created"].as_i64().unwrap() > 1_700_000_000);
                    m["id"].as_str().unwrap()
                })
                .collect();
            assert_eq!(ids, expected, "{tenant} {path}");
            seen.push(list);
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "{tenant}: the three paths differ"
        );
        let (_, me) = app.me(&[("api-key", &key)]).await;
        assert_eq!(me["models"], json!(expected), "{tenant}: /v1/me");
    }
    // Without a credential: the usual 401, nothing listed; the tenant API's document is public.
    let response = app.http.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let document: Value = app
        .http
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        document["paths"]["/v1/models"]["get"].is_object(),
        "{document}"
    );
}
