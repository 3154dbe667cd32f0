//! What an instant selection sees at a step, and what a range window never sees: the
//! lookback rule (the newest sample in `(t - lookback, t]`) and stale markers.

use crate::model::is_stale_marker;

/// Index of the newest sample at or before `te` in ascending `ts`.
pub(crate) fn newest_at(ts: &[i64], te: i64) -> Option<usize> {
    ts.partition_point(|&t| t <= te).checked_sub(1)
}

/// [`newest_at`] for a sequence of evaluation times over one series. A range query's steps
/// only move forward, usually by a few samples (step 120 s over 15 s scrapes: 8), so each
/// search gallops forward from where the previous one ended instead of bisecting the
/// whole series (13 unpredictable halvings for a day of 15 s samples); a time before the
/// previous one searches the whole series again.
pub(crate) struct NewestCursor<'a> {
    ts: &'a [i64],
    /// Samples at or before the previous time: `ts[..next]`.
    next: usize,
    last: i64,
    /// How far `next` moved at the previous time.
    advance: usize,
}

impl<'a> NewestCursor<'a> {
    pub(crate) fn new(ts: &'a [i64]) -> Self {
        NewestCursor {
            ts,
            next: 0,
            last: i64::MIN,
            advance: 0,
        }
    }

    /// Index of the newest sample at or before `te`, as [`newest_at`].
    pub(crate) fn at(&mut self, te: i64) -> Option<usize> {
        let ts = self.ts;
        if te < self.last {
            self.next = ts.partition_point(|&t| t <= te);
            self.advance = 0;
        } else {
            // Scrapes and steps are regular, so a step mostly moves as far as the one
            // before: two comparisons confirm it. Otherwise everything before `lo` is at
            // or before `te`; double the stride until a sample after `te` bounds the search.
            let guess = self.next + self.advance;
            let next = if self.advance > 0
                && guess <= ts.len()
                && ts[guess - 1] <= te
                && ts.get(guess).is_none_or(|&t| t > te)
            {
                guess
            } else {
                let (mut lo, mut stride) = (self.next, 1);
                while lo + stride <= ts.len() && ts[lo + stride - 1] <= te {
                    lo += stride;
                    stride *= 2;
                }
                let hi = (lo + stride - 1).min(ts.len());
                lo + ts[lo..hi].partition_point(|&t| t <= te)
            };
            self.advance = next - self.next;
            self.next = next;
        }
        self.last = te;
        self.next.checked_sub(1)
    }
}

/// A sample at `t` is still current at `te` (`te - lookback < t`).
pub(crate) fn current(t: i64, te: i64, lookback: i64) -> bool {
    t > te - lookback
}

/// The float an instant selection picks at `te` (the tests' shorthand for [`picked`]).
#[cfg(test)]
fn pick_float(ts: &[i64], vals: &[f64], te: i64, lookback: i64) -> Option<(i64, f64)> {
    picked(ts, vals, newest_at(ts, te)?, te, lookback)
}

/// The float an instant selection picks at `te`: the newest sample within the lookback,
/// unless it is a stale marker (which ends the series there). `j` is the newest sample at
/// or before `te` (from [`newest_at`] or a [`NewestCursor`]).
pub(crate) fn picked(
    ts: &[i64],
    vals: &[f64],
    j: usize,
    te: i64,
    lookback: i64,
) -> Option<(i64, f64)> {
    let (t, v) = (ts[j], vals[j]);
    (current(t, te, lookback) && !is_stale_marker(v)).then_some((t, v))
}

/// The samples without stale markers, or `None` when there are none to take out (the
/// caller keeps its own slices: most series have none).
pub(crate) fn without_stale(ts: &[i64], vals: &[f64]) -> Option<(Vec<i64>, Vec<f64>)> {
    if !vals.iter().any(|v| is_stale_marker(*v)) {
        return None;
    }
    Some(
        ts.iter()
            .zip(vals)
            .filter(|(_, v)| !is_stale_marker(**v))
            .map(|(t, v)| (*t, *v))
            .unzip(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stale_marker;

    #[test]
    fn the_cursor_finds_what_bisection_finds() {
        let mut rng = crate::promql::kernels::TestRng(0x2545_f491_4f6c_dd1d);
        let mut rand = |n: u64| rng.below(n);
        // Irregular samples, and regular ones with a gap now and then (where a step's
        // advance is the previous step's, then is not).
        for (len, regular) in [0usize, 1, 2, 7, 100, 5760]
            .into_iter()
            .flat_map(|n| [(n, false), (n, true)])
        {
            let mut t = 1_000_000i64;
            let ts: Vec<i64> = (0..len)
                .map(|i| {
                    t += match (regular, i % 50 == 49) {
                        (true, false) => 15_000,
                        (true, true) => 15_000 + rand(100_000) as i64,
                        (false, _) => 1 + rand(30_000) as i64,
                    };
                    t
                })
                .collect();
            // Steps of several sizes, from before the first sample to past the last,
            // with some going back.
            for step in [1i64, 7_500, 15_000, 120_000, 3_600_000] {
                let mut c = NewestCursor::new(&ts);
                let mut te = 1_000_000 - 60_000;
                for k in 0..2_000 {
                    te += if k % 97 == 13 {
                        -(rand(1_000_000) as i64)
                    } else {
                        step
                    };
                    assert_eq!(
                        c.at(te),
                        newest_at(&ts, te),
                        "len {len} step {step} te {te}"
                    );
                }
            }
            // Times exactly at samples (and just before them), every gap size.
            for every in [1usize, 2, 3, 8, 33] {
                let mut c = NewestCursor::new(&ts);
                for &te in ts.iter().step_by(every) {
                    for te in [te - 1, te] {
                        assert_eq!(c.at(te), newest_at(&ts, te), "len {len} every {every}");
                    }
                }
            }
        }
    }

    #[test]
    fn lookback_is_left_open_and_stale_markers_end_a_series() {
        let ts = [10, 20, 30];
        let vals = [1.0, 2.0, stale_marker()];
        assert_eq!(pick_float(&ts, &vals, 25, 10), Some((20, 2.0)));
        // (te - lookback, te]: a sample exactly lookback old is gone.
        assert_eq!(pick_float(&ts, &vals, 30, 10), None);
        assert_eq!(pick_float(&ts, &vals, 29, 10), Some((20, 2.0)));
        assert_eq!(pick_float(&ts, &vals, 5, 10), None);
        assert_eq!(pick_float(&ts, &vals, 35, 100), None, "stale marker picked");
        assert_eq!(
            without_stale(&ts, &vals),
            Some((vec![10, 20], vec![1.0, 2.0]))
        );
        assert_eq!(without_stale(&ts[..2], &vals[..2]), None);
    }
}
