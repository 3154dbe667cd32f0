//! Every example in `sql/examples/` runs against a small dataset and returns rows.

use std::sync::Arc;

use quiver::sql;
use quiver::storage::{Storage, WriteWindow};

use crate::support::{batch, labels};

/// The examples' dataset: float series in a block and the head, a native histogram
/// series with an exemplar.
async fn example_storage() -> Arc<Storage> {
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
    // A native histogram series with an exemplar (examples 06 and 07).
    let hist = |k: i64| {
        let m = (k + 1) as f64;
        quiver::model::histogram::FloatHistogram::from_absolute(
            0,
            0.0,
            0.0,
            3.0 * m,
            4.5 * m,
            (0, vec![m, 2.0 * m]),
            (0, vec![]),
            vec![],
        )
    };
    let l = labels(&[("__name__", "quiver_example_seconds"), ("job", "api")]);
    storage
        .append(
            quiver::ingest::WriteBatch {
                histograms: vec![quiver::ingest::SeriesHistograms {
                    labels: l.clone(),
                    samples: (0..10).map(|k| (k * 30_000, hist(k))).collect(),
                }],
                exemplars: vec![quiver::ingest::SeriesExemplars {
                    labels: l,
                    exemplars: vec![quiver::model::exemplar::Exemplar {
                        labels: labels(&[("trace_id", "abc")]),
                        value: 0.3,
                        ts: 60_000,
                    }],
                }],
                ..Default::default()
            },
            WriteWindow::Any,
        )
        .await
        .unwrap();
    storage
}

/// The example files, in order.
fn examples() -> Vec<(std::path::PathBuf, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_examples_run() {
    let storage = example_storage().await;
    let ctx = sql::session(storage).await.unwrap();
    for (f, text) in examples() {
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

/// Every example's physical plan (as an HTTP statement plans it: with cancellation points
/// and a samples budget) goes through the SQL codec to bytes and back, displays the same,
/// and the copy answers what the original answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_plans_round_trip_through_the_codec() {
    let storage = example_storage().await;
    let limits = || sql::SqlLimits {
        memory_bytes: 1 << 30,
        max_samples: 1_000_000,
        cancel: quiver::promql::Cancel::default(),
        spread: None,
    };
    let ctx = sql::session_scoped(storage.clone(), None, Some(limits()))
        .await
        .unwrap();
    let codec = sql::codec::SqlCodec::new(&storage, Some(1_000_000), Default::default());
    let sorted = |b: &[datafusion::arrow::array::RecordBatch]| {
        let text = sql::render(b, sql::OutputFormat::Csv).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    let mut seen = String::new();
    for (f, text) in examples() {
        let df = ctx
            .sql(&text)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let plan = df
            .create_physical_plan()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let copy = sql::codec::roundtrip(plan.clone(), &ctx, &codec)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        seen.push_str(
            &datafusion::physical_plan::displayable(copy.as_ref())
                .indent(true)
                .to_string(),
        );
        let want = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        let got = datafusion::physical_plan::collect(copy, ctx.task_ctx())
            .await
            .unwrap();
        assert!(!want.is_empty(), "{}", f.display());
        assert_eq!(sorted(&got), sorted(&want), "{}", f.display());
    }
    for op in ["SamplesScanExec", "SeriesScanExec", "CancelExec"] {
        assert!(seen.contains(op), "no example plans {op}:\n{seen}");
    }
}

/// `samples` is a partitioned, ordered streaming scan over blocks and head: EXPLAIN shows
/// it with its partitions and filters, later writes win over blocks, and every partition's
/// rows come in `(series_id, timestamp)` order (declared, so DataFusion need not sort).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_scan_is_partitioned_ordered_and_merges_head_over_blocks() {
    let storage = Arc::new(Storage::in_memory().await.unwrap());
    let series: Vec<_> = (0..1500)
        .map(|i| {
            (
                labels(&[("__name__", "quiver_scan"), ("i", &i.to_string())]),
                (0..10).map(|k| (k * 1000, (i * 10 + k) as f64)).collect(),
            )
        })
        .collect();
    storage
        .append(batch(series.clone()), WriteWindow::Any)
        .await
        .unwrap();
    storage.flush().await.unwrap();
    // Overwrite one sample of every series in the head: the head must win.
    let later: Vec<_> = series
        .into_iter()
        .map(|(l, _)| (l, vec![(5000, -1.0)]))
        .collect();
    storage
        .append(batch(later), WriteWindow::Any)
        .await
        .unwrap();
    let ctx = sql::session(storage).await.unwrap();
    let csv = |q: &'static str| {
        let ctx = ctx.clone();
        async move { sql::render(&sql::query(&ctx, q).await.unwrap(), sql::OutputFormat::Csv).unwrap() }
    };
    let plan = csv("EXPLAIN SELECT series_id, max(value) FROM samples WHERE timestamp >= 2000 GROUP BY series_id").await;
    assert!(
        plan.contains("SamplesScanExec: series=1500, blocks=1, time=[2000, ")
            && plan.contains("pushed=[timestamp >= Int64(2000)]"),
        "{plan}"
    );
    assert!(
        !plan.contains("partitions=1,"),
        "one partition only: {plan}"
    );
    assert_eq!(
        csv("SELECT count(*) AS n, sum(CASE WHEN value = -1 THEN 1 ELSE 0 END) AS later FROM samples").await,
        "n,later\n15000,1500\n"
    );
    // Ordered output without a sort: the plan has no SortExec, the rows are in order.
    let plan =
        csv("EXPLAIN SELECT series_id, timestamp FROM samples ORDER BY series_id, timestamp").await;
    assert!(plan.contains("SortPreservingMergeExec"), "{plan}");
    assert!(!plan.contains("SortExec"), "sorted again: {plan}");
    let rows = csv("SELECT series_id, timestamp FROM samples ORDER BY series_id, timestamp").await;
    let pairs: Vec<(u32, i64)> = rows
        .lines()
        .skip(1)
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(pairs.len(), 15_000);
    assert!(pairs.windows(2).all(|w| w[0] < w[1]));
}
