//! Compares an evaluation result with a script's expectations, as Prometheus's runner does.

use std::collections::HashMap;

use super::Outcome;
use std::sync::Arc;

use super::histogram_notation;
use super::script::{Eval, EvalKind, Expected, MsgMatch, Point, Points};
use crate::model::histogram::FloatHistogram;
use crate::model::{Labels, is_stale_marker};
use crate::promql::{Annotations, PromqlError, Value};

/// `util/almost.Equal` with epsilon 1e-6, plus the stale-marker rule.
pub fn almost_equal(e: f64, a: f64) -> bool {
    if is_stale_marker(e) || is_stale_marker(a) {
        return is_stale_marker(e) && is_stale_marker(a);
    }
    if e.is_nan() && a.is_nan() {
        return true;
    }
    if e == a {
        return true;
    }
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    let abs_sum = e.abs() + a.abs();
    let diff = (e - a).abs();
    if e == 0.0 || a == 0.0 || abs_sum < MIN_NORMAL {
        return diff < 1e-6 * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < 1e-6
}

fn msg_matches(m: &MsgMatch, text: &str) -> bool {
    match m {
        MsgMatch::Any => true,
        MsgMatch::Exact(s) => s == text,
        MsgMatch::Regex(r) => regex::Regex::new(r).is_ok_and(|re| re.is_match(text)),
    }
}

/// A result sample: a float or a native histogram.
#[derive(Debug, Clone)]
enum Got {
    F(f64),
    H(Arc<FloatHistogram>),
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Got::F(v) => write!(f, "{v}"),
            Got::H(h) => f.write_str(&histogram_notation::describe(h)),
        }
    }
}

fn fmt_point(p: &Point) -> String {
    match p {
        Point::Float(v) => v.to_string(),
        Point::Hist(h, _) => histogram_notation::describe(h),
    }
}

