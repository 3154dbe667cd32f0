//! Maps each input series to an output series (an aggregation's group) by a table fixed
//! when the query is planned; rows of series mapped to [`DROP`] are left out.
//!
//! This is how labels stay out of the data path: `sum by (job)` is this map (series →
//! its `job` group) followed by DataFusion's aggregation on `(series, step)`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::UInt32Type;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, internal_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    Expr as DfExpr, Extension, LogicalPlan, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use super::{ptr_cmp, rows_schema};

/// Output series of input series that leave the result.
pub(super) const DROP: u32 = u32::MAX;

/// The logical node.
#[derive(Clone)]
pub(crate) struct Regroup {
    input: LogicalPlan,
    /// Output series of each input series.
    map: Arc<Vec<u32>>,
    /// Output series count, for plans.
    outputs: usize,
}

impl Regroup {
    /// `input` with its series mapped by `map` onto `outputs` series.
    pub(super) fn plan_node(input: LogicalPlan, map: Vec<u32>, outputs: usize) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(Regroup {
                input,
                map: Arc::new(map),
                outputs,
            }),
        })
    }

    pub(super) fn plan(
        &self,
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = inputs else {
            return internal_err!("Regroup has one input, got {}", inputs.len());
        };
        Ok(Arc::new(RegroupExec::new(
            input.clone(),
            self.map.clone(),
            self.outputs,
        )))
    }
}

impl fmt::Debug for Regroup {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        UserDefinedLogicalNodeCore::fmt_for_explain(self, f)
    }
}

impl PartialEq for Regroup {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.map, &other.map) && self.input == other.input
    }
}

impl Eq for Regroup {}

impl PartialOrd for Regroup {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(ptr_cmp(&self.map, &other.map))
    }
}

impl Hash for Regroup {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.map) as usize).hash(state);
    }
}

impl UserDefinedLogicalNodeCore for Regroup {
    fn name(&self) -> &str {
        "Regroup"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<DfExpr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Regroup: {} series → {}", self.map.len(), self.outputs)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<DfExpr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("Regroup has one input");
        };
        Ok(Regroup {
            input,
            ..self.clone()
        })
    }
}

/// The operator: keeps its input's partitions.
pub(crate) struct RegroupExec {
    input: Arc<dyn ExecutionPlan>,
    map: Arc<Vec<u32>>,
    outputs: usize,
    properties: Arc<PlanProperties>,
}

impl RegroupExec {
    fn new(input: Arc<dyn ExecutionPlan>, map: Arc<Vec<u32>>, outputs: usize) -> Self {
        let p = input.properties();
        // The input's partitions, but not what they declare: a hash partitioning on
        // `series` does not survive rewriting `series`.
        let properties = PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(rows_schema()),
            Partitioning::UnknownPartitioning(p.output_partitioning().partition_count()),
            p.emission_type,
            p.boundedness,
        );
        RegroupExec {
            input,
            map,
            outputs,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for RegroupExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RegroupExec({} → {})", self.map.len(), self.outputs)
    }
}

impl DisplayAs for RegroupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RegroupExec: {} series → {}",
            self.map.len(),
            self.outputs
        )
    }
}

impl ExecutionPlan for RegroupExec {
    fn name(&self) -> &str {
        "RegroupExec"
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.pop() else {
            return internal_err!("RegroupExec has one input");
        };
        Ok(Arc::new(RegroupExec::new(
            input,
            self.map.clone(),
            self.outputs,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let map = self.map.clone();
        let stream = self
            .input
            .execute(partition, ctx)?
            .map(move |b| regroup(&map, b?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            rows_schema(),
            stream,
        )))
    }
}

fn regroup(map: &[u32], b: RecordBatch) -> DfResult<RecordBatch> {
    let series = b.column(0).as_primitive::<UInt32Type>();
    let mapped: UInt32Array = series
        .values()
        .iter()
        .map(|&s| map.get(s as usize).copied().unwrap_or(DROP))
        .collect::<Vec<u32>>()
        .into();
    let keep: datafusion::arrow::array::BooleanArray =
        mapped.values().iter().map(|&g| Some(g != DROP)).collect();
    let out = RecordBatch::try_new(
        rows_schema(),
        vec![Arc::new(mapped), b.column(1).clone(), b.column(2).clone()],
    )?;
    if keep.true_count() == keep.len() {
        return Ok(out);
    }
    Ok(filter_record_batch(&out, &keep)?)
}
