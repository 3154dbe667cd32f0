//! The layout of a histogram's buckets: compaction, lowering the resolution, iteration over
//! buckets with their bounds, and layout-aware equality.

use super::buckets::{
    bits_match, bucket_bound, compact_pairs, from_indexed, from_indexed_with_comp, indexed,
    indexed_with_comp, reduce_pairs, spans_match, with_zero_comp,
};
use super::{
    Bucket, CounterResetHint, FloatHistogram, HistogramError, Side, Span, check_spans,
    is_custom_buckets_schema,
};

impl FloatHistogram {
    /// Copy at a lower (or equal) resolution. Fails for custom buckets on either side or a
    /// higher target schema. The hint is not carried over (as in Go).
    pub fn copy_to_schema(&self, target_schema: i32) -> Result<Self, HistogramError> {
        if target_schema == self.schema {
            return Ok(self.copy());
        }
        let mut c = self.copy();
        c.reduce_resolution(target_schema)?;
        c.hint = CounterResetHint::Unknown;
        Ok(c)
    }

    /// Removes empty buckets at span edges and empty runs longer than `max_empty_buckets`
    /// inside spans, merges spans closer than that, and drops zero-length spans.
    pub fn compact(&mut self, max_empty_buckets: usize) -> &mut Self {
        for positive in [true, false] {
            let (spans, buckets) = self.side(positive);
            let pairs = with_zero_comp(indexed(spans, buckets));
            let (s, b) = from_indexed(
                compact_pairs(&pairs, max_empty_buckets)
                    .into_iter()
                    .map(|(i, v, _)| (i, v)),
            );
            self.set_side(positive, s, b);
        }
        self
    }

    /// `compact` for a histogram and its Kahan compensation, keeping both layouts equal: a
    /// bucket counts as empty only if its compensation is zero, too.
    pub(super) fn kahan_compact(&mut self, max_empty_buckets: usize, c: &mut FloatHistogram) {
        for positive in [true, false] {
            let (spans, buckets) = self.side(positive);
            let comp = if positive {
                &c.positive_buckets
            } else {
                &c.negative_buckets
            };
            let pairs = indexed_with_comp(spans, buckets, comp);
            let (s, b, cb) = from_indexed_with_comp(compact_pairs(&pairs, max_empty_buckets));
            self.set_side(positive, s.clone(), b);
            c.set_side(positive, s, cb);
        }
    }

    pub(super) fn side(&self, positive: bool) -> (&[Span], &[f64]) {
        if positive {
            (&self.positive_spans, &self.positive_buckets)
        } else {
            (&self.negative_spans, &self.negative_buckets)
        }
    }

    pub(super) fn set_side(&mut self, positive: bool, spans: Vec<Span>, buckets: Vec<f64>) {
        if positive {
            self.positive_spans = spans;
            self.positive_buckets = buckets;
        } else {
            self.negative_spans = spans;
            self.negative_buckets = buckets;
        }
    }

    /// Exact equality of data (Go's Equals): count, sum, zero count and bucket values by
    /// bit pattern (so NaN sums of identical bits are equal, and 0 differs from -0),
    /// identical zero threshold and custom bounds, and equal bucket layouts. The hint is
    /// ignored. Meant for compacted histograms.
    pub fn equals(&self, other: &FloatHistogram) -> bool {
        if self.schema != other.schema
            || self.count.to_bits() != other.count.to_bits()
            || self.sum.to_bits() != other.sum.to_bits()
        {
            return false;
        }
        if self.uses_custom_buckets() && self.custom_values != other.custom_values {
            return false;
        }
        #[allow(clippy::float_cmp)]
        if self.zero_threshold != other.zero_threshold
            || self.zero_count.to_bits() != other.zero_count.to_bits()
        {
            return false;
        }
        spans_match(&self.negative_spans, &other.negative_spans)
            && bits_match(&self.negative_buckets, &other.negative_buckets)
            && spans_match(&self.positive_spans, &other.positive_spans)
            && bits_match(&self.positive_buckets, &other.positive_buckets)
    }

    /// Buckets of one side at this histogram's schema, ordered by index (i.e. away from
    /// zero), without any clamping to the zero threshold.
    pub(super) fn side_buckets(&self, positive: bool) -> Vec<Bucket> {
        let (spans, buckets) = self.side(positive);
        indexed(spans, buckets)
            .into_iter()
            .map(|(i, c)| self.make_bucket(i, c, positive, self.schema))
            .collect()
    }

