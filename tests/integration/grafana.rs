//! Grafana's Prometheus data source contract: the requests it sends (health check, form
//! POSTed queries with float-second times, label browser, variable queries, series fallback,
//! metadata, rules, exemplar probe with millisecond times) and what it parses from the answers.

use serde_json::Value;

use crate::support::*;

async fn json(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|h| h.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    (s, serde_json::from_str(&r.text().await.unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_requests_get_what_grafana_parses() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &[], &[]).await;
    let c = reqwest::Client::new();
    let now = now_ms();
    let t0 = now - 600_000 + 337;
    let series = vec![
        (
            labels(&[
                ("__name__", "grafana_req_total"),
                ("job", "web"),
                ("code", "200"),
            ]),
            (0..40).map(|k| (t0 + k * 15_000, k as f64)).collect(),
        ),
        (
            labels(&[
                ("__name__", "grafana_req_total"),
                ("job", "web"),
                ("code", "500"),
            ]),
            (0..40).map(|k| (t0 + k * 15_000, 1.0)).collect(),
        ),
    ];
    assert_eq!(
        post_write(&c, &server.url, encode(&batch(series)))
            .await
            .status(),
        204
    );
    let u = |p: &str| format!("{}{p}", server.url);

    // Health check: instant `1+1` at time=4 (POST form), then buildinfo.
    let (s, v) = json(
        c.post(u("/api/v1/query"))
            .form(&[("query", "1+1"), ("time", "4")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"], serde_json::json!([4, "2"]));
    let (s, v) = json(c.get(u("/api/v1/status/buildinfo")).send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert!(v["data"]["version"].as_str().is_some_and(|x| !x.is_empty()));
    assert!(
        v["data"].get("features").is_none(),
        "a features map makes Grafana assume Mimir"
    );

    // Panel queries: POST form with float-second times and step.
    let (start, end) = ((t0 as f64) / 1000.0 + 60.0, now as f64 / 1000.0);
    let (s, v) = json(
        c.post(u("/api/v1/query_range"))
            .form(&[
                ("query", "sum by (code) (rate(grafana_req_total[1m]))"),
                ("start", &format!("{start:.3}")),
                ("end", &format!("{end:.3}")),
                ("step", "15"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    for series in v["data"]["result"].as_array().unwrap() {
        assert!(series["metric"].is_object());
        for p in series["values"].as_array().unwrap() {
            assert!(p[0].is_number() && p[1].is_string(), "{p}");
        }
    }
    let (s, v) = json(
        c.post(u("/api/v1/query"))
            .form(&[
                ("query", "grafana_req_total"),
                ("time", &format!("{end:.3}")),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["data"]["result"].as_array().unwrap().len()), (200, 2));

    // Label browser and variables: integer-second start/end, limit=40000, optional match[].
    let (is, ie) = ((now / 1000 - 3600).to_string(), (now / 1000).to_string());
    let q = [
        ("start", is.as_str()),
        ("end", ie.as_str()),
        ("limit", "40000"),
    ];
    let (_, v) = json(c.get(u("/api/v1/labels")).query(&q).send().await.unwrap()).await;
    assert_eq!(v["data"], serde_json::json!(["__name__", "code", "job"]));
    let (_, v) = json(
        c.get(u("/api/v1/label/code/values"))
            .query(&q)
            .query(&[("match[]", "grafana_req_total{job=\"web\"}")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["data"], serde_json::json!(["200", "500"]));
    let (_, v) = json(
        c.get(u("/api/v1/label/__name__/values"))
            .query(&q)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["data"], serde_json::json!(["grafana_req_total"]));
    let (_, v) = json(
        c.get(u("/api/v1/series"))
            .query(&q)
            .query(&[("match[]", "{__name__!=\"\"}")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let (_, v) = json(
        c.post(u("/api/v1/labels"))
            .form(&[("start", is.as_str()), ("end", ie.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["status"], "success");

    // Metadata, rules, exemplars (start/end in milliseconds must not be rejected).
    let (s, v) = json(c.get(u("/api/v1/metadata")).send().await.unwrap()).await;
    assert_eq!((s, v["data"].is_object()), (200, true));
    let (s, v) = json(c.get(u("/api/v1/rules")).send().await.unwrap()).await;
    assert_eq!((s, &v["data"]["groups"]), (200, &serde_json::json!([])));
    let (ms_s, ms_e) = ((now - 3_600_000).to_string(), now.to_string());
    let (s, v) = json(
        c.get(u("/api/v1/query_exemplars"))
            .query(&[("query", "test"), ("start", &ms_s), ("end", &ms_e)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["data"]), (200, &serde_json::json!([])));

    // Exemplars as a latency panel shows them: Grafana asks for the panel's expression over
    // the dashboard range in seconds, and reads `seriesLabels` and each exemplar's labels,
    // value (a string) and timestamp (seconds).
    use prost::Message;
    use quiver::ingest::prompb;
    let label = |n: &str, v: &str| prompb::Label {
        name: n.into(),
        value: v.into(),
    };
    let with_exemplars = prompb::WriteRequest {
        timeseries: vec![prompb::TimeSeries {
            labels: vec![
                label("__name__", "grafana_req_total"),
                label("job", "web"),
                label("code", "200"),
            ],
            exemplars: vec![prompb::Exemplar {
                labels: vec![label("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
                value: 0.042,
                timestamp: t0 + 20 * 15_000 + 123,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&with_exemplars.encode_to_vec())
        .unwrap();
    assert_eq!(post_write(&c, &server.url, body).await.status(), 204);
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    // Seconds as Prometheus writes them: no fraction when the time is a whole second (the
    // clock makes that one run in a thousand), so compare as the same JSON number.
    let exemplar_ms = t0 + 20 * 15_000 + 123;
    let exemplar_ts: serde_json::Value = if exemplar_ms % 1000 == 0 {
        serde_json::json!(exemplar_ms / 1000)
    } else {
        serde_json::json!(exemplar_ms as f64 / 1000.0)
    };
    let (s, v) = json(
        c.get(u("/api/v1/query_exemplars"))
            .query(&[
                (
                    "query",
                    "sum by (job) (rate(grafana_req_total{job=\"web\"}[5m]))".to_string(),
                ),
                ("start", secs(now - 3_600_000)),
                ("end", secs(now)),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["data"],
        serde_json::json!([{
            "seriesLabels": {"__name__": "grafana_req_total", "code": "200", "job": "web"},
            "exemplars": [{
                "labels": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
                "value": "0.042",
                "timestamp": exemplar_ts,
            }],
        }]),
        "{v}"
    );
}
