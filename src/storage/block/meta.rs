use serde::{Deserialize, Serialize};

/// Format version of block files (see `migrations/`): the newest this binary reads and writes.
/// 2 added `histograms.parquet` and `exemplars.parquet`; 3 stores `samples.parquet`'s values
/// as decimal mantissas (`values`), so every block is written as 3 and older binaries
/// refuse (rather than misread) it. Blocks of 1 and 2 are still read.
pub const BLOCK_FORMAT_VERSION: u32 = 3;

/// Which WAL flush produced a block, so a restart can tell a finished flush from a torn one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSource {
    pub instance: String,
    pub segment: u64,
}

/// `meta.json`: written last; its presence marks the block complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub format_version: u32,
    /// ULID: sorts by creation time, so a later block wins when two hold the same sample.
    pub id: String,
    /// Inclusive time range of the samples, in ms.
    pub min_t: i64,
    pub max_t: i64,
    pub num_series: u64,
    pub num_samples: u64,
    /// Native-histogram samples (in `histograms.parquet`, absent when 0); not in
    /// `num_samples`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_histograms: u64,
    /// Local ids of the series with histograms: a roaring bitmap (portable serialization),
    /// base64. Readers skip blocks whose histograms are all of other series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram_series: Option<String>,
    /// Exemplars (in `exemplars.parquet`, absent when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_exemplars: u64,
    /// 1 for blocks cut from the head; parents' max + 1 for compacted blocks.
    pub level: u32,
    /// Blocks this one replaces (compaction). Readers hide any block listed here.
    #[serde(default)]
    pub parents: Vec<String>,
    #[serde(default)]
    pub wal: Option<WalSource>,
    /// Total bytes of the block's files.
    pub bytes: u64,
    /// SHA-256 of the block's label sets in local-id order (hex). Blocks flushed from a
    /// head of the same series carry the same digest: a start reads the series file of the
    /// first and gives the others its ids (a million-series block's series file took
    /// ~0.7 s to read and look up). Absent in blocks written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_digest: Option<String>,
}

impl BlockMeta {
    pub fn overlaps(&self, min_t: i64, max_t: i64) -> bool {
        self.min_t <= max_t && self.max_t >= min_t
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
