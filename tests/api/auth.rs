//! The authentication matrix of the data plane: API keys, gateway tokens and an external
//! identity provider's tokens, each accepted only when everything about it is right.

use std::time::Duration;

use axum::routing::get;
use bulkhead_tests::{TestApp, JWT_SECRET};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const IDP_ISSUER: &str = "https://login.example/idp";
const IDP_AUDIENCE: &str = "api://bulkhead";

/// Serves the fixture JWKS on port 0, as an identity provider would.
async fn identity_provider() -> String {
    let jwks: Value = serde_json::from_str(include_str!("../fixtures/idp-jwks.json")).unwrap();
    let app = axum::Router::new().route("/jwks", get(move || async move { axum::Json(jwks) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/jwks")
}

async fn app_with_idp() -> TestApp {
    let jwks = identity_provider().await;
    TestApp::spawn_with(|config| {
        config.jwks_url = Some(jwks);
        config.jwt_external_issuer = Some(IDP_ISSUER.into());
        config.jwt_external_audience = Some(IDP_AUDIENCE.into());
    })
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(include_bytes!("../fixtures/idp-rsa.pem")).unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(include_bytes!("../fixtures/idp-ec.pem")).unwrap()
        }
        other => panic!("{other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(ToOwned::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn gateway_claims(tenant: &str) -> Value {
    json!({"iss": "bulkhead", "aud": "bulkhead", "tid": tenant, "scope": "read-write",
           "iat": now(), "exp": now() + 300})
}

fn idp_claims(tenant: &str) -> Value {
    json!({"iss": IDP_ISSUER, "aud": IDP_AUDIENCE, "tid": tenant, "iat": now(), "exp": now() + 300})
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn assert_unauthenticated(app: &TestApp, headers: &[(&str, &str)], case: &str) {
    let (status, body) = app.me(headers).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    assert_eq!(
        body["error"]["code"], "401",
        "{case}: Azure's error shape: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{case}");
}

#[tokio::test]
async fn api_keys_work_in_either_header_and_api_key_wins() {
    let app = TestApp::spawn().await;
    let acme = app.onboard("acme").await;
    let beta = app.onboard("beta").await;
    let (_, acme_key) = app.key("acme", "read-write").await;
    let (_, beta_key) = app.key("beta", "read-write").await;
    let (status, me) = app.me(&[("api-key", &acme_key)]).await;
    assert_eq!(
        (status, me["id"].as_str()),
        (StatusCode::OK, Some(acme.as_str()))
    );
    let (status, me) = app.me(&[("authorization", &bearer(&beta_key))]).await;
    assert_eq!(
        (status, me["id"].as_str()),
        (StatusCode::OK, Some(beta.as_str()))
    );
    let (status, me) = app
        .me(&[
            ("api-key", &acme_key),
            ("authorization", &bearer(&beta_key)),
        ])
        .await;
    assert_eq!(
        (status, me["id"].as_str()),
        (StatusCode::OK, Some(acme.as_str())),
        "api-key wins"
    );
    assert_unauthenticated(
        &app,
        &[
            ("api-key", "bk_wrong"),
            ("authorization", &bearer(&beta_key)),
        ],
        "a bad api-key is not rescued by a good bearer",
    )
    .await;
}

#[tokio::test]
async fn missing_unknown_revoked_and_expired_keys_are_401() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    assert_unauthenticated(&app, &[], "no credential").await;
    assert_unauthenticated(&app, &[("api-key", "bk_not-a-real-key")], "unknown key").await;
    assert_unauthenticated(
        &app,
        &[("authorization", "Basic Zm9vOmJhcg==")],
        "basic auth",
    )
    .await;
    assert_unauthenticated(
        &app,
        &[("authorization", "Bearer garbage")],
        "garbage bearer",
    )
    .await;
    let (id, key) = app.key("acme", "read").await;
    app.admin(
        Method::DELETE,
        &format!("/admin/v1/tenants/acme/keys/{id}"),
        None,
    )
    .await;
    assert_unauthenticated(&app, &[("api-key", &key)], "revoked key").await;
    let expires = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"name": "short", "expires_at": expires})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let short = body["key"].as_str().unwrap().to_owned();
    assert_eq!(app.me(&[("api-key", &short)]).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_unauthenticated(&app, &[("api-key", &short)], "expired key").await;
}

#[tokio::test]
async fn suspended_tenants_are_403_and_read_keys_cannot_write() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    let (_, read) = app.key("acme", "read").await;
    let (_, write) = app.key("acme", "read-write").await;
    for path in [
        "/indexes/docs/docs/index",
        "/indexes('docs')/docs/search.index",
    ] {
        let response = app
            .http
            .post(app.url(path))
            .header("api-key", &read)
            .json(&json!({"value": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "403");
        let response = app
            .http
            .post(app.url(path))
            .header("api-key", &write)
            .json(&json!({"value": []}))
            .send()
            .await
            .unwrap();
        assert_ne!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{path}: a read-write key passes authentication"
        );
    }
    app.admin(
        Method::PATCH,
        "/admin/v1/tenants/acme",
        Some(json!({"status": "suspended"})),
    )
    .await;
    let (status, body) = app.me(&[("api-key", &write)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "403");
    app.admin(
        Method::PATCH,
        "/admin/v1/tenants/acme",
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(app.me(&[("api-key", &write)]).await.0, StatusCode::OK);
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `token` with its payload replaced by `claims`, the header and signature kept.
fn swapped_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(claims), parts[2])
}

/// Every way a token can be wrong, for both families: the gateway's own HS256 tokens and
/// the identity provider's RS256/ES256 tokens. Each must be a 401 in Azure's shape; the
/// well-formed tokens beside them (including `nbf` in the past, or a few seconds ahead
/// within the clock leeway) must pass, so the matrix cannot pass by refusing everything.
#[tokio::test]
async fn every_token_wrong_in_any_way_is_refused_and_only_right_ones_pass() {
    let app = app_with_idp().await;
    let acme = app.onboard("acme").await;
    type Claims = fn(&str) -> Value;
    let families: [(&str, Algorithm, Option<&str>, Claims); 3] = [
        ("gateway HS256", Algorithm::HS256, None, gateway_claims),
        ("IdP RS256", Algorithm::RS256, Some("rsa-1"), idp_claims),
        ("IdP ES256", Algorithm::ES256, Some("ec-1"), idp_claims),
    ];
    for (family, alg, kid, claims) in families {
        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = claims(&acme);
            change(&mut c);
            sign(alg, kid, &c)
        };
        // Right: accepted.
        let right = [
            ("plain", with(&|_| {})),
            ("nbf in the past", with(&|c| c["nbf"] = json!(now() - 60))),
            (
                "nbf within the leeway",
                with(&|c| c["nbf"] = json!(now() + 10)),
            ),
            ("tenant by slug", with(&|c| c["tid"] = json!("acme"))),
        ];
        for (case, token) in right {
            let (status, me) = app.me(&[("authorization", &bearer(&token))]).await;
            assert_eq!(
                (status, me["slug"].as_str()),
                (StatusCode::OK, Some("acme")),
                "{family}, {case}: {me}"
            );
        }
        // Wrong: refused.
        let good = with(&|_| {});
        let public_jwks = include_str!("../fixtures/idp-jwks.json");
        let confused = jsonwebtoken::encode(
            &Header {
                kid: Some("rsa-1".into()),
                ..Header::new(Algorithm::HS256)
            },
            &claims(&acme),
            &EncodingKey::from_secret(public_jwks.as_bytes()),
        )
        .unwrap();
        let confused_pem = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(&acme),
            &EncodingKey::from_secret(include_bytes!("../fixtures/idp-rsa.pem")),
        )
        .unwrap();
        let another_key = match alg {
            Algorithm::HS256 => jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(&acme),
                &EncodingKey::from_secret(b"not-the-gateway-secret-at-all-0123"),
            )
            .unwrap(),
            // A key the JWKS does not hold, under a kid it does.
            _ => {
                let mut header = Header::new(Algorithm::HS384);
                header.kid = kid.map(ToOwned::to_owned);
                jsonwebtoken::encode(
                    &header,
                    &claims(&acme),
                    &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
                )
                .unwrap()
            }
        };
        let mut unknown_kid = Header::new(alg);
        unknown_kid.kid = Some("rsa-9".into());
        let unknown_kid = match alg {
            Algorithm::HS256 => String::new(), // no kids on the gateway's own tokens
            _ => jsonwebtoken::encode(
                &unknown_kid,
                &claims(&acme),
                &match alg {
                    Algorithm::RS256 => {
                        EncodingKey::from_rsa_pem(include_bytes!("../fixtures/idp-rsa.pem"))
                            .unwrap()
                    }
                    _ => {
                        EncodingKey::from_ec_pem(include_bytes!("../fixtures/idp-ec.pem")).unwrap()
                    }
                },
            )
            .unwrap(),
        };
        let mut elevated = claims(&acme);
        elevated["scope"] = json!("read-write admin");
        elevated["tid"] = json!(uuid::Uuid::now_v7().to_string());
        let mut longer = claims(&acme);
        longer["exp"] = json!(now() + 86_400 * 365);
        let wrong = [
            (
                "alg none",
                format!(
                    "{}.{}.",
                    b64(&json!({"alg": "none", "typ": "JWT"})),
                    b64(&claims(&acme))
                ),
            ),
            ("HS256 keyed with the IdP's public JWKS", confused),
            ("HS256 keyed with the IdP's private PEM", confused_pem),
            ("another key", another_key),
            ("unknown kid", unknown_kid),
            ("expired", with(&|c| c["exp"] = json!(now() - 120))),
            (
                "no exp",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
            ("not yet valid", with(&|c| c["nbf"] = json!(now() + 3600))),
            (
                "not yet valid, past the leeway",
                with(&|c| c["nbf"] = json!(now() + 120)),
            ),
            ("wrong audience", with(&|c| c["aud"] = json!("another-api"))),
            (
                "wrong issuer",
                with(&|c| c["iss"] = json!("https://evil.example")),
            ),
            (
                "unknown tenant",
                with(&|c| c["tid"] = json!(uuid::Uuid::now_v7().to_string())),
            ),
            ("unknown tenant slug", with(&|c| c["tid"] = json!("nobody"))),
            (
                "missing tenant claim",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("tid");
                }),
            ),
            (
                "payload swapped onto a valid signature",
                swapped_payload(&good, &elevated),
            ),
            (
                "a longer life swapped onto a valid signature",
                swapped_payload(&good, &longer),
            ),
            ("garbage", "garbage".to_owned()),
            ("three garbage parts", "a.b.c".to_owned()),
            ("empty", String::new()),
        ];
        for (case, token) in wrong {
            if token.is_empty() && case != "empty" {
                continue;
            }
            assert_unauthenticated(
                &app,
                &[("authorization", &bearer(&token))],
                &format!("{family}: {case}"),
            )
            .await;
        }
    }
    // An IdP token without a configured IdP; a gateway token under another gateway's secret.
    let plain = TestApp::spawn_with(|config| config.jwt_secret = None).await;
    let beta = plain.onboard("beta").await;
    for (case, token) in [
        (
            "RS256 without a configured IdP",
            sign(Algorithm::RS256, Some("rsa-1"), &idp_claims(&beta)),
        ),
        (
            "HS256 signed with a secret the gateway does not hold",
            sign(Algorithm::HS256, None, &gateway_claims(&beta)),
        ),
    ] {
        assert_unauthenticated(&plain, &[("authorization", &bearer(&token))], case).await;
    }
}

