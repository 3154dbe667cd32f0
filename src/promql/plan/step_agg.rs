//! `sum`, `avg`, `count`, `group`, `min` and `max` per `(group, step)` in arrays indexed by
//! group and step, where a hash table keyed by the pair would do the same work and more.
//!
//! The groups and steps are known when the query is planned (the groups are the
//! aggregation's output series, [`super::regroup`] maps every input row onto one), so a
//! cell's place is `group × steps + step`: no hashing, no table that grows while rows
//! arrive. DataFusion's hash aggregation spent most of a `sum by` over a range query
//! interning `(series, step)` keys and growing its table (docs/benchmarks.md, "Session 27").
//!
//! Like DataFusion's, it runs in two modes across partitions: a *partial* aggregation in
//! each input partition emits its cells' states ([`super::udaf`]'s states, the same
//! arithmetic), the states are hash-partitioned by group (a shuffle between processes when
//! the plan is distributed), and a *final* one merges them. An input of one partition is
//! aggregated once (*single*). A group's row of cells is allocated when its first row
//! arrives and charged to the query's memory pool; past [`MAX_CELLS`] cells the lowering
//! keeps DataFusion's hash aggregation, whose memory follows the cells that occur.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch, UInt32Array};
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
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{FutureExt, TryStreamExt};
use prost::Message;

use super::codec::decode_wire;
use super::udaf::{Avg, Count, Extreme, GroupState, Sum};
use super::{SERIES, STEP, df_error, identity_node, rows_schema};
use crate::promql::error::PromqlError;
use crate::promql::op::AggOp;

/// Most cells (groups × steps) an aggregation here takes on.
pub(super) const MAX_CELLS: usize = 1 << 22;

/// Which aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AggFn {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
}

impl AggFn {
    pub(super) const ALL: [AggFn; 6] = [
        AggFn::Sum,
        AggFn::Avg,
        AggFn::Min,
        AggFn::Max,
        AggFn::Count,
        AggFn::Group,
    ];

    /// The aggregation of an operator lowered here.
    pub(super) fn of(op: AggOp) -> Option<AggFn> {
        Some(match op {
            AggOp::Sum => AggFn::Sum,
            AggOp::Avg => AggFn::Avg,
            AggOp::Min => AggFn::Min,
            AggOp::Max => AggFn::Max,
            AggOp::Count => AggFn::Count,
            AggOp::Group => AggFn::Group,
            _ => return None,
        })
    }

    /// Its place in [`AggFn::ALL`], as written on the wire.
    pub(super) fn index(self) -> u32 {
        AggFn::ALL.iter().position(|f| *f == self).unwrap_or(0) as u32
    }

    pub(super) fn from_index(i: u32) -> Option<AggFn> {
        AggFn::ALL.get(i as usize).copied()
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            AggFn::Sum => "sum",
            AggFn::Avg => "avg",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Count => "count",
            AggFn::Group => "group",
        }
    }

    fn state_len(self) -> usize {
        match self {
            AggFn::Sum => Sum::STATE_LEN,
            AggFn::Avg => Avg::STATE_LEN,
            AggFn::Min => Extreme::<false>::STATE_LEN,
            AggFn::Max => Extreme::<true>::STATE_LEN,
            AggFn::Count | AggFn::Group => Count::STATE_LEN,
        }
    }
}

/// Where a node runs in the two-phase aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The whole aggregation over an input of one partition.
    Single,
    /// Per input partition: the cells' states.
    Partial,
    /// The partial states of some groups merged into values.
    Final,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Single, Mode::Partial, Mode::Final];
}

/// What an aggregation is, fixed at planning.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    func: AggFn,
    groups: u32,
    steps: u32,
}

impl Spec {
    fn describe(&self) -> String {
        format!(
            "{} of {} groups × {} steps",
            self.func.name(),
            self.groups,
            self.steps
        )
    }
}

/// The logical node; its input's series are already the groups.
#[derive(Clone)]
pub(crate) struct StepAgg {
    input: LogicalPlan,
    spec: Arc<Spec>,
    schema: DFSchemaRef,
}

impl StepAgg {
    /// The cells of its answer: groups × steps.
    pub(super) fn cells(&self) -> usize {
        self.spec.groups as usize * self.spec.steps as usize
    }

