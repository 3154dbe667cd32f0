//! Compaction (merge the blocks of one sealed window into one) and retention.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use roaring::RoaringBitmap;

use super::StorageError;
use super::block::{BlockMeta, BlockWriter, LoadedBlock};
use super::engine::{ClusterMode, Storage, delete_block};
use super::exemplar_scan::read_block_exemplars;
use super::head::{Ex, Hist};
use super::hist_scan::read_block_histograms;
use super::paths::BlockPath;
use super::read::Piece;
use super::scan::merge_sources;
use crate::catalog::SeriesId;
use crate::model::Labels;

/// What one compaction run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    pub merged: Vec<BlockMeta>,
    pub expired: Vec<String>,
    pub deleted: usize,
    /// Series removed from the catalog because no block or head holds them any more.
    pub forgotten: usize,
}

impl Storage {
    /// Drops blocks wholly older than the retention period, then merges the blocks of each
    /// sealed window (first `block_duration`, then `max_block_duration`) into one block.
    /// Overlapping samples resolve to the newest block's value.
    pub async fn compact(&self) -> Result<CompactionReport, StorageError> {
        let sealed_before = self.now_ms() - self.shared.opts.ooo_window_ms;
        self.compact_sealed(sealed_before).await
    }

    /// Compaction treating every window as sealed: for offline bulk import, where no more
    /// samples will arrive (a server seals only windows older than the out-of-order window).
    pub async fn compact_all(&self) -> Result<CompactionReport, StorageError> {
        self.compact_sealed(i64::MAX).await
    }

    async fn compact_sealed(&self, sealed_before: i64) -> Result<CompactionReport, StorageError> {
        let start = std::time::Instant::now();
        let r = self.compact_windows(sealed_before).await;
        if r.as_ref()
            .is_ok_and(|c| !c.merged.is_empty() || !c.expired.is_empty() || c.deleted > 0)
        {
            super::telemetry::COMPACTION_DURATION.observe(start.elapsed().as_secs_f64());
        }
        r
    }

