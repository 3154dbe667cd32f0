//! Parser of Prometheus's promqltest script language (see `../shared/promql-tests/FORMAT.md`).

use std::sync::Arc;

use super::histogram_notation;
use crate::duration::parse_duration_ms;
use crate::model::histogram::FloatHistogram;
use crate::model::{Labels, METRIC_NAME, STALE_NAN_BITS};

/// One sample of a series description: a float, or a native histogram and whether the
/// notation stated its counter-reset hint (only then is the hint compared).
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    Float(f64),
    Hist(Arc<FloatHistogram>, bool),
}

/// A series description's samples: `None` = no sample at that position.
pub type Points = Vec<Option<Point>>;

#[derive(Debug, Clone)]
pub enum Command {
    Clear,
    Load {
        line: usize,
        interval: i64,
        series: Vec<(Labels, Points)>,
        histograms: bool,
        /// Series with native-histogram samples.
        histogram_series: Vec<Labels>,
        /// `load_with_nhcb`: classic histograms also become custom-bucket native ones.
        nhcb: bool,
    },
    Eval(Eval),
}

#[derive(Debug, Clone)]
pub enum EvalKind {
    Instant { at: i64 },
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Debug, Clone)]
pub enum MsgMatch {
    Any,
    Exact(String),
    Regex(String),
}

#[derive(Debug, Clone)]
pub enum Expected {
    Series(Vec<(Labels, Points)>),
    Scalar(f64),
    String(String),
}

#[derive(Debug, Clone)]
pub struct Eval {
    pub line: usize,
    pub expr: String,
    pub kind: EvalKind,
    pub fail: Option<MsgMatch>,
    pub ordered: bool,
    pub warn: Vec<MsgMatch>,
    pub info: Vec<MsgMatch>,
    pub no_warn: bool,
    pub no_info: bool,
    /// `expect range vector from … to … step …`.
    pub range_vector: Option<(i64, i64, i64)>,
    pub expected: Expected,
    /// The body mentions native histograms (`{{…}}`).
    pub histograms: bool,
}

fn dur(s: &str, line: usize) -> Result<i64, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-') {
        return parse_duration_ms(rest)
            .map(|v| -v)
            .map_err(|e| format!("line {line}: {e}"));
    }
    parse_duration_ms(s).map_err(|e| format!("line {line}: {e}"))
}

pub fn parse(text: &str) -> Result<Vec<Command>, String> {
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        let lno = i + 1;
        if line.is_empty() {
            i += 1;
            continue;
        }
        let word = line.split_whitespace().next().unwrap_or("");
        // The block: following lines up to the first empty one.
        let mut j = i + 1;
        while j < lines.len() && !lines[j].is_empty() {
            j += 1;
        }
        let body: Vec<(usize, &str)> = (i + 1..j).map(|k| (k + 1, lines[k].as_str())).collect();
        match word {
            "clear" => {
                // `clear` takes no block: the next line may be a command.
                cmds.push(Command::Clear);
                i += 1;
                continue;
            }
            "load" | "load_with_nhcb" => {
                let interval = dur(line[word.len()..].trim(), lno)?;
                let mut series: Vec<(Labels, Points)> = Vec::new();
                let mut histogram_series: Vec<Labels> = Vec::new();
                let mut histograms = word == "load_with_nhcb";
                for (ln, b) in &body {
                    if b.contains("{{") {
                        histograms = true;
                    }
                    // Start-timestamp lines (`name{…}@st …`) annotate the next line's samples;
                    // start timestamps are not stored, the samples themselves are.
                    if b.split_whitespace()
                        .next()
                        .is_some_and(|t| t.ends_with("@st"))
                    {
                        continue;
                    }
                    let (labels, points) =
                        parse_series(b).map_err(|e| format!("line {ln}: {e}"))?;
                    if b.contains("{{") {
                        histogram_series.push(labels.clone());
                    }
                    if let Some(existing) = series.iter_mut().find(|(l, _)| *l == labels) {
                        existing.1 = points;
                    } else {
                        series.push((labels, points));
                    }
                }
                cmds.push(Command::Load {
                    line: lno,
                    interval,
                    series,
                    histograms,
                    histogram_series,
                    nhcb: word == "load_with_nhcb",
                });
            }
            w if w.starts_with("eval") => {
                cmds.push(Command::Eval(parse_eval(lno, line, &body)?));
                // A scalar expectation ends the block early; the rest is ignored by Prometheus
                // too (it would be an error there), so we simply move on to `j`.
            }
            other => return Err(format!("line {lno}: unknown command {other:?}")),
        }
        i = j;
    }
    Ok(cmds)
}

