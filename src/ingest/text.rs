//! Prometheus text exposition / OpenMetrics lines with timestamps, as VictoriaMetrics'
//! `/api/v1/import/prometheus` and `promtool tsdb create-blocks-from openmetrics` accept them.
//!
//! Hand-written because the parsers on crates.io either read a whole scrape into memory or do
//! not accept OpenMetrics' float-second timestamps and UTF-8 quoted names; this one works a
//! line at a time so that multi-gigabyte files stream.

use std::io::{BufRead, Read};

use super::{IngestError, SeriesSamples, WriteBatch};
use crate::model::exemplar::Exemplar;
use crate::model::{Labels, METRIC_NAME};

/// How timestamps in the input are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUnit {
    /// Integer milliseconds (Prometheus text format, VictoriaMetrics import).
    Millis,
    /// Float seconds (OpenMetrics).
    Seconds,
    /// Per value: a fraction or a magnitude below 1e11 means seconds (1e11 ms is 1973, so
    /// real millisecond data is never that small), otherwise milliseconds.
    Auto,
}

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSample {
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    /// An OpenMetrics exemplar (`… # {trace_id="…"} 0.5 1520879607.789`); its time is
    /// the sample's when it has none.
    pub exemplar: Option<Exemplar>,
}

/// Parses a single line. `Ok(None)` for blank lines, comments and `# EOF`.
pub fn parse_line(line: &str, unit: TimestampUnit) -> Result<Option<TextSample>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut c = Cursor {
        s: trimmed.as_bytes(),
        i: 0,
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut name: Option<String> = None;
    if c.peek() != Some(b'{') {
        name = Some(c.ident().ok_or("expected metric name")?);
    }
    if c.peek() == Some(b'{') {
        label_set(&mut c, &mut pairs, Some(&mut name))?;
    }
    let name = name.ok_or("missing metric name")?;
    if name.is_empty() {
        return Err("empty metric name".into());
    }
    pairs.push((METRIC_NAME.to_string(), name));
    let rest = std::str::from_utf8(&c.s[c.i..]).map_err(|_| "invalid UTF-8")?;
    // An OpenMetrics exemplar follows " # ".
    let (rest, exemplar_text) = match rest.split_once(" # ") {
        Some((r, e)) => (r, Some(e)),
        None => (rest, None),
    };
    let mut fields = rest.split_ascii_whitespace();
    let value_str = fields.next().ok_or("missing value")?;
    let value = parse_value(value_str).ok_or_else(|| format!("invalid value {value_str:?}"))?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(t) => {
            Some(parse_timestamp(t, unit).ok_or_else(|| format!("invalid timestamp {t:?}"))?)
        }
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected text after timestamp: {extra:?}"));
    }
    let labels = Labels::new(pairs).map_err(|e| e.to_string())?;
    let exemplar = match exemplar_text {
        // OpenMetrics exemplar timestamps are seconds whatever the samples' unit.
        Some(e) => Some(parse_exemplar(e, TimestampUnit::Seconds)?),
        None => None,
    };
    Ok(Some(TextSample {
        labels,
        value,
        timestamp_ms,
        exemplar,
    }))
}

/// `{name="value", …}` from its opening brace, past its closing one. With `name`, a bare
/// quoted string without `=` is the metric name (the OpenMetrics 2 / Prometheus 3 UTF-8
/// form `{"my.metric", a="b"}`), once.
fn label_set(
    c: &mut Cursor,
    pairs: &mut Vec<(String, String)>,
    mut name: Option<&mut Option<String>>,
) -> Result<(), String> {
    c.i += 1;
    loop {
        c.skip_ws();
        match c.peek() {
            Some(b'}') => {
                c.i += 1;
                return Ok(());
            }
            None => return Err("unterminated label set".into()),
            _ => {}
        }
        let key = if c.peek() == Some(b'"') {
            c.quoted()?
        } else {
            c.ident().ok_or("expected label name")?
        };
        c.skip_ws();
        if c.peek() == Some(b'=') {
            c.i += 1;
            c.skip_ws();
            if c.peek() != Some(b'"') {
                return Err(format!("expected quoted value for label {key:?}"));
            }
            let value = c.quoted()?;
            pairs.push((key, value));
        } else if let Some(n) = name.as_mut().filter(|n| n.is_none()) {
            **n = Some(key);
        } else {
            return Err(format!("expected '=' after label name {key:?}"));
        }
        c.skip_ws();
        match c.peek() {
            Some(b',') => c.i += 1,
            Some(b'}') => {}
            _ => return Err("expected ',' or '}' in label set".into()),
        }
    }
}

