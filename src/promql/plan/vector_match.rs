//! Vector/vector arithmetic and comparison with Prometheus's vector matching (`on`,
//! `ignoring`, `group_left`, `group_right`) as a hash join.
//!
//! Which series match is a question of labels, so it is answered when the query is
//! planned: every series of the "many" side gets the id of the one "one"-side series with
//! its signature as a `key` ([`Keyed`]); [`StepJoin`] (or past its size DataFusion's hash
//! join) pairs `(key, step)` with the one side's `(series, step)`; [`Combine`] applies the
//! operator and maps each many-side series to its result series. Prometheus's matching errors depend on which series have
//! a sample at a step; a selection where one could occur (a signature twice on the one
//! side, or on the many side of a one-to-one match, or two pairs with one result label
//! set) is left to the evaluator, which raises them exactly where Prometheus does.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, SchemaRef};
use datafusion::common::{Column, JoinType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, col};
use promql_parser::parser::{BinaryExpr, VectorMatchCardinality};

use super::codec::{PlanCodec, decode_wire};
use super::decline::Decline;
use super::keyed::{KEY, Keyed};
use super::regroup::{DROP, map_series, rows_where};
use super::step_join::{MANY, ONE, StepJoin};
use super::unary::{RowOp, Unary};
use super::{Lowered, PlanCtx, SERIES, STEP, VALUE, df_error, rows_schema, unique};
use crate::model::Labels;
use crate::promql::error::PromqlError;
use crate::promql::kernels::grouping::{result_metric, signature};
use crate::promql::kernels::value_fn::ArithOp;
use datafusion::common::internal_err;
use prost::Message;

pub(super) fn lower(
    p: &PlanCtx,
    op: ArithOp,
    b: &BinaryExpr,
    return_bool: bool,
) -> Result<Option<Lowered>, PromqlError> {
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    let card = b
        .modifier
        .as_ref()
        .map(|m| m.card.clone())
        .unwrap_or(VectorMatchCardinality::OneToOne);
    let include: Vec<String> = match &card {
        VectorMatchCardinality::ManyToOne(ls) | VectorMatchCardinality::OneToMany(ls) => {
            ls.labels.clone()
        }
        VectorMatchCardinality::OneToOne => vec![],
        // Only set operators match many to many.
        VectorMatchCardinality::ManyToMany => {
            return p.decline(Decline::ManyToMany);
        }
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let Some(lhs) = p.lower(&b.lhs)? else {
        return Ok(None);
    };
    let Some(rhs) = p.lower(&b.rhs)? else {
        return Ok(None);
    };
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_by_sig = crate::model::hashing::map(one.series.len());
    for (i, l) in one.series.iter().enumerate() {
        if one_by_sig
            .insert(signature(l, matching), i as u32)
            .is_some()
        {
            return p.decline(Decline::DuplicateOnOneSide);
        }
    }
    let drop_name = !op.is_comparison() || return_bool;
    let mut keys = Vec::with_capacity(many.series.len());
    let mut outputs = Vec::with_capacity(many.series.len());
    let mut series: Vec<Labels> = Vec::new();
    let mut many_sigs = crate::model::hashing::set(0);
    for l in &many.series {
        let sig = signature(l, matching);
        match one_by_sig.get(&sig) {
            Some(&o) => {
                if one_to_one && !many_sigs.insert(sig) {
                    return p.decline(Decline::DuplicateOneToOne);
                }
                keys.push(o);
                outputs.push(series.len() as u32);
                series.push(result_metric(
                    l,
                    &one.series[o as usize],
                    drop_name,
                    one_to_one,
                    matching,
                    &include,
                ));
            }
            None => {
                keys.push(DROP);
                outputs.push(DROP);
            }
        }
    }
    if !unique(&series) {
        return p.decline(Decline::ResultCollision);
    }
    let many_plan = Keyed::plan_node(many.plan, keys, "match group")?;
    let plan = match StepJoin::plan_node(many_plan, one.plan, one.series.len(), p.ctx.steps.len())?
    {
        Ok(plan) => plan,
        Err((many_plan, one_plan)) => hash_join(many_plan, one_plan)?,
    };
    let combine = Combine {
        op,
        return_bool,
        one_on_left: swapped,
        outputs: Arc::new(outputs),
    };
    Ok(Some(Lowered {
        plan: Unary::plan_node(plan, combine)?,
        series,
    }))
}

/// The pairs of the keyed many side's rows and the one side's on `(key, step)` as
/// DataFusion's hash join, past [`StepJoin`]'s size.
fn hash_join(many: LogicalPlan, one: LogicalPlan) -> Result<LogicalPlan, PromqlError> {
    let qualified = |t: &str, c: &str| Column::new(Some(t), c);
    LogicalPlanBuilder::from(many)
        .alias("m")
        .and_then(|m| {
            let one = LogicalPlanBuilder::from(one).alias("o")?.build()?;
            m.join(
                one,
                JoinType::Inner,
                (
                    vec![qualified("m", KEY), qualified("m", STEP)],
                    vec![qualified("o", SERIES), qualified("o", STEP)],
                ),
                None,
            )
        })
        .and_then(|j| {
            j.project(vec![
                col(qualified("m", SERIES)).alias(SERIES),
                col(qualified("m", STEP)).alias(STEP),
                col(qualified("m", VALUE)).alias(MANY),
                col(qualified("o", VALUE)).alias(ONE),
            ])
        })
        .and_then(|b| b.build())
        .map_err(df_error)
}

/// The operator applied to matched pairs, each many-side series mapped to its result.
pub(crate) struct Combine {
    pub(super) op: ArithOp,
    pub(super) return_bool: bool,
    /// `group_right`: the one side is the left operand.
    pub(super) one_on_left: bool,
    /// Result series of each many-side series.
    pub(super) outputs: Arc<Vec<u32>>,
}

impl RowOp for Combine {
    fn name(&self) -> &'static str {
        "Combine"
    }

    fn describe(&self) -> String {
        format!(
            "{}{}{}, {} series",
            if self.one_on_left { "one " } else { "many " },
            self.op.symbol(),
            if self.return_bool { " bool" } else { "" },
            self.outputs.iter().filter(|&&o| o != DROP).count()
        )
    }

    fn schema(&self) -> SchemaRef {
        rows_schema()
    }

    fn keeps_series(&self) -> bool {
        false
    }

    fn apply(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let (series, mapped) = map_series(&self.outputs, &batch);
        let many = batch.column(2).as_primitive::<Float64Type>().values();
        let one = batch.column(3).as_primitive::<Float64Type>().values();
        let values = many.iter().zip(one.iter()).map(|(&m, &o)| {
            let (l, r) = if self.one_on_left { (o, m) } else { (m, o) };
            self.op.combine(l, r, self.return_bool)
        });
        rows_where(Arc::new(series), batch.column(1).clone(), mapped, values)
    }

    fn encode(&self) -> DfResult<Vec<u8>> {
        Ok(CombineWire {
            op: self.op.symbol().to_string(),
            return_bool: self.return_bool,
            one_on_left: self.one_on_left,
            outputs: self.outputs.to_vec(),
        }
        .encode_to_vec())
    }
}

