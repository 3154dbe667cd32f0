use std::collections::HashMap;

use bytes::Bytes;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::UInt32Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::{ObjectStore, ObjectStoreExt};
use roaring::RoaringBitmap;

use super::meta::{BLOCK_FORMAT_VERSION, BlockMeta};
use crate::catalog::{BlockPostings, Catalog, SeriesId};
use crate::model::Labels;
use crate::storage::StorageError;
use crate::storage::paths::BlockPath;

/// Every row of a small block file (series, postings, histograms, exemplars), decoded.
pub async fn read_parquet(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
) -> Result<Vec<RecordBatch>, StorageError> {
    decode_parquet(fetch(store, key).await?)
}

async fn fetch(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
) -> Result<Bytes, StorageError> {
    Ok(store.get(key).await?.bytes().await?)
}

fn decode_parquet(bytes: Bytes) -> Result<Vec<RecordBatch>, StorageError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// Runs a block file's decoding on a blocking thread: a million-series file is a few
/// hundred milliseconds of CPU, and a start decodes a block's series and postings files at
/// once (one core each) rather than one after the other on the task that fetched them.
/// A panic goes on as if the decoding had run here; a decoding the runtime dropped (it is
/// shutting down) is not the file's fault, so it is not `Corrupt` (which quarantines).
async fn decode_off_task<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StorageError::Unavailable(format!(
            "decoding a block file did not run: {e}"
        ))),
    }
}

/// Label sets of a block, indexed by local series id. Names and values are borrowed from
/// the decoded columns until each label set is packed (no string per pair).
pub async fn read_series(
    store: &dyn ObjectStore,
    path: &BlockPath,
) -> Result<Vec<Labels>, StorageError> {
    let bytes = fetch(store, &path.series()).await?;
    let id = path.id.clone();
    decode_off_task(move || series_of(decode_parquet(bytes)?, &id)).await
}

