//! One query's engine: its options, its evaluation context, its annotations and the state
//! both PromQL engines share (storage snapshot, scope, sample budget, cancellation). The
//! entry points (`instant`, `range`) run the evaluator (`promql::eval`), which hands every
//! instant-vector subtree to the planner (`promql::plan`) first through `planned_vector`:
//! this file is the only one that knows both.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use promql_parser::parser::{self, Expr};

use super::error::PromqlError;
use super::kernels::annotations::{Annotations, Annotator};
use super::plan::explain::Explained;
use super::value::{RangeSeries, Steps, Value};
use crate::storage::Storage;

/// Per-query knobs.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub lookback_ms: i64,
    /// Step of subqueries written without one (`x[10m:]`).
    pub default_subquery_step_ms: i64,
    /// Most samples a query may load.
    pub max_samples: usize,
    /// Memory pool of the DataFusion part of a query, in bytes.
    pub memory_limit_bytes: usize,
    /// Parallelism of DataFusion plans (output partitions of scans).
    pub partitions: usize,
    /// Plans whose leaves do less work than this (in samples, estimated from the blocks'
    /// metadata: see `Leaf::work`) run in one partition: for a few thousand rows
    /// the repartitions' tasks and channels and the split aggregations cost more than the
    /// second core saves. 0: every plan runs in `partitions`.
    pub serial_below: usize,
    /// Vector expressions whose leaves come to less work than this (the same estimate as
    /// `serial_below`) run in the step-vector evaluator instead of as DataFusion plans:
    /// planning and starting a plan costs a fixed ~0.5 ms and touches much more code than
    /// the evaluator's loop over a few hundred series (docs/benchmarks.md, "Session 27").
    /// 0: every expression that lowers runs as a plan (the tests of the planner).
    pub evaluate_below: usize,
    /// Deadline and cancellation of this query.
    pub cancel: super::Cancel,
    /// Run the expressions that lower to DataFusion plans as plans (`false`: the
    /// step-vector evaluator runs everything; the oracle of the differential tests).
    pub planner: bool,
    /// Other processes that may run the plans' tasks (a cluster's queriers; `None`: this
    /// process runs them all).
    pub distribution: Option<Arc<super::plan::Distribution>>,
    /// Serialise every DataFusion plan to bytes and run the decoded copy (the codec's
    /// test: a plan that runs after the round trip is self-contained).
    pub roundtrip_plans: bool,
}

/// The default [`QueryOptions::serial_below`]: on the peer data, instant queries over a
/// few hundred series (0.78-0.86x the time in one partition), while every cell above it
/// stays parallel (docs/benchmarks.md, "Session 23").
pub const SERIAL_BELOW: usize = 100_000;

/// The server's default [`QueryOptions::evaluate_below`] (`--query-evaluate-below`).
pub const EVALUATE_BELOW: usize = 200_000;

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            lookback_ms: 300_000,
            default_subquery_step_ms: 60_000,
            max_samples: 50_000_000,
            memory_limit_bytes: 1 << 30,
            partitions: crate::cores::cores(),
            serial_below: SERIAL_BELOW,
            evaluate_below: 0,
            cancel: super::Cancel::default(),
            planner: true,
            roundtrip_plans: false,
            distribution: None,
        }
    }
}

/// Evaluation context of one node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub steps: Steps,
    pub query_start: i64,
    pub query_end: i64,
    pub lookback: i64,
    /// A range query (as opposed to an instant query), for annotations.
    pub is_range: bool,
    /// The query's step in ms (0 for instant queries), for `step()`.
    pub query_step: i64,
    /// The planner found this subtree too small to plan
    /// ([`QueryOptions::evaluate_below`]): the evaluator runs all of it, without offering
    /// its nodes to the planner again.
    pub evaluate: bool,
}

/// Evaluates PromQL against a storage.
pub struct Engine {
    pub(crate) storage: Arc<Storage>,
    pub(crate) opts: QueryOptions,
    /// Samples loaded by the query so far, by the evaluator and every plan it runs.
    loaded: Arc<AtomicUsize>,
    annotations: Annotator,
    /// Series the caller may see (enforced matchers); `None`: all.
    allowed: Option<roaring::RoaringBitmap>,
    /// The caller's tenant and enforced matchers, which tasks on other processes resolve
    /// in their own index.
    caller: crate::auth::Access,
    /// The storage as the query's first selector found it: every selector of the query
    /// reads this one snapshot, so samples arriving meanwhile are in all of them or none.
    snapshot: std::sync::OnceLock<crate::storage::Snapshot>,
    /// Nodes this engine ran as DataFusion plans.
    planned: AtomicUsize,
}

impl Engine {
    pub fn new(storage: Arc<Storage>, opts: QueryOptions) -> Self {
        Engine {
            storage,
            opts,
            loaded: Default::default(),
            annotations: Default::default(),
            allowed: None,
            caller: crate::auth::Access::unrestricted(crate::storage::tenants::DEFAULT_TENANT),
            snapshot: Default::default(),
            planned: AtomicUsize::new(0),
        }
    }