    /// `func` of `grouped` (rows whose series are `groups` groups) over `steps` steps, or
    /// `grouped` back when that is more than [`MAX_CELLS`] cells.
    pub(super) fn plan_node(
        grouped: LogicalPlan,
        func: AggFn,
        groups: usize,
        steps: usize,
    ) -> Result<Result<LogicalPlan, LogicalPlan>, PromqlError> {
        if groups.saturating_mul(steps) > MAX_CELLS {
            return Ok(Err(grouped));
        }
        let schema =
            Arc::new(DFSchema::try_from(rows_schema().as_ref().clone()).map_err(df_error)?);
        Ok(Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(StepAgg {
                input: grouped,
                spec: Arc::new(Spec {
                    func,
                    groups: groups as u32,
                    steps: steps as u32,
                }),
                schema,
            }),
        })))
    }

    /// Single over one input partition; otherwise partial, then final after the input is
    /// partitioned by group (one partition when the session does not repartition
    /// aggregations: a distributed plan that folds on its coordinator).
    pub(super) fn plan(
        &self,
        inputs: &[Arc<dyn ExecutionPlan>],
        repartition: bool,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = inputs else {
            return internal_err!("StepAgg has one input");
        };
        let spec = self.spec.clone();
        if input.properties().output_partitioning().partition_count() <= 1 {
            return Ok(Arc::new(StepAggExec::new(
                input.clone(),
                spec,
                Mode::Single,
                false,
            )));
        }
        let partial = Arc::new(StepAggExec::new(
            input.clone(),
            spec.clone(),
            Mode::Partial,
            false,
        ));
        Ok(Arc::new(StepAggExec::new(
            partial,
            spec,
            Mode::Final,
            !repartition,
        )))
    }
}

// Compared and hashed by identity: each is made once per query.
identity_node!(StepAgg, spec, input);

impl UserDefinedLogicalNodeCore for StepAgg {
    fn name(&self) -> &str {
        "StepAgg"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<DfExpr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StepAgg: {}", self.spec.describe())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<DfExpr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("StepAgg has one input");
        };
        Ok(StepAgg {
            input,
            ..self.clone()
        })
    }
}

/// The operator in one of its [`Mode`]s.
pub(crate) struct StepAggExec {
    input: Arc<dyn ExecutionPlan>,
    spec: Arc<Spec>,
    mode: Mode,
    /// Final: all groups in one partition (no repartition by group before it).
    single_final: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// The partial states' rows: group, step and the state's columns.
fn state_schema(func: AggFn) -> SchemaRef {
    let mut fields = vec![
        Field::new(SERIES, DataType::UInt32, false),
        Field::new(STEP, DataType::UInt32, false),
    ];
    fields.extend(
        (0..func.state_len()).map(|c| Field::new(format!("state{c}"), DataType::Float64, false)),
    );
    Arc::new(Schema::new(fields))
}

impl StepAggExec {
    fn new(input: Arc<dyn ExecutionPlan>, spec: Arc<Spec>, mode: Mode, single_final: bool) -> Self {
        let schema = match mode {
            Mode::Partial => state_schema(spec.func),
            Mode::Single | Mode::Final => rows_schema(),
        };
        let partitions = if mode == Mode::Final && single_final {
            1
        } else {
            input.properties().output_partitioning().partition_count()
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        StepAggExec {
            input,
            spec,
            mode,
            single_final,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl fmt::Debug for StepAggExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StepAggExec")
    }
}

impl DisplayAs for StepAggExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StepAggExec: mode={:?}, {}",
            self.mode,
            self.spec.describe()
        )
    }
}

