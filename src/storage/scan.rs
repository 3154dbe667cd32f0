//! The one read path: a [`Scan`] of chosen series over a time range, streamed a chunk of
//! series at a time from the blocks and heads that overlap the range.
//!
//! A scan fixes its sources when it is made (the blocks and the frozen and live heads of
//! that moment; holding them keeps a concurrent compaction from deleting a block under it).
//! It can be split into contiguous series-id ranges, one per DataFusion partition, and each
//! part yields chunks of [`SeriesRun`]s in ascending series id. A chunk reads only what its
//! series need: for each block, row groups chosen by statistics and pages by the page index
//! (`read.rs`), decoded as parallel tasks; samples of one series from several sources are
//! merged with the sources' precedence (later block wins, heads win over blocks). Memory
//! therefore follows the chunk, not the selection. SQL's `samples` table, PromQL selectors
//! (the evaluator's and the planner's leaves), and remote read all read through here.
//!
//! A [`Snapshot`] fixes the sources and each head's commit sequence ([`super::head`]) once;
//! every scan made from it reads the heads as of that moment, however long it runs and
//! however many chunks it reads. A query takes one snapshot for all its scans (a PromQL
//! query's selectors, a SQL statement's table scans), so `x - x` is zero and a self-join
//! matches itself while samples keep arriving.

use std::ops::Range;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use parking_lot::RwLock;
use roaring::RoaringBitmap;

use super::StorageError;
use super::block::LoadedBlock;
use super::engine::{Shared, Storage};
use super::head::{Head, Seq};
use super::read::{CachedRun, Piece};
use crate::catalog::SeriesId;

/// One series' samples in the scanned range, ascending, one per timestamp (stale markers
/// included).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRun {
    pub id: SeriesId,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
}

impl SeriesRun {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

/// The storage at one moment: the blocks, and the frozen and live heads with the commit
/// each is read up to. Holding it keeps a concurrent compaction from deleting its blocks.
#[derive(Clone)]
pub struct Snapshot {
    pub(super) shared: Arc<Shared>,
    pub(super) blocks: Arc<Vec<Arc<LoadedBlock>>>,
    pub(super) heads: Arc<Vec<(Arc<RwLock<Head>>, Seq)>>,
}

/// A scan of series `ids[range]` over `[min_t, max_t]`. Cheap to clone and split.
#[derive(Clone)]
pub struct Scan {
    shared: Arc<Shared>,
    pub(super) blocks: Arc<Vec<Arc<LoadedBlock>>>,
    /// Each head with the commit it is read up to.
    pub(super) heads: Arc<Vec<(Arc<RwLock<Head>>, Seq)>>,
    ids: Arc<Vec<SeriesId>>,
    range: Range<usize>,
    min_t: i64,
    max_t: i64,
    /// Whether block reads fill the samples cache.
    populate_cache: bool,
    /// Samples one read of a block decodes at most ([`BLOCK_READ_SAMPLES`]).
    block_read_samples: u64,
}

impl Storage {
    /// The storage as it is now, for every scan of one query.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.shared.state.read();
        // Under the state lock: a flush moving a frozen head into blocks, or a freeze
        // starting a new head, is entirely before or after this.
        let heads = st
            .frozen
            .iter()
            .map(|(_, h)| h)
            .chain(std::iter::once(&st.head))
            .map(|h| (h.clone(), h.read().seq()))
            .collect();
        Snapshot {
            shared: self.shared.clone(),
            blocks: Arc::new(st.blocks.clone()),
            heads: Arc::new(heads),
        }
    }

    /// A scan of the given series over `[min_t, max_t]` in a snapshot of its own (see
    /// [`Snapshot::scan`]).
    pub fn scan(&self, ids: &RoaringBitmap, min_t: i64, max_t: i64) -> Scan {
        self.snapshot().scan(ids, min_t, max_t)
    }
}

impl Snapshot {
    /// A scan of the given series over `[min_t, max_t]`, narrowed to the series some
    /// source overlapping the range holds.
    pub fn scan(&self, ids: &RoaringBitmap, min_t: i64, max_t: i64) -> Scan {
        let blocks: Vec<Arc<LoadedBlock>> = self
            .blocks
            .iter()
            .filter(|b| b.meta.overlaps(min_t, max_t))
            .cloned()
            .collect();
        let mut present = RoaringBitmap::new();
        for b in &blocks {
            present |= &b.present;
        }
        for (h, _) in self.heads.iter() {
            let h = h.read();
            // A head's range and series include later commits: a superset, read as of
            // the snapshot by `Scan::read`.
            if h.time_range()
                .is_some_and(|(a, b)| a <= max_t && b >= min_t)
            {
                present |= h.present();
            }
        }
        let ids: Vec<SeriesId> = (ids & &present).iter().collect();
        Scan {
            shared: self.shared.clone(),
            blocks: Arc::new(blocks),
            heads: self.heads.clone(),
            range: 0..ids.len(),
            ids: Arc::new(ids),
            min_t,
            max_t,
            populate_cache: true,
            block_read_samples: BLOCK_READ_SAMPLES,
        }
    }
}

