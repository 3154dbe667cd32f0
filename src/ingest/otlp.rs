//! OTLP metrics (`ExportMetricsServiceRequest`, protobuf or OTLP/JSON, optionally gzip) to
//! a [`WriteBatch`], with Prometheus 3's translation: names from `otlp_names`, `job` and
//! `instance` from the resource, resource attributes on `target_info` (and on every series
//! when promoted), sums as counters or gauges, explicit-bucket histograms as classic
//! `_bucket`/`_sum`/`_count` series (or custom-bucket native histograms), exponential
//! histograms as native histograms, summaries as quantile series, exemplars with their
//! trace and span ids. Anything that cannot be translated refuses the whole request.

use std::collections::BTreeMap;
use std::io::Read;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar as OtlpExemplar, ExponentialHistogramDataPoint,
    HistogramDataPoint, exemplar, metric, number_data_point,
};
use prost::Message;

use super::budget::{Meter, charge_json, charge_wire, schemas};
use super::otlp_names::{self, Kind};
use super::{
    IngestError, MetricMetadata, SeriesExemplars, SeriesHistograms, SeriesSamples, WriteBatch,
};
use crate::model::exemplar::Exemplar;
use crate::model::histogram::{CounterResetHint, FloatHistogram, Span};
use crate::model::{Labels, METRIC_NAME, stale_marker};

/// Largest request after decompression (Prometheus's OTLP limit).
pub const MAX_DECOMPRESSED: usize = 32 << 20;

/// Translation settings (the `otlp` section of the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Resource attributes copied onto every series of the resource (raw keys).
    #[serde(default)]
    pub promote_resource_attributes: Vec<String>,
    /// Explicit-bucket histograms become custom-bucket native histograms instead of
    /// classic `_bucket`/`_sum`/`_count` series.
    #[serde(default)]
    pub convert_histograms_to_nhcb: bool,
}

/// The body's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

fn bad(message: impl Into<String>) -> IngestError {
    IngestError::Parse {
        line: 0,
        message: message.into(),
    }
}

/// Decompresses (gzip when `gzip`) within [`MAX_DECOMPRESSED`] and decodes the request.
pub fn decode(
    body: &[u8],
    gzip: bool,
    format: Format,
    meter: &mut Meter,
) -> Result<ExportMetricsServiceRequest, IngestError> {
    let raw;
    let bytes = if gzip {
        // Inflated in steps, each charged before it is read: gzip grows 1000-fold.
        let mut out = Vec::new();
        let mut inflate = flate2::read::GzDecoder::new(body);
        loop {
            let step = 1 << 20;
            meter.charge(step)?;
            // Grown by exactly what was charged (not doubled by the vector).
            out.reserve_exact(step);
            let n = (&mut inflate)
                .take(step as u64)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("gzip: {e}")))?;
            if out.len() > MAX_DECOMPRESSED {
                return Err(IngestError::TooLarge {
                    size: out.len(),
                    limit: MAX_DECOMPRESSED,
                });
            }
            if n < step {
                break;
            }
        }
        raw = out;
        raw.as_slice()
    } else {
        if body.len() > MAX_DECOMPRESSED {
            return Err(IngestError::TooLarge {
                size: body.len(),
                limit: MAX_DECOMPRESSED,
            });
        }
        body
    };
    match format {
        Format::Protobuf => {
            charge_wire(bytes, &schemas::OTLP_REQUEST, meter)?;
            Ok(ExportMetricsServiceRequest::decode(bytes)?)
        }
        Format::Json => {
            charge_json(bytes, schemas::OTLP_MAX_STRUCT, meter)?;
            serde_json::from_slice(bytes).map_err(|e| bad(format!("OTLP/JSON: {e}")))
        }
    }
}

