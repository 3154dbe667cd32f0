//! A scan's samples in storage order, decoding only the columns a reader asks for.
//!
//! The ordered scan (`scan.rs`) must decode series ids and timestamps to cut series and
//! merge sources by precedence. A reader that needs neither the `(series_id, timestamp)`
//! order nor the merge — SQL aggregates such as `count(*)`, `sum(value)` or
//! `avg(value) GROUP BY series_id` — can take each block's rows as they are stored, as long
//! as no two sources can hold the same sample: every block's time range disjoint from every
//! other source's. Then a block's part of the scan is its row groups (chosen by statistics,
//! pages by the page index) decoded with a projection: ids only when the rows must be
//! filtered to the part's series or the caller wants them, timestamps only when the time
//! range cuts the block or the caller wants them. The heads' samples follow, merged as in
//! the ordered scan (they are small).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{Int64Type, UInt32Type};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
#[allow(deprecated)]
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use datafusion::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::parquet::file::statistics::Statistics;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use roaring::RoaringBitmap;

use super::StorageError;
use super::block::LoadedBlock;
use super::block::values::ValueLayout;
use super::read::{page_selection, row_groups};
use super::scan::{Scan, SeriesPieces};

/// Which of `series_id`, `timestamp`, `value` a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub series_id: bool,
    pub timestamp: bool,
    pub value: bool,
}

/// Rows of the wanted columns (`None` for the others).
#[derive(Debug, Clone)]
pub struct ColumnBatch {
    pub rows: usize,
    pub series_id: Option<ArrayRef>,
    pub timestamp: Option<ArrayRef>,
    pub value: Option<ArrayRef>,
}

/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;

impl Scan {
    /// Whether the scan's sources cannot hold the same sample twice: no block's time range
    /// meets another block's or a head's. A head's range as it is now covers the commits
    /// the scan reads (it only grows), so the answer holds for the scan's snapshot.
    pub fn sources_disjoint(&self) -> bool {
        let mut ranges: Vec<(i64, i64)> = self
            .blocks
            .iter()
            .map(|b| (b.meta.min_t, b.meta.max_t))
            .collect();
        let heads: Vec<(i64, i64)> = self
            .heads
            .iter()
            .filter_map(|(h, _)| h.read().time_range())
            .collect();
        ranges.sort_unstable();
        let blocks_apart = ranges.windows(2).all(|w| w[0].1 < w[1].0);
        let heads_apart = heads
            .iter()
            .all(|h| ranges.iter().all(|b| h.1 < b.0 || h.0 > b.1));
        blocks_apart && heads_apart
    }

    /// The scan's samples in storage order (block by block, then the heads), only the
    /// wanted columns. Only correct when [`Scan::sources_disjoint`]; `series` bounds the
    /// series per chunk read from the heads.
    pub fn column_batches(
        self,
        cols: Columns,
        series: usize,
    ) -> impl Stream<Item = Result<ColumnBatch, StorageError>> + Send + 'static {
        let wanted: RoaringBitmap = self.ids().iter().copied().collect();
        let blocks: Vec<Arc<LoadedBlock>> = self.blocks.iter().cloned().collect();
        let heads_only = self.heads_only();
        let scan = self;
        let from_blocks = futures::stream::iter(blocks)
            .then(move |b| {
                let locals = b.local_ids(&wanted);
                block_stream(scan.clone(), b, locals, cols)
            })
            .try_flatten();
        let from_heads = heads_only
            .piece_chunks(series)
            .map_ok(move |chunk| head_batch(chunk, cols));
        from_blocks
            .chain(from_heads)
            .try_filter(|b| futures::future::ready(b.rows > 0))
    }
}

/// What reading one block's part of a scan needs, shared by its row groups.
struct BlockRead {
    store: Arc<dyn object_store::ObjectStore>,
    block: Arc<LoadedBlock>,
    meta: ArrowReaderMetadata,
    /// Membership of local ids `0..=hi`.
    table: Vec<bool>,
    lo: u32,
    hi: u32,
    /// Every local id in `[lo, hi]` is wanted.
    contiguous: bool,
    /// The time range cuts the block.
    cut_time: bool,
    min_t: i64,
    max_t: i64,
    cols: Columns,
}

