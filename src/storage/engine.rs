use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;
use roaring::RoaringBitmap;
use tokio::sync::oneshot;

use super::StorageError;
use super::block::{BlockMeta, LoadedBlock, read_meta};
use super::head::Head;
use super::metadata::{Meta, MetadataStore, Snapshot};
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
    /// Most bytes (estimated) the live and frozen heads of all tenants together may hold;
    /// beyond it appends fail with `Overloaded` until a flush frees memory.
    pub head_memory_limit: usize,
    /// Decoded samples (bytes) one compaction holds at a time; it merges a chunk of series
    /// at a time under this, so block size does not bound memory.
    pub compaction_memory_bytes: usize,
    /// Samples in the live and frozen heads of every engine sharing these options (all
    /// tenants of a server: the clone shares the counter).
    pub head_samples: Arc<AtomicUsize>,
    /// When the object store cannot be reached at open, serve the WAL and head and keep
    /// retrying the blocks in the background (the server); otherwise fail (CLI tools).
    pub retry_blocks: bool,
    /// Decoded samples of block series, shared by all tenants' engines (None: off).
    pub samples_cache: Option<super::read::SamplesCache>,
    /// Records the flush's WAL steps beside the store's syncs (tests).
    pub journal: Option<super::durable::FsJournal>,
    /// Injected WAL write/fsync failures (tests).
    pub wal_faults: Option<Arc<super::wal::WalFaults>>,
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
            head_memory_limit: 2 << 30,
            compaction_memory_bytes: 256 << 20,
            head_samples: Arc::default(),
            retry_blocks: false,
            journal: None,
            wal_faults: None,
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
    /// Most decoded-sample bytes one compaction chunk held (tests, `/metrics`).
    pub compaction_peak_bytes: AtomicU64,
    pub blocks_deleted: AtomicU64,
    pub wal_truncated_bytes: AtomicU64,
    /// Replayed WAL samples whose series declaration was missing (corruption).
    pub wal_orphan_samples: AtomicU64,
    /// Exemplars not stored: invalid, or outside the write window.
    pub exemplars_dropped: AtomicU64,
    /// Blocks moved aside at startup because they could not be read.
    pub blocks_quarantined: AtomicU64,
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
    /// Metric metadata, scoped by the series that carried it (`storage::metadata`).
    pub metadata: RwLock<MetadataStore>,
    pub instance: String,
    pub stats: StorageStats,
    /// Parsed Parquet footers of sample files, by block id (blocks are immutable).
    pub footers: super::read::FooterCache,
    /// Why the blocks are not loaded yet (`None`: loaded).
    pub blocks_unavailable: parking_lot::Mutex<Option<String>>,
}

/// Estimated head memory per entry: a timestamp, a value and a commit sequence, plus
/// vector slack.
pub const HEAD_BYTES_PER_SAMPLE: usize = 28;

