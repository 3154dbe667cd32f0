//! `SamplesScanExec`: the `samples` table as a partitioned, streaming DataFusion leaf over
//! the storage scan (`storage/scan.rs`).
//!
//! The scan's series are split into contiguous id ranges, one per partition, so the
//! partitions decode in parallel and each emits its rows ordered by `(series_id,
//! timestamp)` — which it declares, so DataFusion does not sort again. A partition reads
//! its series a chunk at a time (blocks page-pruned by the pushed time range and series,
//! merged with the heads by precedence) and hands each chunk on as record batches before
//! reading the next, so memory follows the chunk, not the selection. Each chunk is reserved
//! in the session's memory pool while it is held and the samples budget is charged as
//! chunks arrive.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};

use crate::catalog::SeriesId;
use crate::storage::{Columns, Piece, Scan, SeriesPieces};

/// Most series read per step of a partition.
const CHUNK_SERIES: usize = 8192;
/// Most decoded bytes a partition reads per step.
const CHUNK_BYTES: usize = 32 << 20;
/// Bytes a sample takes in a chunk and its batches: series id, timestamp, value.
const BYTES_PER_SAMPLE: usize = 20;
/// Most partitions a decoded scan may declare (a plan's are the statement's target
/// partitions, a few per core).
const MAX_PARTITIONS: usize = 4096;
/// Rows per output batch built from small pieces.
const BATCH_ROWS: usize = 64 * 1024;
/// A piece at least this long is a batch of its own, its decoded columns passed on as they
/// are (DataFusion's default batch size).
const PASS_THROUGH_ROWS: usize = 8192;

/// What one scan of `samples` reads.
#[derive(Clone)]
pub struct ScanSpec {
    /// Series and time range to read (already narrowed by filters and enforced matchers).
    pub scan: Scan,
    /// The filters pushed into the scan, for EXPLAIN.
    pub pushed: Vec<String>,
    /// Samples all scans of the session may load, and how many they have (None: no limit).
    pub budget: Option<(usize, Arc<AtomicUsize>)>,
    /// Columns of `samples` to emit (indices into series_id, timestamp, value).
    pub projection: Vec<usize>,
    /// Rows each partition may stop after (a pushed-down LIMIT; DataFusion still limits).
    pub limit: Option<usize>,
}

pub struct SamplesScanExec {
    spec: ScanSpec,
    schema: SchemaRef,
    partitions: usize,
    /// Rows go out in storage order, only the projected columns decoded (see
    /// `storage::column_scan`): the projection declares no order and no two sources can
    /// hold the same sample.
    storage_order: bool,
    properties: Arc<PlanProperties>,
    /// A task of another process's plan: each series as `(the planner's id, this
    /// process's id)`, ascending by the planner's. SQL shows series ids, so rows go out
    /// under the planner's ids and in their order (the order the plan declares).
    remap: Option<Arc<Vec<(SeriesId, SeriesId)>>>,
}

impl SamplesScanExec {
    /// `full` is the table's schema; the scan emits `spec.projection` of it.
    pub fn new(spec: ScanSpec, full: SchemaRef, partitions: usize) -> DfResult<Self> {
        let partitions = partitions.clamp(1, spec.scan.num_series().max(1));
        Self::exactly(spec, full, partitions, None)
    }

    /// With `partitions` as given (a task's copy of a scan keeps the plan's partitions,
    /// however few series it reads).
    fn exactly(
        spec: ScanSpec,
        full: SchemaRef,
        partitions: usize,
        remap: Option<Arc<Vec<(SeriesId, SeriesId)>>>,
    ) -> DfResult<Self> {
        let schema = Arc::new(full.project(&spec.projection)?);
        let partitions = partitions.max(1);
        // Each partition is sorted by (series_id, timestamp) when both are emitted.
        let pos = |c: usize| spec.projection.iter().position(|&p| p == c);
        let mut eq = EquivalenceProperties::new(schema.clone());
        let ordered = pos(0).is_some() && pos(1).is_some();
        let storage_order = !ordered && spec.scan.sources_disjoint();
        if let (Some(sid), Some(ts)) = (pos(0), pos(1)) {
            let sort = |i: usize| {
                PhysicalSortExpr::new_default(
                    Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>
                )
            };
            if let Some(o) = LexOrdering::new(vec![sort(sid), sort(ts)]) {
                eq.add_ordering(o);
            }
        }
        let properties = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(SamplesScanExec {
            spec,
            schema,
            partitions,
            storage_order,
            properties: Arc::new(properties),
            remap,
        })
    }

