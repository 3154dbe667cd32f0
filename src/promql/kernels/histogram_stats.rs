//! The PromQL functions of a single native histogram: `histogram_quantile`,
//! `histogram_fraction`, `histogram_stdvar` and `histogram_stddev` (promql/quantile.go and
//! functions.go).

use super::sum::kahan_inc;
use crate::model::histogram::{Bucket, FloatHistogram, HistogramInfo};

/// `histogram_quantile` on a native histogram (promql/quantile.go). q < 0 gives -Inf,
/// q > 1 gives +Inf (the caller warns about the invalid quantile), NaN q or a zero count
/// gives NaN. Interpolation is logarithmic within exponential buckets and linear within
/// custom buckets and the zero bucket. An info is returned when NaN observations make the
/// result NaN or skew it.
pub(crate) fn histogram_quantile(q: f64, h: &FloatHistogram) -> (f64, Option<HistogramInfo>) {
    if q < 0.0 {
        return (f64::NEG_INFINITY, None);
    }
    if q > 1.0 {
        return (f64::INFINITY, None);
    }
    if h.count == 0.0 || q.is_nan() {
        return (f64::NAN, None);
    }
    let mut info = None;
    // NaN observations are counted in h.count but in no bucket, so with a NaN sum we must
    // rank from the bottom; otherwise we rank from the nearer end.
    let forward = h.sum.is_nan() || q < 0.5;
    let mut buckets = h.all_buckets();
    let mut rank = if forward {
        q * h.count
    } else {
        buckets.reverse();
        (1.0 - q) * h.count
    };
    let mut bucket = Bucket {
        lower: 0.0,
        upper: 0.0,
        count: 0.0,
        lower_inclusive: false,
        upper_inclusive: false,
        index: 0,
    };
    let mut count = 0.0;
    let mut next = 0;
    while next < buckets.len() {
        bucket = buckets[next];
        next += 1;
        if bucket.count == 0.0 {
            continue;
        }
        count += bucket.count;
        if count >= rank {
            break;
        }
    }
    if !h.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
        // In the zero bucket of a histogram with buckets on one side only, assume the
        // observations in the zero bucket are on that side, too.
        if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
            bucket.lower = 0.0;
        } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
            bucket.upper = 0.0;
        }
    } else if h.uses_custom_buckets() {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return (bucket.upper, info);
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return (bucket.lower, info);
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        if h.sum.is_nan() {
            return (f64::NAN, Some(HistogramInfo::QuantileNaNResult));
        }
        return (bucket.upper, info);
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    if h.sum.is_nan() {
        count += buckets[next..].iter().map(|b| b.count).sum::<f64>();
        if count < h.count {
            info = Some(HistogramInfo::QuantileNaNSkew);
        }
    }
    let fraction = rank / bucket.count;
    if h.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return (
            bucket.lower + (bucket.upper - bucket.lower) * fraction,
            info,
        );
    }
    let log_lower = bucket.lower.abs().log2();
    let log_upper = bucket.upper.abs().log2();
    if bucket.lower > 0.0 {
        return (
            (log_lower + (log_upper - log_lower) * fraction).exp2(),
            info,
        );
    }
    (
        -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2(),
        info,
    )
}

