//! Data-directory format versions and the ordered upgrade steps in `migrations/`.
//!
//! A data dir records its format in `VERSION`. A binary opens any version up to its own,
//! running the steps in between, and refuses a newer one with a clear message.

use std::path::Path;

use crate::storage::{DATA_FORMAT_VERSION, StorageError};

/// One upgrade step: the version it produces and its description (the file in `migrations/`).
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub doc: &'static str,
    /// Rewrites the data dir from `version - 1` to `version`.
    pub apply: fn(&Path) -> Result<(), StorageError>,
}

/// Every step, oldest first. Version 1 is the initial layout and needs no rewrite.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial",
        doc: include_str!("../migrations/0001_initial.md"),
        apply: |_| Ok(()),
    },
    // Native histograms and exemplars: new WAL record sections and block files only.
    Migration {
        version: 2,
        name: "0002_histograms_exemplars",
        doc: include_str!("../migrations/0002_histograms_exemplars.md"),
        apply: |_| Ok(()),
    },
    // Values as decimal mantissas in new blocks; old blocks are read as they are.
    Migration {
        version: 3,
        name: "0003_decimal_values",
        doc: include_str!("../migrations/0003_decimal_values.md"),
        apply: |_| Ok(()),
    },
];

/// For read-only opens: an existing data dir must have exactly this binary's format.
pub fn check_readable(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join("VERSION");
    let s = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        // No local state (e.g. a fresh reader of a shared bucket): nothing to check.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let v: u32 = s
        .trim()
        .parse()
        .map_err(|_| StorageError::Format(format!("{}: {s:?}", path.display())))?;
    if v != DATA_FORMAT_VERSION {
        return Err(StorageError::Format(format!(
            "data directory {} has format version {v}; this binary needs {DATA_FORMAT_VERSION} (start `quiver serve` once to upgrade, or use a newer quiver)",
            dir.display()
        )));
    }
    Ok(())
}

/// Reads `VERSION`, upgrades older layouts, refuses newer ones, writes the current version.
pub fn check_and_upgrade(dir: &Path) -> Result<u32, StorageError> {
    let path = dir.join("VERSION");
    let found = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<u32>().map_err(|_| {
            StorageError::Format(format!("{}: not a version number: {s:?}", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e.into()),
    };
    if found > DATA_FORMAT_VERSION {
        return Err(StorageError::Format(format!(
            "data directory {} has format version {found}, newer than this binary supports ({DATA_FORMAT_VERSION}); \
             use a newer quiver",
            dir.display()
        )));
    }
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > found && m.version <= DATA_FORMAT_VERSION)
    {
        tracing::info!(migration = m.name, "applying data-dir migration");
        (m.apply)(dir)?;
        write_version(dir, m.version)?;
    }
    Ok(DATA_FORMAT_VERSION)
}

/// Replaces `VERSION` whole: a new file renamed over it, so a crash leaves the old or the
/// new version, never an empty file, and a hard-linked copy of the dir keeps its own.
fn write_version(dir: &Path, version: u32) -> Result<(), StorageError> {
    use std::io::Write as _;
    let tmp = dir.join("VERSION.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{version}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("VERSION"))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_dir_gets_current_version_and_newer_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(check_and_upgrade(d.path()).unwrap(), DATA_FORMAT_VERSION);
        assert_eq!(
            std::fs::read_to_string(d.path().join("VERSION"))
                .unwrap()
                .trim(),
            "3"
        );
        std::fs::write(d.path().join("VERSION"), "99").unwrap();
        let err = check_and_upgrade(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("format version 99, newer than this binary supports (3)"),
            "{err}"
        );
        // A version-1 dir upgrades in place (nothing to rewrite).
        std::fs::write(d.path().join("VERSION"), "1").unwrap();
        assert_eq!(check_and_upgrade(d.path()).unwrap(), 3);
        // A hard-linked copy's upgrade leaves the original's VERSION as it was.
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("VERSION"), "2").unwrap();
        std::fs::hard_link(d.path().join("VERSION"), copy.path().join("VERSION")).unwrap();
        assert_eq!(check_and_upgrade(copy.path()).unwrap(), 3);
        let read = |p: &Path| std::fs::read_to_string(p.join("VERSION")).unwrap();
        assert_eq!(read(d.path()).trim(), "2");
        assert_eq!(read(copy.path()).trim(), "3");
        assert!(!copy.path().join("VERSION.tmp").exists());
    }

    #[test]
    fn steps_are_ordered_and_end_at_current() {
        assert!(
            MIGRATIONS
                .windows(2)
                .all(|w| w[0].version + 1 == w[1].version)
        );
        assert_eq!(MIGRATIONS.last().unwrap().version, DATA_FORMAT_VERSION);
        assert!(MIGRATIONS[0].doc.contains("samples.parquet"));
    }
}
