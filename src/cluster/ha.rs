//! HA pairs (Mimir's semantics): Prometheus servers scraping the same targets send series
//! with the same `cluster` label and different `__replica__` labels. Per tenant and
//! cluster one replica is elected; only its samples are stored, without the replica
//! label. When the elected replica has not been seen for `failover_timeout`, the next one
//! that writes is elected.
//!
//! The election lives in the bucket (`cluster/ha/<tenant>/<sha256(cluster)>.json`),
//! changed by conditional put, so every distributor agrees; each caches it and writes
//! `last_seen_ms` at most every quarter of the failover timeout.

use std::collections::HashMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::ingest::WriteBatch;
use crate::model::Labels;
use crate::storage::StorageError;
use crate::storage::manifest::{get_json, put_json_if};

/// Most distinct (cluster, replica) pairs one request may carry.
pub const MAX_PAIRS: usize = 16;

#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Empty: deduplication off.
    pub cluster_label: String,
    pub replica_label: String,
    pub failover_timeout_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Election {
    replica: String,
    elected_at_ms: i64,
    last_seen_ms: i64,
}

#[derive(Clone)]
struct Cached {
    election: Election,
    version: Option<UpdateVersion>,
}

pub struct HaTracker {
    cfg: HaConfig,
    store: Arc<dyn ObjectStore>,
    cache: tokio::sync::Mutex<HashMap<(String, String), Cached>>,
}

