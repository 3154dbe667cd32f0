//! Builds the object store that holds blocks: the local data dir (`file://`, default) or
//! an S3-compatible bucket (`s3://bucket/prefix`). Local blocks go through
//! `durable::SyncedLocalStore`, which fsyncs what it writes.

use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;

use super::StorageError;

/// S3 settings, as `config::S3Args` resolves them (declared there, with their defaults);
/// unset fields fall back to the usual `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: Option<bool>,
    /// Per-request timeout, ms; connecting gets at most 5 s of it.
    pub request_timeout_ms: Option<u64>,
    /// Retries of a failed request (with backoff, within 2 × the timeout).
    pub max_retries: Option<usize>,
}

/// `url` is `file://` / empty (blocks under `data_dir`) or `s3://bucket[/prefix]`.
pub fn build(
    url: Option<&str>,
    data_dir: &Path,
    s3: &S3Options,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let inner = build_uncounted(url, data_dir, s3)?;
    Ok(Arc::new(super::counted::CountedStore::new(inner)))
}

/// The store for `url`, its requests not counted.
fn build_uncounted(
    url: Option<&str>,
    data_dir: &Path,
    s3: &S3Options,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match url.filter(|u| !u.is_empty() && *u != "file://") {
        None => Ok(Arc::new(super::durable::SyncedLocalStore::new(data_dir)?)),
        Some(u) => {
            let parsed = url::Url::parse(u)
                .map_err(|e| StorageError::Config(format!("storage URL {u:?}: {e}")))?;
            match parsed.scheme() {
                "s3" => {
                    let bucket = parsed.host_str().ok_or_else(|| {
                        StorageError::Config(format!("storage URL {u:?} has no bucket"))
                    })?;
                    // Explicit timeouts and retries: object_store's defaults (10 retries
                    // within 3 minutes) would hold a flush, and the memory behind it, for
                    // minutes per request while the store is down.
                    let timeout = std::time::Duration::from_millis(
                        s3.request_timeout_ms.unwrap_or(30_000).max(1),
                    );
                    let client = object_store::ClientOptions::new()
                        .with_timeout(timeout)
                        .with_connect_timeout(timeout.min(std::time::Duration::from_secs(5)));
                    let retry = object_store::RetryConfig {
                        max_retries: s3.max_retries.unwrap_or(3),
                        retry_timeout: timeout * 2,
                        ..Default::default()
                    };
                    let mut b = AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .with_client_options(client)
                        .with_retry(retry);
                    if let Some(e) = &s3.endpoint {
                        b = b.with_endpoint(e);
                        if e.starts_with("http://") {
                            b = b.with_allow_http(true);
                        }
                    }
                    if let Some(r) = &s3.region {
                        b = b.with_region(r);
                    }
                    if let Some(k) = &s3.access_key_id {
                        b = b.with_access_key_id(k);
                    }
                    if let Some(k) = &s3.secret_access_key {
                        b = b.with_secret_access_key(k);
                    }
                    if let Some(h) = s3.allow_http {
                        b = b.with_allow_http(h);
                    }
                    let store: Arc<dyn ObjectStore> = Arc::new(b.build()?);
                    let prefix = parsed.path().trim_matches('/');
                    Ok(if prefix.is_empty() {
                        store
                    } else {
                        Arc::new(PrefixStore::new(store, prefix))
                    })
                }
                "file" => {
                    let p = parsed
                        .to_file_path()
                        .map_err(|_| StorageError::Config(format!("bad file URL {u:?}")))?;
                    Ok(Arc::new(super::durable::SyncedLocalStore::new(&p)?))
                }
                other => Err(StorageError::Config(format!(
                    "unsupported storage scheme {other:?} (use file:// or s3://)"
                ))),
            }
        }
    }
}
