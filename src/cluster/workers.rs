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
use datafusion_distributed::{
    ChannelResolver, DistributedExt, Worker, WorkerChannel, WorkerQueryContext, WorkerResolver,
    grpc,
};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use url::Url;

use super::{ClusterConfig, SECRET_HEADER, now_ms};
use crate::api::metrics::METRICS;
use crate::promql::{Cancel, Distribution, PromqlError, task_session};
use crate::storage::{Storage, Tenants};

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
        channels: Channels,
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
                        channels.retain(&live);
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

    /// Drops the channels to queriers no longer in `live` (they left or died): their
    /// connections close, and a querier that comes back under the URL gets a new one.
    fn retain(&self, live: &[Url]) {
        self.cache.write().retain(|url, _| live.contains(url));
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.read().len()
    }
}

#[async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(&self, url: &Url) -> DfResult<Box<dyn WorkerChannel>> {
        Ok(grpc::create_worker_client(self.channel(url)?))
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

/// Where a worker finds a tenant's storage.
type StorageOf = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Result<Arc<Storage>, PromqlError>>
        + Send
        + Sync,
>;

/// The distributed queries whose coordinators have a channel open to this worker, each
/// with the token its tasks here stop by. A coordinator that goes away (its query done,
/// canceled, or its process dead) closes its channels; when the last closes, the query's
/// tasks here stop at their next check, rather than running on in plans that
/// datafusion-distributed's task cache keeps until its next housekeeping.
#[derive(Clone, Default)]
struct Queries(Arc<parking_lot::Mutex<HashMap<String, (usize, Cancel)>>>);

impl Queries {
    fn open(&self, id: &str) -> Open {
        tracing::debug!(query = %id, "a distributed query's coordinator channel opened");
        self.0.lock().entry(id.to_string()).or_default().0 += 1;
        Open {
            queries: self.clone(),
            id: id.to_string(),
        }
    }

    fn stop_of(&self, id: &str) -> Option<Cancel> {
        self.0.lock().get(id).map(|(_, c)| c.clone())
    }
}

/// One coordinator channel of a query, open while it lives.
struct Open {
    queries: Queries,
    id: String,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut q = self.queries.0.lock();
        if let Some((n, stop)) = q.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                tracing::debug!(query = %self.id, "a distributed query's coordinator is done here; stopping its tasks");
                stop.cancel();
                q.remove(&self.id);
            }
        }
    }
}

/// The header a task's query id arrives in.
const QUERY_ID_HEADER: &str = "x-datafusion-distributed-config-quiver.query_id";

/// Wraps the worker service: a coordinator channel's request stream holds its query
/// [`Open`] for as long as it lasts.
#[derive(Clone)]
struct TrackQueries<S> {
    inner: S,
    queries: Queries,
}

impl<S> tower::Service<axum::http::Request<tonic::body::Body>> for TrackQueries<S>
where
    S: tower::Service<axum::http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<tonic::body::Body>) -> Self::Future {
        let id = req
            .headers()
            .get(QUERY_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty());
        let req = match id {
            Some(id) if req.uri().path().ends_with("/CoordinatorChannel") => {
                let open = self.queries.open(id);
                req.map(|body| {
                    tonic::body::Body::new(Holding {
                        body,
                        open: Some(open),
                    })
                })
            }
            _ => req,
        };
        self.inner.call(req)
    }
}

/// A request body holding its query open until it ends or is dropped.
struct Holding {
    body: tonic::body::Body,
    open: Option<Open>,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            self.open = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A worker whose tasks read the storage `storage_of` names and reach other workers
/// through `channels`.
fn worker(channels: Channels, storage_of: StorageOf, queries: Queries) -> Worker {
    Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let (storage_of, channels, queries) =
            (storage_of.clone(), channels.clone(), queries.clone());
        async move {
            METRICS.worker_tasks_started.inc();
            let ctx = WorkerQueryContext {
                builder: ctx.builder.with_distributed_channel_resolver(channels),
                headers: ctx.headers,
            };
            task_session(
                ctx,
                |tenant| storage_of(tenant),
                |id| queries.stop_of(id),
                crate::sql::task_codecs,
            )
            .await
        }
    })
}

