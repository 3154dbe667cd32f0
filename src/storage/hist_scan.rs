//! Native-histogram samples of a snapshot: the histogram lane beside the float scan.
//! Blocks keep them in `histograms.parquet`, heads in their own per-series runs; a read
//! merges every source with the same precedence as floats (later block, then heads, wins
//! on a timestamp).

use std::collections::{BTreeMap, HashMap};

use roaring::RoaringBitmap;

use super::StorageError;
use super::block::{LoadedBlock, read_parquet};
use super::head::Hist;
use super::scan::Snapshot;
use crate::catalog::SeriesId;

/// One series' histogram samples in the range, ascending, one per timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct HistRun {
    pub id: SeriesId,
    pub ts: Vec<i64>,
    pub hists: Vec<Hist>,
}

impl Snapshot {
    /// Whether some source overlapping the range may hold histograms of `ids` (a block
    /// with histograms that holds any of them counts, whatever its histograms' series).
    pub fn may_have_histograms(&self, ids: &RoaringBitmap, min_t: i64, max_t: i64) -> bool {
        self.blocks.iter().any(|b| {
            b.meta.num_histograms > 0
                && b.meta.overlaps(min_t, max_t)
                && !b.hist_present.is_disjoint(ids)
        }) || self.heads.iter().any(|(h, _)| {
            let h = h.read();
            !h.histogram_series().is_disjoint(ids)
        })
    }

    /// The histogram samples of `ids` in `[min_t, max_t]` as of the snapshot, by series id.
    pub async fn histograms(
        &self,
        ids: &RoaringBitmap,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<HistRun>, StorageError> {
        // Each value with the source it came from (precedence order).
        let mut merged: HashMap<SeriesId, BTreeMap<i64, (usize, Hist)>> = HashMap::new();
        let mut source = 0;
        for b in self.blocks.iter() {
            if b.meta.num_histograms == 0
                || !b.meta.overlaps(min_t, max_t)
                || b.hist_present.is_disjoint(ids)
            {
                continue;
            }
            source += 1;
            for (g, t, h) in
                read_block_histograms(self.shared.store.as_ref(), b, ids, min_t, max_t).await?
            {
                merged.entry(g).or_default().insert(t, (source, h));
            }
        }
        for (h, seq) in self.heads.iter() {
            source += 1;
            let h = h.read();
            if !h.has_histograms() {
                continue;
            }
            for id in ids & h.histogram_series() {
                if let Some((ts, hs)) = h
                    .get_histograms(id)
                    .and_then(|b| b.read(min_t, max_t, *seq))
                {
                    merged
                        .entry(id)
                        .or_default()
                        .extend(ts.into_iter().zip(hs.into_iter().map(|h| (source, h))));
                }
            }
        }
        let mut out: Vec<HistRun> = merged
            .into_iter()
            .map(|(id, m)| {
                let (ts, hists) = merge_sources(m).into_iter().unzip();
                HistRun { id, ts, hists }
            })
            .collect();
        out.sort_unstable_by_key(|r| r.id);
        Ok(out)
    }
}

/// A series' histograms from several sources in time order. Where the source changes, a
/// `not_reset` hint was derived against a sample the reader no longer sees before it: it
/// becomes `unknown` (Prometheus's merging iterator does the same).
pub(super) fn merge_sources(m: BTreeMap<i64, (usize, Hist)>) -> Vec<(i64, Hist)> {
    use crate::model::histogram::CounterResetHint as H;
    let mut out = Vec::with_capacity(m.len());
    let mut prev_source = None;
    for (t, (source, mut h)) in m {
        if prev_source.is_some_and(|p| p != source) && h.hint == H::NotCounterReset {
            std::sync::Arc::make_mut(&mut h).hint = H::Unknown;
        }
        prev_source = Some(source);
        out.push((t, h));
    }
    out
}

/// One block's histograms of `ids` in the range, with global ids.
pub(super) async fn read_block_histograms(
    store: &dyn object_store::ObjectStore,
    b: &LoadedBlock,
    ids: &RoaringBitmap,
    min_t: i64,
    max_t: i64,
) -> Result<Vec<(SeriesId, i64, Hist)>, StorageError> {
    let locals: RoaringBitmap = b.local_ids(ids).into_iter().collect();
    if locals.is_empty() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for batch in read_parquet(store, &b.path.histograms()).await? {
        let rows = super::block::histograms::from_batch(&batch, |local, t| {
            locals.contains(local) && t >= min_t && t <= max_t
        })?;
        for (local, t, h) in rows {
            out.push((b.global_of(local)?, t, std::sync::Arc::new(h)));
        }
    }
    Ok(out)
}