/// `histogram_fraction(lower, upper, h)`: estimated share of observations in
/// [lower, upper], interpolating like `histogram_quantile`. NaN for a zero count or NaN
/// bounds, 0 for lower >= upper. NaN observations are in no bucket, so the fractions do
/// not add up to 1 then, which is reported as an info.
pub(crate) fn histogram_fraction(
    lower: f64,
    upper: f64,
    h: &FloatHistogram,
) -> (f64, Option<HistogramInfo>) {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return (f64::NAN, None);
    }
    if lower >= upper {
        return (0.0, None);
    }
    let buckets = h.all_buckets();
    let (mut count, mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut next = 0;
    while next < buckets.len() {
        let mut b = buckets[next];
        next += 1;
        count += b.count;
        let mut zero_bucket = false;
        if b.lower <= 0.0 && b.upper >= 0.0 {
            zero_bucket = true;
            if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
                b.lower = 0.0;
            } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
                b.upper = 0.0;
            }
        }
        let linear = h.uses_custom_buckets() || zero_bucket;
        let interpolate = |v: f64| {
            // No interpolation into a bucket reaching to -Inf: count it fully, mirroring
            // how the +Inf bucket contributes nothing.
            if linear && b.lower == f64::NEG_INFINITY {
                return b.count;
            }
            rank + b.count * b.fraction_below(v, linear)
        };
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank += b.count;
    }
    let mut info = None;
    if h.sum.is_nan() {
        count += buckets[next..].iter().map(|b| b.count).sum::<f64>();
        if count < h.count {
            info = Some(HistogramInfo::FractionNaNs);
        }
    } else {
        count = h.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    ((upper_rank - lower_rank) / h.count, info)
}

/// `histogram_stdvar`: variance of the bucket representatives around sum/count. A bucket
/// is represented by its arithmetic mean for custom buckets, 0 for the zero bucket, and
/// its geometric mean for exponential buckets.
pub(crate) fn histogram_stdvar(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut variance, mut comp) = (0.0, 0.0);
    for b in h.all_buckets() {
        if b.count == 0.0 {
            continue;
        }
        let val = if h.uses_custom_buckets() {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let v = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 { -v } else { v }
        };
        let delta = val - mean;
        (variance, comp) = kahan_inc(b.count * delta * delta, variance, comp);
    }
    (variance + comp) / h.count
}

/// `histogram_stddev`: square root of [`histogram_stdvar`].
pub(crate) fn histogram_stddev(h: &FloatHistogram) -> f64 {
    histogram_stdvar(h).sqrt()
}

