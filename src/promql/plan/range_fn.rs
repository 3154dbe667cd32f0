//! A range function of a matrix selector — `rate(x[5m])`, `avg_over_time(x[1h])`, … (the
//! functions `range_fns::RangeFn::fusable` lists) — per series and step.
//!
//! A leaf like [`super::vector_select`]: the selected series (their labels without
//! `__name__`) are the series table; each partition streams its series-id range of the
//! query's snapshot a chunk at a time through the same window kernels as the evaluator
//! (`compute_chunk`), charging samples as chunks arrive. Selections whose series
//! collide once `__name__` is dropped are left to the evaluator, which reports the
//! collision only where both have a value.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Float64Array, RecordBatch, UInt32Array};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    Expr as DfExpr, Extension, LogicalPlan, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use promql_parser::parser::{Call, Expr};

use super::{Lowered, PlanCtx, df_error, external, ptr_cmp, rows_schema};
use crate::catalog::SeriesId;
use crate::model::Labels;
use crate::promql::error::PromqlError;
use crate::promql::eval::{drop_name, duration_ms};
use crate::promql::functions::window_value;
use crate::promql::range_fns as rf;
use crate::promql::range_fns::RangeFn;
use crate::promql::selector::{at_ms, eval_times, matcher_sets, offset_ms};
use crate::storage::{Scan, SeriesRun};

/// The logical node: a leaf with the rows schema.
#[derive(Clone)]
pub(crate) struct RangeFnSelect {
    scan: Arc<RangeScan>,
    text: String,
    schema: DFSchemaRef,
}

/// Lowers `f(selector[range])`, or `None` when the call is not such a function.
pub(super) fn lower(p: &PlanCtx, call: &Call) -> Result<Option<Lowered>, PromqlError> {
    let Some(function) = RangeFn::parse(call.func.name).filter(|f| f.fusable()) else {
        return Ok(None);
    };
    let [arg] = call.args.args.as_slice() else {
        return Ok(None);
    };
    let mut arg = &**arg;
    while let Expr::Paren(inner) = arg {
        arg = &inner.expr;
    }
    let Expr::MatrixSelector(ms) = arg else {
        return Ok(None);
    };
    let (engine, ctx) = (p.engine, &p.ctx);
    let vs = &ms.vs;
    let ends = eval_times(ctx, at_ms(&vs.at, ctx), offset_ms(&vs.offset));
    let lo = ends.iter().copied().min().unwrap_or(0);
    let hi = ends.iter().copied().max().unwrap_or(0);
    let range_ms = duration_ms(ms.range);
    let catalog = engine.storage.catalog();
    let mut ids = roaring::RoaringBitmap::new();
    for set in matcher_sets(vs)? {
        ids |= catalog.select(&set);
    }
    engine.scope(&mut ids);
    let scan = engine
        .snapshot()
        .scan(&ids, lo.saturating_sub(range_ms).saturating_add(1), hi);
    let mut series: Vec<Arc<Labels>> = Vec::with_capacity(scan.num_series());
    let mut index: HashMap<u32, u32> = HashMap::with_capacity(scan.num_series());
    let mut seen = std::collections::HashSet::new();
    let mut names = std::collections::BTreeSet::new();
    for (&id, l) in scan
        .ids()
        .iter()
        .zip(catalog.labels_many(scan.ids().iter().copied()))
    {
        // Removed by retention since it was selected: nothing to read.
        let Some(l) = l else { continue };
        names.insert(l.metric_name().unwrap_or("").to_string());
        let unnamed = drop_name(&l);
        if !seen.insert(unnamed.clone()) {
            return Ok(None);
        }
        index.insert(id, series.len() as u32);
        series.push(unnamed);
    }
    if matches!(function, RangeFn::Rate | RangeFn::Increase) {
        // As the evaluator words it, once per name.
        for m in names.iter().filter(|m| {
            !["_total", "_sum", "_count", "_bucket"]
                .iter()
                .any(|suf| m.ends_with(suf))
        }) {
            engine.info(format!(
                "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {m:?}"
            ));
        }
    }
    let scan = RangeScan {
        scan,
        function,
        group_of: Arc::new(index),
        ends: Arc::new(ends),
        range_ms,
        times: Arc::new(ctx.steps.iter().collect()),
        charged: p.charged.clone(),
        max_samples: engine.opts.max_samples,
        cancel: engine.opts.cancel.clone(),
    };
    let node = RangeFnSelect {
        scan: Arc::new(scan),
        text: format!("{}({})", call.func.name, ms),
        schema: Arc::new(DFSchema::try_from(rows_schema().as_ref().clone()).map_err(df_error)?),
    };
    Ok(Some(Lowered {
        plan: LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }),
        series,
    }))
}

impl fmt::Debug for RangeFnSelect {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        UserDefinedLogicalNodeCore::fmt_for_explain(self, f)
    }
}

impl PartialEq for RangeFnSelect {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.scan, &other.scan)
    }
}

impl Eq for RangeFnSelect {}

impl PartialOrd for RangeFnSelect {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(ptr_cmp(&self.scan, &other.scan))
    }
}

impl Hash for RangeFnSelect {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.scan) as usize).hash(state);
    }
}

