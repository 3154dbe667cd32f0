//! `agg(range_fn(selector))` as a DataFusion plan (the planner's range-function operator
//! under its aggregation): same answers as the evaluator, and a parallel physical plan.

use std::sync::Arc;

use quiver::promql::{Engine, QueryOptions, Value};
use quiver::storage::{Storage, WriteWindow};

use crate::support::{batch, labels};

async fn storage() -> Arc<Storage> {
    let s = Storage::in_memory().await.unwrap();
    let mut series = Vec::new();
    for i in 0..60 {
        let job = format!("job{}", i % 4);
        let inst = format!("i{i}");
        let l = labels(&[
            ("__name__", "req_total"),
            ("job", &job),
            ("instance", &inst),
        ]);
        let mut v = 0.0;
        let samples = (0..400)
            .map(|k| {
                v += ((k * 7 + i) % 13) as f64;
                if k == 200 && i % 5 == 0 {
                    v = 3.0; // counter reset
                }
                (k * 15_000 + 337, v)
            })
            .collect();
        series.push((l, samples));
    }
    s.append(batch(series[..30].to_vec()), WriteWindow::Any)
        .await
        .unwrap();
    s.flush().await.unwrap();
    s.append(batch(series[30..].to_vec()), WriteWindow::Any)
        .await
        .unwrap();
    Arc::new(s)
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fused_aggregation_matches_the_evaluator() {
    let s = storage().await;
    let opts = QueryOptions {
        partitions: 2,
        serial_below: 0,
        ..Default::default()
    };
    for (fused, reference) in [
        (
            "sum by (job) (rate(req_total[5m]))",
            "sum by (job) ((rate(req_total[5m])))",
        ),
        (
            "avg without (instance) (increase(req_total[2m]))",
            "avg without (instance) ((increase(req_total[2m])))",
        ),
        (
            "count(irate(req_total[1m]))",
            "count((irate(req_total[1m])))",
        ),
        ("sum(deriv(req_total[10m]))", "sum((deriv(req_total[10m])))"),
        // Groups of one series each: rows mapped, no cells (`AggOne`).
        (
            "sum by (job) (count by (job, instance) (req_total))",
            "sum by (job) (count by (job, instance) ((req_total)))",
        ),
        (
            "sum by (instance) (rate(req_total[5m]))",
            "sum by (instance) ((rate(req_total[5m])))",
        ),
        (
            "avg without (job) (-req_total)",
            "avg without (job) ((-req_total))",
        ),
    ] {
        let engine = Engine::new(s.clone(), opts.clone());
        let got = engine
            .range(&Engine::parse(fused).unwrap(), 300_000, 5_700_000, 60_000)
            .await
            .unwrap();
        assert!(engine.planned_nodes() > 0, "{fused}: not planned");
        // The reference: the step-vector evaluator alone.
        let evaluator = Engine::new(
            s.clone(),
            QueryOptions {
                planner: false,
                ..opts.clone()
            },
        );
        let want = evaluator
            .range(
                &Engine::parse(reference).unwrap(),
                300_000,
                5_700_000,
                60_000,
            )
            .await
            .unwrap();
        let (Value::Vector(mut g), Value::Vector(mut w)) = (got, want) else {
            panic!("vectors expected")
        };
        g.sort_by(|a, b| a.labels.cmp(&b.labels));
        w.sort_by(|a, b| a.labels.cmp(&b.labels));
        assert_eq!(g.len(), w.len(), "{fused}");
        assert!(!g.is_empty());
        for (a, b) in g.iter().zip(&w) {
            assert_eq!(a.labels, b.labels, "{fused}");
            for (x, y) in a.vals.iter().zip(&b.vals) {
                match (x, y) {
                    (Some(x), Some(y)) => assert!(close(*x, *y), "{fused}: {x} vs {y}"),
                    (None, None) => {}
                    _ => panic!("{fused}: presence differs {x:?} vs {y:?}"),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_a_parallel_datafusion_plan() {
    let s = storage().await;
    let engine = Engine::new(
        s,
        QueryOptions {
            partitions: 2,
            serial_below: 0,
            ..Default::default()
        },
    );
    let plan = engine
        .explain(
            &Engine::parse("sum by (job) (rate(req_total[5m]))").unwrap(),
            0,
            3_600_000,
            60_000,
        )
        .await
        .unwrap();
    eprintln!("{plan}");
    assert!(
        plan.contains("RangeFnSelectExec: rate(req_total[5m])"),
        "{plan}"
    );
    assert!(plan.contains("RegroupExec"), "{plan}");
    assert!(plan.contains("partitions=2"), "{plan}");
    assert!(plan.contains("StepAggExec: mode=Partial"), "{plan}");
    assert!(plan.contains("StepAggExec: mode=Final"), "{plan}");
    assert!(
        plan.contains("RepartitionExec: partitioning=Hash"),
        "{plan}"
    );
}

/// Every selector of one query reads one snapshot of the storage: samples committed after
/// the query's first read (here between two evaluations on one engine) are in none of its
/// selectors, on the fused path and the evaluator's alike; a new query sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reads_one_snapshot() {
    let s = storage().await;
    let opts = QueryOptions {
        partitions: 2,
        serial_below: 0,
        ..Default::default()
    };
    let queries = [
        "sum by (job) (rate(req_total[5m]))",
        "sum by (job) (req_total)",
    ];
    async fn run(engine: &Engine, q: &str) -> String {
        let expr = Engine::parse(q).unwrap();
        let v = engine
            .range(&expr, 300_000, 5_700_000, 60_000)
            .await
            .unwrap();
        format!("{v:?}")
    }
    let engine = Engine::new(s.clone(), opts.clone());
    let mut first = Vec::new();
    for q in queries {
        first.push(run(&engine, q).await);
    }
    // Overwrites of head samples and new samples, for every series.
    let later: Vec<_> = (0..60)
        .map(|i| {
            let job = format!("job{}", i % 4);
            let inst = format!("i{i}");
            let l = labels(&[
                ("__name__", "req_total"),
                ("job", &job),
                ("instance", &inst),
            ]);
            (l, (300..420).map(|k| (k * 15_000 + 337, 1e6)).collect())
        })
        .collect();
    s.append(batch(later), WriteWindow::Any).await.unwrap();
    for (q, want) in queries.iter().zip(&first) {
        assert_eq!(&run(&engine, q).await, want, "{q}: the query's snapshot");
        let fresh = Engine::new(s.clone(), opts.clone());
        assert_ne!(&run(&fresh, q).await, want, "{q}: a new query");
    }
}