impl ExecutionPlan for StepAggExec {
    fn name(&self) -> &str {
        "StepAggExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        match self.mode {
            Mode::Single | Mode::Partial => vec![Distribution::UnspecifiedDistribution],
            Mode::Final if self.single_final => vec![Distribution::SinglePartition],
            Mode::Final => vec![Distribution::KeyPartitioned(vec![Arc::new(
                PhysColumn::new(SERIES, 0),
            )])],
        }
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
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.pop() else {
            return internal_err!("StepAggExec has one input");
        };
        Ok(Arc::new(StepAggExec::new(
            input,
            self.spec.clone(),
            self.mode,
            self.single_final,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, ctx.clone())?;
        let reservation =
            MemoryConsumer::new(format!("StepAggExec[{partition}]")).register(ctx.memory_pool());
        let run = Run {
            spec: self.spec.clone(),
            mode: self.mode,
            schema: self.schema.clone(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            reservation,
        };
        let out = match self.spec.func {
            AggFn::Sum => FutureExt::boxed(run.go::<Sum>(input)),
            AggFn::Avg => FutureExt::boxed(run.go::<Avg>(input)),
            AggFn::Min => FutureExt::boxed(run.go::<Extreme<false>>(input)),
            AggFn::Max => FutureExt::boxed(run.go::<Extreme<true>>(input)),
            AggFn::Count | AggFn::Group => FutureExt::boxed(run.go::<Count>(input)),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(out),
        )))
    }
}

/// One partition's aggregation.
struct Run {
    spec: Arc<Spec>,
    mode: Mode,
    schema: SchemaRef,
    baseline: BaselineMetrics,
    reservation: MemoryReservation,
}

impl Run {
    async fn go<S: GroupState>(
        self,
        mut input: SendableRecordBatchStream,
    ) -> DfResult<RecordBatch> {
        let (groups, steps) = (self.spec.groups as usize, self.spec.steps as usize);
        // Each group's cells, allocated at its first row; the row headers at once, charged
        // like the rows (a plan from another process may name millions of groups).
        self.reservation
            .try_grow(groups * std::mem::size_of::<Vec<Option<S>>>())?;
        let mut rows: Vec<Vec<Option<S>>> = (0..groups).map(|_| Vec::new()).collect();
        let row_bytes = steps * std::mem::size_of::<Option<S>>();
        while let Some(b) = input.try_next().await? {
            let _timer = self.baseline.elapsed_compute().timer();
            let group = b.column(0).as_primitive::<UInt32Type>().values();
            let step = b.column(1).as_primitive::<UInt32Type>().values();
            let cols: Vec<&datafusion::arrow::array::PrimitiveArray<Float64Type>> = b.columns()
                [2..]
                .iter()
                .map(|c| c.as_primitive::<Float64Type>())
                .collect();
            let merging = self.mode == Mode::Final;
            if cols.len() != if merging { S::STATE_LEN } else { 1 } {
                return internal_err!("StepAggExec: input of {} columns", b.num_columns());
            }
            for i in 0..b.num_rows() {
                let (g, t) = (group[i] as usize, step[i] as usize);
                if t >= steps {
                    return internal_err!("StepAggExec: step {t} of {steps}");
                }
                let Some(row) = rows.get_mut(g) else {
                    return internal_err!("StepAggExec: group {g} of {groups}");
                };
                if row.is_empty() {
                    self.reservation.try_grow(row_bytes)?;
                    row.resize_with(steps, || None);
                }
                let cell = row[t].get_or_insert_with(S::default);
                if merging {
                    cell.merge_row(&cols, i);
                } else {
                    cell.add(cols[0].value(i));
                }
            }
        }
        let _timer = self.baseline.elapsed_compute().timer();
        let out = match self.mode {
            Mode::Partial => states(&rows, &self.schema)?,
            Mode::Single | Mode::Final => values(&rows, self.spec.func)?,
        };
        self.baseline.record_output(out.num_rows());
        Ok(out)
    }
}

/// The cells' partial states, group by group, step by step.
fn states<S: GroupState>(rows: &[Vec<Option<S>>], schema: &SchemaRef) -> DfResult<RecordBatch> {
    let (mut group, mut step) = (Vec::new(), Vec::new());
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); S::STATE_LEN];
    for (g, row) in rows.iter().enumerate() {
        for (t, cell) in row.iter().enumerate() {
            let Some(s) = cell else { continue };
            group.push(g as u32);
            step.push(t as u32);
            for (c, col) in cols.iter_mut().enumerate() {
                col.push(s.state_col(c));
            }
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(group)),
        Arc::new(UInt32Array::from(step)),
    ];
    arrays.extend(
        cols.into_iter()
            .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
    );
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

