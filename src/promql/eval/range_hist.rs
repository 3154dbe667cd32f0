//! Range functions over windows that hold native histograms (Prometheus 3 semantics).
//! Windows of floats only go through the float kernels (`range_fns`); this module decides,
//! per function, what a window with histograms yields — a histogram (`rate`, `sum_over_time`,
//! …), a float over the floats only (with an info), a count of both kinds, or nothing
//! (with the annotation Prometheus words).

use std::sync::Arc;

use crate::model::histogram::{CounterResetHint, FloatHistogram, annotation};
use crate::promql::engine::Engine;
use crate::promql::kernels::range_fns::{self as rf, RangeFn, Window};
use crate::promql::value::Hist;

/// What a window yields.
pub(super) enum Point {
    F(f64),
    H(Hist),
}

/// One window's samples: floats `(fts, fv)` and histograms `(hts, hv)`, each ascending.
pub(super) struct Mixed<'a> {
    pub fts: &'a [i64],
    pub fv: &'a [f64],
    pub hts: &'a [i64],
    pub hv: &'a [Hist],
    pub start: i64,
    pub end: i64,
    pub range_ms: i64,
}

impl Mixed<'_> {
    fn floats(&self) -> Window<'_> {
        Window {
            ts: self.fts,
            vals: self.fv,
            start: self.start,
            end: self.end,
            range_ms: self.range_ms,
            no_resets: false,
        }
    }
}

fn warn_mixed(e: &Engine, name: &str) {
    e.warn(format!(
        "encountered a mix of histograms and floats for metric name {name:?}"
    ));
}

fn info_ignored(e: &Engine, name: &str) {
    e.info(format!(
        "ignored histograms in a range containing both floats and histograms for metric name {name:?}"
    ));
}

fn warn_exp_custom(e: &Engine, name: &str) {
    e.annotate(&format!(
        "{} {name:?}",
        annotation::MIXED_EXPONENTIAL_CUSTOM_WARNING
    ));
}

fn info_reconciled(e: &Engine, during: &str) {
    e.annotate(&format!(
        "{} {during}",
        annotation::MISMATCHED_CUSTOM_BUCKETS_INFO
    ));
}

/// The value of `f` over a window holding at least one histogram (`name`: the series'
/// metric name, for annotations).
pub(super) fn window_value(
    e: &Engine,
    f: RangeFn,
    name: &str,
    w: &Mixed,
    p1: f64,
    p2: f64,
    t: i64,
) -> Option<Point> {
    use RangeFn::*;
    let floats = || rf::window_value(f, &w.floats(), p1, p2, t).map(Point::F);
    match f {
        Rate | Increase | Delta => {
            if !w.fv.is_empty() {
                warn_mixed(e, name);
                return None;
            }
            rate(e, w, name, f != Delta, f == Rate).map(Point::H)
        }
        Irate | Idelta => instant(e, w, name, f == Irate),
        Deriv | PredictLinear | DoubleExponentialSmoothing => {
            if w.fv.is_empty() {
                return None;
            }
            info_ignored(e, name);
            if w.fv.len() < 2 { None } else { floats() }
        }
        MinOverTime | MaxOverTime | TsOfMinOverTime | TsOfMaxOverTime | QuantileOverTime
        | StddevOverTime | StdvarOverTime | MadOverTime => {
            if w.fv.is_empty() {
                return None;
            }
            info_ignored(e, name);
            floats()
        }
        SumOverTime | AvgOverTime => {
            if !w.fv.is_empty() {
                warn_mixed(e, name);
                return None;
            }
            let items: Vec<(&Hist, &str)> = w.hv.iter().map(|h| (h, name)).collect();
            super::histogram_agg::sum(e, &items, f == AvgOverTime).map(Point::H)
        }
        CountOverTime => Some(Point::F((w.fv.len() + w.hv.len()) as f64)),
        PresentOverTime => Some(Point::F(1.0)),
        LastOverTime => match (w.fts.last(), w.hts.last()) {
            (Some(ft), Some(ht)) if ht < ft => w.fv.last().map(|v| Point::F(*v)),
            _ => w.hv.last().map(|h| Point::H(h.clone())),
        },
        FirstOverTime => match (w.fts.first(), w.hts.first()) {
            (Some(ft), Some(ht)) if ft < ht => w.fv.first().map(|v| Point::F(*v)),
            _ => w.hv.first().map(|h| Point::H(h.clone())),
        },
        TsOfLastOverTime => {
            let t = w.fts.last().into_iter().chain(w.hts.last()).max()?;
            Some(Point::F(*t as f64 / 1000.0))
        }
        TsOfFirstOverTime => {
            let t = w.fts.first().into_iter().chain(w.hts.first()).min()?;
            Some(Point::F(*t as f64 / 1000.0))
        }
        Resets | Changes => Some(Point::F(resets_or_changes(w, f == Resets))),
    }
}

