//! The deploy kit (Dockerfile, compose, Kubernetes, systemd, Grafana, alert rules) checked
//! without a container runtime by `deploy/validate.py`, including every dashboard query
//! run against this build of Quiver.

use std::path::Path;
use std::process::Command;

/// The Python with the kit's tools (`.ci/run` makes it); elsewhere, `python3` with
/// missing tools reported as skipped.
const VENV_PYTHON: &str = "/var/cache/quiver-deploy-venv/bin/python";

#[test]
fn deploy_kit_validates() {
    let root = env!("CARGO_MANIFEST_DIR");
    let strict = Path::new(VENV_PYTHON).exists() || std::env::var("CI").is_ok();
    let python = if Path::new(VENV_PYTHON).exists() {
        VENV_PYTHON
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have {VENV_PYTHON} (made by .ci/run)"
        );
        eprintln!("deploy_kit_validates: {VENV_PYTHON} not found; missing tools are SKIPPED");
        "python3"
    };
    let mut cmd = Command::new(python);
    cmd.arg(format!("{root}/deploy/validate.py"))
        .arg("--quiver")
        .arg(env!("CARGO_BIN_EXE_quiver"));
    if !strict {
        cmd.arg("--skip-missing");
    }
    let out = cmd.output().expect("run deploy/validate.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "deploy/validate.py failed:\n{text}");
    assert!(
        text.contains("PASS live:"),
        "the live check did not run:\n{text}"
    );
}
