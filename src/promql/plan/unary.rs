//! What the planner's row-at-a-time operators share: a logical node over one input and an
//! operator that maps each input batch to an output batch in the same partition, with no
//! state between batches. A [`RowOp`] says what the mapping is ([`super::regroup`],
//! [`super::keyed`], [`super::map_values`], [`super::vector_match`]'s combine).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, internal_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    Expr as DfExpr, Extension, LogicalPlan, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use super::df_error;
use super::identity_node;
use crate::promql::error::PromqlError;

/// A stateless batch-to-batch mapping.
pub(crate) trait RowOp: Send + Sync + 'static {
    /// The node's name in plans (the operator adds `Exec`).
    fn name(&self) -> &'static str;
    /// What it does, for plans.
    fn describe(&self) -> String;
    /// The output columns.
    fn schema(&self) -> SchemaRef;
    /// Whether output rows keep their input row's `series`, so a partitioning on it
    /// survives.
    fn keeps_series(&self) -> bool;
    fn apply(&self, batch: RecordBatch) -> DfResult<RecordBatch>;
    /// Its wire form (the plan codec); the decoder is registered in `codec.rs`.
    fn encode(&self) -> DfResult<Vec<u8>>;
}

/// The logical node.
#[derive(Clone)]
pub(crate) struct Unary {
    input: LogicalPlan,
    pub(super) op: Arc<dyn RowOp>,
    schema: DFSchemaRef,
}

impl Unary {
    /// `input` mapped by `op`.
    pub(super) fn plan_node(
        input: LogicalPlan,
        op: impl RowOp,
    ) -> Result<LogicalPlan, PromqlError> {
        let schema = Arc::new(DFSchema::try_from(op.schema().as_ref().clone()).map_err(df_error)?);
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(Unary {
                input,
                op: Arc::new(op),
                schema,
            }),
        }))
    }

    pub(super) fn plan(
        &self,
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = inputs else {
            return internal_err!("{} has one input, got {}", self.op.name(), inputs.len());
        };
        Ok(Arc::new(UnaryExec::new(input.clone(), self.op.clone())))
    }
}

// Compared and hashed by identity: each is made once per query.
identity_node!(Unary, op, input);

impl UserDefinedLogicalNodeCore for Unary {
    fn name(&self) -> &str {
        self.op.name()
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
        write!(f, "{}: {}", self.op.name(), self.op.describe())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<DfExpr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("{} has one input", self.op.name());
        };
        Ok(Unary {
            input,
            ..self.clone()
        })
    }
}

/// The operator: the input's partitions, each mapped batch by batch.
pub(crate) struct UnaryExec {
    input: Arc<dyn ExecutionPlan>,
    pub(super) op: Arc<dyn RowOp>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl UnaryExec {
    pub(super) fn new(input: Arc<dyn ExecutionPlan>, op: Arc<dyn RowOp>) -> Self {
        let p = input.properties();
        let partitioning = if op.keeps_series() {
            p.output_partitioning().clone()
        } else {
            // A hash partitioning on `series` does not survive rewriting `series`.
            Partitioning::UnknownPartitioning(p.output_partitioning().partition_count())
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(op.schema()),
            partitioning,
            p.emission_type,
            p.boundedness,
        );
        UnaryExec {
            input,
            op,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl fmt::Debug for UnaryExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}Exec({})", self.op.name(), self.op.describe())
    }
}

impl DisplayAs for UnaryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}Exec: {}", self.op.name(), self.op.describe())
    }
}

impl ExecutionPlan for UnaryExec {
    fn name(&self) -> &str {
        "UnaryExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.pop() else {
            return internal_err!("{}Exec has one input", self.op.name());
        };
        Ok(Arc::new(UnaryExec::new(input, self.op.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let op = self.op.clone();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = self.input.execute(partition, ctx)?.map(move |b| {
            let b = b?;
            let _timer = baseline.elapsed_compute().timer();
            let out = op.apply(b)?;
            baseline.record_output(out.num_rows());
            Ok(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.op.schema(),
            stream,
        )))
    }
}
