//! The results cache answers exactly what an uncached evaluation answers: cold, warm, on a
//! shifted (dashboard-refresh) range, and after samples are backfilled into cached extents.

use serde_json::Value;

use crate::support::*;

const QUERIES: &[&str] = &[
    "cache_requests_total",
    "sum by (job) (rate(cache_requests_total[5m]))",
    "max_over_time(cache_temp[10m])",
    "rate(cache_requests_total[5m]) * on (instance) group_left cache_temp",
    "scalar(sum(cache_temp))",
    "topk(1, cache_temp)",
    "max_over_time(rate(cache_requests_total[5m])[30m:1m])",
    "count(cache_temp offset 20m)",
];

/// Text-format lines (ms timestamps) every 15 s over `[from, to)`, at x.337 s.
fn lines(from: i64, to: i64, instances: &[&str], bump: f64) -> String {
    let mut out = String::new();
    let mut t = from / 1000 * 1000 + 337;
    let mut k = 0.0;
    while t < to {
        for (i, inst) in instances.iter().enumerate() {
            let job = if i % 2 == 0 { "api" } else { "db" };
            out.push_str(&format!(
                "cache_requests_total{{job=\"{job}\",instance=\"{inst}\"}} {} {t}\n",
                k * (i + 1) as f64 * 3.0
            ));
            out.push_str(&format!(
                "cache_temp{{instance=\"{inst}\"}} {} {t}\n",
                20.0 + i as f64 + (k / 7.0).sin() + bump
            ));
        }
        t += 15_000;
        k += 1.0;
    }
    out
}

async fn import(client: &reqwest::Client, url: &str, body: String) {
    let r = client
        .post(format!("{url}/api/v1/import/prometheus"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
}

async fn range(
    client: &reqwest::Client,
    url: &str,
    q: &str,
    start: i64,
    end: i64,
    nocache: bool,
) -> Value {
    let mut form = vec![
        ("query", q.to_string()),
        ("start", format!("{}", start as f64 / 1000.0)),
        ("end", format!("{}", end as f64 / 1000.0)),
        ("step", "60".into()),
    ];
    if nocache {
        form.push(("nocache", "1".into()));
    }
    let r = client
        .post(format!("{url}/api/v1/query_range"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{q}");
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"].clone()
}

async fn cache_counter(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_equal_uncached_ones_including_after_backfill() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &["--results-cache-extent", "10m"], &[]).await;
    let client = reqwest::Client::new();
    let now = now_ms();
    let from = now - 3 * 3_600_000;
    import(
        &client,
        &server.url,
        lines(from, now, &["a:1", "b:1", "c:1"], 0.0),
    )
    .await;
    // Grafana aligns the range to the step; the dashboard covers the last 3 h.
    let end = now / 60_000 * 60_000;
    let start = end - 3 * 3_600_000;

    let mut before = Vec::new();
    for q in QUERIES {
        let cold = range(&client, &server.url, q, start, end, false).await;
        let warm = range(&client, &server.url, q, start, end, false).await;
        let uncached = range(&client, &server.url, q, start, end, true).await;
        assert!(
            !uncached["result"].as_array().unwrap().is_empty(),
            "{q}: no data"
        );
        assert_eq!(cold, uncached, "{q}: cold cache differs from uncached");
        assert_eq!(warm, uncached, "{q}: warm cache differs from uncached");
        // A refresh a few steps later: stored extents plus a fresh tail.
        let (s2, e2) = (start + 5 * 60_000, end + 120_000);
        assert_eq!(
            range(&client, &server.url, q, s2, e2, false).await,
            range(&client, &server.url, q, s2, e2, true).await,
            "{q}: shifted range differs"
        );
        before.push(warm);
    }
    let hits = cache_counter(&client, &server.url, "quiver_results_cache_hits_total").await;
    assert!(hits > 0.0, "warm queries found nothing in the cache");

    // Backfill into cached extents: a new instance from 2 h ago to 1 h ago, and changed
    // values for an existing one 7 s after its samples (a late, out-of-order scrape).
    let mut late = lines(now - 2 * 3_600_000, now - 3_600_000, &["d:1"], 0.0);
    late.push_str(
        &lines(now - 150 * 60_000, now - 140 * 60_000, &["b:1"], 100.0).replace("337\n", "344\n"),
    );
    import(&client, &server.url, late).await;
    let mut changed = 0;
    for (q, old) in QUERIES.iter().zip(before) {
        let cached = range(&client, &server.url, q, start, end, false).await;
        let uncached = range(&client, &server.url, q, start, end, true).await;
        assert_eq!(
            cached, uncached,
            "{q}: cache served stale extents after backfill"
        );
        if cached != old {
            changed += 1;
        }
    }
    // The backfill must have mattered, or this test proves nothing about invalidation.
    assert!(
        changed >= QUERIES.len() - 1,
        "only {changed} answers changed after backfill"
    );
}
