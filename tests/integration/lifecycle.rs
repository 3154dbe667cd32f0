//! Process lifecycle: SIGTERM lets in-flight requests finish and loses no acknowledged
//! sample; tenants are bounded and cost no thread each.

use std::time::{Duration, Instant};

use crate::support::*;

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_keeps_every_acknowledged_sample() {
    let (_tmp, dir) = tempdir();
    let mut server = Server::start(&dir, &["--head-flush-interval", "1s"], &[]).await;
    let base = now_ms() - 3_600_000;
    // Enough history that range queries take a while (tens of milliseconds), so some are
    // in flight at the signal.
    let client = reqwest::Client::new();
    for chunk in 0..4 {
        let series = (0..300)
            .map(|s| {
                let l = labels(&[("__name__", "quiver_term_bg"), ("s", &s.to_string())]);
                (
                    l,
                    (0..240)
                        .map(|k| (base + (chunk * 240 + k) * 3_000, k as f64))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            post_write(&client, &server.url, encode(&batch(series)))
                .await
                .status(),
            204
        );
    }
    let t0 = Instant::now();
    let url = server.url.clone();
    // (sent at, answered at, outcome) of every request; outcome Err = cut off.
    type Log = Vec<(Duration, Duration, Result<u16, String>)>;
    let writer = {
        let url = url.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let mut log: Log = Vec::new();
            let mut acked = Vec::new();
            for k in 0..100_000i64 {
                let body = encode(&batch(vec![(
                    labels(&[("__name__", "quiver_term")]),
                    vec![(base + k, k as f64)],
                )]));
                let sent = t0.elapsed();
                let r = client
                    .post(format!("{url}/api/v1/write"))
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await;
                let done = t0.elapsed();
                match r {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        if st == 204 {
                            acked.push(base + k);
                        }
                        log.push((sent, done, Ok(st)));
                    }
                    Err(e) => {
                        log.push((sent, done, Err(e.to_string())));
                        break;
                    }
                }
            }
            (log, acked)
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let mut log: Log = Vec::new();
                let end = (base + 3_600_000) / 1000;
                loop {
                    let sent = t0.elapsed();
                    let r = client
                        .get(format!("{url}/api/v1/query_range"))
                        .query(&[
                            ("query", "sum by (s) (rate(quiver_term_bg[5m])) + on(s) group_left max_over_time(quiver_term_bg[10m])"),
                            ("start", &(end - 3600).to_string()),
                            ("end", &end.to_string()),
                            ("step", "1"),
                            ("nocache", "1"),
                        ])
                        .send()
                        .await;
                    let done = t0.elapsed();
                    match r {
                        Ok(r) => {
                            let st = r.status().as_u16();
                            // The body must arrive whole too.
                            let body = r.text().await;
                            log.push((sent, done, body.map(|_| st).map_err(|e| e.to_string())));
                        }
                        Err(e) => {
                            log.push((sent, done, Err(e.to_string())));
                            break;
                        }
                    }
                }
                log
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let signal_at = t0.elapsed();
    let pid = server.child.id();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = server.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    let (wlog, acked) = writer.await.unwrap();
    let mut logs = wlog;
    for r in readers {
        logs.extend(r.await.unwrap());
    }
    // Sent well before the signal (not racing the listener's close) and answered after it:
    // in flight. Each must have a complete answer.
    let margin = Duration::from_millis(20);
    let in_flight: Vec<_> = logs
        .iter()
        .filter(|(sent, done, _)| *sent + margin < signal_at && *done >= signal_at)
        .collect();
    assert!(
        !in_flight.is_empty(),
        "no request was in flight at the signal; the test proves nothing"
    );
    for (sent, done, r) in &in_flight {
        assert!(
            matches!(r, Ok(200 | 204)),
            "request sent at {sent:?}, in flight at the signal ({signal_at:?}), ended at {done:?} with {r:?}"
        );
    }
    assert!(!acked.is_empty());
    eprintln!(
        "SIGTERM: {} requests in flight at the signal all answered; {} writes acknowledged; exit {status:?}",
        in_flight.len(),
        acked.len()
    );

    // Everything acknowledged is there after a restart (WAL or blocks).
    let rows = sql_rows(
        &dir,
        &[],
        "SELECT s.timestamp FROM samples s JOIN series r ON s.series_id = r.series_id WHERE r.metric = 'quiver_term' ORDER BY 1",
    );
    let stored: std::collections::HashSet<i64> = rows.iter().map(|r| r.parse().unwrap()).collect();
    let missing: Vec<_> = acked.iter().filter(|t| !stored.contains(t)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged samples missing after SIGTERM, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tenants_cost_no_thread_each() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &["--multi-tenancy", "--max-tenants", "1000"], &[]).await;
    let pid = server.child.id();
    let before = threads(pid);
    let client = reqwest::Client::new();
    let now = now_ms();
    let mut peak = before;
    let tenants: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
    for chunk in tenants.chunks(16) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|t| {
                let body = encode(&batch(vec![(
                    labels(&[("__name__", "quiver_tenant"), ("t", t)]),
                    vec![(now, 1.0)],
                )]));
                client
                    .post(format!("{}/api/v1/write", server.url))
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Scope-OrgID", t.as_str())
                    .body(body)
                    .send()
            })
            .collect();
        for r in futures::future::join_all(sends).await {
            assert_eq!(r.unwrap().status(), 204);
        }
        peak = peak.max(threads(pid));
    }
    eprintln!(
        "threads: {before} at start, {peak} at most while 1000 tenants were opened and written"
    );
    // Before: one WAL thread per tenant (1,000+). Now: the runtimes and bounded pools.
    assert!(
        peak < 120,
        "{peak} threads with 1000 tenants (started with {before})"
    );
    // Each tenant sees only its own series.
    let r: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("{}/api/v1/query", server.url))
            .query(&[("query", "quiver_tenant")])
            .header("X-Scope-OrgID", "t7")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let result = r["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{r}");
    assert_eq!(result[0]["metric"]["t"], "t7");
    // Tenant 1001 is refused (the default tenant does not count).
    let r = client
        .post(format!("{}/api/v1/write", server.url))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Scope-OrgID", "one-too-many")
        .body(encode(&batch(vec![(
            labels(&[("__name__", "quiver_tenant")]),
            vec![(now, 1.0)],
        )])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("--max-tenants"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_multi_tenancy_the_tenant_header_is_ignored() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &[], &[]).await;
    let client = reqwest::Client::new();
    let now = now_ms();
    for t in ["a", "b", "c"] {
        let r = client
            .post(format!("{}/api/v1/write", server.url))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Scope-OrgID", t)
            .body(encode(&batch(vec![(
                labels(&[("__name__", "quiver_notenant"), ("t", t)]),
                vec![(now, 1.0)],
            )])))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    // All three series are in the one (default) tenant, whatever header a query sends.
    let r: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("{}/api/v1/query", server.url))
            .query(&[("query", "quiver_notenant")])
            .header("X-Scope-OrgID", "zzz")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(r["data"]["result"].as_array().unwrap().len(), 3, "{r}");
    assert!(!dir.join("tenants").exists());
}

/// The head memory limit is one bound for the process, not one per tenant: many tenants
/// cannot together hold more than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_memory_limit_holds_across_tenants() {
    use quiver::storage::{StorageError, StorageOptions, Tenants, WriteWindow};
    let (_tmp, dir) = tempdir();
    let mut opts = StorageOptions::new(&dir);
    // 1,000 samples of ~28 bytes (`HEAD_BYTES_PER_SAMPLE`).
    opts.head_memory_limit = 28_000;
    let store = std::sync::Arc::new(quiver::storage::durable::SyncedLocalStore::new(&dir).unwrap());
    let tenants = Tenants::new(opts, store);
    tenants.open_all().await.unwrap();
    let now = now_ms();
    let samples = |tenant: &str, n: i64| {
        batch(vec![(
            labels(&[("__name__", "quiver_mem"), ("t", tenant)]),
            (0..n).map(|k| (now - 60_000 + k, k as f64)).collect(),
        )])
    };
    let a = tenants.get("a").await.unwrap();
    let b = tenants.get("b").await.unwrap();
    a.append(samples("a", 700), WriteWindow::Recent)
        .await
        .unwrap();
    match b.append(samples("b", 400), WriteWindow::Recent).await {
        Err(StorageError::Overloaded(msg)) => assert!(msg.contains("--head-memory-limit"), "{msg}"),
        other => panic!("tenant b could exceed the shared limit: {other:?}"),
    }
    b.append(samples("b", 200), WriteWindow::Recent)
        .await
        .unwrap();
    // A flush frees memory for everyone.
    a.flush().await.unwrap();
    b.append(samples("b", 600), WriteWindow::Recent)
        .await
        .unwrap();
    tenants.close_all().await;
}

