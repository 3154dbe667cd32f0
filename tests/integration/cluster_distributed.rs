//! Acceptance (issue 26): one query on many queriers, as real processes on 127.0.0.1
//! (writers, a distributor and three queriers over moto_server): a querier killed with
//! SIGKILL while it runs a task of another querier's query, a query its client abandons,
//! and `quiver explain --url` showing the stages and their tasks.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{get, same};
use crate::cluster_kit::*;
use crate::support::*;

/// Heavy enough to keep every querier busy for seconds in a debug build: a median over
/// two hours of each of ~300 series at each of 3,601 steps, summed (a small answer).
const HEAVY: &str = "sum(quantile_over_time(0.5, http_request_duration_seconds_bucket[2h]))";

/// Partition streams of other queriers' plans running on `url` now.
async fn tasks(url: &str) -> f64 {
    metric(url, "quiver_worker_streams").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_survive_a_dead_querier_and_leave_no_tasks_behind() {
    if !moto_available("queries_survive_a_dead_querier_and_leave_no_tasks_behind") {
        return;
    }
    let (_t, tmp) = tempdir();
    let client = reqwest::Client::new();
    let cluster = Cluster::up(
        &tmp.join("cluster"),
        &["--writers", "2", "--distributors", "1", "--queriers", "3"],
        &[
            "--cluster-poll-interval",
            "200ms",
            "--cluster-secret",
            "worker-secret",
            "--cluster-distribute-min-samples",
            "0",
        ],
    );
    let single = Server::start(&tmp.join("single"), &[], &[]).await;
    let mut end = 0;
    for b in peer_dataset(&tmp, 1000, 2.0, 50_000) {
        let body = encode(&b);
        assert_eq!(
            post_write(&client, &single.url, body.clone())
                .await
                .status(),
            204
        );
        send_retrying(
            &client,
            &cluster.list("WRITE_URLS"),
            &body,
            Duration::from_secs(60),
        )
        .await;
        end = end.max(
            b.series
                .iter()
                .flat_map(|s| s.samples.iter().map(|(t, _)| *t))
                .max()
                .unwrap_or(0),
        );
    }
    let total = [("query", "SELECT count(*) AS n FROM samples".to_string())];
    let want = get(&client, &single.url, "/api/v1/sql", &total).await;
    let queriers = cluster.list("QUERY_URLS");
    for q in &queriers {
        wait_for_async(&format!("{q} to hold every sample"), 60, || {
            let (client, q, want, total) = (client.clone(), q.clone(), want.clone(), total.clone());
            async move {
                let got = get(&client, &q, "/api/v1/sql", &total).await;
                same(&want, &got).is_ok() && metric(&q, "quiver_cluster_workers").await == 3.0
            }
        })
        .await;
    }
    let (start_s, end_s) = ((end / 1000 - 3600).to_string(), (end / 1000).to_string());
    let range = |q: &str| {
        [
            ("query", q.to_string()),
            ("start", start_s.clone()),
            ("end", end_s.clone()),
            ("step", "1".to_string()),
        ]
    };
    let t = Instant::now();
    let want = get(&client, &single.url, "/api/v1/query_range", &range(HEAVY)).await;
    eprintln!("the heavy query took {:?} in one process", t.elapsed());
    assert!(
        want["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );

    // `quiver explain --url`: the stages of a query on a querier, their tasks and, after
    // running it, where each ran.
    let explain = std::process::Command::new(BIN)
        .args([
            "explain",
            "--url",
            &queriers[0],
            "--analyze",
            "sum by (job) (rate(http_requests_total[5m]))",
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&explain.stdout);
    eprintln!("{shown}");
    assert!(
        explain.status.success(),
        "{}",
        String::from_utf8_lossy(&explain.stderr)
    );
    assert!(
        shown.contains("Stage 1") && shown.contains("t2:"),
        "{shown}"
    );

    // A query that completes leaves no tasks behind.
    let t = Instant::now();
    let got = get(&client, &queriers[0], "/api/v1/query_range", &range(HEAVY)).await;
    eprintln!("the heavy query took {:?} over three queriers", t.elapsed());
    same(&want["data"], &got["data"]).unwrap();
    wait_for_async("the completed query's tasks to end", 20, || {
        let queriers = queriers.clone();
        async move {
            let mut n = 0.0;
            for q in &queriers {
                n += tasks(q).await;
            }
            n == 0.0
        }
    })
    .await;

    // A query its client abandons stops its tasks on every querier.
    let started = Instant::now();
    let abandon = {
        // Three times the work (0.35 s steps): left alone it would run for seconds more
        // than the wait below allows. The client gives up as a browser does: it closes
        // its connection (its own client, dropped with the task).
        let mut params = range(HEAVY);
        params[3].1 = "0.35".into();
        let url = queriers[0].clone();
        tokio::spawn(async move {
            let impatient = reqwest::Client::builder()
                .timeout(Duration::from_millis(800))
                .build()
                .unwrap();
            impatient
                .get(format!("{url}/api/v1/query_range"))
                .query(&params)
                .send()
                .await
        })
    };
    let mut seen = 0.0f64;
    while !abandon.is_finished() {
        seen = seen.max(tasks(&queriers[1]).await + tasks(&queriers[2]).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(abandon.await.unwrap().is_err(), "the client gave up first");
    eprintln!(
        "abandoned after {:?}; up to {seen} tasks on the other queriers",
        started.elapsed()
    );
    assert!(seen > 0.0, "the query ran tasks on the other queriers");
    wait_for_async(
        "every querier to drop the abandoned query's tasks",
        3,
        || {
            let queriers = queriers.clone();
            async move {
                let mut n = Vec::new();
                for q in &queriers {
                    n.push(tasks(q).await);
                }
                eprintln!("streams per querier: {n:?}");

                n.iter().all(|&x| x == 0.0)
            }
        },
    )
    .await;

    // A querier killed while it runs a task of another querier's query: the query is run
    // again on the two left, answers as the single process, and says so. (Counted from
    // here: on a loaded machine an earlier query may have needed a retry of its own.)
    let retried = || {
        metric(
            &queriers[0],
            "quiver_distributed_plans_total{outcome=\"retried\"}",
        )
    };
    let retried_before = retried().await;
    let run = {
        let (client, url, params) = (client.clone(), queriers[0].clone(), range(HEAVY));
        tokio::spawn(async move {
            let r = client
                .get(format!("{url}/api/v1/query_range"))
                .query(&params)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tasks(&queriers[1]).await == 0.0 {
        assert!(
            !run.is_finished(),
            "the query ended before querier-2 ran a task of it"
        );
        assert!(Instant::now() < deadline, "querier-2 never ran a task");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.signal("querier-2", "-KILL");
    let (status, got) = run.await.unwrap();
    assert_eq!(status, 200, "{got}");
    same(&want["data"], &got["data"]).unwrap_or_else(|e| panic!("after the kill: {e}"));
    let warnings = got["warnings"].to_string();
    assert!(
        warnings.contains("the query was run again on 2 querier(s)"),
        "{got}"
    );
    assert_eq!(retried().await - retried_before, 1.0, "one retry");
    // And the next query needs no retry once membership has dropped the dead one.
    drop(cluster);
}
