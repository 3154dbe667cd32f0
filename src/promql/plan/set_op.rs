//! `and`, `unless` and `or` as joins on `(match group, step)`.
//!
//! Every series of both sides is keyed with its signature's id ([`Keyed`]; signatures are
//! labels, so they are numbered when the query is planned). `and` is a left semi-join,
//! `unless` a left anti-join, `or` a fold ([`Or`]) over both sides' rows partitioned by
//! signature (each side read once). The result keeps the left side's series; `or` adds
//! the right side's, a right series with the same labels as a left one sharing its id (it
//! has the same signature, so the two never both have a sample at a step).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{Column, JoinType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, col};
use promql_parser::parser::BinaryExpr;

use super::codec::{PlanCodec, decode_wire};
use super::fold::{Cell, Fold, Folder};
use super::keyed::{KEY, Keyed};
use super::regroup::{DROP, Regroup};
use super::rows;
use super::{Lowered, PlanCtx, SERIES, STEP, VALUE, df_error};
use crate::model::Labels;
use crate::promql::error::PromqlError;
use crate::promql::kernels::grouping::signature;
use crate::promql::op::BinOp;
use prost::Message;

pub(super) fn lower(
    p: &PlanCtx,
    op: BinOp,
    b: &BinaryExpr,
) -> Result<Option<Lowered>, PromqlError> {
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    let Some(lhs) = p.lower(&b.lhs)? else {
        return Ok(None);
    };
    let Some(rhs) = p.lower(&b.rhs)? else {
        return Ok(None);
    };
    let mut ids = crate::model::hashing::map::<Vec<(String, String)>, u32>(0);
    let lkeys: Vec<u32> = lhs
        .series
        .iter()
        .map(|l| {
            let next = ids.len() as u32;
            *ids.entry(signature(l, matching)).or_insert(next)
        })
        .collect();
    // A right series whose signature no left series has changes nothing for `and` and
    // `unless`, and for `or` nothing removes its samples.
    let rkeys: Vec<u32> = rhs
        .series
        .iter()
        .map(|l| ids.get(&signature(l, matching)).copied().unwrap_or(DROP))
        .collect();
    match op {
        BinOp::And | BinOp::Unless => {
            let join = if op == BinOp::And {
                JoinType::LeftSemi
            } else {
                JoinType::LeftAnti
            };
            let plan = keyed_join(
                Keyed::plan_node(lhs.plan, lkeys, "signature")?,
                Keyed::plan_node(rhs.plan, rkeys, "signature")?,
                join,
            )?;
            Ok(Some(Lowered {
                plan,
                series: lhs.series,
            }))
        }
        _ => {
            // Right series no left signature matches pass whole: key them apart.
            let mut next = ids.len() as u32;
            let rkeys = rkeys.into_iter().map(|k| {
                if k != DROP {
                    return k;
                }
                next += 1;
                next - 1
            });
            let nleft = lhs.series.len();
            let keys: Vec<u32> = lkeys.iter().copied().chain(rkeys).collect();
            let mut series = lhs.series.clone();
            let mut left_index = crate::model::hashing::map::<&Labels, u32>(nleft);
            left_index.extend(lhs.series.iter().enumerate().map(|(i, l)| (l, i as u32)));
            // Each right series' result series: the left one with its labels, or its own.
            let right_to: Vec<u32> = rhs
                .series
                .iter()
                .map(|l| match left_index.get(l) {
                    Some(&i) => i,
                    None => {
                        series.push(l.clone());
                        (series.len() - 1) as u32
                    }
                })
                .collect();
            // Right rows numbered after the left ones, so the fold tells the sides apart.
            let shifted = (nleft as u32..(nleft + rhs.series.len()) as u32).collect();
            let right = Regroup::plan_node(rhs.plan, shifted, nleft + rhs.series.len())?;
            let plan =
                LogicalPlanBuilder::from(Keyed::plan_node(lhs.plan, keys.clone(), "signature")?)
                    .union(Keyed::plan_node(right, keys, "signature")?)
                    .and_then(|b| b.build())
                    .map_err(df_error)?;
            let plan = Fold::plan_node(
                plan,
                Or {
                    left: nleft as u32,
                    right_to: Arc::new(right_to),
                },
            )?;
            Ok(Some(Lowered { plan, series }))
        }
    }
}

