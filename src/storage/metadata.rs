//! Metric metadata (type, help, unit) scoped like series.
//!
//! Metadata is kept per family *and per carrier*: the series that brought it (remote write
//! 2.0: the series itself; remote write 1.0 and OTLP: the request's series of that family).
//! Each series carries at most one variant of its family (the last written). A reader sees
//! a variant only when it may see one of its carriers, so a writer of series a reader
//! cannot see can neither show that reader its text nor replace what the reader sees.
//! Metadata that arrived without a series of its family (remote write 1.0 sends metadata
//! in requests of its own) is *unattributed*: it is shown only to readers without enforced
//! matchers, who see every series of the tenant anyway.
//!
//! In memory carriers are series ids. The snapshot (`metadata-scoped.json`, written at each
//! flush) keeps each variant's first [`SNAPSHOT_CARRIERS`] carriers as label sets; after a
//! restart a restricted reader sees a variant through those until the senders send it
//! again (remote write 2.0 with every request, 1.0 every minute by default).

use std::collections::BTreeMap;

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, SeriesId};
use crate::ingest::MetricMetadata;
use crate::model::Labels;

/// Text (type, help, unit) all variants of one tenant may hold together; a new variant
/// beyond it is dropped and its series keep what they carried. Variants are otherwise
/// bounded by series: each series carries one. (No per-family cap: the writer of hidden
/// series could fill it and so keep a visible series' new text out.)
pub const MAX_TEXT_BYTES: usize = 16 << 20;
/// Carriers of one variant a snapshot names.
pub const SNAPSHOT_CARRIERS: usize = 64;

/// What the metadata API shows of a family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Meta {
    #[serde(rename = "type")]
    pub metric_type: String,
    pub help: String,
    pub unit: String,
}

impl Meta {
    fn text_bytes(&self) -> usize {
        self.metric_type.len() + self.help.len() + self.unit.len() + 64
    }

