//! The data model: a series is a sorted label set (`__name__` included), a sample is
//! `(timestamp ms as i64, value as f64)`.

pub mod exemplar;
pub mod go_float;
pub mod hashing;
pub mod histogram;
pub mod kahan;
mod labels;
mod matcher;

pub use labels::{LabelError, Labels, METRIC_NAME};
pub use matcher::{MatchOp, Matcher, MatcherError};

/// Bit pattern of Prometheus's stale marker. It is an ordinary NaN to arithmetic, so
/// code that stores or copies values must move bits, never re-create NaNs.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is the Prometheus stale marker (not any NaN).
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The stale marker as an `f64`.
pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}
