//! A remote-write load generator for the cluster benchmark (`benches/cluster/run.py`):
//! `concurrency` senders (as Prometheus's queue shards) post remote-write 1.0 requests of
//! `per_request` samples (one per series, `series` series in all, a new timestamp every
//! round) to `url` for `seconds`, each waiting for its acknowledgement before the next, and
//! retrying 5xx. Prints one JSON line: samples per second acknowledged, acknowledgement
//! latency percentiles, refusals.
//!
//! `cargo bench --bench cluster_load -- --url http://127.0.0.1:9201 --seconds 30`
//! (without `--url` it prints its usage and exits 0, so a plain `cargo bench` passes).
//!
//! With `--file data.om` it sends that file's samples instead (Prometheus text or
//! OpenMetrics with timestamps in seconds, as `benches/peer/gen.py` writes), in requests of
//! `per_request` samples, until the file is sent: how `benches/cluster/scale.py` loads the
//! peer dataset into a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quiver::ingest::{SeriesSamples, WriteBatch};
use quiver::model::Labels;

struct Args {
    url: String,
    seconds: u64,
    concurrency: usize,
    series: usize,
    per_request: usize,
    file: Option<String>,
}

fn args() -> Option<Args> {
    let mut a = Args {
        url: String::new(),
        seconds: 20,
        concurrency: 8,
        series: 20_000,
        per_request: 2_000,
        file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_default();
        match k.as_str() {
            "--url" => a.url = v(),
            "--seconds" => a.seconds = v().parse().ok()?,
            "--concurrency" => a.concurrency = v().parse().ok()?,
            "--series" => a.series = v().parse().ok()?,
            "--per-request" => a.per_request = v().parse().ok()?,
            "--file" => a.file = Some(v()),
            _ => {}
        }
    }
    (!a.url.is_empty()).then_some(a)
}

fn body(series: std::ops::Range<usize>, t: i64) -> Vec<u8> {
    let b = WriteBatch {
        series: series
            .map(|s| SeriesSamples {
                labels: Labels::new(vec![
                    ("__name__".into(), "bench_load".into()),
                    ("instance".into(), format!("host-{}", s / 100)),
                    ("s".into(), s.to_string()),
                ])
                .unwrap(),
                samples: vec![(t, (t / 1000 % 1000) as f64 + s as f64)],
            })
            .collect(),
        ..Default::default()
    };
    quiver::ingest::remote_write::encode(&b)
}

#[tokio::main]
async fn main() {
    let Some(a) = args() else {
        eprintln!(
            "usage: cluster_load --url URL [--seconds 20] [--concurrency 8] [--series 20000] [--per-request 2000]"
        );
        return;
    };
    if let Some(f) = &a.file {
        return send_file(&a, f).await;
    }
    let groups = a.series.div_ceil(a.per_request);
    let start_ms = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (next, refused, client, url) =
            (next.clone(), refused.clone(), client.clone(), a.url.clone());
        let (series, per) = (a.series, a.per_request);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut samples = 0u64;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let (round, group) = (i / groups, i % groups);
                let lo = group * per;
                let body = body(lo..(lo + per).min(series), start_ms + round as i64 * 1000);
                let n = (lo + per).min(series) - lo;
                let t0 = Instant::now();
                loop {
                    let r = client
                        .post(format!("{url}/api/v1/write"))
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) if r.status().is_client_error() && r.status() != 429 => {
                            panic!(
                                "refused: {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )
                        }
                        _ => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                samples += n as u64;
            }
            (lat, samples)
        }));
    }
    let mut lat = Vec::new();
    let mut samples = 0;
    for t in tasks {
        let (l, s) = t.await.unwrap();
        lat.extend(l);
        samples += s;
    }
    let secs = began.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{{\"samples_per_s\":{:.0},\"requests\":{},\"p50_ms\":{:.1},\"p90_ms\":{:.1},\"p99_ms\":{:.1},\"max_ms\":{:.1},\"retries\":{},\"seconds\":{:.1}}}",
        samples as f64 / secs,
        lat.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0),
        refused.load(Ordering::Relaxed),
        secs
    );
}

/// Posts `body` until it is acknowledged (5xx and 429 retried); panics on another 4xx.
async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> u64 {
    let mut retries = 0;
    loop {
        let r = client
            .post(format!("{url}/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => return retries,
            Ok(r) if r.status().is_client_error() && r.status() != 429 => panic!(
                "refused: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            _ => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends a text file's samples, `concurrency` requests in flight.
async fn send_file(a: &Args, path: &str) {
    use quiver::ingest::text::{BatchReader, TimestampUnit};
    let f = std::fs::File::open(path).expect("the file");
    let mut r = BatchReader::new(
        std::io::BufReader::with_capacity(1 << 20, f),
        TimestampUnit::Seconds,
        chrono::Utc::now().timestamp_millis(),
        a.per_request,
    );
    let client = reqwest::Client::new();
    let began = Instant::now();
    let (mut samples, mut retries) = (0u64, 0u64);
    let mut inflight = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    loop {
        while inflight.len() < a.concurrency {
            let Some(b) = r.next_batch().expect("a readable file") else {
                break;
            };
            samples += b.series.iter().map(|s| s.samples.len() as u64).sum::<u64>();
            let body = quiver::ingest::remote_write::encode(&b);
            let (client, url) = (client.clone(), a.url.clone());
            inflight.push(tokio::spawn(async move { post(&client, &url, body).await }));
        }
        match inflight.next().await {
            Some(r) => retries += r.unwrap(),
            None => break,
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{{\"samples\":{samples},\"samples_per_s\":{:.0},\"retries\":{retries},\"seconds\":{secs:.1}}}",
        samples as f64 / secs
    );
}