#[tokio::test]
async fn identity_provider_tokens_without_a_scope_claim_only_read() {
    let app = app_with_idp().await;
    let acme = app.onboard("acme").await;
    let token = sign(Algorithm::RS256, Some("rsa-1"), &idp_claims(&acme));
    let (status, me) = app.me(&[("authorization", &bearer(&token))]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["credential"]["kind"], "token");
    assert_eq!(me["credential"]["scope"], "read");
}

#[tokio::test]
async fn request_ids_are_accepted_when_sane_and_generated_otherwise() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    let response = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id <>")
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    let response = app.http.get(app.url("/v1/me")).send().await.unwrap();
    assert!(
        response.headers().contains_key("x-request-id"),
        "errors carry it too"
    );
}

#[tokio::test]
async fn unknown_routes_are_authenticated_before_they_are_not_found() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    let (_, key) = app.key("acme", "read").await;
    let anonymous = app
        .http
        .get(app.url("/some/unknown/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let known = app
        .http
        .get(app.url("/some/unknown/route"))
        .header("api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(known.status(), StatusCode::NOT_FOUND);
    let admin_unknown = app
        .http
        .get(app.url("/admin/v1/unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin_unknown.status(), StatusCode::UNAUTHORIZED);
    for public in ["/healthz", "/readyz", "/admin/v1/openapi.json"] {
        let response = app.http.get(app.url(public)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{public}");
    }
}
