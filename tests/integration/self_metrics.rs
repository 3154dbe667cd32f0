//! `/metrics` is valid Prometheus exposition text (checked by `promtool check metrics`) and
//! counts what the server did.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_is_valid_exposition() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &[], &[]).await;
    let client = reqwest::Client::new();
    let l = labels(&[("__name__", "m"), ("a", "b")]);
    assert_eq!(
        post_write(
            &client,
            &server.url,
            encode(&batch(vec![(l, vec![(now_ms(), 1.0)])]))
        )
        .await
        .status(),
        204
    );
    let _ = reqwest::get(format!("{}/api/v1/query?query=m", server.url))
        .await
        .unwrap();
    let _ = reqwest::get(format!("{}/api/v1/query?query=sum(", server.url))
        .await
        .unwrap();
    // The server's CPU time (user + system ticks of 10 ms) around the scrape.
    let pid = server.child.id();
    let cpu_s = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
    };
    let cpu_before = cpu_s();
    let r = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap();
    let cpu_after = cpu_s();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("quiver_ingested_samples_total 1"), "{body}");
    assert!(body.contains("quiver_http_request_duration_seconds_bucket{code=\"200\",handler=\"/api/v1/query\",le=\"0.005\"}"), "{body}");
    assert!(
        body.contains("quiver_api_errors_total{error_type=\"bad_data\"} 1"),
        "{body}"
    );
    assert!(body.contains("quiver_head_series 1"), "{body}");
    // Process metrics, read from /proc: a server holds at least a few MB resident.
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
            .parse()
            .unwrap()
    };
    assert!(value("process_resident_memory_bytes") > 4e6, "{body}");
    assert!(value("process_open_fds") > 3.0, "{body}");
    assert!(value("process_start_time_seconds") > 1.7e9, "{body}");
    let cpu = value("process_cpu_seconds_total");
    assert!(
        (cpu_before..=cpu_after).contains(&cpu),
        "{cpu_before} <= {cpu} <= {cpu_after}"
    );
    // The write's fsync was timed; head memory is 28 B × 1 sample of the 2 GiB limit.
    assert!(
        value("quiver_wal_fsync_duration_seconds_count") >= 1.0,
        "{body}"
    );
    assert_eq!(value("quiver_head_memory_bytes"), 28.0, "{body}");
    assert_eq!(
        value("quiver_head_memory_limit_bytes"),
        (2u64 << 30) as f64,
        "{body}"
    );
    // Memory by owner: the one series is in the catalog (labels, id map, postings), the
    // one sample in the head; the allocator holds at least what the owners account for.
    let owner = |o: &str| value(&format!("quiver_memory_owner_bytes{{owner=\"{o}\"}}"));
    assert!(owner("catalog") > 100.0, "{body}");
    assert_eq!(owner("heads"), 28.0, "{body}");
    assert_eq!(owner("queries"), 0.0, "no query in flight: {body}");
    let allocator = |s: &str| value(&format!("quiver_allocator_bytes{{state=\"{s}\"}}"));
    let owned: f64 = [
        "samples_cache",
        "results_cache",
        "parquet_footers",
        "catalog",
        "block_index",
        "heads",
    ]
    .iter()
    .map(|o| owner(o))
    .sum();
    assert!(allocator("allocated") >= owned, "{body}");
    assert!(allocator("allocated") >= allocator("mapped"), "{body}");
    assert!(allocator("free") > 0.0, "{body}");
    // Resident free memory is anonymous memory beyond what is allocated: at least the
    // threads' stacks, and far below the process's whole resident size.
    assert!(allocator("resident_free") > 0.0, "{body}");
    assert!(
        allocator("resident_free") < value("process_resident_memory_bytes"),
        "{body}"
    );
    assert!(value("quiver_allocator_trims_total") >= 0.0, "{body}");
    // The executable's resident pages: some, and less than the whole resident size.
    assert!(value("quiver_resident_file_bytes") > 0.0, "{body}");
    assert!(
        value("quiver_resident_file_bytes") < value("process_resident_memory_bytes"),
        "{body}"
    );
    assert!(value("quiver_code_page_releases_total") >= 0.0, "{body}");
    // Startup listed the (local) store: its latency is recorded by operation.
    assert!(
        value("quiver_object_store_request_duration_seconds_count{operation=\"list\"}") >= 1.0,
        "{body}"
    );
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "promtool is required in CI");
        eprintln!("SKIPPED promtool check metrics: promtool not installed");
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alerting_rules_pass_promtool_check_rules() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "promtool is required in CI");
        eprintln!("SKIPPED alerting_rules_pass_promtool_check_rules: promtool not installed");
        return;
    }
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/quiver-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("SUCCESS: 5 rules found"), "{text}");
}
