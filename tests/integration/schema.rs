//! Schemathesis (PyPI) against Prometheus's own OpenAPI description of `/api/v1`
//! (`../shared/prometheus-api/openapi_3.1_golden.yaml`): no 5xx and no response that
//! violates the schema, on the endpoints Quiver serves.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_schema_holds_under_generated_requests() {
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/prometheus-api/openapi_3.1_golden.yaml");
    if !spec.exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have ../shared/prometheus-api"
        );
        eprintln!(
            "SKIPPED openapi_schema_holds_under_generated_requests: ../shared/prometheus-api not found"
        );
        return;
    }
    if Command::new("st").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "schemathesis is required in CI"
        );
        eprintln!(
            "SKIPPED openapi_schema_holds_under_generated_requests: schemathesis not installed (pip install schemathesis)"
        );
        return;
    }
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &[], &[]).await;
    let now = now_ms();
    let series = vec![
        (
            labels(&[("__name__", "up"), ("job", "prometheus"), ("instance", "a")]),
            (0..20).map(|k| (now - 600_000 + k * 15_000, 1.0)).collect(),
        ),
        (
            labels(&[("__name__", "http_requests_total"), ("job", "api")]),
            (0..20)
                .map(|k| (now - 600_000 + k * 15_000, k as f64))
                .collect(),
        ),
    ];
    assert_eq!(
        post_write(&reqwest::Client::new(), &server.url, encode(&batch(series)))
            .await
            .status(),
        204
    );
    let served = r"^/(query|query_range|query_exemplars|format_query|parse_query|labels|label/\{name\}/values|series|metadata|targets|rules|alerts|alertmanagers|status/(config|runtimeinfo|buildinfo|flags|tsdb|walreplay))$";
    let out = Command::new("st")
        .arg("run")
        .arg(&spec)
        .args(["--url", &format!("{}/api/v1", server.url)])
        .args([
            "-c",
            "not_a_server_error,response_schema_conformance",
            "-n",
            "25",
            "--seed",
            "42",
        ])
        .args(["--include-path-regex", served])
        .env("NO_COLOR", "1")
        // schemathesis keeps a cache in its working directory: keep it out of the repo.
        .current_dir(_tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}
