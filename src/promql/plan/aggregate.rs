//! `sum`, `avg`, `count`, `group`, `min` and `max` (with `by`/`without`) as DataFusion
//! aggregations: the input's series are mapped to their groups ([`Regroup`]), then
//! DataFusion aggregates per `(group, step)` — partially in every input partition,
//! repartitioned by group, then finally — with Prometheus's arithmetic ([`super::udaf`]).
//! The groups' label sets are the output series table.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{LogicalPlanBuilder, cast, col, lit};
use promql_parser::parser::AggregateExpr;

use super::regroup::Regroup;
use super::{Lowered, PlanCtx, SERIES, STEP, VALUE, df_error, udaf};
use crate::model::Labels;
use crate::promql::aggregate::group_labels;
use crate::promql::error::PromqlError;

/// The aggregations lowered here.
fn lowered(op: &str) -> bool {
    matches!(op, "sum" | "avg" | "count" | "group" | "min" | "max")
}

pub(super) fn lower(p: &PlanCtx, a: &AggregateExpr) -> Result<Option<Lowered>, PromqlError> {
    let op = a.op.to_string().to_lowercase();
    if a.param.is_some() || !lowered(&op) {
        return Ok(None);
    }
    let Some(input) = p.lower(&a.expr)? else {
        return Ok(None);
    };
    // Groups are fixed by labels, so the map is made here, once.
    let mut groups: Vec<Arc<Labels>> = Vec::new();
    let mut index: HashMap<Labels, u32> = HashMap::new();
    let map: Vec<u32> = input
        .series
        .iter()
        .map(|l| {
            let g = group_labels(l, &a.modifier);
            *index.entry(g.clone()).or_insert_with(|| {
                groups.push(Arc::new(g));
                (groups.len() - 1) as u32
            })
        })
        .collect();
    let v = col(VALUE);
    let agg = match op.as_str() {
        "sum" => udaf::prom_sum().call(vec![v]),
        "avg" => udaf::prom_avg().call(vec![v]),
        "max" => udaf::prom_max().call(vec![v]),
        "min" => udaf::prom_min().call(vec![v]),
        _ => count(v),
    };
    let out = match op.as_str() {
        "count" => cast(col("agg"), DataType::Float64),
        "group" => lit(1.0f64),
        _ => col("agg"),
    };
    let plan = LogicalPlanBuilder::from(Regroup::plan_node(input.plan, map, groups.len())?)
        .aggregate(vec![col(SERIES), col(STEP)], vec![agg.alias("agg")])
        .and_then(|b| b.project(vec![col(SERIES), col(STEP), out.alias(VALUE)]))
        .and_then(|b| b.build())
        .map_err(df_error)?;
    Ok(Some(Lowered {
        plan,
        series: groups,
    }))
}
