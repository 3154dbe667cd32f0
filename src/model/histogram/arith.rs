//! Arithmetic on native histograms: `add` and `sub` (Go's Add and Sub), `kahan_add` with its
//! compensation histogram, scaling by a scalar, and the zero-bucket reconciliation that
//! lets two histograms with different zero thresholds be combined.

use super::buckets::{
    add_custom_mismatched, add_pairs, from_indexed, from_indexed_with_comp, indexed,
    indexed_with_comp, intersect_custom_bounds, reduce_pairs, with_zero_comp,
};
use super::{AddOutcome, CounterResetHint, FloatHistogram, HistogramError};
use crate::model::kahan::kahan_inc;

impl FloatHistogram {
    /// Scales all counts and the sum. A negative factor makes the result a gauge.
    pub fn mul(&mut self, factor: f64) -> &mut Self {
        self.zero_count *= factor;
        self.count *= factor;
        self.sum *= factor;
        self.positive_buckets.iter_mut().for_each(|b| *b *= factor);
        self.negative_buckets.iter_mut().for_each(|b| *b *= factor);
        if factor < 0.0 {
            self.hint = CounterResetHint::Gauge;
        }
        self
    }

    /// Divides all counts and the sum. Division by zero turns count, sum and zero count
    /// into ±Inf/NaN and removes all buckets (the hint is then left alone, as in Go).
    pub fn div(&mut self, scalar: f64) -> &mut Self {
        self.zero_count /= scalar;
        self.count /= scalar;
        self.sum /= scalar;
        if scalar == 0.0 {
            self.positive_buckets.clear();
            self.negative_buckets.clear();
            self.positive_spans.clear();
            self.negative_spans.clear();
            return self;
        }
        self.positive_buckets.iter_mut().for_each(|b| *b /= scalar);
        self.negative_buckets.iter_mut().for_each(|b| *b /= scalar);
        if scalar < 0.0 {
            self.hint = CounterResetHint::Gauge;
        }
        self
    }

    /// In-place `self += other` (Go's Add). The result has the lower of both schemas and a
    /// zero bucket wide enough for both; custom bounds that differ are reconciled to their
    /// intersection. The result may contain empty buckets; callers compact it. On error
    /// `self` is unchanged.
    pub fn add(&mut self, other: &FloatHistogram) -> Result<AddOutcome, HistogramError> {
        self.add_or_sub(other, false)
    }

    /// In-place `self -= other` (Go's Sub). The hint is adjusted as for `add`; the binary
    /// `-` operator must set `Gauge` on the result afterwards.
    pub fn sub(&mut self, other: &FloatHistogram) -> Result<AddOutcome, HistogramError> {
        self.add_or_sub(other, true)
    }

