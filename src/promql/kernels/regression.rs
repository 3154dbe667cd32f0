//! Least-squares regression over windows (`deriv`, `predict_linear`), as Prometheus
//! computes it (`linearRegression`): four Kahan–Neumaier sums per window, in sample order.
//!
//! A range query asks for one regression per step, over windows that overlap (a 1 h window
//! every 30 s sees each sample 120 times), and a window's four sums are chains of dependent
//! additions: one window at a time, the processor mostly waits for the previous addition
//! (`predict_linear(x[1h], …)` over 6 h took ~15 cycles a sample visited). [`regressions`]
//! sums several windows side by side instead. Each window is still summed alone and in
//! its own order, with the same operations, so every result is the one
//! [`linear_regression`] gives, bit for bit (the tests compare them); only the additions of
//! different windows overlap, and with AVX2 they share instructions.

use super::sum::kahan_inc;

/// One window `[a, b)` of a series' samples and the time its intercept is taken at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub a: usize,
    pub b: usize,
    pub intercept_t: i64,
}

/// Least-squares slope and intercept at `intercept_t`.
pub(crate) fn linear_regression(ts: &[i64], vals: &[f64], intercept_t: i64) -> (f64, f64) {
    let mut s = Sums::default();
    let init_y = vals[0];
    let mut const_y = true;
    for (i, (&t, &v)) in ts.iter().zip(vals).enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        let x = (t - intercept_t) as f64 / 1000.0;
        (s.sx, s.cx) = kahan_inc(x, s.sx, s.cx);
        (s.sy, s.cy) = kahan_inc(v, s.sy, s.cy);
        (s.sxy, s.cxy) = kahan_inc(x * v, s.sxy, s.cxy);
        (s.sx2, s.cx2) = kahan_inc(x * x, s.sx2, s.cx2);
    }
    finish(ts.len() as f64, init_y, const_y, &s)
}

/// The slope and intercept of every span (each at least one sample), in order, appended
/// to `out`: what [`linear_regression`] gives for each.
pub(crate) fn regressions(ts: &[i64], vals: &[f64], spans: &[Span], out: &mut Vec<(f64, f64)>) {
    out.reserve(spans.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let breaks = Breaks::of(ts, spans);
        let mut xs: Option<XSums> = None;
        let mut groups = spans.chunks_exact(avx2::LANES);
        for g in &mut groups {
            // Four windows at one regular set of offsets: their Σx and Σx², once.
            let key = breaks.key(ts, &g[0]);
            if let Some(key) = key.filter(|_| g[1..].iter().all(|s| breaks.key(ts, s) == key)) {
                let xs = match &mut xs {
                    Some(xs) if xs.key == key => xs,
                    other => other.insert(XSums::of(ts, g[0], key)),
                };
                // SAFETY: the processor has AVX2, checked just above.
                unsafe { avx2::lanes_y(vals, g, xs, out) };
                continue;
            }
            // SAFETY: as above.
            unsafe { avx2::lanes(ts, vals, g, out) };
        }
        return one_by_one(ts, vals, groups.remainder(), out);
    }
    one_by_one(ts, vals, spans, out)
}

/// Where the spacing of a series' samples changes: the indices `i` (over the spans' reach)
/// with `ts[i] - ts[i - 1] != ts[i - 1] - ts[i - 2]`. A window without one inside lies at
/// offsets `first, first + d, first + 2d, …` from its intercept time.
struct Breaks(Vec<usize>);

impl Breaks {
    fn of(ts: &[i64], spans: &[Span]) -> Breaks {
        let lo = spans.iter().map(|s| s.a).min().unwrap_or(0);
        let hi = spans.iter().map(|s| s.b).max().unwrap_or(0);
        let mut out = Vec::new();
        for i in lo + 2..hi {
            if ts[i] - ts[i - 1] != ts[i - 1] - ts[i - 2] {
                out.push(i);
            }
        }
        Breaks(out)
    }

    /// `(samples, first offset, spacing)` of a span at regular offsets, `None` otherwise:
    /// spans with the same key have the same offsets.
    fn key(&self, ts: &[i64], s: &Span) -> Option<(usize, i64, i64)> {
        let k = self.0.partition_point(|&i| i < s.a + 2);
        if self.0.get(k).is_some_and(|&i| i < s.b) {
            return None;
        }
        let d = if s.b - s.a >= 2 {
            ts[s.a + 1] - ts[s.a]
        } else {
            0
        };
        Some((s.b - s.a, ts[s.a].wrapping_sub(s.intercept_t), d))
    }
}

