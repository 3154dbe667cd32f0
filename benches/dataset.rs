//! Deterministic, realistic sample data shared by the benchmarks: node-exporter-like
//! counters and gauges and classic histograms at a 15 s interval (with jitter-free
//! timestamps offset from whole seconds), counter resets included.

use quiver::ingest::{SeriesSamples, WriteBatch};
use quiver::model::Labels;

pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn l(pairs: &[(&str, String)]) -> Labels {
    Labels::new(
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.clone()))
            .collect(),
    )
    .unwrap()
}

/// Label sets of roughly `n` series: 40 % counters, 30 % gauges, 30 % histogram series.
pub fn series_labels(n: usize) -> Vec<(Labels, Kind)> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        let inst = format!("host-{:04}:9100", i / 10);
        match i % 10 {
            0..=3 => {
                let cpu = (i % 4).to_string();
                let mode = ["user", "system", "idle", "iowait"][i % 4].to_string();
                out.push((
                    l(&[
                        ("__name__", "node_cpu_seconds_total".into()),
                        ("instance", inst),
                        ("job", "node".into()),
                        ("cpu", cpu),
                        ("mode", mode),
                    ]),
                    Kind::Counter,
                ));
            }
            4..=6 => {
                let dev = format!("sd{}", (b'a' + (i % 3) as u8) as char);
                out.push((
                    l(&[
                        ("__name__", "node_filesystem_avail_bytes".into()),
                        ("instance", inst),
                        ("job", "node".into()),
                        ("device", dev),
                    ]),
                    Kind::Gauge,
                ));
            }
            _ => {
                let path = format!("/api/v{}/items", i % 7);
                for le in ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "+Inf"] {
                    out.push((
                        l(&[
                            ("__name__", "http_request_duration_seconds_bucket".into()),
                            ("instance", inst.clone()),
                            ("job", "api".into()),
                            ("path", path.clone()),
                            ("le", le.into()),
                        ]),
                        Kind::Bucket,
                    ));
                }
            }
        }
        i += 1;
    }
    out.truncate(n);
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Bucket,
}

/// `hours` of 15 s samples for `n` series starting at `start_ms`, as write batches of one
/// scrape each (what remote write sends).
pub fn scrapes(n: usize, start_ms: i64, hours: i64) -> impl Iterator<Item = WriteBatch> {
    let series = series_labels(n);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut state: Vec<f64> = series.iter().map(|_| rng.unit() * 1000.0).collect();
    let steps = hours * 240;
    (0..steps).map(move |k| {
        let t = start_ms + k * 15_000 + 337;
        let mut b = WriteBatch::default();
        for (i, (labels, kind)) in series.iter().enumerate() {
            let v = match kind {
                Kind::Counter | Kind::Bucket => {
                    if rng.next_u64().is_multiple_of(20_000) {
                        state[i] = 0.0; // counter reset
                    }
                    state[i] += (rng.next_u64() % 100) as f64
                        * if *kind == Kind::Counter { 0.01 } else { 1.0 };
                    state[i]
                }
                Kind::Gauge => {
                    state[i] = (state[i] + (rng.unit() - 0.5) * 4096.0).max(0.0).round();
                    state[i] * 4096.0
                }
            };
            b.series.push(SeriesSamples {
                labels: labels.clone(),
                samples: vec![(t, v)],
            });
        }
        b
    })
}