struct AppendReq {
    series: Vec<(SeriesId, Arc<Labels>)>,
    samples: Vec<(SeriesId, i64, f64)>,
    hists: Vec<(SeriesId, i64, super::head::Hist)>,
    exemplars: Vec<(SeriesId, super::head::Ex)>,
    /// Metadata to log, and its carriers' ids (resolved once, in `append`).
    metadata: Vec<MetricMetadata>,
    carrier_ids: Vec<Vec<SeriesId>>,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

/// A head frozen by a WAL rotation, with the last segment its samples are in.
type FrozenHead = (u64, Arc<RwLock<Head>>);

enum WalCmd {
    Append(AppendReq),
    Rotate(oneshot::Sender<Result<FrozenHead, StorageError>>),
    /// Commit what is pending, fsync, stop the WAL task (graceful shutdown).
    Close(oneshot::Sender<()>),
}

/// The storage engine. Share it as `Arc<Storage>`.
pub struct Storage {
    pub(super) shared: Arc<Shared>,
    wal_tx: Option<tokio::sync::mpsc::UnboundedSender<WalCmd>>,
    /// Serialises flush and compaction (both rewrite the block list).
    pub(super) maintenance: tokio::sync::Mutex<()>,
    /// Held (shared) by an append from registering its series until they are in the head,
    /// and (exclusive) while series no source holds are removed from the catalog: a series
    /// being written is never removed between the two.
    pub(super) registration: tokio::sync::RwLock<()>,
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
            }),
            metadata: RwLock::new(scoped),
            instance,
            stats: StorageStats::default(),
            footers: super::read::footer_cache(),
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

    /// `None` once the blocks are loaded; else why they are not (object store unreachable
    /// at startup: the WAL and head are served meanwhile, flushes wait).
    pub fn blocks_unavailable(&self) -> Option<String> {
        self.shared.blocks_unavailable.lock().clone()
    }

    /// Heads frozen by a flush and not yet written out (a failed flush leaves them).
    pub fn frozen_heads(&self) -> usize {
        self.shared.state.read().frozen.len()
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

    /// Bytes the heads may still grow by before `--head-memory-limit` refuses writes (shared
    /// by every tenant): ingest charges a request's decoding against it before decoding.
    pub fn head_room(&self) -> usize {
        let o = &self.shared.opts;
        let held = o
            .head_samples
            .load(Ordering::Relaxed)
            .saturating_mul(HEAD_BYTES_PER_SAMPLE);
        o.head_memory_limit.saturating_sub(held)
    }

    /// Metric metadata by family, as a reader that may see `allowed` series sees it
    /// (`None`: no enforced matchers).
    pub fn metadata(&self, allowed: Option<&RoaringBitmap>) -> BTreeMap<String, Vec<Meta>> {
        let store = self.shared.metadata.read();
        match allowed {
            Some(a) => store.visible(a, true),
            None => store.visible(&self.shared.catalog.live(), false),
        }
    }

    /// The timestamps a write of this kind may carry (`[min, max]`, ms).
    pub fn write_bounds(&self, window: WriteWindow) -> (i64, i64) {
        let now = self.now_ms();
        let o = &self.shared.opts;
        match window {
            WriteWindow::Recent => (now - o.ooo_window_ms, now + o.future_tolerance_ms),
            WriteWindow::Backfill => (now - o.retention_ms, now + o.future_tolerance_ms),
            WriteWindow::Any => (i64::MIN, i64::MAX),
        }
    }

    /// Makes a batch durable and visible, or rejects it whole (exemplars excepted: see
    /// `WriteBatch::dropped_exemplars`). Returns the samples stored.
    pub async fn append(
        &self,
        mut batch: WriteBatch,
        window: WriteWindow,
    ) -> Result<usize, StorageError> {
        let now = self.now_ms();
        let o = &self.shared.opts;
        let (min_ok, max_ok) = self.write_bounds(window);
        let out_of_bounds = |labels: &crate::model::Labels, t: i64| StorageError::OutOfBounds {
            labels: labels.to_string(),
            timestamp_ms: t,
            min_ms: min_ok,
            max_ms: max_ok,
        };
        for s in &batch.series {
            if let Some(&(t, _)) = s.samples.iter().find(|(t, _)| *t < min_ok || *t > max_ok) {
                return Err(out_of_bounds(&s.labels, t));
            }
        }
        for s in &batch.histograms {
            if let Some((t, _)) = s.samples.iter().find(|(t, _)| *t < min_ok || *t > max_ok) {
                return Err(out_of_bounds(&s.labels, *t));
            }
        }
        // Exemplars outside the window are dropped, not the request (Prometheus's rule).
        batch.retain_exemplars_within(min_ok, max_ok);
        if batch.dropped_exemplars > 0 {
            tracing::warn!(
                exemplars = batch.dropped_exemplars,
                "exemplars not stored (invalid or outside the write window); their samples are kept"
            );
            self.shared
                .stats
                .exemplars_dropped
                .fetch_add(batch.dropped_exemplars as u64, Ordering::Relaxed);
        }
        let n = batch.sample_count();
        let label_bytes = |l: &crate::model::Labels| {
            8 + l.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>()
        };
        // One request is one WAL record; replay refuses records over MAX_RECORD.
        let record_bytes: usize = batch
            .series
            .iter()
            .map(|s| 20 * s.samples.len() + label_bytes(&s.labels))
            .chain(batch.histograms.iter().map(|s| {
                s.samples
                    .iter()
                    .map(|(_, h)| 12 + super::hist_codec::encoded_len(h))
                    .sum::<usize>()
                    + label_bytes(&s.labels)
            }))
            .chain(batch.exemplars.iter().map(|s| {
                s.exemplars
                    .iter()
                    .map(|e| 24 + label_bytes(&e.labels))
                    .sum::<usize>()
                    + label_bytes(&s.labels)
            }))
            .sum();
        // What the head will hold: histograms weigh more than one entry each.
        let entries = n
            + batch
                .histograms
                .iter()
                .flat_map(|s| s.samples.iter())
                .map(|(_, h)| super::head::histogram_weight(h))
                .sum::<usize>()
            + batch
                .exemplars
                .iter()
                .flat_map(|s| s.exemplars.iter())
                .map(|e| 1 + super::head::exemplar_weight(e))
                .sum::<usize>();
        // Metadata is a record of its own (JSON, carriers as label lists), written after
        // the samples': it must fit too, or the samples would be logged and the request
        // refused.
        let metadata_bytes: usize = batch
            .metadata
            .iter()
            .map(|m| {
                128 + m.metric_family_name.len()
                    + m.help.len()
                    + m.unit.len()
                    + m.carriers
                        .iter()
                        .map(|l| 16 + label_bytes(l) + 8 * l.len())
                        .sum::<usize>()
            })
            .sum();
        if metadata_bytes > super::wal::MAX_RECORD as usize {
            return Err(StorageError::Invalid(format!(
                "the request's metadata (~{metadata_bytes} bytes) is too large for one WAL record ({} bytes); split it",
                super::wal::MAX_RECORD
            )));
        }
        if record_bytes > super::wal::MAX_RECORD as usize {
            return Err(StorageError::Invalid(format!(
                "a request of {n} samples (~{record_bytes} bytes) is too large for one WAL record ({} bytes); split it",
                super::wal::MAX_RECORD
            )));
        }
        let limit = o.head_memory_limit;
        let held = o
            .head_samples
            .load(Ordering::Relaxed)
            .saturating_mul(HEAD_BYTES_PER_SAMPLE);
        if held.saturating_add(entries.saturating_mul(HEAD_BYTES_PER_SAMPLE)) > limit {
            return Err(StorageError::Overloaded(format!(
                "heads hold ~{held} bytes of samples not yet in blocks (limit {limit}, --head-memory-limit); this tenant has {} waiting for the object store",
                match self.frozen_heads() {
                    0 => "no flush".to_string(),
                    1 => "1 flush".to_string(),
                    f => format!("{f} flushes"),
                }
            )));
        }
        let _registering = self.registration.read().await;
        let ids = self.shared.catalog.get_or_insert_many(
            batch
                .series
                .iter()
                .map(|s| &s.labels)
                .chain(batch.histograms.iter().map(|s| &s.labels))
                .chain(batch.exemplars.iter().map(|s| &s.labels)),
        );
        let mut samples = Vec::with_capacity(batch.float_count());
        let mut hists = Vec::with_capacity(batch.histogram_count());
        let mut series = Vec::with_capacity(ids.len());
        let (float_ids, rest) = ids.split_at(batch.series.len());
        let (hist_ids, ex_ids) = rest.split_at(batch.histograms.len());
        let mut exemplars = Vec::with_capacity(batch.exemplar_count());
        for (s, &id) in batch.exemplars.into_iter().zip(ex_ids) {
            exemplars.extend(s.exemplars.into_iter().map(|e| (id, Arc::new(e))));
            series.push((id, Arc::new(s.labels)));
        }
        for (s, &id) in batch.series.into_iter().zip(float_ids) {
            samples.extend(s.samples.iter().map(|&(t, v)| (id, t, v)));
            series.push((id, Arc::new(s.labels)));
        }
        for (s, &id) in batch.histograms.into_iter().zip(hist_ids) {
            hists.extend(s.samples.into_iter().map(|(t, h)| (id, t, Arc::new(h))));
            series.push((id, Arc::new(s.labels)));
        }
        match &self.wal_tx {
            Some(tx) => {
                let (reply, rx) = oneshot::channel();
                let (metadata, carrier_ids) = novel_metadata(&self.shared, batch.metadata);
                tx.send(WalCmd::Append(AppendReq {
                    series,
                    samples,
                    hists,
                    exemplars,
                    metadata,
                    carrier_ids,
                    reply,
                }))
                .map_err(|_| StorageError::Closed)?;
                rx.await.map_err(|_| StorageError::Closed)??;
            }
            None => {
                let head = self.shared.state.read().head.clone();
                let mut h = head.write();
                let before = h.entries();
                h.commit_all(samples, hists, exemplars, now);
                o.head_samples
                    .fetch_add(h.entries() - before, Ordering::Relaxed);
                drop(h);
                let ids = carrier_ids(&self.shared, &batch.metadata);
                apply_metadata(&self.shared, &batch.metadata, &ids);
            }
        }
        self.shared
            .stats
            .samples_appended
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Makes every acknowledged write durable and stops taking writes (graceful shutdown).
    /// Later appends fail with `Closed`.
    pub async fn close(&self) {
        if let Some(tx) = &self.wal_tx {
            let (reply, rx) = oneshot::channel();
            if tx.send(WalCmd::Close(reply)).is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// Whether the head is due for a flush (size, age, or memory pressure).
    pub fn should_flush(&self) -> bool {
        let head = self.shared.state.read().head.clone();
        let h = head.read();
        let o = &self.shared.opts;
        h.entries() >= o.head_max_samples
            // Memory pressure over all tenants: every head with samples frees some.
            || (!h.is_empty()
                && o.head_samples
                    .load(Ordering::Relaxed)
                    .saturating_mul(HEAD_BYTES_PER_SAMPLE)
                    >= o.head_memory_limit / 2)
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
        let snap = {
            let m = self.shared.metadata.read();
            if m.is_empty() {
                return Ok(());
            }
            m.snapshot(&self.shared.catalog)
        };
        let json = serde_json::to_vec(&snap).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        self.shared
            .store
            .put(&paths::metadata_scoped(), json.into())
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

/// The ids of each entry's carriers the catalog holds (they are registered: their samples
/// came first), under one catalog lock.
fn carrier_ids(shared: &Shared, md: &[MetricMetadata]) -> Vec<Vec<SeriesId>> {
    if md.is_empty() {
        return vec![];
    }
    let ids = shared
        .catalog
        .lookup_many(md.iter().flat_map(|m| m.carriers.iter()));
    let mut ids = ids.into_iter();
    md.iter()
        .map(|m| ids.by_ref().take(m.carriers.len()).flatten().collect())
        .collect()
}

/// Records metadata with its carriers' ids.
fn apply_metadata(shared: &Shared, md: &[MetricMetadata], ids: &[Vec<SeriesId>]) {
    if md.is_empty() {
        return;
    }
    shared
        .metadata
        .write()
        .apply_all(md.iter().zip(ids.iter().map(Vec::as_slice)));
}

/// The request's metadata that would change something, with its carriers' ids: remote
/// write 2.0 repeats every series' metadata with every request, and the WAL need not hold
/// it each time.
fn novel_metadata(
    shared: &Shared,
    md: Vec<MetricMetadata>,
) -> (Vec<MetricMetadata>, Vec<Vec<SeriesId>>) {
    let ids = carrier_ids(shared, &md);
    let store = shared.metadata.read();
    md.into_iter()
        .zip(ids)
        .filter(|(m, ids)| !store.is_known(&m.metric_family_name, &Meta::of(m), ids))
        .unzip()
}

/// The WAL task of one tenant: takes every queued command (group commit), and does the
/// writes and the fsync on the WAL pool (`wal_pool`), then applies to the head and
/// acknowledges. A task, not a thread: idle tenants cost no thread, and the pool's few
/// threads serve every tenant.
async fn wal_task(
    shared: Arc<Shared>,
    mut w: WalWriter,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<WalCmd>,
) {
    while let Some(first) = rx.recv().await {
        let mut cmds = vec![first];
        while cmds.len() < 4096 {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let sh = shared.clone();
        match super::wal_pool::run(move || {
            let closing = apply_cmds(&sh, &mut w, cmds);
            (w, closing)
        })
        .await
        {
            Ok((writer, None)) => w = writer,
            Ok((_, Some(reply))) => {
                tracing::info!("WAL closed");
                let _ = reply.send(());
                return;
            }
            Err(e) => {
                // Replies of that batch were dropped: their writers saw `Closed`.
                tracing::error!(error = %e, "WAL worker failed; the tenant takes no more writes");
                return;
            }
        }
    }
}

/// One batch of commands; returns the reply of a `Close` (after a final fsync).
fn apply_cmds(
    shared: &Shared,
    w: &mut WalWriter,
    cmds: Vec<WalCmd>,
) -> Option<oneshot::Sender<()>> {
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut pending: Vec<AppendReq> = Vec::new();
    for cmd in cmds {
        match cmd {
            WalCmd::Append(req) => {
                let r = w
                    .append(&req.series, &req.samples, &req.hists, &req.exemplars)
                    .and_then(|_| {
                        if req.metadata.is_empty() {
                            Ok(())
                        } else {
                            w.append_metadata(&req.metadata)
                        }
                    });
                match r {
                    Ok(()) => pending.push(req),
                    // Refused before anything was written (record too large): only this one.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        let _ = req.reply.send(Err(StorageError::Invalid(e.to_string())));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "WAL write failed; rejecting the writes of this commit");
                        // Records buffered before the failure go down with the abandoned
                        // segment: none of them may be acknowledged.
                        for p in pending.drain(..) {
                            let _ = p.reply.send(Err(StorageError::Io(std::io::Error::new(
                                e.kind(),
                                e.to_string(),
                            ))));
                        }
                        let _ = req.reply.send(Err(e.into()));
                    }
                }
            }
            WalCmd::Rotate(reply) => {
                commit(shared, w, &mut pending);
                let r = w
                    .rotate()
                    .map(|closed| (closed, freeze_head(shared, closed)));
                let _ = reply.send(r.map_err(Into::into));
            }
            WalCmd::Close(reply) => closing = Some(reply),
        }
    }
    commit(shared, w, &mut pending);
    if closing.is_some()
        && let Err(e) = w.sync()
    {
        tracing::error!(error = %e, "WAL sync at shutdown failed");
    }
    closing
}

fn commit(shared: &Shared, w: &mut WalWriter, pending: &mut Vec<AppendReq>) {
    if pending.is_empty() {
        return;
    }
    let start = std::time::Instant::now();
    let res = w.sync();
    super::telemetry::WAL_FSYNC_DURATION.observe(start.elapsed().as_secs_f64());
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
            let before = h.entries();
            // One commit for the group: a snapshot sees all of it or none.
            h.commit_all(
                pending.iter().flat_map(|req| req.samples.iter().copied()),
                pending.iter().flat_map(|req| req.hists.iter().cloned()),
                pending.iter().flat_map(|req| req.exemplars.iter().cloned()),
                now,
            );
            shared
                .opts
                .head_samples
                .fetch_add(h.entries() - before, Ordering::Relaxed);
            drop(h);
            for req in pending.drain(..) {
                apply_metadata(shared, &req.metadata, &req.carrier_ids);
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
    // Samples whose series declaration is missing from their segment. The writer starts a
    // new segment after any failure, so this means corruption: never skip them silently.
    let mut orphans = 0u64;
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
            Replayed::Samples {
                series,
                samples,
                hists,
                exemplars,
            } => {
                let ids = shared
                    .catalog
                    .get_or_insert_many(series.iter().map(|(_, l)| l));
                for ((r, _), id) in series.iter().zip(ids) {
                    refs.insert(*r, id);
                }
                let mut found = Vec::with_capacity(samples.len());
                for (r, t, v) in samples {
                    if let Some(&id) = refs.get(&r) {
                        found.push((id, t, v));
                    } else {
                        orphans += 1;
                    }
                }
                let mut found_hists = Vec::with_capacity(hists.len());
                for (r, t, hist) in hists {
                    if let Some(&id) = refs.get(&r) {
                        found_hists.push((id, t, Arc::new(hist)));
                    } else {
                        orphans += 1;
                    }
                }
                let mut found_ex = Vec::with_capacity(exemplars.len());
                for (r, e) in exemplars {
                    if let Some(&id) = refs.get(&r) {
                        found_ex.push((id, Arc::new(e)));
                    } else {
                        orphans += 1;
                    }
                }
                total += (found.len() + found_hists.len()) as u64;
                h.commit_all(found, found_hists, found_ex, now);
            }
            Replayed::Metadata(md) => apply_metadata(shared, &md, &carrier_ids(shared, &md)),
        })?;
        shared
            .stats
            .wal_truncated_bytes
            .fetch_add(stats.truncated_bytes, Ordering::Relaxed);
    }
    if orphans > 0 {
        tracing::error!(
            samples = orphans,
            "WAL samples reference series not declared in their segment; they cannot be replayed"
        );
        shared
            .stats
            .wal_orphan_samples
            .fetch_add(orphans, Ordering::Relaxed);
    }
    shared
        .opts
        .head_samples
        .fetch_add(head.read().entries(), Ordering::Relaxed);
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
    let mut loaded = futures::stream::iter(keep.into_iter().enumerate())
        .map(|(i, m)| async move {
            let labels = LoadedBlock::read_labels(store, &m).await;
            let postings = match (i, first_into_empty, &labels) {
                (0, true, Ok(_)) => read_postings_or_none(store, &m).await,
                _ => None,
            };
            (m, labels.map(|l| (l, postings)))
        })
        .buffered(16);
    let mut blocks = Vec::new();
    while let Some((m, read)) = loaded.next().await {
        match read {
            Ok((labels, postings)) => blocks.push(Arc::new(LoadedBlock::register_indexed(
                m, labels, postings, catalog,
            ))),
            Err(e) if is_unreadable(&e) && !read_only => {
                tracing::error!(block = %m.id, error = %e, "block cannot be read");
                quarantine_block(store, &m.id).await?;
                quarantined += 1;
            }
            Err(e) => return Err(e),
        }
    }
    blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    tracing::info!(
        blocks = blocks.len(),
        series = catalog.len(),
        quarantined,
        "loaded blocks"
    );
    let metadata = load_metadata(store).await?;
    Ok((blocks, metadata, quarantined))
}

/// A block's postings file for registering it, or `None` (with a warning) when it cannot
/// be used: the series file alone is enough to build the postings.
async fn read_postings_or_none(
    store: &dyn ObjectStore,
    m: &BlockMeta,
) -> Option<crate::catalog::BlockPostings> {
    match super::block::read_postings(store, &BlockPath::new(m.id.clone())).await {
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