/// An attribute value as Prometheus writes it into a label.
fn value_string(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => {
            crate::model::go_float::format(*d, crate::model::go_float::Style::Fixed)
        }
        Some(any_value::Value::BytesValue(b)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        Some(other) => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Attributes as label pairs: sorted by raw key, keys escaped; two keys escaping to one
/// name join their values with `;` (Prometheus's collision rule).
fn attributes(kvs: &[KeyValue], skip: &[&str]) -> Result<BTreeMap<String, String>, IngestError> {
    let mut sorted: Vec<&KeyValue> = kvs
        .iter()
        .filter(|kv| !skip.contains(&kv.key.as_str()))
        .collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for kv in sorted {
        let name = otlp_names::label_name(&kv.key).map_err(bad)?;
        let value = value_string(&kv.value);
        match out.get_mut(&name) {
            Some(existing) if !existing.is_empty() => {
                existing.push(';');
                existing.push_str(&value);
            }
            _ => {
                out.insert(name, value);
            }
        }
    }
    Ok(out)
}

fn find<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    kvs.iter().find(|kv| kv.key == key)
}

const IDENTIFYING: [&str; 3] = ["service.namespace", "service.name", "service.instance.id"];

/// `job` and `instance` of a resource.
fn job_instance(res: &[KeyValue]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(name) = find(res, "service.name") {
        let name = value_string(&name.value);
        let job = match find(res, "service.namespace") {
            Some(ns) => format!("{}/{name}", value_string(&ns.value)),
            None => name,
        };
        out.push(("job".to_string(), job));
    }
    if let Some(id) = find(res, "service.instance.id") {
        out.push(("instance".to_string(), value_string(&id.value)));
    }
    out
}

fn to_labels(
    mut pairs: BTreeMap<String, String>,
    meter: &mut Meter,
) -> Result<Labels, IngestError> {
    pairs.retain(|_, v| !v.is_empty());
    meter.charge_labels(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let pairs: Vec<(String, String)> = pairs.into_iter().collect();
    Labels::new(pairs.clone()).map_err(|source| IngestError::Labels {
        labels: format!("{pairs:?}"),
        source,
    })
}

fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

/// Everything one request adds, merged by label set.
#[derive(Default)]
struct Out {
    floats: BTreeMap<Labels, Vec<(i64, f64)>>,
    hists: BTreeMap<Labels, Vec<(i64, FloatHistogram)>>,
    exemplars: BTreeMap<Labels, Vec<Exemplar>>,
    metadata: Vec<MetricMetadata>,
    families: std::collections::HashSet<String>,
    dropped: usize,
}

impl Out {
    fn float(&mut self, labels: Labels, t: i64, v: f64) {
        self.floats.entry(labels).or_default().push((t, v));
    }

    fn exemplars(
        &mut self,
        labels: &Labels,
        ex: Vec<Exemplar>,
        meter: &mut Meter,
    ) -> Result<(), IngestError> {
        if !ex.is_empty() {
            meter.charge(labels.heap_bytes() + 64)?;
            self.exemplars.entry(labels.clone()).or_default().extend(ex);
        }
        Ok(())
    }
}

/// Context of one data point: the series' labels before `__name__`.
struct Base<'a> {
    resource_labels: &'a [(String, String)],
    promoted: &'a BTreeMap<String, String>,
}

impl Base<'_> {
    fn labels(
        &self,
        meter: &mut Meter,
        attrs: &[KeyValue],
        name: &str,
        extra: Option<(&str, String)>,
    ) -> Result<Labels, IngestError> {
        let mut l = attributes(attrs, &[METRIC_NAME])?;
        for (k, v) in self.promoted {
            l.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in self.resource_labels {
            if !v.is_empty() {
                l.insert(k.clone(), v.clone());
            }
        }
        l.insert(METRIC_NAME.to_string(), name.to_string());
        if let Some((k, v)) = extra {
            l.insert(k.to_string(), v);
        }
        to_labels(l, meter)
    }
}

/// A data point's exemplars; ones without a value or with invalid labels are dropped
/// (counted), as Prometheus keeps the samples.
fn exemplars(list: &[OtlpExemplar], dropped: &mut usize) -> Result<Vec<Exemplar>, IngestError> {
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let value = match e.value {
            Some(exemplar::Value::AsDouble(d)) => d,
            Some(exemplar::Value::AsInt(i)) => i as f64,
            None => {
                *dropped += 1;
                continue;
            }
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        if e.trace_id.iter().any(|b| *b != 0) {
            pairs.push(("trace_id".into(), hex(&e.trace_id)));
        }
        if e.span_id.iter().any(|b| *b != 0) {
            pairs.push(("span_id".into(), hex(&e.span_id)));
        }
        let mut with_attrs = pairs.clone();
        with_attrs.extend(
            e.filtered_attributes
                .iter()
                .map(|kv| (kv.key.clone(), value_string(&kv.value))),
        );
        // The filtered attributes come along only when everything fits OpenMetrics' limit.
        let runes: usize = with_attrs
            .iter()
            .map(|(k, v)| k.chars().count() + v.chars().count())
            .sum();
        if runes <= crate::model::exemplar::MAX_EXEMPLAR_LABEL_RUNES {
            pairs = with_attrs;
        }
        let Ok(labels) = Exemplar::labels_from(pairs) else {
            *dropped += 1;
            continue;
        };
        out.push(Exemplar {
            labels,
            value,
            ts: ms(e.time_unix_nano),
        });
    }
    Ok(out)
}

fn cumulative(temporality: i32, name: &str) -> Result<(), IngestError> {
    if temporality == AggregationTemporality::Cumulative as i32 {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid temporality and type combination for metric {name:?}: only cumulative sums and histograms are accepted"
        )))
    }
}

