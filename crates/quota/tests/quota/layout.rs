//! Key names: the tenant as a hash tag so the scripts run on Redis Cluster (a real cluster of
//! three redis-servers), and the move from the names of earlier releases on a standalone Redis
//! without losing a month's count.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use quota::{Limiter, Refusal};

use crate::support::*;

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn exists(url: &str, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn(url).await)
        .await
        .unwrap()
        == 1
}

async fn month_used(url: &str, key: &str) -> Option<u64> {
    redis::cmd("HGET")
        .arg(key)
        .arg("mu")
        .query_async::<Option<u64>>(&mut conn(url).await)
        .await
        .unwrap()
}

async fn limiter(url: &str, prefix: &str) -> Limiter {
    let limiter = Limiter::new(config(url, prefix)).unwrap();
    limiter.warm_up(Duration::from_secs(5)).await.unwrap();
    limiter
}

#[tokio::test]
async fn a_redis_without_old_names_uses_the_tagged_names_from_the_start() {
    let url = redis_url();
    let prefix = unique_prefix("layout-new");
    let limiter = limiter(&url, &prefix).await;
    let scopes = [
        tenant("acme", limits(None, None, Some(1_000))),
        key("acme-key", limits(None, None, Some(1_000))),
    ];
    limiter
        .reserve(&scopes, 100)
        .await
        .unwrap()
        .settle(100)
        .await;
    assert!(exists(&url, &format!("{prefix}t:{{acme}}")).await);
    assert!(exists(&url, &format!("{prefix}k:{{acme}}:acme-key")).await);
    assert!(!exists(&url, &format!("{prefix}t:acme")).await);
    let marker: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}layout"))
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    assert_eq!(marker.as_deref(), Some("tagged"));
    delete_prefix(&url, &prefix).await;
}

#[tokio::test]
async fn a_rolling_upgrade_counts_under_the_old_names_until_the_switch_then_folds_them() {
    let url = redis_url();
    let prefix = unique_prefix("layout-upgrade");
    let (legacy, tagged) = (format!("{prefix}t:acme"), format!("{prefix}t:{{acme}}"));
    let scopes = [tenant("acme", limits(None, None, Some(1_000)))];

    // What an earlier release left: 700 tokens of this month under the old name.
    let mut redis = conn(&url).await;
    let month = chrono::Utc::now().format("%Y%m").to_string();
    let _: () = redis::cmd("HSET")
        .arg(&legacy)
        .arg("m")
        .arg(&month)
        .arg("mu")
        .arg(700)
        .query_async(&mut redis)
        .await
        .unwrap();

    // New replicas start beside the old ones: old names still exist, so they keep them.
    let new = limiter(&url, &prefix).await;
    new.reserve(&scopes, 100).await.unwrap().settle(100).await;
    assert_eq!(month_used(&url, &legacy).await, Some(800));
    assert!(!exists(&url, &tagged).await);

    // Every replica runs this release: the switch. The next touch folds the old key.
    assert!(!new.use_tagged_names().await.unwrap());
    new.reserve(&scopes, 100).await.unwrap().settle(100).await;
    assert_eq!(month_used(&url, &tagged).await, Some(900));
    assert!(!exists(&url, &legacy).await);

    // A replica of the earlier release that had not stopped yet writes the old name again
    // (from 0, as it finds none): its 50 tokens are added, not lost.
    let _: () = redis::cmd("HSET")
        .arg(&legacy)
        .arg("m")
        .arg(&month)
        .arg("mu")
        .arg(50)
        .query_async(&mut redis)
        .await
        .unwrap();
    new.reserve(&scopes, 50).await.unwrap().settle(50).await;
    assert_eq!(month_used(&url, &tagged).await, Some(1_000));

    // A replica started after the switch reads only the new names, and agrees.
    let later = limiter(&url, &prefix).await;
    assert!(later.use_tagged_names().await.unwrap());
    assert!(matches!(
        later.reserve(&scopes, 1).await,
        Err(Refusal::BudgetExhausted {
            remaining_budget: 0,
            ..
        })
    ));
    delete_prefix(&url, &prefix).await;
}

#[tokio::test]
async fn a_key_prefix_with_a_brace_is_refused() {
    let mut config = config(&redis_url(), "bulkhead:{quota}:");
    config.key_prefix = "bulkhead:{quota}:".to_owned();
    assert!(Limiter::new(config).is_err());
}

/// Three redis-servers in cluster mode, slots split among them by `redis-cli --cluster create`.
struct Cluster {
    nodes: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

impl Cluster {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("quota-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH");
            nodes.push((port, child));
        }
        for (port, _) in &nodes {
            let up = eventually(Duration::from_secs(5), || async {
                tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .is_ok()
            })
            .await;
            assert!(up, "redis-server :{port} did not start");
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli on PATH");
        assert!(created.success(), "redis-cli --cluster create failed");
        let this = Self { nodes, dir };
        for (port, _) in &this.nodes {
            let url = format!("redis://127.0.0.1:{port}");
            let ok = eventually(Duration::from_secs(20), || async {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn(&url).await)
                    .await
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            })
            .await;
            assert!(ok, "the cluster did not become ready");
        }
        this
    }

    fn seeds(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|(p, _)| format!("redis://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }

    /// How many nodes hold at least one key.
    async fn nodes_with_keys(&self) -> usize {
        let mut n = 0;
        for (port, _) in &self.nodes {
            let size: i64 = redis::cmd("DBSIZE")
                .query_async(&mut conn(&format!("redis://127.0.0.1:{port}")).await)
                .await
                .unwrap();
            n += usize::from(size > 0);
        }
        n
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_every_script_runs_and_a_budget_holds_exactly_across_three_replicas() {
    let cluster = Cluster::start().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let mut config = leased_config(&cluster.seeds(), "bulkhead:quota:");
        config.cluster = true;
        let limiter = Limiter::new(config).unwrap();
        limiter.warm_up(Duration::from_secs(10)).await.unwrap();
        replicas.push(limiter);
    }
    // 12 tenants (their keys spread over the slots of all three nodes), each with a key; each
    // tenant's budget is 200 tokens and every call asks for 10: exactly 20 calls of 40 fit.
    let tenants: Vec<String> = (0..12).map(|i| format!("tenant{i}")).collect();
    let calls = tenants.iter().flat_map(|t| {
        (0..40).map(move |i| {
            (
                i,
                [
                    tenant(t, limits(None, None, Some(200))),
                    key(&format!("{t}-key"), limits(Some(1_000_000), None, None)),
                ],
            )
        })
    });
    let results = join_all(calls.map(|(i, scopes)| {
        let limiter = replicas[i % 3].clone();
        async move {
            let admitted = limiter.reserve(&scopes, 10).await;
            match admitted {
                Ok(a) => {
                    a.settle(10).await;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    }))
    .await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, Refusal::BudgetExhausted { .. }),
                "only the budget refuses: {e:?}"
            );
        }
    }
    assert_eq!(admitted, 12 * 20, "every tenant spends its budget exactly");
    assert!(
        cluster.nodes_with_keys().await >= 2,
        "the tenants' keys are spread over the cluster"
    );
    for r in &replicas {
        r.release().await;
    }
}
