//! Keyless upstreams end to end: a gateway process whose upstreams are azure-sim resources
//! and services that refuse keys (`disable_local_auth`) and accept Entra ID tokens from the
//! emulator's identity platform. Client secret, workload identity and managed identity in one
//! shared pool; a search service; a tenant-provided endpoint with the tenant's own service
//! principal; refresh under load; an identity-platform outage; refusals; and no secret, token
//! or assertion in the gateway's log.

use std::time::{Duration, Instant};

use azure_sim::{
    DeploymentConfig, EntraConfig, ManagedIdentityConfig, PrincipalConfig, ResourceConfig,
    SearchServiceConfig, Sim, SimConfig, SimHandle,
};
use bulkhead_tests::{admin_call, eventually, issue_key, temp_dir, GatewayProcess};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DIRECTORY: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const PLATFORM_SECRET: &str = "platform-sp-secret-Qx7~v9";
const TENANT_SECRET: &str = "tenant-own-sp-secret-Lm3~p2";
const ISSUER: &str = "https://oidc.sim.local/cluster";
const SUBJECT: &str = "system:serviceaccount:bulkhead:gateway";
/// Client and object ids of the principals.
const SP: (&str, &str) = (
    "0a1b2c3d-0000-4000-8000-000000000001",
    "0a1b2c3d-1111-4000-8000-000000000001",
);
const WORKLOAD: (&str, &str) = (
    "0a1b2c3d-0000-4000-8000-000000000002",
    "0a1b2c3d-1111-4000-8000-000000000002",
);
const MANAGED: (&str, &str) = (
    "0a1b2c3d-0000-4000-8000-000000000003",
    "0a1b2c3d-1111-4000-8000-000000000003",
);
const TENANT_SP: (&str, &str) = (
    "0a1b2c3d-0000-4000-8000-000000000004",
    "0a1b2c3d-1111-4000-8000-000000000004",
);
/// A principal with a valid secret and no role anywhere.
const ROLELESS: (&str, &str) = (
    "0a1b2c3d-0000-4000-8000-000000000005",
    "0a1b2c3d-1111-4000-8000-000000000005",
);
const ROLELESS_SECRET: &str = "roleless-secret-Zz1~q8";

fn keyless(name: &str, region: &str, principal: &str) -> ResourceConfig {
    ResourceConfig::new(name, region, format!("unused-key-of-{name}"))
        .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o"))
        .with_local_auth_disabled()
        .with_role_assignment(principal)
}

async fn sim(lifetime_seconds: u64) -> SimHandle {
    let entra = EntraConfig::default()
        .with_token_lifetime(lifetime_seconds)
        .with_principal(PrincipalConfig::new(DIRECTORY, SP.0, SP.1).with_secret(PLATFORM_SECRET))
        .with_principal(
            PrincipalConfig::new(DIRECTORY, WORKLOAD.0, WORKLOAD.1).with_federated(ISSUER, SUBJECT),
        )
        .with_principal(
            PrincipalConfig::new(DIRECTORY, TENANT_SP.0, TENANT_SP.1).with_secret(TENANT_SECRET),
        )
        .with_principal(
            PrincipalConfig::new(DIRECTORY, ROLELESS.0, ROLELESS.1).with_secret(ROLELESS_SECRET),
        )
        .with_managed_identity(
            ManagedIdentityConfig::new(DIRECTORY, "identity-header-value")
                .with_system_assigned(MANAGED.0, MANAGED.1),
        );
    Sim::start(
        SimConfig::default()
            .with_entra(entra)
            .with_resource(keyless("aoai-sp", "eastus", SP.1))
            .with_resource(keyless("aoai-wi", "westus", WORKLOAD.1))
            .with_resource(keyless("aoai-mi", "centralus", MANAGED.1))
            .with_resource(keyless("aoai-tenant", "northeurope", TENANT_SP.1))
            .with_resource(keyless("aoai-norole", "eastus", SP.1))
            .with_search_service(
                SearchServiceConfig::new("search-keyless", "eastus", "unused-admin", "unused-q")
                    .with_local_auth_disabled()
                    .with_role_assignment(SP.1),
            ),
    )
    .await
    .unwrap()
}