/// Serves `worker` on `listener` (on `rt`), refusing calls without the cluster `secret`.
fn serve(
    listener: tokio::net::TcpListener,
    worker: Worker,
    queries: Queries,
    secret: Option<String>,
    rt: impl FnOnce(futures::future::BoxFuture<'static, ()>),
) {
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
        .layer(tower::layer::layer_fn(move |inner| TrackQueries {
            inner,
            queries: queries.clone(),
        }))
        .add_service(worker.into_worker_server())
        // Accepted sockets take their options from the incoming stream, not the builder:
        // without NODELAY here, each task's first batch waited out Nagle's delay (~40 ms,
        // measured in `benches/cluster/scale.py`'s plans).
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        );
    rt(Box::pin(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the worker service stopped");
        }
    }));
}

/// Starts this querier's worker service, its heartbeat and its view of the others, and
/// returns how its queries reach them, and the runtime the service runs on (kept while
/// the querier runs). Tasks run on a runtime of their own, apart from the one the
/// querier's own queries coordinate on: a task's operators can hold a thread for a long
/// poll, and a coordinator whose client went away must get a thread at once to call
/// its tasks off.
pub async fn start(
    cluster: &ClusterConfig,
    api: SocketAddr,
    root: Arc<dyn ObjectStore>,
    tenants: Arc<Tenants>,
) -> anyhow::Result<(Distribution, crate::api::query_runtime::QueryRuntime)> {
    // More threads than cores: a task's leaf can hold a thread for a long poll, and the
    // channels (a coordinator's going away is read on one) must still get a thread.
    let rt = crate::api::query_runtime::QueryRuntime::new(2 * crate::cores::cores() + 2)?;
    let listen = match &cluster.worker_listen {
        Some(a) => a.clone(),
        None => format!("{}:0", api.ip()),
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("--cluster-worker-listen {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    if cluster.secret.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the worker service listens beyond loopback without --cluster-secret: anyone who reaches it can run plan tasks");
    }
    let advertise = cluster
        .worker_advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let me = Url::parse(&advertise)
        .map_err(|e| anyhow::anyhow!("--cluster-worker-advertise-url {advertise}: {e}"))?;
    let channels = Channels::new(cluster.secret.as_deref())?;
    let storage_of: StorageOf = Arc::new(move |tenant: String| {
        let tenants = tenants.clone();
        Box::pin(async move { Ok(tenants.get(&tenant).await?) })
    });
    let queries = Queries::default();
    let worker = worker(channels.clone(), storage_of, queries.clone());
    serve(listener, worker, queries, cluster.secret.clone(), |f| {
        rt.spawn(f)
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
        channels.clone(),
    );
    Ok((
        Distribution::new(Arc::new(members), Arc::new(channels), Some(me))
            .with_min_samples(cluster.distribute_min_samples)
            .fold_on_coordinator(cluster.fold_on_coordinator),
        rt,
    ))
}

/// Workers in this process, each on its own port of 127.0.0.1 and reached over TCP as a
/// cluster's are, reading storages registered by tenant name: the distributed mode of
/// `quiver promqltest`.
pub struct LocalWorkers {
    pub distribution: Arc<Distribution>,
    storages: Arc<RwLock<HashMap<String, Arc<Storage>>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl LocalWorkers {
    /// `n` workers, with a secret of their own (the coordinator is none of them).
    pub async fn start(n: usize) -> anyhow::Result<LocalWorkers> {
        let secret = ulid::Ulid::new().to_string();
        let channels = Channels::new(Some(&secret))?;
        let storages: Arc<RwLock<HashMap<String, Arc<Storage>>>> = Default::default();
        let mut urls = Vec::new();
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            urls.push(Url::parse(&format!("http://{}", listener.local_addr()?))?);
            let found = storages.clone();
            let storage_of: StorageOf = Arc::new(move |tenant: String| {
                let s = found.read().get(&tenant).cloned();
                Box::pin(async move {
                    s.ok_or_else(|| PromqlError::exec(format!("no storage for tenant {tenant}")))
                })
            });
            let queries = Queries::default();
            let w = worker(channels.clone(), storage_of, queries.clone());
            serve(listener, w, queries, Some(secret.clone()), |f| {
                tokio::spawn(f);
            });
        }
        let members = Members::default();
        *members.urls.write() = urls;
        Ok(LocalWorkers {
            distribution: Arc::new(Distribution::new(
                Arc::new(members),
                Arc::new(channels),
                None,
            )),
            storages,
            next: Default::default(),
        })
    }

    /// Makes `storage` readable by the workers; returns the tenant name that names it.
    pub fn register(&self, storage: Arc<Storage>) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tenant = format!("t{n}");
        self.storages.write().insert(tenant.clone(), storage);
        tenant
    }
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

    /// The channel to a querier that is no longer a member (no fresh heartbeat) is
    /// dropped at the next membership read; this querier's own stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn channels_to_queriers_that_left_are_dropped() {
        let root: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let channels = Channels::new(None).unwrap();
        let me = Url::parse("http://127.0.0.1:1/").unwrap();
        let gone = Url::parse("http://127.0.0.1:2/").unwrap();
        channels.channel(&me).unwrap();
        channels.channel(&gone).unwrap();
        assert_eq!(channels.cached(), 2);
        let members = Members::default();
        members.spawn(
            root,
            "me".into(),
            me.clone(),
            Duration::from_millis(20),
            60_000,
            channels.clone(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while channels.cached() != 1 {
            assert!(std::time::Instant::now() < deadline, "the channel stayed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(members.get_urls().unwrap(), vec![me.clone()]);
        assert!(channels.cache.read().contains_key(&me));
    }

    /// Tasks end with their query, run to the end or explained with analyze (the
    /// abandoned query is `cluster_distributed`'s, on real processes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_end_with_their_query() {
        use crate::ingest::{SeriesSamples, WriteBatch};
        use crate::model::Labels;
        use crate::promql::{Engine, QueryOptions};
        let storage = Arc::new(Storage::in_memory().await.unwrap());
        let series = (0..40)
            .map(|i| SeriesSamples {
                labels: Labels::new(vec![
                    ("__name__".into(), "m".into()),
                    ("job".into(), format!("j{}", i % 3)),
                    ("i".into(), i.to_string()),
                ])
                .unwrap(),
                samples: (0..200).map(|k| (k * 15_000, (k * i) as f64)).collect(),
            })
            .collect();
        storage
            .append(
                WriteBatch {
                    series,
                    ..Default::default()
                },
                crate::storage::WriteWindow::Any,
            )
            .await
            .unwrap();
        let workers = LocalWorkers::start(3).await.unwrap();
        let tenant = workers.register(storage.clone());
        let engine = || {
            Engine::new(
                storage.clone(),
                QueryOptions {
                    distribution: Some(workers.distribution.clone()),
                    ..QueryOptions::default()
                },
            )
            .caller(&crate::auth::Access::unrestricted(&tenant))
        };
        let settled = || async {
            for _ in 0..100 {
                if METRICS.worker_streams.get() == 0 {
                    return 0;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            METRICS.worker_streams.get()
        };
        let q = Engine::parse("sum by (job) (rate(m[5m]))").unwrap();
        let e = engine();
        e.range(&q, 0, 3_000_000, 60_000).await.unwrap();
        assert_eq!(workers.distribution.runs(), 1);
        assert!(METRICS.worker_tasks_started.get() > 0);
        assert_eq!(settled().await, 0, "after a query");
        engine()
            .explain_report(&q, 0, 3_000_000, 60_000, true)
            .await
            .unwrap();
        assert_eq!(settled().await, 0, "after explain analyze");
    }

    #[test]
    fn the_secret_is_checked() {
        assert!(secret_ok(None, None));
        assert!(secret_ok(None, Some("x")));
        assert!(secret_ok(Some("s3cret"), Some("s3cret")));
        assert!(!secret_ok(Some("s3cret"), Some("s3cre")));
        assert!(!secret_ok(Some("s3cret"), None));
    }
}
