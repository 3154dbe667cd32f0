//! The evaluator: one recursive pass over the AST; every node computes all steps at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use promql_parser::parser::{self, Expr};

use super::error::PromqlError;
use super::selector::{RangeInput, Raw, at_ms, eval_times, offset_ms};
use super::value::{RangeSeries, Series, Steps, Value};
use crate::model::Labels;
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
    /// Deadline and cancellation of this query.
    pub cancel: super::Cancel,
    /// Run the expressions that lower to DataFusion plans as plans (`false`: the
    /// step-vector evaluator runs everything; the oracle of the differential tests).
    pub planner: bool,
    /// Serialise every DataFusion plan to bytes and run the decoded copy (the codec's
    /// test: a plan that runs after the round trip is self-contained).
    pub roundtrip_plans: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            lookback_ms: 300_000,
            default_subquery_step_ms: 60_000,
            max_samples: 50_000_000,
            memory_limit_bytes: 1 << 30,
            partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            cancel: super::Cancel::default(),
            planner: true,
            roundtrip_plans: false,
        }
    }
}

/// Evaluation context of one node.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx {
    pub steps: Steps,
    pub query_start: i64,
    pub query_end: i64,
    pub lookback: i64,
    /// A range query (as opposed to an instant query), for annotations.
    pub is_range: bool,
    /// The query's step in ms (0 for instant queries), for `step()`.
    pub query_step: i64,
}

/// Warnings and infos collected while evaluating, as Prometheus's annotations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Annotations {
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

/// A query's annotations, shared with the operators of its plans.
#[derive(Clone, Default)]
pub(crate) struct Annotator(Arc<parking_lot::Mutex<Annotations>>);

impl Annotator {
    /// Records a warning (`PromQL warning: …`), once.
    pub fn warn(&self, msg: String) {
        let msg = format!("PromQL warning: {msg}");
        let mut a = self.0.lock();
        if !a.warnings.contains(&msg) {
            a.warnings.push(msg);
        }
    }

    /// Records an info (`PromQL info: …`), once.
    pub fn info(&self, msg: String) {
        let msg = format!("PromQL info: {msg}");
        let mut a = self.0.lock();
        if !a.infos.contains(&msg) {
            a.infos.push(msg);
        }
    }
}

