//! Acceptance (label index at scale): a restart over many blocks reads only their index
//! files — never a samples file — counted at the object store; once retention expires a
//! block, its series leave the catalog (labels and postings freed), `/api/v1/series` and
//! the label APIs, and a later restart does not bring them back.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use quiver::api::{AppState, router};
use quiver::storage::counted::{FILES, OPERATIONS, requests_of};
use quiver::storage::{StorageOptions, Tenants, WriteWindow, objstore};

use crate::support::{batch, labels, tempdir};

const H: i64 = 3_600_000;

fn opts(dir: &std::path::Path, clock: &Arc<AtomicI64>) -> StorageOptions {
    let mut o = StorageOptions::new(dir);
    let c = clock.clone();
    o.clock = Arc::new(move || c.load(Ordering::SeqCst));
    o.block_duration_ms = 2 * H;
    o.retention_ms = 12 * H;
    o
}

/// Every counter, so a test can take the difference over one step.
fn counts() -> Vec<u64> {
    OPERATIONS
        .iter()
        .flat_map(|o| FILES.iter().map(move |f| requests_of(o, f)))
        .collect()
}

fn delta(before: &[u64], op: &str, file: &str) -> u64 {
    let o = OPERATIONS.iter().position(|x| *x == op).unwrap();
    let f = FILES.iter().position(|x| *x == file).unwrap();
    requests_of(op, file) - before[o * FILES.len() + f]
}

