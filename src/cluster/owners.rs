//! Who owns each shard, from the leases in the bucket: read by distributors (to route)
//! and queriers (to follow heads), refreshed on a short period and on demand after a
//! failed call.

use std::sync::Arc;

use parking_lot::RwLock;

use super::lease::{Lease, LeaseStore};
use super::shard_lease;

#[derive(Clone)]
pub struct Owners {
    leases: LeaseStore,
    shards: u32,
    map: Arc<RwLock<Vec<Option<Lease>>>>,
    refresh: Arc<tokio::sync::Mutex<()>>,
}

impl Owners {
    pub fn new(leases: LeaseStore, shards: u32) -> Self {
        Owners {
            leases,
            shards,
            map: Arc::new(RwLock::new(vec![None; shards as usize])),
            refresh: Arc::default(),
        }
    }

    /// The shard's owner if its lease is live at `now_ms`.
    pub fn owner(&self, shard: u32, now_ms: i64) -> Option<Lease> {
        self.map
            .read()
            .get(shard as usize)
            .cloned()
            .flatten()
            .filter(|l| l.expires_ms > now_ms)
    }

    /// Re-reads every shard's lease (one GET each). Concurrent callers share one refresh.
    pub async fn refresh(&self) {
        let Ok(_g) = self.refresh.try_lock() else {
            // Someone is refreshing: wait for them.
            let _ = self.refresh.lock().await;
            return;
        };
        let reads = futures::future::join_all(
            (0..self.shards).map(|s| async move { self.leases.read(&shard_lease(s)).await }),
        )
        .await;
        let mut map = self.map.write();
        for (s, r) in reads.into_iter().enumerate() {
            match r {
                Ok(l) => map[s] = l.map(|(l, _)| l),
                Err(e) => tracing::warn!(shard = s, error = %e, "cannot read a shard lease"),
            }
        }
    }

    /// Refreshes every `period` until the process ends.
    pub fn spawn(&self, period: std::time::Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.refresh().await;
                tokio::time::sleep(period).await;
            }
        });
    }
}