/// The cells' values as rows; `group` answers 1 wherever it saw a value.
fn values<S: GroupState>(rows: &[Vec<Option<S>>], func: AggFn) -> DfResult<RecordBatch> {
    let (mut group, mut step, mut value) = (Vec::new(), Vec::new(), Vec::new());
    for (g, row) in rows.iter().enumerate() {
        for (t, cell) in row.iter().enumerate() {
            let Some(v) = cell.as_ref().and_then(S::value) else {
                continue;
            };
            group.push(g as u32);
            step.push(t as u32);
            value.push(if func == AggFn::Group { 1.0 } else { v });
        }
    }
    super::rows(group, step, value)
}

/// `StepAggExec` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct StepAggWire {
    #[prost(uint32, tag = "1")]
    func: u32,
    #[prost(uint32, tag = "2")]
    mode: u32,
    #[prost(uint32, tag = "3")]
    groups: u32,
    #[prost(uint32, tag = "4")]
    steps: u32,
    #[prost(bool, tag = "5")]
    single_final: bool,
}

impl StepAggExec {
    pub(super) fn encode(&self) -> Vec<u8> {
        fn index<T: PartialEq>(all: &[T], x: T) -> u32 {
            all.iter().position(|y| *y == x).unwrap_or(0) as u32
        }
        StepAggWire {
            func: index(&AggFn::ALL, self.spec.func),
            mode: index(&Mode::ALL, self.mode),
            groups: self.spec.groups,
            steps: self.spec.steps,
            single_final: self.single_final,
        }
        .encode_to_vec()
    }

    pub(super) fn decode(buf: &[u8], input: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        let w: StepAggWire = decode_wire(buf, "StepAgg")?;
        let (Some(&func), Some(&mode)) = (
            AggFn::ALL.get(w.func as usize),
            Mode::ALL.get(w.mode as usize),
        ) else {
            return internal_err!("StepAgg: function {} mode {}", w.func, w.mode);
        };
        if (w.groups as usize).saturating_mul(w.steps as usize) > MAX_CELLS {
            return internal_err!("StepAgg: {} groups × {} steps", w.groups, w.steps);
        }
        let spec = Arc::new(Spec {
            func,
            groups: w.groups,
            steps: w.steps,
        });
        Ok(StepAggExec::new(input, spec, mode, w.single_final))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::test::TestMemoryExec;

    fn input(rows: &[(u32, u32, f64)], partitions: usize) -> Arc<dyn ExecutionPlan> {
        let parts: Vec<Vec<RecordBatch>> = (0..partitions)
            .map(|p| {
                let mine: Vec<_> = rows
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % partitions == p)
                    .map(|(_, r)| *r)
                    .collect();
                vec![
                    super::super::rows(
                        mine.iter().map(|r| r.0).collect(),
                        mine.iter().map(|r| r.1).collect(),
                        mine.iter().map(|r| r.2).collect(),
                    )
                    .unwrap(),
                ]
            })
            .collect();
        TestMemoryExec::try_new_exec(&parts, rows_schema(), None).unwrap()
    }

    async fn run(plan: Arc<dyn ExecutionPlan>) -> Vec<(u32, u32, f64)> {
        let ctx = Arc::new(TaskContext::default());
        let mut out = vec![];
        for p in 0..plan.properties().output_partitioning().partition_count() {
            let batches: Vec<RecordBatch> = plan
                .execute(p, ctx.clone())
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            for b in batches {
                let (g, t, v) = (
                    b.column(0).as_primitive::<UInt32Type>(),
                    b.column(1).as_primitive::<UInt32Type>(),
                    b.column(2).as_primitive::<Float64Type>(),
                );
                out.extend((0..b.num_rows()).map(|i| (g.value(i), t.value(i), v.value(i))));
            }
        }
        out.sort_by_key(|a| (a.0, a.1));
        out
    }