struct World {
    sim: SimHandle,
    gateway: GatewayProcess,
    http: reqwest::Client,
    keys: std::collections::HashMap<&'static str, String>,
    assertion: String,
}

fn principal(client: (&str, &str), secret: &str) -> Value {
    json!({"kind": "client_secret", "tenant_id": DIRECTORY, "client_id": client.0,
        "client_secret": secret})
}

/// The gateway as its own process (its whole log is read at the end), pointed at the
/// emulator's identity platform and IMDS, with a workload-identity token file.
async fn world(lifetime_seconds: u64) -> World {
    let sim = sim(lifetime_seconds).await;
    let assertion = sim.federated_token(ISSUER, SUBJECT).unwrap();
    let token_file = temp_dir("federated").join("token");
    std::fs::write(&token_file, &assertion).unwrap();
    let imds = format!("{}/metadata/identity/oauth2/token", sim.base_url());
    let gateway = GatewayProcess::start(&[
        ("BULKHEAD_LOG", "debug"),
        ("AZURE_AUTHORITY_HOST", &sim.base_url()),
        ("BULKHEAD_IMDS_ENDPOINT", &imds),
        ("AZURE_TENANT_ID", DIRECTORY),
        ("AZURE_CLIENT_ID", WORKLOAD.0),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
    ])
    .await;
    let http = reqwest::Client::new();
    let setup = [
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-sp", "endpoint": sim.resource_url("aoai-sp"),
            "region": "eastus", "auth": principal(SP, PLATFORM_SECRET)}),
        ),
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-wi", "endpoint": sim.resource_url("aoai-wi"),
            "region": "westus", "auth": {"kind": "workload_identity"}}),
        ),
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-mi", "endpoint": sim.resource_url("aoai-mi"),
            "region": "centralus", "auth": {"kind": "managed_identity"}}),
        ),
        // Reached by a principal without a role there.
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-norole", "endpoint": sim.resource_url("aoai-norole"),
            "region": "eastus", "auth": principal(ROLELESS, ROLELESS_SECRET), "owner_tenant": "norole"}),
        ),
        // A wrong secret for a real principal.
        (
            "/admin/v1/openai/resources",
            json!({"name": "aoai-badsecret", "endpoint": sim.resource_url("aoai-sp"),
            "region": "eastus", "auth": principal(SP, "not-the-secret-Yy9"), "owner_tenant": "badsecret"}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-sp", "name": "gpt-4o", "model": "gpt-4o", "capacity_tpm": 1000000}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-wi", "name": "gpt-4o", "model": "gpt-4o", "capacity_tpm": 1000000}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-mi", "name": "gpt-4o", "model": "gpt-4o", "capacity_tpm": 1000000}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-norole", "name": "gpt-4o", "model": "gpt-4o", "capacity_tpm": 1000}),
        ),
        (
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai-badsecret", "name": "gpt-4o", "model": "gpt-4o", "capacity_tpm": 1000}),
        ),
        (
            "/admin/v1/openai/pools",
            json!({"alias": "gpt-4o", "members": [
            {"deployment": "aoai-sp/gpt-4o"}, {"deployment": "aoai-wi/gpt-4o"}, {"deployment": "aoai-mi/gpt-4o"}]}),
        ),
        (
            "/admin/v1/search/services",
            json!({"name": "search-keyless", "endpoint": sim.resource_url("search-keyless"),
            "region": "eastus", "auth": principal(SP, PLATFORM_SECRET)}),
        ),
        (
            "/admin/v1/search/index-templates",
            json!({"name": "docs", "fields": [
            {"name": "id", "type": "Edm.String", "key": true, "filterable": true},
            {"name": "title", "type": "Edm.String", "searchable": true}]}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "pooled", "display_name": "Pooled", "openai": {"isolation": "shared"},
            "search": {"isolation": "shared_index", "service": "search-keyless"}}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "own-sp", "display_name": "Own SP", "openai": {"isolation": "tenant_provided",
            "endpoint": sim.resource_url("aoai-tenant"), "region": "northeurope", "auth": principal(TENANT_SP, TENANT_SECRET)}}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "norole", "display_name": "No role", "openai": {"isolation": "dedicated_resource", "resources": ["aoai-norole"]}}),
        ),
        (
            "/admin/v1/tenants",
            json!({"slug": "badsecret", "display_name": "Bad secret", "openai": {"isolation": "dedicated_resource", "resources": ["aoai-badsecret"]}}),
        ),
    ];
    for (path, body) in setup {
        let (status, answer) =
            admin_call(&http, &gateway.base, Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        let shown = answer.to_string();
        assert!(
            !shown.contains(PLATFORM_SECRET) && !shown.contains(TENANT_SECRET),
            "{shown}"
        );
    }
    let mut keys = std::collections::HashMap::new();
    for slug in ["pooled", "own-sp", "norole", "badsecret"] {
        keys.insert(slug, issue_key(&http, &gateway.base, slug).await);
    }
    World {
        sim,
        gateway,
        http,
        keys,
        assertion,
    }
}

