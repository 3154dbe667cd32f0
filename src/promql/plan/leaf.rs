//! What the planner's leaves share: a logical node and an operator over the query's
//! storage snapshot, one output partition per contiguous series-id range, each streaming
//! its part a chunk of series at a time and charging the samples read against the
//! query's one limit as each chunk arrives. A [`LeafSource`] says what is read and how a
//! chunk of series becomes rows ([`super::vector_select`], [`super::range_fn`]).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    Expr as DfExpr, Extension, LogicalPlan, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use futures::future::Either;

use super::identity_node;
use super::series_ref::LeafSeries;
use super::{PlanCtx, df_error, external, rows_schema};
use crate::promql::error::PromqlError;
use crate::storage::{PendingSeries, Scan, SeriesPieces, SeriesRun};

/// A leaf's reading and computing.
pub(crate) trait LeafSource: Send + Sync + 'static {
    /// The node's name in plans (`VectorSelect`, `RangeFnSelect`; the operator adds `Exec`).
    fn name(&self) -> &'static str;
    /// The expression as written, for plans.
    fn text(&self) -> &str;
    /// The selected series over the samples any step reads, and the row each becomes.
    fn series(&self) -> &LeafSeries;
    /// The scan of [`LeafSource::series`].
    fn scan(&self) -> &Scan {
        &self.series().scan
    }
    fn steps(&self) -> usize;
    /// The window each step reads of a series, in ms (0: a step reads one sample).
    fn window_ms(&self) -> i64 {
        0
    }
    /// `(series, step, value)` rows of one chunk of series.
    fn rows(&self, chunk: &[SeriesRun]) -> DfResult<RecordBatch>;
    /// Its wire form (the plan codec); the decoder is registered in `codec.rs`.
    fn encode(&self) -> DfResult<Vec<u8>>;
    /// The same source over other series (a slice of its own).
    fn with_series(&self, series: LeafSeries) -> Arc<dyn LeafSource>;
}

/// The query's sample limit, charged by every leaf of its plans.
#[derive(Clone)]
pub(super) struct Budget {
    charged: Arc<AtomicUsize>,
    max_samples: usize,
    cancel: crate::promql::Cancel,
    /// A task of another process's plan: where its annotations are collected, to hand
    /// back with the samples read ([`super::report`]).
    report: Option<crate::promql::kernels::annotations::Annotator>,
}

impl Budget {
    /// The most samples the query may read.
    pub(super) fn max_samples(&self) -> usize {
        self.max_samples
    }

    /// The limit of `scope`'s query, charged to its counter.
    pub(super) fn of(scope: &crate::promql::scope::QueryScope) -> Budget {
        Budget {
            charged: scope.charged.clone(),
            max_samples: scope.max_samples,
            cancel: scope.cancel.clone(),
            report: scope.report.then(|| scope.annotator.clone()),
        }
    }
}

/// What reading one series costs beyond its samples, in samples: at least one cached frame
/// (128 samples) is decoded per series and block however few of its samples are asked
/// for, and its id is looked up in each block and its row in the series table. An instant
/// query reads a few samples a series but pays this.
const SERIES_WORK: usize = 256;

/// The logical node.
#[derive(Clone)]
pub(crate) struct Leaf {
    source: Arc<dyn LeafSource>,
    budget: Budget,
    schema: DFSchemaRef,
}

impl Leaf {
    pub(super) fn plan_node(
        p: &PlanCtx,
        source: impl LeafSource,
    ) -> Result<LogicalPlan, PromqlError> {
        let leaf = Leaf {
            source: Arc::new(source),
            budget: Budget {
                charged: p.charged.clone(),
                max_samples: p.engine.opts.max_samples,
                cancel: p.engine.opts.cancel.clone(),
                report: None,
            },
            schema: Arc::new(DFSchema::try_from(rows_schema().as_ref().clone()).map_err(df_error)?),
        };
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(leaf),
        }))
    }

    /// The work of this leaf, estimated without reading, in samples: the samples its
    /// scan reads (from the blocks' metadata and the heads), [`SERIES_WORK`] per series,
    /// and per row it yields (one per series and step) the samples of its window. Only
    /// counted up to `cap` (the answer is then at least `cap`): the sample estimate
    /// costs a pass over the scan's series, which a large leaf need not pay.
    pub(super) fn work(&self, cap: usize) -> usize {
        let scan = self.source.scan();
        let n = scan.num_series();
        let rows = n.saturating_mul(self.source.steps());
        let fixed = rows.saturating_add(n.saturating_mul(SERIES_WORK));
        if fixed >= cap || n == 0 {
            return fixed;
        }
        let samples = scan.estimated_samples();
        let (min_t, max_t) = scan.time_range();
        let span = (max_t - min_t).max(1) as f64;
        let per_window = samples as f64 / n as f64 * (self.source.window_ms() as f64 / span);
        let visits = (rows as f64 * per_window).min(usize::MAX as f64) as usize;
        fixed.saturating_add(samples).saturating_add(visits)
    }

    pub(super) fn plan(&self, partitions: usize) -> Arc<dyn ExecutionPlan> {
        Arc::new(LeafExec::new(
            self.source.clone(),
            self.budget.clone(),
            partitions,
        ))
    }
}