    /// Slice `i` of `n`: a contiguous run of the scan's series, balanced by count, each
    /// series in exactly one slice. How the scan becomes one task per worker.
    pub(crate) fn slice(&self, i: usize, n: usize) -> DfResult<Self> {
        let len = self.spec.scan.num_series();
        let n = n.max(1);
        let (a, b) = (len * i.min(n) / n, len * (i + 1).min(n) / n);
        let spec = ScanSpec {
            scan: self.spec.scan.range(a..b),
            ..self.spec.clone()
        };
        Self::exactly(spec, super::tables::samples_schema(), self.partitions, None)
    }

    /// Series the scan reads.
    pub(crate) fn num_series(&self) -> usize {
        self.spec.scan.num_series()
    }
}

/// `SamplesScanExec` on the wire: what it reads and emits; the snapshot, the samples
/// budget and the memory pool are the decoding statement's. Series are named by their
/// labels' fingerprints under the encoding process's ids (`promql::series_ref`): catalog
/// ids differ between processes, the ids a statement shows must not.
#[derive(Clone, PartialEq, prost::Message)]
struct SamplesScanWire {
    #[prost(bytes = "vec", tag = "1")]
    series: Vec<u8>,
    #[prost(int64, tag = "2")]
    min_t: i64,
    #[prost(int64, tag = "3")]
    max_t: i64,
    #[prost(string, repeated, tag = "4")]
    pushed: Vec<String>,
    #[prost(uint32, repeated, tag = "5")]
    projection: Vec<u32>,
    #[prost(uint64, optional, tag = "6")]
    limit: Option<u64>,
    #[prost(uint32, tag = "7")]
    partitions: u32,
}

impl SamplesScanExec {
    pub(super) fn encode(&self, catalog: &crate::catalog::Catalog) -> DfResult<Vec<u8>> {
        use prost::Message;
        if self.remap.is_some() {
            // Its ids are this process's; the plan's are not at hand to name them by.
            return datafusion::common::internal_err!("a task's samples scan is not re-encoded");
        }
        let (min_t, max_t) = self.spec.scan.time_range();
        Ok(SamplesScanWire {
            series: crate::promql::series_ref::encode_ids(catalog, self.spec.scan.ids())?,
            min_t,
            max_t,
            pushed: self.spec.pushed.clone(),
            projection: self.spec.projection.iter().map(|&c| c as u32).collect(),
            limit: self.spec.limit.map(|l| l as u64),
            partitions: self.partitions as u32,
        }
        .encode_to_vec())
    }

    pub(super) fn decode(buf: &[u8], q: &super::codec::SqlCodec) -> DfResult<Self> {
        let w: SamplesScanWire = super::codec::decode_wire(buf, "SamplesScanExec")?;
        let series = crate::promql::series_ref::LeafSeries::decode(
            &w.series,
            &q.catalog(),
            q.allowed(),
            q.snapshot(),
            (w.min_t, w.max_t),
        )?;
        let remap = Arc::new(series.by_row());
        let projection: Vec<usize> = w.projection.into_iter().map(|c| c as usize).collect();
        if projection.iter().any(|&c| c > 2) {
            return datafusion::common::internal_err!("samples scan: projection {projection:?}");
        }
        let spec = ScanSpec {
            // As the `samples` table reads: whole-table analytics caches nothing.
            scan: series.scan.without_caching(),
            pushed: w.pushed,
            budget: q.budget(),
            projection,
            limit: w.limit.map(|l| l as usize),
        };
        // The plan's partitions, however many series this process holds of them.
        if w.partitions as usize > MAX_PARTITIONS {
            return datafusion::common::internal_err!(
                "samples scan with {} partitions",
                w.partitions
            );
        }
        let partitions = w.partitions as usize;
        SamplesScanExec::exactly(
            spec,
            super::tables::samples_schema(),
            partitions,
            Some(remap),
        )
    }
}

impl fmt::Debug for SamplesScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SamplesScanExec(partitions={})", self.partitions)
    }
}

