//! The WAL path of one tenant: the task that logs requests with group commit and then
//! applies them to the head, WAL replay at open, the checkpoint file, and the metric
//! metadata that travels with the samples.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::RwLock;
use tokio::sync::oneshot;

use super::Shared;
use crate::catalog::SeriesId;
use crate::ingest::MetricMetadata;
use crate::model::Labels;
use crate::storage::StorageError;
use crate::storage::head::{Ex, Head, Hist};
use crate::storage::metadata::Meta;
use crate::storage::wal::{self, Replayed, WalWriter};
use crate::storage::{telemetry, wal_pool};

/// One admitted request, for the WAL task to log, apply and acknowledge.
pub(super) struct AppendReq {
    pub(super) series: Vec<(SeriesId, Labels)>,
    pub(super) samples: Vec<(SeriesId, i64, f64)>,
    pub(super) hists: Vec<(SeriesId, i64, Hist)>,
    pub(super) exemplars: Vec<(SeriesId, Ex)>,
    /// Metadata to log, and its carriers' ids (resolved once, in `append`).
    pub(super) metadata: Vec<MetricMetadata>,
    pub(super) carrier_ids: Vec<Vec<SeriesId>>,
    pub(super) reply: oneshot::Sender<Result<(), StorageError>>,
}

/// A head frozen by a WAL rotation, with the last segment its samples are in.
type FrozenHead = (u64, Arc<RwLock<Head>>);

pub(super) enum WalCmd {
    Append(AppendReq),
    Rotate(oneshot::Sender<Result<FrozenHead, StorageError>>),
    /// Commit what is pending, fsync, stop the WAL task (graceful shutdown).
    Close(oneshot::Sender<()>),
}

pub(super) fn freeze_head(shared: &Shared, seg: u64) -> Arc<RwLock<Head>> {
    let mut st = shared.state.write();
    let old = std::mem::replace(&mut st.head, Arc::new(RwLock::new(Head::new())));
    st.frozen.push((seg, old.clone()));
    old
}

/// The ids of each entry's carriers the catalog holds (they are registered: their samples
/// came first), under one catalog lock.
pub(super) fn carrier_ids(shared: &Shared, md: &[MetricMetadata]) -> Vec<Vec<SeriesId>> {
    if md.is_empty() {
        return vec![];
    }
    let ids = shared
        .catalog
        .lookup_many(md.iter().flat_map(|m| m.carriers.iter()));
    let mut ids = ids.into_iter();
    md.iter()
        .map(|m| ids.by_ref().take(m.carriers.len()).flatten().collect())
        .collect()
}

/// Records metadata with its carriers' ids.
pub(super) fn apply_metadata(shared: &Shared, md: &[MetricMetadata], ids: &[Vec<SeriesId>]) {
    if md.is_empty() {
        return;
    }
    shared
        .metadata
        .write()
        .apply_all(md.iter().zip(ids.iter().map(Vec::as_slice)));
}

/// The request's metadata that would change something, with its carriers' ids: remote
/// write 2.0 repeats every series' metadata with every request, and the WAL need not hold
/// it each time.
pub(super) fn novel_metadata(
    shared: &Shared,
    md: Vec<MetricMetadata>,
) -> (Vec<MetricMetadata>, Vec<Vec<SeriesId>>) {
    let ids = carrier_ids(shared, &md);
    let store = shared.metadata.read();
    md.into_iter()
        .zip(ids)
        .filter(|(m, ids)| !store.is_known(&m.metric_family_name, &Meta::of(m), ids))
        .unzip()
}