/// `rate`/`increase` (counters) and `delta` of histograms: the last minus the first, plus
/// what each counter reset lost, extrapolated like floats (Prometheus's `histogramRate`).
fn rate(e: &Engine, w: &Mixed, name: &str, is_counter: bool, is_rate: bool) -> Option<Hist> {
    let pts = w.hv;
    if pts.len() < 2 {
        return None;
    }
    let (first, last) = (&pts[0], &pts[pts.len() - 1]);
    let gauge = |h: &FloatHistogram| h.hint == CounterResetHint::Gauge;
    if is_counter && (gauge(first) || gauge(last)) {
        e.warn(format!(
            "this native histogram metric is not a counter: {name:?}"
        ));
    }
    let mut prev: FloatHistogram = if is_counter && pts[1].detect_reset(first) {
        // The first sample only marks where the counter started again.
        FloatHistogram {
            schema: pts[1].schema,
            custom_values: pts[1].custom_values.clone(),
            ..FloatHistogram::empty()
        }
    } else {
        FloatHistogram::clone(first)
    };
    let custom = prev.uses_custom_buckets();
    if last.uses_custom_buckets() != custom {
        warn_exp_custom(e, name);
        return None;
    }
    let mut min_schema = prev.schema.min(last.schema);
    if is_counter {
        for h in &pts[1..pts.len() - 1] {
            if gauge(h) {
                e.warn(format!(
                    "this native histogram metric is not a counter: {name:?}"
                ));
            }
            min_schema = min_schema.min(h.schema);
            if h.uses_custom_buckets() != custom {
                warn_exp_custom(e, name);
                return None;
            }
        }
    }
    let mut h = last.copy_to_schema(min_schema).ok()?;
    match h.sub(&prev) {
        Ok(o) if o.nhcb_bounds_reconciled => info_reconciled(e, "subtraction"),
        Ok(_) => {}
        Err(_) => {
            warn_exp_custom(e, name);
            return None;
        }
    }
    if is_counter {
        for cur in &pts[1..] {
            if cur.detect_reset(&prev) {
                match h.add(&prev) {
                    Ok(o) if o.nhcb_bounds_reconciled => info_reconciled(e, "addition"),
                    Ok(_) => {}
                    Err(_) => {
                        warn_exp_custom(e, name);
                        return None;
                    }
                }
            }
            prev = FloatHistogram::clone(cur);
        }
    } else if !gauge(first) || !gauge(last) {
        e.warn(format!(
            "this native histogram metric is not a gauge: {name:?}"
        ));
    }
    h.hint = CounterResetHint::Gauge;
    h.compact(0);
    let factor = rf::extrapolation_factor(
        &w.floats(),
        (w.hts[0], w.hts[pts.len() - 1]),
        pts.len(),
        is_counter.then_some((first.count, h.count)),
        is_rate,
    );
    h.mul(factor);
    Some(Arc::new(h))
}

/// `irate`/`idelta`: the last two samples of either kind.
fn instant(e: &Engine, w: &Mixed, name: &str, is_rate: bool) -> Option<Point> {
    enum S<'a> {
        F(f64),
        H(&'a Hist),
    }
    let mut last: Vec<(i64, S)> = Vec::with_capacity(4);
    let nf = w.fts.len();
    for i in nf.saturating_sub(2)..nf {
        last.push((w.fts[i], S::F(w.fv[i])));
    }
    let nh = w.hts.len();
    for i in nh.saturating_sub(2)..nh {
        last.push((w.hts[i], S::H(&w.hv[i])));
    }
    last.sort_by_key(|(t, _)| *t);
    if last.len() < 2 {
        return None;
    }
    let (t1, s1) = &last[last.len() - 1];
    let (t0, s0) = &last[last.len() - 2];
    if t1 == t0 {
        return None;
    }
    let secs = (t1 - t0) as f64 / 1000.0;
    match (s0, s1) {
        (S::F(v0), S::F(v1)) => {
            let mut r = if is_rate && v1 < v0 { *v1 } else { v1 - v0 };
            if is_rate {
                r /= secs;
            }
            Some(Point::F(r))
        }
        (S::H(h0), S::H(h1)) => {
            let gauge = |h: &FloatHistogram| h.hint == CounterResetHint::Gauge;
            if is_rate && (gauge(h0) || gauge(h1)) {
                e.warn(format!(
                    "this native histogram metric is not a counter: {name:?}"
                ));
            }
            if !is_rate && (!gauge(h0) || !gauge(h1)) {
                e.warn(format!(
                    "this native histogram metric is not a gauge: {name:?}"
                ));
            }
            let mut r = FloatHistogram::clone(h1);
            if !(is_rate && h1.detect_reset(h0)) {
                match r.sub(h0) {
                    Ok(o) if o.nhcb_bounds_reconciled => info_reconciled(e, "subtraction"),
                    Ok(_) => {}
                    Err(_) => {
                        warn_exp_custom(e, name);
                        return None;
                    }
                }
            }
            r.hint = CounterResetHint::Gauge;
            r.compact(0);
            if is_rate {
                r.div(secs);
            }
            Some(Point::H(Arc::new(r)))
        }
        _ => {
            warn_mixed(e, name);
            None
        }
    }
}

/// `resets`/`changes` over floats and histograms in time order: a change of kind counts
/// as one; histograms reset by `detect_reset` and change unless `equals`.
fn resets_or_changes(w: &Mixed, resets: bool) -> f64 {
    enum S<'a> {
        F(f64),
        H(&'a Hist),
    }
    let mut all: Vec<(i64, S)> = Vec::with_capacity(w.fts.len() + w.hts.len());
    all.extend(w.fts.iter().zip(w.fv).map(|(t, v)| (*t, S::F(*v))));
    all.extend(w.hts.iter().zip(w.hv).map(|(t, h)| (*t, S::H(h))));
    all.sort_by_key(|(t, _)| *t);
    let mut n = 0.0;
    for pair in all.windows(2) {
        let hit = match (&pair[0].1, &pair[1].1) {
            (S::F(a), S::F(b)) => {
                if resets {
                    b < a
                } else {
                    a != b && !(a.is_nan() && b.is_nan())
                }
            }
            (S::H(a), S::H(b)) => {
                if resets {
                    b.detect_reset(a)
                } else {
                    !b.equals(a)
                }
            }
            _ => true,
        };
        if hit {
            n += 1.0;
        }
    }
    n
}
