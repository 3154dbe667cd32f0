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

use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::catalog::{IdMap, SeriesId};
use crate::model::exemplar::Exemplar;
use crate::model::histogram::FloatHistogram;

/// A native-histogram sample as the head keeps it: shared, because readers copy runs out.
pub type Hist = Arc<FloatHistogram>;
/// An exemplar as the head keeps it.
pub type Ex = Arc<Exemplar>;

/// A head commit's sequence number; a snapshot reads commits up to one.
pub type Seq = u32;

/// One series' samples of one kind: floats (`f64`) or native histograms ([`Hist`]). A series
/// may hold both (a metric that changed type); each kind is its own run.
#[derive(Debug, Clone)]
pub struct SeriesBuf<V = f64> {
    /// Ascending; a timestamp repeats only where a later commit overwrote its value (the
    /// entries of one timestamp are in commit order).
    ts: Vec<i64>,
    vals: Vec<V>,
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

impl<V> Default for SeriesBuf<V> {
    fn default() -> Self {
        SeriesBuf {
            ts: Vec::new(),
            vals: Vec::new(),
            seqs: Vec::new(),
            max_seq: 0,
            superseded: 0,
        }
    }
}

impl SeriesBuf<Hist> {
    /// Entries after `t` whose hint says "no reset since the previous sample" revert to
    /// `unknown` (readers then detect resets from the data, which gives the same answer
    /// wherever the hint was right).
    fn forget_hints_after(&mut self, t: i64) {
        use crate::model::histogram::CounterResetHint as H;
        let p = self.ts.partition_point(|&x| x <= t);
        let Some(&next) = self.ts.get(p) else { return };
        for i in p..self.ts.len() {
            if self.ts[i] != next {
                break;
            }
            if self.vals[i].hint == H::NotCounterReset {
                Arc::make_mut(&mut self.vals[i]).hint = H::Unknown;
            }
        }
    }
}

/// Whether two values are the same write (bit for bit for floats: stale markers and NaNs).
pub trait SameValue {
    fn same(&self, other: &Self) -> bool;
}

impl SameValue for f64 {
    fn same(&self, other: &Self) -> bool {
        self.to_bits() == other.to_bits()
    }
}

impl SameValue for Hist {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other) || (self.equals(other) && self.hint == other.hint)
    }
}

impl SameValue for Ex {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
            || (self.labels == other.labels && self.value.to_bits() == other.value.to_bits())
    }
}

