//! Catalog: the process-wide series registry and roaring-bitmap label index.
//!
//! Every distinct label set seen in the head or in any loaded block gets a dense global id
//! (`u32`); once no block or head holds a series any more (retention), [`Catalog::remove`]
//! drops its labels and postings (its id is not reused: a tombstone of one pointer stays). Blocks keep their own dense local ids on disk; a
//! block maps local → global when loaded. Postings (label name → value → global ids) answer
//! matchers, label names and label values without touching samples. Which series exist in a
//! time range is the union of the presence bitmaps of the sources (head, blocks) overlapping it.

use std::collections::{BTreeMap, HashMap};

use hashbrown::HashTable;
use parking_lot::RwLock;
use roaring::RoaringBitmap;

use crate::model::{Labels, MatchOp, Matcher};

mod block_postings;
mod cardinality;
mod posting;
pub use block_postings::BlockPostings;
pub use cardinality::Cardinality;
pub use posting::Posting;

/// Global series id, dense per process.
pub type SeriesId = u32;

/// A map by series id. Ids are the catalog's (dense, never chosen by a client), so a fast
/// hash without per-process keys is safe; SipHash on the head's map was half of a
/// million-series WAL replay (and a share of every append).
pub type IdMap<V> = HashMap<SeriesId, V, ahash::RandomState>;

struct Inner {
    /// Label set → id, as a table of ids hashed by their label sets (4 bytes a slot, where
    /// a map keyed by the label set itself took 24): the sets live once, in `labels`.
    ids: HashTable<SeriesId>,
    /// `ahash`, randomly keyed per process: SipHash was a third of startup with a million
    /// series, and label sets come from clients, so the hash must stay keyed.
    hasher: ahash::RandomState,
    /// By id; `None` once removed.
    labels: Vec<Option<Labels>>,
    /// Ids whose series are in the catalog.
    live: RoaringBitmap,
    /// Label name → value → series. Keys are boxed (16 bytes, not 24): a label with a
    /// unique value per series has as many keys as there are series.
    postings: HashMap<Box<str>, BTreeMap<Box<str>, Posting>, ahash::RandomState>,
    /// Label fingerprints by id, kept once a distributed plan asked for them (0: not yet;
    /// empty on a process that never ships a plan). A plan names each series it reads by
    /// fingerprint, on the coordinator and again on every task (session 30: 2–4 ms of
    /// SHA-256 per query over 10k series).
    fingerprints: Vec<u128>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            ids: HashTable::new(),
            hasher: crate::model::hashing::keyed(),
            labels: Vec::new(),
            live: RoaringBitmap::new(),
            postings: HashMap::with_hasher(crate::model::hashing::keyed()),
            fingerprints: Vec::new(),
        }
    }
}

impl Inner {
    /// The id of a label set the catalog holds.
    fn find(&self, l: &Labels) -> Option<SeriesId> {
        let hash = self.hasher.hash_one(l);
        let labels = &self.labels;
        self.ids
            .find(hash, |&id| labels[id as usize].as_ref() == Some(l))
            .copied()
    }

    /// Gives a label set not in the catalog the next id (no postings: the callers add
    /// them, one by one or in bulk).
    fn add(&mut self, l: Labels) -> SeriesId {
        let id = self.labels.len() as SeriesId;
        let hash = self.hasher.hash_one(&l);
        self.labels.push(Some(l));
        let (labels, hasher) = (&self.labels, &self.hasher);
        self.ids.insert_unique(hash, id, |&id| {
            hasher.hash_one(
                labels[id as usize]
                    .as_ref()
                    .expect("ids in the table are live"),
            )
        });
        self.live.insert(id);
        id
    }
}

