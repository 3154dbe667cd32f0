//! What `topk`, `bottomk` and `limitk` can still select, kept batch by batch before the
//! rows go to their group's fold: of each `(group, step)` in a batch, the first k rows in
//! the fold's own order ([`GroupFold`]: by value, NaN last, ties in label order; `limitk`:
//! label order). That order is total, so the fold's choice among all rows is its choice
//! among these, and a partition sends k rows per group and step to the shuffle instead of
//! one per series: in a distributed plan this runs in the leaf tasks, before the network.
//!
//! Planned only where it can drop rows: some group has more series than the largest k.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Float64Type, SchemaRef, UInt32Type};
use datafusion::common::internal_err;
use datafusion::error::Result as DfResult;
use prost::Message;

use super::codec::{PlanCodec, decode_wire};
use super::group_fold::{GroupFn, GroupFold};
use super::keyed::keyed_schema;
use super::unary::RowOp;
use crate::promql::kernels::grouping::keep_count;

/// The row operator, over keyed rows (the key is the group).
pub(crate) struct TopRows {
    f: GroupFn,
    /// k at every step.
    param: Vec<f64>,
    /// Position of every input series in label order (the fold's tie-break).
    rank: Vec<u32>,
}

impl TopRows {
    /// The candidates of `fold` (a selecting one), or `None` when no group of
    /// `group_sizes` (series per group) has more series than the fold keeps at some step.
    pub(super) fn of(fold: &GroupFold, group_sizes: &[usize]) -> Option<TopRows> {
        if !fold.f.selects() {
            return None;
        }
        let k = fold
            .param
            .iter()
            .map(|&p| candidates(fold.f, p))
            .max()
            .unwrap_or(0);
        group_sizes.iter().any(|&n| n > k).then(|| TopRows {
            f: fold.f,
            param: fold.param.clone(),
            rank: fold.rank.clone(),
        })
    }
}

/// How many rows of one group and step the fold can select with parameter `k`: what it
/// keeps of a group of any size.
fn candidates(f: GroupFn, k: f64) -> usize {
    keep_count(f == GroupFn::LimitK, k, usize::MAX)
}

/// A row in the fold's order; the greatest is the first to drop.
#[derive(Clone, Copy)]
struct Candidate {
    nan: bool,
    /// The value, negated for topk (so smaller is better in every case); 0 for limitk.
    v: f64,
    rank: u32,
    row: u32,
}

impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> Ordering {
        self.nan
            .cmp(&o.nan)
            .then_with(|| match (self.nan, o.nan) {
                (false, false) => self.v.partial_cmp(&o.v).unwrap_or(Ordering::Equal),
                _ => Ordering::Equal,
            })
            .then(self.rank.cmp(&o.rank))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl RowOp for TopRows {
    fn name(&self) -> &'static str {
        "TopRows"
    }

    fn describe(&self) -> String {
        format!("{} candidates of {} series", self.f.name(), self.rank.len())
    }

    fn schema(&self) -> SchemaRef {
        keyed_schema()
    }

    fn keeps_series(&self) -> bool {
        true
    }

    fn apply(&self, b: RecordBatch) -> DfResult<RecordBatch> {
        let series = b.column(0).as_primitive::<UInt32Type>();
        let step = b.column(1).as_primitive::<UInt32Type>();
        let value = b.column(2).as_primitive::<Float64Type>();
        let key = b.column(3).as_primitive::<UInt32Type>();
        // One group (`topk(5, x)`, the usual): its heaps by step (`param` has one k a
        // step), not hashed with the step for every row. Several: by `(key, step)`, which
        // holds only the cells that occur.
        let steps = self.param.len();
        // (Not for a batch with fewer rows than steps: most heaps would stay empty.)
        let one_key = steps <= b.num_rows() && key.values().windows(2).all(|w| w[0] == w[1]);
        let mut by_step: Vec<BinaryHeap<Candidate>> = if one_key {
            (0..steps).map(|_| BinaryHeap::new()).collect()
        } else {
            Vec::new()
        };
        let mut cells = crate::model::hashing::map::<(u32, u32), BinaryHeap<Candidate>>(0);
        for i in 0..b.num_rows() {
            let t = step.value(i);
            let k = candidates(
                self.f,
                self.param.get(t as usize).copied().unwrap_or(f64::NAN),
            );
            if k == 0 {
                continue;
            }
            let x = value.value(i);
            let c = Candidate {
                nan: x.is_nan() && self.f != GroupFn::LimitK,
                v: match self.f {
                    GroupFn::TopK => -x,
                    GroupFn::BottomK => x,
                    _ => 0.0,
                },
                rank: self
                    .rank
                    .get(series.value(i) as usize)
                    .copied()
                    .unwrap_or(u32::MAX),
                row: i as u32,
            };
            let heap = match by_step.get_mut(t as usize) {
                Some(heap) => heap,
                None => cells.entry((key.value(i), t)).or_default(),
            };
            if heap.len() < k {
                heap.push(c);
            } else if let Some(mut worst) = heap.peek_mut()
                && c < *worst
            {
                *worst = c;
            }
        }
        let mut rows: Vec<u32> = cells
            .into_values()
            .chain(by_step)
            .flat_map(|h| h.into_vec().into_iter().map(|c| c.row))
            .collect();
        if rows.len() == b.num_rows() {
            return Ok(b);
        }
        rows.sort_unstable();
        Ok(take_record_batch(&b, &UInt32Array::from(rows))?)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(TopRowsWire {
            function: self.f.name().to_string(),
            param: self.param.clone(),
            rank: self.rank.clone(),
        }
        .encode_to_vec())
    }
}

