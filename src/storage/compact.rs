//! Compaction (merge the blocks of one sealed window into one) and retention.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int64Type, UInt32Type};

use super::StorageError;
use super::block::{BlockMeta, LoadedBlock, SeriesData, read_samples, write_block};
use super::engine::{Storage, delete_block};
use crate::catalog::SeriesId;

/// What one compaction run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    pub merged: Vec<BlockMeta>,
    pub expired: Vec<String>,
    pub deleted: usize,
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
        self.shared
            .stats
            .blocks_deleted
            .fetch_add(report.deleted as u64, std::sync::atomic::Ordering::Relaxed);
        if !report.merged.is_empty() {
            self.shared.stats.compactions.fetch_add(
                report.merged.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(report)
    }

    /// Merges `blocks` (in creation order) into one new block and swaps it in.
    async fn merge(&self, blocks: &[Arc<LoadedBlock>]) -> Result<BlockMeta, StorageError> {
        let mut per: HashMap<SeriesId, Vec<(i64, usize, f64)>> = HashMap::new();
        for (rank, b) in blocks.iter().enumerate() {
            for batch in read_samples(self.shared.store.as_ref(), &b.path).await? {
                let ids = batch.column(0).as_primitive::<UInt32Type>();
                let ts = batch.column(1).as_primitive::<Int64Type>();
                let vs = batch.column(2).as_primitive::<Float64Type>();
                for i in 0..batch.num_rows() {
                    let local = ids.value(i) as usize;
                    let global = *b.global_ids.get(local).ok_or_else(|| {
                        StorageError::Corrupt(format!(
                            "block {} references unknown series id {local}",
                            b.meta.id
                        ))
                    })?;
                    per.entry(global)
                        .or_default()
                        .push((ts.value(i), rank, vs.value(i)));
                }
            }
        }
        let ids: Vec<SeriesId> = per.keys().copied().collect();
        let labels = self.shared.catalog.labels_many(ids.iter().copied());
        let mut rows: Vec<(SeriesId, _)> = ids.into_iter().zip(labels).collect();
        rows.sort_by(|a, b| a.1.cmp(&b.1));
        let mut series = Vec::with_capacity(rows.len());
        let mut global_ids = Vec::with_capacity(rows.len());
        for (id, labels) in rows {
            let mut samples = per.remove(&id).unwrap_or_default();
            samples.sort_by_key(|&(t, rank, _)| (t, rank));
            let mut ts = Vec::with_capacity(samples.len());
            let mut vals = Vec::with_capacity(samples.len());
            for (t, _, v) in samples {
                if ts.last() == Some(&t) {
                    *vals.last_mut().expect("same length") = v;
                } else {
                    ts.push(t);
                    vals.push(v);
                }
            }
            series.push(SeriesData { labels, ts, vals });
            global_ids.push(id);
        }
        let level = blocks.iter().map(|b| b.meta.level).max().unwrap_or(1) + 1;
        let parents = blocks.iter().map(|b| b.meta.id.clone()).collect();
        let meta = write_block(
            self.shared.store.as_ref(),
            ulid::Ulid::new().to_string(),
            &series,
            level,
            parents,
            None,
        )
        .await?;
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
