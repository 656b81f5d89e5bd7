//! The store conformance suite: every scenario runs against Postgres (a fresh database per
//! test, from `DATABASE_URL`) and against SQLite, through the [`Registry`] that the gateway
//! uses, so the rules and both backends are checked together.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first thing that is not as expected"
)]

use std::sync::Arc;
use std::time::Duration;
use tenant_registry::prices::Micros;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tenant_registry::model::{
    ApiKeyPatch, ContextOverflow, Limits, NewApiKey, NewDeployment, NewIndexTemplate,
    NewOpenAiResource, NewPool, NewSearchService, NewTenant, NewTenantWithKeys,
    ResponseCacheSettings, TenantFilter, TenantPatch, TenantStatus,
};
use tenant_registry::{MasterKey, Registry, RegistryError, SqlStore, Store};

fn master() -> MasterKey {
    MasterKey::from_base64(&MasterKey::generate_base64()).unwrap()
}

async fn open(store: SqlStore) -> Arc<Registry> {
    Registry::open(Arc::new(store), master()).await.unwrap()
}

/// A fresh directory for an SQLite store, opened the way the gateway opens it.
fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bulkhead-registry-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn resource(name: &str, zone: Option<&str>, owner: Option<&str>) -> NewOpenAiResource {
    from(json!({
        "name": name, "endpoint": format!("https://{name}.openai.azure.com"), "region": "eastus",
        "data_zone": zone, "api_key": format!("secret-of-{name}"), "owner_tenant": owner
    }))
}

fn deployment(resource: &str, name: &str, owner: Option<&str>) -> NewDeployment {
    from(
        json!({"resource": resource, "name": name, "model": "gpt-4o", "capacity_tpm": 1000,
                "owner_tenant": owner}),
    )
}

fn service(name: &str, zone: Option<&str>, owner: Option<&str>) -> NewSearchService {
    from(
        json!({"name": name, "endpoint": format!("https://{name}.search.windows.net"),
                "region": "westeurope", "data_zone": zone, "api_key": "search-secret",
                "owner_tenant": owner}),
    )
}

fn tenant(body: Value) -> NewTenant {
    from(body)
}

fn is_invalid(result: Result<impl std::fmt::Debug, RegistryError>, field: &str) {
    match result {
        Err(RegistryError::Invalid { field: f, .. }) => {
            assert!(f.starts_with(field), "{f} vs {field}")
        }
        other => panic!("expected invalid {field}, got {other:?}"),
    }
}

mod scenarios {
    use super::*;

    pub async fn resources_round_trip_and_never_show_their_key(r: Arc<Registry>) {
        let created = r
            .create_resource(resource("aoai-eastus", Some("us"), None))
            .await
            .unwrap();
        assert_eq!(created.name.as_str(), "aoai-eastus");
        let listed = r.resources().await.unwrap();
        assert_eq!(listed, vec![created.clone()]);
        let shown = serde_json::to_string(&listed).unwrap();
        assert!(!shown.contains("secret-of-aoai-eastus"), "{shown}");
        let snapshot = r.snapshot();
        assert_eq!(
            snapshot
                .resource_credential(&created.name)
                .unwrap()
                .to_stored()
                .expose_secret(),
            "secret-of-aoai-eastus"
        );
        assert!(matches!(
            r.create_resource(resource("aoai-eastus", None, None)).await,
            Err(RegistryError::Conflict(_))
        ));
        r.delete_resource("aoai-eastus").await.unwrap();
        assert!(r.resources().await.unwrap().is_empty());
        assert!(matches!(
            r.delete_resource("aoai-eastus").await,
            Err(RegistryError::NotFound { .. })
        ));
    }

    pub async fn deployments_need_their_resource_and_a_unique_name(r: Arc<Registry>) {
        is_invalid(
            r.create_deployment(deployment("nope", "d1", None)).await,
            "resource",
        );
        r.create_resource(resource("aoai-a", None, None))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-a", "d1", None))
            .await
            .unwrap();
        assert!(matches!(
            r.create_deployment(deployment("aoai-a", "d1", None)).await,
            Err(RegistryError::Conflict(_))
        ));
        r.create_resource(resource("aoai-x", None, Some("xco")))
            .await
            .unwrap();
        is_invalid(
            r.create_deployment(deployment("aoai-x", "d1", Some("yco")))
                .await,
            "owner_tenant",
        );
        let d = r
            .create_deployment(deployment("aoai-x", "d1", None))
            .await
            .unwrap();
        assert_eq!(d.resource.as_str(), "aoai-x");
        assert_eq!(r.deployments().await.unwrap().len(), 2);
        r.delete_deployment("aoai-a", "d1").await.unwrap();
        assert!(matches!(
            r.delete_deployment("aoai-a", "d1").await,
            Err(RegistryError::NotFound { .. })
        ));
    }

