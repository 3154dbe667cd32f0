//! Acceptance (issue 15): native histograms sent with remote write 1.0 (integer, delta
//! encoded) and 2.0 (float counts), and exemplars with both, are answered the same —
//! byte for byte — through `query`, `query_range`, `query_exemplars`, SQL and the metadata
//! API before a restart, after it (WAL replay), and after the head was flushed to blocks
//! and the blocks compacted; remote write 2.0 answers with the counts it wrote.

use std::sync::Arc;

use prost::Message;
use quiver::ingest::prompb::{self, histogram::Count, histogram::ZeroCount};
use quiver::ingest::{
    MetricMetadata, SeriesExemplars, SeriesHistograms, SeriesSamples, WriteBatch, remote_write_v2,
};
use quiver::model::exemplar::Exemplar;
use quiver::model::histogram::FloatHistogram;
use quiver::storage::{Storage, StorageOptions, WriteWindow, objstore};

use crate::support::*;

const STEP: i64 = 15_000;
const N: i64 = 10;
const DAY: i64 = 86_400_000;

fn label(name: &str, value: &str) -> prompb::Label {
    prompb::Label {
        name: name.into(),
        value: value.into(),
    }
}

/// The k-th histogram of `quiver_nh_seconds` as a Prometheus integer histogram: absolute
/// counts (k+1)·[1 | 1 zero | 2 3 _ 2] on schema 0, sent as deltas.
fn integer_histogram(k: i64, t: i64) -> prompb::Histogram {
    let m = k + 1;
    prompb::Histogram {
        count: Some(Count::CountInt(9 * m as u64)),
        sum: 18.5 * m as f64,
        schema: 0,
        zero_threshold: 0.001,
        zero_count: Some(ZeroCount::ZeroCountInt(m as u64)),
        negative_spans: vec![prompb::BucketSpan {
            offset: 0,
            length: 1,
        }],
        negative_deltas: vec![m],
        positive_spans: vec![
            prompb::BucketSpan {
                offset: 0,
                length: 2,
            },
            prompb::BucketSpan {
                offset: 1,
                length: 1,
            },
        ],
        positive_deltas: vec![2 * m, m, -m],
        timestamp: t,
        ..Default::default()
    }
}

/// The k-th histogram of `quiver_nh2_bytes` (remote write 2.0): custom buckets.
fn custom_histogram(k: i64) -> FloatHistogram {
    let m = (k + 1) as f64;
    FloatHistogram::from_absolute(
        -53,
        0.0,
        0.0,
        6.0 * m,
        12.5 * m,
        (0, vec![m, 2.0 * m, 3.0 * m]),
        (0, vec![]),
        vec![1.0, 10.0],
    )
}

