//! The object store goes away: writes are refused with 503 once the unflushed heads reach
//! their memory limit (never acknowledged without the WAL), and everything acknowledged is
//! flushed and queryable once the store is back; a server started while the store is down
//! serves its WAL and becomes ready when the store returns. moto_server is "down" while
//! stopped with SIGSTOP (requests hang and time out, as in a network partition), so its
//! in-memory bucket survives the outage.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

async fn stored_timestamps(url: &str, metric: &str) -> std::collections::HashSet<i64> {
    let q = format!(
        "SELECT s.timestamp AS t FROM samples s JOIN series r ON s.series_id = r.series_id WHERE r.metric = '{metric}'"
    );
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/sql"))
        .query(&[("query", q.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    v["data"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["t"].as_i64().unwrap())
        .collect()
}

fn write_body(metric: &str, base: i64, from: i64, n: i64) -> Vec<u8> {
    encode(&batch(vec![(
        labels(&[("__name__", metric)]),
        (from..from + n).map(|k| (base + k, k as f64)).collect(),
    )]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_back_off_while_s3_is_down_and_nothing_acknowledged_is_lost() {
    if !moto_available("writes_back_off_while_s3_is_down_and_nothing_acknowledged_is_lost") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let moto = start_moto(port, "outage", &tmp.path().join("moto.log")).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = tmp.path().join("data");
    let server = Server::start(
        &dir,
        &[
            "--storage-url",
            "s3://outage/q",
            "--s3-endpoint",
            &endpoint,
            "--s3-request-timeout",
            "1s",
            "--s3-max-retries",
            "1",
            "--head-max-samples",
            "3000",
            // ~35,000 samples of 28 bytes.
            "--head-memory-limit",
            "1000000",
        ],
        &S3_ENV,
    )
    .await;
    let client = reqwest::Client::new();
    let base = now_ms() - 60 * 60_000;
    let mut acked = Vec::new();
    let mut k = 0i64;
    let send = async |k: &mut i64, acked: &mut Vec<i64>| -> u16 {
        let r = post_write(
            &client,
            &server.url,
            write_body("quiver_outage", base, *k, 1000),
        )
        .await;
        let st = r.status().as_u16();
        if st == 204 {
            acked.extend(*k..*k + 1000);
        } else {
            assert_eq!(st, 503, "only 204 or 503 while S3 is down");
            assert!(
                r.headers().get("retry-after").is_some(),
                "503 without Retry-After"
            );
        }
        *k += 1000;
        st
    };
    // Healthy: writes flow and flushes reach the bucket.
    for _ in 0..5 {
        assert_eq!(send(&mut k, &mut acked).await, 204);
    }
    wait_for_metric(&server.url, "quiver_head_flushes_total", |v| v >= 1.0).await;

    signal(moto.0.id(), "-STOP");
    let deadline = Instant::now() + Duration::from_secs(90);
    // Until writes are refused and at least one flush has failed (and left its head frozen).
    let mut refused = 0;
    while refused < 3 || metric(&server.url, "quiver_head_flush_failures_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "writes were never refused, or no flush failed, while S3 was down"
        );
        if send(&mut k, &mut acked).await == 503 {
            refused += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(metric(&server.url, "quiver_frozen_heads").await >= 1.0);

    signal(moto.0.id(), "-CONT");
    // Retries with backoff (≤ 30 s) write the frozen heads out.
    wait_for_metric(&server.url, "quiver_frozen_heads", |v| v == 0.0).await;
    let mut accepted_again = false;
    for _ in 0..100 {
        if send(&mut k, &mut acked).await == 204 {
            accepted_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted_again, "writes still refused after S3 returned");
    let stored = stored_timestamps(&server.url, "quiver_outage").await;
    let missing: Vec<_> = acked
        .iter()
        .filter(|t| !stored.contains(&(base + **t)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged samples missing",
        missing.len(),
        acked.len()
    );
    drop(server);
    drop(moto);
}

async fn wait_for_metric(url: &str, name: &str, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = metric(url, name).await;
        if ok(v) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_s3_down_and_becomes_ready_when_it_returns() {
    if !moto_available("starts_with_s3_down_and_becomes_ready_when_it_returns") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = tmp.path().join("data");
    // Nothing listens on the port yet: the store is down at startup.
    let server = Server::start_until(
        &dir,
        &[
            "--storage-url",
            "s3://late/q",
            "--s3-endpoint",
            &endpoint,
            "--s3-request-timeout",
            "1s",
            "--s3-max-retries",
            "0",
        ],
        &S3_ENV,
        "/-/healthy",
    )
    .await;
    let client = reqwest::Client::new();
    // First the WAL replays ("replay in progress"), then the block listing fails: from
    // then on /-/ready says why, and stays 503.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("{}/-/ready", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503);
        let why = ready.text().await.unwrap();
        if why.contains("object store") {
            break;
        }
        assert!(Instant::now() < deadline, "/-/ready never said why: {why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The WAL takes writes meanwhile.
    let base = now_ms() - 60_000;
    let r = post_write(
        &client,
        &server.url,
        write_body("quiver_late", base, 0, 100),
    )
    .await;
    assert_eq!(r.status(), 204);
    // Queries answer from the WAL and head, and say that blocks are missing.
    let r = client
        .get(format!("{}/api/v1/query", server.url))
        .query(&[("query", "count_over_time(quiver_late[5m])")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "100", "{v}");
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("blocks are not loaded")),
        "{v}"
    );

    let _moto = start_moto(port, "late", &tmp.path().join("moto.log")).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = client
            .get(format!("{}/-/ready", server.url))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never became ready after S3 returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = stored_timestamps(&server.url, "quiver_late").await;
    assert_eq!(stored.len(), 100);
}
