//! Native histograms in their float flavour, as PromQL, storage and the JSON API see them.
//!
//! The semantics follow Prometheus 3.14's `FloatHistogram` (model/histogram) and the
//! histogram functions of promql (quantile.go, functions.go). Bucket counts are absolute,
//! never deltas. Bucket layouts produced here are kept in "canonical" form where that is
//! invisible to callers: spans are rebuilt as maximal contiguous runs, whereas Go sometimes
//! leaves adjacent spans with offset 0 behind. `compact` removes that difference anyway,
//! and every PromQL result is compacted.
//!
//! This file holds the type and its validation: schema constants, `FloatHistogram`,
//! `Bucket`, `HistogramError` with Prometheus's texts, and the span, bucket and custom-bound
//! checks behind `validate`. The rest is split by concern:
//!
//! - `buckets`: bucket index and bound math, and the span/bucket plumbing that handles one
//!   side of a histogram as sorted (bucket index, value) pairs;
//! - `arith`: `add`, `sub`, `kahan_add`, `mul`, `div`, and the zero-bucket reconciliation
//!   they need;
//! - `layout`: compaction, schema reduction, bucket iteration and equality;
//! - `reset`: counter-reset detection;
//! - `trim`: bucket trimming for the trim operators `</` and `>/`;
//! - `testing` (tests only): histogram builders shared with the PromQL kernels' tests.
//!
//! The PromQL functions of a single histogram (`histogram_quantile`, `histogram_fraction`,
//! `histogram_stddev`, `histogram_stdvar`) live in `promql::kernels::histogram_stats`.

use std::fmt;

use crate::model::go_float;

mod arith;
mod buckets;
mod layout;
mod reset;
#[cfg(test)]
pub(crate) mod testing;
mod trim;

/// Schema number of native histograms with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// Lowest exponential schema that may be stored or computed with.
pub const EXPONENTIAL_SCHEMA_MIN: i32 = -4;
/// Highest exponential schema that may be stored or computed with.
pub const EXPONENTIAL_SCHEMA_MAX: i32 = 8;

/// Annotation texts Prometheus emits around histogram arithmetic. The caller appends the
/// operation (`addition`, `subtraction`, `aggregation`), the operator or the metric name
/// as noted, exactly as Prometheus does with `fmt.Errorf("%w %s", …)`.
pub mod annotation {
    /// Append `" addition"`, `" subtraction"` or `" aggregation"`; an info.
    pub const MISMATCHED_CUSTOM_BUCKETS_INFO: &str =
        "PromQL info: mismatched custom buckets were reconciled during";
    /// Append `" addition"`, `" subtraction"` or `" aggregation"`; a warning.
    pub const COUNTER_RESET_COLLISION_WARNING: &str =
        "PromQL warning: conflicting counter resets during histogram";
    /// Append `" "` and the operator (`+`, `-`); binary operators hitting
    /// [`super::HistogramError::IncompatibleSchema`].
    pub const INCOMPATIBLE_BUCKET_LAYOUT_IN_BINOP_WARNING: &str =
        "PromQL warning: incompatible bucket layout encountered for binary operator";
    /// Append `" "` and the quoted metric name (`%q`); aggregations hitting
    /// [`super::HistogramError::IncompatibleSchema`].
    pub const MIXED_EXPONENTIAL_CUSTOM_WARNING: &str = "PromQL warning: vector contains a mix of histograms with exponential and custom buckets schemas for metric name";
}

pub fn is_custom_buckets_schema(schema: i32) -> bool {
    schema == CUSTOM_BUCKETS_SCHEMA
}

pub fn is_exponential_schema(schema: i32) -> bool {
    (EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&schema)
}

pub fn is_valid_schema(schema: i32) -> bool {
    is_custom_buckets_schema(schema) || is_exponential_schema(schema)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    #[default]
    Unknown,
    CounterReset,
    NotCounterReset,
    Gauge,
}

