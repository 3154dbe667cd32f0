//! Vector matching's join (`a / b`, `… / ignoring(x) group_left …`) in an array indexed by
//! the one side's series and the step, where a hash join on `(key, step)` did the same
//! work and more.
//!
//! The one side's series and the steps are known when the query is planned (the lowering
//! in [`super::vector_match`] gives every many-side series the id of the one-side series
//! it matches as its `key`), so a one-side value's place is `series × steps + step`. Both
//! sides are hash-partitioned on those ids, as a partitioned hash join's are (a shuffle
//! between processes when the plan is distributed); in each partition the one side's rows
//! fill their series' rows of cells, allocated at a series' first row and charged to the
//! query's memory pool, then the many side streams through and each row meets its
//! partner's value, or leaves. On the peer benchmark's `http_5xx_share_by_path` over 6 h,
//! DataFusion's join built its table on the many side (195k rows, 11.7 MB) for 54 one-side
//! series × 721 steps (docs/benchmarks.md, "Session 28"). Past [`MAX_CELLS`] the lowering
//! keeps the hash join.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Float64Array, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, internal_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{
    Expr as DfExpr, Extension, LogicalPlan, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::expressions::Column as PhysColumn;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;

use super::codec::decode_wire;
use super::keyed::KEY;
use super::step_agg::MAX_CELLS;
use super::{SERIES, STEP, df_error, identity_node};
use crate::promql::error::PromqlError;

/// Columns of a matched pair's values.
pub(super) const MANY: &str = "many";
pub(super) const ONE: &str = "one";

/// A matched pair: the many-side series, the step, and both values.
pub(super) fn pairs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SERIES, DataType::UInt32, false),
        Field::new(STEP, DataType::UInt32, false),
        Field::new(MANY, DataType::Float64, false),
        Field::new(ONE, DataType::Float64, false),
    ]))
}

/// What a join is, fixed at planning.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    /// The one side's series.
    series: u32,
    steps: u32,
}

impl Spec {
    fn describe(&self) -> String {
        format!("{} one-side series × {} steps", self.series, self.steps)
    }
}

/// The logical node: the many side keyed by its partner's id ([`super::keyed`]), then the
/// one side.
#[derive(Clone)]
pub(crate) struct StepJoin {
    many: LogicalPlan,
    one: LogicalPlan,
    spec: Arc<Spec>,
    schema: DFSchemaRef,
}

impl StepJoin {
    /// The pairs of `many` (keyed rows) and `one` (rows of `series` series) over `steps`
    /// steps, or both inputs back when that is more than [`MAX_CELLS`] cells.
    pub(super) fn plan_node(
        many: LogicalPlan,
        one: LogicalPlan,
        series: usize,
        steps: usize,
    ) -> Result<Result<LogicalPlan, (LogicalPlan, LogicalPlan)>, PromqlError> {
        if series.saturating_mul(steps) > MAX_CELLS {
            return Ok(Err((many, one)));
        }
        let schema =
            Arc::new(DFSchema::try_from(pairs_schema().as_ref().clone()).map_err(df_error)?);
        Ok(Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(StepJoin {
                many,
                one,
                spec: Arc::new(Spec {
                    series: series as u32,
                    steps: steps as u32,
                }),
                schema,
            }),
        })))
    }

    pub(super) fn plan(
        &self,
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [many, one] = inputs else {
            return internal_err!("StepJoin has two inputs");
        };
        Ok(Arc::new(StepJoinExec::new(
            many.clone(),
            one.clone(),
            self.spec.clone(),
        )))
    }
}

// Compared and hashed by identity: each is made once per query.
identity_node!(StepJoin, spec, many, one);

impl UserDefinedLogicalNodeCore for StepJoin {
    fn name(&self) -> &str {
        "StepJoin"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.many, &self.one]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<DfExpr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StepJoin: {}", self.spec.describe())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<DfExpr>,
        inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        let Ok([many, one]) = <[LogicalPlan; 2]>::try_from(inputs) else {
            return internal_err!("StepJoin has two inputs");
        };
        Ok(StepJoin {
            many,
            one,
            ..self.clone()
        })
    }
}

