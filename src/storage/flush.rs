//! Head → blocks.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::block::{BlockMeta, LoadedBlock, SeriesData, WalSource, write_block};
use super::engine::delete_through;
use super::engine::{ClusterMode, ShardOptions, Storage, delete_block, write_checkpoint};
use super::head::Head;
use super::manifest::Deletion;
use super::paths::BlockPath;
use super::{StorageError, wal};
use crate::catalog::{Catalog, SeriesId};

/// Series of one head split by block window, sorted by labels, with their global ids.
/// A series' float and histogram samples go to the same windows' blocks.
fn split_head(
    catalog: &Catalog,
    head: &Head,
    window_ms: i64,
) -> BTreeMap<i64, (Vec<SeriesData>, Vec<SeriesId>)> {
    let ids: Vec<SeriesId> = head.present().iter().collect();
    let labels = catalog.labels_many(ids.iter().copied());
    let mut rows: Vec<_> = ids
        .into_iter()
        .zip(labels)
        .filter_map(|(id, l)| match l {
            Some(l) => Some((id, l)),
            None => {
                // Cannot happen: series of a head are never removed (`Storage::forget_series`
                // runs under the registration gate and skips every head's series).
                tracing::error!(series = id, "head series missing from the catalog");
                None
            }
        })
        .collect();
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    let mut out: BTreeMap<i64, (Vec<SeriesData>, Vec<SeriesId>)> = BTreeMap::new();
    for (id, labels) in rows {
        let (ts, vals) = head.get(id).map(|b| b.read_all()).unwrap_or_default();
        let (hts, hvals) = head
            .get_histograms(id)
            .map(|b| b.read_all())
            .unwrap_or_default();
        let mut per_window: BTreeMap<i64, SeriesData> = BTreeMap::new();
        let empty = || SeriesData {
            labels: labels.clone(),
            ts: Vec::new(),
            vals: Vec::new(),
            hists: Vec::new(),
            exemplars: Vec::new(),
        };
        let mut i = 0;
        while i < ts.len() {
            let w = ts[i].div_euclid(window_ms);
            let end = ts.partition_point(|&t| t.div_euclid(window_ms) <= w);
            let e = per_window.entry(w).or_insert_with(empty);
            e.ts.extend_from_slice(&ts[i..end]);
            e.vals.extend_from_slice(&vals[i..end]);
            i = end;
        }
        for (t, h) in hts.into_iter().zip(hvals) {
            let e = per_window
                .entry(t.div_euclid(window_ms))
                .or_insert_with(empty);
            e.hists.push((t, h));
        }
        let (ets, evals) = head
            .get_exemplars(id)
            .map(|b| b.read_all())
            .unwrap_or_default();
        for (t, ex) in ets.into_iter().zip(evals) {
            let e = per_window
                .entry(t.div_euclid(window_ms))
                .or_insert_with(empty);
            e.exemplars.push(ex);
        }
        for (w, data) in per_window {
            let e = out.entry(w).or_default();
            e.0.push(data);
            e.1.push(id);
        }
    }
    out
}

impl Storage {
    /// Writes the head out as blocks and truncates the WAL. Returns the new blocks' metas.
    /// Heads left frozen by an earlier failed flush are written first.
    pub async fn flush(&self) -> Result<Vec<BlockMeta>, StorageError> {
        let start = std::time::Instant::now();
        let r = self.flush_heads().await;
        if r.as_ref().is_ok_and(|b| !b.is_empty()) {
            super::telemetry::FLUSH_DURATION.observe(start.elapsed().as_secs_f64());
        }
        r
    }

