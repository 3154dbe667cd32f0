//! `aggregation(range_function(selector))` as one DataFusion plan.
//!
//! `RangeFnExec` is a leaf operator with one output partition per series-id range: each
//! partition streams its part of the storage scan chunk by chunk and turns every chunk into
//! one batch of `(grp, step, value)` rows of the range function, so only a chunk of samples
//! per partition is in memory at a time. DataFusion's own hash aggregation (partial per
//! partition, repartition by group, final) then sums, counts or averages per `(grp, step)`, so
//! per-series rows never accumulate in memory and both cores work. The evaluator uses this
//! path for `sum`/`count`/`avg`/`group` over rate-style functions of a plain matrix selector;
//! everything else is evaluated directly.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, Float64Array, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::Expr as DfExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, displayable,
};
use datafusion::prelude::{SessionConfig, SessionContext, col};

use super::functions::window_value;
use super::range_fns::{self as rf, RangeFn};
use crate::catalog::SeriesId;
use crate::storage::{Scan, SeriesRun};

/// Aggregations DataFusion computes with Prometheus's semantics for finite inputs.
pub(super) fn supported_aggregation(op: &str) -> bool {
    matches!(op, "sum" | "count" | "avg" | "group")
}

fn row_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("grp", DataType::UInt32, false),
        Field::new("step", DataType::UInt32, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// What one range-function scan needs.
#[derive(Clone)]
pub(super) struct RangeScan {
    /// The selected series over the widest window of any step.
    pub scan: Scan,
    pub function: RangeFn,
    /// Aggregation group of each series.
    pub group_of: Arc<HashMap<SeriesId, u32>>,
    /// Window end of every step, and the window length.
    pub ends: Arc<Vec<i64>>,
    pub range_ms: i64,
    /// Evaluation time of every step (for functions that need it).
    pub times: Arc<Vec<i64>>,
    /// Samples read so far by all partitions, charged against `max_samples` per chunk.
    pub charged: Arc<AtomicUsize>,
    /// Deadline and cancellation of the query, checked in the window loops.
    pub cancel: super::Cancel,
    /// The query's sample limit.
    pub max_samples: usize,
}

/// Leaf operator: range function per series and step, sharded by series id.
pub struct RangeFnExec {
    scan: RangeScan,
    partitions: usize,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for RangeFnExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RangeFnExec({}, partitions={})",
            self.scan.function.name(),
            self.partitions
        )
    }
}

impl RangeFnExec {
    fn new(scan: RangeScan, partitions: usize) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(row_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        RangeFnExec {
            scan,
            partitions,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for RangeFnExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RangeFnExec: function={}, range={}ms, steps={}, series={}, partitions={}",
            self.scan.function.name(),
            self.scan.range_ms,
            self.scan.ends.len(),
            self.scan.scan.num_series(),
            self.partitions
        )
    }
}

/// Series are computed in chunks of at most this many, one output batch each...
const CHUNK: usize = 4096;
/// ...of about this many samples read (64 MB decoded), whatever the range...
const CHUNK_SAMPLES: usize = 4 << 20;
/// ...and at most this many output rows (series × steps; 48 MB).
const CHUNK_ROWS: usize = 4 << 20;

impl ExecutionPlan for RangeFnExec {
    fn name(&self) -> &str {
        "RangeFnExec"
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
        // A chunk's output is series × steps rows: bound both what it reads and what it
        // emits. Each chunk read has a fixed cost (a pass over the blocks' row groups), so
        // an instant query reads its part in one or two chunks, not dozens.
        let max_series = (CHUNK_ROWS / scan.ends.len().max(1)).clamp(1, CHUNK);
        let series = part.series_per_chunk(CHUNK_SAMPLES, max_series);
        let chunks = part.chunks(series);
        let stream = chunks.map(move |chunk| {
            let chunk = chunk.map_err(|e| DataFusionError::External(Box::new(e)))?;
            let n: usize = chunk.iter().map(SeriesRun::len).sum();
            if scan.charged.fetch_add(n, Ordering::Relaxed) + n > scan.max_samples {
                return Err(DataFusionError::External(Box::new(
                    super::PromqlError::TooManySamples,
                )));
            }
            compute_chunk(&scan, &chunk)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            row_schema(),
            stream,
        )))
    }
}

