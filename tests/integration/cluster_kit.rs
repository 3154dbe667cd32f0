//! A cluster for tests: `deploy/local-cluster/up` (moto_server and every role as real
//! processes on 127.0.0.1) and `down` when dropped; a sender that retries 5xx as
//! Prometheus does; the peer benchmark's dataset as remote-write batches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quiver::ingest::WriteBatch;
use quiver::ingest::text::{BatchReader, TimestampUnit};

use crate::support::*;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Cluster {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts a cluster with `up` and these arguments (before `--`) and quiver flags.
    pub fn up(dir: &Path, args: &[&str], flags: &[&str]) -> Cluster {
        let mut cmd = Command::new(format!("{ROOT}/deploy/local-cluster/up"));
        cmd.arg(dir).args(["--bin", BIN]).args(args);
        if !flags.is_empty() {
            cmd.arg("--").args(flags);
        }
        let out = cmd.output().expect("run deploy/local-cluster/up");
        let c = Cluster {
            dir: dir.to_path_buf(),
            env: HashMap::new(),
            _tmp: None,
        };
        if !out.status.success() {
            let logs = c.logs();
            drop(c);
            panic!(
                "up failed: {}\n{}\n{logs}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut c = c;
        c.reload_env();
        c
    }

    pub fn reload_env(&mut self) {
        let text = std::fs::read_to_string(self.dir.join("cluster.env")).expect("cluster.env");
        self.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
    }

    pub fn var(&self, k: &str) -> String {
        self.env
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} not in cluster.env"))
    }

    pub fn list(&self, k: &str) -> Vec<String> {
        self.var(k).split_whitespace().map(str::to_string).collect()
    }

    /// A node's base URL by name, e.g. `writer-1`.
    pub fn url(&self, node: &str) -> String {
        self.var(&format!("{}_URL", node.to_uppercase().replace('-', "_")))
    }

    pub fn pid(&self, node: &str) -> i32 {
        std::fs::read_to_string(self.dir.join("pids").join(format!("{node}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn signal(&self, node: &str, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.pid(node).to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} {node}");
    }

    /// Starts one more node of `role` (`up DIR --add ROLE`); returns its name.
    pub fn add(&mut self, role: &str) -> String {
        let out = Command::new(format!("{ROOT}/deploy/local-cluster/up"))
            .arg(&self.dir)
            .args(["--bin", BIN, "--add", role])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "up --add {role}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        self.reload_env();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(d) = std::fs::read_dir(self.dir.join("logs")) {
            let mut names: Vec<_> = d.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out.push_str(&format!("==> {} <==\n", p.display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(format!("{ROOT}/deploy/local-cluster/down"))
            .arg(&self.dir)
            .output();
    }
}

/// Posts a remote-write body, retrying 5xx and connection errors with backoff as
/// Prometheus's queue manager does. Returns how many attempts it took; panics after
/// `give_up`.
pub async fn send_retrying(
    client: &reqwest::Client,
    urls: &[String],
    body: &[u8],
    give_up: Duration,
) -> usize {
    let deadline = Instant::now() + give_up;
    let mut wait = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let r = try_post_write(client, url, body).await;
        match r {
            Ok(r) if r.status().is_success() => return attempt,
            Ok(r) if r.status().is_server_error() || r.status() == 429 => {}
            Ok(r) => {
                let code = r.status();
                panic!(
                    "write refused: {code} {}",
                    r.text().await.unwrap_or_default()
                )
            }
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "writes kept failing for {give_up:?}"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// The peer benchmark's dataset (`benches/peer/gen.py`): `series` series over `hours`
/// ending now, as remote-write batches of about `per_batch` samples.
pub fn peer_dataset(dir: &Path, series: usize, hours: f64, per_batch: usize) -> Vec<WriteBatch> {
    let script = format!(
        "import sys; sys.path.insert(0, '{ROOT}/benches/peer'); import gen, time; \
         end = int(time.time()) // 60 * 60 * 1000; \
         print(gen.generate('{}', {series}, {hours}, end, seed=7, workers=1)['samples'])",
        dir.display()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "gen.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = std::fs::File::open(dir.join("data.om")).unwrap();
    let mut r = BatchReader::new(
        std::io::BufReader::new(f),
        TimestampUnit::Seconds,
        now_ms(),
        per_batch,
    );
    let mut out = Vec::new();
    let mut described = std::collections::HashSet::new();
    while let Some(mut b) = r.next_batch().unwrap() {
        // The text import carries no metadata; a Prometheus sender would: describe each
        // family in the first request that has it.
        for s in &b.series {
            let name = s.labels.get("__name__").unwrap_or_default().to_string();
            if described.insert(name.clone()) {
                let family = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                b.metadata.push(quiver::ingest::MetricMetadata {
                    metric_family_name: name.clone(),
                    metric_type: if name.ends_with("_total") {
                        "counter"
                    } else {
                        "gauge"
                    }
                    .into(),
                    help: format!("{family} from the peer dataset"),
                    unit: String::new(),
                    carriers: vec![],
                });
            }
        }
        out.push(b);
    }
    out
}

/// What a sender saw while writing.
#[derive(Debug, Default)]
pub struct Sent {
    /// Requests acknowledged (each wrote one sample per series at its own timestamp).
    pub acked: u64,
    /// Refusals: status and whether `Retry-After` came with it.
    pub refusals: Vec<(u16, bool)>,
    /// Connection errors (a killed distributor).
    pub unreachable: u64,
}

/// A remote-write sender as Prometheus runs one: request `k` carries one sample per
/// series `load_test{s="0".."series"}` at `base_ms + k * 100`, value `k`; every request is
/// retried (5xx, 429, connection errors, rotating over `urls`) until acknowledged, then the
/// next one is sent. Stops after the request in flight when `stop` is set.
pub fn spawn_sender(
    urls: Vec<String>,
    series: usize,
    base_ms: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Sent> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut sent = Sent::default();
        let mut k: u64 = 0;
        let mut turn = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let b = batch(
                (0..series)
                    .map(|s| {
                        (
                            labels(&[("__name__", "load_test"), ("s", &s.to_string())]),
                            vec![(base_ms + k as i64 * 100, k as f64)],
                        )
                    })
                    .collect(),
            );
            let body = encode(&b);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let url = &urls[turn % urls.len()];
                let r = try_post_write(&client, url, &body).await;
                match r {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => {
                        let code = r.status().as_u16();
                        assert!(
                            code >= 500 || code == 429,
                            "write refused: {code} {}",
                            r.text().await.unwrap_or_default()
                        );
                        sent.refusals
                            .push((code, r.headers().contains_key("retry-after")));
                    }
                    Err(_) => {
                        sent.unreachable += 1;
                        turn += 1;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "request {k} never acknowledged: {sent:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent.acked += 1;
            k += 1;
            turn += 1;
        }
        sent
    })
}

/// Waits until `url` answers that every `load_test` series holds exactly `n` samples
/// with values summing to `0 + 1 + … + n-1` (none lost, none twice).
pub async fn wait_all_acked(url: &str, series: usize, n: u64, at_s: i64, cluster: &Cluster) {
    let client = reqwest::Client::new();
    let want_sum = (n * (n - 1) / 2) as f64;
    let q = "count_over_time(load_test[1h]) * 1e9 + sum_over_time(load_test[1h])";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: serde_json::Value = client
            .get(format!("{url}/api/v1/query"))
            .query(&[("query", q), ("time", &at_s.to_string())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let result = r["data"]["result"].as_array().cloned().unwrap_or_default();
        let ok = result.len() == series
            && result.iter().all(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v == n as f64 * 1e9 + want_sum)
            });
        if ok {
            return;
        }
        let last = r.to_string();
        assert!(
            Instant::now() < deadline,
            "{url}: want {series} series of {n} samples summing to {want_sum}; last answer {}\n{}",
            &last[..last.len().min(2000)],
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls an async condition every 100 ms for up to `secs`.
pub async fn wait_for_async<F, Fut>(what: &str, secs: u64, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A PromQL instant query's answer (asserting success).
pub async fn query(url: &str, q: &str, at_s: i64) -> serde_json::Value {
    let r: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/api/v1/query"))
        .query(&[("query", q), ("time", &at_s.to_string())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "success", "{q}: {r}");
    r
}

/// The first sample's value of a query answer.
pub fn scalar_of(r: &serde_json::Value) -> Option<f64> {
    r["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// One remote-write 1.0 request as Prometheus sends it; errors are the caller's to retry.
pub async fn try_post_write(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{url}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .timeout(Duration::from_secs(30))
        .body(body.to_vec())
        .send()
        .await
}
