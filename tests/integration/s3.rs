//! Acceptance: blocks land in an S3 bucket (moto_server on 127.0.0.1); a second instance
//! with an empty data dir reads them all.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn moto_available() -> bool {
    Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_in_s3_are_served_by_a_fresh_instance() {
    if !moto_available() {
        // CI installs moto (see .ci/run); a plain `cargo test` without it says so and skips.
        assert!(
            std::env::var("CI").is_err(),
            "moto_server is required in CI"
        );
        eprintln!(
            "SKIPPED blocks_in_s3_are_served_by_a_fresh_instance: moto_server not installed (pip install 'moto[server]')"
        );
        return;
    }
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let moto = ChildGuard(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("moto.log")).unwrap())
            .spawn()
            .expect("start moto_server"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.put(format!("{endpoint}/quiver-test")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let envs = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let s3_args = [
        "--storage-url",
        "s3://quiver-test/tenant-a",
        "--s3-endpoint",
        endpoint.as_str(),
    ];
    let dir1 = tmp.path().join("one");
    let mut args = s3_args.to_vec();
    args.extend(["--head-flush-interval", "1s"]);
    let mut server = Server::start(&dir1, &args, &envs).await;
    let base = now_ms() - 90 * 60_000;
    let mut series = Vec::new();
    for s in 0..30 {
        let l = labels(&[("__name__", "quiver_s3"), ("s", &s.to_string())]);
        series.push((
            l,
            (0..50)
                .map(|i| (base + i * 15_000, (s * 1000 + i) as f64))
                .collect(),
        ));
    }
    assert_eq!(
        post_write(&client, &server.url, encode(&batch(series)))
            .await
            .status(),
        204
    );
    // Wait for the flush: the WAL checkpoint is written after the blocks are in the bucket.
    wait_for("blocks uploaded", 60, || {
        dir1.join("wal/checkpoint").exists()
    })
    .await;
    server.stop();
    let listing = client
        .get(format!(
            "{endpoint}/quiver-test?list-type=2&prefix=tenant-a/blocks/"
        ))
        .send()
        .await
        .unwrap();
    let xml = listing.text().await.unwrap();
    assert!(
        xml.contains("meta.json") && xml.contains("samples.parquet"),
        "bucket listing: {xml}"
    );
    assert!(
        !dir1.join("blocks").exists(),
        "blocks must not be written locally when S3 is configured"
    );

    // A second instance with an empty local dir.
    let dir2 = tmp.path().join("two");
    std::fs::create_dir_all(&dir2).unwrap();
    let out = Command::new(BIN)
        .args(["sql", "--format", "csv", "--data-dir"])
        .arg(&dir2)
        .args(s3_args)
        .arg("SELECT count(*), count(DISTINCT series_id), sum(value) FROM samples_labeled WHERE metric = 'quiver_s3'")
        .envs(envs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let want_sum: i64 = (0..30)
        .flat_map(|s| (0..50).map(move |i| s * 1000 + i))
        .sum();
    assert_eq!(
        text.lines().nth(1).unwrap(),
        format!("1500,30,{}.0", want_sum)
    );
    drop(moto);
}