fn key(tenant: &str, cluster: &str) -> Path {
    use sha2::Digest;
    let h = sha2::Sha256::digest(cluster.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    Path::from(format!("cluster/ha/{tenant}/{hex}.json"))
}

impl HaTracker {
    pub fn new(cfg: HaConfig, store: Arc<dyn ObjectStore>) -> Option<Self> {
        (!cfg.cluster_label.is_empty() && !cfg.replica_label.is_empty()).then(|| HaTracker {
            cfg,
            store,
            cache: Default::default(),
        })
    }

    async fn read(&self, tenant: &str, cluster: &str) -> Result<Option<Cached>, StorageError> {
        Ok(get_json(self.store.as_ref(), &key(tenant, cluster))
            .await?
            .map(|(election, version)| Cached {
                election,
                version: Some(version),
            }))
    }

    /// Puts `e` over `prev` (or as the first election); `None` when another distributor
    /// changed it first.
    async fn write(
        &self,
        tenant: &str,
        cluster: &str,
        e: &Election,
        prev: Option<&UpdateVersion>,
    ) -> Result<Option<Cached>, StorageError> {
        let mode = match prev {
            Some(v) => PutMode::Update(v.clone()),
            None => PutMode::Create,
        };
        Ok(
            put_json_if(self.store.as_ref(), &key(tenant, cluster), e, mode)
                .await?
                .map(|v| Cached {
                    election: e.clone(),
                    version: Some(v),
                }),
        )
    }

    /// Whether `replica`'s samples for `cluster` are stored now, electing it when the
    /// cluster has no live elected replica.
    async fn accepts(
        &self,
        tenant: &str,
        cluster: &str,
        replica: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        let k = (tenant.to_string(), cluster.to_string());
        let mut cache = self.cache.lock().await;
        let timeout = self.cfg.failover_timeout_ms;
        // Whether `cur` was just read from the bucket (else it is our cache's view).
        let mut fresh = false;
        for _ in 0..8 {
            let cur = match cache.get(&k) {
                Some(c) => Some(c.clone()),
                None => {
                    fresh = true;
                    let r = self.read(tenant, cluster).await?;
                    if let Some(c) = &r {
                        cache.insert(k.clone(), c.clone());
                    }
                    r
                }
            };
            let mine = Election {
                replica: replica.to_string(),
                elected_at_ms: now,
                last_seen_ms: now,
            };
            match cur {
                None => match self.write(tenant, cluster, &mine, None).await? {
                    Some(n) => {
                        tracing::info!(tenant, cluster, replica, "HA replica elected");
                        cache.insert(k, n);
                        return Ok(true);
                    }
                    None => {
                        cache.remove(&k);
                    }
                },
                Some(c) if c.election.replica == replica => {
                    if now - c.election.last_seen_ms < timeout / 4 {
                        return Ok(true);
                    }
                    let mut e = c.election.clone();
                    e.last_seen_ms = now;
                    match self.write(tenant, cluster, &e, c.version.as_ref()).await? {
                        Some(n) => {
                            cache.insert(k, n);
                            return Ok(true);
                        }
                        None => {
                            cache.remove(&k);
                        }
                    }
                }
                Some(c) => {
                    let silent = now - c.election.last_seen_ms;
                    // Our cache may lag the bucket (another distributor refreshed the
                    // elected replica, or failed over): decide on a fresh read.
                    if !fresh && silent >= timeout / 4 {
                        cache.remove(&k);
                        continue;
                    }
                    if silent < timeout {
                        return Ok(false);
                    }
                    match self
                        .write(tenant, cluster, &mine, c.version.as_ref())
                        .await?
                    {
                        Some(n) => {
                            tracing::warn!(
                                tenant,
                                cluster,
                                replica,
                                previous = c.election.replica,
                                silent_ms = silent,
                                "HA failover: replica elected"
                            );
                            cache.insert(k, n);
                            return Ok(true);
                        }
                        None => {
                            cache.remove(&k);
                        }
                    }
                }
            }
        }
        Err(StorageError::Unavailable(
            "HA election keeps changing; retry".into(),
        ))
    }

    /// The batch without the series of non-elected replicas, and the replica label
    /// removed from the rest. Series without both labels pass unchanged.
    pub async fn filter(
        &self,
        tenant: &str,
        mut batch: WriteBatch,
        now: i64,
    ) -> Result<(WriteBatch, usize), StorageError> {
        let mut verdicts: HashMap<(String, String), bool> = HashMap::new();
        let pair = |l: &Labels| -> Option<(String, String)> {
            Some((
                l.get(&self.cfg.cluster_label)?.to_string(),
                l.get(&self.cfg.replica_label)?.to_string(),
            ))
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        for l in batch
            .series
            .iter()
            .map(|s| &s.labels)
            .chain(batch.histograms.iter().map(|s| &s.labels))
            .chain(batch.exemplars.iter().map(|s| &s.labels))
        {
            if let Some(p) = pair(l)
                && !pairs.contains(&p)
            {
                pairs.push(p);
                if pairs.len() > MAX_PAIRS {
                    break;
                }
            }
        }
        if pairs.is_empty() {
            return Ok((batch, 0));
        }
        // One sender is one replica of one cluster; each pair may cost a bucket round trip.
        if pairs.len() > MAX_PAIRS {
            return Err(StorageError::Invalid(format!(
                "a request carries {} HA cluster/replica pairs; at most {MAX_PAIRS}",
                pairs.len()
            )));
        }
        for (c, r) in pairs {
            let ok = self.accepts(tenant, &c, &r, now).await?;
            verdicts.insert((c, r), ok);
        }
        let keep = |l: &Labels| pair(l).is_none_or(|p| verdicts[&p]);
        let strip = |l: &mut Labels| {
            if pair(l).is_some() {
                let pairs: Vec<(String, String)> = l
                    .iter()
                    .filter(|(n, _)| *n != self.cfg.replica_label)
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect();
                if let Ok(n) = Labels::new(pairs) {
                    *l = n;
                }
            }
        };
        let mut dropped = 0;
        batch.series.retain(|s| {
            let k = keep(&s.labels);
            if !k {
                dropped += s.samples.len();
            }
            k
        });
        batch.histograms.retain(|s| {
            let k = keep(&s.labels);
            if !k {
                dropped += s.samples.len();
            }
            k
        });
        batch.exemplars.retain(|s| keep(&s.labels));
        for s in &mut batch.series {
            strip(&mut s.labels);
        }
        for s in &mut batch.histograms {
            strip(&mut s.labels);
        }
        for s in &mut batch.exemplars {
            strip(&mut s.labels);
        }
        for m in &mut batch.metadata {
            m.carriers.retain(|l| keep(l));
            for l in &mut m.carriers {
                strip(l);
            }
        }
        Ok((batch, dropped))
    }
}
