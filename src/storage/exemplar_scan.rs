//! Exemplars of a snapshot: from the blocks' `exemplars.parquet` and the heads, merged with
//! the samples' precedence (a later source wins on a timestamp).

use std::collections::{BTreeMap, HashMap};

use roaring::RoaringBitmap;

use super::StorageError;
use super::block::{LoadedBlock, read_parquet};
use super::head::Ex;
use super::scan::Snapshot;
use crate::catalog::SeriesId;

impl Snapshot {
    /// Exemplars of `ids` with `min_t <= t <= max_t`, by series id (ascending), each
    /// series' in time order.
    pub async fn exemplars(
        &self,
        ids: &RoaringBitmap,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<(SeriesId, Vec<Ex>)>, StorageError> {
        let mut merged: HashMap<SeriesId, BTreeMap<i64, Ex>> = HashMap::new();
        for b in self.blocks.iter() {
            if b.meta.num_exemplars == 0 || !b.meta.overlaps(min_t, max_t) {
                continue;
            }
            for (g, e) in
                read_block_exemplars(self.shared.store.as_ref(), b, ids, min_t, max_t).await?
            {
                merged.entry(g).or_default().insert(e.ts, e);
            }
        }
        for (h, seq) in self.heads.iter() {
            let h = h.read();
            if h.num_exemplars() == 0 {
                continue;
            }
            for id in h.exemplar_series() {
                if !ids.contains(id) {
                    continue;
                }
                if let Some((ts, es)) = h.get_exemplars(id).and_then(|b| b.read(min_t, max_t, *seq))
                {
                    merged.entry(id).or_default().extend(ts.into_iter().zip(es));
                }
            }
        }
        let mut out: Vec<(SeriesId, Vec<Ex>)> = merged
            .into_iter()
            .map(|(id, m)| (id, m.into_values().collect()))
            .collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        Ok(out)
    }
}

/// One block's exemplars of `ids` in the range, with global ids.
pub(super) async fn read_block_exemplars(
    store: &dyn object_store::ObjectStore,
    b: &LoadedBlock,
    ids: &RoaringBitmap,
    min_t: i64,
    max_t: i64,
) -> Result<Vec<(SeriesId, Ex)>, StorageError> {
    let locals: RoaringBitmap = b.local_ids(ids).into_iter().collect();
    if locals.is_empty() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for batch in read_parquet(store, &b.path.exemplars()).await? {
        let rows = super::block::exemplars::from_batch(&batch, |local, t| {
            locals.contains(local) && t >= min_t && t <= max_t
        })?;
        for (local, e) in rows {
            out.push((b.global_of(local)?, std::sync::Arc::new(e)));
        }
    }
    Ok(out)
}
