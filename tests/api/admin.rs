//! The admin API: every endpoint, validation, conflicts, and that secrets are never echoed.

use bulkhead_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const UPSTREAM_KEY: &str = "upstream-key-DO-NOT-ECHO-1234";
const SEARCH_KEY: &str = "search-key-DO-NOT-ECHO-5678";
const TENANT_KEY: &str = "tenant-key-DO-NOT-ECHO-9012";

/// Registers one of everything, returns the bodies of every admin GET afterwards.
async fn populated(app: &TestApp) -> Vec<Value> {
    let calls = [
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-eastus", "endpoint": "http://127.0.0.1:9/r/aoai-eastus",
            "region": "eastus", "data_zone": "us", "api_key": UPSTREAM_KEY}),
        ),
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-acme", "endpoint": "http://127.0.0.1:9/r/aoai-acme",
            "region": "eastus", "data_zone": "us", "api_key": UPSTREAM_KEY, "owner_tenant": "acme"}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-eastus", "name": "gpt4o", "model": "gpt-4o",
            "kind": "provisioned", "capacity_tpm": 100000}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-acme", "name": "gpt-4o", "model": "gpt-4o",
            "capacity_tpm": 100000}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "gpt-4o", "members": [{"deployment": "aoai-eastus/gpt4o"}]}),
        ),
        (
            "/admin/v1/search/services",
            json!({"name": "search-shared-1", "endpoint": "http://127.0.0.1:9/r/search-shared-1",
            "region": "eastus", "data_zone": "us", "api_key": SEARCH_KEY, "index_capacity": 15}),
        ),
        (
            "/admin/v1/search/index-templates",
            json!({"name": "docs", "fields": [
            {"name": "id", "type": "Edm.String", "key": true}, {"name": "body", "type": "Edm.String", "searchable": true}]}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "acme", "display_name": "Acme", "data_zone": "us",
            "openai": {"isolation": "dedicated_resource", "resources": ["aoai-acme"]},
            "search": {"isolation": "shared_index", "service": "search-shared-1"},
            "limits": {"tokens_per_minute": 100000, "requests_per_minute": 600, "monthly_tokens": 50000000}}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "byo", "display_name": "Bring Your Own",
            "openai": {"isolation": "tenant_provided", "endpoint": "http://127.0.0.1:9/r/byo",
                       "api_key": TENANT_KEY, "region": "westeurope"}}),
        ),
    ];
    for (path, body) in calls {
        if body.get("search").is_some() {
            // Onboarded at once, its indexes created by an operation; the search service here
            // is not reachable, so the operation fails (after its retries): what matters to
            // these tests is the registry.
            let (status, location, answer) = bulkhead_tests::admin_call_no_wait(
                &app.http,
                &app.base,
                Method::POST,
                path,
                Some(body),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
            assert_no_secret(&answer);
            let location = location.expect("Operation-Location");
            let operation = bulkhead_tests::wait_for_operation(
                &app.http,
                &app.base,
                &location,
                std::time::Duration::from_secs(30),
            )
            .await;
            assert_eq!(operation["status"], "failed", "{operation}");
            assert_no_secret(&operation);
            continue;
        }
        let (status, answer) = app.admin(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
        assert_no_secret(&answer);
    }
    let mut bodies = Vec::new();
    for path in [
        "/admin/v1/openai/resources",
        "/admin/v1/openai/deployments",
        "/admin/v1/openai/pools",
        "/admin/v1/search/services",
        "/admin/v1/search/index-templates",
        "/admin/v1/tenants",
        "/admin/v1/tenants/acme",
        "/admin/v1/tenants/byo",
        "/admin/v1/tenants/acme/keys",
    ] {
        let (status, body) = app.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        bodies.push(body);
    }
    bodies
}

fn assert_no_secret(body: &Value) {
    let text = body.to_string();
    for secret in [UPSTREAM_KEY, SEARCH_KEY, TENANT_KEY] {
        assert!(!text.contains(secret), "a secret was echoed: {text}");
    }
    // No credential field; `auth` shows only the kind (`{"kind":"api_key"}`).
    for field in ["\"api_key\":", "\"client_secret\":"] {
        assert!(
            !text.contains(field),
            "a credential field was shown: {text}"
        );
    }
}

#[tokio::test]
async fn every_admin_listing_reads_back_what_was_registered_without_any_secret() {
    let app = TestApp::spawn().await;
    let bodies = populated(&app).await;
    for body in &bodies {
        assert_no_secret(body);
    }
    assert_eq!(bodies[0]["data"].as_array().unwrap().len(), 2);
    assert_eq!(bodies[1]["data"][0]["kind"], "standard");
    assert_eq!(
        bodies[2]["data"][0]["members"][0]["deployment"],
        "aoai-eastus/gpt4o"
    );
    assert_eq!(bodies[3]["data"][0]["index_capacity"], 15);
    assert_eq!(bodies[4]["data"][0]["name"], "docs");
    assert_eq!(bodies[5]["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        bodies[6]["openai"],
        json!({"isolation": "dedicated_resource", "resources": ["aoai-acme"]})
    );
    assert_eq!(bodies[6]["limits"]["requests_per_minute"], 600);
    assert_eq!(
        bodies[7]["openai"],
        json!({"isolation": "tenant_provided",
        "endpoint": "http://127.0.0.1:9/r/byo", "region": "westeurope"})
    );
}

#[tokio::test]
async fn deletes_answer_204_then_404_and_refuse_what_is_in_use() {
    let app = TestApp::spawn().await;
    populated(&app).await;
    let in_use = [
        "/admin/v1/openai/resources/aoai-acme",
        "/admin/v1/openai/deployments/aoai-eastus/gpt4o",
        "/admin/v1/search/services/search-shared-1",
    ];
    for path in in_use {
        let (status, body) = app.admin(Method::DELETE, path, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {body}");
        assert_eq!(body["error"]["code"], "conflict");
    }
    for path in [
        "/admin/v1/openai/pools/gpt-4o",
        "/admin/v1/openai/deployments/aoai-eastus/gpt4o",
        "/admin/v1/openai/resources/aoai-eastus",
        "/admin/v1/search/index-templates/docs",
        "/admin/v1/tenants/acme",
        "/admin/v1/search/services/search-shared-1",
    ] {
        let (status, body) = app.admin(Method::DELETE, path, None).await;
        // Offboarding is an operation (the helper waits for it to end).
        let expected = if path.starts_with("/admin/v1/tenants/") {
            StatusCode::ACCEPTED
        } else {
            StatusCode::NO_CONTENT
        };
        assert_eq!(status, expected, "{path}: {body}");
        let (status, body) = app.admin(Method::DELETE, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} again: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn bad_onboarding_bodies_are_422_naming_the_field_and_write_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"slug": "Bad Slug", "display_name": "x"}), "slug"),
        (json!({"display_name": "x"}), "slug"),
        (
            json!({"slug": "acme", "display_name": "x", "colour": "red"}),
            "colour",
        ),
        (
            json!({"slug": "acme", "display_name": "x", "openai": {"isolation": "magic"}}),
            "openai.isolation",
        ),
        (
            json!({"slug": "acme", "display_name": "x", "openai": {"isolation": "dedicated_resource"}}),
            "openai.resources",
        ),
        (
            json!({"slug": "acme", "display_name": "x", "openai": {"isolation": "dedicated_resource", "resources": ["nope"]}}),
            "openai.resources[0]",
        ),
        (
            json!({"slug": "acme", "display_name": "x", "search": {"isolation": "shared_index", "service": "nope"}}),
            "search.service",
        ),
        (
            json!({"slug": "acme", "display_name": "x", "limits": {"tokens_per_minute": -5}}),
            "limits.tokens_per_minute",
        ),
        (
            json!({"slug": "acme", "display_name": "x", "limits": {"monthly_tokens": "lots"}}),
            "limits.monthly_tokens",
        ),
        (
            json!({"slug": "acme", "display_name": "x", "context_overflow": "drop"}),
            "context_overflow",
        ),
        (
            json!({"slug": "acme", "display_name": "x", "data_zone": "EU!"}),
            "data_zone",
        ),
        (json!({"slug": "acme", "display_name": ""}), "display_name"),
        (
            json!({"slug": "acme", "display_name": "x", "openai": {"isolation": "tenant_provided",
            "endpoint": "ftp://x", "api_key": "k", "region": "eastus"}}),
            "openai",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app
            .admin(Method::POST, "/admin/v1/tenants", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let response = app
        .http
        .post(app.url("/admin/v1/tenants"))
        .bearer_auth(bulkhead_tests::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (_, list) = app.admin(Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(list["data"], json!([]), "nothing was written");
    app.onboard("acme").await;
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"slug": "acme", "display_name": "Again"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    for path in ["/admin/v1/tenants/nobody", "/admin/v1/tenants/nobody/keys"] {
        let (status, _) = app.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn patch_changes_status_limits_and_placement_and_validates_like_onboarding() {
    let app = TestApp::spawn().await;
    populated(&app).await;
    let (status, body) = app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"status": "suspended", "limits": {"monthly_tokens": 7}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "suspended");
    assert_eq!(body["limits"]["monthly_tokens"], 7);
    assert_eq!(body["limits"]["tokens_per_minute"], 100000);
    let (status, body) = app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"openai": {"isolation": "shared"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["openai"]["isolation"], "shared");
    let (status, body) = app
        .admin(Method::PATCH, "/admin/v1/tenants/acme",
            Some(json!({"openai": {"isolation": "dedicated_resource", "resources": ["aoai-eastus"]}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "openai.resources[0]");
    let (status, body) = app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"status": "offboarding"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, body) = app.admin(Method::GET, "/admin/v1/tenants/acme", None).await;
    assert_eq!(
        body["openai"]["isolation"], "shared",
        "the refused patches changed nothing"
    );
    assert_eq!(body["status"], "suspended");
}

#[tokio::test]
async fn a_key_is_shown_once_listed_without_its_secret_and_revocable() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    let (id, key) = app.key("acme", "read").await;
    assert!(key.starts_with("bk_"));
    let (status, list) = app
        .admin(Method::GET, "/admin/v1/tenants/acme/keys", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!list.to_string().contains(&key));
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["data"][0]["scope"], "read");
    assert_eq!(list["data"][0]["hint"], &key[key.len() - 4..]);
    let (status, _) = app.me(&[("api-key", &key)]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/admin/v1/tenants/acme/keys/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.me(&[("api-key", &key)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = app
        .admin(
            Method::DELETE,
            "/admin/v1/tenants/acme/keys/not-a-uuid",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"name": "x", "scope": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "scope");
}

#[tokio::test]
async fn the_context_overflow_policy_defaults_to_reject_and_is_set_and_patched() {
    let app = TestApp::spawn().await;
    app.onboard("plain").await;
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"slug": "trunc", "display_name": "Trunc",
                "context_overflow": "truncate_oldest"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["context_overflow"], "truncate_oldest");
    let (_, plain) = app
        .admin(Method::GET, "/admin/v1/tenants/plain", None)
        .await;
    assert_eq!(plain["context_overflow"], "reject", "the default");
    let (_, list) = app.admin(Method::GET, "/admin/v1/tenants", None).await;
    let policies: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["context_overflow"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["reject", "truncate_oldest"]);
    let (status, body) = app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/plain",
            Some(json!({"context_overflow": "truncate_oldest"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["context_overflow"], "truncate_oldest");
    let (status, body) = app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/plain",
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["context_overflow"], "truncate_oldest",
        "a patch without it keeps it"
    );
    for bad in [json!("truncate"), json!(1), json!("REJECT")] {
        let (status, body) = app
            .admin(
                Method::PATCH,
                "/admin/v1/tenants/plain",
                Some(json!({"context_overflow": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "context_overflow", "{body}");
    }
    let (_, plain) = app
        .admin(Method::GET, "/admin/v1/tenants/plain", None)
        .await;
    assert_eq!(plain["context_overflow"], "truncate_oldest");
}

/// Every body of the keys routes, as text: none may contain the key's secret.
fn assert_no_key_secret(secret: &str, body: &Value) {
    let text = body.to_string();
    assert!(!text.contains(secret), "the key's secret was shown: {text}");
    assert!(body.get("key").is_none(), "a key field was shown: {text}");
}

#[tokio::test]
async fn a_key_carries_limits_that_a_patch_changes_without_ever_showing_its_secret() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    let (status, created) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"name": "batch", "scope": "read-write",
                "limits": {"tokens_per_minute": 1000, "requests_per_minute": 60}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["limits"],
        json!({"tokens_per_minute": 1000, "requests_per_minute": 60, "monthly_tokens": null})
    );
    let (_, plain) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"name": "plain"})),
        )
        .await;
    assert_eq!(
        plain["limits"],
        json!({"tokens_per_minute": null, "requests_per_minute": null, "monthly_tokens": null}),
        "no limits: unlimited"
    );
    let (status, list) = app
        .admin(Method::GET, "/admin/v1/tenants/acme/keys", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_no_key_secret(&secret, &list);
    assert_eq!(list["data"][0]["limits"], created["limits"]);

    let path = format!("/admin/v1/tenants/acme/keys/{id}");
    let (status, patched) = app
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"limits": {"tokens_per_minute": null, "monthly_tokens": 5000}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_no_key_secret(&secret, &patched);
    assert_eq!(
        patched["limits"],
        json!({"tokens_per_minute": null, "requests_per_minute": 60, "monthly_tokens": 5000}),
        "absent keeps, null removes"
    );
    assert_eq!(patched["id"], id.as_str());
    assert_eq!(patched["name"], "batch");
    assert_eq!(patched["hint"], &secret[secret.len() - 4..]);
    let (_, list) = app
        .admin(Method::GET, "/admin/v1/tenants/acme/keys", None)
        .await;
    assert_no_key_secret(&secret, &list);
    assert_eq!(list["data"][0]["limits"], patched["limits"]);
    assert_eq!(
        list["data"][1]["limits"], plain["limits"],
        "the other key is untouched"
    );
    let (status, same) = app.admin(Method::PATCH, &path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(
        same["limits"], patched["limits"],
        "an empty patch changes nothing"
    );
    assert_no_key_secret(&secret, &same);
    let (status, _) = app.me(&[("api-key", &secret)]).await;
    assert_eq!(status, StatusCode::OK, "the key still works");
}

#[tokio::test]
async fn bad_key_limits_are_422_naming_the_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    let bad = [
        (json!({"tokens_per_minute": -1}), "limits.tokens_per_minute"),
        (
            json!({"requests_per_minute": "ten"}),
            "limits.requests_per_minute",
        ),
        (json!({"monthly_tokens": 1.5}), "limits.monthly_tokens"),
        (json!({"monthly_tokens": u64::MAX}), "limits.monthly_tokens"),
        (json!({"colour": 1}), "limits.colour"),
    ];
    for (limits, field) in &bad {
        let (status, body) = app
            .admin(
                Method::POST,
                "/admin/v1/tenants/acme/keys",
                Some(json!({"name": "x", "limits": limits})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{limits}: {body}");
        assert_eq!(body["error"]["field"], *field, "{limits}: {body}");
    }
    let (_, list) = app
        .admin(Method::GET, "/admin/v1/tenants/acme/keys", None)
        .await;
    assert_eq!(list["data"], json!([]), "nothing was written");

    let (status, created) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"name": "k", "limits": {"tokens_per_minute": 100}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["key"].as_str().unwrap();
    let path = format!(
        "/admin/v1/tenants/acme/keys/{}",
        created["id"].as_str().unwrap()
    );
    let mut patches: Vec<(Value, &str)> = bad
        .iter()
        .map(|(limits, field)| (json!({"limits": limits}), *field))
        .collect();
    // only the limits of a key can change
    patches.push((json!({"name": "renamed"}), "name"));
    patches.push((json!({"scope": "read"}), "scope"));
    for (patch, field) in patches {
        let (status, body) = app.admin(Method::PATCH, &path, Some(patch.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {body}");
        assert_eq!(body["error"]["field"], field, "{patch}: {body}");
        assert_no_key_secret(secret, &body);
    }
    let (_, list) = app
        .admin(Method::GET, "/admin/v1/tenants/acme/keys", None)
        .await;
    assert_eq!(
        list["data"][0]["limits"], created["limits"],
        "nothing changed"
    );
    assert_eq!(list["data"][0]["name"], "k");
    assert_eq!(list["data"][0]["scope"], "read-write");
}

#[tokio::test]
async fn a_tenants_slug_cannot_patch_another_tenants_key() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    app.onboard("beta").await;
    let (status, created) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"name": "k", "limits": {"tokens_per_minute": 100}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let unlimited = json!({"limits": {"tokens_per_minute": null}});
    for path in [
        format!("/admin/v1/tenants/beta/keys/{id}"),
        format!("/admin/v1/tenants/nobody/keys/{id}"),
        format!(
            "/admin/v1/tenants/acme/keys/{}",
            "00000000-0000-0000-0000-000000000000"
        ),
        "/admin/v1/tenants/acme/keys/not-a-uuid".to_owned(),
    ] {
        let (status, body) = app
            .admin(Method::PATCH, &path, Some(unlimited.clone()))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        assert_no_key_secret(secret, &body);
    }
    let (_, acme) = app
        .admin(Method::GET, "/admin/v1/tenants/acme/keys", None)
        .await;
    assert_eq!(
        acme["data"][0]["limits"]["tokens_per_minute"], 100,
        "the key kept its limit"
    );
    let (_, beta) = app
        .admin(Method::GET, "/admin/v1/tenants/beta/keys", None)
        .await;
    assert_eq!(beta["data"], json!([]));
}

#[tokio::test]
async fn tokens_are_issued_for_active_tenants_with_a_bounded_lifetime() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/tokens",
            Some(json!({"scope": "read", "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let token = body["token"].as_str().unwrap();
    let (status, me) = app
        .me(&[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["credential"]["scope"], "read");
    let (status, _) = app
        .admin(Method::POST, "/admin/v1/tenants/acme/tokens", None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "no body means the defaults");
    for ttl in [0, 86_401] {
        let (status, body) = app
            .admin(
                Method::POST,
                "/admin/v1/tenants/acme/tokens",
                Some(json!({"ttl_seconds": ttl})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{ttl}: {body}");
    }
    app.admin(
        Method::PATCH,
        "/admin/v1/tenants/acme",
        Some(json!({"status": "suspended"})),
    )
    .await;
    let (status, _) = app
        .admin(Method::POST, "/admin/v1/tenants/acme/tokens", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .admin(Method::POST, "/admin/v1/tenants/nobody/tokens", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tenants_are_paginated_by_slug() {
    let app = TestApp::spawn().await;
    for slug in ["delta", "alpha", "charlie", "bravo"] {
        app.onboard(slug).await;
    }
    let (_, first) = app
        .admin(Method::GET, "/admin/v1/tenants?limit=3", None)
        .await;
    let slugs: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["alpha", "bravo", "charlie"]);
    assert_eq!(first["next"], "charlie");
    let (_, second) = app
        .admin(Method::GET, "/admin/v1/tenants?limit=3&after=charlie", None)
        .await;
    assert_eq!(second["data"][0]["slug"], "delta");
    assert_eq!(second["next"], Value::Null);
    let (status, _) = app
        .admin(Method::GET, "/admin/v1/tenants?limit=0", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .admin(Method::GET, "/admin/v1/tenants?limit=abc", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Every operation of the OpenAPI document exists (a missing route would answer the
/// fallback's Azure-shaped 404 or a 405), and every one needs the admin token.
#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_every_route_needs_the_admin_token() {
    let app = TestApp::spawn().await;
    let spec: Value = app
        .http
        .get(app.url("/admin/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        spec["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let paths = spec["paths"].as_object().expect("paths");
    assert!(paths.len() >= 13, "{}", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{slug}", "nobody")
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{name}", "nothing")
            .replace("{resource}", "nothing")
            .replace("{alias}", "nothing");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            operations += 1;
            if path == "/admin/v1/openapi.json" {
                continue;
            }
            let anonymous = app
                .http
                .request(method.clone(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            assert_eq!(
                anonymous.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            let wrong = app
                .http
                .request(method.clone(), app.url(&concrete))
                .bearer_auth("wrong")
                .send()
                .await
                .unwrap();
            assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            let (status, body) = app.admin(method.clone(), &concrete, Some(json!({}))).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(
                body["error"]["code"], "404",
                "{method} {path} is not routed"
            );
            assert!(
                body.get("error").is_none() || body["error"]["code"].is_string(),
                "{body}"
            );
        }
    }
    assert!(operations >= 22, "{operations}");
}

/// What the admin API's contract says and the schema-driven fuzzing found: a query parameter
/// named twice or unknown, a `null` for a field that is never null, an array where an object
/// belongs: each a 422 in the admin envelope naming what is wrong, and nothing written.
#[tokio::test]
async fn the_admin_routes_refuse_what_their_document_forbids_in_one_envelope() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    let (_, key) = app.key("acme", "read").await;
    let key_id = key;
    let raw = |method: Method, path: &str, body: Option<&str>| {
        let mut request = app
            .http
            .request(method, app.url(path))
            .bearer_auth(bulkhead_tests::ADMIN_TOKEN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body: Value =
                serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
            (status, content_type, body)
        }
    };
    let keys_path = format!("/admin/v1/tenants/acme/keys/{key_id}");
    let cases: Vec<(&str, Method, String, Option<&str>)> = vec![
        (
            "a usage parameter named twice",
            Method::GET,
            "/admin/v1/tenants/acme/usage?granularity=day&granularity=hour".into(),
            None,
        ),
        (
            "an unknown usage parameter",
            Method::GET,
            "/admin/v1/tenants/acme/usage?colour=blue".into(),
            None,
        ),
        (
            "a tenants listing parameter named twice",
            Method::GET,
            "/admin/v1/tenants?limit=1&limit=2".into(),
            None,
        ),
        (
            "a null display_name",
            Method::PATCH,
            "/admin/v1/tenants/acme".into(),
            Some(r#"{"display_name": null}"#),
        ),
        (
            "a null status",
            Method::PATCH,
            "/admin/v1/tenants/acme".into(),
            Some(r#"{"status": null}"#),
        ),
        (
            "a null ttl_seconds",
            Method::POST,
            "/admin/v1/tenants/acme/tokens".into(),
            Some(r#"{"ttl_seconds": null}"#),
        ),
        (
            "a token request that is an array",
            Method::POST,
            "/admin/v1/tenants/acme/tokens".into(),
            Some("[]"),
        ),
        (
            "limits that are an array",
            Method::PATCH,
            keys_path.clone(),
            Some(r#"{"limits": []}"#),
        ),
        (
            "a tenant that is an array",
            Method::POST,
            "/admin/v1/tenants".into(),
            Some(r#"["beta", "Beta"]"#),
        ),
        (
            "a placement with an unknown field",
            Method::POST,
            "/admin/v1/tenants".into(),
            Some(
                r#"{"slug": "beta", "display_name": "Beta", "openai": {"isolation": "shared", "x": 1}}"#,
            ),
        ),
        (
            "a key named twice in a body",
            Method::POST,
            "/admin/v1/tenants".into(),
            Some(r#"{"slug": "beta", "display_name": "Beta", "slug": "gamma"}"#),
        ),
    ];
    for (case, method, path, body) in cases {
        let (status, content_type, answer) = raw(method, &path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {answer}");
        assert!(content_type.starts_with("application/json"), "{case}");
        assert_eq!(
            answer["error"]["code"], "invalid_request",
            "{case}: {answer}"
        );
        assert!(answer["error"]["message"].is_string(), "{case}: {answer}");
    }
    let (status, tenant) = app.admin(Method::GET, "/admin/v1/tenants/acme", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenant["display_name"], "acme", "nothing changed");
    assert_eq!(tenant["status"], "active");
    for slug in ["beta", "gamma"] {
        let (status, _) = app
            .admin(Method::GET, &format!("/admin/v1/tenants/{slug}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{slug} was not created");
    }
}

fn slugs(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["slug"].as_str().expect("slug").to_owned())
        .collect()
}

/// Every page of `GET /admin/v1/tenants?{query}`, `limit` at a time, following `next`.
async fn all_pages(app: &TestApp, query: &str, limit: u32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..100 {
        let (status, page) = app
            .admin(
                Method::GET,
                &format!("/admin/v1/tenants?limit={limit}&{query}{after}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        seen.extend(slugs(&page));
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return seen,
        }
    }
    panic!("{query}: the pages never end")
}

#[tokio::test]
async fn tenants_are_listed_by_slug_prefix_status_and_placement_a_page_at_a_time() {
    let app = TestApp::spawn().await;
    for slug in ["acme-eu", "acme-us", "acme-labs", "beta", "acmeish"] {
        app.onboard(slug).await;
    }
    let byo = json!({"isolation": "tenant_provided", "endpoint": "http://127.0.0.1:9/r/byo",
        "api_key": TENANT_KEY, "region": "westeurope"});
    for slug in ["acme-byo", "zeta-byo"] {
        let (status, body) = app
            .admin(
                Method::POST,
                "/admin/v1/tenants",
                Some(json!({"slug": slug, "display_name": slug, "openai": byo})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/acme-us",
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for limit in [1, 2, 50] {
        assert_eq!(
            all_pages(&app, "slug_prefix=acme-", limit).await,
            ["acme-byo", "acme-eu", "acme-labs", "acme-us"],
            "limit {limit}"
        );
        assert_eq!(
            all_pages(&app, "slug_prefix=acme&status=active", limit).await,
            ["acme-byo", "acme-eu", "acme-labs", "acmeish"]
        );
        assert_eq!(
            all_pages(&app, "status=suspended", limit).await,
            ["acme-us"]
        );
        assert_eq!(
            all_pages(&app, "openai=tenant_provided", limit).await,
            ["acme-byo", "zeta-byo"]
        );
        assert_eq!(
            all_pages(&app, "openai=none&slug_prefix=acme-", limit).await,
            ["acme-eu", "acme-labs", "acme-us"]
        );
        assert_eq!(
            all_pages(
                &app,
                "search=none&openai=tenant_provided&status=active",
                limit
            )
            .await,
            ["acme-byo", "zeta-byo"]
        );
    }
    assert!(all_pages(&app, "search=shared_index", 10).await.is_empty());
    assert!(all_pages(&app, "slug_prefix=nobody", 10).await.is_empty());
    // A cursor past the prefix's range ends the listing; one before it starts at the prefix.
    let (_, page) = app
        .admin(
            Method::GET,
            "/admin/v1/tenants?slug_prefix=acme-&after=acme-labs",
            None,
        )
        .await;
    assert_eq!(slugs(&page), ["acme-us"]);
    let (_, page) = app
        .admin(
            Method::GET,
            "/admin/v1/tenants?slug_prefix=beta&after=a",
            None,
        )
        .await;
    assert_eq!(slugs(&page), ["beta"]);

    for (query, field) in [
        ("slug_prefix=Acme", "slug_prefix"),
        ("slug_prefix=", "slug_prefix"),
        ("slug_prefix=a%25", "slug_prefix"),
        ("status=gone", "status"),
        ("openai=shared_index", "openai"),
        ("search=shared", "search"),
    ] {
        let (status, body) = app
            .admin(Method::GET, &format!("/admin/v1/tenants?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
}

fn batch_item(slug: &str, keys: Value) -> Value {
    json!({"slug": slug, "display_name": slug, "keys": keys})
}

/// Bulk onboarding: checked whole (a malformed item, or one that breaks a rule, refuses the
/// call naming it, and nothing is written), then written item by item: each all or nothing,
/// answered in order, a conflict failing its item alone, the keys of the others working at
/// once, each for its own tenant.
#[tokio::test]
async fn a_batch_onboards_each_item_all_or_nothing_and_answers_each_in_order() {
    let app = TestApp::spawn().await;
    app.onboard("taken").await;
    let fine = || batch_item("fine", json!([{"name": "k"}]));
    for (bad, field) in [
        (batch_item("Bad Slug", json!([])), "tenants[1].slug"),
        (
            batch_item("half", json!([{"name": "fine"}, {"name": ""}])),
            "tenants[1].keys[1].name",
        ),
        (
            batch_item("half", json!([{"name": "fine"}, {"nme": "x"}])),
            "tenants[1].keys[1].nme",
        ),
        (
            json!({"slug": "typo", "display_name": "typo", "limts": {}}),
            "tenants[1].limts",
        ),
        (
            json!({"slug": "blank", "display_name": "  "}),
            "tenants[1].display_name",
        ),
        (
            json!({"slug": "nowhere", "display_name": "n",
                "search": {"isolation": "shared_index", "service": "nothing"}}),
            "tenants[1].search",
        ),
        (json!([1, 2]), "tenants[1]"),
    ] {
        let (status, body) = app
            .admin(
                Method::POST,
                "/admin/v1/tenants:batch",
                Some(json!({"tenants": [fine(), bad]})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let named = body["error"]["field"].as_str().unwrap_or_default();
        assert!(named.starts_with(field), "{field}: {body}");
        assert_eq!(all_pages(&app, "", 50).await, ["taken"], "{body}");
    }
    let many: Vec<Value> = (0..1001)
        .map(|i| batch_item(&format!("bulk{i}"), json!([])))
        .collect();
    for (batch, field) in [
        (json!({"tenants": many}), Some("tenants")),
        (json!({"tenants": []}), Some("tenants")),
        (json!({"tenants": {}}), None),
        (json!({"tenant": []}), None),
    ] {
        let (status, body) = app
            .admin(Method::POST, "/admin/v1/tenants:batch", Some(batch))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        if let Some(field) = field {
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
    assert_eq!(all_pages(&app, "", 50).await, ["taken"]);

    let mut two = batch_item(
        "two",
        json!([{"name": "only", "limits": {"requests_per_minute": 5}}]),
    );
    two["limits"] = json!({"tokens_per_minute": 1000});
    let batch = json!({"tenants": [
        batch_item("one", json!([{"name": "web", "scope": "read"}, {"name": "jobs"}])),
        batch_item("taken", json!([{"name": "would-be"}])),
        batch_item("twice", json!([])),
        batch_item("twice", json!([{"name": "second"}])),
        two,
    ]});
    let (status, body) = app
        .admin(Method::POST, "/admin/v1/tenants:batch", Some(batch))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().expect("results");
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i, "{result}");
    }
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, [201, 409, 201, 409, 201], "{body}");
    assert_eq!(
        (body["created"].as_u64(), body["failed"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(results[1]["error"]["code"], "conflict", "{body}");
    assert_eq!(results[3]["error"]["code"], "conflict", "{body}");
    assert!(results[1].get("keys").is_none(), "{body}");
    assert_eq!(results[0]["tenant"]["slug"], "one");
    assert_eq!(results[4]["tenant"]["limits"]["tokens_per_minute"], 1000);
    assert_eq!(results[4]["keys"][0]["limits"]["requests_per_minute"], 5);

    // The keys work at once, each for its own tenant only.
    let keys: Vec<(&str, &str)> = [(0, 0), (0, 1), (4, 0)]
        .iter()
        .map(|&(item, key)| {
            (
                results[item]["tenant"]["slug"].as_str().expect("slug"),
                results[item]["keys"][key]["key"].as_str().expect("secret"),
            )
        })
        .collect();
    for (slug, secret) in &keys {
        let (status, me) = app.me(&[("api-key", secret)]).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["slug"], *slug, "{me}");
    }
    // A secret is in that answer only: the listing shows hints. The item refused for its
    // taken slug gave the existing tenant no key.
    let (_, listed) = app
        .admin(Method::GET, "/admin/v1/tenants/one/keys", None)
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));
    assert_no_key_secret(keys[0].1, &listed);
    let (_, listed) = app
        .admin(Method::GET, "/admin/v1/tenants/taken/keys", None)
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0), "{listed}");
    let (_, listed) = app
        .admin(Method::GET, "/admin/v1/tenants/twice/keys", None)
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0), "{listed}");
    assert_eq!(
        all_pages(&app, "", 50).await,
        ["one", "taken", "twice", "two"]
    );

    // A batch cut short (the replica died, the client timed out) is sent again whole: what
    // was written answers 409 and is left as it was, the rest is onboarded.
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants:batch",
            Some(json!({"tenants": [
                batch_item("one", json!([{"name": "again"}])),
                batch_item("three", json!([{"name": "k"}])),
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], 409, "{body}");
    assert_eq!(body["results"][1]["status"], 201, "{body}");
    let (_, listed) = app
        .admin(Method::GET, "/admin/v1/tenants/one/keys", None)
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2), "{listed}");
    assert_eq!(
        all_pages(&app, "", 50).await,
        ["one", "taken", "three", "twice", "two"]
    );
}

#[tokio::test]
async fn a_deployment_says_how_azure_bills_it_and_which_model_version_it_runs() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/openai/resources",
            Some(
                json!({"name": "aoai-eastus", "endpoint": "http://127.0.0.1:9/r/aoai-eastus",
                "region": "eastus", "data_zone": "us", "api_key": UPSTREAM_KEY}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let deploy = |body: Value| app.admin(Method::POST, "/admin/v1/openai/deployments", Some(body));
    let (status, dz) = deploy(json!({"resource": "aoai-eastus", "name": "gpt-4o-dz",
        "model": "gpt-4o", "model_version": "2024-08-06", "deployment_type": "data_zone_standard",
        "capacity_tpm": 1000}))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{dz}");
    assert_eq!(dz["deployment_type"], "data_zone_standard");
    assert_eq!(dz["model_version"], "2024-08-06");
    // Unnamed: from the kind, and no version.
    let (_, plain) = deploy(json!({"resource": "aoai-eastus", "name": "gpt-4o",
        "model": "gpt-4o", "capacity_tpm": 1000}))
    .await;
    assert_eq!(plain["deployment_type"], "global_standard");
    assert_eq!(plain["model_version"], Value::Null);
    let (_, ptu) = deploy(json!({"resource": "aoai-eastus", "name": "gpt-4o-ptu",
        "model": "gpt-4o", "kind": "provisioned", "capacity_tpm": 1000}))
    .await;
    assert_eq!(ptu["deployment_type"], "provisioned");
    for (body, field) in [
        (
            json!({"resource": "aoai-eastus", "name": "x1", "model": "gpt-4o", "capacity_tpm": 1,
            "deployment_type": "provisioned"}),
            "deployment_type",
        ),
        (
            json!({"resource": "aoai-eastus", "name": "x2", "model": "gpt-4o", "capacity_tpm": 1,
            "kind": "provisioned", "deployment_type": "global_standard"}),
            "deployment_type",
        ),
        (
            json!({"resource": "aoai-eastus", "name": "x3", "model": "gpt-4o", "capacity_tpm": 1,
            "model_version": "2024 08 06"}),
            "model_version",
        ),
        (
            json!({"resource": "aoai-eastus", "name": "x4", "model": "gpt-4o", "capacity_tpm": 1,
            "deployment_type": "premium"}),
            "deployment_type",
        ),
    ] {
        let (status, refusal) = deploy(body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
        assert_eq!(refusal["error"]["field"], field, "{refusal}");
    }
    // Read back from the store's catalog, as another replica would.
    let (_, listed) = app
        .admin(Method::GET, "/admin/v1/openai/deployments", None)
        .await;
    let by_name = |name: &str| {
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by_name("gpt-4o-dz")["deployment_type"],
        "data_zone_standard"
    );
    assert_eq!(by_name("gpt-4o-dz")["model_version"], "2024-08-06");
    assert_eq!(by_name("gpt-4o-ptu")["deployment_type"], "provisioned");
    assert_eq!(by_name("gpt-4o")["deployment_type"], "global_standard");
}