impl Scan {
    /// A scan that reads cached series but caches nothing: for whole-table analytics
    /// (SQL), which would otherwise evict the series dashboards keep reading.
    pub fn without_caching(mut self) -> Self {
        self.populate_cache = false;
        self
    }

    /// The same scan with reads of a block split at `samples` (tests split them finely).
    #[cfg(test)]
    pub(crate) fn with_block_reads(mut self, samples: u64) -> Self {
        self.block_read_samples = samples;
        self
    }

    /// The same scan over the heads only (no blocks).
    pub(super) fn heads_only(&self) -> Scan {
        Scan {
            blocks: Arc::new(Vec::new()),
            ..self.clone()
        }
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Series this scan (or part) reads.
    pub fn ids(&self) -> &[SeriesId] {
        &self.ids[self.range.clone()]
    }

    pub fn num_series(&self) -> usize {
        self.range.len()
    }

    pub fn time_range(&self) -> (i64, i64) {
        (self.min_t, self.max_t)
    }

    /// Blocks the scan reads from (those overlapping its range).
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// `n` parts over contiguous, disjoint series-id ranges (fewer when there are fewer
    /// series); together they read exactly this scan.
    pub fn split(&self, n: usize) -> Vec<Scan> {
        let len = self.range.len();
        let n = n.clamp(1, len.max(1));
        let per = len.div_ceil(n).max(1);
        (0..n)
            .map(|p| {
                let a = (self.range.start + p * per).min(self.range.end);
                let b = (a + per).min(self.range.end);
                Scan {
                    range: a..b,
                    ..self.clone()
                }
            })
            .collect()
    }

    /// The scan of its series `r` (indexes into [`Scan::ids`]; clamped to them).
    pub fn range(&self, r: Range<usize>) -> Scan {
        let start = (self.range.start + r.start).min(self.range.end);
        let end = (self.range.start + r.end).clamp(start, self.range.end);
        Scan {
            range: start..end,
            ..self.clone()
        }
    }

    /// Part `p` of [`Scan::split`]`(n)`.
    pub fn part(&self, p: usize, n: usize) -> Scan {
        self.split(n).into_iter().nth(p).unwrap_or_else(|| Scan {
            range: self.range.end..self.range.end,
            ..self.clone()
        })
    }

    /// Samples one series of the scan holds, estimated from the blocks' metadata (samples
    /// per series, scaled by how much of each block's time range the scan covers) and the
    /// heads; at least 1.
    pub fn samples_per_series(&self) -> usize {
        let mut est = 0f64;
        for b in self.blocks.iter() {
            let m = &b.meta;
            let span = (m.max_t - m.min_t).max(1) as f64;
            let covered = (self.max_t.min(m.max_t) as f64 - self.min_t.max(m.min_t) as f64 + 1.0)
                .clamp(0.0, span + 1.0);
            est += m.num_samples as f64 / (m.num_series.max(1) as f64) * (covered / (span + 1.0));
        }
        for (h, _) in self.heads.iter() {
            let h = h.read();
            est += h.num_samples() as f64 / (h.num_series().max(1) as f64);
        }
        (est.ceil() as usize).max(1)
    }

    /// Samples the scan reads, estimated from the metadata: each block's samples per
    /// series, scaled by how much of its time range the scan covers, times how many of the
    /// scan's series it holds (a block may hold a few of them: a cluster writes a block
    /// per shard); the heads likewise.
    pub fn estimated_samples(&self) -> usize {
        let ids = match RoaringBitmap::from_sorted_iter(self.ids().iter().copied()) {
            Ok(ids) => ids,
            Err(_) => self.ids().iter().copied().collect(),
        };
        let mut est = 0f64;
        for b in self.blocks.iter() {
            let m = &b.meta;
            let span = (m.max_t - m.min_t).max(1) as f64;
            let covered = (self.max_t.min(m.max_t) as f64 - self.min_t.max(m.min_t) as f64 + 1.0)
                .clamp(0.0, span + 1.0);
            let per_series = m.num_samples as f64 / (m.num_series.max(1) as f64);
            let held = b.present.intersection_len(&ids) as f64;
            est += per_series * (covered / (span + 1.0)) * held;
        }
        for (h, _) in self.heads.iter() {
            let h = h.read();
            let per_series = h.num_samples() as f64 / (h.num_series().max(1) as f64);
            est += per_series * h.present().intersection_len(&ids) as f64;
        }
        est.min(usize::MAX as f64) as usize
    }

    /// Series per chunk so that a chunk holds about `samples` samples (by
    /// [`Scan::samples_per_series`]), between 1 and `max_series`. One series is the least a
    /// chunk can hold, however long it is.
    pub fn series_per_chunk(&self, samples: usize, max_series: usize) -> usize {
        (samples / self.samples_per_series()).clamp(1, max_series.max(1))
    }

    /// The scan as a stream of chunks of at most `series` series each, in ascending id;
    /// series with no sample in range are left out. A chunk is read when polled.
    pub fn chunks(
        self,
        series: usize,
    ) -> impl Stream<Item = Result<Vec<SeriesRun>, StorageError>> + Send + 'static {
        self.piece_chunks(series)
            .map(|chunk| Ok(chunk?.into_iter().map(SeriesPieces::into_run).collect()))
    }

