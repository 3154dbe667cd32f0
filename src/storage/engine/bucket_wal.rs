//! A cluster shard's WAL, in the bucket: every commit is one segment object
//! `cluster/wal/<shard>/<seq>.wal`, put with If-None-Match (a second owner writing the
//! same number fails instead of overwriting), and acknowledged only after the put returned
//! and while the shard's lease is still held. No acknowledged sample depends on a local
//! disk: whoever owns the shard next replays the segments after the manifest's checkpoint.
//!
//! Commits are paced (`commit_interval`): requests arriving meanwhile share the next
//! object, so a busy shard costs at most one PUT per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::mpsc::UnboundedReceiver;

use super::wal_task::{AppendReq, WalCmd, apply_pending, apply_replayed, freeze_head};
use super::{ShardOptions, Shared};
use crate::catalog::SeriesId;
use crate::storage::StorageError;
use crate::storage::wal::{self, SegmentBuf};

/// Where a shard's segments live, under the tenant's prefix.
pub fn segment_dir(shard: u32) -> Path {
    Path::from(format!("cluster/wal/{shard:04}"))
}

pub fn segment_key(shard: u32, seq: u64) -> Path {
    Path::from(format!("cluster/wal/{shard:04}/{seq:020}.wal"))
}

fn seq_of(key: &Path) -> Option<u64> {
    key.filename()?.strip_suffix(".wal")?.parse().ok()
}

