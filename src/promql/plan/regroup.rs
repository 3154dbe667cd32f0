//! Maps each input series to an output series (an aggregation's group, a binary
//! operator's result series) by a table fixed when the query is planned; rows of series
//! mapped to [`DROP`] are left out.
//!
//! This is how labels stay out of the data path: `sum by (job)` is this map (series →
//! its `job` group) followed by DataFusion's aggregation on `(series, step)`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{SchemaRef, UInt32Type};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::LogicalPlan;

use super::codec::{PlanCodec, decode_wire};
use super::rows_schema;
use super::unary::{RowOp, Unary};
use crate::promql::error::PromqlError;
use prost::Message;

/// Output series of input series that leave the result.
pub(super) const DROP: u32 = u32::MAX;

/// The mapping.
pub(crate) struct Regroup {
    /// Output series of each input series.
    pub(super) map: Arc<Vec<u32>>,
    /// Output series count, for plans.
    pub(super) outputs: usize,
}

impl Regroup {
    /// `input` with its series mapped by `map` onto `outputs` series.
    pub(super) fn plan_node(
        input: LogicalPlan,
        map: Vec<u32>,
        outputs: usize,
    ) -> Result<LogicalPlan, PromqlError> {
        Unary::plan_node(
            input,
            Regroup {
                map: Arc::new(map),
                outputs,
            },
        )
    }
}

impl RowOp for Regroup {
    fn name(&self) -> &'static str {
        "Regroup"
    }

    fn describe(&self) -> String {
        format!("{} series → {}", self.map.len(), self.outputs)
    }

    fn schema(&self) -> SchemaRef {
        rows_schema()
    }

    fn keeps_series(&self) -> bool {
        false
    }

    fn apply(&self, b: RecordBatch) -> DfResult<RecordBatch> {
        let (mapped, keep) = map_series(&self.map, &b);
        let out = RecordBatch::try_new(
            rows_schema(),
            vec![Arc::new(mapped), b.column(1).clone(), b.column(2).clone()],
        )?;
        filter(out, keep)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(RegroupWire {
            map: self.map.to_vec(),
            outputs: self.outputs as u64,
        }
        .encode_to_vec())
    }
}

/// `map` applied to a batch's `series` column, and which rows have an output.
pub(super) fn map_series(map: &[u32], b: &RecordBatch) -> (UInt32Array, Option<BooleanArray>) {
    let series = b.column(0).as_primitive::<UInt32Type>();
    let mapped: UInt32Array = series
        .values()
        .iter()
        .map(|&s| map.get(s as usize).copied().unwrap_or(DROP))
        .collect::<Vec<u32>>()
        .into();
    let dropped = mapped.values().contains(&DROP);
    let keep = dropped.then(|| mapped.values().iter().map(|&g| Some(g != DROP)).collect());
    (mapped, keep)
}

/// The rows `keep` selects (all when `None`).
pub(super) fn filter(b: RecordBatch, keep: Option<BooleanArray>) -> DfResult<RecordBatch> {
    match keep {
        None => Ok(b),
        Some(keep) => Ok(filter_record_batch(&b, &keep)?),
    }
}

/// Rows of `series` and `step` with a value each from `values`: a row leaves where `keep`
/// (the series map's verdict, all kept when `None`) leaves it out or its value is `None`.
pub(super) fn rows_where(
    series: ArrayRef,
    step: ArrayRef,
    keep: Option<BooleanArray>,
    values: impl ExactSizeIterator<Item = Option<f64>>,
) -> DfResult<RecordBatch> {
    let mut kept: Vec<bool> = match &keep {
        Some(k) => k.values().iter().collect(),
        None => vec![true; values.len()],
    };
    let values: Vec<f64> = values
        .zip(kept.iter_mut())
        .map(|(v, keep)| {
            v.unwrap_or_else(|| {
                *keep = false;
                f64::NAN
            })
        })
        .collect();
    let out = RecordBatch::try_new(
        rows_schema(),
        vec![series, step, Arc::new(Float64Array::from(values))],
    )?;
    let all = kept.iter().all(|k| *k);
    filter(out, (!all).then(|| BooleanArray::from(kept)))
}

/// `Regroup` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RegroupWire {
    #[prost(uint32, repeated, tag = "1")]
    pub map: Vec<u32>,
    #[prost(uint64, tag = "2")]
    pub outputs: u64,
}

impl Regroup {
    pub(super) fn decode(buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn RowOp>> {
        let w: RegroupWire = decode_wire(buf, "Regroup")?;
        Ok(Arc::new(Regroup {
            map: Arc::new(w.map),
            outputs: w.outputs as usize,
        }))
    }
}