impl CounterResetHint {
    /// The wire and file code (Prometheus's enum order: 0 unknown, 1 reset, 2 not reset,
    /// 3 gauge).
    pub fn code(self) -> u8 {
        match self {
            CounterResetHint::Unknown => 0,
            CounterResetHint::CounterReset => 1,
            CounterResetHint::NotCounterReset => 2,
            CounterResetHint::Gauge => 3,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => CounterResetHint::Unknown,
            1 => CounterResetHint::CounterReset,
            2 => CounterResetHint::NotCounterReset,
            3 => CounterResetHint::Gauge,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Gap to the previous span (for the first span: the absolute index of its first bucket).
    pub offset: i32,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FloatHistogram {
    pub hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    /// Absolute counts (not deltas).
    pub positive_buckets: Vec<f64>,
    pub negative_buckets: Vec<f64>,
    /// Upper bounds of the buckets for [`CUSTOM_BUCKETS_SCHEMA`] only.
    pub custom_values: Vec<f64>,
}

impl Default for FloatHistogram {
    fn default() -> Self {
        Self::empty()
    }
}

impl FloatHistogram {
    /// `{{}}`: schema 0, nothing observed.
    pub fn empty() -> Self {
        FloatHistogram {
            hint: CounterResetHint::Unknown,
            schema: 0,
            zero_threshold: 0.0,
            zero_count: 0.0,
            count: 0.0,
            sum: 0.0,
            positive_spans: Vec::new(),
            negative_spans: Vec::new(),
            positive_buckets: Vec::new(),
            negative_buckets: Vec::new(),
            custom_values: Vec::new(),
        }
    }

    /// A histogram with one span per side, the first bucket of each side at the given
    /// index. An empty bucket list produces no span.
    #[allow(clippy::too_many_arguments)]
    pub fn from_absolute(
        schema: i32,
        zero_threshold: f64,
        zero_count: f64,
        count: f64,
        sum: f64,
        positive: (i32, Vec<f64>),
        negative: (i32, Vec<f64>),
        custom_values: Vec<f64>,
    ) -> Self {
        let span = |offset: i32, b: &Vec<f64>| {
            if b.is_empty() {
                Vec::new()
            } else {
                vec![Span {
                    offset,
                    length: b.len() as u32,
                }]
            }
        };
        FloatHistogram {
            hint: CounterResetHint::Unknown,
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive_spans: span(positive.0, &positive.1),
            negative_spans: span(negative.0, &negative.1),
            positive_buckets: positive.1,
            negative_buckets: negative.1,
            custom_values,
        }
    }

    pub fn uses_custom_buckets(&self) -> bool {
        is_custom_buckets_schema(self.schema)
    }

    /// Deep copy that, like Go's Copy, carries only the fields meaningful for the schema:
    /// custom bounds for NHCB, zero bucket and negative side for exponential schemas.
    pub fn copy(&self) -> Self {
        let mut c = FloatHistogram {
            hint: self.hint,
            schema: self.schema,
            count: self.count,
            sum: self.sum,
            positive_spans: self.positive_spans.clone(),
            positive_buckets: self.positive_buckets.clone(),
            ..FloatHistogram::empty()
        };
        if self.uses_custom_buckets() {
            c.custom_values = self.custom_values.clone();
        } else {
            c.zero_threshold = self.zero_threshold;
            c.zero_count = self.zero_count;
            c.negative_spans = self.negative_spans.clone();
            c.negative_buckets = self.negative_buckets.clone();
        }
        c
    }

    /// What this histogram counts as against a samples limit: its size in 16-byte float
    /// samples, at least one (Prometheus's `Size() / 16`).
    pub fn sample_weight(&self) -> usize {
        let bytes = 64
            + 8 * (self.positive_buckets.len()
                + self.negative_buckets.len()
                + self.custom_values.len()
                + self.positive_spans.len()
                + self.negative_spans.len());
        bytes.div_ceil(16)
    }

    pub fn avg(&self) -> f64 {
        self.sum / self.count
    }

    /// True if any count, the sum or a custom bound is infinite (used by `avg` to switch
    /// to incremental mean calculation).
    pub fn has_overflow(&self) -> bool {
        [self.zero_count, self.count, self.sum]
            .iter()
            .chain(&self.positive_buckets)
            .chain(&self.negative_buckets)
            .chain(&self.custom_values)
            .any(|v| v.is_infinite())
    }

    pub fn validate(&self) -> Result<(), HistogramError> {
        if self.uses_custom_buckets() {
            check_custom_bounds(
                &self.custom_values,
                &self.positive_spans,
                self.positive_buckets.len(),
            )?;
            if self.zero_count != 0.0 {
                return Err(HistogramError::CustomBucketsZeroCount);
            }
            if self.zero_threshold != 0.0 {
                return Err(HistogramError::CustomBucketsZeroThreshold);
            }
            if !self.negative_spans.is_empty() {
                return Err(HistogramError::CustomBucketsNegativeSpans);
            }
            if !self.negative_buckets.is_empty() {
                return Err(HistogramError::CustomBucketsNegativeBuckets);
            }
        } else if is_exponential_schema(self.schema) {
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
            check_buckets(&self.negative_buckets, Side::Negative)?;
            if self.zero_count < 0.0 {
                return Err(HistogramError::NegativeZeroCount(self.zero_count));
            }
            if !self.custom_values.is_empty() {
                return Err(HistogramError::ExponentialSchemaCustomBounds);
            }
        } else {
            return Err(HistogramError::InvalidSchema(self.schema));
        }
        if self.count < 0.0 {
            return Err(HistogramError::NegativeCount(self.count));
        }
        check_buckets(&self.positive_buckets, Side::Positive)
    }
}

impl fmt::Display for FloatHistogram {
    /// Go's FloatHistogram.String(), e.g. `{count:5, sum:10, [-2,-1):1, (1,2]:4}`; only
    /// populated buckets are listed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{count:{}, sum:{}",
            go_float::g(self.count),
            go_float::g(self.sum)
        )?;
        for b in self.side_buckets(false).iter().rev() {
            if b.count != 0.0 {
                write!(f, ", {b}")?;
            }
        }
        if self.zero_count != 0.0 && !self.uses_custom_buckets() {
            write!(f, ", {}", self.zero_bucket())?;
        }
        for b in self.side_buckets(true) {
            if b.count != 0.0 {
                write!(f, ", {b}")?;
            }
        }
        f.write_str("}")
    }
}

/// One bucket with its bounds, as the bucket iterators of Prometheus yield it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
    pub lower_inclusive: bool,
    pub upper_inclusive: bool,
    /// Index within the schema; meaningless for the zero bucket.
    pub index: i32,
}

