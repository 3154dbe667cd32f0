//! Immutable blocks: one time range of samples, written once, read many times.
//!
//! A block is a key prefix holding `samples.parquet` (series_id u32, timestamp i64 ms, and
//! the value as a decimal mantissa and its scale or a raw f64 (`values`); sorted by series
//! then time), `series.parquet` (one row per label pair of each
//! local series id), `postings.parquet` (label name, value, roaring bitmap of local ids) and
//! `meta.json`, written last: a block without its meta is incomplete and ignored.

pub mod exemplars;
pub mod histograms;
mod meta;
mod reader;
pub mod values;
mod writer;

pub use meta::{BLOCK_FORMAT_VERSION, BlockMeta, WalSource};
pub use reader::{LoadedBlock, is_sorted, read_meta, read_parquet, read_postings, read_series};
pub use writer::{BlockWriter, SeriesData, write_block};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::{Arc, LazyLock};

/// Schema of `samples.parquet` as this binary writes it (format 3; formats 1 and 2 had one
/// `value` f64 column in place of the four value columns, see [`values::ValueLayout`]).
pub fn samples_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields = vec![
            Field::new("series_id", DataType::UInt32, false),
            Field::new("timestamp", DataType::Int64, false),
        ];
        fields.extend(values::fields());
        Arc::new(Schema::new(fields))
    });
    S.clone()
}
