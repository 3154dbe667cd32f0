//! What both PromQL engines compute, in one place: the evaluator (`promql::eval`) and the
//! planner (`promql::plan`) import these and never each other, so the two cannot drift
//! apart in the numbers, the selection rules or the words of an annotation.
//!
//! - [`select`]: matcher sets, step times (`@`, `offset`), left-open windows.
//! - [`lookback`]: the sample an instant selection picks, and stale markers.
//! - [`grouping`]: `by`/`without` groups, match signatures, `__name__` dropping, the
//!   topk/bottomk/limitk policies and answer order.
//! - [`sum`]: the compensated (Kahan) sum and the `avg` state.
//! - [`annotations`]: the annotation sink and every warning and info text.
//! - [`range_fns`], [`value_fn`]: the range functions over windows and the per-value
//!   functions and operators; [`regression`]: `deriv` and `predict_linear`'s least
//!   squares, one window or many side by side.
//! - [`labels`]: label sets functions make (`label_replace`'s target, `absent`'s labels).
//! - [`args`]: call arguments read alike (parentheses, string literals).
//! - [`bucket_quantile`]: classic `histogram_quantile` over `le` buckets.
//! - [`histogram_stats`]: native-histogram quantile, fraction, stddev and stdvar (only the
//!   evaluator calls them today: the planner declines native histograms).
//!
//! Floats are printed by `model::go_float` (JSON, label values and messages alike).

pub(crate) mod annotations;
pub(crate) mod args;
pub(crate) mod bucket_quantile;
pub(crate) mod grouping;
pub(crate) mod histogram_stats;
pub(crate) mod labels;
pub(crate) mod lookback;
pub(crate) mod range_fns;
pub(crate) mod regression;
pub(crate) mod select;
pub(crate) mod sum;
pub(crate) mod value_fn;

/// A small deterministic generator (xorshift) for the kernels' tests, so failures reproduce.
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
