//! What the data plane does with bodies it must not act on: a key named twice anywhere in a
//! JSON body (the gateway and Azure could read different values) is a 400 in Azure's shape on
//! every OpenAI and Search route, and nothing reaches Azure.

use azure_sim::{DeploymentConfig, ResourceConfig, SearchServiceConfig, Sim, SimConfig, SimHandle};
use bulkhead_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub struct World {
    pub app: TestApp,
    pub sim: SimHandle,
    pub key: String,
}

/// One tenant on a shared OpenAI pool (`gpt-4o`, `emb`) and a shared search index (`docs`).
pub async fn world() -> World {
    let sim = Sim::start(
        SimConfig::default()
            .with_resource(
                ResourceConfig::new("aoai", "eastus", "key-of-aoai")
                    .with_deployment(DeploymentConfig::new("gpt-4o", "gpt-4o"))
                    .with_deployment(DeploymentConfig::new("emb", "text-embedding-3-small")),
            )
            .with_search_service(SearchServiceConfig::new("srch", "eastus", "admin", "query")),
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
    post(
        "/admin/v1/openai/resources",
        json!({"name": "aoai", "endpoint": sim.resource_url("aoai"), "region": "eastus",
               "api_key": "key-of-aoai"}),
    )
    .await;
    for (name, model) in [("gpt-4o", "gpt-4o"), ("emb", "text-embedding-3-small")] {
        post(
            "/admin/v1/openai/deployments",
            json!({"resource": "aoai", "name": name, "model": model, "capacity_tpm": 100000}),
        )
        .await;
        post(
            "/admin/v1/openai/pools",
            json!({"alias": name, "members": [{"deployment": format!("aoai/{name}")}]}),
        )
        .await;
    }
    post(
        "/admin/v1/search/services",
        json!({"name": "srch", "endpoint": sim.resource_url("srch"), "region": "eastus",
               "api_key": "admin"}),
    )
    .await;
    post(
        "/admin/v1/search/index-templates",
        json!({"name": "docs", "fields": [
            {"name": "id", "type": "Edm.String", "key": true, "filterable": true},
            {"name": "title", "type": "Edm.String", "searchable": true, "filterable": true}],
            "suggesters": [{"name": "sg", "searchMode": "analyzingInfixMatching",
                            "sourceFields": ["title"]}]}),
    )
    .await;
    let (status, answer) = app
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            Some(
                json!({"slug": "acme", "display_name": "Acme", "openai": {"isolation": "shared"},
                   "search": {"isolation": "shared_index", "service": "srch"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let key = app.key("acme", "read-write").await.1;
    World { app, sim, key }
}

impl World {
    /// Sends `body` as it is (bytes, not re-serialised) and returns the status and JSON body.
    pub async fn raw(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        let mut request = self
            .app
            .http
            .request(method, self.app.url(path))
            .header("api-key", &self.key);
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text:?}"));
        (status, value)
    }
}

const CHAT: &str = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
const EMBED: &str = "/openai/deployments/emb/embeddings?api-version=2024-10-21";
const SEARCH: &str = "/indexes/docs/docs/search?api-version=2024-07-01";
const INDEX: &str = "/indexes/docs/docs/index?api-version=2024-07-01";
const SUGGEST: &str = "/indexes('docs')/docs/search.post.suggest?api-version=2024-07-01";

#[tokio::test]
async fn a_key_named_twice_anywhere_is_a_400_on_every_data_plane_route_and_nothing_goes_upstream() {
    let w = world().await;
    let long = "word ".repeat(2000);
    let m = |content: &str| format!(r#"{{"role":"user","content":"{content}"}}"#);
    // (route, the same call unambiguous, the ambiguous one)
    let cases: Vec<(&str, String, String)> = vec![
        (
            CHAT,
            format!(r#"{{"messages":[{}],"max_tokens":5}}"#, m("hi")),
            format!(
                r#"{{"messages":[{}],"max_tokens":5,"messages":[{}]}}"#,
                m("hi"),
                m(&long)
            ),
        ),
        (
            CHAT,
            format!(r#"{{"messages":[{}],"max_tokens":5}}"#, m("hi")),
            r#"{"messages":[{"role":"user","content":"hi","content":"bye"}],"max_tokens":5}"#
                .to_owned(),
        ),
        (
            "/openai/v1/chat/completions",
            format!(
                r#"{{"model":"gpt-4o","messages":[{}],"temperature":1}}"#,
                m("hi")
            ),
            format!(
                r#"{{"model":"gpt-4o","messages":[{}],"temperature":1,"temperature":2}}"#,
                m("hi")
            ),
        ),
        (
            "/v1/chat/completions",
            format!(r#"{{"model":"gpt-4o","messages":[{}]}}"#, m("hi")),
            format!(
                r#"{{"model":"gpt-4o","messages":[{}],"stream":false,"stream":true}}"#,
                m("hi")
            ),
        ),
        (
            EMBED,
            r#"{"input":"a"}"#.to_owned(),
            r#"{"input":"a","input":"b"}"#.to_owned(),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"emb","input":"a"}"#.to_owned(),
            r#"{"model":"emb","input":"a","model":"gpt-4o"}"#.to_owned(),
        ),
        (
            "/openai/v1/responses",
            r#"{"model":"gpt-4o","input":"a"}"#.to_owned(),
            r#"{"model":"gpt-4o","input":"a","input":"b"}"#.to_owned(),
        ),
        (
            "/v1/tokenize",
            format!(r#"{{"model":"gpt-4o","messages":[{}]}}"#, m("hi")),
            format!(
                r#"{{"model":"gpt-4o","messages":[{}],"messages":[{}]}}"#,
                m("hi"),
                m(&long)
            ),
        ),
        (
            INDEX,
            r#"{"value":[{"@search.action":"upload","id":"1","title":"one"}]}"#.to_owned(),
            r#"{"value":[{"@search.action":"upload","id":"1","title":"one","id":"2"}]}"#.to_owned(),
        ),
        (
            SEARCH,
            r#"{"search":"*","filter":"title eq 'one'"}"#.to_owned(),
            r#"{"search":"*","filter":"title eq 'one'","filter":"true"}"#.to_owned(),
        ),
        (
            SUGGEST,
            r#"{"search":"on","suggesterName":"sg"}"#.to_owned(),
            r#"{"search":"on","suggesterName":"sg","search":"tw"}"#.to_owned(),
        ),
    ];
    for (route, good, ambiguous) in &cases {
        let (status, answer) = w.raw(Method::POST, route, good).await;
        assert!(status.is_success(), "{route}: the control call: {answer}");
        w.sim.reset();
        let (status, answer) = w.raw(Method::POST, route, ambiguous).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{route}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("duplicate"),
            "{route}: Azure's error shape naming the problem: {answer}"
        );
        assert!(answer["error"]["code"].is_string(), "{route}: {answer}");
        assert!(
            w.sim.requests(None).is_empty(),
            "{route}: an ambiguous body reached Azure"
        );
    }
    // A query parameter named twice on a search GET.
    let (status, answer) = w
        .raw(
            Method::GET,
            "/indexes/docs/docs?api-version=2024-07-01&search=*&$top=1&$top=1000",
            "",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'$top' is given more than once"));
}

/// The status, content type and JSON body of a request (the body must be JSON).
async fn answer(response: reqwest::Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("not JSON ({status}, {content_type}): {text:?}"));
    (status, content_type, value)
}

#[tokio::test]
async fn framework_rejections_answer_in_azures_shape_on_the_data_plane() {
    let w = world().await;
    let http = &w.app.http;
    let too_big = format!(r#"{{"input":"{}"}}"#, "a".repeat(33 * 1024 * 1024));
    let cases = [
        (
            "a body over the limit",
            http.post(w.app.url(EMBED))
                .header("content-type", "application/json")
                .body(too_big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "32 MiB",
        ),
        (
            "GET on a POST route",
            http.get(w.app.url(CHAT)),
            StatusCode::METHOD_NOT_ALLOWED,
            "accepts POST",
        ),
        (
            "DELETE on a POST route",
            http.delete(w.app.url("/openai/v1/chat/completions")),
            StatusCode::METHOD_NOT_ALLOWED,
            "The method DELETE is not allowed",
        ),
        (
            "a path segment that is not UTF-8",
            http.post(
                w.app
                    .url("/openai/deployments/%FF%FE/chat/completions?api-version=2024-10-21"),
            )
            .header("content-type", "application/json")
            .body(r#"{"messages":[]}"#),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "a body that is not JSON",
            http.post(w.app.url(CHAT))
                .header("content-type", "application/json")
                .body("not json"),
            StatusCode::BAD_REQUEST,
            "JSON",
        ),
        (
            "an unknown route",
            http.get(w.app.url("/openai/nothing-here")),
            StatusCode::NOT_FOUND,
            "Resource not found",
        ),
        (
            "a usage query that does not parse",
            http.get(w.app.url("/v1/usage?from=yesterday&from=today")),
            StatusCode::BAD_REQUEST,
            "",
        ),
    ];
    for (case, request, status, says) in cases {
        let (got, content_type, body) =
            answer(request.header("api-key", &w.key).send().await.unwrap()).await;
        assert_eq!(got, status, "{case}: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "{case}: {content_type}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(body["error"]["code"].is_string(), "{case}: {body}");
        assert!(
            !message.is_empty() && message.contains(says),
            "{case}: {body}"
        );
    }
}

#[tokio::test]
async fn framework_rejections_answer_in_the_admin_envelope_on_admin_routes() {
    let w = world().await;
    let http = &w.app.http;
    let admin = format!("Bearer {}", bulkhead_tests::ADMIN_TOKEN);
    let too_big = json!({"slug": "big", "display_name": "a".repeat(3 * 1024 * 1024)}).to_string();
    let cases = [
        (
            "a body over the limit",
            http.post(w.app.url("/admin/v1/tenants"))
                .header("content-type", "application/json")
                .body(too_big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "a method the route does not take",
            http.put(w.app.url("/admin/v1/tenants")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "an unknown admin route",
            http.get(w.app.url("/admin/v1/nothing")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (case, request, status, code) in cases {
        let (got, content_type, body) = answer(
            request
                .header("authorization", &admin)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got, status, "{case}: {body}");
        assert!(content_type.starts_with("application/json"), "{case}");
        assert_eq!(body["error"]["code"], code, "{case}: {body}");
        assert!(body["error"]["message"].is_string(), "{case}: {body}");
    }
    let (status, _) = w
        .app
        .admin(Method::GET, "/admin/v1/tenants/big", None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the refused body changed nothing"
    );
}
