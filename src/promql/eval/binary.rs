//! Binary operators: scalar/scalar, vector/scalar and vector/vector with label matching
//! (`on`, `ignoring`, `group_left`, `group_right`) and set operators.

use std::collections::HashMap;

use promql_parser::parser::{BinModifier, BinaryExpr, VectorMatchCardinality};

use super::binary_hist::{self, Elem, Operand, operand};
use super::merge_same_labels;
use crate::model::Labels;
use crate::promql::engine::{Ctx, Engine};
use crate::promql::error::PromqlError;
use crate::promql::kernels::grouping::{drop_name, result_metric, signature};
use crate::promql::kernels::value_fn::ValueFn;
use crate::promql::op::BinOp;
use crate::promql::value::{Series, Value};

/// `(value, keep)` as Prometheus's vectorElemBinop for floats: the planner's kernel.
fn elem(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Arith(a) => a.apply(l, r),
        BinOp::And | BinOp::Or | BinOp::Unless => (f64::NAN, false),
    }
}

/// An element with a histogram operand (arithmetic and comparison only).
fn hist_elem(
    e: &Engine,
    op: BinOp,
    l: Operand,
    r: Operand,
    return_bool: bool,
) -> Result<Option<Elem>, PromqlError> {
    match op {
        BinOp::Arith(a) => binary_hist::elem(e, a, l, r, return_bool),
        BinOp::And | BinOp::Or | BinOp::Unless => Ok(None),
    }
}

