//! A distributor's batch for one shard, on the wire to the shard's owner: the WAL segment
//! format (`storage::wal::SegmentBuf`: framed, checksummed records, series declared
//! by label set), so ids never cross the process boundary and the writer decodes with the
//! code that replays its WAL.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ingest::{SeriesExemplars, SeriesHistograms, SeriesSamples, WriteBatch};
use crate::model::Labels;
use crate::storage::wal::{Replayed, SegmentBuf, replay_bytes};

/// Encodes a batch: each series gets a ref local to this message.
pub fn encode(batch: &WriteBatch) -> std::io::Result<Vec<u8>> {
    let mut refs: HashMap<&Labels, u32> = HashMap::new();
    let mut series: Vec<(u32, Arc<Labels>)> = Vec::new();
    fn r<'a>(
        l: &'a Labels,
        refs: &mut HashMap<&'a Labels, u32>,
        series: &mut Vec<(u32, Arc<Labels>)>,
    ) -> u32 {
        let n = refs.len() as u32;
        *refs.entry(l).or_insert_with(|| {
            series.push((n, Arc::new(l.clone())));
            n
        })
    }
    let mut samples = Vec::with_capacity(batch.float_count());
    for s in &batch.series {
        let id = r(&s.labels, &mut refs, &mut series);
        samples.extend(s.samples.iter().map(|&(t, v)| (id, t, v)));
    }
    let mut hists = Vec::new();
    for s in &batch.histograms {
        let id = r(&s.labels, &mut refs, &mut series);
        hists.extend(s.samples.iter().map(|(t, h)| (id, *t, Arc::new(h.clone()))));
    }
    let mut exemplars = Vec::new();
    for s in &batch.exemplars {
        let id = r(&s.labels, &mut refs, &mut series);
        exemplars.extend(s.exemplars.iter().map(|e| (id, Arc::new(e.clone()))));
    }
    let mut seg = SegmentBuf::new();
    seg.append(&series, &samples, &hists, &exemplars)?;
    if !batch.metadata.is_empty() {
        seg.append_metadata(&batch.metadata)?;
    }
    Ok(seg.into_bytes())
}

/// Decodes what [`encode`] wrote. A message that is cut short or fails a checksum is
/// refused whole.
pub fn decode(bytes: &[u8]) -> Result<WriteBatch, String> {
    let mut batch = WriteBatch::default();
    let mut bad = false;
    let stats = replay_bytes(bytes, "push", |rec| match rec {
        Replayed::Samples {
            series,
            samples,
            hists,
            exemplars,
        } => {
            let labels: HashMap<u32, Labels> = series.into_iter().collect();
            let mut floats: Vec<(u32, SeriesSamples)> = Vec::new();
            let mut at: HashMap<u32, usize> = HashMap::new();
            for (r, t, v) in samples {
                let Some(l) = labels.get(&r) else {
                    bad = true;
                    continue;
                };
                let i = *at.entry(r).or_insert_with(|| {
                    floats.push((
                        r,
                        SeriesSamples {
                            labels: l.clone(),
                            samples: Vec::new(),
                        },
                    ));
                    floats.len() - 1
                });
                floats[i].1.samples.push((t, v));
            }
            batch.series.extend(floats.into_iter().map(|(_, s)| s));
            let mut hs: Vec<SeriesHistograms> = Vec::new();
            let mut hat: HashMap<u32, usize> = HashMap::new();
            for (r, t, h) in hists {
                let Some(l) = labels.get(&r) else {
                    bad = true;
                    continue;
                };
                let i = *hat.entry(r).or_insert_with(|| {
                    hs.push(SeriesHistograms {
                        labels: l.clone(),
                        samples: Vec::new(),
                    });
                    hs.len() - 1
                });
                hs[i].samples.push((t, h));
            }
            batch.histograms.extend(hs);
            let mut es: Vec<SeriesExemplars> = Vec::new();
            let mut eat: HashMap<u32, usize> = HashMap::new();
            for (r, e) in exemplars {
                let Some(l) = labels.get(&r) else {
                    bad = true;
                    continue;
                };
                let i = *eat.entry(r).or_insert_with(|| {
                    es.push(SeriesExemplars {
                        labels: l.clone(),
                        exemplars: Vec::new(),
                    });
                    es.len() - 1
                });
                es[i].exemplars.push(e);
            }
            batch.exemplars.extend(es);
        }
        Replayed::Metadata(md) => batch.metadata.extend(md),
    })
    .map_err(|e| e.to_string())?;
    if bad || stats.truncated_bytes > 0 || stats.undecodable > 0 {
        return Err("push body is corrupt".into());
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::MetricMetadata;
    use crate::model::exemplar::Exemplar;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_batch_survives_the_wire() {
        let a = l(&[("__name__", "up"), ("job", "a")]);
        let batch = WriteBatch {
            series: vec![
                SeriesSamples {
                    labels: a.clone(),
                    samples: vec![(1, 1.0), (2, f64::NAN)],
                },
                SeriesSamples {
                    labels: l(&[("__name__", "up"), ("job", "b")]),
                    samples: vec![(3, -0.0)],
                },
            ],
            histograms: vec![],
            exemplars: vec![SeriesExemplars {
                labels: a.clone(),
                exemplars: vec![Exemplar {
                    labels: l(&[("trace_id", "x")]),
                    value: 2.0,
                    ts: 1,
                }],
            }],
            metadata: vec![MetricMetadata {
                metric_family_name: "up".into(),
                metric_type: "gauge".into(),
                help: "h".into(),
                unit: String::new(),
                carriers: vec![a],
            }],
            dropped_exemplars: 0,
        };
        let bytes = encode(&batch).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.series.len(), 2);
        assert_eq!(back.series[0].samples[0], (1, 1.0));
        assert!(back.series[0].samples[1].1.is_nan());
        assert_eq!(back.series[1].samples[0].1.to_bits(), (-0.0f64).to_bits());
        assert_eq!(back.exemplars, batch.exemplars);
        assert_eq!(back.metadata, batch.metadata);
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 3);
        assert!(decode(&cut).is_err(), "a cut message is refused whole");
    }
}
