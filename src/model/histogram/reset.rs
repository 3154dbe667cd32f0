//! Counter-reset detection between consecutive histograms of a series (Go's DetectReset).

use super::buckets::{
    exponential_bound, indexed, intersect_custom_bounds, reduce_pairs, with_zero_comp,
};
use super::{Bucket, CounterResetHint, FloatHistogram, is_exponential_schema};

impl FloatHistogram {
    /// One side merged down to `target_schema`, leaving out leading buckets whose upper
    /// bound is <= `abs_start` (exponential schemas only).
    fn merged_side(&self, positive: bool, abs_start: f64, target_schema: i32) -> Vec<(i32, f64)> {
        let (s, b) = self.side(positive);
        let mut pairs = with_zero_comp(indexed(s, b));
        if target_schema != self.schema && !self.uses_custom_buckets() {
            pairs = reduce_pairs(&pairs, self.schema, target_schema, false);
        }
        let skip = if abs_start != 0.0 && is_exponential_schema(target_schema) {
            pairs
                .iter()
                .take_while(|(i, _, _)| exponential_bound(*i, target_schema) <= abs_start)
                .count()
        } else {
            0
        };
        pairs[skip..].iter().map(|&(i, v, _)| (i, v)).collect()
    }

    /// Whether `self` must follow a counter reset relative to `previous` (Go's
    /// DetectReset). The hints CounterReset/NotCounterReset short-cut the answer; Unknown
    /// and Gauge are analysed (a gauge is treated like a counter here). A reset is any
    /// decrease of count, zero count or a bucket, a populated bucket that vanished, a
    /// higher resolution, a narrower zero bucket, or a change to/from custom buckets.
    pub fn detect_reset(&self, previous: &FloatHistogram) -> bool {
        match self.hint {
            CounterResetHint::CounterReset => true,
            CounterResetHint::NotCounterReset => false,
            _ => self.detect_reset_from_data(previous),
        }
    }

    /// [`FloatHistogram::detect_reset`] from the counts alone, whatever the hints say.
    pub fn detect_reset_from_data(&self, previous: &FloatHistogram) -> bool {
        if self.count < previous.count {
            return true;
        }
        if self.uses_custom_buckets() {
            if !previous.uses_custom_buckets() {
                return true;
            }
            if self.custom_values != previous.custom_values {
                return self.detect_reset_mismatched_custom(previous);
            }
        }
        if self.schema > previous.schema {
            return true;
        }
        if self.zero_threshold < previous.zero_threshold {
            return true;
        }
        let (prev_zero, new_threshold, _) =
            previous.zero_count_for_larger_threshold(self.zero_threshold, None);
        #[allow(clippy::float_cmp)]
        if new_threshold != self.zero_threshold {
            return true;
        }
        if self.zero_count < prev_zero {
            return true;
        }
        [true, false].into_iter().any(|positive| {
            let curr = self.merged_side(positive, self.zero_threshold, self.schema);
            let prev = previous.merged_side(positive, self.zero_threshold, self.schema);
            side_has_reset(&curr, &prev)
        })
    }

    /// Reset detection for NHCBs with different bounds: compares the summed counts between
    /// consecutive bounds that both layouts share (+Inf always being shared).
    fn detect_reset_mismatched_custom(&self, previous: &FloatHistogram) -> bool {
        let shared = intersect_custom_bounds(&self.custom_values, &previous.custom_values);
        let curr = self.side_buckets(true);
        let prev = previous.side_buckets(true);
        let (mut ci, mut pi) = (0, 0);
        for bound in shared.into_iter().chain(std::iter::once(f64::INFINITY)) {
            let roll = |buckets: &[Bucket], i: &mut usize| {
                let mut sum = 0.0;
                while *i < buckets.len() && buckets[*i].upper <= bound {
                    sum += buckets[*i].count;
                    *i += 1;
                }
                sum
            };
            let cs = roll(&curr, &mut ci);
            let ps = roll(&prev, &mut pi);
            if cs < ps {
                return true;
            }
        }
        false
    }
}

/// Go's detectReset for one side: a populated previous bucket must exist in the current
/// histogram with at least the same count.
fn side_has_reset(curr: &[(i32, f64)], prev: &[(i32, f64)]) -> bool {
    let mut ci = 0;
    for &(idx, pc) in prev {
        while ci < curr.len() && curr[ci].0 < idx {
            ci += 1;
        }
        if ci < curr.len() && curr[ci].0 == idx {
            if curr[ci].1 < pc {
                return true;
            }
        } else if pc != 0.0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::histogram::testing::{exp, nhcb};

    #[test]
    fn detect_reset_cases() {
        let prev = exp(0, (0, vec![1.0, 2.0]), (0, vec![1.0]));
        let mut cur = exp(0, (0, vec![1.0, 3.0]), (0, vec![1.0]));
        assert!(!cur.detect_reset(&prev));
        cur.positive_buckets[1] = 1.5;
        cur.count = 10.0;
        assert!(cur.detect_reset(&prev), "bucket decreased");
        // A populated bucket disappeared.
        let mut gone = exp(0, (1, vec![5.0]), (0, vec![1.0]));
        gone.count = 10.0;
        assert!(gone.detect_reset(&prev));
        // Hints short-cut the analysis.
        gone.hint = CounterResetHint::NotCounterReset;
        assert!(!gone.detect_reset(&prev));
        let mut same = prev.clone();
        same.hint = CounterResetHint::CounterReset;
        assert!(same.detect_reset(&prev));
        // Higher resolution is always a reset; lower resolution compares merged buckets.
        let mut hi = prev.clone();
        hi.schema = 1;
        assert!(hi.detect_reset(&prev));
        let fine = exp(1, (0, vec![1.0, 2.0, 3.0]), (0, vec![]));
        let coarse = exp(0, (0, vec![1.0, 5.0]), (0, vec![]));
        assert!(!coarse.detect_reset(&fine));
        let coarse_less = exp(0, (0, vec![1.0, 4.0, 1.0]), (0, vec![]));
        assert!(coarse_less.detect_reset(&fine));
        // A wider zero bucket absorbs the previous buckets below it.
        let mut wide = exp(0, (1, vec![2.0]), (0, vec![]));
        wide.zero_threshold = 1.0;
        wide.zero_count = 2.0;
        wide.count = 4.0;
        let p = exp(0, (-1, vec![1.0, 1.0, 2.0]), (0, vec![]));
        assert!(!wide.detect_reset(&p));
        wide.zero_count = 1.5;
        assert!(wide.detect_reset(&p));
        // Custom buckets: change of schema kind, and mismatched bounds.
        let pc = nhcb(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
        assert!(!nhcb(&[1.0, 3.0], &[1.0, 5.0, 4.0]).detect_reset(&pc));
        assert!(nhcb(&[1.0, 3.0], &[1.0, 4.0, 5.0]).detect_reset(&pc));
        assert!(nhcb(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).detect_reset(&prev));
        let mut grown = prev.clone();
        grown.count += 1.0;
        assert!(grown.detect_reset(&pc), "custom to exponential");
    }
}