/// Series registry plus postings. Cheap to share; all methods take `&self`.
#[derive(Default)]
pub struct Catalog {
    inner: RwLock<Inner>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Global ids for these label sets, registering new ones (one lock for the batch).
    pub fn get_or_insert_many<'a>(
        &self,
        sets: impl IntoIterator<Item = &'a Labels>,
    ) -> Vec<SeriesId> {
        let sets: Vec<&Labels> = sets.into_iter().collect();
        {
            let r = self.inner.read();
            let found: Option<Vec<SeriesId>> = sets.iter().map(|l| r.find(l)).collect();
            if let Some(ids) = found {
                return ids;
            }
        }
        let mut w = self.inner.write();
        sets.into_iter().map(|l| insert(&mut w, l)).collect()
    }

    /// As [`Catalog::get_or_insert_many`], taking the label sets (no copy is made of the
    /// new ones): a block's series at startup. New series get their postings in bulk: per
    /// label name, the new values sorted once and merged into the value map (a sorted
    /// build when the name is new), instead of one tree insert per label pair — a million
    /// series' first block is most of a restart.
    pub fn get_or_insert_owned(&self, sets: Vec<Labels>) -> Vec<SeriesId> {
        self.get_or_insert_indexed(sets, None).0
    }

    /// As [`Catalog::get_or_insert_owned`], with the block's own postings (its index
    /// file: per name, values ascending with their local ids). When every series of the
    /// block is new — a first block at startup, which is most of a restart — the postings
    /// are taken from it (local id + the first new id) instead of sorting the values;
    /// postings that do not account for exactly the block's label pairs are not used.
    /// Returns the ids and whether the block's postings were used.
    pub fn get_or_insert_indexed(
        &self,
        sets: Vec<Labels>,
        block_postings: Option<BlockPostings>,
    ) -> (Vec<SeriesId>, bool) {
        let mut w = self.inner.write();
        let w = &mut *w;
        let n = sets.len();
        // Only checked against a postings file, so only counted when there is one.
        let pairs: usize = if block_postings.is_some() {
            sets.iter().map(Labels::len).sum()
        } else {
            0
        };
        // A first block is all new series: size the map once. Later blocks mostly repeat
        // known series; reserving for all of them would double the map for nothing.
        if w.ids.is_empty() {
            let (labels, hasher) = (&w.labels, &w.hasher);
            w.ids.reserve(sets.len(), |&id| {
                hasher.hash_one(labels[id as usize].as_ref().expect("live"))
            });
            w.labels.reserve(sets.len());
        }
        let mut fresh: Vec<(SeriesId, Labels)> = Vec::new();
        let ids: Vec<SeriesId> = sets
            .into_iter()
            .map(|l| match w.find(&l) {
                Some(id) => id,
                None => {
                    let id = w.add(l.clone());
                    fresh.push((id, l));
                    id
                }
            })
            .collect::<Vec<SeriesId>>();
        if let Some(bp) = block_postings
            && fresh.len() == n
            && bp.fits(n, pairs)
        {
            // All new, so the ids are consecutive in local order.
            let base = fresh.first().map_or(0, |(id, _)| *id);
            for (name, values) in bp.names {
                let grouped = values
                    .into_iter()
                    .map(|(v, local)| (v, Posting::from_local(local, base)));
                match w.postings.get_mut(&*name) {
                    Some(have) => {
                        for (v, p) in grouped {
                            match have.get_mut(&v) {
                                Some(x) => x.merge(p),
                                None => {
                                    have.insert(v, p);
                                }
                            }
                        }
                    }
                    None => {
                        w.postings.insert(name, grouped.collect());
                    }
                }
            }
            return (ids, true);
        }
        // Label sets of one block mostly have the same names in the same order: the i-th
        // pair's name is checked against the i-th name seen before a search.
        let mut by_name: Vec<(&str, Vec<(&str, SeriesId)>)> = Vec::new();
        for (id, l) in &fresh {
            for (i, (n, v)) in l.iter().enumerate() {
                let at = match by_name.get(i) {
                    Some((name, _)) if *name == n => i,
                    _ => match by_name.iter().position(|(name, _)| *name == n) {
                        Some(at) => at,
                        None => {
                            by_name.push((n, Vec::new()));
                            by_name.len() - 1
                        }
                    },
                };
                by_name[at].1.push((v, *id));
            }
        }
        for (name, mut pairs) in by_name {
            // Ids ascending within a value (the bitmap is built from them in order).
            pairs.sort_unstable_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
            let grouped = pairs.chunk_by(|a, b| a.0 == b.0).map(|g| {
                let posting = match g {
                    [(_, id)] => Posting::One(*id),
                    _ => Posting::Many(
                        RoaringBitmap::from_sorted_iter(g.iter().map(|(_, id)| *id))
                            .expect("ids ascend within a value"),
                    ),
                };
                (Box::<str>::from(g[0].0), posting)
            });
            match w.postings.get_mut(name) {
                Some(values) => {
                    for (v, p) in grouped {
                        match values.get_mut(&v) {
                            Some(have) => have.merge(p),
                            None => {
                                values.insert(v, p);
                            }
                        }
                    }
                }
                None => {
                    // Sorted input: the tree is built bottom-up, no search per value.
                    w.postings.insert(name.into(), grouped.collect());
                }
            }
        }
        (ids, false)
    }

    /// The id of a label set the catalog holds, without registering it.
    pub fn lookup(&self, labels: &Labels) -> Option<SeriesId> {
        self.inner.read().find(labels)
    }

    /// [`Catalog::lookup`] for many label sets, under one lock.
    pub fn lookup_many<'a>(
        &self,
        sets: impl IntoIterator<Item = &'a Labels>,
    ) -> Vec<Option<SeriesId>> {
        let r = self.inner.read();
        sets.into_iter().map(|l| r.find(l)).collect()
    }

    pub fn get_or_insert(&self, labels: &Labels) -> SeriesId {
        self.get_or_insert_many([labels])[0]
    }

    pub fn labels(&self, id: SeriesId) -> Option<Labels> {
        self.inner.read().labels.get(id as usize).cloned().flatten()
    }

    /// Label sets for many ids at once, each `None` when the id is not (or no longer) in
    /// the catalog: a reader that took ids before a retention run removed them skips them.
    pub fn labels_many(&self, ids: impl IntoIterator<Item = SeriesId>) -> Vec<Option<Labels>> {
        let r = self.inner.read();
        ids.into_iter()
            .map(|id| r.labels.get(id as usize).cloned().flatten())
            .collect()
    }

    /// The label fingerprint ([`Labels::fingerprint`]) of each id, `None` when the id is
    /// not (or no longer) in the catalog; computed once per series and kept.
    pub fn fingerprints_many(&self, ids: &[SeriesId]) -> Vec<Option<u128>> {
        let mut out = Vec::with_capacity(ids.len());
        // The label sets not hashed yet, hashed after the lock is let go: SHA-256 of a
        // million sets under it would hold every series registration back.
        let mut todo: Vec<(usize, SeriesId, Labels)> = Vec::new();
        {
            let r = self.inner.read();
            for (k, &id) in ids.iter().enumerate() {
                let kept = r.fingerprints.get(id as usize).copied().unwrap_or(0);
                out.push((kept != 0).then_some(kept));
                if kept == 0
                    && let Some(Some(l)) = r.labels.get(id as usize)
                {
                    todo.push((k, id, l.clone()));
                }
            }
        }
        let mut new = Vec::with_capacity(todo.len());
        for (k, id, l) in todo {
            let fp = l.fingerprint();
            out[k] = Some(fp);
            new.push((id, fp));
        }
        if !new.is_empty() {
            let mut w = self.inner.write();
            for (id, fp) in new {
                // Removed meanwhile: nothing to keep.
                if w.labels.get(id as usize).is_some_and(Option::is_some) {
                    if w.fingerprints.len() <= id as usize {
                        let len = w.labels.len().max(id as usize + 1);
                        w.fingerprints.resize(len, 0);
                    }
                    w.fingerprints[id as usize] = fp;
                }
            }
        }
        out
    }

    /// An estimate of the bytes the catalog holds: label sets, the id map, postings. It
    /// walks every series and posting under the read lock (milliseconds at a million
    /// series), so callers refresh it rarely (`/metrics` at most once a minute).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let r = self.inner.read();
        // A label set's one allocation (counts included); the slot is in `by_id`.
        let labels: usize = r.labels.iter().flatten().map(Labels::heap_bytes).sum();
        // hashbrown: one slot and one control byte per bucket (capacity is 7/8 of them).
        let ids = r.ids.capacity() * 8 / 7 * (size_of::<SeriesId>() + 1);
        let by_id = r.labels.capacity() * size_of::<Option<Labels>>()
            + r.fingerprints.capacity() * size_of::<u128>();
        // A B-tree node holds up to 11 entries; count ~1.5 slots per entry.
        let entry = size_of::<Box<str>>() + size_of::<Posting>();
        let postings: usize = r
            .postings
            .iter()
            .map(|(name, values)| {
                size_of::<(Box<str>, BTreeMap<Box<str>, Posting>)>()
                    + 1
                    + name.len()
                    + values
                        .iter()
                        .map(|(v, p)| entry * 3 / 2 + v.len() + p.heap_bytes())
                        .sum::<usize>()
            })
            .sum();
        labels + ids + by_id + r.live.serialized_size() + postings
    }

    /// Series in the catalog.
    pub fn len(&self) -> usize {
        self.inner.read().live.len() as usize
    }

    /// Ids of the series in the catalog.
    pub fn live(&self) -> RoaringBitmap {
        self.inner.read().live.clone()
    }

    /// Ids ever handed out (live ones and tombstones).
    pub fn ids_allocated(&self) -> usize {
        self.inner.read().labels.len()
    }

    /// Removes these series (labels, postings); returns how many were in the catalog.
    /// The caller guarantees no source holds them and no writer is registering them.
    pub fn remove(&self, dead: &RoaringBitmap) -> usize {
        let mut w = self.inner.write();
        let dead = dead & &w.live;
        for id in &dead {
            let Some(labels) = w.labels.get_mut(id as usize).and_then(Option::take) else {
                continue;
            };
            if let Some(fp) = w.fingerprints.get_mut(id as usize) {
                *fp = 0;
            }
            let hash = w.hasher.hash_one(&labels);
            if let Ok(slot) = w.ids.find_entry(hash, |&x| x == id) {
                slot.remove();
            }
            for (n, v) in labels.iter() {
                let Some(values) = w.postings.get_mut(n) else {
                    continue;
                };
                if values.get_mut(v).is_some_and(|b| b.remove(id)) {
                    values.remove(v);
                }
                if values.is_empty() {
                    w.postings.remove(n);
                }
            }
        }
        w.live -= &dead;
        if w.ids.capacity() > 2 * w.ids.len() + 1024 {
            let w = &mut *w;
            let (labels, hasher) = (&w.labels, &w.hasher);
            w.ids
                .shrink_to_fit(|&id| hasher.hash_one(labels[id as usize].as_ref().expect("live")));
        }
        dead.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Series whose labels satisfy every matcher. Regex matchers run against the value
    /// dictionary of their label, never against every series.
    pub fn select(&self, matchers: &[Matcher]) -> RoaringBitmap {
        let r = self.inner.read();
        let all = || r.live.clone();
        let mut result: Option<RoaringBitmap> = None;
        // Apply narrowing matchers first so that subtractive ones work on a small set.
        let mut ordered: Vec<&Matcher> = matchers.iter().collect();
        ordered.sort_by_key(|m| m.matches_empty());
        for m in ordered {
            let values = r.postings.get(m.name.as_str());
            if !m.matches_empty() {
                let mut set = RoaringBitmap::new();
                if let Some(values) = values {
                    match &m.op {
                        MatchOp::Equal => {
                            if let Some(b) = values.get(m.value.as_str()) {
                                b.union_into(&mut set);
                            }
                        }
                        // `a|b|c`: direct lookups, not a regex test of every value.
                        _ => match m.literal_alternatives() {
                            Some(literals) => {
                                for v in literals {
                                    if let Some(b) = values.get(v.as_str()) {
                                        b.union_into(&mut set);
                                    }
                                }
                            }
                            None => {
                                for (v, b) in values {
                                    if m.matches(v) {
                                        b.union_into(&mut set);
                                    }
                                }
                            }
                        },
                    }
                }
                result = Some(match result {
                    Some(acc) => acc & set,
                    None => set,
                });
            } else {
                // Matches series without the label: remove those whose value does not match.
                let mut exclude = RoaringBitmap::new();
                if let Some(values) = values {
                    for (v, b) in values {
                        if !m.matches(v) {
                            b.union_into(&mut exclude);
                        }
                    }
                }
                let acc = result.take().unwrap_or_else(all);
                result = Some(acc - exclude);
            }
            if result.as_ref().is_some_and(|b| b.is_empty()) {
                break;
            }
        }
        result.unwrap_or_else(all)
    }

    /// Label names used by any series in `within`, sorted.
    pub fn label_names(&self, within: &RoaringBitmap) -> Vec<String> {
        let r = self.inner.read();
        // Every series selected (the common "all time, no match[]" case): no intersections.
        if *within == r.live {
            let mut names: Vec<String> = r.postings.keys().map(|n| n.to_string()).collect();
            names.sort();
            return names;
        }
        let mut names: Vec<String> = r
            .postings
            .iter()
            .filter(|(_, values)| values.values().any(|b| !b.is_disjoint(within)))
            .map(|(n, _)| n.to_string())
            .collect();
        names.sort();
        names
    }

    /// Values of `name` used by any series in `within`, sorted.
    pub fn label_values(&self, name: &str, within: &RoaringBitmap) -> Vec<String> {
        let r = self.inner.read();
        let Some(values) = r.postings.get(name) else {
            return vec![];
        };
        if *within == r.live {
            return values.keys().map(|v| v.to_string()).collect();
        }
        // Few selected series relative to the label's values: read their label sets instead
        // of testing every value's postings against the selection.
        if (within.len() as usize) < values.len().saturating_mul(256) {
            let mut set: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
            for id in within {
                if let Some(v) = r
                    .labels
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .and_then(|l| l.get(name))
                {
                    set.insert(v);
                }
            }
            return set.into_iter().map(str::to_string).collect();
        }
        values
            .iter()
            .filter(|(_, b)| !b.is_disjoint(within))
            .map(|(v, _)| v.to_string())
            .collect()
    }
}