    fn add_or_sub(
        &mut self,
        other: &FloatHistogram,
        negate: bool,
    ) -> Result<AddOutcome, HistogramError> {
        self.check_schema_and_bounds(other)?;
        let mut outcome = AddOutcome {
            counter_reset_collision: self.adjust_counter_reset(other),
            nhcb_bounds_reconciled: false,
        };
        if !self.uses_custom_buckets() {
            let (other_zero, _) = self.reconcile_zero_buckets(other, None);
            if negate {
                self.zero_count -= other_zero;
            } else {
                self.zero_count += other_zero;
            }
        }
        if negate {
            self.count -= other.count;
            self.sum -= other.sum;
        } else {
            self.count += other.count;
            self.sum += other.sum;
        }

        if self.uses_custom_buckets() {
            let a = indexed(&self.positive_spans, &self.positive_buckets);
            let b = indexed(&other.positive_spans, &other.positive_buckets);
            if self.custom_values == other.custom_values {
                let merged = add_pairs(
                    self.schema,
                    self.zero_threshold,
                    negate,
                    &with_zero_comp(a),
                    &with_zero_comp(b),
                    false,
                );
                let (s, v) = from_indexed(merged.into_iter().map(|(i, v, _)| (i, v)));
                self.set_side(true, s, v);
            } else {
                outcome.nhcb_bounds_reconciled = true;
                let inter = intersect_custom_bounds(&self.custom_values, &other.custom_values);
                let (s, v, _) = add_custom_mismatched(
                    negate,
                    &a,
                    &self.custom_values,
                    None,
                    &b,
                    &other.custom_values,
                    &inter,
                );
                self.set_side(true, s, v);
                self.custom_values = inter;
            }
            return Ok(outcome);
        }

        let target = self.schema.min(other.schema);
        for positive in [true, false] {
            let (s, b) = self.side(positive);
            let mut a = with_zero_comp(indexed(s, b));
            let (os, ob) = other.side(positive);
            let mut o = with_zero_comp(indexed(os, ob));
            if self.schema > target {
                a = reduce_pairs(&a, self.schema, target, false);
            }
            if other.schema > target {
                o = reduce_pairs(&o, other.schema, target, false);
            }
            let merged = add_pairs(target, self.zero_threshold, negate, &a, &o, false);
            let (s, v) = from_indexed(merged.into_iter().map(|(i, v, _)| (i, v)));
            self.set_side(positive, s, v);
        }
        self.schema = target;
        Ok(outcome)
    }

    /// An all-zero compensation histogram with the layout of `self`, for `kahan_add`.
    pub fn new_compensation(&self) -> FloatHistogram {
        FloatHistogram {
            hint: self.hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            custom_values: self.custom_values.clone(),
            positive_spans: self.positive_spans.clone(),
            positive_buckets: vec![0.0; self.positive_buckets.len()],
            negative_spans: if self.uses_custom_buckets() {
                Vec::new()
            } else {
                self.negative_spans.clone()
            },
            negative_buckets: if self.uses_custom_buckets() {
                Vec::new()
            } else {
                vec![0.0; self.negative_buckets.len()]
            },
            ..FloatHistogram::empty()
        }
    }

    /// `add` with Kahan summation, as `sum` and `avg` use it (Go's KahanAdd). `comp` holds
    /// the running compensation and is created on first use; it always has the layout of
    /// `self`. The final value is `self` + `comp` (a plain `add`, then `compact(0)`). On
    /// error neither `self` nor `comp` is changed.
    pub fn kahan_add(
        &mut self,
        other: &FloatHistogram,
        comp: &mut Option<FloatHistogram>,
    ) -> Result<AddOutcome, HistogramError> {
        self.check_schema_and_bounds(other)?;
        let mut outcome = AddOutcome {
            counter_reset_collision: self.adjust_counter_reset(other),
            nhcb_bounds_reconciled: false,
        };
        let c = comp.get_or_insert_with(|| self.new_compensation());
        // Keep the compensation aligned with our buckets even if a caller mixed them up.
        c.positive_buckets.resize(self.positive_buckets.len(), 0.0);
        c.negative_buckets.resize(self.negative_buckets.len(), 0.0);

        if !self.uses_custom_buckets() {
            let (oz, ocz) = self.reconcile_zero_buckets(other, Some(c));
            (self.zero_count, c.zero_count) = kahan_inc(oz, self.zero_count, c.zero_count);
            (self.zero_count, c.zero_count) = kahan_inc(ocz, self.zero_count, c.zero_count);
        }
        (self.count, c.count) = kahan_inc(other.count, self.count, c.count);
        (self.sum, c.sum) = kahan_inc(other.sum, self.sum, c.sum);

        if self.uses_custom_buckets() {
            let (s, v, cv) = if self.custom_values == other.custom_values {
                let a = indexed_with_comp(
                    &self.positive_spans,
                    &self.positive_buckets,
                    &c.positive_buckets,
                );
                let b = with_zero_comp(indexed(&other.positive_spans, &other.positive_buckets));
                from_indexed_with_comp(add_pairs(
                    self.schema,
                    self.zero_threshold,
                    false,
                    &a,
                    &b,
                    true,
                ))
            } else {
                outcome.nhcb_bounds_reconciled = true;
                let inter = intersect_custom_bounds(&self.custom_values, &other.custom_values);
                let r = add_custom_mismatched(
                    false,
                    &indexed(&self.positive_spans, &self.positive_buckets),
                    &self.custom_values,
                    Some(&c.positive_buckets),
                    &indexed(&other.positive_spans, &other.positive_buckets),
                    &other.custom_values,
                    &inter,
                );
                self.custom_values = inter.clone();
                c.custom_values = inter;
                r
            };
            self.set_side(true, s.clone(), v);
            c.set_side(true, s, cv);
            return Ok(outcome);
        }

        let target = self.schema.min(other.schema);
        for positive in [true, false] {
            let (s, b) = self.side(positive);
            let comp_b = if positive {
                &c.positive_buckets
            } else {
                &c.negative_buckets
            };
            let mut a = indexed_with_comp(s, b, comp_b);
            let (os, ob) = other.side(positive);
            let mut o = with_zero_comp(indexed(os, ob));
            if self.schema > target {
                a = reduce_pairs(&a, self.schema, target, true);
            }
            if other.schema > target {
                o = reduce_pairs(&o, other.schema, target, true);
            }
            let (s, v, cv) =
                from_indexed_with_comp(add_pairs(target, self.zero_threshold, false, &a, &o, true));
            self.set_side(positive, s.clone(), v);
            c.set_side(positive, s, cv);
        }
        self.schema = target;
        c.schema = target;
        c.zero_threshold = self.zero_threshold;
        Ok(outcome)
    }

