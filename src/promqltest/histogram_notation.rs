//! The promqltest notation for native histograms, `{{schema:0 sum:5 count:4 buckets:[1 2 1]}}`
//! (FORMAT.md §4), and the histogram comparison used when checking `eval` results.

use crate::model::histogram::{CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Span};

/// Parses `{{…}}` (braces included). Keys may come in any order and each at most once;
/// missing keys mean zero/empty. Returns the histogram and whether `counter_reset_hint`
/// was stated, because only a stated hint is checked when comparing.
pub fn parse(text: &str) -> Result<(FloatHistogram, bool), String> {
    let t = text.trim();
    let inner = t
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        .ok_or_else(|| format!("histogram must be enclosed in {{{{ }}}}: {text:?}"))?;

    let mut h = FloatHistogram::empty();
    let mut hint_stated = false;
    let mut seen: Vec<&str> = Vec::new();
    let mut positive: (i32, Vec<f64>) = (0, Vec::new());
    let mut negative: (i32, Vec<f64>) = (0, Vec::new());

    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("expected key:value in histogram, found {rest:?}"))?;
        let key = rest[..colon].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("invalid histogram key {key:?}"));
        }
        if seen.contains(&key) {
            return Err(format!("duplicate key \"{key}\" in histogram"));
        }
        seen.push(key);
        rest = rest[colon + 1..].trim_start();

        let value: &str;
        if let Some(after) = rest.strip_prefix('[') {
            let close = after
                .find(']')
                .ok_or_else(|| format!("unterminated bucket list for {key}"))?;
            value = &rest[..close + 2];
            rest = &after[close + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = &rest[..end];
            rest = &rest[end..];
        }
        if value.is_empty() {
            return Err(format!("missing value for histogram key {key}"));
        }
        // Items must be separated by whitespace.
        if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
            return Err(format!("unexpected {rest:?} after {key}:{value}"));
        }
        rest = rest.trim_start();

        match key {
            "schema" => h.schema = parse_int(key, value)?,
            "sum" => h.sum = parse_float(key, value)?,
            "count" => h.count = parse_float(key, value)?,
            "z_bucket" => h.zero_count = parse_float(key, value)?,
            "z_bucket_w" => h.zero_threshold = parse_float(key, value)?,
            "buckets" => positive.1 = parse_list(key, value)?,
            "offset" => positive.0 = parse_int(key, value)?,
            "n_buckets" => negative.1 = parse_list(key, value)?,
            "n_offset" => negative.0 = parse_int(key, value)?,
            "custom_values" => h.custom_values = parse_list(key, value)?,
            "counter_reset_hint" => {
                hint_stated = true;
                h.hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    other => return Err(format!("error parsing counter_reset_hint: {other:?}")),
                }
            }
            other => return Err(format!("unknown histogram key {other:?}")),
        }
    }

    let span = |offset: i32, b: &[f64]| {
        if b.is_empty() {
            Vec::new()
        } else {
            vec![Span {
                offset,
                length: b.len() as u32,
            }]
        }
    };
    h.positive_spans = span(positive.0, &positive.1);
    h.positive_buckets = positive.1;
    h.negative_spans = span(negative.0, &negative.1);
    h.negative_buckets = negative.1;
    Ok((h, hint_stated))
}

fn parse_int(key: &str, v: &str) -> Result<i32, String> {
    let digits = v.strip_prefix('+').unwrap_or(v);
    digits
        .parse::<i32>()
        .map_err(|_| format!("error parsing {key} number: {v:?}"))
}

/// Numbers as PromQL reads them: decimal or float syntax, an optional sign, `Inf`/`NaN`
/// in any case, and hexadecimal integers.
fn parse_float(key: &str, v: &str) -> Result<f64, String> {
    let err = || format!("error parsing {key} number: {v:?}");
    let (neg, body) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    if body.is_empty() || body.starts_with(['+', '-']) {
        return Err(err());
    }
    let lower = body.to_ascii_lowercase();
    let magnitude = if lower == "inf" {
        f64::INFINITY
    } else if lower == "nan" {
        f64::NAN
    } else if let Some(hex) = lower.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).map_err(|_| err())? as f64
    } else if body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        body.parse::<f64>().map_err(|_| err())?
    } else {
        return Err(err());
    };
    Ok(if neg { -magnitude } else { magnitude })
}

