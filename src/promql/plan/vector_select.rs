//! Instant vector selector: for each series and step, the newest sample in
//! `(t - lookback, t]` unless it is a stale marker.
//!
//! A leaf: the selector's series are resolved through the catalog when the query is
//! planned (they are the node's series table, ascending by id); [`VectorSelectExec`] reads
//! them from the query's storage snapshot, one output partition per contiguous series-id
//! range, a chunk of series at a time, charging the samples read against the query's
//! limit as each chunk arrives.

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
use promql_parser::parser::VectorSelector;

use super::{Lowered, PlanCtx, external, ptr_cmp, rows_schema};
use crate::catalog::SeriesId;
use crate::model::is_stale_marker;
use crate::promql::error::PromqlError;
use crate::promql::selector::{at_ms, eval_times, matcher_sets, offset_ms};
use crate::storage::{Scan, SeriesRun};

/// What the operator reads and how.
pub(crate) struct Selection {
    /// The selected series (ascending id: the series table's order) over the samples any
    /// step can look back to.
    scan: Scan,
    /// Evaluation time of every step (`@` and `offset` applied).
    times: Arc<Vec<i64>>,
    lookback: i64,
    charged: Arc<AtomicUsize>,
    max_samples: usize,
    cancel: crate::promql::Cancel,
    /// The selector as written, for plans.
    text: String,
}

/// The logical node: a leaf with the rows schema.
#[derive(Clone)]
pub(crate) struct VectorSelect {
    sel: Arc<Selection>,
    schema: DFSchemaRef,
}

/// Lowers a vector selector; its series table is its series in ascending id.
pub(super) fn lower(p: &PlanCtx, vs: &VectorSelector) -> Result<Lowered, PromqlError> {
    let engine = p.engine;
    let times = eval_times(&p.ctx, at_ms(&vs.at, &p.ctx), offset_ms(&vs.offset));
    let lo = times.iter().copied().min().unwrap_or(0);
    let hi = times.iter().copied().max().unwrap_or(0);
    let lookback = p.ctx.lookback;
    let catalog = engine.storage.catalog();
    let mut ids = roaring::RoaringBitmap::new();
    for ms in matcher_sets(vs)? {
        ids |= catalog.select(&ms);
    }
    engine.scope(&mut ids);
    let scan = engine
        .snapshot()
        .scan(&ids, lo.saturating_sub(lookback).saturating_add(1), hi);
    let labels = catalog.labels_many(scan.ids().iter().copied());
    // A series retention removed after the scan was made has no labels: leave it out.
    let (scan, series) = if labels.iter().all(Option::is_some) {
        (scan, labels.into_iter().flatten().collect())
    } else {
        let keep: roaring::RoaringBitmap = scan
            .ids()
            .iter()
            .zip(&labels)
            .filter(|(_, l)| l.is_some())
            .map(|(id, _)| *id)
            .collect();
        let scan = engine
            .snapshot()
            .scan(&keep, lo.saturating_sub(lookback).saturating_add(1), hi);
        let series = catalog
            .labels_many(scan.ids().iter().copied())
            .into_iter()
            .map(|l| l.unwrap_or_default())
            .collect();
        (scan, series)
    };
    let sel = Selection {
        scan,
        times: Arc::new(times),
        lookback,
        charged: p.charged.clone(),
        max_samples: engine.opts.max_samples,
        cancel: engine.opts.cancel.clone(),
        text: vs.to_string(),
    };
    let node = VectorSelect {
        sel: Arc::new(sel),
        schema: Arc::new(
            DFSchema::try_from(rows_schema().as_ref().clone()).map_err(super::df_error)?,
        ),
    };
    Ok(Lowered {
        plan: LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }),
        series,
    })
}

impl fmt::Debug for VectorSelect {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        UserDefinedLogicalNodeCore::fmt_for_explain(self, f)
    }
}

impl PartialEq for VectorSelect {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.sel, &other.sel)
    }
}

