//! Acceptance (issue 25): faults on a running cluster while a sender writes (retrying 5xx
//! as Prometheus does). Processes are killed with SIGKILL by PID; the S3 server is frozen
//! (SIGSTOP) for 20 s. Every acknowledged sample must be readable afterwards, exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cluster_kit::*;
use crate::support::*;

const SERIES: usize = 40;

/// Shards owned by the given writers, as their `/metrics` say (a dead one counts 0).
async fn owned(cluster: &Cluster, writers: &[&str]) -> f64 {
    let mut n = 0.0;
    for w in writers {
        let url = cluster.url(w);
        if reqwest::get(format!("{url}/metrics")).await.is_ok() {
            n += metric(&url, "quiver_cluster_shards_owned").await;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_writers_queriers_distributors_and_compactors_lose_nothing() {
    if !moto_available("killed_writers_queriers_distributors_and_compactors_lose_nothing") {
        return;
    }
    let (_t, tmp) = tempdir();
    let lease_s = 3;
    let cluster = Cluster::up(
        &tmp.join("c"),
        &[
            "--writers",
            "3",
            "--distributors",
            "2",
            "--queriers",
            "2",
            "--compactors",
            "2",
            "--lease",
            "3s",
        ],
        &[
            "--head-flush-interval",
            "2s",
            "--cluster-poll-interval",
            "200ms",
        ],
    );
    let base = now_ms() - 20 * 60_000;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(cluster.list("WRITE_URLS"), SERIES, base, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A writer dies mid-write: its shards move to the others once the lease runs out.
    cluster.signal("writer-1", "-KILL");
    let killed = Instant::now();
    while owned(&cluster, &["writer-2", "writer-3"]).await < 8.0 {
        assert!(
            killed.elapsed() < Duration::from_secs(4 * lease_s),
            "shards not taken over\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "writer-1 killed: its shards moved in {:.1} s (lease {lease_s} s)",
        killed.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A querier and a distributor die: the others keep serving and taking writes.
    cluster.signal("querier-1", "-KILL");
    cluster.signal("distributor-1", "-KILL");
    let q2 = cluster.url("querier-2");
    for _ in 0..10 {
        let r = reqwest::get(format!("{q2}/api/v1/query?query=count(load_test)"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "querier-2 keeps answering");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two compactors: exactly one holds the lease; kill it and the other takes over.
    let (c1, c2) = (cluster.url("compactor-1"), cluster.url("compactor-2"));
    let mut seen_one = 0;
    for _ in 0..10 {
        let a = metric(&c1, "quiver_cluster_compactor_active").await;
        let b = metric(&c2, "quiver_cluster_compactor_active").await;
        assert!(a + b <= 1.0, "two compactors active at once");
        if a + b == 1.0 {
            seen_one += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(seen_one > 0, "no compactor took the lease");
    let (first, second) = if metric(&c1, "quiver_cluster_compactor_active").await == 1.0 {
        ("compactor-1", c2.clone())
    } else {
        ("compactor-2", c1.clone())
    };
    cluster.signal(first, "-KILL");
    wait_for_async("the other compactor to take the lease", 6 * lease_s, || {
        let u = second.clone();
        async move { metric(&u, "quiver_cluster_compactor_active").await == 1.0 }
    })
    .await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await.unwrap();
    eprintln!("sender: {sent:?}");
    assert!(sent.acked > 20, "the sender made progress: {sent:?}");
    assert!(
        sent.unreachable > 0 || !sent.refusals.is_empty(),
        "the faults were felt by the sender: {sent:?}"
    );
    wait_all_acked(&q2, SERIES, sent.acked, base / 1000 + 1800, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_object_store_gets_503_and_loses_nothing() {
    if !moto_available("a_frozen_object_store_gets_503_and_loses_nothing") {
        return;
    }
    let (_t, tmp) = tempdir();
    let cluster = Cluster::up(
        &tmp.join("c"),
        &[
            "--writers",
            "2",
            "--distributors",
            "1",
            "--queriers",
            "1",
            "--compactors",
            "0",
            "--lease",
            "4s",
        ],
        &[
            "--head-flush-interval",
            "3s",
            "--cluster-poll-interval",
            "200ms",
            "--s3-request-timeout",
            "1s",
            "--s3-max-retries",
            "0",
        ],
    );
    let base = now_ms() - 20 * 60_000;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(cluster.list("WRITE_URLS"), SERIES, base, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.signal("s3-1", "-STOP");
    tokio::time::sleep(Duration::from_secs(20)).await;
    cluster.signal("s3-1", "-CONT");
    let resumed = Instant::now();
    // Service resumes on its own: new requests are acknowledged again.
    let q = cluster.var("QUERY_URL");
    let before = metric(&cluster.var("WRITE_URL"), "quiver_cluster_pushes_total").await;
    wait_for_async("writes acknowledged again", 60, || {
        let u = cluster.var("WRITE_URL");
        async move { metric(&u, "quiver_cluster_pushes_total").await > before + 5.0 }
    })
    .await;
    eprintln!(
        "writes resumed {:.1} s after the store came back",
        resumed.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await.unwrap();
    eprintln!(
        "sender: acked {}, refusals {}",
        sent.acked,
        sent.refusals.len()
    );
    assert!(
        sent.refusals.iter().any(|&(c, retry)| c == 503 && retry),
        "writes during the outage got 503 with Retry-After: {:?}",
        &sent.refusals[..sent.refusals.len().min(10)]
    );
    assert!(
        sent.refusals.iter().all(|&(c, retry)| c != 503 || retry),
        "every 503 carries Retry-After"
    );
    wait_all_acked(&q, SERIES, sent.acked, base / 1000 + 1800, &cluster).await;
}
