//! Encoding PromQL results exactly as Prometheus does: timestamps as JSON numbers in
//! seconds with at most three decimals (never exponents), values as strings in Go's
//! shortest form (`'f'`, or `'e'` below 1e-6 / from 1e21), labels sorted.

use crate::model::Labels;
use crate::model::histogram::{FloatHistogram, boundary_rule};
use crate::promql::{Steps, Value};

/// `1435781451.781`, `1.05` → `1.050`, whole seconds without a fraction.
pub fn fmt_ts(ms: i64, out: &mut String) {
    let neg = ms < 0;
    let a = ms.unsigned_abs();
    if neg {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(a / 1000));
    let ms = a % 1000;
    if ms != 0 {
        let d = |x: u64| char::from(b'0' + x as u8);
        out.extend(['.', d(ms / 100), d(ms / 10 % 10), d(ms % 10)]);
    }
}

/// A sample value as Prometheus's JSON writes it.
pub fn fmt_value(v: f64, out: &mut String) {
    crate::model::go_float::write(v, crate::model::go_float::Style::Json, out);
}

fn fmt_labels(l: &Labels, out: &mut String) {
    out.push('{');
    for (i, (n, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(n).expect("string"));
        out.push(':');
        out.push_str(&serde_json::to_string(v).expect("string"));
    }
    out.push('}');
}

fn fmt_point(t: i64, v: f64, out: &mut String) {
    out.push('[');
    fmt_ts(t, out);
    out.push_str(",\"");
    fmt_value(v, out);
    out.push_str("\"]");
}

/// `[t, {"count":…,"sum":…,"buckets":[[rule,"lower","upper","count"],…]}]`, Prometheus's
/// histogram sample (buckets with a zero count left out, as Prometheus does).
fn fmt_hist_point(t: i64, h: &FloatHistogram, out: &mut String) {
    out.push('[');
    fmt_ts(t, out);
    out.push_str(",{\"count\":\"");
    fmt_value(h.count, out);
    out.push_str("\",\"sum\":\"");
    fmt_value(h.sum, out);
    out.push('"');
    let mut first = true;
    for b in h.all_buckets() {
        if b.count == 0.0 {
            continue;
        }
        out.push_str(if first { ",\"buckets\":[" } else { "," });
        first = false;
        out.push('[');
        out.push_str(&boundary_rule(&b).to_string());
        for v in [b.lower, b.upper, b.count] {
            out.push_str(",\"");
            fmt_value(v, out);
            out.push('"');
        }
        out.push(']');
    }
    if !first {
        out.push(']');
    }
    out.push_str("}]");
}

/// A series' `"values":[…]` and `"histograms":[…]` (each only when it has points).
fn fmt_points<'a>(
    floats: impl Iterator<Item = (i64, f64)>,
    hists: impl Iterator<Item = (i64, &'a FloatHistogram)>,
    out: &mut String,
) {
    let mut first = true;
    for (t, v) in floats {
        out.push_str(if first { ",\"values\":[" } else { "," });
        first = false;
        fmt_point(t, v, out);
    }
    if !first {
        out.push(']');
    }
    let mut first = true;
    for (t, h) in hists {
        out.push_str(if first { ",\"histograms\":[" } else { "," });
        first = false;
        fmt_hist_point(t, h, out);
    }
    if !first {
        out.push(']');
    }
}

