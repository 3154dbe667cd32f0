//! No panic on any input: random token soups and mutations of real queries go through
//! parse + evaluate (instant and range) against a small store. Errors are fine; panics fail.

use std::sync::Arc;

use proptest::prelude::*;
use quiver::promql::{Engine, QueryOptions};
use quiver::storage::{Storage, WriteWindow};

use crate::support::{batch, labels};

const TOKENS: &[&str] = &[
    "up",
    "m",
    "http_requests_total",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "5m",
    "1m:",
    "30s",
    ",",
    "=",
    "!=",
    "=~",
    "!~",
    "\"a\"",
    "\".*\"",
    "job",
    "le",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    ">",
    "<",
    ">=",
    "<=",
    "bool",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "by",
    "without",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "stddev",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "predict_linear",
    "histogram_quantile",
    "label_replace",
    "label_join",
    "absent",
    "absent_over_time",
    "sort",
    "clamp",
    "round",
    "time()",
    "vector",
    "scalar",
    "offset",
    "@",
    "start()",
    "end()",
    "0",
    "1",
    "-1",
    "0.5",
    "NaN",
    "Inf",
    "1e308",
    "quantile_over_time",
    "avg_over_time",
    "changes",
    "resets",
    "timestamp",
    "day_of_week",
    "abs",
    "ln",
    "sqrt",
];

const SEEDS: &[&str] = &[
    "sum by (job) (rate(http_requests_total[5m]))",
    "histogram_quantile(0.9, sum by (le) (rate(m_bucket[5m])))",
    "topk(2, up) or on(job) group_left(le) m",
    "max_over_time(deriv(up[5m:1m])[10m:]) offset -1m",
    "label_replace(up, \"x\", \"$1\", \"job\", \"(.*)\") / ignoring(x) up",
    "absent(nonexistent{a=\"b\"}) + scalar(count(up))",
    "count_values(\"v\", up) @ end()",
];

async fn store() -> Arc<Storage> {
    let s = Storage::in_memory().await.unwrap();
    let mut series = Vec::new();
    for job in ["a", "b"] {
        series.push((
            labels(&[("__name__", "up"), ("job", job)]),
            (0..40).map(|k| (k * 15_000, (k % 3) as f64)).collect(),
        ));
        series.push((
            labels(&[("__name__", "http_requests_total"), ("job", job)]),
            (0..40).map(|k| (k * 15_000, (k * 7 % 50) as f64)).collect(),
        ));
        for le in ["0.1", "1", "+Inf"] {
            series.push((
                labels(&[("__name__", "m_bucket"), ("job", job), ("le", le)]),
                (0..40).map(|k| (k * 15_000, k as f64)).collect(),
            ));
        }
    }
    s.append(batch(series), WriteWindow::Any).await.unwrap();
    Arc::new(s)
}

fn run(storage: &Arc<Storage>, rt: &tokio::runtime::Runtime, q: &str) {
    let Ok(expr) = Engine::parse(q) else { return };
    let engine = Engine::new(
        storage.clone(),
        QueryOptions {
            max_samples: 100_000,
            ..Default::default()
        },
    );
    rt.block_on(async {
        let _ = engine.instant(&expr, 300_000).await;
        let _ = engine.range(&expr, 0, 600_000, 30_000).await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_token_queries_never_panic(tokens in proptest::collection::vec(0..TOKENS.len(), 1..14)) {
        thread_local! {
            static ENV: (tokio::runtime::Runtime, Arc<Storage>) = {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let s = rt.block_on(store());
                (rt, s)
            };
        }
        let q: Vec<&str> = tokens.iter().map(|&i| TOKENS[i]).collect();
        ENV.with(|(rt, s)| run(s, rt, &q.join(" ")));
    }

    #[test]
    fn mutated_queries_never_panic(seed in 0..SEEDS.len(), pos in 0usize..80, byte in proptest::num::u8::ANY, op in 0..3u8) {
        thread_local! {
            static ENV: (tokio::runtime::Runtime, Arc<Storage>) = {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let s = rt.block_on(store());
                (rt, s)
            };
        }
        let mut q = SEEDS[seed].as_bytes().to_vec();
        let p = pos % (q.len() + 1);
        match op {
            0 => q.insert(p, byte),
            1 if p < q.len() => { q.remove(p); }
            _ if p < q.len() => q[p] = byte,
            _ => {}
        }
        let q = String::from_utf8_lossy(&q).into_owned();
        ENV.with(|(rt, s)| run(s, rt, &q));
    }
}
