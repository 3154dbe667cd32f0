//! `sum` and `avg` of native histograms (one group at one step), as Prometheus adds them:
//! Kahan summation bucket by bucket; `avg` falls back to an incremental mean when the sum
//! overflows. Incompatible inputs (exponential and custom buckets in one group) drop the
//! group with a warning; custom bounds that differ are reconciled with an info.

use crate::model::histogram::{CounterResetHint, FloatHistogram, annotation};
use crate::promql::engine::Engine;
use crate::promql::value::Hist;

/// The sum (or mean, with `avg`) of `items` (`(histogram, metric name)`), or `None` when
/// they cannot be added (annotated).
pub(super) fn sum(engine: &Engine, items: &[(&Hist, &str)], avg: bool) -> Option<Hist> {
    let (first, _) = items.first()?;
    let (mut resets, mut not_resets) = (false, false);
    for (h, _) in items {
        resets |= h.hint == CounterResetHint::CounterReset;
        not_resets |= h.hint == CounterResetHint::NotCounterReset;
    }
    let mut value = FloatHistogram::clone(first);
    let mut comp: Option<FloatHistogram> = None;
    let mut reconciled = false;
    for (h, name) in &items[1..] {
        match value.kahan_add(h, &mut comp) {
            Ok(o) => reconciled |= o.nhcb_bounds_reconciled,
            Err(_) => {
                engine.annotate(&format!(
                    "{} {name:?}",
                    annotation::MIXED_EXPONENTIAL_CUSTOM_WARNING
                ));
                return None;
            }
        }
    }
    if reconciled {
        engine.annotate(&format!(
            "{} aggregation",
            annotation::MISMATCHED_CUSTOM_BUCKETS_INFO
        ));
    }
    if resets && not_resets {
        engine.annotate(&format!(
            "{} aggregation",
            annotation::COUNTER_RESET_COLLISION_WARNING
        ));
    }
    let n = items.len() as f64;
    if avg && value.has_overflow() && items.len() > 1 {
        return incremental_mean(items).map(std::sync::Arc::new);
    }
    if avg {
        value.div(n);
        if let Some(c) = comp.as_mut() {
            c.div(n);
        }
    }
    if let Some(c) = &comp {
        // Same layout as `value` by construction: cannot fail.
        let _ = value.add(c);
    }
    value.compact(0);
    Some(std::sync::Arc::new(value))
}

/// `mean_k = mean_{k-1}·(k−1)/k + h_k/k`: finite where the plain sum overflowed.
fn incremental_mean(items: &[(&Hist, &str)]) -> Option<FloatHistogram> {
    let mut mean = FloatHistogram::clone(items[0].0);
    let mut comp: Option<FloatHistogram> = None;
    for (k, (h, _)) in items.iter().enumerate().skip(1) {
        let k = (k + 1) as f64;
        let q = (k - 1.0) / k;
        mean.mul(q);
        if let Some(c) = comp.as_mut() {
            c.mul(q);
        }
        let mut part = FloatHistogram::clone(h);
        part.div(k);
        mean.kahan_add(&part, &mut comp).ok()?;
    }
    if let Some(c) = &comp {
        let _ = mean.add(c);
    }
    mean.compact(0);
    Some(mean)
}
