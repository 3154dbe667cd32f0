//! Classic `histogram_quantile` over `le` buckets (Prometheus's `quantile.go`), for both
//! engines.

pub(crate) fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.trim().parse().ok(),
    }
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Prometheus's `BucketQuantile` over `(upper bound, cumulative count)`.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return (f64::NAN, false);
    }
    // Coalesce equal bounds.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(b, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == b => last.1 += c,
            _ => merged.push((b, c)),
        }
    }
    // Monotonicity repair, ignoring tiny float noise.
    let mut prev = merged[0].1;
    let mut forced = false;
    for b in merged.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) {
            b.1 = prev;
            continue;
        }
        if curr < prev {
            b.1 = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    if merged.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let last = merged.len() - 1;
    let b = merged[..last].partition_point(|x| x.1 < rank);
    if b == last {
        return (merged[last - 1].0, forced);
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return (merged[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}