/// `Combine` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct CombineWire {
    /// The operator's symbol.
    #[prost(string, tag = "1")]
    pub op: String,
    #[prost(bool, tag = "2")]
    pub return_bool: bool,
    #[prost(bool, tag = "3")]
    pub one_on_left: bool,
    #[prost(uint32, repeated, tag = "4")]
    pub outputs: Vec<u32>,
}

impl Combine {
    pub(super) fn decode(buf: &[u8], _q: &PlanCodec) -> DfResult<Arc<dyn RowOp>> {
        let w: CombineWire = decode_wire(buf, "Combine")?;
        let Some(op) = ArithOp::parse(&w.op) else {
            return internal_err!("unknown operator {}", w.op);
        };
        Ok(Arc::new(Combine {
            op,
            return_bool: w.return_bool,
            one_on_left: w.one_on_left,
            outputs: Arc::new(w.outputs),
        }))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Float64Array, RecordBatch, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, UInt32Type};

    use super::*;

    fn pairs() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new(SERIES, DataType::UInt32, false),
            Field::new(STEP, DataType::UInt32, false),
            Field::new(MANY, DataType::Float64, false),
            Field::new(ONE, DataType::Float64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(UInt32Array::from(vec![0, 1, 2])),
                Arc::new(UInt32Array::from(vec![0, 0, 1])),
                Arc::new(Float64Array::from(vec![1.0, 5.0, 3.0])),
                Arc::new(Float64Array::from(vec![2.0, 2.0, 2.0])),
            ],
        )
        .unwrap()
    }

    fn apply(c: Combine) -> Vec<(u32, u32, f64)> {
        let b = c.apply(pairs()).unwrap();
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

    /// Many-side series map to their result series (or drop); a comparison keeps the left
    /// operand's value, which is the one side's under `group_right`.
    #[test]
    fn combine_maps_series_and_filters_comparisons() {
        let outputs = Arc::new(vec![4, DROP, 7]);
        let sub = apply(Combine {
            op: ArithOp::Sub,
            return_bool: false,
            one_on_left: false,
            outputs: outputs.clone(),
        });
        assert_eq!(sub, vec![(4, 0, -1.0), (7, 1, 1.0)]);
        let gt = apply(Combine {
            op: ArithOp::Gt,
            return_bool: false,
            one_on_left: true,
            outputs: outputs.clone(),
        });
        // 2 > 1 holds (value: the one side's 2); 2 > 3 does not.
        assert_eq!(gt, vec![(4, 0, 2.0)]);
        let gt_bool = apply(Combine {
            op: ArithOp::Gt,
            return_bool: true,
            one_on_left: false,
            outputs,
        });
        assert_eq!(gt_bool, vec![(4, 0, 0.0), (7, 1, 1.0)]);
    }
}
