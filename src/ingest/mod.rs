//! Ingest: turns wire formats (remote write protobuf, Prometheus/OpenMetrics text) into
//! validated [`WriteBatch`]es. Nothing here touches storage; `storage::Storage::append`
//! decides what is accepted and makes it durable.

pub mod budget;
pub mod family;
pub mod native_histogram;
pub mod otlp;
pub mod otlp_names;
pub mod prompb;
pub mod remote_write;
pub mod remote_write_v2;
pub mod text;

use thiserror::Error;

use crate::model::exemplar::Exemplar;
use crate::model::histogram::FloatHistogram;
use crate::model::{LabelError, Labels};

/// One series and its samples from a single request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    /// `(timestamp ms, value)`; order as received.
    pub samples: Vec<(i64, f64)>,
}

/// One series' native-histogram samples from a single request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesHistograms {
    pub labels: Labels,
    /// `(timestamp ms, histogram)`; order as received.
    pub samples: Vec<(i64, FloatHistogram)>,
}

/// One series' exemplars from a single request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesExemplars {
    pub labels: Labels,
    pub exemplars: Vec<Exemplar>,
}

/// Metric metadata of one family, and the series of the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetricMetadata {
    pub metric_family_name: String,
    #[serde(rename = "type")]
    pub metric_type: String,
    pub help: String,
    pub unit: String,
    /// The series it came with (remote write 2.0: the series that carried it; 1.0 and
    /// OTLP: the request's series of the family). Readers see metadata only through a
    /// carrier they may see; none: unattributed (readers without enforced matchers only).
    /// See `storage::metadata`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "carriers_serde"
    )]
    pub carriers: Vec<Labels>,
}