impl Bucket {
    /// Fraction of the bucket's width at or below `v`, for `lower < v < upper` with finite
    /// bounds. Linear for custom buckets and the zero bucket, logarithmic otherwise
    /// (exponential bucket bounds are equidistant on a log scale).
    pub fn fraction_below(&self, v: f64, linear: bool) -> f64 {
        if linear {
            return (v - self.lower) / (self.upper - self.lower);
        }
        let log_lower = self.lower.abs().log2();
        let log_upper = self.upper.abs().log2();
        let log_v = v.abs().log2();
        if v > 0.0 {
            return (log_v - log_lower) / (log_upper - log_lower);
        }
        1.0 - ((log_v - log_upper) / (log_lower - log_upper))
    }
}

impl fmt::Display for Bucket {
    /// Interval notation as in Prometheus, e.g. `(0.5,1]:3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{},{}{}:{}",
            if self.lower_inclusive { '[' } else { '(' },
            go_float::g(self.lower),
            go_float::g(self.upper),
            if self.upper_inclusive { ']' } else { ')' },
            go_float::g(self.count)
        )
    }
}

/// Boundary rule code of the Prometheus JSON API for a bucket: 0 = (lower, upper],
/// 1 = [lower, upper), 2 = (lower, upper), 3 = [lower, upper]. The API lists only buckets
/// with a non-zero count, in [`FloatHistogram::all_buckets`] order.
pub fn boundary_rule(b: &Bucket) -> u8 {
    match (b.lower_inclusive, b.upper_inclusive) {
        (false, true) => 0,
        (true, false) => 1,
        (false, false) => 2,
        (true, true) => 3,
    }
}

/// Which part of a histogram an error refers to; it becomes the message prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Positive,
    Negative,
    Custom,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Positive => "positive side",
            Side::Negative => "negative side",
            Side::Custom => "custom buckets",
        })
    }
}