    async fn flush_heads(&self) -> Result<Vec<BlockMeta>, StorageError> {
        let _guard = self.maintenance.lock().await;
        // Until the blocks are listed a new block could collide with a leftover one.
        if let Some(why) = self.blocks_unavailable() {
            return Err(StorageError::Unavailable(format!(
                "blocks not loaded yet: {why}"
            )));
        }
        self.rotate().await?;
        let frozen: Vec<(u64, Arc<RwLock<Head>>)> = self.shared.state.read().frozen.clone();
        let opts = &self.shared.opts;
        let wal_dir = opts.data_dir.join("wal");
        let mut all = Vec::new();
        for (seg, head) in frozen {
            let windows = split_head(&self.shared.catalog, &head.read(), opts.block_duration_ms);
            let source = (opts.wal && opts.cluster.is_none()).then(|| WalSource {
                instance: self.shared.instance.clone(),
                segment: seg,
            });
            let mut loaded: Vec<Arc<LoadedBlock>> = Vec::new();
            for (_, (series, ids)) in windows {
                let id = ulid::Ulid::new().to_string();
                let written = write_block(
                    self.shared.store.clone(),
                    id.clone(),
                    &series,
                    1,
                    vec![],
                    source.clone(),
                )
                .await;
                let meta = match written {
                    Ok(m) => m,
                    Err(e) => {
                        // The head stays frozen and is written again on retry: remove what
                        // this attempt wrote, so retries during an outage leave no copies.
                        let store = self.shared.store.as_ref();
                        for b in loaded.iter().map(|b| b.meta.id.clone()).chain([id]) {
                            if let Err(d) = delete_block(store, &BlockPath::new(b.clone())).await {
                                tracing::warn!(block = %b, error = %d, "could not remove a block of a failed flush");
                            }
                        }
                        return Err(e);
                    }
                };
                tracing::info!(block = %meta.id, series = meta.num_series, samples = meta.num_samples, bytes = meta.bytes, "flushed head block");
                loaded.push(Arc::new(LoadedBlock::from_parts(meta, ids)));
            }
            if let Some(ClusterMode::Shard(sh)) = &opts.cluster {
                // The blocks and the shard's checkpoint land in one conditional put, under
                // this owner's epoch; then the covered segments may go.
                let metas: Vec<BlockMeta> = loaded.iter().map(|b| b.meta.clone()).collect();
                if let Err(e) = self.publish_flush(sh, seg, &metas).await {
                    for b in &metas {
                        let _ =
                            delete_block(self.shared.store.as_ref(), &BlockPath::new(b.id.clone()))
                                .await;
                    }
                    return Err(e);
                }
                all.extend(metas);
                self.shared
                    .state
                    .write()
                    .frozen
                    .retain(|(s, h)| !(*s == seg && Arc::ptr_eq(h, &head)));
                if let Err(e) = delete_through(self.shared.store.as_ref(), sh.shard, seg).await {
                    tracing::warn!(shard = sh.shard, error = %e, "could not delete flushed WAL segments; the next flush retries");
                }
            } else {
                if opts.wal {
                    // Every block file is durable by now (the store syncs each put, meta.json
                    // last): only then may the checkpoint say these segments are not needed.
                    write_checkpoint(&wal_dir, seg)?;
                    if let Some(j) = &opts.journal {
                        j.lock().push(format!("wal checkpoint {seg}"));
                    }
                }
                {
                    let mut st = self.shared.state.write();
                    all.extend(loaded.iter().map(|b| b.meta.clone()));
                    st.blocks.extend(loaded);
                    st.blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
                    st.frozen
                        .retain(|(s, h)| !(*s == seg && Arc::ptr_eq(h, &head)));
                }
            }
            // Its samples are in blocks now: they no longer count against the memory limit.
            let written = head.read().entries();
            let _ = opts.head_samples.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| Some(n.saturating_sub(written)),
            );
            if opts.wal && opts.cluster.is_none() {
                for s in wal::list_segments(&wal_dir)? {
                    if s <= seg {
                        std::fs::remove_file(wal::segment_path(&wal_dir, s))?;
                        if let Some(j) = &opts.journal {
                            j.lock().push(format!("wal delete {s}"));
                        }
                    }
                }
            }
        }
        if opts.cluster.is_none() {
            self.save_metadata().await?;
        }
        self.shared
            .stats
            .flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(all)
    }
}

