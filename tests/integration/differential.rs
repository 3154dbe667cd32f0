//! Differential test: the same generated data in a real Prometheus (backfilled with
//! `promtool tsdb create-blocks-from openmetrics`) and in Quiver (`quiver import`), and every
//! query of `tests/differential/queries.promql` compared instant and range, series by
//! series, values within Prometheus's float tolerance. Scrape timestamps sit at x.337 s so no
//! window edge coincides with a sample (Prometheus 2.42 has left-closed windows, 3.x and
//! Quiver left-open ones).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Deterministic OpenMetrics text (seconds timestamps) for [start, end].
fn dataset(start_ms: i64, end_ms: i64) -> String {
    let steps: Vec<i64> = (0..)
        .map(|k| start_ms + k * 15_000 + 337)
        .take_while(|t| *t <= end_ms)
        .collect();
    let insts = [
        ("api", "i0:80"),
        ("api", "i1:80"),
        ("api", "i2:80"),
        ("db", "i3:80"),
    ];
    let mut out = String::new();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let ts = |t: i64| format!("{}.{:03}", t / 1000, t % 1000);
    for (job, inst) in insts {
        for method in ["GET", "POST"] {
            for status in ["200", "500"] {
                let mut v = 0.0;
                for (k, &t) in steps.iter().enumerate() {
                    v += (next() % if status == "200" { 40 } else { 5 }) as f64;
                    if inst == "i1:80" && method == "GET" && status == "200" && k == steps.len() / 2
                    {
                        v = 2.0;
                    }
                    let _ = writeln!(
                        out,
                        "diff_http_requests_total{{job=\"{job}\",instance=\"{inst}\",method=\"{method}\",status=\"{status}\"}} {v} {}",
                        ts(t)
                    );
                }
            }
        }
    }
    for (job, inst) in insts {
        for (k, &t) in steps.iter().enumerate() {
            let up = if inst == "i2:80" && (k / 40) % 3 == 1 {
                0
            } else {
                1
            };
            let _ = writeln!(
                out,
                "diff_up{{job=\"{job}\",instance=\"{inst}\"}} {up} {}",
                ts(t)
            );
        }
    }
    for (_, inst) in insts {
        let mut m = 4e8;
        for &t in &steps {
            m += ((next() % 2001) as f64 - 1000.0) * 1e5;
            let _ = writeln!(
                out,
                "diff_memory_bytes{{instance=\"{inst}\"}} {m} {}",
                ts(t)
            );
        }
    }
    let les = ["0.05", "0.1", "0.5", "1", "+Inf"];
    let mut counts: BTreeMap<(&str, &str), Vec<Vec<f64>>> = BTreeMap::new();
    let mut sums: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for (job, inst) in insts {
        let (mut c, mut s) = (vec![0.0; les.len()], 0.0);
        let mut per_step = Vec::new();
        let mut sum_step = Vec::new();
        for _ in &steps {
            for _ in 0..(next() % 20) {
                let obs = (next() % 1500) as f64 / 1000.0;
                s += obs;
                for (i, le) in les.iter().enumerate() {
                    let bound: f64 = if *le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    };
                    if obs <= bound {
                        c[i] += 1.0;
                    }
                }
            }
            per_step.push(c.clone());
            sum_step.push(s);
        }
        counts.insert((job, inst), per_step);
        sums.insert((job, inst), sum_step);
    }
    for ((job, inst), per_step) in &counts {
        for (i, le) in les.iter().enumerate() {
            for (k, &t) in steps.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "diff_latency_seconds_bucket{{job=\"{job}\",instance=\"{inst}\",le=\"{le}\"}} {} {}",
                    per_step[k][i],
                    ts(t)
                );
            }
        }
    }
    for ((job, inst), per_step) in &counts {
        for (k, &t) in steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "diff_latency_seconds_count{{job=\"{job}\",instance=\"{inst}\"}} {} {}",
                per_step[k][les.len() - 1],
                ts(t)
            );
        }
    }
    for ((job, inst), s) in &sums {
        for (k, &t) in steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "diff_latency_seconds_sum{{job=\"{job}\",instance=\"{inst}\"}} {} {}",
                s[k],
                ts(t)
            );
        }
    }
    out.push_str("# EOF\n");
    out
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() / (a.abs() + b.abs()) < 1e-6
}

