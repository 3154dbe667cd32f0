//! The distributor role: the whole write API (remote write 1.0/2.0, OTLP, import) with
//! its authentication, limits and validation, over engines that hold nothing: an admitted
//! batch is deduplicated (HA pairs), split by shard, and each part pushed to the shard's
//! owner. The client gets 2xx only when every owner acknowledged; a shard without a live
//! owner, or an owner that refuses, answers 503 with Retry-After, and the sender retries
//! the whole request (samples are idempotent: a sample stored twice at one timestamp is
//! one sample).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use object_store::ObjectStore;

use super::ha::HaTracker;
use super::lease::LeaseStore;
use super::owners::Owners;
use super::{ClusterConfig, now_ms, shard_of};
use crate::api::router_with;
use crate::api::routes::Need;
use crate::auth::Permission;
use crate::config::ServeConfig;
use crate::ingest::{MetricMetadata, SeriesExemplars, SeriesHistograms, SeriesSamples, WriteBatch};
use crate::model::Labels;
use crate::storage::{ClusterMode, Forward, StorageError, Tenants};

pub struct Distributor {
    cfg: ClusterConfig,
    owners: Owners,
    client: reqwest::Client,
    ha: Option<HaTracker>,
}

/// Splits a batch by shard. Metadata goes with its carriers (one copy per shard holding
/// some); metadata without carriers goes to its family name's shard.
pub fn split(tenant: &str, batch: WriteBatch, shards: u32) -> BTreeMap<u32, WriteBatch> {
    let mut out: BTreeMap<u32, WriteBatch> = BTreeMap::new();
    let of = |l: &Labels| shard_of(tenant, l, shards);
    for s in batch.series {
        out.entry(of(&s.labels))
            .or_default()
            .series
            .push(SeriesSamples { ..s });
    }
    for s in batch.histograms {
        out.entry(of(&s.labels))
            .or_default()
            .histograms
            .push(SeriesHistograms { ..s });
    }
    for s in batch.exemplars {
        out.entry(of(&s.labels))
            .or_default()
            .exemplars
            .push(SeriesExemplars { ..s });
    }
    for m in batch.metadata {
        if m.carriers.is_empty() {
            let family = Labels::new(vec![("__name__".into(), m.metric_family_name.clone())])
                .unwrap_or_default();
            out.entry(of(&family)).or_default().metadata.push(m);
            continue;
        }
        let mut by: BTreeMap<u32, Vec<Labels>> = BTreeMap::new();
        for c in &m.carriers {
            by.entry(of(c)).or_default().push(c.clone());
        }
        for (s, carriers) in by {
            out.entry(s).or_default().metadata.push(MetricMetadata {
                carriers,
                ..m.clone()
            });
        }
    }
    out
}