/// One block's rows for the scan, streamed: its row groups in order, each decoded with
/// the projection and filtered to the scan's series and time range where they do not
/// cover it. Memory is a decoded batch, not the block.
async fn block_stream(
    scan: Scan,
    block: Arc<LoadedBlock>,
    locals: Vec<u32>,
    cols: Columns,
) -> Result<BoxStream<'static, Result<ColumnBatch, StorageError>>, StorageError> {
    let (Some(&lo), Some(&hi)) = (locals.first(), locals.last()) else {
        return Ok(futures::stream::empty().boxed());
    };
    let (min_t, max_t) = scan.time_range();
    let shared = scan.shared();
    let meta = shared.footer(&block).await?;
    let mut table = vec![false; hi as usize + 1];
    for &l in &locals {
        table[l as usize] = true;
    }
    let groups = row_groups(meta.metadata(), lo, hi, min_t, max_t);
    let read = Arc::new(BlockRead {
        store: shared.store.clone(),
        cut_time: block.meta.min_t < min_t || block.meta.max_t > max_t,
        block,
        meta,
        table,
        lo,
        hi,
        contiguous: (hi - lo) as usize + 1 == locals.len(),
        min_t,
        max_t,
        cols,
    });
    Ok(futures::stream::iter(groups)
        .then(move |g| read.clone().group(g))
        .try_flatten()
        .boxed())
}

impl BlockRead {
    /// Row group `g`'s rows, a decoded batch at a time.
    async fn group(
        self: Arc<Self>,
        g: usize,
    ) -> Result<BoxStream<'static, Result<ColumnBatch, StorageError>>, StorageError> {
        let md = self.meta.metadata();
        let selection = page_selection(md, g, &self.table, self.min_t, self.max_t);
        if selection.as_ref().is_some_and(|s| !s.selects_any()) {
            return Ok(futures::stream::empty().boxed());
        }
        // Ids are needed unless every row of the group is one of ours.
        let inside = self.contiguous
            && match md.row_group(g).column(0).statistics() {
                Some(Statistics::Int32(s)) => matches!(
                    (s.min_opt(), s.max_opt()),
                    (Some(a), Some(b)) if *a as u32 >= self.lo && *b as u32 <= self.hi
                ),
                _ => false,
            };
        let cols = self.cols;
        let layout = ValueLayout::of(self.meta.schema())?;
        let mut leaves: Vec<usize> = [
            (cols.series_id || !inside, 0),
            (cols.timestamp || self.cut_time, 1),
        ]
        .into_iter()
        .filter_map(|(on, i)| on.then_some(i))
        .collect();
        if cols.value {
            leaves.extend(layout.leaves(md.row_group(g)));
        }
        #[allow(deprecated)]
        let reader = ParquetObjectReader::new(self.store.clone(), self.block.path.samples());
        let mask = ProjectionMask::leaves(md.file_metadata().schema_descr(), leaves.clone());
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.meta.clone())
                .with_row_groups(vec![g])
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS);
        if let Some(s) = selection {
            builder = builder.with_row_selection(s);
        }
        let stream = builder.build()?;
        Ok(stream
            .map(move |batch| self.convert(&batch?, &leaves, layout, inside))
            .boxed())
    }

    /// A decoded batch (columns `leaves`) filtered to the scan and cut to the wanted columns.
    fn convert(
        &self,
        batch: &RecordBatch,
        leaves: &[usize],
        layout: ValueLayout,
        inside: bool,
    ) -> Result<ColumnBatch, StorageError> {
        let col = |leaf: usize| {
            leaves
                .iter()
                .position(|&l| l == leaf)
                .map(|i| batch.column(i).clone())
        };
        let (ids, ts) = (col(0), col(1));
        // The value leaves follow the id and timestamp leaves read.
        let first_value = leaves.iter().position(|&l| l >= 2);
        let vals = match first_value {
            Some(i) => Some(Arc::new(Float64Array::new(
                layout.decode(&batch.columns()[i..])?,
                None,
            )) as ArrayRef),
            None => None,
        };
        let mut keep: Option<Vec<bool>> = None;
        if !inside {
            let ids = ids.as_ref().expect("decoded").as_primitive::<UInt32Type>();
            keep = Some(
                ids.values()
                    .iter()
                    .map(|&l| self.table.get(l as usize).copied().unwrap_or(false))
                    .collect(),
            );
        }
        if self.cut_time {
            let ts = ts.as_ref().expect("decoded").as_primitive::<Int64Type>();
            let k = keep.get_or_insert_with(|| vec![true; ts.len()]);
            for (k, &t) in k.iter_mut().zip(ts.values().iter()) {
                *k &= t >= self.min_t && t <= self.max_t;
            }
        }
        let (rows, ids, ts, vals) = match keep {
            Some(k) if k.iter().any(|&x| !x) => {
                let mask = BooleanArray::from(k);
                let f = |a: Option<ArrayRef>| a.map(|a| filter(&a, &mask)).transpose();
                (mask.true_count(), f(ids)?, f(ts)?, f(vals)?)
            }
            _ => (batch.num_rows(), ids, ts, vals),
        };
        let cols = self.cols;
        let series_id = match (cols.series_id, ids) {
            (true, Some(ids)) => Some(Arc::new(UInt32Array::from_iter_values(
                ids.as_primitive::<UInt32Type>()
                    .values()
                    .iter()
                    .map(|&l| self.block.global_ids[l as usize]),
            )) as ArrayRef),
            _ => None,
        };
        Ok(ColumnBatch {
            rows,
            series_id,
            timestamp: ts.filter(|_| cols.timestamp),
            value: vals.filter(|_| cols.value),
        })
    }
}