const NO_RECORDED_VALUE: u32 = 1;

/// How far back from a resource's latest point `target_info` samples go.
const TARGET_INFO_SPAN_MS: i64 = 86_400_000;

/// Translates a request.
pub fn translate(
    req: ExportMetricsServiceRequest,
    cfg: &OtlpConfig,
    meter: &mut Meter,
) -> Result<WriteBatch, IngestError> {
    let mut out = Out::default();
    for rm in req.resource_metrics {
        let res: Vec<KeyValue> = rm.resource.map(|r| r.attributes).unwrap_or_default();
        let resource_labels = job_instance(&res);
        let promote: Vec<KeyValue> = res
            .iter()
            .filter(|kv| cfg.promote_resource_attributes.contains(&kv.key))
            .cloned()
            .collect();
        let promoted = attributes(&promote, &[])?;
        let base = Base {
            resource_labels: &resource_labels,
            promoted: &promoted,
        };
        let (mut earliest, mut latest) = (i64::MAX, i64::MIN);
        let mut seen = |t: i64| {
            earliest = earliest.min(t);
            latest = latest.max(t);
        };
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let Some(data) = m.data else {
                    return Err(bad(format!("metric {:?} has no data", m.name)));
                };
                let (kind, mtype) = match &data {
                    metric::Data::Gauge(_) => (Kind::Gauge, "gauge"),
                    metric::Data::Sum(s) if s.is_monotonic => (Kind::MonotonicCounter, "counter"),
                    metric::Data::Sum(_) => (Kind::NonMonotonicCounter, "gauge"),
                    metric::Data::Histogram(_) | metric::Data::ExponentialHistogram(_) => {
                        (Kind::Histogram, "histogram")
                    }
                    metric::Data::Summary(_) => (Kind::Summary, "summary"),
                };
                let name = otlp_names::metric_name(&m.name, &m.unit, kind).map_err(bad)?;
                let md = MetricMetadata {
                    metric_family_name: name.clone(),
                    metric_type: mtype.into(),
                    help: m.description.clone(),
                    unit: otlp_names::unit_name(&m.unit),
                    carriers: vec![],
                };
                if out.families.insert(md.metric_family_name.clone()) {
                    out.metadata.push(md);
                }
                match data {
                    metric::Data::Gauge(g) => {
                        for p in g.data_points {
                            let t = ms(p.time_unix_nano);
                            seen(t);
                            let v = number(&p.value, p.flags);
                            out.float(base.labels(meter, &p.attributes, &name, None)?, t, v);
                        }
                    }
                    metric::Data::Sum(s) => {
                        cumulative(s.aggregation_temporality, &m.name)?;
                        for p in s.data_points {
                            let t = ms(p.time_unix_nano);
                            seen(t);
                            let labels = base.labels(meter, &p.attributes, &name, None)?;
                            let ex = exemplars(&p.exemplars, &mut out.dropped)?;
                            out.exemplars(&labels, ex, meter)?;
                            out.float(labels, t, number(&p.value, p.flags));
                        }
                    }
                    metric::Data::Histogram(h) => {
                        cumulative(h.aggregation_temporality, &m.name)?;
                        for p in h.data_points {
                            seen(ms(p.time_unix_nano));
                            if cfg.convert_histograms_to_nhcb {
                                custom_buckets(&mut out, &base, &name, &p, meter)?;
                            } else {
                                classic(&mut out, &base, &name, &p, meter)?;
                            }
                        }
                    }
                    metric::Data::ExponentialHistogram(h) => {
                        cumulative(h.aggregation_temporality, &m.name)?;
                        for p in h.data_points {
                            let t = ms(p.time_unix_nano);
                            seen(t);
                            let labels = base.labels(meter, &p.attributes, &name, None)?;
                            let ex = exemplars(&p.exemplars, &mut out.dropped)?;
                            out.exemplars(&labels, ex, meter)?;
                            if p.flags & NO_RECORDED_VALUE != 0 {
                                out.float(labels, t, stale_marker());
                            } else {
                                let h = exponential(&p)
                                    .map_err(|e| bad(format!("metric {:?}: {e}", m.name)))?;
                                out.hists.entry(labels).or_default().push((t, h));
                            }
                        }
                    }
                    metric::Data::Summary(s) => {
                        for p in s.data_points {
                            let t = ms(p.time_unix_nano);
                            seen(t);
                            let stale = p.flags & NO_RECORDED_VALUE != 0;
                            let v = |x: f64| if stale { stale_marker() } else { x };
                            out.float(
                                base.labels(meter, &p.attributes, &format!("{name}_sum"), None)?,
                                t,
                                v(p.sum),
                            );
                            out.float(
                                base.labels(meter, &p.attributes, &format!("{name}_count"), None)?,
                                t,
                                v(p.count as f64),
                            );
                            for q in &p.quantile_values {
                                let l = base.labels(
                                    meter,
                                    &p.attributes,
                                    &name,
                                    Some((
                                        "quantile",
                                        crate::model::go_float::format(
                                            q.quantile,
                                            crate::model::go_float::Style::Fixed,
                                        ),
                                    )),
                                )?;
                                out.float(l, t, v(q.value));
                            }
                        }
                    }
                }
            }
        }
        // target_info: the resource's other attributes, once per 2m30s of its points.
        let info_attrs = attributes(&res, &IDENTIFYING)?;
        if latest >= earliest && !info_attrs.is_empty() && !resource_labels.is_empty() {
            let mut l = info_attrs;
            for (k, v) in &resource_labels {
                l.insert(k.clone(), v.clone());
            }
            l.insert(METRIC_NAME.into(), "target_info".into());
            let labels = to_labels(l, meter)?;
            // One sample per 2m30s over the points' span — at most the last day's worth:
            // points further apart are hostile or out of any write window anyway.
            let mut t = earliest.max(latest.saturating_sub(TARGET_INFO_SPAN_MS));
            // Up to a day of samples from two points: charged before they are made.
            meter.charge(2 * 16 * (((latest - t) / 150_000) as usize + 1))?;
            while t < latest {
                out.float(labels.clone(), t, 1.0);
                t += 150_000;
            }
            out.float(labels, latest, 1.0);
            let md = MetricMetadata {
                metric_family_name: "target_info".into(),
                metric_type: "gauge".into(),
                help: "Target metadata".into(),
                unit: String::new(),
                carriers: vec![],
            };
            if out.families.insert(md.metric_family_name.clone()) {
                out.metadata.push(md);
            }
        }
    }
    let mut batch = WriteBatch {
        series: out
            .floats
            .into_iter()
            .map(|(labels, samples)| SeriesSamples { labels, samples })
            .collect(),
        histograms: out
            .hists
            .into_iter()
            .map(|(labels, samples)| SeriesHistograms { labels, samples })
            .collect(),
        exemplars: out
            .exemplars
            .into_iter()
            .map(|(labels, exemplars)| SeriesExemplars { labels, exemplars })
            .collect(),
        metadata: out.metadata,
        dropped_exemplars: out.dropped,
    };
    batch.attribute_metadata(meter)?;
    Ok(batch)
}