    fn make_bucket(&self, idx: i32, count: f64, positive: bool, schema: i32) -> Bucket {
        let cv: &[f64] = if positive { &self.custom_values } else { &[] };
        let (lower, upper) = if positive {
            (
                bucket_bound(idx.wrapping_sub(1), schema, cv),
                bucket_bound(idx, schema, cv),
            )
        } else {
            (
                -bucket_bound(idx, schema, cv),
                -bucket_bound(idx.wrapping_sub(1), schema, cv),
            )
        };
        let (lower_inclusive, upper_inclusive) = if is_custom_buckets_schema(schema) {
            (idx == 0, true)
        } else {
            (lower < 0.0, upper > 0.0)
        };
        Bucket {
            lower,
            upper,
            count,
            lower_inclusive,
            upper_inclusive,
            index: idx,
        }
    }

    /// Positive buckets in ascending order.
    pub fn positive_buckets_iter(&self) -> impl Iterator<Item = Bucket> {
        self.side_buckets(true).into_iter()
    }

    /// Negative buckets from the one next to zero downwards.
    pub fn negative_buckets_iter(&self) -> impl Iterator<Item = Bucket> {
        self.side_buckets(false).into_iter()
    }

    /// The zero bucket `[-threshold, threshold]`.
    pub fn zero_bucket(&self) -> Bucket {
        Bucket {
            lower: -self.zero_threshold,
            upper: self.zero_threshold,
            count: self.zero_count,
            lower_inclusive: true,
            upper_inclusive: true,
            index: 0,
        }
    }

    /// All buckets in ascending order: negative ones from the most negative, the zero
    /// bucket if its count is > 0 (never for custom buckets), then positive ones. Bucket
    /// bounds reaching into the zero bucket are cut at the zero threshold. Empty buckets
    /// are included; the JSON API skips them.
    pub fn all_buckets(&self) -> Vec<Bucket> {
        let zt = self.zero_threshold;
        let clamp = |mut b: Bucket| {
            if b.upper < 0.0 && b.upper > -zt {
                b.upper = -zt;
            } else if b.lower > 0.0 && b.lower < zt {
                b.lower = zt;
            }
            b
        };
        let mut out: Vec<Bucket> = self
            .side_buckets(false)
            .into_iter()
            .rev()
            .map(clamp)
            .collect();
        if self.zero_count > 0.0 && !self.uses_custom_buckets() {
            out.push(self.zero_bucket());
        }
        out.extend(self.side_buckets(true).into_iter().map(clamp));
        out
    }

    /// Lowers the resolution to `target_schema` (< current schema) by merging buckets.
    pub fn reduce_resolution(&mut self, target_schema: i32) -> Result<(), HistogramError> {
        if self.uses_custom_buckets() {
            return Err(HistogramError::ReduceCustomBuckets);
        }
        if is_custom_buckets_schema(target_schema) {
            return Err(HistogramError::ReduceToCustomBuckets);
        }
        if target_schema >= self.schema {
            return Err(HistogramError::ReduceResolution {
                from: self.schema,
                to: target_schema,
            });
        }
        check_spans(
            &self.positive_spans,
            self.positive_buckets.len(),
            Side::Positive,
        )?;
        check_spans(
            &self.negative_spans,
            self.negative_buckets.len(),
            Side::Negative,
        )?;
        for positive in [true, false] {
            let (s, b) = self.side(positive);
            let reduced = reduce_pairs(
                &with_zero_comp(indexed(s, b)),
                self.schema,
                target_schema,
                false,
            );
            let (s, v) = from_indexed(reduced.into_iter().map(|(i, v, _)| (i, v)));
            self.set_side(positive, s, v);
        }
        self.schema = target_schema;
        Ok(())
    }
}

