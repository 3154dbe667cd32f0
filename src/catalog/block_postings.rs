//! A block's postings as its index file holds them, for registering a block whose series
//! are all new without rebuilding its postings from the label sets.

use roaring::RoaringBitmap;

use super::{Posting, SeriesId};

/// One label name's values (ascending) with the block-local ids holding them (a value of
/// one series kept as its id: a unique label has as many values as the block has series).
pub(super) type NameValues = (Box<str>, Vec<(Box<str>, Posting)>);

/// Per label name (ascending), its values with their block-local ids.
#[derive(Debug, Default)]
pub struct BlockPostings {
    pub(super) names: Vec<NameValues>,
}

impl BlockPostings {
    /// From `(name, value, local ids)` rows in the order the block writer produces;
    /// `None` when they are not strictly ascending by `(name, value)`.
    pub fn from_sorted<'a>(
        rows: impl IntoIterator<Item = (&'a str, &'a str, RoaringBitmap)>,
    ) -> Option<Self> {
        let mut names: Vec<NameValues> = Vec::new();
        for (n, v, ids) in rows {
            let ids = match ids.len() {
                1 => Posting::One(ids.min().expect("one id")),
                _ => Posting::Many(ids),
            };
            match names.last_mut() {
                Some((last, values)) if &**last == n => {
                    if values.last().is_some_and(|(lv, _)| &**lv >= v) {
                        return None;
                    }
                    values.push((v.into(), ids));
                }
                Some((last, _)) if &**last > n => return None,
                _ => names.push((n.into(), vec![(v.into(), ids)])),
            }
        }
        Some(BlockPostings { names })
    }

    /// Whether the postings account for exactly a block of `series` label sets with
    /// `pairs` label pairs in all: every id below `series`, no empty posting, and as many
    /// (id, pair) entries as pairs. Label sets have no repeated name, so this is every
    /// pair once.
    pub(super) fn fits(&self, series: usize, pairs: usize) -> bool {
        let mut total = 0u64;
        for (_, values) in &self.names {
            for (_, ids) in values {
                let max = match ids {
                    Posting::One(id) => Some(*id),
                    Posting::Many(b) => b.max(),
                };
                match max {
                    Some(m) if (m as usize) < series => total += ids.len(),
                    _ => return false,
                }
            }
        }
        total == pairs as u64
    }
}

impl Posting {
    /// A posting of block-local ids as global ids `base + local`.
    pub(super) fn from_local(local: Posting, base: SeriesId) -> Posting {
        match local {
            Posting::One(l) => Posting::One(base + l),
            Posting::Many(b) if base == 0 => Posting::Many(b),
            Posting::Many(b) => Posting::Many(
                RoaringBitmap::from_sorted_iter(b.iter().map(|l| base + l))
                    .expect("ascending ids stay ascending"),
            ),
        }
    }
}
