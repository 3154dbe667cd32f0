//! Durability: block files are fsynced before the WAL that held their samples is dropped; a
//! failed WAL write or fsync is never acknowledged and never hides later acknowledged
//! writes; a block that cannot be read at startup is quarantined and the server starts.

use std::sync::Arc;

use quiver::api::{AppState, router};
use quiver::model::Matcher;
use quiver::storage::durable::{FsJournal, SyncedLocalStore};
use quiver::storage::wal::WalFaults;
use quiver::storage::{Storage, StorageOptions, Tenants, WriteWindow};

use crate::support::*;

fn opts(dir: &std::path::Path) -> StorageOptions {
    let mut o = StorageOptions::new(dir);
    o.block_duration_ms = 3_600_000;
    o
}

async fn all_samples(s: &Storage, metric: &str) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    for r in s
        .select(
            &[Matcher::equal("__name__", metric.to_string())],
            i64::MIN,
            i64::MAX,
        )
        .await
        .unwrap()
    {
        let k = r.labels.get("k").unwrap_or("").to_string();
        for (t, v) in r.ts.iter().zip(&r.vals) {
            out.push((k.clone(), *t, *v));
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_fsyncs_every_block_file_and_directory_before_the_wal_is_deleted() {
    let (_tmp, dir) = tempdir();
    let journal = FsJournal::default();
    let store = Arc::new(
        SyncedLocalStore::new(&dir)
            .unwrap()
            .with_journal(journal.clone()),
    );
    let mut o = opts(&dir);
    o.journal = Some(journal.clone());
    let s = Storage::open(o, store).await.unwrap();
    let now = now_ms();
    let series = (0..5)
        .map(|i| {
            (
                labels(&[("__name__", "quiver_durable"), ("k", &i.to_string())]),
                vec![(now - 1000, i as f64), (now, i as f64 + 0.5)],
            )
        })
        .collect();
    s.append(batch(series), WriteWindow::Recent).await.unwrap();
    let metas = s.flush().await.unwrap();
    assert!(!metas.is_empty());
    let events = journal.lock().clone();
    let pos = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e:?} missing from {events:#?}"))
    };
    let delete = events
        .iter()
        .position(|e| e.starts_with("wal delete"))
        .unwrap_or_else(|| panic!("no WAL segment deleted: {events:#?}"));
    let checkpoint = events
        .iter()
        .position(|e| e.starts_with("wal checkpoint"))
        .expect("checkpoint recorded");
    assert!(checkpoint < delete);
    for m in &metas {
        let meta = pos(&format!("fsync blocks/{}/meta.json", m.id));
        for f in ["samples.parquet", "series.parquet", "postings.parquet"] {
            // Each data file, and the directories naming it, durable before meta.json.
            let file = pos(&format!("fsync blocks/{}/{f}", m.id));
            assert!(file < meta, "{f} synced after meta.json: {events:#?}");
            // The three data files are written concurrently, so their entries interleave;
            // each file's directories follow its own fsync, before meta.json's.
            for dir in [
                format!("fsync-dir blocks/{}", m.id),
                "fsync-dir blocks".into(),
            ] {
                assert!(
                    events[file..meta].contains(&dir),
                    "{dir:?} not synced between {f} and meta.json: {events:#?}"
                );
            }
        }
        assert_eq!(events[meta + 1], format!("fsync-dir blocks/{}", m.id));
        assert!(meta < checkpoint, "meta.json synced after the checkpoint");
    }
}

/// Serves a router over `tenants` on 127.0.0.1:0 in this process; returns its URL.
async fn serve(tenants: Arc<Tenants>) -> (String, tokio::task::JoinHandle<()>) {
    let app = router(AppState::new(tenants), 64 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_wal_writes_are_not_acknowledged_and_lose_nothing_acknowledged() {
    let (_tmp, dir) = tempdir();
    let faults = Arc::new(WalFaults::default());
    let mut o = opts(&dir);
    o.wal_faults = Some(faults.clone());
    let tenants = Arc::new(Tenants::new(
        o,
        Arc::new(SyncedLocalStore::new(&dir).unwrap()),
    ));
    tenants.open_all().await.unwrap();
    let (url, task) = serve(tenants.clone()).await;
    let client = reqwest::Client::new();
    let now = now_ms();
    let write = |k: usize| {
        encode(&batch(vec![(
            labels(&[("__name__", "quiver_walfault"), ("k", &k.to_string())]),
            vec![(now - 10_000 + k as i64, k as f64)],
        )]))
    };
    // (write, injected fault before it, expected status)
    let plan: [(usize, Option<&str>, u16); 7] = [
        (1, None, 204),
        (2, None, 204),
        (3, Some("write"), 500),
        (4, None, 204),
        (5, Some("fsync"), 500),
        (6, None, 204),
        (7, None, 204),
    ];
    let mut acked = Vec::new();
    for (k, fault, want) in plan {
        match fault {
            Some("write") => faults.writes.store(1, std::sync::atomic::Ordering::SeqCst),
            Some(_) => faults.syncs.store(1, std::sync::atomic::Ordering::SeqCst),
            None => {}
        }
        let status = post_write(&client, &url, write(k)).await.status().as_u16();
        assert_eq!(status, want, "write {k}");
        if status == 204 {
            acked.push(k);
        }
    }
    task.abort();
    tenants.close_all().await;
    drop(tenants);

    // Restart without faults: every acknowledged sample is replayed from the WAL.
    let s = Storage::open(opts(&dir), Arc::new(SyncedLocalStore::new(&dir).unwrap()))
        .await
        .unwrap();
    let got = all_samples(&s, "quiver_walfault").await;
    for k in acked {
        assert!(
            got.iter()
                .any(|(kk, _, v)| *kk == k.to_string() && *v == k as f64),
            "acknowledged write {k} lost after restart; have {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_blocks_are_quarantined_and_storage_opens() {
    let (_tmp, dir) = tempdir();
    let store = || Arc::new(SyncedLocalStore::new(&dir).unwrap());
    let now = now_ms();
    let s = Storage::open(opts(&dir), store()).await.unwrap();
    let mut ids = Vec::new();
    for k in 0..2 {
        s.append(
            batch(vec![(
                labels(&[("__name__", "quiver_quarantine"), ("k", &k.to_string())]),
                vec![(now - 1000, k as f64)],
            )]),
            WriteWindow::Recent,
        )
        .await
        .unwrap();
        ids.push(s.flush().await.unwrap()[0].id.clone());
    }
    s.close().await;
    drop(s);
    // A power cut before the series file reached the disk: it is empty.
    std::fs::write(dir.join("blocks").join(&ids[0]).join("series.parquet"), b"").unwrap();
    let s = Storage::open(opts(&dir), store()).await.unwrap();
    assert_eq!(
        s.stats()
            .blocks_quarantined
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Moved, not deleted (an empty directory may stay behind; it is no block).
    assert!(!dir.join("blocks").join(&ids[0]).join("meta.json").exists());
    assert!(
        dir.join("quarantine")
            .join(&ids[0])
            .join("meta.json")
            .exists()
    );
    // The other block is still served.
    let got = all_samples(&s, "quiver_quarantine").await;
    assert_eq!(got, vec![("1".to_string(), now - 1000, 1.0)]);
}