use futures::StreamExt;

fn compute_chunk(scan: &RangeScan, series: &[SeriesRun]) -> DfResult<RecordBatch> {
    let (mut grp, mut step, mut val) = (Vec::new(), Vec::new(), Vec::new());
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
                    grp.push(g);
                    step.push(i as u32);
                    val.push(v);
                }
            },
        );
    }
    // A cancelled query's windows stopped early: never hand on partial sums.
    scan.cancel
        .check()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(RecordBatch::try_new(
        row_schema(),
        vec![
            Arc::new(UInt32Array::from(grp)),
            Arc::new(UInt32Array::from(step)),
            Arc::new(Float64Array::from(val)),
        ],
    )?)
}

/// Exposes a [`RangeFnExec`] to DataFusion's planner as a table.
struct RangeFnTable {
    scan: RangeScan,
    partitions: usize,
}

impl fmt::Debug for RangeFnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RangeFnTable")
    }
}

#[async_trait]
impl TableProvider for RangeFnTable {
    fn schema(&self) -> SchemaRef {
        row_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[DfExpr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let exec: Arc<dyn ExecutionPlan> =
            Arc::new(RangeFnExec::new(self.scan.clone(), self.partitions));
        match projection {
            Some(p) if p.len() != 3 || p.iter().enumerate().any(|(i, c)| i != *c) => {
                let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = p
                    .iter()
                    .map(|&c| {
                        let f = row_schema().field(c).clone();
                        let e: Arc<dyn PhysicalExpr> = Arc::new(
                            datafusion::physical_expr::expressions::Column::new(f.name(), c),
                        );
                        (e, f.name().clone())
                    })
                    .collect();
                Ok(Arc::new(
                    datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, exec)?,
                ))
            }
            _ => Ok(exec),
        }
    }
}

/// The DataFusion plan for `op by (...) (function(selector[range]))`.
pub(super) async fn plan(
    scan: RangeScan,
    op: &str,
    partitions: usize,
    memory_limit: usize,
) -> DfResult<(SessionContext, Arc<dyn ExecutionPlan>)> {
    use datafusion::functions_aggregate::expr_fn::{avg, count, sum};
    let config = SessionConfig::new().with_target_partitions(partitions);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit, 1.0)
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let table = Arc::new(RangeFnTable { scan, partitions });
    let agg = match op {
        "sum" => sum(col("value")),
        "count" | "group" => count(col("value")),
        "avg" => avg(col("value")),
        other => {
            return Err(DataFusionError::Plan(format!(
                "aggregation {other} has no DataFusion plan"
            )));
        }
    };
    let df = ctx
        .read_table(table)?
        .aggregate(vec![col("grp"), col("step")], vec![agg.alias("value")])?;
    let physical = df.create_physical_plan().await?;
    Ok((ctx, physical))
}

/// Runs the plan; returns `(group, step, value)` rows.
pub(super) async fn run(
    ctx: &SessionContext,
    plan: Arc<dyn ExecutionPlan>,
) -> DfResult<Vec<(u32, usize, f64)>> {
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
    let mut out = Vec::new();
    for b in batches {
        let g = b.column(0).as_primitive::<UInt32Type>();
        let s = b.column(1).as_primitive::<UInt32Type>();
        let v = b.column(2);
        // count() yields Int64; sum/avg Float64.
        let v = datafusion::arrow::compute::cast(v, &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push((g.value(i), s.value(i) as usize, v.value(i)));
        }
    }
    Ok(out)
}

/// Indented physical plan text.
pub(super) fn explain(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}