impl Eq for VectorSelect {}

impl PartialOrd for VectorSelect {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(ptr_cmp(&self.sel, &other.sel))
    }
}

impl Hash for VectorSelect {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.sel) as usize).hash(state);
    }
}

impl UserDefinedLogicalNodeCore for VectorSelect {
    fn name(&self) -> &str {
        "VectorSelect"
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
            "VectorSelect: {}, series={}, steps={}, lookback={}ms",
            self.sel.text,
            self.sel.scan.num_series(),
            self.sel.times.len(),
            self.sel.lookback
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

impl VectorSelect {
    pub(super) fn plan(&self, partitions: usize) -> Arc<dyn ExecutionPlan> {
        Arc::new(VectorSelectExec::new(self.sel.clone(), partitions))
    }
}

/// The operator: one partition per contiguous series-id range of the scan.
pub(crate) struct VectorSelectExec {
    sel: Arc<Selection>,
    partitions: usize,
    properties: Arc<PlanProperties>,
}

impl VectorSelectExec {
    fn new(sel: Arc<Selection>, partitions: usize) -> Self {
        let partitions = partitions.clamp(1, sel.scan.num_series().max(1));
        let properties = PlanProperties::new(
            EquivalenceProperties::new(rows_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        VectorSelectExec {
            sel,
            partitions,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for VectorSelectExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "VectorSelectExec({})", self.sel.text)
    }
}

impl DisplayAs for VectorSelectExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "VectorSelectExec: {}, series={}, blocks={}, steps={}, partitions={}",
            self.sel.text,
            self.sel.scan.num_series(),
            self.sel.scan.num_blocks(),
            self.sel.times.len(),
            self.partitions
        )
    }
}

/// Series per chunk at most, samples read per chunk about, and rows out per chunk at most
/// (as the range-function operator).
const CHUNK: usize = 4096;
const CHUNK_SAMPLES: usize = 4 << 20;
const CHUNK_ROWS: usize = 4 << 20;

impl ExecutionPlan for VectorSelectExec {
    fn name(&self) -> &str {
        "VectorSelectExec"
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
        let sel = self.sel.clone();
        let part = sel.scan.part(partition, self.partitions);
        let max_series = (CHUNK_ROWS / sel.times.len().max(1)).clamp(1, CHUNK);
        let series = part.series_per_chunk(CHUNK_SAMPLES, max_series);
        let stream = part.chunks(series).map(move |chunk| {
            let chunk = chunk.map_err(|e| external(PromqlError::Storage(e)))?;
            let n: usize = chunk.iter().map(SeriesRun::len).sum();
            if sel.charged.fetch_add(n, Ordering::Relaxed) + n > sel.max_samples {
                return Err(external(PromqlError::TooManySamples));
            }
            sel.cancel.check().map_err(external)?;
            select_chunk(&sel, &chunk)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            rows_schema(),
            stream,
        )))
    }
}

/// The rows of one chunk of series.
fn select_chunk(sel: &Selection, chunk: &[SeriesRun]) -> DfResult<RecordBatch> {
    let ids: &[SeriesId] = sel.scan.ids();
    let (mut series, mut step, mut value) = (Vec::new(), Vec::new(), Vec::new());
    for s in chunk {
        let Ok(index) = ids.binary_search(&s.id) else {
            continue;
        };
        for (i, &te) in sel.times.iter().enumerate() {
            let j = s.ts.partition_point(|&t| t <= te);
            if j == 0 {
                continue;
            }
            let (t, v) = (s.ts[j - 1], s.vals[j - 1]);
            if t > te - sel.lookback && !is_stale_marker(v) {
                series.push(index as u32);
                step.push(i as u32);
                value.push(v);
            }
        }
    }
    Ok(RecordBatch::try_new(
        rows_schema(),
        vec![
            Arc::new(UInt32Array::from(series)),
            Arc::new(UInt32Array::from(step)),
            Arc::new(Float64Array::from(value)),
        ],
    )?)
}
