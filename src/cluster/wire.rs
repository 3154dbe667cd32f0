//! A distributor's batch for one shard, on the wire to the shard's owner: the WAL segment
//! format (`storage::wal::SegmentBuf`: framed, checksummed records, series declared
//! by label set), so ids never cross the process boundary and the writer decodes with the
//! code that replays its WAL.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ingest::{SeriesExemplars, SeriesHistograms, SeriesSamples, WriteBatch};
use crate::model::Labels;
use crate::storage::wal::{Replayed, SegmentBuf, replay_bytes};

/// Encodes a batch, consuming it (label sets, histograms and exemplars move into the
/// records, nothing is copied): each series gets a ref local to this message.
pub fn encode(batch: WriteBatch) -> std::io::Result<Vec<u8>> {
    let mut refs: HashMap<Labels, u32> = HashMap::new();
    let mut series: Vec<(u32, Labels)> = Vec::new();
    let mut r = |l: Labels| -> u32 {
        if let Some(&id) = refs.get(&l) {
            return id;
        }
        let id = refs.len() as u32;
        refs.insert(l.clone(), id);
        series.push((id, l));
        id
    };
    let mut samples = Vec::with_capacity(batch.float_count());
    for s in batch.series {
        let id = r(s.labels);
        samples.extend(s.samples.into_iter().map(|(t, v)| (id, t, v)));
    }
    let mut hists = Vec::new();
    for s in batch.histograms {
        let id = r(s.labels);
        hists.extend(s.samples.into_iter().map(|(t, h)| (id, t, Arc::new(h))));
    }
    let mut exemplars = Vec::new();
    for s in batch.exemplars {
        let id = r(s.labels);
        exemplars.extend(s.exemplars.into_iter().map(|e| (id, Arc::new(e))));
    }
    let mut seg = SegmentBuf::new();
    seg.append(&series, &samples, &hists, &exemplars)?;
    if !batch.metadata.is_empty() {
        seg.append_metadata(&batch.metadata)?;
    }
    Ok(seg.into_bytes())
}

/// Groups `(ref, item)` pairs by ref into one entry per series, in first-seen order.
fn group<T, S>(
    items: impl IntoIterator<Item = (u32, T)>,
    labels: &HashMap<u32, Labels>,
    bad: &mut bool,
    make: impl Fn(Labels, Vec<T>) -> S,
) -> Vec<S> {
    let mut order: Vec<(Labels, Vec<T>)> = Vec::new();
    let mut at: HashMap<u32, usize> = HashMap::new();
    for (r, item) in items {
        let Some(l) = labels.get(&r) else {
            *bad = true;
            continue;
        };
        let i = *at.entry(r).or_insert_with(|| {
            order.push((l.clone(), Vec::new()));
            order.len() - 1
        });
        order[i].1.push(item);
    }
    order.into_iter().map(|(l, v)| make(l, v)).collect()
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
            batch.series.extend(group(
                samples.into_iter().map(|(r, t, v)| (r, (t, v))),
                &labels,
                &mut bad,
                |labels, samples| SeriesSamples { labels, samples },
            ));
            batch.histograms.extend(group(
                hists.into_iter().map(|(r, t, h)| (r, (t, h))),
                &labels,
                &mut bad,
                |labels, samples| SeriesHistograms { labels, samples },
            ));
            batch
                .exemplars
                .extend(group(exemplars, &labels, &mut bad, |labels, exemplars| {
                    SeriesExemplars { labels, exemplars }
                }));
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
        let bytes = encode(batch.clone()).unwrap();
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