async fn get_json(url: &str) -> serde_json::Value {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reads_only_index_files_and_expired_series_leave_the_catalog() {
    let (_tmp, dir) = tempdir();
    let day0 = 20_000 * 24 * H;
    let clock = Arc::new(AtomicI64::new(day0 + 3 * H));
    let tenants = Tenants::new(
        opts(&dir, &clock),
        objstore::build(None, &dir, &Default::default()).unwrap(),
    );
    tenants.open_all().await.unwrap();
    let s = tenants.get("default").await.unwrap();
    // 24 flushes: 200 "old" series in the first 2 h of the day, 100 "new" ones at hours
    // 20-22 — each flush a block of each window, 48 blocks in all.
    for f in 0..24i64 {
        let mut series = Vec::new();
        for i in 0..200 {
            let l = labels(&[("__name__", "quiver_old"), ("i", &i.to_string())]);
            series.push((l, vec![(day0 + f * 60_000 + i as i64, i as f64)]));
        }
        for i in 0..100 {
            let l = labels(&[("__name__", "quiver_new"), ("i", &i.to_string())]);
            series.push((l, vec![(day0 + 20 * H + f * 60_000, f as f64)]));
        }
        s.append(batch(series), WriteWindow::Any).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.blocks().len(), 48);
    tenants.close_all().await;
    drop(s);
    drop(tenants);

    // Restart: 48 meta.json and 48 series.parquet reads, the first block's postings file
    // (its postings when it registers into the empty catalog); no samples file touched.
    let before = counts();
    let tenants = Arc::new(Tenants::new(
        opts(&dir, &clock),
        objstore::build(None, &dir, &Default::default()).unwrap(),
    ));
    tenants.open_all().await.unwrap();
    let s = tenants.get("default").await.unwrap();
    assert_eq!(s.blocks().len(), 48);
    for op in ["get", "get_range", "head"] {
        assert_eq!(
            delta(&before, op, "samples"),
            0,
            "startup {op} on samples.parquet"
        );
    }
    assert_eq!(delta(&before, "get", "meta"), 48);
    // The 24 blocks of `quiver_old` hold the same label sets, as do the 24 of
    // `quiver_new`: one series file of each is read, the other blocks share its ids by
    // their series digest.
    assert_eq!(delta(&before, "get", "series"), 2);
    assert_eq!(delta(&before, "get", "postings"), 1);
    assert_eq!(s.catalog().len(), 300);
    let old_labels = s
        .catalog()
        .labels(
            s.catalog()
                .select(&[quiver::model::Matcher::equal("__name__", "quiver_old")])
                .min()
                .unwrap(),
        )
        .unwrap()
        .downgrade();

    let app = router(AppState::new(tenants.clone()), 64 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let all_time = "start=0&end=4000000000";
    let series = |u: String| async move {
        get_json(&format!(
            "{u}/api/v1/series?match[]={{__name__=~\"quiver_.*\"}}&{all_time}"
        ))
        .await["data"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(series(url.clone()).await, 300);

    // A day later the old window is past retention: its blocks expire, its series go.
    clock.store(day0 + 23 * H, Ordering::SeqCst);
    let report = s.compact().await.unwrap();
    assert_eq!(report.expired.len(), 24, "{report:?}");
    assert_eq!(report.forgotten, 200, "{report:?}");
    assert_eq!(s.catalog().len(), 100);
    assert!(
        old_labels.upgrade().is_none(),
        "an expired series' labels are still held in memory"
    );
    assert_eq!(series(url.clone()).await, 100);
    let names = get_json(&format!("{url}/api/v1/label/__name__/values?{all_time}")).await;
    assert_eq!(names["data"], serde_json::json!(["quiver_new"]));
    let old = get_json(&format!(
        "{url}/api/v1/series?match[]=quiver_old&{all_time}"
    ))
    .await;
    assert_eq!(old["data"], serde_json::json!([]));
    // Writing an expired series again gives it a fresh id and it is served again.
    s.append(
        batch(vec![(
            labels(&[("__name__", "quiver_old"), ("i", "1")]),
            vec![(day0 + 22 * H + 1, 1.0)],
        )]),
        WriteWindow::Any,
    )
    .await
    .unwrap();
    assert_eq!(series(url.clone()).await, 101);
    server.abort();
    tenants.close_all().await;
    drop(s);
    drop(tenants);

    // A restart after expiry knows only the series still held.
    let tenants = Tenants::new(
        opts(&dir, &clock),
        objstore::build(None, &dir, &Default::default()).unwrap(),
    );
    tenants.open_all().await.unwrap();
    let s = tenants.get("default").await.unwrap();
    assert_eq!(s.catalog().len(), 101);
}

/// A block whose meta.json repeats another block's series digest with another series
/// count is read, not given the other block's ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_that_disagrees_with_its_series_count_is_not_trusted() {
    let (_tmp, dir) = tempdir();
    let clock = Arc::new(AtomicI64::new(20_000 * 24 * H + 3 * H));
    let t = clock.load(Ordering::SeqCst) - H;
    let open = || async {
        let t = Tenants::new(
            opts(&dir, &clock),
            objstore::build(None, &dir, &Default::default()).unwrap(),
        );
        t.open_all().await.unwrap();
        t
    };
    let tenants = open().await;
    let s = tenants.get("default").await.unwrap();
    for names in [&["a", "b", "c"][..], &["x", "y"][..]] {
        let series = names
            .iter()
            .map(|n| (labels(&[("__name__", "m"), ("n", n)]), vec![(t, 1.0)]))
            .collect();
        s.append(batch(series), WriteWindow::Any).await.unwrap();
        s.flush().await.unwrap();
    }
    let metas = s.blocks();
    assert_eq!(metas.len(), 2);
    tenants.close_all().await;
    drop(s);
    drop(tenants);
    // The second block claims the first's digest.
    let path = dir.join("blocks").join(&metas[1].id).join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    meta["series_digest"] = metas[0].series_digest.clone().unwrap().into();
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();

    let tenants = open().await;
    let s = tenants.get("default").await.unwrap();
    let names = s.label_values("n", &[], i64::MIN, i64::MAX);
    assert_eq!(names, ["a", "b", "c", "x", "y"]);
    let got = s
        .select(
            &[quiver::model::Matcher::equal("n", "y")],
            i64::MIN,
            i64::MAX,
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels.get("n"), Some("y"));
}