    /// As [`Scan::chunks`], each series not decoded yet ([`PendingSeries`]): for readers
    /// that decode a chunk a few series at a time.
    pub fn pending_chunks(
        self,
        series: usize,
    ) -> impl Stream<Item = Result<Vec<PendingSeries>, StorageError>> + Send + 'static {
        let series = series.max(1);
        let starts: Vec<usize> = self.range.clone().step_by(series).collect();
        futures::stream::iter(starts).then(move |a| {
            let scan = self.clone();
            async move {
                let b = (a + series).min(scan.range.end);
                scan.read_pending(&scan.ids[a..b]).await
            }
        })
    }

    /// As [`Scan::chunks`], each series as slices of the decoded columns (not copied into
    /// vectors): for readers that copy them once into their own output (SQL batches).
    pub fn piece_chunks(
        self,
        series: usize,
    ) -> impl Stream<Item = Result<Vec<SeriesPieces>, StorageError>> + Send + 'static {
        self.pending_chunks(series).map(|chunk| Ok(decoded(chunk?)))
    }

    /// Reads every chunk, calling `charge(samples)` as each arrives (a limit refuses there,
    /// before more is read). For readers that need the whole selection at once.
    pub async fn collect<E: From<StorageError>>(
        self,
        series: usize,
        mut charge: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Vec<SeriesRun>, E> {
        let mut out = Vec::with_capacity(self.num_series());
        let mut chunks = std::pin::pin!(self.piece_chunks(series));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            // Charged before the chunk is copied out of its decoded columns.
            charge(chunk.iter().map(SeriesPieces::len).sum())?;
            out.extend(chunk.into_iter().map(SeriesPieces::into_run));
        }
        Ok(out)
    }

    /// [`Scan::collect`] in chunks of about 4M samples (64 MB decoded), at most 16,384
    /// series: small enough to stop early at a limit, large enough that the fixed cost of
    /// a chunk (a pass over each block's row groups) stays negligible.
    pub async fn collect_all<E: From<StorageError>>(
        self,
        charge: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Vec<SeriesRun>, E> {
        let series = self.series_per_chunk(4 << 20, 16 << 10);
        self.collect(series, charge).await
    }

    /// Samples of `ids` (ascending) from every source, in ascending id: for a reader that
    /// visits the scan's series in an order of its own (a task of another process's SQL
    /// plan, in that process's ids).
    pub async fn read_ids(&self, ids: &[SeriesId]) -> Result<Vec<SeriesPieces>, StorageError> {
        Ok(decoded(self.read_pending(ids).await?))
    }

    /// The sources of `ids` (ascending, a sub-slice of the scan's), block reads done and
    /// cached runs not decoded yet; series without a source are left out.
    async fn read_pending(&self, ids: &[SeriesId]) -> Result<Vec<PendingSeries>, StorageError> {
        let (min_t, max_t) = (self.min_t, self.max_t);
        let wanted = RoaringBitmap::from_sorted_iter(ids.iter().copied())
            .map_err(|e| StorageError::Corrupt(format!("scan ids not sorted: {e}")))?;
        // Per series: each contributing source (its precedence: block index, then heads
        // after the blocks) and its samples.
        let mut sources: crate::catalog::IdMap<Vec<(usize, Source)>> = Default::default();
        // Cached series are taken now; the rest of each block is read from its file, a few
        // blocks at a time (each spreads its row groups over tasks).
        let mut work: Vec<(usize, Arc<LoadedBlock>, Vec<u32>)> = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let locals = b.local_ids(&wanted);
            if locals.is_empty() {
                continue;
            }
            let (hits, missing) = self.shared.cached_runs(b, &locals);
            for (g, run) in hits {
                sources.entry(g).or_default().push((i, Source::Cached(run)));
            }
            for part in missing.chunks(block_read_series(b, self.block_read_samples)) {
                work.push((i, b.clone(), part.to_vec()));
            }
        }
        let (shared, populate) = (&self.shared, self.populate_cache);
        let scans = work.into_iter().map(|(i, b, locals)| async move {
            let scanned = shared.scan_block(&b, &locals, min_t, max_t, populate).await;
            scanned.map(|s| (i, s))
        });
        let mut scans = futures::stream::iter(scans).buffered(2);
        while let Some(scanned) = scans.next().await {
            let (i, scanned) = scanned?;
            for (g, pieces) in scanned {
                sources
                    .entry(g)
                    .or_default()
                    .push((i, Source::Pieces(pieces)));
            }
        }
        let heads_from = self.blocks.len();
        for (h, seq) in self.heads.iter() {
            let h = h.read();
            if !h
                .time_range()
                .is_some_and(|(a, b)| a <= max_t && b >= min_t)
            {
                continue;
            }
            for id in &wanted & h.present() {
                if let Some((ts, vals)) = h.get(id).and_then(|b| b.read(min_t, max_t, *seq)) {
                    sources
                        .entry(id)
                        .or_default()
                        .push((heads_from, Source::Pieces(vec![Piece::new(ts, vals)])));
                }
            }
        }
        let mut out: Vec<PendingSeries> = sources
            .into_iter()
            .map(|(id, mut s)| {
                // Stable: heads keep their order among themselves.
                s.sort_by_key(|(i, _)| *i);
                PendingSeries {
                    id,
                    sources: s,
                    min_t,
                    max_t,
                }
            })
            .collect();
        out.sort_unstable_by_key(|s| s.id);
        Ok(out)
    }
}

