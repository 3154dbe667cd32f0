//! Functions over the samples of one window `(end - range, end]`, as Prometheus computes them.

use super::regression::{Span, linear_regression, regressions};
use super::sum::kahan_inc;

/// A range function, resolved from its name once per query rather than once per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    Resets,
    Changes,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    StddevOverTime,
    StdvarOverTime,
    LastOverTime,
    FirstOverTime,
    PresentOverTime,
    MadOverTime,
    QuantileOverTime,
    DoubleExponentialSmoothing,
    TsOfLastOverTime,
    TsOfFirstOverTime,
    TsOfMaxOverTime,
    TsOfMinOverTime,
}

/// PromQL name of every range function (`holt_winters` is the pre-3.0 name).
const RANGE_FNS: &[(&str, RangeFn)] = &[
    ("rate", RangeFn::Rate),
    ("increase", RangeFn::Increase),
    ("delta", RangeFn::Delta),
    ("irate", RangeFn::Irate),
    ("idelta", RangeFn::Idelta),
    ("deriv", RangeFn::Deriv),
    ("predict_linear", RangeFn::PredictLinear),
    ("resets", RangeFn::Resets),
    ("changes", RangeFn::Changes),
    ("avg_over_time", RangeFn::AvgOverTime),
    ("min_over_time", RangeFn::MinOverTime),
    ("max_over_time", RangeFn::MaxOverTime),
    ("sum_over_time", RangeFn::SumOverTime),
    ("count_over_time", RangeFn::CountOverTime),
    ("stddev_over_time", RangeFn::StddevOverTime),
    ("stdvar_over_time", RangeFn::StdvarOverTime),
    ("last_over_time", RangeFn::LastOverTime),
    ("first_over_time", RangeFn::FirstOverTime),
    ("present_over_time", RangeFn::PresentOverTime),
    ("mad_over_time", RangeFn::MadOverTime),
    ("quantile_over_time", RangeFn::QuantileOverTime),
    (
        "double_exponential_smoothing",
        RangeFn::DoubleExponentialSmoothing,
    ),
    ("holt_winters", RangeFn::DoubleExponentialSmoothing),
    ("ts_of_last_over_time", RangeFn::TsOfLastOverTime),
    ("ts_of_first_over_time", RangeFn::TsOfFirstOverTime),
    ("ts_of_max_over_time", RangeFn::TsOfMaxOverTime),
    ("ts_of_min_over_time", RangeFn::TsOfMinOverTime),
];

impl RangeFn {
    pub(crate) fn parse(name: &str) -> Option<RangeFn> {
        RANGE_FNS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The function's PromQL name (its current one: `double_exponential_smoothing`).
    pub(crate) fn name(self) -> &'static str {
        RANGE_FNS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| n)
    }

    /// `(is_counter, is_rate)` of the functions that extrapolate a window's change.
    fn extrapolates(self) -> Option<(bool, bool)> {
        match self {
            RangeFn::Rate => Some((true, true)),
            RangeFn::Increase => Some((true, false)),
            RangeFn::Delta => Some((false, false)),
            _ => None,
        }
    }

    /// Counter functions whose windows sum up counter resets.
    fn counts_resets(self) -> bool {
        matches!(self, RangeFn::Rate | RangeFn::Increase)
    }
}

/// Calls `visit(step, window)` for every step whose window `(end - range, end]` over one
/// series (samples `ts`/`vals`, no stale markers) is non-empty, until `keep_going` says no. Shared by the evaluator and
/// the DataFusion operator, so both see identical windows and reset hints.
pub(crate) fn for_each_window(
    f: RangeFn,
    ts: &[i64],
    vals: &[f64],
    ends: &[i64],
    range_ms: i64,
    keep_going: impl FnMut() -> bool,
    mut visit: impl FnMut(usize, &Window),
) {
    let resets = if f.counts_resets() {
        reset_points(vals)
    } else {
        Vec::new()
    };
    for_each_span(ts, ends, range_ms, keep_going, |i, a, b| {
        let end = ends[i];
        // The first reset after the window's first sample, if any, is past its last.
        let k = resets.partition_point(|&r| r as usize <= a);
        let w = Window {
            ts: &ts[a..b],
            vals: &vals[a..b],
            start: end.saturating_sub(range_ms),
            end,
            range_ms,
            no_resets: resets.get(k).is_none_or(|&r| r as usize >= b),
        };
        visit(i, &w);
    });
}