/// Result as `labels → [(t, v)]` (scalars under the key "scalar").
fn normalise(v: &Value) -> Result<BTreeMap<String, Vec<(f64, f64)>>, String> {
    if v["status"] != "success" {
        return Err(format!("error: {}", v["error"]));
    }
    let mut out = BTreeMap::new();
    let data = &v["data"];
    let point = |p: &Value| {
        (
            p[0].as_f64().unwrap(),
            p[1].as_str().unwrap().parse::<f64>().unwrap(),
        )
    };
    match data["resultType"].as_str().unwrap() {
        "scalar" => {
            out.insert("scalar".into(), vec![point(&data["result"])]);
        }
        "vector" => {
            for r in data["result"].as_array().unwrap() {
                out.insert(r["metric"].to_string(), vec![point(&r["value"])]);
            }
        }
        "matrix" => {
            for r in data["result"].as_array().unwrap() {
                out.insert(
                    r["metric"].to_string(),
                    r["values"].as_array().unwrap().iter().map(point).collect(),
                );
            }
        }
        other => return Err(format!("result type {other}")),
    }
    Ok(out)
}

fn compare(a: &Value, b: &Value) -> Result<(), String> {
    let (x, y) = (normalise(a)?, normalise(b)?);
    if x.keys().collect::<Vec<_>>() != y.keys().collect::<Vec<_>>() {
        return Err(format!(
            "series differ: quiver {:?} vs prometheus {:?}",
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>()
        ));
    }
    for (k, pa) in &x {
        let pb = &y[k];
        if pa.len() != pb.len()
            || pa
                .iter()
                .zip(pb)
                .any(|(p, q)| p.0 != q.0 || !close(p.1, q.1))
        {
            return Err(format!("{k}: quiver {pa:?} vs prometheus {pb:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiver_answers_like_prometheus() {
    let have = |b: &str| Command::new(b).arg("--version").output().is_ok();
    if !have("prometheus") || !have("promtool") {
        assert!(
            std::env::var("CI").is_err(),
            "prometheus and promtool are required in CI"
        );
        eprintln!("SKIPPED quiver_answers_like_prometheus: prometheus/promtool not installed");
        return;
    }
    let (tmp, qdir) = tempdir();
    let now = now_ms();
    let end = (now / 60_000) * 60_000 - 600_000;
    let start = end - 3 * 3_600_000;
    let om = tmp.path().join("data.om");
    std::fs::write(&om, dataset(start, end)).unwrap();
    let pdir = tmp.path().join("prom");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&pdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["import", "--data-dir"])
        .arg(&qdir)
        .arg(&om)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "quiver import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let cfg = tmp.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n").unwrap();
    let _prom = ChildGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", pdir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let prom = format!("http://127.0.0.1:{port}");
    let quiver = Server::start(&qdir, &[], &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(format!("{prom}/-/ready"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "prometheus did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let queries: Vec<&str> = include_str!("../differential/queries.promql")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(queries.len() >= 60);
    async fn get(base: &str, path: &str, params: Vec<(&'static str, String)>) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .query(&params)
            .send()
            .await
            .unwrap();
        serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()
    }
    let mut failed = Vec::new();
    for q in &queries {
        let mut problems = Vec::new();
        // Evaluation times 7 s past the minute, so subquery steps (multiples of their step)
        // never sit on a window edge either.
        for t in [end - 1_800_000 + 7_000, end - 300_000 + 7_000, end - 53_000] {
            let p = vec![("query", q.to_string()), ("time", format!("{}", t / 1000))];
            let (a, b) = (
                get(&quiver.url, "/api/v1/query", p.clone()).await,
                get(&prom, "/api/v1/query", p).await,
            );
            if let Err(e) = compare(&a, &b) {
                problems.push(format!("instant @{}: {e}", t / 1000));
            }
        }
        let p = vec![
            ("query", q.to_string()),
            ("start", format!("{}", (end - 3_600_000 + 7_000) / 1000)),
            ("end", format!("{}", (end - 53_000) / 1000)),
            ("step", "60".into()),
        ];
        let (a, b) = (
            get(&quiver.url, "/api/v1/query_range", p.clone()).await,
            get(&prom, "/api/v1/query_range", p).await,
        );
        if let Err(e) = compare(&a, &b) {
            problems.push(format!("range: {e}"));
        }
        if !problems.is_empty() {
            let first: String = problems[0]
                .chars()
                .take(if std::env::var("DIFF_VERBOSE").is_ok() {
                    20_000
                } else {
                    400
                })
                .collect();
            eprintln!("MISMATCH {q}\n    {first}");
            failed.push(*q);
        }
    }
    let matched = queries.len() - failed.len();
    eprintln!(
        "differential: {matched} of {} queries match Prometheus",
        queries.len()
    );
    assert!(
        matched * 100 >= queries.len() * 95,
        "only {matched}/{} queries match: {failed:?}",
        queries.len()
    );
}
