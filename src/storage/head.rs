//! The head: recent samples in memory, per series, sorted by time.
//!
//! Appends are in order in the common case (a push); out-of-order samples are inserted in
//! place and a duplicate timestamp keeps the last value written.
//!
//! Samples arrive in commits (one WAL group commit, or one request without a WAL), applied
//! under the head's write lock and stamped with the commit's sequence number. A reader
//! takes the head's sequence once ([`Head::seq`]) and reads every series as of it
//! ([`SeriesBuf::read`]): samples of later commits are skipped, and a value overwritten by
//! a later commit is kept beside its replacement until the head is flushed, so a scan, or
//! every scan of one query, sees one consistent head however long it runs (Prometheus's
//! head isolation). The cost is 4 bytes per sample and an entry per overwrite.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use crate::catalog::SeriesId;

/// A head commit's sequence number; a snapshot reads commits up to one.
pub type Seq = u32;

#[derive(Debug, Default, Clone)]
pub struct SeriesBuf {
    /// Ascending; a timestamp repeats only where a later commit overwrote its value (the
    /// entries of one timestamp are in commit order).
    ts: Vec<i64>,
    vals: Vec<f64>,
    seqs: Vec<Seq>,
    max_seq: Seq,
    /// Entries kept for older snapshots after a later commit overwrote them.
    superseded: usize,
}

/// What an insert did.
#[derive(Debug, PartialEq, Eq)]
enum Inserted {
    New,
    /// Replaced a value of the same commit in place (no snapshot can have seen it).
    Replaced,
    /// Overwrote a value of an earlier commit, which stays for snapshots before this one.
    Superseded,
}

impl SeriesBuf {
    fn insert(&mut self, t: i64, v: f64, seq: Seq) -> Inserted {
        self.max_seq = self.max_seq.max(seq);
        let at = match self.ts.last() {
            None => 0,
            Some(&last) if last < t => self.ts.len(),
            Some(_) => {
                // After every entry at `t`: the newest of a timestamp is its last entry.
                let p = self.ts.partition_point(|&x| x <= t);
                if p > 0 && self.ts[p - 1] == t {
                    if self.seqs[p - 1] == seq {
                        self.vals[p - 1] = v;
                        return Inserted::Replaced;
                    }
                    self.ts.insert(p, t);
                    self.vals.insert(p, v);
                    self.seqs.insert(p, seq);
                    self.superseded += 1;
                    return Inserted::Superseded;
                }
                p
            }
        };
        if at == self.ts.len() {
            self.ts.push(t);
            self.vals.push(v);
            self.seqs.push(seq);
        } else {
            self.ts.insert(at, t);
            self.vals.insert(at, v);
            self.seqs.insert(at, seq);
        }
        Inserted::New
    }

    /// The samples with `min_t <= t <= max_t` as of commit `at` (one per timestamp, the
    /// newest value up to `at`), or `None` when there are none.
    pub fn read(&self, min_t: i64, max_t: i64, at: Seq) -> Option<(Vec<i64>, Vec<f64>)> {
        let lo = self.ts.partition_point(|&t| t < min_t);
        let hi = self.ts.partition_point(|&t| t <= max_t);
        if lo >= hi {
            return None;
        }
        if self.max_seq <= at && self.superseded == 0 {
            // The usual case: nothing newer than the snapshot, no overwrites.
            return Some((self.ts[lo..hi].to_vec(), self.vals[lo..hi].to_vec()));
        }
        let mut ts: Vec<i64> = Vec::with_capacity(hi - lo);
        let mut vals: Vec<f64> = Vec::with_capacity(hi - lo);
        for i in lo..hi {
            if self.seqs[i] > at {
                continue;
            }
            if ts.last() == Some(&self.ts[i]) {
                // A newer commit's value for the same timestamp.
                *vals.last_mut().expect("vals follow ts") = self.vals[i];
            } else {
                ts.push(self.ts[i]);
                vals.push(self.vals[i]);
            }
        }
        (!ts.is_empty()).then_some((ts, vals))
    }

