//! Scalars known when the query is planned: number literals, `time()`, `pi()`, `start()`,
//! `end()`, `range()`, `step()`, and arithmetic, `-`, `min_of`/`max_of` over them — one
//! value per step, handed to operators as parameters. A scalar that depends on samples
//! (`scalar(x)`) is not one: its expression is left to the evaluator.

use promql_parser::parser::Expr;

use super::PlanCtx;
use crate::promql::func::Func;

/// The value of `e` at every step, or `None` when it is not a plan-time scalar.
pub(super) fn scalar(p: &PlanCtx, e: &Expr) -> Option<Vec<f64>> {
    let ctx = &p.ctx;
    let n = ctx.steps.len();
    match e {
        Expr::NumberLiteral(l) => Some(vec![l.val; n]),
        Expr::Paren(inner) => scalar(p, &inner.expr),
        Expr::Unary(u) => Some(scalar(p, &u.expr)?.into_iter().map(|x| -x).collect()),
        Expr::Binary(b) => {
            let l = scalar(p, &b.lhs)?;
            let r = scalar(p, &b.rhs)?;
            let crate::promql::op::BinOp::Arith(op) = crate::promql::op::BinOp::of(b.op)? else {
                return None;
            };
            Some(
                l.iter()
                    .zip(&r)
                    .map(|(&x, &y)| {
                        let (v, keep) = op.apply(x, y);
                        if op.is_comparison() {
                            if keep { 1.0 } else { 0.0 }
                        } else {
                            v
                        }
                    })
                    .collect(),
            )
        }
        Expr::Call(call) => {
            let args = &call.args.args;
            let secs = |ms: i64| ms as f64 / 1000.0;
            match (Func::of(call.func.name)?, args.len()) {
                (Func::Time, 0) => Some(ctx.steps.iter().map(secs).collect()),
                (Func::Pi, 0) => Some(vec![std::f64::consts::PI; n]),
                (Func::Start, 0) => Some(vec![secs(ctx.query_start); n]),
                (Func::End, 0) => Some(vec![secs(ctx.query_end); n]),
                (Func::Range, 0) => Some(vec![secs(ctx.query_end - ctx.query_start); n]),
                (Func::Step, 0) => Some(vec![secs(ctx.query_step); n]),
                (f @ (Func::MinOf | Func::MaxOf), 2) => {
                    let a = scalar(p, &args[0])?;
                    let b = scalar(p, &args[1])?;
                    Some(crate::promql::kernels::value_fn::extreme_of(
                        f == Func::MaxOf,
                        &a,
                        &b,
                    ))
                }
                _ => None,
            }
        }
        _ => None,
    }
}