/// The shard's segment numbers in the bucket, ascending (a LIST: at takeover and flush).
pub async fn list_segments(store: &dyn ObjectStore, shard: u32) -> Result<Vec<u64>, StorageError> {
    let dir = segment_dir(shard);
    let mut out: Vec<u64> = store
        .list(Some(&dir))
        .map_ok(|m| seq_of(&m.location))
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// One segment object's bytes, or `None` when it is gone (deleted after a flush, or never
/// written: a failed put skips its number).
pub async fn read_segment(
    store: &dyn ObjectStore,
    shard: u32,
    seq: u64,
) -> Result<Option<bytes::Bytes>, StorageError> {
    match store.get(&segment_key(shard, seq)).await {
        Ok(r) => Ok(Some(r.bytes().await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replays the shard's segments after `checkpoint` into the head; returns the next
/// segment number (after every segment present, replayed or not).
pub(super) async fn replay(
    shared: &Shared,
    shard: u32,
    checkpoint: u64,
) -> Result<u64, StorageError> {
    let store = shared.store.as_ref();
    let segs = list_segments(store, shard).await?;
    let next = segs
        .last()
        .map_or(checkpoint + 1, |l| (l + 1).max(checkpoint + 1));
    let now = (shared.opts.clock)();
    let (mut total, mut orphans) = (0u64, 0u64);
    for seq in segs.into_iter().filter(|s| *s > checkpoint) {
        let Some(data) = read_segment(store, shard, seq).await? else {
            continue;
        };
        let head = shared.state.read().head.clone();
        let mut h = head.write();
        let mut refs: HashMap<u32, SeriesId, ahash::RandomState> = HashMap::default();
        let name = segment_key(shard, seq).to_string();
        let stats = match wal::replay_bytes(&data, &name, |rec| {
            total += apply_replayed(shared, &mut h, &mut refs, rec, now, &mut orphans);
        }) {
            Ok(s) => s,
            Err(e) => {
                // Damaged beyond its header: its samples are lost either way; refusing the
                // shard for it would stop every later write to the shard.
                tracing::error!(segment = %name, error = %e, "WAL object unreadable; skipped");
                shared
                    .stats
                    .wal_truncated_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                continue;
            }
        };
        if stats.truncated_bytes > 0 {
            // Objects are written whole: a short one is corruption, not a torn tail.
            tracing::error!(segment = %name, bytes = stats.truncated_bytes, "WAL object has a corrupt tail");
        }
    }
    let entries = shared.state.read().head.read().entries();
    shared
        .opts
        .head_samples
        .fetch_add(entries, Ordering::Relaxed);
    tracing::info!(
        shard,
        samples = total,
        next_segment = next,
        "shard WAL replayed from the bucket"
    );
    Ok(next)
}

/// Deletes the shard's segments ≤ `checkpoint` (their samples are in listed blocks).
pub(in crate::storage) async fn delete_through(
    store: &dyn ObjectStore,
    shard: u32,
    checkpoint: u64,
) -> Result<(), StorageError> {
    for seq in list_segments(store, shard).await? {
        if seq > checkpoint {
            break;
        }
        match store.delete(&segment_key(shard, seq)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The WAL task of a shard: gathers requests for one commit interval, puts them as one
/// segment object, then applies them to the head and acknowledges.
pub(super) async fn task(
    shared: Arc<Shared>,
    sh: ShardOptions,
    mut next: u64,
    mut rx: UnboundedReceiver<WalCmd>,
) {
    let mut last_put = tokio::time::Instant::now() - sh.commit_interval;
    // Set once another owner wrote one of our numbers: nothing more is committed here.
    let mut fenced = false;
    while let Some(first) = rx.recv().await {
        if matches!(first, WalCmd::Append(_)) {
            tokio::time::sleep_until(last_put + sh.commit_interval).await;
        }
        let mut cmds = vec![first];
        while cmds.len() < 4096 {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let mut pending: Vec<AppendReq> = Vec::new();
        let mut seg = SegmentBuf::new();
        for cmd in cmds {
            match cmd {
                WalCmd::Append(req) => match encode(&mut seg, &req) {
                    Ok(()) => pending.push(req),
                    Err(e) => {
                        let _ = req.reply.send(Err(StorageError::Invalid(e.to_string())));
                    }
                },
                WalCmd::Rotate(reply) => {
                    // The rest of this batch goes into a new object (`default()` has the header).
                    let full = std::mem::take(&mut seg);
                    commit(&shared, &sh, &mut next, &mut fenced, full, &mut pending).await;
                    last_put = tokio::time::Instant::now();
                    let closed = next - 1;
                    let frozen = freeze_head(&shared, closed);
                    sh.tail.rotated(closed);
                    let _ = reply.send(Ok((closed, frozen)));
                }
                WalCmd::Close(reply) => {
                    commit(&shared, &sh, &mut next, &mut fenced, seg, &mut pending).await;
                    tracing::info!(shard = sh.shard, "shard WAL closed");
                    let _ = reply.send(());
                    return;
                }
            }
        }
        if !pending.is_empty() {
            commit(&shared, &sh, &mut next, &mut fenced, seg, &mut pending).await;
            last_put = tokio::time::Instant::now();
        }
    }
}

fn encode(seg: &mut SegmentBuf, req: &AppendReq) -> std::io::Result<()> {
    seg.append(&req.series, &req.samples, &req.hists, &req.exemplars)?;
    if !req.metadata.is_empty() {
        seg.append_metadata(&req.metadata)?;
    }
    Ok(())
}

/// Puts `seg` as segment `next` and acknowledges `pending`, or refuses them all.
async fn commit(
    shared: &Shared,
    sh: &ShardOptions,
    next: &mut u64,
    fenced: &mut bool,
    seg: SegmentBuf,
    pending: &mut Vec<AppendReq>,
) {
    if pending.is_empty() {
        return;
    }
    let refuse = |pending: &mut Vec<AppendReq>, e: &dyn Fn() -> StorageError| {
        for req in pending.drain(..) {
            let _ = req.reply.send(Err(e()));
        }
    };
    if *fenced || !(sh.lease_valid)() {
        return refuse(pending, &|| {
            StorageError::Fenced(format!("shard {} lease not held", sh.shard))
        });
    }
    let seq = *next;
    // A failed put may still have landed: never reuse its number.
    *next += 1;
    let start = std::time::Instant::now();
    let put = shared
        .store
        .put_opts(
            &segment_key(sh.shard, seq),
            PutPayload::from(seg.into_bytes()),
            PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            },
        )
        .await;
    crate::storage::telemetry::WAL_FSYNC_DURATION.observe(start.elapsed().as_secs_f64());
    shared.stats.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .wal_fsync_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    match put {
        Ok(_) if (sh.lease_valid)() => {
            apply_pending(shared, pending);
            sh.tail.committed(seq);
        }
        Ok(_) => refuse(pending, &|| {
            StorageError::Fenced(format!("shard {} lease lost during the commit", sh.shard))
        }),
        Err(object_store::Error::AlreadyExists { .. }) => {
            tracing::error!(
                shard = sh.shard,
                seq,
                "WAL segment already written by another owner: shard lost"
            );
            refuse(pending, &|| {
                StorageError::Fenced(format!("shard {} taken by another writer", sh.shard))
            })
        }
        Err(e) => {
            tracing::error!(shard = sh.shard, seq, error = %e, "WAL segment put failed; refusing its writes");
            let msg = e.to_string();
            refuse(pending, &|| {
                StorageError::Unavailable(format!("WAL object store: {msg}"))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use object_store::{ObjectStore, ObjectStoreExt};

    use super::{list_segments, read_segment};
    use crate::ingest::{SeriesSamples, WriteBatch};
    use crate::model::Labels;
    use crate::storage::wal::replay_bytes;
    use crate::storage::{
        ClusterMode, ShardOptions, Storage, StorageOptions, WalTail, WriteWindow,
    };

    fn one(name: &str, t: i64) -> WriteBatch {
        WriteBatch {
            series: vec![SeriesSamples {
                labels: Labels::new(vec![("__name__".into(), name.into())]).unwrap(),
                samples: vec![(t, 1.0)],
            }],
            ..Default::default()
        }
    }

    /// Appends queued with a flush in one commit batch: the objects after the rotation
    /// are whole segments too (a header-less object would fail every replay of the shard).
    #[tokio::test]
    async fn objects_after_a_rotation_in_one_batch_replay() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StorageOptions::new(dir.path());
        opts.cluster = Some(ClusterMode::Shard(ShardOptions {
            shard: 3,
            epoch: 1,
            lease_valid: Arc::new(|| true),
            commit_interval: Duration::from_millis(300),
            tail: Arc::new(WalTail::new(0)),
        }));
        let s = Arc::new(Storage::open(opts, store.clone()).await.unwrap());
        s.append(one("a", 1), WriteWindow::Any).await.unwrap();
        // The next append waits out the commit interval; a flush and another append join it.
        let x = tokio::spawn({
            let s = s.clone();
            async move { s.append(one("x", 2), WriteWindow::Any).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let f = tokio::spawn({
            let s = s.clone();
            async move { s.flush().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = tokio::spawn({
            let s = s.clone();
            async move { s.append(one("b", 3), WriteWindow::Any).await }
        });
        x.await.unwrap().unwrap();
        f.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        let segs = list_segments(store.as_ref(), 3).await.unwrap();
        assert!(!segs.is_empty(), "b's object is after the checkpoint");
        let mut records = 0;
        for seq in segs {
            let data = read_segment(store.as_ref(), 3, seq).await.unwrap().unwrap();
            records += replay_bytes(&data, "t", |_| {}).unwrap().records;
        }
        assert_eq!(records, 1, "b's record, in an object that replays");
        let _ = store.head(&"cluster/manifest.json".into()).await.unwrap();
    }
}