    async fn compact_windows(&self, sealed_before: i64) -> Result<CompactionReport, StorageError> {
        let _guard = self.maintenance.lock().await;
        if let Some(why) = self.blocks_unavailable() {
            return Err(StorageError::Unavailable(format!(
                "blocks not loaded yet: {why}"
            )));
        }
        let o = self.shared.opts.clone();
        let now = self.now_ms();
        let mut report = CompactionReport::default();

        let cutoff = now - o.retention_ms;
        {
            let mut st = self.shared.state.write();
            let (expired, kept): (Vec<_>, Vec<_>) =
                st.blocks.drain(..).partition(|b| b.meta.max_t < cutoff);
            st.blocks = kept;
            report.expired = expired.iter().map(|b| b.meta.id.clone()).collect();
            st.graveyard.extend(expired);
        }

        for window in [o.block_duration_ms, o.max_block_duration_ms] {
            let groups: BTreeMap<i64, Vec<Arc<LoadedBlock>>> = {
                let st = self.shared.state.read();
                let mut g: BTreeMap<i64, Vec<Arc<LoadedBlock>>> = BTreeMap::new();
                for b in &st.blocks {
                    let w = b.meta.min_t.div_euclid(window);
                    if w == b.meta.max_t.div_euclid(window)
                        && (w + 1).saturating_mul(window) <= sealed_before
                    {
                        g.entry(w).or_default().push(b.clone());
                    }
                }
                g
            };
            for (_, group) in groups.into_iter().filter(|(_, g)| g.len() > 1) {
                let meta = self.merge(&group).await?;
                report.merged.push(meta);
            }
        }

        if let Some(ClusterMode::Replica) = &o.cluster {
            // Other processes read these blocks: unlist them (with a deletion mark), list
            // the merged ones, and delete files only once the marks are old enough.
            let manifest = crate::storage::manifest::ManifestStore::new(self.shared.store.clone());
            self.publish_compaction(&manifest, &mut report).await?;
        } else {
            // Delete replaced and expired blocks that no reader still holds.
            let dead: Vec<Arc<LoadedBlock>> = {
                let mut st = self.shared.state.write();
                let (dead, alive): (Vec<_>, Vec<_>) = st
                    .graveyard
                    .drain(..)
                    .partition(|b| Arc::strong_count(b) == 1);
                st.graveyard = alive;
                dead
            };
            for b in dead {
                delete_block(self.shared.store.as_ref(), &b.path).await?;
                report.deleted += 1;
            }
        }
        self.shared
            .stats
            .blocks_deleted
            .fetch_add(report.deleted as u64, std::sync::atomic::Ordering::Relaxed);
        if !report.expired.is_empty() || report.deleted > 0 {
            report.forgotten = self.forget_series().await;
        }
        if !report.merged.is_empty() {
            self.shared.stats.compactions.fetch_add(
                report.merged.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(report)
    }

    /// Publishes a compaction to the manifest and deletes the files of blocks unlisted
    /// longer than `deletion_delay_ms` ago.
    async fn publish_compaction(
        &self,
        manifest: &crate::storage::manifest::ManifestStore,
        report: &mut CompactionReport,
    ) -> Result<(), StorageError> {
        let now = self.now_ms();
        let replaced: Vec<String> = {
            let mut st = self.shared.state.write();
            st.graveyard.drain(..).map(|b| b.meta.id.clone()).collect()
        };
        // A block merged by the 2 h pass and merged again by the day pass was never listed:
        // neither list it nor mark it, and delete its files now (no reader knows it).
        let (transient, removed): (Vec<String>, Vec<String>) = replaced
            .into_iter()
            .partition(|id| report.merged.iter().any(|m| &m.id == id));
        let added: Vec<BlockMeta> = report
            .merged
            .iter()
            .filter(|m| !transient.contains(&m.id))
            .cloned()
            .collect();
        let m = manifest
            .update(|m| super::flush::compaction_change(m, &added, &removed, now))
            .await?;
        for id in &transient {
            delete_block(self.shared.store.as_ref(), &BlockPath::new(id.clone())).await?;
        }
        let delay = self.shared.opts.deletion_delay_ms;
        let due: Vec<String> = m
            .deleted
            .iter()
            .filter(|d| d.at_ms + delay <= now)
            .map(|d| d.id.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for id in &due {
            delete_block(self.shared.store.as_ref(), &BlockPath::new(id.clone())).await?;
            report.deleted += 1;
        }
        manifest
            .update(|m| {
                let before = m.deleted.len();
                m.deleted.retain(|d| !due.contains(&d.id));
                Ok(m.deleted.len() != before)
            })
            .await?;
        Ok(())
    }

    /// Removes from the catalog (labels, postings) every series that no block — loaded or
    /// waiting for deletion — and no head holds: retention's expired series leave memory,
    /// `/api/v1/series` and the label APIs. Appends wait meanwhile (`registration`).
    pub async fn forget_series(&self) -> usize {
        let _gate = self.registration.write().await;
        let held = {
            let st = self.shared.state.read();
            let mut held = RoaringBitmap::new();
            for b in st.blocks.iter().chain(&st.graveyard) {
                held |= &b.present;
            }
            for h in st
                .frozen
                .iter()
                .map(|(_, h)| h)
                .chain(std::iter::once(&st.head))
            {
                held |= h.read().present();
            }
            held
        };
        let dead = self.shared.catalog.live() - held;
        let n = self.shared.catalog.remove(&dead);
        if n > 0 {
            tracing::info!(series = n, "expired series removed from the catalog");
        }
        n
    }

    /// Merges `blocks` (in creation order) into one new block and swaps it in.
    ///
    /// A streaming k-way merge: the output's series (the union of the inputs', in label
    /// order) are taken a chunk at a time; each input's rows for the chunk — contiguous in
    /// it, as every block is in label order too — are read page-pruned, merged per series
    /// (a later block wins on equal timestamps) and handed to the block writer, which
    /// uploads row groups as they fill. Decoded samples held at once stay under
    /// `compaction_memory_bytes`, whatever the size of the blocks.
    async fn merge(&self, blocks: &[Arc<LoadedBlock>]) -> Result<BlockMeta, StorageError> {
        let mut union = RoaringBitmap::new();
        for b in blocks {
            union |= &b.present;
        }
        let labels = self.shared.catalog.labels_many(union.iter());
        let mut order: Vec<(Labels, SeriesId)> = Vec::with_capacity(labels.len());
        for (id, l) in union.iter().zip(labels) {
            let l = l.ok_or_else(|| {
                StorageError::Corrupt(format!("series {id} of a block is not in the catalog"))
            })?;
            order.push((l, id));
        }
        order.sort_by(|a, b| a.0.cmp(&b.0));

        let budget = self.shared.opts.compaction_memory_bytes.max(1 << 20);
        // Decoded bytes per sample while a chunk is held: the runs read from each input
        // (16 B a sample) and the merged copy of a series.
        const BYTES_PER_SAMPLE: usize = 32;
        let samples: u64 = blocks.iter().map(|b| b.meta.num_samples).sum();
        let mut per_series = (samples as usize)
            .div_ceil(order.len().max(1))
            .max(1)
            .saturating_mul(BYTES_PER_SAMPLE);
        // Histograms are read whole up front (a block's are few next to its floats), merged
        // with the same precedence: a later block wins on a timestamp.
        let mut hists: HashMap<SeriesId, std::collections::BTreeMap<i64, (usize, Hist)>> =
            HashMap::new();
        for (source, b) in blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.meta.num_histograms > 0)
        {
            let rows =
                read_block_histograms(self.shared.store.as_ref(), b, &union, i64::MIN, i64::MAX)
                    .await?;
            for (g, t, h) in rows {
                hists.entry(g).or_default().insert(t, (source, h));
            }
        }
        let mut exemplars: HashMap<SeriesId, std::collections::BTreeMap<i64, Ex>> = HashMap::new();
        for b in blocks.iter().filter(|b| b.meta.num_exemplars > 0) {
            let rows =
                read_block_exemplars(self.shared.store.as_ref(), b, &union, i64::MIN, i64::MAX)
                    .await?;
            for (g, e) in rows {
                exemplars.entry(g).or_default().insert(e.ts, e);
            }
        }
        let mut w = BlockWriter::new(self.shared.store.clone(), ulid::Ulid::new().to_string())?;
        let mut global_ids = Vec::with_capacity(order.len());
        let mut at = 0;
        let written: Result<(), StorageError> = async {
            while at < order.len() {
                let take = (budget / per_series).clamp(1, order.len() - at);
                let chunk = &order[at..at + take];
                at += take;
                let want: RoaringBitmap = chunk.iter().map(|(_, id)| *id).collect();
                let mut runs: HashMap<SeriesId, Vec<Vec<Piece>>> = HashMap::new();
                let mut held = 0usize;
                for b in blocks {
                    let locals = b.local_ids(&want);
                    if locals.is_empty() {
                        continue;
                    }
                    for (g, pieces) in self
                        .shared
                        .scan_block_pages(b, &locals, i64::MIN, i64::MAX)
                        .await?
                    {
                        held += pieces.iter().map(Piece::len).sum::<usize>() * 16;
                        runs.entry(g).or_default().push(pieces);
                    }
                }
                self.shared
                    .stats
                    .compaction_peak_bytes
                    .fetch_max(held as u64, Ordering::Relaxed);
                for (labels, id) in chunk {
                    let merged = merge_sources(runs.remove(id).unwrap_or_default());
                    let h: Vec<(i64, Hist)> = hists
                        .remove(id)
                        .map(crate::storage::hist_scan::merge_sources)
                        .unwrap_or_default();
                    let ex: Vec<Ex> = exemplars
                        .remove(id)
                        .map(|m| m.into_values().collect())
                        .unwrap_or_default();
                    match merged.as_slice() {
                        [one] => {
                            w.push_all(labels.clone(), &one.ts, &one.vals, &h, &ex)
                                .await?
                        }
                        pieces => {
                            let (ts, vals) = Piece::to_vecs(pieces);
                            w.push_all(labels.clone(), &ts, &vals, &h, &ex).await?
                        }
                    }
                    global_ids.push(*id);
                }
                // Size the next chunk by what this one really held (series differ in length).
                per_series = (held * BYTES_PER_SAMPLE / 16)
                    .div_ceil(take)
                    .max(BYTES_PER_SAMPLE);
            }
            Ok(())
        }
        .await;
        let id = w.id().to_string();
        let finished = match written {
            Ok(()) => {
                let level = blocks.iter().map(|b| b.meta.level).max().unwrap_or(1) + 1;
                let parents = blocks.iter().map(|b| b.meta.id.clone()).collect();
                w.finish(level, parents, None).await
            }
            Err(e) => Err(e),
        };
        let meta = match finished {
            Ok(m) => m,
            Err(e) => {
                // Leave nothing half-written behind (a retry writes a new block).
                if let Err(d) =
                    delete_block(self.shared.store.as_ref(), &BlockPath::new(id.clone())).await
                {
                    tracing::warn!(block = %id, error = %d, "could not remove a failed compaction's files");
                }
                return Err(e);
            }
        };
        tracing::info!(block = %meta.id, parents = blocks.len(), samples = meta.num_samples, "compacted blocks");
        let new = Arc::new(LoadedBlock::from_parts(meta.clone(), global_ids));
        let mut st = self.shared.state.write();
        st.blocks
            .retain(|b| !blocks.iter().any(|p| Arc::ptr_eq(p, b)));
        st.blocks.push(new);
        st.blocks.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        st.graveyard.extend(blocks.iter().cloned());
        Ok(meta)
    }
}
