//! The querier role: the whole read API (PromQL, metadata, labels, series, SQL, remote
//! read, exemplars) over replica engines. Each tenant's engine follows the cluster in one
//! loop: the manifest by conditional GET (new and removed blocks, shard checkpoints), then
//! every shard's WAL position from its owner (`/internal/v1/tail`), reading the new WAL
//! objects from the bucket into mirror heads (`Storage::mirror_segment`). A querier keeps
//! no state of its own: a new one rebuilds all of it from the bucket.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;

use super::lease::LeaseStore;
use super::owners::Owners;
use super::writer::Tail;
use super::{ClusterConfig, now_ms};
use crate::api::router_with;
use crate::api::routes::Need;
use crate::auth::Permission;
use crate::config::ServeConfig;
use crate::storage::manifest::ManifestStore;
use crate::storage::{ClusterMode, Storage, Tenants, read_segment, samples_cache};

/// Follows the cluster for one tenant's engine until the process ends. `caught_up` fires
/// after the first round in which every shard's mirror reached its owner's last WAL object
/// and the manifest read at its end rebuilt no mirror: until then the engine would answer
/// without samples still in the writers' WALs (a round reads at most
/// [`MAX_OBJECTS_PER_POLL`] objects per shard, so a long WAL takes several).
///
/// Each round follows the WAL, then reads the manifest. A writer publishes a flush's
/// manifest before it deletes the WAL objects, so an object found deleted during the
/// round is in the manifest read at its end: a round leaves no gap between the two.
pub async fn follow(
    tenant: String,
    storage: Arc<Storage>,
    owners: Owners,
    client: reqwest::Client,
    shards: u32,
    poll: std::time::Duration,
    caught_up: tokio::sync::oneshot::Sender<()>,
) {
    let mut f = Follower {
        manifest: ManifestStore::new(storage.store().clone()),
        tenant,
        storage,
        etag: None,
        cursors: HashMap::new(),
        checkpoints: HashMap::new(),
    };
    let started = std::time::Instant::now();
    f.manifest().await;
    let mut caught_up = Some(caught_up);
    loop {
        let round = f.shards(&owners, &client, shards).await;
        let rebuilt = f.manifest().await;
        if round.level
            && !rebuilt
            && let Some(tx) = caught_up.take()
        {
            tracing::info!(
                tenant = f.tenant,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "caught up with the cluster"
            );
            let _ = tx.send(());
        }
        // A mirror with objects left to read goes on at once (a new querier catching up).
        if !round.more {
            tokio::time::sleep(poll).await;
        }
    }
}

/// One tenant's position in the cluster: the manifest it installed and how far each
/// shard's mirror has read.
struct Follower {
    tenant: String,
    storage: Arc<Storage>,
    manifest: ManifestStore,
    etag: Option<String>,
    cursors: HashMap<u32, u64>,
    checkpoints: HashMap<u32, u64>,
}