/// Carriers in the WAL's JSON: label sets as lists of `[name, value]`.
mod carriers_serde {
    use super::Labels;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Labels], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|l| l.to_pairs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Labels>, D::Error> {
        let raw: Vec<Vec<(String, String)>> = Vec::deserialize(d)?;
        raw.into_iter()
            .map(|p| Labels::new(p).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Everything one request wants to store. It is accepted or rejected as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub series: Vec<SeriesSamples>,
    /// Native-histogram samples (a series may also appear in `series` with floats).
    pub histograms: Vec<SeriesHistograms>,
    pub exemplars: Vec<SeriesExemplars>,
    pub metadata: Vec<MetricMetadata>,
    /// Exemplars the request carried that are not stored (invalid labels, outside the
    /// write window): like Prometheus, their samples are kept and the drop is counted
    /// (`quiver_exemplars_dropped_total`) rather than failing the write.
    pub dropped_exemplars: usize,
}

impl WriteBatch {
    /// Float and histogram samples.
    pub fn sample_count(&self) -> usize {
        self.float_count() + self.histogram_count()
    }

    pub fn float_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    pub fn histogram_count(&self) -> usize {
        self.histograms.iter().map(|s| s.samples.len()).sum()
    }

    /// What the write rate limit counts: floats, histograms by their size, exemplars.
    pub fn admission_weight(&self) -> usize {
        self.float_count()
            + self
                .histograms
                .iter()
                .flat_map(|s| s.samples.iter())
                .map(|(_, h)| h.sample_weight())
                .sum::<usize>()
            + self.exemplar_count()
    }

    /// Drops exemplars outside `[min_t, max_t]` (counted in `dropped_exemplars`).
    pub fn retain_exemplars_within(&mut self, min_t: i64, max_t: i64) {
        for s in &mut self.exemplars {
            let before = s.exemplars.len();
            s.exemplars.retain(|e| e.ts >= min_t && e.ts <= max_t);
            self.dropped_exemplars += before - s.exemplars.len();
        }
        self.exemplars.retain(|s| !s.exemplars.is_empty());
    }

    /// Gives metadata without carriers the request's series of its family (remote write
    /// 1.0, OTLP: metadata names a family, not series). One entry per family is kept (the
    /// last, as a later one would overwrite it); metadata whose family has no series in the
    /// request stays unattributed. Each carrier is a copy of a label set: charged.
    pub fn attribute_metadata(&mut self, meter: &mut budget::Meter) -> Result<(), IngestError> {
        if self.metadata.iter().all(|m| !m.carriers.is_empty()) {
            return Ok(());
        }
        // The last unattributed entry of each family.
        let mut last: std::collections::HashMap<&str, usize> = Default::default();
        for (i, m) in self.metadata.iter().enumerate() {
            if m.carriers.is_empty() {
                last.insert(m.metric_family_name.as_str(), i);
            }
        }
        let keep: std::collections::HashSet<usize> = last.into_values().collect();
        // Series by the families their name may belong to, in one pass.
        let mut by_family: std::collections::HashMap<&str, Vec<&Labels>> = Default::default();
        let wanted: std::collections::HashSet<&str> = keep
            .iter()
            .map(|&i| self.metadata[i].metric_family_name.as_str())
            .collect();
        for l in self
            .series
            .iter()
            .map(|s| &s.labels)
            .chain(self.histograms.iter().map(|s| &s.labels))
        {
            let Some(name) = l.metric_name() else {
                continue;
            };
            for f in family::candidates(name) {
                if wanted.contains(f) {
                    by_family.entry(f).or_default().push(l);
                }
            }
        }
        let mut out = Vec::with_capacity(self.metadata.len());
        for (i, mut md) in std::mem::take(&mut self.metadata).into_iter().enumerate() {
            if md.carriers.is_empty() {
                if !keep.contains(&i) {
                    continue;
                }
                let mut carriers: Vec<Labels> = Vec::new();
                if let Some(ls) = by_family.get(md.metric_family_name.as_str()) {
                    for l in ls {
                        meter.charge(l.heap_bytes() + 32)?;
                        carriers.push((*l).clone());
                    }
                }
                carriers.sort();
                carriers.dedup();
                md.carriers = carriers;
            }
            out.push(md);
        }
        self.metadata = out;
        Ok(())
    }

    /// The first series (of any lane, or a metadata carrier) that `may` refuses.
    pub fn first_refused(&self, may: impl Fn(&Labels) -> bool) -> Option<&Labels> {
        self.series
            .iter()
            .map(|s| &s.labels)
            .chain(self.histograms.iter().map(|s| &s.labels))
            .chain(self.exemplars.iter().map(|s| &s.labels))
            .chain(self.metadata.iter().flat_map(|m| m.carriers.iter()))
            .find(|l| !may(l))
    }

    pub fn exemplar_count(&self) -> usize {
        self.exemplars.iter().map(|s| s.exemplars.len()).sum()
    }
}

/// Why an ingest payload was rejected. Every variant is the client's fault (HTTP 400/413/415).
#[derive(Debug, Error)]
pub enum IngestError {
    #[error("snappy decompression failed: {0}")]
    Snappy(#[from] snap::Error),
    #[error("protobuf decoding failed: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid labels {labels}: {source}")]
    Labels {
        labels: String,
        #[source]
        source: LabelError,
    },
    #[error("line {line}: {message}")]
    Parse { line: u64, message: String },
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "decoding this request would build at least {needed} bytes, over the decode budget of {limit} bytes (--ingest-decode-budget); send smaller requests"
    )]
    Budget { needed: usize, limit: usize },
    /// The decodes in flight hold the whole pool (`--ingest-decode-budget` × 4): 503.
    #[error(
        "the requests being decoded hold the decode budget (--ingest-decode-budget); retry later"
    )]
    Busy,
    /// The heads are nearly at `--head-memory-limit`: 503 until a flush frees them.
    #[error(
        "the heads can hold only ~{room} more bytes before --head-memory-limit; retry after the next flush"
    )]
    HeadFull { room: usize },
    #[error("unsupported {what}: {value:?}")]
    Unsupported { what: &'static str, value: String },
    /// Samples of a kind Quiver does not store yet: the whole request is refused rather
    /// than stored in part, so the sender sees the loss.
    #[error(
        "{kind} are not stored yet: the request carries {count} in {series} series and was refused whole (nothing written); stop sending them ({hint})"
    )]
    Unstored {
        kind: &'static str,
        count: usize,
        series: usize,
        hint: &'static str,
    },
    #[error("invalid native histogram for series {labels} at {timestamp_ms}: {message}")]
    Histogram {
        labels: String,
        timestamp_ms: i64,
        message: String,
    },
    #[error("invalid exemplar for series {labels} at {timestamp_ms}: {message}")]
    Exemplar {
        labels: String,
        timestamp_ms: i64,
        message: String,
    },
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
}
