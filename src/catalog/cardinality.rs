//! The cardinality view of `/api/v1/status/tsdb`, straight from the postings: one pass,
//! counting per label name as it goes and keeping only the top entries, so a million
//! unique label values cost a walk, not a million formatted strings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use roaring::RoaringBitmap;

use super::Catalog;

/// Top entries (largest first, then by name) of each cardinality statistic.
#[derive(Debug, Default, PartialEq)]
pub struct Cardinality {
    /// Distinct `(name, value)` pairs used by the series in scope.
    pub label_pairs: usize,
    pub series_by_metric: Vec<(String, u64)>,
    pub values_by_label: Vec<(String, u64)>,
    /// Bytes of values times series using them, by label name.
    pub bytes_by_label: Vec<(String, u64)>,
    /// `name=value` pairs by series count.
    pub series_by_pair: Vec<(String, u64)>,
}

/// Keeps the `n` largest `(count, key)` entries; ties go to the smaller key.
struct Top {
    n: usize,
    heap: BinaryHeap<Reverse<(u64, Reverse<String>)>>,
}

impl Top {
    fn new(n: usize) -> Self {
        Top {
            n,
            heap: BinaryHeap::new(),
        }
    }

    /// Offers an entry; `key` is only built when it makes the cut.
    fn offer(&mut self, count: u64, key: impl FnOnce() -> String) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() == self.n {
            let Reverse((min, Reverse(_))) = self.heap.peek().expect("full");
            // Equal counts: the entry in the heap may have a larger key; build ours to see.
            if count < *min {
                return;
            }
        }
        self.heap.push(Reverse((count, Reverse(key()))));
        if self.heap.len() > self.n {
            self.heap.pop();
        }
    }

    fn into_sorted(self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .heap
            .into_iter()
            .map(|Reverse((c, Reverse(k)))| (k, c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

impl Catalog {
    /// Cardinality of the series in `within`, the top `n` of each statistic.
    pub fn cardinality(&self, within: &RoaringBitmap, n: usize) -> Cardinality {
        let r = self.inner.read();
        let everything = *within == r.live;
        let mut out = Cardinality::default();
        let (mut by_metric, mut by_pair) = (Top::new(n), Top::new(n));
        let (mut values, mut bytes) = (Top::new(n), Top::new(n));
        for (name, postings) in &r.postings {
            let (mut distinct, mut size) = (0u64, 0u64);
            for (value, p) in postings {
                let c = if everything {
                    p.len()
                } else {
                    p.intersection_len(within)
                };
                if c == 0 {
                    continue;
                }
                distinct += 1;
                size += value.len() as u64 * c;
                if &**name == crate::model::METRIC_NAME {
                    by_metric.offer(c, || value.to_string());
                }
                by_pair.offer(c, || format!("{name}={value}"));
            }
            if distinct > 0 {
                out.label_pairs += distinct as usize;
                values.offer(distinct, || name.to_string());
                bytes.offer(size, || name.to_string());
            }
        }
        out.series_by_metric = by_metric.into_sorted();
        out.series_by_pair = by_pair.into_sorted();
        out.values_by_label = values.into_sorted();
        out.bytes_by_label = bytes.into_sorted();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;

    #[test]
    fn top_entries_match_a_full_count() {
        let c = Catalog::new();
        let mut ids = Vec::new();
        for i in 0..300u32 {
            let l = Labels::new(vec![
                ("__name__".into(), format!("m{}", i % 7)),
                ("pod".into(), format!("p{i}")),
                ("job".into(), format!("j{}", i % 3)),
            ])
            .unwrap();
            ids.push(c.get_or_insert(&l));
        }
        let within: RoaringBitmap = ids.iter().copied().filter(|i| i % 2 == 0).collect();
        for scope in [c.live(), within] {
            let got = c.cardinality(&scope, 4);
            // The same statistics by brute force over the label sets.
            let mut pairs: std::collections::BTreeMap<(String, String), u64> = Default::default();
            for id in &scope {
                for (n, v) in c.labels(id).unwrap().iter() {
                    *pairs.entry((n.into(), v.into())).or_default() += 1;
                }
            }
            let top = |mut v: Vec<(String, u64)>| {
                v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                v.truncate(4);
                v
            };
            let mut values: std::collections::BTreeMap<String, u64> = Default::default();
            let mut bytes: std::collections::BTreeMap<String, u64> = Default::default();
            for ((n, v), k) in &pairs {
                *values.entry(n.clone()).or_default() += 1;
                *bytes.entry(n.clone()).or_default() += v.len() as u64 * k;
            }
            let want = Cardinality {
                label_pairs: pairs.len(),
                series_by_metric: top(pairs
                    .iter()
                    .filter(|((n, _), _)| n == "__name__")
                    .map(|((_, v), k)| (v.clone(), *k))
                    .collect()),
                values_by_label: top(values.into_iter().collect()),
                bytes_by_label: top(bytes.into_iter().collect()),
                series_by_pair: top(pairs
                    .iter()
                    .map(|((n, v), k)| (format!("{n}={v}"), *k))
                    .collect()),
            };
            assert_eq!(got, want);
        }
    }
}
