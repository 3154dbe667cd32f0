//! Acceptance (issues 25 and 26): a cluster over one bucket — 2 distributors, 3 writers,
//! 3 queriers and a compactor as real processes on 127.0.0.1 with moto_server as S3 —
//! answers like one Quiver process loaded with the same data, through every querier, each
//! query's plan run across the three queriers.

use std::time::Duration;

use serde_json::Value;

use crate::cluster_kit::*;
use crate::support::*;

/// Equal JSON, except that sample values (strings that parse as floats) may differ in
/// the last bits (sums over series in another order) and result lists are compared as
/// sets (sorted).
pub fn same(a: &Value, b: &Value) -> Result<(), String> {
    match (a, b) {
        (Value::String(x), Value::String(y)) if x != y => {
            match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(p), Ok(q))
                    if (p - q).abs() <= 1e-9 * p.abs().max(q.abs())
                        || (p.is_nan() && q.is_nan()) =>
                {
                    Ok(())
                }
                _ => Err(format!("{x:?} != {y:?}")),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{} items != {} items", x.len(), y.len()));
            }
            let key = |v: &Value| match v {
                Value::Object(o) if o.contains_key("metric") => o["metric"].to_string(),
                Value::Object(o) if o.contains_key("labels") => o["labels"].to_string(),
                other => other.to_string(),
            };
            let (mut x, mut y) = (x.clone(), y.clone());
            // Sample pairs keep their order; lists of series or names are sets.
            if !x.iter().all(|v| v.is_array() || v.is_number()) {
                x.sort_by_key(key);
                y.sort_by_key(key);
            }
            for (i, (p, q)) in x.iter().zip(&y).enumerate() {
                same(p, q).map_err(|e| format!("[{i}] {e}"))?;
            }
            Ok(())
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => same(p, q).map_err(|e| format!(".{k}{e}"))?,
                    _ => return Err(format!(".{k} only on one side")),
                }
            }
            Ok(())
        }
        (Value::Number(x), Value::Number(y)) => {
            let (p, q) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            if (p - q).abs() <= 1e-9 * p.abs().max(q.abs()) {
                Ok(())
            } else {
                Err(format!("{x} != {y}"))
            }
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{a} != {b}")),
    }
}

pub async fn get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    params: &[(&str, String)],
) -> Value {
    let r = client
        .get(format!("{base}{path}"))
        .query(params)
        .send()
        .await
        .unwrap();
    let code = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(code, 200, "{base}{path} {params:?}: {body}");
    body
}

fn peer_queries() -> Vec<(String, String)> {
    std::fs::read_to_string(format!("{ROOT}/benches/peer/queries.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.splitn(3, '|').collect();
            (parts[0].trim().to_string(), parts[2].trim().to_string())
        })
        .collect()
}