fn request_v1(t0: i64) -> Vec<u8> {
    let req = prompb::WriteRequest {
        timeseries: vec![
            prompb::TimeSeries {
                labels: vec![label("__name__", "quiver_nh_seconds"), label("job", "a")],
                histograms: (0..N)
                    .map(|k| integer_histogram(k, t0 + k * STEP))
                    .collect(),
                ..Default::default()
            },
            prompb::TimeSeries {
                labels: vec![label("__name__", "quiver_ex_total"), label("job", "a")],
                samples: (0..N)
                    .map(|k| prompb::Sample {
                        value: k as f64,
                        timestamp: t0 + k * STEP,
                    })
                    .collect(),
                exemplars: vec![
                    prompb::Exemplar {
                        labels: vec![label("trace_id", "abc123")],
                        value: 0.25,
                        timestamp: t0 + STEP + 500,
                    },
                    prompb::Exemplar {
                        labels: vec![label("trace_id", "def456"), label("span_id", "77")],
                        value: 1.5,
                        timestamp: t0 + 4 * STEP + 250,
                    },
                ],
                ..Default::default()
            },
        ],
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

fn request_v2(t0: i64) -> (Vec<u8>, WriteBatch) {
    let nh2 = labels(&[("__name__", "quiver_nh2_bytes"), ("job", "b")]);
    let gauge = labels(&[("__name__", "quiver_v2_gauge"), ("job", "b")]);
    let batch = WriteBatch {
        series: vec![SeriesSamples {
            labels: gauge.clone(),
            samples: (0..N).map(|k| (t0 + k * STEP, 0.5 * k as f64)).collect(),
        }],
        histograms: vec![SeriesHistograms {
            labels: nh2.clone(),
            samples: (0..N)
                .map(|k| (t0 + k * STEP, custom_histogram(k)))
                .collect(),
        }],
        exemplars: vec![SeriesExemplars {
            labels: nh2,
            exemplars: vec![Exemplar {
                labels: labels(&[("trace_id", "0af7651916cd43dd8448eb211c80319c")]),
                value: 7.0,
                ts: t0 + 2 * STEP,
            }],
        }],
        metadata: vec![
            MetricMetadata {
                metric_family_name: "quiver_v2_gauge".into(),
                metric_type: "gauge".into(),
                help: "A gauge sent with remote write 2.0.".into(),
                unit: "".into(),
                carriers: vec![],
            },
            MetricMetadata {
                metric_family_name: "quiver_nh2_bytes".into(),
                metric_type: "histogram".into(),
                help: "Sizes.".into(),
                unit: "bytes".into(),
                carriers: vec![],
            },
        ],
        dropped_exemplars: 0,
    };
    (remote_write_v2::encode(&batch), batch)
}

async fn get(client: &reqwest::Client, url: &str, path: &str, q: &[(&str, String)]) -> String {
    let r = client
        .get(format!("{url}{path}"))
        .query(q)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{path} {q:?}: {text}");
    text
}

/// Remote read of the integer histogram series: its histograms as Prometheus's wire form
/// (float counts), rendered for comparison.
async fn remote_read(url: &str, t0: i64) -> String {
    let req = prompb::ReadRequest {
        queries: vec![prompb::Query {
            start_timestamp_ms: t0,
            end_timestamp_ms: t0 + N * STEP,
            matchers: vec![prompb::LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: "quiver_nh_seconds".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/read"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&r.bytes().await.unwrap())
        .unwrap();
    let resp = prompb::ReadResponse::decode(raw.as_slice()).unwrap();
    let ts = &resp.results[0].timeseries;
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].histograms.len(), N as usize);
    let h = &ts[0].histograms[N as usize - 1];
    assert_eq!(
        (
            h.count,
            h.sum,
            h.positive_counts.clone(),
            h.negative_counts.clone()
        ),
        (
            Some(Count::CountFloat(90.0)),
            185.0,
            vec![20.0, 30.0, 20.0],
            vec![10.0]
        )
    );
    format!("{ts:?}")
}

/// Everything the acceptance reads, as the server answers it.
async fn answers(url: &str, t0: i64) -> Vec<String> {
    let c = reqwest::Client::new();
    let last = t0 + (N - 1) * STEP;
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let mut out = Vec::new();
    for q in [
        "quiver_nh_seconds",
        "quiver_nh2_bytes",
        "histogram_count(rate(quiver_nh_seconds[1m]))",
        "histogram_quantile(0.5, quiver_nh2_bytes)",
        "sum(quiver_nh_seconds)",
    ] {
        out.push(
            get(
                &c,
                url,
                "/api/v1/query",
                &[("query", q.into()), ("time", secs(last))],
            )
            .await,
        );
    }
    for q in ["quiver_nh_seconds", "quiver_nh2_bytes", "quiver_v2_gauge"] {
        out.push(
            get(
                &c,
                url,
                "/api/v1/query_range",
                &[
                    ("query", q.into()),
                    ("start", secs(t0)),
                    ("end", secs(last)),
                    ("step", "15".into()),
                ],
            )
            .await,
        );
    }
    out.push(
        get(
            &c,
            url,
            "/api/v1/query_exemplars",
            &[
                (
                    "query",
                    "quiver_ex_total + on(job) group_left rate(quiver_nh2_bytes[5m])".into(),
                ),
                ("start", secs(t0)),
                ("end", secs(last)),
            ],
        )
        .await,
    );
    for sql in [
        "SELECT s.metric, h.timestamp, h.schema, h.count, h.sum, h.zero_count, h.positive_buckets, h.negative_buckets, h.custom_values FROM histograms h JOIN series s ON h.series_id = s.series_id ORDER BY s.metric, h.timestamp",
        "SELECT s.metric, e.timestamp, e.value, e.label_names, e.label_values FROM exemplars e JOIN series s ON e.series_id = s.series_id ORDER BY s.metric, e.timestamp",
    ] {
        out.push(get(&c, url, "/api/v1/sql", &[("query", sql.into())]).await);
    }
    out.push(get(&c, url, "/api/v1/metadata", &[]).await);
    out.push(remote_read(url, t0).await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_and_exemplars_survive_restart_flush_and_compaction() {
    let (_tmp, dir) = tempdir();
    // Yesterday 01:00 UTC: two-hour blocks of one day, whatever time the test runs.
    let t0 = (now_ms() - DAY).div_euclid(DAY) * DAY + 3_600_000;
    // The restarts below replay the WAL (stops leave the head there), then the test
    // flushes and compacts itself.
    let flags = [
        "--ooo-window",
        "48h",
        "--head-flush-interval",
        "1h",
        "--no-flush-on-shutdown",
    ];
    let mut server = Server::start(&dir, &flags, &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post_write(&client, &server.url, request_v1(t0))
            .await
            .status(),
        204
    );
    let (body, sent) = request_v2(t0);
    let r = client
        .post(format!("{}/api/v1/write", server.url))
        .header("Content-Encoding", "snappy")
        .header(
            "Content-Type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        )
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let header = |h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        (
            header("X-Prometheus-Remote-Write-Samples-Written"),
            header("X-Prometheus-Remote-Write-Histograms-Written"),
            header("X-Prometheus-Remote-Write-Exemplars-Written"),
        ),
        (
            Some(sent.float_count().to_string()),
            Some(sent.histogram_count().to_string()),
            Some(sent.exemplar_count().to_string()),
        )
    );

    let before = answers(&server.url, t0).await;
    // What the first answers say, checked against what was sent.
    let last_s = (t0 + (N - 1) * STEP) as f64 / 1000.0;
    assert!(
        before[0].contains(&format!(
            r#""histogram":[{last_s},{{"count":"90","sum":"185","buckets":[[1,"-1","-0.5","10"],[3,"-0.001","0.001","10"],[0,"0.5","1","20"],[0,"1","2","30"],[0,"4","8","20"]]}}]"#
        )),
        "{}",
        before[0]
    );
    assert!(
        before[1].contains(&format!(
            r#""histogram":[{last_s},{{"count":"60","sum":"125","buckets":[[3,"-Inf","1","10"],[0,"1","10","20"],[0,"10","+Inf","30"]]}}]"#
        )),
        "{}",
        before[1]
    );
    // 9 observations per 15 s.
    assert!(
        before[2].contains(r#""value":["#) && before[2].contains(r#","0.6"]"#),
        "{}",
        before[2]
    );
    assert!(
        before[5].matches(r#"{"count":"#).count() == N as usize,
        "{}",
        before[5]
    );
    for want in [
        r#"{"seriesLabels":{"__name__":"quiver_ex_total","job":"a"},"exemplars":[{"labels":{"trace_id":"abc123"},"value":"0.25","#,
        r#"{"labels":{"span_id":"77","trace_id":"def456"},"value":"1.5","#,
        r#"{"seriesLabels":{"__name__":"quiver_nh2_bytes","job":"b"},"exemplars":[{"labels":{"trace_id":"0af7651916cd43dd8448eb211c80319c"},"value":"7","#,
    ] {
        assert!(before[8].contains(want), "{want}\n{}", before[8]);
    }
    assert!(
        before[9].contains(r#""metric":"quiver_nh_seconds""#)
            && before[9].contains(r#""count":90.0"#),
        "{}",
        before[9]
    );
    assert!(
        before[10].contains(r#""label_values":["77","def456"]"#),
        "{}",
        before[10]
    );
    assert!(
        before[11].contains(r#""quiver_v2_gauge":[{"help":"A gauge sent with remote write 2.0.","type":"gauge","unit":""}]"#)
            && before[11].contains(r#""quiver_nh2_bytes":[{"help":"Sizes.","type":"histogram","unit":"bytes"}]"#),
        "{}",
        before[11]
    );

    // Restart: the WAL brings everything back.
    server.stop();
    let mut server = Server::start(&dir, &flags, &[]).await;
    assert_eq!(answers(&server.url, t0).await, before, "after a restart");
    server.stop();

    // Flush the head to blocks, write later samples of the same series into another
    // two-hour block, flush again, and compact the day's blocks into one.
    {
        let mut o = StorageOptions::new(&dir);
        o.ooo_window_ms = 2 * DAY;
        let store = objstore::build(None, &dir, &Default::default()).unwrap();
        let s = Arc::new(Storage::open(o, store).await.unwrap());
        let flushed = s.flush().await.unwrap();
        assert!(
            flushed.iter().any(|b| b.num_histograms == 2 * N as u64),
            "{flushed:?}"
        );
        assert!(flushed.iter().any(|b| b.num_exemplars == 3), "{flushed:?}");
        let later = t0 + 3 * 3_600_000;
        let batch = WriteBatch {
            histograms: vec![SeriesHistograms {
                labels: labels(&[("__name__", "quiver_nh2_bytes"), ("job", "b")]),
                samples: vec![(later, custom_histogram(20))],
            }],
            exemplars: vec![SeriesExemplars {
                labels: labels(&[("__name__", "quiver_ex_total"), ("job", "a")]),
                exemplars: vec![Exemplar {
                    labels: labels(&[("trace_id", "later")]),
                    value: 3.0,
                    ts: later,
                }],
            }],
            ..Default::default()
        };
        s.append(batch, WriteWindow::Any).await.unwrap();
        s.flush().await.unwrap();
        assert!(s.blocks().len() >= 2);
        let report = s.compact_all().await.unwrap();
        assert!(!report.merged.is_empty(), "{report:?}");
        let blocks = s.blocks();
        assert_eq!(blocks.len(), 1, "{blocks:?}");
        assert_eq!(blocks[0].num_histograms, 2 * N as u64 + 1);
        assert_eq!(blocks[0].num_exemplars, 4);
        s.close().await;
    }
    // Every file of the merged block checks out against its meta (counts, decoding).
    let verify = std::process::Command::new(BIN)
        .args(["blocks", "verify", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let server = Server::start(&dir, &flags, &[]).await;
    let after = answers(&server.url, t0).await;
    // The later samples are outside every range above except SQL's, which reads all.
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        if i == 9 || i == 10 {
            continue;
        }
        assert_eq!(a, b, "answer {i} after flush and compaction");
    }
    let later = t0 + 3 * 3_600_000;
    assert!(
        after[9].contains(&format!("\"timestamp\":{later}")),
        "{}",
        after[9]
    );
    assert!(
        after[10].contains(r#""label_values":["later"]"#),
        "{}",
        after[10]
    );
    // Apart from the later rows, SQL reads the same rows from the merged block.
    let rows = |text: &str| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["data"]["rows"].as_array().unwrap().clone()
    };
    for i in [9, 10] {
        let (b, a) = (rows(&before[i]), rows(&after[i]));
        assert_eq!(a.len(), b.len() + 1, "{}", after[i]);
        assert!(
            b.iter().all(|r| a.contains(r)),
            "{}\n{}",
            before[i],
            after[i]
        );
    }
}

/// Histograms weigh what they hold against `--query-max-samples`: the loaded ones by their
/// size, and so does every histogram a range function makes per step — a query over big
/// histograms is refused where the same query over floats runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_queries_are_bounded_by_their_size() {
    use quiver::promql::{Engine, PromqlError, QueryOptions};
    let s = Arc::new(Storage::in_memory().await.unwrap());
    let wide = |k: i64| {
        let m = (k + 1) as f64;
        FloatHistogram::from_absolute(
            3,
            0.0,
            0.0,
            160.0 * m,
            m,
            (0, vec![m; 160]),
            (0, vec![]),
            vec![],
        )
    };
    let batch = WriteBatch {
        histograms: vec![SeriesHistograms {
            labels: labels(&[("__name__", "wide")]),
            samples: (0..120).map(|k| (k * STEP, wide(k))).collect(),
        }],
        series: vec![SeriesSamples {
            labels: labels(&[("__name__", "narrow")]),
            samples: (0..120).map(|k| (k * STEP, k as f64)).collect(),
        }],
        ..Default::default()
    };
    s.append(batch, WriteWindow::Any).await.unwrap();
    let run = |q: &str, max_samples: usize| {
        let engine = Engine::new(
            s.clone(),
            QueryOptions {
                max_samples,
                ..QueryOptions::default()
            },
        );
        let expr = Engine::parse(q).unwrap();
        async move { engine.range(&expr, 60_000, 119 * STEP, STEP).await }
    };
    // 120 samples and 116 steps: fine as floats under 1,000, not as 160-bucket histograms.
    assert!(run("rate(narrow[1m])", 1_000).await.is_ok());
    assert!(matches!(
        run("rate(wide[1m])", 1_000).await,
        Err(PromqlError::TooManySamples)
    ));
    assert!(run("rate(wide[1m])", 1_000_000).await.is_ok());
    // Loading them fits 15,000; making a new one per step does not.
    assert!(run("wide", 15_000).await.is_ok());
    for q in ["-wide", "wide * 2", "wide / 2", "sum(wide)"] {
        assert!(
            matches!(run(q, 15_000).await, Err(PromqlError::TooManySamples)),
            "{q}"
        );
        assert!(run(q, 1_000_000).await.is_ok(), "{q}");
    }
}

/// The SQL `histograms` and `exemplars` tables charge what a statement reads (histograms by
/// size) against the statement's samples budget, and refuse beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_histogram_and_exemplar_tables_are_bounded() {
    use quiver::sql;
    let s = Arc::new(Storage::in_memory().await.unwrap());
    let l = labels(&[("__name__", "wide")]);
    let h = FloatHistogram::from_absolute(
        3,
        0.0,
        0.0,
        160.0,
        1.0,
        (0, vec![1.0; 160]),
        (0, vec![]),
        vec![],
    );
    let batch = WriteBatch {
        histograms: vec![SeriesHistograms {
            labels: l.clone(),
            samples: (0..100).map(|k| (k * STEP, h.clone())).collect(),
        }],
        exemplars: vec![SeriesExemplars {
            labels: l,
            exemplars: (0..100)
                .map(|k| Exemplar {
                    labels: labels(&[("trace_id", &k.to_string())]),
                    value: 1.0,
                    ts: k * STEP,
                })
                .collect(),
        }],
        ..Default::default()
    };
    s.append(batch, WriteWindow::Any).await.unwrap();
    let count = |table: &'static str, max_samples: usize| {
        let s = s.clone();
        async move {
            let limits = sql::SqlLimits {
                memory_bytes: 64 << 20,
                max_samples,
                cancel: quiver::promql::Cancel::after(std::time::Duration::from_secs(60)),
                spread: None,
            };
            let ctx = sql::session_scoped(s, None, Some(limits)).await.unwrap();
            sql::query(&ctx, &format!("SELECT count(*) FROM {table}"))
                .await
                .map(|b| sql::render(&b, sql::OutputFormat::Csv).unwrap())
                .map_err(|e| e.to_string())
        }
    };
    // 100 histograms of 160 buckets weigh far more than 100 samples; 100 exemplars do not.
    assert!(
        count("histograms", 1_000)
            .await
            .unwrap_err()
            .contains("more than the 1000")
    );
    assert_eq!(
        count("histograms", 100_000).await.unwrap(),
        "count(*)\n100\n"
    );
    assert!(
        count("exemplars", 50)
            .await
            .unwrap_err()
            .contains("more than the 50")
    );
    assert_eq!(count("exemplars", 100).await.unwrap(), "count(*)\n100\n");
}
