//! PromQL lowered to DataFusion plans.
//!
//! **Data model.** Every instant-vector node is a stream of `(series, step, value)` rows:
//! `series` indexes the node's *series table* (the label set of each output series),
//! `step` indexes the query's steps. Series tables are known when the query is planned —
//! the catalog resolves selectors to series before any sample is read, and every node's
//! output labels follow from its inputs' labels (aggregation groups, dropped names) — so
//! labels never travel with samples: operators are numeric, a grouping is a `u32 → u32` map
//! fixed at planning, and the rows are three fixed-width columns whatever the labels.
//!
//! **Operators**, one per file with its logical node, physical planning, execution and
//! tests: [`leaf`] (what every leaf over the storage scan shares: one partition per series
//! range, chunked reads charged to the query's limit), [`vector_select`] and [`range_fn`]
//! (its two sources: instant selection, a range function of a matrix selector),
//! [`regroup`] (maps input series to output groups). [`aggregate`] lowers `sum`, `avg`,
//! `count`, `group`, `min` and `max` onto [`step_agg`] (cells indexed by group and step;
//! partial per partition, repartitioned by group, final) with Prometheus's arithmetic
//! ([`udaf`]), or DataFusion's hash aggregation when the cells would be too many.
//!
//! A node kind without a lowering yet makes [`Engine::lower`] answer `None`, and the
//! step-vector evaluator runs that subtree (see `docs/conformance.md`).

mod absent;
mod agg_one;
mod aggregate;
mod binary;
mod codec;
#[cfg(test)]
pub(super) use codec::PlanCodec;
mod constant;
pub(crate) mod decline;
mod distributed;
pub use distributed::Distribution;
pub(crate) use distributed::{task_ext, task_session, worth_retrying};
pub(crate) mod explain;
mod fold;
mod group_fold;
mod histogram_quantile;
mod instant_fn;
mod keyed;
mod leaf;
mod map_values;
mod merge;
mod pace;
mod range_fn;
mod regroup;
mod report;
mod scalar;
pub(crate) mod series_ref;
mod set_op;
mod step_agg;
mod step_join;
mod subquery;
mod top_rows;
mod udaf;
mod unary;
mod vector_match;
mod vector_select;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionConfig, SessionContext};
use promql_parser::parser::Expr;

use super::engine::{Ctx, Engine};
use super::error::PromqlError;
use super::func::Func;
use super::value::{Series, Value};
use crate::model::Labels;
use decline::Decline;

/// Column names of a vector node's rows.
pub(super) const SERIES: &str = "series";
pub(super) const STEP: &str = "step";
pub(super) const VALUE: &str = "value";

/// `(series u32, step u32, value f64)`.
pub(super) fn rows_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SERIES, DataType::UInt32, false),
        Field::new(STEP, DataType::UInt32, false),
        Field::new(VALUE, DataType::Float64, false),
    ]))
}

/// A batch of rows from its three columns.
pub(super) fn rows(series: Vec<u32>, step: Vec<u32>, value: Vec<f64>) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::{Float64Array, UInt32Array};
    Ok(RecordBatch::try_new(
        rows_schema(),
        vec![
            Arc::new(UInt32Array::from(series)),
            Arc::new(UInt32Array::from(step)),
            Arc::new(Float64Array::from(value)),
        ],
    )?)
}

/// A lowered instant-vector expression: its plan, and the label set of each series its
/// rows name.
pub(super) struct Lowered {
    pub plan: LogicalPlan,
    pub series: Vec<Labels>,
}

/// What every lowering of one query shares.
pub(super) struct PlanCtx<'a> {
    pub engine: &'a Engine,
    pub ctx: Ctx,
    /// Samples read by every scan of the plan, against `--query-max-samples`.
    pub charged: Arc<AtomicUsize>,
    /// Why the expression has no plan: the first node that declined.
    pub declined: parking_lot::Mutex<Option<Decline>>,
    /// Per-step values the plan's nodes hold (times, window ends, parameters), bounded by
    /// `--query-max-samples` like the evaluator's points: a deep expression over a fine
    /// subquery grid must not allocate gigabytes before reading a sample.
    pub held: Arc<AtomicUsize>,
}

