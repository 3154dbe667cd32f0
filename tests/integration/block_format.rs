//! Block format 3 (values as decimal mantissas): blocks an older binary wrote (format 1,
//! data dir 2) still read bit for bit, through PromQL's scan and SQL's column scan, and
//! compact into format 3 beside new blocks; and the new layout stores scraped values in
//! the bits of their increments.

use std::path::Path;
use std::sync::Arc;

use quiver::model::Matcher;
use quiver::storage::{Storage, StorageOptions, WriteWindow, objstore};

use crate::support::{batch, labels, sql_rows};

/// The fixture's first sample: 2026-11-01T00:00:00Z (a UTC midnight).
const T0: i64 = 1_793_491_200_000;
const H: i64 = 3_600_000;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `tests/fixtures/format2-data` was written by `quiver import` of `format2.om` with the
/// binary of commit 999c9a4 (data dir format 2, float-only blocks written as format 1).
fn copy_fixture(to: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                copy(&p, &to.join(e.file_name()));
            } else {
                std::fs::copy(&p, to.join(e.file_name())).unwrap();
            }
        }
    }
    copy(&fixture().join("format2-data"), to);
}

/// `(labels, timestamp ms, value bits)` of every sample of the OpenMetrics source, with
/// NaNs as one canonical NaN (compared by being NaN).
fn source() -> Vec<(String, i64, u64)> {
    let text = std::fs::read_to_string(fixture().join("format2.om")).unwrap();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.rsplitn(3, ' ');
        let t: i64 = parts.next().unwrap().parse().unwrap();
        let v: f64 = parts.next().unwrap().parse().unwrap();
        let series = parts.next().unwrap();
        out.push((series.to_string(), t * 1000, canon(v)));
    }
    out.sort();
    out
}

fn canon(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

async fn open(dir: &Path) -> Storage {
    let mut o = StorageOptions::new(dir);
    // The next day: the fixture's day is sealed and compacts into one block.
    o.clock = Arc::new(|| T0 + 30 * H);
    let store = objstore::build(None, dir, &Default::default()).unwrap();
    Storage::open(o, store).await.unwrap()
}

async fn everything(s: &Storage) -> Vec<(String, i64, u64)> {
    let all = s
        .select(
            &[Matcher::regex("__name__", "fx_.+", false).unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for r in all {
        for (t, v) in r.ts.iter().zip(&r.vals) {
            out.push((r.labels.to_string(), *t, canon(*v)));
        }
    }
    out.sort();
    out
}

/// `count(*)` and `sum(value)` of `fx_seconds` through `quiver sql` (the column scan).
fn sql_seconds(dir: &Path) -> (u64, f64) {
    let rows = sql_rows(
        dir,
        &[],
        "SELECT count(*) AS n, sum(s.value) AS v FROM samples s JOIN series se \
         ON s.series_id = se.series_id WHERE se.metric = 'fx_seconds'",
    );
    let (n, v) = rows.last().unwrap().split_once(',').unwrap();
    (n.parse().unwrap(), v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_of_an_older_format_read_back_and_compact_into_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_fixture(&dir);
    let want = source();
    assert_eq!(want.len(), 120);
    let seconds: Vec<f64> = want
        .iter()
        .filter(|r| r.0.contains("fx_seconds"))
        .map(|r| f64::from_bits(r.2))
        .collect();

    let s = open(&dir).await;
    assert_eq!(s.blocks().len(), 1);
    assert_eq!(s.blocks()[0].format_version, 1, "the fixture's own block");
    assert_eq!(everything(&s).await, want, "format 1 read through the scan");
    drop(s);
    let (n, sum) = sql_seconds(&dir);
    assert_eq!(n, 24);
    let expect: f64 = seconds.iter().sum();
    assert!((sum - expect).abs() < 1e-9 * expect, "{sum} vs {expect}");

    // A new block for the same day beside the old one, then the day compacts.
    let s = open(&dir).await;
    let extra: Vec<(i64, f64)> = (0..24)
        .map(|k| (T0 + k * 600_000, 0.25 * k as f64))
        .collect();
    s.append(
        batch(vec![(
            labels(&[("__name__", "fx_new"), ("job", "a")]),
            extra.clone(),
        )]),
        WriteWindow::Backfill,
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    assert!(s.blocks().iter().any(|b| b.format_version == 3));
    let r = s.compact().await.unwrap();
    assert_eq!(r.merged.len(), 1, "{r:?}");
    let blocks = s.blocks();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].format_version, 3);
    let mut want_all = want.clone();
    want_all.extend(
        extra
            .iter()
            .map(|(t, v)| ("fx_new{job=\"a\"}".to_string(), *t, v.to_bits())),
    );
    want_all.sort();
    assert_eq!(everything(&s).await, want_all, "compacted into format 3");
    // The merged block's samples file has the mantissa columns.
    let file = dir
        .join("blocks")
        .join(&blocks[0].id)
        .join("samples.parquet");
    let bytes = std::fs::read(&file).unwrap();
    let reader =
        datafusion::parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes))
            .unwrap();
    use datafusion::parquet::file::reader::FileReader;
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "series_id",
            "timestamp",
            "value_mantissa",
            "value_scale",
            "value_base",
            "value_raw"
        ]
    );
    drop(s);
    assert_eq!(
        std::fs::read_to_string(dir.join("VERSION")).unwrap().trim(),
        "3"
    );
    let (n, sum2) = sql_seconds(&dir);
    assert_eq!((n, sum2.to_bits()), (24, sum.to_bits()));
}