static RANGE_VECTOR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^(.+)\s+to\s+(.+)\s+step\s+(.+)$").expect("valid regex")
});

fn parse_eval(lno: usize, line: &str, body: &[(usize, &str)]) -> Result<Eval, String> {
    let inst = regex::Regex::new(
        r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$",
    )
    .expect("re");
    let range = regex::Regex::new(
        r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
    )
    .expect("re");
    let mut ev = Eval {
        line: lno,
        expr: String::new(),
        kind: EvalKind::Instant { at: 0 },
        fail: None,
        ordered: false,
        warn: vec![],
        info: vec![],
        no_warn: false,
        no_info: false,
        range_vector: None,
        expected: Expected::Series(vec![]),
        histograms: false,
    };
    let legacy;
    if let Some(c) = inst.captures(line) {
        legacy = c.get(1).map(|m| m.as_str().to_string());
        ev.kind = EvalKind::Instant {
            at: dur(c.get(2).map_or("0", |m| m.as_str()), lno)?,
        };
        ev.expr = c[3].to_string();
    } else if let Some(c) = range.captures(line) {
        legacy = c.get(1).map(|m| m.as_str().to_string());
        let (start, end, step) = (dur(&c[2], lno)?, dur(&c[3], lno)?, dur(&c[4], lno)?);
        if end < start {
            return Err(format!("line {lno}: end before start"));
        }
        ev.kind = EvalKind::Range { start, end, step };
        ev.expr = c[5].to_string();
    } else {
        return Err(format!("line {lno}: invalid eval command"));
    }
    match legacy.as_deref() {
        Some("fail") => ev.fail = Some(MsgMatch::Any),
        Some("warn") => ev.warn.push(MsgMatch::Any),
        Some("info") => ev.info.push(MsgMatch::Any),
        Some("ordered") => ev.ordered = true,
        _ => {}
    }
    let mut series = Vec::new();
    for (ln, b) in body {
        if b.contains("{{") {
            ev.histograms = true;
        }
        if let Some(rest) = b.strip_prefix("expected_fail_message ") {
            ev.fail = Some(MsgMatch::Exact(rest.to_string()));
            break;
        }
        if let Some(rest) = b.strip_prefix("expected_fail_regexp ") {
            ev.fail = Some(MsgMatch::Regex(rest.to_string()));
            break;
        }
        if let Some(rest) = b.strip_prefix("expect range vector from ") {
            let c = RANGE_VECTOR
                .captures(rest)
                .ok_or_else(|| format!("line {ln}: bad expect range vector"))?;
            ev.range_vector = Some((dur(&c[1], *ln)?, dur(&c[2], *ln)?, dur(&c[3], *ln)?));
            continue;
        }
        if let Some(rest) = b.strip_prefix("expect string ") {
            ev.expected = Expected::String(
                unquote(rest.trim()).ok_or_else(|| format!("line {ln}: bad string"))?,
            );
            continue;
        }
        if let Some(rest) = b.strip_prefix("expect ") {
            let (kind, arg) = match rest.split_once(' ') {
                Some((k, a)) => (k, a.trim()),
                None => (rest, ""),
            };
            let m = if let Some(x) = arg.strip_prefix("msg:") {
                MsgMatch::Exact(x.trim().to_string())
            } else if let Some(x) = arg.strip_prefix("regex:") {
                MsgMatch::Regex(x.trim().to_string())
            } else {
                MsgMatch::Any
            };
            match kind {
                "fail" => ev.fail = Some(m),
                "warn" => ev.warn.push(m),
                "info" => ev.info.push(m),
                "no_warn" => ev.no_warn = true,
                "no_info" => ev.no_info = true,
                "ordered" => ev.ordered = true,
                other => return Err(format!("line {ln}: unknown expectation {other:?}")),
            }
            continue;
        }
        if let Some(v) = parse_number(b) {
            ev.expected = Expected::Scalar(v);
            break;
        }
        series.push(parse_series(b).map_err(|e| format!("line {ln}: {e}"))?);
    }
    if !series.is_empty() {
        ev.expected = Expected::Series(series);
    }
    Ok(ev)
}