impl DisplayAs for SamplesScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let cols: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let (min_t, max_t) = self.spec.scan.time_range();
        write!(
            f,
            "SamplesScanExec: series={}, blocks={}, time=[{}, {}], partitions={}, projection=[{}]",
            self.spec.scan.num_series(),
            self.spec.scan.num_blocks(),
            min_t,
            max_t,
            self.partitions,
            cols.join(", ")
        )?;
        if self.storage_order {
            write!(f, ", order=storage")?;
        }
        if !self.spec.pushed.is_empty() {
            write!(f, ", pushed=[{}]", self.spec.pushed.join(", "))?;
        }
        if let Some(l) = self.spec.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SamplesScanExec {
    fn name(&self) -> &str {
        "SamplesScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Estimated rows, so the planner builds joins on the small side (`series`) and not
    /// on `samples`.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        let scan = &self.spec.scan;
        let rows = scan.num_series().saturating_mul(scan.samples_per_series());
        Ok(super::estimated_rows(
            &self.schema,
            rows,
            self.partitions,
            args.partition(),
        ))
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let spec = self.spec.clone();
        let schema = self.schema.clone();
        // Chunks sized to a share of the memory pool: every partition holds one chunk (and
        // DataFusion's operators above need the rest).
        let pool = match ctx.memory_pool().memory_limit() {
            MemoryLimit::Finite(n) => n,
            _ => usize::MAX,
        };
        let chunk_bytes = (pool / (4 * self.partitions)).clamp(1 << 20, CHUNK_BYTES);
        let part = spec.scan.part(partition, self.partitions);
        let series = part.series_per_chunk(chunk_bytes / BYTES_PER_SAMPLE, CHUNK_SERIES);
        let chunks = match &self.remap {
            Some(remap) => remapped_chunks(
                &spec.scan,
                remap.clone(),
                (partition, self.partitions),
                series,
            ),
            None if self.storage_order => {
                return Ok(storage_order_stream(
                    spec, schema, part, series, ctx, partition,
                ));
            }
            None => part.piece_chunks(series).boxed(),
        };
        // Each chunk is reserved in the pool while its batches are alive downstream of the
        // scan's own buffer; a pool too small for one chunk fails the query, not the process.
        let reservation = Arc::new(parking_lot::Mutex::new(
            MemoryConsumer::new(format!("SamplesScanExec[{partition}]"))
                .register(ctx.memory_pool()),
        ));
        let emitted = Arc::new(AtomicUsize::new(0));
        let limit = spec.limit;
        let seen = emitted.clone();
        let stream = chunks
            // A pushed-down LIMIT: stop reading once this partition has emitted enough.
            .take_while(move |_| {
                let more = limit.is_none_or(|l| seen.load(Ordering::Relaxed) < l);
                async move { more }
            })
            .map(move |chunk| {
                let chunk = chunk.map_err(|e| DataFusionError::External(Box::new(e)))?;
                let n: usize = chunk.iter().map(SeriesPieces::len).sum();
                charge(&spec, &reservation.lock(), &emitted, n)?;
                to_batches(&spec, &schema, chunk)
            })
            .map(|r| match r {
                Ok(batches) => futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// Partition `p` of `n` of a task's scan: its share of `remap` (contiguous in the
/// planner's ids), read `series` at a time in this process's ids and handed on under the
/// planner's ids, in their order.
fn remapped_chunks(
    scan: &Scan,
    remap: Arc<Vec<(SeriesId, SeriesId)>>,
    (p, n): (usize, usize),
    series: usize,
) -> futures::stream::BoxStream<'static, Result<Vec<SeriesPieces>, crate::storage::StorageError>> {
    let len = remap.len();
    let (a, b) = (len * p / n, len * (p + 1) / n);
    let scan = scan.clone();
    let starts: Vec<usize> = (a..b).step_by(series.max(1)).collect();
    futures::stream::iter(starts)
        .then(move |s| {
            let (scan, remap) = (scan.clone(), remap.clone());
            async move {
                let mut here: Vec<(SeriesId, SeriesId)> = remap[s..(s + series).min(b)]
                    .iter()
                    .map(|&(planned, local)| (local, planned))
                    .collect();
                here.sort_unstable();
                let ids: Vec<SeriesId> = here.iter().map(|&(local, _)| local).collect();
                let mut pieces = scan.read_ids(&ids).await?;
                for s in &mut pieces {
                    let at = here.partition_point(|&(local, _)| local < s.id);
                    s.id = here[at].1;
                }
                pieces.sort_unstable_by_key(|s| s.id);
                Ok(pieces)
            }
        })
        .boxed()
}

/// Accounts `rows` samples just read by a partition: charged to the session's samples
/// budget (refused past it), held in the memory pool (the partition's reservation is
/// resized to them), and counted toward a pushed-down LIMIT.
fn charge(
    spec: &ScanSpec,
    reservation: &MemoryReservation,
    emitted: &AtomicUsize,
    rows: usize,
) -> DfResult<()> {
    if let Some((max, used)) = &spec.budget {
        let total = used.fetch_add(rows, Ordering::Relaxed) + rows;
        if total > *max {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query reads more than {max} samples (--query-max-samples); narrow it by timestamp or series_id"
            )));
        }
    }
    reservation.try_resize(rows * BYTES_PER_SAMPLE)?;
    emitted.fetch_add(rows, Ordering::Relaxed);
    Ok(())
}

