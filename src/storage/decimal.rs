//! Floats as exact decimals: `m / 10^e` with an integer mantissa below 2^53, the form most
//! scraped values take (counters are integers, gauges have a few decimals). The samples
//! cache's packed runs and the blocks' value columns both store mantissas and decode with
//! [`decimal`]; a value is stored so only when [`mantissa`] has checked that this very
//! computation gives back its bits.

/// 10^e for the exponents a value may use; every one is exact in an f64.
pub(crate) const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Mantissas stay below 2^53 so that `m as f64` is exact and differences cannot overflow.
pub(crate) const SAFE: f64 = 9_007_199_254_740_992.0;

/// A value's decimal form `m / 10^e`, exactly as decoding computes it.
#[inline]
pub(crate) fn decimal(m: i64, e: usize) -> f64 {
    if e == 0 {
        m as f64
    } else {
        m as f64 / POW10[e]
    }
}

/// The mantissa of `v` at exponent `e`, if [`decimal`] gives back exactly `v`'s bits.
#[inline]
pub(crate) fn mantissa(v: f64, e: usize) -> Option<i64> {
    let s = (v * POW10[e]).round();
    // Also refuses NaN.
    if s.is_nan() || s.abs() >= SAFE {
        return None;
    }
    let m = s as i64;
    (decimal(m, e).to_bits() == v.to_bits()).then_some(m)
}

/// The smallest exponent at which `v` is an exact decimal.
pub(crate) fn exponent(v: f64) -> Option<usize> {
    (0..POW10.len()).find(|&e| mantissa(v, e).is_some())
}