fn fmt_points(p: &[(i64, Got)]) -> String {
    p.iter()
        .map(|(t, v)| format!("{v}@{t}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_want(p: &[(i64, &Point)]) -> String {
    p.iter()
        .map(|(t, v)| format!("{}@{t}", fmt_point(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why an expected point and a result point differ, if they do.
fn point_differs(e: &Point, g: &Got) -> Option<String> {
    match (e, g) {
        (Point::Float(e), Got::F(g)) => {
            (!almost_equal(*e, *g)).then(|| format!("expected {e}, got {g}"))
        }
        (Point::Hist(e, stated), Got::H(g)) => {
            histogram_notation::matches(e, *stated, g, almost_equal).err()
        }
        (Point::Float(e), Got::H(g)) => Some(format!(
            "expected float {e}, got histogram {}",
            histogram_notation::describe(g)
        )),
        (Point::Hist(e, _), Got::F(g)) => Some(format!(
            "expected histogram {}, got float {g}",
            histogram_notation::describe(e)
        )),
    }
}

/// A vector series' points at step times `t(i)`: floats and histograms.
fn series_points(s: crate::promql::Series, t: impl Fn(usize) -> i64) -> Vec<(i64, Got)> {
    let mut out = Vec::new();
    for i in 0..s.vals.len() {
        if let Some(v) = s.vals[i] {
            out.push((t(i), Got::F(v)));
        } else if let Some(h) = s.hist(i) {
            out.push((t(i), Got::H(h.clone())));
        }
    }
    out
}

/// A matrix series' points, floats and histograms in time order.
fn range_points(s: crate::promql::RangeSeries) -> Vec<(i64, Got)> {
    let mut out: Vec<(i64, Got)> =
        s.ts.into_iter()
            .zip(s.vals)
            .map(|(t, v)| (t, Got::F(v)))
            .chain(s.hts.into_iter().zip(s.hists).map(|(t, h)| (t, Got::H(h))))
            .collect();
    out.sort_by_key(|(t, _)| *t);
    out
}

/// Two-way cover: every expectation matches some annotation and every annotation some
/// expectation (Prometheus's rule when any `expect warn`/`expect info` line is present).
fn annotations_differ(kind: &str, want: &[MsgMatch], none: bool, got: &[String]) -> Option<String> {
    if none && !got.is_empty() {
        return Some(format!("expected no {kind}, got {got:?}"));
    }
    if want.is_empty() {
        return None;
    }
    if let Some(w) = want.iter().find(|w| !got.iter().any(|g| msg_matches(w, g))) {
        return Some(format!("expected {kind} matching {w:?}, got {got:?}"));
    }
    if let Some(g) = got.iter().find(|g| !want.iter().any(|w| msg_matches(w, g))) {
        return Some(format!("unexpected {kind} {g:?}"));
    }
    None
}

pub fn check(ev: &Eval, result: Result<Value, PromqlError>, ann: &Annotations) -> Outcome {
    let value = match (result, &ev.fail) {
        (Err(e), Some(m)) => {
            return if msg_matches(m, &e.to_string()) {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("expected error matching {m:?}, got error: {e}"))
            };
        }
        (Err(e), None) => return Outcome::Fail(format!("unexpected error: {e}")),
        (Ok(_), Some(m)) => {
            return Outcome::Fail(format!("expected an error matching {m:?}, got success"));
        }
        (Ok(v), None) => v,
    };
    if let Some(why) = annotations_differ("warning", &ev.warn, ev.no_warn, &ann.warnings) {
        return Outcome::Fail(why);
    }
    if let Some(why) = annotations_differ("info", &ev.info, ev.no_info, &ann.infos) {
        return Outcome::Fail(why);
    }
    match (&ev.expected, value) {
        (Expected::String(s), Value::String(got)) => {
            if *s == got {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("expected string {s:?}, got {got:?}"))
            }
        }
        (Expected::Scalar(e), Value::Scalar(v)) if matches!(ev.kind, EvalKind::Instant { .. }) => {
            if almost_equal(*e, v[0]) {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("expected scalar {e}, got {}", v[0]))
            }
        }
        (Expected::Scalar(e), other) => {
            Outcome::Fail(format!("expected scalar {e}, got {}", describe(&other)))
        }
        (Expected::String(s), other) => {
            Outcome::Fail(format!("expected string {s:?}, got {}", describe(&other)))
        }
        (Expected::Series(exp), value) => compare_series(ev, exp, value),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Scalar(s) => format!("scalar {:?}", s),
        Value::String(s) => format!("string {s:?}"),
        Value::Vector(vs) => format!("vector of {} series", vs.len()),
        Value::Matrix(m) => format!("matrix of {} series", m.len()),
    }
}

/// A result series as labels and `(t, v)` points.
type Normalized = (Labels, Vec<(i64, Got)>);
/// Timestamp of expected position k.
type StepTime = Box<dyn Fn(usize) -> i64>;

fn compare_series(ev: &Eval, exp: &[(Labels, Points)], value: Value) -> Outcome {
    // Normalise the result to (labels, points (t, v)).
    let (got, step_ts): (Vec<Normalized>, StepTime) = match (&ev.kind, value) {
        (EvalKind::Instant { at }, Value::Vector(vs)) => {
            if ev.range_vector.is_some() {
                return Outcome::Fail("expected a range vector, got an instant vector".into());
            }
            let at = *at;
            (
                vs.into_iter()
                    .filter_map(|s| {
                        let labels = s.labels.clone();
                        let pts = series_points(s, |_| at);
                        (!pts.is_empty()).then_some((labels, pts))
                    })
                    .collect(),
                Box::new(move |_| at),
            )
        }
        (EvalKind::Instant { at }, Value::Scalar(v)) => {
            let at = *at;
            (
                vec![(Labels::default(), vec![(at, Got::F(v[0]))])],
                Box::new(move |_| at),
            )
        }
        (EvalKind::Instant { .. }, Value::Matrix(m)) => {
            let Some((start, _, step)) = ev.range_vector else {
                return Outcome::Fail("got a range vector, expected an instant vector".into());
            };
            (
                m.into_iter()
                    .map(|s| (s.labels.clone(), range_points(s)))
                    .collect(),
                Box::new(move |k| start + k as i64 * step),
            )
        }
        (EvalKind::Range { start, step, .. }, Value::Vector(vs)) => {
            let (start, step) = (*start, *step);
            let mut out = Vec::new();
            for s in vs {
                let labels = s.labels.clone();
                let pts = series_points(s, |i| start + i as i64 * step);
                if !pts.is_empty() {
                    out.push((labels, pts));
                }
            }
            (out, Box::new(move |k| start + k as i64 * step))
        }
        (EvalKind::Range { start, step, .. }, Value::Scalar(v)) => {
            let (start, step) = (*start, *step);
            let pts = v
                .iter()
                .enumerate()
                .map(|(i, v)| (start + i as i64 * step, Got::F(*v)))
                .collect();
            (
                vec![(Labels::default(), pts)],
                Box::new(move |k| start + k as i64 * step),
            )
        }
        (_, other) => return Outcome::Fail(format!("unexpected result {}", describe(&other))),
    };
    let is_instant = matches!(ev.kind, EvalKind::Instant { .. }) && ev.range_vector.is_none();
    if ev.ordered && is_instant {
        if got.len() != exp.len() {
            return Outcome::Fail(format!(
                "expected {} series, got {}: {:?}",
                exp.len(),
                got.len(),
                labels_of(&got)
            ));
        }
        for (k, ((el, ep), (gl, gp))) in exp.iter().zip(&got).enumerate() {
            if el != gl {
                return Outcome::Fail(format!("ordered result {k}: expected {el}, got {gl}"));
            }
            if let Some(why) = points_differ(ep, gp, &*step_ts, true) {
                return Outcome::Fail(format!("{el}: {why}"));
            }
        }
        return Outcome::Pass;
    }
    let mut by_labels: HashMap<&Labels, &Vec<(i64, Got)>> = HashMap::new();
    for (l, p) in &got {
        if by_labels.insert(l, p).is_some() {
            return Outcome::Fail(format!("duplicate series {l} in result"));
        }
    }
    for (el, ep) in exp {
        let Some(gp) = by_labels.remove(el) else {
            return Outcome::Fail(format!(
                "expected series {el} not in result; got {:?}",
                labels_of(&got)
            ));
        };
        if let Some(why) = points_differ(ep, gp, &*step_ts, is_instant) {
            return Outcome::Fail(format!("{el}: {why}"));
        }
    }
    if let Some((l, p)) = by_labels.into_iter().next() {
        return Outcome::Fail(format!("unexpected series {l} {} in result", fmt_points(p)));
    }
    Outcome::Pass
}

fn labels_of(got: &[Normalized]) -> Vec<String> {
    got.iter().map(|(l, _)| l.to_string()).collect()
}

fn points_differ(
    exp: &Points,
    got: &[(i64, Got)],
    ts: &dyn Fn(usize) -> i64,
    instant: bool,
) -> Option<String> {
    if instant {
        let (Some(Some(e)), [(_, g)]) = (exp.first(), got) else {
            return Some(format!(
                "expected one value {exp:?}, got {}",
                fmt_points(got)
            ));
        };
        return point_differs(e, g);
    }
    let want: Vec<(i64, &Point)> = exp
        .iter()
        .enumerate()
        .filter_map(|(k, v)| v.as_ref().map(|v| (ts(k), v)))
        .collect();
    if want.len() != got.len() {
        return Some(format!(
            "expected {} points [{}], got {} [{}]",
            want.len(),
            fmt_want(&want),
            got.len(),
            fmt_points(got)
        ));
    }
    for ((wt, wv), (gt, gv)) in want.iter().zip(got) {
        if wt != gt {
            return Some(format!(
                "expected [{}], got [{}]",
                fmt_want(&want),
                fmt_points(got)
            ));
        }
        if let Some(why) = point_differs(wv, gv) {
            return Some(format!("at {wt}: {why}"));
        }
    }
    None
}

/// Whether two results agree: the same kind, the same series (by labels), values equal as
/// [`almost_equal`] says at every point.
pub fn same_value(a: Value, b: Value) -> Result<(), String> {
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => almost_equal(x, y),
        (None, None) => true,
        _ => false,
    };
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => {
            if x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| close(Some(*p), Some(*q))) {
                Ok(())
            } else {
                Err(format!("scalars differ: {x:?} vs {y:?}"))
            }
        }
        (Value::String(x), Value::String(y)) if x == y => Ok(()),
        (Value::Vector(mut x), Value::Vector(mut y)) => {
            x.sort_by(|p, q| p.labels.cmp(&q.labels));
            y.sort_by(|p, q| p.labels.cmp(&q.labels));
            if x.len() != y.len() {
                return Err(format!("{} series vs {}", x.len(), y.len()));
            }
            for (p, q) in x.iter().zip(&y) {
                if p.labels != q.labels {
                    return Err(format!("series {} vs {}", p.labels, q.labels));
                }
                if p.vals.len() != q.vals.len()
                    || !p.vals.iter().zip(&q.vals).all(|(u, v)| close(*u, *v))
                {
                    return Err(format!("{}: {:?} vs {:?}", p.labels, p.vals, q.vals));
                }
                if (0..p.vals.len()).any(|i| p.hist(i) != q.hist(i)) {
                    return Err(format!("{}: histograms differ", p.labels));
                }
            }
            Ok(())
        }
        (Value::Matrix(x), Value::Matrix(y)) => {
            if x == y {
                Ok(())
            } else {
                Err("matrices differ".into())
            }
        }
        (x, y) => Err(format!("{} vs {}", x.type_name(), y.type_name())),
    }
}
