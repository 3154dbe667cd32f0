//! Instant functions of one vector: element-wise math, `round`, `clamp*`, date parts and
//! `timestamp` of a computed vector become a [`MapValues`] operator; `label_replace` and
//! `label_join` only rename series in the series table (no operator: no sample changes).
//!
//! Every result loses or changes labels; a result whose series would collide (two input
//! series with one output label set) is left to the evaluator, which reports the
//! collision at the steps where both have a value.

use promql_parser::parser::{Call, Expr};

use super::decline::Decline;
use super::map_values::MapValues;
use super::merge::merged;
use super::scalar::scalar;
use super::{Lowered, PlanCtx};
use crate::model::Labels;
use crate::promql::error::PromqlError;
use crate::promql::func::Func;
use crate::promql::kernels::args::{string_arg, unwrap_paren};
use crate::promql::kernels::grouping::drop_name;
use crate::promql::kernels::labels::set_label;
use crate::promql::kernels::value_fn::ValueFn;

pub(super) fn lower(p: &PlanCtx, call: &Call) -> Result<Option<Lowered>, PromqlError> {
    let name = call.func.name;
    let args = &call.args.args;
    let Some(func) = Func::of(name) else {
        return Ok(None);
    };
    match func {
        Func::LabelReplace | Func::LabelJoin => return relabel(p, call, func),
        Func::Sort | Func::SortDesc | Func::SortByLabel | Func::SortByLabelDesc => {
            // The order is the result's, applied when it is assembled (`value_order`);
            // rows have none.
            if args[1..].iter().any(|e| string_arg(e).is_err()) {
                return p.decline(Decline::SortLabels);
            }
            if p.ctx.steps.len() > 1 || p.ctx.is_range {
                p.engine
                    .warn(crate::promql::kernels::annotations::SORT_IN_RANGE_QUERY.into());
            }
            return p.lower(&args[0]);
        }
        Func::Vector => {
            let Some(v) = args.first().and_then(|e| scalar(p, e)) else {
                return p.decline(Decline::VectorOfScalar);
            };
            p.hold(v.len())?;
            return super::constant::lower(v).map(Some);
        }
        Func::Absent | Func::AbsentOverTime => return super::absent::lower(p, call),
        Func::Timestamp => {
            let [arg] = args.as_slice() else {
                return Ok(None);
            };
            // Of a selector it is the time of the sample the selector picks.
            if let Expr::VectorSelector(vs) = unwrap_paren(arg) {
                let Some(selected) = super::vector_select::lower_timestamps(p, vs)? else {
                    return Ok(None);
                };
                let series = selected.series.iter().map(drop_name).collect();
                return merged(selected.plan, series).map(Some);
            }
            let times = p.ctx.steps.iter().map(|t| t as f64 / 1000.0).collect();
            return map(p, &args[0], ValueFn::StepTime, times, vec![]);
        }
        _ => {}
    }
    let Some(f) = func.value_fn() else {
        return Ok(None);
    };
    let Some(first) = args.first() else {
        // `hour()` and friends: of the evaluation time, `vector(time())`.
        p.hold(p.ctx.steps.len())?;
        let times = p.ctx.steps.iter().map(|t| t as f64 / 1000.0).collect();
        let constant = super::constant::lower(times)?;
        return Ok(Some(Lowered {
            plan: MapValues::plan_node(constant.plan, f, vec![], vec![])?,
            series: constant.series,
        }));
    };
    let n = p.ctx.steps.len();
    let param = |i: usize, default: f64| match args.get(i) {
        Some(e) => scalar(p, e),
        None => Some(vec![default; n]),
    };
    let (a, b) = match f {
        ValueFn::Round => (param(1, 1.0), Some(vec![])),
        ValueFn::Clamp => (param(1, f64::NAN), param(2, f64::NAN)),
        ValueFn::ClampMin | ValueFn::ClampMax => (param(1, f64::NAN), Some(vec![])),
        _ => (Some(vec![]), Some(vec![])),
    };
    let (Some(a), Some(b)) = (a, b) else {
        return p.decline(Decline::FunctionParam(func));
    };
    map(p, first, f, a, b)
}

/// `f` over the vector `arg`, the result's series renamed as `f` does.
pub(super) fn map(
    p: &PlanCtx,
    arg: &Expr,
    f: ValueFn,
    a: Vec<f64>,
    b: Vec<f64>,
) -> Result<Option<Lowered>, PromqlError> {
    p.hold(a.len() + b.len())?;
    let Some(input) = p.lower(arg)? else {
        return Ok(None);
    };
    let series: Vec<Labels> = if f.drops_name() {
        input.series.iter().map(drop_name).collect()
    } else {
        input.series
    };
    merged(MapValues::plan_node(input.plan, f, a, b)?, series).map(Some)
}

/// `label_replace(v, dst, replacement, src, regex)`, `label_join(v, dst, sep, src...)`:
/// the same rows under new label sets. Invalid arguments are left to the evaluator, which
/// words the error.
fn relabel(p: &PlanCtx, call: &Call, func: Func) -> Result<Option<Lowered>, PromqlError> {
    let args = &call.args.args;
    let strings: Option<Vec<String>> = args[1..].iter().map(|e| string_arg(e).ok()).collect();
    let Some(strings) = strings else {
        return p.decline(Decline::LabelArguments);
    };
    let relabel: Box<Relabel> = match func {
        Func::LabelReplace => {
            let [dst, repl, src, re] = strings.as_slice() else {
                return p.decline(Decline::LabelArguments);
            };
            let Ok(re) = regex::Regex::new(&format!("^(?s:{re})$")) else {
                return p.decline(Decline::LabelArguments);
            };
            if dst.is_empty() {
                return p.decline(Decline::LabelArguments);
            }
            let (dst, repl, src) = (dst.clone(), repl.clone(), src.clone());
            Box::new(move |l| match re.captures(l.get(&src).unwrap_or("")) {
                Some(caps) => {
                    let mut v = String::new();
                    caps.expand(&repl, &mut v);
                    set_label(l, &dst, &v)
                }
                None => l.clone(),
            })
        }
        _ => {
            let [dst, sep, srcs @ ..] = strings.as_slice() else {
                return p.decline(Decline::LabelArguments);
            };
            let (dst, sep, srcs) = (dst.clone(), sep.clone(), srcs.to_vec());
            Box::new(move |l| {
                let joined: Vec<&str> = srcs.iter().map(|s| l.get(s).unwrap_or("")).collect();
                set_label(l, &dst, &joined.join(&sep))
            })
        }
    };
    let Some(input) = p.lower(&args[0])? else {
        return Ok(None);
    };
    let series: Vec<Labels> = input.series.iter().map(relabel).collect();
    merged(input.plan, series).map(Some)
}

/// A new label set for each series.
type Relabel = dyn Fn(&Labels) -> Labels;