/// Samples one read of a block decodes at most, about (whole series: a read that fills the
/// samples cache decodes each series' whole time range in the block, however little of it
/// the query asked for). A chunk is sized by the samples in the query's range, so a cold
/// 6 h query over a day's block decoded four times its chunk at once: the peer set's
/// `latency_p90` over 6 h raised RSS by 330 MiB on its first run. Reads of a block are split
/// into parts of this size, two in flight. 512Ki, not 1Mi (session 28): the cold
/// `count({__name__=~".+"})` over the peer dataset, which packs every series into the cache,
/// peaked at 176–189 MiB against 208–214, in as much time (docs/benchmarks.md).
const BLOCK_READ_SAMPLES: u64 = 1 << 19;

/// Series per read of block `b` of at most `samples` samples, from its samples per series.
fn block_read_series(b: &LoadedBlock, samples: u64) -> usize {
    let per_series = (b.meta.num_samples / b.meta.num_series.max(1)).max(1);
    (samples / per_series).clamp(1, usize::MAX as u64) as usize
}

/// A chunk's series decoded, those without a sample in range left out.
fn decoded(chunk: Vec<PendingSeries>) -> Vec<SeriesPieces> {
    chunk
        .into_iter()
        .map(PendingSeries::into_pieces)
        .filter(|s| !s.pieces.is_empty())
        .collect()
}

/// One series of a chunk before its cached runs are decoded: a chunk's reads (a pass over
/// every block) happen at once, while its series can be decoded a few at a time just
/// before they are used, so the decoded samples are still in the processor's cache when
/// they are read (a whole chunk decoded at once is tens of megabytes, written out to
/// memory and read back from it).
pub struct PendingSeries {
    pub id: SeriesId,
    sources: Vec<(usize, Source)>,
    min_t: i64,
    max_t: i64,
}

impl PendingSeries {
    /// The most samples decoding yields (cached runs: whole frames overlapping the range).
    pub fn bound(&self) -> usize {
        self.sources
            .iter()
            .map(|(_, s)| match s {
                Source::Cached(r) => r.0.bound(self.min_t, self.max_t),
                Source::Pieces(p) => p.iter().map(Piece::len).sum(),
            })
            .sum()
    }

    /// Decoded and merged (possibly empty).
    pub fn into_pieces(self) -> SeriesPieces {
        SeriesPieces {
            id: self.id,
            pieces: merge_sources(unpack_sources(self.sources, self.min_t, self.max_t)),
        }
    }
}

/// One series' samples in the scanned range from every source, merged: pieces in time
/// order, no timestamp twice.
#[derive(Debug, Clone)]
pub struct SeriesPieces {
    pub id: SeriesId,
    pub pieces: Vec<Piece>,
}