fn unquote(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix('`').and_then(|x| x.strip_suffix('`')) {
        return Some(inner.to_string());
    }
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Go `ParseInt(s, 0, 64)` then `ParseFloat`.
fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return None;
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|c| c.is_ascii_digit())
    {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Some(if neg { -(i as f64) } else { i as f64 });
    }
    parse_float(t)
}

fn parse_float(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "+inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    if lower.contains("inf") || lower.contains("nan") {
        return None;
    }
    s.parse().ok()
}

/// Splits `labels values…` and expands the values.
pub fn parse_series(line: &str) -> Result<(Labels, Points), String> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'{' {
        i += 1;
    }
    if i < b.len() && b[i] == b'{' {
        let mut in_str: Option<u8> = None;
        while i < b.len() {
            let c = b[i];
            match in_str {
                Some(q) => {
                    if c == b'\\' {
                        i += 1;
                    } else if c == q {
                        in_str = None;
                    }
                }
                None => {
                    if c == b'"' || c == b'\'' || c == b'`' {
                        in_str = Some(c);
                    } else if c == b'}' {
                        i += 1;
                        break;
                    }
                }
            }
            i += 1;
        }
    }
    let (sel, rest) = line.split_at(i);
    let labels = parse_labels(sel)?;
    let mut points = Vec::new();
    for tok in tokens(rest) {
        expand(&tok, &mut points)?;
    }
    Ok((labels, points))
}