fn parse_list(key: &str, v: &str) -> Result<Vec<f64>, String> {
    let inner = v
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("error parsing {key} float array: {v:?}"))?;
    inner
        .split_whitespace()
        .map(|item| parse_float(key, item))
        .collect()
}

/// Prints a histogram in the test notation (as Go's TestExpression, but never panicking):
/// compacted, fields at their zero value left out, so `{{}}` for an empty histogram.
pub fn describe(h: &FloatHistogram) -> String {
    let mut m = h.clone();
    m.compact(usize::MAX);
    let mut parts: Vec<String> = Vec::new();
    if m.schema != 0 {
        parts.push(format!("schema:{}", m.schema));
    }
    if m.count != 0.0 {
        parts.push(format!("count:{}", crate::model::go_float::g(m.count)));
    }
    if m.sum != 0.0 {
        parts.push(format!("sum:{}", crate::model::go_float::g(m.sum)));
    }
    if m.zero_count != 0.0 {
        parts.push(format!(
            "z_bucket:{}",
            crate::model::go_float::g(m.zero_count)
        ));
    }
    if m.zero_threshold != 0.0 {
        parts.push(format!(
            "z_bucket_w:{}",
            crate::model::go_float::g(m.zero_threshold)
        ));
    }
    if m.uses_custom_buckets() || !m.custom_values.is_empty() {
        parts.push(format!("custom_values:{}", list(&m.custom_values)));
    }
    match m.hint {
        CounterResetHint::Unknown => {}
        CounterResetHint::CounterReset => parts.push("counter_reset_hint:reset".into()),
        CounterResetHint::NotCounterReset => parts.push("counter_reset_hint:not_reset".into()),
        CounterResetHint::Gauge => parts.push("counter_reset_hint:gauge".into()),
    }
    for (spans, buckets, offset_key, buckets_key) in [
        (&m.positive_spans, &m.positive_buckets, "offset", "buckets"),
        (
            &m.negative_spans,
            &m.negative_buckets,
            "n_offset",
            "n_buckets",
        ),
    ] {
        // compact(usize::MAX) leaves at most one span per side.
        if let Some(first) = spans.first().filter(|s| s.offset != 0) {
            parts.push(format!("{offset_key}:{}", first.offset));
        }
        if !buckets.is_empty() {
            parts.push(format!("{buckets_key}:{}", list(buckets)));
        }
    }
    format!("{{{{{}}}}}", parts.join(" "))
}

fn list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| crate::model::go_float::g(*x)).collect();
    format!("[{}]", items.join(" "))
}

/// FORMAT.md "Histogram comparison": both sides compacted; schema and zero threshold
/// identical; count, sum, zero count and bucket values compared with `almost_equal`;
/// custom bounds equal for schema −53; spans equal once zero-length spans are merged away;
/// the hint only if the expected histogram stated it. The error names the first mismatch.
pub fn matches(
    expected: &FloatHistogram,
    hint_stated: bool,
    actual: &FloatHistogram,
    almost_equal: impl Fn(f64, f64) -> bool,
) -> Result<(), String> {
    let mut e = expected.clone();
    e.compact(0);
    let mut a = actual.clone();
    a.compact(0);
    let mismatch = |what: String| {
        Err(format!(
            "{what}: expected {}, got {}",
            describe(expected),
            describe(actual)
        ))
    };

    if e.schema != a.schema {
        return mismatch(format!("schema {} != {}", e.schema, a.schema));
    }
    for (name, ev, av) in [("count", e.count, a.count), ("sum", e.sum, a.sum)] {
        if !almost_equal(ev, av) {
            return mismatch(format!(
                "{name} {} != {}",
                crate::model::go_float::g(ev),
                crate::model::go_float::g(av)
            ));
        }
    }
    if e.schema == CUSTOM_BUCKETS_SCHEMA && e.custom_values != a.custom_values {
        return mismatch(format!(
            "custom bounds {} != {}",
            list(&e.custom_values),
            list(&a.custom_values)
        ));
    }
    #[allow(clippy::float_cmp)]
    if e.zero_threshold != a.zero_threshold {
        return mismatch(format!(
            "zero threshold {} != {}",
            crate::model::go_float::g(e.zero_threshold),
            crate::model::go_float::g(a.zero_threshold)
        ));
    }
    if !almost_equal(e.zero_count, a.zero_count) {
        return mismatch(format!(
            "zero count {} != {}",
            crate::model::go_float::g(e.zero_count),
            crate::model::go_float::g(a.zero_count)
        ));
    }
    for (side, es, eb, as_, ab) in [
        (
            "negative",
            &e.negative_spans,
            &e.negative_buckets,
            &a.negative_spans,
            &a.negative_buckets,
        ),
        (
            "positive",
            &e.positive_spans,
            &e.positive_buckets,
            &a.positive_spans,
            &a.positive_buckets,
        ),
    ] {
        if merged_spans(es) != merged_spans(as_) {
            return mismatch(format!("{side} bucket layout differs"));
        }
        if eb.len() != ab.len() || eb.iter().zip(ab.iter()).any(|(x, y)| !almost_equal(*x, *y)) {
            return mismatch(format!("{side} buckets {} != {}", list(eb), list(ab)));
        }
    }
    if hint_stated && e.hint != a.hint {
        return mismatch(format!("counter reset hint {:?} != {:?}", e.hint, a.hint));
    }
    Ok(())
}

