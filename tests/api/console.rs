//! The admin console over HTTP (the browser tests in tests/console drive it in Chromium):
//! who may open it, sessions shared by replicas through the store, CSRF on the admin API, and
//! the tenants list's search, filters and paging.

use bulkhead_tests::{fresh_postgres_database, TestApp, ADMIN_TOKEN, MASTER_KEY};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; the session cookie (`name=value`) when the console took it.
async fn sign_in(base: &str, token: &str) -> Option<String> {
    let response = client()
        .post(format!("{base}/console/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get(SET_COOKIE)?
        .to_str()
        .ok()?
        .to_owned();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    Some(cookie.split(';').next()?.to_owned())
}

async fn get(base: &str, path: &str, cookie: &str) -> (StatusCode, String) {
    let response = client()
        .get(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The CSRF token the console's pages carry.
fn csrf_of(page: &str) -> String {
    let start = page.find("data-csrf=\"").unwrap() + "data-csrf=\"".len();
    page[start..].split('"').next().unwrap().to_owned()
}

async fn postgres_replica(database: &str) -> TestApp {
    let database = database.to_owned();
    TestApp::spawn_with(move |config| {
        config.database_url = Some(database);
        config.master_key = Some(secrecy::SecretString::from(MASTER_KEY));
    })
    .await
}

#[tokio::test]
async fn tenant_credentials_never_open_the_console() {
    let app = TestApp::spawn().await;
    app.onboard("acme").await;
    let (_, key) = app.key("acme", "read-write").await;
    let (_, token) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/tokens",
            Some(json!({"ttl_seconds": 600})),
        )
        .await;
    let jwt = token["token"].as_str().unwrap().to_owned();
    for secret in [key.as_str(), jwt.as_str()] {
        assert_eq!(
            sign_in(&app.base, secret).await,
            None,
            "no session for a tenant"
        );
        for (name, value) in [
            ("api-key", secret.to_owned()),
            ("authorization", format!("Bearer {secret}")),
        ] {
            for path in ["/console", "/console/tenants", "/console/tenants/acme"] {
                let response = client()
                    .get(app.url(path))
                    .header(name, &value)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
                assert_eq!(response.headers()[LOCATION], "/console/login");
            }
        }
    }
    // A wrong admin token is told so, on the sign-in page, and gets no cookie.
    let refused = client()
        .post(app.url("/console/login"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("That is not the admin token."));
}

#[tokio::test]
async fn a_session_opens_the_admin_api_but_state_changes_need_its_csrf_token() {
    let app = TestApp::spawn().await;
    let cookie = sign_in(&app.base, ADMIN_TOKEN).await.unwrap();
    let (status, page) = get(&app.base, "/console/tenants", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&page);
    let (status, _) = get(&app.base, "/admin/v1/tenants", &cookie).await;
    assert_eq!(status, StatusCode::OK, "reads need no token");
    let onboard = |token: Option<&str>| {
        let mut request = client()
            .post(app.url("/admin/v1/tenants"))
            .header(COOKIE, &cookie)
            .json(&json!({"slug": "via-console", "display_name": "Via console"}));
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        request.send()
    };
    for token in [None, Some("forged"), Some("")] {
        let refused = onboard(token).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = app
        .admin(Method::GET, "/admin/v1/tenants/via-console", None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused request changed nothing"
    );
    assert_eq!(
        onboard(Some(&csrf)).await.unwrap().status(),
        StatusCode::CREATED
    );
    // The console's own routes: a script request without the token is refused too.
    let refused = client()
        .post(app.url("/console/logout"))
        .header(COOKIE, &cookie)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_console_answer_forbids_inline_script_and_framing() {
    let app = TestApp::spawn().await;
    let cookie = sign_in(&app.base, ADMIN_TOKEN).await.unwrap();
    for path in [
        "/console/login",
        "/console",
        "/console/tenants",
        "/console/upstreams",
        "/console/nope",
    ] {
        let response = client()
            .get(app.url(path))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        assert!(!body.contains("<script>"), "{path} has an inline script");
    }
}

#[tokio::test]
async fn a_stored_name_renders_as_text() {
    let app = TestApp::spawn().await;
    let name = "<img src=x onerror=alert(1)><script>alert(2)</script>";
    let (status, _) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"slug": "markup", "display_name": name})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let cookie = sign_in(&app.base, ADMIN_TOKEN).await.unwrap();
    for path in [
        "/console/tenants",
        "/console/tenants/markup",
        "/console/tenants?q=%3Cimg",
    ] {
        let (_, page) = get(&app.base, path, &cookie).await;
        assert!(!page.contains("<img src=x"), "{path}");
        assert!(!page.contains("<script>alert"), "{path}");
        assert!(
            page.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_tenants_list_searches_filters_and_pages_on_the_server() {
    let app = TestApp::spawn().await;
    let mut tenants = Vec::new();
    for i in 0..120 {
        tenants.push(json!({"slug": format!("t{i:03}"), "display_name": format!("Tenant {i}")}));
    }
    tenants.push(
        json!({"slug": "zeta", "display_name": "Zeta Corp", "openai": {"isolation": "shared"}}),
    );
    let (status, body) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants:batch",
            Some(json!({"tenants": tenants})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    app.admin(
        Method::PATCH,
        "/admin/v1/tenants/t007",
        Some(json!({"status": "suspended"})),
    )
    .await;
    let cookie = sign_in(&app.base, ADMIN_TOKEN).await.unwrap();
    let rows = |page: &str| page.matches("<tr><td><a href=\"/console/tenants/").count();
    let (_, first) = get(&app.base, "/console/tenants", &cookie).await;
    assert!(first.contains("121 tenants · page 1 of 3"), "counts");
    assert_eq!(rows(&first), 50);
    assert!(first.contains(">t000<") && first.contains(">t049<") && !first.contains(">t050<"));
    let (_, third) = get(&app.base, "/console/tenants?page=3", &cookie).await;
    assert_eq!(rows(&third), 21);
    assert!(third.contains(">t100<") && third.contains(">zeta<"));
    let (_, by_name) = get(&app.base, "/console/tenants?q=zeta+corp", &cookie).await;
    assert_eq!(rows(&by_name), 1, "search in display names, any case");
    let (_, suspended) = get(&app.base, "/console/tenants?status=suspended", &cookie).await;
    assert_eq!(rows(&suspended), 1);
    assert!(suspended.contains(">t007<"));
    let (_, shared) = get(
        &app.base,
        "/console/tenants?placement=openai%3Ashared",
        &cookie,
    )
    .await;
    assert_eq!(rows(&shared), 1);
    assert!(shared.contains(">zeta<"));
    let (status, past_end) = get(&app.base, "/console/tenants?page=99&status=bogus", &cookie).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a bad filter matches nothing rather than failing"
    );
    assert!(past_end.contains("0 tenants"));
}

#[tokio::test]
async fn a_session_is_served_by_every_replica_and_signing_out_on_one_ends_it_on_all() {
    let database = fresh_postgres_database().await;
    let a = postgres_replica(&database).await;
    let b = postgres_replica(&database).await;
    let cookie = sign_in(&a.base, ADMIN_TOKEN).await.unwrap();
    let (status, page) = get(&b.base, "/console/tenants", &cookie).await;
    assert_eq!(status, StatusCode::OK, "replica b serves a's session");
    let csrf = csrf_of(&page);
    let out = client()
        .post(b.url("/console/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    for replica in [&a, &b] {
        let (status, _) = get(&replica.base, "/console/tenants", &cookie).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "signed out everywhere");
        let (status, _) = get(&replica.base, "/admin/v1/tenants", &cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_session_opened_with_a_rotated_admin_token_opens_nothing() {
    let database = fresh_postgres_database().await;
    let before = postgres_replica(&database).await;
    let cookie = sign_in(&before.base, ADMIN_TOKEN).await.unwrap();
    let (status, _) = get(&before.base, "/console", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    // The same store, served with a new admin token (a rotation after a leak).
    let rotated = {
        let database = database.clone();
        TestApp::spawn_with(move |config| {
            config.database_url = Some(database);
            config.master_key = Some(secrecy::SecretString::from(MASTER_KEY));
            config.admin_token = Some(secrecy::SecretString::from(
                "a-rotated-admin-token-0123456789",
            ));
        })
        .await
    };
    let (status, _) = get(&rotated.base, "/console", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = get(&rotated.base, "/admin/v1/tenants", &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_gateway_behind_https_can_always_mark_the_cookie_secure() {
    let app = TestApp::spawn_with(|config| config.console_secure_cookie = true).await;
    let response = client()
        .post(app.url("/console/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-bulkhead_console="), "{cookie}");
    assert!(
        cookie.contains("; Secure") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let (status, _) = get(&app.base, "/console", &pair).await;
    assert_eq!(status, StatusCode::OK);
    let plain = pair.replacen("__Host-", "", 1);
    let (status, _) = get(&app.base, "/console", &plain).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "only the __Host- name opens it"
    );
}

#[tokio::test]
async fn guessing_the_admin_token_closes_sign_in_for_the_minute() {
    let app = TestApp::spawn().await;
    for i in 0..20 {
        assert_eq!(sign_in(&app.base, &format!("guess-{i}")).await, None);
    }
    let refused = client()
        .post(app.url("/console/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    // The admin API itself is not affected.
    let (status, _) = app.admin(Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(status, StatusCode::OK);
}