/// Calls `visit(step, a, b)` for every step whose window `(end - range, end]` holds the
/// samples `ts[a..b]`, `a < b`, until `keep_going` says no: the windows of
/// [`for_each_window`], as indices (for kernels that take many windows at once).
pub(crate) fn for_each_span(
    ts: &[i64],
    ends: &[i64],
    range_ms: i64,
    mut keep_going: impl FnMut() -> bool,
    mut visit: impl FnMut(usize, usize, usize),
) {
    let mut windows = Windows::new(ts, range_ms);
    // Windows overlap, so one series can cost steps × window samples: ask `keep_going`
    // (the query's deadline) every ~64k samples visited.
    let mut work = 0usize;
    for (i, &end) in ends.iter().enumerate() {
        let (a, b) = windows.at(end);
        work += b.saturating_sub(a) + 1;
        if work >= 1 << 16 {
            work = 0;
            if !keep_going() {
                return;
            }
        }
        if a < b {
            visit(i, a, b);
        }
    }
}

/// Windows `(end - range, end]` over one series for a sequence of window ends. Ends that
/// do not decrease (the usual case: one per evaluation step) move two cursors forward, so
/// a whole range query costs one pass over the samples; a decreasing end falls back to
/// binary search.
pub(crate) struct Windows<'a> {
    ts: &'a [i64],
    range: i64,
    a: usize,
    b: usize,
    /// How far each cursor moved last time: regular samples at a regular step move them
    /// the same distance every step, which two comparisons confirm.
    moved: (usize, usize),
    last_end: i64,
}

impl<'a> Windows<'a> {
    pub(crate) fn new(ts: &'a [i64], range: i64) -> Self {
        Windows {
            ts,
            range,
            a: 0,
            b: 0,
            moved: (0, 0),
            last_end: i64::MIN,
        }
    }

    /// Indices `[a, b)` of the samples in `(end - range, end]`.
    pub(crate) fn at(&mut self, end: i64) -> (usize, usize) {
        if end < self.last_end {
            (self.a, self.b) = super::select::window(self.ts, end, self.range);
        } else {
            let lo = end.saturating_sub(self.range);
            let a = past(self.ts, self.a, lo, self.moved.0);
            let b = past(self.ts, self.b.max(a), end, self.moved.1);
            self.moved = (a - self.a, b - self.b.max(a));
            (self.a, self.b) = (a, b);
        }
        self.last_end = end;
        (self.a, self.b.max(self.a))
    }
}

/// The first index at or after `i` whose time is after `bound` (`ts` ascending), trying
/// `i + guess` first.
fn past(ts: &[i64], i: usize, bound: i64, guess: usize) -> usize {
    let j = i + guess;
    if guess > 0 && j <= ts.len() && ts[j - 1] <= bound && ts.get(j).is_none_or(|&t| t > bound) {
        return j;
    }
    let mut i = i;
    while i < ts.len() && ts[i] <= bound {
        i += 1;
    }
    i
}

/// The indices `i` where `vals[i] < vals[i - 1]`, a counter's resets: a window `[a, b)`
/// holds one exactly when one of them lies in `a + 1..b`, so reset-free windows (nearly
/// all of them) skip the per-sample reset scan. Empty when the series never resets.
pub(crate) fn reset_points(vals: &[f64]) -> Vec<u32> {
    let mut out = Vec::new();
    let Some(later) = vals.get(1..) else {
        return out;
    };
    // Eight pairs at a time without a branch (the compiler's vector compare), looked at
    // one by one only where one of them dropped.
    const LANES: usize = 8;
    let drops = |from: usize, to: usize| (from..to).filter(|&j| later[j] < vals[j]);
    let pairs = vals.chunks_exact(LANES).zip(later.chunks_exact(LANES));
    for (c, (before, after)) in pairs.enumerate() {
        if before
            .iter()
            .zip(after)
            .fold(false, |d, (b, a)| d | (a < b))
        {
            out.extend(drops(c * LANES, (c + 1) * LANES).map(|j| j as u32 + 1));
        }
    }
    let full = later.len() - later.len() % LANES;
    out.extend(drops(full, later.len()).map(|j| j as u32 + 1));
    out
}

