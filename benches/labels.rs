//! Label endpoints' work for 1M series: label names and label values from the roaring index,
//! with and without a `match[]` selector, plus JSON encoding of the answer.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use quiver::ingest::{SeriesSamples, WriteBatch};
use quiver::model::{Labels, Matcher};
use quiver::storage::{Storage, WriteWindow};

fn setup(n: usize) -> (tokio::runtime::Runtime, Arc<Storage>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = Storage::in_memory().await.unwrap();
        let mut b = WriteBatch::default();
        for i in 0..n {
            let l = Labels::new(vec![
                ("__name__".into(), format!("metric_{}", i % 200)),
                ("job".into(), format!("job{}", i % 20)),
                ("instance".into(), format!("host-{}:9100", i % 2000)),
                ("pod".into(), format!("pod-{i}")),
            ])
            .unwrap();
            b.series.push(SeriesSamples {
                labels: l,
                samples: vec![(1_000, 1.0)],
            });
            if b.series.len() == 50_000 {
                s.append(std::mem::take(&mut b), WriteWindow::Any)
                    .await
                    .unwrap();
            }
        }
        s.append(b, WriteWindow::Any).await.unwrap();
        Arc::new(s)
    });
    (rt, s)
}

fn labels(c: &mut Criterion) {
    let n: usize = std::env::var("QUIVER_BENCH_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (_rt, s) = setup(n);
    let (lo, hi) = (i64::MIN / 2, i64::MAX / 2);
    let job3 = [Matcher::equal("job", "job3")];
    let mut g = c.benchmark_group(format!("labels_{n}_series"));
    g.sample_size(20);
    g.bench_function("label_names", |b| {
        b.iter(|| {
            serde_json::to_string(&s.label_names(&[], lo, hi))
                .unwrap()
                .len()
        })
    });
    g.bench_function("label_values_instance", |b| {
        b.iter(|| {
            serde_json::to_string(&s.label_values("instance", &[], lo, hi))
                .unwrap()
                .len()
        })
    });
    g.bench_function("label_names_match_job", |b| {
        b.iter(|| {
            serde_json::to_string(&s.label_names(&job3, lo, hi))
                .unwrap()
                .len()
        })
    });
    g.bench_function("label_values_instance_match_job", |b| {
        b.iter(|| {
            serde_json::to_string(&s.label_values("instance", &job3, lo, hi))
                .unwrap()
                .len()
        })
    });
    g.bench_function("label_values_name_match_regex", |b| {
        let m = [Matcher::regex("__name__", "metric_1.*", false).unwrap()];
        b.iter(|| {
            serde_json::to_string(&s.label_values("__name__", &m, lo, hi))
                .unwrap()
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, labels);
criterion_main!(benches);