/// Spans with zero-length spans folded into the next one's offset.
fn merged_spans(spans: &[Span]) -> Vec<(i64, u32)> {
    let mut out = Vec::new();
    let mut offset = 0i64;
    for s in spans {
        offset += s.offset as i64;
        if s.length > 0 {
            out.push((offset, s.length));
            offset = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn almost(a: f64, b: f64) -> bool {
        if a.is_nan() && b.is_nan() || a == b {
            return true;
        }
        (a - b).abs() / (a.abs() + b.abs()).min(f64::MAX) < 1e-6
    }

    fn p(s: &str) -> FloatHistogram {
        parse(s).unwrap().0
    }

    #[test]
    fn parses_all_keys() {
        let (h, hint) = parse(
            "{{schema:1 sum:-5.5 count:4 z_bucket:1 z_bucket_w:0.001 buckets:[1 2 1] offset:-2 n_buckets:[ 3 +Inf ] n_offset:3 counter_reset_hint:gauge}}",
        )
        .unwrap();
        assert!(hint);
        assert_eq!(h.schema, 1);
        assert_eq!(
            (h.sum, h.count, h.zero_count, h.zero_threshold),
            (-5.5, 4.0, 1.0, 0.001)
        );
        assert_eq!(
            h.positive_spans,
            vec![Span {
                offset: -2,
                length: 3
            }]
        );
        assert_eq!(h.positive_buckets, vec![1.0, 2.0, 1.0]);
        assert_eq!(
            h.negative_spans,
            vec![Span {
                offset: 3,
                length: 2
            }]
        );
        assert_eq!(h.negative_buckets, vec![3.0, f64::INFINITY]);
        assert_eq!(h.hint, CounterResetHint::Gauge);
    }

    #[test]
    fn parses_empty_custom_and_special_values() {
        let (h, hint) = parse("{{}}").unwrap();
        assert!(!hint);
        assert_eq!(h, FloatHistogram::empty());
        let (h, _) = parse(" {{ }} ").unwrap();
        assert_eq!(h, FloatHistogram::empty());

        let h = p("{{schema:-53 sum:5 count:4 custom_values:[5 10] buckets:[1 2 1]}}");
        assert!(h.uses_custom_buckets());
        assert_eq!(h.custom_values, vec![5.0, 10.0]);
        assert!(h.validate().is_ok());

        let h = p("{{sum:NaN count:.5 z_bucket:1e-3 buckets:[0x10]}}");
        assert!(h.sum.is_nan());
        assert_eq!((h.count, h.zero_count), (0.5, 0.001));
        assert_eq!(h.positive_buckets, vec![16.0]);
        assert_eq!(p("{{sum:-inf}}").sum, f64::NEG_INFINITY);
        // An offset without buckets creates no span.
        assert!(p("{{offset:3}}").positive_spans.is_empty());
        for (text, hint) in [
            ("unknown", CounterResetHint::Unknown),
            ("reset", CounterResetHint::CounterReset),
            ("not_reset", CounterResetHint::NotCounterReset),
        ] {
            let (h, stated) = parse(&format!("{{{{counter_reset_hint:{text}}}}}")).unwrap();
            assert!(stated);
            assert_eq!(h.hint, hint);
        }
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "{schema:0}",
            "{{schema:0",
            "{{schema:0 schema:1}}",
            "{{foo:1}}",
            "{{schema:x}}",
            "{{schema:1.5}}",
            "{{buckets:[1 2}}",
            "{{buckets:1}}",
            "{{sum:}}",
            "{{sum:1 2}}",
            "{{counter_reset_hint:maybe}}",
            "{{buckets:[1 abc]}}",
            "{{sum:--1}}",
        ] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
        assert_eq!(
            parse("{{sum:1 sum:2}}").unwrap_err(),
            "duplicate key \"sum\" in histogram"
        );
    }

    #[test]
    fn describe_round_trips() {
        for text in [
            "{{}}",
            "{{schema:1 count:4 sum:-5.5 z_bucket:1 z_bucket_w:0.001 counter_reset_hint:gauge offset:-2 buckets:[1 2 1] n_offset:3 n_buckets:[3 1]}}",
            "{{schema:-53 count:4 sum:5 custom_values:[5 10] buckets:[1 2 1]}}",
            "{{count:1e+06 sum:1.5e-05 buckets:[1e+06]}}",
        ] {
            let (h, _) = parse(text).unwrap();
            assert_eq!(describe(&h), text);
            assert_eq!(parse(&describe(&h)).unwrap().0, h);
        }
        // Spans with gaps are printed as one span with explicit empty buckets.
        let mut h = FloatHistogram::empty();
        h.positive_spans = vec![
            Span {
                offset: 1,
                length: 1,
            },
            Span {
                offset: 2,
                length: 1,
            },
        ];
        h.positive_buckets = vec![1.0, 2.0];
        assert_eq!(describe(&h), "{{offset:1 buckets:[1 0 0 2]}}");
    }

    #[test]
    fn comparison_rules() {
        let (exp, hint) = parse("{{schema:0 count:4 sum:10 buckets:[1 2 1]}}").unwrap();
        let mut act = exp.clone();
        act.sum = 10.000001;
        act.hint = CounterResetHint::Gauge;
        assert_eq!(matches(&exp, hint, &act, almost), Ok(()));

        // Empty buckets and zero-length spans are compacted away on both sides.
        let mut padded = exp.clone();
        padded.positive_spans = vec![
            Span {
                offset: -1,
                length: 1,
            },
            Span {
                offset: 0,
                length: 0,
            },
            Span {
                offset: 0,
                length: 4,
            },
        ];
        padded.positive_buckets = vec![0.0, 1.0, 2.0, 1.0, 0.0];
        assert_eq!(matches(&exp, hint, &padded, almost), Ok(()));

        let mut other = exp.clone();
        other.schema = 1;
        assert!(
            matches(&exp, hint, &other, almost)
                .unwrap_err()
                .starts_with("schema 0 != 1")
        );

        let mut other = exp.clone();
        other.positive_buckets[1] = 2.1;
        let err = matches(&exp, hint, &other, almost).unwrap_err();
        assert!(
            err.contains("positive buckets [1 2 1] != [1 2.1 1]"),
            "{err}"
        );

        let mut other = exp.clone();
        other.positive_spans[0].offset = 1;
        assert!(
            matches(&exp, hint, &other, almost)
                .unwrap_err()
                .contains("layout")
        );

        let mut other = exp.clone();
        other.zero_threshold = 1e-9;
        assert!(matches(&exp, hint, &other, almost).is_err());

        let mut other = exp.clone();
        other.count = 5.0;
        assert!(
            matches(&exp, hint, &other, almost)
                .unwrap_err()
                .starts_with("count 4 != 5")
        );

        // The hint is compared only when the expectation states it.
        let (exp_g, stated) = parse("{{count:1 buckets:[1] counter_reset_hint:gauge}}").unwrap();
        let (act_g, _) = parse("{{count:1 buckets:[1]}}").unwrap();
        assert!(matches(&exp_g, stated, &act_g, almost).is_err());
        assert!(matches(&exp_g, false, &act_g, almost).is_ok());

        // Custom bounds must be equal.
        let c1 = p("{{schema:-53 count:1 custom_values:[5 10] buckets:[1]}}");
        let c2 = p("{{schema:-53 count:1 custom_values:[5] buckets:[1]}}");
        assert!(
            matches(&c1, false, &c2, almost)
                .unwrap_err()
                .contains("custom bounds")
        );
        assert!(matches(&c1, false, &c1.clone(), almost).is_ok());
    }
}
