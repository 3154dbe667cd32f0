//! `sum`, `avg`, `count`, `group`, `min` and `max` where every group holds one series: a
//! map of each row, with no cells to hold.
//!
//! The groups are known when the query is planned, so an aggregation whose grouping keeps
//! every input series apart (`count by (namespace, pod) (x)` over one series per pod, the
//! inner half of the "count distinct" idiom `count by (a) (count by (a, b) (x))`) is
//! known to aggregate one value per cell. [`super::step_agg`] would hold a row of cells for
//! every group over every step (on the peer benchmark's `pod_count_by_namespace` over 6 h,
//! 1,000 groups × 721 steps: 21 MiB more resident memory for that query) and emit them
//! only at the end; here each row becomes its group's row as it passes. The value is the
//! aggregation's own state after one value ([`super::udaf`]), so the arithmetic (a `sum` of
//! −0 is +0, as Prometheus's Kahan sum makes it) is that of the aggregation it replaces.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, SchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::LogicalPlan;
use prost::Message;

use super::codec::{PlanCodec, decode_wire};
use super::regroup::{map_series, rows_where};
use super::rows_schema;
use super::step_agg::AggFn;
use super::udaf::{Avg, Count, Extreme, GroupState, Sum};
use super::unary::{RowOp, Unary};
use crate::promql::error::PromqlError;
use datafusion::common::internal_err;

/// The row operator: each input series' group, and the aggregation.
pub(crate) struct AggOne {
    func: AggFn,
    /// Group of each input series (no two share one).
    map: Arc<Vec<u32>>,
}

impl AggOne {
    /// `func` of `input` grouped by `map`, or `None` when some group holds more than one
    /// series (`groups` is the number of groups, which `map` covers).
    pub(super) fn plan_node(
        input: LogicalPlan,
        func: AggFn,
        map: &[u32],
        groups: usize,
    ) -> Result<Result<LogicalPlan, LogicalPlan>, PromqlError> {
        // `map` is onto the groups, so as many groups as series means one series each.
        if groups != map.len() {
            return Ok(Err(input));
        }
        Unary::plan_node(
            input,
            AggOne {
                func,
                map: Arc::new(map.to_vec()),
            },
        )
        .map(Ok)
    }
}

/// The aggregation of the one value `v`.
fn of_one<S: GroupState>(v: f64) -> Option<f64> {
    let mut s = S::default();
    s.add(v);
    s.value()
}

impl RowOp for AggOne {
    fn name(&self) -> &'static str {
        "AggOne"
    }

    fn describe(&self) -> String {
        format!(
            "{} of one series each, {} groups",
            self.func.name(),
            self.map.len()
        )
    }

    fn schema(&self) -> SchemaRef {
        rows_schema()
    }

    fn keeps_series(&self) -> bool {
        false
    }

    fn apply(&self, b: RecordBatch) -> DfResult<RecordBatch> {
        let (series, keep) = map_series(&self.map, &b);
        let of: fn(f64) -> Option<f64> = match self.func {
            AggFn::Sum => of_one::<Sum>,
            AggFn::Avg => of_one::<Avg>,
            AggFn::Min => of_one::<Extreme<false>>,
            AggFn::Max => of_one::<Extreme<true>>,
            AggFn::Count => of_one::<Count>,
            AggFn::Group => |_| Some(1.0),
        };
        let values = b.column(2).as_primitive::<Float64Type>().values();
        rows_where(
            Arc::new(series),
            b.column(1).clone(),
            keep,
            values.iter().map(|&v| of(v)),
        )
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(AggOneWire {
            func: self.func.index(),
            map: self.map.to_vec(),
        }
        .encode_to_vec())
    }
}

/// `AggOne` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AggOneWire {
    #[prost(uint32, tag = "1")]
    pub func: u32,
    #[prost(uint32, repeated, tag = "2")]
    pub map: Vec<u32>,
}

impl AggOne {
    pub(super) fn decode(buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn RowOp>> {
        Ok(Arc::new(Self::from_wire(decode_wire(buf, "AggOne")?)?))
    }

    fn from_wire(w: AggOneWire) -> DfResult<AggOne> {
        let Some(func) = AggFn::from_index(w.func) else {
            return internal_err!("AggOne: function {}", w.func);
        };
        Ok(AggOne {
            func,
            map: Arc::new(w.map),
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Float64Array, RecordBatch, UInt32Array};
    use datafusion::arrow::datatypes::{Float64Type, UInt32Type};

    use super::*;

    fn rows(b: &RecordBatch) -> Vec<(u32, u32, f64)> {
        (0..b.num_rows())
            .map(|i| {
                (
                    b.column(0).as_primitive::<UInt32Type>().value(i),
                    b.column(1).as_primitive::<UInt32Type>().value(i),
                    b.column(2).as_primitive::<Float64Type>().value(i),
                )
            })
            .collect()
    }

    /// Each row becomes its group's value, as the evaluator aggregates one value (bit for
    /// bit: −0, NaN and infinities included), for every function, after a wire round trip;
    /// series outside the map leave.
    #[test]
    fn each_row_is_its_groups_aggregate() {
        use crate::promql::kernels::range_fns as rf;
        let values = [
            1.5,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            7.0,
        ];
        let n = values.len() as u32;
        let input = RecordBatch::try_new(
            rows_schema(),
            vec![
                Arc::new(UInt32Array::from((0..n).collect::<Vec<_>>())),
                Arc::new(UInt32Array::from(vec![3; values.len()])),
                Arc::new(Float64Array::from(values.to_vec())),
            ],
        )
        .unwrap();
        // Series i to group n - 1 - i; the last series has no group.
        let mut map: Vec<u32> = (0..n).rev().collect();
        map[n as usize - 1] = super::super::regroup::DROP;
        for func in AggFn::ALL {
            let op = AggOne {
                func,
                map: Arc::new(map.clone()),
            };
            let wire = AggOneWire::decode(op.encode().unwrap().as_slice()).unwrap();
            let decoded = AggOne::from_wire(wire).unwrap();
            let got = rows(&decoded.apply(input.clone()).unwrap());
            let want: Vec<(u32, u32, f64)> = values[..values.len() - 1]
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let agg = match func {
                        AggFn::Sum => rf::sum(&[v]),
                        AggFn::Avg => rf::avg(&[v]),
                        AggFn::Min => rf::min(&[v]),
                        AggFn::Max => rf::max(&[v]),
                        AggFn::Count | AggFn::Group => 1.0,
                    };
                    (n - 1 - i as u32, 3, agg)
                })
                .collect();
            let same = got.len() == want.len()
                && got.iter().zip(&want).all(|(a, b)| {
                    (a.0, a.1) == (b.0, b.1)
                        && (a.2.to_bits() == b.2.to_bits() || (a.2.is_nan() && b.2.is_nan()))
                });
            assert!(same, "{func:?}: {got:?} vs {want:?}");
        }
    }
}
