//! Prometheus remote write 2.0 (`io.prometheus.write.v2.Request`): snappy block-compressed
//! protobuf whose label names and values are references into one symbol table, with
//! per-series metadata, native histograms, exemplars and created (start) timestamps.
//! Decoded into the same [`WriteBatch`] as 1.0, with what it held counted for the
//! `X-Prometheus-Remote-Write-*-Written` response headers.

use prost::Message;

use super::budget::{Meter, charge_wire, schemas, string_heap};
use super::native_histogram::{self, Decoded};
use super::prompb;
use super::remote_write::exemplar;
use super::{
    IngestError, MetricMetadata, SeriesExemplars, SeriesHistograms, SeriesSamples, WriteBatch,
};
use crate::model::{Labels, METRIC_NAME};

/// The `Content-Type` `proto=` value of remote write 2.0.
pub const PROTO: &str = "io.prometheus.write.v2.Request";

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Pairs of symbol references: name, value, name, value, …
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<prompb::Histogram>,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<Metadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    /// When the counter started (created timestamp), 0 if unknown.
    #[prost(int64, tag = "3")]
    pub start_timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// 0 unspecified, then counter, gauge, histogram, gaugehistogram, summary, info,
    /// stateset (the 1.0 enum's order).
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// What a request wrote, for the response headers (exemplars: after drops, see
/// [`WriteBatch::dropped_exemplars`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub samples: usize,
    pub histograms: usize,
    pub exemplars: usize,
}

/// Decodes a remote-write 2.0 body. With `created_zero: Some(oldest)`, a sample's or
/// histogram's created timestamp before its own, and not before `oldest` (the write
/// window), adds a zero sample there (Prometheus's `created-timestamp-zero-ingestion`), so
/// `rate` sees the counter start from zero; older ones are skipped, never refused.
pub fn decode(
    body: &[u8],
    created_zero: Option<i64>,
    meter: &mut Meter,
) -> Result<(WriteBatch, Written), IngestError> {
    let raw = super::remote_write::snappy(body, meter)?;
    charge_wire(&raw, &schemas::RW2_REQUEST, meter)?;
    let req = Request::decode(raw.as_slice())?;
    drop(raw);
    from_proto(req, created_zero, meter)
}

fn invalid(message: String) -> IngestError {
    IngestError::Parse { line: 0, message }
}

/// `(name, value)` pairs of a reference list, each resolved string charged to `meter`
/// before it is copied: references repeat symbols for free on the wire, so a small body
/// could otherwise name gigabytes of labels.
fn resolve(
    symbols: &[String],
    refs: &[u32],
    meter: &mut Meter,
) -> Result<Vec<(String, String)>, IngestError> {
    if !refs.len().is_multiple_of(2) {
        return Err(invalid(format!(
            "labels_refs has an odd length ({})",
            refs.len()
        )));
    }
    let mut sym = |r: u32| {
        let s = symbols.get(r as usize).ok_or_else(|| {
            invalid(format!(
                "symbol reference {r} out of range (the table has {})",
                symbols.len()
            ))
        })?;
        meter.charge(24 + string_heap(s.len()))?;
        Ok::<_, IngestError>(s.clone())
    };
    refs.chunks_exact(2)
        .map(|p| Ok((sym(p[0])?, sym(p[1])?)))
        .collect()
}

