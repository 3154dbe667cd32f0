//! Bucket trimming for the trim operators `</` and `>/` (Go's TrimBuckets): observations
//! above or below a value are cut off, interpolating within the bucket that contains it.

use super::{Bucket, FloatHistogram};

impl FloatHistogram {
    /// Cuts off the observations above (`is_upper_trim`, operator `</`) or below (`>/`)
    /// `rhs`, interpolating within the bucket containing `rhs`, and re-estimates count and
    /// sum from bucket midpoints if anything was trimmed (Go's TrimBuckets).
    pub fn trim_buckets(&mut self, rhs: f64, is_upper_trim: bool) -> &mut Self {
        let custom = self.uses_custom_buckets();
        let mut new_count = 0.0;
        let mut new_sum = 0.0;
        let mut trimmed = false;
        let mut has = [false, false];
        for (si, positive) in [true, false].into_iter().enumerate() {
            let buckets = self.side_buckets(positive);
            for (i, b) in buckets.iter().enumerate() {
                if b.count == 0.0 {
                    continue;
                }
                has[si] = true;
                let keep_all = if is_upper_trim {
                    b.upper <= rhs
                } else {
                    b.lower >= rhs
                };
                let partial = if is_upper_trim {
                    b.lower < rhs
                } else {
                    b.upper > rhs
                };
                let slot = if positive {
                    &mut self.positive_buckets[i]
                } else {
                    &mut self.negative_buckets[i]
                };
                if keep_all {
                    new_count += b.count;
                    new_sum += midpoint(b.lower, b.upper, positive, custom) * b.count;
                } else if partial {
                    let (keep, mid) = bucket_trim(b, rhs, is_upper_trim, positive, custom);
                    new_count += keep;
                    new_sum += mid * keep;
                    #[allow(clippy::float_cmp)]
                    if *slot != keep {
                        *slot = keep;
                        trimmed = true;
                    }
                } else {
                    *slot = 0.0;
                    trimmed = true;
                }
            }
        }
        if self.zero_count > 0.0 {
            let (keep, mid) =
                zero_bucket_trim(&self.zero_bucket(), rhs, has[1], has[0], is_upper_trim);
            #[allow(clippy::float_cmp)]
            if self.zero_count != keep {
                self.zero_count = keep;
                trimmed = true;
            }
            new_sum += mid * keep;
            new_count += keep;
        }
        if trimmed {
            self.count = new_count;
            self.sum = new_sum;
            self.compact(0);
        }
        self
    }
}

/// Representative value of the surviving part of a bucket for the re-estimated sum:
/// arithmetic mean for custom buckets, geometric mean for exponential ones.
fn midpoint(lower: f64, upper: f64, positive: bool, linear: bool) -> f64 {
    if lower.is_infinite() {
        if upper.is_infinite() {
            return 0.0;
        }
        if upper > 0.0 {
            return upper / 2.0;
        }
        return upper;
    } else if upper.is_infinite() {
        return lower;
    }
    if linear {
        return (lower + upper) / 2.0;
    }
    let geo = (lower * upper).abs().sqrt();
    if positive { geo } else { -geo }
}

fn bucket_trim(b: &Bucket, rhs: f64, upper_trim: bool, positive: bool, custom: bool) -> (f64, f64) {
    if b.lower == f64::NEG_INFINITY || b.upper == f64::INFINITY {
        return infinity_bucket_trim(upper_trim, b, rhs);
    }
    let under = if rhs <= b.lower {
        0.0
    } else if rhs >= b.upper {
        b.count
    } else {
        b.count * b.fraction_below(rhs, custom)
    };
    if upper_trim {
        (under, midpoint(b.lower, rhs, positive, custom))
    } else {
        (b.count - under, midpoint(rhs, b.upper, positive, custom))
    }
}

/// Trimming a bucket with an infinite bound: we cannot know where its observations are,
/// so it is kept or dropped as a whole, except for the NHCB first bucket, whose lower
/// bound is treated as 0 when its upper bound is positive.
fn infinity_bucket_trim(upper_trim: bool, b: &Bucket, rhs: f64) -> (f64, f64) {
    let zero_if_inf = |x: f64| if x.is_infinite() { 0.0 } else { x };
    if b.lower == f64::NEG_INFINITY {
        if upper_trim {
            if rhs >= b.upper {
                return (b.count, 0.0);
            }
            if rhs > 0.0 && b.upper > 0.0 && b.upper != f64::INFINITY {
                return (b.count * rhs / b.upper, rhs / 2.0);
            }
            if b.upper <= 0.0 {
                return (b.count, rhs);
            }
            return (0.0, zero_if_inf(b.upper));
        }
        if rhs <= b.lower {
            return (b.count, 0.0);
        }
        if rhs >= 0.0 && b.upper > rhs && b.upper != f64::INFINITY {
            return (b.count * (1.0 - rhs / b.upper), (rhs + b.upper) / 2.0);
        }
        return (0.0, zero_if_inf(b.upper));
    }
    // Upper bound is +Inf.
    if upper_trim {
        return (0.0, zero_if_inf(b.lower));
    }
    if rhs >= b.lower {
        return (b.count, rhs);
    }
    (0.0, zero_if_inf(b.lower))
}