impl PlanCtx<'_> {
    /// Lowers `expr`, or `None` when some node in it has no lowering yet.
    pub fn lower(&self, expr: &Expr) -> Result<Option<Lowered>, PromqlError> {
        let lowered = self.lower_node(expr)?;
        if lowered.is_none() {
            let mut d = self.declined.lock();
            if d.is_none() {
                *d = Some(Decline::unlowered(expr));
            }
        }
        Ok(lowered)
    }

    /// Accounts for `n` per-step values a node keeps.
    pub fn hold(&self, n: usize) -> Result<(), PromqlError> {
        let total = self
            .held
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(n);
        if total > self.engine.opts.max_samples {
            return Err(PromqlError::TooManySamples);
        }
        Ok(())
    }

    /// Declines to lower a node, saying why (kept when it is the first reason).
    pub fn decline(&self, why: Decline) -> Result<Option<Lowered>, PromqlError> {
        let mut d = self.declined.lock();
        if d.is_none() {
            *d = Some(why);
        }
        Ok(None)
    }

    fn lower_node(&self, expr: &Expr) -> Result<Option<Lowered>, PromqlError> {
        self.engine.check()?;
        if self.ctx.steps.len() > u32::MAX as usize {
            return self.decline(Decline::TooManySteps);
        }
        match expr {
            Expr::Paren(p) => self.lower(&p.expr),
            Expr::VectorSelector(vs) => vector_select::lower(self, vs),
            Expr::Call(call) => match Func::of(call.func.name) {
                Some(Func::HistogramQuantile) => histogram_quantile::lower(self, call),
                _ => match range_fn::lower(self, call)? {
                    Some(l) => Ok(Some(l)),
                    None => instant_fn::lower(self, call),
                },
            },
            Expr::Aggregate(a) => aggregate::lower(self, a),
            Expr::Binary(b) => binary::lower(self, b),
            Expr::Unary(u) => instant_fn::map(
                self,
                &u.expr,
                crate::promql::kernels::value_fn::ValueFn::Neg,
                vec![],
                vec![],
            ),
            _ => Ok(None),
        }
    }
}

impl Engine {
    /// Lowers `expr` evaluated over `ctx` to a DataFusion plan, or `None` when some node
    /// has no lowering yet.
    pub(super) fn lower(&self, expr: &Expr, ctx: Ctx) -> Result<Option<Lowered>, PromqlError> {
        self.plan_ctx(ctx).lower(expr)
    }

    fn plan_ctx(&self, ctx: Ctx) -> PlanCtx<'_> {
        PlanCtx {
            engine: self,
            ctx,
            charged: self.loaded(),
            declined: Default::default(),
            held: Default::default(),
        }
    }

    /// Why `expr`, evaluated over `ctx`, is not one DataFusion plan (`None`: it is).
    pub(super) fn plan_fallback(
        &self,
        expr: &Expr,
        ctx: Ctx,
    ) -> Result<Option<String>, PromqlError> {
        if expr.value_type() != promql_parser::parser::value::ValueType::Vector {
            return Ok(Some(Decline::NotAVector(expr.value_type()).to_string()));
        }
        let p = self.plan_ctx(ctx);
        if p.lower(expr)?.is_some() {
            return Ok(None);
        }
        Ok(p.declined.lock().take().map(|d| d.to_string()))
    }

    /// Evaluates `expr` as a DataFusion plan when it has one and its leaves do at least
    /// [`QueryOptions::evaluate_below`](crate::promql::QueryOptions::evaluate_below) work.
    pub(super) async fn planned(&self, expr: &Expr, ctx: Ctx) -> Result<Planned, PromqlError> {
        let Some(lowered) = self.lower(expr, ctx)? else {
            return Ok(Planned::Declined);
        };
        if self.too_small_to_plan(&lowered.plan) {
            return Ok(Planned::Small);
        }
        // Counted once lowered: a plan that then fails (a limit, a per-step PromQL error)
        // still ran as a plan.
        self.count_planned();
        let n = ctx.steps.len();
        self.check_points(lowered.series.len(), n)?;
        let batches = self.run_plan(&lowered.plan).await?;
        let mut out = assemble(&lowered.series, n, &batches)?;
        value_order(expr, &mut out);
        Ok(Planned::Ran(Value::Vector(out)))
    }

    /// Whether the leaves of `plan` do less work than
    /// [`QueryOptions::evaluate_below`](crate::promql::QueryOptions::evaluate_below).
    pub(super) fn too_small_to_plan(&self, plan: &LogicalPlan) -> bool {
        let below = self.opts.evaluate_below;
        below > 0 && leaf_work(plan, below) < below
    }

    /// [`Engine::session_with`] the engine's partitions, whatever the plan.
    #[cfg(test)]
    pub(super) fn session(&self) -> DfResult<SessionContext> {
        self.session_with(self.opts.partitions)
    }

    /// [`Engine::session_with`] the partitions `plan` runs in ([`Engine::partitions_for`]).
    pub(super) fn session_for(&self, plan: &LogicalPlan) -> DfResult<SessionContext> {
        self.session_with(self.partitions_for(plan))
    }

    /// The engine's partitions, or one when the leaves of `plan` do less work than
    /// [`QueryOptions::serial_below`](crate::promql::QueryOptions::serial_below): a small
    /// plan in two partitions repartitions by hash between its leaves and its folds and
    /// joins (a task and a channel per partition and operator) and splits each
    /// aggregation in two, and physical planning places all of that. `sum(up)/count(up)`
    /// over 108 series took 0.5-0.8 ms to plan and 0.8-1.0 ms to run that way.
    pub(super) fn partitions_for(&self, plan: &LogicalPlan) -> usize {
        let (parallel, below) = (self.opts.partitions.max(1), self.opts.serial_below);
        if parallel == 1 || below == 0 {
            return parallel;
        }
        let work = leaf_work(plan, below);
        if work < below { 1 } else { parallel }
    }

    /// A DataFusion session for one query's plan: Quiver's operators, the query's memory
    /// pool and `partitions`. Nothing is registered by name (a lowered plan carries its
    /// functions, and SQL has its own session), and the logical optimizer has no rules: a
    /// lowered plan is already what it computes, and registering DataFusion's functions
    /// and running its ~30 rewrite passes were most of a constant query's fixed cost.
    ///
    /// Nor is a one-partition input dealt out round-robin to the others: leaves already
    /// read in as many partitions as there are cores, so what has one partition here is a
    /// constant or a fold's few rows, for which the repartition's channel and task cost
    /// more than the operator above it (`day_of_week()`: 0.13 of its 0.15 ms executing).
    fn session_with(&self, partitions: usize) -> DfResult<SessionContext> {
        let config = SessionConfig::new()
            .with_target_partitions(partitions.max(1))
            .with_round_robin_repartition(false);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(crate::memory::query_pool(self.opts.memory_limit_bytes))
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_analyzer_rules(vec![])
            .with_optimizer_rules(vec![])
            .with_physical_optimizer_rules(physical_rules())
            .with_query_planner(Arc::new(PromQueryPlanner))
            .build();
        Ok(SessionContext::new_with_state(state))
    }
}

