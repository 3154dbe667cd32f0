//! Aggregations that need a group's samples together, not a running state: `stddev`,
//! `stdvar`, `quantile` (one value per group and step) and `topk`, `bottomk`, `limitk`
//! (the input series they select, labels kept) — a [`Fold`] over the input keyed by
//! group, with the evaluator's arithmetic. Samples are taken in the input's label order,
//! as the evaluator takes them, so ties and float sums come out the same.

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;

use super::fold::{Cell, Folder, rows};
use crate::promql::range_fns as rf;

/// Which aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupFn {
    Stddev,
    Stdvar,
    Quantile,
    TopK,
    BottomK,
    LimitK,
}

impl GroupFn {
    pub fn parse(op: &str) -> Option<GroupFn> {
        Some(match op {
            "stddev" => GroupFn::Stddev,
            "stdvar" => GroupFn::Stdvar,
            "quantile" => GroupFn::Quantile,
            "topk" => GroupFn::TopK,
            "bottomk" => GroupFn::BottomK,
            "limitk" => GroupFn::LimitK,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupFn::Stddev => "stddev",
            GroupFn::Stdvar => "stdvar",
            GroupFn::Quantile => "quantile",
            GroupFn::TopK => "topk",
            GroupFn::BottomK => "bottomk",
            GroupFn::LimitK => "limitk",
        }
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
            // As the evaluator counts: topk/bottomk take ⌊k⌋ (none below 1), limitk while
            // fewer than k are taken.
            let k = match self.f {
                GroupFn::LimitK => (0..cell.len()).take_while(|&i| (i as f64) < param).count(),
                _ if param < 1.0 => continue,
                _ => param.min(1e15) as usize,
            };
            if self.f != GroupFn::LimitK {
                let top = self.f == GroupFn::TopK;
                // NaN ranks last either way; ties keep label order (a stable sort).
                cell.sort_by(|x, y| match (x.1.is_nan(), y.1.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if top => y.1.partial_cmp(&x.1).unwrap_or(std::cmp::Ordering::Equal),
                    _ => x.1.partial_cmp(&y.1).unwrap_or(std::cmp::Ordering::Equal),
                });
            }
            for (series, x) in cell.into_iter().take(k) {
                s.push(series);
                t.push(step);
                v.push(x);
            }
        }
        rows(s, t, v)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