/// A SQL aggregate over the join of samples and series, by labels (series ids differ
/// between processes).
const JOINED: &str = "SELECT se.labels['job'] AS job, se.labels['instance'] AS instance, \
     count(*) AS n, sum(s.value) AS total, max(s.timestamp) AS last \
     FROM samples s JOIN series se ON s.series_id = se.series_id GROUP BY 1, 2";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_answers_like_one_process() {
    if !moto_available("a_cluster_answers_like_one_process") {
        return;
    }
    let (_t, tmp) = tempdir();
    let client = reqwest::Client::new();
    // Flushes every few seconds: the answers come from blocks and mirrored heads together.
    let flags = [
        "--head-flush-interval",
        "4s",
        "--cluster-poll-interval",
        "200ms",
        "--multi-tenancy",
        // Every plan runs across the queriers, however small.
        "--cluster-distribute-min-samples",
        "0",
    ];
    let cluster = Cluster::up(
        &tmp.join("cluster"),
        &["--writers", "3", "--distributors", "2", "--queriers", "3"],
        &flags,
    );
    let single_dir = tmp.join("single");
    let single = Server::start(&single_dir, &[], &[]).await;

    let batches = peer_dataset(&tmp, 400, 2.0, 20_000);
    assert!(batches.len() > 5, "the dataset spans several requests");
    let writers = cluster.list("WRITE_URLS");
    assert_eq!(writers.len(), 2);
    let mut end = 0;
    for (i, b) in batches.iter().enumerate() {
        let body = encode(b);
        assert_eq!(
            post_write(&client, &single.url, body.clone())
                .await
                .status(),
            204
        );
        send_retrying(&client, &writers[i % 2..], &body, Duration::from_secs(60)).await;
        end = end.max(
            b.series
                .iter()
                .flat_map(|s| s.samples.iter().map(|(t, _)| *t))
                .max()
                .unwrap_or(0),
        );
    }
    let end_s = (end / 1000 + 1).to_string();
    let start_s = (end / 1000 - 2 * 3600 + 120).to_string();

    // Queriers follow the manifest and the writers' WAL: wait until each holds every sample,
    // and until some of them come from blocks.
    let total = [("query", "SELECT count(*) AS n FROM samples".to_string())];
    let want = get(&client, &single.url, "/api/v1/sql", &total).await;
    for q in cluster.list("QUERY_URLS") {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = get(&client, &q, "/api/v1/sql", &total).await;
            if same(&want, &got).is_ok() && metric(&q, "quiver_blocks").await > 0.0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "querier {q} did not converge: {got} vs {want}\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The query page is served where queries are answered, not on the write path.
    for (urls, status) in [("QUERY_URLS", 200), ("WRITE_URLS", 404)] {
        for u in cluster.list(urls) {
            let r = client.get(format!("{u}/")).send().await.unwrap();
            assert_eq!(r.status(), status, "GET {u}/");
        }
    }

    let mut checks = 0;
    for q in cluster.list("QUERY_URLS") {
        for (name, query) in peer_queries() {
            let instant = [("query", query.clone()), ("time", end_s.clone())];
            let a = get(&client, &single.url, "/api/v1/query", &instant).await;
            let b = get(&client, &q, "/api/v1/query", &instant).await;
            same(&a, &b).unwrap_or_else(|e| panic!("{name} (instant) on {q}: {e}"));
            let range = [
                ("query", query.clone()),
                ("start", start_s.clone()),
                ("end", end_s.clone()),
                ("step", "60".to_string()),
            ];
            let a = get(&client, &single.url, "/api/v1/query_range", &range).await;
            let b = get(&client, &q, "/api/v1/query_range", &range).await;
            same(&a, &b).unwrap_or_else(|e| panic!("{name} (range) on {q}: {e}"));
            assert!(
                a["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()),
                "{name}: empty answers prove nothing"
            );
            checks += 2;
        }
        let window = [("start", start_s.clone()), ("end", end_s.clone())];
        for (path, params) in [
            ("/api/v1/series", vec![("match[]", "up".to_string())]),
            (
                "/api/v1/series",
                vec![(
                    "match[]",
                    "{__name__=~\"http_.*\",status=\"500\"}".to_string(),
                )],
            ),
            ("/api/v1/labels", vec![]),
            ("/api/v1/label/__name__/values", vec![]),
            ("/api/v1/label/instance/values", vec![]),
            ("/api/v1/metadata", vec![]),
        ] {
            let mut p = params.clone();
            if path != "/api/v1/metadata" {
                p.extend(window.iter().cloned());
            }
            let a = get(&client, &single.url, path, &p).await;
            let b = get(&client, &q, path, &p).await;
            same(&a, &b).unwrap_or_else(|e| panic!("{path} {params:?} on {q}: {e}"));
            assert!(
                a["data"]
                    .as_array()
                    .map_or(a["data"].as_object().is_some_and(|o| !o.is_empty()), |d| !d
                        .is_empty()),
                "{path}: empty answer: {a}"
            );
            checks += 1;
        }
        for sql in [
            "SELECT count(*) AS n, sum(value) AS total FROM samples",
            JOINED,
        ] {
            let a = get(
                &client,
                &single.url,
                "/api/v1/sql",
                &[("query", sql.into())],
            )
            .await;
            let b = get(&client, &q, "/api/v1/sql", &[("query", sql.into())]).await;
            same(&a, &b).unwrap_or_else(|e| panic!("SQL {sql} on {q}: {e}"));
            assert!(
                a["data"]["rows"].as_array().is_some_and(|r| !r.is_empty()),
                "{sql}: {a}"
            );
            checks += 1;
        }
    }
    eprintln!("cluster answered {checks} checks like the single process");
    // Those answers came from plans run across the queriers (issue 26), none retried.
    let queriers = cluster.list("QUERY_URLS");
    // `quiver explain --url`: the plans of a PromQL query and of the SQL join, cut into
    // stages whose scans ran as a task on each querier.
    for (lang, query) in [
        (None, "sum by (job) (rate(http_requests_total[5m]))"),
        (Some("--sql"), JOINED),
    ] {
        let explain = std::process::Command::new(BIN)
            .args(["explain", "--url", &queriers[0], "--analyze"])
            .args(lang)
            .arg(query)
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&explain.stdout);
        eprintln!(
            "quiver explain --url {} --analyze {lang:?} {query}\n{shown}",
            queriers[0]
        );
        assert!(
            explain.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&explain.stderr)
        );
        assert!(
            shown.contains("Stage 1") && shown.contains("t2:"),
            "{query}:\n{shown}"
        );
    }
    for q in &queriers {
        let m = |name: &'static str| metric(q, name);
        assert_eq!(
            m("quiver_cluster_workers").await,
            queriers.len() as f64,
            "{q}"
        );
        let ok = m("quiver_distributed_plans_total{outcome=\"ok\"}").await;
        let tasks = m("quiver_worker_tasks_started_total").await;
        eprintln!("{q}: {ok} plans distributed, {tasks} tasks of plans run here");
        assert!(ok > 0.0 && tasks > 0.0, "{q}: {ok} plans, {tasks} tasks");
        for outcome in ["retried", "failed"] {
            let n = metric(
                q,
                &format!("quiver_distributed_plans_total{{outcome=\"{outcome}\"}}"),
            )
            .await;
            assert_eq!(n, 0.0, "{q}: {outcome}");
        }
    }

    // Tenants stay apart through the cluster: a tenant's series reach only its queries.
    let tenant = |r: reqwest::RequestBuilder| r.header("X-Scope-OrgID", "team-b");
    let b = batch(vec![(
        labels(&[("__name__", "tenant_test"), ("x", "1")]),
        vec![(end, 42.0)],
    )]);
    let r = tenant(client.post(format!("{}/api/v1/write", writers[0])))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(encode(&b))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "tenant write: {}", r.status());
    for q in cluster.list("QUERY_URLS") {
        let ask = |with_tenant: bool| {
            let req = client
                .get(format!("{q}/api/v1/query"))
                .query(&[("query", "sum(tenant_test)"), ("time", &end_s)]);
            let req = if with_tenant { tenant(req) } else { req };
            async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ask(true).await["data"]["result"][0]["value"][1] != "42" {
            assert!(
                std::time::Instant::now() < deadline,
                "team-b's sample on {q}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            ask(false).await["data"]["result"],
            serde_json::json!([]),
            "the default tenant does not see team-b's series"
        );
    }
    drop(cluster);
}