pub fn from_proto(
    req: Request,
    created_zero: Option<i64>,
    meter: &mut Meter,
) -> Result<(WriteBatch, Written), IngestError> {
    let created =
        |ct: i64, t: i64| created_zero.is_some_and(|oldest| ct != 0 && ct >= oldest && ct < t);
    if req.symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(invalid(
            "the first symbol must be the empty string".to_string(),
        ));
    }
    let mut batch = WriteBatch::default();
    let mut written = Written::default();
    let mut families = std::collections::HashMap::new();
    for ts in req.timeseries {
        let before = meter.used();
        let pairs = resolve(&req.symbols, &ts.labels_refs, meter)?;
        // The resolved pairs are this series' alone and dropped below: charged while
        // they exist, twice as they are cloned into the label set (one series may name a
        // large symbol many times), then given back.
        let resolved = meter.used() - before;
        meter.charge(resolved)?;
        meter.charge_labels(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        meter.refund(2 * resolved);
        let labels = Labels::new(pairs.clone()).map_err(|source| IngestError::Labels {
            labels: format!("{pairs:?}"),
            source,
        })?;
        let mut samples: Vec<(i64, f64)> = Vec::with_capacity(ts.samples.len() + 1);
        for s in &ts.samples {
            if created(s.start_timestamp, s.timestamp) {
                samples.push((s.start_timestamp, 0.0));
            }
            samples.push((s.timestamp, s.value));
        }
        written.samples += ts.samples.len();
        let mut hists = Vec::with_capacity(ts.histograms.len());
        for h in &ts.histograms {
            match native_histogram::from_proto(h) {
                Ok(Decoded::Histogram(fh)) => {
                    if created(h.start_timestamp, h.timestamp) {
                        hists.push((h.start_timestamp, zero_like(&fh)));
                    }
                    hists.push((h.timestamp, fh));
                }
                Ok(Decoded::Stale) => samples.push((h.timestamp, crate::model::stale_marker())),
                Err(message) => {
                    return Err(IngestError::Histogram {
                        labels: labels.to_string(),
                        timestamp_ms: h.timestamp,
                        message,
                    });
                }
            }
        }
        written.histograms += ts.histograms.len();
        if !ts.exemplars.is_empty() {
            let mut exs = Vec::with_capacity(ts.exemplars.len());
            for e in ts.exemplars {
                let pairs = resolve(&req.symbols, &e.labels_refs, meter)?;
                let labels_of_exemplar = pairs
                    .into_iter()
                    .map(|(name, value)| prompb::Label { name, value })
                    .collect();
                match exemplar(labels_of_exemplar, e.value, e.timestamp) {
                    Ok(x) => exs.push(x),
                    Err(_) => batch.dropped_exemplars += 1,
                }
            }
            if !exs.is_empty() {
                meter.charge(labels.heap_bytes() + 64)?;
                batch.exemplars.push(SeriesExemplars {
                    labels: labels.clone(),
                    exemplars: exs,
                });
            }
        }
        // Each series carries its own metadata: series with the same name, type and text
        // share one entry, found by their symbol references (every series of a request
        // repeats it, so the text is resolved once per entry, not per series).
        if let Some(md) = ts.metadata {
            let key = (
                labels.get(METRIC_NAME).map(str::to_string),
                md.r#type,
                md.help_ref,
                md.unit_ref,
            );
            let at = match families.get(&key) {
                Some(&at) => at,
                None => {
                    let at = metadata(&req.symbols, &labels, &md, meter)?.map(|m| {
                        batch.metadata.push(m);
                        batch.metadata.len() - 1
                    });
                    families.insert(key, at);
                    at
                }
            };
            if let Some(at) = at {
                meter.charge(labels.heap_bytes() + 32)?;
                batch.metadata[at].carriers.push(labels.clone());
            }
        }
        if !hists.is_empty() {
            meter.charge(labels.heap_bytes() + 64)?;
            batch.histograms.push(SeriesHistograms {
                labels: labels.clone(),
                samples: hists,
            });
        }
        if !samples.is_empty() {
            batch.series.push(SeriesSamples { labels, samples });
        }
    }
    Ok((batch, written))
}

/// A series' metadata as the metadata API serves it, keyed by its metric name; `None`
/// when it says nothing (type unspecified, no help, no unit).
fn metadata(
    symbols: &[String],
    labels: &Labels,
    md: &Metadata,
    meter: &mut Meter,
) -> Result<Option<MetricMetadata>, IngestError> {
    let pair = resolve(symbols, &[md.help_ref, md.unit_ref], meter)?;
    let (help, unit) = pair.into_iter().next().expect("one pair");
    let metric_type = prompb::MetricType::try_from(md.r#type)
        .unwrap_or(prompb::MetricType::Unknown)
        .api_name();
    let Some(name) = labels.get(METRIC_NAME) else {
        return Ok(None);
    };
    if md.r#type == 0 && help.is_empty() && unit.is_empty() {
        return Ok(None);
    }
    Ok(Some(MetricMetadata {
        metric_family_name: super::family::family_of(name, metric_type).to_string(),
        metric_type: metric_type.to_string(),
        help,
        unit,
        carriers: vec![],
    }))
}

/// The zero a created timestamp stands for: the histogram's layout, no observations.
fn zero_like(
    h: &crate::model::histogram::FloatHistogram,
) -> crate::model::histogram::FloatHistogram {
    crate::model::histogram::FloatHistogram {
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        custom_values: h.custom_values.clone(),
        hint: h.hint,
        ..crate::model::histogram::FloatHistogram::empty()
    }
}