/// A partition in storage order: each decoded batch handed on with the projected columns,
/// charged to the samples budget and reserved in the pool as it arrives.
fn storage_order_stream(
    spec: ScanSpec,
    schema: SchemaRef,
    part: Scan,
    series: usize,
    ctx: Arc<TaskContext>,
    partition: usize,
) -> SendableRecordBatchStream {
    let has = |c: usize| spec.projection.contains(&c);
    let cols = Columns {
        series_id: has(0),
        timestamp: has(1),
        value: has(2),
    };
    let reservation = parking_lot::Mutex::new(
        MemoryConsumer::new(format!("SamplesScanExec[{partition}]")).register(ctx.memory_pool()),
    );
    let emitted = Arc::new(AtomicUsize::new(0));
    let (limit, seen) = (spec.limit, emitted.clone());
    let out_schema = schema.clone();
    let stream = part
        .column_batches(cols, series)
        .take_while(move |_| {
            let more = limit.is_none_or(|l| seen.load(Ordering::Relaxed) < l);
            async move { more }
        })
        .map(move |b| {
            let b = b.map_err(|e| DataFusionError::External(Box::new(e)))?;
            charge(&spec, &reservation.lock(), &emitted, b.rows)?;
            let column = |c: usize| {
                match c {
                    0 => b.series_id.clone(),
                    1 => b.timestamp.clone(),
                    _ => b.value.clone(),
                }
                .expect("decoded because projected")
            };
            let projected: Vec<_> = spec.projection.iter().map(|&c| column(c)).collect();
            let options =
                datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(b.rows));
            Ok(RecordBatch::try_new_with_options(
                out_schema.clone(),
                projected,
                &options,
            )?)
        });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Turns one chunk of series (ascending ids) into batches: a long piece goes out as its
/// decoded columns (no copy), short ones are copied together into batches of up to
/// `BATCH_ROWS` rows; only the projected columns are built.
fn to_batches(
    spec: &ScanSpec,
    schema: &SchemaRef,
    series: Vec<SeriesPieces>,
) -> DfResult<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut pending: Vec<(SeriesId, Piece)> = Vec::new();
    let mut rows = 0;
    for s in series {
        for p in s.pieces {
            if p.len() >= PASS_THROUGH_ROWS {
                if !pending.is_empty() {
                    out.push(batch(spec, schema, &std::mem::take(&mut pending), rows)?);
                    rows = 0;
                }
                let n = p.len();
                out.push(batch(spec, schema, &[(s.id, p)], n)?);
                continue;
            }
            rows += p.len();
            pending.push((s.id, p));
            if rows >= BATCH_ROWS {
                out.push(batch(spec, schema, &std::mem::take(&mut pending), rows)?);
                rows = 0;
            }
        }
    }
    if !pending.is_empty() {
        out.push(batch(spec, schema, &pending, rows)?);
    }
    Ok(out)
}