/// Evaluates PromQL against a storage.
pub struct Engine {
    pub(super) storage: Arc<Storage>,
    pub(super) opts: QueryOptions,
    /// Samples loaded by the query so far, by the evaluator and every plan it runs.
    loaded: Arc<AtomicUsize>,
    annotations: Annotator,
    /// Series the caller may see (enforced matchers); `None`: all.
    allowed: Option<roaring::RoaringBitmap>,
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
            snapshot: Default::default(),
            planned: AtomicUsize::new(0),
        }
    }

    /// How many nodes (subtrees) were lowered and run as DataFusion plans so far (whether
    /// or not the plan then succeeded).
    pub fn planned_nodes(&self) -> usize {
        self.planned.load(Ordering::Relaxed)
    }

    pub(super) fn count_planned(&self) {
        self.planned.fetch_add(1, Ordering::Relaxed);
    }

    /// The query's snapshot of the storage, taken on first use.
    pub(super) fn snapshot(&self) -> &crate::storage::Snapshot {
        self.snapshot.get_or_init(|| self.storage.snapshot())
    }

    /// Restricts every selector to these series (a principal's enforced matchers). This is
    /// applied where selectors resolve to series ids, so no expression can reach others.
    pub fn restrict(mut self, allowed: Option<roaring::RoaringBitmap>) -> Self {
        self.allowed = allowed;
        self
    }

    /// Narrows selected series ids to the allowed ones.
    pub(super) fn scope(&self, ids: &mut roaring::RoaringBitmap) {
        if let Some(a) = &self.allowed {
            *ids &= a;
        }
    }

    pub fn parse(query: &str) -> Result<Expr, PromqlError> {
        super::parse(query).map_err(PromqlError::Parse)
    }

    /// Records a warning (`PromQL warning: …`), once.
    pub(super) fn warn(&self, msg: String) {
        self.annotations.warn(msg)
    }

    /// Records an info (`PromQL info: …`), once.
    pub(super) fn info(&self, msg: String) {
        self.annotations.info(msg)
    }

    /// Records an annotation given whole (`PromQL warning: …` or `PromQL info: …`), as the
    /// histogram module words them.
    pub(super) fn annotate(&self, text: &str) {
        if let Some(m) = text.strip_prefix("PromQL warning: ") {
            self.warn(m.to_string())
        } else if let Some(m) = text.strip_prefix("PromQL info: ") {
            self.info(m.to_string())
        } else {
            self.warn(text.to_string())
        }
    }

    /// Where this query's annotations go, for operators that find them while running.
    pub(super) fn annotator(&self) -> Annotator {
        self.annotations.clone()
    }

    /// Annotations of the last query, cleared.
    pub fn take_annotations(&self) -> Annotations {
        std::mem::take(&mut *self.annotations.0.lock())
    }

    /// The query's loaded-samples counter, for plans that charge it as they read.
    pub(super) fn loaded(&self) -> Arc<AtomicUsize> {
        self.loaded.clone()
    }

    /// Counts loaded samples against the limit.
    pub(super) fn charge(&self, n: usize) -> Result<(), PromqlError> {
        let total = self.loaded.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.opts.max_samples {
            Err(PromqlError::TooManySamples)
        } else {
            Ok(())
        }
    }

    /// `Err` once the query has timed out or was canceled; called at every AST node and in
    /// per-series loops, so work that never awaits still stops.
    pub(super) fn check(&self) -> Result<(), PromqlError> {
        self.opts.cancel.check()
    }

    /// Refuses, before allocating them, more points (`series × steps`) than one query may
    /// hold (`--query-max-samples`, as Prometheus counts the points of every node).
    pub(super) fn check_points(&self, series: usize, steps: usize) -> Result<(), PromqlError> {
        match series.checked_mul(steps) {
            Some(p) if p <= self.opts.max_samples => Ok(()),
            _ => Err(PromqlError::TooManySamples),
        }
    }

    /// `-s`: floats negated; a histogram is `h * -1` (a gauge), a new one charged by size.
    fn negate(&self, s: Series) -> Result<Series, PromqlError> {
        let mut hists = Vec::with_capacity(s.hists.len());
        for h in s.hists {
            hists.push(match h {
                Some(h) => {
                    let mut h = (*h).clone();
                    h.mul(-1.0);
                    self.charge(h.sample_weight())?;
                    Some(Arc::new(h))
                }
                None => None,
            });
        }
        Ok(Series {
            labels: drop_name(&s.labels),
            vals: s.vals.into_iter().map(|v| v.map(|x| -x)).collect(),
            hists,
        })
    }

    /// Instant query at `t` (ms).
    pub async fn instant(&self, expr: &Expr, t: i64) -> Result<Value, PromqlError> {
        self.loaded.store(0, Ordering::Relaxed);
        let ctx = Ctx {
            steps: Steps::instant(t),
            query_start: t,
            query_end: t,
            lookback: self.opts.lookback_ms,
            is_range: false,
            query_step: 0,
        };
        let v = match expr {
            // A range vector at the top of an instant query returns raw samples.
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let input = self.range_input(expr, &ctx).await?;
                let end = input.ends[0];
                let mut out = Vec::new();
                for s in input.series {
                    let (a, b) = super::selector::window(&s.ts, end, input.range_ms);
                    let (ha, hb) = super::selector::window(&s.hts, end, input.range_ms);
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
        };
        self.eval(expr, ctx).await
    }

    pub(super) fn eval<'a>(
        &'a self,
        expr: &'a Expr,
        ctx: Ctx,
    ) -> BoxFuture<'a, Result<Value, PromqlError>> {
        Box::pin(async move {
            self.check()?;
            let n = ctx.steps.len();
            // Every node holds at least one value per step: refuse grids (e.g. a subquery
            // at 1 ms over 30 days) before anything of that size is allocated.
            self.check_points(1, n)?;
            let v = self.eval_node(expr, ctx).await?;
            if let Value::Vector(vs) = &v {
                self.check_points(vs.len(), n)?;
            }
            Ok(v)
        })
    }

    fn eval_node<'a>(
        &'a self,
        expr: &'a Expr,
        ctx: Ctx,
    ) -> BoxFuture<'a, Result<Value, PromqlError>> {
        Box::pin(async move {
            let n = ctx.steps.len();
            match expr {
                Expr::NumberLiteral(l) => Ok(Value::Scalar(vec![l.val; n])),
                Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
                Expr::Paren(p) => self.eval(&p.expr, ctx).await,
                Expr::Unary(u) => {
                    if let Some(v) = self.planned_vector(expr, ctx).await? {
                        return Ok(v);
                    }
                    match self.eval(&u.expr, ctx).await? {
                        Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                        Value::Vector(vs) => Ok(Value::Vector(merge_same_labels(
                            vs.into_iter()
                                .map(|s| self.negate(s))
                                .collect::<Result<_, _>>()?,
                        )?)),
                        other => Err(PromqlError::exec(format!(
                            "unary minus on {}",
                            other.type_name()
                        ))),
                    }
                }
                Expr::VectorSelector(vs) => {
                    Ok(Value::Vector(self.vector_selector(vs, &ctx).await?))
                }
                Expr::MatrixSelector(_) | Expr::Subquery(_) => Err(PromqlError::exec(
                    "range vector must be passed to a function or be the top of an instant query",
                )),
                Expr::Call(call) => {
                    if let Some(v) = self.planned_vector(expr, ctx).await? {
                        return Ok(v);
                    }
                    self.call(call, ctx).await
                }
                Expr::Aggregate(a) => {
                    if let Some(v) = self.planned_vector(expr, ctx).await? {
                        return Ok(v);
                    }
                    self.aggregate(a, ctx).await
                }
                Expr::Binary(b) => {
                    if let Some(v) = self.planned_vector(expr, ctx).await? {
                        return Ok(v);
                    }
                    self.binary(b, ctx).await
                }
                Expr::Extension(_) => Err(PromqlError::exec("unsupported expression extension")),
            }
        })
    }

    /// `expr` run as a DataFusion plan, when the planner is on, `expr` is an instant
    /// vector and every node in it has a lowering.
    async fn planned_vector(&self, expr: &Expr, ctx: Ctx) -> Result<Option<Value>, PromqlError> {
        if !self.opts.planner || expr.value_type() != parser::value::ValueType::Vector {
            return Ok(None);
        }
        self.planned(expr, ctx).await
    }

    /// A matrix selector or subquery as input to a range function.
    pub(super) fn range_input<'a>(
        &'a self,
        expr: &'a Expr,
        ctx: &'a Ctx,
    ) -> BoxFuture<'a, Result<RangeInput, PromqlError>> {
        Box::pin(async move {
            match expr {
                Expr::MatrixSelector(ms) => {
                    self.matrix_selector(&ms.vs, duration_ms(ms.range), ctx)
                        .await
                }
                Expr::Paren(p) => self.range_input(&p.expr, ctx).await,
                Expr::Subquery(sq) => {
                    let range = duration_ms(sq.range);
                    let step = sq
                        .step
                        .map(duration_ms)
                        .filter(|s| *s > 0)
                        .unwrap_or(self.opts.default_subquery_step_ms);
                    let offset = offset_ms(&sq.offset);
                    let at = at_ms(&sq.at, ctx);
                    let ends = eval_times(ctx, at, offset);
                    let (Some(&lo), Some(&hi)) = (ends.iter().min(), ends.iter().max()) else {
                        return Ok(RangeInput {
                            series: vec![],
                            range_ms: range,
                            ends,
                        });
                    };
                    let bound = lo.saturating_sub(range);
                    let mut start = step * (bound / step);
                    if start <= bound {
                        start = start.saturating_add(step);
                    }
                    let inner = Ctx {
                        steps: Steps::new(start, hi, step),
                        ..*ctx
                    };
                    let series = match self.eval(&sq.expr, inner).await? {
                        Value::Vector(vs) => vs
                            .into_iter()
                            .map(|s| {
                                self.check()?;
                                let (mut ts, mut vals) = (Vec::new(), Vec::new());
                                for (i, v) in s.vals.iter().enumerate() {
                                    if let Some(v) = v {
                                        ts.push(inner.steps.at(i));
                                        vals.push(*v);
                                    }
                                }
                                let (mut hts, mut hists) = (Vec::new(), Vec::new());
                                for (i, h) in s.hists.iter().enumerate() {
                                    if let Some(h) = h {
                                        hts.push(inner.steps.at(i));
                                        hists.push(subquery_hint(h));
                                    }
                                }
                                Ok(Raw {
                                    labels: s.labels,
                                    ts,
                                    vals,
                                    hts,
                                    hists,
                                })
                            })
                            .filter(|r| r.as_ref().map_or(true, |r| !r.is_empty()))
                            .collect::<Result<_, PromqlError>>()?,
                        Value::Scalar(v) => {
                            let ts = inner.steps.iter().collect();
                            vec![Raw::floats(Arc::new(Labels::default()), ts, v)]
                        }
                        other => {
                            return Err(PromqlError::exec(format!(
                                "subquery over {} is not supported",
                                other.type_name()
                            )));
                        }
                    };
                    Ok(RangeInput {
                        series,
                        range_ms: range,
                        ends,
                    })
                }
                _ => Err(PromqlError::exec(format!(
                    "expected a range vector, got {}",
                    expr.value_type()
                ))),
            }
        })
    }
}

