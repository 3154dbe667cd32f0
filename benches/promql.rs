//! PromQL hot paths: `sum by (x) (rate(m[5m]))` over many series and steps, and the JSON
//! encoding of a large matrix.

mod dataset;

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver::promql::{Engine, QueryOptions, Steps};
use quiver::storage::{Storage, WriteWindow};

fn setup(series: usize, hours: i64) -> (tokio::runtime::Runtime, Arc<Storage>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = Storage::in_memory().await.unwrap();
        for b in dataset::scrapes(series, 0, hours) {
            s.append(b, WriteWindow::Any).await.unwrap();
        }
        // Half in blocks, half in the head, like a live server.
        s.flush().await.unwrap();
        Arc::new(s)
    });
    (rt, s)
}

fn sum_rate(c: &mut Criterion) {
    let series: usize = std::env::var("QUIVER_BENCH_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let (rt, storage) = setup(series, 6);
    let mut g = c.benchmark_group("promql");
    g.sample_size(10);
    let q = "sum by (job) (rate(node_cpu_seconds_total[5m]))";
    let expr = Engine::parse(q).unwrap();
    // 6 h at a 60 s step: 361 steps.
    let steps = 361;
    g.throughput(Throughput::Elements((series as u64 * 4 / 10) * steps));
    // The DataFusion plan with 1 and 2 partitions, and the step-vector evaluator.
    for partitions in [1usize, 2] {
        g.bench_function(
            format!("sum_by_rate_{series}_series_6h_step60s/datafusion_{partitions}_partitions"),
            |b| {
                b.to_async(&rt).iter(|| {
                    let engine = Engine::new(
                        storage.clone(),
                        QueryOptions {
                            partitions,
                            ..QueryOptions::default()
                        },
                    );
                    let expr = expr.clone();
                    async move { engine.range(&expr, 0, 6 * 3_600_000, 60_000).await.unwrap() }
                })
            },
        );
    }
    g.bench_function(
        format!("sum_by_rate_{series}_series_6h_step60s/evaluator"),
        |b| {
            b.to_async(&rt).iter(|| {
                let engine = Engine::new(
                    storage.clone(),
                    QueryOptions {
                        planner: false,
                        ..QueryOptions::default()
                    },
                );
                let expr = expr.clone();
                async move { engine.range(&expr, 0, 6 * 3_600_000, 60_000).await.unwrap() }
            })
        },
    );
    let expr = Engine::parse("node_filesystem_avail_bytes").unwrap();
    let engine = Engine::new(storage.clone(), QueryOptions::default());
    let v = rt
        .block_on(engine.range(&expr, 0, 6 * 3_600_000, 15_000))
        .unwrap();
    g.bench_function("json_encode_matrix", |b| {
        b.iter(|| quiver::api::json::range(&v, Steps::new(0, 6 * 3_600_000, 15_000)).len())
    });
    g.finish();
}

criterion_group!(benches, sum_rate);
criterion_main!(benches);
