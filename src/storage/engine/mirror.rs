//! A replica's view of the cluster: blocks from the manifest (never a listing) and, on a
//! querier, copies of the writers' heads built from their WAL segment objects.
//!
//! A mirror head covers a run of one shard's segments `[first, last]`. The writer freezes
//! its head after segment `C` when it flushes (a *rotation*) and later lists the blocks
//! holding segments ≤ `C` with `checkpoint = C`; the querier starts a new mirror head at
//! the same rotation, so when that manifest arrives it drops exactly the mirror heads
//! with `last ≤ C`, in the same state change that adds the blocks: a snapshot sees the
//! samples once, in the mirror or in a block. A mirror head that straddles a checkpoint
//! (the querier missed a rotation) is dropped too and the shard is rebuilt from the
//! checkpoint. Samples that reach a snapshot both ways for a moment are the same samples
//! at the same timestamps, which reads merge into one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::RwLock;

use super::Storage;
use super::wal_task::apply_replayed;
use crate::catalog::SeriesId;
use crate::storage::StorageError;
use crate::storage::block::LoadedBlock;
use crate::storage::head::Head;
use crate::storage::manifest::Manifest;
use crate::storage::metadata::Snapshot;
use crate::storage::wal;

/// One mirror head and the segments it holds.
pub struct MirrorHead {
    pub first: u64,
    pub last: u64,
    pub head: Arc<RwLock<Head>>,
}

/// The key of a shard's metric metadata snapshot, under the tenant's prefix.
pub fn metadata_key(shard: u32) -> object_store::path::Path {
    object_store::path::Path::from(format!("cluster/metadata/{shard:04}.json"))
}

/// What an installed manifest changed.
#[derive(Debug, Default)]
pub struct Installed {
    pub added: usize,
    pub removed: usize,
    /// Shards whose mirror straddled a checkpoint: rebuild them from `checkpoint + 1`.
    pub resync: Vec<u32>,
}

impl Storage {
    /// Makes the blocks the manifest lists the blocks this replica reads: loads the new
    /// ones (their series files: the only per-block reads), hides removed ones, drops the
    /// mirror heads the shards' checkpoints cover, and loads changed metadata files.
    pub async fn install_manifest(&self, m: &Manifest) -> Result<Installed, StorageError> {
        let have: HashSet<String> = {
            let st = self.shared.state.read();
            st.blocks.iter().map(|b| b.meta.id.clone()).collect()
        };
        let store = self.shared.store.clone();
        let new: Vec<_> = m
            .blocks
            .iter()
            .filter(|b| !have.contains(&b.id))
            .cloned()
            .collect();
        let mut read = futures::stream::iter(new)
            .map(|meta| {
                let store = store.clone();
                async move {
                    let labels = LoadedBlock::read_labels(store.as_ref(), &meta).await;
                    (meta, labels)
                }
            })
            .buffered(16);
        let mut loaded = Vec::new();
        while let Some((meta, labels)) = read.next().await {
            let labels = match labels {
                Ok(l) => l,
                // Deleted after a newer manifest removed it: the next poll settles it.
                Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => {
                    tracing::warn!(block = %meta.id, "listed block is gone; skipping it");
                    continue;
                }
                Err(e) => return Err(e),
            };
            loaded.push(Arc::new(LoadedBlock::register_indexed(
                meta,
                labels,
                None,
                &self.shared.catalog,
            )));
        }
        let listed: HashSet<&str> = m.blocks.iter().map(|b| b.id.as_str()).collect();
        let mut out = Installed {
            added: loaded.len(),
            ..Default::default()
        };
        {
            let mut st = self.shared.state.write();
            let before = st.blocks.len();
            st.blocks.retain(|b| listed.contains(b.meta.id.as_str()));
            out.removed = before - st.blocks.len();
            st.blocks.extend(loaded);
            st.blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
            for (&shard, s) in &m.shards {
                st.mirror_checkpoints.insert(shard, s.checkpoint);
                if let Some(heads) = st.mirrors.get_mut(&shard) {
                    let straddles = heads
                        .iter()
                        .any(|h| h.first <= s.checkpoint && h.last > s.checkpoint);
                    if straddles {
                        heads.clear();
                        out.resync.push(shard);
                    } else {
                        heads.retain(|h| h.last > s.checkpoint);
                    }
                }
            }
            sync_frozen(&mut st);
        }
        self.load_shard_metadata(m).await?;
        *self.shared.blocks_unavailable.lock() = None;
        Ok(out)
    }

    async fn load_shard_metadata(&self, m: &Manifest) -> Result<(), StorageError> {
        use object_store::ObjectStoreExt;
        for (&shard, &version) in &m.metadata {
            let seen = self
                .shared
                .state
                .read()
                .metadata_versions
                .get(&shard)
                .copied();
            if seen == Some(version) {
                continue;
            }
            match self.shared.store.get(&metadata_key(shard)).await {
                Ok(r) => {
                    let bytes = r.bytes().await?;
                    let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
                        StorageError::Corrupt(format!("{}: {e}", metadata_key(shard)))
                    })?;
                    self.shared
                        .metadata
                        .write()
                        .restore(snap, &self.shared.catalog);
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            self.shared
                .state
                .write()
                .metadata_versions
                .insert(shard, version);
        }
        Ok(())
    }

