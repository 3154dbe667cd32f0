//! The bucket index of a cluster: one object listing a tenant's live blocks, the blocks
//! compaction or retention removed (kept readable for a delay), and each shard's owner
//! epoch and WAL checkpoint. Changed only by conditional put (S3 If-Match /
//! If-None-Match through `object_store`'s `PutMode`), so concurrent writers, the compactor
//! and a zombie owner cannot overwrite each other's changes; readers learn of new blocks by
//! reading this one object (a conditional GET when nothing changed), never by listing.
//!
//! Invariants:
//! - A block is listed only after its `meta.json` is in the store (it is complete).
//! - A shard's `checkpoint` advances in the same put that lists the blocks holding its
//!   segments, and only with the epoch of the shard's current lease: a writer that lost
//!   its lease cannot list blocks for it (`StorageError::Fenced`).
//! - A block leaves `blocks` and enters `deleted` in one put; its files are deleted only
//!   after `deleted[].at_ms + deletion delay`, so a query planned on an older manifest still
//!   finds them.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::StorageError;
use super::block::BlockMeta;

/// The manifest's key, under the tenant's prefix.
pub const MANIFEST_KEY: &str = "cluster/manifest.json";

/// Most attempts of one update racing other writers before it gives up.
const MAX_ATTEMPTS: usize = 64;

/// One shard's state in the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// Epoch of the lease whose owner may list blocks for this shard.
    pub epoch: u64,
    /// Every WAL segment ≤ this is in listed blocks (0: none yet).
    pub checkpoint: u64,
}

/// A block removed from the list, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub id: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Bumped by every update (for logs and `/metrics`; the store's ETag does the fencing).
    pub version: u64,
    /// Live blocks, sorted by id. Full metas: a reader needs no `meta.json` per block.
    pub blocks: Vec<BlockMeta>,
    #[serde(default)]
    pub deleted: Vec<Deletion>,
    #[serde(default)]
    pub shards: BTreeMap<u32, ShardState>,
    /// Bumped when a shard's metric metadata file changes (`cluster/metadata/<shard>.json`).
    #[serde(default)]
    pub metadata: BTreeMap<u32, u64>,
}

impl Manifest {
    pub fn shard(&self, s: u32) -> ShardState {
        self.shards.get(&s).copied().unwrap_or_default()
    }
}