impl World {
    async fn chat(&self, tenant: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .post(format!(
                "{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                self.gateway.base
            ))
            .header("api-key", &self.keys[tenant])
            .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Tokens the emulator issued to `client` for `resource`.
    fn issued(&self, client: &str, resource: &str) -> u64 {
        self.sim
            .entra()
            .issued()
            .iter()
            .filter(|c| c.client_id == client && c.resource == resource)
            .map(|c| c.count)
            .sum()
    }

    /// Nothing secret in anything the gateway logged: the secrets, the federated assertion,
    /// and no token (every token the emulator issues is a JWT, `eyJ...`).
    fn assert_log_is_clean(&self) {
        let log = self.gateway.output();
        assert!(
            log.len() > 1000,
            "the gateway logged too little to judge:\n{log}"
        );
        for secret in [
            PLATFORM_SECRET,
            TENANT_SECRET,
            ROLELESS_SECRET,
            "not-the-secret-Yy9",
            "identity-header-value",
        ] {
            assert!(!log.contains(secret), "a secret reached the log");
        }
        assert!(
            !log.contains(&self.assertion),
            "the federated assertion reached the log"
        );
        assert!(!log.contains("eyJ"), "a token reached the log");
    }
}

const OPENAI: &str = "https://cognitiveservices.azure.com";

#[tokio::test]
async fn every_credential_kind_reaches_its_keyless_resource_and_no_secret_is_logged() {
    let world = world(3600).await;
    // The pool spreads calls over its three members, one per credential kind.
    for _ in 0..30 {
        let (status, _, answer) = world.chat("pooled").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    for resource in ["aoai-sp", "aoai-wi", "aoai-mi"] {
        let served = world.sim.requests(Some(resource));
        assert!(!served.is_empty(), "{resource} was never called");
        // Each carried a token, never a key.
        assert!(
            served.iter().all(|r| r.header("api-key").is_none()
                && r.header("authorization")
                    .is_some_and(|a| a.starts_with("Bearer "))),
            "{resource}"
        );
    }
    // One token per credential for the whole run, not one per call.
    for client in [SP.0, WORKLOAD.0, MANAGED.0] {
        assert_eq!(world.issued(client, OPENAI), 1, "{client}");
    }
    // The tenant's own endpoint, with the tenant's own service principal.
    let (status, _, answer) = world.chat("own-sp").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(world.issued(TENANT_SP.0, OPENAI), 1);
    assert!(!world.sim.requests(Some("aoai-tenant")).is_empty());

    // Search on a keyless service: the tenant's documents written and found through the
    // shared index, with a search-scoped token.
    let search = |method: Method, path: &str, body: Value| {
        let request = world
            .http
            .request(
                method,
                format!("{}{path}?api-version=2024-07-01", world.gateway.base),
            )
            .header("api-key", &world.keys["pooled"])
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, answer) = search(
        Method::POST,
        "/indexes('docs')/docs/search.index",
        json!({"value": [{"@search.action": "upload", "id": "1", "title": "keyless hello"}]}),
    )
    .await;
    assert!(status.is_success(), "{status} {answer}");
    let found = eventually(
        Duration::from_secs(5),
        Duration::from_millis(100),
        async || {
            let (status, answer) = search(
                Method::POST,
                "/indexes('docs')/docs/search.post.search",
                json!({"search": "keyless"}),
            )
            .await;
            match answer["value"].as_array() {
                Some(hits) if status == StatusCode::OK && hits.len() == 1 => Ok(answer),
                _ => Err(format!("{status} {answer}")),
            }
        },
    )
    .await;
    assert_eq!(found["value"][0]["title"], "keyless hello");
    assert!(world.issued(SP.0, "https://search.azure.com") >= 1);
    world.assert_log_is_clean();
}

#[tokio::test]
async fn a_refused_credential_names_the_resource_and_never_the_secret() {
    let world = world(3600).await;
    // No role assignment: Azure's refusal, named with the deployment, as a 502 (the caller
    // did nothing wrong, so never a 401 of the caller's).
    let (status, _, answer) = world.chat("norole").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert_eq!(answer["error"]["code"], "UpstreamAuthenticationFailed");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("aoai-norole/gpt-4o"), "{message}");
    assert!(
        message.contains("PermissionDenied") && message.contains(ROLELESS.1),
        "{message}"
    );
    // A wrong secret: the identity platform's refusal, named, and a 503 to retry later.
    let (status, headers, answer) = world.chat("badsecret").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "UpstreamAuthenticationUnavailable");
    assert!(headers.contains_key("retry-after"));
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("aoai-badsecret/gpt-4o") && message.contains("AADSTS7000215"),
        "{message}"
    );
    for shown in [answer.to_string(), message.to_owned()] {
        assert!(!shown.contains("not-the-secret-Yy9") && !shown.contains(ROLELESS_SECRET));
    }
    world.assert_log_is_clean();
}

