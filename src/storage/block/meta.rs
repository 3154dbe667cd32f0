use serde::{Deserialize, Serialize};

/// Format version of block files (see `migrations/`).
pub const BLOCK_FORMAT_VERSION: u32 = 1;

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
}

impl BlockMeta {
    pub fn overlaps(&self, min_t: i64, max_t: i64) -> bool {
        self.min_t <= max_t && self.max_t >= min_t
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
