//! Acceptance (issue 23, item 2): metric metadata is scoped like series. With the example
//! auth config, a reader with enforced matchers (`grafana`: `{namespace=~"team-a-.*"}`)
//! never sees help, unit or type written only by series it cannot see, sees what its
//! visible series carried, cannot have that changed by a writer of hidden series, and sees
//! a classic histogram family's metadata through its `_bucket`/`_sum`/`_count` series —
//! before and after a restart.

use prost::Message;
use quiver::ingest::prompb;
use quiver::ingest::remote_write_v2::{self as v2, Metadata, Request, Sample, TimeSeries};
use reqwest::Client;
use serde_json::Value;

use crate::support::*;

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/quiver-auth.example.toml"
);
const TENANT: &str = "team-a";

type Pairs<'a> = &'a [(&'a str, &'a str)];

/// A remote write 2.0 request: each series `(labels, help, unit)` carries its own metadata.
fn v2_request(series: &[(Pairs, &str, &str)], t: i64) -> Vec<u8> {
    let mut symbols = vec![String::new()];
    let mut sym = |s: &str| -> u32 {
        match symbols.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                symbols.push(s.to_string());
                (symbols.len() - 1) as u32
            }
        }
    };
    let timeseries = series
        .iter()
        .map(|(labels, help, unit)| {
            let mut sorted = labels.to_vec();
            sorted.sort();
            TimeSeries {
                labels_refs: sorted.iter().flat_map(|(k, v)| [sym(k), sym(v)]).collect(),
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: t,
                    start_timestamp: 0,
                }],
                metadata: Some(Metadata {
                    r#type: prompb::MetricType::Gauge as i32,
                    help_ref: sym(help),
                    unit_ref: sym(unit),
                }),
                ..Default::default()
            }
        })
        .collect();
    let req = Request {
        symbols,
        timeseries,
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

/// A remote write 1.0 request: series, and metadata naming a family.
fn v1_request(
    series: &[&[(&str, &str)]],
    md: &[(&str, prompb::MetricType, &str)],
    t: i64,
) -> Vec<u8> {
    let req = prompb::WriteRequest {
        timeseries: series
            .iter()
            .map(|labels| prompb::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| prompb::Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: vec![prompb::Sample {
                    value: 1.0,
                    timestamp: t,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: md
            .iter()
            .map(|(family, ty, help)| prompb::MetricMetadata {
                r#type: *ty as i32,
                metric_family_name: family.to_string(),
                help: help.to_string(),
                unit: String::new(),
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

async fn write(c: &Client, url: &str, body: Vec<u8>, v2: bool) {
    let ct = if v2 {
        format!("application/x-protobuf;proto={}", v2::PROTO)
    } else {
        "application/x-protobuf".to_string()
    };
    let r = c
        .post(format!("{url}/api/v1/write"))
        .basic_auth("remote-write", Some("remote-write-pass"))
        .header("X-Scope-OrgID", TENANT)
        .header("Content-Type", ct)
        .header("Content-Encoding", "snappy")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
}

async fn metadata(c: &Client, url: &str, who: (&str, &str)) -> Value {
    let r = c
        .get(format!("{url}/api/v1/metadata"))
        .basic_auth(who.0, Some(who.1))
        .header("X-Scope-OrgID", TENANT)
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    v["data"].clone()
}

fn helps(data: &Value, family: &str) -> Vec<String> {
    data[family]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|m| {
                    format!(
                        "{}|{}|{}",
                        m["type"].as_str().unwrap(),
                        m["help"].as_str().unwrap(),
                        m["unit"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

const GRAFANA: (&str, &str) = ("grafana", "grafana-pass");
const ADMIN: (&str, &str) = ("admin", "admin-pass");

async fn check(c: &Client, url: &str, when: &str) {
    let seen = metadata(c, url, GRAFANA).await;
    // The visible series' metadata, and nothing the hidden ones wrote.
    assert_eq!(
        helps(&seen, "scoped_gauge"),
        vec!["gauge|visible help|bytes"],
        "{when}: {seen}"
    );
    assert!(seen.get("hidden_only").is_none(), "{when}: {seen}");
    let text = seen.to_string();
    for secret in ["hidden", "secret_unit", "overwritten"] {
        assert!(!text.contains(secret), "{when}: {secret} leaked: {text}");
    }
    // A classic histogram family through its visible series.
    assert_eq!(
        helps(&seen, "req_seconds"),
        vec!["histogram|request latency|"],
        "{when}: {seen}"
    );
    // The admin (no enforced matchers) sees every variant.
    let all = metadata(c, url, ADMIN).await;
    assert_eq!(
        helps(&all, "hidden_only"),
        vec!["gauge|hidden only|"],
        "{when}: {all}"
    );
    let scoped = helps(&all, "scoped_gauge");
    assert!(
        scoped.contains(&"gauge|visible help|bytes".to_string()),
        "{when}: {all}"
    );
    // The hidden series' latest text (its earlier "hidden help" and "overwritten" are gone).
    assert!(
        scoped.iter().any(|h| h.contains("rw1 hidden")),
        "{when}: {all}"
    );
    assert!(
        !scoped.iter().any(|h| h.contains("overwritten")),
        "{when}: {all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_scoped_like_series() {
    let (_tmp, dir) = tempdir();
    let mut server = Server::start(&dir, &["--config", CONFIG], &[]).await;
    let c = Client::new();
    let t = now_ms() - 60_000;
    let visible: &[(&str, &str)] = &[("__name__", "scoped_gauge"), ("namespace", "team-a-web")];
    let hidden: &[(&str, &str)] = &[("__name__", "scoped_gauge"), ("namespace", "team-b")];
    let hidden_only: &[(&str, &str)] = &[("__name__", "hidden_only"), ("namespace", "team-b")];
    // Visible and hidden series of one family, each with its own metadata (2.0).
    write(
        &c,
        &server.url,
        v2_request(
            &[
                (visible, "visible help", "bytes"),
                (hidden, "hidden help", "secret_unit"),
                (hidden_only, "hidden only", ""),
            ],
            t,
        ),
        true,
    )
    .await;
    // The writer of the hidden series tries to replace the family's text: 2.0, then 1.0
    // with metadata beside its hidden series, then 1.0 metadata on its own.
    write(
        &c,
        &server.url,
        v2_request(&[(hidden, "overwritten", "")], t + 1000),
        true,
    )
    .await;
    write(
        &c,
        &server.url,
        v1_request(
            &[hidden],
            &[("scoped_gauge", prompb::MetricType::Gauge, "rw1 hidden")],
            t + 2000,
        ),
        false,
    )
    .await;
    write(
        &c,
        &server.url,
        v1_request(
            &[],
            &[("scoped_gauge", prompb::MetricType::Gauge, "rw1 hidden")],
            t + 2000,
        ),
        false,
    )
    .await;
    // A classic histogram with visible series, metadata for the family (1.0, as a scrape).
    let bucket: &[(&str, &str)] = &[
        ("__name__", "req_seconds_bucket"),
        ("le", "+Inf"),
        ("namespace", "team-a-web"),
    ];
    let sum: &[(&str, &str)] = &[("__name__", "req_seconds_sum"), ("namespace", "team-a-web")];
    let count: &[(&str, &str)] = &[
        ("__name__", "req_seconds_count"),
        ("namespace", "team-a-web"),
    ];
    write(
        &c,
        &server.url,
        v1_request(
            &[bucket, sum, count],
            &[(
                "req_seconds",
                prompb::MetricType::Histogram,
                "request latency",
            )],
            t,
        ),
        false,
    )
    .await;
    check(&c, &server.url, "before restart").await;

    // Through the WAL (SIGKILL), then through the snapshot (a graceful stop flushes).
    server.kill();
    let mut server = Server::start(
        &dir,
        &["--config", CONFIG, "--head-flush-interval", "1s"],
        &[],
    )
    .await;
    check(&c, &server.url, "after WAL replay").await;
    let snapshot = dir
        .join("tenants")
        .join(TENANT)
        .join("metadata-scoped.json");
    wait_for("the metadata snapshot", 60, || snapshot.exists()).await;
    server.stop();
    let server = Server::start(&dir, &["--config", CONFIG], &[]).await;
    check(&c, &server.url, "after a flush and restart").await;
}
