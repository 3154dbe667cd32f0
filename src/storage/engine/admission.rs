//! Append admission: what a request must pass before it is logged (its timestamps within
//! the write window, each WAL record it becomes within `wal::MAX_RECORD`, room in the
//! heads), then its series registered and the request handed to the WAL task, or applied
//! to the head directly when there is no WAL.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::wal_task::{AppendReq, WalCmd, apply_metadata, carrier_ids, novel_metadata};
use super::{HEAD_BYTES_PER_SAMPLE, Storage, WriteWindow};
use crate::ingest::WriteBatch;
use crate::model::Labels;
use crate::storage::StorageError;
use crate::storage::head::{exemplar_weight, histogram_weight};
use crate::storage::wal::{self, MAX_RECORD};

impl Storage {
    /// Makes a batch durable and visible, or rejects it whole (exemplars excepted: see
    /// `WriteBatch::dropped_exemplars`). Returns the samples stored.
    pub async fn append(
        &self,
        mut batch: WriteBatch,
        window: WriteWindow,
    ) -> Result<usize, StorageError> {
        let now = self.now_ms();
        let o = &self.shared.opts;
        let (min_ok, max_ok) = self.write_bounds(window);
        let out_of_bounds = |labels: &Labels, t: i64| StorageError::OutOfBounds {
            labels: labels.to_string(),
            timestamp_ms: t,
            min_ms: min_ok,
            max_ms: max_ok,
        };
        for s in &batch.series {
            if let Some(&(t, _)) = s.samples.iter().find(|(t, _)| *t < min_ok || *t > max_ok) {
                return Err(out_of_bounds(&s.labels, t));
            }
        }
        for s in &batch.histograms {
            if let Some((t, _)) = s.samples.iter().find(|(t, _)| *t < min_ok || *t > max_ok) {
                return Err(out_of_bounds(&s.labels, *t));
            }
        }
        // Exemplars outside the window are dropped, not the request (Prometheus's rule).
        batch.retain_exemplars_within(min_ok, max_ok);
        if batch.dropped_exemplars > 0 {
            tracing::warn!(
                exemplars = batch.dropped_exemplars,
                "exemplars not stored (invalid or outside the write window); their samples are kept"
            );
            self.shared
                .stats
                .exemplars_dropped
                .fetch_add(batch.dropped_exemplars as u64, Ordering::Relaxed);
        }
        let n = batch.sample_count();
        check_record_lengths(&batch, n)?;
        if let Some(super::ClusterMode::Replica) = &o.cluster {
            return Err(StorageError::Invalid(
                "this node is a querier: write through a distributor".into(),
            ));
        }
        // A distributor: the shards' owners log and hold it.
        if let Some(super::ClusterMode::Forward(to)) = &o.cluster {
            let stored = to.forward(&o.tenant, batch).await?;
            self.shared
                .stats
                .samples_appended
                .fetch_add(stored as u64, Ordering::Relaxed);
            return Ok(stored);
        }
        // What the head will hold: histograms weigh more than one entry each.
        let entries = n
            + batch
                .histograms
                .iter()
                .flat_map(|s| s.samples.iter())
                .map(|(_, h)| histogram_weight(h))
                .sum::<usize>()
            + batch
                .exemplars
                .iter()
                .flat_map(|s| s.exemplars.iter())
                .map(|e| 1 + exemplar_weight(e))
                .sum::<usize>();
        let limit = o.head_memory_limit;
        let held = o
            .head_samples
            .load(Ordering::Relaxed)
            .saturating_mul(HEAD_BYTES_PER_SAMPLE);
        if held.saturating_add(entries.saturating_mul(HEAD_BYTES_PER_SAMPLE)) > limit {
            return Err(StorageError::Overloaded(format!(
                "heads hold ~{held} bytes of samples not yet in blocks (limit {limit}, --head-memory-limit); this tenant has {} waiting for the object store",
                match self.frozen_heads() {
                    0 => "no flush".to_string(),
                    1 => "1 flush".to_string(),
                    f => format!("{f} flushes"),
                }
            )));
        }
        let _registering = self.registration.read().await;
        let ids = self.shared.catalog.get_or_insert_many(
            batch
                .series
                .iter()
                .map(|s| &s.labels)
                .chain(batch.histograms.iter().map(|s| &s.labels))
                .chain(batch.exemplars.iter().map(|s| &s.labels)),
        );
        let mut samples = Vec::with_capacity(batch.float_count());
        let mut hists = Vec::with_capacity(batch.histogram_count());
        let mut series = Vec::with_capacity(ids.len());
        let (float_ids, rest) = ids.split_at(batch.series.len());
        let (hist_ids, ex_ids) = rest.split_at(batch.histograms.len());
        let mut exemplars = Vec::with_capacity(batch.exemplar_count());
        for (s, &id) in batch.exemplars.into_iter().zip(ex_ids) {
            exemplars.extend(s.exemplars.into_iter().map(|e| (id, Arc::new(e))));
            series.push((id, s.labels));
        }
        for (s, &id) in batch.series.into_iter().zip(float_ids) {
            samples.extend(s.samples.iter().map(|&(t, v)| (id, t, v)));
            series.push((id, s.labels));
        }
        for (s, &id) in batch.histograms.into_iter().zip(hist_ids) {
            hists.extend(s.samples.into_iter().map(|(t, h)| (id, t, Arc::new(h))));
            series.push((id, s.labels));
        }
        match &self.wal_tx {
            Some(tx) => {
                let (reply, rx) = oneshot::channel();
                let (metadata, carrier_ids) = novel_metadata(&self.shared, batch.metadata);
                tx.send(WalCmd::Append(AppendReq {
                    series,
                    samples,
                    hists,
                    exemplars,
                    metadata,
                    carrier_ids,
                    reply,
                }))
                .map_err(|_| StorageError::Closed)?;
                rx.await.map_err(|_| StorageError::Closed)??;
            }
            None => {
                let head = self.shared.state.read().head.clone();
                let mut h = head.write();
                let before = h.entries();
                h.commit_all(samples, hists, exemplars, now);
                o.head_samples
                    .fetch_add(h.entries() - before, Ordering::Relaxed);
                drop(h);
                let ids = carrier_ids(&self.shared, &batch.metadata);
                apply_metadata(&self.shared, &batch.metadata, &ids);
            }
        }
        self.shared
            .stats
            .samples_appended
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One request is one samples record, and its metadata a record of its own written after
/// it; replay refuses records over `MAX_RECORD`, so the writer refuses them too. Both are
/// checked here, before any series is registered: a metadata record refused after the
/// samples were logged would fail a request whose samples replay. `n` is the request's
/// sample count, for the message.
fn check_record_lengths(batch: &WriteBatch, n: usize) -> Result<(), StorageError> {
    // All of the request's metadata, though the WAL task logs only what is new: a bound.
    let metadata_bytes = wal::metadata_record_len(&batch.metadata);
    if metadata_bytes > MAX_RECORD as usize {
        return Err(StorageError::Invalid(format!(
            "the request's metadata (~{metadata_bytes} bytes) is too large for one WAL record ({MAX_RECORD} bytes); split it"
        )));
    }
    let record_bytes = wal::samples_record_len(
        batch
            .series
            .iter()
            .map(|s| &s.labels)
            .chain(batch.histograms.iter().map(|s| &s.labels))
            .chain(batch.exemplars.iter().map(|s| &s.labels)),
        batch.float_count(),
        batch
            .histograms
            .iter()
            .flat_map(|s| s.samples.iter().map(|(_, h)| h)),
        batch.exemplars.iter().flat_map(|s| s.exemplars.iter()),
    );
    if record_bytes > MAX_RECORD as usize {
        return Err(StorageError::Invalid(format!(
            "a request of {n} samples (~{record_bytes} bytes) is too large for one WAL record ({MAX_RECORD} bytes); split it"
        )));
    }
    Ok(())
}