fn number(v: &Option<number_data_point::Value>, flags: u32) -> f64 {
    if flags & NO_RECORDED_VALUE != 0 {
        return stale_marker();
    }
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

/// Classic series: `_sum` (when present), `_count`, cumulative `_bucket{le}` and
/// `le="+Inf"` equal to the count; exemplars to the first bucket holding them.
fn classic(
    out: &mut Out,
    base: &Base,
    name: &str,
    p: &HistogramDataPoint,
    meter: &mut Meter,
) -> Result<(), IngestError> {
    let t = ms(p.time_unix_nano);
    let stale = p.flags & NO_RECORDED_VALUE != 0;
    let v = |x: f64| if stale { stale_marker() } else { x };
    if let Some(sum) = p.sum {
        out.float(
            base.labels(meter, &p.attributes, &format!("{name}_sum"), None)?,
            t,
            v(sum),
        );
    }
    out.float(
        base.labels(meter, &p.attributes, &format!("{name}_count"), None)?,
        t,
        v(p.count as f64),
    );
    let mut ex = exemplars(&p.exemplars, &mut out.dropped)?;
    ex.sort_by(|a, b| a.value.total_cmp(&b.value));
    let bucket = format!("{name}_bucket");
    let mut acc = 0u64;
    let mut ex = ex.into_iter().peekable();
    for (bound, n) in p.explicit_bounds.iter().zip(&p.bucket_counts) {
        acc = acc
            .checked_add(*n)
            .ok_or_else(|| bad(format!("histogram {name:?}: bucket counts overflow")))?;
        let l = base.labels(
            meter,
            &p.attributes,
            &bucket,
            Some((
                "le",
                crate::model::go_float::format(*bound, crate::model::go_float::Style::Fixed),
            )),
        )?;
        let mine: Vec<Exemplar> =
            std::iter::from_fn(|| ex.next_if(|e| e.value <= *bound)).collect();
        out.exemplars(&l, mine, meter)?;
        out.float(l, t, v(acc as f64));
    }
    let l = base.labels(meter, &p.attributes, &bucket, Some(("le", "+Inf".into())))?;
    let rest: Vec<Exemplar> = ex.collect();
    out.exemplars(&l, rest, meter)?;
    out.float(l, t, v(p.count as f64));
    Ok(())
}

/// An explicit-bucket histogram as one custom-bucket native histogram named `name`.
fn custom_buckets(
    out: &mut Out,
    base: &Base,
    name: &str,
    p: &HistogramDataPoint,
    meter: &mut Meter,
) -> Result<(), IngestError> {
    let t = ms(p.time_unix_nano);
    let labels = base.labels(meter, &p.attributes, name, None)?;
    let ex = exemplars(&p.exemplars, &mut out.dropped)?;
    out.exemplars(&labels, ex, meter)?;
    if p.flags & NO_RECORDED_VALUE != 0 {
        out.float(labels, t, stale_marker());
        return Ok(());
    }
    let buckets: Vec<f64> = p.bucket_counts.iter().map(|&c| c as f64).collect();
    let h = FloatHistogram {
        hint: CounterResetHint::Unknown,
        schema: crate::model::histogram::CUSTOM_BUCKETS_SCHEMA,
        count: p.count as f64,
        sum: p.sum.unwrap_or(0.0),
        positive_spans: if buckets.is_empty() {
            vec![]
        } else {
            vec![Span {
                offset: 0,
                length: buckets.len() as u32,
            }]
        },
        positive_buckets: buckets,
        custom_values: p.explicit_bounds.clone(),
        ..FloatHistogram::empty()
    };
    h.validate()
        .map_err(|e| bad(format!("histogram {name:?}: {e}")))?;
    out.hists.entry(labels).or_default().push((t, h));
    Ok(())
}

/// An OTLP exponential histogram as a native histogram: OTLP bucket `i` covers
/// `(base^i, base^(i+1)]`, Prometheus bucket `j` covers `(base^(j-1), base^j]`, so
/// `j = i + 1`; scales finer than 8 are merged down to schema 8 (counts summed per merged
/// index). Prometheus's own merge misplaces buckets after an empty merged group; this one
/// sums per index.
fn exponential(p: &ExponentialHistogramDataPoint) -> Result<FloatHistogram, String> {
    // OTLP defines scales -10..=20; below -4 Prometheus has no schema.
    if p.scale > 20 {
        return Err(format!("scale {} is above OTLP's maximum of 20", p.scale));
    }
    if p.scale < -4 {
        return Err(format!(
            "cannot convert exponential to native histogram: scale must be >= -4, was {}",
            p.scale
        ));
    }
    let (schema, down) = if p.scale > 8 {
        (8, (p.scale - 8) as u32)
    } else {
        (p.scale, 0)
    };
    let side = |b: &Option<
        opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets,
    >| {
        let mut by_index: BTreeMap<i64, f64> = BTreeMap::new();
        if let Some(b) = b {
            for (k, &c) in b.bucket_counts.iter().enumerate() {
                let i = b.offset as i64 + k as i64;
                *by_index.entry((i >> down) + 1).or_default() += c as f64;
            }
        }
        // Trailing and leading empty buckets carry nothing.
        by_index.retain(|_, c| *c != 0.0);
        if let Some((&i, _)) = by_index
            .iter()
            .find(|(i, _)| i.abs() > crate::model::histogram::MAX_BUCKET_INDEX)
        {
            return Err(format!("bucket index {i} is out of range"));
        }
        let mut spans: Vec<Span> = Vec::new();
        let mut counts = Vec::with_capacity(by_index.len());
        let mut prev: Option<i64> = None;
        for (i, c) in by_index {
            match prev {
                Some(p) if i == p + 1 => spans.last_mut().expect("open span").length += 1,
                Some(p) => spans.push(Span {
                    offset: (i - p - 1) as i32,
                    length: 1,
                }),
                None => spans.push(Span {
                    offset: i as i32,
                    length: 1,
                }),
            }
            counts.push(c);
            prev = Some(i);
        }
        Ok((spans, counts))
    };
    let (positive_spans, positive_buckets) = side(&p.positive)?;
    let (negative_spans, negative_buckets) = side(&p.negative)?;
    let h = FloatHistogram {
        hint: CounterResetHint::Unknown,
        schema,
        zero_threshold: 1e-128,
        zero_count: p.zero_count as f64,
        count: p.count as f64,
        sum: p.sum.unwrap_or(0.0),
        positive_spans,
        negative_spans,
        positive_buckets,
        negative_buckets,
        custom_values: vec![],
    };
    h.validate().map_err(|e| e.to_string())?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;

    /// Points a lifetime apart make `target_info` samples for the last day only, not one
    /// per 2m30s since 1970.
    #[test]
    fn target_info_samples_are_bounded() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::metrics::v1::{
            Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let attr = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        };
        let point = |ns: u64| NumberDataPoint {
            time_unix_nano: ns,
            value: Some(number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![attr("service.name", "s"), attr("host.name", "h")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "g".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![point(0), point(u64::MAX)],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let b = translate(
            req,
            &OtlpConfig::default(),
            &mut Meter::new(Default::default()),
        )
        .unwrap();
        let info = b
            .series
            .iter()
            .find(|s| s.labels.metric_name() == Some("target_info"))
            .unwrap();
        assert_eq!(
            info.samples.len(),
            577,
            "one day of 2m30s steps and the last point"
        );
    }

    #[test]
    fn exponential_buckets_shift_by_one_and_merge_per_index() {
        let p = ExponentialHistogramDataPoint {
            scale: 9,
            count: 6,
            sum: Some(10.0),
            positive: Some(Buckets {
                offset: 0,
                bucket_counts: vec![2, 2, 0, 0, 1, 1],
            }),
            ..Default::default()
        };
        let h = exponential(&p).unwrap();
        assert_eq!(h.schema, 8);
        // OTLP 0..5 merged in pairs → Prometheus 1, 2, 3 with 4, 0, 2: the empty one goes.
        assert_eq!(
            h.positive_spans,
            vec![
                Span {
                    offset: 1,
                    length: 1
                },
                Span {
                    offset: 1,
                    length: 1
                }
            ]
        );
        assert_eq!(h.positive_buckets, vec![4.0, 2.0]);
        let too_coarse = ExponentialHistogramDataPoint {
            scale: -5,
            ..Default::default()
        };
        assert!(exponential(&too_coarse).is_err());
    }
}