/// `{name="value", …} value [timestamp]`; a missing timestamp is `i64::MIN` until the
/// caller gives it the sample's.
fn parse_exemplar(text: &str, unit: TimestampUnit) -> Result<Exemplar, String> {
    let mut c = Cursor {
        s: text.trim().as_bytes(),
        i: 0,
    };
    if c.peek() != Some(b'{') {
        return Err("exemplar: expected '{'".into());
    }
    let mut pairs = Vec::new();
    label_set(&mut c, &mut pairs, None).map_err(|e| format!("exemplar: {e}"))?;
    let rest = std::str::from_utf8(&c.s[c.i..]).map_err(|_| "invalid UTF-8")?;
    let mut fields = rest.split_ascii_whitespace();
    let v = fields.next().ok_or("exemplar: missing value")?;
    let value = parse_value(v).ok_or_else(|| format!("exemplar: invalid value {v:?}"))?;
    let ts = match fields.next() {
        None => i64::MIN,
        Some(t) => {
            parse_timestamp(t, unit).ok_or_else(|| format!("exemplar: invalid timestamp {t:?}"))?
        }
    };
    if let Some(extra) = fields.next() {
        return Err(format!("exemplar: unexpected {extra:?}"));
    }
    let labels = Exemplar::labels_from(pairs).map_err(|e| format!("exemplar: {e}"))?;
    let e = Exemplar { labels, value, ts };
    e.validate()?;
    Ok(e)
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s
            .parse::<f64>()
            .ok()
            .filter(|_| !s.contains(['i', 'I', 'n', 'N'])),
    }
}

fn parse_timestamp(s: &str, unit: TimestampUnit) -> Option<i64> {
    let is_int = s
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'));
    let seconds = match unit {
        TimestampUnit::Millis => false,
        TimestampUnit::Seconds => true,
        TimestampUnit::Auto => !is_int || s.parse::<i64>().ok()?.unsigned_abs() < 100_000_000_000,
    };
    if seconds {
        let f: f64 = s.parse().ok()?;
        let ms = (f * 1000.0).round();
        (ms.is_finite() && ms.abs() < 9.0e15).then_some(ms as i64)
    } else if is_int {
        s.parse().ok()
    } else {
        None
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphanumeric() || b == b'_' || b == b':';
            if !ok || (self.i == start && b.is_ascii_digit()) {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Result<String, String> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'n') => out.push(b'\n'),
                        Some(b'\\') => out.push(b'\\'),
                        Some(b'"') => out.push(b'"'),
                        Some(other) => {
                            out.push(b'\\');
                            out.push(other);
                        }
                        None => return Err("unterminated escape".into()),
                    }
                    self.i += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| "invalid UTF-8 in quoted string".to_string())
    }
}

/// Longest accepted line (labels and value of one sample).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads exposition text and hands out batches of about `batch_samples` samples, grouping
/// consecutive lines of one series. `default_ts` is used for lines without a timestamp.
pub struct BatchReader<R> {
    reader: R,
    unit: TimestampUnit,
    default_ts: i64,
    batch_samples: usize,
    line_no: u64,
    bytes_read: u64,
    buf: String,
    done: bool,
    /// A batch also ends once its lines add up to this many bytes.
    batch_bytes: usize,
}

impl<R: BufRead> BatchReader<R> {
    pub fn new(reader: R, unit: TimestampUnit, default_ts: i64, batch_samples: usize) -> Self {
        BatchReader {
            reader,
            unit,
            default_ts,
            batch_samples: batch_samples.max(1),
            line_no: 0,
            bytes_read: 0,
            buf: String::new(),
            done: false,
            batch_bytes: usize::MAX,
        }
    }

