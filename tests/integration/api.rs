//! The Prometheus HTTP API over a real socket, and `promtool` (Debian package `prometheus`)
//! as a real client.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

async fn seed(url: &str, now: i64) -> i64 {
    let client = reqwest::Client::new();
    // Samples every 15 s over the last 10 minutes, offset from whole seconds.
    let t0 = (now / 1000) * 1000 - 600_000 + 337;
    let mut series = Vec::new();
    for (job, inst) in [("api", "a:1"), ("api", "b:1"), ("db", "c:1")] {
        let l = labels(&[
            ("__name__", "quiver_http_requests_total"),
            ("job", job),
            ("instance", inst),
        ]);
        series.push((
            l,
            (0..40)
                .map(|k| (t0 + k * 15_000, (k * 10) as f64))
                .collect(),
        ));
    }
    let l = labels(&[("__name__", "quiver_temp"), ("room", "x")]);
    series.push((l, (0..40).map(|k| (t0 + k * 15_000, 20.5)).collect()));
    assert_eq!(
        post_write(&client, url, encode(&batch(series)))
            .await
            .status(),
        204
    );
    t0
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_endpoints_answer_like_prometheus() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &[], &[]).await;
    let now = now_ms();
    let t0 = seed(&server.url, now).await;
    let last = t0 + 39 * 15_000;
    let at = last as f64 / 1000.0;

    // Instant query: vector, values as strings, timestamps as numbers with 3 decimals.
    let (s, v) = get_json(&format!(
        "{}/api/v1/query?query=sum%20by%20(job)(quiver_http_requests_total)&time={at}",
        server.url
    ))
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let mut res: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    res.sort();
    assert_eq!(
        res,
        vec![("api".into(), "780".into()), ("db".into(), "390".into())]
    );
    assert_eq!(v["data"]["result"][0]["value"][0].as_f64().unwrap(), at);
    assert!(v.get("warnings").is_none(), "no empty warnings key");

    // POST form, range query, matrix sorted by labels.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/v1/query_range", server.url))
        .form(&[
            ("query", "rate(quiver_http_requests_total[1m])"),
            ("start", &format!("{}", (t0 + 120_000) as f64 / 1000.0)),
            ("end", &format!("{at}")),
            ("step", "60"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(result.len(), 3);
    let insts: Vec<&str> = result
        .iter()
        .map(|r| r["metric"]["instance"].as_str().unwrap())
        .collect();
    assert_eq!(insts, vec!["a:1", "b:1", "c:1"]);
    assert!(
        result[0]["metric"].get("__name__").is_none(),
        "rate drops the metric name"
    );
    let first_val: f64 = result[0]["values"][0][1].as_str().unwrap().parse().unwrap();
    assert!((first_val - 10.0 / 15.0).abs() < 1e-9, "{first_val}");

    // `limit` truncates the series and says so.
    let (_, v) = get_json(&format!(
        "{}/api/v1/query?query=quiver_http_requests_total&time={at}&limit=2",
        server.url
    ))
    .await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["warnings"],
        serde_json::json!(["results truncated due to limit"])
    );

    // CORS preflight is answered.
    let r = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/query", server.url),
        )
        .header("Origin", "http://grafana.local")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("access-control-allow-origin"));

    // Scalars and strings.
    let (_, v) = get_json(&format!("{}/api/v1/query?query=1%2B1&time=4", server.url)).await;
    assert_eq!(
        v["data"],
        serde_json::json!({"resultType": "scalar", "result": [4, "2"]})
    );
    let (_, v) = get_json(&format!(
        "{}/api/v1/query?query=%22hello%22&time=4.5",
        server.url
    ))
    .await;
    assert_eq!(
        v["data"],
        serde_json::json!({"resultType": "string", "result": [4.5, "hello"]})
    );

    // Errors in the envelope with Prometheus's status codes.
    let (s, v) = get_json(&format!("{}/api/v1/query?query=sum(", server.url)).await;
    assert_eq!(s, 400);
    assert_eq!(v["errorType"], "bad_data");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid parameter \"query\": "),
        "{v}"
    );
    // promql-parser panics on this one; the server answers 400 and keeps serving.
    let (s, v) = get_json(&format!(
        "{}/api/v1/query?query=up%20offset%20NaN",
        server.url
    ))
    .await;
    assert_eq!((s, v["errorType"].as_str()), (400, Some("bad_data")), "{v}");
    // A range query and its explanation (the query page's Explain) meet the same bounds.
    for path in ["query_range", "explain"] {
        let (s, v) = get_json(&format!(
            "{}/api/v1/{path}?query=up&start=10&end=5&step=1",
            server.url
        ))
        .await;
        assert_eq!(
            (s, v["errorType"].as_str()),
            (400, Some("bad_data")),
            "{path}"
        );
        let (s, v) = get_json(&format!(
            "{}/api/v1/{path}?query=up&start=0&end=100000&step=1",
            server.url
        ))
        .await;
        assert_eq!(s, 400, "{path}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("exceeded maximum resolution of 11,000 points"),
            "{path}"
        );
        let (s, _) = get_json(&format!(
            "{}/api/v1/{path}?query=up&start=0&end=10&step=0",
            server.url
        ))
        .await;
        assert_eq!(s, 400, "{path}");
    }
    let (s, v) = get_json(&format!("{}/api/v1/query?query=quiver_temp%20%2B%20on()%20group_left%20quiver_http_requests_total&time={at}", server.url)).await;
    assert_eq!(
        (s, v["errorType"].as_str()),
        (422, Some("execution")),
        "{v}"
    );
    let r = client
        .post(format!("{}/api/v1/label/job/values", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = client
        .get(format!("{}/api/v1/nope", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // parse_query / format_query.
    let (s, v) = get_json(&format!(
        "{}/api/v1/parse_query?query=sum%20by%20(job)(rate(up%5B5m%5D))",
        server.url
    ))
    .await;
    assert_eq!(
        (s, v["data"]["type"].as_str()),
        (200, Some("aggregation")),
        "{v}"
    );
    assert_eq!(v["data"]["expr"]["func"]["name"], "rate");
    let (s, v) = get_json(&format!(
        "{}/api/v1/format_query?query=sum%20by(job)(up)",
        server.url
    ))
    .await;
    assert_eq!((s, v["data"].as_str()), (200, Some("sum by (job) (up)")));

    // Metadata from the index.
    let (_, v) = get_json(&format!("{}/api/v1/labels", server.url)).await;
    assert_eq!(
        v["data"],
        serde_json::json!(["__name__", "instance", "job", "room"])
    );
    let (_, v) = get_json(&format!("{}/api/v1/label/job/values", server.url)).await;
    assert_eq!(v["data"], serde_json::json!(["api", "db"]));
    let (_, v) = get_json(&format!(
        "{}/api/v1/label/__name__/values?match[]=%7Broom%3D%22x%22%7D",
        server.url
    ))
    .await;
    assert_eq!(v["data"], serde_json::json!(["quiver_temp"]));
    let (_, v) = get_json(&format!(
        "{}/api/v1/series?match[]=quiver_http_requests_total%7Bjob%3D%22api%22%7D&limit=1",
        server.url
    ))
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["warnings"],
        serde_json::json!(["results truncated due to limit"])
    );
    let (s, _) = get_json(&format!("{}/api/v1/series", server.url)).await;
    assert_eq!(s, 400);
    let (s, v) = get_json(&format!("{}/api/v1/status/buildinfo", server.url)).await;
    assert_eq!(s, 200);
    assert!(v["data"]["version"].is_string());
    assert!(v["data"].get("features").is_none());

    // gzip when asked, for answers of at least 1 KiB (`api::COMPRESS_MIN_BYTES`); the
    // labels answer is smaller and goes as it is.
    let get = |url: String, gzip: bool| {
        let client = client.clone();
        async move {
            let mut req = client.get(url);
            if gzip {
                req = req.header("Accept-Encoding", "gzip");
            }
            let r = req.send().await.unwrap();
            let encoding = r
                .headers()
                .get("content-encoding")
                .map(|h| h.to_str().unwrap().to_string());
            (encoding, r.bytes().await.unwrap().to_vec())
        }
    };
    let (encoding, small) = get(format!("{}/api/v1/labels", server.url), true).await;
    assert_eq!(encoding, None);
    assert!(small.len() < quiver::api::COMPRESS_MIN_BYTES as usize);
    let range = format!(
        "{}/api/v1/query_range?query=quiver_http_requests_total&start={}&end={at}&step=15",
        server.url,
        t0 as f64 / 1000.0
    );
    let (encoding, plain) = get(range.clone(), false).await;
    assert_eq!(encoding, None);
    assert!(
        plain.len() >= quiver::api::COMPRESS_MIN_BYTES as usize,
        "{}",
        plain.len()
    );
    let (encoding, zipped) = get(range, true).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&zipped[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, plain);
    assert!(zipped.len() < plain.len());
}

/// A range answer of several pieces (`api::json::PIECE`) is sent as it is written
/// (chunked, no length) and is still one envelope: every series with every point, its
/// annotations after the data; gzip too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_range_answers_are_sent_in_pieces() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &[], &[]).await;
    let t0 = seed(&server.url, now_ms()).await;
    let last = t0 + 39 * 15_000;
    // 10,000 steps of 60 ms: each of the 3 counters (with its 5 m lookback) ~250 KB.
    let start = last - 600_000;
    let url = format!(
        "{}/api/v1/query_range?query={}&start={}&end={}&step=0.06",
        server.url,
        "quiver_http_requests_total%20or%20rate(quiver_temp%5B5m%5D)",
        start as f64 / 1000.0,
        (start + 599_940) as f64 / 1000.0,
    );
    let client = reqwest::Client::new();
    for gzip in [false, true] {
        let mut req = client.get(&url);
        if gzip {
            req = req.header("Accept-Encoding", "gzip");
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("content-length").is_none(),
            "{:?}",
            r.headers()
        );
        assert_eq!(
            r.headers()
                .get("content-encoding")
                .map(|h| h.to_str().unwrap().to_string()),
            gzip.then(|| "gzip".to_string())
        );
        let body = r.bytes().await.unwrap();
        let text = if gzip {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
                .unwrap();
            out
        } else {
            String::from_utf8(body.to_vec()).unwrap()
        };
        assert!(text.len() > 3 * quiver::api::json::PIECE, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "success");
        let result = v["data"]["result"].as_array().unwrap();
        let names: Vec<String> = result.iter().map(|r| r["metric"].to_string()).collect();
        assert_eq!(result.len(), 4, "{names:?}");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for r in &result[..3] {
            // From the first sample on, every step within the lookback of the last.
            let n = r["values"].as_array().unwrap().len();
            assert!((9_000..=10_000).contains(&n), "{n}");
        }
        let infos = v["infos"].as_array().unwrap();
        assert!(
            infos[0].as_str().unwrap().contains("quiver_temp"),
            "{infos:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_is_a_happy_client() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "promtool is required in CI");
        eprintln!(
            "SKIPPED promtool_is_a_happy_client: promtool not installed (apt-get install prometheus)"
        );
        return;
    }
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &[], &[]).await;
    let t0 = seed(&server.url, now_ms()).await;
    let last = (t0 + 39 * 15_000) as f64 / 1000.0;
    let promtool = |args: &[&str]| {
        let out = Command::new("promtool")
            .arg("query")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let at = format!("{last}");
    let out = promtool(&[
        "instant",
        "--time",
        &at,
        &server.url,
        "sum by (job) (quiver_http_requests_total)",
    ]);
    assert!(out.contains("{job=\"api\"} => 780 @["), "{out}");
    assert!(out.contains("{job=\"db\"} => 390 @["), "{out}");
    let start = format!("{}", last - 120.0);
    let out = promtool(&[
        "range",
        "--start",
        &start,
        "--end",
        &at,
        "--step",
        "1m",
        &server.url,
        "quiver_temp",
    ]);
    assert!(out.contains("quiver_temp{room=\"x\"} =>"), "{out}");
    assert_eq!(out.matches("20.5 @[").count(), 3, "{out}");
    let out = promtool(&[
        "series",
        "--match",
        "quiver_http_requests_total{job=\"db\"}",
        &server.url,
    ]);
    assert_eq!(
        out.trim(),
        "{__name__=\"quiver_http_requests_total\", instance=\"c:1\", job=\"db\"}"
    );
    let out = promtool(&["labels", &server.url, "job"]);
    assert_eq!(out.trim(), "api\ndb");
}