impl SeriesPieces {
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Piece::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples as one run: a single piece that alone owns its buffers (a cached
    /// series unpacked for this read) is taken as it is, anything else is copied.
    pub fn into_run(mut self) -> SeriesRun {
        let (ts, vals) = if self.pieces.len() == 1 {
            let p = self.pieces.pop().expect("one piece");
            (p.ts.into(), p.vals.into())
        } else {
            Piece::to_vecs(&self.pieces)
        };
        SeriesRun {
            id: self.id,
            ts,
            vals,
        }
    }
}

/// One source of a series' samples in a scan.
enum Source {
    /// Read from a block's file or a head.
    Pieces(Vec<Piece>),
    /// A block's run in the samples cache, not decoded yet.
    Cached(Arc<CachedRun>),
}

/// The sources' samples (in precedence order) as pieces: consecutive cached runs that
/// follow one another in time (a series over several blocks) are decoded into one buffer,
/// so the series is one piece and taking it as a run copies nothing.
///
/// Sources disjoint in time are taken in time order, not precedence order (precedence
/// decides only equal timestamps): blocks are in id order, which is creation order, and a
/// live layout's fresh blocks for the last hours come before the compacted blocks of the
/// day; in id order those broke a series into two chains, and the leaf copied every
/// sample once more to join them (11 % of a querier's time on issue 26's 57.6M-sample query).
fn unpack_sources(mut sources: Vec<(usize, Source)>, min_t: i64, max_t: i64) -> Vec<Vec<Piece>> {
    in_time_order_if_disjoint(&mut sources);
    let mut out: Vec<Vec<Piece>> = Vec::with_capacity(sources.len());
    let mut runs: Vec<Arc<CachedRun>> = Vec::new();
    let flush = |runs: &mut Vec<Arc<CachedRun>>, out: &mut Vec<Vec<Piece>>| {
        let n = runs.iter().map(|r| r.0.bound(min_t, max_t)).sum();
        let (mut ts, mut vals) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for r in runs.drain(..) {
            r.0.unpack_into(min_t, max_t, &mut ts, &mut vals);
        }
        out.push(if ts.is_empty() {
            Vec::new()
        } else {
            vec![Piece::new(ts, vals)]
        });
    };
    for (_, source) in sources {
        match source {
            Source::Cached(run) => {
                let after = |prev: &Arc<CachedRun>| match (prev.0.time_range(), run.0.time_range())
                {
                    (Some((_, last)), Some((first, _))) => first > last,
                    _ => true,
                };
                if runs.last().is_some_and(|p| !after(p)) {
                    flush(&mut runs, &mut out);
                }
                runs.push(run);
            }
            Source::Pieces(p) => {
                if !runs.is_empty() {
                    flush(&mut runs, &mut out);
                }
                out.push(p);
            }
        }
    }
    if !runs.is_empty() {
        flush(&mut runs, &mut out);
    }
    out
}

/// The first and last timestamp of a source; `None`: it holds no sample.
fn span(s: &Source) -> Option<(i64, i64)> {
    match s {
        Source::Cached(run) => run.0.time_range(),
        Source::Pieces(p) => {
            let first = p.iter().find(|x| !x.is_empty())?.ts[0];
            let last = *p.iter().rev().find(|x| !x.is_empty())?.ts.last()?;
            Some((first, last))
        }
    }
}

/// Reorders `sources` by time when no two of them share a timestamp range (then which
/// one wins on a timestamp never arises); otherwise leaves them in precedence order.
fn in_time_order_if_disjoint(sources: &mut [(usize, Source)]) {
    if sources.len() < 2 {
        return;
    }
    let Some(mut spans) = sources
        .iter()
        .map(|(_, s)| span(s))
        .collect::<Option<Vec<(i64, i64)>>>()
    else {
        return;
    };
    spans.sort_unstable();
    if spans.windows(2).all(|w| w[0].1 < w[1].0) {
        // Disjoint, so every first timestamp differs: the order is total.
        sources.sort_unstable_by_key(|(_, s)| span(s).map(|(first, _)| first));
    }
}

/// Merges one series' samples from several sources (each a list of pieces in time order,
/// the sources in precedence order). The usual case — consecutive blocks, then the head,
/// not overlapping in time — keeps the pieces as they are, in time order; sources that
/// overlap are merged by [`merge_runs`] (later source wins on equal timestamps).
pub(super) fn merge_sources(mut sources: Vec<Vec<Piece>>) -> Vec<Piece> {
    sources.retain(|s| s.iter().any(|p| !p.is_empty()));
    for s in &mut sources {
        s.retain(|p| !p.is_empty());
    }
    if sources.len() <= 1 {
        return sources.pop().unwrap_or_default();
    }
    let first = |s: &Vec<Piece>| s[0].ts[0];
    let last = |s: &Vec<Piece>| *s[s.len() - 1].ts.last().expect("non-empty");
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| first(&sources[i]));
    if order
        .windows(2)
        .all(|w| last(&sources[w[0]]) < first(&sources[w[1]]))
    {
        let mut slots: Vec<Option<Vec<Piece>>> = sources.into_iter().map(Some).collect();
        return order
            .into_iter()
            .flat_map(|i| slots[i].take().expect("each source once"))
            .collect();
    }
    let runs = sources.iter().map(|s| Piece::to_vecs(s)).collect();
    let (ts, vals) = merge_runs(runs);
    vec![Piece::new(ts, vals)]
}

/// One source's samples of a series: timestamps and values.
pub(super) type Run = (Vec<i64>, Vec<f64>);