    /// Ends batches at about `bytes` of input and of the label sets parsed from it (long
    /// label sets make a few samples big).
    pub fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// Bytes consumed so far (for progress bars).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Next batch, `Ok(None)` at end of input.
    pub fn next_batch(&mut self) -> Result<Option<WriteBatch>, IngestError> {
        if self.done {
            return Ok(None);
        }
        let mut batch = WriteBatch::default();
        let mut n = 0;
        let mut bytes = 0usize;
        while n < self.batch_samples && bytes < self.batch_bytes {
            self.buf.clear();
            // Bounded: a body without newlines must not become one giant String.
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_line(&mut self.buf)?;
            if read == 0 {
                self.done = true;
                break;
            }
            if read > MAX_LINE_BYTES {
                return Err(IngestError::Parse {
                    line: self.line_no + 1,
                    message: format!("line longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            self.bytes_read += read as u64;
            bytes += read;
            self.line_no += 1;
            let parsed =
                parse_line(&self.buf, self.unit).map_err(|message| IngestError::Parse {
                    line: self.line_no,
                    message,
                })?;
            let Some(s) = parsed else { continue };
            // A batch ends at its size in memory, not only in text: `a="",` is 6 bytes of
            // text and ~100 bytes of label set.
            bytes += s.labels.heap_bytes()
                + s.exemplar
                    .as_ref()
                    .map_or(0, |e| e.labels.heap_bytes() + 64);
            let ts = s.timestamp_ms.unwrap_or(self.default_ts);
            if let Some(mut e) = s.exemplar {
                if e.ts == i64::MIN {
                    e.ts = ts;
                }
                match batch.exemplars.last_mut() {
                    Some(last) if last.labels == s.labels => last.exemplars.push(e),
                    _ => batch.exemplars.push(super::SeriesExemplars {
                        labels: s.labels.clone(),
                        exemplars: vec![e],
                    }),
                }
            }
            match batch.series.last_mut() {
                Some(last) if last.labels == s.labels => last.samples.push((ts, s.value)),
                _ => batch.series.push(SeriesSamples {
                    labels: s.labels,
                    samples: vec![(ts, s.value)],
                }),
            }
            n += 1;
        }
        Ok(if n == 0 { None } else { Some(batch) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str, unit: TimestampUnit) -> TextSample {
        parse_line(line, unit).unwrap().unwrap()
    }

    #[test]
    fn prometheus_line_with_ms_timestamp() {
        let s = one(
            r#"http_requests_total{method="post",code="200"} 1027 1395066363000"#,
            TimestampUnit::Millis,
        );
        assert_eq!(
            s.labels.to_string(),
            r#"http_requests_total{code="200", method="post"}"#
        );
        assert_eq!(s.value, 1027.0);
        assert_eq!(s.timestamp_ms, Some(1395066363000));
    }

    #[test]
    fn openmetrics_seconds_and_exemplar() {
        let s = one(
            r#"foo_bucket{le="0.1"} 8 1520879607.789 # {id="x"} 0.05"#,
            TimestampUnit::Auto,
        );
        assert_eq!(s.timestamp_ms, Some(1520879607789));
        let e = s.exemplar.unwrap();
        assert_eq!(
            (e.labels.to_string(), e.value),
            (r#"{id="x"}"#.to_string(), 0.05)
        );
        let e = one(
            r#"foo_total 8 # {trace_id="abc",span_id="d"} 1.5 1520879607.5"#,
            TimestampUnit::Auto,
        )
        .exemplar
        .unwrap();
        assert_eq!((e.labels.len(), e.value, e.ts), (2, 1.5, 1520879607500));
        assert!(parse_line("a 1 # {x=y} 1", TimestampUnit::Auto).is_err());
        assert!(
            parse_line(
                &format!("a 1 # {{t=\"{}\"}} 1", "x".repeat(200)),
                TimestampUnit::Auto
            )
            .is_err()
        );
        assert_eq!(
            one("a 1 1520879607", TimestampUnit::Auto).timestamp_ms,
            Some(1520879607000)
        );
        assert_eq!(
            one("a 1 1520879607000", TimestampUnit::Auto).timestamp_ms,
            Some(1520879607000)
        );
    }

    #[test]
    fn special_values_escapes_and_utf8_names() {
        assert!(one("a NaN", TimestampUnit::Millis).value.is_nan());
        assert_eq!(one("a +Inf", TimestampUnit::Millis).value, f64::INFINITY);
        assert_eq!(
            one("a -Inf 5", TimestampUnit::Millis).value,
            f64::NEG_INFINITY
        );
        let s = one(
            r#"{"my.metric", "a.b"="x\"y\\z\n"} 1"#,
            TimestampUnit::Millis,
        );
        assert_eq!(s.labels.get("__name__"), Some("my.metric"));
        assert_eq!(s.labels.get("a.b"), Some("x\"y\\z\n"));
        assert_eq!(
            one("a{b=\"c\",} 2", TimestampUnit::Millis).labels.get("b"),
            Some("c")
        );
    }

    #[test]
    fn comments_and_errors() {
        assert_eq!(parse_line("# HELP a b", TimestampUnit::Millis), Ok(None));
        assert_eq!(parse_line("# EOF", TimestampUnit::Millis), Ok(None));
        assert_eq!(parse_line("   ", TimestampUnit::Millis), Ok(None));
        for bad in [
            "a",
            "a{b=c} 1",
            "a{b=\"c\" 1",
            "a x",
            "a 1 2 3",
            "a{b=\"1\",b=\"2\"} 1",
            "a 1 1.5",
        ] {
            assert!(parse_line(bad, TimestampUnit::Millis).is_err(), "{bad}");
        }
    }

    #[test]
    fn batches_group_series_and_report_line_numbers() {
        let input = "a 1 1000\na 2 2000\nb 3 1000\n\nc{x=\"y\"} 4\n";
        let mut r = BatchReader::new(input.as_bytes(), TimestampUnit::Millis, 77, 10);
        let b = r.next_batch().unwrap().unwrap();
        assert_eq!(b.series.len(), 3);
        assert_eq!(b.series[0].samples, vec![(1000, 1.0), (2000, 2.0)]);
        assert_eq!(b.series[2].samples, vec![(77, 4.0)]);
        assert!(r.next_batch().unwrap().is_none());
        let mut bad = BatchReader::new("a 1\nb oops\n".as_bytes(), TimestampUnit::Millis, 0, 10);
        assert_eq!(
            bad.next_batch().unwrap_err().to_string(),
            "line 2: invalid value \"oops\""
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = parse_line(&s, TimestampUnit::Auto);
        }

        #[test]
        fn mutated_lines_never_panic(s in "[a-z{}=\",. #0-9\\\\]{0,60}") {
            let _ = parse_line(&s, TimestampUnit::Auto);
        }
    }
}