/// `TopRows` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct TopRowsWire {
    /// The aggregation's name.
    #[prost(string, tag = "1")]
    function: String,
    #[prost(double, repeated, tag = "2")]
    param: Vec<f64>,
    #[prost(uint32, repeated, tag = "3")]
    rank: Vec<u32>,
}

impl TopRows {
    pub(super) fn decode(buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn RowOp>> {
        Ok(Arc::new(TopRows::from_wire(buf)?))
    }

    fn from_wire(buf: &[u8]) -> DfResult<TopRows> {
        let w: TopRowsWire = decode_wire(buf, "TopRows")?;
        match GroupFn::parse(&w.function) {
            Some(f) if f.selects() => Ok(TopRows {
                f,
                param: w.param,
                rank: w.rank,
            }),
            _ => internal_err!("TopRows of {}", w.function),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, UInt32Array};
    use proptest::prelude::*;

    use super::*;
    use crate::promql::plan::fold::{Cell, Folder};

    fn batch(rows: &[(u32, u32, f64, u32)]) -> RecordBatch {
        RecordBatch::try_new(
            keyed_schema(),
            vec![
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    /// What the fold answers from `b`'s rows, as `(series, step, value bits)` sorted.
    fn folded(fold: &GroupFold, b: &RecordBatch) -> Vec<(u32, u32, u64)> {
        let mut cells = crate::model::hashing::map::<(u32, u32), Cell>(0);
        let (s, t, v, k) = (
            b.column(0).as_primitive::<UInt32Type>(),
            b.column(1).as_primitive::<UInt32Type>(),
            b.column(2).as_primitive::<Float64Type>(),
            b.column(3).as_primitive::<UInt32Type>(),
        );
        for i in 0..b.num_rows() {
            cells
                .entry((k.value(i), t.value(i)))
                .or_default()
                .push((s.value(i), v.value(i)));
        }
        let mut cells: Vec<_> = cells.into_iter().collect();
        cells.sort_unstable_by_key(|(k, _)| *k);
        let out = fold.fold(cells).unwrap();
        let (s, t, v) = (
            out.column(0).as_primitive::<UInt32Type>(),
            out.column(1).as_primitive::<UInt32Type>(),
            out.column(2).as_primitive::<Float64Type>(),
        );
        let mut rows: Vec<_> = (0..out.num_rows())
            .map(|i| (s.value(i), t.value(i), v.value(i).to_bits()))
            .collect();
        rows.sort_unstable();
        rows
    }

    /// Values with ties, signed zeros and NaN.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-3i32..3).prop_map(f64::from),
            Just(-0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            any::<f64>(),
        ]
    }

    /// Ks of every kind: fractions, below one, NaN, larger than any group.
    fn k() -> impl Strategy<Value = f64> {
        prop_oneof![
            (0u32..6).prop_map(f64::from),
            (0.0f64..5.0),
            Just(f64::NAN),
            Just(-1.0),
            Just(1e300),
        ]
    }

    proptest! {
        #[test]
        fn the_fold_selects_the_same_rows_from_the_candidates(
            f in prop_oneof![Just(GroupFn::TopK), Just(GroupFn::BottomK), Just(GroupFn::LimitK)],
            series in 1usize..24,
            steps in 1u32..4,
            groups in 1u32..4,
            seed_values in proptest::collection::vec(value(), 96),
            ks in proptest::collection::vec(k(), 4),
            ranks in Just((0..24u32).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let rank: Vec<u32> = ranks.into_iter().filter(|&r| (r as usize) < series).collect();
            let fold = GroupFold { f, param: ks[..steps as usize].to_vec(), rank };
            let mut rows = Vec::new();
            for s in 0..series as u32 {
                for t in 0..steps {
                    rows.push((s, t, seed_values[(s * 4 + t) as usize % 96], s % groups));
                }
            }
            let all = batch(&rows);
            let sizes: Vec<usize> = (0..groups)
                .map(|g| (0..series as u32).filter(|s| s % groups == g).count())
                .collect();
            let kept = match TopRows::of(&fold, &sizes) {
                Some(top) => {
                    // Through the wire, as a task would get it.
                    let top = TopRows::from_wire(&top.encode().unwrap()).unwrap();
                    top.apply(all.clone()).unwrap()
                }
                None => all.clone(),
            };
            prop_assert_eq!(folded(&fold, &kept), folded(&fold, &all));
        }
    }

    #[test]
    fn keeps_k_rows_of_each_group_and_step() {
        let fold = GroupFold {
            f: GroupFn::TopK,
            param: vec![2.0, 1.0],
            rank: vec![0, 1, 2, 3],
        };
        let top = TopRows::of(&fold, &[4]).expect("a group of 4 > k = 2");
        let rows: Vec<_> = (0..4u32)
            .flat_map(|s| (0..2u32).map(move |t| (s, t, f64::from(s), 0)))
            .collect();
        let kept = top.apply(batch(&rows)).unwrap();
        // Step 0 keeps series 3 and 2, step 1 keeps series 3.
        assert_eq!(kept.num_rows(), 3);
        assert!(
            TopRows::of(&fold, &[2, 1]).is_none(),
            "no group larger than k"
        );
    }
}
