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

/// Vector/vector matching over all steps. Each series' signature is hashed once and
/// becomes a small id, and each matched pair's result series is found once: the per-step
/// work is array lookups, not hashing label strings (which was most of a range query's
/// time here). The checks still run per step, as Prometheus's do, so each error is raised
/// at the same data as there.
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
    // Signatures as ids: equal signatures, equal ids.
    let mut sig_ids = crate::model::hashing::map(one.len());
    let mut sigs: Vec<Vec<(String, String)>> = Vec::new();
    let mut id_of = |labels: &Labels| -> usize {
        let sig = signature(labels, matching);
        *sig_ids.entry(sig.clone()).or_insert_with(|| {
            sigs.push(sig);
            sigs.len() - 1
        })
    };
    let one_sig: Vec<usize> = one.iter().map(|s| id_of(&s.labels)).collect();
    // A many-side signature no one-side series has never matches.
    let many_sig: Vec<Option<usize>> = many
        .iter()
        .map(|s| {
            let sig = signature(&s.labels, matching);
            sig_ids.get(&sig).copied()
        })
        .collect();
    let drop = !op.is_comparison() || return_bool;

    // The result series of each (many, one) pair, found once; results by labels.
    let mut pair_out = crate::model::hashing::map::<(usize, usize), usize>(many.len());
    let mut out_of = crate::model::hashing::map::<Labels, usize>(many.len());
    let mut outs: Vec<Series> = Vec::new();
    // Per step: the one-side series of each signature, and the signatures (one to one) or
    // (signature, result) pairs (many to one) matched so far; a slot is this step's when
    // it holds the step's number.
    const NONE: usize = usize::MAX;
    let mut by_sig: Vec<(usize, usize)> = vec![(NONE, 0); sigs.len()];
    let mut seen_sig: Vec<usize> = vec![NONE; sigs.len()];
    let mut seen_many = crate::model::hashing::set::<(usize, usize)>(0);
    for i in 0..n {
        for (oi, s) in one.iter().enumerate() {
            if !s.has(i) {
                continue;
            }
            let slot = &mut by_sig[one_sig[oi]];
            if slot.0 == i {
                let (prev, sig) = (slot.1, one_sig[oi]);
                let side = if swapped { "left" } else { "right" };
                return Err(PromqlError::exec(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    fmt_sig(&sigs[sig]),
                    s.labels,
                    one[prev].labels
                )));
            }
            *slot = (i, oi);
        }
        seen_many.clear();
        for (mi, s) in many.iter().enumerate() {
            let Some(mv) = operand(s, i) else { continue };
            let Some(sig) = many_sig[mi] else { continue };
            let (at, oi) = by_sig[sig];
            if at != i {
                continue;
            }
            let Some(ov) = operand(&one[oi], i) else {
                continue;
            };
            // Prometheus reports ambiguous one-to-one matches even for samples a filter drops.
            if one_to_one {
                if seen_sig[sig] == i {
                    return Err(PromqlError::exec(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
                seen_sig[sig] = i;
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
            let o = *pair_out.entry((mi, oi)).or_insert_with(|| {
                let labels = result_metric(
                    &s.labels,
                    &one[oi].labels,
                    drop,
                    one_to_one,
                    matching,
                    &include,
                );
                *out_of.entry(labels.clone()).or_insert_with(|| {
                    outs.push(Series::new(labels, n));
                    outs.len() - 1
                })
            });
            if !one_to_one && !seen_many.insert((sig, o)) {
                return Err(PromqlError::exec(
                    "multiple matches for labels: grouping labels must ensure unique results",
                ));
            }
            let entry = &mut outs[o];
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
    Ok(outs)
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
