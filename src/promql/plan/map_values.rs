//! A function of each sample value and the scalars at its step ([`ValueFn`]): element-wise
//! math, `round`, `clamp*`, date parts, unary minus, arithmetic and comparison with a
//! scalar. Series keep their ids (the lowering renames them in the series table, e.g.
//! without `__name__`); samples a comparison or `clamp` leaves out are dropped.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, SchemaRef, UInt32Type};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::LogicalPlan;

use super::codec::{PlanCodec, decode_wire};
use super::regroup::rows_where;
use super::rows_schema;
use super::unary::{RowOp, Unary};
use crate::promql::error::PromqlError;
use crate::promql::kernels::value_fn::ValueFn;
use datafusion::common::internal_err;
use prost::Message;

/// The mapping.
pub(crate) struct MapValues {
    pub(super) f: ValueFn,
    /// The function's scalar parameters at every step (empty when it has none).
    pub(super) a: Arc<Vec<f64>>,
    pub(super) b: Arc<Vec<f64>>,
}

impl MapValues {
    pub(super) fn plan_node(
        input: LogicalPlan,
        f: ValueFn,
        a: Vec<f64>,
        b: Vec<f64>,
    ) -> Result<LogicalPlan, PromqlError> {
        Unary::plan_node(
            input,
            MapValues {
                f,
                a: Arc::new(a),
                b: Arc::new(b),
            },
        )
    }
}

impl RowOp for MapValues {
    fn name(&self) -> &'static str {
        "MapValues"
    }

    fn describe(&self) -> String {
        let param = |p: &[f64]| match p {
            [] => String::new(),
            [first, rest @ ..] if rest.iter().all(|x| x.to_bits() == first.to_bits()) => {
                format!(", {first}")
            }
            _ => ", <per step>".to_string(),
        };
        format!("{}{}{}", self.f.name(), param(&self.a), param(&self.b))
    }

    fn schema(&self) -> SchemaRef {
        rows_schema()
    }

    fn keeps_series(&self) -> bool {
        true
    }

    fn apply(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let step = batch.column(1).as_primitive::<UInt32Type>().values();
        let value = batch.column(2).as_primitive::<Float64Type>().values();
        let at = |p: &[f64], i: u32| p.get(i as usize).copied().unwrap_or(f64::NAN);
        let values = step
            .iter()
            .zip(value.iter())
            .map(|(&s, &v)| self.f.apply(v, at(&self.a, s), at(&self.b, s)));
        rows_where(
            batch.column(0).clone(),
            batch.column(1).clone(),
            None,
            values,
        )
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(MapValuesWire {
            function: self.f.name(),
            a: self.a.to_vec(),
            b: self.b.to_vec(),
        }
        .encode_to_vec())
    }
}

/// `MapValues` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct MapValuesWire {
    /// The `ValueFn`'s name.
    #[prost(string, tag = "1")]
    pub function: String,
    #[prost(double, repeated, tag = "2")]
    pub a: Vec<f64>,
    #[prost(double, repeated, tag = "3")]
    pub b: Vec<f64>,
}

impl MapValues {
    pub(super) fn decode(buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn RowOp>> {
        let w: MapValuesWire = decode_wire(buf, "MapValues")?;
        let Some(f) = ValueFn::from_name(&w.function) else {
            return internal_err!("unknown value function {}", w.function);
        };
        Ok(Arc::new(MapValues {
            f,
            a: Arc::new(w.a),
            b: Arc::new(w.b),
        }))
    }
}
