//! What an instant selection sees at a step, and what a range window never sees: the
//! lookback rule (the newest sample in `(t - lookback, t]`) and stale markers.

use crate::model::is_stale_marker;

/// Index of the newest sample at or before `te` in ascending `ts`.
pub(crate) fn newest_at(ts: &[i64], te: i64) -> Option<usize> {
    ts.partition_point(|&t| t <= te).checked_sub(1)
}

/// A sample at `t` is still current at `te` (`te - lookback < t`).
pub(crate) fn current(t: i64, te: i64, lookback: i64) -> bool {
    t > te - lookback
}

/// The float an instant selection picks at `te`: the newest sample within the lookback,
/// unless it is a stale marker (which ends the series there).
pub(crate) fn pick_float(ts: &[i64], vals: &[f64], te: i64, lookback: i64) -> Option<(i64, f64)> {
    let j = newest_at(ts, te)?;
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
