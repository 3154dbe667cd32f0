//! Every example in `sql/examples/` runs against a small dataset and returns rows.

use std::sync::Arc;

use quiver::sql;
use quiver::storage::{Storage, WriteWindow};

use crate::support::{batch, labels};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_examples_run() {
    let storage = Arc::new(Storage::in_memory().await.unwrap());
    let mut series = Vec::new();
    for (job, n) in [("api", 3), ("db", 2)] {
        for i in 0..n {
            let l = labels(&[
                ("__name__", "quiver_example_gauge"),
                ("job", job),
                ("instance", &format!("{job}-{i}")),
            ]);
            series.push((l, (0..240).map(|k| (k * 30_000, (k % 17) as f64)).collect()));
        }
    }
    storage
        .append(batch(series.clone()), WriteWindow::Any)
        .await
        .unwrap();
    storage.flush().await.unwrap();
    // Some samples only in the head, too.
    let head: Vec<_> = series
        .into_iter()
        .map(|(l, _)| (l, vec![(240 * 30_000, 1.0)]))
        .collect();
    storage.append(batch(head), WriteWindow::Any).await.unwrap();
    let ctx = sql::session(storage).await.unwrap();

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let batches = sql::query(&ctx, &text)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert!(rows > 0, "{} returned no rows", f.display());
    }
    let b = sql::query(&ctx, "SELECT count(*) AS n FROM samples")
        .await
        .unwrap();
    let out = sql::render(&b, sql::OutputFormat::Csv).unwrap();
    assert_eq!(out, "n\n1205\n");
    // Pushdown keeps answers right: a time filter and a series filter.
    let b = sql::query(&ctx, "SELECT count(*) AS n FROM samples WHERE timestamp >= 3600000 AND timestamp < 7200000 AND series_id = 0").await.unwrap();
    assert_eq!(sql::render(&b, sql::OutputFormat::Csv).unwrap(), "n\n120\n");
}
