//! Offline block checks for operators (`quiver blocks list|verify`): every block under
//! `blocks/`, straight from the object store (no catalog, no WAL), so a block the server
//! would quarantine is reported, not refused.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int64Type, UInt32Type};
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
#[allow(deprecated)]
// As in `read.rs`: the builder-style replacement changes nothing here.
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use super::StorageError;
use super::block::{BlockMeta, read_meta, read_postings, read_series};
use super::paths::{BLOCKS_DIR, BlockPath};
use crate::catalog::Catalog;

/// One block and what is wrong with it (nothing, when `problems` is empty).
#[derive(Debug)]
pub struct BlockReport {
    pub id: String,
    /// `None` when `meta.json` is missing or unreadable.
    pub meta: Option<BlockMeta>,
    /// A newer block lists this one as a parent: readers hide it (a compaction that
    /// crashed before deleting its inputs; the server deletes it at start).
    pub replaced: bool,
    pub problems: Vec<String>,
}

/// Every block directory with its meta, in id order; `verify` also reads every file.
pub async fn blocks(
    store: &Arc<dyn ObjectStore>,
    verify: bool,
) -> Result<Vec<BlockReport>, StorageError> {
    let listing = store
        .list_with_delimiter(Some(&object_store::path::Path::from(BLOCKS_DIR)))
        .await?;
    let mut paths: Vec<BlockPath> = listing
        .common_prefixes
        .iter()
        .filter_map(BlockPath::from_key)
        .collect();
    paths.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let (meta, mut problems) = match read_meta(store.as_ref(), &p).await {
            Ok(Some(m)) => (Some(m), vec![]),
            Ok(None) => (
                None,
                vec!["meta.json missing (an unfinished write)".to_string()],
            ),
            Err(e) => (None, vec![format!("meta.json: {e}")]),
        };
        if verify && let Some(m) = &meta {
            problems.extend(verify_block(store, &p, m).await);
        }
        out.push(BlockReport {
            id: p.id.clone(),
            meta,
            replaced: false,
            problems,
        });
    }
    let parents: std::collections::HashSet<String> = out
        .iter()
        .filter_map(|r| r.meta.as_ref())
        .flat_map(|m| m.parents.iter().cloned())
        .collect();
    for r in &mut out {
        r.replaced = parents.contains(&r.id);
    }
    Ok(out)
}