/// One batch of the projected columns of `pieces` (`rows` samples in all).
fn batch(
    spec: &ScanSpec,
    schema: &SchemaRef,
    pieces: &[(SeriesId, Piece)],
    rows: usize,
) -> DfResult<RecordBatch> {
    let column = |c: usize| -> datafusion::arrow::array::ArrayRef {
        match (c, pieces) {
            (1, [(_, p)]) => Arc::new(Int64Array::new(p.ts.clone(), None)),
            (2, [(_, p)]) => Arc::new(Float64Array::new(p.vals.clone(), None)),
            (0, _) => {
                let mut v = Vec::with_capacity(rows);
                for (id, p) in pieces {
                    v.extend(std::iter::repeat_n(*id, p.len()));
                }
                Arc::new(UInt32Array::from(v))
            }
            (1, _) => {
                let mut v = Vec::with_capacity(rows);
                for (_, p) in pieces {
                    v.extend_from_slice(&p.ts);
                }
                Arc::new(Int64Array::from(v))
            }
            _ => {
                let mut v = Vec::with_capacity(rows);
                for (_, p) in pieces {
                    v.extend_from_slice(&p.vals);
                }
                Arc::new(Float64Array::from(v))
            }
        }
    };
    let projected: Vec<_> = spec.projection.iter().map(|&c| column(c)).collect();
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        projected,
        &options,
    )?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{
        DataType, Field, Float64Type, Int64Type, Schema, UInt32Type,
    };
    use roaring::RoaringBitmap;

    use super::*;
    use crate::storage::Storage;

    /// A decoded scan keeps the plan's partitions and columns only within bounds: a plan
    /// that declares more partitions than a statement plans, or a column `samples` lacks,
    /// is refused rather than built.
    #[tokio::test]
    async fn decoding_refuses_oversized_or_unknown_scans() {
        use prost::Message;
        let storage = Storage::in_memory().await.unwrap();
        let codec = super::super::codec::SqlCodec::new(&storage, None, Default::default());
        let series = crate::promql::series_ref::encode_ids(storage.catalog(), &[]).unwrap();
        let wire = |partitions: u32, projection: Vec<u32>| {
            SamplesScanWire {
                series: series.clone(),
                min_t: 0,
                max_t: 1,
                pushed: vec![],
                projection,
                limit: None,
                partitions,
            }
            .encode_to_vec()
        };
        assert!(SamplesScanExec::decode(&wire(4, vec![0, 1, 2]), &codec).is_ok());
        let refused = |buf: Vec<u8>| SamplesScanExec::decode(&buf, &codec).err();
        assert!(refused(wire(MAX_PARTITIONS as u32 + 1, vec![0])).is_some());
        assert!(refused(wire(2, vec![0, 3])).is_some());
    }

    /// Long pieces pass through as they are, short ones are copied together; either way
    /// the rows, their order and the projection are those of the pieces.
    #[tokio::test]
    async fn batches_hold_the_pieces_in_order_for_every_projection() {
        let storage = Storage::in_memory().await.unwrap();
        let piece = |start: i64, n: usize| {
            let ts: Vec<i64> = (0..n as i64).map(|i| start + i).collect();
            let vals = ts.iter().map(|&t| t as f64 * 0.5).collect();
            Piece::new(ts, vals)
        };
        let series = vec![
            SeriesPieces {
                id: 1,
                pieces: vec![piece(0, 10), piece(10, PASS_THROUGH_ROWS)],
            },
            SeriesPieces {
                id: 2,
                pieces: vec![piece(0, 3)],
            },
            SeriesPieces {
                id: 5,
                pieces: vec![piece(100, BATCH_ROWS), piece(200_000, 7)],
            },
        ];
        let mut want: Vec<(u32, i64, f64)> = Vec::new();
        for s in &series {
            for p in &s.pieces {
                want.extend(p.ts.iter().zip(p.vals.iter()).map(|(&t, &v)| (s.id, t, v)));
            }
        }
        let full = Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::UInt32, false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]));
        for projection in [vec![0, 1, 2], vec![2], vec![1, 0], vec![]] {
            let spec = ScanSpec {
                scan: storage.scan(&RoaringBitmap::new(), 0, 1),
                pushed: vec![],
                budget: None,
                projection: projection.clone(),
                limit: None,
            };
            let schema = Arc::new(full.project(&projection).unwrap());
            let batches = to_batches(&spec, &schema, series.clone()).unwrap();
            assert!(
                batches.len() >= 3,
                "pass-through pieces are batches of their own"
            );
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            assert_eq!(rows, want.len());
            let mut at = 0;
            for b in &batches {
                for (i, &c) in projection.iter().enumerate() {
                    let col = b.column(i);
                    for r in 0..b.num_rows() {
                        let (id, t, v) = want[at + r];
                        match c {
                            0 => assert_eq!(col.as_primitive::<UInt32Type>().value(r), id),
                            1 => assert_eq!(col.as_primitive::<Int64Type>().value(r), t),
                            _ => assert_eq!(col.as_primitive::<Float64Type>().value(r), v),
                        }
                    }
                }
                at += b.num_rows();
            }
        }
    }
}
