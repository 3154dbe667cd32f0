//! Object-store requests counted by operation and by the block file they touch, for
//! `/metrics` (`quiver_object_store_requests_total{operation, file}`) and for tests that
//! check what a code path reads — e.g. that startup reads only index files, never samples.
//!
//! Counters are process-wide, like the rest of `/metrics`: every store built by
//! `objstore::build` is wrapped.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Operations counted (indices: the constants below).
pub const OPERATIONS: [&str; 8] = [
    "get",
    "get_range",
    "head",
    "put",
    "multipart",
    "list",
    "delete",
    "copy",
];
const GET: usize = 0;
const GET_RANGE: usize = 1;
const HEAD: usize = 2;
const PUT: usize = 3;
const MULTIPART: usize = 4;
const LIST: usize = 5;
const DELETE: usize = 6;
const COPY: usize = 7;
/// Files told apart: a block's samples, series, postings and meta; a cluster's manifest,
/// WAL objects and leases (with the members' heartbeats and HA elections); anything else.
pub const FILES: [&str; 8] = [
    "samples", "series", "postings", "meta", "manifest", "wal", "lease", "other",
];

static COUNTS: [[AtomicU64; FILES.len()]; OPERATIONS.len()] =
    [const { [const { AtomicU64::new(0) }; FILES.len()] }; OPERATIONS.len()];

fn file_of(p: &Path) -> usize {
    match p.filename() {
        Some("samples.parquet") => 0,
        Some("series.parquet") => 1,
        Some("postings.parquet") => 2,
        Some("meta.json") => 3,
        Some("manifest.json") => 4,
        Some(f) if f.ends_with(".wal") => 5,
        _ if [
            "cluster/leases/",
            "cluster/members/",
            "cluster/queriers/",
            "cluster/ha/",
        ]
        .iter()
        // A listing names the folder itself (no trailing slash).
        .any(|d| p.as_ref().contains(d) || p.as_ref().ends_with(d.trim_end_matches('/'))) =>
        {
            6
        }
        _ => 7,
    }
}

fn count(op: usize, p: Option<&Path>) {
    let f = p.map_or(FILES.len() - 1, file_of);
    COUNTS[op][f].fetch_add(1, Ordering::Relaxed);
}

/// `(operation, file, requests)` for every counter that is not zero.
pub fn requests() -> Vec<(&'static str, &'static str, u64)> {
    let mut out = Vec::new();
    for (o, row) in COUNTS.iter().enumerate() {
        for (f, c) in row.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                out.push((OPERATIONS[o], FILES[f], n));
            }
        }
    }
    out
}

/// Requests of `operation` on `file` so far.
pub fn requests_of(operation: &str, file: &str) -> u64 {
    let (Some(o), Some(f)) = (
        OPERATIONS.iter().position(|x| *x == operation),
        FILES.iter().position(|x| *x == file),
    ) else {
        return 0;
    };
    COUNTS[o][f].load(Ordering::Relaxed)
}

/// Delegates every call to `inner`, counting it first.
pub struct CountedStore {
    inner: Arc<dyn ObjectStore>,
}

impl CountedStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        CountedStore { inner }
    }
}

impl fmt::Display for CountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counted({})", self.inner)
    }
}

impl fmt::Debug for CountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountedStore({:?})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        count(PUT, Some(location));
        let start = std::time::Instant::now();
        let r = self.inner.put_opts(location, payload, opts).await;
        super::telemetry::observe(OPERATIONS[PUT], start, &r);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        count(MULTIPART, Some(location));
        let start = std::time::Instant::now();
        let r = self.inner.put_multipart_opts(location, opts).await;
        super::telemetry::observe(OPERATIONS[MULTIPART], start, &r);
        r
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            HEAD
        } else if options.range.is_some() {
            GET_RANGE
        } else {
            GET
        };
        count(op, Some(location));
        let start = std::time::Instant::now();
        let r = self.inner.get_opts(location, options).await;
        super::telemetry::observe(OPERATIONS[op], start, &r);
        r
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        count(GET_RANGE, Some(location));
        let start = std::time::Instant::now();
        let r = self.inner.get_ranges(location, ranges).await;
        super::telemetry::observe(OPERATIONS[GET_RANGE], start, &r);
        r
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        count(DELETE, None);
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        count(LIST, prefix);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        count(LIST, prefix);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        count(LIST, None);
        let start = std::time::Instant::now();
        let r = self.inner.list_with_delimiter(prefix).await;
        super::telemetry::observe(OPERATIONS[LIST], start, &r);
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        count(COPY, Some(to));
        let start = std::time::Instant::now();
        let r = self.inner.copy_opts(from, to, options).await;
        super::telemetry::observe(OPERATIONS[COPY], start, &r);
        r
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        count(COPY, Some(to));
        self.inner.rename_opts(from, to, options).await
    }
}