impl<V: Clone + SameValue> SeriesBuf<V> {
    fn insert(&mut self, t: i64, v: V, seq: Seq) -> Inserted {
        self.max_seq = self.max_seq.max(seq);
        let at = match self.ts.last() {
            None => 0,
            Some(&last) if last < t => self.ts.len(),
            Some(_) => {
                // After every entry at `t`: the newest of a timestamp is its last entry.
                let p = self.ts.partition_point(|&x| x <= t);
                if p > 0 && self.ts[p - 1] == t {
                    // Rewriting the value already there (a retried request, a created
                    // timestamp's zero sent again) changes nothing and keeps nothing.
                    if self.vals[p - 1].same(&v) {
                        return Inserted::Replaced;
                    }
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
    pub fn read(&self, min_t: i64, max_t: i64, at: Seq) -> Option<(Vec<i64>, Vec<V>)> {
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
        let mut vals: Vec<V> = Vec::with_capacity(hi - lo);
        for i in lo..hi {
            if self.seqs[i] > at {
                continue;
            }
            if ts.last() == Some(&self.ts[i]) {
                // A newer commit's value for the same timestamp.
                *vals.last_mut().expect("vals follow ts") = self.vals[i].clone();
            } else {
                ts.push(self.ts[i]);
                vals.push(self.vals[i].clone());
            }
        }
        (!ts.is_empty()).then_some((ts, vals))
    }

    /// Every sample, newest values (for writing the head out).
    pub fn read_all(&self) -> (Vec<i64>, Vec<V>) {
        self.read(i64::MIN, i64::MAX, Seq::MAX).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
pub struct Head {
    series: IdMap<SeriesBuf>,
    /// Native-histogram samples, by series (most series have none).
    hists: IdMap<SeriesBuf<Hist>>,
    hist_present: RoaringBitmap,
    /// Exemplars by series and time (not samples: no query reads them as values).
    exemplars: IdMap<SeriesBuf<Ex>>,
    num_exemplars: usize,
    present: RoaringBitmap,
    min_t: i64,
    max_t: i64,
    samples: usize,
    /// Overwritten entries kept for snapshots (memory, not samples).
    superseded: usize,
    /// Histogram samples; and what histograms and exemplars weigh beyond one entry each
    /// (see [`histogram_weight`], [`exemplar_weight`]): the memory limit counts entries.
    hist_samples: usize,
    extra_entries: usize,
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
        self.commit_with_histograms(samples, std::iter::empty(), now_ms)
    }

    /// One commit of float and histogram samples.
    pub fn commit_with_histograms(
        &mut self,
        samples: impl IntoIterator<Item = (SeriesId, i64, f64)>,
        hists: impl IntoIterator<Item = (SeriesId, i64, Hist)>,
        now_ms: i64,
    ) {
        self.commit_all(samples, hists, std::iter::empty(), now_ms)
    }

    /// One commit of floats, histograms and exemplars.
    pub fn commit_all(
        &mut self,
        samples: impl IntoIterator<Item = (SeriesId, i64, f64)>,
        hists: impl IntoIterator<Item = (SeriesId, i64, Hist)>,
        exemplars: impl IntoIterator<Item = (SeriesId, Ex)>,
        now_ms: i64,
    ) {
        // Saturates rather than wraps: past 4 billion commits in one head (never, at any
        // real rate, before a flush) later commits read as one.
        let seq = self.seq.saturating_add(1);
        let mut any = false;
        for (id, e) in exemplars {
            any = true;
            let weight = exemplar_weight(&e);
            let t = e.ts;
            self.present.insert(id);
            match self.exemplars.entry(id).or_default().insert(t, e, seq) {
                Inserted::New => self.num_exemplars += 1,
                Inserted::Replaced => continue,
                Inserted::Superseded => self.superseded += 1,
            }
            // Exemplars are held like samples (the memory limit counts them) but are not
            // samples: `num_samples` and the time range leave them out.
            self.extra_entries += 1 + weight;
        }
        for (id, t, mut h) in hists {
            any = true;
            let weight = histogram_weight(&h);
            let floats = self.series.get(&id);
            let buf = self.hists.entry(id).or_default();
            read_back_hint(buf, floats, t, &mut h);
            // Out of order or an overwrite: the sample after it no longer follows what its
            // `not_reset` hint was derived from.
            if buf.ts.last().is_some_and(|&last| t <= last) {
                buf.forget_hints_after(t);
            }
            self.present.insert(id);
            self.hist_present.insert(id);
            match buf.insert(t, h, seq) {
                Inserted::New => {
                    self.samples += 1;
                    self.hist_samples += 1;
                }
                Inserted::Replaced => continue,
                Inserted::Superseded => self.superseded += 1,
            }
            self.extra_entries += weight;
            self.min_t = self.min_t.min(t);
            self.max_t = self.max_t.max(t);
        }
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

    /// True when the head holds nothing to flush (samples or exemplars).
    pub fn is_empty(&self) -> bool {
        self.samples == 0 && self.num_exemplars == 0
    }

    pub fn num_samples(&self) -> usize {
        self.samples
    }

    /// Entries held (samples plus values kept for snapshots): what the head's memory
    /// follows.
    pub fn entries(&self) -> usize {
        self.samples + self.superseded + self.extra_entries
    }

    /// Native-histogram samples held (included in [`Head::num_samples`]).
    pub fn num_histograms(&self) -> usize {
        self.hist_samples
    }

    pub fn num_series(&self) -> usize {
        self.present.len() as usize
    }

    /// `(min_t, max_t)` of every commit's samples, or `None` when it has none.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        (self.samples > 0).then_some((self.min_t, self.max_t))
    }

    pub fn num_exemplars(&self) -> usize {
        self.num_exemplars
    }

    pub fn get_exemplars(&self, id: SeriesId) -> Option<&SeriesBuf<Ex>> {
        self.exemplars.get(&id)
    }

    /// Series with exemplars.
    pub fn exemplar_series(&self) -> impl Iterator<Item = SeriesId> + '_ {
        self.exemplars.keys().copied()
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

    pub fn get_histograms(&self, id: SeriesId) -> Option<&SeriesBuf<Hist>> {
        self.hists.get(&id)
    }

    /// True when any series holds histogram samples.
    pub fn has_histograms(&self) -> bool {
        !self.hists.is_empty()
    }

    /// Series holding histogram samples.
    pub fn histogram_series(&self) -> &RoaringBitmap {
        &self.hist_present
    }

    pub fn iter_histograms(&self) -> impl Iterator<Item = (SeriesId, &SeriesBuf<Hist>)> {
        self.hists.iter().map(|(k, v)| (*k, v))
    }
}

/// The counter-reset hint a histogram is kept with, as Prometheus's chunks hand it back:
/// `gauge` stays; a histogram appended in order right after a compatible histogram of the
/// series (same schema, zero threshold and custom bounds, not a gauge, no float or stale
/// marker between, and no counter reset relative to it) is `not_reset`; anything else —
/// the first of a series, after a float, a written `reset` — is `unknown`, so readers
/// detect resets from the data. Queries then see what they would see in Prometheus.
fn read_back_hint(hists: &SeriesBuf<Hist>, floats: Option<&SeriesBuf>, t: i64, h: &mut Hist) {
    use crate::model::histogram::CounterResetHint as H;
    if h.hint == H::Gauge {
        return;
    }
    let prev = match (hists.ts.last(), hists.vals.last()) {
        (Some(&pt), Some(p)) if pt < t => Some((pt, p)),
        _ => None,
    };
    let follows = prev.is_some_and(|(pt, p)| {
        let float_between = floats.and_then(|f| f.ts.last()).is_some_and(|&ft| ft >= pt);
        !float_between
            && h.hint != H::CounterReset
            && p.hint != H::Gauge
            && p.schema == h.schema
            && p.zero_threshold == h.zero_threshold
            && p.custom_values == h.custom_values
            && !h.detect_reset_from_data(p)
    });
    let want = if follows {
        H::NotCounterReset
    } else {
        H::Unknown
    };
    if h.hint != want {
        Arc::make_mut(h).hint = want;
    }
}

/// Head entries an exemplar costs beyond its first: its labels.
pub fn exemplar_weight(e: &Exemplar) -> usize {
    e.labels.heap_bytes() / super::HEAD_BYTES_PER_SAMPLE
}

/// Head entries a histogram costs beyond its first: its buckets (8 bytes each) and fixed
/// fields against the ~28 bytes a float sample entry takes, so `--head-memory-limit` holds
/// for histograms too.
pub fn histogram_weight(h: &FloatHistogram) -> usize {
    let buckets = h.positive_buckets.len()
        + h.negative_buckets.len()
        + h.custom_values.len()
        + h.positive_spans.len()
        + h.negative_spans.len();
    (120 + 8 * buckets) / super::HEAD_BYTES_PER_SAMPLE
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

    /// A histogram appended right after a compatible one is kept as `not_reset` (what
    /// Prometheus's chunks hand back); one inserted before it out of order makes that hint
    /// `unknown` again, so a reader detects the reset the new sample makes.
    #[test]
    fn histogram_hints_follow_their_neighbours() {
        use crate::model::histogram::{CounterResetHint as H, FloatHistogram};
        let h = |count: f64| {
            Arc::new(FloatHistogram::from_absolute(
                0,
                0.0,
                0.0,
                count,
                count,
                (0, vec![count]),
                (0, vec![]),
                vec![],
            ))
        };
        let mut head = Head::new();
        head.commit_with_histograms([], [(1, 0, h(10.0)), (1, 60_000, h(20.0))], 0);
        let hints = |head: &Head| -> Vec<H> {
            head.get_histograms(1)
                .unwrap()
                .read_all()
                .1
                .iter()
                .map(|h| h.hint)
                .collect()
        };
        assert_eq!(hints(&head), vec![H::Unknown, H::NotCounterReset]);
        head.commit_with_histograms([], [(1, 30_000, h(100.0))], 0);
        assert_eq!(hints(&head), vec![H::Unknown, H::Unknown, H::Unknown]);
        // A decrease is a reset: never `not_reset`.
        head.commit_with_histograms([], [(1, 90_000, h(5.0))], 0);
        assert_eq!(hints(&head)[3], H::Unknown);
        // Writing the same histogram again keeps nothing extra.
        let entries = head.entries();
        head.commit_with_histograms([], [(1, 90_000, h(5.0))], 0);
        assert_eq!(head.entries(), entries);
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