    fn check_schema_and_bounds(&self, other: &FloatHistogram) -> Result<(), HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        Ok(())
    }

    /// Hint of a sum/difference: equal hints stay, a gauge on either side wins, then
    /// unknown wins; CounterReset vs NotCounterReset is a collision and yields unknown.
    fn adjust_counter_reset(&mut self, other: &FloatHistogram) -> bool {
        use CounterResetHint::*;
        match (self.hint, other.hint) {
            (a, b) if a == b => false,
            (Gauge, _) => false,
            (_, Gauge) => {
                self.hint = Gauge;
                false
            }
            (Unknown, _) => false,
            (_, Unknown) => {
                self.hint = Unknown;
                false
            }
            _ => {
                self.hint = Unknown;
                true
            }
        }
    }

    /// The zero count this histogram would have with the given larger threshold, plus the
    /// threshold actually needed: if the new threshold cuts through a populated bucket, it
    /// is moved to that bucket's outer bound. Also returns the Kahan compensation of the
    /// zero count (seeded from `c`, whose buckets are folded in as well).
    pub(super) fn zero_count_for_larger_threshold(
        &self,
        mut larger: f64,
        c: Option<&FloatHistogram>,
    ) -> (f64, f64, f64) {
        let mut cz = c.map_or(0.0, |c| c.zero_count);
        #[allow(clippy::float_cmp)]
        if larger <= self.zero_threshold || larger.is_nan() {
            return (self.zero_count, larger.max(self.zero_threshold), cz);
        }
        let pos = self.side_buckets(true);
        let neg = self.side_buckets(false);
        'outer: loop {
            let mut z = self.zero_count;
            for (k, b) in pos.iter().enumerate() {
                if b.lower >= larger {
                    break;
                }
                (z, cz) = kahan_inc(b.count, z, cz);
                if let Some(c) = c {
                    let cv = c.positive_buckets.get(k).copied().unwrap_or(0.0);
                    (z, cz) = kahan_inc(cv, z, cz);
                }
                if b.upper > larger {
                    if b.count != 0.0 {
                        larger = b.upper;
                    }
                    break;
                }
            }
            for (k, b) in neg.iter().enumerate() {
                if b.upper <= -larger {
                    break;
                }
                (z, cz) = kahan_inc(b.count, z, cz);
                if let Some(c) = c {
                    let cv = c.negative_buckets.get(k).copied().unwrap_or(0.0);
                    (z, cz) = kahan_inc(cv, z, cz);
                }
                if b.lower < -larger {
                    if b.count != 0.0 {
                        // The positive side was evaluated against a too small
                        // threshold; start over with the wider one.
                        larger = -b.lower;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (z, larger, cz);
        }
    }

    /// Clears buckets that now lie inside the zero bucket (their counts were already moved
    /// into the zero count) and compacts.
    fn trim_buckets_in_zero_bucket(&mut self, mut c: Option<&mut FloatHistogram>) {
        let zt = self.zero_threshold;
        let pos = self.side_buckets(true);
        for (k, b) in pos.iter().enumerate() {
            if b.lower >= zt {
                break;
            }
            self.positive_buckets[k] = 0.0;
            if let Some(v) = c.as_deref_mut().and_then(|c| c.positive_buckets.get_mut(k)) {
                *v = 0.0;
            }
        }
        let neg = self.side_buckets(false);
        for (k, b) in neg.iter().enumerate() {
            if b.upper <= -zt {
                break;
            }
            self.negative_buckets[k] = 0.0;
            if let Some(v) = c.as_deref_mut().and_then(|c| c.negative_buckets.get_mut(k)) {
                *v = 0.0;
            }
        }
        match c {
            Some(c) => self.kahan_compact(0, c),
            None => {
                self.compact(0);
            }
        }
    }

    /// Widens the zero bucket of `self` (and its compensation `c`) until both histograms
    /// can share one zero threshold that does not cut through a populated bucket. Returns
    /// the zero count (and its compensation) `other` would have with that threshold.
    fn reconcile_zero_buckets(
        &mut self,
        other: &FloatHistogram,
        mut c: Option<&mut FloatHistogram>,
    ) -> (f64, f64) {
        let mut other_zero = other.zero_count;
        let mut other_threshold = other.zero_threshold;
        let mut other_c = 0.0;
        #[allow(clippy::float_cmp)]
        while other_threshold != self.zero_threshold {
            if other_threshold.is_nan() || self.zero_threshold.is_nan() {
                break; // Go would loop forever; nothing sensible to reconcile.
            }
            if self.zero_threshold > other_threshold {
                (other_zero, other_threshold, other_c) =
                    other.zero_count_for_larger_threshold(self.zero_threshold, None);
            }
            if other_threshold > self.zero_threshold {
                let (z, t, cz) =
                    self.zero_count_for_larger_threshold(other_threshold, c.as_deref());
                self.zero_count = z;
                self.zero_threshold = t;
                if let Some(c) = c.as_deref_mut() {
                    c.zero_count = cz;
                    c.zero_threshold = t;
                }
                self.trim_buckets_in_zero_bucket(c.as_deref_mut());
            }
        }
        (other_zero, other_c)
    }
}

// Expected values are copied verbatim from Prometheus's test files.
#[cfg(test)]
#[allow(clippy::approx_constant, clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::model::histogram::testing::{exp, nhcb, spans};

    #[test]
    fn add_reduces_to_lower_schema() {
        let mut a = exp(1, (0, vec![1.0, 2.0, 3.0, 4.0]), (0, vec![]));
        let b = exp(0, (0, vec![10.0, 20.0]), (-1, vec![5.0]));
        let out = a.add(&b).unwrap();
        assert_eq!(out, AddOutcome::default());
        assert_eq!(a.schema, 0);
        assert_eq!(a.positive_spans, spans(&[(0, 3)]));
        assert_eq!(a.positive_buckets, vec![11.0, 25.0, 4.0]);
        assert_eq!(a.negative_spans, spans(&[(-1, 1)]));
        assert_eq!(a.negative_buckets, vec![5.0]);
        assert_eq!(a.count, 45.0);

        // The other way round: the receiver keeps its lower schema.
        let mut b2 = b.clone();
        b2.add(&exp(1, (0, vec![1.0, 2.0, 3.0, 4.0]), (0, vec![])))
            .unwrap();
        assert!(b2.equals(&a));
    }

    #[test]
    fn add_widens_zero_bucket() {
        let mut a = exp(0, (-1, vec![1.0, 2.0, 3.0]), (0, vec![]));
        let mut b = FloatHistogram::empty();
        b.zero_threshold = 0.5;
        b.zero_count = 5.0;
        b.count = 5.0;
        let mut r = a.clone();
        r.add(&b).unwrap();
        assert_eq!((r.zero_threshold, r.zero_count), (0.5, 6.0));
        assert_eq!(r.positive_spans, spans(&[(0, 2)]));
        assert_eq!(r.positive_buckets, vec![2.0, 3.0]);

        // A threshold inside a populated bucket moves to that bucket's upper bound.
        b.zero_threshold = 0.7;
        a.add(&b).unwrap();
        assert_eq!((a.zero_threshold, a.zero_count), (1.0, 8.0));
        assert_eq!(a.positive_spans, spans(&[(1, 1)]));
        assert_eq!(a.positive_buckets, vec![3.0]);

        // Buckets of the other histogram inside our wider zero bucket are skipped.
        let mut w = FloatHistogram::empty();
        w.zero_threshold = 1.0;
        w.zero_count = 1.0;
        w.add(&exp(0, (-1, vec![1.0, 2.0, 3.0]), (0, vec![])))
            .unwrap();
        assert_eq!((w.zero_threshold, w.zero_count), (1.0, 4.0));
        assert_eq!(w.positive_buckets, vec![3.0]);
    }

    #[test]
    fn sub_and_hint_collision() {
        let mut a = exp(0, (0, vec![5.0, 5.0]), (0, vec![]));
        a.hint = CounterResetHint::CounterReset;
        let mut b = exp(0, (1, vec![2.0, 1.0]), (0, vec![]));
        b.hint = CounterResetHint::NotCounterReset;
        let out = a.sub(&b).unwrap();
        assert!(out.counter_reset_collision);
        assert_eq!(a.hint, CounterResetHint::Unknown);
        assert_eq!(a.positive_spans, spans(&[(0, 3)]));
        assert_eq!(a.positive_buckets, vec![5.0, 3.0, -1.0]);
        assert_eq!(a.count, 7.0);

        let mut g = exp(0, (0, vec![1.0]), (0, vec![]));
        let mut gauge = g.clone();
        gauge.hint = CounterResetHint::Gauge;
        assert!(!g.add(&gauge).unwrap().counter_reset_collision);
        assert_eq!(g.hint, CounterResetHint::Gauge);
    }

    #[test]
    fn custom_buckets_add() {
        let mut a = nhcb(&[1.0, 2.0], &[1.0, 2.0, 3.0]);
        let out = a.add(&nhcb(&[1.0, 2.0], &[1.0, 1.0, 1.0])).unwrap();
        assert!(!out.nhcb_bounds_reconciled);
        assert_eq!(a.positive_buckets, vec![2.0, 3.0, 4.0]);

        // Mismatched bounds are reconciled to their intersection.
        let mut a = nhcb(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
        let out = a.add(&nhcb(&[1.0, 3.0], &[10.0, 20.0, 30.0])).unwrap();
        assert!(out.nhcb_bounds_reconciled);
        assert_eq!(a.custom_values, vec![1.0, 3.0]);
        assert_eq!(a.positive_spans, spans(&[(0, 3)]));
        assert_eq!(a.positive_buckets, vec![11.0, 25.0, 34.0]);

        // From native_histograms.test: [10]:{1} + [2 10]:{1} = [10]:{2}.
        let mut s = nhcb(&[10.0], &[1.0]);
        s.add(&nhcb(&[2.0, 10.0], &[1.0])).unwrap();
        assert_eq!(s.custom_values, vec![10.0]);
        assert_eq!(s.positive_buckets, vec![2.0]);

        // Subtraction to zero drops the buckets in the reconciled layout.
        let mut d = nhcb(&[1.0, 2.0], &[1.0, 1.0, 0.0]);
        d.sub(&nhcb(&[2.0], &[2.0])).unwrap();
        assert_eq!(d.custom_values, vec![2.0]);
        assert!(d.positive_buckets.is_empty());

        // Mixing exponential and custom buckets is an error and changes nothing.
        let mut e = exp(0, (0, vec![1.0]), (0, vec![]));
        let before = e.clone();
        assert_eq!(
            e.add(&nhcb(&[1.0], &[1.0])),
            Err(HistogramError::IncompatibleSchema)
        );
        assert_eq!(e, before);
        assert_eq!(
            HistogramError::IncompatibleSchema.to_string(),
            "cannot apply this operation on histograms with a mix of exponential and custom bucket schemas"
        );
    }

    #[test]
    fn kahan_add_compensates() {
        let mut acc = exp(0, (0, vec![1e16]), (0, vec![]));
        let one = exp(0, (0, vec![1.0]), (0, vec![]));
        let mut comp = None;
        let mut plain = acc.clone();
        for _ in 0..10 {
            acc.kahan_add(&one, &mut comp).unwrap();
            plain.add(&one).unwrap();
        }
        assert_eq!(plain.positive_buckets, vec![1e16]);
        let c = comp.unwrap();
        assert_eq!(c.positive_spans, acc.positive_spans);
        acc.add(&c).unwrap();
        acc.compact(0);
        assert_eq!(acc.positive_buckets, vec![1e16 + 10.0]);
        assert_eq!(acc.count, 1e16 + 10.0);

        // Layout changes (schema reduction, new buckets) keep the compensation aligned.
        let mut h = exp(1, (0, vec![1.0, 2.0, 3.0, 4.0]), (0, vec![]));
        let mut comp = None;
        h.kahan_add(&exp(0, (3, vec![1.0]), (0, vec![])), &mut comp)
            .unwrap();
        let c = comp.unwrap();
        assert_eq!(h.schema, 0);
        assert_eq!(c.schema, 0);
        assert_eq!(h.positive_buckets, vec![1.0, 5.0, 4.0, 1.0]);
        assert_eq!(c.positive_buckets.len(), h.positive_buckets.len());

        // Custom buckets with mismatched bounds.
        let mut a = nhcb(&[5.0, 10.0], &[1.0]);
        let mut comp = None;
        let out = a.kahan_add(&nhcb(&[5.0], &[1.0]), &mut comp).unwrap();
        assert!(out.nhcb_bounds_reconciled);
        assert_eq!(a.custom_values, vec![5.0]);
        assert_eq!(comp.unwrap().custom_values, vec![5.0]);
        assert_eq!(a.positive_buckets, vec![2.0]);
    }

    #[test]
    fn mul_and_div() {
        let mut h = exp(0, (0, vec![2.0, 4.0]), (0, vec![6.0]));
        h.mul(-0.5);
        assert_eq!(h.positive_buckets, vec![-1.0, -2.0]);
        assert_eq!(h.hint, CounterResetHint::Gauge);
        let mut d = exp(0, (0, vec![2.0]), (0, vec![]));
        d.div(0.0);
        assert_eq!(d.count, f64::INFINITY);
        assert!(d.sum.is_nan());
        assert!(d.positive_buckets.is_empty() && d.positive_spans.is_empty());
        assert_eq!(d.hint, CounterResetHint::Unknown);
    }
}
