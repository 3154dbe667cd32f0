//! Aggregations that need a group's samples together, not a running state: `stddev`,
//! `stdvar`, `quantile` (one value per group and step) and `topk`, `bottomk`, `limitk`
//! (the input series they select, labels kept) — a [`Fold`] over the input keyed by
//! group, with the evaluator's arithmetic. Samples are taken in the input's label order,
//! as the evaluator takes them, so ties and float sums come out the same.

use crate::promql::op::AggOp;
use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;

use super::codec::{PlanCodec, decode_wire};
use super::fold::{Cell, Folder};
use super::rows;
use crate::promql::kernels::grouping::{keep_count, rank_by_value};
use crate::promql::kernels::range_fns as rf;
use datafusion::common::internal_err;
use prost::Message;
use std::sync::Arc;

/// Which aggregation: an [`AggOp`] that folds groups (the constants below are the only
/// values, so a `GroupFold` cannot hold `sum` or `count_values`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GroupFn(AggOp);

#[allow(non_upper_case_globals)] // Named as the AggOp variants they wrap, used as patterns.
impl GroupFn {
    pub const Stddev: GroupFn = GroupFn(AggOp::Stddev);
    pub const Stdvar: GroupFn = GroupFn(AggOp::Stdvar);
    pub const Quantile: GroupFn = GroupFn(AggOp::Quantile);
    pub const TopK: GroupFn = GroupFn(AggOp::TopK);
    pub const BottomK: GroupFn = GroupFn(AggOp::BottomK);
    pub const LimitK: GroupFn = GroupFn(AggOp::LimitK);
}

impl GroupFn {
    /// The fold of an aggregation operator, when it is one.
    pub fn of(op: AggOp) -> Option<GroupFn> {
        matches!(
            op,
            AggOp::Stddev
                | AggOp::Stdvar
                | AggOp::Quantile
                | AggOp::TopK
                | AggOp::BottomK
                | AggOp::LimitK
        )
        .then_some(GroupFn(op))
    }

    /// Its aggregation operator.
    pub fn op(self) -> AggOp {
        self.0
    }

    /// From its name on the wire (the plan codec).
    pub fn parse(name: &str) -> Option<GroupFn> {
        AggOp::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .and_then(GroupFn::of)
    }

    pub fn name(self) -> &'static str {
        self.op().name()
    }

    /// Whether the result rows are the selected input series (not one per group).
    pub fn selects(self) -> bool {
        matches!(self, GroupFn::TopK | GroupFn::BottomK | GroupFn::LimitK)
    }
}

/// The fold.
pub(crate) struct GroupFold {
    pub(super) f: GroupFn,
    /// The parameter (φ, k) at every step (empty: none).
    pub(super) param: Vec<f64>,
    /// Position of every input series in label order.
    pub(super) rank: Vec<u32>,
}

impl Folder for GroupFold {
    fn name(&self) -> &'static str {
        "GroupFold"
    }

    fn describe(&self) -> String {
        let param = match self.param.as_slice() {
            [] => String::new(),
            [first, rest @ ..] if rest.iter().all(|x| x.to_bits() == first.to_bits()) => {
                format!("({first})")
            }
            _ => "(<per step>)".into(),
        };
        format!("{}{param} of {} series", self.f.name(), self.rank.len())
    }

    fn fold(&self, cells: Vec<((u32, u32), Cell)>) -> DfResult<RecordBatch> {
        let (mut s, mut t, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for ((group, step), mut cell) in cells {
            cell.sort_unstable_by_key(|(series, _)| {
                self.rank.get(*series as usize).copied().unwrap_or(u32::MAX)
            });
            let param = self.param.get(step as usize).copied().unwrap_or(f64::NAN);
            let mut values: Vec<f64> = cell.iter().map(|(_, x)| *x).collect();
            let one = match self.f {
                GroupFn::Stddev => Some(rf::variance(&values).sqrt()),
                GroupFn::Stdvar => Some(rf::variance(&values)),
                GroupFn::Quantile => Some(rf::quantile(param, &mut values)),
                _ => None,
            };
            if let Some(x) = one {
                s.push(group);
                t.push(step);
                v.push(x);
                continue;
            }
            let limit = self.f == GroupFn::LimitK;
            let k = keep_count(limit, param, cell.len());
            if !limit {
                rank_by_value(&mut cell, |x| x.1, self.f == GroupFn::TopK);
            }
            for (series, x) in cell.into_iter().take(k) {
                s.push(series);
                t.push(step);
                v.push(x);
            }
        }
        rows(s, t, v)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(GroupFoldWire {
            function: self.f.name().to_string(),
            param: self.param.clone(),
            rank: self.rank.clone(),
        }
        .encode_to_vec())
    }
}

