//! Entra ID over real HTTP(S): the emulator in-process with its TLS listener, called with
//! reqwest trusting the emulator's CA — the way a Rust test of the gateway would use it.
//! Token expiry is reached by advancing the emulator's clock, never by sleeping.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly too"
)]

use azure_sim::{
    DeploymentConfig, EntraConfig, ManagedIdentityConfig, PrincipalConfig, ResourceConfig,
    SearchServiceConfig, Sim, SimConfig, SimHandle,
};
use serde_json::{json, Value};

const TENANT: &str = "0d9b6a5e-1111-4222-8333-444455556666";
const APP: &str = "a0000000-0000-4000-8000-000000000001";
const APP_OID: &str = "a0000000-0000-4000-8000-0000000000a1";
const SECRET: &str = "rust-test-secret";
const ROLELESS: &str = "b0000000-0000-4000-8000-000000000002";
const ROLELESS_OID: &str = "b0000000-0000-4000-8000-0000000000b2";
const WORKLOAD: &str = "c0000000-0000-4000-8000-000000000003";
const WORKLOAD_OID: &str = "c0000000-0000-4000-8000-0000000000c3";
const ISSUER: &str = "https://oidc.sim.local/cluster";
const SUBJECT: &str = "system:serviceaccount:ns:sa";
const MI_CLIENT: &str = "d0000000-0000-4000-8000-000000000004";
const MI_OID: &str = "d0000000-0000-4000-8000-0000000000d4";
const COGNITIVE: &str = "https://cognitiveservices.azure.com/.default";
const SEARCH: &str = "https://search.azure.com/.default";

async fn sim() -> SimHandle {
    let entra = EntraConfig::default()
        .with_principal(PrincipalConfig::new(TENANT, APP, APP_OID).with_secret(SECRET))
        .with_principal(PrincipalConfig::new(TENANT, ROLELESS, ROLELESS_OID).with_secret(SECRET))
        .with_principal(
            PrincipalConfig::new(TENANT, WORKLOAD, WORKLOAD_OID).with_federated(ISSUER, SUBJECT),
        )
        .with_managed_identity(
            ManagedIdentityConfig::new(TENANT, "hdr").with_system_assigned(MI_CLIENT, MI_OID),
        );
    let keyless = ResourceConfig::new("aoai-keyless", "eastus", "keyless-key")
        .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o"))
        .with_local_auth_disabled()
        .with_role_assignment(APP_OID)
        .with_role_assignment(WORKLOAD_OID)
        .with_role_assignment(MI_OID);
    let keyed = ResourceConfig::new("aoai-keyed", "eastus", "keyed-key")
        .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o"))
        .with_role_assignment(APP_OID);
    let search = SearchServiceConfig::new("search-keyless", "eastus", "admin", "query")
        .with_local_auth_disabled()
        .with_role_assignment(APP_OID);
    Sim::start_with_tls(
        SimConfig::default()
            .with_entra(entra)
            .with_resource(keyless)
            .with_resource(keyed)
            .with_search_service(search),
    )
    .await
    .unwrap()
}