/// `or` per signature and step: the left side's samples, or the right side's when the
/// left has none.
pub(crate) struct Or {
    /// Input series below this are the left side's (and keep their ids).
    pub(super) left: u32,
    /// Result series of each right series.
    pub(super) right_to: Arc<Vec<u32>>,
}

impl Folder for Or {
    fn name(&self) -> &'static str {
        "Or"
    }

    fn describe(&self) -> String {
        format!("{} left series, {} right", self.left, self.right_to.len())
    }

    fn fold(&self, cells: Vec<((u32, u32), Cell)>) -> DfResult<RecordBatch> {
        let (mut s, mut t, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for ((_, step), cell) in cells {
            let left = cell.iter().any(|(series, _)| *series < self.left);
            for (series, x) in cell {
                let out = match (left, series.checked_sub(self.left)) {
                    (_, None) => series,
                    (false, Some(j)) => match self.right_to.get(j as usize) {
                        Some(&out) => out,
                        None => continue,
                    },
                    (true, Some(_)) => continue,
                };
                s.push(out);
                t.push(step);
                v.push(x);
            }
        }
        rows(s, t, v)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(OrWire {
            left: self.left,
            right_to: self.right_to.to_vec(),
        }
        .encode_to_vec())
    }
}

/// The rows of keyed `left` that `join` keeps against keyed `right` on `(key, step)`, as
/// `(series, step, value)`.
fn keyed_join(
    left: LogicalPlan,
    right: LogicalPlan,
    join: JoinType,
) -> Result<LogicalPlan, PromqlError> {
    let q = |t: &str, c: &str| Column::new(Some(t), c);
    LogicalPlanBuilder::from(left)
        .alias("l")
        .and_then(|l| {
            let r = LogicalPlanBuilder::from(right).alias("r")?.build()?;
            l.join(
                r,
                join,
                (
                    vec![q("l", KEY), q("l", STEP)],
                    vec![q("r", KEY), q("r", STEP)],
                ),
                None,
            )
        })
        .and_then(|j| {
            j.project(vec![
                col(q("l", SERIES)).alias(SERIES),
                col(q("l", STEP)).alias(STEP),
                col(q("l", VALUE)).alias(VALUE),
            ])
        })
        .and_then(|b| b.build())
        .map_err(df_error)
}

/// `Or` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct OrWire {
    #[prost(uint32, tag = "1")]
    pub left: u32,
    #[prost(uint32, repeated, tag = "2")]
    pub right_to: Vec<u32>,
}

impl Or {
    pub(super) fn decode(buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn Folder>> {
        let w: OrWire = decode_wire(buf, "Or")?;
        Ok(Arc::new(Or {
            left: w.left,
            right_to: Arc::new(w.right_to),
        }))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, UInt32Type};

    use super::*;

    /// Left rows win their (signature, step); right rows appear where no left row is, under
    /// their result series.
    #[test]
    fn or_keeps_the_left_and_fills_from_the_right() {
        let or = Or {
            left: 2,
            right_to: Arc::new(vec![0, 5]),
        };
        let b = or
            .fold(vec![
                ((0, 0), vec![(1, 1.0), (2, 9.0)]),
                ((0, 1), vec![(2, 8.0)]),
                ((1, 1), vec![(3, 7.0)]),
            ])
            .unwrap();
        let got: Vec<(u32, u32, f64)> = (0..b.num_rows())
            .map(|i| {
                (
                    b.column(0).as_primitive::<UInt32Type>().value(i),
                    b.column(1).as_primitive::<UInt32Type>().value(i),
                    b.column(2).as_primitive::<Float64Type>().value(i),
                )
            })
            .collect();
        assert_eq!(got, vec![(1, 0, 1.0), (0, 1, 8.0), (5, 1, 7.0)]);
    }
}
