//! Stopping SQL that never yields.
//!
//! Aborting a query's task only takes effect at an await point, and some DataFusion
//! operators can run for hours without one: a cross join emits `left × right` rows from
//! buffered input in one tight loop, and the aggregate above it pulls them all. The last
//! physical optimizer rule of an HTTP session therefore puts a [`CancelExec`] above every
//! operator: it passes batches through unchanged and, before each one, checks the query's
//! [`Cancel`] token, so a timed-out or abandoned query fails at the next batch anywhere in
//! its plan and frees its thread.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::promql::Cancel;

/// Wraps every operator of the final plan in a [`CancelExec`].
#[derive(Debug)]
pub struct CancelRule {
    pub cancel: Cancel,
}

impl PhysicalOptimizerRule for CancelRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wrapped = plan.transform_up(|node| {
            if node.name() == "CancelExec" {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(
                Arc::new(CancelExec::new(node, self.cancel.clone())) as Arc<dyn ExecutionPlan>,
            ))
        })?;
        Ok(wrapped.data)
    }

    fn name(&self) -> &str {
        "quiver_cancel"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input through, failing once the query's token says stop.
pub struct CancelExec {
    input: Arc<dyn ExecutionPlan>,
    cancel: Cancel,
}

impl CancelExec {
    fn new(input: Arc<dyn ExecutionPlan>, cancel: Cancel) -> Self {
        CancelExec { input, cancel }
    }

    /// Decoded over `input`: it holds nothing of its own (its wire form is empty); the
    /// token is the decoding statement's.
    pub(super) fn decode(input: Arc<dyn ExecutionPlan>, q: &super::codec::SqlCodec) -> Self {
        CancelExec::new(input, q.cancel())
    }
}

impl fmt::Debug for CancelExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CancelExec")
    }
}

impl DisplayAs for CancelExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CancelExec")
    }
}

impl ExecutionPlan for CancelExec {
    fn name(&self) -> &str {
        "CancelExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("CancelExec needs one child".into()))?;
        Ok(Arc::new(CancelExec::new(input, self.cancel.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.input.schema();
        let cancel = self.cancel.clone();
        let input = self.input.execute(partition, ctx)?;
        let stream = input.map(move |batch| {
            cancel
                .check()
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
