//! The step-vector evaluator: one recursive pass over the AST; every node computes all steps
//! at once. It is the oracle of the planner's differential tests and runs what the planner
//! declines (`docs/conformance.md`). It reaches plans only through
//! `Engine::planned_vector` (`promql::engine`), never by importing the planner.

mod aggregate;
mod binary;
mod binary_hist;
mod functions;
mod histogram_agg;
mod histogram_fns;
mod range_hist;
pub(crate) mod selector;

use std::sync::Arc;

use futures::future::BoxFuture;
use promql_parser::parser::Expr;

use super::engine::{Ctx, Engine};
use super::error::PromqlError;
use super::kernels::grouping::drop_name;
use super::kernels::select::{
    at_ms, duration_ms, eval_times, offset_ms, subquery_grid, subquery_step,
};
use super::value::{Series, Value};
use crate::model::Labels;
use selector::{RangeInput, Raw};

impl Engine {
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
        mut ctx: Ctx,
    ) -> BoxFuture<'a, Result<Value, PromqlError>> {
        Box::pin(async move {
            let n = ctx.steps.len();
            match expr {
                Expr::NumberLiteral(l) => Ok(Value::Scalar(vec![l.val; n])),
                Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
                Expr::Paren(p) => self.eval(&p.expr, ctx).await,
                Expr::Unary(u) => {
                    if let Some(v) = self.planned_vector(expr, &mut ctx).await? {
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
                    if let Some(v) = self.planned_vector(expr, &mut ctx).await? {
                        return Ok(v);
                    }
                    self.call(call, ctx).await
                }
                Expr::Aggregate(a) => {
                    if let Some(v) = self.planned_vector(expr, &mut ctx).await? {
                        return Ok(v);
                    }
                    self.aggregate(a, ctx).await
                }
                Expr::Binary(b) => {
                    if let Some(v) = self.planned_vector(expr, &mut ctx).await? {
                        return Ok(v);
                    }
                    self.binary(b, ctx).await
                }
                Expr::Extension(_) => Err(PromqlError::exec("unsupported expression extension")),
            }
        })
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
                    let step = subquery_step(sq.step, self.opts.default_subquery_step_ms);
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
                    let inner = Ctx {
                        steps: subquery_grid(lo, hi, range, step),
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
                            vec![Raw::floats(Labels::default(), ts, v)]
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
