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
///
/// Stored compactly, as Prometheus's `stringlabels` does: every name and value concatenated
/// in one string plus the end offset of each, two allocations per label set however many
/// pairs it has. The catalog holds one of these per series ever seen (a million series
/// should not cost a gigabyte), and hashing and equality are one pass over bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Labels {
    /// `name0 value0 name1 value1 …` without separators.
    text: Box<str>,
    /// End offset in `text` of each name and value, in that order.
    ends: Box<[u32]>,
}

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
        Ok(Self::from_sorted_unchecked(pairs))
    }

    /// Validates and sorts borrowed pairs (e.g. a block's series file) without allocating a
    /// string per name and value.
    pub fn from_strs(pairs: &mut [(&str, &str)]) -> Result<Self, LabelError> {
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut kept = pairs.iter().filter(|(_, v)| !v.is_empty()).peekable();
        if kept.peek().is_none() {
            return Err(LabelError::NoLabels);
        }
        let mut prev: Option<&str> = None;
        for (n, v) in kept.clone() {
            if n.is_empty() {
                return Err(LabelError::EmptyName {
                    value: v.to_string(),
                });
            }
            if prev == Some(*n) {
                return Err(LabelError::Duplicate {
                    name: n.to_string(),
                });
            }
            prev = Some(n);
        }
        Ok(Self::from_sorted_strs(kept.copied()))
    }

    /// Builds from pairs already known to be valid and sorted (e.g. read back from a block).
    pub fn from_sorted_unchecked(pairs: Vec<(String, String)>) -> Self {
        Self::from_sorted_strs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// As [`Labels::from_sorted_unchecked`], from borrowed pairs.
    pub fn from_sorted_strs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Self {
        let (mut len, mut count) = (0, 0);
        for (n, v) in pairs.clone() {
            len += n.len() + v.len();
            count += 2;
        }
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(count);
        for (n, v) in pairs {
            text.push_str(n);
            ends.push(text.len() as u32);
            text.push_str(v);
            ends.push(text.len() as u32);
        }
        let l = Labels {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        };
        debug_assert!(l.iter().zip(l.iter().skip(1)).all(|(a, b)| a.0 < b.0));
        l
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        self.ends.chunks_exact(2).scan(0usize, |start, e| {
            let (n_end, v_end) = (e[0] as usize, e[1] as usize);
            let pair = (&self.text[*start..n_end], &self.text[n_end..v_end]);
            *start = v_end;
            Some(pair)
        })
    }

    /// A 128-bit digest of the label set (SHA-256 of the pairs, each name and value
    /// followed by a byte that valid UTF-8 never holds), equal on every process for equal
    /// label sets: how a plan names a series to another process, whose catalog gives it
    /// another id.
    pub fn fingerprint(&self) -> u128 {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (n, v) in self.iter() {
            h.update(n.as_bytes());
            h.update([0xfe]);
            h.update(v.as_bytes());
            h.update([0xff]);
        }
        let d = h.finalize();
        u128::from_le_bytes(d[..16].try_into().expect("32-byte digest"))
    }

    /// The pairs as owned strings, for building a derived label set.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + self.ends.len() * 4
    }
}

/// Label order: pair by pair, name then value (the order of a sorted `Vec<(name, value)>`).
impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.iter().cmp(other.iter())
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
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

    /// Equal label sets give equal fingerprints whatever order they were given in; a
    /// boundary moved between name and value, or between pairs, changes it.
    #[test]
    fn fingerprints() {
        let l = |p: &[(&str, &str)]| {
            Labels::new(
                p.iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            )
            .unwrap()
        };
        let a = l(&[("__name__", "up"), ("job", "x")]);
        assert_eq!(
            a.fingerprint(),
            l(&[("job", "x"), ("__name__", "up")]).fingerprint()
        );
        assert_ne!(
            l(&[("a", "bc")]).fingerprint(),
            l(&[("ab", "c")]).fingerprint()
        );
        assert_ne!(
            l(&[("a", "b"), ("cd", "e")]).fingerprint(),
            l(&[("a", "bc"), ("d", "e")]).fingerprint()
        );
        assert_ne!(a.fingerprint(), l(&[("__name__", "up")]).fingerprint());
        // Pinned: every process and release must compute the same value.
        assert_eq!(
            format!("{:032x}", a.fingerprint()),
            "ad6fccb05eabb55774d3bb58cb71aab0"
        );
    }

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

    #[test]
    fn packed_form_keeps_pairs_order_and_validation() {
        let sets: Vec<Vec<(String, String)>> = vec![
            vec![p("a", "1")],
            vec![p("a", "1"), p("b", "")],
            vec![p("a", "10")],
            vec![p("a", "1"), p("b", "2")],
            vec![p("ab", "1")],
            vec![p("__name__", "x"), p("a", "1")],
            vec![p("b", "1"), p("a", "2")],
        ];
        let mut labels: Vec<Labels> = sets
            .iter()
            .map(|s| Labels::new(s.clone()).unwrap())
            .collect();
        // "a=1" and "a=1,b=" are one series (empty values are absent labels).
        assert_eq!(labels[0], labels[1]);
        for (l, s) in labels.iter().zip(&sets) {
            let mut borrowed: Vec<(&str, &str)> =
                s.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            assert_eq!(&Labels::from_strs(&mut borrowed).unwrap(), l);
        }
        // Label order is the order of the sorted pair vectors.
        let mut by_pairs = labels.clone();
        by_pairs.sort_by_key(|l| l.to_pairs());
        labels.sort();
        assert_eq!(labels, by_pairs);
        let l = Labels::new(vec![p("b", "2"), p("a", "1")]).unwrap();
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
        assert_eq!(
            (l.get("a"), l.get("b"), l.get("c")),
            (Some("1"), Some("2"), None)
        );
        assert_eq!(l.len(), 2);
        let mut dup = vec![("a", "1"), ("a", "2")];
        assert!(matches!(
            Labels::from_strs(&mut dup),
            Err(LabelError::Duplicate { .. })
        ));
        let mut none = vec![("a", "")];
        assert_eq!(Labels::from_strs(&mut none), Err(LabelError::NoLabels));
        let mut unnamed = vec![("", "1")];
        assert!(matches!(
            Labels::from_strs(&mut unnamed),
            Err(LabelError::EmptyName { .. })
        ));
    }
}