#[tokio::test]
async fn an_identity_platform_outage_is_ridden_out_until_the_token_expires_then_recovered() {
    let lifetime = 6;
    let world = world(lifetime).await;
    let (status, _, answer) = world.chat("own-sp").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let fetched = Instant::now();
    world.sim.entra().set_down(true);
    // The cached token serves until it expires (less the skew kept for calls in flight).
    while fetched.elapsed() < Duration::from_secs(lifetime) * 3 / 4 {
        let (status, _, answer) = world.chat("own-sp").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "at {:?}: {answer}",
            fetched.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then 503 with Retry-After, in Azure's format, until the platform is back.
    let (status, headers) = eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || {
            let (status, headers, answer) = world.chat("own-sp").await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(
                    answer["error"]["code"], "UpstreamAuthenticationUnavailable",
                    "{answer}"
                );
                Ok((status, headers))
            } else {
                Err(format!("{status} {answer}"))
            }
        },
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    world.sim.entra().set_down(false);
    eventually(
        Duration::from_secs(40),
        Duration::from_millis(250),
        async || match world.chat("own-sp").await {
            (StatusCode::OK, _, _) => Ok(()),
            (status, _, answer) => Err(format!("{status} {answer}")),
        },
    )
    .await;
    world.assert_log_is_clean();
}

