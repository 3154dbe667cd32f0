//! `load_with_nhcb`: every classic histogram of a load block (`X_bucket{le=…}`, with
//! `X_count` and `X_sum` when present) also becomes a native histogram with custom buckets
//! (schema −53) named `X`, one sample per position where every bucket series has a value.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::script::{Point, Points};
use crate::model::histogram::{CUSTOM_BUCKETS_SCHEMA, FloatHistogram, Span};
use crate::model::{Labels, METRIC_NAME, is_stale_marker};

#[derive(Default)]
struct Classic {
    /// `(le, points)` of each bucket series.
    buckets: Vec<(f64, Points)>,
    count: Option<Points>,
    sum: Option<Points>,
}

fn float_at(p: &Points, i: usize) -> Option<f64> {
    match p.get(i) {
        Some(Some(Point::Float(v))) if !is_stale_marker(*v) => Some(*v),
        _ => None,
    }
}

/// The native histograms of the classic ones among `series`.
pub fn convert(series: &[(Labels, Points)]) -> Vec<(Labels, Points)> {
    let mut classic: BTreeMap<Labels, Classic> = BTreeMap::new();
    for (labels, points) in series {
        let Some(name) = labels.metric_name() else {
            continue;
        };
        let base_labels = |base: &str, drop_le: bool| {
            let mut pairs: Vec<(String, String)> = labels
                .iter()
                .filter(|(n, _)| *n != METRIC_NAME && !(drop_le && *n == "le"))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            pairs.push((METRIC_NAME.to_string(), base.to_string()));
            Labels::new(pairs).ok()
        };
        if let Some(base) = name.strip_suffix("_bucket") {
            let Some(le) = labels.get("le").and_then(parse_le) else {
                continue;
            };
            if let Some(key) = base_labels(base, true) {
                classic
                    .entry(key)
                    .or_default()
                    .buckets
                    .push((le, points.clone()));
            }
        } else if let Some(base) = name.strip_suffix("_count") {
            if let Some(key) = base_labels(base, false) {
                classic.entry(key).or_default().count = Some(points.clone());
            }
        } else if let Some(base) = name.strip_suffix("_sum")
            && let Some(key) = base_labels(base, false)
        {
            classic.entry(key).or_default().sum = Some(points.clone());
        }
    }
    let mut out = Vec::new();
    for (labels, mut c) in classic {
        if c.buckets.is_empty() {
            continue;
        }
        c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bounds: Vec<f64> = c
            .buckets
            .iter()
            .map(|(le, _)| *le)
            .filter(|le| le.is_finite())
            .collect();
        let n = c.buckets.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
        let mut points: Points = vec![None; n];
        for (i, slot) in points.iter_mut().enumerate() {
            let Some(cumulative) = c
                .buckets
                .iter()
                .map(|(_, p)| float_at(p, i))
                .collect::<Option<Vec<f64>>>()
            else {
                continue;
            };
            let mut buckets: Vec<f64> = Vec::with_capacity(bounds.len() + 1);
            let mut prev = 0.0;
            for v in &cumulative {
                buckets.push(v - prev);
                prev = *v;
            }
            // Without a +Inf bucket the last bound's count is the total.
            if c.buckets.last().is_some_and(|(le, _)| le.is_finite()) {
                buckets.push(0.0);
            }
            let total = *cumulative.last().expect("non-empty");
            let h = FloatHistogram {
                schema: CUSTOM_BUCKETS_SCHEMA,
                count: c
                    .count
                    .as_ref()
                    .and_then(|p| float_at(p, i))
                    .unwrap_or(total),
                sum: c.sum.as_ref().and_then(|p| float_at(p, i)).unwrap_or(0.0),
                positive_spans: vec![Span {
                    offset: 0,
                    length: buckets.len() as u32,
                }],
                positive_buckets: buckets,
                custom_values: bounds.clone(),
                ..FloatHistogram::empty()
            };
            *slot = Some(Point::Hist(Arc::new(h), false));
        }
        out.push((labels, points));
    }
    out
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}