fn fmt_sig(sig: &[(String, String)]) -> String {
    let inner: Vec<String> = sig.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

impl Engine {
    pub(super) async fn binary(&self, b: &BinaryExpr, ctx: Ctx) -> Result<Value, PromqlError> {
        let op = BinOp::of(b.op)
            .ok_or_else(|| PromqlError::exec(format!("unknown binary operator {}", b.op)))?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, ctx).await?;
        let rhs = self.eval(&b.rhs, ctx).await?;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
                l.iter()
                    .zip(&r)
                    .map(|(&x, &y)| {
                        let (v, keep) = elem(op, x, y);
                        if op.is_comparison() {
                            if keep { 1.0 } else { 0.0 }
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (Value::Vector(v), Value::Scalar(s)) => Ok(Value::Vector(vector_scalar(
                self,
                op,
                v,
                &s,
                false,
                return_bool,
            )?)),
            (Value::Scalar(s), Value::Vector(v)) => Ok(Value::Vector(vector_scalar(
                self,
                op,
                v,
                &s,
                true,
                return_bool,
            )?)),
            (Value::Vector(l), Value::Vector(r)) => {
                if op.is_set() {
                    Ok(Value::Vector(set_op(
                        op,
                        l,
                        r,
                        b.modifier.as_ref(),
                        ctx.steps.len(),
                    )?))
                } else {
                    Ok(Value::Vector(vector_vector(
                        self,
                        op,
                        l,
                        r,
                        b.modifier.as_ref(),
                        return_bool,
                        ctx.steps.len(),
                    )?))
                }
            }
            (l, r) => Err(PromqlError::exec(format!(
                "binary operator {op} between {} and {} is not supported",
                l.type_name(),
                r.type_name()
            ))),
        }
    }
}

fn vector_scalar(
    e: &Engine,
    op: BinOp,
    v: Vec<Series>,
    s: &[f64],
    swap: bool,
    return_bool: bool,
) -> Result<Vec<Series>, PromqlError> {
    let drop = !op.is_comparison() || return_bool;
    // The planner's per-value kernel: one definition of `v op s` for both engines (a set
    // operator with a scalar operand keeps nothing).
    let f = match op {
        BinOp::Arith(op) => Some(ValueFn::Scalar {
            op,
            scalar_left: swap,
            return_bool,
        }),
        BinOp::And | BinOp::Or | BinOp::Unless => None,
    };
    let mut out = Vec::with_capacity(v.len());
    for series in v {
        let vals = series
            .vals
            .iter()
            .zip(s)
            .map(|(x, &a)| x.and_then(|x| f.and_then(|f| f.apply(x, a, f64::NAN))))
            .collect();
        let mut o = Series {
            hists: Vec::new(),
            labels: if drop {
                drop_name(&series.labels)
            } else {
                series.labels.clone()
            },
            vals,
        };
        for (i, h) in series.hists.iter().enumerate() {
            let Some(h) = h else { continue };
            let (l, r) = if swap {
                (Operand::F(s[i]), Operand::H(h))
            } else {
                (Operand::H(h), Operand::F(s[i]))
            };
            match hist_elem(e, op, l, r, return_bool)? {
                Some(Elem::F(v)) => o.vals[i] = Some(v),
                Some(Elem::H(h)) => o.set_hist(i, h),
                None => {}
            }
        }
        if !o.is_empty() {
            out.push(o);
        }
    }
    if drop {
        merge_same_labels(out)
    } else {
        Ok(out)
    }
}

fn set_op(
    op: BinOp,
    l: Vec<Series>,
    r: Vec<Series>,
    m: Option<&BinModifier>,
    n: usize,
) -> Result<Vec<Series>, PromqlError> {
    let matching = m.and_then(|m| m.matching.as_ref());
    let lsig: Vec<_> = l.iter().map(|s| signature(&s.labels, matching)).collect();
    let rsig: Vec<_> = r.iter().map(|s| signature(&s.labels, matching)).collect();
    // For every signature, the steps at which the other side has a sample.
    let present = |series: &[Series], sigs: &[Vec<(String, String)>]| {
        let mut map: HashMap<Vec<(String, String)>, Vec<bool>> = HashMap::new();
        for (s, sig) in series.iter().zip(sigs) {
            let e = map.entry(sig.clone()).or_insert_with(|| vec![false; n]);
            for (i, p) in e.iter_mut().enumerate() {
                if s.has(i) {
                    *p = true;
                }
            }
        }
        map
    };
    let mut out = Vec::new();
    match op {
        BinOp::And | BinOp::Unless => {
            let rp = present(&r, &rsig);
            let want = op == BinOp::And;
            for (s, sig) in l.into_iter().zip(&lsig) {
                let p = rp.get(sig);
                let s = masked(s, |i| p.is_some_and(|p| p[i]) == want);
                if !s.is_empty() {
                    out.push(s);
                }
            }
        }
        _ => {
            let lp = present(&l, &lsig);
            out.extend(l.into_iter().filter(|s| !s.is_empty()));
            for (s, sig) in r.into_iter().zip(&rsig) {
                let p = lp.get(sig);
                let s = masked(s, |i| !p.is_some_and(|p| p[i]));
                if !s.is_empty() {
                    out.push(s);
                }
            }
        }
    }
    merge_same_labels(out)
}

/// A match group and the result labels produced for it at one step.
type SeenKey<'a> = (&'a [(String, String)], Labels);

fn vector_vector(
    e: &Engine,
    op: BinOp,
    l: Vec<Series>,
    r: Vec<Series>,
    m: Option<&BinModifier>,
    return_bool: bool,
    n: usize,
) -> Result<Vec<Series>, PromqlError> {
    let matching = m.and_then(|m| m.matching.as_ref());
    let card = m
        .map(|m| m.card.clone())
        .unwrap_or(VectorMatchCardinality::OneToOne);
    let (many, one, swapped) = match card {
        VectorMatchCardinality::OneToMany(_) => (r, l, true),
        _ => (l, r, false),
    };
    let include: Vec<String> = match &card {
        VectorMatchCardinality::ManyToOne(ls) | VectorMatchCardinality::OneToMany(ls) => {
            ls.labels.clone()
        }
        _ => vec![],
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let many_sig: Vec<_> = many
        .iter()
        .map(|s| signature(&s.labels, matching))
        .collect();
    let one_sig: Vec<_> = one.iter().map(|s| signature(&s.labels, matching)).collect();
    let drop = !op.is_comparison() || return_bool;

    // Result labels per (many, one) pair, computed lazily and cached.
    let mut result_labels: HashMap<(usize, usize), Labels> = HashMap::new();
    let mut out: HashMap<Labels, Series> = HashMap::new();
    let mut order: Vec<Labels> = Vec::new();
    let mut by_sig: HashMap<&[(String, String)], usize> = HashMap::new();
    for i in 0..n {
        by_sig.clear();
        for (oi, s) in one.iter().enumerate() {
            if !s.has(i) {
                continue;
            }
            if let Some(prev) = by_sig.insert(&one_sig[oi], oi) {
                let side = if swapped { "left" } else { "right" };
                return Err(PromqlError::exec(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    fmt_sig(&one_sig[oi]),
                    s.labels,
                    one[prev].labels
                )));
            }
        }
        // Which result labels were produced at this step, per match group (for the errors).
        let mut seen_one_to_one: HashMap<&[(String, String)], ()> = HashMap::new();
        let mut seen_many: std::collections::HashSet<SeenKey> = Default::default();
        for (mi, s) in many.iter().enumerate() {
            let Some(mv) = operand(s, i) else { continue };
            let Some(&oi) = by_sig.get(many_sig[mi].as_slice()) else {
                continue;
            };
            let Some(ov) = operand(&one[oi], i) else {
                continue;
            };
            // Prometheus reports ambiguous one-to-one matches even for samples a filter drops.
            if one_to_one
                && seen_one_to_one
                    .insert(many_sig[mi].as_slice(), ())
                    .is_some()
            {
                return Err(PromqlError::exec(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                ));
            }
            let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
            let val = match (lv, rv) {
                (Operand::F(lv), Operand::F(rv)) => {
                    let (val, keep) = elem(op, lv, rv);
                    if return_bool {
                        Elem::F(if keep { 1.0 } else { 0.0 })
                    } else if !keep {
                        continue;
                    } else {
                        Elem::F(val)
                    }
                }
                (lv, rv) => match hist_elem(e, op, lv, rv, return_bool)? {
                    Some(v) => v,
                    None => continue,
                },
            };
            let labels = result_labels
                .entry((mi, oi))
                .or_insert_with(|| {
                    result_metric(
                        &s.labels,
                        &one[oi].labels,
                        drop,
                        one_to_one,
                        matching,
                        &include,
                    )
                })
                .clone();
            if !one_to_one && !seen_many.insert((many_sig[mi].as_slice(), labels.clone())) {
                return Err(PromqlError::exec(
                    "multiple matches for labels: grouping labels must ensure unique results",
                ));
            }
            let entry = out.entry(labels.clone()).or_insert_with(|| {
                order.push(labels.clone());
                Series::new(labels.clone(), n)
            });
            if entry.has(i) {
                return Err(PromqlError::exec(
                    "vector cannot contain metrics with the same labelset",
                ));
            }
            match val {
                Elem::F(v) => entry.vals[i] = Some(v),
                Elem::H(h) => entry.set_hist(i, h),
            }
        }
    }
    Ok(order.into_iter().filter_map(|l| out.remove(&l)).collect())
}

/// `s` with only the steps `kept` keeps (floats and histograms alike).
fn masked(s: Series, kept: impl Fn(usize) -> bool) -> Series {
    Series {
        vals: s
            .vals
            .iter()
            .enumerate()
            .map(|(i, v)| if kept(i) { *v } else { None })
            .collect(),
        hists: s
            .hists
            .iter()
            .enumerate()
            .map(|(i, h)| if kept(i) { h.clone() } else { None })
            .collect(),
        labels: s.labels,
    }
}
