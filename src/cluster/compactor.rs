//! The compactor role: one at a time, by the `compactor` lease in the bucket (a second
//! compactor waits, renewing nothing). While it holds the lease it installs each tenant's
//! manifest, merges sealed windows and applies retention as the single process does, and
//! publishes the result to the manifest (`Storage::compact` on a replica engine): merged
//! blocks listed, replaced and expired ones unlisted with a deletion mark, their files
//! deleted once the mark is older than `--cluster-deletion-delay`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use object_store::ObjectStore;
use tracing::Instrument;

use super::lease::LeaseStore;
use super::writer::bucket_tenants;
use super::{ClusterConfig, now_ms};
use crate::config::ServeConfig;
use crate::storage::manifest::ManifestStore;
use crate::storage::tenants::tenant_store;
use crate::storage::{ClusterMode, Storage, StorageError, StorageOptions};

/// How old an unlisted block must be before the compactor deletes it: far longer than any
/// flush takes between uploading a block and listing it.
const ORPHAN_AGE_MS: i64 = 3_600_000;

/// The lease only one compactor holds.
pub const LEASE: &str = "compactor";

/// One compaction round over every tenant in the bucket, while `valid` holds.
async fn round(
    root: &Arc<dyn ObjectStore>,
    template: &StorageOptions,
    engines: &mut HashMap<String, Arc<Storage>>,
    valid: &(dyn Fn() -> bool + Send + Sync),
) -> Result<(), StorageError> {
    for tenant in bucket_tenants(root.as_ref()).await? {
        if !valid() {
            return Ok(());
        }
        let storage = match engines.get(&tenant) {
            Some(s) => s.clone(),
            None => {
                let store = tenant_store(root, &tenant);
                let mut opts = template.clone();
                opts.tenant = tenant.clone();
                let s = Arc::new(Storage::open(opts, store).await?);
                engines.insert(tenant.clone(), s.clone());
                s
            }
        };
        let m = ManifestStore::new(storage.store().clone()).load().await?;
        storage.install_manifest(&m.manifest).await?;
        let span = tracing::info_span!("compaction", tenant = tenant.as_str());
        let r = storage.compact().instrument(span).await?;
        // Blocks uploaded but never listed (a writer killed mid-flush), once no flush
        // could still be listing them.
        let listed = ManifestStore::new(storage.store().clone()).load().await?;
        storage
            .delete_unlisted_blocks(&listed.manifest, ORPHAN_AGE_MS)
            .await?;
        if !r.merged.is_empty() || !r.expired.is_empty() || r.deleted > 0 {
            tracing::info!(
                tenant,
                merged = r.merged.len(),
                expired = r.expired.len(),
                deleted = r.deleted,
                "compaction published"
            );
        }
    }
    Ok(())
}

/// Runs a compactor until SIGTERM; releases the lease on the way out.
pub async fn run(
    cfg: ServeConfig,
    cluster: ClusterConfig,
    listener: tokio::net::TcpListener,
    root: Arc<dyn ObjectStore>,
) -> anyhow::Result<()> {
    let mut template = cfg.storage.options();
    template.deletion_delay_ms = cluster.deletion_delay_ms;
    template.cluster = Some(ClusterMode::Replica);
    let leases = LeaseStore::new(root.clone());
    let ready = Arc::new(AtomicBool::new(true));
    let app = super::role_router(super::ops_routes(ready));
    let every = std::time::Duration::from_millis(cfg.compaction_interval_ms as u64);
    let renew_every = std::time::Duration::from_millis((cluster.lease_ms / 4).max(100) as u64);
    let held: Arc<parking_lot::Mutex<Option<super::lease::Held>>> = Arc::default();
    let valid_until = Arc::new(AtomicI64::new(0));
    // The lease loop: take the lease when free, renew it while held.
    let lease_loop = {
        let (held, valid_until, leases, node, lease_ms, margin) = (
            held.clone(),
            valid_until.clone(),
            leases.clone(),
            cluster.node_id.clone(),
            cluster.lease_ms,
            cluster.margin_ms(),
        );
        tokio::spawn(async move {
            loop {
                let now = now_ms();
                let cur = held.lock().clone();
                let next = match cur {
                    Some(mut h) => match leases.renew(&mut h, lease_ms, now).await {
                        Ok(true) => Some(h),
                        Ok(false) => {
                            tracing::error!("compactor lease lost");
                            None
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "compactor lease renewal failed");
                            Some(h)
                        }
                    },
                    None => match leases.try_acquire(LEASE, &node, "", lease_ms, now).await {
                        Ok(Some(h)) => {
                            tracing::info!(epoch = h.lease.epoch, "compactor lease taken");
                            Some(h)
                        }
                        Ok(None) => None,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the compactor lease");
                            None
                        }
                    },
                };
                valid_until.store(
                    next.as_ref().map_or(0, |h| h.lease.expires_ms - margin),
                    Ordering::Relaxed,
                );
                crate::api::metrics::METRICS
                    .cluster_compactor_active
                    .set(i64::from(next.is_some()));
                *held.lock() = next;
                tokio::time::sleep(renew_every).await;
            }
        })
    };
    let work = {
        let (root, valid_until) = (root.clone(), valid_until.clone());
        tokio::spawn(async move {
            let mut engines = HashMap::new();
            let valid = move || now_ms() < valid_until.load(Ordering::Relaxed);
            loop {
                if valid() {
                    if let Err(e) = round(&root, &template, &mut engines, &valid).await {
                        crate::api::metrics::METRICS.compaction_failures.inc();
                        tracing::error!(error = %e, "compaction round failed");
                    }
                    tokio::time::sleep(every).await;
                } else {
                    tokio::time::sleep(renew_every).await;
                }
            }
        })
    };
    let (_fatal_tx, fatal_rx) = tokio::sync::mpsc::channel(1);
    let served = crate::server::serve(listener, app, &cfg, fatal_rx).await;
    work.abort();
    lease_loop.abort();
    let last = held.lock().take();
    if let Some(h) = last
        && let Err(e) = leases.release(&h).await
    {
        tracing::warn!(error = %e, "could not release the compactor lease");
    }
    served
}