/// A graceful stop writes the head to a block, so the next start has no WAL to replay;
/// with `--no-flush-on-shutdown` the head stays in the WAL and the start replays it. Both
/// answer every sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_writes_the_head_to_blocks() {
    for (flags, blocks_after, head_after) in [
        (&[][..], 1.0, 0.0),
        (&["--no-flush-on-shutdown"][..], 0.0, 50.0),
    ] {
        let (_tmp, dir) = tempdir();
        let mut server = Server::start(&dir, flags, &[]).await;
        let client = reqwest::Client::new();
        let t = now_ms() - 60_000;
        let series = (0..5)
            .map(|i| {
                let l = labels(&[("__name__", "stop_metric"), ("i", &i.to_string())]);
                (l, (0..10).map(|k| (t + k * 1_000, k as f64)).collect())
            })
            .collect();
        let r = post_write(&client, &server.url, encode(&batch(series))).await;
        assert_eq!(r.status(), 204);
        assert_eq!(metric(&server.url, "quiver_blocks").await, 0.0);
        server.stop();
        let server = Server::start(&dir, flags, &[]).await;
        assert_eq!(
            metric(&server.url, "quiver_blocks").await,
            blocks_after,
            "{flags:?}"
        );
        assert_eq!(
            metric(&server.url, "quiver_head_samples").await,
            head_after,
            "{flags:?}"
        );
        let q = format!(
            "{}/api/v1/query?query=sum(count_over_time(stop_metric[5m]))&time={}",
            server.url,
            (t + 10_000) as f64 / 1000.0
        );
        let body = reqwest::get(q).await.unwrap().text().await.unwrap();
        assert!(body.contains("\"50\""), "{flags:?}: {body}");
    }
}