    /// How many nodes (subtrees) were lowered and run as DataFusion plans so far (whether
    /// or not the plan then succeeded).
    pub fn planned_nodes(&self) -> usize {
        self.planned.load(Ordering::Relaxed)
    }

    pub(crate) fn count_planned(&self) {
        self.planned.fetch_add(1, Ordering::Relaxed);
    }

    /// The query's snapshot of the storage, taken on first use.
    pub(crate) fn snapshot(&self) -> &crate::storage::Snapshot {
        self.snapshot.get_or_init(|| self.storage.snapshot())
    }

    /// Restricts every selector to these series (a principal's enforced matchers). This is
    /// applied where selectors resolve to series ids, so no expression can reach others.
    pub fn restrict(mut self, allowed: Option<roaring::RoaringBitmap>) -> Self {
        self.allowed = allowed;
        self
    }

    /// The caller (tenant and enforced matchers) on whose behalf plans run elsewhere;
    /// `restrict` narrows this process's selectors, this the other processes'.
    pub fn caller(mut self, access: &crate::auth::Access) -> Self {
        self.caller = access.clone();
        self
    }

    pub(crate) fn caller_access(&self) -> &crate::auth::Access {
        &self.caller
    }

    /// The series the caller may see (`None`: all).
    pub(crate) fn allowed(&self) -> Option<&roaring::RoaringBitmap> {
        self.allowed.as_ref()
    }

    /// The series a selector names, narrowed to the ones the caller may see. Every
    /// selector of both engines resolves here, so no expression reaches other series (the
    /// tenancy invariant has one place to hold).
    pub(crate) fn select_series(
        &self,
        vs: &promql_parser::parser::VectorSelector,
    ) -> Result<roaring::RoaringBitmap, PromqlError> {
        let catalog = self.storage.catalog();
        let mut ids = roaring::RoaringBitmap::new();
        for ms in super::kernels::select::matcher_sets(vs)? {
            ids |= catalog.select(&ms);
        }
        if let Some(a) = &self.allowed {
            ids &= a;
        }
        Ok(ids)
    }

    pub fn parse(query: &str) -> Result<Expr, PromqlError> {
        super::parse(query).map_err(PromqlError::Parse)
    }

    /// Records a warning (`PromQL warning: …`), once.
    pub(crate) fn warn(&self, msg: String) {
        self.annotations.warn(msg)
    }

    /// Records an info (`PromQL info: …`), once.
    pub(crate) fn info(&self, msg: String) {
        self.annotations.info(msg)
    }

    /// Records an annotation given whole (`PromQL warning: …` or `PromQL info: …`), as the
    /// histogram module words them.
    pub(crate) fn annotate(&self, text: &str) {
        if let Some(m) = text.strip_prefix("PromQL warning: ") {
            self.warn(m.to_string())
        } else if let Some(m) = text.strip_prefix("PromQL info: ") {
            self.info(m.to_string())
        } else {
            self.warn(text.to_string())
        }
    }

    /// Warns of every quantile outside `[0, 1]` (both engines, before they compute).
    pub(crate) fn check_quantile(&self, q: &[f64]) {
        for &x in q {
            if !(0.0..=1.0).contains(&x) {
                self.annotations
                    .warn(super::kernels::annotations::invalid_quantile(x));
            }
        }
    }

    /// Where this query's annotations go, for operators that find them while running.
    pub(crate) fn annotator(&self) -> Annotator {
        self.annotations.clone()
    }

    /// Annotations of the last query, cleared.
    pub fn take_annotations(&self) -> Annotations {
        self.annotations.take()
    }

    /// The query's loaded-samples counter, for plans that charge it as they read.
    pub(crate) fn loaded(&self) -> Arc<AtomicUsize> {
        self.loaded.clone()
    }

    /// Counts loaded samples against the limit.
    pub(crate) fn charge(&self, n: usize) -> Result<(), PromqlError> {
        let total = self.loaded.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.opts.max_samples {
            Err(PromqlError::TooManySamples)
        } else {
            Ok(())
        }
    }

    /// `Err` once the query has timed out or was canceled; called at every AST node and in
    /// per-series loops, so work that never awaits still stops.
    pub(crate) fn check(&self) -> Result<(), PromqlError> {
        self.opts.cancel.check()
    }

    /// Refuses, before allocating them, more points (`series × steps`) than one query may
    /// hold (`--query-max-samples`, as Prometheus counts the points of every node).
    pub(crate) fn check_points(&self, series: usize, steps: usize) -> Result<(), PromqlError> {
        match series.checked_mul(steps) {
            Some(p) if p <= self.opts.max_samples => Ok(()),
            _ => Err(PromqlError::TooManySamples),
        }
    }

