use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    BinaryBuilder, Int64Array, RecordBatch, StringBuilder, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::metadata::{KeyValue, SortingColumn};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use roaring::RoaringBitmap;

use super::meta::{BLOCK_FORMAT_VERSION, BlockMeta, WalSource};
use super::samples_schema;
use super::values::{self, ValueRows};
use crate::model::Labels;
use crate::storage::StorageError;
use crate::storage::head::{Ex, Hist};
use crate::storage::paths::BlockPath;

/// One series' samples, sorted by time, ready to be written.
#[derive(Debug, Clone)]
pub struct SeriesData {
    pub labels: Labels,
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
    /// Native-histogram samples, sorted by time.
    pub hists: Vec<(i64, Hist)>,
    /// Exemplars, sorted by time.
    pub exemplars: Vec<Ex>,
}

/// Rows per Parquet data page: small enough that the page index can skip to one series.
/// Measured on the peer-benchmark dataset: 1024-row pages halve the instant-query time of a
/// sparse selection (108 of 10k series) but cost 9% more bytes and make dense and long-range
/// reads 8-33% slower (per-page decompression overhead), so pages stay at 8192 rows.
const PAGE_ROWS: usize = 8192;
const ROW_GROUP_ROWS: usize = 1 << 20;

fn props(sorting: Option<Vec<SortingColumn>>) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(sorting)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "quiver.format_version".to_string(),
            BLOCK_FORMAT_VERSION.to_string(),
        )]))
        // Timestamps are regular and mantissas move by a counter's increment: deltas pack
        // to a few bits. Raw values (and the exemplars' and histograms' `value`):
        // byte-stream-split puts exponent bytes together so zstd finds the redundancy.
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from(values::MANTISSA), false)
        .set_column_encoding(
            ColumnPath::from(values::MANTISSA),
            Encoding::DELTA_BINARY_PACKED,
        )
        .set_column_dictionary_enabled(ColumnPath::from(values::RAW), false)
        .set_column_encoding(ColumnPath::from(values::RAW), Encoding::BYTE_STREAM_SPLIT)
        // Nothing filters on values: statistics per row group only (the raw column's null
        // count tells readers to skip it), not per page in the page index.
        .set_column_statistics_enabled(ColumnPath::from(values::MANTISSA), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from(values::SCALE), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from(values::BASE), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from(values::RAW), EnabledStatistics::Chunk)
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT)
        .build()
}

fn to_parquet(batches: &[RecordBatch], props: WriterProperties) -> Result<Bytes, StorageError> {
    let schema = batches[0].schema();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(Bytes::from(buf))
}