/// Encodes a batch as a remote-write 2.0 body (tests and tools): one symbol table, each
/// series with its samples, histograms, exemplars and the metadata of its metric name.
pub fn encode(batch: &WriteBatch) -> Vec<u8> {
    let mut syms = Symbols::default();
    let mut series: Vec<(Labels, TimeSeries)> = Vec::new();
    // Series by label set (a linear search made large batches quadratic).
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    let mut slot = |l: &Labels, series: &mut Vec<(Labels, TimeSeries)>| -> usize {
        *index.entry(l.clone()).or_insert_with(|| {
            series.push((l.clone(), TimeSeries::default()));
            series.len() - 1
        })
    };
    for s in &batch.series {
        let i = slot(&s.labels, &mut series);
        series[i]
            .1
            .samples
            .extend(s.samples.iter().map(|&(t, v)| Sample {
                value: v,
                timestamp: t,
                start_timestamp: 0,
            }));
    }
    for s in &batch.histograms {
        let i = slot(&s.labels, &mut series);
        series[i].1.histograms.extend(
            s.samples
                .iter()
                .map(|(t, h)| native_histogram::to_proto(h, *t)),
        );
    }
    for s in &batch.exemplars {
        let i = slot(&s.labels, &mut series);
        for e in &s.exemplars {
            let r = syms.refs(&e.labels);
            series[i].1.exemplars.push(Exemplar {
                labels_refs: r,
                value: e.value,
                timestamp: e.ts,
            });
        }
    }
    let mut timeseries = Vec::with_capacity(series.len());
    for (labels, mut ts) in series {
        ts.labels_refs = syms.refs(&labels);
        if let Some(md) = labels
            .get(METRIC_NAME)
            .and_then(|n| batch.metadata.iter().find(|m| m.metric_family_name == n))
        {
            let t = [
                "unknown",
                "counter",
                "gauge",
                "histogram",
                "gaugehistogram",
                "summary",
                "info",
                "stateset",
            ]
            .iter()
            .position(|x| *x == md.metric_type)
            .unwrap_or(0);
            ts.metadata = Some(Metadata {
                r#type: t as i32,
                help_ref: syms.get(&md.help),
                unit_ref: syms.get(&md.unit),
            });
        }
        timeseries.push(ts);
    }
    let req = Request {
        symbols: syms.table,
        timeseries,
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compression of an in-memory buffer cannot fail")
}

/// A symbol table being built: the empty string first.
struct Symbols {
    table: Vec<String>,
    index: std::collections::HashMap<String, u32>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            table: vec![String::new()],
            index: [(String::new(), 0)].into(),
        }
    }
}

impl Symbols {
    fn get(&mut self, s: &str) -> u32 {
        if let Some(&r) = self.index.get(s) {
            return r;
        }
        let r = self.table.len() as u32;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), r);
        r
    }

    fn refs(&mut self, l: &Labels) -> Vec<u32> {
        l.iter()
            .flat_map(|(n, v)| [self.get(n), self.get(v)])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::budget::DecodeBudget;

    fn series(refs: Vec<u32>, samples: Vec<Sample>) -> TimeSeries {
        TimeSeries {
            labels_refs: refs,
            samples,
            ..Default::default()
        }
    }

    fn symbols() -> Vec<String> {
        ["", "__name__", "c_total", "job", "a"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn created_timestamps_become_zero_samples_inside_the_window_only() {
        let s = |t, st| Sample {
            value: 5.0,
            timestamp: t,
            start_timestamp: st,
        };
        let req = Request {
            symbols: symbols(),
            timeseries: vec![series(
                vec![1, 2, 3, 4],
                vec![s(10_000, 4_000), s(20_000, 500), s(30_000, 0)],
            )],
        };
        let (b, w) = from_proto(req.clone(), None, &mut unmetered()).unwrap();
        assert_eq!(b.series[0].samples.len(), 3);
        assert_eq!(w.samples, 3);
        // On: the created timestamps at or after 1 000 add zeros; 500 is older: skipped.
        let (b, w) = from_proto(req, Some(1_000), &mut unmetered()).unwrap();
        assert_eq!(
            b.series[0].samples,
            vec![(4_000, 0.0), (10_000, 5.0), (20_000, 5.0), (30_000, 5.0)]
        );
        assert_eq!(w.samples, 3, "the zeros are not what the client sent");
    }

    fn unmetered() -> Meter {
        Meter::new(DecodeBudget(usize::MAX))
    }

    #[test]
    fn bad_symbol_references_and_oversized_resolutions_are_refused() {
        let bad = |refs: Vec<u32>, symbols: Vec<String>| {
            from_proto(
                Request {
                    symbols,
                    timeseries: vec![series(refs, vec![])],
                },
                None,
                &mut unmetered(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad(vec![1, 2, 3], symbols()).contains("odd length"));
        assert!(bad(vec![1, 9], symbols()).contains("out of range"));
        let mut first = symbols();
        first[0] = "x".into();
        assert!(bad(vec![1, 2], first).contains("empty string"));
        // A 1 MiB symbol referenced by 300 series resolves to more than the budget, and is
        // refused before the copies are made.
        let mut big = symbols();
        big.push("v".repeat(1 << 20));
        let timeseries = (0..300).map(|_| series(vec![1, 2, 3, 5], vec![])).collect();
        let mut meter = Meter::new(DecodeBudget(128 << 20));
        let err = from_proto(
            Request {
                symbols: big,
                timeseries,
            },
            None,
            &mut meter,
        )
        .unwrap_err();
        assert!(matches!(err, IngestError::Budget { .. }), "{err}");
        assert!(meter.used() < (128 << 20) + (2 << 20));
    }
}