    pub fn of(md: &MetricMetadata) -> Meta {
        Meta {
            metric_type: md.metric_type.clone(),
            help: md.help.clone(),
            unit: md.unit.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Variant {
    meta: Meta,
    carriers: RoaringBitmap,
}

/// Every family's variants and who carried them.
#[derive(Debug, Default)]
pub struct MetadataStore {
    families: BTreeMap<String, Vec<Variant>>,
    unattributed: BTreeMap<String, Meta>,
    /// Text held by every variant and unattributed entry (against [`MAX_TEXT_BYTES`]).
    text_bytes: usize,
}

impl MetadataStore {
    /// Whether recording `meta` for these carriers would change nothing (then the WAL
    /// need not hold it again: remote write 2.0 repeats metadata with every request).
    pub fn is_known(&self, family: &str, meta: &Meta, ids: &[SeriesId]) -> bool {
        if ids.is_empty() {
            return self.unattributed.get(family) == Some(meta);
        }
        self.families.get(family).is_some_and(|vs| {
            vs.iter()
                .find(|v| &v.meta == meta)
                .is_some_and(|v| ids.iter().all(|&id| v.carriers.contains(id)))
        })
    }

    /// Records `meta` as carried by `ids` (no ids: unattributed). Each carrier leaves the
    /// variant it carried before.
    pub fn apply(&mut self, family: &str, meta: Meta, ids: &[SeriesId]) {
        if ids.is_empty() {
            let add = meta.text_bytes();
            let old = self.unattributed.get(family).map_or(0, Meta::text_bytes);
            if self.text_bytes + add > MAX_TEXT_BYTES + old {
                tracing::warn!(
                    family,
                    "metadata dropped: {MAX_TEXT_BYTES} bytes of text held"
                );
                return;
            }
            self.text_bytes = self.text_bytes + add - old;
            self.unattributed.insert(family.to_string(), meta);
            return;
        }
        let carriers: RoaringBitmap = ids.iter().copied().collect();
        let vs = self.families.entry(family.to_string()).or_default();
        let known = vs.iter().any(|v| v.meta == meta);
        if !known && self.text_bytes + meta.text_bytes() > MAX_TEXT_BYTES {
            tracing::warn!(
                family,
                "metadata dropped: {MAX_TEXT_BYTES} bytes of text held"
            );
            return;
        }
        for v in vs.iter_mut().filter(|v| v.meta != meta) {
            v.carriers -= &carriers;
        }
        let mut freed = 0;
        vs.retain(|v| {
            let keep = !v.carriers.is_empty() || v.meta == meta;
            if !keep {
                freed += v.meta.text_bytes();
            }
            keep
        });
        self.text_bytes -= freed;
        if let Some(v) = vs.iter_mut().find(|v| v.meta == meta) {
            v.carriers |= carriers;
        } else {
            self.text_bytes += meta.text_bytes();
            vs.push(Variant { meta, carriers });
        }
    }

    /// Records a request's (or WAL record's) metadata, each with its carriers' ids.
    pub fn apply_all<'a>(
        &mut self,
        md: impl IntoIterator<Item = (&'a MetricMetadata, &'a [SeriesId])>,
    ) {
        for (m, ids) in md {
            if !m.carriers.is_empty() && ids.is_empty() {
                // Its carriers are gone: nothing to attribute it to, and it must not
                // become unattributed (visible to more readers than its writer reached).
                continue;
            }
            self.apply(&m.metric_family_name, Meta::of(m), ids);
        }
    }

    /// What a reader sees, by family: the variants with a carrier among `series` (what it
    /// may see: its allowed set, or every live series), and the unattributed unless
    /// `restricted` (enforced matchers).
    pub fn visible(&self, series: &RoaringBitmap, restricted: bool) -> BTreeMap<String, Vec<Meta>> {
        let mut out: BTreeMap<String, Vec<Meta>> = BTreeMap::new();
        for (family, vs) in &self.families {
            for v in vs.iter().filter(|v| !v.carriers.is_disjoint(series)) {
                out.entry(family.clone()).or_default().push(v.meta.clone());
            }
        }
        if !restricted {
            for (family, m) in &self.unattributed {
                out.entry(family.clone()).or_default().push(m.clone());
            }
        }
        for metas in out.values_mut() {
            metas.sort();
            metas.dedup();
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty() && self.unattributed.is_empty()
    }

    /// The persisted form: each variant with its first live carriers as label sets.
    pub fn snapshot(&self, catalog: &Catalog) -> Snapshot {
        let mut families = BTreeMap::new();
        for (family, vs) in &self.families {
            let mut out = Vec::new();
            for v in vs {
                let carriers: Vec<Vec<(String, String)>> = catalog
                    .labels_many(v.carriers.iter())
                    .into_iter()
                    .flatten()
                    .take(SNAPSHOT_CARRIERS)
                    .map(|l| l.to_pairs())
                    .collect();
                if !carriers.is_empty() {
                    out.push(SnapshotVariant {
                        meta: v.meta.clone(),
                        carriers,
                    });
                }
            }
            if !out.is_empty() {
                families.insert(family.clone(), out);
            }
        }
        Snapshot {
            families,
            unattributed: self.unattributed.clone(),
        }
    }

    /// Adds a snapshot's variants for the carriers the catalog knows and this store has not
    /// attributed yet (what arrived since — WAL replay, new writes — is newer).
    pub fn restore(&mut self, snap: Snapshot, catalog: &Catalog) {
        for (family, vs) in snap.families {
            for v in vs {
                let known: Vec<SeriesId> = v
                    .carriers
                    .into_iter()
                    .filter_map(|pairs| Labels::new(pairs).ok())
                    .filter_map(|l| catalog.lookup(&l))
                    .filter(|id| {
                        !self
                            .families
                            .get(&family)
                            .is_some_and(|vs| vs.iter().any(|x| x.carriers.contains(*id)))
                    })
                    .collect();
                if !known.is_empty() {
                    self.apply(&family, v.meta, &known);
                }
            }
        }
        for (family, m) in snap.unattributed {
            self.unattributed.entry(family).or_insert(m);
        }
    }
}

/// `metadata-scoped.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub families: BTreeMap<String, Vec<SnapshotVariant>>,
    #[serde(default)]
    pub unattributed: BTreeMap<String, Meta>,
}

impl Snapshot {
    /// Adds `other`'s carriers to this snapshot (a cluster shard's file keeps what earlier
    /// owners of the shard saw): a carrier moves to the variant `other` gives it.
    pub fn merge(&mut self, other: Snapshot) {
        for (family, vs) in other.families {
            let mine = self.families.entry(family).or_default();
            for v in vs {
                let moved: std::collections::HashSet<&Vec<(String, String)>> =
                    v.carriers.iter().collect();
                for m in mine.iter_mut() {
                    m.carriers.retain(|c| !moved.contains(c));
                }
                match mine.iter_mut().find(|m| m.meta == v.meta) {
                    Some(m) => m.carriers.extend(v.carriers),
                    None => mine.push(v),
                }
            }
            mine.retain(|m| !m.carriers.is_empty());
            for m in mine.iter_mut() {
                m.carriers.sort();
                m.carriers.dedup();
                m.carriers.truncate(SNAPSHOT_CARRIERS);
            }
        }
        self.unattributed.extend(other.unattributed);
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotVariant {
    #[serde(flatten)]
    pub meta: Meta,
    pub carriers: Vec<Vec<(String, String)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(help: &str) -> Meta {
        Meta {
            metric_type: "gauge".into(),
            help: help.into(),
            unit: String::new(),
        }
    }

    fn bits(ids: &[u32]) -> RoaringBitmap {
        ids.iter().copied().collect()
    }

    #[test]
    fn readers_see_only_variants_carried_by_series_they_see() {
        let mut s = MetadataStore::default();
        s.apply("x", meta("visible"), &[1, 2]);
        s.apply("x", meta("hidden"), &[10]);
        let live = bits(&[1, 2, 10]);
        let a = s.visible(&bits(&[1, 2]), true);
        assert_eq!(a["x"], vec![meta("visible")]);
        let all = s.visible(&live, false);
        assert_eq!(all["x"], vec![meta("hidden"), meta("visible")]);
        // The hidden writer re-sending for its own series changes nothing for the reader.
        s.apply("x", meta("hidden again"), &[10]);
        assert_eq!(s.visible(&bits(&[1, 2]), true)["x"], vec![meta("visible")]);
        // A carrier moving to a new variant leaves the old one.
        s.apply("x", meta("new"), &[1, 2]);
        assert_eq!(s.visible(&bits(&[1]), true)["x"], vec![meta("new")]);
        assert!(!s.visible(&live, false)["x"].contains(&meta("visible")));
    }

    #[test]
    fn unattributed_metadata_is_for_unrestricted_readers_only() {
        let mut s = MetadataStore::default();
        s.apply("y", meta("from a metadata-only request"), &[]);
        assert!(s.visible(&bits(&[1]), true).is_empty());
        assert_eq!(s.visible(&bits(&[1]), false)["y"].len(), 1);
    }

    #[test]
    fn text_is_bounded_and_many_hidden_variants_do_not_crowd_out_a_visible_one() {
        let mut s = MetadataStore::default();
        for i in 0..100u32 {
            s.apply("z", meta(&i.to_string()), &[i]);
        }
        s.apply("z", meta("visible"), &[1000]);
        assert_eq!(s.visible(&bits(&[1000]), true)["z"], vec![meta("visible")]);
        // Replacing a series' text frees the old variant's.
        let before = s.text_bytes;
        s.apply("z", meta("visible 2"), &[1000]);
        assert_eq!(s.text_bytes, before + 2);
        // Past the bound, new text is dropped and the series keep theirs.
        let big = "h".repeat(MAX_TEXT_BYTES);
        s.apply("z", meta(&big), &[1000]);
        assert_eq!(
            s.visible(&bits(&[1000]), true)["z"],
            vec![meta("visible 2")]
        );
    }
}
