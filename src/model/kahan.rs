//! Kahan–Neumaier compensated addition, as Prometheus's `util/kahansum`: float sums in both
//! PromQL engines and histogram bucket sums use this one step.

/// Adds `inc` to `sum` with compensation `c`; returns the new sum and compensation. An
/// infinite sum resets the compensation so it cannot turn into NaN.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}