/// A chunk of the heads' merged samples as one batch of the wanted columns.
fn head_batch(chunk: Vec<SeriesPieces>, cols: Columns) -> ColumnBatch {
    use datafusion::arrow::array::{Float64Array, Int64Array};
    let rows = chunk.iter().map(SeriesPieces::len).sum();
    let series_id = cols.series_id.then(|| {
        let mut v = Vec::with_capacity(rows);
        for s in &chunk {
            v.extend(std::iter::repeat_n(s.id, s.len()));
        }
        Arc::new(UInt32Array::from(v)) as ArrayRef
    });
    let timestamp = cols.timestamp.then(|| {
        let mut v = Vec::with_capacity(rows);
        for p in chunk.iter().flat_map(|s| &s.pieces) {
            v.extend_from_slice(&p.ts);
        }
        Arc::new(Int64Array::from(v)) as ArrayRef
    });
    let value = cols.value.then(|| {
        let mut v = Vec::with_capacity(rows);
        for p in chunk.iter().flat_map(|s| &s.pieces) {
            v.extend_from_slice(&p.vals);
        }
        Arc::new(Float64Array::from(v)) as ArrayRef
    });
    debug_assert!(series_id.as_ref().is_none_or(|a| a.len() == rows));
    ColumnBatch {
        rows,
        series_id,
        timestamp,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{SeriesSamples, WriteBatch};
    use crate::model::{Labels, Matcher};
    use crate::storage::{Storage, WriteWindow};
    use datafusion::arrow::datatypes::Float64Type;

    /// Storage order gives exactly the ordered scan's rows (as a set) for every column
    /// choice, series subset, time cut and split — with filtered and unfiltered row groups,
    /// two blocks and the head.
    #[tokio::test]
    async fn storage_order_reads_the_same_rows_as_the_ordered_scan() {
        let s = Storage::in_memory().await.unwrap();
        let t0 = s.now_ms() - 3_600_000;
        let batch = |from: i64, to: i64| WriteBatch {
            histograms: Vec::new(),
            exemplars: Vec::new(),
            dropped_exemplars: 0,
            series: (0..40)
                .map(|i| SeriesSamples {
                    labels: Labels::new(vec![
                        ("__name__".into(), "m".into()),
                        ("i".into(), format!("{i:02}")),
                    ])
                    .unwrap(),
                    samples: (from..to)
                        .map(|k| (t0 + k * 1_000, (i * 1000) as f64 + k as f64))
                        .collect(),
                })
                .collect(),
            metadata: vec![],
        };
        for (a, b) in [(0, 100), (100, 200)] {
            s.append(batch(a, b), WriteWindow::Backfill).await.unwrap();
            s.flush().await.unwrap();
        }
        s.append(batch(200, 203), WriteWindow::Backfill)
            .await
            .unwrap();
        let all = s.catalog().select(&[Matcher::equal("__name__", "m")]);
        let every_third: RoaringBitmap = all.iter().step_by(3).collect();
        let middle: RoaringBitmap = all.iter().skip(10).take(12).collect();
        let ranges = [
            (i64::MIN, i64::MAX),
            (t0 + 50_000, t0 + 150_000),
            (t0 + 201_000, i64::MAX),
        ];
        for ids in [&all, &every_third, &middle] {
            for &(min_t, max_t) in &ranges {
                let scan = s.scan(ids, min_t, max_t);
                assert!(scan.sources_disjoint());
                let mut want: Vec<(u32, i64, u64)> = Vec::new();
                for r in scan
                    .clone()
                    .collect(7, |_| Ok::<_, StorageError>(()))
                    .await
                    .unwrap()
                {
                    want.extend(
                        r.ts.iter()
                            .zip(&r.vals)
                            .map(|(&t, v)| (r.id, t, v.to_bits())),
                    );
                }
                want.sort_unstable();
                assert!(!want.is_empty());
                for parts in [1, 3] {
                    for cols in [
                        Columns {
                            series_id: true,
                            timestamp: true,
                            value: true,
                        },
                        Columns {
                            series_id: false,
                            timestamp: false,
                            value: true,
                        },
                        Columns {
                            series_id: true,
                            timestamp: false,
                            value: false,
                        },
                        Columns {
                            series_id: false,
                            timestamp: false,
                            value: false,
                        },
                    ] {
                        let mut got: Vec<(u32, i64, u64)> = Vec::new();
                        for p in scan.split(parts) {
                            let batches: Vec<ColumnBatch> =
                                p.column_batches(cols, 5).try_collect().await.unwrap();
                            for b in batches {
                                for r in 0..b.rows {
                                    got.push((
                                        b.series_id
                                            .as_ref()
                                            .map_or(0, |a| a.as_primitive::<UInt32Type>().value(r)),
                                        b.timestamp
                                            .as_ref()
                                            .map_or(0, |a| a.as_primitive::<Int64Type>().value(r)),
                                        b.value.as_ref().map_or(0, |a| {
                                            a.as_primitive::<Float64Type>().value(r).to_bits()
                                        }),
                                    ));
                                }
                            }
                        }
                        let mut want = want
                            .iter()
                            .map(|&(id, t, v)| {
                                (
                                    if cols.series_id { id } else { 0 },
                                    if cols.timestamp { t } else { 0 },
                                    if cols.value { v } else { 0 },
                                )
                            })
                            .collect::<Vec<_>>();
                        want.sort_unstable();
                        got.sort_unstable();
                        assert_eq!(got, want, "{cols:?}, parts {parts}, [{min_t}, {max_t}]");
                    }
                }
            }
        }
        // A block overlapping another in time: storage order would read a sample twice.
        s.append(batch(150, 151), WriteWindow::Backfill)
            .await
            .unwrap();
        s.flush().await.unwrap();
        assert!(!s.scan(&all, i64::MIN, i64::MAX).sources_disjoint());
    }
}