/// Σx and Σx² (with their compensations) of a window, and its `x`s, for windows whose
/// samples lie at the same offsets from their intercept time: regular samples at a step
/// that is a multiple of their interval, where every window of a series has the same
/// `x`s (`predict_linear` takes them from the evaluation time, `deriv` from the first
/// sample). Those windows then sum only `y` and `xy`, with `x` read instead of divided:
/// the same operations on the same numbers, so the same bits.
struct XSums {
    /// The offsets' [`Breaks::key`].
    key: (usize, i64, i64),
    /// `x` of each sample (its offset in seconds, divided as Prometheus divides it).
    xs: Vec<f64>,
    sums: Sums,
}

impl XSums {
    fn of(ts: &[i64], s: Span, key: (usize, i64, i64)) -> XSums {
        let xs: Vec<f64> = ts[s.a..s.b]
            .iter()
            .map(|&t| (t - s.intercept_t) as f64 / 1000.0)
            .collect();
        let mut sums = Sums::default();
        for &x in &xs {
            (sums.sx, sums.cx) = kahan_inc(x, sums.sx, sums.cx);
            (sums.sx2, sums.cx2) = kahan_inc(x * x, sums.sx2, sums.cx2);
        }
        XSums { key, xs, sums }
    }
}

fn one_by_one(ts: &[i64], vals: &[f64], spans: &[Span], out: &mut Vec<(f64, f64)>) {
    for s in spans {
        out.push(linear_regression(
            &ts[s.a..s.b],
            &vals[s.a..s.b],
            s.intercept_t,
        ));
    }
}

/// The running sums of one window: Σx, Σy, Σxy, Σx² and their compensations.
#[derive(Default, Clone, Copy)]
struct Sums {
    sx: f64,
    cx: f64,
    sy: f64,
    cy: f64,
    sxy: f64,
    cxy: f64,
    sx2: f64,
    cx2: f64,
}

