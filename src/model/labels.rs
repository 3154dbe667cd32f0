use std::fmt;

use thiserror::Error;

/// Label name that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Why a label set was rejected. Mirrors the checks Prometheus applies on ingest.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LabelError {
    #[error("empty label name (value {value:?})")]
    EmptyName { value: String },
    #[error("duplicate label name {name:?}")]
    Duplicate { name: String },
    #[error("series has no labels")]
    NoLabels,
}

/// A series identity: label pairs sorted by name, names unique, no empty values
/// (Prometheus treats an empty value as an absent label).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Validates and sorts label pairs as Prometheus does on ingest.
    pub fn new(mut pairs: Vec<(String, String)>) -> Result<Self, LabelError> {
        pairs.retain(|(_, v)| !v.is_empty());
        if let Some((_, v)) = pairs.iter().find(|(n, _)| n.is_empty()) {
            return Err(LabelError::EmptyName { value: v.clone() });
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        for w in pairs.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(LabelError::Duplicate {
                    name: w[0].0.clone(),
                });
            }
        }
        if pairs.is_empty() {
            return Err(LabelError::NoLabels);
        }
        Ok(Labels(pairs))
    }

    /// Builds from pairs already known to be valid and sorted (e.g. read back from a block).
    pub fn from_sorted_unchecked(pairs: Vec<(String, String)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        Labels(pairs)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Labels {
    /// Prometheus's text form: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for (n, v) in self.iter().filter(|(n, _)| *n != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str, v: &str) -> (String, String) {
        (n.to_string(), v.to_string())
    }

    #[test]
    fn sorts_and_drops_empty_values() {
        let l = Labels::new(vec![
            p("b", "2"),
            p("__name__", "up"),
            p("a", ""),
            p("a2", "1"),
        ])
        .unwrap();
        assert_eq!(l.to_string(), r#"up{a2="1", b="2"}"#);
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("a"), None);
    }

    #[test]
    fn rejects_duplicates_and_empty_names() {
        assert_eq!(
            Labels::new(vec![p("a", "1"), p("a", "2")]),
            Err(LabelError::Duplicate { name: "a".into() })
        );
        assert!(matches!(
            Labels::new(vec![p("", "1")]),
            Err(LabelError::EmptyName { .. })
        ));
        assert_eq!(Labels::new(vec![]), Err(LabelError::NoLabels));
    }
}
