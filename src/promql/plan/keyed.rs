//! Adds a `key` column to a vector's rows from a table fixed when the query is planned —
//! the series' match group for a join (vector matching, set operators) or its histogram
//! for `histogram_quantile`; rows of series keyed [`DROP`] are left out. The series keep
//! their ids.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::LogicalPlan;

use super::codec::{PlanCodec, decode_wire};
use super::regroup::{DROP, filter, map_series};
use super::unary::{RowOp, Unary};
use super::{SERIES, STEP, VALUE};
use crate::promql::error::PromqlError;
use prost::Message;

/// The key column's name.
pub(super) const KEY: &str = "key";

/// `(series u32, step u32, value f64, key u32)`.
pub(super) fn keyed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SERIES, DataType::UInt32, false),
        Field::new(STEP, DataType::UInt32, false),
        Field::new(VALUE, DataType::Float64, false),
        Field::new(KEY, DataType::UInt32, false),
    ]))
}

/// The mapping.
pub(crate) struct Keyed {
    /// Key of each input series ([`DROP`]: none).
    pub(super) keys: Arc<Vec<u32>>,
    /// What the key means, for plans.
    pub(super) what: String,
}

impl Keyed {
    /// `input` with a key per row by its series.
    pub(super) fn plan_node(
        input: LogicalPlan,
        keys: Vec<u32>,
        what: impl Into<String>,
    ) -> Result<LogicalPlan, PromqlError> {
        Unary::plan_node(
            input,
            Keyed {
                keys: Arc::new(keys),
                what: what.into(),
            },
        )
    }
}

impl RowOp for Keyed {
    fn name(&self) -> &'static str {
        "Keyed"
    }

    fn describe(&self) -> String {
        let keyed = self.keys.iter().filter(|&&k| k != DROP).count();
        format!("{} of {keyed}/{} series", self.what, self.keys.len())
    }

    fn schema(&self) -> SchemaRef {
        keyed_schema()
    }

    fn keeps_series(&self) -> bool {
        true
    }

    fn apply(&self, b: RecordBatch) -> DfResult<RecordBatch> {
        let (keys, keep) = map_series(&self.keys, &b);
        let out = RecordBatch::try_new(
            keyed_schema(),
            vec![
                b.column(0).clone(),
                b.column(1).clone(),
                b.column(2).clone(),
                Arc::new(keys),
            ],
        )?;
        filter(out, keep)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(KeyedWire {
            keys: self.keys.to_vec(),
            what: self.what.clone(),
        }
        .encode_to_vec())
    }
}

/// `Keyed` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct KeyedWire {
    #[prost(uint32, repeated, tag = "1")]
    pub keys: Vec<u32>,
    #[prost(string, tag = "2")]
    pub what: String,
}

impl Keyed {
    pub(super) fn decode(buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn RowOp>> {
        let w: KeyedWire = decode_wire(buf, "Keyed")?;
        Ok(Arc::new(Keyed {
            keys: Arc::new(w.keys),
            what: w.what,
        }))
    }
}
