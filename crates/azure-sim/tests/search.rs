//! Azure AI Search behaviour of azure-sim over real HTTP: the emulator in-process on port 0,
//! called with reqwest, through both the SDK's OData routes and the friendly routes.

#![cfg(test)]

use azure_sim::{SearchServiceConfig, Sim, SimConfig, SimHandle};
use reqwest::Method;
use serde_json::{json, Value};

const V: &str = "api-version=2024-07-01";
const ADMIN: &str = "admin-key";
const QUERY: &str = "query-key";

struct Env {
    sim: SimHandle,
    http: reqwest::Client,
}

impl Env {
    async fn new() -> Self {
        Self::with_config(SimConfig::default()).await
    }

    async fn with_config(config: SimConfig) -> Self {
        let config = config.with_search_service(SearchServiceConfig::new(
            "search-1",
            "westeurope",
            ADMIN,
            QUERY,
        ));
        let sim = Sim::start(config).await.expect("emulator starts");
        Env {
            sim,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.sim.resource_url("search-1"))
    }

    /// Sends a request with `key` as `api-key`; returns status, content type and body.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String, String) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(k) = key {
            req = req.header("api-key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, ctype, resp.text().await.unwrap_or_default())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, text) = self.raw(method, path, key, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    async fn create_hotels(&self) {
        let (status, body) = self
            .admin(
                Method::PUT,
                &format!("/indexes('hotels')?{V}"),
                Some(hotels_schema()),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    async fn upload(&self, index: &str, docs: Vec<Value>) -> (u16, Value) {
        let actions: Vec<Value> = docs
            .into_iter()
            .map(|mut d| {
                if d.get("@search.action").is_none() {
                    d["@search.action"] = json!("upload");
                }
                d
            })
            .collect();
        self.admin(
            Method::POST,
            &format!("/indexes/{index}/docs/index?{V}"),
            Some(json!({ "value": actions })),
        )
        .await
    }

    async fn search(&self, body: Value) -> Value {
        let (status, result) = self
            .call(
                Method::POST,
                &format!("/indexes('hotels')/docs/search.post.search?{V}"),
                Some(QUERY),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 200, "search {body} answered {result}");
        result
    }

    async fn seeded() -> Self {
        let env = Env::new().await;
        env.create_hotels().await;
        let (status, body) = env.upload("hotels", hotel_docs()).await;
        assert_eq!(status, 200, "{body}");
        env
    }
}

fn hotels_schema() -> Value {
    json!({
        "name": "hotels",
        "fields": [
            {"name": "id", "type": "Edm.String", "key": true, "filterable": true, "sortable": true},
            {"name": "name", "type": "Edm.String", "searchable": true, "filterable": true, "sortable": true},
            {"name": "description", "type": "Edm.String", "searchable": true},
            {"name": "category", "type": "Edm.String", "filterable": true, "facetable": true, "searchable": false},
            {"name": "tags", "type": "Collection(Edm.String)", "searchable": true, "filterable": true, "facetable": true},
            {"name": "tenants", "type": "Collection(Edm.String)", "filterable": true, "retrievable": false, "searchable": false, "facetable": false},
            {"name": "rating", "type": "Edm.Int32", "filterable": true, "sortable": true, "facetable": true},
            {"name": "price", "type": "Edm.Double", "filterable": true, "sortable": true, "facetable": true},
            {"name": "parking", "type": "Edm.Boolean", "filterable": true},
            {"name": "opened", "type": "Edm.DateTimeOffset", "filterable": true, "sortable": true},
            {"name": "location", "type": "Edm.GeographyPoint", "filterable": true, "sortable": true},
            {"name": "secret", "type": "Edm.String", "searchable": false, "filterable": false, "retrievable": false},
            {"name": "embedding", "type": "Collection(Edm.Single)", "searchable": true, "dimensions": 3, "vectorSearchProfile": "vp"}
        ],
        "suggesters": [{"name": "sg", "searchMode": "analyzingInfixMatching", "sourceFields": ["name", "tags"]}],
        "vectorSearch": {
            "algorithms": [{"name": "hnsw-1", "kind": "hnsw", "hnswParameters": {"metric": "cosine"}}],
            "profiles": [{"name": "vp", "algorithm": "hnsw-1"}]
        }
    })
}

fn hotel_docs() -> Vec<Value> {
    vec![
        json!({"id": "1", "name": "Blue Harbour Hotel", "description": "Luxury hotel by the sea with a pool and free wifi",
               "category": "Luxury", "tags": ["pool", "wifi", "sea view"], "tenants": ["acme"], "rating": 5, "price": 250.0,
               "parking": true, "opened": "2015-06-01T00:00:00Z", "location": {"type": "Point", "coordinates": [10.75, 59.91]},
               "secret": "s1", "embedding": [1.0, 0.0, 0.0]}),
        json!({"id": "2", "name": "Budget Inn", "description": "Cheap rooms near the station, wifi in the lobby",
               "category": "Budget", "tags": ["wifi"], "tenants": ["globex"], "rating": 2, "price": 60.5,
               "parking": false, "opened": "2020-01-15T10:00:00+02:00", "location": {"type": "Point", "coordinates": [5.32, 60.39]},
               "embedding": [0.0, 1.0, 0.0]}),
        json!({"id": "3", "name": "Harbour Lights Lodge", "description": "Quiet lodge with harbour views and a spa",
               "category": "Boutique", "tags": ["spa", "sea view"], "tenants": ["acme", "globex"], "rating": 4, "price": 180.0,
               "parking": true, "opened": "2018-03-20T12:00:00Z", "location": {"type": "Point", "coordinates": [10.70, 59.90]},
               "embedding": [0.9, 0.1, 0.0]}),
        json!({"id": "4", "name": "Mountain Cabin", "description": "Remote cabin, no wifi, pure nature",
               "category": "Boutique", "tags": [], "tenants": ["initech"], "rating": 3, "price": 95.0,
               "embedding": [0.0, 0.0, 1.0]}),
    ]
}

fn ids(result: &Value) -> Vec<String> {
    result["value"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_azure_error(body: &Value) {
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn api_version_is_required_and_checked_against_the_accepted_list() {
    let env = Env::seeded().await;
    let (status, body) = env.admin(Method::GET, "/indexes", None).await;
    assert_eq!(status, 400);
    assert_azure_error(&body);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("api-version"));
    let (status, _) = env
        .admin(Method::GET, "/indexes?api-version=2019-01-01", None)
        .await;
    assert_eq!(status, 400);
    for version in ["2024-07-01", "2025-09-01", "2026-04-01"] {
        let (status, body) = env
            .admin(
                Method::GET,
                &format!("/indexes?api-version={version}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{version}: {body}");
    }
}

#[tokio::test]
async fn a_service_can_restrict_its_api_versions() {
    let env = Env::new().await;
    env.sim
        .add_search_service(
            SearchServiceConfig::new("strict", "eastus", "a", "q")
                .with_api_versions(&["2025-09-01"]),
        )
        .unwrap();
    let url = |v: &str| format!("{}/indexes?api-version={v}", env.sim.resource_url("strict"));
    let old = env
        .http
        .get(url("2024-07-01"))
        .header("api-key", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 400);
    let new = env
        .http
        .get(url("2025-09-01"))
        .header("api-key", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
}

#[tokio::test]
async fn keys_decide_who_may_read_and_who_may_write() {
    let env = Env::seeded().await;
    let search = format!("/indexes/hotels/docs/search?{V}");
    let (status, body) = env
        .call(Method::POST, &search, None, Some(json!({"search": "*"})))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_azure_error(&body);
    let (status, _) = env
        .call(
            Method::POST,
            &search,
            Some("wrong"),
            Some(json!({"search": "*"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = env
        .call(
            Method::POST,
            &search,
            Some(QUERY),
            Some(json!({"search": "*"})),
        )
        .await;
    assert_eq!(status, 200);
    // The query key reads documents only.
    for (method, path, body) in [
        (
            Method::POST,
            format!("/indexes/hotels/docs/index?{V}"),
            Some(json!({"value": [{"id": "9"}]})),
        ),
        (
            Method::PUT,
            format!("/indexes/other?{V}"),
            Some(hotels_schema()),
        ),
        (Method::GET, format!("/indexes?{V}"), None),
        (Method::DELETE, format!("/indexes/hotels?{V}"), None),
    ] {
        let (status, _) = env.call(method.clone(), &path, Some(QUERY), body).await;
        assert_eq!(status, 403, "{method} {path}");
    }
    // Bearer works like api-key.
    let resp = env
        .http
        .get(env.url(&format!("/indexes('hotels')/docs/$count?{V}")))
        .bearer_auth(QUERY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn indexes_are_created_read_listed_updated_and_deleted_on_both_route_styles() {
    let env = Env::new().await;
    env.create_hotels().await;
    let (status, def) = env
        .admin(Method::GET, &format!("/indexes/hotels?{V}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(def["name"], "hotels");
    assert!(def["@odata.etag"].is_string());
    let secret = def["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "secret")
        .unwrap();
    assert_eq!(secret["retrievable"], false);
    let (status, same) = env
        .admin(Method::GET, &format!("/indexes('hotels')?{V}"), None)
        .await;
    assert_eq!((status, &same["fields"]), (200, &def["fields"]));

    // Adding a field is an update (200); changing one is refused.
    let mut more = hotels_schema();
    more["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "stars", "type": "Edm.Int32"}));
    let (status, updated) = env
        .admin(
            Method::PUT,
            &format!("/indexes/hotels?{V}"),
            Some(more.clone()),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_ne!(updated["@odata.etag"], def["@odata.etag"]);
    more["fields"][6]["type"] = json!("Edm.String");
    let (status, body) = env
        .admin(Method::PUT, &format!("/indexes/hotels?{V}"), Some(more))
        .await;
    assert_eq!(status, 400, "{body}");

    // POST /indexes creates, and conflicts on an existing name.
    let mut second = hotels_schema();
    second["name"] = json!("hotels-2");
    let (status, _) = env
        .admin(Method::POST, &format!("/indexes?{V}"), Some(second.clone()))
        .await;
    assert_eq!(status, 201);
    let (status, body) = env
        .admin(Method::POST, &format!("/indexes?{V}"), Some(second))
        .await;
    assert_eq!(status, 409, "{body}");

    let (_, list) = env.admin(Method::GET, &format!("/indexes?{V}"), None).await;
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hotels", "hotels-2"]);
    let (_, names_only) = env
        .admin(Method::GET, &format!("/indexes?{V}&$select=name"), None)
        .await;
    assert_eq!(names_only["value"][0], json!({"name": "hotels"}));

    let (status, _) = env
        .admin(Method::DELETE, &format!("/indexes('hotels-2')?{V}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = env
        .admin(Method::DELETE, &format!("/indexes/hotels-2?{V}"), None)
        .await;
    assert_eq!(status, 404);
    assert_azure_error(&body);
    let (status, _) = env
        .admin(Method::GET, &format!("/indexes/hotels-2?{V}"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn invalid_index_definitions_are_refused_with_400() {
    let env = Env::new().await;
    let key = json!({"name": "id", "type": "Edm.String", "key": true});
    let cases = [
        json!({"fields": [{"name": "a", "type": "Edm.String"}]}),
        json!({"fields": [key, {"name": "id2", "type": "Edm.String", "key": true}]}),
        json!({"fields": [key, {"name": "n", "type": "Edm.Int32", "key": false, "searchable": true}]}),
        json!({"fields": [key, {"name": "tags", "type": "Collection(Edm.String)", "sortable": true}]}),
        json!({"fields": [key, {"name": "v", "type": "Collection(Edm.Single)", "searchable": true, "dimensions": 3}]}),
        json!({"fields": [key, {"name": "v", "type": "Collection(Edm.Single)", "searchable": true, "dimensions": 3, "vectorSearchProfile": "nope"}]}),
        json!({"fields": [key, {"name": "x", "type": "Edm.Unknown"}]}),
        json!({"fields": [key, {"name": "x", "type": "Edm.String"}, {"name": "x", "type": "Edm.String"}]}),
        json!({"fields": [key], "suggesters": [{"name": "sg", "sourceFields": ["missing"]}]}),
    ];
    for def in cases {
        let (status, body) = env
            .admin(Method::PUT, &format!("/indexes/bad?{V}"), Some(def.clone()))
            .await;
        assert_eq!(status, 400, "{def} -> {body}");
        assert_azure_error(&body);
    }
    let (status, _) = env
        .admin(
            Method::PUT,
            &format!("/indexes/Bad_Name?{V}"),
            Some(json!({"fields": [key]})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn index_batches_report_per_item_status_and_207_when_any_fails() {
    let env = Env::new().await;
    env.create_hotels().await;
    let (status, body) = env
        .upload(
            "hotels",
            vec![
                json!({"id": "1", "name": "A"}),
                json!({"id": "2", "name": "B"}),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["value"][0],
        json!({"key": "1", "status": true, "errorMessage": null, "statusCode": 201})
    );

    let actions = json!({"value": [
        {"@search.action": "upload", "id": "1", "name": "A2"},
        {"@search.action": "merge", "id": "2", "rating": 4},
        {"@search.action": "merge", "id": "404", "rating": 4},
        {"@search.action": "mergeOrUpload", "id": "3", "name": "C"},
        {"@search.action": "mergeOrUpload", "id": "3", "rating": 1},
        {"@search.action": "delete", "id": "2"},
        {"@search.action": "delete", "id": "never-existed"},
        {"@search.action": "upload", "id": "bad/key", "name": "x"},
        {"@search.action": "upload", "id": "5", "rating": "five"},
        {"@search.action": "upload", "id": "6", "unknownField": 1}
    ]});
    let (status, body) = env
        .admin(
            Method::POST,
            &format!("/indexes('hotels')/docs/search.index?{V}"),
            Some(actions),
        )
        .await;
    assert_eq!(status, 207, "{body}");
    let codes: Vec<u64> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["statusCode"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [200, 200, 404, 201, 200, 200, 200, 400, 400, 400]);
    assert_eq!(body["value"][2]["status"], false);
    assert!(body["value"][2]["errorMessage"].is_string());

    let (_, three) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs/3?{V}"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(
        (three["name"].as_str(), three["rating"].as_i64()),
        (Some("C"), Some(1))
    );
    let (_, _, count) = env
        .raw(
            Method::GET,
            &format!("/indexes/hotels/docs/$count?{V}"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(count, "2");

    let huge = "x".repeat(17 * 1024 * 1024);
    let (status, body) = env
        .admin(
            Method::POST,
            &format!("/indexes/hotels/docs/index?{V}"),
            Some(json!({"value": [{"id": "h", "name": huge}]})),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"id": i.to_string()})).collect();
    let (status, body) = env
        .admin(
            Method::POST,
            &format!("/indexes/hotels/docs/index?{V}"),
            Some(json!({"value": too_many})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = env
        .admin(
            Method::POST,
            &format!("/indexes/nope/docs/index?{V}"),
            Some(json!({"value": [{"id": "1"}]})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn lookup_by_key_honours_select_and_hides_non_retrievable_fields() {
    let env = Env::seeded().await;
    let (status, doc) = env
        .call(
            Method::GET,
            &format!("/indexes('hotels')/docs('1')?{V}"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(doc["name"], "Blue Harbour Hotel");
    assert!(doc.get("secret").is_none() && doc.get("tenants").is_none());
    let (_, doc) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs/2?{V}&$select=id,rating"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(doc, json!({"id": "2", "rating": 2}));
    // Date-times are stored in UTC.
    let (_, doc) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs/2?{V}&$select=opened"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(doc["opened"], "2020-01-15T08:00:00Z");
    let (status, body) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs/77?{V}"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_azure_error(&body);
    let (status, _) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs/1?{V}&$select=secret"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn count_is_a_plain_text_integer() {
    let env = Env::seeded().await;
    for path in [
        format!("/indexes('hotels')/docs/$count?{V}"),
        format!("/indexes/hotels/docs/$count?{V}"),
    ] {
        let (status, ctype, text) = env.raw(Method::GET, &path, Some(QUERY), None).await;
        assert_eq!((status, text.as_str()), (200, "4"));
        assert!(ctype.starts_with("text/plain"), "{ctype}");
    }
}

#[tokio::test]
async fn full_text_search_ranks_with_bm25_on_get_and_post() {
    let env = Env::seeded().await;
    let result = env.search(json!({"search": "harbour"})).await;
    let found = ids(&result);
    assert_eq!(found.len(), 2);
    let scores: Vec<f64> = result["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["@search.score"].as_f64().unwrap())
        .collect();
    assert!(scores[0] >= scores[1] && scores[1] > 0.0, "{scores:?}");
    // "harbour" appears in the name and description of 3, only in the name of 1.
    assert_eq!(found, ["3", "1"]);

    let (status, get) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs?{V}&search=harbour"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&get), found);

    let all = env.search(json!({"search": "*"})).await;
    assert_eq!(ids(&all), ["1", "2", "3", "4"]);
    assert_eq!(all["value"][0]["@search.score"], 1.0);
    assert_eq!(ids(&env.search(json!({})).await).len(), 4);

    assert_eq!(
        ids(&env
            .search(json!({"search": "wifi pool", "searchMode": "all"}))
            .await),
        ["1"]
    );
    assert_eq!(
        ids(&env
            .search(json!({"search": "wifi pool", "searchMode": "any"}))
            .await)
        .len(),
        3
    );
    assert_eq!(
        ids(&env
            .search(json!({"search": "wifi", "searchFields": "name"}))
            .await)
        .len(),
        0
    );
    assert_eq!(
        ids(&env.search(json!({"search": "\"harbour views\""})).await),
        ["3"]
    );
    assert_eq!(ids(&env.search(json!({"search": "lodg*"})).await), ["3"]);
    assert_eq!(
        ids(&env
            .search(json!({"search": "name:budget", "queryType": "full"}))
            .await),
        ["2"]
    );
    let (status, _) = env
        .call(
            Method::POST,
            &format!("/indexes/hotels/docs/search?{V}"),
            Some(QUERY),
            Some(json!({"search": "x", "searchFields": "rating"})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn filters_use_the_odata_grammar_and_bad_ones_name_the_position() {
    let env = Env::seeded().await;
    let cases: &[(&str, &[&str])] = &[
        ("rating ge 4", &["1", "3"]),
        ("rating ge 4 and price lt 200", &["3"]),
        ("category eq 'Budget' or parking eq false", &["2"]),
        ("not parking", &["2", "4"]),
        ("tags/any(t: t eq 'spa')", &["3"]),
        ("tags/any()", &["1", "2", "3"]),
        ("tags/all(t: t ne 'wifi')", &["3", "4"]),
        (
            "tenants/any(t: search.in(t, 'acme,initech'))",
            &["1", "3", "4"],
        ),
        ("search.in(category, 'Luxury|Budget', '|')", &["1", "2"]),
        ("opened lt 2019-01-01T00:00:00Z", &["1", "3"]),
        ("opened eq 2020-01-15T08:00:00Z", &["2"]),
        ("location eq null", &["4"]),
        (
            "geo.distance(location, geography'POINT(10.75 59.91)') le 5",
            &["1", "3"],
        ),
        ("search.ismatch('spa')", &["3"]),
        (
            "search.ismatch('wifi', 'description') and rating lt 5",
            &["2", "4"],
        ),
        ("price gt 100.5 and price le 250", &["1", "3"]),
        ("id eq '2'", &["2"]),
    ];
    for (filter, expected) in cases {
        let result = env.search(json!({"search": "*", "filter": filter})).await;
        assert_eq!(ids(&result), *expected, "filter {filter}");
    }
    let get_path = format!("/indexes/hotels/docs?{V}&search=*&$filter=rating%20eq%202");
    let (_, get) = env.call(Method::GET, &get_path, Some(QUERY), None).await;
    assert_eq!(ids(&get), ["2"]);

    for (filter, needle) in [
        ("rating eq 1) or (true", "position 11"),
        ("name eq 'unterminated", "position 8"),
        ("nope eq 1", "nope"),
        ("secret eq 'x'", "not filterable"),
        ("search.ismatch('x', 'category')", "not searchable"),
    ] {
        let (status, body) = env
            .call(
                Method::POST,
                &format!("/indexes/hotels/docs/search?{V}"),
                Some(QUERY),
                Some(json!({"filter": filter})),
            )
            .await;
        assert_eq!(status, 400, "{filter}");
        assert_azure_error(&body);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{filter}: {message}");
    }
}

#[tokio::test]
async fn orderby_select_top_skip_and_count_shape_the_page() {
    let env = Env::seeded().await;
    let result = env
        .search(json!({"search": "*", "orderby": "rating desc", "select": "id,rating", "top": 2, "skip": 1, "count": true}))
        .await;
    assert_eq!(result["@odata.count"], 4);
    assert_eq!(ids(&result), ["3", "4"]);
    let first = result["value"][0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["@search.score", "id", "rating"]);
    assert!(result.get("@search.nextPageParameters").is_none());

    let by_two = env
        .search(json!({"orderby": "parking desc, price asc", "select": "id"}))
        .await;
    assert_eq!(ids(&by_two), ["3", "1", "2", "4"]);
    let by_date = env
        .search(json!({"orderby": "opened", "select": "id"}))
        .await;
    assert_eq!(
        ids(&by_date),
        ["4", "1", "3", "2"],
        "nulls first, then by instant"
    );
    let by_score = env
        .search(json!({"search": "harbour wifi", "orderby": "search.score() desc, id"}))
        .await;
    assert_eq!(ids(&by_score)[0], "3");
    let by_distance = env
        .search(json!({"orderby": "geo.distance(location, geography'POINT(5.3 60.4)') asc", "filter": "location ne null"}))
        .await;
    assert_eq!(ids(&by_distance), ["2", "3", "1"]);

    for bad in [
        json!({"orderby": "tags"}),
        json!({"select": "secret"}),
        json!({"orderby": "rating sideways"}),
        json!({"skip": 100001}),
    ] {
        let (status, _) = env
            .call(
                Method::POST,
                &format!("/indexes/hotels/docs/search?{V}"),
                Some(QUERY),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (_, get) = env
        .call(Method::GET, &format!("/indexes/hotels/docs?{V}&search=*&$orderby=price%20desc&$top=1&$select=id&$count=true"), Some(QUERY), None)
        .await;
    assert_eq!(
        (ids(&get), &get["@odata.count"]),
        (vec!["1".to_owned()], &json!(4))
    );
}

#[tokio::test]
async fn results_past_fifty_are_paged_with_next_page_parameters() {
    let env = Env::new().await;
    env.create_hotels().await;
    let docs: Vec<Value> = (0..120)
        .map(|i| json!({"id": format!("{i:03}"), "name": "room", "rating": i % 5}))
        .collect();
    let (status, _) = env.upload("hotels", docs).await;
    assert_eq!(status, 200);

    let mut body =
        json!({"search": "room", "filter": "rating ne 0", "select": "id", "count": true});
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = env.search(body.clone()).await;
        pages += 1;
        assert_eq!(page["@odata.count"], 96);
        seen.extend(ids(&page));
        match page.get("@search.nextPageParameters") {
            Some(next) => {
                assert_eq!(
                    next["filter"], "rating ne 0",
                    "the continuation repeats the request"
                );
                assert!(page["@odata.nextLink"]
                    .as_str()
                    .unwrap()
                    .contains("search.post.search"));
                body = next.clone();
            }
            None => break,
        }
    }
    assert_eq!(pages, 2);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 96);

    // An explicit top within 1000 never pages; GET pages by nextLink.
    let page = env.search(json!({"search": "room", "top": 100})).await;
    assert_eq!(ids(&page).len(), 100);
    assert!(page.get("@search.nextPageParameters").is_none());
    let (_, get) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs?{V}&search=room"),
            Some(QUERY),
            None,
        )
        .await;
    let next = get["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.contains("%24skip=50") || next.contains("$skip=50"),
        "{next}"
    );
    let resp = env
        .http
        .get(next)
        .header("api-key", QUERY)
        .send()
        .await
        .unwrap();
    let second: Value = resp.json().await.unwrap();
    assert_eq!(ids(&second).len(), 50);
}

#[tokio::test]
async fn facets_count_values_including_collections() {
    let env = Env::seeded().await;
    let result = env
        .search(json!({"search": "*", "facets": ["category", "tags,count:2", "rating,values:3|5", "price,interval:100"]}))
        .await;
    let f = &result["@search.facets"];
    assert_eq!(
        f["category"],
        json!([{"value": "Boutique", "count": 2}, {"value": "Budget", "count": 1}, {"value": "Luxury", "count": 1}])
    );
    assert_eq!(
        f["tags"],
        json!([{"value": "sea view", "count": 2}, {"value": "wifi", "count": 2}])
    );
    assert_eq!(
        f["rating"],
        json!([{"to": 3, "count": 1}, {"from": 3, "to": 5, "count": 2}, {"from": 5, "count": 1}])
    );
    assert_eq!(
        f["price"],
        json!([{"value": 0.0, "count": 2}, {"value": 100.0, "count": 1}, {"value": 200.0, "count": 1}])
    );
    let by_value = env
        .search(json!({"facets": ["rating,sort:-value,count:2"]}))
        .await;
    assert_eq!(
        by_value["@search.facets"]["rating"],
        json!([{"value": 5, "count": 1}, {"value": 4, "count": 1}])
    );
    let filtered = env
        .search(json!({"filter": "rating ge 4", "facets": ["category"]}))
        .await;
    assert_eq!(
        filtered["@search.facets"]["category"],
        json!([{"value": "Boutique", "count": 1}, {"value": "Luxury", "count": 1}])
    );
    let (status, _) = env
        .call(
            Method::POST,
            &format!("/indexes/hotels/docs/search?{V}"),
            Some(QUERY),
            Some(json!({"facets": ["tenants"]})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn highlights_wrap_matched_terms() {
    let env = Env::seeded().await;
    let result = env
        .search(json!({"search": "spa", "highlight": "description"}))
        .await;
    assert_eq!(
        result["value"][0]["@search.highlights"]["description"],
        json!(["Quiet lodge with harbour views and a <em>spa</em>"])
    );
    let custom = env.search(json!({"search": "harbour", "highlight": "name", "highlightPreTag": "[", "highlightPostTag": "]"})).await;
    assert_eq!(
        custom["value"][1]["@search.highlights"]["name"],
        json!(["Blue [Harbour] Hotel"])
    );
}

#[tokio::test]
async fn suggest_matches_prefixes_in_suggester_fields_and_honours_the_filter() {
    let env = Env::seeded().await;
    let path = format!("/indexes('hotels')/docs/search.post.suggest?{V}");
    let (status, body) = env
        .call(
            Method::POST,
            &path,
            Some(QUERY),
            Some(json!({"search": "harb", "suggesterName": "sg"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["@search.text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Blue Harbour Hotel", "Harbour Lights Lodge"]);
    assert_eq!(body["value"][0]["id"], "1");
    let (_, body) = env
        .call(Method::POST, &path, Some(QUERY), Some(json!({"search": "harb", "suggesterName": "sg", "filter": "rating lt 5", "select": "id,name", "highlightPreTag": "<b>", "highlightPostTag": "</b>"})))
        .await;
    assert_eq!(
        body["value"],
        json!([{"@search.text": "<b>Harb</b>our Lights Lodge", "id": "3", "name": "Harbour Lights Lodge"}])
    );
    let (_, body) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs/suggest?{V}&search=sea&suggesterName=sg&$top=1"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert_eq!(body["value"][0]["@search.text"], "sea view");
    let (status, body) = env
        .call(
            Method::POST,
            &path,
            Some(QUERY),
            Some(json!({"search": "harb", "suggesterName": "nope"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_azure_error(&body);
}

#[tokio::test]
async fn autocomplete_completes_the_last_term_from_matching_documents() {
    let env = Env::seeded().await;
    let path = format!("/indexes('hotels')/docs/search.post.autocomplete?{V}");
    let (status, body) = env
        .call(
            Method::POST,
            &path,
            Some(QUERY),
            Some(json!({"search": "h", "suggesterName": "sg"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["value"],
        json!([{"text": "harbour", "queryPlusText": "harbour"}, {"text": "hotel", "queryPlusText": "hotel"}])
    );
    let (_, body) = env
        .call(
            Method::POST,
            &path,
            Some(QUERY),
            Some(json!({"search": "blue h", "suggesterName": "sg"})),
        )
        .await;
    assert_eq!(
        body["value"][0],
        json!({"text": "harbour", "queryPlusText": "blue harbour"})
    );
    let (_, body) = env
        .call(Method::POST, &path, Some(QUERY), Some(json!({"search": "harbour l", "suggesterName": "sg", "autocompleteMode": "oneTermWithContext"})))
        .await;
    assert_eq!(
        body["value"],
        json!([{"text": "harbour lights", "queryPlusText": "harbour lights"}])
    );
    let (_, body) = env
        .call(
            Method::POST,
            &path,
            Some(QUERY),
            Some(json!({"search": "harb", "suggesterName": "sg", "autocompleteMode": "twoTerms"})),
        )
        .await;
    assert_eq!(
        body["value"],
        json!([{"text": "harbour hotel", "queryPlusText": "harbour hotel"}, {"text": "harbour lights", "queryPlusText": "harbour lights"}])
    );
    let (_, body) = env
        .call(
            Method::POST,
            &path,
            Some(QUERY),
            Some(json!({"search": "h", "suggesterName": "sg", "filter": "rating eq 4"})),
        )
        .await;
    assert_eq!(
        body["value"],
        json!([{"text": "harbour", "queryPlusText": "harbour"}])
    );
    let (_, body) = env
        .call(
            Method::GET,
            &format!("/indexes/hotels/docs/autocomplete?{V}&search=wi&suggesterName=sg"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(body["value"][0]["text"], "wifi");
}

#[tokio::test]
async fn vector_queries_rank_by_cosine_after_the_filter() {
    let env = Env::seeded().await;
    let q = |extra: Value| {
        let mut body = json!({"vectorQueries": [{"kind": "vector", "vector": [1.0, 0.05, 0.0], "fields": "embedding", "k": 2}], "select": "id"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let nearest = env.search(q(json!({}))).await;
    assert_eq!(ids(&nearest), ["1", "3"]);
    let top = nearest["value"][0]["@search.score"].as_f64().unwrap();
    assert!(top > 0.99 && top <= 1.0, "1 / (1 + cosine distance): {top}");
    // Pre-filtering removes the best match before ranking; k still yields two results.
    assert_eq!(
        ids(&env.search(q(json!({"filter": "id ne '1'"}))).await),
        ["3", "2"]
    );
    // Post-filtering ranks first, then filters.
    assert_eq!(
        ids(&env
            .search(q(
                json!({"filter": "id ne '1'", "vectorFilterMode": "postFilter"})
            ))
            .await),
        ["3"]
    );
    // Hybrid: text and vector lists fused.
    let hybrid = env.search(q(json!({"search": "budget"}))).await;
    assert_eq!(ids(&hybrid).len(), 3);
    for bad in [
        json!({"vectorQueries": [{"kind": "vector", "vector": [1.0, 0.0], "fields": "embedding", "k": 1}]}),
        json!({"vectorQueries": [{"kind": "vector", "vector": [1.0, 0.0, 0.0], "fields": "name", "k": 1}]}),
        json!({"vectorQueries": [{"kind": "text", "text": "hello", "fields": "embedding"}]}),
    ] {
        let (status, _) = env
            .call(
                Method::POST,
                &format!("/indexes/hotels/docs/search?{V}"),
                Some(QUERY),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }
}

#[tokio::test]
async fn documents_survive_a_restart_with_a_data_directory() {
    let dir = std::env::temp_dir().join(format!("azure-sim-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || SimConfig {
        data_dir: Some(dir.clone()),
        ..SimConfig::default()
    };
    {
        let env = Env::with_config(config()).await;
        env.create_hotels().await;
        env.upload("hotels", hotel_docs()).await;
        env.sim.shutdown().await;
    }
    let env = Env::with_config(config()).await;
    let (status, _, text) = env
        .raw(
            Method::GET,
            &format!("/indexes/hotels/docs/$count?{V}"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!((status, text.as_str()), (200, "4"));
    assert_eq!(ids(&env.search(json!({"search": "spa"})).await), ["3"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn unknown_paths_and_indexes_answer_404_in_azure_shape() {
    let env = Env::seeded().await;
    let (status, body) = env
        .admin(Method::GET, &format!("/nothing-here?{V}"), None)
        .await;
    assert_eq!(status, 404);
    assert_azure_error(&body);
    let (status, body) = env
        .call(
            Method::POST,
            &format!("/indexes/missing/docs/search?{V}"),
            Some(QUERY),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    assert_azure_error(&body);
    let (status, body) = env
        .call(
            Method::POST,
            &format!("/indexes/hotels/docs/search?{V}"),
            Some(QUERY),
            None,
        )
        .await;
    assert_eq!(status, 400, "an empty body is not a JSON object");
    assert_azure_error(&body);
}