    pub async fn instant(&self, expr: &Expr, t: i64) -> Result<Value, PromqlError> {
        self.loaded.store(0, Ordering::Relaxed);
        let ctx = Ctx {
            steps: Steps::instant(t),
            query_start: t,
            query_end: t,
            lookback: self.opts.lookback_ms,
            is_range: false,
            query_step: 0,
            evaluate: false,
        };
        let v = match expr {
            // A range vector at the top of an instant query returns raw samples.
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let input = self.range_input(expr, &ctx).await?;
                let end = input.ends[0];
                let mut out = Vec::new();
                for s in input.series {
                    let (a, b) = super::kernels::select::window(&s.ts, end, input.range_ms);
                    let (ha, hb) = super::kernels::select::window(&s.hts, end, input.range_ms);
                    if a < b || ha < hb {
                        out.push(RangeSeries {
                            labels: s.labels,
                            ts: s.ts[a..b].to_vec(),
                            vals: s.vals[a..b].to_vec(),
                            hts: s.hts[ha..hb].to_vec(),
                            hists: s.hists[ha..hb].to_vec(),
                        });
                    }
                }
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(out)
            }
            _ => self.eval(expr, ctx).await?,
        };
        Ok(v)
    }

    /// Range query; the result is a scalar per step or a vector of series over the steps.
    pub async fn range(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Value, PromqlError> {
        self.loaded.store(0, Ordering::Relaxed);
        match expr.value_type() {
            parser::value::ValueType::Vector | parser::value::ValueType::Scalar => {}
            other => {
                return Err(PromqlError::exec(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    type_word(other)
                )));
            }
        }
        let ctx = Ctx {
            steps: Steps::new(start, end, step),
            query_start: start,
            query_end: end,
            lookback: self.opts.lookback_ms,
            is_range: true,
            query_step: step,
            evaluate: false,
        };
        self.eval(expr, ctx).await
    }

    /// `expr` run as a DataFusion plan, when the planner is on, `expr` is an instant
    /// vector, every node in it has a lowering and its leaves do enough work to be worth a
    /// plan; when they do not, `ctx` says so, and the evaluator runs the whole subtree.
    pub(crate) async fn planned_vector(
        &self,
        expr: &Expr,
        ctx: &mut Ctx,
    ) -> Result<Option<Value>, PromqlError> {
        if !self.opts.planner
            || ctx.evaluate
            || expr.value_type() != parser::value::ValueType::Vector
        {
            return Ok(None);
        }
        match self.planned(expr, *ctx).await? {
            super::plan::Planned::Ran(v) => Ok(Some(v)),
            super::plan::Planned::Declined => Ok(None),
            super::plan::Planned::Small => {
                ctx.evaluate = true;
                Ok(None)
            }
        }
    }
}

fn type_word(t: parser::value::ValueType) -> &'static str {
    match t {
        parser::value::ValueType::Matrix => "range vector",
        parser::value::ValueType::String => "string",
        parser::value::ValueType::Scalar => "scalar",
        parser::value::ValueType::Vector => "instant vector",
    }
}

/// Explaining a query: which part is a DataFusion plan. Here, not in either engine,
/// because it asks the planner and describes the evaluator.
impl Engine {
    /// Why a query is not one DataFusion plan, or `None` when it is.
    pub async fn fallback(
        &self,
        expr: &promql_parser::parser::Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Option<String>, PromqlError> {
        self.plan_fallback(expr, explain_ctx(self, start, end, step))
    }

    /// The DataFusion logical and physical plans of a query, when it lowers.
    pub async fn explain(
        &self,
        expr: &promql_parser::parser::Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<String, PromqlError> {
        Ok(self
            .explain_report(expr, start, end, step, false)
            .await?
            .text)
    }

    /// [`Engine::explain`], with the plan run and each operator's metrics (output rows,
    /// elapsed compute) in the physical plan.
    pub async fn explain_analyze(
        &self,
        expr: &promql_parser::parser::Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<String, PromqlError> {
        Ok(self
            .explain_report(expr, start, end, step, true)
            .await?
            .text)
    }

    /// The explanation as data: plans, the operator tree and (with `analyze`) its metrics.
    pub async fn explain_report(
        &self,
        expr: &promql_parser::parser::Expr,
        start: i64,
        end: i64,
        step: i64,
        analyze: bool,
    ) -> Result<Explained, PromqlError> {
        let ctx = explain_ctx(self, start, end, step);
        let not_planned = |why: String, text: String| Explained {
            planned: false,
            fallback: Some(why),
            logical: String::new(),
            physical: None,
            run: None,
            text,
            result: None,
        };
        if !self.opts.planner {
            let why = "--query-engine evaluator";
            return Ok(not_planned(
                why.into(),
                format!("evaluated by the step-vector evaluator ({why})\n"),
            ));
        }
        if let Some(explained) = self.explain_planned(expr, ctx, analyze).await? {
            return Ok(explained);
        }
        let why = self.plan_fallback(expr, ctx)?.unwrap_or_default();
        let text = format!(
            "not one DataFusion plan ({why}): that node runs in the step-vector evaluator, the subtrees under it that lower run as plans\n"
        );
        Ok(not_planned(why, text))
    }
}

/// The context `explain` and `fallback` plan a query in.
fn explain_ctx(e: &Engine, start: i64, end: i64, step: i64) -> Ctx {
    Ctx {
        steps: Steps::new(start, end, step),
        query_start: start,
        query_end: end,
        lookback: e.opts.lookback_ms,
        is_range: start != end,
        query_step: if start == end { 0 } else { step },
        evaluate: false,
    }
}
