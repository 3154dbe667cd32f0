//! `vector(s)` of a plan-time scalar: one series without labels, `s` at every step — a
//! leaf that makes its rows from the values, a chunk of steps at a time (a subquery's inner
//! grid can have a step per second for days).

use std::fmt;
use std::sync::Arc;

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

use super::identity_node;
use super::{Lowered, df_error, rows, rows_schema};
use crate::model::Labels;
use crate::promql::error::PromqlError;
use prost::Message;

/// Steps per batch.
const CHUNK: usize = 8192;

pub(super) fn lower(values: Vec<f64>) -> Result<Lowered, PromqlError> {
    let node = Constant {
        values: Arc::new(values),
        schema: Arc::new(DFSchema::try_from(rows_schema().as_ref().clone()).map_err(df_error)?),
    };
    Ok(Lowered {
        plan: LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }),
        series: vec![Labels::default()],
    })
}

/// The logical node.
#[derive(Clone)]
pub(crate) struct Constant {
    values: Arc<Vec<f64>>,
    schema: DFSchemaRef,
}

impl Constant {
    pub(super) fn plan(&self) -> Arc<dyn ExecutionPlan> {
        Arc::new(ConstantExec::new(self.values.clone()))
    }
}

// Compared and hashed by identity: each is made once per query.
identity_node!(Constant, values);

impl UserDefinedLogicalNodeCore for Constant {
    fn name(&self) -> &str {
        "Constant"
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
        write!(f, "Constant: {} steps", self.values.len())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<DfExpr>,
        _inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        Ok(self.clone())
    }
}

/// The operator: one partition.
pub(crate) struct ConstantExec {
    pub(super) values: Arc<Vec<f64>>,
    properties: Arc<PlanProperties>,
}

/// `ConstantExec` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ConstantWire {
    /// The value at every step.
    #[prost(double, repeated, tag = "1")]
    pub values: Vec<f64>,
}

impl ConstantExec {
    pub(super) fn encode(&self) -> Vec<u8> {
        ConstantWire {
            values: self.values.to_vec(),
        }
        .encode_to_vec()
    }

    pub(super) fn decode(buf: &[u8]) -> DfResult<Self> {
        let w: ConstantWire = super::codec::decode_wire(buf, "Constant")?;
        Ok(ConstantExec::new(Arc::new(w.values)))
    }

    pub(super) fn new(values: Arc<Vec<f64>>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(rows_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ConstantExec {
            values,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for ConstantExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ConstantExec({} steps)", self.values.len())
    }
}

impl DisplayAs for ConstantExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ConstantExec: {} steps", self.values.len())
    }
}

impl ExecutionPlan for ConstantExec {
    fn name(&self) -> &str {
        "ConstantExec"
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
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let values = self.values.clone();
        let chunks = values.len().div_ceil(CHUNK);
        let stream = futures::stream::iter((0..chunks).map(move |c| {
            let lo = c * CHUNK;
            let hi = (lo + CHUNK).min(values.len());
            rows(
                vec![0; hi - lo],
                (lo as u32..hi as u32).collect(),
                values[lo..hi].to_vec(),
            )
        }));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            rows_schema(),
            stream,
        )))
    }
}
