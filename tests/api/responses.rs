//! The stateful Responses API through the gateway: a sealed response id opens (read, continue,
//! delete) on the resource that holds it for every placement, whatever the alias is called,
//! through every path spelling the SDKs use; and never for another tenant.

use azure_sim::{DeploymentConfig, ResourceConfig, Sim, SimConfig, SimHandle};
use bulkhead_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct World {
    app: TestApp,
    _sim: SimHandle,
    keys: std::collections::HashMap<&'static str, String>,
}

fn resource(name: &str, deployments: &[(&str, &str)]) -> ResourceConfig {
    deployments.iter().fold(
        ResourceConfig::new(name, "eastus", format!("key-of-{name}")),
        |r, (d, model)| r.with_deployment(DeploymentConfig::new(*d, *model)),
    )
}

/// One tenant per placement, each calling an alias that is not the name of the deployment
/// behind it (except where the placement makes them equal: a dedicated resource and a
/// tenant-provided endpoint are called by deployment name, which is not the model's).
async fn world() -> World {
    let sim = Sim::start(
        SimConfig::default()
            .with_resource(resource(
                "aoai-a",
                &[("gpt4o", "gpt-4o"), ("dd-chat", "gpt-4o")],
            ))
            .with_resource(resource("aoai-b", &[("gpt4o", "gpt-4o")]))
            .with_resource(resource("aoai-own", &[("mini", "gpt-4o-mini")]))
            .with_resource(resource("aoai-byo", &[("their-dep", "gpt-4o")]))
            .with_resource(resource("aoai-dd2", &[("chat", "gpt-4o")])),
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
    for (name, owner) in [
        ("aoai-a", None),
        ("aoai-b", None),
        ("aoai-own", Some("dr")),
        ("aoai-dd2", Some("dd")),
    ] {
        post(
            "/admin/v1/openai/resources",
            json!({"name": name, "endpoint": sim.resource_url(name), "region": "eastus",
                   "api_key": format!("key-of-{name}"), "owner_tenant": owner}),
        )
        .await;
    }
    for (resource, name, model, owner) in [
        ("aoai-a", "gpt4o", "gpt-4o", None),
        ("aoai-b", "gpt4o", "gpt-4o", None),
        ("aoai-a", "dd-chat", "gpt-4o", Some("dd")),
        ("aoai-own", "mini", "gpt-4o-mini", None),
        ("aoai-dd2", "chat", "gpt-4o", None),
    ] {
        post(
            "/admin/v1/openai/deployments",
            json!({"resource": resource, "name": name, "model": model, "capacity_tpm": 100000,
                   "owner_tenant": owner}),
        )
        .await;
    }
    post(
        "/admin/v1/openai/pools",
        json!({"alias": "chat", "members": [
            {"deployment": "aoai-a/gpt4o", "priority": 0, "weight": 1},
            {"deployment": "aoai-b/gpt4o", "priority": 0, "weight": 1}]}),
    )
    .await;
    post(
        "/admin/v1/tenants",
        json!({"slug": "shared", "display_name": "S", "openai": {"isolation": "shared"}}),
    )
    .await;
    post(
        "/admin/v1/tenants",
        json!({"slug": "dd", "display_name": "DD", "openai": {"isolation": "dedicated_deployment",
               "models": {"chat": [{"deployment": "aoai-a/dd-chat"}]}}}),
    )
    .await;
    post(
        "/admin/v1/tenants",
        json!({"slug": "dr", "display_name": "DR", "openai": {"isolation": "dedicated_resource",
               "resources": ["aoai-own"]}}),
    )
    .await;
    post(
        "/admin/v1/tenants",
        json!({"slug": "byo", "display_name": "BYO", "openai": {"isolation": "tenant_provided",
               "endpoint": sim.resource_url("aoai-byo"), "api_key": "key-of-aoai-byo",
               "region": "eastus"}}),
    )
    .await;
    let mut keys = std::collections::HashMap::new();
    for slug in ["shared", "dd", "dr", "byo"] {
        keys.insert(slug, app.key(slug, "read-write").await.1);
    }
    World {
        app,
        _sim: sim,
        keys,
    }
}

/// The three spellings: the v1 API, the Azure client's versioned path, and the plain OpenAI
/// client with `base_url=<gateway>/v1`. Each is (collection path, query).
const SPELLINGS: [(&str, &str); 3] = [
    ("/openai/v1/responses", ""),
    ("/openai/responses", "?api-version=2025-03-01-preview"),
    ("/v1/responses", ""),
];

impl World {
    async fn call(
        &self,
        tenant: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .app
            .http
            .request(method, self.app.url(path))
            .header("api-key", &self.keys[tenant]);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_response_opens_for_its_tenant_whatever_the_alias_placement_or_spelling() {
    let w = world().await;
    let cases = [
        ("shared", "chat"),
        ("dd", "chat"),
        ("dr", "mini"),
        ("byo", "their-dep"),
    ];
    for (tenant, alias) in cases {
        for (collection, query) in SPELLINGS {
            let case = format!("{tenant} via {collection}");
            let (status, created) = w
                .call(
                    tenant,
                    Method::POST,
                    &format!("{collection}{query}"),
                    Some(json!({"model": alias, "input": "remember the number 7"})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{case}: {created}");
            let id = created["id"].as_str().unwrap().to_owned();
            assert!(id.starts_with("resp_bk"), "{case}: {id}");
            let item = format!("{collection}/{id}{query}");

            let (status, read) = w.call(tenant, Method::GET, &item, None).await;
            assert_eq!(status, StatusCode::OK, "{case}: read: {read}");
            assert_eq!(read["id"], id.as_str(), "{case}");

            // Continuing, several times: the shared pool's rotation must not matter.
            for _ in 0..3 {
                let (status, next) = w
                    .call(
                        tenant,
                        Method::POST,
                        &format!("{collection}{query}"),
                        Some(json!({"model": alias, "input": "and now?",
                                    "previous_response_id": id})),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{case}: continue: {next}");
                assert_eq!(next["previous_response_id"], id.as_str(), "{case}");
            }

            // Another tenant sees nothing, by any route.
            let other = if tenant == "shared" { "dd" } else { "shared" };
            let (status, _) = w.call(other, Method::GET, &item, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{case}: read by {other}");
            let (status, _) = w.call(other, Method::DELETE, &item, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{case}: deleted by {other}");

            let (status, deleted) = w.call(tenant, Method::DELETE, &item, None).await;
            assert_eq!(status, StatusCode::OK, "{case}: delete: {deleted}");
            assert_eq!(deleted["id"], id.as_str(), "{case}: the caller's own id");
            assert_eq!(deleted["deleted"], true, "{case}");
            let (status, _) = w.call(tenant, Method::GET, &item, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{case}: read after delete");
        }
    }
}

#[tokio::test]
async fn the_versioned_spelling_needs_an_api_version() {
    let w = world().await;
    let (status, body) = w
        .call(
            "shared",
            Method::POST,
            "/openai/responses",
            Some(json!({"model": "chat", "input": "hi"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("api-version"));
}

#[tokio::test]
async fn a_read_only_key_reads_a_response_but_cannot_delete_it() {
    let w = world().await;
    let (_, read_key) = w.app.key("shared", "read").await;
    let (status, created) = w
        .call(
            "shared",
            Method::POST,
            "/openai/v1/responses",
            Some(json!({"model": "chat", "input": "hi"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/openai/v1/responses/{}", created["id"].as_str().unwrap());
    let delete = w
        .app
        .http
        .delete(w.app.url(&path))
        .header("api-key", &read_key)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::FORBIDDEN);
    let (status, _) = w.call("shared", Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "still there");
}

/// The master key rotates under running traffic: with the new key primary and the old one
/// previous, response ids and credentials sealed under the old key keep opening; a reseal
/// moves the credentials; with the new key alone, calls and new ids work while ids sealed
/// under the dropped key no longer open (they are not stored, so nothing can reseal them).
#[tokio::test]
async fn response_ids_and_credentials_survive_a_master_key_rotation() {
    use secrecy::SecretString;
    let sim =
        Sim::start(SimConfig::default().with_resource(resource("aoai-a", &[("gpt4o", "gpt-4o")])))
            .await
            .unwrap();
    let database = bulkhead_tests::fresh_postgres_database().await;
    let old_key = tenant_registry::MasterKey::generate_base64();
    let new_key = tenant_registry::MasterKey::generate_base64();
    let gateway = |primary: &SecretString, previous: Option<&SecretString>| {
        let (database, primary, previous) = (database.clone(), primary.clone(), previous.cloned());
        TestApp::spawn_with(move |config| {
            config.database_url = Some(database);
            config.master_key = Some(primary);
            config.master_keys_previous = previous;
        })
    };
    let before = gateway(&old_key, None).await;
    for (path, body) in [
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-a", "endpoint": sim.resource_url("aoai-a"),
                   "region": "eastus", "api_key": "key-of-aoai-a"}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-a", "name": "gpt4o", "model": "gpt-4o",
                   "capacity_tpm": 100000}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "chat", "members": [{"deployment": "aoai-a/gpt4o"}]}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "acme", "display_name": "A", "openai": {"isolation": "shared"}}),
        ),
    ] {
        let (status, answer) = before.admin(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
    }
    let key = before.key("acme", "read-write").await.1;
    let call = |app: &TestApp, method: Method, path: String, body: Option<Value>| {
        let mut request = app
            .http
            .request(method, app.url(&path))
            .header("api-key", &key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let create = json!({"model": "chat", "input": "hello"});
    let (status, first) = call(
        &before,
        Method::POST,
        "/openai/v1/responses".into(),
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let old_id = first["id"].as_str().unwrap().to_owned();

    let rotated = gateway(&new_key, Some(&old_key)).await;
    let (status, read) = call(
        &rotated,
        Method::GET,
        format!("/openai/v1/responses/{old_id}"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an old id opens after rotation: {read}"
    );
    let (status, second) = call(
        &rotated,
        Method::POST,
        "/openai/v1/responses".into(),
        Some(create.clone()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the old credential still opens: {second}"
    );
    let new_id = second["id"].as_str().unwrap().to_owned();
    let (status, report) = rotated
        .admin(Method::POST, "/admin/v1/master-key:reseal", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["resealed"], 1, "{report}");
    assert_eq!(report["unreadable"], 0, "{report}");

    let after = gateway(&new_key, None).await;
    let (status, third) = call(
        &after,
        Method::POST,
        "/openai/v1/responses".into(),
        Some(create),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the resealed credential opens: {third}"
    );
    let (status, _) = call(
        &after,
        Method::GET,
        format!("/openai/v1/responses/{new_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "an id sealed under the new key");
    let (status, _) = call(
        &after,
        Method::GET,
        format!("/openai/v1/responses/{old_id}"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "its key is no longer configured"
    );
}

/// An OpenAI placement change takes effect for new calls at once, and the tenant's existing
/// response ids keep resolving to the resource that holds them: read, continued, deleted.
#[tokio::test]
async fn response_ids_outlive_a_change_of_openai_placement() {
    let w = world().await;
    let (status, created) = w
        .call(
            "dd",
            Method::POST,
            "/openai/v1/responses",
            Some(json!({"model": "chat", "input": "remember the number 7"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // dd moves from its deployment on aoai-a to a resource of its own.
    let (status, tenant) = w
        .app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/dd",
            Some(json!({"openai": {"isolation": "dedicated_resource", "resources": ["aoai-dd2"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "at once: {tenant}");
    let new_call = w
        .app
        .http
        .post(w.app.url("/openai/v1/responses"))
        .header("api-key", &w.keys["dd"])
        .json(&json!({"model": "chat", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(new_call.status(), StatusCode::OK);
    assert_eq!(
        new_call.headers()["x-bulkhead-deployment"]
            .to_str()
            .unwrap(),
        "aoai-dd2/chat",
        "new calls go to the new placement"
    );
    let path = format!("/openai/v1/responses/{id}");
    let (status, read) = w.call("dd", Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "the old id still reads: {read}");
    let (status, next) = w
        .call(
            "dd",
            Method::POST,
            "/openai/v1/responses",
            Some(json!({"model": "chat", "input": "which number?", "previous_response_id": id})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "and continues on the resource that holds it: {next}"
    );
    assert_eq!(next["previous_response_id"], id.as_str());
    let (status, _) = w.call("shared", Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "never another tenant's");
    let (status, _) = w.call("dd", Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
}