/// Merges sorted runs; on equal timestamps the later run wins.
pub(super) fn merge_runs(mut runs: Vec<Run>) -> Run {
    if runs.len() == 1 {
        return runs.pop().expect("one run");
    }
    // The usual case: consecutive blocks, then the head — runs that do not overlap in
    // time. Ordered by first timestamp they simply concatenate (no ties, so precedence
    // does not matter).
    runs.retain(|(ts, _)| !ts.is_empty());
    if runs.is_empty() {
        return Run::default();
    }
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i].0[0]);
    if order
        .windows(2)
        .all(|w| runs[w[0]].0.last() < runs[w[1]].0.first())
    {
        // Grow the earliest run in place and append the others (one copy fewer than
        // building a new vector; the runs are large on long-range queries).
        let n: usize = runs.iter().map(|(ts, _)| ts.len()).sum();
        let mut slots: Vec<Option<Run>> = runs.into_iter().map(Some).collect();
        let (mut ts, mut vs) = slots[order[0]].take().expect("present");
        ts.reserve_exact(n - ts.len());
        vs.reserve_exact(n - vs.len());
        for &i in &order[1..] {
            let (t, v) = slots[i].take().expect("present");
            ts.extend_from_slice(&t);
            vs.extend_from_slice(&v);
        }
        return (ts, vs);
    }
    // Runs that overlap (a block rewriting part of another's time): sorted by time, the
    // later run last among equal timestamps (a stable sort of runs that are each sorted:
    // the sort merges them). A k-way merge over a heap measured slower: on a layout of
    // 130 overlapping small blocks (a compaction stopped midway) it took 54 % of a
    // query's CPU, against 49 % for the sort and the loop below.
    let mut all: Vec<(i64, usize, f64)> = Vec::new();
    for (rank, (ts, vs)) in runs.into_iter().enumerate() {
        all.extend(ts.into_iter().zip(vs).map(|(t, v)| (t, rank, v)));
    }
    all.sort_by_key(|&(t, r, _)| (t, r));
    let mut ts: Vec<i64> = Vec::with_capacity(all.len());
    let mut vs: Vec<f64> = Vec::with_capacity(all.len());
    for (t, _, v) in all {
        if ts.last() == Some(&t) {
            *vs.last_mut().expect("same length") = v;
        } else {
            ts.push(t);
            vs.push(v);
        }
    }
    (ts, vs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{PendingSeries, Run, SeriesRun, merge_runs};
    use crate::ingest::{SeriesSamples, WriteBatch};
    use crate::model::{Labels, Matcher};
    use crate::storage::{Storage, WriteWindow};
    use futures::StreamExt;

    /// Series `m{i="00"}`… for each `i` of `series`, each with `samples`.
    pub(crate) fn m_batch(series: std::ops::Range<i64>, samples: Vec<(i64, f64)>) -> WriteBatch {
        WriteBatch {
            series: series
                .map(|i| SeriesSamples {
                    labels: Labels::new(vec![
                        ("__name__".into(), "m".into()),
                        ("i".into(), format!("{i:02}")),
                    ])
                    .unwrap(),
                    samples: samples.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }

    proptest::proptest! {
        /// Overlapping or not, runs merge as inserting them in order into a map would:
        /// every timestamp once, in order, the last run's value where several have it.
        #[test]
        fn runs_merge_as_later_runs_overwriting_earlier_ones(
            runs in proptest::collection::vec(
                proptest::collection::btree_map(0i64..60, -5i32..5, 0..25), 1..6),
        ) {
            let mut want = std::collections::BTreeMap::new();
            for r in &runs {
                want.extend(r.iter().map(|(&t, &v)| (t, f64::from(v))));
            }
            let runs: Vec<Run> = runs
                .iter()
                .map(|r| (r.keys().copied().collect(), r.values().map(|&v| f64::from(v)).collect()))
                .collect();
            let (ts, vs) = merge_runs(runs);
            proptest::prop_assert_eq!(ts, want.keys().copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(vs, want.values().copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn later_run_wins_on_equal_timestamps() {
        let (ts, vs) = merge_runs(vec![
            (vec![1, 3], vec![1.0, 3.0]),
            (vec![2, 3], vec![2.0, 30.0]),
        ]);
        assert_eq!(ts, vec![1, 2, 3]);
        assert_eq!(vs, vec![1.0, 2.0, 30.0]);
    }

    /// A series whose blocks come out of time order (a day's compacted blocks created
    /// after the fresh blocks of its last hours) decodes into one piece, which the leaf
    /// takes without copying; overlapping ones keep precedence (the later block wins).
    #[test]
    fn disjoint_sources_chain_in_time_order() {
        use super::super::packed::PackedRun;
        use super::{
            CachedRun, Piece, Source, in_time_order_if_disjoint, merge_sources, unpack_sources,
        };
        use std::sync::Arc;
        let cached = |ts: &[i64]| {
            let vals: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
            Source::Cached(Arc::new(CachedRun(PackedRun::pack(ts, &vals))))
        };
        // Block 0 holds the last hours, blocks 1 and 2 the day before them.
        let sources = vec![
            (0, cached(&[70, 80])),
            (1, cached(&[10, 20])),
            (2, cached(&[30, 40, 60])),
        ];
        let out = merge_sources(unpack_sources(sources, i64::MIN, i64::MAX));
        assert_eq!(out.len(), 1, "one piece, not {}", out.len());
        assert_eq!(&out[0].ts[..], &[10, 20, 30, 40, 60, 70, 80]);
        // Overlapping: precedence order stays, and the later source wins at 20.
        let mut later = vec![
            (0, cached(&[10, 20])),
            (1, Source::Pieces(vec![Piece::new(vec![20], vec![-1.0])])),
        ];
        in_time_order_if_disjoint(&mut later);
        let out = merge_sources(unpack_sources(later, i64::MIN, i64::MAX));
        let (ts, vals) = Piece::to_vecs(&out);
        assert_eq!((ts, vals), (vec![10, 20], vec![10.0, -1.0]));
    }

    #[test]
    fn disjoint_runs_concatenate_in_time_order() {
        let (ts, vs) = merge_runs(vec![
            (vec![5, 6], vec![5.0, 6.0]),
            (vec![], vec![]),
            (vec![1, 2], vec![1.0, 2.0]),
            (vec![9], vec![9.0]),
        ]);
        assert_eq!(ts, vec![1, 2, 5, 6, 9]);
        assert_eq!(vs, vec![1.0, 2.0, 5.0, 6.0, 9.0]);
        // Touching runs (same timestamp at the seam) take the merge path: later wins.
        let (ts, vs) = merge_runs(vec![
            (vec![1, 2], vec![1.0, 2.0]),
            (vec![2, 3], vec![20.0, 3.0]),
        ]);
        assert_eq!((ts, vs), (vec![1, 2, 3], vec![1.0, 20.0, 3.0]));
        // Only empty runs: nothing, without panicking.
        assert_eq!(
            merge_runs(vec![(vec![], vec![]), (vec![], vec![])]),
            (vec![], vec![])
        );
    }

    /// A scan's estimated samples count each block's samples for the scan's series it
    /// holds: two blocks of 100 samples per series, each holding half the series (as a
    /// cluster's shards write them), estimate what the scan reads, not twice that.
    #[tokio::test]
    async fn estimated_samples_follow_the_series_each_block_holds() {
        let s = Storage::in_memory().await.unwrap();
        // At the start of a 2 h block window: 100 s from an arbitrary time cross into the
        // next window 1.4 % of the time, and each flush then writes two blocks.
        let hour = 3_600_000;
        let t0 = (s.now_ms() / (2 * hour) - 1) * 2 * hour;
        for half in [0..20, 20..40] {
            let batch = m_batch(half, (0..100).map(|k| (t0 + k * 1_000, k as f64)).collect());
            s.append(batch, WriteWindow::Backfill).await.unwrap();
            s.flush().await.unwrap();
        }
        let ids = s.catalog().select(&[Matcher::equal("__name__", "m")]);
        let whole = s.scan(&ids, i64::MIN, i64::MAX);
        assert_eq!(whole.num_blocks(), 2);
        assert_eq!(whole.estimated_samples(), 4_000);
        assert_eq!(whole.range(0..10).estimated_samples(), 1_000);
        // Half the time range of the blocks: about half their samples.
        let half = s.scan(&ids, t0, t0 + 49_500).estimated_samples();
        assert!((1_900..=2_100).contains(&half), "{half}");
    }

    /// Split parts and chunk sizes never change what is read: every part, every chunk
    /// size, a sample overwritten by a later block, and the head all agree with the whole.
    #[tokio::test]
    async fn parts_and_chunks_read_exactly_the_whole() {
        let s = Storage::in_memory().await.unwrap();
        let t0 = s.now_ms() - 3_600_000;
        let batch = |v: f64, n: i64| {
            m_batch(
                0..40,
                (0..n).map(|k| (t0 + k * 1_000, v + k as f64)).collect(),
            )
        };
        s.append(batch(0.0, 100), WriteWindow::Backfill)
            .await
            .unwrap();
        s.flush().await.unwrap();
        // A later block overwrites the first 10 samples; the head adds more.
        s.append(batch(1000.0, 10), WriteWindow::Backfill)
            .await
            .unwrap();
        s.flush().await.unwrap();
        s.append(batch(5000.0, 3), WriteWindow::Backfill)
            .await
            .unwrap();
        let ids = s.catalog().select(&[Matcher::equal("__name__", "m")]);
        let whole = s
            .scan(&ids, i64::MIN, i64::MAX)
            .collect(1000, |_| Ok::<_, crate::storage::StorageError>(()))
            .await
            .unwrap();
        assert_eq!(whole.len(), 40);
        for r in &whole {
            assert_eq!(r.ts.len(), 100);
            assert_eq!(r.vals[0], 5000.0, "the head wins");
            assert_eq!(r.vals[5], 1005.0, "the later block wins");
            assert_eq!(r.vals[50], 50.0);
        }
        for parts in [1, 3, 7, 64] {
            for chunk in [1, 5, 64] {
                // Reads of a block split into one series each, or into a few (the blocks
                // hold 100 and 10 samples a series).
                let reads = if (parts + chunk) % 2 == 0 { 1 } else { 250 };
                let scan = s.scan(&ids, i64::MIN, i64::MAX).with_block_reads(reads);
                let mut got = Vec::new();
                for p in scan.split(parts) {
                    got.extend(
                        p.collect(chunk, |_| Ok::<_, crate::storage::StorageError>(()))
                            .await
                            .unwrap(),
                    );
                }
                assert_eq!(got, whole, "parts {parts}, chunk {chunk}");
            }
        }
        // Series taken before decoding and decoded one at a time: the same samples (this
        // storage has no samples cache: pieces read from files; `read.rs` tests the
        // cached runs).
        let pending: Vec<PendingSeries> = s
            .scan(&ids, i64::MIN, i64::MAX)
            .pending_chunks(7)
            .map(|c| c.unwrap())
            .concat()
            .await;
        assert!(
            pending.iter().all(|p| p.bound() >= 100),
            "every sample bounded"
        );
        let got: Vec<SeriesRun> = pending
            .into_iter()
            .map(|p| p.into_pieces().into_run())
            .collect();
        assert_eq!(got, whole, "pending series");
        // A limit refuses at the chunk that crosses it.
        let mut seen = 0;
        let err = s
            .scan(&ids, i64::MIN, i64::MAX)
            .collect(4, |n| {
                seen += n;
                if seen > 1000 {
                    Err(crate::storage::StorageError::Unavailable("limit".into()))
                } else {
                    Ok(())
                }
            })
            .await;
        assert!(err.is_err());
        assert_eq!(seen, 1200, "stopped at the third chunk of 4 series");
    }

    /// A scan, and every scan of its snapshot, reads the heads as of the snapshot: commits
    /// that land while it runs (new samples in and out of order, overwritten values, a new
    /// series) and a flush moving the head into a block change nothing it reads.
    #[tokio::test]
    async fn a_snapshot_reads_the_head_as_it_was() {
        use futures::StreamExt;
        let s = Storage::in_memory().await.unwrap();
        let t0 = s.now_ms() - 3_600_000;
        let batch = |series: std::ops::Range<i64>, ts: &[i64], v: f64| {
            m_batch(
                series,
                ts.iter().map(|&k| (t0 + k * 1_000, v + k as f64)).collect(),
            )
        };
        let w = WriteWindow::Backfill;
        s.append(batch(0..20, &[0, 1, 2, 3], 0.0), w).await.unwrap();
        s.flush().await.unwrap();
        s.append(batch(0..20, &[10, 12, 14], 100.0), w)
            .await
            .unwrap();
        let ids = |s: &Storage| s.catalog().select(&[Matcher::equal("__name__", "m")]);
        let read_all =
            |scan: super::Scan| scan.collect(3, |_| Ok::<_, crate::storage::StorageError>(()));
        let before = read_all(s.scan(&ids(&s), i64::MIN, i64::MAX))
            .await
            .unwrap();
        assert_eq!(before.len(), 20);

        let snap = s.snapshot();
        let mut chunks = Box::pin(snap.scan(&ids(&s), i64::MIN, i64::MAX).chunks(3));
        let mut got = chunks.next().await.unwrap().unwrap();
        // Commits while the scan is between chunks: later samples, an out-of-order one,
        // overwrites of head and block samples, and a new series.
        s.append(batch(0..21, &[16, 11, 12, 2], 900.0), w)
            .await
            .unwrap();
        while let Some(c) = chunks.next().await {
            got.extend(c.unwrap());
        }
        assert_eq!(got, before, "a scan between commits");
        // The head goes to a block; the snapshot still holds and reads it as it was.
        s.flush().await.unwrap();
        let again = read_all(snap.scan(&ids(&s), i64::MIN, i64::MAX))
            .await
            .unwrap();
        assert_eq!(
            again, before,
            "a second scan of the snapshot, after a flush"
        );
        // A new snapshot sees everything.
        let now = read_all(s.scan(&ids(&s), i64::MIN, i64::MAX))
            .await
            .unwrap();
        assert_eq!(now.len(), 21);
        assert_eq!(now[0].ts.len(), 4 + 3 + 2);
        assert_eq!(
            now[0].vals[2], 902.0,
            "a block sample overwritten by the new head"
        );
    }
}
