//! Every object-store key Quiver writes, in one place. Blocks live under `blocks/<id>/`.

use object_store::path::Path;

pub const BLOCKS_DIR: &str = "blocks";
/// Blocks that could not be read at startup are moved here (`quarantine/<id>/…`).
pub const QUARANTINE_DIR: &str = "quarantine";
pub const META_FILE: &str = "meta.json";
pub const SAMPLES_FILE: &str = "samples.parquet";
pub const SERIES_FILE: &str = "series.parquet";
pub const POSTINGS_FILE: &str = "postings.parquet";
pub const METADATA_FILE: &str = "metadata.json";
/// Metric metadata with the series that carried it (`storage::metadata`); supersedes
/// `metadata.json`, which earlier versions wrote and read.
pub const METADATA_SCOPED_FILE: &str = "metadata-scoped.json";

/// The key prefix of one block.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockPath {
    pub id: String,
}

impl BlockPath {
    pub fn new(id: impl Into<String>) -> Self {
        BlockPath { id: id.into() }
    }

    pub fn dir(&self) -> Path {
        Path::from_iter([BLOCKS_DIR, &self.id])
    }

    pub fn file(&self, name: &str) -> Path {
        Path::from_iter([BLOCKS_DIR, &self.id, name])
    }

    pub fn meta(&self) -> Path {
        self.file(META_FILE)
    }

    pub fn samples(&self) -> Path {
        self.file(SAMPLES_FILE)
    }

    pub fn series(&self) -> Path {
        self.file(SERIES_FILE)
    }

    /// Native-histogram samples; present only when `meta.json` counts some.
    pub fn histograms(&self) -> Path {
        self.file("histograms.parquet")
    }

    /// Exemplars; present only when `meta.json` counts some.
    pub fn exemplars(&self) -> Path {
        self.file("exemplars.parquet")
    }

    pub fn postings(&self) -> Path {
        self.file(POSTINGS_FILE)
    }

    /// Extracts the block id from any key under `blocks/<id>/`.
    pub fn from_key(key: &Path) -> Option<BlockPath> {
        let mut parts = key.parts();
        (parts.next()?.as_ref() == BLOCKS_DIR).then_some(())?;
        Some(BlockPath::new(parts.next()?.as_ref()))
    }
}

/// Metric metadata snapshot of earlier versions (read when the scoped one is absent).
pub fn metadata() -> Path {
    Path::from(METADATA_FILE)
}

/// Metric metadata snapshot, scoped by carrier series.
pub fn metadata_scoped() -> Path {
    Path::from(METADATA_SCOPED_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let b = BlockPath::new("01ABC");
        assert_eq!(b.samples().as_ref(), "blocks/01ABC/samples.parquet");
        assert_eq!(BlockPath::from_key(&b.meta()), Some(b));
        assert_eq!(BlockPath::from_key(&Path::from("other/x")), None);
    }
}