fn https_client(sim: &SimHandle) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(sim.tls_ca_pem().unwrap().as_bytes()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

async fn token_response(sim: &SimHandle, form: &[(&str, &str)]) -> (reqwest::StatusCode, Value) {
    let url = format!("{}/{TENANT}/oauth2/v2.0/token", sim.tls_base_url().unwrap());
    let response = https_client(sim).post(url).form(form).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn secret_token(sim: &SimHandle, client_id: &str, scope: &str) -> String {
    let (status, body) = token_response(
        sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", SECRET),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn chat(sim: &SimHandle, resource: &str, auth: (&str, String)) -> (u16, Value) {
    let url = format!(
        "{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        sim.tls_resource_url(resource).unwrap()
    );
    let response = https_client(sim)
        .post(url)
        .header(auth.0, auth.1)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

const BAD_TOKEN: &str = "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired.";

#[tokio::test]
async fn a_client_secret_token_opens_a_keyless_resource_over_tls_and_is_counted_once() {
    let sim = sim().await;
    let token = secret_token(&sim, APP, COGNITIVE).await;
    for _ in 0..2 {
        let (status, body) = chat(
            &sim,
            "aoai-keyless",
            ("authorization", format!("Bearer {token}")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let issued: Value = reqwest::get(format!("{}/_sim/entra/issued", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        issued,
        json!([{"client_id": APP, "resource": "https://cognitiveservices.azure.com", "count": 1}])
    );
}

/// A token request form and the status, `error` and AADSTS code Entra answers it with.
type TokenCase = (
    &'static [(&'static str, &'static str)],
    u16,
    &'static str,
    u64,
);

#[tokio::test]
async fn token_endpoint_errors_are_entras_and_never_echo_the_secret() {
    let sim = sim().await;
    let cases: &[TokenCase] = &[
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", "wrong-secret"),
                ("scope", COGNITIVE),
            ],
            401,
            "invalid_client",
            7000215,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", "wrong-secret"),
                ("scope", COGNITIVE),
            ],
            400,
            "unauthorized_client",
            700016,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", SECRET),
                ("scope", "https://cognitiveservices.azure.com"),
            ],
            400,
            "invalid_scope",
            1002012,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", SECRET),
                ("scope", "not a scope"),
            ],
            400,
            "invalid_scope",
            70011,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", SECRET),
                ("scope", "https://vault.azure.net/.default"),
            ],
            400,
            "invalid_resource",
            500011,
        ),
        (
            &[("grant_type", "password"), ("client_id", APP)],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("scope", COGNITIVE),
            ],
            401,
            "invalid_client",
            7000218,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", WORKLOAD),
                ("scope", COGNITIVE),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", "not-a-jwt"),
            ],
            400,
            "invalid_request",
            50027,
        ),
    ];
    for (form, status, error, code) in cases {
        let (got_status, body) = token_response(&sim, form).await;
        assert_eq!(got_status.as_u16(), *status, "{body}");
        assert_eq!(body["error"], *error, "{body}");
        assert_eq!(body["error_codes"], json!([code]), "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        assert!(!body.to_string().contains("wrong-secret"));
        assert!(!body.to_string().contains(SECRET));
    }
}

#[tokio::test]
async fn federated_assertions_are_matched_on_issuer_subject_and_lifetime() {
    let sim = sim().await;
    let assertion_form = |assertion: String| {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", WORKLOAD.to_owned()),
            ("scope", COGNITIVE.to_owned()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion", assertion),
        ]
    };
    let post = |form: Vec<(&'static str, String)>| {
        let client = https_client(&sim);
        let url = format!("{}/{TENANT}/oauth2/v2.0/token", sim.tls_base_url().unwrap());
        async move {
            let response = client.post(url).form(&form).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let good = sim.federated_token(ISSUER, SUBJECT).unwrap();
    let (status, body) = post(assertion_form(good.clone())).await;
    assert_eq!(status, 200, "{body}");

    let (_, body) = post(assertion_form(
        sim.federated_token("https://elsewhere", SUBJECT).unwrap(),
    ))
    .await;
    assert_eq!(body["error_codes"], json!([700211]));
    let (_, body) = post(assertion_form(
        sim.federated_token(ISSUER, "system:serviceaccount:x:y")
            .unwrap(),
    ))
    .await;
    assert_eq!(body["error_codes"], json!([700213]));

    sim.advance_clock(std::time::Duration::from_secs(3601));
    let (status, body) = post(assertion_form(good)).await;
    assert_eq!(
        (status, &body["error_codes"]),
        (400, &json!([700024])),
        "{body}"
    );
}

#[tokio::test]
async fn openai_refusals_are_azures_for_each_case() {
    let sim = sim().await;
    // A key on a keyless resource.
    let (status, body) = chat(&sim, "aoai-keyless", ("api-key", "keyless-key".into())).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "AuthenticationTypeDisabled");
    // A token for another audience.
    let search_token = secret_token(&sim, APP, SEARCH).await;
    let (status, body) = chat(
        &sim,
        "aoai-keyless",
        ("authorization", format!("Bearer {search_token}")),
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"error": {"code": "401", "message": BAD_TOKEN}}))
    );
    // A garbage JWT.
    let (status, _) = chat(
        &sim,
        "aoai-keyless",
        ("authorization", "Bearer aaa.bbb.ccc".into()),
    )
    .await;
    assert_eq!(status, 401);
    // A principal without a role.
    let roleless = secret_token(&sim, ROLELESS, COGNITIVE).await;
    let (status, body) = chat(
        &sim,
        "aoai-keyless",
        ("authorization", format!("Bearer {roleless}")),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "PermissionDenied");
    assert_eq!(
        body["error"]["message"],
        format!("The principal `{ROLELESS_OID}` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{{deployment-id}}/chat/completions` operation.")
    );
    // An expired token.
    let token = secret_token(&sim, APP, COGNITIVE).await;
    sim.advance_clock(std::time::Duration::from_secs(3600));
    let (status, body) = chat(
        &sim,
        "aoai-keyless",
        ("authorization", format!("Bearer {token}")),
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"error": {"code": "401", "message": BAD_TOKEN}}))
    );
    // Keys (also sent as a bearer value) and tokens both open a keyed resource.
    let (status, _) = chat(
        &sim,
        "aoai-keyed",
        ("authorization", "Bearer keyed-key".into()),
    )
    .await;
    assert_eq!(status, 200);
    let token = secret_token(&sim, APP, COGNITIVE).await;
    let (status, _) = chat(
        &sim,
        "aoai-keyed",
        ("authorization", format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn search_accepts_role_holders_tokens_and_refuses_keys_and_others() {
    let sim = sim().await;
    let url = format!(
        "{}/indexes?api-version=2024-07-01",
        sim.tls_resource_url("search-keyless").unwrap()
    );
    let client = https_client(&sim);
    let get = |auth: (&'static str, String)| client.get(&url).header(auth.0, auth.1).send();
    let token = secret_token(&sim, APP, SEARCH).await;
    assert_eq!(
        get(("authorization", format!("Bearer {token}")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(("api-key", "admin".into())).await.unwrap().status(),
        403
    );
    let roleless = secret_token(&sim, ROLELESS, SEARCH).await;
    assert_eq!(
        get(("authorization", format!("Bearer {roleless}")))
            .await
            .unwrap()
            .status(),
        403
    );
    let wrong_audience = secret_token(&sim, APP, COGNITIVE).await;
    let response = get(("authorization", format!("Bearer {wrong_audience}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer "));
}

#[tokio::test]
async fn imds_requires_the_metadata_header_and_knows_its_identities() {
    let sim = sim().await;
    let base = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://cognitiveservices.azure.com",
        sim.base_url()
    );
    let client = reqwest::Client::new();
    let response = client.get(&base).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );
    let body: Value = client
        .get(&base)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["client_id"], MI_CLIENT);
    assert!(body["expires_on"].is_string() && body["expires_in"].is_string());
    let response = client
        .get(format!("{base}&client_id=unknown"))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error_description"],
        "Identity not found"
    );
    // The outage switch turns the endpoint off, and reset turns it back on.
    sim.entra().set_down(true);
    let response = client
        .get(&base)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    sim.reset();
    let response = client
        .get(&base)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn discovery_points_back_at_the_listener_the_request_came_in_on() {
    let sim = sim().await;
    let tls = sim.tls_base_url().unwrap();
    let config: Value = https_client(&sim)
        .get(format!(
            "{tls}/{TENANT}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config["token_endpoint"],
        format!("{tls}/{TENANT}/oauth2/v2.0/token")
    );
    let plain: Value = reqwest::get(format!(
        "{}/{TENANT}/v2.0/.well-known/openid-configuration",
        sim.base_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        plain["token_endpoint"],
        format!("{}/{TENANT}/oauth2/v2.0/token", sim.base_url())
    );
    let jwks: Value = reqwest::get(format!("{}/common/discovery/keys", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    for field in ["kty", "use", "kid", "n", "e", "alg"] {
        assert!(key[field].is_string(), "{field} missing in {key}");
    }
    let unknown = reqwest::get(format!(
        "{}/not-a-tenant/v2.0/.well-known/openid-configuration",
        sim.base_url()
    ))
    .await
    .unwrap();
    assert_eq!(unknown.status(), 400);
}