/// The operator: one output partition per pair of co-partitioned input partitions.
pub(crate) struct StepJoinExec {
    many: Arc<dyn ExecutionPlan>,
    one: Arc<dyn ExecutionPlan>,
    spec: Arc<Spec>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl StepJoinExec {
    fn new(many: Arc<dyn ExecutionPlan>, one: Arc<dyn ExecutionPlan>, spec: Arc<Spec>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(pairs_schema()),
            Partitioning::UnknownPartitioning(
                many.properties().output_partitioning().partition_count(),
            ),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        StepJoinExec {
            many,
            one,
            spec,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl fmt::Debug for StepJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StepJoinExec")
    }
}

impl DisplayAs for StepJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StepJoinExec: {}", self.spec.describe())
    }
}

impl ExecutionPlan for StepJoinExec {
    fn name(&self) -> &str {
        "StepJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.many, &self.one]
    }

    /// Both sides hash-partitioned alike on the one side's series id (the many side's
    /// `key`), so each partition holds every row of the series it joins.
    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::co_partitioned(vec![
            Distribution::KeyPartitioned(vec![Arc::new(PhysColumn::new(KEY, 3))]),
            Distribution::KeyPartitioned(vec![Arc::new(PhysColumn::new(SERIES, 0))]),
        ])
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        self.input_distribution_requirements().into_per_child()
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
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Ok([many, one]) = <[Arc<dyn ExecutionPlan>; 2]>::try_from(children) else {
            return internal_err!("StepJoinExec has two inputs");
        };
        Ok(Arc::new(StepJoinExec::new(many, one, self.spec.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let (m, o) = (
            self.many
                .properties()
                .output_partitioning()
                .partition_count(),
            self.one
                .properties()
                .output_partitioning()
                .partition_count(),
        );
        if m != o {
            return internal_err!("StepJoinExec: {m} many-side partitions, {o} one-side");
        }
        let one = self.one.execute(partition, ctx.clone())?;
        let many = self.many.execute(partition, ctx.clone())?;
        let reservation =
            MemoryConsumer::new(format!("StepJoinExec[{partition}]")).register(ctx.memory_pool());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let spec = self.spec.clone();
        let build = async move {
            let table = Table::build(&spec, one, reservation, &baseline).await?;
            let table = Arc::new(table);
            Ok::<_, datafusion::error::DataFusionError>(many.map(move |b| {
                let _timer = baseline.elapsed_compute().timer();
                let out = table.probe(&b?)?;
                baseline.record_output(out.num_rows());
                Ok(out)
            }))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            pairs_schema(),
            futures::stream::once(build).try_flatten(),
        )))
    }
}

/// One partition's one-side values: a row of cells per series that has any.
struct Table {
    steps: usize,
    /// Each series' value at each step (empty: no row of it arrived).
    values: Vec<Vec<f64>>,
    /// Which of those steps have a value, a bit each.
    seen: Vec<Vec<u64>>,
    _reservation: MemoryReservation,
}

impl Table {
    async fn build(
        spec: &Spec,
        mut one: SendableRecordBatchStream,
        reservation: MemoryReservation,
        baseline: &BaselineMetrics,
    ) -> DfResult<Table> {
        let (series, steps) = (spec.series as usize, spec.steps as usize);
        // The row headers at once, charged like the rows (a plan from another process may
        // name millions of series).
        reservation.try_grow(series * 2 * std::mem::size_of::<Vec<u64>>())?;
        let mut values: Vec<Vec<f64>> = (0..series).map(|_| Vec::new()).collect();
        let mut seen: Vec<Vec<u64>> = (0..series).map(|_| Vec::new()).collect();
        let words = steps.div_ceil(64);
        let row_bytes = steps * 8 + words * 8;
        while let Some(b) = one.try_next().await? {
            let _timer = baseline.elapsed_compute().timer();
            let s = b.column(0).as_primitive::<UInt32Type>().values();
            let t = b.column(1).as_primitive::<UInt32Type>().values();
            let v = b.column(2).as_primitive::<Float64Type>().values();
            for i in 0..b.num_rows() {
                let (s, t) = (s[i] as usize, t[i] as usize);
                if s >= series || t >= steps {
                    return internal_err!(
                        "StepJoinExec: one-side row of series {s}/{series}, step {t}/{steps}"
                    );
                }
                if values[s].is_empty() {
                    reservation.try_grow(row_bytes)?;
                    values[s] = vec![0.0; steps];
                    seen[s] = vec![0; words];
                }
                values[s][t] = v[i];
                seen[s][t / 64] |= 1 << (t % 64);
            }
        }
        Ok(Table {
            steps,
            values,
            seen,
            _reservation: reservation,
        })
    }