/// The WAL task of one tenant: takes every queued command (group commit), and does the
/// writes and the fsync on the WAL pool (`wal_pool`), then applies to the head and
/// acknowledges. A task, not a thread: idle tenants cost no thread, and the pool's few
/// threads serve every tenant.
pub(super) async fn wal_task(
    shared: Arc<Shared>,
    mut w: WalWriter,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<WalCmd>,
) {
    while let Some(first) = rx.recv().await {
        let mut cmds = vec![first];
        while cmds.len() < 4096 {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let sh = shared.clone();
        match wal_pool::run(move || {
            let closing = apply_cmds(&sh, &mut w, cmds);
            (w, closing)
        })
        .await
        {
            Ok((writer, None)) => w = writer,
            Ok((_, Some(reply))) => {
                tracing::info!("WAL closed");
                let _ = reply.send(());
                return;
            }
            Err(e) => {
                // Replies of that batch were dropped: their writers saw `Closed`.
                tracing::error!(error = %e, "WAL worker failed; the tenant takes no more writes");
                return;
            }
        }
    }
}

/// One batch of commands; returns the reply of a `Close` (after a final fsync).
fn apply_cmds(
    shared: &Shared,
    w: &mut WalWriter,
    cmds: Vec<WalCmd>,
) -> Option<oneshot::Sender<()>> {
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut pending: Vec<AppendReq> = Vec::new();
    for cmd in cmds {
        match cmd {
            WalCmd::Append(req) => {
                let r = w
                    .append(&req.series, &req.samples, &req.hists, &req.exemplars)
                    .and_then(|_| {
                        if req.metadata.is_empty() {
                            Ok(())
                        } else {
                            w.append_metadata(&req.metadata)
                        }
                    });
                match r {
                    Ok(()) => pending.push(req),
                    // Refused before anything was written (record too large): only this one.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        let _ = req.reply.send(Err(StorageError::Invalid(e.to_string())));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "WAL write failed; rejecting the writes of this commit");
                        // Records buffered before the failure go down with the abandoned
                        // segment: none of them may be acknowledged.
                        for p in pending.drain(..) {
                            let _ = p.reply.send(Err(StorageError::Io(std::io::Error::new(
                                e.kind(),
                                e.to_string(),
                            ))));
                        }
                        let _ = req.reply.send(Err(e.into()));
                    }
                }
            }
            WalCmd::Rotate(reply) => {
                commit(shared, w, &mut pending);
                let r = w
                    .rotate()
                    .map(|closed| (closed, freeze_head(shared, closed)));
                let _ = reply.send(r.map_err(Into::into));
            }
            WalCmd::Close(reply) => closing = Some(reply),
        }
    }
    commit(shared, w, &mut pending);
    if closing.is_some()
        && let Err(e) = w.sync()
    {
        tracing::error!(error = %e, "WAL sync at shutdown failed");
    }
    closing
}

fn commit(shared: &Shared, w: &mut WalWriter, pending: &mut Vec<AppendReq>) {
    if pending.is_empty() {
        return;
    }
    let start = std::time::Instant::now();
    let res = w.sync();
    telemetry::WAL_FSYNC_DURATION.observe(start.elapsed().as_secs_f64());
    shared.stats.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .wal_fsync_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    match res {
        Ok(()) => apply_pending(shared, pending),
        Err(e) => {
            tracing::error!(error = %e, "WAL fsync failed; rejecting writes");
            for req in pending.drain(..) {
                let _ = req.reply.send(Err(StorageError::Io(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))));
            }
        }
    }
}

/// Applies durable requests to the head as one commit (a snapshot sees all of it or
/// none), then acknowledges them.
pub(super) fn apply_pending(shared: &Shared, pending: &mut Vec<AppendReq>) {
    let now = (shared.opts.clock)();
    let head = shared.state.read().head.clone();
    let mut h = head.write();
    let before = h.entries();
    h.commit_all(
        pending.iter().flat_map(|req| req.samples.iter().copied()),
        pending.iter().flat_map(|req| req.hists.iter().cloned()),
        pending.iter().flat_map(|req| req.exemplars.iter().cloned()),
        now,
    );
    shared
        .opts
        .head_samples
        .fetch_add(h.entries() - before, Ordering::Relaxed);
    drop(h);
    for req in pending.drain(..) {
        apply_metadata(shared, &req.metadata, &req.carrier_ids);
        let _ = req.reply.send(Ok(()));
    }
}

