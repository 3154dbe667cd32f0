//! Ingest benchmarks: remote-write decoding, the full append path with WAL fsync and group
//! commit, and a one-off storage report (bytes per sample after flush + compaction).
//!
//! `cargo bench --bench ingest` runs all; the report prints lines starting with `REPORT`.

mod dataset;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quiver::ingest::{SeriesSamples, WriteBatch, remote_write};
use quiver::storage::{Storage, StorageOptions, WriteWindow, objstore};

/// A remote-write request as Prometheus sends it: up to 2000 series of one sample each.
fn request(series: usize, t: i64) -> WriteBatch {
    let mut b = WriteBatch::default();
    for (labels, _) in dataset::series_labels(series) {
        b.series.push(SeriesSamples {
            labels,
            samples: vec![(t, 1.5)],
        });
    }
    b
}

fn decode(c: &mut Criterion) {
    let body = remote_write::encode(&request(2000, 1_700_000_000_000));
    let mut g = c.benchmark_group("remote_write_decode");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("2000_samples", |b| {
        b.iter(|| {
            remote_write::decode(
                &body,
                &mut quiver::ingest::budget::Meter::new(Default::default()),
            )
            .unwrap()
        })
    });
    g.finish();
}

/// Decode + append + WAL fsync, `clients` concurrent writers sharing group commits.
fn append_with_wal(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = rt.block_on(async {
        let mut o = StorageOptions::new(dir.path());
        o.head_max_samples = usize::MAX;
        o.head_memory_limit = usize::MAX;
        let store = objstore::build(None, dir.path(), &Default::default()).unwrap();
        Arc::new(Storage::open(o, store).await.unwrap())
    });
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut g = c.benchmark_group("remote_write_ingest");
    g.sample_size(10);
    for clients in [1usize, 8] {
        let per_client = 2000;
        let bodies: Vec<Vec<u8>> = (0..clients)
            .map(|i| remote_write::encode(&request(per_client, base + i as i64)))
            .collect();
        g.throughput(Throughput::Elements((clients * per_client) as u64));
        g.bench_with_input(
            BenchmarkId::new("wal_fsync_clients", clients),
            &clients,
            |b, _| {
                b.to_async(&rt).iter(|| {
                    let storage = storage.clone();
                    let bodies = bodies.clone();
                    async move {
                        let tasks: Vec<_> = bodies
                            .into_iter()
                            .map(|body| {
                                let s = storage.clone();
                                tokio::spawn(async move {
                                    let batch = remote_write::decode(
                                        &body,
                                        &mut quiver::ingest::budget::Meter::new(Default::default()),
                                    )
                                    .unwrap();
                                    s.append(batch, WriteWindow::Any).await.unwrap()
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                })
            },
        );
    }
    g.finish();
}

/// Not timed by criterion: writes a realistic dataset, flushes and compacts it, and prints
/// bytes per sample of the resulting blocks.
fn storage_report(_c: &mut Criterion) {
    let series: usize = std::env::var("QUIVER_BENCH_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let hours: i64 = std::env::var("QUIVER_BENCH_HOURS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let day0 = 20_000 * 86_400_000i64;
        let mut o = StorageOptions::new(dir.path());
        o.wal = false;
        o.clock = Arc::new(move || day0 + 3 * 86_400_000);
        o.retention_ms = i64::MAX / 4;
        let store = objstore::build(None, dir.path(), &Default::default()).unwrap();
        let s = Storage::open(o, store).await.unwrap();
        let start = std::time::Instant::now();
        let mut n = 0usize;
        for b in dataset::scrapes(series, day0, hours) {
            n += s.append(b, WriteWindow::Any).await.unwrap();
            if s.should_flush() {
                s.flush().await.unwrap();
            }
        }
        s.flush().await.unwrap();
        while !s.compact().await.unwrap().merged.is_empty() {}
        let blocks = s.blocks();
        let bytes: u64 = blocks.iter().map(|b| b.bytes).sum();
        let mut samples_bytes = 0u64;
        for b in &blocks {
            let p = dir.path().join("blocks").join(&b.id).join("samples.parquet");
            samples_bytes += std::fs::metadata(p).unwrap().len();
        }
        println!(
            "REPORT storage: {series} series x {hours} h at 15 s = {n} samples; {} blocks; {:.3} bytes/sample (all block files), {:.3} bytes/sample (samples.parquet only); load+flush+compact {:.1} s",
            blocks.len(),
            bytes as f64 / n as f64,
            samples_bytes as f64 / n as f64,
            start.elapsed().as_secs_f64()
        );
    });
}

criterion_group!(benches, decode, append_with_wal, storage_report);
criterion_main!(benches);
