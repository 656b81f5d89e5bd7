//! Tenant isolation at the front door: a credential of tenant A is A on every route and can
//! never act as, see or touch tenant B.

use bulkhead_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_key_of_tenant_a_can_never_act_as_tenant_b() {
    let app = TestApp::spawn().await;
    let a = app.onboard("tenant-a").await;
    let b = app.onboard("tenant-b").await;
    let (a_key_id, a_key) = app.key("tenant-a", "read-write").await;
    let (_, b_key) = app.key("tenant-b", "read-write").await;

    // A is A, whatever else the request claims.
    let attempts: [&[(&str, &str)]; 4] = [
        &[("api-key", &a_key)],
        &[("api-key", &a_key), ("x-tenant-id", &b)],
        &[("api-key", &a_key), ("x-ms-client-tenant-id", "tenant-b")],
        &[
            ("api-key", &a_key),
            ("authorization", &format!("Bearer {b_key}")),
        ],
    ];
    for headers in attempts {
        let (status, me) = app.me(headers).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["id"], a.as_str(), "{headers:?}");
        assert!(!me.to_string().contains("tenant-b"));
    }
    // A's key opens no admin route, in particular none of B's.
    for (method, path) in [
        (Method::GET, "/admin/v1/tenants/tenant-b".to_owned()),
        (Method::GET, "/admin/v1/tenants/tenant-b/keys".to_owned()),
        (Method::POST, "/admin/v1/tenants/tenant-b/keys".to_owned()),
        (Method::POST, "/admin/v1/tenants/tenant-b/tokens".to_owned()),
        (
            Method::DELETE,
            format!("/admin/v1/tenants/tenant-a/keys/{a_key_id}"),
        ),
        (Method::GET, "/admin/v1/tenants".to_owned()),
    ] {
        for header in ["api-key", "authorization"] {
            let value = if header == "api-key" {
                a_key.clone()
            } else {
                format!("Bearer {a_key}")
            };
            let response = app
                .http
                .request(method.clone(), app.url(&path))
                .header(header, value)
                .json(&json!({"name": "x"}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {header}"
            );
        }
    }
    // B's key id does not revoke anything through A, and A's keys are not listed under B.
    let (_, b_keys) = app
        .admin(Method::GET, "/admin/v1/tenants/tenant-b/keys", None)
        .await;
    assert!(!b_keys.to_string().contains(&a_key_id));
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/admin/v1/tenants/tenant-b/keys/{a_key_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.me(&[("api-key", &a_key)]).await.0, StatusCode::OK);
    // Suspending B leaves A alone, and the other way round.
    app.admin(
        Method::PATCH,
        "/admin/v1/tenants/tenant-b",
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(app.me(&[("api-key", &a_key)]).await.0, StatusCode::OK);
    assert_eq!(
        app.me(&[("api-key", &b_key)]).await.0,
        StatusCode::FORBIDDEN
    );
    // Offboarding B kills B's keys only.
    app.admin(Method::DELETE, "/admin/v1/tenants/tenant-b", None)
        .await;
    assert_eq!(
        app.me(&[("api-key", &b_key)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me(&[("api-key", &a_key)]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_token_issued_for_tenant_a_is_tenant_a() {
    let app = TestApp::spawn().await;
    let a = app.onboard("tenant-a").await;
    app.onboard("tenant-b").await;
    let (_, body) = app
        .admin(Method::POST, "/admin/v1/tenants/tenant-a/tokens", None)
        .await;
    let token = body["token"].as_str().unwrap();
    let (status, me) = app
        .me(&[
            ("authorization", &format!("Bearer {token}")),
            ("x-tenant-id", "tenant-b"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], a.as_str());
}
