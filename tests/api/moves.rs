//! Moving a tenant between search isolation models (and from one service to another),
//! online: every document kept (every key, every field, vectors included) while the tenant
//! writes and reads, the neighbour in a shared index untouched, the source removed after the
//! grace period; a replica killed mid-copy taken over from its checkpoint; a cancel before
//! the switch leaving the tenant where it was; moves that cannot be done refused before
//! anything changes; offboarding as an operation; operations the same on every replica and
//! after a restart. Against azure-sim, on Postgres and on SQLite.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use azure_sim::{FaultSpec, SearchServiceConfig, Sim, SimConfig, SimHandle};
use bulkhead_tests::{
    admin_call, admin_call_no_wait, fresh_postgres_database, wait_for_operation, GatewayProcess,
    TestApp, MASTER_KEY,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

const V: &str = "api-version=2024-07-01";
const SHARED: &str = "search-a";
const OWN: &str = "search-own";
const OWN_2: &str = "search-own-2";
const EU: &str = "search-eu";
const OTHERS: &str = "search-other";
const TINY: &str = "search-tiny";

/// The services of every test: a shared one, two reserved for `mover`, one in another data
/// zone, one reserved for another tenant, and one with room for a single index.
fn sim_config() -> SimConfig {
    [SHARED, OWN, OWN_2, EU, OTHERS, TINY]
        .into_iter()
        .fold(SimConfig::default(), |config, name| {
            config.with_search_service(SearchServiceConfig::new(
                name,
                "eastus",
                format!("{name}-admin"),
                format!("{name}-query"),
            ))
        })
}

fn template() -> Value {
    json!({"name": "docs", "fields": [
        {"name": "id", "type": "Edm.String", "key": true, "filterable": true, "sortable": true},
        {"name": "title", "type": "Edm.String", "searchable": true, "filterable": true, "sortable": true},
        {"name": "n", "type": "Edm.Int32", "filterable": true, "sortable": true},
        {"name": "tags", "type": "Collection(Edm.String)", "filterable": true},
        {"name": "vec", "type": "Collection(Edm.Single)", "searchable": true, "dimensions": 4,
         "vectorSearchProfile": "vp"}
    ], "vectorSearch": {
        "algorithms": [{"name": "hnsw-1", "kind": "hnsw", "hnswParameters": {"metric": "cosine"}}],
        "profiles": [{"name": "vp", "algorithm": "hnsw-1"}]
    }})
}

/// Document `i` of `tenant`, version `v`: every field set, the vector exactly representable.
fn doc(tenant: &str, id: &str, i: u64, v: u64) -> Map<String, Value> {
    let f = |k: u64| ((i * 7 + v * 3 + k) % 16) as f64 / 4.0 + 0.25;
    json!({"id": id, "title": format!("{tenant} document {i} v{v}"), "n": (i + v) as i64,
           "tags": [tenant, format!("v{v}")], "vec": [f(0), f(1), f(2), f(3)]})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// A gateway (in process, or its address) and the emulator behind it.
struct World {
    base: String,
    http: reqwest::Client,
    sim: SimHandle,
    keys: BTreeMap<String, String>,
    _app: Option<TestApp>,
}

impl World {
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        admin_call(&self.http, &self.base, method, path, body).await
    }

    async fn call(
        &self,
        tenant: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        data_call(
            &self.http,
            &self.base,
            &self.keys[tenant],
            method,
            path,
            body,
        )
        .await
    }

    /// Every document of `tenant`, by key, read through the data plane in key order.
    async fn documents(&self, tenant: &str) -> BTreeMap<String, Map<String, Value>> {
        let mut all = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut body = json!({"search": "*", "orderby": "id asc", "top": 1000});
            if let Some(after) = &after {
                body["filter"] = json!(format!("id gt '{after}'"));
            }
            let (status, page) = self
                .call(
                    tenant,
                    Method::POST,
                    "/indexes/docs/docs/search",
                    Some(body),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let docs = page["value"].as_array().cloned().unwrap_or_default();
            for d in &docs {
                let mut d = d.as_object().cloned().unwrap_or_default();
                d.retain(|k, _| !k.starts_with('@'));
                let id = d["id"].as_str().unwrap_or_default().to_owned();
                after = Some(id.clone());
                all.insert(id, d);
            }
            if docs.len() < 1000 {
                return all;
            }
        }
    }

    async fn upload(&self, tenant: &str, docs: &[Map<String, Value>]) {
        for chunk in docs.chunks(1000) {
            let actions: Vec<Value> = chunk
                .iter()
                .map(|d| {
                    let mut d = d.clone();
                    d.insert("@search.action".into(), json!("upload"));
                    Value::Object(d)
                })
                .collect();
            let (status, answer) = self
                .call(
                    tenant,
                    Method::POST,
                    "/indexes/docs/docs/index",
                    Some(json!({"value": actions})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    }

    /// Index names on a service, as the service lists them.
    async fn index_names(&self, service: &str) -> Vec<String> {
        let url = format!("{}/indexes?{V}", self.sim.resource_url(service));
        let list: Value = self
            .http
            .get(url)
            .header("api-key", format!("{service}-admin"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["name"].as_str().map(ToOwned::to_owned))
            .collect()
    }

    /// Documents stored in a physical index, whoever they belong to.
    async fn stored(&self, service: &str, index: &str) -> u64 {
        let url = format!(
            "{}/indexes('{index}')/docs/search.post.search?{V}",
            self.sim.resource_url(service)
        );
        let answer = self
            .http
            .post(url)
            .header("api-key", format!("{service}-admin"))
            .json(&json!({"search": "*", "count": true, "top": 0}))
            .send()
            .await
            .unwrap();
        if answer.status() == StatusCode::NOT_FOUND {
            return 0;
        }
        let answer: Value = answer.json().await.unwrap();
        answer["@odata.count"].as_u64().unwrap_or(0)
    }

    async fn tenant(&self, slug: &str) -> Value {
        let (status, tenant) = self
            .admin(Method::GET, &format!("/admin/v1/tenants/{slug}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}");
        tenant
    }

    /// Starts a move of `slug` to `to` without waiting; the operation's location.
    async fn start_move(&self, slug: &str, to: Value) -> String {
        let (status, location, answer) = admin_call_no_wait(
            &self.http,
            &self.base,
            Method::PATCH,
            &format!("/admin/v1/tenants/{slug}"),
            Some(json!({ "search": to })),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["operation"]["kind"], "search_move", "{answer}");
        location.expect("Operation-Location")
    }

    async fn operation(&self, location: &str) -> Value {
        let (status, op) = self.admin(Method::GET, location, None).await;
        assert_eq!(status, StatusCode::OK, "{op}");
        op
    }
}

async fn data_call(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut request = http
        .request(method, format!("{base}{path}{sep}{V}"))
        .header("api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Registers the services and the template, onboards `mover` (data zone `us`) and
/// `neighbour` in the shared index, and gives each a read-write key.
async fn set_up(base: String, sim: SimHandle, app: Option<TestApp>) -> World {
    let mut w = World {
        base,
        http: reqwest::Client::new(),
        sim,
        keys: BTreeMap::new(),
        _app: app,
    };
    for (name, zone, owner, capacity) in [
        (SHARED, "us", None, 50),
        (OWN, "us", Some("mover"), 50),
        (OWN_2, "us", Some("mover"), 50),
        (EU, "eu", None, 50),
        (OTHERS, "us", Some("someone-else"), 50),
        (TINY, "us", None, 1),
    ] {
        let (status, answer) = w
            .admin(
                Method::POST,
                "/admin/v1/search/services",
                Some(json!({"name": name, "endpoint": w.sim.resource_url(name), "region": "eastus",
                        "data_zone": zone, "api_key": format!("{name}-admin"), "owner_tenant": owner,
                        "index_capacity": capacity})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let (status, answer) = w
        .admin(
            Method::POST,
            "/admin/v1/search/index-templates",
            Some(template()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    for slug in ["mover", "neighbour"] {
        let (status, answer) = w
            .admin(
                Method::POST,
                "/admin/v1/tenants",
                Some(
                    json!({"slug": slug, "display_name": slug, "data_zone": "us",
                        "search": {"isolation": "shared_index", "service": SHARED}}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let (_, key) = w
            .admin(
                Method::POST,
                &format!("/admin/v1/tenants/{slug}/keys"),
                Some(json!({"name": "k", "scope": "read-write"})),
            )
            .await;
        w.keys
            .insert(slug.to_owned(), key["key"].as_str().unwrap().to_owned());
    }
    w
}

async fn in_process(postgres: bool) -> World {
    in_process_with_grace(postgres, 0).await
}

/// A gateway that keeps a move's source `grace_seconds` after the switch.
async fn in_process_with_grace(postgres: bool, grace_seconds: u64) -> World {
    let sim = Sim::start(sim_config()).await.unwrap();
    let database = if postgres {
        Some(fresh_postgres_database().await)
    } else {
        None
    };
    let app = TestApp::spawn_with(move |config| {
        if let Some(database) = database {
            config.database_url = Some(database);
            config.master_key = Some(secrecy::SecretString::from(MASTER_KEY));
        }
        config.move_fence_settle_ms = 300;
        config.move_source_grace_seconds = grace_seconds;
    })
    .await;
    let base = app.base.clone();
    set_up(base, sim, Some(app)).await
}

/// The physical name of `mover`'s dedicated index.
async fn dedicated_name(w: &World) -> String {
    let tenant = w.tenant("mover").await;
    tenant["search_provisioning"]["indexes"][0]
        .as_str()
        .unwrap_or_default()
        .split('/')
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// What the writer believes the tenant holds, and how its writes went.
#[derive(Default)]
struct Ledger {
    docs: parking_lot_free::Mutex<BTreeMap<String, Map<String, Value>>>,
    failed: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
}

mod parking_lot_free {
    #[derive(Default)]
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

/// Writes (updates, new documents, deletes) and reads as the tenant, until `stop`.
fn writer_and_reader(
    http: reqwest::Client,
    base: String,
    key: String,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    round: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let (action, d) = match i % 3 {
                // a new document
                0 => (
                    "upload",
                    doc("mover", &format!("w{round}-{i:05}"), 10_000 + i, round),
                ),
                // an update of an existing one
                1 => (
                    "upload",
                    doc("mover", &format!("d{:04}", (i * 37) % 2500), i, 100 + round),
                ),
                // a delete
                _ => (
                    "delete",
                    json!({"id": format!("d{:04}", (i * 53 + round * 11) % 2500)})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
            };
            let mut action_doc = d.clone();
            action_doc.insert("@search.action".into(), json!(action));
            let (status, answer) = data_call(
                &http,
                &base,
                &key,
                Method::POST,
                "/indexes/docs/docs/index",
                Some(json!({"value": [action_doc]})),
            )
            .await;
            ledger.writes.fetch_add(1, Ordering::Relaxed);
            if status == StatusCode::OK {
                let id = d["id"].as_str().unwrap_or_default().to_owned();
                let mut docs = ledger.docs.lock();
                if action == "delete" {
                    docs.remove(&id);
                } else {
                    docs.insert(id, d);
                }
            } else {
                eprintln!("write failed: {status} {answer}");
                ledger.failed.fetch_add(1, Ordering::Relaxed);
            }
            let (status, _) = data_call(
                &http,
                &base,
                &key,
                Method::POST,
                "/indexes/docs/docs/search",
                Some(json!({"search": "document", "top": 5, "filter": "n ge 0"})),
            )
            .await;
            ledger.reads.fetch_add(1, Ordering::Relaxed);
            if status != StatusCode::OK {
                ledger.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// The tenant's documents equal the ledger's, every key and every field.
fn assert_exactly(
    actual: &BTreeMap<String, Map<String, Value>>,
    expected: &BTreeMap<String, Map<String, Value>>,
    when: &str,
) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{when}: missing {missing:?}, extra {extra:?}"
    );
    for (key, doc) in expected {
        assert_eq!(&actual[key], doc, "{when}: document {key}");
    }
}

async fn moves_through_every_placement(w: World) {
    // 2,500 documents of the mover, 300 of its neighbour in the same shared index.
    let mover: Vec<_> = (0..2500)
        .map(|i| doc("mover", &format!("d{i:04}"), i, 0))
        .collect();
    let neighbour: Vec<_> = (0..300)
        .map(|i| doc("neighbour", &format!("n{i:04}"), i, 0))
        .collect();
    w.upload("mover", &mover).await;
    w.upload("neighbour", &neighbour).await;
    let neighbours_before = w.documents("neighbour").await;
    assert_eq!(neighbours_before.len(), 300);
    let ledger = Arc::new(Ledger::default());
    *ledger.docs.lock() = w.documents("mover").await;
    assert_eq!(ledger.docs.lock().len(), 2500);

    let steps = [
        (
            json!({"isolation": "dedicated_index", "service": SHARED}),
            "dedicated_index",
        ),
        (
            json!({"isolation": "dedicated_service", "service": OWN}),
            "dedicated_service",
        ),
        // From one service to another.
        (
            json!({"isolation": "dedicated_service", "service": OWN_2}),
            "dedicated_service",
        ),
        (
            json!({"isolation": "shared_index", "service": SHARED}),
            "shared_index",
        ),
    ];
    let mut source = (
        "shared_index".to_owned(),
        SHARED.to_owned(),
        "shared-docs".to_owned(),
    );
    for (round, (to, isolation)) in steps.into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let load = writer_and_reader(
            w.http.clone(),
            w.base.clone(),
            w.keys["mover"].clone(),
            Arc::clone(&ledger),
            Arc::clone(&stop),
            round as u64 + 1,
        );
        let location = w.start_move("mover", to.clone()).await;
        let op = wait_for_operation(&w.http, &w.base, &location, Duration::from_secs(120)).await;
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        assert_eq!(op["status"], "succeeded", "{op}");
        assert_eq!(op["kind"], "search_move");
        assert!(op["progress"]["switched_at"].is_string(), "{op}");
        let when = format!("after the move to {isolation}");
        assert_eq!(
            ledger.failed.load(Ordering::Relaxed),
            0,
            "{when}: no read or write failed"
        );
        assert!(
            ledger.writes.load(Ordering::Relaxed) > 0,
            "{when}: the writer wrote during the move"
        );
        let tenant = w.tenant("mover").await;
        assert_eq!(tenant["search"]["isolation"], isolation, "{tenant}");
        assert!(tenant["search_move"].is_null(), "{tenant}");
        assert_exactly(&w.documents("mover").await, &ledger.docs.lock(), &when);
        assert_exactly(
            &w.documents("neighbour").await,
            &neighbours_before,
            &format!("{when}: the neighbour"),
        );
        // The source holds none of the mover's documents (grace 0 in tests).
        let (kind, service, index) = &source;
        match kind.as_str() {
            "shared_index" => assert_eq!(
                w.stored(service, index).await,
                300,
                "{when}: only the neighbour's documents are left in the shared index"
            ),
            _ => assert!(
                !w.index_names(service).await.contains(index),
                "{when}: the source index {index} on {service} is deleted"
            ),
        }
        source = match isolation {
            "dedicated_index" => (
                "dedicated_index".into(),
                SHARED.into(),
                dedicated_name(&w).await,
            ),
            "dedicated_service" => (
                "dedicated_service".into(),
                to["service"].as_str().unwrap_or_default().to_owned(),
                "docs".into(),
            ),
            _ => ("shared_index".into(), SHARED.into(), "shared-docs".into()),
        };
        // The vector field went across: a vector query finds the document it was made from.
        let probe = ledger
            .docs
            .lock()
            .values()
            .next()
            .cloned()
            .unwrap_or_default();
        let (status, found) = w
            .call(
                "mover",
                Method::POST,
                "/indexes/docs/docs/search",
                Some(json!({"vectorQueries": [{"kind": "vector", "vector": probe["vec"], "fields": "vec", "k": 50}],
                            "select": "id", "top": 50})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert!(
            found["value"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["id"] == probe["id"]),
            "{when}: vector search finds {}: {found}",
            probe["id"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_through_every_placement_while_it_writes_and_reads_on_sqlite() {
    moves_through_every_placement(in_process(false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_through_every_placement_while_it_writes_and_reads_on_postgres() {
    moves_through_every_placement(in_process(true).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_canceled_before_its_switch_leaves_the_tenant_where_it_was() {
    let w = in_process(false).await;
    let mover: Vec<_> = (0..2500)
        .map(|i| doc("mover", &format!("d{i:04}"), i, 0))
        .collect();
    w.upload("mover", &mover).await;
    let before = w.documents("mover").await;
    let indexes_before = w.index_names(OWN).await;
    // The target answers slowly, so the copy is still running when the cancel comes.
    w.sim.inject_fault(FaultSpec::delay(OWN, 300).times(0));
    let location = w
        .start_move(
            "mover",
            json!({"isolation": "dedicated_service", "service": OWN}),
        )
        .await;
    bulkhead_tests::eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || {
            let op = w.operation(&location).await;
            match op["phase"].as_str() {
                Some("copying")
                    if op["progress"]["indexes"]["docs"]["copied"].as_u64() > Some(0) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}: {op}")),
            }
        },
    )
    .await;
    let cancel = format!("{location}:cancel");
    let (status, _, answer) =
        admin_call_no_wait(&w.http, &w.base, Method::POST, &cancel, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let op = wait_for_operation(&w.http, &w.base, &location, Duration::from_secs(60)).await;
    assert_eq!(op["status"], "canceled", "{op}");
    w.sim.clear_faults();
    let tenant = w.tenant("mover").await;
    assert_eq!(tenant["search"]["isolation"], "shared_index", "{tenant}");
    assert!(tenant["search_move"].is_null(), "{tenant}");
    assert_eq!(
        w.index_names(OWN).await,
        indexes_before,
        "the target index is gone"
    );
    assert_exactly(&w.documents("mover").await, &before, "after the cancel");
    // Canceling it again says so again; a finished one cannot be canceled.
    let (status, _, again) =
        admin_call_no_wait(&w.http, &w.base, Method::POST, &cancel, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_switch_a_move_serves_from_the_target_and_keeps_the_source_for_its_grace() {
    let w = in_process_with_grace(false, 3600).await;
    let mover: Vec<_> = (0..500)
        .map(|i| doc("mover", &format!("d{i:04}"), i, 0))
        .collect();
    w.upload("mover", &mover).await;
    let before = w.documents("mover").await;
    let location = w
        .start_move(
            "mover",
            json!({"isolation": "dedicated_index", "service": SHARED}),
        )
        .await;
    bulkhead_tests::eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || {
            let op = w.operation(&location).await;
            match op["phase"].as_str() {
                Some("waiting_grace") => Ok(()),
                other => Err(format!("{other:?}: {op}")),
            }
        },
    )
    .await;
    // Switched: the tenant is served from its own index, which admins see as ready; the
    // operation is still running (it removes the source after the grace period).
    let tenant = w.tenant("mover").await;
    assert_eq!(tenant["search"]["isolation"], "dedicated_index", "{tenant}");
    assert_eq!(tenant["search_provisioning"]["state"], "ready", "{tenant}");
    assert_eq!(tenant["operation"]["phase"], "waiting_grace", "{tenant}");
    assert_eq!(tenant["operation"]["status"], "running", "{tenant}");
    let dedicated = dedicated_name(&w).await;
    assert_eq!(w.stored(SHARED, &dedicated).await, 500);
    assert_exactly(&w.documents("mover").await, &before, "after the switch");
    // The source is kept until the grace period ends (the neighbour has no documents here).
    assert_eq!(w.stored(SHARED, "shared-docs").await, 500);
    // Past the switch a move cannot be canceled, and asking changes nothing.
    let (status, _, answer) = admin_call_no_wait(
        &w.http,
        &w.base,
        Method::POST,
        &format!("{location}:cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let op = w.operation(&location).await;
    assert_eq!(op["cancelRequested"], false, "{op}");
    assert_eq!(op["status"], "running", "{op}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_that_cannot_be_done_are_refused_before_anything_changes() {
    let w = in_process(false).await;
    let refused = [
        (
            json!({"isolation": "dedicated_service", "service": OTHERS}),
            "belongs to another tenant",
        ),
        (
            json!({"isolation": "dedicated_index", "service": EU}),
            "data zone",
        ),
        (
            json!({"isolation": "dedicated_index", "service": TINY}),
            "index capacity",
        ),
    ];
    for (to, says) in refused {
        let (status, answer) = w
            .admin(
                Method::PATCH,
                "/admin/v1/tenants/mover",
                Some(json!({"search": to})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{to}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{to}: {answer}");
    }
    // A template whose field cannot be read back: every move is refused, naming it.
    let operations = async || {
        let (_, listed) = w
            .admin(
                Method::GET,
                "/admin/v1/operations?tenant=mover&limit=200",
                None,
            )
            .await;
        listed["data"].as_array().cloned().unwrap_or_default()
    };
    let before = operations().await.len();
    let (status, answer) = w
        .admin(
            Method::POST,
            "/admin/v1/search/index-templates",
            Some(json!({"name": "secrets", "fields": [
                {"name": "id", "type": "Edm.String", "key": true, "filterable": true, "sortable": true},
                {"name": "hidden", "type": "Edm.String", "retrievable": false}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    // The new template's index is provisioned for each tenant first (one operation each):
    // wait until the tenant has a new operation and every operation of it has ended, read in
    // one listing (two listings by status could each miss one that moved between them).
    bulkhead_tests::eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || {
            let all = operations().await;
            let ended = all.iter().all(|op| {
                matches!(
                    op["status"].as_str(),
                    Some("succeeded" | "failed" | "canceled")
                )
            });
            if all.len() > before && ended {
                Ok(())
            } else {
                Err(format!("{all:?}"))
            }
        },
    )
    .await;
    let (status, answer) = w
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/mover",
            Some(json!({"search": {"isolation": "dedicated_index", "service": SHARED}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("'hidden'"),
        "{answer}"
    );
    let tenant = w.tenant("mover").await;
    assert_eq!(
        tenant["search"]["isolation"], "shared_index",
        "nothing changed: {tenant}"
    );
    assert!(tenant["search_move"].is_null());
    let (_, moves) = w
        .admin(Method::GET, "/admin/v1/operations?tenant=mover", None)
        .await;
    assert!(
        moves["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["kind"] != "search_move"),
        "no move was started: {moves}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_is_an_operation_and_a_second_delete_returns_it() {
    let w = in_process(true).await;
    let mover: Vec<_> = (0..3000)
        .map(|i| doc("mover", &format!("d{i:04}"), i, 0))
        .collect();
    let neighbour: Vec<_> = (0..100)
        .map(|i| doc("neighbour", &format!("n{i:04}"), i, 0))
        .collect();
    w.upload("mover", &mover).await;
    w.upload("neighbour", &neighbour).await;
    let neighbours_before = w.documents("neighbour").await;
    // Slow enough that the second DELETE finds the first still running.
    w.sim.inject_fault(FaultSpec::delay(SHARED, 100).times(0));
    let (status, location, first) = admin_call_no_wait(
        &w.http,
        &w.base,
        Method::DELETE,
        "/admin/v1/tenants/mover",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["kind"], "offboard");
    assert_ne!(first["status"], "succeeded", "answered at once: {first}");
    let (status, _, second) = admin_call_no_wait(
        &w.http,
        &w.base,
        Method::DELETE,
        "/admin/v1/tenants/mover",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    assert_eq!(second["id"], first["id"], "the same operation");
    let location = location.expect("Operation-Location");
    let op = wait_for_operation(&w.http, &w.base, &location, Duration::from_secs(120)).await;
    w.sim.clear_faults();
    assert_eq!(op["status"], "succeeded", "{op}");
    assert_eq!(op["progress"]["removed"], 3000, "{op}");
    let (status, _) = w.admin(Method::GET, "/admin/v1/tenants/mover", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The tenant is gone; its operations are still listed by its slug, and only its own.
    let (status, history) = w
        .admin(Method::GET, "/admin/v1/operations?tenant=mover", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let history = history["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(history[0]["id"], first["id"], "{history:?}");
    assert!(
        history.iter().all(|o| o["tenant"] == "mover"),
        "{history:?}"
    );
    assert_eq!(
        w.stored(SHARED, "shared-docs").await,
        100,
        "only the neighbour's are left"
    );
    assert_exactly(
        &w.documents("neighbour").await,
        &neighbours_before,
        "the neighbour",
    );
}

async fn replica(database: &str) -> GatewayProcess {
    GatewayProcess::start(&[
        ("DATABASE_URL", database),
        ("BULKHEAD_MASTER_KEY", MASTER_KEY),
        ("BULKHEAD_OPERATION_LEASE_SECONDS", "2"),
        ("BULKHEAD_MOVE_SOURCE_GRACE_SECONDS", "0"),
        ("BULKHEAD_MOVE_FENCE_SETTLE_MS", "1500"),
        ("BULKHEAD_SHUTDOWN_DELAY_SECONDS", "0"),
        ("BULKHEAD_LOG", "info"),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_copy_leaves_its_move_to_another_which_resumes_from_the_checkpoint() {
    let sim = Sim::start(sim_config()).await.unwrap();
    let database = fresh_postgres_database().await;
    let one = replica(&database).await;
    let two = replica(&database).await;
    let w = set_up(one.base.clone(), sim, None).await;
    let mover: Vec<_> = (0..5000)
        .map(|i| doc("mover", &format!("d{i:04}"), i, 0))
        .collect();
    w.upload("mover", &mover).await;
    let expected = w.documents("mover").await;
    // Every call to the target is slow: the copy takes several seconds.
    w.sim.inject_fault(FaultSpec::delay(OWN, 400).times(0));
    let location = w
        .start_move(
            "mover",
            json!({"isolation": "dedicated_service", "service": OWN}),
        )
        .await;
    let mut running = Value::Null;
    bulkhead_tests::eventually(
        Duration::from_secs(60),
        Duration::from_millis(20),
        async || {
            running = w.operation(&location).await;
            let copied = running["progress"]["indexes"]["docs"]["copied"]
                .as_u64()
                .unwrap_or(0);
            if running["phase"] == "copying" && copied >= 1000 {
                Ok(())
            } else {
                Err(format!("{running}"))
            }
        },
    )
    .await;
    let runner = running["runner"].as_str().unwrap_or_default().to_owned();
    let copied_before = running["progress"]["indexes"]["docs"]["copied"]
        .as_u64()
        .unwrap_or(0);
    let (victim, survivor) = if runner.starts_with(&format!("{}-", one.pid().unwrap_or(0))) {
        (one, two)
    } else {
        (two, one)
    };
    victim.kill().await;
    let op = wait_for_operation(&w.http, &survivor.base, &location, Duration::from_secs(120)).await;
    w.sim.clear_faults();
    assert_eq!(op["status"], "succeeded", "{op}");
    assert_eq!(op["attempts"], 2, "taken over once: {op}");
    assert_eq!(op["progress"]["indexes"]["docs"]["copied"], 5000, "{op}");
    // Documents written to the target by the copy: each at most once, but for the page that
    // was in flight when the replica died.
    let uploaded: u64 = w
        .sim
        .requests(Some(OWN))
        .iter()
        .filter(|r| r.path.contains("search.index"))
        .filter_map(|r| r.body_json())
        .map(|b| b["value"].as_array().map_or(0, |v| v.len() as u64))
        .sum();
    assert!(
        uploaded <= 5000 + 1000,
        "the copy restarted from its checkpoint ({copied_before} copied before the kill), not from zero: {uploaded} documents written"
    );
    let survivor_world = World {
        base: survivor.base.clone(),
        ..w
    };
    assert_exactly(
        &survivor_world.documents("mover").await,
        &expected,
        "after the takeover",
    );
    let tenant = survivor_world.tenant("mover").await;
    assert_eq!(tenant["search"]["isolation"], "dedicated_service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_read_the_same_from_every_replica_and_after_a_restart() {
    let sim = Sim::start(sim_config()).await.unwrap();
    let database = fresh_postgres_database().await;
    let one = replica(&database).await;
    let two = replica(&database).await;
    let w = set_up(one.base.clone(), sim, None).await;
    let (_, ops) = w
        .admin(Method::GET, "/admin/v1/operations?tenant=mover", None)
        .await;
    let provision = ops["data"][0].clone();
    assert_eq!(provision["kind"], "provision", "{ops}");
    let location = format!("/admin/v1/operations/{}", provision["id"].as_str().unwrap());
    let http = reqwest::Client::new();
    let (_, from_two) = admin_call(&http, &two.base, Method::GET, &location, None).await;
    assert_eq!(from_two["status"], "succeeded", "{from_two}");
    assert_eq!(from_two["id"], provision["id"]);
    let (_, tenant_from_two) = admin_call(
        &http,
        &two.base,
        Method::GET,
        "/admin/v1/tenants/mover",
        None,
    )
    .await;
    assert_eq!(
        tenant_from_two["search_provisioning"]["state"], "ready",
        "{tenant_from_two}"
    );
    let status = one.terminate().await;
    assert!(status.success());
    let again = replica(&database).await;
    let (_, after_restart) = admin_call(&http, &again.base, Method::GET, &location, None).await;
    assert_eq!(after_restart, from_two, "the same after a restart");
    let (_, listed) = admin_call(
        &http,
        &again.base,
        Method::GET,
        "/admin/v1/operations?status=succeeded",
        None,
    )
    .await;
    assert!(listed["data"].as_array().unwrap().len() >= 2, "{listed}");
}
