//! Acceptance (streaming scan): a SQL aggregate over many times more decoded samples than
//! the server's SQL memory limit answers exactly, and the server's peak RSS stays far below
//! the size of the data it read — the scan streams chunks sized to the memory pool instead
//! of materialising the table.

use std::sync::Arc;

use quiver::storage::{Storage, StorageOptions, WriteWindow, objstore};

use crate::support::*;

const SERIES: i64 = 1_500;
const PER_SERIES: i64 = 8_000;
/// Rounds of writes, each flushed to its own block: few, so that each block holds much more
/// than the memory limit (a reader that held a block's part at once would show).
const ROUNDS: i64 = 2;
/// `--sql-memory-limit` given to the server.
const SQL_MEMORY: usize = 32 << 20;

/// Peak resident set size of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

async fn sql(client: &reqwest::Client, url: &str, q: &str) -> serde_json::Value {
    let r = client
        .post(format!("{url}/api/v1/sql"))
        .form(&[("query", q)])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{q}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_aggregate_over_data_many_times_the_memory_limit_streams() {
    let (_tmp, dir) = tempdir();
    let t0 = (now_ms() - 10 * 24 * 3_600_000) / 3_600_000 * 3_600_000;
    {
        let mut o = StorageOptions::new(&dir);
        o.head_memory_limit = usize::MAX;
        let store = objstore::build(None, &dir, &Default::default()).unwrap();
        let s = Arc::new(Storage::open(o, store).await.unwrap());
        // Series i, sample k: value i * PER_SERIES + k, every 10 s; written in rounds of
        // time, each flushed to blocks.
        let per_round = PER_SERIES / ROUNDS;
        for r in 0..ROUNDS {
            let series = (0..SERIES)
                .map(|i| {
                    let l = labels(&[("__name__", "quiver_sql_big"), ("i", &i.to_string())]);
                    let samples = (r * per_round..(r + 1) * per_round)
                        .map(|k| (t0 + k * 10_000, (i * PER_SERIES + k) as f64))
                        .collect();
                    (l, samples)
                })
                .collect();
            s.append(batch(series), WriteWindow::Any).await.unwrap();
            s.flush().await.unwrap();
        }
        s.close().await;
    }
    let samples = SERIES * PER_SERIES;
    let decoded = samples as usize * 20;
    assert!(decoded > 5 * SQL_MEMORY);
    let server = Server::start(
        &dir,
        &[
            "--sql-memory-limit",
            &SQL_MEMORY.to_string(),
            "--query-max-samples",
            "100000000",
            "--query-timeout",
            "10m",
        ],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let before = peak_rss(server.child.id());

    // Every value is an integer below 2^53 and so is every partial sum: exact in f64.
    let n = samples as f64;
    let want_sum = n * (n - 1.0) / 2.0;
    let got = sql(
        &client,
        &server.url,
        "SELECT count(*) AS n, sum(value) AS s, count(DISTINCT series_id) AS k FROM samples",
    )
    .await;
    let row = &got["data"]["rows"][0];
    assert_eq!(row["n"].as_f64(), Some(n), "{got}");
    assert_eq!(row["s"].as_f64(), Some(want_sum), "{got}");
    assert_eq!(row["k"].as_f64(), Some(SERIES as f64), "{got}");

    // Grouped by a label through the join with `series`: per series the count and the max.
    let got = sql(
        &client,
        &server.url,
        "SELECT labels['i'] AS i, count(*) AS n, max(value) AS m \
         FROM samples JOIN series USING (series_id) GROUP BY labels['i']",
    )
    .await;
    let rows = got["data"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), SERIES as usize);
    for r in rows {
        let i: i64 = r["i"].as_str().unwrap().parse().unwrap();
        assert_eq!(r["n"].as_f64(), Some(PER_SERIES as f64), "{r}");
        assert_eq!(
            r["m"].as_f64(),
            Some((i * PER_SERIES + PER_SERIES - 1) as f64),
            "{r}"
        );
    }
    // With timestamps and series ids both projected the scan keeps its declared order,
    // merging the two blocks per series (the ordered path; the queries above read in
    // storage order).
    let got = sql(
        &client,
        &server.url,
        "SELECT series_id, min(timestamp) AS a, max(timestamp) AS b, sum(value) AS s \
         FROM samples GROUP BY series_id",
    )
    .await;
    let rows = got["data"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), SERIES as usize);
    let sum_of = |i: i64| {
        (0..PER_SERIES)
            .map(|k| (i * PER_SERIES + k) as f64)
            .sum::<f64>()
    };
    let mut sums: Vec<f64> = rows.iter().map(|r| r["s"].as_f64().unwrap()).collect();
    let mut want: Vec<f64> = (0..SERIES).map(sum_of).collect();
    sums.sort_by(f64::total_cmp);
    want.sort_by(f64::total_cmp);
    assert_eq!(sums, want);
    for r in rows {
        assert_eq!(r["a"].as_f64(), Some(t0 as f64), "{r}");
        assert_eq!(
            r["b"].as_f64(),
            Some((t0 + (PER_SERIES - 1) * 10_000) as f64),
            "{r}"
        );
    }
    let peak = peak_rss(server.child.id());
    eprintln!(
        "sql_bounded: {samples} samples ({} MiB decoded), SQL memory limit {} MiB, server peak RSS {} MiB (at start {} MiB)",
        decoded >> 20,
        SQL_MEMORY >> 20,
        peak >> 20,
        before >> 20
    );
    // Materialising the table alone would take `decoded` bytes on top of the process.
    assert!(
        peak < before + (decoded as u64) / 3,
        "peak RSS {} MiB for {} MiB of decoded samples (started at {} MiB)",
        peak >> 20,
        decoded >> 20,
        before >> 20
    );
}
