//! Acceptance (issue 25): HA pairs deduplicated by the distributors; a new querier over a
//! bucket of more than 100 blocks reads the manifest and the index files only; an added
//! writer takes shards while a sender writes, losing and duplicating nothing; a new querier
//! is ready only once it has read the writers' WALs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::cluster_kit::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ha_pairs_store_only_the_elected_replica() {
    if !moto_available("ha_pairs_store_only_the_elected_replica") {
        return;
    }
    let (_t, tmp) = tempdir();
    let cluster = Cluster::up(
        &tmp.join("c"),
        &[
            "--writers",
            "2",
            "--distributors",
            "2",
            "--queriers",
            "1",
            "--compactors",
            "0",
        ],
        &[
            "--ha-failover-timeout",
            "3s",
            "--cluster-poll-interval",
            "200ms",
            "--cluster-secret",
            "s3cret",
        ],
    );
    let client = reqwest::Client::new();
    let dist = cluster.list("WRITE_URLS");
    let base = now_ms() - 10 * 60_000;
    // Replica `r` sends value `v` for every series at scrape `k` (both scrape the same
    // targets at the same times), through either distributor.
    let send = |r: &'static str, v: f64, k: i64| {
        let b = batch(
            (0..8)
                .map(|i| {
                    (
                        labels(&[
                            ("__name__", "ha_test"),
                            ("cluster", "c1"),
                            ("__replica__", r),
                            ("i", &i.to_string()),
                        ]),
                        vec![(base + k * 1000, v)],
                    )
                })
                .collect(),
        );
        // Rotating over both distributors, retrying 5xx (shards may still be settling).
        let mut urls = dist.clone();
        urls.rotate_left((k as usize) % dist.len());
        let client = client.clone();
        async move {
            send_retrying(&client, &urls, &encode(&b), Duration::from_secs(30)).await;
        }
    };
    for k in 0..10 {
        send("a", 1.0, k).await;
        send("b", 2.0, k).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let q = cluster.var("QUERY_URL");
    let at = base / 1000 + 600;
    wait_for_async("replica a's samples", 30, || {
        let q = q.clone();
        async move { scalar_of(&query(&q, "sum(count_over_time(ha_test[1h]))", at).await) == Some(80.0) }
    })
    .await;
    let r = query(&q, "max(max_over_time(ha_test[1h]))", at).await;
    assert_eq!(
        scalar_of(&r),
        Some(1.0),
        "only the elected replica (a) is stored: {r}"
    );
    let series: Value = client
        .get(format!("{q}/api/v1/series"))
        .query(&[("match[]", "ha_test")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let series = series["data"].as_array().unwrap();
    assert_eq!(series.len(), 8, "{series:?}");
    assert!(
        series
            .iter()
            .all(|s| s.get("__replica__").is_none() && s["cluster"] == "c1"),
        "stored without the replica label: {series:?}"
    );

    // Replica a stops; b keeps sending. Once a has been silent for the failover timeout,
    // b is elected and its samples are stored.
    for k in 10..40 {
        send("b", 2.0, k).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_async("replica b's samples after failover", 30, || {
        let q = q.clone();
        async move { scalar_of(&query(&q, "max(max_over_time(ha_test[1h]))", at).await) == Some(2.0) }
    })
    .await;
    let count = scalar_of(&query(&q, "sum(count_over_time(ha_test[1h]))", at).await).unwrap();
    let from_b = (count - 80.0) / 8.0;
    assert!(
        (1.0..30.0).contains(&from_b),
        "b's samples during a's grace period are dropped, later ones stored: {from_b}"
    );
    // b's later samples may still be reaching the querier, so the count and the sum are
    // compared inside one query (one snapshot): every sample of a (value 1) adds -1,
    // every sample of b (value 2) adds 0, so the answer is minus a's 80 samples.
    let a_only = scalar_of(
        &query(
            &q,
            "sum(sum_over_time(ha_test[1h])) - 2 * sum(count_over_time(ha_test[1h]))",
            at,
        )
        .await,
    )
    .unwrap();
    assert_eq!(a_only, -80.0, "a's samples are 1, b's 2");
    assert!(
        metric(&dist[0], "quiver_ha_dropped_samples_total").await
            + metric(&dist[1], "quiver_ha_dropped_samples_total").await
            > 0.0
    );

    // Remote write 2.0 (with metadata) and OTLP (with an exemplar) go through the
    // distributors too, and reach the querier's series, metadata and exemplar APIs.
    let t = now_ms() - 30_000;
    let v2 = quiver::ingest::remote_write_v2::encode(&quiver::ingest::WriteBatch {
        metadata: vec![quiver::ingest::MetricMetadata {
            metric_family_name: "rw2_test".into(),
            metric_type: "gauge".into(),
            help: "sent by remote write 2.0".into(),
            unit: String::new(),
            carriers: vec![],
        }],
        ..batch(vec![(
            labels(&[("__name__", "rw2_test"), ("job", "x")]),
            vec![(t, 7.0)],
        )])
    });
    let r = client
        .post(format!("{}/api/v1/write", dist[0]))
        .header("Content-Encoding", "snappy")
        .header(
            "Content-Type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        )
        .body(v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let t_ns = t as u128 * 1_000_000;
    let otlp = serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "otlp"}}]},
        "scopeMetrics": [{"metrics": [{
            "name": "otlp_test",
            "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [{"timeUnixNano": t_ns.to_string(), "asDouble": 3.0,
                "exemplars": [{"timeUnixNano": t_ns.to_string(), "asDouble": 3.0,
                    "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}]}]}
        }]}]
    }]});
    let r = client
        .post(format!("{}/api/v1/otlp/v1/metrics", dist[1]))
        .header("Content-Type", "application/json")
        .body(otlp.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let now_s = t / 1000 + 1;
    wait_for_async("rw2 and OTLP samples on the querier", 30, || {
        let q = q.clone();
        async move {
            scalar_of(&query(&q, "sum(rw2_test) + sum(otlp_test_total)", now_s).await) == Some(10.0)
        }
    })
    .await;
    let md: Value = client
        .get(format!("{q}/api/v1/metadata"))
        .query(&[("metric", "rw2_test")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        md["data"]["rw2_test"][0]["help"], "sent by remote write 2.0",
        "{md}"
    );
    let ex: Value = client
        .get(format!("{q}/api/v1/query_exemplars"))
        .query(&[
            ("query", "otlp_test_total".to_string()),
            ("start", (now_s - 60).to_string()),
            ("end", now_s.to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ex["data"][0]["exemplars"][0]["labels"]["trace_id"], "5b8efff798038103d269b633813fc60c",
        "{ex}"
    );

    // Every write above went distributor → writer with the cluster secret; a writer's
    // internal routes refuse anyone without it.
    let w1 = cluster.url("writer-1");
    for secret in [None, Some("wrong")] {
        let mut push = client
            .post(format!("{w1}/internal/v1/push?shard=0"))
            .body(Vec::new());
        let mut tail = client.get(format!("{w1}/internal/v1/tail?shard=0"));
        if let Some(s) = secret {
            push = push.header("X-Quiver-Cluster-Secret", s);
            tail = tail.header("X-Quiver-Cluster-Secret", s);
        }
        assert_eq!(
            push.send().await.unwrap().status(),
            401,
            "push with {secret:?}"
        );
        assert_eq!(
            tail.send().await.unwrap().status(),
            401,
            "tail with {secret:?}"
        );
    }
    let r = client
        .get(format!("{w1}/internal/v1/tail?shard=0"))
        .header("X-Quiver-Cluster-Secret", "s3cret")
        .send()
        .await
        .unwrap()
        .status();
    assert!(r == 200 || r == 409, "the secret opens the route: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_querier_reads_only_the_index_and_a_new_writer_takes_shards() {
    if !moto_available("a_new_querier_reads_only_the_index_and_a_new_writer_takes_shards") {
        return;
    }
    let (_t, tmp) = tempdir();
    let mut cluster = Cluster::up(
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
        ],
        &[
            "--ooo-window",
            "40h",
            "--head-flush-interval",
            "2s",
            "--cluster-poll-interval",
            "200ms",
        ],
    );
    let client = reqwest::Client::new();
    let w = cluster.var("WRITE_URL");
    // 64 series over 16 two-hour windows: each shard's flush cuts a block per window.
    let start = now_ms() - 33 * 3_600_000;
    let b = batch(
        (0..64)
            .map(|i| {
                (
                    labels(&[("__name__", "old_test"), ("i", &i.to_string())]),
                    (0..16)
                        .map(|w| (start + w * 2 * 3_600_000, w as f64))
                        .collect(),
                )
            })
            .collect(),
    );
    send_retrying(
        &client,
        std::slice::from_ref(&w),
        &encode(&b),
        Duration::from_secs(30),
    )
    .await;
    let q1 = cluster.var("QUERY_URL");
    wait_for_async("more than 100 blocks listed", 60, || {
        let q = q1.clone();
        async move { metric(&q, "quiver_blocks").await >= 100.0 }
    })
    .await;
    let blocks = metric(&q1, "quiver_blocks").await;

    let name = cluster.add("querier");
    let q2 = cluster.url(&name);
    let page = reqwest::get(format!("{q2}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let requests = |file: &str, op: Option<&str>| -> f64 {
        page.lines()
            .filter(|l| l.starts_with("quiver_object_store_requests_total{"))
            .filter(|l| l.contains(&format!("file=\"{file}\"")))
            .filter(|l| op.is_none_or(|o| l.contains(&format!("operation=\"{o}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b)
    };
    eprintln!(
        "new querier over {blocks} blocks: manifest {}, series {}, postings {}, meta {}, samples {}, lists {}",
        requests("manifest", None),
        requests("series", None),
        requests("postings", None),
        requests("meta", None),
        requests("samples", None),
        page.lines()
            .filter(|l| l.starts_with("quiver_object_store_requests_total{")
                && l.contains("operation=\"list\""))
            .count()
    );
    assert!(
        requests("manifest", Some("get")) >= 1.0,
        "read the manifest"
    );
    assert!(
        requests("series", None) >= blocks,
        "read every block's series file"
    );
    assert_eq!(
        requests("meta", None),
        0.0,
        "no meta.json: the manifest has the metas"
    );
    assert_eq!(
        requests("samples", None),
        0.0,
        "no samples read to get ready"
    );
    assert_eq!(
        page.lines()
            .filter(|l| l.starts_with("quiver_object_store_requests_total{")
                && l.contains("operation=\"list\"")
                // The cluster's own state (the queriers' heartbeats: the workers of
                // distributed plans), never the blocks.
                && !l.contains("file=\"lease\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>(),
        0.0,
        "nothing listed but the queriers' heartbeats"
    );
    let at = (start + 31 * 3_600_000) / 1000;
    let r = query(&q2, "sum(count_over_time(old_test[40h]))", at).await;
    assert_eq!(
        scalar_of(&r),
        Some(64.0 * 16.0),
        "the new querier serves the blocks: {r}"
    );

    // A writer joins while a sender writes: it takes shards; nothing lost or doubled.
    let base = now_ms() - 20 * 60_000;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(cluster.list("WRITE_URLS"), 40, base, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let added = cluster.add("writer");
    let url = cluster.url(&added);
    wait_for_async("the new writer to own shards", 60, || {
        let u = url.clone();
        async move { metric(&u, "quiver_cluster_shards_owned").await >= 2.0 }
    })
    .await;
    let total = metric(&cluster.url("writer-1"), "quiver_cluster_shards_owned").await
        + metric(&cluster.url("writer-2"), "quiver_cluster_shards_owned").await
        + metric(&url, "quiver_cluster_shards_owned").await;
    assert!(total <= 8.0, "no shard owned twice: {total}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await.unwrap();
    eprintln!("sender while a writer joined: {sent:?}");
    wait_all_acked(&q1, 40, sent.acked, base / 1000 + 1800, &cluster).await;
}

/// A querier says ready only once it has read every writer's WAL: a new one answered
/// without a shard's unflushed samples when queried right after `/-/ready` (a CI run saw
/// 896 of 1,024), and a WAL longer than one poll's reading took more than one round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_querier_is_ready_once_it_has_read_every_writers_wal() {
    if !moto_available("a_new_querier_is_ready_once_it_has_read_every_writers_wal") {
        return;
    }
    let (_t, tmp) = tempdir();
    let mut cluster = Cluster::up(
        &tmp.join("c"),
        &[
            "--writers",
            "1",
            "--distributors",
            "1",
            "--queriers",
            "1",
            "--compactors",
            "0",
        ],
        // Paced commits of 5 ms, so that a thousand requests take seconds, not minutes.
        &[
            "--cluster-poll-interval",
            "200ms",
            "--cluster-commit-interval",
            "5ms",
        ],
    );
    let client = reqwest::Client::new();
    let w = cluster.var("WRITE_URL");
    // One series, one request per sample: each request is a commit, so one WAL object in
    // one shard, about four polls' reading (256 each). Nothing is flushed.
    let n = 1000i64;
    let start = now_ms() - 30 * 60_000;
    for k in 0..n {
        let b = batch(vec![(
            labels(&[("__name__", "wal_only")]),
            vec![(start + k * 1000, k as f64)],
        )]);
        send_retrying(
            &client,
            std::slice::from_ref(&w),
            &encode(&b),
            Duration::from_secs(30),
        )
        .await;
    }
    let at = (start + n * 1000) / 1000;
    let adding = std::time::Instant::now();
    let name = cluster.add("querier");
    eprintln!(
        "a querier over {n} WAL objects was ready in {:?}",
        adding.elapsed()
    );
    let q2 = cluster.url(&name);
    let r = query(&q2, "count_over_time(wal_only[1h])", at).await;
    let wal_gets = metric(
        &q2,
        r#"quiver_object_store_requests_total{file="wal",operation="get"}"#,
    )
    .await;
    assert_eq!(
        scalar_of(&r),
        Some(n as f64),
        "the new querier answers with every sample in the WAL once ready: {r}"
    );
    assert!(
        wal_gets >= n as f64,
        "the WAL is one object per request: {wal_gets} read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_compactor_merges_through_the_manifest_and_answers_stay_the_same() {
    if !moto_available("the_compactor_merges_through_the_manifest_and_answers_stay_the_same") {
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
            "1",
        ],
        &[
            "--head-flush-interval",
            "2s",
            "--compaction-interval",
            "2s",
            "--cluster-deletion-delay",
            "1s",
            "--cluster-poll-interval",
            "200ms",
        ],
    );
    // Backfill (the import's window is the retention): 40 series over 30 h, sealed windows.
    let start_ms = (now_ms() - 32 * 3_600_000) / 3_600_000 * 3_600_000;
    let mut text = String::new();
    for i in 0..40 {
        for h in 0..30 {
            text.push_str(&format!(
                "backfill{{i=\"{i}\"}} {h} {}\n",
                start_ms + h * 3_600_000
            ));
        }
    }
    let w = cluster.var("WRITE_URL");
    // Right after start the writers still hand shards to each other: a distributor then
    // answers 503 with Retry-After (as Mimir's do), and the client sends again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = reqwest::Client::new()
            .post(format!("{w}/api/v1/import/prometheus"))
            .body(text.clone())
            .send()
            .await
            .unwrap();
        let (status, body) = (r.status(), r.text().await.unwrap());
        if status == 503 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert_eq!(status, 204, "{body}");
        break;
    }
    let q = cluster.var("QUERY_URL");
    let at = start_ms / 1000 + 31 * 3600;
    let count = "sum(count_over_time(backfill[40h]))";
    let total = "sum(sum_over_time(backfill[40h]))";
    wait_for_async("the import flushed", 60, || {
        let q = q.clone();
        async move { scalar_of(&query(&q, count, at).await) == Some(1200.0) }
    })
    .await;
    // Then the compactor merges each sealed window's blocks (one per shard and window) and
    // the querier follows the manifest: fewer blocks, the same answers.
    let mut most = 0.0f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let fewest = loop {
        let b = metric(&q, "quiver_blocks").await;
        most = most.max(b);
        // One block per shard and 2 h window before; merged windows after.
        if most >= 50.0 && b * 4.0 <= most {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction published: {b} blocks (most {most})\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("querier blocks: {most} before compaction, {fewest} after");
    assert_eq!(scalar_of(&query(&q, count, at).await), Some(1200.0));
    assert_eq!(
        scalar_of(&query(&q, total, at).await),
        Some(40.0 * (0..30).sum::<i64>() as f64)
    );
    // Replaced blocks' files go after the deletion delay; a new querier reads the merged ones.
    let mut cluster = cluster;
    let name = cluster.add("querier");
    let q2 = cluster.url(&name);
    assert_eq!(scalar_of(&query(&q2, count, at).await), Some(1200.0));
    assert!(metric(&q2, "quiver_blocks").await <= fewest);
}