    /// The many-side rows of `b` (series, step, value, key) that meet a one-side value,
    /// with it.
    fn probe(&self, b: &RecordBatch) -> DfResult<RecordBatch> {
        let s = b.column(0).as_primitive::<UInt32Type>().values();
        let t = b.column(1).as_primitive::<UInt32Type>().values();
        let v = b.column(2).as_primitive::<Float64Type>().values();
        let k = b.column(3).as_primitive::<UInt32Type>().values();
        let n = b.num_rows();
        let (mut series, mut step, mut many, mut one) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for i in 0..n {
            let (key, at) = (k[i] as usize, t[i] as usize);
            let (Some(row), true) = (self.seen.get(key), at < self.steps) else {
                return internal_err!(
                    "StepJoinExec: many-side row keyed {key}/{}, step {at}/{}",
                    self.values.len(),
                    self.steps
                );
            };
            if row.get(at / 64).is_some_and(|w| w & (1 << (at % 64)) != 0) {
                series.push(s[i]);
                step.push(t[i]);
                many.push(v[i]);
                one.push(self.values[key][at]);
            }
        }
        Ok(RecordBatch::try_new(
            pairs_schema(),
            vec![
                Arc::new(UInt32Array::from(series)),
                Arc::new(UInt32Array::from(step)),
                Arc::new(Float64Array::from(many)),
                Arc::new(Float64Array::from(one)),
            ],
        )?)
    }
}

/// `StepJoinExec` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct StepJoinWire {
    #[prost(uint32, tag = "1")]
    series: u32,
    #[prost(uint32, tag = "2")]
    steps: u32,
}

impl StepJoinExec {
    pub(super) fn encode(&self) -> Vec<u8> {
        StepJoinWire {
            series: self.spec.series,
            steps: self.spec.steps,
        }
        .encode_to_vec()
    }

