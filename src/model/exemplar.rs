//! Exemplars: a sample's trace reference (`{trace_id="…"} 0.43 1700000000.123`), kept
//! beside the series it belongs to.

use super::Labels;

/// OpenMetrics' limit on an exemplar's label set: names and values together, in runes.
pub const MAX_EXEMPLAR_LABEL_RUNES: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// The exemplar's own labels (often just a trace id); may be empty.
    pub labels: Labels,
    pub value: f64,
    /// Milliseconds.
    pub ts: i64,
}

impl Exemplar {
    /// Checks what Prometheus checks on ingest: the label set's length, no duplicate or
    /// empty names (`Labels` has already sorted and deduplicated them).
    pub fn validate(&self) -> Result<(), String> {
        let runes: usize = self
            .labels
            .iter()
            .map(|(n, v)| n.chars().count() + v.chars().count())
            .sum();
        if runes > MAX_EXEMPLAR_LABEL_RUNES {
            return Err(format!(
                "exemplar labels {} are {runes} characters long, more than {MAX_EXEMPLAR_LABEL_RUNES}",
                self.labels
            ));
        }
        Ok(())
    }

    /// An exemplar's labels from pairs: like a series' (sorted, empty values dropped, names
    /// unique), but an empty set is allowed.
    pub fn labels_from(pairs: Vec<(String, String)>) -> Result<Labels, super::LabelError> {
        if pairs.iter().all(|(_, v)| v.is_empty()) {
            if let Some((_, v)) = pairs.iter().find(|(n, _)| n.is_empty()) {
                return Err(super::LabelError::EmptyName { value: v.clone() });
            }
            return Ok(Labels::default());
        }
        Labels::new(pairs)
    }
}