/// Errors of validation and of operations that cannot combine two histograms. The Display
/// texts are Prometheus's.
#[derive(Debug, Clone, PartialEq)]
pub enum HistogramError {
    InvalidSchema(i32),
    NegativeCount(f64),
    NegativeZeroCount(f64),
    NegativeBucketCount {
        side: Side,
        /// 1-based, as in Prometheus's message.
        bucket_number: usize,
        count: f64,
    },
    SpanNegativeOffset {
        side: Side,
        /// 1-based.
        span_number: usize,
        offset: i32,
    },
    SpansBucketsMismatch {
        side: Side,
        need: usize,
        have: usize,
    },
    /// A bucket index beyond [`MAX_BUCKET_INDEX`]: its bounds are outside the `f64` range
    /// at every schema, and index arithmetic must not overflow.
    BucketIndexOutOfRange {
        side: Side,
        index: i64,
    },
    CustomBoundsNaN,
    CustomBoundsNotIncreasing {
        previous: f64,
        current: f64,
    },
    CustomBoundsInfinite,
    CustomBoundsTooFew {
        defined: usize,
        span_length: usize,
    },
    CustomBucketsZeroCount,
    CustomBucketsZeroThreshold,
    CustomBucketsNegativeSpans,
    CustomBucketsNegativeBuckets,
    ExponentialSchemaCustomBounds,
    /// Add/Sub/KahanAdd of an exponential with a custom-buckets histogram.
    IncompatibleSchema,
    ReduceCustomBuckets,
    ReduceToCustomBuckets,
    ReduceResolution {
        from: i32,
        to: i32,
    },
}

const NEGATIVE_BUCKET_COUNT: &str = "histogram has a bucket whose observation count is negative";
const SPANS_BUCKETS_MISMATCH: &str =
    "histogram spans specify different number of buckets than provided";

impl fmt::Display for HistogramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HistogramError::*;
        match self {
            InvalidSchema(s) => write!(
                f,
                "histogram has an invalid schema, which must be between {EXPONENTIAL_SCHEMA_MIN} and {EXPONENTIAL_SCHEMA_MAX} for exponential buckets, or {CUSTOM_BUCKETS_SCHEMA} for custom buckets, got schema {s}"
            ),
            NegativeCount(c) => write!(
                f,
                "observation count is  {}: histogram's observation count is negative",
                go_float::g(*c)
            ),
            NegativeZeroCount(c) => write!(
                f,
                "zero bucket has observation count of {}: {NEGATIVE_BUCKET_COUNT}",
                go_float::g(*c)
            ),
            NegativeBucketCount {
                side,
                bucket_number,
                count,
            } => write!(
                f,
                "{side}: bucket number {bucket_number} has observation count of {}: {NEGATIVE_BUCKET_COUNT}",
                go_float::g(*count)
            ),
            SpanNegativeOffset {
                side,
                span_number,
                offset,
            } => write!(
                f,
                "{side}: span number {span_number} with offset {offset}: histogram has a span whose offset is negative"
            ),
            SpansBucketsMismatch { side, need, have } => write!(
                f,
                "{side}: spans need {need} buckets, have {have} buckets: {SPANS_BUCKETS_MISMATCH}"
            ),
            BucketIndexOutOfRange { side, index } => write!(
                f,
                "{side}: bucket index {index} is outside ±{MAX_BUCKET_INDEX} (its bounds are beyond the float range)"
            ),
            CustomBoundsNaN => f.write_str("custom buckets: histogram custom bounds must not be NaN"),
            CustomBoundsNotIncreasing { previous, current } => write!(
                f,
                "custom buckets: previous bound is {previous:.6} and current is {current:.6}: histogram custom bounds must be in strictly increasing order"
            ),
            CustomBoundsInfinite => f.write_str(
                "custom buckets: last +Inf bound must not be explicitly defined: histogram custom bounds must be finite",
            ),
            CustomBoundsTooFew {
                defined,
                span_length,
            } => write!(
                f,
                "custom buckets: only {defined} custom bounds defined which is insufficient to cover total span length of {span_length}: histogram custom bounds are too few"
            ),
            CustomBucketsZeroCount => f.write_str("custom buckets: must have zero count of 0"),
            CustomBucketsZeroThreshold => f.write_str("custom buckets: must have zero threshold of 0"),
            CustomBucketsNegativeSpans => f.write_str("custom buckets: must not have negative spans"),
            CustomBucketsNegativeBuckets => {
                f.write_str("custom buckets: must not have negative buckets")
            }
            ExponentialSchemaCustomBounds => {
                f.write_str("histogram with exponential schema must not have custom bounds")
            }
            IncompatibleSchema => f.write_str(
                "cannot apply this operation on histograms with a mix of exponential and custom bucket schemas",
            ),
            ReduceCustomBuckets => {
                f.write_str("cannot reduce resolution when there are custom buckets")
            }
            ReduceToCustomBuckets => {
                f.write_str("cannot reduce resolution to custom buckets schema")
            }
            ReduceResolution { from, to } => {
                write!(f, "cannot reduce resolution from schema {from} to {to}")
            }
        }
    }
}

