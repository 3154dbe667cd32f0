//! Builders and a float comparison shared by the histogram tests here and in
//! `promql::kernels::histogram_stats`.

use super::{CUSTOM_BUCKETS_SCHEMA, FloatHistogram, Span};

/// An exponential histogram with one span per side, no zero bucket and a zero sum.
pub(crate) fn exp(schema: i32, pos: (i32, Vec<f64>), neg: (i32, Vec<f64>)) -> FloatHistogram {
    let count = pos.1.iter().chain(&neg.1).sum();
    FloatHistogram::from_absolute(schema, 0.0, 0.0, count, 0.0, pos, neg, vec![])
}

/// A custom-buckets histogram whose buckets start at the first bound.
pub(crate) fn nhcb(bounds: &[f64], buckets: &[f64]) -> FloatHistogram {
    FloatHistogram::from_absolute(
        CUSTOM_BUCKETS_SCHEMA,
        0.0,
        0.0,
        buckets.iter().sum(),
        0.0,
        (0, buckets.to_vec()),
        (0, vec![]),
        bounds.to_vec(),
    )
}

pub(crate) fn spans(s: &[(i32, u32)]) -> Vec<Span> {
    s.iter()
        .map(|&(offset, length)| Span { offset, length })
        .collect()
}

/// Prometheus's almost.Equal with epsilon 1e-6 (the promqltest tolerance).
fn close(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() || a == b {
        return true;
    }
    (a - b).abs() / (a.abs() + b.abs()).min(f64::MAX) < 1e-6
}

/// Asserts that `a` and `b` are [`close`].
#[track_caller]
pub(crate) fn assert_close(a: f64, b: f64) {
    assert!(close(a, b), "{a} vs {b}");
}
