//! Storage: WAL → head → immutable Parquet blocks on an object store.
//!
//! Write path: [`Storage::append`] validates a batch, registers its series in the catalog,
//! hands it to the WAL task, which writes and fsyncs it on the WAL pool (group commit:
//! every request that queued during one fsync shares it), applies it to the head and only
//! then acknowledges. [`Storage::flush`] rotates the WAL and freezes the head in the same
//! step on that task,
//! writes the frozen head as blocks (one per `block_duration` window; `meta.json` last),
//! records a checkpoint, swaps the blocks in and deletes the covered WAL segments.
//! [`Storage::compact`] merges blocks of one window and drops expired ones.

pub mod block;
mod column_scan;
mod compact;
pub mod counted;
mod decimal;
pub mod durable;
mod engine;
mod error;
mod exemplar_scan;
mod flush;
pub mod head;
pub mod hist_codec;
mod hist_scan;
pub mod manifest;
pub mod metadata;
pub mod objstore;
mod packed;
pub mod paths;
mod read;
mod scan;
/// A test batch of series `m{i=…}` (for other modules' tests over a storage).
#[cfg(test)]
pub(crate) use scan::tests::m_batch;
pub mod telemetry;
pub mod tenants;
pub mod verify;
pub mod wal;
mod wal_pool;

pub use column_scan::{ColumnBatch, Columns};
pub use engine::{
    Clock, ClusterMode, Forward, HEAD_BYTES_PER_SAMPLE, Installed, ShardOptions, Storage,
    StorageOptions, StorageStats, TailState, WalTail, WriteWindow, list_segments, metadata_key,
    read_segment, segment_key,
};
pub use error::StorageError;
pub use hist_scan::HistRun;
pub use read::{Piece, SamplesCache, SeriesResult, samples_cache};
pub use scan::{PendingSeries, Scan, SeriesPieces, SeriesRun, Snapshot};
pub use tenants::Tenants;

/// Format version of the data directory as a whole (`VERSION` file; see `migrations/`).
pub const DATA_FORMAT_VERSION: u32 = 3;
