use std::fmt;
use std::sync::Arc;

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
/// Stored compactly, as Prometheus's `stringlabels` does: one shared string holding each
/// name and value preceded by its length, so a label set is a single allocation however
/// many pairs it has, and a clone is a reference count. The catalog holds one of these per
/// series ever seen (a million series should not cost a gigabyte: the earlier form, a
/// string, an offsets array and an `Arc` around both, took three allocations, and a
/// million-series start allocated 96 MB more with it), and hashing and equality are one
/// pass over bytes: the encoding of a label set is canonical.
///
/// A length is written in bytes below 0x80 (six bits each, low first; bit 6 says another
/// byte follows), so the whole text stays valid UTF-8 and every name and value starts on a
/// character boundary.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Labels {
    /// `len(name0) name0 len(value0) value0 len(name1) …`.
    text: Arc<str>,
}

/// Appends `n` in the length encoding described on [`Labels`].
fn push_len(text: &mut String, mut n: usize) {
    while n >= 0x40 {
        text.push(char::from(0x40 | (n & 0x3f) as u8));
        n >>= 6;
    }
    text.push(char::from(n as u8));
}

/// Bytes [`push_len`] writes for `n`.
fn len_bytes(mut n: usize) -> usize {
    let mut k = 1;
    while n >= 0x40 {
        n >>= 6;
        k += 1;
    }
    k
}

/// Reads a length at `*at`, advancing past it.
#[inline]
fn read_len(bytes: &[u8], at: &mut usize) -> usize {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let b = bytes[*at];
        *at += 1;
        n |= usize::from(b & 0x3f) << shift;
        if b & 0x40 == 0 {
            return n;
        }
        shift += 6;
    }
}

/// The pairs of an encoded label set, in order.
#[derive(Clone)]
pub struct Pairs<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.text.len() {
            return None;
        }
        let bytes = self.text.as_bytes();
        let n = read_len(bytes, &mut self.at);
        let name = &self.text[self.at..self.at + n];
        self.at += n;
        let v = read_len(bytes, &mut self.at);
        let value = &self.text[self.at..self.at + v];
        self.at += v;
        Some((name, value))
    }
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
        let len: usize = pairs
            .clone()
            .map(|(n, v)| len_bytes(n.len()) + n.len() + len_bytes(v.len()) + v.len())
            .sum();
        let mut text = String::with_capacity(len);
        for (n, v) in pairs {
            push_len(&mut text, n.len());
            text.push_str(n);
            push_len(&mut text, v.len());
            text.push_str(v);
        }
        let l = Labels {
            text: Arc::from(text),
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

    pub fn iter(&self) -> Pairs<'_> {
        Pairs {
            text: &self.text,
            at: 0,
        }
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

    /// Number of pairs (a walk over them: not for hot paths).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// A reference that does not keep the label set alive: how a test checks that a
    /// forgotten series' labels were freed.
    pub fn downgrade(&self) -> std::sync::Weak<str> {
        Arc::downgrade(&self.text)
    }

    /// Heap bytes held (for memory accounting): the shared allocation, counts included,
    /// charged to each holder as if it were the only one.
    pub fn heap_bytes(&self) -> usize {
        2 * size_of::<usize>() + self.text.len()
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

    /// Lengths of every encoded width (1, 2, 3 and 4 bytes) and multi-byte characters
    /// round-trip; label sets that differ only where one string ends and the next begins
    /// stay different.
    #[test]
    fn lengths_of_every_width_round_trip() {
        for n in [0usize, 1, 63, 64, 65, 4095, 4096, 262_143, 262_144] {
            assert_eq!(len_bytes(n), {
                let mut t = String::new();
                push_len(&mut t, n);
                assert!(t.is_ascii());
                let mut at = 0;
                assert_eq!(read_len(t.as_bytes(), &mut at), n);
                assert_eq!(at, t.len());
                t.len()
            });
        }
        let long = "v".repeat(70_000);
        let pairs = vec![
            p("__name__", "é🦀"),
            p("a", &"x".repeat(64)),
            p(&"n".repeat(4096), &long),
            p("z", "ü"),
        ];
        let l = Labels::new(pairs.clone()).unwrap();
        assert_eq!(l.to_pairs(), pairs);
        assert_eq!(l.len(), 4);
        assert_eq!(l.get("z"), Some("ü"));
        assert_eq!(l.metric_name(), Some("é🦀"));
        assert_ne!(
            Labels::new(vec![p("a", "bc")]).unwrap(),
            Labels::new(vec![p("ab", "c")]).unwrap()
        );
        assert!(Labels::default().is_empty());
        assert_eq!(Labels::default().iter().count(), 0);
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
