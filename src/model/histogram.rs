//! Native histograms in their float flavour, as PromQL, storage and the JSON API see them.
//!
//! The semantics follow Prometheus 3.14's `FloatHistogram` (model/histogram) and the
//! histogram functions of promql (quantile.go, functions.go). Bucket counts are absolute,
//! never deltas. Bucket layouts produced here are kept in "canonical" form where that is
//! invisible to callers: spans are rebuilt as maximal contiguous runs, whereas Go sometimes
//! leaves adjacent spans with offset 0 behind. `compact` removes that difference anyway,
//! and every PromQL result is compacted.

use std::fmt;

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
            format_float_g(self.lower),
            format_float_g(self.upper),
            if self.upper_inclusive { ']' } else { ')' },
            format_float_g(self.count)
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
                format_float_g(*c)
            ),
            NegativeZeroCount(c) => write!(
                f,
                "zero bucket has observation count of {}: {NEGATIVE_BUCKET_COUNT}",
                format_float_g(*c)
            ),
            NegativeBucketCount {
                side,
                bucket_number,
                count,
            } => write!(
                f,
                "{side}: bucket number {bucket_number} has observation count of {}: {NEGATIVE_BUCKET_COUNT}",
                format_float_g(*count)
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

/// Formats like Go's `%g`/`%v` for float64: shortest round-trip digits, exponent form when
/// the decimal exponent is < -4 or >= 6 (e.g. `1e+06`, `1.5e-05`), infinities as
/// `+Inf`/`-Inf`.
pub fn format_float_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` yields the shortest round-trip digits, e.g. "-1.2345e-7".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent present");
    let exp: i32 = exp.parse().expect("valid exponent");
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// Neumaier-flavoured Kahan step as in Prometheus's util/kahansum: returns the new sum and
/// compensation. An infinite sum resets the compensation so it cannot turn into NaN.
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

// ---------------------------------------------------------------------------------------
// Bucket bounds.

/// `x * 2^exp` like Go's math.Ldexp (std has no ldexp). Exact unless the result leaves
/// the normal range.
fn ldexp(x: f64, exp: i32) -> f64 {
    fn pow2(e: i32) -> f64 {
        // Valid for -1022..=1023.
        f64::from_bits(((e + 1023) as u64) << 52)
    }
    if exp > 1023 {
        return ldexp(x * pow2(1023), exp - 1023);
    }
    if exp >= -1022 {
        return x * pow2(exp);
    }
    // Scale exactly first and round once at the end for subnormal results.
    let e2 = exp + 1074;
    if e2 >= -1022 {
        x * pow2(e2) * f64::from_bits(1)
    } else {
        x * 0.0
    }
}

/// Upper bound of exponential bucket `idx` (absolute value). The last finite bucket ends
/// at f64::MAX rather than +Inf so that only ±Inf observations land in the bucket above it.
fn exponential_bound(idx: i32, schema: i32) -> f64 {
    if schema < 0 {
        let exp = (idx as i64) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        let exp = exp.clamp(-100_000, 100_000) as i32;
        return ldexp(1.0, exp);
    }
    let frac_idx = (idx & ((1 << schema) - 1)) as usize;
    let frac = EXPONENTIAL_BOUNDS[schema as usize][frac_idx];
    let exp = (idx >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

/// Upper bound of bucket `idx` (absolute value for negative exponential buckets). Custom
/// buckets run from -Inf (idx -1) to +Inf (idx len).
fn bucket_bound(idx: i32, schema: i32, custom_values: &[f64]) -> f64 {
    if is_custom_buckets_schema(schema) {
        let len = custom_values.len() as i64;
        let i = idx as i64;
        if i >= len {
            f64::INFINITY
        } else if i < 0 {
            f64::NEG_INFINITY
        } else {
            custom_values[idx as usize]
        }
    } else {
        exponential_bound(idx, schema)
    }
}

/// Index in `target` schema of bucket `idx` in `origin` schema (target <= origin).
fn target_idx(idx: i32, origin: i32, target: i32) -> i32 {
    ((idx - 1) >> (origin - target)) + 1
}

// ---------------------------------------------------------------------------------------
// Span/bucket plumbing. Internally a side of a histogram is handled as a sorted list of
// (bucket index, value) pairs, which makes merging and re-bucketing straightforward.

/// The (index, value) pairs described by spans and buckets. Stops early if there are fewer
/// buckets than the spans promise, like Prometheus's iterators.
fn indexed(spans: &[Span], buckets: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(buckets.len());
    let mut idx: i32 = 0;
    let mut k = 0;
    for span in spans {
        idx = idx.wrapping_add(span.offset);
        for _ in 0..span.length {
            if k >= buckets.len() {
                return out;
            }
            out.push((idx, buckets[k]));
            k += 1;
            idx = idx.wrapping_add(1);
        }
    }
    out
}

/// Spans (maximal contiguous runs) and values for pairs with strictly increasing indexes.
fn from_indexed(pairs: impl IntoIterator<Item = (i32, f64)>) -> (Vec<Span>, Vec<f64>) {
    let (spans, values, _) = from_indexed_with_comp(pairs.into_iter().map(|(i, v)| (i, v, 0.0)));
    (spans, values)
}

fn from_indexed_with_comp(
    triples: impl IntoIterator<Item = (i32, f64, f64)>,
) -> (Vec<Span>, Vec<f64>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut values = Vec::new();
    let mut comps = Vec::new();
    let mut last: Option<i32> = None;
    for (idx, v, c) in triples {
        match last {
            Some(l) if idx == l + 1 => spans.last_mut().expect("span exists").length += 1,
            Some(l) => spans.push(Span {
                offset: idx - l - 1,
                length: 1,
            }),
            None => spans.push(Span {
                offset: idx,
                length: 1,
            }),
        }
        values.push(v);
        comps.push(c);
        last = Some(idx);
    }
    (spans, values, comps)
}

/// Merges buckets into a lower-resolution schema by summing (plain or Kahan) the buckets
/// that fall into the same target bucket.
fn reduce_pairs(
    pairs: &[(i32, f64, f64)],
    origin: i32,
    target: i32,
    kahan: bool,
) -> Vec<(i32, f64, f64)> {
    let mut out: Vec<(i32, f64, f64)> = Vec::with_capacity(pairs.len());
    for &(idx, v, c) in pairs {
        let t = target_idx(idx, origin, target);
        match out.last_mut() {
            Some(last) if last.0 == t => {
                if kahan {
                    let (s, cc) = kahan_inc(v, last.1, last.2);
                    let (s, cc) = kahan_inc(c, s, cc);
                    last.1 = s;
                    last.2 = cc;
                } else {
                    last.1 += v;
                }
            }
            _ => out.push((t, v, c)),
        }
    }
    out
}

fn with_zero_comp(pairs: Vec<(i32, f64)>) -> Vec<(i32, f64, f64)> {
    pairs.into_iter().map(|(i, v)| (i, v, 0.0)).collect()
}

/// Index list of `spans`/`buckets` together with the matching compensation values.
fn indexed_with_comp(spans: &[Span], buckets: &[f64], comp: &[f64]) -> Vec<(i32, f64, f64)> {
    indexed(spans, buckets)
        .into_iter()
        .enumerate()
        .map(|(k, (i, v))| (i, v, comp.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// Adds (or subtracts) side B into side A. B's leading buckets that lie entirely within
/// the zero bucket (exponential schemas only) are skipped: their counts were already moved
/// into the zero bucket when the zero thresholds were reconciled. Empty buckets are kept,
/// so the result layout is the union of both layouts.
fn add_pairs(
    schema: i32,
    threshold: f64,
    negate: bool,
    a: &[(i32, f64, f64)],
    b: &[(i32, f64, f64)],
    kahan: bool,
) -> Vec<(i32, f64, f64)> {
    let skip = if is_exponential_schema(schema) {
        b.iter()
            .take_while(|(i, _, _)| exponential_bound(*i, schema) <= threshold)
            .count()
    } else {
        0
    };
    let b = &b[skip..];
    let sign = |x: f64| if negate { -x } else { x };
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j >= b.len() || (i < a.len() && a[i].0 < b[j].0) {
            out.push(a[i]);
            i += 1;
        } else if i >= a.len() || b[j].0 < a[i].0 {
            out.push((b[j].0, sign(b[j].1), sign(b[j].2)));
            j += 1;
        } else {
            let (idx, mut v, mut c) = a[i];
            let (bv, bc) = (sign(b[j].1), sign(b[j].2));
            if kahan {
                (v, c) = kahan_inc(bv, v, c);
                if bc != 0.0 {
                    (v, c) = kahan_inc(bc, v, c);
                }
            } else {
                v += bv;
            }
            out.push((idx, v, c));
            i += 1;
            j += 1;
        }
    }
    out
}

/// Drops empty buckets (value and compensation both zero) except runs of at most
/// `max_empty` empty buckets between populated ones, which stay inside one span.
fn compact_pairs(pairs: &[(i32, f64, f64)], max_empty: usize) -> Vec<(i32, f64, f64)> {
    let populated = |p: &(i32, f64, f64)| p.1 != 0.0 || p.2 != 0.0;
    let mut out: Vec<(i32, f64, f64)> = Vec::with_capacity(pairs.len());
    let mut cursor = 0; // into `pairs`, to reuse the original empty values when filling
    for (k, p) in pairs.iter().enumerate() {
        if !populated(p) {
            continue;
        }
        if let Some(&(last, _, _)) = out.last() {
            let gap = (p.0 as i64 - last as i64 - 1) as u64;
            if gap > 0 && gap <= max_empty as u64 {
                for idx in (last + 1)..p.0 {
                    while cursor < k && pairs[cursor].0 < idx {
                        cursor += 1;
                    }
                    if cursor < k && pairs[cursor].0 == idx {
                        out.push(pairs[cursor]);
                    } else {
                        out.push((idx, 0.0, 0.0));
                    }
                }
            }
        }
        out.push(*p);
    }
    out
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

/// Go's spansMatch: equal layouts, where zero-length spans are folded into their
/// neighbours (but adjacent spans with offset 0 are NOT merged).
fn spans_match(s1: &[Span], s2: &[Span]) -> bool {
    fn fold(s: &[Span]) -> Vec<Span> {
        let mut out = Vec::new();
        let mut pending_offset = 0i64;
        for sp in s {
            pending_offset += sp.offset as i64;
            if sp.length > 0 {
                out.push((pending_offset, sp.length));
                pending_offset = 0;
            }
        }
        out.into_iter()
            .map(|(o, l)| Span {
                offset: o as i32,
                length: l,
            })
            .collect()
    }
    fold(s1) == fold(s2)
}

fn bits_match(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Bounds shared by both custom bucket layouts.
fn intersect_custom_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Adds/subtracts two NHCB sides with different bounds by mapping every bucket into the
/// bucket of `intersected` that contains it. Sums use Kahan; `a_comp` (if any) is folded
/// into A's values. Buckets that end up empty are dropped.
fn add_custom_mismatched(
    negate: bool,
    a: &[(i32, f64)],
    a_bounds: &[f64],
    a_comp: Option<&[f64]>,
    b: &[(i32, f64)],
    b_bounds: &[f64],
    intersected: &[f64],
) -> (Vec<Span>, Vec<f64>, Vec<f64>) {
    let n = intersected.len() + 1;
    let mut vals = vec![0.0; n];
    let mut comps = vec![0.0; n];
    let mut map = |pairs: &[(i32, f64)], bounds: &[f64], negate: bool, comp: Option<&[f64]>| {
        let mut ii = 0;
        for (k, &(src, v)) in pairs.iter().enumerate() {
            let mut target = n - 1;
            if src >= 0 && (src as usize) < bounds.len() {
                let bound = bounds[src as usize];
                while ii < intersected.len() {
                    if intersected[ii] >= bound {
                        target = ii;
                        break;
                    }
                    ii += 1;
                }
            }
            if negate {
                (vals[target], comps[target]) = kahan_inc(-v, vals[target], comps[target]);
            } else {
                (vals[target], comps[target]) = kahan_inc(v, vals[target], comps[target]);
                if let Some(c) = comp {
                    let cv = c.get(k).copied().unwrap_or(0.0);
                    (vals[target], comps[target]) = kahan_inc(cv, vals[target], comps[target]);
                }
            }
        }
    };
    map(a, a_bounds, false, a_comp);
    map(b, b_bounds, negate, None);
    from_indexed_with_comp(
        (0..n)
            .filter(|&i| vals[i] != 0.0 || comps[i] != 0.0)
            .map(|i| (i as i32, vals[i], comps[i])),
    )
}

// ---------------------------------------------------------------------------------------

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
    fn kahan_compact(&mut self, max_empty_buckets: usize, c: &mut FloatHistogram) {
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

    fn side(&self, positive: bool) -> (&[Span], &[f64]) {
        if positive {
            (&self.positive_spans, &self.positive_buckets)
        } else {
            (&self.negative_spans, &self.negative_buckets)
        }
    }

    fn set_side(&mut self, positive: bool, spans: Vec<Span>, buckets: Vec<f64>) {
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

    /// Buckets of one side at this histogram's schema, ordered by index (i.e. away from
    /// zero), without any clamping to the zero threshold.
    fn side_buckets(&self, positive: bool) -> Vec<Bucket> {
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

    /// The zero count this histogram would have with the given larger threshold, plus the
    /// threshold actually needed: if the new threshold cuts through a populated bucket, it
    /// is moved to that bucket's outer bound. Also returns the Kahan compensation of the
    /// zero count (seeded from `c`, whose buckets are folded in as well).
    fn zero_count_for_larger_threshold(
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

    /// Cuts off the observations above (`is_upper_trim`, operator `</`) or below (`>/`)
    /// `rhs`, interpolating within the bucket containing `rhs`, and re-estimates count and
    /// sum from bucket midpoints if anything was trimmed (Go's TrimBuckets).
    pub fn trim_buckets(&mut self, rhs: f64, is_upper_trim: bool) -> &mut Self {
        let custom = self.uses_custom_buckets();
        let mut new_count = 0.0;
        let mut new_sum = 0.0;
        let mut trimmed = false;
        let mut has = [false, false];
        for (si, positive) in [true, false].into_iter().enumerate() {
            let buckets = self.side_buckets(positive);
            for (i, b) in buckets.iter().enumerate() {
                if b.count == 0.0 {
                    continue;
                }
                has[si] = true;
                let keep_all = if is_upper_trim {
                    b.upper <= rhs
                } else {
                    b.lower >= rhs
                };
                let partial = if is_upper_trim {
                    b.lower < rhs
                } else {
                    b.upper > rhs
                };
                let slot = if positive {
                    &mut self.positive_buckets[i]
                } else {
                    &mut self.negative_buckets[i]
                };
                if keep_all {
                    new_count += b.count;
                    new_sum += midpoint(b.lower, b.upper, positive, custom) * b.count;
                } else if partial {
                    let (keep, mid) = bucket_trim(b, rhs, is_upper_trim, positive, custom);
                    new_count += keep;
                    new_sum += mid * keep;
                    #[allow(clippy::float_cmp)]
                    if *slot != keep {
                        *slot = keep;
                        trimmed = true;
                    }
                } else {
                    *slot = 0.0;
                    trimmed = true;
                }
            }
        }
        if self.zero_count > 0.0 {
            let (keep, mid) =
                zero_bucket_trim(&self.zero_bucket(), rhs, has[1], has[0], is_upper_trim);
            #[allow(clippy::float_cmp)]
            if self.zero_count != keep {
                self.zero_count = keep;
                trimmed = true;
            }
            new_sum += mid * keep;
            new_count += keep;
        }
        if trimmed {
            self.count = new_count;
            self.sum = new_sum;
            self.compact(0);
        }
        self
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

/// Representative value of the surviving part of a bucket for the re-estimated sum:
/// arithmetic mean for custom buckets, geometric mean for exponential ones.
fn midpoint(lower: f64, upper: f64, positive: bool, linear: bool) -> f64 {
    if lower.is_infinite() {
        if upper.is_infinite() {
            return 0.0;
        }
        if upper > 0.0 {
            return upper / 2.0;
        }
        return upper;
    } else if upper.is_infinite() {
        return lower;
    }
    if linear {
        return (lower + upper) / 2.0;
    }
    let geo = (lower * upper).abs().sqrt();
    if positive { geo } else { -geo }
}

fn bucket_trim(b: &Bucket, rhs: f64, upper_trim: bool, positive: bool, custom: bool) -> (f64, f64) {
    if b.lower == f64::NEG_INFINITY || b.upper == f64::INFINITY {
        return infinity_bucket_trim(upper_trim, b, rhs);
    }
    let under = if rhs <= b.lower {
        0.0
    } else if rhs >= b.upper {
        b.count
    } else {
        b.count * b.fraction_below(rhs, custom)
    };
    if upper_trim {
        (under, midpoint(b.lower, rhs, positive, custom))
    } else {
        (b.count - under, midpoint(rhs, b.upper, positive, custom))
    }
}

/// Trimming a bucket with an infinite bound: we cannot know where its observations are,
/// so it is kept or dropped as a whole, except for the NHCB first bucket, whose lower
/// bound is treated as 0 when its upper bound is positive.
fn infinity_bucket_trim(upper_trim: bool, b: &Bucket, rhs: f64) -> (f64, f64) {
    let zero_if_inf = |x: f64| if x.is_infinite() { 0.0 } else { x };
    if b.lower == f64::NEG_INFINITY {
        if upper_trim {
            if rhs >= b.upper {
                return (b.count, 0.0);
            }
            if rhs > 0.0 && b.upper > 0.0 && b.upper != f64::INFINITY {
                return (b.count * rhs / b.upper, rhs / 2.0);
            }
            if b.upper <= 0.0 {
                return (b.count, rhs);
            }
            return (0.0, zero_if_inf(b.upper));
        }
        if rhs <= b.lower {
            return (b.count, 0.0);
        }
        if rhs >= 0.0 && b.upper > rhs && b.upper != f64::INFINITY {
            return (b.count * (1.0 - rhs / b.upper), (rhs + b.upper) / 2.0);
        }
        return (0.0, zero_if_inf(b.upper));
    }
    // Upper bound is +Inf.
    if upper_trim {
        return (0.0, zero_if_inf(b.lower));
    }
    if rhs >= b.lower {
        return (b.count, rhs);
    }
    (0.0, zero_if_inf(b.lower))
}

/// Linear trim of the zero bucket, which only extends to the side(s) that have buckets.
fn zero_bucket_trim(
    zb: &Bucket,
    rhs: f64,
    has_negative: bool,
    has_positive: bool,
    upper_trim: bool,
) -> (f64, f64) {
    let mut lower = zb.lower;
    let mut upper = zb.upper;
    if has_negative && !has_positive {
        upper = 0.0;
    }
    if has_positive && !has_negative {
        lower = 0.0;
    }
    let (fraction, mid) = if upper_trim {
        if rhs <= lower {
            return (0.0, 0.0);
        }
        if rhs >= upper {
            return (zb.count, (lower + upper) / 2.0);
        }
        ((rhs - lower) / (upper - lower), (lower + rhs) / 2.0)
    } else {
        if rhs <= lower {
            return (zb.count, (lower + upper) / 2.0);
        }
        if rhs >= upper {
            return (0.0, 0.0);
        }
        ((upper - rhs) / (upper - lower), (rhs + upper) / 2.0)
    };
    (zb.count * fraction, mid)
}

impl fmt::Display for FloatHistogram {
    /// Go's FloatHistogram.String(), e.g. `{count:5, sum:10, [-2,-1):1, (1,2]:4}`; only
    /// populated buckets are listed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{count:{}, sum:{}",
            format_float_g(self.count),
            format_float_g(self.sum)
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

// ---------------------------------------------------------------------------------------
// PromQL functions on a single histogram.

/// `histogram_quantile` on a native histogram (promql/quantile.go). q < 0 gives -Inf,
/// q > 1 gives +Inf (the caller warns about the invalid quantile), NaN q or a zero count
/// gives NaN. Interpolation is logarithmic within exponential buckets and linear within
/// custom buckets and the zero bucket. An info is returned when NaN observations make the
/// result NaN or skew it.
pub fn histogram_quantile(q: f64, h: &FloatHistogram) -> (f64, Option<HistogramInfo>) {
    if q < 0.0 {
        return (f64::NEG_INFINITY, None);
    }
    if q > 1.0 {
        return (f64::INFINITY, None);
    }
    if h.count == 0.0 || q.is_nan() {
        return (f64::NAN, None);
    }
    let mut info = None;
    // NaN observations are counted in h.count but in no bucket, so with a NaN sum we must
    // rank from the bottom; otherwise we rank from the nearer end.
    let forward = h.sum.is_nan() || q < 0.5;
    let mut buckets = h.all_buckets();
    let mut rank = if forward {
        q * h.count
    } else {
        buckets.reverse();
        (1.0 - q) * h.count
    };
    let mut bucket = Bucket {
        lower: 0.0,
        upper: 0.0,
        count: 0.0,
        lower_inclusive: false,
        upper_inclusive: false,
        index: 0,
    };
    let mut count = 0.0;
    let mut next = 0;
    while next < buckets.len() {
        bucket = buckets[next];
        next += 1;
        if bucket.count == 0.0 {
            continue;
        }
        count += bucket.count;
        if count >= rank {
            break;
        }
    }
    if !h.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
        // In the zero bucket of a histogram with buckets on one side only, assume the
        // observations in the zero bucket are on that side, too.
        if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
            bucket.lower = 0.0;
        } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
            bucket.upper = 0.0;
        }
    } else if h.uses_custom_buckets() {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return (bucket.upper, info);
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return (bucket.lower, info);
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        if h.sum.is_nan() {
            return (f64::NAN, Some(HistogramInfo::QuantileNaNResult));
        }
        return (bucket.upper, info);
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    if h.sum.is_nan() {
        count += buckets[next..].iter().map(|b| b.count).sum::<f64>();
        if count < h.count {
            info = Some(HistogramInfo::QuantileNaNSkew);
        }
    }
    let fraction = rank / bucket.count;
    if h.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return (
            bucket.lower + (bucket.upper - bucket.lower) * fraction,
            info,
        );
    }
    let log_lower = bucket.lower.abs().log2();
    let log_upper = bucket.upper.abs().log2();
    if bucket.lower > 0.0 {
        return (
            (log_lower + (log_upper - log_lower) * fraction).exp2(),
            info,
        );
    }
    (
        -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2(),
        info,
    )
}

/// `histogram_fraction(lower, upper, h)`: estimated share of observations in
/// [lower, upper], interpolating like `histogram_quantile`. NaN for a zero count or NaN
/// bounds, 0 for lower >= upper. NaN observations are in no bucket, so the fractions do
/// not add up to 1 then, which is reported as an info.
pub fn histogram_fraction(
    lower: f64,
    upper: f64,
    h: &FloatHistogram,
) -> (f64, Option<HistogramInfo>) {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return (f64::NAN, None);
    }
    if lower >= upper {
        return (0.0, None);
    }
    let buckets = h.all_buckets();
    let (mut count, mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut next = 0;
    while next < buckets.len() {
        let mut b = buckets[next];
        next += 1;
        count += b.count;
        let mut zero_bucket = false;
        if b.lower <= 0.0 && b.upper >= 0.0 {
            zero_bucket = true;
            if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
                b.lower = 0.0;
            } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
                b.upper = 0.0;
            }
        }
        let linear = h.uses_custom_buckets() || zero_bucket;
        let interpolate = |v: f64| {
            // No interpolation into a bucket reaching to -Inf: count it fully, mirroring
            // how the +Inf bucket contributes nothing.
            if linear && b.lower == f64::NEG_INFINITY {
                return b.count;
            }
            rank + b.count * b.fraction_below(v, linear)
        };
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank += b.count;
    }
    let mut info = None;
    if h.sum.is_nan() {
        count += buckets[next..].iter().map(|b| b.count).sum::<f64>();
        if count < h.count {
            info = Some(HistogramInfo::FractionNaNs);
        }
    } else {
        count = h.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    ((upper_rank - lower_rank) / h.count, info)
}

/// `histogram_stdvar`: variance of the bucket representatives around sum/count. A bucket
/// is represented by its arithmetic mean for custom buckets, 0 for the zero bucket, and
/// its geometric mean for exponential buckets.
pub fn histogram_stdvar(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut variance, mut comp) = (0.0, 0.0);
    for b in h.all_buckets() {
        if b.count == 0.0 {
            continue;
        }
        let val = if h.uses_custom_buckets() {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let v = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 { -v } else { v }
        };
        let delta = val - mean;
        (variance, comp) = kahan_inc(b.count * delta * delta, variance, comp);
    }
    (variance + comp) / h.count
}

/// `histogram_stddev`: square root of [`histogram_stdvar`].
pub fn histogram_stddev(h: &FloatHistogram) -> f64 {
    histogram_stdvar(h).sqrt()
}

#[allow(
    clippy::approx_constant,
    clippy::excessive_precision,
    clippy::unreadable_literal
)]
mod bounds_table {
    /// Upper bucket bounds within [0.5, 1) for schemas 0..=8, identical to Prometheus's
    /// precomputed table so that bucket boundaries agree with it bit for bit.
    #[rustfmt::skip]
    pub(super) const EXPONENTIAL_BOUNDS: [&[f64]; 9] = [
        &[
            0.5,
        ],
        &[
            0.5, 0.7071067811865475,
        ],
        &[
            0.5, 0.5946035575013605, 0.7071067811865475, 0.8408964152537144,
        ],
        &[
            0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
            0.7071067811865475, 0.7711054127039704, 0.8408964152537144, 0.9170040432046711,
        ],
        &[
            0.5, 0.5221368912137069, 0.5452538663326288, 0.5693943173783458,
            0.5946035575013605, 0.620928906036742, 0.6484197773255048, 0.6771277734684463,
            0.7071067811865475, 0.7384130729697496, 0.7711054127039704, 0.805245165974627,
            0.8408964152537144, 0.8781260801866495, 0.9170040432046711, 0.9576032806985735,
        ],
        &[
            0.5, 0.5109485743270583, 0.5221368912137069, 0.5335702003384117,
            0.5452538663326288, 0.5571933712979462, 0.5693943173783458, 0.5818624293887887,
            0.5946035575013605, 0.6076236799902344, 0.620928906036742, 0.6345254785958666,
            0.6484197773255048, 0.6626183215798706, 0.6771277734684463, 0.6919549409819159,
            0.7071067811865475, 0.7225904034885232, 0.7384130729697496, 0.7545822137967112,
            0.7711054127039704, 0.7879904225539431, 0.805245165974627, 0.8228777390769823,
            0.8408964152537144, 0.8593096490612387, 0.8781260801866495, 0.8973545375015533,
            0.9170040432046711, 0.9370838170551498, 0.9576032806985735, 0.9785720620876999,
        ],
        &[
            0.5, 0.5054446430258502, 0.5109485743270583, 0.5165124395106142,
            0.5221368912137069, 0.5278225891802786, 0.5335702003384117, 0.5393803988785598,
            0.5452538663326288, 0.5511912916539204, 0.5571933712979462, 0.5632608093041209,
            0.5693943173783458, 0.5755946149764913, 0.5818624293887887, 0.5881984958251406,
            0.5946035575013605, 0.6010783657263515, 0.6076236799902344, 0.6142402680534349,
            0.620928906036742, 0.6276903785123455, 0.6345254785958666, 0.6414350080393891,
            0.6484197773255048, 0.6554806057623822, 0.6626183215798706, 0.6698337620266515,
            0.6771277734684463, 0.6845012114872953, 0.6919549409819159, 0.6994898362691555,
            0.7071067811865475, 0.7148066691959849, 0.7225904034885232, 0.7304588970903234,
            0.7384130729697496, 0.7464538641456323, 0.7545822137967112, 0.762799075372269,
            0.7711054127039704, 0.7795022001189185, 0.7879904225539431, 0.7965710756711334,
            0.805245165974627, 0.8140137109286738, 0.8228777390769823, 0.8318382901633681,
            0.8408964152537144, 0.8500531768592616, 0.8593096490612387, 0.8686669176368529,
            0.8781260801866495, 0.8876882462632604, 0.8973545375015533, 0.9071260877501991,
            0.9170040432046711, 0.9269895625416926, 0.9370838170551498, 0.9472879907934827,
            0.9576032806985735, 0.9680308967461471, 0.9785720620876999, 0.9892280131939752,
        ],
        &[
            0.5, 0.5027149505564014, 0.5054446430258502, 0.5081891574554764,
            0.5109485743270583, 0.5137229745593818, 0.5165124395106142, 0.5193170509806894,
            0.5221368912137069, 0.5249720429003435, 0.5278225891802786, 0.5306886136446309,
            0.5335702003384117, 0.5364674337629877, 0.5393803988785598, 0.5423091811066545,
            0.5452538663326288, 0.5482145409081883, 0.5511912916539204, 0.5541842058618393,
            0.5571933712979462, 0.5602188762048033, 0.5632608093041209, 0.5663192597993595,
            0.5693943173783458, 0.572486072215902, 0.5755946149764913, 0.5787200368168754,
            0.5818624293887887, 0.585021884841625, 0.5881984958251406, 0.5913923554921704,
            0.5946035575013605, 0.5978321960199137, 0.6010783657263515, 0.6043421618132907,
            0.6076236799902344, 0.6109230164863786, 0.6142402680534349, 0.6175755319684665,
            0.620928906036742, 0.6243004885946023, 0.6276903785123455, 0.6310986751971253,
            0.6345254785958666, 0.637970889198196, 0.6414350080393891, 0.6449179367033329,
            0.6484197773255048, 0.6519406325959679, 0.6554806057623822, 0.659039800633032,
            0.6626183215798706, 0.6662162735415805, 0.6698337620266515, 0.6734708931164728,
            0.6771277734684463, 0.6808045103191123, 0.6845012114872953, 0.688217985377265,
            0.6919549409819159, 0.6957121878859629, 0.6994898362691555, 0.7032879969095076,
            0.7071067811865475, 0.7109463010845827, 0.7148066691959849, 0.718687998724491,
            0.7225904034885232, 0.7265139979245261, 0.7304588970903234, 0.7344252166684908,
            0.7384130729697496, 0.7424225829363761, 0.7464538641456323, 0.7505070348132126,
            0.7545822137967112, 0.7586795205991071, 0.762799075372269, 0.7669409989204777,
            0.7711054127039704, 0.7752924388424999, 0.7795022001189185, 0.7837348199827764,
            0.7879904225539431, 0.7922691326262467, 0.7965710756711334, 0.8008963778413465,
            0.805245165974627, 0.8096175675974316, 0.8140137109286738, 0.8184337248834821,
            0.8228777390769823, 0.8273458838280969, 0.8318382901633681, 0.8363550898207981,
            0.8408964152537144, 0.8454623996346523, 0.8500531768592616, 0.8546688815502312,
            0.8593096490612387, 0.8639756154809185, 0.8686669176368529, 0.8733836930995842,
            0.8781260801866495, 0.8828942179666361, 0.8876882462632604, 0.8925083056594671,
            0.8973545375015533, 0.9022270839033115, 0.9071260877501991, 0.9120516927035263,
            0.9170040432046711, 0.9219832844793128, 0.9269895625416926, 0.9320230241988943,
            0.9370838170551498, 0.9421720895161669, 0.9472879907934827, 0.9524316709088368,
            0.9576032806985735, 0.9628029718180622, 0.9680308967461471, 0.9732872087896164,
            0.9785720620876999, 0.9838856116165875, 0.9892280131939752, 0.9945994234836328,
        ],
        &[
            0.5, 0.5013556375251013, 0.5027149505564014, 0.5040779490592088,
            0.5054446430258502, 0.5068150424757447, 0.5081891574554764, 0.509566998038869,
            0.5109485743270583, 0.5123338964485679, 0.5137229745593818, 0.5151158188430205,
            0.5165124395106142, 0.5179128468009786, 0.5193170509806894, 0.520725062344158,
            0.5221368912137069, 0.5235525479396449, 0.5249720429003435, 0.526395386502313,
            0.5278225891802786, 0.5292536613972564, 0.5306886136446309, 0.5321274564422321,
            0.5335702003384117, 0.5350168559101208, 0.5364674337629877, 0.5379219445313954,
            0.5393803988785598, 0.5408428074966075, 0.5423091811066545, 0.5437795304588847,
            0.5452538663326288, 0.5467321995364429, 0.5482145409081883, 0.549700901315111,
            0.5511912916539204, 0.5526857228508706, 0.5541842058618393, 0.5556867516724088,
            0.5571933712979462, 0.5587040757836845, 0.5602188762048033, 0.5617377836665098,
            0.5632608093041209, 0.564787964283144, 0.5663192597993595, 0.5678547070789026,
            0.5693943173783458, 0.5709381019847808, 0.572486072215902, 0.5740382394200894,
            0.5755946149764913, 0.5771552102951081, 0.5787200368168754, 0.5802891060137493,
            0.5818624293887887, 0.5834400184762408, 0.585021884841625, 0.5866080400818185,
            0.5881984958251406, 0.5897932637314379, 0.5913923554921704, 0.5929957828304968,
            0.5946035575013605, 0.5962156912915756, 0.5978321960199137, 0.5994530835371903,
            0.6010783657263515, 0.6027080545025619, 0.6043421618132907, 0.6059806996384005,
            0.6076236799902344, 0.6092711149137041, 0.6109230164863786, 0.6125793968185725,
            0.6142402680534349, 0.6159056423670379, 0.6175755319684665, 0.6192499490999082,
            0.620928906036742, 0.622612415087629, 0.6243004885946023, 0.6259931389331581,
            0.6276903785123455, 0.6293922197748583, 0.6310986751971253, 0.6328097572894031,
            0.6345254785958666, 0.6362458516947014, 0.637970889198196, 0.6397006037528346,
            0.6414350080393891, 0.6431741147730128, 0.6449179367033329, 0.6466664866145447,
            0.6484197773255048, 0.6501778216898253, 0.6519406325959679, 0.6537082229673385,
            0.6554806057623822, 0.6572577939746774, 0.659039800633032, 0.6608266388015788,
            0.6626183215798706, 0.6644148621029772, 0.6662162735415805, 0.6680225691020727,
            0.6698337620266515, 0.6716498655934177, 0.6734708931164728, 0.6752968579460171,
            0.6771277734684463, 0.6789636531064505, 0.6808045103191123, 0.6826503586020058,
            0.6845012114872953, 0.6863570825438342, 0.688217985377265, 0.690083933630119,
            0.6919549409819159, 0.6938310211492645, 0.6957121878859629, 0.6975984549830999,
            0.6994898362691555, 0.7013863456101023, 0.7032879969095076, 0.7051948041086352,
            0.7071067811865475, 0.7090239421602076, 0.7109463010845827, 0.7128738720527471,
            0.7148066691959849, 0.7167447066838943, 0.718687998724491, 0.7206365595643126,
            0.7225904034885232, 0.7245495448210174, 0.7265139979245261, 0.7284837772007218,
            0.7304588970903234, 0.7324393720732029, 0.7344252166684908, 0.7364164454346837,
            0.7384130729697496, 0.7404151139112358, 0.7424225829363761, 0.7444354947621984,
            0.7464538641456323, 0.7484777058836176, 0.7505070348132126, 0.7525418658117031,
            0.7545822137967112, 0.7566280937263048, 0.7586795205991071, 0.7607365094544071,
            0.762799075372269, 0.7648672334736434, 0.7669409989204777, 0.7690203869158282,
            0.7711054127039704, 0.7731960915705107, 0.7752924388424999, 0.7773944698885442,
            0.7795022001189185, 0.7816156449856788, 0.7837348199827764, 0.7858597406461707,
            0.7879904225539431, 0.7901268813264122, 0.7922691326262467, 0.7944171921585818,
            0.7965710756711334, 0.7987307989543135, 0.8008963778413465, 0.8030678282083853,
            0.805245165974627, 0.8074284071024302, 0.8096175675974316, 0.8118126635086642,
            0.8140137109286738, 0.8162207259936375, 0.8184337248834821, 0.820652723822003,
            0.8228777390769823, 0.8251087869603088, 0.8273458838280969, 0.8295890460808079,
            0.8318382901633681, 0.8340936325652911, 0.8363550898207981, 0.8386226785089391,
            0.8408964152537144, 0.8431763167241966, 0.8454623996346523, 0.8477546807446661,
            0.8500531768592616, 0.8523579048290255, 0.8546688815502312, 0.8569861239649629,
            0.8593096490612387, 0.8616394738731368, 0.8639756154809185, 0.8663180910111553,
            0.8686669176368529, 0.871022112577578, 0.8733836930995842, 0.8757516765159389,
            0.8781260801866495, 0.8805069215187917, 0.8828942179666361, 0.8852879870317771,
            0.8876882462632604, 0.890095013257712, 0.8925083056594671, 0.8949281411607002,
            0.8973545375015533, 0.8997875124702672, 0.9022270839033115, 0.9046732696855155,
            0.9071260877501991, 0.909585556079304, 0.9120516927035263, 0.9145245157024483,
            0.9170040432046711, 0.9194902933879467, 0.9219832844793128, 0.9244830347552253,
            0.9269895625416926, 0.92950288621441, 0.9320230241988943, 0.9345499949706191,
            0.9370838170551498, 0.93962450902828, 0.9421720895161669, 0.9447265771954693,
            0.9472879907934827, 0.9498563490882775, 0.9524316709088368, 0.9550139751351947,
            0.9576032806985735, 0.9601996065815236, 0.9628029718180622, 0.9654133954938133,
            0.9680308967461471, 0.9706554947643201, 0.9732872087896164, 0.9759260581154889,
            0.9785720620876999, 0.9812252401044634, 0.9838856116165875, 0.9865531961276168,
            0.9892280131939752, 0.9919100824251095, 0.9945994234836328, 0.9972960560854698,
        ],
    ];
}
use bounds_table::EXPONENTIAL_BOUNDS;

// Expected values are copied verbatim from Prometheus's test files.
#[cfg(test)]
#[allow(clippy::approx_constant, clippy::excessive_precision)]
mod tests {
    use super::*;

    fn exp(schema: i32, pos: (i32, Vec<f64>), neg: (i32, Vec<f64>)) -> FloatHistogram {
        let count = pos.1.iter().chain(&neg.1).sum();
        FloatHistogram::from_absolute(schema, 0.0, 0.0, count, 0.0, pos, neg, vec![])
    }

    fn nhcb(bounds: &[f64], buckets: &[f64]) -> FloatHistogram {
        FloatHistogram::from_absolute(
            CUSTOM_BUCKETS_SCHEMA,
            0.0,
            0.0,
            buckets.iter().sum(),
            0.0,
            (0, buckets.to_vec()),
            (0, vec![]),
            bounds.to_vec(),
        )
    }

    fn spans(s: &[(i32, u32)]) -> Vec<Span> {
        s.iter()
            .map(|&(offset, length)| Span { offset, length })
            .collect()
    }

    /// Prometheus's almost.Equal with epsilon 1e-6 (the promqltest tolerance).
    fn close(a: f64, b: f64) -> bool {
        if a.is_nan() && b.is_nan() || a == b {
            return true;
        }
        (a - b).abs() / (a.abs() + b.abs()).min(f64::MAX) < 1e-6
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {{
            let (a, b): (f64, f64) = ($a, $b);
            assert!(close(a, b), "{a} vs {b}");
        }};
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(format_float_g(1e6), "1e+06");
        assert_eq!(format_float_g(100000.0), "100000");
        assert_eq!(format_float_g(123456.7), "123456.7");
        assert_eq!(format_float_g(0.0001), "0.0001");
        assert_eq!(format_float_g(0.00001), "1e-05");
        assert_eq!(format_float_g(-2.5e-7), "-2.5e-07");
        assert_eq!(format_float_g(1.5), "1.5");
        assert_eq!(format_float_g(f64::INFINITY), "+Inf");
        assert_eq!(format_float_g(f64::NAN), "NaN");
        assert_eq!(format_float_g(1e300), "1e+300");
    }

    #[test]
    fn exponential_bounds() {
        assert_eq!(exponential_bound(0, 0), 1.0);
        assert_eq!(exponential_bound(1, 0), 2.0);
        assert_eq!(exponential_bound(-1, 0), 0.5);
        assert_eq!(exponential_bound(1, -1), 4.0);
        // Go's table value, one ulp below sqrt(2).
        assert_eq!(exponential_bound(1, 1), 0.7071067811865475 * 2.0);
        assert_eq!(exponential_bound(1024, 0), f64::MAX);
        assert_eq!(exponential_bound(1025, 0), f64::INFINITY);
        assert_eq!(exponential_bound(-1074, 0), f64::from_bits(1));
        assert_eq!(exponential_bound(256, -2), f64::MAX);
        assert_eq!(ldexp(0.75, -1074), f64::from_bits(1));
    }

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

    fn parse_like(
        schema: i32,
        count: f64,
        sum: f64,
        zc: f64,
        zt: f64,
        pos: Vec<f64>,
        neg: Vec<f64>,
    ) -> FloatHistogram {
        FloatHistogram::from_absolute(schema, zt, zc, count, sum, (0, pos), (0, neg), vec![])
    }

    #[test]
    fn quantiles_from_promql_tests() {
        // histogram_quantile_1 in native_histograms.test.
        let h = parse_like(
            0,
            12.0,
            100.0,
            2.0,
            0.001,
            vec![2.0, 3.0, 0.0, 1.0, 4.0],
            vec![],
        );
        for (q, want) in [
            (1.0, 16.0),
            (0.99, 15.67072476139083),
            (0.9, 12.99603834169977),
            (0.6, 4.594793419988138),
            (0.5, 1.5874010519681994),
            (0.1, 0.0006),
            (0.0, 0.0),
        ] {
            assert_close!(histogram_quantile(q, &h).0, want);
        }
        assert_eq!(histogram_quantile(1.001, &h).0, f64::INFINITY);
        assert_eq!(histogram_quantile(-1.0, &h).0, f64::NEG_INFINITY);
        assert!(histogram_quantile(f64::NAN, &h).0.is_nan());
        assert!(histogram_quantile(0.5, &FloatHistogram::empty()).0.is_nan());

        // histogram_quantile_2: only negative buckets.
        let h = parse_like(
            0,
            12.0,
            100.0,
            2.0,
            0.001,
            vec![],
            vec![2.0, 3.0, 0.0, 1.0, 4.0],
        );
        for (q, want) in [
            (1.0, 0.0),
            (0.99, -0.00006),
            (0.9, -0.0006),
            (0.5, -1.5874010519681996),
            (0.1, -12.996038341699768),
            (0.0, -16.0),
        ] {
            assert_close!(histogram_quantile(q, &h).0, want);
        }

        // histogram_quantile_3: both sides.
        let b = vec![2.0, 3.0, 0.0, 1.0, 4.0];
        let h = parse_like(0, 24.0, 100.0, 4.0, 0.001, b.clone(), b);
        for (q, want) in [
            (0.99, 15.34822590920423),
            (0.7, 1.2030250360821164),
            (0.55, 0.0006),
            (0.5, 0.0),
            (0.45, -0.0006),
            (0.3, -1.2030250360821169),
            (0.01, -15.34822590920423),
        ] {
            assert_close!(histogram_quantile(q, &h).0, want);
        }

        // var_res_histogram: schema-independent interpolation.
        for (schema, want) in [(-1, 2.0), (0, std::f64::consts::SQRT_2), (1, 1.189207)] {
            let h = parse_like(schema, 5.0, 4.0, 0.0, 0.0, vec![0.0, 5.0], vec![]);
            assert_close!(histogram_quantile(0.5, &h).0, want);
        }

        // Custom buckets interpolate linearly.
        let mut c = nhcb(&[5.0, 10.0], &[1.0, 2.0, 1.0]);
        c.sum = 5.0;
        assert_eq!(histogram_quantile(0.5, &c).0, 7.5);
        assert_eq!(
            histogram_quantile(0.99, &c).0,
            10.0,
            "+Inf bucket yields its lower bound"
        );
        assert_eq!(
            histogram_quantile(0.1, &c).0,
            2.0,
            "first bucket assumes lower bound 0"
        );
        let neg = nhcb(&[-1.0, 10.0], &[4.0, 0.0, 0.0]);
        assert_eq!(histogram_quantile(0.5, &neg).0, -1.0);
    }

    #[test]
    fn quantile_with_nan_observations() {
        // 5 observations in buckets, 1 NaN (count 6, sum NaN).
        let mut h = parse_like(0, 6.0, f64::NAN, 0.0, 0.0, vec![5.0], vec![]);
        let (v, info) = histogram_quantile(0.5, &h);
        assert!((0.5..=1.0).contains(&v));
        assert_eq!(info, Some(HistogramInfo::QuantileNaNSkew));
        let (v, info) = histogram_quantile(0.99, &h);
        assert!(v.is_nan());
        assert_eq!(info, Some(HistogramInfo::QuantileNaNResult));
        assert_eq!(
            HistogramInfo::QuantileNaNResult.text("foo"),
            "PromQL info: input to histogram_quantile has NaN observations, result is NaN for metric name \"foo\""
        );
        let (f, info) = histogram_fraction(f64::NEG_INFINITY, f64::INFINITY, &h);
        assert_close!(f, 5.0 / 6.0);
        assert_eq!(info, Some(HistogramInfo::FractionNaNs));
        // Sum NaN from ±Inf observations without extra count: no info.
        h.count = 5.0;
        assert_eq!(histogram_quantile(0.5, &h).1, None);
    }

    #[test]
    fn fractions_from_promql_tests() {
        // histogram_fraction_2 in native_histograms.test.
        let h = parse_like(
            0,
            12.0,
            100.0,
            2.0,
            0.001,
            vec![2.0, 3.0, 0.0, 1.0, 4.0],
            vec![],
        );
        let inf = f64::INFINITY;
        for (lo, hi, want) in [
            (0.0, inf, 1.0),
            (-inf, 0.0, 0.0),
            (-0.001, 0.0, 0.0),
            (0.0, 0.001, 0.16666666666666666),
            (0.001, inf, 0.8333333333333334),
            (0.0, 0.0005, 0.08333333333333333),
            (-inf, -0.001, 0.0),
            (1.0, 2.0, 0.25),
            (0.0, 1.5, 0.4795739585136224),
            (1.5, 2.0, 0.10375937481971091),
            (1.0, 8.0, 0.3333333333333333),
            (0.0, 6.0, 0.6320802083934297),
            (1.0, 6.0, 0.29874687506009634),
            (1.5, 6.0, 0.15250624987980724),
            (-2.0, -1.0, 0.0),
        ] {
            assert_close!(histogram_fraction(lo, hi, &h).0, want);
        }
        assert_close!(histogram_quantile(0.6320802083934297, &h).0, 6.0);
        assert_close!(histogram_quantile(0.08333333333333333, &h).0, 0.0005);
        assert!(histogram_fraction(f64::NAN, 1.0, &h).0.is_nan());
        assert_eq!(histogram_fraction(2.0, 1.0, &h).0, 0.0);
        assert!(
            histogram_fraction(3.1415, 42.0, &FloatHistogram::empty())
                .0
                .is_nan()
        );
        // Custom buckets: linear, nothing interpolated into the ±Inf buckets.
        let c = nhcb(&[5.0, 10.0], &[1.0, 2.0, 1.0]);
        assert_eq!(histogram_fraction(5.0, 10.0, &c).0, 0.5);
        assert_eq!(histogram_fraction(7.5, 20.0, &c).0, 0.25);
        for (schema, x) in [(-1, 2.0), (0, std::f64::consts::SQRT_2)] {
            let h = parse_like(schema, 5.0, 4.0, 0.0, 0.0, vec![0.0, 5.0], vec![]);
            assert_close!(histogram_fraction(0.0, x, &h).0, 0.5);
            let n = parse_like(schema, 5.0, 4.0, 0.0, 0.0, vec![], vec![0.0, 5.0]);
            assert_close!(histogram_fraction(-x, 0.0, &n).0, 0.5);
        }
    }

    #[test]
    fn stddev_and_stdvar_from_promql_tests() {
        let h1 = parse_like(
            2,
            4.0,
            10.0,
            0.0,
            0.0,
            vec![1., 0., 0., 0., 1., 0., 0., 1., 1.],
            vec![],
        );
        assert_close!(histogram_stddev(&h1), 1.0787993180043811);
        assert_close!(histogram_stdvar(&h1), 1.163807968526718);
        let h2 = parse_like(8, 10.0, 10.0, 0.0, 0.0, vec![1., 2., 3., 4.], vec![]);
        assert_close!(histogram_stddev(&h2), 0.0048960313898237465);
        assert_close!(histogram_stdvar(&h2), 2.3971123370139447e-05);

        let mut pos = vec![0.0; 55];
        pos[13] = 1.0;
        pos[24] = 1.0;
        pos[26] = 1.0;
        pos[54] = 1.0;
        let mut neg = vec![0.0; 47];
        neg[24] = 1.0;
        neg[46] = 1.0;
        let h3 = parse_like(3, 7.0, 62.0, 1.0, 0.0, pos.clone(), neg.clone());
        assert_close!(histogram_stddev(&h3), 42.94723640026);
        assert_close!(histogram_stdvar(&h3), 1844.4651144196398);
        let h6 = parse_like(3, 7.0, f64::NAN, 1.0, 0.0, pos.clone(), neg.clone());
        assert!(histogram_stddev(&h6).is_nan());
        let h7 = parse_like(3, 7.0, f64::INFINITY, 1.0, 0.0, pos, neg);
        assert_eq!(histogram_stdvar(&h7), f64::INFINITY);

        let n4 = vec![
            0., 0., 1., 1., 1., 0., 1., 1., 0., 0., 3., 0., 0., 0., 1., 0., 0., 1.,
        ];
        let h4 = parse_like(0, 10.0, -112946.0, 0.0, 0.0, vec![], n4);
        assert_close!(histogram_stddev(&h4), 27556.344499842);
        assert_close!(histogram_stdvar(&h4), 759352122.1939945);
        let h5 = parse_like(0, 10.0, -100.0, 0.0, 0.0, vec![], vec![0., 0., 0., 0., 10.]);
        assert_close!(histogram_stddev(&h5), 1.3137084989848);
        assert_close!(histogram_stdvar(&h5), 1.725830020304794);
    }

    #[test]
    fn trim_buckets_from_promql_tests() {
        let h = FloatHistogram::from_absolute(
            0,
            0.001,
            1.0,
            34.0,
            123.75,
            (0, vec![2.0, 4.0, 8.0, 16.0]),
            (0, vec![1.0, 2.0]),
            vec![],
        );
        let mut t = h.clone();
        t.trim_buckets(0.0, false);
        assert_close!(t.count, 30.5);
        assert_close!(t.sum, 120.20840280171308);
        assert_close!(t.zero_count, 0.5);
        assert!(t.negative_buckets.is_empty());

        let mut t = h.clone();
        t.trim_buckets(1.4142135624, true);
        assert_close!(t.count, 8.0);
        assert_close!(t.sum, 0.2570938865989847);
        assert_eq!(t.positive_buckets.len(), 2);
        assert_close!(t.positive_buckets[1], 2.0);

        let mut t = h.clone();
        t.trim_buckets(2.0, false);
        assert_close!(t.count, 24.0);
        assert_close!(t.sum, 113.13708498984761);
        assert_eq!(t.positive_spans, spans(&[(2, 2)]));
        assert_eq!(t.zero_count, 0.0);

        let mut t = h.clone();
        t.trim_buckets(f64::INFINITY, true);
        assert_eq!(t, h, "nothing trimmed, nothing changed");

        let mut t = h.clone();
        t.trim_buckets(-1.0, true);
        assert_close!(t.count, 2.0);
        assert_close!(t.sum, -2.8284271247461903);
        assert_eq!(t.negative_spans, spans(&[(1, 1)]));

        let h2 = FloatHistogram::from_absolute(
            2,
            0.001,
            1.0,
            28.0,
            12.8286080906,
            (0, vec![1.0, 2.0, 4.0, 7.0, 3.0]),
            (0, vec![1.0, 5.0, 3.0, 1.0]),
            vec![],
        );
        let mut t = h2.clone();
        t.trim_buckets(1.13, true);
        assert_close!(t.count, 13.410582181123704);
        assert_close!(t.sum, -9.385798726068233);
        assert_close!(t.positive_buckets[1], 1.410582181123704);

        let mut p = FloatHistogram::from_absolute(
            0,
            0.5,
            2.0,
            12.0,
            8.0210678118654755,
            (0, vec![10.0]),
            (0, vec![]),
            vec![],
        );
        p.trim_buckets(0.1, false);
        assert_close!(p.count, 11.6);
        assert_close!(p.sum, 7.551067811865476);
        assert_close!(p.zero_count, 1.6);
    }
}
