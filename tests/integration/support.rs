//! Helpers: start/stop `quiver serve` on a free port, run `quiver sql`, build requests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quiver::ingest::{SeriesSamples, WriteBatch, remote_write};
use quiver::model::Labels;

pub const BIN: &str = env!("CARGO_BIN_EXE_quiver");

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts `quiver serve` on 127.0.0.1:0 and waits until `/-/ready` answers 200.
    pub async fn start(data_dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::start_until(data_dir, extra, envs, "/-/ready").await
    }

    /// Starts `quiver serve` and waits until `path` answers 200 (`/-/healthy`: up, but
    /// perhaps not ready).
    pub async fn start_until(
        data_dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
        path: &str,
    ) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .expect("log file");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn quiver");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listen line");
        let url = line
            .trim()
            .strip_prefix("quiver listening on ")
            .unwrap_or_else(|| panic!("unexpected: {line:?}"))
            .to_string();
        let server = Server { child, url };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}{path}", server.url)).await
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server did not become ready; see {}",
                data_dir.with_extension("log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT: graceful shutdown.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn post_write(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    client
        .post(format!("{url}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .expect("send")
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
    .unwrap()
}

pub fn batch(series: Vec<(Labels, Vec<(i64, f64)>)>) -> WriteBatch {
    WriteBatch {
        histograms: Vec::new(),
        exemplars: Vec::new(),
        dropped_exemplars: 0,
        series: series
            .into_iter()
            .map(|(labels, samples)| SeriesSamples { labels, samples })
            .collect(),
        metadata: vec![],
    }
}

pub fn encode(b: &WriteBatch) -> Vec<u8> {
    remote_write::encode(b)
}

/// Runs `quiver sql --format csv` and returns the rows (header dropped).
pub fn sql_rows(data_dir: &Path, extra: &[&str], query: &str) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["sql", "--format", "csv", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .arg(query)
        .output()
        .expect("run quiver sql");
    assert!(
        out.status.success(),
        "quiver sql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("data");
    (d, p)
}

/// Block metas present under a local data dir.
pub fn local_block_count(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("blocks"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join("meta.json").exists())
                .count()
        })
        .unwrap_or(0)
}

/// Polls `cond` until true or the deadline passes.
pub async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills and reaps a helper process (moto_server, prometheus) when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `moto_server` is installed; in CI it must be (`.ci/run` installs it).
pub fn moto_available(test: &str) -> bool {
    let ok = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "moto_server is required in CI"
        );
        eprintln!("SKIPPED {test}: moto_server not installed (pip install 'moto[server]')");
    }
    ok
}

/// moto_server (a real S3 API) on 127.0.0.1:`port`, with bucket `bucket` created.
pub async fn start_moto(port: u16, bucket: &str, log: &Path) -> ChildGuard {
    let moto = ChildGuard(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start moto_server"),
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client
            .put(format!("http://127.0.0.1:{port}/{bucket}"))
            .send()
            .await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    moto
}

/// Credentials moto accepts.
pub const S3_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

/// A gauge or counter value from a `/metrics` page (sum over label sets).
pub async fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A free TCP port on 127.0.0.1 (for programs that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
