//! Opening a tenant's storage: the data directory's format and instance id, the complete
//! blocks (leftovers deleted, unreadable ones quarantined, retried in the background while
//! the object store is unreachable), the metadata snapshot, then WAL replay.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;

use super::wal_task::{read_checkpoint, replay_wal, wal_task};
use super::{ClusterMode, Shared, State, Storage, StorageOptions, StorageStats, bucket_wal};
use crate::catalog::{BlockPostings, Catalog};
use crate::ingest::MetricMetadata;
use crate::storage::StorageError;
use crate::storage::block::{self, BlockMeta, LoadedBlock, read_meta};
use crate::storage::head::Head;
use crate::storage::metadata::{Meta, MetadataStore, Snapshot};
use crate::storage::paths::{self, BLOCKS_DIR, BlockPath};
use crate::storage::read::footer_cache;
use crate::storage::wal::WalWriter;

impl Storage {
    /// Opens (or creates) storage: checks formats, loads complete blocks, replays the WAL.
    pub async fn open(
        opts: StorageOptions,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, StorageError> {
        if let Some(mode) = opts.cluster.clone() {
            return Self::open_cluster(opts, store, mode).await;
        }
        if opts.read_only {
            crate::migrations::check_readable(&opts.data_dir)?;
        } else {
            std::fs::create_dir_all(&opts.data_dir)?;
            crate::migrations::check_and_upgrade(&opts.data_dir)?;
        }
        let instance = if opts.read_only {
            String::new()
        } else {
            instance_id(&opts.data_dir)?
        };
        let catalog = Arc::new(Catalog::new());
        let wal_dir = opts.data_dir.join("wal");
        // Read even when this process keeps no WAL (`quiver import`): blocks a server
        // flushed name WAL segments, and without the checkpoint they would look like torn
        // flushes and be deleted.
        let checkpoint = read_checkpoint(&wal_dir)?;

        // Blocks live in the object store. If it cannot be reached, a server (`retry_blocks`)
        // still replays its WAL and takes writes, and keeps trying to load the blocks.
        let (blocks, metadata, quarantined, deferred) = match load_blocks(
            store.as_ref(),
            &catalog,
            &instance,
            checkpoint,
            opts.read_only,
        )
        .await
        {
            Ok((b, md, q)) => (b, md, q, None),
            Err(e) if opts.retry_blocks && is_transient(&e) => {
                tracing::error!(error = %e, "cannot load blocks from the object store; serving the WAL and head, retrying");
                (Vec::new(), Snapshot::default(), 0, Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        let mut scoped = MetadataStore::default();
        scoped.restore(metadata, &catalog);
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            store,
            catalog,
            state: RwLock::new(State {
                head: Arc::new(RwLock::new(Head::new())),
                frozen: vec![],
                blocks,
                graveyard: vec![],
                mirrors: Default::default(),
                mirror_checkpoints: Default::default(),
                metadata_versions: Default::default(),
            }),
            metadata: RwLock::new(scoped),
            instance,
            stats: StorageStats::default(),
            footers: footer_cache(),
            blocks_unavailable: parking_lot::Mutex::new(deferred.clone()),
        });
        shared
            .stats
            .blocks_quarantined
            .fetch_add(quarantined, Ordering::Relaxed);

        let wal_tx = if opts.wal && opts.read_only {
            if wal_dir.exists() {
                replay_wal(&shared, &wal_dir, checkpoint, false)?;
            }
            None
        } else if opts.wal {
            let next = replay_wal(&shared, &wal_dir, checkpoint, true)?;
            let writer = WalWriter::create(&wal_dir, next)?.with_faults(opts.wal_faults.clone());
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(wal_task(shared.clone(), writer, rx));
            Some(tx)
        } else {
            None
        };
        if deferred.is_some() {
            tokio::spawn(retry_load_blocks(shared.clone(), checkpoint));
        }
        Ok(Storage {
            shared,
            wal_tx,
            maintenance: tokio::sync::Mutex::new(()),
            registration: tokio::sync::RwLock::new(()),
        })
    }

    /// Opens a cluster role's engine: nothing on local disk. A shard claims its epoch in
    /// the manifest and replays its segments from the bucket; a replica installs the
    /// manifest's blocks (retried by its sync loop while the store is unreachable); a
    /// forwarder holds nothing.
    async fn open_cluster(
        opts: StorageOptions,
        store: Arc<dyn ObjectStore>,
        mode: ClusterMode,
    ) -> Result<Self, StorageError> {
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            store,
            catalog: Arc::new(Catalog::new()),
            state: RwLock::new(State {
                head: Arc::new(RwLock::new(Head::new())),
                frozen: vec![],
                blocks: vec![],
                graveyard: vec![],
                mirrors: Default::default(),
                mirror_checkpoints: Default::default(),
                metadata_versions: Default::default(),
            }),
            metadata: RwLock::new(MetadataStore::default()),
            instance: String::new(),
            stats: StorageStats::default(),
            footers: footer_cache(),
            blocks_unavailable: parking_lot::Mutex::new(None),
        });
        let wal_tx = match &mode {
            ClusterMode::Shard(sh) => {
                let (s, epoch) = (sh.shard, sh.epoch);
                let claimed = crate::storage::manifest::ManifestStore::new(shared.store.clone())
                    .update(|m| {
                        let cur = m.shard(s);
                        if cur.epoch > epoch {
                            return Err(StorageError::Fenced(format!(
                                "shard {s} is at epoch {} (ours {epoch})",
                                cur.epoch
                            )));
                        }
                        if cur.epoch == epoch {
                            return Ok(false);
                        }
                        m.shards.entry(s).or_default().epoch = epoch;
                        Ok(true)
                    })
                    .await?;
                let next = bucket_wal::replay(&shared, s, claimed.shard(s).checkpoint).await?;
                sh.tail.committed(next - 1);
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(bucket_wal::task(shared.clone(), sh.clone(), next, rx));
                Some(tx)
            }
            ClusterMode::Replica | ClusterMode::Forward(_) => None,
        };
        let storage = Storage {
            shared,
            wal_tx,
            maintenance: tokio::sync::Mutex::new(()),
            registration: tokio::sync::RwLock::new(()),
        };
        if let ClusterMode::Replica = &mode {
            let manifest =
                crate::storage::manifest::ManifestStore::new(storage.shared.store.clone());
            match manifest.load().await {
                Ok(v) => {
                    storage.install_manifest(&v.manifest).await?;
                }
                Err(e) if is_transient(&e) => {
                    tracing::error!(error = %e, "cannot read the manifest; serving nothing until it can");
                    *storage.shared.blocks_unavailable.lock() = Some(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(storage)
    }

    /// In-memory storage without WAL (PromQL test scripts, unit tests).
    pub async fn in_memory() -> Result<Self, StorageError> {
        let dir = std::env::temp_dir().join(format!("quiver-mem-{}", ulid::Ulid::new()));
        let mut opts = StorageOptions::new(&dir);
        opts.wal = false;
        // Test scripts and benchmarks hold whatever they load; no server to protect.
        opts.head_memory_limit = usize::MAX;
        let s = Self::open(opts, Arc::new(object_store::memory::InMemory::new())).await;
        let _ = std::fs::remove_dir_all(&dir);
        s
    }
}

fn instance_id(dir: &Path) -> Result<String, StorageError> {
    let p = dir.join("instance_id");
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = ulid::Ulid::new().to_string();
            std::fs::write(&p, &id)?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

/// Lists and loads the complete blocks: deletes leftovers (replaced parents, blocks of a
/// torn flush of this instance) and quarantines blocks that cannot be read. Returns the
/// blocks (sorted by id), the metric metadata and how many blocks were quarantined.
async fn load_blocks(
    store: &dyn ObjectStore,
    catalog: &Arc<Catalog>,
    instance: &str,
    checkpoint: u64,
    read_only: bool,
) -> Result<(Vec<Arc<LoadedBlock>>, Snapshot, u64), StorageError> {
    let started = std::time::Instant::now();
    let (metas, unreadable) = list_block_metas(store).await?;
    let mut quarantined = 0;
    for id in unreadable {
        if !read_only {
            quarantine_block(store, &id).await?;
            quarantined += 1;
        }
    }
    let replaced: std::collections::HashSet<&str> = metas
        .iter()
        .flat_map(|m| m.parents.iter().map(String::as_str))
        .collect();
    let mut keep = Vec::new();
    for m in &metas {
        let torn_flush = m
            .wal
            .as_ref()
            .is_some_and(|w| w.instance == instance && w.segment > checkpoint);
        if (replaced.contains(m.id.as_str()) || torn_flush) && read_only {
            continue;
        }
        if replaced.contains(m.id.as_str()) || torn_flush {
            tracing::warn!(block = %m.id, replaced = replaced.contains(m.id.as_str()), torn_flush, "removing leftover block");
            delete_block(store, &BlockPath::new(m.id.clone())).await?;
        } else {
            keep.push(m.clone());
        }
    }
    // Series files are read concurrently but registered in block order (see
    // `LoadedBlock::register`). The first block goes into an empty catalog (all its series
    // new), so its postings file is read too and used as its postings; later blocks mostly
    // repeat series, whose postings are already there.
    keep.sort_by(|a, b| a.id.cmp(&b.id));
    let first_into_empty = catalog.is_empty();
    // A block whose series digest an earlier block has (flushes of a head holding the
    // same series) is not read: it gets the ids the earlier one got.
    let mut seen = std::collections::HashSet::new();
    let repeats: Vec<bool> = keep
        .iter()
        .map(|m| {
            m.series_digest
                .as_ref()
                .is_some_and(|d| !seen.insert(d.clone()))
        })
        .collect();
    let mut ids_of: std::collections::HashMap<String, Vec<crate::catalog::SeriesId>> =
        Default::default();
    let mut loaded = futures::stream::iter(keep.into_iter().zip(repeats).enumerate())
        .map(|(i, (m, repeat))| async move {
            if repeat {
                return (m, Ok(None));
            }
            // The first block into an empty catalog: its postings file is decoded while
            // its series file is (each on a blocking thread).
            let (labels, postings) = if i == 0 && first_into_empty {
                futures::join!(
                    LoadedBlock::read_labels(store, &m),
                    read_postings_or_none(store, &m)
                )
            } else {
                (LoadedBlock::read_labels(store, &m).await, None)
            };
            (m, labels.map(|l| Some((l, postings))))
        })
        // Each block's label sets are held until it is registered: a few at a time.
        .buffered(2);
    let mut blocks = Vec::new();
    let mut series_files_read = 0usize;
    while let Some((m, read)) = loaded.next().await {
        let digest = m.series_digest.clone();
        let read = match read {
            Ok(None) => {
                // A digest is trusted only with the series count it came with: a meta.json
                // that disagrees with itself is read, not mapped onto another block's ids.
                if let Some(ids) = digest
                    .as_ref()
                    .and_then(|d| ids_of.get(d))
                    .filter(|ids| ids.len() as u64 == m.num_series)
                {
                    blocks.push(Arc::new(LoadedBlock::from_parts(m, ids.clone())));
                    continue;
                }
                // The block that had this digest first could not be read (or the counts
                // differ): read this one.
                LoadedBlock::read_labels(store, &m).await.map(|l| (l, None))
            }
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        };
        match read {
            Ok((labels, postings)) => {
                series_files_read += 1;
                let b = LoadedBlock::register_indexed(m, labels, postings, catalog);
                if let Some(d) = digest {
                    ids_of.insert(d, b.global_ids.clone());
                }
                blocks.push(Arc::new(b));
            }
            Err(e) if is_unreadable(&e) && !read_only => {
                tracing::error!(block = %m.id, error = %e, "block cannot be read");
                quarantine_block(store, &m.id).await?;
                quarantined += 1;
            }
            Err(e) => return Err(e),
        }
    }
    blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    // The decoded files are gone; what the catalog keeps is scattered among their freed
    // pages in several threads' arenas. (A tenant with nothing read has nothing to give
    // back: a thousand empty tenants do not walk the arenas a thousand times.)
    if series_files_read > 0 {
        crate::memory::release_free_memory();
    }
    tracing::info!(
        blocks = blocks.len(),
        series = catalog.len(),
        series_files_read,
        quarantined,
        ms = started.elapsed().as_millis() as u64,
        "loaded blocks"
    );
    let metadata = load_metadata(store).await?;
    Ok((blocks, metadata, quarantined))
}

/// A block's postings file for registering it, or `None` (with a warning) when it cannot
/// be used: the series file alone is enough to build the postings.
async fn read_postings_or_none(store: &dyn ObjectStore, m: &BlockMeta) -> Option<BlockPostings> {
    match block::read_postings(store, &BlockPath::new(m.id.clone())).await {
        Ok(Some(p)) => Some(p),
        Ok(None) => {
            tracing::warn!(block = %m.id, "postings file out of order; building postings from the series file");
            None
        }
        Err(e) => {
            tracing::warn!(block = %m.id, error = %e, "postings file unreadable; building postings from the series file");
            None
        }
    }
}

/// Errors that say the object store could not be reached (retry), as opposed to data
/// that is wrong (quarantine) or a format this binary cannot read (refuse to start).
fn is_transient(e: &StorageError) -> bool {
    match e {
        StorageError::ObjectStore(object_store::Error::NotFound { .. }) => false,
        StorageError::ObjectStore(_) | StorageError::Io(_) | StorageError::Unavailable(_) => true,
        _ => false,
    }
}

/// A block whose files are damaged or missing: a power cut before its files were durable,
/// or corruption on disk.
fn is_unreadable(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Corrupt(_)
            | StorageError::Parquet(_)
            | StorageError::Arrow(_)
            | StorageError::ObjectStore(object_store::Error::NotFound { .. })
    )
}

/// Moves a block's objects from `blocks/<id>/` to `quarantine/<id>/`, so it is neither
/// read nor lost, and the server starts.
async fn quarantine_block(store: &dyn ObjectStore, id: &str) -> Result<(), StorageError> {
    let dir = BlockPath::new(id.to_string()).dir();
    let files: Vec<_> = store.list(Some(&dir)).collect().await;
    for f in files {
        let from = f?.location;
        let rest = from
            .as_ref()
            .strip_prefix(dir.as_ref())
            .unwrap_or(from.as_ref());
        let to = object_store::path::Path::from(format!(
            "{}/{id}/{}",
            paths::QUARANTINE_DIR,
            rest.trim_start_matches('/')
        ));
        store.rename(&from, &to).await?;
    }
    tracing::error!(
        block = id,
        "block quarantined: moved to {}/{id}/",
        paths::QUARANTINE_DIR
    );
    Ok(())
}

/// Retries loading the blocks (object store down at startup) with backoff until it works,
/// then installs them; flushes and compaction wait for that.
async fn retry_load_blocks(shared: Arc<Shared>, checkpoint: u64) {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        tokio::time::sleep(delay).await;
        match load_blocks(
            shared.store.as_ref(),
            &shared.catalog,
            &shared.instance,
            checkpoint,
            false,
        )
        .await
        {
            Ok((blocks, md, quarantined)) => {
                {
                    let mut st = shared.state.write();
                    st.blocks = blocks;
                }
                shared.metadata.write().restore(md, &shared.catalog);
                shared
                    .stats
                    .blocks_quarantined
                    .fetch_add(quarantined, Ordering::Relaxed);
                *shared.blocks_unavailable.lock() = None;
                tracing::info!("object store reachable again: blocks loaded");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "blocks still unavailable");
                *shared.blocks_unavailable.lock() = Some(e.to_string());
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

async fn list_block_metas(
    store: &dyn ObjectStore,
) -> Result<(Vec<BlockMeta>, Vec<String>), StorageError> {
    let listing = store
        .list_with_delimiter(Some(&object_store::path::Path::from(BLOCKS_DIR)))
        .await?;
    let paths: Vec<BlockPath> = listing
        .common_prefixes
        .iter()
        .filter_map(BlockPath::from_key)
        .collect();
    let metas: Vec<(String, Result<Option<BlockMeta>, StorageError>)> =
        futures::stream::iter(paths)
            .map(|p| async move { (p.id.clone(), read_meta(store, &p).await) })
            .buffered(32)
            .collect()
            .await;
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for (id, m) in metas {
        match m {
            Ok(Some(m)) => out.push(m),
            Ok(None) => {}
            Err(e) if is_unreadable(&e) => {
                tracing::error!(block = %id, error = %e, "block meta.json cannot be read");
                unreadable.push(id);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, unreadable))
}

/// Deletes a block: meta first (so a crash midway leaves an incomplete, ignored block).
pub(in crate::storage) async fn delete_block(
    store: &dyn ObjectStore,
    p: &BlockPath,
) -> Result<(), StorageError> {
    match store.delete(&p.meta()).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let files: Vec<_> = store.list(Some(&p.dir())).collect().await;
    for f in files {
        match store.delete(&f?.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The metadata snapshot: `metadata-scoped.json`, or the unscoped `metadata.json` of
/// earlier versions, whose entries become unattributed (shown to unrestricted readers).
async fn load_metadata(store: &dyn ObjectStore) -> Result<Snapshot, StorageError> {
    let read = |b: bytes::Bytes, name: &str| {
        serde_json::from_slice::<serde_json::Value>(&b)
            .map_err(|e| StorageError::Corrupt(format!("{name}: {e}")))
    };
    match store.get(&paths::metadata_scoped()).await {
        Ok(r) => {
            let v = read(r.bytes().await?, paths::METADATA_SCOPED_FILE)?;
            return serde_json::from_value(v).map_err(|e| {
                StorageError::Corrupt(format!("{}: {e}", paths::METADATA_SCOPED_FILE))
            });
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    match store.get(&paths::metadata()).await {
        Ok(r) => {
            let old: BTreeMap<String, MetricMetadata> =
                serde_json::from_value(read(r.bytes().await?, paths::METADATA_FILE)?)
                    .map_err(|e| StorageError::Corrupt(format!("metadata.json: {e}")))?;
            Ok(Snapshot {
                families: BTreeMap::new(),
                unattributed: old.iter().map(|(k, m)| (k.clone(), Meta::of(m))).collect(),
            })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(Snapshot::default()),
        Err(e) => Err(e.into()),
    }
}
