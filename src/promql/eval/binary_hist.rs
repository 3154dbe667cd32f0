//! Binary operators on elements where a native histogram is involved (Prometheus 3's
//! `vectorElemBinop`): `h + h`, `h - h` (a gauge), `h * f`, `f * h`, `h / f`, and
//! `h == h` / `h != h` (exact equality, the left histogram kept); every other combination
//! drops the element with an info naming the operand types.

use crate::promql::kernels::value_fn::ArithOp;
use std::sync::Arc;

use crate::model::histogram::{CounterResetHint, FloatHistogram, annotation};
use crate::promql::engine::Engine;
use crate::promql::error::PromqlError;
use crate::promql::value::{Hist, Series};

/// One operand.
#[derive(Clone, Copy)]
pub(super) enum Operand<'a> {
    F(f64),
    H(&'a Hist),
}

/// An element's result.
pub(super) enum Elem {
    F(f64),
    H(Hist),
}

/// The sample of `s` at step `i`, if any.
pub(super) fn operand(s: &Series, i: usize) -> Option<Operand<'_>> {
    match (s.vals[i], s.hist(i)) {
        (Some(v), _) => Some(Operand::F(v)),
        (None, Some(h)) => Some(Operand::H(h)),
        (None, None) => None,
    }
}

fn kind(o: &Operand) -> &'static str {
    match o {
        Operand::F(_) => "float",
        Operand::H(_) => "histogram",
    }
}

/// `l op r` where at least one side is a histogram; `None` drops the element (annotated).
/// A histogram made here is charged to the query's sample limit by its size.
pub(super) fn elem(
    e: &Engine,
    op: ArithOp,
    l: Operand,
    r: Operand,
    return_bool: bool,
) -> Result<Option<Elem>, PromqlError> {
    let out = compute(e, op, l, r, return_bool);
    if let Some(Elem::H(h)) = &out
        && !matches!((l, r), (Operand::H(a), _) if Arc::ptr_eq(a, h))
    {
        e.charge(h.sample_weight())?;
    }
    Ok(out)
}

fn compute(e: &Engine, op: ArithOp, l: Operand, r: Operand, return_bool: bool) -> Option<Elem> {
    // Messages name the operator as PromQL writes it.
    let sym = op.symbol();
    let incompatible = || {
        e.info(format!(
            "incompatible sample types encountered for binary operator {sym:?}: {} {sym} {}",
            kind(&l),
            kind(&r)
        ));
        None
    };
    match (l, r) {
        (Operand::F(f), Operand::H(h)) if op == ArithOp::Mul => Some(scaled(h, |x| x.mul(f))),
        (Operand::H(h), Operand::F(f)) if op == ArithOp::Mul => Some(scaled(h, |x| x.mul(f))),
        (Operand::H(h), Operand::F(f)) if op == ArithOp::Div => Some(scaled(h, |x| x.div(f))),
        (Operand::H(a), Operand::H(b)) => match op {
            ArithOp::Add | ArithOp::Sub => {
                let mut out = FloatHistogram::clone(a);
                let r = if op == ArithOp::Add {
                    out.add(b)
                } else {
                    out.sub(b)
                };
                let during = if op == ArithOp::Add {
                    "addition"
                } else {
                    "subtraction"
                };
                match r {
                    Err(_) => {
                        e.annotate(&format!(
                            "{} {sym}",
                            annotation::INCOMPATIBLE_BUCKET_LAYOUT_IN_BINOP_WARNING
                        ));
                        None
                    }
                    Ok(o) if o.counter_reset_collision => {
                        e.annotate(&format!(
                            "{} {during}",
                            annotation::COUNTER_RESET_COLLISION_WARNING
                        ));
                        None
                    }
                    Ok(o) => {
                        if o.nhcb_bounds_reconciled {
                            e.annotate(&format!(
                                "{} {during}",
                                annotation::MISMATCHED_CUSTOM_BUCKETS_INFO
                            ));
                        }
                        if op == ArithOp::Sub {
                            out.hint = CounterResetHint::Gauge;
                        }
                        out.compact(0);
                        Some(Elem::H(Arc::new(out)))
                    }
                }
            }
            ArithOp::Eq | ArithOp::Ne => {
                let keep = a.equals(b) == (op == ArithOp::Eq);
                if return_bool {
                    Some(Elem::F(if keep { 1.0 } else { 0.0 }))
                } else {
                    keep.then(|| Elem::H(a.clone()))
                }
            }
            _ => incompatible(),
        },
        _ => incompatible(),
    }
}

fn scaled(h: &Hist, f: impl FnOnce(&mut FloatHistogram) -> &mut FloatHistogram) -> Elem {
    let mut out = FloatHistogram::clone(h);
    f(&mut out).compact(0);
    Elem::H(Arc::new(out))
}