impl Distributor {
    /// Pushes one shard's part to its owner; after a refusal because ownership moved,
    /// re-reads the owners and tries once more.
    async fn push(&self, tenant: &str, shard: u32, body: bytes::Bytes) -> Result<(), StorageError> {
        for attempt in 0..2 {
            let Some(owner) = self.owners.owner(shard, now_ms()) else {
                if attempt == 0 {
                    self.owners.refresh().await;
                    continue;
                }
                return Err(StorageError::Unavailable(format!(
                    "shard {shard} has no writer (lease expired); retry"
                )));
            };
            let url = format!("{}/internal/v1/push", owner.addr.trim_end_matches('/'));
            let sent = self
                .client
                .post(&url)
                .query(&[("tenant", tenant), ("shard", &shard.to_string())])
                .body(body.clone())
                .send()
                .await;
            let m = &crate::api::metrics::METRICS.cluster_pushes;
            match sent {
                Ok(r) if r.status().is_success() => {
                    m.with_label_values(&["ok"]).inc();
                    return Ok(());
                }
                Ok(r) if r.status() == reqwest::StatusCode::CONFLICT && attempt == 0 => {
                    m.with_label_values(&["moved"]).inc();
                    self.owners.refresh().await;
                }
                Ok(r)
                    if r.status() == reqwest::StatusCode::BAD_REQUEST
                        || r.status() == reqwest::StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    m.with_label_values(&["refused"]).inc();
                    let why = r.text().await.unwrap_or_default();
                    return Err(StorageError::Invalid(why));
                }
                Ok(r) => {
                    m.with_label_values(&["unavailable"]).inc();
                    let code = r.status();
                    let why = r.text().await.unwrap_or_default();
                    return Err(StorageError::Unavailable(format!(
                        "shard {shard} writer answered {code}: {why}"
                    )));
                }
                Err(e) if attempt == 0 => {
                    m.with_label_values(&["unreachable"]).inc();
                    tracing::warn!(shard, url, error = %e, "writer unreachable; re-reading owners");
                    self.owners.refresh().await;
                }
                Err(e) => {
                    m.with_label_values(&["unreachable"]).inc();
                    return Err(StorageError::Unavailable(format!(
                        "shard {shard} writer unreachable: {e}"
                    )));
                }
            }
        }
        Err(StorageError::Unavailable(format!(
            "shard {shard} is moving between writers; retry"
        )))
    }
}

#[async_trait::async_trait]
impl Forward for Distributor {
    async fn forward(&self, tenant: &str, batch: WriteBatch) -> Result<usize, StorageError> {
        let batch = match &self.ha {
            Some(ha) => {
                let (b, dropped) = ha.filter(tenant, batch, now_ms()).await?;
                crate::api::metrics::METRICS
                    .ha_dropped_samples
                    .inc_by(dropped as u64);
                b
            }
            None => batch,
        };
        let n = batch.sample_count();
        let parts = split(tenant, batch, self.cfg.shards);
        let mut sends = Vec::with_capacity(parts.len());
        for (shard, part) in parts {
            let body = bytes::Bytes::from(
                super::wire::encode(part).map_err(|e| StorageError::Invalid(e.to_string()))?,
            );
            sends.push(async move { self.push(tenant, shard, body).await });
        }
        for r in futures::future::join_all(sends).await {
            r?;
        }
        Ok(n)
    }
}

/// Runs a distributor: the write routes and the operational ones, until SIGTERM.
pub async fn run(
    cfg: ServeConfig,
    cluster: ClusterConfig,
    listener: tokio::net::TcpListener,
    root: Arc<dyn ObjectStore>,
) -> anyhow::Result<()> {
    let owners = Owners::new(LeaseStore::new(root.clone()), cluster.shards);
    owners.refresh().await;
    // Owners change only when a lease moves; a refused push re-reads them at once.
    owners.spawn(std::time::Duration::from_millis(
        (cluster.lease_ms / 4).max(100) as u64,
    ));
    let d = Arc::new(Distributor {
        cfg: cluster.clone(),
        owners,
        client: super::client(&cluster),
        ha: HaTracker::new(cluster.ha.clone(), root.clone()),
    });
    let mut opts = cfg.storage.options();
    opts.head_memory_limit = cfg.head_memory_limit;
    opts.cluster = Some(ClusterMode::Forward(d));
    let tenants = Arc::new(Tenants::new(opts, root).with_max_tenants(cfg.max_tenants));
    tenants.open_all().await?;
    let addr = listener.local_addr()?;
    let state = crate::server::app_state(&cfg, tenants.clone(), addr)?;
    // Writes and operations; the query page belongs with the reads, on the queriers.
    let app = router_with(state, cfg.max_body_bytes, |r| {
        r.need != Need::Needs(Permission::Read) && !crate::api::ui::is_page_route(r.path)
    });
    let _ready = AtomicBool::new(true);
    let (_fatal_tx, fatal_rx) = tokio::sync::mpsc::channel(1);
    crate::server::serve(listener, app, &cfg, fatal_rx).await
}