/// Linear trim of the zero bucket, which only extends to the side(s) that have buckets.
fn zero_bucket_trim(
    zb: &Bucket,
    rhs: f64,
    has_negative: bool,
    has_positive: bool,
    upper_trim: bool,
) -> (f64, f64) {
    let mut lower = zb.lower;
    let mut upper = zb.upper;
    if has_negative && !has_positive {
        upper = 0.0;
    }
    if has_positive && !has_negative {
        lower = 0.0;
    }
    let (fraction, mid) = if upper_trim {
        if rhs <= lower {
            return (0.0, 0.0);
        }
        if rhs >= upper {
            return (zb.count, (lower + upper) / 2.0);
        }
        ((rhs - lower) / (upper - lower), (lower + rhs) / 2.0)
    } else {
        if rhs <= lower {
            return (zb.count, (lower + upper) / 2.0);
        }
        if rhs >= upper {
            return (0.0, 0.0);
        }
        ((upper - rhs) / (upper - lower), (rhs + upper) / 2.0)
    };
    (zb.count * fraction, mid)
}

// Expected values are copied verbatim from Prometheus's test files.
#[cfg(test)]
#[allow(clippy::approx_constant, clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::model::histogram::testing::{assert_close, spans};

    #[test]
    fn trim_buckets_from_promql_tests() {
        let h = FloatHistogram::from_absolute(
            0,
            0.001,
            1.0,
            34.0,
            123.75,
            (0, vec![2.0, 4.0, 8.0, 16.0]),
            (0, vec![1.0, 2.0]),
            vec![],
        );
        let mut t = h.clone();
        t.trim_buckets(0.0, false);
        assert_close(t.count, 30.5);
        assert_close(t.sum, 120.20840280171308);
        assert_close(t.zero_count, 0.5);
        assert!(t.negative_buckets.is_empty());

        let mut t = h.clone();
        t.trim_buckets(1.4142135624, true);
        assert_close(t.count, 8.0);
        assert_close(t.sum, 0.2570938865989847);
        assert_eq!(t.positive_buckets.len(), 2);
        assert_close(t.positive_buckets[1], 2.0);

        let mut t = h.clone();
        t.trim_buckets(2.0, false);
        assert_close(t.count, 24.0);
        assert_close(t.sum, 113.13708498984761);
        assert_eq!(t.positive_spans, spans(&[(2, 2)]));
        assert_eq!(t.zero_count, 0.0);

        let mut t = h.clone();
        t.trim_buckets(f64::INFINITY, true);
        assert_eq!(t, h, "nothing trimmed, nothing changed");

        let mut t = h.clone();
        t.trim_buckets(-1.0, true);
        assert_close(t.count, 2.0);
        assert_close(t.sum, -2.8284271247461903);
        assert_eq!(t.negative_spans, spans(&[(1, 1)]));

        let h2 = FloatHistogram::from_absolute(
            2,
            0.001,
            1.0,
            28.0,
            12.8286080906,
            (0, vec![1.0, 2.0, 4.0, 7.0, 3.0]),
            (0, vec![1.0, 5.0, 3.0, 1.0]),
            vec![],
        );
        let mut t = h2.clone();
        t.trim_buckets(1.13, true);
        assert_close(t.count, 13.410582181123704);
        assert_close(t.sum, -9.385798726068233);
        assert_close(t.positive_buckets[1], 1.410582181123704);

        let mut p = FloatHistogram::from_absolute(
            0,
            0.5,
            2.0,
            12.0,
            8.0210678118654755,
            (0, vec![10.0]),
            (0, vec![]),
            vec![],
        );
        p.trim_buckets(0.1, false);
        assert_close(p.count, 11.6);
        assert_close(p.sum, 7.551067811865476);
        assert_close(p.zero_count, 1.6);
    }
}