/// Reads every file of a block and checks it against its meta.
async fn verify_block(store: &Arc<dyn ObjectStore>, p: &BlockPath, m: &BlockMeta) -> Vec<String> {
    let mut problems = Vec::new();
    // Sizes: the meta records the total of the block's files.
    let mut bytes = 0u64;
    let mut keys = vec![p.samples(), p.series(), p.postings()];
    if m.num_histograms > 0 {
        keys.push(p.histograms());
    }
    if m.num_exemplars > 0 {
        keys.push(p.exemplars());
    }
    for key in keys {
        match store.head(&key).await {
            Ok(o) => bytes += o.size,
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
    if problems.is_empty() && bytes != m.bytes {
        problems.push(format!(
            "files hold {bytes} bytes, meta.json says {}",
            m.bytes
        ));
    }
    // Series: one label set per local id, in label order.
    let labels = match read_series(store.as_ref(), p).await {
        Ok(l) => l,
        Err(e) => {
            problems.push(format!("series.parquet: {e}"));
            return problems;
        }
    };
    if labels.len() as u64 != m.num_series {
        problems.push(format!(
            "series.parquet has {} series, meta.json says {}",
            labels.len(),
            m.num_series
        ));
    }
    if let Some(i) = labels.windows(2).position(|w| w[0] >= w[1]) {
        problems.push(format!(
            "series.parquet not in label order at local id {}",
            i + 1
        ));
    }
    // Postings: they must index exactly these label sets (the check registration uses).
    match read_postings(store.as_ref(), p).await {
        Ok(Some(postings)) => {
            let (_, used) = Catalog::new().get_or_insert_indexed(labels.clone(), Some(postings));
            if !used {
                problems.push("postings.parquet does not index the block's series".into());
            }
        }
        Ok(None) => problems.push("postings.parquet out of order".into()),
        Err(e) => problems.push(format!("postings.parquet: {e}")),
    }
    // Samples: streamed a batch at a time; sorted by (series, time), within the block's
    // series and time range, as many as the meta says.
    match check_samples(store, p, m).await {
        Ok(more) => problems.extend(more),
        Err(e) => problems.push(format!("samples.parquet: {e}")),
    }
    // Histograms and exemplars: every row decodes (histograms validate), of a series of the
    // block, as many as the meta says.
    if m.num_histograms > 0 {
        match lane_rows(store, &p.histograms(), |b| {
            super::block::histograms::from_batch(b, |_, _| true)
                .map(|r| r.iter().map(|x| x.0).collect())
        })
        .await
        {
            Ok(ids) => problems.extend(lane_problems(
                "histograms",
                &ids,
                labels.len(),
                m.num_histograms,
            )),
            Err(e) => problems.push(format!("histograms.parquet: {e}")),
        }
    }
    if m.num_exemplars > 0 {
        match lane_rows(store, &p.exemplars(), |b| {
            super::block::exemplars::from_batch(b, |_, _| true)
                .map(|r| r.iter().map(|x| x.0).collect())
        })
        .await
        {
            Ok(ids) => problems.extend(lane_problems(
                "exemplars",
                &ids,
                labels.len(),
                m.num_exemplars,
            )),
            Err(e) => problems.push(format!("exemplars.parquet: {e}")),
        }
    }
    problems
}

/// The local series id of every row of a histograms or exemplars file.
async fn lane_rows(
    store: &Arc<dyn ObjectStore>,
    key: &object_store::path::Path,
    ids: impl Fn(&datafusion::arrow::array::RecordBatch) -> Result<Vec<u32>, StorageError>,
) -> Result<Vec<u32>, StorageError> {
    let mut out = Vec::new();
    for b in super::block::read_parquet(store.as_ref(), key).await? {
        out.extend(ids(&b)?);
    }
    Ok(out)
}

fn lane_problems(what: &str, ids: &[u32], series: usize, want: u64) -> Vec<String> {
    let mut out = Vec::new();
    if ids.len() as u64 != want {
        out.push(format!(
            "{what}.parquet has {} rows, meta.json says {want}",
            ids.len()
        ));
    }
    if let Some(id) = ids.iter().find(|&&id| id as usize >= series) {
        out.push(format!(
            "{what}.parquet names local series {id}, the block has {series}"
        ));
    }
    out
}

async fn check_samples(
    store: &Arc<dyn ObjectStore>,
    p: &BlockPath,
    m: &BlockMeta,
) -> Result<Vec<String>, StorageError> {
    #[allow(deprecated)]
    let reader = ParquetObjectReader::new(store.clone(), p.samples());
    let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
        .await?
        .with_batch_size(64 * 1024)
        .build()?
        .map_err(StorageError::from);
    let mut problems = Vec::new();
    let mut count = 0u64;
    let mut last: Option<(u32, i64)> = None;
    let mut unsorted = None;
    let mut outside = None;
    while let Some(b) = stream.next().await {
        let b = b?;
        let ids = b.column(0).as_primitive::<UInt32Type>();
        let ts = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let cur = (ids.value(i), ts.value(i));
            if unsorted.is_none() && last.is_some_and(|l| l >= cur) {
                unsorted = Some(count);
            }
            if outside.is_none()
                && (u64::from(cur.0) >= m.num_series || cur.1 < m.min_t || cur.1 > m.max_t)
            {
                outside = Some((count, cur));
            }
            last = Some(cur);
            count += 1;
        }
    }
    if let Some(row) = unsorted {
        problems.push(format!(
            "samples.parquet not sorted by (series_id, timestamp) at row {row}"
        ));
    }
    if let Some((row, (id, t))) = outside {
        problems.push(format!(
            "samples.parquet row {row}: series {id} at {t} is outside the block ({} series, time [{}, {}])",
            m.num_series, m.min_t, m.max_t
        ));
    }
    if count != m.num_samples {
        problems.push(format!(
            "samples.parquet has {count} samples, meta.json says {}",
            m.num_samples
        ));
    }
    Ok(problems)
}
