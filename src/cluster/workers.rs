//! Queriers as workers of one another's plans (issue 26): each querier serves
//! datafusion-distributed's worker service (gRPC) on a port of its own, heartbeats its
//! worker URL to `cluster/queriers/<node>.json` in the bucket, and reads the others' from
//! there, so a query that reaches one querier runs its plan's tasks on all of them
//! (`promql::plan::Distribution`). Worker traffic carries the cluster secret both ways; a
//! worker refuses a task without it.
//!
//! Queriers are listed apart from `cluster/members/`: writers count every entry there
//! when they split the shards.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion_distributed::{ChannelResolver, Worker, WorkerChannel, WorkerResolver, grpc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use url::Url;

use super::{ClusterConfig, SECRET_HEADER, now_ms};
use crate::api::metrics::METRICS;
use crate::promql::{Distribution, task_session};
use crate::storage::Tenants;

/// Where queriers heartbeat their worker URLs.
const PREFIX: &str = "cluster/queriers";

/// A querier's heartbeat.
#[derive(Serialize, Deserialize)]
struct Member {
    url: String,
    at_ms: i64,
}

/// The live queriers' worker URLs (this one's included), as last read from the bucket.
#[derive(Clone, Default)]
pub struct Members {
    urls: Arc<RwLock<Vec<Url>>>,
}

impl WorkerResolver for Members {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        Ok(self.urls.read().clone())
    }
}