impl Follower {
    /// Installs the manifest if it changed. True when a shard's mirror had to be rebuilt
    /// (its samples are read again in the next round).
    async fn manifest(&mut self) -> bool {
        let tenant = &self.tenant;
        let mut rebuilt = false;
        match self.manifest.load_if_changed(self.etag.as_deref()).await {
            Ok(Some(v)) => match self.storage.install_manifest(&v.manifest).await {
                Ok(installed) => {
                    self.etag = v.version.and_then(|v| v.e_tag);
                    for (&s, st) in &v.manifest.shards {
                        self.checkpoints.insert(s, st.checkpoint);
                    }
                    for s in installed.resync {
                        tracing::warn!(
                            tenant,
                            shard = s,
                            "mirror straddled a checkpoint; rebuilding it"
                        );
                        self.storage.mirror_reset(s);
                        self.cursors.remove(&s);
                        rebuilt = true;
                    }
                    if installed.added + installed.removed > 0 {
                        tracing::debug!(
                            tenant,
                            added = installed.added,
                            removed = installed.removed,
                            version = v.manifest.version,
                            "manifest installed"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(tenant, error = %e, "cannot install the manifest; retrying")
                }
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(tenant, error = %e, "cannot read the manifest; retrying"),
        }
        rebuilt
    }

    /// Brings every shard's mirror up to its owner's last WAL object.
    async fn shards(&mut self, owners: &Owners, client: &reqwest::Client, shards: u32) -> Round {
        let mut round = Round {
            level: true,
            more: false,
        };
        let tenant = &self.tenant;
        let follows = (0..shards).map(|s| {
            let cp = self.checkpoints.get(&s).copied().unwrap_or(0);
            let cursor = self.cursors.get(&s).copied().unwrap_or(0).max(cp);
            follow_shard(tenant, &self.storage, owners, client, s, cursor, cp)
        });
        for (s, r) in (0..shards).zip(futures::future::join_all(follows).await) {
            match r {
                Ok(Some((c, last))) => {
                    self.cursors.insert(s, c);
                    round.level &= c >= last;
                    round.more |= c < last;
                }
                Ok(None) => {
                    self.storage.mirror_reset(s);
                    self.cursors.remove(&s);
                    round.level = false;
                }
                // What was applied before the error counts: never apply an object twice.
                Err((c, e)) => {
                    self.cursors.insert(s, c);
                    round.level = false;
                    // 409: the shard is moving (its new owner is read within a quarter lease).
                    if e.contains("409") {
                        tracing::debug!(tenant, shard = s, error = %e, "shard moving");
                    } else {
                        tracing::warn!(tenant, shard = s, error = %e, "cannot follow shard");
                    }
                }
            }
        }
        round
    }
}

/// How a round of following the shards ended.
struct Round {
    /// Every shard's mirror reached its owner's last WAL object (none failed).
    level: bool,
    /// A shard has objects left that this round did not read.
    more: bool,
}

/// Most WAL objects one shard's mirror reads per poll (a querier far behind catches up
/// over several polls, and other shards are not starved meanwhile).
const MAX_OBJECTS_PER_POLL: u64 = 256;

/// WAL objects one shard's mirror fetches at once.
const READS_IN_FLIGHT: usize = 16;

/// Brings one shard's mirror up to its owner's last WAL object. Returns the new cursor and
/// the owner's last object, or `None` when the mirror must be rebuilt (the owner's WAL is
/// behind it); on error, the cursor as far as it got.
async fn follow_shard(
    tenant: &str,
    storage: &Storage,
    owners: &Owners,
    client: &reqwest::Client,
    shard: u32,
    cursor: u64,
    checkpoint: u64,
) -> Result<Option<(u64, u64)>, (u64, String)> {
    // No owner: nobody writes the shard, so there is nothing to wait for.
    let Some(owner) = owners.owner(shard, now_ms()) else {
        return Ok(Some((cursor, cursor)));
    };
    let fail = |e: String| (cursor, e);
    let url = format!("{}/internal/v1/tail", owner.addr.trim_end_matches('/'));
    let tail: Tail = client
        .get(&url)
        .query(&[
            ("tenant", tenant.to_string()),
            ("shard", shard.to_string()),
            ("after", cursor.to_string()),
        ])
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?
        .error_for_status()
        .map_err(|e| fail(e.to_string()))?
        .json()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let last = tail.state.last;
    if last < cursor && last >= checkpoint && tail.state.last > 0 {
        return Ok(None);
    }
    let mut at = cursor;
    // Fetched several at a time (one GET is a few ms), applied in order.
    let mut reads = futures::stream::iter(cursor + 1..=last.min(cursor + MAX_OBJECTS_PER_POLL))
        .map(|seq| async move {
            (
                seq,
                read_segment(storage.store().as_ref(), shard, seq).await,
            )
        })
        .buffered(READS_IN_FLIGHT);
    while let Some((seq, read)) = reads.next().await {
        match read {
            Ok(Some(data)) => {
                let rotated = tail.state.rotations.iter().any(|&r| r >= at && r < seq);
                if let Err(e) = storage.mirror_segment(shard, seq, &data, rotated) {
                    // A corrupt object: skipped (the writer's replay reports it too).
                    tracing::error!(shard, seq, error = %e, "cannot apply a WAL object to the mirror");
                }
                at = seq;
            }
            // Flushed and deleted since (the next manifest lists its blocks), or a number
            // a failed put skipped.
            Ok(None) => at = seq,
            Err(e) => return Err((at, e.to_string())),
        }
    }
    Ok(Some((at, last)))
}

/// Runs a querier: the read routes and the operational ones, until SIGTERM.
pub async fn run(
    cfg: ServeConfig,
    cluster: ClusterConfig,
    listener: tokio::net::TcpListener,
    root: Arc<dyn ObjectStore>,
) -> anyhow::Result<()> {
    let owners = Owners::new(LeaseStore::new(root.clone()), cluster.shards);
    owners.refresh().await;
    let poll = std::time::Duration::from_millis(cluster.poll_interval_ms.max(50) as u64);
    owners.spawn(std::time::Duration::from_millis(
        (cluster.lease_ms / 4).max(100) as u64,
    ));
    let mut opts = cfg.storage.options();
    opts.head_memory_limit = cfg.head_memory_limit;
    opts.samples_cache =
        (cfg.samples_cache_bytes > 0).then(|| samples_cache(cfg.samples_cache_bytes));
    opts.cluster = Some(ClusterMode::Replica);
    let client = super::client(&cluster);
    let shards = cluster.shards;
    let tenants = Arc::new(
        Tenants::new(opts, root.clone())
            .with_max_tenants(cfg.max_tenants)
            .on_open(Arc::new(move |tenant: &str, storage: Arc<Storage>| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(follow(
                    tenant.to_string(),
                    storage,
                    owners.clone(),
                    client.clone(),
                    shards,
                    poll,
                    tx,
                ));
                Box::pin(async move {
                    let _ = rx.await;
                })
            })),
    );
    let addr = listener.local_addr()?;
    let mut state = crate::server::app_state(&cfg, tenants.clone(), addr)?;
    // Kept while the querier serves: the runtime the worker service's tasks run on.
    let mut _worker_rt = None;
    if !cluster.local_queries {
        let (d, rt) = super::workers::start(&cluster, addr, root.clone(), tenants.clone()).await?;
        state.distribution = Some(Arc::new(d));
        _worker_rt = Some(rt);
    }
    let app = router_with(state, cfg.max_body_bytes, |r| {
        r.need != Need::Needs(Permission::Write)
    });
    let (fatal_tx, fatal_rx) = tokio::sync::mpsc::channel(1);
    let opening = tenants.clone();
    tokio::spawn(async move {
        if let Err(e) = opening.open_all().await {
            let _ = fatal_tx.send(anyhow::anyhow!("opening storage: {e}")).await;
        }
    });
    let served = crate::server::serve(listener, app, &cfg, fatal_rx).await;
    super::workers::leave(root.as_ref(), &cluster.node_id).await;
    served
}
