//! Acceptance: compaction keeps counts and values (newest write wins on overlap); a crash
//! between writing the merged block and deleting its parents leaves readable data; retention
//! removes expired blocks from the object store.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures::StreamExt;
use object_store::ObjectStore;
use quiver::model::Matcher;
use quiver::storage::{Storage, StorageOptions, WriteWindow, objstore};

use crate::support::{batch, labels};

const H: i64 = 3_600_000;

async fn open(dir: &std::path::Path, clock: Arc<AtomicI64>) -> Storage {
    let mut o = StorageOptions::new(dir);
    o.clock = Arc::new(move || clock.load(Ordering::SeqCst));
    let store = objstore::build(None, dir, &Default::default()).unwrap();
    Storage::open(o, store).await.unwrap()
}

async fn block_files(s: &Storage) -> usize {
    s.store()
        .list(Some(&"blocks".into()))
        .collect::<Vec<_>>()
        .await
        .len()
}

async fn everything(s: &Storage) -> Vec<(String, Vec<i64>, Vec<u64>)> {
    let all = s
        .select(
            &[Matcher::regex("__name__", ".+", false).unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .await
        .unwrap();
    all.into_iter()
        .map(|r| {
            (
                r.labels.to_string(),
                r.ts,
                r.vals.iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_preserves_samples_and_retention_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let day0 = 20_000 * 24 * H; // a UTC midnight
    let clock = Arc::new(AtomicI64::new(day0 + 10 * H));
    let s = open(&dir, clock.clone()).await;
    // Three flushes over [day0, day0+6h): 15 s samples for 40 series, then a rewrite of a
    // few samples with new values (the newest write must win), each flush a separate block set.
    for part in 0..3i64 {
        let mut series = Vec::new();
        for i in 0..40 {
            let l = labels(&[("__name__", "quiver_compact"), ("i", &i.to_string())]);
            let samples = (0..480)
                .map(|k| {
                    (
                        day0 + part * 2 * H + k * 15_000,
                        (i * 10_000 + part * 1000 + k) as f64,
                    )
                })
                .collect();
            series.push((l, samples));
        }
        s.append(batch(series), WriteWindow::Any).await.unwrap();
        s.flush().await.unwrap();
    }
    let l = labels(&[("__name__", "quiver_compact"), ("i", "7")]);
    s.append(
        batch(vec![(
            l,
            vec![
                (day0 + 60_000, -1.0),
                (day0 + 2 * H + 15_000, f64::from_bits(0x7ff0000000000002)),
            ],
        )]),
        WriteWindow::Any,
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let before = everything(&s).await;
    let count: usize = before.iter().map(|r| r.1.len()).sum();
    assert_eq!(count, 40 * 480 * 3);
    let blocks_before = s.blocks().len();
    assert_eq!(blocks_before, 5, "{:?}", s.blocks());

    // The day is not sealed yet (now = day0+10h, ooo window 3h): 2h windows merge.
    let r = s.compact().await.unwrap();
    assert_eq!(
        r.merged.len(),
        2,
        "windows 0 and 1 had two blocks each: {r:?}"
    );
    assert_eq!(everything(&s).await, before);
    let v = &everything(&s)
        .await
        .into_iter()
        .find(|r| r.0.contains("\"7\""))
        .unwrap();
    assert_eq!(v.2[4], (-1.0f64).to_bits(), "newest write wins");
    assert_eq!(
        v.2[480 + 1],
        0x7ff0000000000002,
        "stale marker survives compaction bit-for-bit"
    );

    // Next day: the whole day merges into one block.
    clock.store(day0 + 30 * H, Ordering::SeqCst);
    let r = s.compact().await.unwrap();
    assert_eq!(r.merged.len(), 1);
    assert_eq!(s.blocks().len(), 1);
    let merged = &s.blocks()[0];
    assert_eq!(merged.num_samples as usize, count);
    assert_eq!(merged.level, 3);
    assert_eq!(everything(&s).await, before);
    // Parents are gone from the object store: 4 files for the one block.
    assert_eq!(block_files(&s).await, 4);
    drop(s);

    // Reopen: same data.
    let s = open(&dir, clock.clone()).await;
    assert_eq!(everything(&s).await, before);

    // Retention: 16 days later the block is wholly expired.
    clock.store(day0 + 16 * 24 * H + 7 * H, Ordering::SeqCst);
    let r = s.compact().await.unwrap();
    assert_eq!(r.expired.len(), 1);
    assert_eq!(r.deleted, 1);
    assert!(s.blocks().is_empty());
    assert_eq!(block_files(&s).await, 0);
    assert!(everything(&s).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_merge_and_parent_deletion_is_harmless() {
    use quiver::storage::block::{SeriesData, write_block};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let day0 = 20_000 * 24 * H;
    let clock = Arc::new(AtomicI64::new(day0 + 10 * H));
    let s = open(&dir, clock.clone()).await;
    let l = labels(&[("__name__", "m")]);
    s.append(
        batch(vec![(l.clone(), vec![(day0, 1.0), (day0 + 1000, 2.0)])]),
        WriteWindow::Any,
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    s.append(
        batch(vec![(l.clone(), vec![(day0 + 2000, 3.0)])]),
        WriteWindow::Any,
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let parents: Vec<String> = s.blocks().iter().map(|b| b.id.clone()).collect();
    let before = everything(&s).await;
    // Simulate the crash: the merged block is complete but the parents were not deleted.
    let merged = SeriesData {
        labels: l,
        ts: vec![day0, day0 + 1000, day0 + 2000],
        vals: vec![1.0, 2.0, 3.0],
        hists: vec![],
        exemplars: vec![],
    };
    write_block(
        s.store().clone(),
        ulid::Ulid::new().to_string(),
        &[merged],
        2,
        parents.clone(),
        None,
    )
    .await
    .unwrap();
    drop(s);
    let s = open(&dir, clock).await;
    assert_eq!(s.blocks().len(), 1, "parents hidden after restart");
    assert_eq!(everything(&s).await, before);
    assert_eq!(block_files(&s).await, 4, "parents deleted");
}

/// Acceptance (streaming compaction): blocks holding many times more decoded samples than
/// the memory given to compaction merge into one block with every sample, the right count
/// and the newest write winning — while no chunk of the merge held more than that memory.
/// Series come and go between blocks, so the merge interleaves different series sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_streams_blocks_larger_than_its_memory_limit() {
    const LIMIT: usize = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let day0 = 20_000 * 24 * H;
    let clock = Arc::new(AtomicI64::new(day0 + 30 * H));
    let s = {
        let mut o = StorageOptions::new(&dir);
        let c = clock.clone();
        o.clock = Arc::new(move || c.load(Ordering::SeqCst));
        o.compaction_memory_bytes = LIMIT;
        let store = objstore::build(None, &dir, &Default::default()).unwrap();
        Storage::open(o, store).await.unwrap()
    };
    // What the store must hold afterwards: (series, t) -> the value written last.
    let mut want: std::collections::BTreeMap<(String, i64), u64> = Default::default();
    let mut write = |series: &mut Vec<_>, i: usize, t: i64, v: f64| {
        let l = labels(&[("__name__", "quiver_big"), ("i", &format!("{i:04}"))]);
        want.insert((l.to_string(), t), v.to_bits());
        series.push((l, vec![(t, v)]));
    };
    // Four 2 h blocks of 10 s samples; series 0..300 in the first two, 150..450 in the
    // last two; then a block rewriting every 7th sample of series 200..260 in block two.
    let mut flushes = Vec::new();
    for part in 0..4i64 {
        let ids = if part < 2 { 0..300 } else { 150..450 };
        let mut series = Vec::new();
        for i in ids {
            for k in 0..720 {
                let t = day0 + part * 2 * H + k * 10_000;
                // Irregular values, so the files do not compress to nothing.
                let v = ((i as i64 * 7919 + k * 104_729) % 1_000_003) as f64 / 7.0;
                write(&mut series, i, t, v);
            }
        }
        flushes.push(series);
    }
    let mut rewrite = Vec::new();
    for i in 200..260 {
        for k in (0..720).step_by(7) {
            write(&mut rewrite, i, day0 + 2 * H + k * 10_000, -(k as f64));
        }
    }
    flushes.push(rewrite);
    for series in flushes {
        // One request per series keeps batches small; merge the single-sample entries.
        let mut by: std::collections::BTreeMap<String, (quiver::model::Labels, Vec<(i64, f64)>)> =
            Default::default();
        for (l, mut smp) in series {
            by.entry(l.to_string())
                .or_insert_with(|| (l, Vec::new()))
                .1
                .append(&mut smp);
        }
        let b: Vec<_> = by.into_values().collect();
        s.append(batch(b), WriteWindow::Any).await.unwrap();
        s.flush().await.unwrap();
    }
    let before: u64 = s.blocks().iter().map(|b| b.num_samples).sum();
    let decoded = before as usize * 16;
    assert!(
        decoded > 10 * LIMIT,
        "the inputs hold {decoded} decoded bytes, not over 10x the {LIMIT} B limit"
    );
    let report = s.compact().await.unwrap();
    assert!(!report.merged.is_empty());
    let blocks = s.blocks();
    assert_eq!(blocks.len(), 1, "one block for the day: {blocks:?}");
    assert_eq!(blocks[0].num_samples as usize, want.len());
    assert_eq!(blocks[0].num_series, 450);
    let peak = s
        .stats()
        .compaction_peak_bytes
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert!(
        peak > 0 && peak <= LIMIT,
        "a merge chunk held {peak} B of decoded samples; the limit is {LIMIT} B"
    );
    let got: std::collections::BTreeMap<(String, i64), u64> = everything(&s)
        .await
        .into_iter()
        .flat_map(|(l, ts, vs)| {
            ts.into_iter()
                .zip(vs)
                .map(move |(t, v)| ((l.clone(), t), v))
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "samples changed by compaction");
    // Reopened from the store alone, the merged block answers the same.
    drop(s);
    let s = open(&dir, clock).await;
    assert_eq!(s.blocks().len(), 1);
    assert_eq!(everything(&s).await.len(), 450);
}
