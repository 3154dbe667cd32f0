//! Operator commands on real data dirs: `quiver blocks list|verify` finds a truncated file
//! and a block whose samples are out of order; `quiver cardinality` says what
//! `/api/v1/status/tsdb` says on the same data.

use std::path::Path;
use std::process::Command;

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver::storage::{Storage, StorageOptions, WriteWindow, objstore};

use crate::support::{BIN, Server, batch, labels, now_ms, tempdir};

/// A data dir with two flushes (two or three blocks) of 30 series over three metrics.
async fn data_dir(dir: &Path) {
    let store = objstore::build(None, dir, &Default::default()).unwrap();
    let s = Storage::open(StorageOptions::new(dir), store)
        .await
        .unwrap();
    let t0 = now_ms() - 3_600_000;
    for part in 0..2i64 {
        let series = (0..30)
            .map(|i| {
                let name = ["up", "http_requests_total", "node_load1"][i % 3];
                let l = labels(&[
                    ("__name__", name),
                    ("job", &format!("job{}", i % 4)),
                    ("instance", &format!("i{i}")),
                ]);
                let samples = (0..50)
                    .map(|k| (t0 + part * 600_000 + k * 10_000, (i * k as usize) as f64))
                    .collect();
                (l, samples)
            })
            .collect();
        s.append(batch(series), WriteWindow::Any).await.unwrap();
        s.flush().await.unwrap();
    }
    s.close().await;
}

