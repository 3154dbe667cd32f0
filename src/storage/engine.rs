use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use super::StorageError;
use super::block::{BlockMeta, LoadedBlock, read_meta};
use super::head::Head;
use super::paths::{self, BLOCKS_DIR, BlockPath};
use super::wal::{self, Replayed, WalWriter};
use crate::catalog::{Catalog, SeriesId};
use crate::ingest::{MetricMetadata, WriteBatch};
use crate::model::Labels;

/// Wall clock in ms since the Unix epoch. Injected so tests control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// Tunables of the storage engine. See `config` for how users set them.
#[derive(Clone)]
pub struct StorageOptions {
    /// Local directory for the WAL, the format `VERSION` and the instance id.
    pub data_dir: PathBuf,
    /// Write a WAL (off only for bulk import, which is re-run on failure).
    pub wal: bool,
    /// Open without changing anything: no WAL writer, no truncation, no deletions
    /// (`quiver sql` beside a running server).
    pub read_only: bool,
    pub block_duration_ms: i64,
    pub max_block_duration_ms: i64,
    pub retention_ms: i64,
    /// How far behind "now" a remote-write sample may be.
    pub ooo_window_ms: i64,
    /// How far ahead of "now" a sample may be.
    pub future_tolerance_ms: i64,
    /// Flush the head once its first sample arrived this long ago.
    pub head_flush_interval_ms: i64,
    /// Flush the head once it holds this many samples.
    pub head_max_samples: usize,
    pub clock: Clock,
    /// Decoded samples of block series, shared by all tenants' engines (None: off).
    pub samples_cache: Option<super::read::SamplesCache>,
}

impl StorageOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        const H: i64 = 3_600_000;
        StorageOptions {
            data_dir: data_dir.into(),
            wal: true,
            read_only: false,
            block_duration_ms: 2 * H,
            max_block_duration_ms: 24 * H,
            retention_ms: 15 * 24 * H,
            ooo_window_ms: 3 * H,
            future_tolerance_ms: 600_000,
            head_flush_interval_ms: 2 * H,
            head_max_samples: 20_000_000,
            clock: system_clock(),
            samples_cache: None,
        }
    }
}

/// Which timestamps a write may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteWindow {
    /// Remote write: `[now - ooo_window, now + future_tolerance]`.
    Recent,
    /// Backfill import: `[now - retention, now + future_tolerance]`.
    Backfill,
    /// Anything (tests, PromQL test scripts).
    Any,
}

/// Counters for self-monitoring and tests.
#[derive(Debug, Default)]
pub struct StorageStats {
    pub samples_appended: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub wal_fsync_micros: AtomicU64,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    pub blocks_deleted: AtomicU64,
    pub wal_truncated_bytes: AtomicU64,
}

pub(super) struct State {
    pub head: Arc<RwLock<Head>>,
    /// Heads being written out, with the last WAL segment they cover.
    pub frozen: Vec<(u64, Arc<RwLock<Head>>)>,
    /// Complete blocks, ordered by id (creation order).
    pub blocks: Vec<Arc<LoadedBlock>>,
    /// Blocks replaced or expired, deleted once no reader holds them.
    pub graveyard: Vec<Arc<LoadedBlock>>,
}

pub(super) struct Shared {
    pub opts: StorageOptions,
    pub store: Arc<dyn ObjectStore>,
    pub catalog: Arc<Catalog>,
    pub state: RwLock<State>,
    pub metadata: RwLock<BTreeMap<String, MetricMetadata>>,
    pub instance: String,
    pub stats: StorageStats,
    /// Parsed Parquet footers of sample files, by block id (blocks are immutable).
    pub footers: super::read::FooterCache,
}

