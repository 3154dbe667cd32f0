//! The writer (ingester) role: owns shards by lease, takes distributors' pushes for them,
//! logs each commit as a WAL object in the bucket, holds the heads, flushes blocks into
//! the manifest, and tells queriers which WAL objects exist (`/internal/v1/tail`).
//!
//! Ownership follows a fair share: every writer heartbeats `cluster/members/<id>.json`,
//! counts the live writers, and holds `ceil(shards / writers)` shards: it takes free or
//! expired shard leases up to that, and releases shards above it (after committing what
//! is pending), so an added writer receives shards and a dead one's are taken when their
//! leases expire. Taking a shard claims its epoch in each tenant's manifest and replays the
//! shard's WAL objects after the checkpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::lease::{Held, LeaseStore};
use super::{ClusterConfig, now_ms, shard_lease, shard_of};
use crate::config::ServeConfig;
use crate::error_kind::Kinded;
use crate::storage::tenants::{DEFAULT_TENANT, TENANTS_DIR, tenant_store, valid_tenant};
use crate::storage::{
    ClusterMode, ShardOptions, Storage, StorageError, StorageOptions, WalTail, WriteWindow,
};

/// A writer's heartbeat object.
#[derive(Debug, Serialize, Deserialize)]
pub struct Member {
    pub addr: String,
    pub at_ms: i64,
}

/// One shard this writer holds, and its tenants' engines.
struct Owned {
    shard: u32,
    held: parking_lot::Mutex<Held>,
    /// Until when (ms, wall clock) this writer may act on the lease: expiry − margin.
    valid_until: Arc<AtomicI64>,
    /// Set while the shard opens and once it is being released or was lost: pushes get 409.
    leaving: AtomicBool,
    /// Set once the shard is being released or was lost: no engine may open any more.
    released: AtomicBool,
    engines: tokio::sync::Mutex<HashMap<String, Engine>>,
}

/// A tenant's engine of one shard, and its WAL position for queriers.
type Engine = (Arc<Storage>, Arc<WalTail>);

pub struct Writer {
    cfg: ClusterConfig,
    root: Arc<dyn ObjectStore>,
    leases: LeaseStore,
    advertise: String,
    template: StorageOptions,
    owned: parking_lot::RwLock<HashMap<u32, Arc<Owned>>>,
    ready: Arc<AtomicBool>,
}

/// Tenants with data in the bucket: the default one and every `tenants/<t>/` prefix.
pub async fn bucket_tenants(root: &dyn ObjectStore) -> Result<Vec<String>, StorageError> {
    let listing = root
        .list_with_delimiter(Some(&object_store::path::Path::from(TENANTS_DIR)))
        .await?;
    let mut out = vec![DEFAULT_TENANT.to_string()];
    out.extend(
        listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|t| valid_tenant(t)),
    );
    Ok(out)
}

impl Writer {
    fn shard(&self, s: u32) -> Option<Arc<Owned>> {
        self.owned
            .read()
            .get(&s)
            .filter(|o| !o.leaving.load(Ordering::Relaxed))
            .cloned()
    }

    /// The tenant's engine of an owned shard, opened (epoch claimed, WAL replayed) on
    /// first use.
    async fn engine(&self, o: &Owned, tenant: &str) -> Result<Engine, StorageError> {
        let mut engines = o.engines.lock().await;
        if let Some(e) = engines.get(tenant) {
            return Ok(e.clone());
        }
        // Checked under the lock `give_back` drains under: no engine opens after it.
        if o.released.load(Ordering::Relaxed) {
            return Err(StorageError::Fenced(format!(
                "shard {} is being released",
                o.shard
            )));
        }
        let tail = Arc::new(WalTail::new(0));
        let valid_until = o.valid_until.clone();
        let mut opts = self.template.clone();
        opts.tenant = tenant.to_string();
        let epoch = o.held.lock().lease.epoch;
        opts.cluster = Some(ClusterMode::Shard(ShardOptions {
            shard: o.shard,
            epoch,
            lease_valid: Arc::new(move || now_ms() < valid_until.load(Ordering::Relaxed)),
            commit_interval: std::time::Duration::from_millis(self.cfg.commit_interval_ms as u64),
            tail: tail.clone(),
        }));
        let storage = Arc::new(Storage::open(opts, tenant_store(&self.root, tenant)).await?);
        engines.insert(tenant.to_string(), (storage.clone(), tail.clone()));
        Ok((storage, tail))
    }