impl Members {
    /// Heartbeats `me` and re-reads the others every `period` until the process ends; a
    /// querier whose heartbeat is older than `lease_ms` is gone.
    fn spawn(
        &self,
        root: Arc<dyn ObjectStore>,
        node: String,
        me: Url,
        period: Duration,
        lease_ms: i64,
    ) {
        let urls = self.urls.clone();
        tokio::spawn(async move {
            let mine = Path::from(format!("{PREFIX}/{node}.json"));
            loop {
                let beat = serde_json::to_vec(&Member {
                    url: me.to_string(),
                    at_ms: now_ms(),
                })
                .expect("a heartbeat serialises");
                if let Err(e) = root.put(&mine, beat.into()).await {
                    tracing::warn!(error = %e, "cannot heartbeat this querier's worker");
                }
                match read_members(root.as_ref(), lease_ms).await {
                    Ok(mut live) => {
                        if !live.contains(&me) {
                            live.push(me.clone());
                        }
                        live.sort();
                        METRICS.cluster_workers.set(live.len() as i64);
                        *urls.write() = live;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list the queriers"),
                }
                tokio::time::sleep(period).await;
            }
        });
    }
}

async fn read_members(root: &dyn ObjectStore, lease_ms: i64) -> object_store::Result<Vec<Url>> {
    let listed: Vec<_> = root.list(Some(&Path::from(PREFIX))).try_collect().await?;
    let now = now_ms();
    let mut out = Vec::new();
    for m in listed {
        let Ok(got) = root.get(&m.location).await else {
            continue;
        };
        let Ok(bytes) = got.bytes().await else {
            continue;
        };
        if let Ok(member) = serde_json::from_slice::<Member>(&bytes)
            && member.at_ms > now - lease_ms
            && let Ok(url) = Url::parse(&member.url)
        {
            out.push(url);
        }
    }
    Ok(out)
}

/// Channels to other queriers' workers: one HTTP/2 connection each (with keepalives, so a
/// dead peer is noticed), the cluster secret on every call.
#[derive(Clone)]
pub struct Channels {
    secret: Option<axum::http::HeaderValue>,
    cache: Arc<RwLock<HashMap<Url, grpc::BoxCloneSyncChannel>>>,
}

impl Channels {
    pub fn new(secret: Option<&str>) -> anyhow::Result<Self> {
        let secret = secret
            .map(|s| {
                let mut v = axum::http::HeaderValue::from_str(s)
                    .map_err(|e| anyhow::anyhow!("--cluster-secret: {e}"))?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        Ok(Channels {
            secret,
            cache: Default::default(),
        })
    }

    fn channel(&self, url: &Url) -> DfResult<grpc::BoxCloneSyncChannel> {
        if let Some(c) = self.cache.read().get(url) {
            return Ok(c.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| DataFusionError::Configuration(format!("worker URL {url}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let secret = self.secret.clone();
        let channel = endpoint.connect_lazy().map_request(
            move |mut req: axum::http::Request<tonic::body::Body>| {
                if let Some(s) = &secret {
                    req.headers_mut().insert(SECRET_HEADER, s.clone());
                }
                req
            },
        );
        let channel = grpc::BoxCloneSyncChannel::new(channel);
        self.cache.write().insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

#[async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(&self, url: &Url) -> DfResult<Box<dyn WorkerChannel>> {
        Ok(grpc::create_worker_client(self.channel(url)?))
    }
}

/// Counts a task while its session lives (the worker drops it when the coordinator is
/// done with the task, or gone).
struct TaskGuard;

impl TaskGuard {
    fn new() -> Self {
        METRICS.worker_tasks.inc();
        METRICS.worker_tasks_started.inc();
        TaskGuard
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        METRICS.worker_tasks.dec();
    }
}

/// Whether a call carries the cluster secret (constant time: it is a credential).
fn secret_ok(secret: Option<&str>, given: Option<&str>) -> bool {
    use sha2::Digest;
    match secret {
        None => true,
        Some(s) => sha2::Sha256::digest(given.unwrap_or("")) == sha2::Sha256::digest(s),
    }
}

/// Starts this querier's worker service, its heartbeat and its view of the others, and
/// returns how its queries reach them. The service runs on `rt` (the query runtime: a
/// task is query work).
pub async fn start(
    cluster: &ClusterConfig,
    api: SocketAddr,
    root: Arc<dyn ObjectStore>,
    tenants: Arc<Tenants>,
    rt: &crate::api::query_runtime::QueryRuntime,
) -> anyhow::Result<Distribution> {
    let listen = match &cluster.worker_listen {
        Some(a) => a.clone(),
        None => format!("{}:0", api.ip()),
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("--cluster-worker-listen {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let advertise = cluster
        .worker_advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let me = Url::parse(&advertise)
        .map_err(|e| anyhow::anyhow!("--cluster-worker-advertise-url {advertise}: {e}"))?;
    let channels = Channels::new(cluster.secret.as_deref())?;
    let worker = {
        let channels = channels.clone();
        Worker::from_session_builder(move |ctx: datafusion_distributed::WorkerQueryContext| {
            let (tenants, channels) = (tenants.clone(), channels.clone());
            async move {
                use datafusion_distributed::DistributedExt;
                let guard = Arc::new(TaskGuard::new());
                let builder = ctx.builder.with_distributed_channel_resolver(channels);
                let ctx = datafusion_distributed::WorkerQueryContext {
                    builder,
                    headers: ctx.headers,
                };
                let state =
                    task_session(ctx, |tenant| async move { Ok(tenants.get(&tenant).await?) })
                        .await?;
                // The guard lives as long as the task's session.
                let mut state = state;
                state.config_mut().set_extension(guard);
                Ok(state)
            }
        })
    };
    let secret = cluster.secret.clone();
    let check = move |req: tonic::Request<()>| {
        let given = req
            .metadata()
            .get(SECRET_HEADER)
            .and_then(|v| v.to_str().ok());
        if secret_ok(secret.as_deref(), given) {
            Ok(req)
        } else {
            Err(tonic::Status::unauthenticated(
                "cluster secret missing or wrong",
            ))
        }
    };
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .layer(tonic::service::InterceptorLayer::new(check))
        .add_service(worker.clone().into_worker_server())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    rt.spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the worker service stopped");
        }
    });
    tracing::info!(%addr, url = %me, "quiver worker listening on {me}");
    let members = Members::default();
    *members.urls.write() = vec![me.clone()];
    members.spawn(
        root,
        cluster.node_id.clone(),
        me.clone(),
        Duration::from_millis((cluster.lease_ms / 4).max(100) as u64),
        cluster.lease_ms,
    );
    Ok(Distribution::new(
        Arc::new(members),
        Arc::new(channels),
        Some((worker, me)),
    ))
}

/// Removes this querier's heartbeat (a clean stop: the others drop it at once).
pub async fn leave(root: &dyn ObjectStore, node: &str) {
    let _ = root
        .delete(&Path::from(format!("{PREFIX}/{node}.json")))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_checked() {
        assert!(secret_ok(None, None));
        assert!(secret_ok(None, Some("x")));
        assert!(secret_ok(Some("s3cret"), Some("s3cret")));
        assert!(!secret_ok(Some("s3cret"), Some("s3cre")));
        assert!(!secret_ok(Some("s3cret"), None));
    }
}