    pub(super) fn decode(
        buf: &[u8],
        many: Arc<dyn ExecutionPlan>,
        one: Arc<dyn ExecutionPlan>,
    ) -> DfResult<Self> {
        let w: StepJoinWire = decode_wire(buf, "StepJoin")?;
        if (w.series as usize).saturating_mul(w.steps as usize) > MAX_CELLS {
            return internal_err!("StepJoin: {} series × {} steps", w.series, w.steps);
        }
        let spec = Arc::new(Spec {
            series: w.series,
            steps: w.steps,
        });
        Ok(StepJoinExec::new(many, one, spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::test::TestMemoryExec;

    use super::super::keyed::keyed_schema;
    use super::super::rows_schema;

    fn batch(
        schema: SchemaRef,
        cols: Vec<Arc<dyn datafusion::arrow::array::Array>>,
    ) -> RecordBatch {
        RecordBatch::try_new(schema, cols).unwrap()
    }

    /// Many-side rows `(series, step, value, key)` in one partition.
    fn many(rows: &[(u32, u32, f64, u32)]) -> Arc<dyn ExecutionPlan> {
        let b = batch(
            keyed_schema(),
            vec![
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        );
        TestMemoryExec::try_new_exec(&[vec![b]], keyed_schema(), None).unwrap()
    }

    /// One-side rows `(series, step, value)` in one partition.
    fn one(rows: &[(u32, u32, f64)]) -> Arc<dyn ExecutionPlan> {
        let b = super::super::rows(
            rows.iter().map(|r| r.0).collect(),
            rows.iter().map(|r| r.1).collect(),
            rows.iter().map(|r| r.2).collect(),
        )
        .unwrap();
        TestMemoryExec::try_new_exec(&[vec![b]], rows_schema(), None).unwrap()
    }

    async fn run(
        plan: Arc<dyn ExecutionPlan>,
        ctx: Arc<TaskContext>,
    ) -> DfResult<Vec<(u32, u32, f64, f64)>> {
        let batches: Vec<RecordBatch> = plan.execute(0, ctx)?.try_collect().await?;
        let mut out = vec![];
        for b in batches {
            let (s, t, m, o) = (
                b.column(0).as_primitive::<UInt32Type>(),
                b.column(1).as_primitive::<UInt32Type>(),
                b.column(2).as_primitive::<Float64Type>(),
                b.column(3).as_primitive::<Float64Type>(),
            );
            out.extend((0..b.num_rows()).map(|i| (s.value(i), t.value(i), m.value(i), o.value(i))));
        }
        Ok(out)
    }

    fn spec(series: u32, steps: u32) -> Arc<Spec> {
        Arc::new(Spec { series, steps })
    }

    /// Each many-side row meets its partner's value at its step, or leaves when the partner
    /// has none there (a NaN is a value, step 64 is in the second word); after a wire round
    /// trip the same.
    #[tokio::test]
    async fn rows_meet_their_partners_value_at_their_step() {
        let ones = [(0, 0, 10.0), (0, 64, f64::NAN), (2, 1, 30.0), (2, 65, 31.0)];
        let manys = [
            (5, 0, 1.0, 0),
            (6, 0, 2.0, 0),
            (5, 1, 3.0, 0),
            (5, 64, 4.0, 0),
            (7, 1, 5.0, 2),
            (7, 65, 6.0, 2),
            (8, 0, 7.0, 1),
            (7, 66, 8.0, 2),
        ];
        let exec = StepJoinExec::new(many(&manys), one(&ones), spec(3, 70));
        let decoded = StepJoinExec::decode(&exec.encode(), many(&manys), one(&ones)).unwrap();
        for plan in [Arc::new(exec), Arc::new(decoded)] {
            let got = run(plan, Arc::new(TaskContext::default())).await.unwrap();
            let want = [
                (5, 0, 1.0, 10.0),
                (6, 0, 2.0, 10.0),
                (5, 64, 4.0, f64::NAN),
                (7, 1, 5.0, 30.0),
                (7, 65, 6.0, 31.0),
            ];
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2), "{got:?}");
                assert!(g.3 == w.3 || (g.3.is_nan() && w.3.is_nan()), "{got:?}");
            }
        }
    }

    /// Rows outside the table, a decoded size above [`MAX_CELLS`] and a table larger than
    /// the query's pool are errors, not panics or unbounded allocations.
    #[tokio::test]
    async fn rows_and_sizes_out_of_range_are_errors() {
        let ctx = || Arc::new(TaskContext::default());
        for (ones, manys) in [
            (vec![(3, 0, 1.0)], vec![]),
            (vec![(0, 70, 1.0)], vec![]),
            (vec![(0, 0, 1.0)], vec![(0, 0, 1.0, 3)]),
            (vec![(0, 0, 1.0)], vec![(0, 70, 1.0, 0)]),
        ] {
            let exec = Arc::new(StepJoinExec::new(many(&manys), one(&ones), spec(3, 70)));
            assert!(run(exec, ctx()).await.is_err(), "{ones:?} {manys:?}");
        }
        let big = StepJoinWire {
            series: 1 << 12,
            steps: 1 << 11,
        };
        assert!(StepJoinExec::decode(&big.encode_to_vec(), many(&[]), one(&[])).is_err());
        // 4M cells' row headers alone are more than a 1 MiB pool.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(1 << 20)))
            .build_arc()
            .unwrap();
        let small = Arc::new(TaskContext::default().with_runtime(runtime));
        let exec = Arc::new(StepJoinExec::new(many(&[]), one(&[]), spec(1 << 21, 2)));
        assert!(run(exec, small).await.is_err());
    }
}
