//! The storage engine of one tenant: [`Storage`], its options and counters, and the state
//! its parts share. The work is split by concern, each an `impl Storage` block or the
//! functions behind one:
//!
//! - `open`: opening the storage (format checks, instance id, WAL replay), loading the
//!   complete blocks, quarantining unreadable ones, retrying while the object store is
//!   unreachable, and deleting blocks (shared with flush and compaction).
//! - `admission`: [`Storage::append`], the checks a request passes before it is logged
//!   (write window, WAL record size, head memory) and its hand-off to the WAL task.
//! - `wal_task`: the per-tenant WAL task (group commit on `wal_pool`, then the head),
//!   WAL replay, the checkpoint file, and applying the metric metadata logged with the
//!   samples.
//!
//! This file holds the types, the accessors, and the commands other storage modules send
//! to the WAL task (`rotate` for flush, `close` at shutdown).

mod admission;
mod bucket_wal;
mod mirror;
mod open;
mod wal_task;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;
use roaring::RoaringBitmap;
use tokio::sync::oneshot;

use self::wal_task::{WalCmd, freeze_head};
use super::StorageError;
use super::block::{BlockMeta, LoadedBlock};
use super::head::Head;
use super::metadata::{Meta, MetadataStore};
use super::paths;
use crate::catalog::Catalog;

// Flush and compaction delete blocks too, and flush records checkpoints.
pub(super) use self::bucket_wal::delete_through;
pub use self::bucket_wal::{list_segments, read_segment, segment_key};
pub use self::mirror::{Installed, metadata_key};
pub(super) use self::open::delete_block;
pub(super) use self::wal_task::write_checkpoint;

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
    /// How long a block unlisted from a cluster's manifest stays readable before its files
    /// are deleted (queries planned on an older manifest still find it).
    pub deletion_delay_ms: i64,
    /// The tenant this engine serves (a distributor forwards by it).
    pub tenant: String,
    /// How this engine takes part in a cluster (`None`: the single process).
    pub cluster: Option<ClusterMode>,
}

/// A cluster role's engine. The single process has none: local WAL, blocks by listing.
#[derive(Clone)]
pub enum ClusterMode {
    /// One shard of a writer: WAL segments in the bucket, blocks listed in the manifest, no
    /// blocks loaded (a writer serves no reads but its heads' WAL).
    Shard(ShardOptions),
    /// A querier or the compactor: blocks from the manifest, never listed; a querier also
    /// mirrors the writers' heads from their WAL segments (`Storage::mirror_segment`).
    Replica,
    /// A distributor: `append` checks a batch and hands it on; the engine holds nothing.
    Forward(Arc<dyn Forward>),
}

/// Where a distributor's engine sends an admitted batch.
#[async_trait::async_trait]
pub trait Forward: Send + Sync {
    /// Stores the batch on its shards' owners; `Ok` only when every owner acknowledged.
    async fn forward(
        &self,
        tenant: &str,
        batch: crate::ingest::WriteBatch,
    ) -> Result<usize, StorageError>;
}

/// One shard as its current owner runs it.
#[derive(Clone)]
pub struct ShardOptions {
    pub shard: u32,
    /// The epoch of the owner's lease; the manifest refuses flushes of other epochs.
    pub epoch: u64,
    /// Whether the lease is still safely held; a write is acknowledged only if it is.
    pub lease_valid: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Least time between two WAL objects of this shard (each is a PUT).
    pub commit_interval: std::time::Duration,
    /// Committed segments and rotations, for queriers following this shard.
    pub tail: Arc<WalTail>,
}

/// What a shard's WAL holds, for mirrors: the last committed segment and the segments
/// after which the head was frozen (a flush), so a querier cuts its mirror heads at the
/// same points and drops each exactly when the manifest lists its blocks.
#[derive(Default)]
pub struct WalTail {
    state: parking_lot::Mutex<TailState>,
    changed: tokio::sync::Notify,
}

#[derive(Default, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TailState {
    /// Last committed segment (0: none).
    pub last: u64,
    /// Recent rotation points (a head was frozen after this segment), oldest first.
    pub rotations: std::collections::VecDeque<u64>,
}

impl WalTail {
    pub fn new(after: u64) -> Self {
        WalTail {
            state: parking_lot::Mutex::new(TailState {
                last: after,
                rotations: Default::default(),
            }),
            changed: Default::default(),
        }
    }

    pub fn get(&self) -> TailState {
        self.state.lock().clone()
    }

    pub(super) fn committed(&self, seq: u64) {
        self.state.lock().last = seq;
        self.changed.notify_waiters();
    }

    pub(super) fn rotated(&self, after: u64) {
        let mut st = self.state.lock();
        st.rotations.push_back(after);
        while st.rotations.len() > 64 {
            st.rotations.pop_front();
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Waits until a segment after `after` is committed or `timeout` passes (long poll).
    pub async fn wait_after(&self, after: u64, timeout: std::time::Duration) -> TailState {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let st = self.get();
            if st.last > after {
                return st;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get();
            }
        }
    }
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
            deletion_delay_ms: 15 * 60_000,
            tenant: super::tenants::DEFAULT_TENANT.to_string(),
            cluster: None,
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
    /// A querier's copies of the writers' heads, by shard (`mirror`); also in `frozen`,
    /// which is what reads see.
    pub mirrors: BTreeMap<u32, Vec<mirror::MirrorHead>>,
    /// Each shard's checkpoint in the installed manifest (replicas).
    pub mirror_checkpoints: BTreeMap<u32, u64>,
    /// Versions of the shards' metadata files already loaded (replicas).
    pub metadata_versions: BTreeMap<u32, u64>,
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

impl Drop for Shared {
    /// A cluster shard's engine closes when its shard moves away: what its heads held no
    /// longer counts against the writer's memory limit (the next owner replays it).
    fn drop(&mut self) {
        if let Some(ClusterMode::Shard(_)) = &self.opts.cluster {
            let st = self.state.get_mut();
            let held: usize = std::iter::once(&st.head)
                .chain(st.frozen.iter().map(|(_, h)| h))
                .map(|h| h.read().entries())
                .sum();
            let _ =
                self.opts
                    .head_samples
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(held))
                    });
        }
    }
}

/// Estimated head memory per entry: a timestamp, a value and a commit sequence, plus
/// vector slack.
pub const HEAD_BYTES_PER_SAMPLE: usize = 28;

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
    /// `None` once the blocks are loaded; else why they are not (object store unreachable
    /// at startup: the WAL and head are served meanwhile, flushes wait).
    pub fn blocks_unavailable(&self) -> Option<String> {
        self.shared.blocks_unavailable.lock().clone()
    }

    /// Heads frozen by a flush and not yet written out (a failed flush leaves them).
    pub fn frozen_heads(&self) -> usize {
        self.shared.state.read().frozen.len()
    }

    /// Bytes held by the loaded blocks' id maps and bitmaps, and by the cached Parquet
    /// footers (for the memory breakdown on `/metrics`).
    pub fn index_memory(&self) -> (usize, usize) {
        let blocks = self
            .shared
            .state
            .read()
            .blocks
            .iter()
            .map(|b| b.memory_bytes())
            .sum();
        (blocks, self.shared.footers.weighted_size() as usize)
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