impl UserDefinedLogicalNodeCore for RangeFnSelect {
    fn name(&self) -> &str {
        "RangeFnSelect"
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
        write!(
            f,
            "RangeFnSelect: {}, series={}, steps={}",
            self.text,
            self.scan.group_of.len(),
            self.scan.ends.len()
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

impl RangeFnSelect {
    pub(super) fn plan(&self, partitions: usize) -> Arc<dyn ExecutionPlan> {
        Arc::new(RangeFnSelectExec::new(
            self.scan.clone(),
            self.text.clone(),
            partitions,
        ))
    }
}

/// The operator: one partition per contiguous series-id range.
pub(crate) struct RangeFnSelectExec {
    scan: Arc<RangeScan>,
    text: String,
    partitions: usize,
    properties: Arc<PlanProperties>,
}

impl RangeFnSelectExec {
    fn new(scan: Arc<RangeScan>, text: String, partitions: usize) -> Self {
        let partitions = partitions.clamp(1, scan.scan.num_series().max(1));
        let properties = PlanProperties::new(
            EquivalenceProperties::new(rows_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        RangeFnSelectExec {
            scan,
            text,
            partitions,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for RangeFnSelectExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RangeFnSelectExec({})", self.text)
    }
}

impl DisplayAs for RangeFnSelectExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RangeFnSelectExec: {}, series={}, blocks={}, steps={}, partitions={}",
            self.text,
            self.scan.scan.num_series(),
            self.scan.scan.num_blocks(),
            self.scan.ends.len(),
            self.partitions
        )
    }
}

/// Series per chunk at most, samples read per chunk about, and rows out per chunk at most.
const CHUNK: usize = 4096;
const CHUNK_SAMPLES: usize = 4 << 20;
const CHUNK_ROWS: usize = 4 << 20;

impl ExecutionPlan for RangeFnSelectExec {
    fn name(&self) -> &str {
        "RangeFnSelectExec"
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
        let scan = self.scan.clone();
        let part = scan.scan.part(partition, self.partitions);
        let max_series = (CHUNK_ROWS / scan.ends.len().max(1)).clamp(1, CHUNK);
        let series = part.series_per_chunk(CHUNK_SAMPLES, max_series);
        let stream = part.chunks(series).map(move |chunk| {
            let chunk = chunk.map_err(|e| external(PromqlError::Storage(e)))?;
            let n: usize = chunk.iter().map(SeriesRun::len).sum();
            if scan.charged.fetch_add(n, Ordering::Relaxed) + n > scan.max_samples {
                return Err(external(PromqlError::TooManySamples));
            }
            compute_chunk(&scan, &chunk)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            rows_schema(),
            stream,
        )))
    }
}

/// What one range-function scan needs.
#[derive(Clone)]
pub(crate) struct RangeScan {
    /// The selected series over the widest window of any step.
    pub scan: Scan,
    pub function: RangeFn,
    /// Index in the series table of each selected series.
    pub group_of: Arc<HashMap<SeriesId, u32>>,
    /// Window end of every step, and the window length.
    pub ends: Arc<Vec<i64>>,
    pub range_ms: i64,
    /// Evaluation time of every step (for functions that need it).
    pub times: Arc<Vec<i64>>,
    /// Samples read so far by all partitions, charged against `max_samples` per chunk.
    pub charged: Arc<AtomicUsize>,
    /// Deadline and cancellation of the query, checked in the window loops.
    pub cancel: crate::promql::Cancel,
    /// The query's sample limit.
    pub max_samples: usize,
}

fn compute_chunk(scan: &RangeScan, series: &[SeriesRun]) -> DfResult<RecordBatch> {
    let (mut series_col, mut step, mut val) = (Vec::new(), Vec::new(), Vec::new());
    for s in series.iter() {
        let Some(&g) = scan.group_of.get(&s.id) else {
            continue;
        };
        // Range windows never see stale markers; copy only the series that have any.
        let filtered: (Vec<i64>, Vec<f64>);
        let (ts, vals): (&[i64], &[f64]) =
            if s.vals.iter().any(|v| crate::model::is_stale_marker(*v)) {
                filtered =
                    s.ts.iter()
                        .zip(&s.vals)
                        .filter(|(_, v)| !crate::model::is_stale_marker(**v))
                        .map(|(t, v)| (*t, *v))
                        .unzip();
                (&filtered.0, &filtered.1)
            } else {
                (&s.ts, &s.vals)
            };
        rf::for_each_window(
            scan.function,
            ts,
            vals,
            &scan.ends,
            scan.range_ms,
            || scan.cancel.check().is_ok(),
            |i, w| {
                if let Some(v) = window_value(scan.function, w, f64::NAN, f64::NAN, scan.times[i]) {
                    series_col.push(g);
                    step.push(i as u32);
                    val.push(v);
                }
            },
        );
    }
    // A cancelled query's windows stopped early: never hand on partial sums.
    scan.cancel.check().map_err(external)?;
    Ok(RecordBatch::try_new(
        rows_schema(),
        vec![
            Arc::new(UInt32Array::from(series_col)),
            Arc::new(UInt32Array::from(step)),
            Arc::new(Float64Array::from(val)),
        ],
    )?)
}