fn quiver(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run quiver");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn samples_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().path().join("samples.parquet"))
        .filter(|p| p.exists())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_verify_finds_truncated_and_unsorted_blocks() {
    let (_tmp, dir) = tempdir();
    data_dir(&dir).await;
    // Two flushes; a flush crossing a block window boundary writes one more block.
    let n = samples_files(&dir).len();
    assert!(n >= 2, "{n} blocks");
    let (ok, text) = quiver(&["blocks", "list"], &dir);
    assert!(ok, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("  1  -")).count(),
        n,
        "{text}"
    );
    let (ok, text) = quiver(&["blocks", "verify"], &dir);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("{n} blocks verified, 0 with problems")),
        "{text}"
    );

    let files = samples_files(&dir);
    // Out of order: the first block's rows reversed, rewritten as a valid Parquet file.
    let bytes = bytes::Bytes::from(std::fs::read(&files[0]).unwrap());
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let schema = batches[0].schema();
    let all = datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap();
    let rev: Vec<u32> = (0..all.num_rows() as u32).rev().collect();
    let idx = datafusion::arrow::array::UInt32Array::from(rev);
    let columns = all
        .columns()
        .iter()
        .map(|c| datafusion::arrow::compute::take(c, &idx, None).unwrap())
        .collect();
    let reversed = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&reversed).unwrap();
    w.close().unwrap();
    std::fs::write(&files[0], out).unwrap();
    // Truncated: the second block's samples file cut in half.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[1])
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    drop(f);

    let (ok, text) = quiver(&["blocks", "verify"], &dir);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("{n} blocks verified, 2 with problems")),
        "{text}"
    );
    assert!(
        text.contains("not sorted by (series_id, timestamp)"),
        "{text}"
    );
    let block = |p: &std::path::PathBuf| {
        p.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string()
    };
    assert!(
        text.lines()
            .any(|l| l.starts_with(&block(&files[1])) && l.contains("samples.parquet")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardinality_matches_status_tsdb() {
    let (_tmp, dir) = tempdir();
    data_dir(&dir).await;
    let (ok, text) = quiver(&["cardinality", "--json"], &dir);
    assert!(ok, "{text}");
    let cli: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(cli["numSeries"], 30);
    let server = Server::start(&dir, &[], &[]).await;
    let body = reqwest::get(format!("{}/api/v1/status/tsdb", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let api = &api["data"];
    for key in [
        "seriesCountByMetricName",
        "labelValueCountByLabelName",
        "memoryInBytesByLabelName",
        "seriesCountByLabelValuePair",
    ] {
        assert!(!cli[key].as_array().unwrap().is_empty(), "{key}");
        assert_eq!(cli[key], api[key], "{key}");
    }
    assert_eq!(cli["numLabelPairs"], api["headStats"]["numLabelPairs"]);
    let (ok, text) = quiver(&["cardinality"], &dir);
    assert!(ok && text.contains("http_requests_total"), "{text}");
}

/// `quiver explain --url` asks a running server: the same plan as `quiver explain` on the
/// same data dir, and with `--analyze` the operators' metrics from the server's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_against_a_server_shows_its_plan() {
    let (_tmp, dir) = tempdir();
    data_dir(&dir).await;
    let q = "sum by (job) (rate(http_requests_total[5m]))";
    let end = (now_ms() / 1000).to_string();
    let window = ["--end", end.as_str(), "--step", "60s", "--partitions", "2"];
    let (ok, local) = quiver(&[&["explain", q][..], &window[..]].concat(), &dir);
    assert!(ok, "{local}");
    let server = Server::start(&dir, &[], &[]).await;
    let remote = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args([
                "explain",
                "--url",
                &server.url,
                "--end",
                &end,
                "--step",
                "60s",
            ])
            .args(extra)
            .arg(q)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = remote(&[]);
    assert!(ok, "{text}");
    // A query this small runs in the evaluator on a server with the defaults, and
    // explain says so (`--query-evaluate-below 0` plans it: below).
    let evaluated = "a query runs this in the step-vector evaluator";
    assert!(text.contains(evaluated), "{text}");
    // The server plans with its own partitions: compare the operators, not the counts.
    let ops = |t: &str| -> Vec<String> {
        t.lines()
            .skip_while(|l| !l.starts_with("physical plan"))
            .filter_map(|l| l.trim().split(':').next().map(str::to_string))
            .collect()
    };
    assert_eq!(ops(&text), ops(&local), "{text}\nvs\n{local}");
    assert!(text.contains("StepAggExec"), "{text}");
    let (ok, text) = remote(&["--analyze"]);
    assert!(
        ok && text.contains("output_rows=") && text.contains("ran in"),
        "{text}"
    );
    // Errors come back as the server words them.
    let out = Command::new(BIN)
        .args(["explain", "--url", &server.url, "sum("])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad_data"), "{err}");
    drop(server);
    let planning = Server::start(&dir, &["--query-evaluate-below", "0"], &[]).await;
    let out = Command::new(BIN)
        .args([
            "explain",
            "--url",
            &planning.url,
            "--end",
            &end,
            "--step",
            "60s",
            q,
        ])
        .output()
        .unwrap();
    let planned = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && planned.contains("StepAggExec"),
        "{planned}"
    );
    assert!(!planned.contains(evaluated), "{planned}");
}

/// docs/operations.md carries `quiver serve --help` verbatim, so the configuration
/// reference cannot drift from the flags. `QUIVER_UPDATE_DOCS=1` rewrites the block.
#[test]
fn configuration_reference_matches_serve_help() {
    // No inherited QUIVER_* variables: clap would print their values in the help.
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let begin =
        "<!-- BEGIN serve --help (generated: tests keep this equal to `quiver serve --help`) -->\n";
    let end = "<!-- END serve --help -->";
    let (Some(a), Some(b)) = (doc.find(begin), doc.find(end)) else {
        panic!("docs/operations.md lacks the serve --help markers");
    };
    let want = format!("```text\n{}\n```\n", help.trim_end());
    let have = &doc[a + begin.len()..b];
    if have != want && std::env::var("QUIVER_UPDATE_DOCS").is_ok() {
        let updated = format!("{}{want}{}", &doc[..a + begin.len()], &doc[b..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        have, want,
        "docs/operations.md's configuration reference differs from `quiver serve --help`; \
         run the test with QUIVER_UPDATE_DOCS=1 to regenerate it"
    );
}

/// Each setting is layered as documented: defaults < config file < `QUIVER_*` variable <
/// flag (the retention shows in `/api/v1/status/flags`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_layer_file_under_environment_under_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let file = path.join("quiver.toml");
    std::fs::write(&file, "[storage]\nretention = \"7d\"\n").unwrap();
    let config = file.to_str().unwrap();
    let retention = |extra: Vec<&'static str>, env: Vec<(&'static str, &'static str)>| {
        let data = path.join(format!("data-{}-{}", extra.len(), env.len()));
        let config = config.to_string();
        async move {
            let mut args = vec!["--config", config.as_str()];
            args.extend(extra);
            let mut s = crate::support::Server::start(&data, &args, &env).await;
            let text = reqwest::get(format!("{}/api/v1/status/flags", s.url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            s.stop();
            v["data"]["storage.tsdb.retention.time"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(
        retention(vec![], vec![]).await,
        "7d",
        "the file beats the default"
    );
    assert_eq!(
        retention(vec![], vec![("QUIVER_RETENTION", "5d")]).await,
        "5d",
        "a variable beats the file"
    );
    assert_eq!(
        retention(vec!["--retention", "3d"], vec![("QUIVER_RETENTION", "5d")]).await,
        "3d",
        "a flag beats the variable"
    );
}