/// A JSON object read with the version a conditional put must match (`None`: absent).
/// Shared by every object the cluster changes by conditional put: the manifest, leases,
/// HA elections.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &Path,
) -> Result<Option<(T, UpdateVersion)>, StorageError> {
    match store.get_opts(key, GetOptions::default()).await {
        Ok(r) => {
            let version = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            let value = serde_json::from_slice(&r.bytes().await?)
                .map_err(|e| StorageError::Corrupt(format!("{key}: {e}")))?;
            Ok(Some((value, version)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Puts `value` as JSON if the object is as `mode` expects (absent for `Create`, at that
/// version for `Update`); `None` when another writer changed it first.
pub async fn put_json_if<T: Serialize>(
    store: &dyn ObjectStore,
    key: &Path,
    value: &T,
    mode: PutMode,
) -> Result<Option<UpdateVersion>, StorageError> {
    let body =
        serde_json::to_vec(value).map_err(|e| StorageError::Corrupt(format!("{key}: {e}")))?;
    let opts = PutOptions {
        mode,
        ..Default::default()
    };
    match store.put_opts(key, PutPayload::from(body), opts).await {
        Ok(r) => Ok(Some(UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        })),
        Err(
            object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. },
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A manifest as read, with the version a conditional put must match.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub manifest: Manifest,
    pub version: Option<UpdateVersion>,
}

/// Reads and updates one tenant's manifest.
#[derive(Clone)]
pub struct ManifestStore {
    store: Arc<dyn ObjectStore>,
}

impl ManifestStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ManifestStore { store }
    }

    fn key() -> Path {
        Path::from(MANIFEST_KEY)
    }

    /// The manifest (empty if none was written yet).
    pub async fn load(&self) -> Result<Versioned, StorageError> {
        match self.load_if_changed(None).await? {
            Some(v) => Ok(v),
            None => unreachable!("an unconditional read always answers"),
        }
    }

    /// The manifest if its ETag differs from `etag` (a conditional GET: 304 costs no
    /// transfer), else `None`.
    pub async fn load_if_changed(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<Versioned>, StorageError> {
        let opts = GetOptions {
            if_none_match: etag.map(str::to_string),
            ..Default::default()
        };
        match self.store.get_opts(&Self::key(), opts).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await?;
                let manifest: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| StorageError::Corrupt(format!("{MANIFEST_KEY}: {e}")))?;
                Ok(Some(Versioned {
                    manifest,
                    version: Some(version),
                }))
            }
            Err(object_store::Error::NotModified { .. }) => Ok(None),
            Err(object_store::Error::NotFound { .. }) => Ok(Some(Versioned {
                manifest: Manifest::default(),
                version: None,
            })),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `change` to the current manifest and puts it conditionally, re-reading and
    /// re-applying when another process changed it meanwhile. `change` returns whether it
    /// changed anything (nothing is written otherwise) or an error that ends the update.
    pub async fn update(
        &self,
        mut change: impl FnMut(&mut Manifest) -> Result<bool, StorageError>,
    ) -> Result<Manifest, StorageError> {
        for attempt in 0..MAX_ATTEMPTS {
            let Versioned {
                mut manifest,
                version,
            } = self.load().await?;
            if !change(&mut manifest)? {
                return Ok(manifest);
            }
            manifest.version += 1;
            manifest.blocks.sort_by(|a, b| a.id.cmp(&b.id));
            let mode = match version {
                Some(v) => PutMode::Update(v),
                None => PutMode::Create,
            };
            if put_json_if(self.store.as_ref(), &Self::key(), &manifest, mode)
                .await?
                .is_some()
            {
                return Ok(manifest);
            }
            // Lost a race: read the winner's manifest and apply the change to it.
            let ms = 5u64 << attempt.min(6);
            tokio::time::sleep(std::time::Duration::from_millis(
                ms / 2 + rand_below(ms / 2 + 1),
            ))
            .await;
        }
        Err(StorageError::Unavailable(format!(
            "{MANIFEST_KEY}: gave up after {MAX_ATTEMPTS} conflicting updates"
        )))
    }
}

/// A small random number (jitter), without a crate for it.
fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> BlockMeta {
        BlockMeta {
            format_version: 1,
            id: id.into(),
            min_t: 0,
            max_t: 1,
            num_series: 1,
            num_samples: 1,
            num_histograms: 0,
            histogram_series: None,
            num_exemplars: 0,
            level: 1,
            parents: vec![],
            wal: None,
            bytes: 1,
            series_digest: None,
        }
    }

    #[tokio::test]
    async fn concurrent_updates_all_land() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let m = ManifestStore::new(store);
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move {
                    m.update(|man| {
                        man.blocks.push(meta(&format!("b{i:02}")));
                        Ok(true)
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let got = m.load().await.unwrap().manifest;
        assert_eq!(got.blocks.len(), 16, "a lost update would drop a block");
        assert_eq!(got.version, 16);
    }

    #[tokio::test]
    async fn unchanged_manifest_is_not_read_again() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let m = ManifestStore::new(store);
        m.update(|man| {
            man.blocks.push(meta("a"));
            Ok(true)
        })
        .await
        .unwrap();
        let v = m.load().await.unwrap();
        let etag = v.version.unwrap().e_tag.unwrap();
        assert!(m.load_if_changed(Some(&etag)).await.unwrap().is_none());
        m.update(|man| {
            man.blocks.push(meta("b"));
            Ok(true)
        })
        .await
        .unwrap();
        assert!(m.load_if_changed(Some(&etag)).await.unwrap().is_some());
    }
}