/// Scraped series take the bits of their increments, not of their values: 100 counters
/// with increments below 256 and 100 page-granular byte gauges (multiples of 4096) at 15 s
/// for 12 h: 1.08 bytes a sample as chained mantissas, where byte-stream-split doubles (format 2)
/// took 1.67.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_values_take_the_bits_of_their_increments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut o = StorageOptions::new(&dir);
    o.clock = Arc::new(|| T0 + 30 * H);
    o.block_duration_ms = 24 * H;
    let store = objstore::build(None, &dir, &Default::default()).unwrap();
    let s = Storage::open(o, store).await.unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let steps = 12 * 240;
    let mut series = Vec::new();
    for i in 0..100 {
        let (mut c, mut g) = (1e9 + i as f64, 1_000_000 * 4096);
        let mut counter = Vec::with_capacity(steps);
        let mut gauge = Vec::with_capacity(steps);
        for k in 0..steps as i64 {
            c += (next() % 256) as f64;
            g += (next() % 256) as i64 * 4096 - 128 * 4096;
            counter.push((T0 + k * 15_000, c));
            gauge.push((T0 + k * 15_000, g as f64));
        }
        let id = i.to_string();
        series.push((labels(&[("__name__", "fx_c"), ("i", &id)]), counter));
        series.push((labels(&[("__name__", "fx_g"), ("i", &id)]), gauge));
    }
    let n: usize = series.iter().map(|s| s.1.len()).sum();
    s.append(batch(series.clone()), WriteWindow::Backfill)
        .await
        .unwrap();
    s.flush().await.unwrap();
    let blocks = s.blocks();
    assert_eq!(blocks.len(), 1);
    let file = dir
        .join("blocks")
        .join(&blocks[0].id)
        .join("samples.parquet");
    let per_sample = std::fs::metadata(&file).unwrap().len() as f64 / n as f64;
    eprintln!("samples.parquet: {per_sample:.3} bytes a sample");
    // 8 bits of increment a sample, plus ids, timestamps and page overhead; without the
    // chaining of series (each boundary's jump widening a block of deltas) it was 1.14.
    assert!(per_sample < 1.11, "{per_sample:.3} bytes a sample");
    // And every value reads back.
    let got = s
        .select(
            &[Matcher::regex("__name__", "fx_.", false).unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .await
        .unwrap();
    let mut want = series;
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), want.len());
    for (g, (l, samples)) in got.iter().zip(&want) {
        assert_eq!(&g.labels, l);
        assert_eq!(g.vals, samples.iter().map(|s| s.1).collect::<Vec<_>>());
    }
}