impl std::error::Error for HistogramError {}

/// What `add`, `sub` and `kahan_add` report besides the result; each flag means the caller
/// owes the user an annotation (see [`annotation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddOutcome {
    /// One side was `CounterReset`, the other `NotCounterReset`; the result hint became
    /// `Unknown`. Binary `+`/`-` report `COUNTER_RESET_COLLISION_WARNING`; `sum`/`avg` track
    /// the input hints themselves instead of using this flag.
    pub counter_reset_collision: bool,
    /// Custom bounds differed, so both sides were mapped onto the intersection of their
    /// bounds. Report `MISMATCHED_CUSTOM_BUCKETS_INFO`.
    pub nhcb_bounds_reconciled: bool,
}

/// Infos raised by `histogram_quantile` / `histogram_fraction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramInfo {
    QuantileNaNResult,
    QuantileNaNSkew,
    FractionNaNs,
}

impl HistogramInfo {
    /// The Prometheus annotation text; the metric name is appended only when non-empty.
    pub fn text(&self, metric_name: &str) -> String {
        let base = match self {
            HistogramInfo::QuantileNaNResult => {
                "PromQL info: input to histogram_quantile has NaN observations, result is NaN"
            }
            HistogramInfo::QuantileNaNSkew => {
                "PromQL info: input to histogram_quantile has NaN observations, result is skewed higher"
            }
            HistogramInfo::FractionNaNs => {
                "PromQL info: input to histogram_fraction has NaN observations, which are excluded from all fractions"
            }
        };
        if metric_name.is_empty() {
            base.to_string()
        } else {
            format!("{base} for metric name {metric_name:?}")
        }
    }
}

/// Largest absolute bucket index accepted: at schema 8 (the finest) bucket 262,144 already
/// ends at 2^1024, past `f64::MAX`; 2^24 leaves room and keeps index sums far from `i32`.
pub const MAX_BUCKET_INDEX: i64 = 1 << 24;

fn check_spans(spans: &[Span], num_buckets: usize, side: Side) -> Result<(), HistogramError> {
    let mut need = 0usize;
    // The index after the last bucket so far (i64: offsets add up past i32).
    let mut next: i64 = 0;
    for (n, span) in spans.iter().enumerate() {
        if n > 0 && span.offset < 0 {
            return Err(HistogramError::SpanNegativeOffset {
                side,
                span_number: n + 1,
                offset: span.offset,
            });
        }
        let first = next + span.offset as i64;
        next = first + span.length as i64;
        for index in [first, next - 1] {
            if index.abs() > MAX_BUCKET_INDEX {
                return Err(HistogramError::BucketIndexOutOfRange { side, index });
            }
        }
        need += span.length as usize;
    }
    if need != num_buckets {
        return Err(HistogramError::SpansBucketsMismatch {
            side,
            need,
            have: num_buckets,
        });
    }
    Ok(())
}

fn check_buckets(buckets: &[f64], side: Side) -> Result<(), HistogramError> {
    match buckets.iter().position(|c| *c < 0.0) {
        Some(i) => Err(HistogramError::NegativeBucketCount {
            side,
            bucket_number: i + 1,
            count: buckets[i],
        }),
        None => Ok(()),
    }
}