/// One window of one series.
pub(crate) struct Window<'a> {
    pub ts: &'a [i64],
    pub vals: &'a [f64],
    /// Window bounds in ms: `(start, end]`.
    pub start: i64,
    pub end: i64,
    pub range_ms: i64,
    /// The caller knows the window holds no counter reset (see [`reset_prefix`]).
    pub no_resets: bool,
}

/// rate / increase / delta with Prometheus's extrapolation.
pub(crate) fn extrapolated_rate(w: &Window, is_counter: bool, is_rate: bool) -> Option<f64> {
    Extrapolation::default().rate(w, is_counter, is_rate)
}

/// The extrapolation of one series' windows, remembered from its last window.
///
/// Before a counter's clamp at zero, a window's factor depends only on integers: the
/// distances in ms from the window's start to its first sample, from its last sample to
/// the window's end, and between the two, the number of samples and the range. Regular
/// samples at a step that is a multiple of their interval give every window the same
/// ones, so the factor's chain of divisions (each ~15 cycles, one waiting for the other:
/// most of a `rate`'s time) runs once per series instead of once per window. The same
/// inputs give the same bits, so nothing changes in the answers.
#[derive(Default)]
pub(crate) struct Extrapolation {
    key: Option<(i64, i64, i64, usize, i64, bool)>,
    /// `to_start` and `to_end` after the threshold, before the clamp at zero.
    to_start: f64,
    to_end: f64,
    sampled: f64,
    /// The factor when the clamp at zero does not apply.
    factor: f64,
}

impl Extrapolation {
    /// [`extrapolated_rate`] of `w`, a window of the series this memo has seen so far.
    #[inline]
    pub(crate) fn rate(&mut self, w: &Window, is_counter: bool, is_rate: bool) -> Option<f64> {
        let n = w.ts.len();
        if n < 2 {
            return None;
        }
        let (first_t, last_t) = (w.ts[0], w.ts[n - 1]);
        let (first_v, last_v) = (w.vals[0], w.vals[n - 1]);
        let mut result = last_v - first_v;
        if is_counter && !w.no_resets {
            let mut prev = first_v;
            for &v in &w.vals[1..] {
                if v < prev {
                    result += prev;
                }
                prev = v;
            }
        }
        let key = (
            first_t - w.start,
            w.end - last_t,
            last_t - first_t,
            n,
            w.range_ms,
            is_rate,
        );
        if self.key != Some(key) {
            self.fill(w, (first_t, last_t), n, is_rate);
            self.key = Some(key);
        }
        let mut factor = self.factor;
        // Prometheus clamps a counter's extrapolation at the time it would have been zero:
        // `to_zero = sampled * (first_v / result)`, when that is below `to_start`. A
        // counter's first value is usually far above a window's change, which a product
        // with a wide margin shows without the division; the rest divide as Prometheus does.
        if is_counter
            && result > 0.0
            && first_v >= 0.0
            && !far_from_zero(self.sampled, first_v, self.to_start, result)
        {
            let to_zero = self.sampled * (first_v / result);
            if to_zero < self.to_start {
                factor = edges_factor(self.sampled, to_zero, self.to_end, w.range_ms, is_rate);
            }
        }
        Some(result * factor)
    }

    /// What [`extrapolation_factor`] computes before the clamp at zero, and its factor
    /// without the clamp.
    fn fill(&mut self, w: &Window, (first_t, last_t): (i64, i64), n: usize, is_rate: bool) {
        let (to_start, to_end, sampled) = edges(w, (first_t, last_t), n);
        let factor = edges_factor(sampled, to_start, to_end, w.range_ms, is_rate);
        (self.to_start, self.to_end, self.sampled, self.factor) =
            (to_start, to_end, sampled, factor);
    }
}

