//! Blocks on local disk that survive a power cut.
//!
//! `object_store`'s `LocalFileSystem` writes a temporary file and renames it, but never
//! fsyncs: after a power cut a block's files can be empty or missing while the WAL that held
//! their samples was already deleted. [`SyncedLocalStore`] delegates to it and, before a
//! `put` (or a completed multipart upload, copy or rename) returns, fsyncs the file and every
//! directory from its parent up to the store root, so the file and its directory entries are
//! on disk. The flush writes `meta.json` last and truncates the WAL only after that, so a
//! block is published, and the WAL dropped, only when all of its files are durable.
//!
//! A [`FsJournal`] can record the syncs (and the flush records its WAL steps into the same
//! journal), so a test can check the order without tracing system calls.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// Durability steps in the order they happened, e.g. `fsync blocks/01J…/samples.parquet`,
/// `fsync-dir blocks/01J…`, `wal checkpoint 3`, `wal delete 3`.
pub type FsJournal = Arc<parking_lot::Mutex<Vec<String>>>;

pub struct SyncedLocalStore {
    inner: Arc<LocalFileSystem>,
    root: PathBuf,
    journal: Option<FsJournal>,
}

impl SyncedLocalStore {
    /// Blocks under `root` (created if missing).
    pub fn new(root: &FsPath) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let inner = LocalFileSystem::new_with_prefix(&root).map_err(std::io::Error::other)?;
        Ok(SyncedLocalStore {
            inner: Arc::new(inner),
            root,
            journal: None,
        })
    }

    /// Records every sync into `journal`.
    pub fn with_journal(mut self, journal: FsJournal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// fsyncs `location` and the directories from its parent up to the root.
    async fn sync(&self, location: &Path) -> Result<()> {
        let file = self.inner.path_to_filesystem(location)?;
        let root = self.root.clone();
        let journal = self.journal.clone();
        let key = location.to_string();
        blocking(move || sync_path(&root, &file, &key, journal.as_ref())).await
    }

    /// fsyncs the directory that held `location` (after a delete). A block directory left
    /// empty is removed too (object stores have no directories: otherwise every deleted
    /// block leaves one behind, and startup lists and probes each of them).
    async fn sync_parent(&self, location: &Path) -> Result<()> {
        let file = self.inner.path_to_filesystem(location)?;
        let root = self.root.clone();
        blocking(move || {
            let Some(dir) = file.parent().filter(|d| d.starts_with(&root) && *d != root) else {
                return Ok(());
            };
            let in_blocks = dir
                .parent()
                .is_some_and(|p| p == root.join(super::paths::BLOCKS_DIR));
            // Fails (and is left alone) while the directory still holds files.
            if in_blocks && std::fs::remove_dir(dir).is_ok() {
                if let Some(parent) = dir.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
            } else if dir.exists() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
    }
}

/// Runs file-system work on the blocking pool, as an object-store error on failure.
async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<()> {
    let generic = |e: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
        store: "SyncedLocalStore",
        source: e,
    };
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| generic(Box::new(e)))?
        .map_err(|e| generic(Box::new(e)))
}

fn sync_path(
    root: &FsPath,
    file: &FsPath,
    key: &str,
    journal: Option<&FsJournal>,
) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(j) = journal {
        j.lock().push(format!("fsync {key}"));
    }
    let mut dir = file.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root)) {
        std::fs::File::open(d)?.sync_all()?;
        if let Some(j) = journal {
            let rel = d.strip_prefix(root).unwrap_or(d).display().to_string();
            j.lock().push(format!("fsync-dir {rel}"));
        }
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

impl fmt::Display for SyncedLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedLocalStore({})", self.root.display())
    }
}

impl fmt::Debug for SyncedLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedLocalStore({})", self.root.display())
    }
}

#[async_trait]
impl ObjectStore for SyncedLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload {
            upload,
            store: SyncedLocalStore {
                inner: self.inner.clone(),
                root: self.root.clone(),
                journal: self.journal.clone(),
            },
            location: location.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Deleted entries are made durable by syncing their directories.
        let this = SyncedLocalStore {
            inner: self.inner.clone(),
            root: self.root.clone(),
            journal: None,
        };
        let this = Arc::new(this);
        self.inner
            .delete_stream(locations)
            .and_then(move |p| {
                let this = this.clone();
                async move {
                    this.sync_parent(&p).await?;
                    Ok(p)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.sync(to).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.sync(to).await?;
        self.sync_parent(from).await
    }
}

/// A multipart upload whose `complete` syncs like `put`.
struct SyncedUpload {
    upload: Box<dyn MultipartUpload>,
    store: SyncedLocalStore,
    location: Path,
}

impl fmt::Debug for SyncedUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedUpload({})", self.location)
    }
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.upload.complete().await?;
        self.store.sync(&self.location).await?;
        Ok(r)
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn put_syncs_the_file_and_each_directory_up_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let journal = FsJournal::default();
        let store = SyncedLocalStore::new(dir.path())
            .unwrap()
            .with_journal(journal.clone());
        store
            .put(
                &Path::from("blocks/b1/samples.parquet"),
                b"x".to_vec().into(),
            )
            .await
            .unwrap();
        let got = journal.lock().clone();
        assert_eq!(
            got,
            vec![
                "fsync blocks/b1/samples.parquet".to_string(),
                "fsync-dir blocks/b1".into(),
                "fsync-dir blocks".into(),
                "fsync-dir ".into(),
            ]
        );
        let back = store
            .get(&Path::from("blocks/b1/samples.parquet"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&back[..], b"x");
    }

    #[tokio::test]
    async fn deleting_a_blocks_last_file_removes_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = SyncedLocalStore::new(dir.path()).unwrap();
        for key in [
            "blocks/b1/meta.json",
            "blocks/b1/samples.parquet",
            "wal/00000001",
        ] {
            store
                .put(&Path::from(key), b"x".to_vec().into())
                .await
                .unwrap();
        }
        let b1 = dir.path().join("blocks/b1");
        store
            .delete(&Path::from("blocks/b1/meta.json"))
            .await
            .unwrap();
        assert!(b1.is_dir(), "still holds samples.parquet");
        store
            .delete(&Path::from("blocks/b1/samples.parquet"))
            .await
            .unwrap();
        assert!(!b1.exists());
        assert!(dir.path().join("blocks").is_dir());
        // Only block directories go: other directories stay as they are.
        store.delete(&Path::from("wal/00000001")).await.unwrap();
        assert!(dir.path().join("wal").is_dir());
    }
}