fn check_custom_bounds(
    bounds: &[f64],
    spans: &[Span],
    num_buckets: usize,
) -> Result<(), HistogramError> {
    let mut prev = f64::NEG_INFINITY;
    for (i, &curr) in bounds.iter().enumerate() {
        if curr.is_nan() {
            return Err(HistogramError::CustomBoundsNaN);
        }
        if i > 0 && curr <= prev {
            return Err(HistogramError::CustomBoundsNotIncreasing {
                previous: prev,
                current: curr,
            });
        }
        prev = curr;
    }
    if prev == f64::INFINITY {
        return Err(HistogramError::CustomBoundsInfinite);
    }
    let mut need = 0usize;
    let mut total_len: i64 = 0;
    for (n, span) in spans.iter().enumerate() {
        if span.offset < 0 {
            return Err(HistogramError::SpanNegativeOffset {
                side: Side::Custom,
                span_number: n + 1,
                offset: span.offset,
            });
        }
        need += span.length as usize;
        total_len += span.length as i64 + span.offset as i64;
    }
    if need != num_buckets {
        return Err(HistogramError::SpansBucketsMismatch {
            side: Side::Custom,
            need,
            have: num_buckets,
        });
    }
    if (bounds.len() as i64 + 1) < total_len {
        return Err(HistogramError::CustomBoundsTooFew {
            defined: bounds.len(),
            span_length: total_len as usize,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::testing::{exp, nhcb, spans};
    use super::*;

    #[test]
    fn validate_errors() {
        assert_eq!(exp(0, (0, vec![1.0]), (0, vec![])).validate(), Ok(()));
        let mut h = exp(9, (0, vec![1.0]), (0, vec![]));
        assert_eq!(h.validate(), Err(HistogramError::InvalidSchema(9)));
        assert_eq!(
            h.validate().unwrap_err().to_string(),
            "histogram has an invalid schema, which must be between -4 and 8 for exponential buckets, or -53 for custom buckets, got schema 9"
        );
        h.schema = 0;
        h.positive_buckets.push(2.0);
        assert_eq!(
            h.validate().unwrap_err().to_string(),
            "positive side: spans need 1 buckets, have 2 buckets: histogram spans specify different number of buckets than provided"
        );
        let n = exp(0, (0, vec![]), (0, vec![1.0, -1.0]));
        assert_eq!(
            n.validate().unwrap_err().to_string(),
            "negative side: bucket number 2 has observation count of -1: histogram has a bucket whose observation count is negative"
        );
        let mut s = exp(0, (0, vec![1.0, 1.0]), (0, vec![]));
        s.positive_spans = spans(&[(0, 1), (-2, 1)]);
        assert!(matches!(
            s.validate(),
            Err(HistogramError::SpanNegativeOffset {
                side: Side::Positive,
                span_number: 2,
                offset: -2
            })
        ));
        assert_eq!(
            nhcb(&[2.0, 1.0], &[1.0])
                .validate()
                .unwrap_err()
                .to_string(),
            "custom buckets: previous bound is 2.000000 and current is 1.000000: histogram custom bounds must be in strictly increasing order"
        );
        assert_eq!(
            nhcb(&[1.0, f64::INFINITY], &[1.0]).validate(),
            Err(HistogramError::CustomBoundsInfinite)
        );
        assert_eq!(
            nhcb(&[f64::NAN], &[1.0]).validate(),
            Err(HistogramError::CustomBoundsNaN)
        );
        assert_eq!(
            nhcb(&[1.0], &[1.0, 1.0, 1.0]).validate(),
            Err(HistogramError::CustomBoundsTooFew {
                defined: 1,
                span_length: 3
            })
        );
        let mut z = nhcb(&[1.0], &[1.0]);
        z.zero_count = 1.0;
        assert_eq!(z.validate(), Err(HistogramError::CustomBucketsZeroCount));
        let mut e = exp(0, (0, vec![1.0]), (0, vec![]));
        e.custom_values = vec![1.0];
        assert_eq!(
            e.validate(),
            Err(HistogramError::ExponentialSchemaCustomBounds)
        );
        e.custom_values.clear();
        e.count = -1.0;
        assert_eq!(
            e.validate().unwrap_err().to_string(),
            "observation count is  -1: histogram's observation count is negative"
        );
    }
}