// Expected values are copied verbatim from Prometheus's test files.
#[cfg(test)]
#[allow(clippy::approx_constant, clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::model::histogram::boundary_rule;
    use crate::model::histogram::testing::{exp, nhcb, spans};

    #[test]
    fn all_buckets_and_boundary_rules() {
        let mut h = exp(0, (0, vec![1.0, 2.0]), (0, vec![3.0]));
        h.zero_threshold = 0.001;
        h.zero_count = 1.0;
        let b = h.all_buckets();
        let got: Vec<(f64, f64, f64, u8)> = b
            .iter()
            .map(|b| (b.lower, b.upper, b.count, boundary_rule(b)))
            .collect();
        assert_eq!(
            got,
            vec![
                (-1.0, -0.5, 3.0, 1),
                (-0.001, 0.001, 1.0, 3),
                (0.5, 1.0, 1.0, 0),
                (1.0, 2.0, 2.0, 0),
            ]
        );
        // Buckets overlapping the zero bucket are cut at the threshold.
        h.zero_threshold = 0.7;
        let b = h.all_buckets();
        assert_eq!((b[0].lower, b[0].upper), (-1.0, -0.7));
        assert_eq!((b[2].lower, b[2].upper), (0.7, 1.0));
        // No zero bucket without zero count.
        h.zero_count = 0.0;
        assert_eq!(h.all_buckets().len(), 3);

        let c = nhcb(&[1.0, 2.0], &[1.0, 0.0, 3.0]);
        let got: Vec<(f64, f64, u8)> = c
            .all_buckets()
            .iter()
            .map(|b| (b.lower, b.upper, boundary_rule(b)))
            .collect();
        assert_eq!(
            got,
            vec![
                (f64::NEG_INFINITY, 1.0, 3),
                (1.0, 2.0, 0),
                (2.0, f64::INFINITY, 0)
            ]
        );
        assert_eq!(c.to_string(), "{count:4, sum:0, [-Inf,1]:1, (2,+Inf]:3}");
        assert_eq!(
            exp(0, (0, vec![1.0]), (1, vec![2.0])).to_string(),
            "{count:3, sum:0, [-2,-1):2, (0.5,1]:1}"
        );
    }

    #[test]
    fn compact_cuts_and_merges() {
        let mut h = FloatHistogram::empty();
        // Indices -1..=1 and 4..=6 with values 0 1 0 | 0 2 3, plus an empty span.
        h.positive_spans = spans(&[(-1, 3), (2, 0), (0, 3)]);
        h.positive_buckets = vec![0.0, 1.0, 0.0, 0.0, 2.0, 3.0];
        let mut c0 = h.clone();
        c0.compact(0);
        assert_eq!(c0.positive_spans, spans(&[(0, 1), (4, 2)]));
        assert_eq!(c0.positive_buckets, vec![1.0, 2.0, 3.0]);
        let mut c3 = h.clone();
        c3.compact(3);
        assert_eq!(c3.positive_spans, spans(&[(0, 1), (4, 2)]));
        let mut c4 = h.clone();
        c4.compact(4);
        assert_eq!(c4.positive_spans, spans(&[(0, 7)]));
        assert_eq!(c4.positive_buckets, vec![1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 3.0]);
        let mut all = h.clone();
        all.positive_buckets = vec![0.0; 6];
        all.compact(0);
        assert!(all.positive_spans.is_empty() && all.positive_buckets.is_empty());
        // Zero-offset spans are merged even with nothing empty.
        let mut z = exp(0, (0, vec![1.0]), (0, vec![]));
        z.positive_spans = spans(&[(0, 1), (0, 1)]);
        z.positive_buckets = vec![1.0, 2.0];
        z.compact(0);
        assert_eq!(z.positive_spans, spans(&[(0, 2)]));
    }

    #[test]
    fn reduce_resolution() {
        let mut h = exp(
            2,
            (-2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            (1, vec![1.0, 1.0]),
        );
        h.reduce_resolution(0).unwrap();
        // Indices -2..=0 at schema 2 map to 0, 1..=3 to 1.
        assert_eq!(h.positive_spans, spans(&[(0, 2)]));
        assert_eq!(h.positive_buckets, vec![6.0, 15.0]);
        assert_eq!(h.negative_spans, spans(&[(1, 1)]));
        assert_eq!(h.negative_buckets, vec![2.0]);
        assert_eq!(
            h.reduce_resolution(0),
            Err(HistogramError::ReduceResolution { from: 0, to: 0 })
        );
        assert_eq!(
            nhcb(&[1.0], &[1.0]).reduce_resolution(0),
            Err(HistogramError::ReduceCustomBuckets)
        );
    }

    #[test]
    fn equals_semantics() {
        let mut a = exp(0, (0, vec![1.0, 2.0]), (0, vec![]));
        a.sum = f64::NAN;
        let mut b = a.clone();
        assert!(a.equals(&b));
        b.hint = CounterResetHint::Gauge;
        assert!(a.equals(&b), "hint is ignored");
        // Zero-length spans do not matter, the layout does.
        b.positive_spans = spans(&[(0, 0), (0, 2)]);
        assert!(a.equals(&b));
        b.positive_spans = spans(&[(0, 1), (0, 1)]);
        assert!(!a.equals(&b));
        // Bit-exact: a different NaN payload or -0 is a difference.
        let mut c = a.clone();
        c.sum = f64::from_bits(0x7ff0_0000_0000_0002);
        assert!(!a.equals(&c));
        let mut z = exp(0, (0, vec![0.0]), (0, vec![]));
        let z2 = z.clone();
        z.positive_buckets[0] = -0.0;
        assert!(!z.equals(&z2));
        // Custom bounds matter only for custom buckets.
        assert!(!nhcb(&[1.0], &[1.0]).equals(&nhcb(&[2.0], &[1.0])));
    }
}
