//! The Azure AI Search data plane against azure-sim: each placement reaches its own physical
//! index with the service's admin key, and in a shared index no tenant sees, counts, facets,
//! suggests, autocompletes, looks up, merges or deletes another tenant's documents through
//! any route or any hostile input. Offboarding leaves nothing of the tenant behind.

use azure_sim::{fingerprint, FaultSpec, SearchServiceConfig, Sim, SimConfig, SimHandle};
use bulkhead_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const V: &str = "api-version=2024-07-01";
const SHARED: &str = "search-shared-1";
const OWN: &str = "search-own";

struct World {
    app: TestApp,
    sim: SimHandle,
    keys: std::collections::HashMap<&'static str, String>,
}

fn template() -> Value {
    json!({"name": "docs", "fields": [
        {"name": "id", "type": "Edm.String", "key": true, "filterable": true, "sortable": true},
        {"name": "title", "type": "Edm.String", "searchable": true, "filterable": true, "sortable": true},
        {"name": "category", "type": "Edm.String", "filterable": true, "facetable": true},
        {"name": "rating", "type": "Edm.Int32", "filterable": true, "sortable": true, "facetable": true},
        {"name": "tags", "type": "Collection(Edm.String)", "filterable": true, "facetable": true}
    ], "suggesters": [{"name": "sg", "searchMode": "analyzingInfixMatching", "sourceFields": ["title"]}]})
}