    /// Applies one of a shard's WAL segment objects to its mirror head; `rotated` starts a
    /// new mirror head first (the writer froze its head after the previous segment).
    /// Segments the manifest's checkpoint covers are ignored. Returns the samples applied.
    pub fn mirror_segment(
        &self,
        shard: u32,
        seq: u64,
        data: &[u8],
        rotated: bool,
    ) -> Result<u64, StorageError> {
        let head = {
            let mut st = self.shared.state.write();
            if st.mirror_checkpoints.get(&shard).is_some_and(|&c| seq <= c) {
                return Ok(0);
            }
            let heads = st.mirrors.entry(shard).or_default();
            let fresh = rotated || heads.is_empty();
            if fresh {
                heads.push(MirrorHead {
                    first: seq,
                    last: seq,
                    head: Arc::new(RwLock::new(Head::new())),
                });
            }
            let m = heads.last_mut().expect("pushed above");
            m.last = m.last.max(seq);
            let head = m.head.clone();
            if fresh {
                sync_frozen(&mut st);
            }
            head
        };
        let now = self.now_ms();
        let mut refs: HashMap<u32, SeriesId, ahash::RandomState> = HashMap::default();
        let (mut total, mut orphans) = (0u64, 0u64);
        let mut h = head.write();
        let name = format!("shard {shard} segment {seq}");
        wal::replay_bytes(data, &name, |rec| {
            total += apply_replayed(&self.shared, &mut h, &mut refs, rec, now, &mut orphans);
        })?;
        if orphans > 0 {
            tracing::error!(
                shard,
                seq,
                orphans,
                "mirrored segment has undeclared series"
            );
        }
        Ok(total)
    }

    /// Deletes blocks in the bucket that the manifest neither lists nor marks deleted and
    /// that were created (their ULID's time) more than `min_age_ms` ago: uploads of a
    /// writer killed between its block upload and its manifest update, which no reader
    /// will ever see. Returns how many were deleted. (One LIST of `blocks/`.)
    pub async fn delete_unlisted_blocks(
        &self,
        m: &Manifest,
        min_age_ms: i64,
    ) -> Result<usize, StorageError> {
        let store = self.shared.store.as_ref();
        let listing = store
            .list_with_delimiter(Some(&object_store::path::Path::from(
                crate::storage::paths::BLOCKS_DIR,
            )))
            .await?;
        let known: HashSet<&str> = m
            .blocks
            .iter()
            .map(|b| b.id.as_str())
            .chain(m.deleted.iter().map(|d| d.id.as_str()))
            .collect();
        let now = self.now_ms();
        let mut deleted = 0;
        for p in listing
            .common_prefixes
            .iter()
            .filter_map(crate::storage::paths::BlockPath::from_key)
        {
            if known.contains(p.id.as_str()) {
                continue;
            }
            let Ok(ulid) = ulid::Ulid::from_string(&p.id) else {
                continue;
            };
            if now - (ulid.timestamp_ms() as i64) < min_age_ms {
                continue;
            }
            tracing::warn!(block = %p.id, "deleting a block no manifest lists (an interrupted flush)");
            super::delete_block(store, &p).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Forgets a shard's mirror heads (before rebuilding it from the bucket).
    pub fn mirror_reset(&self, shard: u32) {
        let mut st = self.shared.state.write();
        st.mirrors.remove(&shard);
        sync_frozen(&mut st);
    }

    /// The last segment of each shard this replica has mirrored, and each checkpoint.
    pub fn mirror_positions(&self) -> BTreeMap<u32, (u64, u64)> {
        let st = self.shared.state.read();
        let mut out = BTreeMap::new();
        for (&s, &c) in &st.mirror_checkpoints {
            out.insert(s, (c, c));
        }
        for (&s, heads) in &st.mirrors {
            if let Some(last) = heads.iter().map(|h| h.last).max() {
                let e = out.entry(s).or_insert((0, 0));
                e.0 = e.0.max(last);
            }
        }
        out
    }
}

/// Reads see mirror heads as frozen heads.
fn sync_frozen(st: &mut super::State) {
    st.frozen = st
        .mirrors
        .values()
        .flatten()
        .map(|m| (m.last, m.head.clone()))
        .collect();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::{ObjectStore, ObjectStoreExt};

    use crate::storage::manifest::{Deletion, Manifest};
    use crate::storage::{ClusterMode, Storage, StorageOptions};

    #[tokio::test]
    async fn only_old_unlisted_blocks_are_collected() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StorageOptions::new(dir.path());
        opts.cluster = Some(ClusterMode::Replica);
        let s = Storage::open(opts, store.clone()).await.unwrap();
        let now = s.now_ms() as u64;
        let id = |age_ms: u64| ulid::Ulid::from_parts(now - age_ms, 7).to_string();
        let (old_orphan, young_orphan, listed, marked) =
            (id(7_200_000), id(60_000), id(7_200_001), id(7_200_002));
        for b in [&old_orphan, &young_orphan, &listed, &marked] {
            store
                .put(&format!("blocks/{b}/meta.json").into(), "{}".into())
                .await
                .unwrap();
        }
        let mut m = Manifest::default();
        m.deleted.push(Deletion {
            id: marked.clone(),
            at_ms: 0,
        });
        let mut meta: crate::storage::block::BlockMeta =
            serde_json::from_value(serde_json::json!({
                "format_version": 1, "id": listed, "min_t": 0, "max_t": 1, "num_series": 0,
                "num_samples": 0, "level": 1, "bytes": 0
            }))
            .unwrap();
        meta.id = listed.clone();
        m.blocks.push(meta);
        assert_eq!(s.delete_unlisted_blocks(&m, 3_600_000).await.unwrap(), 1);
        let exists = |b: String| {
            let store = store.clone();
            async move {
                store
                    .head(&format!("blocks/{b}/meta.json").into())
                    .await
                    .is_ok()
            }
        };
        assert!(
            !exists(old_orphan).await,
            "an old unlisted block is collected"
        );
        assert!(
            exists(young_orphan).await,
            "a flush may still list a young one"
        );
        assert!(
            exists(listed).await && exists(marked).await,
            "listed and marked blocks stay"
        );
    }
}
