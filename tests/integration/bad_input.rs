//! Bad input: each gets a 4xx naming the problem, stores nothing from that request, and
//! loses nothing stored before.

use prost::Message;
use quiver::ingest::prompb;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_rejected_and_store_nothing() {
    let (_tmp, dir) = tempdir();
    let mut server = Server::start(&dir, &["--max-body-bytes", "100000"], &[]).await;
    let client = reqwest::Client::new();
    let now = now_ms();
    let good = labels(&[("__name__", "quiver_bad"), ("k", "good")]);
    assert_eq!(
        post_write(
            &client,
            &server.url,
            encode(&batch(vec![(good.clone(), vec![(now, 1.0)])]))
        )
        .await
        .status(),
        204
    );

    let ok_series = (
        labels(&[("__name__", "quiver_bad"), ("k", "should_not_exist")]),
        vec![(now, 2.0)],
    );
    let dup_labels = prompb::WriteRequest {
        timeseries: vec![
            prompb::TimeSeries {
                labels: vec![
                    prompb::Label {
                        name: "__name__".into(),
                        value: "quiver_bad".into(),
                    },
                    prompb::Label {
                        name: "k".into(),
                        value: "should_not_exist".into(),
                    },
                ],
                samples: vec![prompb::Sample {
                    value: 2.0,
                    timestamp: now,
                }],
                ..Default::default()
            },
            prompb::TimeSeries {
                labels: vec![
                    prompb::Label {
                        name: "a".into(),
                        value: "1".into(),
                    },
                    prompb::Label {
                        name: "a".into(),
                        value: "2".into(),
                    },
                ],
                samples: vec![prompb::Sample {
                    value: 1.0,
                    timestamp: now,
                }],
                ..Default::default()
            },
        ],
        metadata: vec![],
    };
    let empty_name = prompb::WriteRequest {
        timeseries: vec![prompb::TimeSeries {
            labels: vec![prompb::Label {
                name: "".into(),
                value: "x".into(),
            }],
            samples: vec![prompb::Sample {
                value: 1.0,
                timestamp: now,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    // Invalid UTF-8 in a label value: field 1 (timeseries) { field 1 (label) { name "a", value 0xff } }.
    let bad_utf8_proto = vec![
        0x0a, 0x09, 0x0a, 0x07, 0x0a, 0x01, b'a', 0x12, 0x02, 0xff, 0xfe,
    ];
    let snappy = |b: Vec<u8>| snap::raw::Encoder::new().compress_vec(&b).unwrap();
    let too_old = batch(vec![
        ok_series.clone(),
        (
            labels(&[("__name__", "quiver_bad"), ("k", "old")]),
            vec![(now - 30 * 24 * 3_600_000, 1.0)],
        ),
    ]);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed snappy",
            b"definitely not snappy".to_vec(),
            400,
            "snappy",
        ),
        (
            "malformed protobuf",
            snappy(vec![0x0a, 0xff, 0xff, 0xff, 0x0f]),
            400,
            "protobuf",
        ),
        ("invalid utf-8", snappy(bad_utf8_proto), 400, "protobuf"),
        (
            "duplicate label",
            snappy(dup_labels.encode_to_vec()),
            400,
            "duplicate label name \"a\"",
        ),
        (
            "empty label name",
            snappy(empty_name.encode_to_vec()),
            400,
            "empty label name",
        ),
        (
            "far outside window",
            encode(&too_old),
            400,
            "outside the accepted window",
        ),
    ];
    for (what, body, status, needle) in cases {
        let r = post_write(&client, &server.url, body).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let text = r.text().await.unwrap();
        assert!(text.contains(needle), "{what}: {text}");
    }
    // Oversized: the server answers 413 from Content-Length without reading the body, so the
    // client may see its upload cut; a fresh connection per try gets the status.
    let mut got_413 = false;
    for _ in 0..5 {
        let c = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        if let Ok(r) = c
            .post(format!("{}/api/v1/write", server.url))
            .body(vec![0u8; 200_000])
            .send()
            .await
        {
            assert_eq!(r.status().as_u16(), 413);
            got_413 = true;
            break;
        }
    }
    assert!(got_413, "no 413 for an oversized body");
    let r = client
        .post(format!("{}/api/v1/import/prometheus", server.url))
        .body("quiver_bad{k=\"should_not_exist\"} 1\nbroken line here\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("line 2"));
    let r = client
        .post(format!("{}/api/v1/write", server.url))
        .header("Content-Encoding", "gzip")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    server.stop();
    let rows = sql_rows(
        &dir,
        &[],
        "SELECT labels['k'], value FROM samples_labeled WHERE metric = 'quiver_bad'",
    );
    assert_eq!(rows, vec!["good,1.0".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_endpoint_and_cli_accept_text_formats() {
    let (tmp, dir) = tempdir();
    let mut server = Server::start(&dir, &[], &[]).await;
    let client = reqwest::Client::new();
    let t = now_ms() - 3_600_000;
    let body = format!(
        "# TYPE quiver_imp counter\nquiver_imp{{a=\"1\"}} 5 {t}\nquiver_imp{{a=\"1\"}} 6 {}\nquiver_imp{{a=\"2\"}} 7 {t}\n",
        t + 15_000
    );
    let r = client
        .post(format!("{}/api/v1/import/prometheus", server.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    server.stop();

    // OpenMetrics with second timestamps through the CLI, into the same data dir.
    let om = tmp.path().join("in.om");
    let secs = (t / 1000) as f64 + 0.5;
    std::fs::write(&om, format!("# TYPE quiver_om gauge\nquiver_om{{b=\"x\"}} 1.5 {secs}\nquiver_om{{b=\"x\"}} 2.5 {}\n# EOF\n", secs + 15.0)).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["import", "--data-dir"])
        .arg(&dir)
        .arg(&om)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 2 samples"));
    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, "ok 1 1000\nnot a sample\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["import", "--data-dir"])
        .arg(&dir)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.txt: line 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rows = sql_rows(
        &dir,
        &[],
        "SELECT metric, timestamp, value FROM samples_labeled ORDER BY metric, timestamp, value",
    );
    let t_om = (secs * 1000.0) as i64;
    assert_eq!(
        rows,
        vec![
            format!("quiver_imp,{t},5.0"),
            format!("quiver_imp,{t},7.0"),
            format!("quiver_imp,{},6.0", t + 15_000),
            format!("quiver_om,{t_om},1.5"),
            format!("quiver_om,{},2.5", t_om + 15_000),
        ]
    );
}

/// A real export is bigger than any request limit: the import endpoint streams it through
/// the parser and commits in batches, so it is bounded by time, not by `--max-body-bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_streams_bodies_larger_than_the_body_limit() {
    let (_tmp, dir) = tempdir();
    let mut server = Server::start(&dir, &["--max-body-bytes", "100000"], &[]).await;
    let base = (now_ms() / 1000 - 3600) as f64;
    // ~4 MB, 40x the body limit, 120,000 samples (more than two commit batches), with
    // OpenMetrics float-second timestamps.
    let mut body = String::new();
    for i in 0..120_000u64 {
        body.push_str(&format!(
            "quiver_stream{{series=\"{}\"}} {i} {:.3}\n",
            i % 100,
            base + (i / 100) as f64 * 0.5
        ));
    }
    assert!(body.len() > 3_000_000);
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/import/prometheus", server.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    server.stop();
    let rows = sql_rows(
        &dir,
        &[],
        "SELECT count(*), min(timestamp) FROM samples_labeled WHERE metric = 'quiver_stream'",
    );
    assert_eq!(rows, vec![format!("120000,{}", (base * 1000.0) as i64)]);
}