/// `data` of an instant query.
pub fn instant(v: &Value, t: i64) -> String {
    let mut s = String::new();
    match v {
        Value::Scalar(x) => {
            s.push_str(r#"{"resultType":"scalar","result":"#);
            fmt_point(t, x[0], &mut s);
        }
        Value::String(x) => {
            s.push_str(r#"{"resultType":"string","result":["#);
            fmt_ts(t, &mut s);
            s.push(',');
            s.push_str(&serde_json::to_string(x).expect("string"));
            s.push(']');
        }
        Value::Vector(series) => {
            s.push_str(r#"{"resultType":"vector","result":["#);
            let mut first = true;
            for se in series {
                if !se.has(0) {
                    continue;
                }
                if !first {
                    s.push(',');
                }
                first = false;
                s.push_str(r#"{"metric":"#);
                fmt_labels(&se.labels, &mut s);
                match (se.vals[0], se.hist(0)) {
                    (Some(v), _) => {
                        s.push_str(r#","value":"#);
                        fmt_point(t, v, &mut s);
                    }
                    (None, Some(h)) => {
                        s.push_str(r#","histogram":"#);
                        fmt_hist_point(t, h, &mut s);
                    }
                    (None, None) => {}
                }
                s.push('}');
            }
            s.push(']');
        }
        Value::Matrix(series) => {
            s.push_str(r#"{"resultType":"matrix","result":["#);
            for (i, se) in series.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(r#"{"metric":"#);
                fmt_labels(&se.labels, &mut s);
                fmt_points(
                    se.ts.iter().copied().zip(se.vals.iter().copied()),
                    se.hts.iter().copied().zip(se.hists.iter().map(|h| &**h)),
                    &mut s,
                );
                s.push('}');
            }
            s.push(']');
        }
    }
    s.push('}');
    s
}

/// `data` of a range query: a matrix sorted by labels.
pub fn range(v: &Value, steps: Steps) -> String {
    RangePieces::new(v, steps).collect()
}

/// The size of the pieces [`RangePieces`] writes: a large answer is written while it is
/// sent instead of whole first (a 6 h range over 270 series, the peer benchmark's
/// `http_5xx_share_by_path`, was a 6 MB string grown by doubling and then copied into the
/// envelope: 13 MiB more resident memory for that query; docs/benchmarks.md, "Session 28").
pub const PIECE: usize = 64 << 10;

/// `data` of a range query in pieces of about [`PIECE`] bytes (a series is never cut), in
/// the order [`range`] writes them.
pub struct RangePieces<V> {
    v: V,
    steps: Steps,
    /// The series to write, sorted by labels.
    order: Vec<usize>,
    next: usize,
    started: bool,
    done: bool,
}

impl<V: std::borrow::Borrow<Value>> RangePieces<V> {
    pub fn new(v: V, steps: Steps) -> Self {
        let order = match v.borrow() {
            Value::Vector(series) => {
                let mut order: Vec<usize> = (0..series.len())
                    .filter(|&i| !series[i].is_empty())
                    .collect();
                order.sort_by(|&a, &b| series[a].labels.cmp(&series[b].labels));
                order
            }
            _ => vec![],
        };
        RangePieces {
            v,
            steps,
            order,
            next: 0,
            started: false,
            done: false,
        }
    }
}

impl<V: std::borrow::Borrow<Value>> Iterator for RangePieces<V> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        let steps = self.steps;
        let mut s = String::new();
        if !self.started {
            self.started = true;
            s.push_str(r#"{"resultType":"matrix","result":["#);
            if let Value::Scalar(x) = self.v.borrow() {
                s.push_str(r#"{"metric":{},"values":["#);
                for (i, v) in x.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    fmt_point(steps.at(i), *v, &mut s);
                }
                s.push_str("]}");
            }
        }
        if let Value::Vector(series) = self.v.borrow() {
            while s.len() < PIECE && self.next < self.order.len() {
                let se = &series[self.order[self.next]];
                if self.next > 0 {
                    s.push(',');
                }
                self.next += 1;
                s.push_str(r#"{"metric":"#);
                fmt_labels(&se.labels, &mut s);
                fmt_points(
                    se.vals
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| v.map(|v| (steps.at(i), v))),
                    (0..se.hists.len()).filter_map(|i| se.hist(i).map(|h| (steps.at(i), &**h))),
                    &mut s,
                );
                s.push('}');
            }
        }
        if self.next == self.order.len() {
            s.push_str("]}");
            self.done = true;
        }
        Some(s)
    }
}

/// A label set as a JSON object.
pub fn labels_json(l: &Labels) -> String {
    let mut s = String::new();
    fmt_labels(l, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f64) -> String {
        let mut s = String::new();
        fmt_value(x, &mut s);
        s
    }

    fn t(ms: i64) -> String {
        let mut s = String::new();
        fmt_ts(ms, &mut s);
        s
    }

    #[test]
    fn values_like_go() {
        assert_eq!(v(1.0), "1");
        assert_eq!(v(0.1), "0.1");
        assert_eq!(v(1e-7), "1e-07");
        assert_eq!(v(1.5e21), "1.5e+21");
        assert_eq!(v(123456789012.0), "123456789012");
        assert_eq!(v(f64::NAN), "NaN");
        assert_eq!(v(f64::NEG_INFINITY), "-Inf");
        assert_eq!(v(-0.000001), "-0.000001");
    }

    #[test]
    fn timestamps_never_use_exponents() {
        assert_eq!(t(1_435_781_451_781), "1435781451.781");
        assert_eq!(t(1050), "1.050");
        assert_eq!(t(1_435_781_451_000), "1435781451");
        assert_eq!(t(-1500), "-1.500");
        assert_eq!(t(5), "0.005");
    }

    /// A range answer larger than a piece comes in several, each cut between series and
    /// at least [`PIECE`] long but the last; together they are the matrix, every series in
    /// label order with every point (an empty series left out); a small answer, a scalar
    /// and an empty vector are one piece.
    #[test]
    fn range_pieces_join_into_the_matrix() {
        use crate::model::Labels;
        use crate::promql::value::Series;
        let steps = Steps {
            start: 0,
            end: 299_000,
            step: 1_000,
        };
        let series: Vec<Series> = (0..400)
            .rev()
            .map(|i| {
                let labels =
                    Labels::new(vec![("i".to_string(), format!("{i:03}"))]).expect("labels");
                let mut se = Series::new(labels, 300);
                if i != 7 {
                    for k in 0..300 {
                        se.vals[k] = (k % 3 != 0).then_some(i as f64 + k as f64 / 8.0);
                    }
                }
                se
            })
            .collect();
        let v = Value::Vector(series);
        let pieces: Vec<String> = RangePieces::new(&v, steps).collect();
        assert!(pieces.len() > 2, "{} pieces", pieces.len());
        assert!(pieces[..pieces.len() - 1].iter().all(|p| p.len() >= PIECE));
        let all: String = pieces.concat();
        let parsed: serde_json::Value = serde_json::from_str(&all).expect("one JSON value");
        let result = parsed["result"].as_array().expect("result");
        assert_eq!(parsed["resultType"], "matrix");
        assert_eq!(result.len(), 399);
        for (n, se) in result.iter().enumerate() {
            let i = if n < 7 { n } else { n + 1 };
            assert_eq!(se["metric"]["i"], format!("{i:03}"));
            let values = se["values"].as_array().expect("values");
            assert_eq!(values.len(), 200);
            assert_eq!(values[0][1], format!("{}", i as f64 + 0.125));
        }
        let small = Value::Vector(vec![]);
        assert_eq!(
            RangePieces::new(&small, steps).collect::<Vec<_>>(),
            vec![r#"{"resultType":"matrix","result":[]}"#.to_string()]
        );
        let scalar = Value::Scalar(vec![1.0, 2.0]);
        let one: Vec<String> = RangePieces::new(
            &scalar,
            Steps {
                start: 0,
                end: 1_000,
                step: 1_000,
            },
        )
        .collect();
        assert_eq!(
            one,
            vec![
                r#"{"resultType":"matrix","result":[{"metric":{},"values":[[0,"1"],[1,"2"]]}]}"#
                    .to_string()
            ]
        );
    }
}