// Compared and hashed by identity: each is made once per query.
identity_node!(Leaf, source);

impl UserDefinedLogicalNodeCore for Leaf {
    fn name(&self) -> &str {
        self.source.name()
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<DfExpr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.source;
        write!(
            f,
            "{}: {}, series={}, steps={}",
            s.name(),
            s.text(),
            s.scan().num_series(),
            s.steps()
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<DfExpr>,
        _inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        Ok(self.clone())
    }
}

/// The operator: one partition per contiguous series-id range of the scan.
pub(crate) struct LeafExec {
    pub(super) source: Arc<dyn LeafSource>,
    budget: Budget,
    pub(super) partitions: usize,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl LeafExec {
    pub(super) fn new(source: Arc<dyn LeafSource>, budget: Budget, partitions: usize) -> Self {
        let partitions = partitions.clamp(1, source.scan().num_series().max(1));
        Self::exactly(source, budget, partitions)
    }

    /// Task `i` of the tasks whose shares are `weights`: its slice of the series
    /// ([`LeafSeries::slice`]) with exactly this leaf's partitions (every task of a stage
    /// must declare the same; a part without series yields nothing).
    pub(crate) fn slice(&self, i: usize, weights: &[f64]) -> LeafExec {
        let series = self.source.series().slice(i, weights);
        Self::exactly(
            self.source.with_series(series),
            self.budget.clone(),
            self.partitions,
        )
    }

    /// With `partitions` as given (at least 1).
    pub(super) fn exactly(source: Arc<dyn LeafSource>, budget: Budget, partitions: usize) -> Self {
        let partitions = partitions.max(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(rows_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        LeafExec {
            source,
            budget,
            partitions,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl fmt::Debug for LeafExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}Exec({})", self.source.name(), self.source.text())
    }
}

impl DisplayAs for LeafExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.source;
        write!(
            f,
            "{}Exec: {}, series={}, blocks={}, steps={}, partitions={}",
            s.name(),
            s.text(),
            s.scan().num_series(),
            s.scan().num_blocks(),
            s.steps(),
            self.partitions
        )
    }
}

/// Partition `partition`'s share of a leaf's series on a process with `cores` cores: at
/// most one partition per core reads series. A task of a distributed plan declares the
/// coordinator's partitions (at least two, so that stages cut at repartitions); on a
/// one-core querier its series all go to its first partition and the others yield
/// nothing, instead of two partitions taking turns on the core (session 21: two queriers
/// on one core each answered 1.37-1.42x as fast as one alone with two leaf partitions
/// per task, 1.51-1.53x with one; docs/benchmarks.md).
fn leaf_part(scan: &Scan, partition: usize, partitions: usize, cores: usize) -> Scan {
    scan.part(partition, partitions.min(cores).max(1))
}

/// Series per chunk at most, samples read per chunk about (32 MB were they decoded at
/// once; they are decoded in groups of [`DECODE_SAMPLES`]), and rows out per chunk at most
/// (series × steps; 48 MB). 2M samples, not 4M (session 22): the peer set's cold pass
/// peaked 10–30 MiB lower and ran 2–4 % faster, its warm cells the same (`ab.py`).
const CHUNK: usize = 4096;
const CHUNK_SAMPLES: usize = 2 << 20;
const CHUNK_ROWS: usize = 4 << 20;
/// Samples decoded at once, about (4 MB): a chunk's series are decoded and computed a group
/// at a time, so what the kernels read is what was just written, still in the cache.
const DECODE_SAMPLES: usize = 256 << 10;

/// `items` in order, in groups whose `bound`s sum to about `target`: each group closes at
/// the item that reaches it, so every group holds at least one item.
fn groups_of<T>(items: Vec<T>, bound: impl Fn(&T) -> usize, target: usize) -> Vec<Vec<T>> {
    let mut groups = Vec::new();
    let (mut group, mut sum) = (Vec::new(), 0);
    for item in items {
        sum += bound(&item);
        group.push(item);
        if sum >= target {
            groups.push(std::mem::take(&mut group));
            sum = 0;
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

impl ExecutionPlan for LeafExec {
    fn name(&self) -> &str {
        "LeafExec"
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
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
        _ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let (source, budget) = (self.source.clone(), self.budget.clone());
        let part = leaf_part(
            source.scan(),
            partition,
            self.partitions,
            crate::cores::cores(),
        );
        // Each chunk read has a fixed cost (a pass over the blocks' row groups), so an
        // instant query reads its part in one or two chunks, not dozens.
        let max_series = (CHUNK_ROWS / source.steps().max(1)).clamp(1, CHUNK);
        let series = part.series_per_chunk(CHUNK_SAMPLES, max_series);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let read = Arc::new(AtomicUsize::new(0));
        // From the stream's first poll (its first chunk's reads included) to its end: the
        // task's pace, for the next plan's split ([`super::pace`]).
        let started: Arc<OnceLock<Instant>> = Arc::default();
        let report = budget.report.clone().map(|a| {
            let (metrics, read, started) = (self.metrics.clone(), read.clone(), started.clone());
            move || {
                let wall = started.get().map_or(0, |t| t.elapsed().as_micros() as u64);
                let work = super::pace::TaskWork {
                    samples: read.load(Ordering::Relaxed) as u64,
                    wall_us: wall,
                };
                super::report::report(&metrics, partition, &a, work)
            }
        });
        let running = budget.report.is_some().then(super::report::Running::start);
        let stream = part.pending_chunks(series).flat_map(move |chunk| {
            let _running = &running;
            let groups = match chunk {
                Ok(chunk) => groups_of(chunk, PendingSeries::bound, DECODE_SAMPLES),
                Err(e) => {
                    return Either::Left(futures::stream::once(async move {
                        Err(external(PromqlError::Storage(e)))
                    }));
                }
            };
            let (source, budget, read, baseline) = (
                source.clone(),
                budget.clone(),
                read.clone(),
                baseline.clone(),
            );
            Either::Right(futures::stream::iter(groups.into_iter().map(
                move |group| {
                    let _timer = baseline.elapsed_compute().timer();
                    let chunk: Vec<SeriesRun> = group
                        .into_iter()
                        .map(|s| s.into_pieces())
                        .filter(|s| !s.pieces.is_empty())
                        .map(SeriesPieces::into_run)
                        .collect();
                    let n: usize = chunk.iter().map(SeriesRun::len).sum();
                    read.fetch_add(n, Ordering::Relaxed);
                    if budget.charged.fetch_add(n, Ordering::Relaxed) + n > budget.max_samples {
                        return Err(external(PromqlError::TooManySamples));
                    }
                    budget.cancel.check().map_err(external)?;
                    let rows = source.rows(&chunk)?;
                    baseline.record_output(rows.num_rows());
                    Ok(rows)
                },
            )))
        });
        let clock = futures::stream::once(async move {
            started.get_or_init(Instant::now);
        })
        .filter_map(|()| async { None::<DfResult<RecordBatch>> });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            rows_schema(),
            super::report::then(clock.chain(stream), report),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::{groups_of, leaf_part};
    use crate::model::Matcher;
    use crate::storage::{Storage, WriteWindow, m_batch};

    /// Fewer cores than partitions: the first `cores` partitions read every series once
    /// between them, the rest read nothing.
    #[tokio::test]
    async fn partitions_beyond_the_cores_read_nothing_and_none_is_lost() {
        let s = Storage::in_memory().await.unwrap();
        let t0 = s.now_ms() - 3_600_000;
        let batch = m_batch(0..40, (0..20).map(|k| (t0 + k * 1_000, k as f64)).collect());
        s.append(batch, WriteWindow::Backfill).await.unwrap();
        s.flush().await.unwrap();
        let ids = s.catalog().select(&[Matcher::equal("__name__", "m")]);
        let scan = s.scan(&ids, i64::MIN, i64::MAX);
        for (partitions, cores) in [(4, 1), (4, 2), (4, 3), (2, 1), (3, 8)] {
            let mut seen = Vec::new();
            for p in 0..partitions {
                let part = leaf_part(&scan, p, partitions, cores);
                if p >= cores {
                    assert_eq!(
                        part.num_series(),
                        0,
                        "partition {p} of {partitions}, {cores} cores"
                    );
                }
                seen.extend(part.ids().iter().copied());
            }
            seen.sort_unstable();
            let whole = scan.ids().to_vec();
            assert_eq!(seen, whole, "{partitions} partitions on {cores} cores");
        }
    }

    #[test]
    fn groups_close_at_the_item_that_reaches_the_target() {
        let g = groups_of(vec![3, 3, 3, 10, 1, 1], |&x| x, 6);
        assert_eq!(g, vec![vec![3, 3], vec![3, 10], vec![1, 1]]);
        // An item above the target is a group of its own; nothing is lost or reordered.
        assert_eq!(groups_of(vec![9, 9], |&x| x, 4), vec![vec![9], vec![9]]);
        assert!(groups_of(Vec::<usize>::new(), |&x| x, 4).is_empty());
    }
}