impl Storage {
    /// Lists a shard's new blocks in the manifest and advances its checkpoint to `seg`,
    /// with the shard's metric metadata (merged into its file first), under this owner's
    /// epoch.
    async fn publish_flush(
        &self,
        sh: &ShardOptions,
        seg: u64,
        metas: &[BlockMeta],
    ) -> Result<(), StorageError> {
        let saved = self.save_shard_metadata(sh.shard).await?;
        super::manifest::ManifestStore::new(self.shared.store.clone())
            .update(|m| {
                let cur = m.shard(sh.shard);
                if cur.epoch != sh.epoch {
                    return Err(StorageError::Fenced(format!(
                        "shard {} is at epoch {} (ours {})",
                        sh.shard, cur.epoch, sh.epoch
                    )));
                }
                for b in metas {
                    if !m.blocks.iter().any(|x| x.id == b.id) {
                        m.blocks.push(b.clone());
                    }
                }
                let st = m.shards.entry(sh.shard).or_default();
                st.checkpoint = st.checkpoint.max(seg);
                if saved {
                    *m.metadata.entry(sh.shard).or_default() += 1;
                }
                Ok(true)
            })
            .await?;
        Ok(())
    }

    /// Merges this shard's metric metadata into its file in the bucket (the file keeps
    /// what earlier owners saw). Returns whether it wrote.
    async fn save_shard_metadata(&self, shard: u32) -> Result<bool, StorageError> {
        use object_store::ObjectStoreExt;
        let snap = {
            let m = self.shared.metadata.read();
            if m.is_empty() {
                return Ok(false);
            }
            m.snapshot(&self.shared.catalog)
        };
        let key = super::engine::metadata_key(shard);
        let mut merged = match self.shared.store.get(&key).await {
            Ok(r) => serde_json::from_slice::<super::metadata::Snapshot>(&r.bytes().await?)
                .unwrap_or_default(),
            Err(object_store::Error::NotFound { .. }) => Default::default(),
            Err(e) => return Err(e.into()),
        };
        let before = serde_json::to_vec(&merged).unwrap_or_default();
        merged.merge(snap);
        let json = serde_json::to_vec(&merged).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        if json == before {
            return Ok(false);
        }
        self.shared.store.put(&key, json.into()).await?;
        Ok(true)
    }
}

/// What compaction changed, for the manifest: blocks listed and unlisted.
pub(super) fn compaction_change(
    m: &mut super::manifest::Manifest,
    added: &[BlockMeta],
    removed: &[String],
    now_ms: i64,
) -> Result<bool, StorageError> {
    // Another compactor (one whose lease lapsed, or ours) changed these blocks meanwhile:
    // publishing over it would list their samples twice or bring expired ones back.
    if let Some(id) = removed
        .iter()
        .find(|id| !m.blocks.iter().any(|b| &b.id == *id))
    {
        return Err(StorageError::Fenced(format!(
            "block {id} was unlisted by someone else during this compaction"
        )));
    }
    let gone: std::collections::HashSet<&str> = removed.iter().map(String::as_str).collect();
    let before = m.blocks.len();
    m.blocks.retain(|b| !gone.contains(b.id.as_str()));
    let unlisted = before - m.blocks.len();
    for id in removed {
        if !m.deleted.iter().any(|d| &d.id == id) {
            m.deleted.push(Deletion {
                id: id.clone(),
                at_ms: now_ms,
            });
        }
    }
    for b in added {
        if !m.blocks.iter().any(|x| x.id == b.id) {
            m.blocks.push(b.clone());
        }
    }
    Ok(unlisted > 0 || !added.is_empty())
}

#[cfg(test)]
mod tests {
    use super::compaction_change;
    use crate::storage::block::BlockMeta;
    use crate::storage::manifest::Manifest;

    fn meta(id: &str) -> BlockMeta {
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "id": id, "min_t": 0, "max_t": 1, "num_series": 1,
            "num_samples": 1, "level": 1, "bytes": 1
        }))
        .unwrap()
    }

    #[test]
    fn a_compaction_of_blocks_someone_else_unlisted_is_refused() {
        let mut m = Manifest {
            blocks: vec![meta("a"), meta("b")],
            ..Default::default()
        };
        let merged = [meta("c")];
        assert!(compaction_change(&mut m.clone(), &merged, &["a".into(), "x".into()], 5).is_err());
        assert!(compaction_change(&mut m, &merged, &["a".into(), "b".into()], 5).unwrap());
        assert_eq!(
            m.blocks.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(m.deleted.len(), 2);
    }
}