/// SHA-256 (hex) of label sets in order, each pair length-prefixed and each set closed,
/// so no two different lists of label sets feed it the same bytes.
pub fn series_digest(labels: &[Labels]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for l in labels {
        for (n, v) in l.iter() {
            h.update((n.len() as u32).to_le_bytes());
            h.update(n.as_bytes());
            h.update((v.len() as u32).to_le_bytes());
            h.update(v.as_bytes());
        }
        h.update(u32::MAX.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows handed to the Parquet writer at a time.
const WRITE_ROWS: usize = 8 * PAGE_ROWS;

/// Writes one block series by series, in label order, without holding its samples: rows
/// go to the Parquet writer as they come, which sends each finished row group to the store
/// (a multipart upload once the file outgrows one part). Series and postings files, which
/// grow with the series count, not the samples, are written by [`BlockWriter::finish`],
/// then `meta.json` last.
pub struct BlockWriter {
    store: Arc<dyn ObjectStore>,
    path: BlockPath,
    samples: AsyncArrowWriter<BufWriter>,
    ids: Vec<u32>,
    ts: Vec<i64>,
    vs: ValueRows,
    labels: Vec<Labels>,
    /// Histogram rows `(local id, t, histogram)`, written at `finish` (histograms are few
    /// next to floats; a block's are held until then).
    hists: Vec<(u32, i64, Hist)>,
    exemplars: Vec<(u32, Ex)>,
    /// The last stored mantissa so far: the next series' values continue from it.
    chain: i64,
    min_t: i64,
    max_t: i64,
    n: u64,
}

impl BlockWriter {
    pub fn new(store: Arc<dyn ObjectStore>, id: String) -> Result<Self, StorageError> {
        let path = BlockPath::new(id);
        let sorting = Some(vec![
            SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: 1,
                descending: false,
                nulls_first: false,
            },
        ]);
        // One put when the file stays under a part (10 MB), else a multipart upload.
        let out = BufWriter::new(store.clone(), path.samples());
        let samples = AsyncArrowWriter::try_new(out, samples_schema(), Some(props(sorting)))?;
        Ok(BlockWriter {
            store,
            path,
            samples,
            ids: Vec::new(),
            ts: Vec::new(),
            vs: ValueRows::default(),
            labels: Vec::new(),
            hists: Vec::new(),
            exemplars: Vec::new(),
            chain: 0,
            min_t: i64::MAX,
            max_t: i64::MIN,
            n: 0,
        })
    }

    /// The block's id.
    pub fn id(&self) -> &str {
        &self.path.id
    }

    /// Appends the next series: labels strictly above the previous series', samples sorted
    /// by time. Its local id is its position.
    pub async fn push(
        &mut self,
        labels: Labels,
        ts: &[i64],
        vals: &[f64],
    ) -> Result<(), StorageError> {
        self.push_all(labels, ts, vals, &[], &[]).await
    }

    /// [`BlockWriter::push`] with the series' histogram samples and exemplars (each sorted
    /// by time).
    pub async fn push_all(
        &mut self,
        labels: Labels,
        ts: &[i64],
        vals: &[f64],
        hists: &[(i64, Hist)],
        exemplars: &[Ex],
    ) -> Result<(), StorageError> {
        if self.labels.last().is_some_and(|l| *l >= labels) {
            return Err(StorageError::Corrupt(format!(
                "block {}: series written out of label order",
                self.path.id
            )));
        }
        let local = self.labels.len() as u32;
        self.labels.push(labels);
        if let (Some((f, _)), Some((l, _))) = (hists.first(), hists.last()) {
            self.min_t = self.min_t.min(*f);
            self.max_t = self.max_t.max(*l);
        }
        self.hists
            .extend(hists.iter().map(|(t, h)| (local, *t, h.clone())));
        if let (Some(f), Some(l)) = (exemplars.first(), exemplars.last()) {
            self.min_t = self.min_t.min(f.ts);
            self.max_t = self.max_t.max(l.ts);
        }
        self.exemplars
            .extend(exemplars.iter().map(|e| (local, e.clone())));
        if let (Some(&f), Some(&l)) = (ts.first(), ts.last()) {
            self.min_t = self.min_t.min(f);
            self.max_t = self.max_t.max(l);
        }
        self.n += ts.len() as u64;
        let encoded = ValueRows::series(vals, &mut self.chain);
        let mut at = 0;
        while at < ts.len() {
            let take = (WRITE_ROWS - self.ids.len()).min(ts.len() - at);
            self.ids.extend(std::iter::repeat_n(local, take));
            self.ts.extend_from_slice(&ts[at..at + take]);
            self.vs.extend_from(&encoded, at, take);
            at += take;
            if self.ids.len() >= WRITE_ROWS {
                self.write_rows().await?;
            }
        }
        Ok(())
    }

    async fn write_rows(&mut self) -> Result<(), StorageError> {
        let batch = samples_batch(&samples_schema(), &mut self.ids, &mut self.ts, &mut self.vs)?;
        self.samples.write(&batch).await?;
        Ok(())
    }

    /// Finishes the samples file, writes the series and postings files, then `meta.json`.
    pub async fn finish(
        mut self,
        level: u32,
        parents: Vec<String>,
        wal: Option<WalSource>,
    ) -> Result<BlockMeta, StorageError> {
        if !self.ids.is_empty() {
            self.write_rows().await?;
        }
        self.samples.close().await?;
        let mut samples_bytes = self.store.head(&self.path.samples()).await?.size;
        if !self.hists.is_empty() {
            let batch =
                super::histograms::to_batch(self.hists.iter().map(|(id, t, h)| (*id, *t, &**h)))?;
            let file = to_parquet(&[batch], props(None))?;
            samples_bytes += file.len() as u64;
            self.store
                .put(&self.path.histograms(), PutPayload::from_bytes(file))
                .await?;
        }
        if !self.exemplars.is_empty() {
            let batch =
                super::exemplars::to_batch(self.exemplars.iter().map(|(id, e)| (*id, &**e)))?;
            let file = to_parquet(&[batch], props(None))?;
            samples_bytes += file.len() as u64;
            self.store
                .put(&self.path.exemplars(), PutPayload::from_bytes(file))
                .await?;
        }
        let (series_bytes, postings_bytes) = index_files(&self.labels)?;
        let bytes = samples_bytes + (series_bytes.len() + postings_bytes.len()) as u64;
        let (k2, k3) = (self.path.series(), self.path.postings());
        let (b, c) = tokio::join!(
            self.store.put(&k2, PutPayload::from_bytes(series_bytes)),
            self.store.put(&k3, PutPayload::from_bytes(postings_bytes)),
        );
        b?;
        c?;
        let empty = self.n == 0 && self.hists.is_empty() && self.exemplars.is_empty();
        let meta = BlockMeta {
            format_version: BLOCK_FORMAT_VERSION,
            id: self.path.id.clone(),
            min_t: if empty { 0 } else { self.min_t },
            max_t: if empty { 0 } else { self.max_t },
            num_series: self.labels.len() as u64,
            num_samples: self.n,
            num_histograms: self.hists.len() as u64,
            histogram_series: (!self.hists.is_empty()).then(|| {
                use base64::Engine as _;
                let locals: RoaringBitmap = self.hists.iter().map(|(id, _, _)| *id).collect();
                let mut bytes = Vec::with_capacity(locals.serialized_size());
                locals
                    .serialize_into(&mut bytes)
                    .expect("writing to a Vec cannot fail");
                base64::engine::general_purpose::STANDARD.encode(bytes)
            }),
            num_exemplars: self.exemplars.len() as u64,
            level,
            parents,
            wal,
            bytes,
            series_digest: Some(series_digest(&self.labels)),
        };
        let json =
            serde_json::to_vec_pretty(&meta).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        self.store
            .put(&self.path.meta(), PutPayload::from(json))
            .await?;
        Ok(meta)
    }
}

/// Writes a block from series sorted by labels (their index becomes the local series id).
/// Files first, `meta.json` last. Returns the meta.
pub async fn write_block(
    store: Arc<dyn ObjectStore>,
    id: String,
    series: &[SeriesData],
    level: u32,
    parents: Vec<String>,
    wal: Option<WalSource>,
) -> Result<BlockMeta, StorageError> {
    let mut w = BlockWriter::new(store, id)?;
    for s in series {
        w.push_all(s.labels.clone(), &s.ts, &s.vals, &s.hists, &s.exemplars)
            .await?;
    }
    w.finish(level, parents, wal).await
}

/// The series file (one row per label pair of each local id) and the postings file
/// (label name, value, roaring bitmap of local ids) of a block's series.
fn index_files(labels: &[Labels]) -> Result<(Bytes, Bytes), StorageError> {
    // Series: one row per label pair; parquet dictionary-encodes the repeated strings.
    let series_schema = Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]));
    let mut sid = Vec::new();
    let mut names = StringBuilder::new();
    let mut values = StringBuilder::new();
    let mut postings: std::collections::BTreeMap<(&str, &str), RoaringBitmap> = Default::default();
    for (local, l) in labels.iter().enumerate() {
        for (name, value) in l.iter() {
            sid.push(local as u32);
            names.append_value(name);
            values.append_value(value);
            postings
                .entry((name, value))
                .or_default()
                .insert(local as u32);
        }
    }
    let series_batch = RecordBatch::try_new(
        series_schema,
        vec![
            Arc::new(UInt32Array::from(sid)),
            Arc::new(names.finish()),
            Arc::new(values.finish()),
        ],
    )?;
    let series_bytes = to_parquet(
        &[series_batch],
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build(),
    )?;
    let postings_schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
        Field::new("series_ids", DataType::Binary, false),
    ]));
    let mut pn = StringBuilder::new();
    let mut pv = StringBuilder::new();
    let mut pb = BinaryBuilder::new();
    let mut tmp = Vec::new();
    for ((n, v), bm) in &postings {
        pn.append_value(n);
        pv.append_value(v);
        tmp.clear();
        bm.serialize_into(&mut tmp)?;
        pb.append_value(&tmp);
    }
    let postings_batch = RecordBatch::try_new(
        postings_schema,
        vec![
            Arc::new(pn.finish()),
            Arc::new(pv.finish()),
            Arc::new(pb.finish()),
        ],
    )?;
    let postings_bytes = to_parquet(
        &[postings_batch],
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build(),
    )?;

    Ok((series_bytes, postings_bytes))
}