    /// Takes a shard: opens every tenant's engine of it (replaying its WAL), then serves it.
    /// Runs beside the lease loop, which keeps renewing the lease meanwhile.
    async fn take(self: Arc<Self>, owned: Arc<Owned>) {
        let s = owned.shard;
        let tenants = match bucket_tenants(self.root.as_ref()).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(shard = s, error = %e, "cannot list tenants; giving the shard back");
                self.give_back(s).await;
                return;
            }
        };
        for t in tenants {
            let current = self
                .owned
                .read()
                .get(&s)
                .is_some_and(|o| Arc::ptr_eq(o, &owned));
            if !current || owned.released.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = self.engine(&owned, &t).await {
                tracing::error!(shard = s, tenant = t, error = %e, "cannot open the shard; giving it back");
                self.give_back(s).await;
                return;
            }
        }
        owned.leaving.store(false, Ordering::Relaxed);
        tracing::info!(
            shard = s,
            epoch = owned.held.lock().lease.epoch,
            "shard taken"
        );
    }

    /// Stops serving a shard: later pushes get 409, pending commits finish, the lease is
    /// released so another writer takes it at once.
    async fn give_back(&self, s: u32) {
        let Some(o) = self.owned.read().get(&s).cloned() else {
            return;
        };
        o.leaving.store(true, Ordering::Relaxed);
        o.released.store(true, Ordering::Relaxed);
        {
            // Held through the close: a push cannot open a new engine meanwhile.
            let mut engines = o.engines.lock().await;
            for (_, (storage, _)) in engines.drain() {
                storage.close().await;
            }
        }
        // Nothing commits under this lease any more, whatever still holds an engine.
        o.valid_until.store(0, Ordering::Relaxed);
        let held = o.held.lock().clone();
        if let Err(e) = self.leases.release(&held).await {
            tracing::warn!(shard = s, error = %e, "could not release the lease; it expires on its own");
        }
        self.owned.write().remove(&s);
        tracing::info!(shard = s, "shard released");
    }

    /// Forgets a shard whose lease another writer took (nothing may be committed now).
    async fn lost(&self, s: u32) {
        let gone = self.owned.write().remove(&s);
        if let Some(o) = gone {
            o.leaving.store(true, Ordering::Relaxed);
            o.released.store(true, Ordering::Relaxed);
            o.valid_until.store(0, Ordering::Relaxed);
            tracing::error!(shard = s, "shard lease lost");
        }
    }

    /// One round of the lease loop: heartbeat, renew, then move towards the fair share.
    async fn tick(self: &Arc<Self>) -> Result<(), StorageError> {
        let now = now_ms();
        let me = &self.cfg.node_id;
        let member = serde_json::to_vec(&Member {
            addr: self.advertise.clone(),
            at_ms: now,
        })
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        self.root
            .put(
                &object_store::path::Path::from(format!("cluster/members/{me}.json")),
                PutPayload::from(member),
            )
            .await?;
        // Renew what we hold, all at once: one slow request must not age the others.
        let owned: Vec<Arc<Owned>> = self.owned.read().values().cloned().collect();
        let renewals = owned.iter().map(|o| async move {
            let mut held = o.held.lock().clone();
            let r = self
                .leases
                .renew(&mut held, self.cfg.lease_ms, now_ms())
                .await;
            (o, held, r)
        });
        for (o, held, r) in futures::future::join_all(renewals).await {
            match r {
                Ok(true) => {
                    o.valid_until.store(
                        held.lease.expires_ms - self.cfg.margin_ms(),
                        Ordering::Relaxed,
                    );
                    *o.held.lock() = held;
                }
                Ok(false) => self.lost(o.shard).await,
                Err(e) => tracing::warn!(shard = o.shard, error = %e, "lease renewal failed"),
            }
        }
        // The fair share among live writers.
        let members: Vec<object_store::ObjectMeta> = self
            .root
            .list(Some(&object_store::path::Path::from("cluster/members")))
            .try_collect()
            .await?;
        let mut live = 0u32;
        for m in members {
            if let Ok(r) = self.root.get(&m.location).await
                && let Ok(b) = r.bytes().await
                && let Ok(member) = serde_json::from_slice::<Member>(&b)
                && member.at_ms > now - self.cfg.lease_ms
            {
                live += 1;
            }
        }
        let target = self.cfg.shards.div_ceil(live.max(1)) as usize;
        let held = self.owned.read().len();
        if held > target {
            // Give back one shard per round, the highest: others take it at once.
            let s = self.owned.read().keys().max().copied();
            if let Some(s) = s {
                self.give_back(s).await;
            }
        } else if held < target {
            let mut want = target - held;
            for s in 0..self.cfg.shards {
                if want == 0 {
                    break;
                }
                if self.owned.read().contains_key(&s) {
                    continue;
                }
                match self
                    .leases
                    .try_acquire(
                        &shard_lease(s),
                        me,
                        &self.advertise,
                        self.cfg.lease_ms,
                        now_ms(),
                    )
                    .await
                {
                    Ok(Some(held)) => {
                        let valid_until =
                            Arc::new(AtomicI64::new(held.lease.expires_ms - self.cfg.margin_ms()));
                        let owned = Arc::new(Owned {
                            shard: s,
                            held: parking_lot::Mutex::new(held),
                            valid_until,
                            // Until its WAL is replayed: pushes get 409.
                            leaving: AtomicBool::new(true),
                            released: AtomicBool::new(false),
                            engines: Default::default(),
                        });
                        self.owned.write().insert(s, owned.clone());
                        tokio::spawn(self.clone().take(owned));
                        want -= 1;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(shard = s, error = %e, "cannot read a shard lease"),
                }
            }
        }
        crate::api::metrics::METRICS
            .cluster_shards_owned
            .set(self.owned.read().len() as i64);
        Ok(())
    }
}