/// Short-lived tokens under steady load: no call fails, and the identity platform sees about
/// two requests per lifetime per credential (a refresh at half life), not one per call.
/// `BULKHEAD_ENTRA_LOAD_SECONDS` (default 30) and `_RATE` (default 200 calls/s) size it.
#[tokio::test]
async fn short_lived_tokens_are_refreshed_in_the_background_under_load() {
    let seconds: u64 = std::env::var("BULKHEAD_ENTRA_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let rate: u64 = std::env::var("BULKHEAD_ENTRA_LOAD_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let lifetime = 5;
    let world = world(lifetime).await;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut calls = tokio::task::JoinSet::new();
    let world = std::sync::Arc::new(world);
    for _ in 0..seconds * rate {
        ticker.tick().await;
        let world = std::sync::Arc::clone(&world);
        calls.spawn(async move { world.chat("pooled").await });
    }
    let mut failed = Vec::new();
    let mut total = 0;
    while let Some(done) = calls.join_next().await {
        let (status, _, answer) = done.unwrap();
        total += 1;
        if status != StatusCode::OK {
            failed.push(format!("{status} {answer}"));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        failed.is_empty(),
        "{} of {total} calls failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let most = (elapsed / (lifetime as f64 / 2.0)).ceil() as u64 + 2;
    for client in [SP.0, WORKLOAD.0, MANAGED.0] {
        let issued = world.issued(client, OPENAI);
        eprintln!("{client}: {issued} tokens for {total} calls in {elapsed:.1} s");
        assert!(
            (2..=most).contains(&issued),
            "{client}: {issued} tokens for {total} calls in {elapsed:.1} s (at most {most})"
        );
    }
    world.assert_log_is_clean();
}

/// Azure refusing a token the gateway still holds as valid (here: the emulator's clock moved
/// two hours on, past the token's expiry) costs one new token and one retry, and the call
/// succeeds; it does not turn every later call into a token request.
#[tokio::test]
async fn a_401_on_a_cached_token_gets_one_new_token_and_one_retry() {
    let world = world(3600).await;
    let (status, _, answer) = world.chat("own-sp").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(world.issued(TENANT_SP.0, OPENAI), 1);
    world.sim.advance_clock(Duration::from_secs(7200));
    let (status, _, answer) = world.chat("own-sp").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(world.issued(TENANT_SP.0, OPENAI), 2, "one new token");
    let refused = world
        .sim
        .requests(Some("aoai-tenant"))
        .iter()
        .filter(|r| r.path.contains("chat/completions"))
        .count();
    assert_eq!(refused, 3, "the first call, the refused try and its retry");
    for _ in 0..5 {
        let (status, _, _) = world.chat("own-sp").await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        world.issued(TENANT_SP.0, OPENAI),
        2,
        "the new token serves on"
    );
    world.assert_log_is_clean();
}

/// The token cache is keyed by the whole credential, secret included: a tenant that names
/// another tenant's service principal (its client id, on the same endpoint) without its secret
/// never rides on the token cached for the other, and the other keeps being served.
#[tokio::test]
async fn a_tenant_cannot_use_a_token_cached_for_another_tenants_principal() {
    let world = world(3600).await;
    let (status, _, answer) = world.chat("own-sp").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let impostor = json!({"slug": "impostor", "display_name": "Impostor",
        "openai": {"isolation": "tenant_provided",
            "endpoint": world.sim.resource_url("aoai-tenant"), "region": "northeurope",
            "auth": principal(TENANT_SP, "a-guess-at-the-secret-9")}});
    let (status, answer) = admin_call(
        &world.http,
        &world.gateway.base,
        Method::POST,
        "/admin/v1/tenants",
        Some(impostor),
    )
    .await;
    assert!(status.is_success(), "{answer}");
    let key = issue_key(&world.http, &world.gateway.base, "impostor").await;
    let response = world
        .http
        .post(format!(
            "{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            world.gateway.base
        ))
        .header("api-key", &key)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AADSTS7000215"),
        "{answer}"
    );
    let served_before = world.sim.requests(Some("aoai-tenant")).len();
    let (status, _, _) = world.chat("own-sp").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        world.sim.requests(Some("aoai-tenant")).len(),
        served_before + 1,
        "only the owner's call reached the resource"
    );
    assert_eq!(
        world.issued(TENANT_SP.0, OPENAI),
        1,
        "one token, the owner's"
    );
    world.assert_log_is_clean();
}