fn samples_batch(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    ids: &mut Vec<u32>,
    ts: &mut Vec<i64>,
    vs: &mut ValueRows,
) -> Result<RecordBatch, StorageError> {
    let mut cols: Vec<datafusion::arrow::array::ArrayRef> = vec![
        Arc::new(UInt32Array::from(std::mem::take(ids))),
        Arc::new(Int64Array::from(std::mem::take(ts))),
    ];
    cols.extend(vs.take_columns());
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(pairs: &[&[(&str, &str)]]) -> Vec<Labels> {
        pairs
            .iter()
            .map(|p| {
                let v = p.iter().map(|(n, v)| (n.to_string(), v.to_string()));
                Labels::new(v.collect()).unwrap()
            })
            .collect()
    }

    /// The same lists of label sets give the same digest; lists that differ anywhere (a
    /// name/value boundary, a set boundary, the order) give others.
    #[test]
    fn series_digests_tell_lists_of_label_sets_apart() {
        let a = sets(&[&[("a", "bc")], &[("x", "1")]]);
        assert_eq!(series_digest(&a), series_digest(&a.clone()));
        let others = [
            sets(&[&[("ab", "c")], &[("x", "1")]]),
            sets(&[&[("a", "bc"), ("x", "1")]]),
            sets(&[&[("x", "1")], &[("a", "bc")]]),
            sets(&[&[("a", "bc")]]),
        ];
        for o in &others {
            assert_ne!(series_digest(&a), series_digest(o), "{o:?}");
        }
        assert_eq!(series_digest(&a).len(), 64);
    }
}
