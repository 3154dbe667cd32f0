//! Prometheus remote write 1.0: snappy block-compressed protobuf `WriteRequest`.

use prost::Message;

use super::prompb::{self, MetricType};
use super::{IngestError, MetricMetadata, SeriesSamples, WriteBatch};
use crate::model::Labels;

/// Upper bound on the decompressed size, so a small malicious body cannot make us allocate
/// gigabytes (snappy states the decompressed length up front).
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// Decodes a remote-write 1.0 body into a validated batch.
pub fn decode(body: &[u8]) -> Result<WriteBatch, IngestError> {
    let len = snap::raw::decompress_len(body)?;
    if len > MAX_DECOMPRESSED {
        return Err(IngestError::TooLarge {
            size: len,
            limit: MAX_DECOMPRESSED,
        });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    let req = prompb::WriteRequest::decode(raw.as_slice())?;
    from_proto(req)
}

/// Converts a decoded `WriteRequest`, validating every label set.
pub fn from_proto(req: prompb::WriteRequest) -> Result<WriteBatch, IngestError> {
    refuse_unstored(&req)?;
    let mut series = Vec::with_capacity(req.timeseries.len());
    for ts in req.timeseries {
        if ts.samples.is_empty() {
            continue;
        }
        let pairs: Vec<(String, String)> =
            ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
        let labels = Labels::new(pairs.clone()).map_err(|source| IngestError::Labels {
            labels: format_pairs(&pairs),
            source,
        })?;
        let samples = ts
            .samples
            .into_iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        series.push(SeriesSamples { labels, samples });
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
        })
        .collect();
    Ok(WriteBatch { series, metadata })
}

/// Native histograms and exemplars are not stored yet: a request carrying any is refused
/// (400) with what it held, never acknowledged with them dropped.
fn refuse_unstored(req: &prompb::WriteRequest) -> Result<(), IngestError> {
    let count = |f: fn(&prompb::TimeSeries) -> usize| {
        req.timeseries
            .iter()
            .map(f)
            .filter(|&n| n > 0)
            .fold((0, 0), |(n, s), k| (n + k, s + 1))
    };
    let (n, s) = count(|ts| ts.histograms.len());
    if n > 0 {
        return Err(IngestError::Unstored {
            kind: "native histograms",
            count: n,
            series: s,
            hint: "remote_write send_native_histograms: false, or scrape classic histograms",
        });
    }
    let (n, s) = count(|ts| ts.exemplars.len());
    if n > 0 {
        return Err(IngestError::Unstored {
            kind: "exemplars",
            count: n,
            series: s,
            hint: "remote_write send_exemplars: false",
        });
    }
    Ok(())
}

/// Encodes a batch as a remote-write 1.0 body (used by tests, benchmarks and self-monitoring).
pub fn encode(batch: &WriteBatch) -> Vec<u8> {
    let req = prompb::WriteRequest {
        timeseries: batch
            .series
            .iter()
            .map(|s| prompb::TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(n, v)| prompb::Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
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
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compression of an in-memory buffer cannot fail")
}

fn format_pairs(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STALE_NAN_BITS;

    fn batch() -> WriteBatch {
        WriteBatch {
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
        let got = decode(&encode(&batch())).unwrap();
        assert_eq!(got.series[0].labels, batch().series[0].labels);
        assert_eq!(got.series[0].samples[1].1.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            decode(b"not snappy at all"),
            Err(IngestError::Snappy(_))
        ));
        let bad_proto = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(matches!(decode(&bad_proto), Err(IngestError::Protobuf(_))));
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
        let err = decode(&body).unwrap_err().to_string();
        assert!(err.contains("duplicate label name \"a\""), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&data);
            let framed = snap::raw::Encoder::new().compress_vec(&data).unwrap();
            let _ = decode(&framed);
        }
    }
}