struct AppendReq {
    series: Vec<(SeriesId, Arc<Labels>)>,
    samples: Vec<(SeriesId, i64, f64)>,
    metadata: Vec<MetricMetadata>,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

/// A head frozen by a WAL rotation, with the last segment its samples are in.
type FrozenHead = (u64, Arc<RwLock<Head>>);

enum WalCmd {
    Append(AppendReq),
    Rotate(oneshot::Sender<Result<FrozenHead, StorageError>>),
}

/// The storage engine. Share it as `Arc<Storage>`.
pub struct Storage {
    pub(super) shared: Arc<Shared>,
    wal_tx: Option<mpsc::Sender<WalCmd>>,
    /// Serialises flush and compaction (both rewrite the block list).
    pub(super) maintenance: tokio::sync::Mutex<()>,
}

impl Storage {
    /// Opens (or creates) storage: checks formats, loads complete blocks, replays the WAL.
    pub async fn open(
        opts: StorageOptions,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, StorageError> {
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
        let checkpoint = if opts.wal {
            read_checkpoint(&wal_dir)?
        } else {
            0
        };

        let metas = list_block_metas(store.as_ref()).await?;
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
            if (replaced.contains(m.id.as_str()) || torn_flush) && opts.read_only {
                continue;
            }
            if replaced.contains(m.id.as_str()) || torn_flush {
                tracing::warn!(block = %m.id, replaced = replaced.contains(m.id.as_str()), torn_flush, "removing leftover block");
                delete_block(store.as_ref(), &BlockPath::new(m.id.clone())).await?;
            } else {
                keep.push(m.clone());
            }
        }
        let loaded: Vec<Result<LoadedBlock, StorageError>> = futures::stream::iter(keep)
            .map(|m| {
                let store = store.clone();
                let catalog = catalog.clone();
                async move { LoadedBlock::load(store.as_ref(), m, &catalog).await }
            })
            .buffered(16)
            .collect()
            .await;
        let mut blocks = Vec::new();
        for b in loaded {
            blocks.push(Arc::new(b?));
        }
        blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        tracing::info!(
            blocks = blocks.len(),
            series = catalog.len(),
            "loaded blocks"
        );

        let metadata = load_metadata(store.as_ref()).await?;
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            store,
            catalog,
            state: RwLock::new(State {
                head: Arc::new(RwLock::new(Head::new())),
                frozen: vec![],
                blocks,
                graveyard: vec![],
            }),
            metadata: RwLock::new(metadata),
            instance,
            stats: StorageStats::default(),
            footers: super::read::footer_cache(),
        });

