//! Quiver as a cluster over one bucket: one binary, a role chosen at start.
//!
//! - **Writers** (`writer`) own shards by leases in the bucket (`lease`), log each shard's
//!   commits as WAL objects in the bucket, hold the heads and flush blocks listed in the
//!   manifest (`storage::manifest`). No acknowledged sample depends on a local disk.
//! - **Distributors** (`distributor`) authenticate, validate, deduplicate HA pairs
//!   (`ha`), split each request by shard (`shard_of`) and forward the parts to the owners
//!   (`wire`), answering 2xx only when every owner acknowledged.
//! - **Queriers** (`querier`) serve the read API from the manifest's blocks and mirrors of
//!   the writers' heads, built from the WAL objects the writers announce.
//! - **The compactor** (`compactor`) runs compaction and retention under a lease.
//!
//! The bucket is the only shared state: leases, the manifest, WAL objects, HA elections.

pub mod compactor;
pub mod distributor;
pub mod ha;
pub mod lease;
pub mod owners;
pub mod querier;
pub mod wire;
pub mod workers;
pub mod writer;

use std::sync::Arc;

use object_store::ObjectStore;

use crate::config::{Role, ServeConfig};
use crate::model::Labels;

/// A cluster node's settings (`config::ClusterArgs`, resolved).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub role: Role,
    pub shards: u32,
    pub lease_ms: i64,
    pub commit_interval_ms: i64,
    pub poll_interval_ms: i64,
    pub deletion_delay_ms: i64,
    pub advertise_url: Option<String>,
    pub node_id: String,
    pub secret: Option<String>,
    /// Queriers: where the worker service listens (`None`: the API's host, a free port).
    pub worker_listen: Option<String>,
    pub worker_advertise_url: Option<String>,
    /// Queriers: plans run in the querier a request reached only.
    pub local_queries: bool,
    /// Queriers: the least samples (estimated) a PromQL plan reads to run across them.
    pub distribute_min_samples: usize,
    /// Queriers: distributed plans fold partial aggregates on the coordinator.
    pub fold_on_coordinator: bool,
    pub ha: ha::HaConfig,
}

impl ClusterConfig {
    /// How long before its lease expires an owner stops acting on it: a third of the lease.
    pub fn margin_ms(&self) -> i64 {
        self.lease_ms / 3
    }
}

/// The header internal calls carry the cluster secret in.
pub const SECRET_HEADER: &str = "x-quiver-cluster-secret";

/// The shard of a series: FNV-1a (64 bit, stable across versions and machines) of the
/// tenant and the label set, modulo the shard count.
pub fn shard_of(tenant: &str, labels: &Labels, shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(tenant.as_bytes());
    eat(&[0xff]);
    for (n, v) in labels.iter() {
        eat(n.as_bytes());
        eat(&[0xfe]);
        eat(v.as_bytes());
        eat(&[0xff]);
    }
    (h % shards.max(1) as u64) as u32
}

/// The lease of shard `s`.
pub fn shard_lease(s: u32) -> String {
    format!("shard-{s:04}")
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The HTTP client of internal calls: short timeouts (a dead node must not hold a write
/// for long), the cluster secret on every request.
pub fn client(cfg: &ClusterConfig) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(s) = &cfg.secret
        && let Ok(v) = reqwest::header::HeaderValue::from_str(s)
    {
        headers.insert(SECRET_HEADER, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client")
}

/// Runs this process's role until shutdown.
pub async fn run(
    cfg: ServeConfig,
    cluster: ClusterConfig,
    listener: tokio::net::TcpListener,
    store: Arc<dyn ObjectStore>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let advertise = cluster
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    tracing::info!(role = ?cluster.role, node = %cluster.node_id, %advertise, shards = cluster.shards, "cluster node starting");
    match cluster.role {
        Role::Writer => writer::run(cfg, cluster, listener, store, advertise).await,
        Role::Distributor => distributor::run(cfg, cluster, listener, store).await,
        Role::Querier => querier::run(cfg, cluster, listener, store).await,
        Role::Compactor => compactor::run(cfg, cluster, listener, store).await,
        Role::Single => unreachable!("the single process does not start a cluster role"),
    }
}

/// Middleware of internal routes: the cluster secret must match when one is set.
pub async fn check_secret(
    axum::extract::State(secret): axum::extract::State<Option<Arc<str>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(s) = secret {
        let given = req
            .headers()
            .get(SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Constant-time: the secret is a credential.
        use sha2::Digest;
        let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(&*s));
        if a != b {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                "cluster secret missing or wrong",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// A route of a role's own HTTP service (writers and the compactor serve no API routes):
/// the operational routes, open like the API's, and a writer's internal routes, which
/// need the cluster secret (`check_secret` on each handler). Listed in docs/security.md.
pub struct RoleRoute<S> {
    pub path: &'static str,
    /// Who may call it: `open` or `cluster secret`.
    pub need: &'static str,
    pub handler: axum::routing::MethodRouter<S>,
}

/// A role's router from its route list.
pub fn role_router<S: Clone + Send + Sync + 'static>(routes: Vec<RoleRoute<S>>) -> axum::Router<S> {
    routes.into_iter().fold(axum::Router::new(), |r, route| {
        r.route(route.path, route.handler)
    })
}

/// Health, readiness and metrics of a role without the API.
pub fn ops_routes<S: Clone + Send + Sync + 'static>(
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<RoleRoute<S>> {
    use axum::routing::get;
    vec![
        RoleRoute {
            path: "/-/healthy",
            need: "open",
            handler: get(|| async { "Quiver is Healthy.\n" }),
        },
        RoleRoute {
            path: "/-/ready",
            need: "open",
            handler: get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(std::sync::atomic::Ordering::Relaxed) {
                        (axum::http::StatusCode::OK, "Quiver is Ready.\n")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "Service Unavailable\n",
                        )
                    }
                }
            }),
        },
        RoleRoute {
            path: "/metrics",
            need: "open",
            handler: get(crate::api::metrics::plain),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let l = |v: &str| {
            Labels::new(vec![
                ("__name__".into(), "m".into()),
                ("i".into(), v.into()),
            ])
            .unwrap()
        };
        // Pinned (computed independently, FNV-1a 64 in Python): changing the hash would
        // move every series of every existing cluster to another shard.
        assert_eq!(shard_of("default", &l("0"), 1 << 20), 387_556);
        assert_eq!(shard_of("default", &l("0"), 8), 4);
        let a = shard_of("default", &l("0"), 8);
        assert_ne!(
            (0..64)
                .map(|i| shard_of("default", &l(&i.to_string()), 8))
                .filter(|&s| s == a)
                .count(),
            64,
            "series spread over shards"
        );
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[shard_of("default", &l(&i.to_string()), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_ne!(
            (0..64)
                .map(|i| shard_of("a", &l(&i.to_string()), 8))
                .collect::<Vec<_>>(),
            (0..64)
                .map(|i| shard_of("b", &l(&i.to_string()), 8))
                .collect::<Vec<_>>(),
            "the tenant is part of the hash"
        );
    }
}