/// The work of the leaves of `plan` (`Leaf::work`), counted until it reaches `cap`.
fn leaf_work(plan: &LogicalPlan, cap: usize) -> usize {
    let mut work = 0usize;
    let _ = plan.apply(|node| {
        if let LogicalPlan::Extension(e) = node
            && let Some(leaf) = e.node.as_any().downcast_ref::<leaf::Leaf>()
        {
            work = work.saturating_add(leaf.work(cap));
        }
        Ok(if work >= cap {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    work
}

/// What became of an expression offered to the planner.
pub(crate) enum Planned {
    /// It ran as a plan.
    Ran(Value),
    /// A node has no lowering: the evaluator runs that node and offers its children.
    Declined,
    /// It lowers, but its leaves do too little work to be worth a plan: the evaluator runs
    /// all of it.
    Small,
}

/// The physical optimizer rules a lowered plan needs, in DataFusion's order: join sides
/// and modes, the partitioning each operator asks for, partial and final aggregations
/// combined where no shuffle separates them, projections pushed down, and cooperative
/// yielding (so a timeout or a cancel is seen). DataFusion's other rules (limits, TopK,
/// windows, sorts, statistics, the output requirement and the final sanity check) find
/// nothing to do in a PromQL plan, which has none of those, but each still walks it.
/// The analyzer is off for the same reason: lowering builds typed plans (casts are
/// explicit), so type coercion had nothing to add. Without them a constant's physical
/// planning fell from 0.15 to 0.11 ms, and the peer queries' physical plans are the same.
fn physical_rules()
-> Vec<Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>> {
    use datafusion::physical_optimizer::combine_partial_final_agg::CombinePartialFinalAggregate;
    use datafusion::physical_optimizer::ensure_coop::EnsureCooperative;
    use datafusion::physical_optimizer::ensure_requirements::EnsureRequirements;
    use datafusion::physical_optimizer::join_selection::JoinSelection;
    use datafusion::physical_optimizer::projection_pushdown::ProjectionPushdown;
    vec![
        Arc::new(JoinSelection::new()),
        Arc::new(EnsureRequirements::new()),
        Arc::new(CombinePartialFinalAggregate::new()),
        Arc::new(ProjectionPushdown::new()),
        Arc::new(EnsureCooperative::new()),
    ]
}

/// Rows of a vector plan as series over the steps; series without a value are left out.
fn assemble(
    table: &[Labels],
    steps: usize,
    batches: &[RecordBatch],
) -> Result<Vec<Series>, PromqlError> {
    let mut out: Vec<Series> = table
        .iter()
        .map(|l| Series::new(l.clone(), steps))
        .collect();
    for b in batches {
        let series = b.column(0).as_primitive::<UInt32Type>();
        let step = b.column(1).as_primitive::<UInt32Type>();
        let value = b.column(2).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let (s, t) = (series.value(i) as usize, step.value(i) as usize);
            let slot = out
                .get_mut(s)
                .and_then(|x| x.vals.get_mut(t))
                .ok_or_else(|| PromqlError::exec(format!("plan row ({s}, {t}) out of range")))?;
            *slot = Some(value.value(i));
        }
    }
    out.retain(|s| !s.is_empty());
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

/// An instant `topk`/`bottomk` answers in value order (as the evaluator does), `sort*()`
/// as it says, the rest in label order.
fn value_order(expr: &Expr, out: &mut [Series]) {
    use crate::promql::kernels::args::{string_arg, unwrap_paren};
    use crate::promql::kernels::grouping::{sort_by_value, sort_vector};
    let e = unwrap_paren(expr);
    if let Expr::Call(c) = e
        && let Some(f) = Func::of(c.func.name)
        && f.is_sort()
    {
        let names: Vec<String> = c.args.args[1..]
            .iter()
            .filter_map(|a| string_arg(a).ok())
            .collect();
        sort_vector(f, &names, out);
        return;
    }
    let Expr::Aggregate(a) = e else { return };
    if out.first().is_none_or(|s| s.vals.len() != 1) {
        return;
    }
    match crate::promql::op::AggOp::of(a.op) {
        Some(crate::promql::op::AggOp::TopK) => sort_by_value(out, true),
        Some(crate::promql::op::AggOp::BottomK) => sort_by_value(out, false),
        _ => {}
    }
}

/// A DataFusion error as the query's error: limits, timeouts and cancellation keep their
/// kind.
pub(super) fn df_error(e: DataFusionError) -> PromqlError {
    match e.find_root() {
        DataFusionError::External(inner) => match inner.downcast_ref::<PromqlError>() {
            Some(PromqlError::TooManySamples) => PromqlError::TooManySamples,
            Some(PromqlError::Timeout) => PromqlError::Timeout,
            Some(PromqlError::Canceled) => PromqlError::Canceled,
            // An operator's PromQL error, worded as the evaluator words it.
            Some(PromqlError::Execution(msg)) => PromqlError::exec(msg.clone()),
            Some(_) => PromqlError::exec(e.to_string()),
            // From another process the error arrives as its text (datafusion-distributed
            // keeps an external error's message, not its type): the limits keep their kind,
            // and an operator's error its wording.
            None => of_text(&inner.to_string()),
        },
        DataFusionError::ResourcesExhausted(msg) => PromqlError::exec(format!(
            "query processing would use more memory than a query may (--query-memory-limit): {msg}"
        )),
        _ => PromqlError::exec(e.to_string()),
    }
}

/// A PromQL error known by its text only.
fn of_text(text: &str) -> PromqlError {
    [
        PromqlError::TooManySamples,
        PromqlError::Timeout,
        PromqlError::Canceled,
    ]
    .into_iter()
    .find(|kind| kind.to_string() == text)
    .unwrap_or_else(|| PromqlError::exec(text))
}

/// A query error inside DataFusion.
pub(super) fn external(e: PromqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// DataFusion's planner with Quiver's operators.
#[derive(Debug)]
struct PromQueryPlanner;

#[async_trait]
impl QueryPlanner for PromQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(PromExtensionPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// Plans each operator's logical node as its execution plan.
struct PromExtensionPlanner;

#[async_trait]
impl ExtensionPlanner for PromExtensionPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let partitions = session.config().target_partitions();
        if let Some(n) = node.as_any().downcast_ref::<leaf::Leaf>() {
            return Ok(Some(n.plan(partitions)));
        }
        if let Some(n) = node.as_any().downcast_ref::<constant::Constant>() {
            return Ok(Some(n.plan()));
        }
        if let Some(n) = node.as_any().downcast_ref::<unary::Unary>() {
            return Ok(Some(n.plan(physical_inputs)?));
        }
        if let Some(n) = node.as_any().downcast_ref::<fold::Fold>() {
            return Ok(Some(n.plan(physical_inputs)?));
        }
        if let Some(n) = node.as_any().downcast_ref::<step_join::StepJoin>() {
            return Ok(Some(n.plan(physical_inputs)?));
        }
        if let Some(n) = node.as_any().downcast_ref::<step_agg::StepAgg>() {
            let repartition = session
                .config()
                .options()
                .optimizer
                .repartition_aggregations;
            return Ok(Some(n.plan(physical_inputs, repartition)?));
        }
        Ok(None)
    }
}

/// Whether no two series of a table have one label set (the invariant of every lowered
/// node's table; a lowering that would break it is left to the evaluator).
pub(super) fn unique(series: &[Labels]) -> bool {
    let mut seen = crate::model::hashing::set(series.len());
    series.iter().all(|l| seen.insert(l))
}

/// `Debug` as the node explains itself, and equality, order and hash by the identity of
/// its state `field` (made once per query, with no cheaper equality) and, when named, its
/// `input` plans.
macro_rules! identity_node {
    ($node:ty, $field:ident $(, $input:ident)*) => {
        impl std::fmt::Debug for $node {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                datafusion::logical_expr::UserDefinedLogicalNodeCore::fmt_for_explain(self, f)
            }
        }

        impl PartialEq for $node {
            fn eq(&self, other: &Self) -> bool {
                std::sync::Arc::ptr_eq(&self.$field, &other.$field)
                    $(&& self.$input == other.$input)*
            }
        }

        impl Eq for $node {}

        impl PartialOrd for $node {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(super::ptr_cmp(&self.$field, &other.$field))
            }
        }

        impl std::hash::Hash for $node {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                std::hash::Hash::hash(&(std::sync::Arc::as_ptr(&self.$field) as *const () as usize), state);
            }
        }
    };
}
pub(super) use identity_node;

/// Logical nodes compare and hash by identity: each is made once per query, from state
/// (scans, maps) that has no cheaper equality.
pub(super) fn ptr_cmp<T: ?Sized>(a: &Arc<T>, b: &Arc<T>) -> std::cmp::Ordering {
    (Arc::as_ptr(a) as *const () as usize).cmp(&(Arc::as_ptr(b) as *const () as usize))
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use crate::ingest::{SeriesSamples, WriteBatch};
    use crate::model::Labels;
    use crate::promql::{Engine, QueryOptions, Value};
    use crate::storage::{Storage, WriteWindow};

    /// Eight `http_requests` series (jobs api and app), a sample every 5 minutes.
    pub(crate) async fn storage() -> Arc<Storage> {
        storage_of(0, (0..8).collect()).await
    }

    /// [`storage`]'s series `order`ed as given (so each gets another catalog id), after
    /// `unrelated` series of another metric.
    pub(crate) async fn storage_of(unrelated: usize, order: Vec<usize>) -> Arc<Storage> {
        let s = Storage::in_memory().await.unwrap();
        let other = SeriesSamples {
            labels: Labels::new(vec![("__name__".into(), "unrelated".into())]).unwrap(),
            samples: vec![(0, 1.0)],
        };
        for i in 0..unrelated {
            let mut o = other.clone();
            o.labels = Labels::new(vec![
                ("__name__".into(), "unrelated".into()),
                ("i".into(), i.to_string()),
            ])
            .unwrap();
            s.append(
                WriteBatch {
                    series: vec![o],
                    ..Default::default()
                },
                WriteWindow::Any,
            )
            .await
            .unwrap();
        }
        let series = order
            .into_iter()
            .map(|i| i as i64)
            .map(|i| SeriesSamples {
                labels: Labels::new(vec![
                    ("__name__".into(), "http_requests".into()),
                    ("job".into(), if i < 4 { "api" } else { "app" }.into()),
                    (
                        "group".into(),
                        if i % 4 < 2 { "production" } else { "canary" }.into(),
                    ),
                    ("instance".into(), (i % 2).to_string()),
                ])
                .unwrap(),
                samples: (0..11)
                    .map(|k| (k * 300_000, (k * 10 * (i + 1)) as f64))
                    .collect(),
            })
            .collect();
        s.append(
            WriteBatch {
                histograms: Vec::new(),
                exemplars: Vec::new(),
                dropped_exemplars: 0,
                series,
                metadata: vec![],
            },
            WriteWindow::Any,
        )
        .await
        .unwrap();
        Arc::new(s)
    }

    /// `rate` of a name that does not say counter is an info only where the function gave a
    /// float (Prometheus's `PossibleNonCounterInfo`), in both engines, before and after the
    /// plan's wire round trip, plain and over a subquery.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counter_info_only_where_a_float_came_out() {
        let s = storage().await;
        for (planner, roundtrip_plans) in [(false, false), (true, false), (true, true)] {
            for (q, want) in [
                ("rate(http_requests[1m])", false),
                ("rate(http_requests[10m])", true),
                ("sum(rate(http_requests[10m]))", true),
                ("rate(http_requests[1m:1m])", false),
                ("rate(http_requests[10m:1m])", true),
                ("rate(http_requests_total[10m])", false),
            ] {
                let e = Engine::new(
                    s.clone(),
                    QueryOptions {
                        planner,
                        roundtrip_plans,
                        ..QueryOptions::default()
                    },
                );
                let expr = Engine::parse(q).unwrap();
                e.range(&expr, 1_000_000, 1_300_000, 60_000).await.unwrap();
                if planner {
                    assert!(e.planned_nodes() > 0, "{q}: not planned");
                }
                let infos = e.take_annotations().infos;
                assert_eq!(
                    !infos.is_empty(),
                    want,
                    "{q} (planner {planner}, round trip {roundtrip_plans}): {infos:?}"
                );
            }
        }
    }

    /// Every plan of a query charges the query's one sample counter: two planned
    /// subtrees under an evaluated node may not each load up to the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_share_the_querys_sample_limit() {
        let s = storage().await;
        let run = |q: &str, max_samples: usize| {
            let e = Engine::new(
                s.clone(),
                QueryOptions {
                    max_samples,
                    ..QueryOptions::default()
                },
            );
            let expr = Engine::parse(q).unwrap();
            async move { e.range(&expr, 0, 3_000_000, 60_000).await }
        };
        let one = "sum(http_requests)";
        let mut n = 1;
        while run(one, n).await.is_err() {
            n += 1;
        }
        assert!(n > 8, "the selector reads every series: {n}");
        let two = "sum(http_requests) + max(http_requests)";
        assert!(matches!(
            run(two, n).await,
            Err(crate::promql::PromqlError::TooManySamples)
        ));
        assert!(run(two, 2 * n).await.is_ok());
    }

    /// Below `evaluate_below` an expression runs in the evaluator, all of it; a node the
    /// planner declines leaves each child to decide by its own work, so one small operand
    /// does not keep a large one from its plan. The answers are the evaluator's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_expressions_run_in_the_evaluator() {
        let s = storage().await;
        let (small, large) = (
            "sum(http_requests{instance=\"0\",job=\"api\"})",
            "sum(http_requests)",
        );
        let (start, end, step) = (0, 3_000_000, 60_000);
        let probe = Engine::new(s.clone(), QueryOptions::default());
        let ctx = super::Ctx {
            steps: crate::promql::Steps::new(start, end, step),
            query_start: start,
            query_end: end,
            lookback: 300_000,
            is_range: true,
            query_step: step,
            evaluate: false,
        };
        let work = |q: &str| {
            let lowered = probe
                .lower(&Engine::parse(q).unwrap(), ctx)
                .unwrap()
                .unwrap();
            super::leaf_work(&lowered.plan, usize::MAX)
        };
        let (w_small, w_large) = (work(small), work(large));
        assert!(w_small < w_large, "{w_small} {w_large}");
        // The root is declined (a scalar operand the plan cannot know), so each operand is
        // offered on its own.
        let q = format!("{small} * scalar({large})");
        let run = |evaluate_below: usize, planner: bool| {
            let e = Engine::new(
                s.clone(),
                QueryOptions {
                    evaluate_below,
                    planner,
                    ..QueryOptions::default()
                },
            );
            let expr = Engine::parse(&q).unwrap();
            async move {
                let v = e.range(&expr, start, end, step).await.unwrap();
                (e.planned_nodes(), format!("{v:?}"))
            }
        };
        let (_, want) = run(0, false).await;
        for (below, planned) in [(0, 2), (w_small + 1, 1), (w_large + 1, 0)] {
            let (n, got) = run(below, true).await;
            assert_eq!(n, planned, "evaluate_below {below}");
            assert_eq!(got, want, "evaluate_below {below}");
        }
    }

    /// Queries the planner runs whole over [`storage`], each operator at least once.
    pub(super) const PLANNED: &[&str] = &[
        "sum(http_requests)",
        "min(http_requests)",
        "max by (group) (http_requests)",
        "avg without (instance) (http_requests)",
        "count by (job) (http_requests)",
        "group by (instance) (http_requests)",
        "sum(sum by (group) (http_requests{job=\"api\"})) by (job)",
        "sum by (job) (max by (job, group) (http_requests))",
        // Groups of one series each (`AggOne`), under an aggregation that reads their values.
        "sum by (job) (count by (job, group, instance) (http_requests))",
        "max without () (-http_requests)",
        "http_requests * 2",
        "2 ^ http_requests",
        "-http_requests",
        "http_requests > 100",
        "100 < http_requests",
        "http_requests >= bool 50",
        "http_requests + time()",
        "abs(-http_requests) / ceil(http_requests / 7)",
        "round(http_requests / 7, 0.5)",
        "clamp(http_requests, 20, 300)",
        "clamp_min(http_requests, 60)",
        "timestamp(sum by (job) (http_requests))",
        "hour(http_requests)",
        "label_replace(http_requests, \"dst\", \"x-$1\", \"job\", \"(a.*)\")",
        "label_join(http_requests, \"both\", \"/\", \"job\", \"group\")",
        "sum by (job) (label_replace(http_requests, \"job\", \"$1-x\", \"job\", \"(.*)\"))",
        "http_requests / on(job, group, instance) http_requests",
        "http_requests - ignoring(dummy) (http_requests * 2)",
        "http_requests > on(job, instance, group) (http_requests / 2)",
        "http_requests / ignoring(group) group_left sum without (group) (http_requests)",
        "sum without (group) (http_requests) / ignoring(group) group_right http_requests",
        "http_requests * on(job) group_left(dummy) max by (job) (http_requests)",
        "http_requests and http_requests > 100",
        "http_requests unless on(job) http_requests{group=\"canary\"} > 700",
        "http_requests > 100 or http_requests < 30",
        "sum by (job) (http_requests) or on(job) max by (job, group) (http_requests)",
        "http_requests{job=\"api\"} or http_requests",
        "histogram_quantile(0.9, label_replace(http_requests, \"le\", \"$1\", \"instance\", \"(.*)\"))",
        "histogram_quantile(0.5, sum by (le, job) (label_replace(http_requests, \"le\", \"+Inf\", \"group\", \"canary\") or label_replace(http_requests, \"le\", \"0.5\", \"group\", \"production\")))",
        "stddev by (job) (http_requests)",
        "stdvar without (instance) (http_requests)",
        "quantile by (group) (0.3, http_requests)",
        "topk(2, http_requests)",
        "bottomk by (job) (1, http_requests)",
        "limitk by (group) (1.5, http_requests)",
        "topk by (job) (1, sum by (job, group) (http_requests))",
        "quantile_over_time(0.5, http_requests[10m])",
        "predict_linear(http_requests[15m], 600)",
        "last_over_time(http_requests[10m])",
        "double_exponential_smoothing(http_requests[20m], 0.5, 0.5)",
        "max_over_time(rate(http_requests[10m])[30m:2m])",
        "sum_over_time(sum by (job) (http_requests)[20m:])",
        "quantile_over_time(0.9, (http_requests * 2)[25m:3m] offset 5m)",
        "rate(http_requests[20m:1m] @ 2000)",
        "vector(time())",
        "sum(http_requests) + on() vector(1)",
        "absent(http_requests{job=\"nope\", group=\"x\"})",
        "absent(http_requests > 900)",
        "absent((http_requests{job=\"nope\"}))",
        "absent_over_time(http_requests{instance=\"7\"}[5m])",
        "sort_desc(http_requests)",
        "sort_by_label(http_requests, \"instance\")",
        "timestamp(http_requests)",
        "time() - timestamp(http_requests offset 1m)",
        "hour()",
        "day_of_week()",
        // Series that share labels once renamed but never a step: merged.
        "label_replace(http_requests{instance=\"0\"} > 60 or http_requests{instance=\"1\"} < 30, \"instance\", \"x\", \"\", \"\")",
    ];

    /// An error that crossed a process boundary as text keeps its kind (the limits) or
    /// its wording (an operator's error).
    #[test]
    fn errors_known_by_their_text_keep_their_kind() {
        use super::{df_error, external};
        use crate::promql::PromqlError;
        use datafusion::error::DataFusionError;
        let remote = |e: PromqlError| {
            let text: Box<dyn std::error::Error + Send + Sync> = e.to_string().into();
            DataFusionError::Context("task".into(), Box::new(DataFusionError::External(text)))
        };
        for kind in [
            PromqlError::TooManySamples,
            PromqlError::Timeout,
            PromqlError::Canceled,
        ] {
            let want = std::mem::discriminant(&kind);
            let got = df_error(remote(kind));
            assert_eq!(std::mem::discriminant(&got), want, "{got:?}");
        }
        let msg = "vector cannot contain metrics with the same labelset";
        let e = df_error(remote(PromqlError::exec(msg)));
        assert!(matches!(&e, PromqlError::Execution(m) if m == msg), "{e:?}");
        // In process the type itself says it.
        assert!(matches!(
            df_error(external(PromqlError::TooManySamples)),
            PromqlError::TooManySamples
        ));
    }

    /// A plan whose leaves do little work runs in one partition (no repartition, one
    /// aggregation step), a larger one in the engine's partitions; `serial_below: 0`
    /// keeps every plan parallel.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_plans_run_in_one_partition() {
        let s = storage().await;
        let expr = Engine::parse("sum by (job) (http_requests) / count(http_requests)").unwrap();
        let plan = |serial_below: usize, end: i64| {
            let e = Engine::new(
                s.clone(),
                QueryOptions {
                    partitions: 2,
                    serial_below,
                    ..QueryOptions::default()
                },
            );
            let expr = expr.clone();
            async move {
                e.explain(&expr, 3_000_000 - end, 3_000_000, 60_000)
                    .await
                    .unwrap()
            }
        };
        // An instant query, two leaves of 8 series (2,048 for reading them) at 1 step and
        // 88 samples in the head (a head's estimate is all its samples of the series):
        // 2 x 2,144.
        let small = plan(4_700, 0).await;
        assert!(!small.contains("RepartitionExec"), "{small}");
        assert!(small.contains("mode=Single"), "{small}");
        // A range query: the same, 8 series at 51 steps: 2 x 2,552.
        let large = plan(4_700, 3_000_000).await;
        assert!(large.contains("RepartitionExec"), "{large}");
        let forced = plan(0, 0).await;
        assert!(forced.contains("RepartitionExec"), "{forced}");
    }

    /// Planned and evaluated, every partition count, instant and range: the same series
    /// and values.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_agree_with_the_evaluator() {
        let s = storage().await;
        for q in PLANNED {
            let expr = Engine::parse(q).unwrap();
            for partitions in [1, 2, 3, 8] {
                let opts = |planner| QueryOptions {
                    planner,
                    partitions,
                    serial_below: 0,
                    // Every planned run goes through the plan codec as well.
                    roundtrip_plans: planner && partitions != 1,
                    ..QueryOptions::default()
                };
                for (start, end) in [(3_000_000, 3_000_000), (0, 3_000_000)] {
                    let run = |planner| {
                        let e = Engine::new(s.clone(), opts(planner));
                        let expr = expr.clone();
                        async move {
                            let v = e
                                .range(&expr, start, end, 60_000)
                                .await
                                .unwrap_or_else(|err| panic!("{q} (planner {planner}): {err}"));
                            (v, e.planned_nodes())
                        }
                    };
                    let (want, _) = run(false).await;
                    let (got, planned) = run(true).await;
                    assert!(planned > 0, "{q}: not planned");
                    let e = Engine::new(s.clone(), opts(true));
                    let plan = e.explain(&expr, start, end, 60_000).await.unwrap();
                    assert!(plan.starts_with("logical plan"), "{q}: not planned whole");
                    assert!(
                        crate::promqltest::compare_values(want.clone(), got.clone()).is_ok(),
                        "{q}, {partitions} partitions, {start}..{end}:\n{want:?}\n{got:?}\n{plan}"
                    );
                    let Value::Vector(v) = got else { panic!() };
                    assert!(!v.is_empty(), "{q}: empty");
                }
            }
        }
    }

    /// Series that share a label set once renamed, with samples at the same step: both
    /// engines fail with Prometheus's error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collisions_fail_as_in_the_evaluator() {
        let s = storage().await;
        for q in [
            "label_replace(http_requests, \"instance\", \"x\", \"\", \"\")",
            "-label_replace(http_requests, \"instance\", \"x\", \"\", \"\")",
            "rate(label_replace(http_requests, \"instance\", \"x\", \"\", \"\")[10m:1m])",
        ] {
            let expr = Engine::parse(q).unwrap();
            for planner in [false, true] {
                let e = Engine::new(
                    s.clone(),
                    QueryOptions {
                        planner,
                        ..QueryOptions::default()
                    },
                );
                let err = e.range(&expr, 0, 3_000_000, 60_000).await.unwrap_err();
                assert_eq!(
                    err.to_string(),
                    "vector cannot contain metrics with the same labelset",
                    "{q}, planner {planner}"
                );
                if planner {
                    let why = e.fallback(&expr, 0, 3_000_000, 60_000).await.unwrap();
                    assert_eq!(why, None, "{q}: not planned whole");
                }
            }
        }
    }

    /// A subquery's window values (inner series × outer steps) are bounded like the
    /// evaluator's, even when few samples are read and the result is one series.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subquery_windows_are_bounded_as_in_the_evaluator() {
        let s = storage().await;
        let expr = Engine::parse("sum(max_over_time(http_requests[10m:10m]))").unwrap();
        // 3001 steps × 8 series = 24008 window values.
        for (max_samples, ok) in [(20_000, false), (30_000, true)] {
            for planner in [false, true] {
                let e = Engine::new(
                    s.clone(),
                    QueryOptions {
                        planner,
                        max_samples,
                        ..QueryOptions::default()
                    },
                );
                let r = e.range(&expr, 0, 3_000_000, 1000).await;
                assert_eq!(r.is_ok(), ok, "planner {planner}, limit {max_samples}");
                if !ok {
                    assert!(matches!(r, Err(crate::promql::PromqlError::TooManySamples)));
                }
            }
        }
    }

    /// Per-step values plan nodes hold (times, window ends, parameters) count against the
    /// query's limit: a wide expression over a fine subquery grid is refused before it
    /// allocates them, however few samples it reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plan_memory_is_bounded() {
        let s = storage().await;
        // A 600,001-step inner grid; two constants hold 1.2M values, over a 1M limit.
        let expr = Engine::parse("max_over_time((vector(1) + on() vector(2))[10m:1ms])").unwrap();
        let e = Engine::new(
            s.clone(),
            QueryOptions {
                max_samples: 1_000_000,
                ..QueryOptions::default()
            },
        );
        assert!(matches!(
            e.instant(&expr, 3_000_000).await,
            Err(crate::promql::PromqlError::TooManySamples)
        ));
        let narrow = Engine::parse("max_over_time(vector(1)[10m:1ms])").unwrap();
        assert!(e.instant(&narrow, 3_000_000).await.is_ok());
    }
}
