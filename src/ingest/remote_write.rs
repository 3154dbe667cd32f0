//! Prometheus remote write 1.0: snappy block-compressed protobuf `WriteRequest`.

use prost::Message;

use super::budget::{Meter, charge_wire, schemas};
use super::native_histogram::{self, Decoded};
use super::prompb::{self, MetricType};
use super::{
    IngestError, MetricMetadata, SeriesExemplars, SeriesHistograms, SeriesSamples, WriteBatch,
};
use crate::model::Labels;
use crate::model::exemplar::Exemplar;

/// Upper bound on the decompressed size, so a small malicious body cannot make us allocate
/// gigabytes (snappy states the decompressed length up front).
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// Decodes a remote-write 1.0 body into a validated batch, charging `meter` for everything
/// it builds before building it.
pub fn decode(body: &[u8], meter: &mut Meter) -> Result<WriteBatch, IngestError> {
    let raw = snappy(body, meter)?;
    charge_wire(&raw, &schemas::RW1_REQUEST, meter)?;
    let req = prompb::WriteRequest::decode(raw.as_slice())?;
    drop(raw);
    from_proto(req, meter)
}

/// Decompresses a snappy block, charging its stated length first (both remote write
/// versions).
pub(super) fn snappy(body: &[u8], meter: &mut Meter) -> Result<Vec<u8>, IngestError> {
    let len = snap::raw::decompress_len(body)?;
    if len > MAX_DECOMPRESSED {
        return Err(IngestError::TooLarge {
            size: len,
            limit: MAX_DECOMPRESSED,
        });
    }
    meter.charge(len)?;
    Ok(snap::raw::Decoder::new().decompress_vec(body)?)
}

