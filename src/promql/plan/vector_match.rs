//! Vector/vector arithmetic and comparison with Prometheus's vector matching (`on`,
//! `ignoring`, `group_left`, `group_right`) as a hash join.
//!
//! Which series match is a question of labels, so it is answered when the query is
//! planned: every series of the "many" side gets the id of the one "one"-side series with
//! its signature as a `key` ([`Keyed`]); DataFusion joins `(key, step)` with the one
//! side's `(series, step)`; [`Combine`] applies the operator and maps each many-side
//! series to its result series. Prometheus's matching errors depend on which series have
//! a sample at a step; a selection where one could occur (a signature twice on the one
//! side, or on the many side of a one-to-one match, or two pairs with one result label
//! set) is left to the evaluator, which raises them exactly where Prometheus does.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, Float64Array, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, SchemaRef};
use datafusion::common::{Column, JoinType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{LogicalPlanBuilder, col};
use promql_parser::parser::{BinaryExpr, VectorMatchCardinality};

use super::keyed::{KEY, Keyed};
use super::regroup::{DROP, filter, map_series};
use super::unary::{RowOp, Unary};
use super::{Lowered, PlanCtx, SERIES, STEP, VALUE, df_error, rows_schema, unique};
use crate::model::Labels;
use crate::promql::binary::{result_metric, signature};
use crate::promql::error::PromqlError;
use crate::promql::value_fn::ArithOp;

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
            return p.decline("many-to-many matching of an arithmetic operator");
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
    let mut one_by_sig = HashMap::with_capacity(one.series.len());
    for (i, l) in one.series.iter().enumerate() {
        if one_by_sig
            .insert(signature(l, matching), i as u32)
            .is_some()
        {
            return p.decline("vector matching with a match group twice on the one side");
        }
    }
    let drop_name = !op.is_comparison() || return_bool;
    let mut keys = Vec::with_capacity(many.series.len());
    let mut outputs = Vec::with_capacity(many.series.len());
    let mut series: Vec<Arc<Labels>> = Vec::new();
    let mut many_sigs = std::collections::HashSet::new();
    for l in &many.series {
        let sig = signature(l, matching);
        match one_by_sig.get(&sig) {
            Some(&o) => {
                if one_to_one && !many_sigs.insert(sig) {
                    return p.decline("one-to-one matching with a match group twice on a side");
                }
                keys.push(o);
                outputs.push(series.len() as u32);
                series.push(Arc::new(result_metric(
                    l,
                    &one.series[o as usize],
                    drop_name,
                    one_to_one,
                    matching,
                    &include,
                )));
            }
            None => {
                keys.push(DROP);
                outputs.push(DROP);
            }
        }
    }
    if !unique(&series) {
        return p.decline("vector matching whose result series would collide");
    }
    let many_plan = Keyed::plan_node(many.plan, keys, "match group")?;
    let qualified = |t: &str, c: &str| Column::new(Some(t), c);
    let plan = LogicalPlanBuilder::from(many_plan)
        .alias("m")
        .and_then(|m| {
            let one = LogicalPlanBuilder::from(one.plan).alias("o")?.build()?;
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
        .map_err(df_error)?;
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

/// Columns of a matched pair's values.
const MANY: &str = "many";
const ONE: &str = "one";

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
        let many = batch.column(2).as_primitive::<Float64Type>();
        let one = batch.column(3).as_primitive::<Float64Type>();
        let mut keep: Vec<bool> = match &mapped {
            Some(k) => k.values().iter().collect(),
            None => vec![true; batch.num_rows()],
        };
        let values: Vec<f64> = many
            .values()
            .iter()
            .zip(one.values())
            .zip(keep.iter_mut())
            .map(|((&m, &o), keep)| {
                let (l, r) = if self.one_on_left { (o, m) } else { (m, o) };
                match self.op.combine(l, r, self.return_bool) {
                    Some(v) => v,
                    None => {
                        *keep = false;
                        f64::NAN
                    }
                }
            })
            .collect();
        let out = RecordBatch::try_new(
            rows_schema(),
            vec![
                Arc::new(series),
                batch.column(1).clone(),
                Arc::new(Float64Array::from(values)),
            ],
        )?;
        let all = keep.iter().all(|k| *k);
        filter(out, (!all).then(|| BooleanArray::from(keep)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