/// The label sets of a series file's rows.
fn series_of(batches: Vec<RecordBatch>, block: &str) -> Result<Vec<Labels>, StorageError> {
    let corrupt =
        |e: crate::model::LabelError| StorageError::Corrupt(format!("block {block}: {e}"));
    let cols: Vec<_> = batches
        .iter()
        .map(|b| {
            (
                b.column(0).as_primitive::<UInt32Type>().values(),
                b.column(1).as_string::<i32>(),
                b.column(2).as_string::<i32>(),
            )
        })
        .collect();
    // The writer's order: local ids 0, 1, 2, … each on consecutive rows. Read in one pass
    // across the batches, without concatenating them.
    let ids = || cols.iter().flat_map(|(ids, _, _)| ids.iter().copied());
    let mut prev: Option<u32> = None;
    let in_order = ids().all(|id| {
        let ok = match prev {
            None => id == 0,
            Some(p) => id == p || id == p + 1,
        };
        prev = Some(id);
        ok
    });
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if in_order {
        let mut out = Vec::with_capacity(prev.map_or(0, |p| p as usize + 1));
        let mut current = 0u32;
        for (ids, names, values) in &cols {
            for (row, &id) in ids.iter().enumerate() {
                if id != current {
                    out.push(Labels::from_strs(&mut pairs).map_err(corrupt)?);
                    pairs.clear();
                    current = id;
                }
                pairs.push((names.value(row), values.value(row)));
            }
        }
        if !pairs.is_empty() {
            out.push(Labels::from_strs(&mut pairs).map_err(corrupt)?);
        }
        return Ok(out);
    }
    // Any other order (nothing else writes one; kept so a reordered file still reads):
    // rows grouped by local id with a counting sort over the concatenated columns.
    let Some(first) = batches.first() else {
        return Ok(vec![]);
    };
    let b = concat_batches(&first.schema(), &batches)?;
    drop(cols);
    let ids = b.column(0).as_primitive::<UInt32Type>().values();
    let names = b.column(1).as_string::<i32>();
    let values = b.column(2).as_string::<i32>();
    let n = ids.iter().map(|&id| id as usize + 1).max().unwrap_or(0);
    let mut start = vec![0u32; n + 1];
    for &id in ids {
        start[id as usize + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut next = start.clone();
    let mut rows = vec![0u32; ids.len()];
    for (row, &id) in ids.iter().enumerate() {
        rows[next[id as usize] as usize] = row as u32;
        next[id as usize] += 1;
    }
    (0..n)
        .map(|id| {
            pairs.clear();
            pairs.extend(
                rows[start[id] as usize..start[id + 1] as usize]
                    .iter()
                    .map(|&r| (names.value(r as usize), values.value(r as usize))),
            );
            Labels::from_strs(&mut pairs).map_err(corrupt)
        })
        .collect()
}

/// Postings of a block, as its index file holds them; `None` when the rows are not in
/// the writer's order (the caller then builds postings from the label sets).
pub async fn read_postings(
    store: &dyn ObjectStore,
    path: &BlockPath,
) -> Result<Option<BlockPostings>, StorageError> {
    let bytes = fetch(store, &path.postings()).await?;
    decode_off_task(move || postings_of(decode_parquet(bytes)?)).await
}

fn postings_of(batches: Vec<RecordBatch>) -> Result<Option<BlockPostings>, StorageError> {
    let rows = batches.iter().flat_map(|b| {
        let names = b.column(0).as_string::<i32>();
        let values = b.column(1).as_string::<i32>();
        let bms = b.column(2).as_binary::<i32>();
        (0..b.num_rows()).map(move |i| {
            let bm = RoaringBitmap::deserialize_from(bms.value(i));
            bm.map(|bm| (names.value(i), values.value(i), bm))
        })
    });
    // Each bitmap becomes a posting as it is read: a block of a million unique values
    // holds a million ids, not a million bitmaps.
    let mut err = None;
    let postings = BlockPostings::from_sorted(rows.map_while(|r| match r {
        Ok(r) => Some(r),
        Err(e) => {
            err = Some(e);
            None
        }
    }));
    match err {
        Some(e) => Err(e.into()),
        None => Ok(postings),
    }
}

/// A complete block known to the catalog: its meta and the local ↔ global id maps.
#[derive(Debug)]
pub struct LoadedBlock {
    pub meta: BlockMeta,
    pub path: BlockPath,
    /// Global id of each local id.
    pub global_ids: Vec<SeriesId>,
    /// Global ids present in this block.
    pub present: RoaringBitmap,
    /// Global ids of the series with histograms in this block.
    pub hist_present: RoaringBitmap,
    /// Local id of each global id, unless the global ids ascend with the local ones (the
    /// usual case, see `register`): then a binary search in `global_ids` finds it, and a
    /// million-series block saves the map.
    local_of: Option<HashMap<SeriesId, u32>>,
}

impl LoadedBlock {
    /// Bytes this loaded block holds in memory: its id maps and presence bitmaps (its
    /// samples stay in the store; their decoded runs are the samples cache's).
    pub fn memory_bytes(&self) -> usize {
        self.global_ids.capacity() * std::mem::size_of::<SeriesId>()
            + self.present.serialized_size()
            + self.hist_present.serialized_size()
            + self.local_of.as_ref().map_or(0, |m| {
                m.capacity() * (std::mem::size_of::<(SeriesId, u32)>() + 1)
            })
    }

    /// Reads the block's series file: its label sets, by local id.
    pub async fn read_labels(
        store: &dyn ObjectStore,
        meta: &BlockMeta,
    ) -> Result<Vec<Labels>, StorageError> {
        if meta.format_version > BLOCK_FORMAT_VERSION {
            return Err(StorageError::Format(format!(
                "block {} has format version {}; this binary reads up to {BLOCK_FORMAT_VERSION}",
                meta.id, meta.format_version
            )));
        }
        read_series(store, &BlockPath::new(meta.id.clone())).await
    }

    /// Registers a block's series in the catalog. Blocks are registered oldest first, so a
    /// stable set of series gets global ids in label order, the order of every block's
    /// local ids: a scan of a chunk of global ids then reads contiguous rows of each block.
    pub fn register(meta: BlockMeta, labels: Vec<Labels>, catalog: &Catalog) -> Self {
        Self::register_indexed(meta, labels, None, catalog)
    }

    /// As [`LoadedBlock::register`], with the block's postings file (used when all its
    /// series are new to the catalog: see [`Catalog::get_or_insert_indexed`]).
    pub fn register_indexed(
        meta: BlockMeta,
        labels: Vec<Labels>,
        postings: Option<BlockPostings>,
        catalog: &Catalog,
    ) -> Self {
        let (global_ids, from_postings) = catalog.get_or_insert_indexed(labels, postings);
        tracing::debug!(block = %meta.id, from_postings, "block registered");
        Self::from_parts(meta, global_ids)
    }

    pub fn from_parts(meta: BlockMeta, global_ids: Vec<SeriesId>) -> Self {
        let present = global_ids.iter().copied().collect();
        let local_of = (!global_ids.windows(2).all(|w| w[0] < w[1])).then(|| {
            global_ids
                .iter()
                .enumerate()
                .map(|(l, &g)| (g, l as u32))
                .collect()
        });
        let hist_present = histogram_series(&meta, &global_ids, &present);
        LoadedBlock {
            path: BlockPath::new(meta.id.clone()),
            meta,
            global_ids,
            present,
            hist_present,
            local_of,
        }
    }

    /// Global id of a local id read from one of the block's files (a bad one is corruption).
    pub fn global_of(&self, local: u32) -> Result<SeriesId, StorageError> {
        self.global_ids.get(local as usize).copied().ok_or_else(|| {
            StorageError::Corrupt(format!(
                "block {}: a file names local series {local}, the block has {}",
                self.meta.id,
                self.global_ids.len()
            ))
        })
    }

    /// Local id of a global id this block holds.
    pub fn local_of(&self, global: SeriesId) -> Option<u32> {
        match &self.local_of {
            Some(m) => m.get(&global).copied(),
            None => self
                .global_ids
                .binary_search(&global)
                .ok()
                .map(|l| l as u32),
        }
    }

    /// Local ids (sorted) of the given global ids that this block holds.
    pub fn local_ids(&self, global: &RoaringBitmap) -> Vec<u32> {
        let mut v: Vec<u32> = (global & &self.present)
            .iter()
            .filter_map(|g| self.local_of(g))
            .collect();
        v.sort_unstable();
        v
    }
}

/// The global ids of a block's series with histograms, from its meta (all of its series
/// when the meta does not say which, so nothing is skipped by mistake).
fn histogram_series(
    meta: &BlockMeta,
    global_ids: &[SeriesId],
    present: &RoaringBitmap,
) -> RoaringBitmap {
    if meta.num_histograms == 0 {
        return RoaringBitmap::new();
    }
    let locals = meta.histogram_series.as_deref().and_then(|b| {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        RoaringBitmap::deserialize_from(bytes.as_slice()).ok()
    });
    match locals {
        Some(l) => l
            .iter()
            .filter_map(|local| global_ids.get(local as usize).copied())
            .collect(),
        None => present.clone(),
    }
}

/// Reads and parses a block's meta; `Ok(None)` when absent (block incomplete).
pub async fn read_meta(
    store: &dyn ObjectStore,
    path: &BlockPath,
) -> Result<Option<BlockMeta>, StorageError> {
    match store.get(&path.meta()).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            let meta: BlockMeta = serde_json::from_slice(&bytes)
                .map_err(|e| StorageError::Corrupt(format!("block {} meta.json: {e}", path.id)))?;
            Ok(Some(meta))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Checks a block's samples file is a sorted (series_id, timestamp) run; used by tests.
pub fn is_sorted(batches: &[RecordBatch]) -> bool {
    let mut last: Option<(u32, i64)> = None;
    for b in batches {
        let ids = b.column(0).as_primitive::<UInt32Type>();
        let ts = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for i in 0..ids.len() {
            let cur = (ids.value(i), ts.value(i));
            if last.is_some_and(|l| l >= cur) {
                return false;
            }
            last = Some(cur);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{StringArray, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: &[(u32, &str, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("series_id", DataType::UInt32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn text(sets: &[Labels]) -> Vec<String> {
        sets.iter().map(ToString::to_string).collect()
    }

    /// The writer's order read across batches (a series split by a batch boundary stays
    /// one series), any other order read as its ids say, and a missing id is corruption
    /// in both.
    #[test]
    fn series_files_read_in_any_row_order_and_across_batches() {
        let want = vec![r#"a{i="0"}"#, r#"a{i="1", j="x"}"#, r#"b{i="2"}"#];
        let in_order = vec![
            batch(&[(0, "__name__", "a"), (0, "i", "0"), (1, "__name__", "a")]),
            batch(&[(1, "i", "1"), (1, "j", "x")]),
            batch(&[(2, "i", "2"), (2, "__name__", "b")]),
        ];
        assert_eq!(text(&series_of(in_order, "b").unwrap()), want);
        let shuffled = vec![
            batch(&[(2, "i", "2"), (0, "i", "0"), (1, "j", "x")]),
            batch(&[(1, "__name__", "a"), (0, "__name__", "a")]),
            batch(&[(2, "__name__", "b"), (1, "i", "1")]),
        ];
        assert_eq!(text(&series_of(shuffled, "b").unwrap()), want);
        assert!(series_of(vec![], "b").unwrap().is_empty());
        for gap in [
            vec![batch(&[(0, "i", "0"), (2, "i", "2")])],
            vec![batch(&[(1, "i", "1")])],
        ] {
            assert!(matches!(series_of(gap, "b"), Err(StorageError::Corrupt(_))));
        }
    }
}