/// Whether `sampled * (first_v / result)`, rounded as Prometheus computes it, is surely at
/// or above `to_start`: `sampled * first_v` above `to_start * result` by a relative margin
/// (2^-40) far wider than the few roundings between the two forms (each 2^-53), with both
/// products finite and normal. `false` when unsure; the caller then divides.
fn far_from_zero(sampled: f64, first_v: f64, to_start: f64, result: f64) -> bool {
    const MARGIN: f64 = 1.0 + 1.0 / (1u64 << 40) as f64;
    let (a, b) = (sampled * first_v, to_start * result);
    a.is_finite() && b >= f64::MIN_POSITIVE * 1e20 && a >= b * MARGIN
}

/// Prometheus's extrapolation of a window's change to its edges: by half an average
/// sample interval at most, and for a counter (`zero_clamp`: the first value and the raw
/// change, counts for histograms) not past the time it would have been zero.
pub(crate) fn extrapolation_factor(
    w: &Window,
    (first_t, last_t): (i64, i64),
    n: usize,
    zero_clamp: Option<(f64, f64)>,
    is_rate: bool,
) -> f64 {
    let (mut to_start, to_end, sampled) = edges(w, (first_t, last_t), n);
    if let Some((first_v, result)) = zero_clamp
        && result > 0.0
        && first_v >= 0.0
    {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    edges_factor(sampled, to_start, to_end, w.range_ms, is_rate)
}

/// The seconds a window's change is extrapolated by at its start and end (half an
/// average interval where the gap is wider than 1.1 of one), before a counter's clamp at
/// zero, and the seconds between its first and last samples.
fn edges(w: &Window, (first_t, last_t): (i64, i64), n: usize) -> (f64, f64, f64) {
    let mut to_start = (first_t - w.start) as f64 / 1000.0;
    let mut to_end = (w.end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg = sampled / (n - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    (to_start, to_end, sampled)
}

/// The factor a window's change is multiplied by, from its [`edges`] (per second of the
/// range for `rate`).
fn edges_factor(sampled: f64, to_start: f64, to_end: f64, range_ms: i64, is_rate: bool) -> f64 {
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    factor
}

/// irate / idelta: the last two samples.
pub(crate) fn instant_value(w: &Window, is_rate: bool) -> Option<f64> {
    let n = w.ts.len();
    if n < 2 {
        return None;
    }
    let (lt, lv) = (w.ts[n - 1], w.vals[n - 1]);
    let (pt, pv) = (w.ts[n - 2], w.vals[n - 2]);
    let mut r = if is_rate && lv < pv { lv } else { lv - pv };
    let interval = lt - pt;
    if interval == 0 {
        return None;
    }
    if is_rate {
        r /= interval as f64 / 1000.0;
    }
    Some(r)
}

pub(crate) fn sum(vals: &[f64]) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for &v in vals {
        (s, c) = kahan_inc(v, s, c);
    }
    if s.is_infinite() { s } else { s + c }
}

/// Mean as Prometheus computes it: Kahan-compensated sum while it stays finite, then an
/// incremental mean. The first value seeds the sum.
pub(crate) fn avg(vals: &[f64]) -> f64 {
    let mut a = super::sum::AvgState::default();
    for &v in vals {
        a.add(v);
    }
    a.value().unwrap_or(f64::NAN)
}

/// Population variance with Kahan-compensated Welford updates.
pub(crate) fn variance(vals: &[f64]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &v in vals {
        count += 1.0;
        let delta = v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

/// Prometheus's quantile over unsorted values (linear interpolation between ranks).
pub(crate) fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| {
        a.partial_cmp(b)
            .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()).reverse())
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    vals[lower as usize] * (1.0 - weight) + vals[upper as usize] * weight
}

pub(crate) fn min(vals: &[f64]) -> f64 {
    let mut m = vals[0];
    for &v in &vals[1..] {
        if v < m || m.is_nan() {
            m = v;
        }
    }
    m
}

pub(crate) fn max(vals: &[f64]) -> f64 {
    let mut m = vals[0];
    for &v in &vals[1..] {
        if v > m || m.is_nan() {
            m = v;
        }
    }
    m
}

pub(crate) fn changes(vals: &[f64]) -> f64 {
    let mut c = 0;
    for w in vals.windows(2) {
        if w[0] != w[1] && !(w[0].is_nan() && w[1].is_nan()) {
            c += 1;
        }
    }
    c as f64
}

pub(crate) fn resets(vals: &[f64]) -> f64 {
    vals.windows(2).filter(|w| w[1] < w[0]).count() as f64
}

/// Median absolute deviation.
pub(crate) fn mad(vals: &[f64]) -> f64 {
    let mut v = vals.to_vec();
    let median = quantile(0.5, &mut v);
    let mut dev: Vec<f64> = vals.iter().map(|x| (x - median).abs()).collect();
    quantile(0.5, &mut dev)
}

/// Holt-Winters double exponential smoothing (`double_exponential_smoothing`).
pub(crate) fn double_exp_smoothing(vals: &[f64], sf: f64, tf: f64) -> Option<f64> {
    if vals.len() < 2 {
        return None;
    }
    let (mut s0, mut s1, mut b) = (0.0, vals[0], vals[1] - vals[0]);
    for (i, &x) in vals.iter().enumerate().skip(1) {
        let trend = if i > 1 {
            tf * (s1 - s0) + (1.0 - tf) * b
        } else {
            b
        };
        b = trend;
        s0 = s1;
        s1 = sf * x + (1.0 - sf) * (s1 + b);
    }
    Some(s1)
}

/// The value of range function `name` over one window (`t` is the evaluation time;
/// `p1`/`p2` the scalar parameters at that step). Shared by the evaluator and the
/// DataFusion range-function operator.
pub(crate) fn window_value(f: RangeFn, w: &Window, p1: f64, p2: f64, t: i64) -> Option<f64> {
    use RangeFn::*;
    match f {
        Rate => extrapolated_rate(w, true, true),
        Increase => extrapolated_rate(w, true, false),
        Delta => extrapolated_rate(w, false, false),
        Irate => instant_value(w, true),
        Idelta => instant_value(w, false),
        Deriv => (w.ts.len() >= 2).then(|| linear_regression(w.ts, w.vals, w.ts[0]).0),
        PredictLinear => (w.ts.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(w.ts, w.vals, t);
            slope * p1 + intercept
        }),
        Resets => Some(resets(w.vals)),
        Changes => Some(changes(w.vals)),
        AvgOverTime => Some(avg(w.vals)),
        MinOverTime => Some(min(w.vals)),
        MaxOverTime => Some(max(w.vals)),
        SumOverTime => Some(sum(w.vals)),
        CountOverTime => Some(w.vals.len() as f64),
        StddevOverTime => Some(variance(w.vals).sqrt()),
        StdvarOverTime => Some(variance(w.vals)),
        LastOverTime => w.vals.last().copied(),
        FirstOverTime => w.vals.first().copied(),
        PresentOverTime => Some(1.0),
        MadOverTime => Some(if w.vals.iter().any(|v| v.is_nan()) {
            f64::NAN
        } else {
            mad(w.vals)
        }),
        QuantileOverTime => Some(quantile(p1, &mut w.vals.to_vec())),
        DoubleExponentialSmoothing => double_exp_smoothing(w.vals, p1, p2),
        TsOfLastOverTime => w.ts.last().map(|t| *t as f64 / 1000.0),
        TsOfFirstOverTime => w.ts.first().map(|t| *t as f64 / 1000.0),
        TsOfMaxOverTime | TsOfMinOverTime => {
            let mut best: Option<(f64, i64)> = None;
            for (&t, &v) in w.ts.iter().zip(w.vals) {
                let better = match best {
                    None => true,
                    Some((b, _)) if f == TsOfMaxOverTime => v >= b || b.is_nan(),
                    Some((b, _)) => v <= b || b.is_nan(),
                };
                if better {
                    best = Some((v, t));
                }
            }
            best.map(|(_, t)| t as f64 / 1000.0)
        }
    }
}

/// `visit(step, value)` for every step whose window over one series gives `f` a value (as
/// [`window_value`] over the windows of [`for_each_window`]), until `keep_going` says no.
/// `p1`/`p2` are the scalar parameters per step (NaN past their end), `time(step)` the
/// evaluation time. `deriv` and `predict_linear` run their windows side by side
/// ([`regressions`]: the same bits), handed on every ~64k samples so the deadline still
/// bounds them. Shared by the evaluator and the range-function and subquery operators.
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_each_value(
    f: RangeFn,
    ts: &[i64],
    vals: &[f64],
    ends: &[i64],
    range_ms: i64,
    (p1, p2): (&[f64], &[f64]),
    time: impl Fn(usize) -> i64,
    keep_going: impl FnMut() -> bool,
    mut visit: impl FnMut(usize, f64),
) {
    let at = |p: &[f64], i: usize| p.get(i).copied().unwrap_or(f64::NAN);
    if let Some((is_counter, is_rate)) = f.extrapolates() {
        let mut memo = Extrapolation::default();
        for_each_window(f, ts, vals, ends, range_ms, keep_going, |i, w| {
            if let Some(v) = memo.rate(w, is_counter, is_rate) {
                visit(i, v);
            }
        });
        return;
    }
    if !matches!(f, RangeFn::Deriv | RangeFn::PredictLinear) {
        for_each_window(f, ts, vals, ends, range_ms, keep_going, |i, w| {
            if let Some(v) = window_value(f, w, at(p1, i), at(p2, i), time(i)) {
                visit(i, v);
            }
        });
        return;
    }
    let predict = f == RangeFn::PredictLinear;
    let (mut spans, mut steps, mut out, mut work) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut run = |spans: &mut Vec<Span>, steps: &mut Vec<usize>| {
        out.clear();
        regressions(ts, vals, spans, &mut out);
        for (&i, &(slope, intercept)) in steps.iter().zip(&out) {
            visit(
                i,
                if predict {
                    slope * at(p1, i) + intercept
                } else {
                    slope
                },
            );
        }
        spans.clear();
        steps.clear();
    };
    for_each_span(ts, ends, range_ms, keep_going, |i, a, b| {
        // One sample has no slope (`window_value` gives none).
        if b - a < 2 {
            return;
        }
        let intercept_t = if predict { time(i) } else { ts[a] };
        spans.push(Span { a, b, intercept_t });
        steps.push(i);
        work += b - a;
        if work >= 1 << 16 && spans.len() >= 4 {
            work = 0;
            run(&mut spans, &mut steps);
        }
    });
    run(&mut spans, &mut steps);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression windows are computed as the windows are found, not after them all: a
    /// deadline seen while finding them still bounds the work (before, one long series
    /// × many steps ran whole after the last look at the deadline).
    #[test]
    fn regressions_run_between_looks_at_the_deadline() {
        let ts: Vec<i64> = (0..100_000).map(|i| i * 1000).collect();
        let vals: Vec<f64> = (0..100_000).map(|i| (i % 977) as f64).collect();
        // 31 windows of 70k samples (the last ones fewer).
        let ends: Vec<i64> = (0..31).map(|k| 70_000_000 + k * 1_000_000).collect();
        for f in [RangeFn::Deriv, RangeFn::PredictLinear] {
            let events = std::cell::RefCell::new(Vec::new());
            for_each_value(
                f,
                &ts,
                &vals,
                &ends,
                70_000_000,
                (&[600.0; 31], &[]),
                |i| ends[i],
                || {
                    events.borrow_mut().push('k');
                    true
                },
                |i, v| {
                    let a = ts.partition_point(|&t| t <= ends[i] - 70_000_000);
                    let b = ts.partition_point(|&t| t <= ends[i]);
                    let w = Window {
                        ts: &ts[a..b],
                        vals: &vals[a..b],
                        start: 0,
                        end: ends[i],
                        range_ms: 70_000_000,
                        no_resets: false,
                    };
                    let want = window_value(f, &w, 600.0, f64::NAN, ends[i]);
                    assert_eq!(Some(v.to_bits()), want.map(f64::to_bits), "{f:?} step {i}");
                    events.borrow_mut().push('v');
                },
            );
            let e: String = events.into_inner().into_iter().collect();
            assert_eq!(e.matches('v').count(), 31, "{e}");
            let after_last_look = e.len() - 1 - e.rfind('k').expect("looked");
            assert!(after_last_look <= 8, "{f:?}: {e}");
        }
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, &mut [5.0]), 5.0);
        assert_eq!(quantile(-1.0, &mut [5.0]), f64::NEG_INFINITY);
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // 0..10 every 10 s in a 60 s window ending at 60 s: increase of 50 over 50 s sampled.
        let ts: Vec<i64> = (1..=6).map(|i| i * 10_000).collect();
        let vals: Vec<f64> = (0..6).map(|i| i as f64 * 10.0).collect();
        let w = Window {
            ts: &ts,
            vals: &vals,
            start: 0,
            end: 60_000,
            range_ms: 60_000,
            no_resets: false,
        };
        // to_start: 10 s >= 1.1*10? no -> 10 s; but counter zero point: 50*(0/50) = 0 -> 0.
        assert_eq!(extrapolated_rate(&w, true, false), Some(50.0));
    }

    #[test]
    fn window_cursor_matches_binary_search() {
        // Jittered samples, and regular ones (where each step moves the cursors as far as
        // the step before, the guess `Windows` tries first) with a gap.
        let jittered: Vec<i64> = (0..200).map(|i| i * 15_000 + (i % 7) * 100).collect();
        let regular: Vec<i64> = (0..200)
            .filter(|i| i % 50 != 17)
            .map(|i| i * 15_000)
            .collect();
        let range = 300_000;
        // Ascending ends (one per step), a change of step, repeated ends (`@`), a jump
        // back, and ends past the last sample.
        let mut ends: Vec<i64> = (0..120).map(|i| i * 30_000 - 60_000).collect();
        ends.extend((0..40).map(|i| 3_600_000 + i * 45_000));
        ends.extend([
            1_000_000, 1_000_000, 500_000, 2_000_000, 4_000_000, 9_000_000,
        ]);
        for ts in [&jittered, &regular] {
            let mut w = Windows::new(ts, range);
            for &end in &ends {
                assert_eq!(
                    w.at(end),
                    crate::promql::kernels::select::window(ts, end, range),
                    "end {end}"
                );
            }
        }
    }

    #[test]
    fn reset_points_are_every_drop() {
        for n in [0, 1, 2, 8, 9, 17, 40] {
            for k in 1..n.max(1) {
                // One drop at `k` (lane edges included), and one at every multiple of 5.
                let vals: Vec<f64> = (0..n)
                    .map(|i| {
                        if i >= k {
                            i as f64 - n as f64
                        } else {
                            i as f64
                        }
                    })
                    .collect();
                assert_eq!(reset_points(&vals), [k as u32], "n {n} k {k}");
            }
            let vals: Vec<f64> = (0..n).map(|i| (i % 5) as f64).collect();
            let want: Vec<u32> = (1..n as u32).filter(|i| i % 5 == 0).collect();
            assert_eq!(reset_points(&vals), want, "n {n}");
        }
        // NaN is no drop, before or after.
        assert!(reset_points(&[1.0, f64::NAN, 0.5, f64::NAN]).is_empty());
    }

    #[test]
    fn reset_free_windows_give_the_same_rate() {
        // A counter restarting every 23 samples.
        let vals: Vec<f64> = (0..100).map(|i| (i % 23) as f64 * 2.0 + 0.5).collect();
        let ts: Vec<i64> = (0..100).map(|i| i * 10_000 + 337).collect();
        assert_eq!(reset_points(&vals), [23, 46, 69, 92]);
        assert!(reset_points(&ts.iter().map(|&t| t as f64).collect::<Vec<_>>()).is_empty());
        let range = 60_000;
        let ends: Vec<i64> = (0..110).map(|i| i * 10_000).collect();
        let mut seen = 0;
        for_each_window(
            RangeFn::Rate,
            &ts,
            &vals,
            &ends,
            range,
            || true,
            |i, w| {
                let full = Window {
                    no_resets: false,
                    ..*w
                };
                assert_eq!(
                    extrapolated_rate(w, true, true),
                    extrapolated_rate(&full, true, true),
                    "end {}",
                    ends[i]
                );
                // The hint is set exactly where the full scan finds no reset.
                let scanned = w.vals.windows(2).any(|p| p[1] < p[0]);
                assert_eq!(w.no_resets, !scanned, "end {}", ends[i]);
                seen += usize::from(scanned);
            },
        );
        assert!(seen >= 10, "{seen} windows with a reset");
    }

    /// The rate of every window through one series' [`Extrapolation`] equals Prometheus's
    /// formula ([`extrapolation_factor`], each window on its own) bit for bit: regular and
    /// jittered samples, counters far from and near zero (the clamp), zero, negative, tiny
    /// and huge values, NaN and ±Inf, resets, steps that are and are not multiples of the
    /// interval.
    #[test]
    fn remembered_extrapolation_is_prometheus_formula() {
        let mut rng = crate::promql::kernels::TestRng(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next();
        let starts = [
            1e9,
            1e3,
            5.0,
            0.0,
            -50.0,
            1e-310,
            3e-300,
            1e300,
            f64::NAN,
            f64::INFINITY,
        ];
        let (mut windows, mut clamped, mut remembered) = (0, 0, 0);
        for case in 0..400 {
            let jitter = if case % 3 == 0 { 0 } else { 400 };
            let ts: Vec<i64> = (0..300)
                .map(|i| i * 15_000 + (next() % (jitter + 1)) as i64)
                .collect();
            let first = starts[case % starts.len()];
            let mut v = first;
            let vals: Vec<f64> = (0..300)
                .map(|i| {
                    let step = match case % 4 {
                        0 => (next() % 1000) as f64,
                        1 => (next() % 7) as f64 * 1e-3,
                        2 => (next() % 1000) as f64 * 1e290,
                        _ => (next() % 3) as f64 * 1e-312,
                    };
                    v = if next() % 97 == 0 { step } else { v + step };
                    if case % 11 == 0 && i == 150 {
                        f64::NEG_INFINITY
                    } else {
                        v
                    }
                })
                .collect();
            let range = [60_000, 300_000, 3_600_000][case % 3];
            let step = [15_000, 60_000, 37_000][case / 3 % 3];
            let ends: Vec<i64> = (0..150)
                .map(|i| i * step + (case as i64 % 5) * 1000)
                .collect();
            for f in [RangeFn::Rate, RangeFn::Increase, RangeFn::Delta] {
                let (is_counter, is_rate) = f.extrapolates().expect("extrapolates");
                let mut memo = Extrapolation::default();
                for_each_window(
                    f,
                    &ts,
                    &vals,
                    &ends,
                    range,
                    || true,
                    |i, w| {
                        let got = memo.rate(w, is_counter, is_rate);
                        if w.ts.len() < 2 {
                            assert_eq!(got, None);
                            return;
                        }
                        let n = w.ts.len();
                        let mut result = w.vals[n - 1] - w.vals[0];
                        if is_counter {
                            for p in w.vals.windows(2) {
                                if p[1] < p[0] {
                                    result += p[0];
                                }
                            }
                        }
                        let zero = is_counter.then_some((w.vals[0], result));
                        let factor =
                            extrapolation_factor(w, (w.ts[0], w.ts[n - 1]), n, zero, is_rate);
                        let plain =
                            extrapolation_factor(w, (w.ts[0], w.ts[n - 1]), n, None, is_rate);
                        clamped += usize::from(is_counter && factor.to_bits() != plain.to_bits());
                        let want = result * factor;
                        let got = got.expect("two samples give a value");
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "case {case} {f:?} step {i}: {got:e} vs {want:e}"
                        );
                        windows += 1;
                    },
                );
                remembered += usize::from(memo.key.is_some());
            }
        }
        // The cases reach both sides of the clamp, and many windows.
        assert!(
            windows > 100_000 && clamped > 1_000,
            "{windows} windows, {clamped} clamped"
        );
        assert!(remembered > 0);
    }
}
