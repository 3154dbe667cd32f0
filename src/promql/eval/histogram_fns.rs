//! Functions of native histograms: `histogram_count/sum/avg/stddev/stdvar`,
//! `histogram_fraction`, and the native half of `histogram_quantile`. Floats are ignored
//! by all of them (Prometheus drops them silently); results drop `__name__`.

use std::collections::BTreeMap;

use super::merge_same_labels;
use crate::model::Labels;
use crate::model::histogram::{FloatHistogram, HistogramInfo};
use crate::promql::engine::Engine;
use crate::promql::error::PromqlError;
use crate::promql::func::Func;
use crate::promql::kernels::grouping::drop_name;
use crate::promql::kernels::histogram_stats;
use crate::promql::value::Series;

/// A per-histogram statistic, by function.
pub(super) fn stat(f: Func) -> Option<fn(&FloatHistogram) -> f64> {
    Some(match f {
        Func::HistogramCount => |h| h.count,
        Func::HistogramSum => |h| h.sum,
        Func::HistogramAvg => |h| h.sum / h.count,
        Func::HistogramStddev => histogram_stats::histogram_stddev,
        Func::HistogramStdvar => histogram_stats::histogram_stdvar,
        _ => return None,
    })
}

/// `f` of every histogram sample, per series (floats dropped).
pub(super) fn map(vs: Vec<Series>, f: impl Fn(usize, &str, &FloatHistogram) -> f64) -> Vec<Series> {
    vs.into_iter()
        .filter(Series::has_hists)
        .map(|s| {
            let name = s.labels.metric_name().unwrap_or("").to_string();
            let mut o = Series::new(drop_name(&s.labels), s.vals.len());
            for (i, h) in s.hists.iter().enumerate() {
                if let Some(h) = h {
                    o.vals[i] = Some(f(i, &name, h));
                }
            }
            o
        })
        .collect()
}

fn note(e: &Engine, info: Option<HistogramInfo>, name: &str) {
    if let Some(i) = info {
        e.annotate(&i.text(name));
    }
}

/// `histogram_fraction(lower, upper, v)`.
pub(super) fn fraction(e: &Engine, lower: &[f64], upper: &[f64], vs: Vec<Series>) -> Vec<Series> {
    map(vs, |i, name, h| {
        let (v, info) = histogram_stats::histogram_fraction(lower[i], upper[i], h);
        note(e, info, name);
        v
    })
}

/// The native half of `histogram_quantile(q, v)`, merged into the classic half's result
/// `classic`: a native and a classic histogram with the same labels at one step are both
/// dropped with Prometheus's warning.
pub(super) fn quantile(
    e: &Engine,
    q: &[f64],
    vs: &[Series],
    classic: Vec<Series>,
) -> Result<Vec<Series>, PromqlError> {
    let native = map(
        vs.iter().filter(|s| s.has_hists()).cloned().collect(),
        |i, name, h| {
            let (v, info) = histogram_stats::histogram_quantile(q[i], h);
            note(e, info, name);
            v
        },
    );
    // Two histograms whose labels differ only in the name collide, as in Prometheus.
    let native = merge_same_labels(native)?;
    if native.is_empty() {
        return Ok(classic);
    }
    let names: BTreeMap<Labels, String> = vs
        .iter()
        .filter(|s| s.has_hists())
        .map(|s| {
            (
                drop_name(&s.labels),
                s.labels.metric_name().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut by_labels: BTreeMap<Labels, Series> =
        classic.into_iter().map(|s| (s.labels.clone(), s)).collect();
    for mut s in native {
        if let Some(c) = by_labels.get_mut(&s.labels) {
            for i in 0..s.vals.len() {
                if s.vals[i].is_some() && c.vals[i].is_some() {
                    s.vals[i] = None;
                    c.vals[i] = None;
                    let name = names.get(&s.labels).map_or("", String::as_str);
                    e.warn(format!(
                        "vector contains a mix of classic and native histograms for metric name {name:?}"
                    ));
                } else if c.vals[i].is_none() {
                    c.vals[i] = s.vals[i];
                }
            }
        } else {
            by_labels.insert(s.labels.clone(), s);
        }
    }
    Ok(by_labels.into_values().filter(|s| !s.is_empty()).collect())
}