    /// Every function, over one partition and over three merged through their partial
    /// states (here without the repartition, so one final partition sees every group):
    /// the evaluator's arithmetic, cells without a value left out, `group` as 1.
    #[tokio::test]
    async fn single_and_partial_then_final_agree_with_the_evaluator() {
        let rows: Vec<(u32, u32, f64)> = vec![
            (0, 0, 1.0),
            (0, 0, 1e100),
            (0, 0, 1.0),
            (0, 0, -1e100),
            (1, 0, f64::NAN),
            (1, 0, 3.0),
            (1, 2, 5.0),
            (2, 1, 7.5),
            (2, 1, -2.5),
            (2, 1, 4.0),
            (0, 2, f64::INFINITY),
            (0, 2, 1.0),
        ];
        use crate::promql::kernels::range_fns as rf;
        for func in AggFn::ALL {
            let mut want: Vec<(u32, u32, f64)> = vec![];
            for g in 0..3u32 {
                for t in 0..3u32 {
                    let xs: Vec<f64> = rows
                        .iter()
                        .filter(|r| r.0 == g && r.1 == t)
                        .map(|r| r.2)
                        .collect();
                    if xs.is_empty() {
                        continue;
                    }
                    let v = match func {
                        AggFn::Sum => rf::sum(&xs),
                        AggFn::Avg => rf::avg(&xs),
                        AggFn::Min => rf::min(&xs),
                        AggFn::Max => rf::max(&xs),
                        AggFn::Count => xs.len() as f64,
                        AggFn::Group => 1.0,
                    };
                    want.push((g, t, v));
                }
            }
            let spec = Arc::new(Spec {
                func,
                groups: 3,
                steps: 3,
            });
            let single = Arc::new(StepAggExec::new(
                input(&rows, 1),
                spec.clone(),
                Mode::Single,
                false,
            ));
            let partial = Arc::new(StepAggExec::new(
                input(&rows, 3),
                spec.clone(),
                Mode::Partial,
                false,
            ));
            let merged = Arc::new(StepAggExec::new(
                Arc::new(
                    datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(
                        partial,
                    ),
                ),
                spec,
                Mode::Final,
                true,
            ));
            for (how, got) in [
                ("single", run(single).await),
                ("partial, final", run(merged).await),
            ] {
                let same = got.len() == want.len()
                    && got.iter().zip(&want).all(|(a, b)| {
                        (a.0, a.1) == (b.0, b.1) && (a.2 == b.2 || (a.2.is_nan() && b.2.is_nan()))
                    });
                assert!(same, "{func:?} {how}: {got:?} vs {want:?}");
            }
        }
    }

    /// A plan decoded from another process cannot point outside its cells or ask for more
    /// than [`MAX_CELLS`].
    #[tokio::test]
    async fn rows_and_sizes_out_of_range_are_errors() {
        let spec = Arc::new(Spec {
            func: AggFn::Sum,
            groups: 2,
            steps: 2,
        });
        for bad in [(2, 0, 1.0), (0, 2, 1.0)] {
            let e = Arc::new(StepAggExec::new(
                input(&[bad], 1),
                spec.clone(),
                Mode::Single,
                false,
            ));
            let ctx = Arc::new(TaskContext::default());
            let r: DfResult<Vec<RecordBatch>> = e.execute(0, ctx).unwrap().try_collect().await;
            assert!(r.is_err(), "{bad:?}");
        }
        // The groups' row headers count against the query's pool before anything arrives.
        let many = Arc::new(Spec {
            func: AggFn::Sum,
            groups: MAX_CELLS as u32,
            steps: 1,
        });
        let e = Arc::new(StepAggExec::new(input(&[], 1), many, Mode::Single, false));
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(
                datafusion::execution::memory_pool::GreedyMemoryPool::new(1 << 20),
            ))
            .build_arc()
            .unwrap();
        let ctx = Arc::new(TaskContext::default().with_runtime(runtime));
        let r: DfResult<Vec<RecordBatch>> = e.execute(0, ctx).unwrap().try_collect().await;
        assert!(r.is_err(), "{MAX_CELLS} groups in a 1 MiB pool");
        let huge = StepAggWire {
            func: 0,
            mode: 0,
            groups: 1 << 16,
            steps: 1 << 16,
            single_final: false,
        }
        .encode_to_vec();
        assert!(StepAggExec::decode(&huge, input(&[], 1)).is_err());
        let e = StepAggExec::new(input(&[], 1), spec, Mode::Final, true);
        let back = StepAggExec::decode(&e.encode(), input(&[], 1)).unwrap();
        assert_eq!(
            (back.mode, back.single_final, &back.spec),
            (Mode::Final, true, &e.spec)
        );
    }
}