fn insert(w: &mut Inner, labels: &Labels) -> SeriesId {
    match w.find(labels) {
        Some(id) => id,
        None => insert_owned(w, labels.clone()),
    }
}

/// Registers a label set not in the catalog yet.
fn insert_owned(w: &mut Inner, labels: Labels) -> SeriesId {
    let id = w.labels.len() as SeriesId;
    for (n, v) in labels.iter() {
        // Names and values are mostly known already: look them up before allocating keys.
        if !w.postings.contains_key(n) {
            w.postings.insert(n.into(), BTreeMap::new());
        }
        let values = w.postings.get_mut(n).expect("just ensured");
        match values.get_mut(v) {
            Some(b) => b.insert(id),
            None => {
                values.insert(v.into(), Posting::One(id));
            }
        }
    }
    w.add(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn matchers_resolve_through_postings() {
        let c = Catalog::new();
        let a = c.get_or_insert(&l(&[("__name__", "up"), ("job", "api")]));
        let b = c.get_or_insert(&l(&[("__name__", "up"), ("job", "db"), ("env", "prod")]));
        let d = c.get_or_insert(&l(&[("__name__", "down")]));
        assert_eq!(
            c.get_or_insert(&l(&[("job", "api"), ("__name__", "up")])),
            a
        );
        let ids = |ms: Vec<Matcher>| c.select(&ms).iter().collect::<Vec<_>>();
        assert_eq!(ids(vec![Matcher::equal("__name__", "up")]), vec![a, b]);
        assert_eq!(
            ids(vec![Matcher::regex("job", "a.*", false).unwrap()]),
            vec![a]
        );
        assert_eq!(
            ids(vec![
                Matcher::equal("__name__", "up"),
                Matcher::equal("env", "")
            ]),
            vec![a]
        );
        assert_eq!(ids(vec![Matcher::not_equal("job", "api")]), vec![b, d]);
        assert_eq!(
            ids(vec![Matcher::regex("job", "nope", false).unwrap()]),
            Vec::<u32>::new()
        );
        let all = c.select(&[Matcher::regex("__name__", ".+", false).unwrap()]);
        assert_eq!(c.label_names(&all), vec!["__name__", "env", "job"]);
        assert_eq!(
            c.label_values("job", &RoaringBitmap::from_iter([b])),
            vec!["db"]
        );
    }

    /// Fingerprints are each label set's own, kept after the first ask, and gone with a
    /// removed series (whose id is never reused).
    #[test]
    fn fingerprints_are_kept_until_their_series_is_removed() {
        let c = Catalog::new();
        let sets: Vec<Labels> = (0..50)
            .map(|i| l(&[("__name__", "m"), ("i", &i.to_string())]))
            .collect();
        let ids = c.get_or_insert_many(&sets);
        let want: Vec<Option<u128>> = sets.iter().map(|s| Some(s.fingerprint())).collect();
        // Part asked first, then all (kept and new mixed), then all again.
        assert_eq!(c.fingerprints_many(&ids[10..20]), want[10..20].to_vec());
        assert_eq!(c.fingerprints_many(&ids), want);
        assert_eq!(c.fingerprints_many(&ids), want);
        let dead = RoaringBitmap::from_iter([ids[3], ids[15]]);
        c.remove(&dead);
        let got = c.fingerprints_many(&ids);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let removed = k == 3 || k == 15;
            assert_eq!(g.is_none(), removed, "series {k}");
            if !removed {
                assert_eq!(g, w, "series {k}");
            }
        }
        // Unknown ids have none; a series added later gets its own.
        assert_eq!(c.fingerprints_many(&[9_999]), vec![None]);
        let late = l(&[("__name__", "late")]);
        let id = c.get_or_insert(&late);
        assert_eq!(c.fingerprints_many(&[id]), vec![Some(late.fingerprint())]);
    }

    /// Bulk registration (a block at startup) indexes exactly as one-by-one registration:
    /// same ids, same answers for every matcher, label name and value.
    #[test]
    fn bulk_registration_indexes_like_single_inserts() {
        let set = |i: u32| {
            l(&[
                ("__name__", if i.is_multiple_of(3) { "a" } else { "b" }),
                ("pod", &format!("p{}", i % 50)),
                ("zone", &format!("z{}", i % 4)),
                ("uniq", &format!("u{i}")),
            ])
        };
        let (bulk, single) = (Catalog::new(), Catalog::new());
        for i in 0..20 {
            assert_eq!(bulk.get_or_insert(&set(i)), single.get_or_insert(&set(i)));
        }
        // Existing, new, and new values of existing names; a brand-new label name.
        let mut sets: Vec<Labels> = (10..120).map(set).collect();
        sets.push(l(&[("__name__", "a"), ("fresh", "x")]));
        let got = bulk.get_or_insert_owned(sets.clone());
        let want: Vec<SeriesId> = sets.iter().map(|s| single.get_or_insert(s)).collect();
        assert_eq!(got, want);
        assert_same_index(&bulk, &single);
    }

    fn block_set(i: u32) -> Labels {
        l(&[
            ("__name__", if i.is_multiple_of(3) { "a" } else { "b" }),
            ("pod", &format!("p{}", i % 50)),
            ("zone", &format!("z{}", i % 4)),
            ("uniq", &format!("u{i:04}")),
        ])
    }

    fn assert_same_index(got: &Catalog, want: &Catalog) {
        let all = want.live();
        assert_eq!(got.live(), all);
        assert_eq!(got.label_names(&all), want.label_names(&all));
        for name in ["__name__", "pod", "zone", "uniq", "fresh"] {
            assert_eq!(got.label_values(name, &all), want.label_values(name, &all));
        }
        for ms in [
            vec![Matcher::equal("__name__", "a")],
            vec![Matcher::equal("pod", "p7"), Matcher::equal("zone", "z3")],
            vec![Matcher::regex("uniq", "u1.*", false).unwrap()],
            vec![Matcher::equal("uniq", "u0042")],
            vec![Matcher::equal("fresh", "x")],
            vec![Matcher::not_equal("pod", "p1")],
        ] {
            assert_eq!(got.select(&ms), want.select(&ms), "{ms:?}");
        }
        assert_eq!(got.cardinality(&all, 100), want.cardinality(&all, 100));
    }

    /// A block's label sets (sorted: local id order) and its postings file's rows, as the
    /// block writer makes them.
    fn block(range: std::ops::Range<u32>) -> (Vec<Labels>, Vec<(String, String, RoaringBitmap)>) {
        let mut sets: Vec<Labels> = range.map(block_set).collect();
        sets.sort();
        let mut p: BTreeMap<(String, String), RoaringBitmap> = BTreeMap::new();
        for (local, s) in sets.iter().enumerate() {
            for (n, v) in s.iter() {
                p.entry((n.into(), v.into()))
                    .or_default()
                    .insert(local as u32);
            }
        }
        (sets, p.into_iter().map(|((n, v), b)| (n, v, b)).collect())
    }

    fn postings(rows: &[(String, String, RoaringBitmap)]) -> Option<BlockPostings> {
        BlockPostings::from_sorted(
            rows.iter()
                .map(|(n, v, b)| (n.as_str(), v.as_str(), b.clone())),
        )
    }

    /// A block whose series are all new takes its postings from its index file, into an
    /// empty catalog or after others; a block repeating series, or postings that do not
    /// account for its label pairs, build them from the label sets. Every way indexes as
    /// single inserts do.
    #[test]
    fn a_blocks_postings_file_indexes_like_single_inserts() {
        let single = Catalog::new();
        let single_block = |sets: &[Labels]| -> Vec<SeriesId> {
            sets.iter().map(|s| single.get_or_insert(s)).collect()
        };
        let got = Catalog::new();
        // Into an empty catalog.
        let (sets, rows) = block(0..300);
        assert_eq!(
            got.get_or_insert_indexed(sets.clone(), postings(&rows)),
            (single_block(&sets), true)
        );
        assert_same_index(&got, &single);
        // All new, after 300 others (local ids shifted), on existing names and values.
        let (sets, rows) = block(300..400);
        assert_eq!(
            got.get_or_insert_indexed(sets.clone(), postings(&rows)),
            (single_block(&sets), true)
        );
        assert_same_index(&got, &single);
        // Some series known: the file's local ids are not the new ids.
        let (sets, rows) = block(350..450);
        assert_eq!(
            got.get_or_insert_indexed(sets.clone(), postings(&rows)),
            (single_block(&sets), false)
        );
        assert_same_index(&got, &single);
        // A postings file missing a row, or with an id past the block, is not used.
        let (sets, mut rows) = block(450..500);
        rows.remove(7);
        assert_eq!(
            got.get_or_insert_indexed(sets.clone(), postings(&rows)),
            (single_block(&sets), false)
        );
        let (sets, mut rows) = block(500..550);
        let first = rows[3].2.min().unwrap();
        rows[3].2.remove(first);
        rows[3].2.insert(10_000);
        assert_eq!(
            got.get_or_insert_indexed(sets.clone(), postings(&rows)),
            (single_block(&sets), false)
        );
        assert_same_index(&got, &single);
        // Rows out of order are refused.
        let (_, mut rows) = block(0..10);
        rows.swap(0, 1);
        assert!(postings(&rows).is_none());
    }
}
