//! Where a selector reads: its matcher sets, the evaluation time of every step (`@`,
//! `offset`), and the left-open window of a range. Both engines resolve selectors through
//! these and through `Engine::select_series`, which applies the caller's scope.

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Offset, VectorSelector};

use crate::model::{METRIC_NAME, Matcher};
use crate::promql::engine::Ctx;
use crate::promql::error::PromqlError;
use crate::promql::value::Steps;

/// A parsed duration in ms, saturating (durations as long as `1000000y` exist in queries).
pub(crate) fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(*d),
        Some(Offset::Neg(d)) => -duration_ms(*d),
    }
}

pub(crate) fn at_ms(a: &Option<AtModifier>, ctx: &Ctx) -> Option<i64> {
    match a {
        None => None,
        Some(AtModifier::Start) => Some(ctx.query_start),
        Some(AtModifier::End) => Some(ctx.query_end),
        Some(AtModifier::At(t)) => Some(match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => duration_ms(d),
            Err(e) => -duration_ms(e.duration()),
        }),
    }
}

/// Evaluation time of every step for a node with these modifiers.
pub(crate) fn eval_times(ctx: &Ctx, at: Option<i64>, offset: i64) -> Vec<i64> {
    ctx.steps
        .iter()
        .map(|t| at.unwrap_or(t).saturating_sub(offset))
        .collect()
}

/// The matcher sets of a selector (several when it uses `or` inside braces).
pub fn matcher_sets(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, PromqlError> {
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, PromqlError> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        if let Some(n) = &vs.name {
            out.push(Matcher::equal(METRIC_NAME, n.clone()));
        }
        for m in ms {
            out.push(match &m.op {
                PMatchOp::Equal => Matcher::equal(m.name.clone(), m.value.clone()),
                PMatchOp::NotEqual => Matcher::not_equal(m.name.clone(), m.value.clone()),
                PMatchOp::Re(_) => Matcher::regex(m.name.clone(), &m.value, false)
                    .map_err(|e| PromqlError::Parse(e.to_string()))?,
                PMatchOp::NotRe(_) => Matcher::regex(m.name.clone(), &m.value, true)
                    .map_err(|e| PromqlError::Parse(e.to_string()))?,
            });
        }
        Ok(out)
    };
    let mut sets = vec![convert(&vs.matchers.matchers)?];
    for or in &vs.matchers.or_matchers {
        sets.push(convert(or)?);
    }
    if vs.matchers.matchers.is_empty() && !vs.matchers.or_matchers.is_empty() {
        sets.remove(0);
    }
    Ok(sets)
}

/// Indices `[a, b)` of samples in the left-open window `(end - range, end]`.
pub(crate) fn window(ts: &[i64], end: i64, range: i64) -> (usize, usize) {
    let a = ts.partition_point(|&t| t <= end.saturating_sub(range));
    let b = ts.partition_point(|&t| t <= end);
    (a, b.max(a))
}

/// A subquery's step: its own when written and positive, else the default.
pub(crate) fn subquery_step(step: Option<std::time::Duration>, default_ms: i64) -> i64 {
    step.map(duration_ms)
        .filter(|s| *s > 0)
        .unwrap_or(default_ms)
}

/// A subquery's inner grid for outer window ends in `[lo, hi]`: multiples of `step`
/// (absolute, as Prometheus aligns them), from the first inside the earliest window
/// `(lo - range, lo]` up to `hi`.
pub(crate) fn subquery_grid(lo: i64, hi: i64, range: i64, step: i64) -> Steps {
    let bound = lo.saturating_sub(range);
    let mut start = step * (bound / step);
    if start <= bound {
        start = start.saturating_add(step);
    }
    Steps::new(start, hi, step)
}
