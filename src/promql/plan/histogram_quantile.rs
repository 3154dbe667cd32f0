//! `histogram_quantile(φ, buckets)` over classic (`le`-labelled) bucket series.
//!
//! Which series form one histogram and each one's bound are labels, fixed when the query
//! is planned: every bucket series is keyed with its histogram ([`Keyed`]), DataFusion
//! hash-partitions the rows by that key, and each partition folds its histograms'
//! buckets per step and computes Prometheus's `BucketQuantile` — the evaluator's own
//! function. A partition holds its histograms' rows (charged to the query's memory pool)
//! until its input ends.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Float64Array, RecordBatch, UInt32Array};
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
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use promql_parser::parser::Call;

use super::keyed::Keyed;
use super::regroup::DROP;
use super::scalar::scalar;
use super::{Lowered, PlanCtx, df_error, ptr_cmp, rows_schema};
use crate::model::{Labels, METRIC_NAME};
use crate::promql::error::PromqlError;
use crate::promql::eval::Annotator;
use crate::promql::functions::{bucket_quantile, parse_le};

pub(super) fn lower(p: &PlanCtx, call: &Call) -> Result<Option<Lowered>, PromqlError> {
    let [phi, buckets] = call.args.args.as_slice() else {
        return Ok(None);
    };
    let Some(phi) = scalar(p, phi) else {
        return Ok(None);
    };
    let Some(input) = p.lower(buckets)? else {
        return Ok(None);
    };
    p.engine.check_quantile(&phi);
    // Histograms by their labels without `le` and `__name__`, in label order.
    let mut by_labels: BTreeMap<Labels, Vec<usize>> = BTreeMap::new();
    let mut les = vec![f64::NAN; input.series.len()];
    for (i, l) in input.series.iter().enumerate() {
        let Some(le) = l.get("le").and_then(parse_le) else {
            continue;
        };
        les[i] = le;
        let key =
            Labels::from_sorted_strs(l.iter().filter(|(k, _)| *k != "le" && *k != METRIC_NAME));
        by_labels.entry(key).or_default().push(i);
    }
    let mut keys = vec![DROP; input.series.len()];
    let mut series = Vec::with_capacity(by_labels.len());
    let mut names = Vec::with_capacity(by_labels.len());
    for (g, (labels, members)) in by_labels.into_iter().enumerate() {
        for &i in &members {
            keys[i] = g as u32;
        }
        // The evaluator names a histogram after its first bucket series.
        let name = input.series[members[0]].metric_name().unwrap_or("");
        names.push(name.strip_suffix("_bucket").unwrap_or(name).to_string());
        series.push(Arc::new(labels));
    }
    let node = HistogramQuantile {
        input: Keyed::plan_node(input.plan, keys, "histogram")?,
        params: Arc::new(Params {
            phi,
            les,
            names,
            annotator: p.engine.annotator(),
        }),
        schema: Arc::new(DFSchema::try_from(rows_schema().as_ref().clone()).map_err(df_error)?),
    };
    Ok(Some(Lowered {
        plan: LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }),
        series,
    }))
}

/// What the fold needs, fixed at planning.
pub(crate) struct Params {
    /// φ at every step.
    pub(super) phi: Vec<f64>,
    /// Upper bound of every input series (`NaN`: not a bucket).
    pub(super) les: Vec<f64>,
    /// Metric name of every histogram, for the monotonicity annotation.
    pub(super) names: Vec<String>,
    pub(super) annotator: Annotator,
}

/// The logical node; its input is keyed by histogram.
#[derive(Clone)]
pub(crate) struct HistogramQuantile {
    input: LogicalPlan,
    params: Arc<Params>,
    schema: DFSchemaRef,
}

impl HistogramQuantile {
    pub(super) fn plan(
        &self,
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = inputs else {
            return internal_err!("HistogramQuantile has one input");
        };
        Ok(Arc::new(HistogramQuantileExec::new(
            input.clone(),
            self.params.clone(),
        )))
    }
}

impl fmt::Debug for HistogramQuantile {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        UserDefinedLogicalNodeCore::fmt_for_explain(self, f)
    }
}

