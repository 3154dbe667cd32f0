//! Acceptance (issue 23, item 3): bodies at or under the body limit built to decode to
//! 100× their size or more (40× for form parameters), sent to every decoder, are refused or accepted while the
//! server's peak RSS (VmHWM, reset before each case) grows by at most 256 MiB; the server
//! stays up, and the control samples acknowledged between the cases are all there after a
//! SIGKILL and a restart. Each case's status, time and peak growth are printed
//! (`cargo nextest run hostile_ingest --no-capture`).

use std::io::Write as _;
use std::time::{Duration, Instant};

use prost::Message;
use quiver::ingest::prompb;
use quiver::ingest::remote_write_v2::{self as v2};
use reqwest::{Client, StatusCode};

use crate::support::*;

const MIB: usize = 1 << 20;
/// What any one case may add to the server's peak RSS.
const MAX_GROWTH: usize = 256 * MIB;

fn status_kib(pid: u32, field: &str) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Resets the peak (VmHWM) to the current RSS; returns the current RSS in bytes.
fn reset_peak(pid: u32) -> usize {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    status_kib(pid, "VmRSS:") * 1024
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn field(n: u32, body: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(n << 3 | 2), out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// `chunk` repeated `times`, gzipped (streamed: the inflated form is never held).
fn gzip_repeat(chunk: &[u8], times: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..times {
        e.write_all(chunk).unwrap();
    }
    e.finish().unwrap()
}

struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
}

const RW1: [(&str, &str); 2] = [
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
];
const RW2: [(&str, &str); 2] = [
    (
        "Content-Type",
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    ),
    ("Content-Encoding", "snappy"),
];

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    // Remote write 1.0 and 2.0: empty time series (2 wire bytes, ~100 B decoded).
    out.push(Case {
        name: "rw1 empty series",
        path: "/api/v1/write",
        headers: RW1.to_vec(),
        body: snappy(&[0x0a, 0x00].repeat(120 * MIB / 2)),
    });
    out.push(Case {
        name: "rw2 empty series",
        path: "/api/v1/write",
        headers: RW2.to_vec(),
        body: snappy(&[0x2a, 0x00].repeat(120 * MIB / 2)),
    });
    // Remote write 2.0: empty symbols (a 24-byte String each).
    out.push(Case {
        name: "rw2 empty symbols",
        path: "/api/v1/write",
        headers: RW2.to_vec(),
        body: snappy(&[0x22, 0x00].repeat(120 * MIB / 2)),
    });
    // Remote write 2.0: 15 native histograms, each one span of 2^24 buckets with one-byte
    // zero deltas.
    {
        let n = 1usize << 24;
        let mut span = Vec::new();
        varint(1 << 3, &mut span); // offset 0 (sint32)
        span.push(0);
        varint(2 << 3, &mut span); // length
        varint(n as u64, &mut span);
        let mut hist = Vec::new();
        field(11, &span, &mut hist);
        field(12, &vec![0u8; n], &mut hist);
        let mut ts = Vec::new();
        field(1, &[1, 2], &mut ts); // labels_refs: symbols 1, 2
        for _ in 0..15 {
            field(3, &hist, &mut ts);
        }
        let mut req = Vec::new();
        field(4, b"", &mut req);
        field(4, b"__name__", &mut req);
        field(4, b"hostile_hist", &mut req);
        field(5, &ts, &mut req);
        out.push(Case {
            name: "rw2 2^24-bucket spans",
            path: "/api/v1/write",
            headers: RW2.to_vec(),
            body: snappy(&req),
        });
    }
    // Remote write 1.0: one series with two million labels; one with many empty exemplars.
    {
        let mut ts = Vec::new();
        let mut label = Vec::new();
        field(1, b"__name__", &mut label);
        field(2, b"hostile_labels", &mut label);
        field(1, &label, &mut ts);
        for i in 0..2_000_000u32 {
            let mut l = Vec::new();
            field(1, format!("l{i}").as_bytes(), &mut l);
            field(2, b"v", &mut l);
            field(1, &l, &mut ts);
        }
        let mut req = Vec::new();
        field(1, &ts, &mut req);
        out.push(Case {
            name: "rw1 2M labels on one series",
            path: "/api/v1/write",
            headers: RW1.to_vec(),
            body: snappy(&req),
        });
        let mut ts = Vec::new();
        field(1, &label, &mut ts);
        field(2, &[0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f], &mut ts); // a sample of 1.0 at 0
        ts.extend([0x1a, 0x00].repeat(40 * MIB));
        let mut req = Vec::new();
        field(1, &ts, &mut req);
        out.push(Case {
            name: "rw1 40M empty exemplars",
            path: "/api/v1/write",
            headers: RW1.to_vec(),
            body: snappy(&req),
        });
    }
    // Remote write 1.0: a million distinct series, legitimate but large.
    {
        let t = now_ms() - 60_000;
        let mut sample = vec![0x09];
        sample.extend(1.0f64.to_le_bytes());
        sample.push(0x10);
        varint(t as u64, &mut sample);
        let mut name = Vec::new();
        field(1, b"__name__", &mut name);
        field(2, b"hostile_many", &mut name);
        let mut req = Vec::new();
        for i in 0..1_000_000u32 {
            let mut ts = Vec::new();
            field(1, &name, &mut ts);
            let mut l = Vec::new();
            field(1, b"i", &mut l);
            field(2, i.to_string().as_bytes(), &mut l);
            field(1, &l, &mut ts);
            field(2, &sample, &mut ts);
            field(1, &ts, &mut req);
        }
        out.push(Case {
            name: "rw1 1M distinct series",
            path: "/api/v1/write",
            headers: RW1.to_vec(),
            body: snappy(&req),
        });
    }
    // Remote write 1.0: 2,000 series of one family and 100,000 metadata entries naming it
    // (each would copy every series as a carrier).
    {
        let t = now_ms() - 60_000;
        let req = prompb::WriteRequest {
            timeseries: (0..2_000)
                .map(|i| prompb::TimeSeries {
                    labels: vec![
                        prompb::Label {
                            name: "__name__".into(),
                            value: "hostile_md".into(),
                        },
                        prompb::Label {
                            name: "i".into(),
                            value: format!("{i:0>90}"),
                        },
                    ],
                    samples: vec![prompb::Sample {
                        value: 1.0,
                        timestamp: t,
                    }],
                    ..Default::default()
                })
                .collect(),
            metadata: (0..100_000)
                .map(|i| prompb::MetricMetadata {
                    r#type: 1,
                    metric_family_name: "hostile_md".into(),
                    help: format!("h{i}"),
                    unit: String::new(),
                })
                .collect(),
        };
        out.push(Case {
            name: "rw1 100k metadata x 2k series",
            path: "/api/v1/write",
            headers: RW1.to_vec(),
            body: snappy(&req.encode_to_vec()),
        });
    }
    // Remote write 2.0: one series of 100 labels each naming a 1 MiB symbol, with a
    // histogram and an exemplar (each would copy the label set).
    {
        let mut symbols = vec![String::new(), "v".repeat(MIB)];
        let mut refs = Vec::new();
        for i in 0..100u32 {
            symbols.push(format!("l{i:03}"));
            refs.extend([symbols.len() as u32 - 1, 1]);
        }
        let req = v2::Request {
            symbols,
            timeseries: vec![v2::TimeSeries {
                labels_refs: refs,
                samples: vec![v2::Sample {
                    value: 1.0,
                    timestamp: now_ms() - 60_000,
                    start_timestamp: 0,
                }],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![],
                    value: 1.0,
                    timestamp: now_ms() - 60_000,
                }],
                ..Default::default()
            }],
        };
        out.push(Case {
            name: "rw2 100 refs to a 1 MiB symbol",
            path: "/api/v1/write",
            headers: RW2.to_vec(),
            body: snappy(&req.encode_to_vec()),
        });
    }
    // OTLP: 50,000 resources, each a gauge with two points a day apart (a day of
    // `target_info` samples each).
    {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::metrics::v1::{
            Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
            number_data_point,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let kv = |k: &str, v: String| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }),
            ..Default::default()
        };
        let now_ns = (now_ms() as u64) * 1_000_000;
        let point = |t: u64| NumberDataPoint {
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        };
        let rm = |i: usize| ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", format!("s{i}")), kv("x", "y".into())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![point(now_ns - 86_400_000_000_000), point(now_ns)],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: (0..50_000).map(rm).collect(),
        };
        out.push(Case {
            name: "otlp 50k resources, a day apart",
            path: "/api/v1/otlp/v1/metrics",
            headers: vec![("Content-Type", "application/x-protobuf")],
            body: req.encode_to_vec(),
        });
    }
    // Large but within the budget: accepted whole.
    {
        let b = batch(
            (0..100_000)
                .map(|i| {
                    (
                        labels(&[
                            ("__name__", "hostile_accepted"),
                            ("instance", &format!("host-{}:9100", i / 100)),
                            ("i", &i.to_string()),
                        ]),
                        vec![(now_ms() - 60_000, 1.0)],
                    )
                })
                .collect(),
        );
        out.push(Case {
            name: "rw1 100k distinct series",
            path: "/api/v1/write",
            headers: RW1.to_vec(),
            body: encode(&b),
        });
        out.push(Case {
            name: "rw2 100k distinct series",
            path: "/api/v1/write",
            headers: RW2.to_vec(),
            body: v2::encode(&b),
        });
    }
    // OTLP protobuf: empty resource metrics; the same gzip-bombed; OTLP/JSON empty objects,
    // and nested attribute values.
    // (OTLP bodies inflate to at most 32 MiB: these stay under it, to reach the budget.)
    out.push(Case {
        name: "otlp empty resource metrics",
        path: "/api/v1/otlp/v1/metrics",
        headers: vec![("Content-Type", "application/x-protobuf")],
        body: [0x0a, 0x00].repeat(30 * MIB / 2),
    });
    out.push(Case {
        name: "otlp gzip empty resource metrics",
        path: "/api/v1/otlp/v1/metrics",
        headers: vec![
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        body: gzip_repeat(&[0x0a, 0x00].repeat(MIB / 2), 30),
    });
    out.push(Case {
        name: "otlp gzip bomb (256 MiB inflated)",
        path: "/api/v1/otlp/v1/metrics",
        headers: vec![
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        body: gzip_repeat(&[0x0a, 0x00].repeat(MIB / 2), 256),
    });
    {
        let mut json = String::from(r#"{"resourceMetrics":["#);
        json.push_str(&vec!["{}"; 10 * MIB].join(","));
        json.push_str("]}");
        out.push(Case {
            name: "otlp json empty objects",
            path: "/api/v1/otlp/v1/metrics",
            headers: vec![("Content-Type", "application/json")],
            body: json.into_bytes(),
        });
        let depth = 100_000;
        let mut deep =
            String::from(r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"a","value":"#);
        deep.push_str(&r#"{"arrayValue":{"values":["#.repeat(depth));
        deep.push_str(&"]}}".repeat(depth));
        deep.push_str("}]}}]}");
        out.push(Case {
            name: "otlp json nested 100k deep",
            path: "/api/v1/otlp/v1/metrics",
            headers: vec![("Content-Type", "application/json")],
            body: deep.into_bytes(),
        });
    }
    // Text import: 1 MiB lines of many labels each (streamed: no body limit).
    {
        let mut line = String::from("hostile_import{");
        let mut i = 0;
        while line.len() < MIB - 64 {
            line.push_str(&format!("l{i}=\"v\","));
            i += 1;
        }
        line.push_str("} 1\n");
        out.push(Case {
            name: "import 60 x 1 MiB label lines",
            path: "/api/v1/import/prometheus",
            headers: vec![("Content-Type", "text/plain")],
            body: line.repeat(60).into_bytes(),
        });
    }
    // A form body of empty parameters (POST query; ~40× its size as pairs).
    out.push(Case {
        name: "query form 30M parameters",
        path: "/api/v1/query",
        headers: vec![("Content-Type", "application/x-www-form-urlencoded")],
        body: b"a&".repeat(30 * MIB),
    });
    // Remote read: empty queries (under --remote-read-max-bytes decompressed).
    out.push(Case {
        name: "remote read empty queries",
        path: "/api/v1/read",
        headers: vec![
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
        ],
        body: snappy(&[0x0a, 0x00].repeat(30 * MIB / 2)),
    });
    out
}

/// One acknowledged sample, queried back after the restart.
async fn control(c: &Client, url: &str, k: usize, t: i64) {
    let body = encode(&batch(vec![(
        labels(&[("__name__", "hostile_control"), ("k", &k.to_string())]),
        vec![(t, k as f64)],
    )]));
    let r = post_write(c, url, body).await;
    assert_eq!(r.status(), 204, "control write {k}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_stay_within_the_decode_budget() {
    let (_tmp, dir) = tempdir();
    let mut server = Server::start(&dir, &[], &[]).await;
    let pid = server.child.id();
    let c = Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let t = now_ms() - 120_000;
    let built = Instant::now();
    let cases = cases();
    println!("cases built in {:.1}s", built.elapsed().as_secs_f64());
    let mut report = vec![format!(
        "{:<34} {:>9} {:>7} {:>8} {:>12}",
        "case", "body", "status", "time", "peak growth"
    )];
    let mut failures = Vec::new();
    for (k, case) in cases.into_iter().enumerate() {
        control(&c, &server.url, k, t).await;
        let before = reset_peak(pid);
        let started = Instant::now();
        let mut req = c.post(format!("{}{}", server.url, case.path));
        for (h, v) in &case.headers {
            req = req.header(*h, *v);
        }
        let size = case.body.len();
        let status = match req.body(case.body).send().await {
            Ok(r) => {
                let s = r.status();
                let text = r.text().await.unwrap_or_default();
                eprintln!(
                    "{}: {s} {}",
                    case.name,
                    text.trim().chars().take(300).collect::<String>()
                );
                s
            }
            Err(e) => panic!(
                "{}: no answer ({e}); server alive: {:?}",
                case.name,
                server.child.try_wait()
            ),
        };
        let took = started.elapsed();
        let peak = status_kib(pid, "VmHWM:") * 1024;
        let growth = peak.saturating_sub(before);
        report.push(format!(
            "{:<34} {:>7}KB {:>7} {:>7.2}s {:>9}MiB",
            case.name,
            size / 1024,
            status.as_u16(),
            took.as_secs_f64(),
            growth / MIB
        ));
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "server died on {}",
            case.name
        );
        assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR,
            "{}: answered 500",
            case.name
        );
        if growth > MAX_GROWTH {
            failures.push(format!("{}: peak RSS grew {} MiB", case.name, growth / MIB));
        }
    }
    let n = report.len() - 1;
    control(&c, &server.url, n, t).await;
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        report.join("\n")
    );

    // Every acknowledged control sample survives a SIGKILL and a restart.
    server.kill();
    let restarted = Instant::now();
    let server = Server::start(&dir, &[], &[]).await;
    println!(
        "restart after SIGKILL: ready in {:.1}s",
        restarted.elapsed().as_secs_f64()
    );
    let r: serde_json::Value = c
        .get(format!("{}/api/v1/query", server.url))
        .query(&[
            ("query", "count(hostile_control)".to_string()),
            ("time", format!("{}", (t + 1000) as f64 / 1000.0)),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(
        r["data"]["result"][0]["value"][1],
        (n + 1).to_string(),
        "control samples after restart: {r}"
    );
}
