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
    let r = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap();
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
