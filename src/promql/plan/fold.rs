//! What the planner's per-group operators share: the input's rows carry a `key` (their
//! group, from [`super::keyed::Keyed`]), DataFusion hash-partitions them by it, and each
//! partition gathers its groups' samples per step and, when its input ends, folds every
//! `(group, step)` cell into output rows. A [`Folder`] says how ([`super::histogram_quantile`],
//! [`super::group_fold`]). A partition holds its groups' samples, charged to the query's
//! memory pool, until its input ends.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, UInt32Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, internal_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
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
use futures::{StreamExt, TryStreamExt};

use super::identity_node;
use super::keyed::KEY;
use super::{df_error, rows_schema};
use crate::promql::error::PromqlError;
use crate::promql::kernels::annotations::Annotator;

/// The samples of one group at one step: `(input series, value)` in arrival order.
pub(crate) type Cell = Vec<(u32, f64)>;

/// How a partition's cells become rows.
pub(crate) trait Folder: Send + Sync + 'static {
    /// The node's name in plans (the operator adds `Exec`).
    fn name(&self) -> &'static str;
    /// What it does, for plans.
    fn describe(&self) -> String;
    /// `(series, step, value)` rows of these `((group, step), samples)` cells.
    fn fold(&self, cells: Vec<((u32, u32), Cell)>) -> DfResult<RecordBatch>;
    /// Its wire form (the plan codec); the decoder is registered in `codec.rs`.
    fn encode(&self) -> DfResult<Vec<u8>>;
    /// Whether every cell must be in one partition (a fold that answers for the cells it
    /// did not see, as `absent` does).
    fn single(&self) -> bool {
        false
    }
}

/// The logical node; its input is keyed.
#[derive(Clone)]
pub(crate) struct Fold {
    input: LogicalPlan,
    folder: Arc<dyn Folder>,
    schema: DFSchemaRef,
}

impl Fold {
    pub(super) fn plan_node(
        keyed_input: LogicalPlan,
        folder: impl Folder,
    ) -> Result<LogicalPlan, PromqlError> {
        let schema =
            Arc::new(DFSchema::try_from(rows_schema().as_ref().clone()).map_err(df_error)?);
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(Fold {
                input: keyed_input,
                folder: Arc::new(folder),
                schema,
            }),
        }))
    }

    pub(super) fn plan(
        &self,
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = inputs else {
            return internal_err!("{} has one input", self.folder.name());
        };
        Ok(Arc::new(FoldExec::new(input.clone(), self.folder.clone())))
    }
}

// Compared and hashed by identity: each is made once per query.
identity_node!(Fold, folder, input);

impl UserDefinedLogicalNodeCore for Fold {
    fn name(&self) -> &str {
        self.folder.name()
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
        write!(f, "{}: {}", self.folder.name(), self.folder.describe())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<DfExpr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("{} has one input", self.folder.name());
        };
        Ok(Fold {
            input,
            ..self.clone()
        })
    }
}

/// The operator: its input hash-partitioned by key, one fold per partition.
pub(crate) struct FoldExec {
    input: Arc<dyn ExecutionPlan>,
    pub(super) folder: Arc<dyn Folder>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// A task of another process's plan: annotations its folder found go back in its
    /// metrics ([`super::report`]).
    report: Option<Annotator>,
}

impl FoldExec {
    pub(super) fn new(input: Arc<dyn ExecutionPlan>, folder: Arc<dyn Folder>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(rows_schema()),
            Partitioning::UnknownPartitioning(if folder.single() {
                1
            } else {
                input.properties().output_partitioning().partition_count()
            }),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        FoldExec {
            input,
            folder,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
            report: None,
        }
    }

    /// Hands its annotations back through `report` (decoded as a task of another
    /// process's plan).
    pub(super) fn reporting(mut self, report: Option<Annotator>) -> Self {
        self.report = report;
        self
    }
}

impl fmt::Debug for FoldExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}Exec", self.folder.name())
    }
}

impl DisplayAs for FoldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}Exec: {}", self.folder.name(), self.folder.describe())
    }
}

/// Bytes a gathered sample holds: its cell entry, the cell's own allocation (most cells
/// hold one sample) and a share of the map.
const SAMPLE_BYTES: usize = 128;

impl ExecutionPlan for FoldExec {
    fn name(&self) -> &str {
        "FoldExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        if self.folder.single() {
            return vec![Distribution::SinglePartition];
        }
        // Column 3 of keyed rows is the key.
        vec![Distribution::KeyPartitioned(vec![Arc::new(
            PhysColumn::new(KEY, 3),
        )])]
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
            return internal_err!("{}Exec has one input", self.folder.name());
        };
        Ok(Arc::new(
            FoldExec::new(input, self.folder.clone()).reporting(self.report.clone()),
        ))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, ctx.clone())?;
        let folder = self.folder.clone();
        let reservation = MemoryConsumer::new(format!("{}[{partition}]", folder.name()))
            .register(ctx.memory_pool());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let report = self.report.clone().map(|a| {
            let metrics = self.metrics.clone();
            move || super::report::report(&metrics, partition, &a, Default::default())
        });
        let running = self.report.is_some().then(super::report::Running::start);
        let fold = async move {
            let _running = running;
            let mut cells = crate::model::hashing::map::<(u32, u32), Cell>(0);
            while let Some(b) = input.try_next().await? {
                let _timer = baseline.elapsed_compute().timer();
                reservation.try_grow(b.num_rows() * SAMPLE_BYTES)?;
                let series = b.column(0).as_primitive::<UInt32Type>();
                let step = b.column(1).as_primitive::<UInt32Type>();
                let value = b.column(2).as_primitive::<Float64Type>();
                let key = b.column(3).as_primitive::<UInt32Type>();
                for i in 0..b.num_rows() {
                    cells
                        .entry((key.value(i), step.value(i)))
                        .or_default()
                        .push((series.value(i), value.value(i)));
                }
            }
            let _timer = baseline.elapsed_compute().timer();
            let mut cells: Vec<_> = cells.into_iter().collect();
            cells.sort_unstable_by_key(|(k, _)| *k);
            let out = folder.fold(cells)?;
            drop(reservation);
            baseline.record_output(out.num_rows());
            Ok(out)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            rows_schema(),
            super::report::then(futures::stream::once(fold), report).boxed(),
        )))
    }
}