// Expected values are copied verbatim from Prometheus's test files.
#[cfg(test)]
#[allow(clippy::approx_constant, clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::model::histogram::testing::{assert_close, nhcb};

    fn parse_like(
        schema: i32,
        count: f64,
        sum: f64,
        zc: f64,
        zt: f64,
        pos: Vec<f64>,
        neg: Vec<f64>,
    ) -> FloatHistogram {
        FloatHistogram::from_absolute(schema, zt, zc, count, sum, (0, pos), (0, neg), vec![])
    }

    #[test]
    fn quantiles_from_promql_tests() {
        // histogram_quantile_1 in native_histograms.test.
        let h = parse_like(
            0,
            12.0,
            100.0,
            2.0,
            0.001,
            vec![2.0, 3.0, 0.0, 1.0, 4.0],
            vec![],
        );
        for (q, want) in [
            (1.0, 16.0),
            (0.99, 15.67072476139083),
            (0.9, 12.99603834169977),
            (0.6, 4.594793419988138),
            (0.5, 1.5874010519681994),
            (0.1, 0.0006),
            (0.0, 0.0),
        ] {
            assert_close(histogram_quantile(q, &h).0, want);
        }
        assert_eq!(histogram_quantile(1.001, &h).0, f64::INFINITY);
        assert_eq!(histogram_quantile(-1.0, &h).0, f64::NEG_INFINITY);
        assert!(histogram_quantile(f64::NAN, &h).0.is_nan());
        assert!(histogram_quantile(0.5, &FloatHistogram::empty()).0.is_nan());

        // histogram_quantile_2: only negative buckets.
        let h = parse_like(
            0,
            12.0,
            100.0,
            2.0,
            0.001,
            vec![],
            vec![2.0, 3.0, 0.0, 1.0, 4.0],
        );
        for (q, want) in [
            (1.0, 0.0),
            (0.99, -0.00006),
            (0.9, -0.0006),
            (0.5, -1.5874010519681996),
            (0.1, -12.996038341699768),
            (0.0, -16.0),
        ] {
            assert_close(histogram_quantile(q, &h).0, want);
        }

        // histogram_quantile_3: both sides.
        let b = vec![2.0, 3.0, 0.0, 1.0, 4.0];
        let h = parse_like(0, 24.0, 100.0, 4.0, 0.001, b.clone(), b);
        for (q, want) in [
            (0.99, 15.34822590920423),
            (0.7, 1.2030250360821164),
            (0.55, 0.0006),
            (0.5, 0.0),
            (0.45, -0.0006),
            (0.3, -1.2030250360821169),
            (0.01, -15.34822590920423),
        ] {
            assert_close(histogram_quantile(q, &h).0, want);
        }

        // var_res_histogram: schema-independent interpolation.
        for (schema, want) in [(-1, 2.0), (0, std::f64::consts::SQRT_2), (1, 1.189207)] {
            let h = parse_like(schema, 5.0, 4.0, 0.0, 0.0, vec![0.0, 5.0], vec![]);
            assert_close(histogram_quantile(0.5, &h).0, want);
        }

        // Custom buckets interpolate linearly.
        let mut c = nhcb(&[5.0, 10.0], &[1.0, 2.0, 1.0]);
        c.sum = 5.0;
        assert_eq!(histogram_quantile(0.5, &c).0, 7.5);
        assert_eq!(
            histogram_quantile(0.99, &c).0,
            10.0,
            "+Inf bucket yields its lower bound"
        );
        assert_eq!(
            histogram_quantile(0.1, &c).0,
            2.0,
            "first bucket assumes lower bound 0"
        );
        let neg = nhcb(&[-1.0, 10.0], &[4.0, 0.0, 0.0]);
        assert_eq!(histogram_quantile(0.5, &neg).0, -1.0);
    }

    #[test]
    fn quantile_with_nan_observations() {
        // 5 observations in buckets, 1 NaN (count 6, sum NaN).
        let mut h = parse_like(0, 6.0, f64::NAN, 0.0, 0.0, vec![5.0], vec![]);
        let (v, info) = histogram_quantile(0.5, &h);
        assert!((0.5..=1.0).contains(&v));
        assert_eq!(info, Some(HistogramInfo::QuantileNaNSkew));
        let (v, info) = histogram_quantile(0.99, &h);
        assert!(v.is_nan());
        assert_eq!(info, Some(HistogramInfo::QuantileNaNResult));
        assert_eq!(
            HistogramInfo::QuantileNaNResult.text("foo"),
            "PromQL info: input to histogram_quantile has NaN observations, result is NaN for metric name \"foo\""
        );
        let (f, info) = histogram_fraction(f64::NEG_INFINITY, f64::INFINITY, &h);
        assert_close(f, 5.0 / 6.0);
        assert_eq!(info, Some(HistogramInfo::FractionNaNs));
        // Sum NaN from ±Inf observations without extra count: no info.
        h.count = 5.0;
        assert_eq!(histogram_quantile(0.5, &h).1, None);
    }

    #[test]
    fn fractions_from_promql_tests() {
        // histogram_fraction_2 in native_histograms.test.
        let h = parse_like(
            0,
            12.0,
            100.0,
            2.0,
            0.001,
            vec![2.0, 3.0, 0.0, 1.0, 4.0],
            vec![],
        );
        let inf = f64::INFINITY;
        for (lo, hi, want) in [
            (0.0, inf, 1.0),
            (-inf, 0.0, 0.0),
            (-0.001, 0.0, 0.0),
            (0.0, 0.001, 0.16666666666666666),
            (0.001, inf, 0.8333333333333334),
            (0.0, 0.0005, 0.08333333333333333),
            (-inf, -0.001, 0.0),
            (1.0, 2.0, 0.25),
            (0.0, 1.5, 0.4795739585136224),
            (1.5, 2.0, 0.10375937481971091),
            (1.0, 8.0, 0.3333333333333333),
            (0.0, 6.0, 0.6320802083934297),
            (1.0, 6.0, 0.29874687506009634),
            (1.5, 6.0, 0.15250624987980724),
            (-2.0, -1.0, 0.0),
        ] {
            assert_close(histogram_fraction(lo, hi, &h).0, want);
        }
        assert_close(histogram_quantile(0.6320802083934297, &h).0, 6.0);
        assert_close(histogram_quantile(0.08333333333333333, &h).0, 0.0005);
        assert!(histogram_fraction(f64::NAN, 1.0, &h).0.is_nan());
        assert_eq!(histogram_fraction(2.0, 1.0, &h).0, 0.0);
        assert!(
            histogram_fraction(3.1415, 42.0, &FloatHistogram::empty())
                .0
                .is_nan()
        );
        // Custom buckets: linear, nothing interpolated into the ±Inf buckets.
        let c = nhcb(&[5.0, 10.0], &[1.0, 2.0, 1.0]);
        assert_eq!(histogram_fraction(5.0, 10.0, &c).0, 0.5);
        assert_eq!(histogram_fraction(7.5, 20.0, &c).0, 0.25);
        for (schema, x) in [(-1, 2.0), (0, std::f64::consts::SQRT_2)] {
            let h = parse_like(schema, 5.0, 4.0, 0.0, 0.0, vec![0.0, 5.0], vec![]);
            assert_close(histogram_fraction(0.0, x, &h).0, 0.5);
            let n = parse_like(schema, 5.0, 4.0, 0.0, 0.0, vec![], vec![0.0, 5.0]);
            assert_close(histogram_fraction(-x, 0.0, &n).0, 0.5);
        }
    }

    #[test]
    fn stddev_and_stdvar_from_promql_tests() {
        let h1 = parse_like(
            2,
            4.0,
            10.0,
            0.0,
            0.0,
            vec![1., 0., 0., 0., 1., 0., 0., 1., 1.],
            vec![],
        );
        assert_close(histogram_stddev(&h1), 1.0787993180043811);
        assert_close(histogram_stdvar(&h1), 1.163807968526718);
        let h2 = parse_like(8, 10.0, 10.0, 0.0, 0.0, vec![1., 2., 3., 4.], vec![]);
        assert_close(histogram_stddev(&h2), 0.0048960313898237465);
        assert_close(histogram_stdvar(&h2), 2.3971123370139447e-05);

        let mut pos = vec![0.0; 55];
        pos[13] = 1.0;
        pos[24] = 1.0;
        pos[26] = 1.0;
        pos[54] = 1.0;
        let mut neg = vec![0.0; 47];
        neg[24] = 1.0;
        neg[46] = 1.0;
        let h3 = parse_like(3, 7.0, 62.0, 1.0, 0.0, pos.clone(), neg.clone());
        assert_close(histogram_stddev(&h3), 42.94723640026);
        assert_close(histogram_stdvar(&h3), 1844.4651144196398);
        let h6 = parse_like(3, 7.0, f64::NAN, 1.0, 0.0, pos.clone(), neg.clone());
        assert!(histogram_stddev(&h6).is_nan());
        let h7 = parse_like(3, 7.0, f64::INFINITY, 1.0, 0.0, pos, neg);
        assert_eq!(histogram_stdvar(&h7), f64::INFINITY);

        let n4 = vec![
            0., 0., 1., 1., 1., 0., 1., 1., 0., 0., 3., 0., 0., 0., 1., 0., 0., 1.,
        ];
        let h4 = parse_like(0, 10.0, -112946.0, 0.0, 0.0, vec![], n4);
        assert_close(histogram_stddev(&h4), 27556.344499842);
        assert_close(histogram_stdvar(&h4), 759352122.1939945);
        let h5 = parse_like(0, 10.0, -100.0, 0.0, 0.0, vec![], vec![0., 0., 0., 0., 10.]);
        assert_close(histogram_stddev(&h5), 1.3137084989848);
        assert_close(histogram_stdvar(&h5), 1.725830020304794);
    }
}
