//! Acceptance (issue 15): the OpenTelemetry Python SDK (PyPI `opentelemetry-sdk`,
//! `opentelemetry-exporter-otlp-proto-http`) exports a counter, a gauge, an explicit-bucket
//! histogram and an exponential histogram to Quiver's OTLP endpoint, plain and gzip; each
//! is queryable under its Prometheus name with the values the SDK sent (the script prints
//! them), and the resource's attributes reach `target_info`. OTLP/JSON and refusals too.

use std::process::Command;

use crate::support::*;

/// The Python with the SDK: `QUIVER_OTEL_PYTHON`, or the venv `.ci/run` installs.
fn python() -> Option<String> {
    let p = std::env::var("QUIVER_OTEL_PYTHON")
        .unwrap_or_else(|_| "/var/cache/quiver-otel-venv/bin/python".into());
    let ok = Command::new(&p)
        .args(["-c", "import opentelemetry.exporter.otlp.proto.http"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

fn send(py: &str, url: &str, gzip: bool) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/send_metrics.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(url);
    if gzip {
        cmd.arg("--gzip");
    }
    let out = cmd.output().expect("run the OpenTelemetry SDK script");
    assert!(
        out.status.success(),
        "SDK export failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// The selector of exactly these labels.
fn selector(name: &str, labels: &serde_json::Map<String, serde_json::Value>) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap()))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

async fn instant(url: &str, q: &str, t_ms: i64) -> Vec<serde_json::Value> {
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/query"))
        .query(&[
            ("query", q.to_string()),
            ("time", format!("{}", t_ms as f64 / 1000.0)),
        ])
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().unwrap().clone()
}

async fn check(url: &str, sent: &serde_json::Value) {
    for s in sent["prometheus"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let labels = s["labels"].as_object().unwrap();
        let t = s["timestamp_ms"]
            .as_i64()
            .expect("one collection timestamp");
        let q = selector(name, labels);
        let got = instant(url, &q, t).await;
        assert_eq!(got.len(), 1, "{q}: {got:?}");
        // Exactly the labels the translation names (no more).
        let mut want_labels = labels.clone();
        want_labels.insert("__name__".into(), name.into());
        assert_eq!(got[0]["metric"].as_object().unwrap(), &want_labels, "{q}");
        if let Some(h) = s.get("native_histogram") {
            let g = &got[0]["histogram"][1];
            assert_eq!(g["count"], h["count"].to_string(), "{q}: {g}");
            let sum: f64 = g["sum"].as_str().unwrap().parse().unwrap();
            assert!((sum - h["sum"].as_f64().unwrap()).abs() < 1e-9, "{q}: {g}");
            // Buckets in order: the zero bucket, then the positive ones by index.
            let counts: Vec<String> = g["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b[3].as_str().unwrap().to_string())
                .collect();
            let mut want = vec![h["zero_count"].to_string()];
            want.extend(
                h["positive_bucket_counts_by_index"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.to_string()),
            );
            assert_eq!(counts, want, "{q}: {g}");
        } else {
            let v: f64 = got[0]["value"][1].as_str().unwrap().parse().unwrap();
            assert!(
                (v - s["value"].as_f64().unwrap()).abs() < 1e-9,
                "{q}: {v} vs {}",
                s["value"]
            );
        }
    }
    let ti = &sent["target_info"];
    let labels = ti["labels"].as_object().unwrap();
    for t in ti["timestamps_ms"].as_array().unwrap() {
        let got = instant(url, &selector("target_info", labels), t.as_i64().unwrap()).await;
        assert_eq!(got.len(), 1, "target_info {labels:?}: {got:?}");
        assert_eq!(got[0]["value"][1], "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_sdk_exports_and_every_instrument_is_queryable() {
    let Some(py) = python() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have the OpenTelemetry SDK (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED: no Python with opentelemetry-exporter-otlp-proto-http (set QUIVER_OTEL_PYTHON)"
        );
        return;
    };
    for gzip in [false, true] {
        let (_tmp, dir) = tempdir();
        let server = Server::start(&dir, &[], &[]).await;
        let sent = send(&py, &server.url, gzip);
        assert_eq!(sent["exports"], 1);
        assert_eq!(sent["compression"], if gzip { "gzip" } else { "none" });
        assert_eq!(
            sent["resource_attributes"]["deployment.environment"], "ci",
            "{sent}"
        );
        check(&server.url, &sent).await;
        // The metadata API has the families with their OTLP descriptions and units.
        let md: serde_json::Value = serde_json::from_str(
            &reqwest::get(format!("{}/api/v1/metadata", server.url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            md["data"]["test_latency_seconds"][0]["type"], "histogram",
            "{md}"
        );
        assert_eq!(
            md["data"]["test_latency_seconds"][0]["unit"], "seconds",
            "{md}"
        );
        assert_eq!(
            md["data"]["test_requests_total"][0]["type"], "counter",
            "{md}"
        );
        assert_eq!(
            md["data"]["test_size_bytes"][0]["help"], "Test size",
            "{md}"
        );
    }
}

/// OTLP/JSON as the OTLP specification encodes it (camelCase, int64 as strings, hex trace
/// ids), a promoted resource attribute, and the refusals: delta temporality, an unknown
/// content type and a body that is not OTLP are 4xx and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_promotion_and_refusals() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(
        &dir,
        &[
            "--otlp-promote-resource-attributes",
            "deployment.environment",
        ],
        &[],
    )
    .await;
    let c = reqwest::Client::new();
    let t_ns = (now_ms() - 60_000) as u128 * 1_000_000;
    let body = |temporality: u8| {
        format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[
                {{"key":"service.name","value":{{"stringValue":"checkout"}}}},
                {{"key":"service.namespace","value":{{"stringValue":"shop"}}}},
                {{"key":"deployment.environment","value":{{"stringValue":"prod"}}}}]}},
              "scopeMetrics":[{{"scope":{{"name":"s"}},"metrics":[{{
                "name":"orders","unit":"{{order}}","sum":{{"aggregationTemporality":{temporality},"isMonotonic":true,
                "dataPoints":[{{"timeUnixNano":"{t_ns}","asInt":"42",
                  "attributes":[{{"key":"payment.method","value":{{"stringValue":"card"}}}}],
                  "exemplars":[{{"timeUnixNano":"{t_ns}","asDouble":1,"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}}]}}]}}}}]}}]}}]}}"#
        )
    };
    let post = |ct: &'static str, body: String| {
        c.post(format!("{}/api/v1/otlp/v1/metrics", server.url))
            .header("Content-Type", ct)
            .body(body)
            .send()
    };
    let r = post("application/json", body(2)).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let t = (t_ns / 1_000_000) as i64;
    let got = instant(&server.url, "orders_total", t).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["metric"],
        serde_json::json!({"__name__": "orders_total", "job": "shop/checkout",
            "payment_method": "card", "deployment_environment": "prod"})
    );
    assert_eq!(got[0]["value"][1], "42");
    let ex: serde_json::Value = c
        .get(format!("{}/api/v1/query_exemplars", server.url))
        .query(&[
            ("query", "orders_total".to_string()),
            ("start", format!("{}", (t - 1000) as f64 / 1000.0)),
            ("end", format!("{}", (t + 1000) as f64 / 1000.0)),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(
        ex["data"][0]["exemplars"][0]["labels"],
        serde_json::json!({"span_id": "eee19b7ec3c1b174", "trace_id": "5b8efff798038103d269b633813fc60c"}),
        "{ex}"
    );
    let target: Vec<_> = instant(&server.url, "target_info", t).await;
    assert_eq!(
        target[0]["metric"],
        serde_json::json!({"__name__": "target_info", "job": "shop/checkout", "deployment_environment": "prod"})
    );

    // Delta temporality (1) is refused whole, and so is what is not OTLP.
    for (ct, b, status) in [
        (
            "application/json",
            body(1).replace("orders", "refused"),
            400,
        ),
        ("text/plain", body(2).replace("orders", "refused"), 415),
        (
            "application/x-protobuf",
            "not protobuf at all".to_string(),
            400,
        ),
    ] {
        let r = post(ct, b).await.unwrap();
        assert_eq!(r.status(), status, "{ct}: {:?}", r.text().await);
    }
    assert!(instant(&server.url, "refused_total", t).await.is_empty());
}
