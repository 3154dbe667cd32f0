//! Acceptance: remote write over HTTP → restart → exactly the same samples via `quiver sql`.

use std::collections::BTreeSet;

use crate::support::*;

/// Parses `instance,timestamp,value` CSV rows into comparable tuples (value as bits).
fn parse_rows(rows: Vec<String>) -> Vec<(String, i64, u64)> {
    rows.iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse::<f64>().unwrap().to_bits(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_survives_restart_and_reads_back_via_sql() {
    let (_tmp, dir) = tempdir();
    let mut server = Server::start(&dir, &[], &[]).await;
    let client = reqwest::Client::new();
    let base = now_ms() - 30 * 60_000;
    let mut expected = BTreeSet::new();
    for req in 0..10 {
        let mut series = Vec::new();
        for s in 0..25 {
            let job = format!("job{}", s % 3);
            let inst = format!("i{s}");
            let l = labels(&[
                ("__name__", "quiver_e2e_total"),
                ("job", &job),
                ("instance", &inst),
            ]);
            let mut samples = Vec::new();
            for k in 0..4 {
                let t = base + (req * 4 + k) * 15_000 + s;
                let v = match (s, k) {
                    (0, 3) => f64::INFINITY,
                    (1, 2) => -0.5,
                    _ => (req * 100 + k) as f64 * 1.25 + s as f64,
                };
                samples.push((t, v));
                expected.insert((inst.clone(), t, v.to_bits()));
            }
            series.push((l, samples));
        }
        let r = post_write(&client, &server.url, encode(&batch(series))).await;
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
    }
    server.stop();
    // Restart: the samples come back from the WAL.
    let mut server = Server::start(&dir, &[], &[]).await;
    server.stop();
    let q = "SELECT labels['instance'] AS instance, timestamp, value FROM samples_labeled \
             WHERE metric = 'quiver_e2e_total' ORDER BY instance, timestamp";
    let got = parse_rows(sql_rows(&dir, &[], q));
    assert_eq!(got.len(), expected.len(), "row count");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_blocks_and_wal_together_read_back_exactly() {
    let (_tmp, dir) = tempdir();
    // Flush the head to blocks about every second.
    let mut server = Server::start(&dir, &["--head-flush-interval", "1s"], &[]).await;
    let client = reqwest::Client::new();
    let base = now_ms() - 60 * 60_000;
    let l = labels(&[("__name__", "quiver_e2e_gauge"), ("job", "x")]);
    let first: Vec<(i64, f64)> = (0..100).map(|i| (base + i * 15_000, i as f64)).collect();
    assert_eq!(
        post_write(
            &client,
            &server.url,
            encode(&batch(vec![(l.clone(), first)]))
        )
        .await
        .status(),
        204
    );
    wait_for("a block", 30, || local_block_count(&dir) >= 1).await;
    let second: Vec<(i64, f64)> = (100..140).map(|i| (base + i * 15_000, i as f64)).collect();
    assert_eq!(
        post_write(&client, &server.url, encode(&batch(vec![(l, second)])))
            .await
            .status(),
        204
    );
    server.kill();
    let mut server = Server::start(&dir, &[], &[]).await;
    server.stop();
    let rows = sql_rows(
        &dir,
        &[],
        "SELECT 'x', timestamp, value FROM samples_labeled WHERE metric = 'quiver_e2e_gauge' ORDER BY timestamp",
    );
    let want: Vec<(String, i64, u64)> = (0..140)
        .map(|i| ("x".to_string(), base + i * 15_000, (i as f64).to_bits()))
        .collect();
    assert_eq!(parse_rows(rows), want);
}

/// A remote-write request carrying an invalid native histogram (bucket counts that do not
/// fill its spans) is refused whole with a 400 that names the series — never acknowledged
/// with part of it dropped; the float samples beside it are not written either. An invalid
/// exemplar (labels over OpenMetrics' 128 characters, or older than the write window) is
/// dropped as Prometheus drops it: the samples are stored, the drop is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_histograms_are_refused_whole_invalid_exemplars_dropped() {
    use prost::Message;
    use quiver::ingest::prompb;
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &[], &[]).await;
    let client = reqwest::Client::new();
    let now = now_ms();
    let series = |name: &str| prompb::TimeSeries {
        labels: vec![prompb::Label {
            name: "__name__".into(),
            value: name.into(),
        }],
        samples: vec![prompb::Sample {
            value: 1.0,
            timestamp: now,
        }],
        ..Default::default()
    };
    let mut with_histogram = series("quiver_refused_a");
    with_histogram.histograms.push(prompb::Histogram {
        count: Some(prompb::histogram::Count::CountInt(3)),
        sum: 3.0,
        positive_spans: vec![prompb::BucketSpan {
            offset: 0,
            length: 3,
        }],
        positive_deltas: vec![1, 1],
        timestamp: now,
        ..Default::default()
    });
    let send = |ts: Vec<prompb::TimeSeries>| {
        let req = prompb::WriteRequest {
            timeseries: ts,
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        post_write(&client, &server.url, body)
    };
    let r = send(vec![series("quiver_refused_floats"), with_histogram]).await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("invalid native histogram for series quiver_refused_a"),
        "{text}"
    );
    let count = |q: &'static str| {
        let (c, url) = (client.clone(), server.url.clone());
        async move {
            let text = c
                .get(format!("{url}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["data"]["result"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("{__name__=~\"quiver_refused_.*\"}").await, 0);

    let mut with_exemplars = series("quiver_exemplar_b");
    for (value, ts) in [("x".repeat(200), now), ("ok".to_string(), now - 86_400_000)] {
        with_exemplars.exemplars.push(prompb::Exemplar {
            labels: vec![prompb::Label {
                name: "trace_id".into(),
                value,
            }],
            value: 1.0,
            timestamp: ts,
        });
    }
    assert_eq!(send(vec![with_exemplars]).await.status(), 204);
    assert_eq!(count("quiver_exemplar_b").await, 1);
    let metrics = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("quiver_exemplars_dropped_total 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("exemplars"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