/// `GroupFold` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct GroupFoldWire {
    /// The aggregation's name.
    #[prost(string, tag = "1")]
    pub function: String,
    #[prost(double, repeated, tag = "2")]
    pub param: Vec<f64>,
    #[prost(uint32, repeated, tag = "3")]
    pub rank: Vec<u32>,
}

impl GroupFold {
    pub(super) fn decode(buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn Folder>> {
        let w: GroupFoldWire = decode_wire(buf, "GroupFold")?;
        let Some(f) = GroupFn::parse(&w.function) else {
            return internal_err!("unknown aggregation {}", w.function);
        };
        Ok(Arc::new(GroupFold {
            f,
            param: w.param,
            rank: w.rank,
        }))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::{Float64Type, UInt32Type};

    use super::*;

    fn triples(b: &RecordBatch) -> Vec<(u32, u32, f64)> {
        let (s, t, v) = (
            b.column(0).as_primitive::<UInt32Type>(),
            b.column(1).as_primitive::<UInt32Type>(),
            b.column(2).as_primitive::<Float64Type>(),
        );
        (0..b.num_rows())
            .map(|i| (s.value(i), t.value(i), v.value(i)))
            .collect()
    }

    fn fold(f: GroupFn, param: f64, cell: Vec<(u32, f64)>) -> Vec<(u32, u32, f64)> {
        let g = GroupFold {
            f,
            param: vec![param],
            // Label order: series 2, 0, 1.
            rank: vec![1, 2, 0],
        };
        triples(&g.fold(vec![((0, 0), cell)]).unwrap())
    }

    #[test]
    fn topk_ranks_nan_last_and_breaks_ties_by_label_order() {
        let cell = vec![(0, 5.0), (1, f64::NAN), (2, 5.0)];
        assert_eq!(
            fold(GroupFn::TopK, 2.0, cell.clone()),
            vec![(2, 0, 5.0), (0, 0, 5.0)]
        );
        let bottom = fold(GroupFn::BottomK, 3.0, cell.clone());
        assert_eq!(bottom.len(), 3);
        assert!(bottom[2].2.is_nan(), "NaN last for bottomk too");
        assert!(
            fold(GroupFn::TopK, 0.5, cell).is_empty(),
            "k < 1 selects none"
        );
    }

    #[test]
    fn limitk_counts_as_the_evaluator() {
        let cell = vec![(0, 1.0), (1, 2.0), (2, 3.0)];
        // Taken while fewer than k: 1.5 takes two, in label order.
        assert_eq!(
            fold(GroupFn::LimitK, 1.5, cell.clone()),
            vec![(2, 0, 3.0), (0, 0, 1.0)]
        );
        assert_eq!(fold(GroupFn::LimitK, 0.5, cell).len(), 1);
    }

    #[test]
    fn one_value_per_group_for_stddev_and_quantile() {
        let cell = vec![(0, 1.0), (1, 3.0)];
        assert_eq!(
            fold(GroupFn::Stdvar, f64::NAN, cell.clone()),
            vec![(0, 0, 1.0)]
        );
        assert_eq!(
            fold(GroupFn::Stddev, f64::NAN, cell.clone()),
            vec![(0, 0, 1.0)]
        );
        assert_eq!(fold(GroupFn::Quantile, 0.5, cell), vec![(0, 0, 2.0)]);
    }
}