    pub async fn pools_hold_only_shared_deployments(r: Arc<Registry>) {
        r.create_resource(resource("aoai-a", None, None))
            .await
            .unwrap();
        r.create_resource(resource("aoai-b", None, None))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-a", "gpt4o", None))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-b", "gpt4o", None))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-b", "acme-own", Some("acme")))
            .await
            .unwrap();
        let bad: NewPool = from(json!({"alias": "gpt-4o", "members": [
            {"deployment": "aoai-a/gpt4o"}, {"deployment": "aoai-b/acme-own"}]}));
        is_invalid(r.create_pool(bad).await, "members[1].deployment");
        let twice: NewPool = from(json!({"alias": "gpt-4o", "members": [
            {"deployment": "aoai-a/gpt4o"}, {"deployment": "aoai-a/gpt4o"}]}));
        is_invalid(r.create_pool(twice).await, "members[1].deployment");
        let zero: NewPool = from(json!({"alias": "gpt-4o", "members": [
            {"deployment": "aoai-a/gpt4o", "weight": 0}]}));
        is_invalid(r.create_pool(zero).await, "members[0].weight");
        assert!(
            r.pools().await.unwrap().is_empty(),
            "nothing written on error"
        );
        let good: NewPool = from(json!({"alias": "gpt-4o", "members": [
            {"deployment": "aoai-a/gpt4o", "priority": 0, "weight": 3},
            {"deployment": "aoai-b/gpt4o", "priority": 1, "weight": 1}]}));
        let pool = r.create_pool(good.clone()).await.unwrap();
        assert_eq!(r.pools().await.unwrap(), vec![pool.clone()]);
        assert_eq!(r.snapshot().catalog.pools.get(&pool.alias), Some(&pool));
        assert!(matches!(
            r.create_pool(good).await,
            Err(RegistryError::Conflict(_))
        ));
        let deleted = r.delete_deployment("aoai-a", "gpt4o").await;
        assert!(
            matches!(deleted, Err(RegistryError::Conflict(_))),
            "{deleted:?}"
        );
        r.delete_pool("gpt-4o").await.unwrap();
        r.delete_deployment("aoai-a", "gpt4o").await.unwrap();
    }

    pub async fn every_isolation_model_onboards_and_reads_back(r: Arc<Registry>) {
        r.create_resource(resource("aoai-shared", Some("eu"), None))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-shared", "gpt4o-dd", Some("dd")))
            .await
            .unwrap();
        r.create_resource(resource("aoai-dr", Some("eu"), Some("dr")))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-dr", "gpt-4o", None))
            .await
            .unwrap();
        r.create_service(service("search-shared", Some("eu"), None))
            .await
            .unwrap();
        r.create_service(service("search-dr", Some("eu"), Some("dr")))
            .await
            .unwrap();

        let shared = r.onboard(tenant(json!({"slug": "sh", "display_name": "Shared Co",
            "openai": {"isolation": "shared"},
            "search": {"isolation": "shared_index", "service": "search-shared"},
            "limits": {"tokens_per_minute": 1000, "requests_per_minute": 10, "monthly_tokens": 5}}))).await.unwrap();
        assert_eq!(shared.openai.as_ref().unwrap().isolation(), "shared");
        assert_eq!(shared.limits.requests_per_minute, Some(10));

        let dd = r
            .onboard(tenant(
                json!({"slug": "dd", "display_name": "DD", "data_zone": "eu",
            "openai": {"isolation": "dedicated_deployment", "models": {"gpt-4o": [
                {"deployment": "aoai-shared/gpt4o-dd", "priority": 0, "weight": 2}]}},
            "search": {"isolation": "dedicated_index", "service": "search-shared"}}),
            ))
            .await
            .unwrap();
        let dr = r
            .onboard(tenant(
                json!({"slug": "dr", "display_name": "DR", "data_zone": "eu",
            "openai": {"isolation": "dedicated_resource", "resources": ["aoai-dr"]},
            "search": {"isolation": "dedicated_service", "service": "search-dr"}}),
            ))
            .await
            .unwrap();
        let tp = r
            .onboard(tenant(json!({"slug": "tp", "display_name": "TP",
            "openai": {"isolation": "tenant_provided", "endpoint": "https://tp.openai.azure.com",
                       "api_key": "tenant-own-key", "region": "westeurope"}})))
            .await
            .unwrap();

        for expected in [&shared, &dd, &dr, &tp] {
            assert_eq!(&r.tenant(expected.slug.as_str()).await.unwrap(), expected);
        }
        let shown = serde_json::to_string(&tp).unwrap();
        assert!(!shown.contains("tenant-own-key"), "{shown}");
        let snapshot = r.snapshot();
        let entry = snapshot.tenant_by_slug("tp").unwrap();
        assert_eq!(
            entry
                .openai_credential
                .as_ref()
                .unwrap()
                .to_stored()
                .expose_secret(),
            "tenant-own-key"
        );
        assert_eq!(snapshot.tenant(dd.id).unwrap().tenant, dd);
        assert_eq!(snapshot.tenant_count(), 4);
    }

    pub async fn placement_rules_hold_and_nothing_is_written_on_error(r: Arc<Registry>) {
        r.create_resource(resource("aoai-shared", Some("us"), None))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-shared", "gpt4o", None))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-shared", "acme-own", Some("acme")))
            .await
            .unwrap();
        r.create_resource(resource("aoai-acme", Some("us"), Some("acme")))
            .await
            .unwrap();
        r.create_service(service("search-shared", Some("us"), None))
            .await
            .unwrap();
        r.create_service(service("search-acme", Some("us"), Some("acme")))
            .await
            .unwrap();
        let cases = [
            // another tenant's deployment
            (
                json!({"openai": {"isolation": "dedicated_deployment", "models": {"gpt-4o": [
                {"deployment": "aoai-shared/acme-own"}]}}}),
                "openai.models.gpt-4o[0].deployment",
            ),
            // a shared deployment is not one of its own
            (
                json!({"openai": {"isolation": "dedicated_deployment", "models": {"gpt-4o": [
                {"deployment": "aoai-shared/gpt4o"}]}}}),
                "openai.models.gpt-4o[0].deployment",
            ),
            (
                json!({"openai": {"isolation": "dedicated_deployment", "models": {"gpt-4o": [
                {"deployment": "aoai-shared/missing"}]}}}),
                "openai.models.gpt-4o[0].deployment",
            ),
            (
                json!({"openai": {"isolation": "dedicated_deployment", "models": {}}}),
                "openai.models",
            ),
            (
                json!({"openai": {"isolation": "dedicated_resource", "resources": ["aoai-acme"]}}),
                "openai.resources[0]",
            ),
            (
                json!({"openai": {"isolation": "dedicated_resource", "resources": ["aoai-shared"]}}),
                "openai.resources[0]",
            ),
            (
                json!({"openai": {"isolation": "dedicated_resource", "resources": []}}),
                "openai.resources",
            ),
            (
                json!({"search": {"isolation": "dedicated_service", "service": "search-acme"}}),
                "search.service",
            ),
            (
                json!({"search": {"isolation": "dedicated_service", "service": "search-shared"}}),
                "search.service",
            ),
            (
                json!({"search": {"isolation": "shared_index", "service": "missing"}}),
                "search.service",
            ),
            (
                json!({"data_zone": "eu", "search": {"isolation": "shared_index", "service": "search-shared"}}),
                "search.service",
            ),
            (json!({"display_name": "  "}), "display_name"),
            (
                json!({"openai": {"isolation": "tenant_provided", "endpoint": "https://x.example",
                "api_key": "", "region": "eastus"}}),
                "openai.api_key",
            ),
        ];
        for (extra, field) in cases {
            let mut body = json!({"slug": "other", "display_name": "Other"});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            is_invalid(r.onboard(tenant(body)).await, field);
        }
        assert!(r.tenants(None, None).await.unwrap().data.is_empty());
        // the owner itself may use what is reserved for it, in its zone
        let acme = r
            .onboard(tenant(
                json!({"slug": "acme", "display_name": "Acme", "data_zone": "us",
            "openai": {"isolation": "dedicated_resource", "resources": ["aoai-acme"]},
            "search": {"isolation": "dedicated_service", "service": "search-acme"}}),
            ))
            .await
            .unwrap();
        assert_eq!(acme.search.unwrap().isolation(), "dedicated_service");
        assert!(matches!(
            r.onboard(tenant(json!({"slug": "acme", "display_name": "Again"})))
                .await,
            Err(RegistryError::Conflict(_))
        ));
        // in use: cannot be deleted under the tenant
        assert!(matches!(
            r.delete_resource("aoai-acme").await,
            Err(RegistryError::Conflict(_))
        ));
        assert!(matches!(
            r.delete_service("search-acme").await,
            Err(RegistryError::Conflict(_))
        ));
    }

    pub async fn patch_changes_status_limits_and_placement_under_the_same_rules(r: Arc<Registry>) {
        r.create_resource(resource("aoai-eu", Some("eu"), Some("acme")))
            .await
            .unwrap();
        r.create_resource(resource("aoai-us", Some("us"), Some("acme")))
            .await
            .unwrap();
        r.onboard(tenant(json!({"slug": "acme", "display_name": "Acme",
            "openai": {"isolation": "dedicated_resource", "resources": ["aoai-us"]},
            "limits": {"tokens_per_minute": 100, "monthly_tokens": 1000}})))
            .await
            .unwrap();
        let patch: TenantPatch = from(
            json!({"status": "suspended", "limits": {"tokens_per_minute": null, "requests_per_minute": 5}}),
        );
        let t = r.update_tenant("acme", patch).await.unwrap();
        assert_eq!(t.status, TenantStatus::Suspended);
        assert_eq!(t.limits.tokens_per_minute, None);
        assert_eq!(t.limits.requests_per_minute, Some(5));
        assert_eq!(t.limits.monthly_tokens, Some(1000));
        assert_eq!(
            r.snapshot().tenant_by_slug("acme").unwrap().tenant.status,
            TenantStatus::Suspended
        );
        // a data zone the current placement breaks
        is_invalid(
            r.update_tenant("acme", from(json!({"data_zone": "eu"})))
                .await,
            "data_zone",
        );
        // with a placement that holds in it
        let t = r
            .update_tenant(
                "acme",
                from(json!({"data_zone": "eu",
            "openai": {"isolation": "dedicated_resource", "resources": ["aoai-eu"]}})),
            )
            .await
            .unwrap();
        assert_eq!(t.data_zone.unwrap().as_str(), "eu");
        is_invalid(
            r.update_tenant("acme", from(json!({"status": "offboarding"})))
                .await,
            "status",
        );
        assert!(matches!(
            r.update_tenant("nobody", TenantPatch::default()).await,
            Err(RegistryError::NotFound { .. })
        ));
        let t = r
            .update_tenant("acme", from(json!({"openai": null})))
            .await
            .unwrap();
        assert!(t.openai.is_none());
    }

    pub async fn keys_are_hashed_listed_without_secret_and_revocable(r: Arc<Registry>) {
        r.onboard(tenant(json!({"slug": "acme", "display_name": "Acme"})))
            .await
            .unwrap();
        let (key, secret) = r
            .create_key("acme", from(json!({"name": "ci", "scope": "read"})))
            .await
            .unwrap();
        assert!(secret.expose_secret().starts_with("bk_"));
        let snapshot = r.snapshot();
        let live = snapshot.key(secret.expose_secret()).unwrap();
        assert_eq!(live.id, key.id);
        assert!(snapshot.key("bk_not-a-key").is_none());
        let listed = r.keys("acme").await.unwrap();
        assert_eq!(listed, vec![key.clone()]);
        assert!(!serde_json::to_string(&listed)
            .unwrap()
            .contains(secret.expose_secret()));
        let past: NewApiKey = from(json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"}));
        is_invalid(r.create_key("acme", past).await, "expires_at");
        is_invalid(
            r.create_key("acme", from(json!({"name": ""}))).await,
            "name",
        );
        assert!(matches!(
            r.create_key("nobody", from(json!({"name": "x"}))).await,
            Err(RegistryError::NotFound { .. })
        ));
        r.revoke_key("acme", &key.id.to_string()).await.unwrap();
        assert!(r.snapshot().key(secret.expose_secret()).is_none());
        assert!(r.keys("acme").await.unwrap()[0].revoked_at.is_some());
        assert!(matches!(
            r.revoke_key("acme", "not-a-uuid").await,
            Err(RegistryError::NotFound { .. })
        ));
    }

    pub async fn a_key_of_one_tenant_cannot_be_revoked_through_another(r: Arc<Registry>) {
        r.onboard(tenant(json!({"slug": "acme", "display_name": "Acme"})))
            .await
            .unwrap();
        r.onboard(tenant(json!({"slug": "beta", "display_name": "Beta"})))
            .await
            .unwrap();
        let (key, secret) = r
            .create_key("acme", from(json!({"name": "k"})))
            .await
            .unwrap();
        assert!(matches!(
            r.revoke_key("beta", &key.id.to_string()).await,
            Err(RegistryError::NotFound { .. })
        ));
        assert!(r.keys("beta").await.unwrap().is_empty());
        assert!(r.snapshot().key(secret.expose_secret()).is_some());
    }

    pub async fn key_limits_round_trip_and_reach_the_snapshot(r: Arc<Registry>) {
        r.onboard(tenant(json!({"slug": "acme", "display_name": "Acme",
            "limits": {"tokens_per_minute": 1000}})))
            .await
            .unwrap();
        let (plain, plain_secret) = r
            .create_key("acme", from(json!({"name": "plain"})))
            .await
            .unwrap();
        assert_eq!(plain.limits, Limits::default(), "no limits: unlimited");
        let (key, secret) = r
            .create_key(
                "acme",
                from(json!({"name": "batch", "limits":
                    {"tokens_per_minute": 100, "requests_per_minute": 0, "monthly_tokens": null,
                     "monthly_budget": "12.5"}})),
            )
            .await
            .unwrap();
        let expected = Limits {
            tokens_per_minute: Some(100),
            requests_per_minute: Some(0),
            monthly_tokens: None,
            monthly_budget: Some(Micros(12_500_000)),
        };
        assert_eq!(key.limits, expected);
        assert_eq!(
            r.keys("acme").await.unwrap(),
            vec![plain.clone(), key.clone()]
        );
        let snapshot = r.snapshot();
        let live = snapshot.key(secret.expose_secret()).unwrap();
        assert_eq!(live.limits, expected);
        assert_eq!(snapshot.key_by_id(key.id).unwrap().limits, expected);
        assert_eq!(
            snapshot.key(plain_secret.expose_secret()).unwrap().limits,
            Limits::default()
        );
        assert_eq!(
            snapshot
                .tenant(live.tenant_id)
                .unwrap()
                .limits()
                .tokens_per_minute,
            Some(1000),
            "the tenant's limits are its own"
        );
        let too_large: NewApiKey =
            from(json!({"name": "big", "limits": {"monthly_tokens": u64::MAX}}));
        is_invalid(
            r.create_key("acme", too_large).await,
            "limits.monthly_tokens",
        );
        assert_eq!(
            r.keys("acme").await.unwrap().len(),
            2,
            "nothing written on error"
        );
    }

    pub async fn a_key_patch_keeps_absent_limits_and_removes_null_ones(r: Arc<Registry>) {
        r.onboard(tenant(json!({"slug": "acme", "display_name": "Acme"})))
            .await
            .unwrap();
        let (key, secret) = r
            .create_key(
                "acme",
                from(json!({"name": "k", "limits":
                    {"tokens_per_minute": 100, "requests_per_minute": 10, "monthly_tokens": 5000}})),
            )
            .await
            .unwrap();
        let id = key.id.to_string();
        let patch: ApiKeyPatch = from(
            json!({"limits": {"tokens_per_minute": null, "monthly_tokens": 7000,
                "monthly_budget": "0.000001"}}),
        );
        let changed = r.update_key("acme", &id, patch).await.unwrap();
        let expected = Limits {
            tokens_per_minute: None,
            requests_per_minute: Some(10),
            monthly_tokens: Some(7000),
            monthly_budget: Some(Micros(1)),
        };
        assert_eq!(changed.limits, expected);
        assert_eq!(
            (changed.id, &changed.name, changed.scope, &changed.hint),
            (key.id, &key.name, key.scope, &key.hint),
            "only the limits change"
        );
        assert_eq!(r.keys("acme").await.unwrap(), vec![changed.clone()]);
        assert_eq!(
            r.snapshot().key(secret.expose_secret()).unwrap().limits,
            expected,
            "the change reaches the snapshot"
        );
        // an empty patch (or one without limits) changes nothing
        for body in [json!({}), json!({"limits": {}})] {
            let same = r.update_key("acme", &id, from(body)).await.unwrap();
            assert_eq!(same, changed);
        }
        is_invalid(
            r.update_key(
                "acme",
                &id,
                from(json!({"limits": {"requests_per_minute": u64::MAX}})),
            )
            .await,
            "limits.requests_per_minute",
        );
        assert_eq!(r.keys("acme").await.unwrap(), vec![changed]);
        for (slug, id) in [
            ("acme", "not-a-uuid".to_owned()),
            ("acme", uuid::Uuid::now_v7().to_string()),
            ("nobody", id.clone()),
        ] {
            assert!(
                matches!(
                    r.update_key(slug, &id, ApiKeyPatch::default()).await,
                    Err(RegistryError::NotFound { .. })
                ),
                "{slug}/{id}"
            );
        }
    }

    pub async fn a_key_of_one_tenant_cannot_be_changed_through_another(r: Arc<Registry>) {
        for slug in ["acme", "beta"] {
            r.onboard(tenant(json!({"slug": slug, "display_name": slug})))
                .await
                .unwrap();
        }
        let (key, secret) = r
            .create_key(
                "acme",
                from(json!({"name": "k", "limits": {"tokens_per_minute": 100}})),
            )
            .await
            .unwrap();
        let patch: ApiKeyPatch = from(json!({"limits": {"tokens_per_minute": null}}));
        assert!(matches!(
            r.update_key("beta", &key.id.to_string(), patch).await,
            Err(RegistryError::NotFound { .. })
        ));
        assert_eq!(
            r.keys("acme").await.unwrap()[0].limits.tokens_per_minute,
            Some(100)
        );
        assert_eq!(
            r.snapshot()
                .key(secret.expose_secret())
                .unwrap()
                .limits
                .tokens_per_minute,
            Some(100)
        );
    }

    pub async fn the_context_overflow_policy_defaults_to_reject_and_round_trips(r: Arc<Registry>) {
        let plain = r
            .onboard(tenant(json!({"slug": "plain", "display_name": "Plain"})))
            .await
            .unwrap();
        assert_eq!(plain.context_overflow, ContextOverflow::Reject);
        let trunc = r
            .onboard(tenant(json!({"slug": "trunc", "display_name": "Trunc",
                "context_overflow": "truncate_oldest"})))
            .await
            .unwrap();
        assert_eq!(trunc.context_overflow, ContextOverflow::TruncateOldest);
        assert_eq!(r.tenant("trunc").await.unwrap(), trunc);
        assert_eq!(r.tenant("plain").await.unwrap(), plain);
        let listed = r.tenants(None, None).await.unwrap().data;
        assert_eq!(listed, vec![plain.clone(), trunc.clone()]);
        let snapshot = r.snapshot();
        assert_eq!(
            snapshot.tenant_by_slug("trunc").unwrap().context_overflow(),
            ContextOverflow::TruncateOldest
        );
        assert_eq!(
            snapshot.tenant(plain.id).unwrap().context_overflow(),
            ContextOverflow::Reject
        );
        // a patch without the field keeps it; with it, changes it
        let t = r
            .update_tenant("trunc", from(json!({"display_name": "Renamed"})))
            .await
            .unwrap();
        assert_eq!(t.context_overflow, ContextOverflow::TruncateOldest);
        let t = r
            .update_tenant("trunc", from(json!({"context_overflow": "reject"})))
            .await
            .unwrap();
        assert_eq!(t.context_overflow, ContextOverflow::Reject);
        let t = r
            .update_tenant(
                "plain",
                from(json!({"context_overflow": "truncate_oldest"})),
            )
            .await
            .unwrap();
        assert_eq!(t.context_overflow, ContextOverflow::TruncateOldest);
        assert_eq!(
            r.snapshot().tenant(plain.id).unwrap().context_overflow(),
            ContextOverflow::TruncateOldest,
            "the change reaches the snapshot"
        );
        // suspending (a full row rewrite) keeps the policy
        let t = r
            .update_tenant("plain", from(json!({"status": "suspended"})))
            .await
            .unwrap();
        assert_eq!(t.context_overflow, ContextOverflow::TruncateOldest);
        assert!(serde_json::from_value::<NewTenant>(
            json!({"slug": "x", "display_name": "x", "context_overflow": "truncate"})
        )
        .is_err());
        assert_eq!(
            serde_json::to_value(&t).unwrap()["context_overflow"],
            "truncate_oldest"
        );
    }

    pub async fn the_response_cache_setting_is_off_by_default_and_round_trips(r: Arc<Registry>) {
        let plain = r
            .onboard(tenant(json!({"slug": "plain", "display_name": "Plain"})))
            .await
            .unwrap();
        assert_eq!(
            plain.response_cache, None,
            "off unless the admin turns it on"
        );
        let cached = r
            .onboard(tenant(json!({"slug": "cached", "display_name": "Cached",
                "response_cache": {"ttl_seconds": 600, "max_bytes": 1048576}})))
            .await
            .unwrap();
        let on = ResponseCacheSettings {
            ttl_seconds: 600,
            max_bytes: 1_048_576,
        };
        assert_eq!(cached.response_cache, Some(on));
        assert_eq!(r.tenant("cached").await.unwrap(), cached);
        assert_eq!(
            r.snapshot()
                .tenant(cached.id)
                .unwrap()
                .tenant
                .response_cache,
            Some(on)
        );
        // a patch without the field keeps it; an object replaces it; null turns it off
        let t = r
            .update_tenant("cached", from(json!({"display_name": "Renamed"})))
            .await
            .unwrap();
        assert_eq!(t.response_cache, Some(on));
        let t = r
            .update_tenant(
                "plain",
                from(json!({"response_cache": {"ttl_seconds": 1, "max_bytes": 1024}})),
            )
            .await
            .unwrap();
        assert_eq!(
            t.response_cache,
            Some(ResponseCacheSettings {
                ttl_seconds: 1,
                max_bytes: 1024
            })
        );
        let t = r
            .update_tenant("cached", from(json!({"response_cache": null})))
            .await
            .unwrap();
        assert_eq!(t.response_cache, None);
        assert_eq!(
            r.snapshot()
                .tenant(cached.id)
                .unwrap()
                .tenant
                .response_cache,
            None,
            "the change reaches the snapshot"
        );
        for (bad, field) in [
            (
                json!({"ttl_seconds": 0, "max_bytes": 4096}),
                "response_cache.ttl_seconds",
            ),
            (
                json!({"ttl_seconds": 2592001, "max_bytes": 4096}),
                "response_cache.ttl_seconds",
            ),
            (
                json!({"ttl_seconds": 60, "max_bytes": 1023}),
                "response_cache.max_bytes",
            ),
            (
                json!({"ttl_seconds": 60, "max_bytes": 1099511627777u64}),
                "response_cache.max_bytes",
            ),
        ] {
            let error = r
                .update_tenant("plain", from(json!({"response_cache": bad})))
                .await
                .unwrap_err();
            assert!(
                matches!(&error, RegistryError::Invalid { field: f, .. } if f == field),
                "{error:?}"
            );
        }
        for bad in [
            json!({"ttl_seconds": 60}),
            json!({"ttl_seconds": 60, "max_bytes": 4096, "extra": 1}),
            json!([60, 4096]),
        ] {
            assert!(serde_json::from_value::<TenantPatch>(json!({"response_cache": bad})).is_err());
        }
        assert_eq!(
            r.tenant("plain")
                .await
                .unwrap()
                .response_cache
                .map(|c| c.ttl_seconds),
            Some(1),
            "a refused patch wrote nothing"
        );
    }

    pub async fn offboarding_removes_the_tenant_its_keys_and_reserved_resources(r: Arc<Registry>) {
        r.create_resource(resource("aoai-acme", None, Some("acme")))
            .await
            .unwrap();
        r.create_resource(resource("aoai-shared", None, None))
            .await
            .unwrap();
        r.create_deployment(deployment("aoai-shared", "acme-own", Some("acme")))
            .await
            .unwrap();
        r.create_service(service("search-acme", None, Some("acme")))
            .await
            .unwrap();
        r.onboard(tenant(json!({"slug": "acme", "display_name": "Acme",
            "openai": {"isolation": "dedicated_resource", "resources": ["aoai-acme"]},
            "search": {"isolation": "dedicated_service", "service": "search-acme"}})))
            .await
            .unwrap();
        let (_, secret) = r
            .create_key("acme", from(json!({"name": "k"})))
            .await
            .unwrap();
        r.offboard("acme").await.unwrap();
        assert!(matches!(
            r.tenant("acme").await,
            Err(RegistryError::NotFound { .. })
        ));
        let snapshot = r.snapshot();
        assert!(snapshot.key(secret.expose_secret()).is_none());
        assert!(snapshot.tenant_by_slug("acme").is_none());
        let names: Vec<String> = r
            .resources()
            .await
            .unwrap()
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(names, vec!["aoai-shared"]);
        assert!(r.deployments().await.unwrap().is_empty());
        assert!(r.services().await.unwrap().is_empty());
        assert!(matches!(
            r.offboard("acme").await,
            Err(RegistryError::NotFound { .. })
        ));
    }

    pub async fn tenants_are_listed_in_pages(r: Arc<Registry>) {
        for slug in ["e-co", "a-co", "c-co", "b-co", "d-co"] {
            r.onboard(tenant(json!({"slug": slug, "display_name": slug})))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = r.tenants(after.as_deref(), Some(2)).await.unwrap();
            seen.extend(page.data.iter().map(|t| t.slug.to_string()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, vec!["a-co", "b-co", "c-co", "d-co", "e-co"]);
        is_invalid(r.tenants(None, Some(0)).await, "limit");
        is_invalid(r.tenants(None, Some(1000)).await, "limit");
    }

    pub async fn tenants_are_filtered_in_the_store_page_by_page(r: Arc<Registry>) {
        let byo = json!({"isolation": "tenant_provided", "endpoint": "https://byo.example.com",
            "api_key": "byo-secret", "region": "eastus"});
        for (slug, openai) in [
            ("acme-a", Value::Null),
            ("acme-b", byo.clone()),
            ("acmex", Value::Null),
            ("acme-c", Value::Null),
            ("zed", byo),
        ] {
            r.onboard(tenant(
                json!({"slug": slug, "display_name": slug, "openai": openai}),
            ))
            .await
            .unwrap();
        }
        r.update_tenant("acme-c", from(json!({"status": "suspended"})))
            .await
            .unwrap();
        let list = |filter: TenantFilter| {
            let r = r.clone();
            async move {
                let mut seen = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = r
                        .tenants_matching(&filter, after.as_deref(), Some(1))
                        .await
                        .unwrap();
                    seen.extend(page.data.iter().map(|t| t.slug.to_string()));
                    match page.next {
                        Some(next) => after = Some(next),
                        None => return seen,
                    }
                }
            }
        };
        let filter = |prefix: Option<&str>, status: Option<&str>, openai: Option<&str>| {
            TenantFilter::parse(prefix, status, openai, None).unwrap()
        };
        assert_eq!(
            list(filter(Some("acme-"), None, None)).await,
            ["acme-a", "acme-b", "acme-c"]
        );
        assert_eq!(
            list(filter(Some("acme"), Some("active"), None)).await,
            ["acme-a", "acme-b", "acmex"]
        );
        assert_eq!(
            list(filter(None, None, Some("tenant_provided"))).await,
            ["acme-b", "zed"]
        );
        assert_eq!(
            list(filter(Some("acme-"), None, Some("none"))).await,
            ["acme-a", "acme-c"]
        );
        assert_eq!(
            list(filter(None, Some("suspended"), Some("none"))).await,
            ["acme-c"]
        );
        assert!(list(filter(Some("acme-"), Some("offboarding"), None))
            .await
            .is_empty());
        // The page carries each tenant's placement, read with it.
        let page = r
            .tenants_matching(&filter(Some("acme-b"), None, None), None, None)
            .await
            .unwrap();
        assert_eq!(
            page.data[0].openai.as_ref().map(|p| p.isolation()),
            Some("tenant_provided")
        );
        for (prefix, status, openai, search) in [
            (Some("A"), None, None, None),
            (Some("a_"), None, None, None),
            (Some(""), None, None, None),
            (None, Some("gone"), None, None),
            (None, None, Some("shared_index"), None),
            (None, None, None, Some("shared")),
        ] {
            assert!(TenantFilter::parse(prefix, status, openai, search).is_err());
        }
    }

    pub async fn many_tenants_onboard_each_all_or_nothing(r: Arc<Registry>) {
        let key = |name: &str| -> NewApiKey { from(json!({"name": name})) };
        let item = |slug: &str, keys: Vec<NewApiKey>| NewTenantWithKeys {
            tenant: tenant(json!({"slug": slug, "display_name": slug})),
            keys,
        };
        r.onboard(tenant(json!({"slug": "taken", "display_name": "taken"})))
            .await
            .unwrap();
        // Checked whole: one item that breaks a rule refuses them all, nothing written.
        is_invalid(
            r.onboard_many(vec![
                item("first", vec![key("a")]),
                item("halfway", vec![key("fine"), key("")]),
            ])
            .await,
            "tenants[1].keys[1].name",
        );
        assert!(r.tenant("first").await.is_err());
        let results = r
            .onboard_many(vec![
                item("first", vec![key("a"), key("b")]),
                item("taken", vec![key("a")]),
                item("again", vec![]),
                item("again", vec![key("c")]),
                item("last", vec![]),
            ])
            .await
            .unwrap();
        let outcome: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(outcome, [true, false, true, false, true]);
        assert!(matches!(results[1], Err(RegistryError::Conflict(_))));
        assert!(matches!(results[3], Err(RegistryError::Conflict(_))));
        let first = results[0].as_ref().unwrap();
        assert_eq!(first.keys.len(), 2);
        // Written and in the view at once, keys included; the refused items wrote nothing.
        let snapshot = r.snapshot();
        for (_, secret) in &first.keys {
            let entry = snapshot.key(secret.expose_secret()).expect("key served");
            assert_eq!(entry.tenant_id, first.tenant.id);
        }
        assert!(snapshot.tenant_by_slug("last").is_some());
        assert_eq!(r.keys("taken").await.unwrap().len(), 0);
        assert_eq!(r.keys("again").await.unwrap().len(), 0);
        let too_many: Vec<NewTenantWithKeys> = (0..=tenant_registry::MAX_BATCH)
            .map(|i| item(&format!("bulk{i}"), vec![]))
            .collect();
        is_invalid(r.onboard_many(too_many).await, "tenants");
        assert!(r.tenant("bulk0").await.is_err());
    }

    pub async fn index_templates_are_validated_like_azure_indexes(r: Arc<Registry>) {
        let good: NewIndexTemplate = from(json!({"name": "docs", "fields": [
            {"name": "id", "type": "Edm.String", "key": true},
            {"name": "title", "type": "Edm.String", "searchable": true},
            {"name": "tags", "type": "Collection(Edm.String)", "filterable": true}],
            "suggesters": [{"name": "sg", "searchMode": "analyzingInfixMatching", "sourceFields": ["title"]}]}));
        let created = r.create_template(good.clone()).await.unwrap();
        assert_eq!(r.templates().await.unwrap(), vec![created]);
        assert!(matches!(
            r.create_template(good).await,
            Err(RegistryError::Conflict(_))
        ));
        let bad = [
            (json!([{"name": "id", "type": "Edm.String"}]), "fields"),
            (
                json!([{"name": "id", "type": "Edm.Int32", "key": true}]),
                "fields[0].type",
            ),
            (
                json!([{"name": "id", "type": "Edm.String", "key": true}, {"name": "bulkheadTenant", "type": "Edm.String"}]),
                "fields[1].name",
            ),
            (
                json!([{"name": "id", "type": "Edm.String", "key": true}, {"name": "id", "type": "Edm.String"}]),
                "fields[1].name",
            ),
            (
                json!([{"name": "id", "type": "Edm.String", "key": true}, {"name": "x", "type": "Edm.Nope"}]),
                "fields[1].type",
            ),
            (
                json!([{"name": "_id", "type": "Edm.String", "key": true}]),
                "fields[0].name",
            ),
            (json!([]), "fields"),
        ];
        for (fields, field) in bad {
            is_invalid(
                r.create_template(from(json!({"name": "other", "fields": fields})))
                    .await,
                field,
            );
        }
        r.delete_template("docs").await.unwrap();
        assert!(r.templates().await.unwrap().is_empty());
    }

    /// Resources, services and tenant-provided endpoints take an Entra ID credential
    /// instead of a key: sealed like a key, never shown, opened into the view; exactly one
    /// of `api_key` and `auth`; and an endpoint a tenant chose never gets the gateway's own
    /// identity.
    pub async fn entra_credentials_are_sealed_opened_and_never_shown(r: Arc<Registry>) {
        let principal = json!({"kind": "client_secret", "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "entra-secret-value"});
        let created = r
            .create_resource(from(
                json!({"name": "aoai-mi", "endpoint": "https://mi.example",
                "region": "eastus", "auth": {"kind": "managed_identity"}}),
            ))
            .await
            .unwrap();
        r.create_service(from(
            json!({"name": "search-sp", "endpoint": "https://sp.example",
            "region": "eastus", "auth": principal.clone()}),
        ))
        .await
        .unwrap();
        r.onboard(tenant(json!({"slug": "own-sp", "display_name": "Own SP",
            "openai": {"isolation": "tenant_provided", "endpoint": "https://own.example",
                "region": "eastus", "auth": principal.clone()}})))
            .await
            .unwrap();
        // The admin reads show the kind and the principal, never the secret.
        let services = r.services().await.unwrap();
        let auth = services[0].auth.as_ref().unwrap();
        assert_eq!(
            (auth.kind, auth.client_id.as_deref()),
            (
                "client_secret",
                Some("11111111-2222-3333-4444-555555555555")
            )
        );
        let resources = r.resources().await.unwrap();
        assert_eq!(resources[0].auth.as_ref().unwrap().kind, "managed_identity");
        let shown = serde_json::to_string(&services).unwrap()
            + &serde_json::to_string(&r.tenant("own-sp").await.unwrap()).unwrap();
        assert!(!shown.contains("entra-secret-value"), "{shown}");
        let snapshot = r.snapshot();
        let name = |n: &str| tenant_registry::names::ResourceName::parse(n).unwrap();
        assert_eq!(
            snapshot.resource_credential(&created.name).unwrap().kind(),
            "managed_identity"
        );
        assert_eq!(
            snapshot
                .service_credential(&name("search-sp"))
                .unwrap()
                .kind(),
            "client_secret"
        );
        let own = snapshot.tenant_by_slug("own-sp").unwrap();
        assert_eq!(
            own.openai_credential.as_ref().unwrap().kind(),
            "client_secret"
        );

        // refused, and nothing written
        is_invalid(
            r.create_resource(from(
                json!({"name": "aoai-both", "endpoint": "https://b.example",
                "region": "eastus", "api_key": "k", "auth": {"kind": "managed_identity"}}),
            ))
            .await,
            "auth",
        );
        is_invalid(
            r.create_resource(from(
                json!({"name": "aoai-none", "endpoint": "https://n.example",
                "region": "eastus"}),
            ))
            .await,
            "api_key",
        );
        is_invalid(
            r.create_service(from(
                json!({"name": "search-bad", "endpoint": "https://x.example",
                "region": "eastus", "auth": {"kind": "client_secret", "tenant_id": "t",
                "client_id": "not-a-guid", "client_secret": "s"}}),
            ))
            .await,
            "auth.client_id",
        );
        for kind in ["managed_identity", "workload_identity"] {
            is_invalid(
                r.onboard(tenant(json!({"slug": "borrower", "display_name": "B",
                    "openai": {"isolation": "tenant_provided", "endpoint": "https://evil.example",
                        "region": "eastus", "auth": {"kind": kind}}})))
                    .await,
                "openai.auth.kind",
            );
        }
        assert!(r.tenant("borrower").await.is_err());
        assert!(r
            .snapshot()
            .resource_credential(&name("aoai-both"))
            .is_none());
    }

    pub async fn a_fresh_store_is_ready_and_reopens_idempotently(r: Arc<Registry>) {
        r.ready().await.unwrap();
        assert!(r.store_healthy());
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[sqlx::test(migrations = false)]
                async fn $name(pool: sqlx::PgPool) {
                    super::scenarios::$name(super::open(tenant_registry::SqlStore::from_postgres(pool)).await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = super::temp_dir();
                    let store = tenant_registry::SqlStore::sqlite(tenant_registry::SqliteLocation::Dir(&dir)).await.unwrap();
                    super::scenarios::$name(super::open(store).await).await;
                    let _ = std::fs::remove_dir_all(dir);
                }
            )*
        }
    };
}

conformance!(
    resources_round_trip_and_never_show_their_key,
    deployments_need_their_resource_and_a_unique_name,
    pools_hold_only_shared_deployments,
    every_isolation_model_onboards_and_reads_back,
    placement_rules_hold_and_nothing_is_written_on_error,
    patch_changes_status_limits_and_placement_under_the_same_rules,
    keys_are_hashed_listed_without_secret_and_revocable,
    a_key_of_one_tenant_cannot_be_revoked_through_another,
    key_limits_round_trip_and_reach_the_snapshot,
    a_key_patch_keeps_absent_limits_and_removes_null_ones,
    a_key_of_one_tenant_cannot_be_changed_through_another,
    the_context_overflow_policy_defaults_to_reject_and_round_trips,
    the_response_cache_setting_is_off_by_default_and_round_trips,
    offboarding_removes_the_tenant_its_keys_and_reserved_resources,
    tenants_are_listed_in_pages,
    tenants_are_filtered_in_the_store_page_by_page,
    many_tenants_onboard_each_all_or_nothing,
    index_templates_are_validated_like_azure_indexes,
    a_fresh_store_is_ready_and_reopens_idempotently,
    entra_credentials_are_sealed_opened_and_never_shown,
);

/// Postgres only: a write through one registry reaches another registry on the same database
/// by notification, well before the periodic reload.
#[sqlx::test(migrations = false)]
async fn a_change_reaches_another_replica_by_notification(pool: sqlx::PgPool) {
    let writer = open(SqlStore::from_postgres(pool.clone())).await;
    let reader = open(SqlStore::from_postgres(pool)).await;
    let _watch = reader.watch(Duration::from_secs(3600));
    writer
        .onboard(tenant(json!({"slug": "acme", "display_name": "Acme"})))
        .await
        .unwrap();
    let (key, secret) = writer
        .create_key("acme", from(json!({"name": "k"})))
        .await
        .unwrap();
    let until = |present: bool| {
        let reader = Arc::clone(&reader);
        let secret = SecretString::from(secret.expose_secret().to_owned());
        async move {
            for _ in 0..200 {
                if reader.snapshot().key(secret.expose_secret()).is_some() == present {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    };
    assert!(
        until(true).await,
        "the new key did not reach the other replica within 2 s"
    );
    let patch: ApiKeyPatch = from(json!({"limits": {"tokens_per_minute": 42}}));
    writer
        .update_key("acme", &key.id.to_string(), patch)
        .await
        .unwrap();
    let mut seen = None;
    for _ in 0..200 {
        seen = reader
            .snapshot()
            .key(secret.expose_secret())
            .and_then(|k| k.limits.tokens_per_minute);
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen,
        Some(42),
        "a key's new limits did not reach the other replica within 2 s"
    );
    writer
        .revoke_key("acme", &key.id.to_string())
        .await
        .unwrap();
    assert!(
        until(false).await,
        "the revocation did not reach the other replica within 2 s"
    );
}

/// Credentials are sealed in the database: the raw rows never hold the plaintext.
#[sqlx::test(migrations = false)]
async fn credentials_are_sealed_at_rest(pool: sqlx::PgPool) {
    let r = open(SqlStore::from_postgres(pool.clone())).await;
    r.create_resource(resource("aoai-a", None, None))
        .await
        .unwrap();
    r.onboard(tenant(
        json!({"slug": "tp", "display_name": "TP", "openai": {"isolation": "tenant_provided",
        "endpoint": "https://tp.example", "api_key": "tenant-own-key", "region": "eastus"}}),
    ))
    .await
    .unwrap();
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar("SELECT credential FROM openai_resources")
        .fetch_all(&pool)
        .await
        .unwrap();
    let tenant_sealed: Vec<u8> = sqlx::query_scalar("SELECT openai_credential FROM tenants")
        .fetch_one(&pool)
        .await
        .unwrap();
    for blob in sealed.iter().chain([&tenant_sealed]) {
        let text = String::from_utf8_lossy(blob);
        assert!(!text.contains("secret-of-aoai-a") && !text.contains("tenant-own-key"));
    }
    // a registry with another master key keeps serving, without the credentials it cannot open
    let other = Registry::open(Arc::new(SqlStore::from_postgres(pool)), master())
        .await
        .unwrap();
    let name = tenant_registry::names::ResourceName::parse("aoai-a").unwrap();
    assert!(other.snapshot().resource_credential(&name).is_none());
    assert!(other
        .snapshot()
        .tenant_by_slug("tp")
        .unwrap()
        .openai_credential
        .is_none());
    assert_eq!(
        Store::backend(&SqlStore::from_sqlite(
            sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap()
        )),
        "sqlite"
    );
}

/// What migration 0003 adds, checked in the schema itself (on both backends): a tenant row
/// written without a policy (as every row before 0003 was) reads back as `reject`, and the
/// columns refuse an unknown policy and a negative key limit.
macro_rules! schema_checks {
    ($pool:expr, $store:expr) => {{
        let pool = $pool;
        let r = open($store).await;
        let (key, _) = {
            r.onboard(tenant(json!({"slug": "acme", "display_name": "Acme"})))
                .await
                .unwrap();
            r.create_key("acme", from(json!({"name": "k"})))
                .await
                .unwrap()
        };
        sqlx::query(
            "INSERT INTO tenants (id, slug, display_name, status, created_at, updated_at) \
             VALUES ($1, 'legacy', 'Legacy', 'active', $2, $2)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(chrono::Utc::now())
        .execute(&pool)
        .await
        .unwrap();
        r.reload().await.unwrap();
        assert_eq!(
            r.snapshot()
                .tenant_by_slug("legacy")
                .unwrap()
                .context_overflow(),
            ContextOverflow::Reject
        );
        assert!(
            sqlx::query("UPDATE tenants SET context_overflow = 'drop'")
                .execute(&pool)
                .await
                .is_err(),
            "an unknown policy is refused"
        );
        assert!(
            sqlx::query("UPDATE tenants SET context_overflow = NULL")
                .execute(&pool)
                .await
                .is_err(),
            "the policy is never null"
        );
        for column in ["tokens_per_minute", "requests_per_minute", "monthly_tokens"] {
            assert!(
                sqlx::query(&format!("UPDATE api_keys SET {column} = -1 WHERE id = $1"))
                    .bind(key.id)
                    .execute(&pool)
                    .await
                    .is_err(),
                "a negative {column} is refused"
            );
        }
    }};
}

#[sqlx::test(migrations = false)]
async fn the_schema_defaults_the_policy_and_checks_the_new_columns_on_postgres(pool: sqlx::PgPool) {
    schema_checks!(pool.clone(), SqlStore::from_postgres(pool));
}

#[tokio::test]
async fn the_schema_defaults_the_policy_and_checks_the_new_columns_on_sqlite() {
    let dir = temp_dir();
    let store = SqlStore::sqlite(tenant_registry::SqliteLocation::Dir(&dir))
        .await
        .unwrap();
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("registry.db").display()))
            .await
            .unwrap();
    schema_checks!(pool, store);
    let _ = std::fs::remove_dir_all(dir);
}

/// The master key rotates: with the new key primary and the old one previous, every
/// credential (including one in the format before key ids) still opens; a reseal moves them
/// all under the new key, after which the new key alone opens them and the old alone none.
async fn the_master_key_rotates_without_losing_a_credential(store: SqlStore) {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::Engine;

    let old_b64 = MasterKey::generate_base64();
    let new_b64 = MasterKey::generate_base64();
    let with = |primary: &SecretString, previous: &[SecretString]| {
        MasterKey::with_previous(primary, previous).unwrap()
    };
    let before = Registry::open(Arc::new(store.clone()), with(&old_b64, &[]))
        .await
        .unwrap();
    before
        .create_resource(resource("aoai-a", None, None))
        .await
        .unwrap();
    before
        .create_service(service("search-a", None, None))
        .await
        .unwrap();
    before
        .onboard(tenant(
            json!({"slug": "tp", "display_name": "TP", "openai": {"isolation": "tenant_provided",
            "endpoint": "https://tp.example", "api_key": "tenant-own-key", "region": "eastus"}}),
        ))
        .await
        .unwrap();
    // The resource's credential as the first format wrote it (AES-256-GCM, no key id).
    let catalog = store.catalog().await.unwrap();
    let row = &catalog.resources[0];
    let raw_key = base64::engine::general_purpose::STANDARD
        .decode(old_b64.expose_secret())
        .unwrap();
    let legacy = aes_gcm::Aes256Gcm::new_from_slice(&raw_key)
        .unwrap()
        .encrypt(
            aes_gcm::Nonce::from_slice(&[5; 12]),
            Payload {
                msg: b"secret-of-aoai-a",
                aad: b"openai_resources:aoai-a",
            },
        )
        .unwrap();
    let legacy = [&[1u8][..], &[5; 12], &legacy].concat();
    assert!(store
        .reseal(
            tenant_registry::store::SealedRow::Resource(row.id),
            &row.credential,
            &legacy
        )
        .await
        .unwrap());

    let credentials = |r: &Registry| {
        let snapshot = r.snapshot();
        let name = |n: &str| tenant_registry::names::ResourceName::parse(n).unwrap();
        [
            snapshot
                .resource_credential(&name("aoai-a"))
                .map(|s| s.to_stored().expose_secret().to_owned()),
            snapshot
                .service_credential(&name("search-a"))
                .map(|s| s.to_stored().expose_secret().to_owned()),
            snapshot
                .tenant_by_slug("tp")
                .and_then(|t| t.openai_credential.as_ref())
                .map(|s| s.to_stored().expose_secret().to_owned()),
        ]
    };
    let expected = [
        Some("secret-of-aoai-a".to_owned()),
        Some("search-secret".to_owned()),
        Some("tenant-own-key".to_owned()),
    ];

    let rotated = Registry::open(
        Arc::new(store.clone()),
        with(&new_b64, std::slice::from_ref(&old_b64)),
    )
    .await
    .unwrap();
    assert_eq!(
        credentials(&rotated),
        expected,
        "old values open under the rotated keyring"
    );
    let report = rotated.reseal_credentials().await.unwrap();
    assert_eq!(
        (report.resealed, report.already_current, report.unreadable),
        (3, 0, 0),
        "{report:?}"
    );
    let again = rotated.reseal_credentials().await.unwrap();
    assert_eq!((again.resealed, again.already_current), (0, 3), "{again:?}");
    assert_eq!(credentials(&rotated), expected);

    let new_only = Registry::open(Arc::new(store.clone()), with(&new_b64, &[]))
        .await
        .unwrap();
    assert_eq!(
        credentials(&new_only),
        expected,
        "the new key alone opens everything"
    );
    let old_only = Registry::open(Arc::new(store), with(&old_b64, &[]))
        .await
        .unwrap();
    assert_eq!(
        credentials(&old_only),
        [None, None, None],
        "nothing is left under the old key"
    );
    assert_eq!(old_only.reseal_credentials().await.unwrap().unreadable, 3);
}

#[sqlx::test(migrations = false)]
async fn the_master_key_rotates_without_losing_a_credential_on_postgres(pool: sqlx::PgPool) {
    the_master_key_rotates_without_losing_a_credential(SqlStore::from_postgres(pool)).await;
}

#[tokio::test]
async fn the_master_key_rotates_without_losing_a_credential_on_sqlite() {
    let dir = temp_dir();
    let store = SqlStore::sqlite(tenant_registry::SqliteLocation::Dir(&dir))
        .await
        .unwrap();
    the_master_key_rotates_without_losing_a_credential(store).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The operations store on both backends: one active operation per tenant, a claim is
/// exclusive, a lease that runs out can be taken over (and the old owner can write nothing
/// more), a cancel stops what has not started.
async fn operations_are_claimed_once_and_taken_over_after_their_lease(store: SqlStore) {
    use operations::{Kind, NewOperation, OperationStore, Status, StoreError, Whose};
    let store: Arc<SqlStore> = Arc::new(store);
    store.migrate().await.unwrap();
    let tenant = uuid::Uuid::now_v7();
    let new = |tenant| NewOperation {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant,
        tenant_slug: "acme".into(),
        kind: Kind::SearchMove,
        spec: json!({"to": "dedicated_index"}),
        phase: "validate".into(),
        created_at: chrono::Utc::now(),
    };
    let first = new(tenant);
    store.insert_operation(&first).await.unwrap();
    match store.insert_operation(&new(tenant)).await {
        Err(StoreError::Busy(id)) => assert_eq!(id, first.id),
        other => panic!("{other:?}"),
    }
    let read = store.operation(first.id).await.unwrap().unwrap();
    assert_eq!(
        (read.status, read.kind, read.spec["to"].as_str()),
        (
            Status::NotStarted,
            Kind::SearchMove,
            Some("dedicated_index")
        )
    );

    // Exclusive claims, even when two replicas ask at once.
    let now = chrono::Utc::now();
    let lease = Duration::from_millis(300);
    let (a, b) = tokio::join!(
        store.claim_operation("a", now, lease),
        store.claim_operation("b", now, lease)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_some() != b.is_some(), "exactly one claim: {a:?} {b:?}");
    let (winner, loser) = if a.is_some() { ("a", "b") } else { ("b", "a") };
    assert_eq!(
        store
            .checkpoint_operation(
                first.id,
                winner,
                "copying",
                &json!({"copied": 5}),
                now + chrono::Duration::milliseconds(300)
            )
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        store
            .checkpoint_operation(first.id, loser, "copying", &json!({"copied": 0}), now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .heartbeat_operation(first.id, winner, now + chrono::Duration::milliseconds(300))
            .await
            .unwrap(),
        Some(false)
    );
    assert!(
        store
            .claim_operation(loser, chrono::Utc::now(), lease)
            .await
            .unwrap()
            .is_none(),
        "held"
    );

    // The lease runs out: another replica takes the operation, with its progress.
    let later = chrono::Utc::now() + chrono::Duration::seconds(2);
    let taken = store
        .claim_operation(loser, later, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (taken.attempts, taken.progress["copied"].as_u64()),
        (2, Some(5))
    );
    assert_eq!(taken.lease_owner.as_deref(), Some(loser));
    assert_eq!(
        store
            .checkpoint_operation(first.id, winner, "copying", &json!({}), later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .heartbeat_operation(first.id, winner, later)
            .await
            .unwrap(),
        None,
        "the old owner lost it"
    );
    assert!(!store
        .finish_operation(first.id, winner, Status::Succeeded, None)
        .await
        .unwrap());

    // A cancel request reaches the running operation; its owner finishes it.
    let flagged = store.request_cancel(first.id).await.unwrap().unwrap();
    assert!(flagged.cancel_requested && flagged.status == Status::Running);
    assert_eq!(
        store
            .heartbeat_operation(first.id, loser, later)
            .await
            .unwrap(),
        Some(true)
    );
    assert!(store
        .finish_operation(first.id, loser, Status::Canceled, None)
        .await
        .unwrap());
    assert!(store.active_operation(tenant).await.unwrap().is_none());

    // Finished: the tenant may start another; one not started is canceled at once.
    let second = new(tenant);
    store.insert_operation(&second).await.unwrap();
    let canceled = store.request_cancel(second.id).await.unwrap().unwrap();
    assert_eq!(canceled.status, Status::Canceled);
    assert!(canceled.finished_at.is_some());
    let listed = store
        .operations(Whose::Tenant(tenant), None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![second.id, first.id],
        "newest first"
    );
    let by_slug = store
        .operations(Whose::Slug("acme"), None, 10)
        .await
        .unwrap();
    assert_eq!(by_slug.len(), 2);
    assert!(store
        .operations(Whose::Slug("other"), None, 10)
        .await
        .unwrap()
        .is_empty());
    let failed = operations::OperationError {
        code: "x".into(),
        message: "y".into(),
    };
    let third = new(uuid::Uuid::now_v7());
    store.insert_operation(&third).await.unwrap();
    let claimed = store
        .claim_operation("c", chrono::Utc::now(), lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, third.id);
    assert!(store
        .finish_operation(third.id, "c", Status::Failed, Some(&failed))
        .await
        .unwrap());
    let read = store.operation(third.id).await.unwrap().unwrap();
    assert_eq!((read.status, read.error), (Status::Failed, Some(failed)));
    assert_eq!(
        store
            .operations(Whose::Everyone, Some(Status::Failed), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[sqlx::test(migrations = false)]
async fn operations_are_claimed_once_and_taken_over_after_their_lease_on_postgres(
    pool: sqlx::PgPool,
) {
    operations_are_claimed_once_and_taken_over_after_their_lease(SqlStore::from_postgres(pool))
        .await;
}

#[tokio::test]
async fn operations_are_claimed_once_and_taken_over_after_their_lease_on_sqlite() {
    let dir = temp_dir();
    let store = SqlStore::sqlite(tenant_registry::SqliteLocation::Dir(&dir))
        .await
        .unwrap();
    operations_are_claimed_once_and_taken_over_after_their_lease(store).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Two registries on one store, as two replicas: what one writes, the other applies from the
/// change log alone (tenants, keys, a deletion), without reading everything; a catalog change
/// reads everything.
async fn a_second_registry_follows_the_change_log(store: SqlStore) {
    let store: Arc<dyn Store> = Arc::new(store);
    let key = master();
    let one = Registry::open(Arc::clone(&store), key.clone())
        .await
        .unwrap();
    let two = Registry::open(Arc::clone(&store), key).await.unwrap();
    let start = two.view_counters();
    assert_eq!(start.full_reloads, 1, "opening reads everything once");

    one.onboard(tenant(json!({"slug": "acme", "display_name": "Acme"})))
        .await
        .unwrap();
    let (made, secret) = one
        .create_key("acme", from(json!({"name": "k", "scope": "read"})))
        .await
        .unwrap();
    assert!(
        two.snapshot().tenant_by_slug("acme").is_none(),
        "not applied yet"
    );
    two.catch_up().await.unwrap();
    let seen = two.snapshot();
    assert_eq!(
        seen.tenant_by_slug("acme").unwrap().tenant.display_name,
        "Acme"
    );
    assert_eq!(seen.key(secret.expose_secret()).unwrap().id, made.id);
    let counters = two.view_counters();
    assert_eq!(counters.full_reloads, start.full_reloads, "no full read");
    assert!(counters.changes_applied >= 2, "{counters:?}");
    assert!(counters.mark > start.mark);

    // A change to a tenant, a revoked key: the same way.
    one.update_tenant("acme", from(json!({"display_name": "Acme Corp"})))
        .await
        .unwrap();
    one.revoke_key("acme", &made.id.to_string()).await.unwrap();
    two.catch_up().await.unwrap();
    let seen = two.snapshot();
    assert_eq!(
        seen.tenant_by_slug("acme").unwrap().tenant.display_name,
        "Acme Corp"
    );
    assert!(seen.key(secret.expose_secret()).is_none(), "revoked");
    assert_eq!(two.view_counters().full_reloads, start.full_reloads);

    // Offboarding removes the tenant and its slug.
    one.offboard("acme").await.unwrap();
    two.catch_up().await.unwrap();
    assert!(two.snapshot().tenant_by_slug("acme").is_none());
    assert_eq!(two.snapshot().tenant_count(), 0);

    // A catalog change reads everything (every tenant's view depends on the catalog).
    one.create_resource(resource("aoai-x", None, None))
        .await
        .unwrap();
    two.catch_up().await.unwrap();
    assert_eq!(two.view_counters().full_reloads, start.full_reloads + 1);
    assert_eq!(two.snapshot().catalog.resources.len(), 1);

    // A bulk onboarding larger than one id chunk (500), with keys and a placement that links
    // a resource, arrives through the change log too, rows and links intact.
    one.create_resource(resource("aoai-bulk", None, Some("bulk0000")))
        .await
        .unwrap();
    two.catch_up().await.unwrap();
    let reloads = two.view_counters().full_reloads;
    let items: Vec<NewTenantWithKeys> = (0..600)
        .map(|i| {
            let slug = format!("bulk{i:04}");
            let openai = if i == 0 {
                json!({"isolation": "dedicated_resource", "resources": ["aoai-bulk"]})
            } else {
                Value::Null
            };
            NewTenantWithKeys {
                tenant: tenant(json!({"slug": slug, "display_name": slug, "openai": openai})),
                keys: vec![from(json!({"name": "k"}))],
            }
        })
        .collect();
    let made = one.onboard_many(items).await.unwrap();
    two.catch_up().await.unwrap();
    assert_eq!(two.view_counters().full_reloads, reloads, "no full read");
    let seen = two.snapshot();
    assert_eq!(seen.tenant_count(), 600);
    for result in &made {
        let onboarded = result.as_ref().unwrap();
        let (_, secret) = &onboarded.keys[0];
        assert_eq!(
            seen.key(secret.expose_secret()).unwrap().tenant_id,
            onboarded.tenant.id
        );
    }
    assert_eq!(
        seen.tenant_by_slug("bulk0000").unwrap().tenant.openai,
        made[0].as_ref().unwrap().tenant.openai
    );
    assert!(seen
        .tenant_by_slug("bulk0000")
        .unwrap()
        .tenant
        .openai
        .is_some());

    // Catching up with nothing new changes nothing.
    let before = two.view_counters();
    two.catch_up().await.unwrap();
    assert_eq!(two.view_counters(), before);
    assert_eq!(
        store.prune_changes().await.unwrap(),
        0,
        "far fewer than kept"
    );
}

#[sqlx::test(migrations = false)]
async fn a_second_registry_follows_the_change_log_on_postgres(pool: sqlx::PgPool) {
    a_second_registry_follows_the_change_log(SqlStore::from_postgres(pool)).await;
}

#[tokio::test]
async fn a_second_registry_follows_the_change_log_on_sqlite() {
    let dir = temp_dir();
    let store = SqlStore::sqlite(tenant_registry::SqliteLocation::Dir(&dir))
        .await
        .unwrap();
    a_second_registry_follows_the_change_log(store).await;
    let _ = std::fs::remove_dir_all(dir);
}