        let wal_tx = if opts.wal && opts.read_only {
            if wal_dir.exists() {
                replay_wal(&shared, &wal_dir, checkpoint, false)?;
            }
            None
        } else if opts.wal {
            let next = replay_wal(&shared, &wal_dir, checkpoint, true)?;
            let writer = WalWriter::create(&wal_dir, next)?;
            let (tx, rx) = mpsc::channel();
            let sh = shared.clone();
            std::thread::Builder::new()
                .name("quiver-wal".into())
                .spawn(move || wal_loop(sh, writer, rx))?;
            Some(tx)
        } else {
            None
        };
        Ok(Storage {
            shared,
            wal_tx,
            maintenance: tokio::sync::Mutex::new(()),
        })
    }

    /// In-memory storage without WAL (PromQL test scripts, unit tests).
    pub async fn in_memory() -> Result<Self, StorageError> {
        let dir = std::env::temp_dir().join(format!("quiver-mem-{}", ulid::Ulid::new()));
        let mut opts = StorageOptions::new(&dir);
        opts.wal = false;
        let s = Self::open(opts, Arc::new(object_store::memory::InMemory::new())).await;
        let _ = std::fs::remove_dir_all(&dir);
        s
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.shared.catalog
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.shared.store
    }

    pub fn options(&self) -> &StorageOptions {
        &self.shared.opts
    }

    pub fn stats(&self) -> &StorageStats {
        &self.shared.stats
    }

    pub fn now_ms(&self) -> i64 {
        (self.shared.opts.clock)()
    }

    /// Metric metadata received through remote write, by family name.
    pub fn metadata(&self) -> BTreeMap<String, MetricMetadata> {
        self.shared.metadata.read().clone()
    }

    /// Makes a batch durable and visible, or rejects it whole. Returns the samples stored.
    pub async fn append(
        &self,
        batch: WriteBatch,
        window: WriteWindow,
    ) -> Result<usize, StorageError> {
        let now = self.now_ms();
        let o = &self.shared.opts;
        let (min_ok, max_ok) = match window {
            WriteWindow::Recent => (now - o.ooo_window_ms, now + o.future_tolerance_ms),
            WriteWindow::Backfill => (now - o.retention_ms, now + o.future_tolerance_ms),
            WriteWindow::Any => (i64::MIN, i64::MAX),
        };
        for s in &batch.series {
            if let Some(&(t, _)) = s.samples.iter().find(|(t, _)| *t < min_ok || *t > max_ok) {
                return Err(StorageError::OutOfBounds {
                    labels: s.labels.to_string(),
                    timestamp_ms: t,
                    min_ms: min_ok,
                    max_ms: max_ok,
                });
            }
        }
        let ids = self
            .shared
            .catalog
            .get_or_insert_many(batch.series.iter().map(|s| &s.labels));
        let n = batch.sample_count();
        let mut samples = Vec::with_capacity(n);
        let mut series = Vec::with_capacity(ids.len());
        for (s, &id) in batch.series.into_iter().zip(&ids) {
            samples.extend(s.samples.iter().map(|&(t, v)| (id, t, v)));
            series.push((id, Arc::new(s.labels)));
        }
        match &self.wal_tx {
            Some(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send(WalCmd::Append(AppendReq {
                    series,
                    samples,
                    metadata: batch.metadata,
                    reply,
                }))
                .map_err(|_| StorageError::Closed)?;
                rx.await.map_err(|_| StorageError::Closed)??;
            }
            None => {
                let head = self.shared.state.read().head.clone();
                let mut h = head.write();
                for (id, t, v) in samples {
                    h.append(id, t, v, now);
                }
                drop(h);
                apply_metadata(&self.shared, batch.metadata);
            }
        }
        self.shared
            .stats
            .samples_appended
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Whether the head is due for a flush (size or age).
    pub fn should_flush(&self) -> bool {
        let head = self.shared.state.read().head.clone();
        let h = head.read();
        let o = &self.shared.opts;
        h.num_samples() >= o.head_max_samples
            || h.first_append_ms()
                .is_some_and(|f| self.now_ms() - f >= o.head_flush_interval_ms)
            || h.time_range()
                .is_some_and(|(a, b)| b - a >= o.block_duration_ms * 3 / 2)
    }

    /// Rotates the WAL and freezes the head in one step, so every sample is either in the
    /// frozen head (and segments ≤ the returned one) or in the new head.
    pub(super) async fn rotate(&self) -> Result<(u64, Arc<RwLock<Head>>), StorageError> {
        match &self.wal_tx {
            Some(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send(WalCmd::Rotate(reply))
                    .map_err(|_| StorageError::Closed)?;
                rx.await.map_err(|_| StorageError::Closed)?
            }
            None => Ok((0, freeze_head(&self.shared, 0))),
        }
    }

    /// Head series and samples, for status endpoints.
    pub fn head_stats(&self) -> (usize, usize, Option<(i64, i64)>) {
        let st = self.shared.state.read();
        let mut series = roaring::RoaringBitmap::new();
        let mut samples = 0;
        let mut range: Option<(i64, i64)> = None;
        for h in std::iter::once(&st.head).chain(st.frozen.iter().map(|(_, h)| h)) {
            let h = h.read();
            series |= h.present();
            samples += h.num_samples();
            if let Some((a, b)) = h.time_range() {
                range = Some(range.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
            }
        }
        (series.len() as usize, samples, range)
    }

    /// Metas of the loaded blocks, oldest first.
    pub fn blocks(&self) -> Vec<BlockMeta> {
        self.shared
            .state
            .read()
            .blocks
            .iter()
            .map(|b| b.meta.clone())
            .collect()
    }

    /// Persists the metric metadata snapshot to the object store.
    pub(super) async fn save_metadata(&self) -> Result<(), StorageError> {
        let md = self.metadata();
        if md.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_vec(&md).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        self.shared
            .store
            .put(&paths::metadata(), json.into())
            .await?;
        Ok(())
    }
}

pub(super) fn freeze_head(shared: &Shared, seg: u64) -> Arc<RwLock<Head>> {
    let mut st = shared.state.write();
    let old = std::mem::replace(&mut st.head, Arc::new(RwLock::new(Head::new())));
    st.frozen.push((seg, old.clone()));
    old
}

fn apply_metadata(shared: &Shared, md: Vec<MetricMetadata>) {
    if md.is_empty() {
        return;
    }
    let mut m = shared.metadata.write();
    for x in md {
        m.insert(x.metric_family_name.clone(), x);
    }
}

/// The WAL thread: group commit, then apply to the head, then acknowledge.
fn wal_loop(shared: Arc<Shared>, mut w: WalWriter, rx: mpsc::Receiver<WalCmd>) {
    while let Ok(first) = rx.recv() {
        let mut cmds = vec![first];
        while cmds.len() < 4096 {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let mut pending: Vec<AppendReq> = Vec::new();
        for cmd in cmds {
            match cmd {
                WalCmd::Append(req) => {
                    let r = w.append(&req.series, &req.samples).and_then(|_| {
                        if req.metadata.is_empty() {
                            Ok(())
                        } else {
                            w.append_metadata(&req.metadata)
                        }
                    });
                    match r {
                        Ok(()) => pending.push(req),
                        Err(e) => {
                            let _ = req.reply.send(Err(e.into()));
                        }
                    }
                }
                WalCmd::Rotate(reply) => {
                    commit(&shared, &mut w, &mut pending);
                    let r = w
                        .rotate()
                        .map(|closed| (closed, freeze_head(&shared, closed)));
                    let _ = reply.send(r.map_err(Into::into));
                }
            }
        }
        commit(&shared, &mut w, &mut pending);
    }
    let _ = w.sync();
}

fn commit(shared: &Shared, w: &mut WalWriter, pending: &mut Vec<AppendReq>) {
    if pending.is_empty() {
        return;
    }
    let start = std::time::Instant::now();
    let res = w.sync();
    shared.stats.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .wal_fsync_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    match res {
        Ok(()) => {
            let now = (shared.opts.clock)();
            let head = shared.state.read().head.clone();
            let mut h = head.write();
            for req in pending.iter() {
                for &(id, t, v) in &req.samples {
                    h.append(id, t, v, now);
                }
            }
            drop(h);
            for req in pending.drain(..) {
                apply_metadata(shared, req.metadata);
                let _ = req.reply.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "WAL fsync failed; rejecting writes");
            for req in pending.drain(..) {
                let _ = req.reply.send(Err(StorageError::Io(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))));
            }
        }
    }
}

/// Replays segments after the checkpoint into the head; returns the next segment number.
fn replay_wal(
    shared: &Shared,
    dir: &Path,
    checkpoint: u64,
    write: bool,
) -> Result<u64, StorageError> {
    if write {
        std::fs::create_dir_all(dir)?;
    }
    let segs = wal::list_segments(dir)?;
    let mut next = checkpoint + 1;
    let now = (shared.opts.clock)();
    let head = shared.state.read().head.clone();
    let mut total = 0u64;
    for seq in segs {
        let path = wal::segment_path(dir, seq);
        if seq <= checkpoint {
            if write {
                std::fs::remove_file(&path)?;
            }
            continue;
        }
        next = next.max(seq + 1);
        let mut refs: std::collections::HashMap<u32, SeriesId> = Default::default();
        let mut h = head.write();
        let stats = wal::replay_segment(&path, write, |rec| match rec {
            Replayed::Samples { series, samples } => {
                let ids = shared
                    .catalog
                    .get_or_insert_many(series.iter().map(|(_, l)| l));
                for ((r, _), id) in series.iter().zip(ids) {
                    refs.insert(*r, id);
                }
                for (r, t, v) in samples {
                    if let Some(&id) = refs.get(&r) {
                        h.append(id, t, v, now);
                        total += 1;
                    }
                }
            }
            Replayed::Metadata(md) => apply_metadata(shared, md),
        })?;
        shared
            .stats
            .wal_truncated_bytes
            .fetch_add(stats.truncated_bytes, Ordering::Relaxed);
    }
    tracing::info!(samples = total, next_segment = next, "WAL replayed");
    Ok(next)
}

pub(super) fn read_checkpoint(dir: &Path) -> Result<u64, StorageError> {
    match std::fs::read_to_string(dir.join("checkpoint")) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| StorageError::Corrupt(format!("WAL checkpoint {s:?}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Records that every segment ≤ `seg` is in complete blocks (write, fsync, rename).
pub(super) fn write_checkpoint(dir: &Path, seg: u64) -> Result<(), StorageError> {
    let tmp = dir.join("checkpoint.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{seg}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("checkpoint"))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
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

async fn list_block_metas(store: &dyn ObjectStore) -> Result<Vec<BlockMeta>, StorageError> {
    let listing = store
        .list_with_delimiter(Some(&object_store::path::Path::from(BLOCKS_DIR)))
        .await?;
    let paths: Vec<BlockPath> = listing
        .common_prefixes
        .iter()
        .filter_map(BlockPath::from_key)
        .collect();
    let metas: Vec<Result<Option<BlockMeta>, StorageError>> = futures::stream::iter(paths)
        .map(|p| async move { read_meta(store, &p).await })
        .buffered(32)
        .collect()
        .await;
    let mut out = Vec::new();
    for m in metas {
        if let Some(m) = m? {
            out.push(m);
        }
    }
    Ok(out)
}

/// Deletes a block: meta first (so a crash midway leaves an incomplete, ignored block).
pub(super) async fn delete_block(
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

async fn load_metadata(
    store: &dyn ObjectStore,
) -> Result<BTreeMap<String, MetricMetadata>, StorageError> {
    match store.get(&paths::metadata()).await {
        Ok(r) => {
            let b = r.bytes().await?;
            serde_json::from_slice(&b)
                .map_err(|e| StorageError::Corrupt(format!("metadata.json: {e}")))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}