/// Two services, the `docs` template, and four tenants: `alpha` and `beta` in the shared
/// index, `ded` with an index of its own, `own` with a service of its own.
async fn world() -> World {
    let sim = Sim::start(
        SimConfig::default()
            .with_search_service(SearchServiceConfig::new(
                SHARED,
                "eastus",
                "shared-admin",
                "shared-query",
            ))
            .with_search_service(SearchServiceConfig::new(
                OWN,
                "eastus",
                "own-admin",
                "own-query",
            )),
    )
    .await
    .unwrap();
    let app = TestApp::spawn().await;
    let post = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            let (status, answer) = app.admin(Method::POST, path, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
            answer
        }
    };
    post(
        "/admin/v1/search/services",
        json!({"name": SHARED, "endpoint": sim.resource_url(SHARED),
        "region": "eastus", "api_key": "shared-admin"}),
    )
    .await;
    post(
        "/admin/v1/search/services",
        json!({"name": OWN, "endpoint": sim.resource_url(OWN),
        "region": "eastus", "api_key": "own-admin", "owner_tenant": "own"}),
    )
    .await;
    post("/admin/v1/search/index-templates", template()).await;
    for (slug, isolation, service) in [
        ("alpha", "shared_index", SHARED),
        ("beta", "shared_index", SHARED),
        ("ded", "dedicated_index", SHARED),
        ("own", "dedicated_service", OWN),
    ] {
        let (status, tenant) = app
            .admin(
                Method::POST,
                "/admin/v1/tenants",
                Some(json!({"slug": slug, "display_name": slug,
                    "search": {"isolation": isolation, "service": service}})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{tenant}");
        let (_, tenant) = app
            .admin(Method::GET, &format!("/admin/v1/tenants/{slug}"), None)
            .await;
        assert_eq!(tenant["search_provisioning"]["state"], "ready", "{tenant}");
    }
    let mut keys = std::collections::HashMap::new();
    for slug in ["alpha", "beta", "ded", "own"] {
        keys.insert(slug, app.key(slug, "read-write").await.1);
    }
    World { app, sim, keys }
}

impl World {
    async fn call(
        &self,
        tenant: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut request = self
            .app
            .http
            .request(method, self.app.url(&format!("{path}{sep}{V}")))
            .header("api-key", &self.keys[tenant]);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn search(&self, tenant: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            tenant,
            Method::POST,
            "/indexes('docs')/docs/search.post.search",
            Some(body),
        )
        .await
    }

    async fn upload(&self, tenant: &str, docs: Value) -> (StatusCode, Value) {
        let actions: Vec<Value> = docs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d["@search.action"] = json!("upload");
                d
            })
            .collect();
        self.call(
            tenant,
            Method::POST,
            "/indexes/docs/docs/index",
            Some(json!({"value": actions})),
        )
        .await
    }

    /// Straight to the emulator with the admin key: what is really stored.
    async fn upstream(
        &self,
        service: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let key = if service == SHARED {
            "shared-admin"
        } else {
            "own-admin"
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut request = self
            .app
            .http
            .request(
                method,
                format!("{}{path}{sep}{V}", self.sim.resource_url(service)),
            )
            .header("api-key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn index_names(&self, service: &str) -> Vec<String> {
        let (_, list) = self.upstream(service, Method::GET, "/indexes", None).await;
        list["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn tenant_id(&self, slug: &str) -> String {
        let (_, t) = self
            .app
            .admin(Method::GET, &format!("/admin/v1/tenants/{slug}"), None)
            .await;
        t["id"].as_str().unwrap().to_owned()
    }
}

fn ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no value: {answer}"))
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

fn docs_of(tenant: &str) -> Value {
    json!([
        {"id": "1", "title": format!("{tenant} pool hotel"), "category": format!("{tenant}-cat"), "rating": 5, "tags": ["pool", tenant]},
        {"id": "2", "title": format!("{tenant} beach hotel"), "category": "shared-cat", "rating": 3, "tags": ["beach"]},
        {"id": "3", "title": format!("{tenant} pool motel"), "category": "shared-cat", "rating": 1, "tags": ["pool"]}
    ])
}

#[tokio::test]
async fn each_placement_serves_crud_and_queries_on_its_own_physical_index() {
    let w = world().await;
    for tenant in ["alpha", "ded", "own"] {
        let (status, answer) = w.upload(tenant, docs_of(tenant)).await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {answer}");
        let keys: Vec<&str> = answer["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["1", "2", "3"], "{tenant}: keys come back as sent");

        let (status, doc) = w
            .call(tenant, Method::GET, "/indexes('docs')/docs('1')", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {doc}");
        assert_eq!(doc["id"], "1");
        assert_eq!(doc["title"], format!("{tenant} pool hotel"));
        let (status, _) = w
            .call(tenant, Method::GET, "/indexes/docs/docs/nope", None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{tenant}");

        let merge = json!({"value": [{"@search.action": "merge", "id": "2", "rating": 4}]});
        let (status, answer) = w
            .call(
                tenant,
                Method::POST,
                "/indexes('docs')/docs/search.index",
                Some(merge),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {answer}");
        let (_, doc) = w
            .call(
                tenant,
                Method::GET,
                "/indexes/docs/docs/2?$select=id,rating",
                None,
            )
            .await;
        assert_eq!(doc, json!({"id": "2", "rating": 4}), "{tenant}");

        let (status, found) = w
            .search(
                tenant,
                json!({"search": "pool", "filter": "rating ge 1", "count": true,
                "facets": ["category"], "select": "id,title", "orderby": "id desc"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {found}");
        assert_eq!(ids(&found), ["1", "3"], "{tenant}");
        assert_eq!(found["@odata.count"], 2);
        assert!(found["@search.facets"]["category"].is_array(), "{found}");

        let (status, found) = w
            .call(
                tenant,
                Method::GET,
                "/indexes/docs/docs?search=*&$filter=id%20eq%20'3'",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {found}");
        assert_eq!(
            ids(&found),
            ["3"],
            "{tenant}: a key literal names the caller's document"
        );

        let (status, count) = w
            .call(tenant, Method::GET, "/indexes('docs')/docs/$count", None)
            .await;
        assert_eq!((status, count), (StatusCode::OK, json!(3)), "{tenant}");

        let (status, sugg) = w
            .call(
                tenant,
                Method::POST,
                "/indexes/docs/docs/suggest",
                Some(json!({"search": "poo", "suggesterName": "sg"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {sugg}");
        assert_eq!(ids(&sugg), ["1", "3"], "{tenant}");
        let (status, auto) = w
            .call(
                tenant,
                Method::POST,
                "/indexes('docs')/docs/search.post.autocomplete",
                Some(json!({"search": "mot", "suggesterName": "sg"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {auto}");
        assert_eq!(auto["value"][0]["text"], "motel", "{auto}");

        let del = json!({"value": [{"@search.action": "delete", "id": "3"}]});
        let (status, _) = w
            .call(tenant, Method::POST, "/indexes/docs/docs/index", Some(del))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, count) = w
            .call(tenant, Method::GET, "/indexes/docs/docs/$count", None)
            .await;
        assert_eq!(count, json!(2), "{tenant}");

        let (status, list) = w.call(tenant, Method::GET, "/indexes", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["value"][0]["name"], "docs");
        let (status, def) = w.call(tenant, Method::GET, "/indexes('docs')", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !def.to_string().to_lowercase().contains("bulkhead"),
            "{def}"
        );
        let (status, _) = w
            .call(tenant, Method::DELETE, "/indexes('docs')", None)
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "tenants cannot manage indexes"
        );
    }
    // Each placement landed on its own physical index, with the service's admin key only.
    let ded_id = uuid::Uuid::parse_str(&w.tenant_id("ded").await).unwrap();
    let shared_indexes = w.index_names(SHARED).await;
    assert!(
        shared_indexes.contains(&"shared-docs".to_owned()),
        "{shared_indexes:?}"
    );
    let dedicated: Vec<&String> = shared_indexes
        .iter()
        .filter(|n| n.starts_with('t') && n.ends_with("-docs"))
        .collect();
    assert_eq!(dedicated.len(), 1, "{shared_indexes:?} for {ded_id}");
    assert_eq!(w.index_names(OWN).await, ["docs"]);
    for (service, admin) in [(SHARED, "shared-admin"), (OWN, "own-admin")] {
        let log = w.sim.requests(Some(service));
        assert!(!log.is_empty());
        for entry in &log {
            let expected = format!("<masked:{}>", fingerprint(admin));
            assert_eq!(
                entry.header("api-key"),
                Some(expected.as_str()),
                "{}",
                entry.path
            );
            for key in w.keys.values() {
                assert!(!format!("{:?}", entry.headers).contains(&fingerprint(key)));
                assert!(!String::from_utf8_lossy(&entry.body).contains(key.as_str()));
            }
        }
    }
    // Every call left a usage record.
    let records = w.app.usage.search_records();
    for tenant in ["alpha", "ded", "own"] {
        let mine: Vec<_> = records.iter().filter(|r| r.tenant == tenant).collect();
        assert!(mine.iter().all(|r| r.index == "docs" && r.key_id.is_some()));
        assert!(mine
            .iter()
            .any(|r| r.operation == "index" && r.documents == 3 && r.status == 200));
        assert!(mine
            .iter()
            .any(|r| r.operation == "search" && r.documents == 2));
        assert!(mine
            .iter()
            .any(|r| r.operation == "lookup" && r.status == 404));
        for op in ["count", "suggest", "autocomplete"] {
            assert!(mine.iter().any(|r| r.operation == op), "{tenant} {op}");
        }
    }
    let (_, tenant) = w
        .app
        .admin(Method::GET, "/admin/v1/tenants/ded", None)
        .await;
    assert_eq!(tenant["search_provisioning"]["state"], "ready");
    assert_eq!(
        tenant["search_provisioning"]["indexes"][0],
        format!("{SHARED}/{}", dedicated[0])
    );
}

/// Hostile filters: each is refused (400) or confined to the caller's documents.
const HOSTILE_FILTERS: &[&str] = &[
    "x eq 1) or (true",
    "rating ge 0) or (true",
    "rating ge 0)) or ((true",
    "rating ge 0 or (true",
    "rating ge 0 or true)",
    "true",
    "true or true",
    "not false",
    "rating ge 0 or true",
    "not (rating ge 0) or true",
    "id ne 'zzz'",
    "id eq '1' or id eq '2' or id eq '3' or true",
    "search.in(id, '1,2,3,b-only')",
    "search.in(category, 'beta-cat,alpha-cat', ',')",
    "category eq 'beta-cat'",
    "category eq 'a'' or ''1''=''1'",
    "category eq '''' or true or ''''",
    "category eq 'unterminated",
    "tags/any(t: t eq 'beta')",
    "tags/all(t: t ne 'zzz') or true",
    "bulkheadTenant ne 'x'",
    "bulkheadTenant eq null or true",
    "BulkheadTenant ne ''",
    "rating ge 0 or bulkheadTenant ne 'a'",
    "search.in(bulkheadTenant, 'a,b')",
    "rating ge 0 -- comment",
    "rating ge 0 /* c */ or true",
    "rating ge 0 // or true",
    "rating ge 0; or true",
    "rating ge 0%29 or %28true",
    "rating ge 0\u{a0}or true",
    "rating ge 0 \u{43e}r true",
    "rating ge 0 OR true",
    "search.ismatch('beta')",
    "search.ismatch('*', 'title', 'full', 'any') or true",
    "search.ismatch('bulkheadTenant:*', 'title', 'full', 'any')",
    "rating eq null or rating ne null",
    ")",
    "(",
];

#[tokio::test]
async fn a_tenant_never_reaches_another_tenants_documents_in_a_shared_index() {
    let w = world().await;
    assert_eq!(w.upload("alpha", docs_of("alpha")).await.0, StatusCode::OK);
    assert_eq!(w.upload("beta", docs_of("beta")).await.0, StatusCode::OK);
    let secret = json!([{"id": "b-only", "title": "beta secretword pool", "category": "beta-cat", "rating": 9, "tags": ["beta"]}]);
    assert_eq!(w.upload("beta", secret).await.0, StatusCode::OK);
    let mine = |answer: &Value| {
        answer["value"].as_array().unwrap().iter().all(|d| {
            let text = d.to_string();
            !text.contains("beta") && !text.contains("secret")
        })
    };

    let mut contained = 0;
    for filter in HOSTILE_FILTERS {
        let (status, answer) = w.search("alpha", json!({"search": "*", "filter": filter, "count": true, "facets": ["category", "tags"]})).await;
        match status {
            StatusCode::BAD_REQUEST => {
                assert!(answer["error"]["code"].is_string(), "{filter}: {answer}")
            }
            StatusCode::OK => {
                contained += 1;
                assert!(mine(&answer), "{filter}: {answer}");
                assert!(
                    answer["@odata.count"].as_u64().unwrap() <= 3,
                    "{filter}: {answer}"
                );
                let facets = answer["@search.facets"].to_string();
                assert!(!facets.contains("beta"), "{filter}: {facets}");
            }
            other => panic!("{filter}: {other} {answer}"),
        }
        // The same filter by GET, and in suggest and autocomplete.
        let url = format!(
            "/indexes/docs/docs?search=*&$count=true&$filter={}",
            urlencode(filter)
        );
        let (status, answer) = w.call("alpha", Method::GET, &url, None).await;
        assert!(
            status == StatusCode::BAD_REQUEST || (status == StatusCode::OK && mine(&answer)),
            "GET {filter}: {status} {answer}"
        );
        let (status, answer) = w
            .call(
                "alpha",
                Method::POST,
                "/indexes/docs/docs/suggest",
                Some(json!({"search": "pool", "suggesterName": "sg", "filter": filter})),
            )
            .await;
        assert!(
            status == StatusCode::BAD_REQUEST || (status == StatusCode::OK && mine(&answer)),
            "suggest {filter}: {status} {answer}"
        );
        let (status, answer) = w
            .call(
                "alpha",
                Method::POST,
                "/indexes/docs/docs/autocomplete",
                Some(json!({"search": "secr", "suggesterName": "sg", "filter": filter})),
            )
            .await;
        assert!(
            status == StatusCode::BAD_REQUEST
                || (status == StatusCode::OK && answer["value"].as_array().unwrap().is_empty()),
            "autocomplete {filter}: {status} {answer}"
        );
    }
    assert!(
        contained >= 10,
        "most hostile filters are valid OData and stay contained"
    );

    // Parameters naming the tenant field, and unknown parameters: 400.
    for body in [
        json!({"search": "*", "select": "id,bulkheadTenant"}),
        json!({"search": "*", "orderby": "bulkheadTenant desc"}),
        json!({"search": "*", "searchFields": "bulkheadTenant"}),
        json!({"search": "*", "facets": ["bulkheadTenant"]}),
        json!({"search": "*", "highlight": "bulkheadTenant"}),
        json!({"search": "bulkheadTenant:*", "queryType": "full"}),
        json!({"search": "*", "select": "id) or (true"}),
        json!({"search": "*", "orderby": "id; drop"}),
        json!({"search": "*", "notAParameter": true}),
        // Continuation bodies a client could forge.
        json!({"search": "*", "skip": 0, "filter": "bulkheadTenant eq 'x'"}),
        json!({"search": "*", "skip": 50, "top": 50, "select": "bulkheadTenant"}),
    ] {
        let (status, answer) = w.search("alpha", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }

    // Plain reads: only alpha's documents, counted, faceted, suggested and completed.
    let (_, all) = w
        .search(
            "alpha",
            json!({"search": "*", "count": true, "facets": ["category"]}),
        )
        .await;
    assert_eq!(ids(&all), ["1", "2", "3"]);
    assert!(mine(&all), "{all}");
    assert_eq!(all["@odata.count"], 3);
    let (_, count) = w
        .call("alpha", Method::GET, "/indexes('docs')/docs/$count", None)
        .await;
    assert_eq!(count, json!(3));
    let (_, count) = w
        .call("beta", Method::GET, "/indexes/docs/docs/%24count", None)
        .await;
    assert_eq!(count, json!(4));
    let (_, auto) = w
        .call(
            "alpha",
            Method::POST,
            "/indexes/docs/docs/autocomplete",
            Some(json!({"search": "secr", "suggesterName": "sg"})),
        )
        .await;
    assert_eq!(auto["value"], json!([]), "{auto}");
    let (_, found) = w.search("alpha", json!({"search": "secretword"})).await;
    assert_eq!(found["value"], json!([]));

    // Lookups: a key of beta's only, beta's stored key, and malformed keys.
    let (_, stored) = w
        .upstream(
            SHARED,
            Method::POST,
            "/indexes('shared-docs')/docs/search.post.search",
            Some(json!({"search": "secretword", "select": "id"})),
        )
        .await;
    let beta_stored = stored["value"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        beta_stored.ends_with("_b-only") && beta_stored.len() == 27 + 6,
        "{beta_stored}"
    );
    for key in ["b-only", beta_stored.as_str()] {
        let (status, _) = w
            .call(
                "alpha",
                Method::GET,
                &format!("/indexes/docs/docs/{key}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{key}");
        let (status, _) = w
            .call(
                "alpha",
                Method::GET,
                &format!("/indexes('docs')/docs('{key}')"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{key}");
    }
    for key in ["a%20b", "_x", "a'b", "%C3%A9", &"k".repeat(1000)] {
        let (status, answer) = w
            .call(
                "alpha",
                Method::GET,
                &format!("/indexes/docs/docs/{key}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key}: {answer}");
    }
    let (status, answer) = w
        .call(
            "alpha",
            Method::GET,
            "/indexes/docs/docs/1?$select=bulkheadTenant",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Writes: alpha merges, deletes and overwrites only its own documents.
    let batch = json!({"value": [
        {"@search.action": "merge", "id": "b-only", "title": "hijacked"},
        {"@search.action": "merge", "id": beta_stored, "title": "hijacked"},
        {"@search.action": "delete", "id": "1"},
        {"@search.action": "mergeOrUpload", "id": "2", "title": "alpha changed"}
    ]});
    let (status, answer) = w
        .call(
            "alpha",
            Method::POST,
            "/indexes/docs/docs/index",
            Some(batch),
        )
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    let results = answer["value"].as_array().unwrap();
    assert_eq!(results[0]["statusCode"], 404);
    assert_eq!(results[0]["key"], "b-only");
    assert_eq!(results[1]["statusCode"], 404);
    assert_eq!(
        results[1]["key"], beta_stored,
        "the caller's own key, as sent"
    );
    for bad in [
        json!({"value": [{"@search.action": "upload", "id": "9", "bulkheadTenant": "x"}]}),
        json!({"value": [{"@search.action": "upload", "id": "a b"}]}),
        json!({"value": [{"@search.action": "upload", "id": "k".repeat(1000)}]}),
        json!({"value": [{"@search.action": "upload", "title": "no key"}]}),
    ] {
        let (status, answer) = w
            .call(
                "alpha",
                Method::POST,
                "/indexes/docs/docs/index",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }
    let (_, beta_docs) = w.search("beta", json!({"search": "*"})).await;
    assert_eq!(ids(&beta_docs), ["1", "2", "3", "b-only"]);
    assert!(
        !beta_docs.to_string().contains("hijacked") && !beta_docs.to_string().contains("alpha")
    );
    let (_, alpha_docs) = w.search("alpha", json!({"search": "*"})).await;
    assert_eq!(ids(&alpha_docs), ["2", "3"]);

    // Nothing upstream-only leaks: no partition code, field name or physical index name.
    let (_, answer) = w
        .search("alpha", json!({"search": "*", "highlight": "title"}))
        .await;
    let text = answer.to_string();
    assert!(
        !text.contains("bulkhead") && !text.contains("shared-docs") && !text.contains("_2"),
        "{text}"
    );
}

#[tokio::test]
async fn paging_past_fifty_results_continues_from_the_callers_own_parameters() {
    let w = world().await;
    let docs: Vec<Value> = (0..120)
        .map(|i| json!({"id": format!("d{i:03}"), "title": "pool", "rating": i}))
        .collect();
    assert_eq!(
        w.upload("alpha", Value::Array(docs.clone())).await.0,
        StatusCode::OK
    );
    assert_eq!(w.upload("beta", Value::Array(docs)).await.0, StatusCode::OK);
    let mut seen = Vec::new();
    let mut body = json!({"search": "*", "filter": "rating ge 0", "orderby": "id"});
    loop {
        let (status, page) = w.search("alpha", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(ids(&page));
        match page.get("@search.nextPageParameters") {
            Some(next) => {
                assert_eq!(
                    next["filter"], "rating ge 0",
                    "the caller's own filter: {next}"
                );
                assert!(page["@odata.nextLink"]
                    .as_str()
                    .unwrap()
                    .starts_with(&w.app.base));
                body = next.clone();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 120);
    seen.dedup();
    assert_eq!(seen.len(), 120);
    // GET paging: the link points at the gateway and keeps the caller's parameters.
    let (_, page) = w
        .call(
            "alpha",
            Method::GET,
            "/indexes/docs/docs?search=*&$orderby=id",
            None,
        )
        .await;
    let link = page["@odata.nextLink"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("{}/indexes/docs/docs?", w.app.base)),
        "{link}"
    );
    assert!(!link.contains("bulkhead"), "{link}");
    let response = w
        .app
        .http
        .get(&link)
        .header("api-key", &w.keys["alpha"])
        .send()
        .await
        .unwrap();
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["value"].as_array().unwrap().len(), 50);
    assert_eq!(second["value"][0]["id"], "d050");
}

#[tokio::test]
async fn upstream_throttling_reaches_the_tenant_with_its_retry_after() {
    let w = world().await;
    w.sim
        .inject_fault(FaultSpec::status(SHARED, 503).times(1).with_retry_after(7));
    let response = w
        .app
        .http
        .post(w.app.url(&format!("/indexes/docs/docs/search?{V}")))
        .header("api-key", &w.keys["alpha"])
        .json(&json!({"search": "*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn reads_need_an_api_version_and_writes_a_read_write_key() {
    let w = world().await;
    let (_, reader) = w.app.key("alpha", "read").await;
    let response = w
        .app
        .http
        .post(
            w.app
                .url(&format!("/indexes('docs')/docs/search.index?{V}")),
        )
        .header("api-key", &reader)
        .json(&json!({"value": [{"id": "1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Other spellings of the write path are refused too.
    for path in [
        "/indexes/docs/docs/index/",
        "/indexes/docs/docs/%69ndex",
        "/indexes('docs')/docs/search%2Eindex",
        "/indexes(%27docs%27)/docs/search.index/",
    ] {
        let response = w
            .app
            .http
            .post(w.app.url(&format!("{path}?{V}")))
            .header("api-key", &reader)
            .json(&json!({"value": [{"id": "1"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let (_, count) = w
        .call("alpha", Method::GET, "/indexes/docs/docs/$count", None)
        .await;
    assert_eq!(count, json!(0), "nothing was written");
    let response = w
        .app
        .http
        .post(w.app.url("/indexes/docs/docs/search"))
        .header("api-key", &w.keys["alpha"])
        .json(&json!({"search": "*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, _) = w
        .call(
            "alpha",
            Method::POST,
            "/indexes/nope/docs/search",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn offboarding_leaves_no_document_and_no_dedicated_index_behind() {
    let w = world().await;
    for tenant in ["alpha", "beta", "ded"] {
        assert_eq!(w.upload(tenant, docs_of(tenant)).await.0, StatusCode::OK);
    }
    let many: Vec<Value> = (0..1500)
        .map(|i| json!({"id": format!("m{i}"), "title": "bulk"}))
        .collect();
    for chunk in many.chunks(1000) {
        assert_eq!(
            w.upload("beta", Value::Array(chunk.to_vec())).await.0,
            StatusCode::OK
        );
    }
    let before = w.index_names(SHARED).await;
    assert_eq!(before.len(), 2, "{before:?}");
    for slug in ["beta", "ded"] {
        let (status, body) = w
            .app
            .admin(Method::DELETE, &format!("/admin/v1/tenants/{slug}"), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{slug}: {body}");
    }
    let (_, stored) = w
        .upstream(
            SHARED,
            Method::POST,
            "/indexes('shared-docs')/docs/search.post.search",
            Some(json!({"search": "*", "count": true, "top": 1000, "select": "id,title"})),
        )
        .await;
    assert_eq!(
        stored["@odata.count"], 3,
        "only alpha's documents remain: {stored}"
    );
    assert!(stored["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["title"].as_str().unwrap().starts_with("alpha")));
    assert_eq!(
        w.index_names(SHARED).await,
        ["shared-docs"],
        "the dedicated index is gone"
    );
    let (status, _) = w.search("alpha", json!({"search": "*"})).await;
    assert_eq!(status, StatusCode::OK);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn paths_that_are_not_search_routes_still_answer_not_found() {
    let w = world().await;
    let (status, _) = w.app.admin(Method::GET, "/admin/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in ["/nothing", "/nothing/here", "/indexes('docs'/docs"] {
        let (status, body) = w.call("alpha", Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], "404", "{path}");
    }
}

#[tokio::test]
async fn a_template_added_later_is_provisioned_for_every_placed_tenant() {
    let w = world().await;
    let mut extra = template();
    extra["name"] = json!("extra");
    let (status, body) = w
        .app
        .admin(
            Method::POST,
            "/admin/v1/search/index-templates",
            Some(extra),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut ready = false;
    for _ in 0..100 {
        let shared = w.index_names(SHARED).await;
        let own = w.index_names(OWN).await;
        if shared.contains(&"shared-extra".to_owned())
            && shared
                .iter()
                .any(|n| n.starts_with('t') && n.ends_with("-extra"))
            && own.contains(&"extra".to_owned())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        ready,
        "{:?} {:?}",
        w.index_names(SHARED).await,
        w.index_names(OWN).await
    );
    let (status, answer) = w.upload("alpha", json!([{"id": "1", "title": "x"}])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = w
        .call(
            "alpha",
            Method::POST,
            "/indexes/extra/docs/index",
            Some(json!({"value": [{"id": "1", "title": "x"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn a_placement_change_moves_the_documents_and_offboarding_then_removes_them() {
    let w = world().await;
    assert_eq!(w.upload("alpha", docs_of("alpha")).await.0, StatusCode::OK);
    let (_, before) = w
        .call("alpha", Method::GET, "/indexes/docs/docs/$count", None)
        .await;
    let (status, tenant) = w
        .app
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/alpha",
            Some(json!({"search": {"isolation": "dedicated_index", "service": SHARED}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "a move: {tenant}");
    let (_, tenant) = w
        .app
        .admin(Method::GET, "/admin/v1/tenants/alpha", None)
        .await;
    assert_eq!(tenant["search"]["isolation"], "dedicated_index", "{tenant}");
    assert_eq!(tenant["search_provisioning"]["state"], "ready", "{tenant}");
    let (_, count) = w
        .call("alpha", Method::GET, "/indexes/docs/docs/$count", None)
        .await;
    assert_eq!(count, before, "its documents moved with it");
    let (_, stored) = w
        .upstream(
            SHARED,
            Method::POST,
            "/indexes('shared-docs')/docs/search.post.search",
            Some(json!({"search": "*", "count": true})),
        )
        .await;
    assert_eq!(
        stored["@odata.count"], 0,
        "the source copy is gone: {stored}"
    );
    assert_eq!(w.index_names(SHARED).await.len(), 3);
    let (status, body) = w
        .app
        .admin(Method::DELETE, "/admin/v1/tenants/alpha", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ded_index = dedicated_index(&w, "ded").await;
    let mut names = w.index_names(SHARED).await;
    names.sort();
    let mut expected = vec!["shared-docs".to_owned(), ded_index];
    expected.sort();
    assert_eq!(names, expected, "alpha's dedicated index is gone");
}

/// The physical name of a `dedicated_index` tenant's index.
async fn dedicated_index(w: &World, slug: &str) -> String {
    let (_, tenant) = w
        .app
        .admin(Method::GET, &format!("/admin/v1/tenants/{slug}"), None)
        .await;
    let index = tenant["search_provisioning"]["indexes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    index.split('/').nth(1).unwrap().to_owned()
}

/// A caller's W3C `traceparent` reaches the search service with the gateway's request (passed
/// on unchanged here, where the gateway exports no traces), so the service's logs join the
/// caller's trace.
#[tokio::test]
async fn the_callers_traceparent_reaches_the_search_service() {
    let w = world().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = w
        .app
        .http
        .post(
            w.app
                .url(&format!("/indexes('docs')/docs/search.post.search?{V}")),
        )
        .header("api-key", &w.keys["alpha"])
        .header("traceparent", traceparent)
        .json(&json!({"search": "*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sent = w.sim.requests(Some(SHARED));
    let last = sent.last().expect("the search reached the service");
    assert!(last.path.contains("search"), "{}", last.path);
    assert_eq!(last.header("traceparent"), Some(traceparent));
}