/// A parsed duration in ms, saturating (durations as long as `1000000y` exist in queries).
pub(super) fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn type_word(t: parser::value::ValueType) -> &'static str {
    match t {
        parser::value::ValueType::Matrix => "range vector",
        parser::value::ValueType::String => "string",
        parser::value::ValueType::Scalar => "scalar",
        parser::value::ValueType::Vector => "instant vector",
    }
}

/// Labels without `__name__`.
pub(super) fn drop_name(l: &Arc<Labels>) -> Arc<Labels> {
    if l.metric_name().is_none() {
        return l.clone();
    }
    Arc::new(Labels::from_sorted_strs(
        l.iter().filter(|(n, _)| *n != crate::model::METRIC_NAME),
    ))
}

/// Merges series with equal label sets (e.g. after `__name__` was dropped); two values at
/// the same step are Prometheus's "vector cannot contain metrics with the same labelset".
pub(super) fn merge_same_labels(mut series: Vec<Series>) -> Result<Vec<Series>, PromqlError> {
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    for s in series {
        match out.last_mut() {
            Some(last) if last.labels == s.labels => {
                let dup =
                    || PromqlError::exec("vector cannot contain metrics with the same labelset");
                for i in 0..s.vals.len() {
                    if let Some(v) = s.vals[i] {
                        if last.has(i) {
                            return Err(dup());
                        }
                        last.vals[i] = Some(v);
                    } else if let Some(h) = s.hist(i) {
                        if last.has(i) {
                            return Err(dup());
                        }
                        last.set_hist(i, h.clone());
                    }
                }
            }
            _ => out.push(s),
        }
    }
    Ok(out)
}

/// A histogram of a subquery's inner result: its counter-reset hint said something about
/// the sample before it in storage, not in the subquery's steps, so `reset` and `not_reset`
/// become `unknown` (gauges stay gauges), as in Prometheus.
fn subquery_hint(h: &super::value::Hist) -> super::value::Hist {
    use crate::model::histogram::CounterResetHint as H;
    match h.hint {
        H::CounterReset | H::NotCounterReset => {
            let mut c = (**h).clone();
            c.hint = H::Unknown;
            Arc::new(c)
        }
        _ => h.clone(),
    }
}