#[derive(Deserialize)]
struct ShardQuery {
    #[serde(default = "default_tenant")]
    tenant: String,
    shard: u32,
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

fn not_owner(s: u32) -> Response {
    (
        StatusCode::CONFLICT,
        format!("shard {s} is not owned by this writer"),
    )
        .into_response()
}

fn storage_error(e: &StorageError) -> Response {
    let kind = e.kind();
    let code = match kind {
        crate::error_kind::ErrorKind::BadData => StatusCode::BAD_REQUEST,
        crate::error_kind::ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, e.to_string()).into_response()
}

/// `POST /internal/v1/push?tenant=&shard=`: a distributor's part of a write for one shard
/// (`cluster::wire`). 204 once durable in the bucket and in the head.
async fn push(State(w): State<Arc<Writer>>, Query(q): Query<ShardQuery>, body: Bytes) -> Response {
    if !valid_tenant(&q.tenant) {
        return (StatusCode::BAD_REQUEST, "invalid tenant").into_response();
    }
    let Some(o) = w.shard(q.shard) else {
        return not_owner(q.shard);
    };
    let batch = match super::wire::decode(&body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    // A distributor with another shard count would split the data wrongly: refuse.
    let shards = w.cfg.shards;
    let misrouted = batch
        .series
        .iter()
        .map(|s| &s.labels)
        .chain(batch.histograms.iter().map(|s| &s.labels))
        .chain(batch.exemplars.iter().map(|s| &s.labels))
        .any(|l| shard_of(&q.tenant, l, shards) != q.shard);
    if misrouted {
        return (
            StatusCode::BAD_REQUEST,
            format!("series of another shard sent to shard {} (is --cluster-shards the same on every node?)", q.shard),
        )
            .into_response();
    }
    let (storage, _) = match w.engine(&o, &q.tenant).await {
        Ok(e) => e,
        Err(e) => return storage_error(&e),
    };
    match storage.append(batch, WriteWindow::Any).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => storage_error(&e),
    }
}

/// What `/internal/v1/tail` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Tail {
    pub epoch: u64,
    #[serde(flatten)]
    pub state: crate::storage::TailState,
}

/// `GET /internal/v1/tail?tenant=&shard=&after=&wait_ms=`: the shard's last committed WAL
/// object and recent rotations, once one after `after` exists or `wait_ms` (≤ 10 s) passed.
async fn tail(State(w): State<Arc<Writer>>, Query(q): Query<ShardQuery>) -> Response {
    if !valid_tenant(&q.tenant) {
        return (StatusCode::BAD_REQUEST, "invalid tenant").into_response();
    }
    let Some(o) = w.shard(q.shard) else {
        return not_owner(q.shard);
    };
    let epoch = o.held.lock().lease.epoch;
    let engine = o.engines.lock().await.get(&q.tenant).cloned();
    let state = match engine {
        Some((_, tail)) => {
            tail.wait_after(
                q.after,
                std::time::Duration::from_millis(q.wait_ms.min(10_000)),
            )
            .await
        }
        None => Default::default(),
    };
    axum::Json(Tail { epoch, state }).into_response()
}