/// Replays segments after the checkpoint into the head; returns the next segment number.
pub(super) fn replay_wal(
    shared: &Shared,
    dir: &Path,
    checkpoint: u64,
    write: bool,
) -> Result<u64, StorageError> {
    if write {
        std::fs::create_dir_all(dir)?;
    }
    let segs = wal::list_segments(dir)?;
    let mut next = checkpoint + 1;
    let now = (shared.opts.clock)();
    let head = shared.state.read().head.clone();
    let mut total = 0u64;
    // Samples whose series declaration is missing from their segment. The writer starts a
    // new segment after any failure, so this means corruption: never skip them silently.
    let mut orphans = 0u64;
    for seq in segs {
        let path = wal::segment_path(dir, seq);
        if seq <= checkpoint {
            if write {
                std::fs::remove_file(&path)?;
            }
            continue;
        }
        next = next.max(seq + 1);
        // Refs are the WAL writer's own numbers: a fast unkeyed hash is safe.
        let mut refs: HashMap<u32, SeriesId, ahash::RandomState> = HashMap::default();
        let mut h = head.write();
        let stats = wal::replay_segment(&path, write, |rec| {
            total += apply_replayed(shared, &mut h, &mut refs, rec, now, &mut orphans);
        })?;
        shared
            .stats
            .wal_truncated_bytes
            .fetch_add(stats.truncated_bytes, Ordering::Relaxed);
    }
    if orphans > 0 {
        tracing::error!(
            samples = orphans,
            "WAL samples reference series not declared in their segment; they cannot be replayed"
        );
        shared
            .stats
            .wal_orphan_samples
            .fetch_add(orphans, Ordering::Relaxed);
    }
    shared
        .opts
        .head_samples
        .fetch_add(head.read().entries(), Ordering::Relaxed);
    tracing::info!(samples = total, next_segment = next, "WAL replayed");
    Ok(next)
}

/// Applies one replayed record to `head` (series registered in the catalog, their
/// segment refs noted in `refs`); returns the samples applied. Samples whose series the
/// segment did not declare are counted in `orphans`.
pub(super) fn apply_replayed(
    shared: &Shared,
    h: &mut Head,
    refs: &mut HashMap<u32, SeriesId, ahash::RandomState>,
    rec: Replayed,
    now: i64,
    orphans: &mut u64,
) -> u64 {
    match rec {
        Replayed::Samples {
            series,
            samples,
            hists,
            exemplars,
        } => {
            let ids = shared
                .catalog
                .get_or_insert_many(series.iter().map(|(_, l)| l));
            for ((r, _), id) in series.iter().zip(ids) {
                refs.insert(*r, id);
            }
            let mut found = Vec::with_capacity(samples.len());
            for (r, t, v) in samples {
                match refs.get(&r) {
                    Some(&id) => found.push((id, t, v)),
                    None => *orphans += 1,
                }
            }
            let mut found_hists = Vec::with_capacity(hists.len());
            for (r, t, hist) in hists {
                match refs.get(&r) {
                    Some(&id) => found_hists.push((id, t, Arc::new(hist))),
                    None => *orphans += 1,
                }
            }
            let mut found_ex = Vec::with_capacity(exemplars.len());
            for (r, e) in exemplars {
                match refs.get(&r) {
                    Some(&id) => found_ex.push((id, Arc::new(e))),
                    None => *orphans += 1,
                }
            }
            let n = (found.len() + found_hists.len()) as u64;
            h.commit_all(found, found_hists, found_ex, now);
            n
        }
        Replayed::Metadata(md) => {
            apply_metadata(shared, &md, &carrier_ids(shared, &md));
            0
        }
    }
}

pub(super) fn read_checkpoint(dir: &Path) -> Result<u64, StorageError> {
    match std::fs::read_to_string(dir.join("checkpoint")) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| StorageError::Corrupt(format!("WAL checkpoint {s:?}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Records that every segment ≤ `seg` is in complete blocks (write, fsync, rename).
pub(in crate::storage) fn write_checkpoint(dir: &Path, seg: u64) -> Result<(), StorageError> {
    let tmp = dir.join("checkpoint.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{seg}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("checkpoint"))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
