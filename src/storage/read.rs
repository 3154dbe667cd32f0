//! Reading back: matchers → series ids (catalog), and one block's samples for a scan
//! (`scan.rs`): row groups by statistics, pages by the page index, decoded in parallel.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::datatypes::{Int64Type, UInt32Type};
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter, RowSelection,
};
#[allow(deprecated)]
// Its replacement (ParquetObjectReader's builder-style API) changes nothing for us here.
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
use datafusion::parquet::file::statistics::Statistics;
use futures::{StreamExt, TryStreamExt};
use roaring::RoaringBitmap;

use super::StorageError;
use super::block::LoadedBlock;
use super::block::values::ValueLayout;
use super::engine::{Shared, Storage};
use super::packed::PackedRun;
use crate::catalog::SeriesId;
use crate::model::{Labels, Matcher};

/// One series' samples in `[min_t, max_t]`, ascending, one per timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesResult {
    pub id: SeriesId,
    pub labels: Labels,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
}

impl Storage {
    /// Global ids of series with samples in `[min_t, max_t]` (by source time ranges) that
    /// match all matchers. Served from the index; no samples are read.
    pub fn series_ids(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> RoaringBitmap {
        let st = self.shared.state.read();
        let mut present = RoaringBitmap::new();
        for b in st.blocks.iter().filter(|b| b.meta.overlaps(min_t, max_t)) {
            present |= &b.present;
        }
        for h in st
            .frozen
            .iter()
            .map(|(_, h)| h)
            .chain(std::iter::once(&st.head))
        {
            let h = h.read();
            if h.time_range()
                .is_some_and(|(a, b)| a <= max_t && b >= min_t)
            {
                present |= h.present();
            }
        }
        if matchers.is_empty() {
            return present;
        }
        self.shared.catalog.select(matchers) & present
    }

    /// Label names of series in range matching `matchers` (all series when empty).
    pub fn label_names(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Vec<String> {
        self.shared
            .catalog
            .label_names(&self.series_ids(matchers, min_t, max_t))
    }

    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Vec<String> {
        self.shared
            .catalog
            .label_values(name, &self.series_ids(matchers, min_t, max_t))
    }

    /// Samples of every matching series in `[min_t, max_t]`, sorted by labels: a scan
    /// collected whole, for tests and tools that want every series at once.
    pub async fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<SeriesResult>, StorageError> {
        let ids = self.shared.catalog.select(matchers);
        let runs = self
            .scan(&ids, min_t, max_t)
            .collect_all(|_| Ok::<_, StorageError>(()))
            .await?;
        let labels = self.shared.catalog.labels_many(runs.iter().map(|r| r.id));
        let mut out: Vec<SeriesResult> = runs
            .into_iter()
            .zip(labels)
            .filter_map(|(r, labels)| {
                Some(SeriesResult {
                    id: r.id,
                    labels: labels?,
                    ts: r.ts,
                    vals: r.vals,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}

impl Shared {
    /// The block's sample-file footer, from the cache or read once from the store.
    pub(super) async fn footer(
        &self,
        block: &LoadedBlock,
    ) -> Result<ArrowReaderMetadata, StorageError> {
        if let Some(m) = self.footers.get(&block.meta.id) {
            return Ok(m);
        }
        #[allow(deprecated)]
        let mut reader = ParquetObjectReader::new(self.store.clone(), block.path.samples());
        // With the page index: row groups hold ~180 series × the block's whole window, so
        // pages (8192 rows) are what lets a short query skip most of a row group.
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let m = ArrowReaderMetadata::load_async(&mut reader, options).await?;
        self.footers.insert(block.meta.id.clone(), m.clone());
        Ok(m)
    }

    /// The cached runs of a block's series in `locals`, by global id, and the locals
    /// not cached.
    pub(super) fn cached_runs(
        &self,
        block: &LoadedBlock,
        locals: &[u32],
    ) -> (Vec<(SeriesId, Arc<CachedRun>)>, Vec<u32>) {
        let cache = self.opts.samples_cache.as_ref();
        let Some((cache, key)) = cache.zip(ulid::Ulid::from_string(&block.meta.id).ok()) else {
            return (Vec::new(), locals.to_vec());
        };
        let (mut hits, mut missing) = (Vec::new(), Vec::new());
        for &l in locals {
            match cache.get(&(key.0, l)) {
                Some(run) => hits.push((block.global_ids[l as usize], run)),
                None => missing.push(l),
            }
        }
        (hits, missing)
    }

    /// Reads the given local series of a block (not cached) from its file. With a samples
    /// cache and `populate`, whole series are read and packed into the cache, then sliced.
    pub(super) async fn scan_block(
        &self,
        block: &Arc<LoadedBlock>,
        locals: &[u32],
        min_t: i64,
        max_t: i64,
        populate: bool,
    ) -> Result<Vec<ScannedSeries>, StorageError> {
        // Whole series even for an instant query: a page (8192 rows) holds most of a
        // series of a day's block and all of a 2 h block's, so the pages a short read needs
        // are nearly the whole series, and every later read of it is then a cache hit.
        // Not for a scan that must not fill the cache (SQL), nor for a short read of more
        // than a quarter of the cache (packed at ~2 bytes a sample): that would evict what
        // it packs before it is read again, so it decodes only the pages it needs.
        let cache = self.opts.samples_cache.as_ref().filter(|c| {
            let per_series = block.meta.num_samples / block.meta.num_series.max(1);
            let packed = (locals.len() as u64).saturating_mul(per_series) * 2;
            populate
                && !(short_read(block, min_t, max_t)
                    && packed > c.policy().max_capacity().unwrap_or(0) / 4)
        });
        let Some((cache, key)) = cache.zip(ulid::Ulid::from_string(&block.meta.id).ok()) else {
            return self.scan_block_pages(block, locals, min_t, max_t).await;
        };
        let whole = self
            .scan_block_pages(block, locals, i64::MIN, i64::MAX)
            .await?;
        let mut out = Vec::with_capacity(whole.len());
        for (g, pieces) in whole {
            let run = Piece::concat(&pieces);
            if let Some(l) = block.local_of(g) {
                let packed = PackedRun::pack(&run.ts, &run.vals);
                cache.insert((key.0, l), Arc::new(CachedRun(packed)));
            }
            if let Some(p) = run.clip(min_t, max_t) {
                // A short read keeps a copy of its samples: a slice would hold the whole
                // series' decoded run until the query ends. A cold instant query over
                // every series held the whole dataset decoded that way:
                // `count({__name__=~".+"})` on the peer dataset peaked at 685–705 MiB
                // with slices, 225–228 MiB with copies.
                let p = if p.len() * 2 < run.len() { p.own() } else { p };
                out.push((g, vec![p]));
            }
        }
        Ok(out)
    }

    /// Reads the given local series of a block from its file: row groups are chosen by
    /// statistics, pages by the page index, then read as concurrent tasks (so decoding uses
    /// every core) and stitched back in order. Series come back ascending, each as slices
    /// of the decoded columns (no copy).
    pub(super) async fn scan_block_pages(
        &self,
        block: &Arc<LoadedBlock>,
        locals: &[u32],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<ScannedSeries>, StorageError> {
        let meta = self.footer(block).await?;
        let (lo, hi) = (locals[0], *locals.last().expect("non-empty"));
        let groups = row_groups(meta.metadata(), lo, hi, min_t, max_t);
        // Dense membership table over local ids (they are small and dense per block).
        let mut wanted = vec![false; hi as usize + 1];
        for &l in locals {
            wanted[l as usize] = true;
        }
        let wanted = Arc::new(wanted);
        // A read covering a small part of the block's time (an instant query): rows are
        // filtered on their id and timestamp before the values are decoded, so a page's
        // other rows are skipped rather than decoded (decoding values was a quarter of an
        // uncached instant query's time: byte-stream-split values skip for free, packed
        // mantissas are unpacked but not scaled), and the batches hold only the rows kept.
        let late = short_read(block, min_t, max_t);
        let parallel = crate::cores::cores();
        let tasks = groups.into_iter().filter_map(|g| {
            let selection = page_selection(meta.metadata(), g, &wanted, min_t, max_t);
            if selection.as_ref().is_some_and(|s| !s.selects_any()) {
                return None;
            }
            let task = RowGroupScan {
                store: self.store.clone(),
                block: block.clone(),
                meta: meta.clone(),
                group: g,
                selection,
                wanted: wanted.clone(),
                min_t,
                max_t,
                late,
            };
            Some(tokio::spawn(task.run()))
        });
        let mut parts = futures::stream::iter(tasks).buffered(parallel + 1);
        let mut out: Vec<ScannedSeries> = Vec::new();
        while let Some(part) = parts.next().await {
            let part =
                part.map_err(|e| StorageError::Corrupt(format!("block scan task: {e}")))??;
            for (g, piece) in part {
                // A series may continue from the previous batch or row group.
                match out.last_mut() {
                    Some(last) if last.0 == g => last.1.push(piece),
                    _ => out.push((g, vec![piece])),
                }
            }
        }
        Ok(out)
    }
}

/// Whether `[min_t, max_t]` covers under an eighth of the block's time (an instant query,
/// a short range).
fn short_read(block: &LoadedBlock, min_t: i64, max_t: i64) -> bool {
    let covered = max_t
        .min(block.meta.max_t)
        .saturating_sub(min_t.max(block.meta.min_t));
    covered.saturating_mul(8) < block.meta.max_t - block.meta.min_t
}

/// A series' samples from one block: global id and its pieces, in time order.
pub(super) type ScannedSeries = (SeriesId, Vec<Piece>);

/// Samples of one series from one source, ascending: slices of decoded columns (cheap to
/// clone and slice; they share the decoded buffers).
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub ts: ScalarBuffer<i64>,
    pub vals: ScalarBuffer<f64>,
}

impl Piece {
    pub fn new(ts: Vec<i64>, vals: Vec<f64>) -> Self {
        Piece {
            ts: ts.into(),
            vals: vals.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// The part within `[min_t, max_t]`, if any (no copy).
    pub fn clip(&self, min_t: i64, max_t: i64) -> Option<Piece> {
        let a = self.ts.partition_point(|&t| t < min_t);
        let b = self.ts.partition_point(|&t| t <= max_t);
        (a < b).then(|| Piece {
            ts: self.ts.slice(a, b - a),
            vals: self.vals.slice(a, b - a),
        })
    }

    /// The samples in buffers of their own (a copy), so a slice stops holding the rest of
    /// the buffers it was cut from.
    pub fn own(&self) -> Piece {
        Piece::new(self.ts.to_vec(), self.vals.to_vec())
    }

    /// The pieces' samples in one owned piece (one copy; none for a single piece that
    /// already spans its whole buffer).
    pub fn concat(pieces: &[Piece]) -> Piece {
        if let [p] = pieces
            && p.ts.inner().capacity() == p.ts.inner().len()
            && p.vals.inner().capacity() == p.vals.inner().len()
        {
            return p.clone();
        }
        let (ts, vals) = Piece::to_vecs(pieces);
        Piece::new(ts, vals)
    }

    /// The pieces' samples as vectors (one copy).
    pub fn to_vecs(pieces: &[Piece]) -> (Vec<i64>, Vec<f64>) {
        let n = pieces.iter().map(Piece::len).sum();
        let mut ts = Vec::with_capacity(n);
        let mut vals = Vec::with_capacity(n);
        for p in pieces {
            ts.extend_from_slice(&p.ts);
            vals.extend_from_slice(&p.vals);
        }
        (ts, vals)
    }
}

/// One row group of a block's samples file, read on its own task.
struct RowGroupScan {
    store: Arc<dyn object_store::ObjectStore>,
    block: Arc<LoadedBlock>,
    meta: ArrowReaderMetadata,
    group: usize,
    /// Pages of the row group worth decoding (from the page index).
    selection: Option<RowSelection>,
    wanted: Arc<Vec<bool>>,
    min_t: i64,
    max_t: i64,
    /// Filter rows on id and time before decoding values (late materialisation).
    late: bool,
}

impl RowGroupScan {
    /// Keeps the rows of wanted series within the time range, judged on the id and
    /// timestamp columns alone.
    fn row_filter(&self) -> RowFilter {
        let (wanted, min_t, max_t) = (self.wanted.clone(), self.min_t, self.max_t);
        let mask = ProjectionMask::roots(self.meta.parquet_schema(), [0, 1]);
        let keep = ArrowPredicateFn::new(mask, move |b: RecordBatch| {
            let ids = b.column(0).as_primitive::<UInt32Type>().values();
            let ts = b.column(1).as_primitive::<Int64Type>().values();
            let kept = BooleanBuffer::collect_bool(ids.len(), |i| {
                (min_t..=max_t).contains(&ts[i])
                    && wanted.get(ids[i] as usize).copied().unwrap_or(false)
            });
            Ok(BooleanArray::new(kept, None))
        });
        RowFilter::new(vec![Box::new(keep)])
    }

    async fn run(self) -> Result<Vec<(SeriesId, Piece)>, StorageError> {
        let filter = self.late.then(|| self.row_filter());
        let layout = ValueLayout::of(self.meta.schema())?;
        let md = self.meta.metadata();
        let mut leaves = vec![0, 1];
        leaves.extend(layout.leaves(md.row_group(self.group)));
        let mask = ProjectionMask::leaves(md.file_metadata().schema_descr(), leaves);
        #[allow(deprecated)]
        let reader = ParquetObjectReader::new(self.store, self.block.path.samples());
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.meta)
            .with_row_groups(vec![self.group])
            .with_projection(mask)
            .with_batch_size(64 * 1024);
        if let Some(f) = filter {
            builder = builder.with_row_filter(f);
        }
        if let Some(s) = self.selection {
            builder = builder.with_row_selection(s);
        }
        let mut stream = builder.build()?;
        let mut out: Vec<(SeriesId, Piece)> = Vec::new();
        while let Some(batch) = stream.try_next().await? {
            let ids = batch.column(0).as_primitive::<UInt32Type>().values();
            let ts = batch.column(1).as_primitive::<Int64Type>().values();
            let vs = layout.decode(&batch.columns()[2..])?;
            // Rows are sorted by (series, timestamp): take each series' run as a whole,
            // cut to the time range by binary search, and keep it as slices of the
            // decoded columns.
            let mut i = 0;
            while i < ids.len() {
                let local = ids[i];
                let run = ids[i..].partition_point(|&x| x == local);
                let j = i + run;
                if self.wanted.get(local as usize).copied().unwrap_or(false) {
                    let a = i + ts[i..j].partition_point(|&t| t < self.min_t);
                    let b = i + ts[i..j].partition_point(|&t| t <= self.max_t);
                    if a < b {
                        let g = self.block.global_ids[local as usize];
                        out.push((
                            g,
                            Piece {
                                ts: ts.slice(a, b - a),
                                vals: vs.slice(a, b - a),
                            },
                        ));
                    }
                }
                i = j;
            }
        }
        Ok(out)
    }
}

/// Row groups whose statistics overlap local ids `[lo, hi]` and `[min_t, max_t]`.
pub(super) fn row_groups(
    meta: &ParquetMetaData,
    lo: u32,
    hi: u32,
    min_t: i64,
    max_t: i64,
) -> Vec<usize> {
    meta.row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| {
            let ids_overlap = match rg.column(0).statistics() {
                Some(Statistics::Int32(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(a), Some(b)) => (*a as u32) <= hi && (*b as u32) >= lo,
                    _ => true,
                },
                _ => true,
            };
            let ts_overlap = match rg.column(1).statistics() {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(a), Some(b)) => *a <= max_t && *b >= min_t,
                    _ => true,
                },
                _ => true,
            };
            ids_overlap && ts_overlap
        })
        .map(|(i, _)| i)
        .collect()
}

/// Rows of row group `rg` worth decoding, by the page index: pages whose series ids include
/// a wanted one, intersected with pages whose timestamps overlap `[min_t, max_t]`. `None`
/// when the file has no page index (then the whole row group is read).
pub(super) fn page_selection(
    meta: &ParquetMetaData,
    rg: usize,
    wanted: &[bool],
    min_t: i64,
    max_t: i64,
) -> Option<RowSelection> {
    let columns = meta.column_index()?.get(rg)?;
    let offsets = meta.offset_index()?.get(rg)?;
    let rows = usize::try_from(meta.row_group(rg).num_rows()).ok()?;
    let pages = |col: usize, keep: &dyn Fn(usize) -> bool| -> Option<RowSelection> {
        let locs = offsets.get(col)?.page_locations();
        let ranges = locs
            .iter()
            .enumerate()
            .filter(|(p, _)| keep(*p))
            .map(|(p, loc)| {
                let end = locs.get(p + 1).map_or(rows, |n| n.first_row_index as usize);
                loc.first_row_index as usize..end
            });
        Some(RowSelection::from_consecutive_ranges(ranges, rows))
    };
    let (ColumnIndexMetaData::INT32(ids), ColumnIndexMetaData::INT64(ts)) =
        (columns.first()?, columns.get(1)?)
    else {
        return None;
    };
    let by_id = pages(0, &|p| match (ids.min_value(p), ids.max_value(p)) {
        (Some(&a), Some(&b)) => {
            let (a, b) = (
                a as u32 as usize,
                (b as u32 as usize).min(wanted.len().saturating_sub(1)),
            );
            a <= b && wanted[a..=b].iter().any(|&w| w)
        }
        _ => true,
    })?;
    let by_time = pages(1, &|p| match (ts.min_value(p), ts.max_value(p)) {
        (Some(&a), Some(&b)) => a <= max_t && b >= min_t,
        _ => true,
    })?;
    Some(by_id.intersection(&by_time))
}

/// Parsed footers of block sample files, bounded by their in-memory size.
pub(super) type FooterCache = moka::sync::Cache<String, ArrowReaderMetadata>;

pub(super) fn footer_cache() -> FooterCache {
    moka::sync::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(|_: &String, m: &ArrowReaderMetadata| {
            u32::try_from(m.metadata().memory_size()).unwrap_or(u32::MAX)
        })
        .build()
}

/// All samples of one series in one block, packed (stale markers included).
pub struct CachedRun(pub(super) PackedRun);

/// Packed samples keyed by (block ULID, local series id). Blocks are immutable and a
/// compaction writes a new block id, so entries never go stale; bounded by bytes.
pub type SamplesCache = moka::sync::Cache<(u128, u32), Arc<CachedRun>>;

pub fn samples_cache(max_bytes: u64) -> SamplesCache {
    moka::sync::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_: &(u128, u32), r: &Arc<CachedRun>| {
            u32::try_from(r.0.heap_bytes() + 64).unwrap_or(u32::MAX)
        })
        .build()
}

#[cfg(test)]
mod tests {
    use crate::ingest::{SeriesSamples, WriteBatch};
    use crate::model::{Labels, Matcher};
    use crate::storage::{SamplesCache, Storage, WriteWindow};
    use futures::StreamExt;

    /// A storage over an in-memory bucket with a samples cache of `bytes` (and the dir it
    /// needs kept alive).
    async fn cached_storage(bytes: u64) -> (tempfile::TempDir, Storage, SamplesCache) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = crate::storage::StorageOptions::new(dir.path());
        opts.wal = false;
        let cache = super::samples_cache(bytes);
        opts.samples_cache = Some(cache.clone());
        let store = std::sync::Arc::new(object_store::memory::InMemory::new());
        let s = Storage::open(opts, store).await.unwrap();
        (dir, s, cache)
    }

    /// Writes the series (backfilled) and flushes them to blocks.
    async fn write_blocks(s: &Storage, series: Vec<SeriesSamples>) {
        let batch = WriteBatch {
            histograms: Vec::new(),
            exemplars: Vec::new(),
            dropped_exemplars: 0,
            series,
            metadata: vec![],
        };
        s.append(batch, WriteWindow::Backfill).await.unwrap();
        s.flush().await.unwrap();
    }

    /// Series `m{i="00"}` … `m{i="59"}`, 1500 samples each every 2 s from `t0`, sample `k`
    /// of series `i` valued `value(i, k)`.
    fn sixty_series(t0: i64, value: impl Fn(i64, i64) -> f64) -> Vec<SeriesSamples> {
        (0..60)
            .map(|i| SeriesSamples {
                labels: Labels::new(vec![
                    ("__name__".into(), "m".into()),
                    ("i".into(), format!("{i:02}")),
                ])
                .unwrap(),
                samples: (0..1500).map(|k| (t0 + k * 2_000, value(i, k))).collect(),
            })
            .collect()
    }

    /// Many pages per row group: page pruning (by series and time) must return exactly the
    /// samples a full scan would.
    #[tokio::test]
    async fn page_pruned_reads_equal_full_reads() {
        pruned_reads_equal_full_reads(Storage::in_memory().await.unwrap(), 1).await;
    }

    /// With the samples cache: the same answers on a cold cache (whole series read and
    /// packed), a warm one, and one too small to keep everything.
    #[tokio::test]
    async fn cached_reads_equal_full_reads() {
        for bytes in [64 << 20, 20_000] {
            let (_dir, s, _) = cached_storage(bytes).await;
            pruned_reads_equal_full_reads(s, 3).await;
        }
    }

    /// A series over several blocks, one of them rewriting part of another's samples:
    /// cold and warm cache reads (cached runs of consecutive blocks decoded into one
    /// buffer) give the merged samples, the later block winning where two overlap.
    #[tokio::test]
    async fn cached_runs_over_several_blocks_merge_as_files_do() {
        let (_dir, s, _) = cached_storage(64 << 20).await;
        let hour = 3_600_000;
        let t0 = (s.now_ms() / (2 * hour) - 4) * 2 * hour;
        let labels = Labels::new(vec![("__name__".into(), "m".into())]).unwrap();
        let series = |samples: Vec<(i64, f64)>| {
            vec![SeriesSamples {
                labels: labels.clone(),
                samples,
            }]
        };
        // Five hours at 1 min: three 2 h blocks.
        let first = (0..300).map(|k| (t0 + k * 60_000, k as f64)).collect();
        write_blocks(&s, series(first)).await;
        // Then minutes 100..140 again with other values: a later block over two of them.
        let again = (100..140)
            .map(|k| (t0 + k * 60_000, -(k as f64) / 4.0))
            .collect();
        write_blocks(&s, series(again)).await;
        assert!(s.blocks().len() >= 4, "{} blocks", s.blocks().len());
        let want = |from: i64, to: i64| -> Vec<(i64, f64)> {
            (0..300)
                .map(|k| {
                    let v = if (100..140).contains(&k) {
                        -(k as f64) / 4.0
                    } else {
                        k as f64
                    };
                    (t0 + k * 60_000, v)
                })
                .filter(|(t, _)| (from..=to).contains(t))
                .collect()
        };
        let m = vec![Matcher::equal("__name__", "m")];
        for pass in 0..3 {
            for (from, to) in [
                (t0, t0 + 5 * hour),
                (t0 + 90 * 60_000, t0 + 150 * 60_000),
                (t0 + 119 * 60_000, t0 + 121 * 60_000),
                (t0 + 250 * 60_000, t0 + 9 * hour),
            ] {
                let got = s.select(&m, from, to).await.unwrap();
                assert_eq!(got.len(), 1);
                let have: Vec<(i64, f64)> = got[0]
                    .ts
                    .iter()
                    .copied()
                    .zip(got[0].vals.iter().copied())
                    .collect();
                assert_eq!(have, want(from, to), "pass {pass}, [{from}, {to}]");
                // Taken undecoded (after the first pass: cached runs) and decoded later, as
                // the planner's leaves read: the same samples, within the bound given.
                let ids = s.catalog().select(&m);
                let pending: Vec<_> = s
                    .scan(&ids, from, to)
                    .pending_chunks(1)
                    .map(|c| c.unwrap())
                    .concat()
                    .await;
                let bound: usize = pending.iter().map(|p| p.bound()).sum();
                let runs: Vec<_> = pending
                    .into_iter()
                    .map(|p| p.into_pieces().into_run())
                    .filter(|r| !r.is_empty())
                    .collect();
                let late: Vec<(i64, f64)> = runs
                    .iter()
                    .flat_map(|r| r.ts.iter().copied().zip(r.vals.iter().copied()))
                    .collect();
                assert_eq!(
                    late,
                    want(from, to),
                    "decoded late, pass {pass}, [{from}, {to}]"
                );
                assert!(bound >= late.len(), "bound {bound} < {}", late.len());
            }
        }
    }

    /// A short read fills the cache with whole series, unless they would take more than a
    /// quarter of it (they would be evicted before they are read again).
    #[tokio::test]
    async fn short_reads_fill_the_cache_unless_they_would_churn_it() {
        for (bytes, fills) in [(64 << 20, true), (400_000, false)] {
            let (_dir, s, cache) = cached_storage(bytes).await;
            // Within one 2 h block window.
            let t0 = (s.now_ms() / 7_200_000 - 4) * 7_200_000;
            write_blocks(&s, sixty_series(t0, |_, k| k as f64)).await;
            // The last 10 s of all 60 series: 90,000 samples, ~180 kB packed.
            let m = vec![Matcher::equal("__name__", "m")];
            let end = t0 + 1499 * 2_000;
            let got = s.select(&m, end - 10_000, end).await.unwrap();
            assert_eq!(got.len(), 60);
            assert!(got.iter().all(|r| r.ts.len() == 6));
            cache.run_pending_tasks();
            assert_eq!(cache.entry_count() > 0, fills, "cache of {bytes} bytes");
        }
    }

    /// A cold short read through the cache keeps only the samples it asked for: its
    /// pieces own their buffers instead of slicing each series' whole decoded run, which
    /// would stay alive until the query ends.
    #[tokio::test]
    async fn short_cold_reads_keep_only_their_samples() {
        let (_dir, s, cache) = cached_storage(64 << 20).await;
        let t0 = (s.now_ms() / 7_200_000 - 4) * 7_200_000;
        write_blocks(&s, sixty_series(t0, |_, k| k as f64)).await;
        let ids = s.catalog().select(&[Matcher::equal("__name__", "m")]);
        let end = t0 + 1499 * 2_000;
        let pending: Vec<_> = s
            .scan(&ids, end - 10_000, end)
            .pending_chunks(60)
            .map(|c| c.unwrap())
            .concat()
            .await;
        assert_eq!(pending.len(), 60);
        for p in pending {
            for piece in p.into_pieces().pieces {
                assert_eq!(piece.len(), 6);
                assert_eq!(piece.ts.inner().capacity(), 6 * 8, "timestamps");
                assert_eq!(piece.vals.inner().capacity(), 6 * 8, "values");
            }
        }
        cache.run_pending_tasks();
        assert_eq!(
            cache.entry_count(),
            60,
            "whole series packed into the cache"
        );
    }

    async fn pruned_reads_equal_full_reads(s: Storage, passes: usize) {
        let t0 = s.now_ms() - 3_600_000;
        write_blocks(&s, sixty_series(t0, |i, k| (i * 10_000 + k) as f64)).await;
        assert!(!s.blocks().is_empty());
        let cases = [
            ("0[3-5]|4[0-2]", t0 + 1_000_000, t0 + 1_010_000),
            (".*", t0 + 2_990_000, t0 + 3_000_000),
            ("17", t0 - 5, t0 + 5),
            ("2.|5.", t0, t0 + 3_600_000),
        ];
        for (re, from, to) in (0..passes).flat_map(|_| cases) {
            let m = vec![Matcher::regex("i", re, true).unwrap()];
            let got = s.select(&m, from, to).await.unwrap();
            let want_series = s.catalog().select(&m).len() as usize;
            assert_eq!(got.len(), want_series, "{re}");
            for r in &got {
                let i: i64 = r.labels.get("i").unwrap().parse().unwrap();
                let expect: Vec<(i64, f64)> = (0..1500)
                    .map(|k| (t0 + k * 2_000, (i * 10_000 + k) as f64))
                    .filter(|(t, _)| *t >= from && *t <= to)
                    .collect();
                let have: Vec<(i64, f64)> =
                    r.ts.iter().copied().zip(r.vals.iter().copied()).collect();
                assert_eq!(have, expect, "series {i}, {re}");
            }
        }
    }
}
