//! A real Prometheus (Debian package) against Quiver: it scrapes itself and remote-writes
//! to Quiver, and reads Quiver's data back through `remote_read`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

async fn get_json(url: &str) -> Value {
    serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap()
}

fn sorted_results(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"].to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_and_remote_reads() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var("CI").is_err(), "prometheus is required in CI");
        eprintln!(
            "SKIPPED prometheus_remote_writes_and_remote_reads: prometheus not installed (apt-get install prometheus)"
        );
        return;
    }
    let (tmp, dir) = tempdir();
    let quiver = Server::start(&dir, &[], &[]).await;
    // Data only Quiver has, for the remote-read half.
    let now = now_ms();
    let t0 = now - 120_000 + 337;
    let series: Vec<_> = ["a", "b"]
        .iter()
        .map(|i| {
            (
                labels(&[("__name__", "quiver_only_total"), ("inst", i)]),
                (0..8).map(|k| (t0 + k * 15_000, (k * 3) as f64)).collect(),
            )
        })
        .collect();
    let client = reqwest::Client::new();
    assert_eq!(
        post_write(&client, &quiver.url, encode(&batch(series)))
            .await
            .status(),
        204
    );

    let port = free_port();
    let quiver_target = quiver.url.trim_start_matches("http://").to_string();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
         \x20 - job_name: quiver\n    static_configs:\n      - targets: ['{quiver_target}']\n\
         remote_write:\n  - url: {q}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n\
         remote_read:\n  - url: {q}/api/v1/read\n    read_recent: true\n",
        q = quiver.url
    );
    let cfg = tmp.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let prom = ChildGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("prom").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );
    let prom_url = format!("http://127.0.0.1:{port}");

    // Remote write: Prometheus's own `up` arrives in Quiver.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(&format!(
            "{}/api/v1/query?query=up%7Bjob%3D%22self%22%7D",
            quiver.url
        ))
        .await;
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            assert_eq!(v["data"]["result"][0]["value"][1], "1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no remote-written samples; see {}",
            tmp.path().join("prometheus.log").display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let v = get_json(&format!(
        "{}/api/v1/series?match[]=prometheus_build_info",
        quiver.url
    ))
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");

    // Remote read: the same query through Prometheus and against Quiver directly.
    let at = (t0 + 7 * 15_000) as f64 / 1000.0;
    for q in [
        "quiver_only_total",
        "sum(rate(quiver_only_total[1m]))",
        "max_over_time(quiver_only_total[90s])",
    ] {
        let enc: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        let direct = get_json(&format!(
            "{}/api/v1/query?query={enc}&time={at}",
            quiver.url
        ))
        .await;
        let through = get_json(&format!("{prom_url}/api/v1/query?query={enc}&time={at}")).await;
        assert_eq!(through["status"], "success", "{through}");
        assert!(!sorted_results(&direct).is_empty(), "{q}: {direct}");
        // Equal series, values within Prometheus's float tolerance (summation order differs).
        let (a, b) = (sorted_results(&through), sorted_results(&direct));
        assert_eq!(a.len(), b.len(), "{q}: {a:?} vs {b:?}");
        for ((la, va), (lb, vb)) in a.iter().zip(&b) {
            assert_eq!(la, lb, "{q}");
            let (x, y): (f64, f64) = (va.parse().unwrap(), vb.parse().unwrap());
            assert!(
                x == y || (x - y).abs() / (x.abs() + y.abs()) < 1e-6,
                "{q}: {x} vs {y}"
            );
        }
    }
    drop(prom);
}