/// Converts a decoded `WriteRequest`, validating every label set and histogram; the label
/// sets it builds are charged to `meter`.
pub fn from_proto(req: prompb::WriteRequest, meter: &mut Meter) -> Result<WriteBatch, IngestError> {
    let mut series = Vec::with_capacity(req.timeseries.len());
    let mut histograms = Vec::new();
    let mut exemplars = Vec::new();
    let mut dropped_exemplars = 0;
    for ts in req.timeseries {
        if ts.samples.is_empty() && ts.histograms.is_empty() && ts.exemplars.is_empty() {
            continue;
        }
        meter.charge_labels(
            ts.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        )?;
        let pairs: Vec<(String, String)> =
            ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
        let labels = Labels::new(pairs.clone()).map_err(|source| IngestError::Labels {
            labels: format_pairs(&pairs),
            source,
        })?;
        let mut samples: Vec<(i64, f64)> = ts
            .samples
            .into_iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        let mut hists = Vec::with_capacity(ts.histograms.len());
        for h in &ts.histograms {
            match native_histogram::from_proto(h) {
                Ok(Decoded::Histogram(fh)) => hists.push((h.timestamp, fh)),
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
        if !ts.exemplars.is_empty() {
            let n = ts.exemplars.len();
            let valid: Vec<Exemplar> = ts
                .exemplars
                .into_iter()
                .filter_map(|e| exemplar(e.labels, e.value, e.timestamp).ok())
                .collect();
            dropped_exemplars += n - valid.len();
            if !valid.is_empty() {
                meter.charge(labels.heap_bytes() + 64)?;
                exemplars.push(SeriesExemplars {
                    labels: labels.clone(),
                    exemplars: valid,
                });
            }
        }
        if !hists.is_empty() {
            meter.charge(labels.heap_bytes() + 64)?;
            histograms.push(SeriesHistograms {
                labels: labels.clone(),
                samples: hists,
            });
        }
        if !samples.is_empty() {
            series.push(SeriesSamples { labels, samples });
        }
    }
    let metadata = req
        .metadata
        .into_iter()
        .filter(|m| !m.metric_family_name.is_empty())
        .map(|m| MetricMetadata {
            metric_type: MetricType::try_from(m.r#type)
                .unwrap_or(MetricType::Unknown)
                .api_name()
                .to_string(),
            metric_family_name: m.metric_family_name,
            help: m.help,
            unit: m.unit,
            carriers: vec![],
        })
        .collect();
    let mut batch = WriteBatch {
        series,
        histograms,
        exemplars,
        metadata,
        dropped_exemplars,
    };
    batch.attribute_metadata(meter)?;
    Ok(batch)
}

/// Validates one exemplar (remote write 1.0 and 2.0); an invalid one is dropped by the
/// callers (its samples are kept, as in Prometheus), so the error is only why — never the
/// series' text, which a request with many invalid exemplars would format again each time.
pub(super) fn exemplar(
    labels: Vec<prompb::Label>,
    value: f64,
    ts: i64,
) -> Result<Exemplar, String> {
    let pairs: Vec<(String, String)> = labels.into_iter().map(|l| (l.name, l.value)).collect();
    let labels = Exemplar::labels_from(pairs).map_err(|e| e.to_string())?;
    let e = Exemplar { labels, value, ts };
    e.validate()?;
    Ok(e)
}

/// Encodes a batch as a remote-write 1.0 body (used by tests, benchmarks and self-monitoring).
pub fn encode(batch: &WriteBatch) -> Vec<u8> {
    let req = prompb::WriteRequest {
        timeseries: batch
            .series
            .iter()
            .map(|s| prompb::TimeSeries {
                labels: proto_labels(&s.labels),
                samples: s
                    .samples
                    .iter()
                    .map(|&(t, v)| prompb::Sample {
                        timestamp: t,
                        value: v,
                    })
                    .collect(),
                exemplars: vec![],
                histograms: vec![],
            })
            .chain(batch.histograms.iter().map(|s| {
                prompb::TimeSeries {
                    labels: proto_labels(&s.labels),
                    samples: vec![],
                    exemplars: vec![],
                    histograms: s
                        .samples
                        .iter()
                        .map(|(t, h)| native_histogram::to_proto(h, *t))
                        .collect(),
                }
            }))
            .chain(batch.exemplars.iter().map(|s| {
                prompb::TimeSeries {
                    labels: proto_labels(&s.labels),
                    samples: vec![],
                    exemplars: s
                        .exemplars
                        .iter()
                        .map(|e| prompb::Exemplar {
                            labels: proto_labels(&e.labels),
                            value: e.value,
                            timestamp: e.ts,
                        })
                        .collect(),
                    histograms: vec![],
                }
            }))
            .collect(),
        metadata: batch
            .metadata
            .iter()
            .map(|m| prompb::MetricMetadata {
                r#type: [
                    MetricType::Counter,
                    MetricType::Gauge,
                    MetricType::Histogram,
                    MetricType::Gaugehistogram,
                    MetricType::Summary,
                    MetricType::Info,
                    MetricType::Stateset,
                ]
                .into_iter()
                .find(|t| t.api_name() == m.metric_type)
                .unwrap_or(MetricType::Unknown) as i32,
                metric_family_name: m.metric_family_name.clone(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compression of an in-memory buffer cannot fail")
}

fn proto_labels(l: &Labels) -> Vec<prompb::Label> {
    l.iter()
        .map(|(n, v)| prompb::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn format_pairs(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmetered() -> Meter {
        Meter::new(Default::default())
    }
    use crate::model::STALE_NAN_BITS;

    fn batch() -> WriteBatch {
        WriteBatch {
            histograms: Vec::new(),
            exemplars: Vec::new(),
            dropped_exemplars: 0,
            series: vec![SeriesSamples {
                labels: Labels::new(vec![
                    ("__name__".into(), "up".into()),
                    ("job".into(), "a".into()),
                ])
                .unwrap(),
                samples: vec![(1000, 1.0), (2000, f64::from_bits(STALE_NAN_BITS))],
            }],
            metadata: vec![],
        }
    }

    #[test]
    fn roundtrip_keeps_stale_marker_bits() {
        let got = decode(&encode(&batch()), &mut unmetered()).unwrap();
        assert_eq!(got.series[0].labels, batch().series[0].labels);
        assert_eq!(got.series[0].samples[1].1.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            decode(b"not snappy at all", &mut unmetered()),
            Err(IngestError::Snappy(_))
        ));
        let bad_proto = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(matches!(
            decode(&bad_proto, &mut unmetered()),
            Err(IngestError::Protobuf(_) | IngestError::Parse { .. })
        ));
    }

    #[test]
    fn rejects_duplicate_labels() {
        let req = prompb::WriteRequest {
            timeseries: vec![prompb::TimeSeries {
                labels: vec![
                    prompb::Label {
                        name: "a".into(),
                        value: "1".into(),
                    },
                    prompb::Label {
                        name: "a".into(),
                        value: "2".into(),
                    },
                ],
                samples: vec![prompb::Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        let err = decode(&body, &mut unmetered()).unwrap_err().to_string();
        assert!(err.contains("duplicate label name \"a\""), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&data, &mut unmetered());
            let framed = snap::raw::Encoder::new().compress_vec(&data).unwrap();
            let _ = decode(&framed, &mut unmetered());
        }
    }
}
