//! Leases in the bucket: `cluster/leases/<name>.json`, taken and renewed by conditional
//! put (If-None-Match for a lease never taken, If-Match on the ETag read otherwise), so of
//! two processes racing for a lease exactly one put succeeds. Nothing else decides
//! ownership: no consensus of our own.
//!
//! Invariants:
//! - A lease changes owner only after `expires_ms` (as the taker's clock reads it) or when
//!   its owner released it; every change of owner bumps `epoch`.
//! - An owner acts on a lease only while its own clock is `margin` before the expiry it
//!   last wrote (`Held::valid`): with clocks that agree within the margin, the old owner
//!   has stopped before a new one can start.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::storage::StorageError;
use crate::storage::manifest::{get_json, put_json_if};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder's node id.
    pub owner: String,
    /// Where the holder serves (writers: the internal API).
    pub addr: String,
    pub epoch: u64,
    /// Wall-clock ms after which another node may take it (0: released).
    pub expires_ms: i64,
}

/// A lease this process holds, with the version its next renewal must match.
#[derive(Debug, Clone)]
pub struct Held {
    pub name: String,
    pub lease: Lease,
    version: UpdateVersion,
}

impl Held {
    /// Whether the holder may still act: `margin_ms` before the expiry it wrote.
    pub fn valid(&self, now_ms: i64, margin_ms: i64) -> bool {
        now_ms < self.lease.expires_ms - margin_ms
    }
}

#[derive(Clone)]
pub struct LeaseStore {
    store: Arc<dyn ObjectStore>,
}

fn key(name: &str) -> Path {
    Path::from(format!("cluster/leases/{name}.json"))
}

impl LeaseStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        LeaseStore { store }
    }

    /// The lease as stored, and its version (`None`: never taken).
    pub async fn read(&self, name: &str) -> Result<Option<(Lease, UpdateVersion)>, StorageError> {
        get_json(self.store.as_ref(), &key(name)).await
    }

    async fn put(
        &self,
        name: &str,
        lease: &Lease,
        mode: PutMode,
    ) -> Result<Option<UpdateVersion>, StorageError> {
        put_json_if(self.store.as_ref(), &key(name), lease, mode).await
    }

    /// Takes the lease if it is free (never taken, released or expired at `now_ms`) or
    /// already ours; `None` when another node holds it or won the race.
    pub async fn try_acquire(
        &self,
        name: &str,
        owner: &str,
        addr: &str,
        duration_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Held>, StorageError> {
        let current = self.read(name).await?;
        let (epoch, mode) = match &current {
            None => (1, PutMode::Create),
            // Ours still (a restart with the same node id): a new epoch all the same, so
            // whatever an earlier holder of ours still runs is fenced.
            Some((l, v)) if l.owner == owner || l.expires_ms <= now_ms => {
                (l.epoch + 1, PutMode::Update(v.clone()))
            }
            Some(_) => return Ok(None),
        };
        let lease = Lease {
            owner: owner.to_string(),
            addr: addr.to_string(),
            epoch,
            expires_ms: now_ms + duration_ms,
        };
        Ok(self.put(name, &lease, mode).await?.map(|version| Held {
            name: name.to_string(),
            lease,
            version,
        }))
    }

    /// Extends a held lease; `false` when it was lost (another node took it).
    pub async fn renew(
        &self,
        held: &mut Held,
        duration_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        let mut lease = held.lease.clone();
        lease.expires_ms = now_ms + duration_ms;
        match self
            .put(&held.name, &lease, PutMode::Update(held.version.clone()))
            .await?
        {
            Some(v) => {
                held.lease = lease;
                held.version = v;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives the lease up at once (expiry 0), so another node need not wait for it.
    pub async fn release(&self, held: &Held) -> Result<(), StorageError> {
        let mut lease = held.lease.clone();
        lease.expires_ms = 0;
        self.put(&held.name, &lease, PutMode::Update(held.version.clone()))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_of_two_racers_wins_and_expiry_hands_over() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let l = LeaseStore::new(store);
        let (a, b) = tokio::join!(
            l.try_acquire("x", "a", "http://a", 1000, 0),
            l.try_acquire("x", "b", "http://b", 1000, 0)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.is_some() != b.is_some(), "exactly one takes a free lease");
        let (winner, loser) = if a.is_some() { ("a", "b") } else { ("b", "a") };
        let mut held = a.or(b).unwrap();
        assert_eq!(held.lease.epoch, 1);
        // Held and unexpired: the other cannot take it.
        assert!(
            l.try_acquire("x", loser, "", 1000, 500)
                .await
                .unwrap()
                .is_none()
        );
        assert!(l.renew(&mut held, 1000, 900).await.unwrap());
        assert!(
            l.try_acquire("x", loser, "", 1000, 1500)
                .await
                .unwrap()
                .is_none()
        );
        // Expired: the other takes it with the next epoch, and the old owner's renewal fails.
        let taken = l
            .try_acquire("x", loser, "", 1000, 1901)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((taken.lease.owner.as_str(), taken.lease.epoch), (loser, 2));
        assert!(
            !l.renew(&mut held, 1000, 1902).await.unwrap(),
            "{winner} lost it"
        );
        assert!(taken.valid(1901, 100) && !taken.valid(2850, 200));
        // The holder taking it again (a restart with the same id) gets a new epoch too.
        let again = l
            .try_acquire("x", loser, "", 1000, 1950)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.lease.epoch, 3);
    }
}