/// Slope and intercept from a window's sums (`n` samples), as Prometheus ends
/// `linearRegression`: a constant window has slope 0 (NaN when the constant is infinite).
fn finish(n: f64, init_y: f64, const_y: bool, s: &Sums) -> (f64, f64) {
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (s.sx + s.cx, s.sy + s.cy, s.sxy + s.cxy, s.sx2 + s.cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

/// Four windows in the four lanes of AVX2 registers: their common length in lockstep,
/// then each one's tail alone. Every lane does exactly what [`linear_regression`] does to
/// its window, in the same order: IEEE additions, multiplications and divisions round
/// alike in any width, nothing is fused, and Kahan–Neumaier's branch is a blend between
/// the two compensations both computed (`kahan_inc`'s infinite-sum case likewise).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Span, Sums, XSums, finish, kahan_inc};
    use std::arch::x86_64::*;

    pub(super) const LANES: usize = 4;

    /// The running sum and compensation of one of the four sums, for every lane.
    #[derive(Clone, Copy)]
    struct Acc {
        sum: __m256d,
        c: __m256d,
    }

    #[target_feature(enable = "avx2")]
    fn add(acc: &mut Acc, inc: __m256d) {
        let sign = _mm256_set1_pd(-0.0);
        let s = acc.sum;
        let t = _mm256_add_pd(s, inc);
        let s_big =
            _mm256_cmp_pd::<_CMP_GE_OQ>(_mm256_andnot_pd(sign, s), _mm256_andnot_pd(sign, inc));
        let d_s = _mm256_add_pd(_mm256_sub_pd(s, t), inc);
        let d_inc = _mm256_add_pd(_mm256_sub_pd(inc, t), s);
        let d = _mm256_blendv_pd(d_inc, d_s, s_big);
        let inf =
            _mm256_cmp_pd::<_CMP_EQ_OQ>(_mm256_andnot_pd(sign, t), _mm256_set1_pd(f64::INFINITY));
        acc.c = _mm256_blendv_pd(_mm256_add_pd(acc.c, d), _mm256_setzero_pd(), inf);
        acc.sum = t;
    }

    /// [`lanes`] for four windows at the offsets of `xs` (every window as long as it):
    /// only Σy and Σxy are summed, Σx and Σx² are the ones `xs` has.
    #[target_feature(enable = "avx2")]
    pub(super) fn lanes_y(vals: &[f64], g: &[Span], xs: &XSums, out: &mut Vec<(f64, f64)>) {
        let len = xs.xs.len();
        let v: [&[f64]; LANES] = std::array::from_fn(|l| &vals[g[l].a..g[l].a + len]);
        let init: [f64; LANES] = std::array::from_fn(|l| v[l][0]);
        let init_y = _mm256_set_pd(init[3], init[2], init[1], init[0]);
        let zero = Acc {
            sum: _mm256_setzero_pd(),
            c: _mm256_setzero_pd(),
        };
        let (mut sy, mut sxy) = (zero, zero);
        let mut same = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
        for (j, &x) in xs.xs.iter().enumerate() {
            let x = _mm256_set1_pd(x);
            let y = _mm256_set_pd(v[3][j], v[2][j], v[1][j], v[0][j]);
            if j > 0 {
                same = _mm256_and_pd(same, _mm256_cmp_pd::<_CMP_EQ_OQ>(y, init_y));
            }
            add(&mut sy, y);
            add(&mut sxy, _mm256_mul_pd(x, y));
        }
        let same = _mm256_movemask_pd(same);
        for (l, s) in g.iter().enumerate() {
            let sums = Sums {
                sy: lane(sy.sum, l),
                cy: lane(sy.c, l),
                sxy: lane(sxy.sum, l),
                cxy: lane(sxy.c, l),
                ..xs.sums
            };
            out.push(finish(
                (s.b - s.a) as f64,
                init[l],
                same & (1 << l) != 0,
                &sums,
            ));
        }
    }

    /// One Kahan–Neumaier step in every lane: (sum, compensation) of each after adding
    /// `inc` (for the tests).
    #[cfg(test)]
    #[target_feature(enable = "avx2")]
    pub(super) fn step4(inc: [f64; 4], sum: [f64; 4], c: [f64; 4]) -> [(f64, f64); 4] {
        let set = |a: [f64; 4]| _mm256_set_pd(a[3], a[2], a[1], a[0]);
        let mut acc = Acc {
            sum: set(sum),
            c: set(c),
        };
        add(&mut acc, set(inc));
        std::array::from_fn(|l| (lane(acc.sum, l), lane(acc.c, l)))
    }

    fn lane(v: __m256d, l: usize) -> f64 {
        let mut a = [0.0; LANES];
        // SAFETY: `a` has room for the four doubles; storeu takes any alignment.
        unsafe { _mm256_storeu_pd(a.as_mut_ptr(), v) };
        a[l]
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn lanes(ts: &[i64], vals: &[f64], g: &[Span], out: &mut Vec<(f64, f64)>) {
        let common = g.iter().map(|s| s.b - s.a).min().unwrap_or(0);
        let t: [&[i64]; LANES] = std::array::from_fn(|l| &ts[g[l].a..g[l].a + common]);
        let v: [&[f64]; LANES] = std::array::from_fn(|l| &vals[g[l].a..g[l].a + common]);
        let ic: [i64; LANES] = std::array::from_fn(|l| g[l].intercept_t);
        let init: [f64; LANES] = std::array::from_fn(|l| vals[g[l].a]);
        let init_y = _mm256_set_pd(init[3], init[2], init[1], init[0]);
        let thousand = _mm256_set1_pd(1000.0);
        let zero = Acc {
            sum: _mm256_setzero_pd(),
            c: _mm256_setzero_pd(),
        };
        let (mut sx, mut sy, mut sxy, mut sx2) = (zero, zero, zero, zero);
        // All ones while every lane's samples after its first equal its first.
        let mut same = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
        for j in 0..common {
            let d = |l: usize| (t[l][j] - ic[l]) as f64;
            let x = _mm256_div_pd(_mm256_set_pd(d(3), d(2), d(1), d(0)), thousand);
            let y = _mm256_set_pd(v[3][j], v[2][j], v[1][j], v[0][j]);
            if j > 0 {
                same = _mm256_and_pd(same, _mm256_cmp_pd::<_CMP_EQ_OQ>(y, init_y));
            }
            add(&mut sx, x);
            add(&mut sy, y);
            add(&mut sxy, _mm256_mul_pd(x, y));
            add(&mut sx2, _mm256_mul_pd(x, x));
        }
        let same = _mm256_movemask_pd(same);
        for (l, s) in g.iter().enumerate() {
            let mut sums = Sums {
                sx: lane(sx.sum, l),
                cx: lane(sx.c, l),
                sy: lane(sy.sum, l),
                cy: lane(sy.c, l),
                sxy: lane(sxy.sum, l),
                cxy: lane(sxy.c, l),
                sx2: lane(sx2.sum, l),
                cx2: lane(sx2.c, l),
            };
            let mut same_l = same & (1 << l) != 0;
            for i in s.a + common..s.b {
                let y = vals[i];
                same_l &= i == s.a || y == init[l];
                let x = (ts[i] - s.intercept_t) as f64 / 1000.0;
                (sums.sx, sums.cx) = kahan_inc(x, sums.sx, sums.cx);
                (sums.sy, sums.cy) = kahan_inc(y, sums.sy, sums.cy);
                (sums.sxy, sums.cxy) = kahan_inc(x * y, sums.sxy, sums.cxy);
                (sums.sx2, sums.cx2) = kahan_inc(x * x, sums.sx2, sums.cx2);
            }
            out.push(finish((s.b - s.a) as f64, init[l], same_l, &sums));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::kernels::TestRng as Rng;

    /// Values that exercise the sums: gauges at several magnitudes, counters, constants
    /// (the slope-0 path), and NaN and infinities (the compensation reset and NaN slopes).
    fn series(rng: &mut Rng, kind: u64, n: usize) -> (Vec<i64>, Vec<f64>) {
        let mut t = 1_700_000_000_000i64 + rng.below(1_000_000) as i64;
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        let mut c = 0.0;
        for i in 0..n {
            t += 1 + rng.below(30_000) as i64;
            let r = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            let v = match kind {
                0 => 1e12 * r + 3e9,
                1 => {
                    c += r * 1e3;
                    c
                }
                2 => 42.5,
                3 if i % 17 == 5 => f64::NAN,
                3 => r - 0.5,
                4 if i % 29 == 11 => f64::INFINITY,
                4 if i % 31 == 3 => f64::NEG_INFINITY,
                4 => r * 1e300,
                5 => f64::INFINITY,
                _ => (r * 1e6).round() / 1e3,
            };
            ts.push(t);
            vals.push(v);
        }
        (ts, vals)
    }

    fn same(a: (f64, f64), b: (f64, f64)) -> bool {
        a.0.to_bits() == b.0.to_bits() && a.1.to_bits() == b.1.to_bits()
    }

    #[test]
    fn side_by_side_windows_give_each_window_s_own_bits() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for kind in 0..7 {
            let (ts, vals) = series(&mut rng, kind, 600);
            // Overlapping windows of uneven lengths (so lanes have tails), intercepts at
            // the window end (predict_linear) or at its first sample (deriv).
            // First, in one group of lanes: windows that start at a NaN (kind 3) or an
            // infinity (kind 4), one sample long or a few.
            let mut spans: Vec<Span> = [(5, 6), (5, 9), (11, 13), (3, 4)]
                .iter()
                .map(|&(a, b)| Span {
                    a,
                    b,
                    intercept_t: ts[a],
                })
                .collect();
            for k in 0..93 {
                let a = rng.below(500) as usize;
                let len = 1 + rng.below(100) as usize;
                let b = (a + len).min(ts.len());
                let intercept_t = if k % 2 == 0 {
                    ts[a]
                } else {
                    ts[b - 1] + 15_000
                };
                spans.push(Span { a, b, intercept_t });
            }
            let mut out = Vec::new();
            regressions(&ts, &vals, &spans, &mut out);
            assert_eq!(out.len(), spans.len());
            for (i, s) in spans.iter().enumerate() {
                let want = linear_regression(&ts[s.a..s.b], &vals[s.a..s.b], s.intercept_t);
                assert!(
                    same(out[i], want),
                    "kind {kind} span {s:?}: {:?} vs {want:?}",
                    out[i]
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 7 * 97);
    }

    /// Regular samples (the windows of a range query share their offsets, so most groups
    /// of four sum only `y` and `xy`) with a few moved, some missing, and values of every
    /// kind: each window's bits are still [`linear_regression`]'s.
    #[test]
    fn windows_at_the_same_offsets_give_each_window_s_own_bits() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut checked, mut shared) = (0, 0);
        for kind in 0..7 {
            let (_, vals) = series(&mut rng, kind, 2_000);
            let mut ts: Vec<i64> = (0..2_000).map(|i| 1_700_000_000_000 + i * 15_000).collect();
            // One sample 3 ms late, a gap, and samples 5 s later from 1,600 on (as many
            // to a window, at other offsets): windows over them differ from the rest.
            ts[700] += 3;
            ts.remove(1_300);
            for t in &mut ts[1_600..] {
                *t += 5_000;
            }
            let vals = &vals[..ts.len()];
            for (range, step, predict) in [
                (3_600_000, 30_000, true),
                (300_000, 15_000, false),
                (3_600_000, 37_000, true),
            ] {
                let ends: Vec<i64> = (0..900).map(|k| ts[0] + range + k * step).collect();
                let mut spans = Vec::new();
                crate::promql::kernels::range_fns::for_each_span(
                    &ts,
                    &ends,
                    range,
                    || true,
                    |i, a, b| {
                        let intercept_t = if predict { ends[i] } else { ts[a] };
                        spans.push(Span { a, b, intercept_t });
                    },
                );
                let mut out = Vec::new();
                regressions(&ts, vals, &spans, &mut out);
                assert_eq!(out.len(), spans.len());
                let breaks = Breaks::of(&ts, &spans);
                let first = breaks.key(&ts, &spans[0]);
                for (s, got) in spans.iter().zip(&out) {
                    let want = linear_regression(&ts[s.a..s.b], &vals[s.a..s.b], s.intercept_t);
                    assert!(
                        same(*got, want),
                        "kind {kind} span {s:?}: {got:?} vs {want:?}"
                    );
                    checked += 1;
                    shared += usize::from(first.is_some() && breaks.key(&ts, s) == first);
                }
            }
        }
        // Most windows share the first one's offsets; some do not.
        assert!(
            shared > checked / 2 && shared < checked,
            "{shared} of {checked}"
        );
    }

    /// A span has a key exactly when its samples are evenly spaced, and spans with one key
    /// have the same offsets from their intercepts: every span of a short series with a
    /// late sample, a gap, and a change of interval.
    #[test]
    fn keys_are_the_offsets_of_evenly_spaced_spans() {
        let mut ts: Vec<i64> = (0..40).map(|i| i * 15_000).collect();
        ts[9] += 3;
        ts.remove(20);
        let base = ts[29];
        for t in &mut ts[30..] {
            *t += (*t - base) / 3;
        }
        let mut spans = Vec::new();
        for a in 0..ts.len() {
            for b in a + 1..=ts.len() {
                for intercept_t in [ts[a], ts[b - 1] + 7] {
                    spans.push(Span { a, b, intercept_t });
                }
            }
        }
        let breaks = Breaks::of(&ts, &spans);
        let offsets =
            |s: &Span| -> Vec<i64> { ts[s.a..s.b].iter().map(|t| t - s.intercept_t).collect() };
        let mut by_key = std::collections::HashMap::new();
        for s in &spans {
            let o = offsets(s);
            let even = o.windows(3).all(|w| w[2] - w[1] == w[1] - w[0]);
            let key = breaks.key(&ts, s);
            assert_eq!(key.is_some(), even, "{s:?}");
            if let Some(key) = key {
                assert_eq!(by_key.entry(key).or_insert_with(|| o.clone()), &o, "{s:?}");
            }
        }
    }

    #[test]
    fn vector_step_is_kahan_inc() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("SKIPPED: this processor has no AVX2 (regressions run one by one)");
            return;
        }
        let xs = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e300,
            -1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            0.1,
            3e-17,
        ];
        let cs = [0.0, 1e-17, -2.5, f64::NAN];
        for &inc in &xs {
            for &sum in &xs {
                // SAFETY: the processor has AVX2, checked above.
                let got = unsafe { avx2::step4([inc; 4], [sum; 4], cs) };
                for (l, &c) in cs.iter().enumerate() {
                    let want = kahan_inc(inc, sum, c);
                    assert!(
                        same(got[l], want),
                        "{inc} + {sum} (c {c}): {:?} vs {want:?}",
                        got[l]
                    );
                }
            }
        }
    }
}