fn parse_labels(sel: &str) -> Result<Labels, String> {
    let sel = sel.trim();
    if sel == "{}" {
        return Ok(Labels::default());
    }
    let expr = promql_parser::parser::parse(sel).map_err(|e| format!("bad series {sel:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("bad series {sel:?}"));
    };
    let mut pairs = Vec::new();
    if let Some(n) = vs.name {
        pairs.push((METRIC_NAME.to_string(), n));
    }
    for m in vs.matchers.matchers {
        pairs.push((m.name, m.value));
    }
    if pairs.is_empty() {
        return Ok(Labels::default());
    }
    Labels::new(pairs).map_err(|e| e.to_string())
}

/// Whitespace-separated items, keeping `{{…}}` histogram literals (which contain spaces) whole.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' && chars.get(i + 1) == Some(&'{') {
            depth += 1;
            cur.push_str("{{");
            i += 2;
            continue;
        }
        if c == '}' && chars.get(i + 1) == Some(&'}') && depth > 0 {
            depth -= 1;
            cur.push_str("}}");
            i += 2;
            continue;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn expand(tok: &str, out: &mut Points) -> Result<(), String> {
    if tok.starts_with("{{") {
        return expand_histograms(tok, out);
    }
    if tok == "_" {
        out.push(None);
        return Ok(());
    }
    if tok == "stale" {
        out.push(Some(Point::Float(f64::from_bits(STALE_NAN_BITS))));
        return Ok(());
    }
    if let Some(n) = tok.strip_prefix("_x") {
        let n: usize = n.parse().map_err(|_| format!("bad item {tok:?}"))?;
        out.extend(std::iter::repeat_n(None, n));
        return Ok(());
    }
    if let Some(v) = parse_float(tok) {
        out.push(Some(Point::Float(v)));
        return Ok(());
    }
    let (base, n) = tok
        .rsplit_once('x')
        .ok_or_else(|| format!("bad item {tok:?}"))?;
    let n: usize = n.parse().map_err(|_| format!("bad item {tok:?}"))?;
    if let Some(v) = parse_float(base) {
        out.extend(std::iter::repeat_n(Some(Point::Float(v)), n + 1));
        return Ok(());
    }
    // A+B or A-B: the operator is the first +/- after position 0 not part of an exponent.
    let bytes = base.as_bytes();
    let pos = (1..bytes.len())
        .find(|&k| (bytes[k] == b'+' || bytes[k] == b'-') && !matches!(bytes[k - 1], b'e' | b'E'))
        .ok_or_else(|| format!("bad item {tok:?}"))?;
    let a = parse_float(&base[..pos]).ok_or_else(|| format!("bad item {tok:?}"))?;
    let d = parse_float(&base[pos + 1..]).ok_or_else(|| format!("bad item {tok:?}"))?;
    let d = if bytes[pos] == b'-' { -d } else { d };
    let mut v = a;
    for _ in 0..=n {
        out.push(Some(Point::Float(v)));
        v += d;
    }
    Ok(())
}

/// `{{H}}`, `{{H}}xN` (N+1 copies), `{{H}}+{{D}}xN` / `{{H}}-{{D}}xN` (H, H±D, H±2D, …).
fn expand_histograms(tok: &str, out: &mut Points) -> Result<(), String> {
    let bad = || format!("bad histogram item {tok:?}");
    let end = tok.find("}}").ok_or_else(bad)? + 2;
    let (h, stated) = histogram_notation::parse(&tok[..end])?;
    let rest = &tok[end..];
    if rest.is_empty() {
        out.push(Some(Point::Hist(Arc::new(h), stated)));
        return Ok(());
    }
    if let Some(n) = rest.strip_prefix('x') {
        let n: usize = n.parse().map_err(|_| bad())?;
        let h = Arc::new(h);
        out.extend((0..=n).map(|_| Some(Point::Hist(h.clone(), stated))));
        return Ok(());
    }
    let sub = rest.starts_with('-');
    let rest = rest
        .strip_prefix('+')
        .or_else(|| rest.strip_prefix('-'))
        .ok_or_else(bad)?;
    let dend = rest.find("}}").ok_or_else(bad)? + 2;
    let (d, _) = histogram_notation::parse(&rest[..dend])?;
    let n: usize = rest[dend..]
        .strip_prefix('x')
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let mut cur = h;
    for i in 0..=n {
        out.push(Some(Point::Hist(Arc::new(cur.clone()), stated)));
        if i < n {
            let r = if sub { cur.sub(&d) } else { cur.add(&d) };
            r.map_err(|e| format!("{tok}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_series_notation() {
        let (l, p) = parse_series(r#"m{a="x,}y"} 1+2x2 _x2 3x1 stale 0x2 -1-1x1"#).unwrap();
        assert_eq!(l.get("a"), Some("x,}y"));
        let v: Vec<String> = p
            .iter()
            .map(|x| match x {
                None => "_".into(),
                Some(Point::Float(f)) if f.is_nan() => "stale".into(),
                Some(Point::Float(f)) => f.to_string(),
                Some(Point::Hist(..)) => "h".into(),
            })
            .collect();
        assert_eq!(
            v,
            vec![
                "1", "3", "5", "_", "_", "3", "3", "stale", "0", "0", "0", "-1", "-2"
            ]
        );
    }

    #[test]
    fn parses_blocks_and_expectations() {
        let t = "load 1m\n  a{b=\"c\"} 1 2\n\neval instant at 1m a\n  expect fail msg: boom\n\neval range from 0 to 2m step 1m a\n  a{b=\"c\"} 1 2 _\n# c\neval instant at 0 1\n  1\n";
        let cmds = parse(t).unwrap();
        assert_eq!(cmds.len(), 4);
        let Command::Eval(e) = &cmds[1] else { panic!() };
        assert!(matches!(&e.fail, Some(MsgMatch::Exact(m)) if m == "boom"));
        let Command::Eval(e) = &cmds[3] else { panic!() };
        assert!(matches!(e.expected, Expected::Scalar(v) if v == 1.0));
    }
}
