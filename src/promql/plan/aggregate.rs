//! `sum`, `avg`, `count`, `group`, `min` and `max` (with `by`/`without`): the input's
//! series are mapped to their groups ([`Regroup`]) and aggregated per `(group, step)` in
//! cells ([`StepAgg`]; past its size, DataFusion's aggregation), partially in every input
//! partition, repartitioned by group, then finally, with Prometheus's arithmetic
//! ([`super::udaf`]); a grouping that keeps every series apart maps each row instead
//! ([`AggOne`]).
//! The groups' label sets are the output series table. `stddev`, `stdvar`, `quantile`,
//! `topk`, `bottomk` and `limitk` fold each group's samples together ([`GroupFold`]), the
//! selecting ones after each batch is cut to its candidates ([`TopRows`]).

use datafusion::arrow::datatypes::DataType;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{LogicalPlanBuilder, cast, col, lit};
use promql_parser::parser::AggregateExpr;

use super::agg_one::AggOne;
use super::decline::Decline;
use super::fold::Fold;
use super::group_fold::{GroupFn, GroupFold};
use super::keyed::Keyed;
use super::regroup::Regroup;
use super::scalar::scalar;
use super::step_agg::{AggFn, StepAgg};
use super::top_rows::TopRows;
use super::unary::Unary;
use super::{Lowered, PlanCtx, SERIES, STEP, VALUE, df_error, udaf};
use crate::model::Labels;
use crate::promql::error::PromqlError;
use crate::promql::kernels::grouping::Groups;
use crate::promql::op::AggOp;

/// The aggregation's grouping column: group and step in one u64.
const GROUP_STEP: &str = "group_step";

pub(super) fn lower(p: &PlanCtx, a: &AggregateExpr) -> Result<Option<Lowered>, PromqlError> {
    let Some(op) = AggOp::of(a.op) else {
        return Ok(None);
    };
    if let Some(f) = GroupFn::of(op) {
        return lower_fold(p, a, f);
    }
    // The aggregations lowered here: sum, avg, count, group, min, max.
    let Some(func) = AggFn::of(op) else {
        return Ok(None);
    };
    if a.param.is_some() {
        return Ok(None);
    }
    let Some(input) = p.lower(&a.expr)? else {
        return Ok(None);
    };
    let (map, groups) = grouping(&input.series, a);
    let input = match AggOne::plan_node(input.plan, func, &map, groups.len())? {
        Ok(plan) => {
            return Ok(Some(Lowered {
                plan,
                series: groups,
            }));
        }
        Err(input) => input,
    };
    let grouped = Regroup::plan_node(input, map, groups.len())?;
    let grouped = match StepAgg::plan_node(grouped, func, groups.len(), p.ctx.steps.len())? {
        Ok(plan) => {
            return Ok(Some(Lowered {
                plan,
                series: groups,
            }));
        }
        Err(grouped) => grouped,
    };
    let v = col(VALUE);
    let agg = match op {
        AggOp::Sum => udaf::prom_sum().call(vec![v]),
        AggOp::Avg => udaf::prom_avg().call(vec![v]),
        AggOp::Max => udaf::prom_max().call(vec![v]),
        AggOp::Min => udaf::prom_min().call(vec![v]),
        _ => count(v),
    };
    let out = match op {
        AggOp::Count => cast(col("agg"), DataType::Float64),
        AggOp::Group => lit(1.0f64),
        _ => col("agg"),
    };
    // Grouped by one u64, `(group << 32) | step`, not by the two u32 columns: DataFusion's
    // hash table for one primitive column hashes and compares a word per row, where two
    // columns go through its multi-column path (most of a `sum by` over many steps).
    let u64_of = |c: &str| cast(col(c), DataType::UInt64);
    let key = (u64_of(SERIES) * lit(1u64 << 32) + u64_of(STEP)).alias(GROUP_STEP);
    let plan = LogicalPlanBuilder::from(grouped)
        .project(vec![key, col(VALUE)])
        .and_then(|b| b.aggregate(vec![col(GROUP_STEP)], vec![agg.alias("agg")]))
        .and_then(|b| {
            b.project(vec![
                cast(col(GROUP_STEP) / lit(1u64 << 32), DataType::UInt32).alias(SERIES),
                cast(col(GROUP_STEP) % lit(1u64 << 32), DataType::UInt32).alias(STEP),
                out.alias(VALUE),
            ])
        })
        .and_then(|b| b.build())
        .map_err(df_error)?;
    Ok(Some(Lowered {
        plan,
        series: groups,
    }))
}

/// Each input series' group, and the groups' label sets (fixed by labels, so made here,
/// once).
fn grouping(series: &[Labels], a: &AggregateExpr) -> (Vec<u32>, Vec<Labels>) {
    let mut groups = Groups::new(&a.modifier);
    let map = series.iter().map(|l| groups.group_of(l)).collect();
    (map, groups.into_labels())
}

/// `stddev`, `stdvar`, `quantile`, `topk`, `bottomk`, `limitk`: a fold per group.
fn lower_fold(p: &PlanCtx, a: &AggregateExpr, f: GroupFn) -> Result<Option<Lowered>, PromqlError> {
    let param = match (&a.param, f) {
        (None, GroupFn::Stddev | GroupFn::Stdvar) => vec![],
        (Some(e), GroupFn::Quantile | GroupFn::TopK | GroupFn::BottomK | GroupFn::LimitK) => {
            match scalar(p, e) {
                Some(v) => v,
                None => {
                    return p.decline(Decline::AggregationParam(f));
                }
            }
        }
        _ => return Ok(None),
    };
    // A NaN k is the evaluator's error to word.
    if f.selects() && param.iter().any(|k| k.is_nan()) {
        return p.decline(Decline::NanParam(f));
    }
    if f == GroupFn::Quantile {
        p.engine.check_quantile(&param);
    }
    p.hold(param.len())?;
    let Some(input) = p.lower(&a.expr)? else {
        return Ok(None);
    };
    let (map, groups) = grouping(&input.series, a);
    let mut order: Vec<u32> = (0..input.series.len() as u32).collect();
    order.sort_by(|x, y| input.series[*x as usize].cmp(&input.series[*y as usize]));
    let mut rank = vec![0u32; order.len()];
    for (r, s) in order.into_iter().enumerate() {
        rank[s as usize] = r as u32;
    }
    let fold = GroupFold { f, param, rank };
    let mut sizes = vec![0usize; groups.len()];
    for &g in &map {
        sizes[g as usize] += 1;
    }
    let mut keyed = Keyed::plan_node(input.plan, map, "group")?;
    if let Some(top) = TopRows::of(&fold, &sizes) {
        keyed = Unary::plan_node(keyed, top)?;
    }
    let plan = Fold::plan_node(keyed, fold)?;
    let series = if f.selects() { input.series } else { groups };
    Ok(Some(Lowered { plan, series }))
}