/// Runs a writer until SIGTERM: then commits what is pending and releases its shards.
pub async fn run(
    cfg: ServeConfig,
    cluster: ClusterConfig,
    listener: tokio::net::TcpListener,
    root: Arc<dyn ObjectStore>,
    advertise: String,
) -> anyhow::Result<()> {
    let mut template = cfg.storage.options();
    template.head_memory_limit = cfg.head_memory_limit;
    template.deletion_delay_ms = cluster.deletion_delay_ms;
    let ready = Arc::new(AtomicBool::new(false));
    let w = Arc::new(Writer {
        leases: LeaseStore::new(root.clone()),
        root,
        cfg: cluster.clone(),
        advertise,
        template,
        owned: Default::default(),
        ready: ready.clone(),
    });
    let secret: Option<Arc<str>> = cluster.secret.as_deref().map(Arc::from);
    let guarded = |h: axum::routing::MethodRouter<Arc<Writer>>| {
        h.route_layer(axum::middleware::from_fn_with_state(
            secret.clone(),
            super::check_secret,
        ))
    };
    let mut routes = super::ops_routes(ready.clone());
    routes.push(super::RoleRoute {
        path: "/internal/v1/push",
        need: "cluster secret",
        handler: guarded(post(push)),
    });
    routes.push(super::RoleRoute {
        path: "/internal/v1/tail",
        need: "cluster secret",
        handler: guarded(get(tail)),
    });
    let app = super::role_router(routes)
        // A shard's part of a request is at most the request decoded: the decode budget.
        .layer(axum::extract::DefaultBodyLimit::max(
            cfg.max_body_bytes.max(cfg.ingest_decode_budget.0),
        ))
        .with_state(w.clone());

    let lease_loop = {
        let w = w.clone();
        tokio::spawn(async move {
            let every = std::time::Duration::from_millis((w.cfg.lease_ms / 4).max(100) as u64);
            loop {
                if let Err(e) = w
                    .tick()
                    .instrument(tracing::info_span!("lease round"))
                    .await
                {
                    tracing::warn!(error = %e, "lease round failed");
                } else {
                    w.ready.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    let flush_loop = {
        let w = w.clone();
        tokio::spawn(async move { flush_loop(w).await })
    };
    let (_fatal_tx, fatal_rx) = tokio::sync::mpsc::channel(1);
    let served = crate::server::serve(listener, app, &cfg, fatal_rx).await;
    lease_loop.abort();
    flush_loop.abort();
    let shards: Vec<u32> = w.owned.read().keys().copied().collect();
    for s in shards {
        w.give_back(s).await;
    }
    let _ = w
        .root
        .delete(&object_store::path::Path::from(format!(
            "cluster/members/{}.json",
            w.cfg.node_id
        )))
        .await;
    tracing::info!("writer stopped");
    served
}

/// Flushes every owned shard's heads when due; failed flushes are retried with backoff.
async fn flush_loop(w: Arc<Writer>) {
    let mut backoff: HashMap<(u32, String), (tokio::time::Instant, std::time::Duration)> =
        HashMap::new();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let owned: Vec<Arc<Owned>> = w.owned.read().values().cloned().collect();
        for o in owned {
            if o.leaving.load(Ordering::Relaxed) {
                continue;
            }
            let engines: Vec<(String, Arc<Storage>)> = o
                .engines
                .lock()
                .await
                .iter()
                .map(|(t, (s, _))| (t.clone(), s.clone()))
                .collect();
            for (tenant, storage) in engines {
                let key = (o.shard, tenant.clone());
                let now = tokio::time::Instant::now();
                if backoff.get(&key).is_some_and(|(at, _)| now < *at) {
                    continue;
                }
                if !(storage.should_flush() || storage.frozen_heads() > 0) {
                    continue;
                }
                let span = tracing::info_span!("flush", shard = o.shard, tenant = tenant.as_str());
                match storage.flush().instrument(span).await {
                    Ok(_) => {
                        backoff.remove(&key);
                    }
                    Err(e) => {
                        crate::api::metrics::METRICS.flush_failures.inc();
                        let wait = backoff
                            .get(&key)
                            .map_or(std::time::Duration::from_secs(1), |(_, d)| {
                                (*d * 2).min(std::time::Duration::from_secs(30))
                            });
                        tracing::error!(shard = o.shard, tenant, error = %e, "shard flush failed; will retry");
                        backoff.insert(key, (now + wait, wait));
                    }
                }
            }
        }
    }
}