    /// Every sample, newest values (for writing the head out).
    pub fn read_all(&self) -> (Vec<i64>, Vec<f64>) {
        self.read(i64::MIN, i64::MAX, Seq::MAX).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
pub struct Head {
    series: HashMap<SeriesId, SeriesBuf>,
    present: RoaringBitmap,
    min_t: i64,
    max_t: i64,
    samples: usize,
    /// Overwritten entries kept for snapshots (memory, not samples).
    superseded: usize,
    /// The last commit applied.
    seq: Seq,
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

    /// Applies one commit: its samples become visible to snapshots together.
    pub fn commit(&mut self, samples: impl IntoIterator<Item = (SeriesId, i64, f64)>, now_ms: i64) {
        // Saturates rather than wraps: past 4 billion commits in one head (never, at any
        // real rate, before a flush) later commits read as one.
        let seq = self.seq.saturating_add(1);
        let mut any = false;
        for (id, t, v) in samples {
            any = true;
            let buf = self.series.entry(id).or_insert_with(|| {
                self.present.insert(id);
                SeriesBuf::default()
            });
            match buf.insert(t, v, seq) {
                Inserted::New => self.samples += 1,
                Inserted::Replaced => {}
                Inserted::Superseded => self.superseded += 1,
            }
            self.min_t = self.min_t.min(t);
            self.max_t = self.max_t.max(t);
        }
        if any {
            self.seq = seq;
            self.first_append_ms.get_or_insert(now_ms);
        }
    }

    /// One sample as its own commit.
    pub fn append(&mut self, id: SeriesId, t: i64, v: f64, now_ms: i64) {
        self.commit([(id, t, v)], now_ms);
    }

    /// The last commit applied: a snapshot of the head as it is now.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    pub fn num_samples(&self) -> usize {
        self.samples
    }

    /// Entries held (samples plus values kept for snapshots): what the head's memory
    /// follows.
    pub fn entries(&self) -> usize {
        self.samples + self.superseded
    }

    pub fn num_series(&self) -> usize {
        self.series.len()
    }

    /// `(min_t, max_t)` of every commit, or `None` when empty.
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

    fn all(s: &SeriesBuf) -> (Vec<i64>, Vec<f64>) {
        s.read_all()
    }

    #[test]
    fn out_of_order_and_duplicates() {
        let mut h = Head::new();
        for (t, v) in [(10, 1.0), (30, 3.0), (20, 2.0), (30, 4.0), (5, 0.5)] {
            h.append(1, t, v, 0);
        }
        let s = h.get(1).unwrap();
        assert_eq!(all(s), (vec![5, 10, 20, 30], vec![0.5, 1.0, 2.0, 4.0]));
        assert_eq!(h.num_samples(), 4);
        assert_eq!(
            h.entries(),
            5,
            "the overwritten 3.0 is kept for older snapshots"
        );
        assert_eq!(h.time_range(), Some((5, 30)));
        assert_eq!(s.read(10, 20, Seq::MAX).unwrap().0, vec![10, 20]);
        assert_eq!(s.read(31, 40, Seq::MAX), None);
    }

    /// A snapshot taken before a commit reads the head as it was: no sample of the later
    /// commit (in order, out of order, new series) and the values it overwrote.
    #[test]
    fn a_snapshot_does_not_see_later_commits() {
        let mut h = Head::new();
        h.commit([(1, 10, 1.0), (1, 20, 2.0), (2, 10, 5.0)], 0);
        let snap = h.seq();
        let before: Vec<_> = [1, 2].map(|id| h.get(id).unwrap().read_all()).to_vec();
        h.commit(
            [
                (1, 30, 3.0),
                (1, 15, 1.5),
                (1, 20, 9.0),
                (2, 10, 6.0),
                (3, 1, 1.0),
            ],
            0,
        );
        for (i, id) in [1, 2].into_iter().enumerate() {
            let s = h.get(id).unwrap();
            assert_eq!(s.read(i64::MIN, i64::MAX, snap).as_ref(), Some(&before[i]));
        }
        assert_eq!(h.get(3).unwrap().read(i64::MIN, i64::MAX, snap), None);
        // Now: every commit, newest values.
        assert_eq!(
            h.get(1).unwrap().read(i64::MIN, i64::MAX, h.seq()),
            Some((vec![10, 15, 20, 30], vec![1.0, 1.5, 9.0, 3.0]))
        );
        assert_eq!(h.get(2).unwrap().read_all(), (vec![10], vec![6.0]));
        assert_eq!(h.num_samples(), 6);
        assert_eq!(h.entries(), 8);
    }

    /// Within one commit a repeated timestamp replaces in place: nothing is kept for it.
    #[test]
    fn a_commit_overwriting_itself_keeps_one_entry() {
        let mut h = Head::new();
        h.commit([(1, 10, 1.0), (1, 10, 2.0), (1, 10, 3.0)], 0);
        assert_eq!(h.entries(), 1);
        assert_eq!(h.get(1).unwrap().read_all(), (vec![10], vec![3.0]));
    }
}
