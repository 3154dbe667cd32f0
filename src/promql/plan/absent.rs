//! `absent(v)` and `absent_over_time(m)`: one series (labels from the selector's equality
//! matchers, as the evaluator derives them) with 1 at every step where the input has no
//! sample. The input's rows are counted per step by DataFusion's aggregation (partial per
//! partition, then final), and a single-partition [`Fold`] answers for the steps no count
//! reached — so it must see every step's count, hence one partition.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{LogicalPlanBuilder, cast, col};
use promql_parser::parser::Call;

use super::codec::{PlanCodec, decode_wire};
use super::fold::{Cell, Fold, Folder};
use super::keyed::Keyed;
use super::regroup::Regroup;
use super::rows;
use super::{Lowered, PlanCtx, SERIES, STEP, VALUE, df_error, range_fn};
use crate::promql::error::PromqlError;
use crate::promql::func::Func;
use crate::promql::kernels::labels::absent_result;
use datafusion::common::internal_err;
use prost::Message;

pub(super) fn lower(p: &PlanCtx, call: &Call) -> Result<Option<Lowered>, PromqlError> {
    let [arg] = call.args.args.as_slice() else {
        return Ok(None);
    };
    let input = if Func::of(call.func.name) == Some(Func::AbsentOverTime) {
        // Where `last_over_time` has a value, the window holds a sample; it keeps
        // `__name__`, so series differing only by name stay apart (no collision to check).
        let mut counted = call.clone();
        counted.func.name = Func::LastOverTime.name();
        range_fn::lower(p, &counted)?
    } else {
        p.lower(arg)?
    };
    let Some(input) = input else {
        return Ok(None);
    };
    let Some(labels) = absent_result(arg, &[false])
        .into_iter()
        .next()
        .map(|s| s.labels)
    else {
        return Ok(None);
    };
    let n = input.series.len();
    let plan = LogicalPlanBuilder::from(Regroup::plan_node(input.plan, vec![0; n], 1)?)
        .aggregate(
            vec![col(SERIES), col(STEP)],
            vec![count(col(VALUE)).alias("n")],
        )
        .and_then(|b| {
            b.project(vec![
                col(SERIES),
                col(STEP),
                cast(col("n"), datafusion::arrow::datatypes::DataType::Float64).alias(VALUE),
            ])
        })
        .and_then(|b| b.build())
        .map_err(df_error)?;
    let plan = Fold::plan_node(
        Keyed::plan_node(plan, vec![0], "the input")?,
        Absent {
            steps: p.ctx.steps.len() as u32,
        },
    )?;
    Ok(Some(Lowered {
        plan,
        series: vec![labels],
    }))
}

/// 1 at the steps without a cell.
pub(crate) struct Absent {
    pub(super) steps: u32,
}

impl Folder for Absent {
    fn name(&self) -> &'static str {
        "Absent"
    }

    fn describe(&self) -> String {
        format!("over {} steps", self.steps)
    }

    fn fold(&self, cells: Vec<((u32, u32), Cell)>) -> DfResult<RecordBatch> {
        let mut present = vec![false; self.steps as usize];
        for ((_, step), _) in cells {
            if let Some(p) = present.get_mut(step as usize) {
                *p = true;
            }
        }
        let steps: Vec<u32> = (0..self.steps).filter(|&i| !present[i as usize]).collect();
        let n = steps.len();
        rows(vec![0; n], steps, vec![1.0; n])
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(AbsentWire { steps: self.steps }.encode_to_vec())
    }

    fn single(&self) -> bool {
        true
    }
}

/// `Absent` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AbsentWire {
    #[prost(uint32, tag = "1")]
    pub steps: u32,
}

impl Absent {
    pub(super) fn decode(buf: &[u8], q: &PlanCodec) -> DfResult<Arc<dyn Folder>> {
        let w: AbsentWire = decode_wire(buf, "Absent")?;
        // A step count is a grid the query already holds: never more than its limit.
        if w.steps as usize > q.max_samples() {
            return internal_err!("absent over {} steps", w.steps);
        }
        Ok(Arc::new(Absent { steps: w.steps }))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::UInt32Type;

    use super::*;

    #[test]
    fn one_at_every_step_without_a_sample() {
        let b = Absent { steps: 4 }
            .fold(vec![((0, 1), vec![(0, 3.0)]), ((0, 2), vec![(0, 1.0)])])
            .unwrap();
        let steps: Vec<u32> = b.column(1).as_primitive::<UInt32Type>().values().to_vec();
        assert_eq!(steps, vec![0, 3]);
    }
}