impl PartialEq for HistogramQuantile {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.params, &other.params) && self.input == other.input
    }
}

impl Eq for HistogramQuantile {}

impl PartialOrd for HistogramQuantile {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(ptr_cmp(&self.params, &other.params))
    }
}

impl Hash for HistogramQuantile {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.params) as usize).hash(state);
    }
}

impl UserDefinedLogicalNodeCore for HistogramQuantile {
    fn name(&self) -> &str {
        "HistogramQuantile"
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
        write!(
            f,
            "HistogramQuantile: {} histograms",
            self.params.names.len()
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<DfExpr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("HistogramQuantile has one input");
        };
        Ok(HistogramQuantile {
            input,
            ..self.clone()
        })
    }
}

/// The operator: its input hash-partitioned by histogram, one fold per partition.
pub(crate) struct HistogramQuantileExec {
    input: Arc<dyn ExecutionPlan>,
    pub(super) params: Arc<Params>,
    properties: Arc<PlanProperties>,
}

impl HistogramQuantileExec {
    pub(super) fn new(input: Arc<dyn ExecutionPlan>, params: Arc<Params>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(rows_schema()),
            Partitioning::UnknownPartitioning(
                input.properties().output_partitioning().partition_count(),
            ),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        HistogramQuantileExec {
            input,
            params,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for HistogramQuantileExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "HistogramQuantileExec")
    }
}

impl DisplayAs for HistogramQuantileExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "HistogramQuantileExec: {} histograms of {} buckets",
            self.params.names.len(),
            self.params.les.iter().filter(|l| !l.is_nan()).count()
        )
    }
}

impl ExecutionPlan for HistogramQuantileExec {
    fn name(&self) -> &str {
        "HistogramQuantileExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        // Column 3 of the keyed rows is the histogram.
        vec![Distribution::KeyPartitioned(vec![Arc::new(
            PhysColumn::new(super::keyed::KEY, 3),
        )])]
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
        let Some(input) = children.pop() else {
            return internal_err!("HistogramQuantileExec has one input");
        };
        Ok(Arc::new(HistogramQuantileExec::new(
            input,
            self.params.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, ctx.clone())?;
        let params = self.params.clone();
        let reservation = MemoryConsumer::new(format!("HistogramQuantile[{partition}]"))
            .register(ctx.memory_pool());
        let fold = async move {
            // (histogram, step) → (bound, count) of its buckets with a sample there.
            let mut buckets: HashMap<(u32, u32), Vec<(f64, f64)>> = HashMap::new();
            let mut input = input;
            while let Some(b) = input.try_next().await? {
                reservation.try_grow(b.num_rows() * 48)?;
                let series = b.column(0).as_primitive::<UInt32Type>();
                let step = b.column(1).as_primitive::<UInt32Type>();
                let value = b.column(2).as_primitive::<Float64Type>();
                let key = b.column(3).as_primitive::<UInt32Type>();
                for i in 0..b.num_rows() {
                    let le = params.les[series.value(i) as usize];
                    buckets
                        .entry((key.value(i), step.value(i)))
                        .or_default()
                        .push((le, value.value(i)));
                }
            }
            let mut cells: Vec<_> = buckets.into_iter().collect();
            cells.sort_unstable_by_key(|(k, _)| *k);
            let (mut s, mut t, mut v) = (Vec::new(), Vec::new(), Vec::new());
            for ((g, step), mut bs) in cells {
                let phi = params.phi.get(step as usize).copied().unwrap_or(f64::NAN);
                let (q, forced) = bucket_quantile(phi, &mut bs);
                if forced {
                    let name = &params.names[g as usize];
                    params.annotator.info(format!("input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {name:?}"));
                }
                s.push(g);
                t.push(step);
                v.push(q);
            }
            drop(reservation);
            Ok(RecordBatch::try_new(
                rows_schema(),
                vec![
                    Arc::new(UInt32Array::from(s)),
                    Arc::new(UInt32Array::from(t)),
                    Arc::new(Float64Array::from(v)),
                ],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            rows_schema(),
            futures::stream::once(fold).boxed(),
        )))
    }
}
