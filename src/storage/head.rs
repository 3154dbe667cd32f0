//! The head: recent samples in memory, per series, sorted by time.
//!
//! Appends are in order in the common case (a push); out-of-order samples are inserted in
//! place and a duplicate timestamp keeps the last value written.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use crate::catalog::SeriesId;

#[derive(Debug, Default, Clone)]
pub struct SeriesBuf {
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
}

impl SeriesBuf {
    /// Inserts keeping time order; returns true when a new sample was added (not replaced).
    fn insert(&mut self, t: i64, v: f64) -> bool {
        match self.ts.last() {
            None => {}
            Some(&last) if last < t => {}
            Some(_) => match self.ts.binary_search(&t) {
                Ok(i) => {
                    self.vals[i] = v;
                    return false;
                }
                Err(i) => {
                    self.ts.insert(i, t);
                    self.vals.insert(i, v);
                    return true;
                }
            },
        }
        self.ts.push(t);
        self.vals.push(v);
        true
    }

    /// Indices `[lo, hi)` of samples with `min_t <= t <= max_t`.
    pub fn range(&self, min_t: i64, max_t: i64) -> (usize, usize) {
        let lo = self.ts.partition_point(|&t| t < min_t);
        let hi = self.ts.partition_point(|&t| t <= max_t);
        (lo, hi.max(lo))
    }
}

#[derive(Debug, Default)]
pub struct Head {
    series: HashMap<SeriesId, SeriesBuf>,
    present: RoaringBitmap,
    min_t: i64,
    max_t: i64,
    samples: usize,
    /// Wall-clock ms of the first append, for the time-based flush.
    first_append_ms: Option<i64>,
}

impl Head {
    pub fn new() -> Self {
        Head {
            min_t: i64::MAX,
            max_t: i64::MIN,
            ..Default::default()
        }
    }

    pub fn append(&mut self, id: SeriesId, t: i64, v: f64, now_ms: i64) {
        let buf = self.series.entry(id).or_insert_with(|| {
            self.present.insert(id);
            SeriesBuf::default()
        });
        if buf.insert(t, v) {
            self.samples += 1;
        }
        self.min_t = self.min_t.min(t);
        self.max_t = self.max_t.max(t);
        self.first_append_ms.get_or_insert(now_ms);
    }

    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    pub fn num_samples(&self) -> usize {
        self.samples
    }

    pub fn num_series(&self) -> usize {
        self.series.len()
    }

    /// `(min_t, max_t)`, or `None` when empty.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        (!self.is_empty()).then_some((self.min_t, self.max_t))
    }

    pub fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }

    pub fn present(&self) -> &RoaringBitmap {
        &self.present
    }

    pub fn get(&self, id: SeriesId) -> Option<&SeriesBuf> {
        self.series.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (SeriesId, &SeriesBuf)> {
        self.series.iter().map(|(k, v)| (*k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_and_duplicates() {
        let mut h = Head::new();
        for (t, v) in [(10, 1.0), (30, 3.0), (20, 2.0), (30, 4.0), (5, 0.5)] {
            h.append(1, t, v, 0);
        }
        let s = h.get(1).unwrap();
        assert_eq!(s.ts, vec![5, 10, 20, 30]);
        assert_eq!(s.vals, vec![0.5, 1.0, 2.0, 4.0]);
        assert_eq!(h.num_samples(), 4);
        assert_eq!(h.time_range(), Some((5, 30)));
        assert_eq!(s.range(10, 20), (1, 3));
        assert_eq!(s.range(31, 40), (4, 4));
    }
}
