//! One storage engine per tenant, so tenants' data never share a block, a WAL, an index or
//! a cache entry.
//!
//! The default tenant keeps the layout of a single-tenant install (data dir and bucket
//! root); tenant `t` lives under `<data dir>/tenants/t/` locally and `tenants/t/` in the
//! object store. Tenants are opened on first use and, at startup, for every directory
//! under `tenants/` (so their WALs are replayed and their heads flushed).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::prefix::PrefixStore;
use tokio::sync::OnceCell;

use super::{Storage, StorageError, StorageOptions};

pub const TENANTS_DIR: &str = "tenants";

/// The tenant whose data lives at the root of the data dir and bucket (no prefix).
pub const DEFAULT_TENANT: &str = "default";

/// Tenant ids become directory names and object-store prefixes: 1–128 of
/// `A–Z a–z 0–9 - _ .`, and not `.` or `..`.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A tenant's view of the store: the root for the default tenant, `tenants/<t>/` otherwise.
pub fn tenant_store(root: &Arc<dyn ObjectStore>, tenant: &str) -> Arc<dyn ObjectStore> {
    if tenant == DEFAULT_TENANT {
        return root.clone();
    }
    let prefix = object_store::path::Path::from_iter([TENANTS_DIR, tenant]);
    Arc::new(PrefixStore::new(root.clone(), prefix))
}

pub struct Tenants {
    opts: StorageOptions,
    /// Most tenants besides the default one that may be open.
    max_tenants: usize,
    store: Arc<dyn ObjectStore>,
    /// The default tenant, set once its WAL replay has finished (until then: 503).
    default: OnceLock<Arc<Storage>>,
    others: parking_lot::Mutex<HashMap<String, Arc<OnceCell<Arc<Storage>>>>>,
    /// Called once with each tenant's engine as it opens (a querier starts following it).
    on_open: Option<OnOpen>,
}

/// See [`Tenants::on_open`]. The future it returns resolves when the engine may answer.
pub type OnOpen = Arc<dyn Fn(&str, Arc<Storage>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Longest a tenant's engine waits for [`Tenants::on_open`]'s future before it answers
/// anyway (a querier whose writers do not answer still serves the blocks).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// Runs the open hook, if any, and waits (bounded) until the engine may answer.
async fn opened(hook: Option<&OnOpen>, tenant: &str, s: &Arc<Storage>) {
    let Some(f) = hook else { return };
    if tokio::time::timeout(CATCH_UP_LIMIT, f(tenant, s.clone()))
        .await
        .is_err()
    {
        tracing::warn!(
            tenant,
            limit_s = CATCH_UP_LIMIT.as_secs(),
            "not caught up with the cluster in time; answering with what is read so far"
        );
    }
}

impl Tenants {
    /// The samples cache every tenant's engine shares, if on.
    pub fn samples_cache(&self) -> Option<&super::SamplesCache> {
        self.opts.samples_cache.as_ref()
    }
}

impl Tenants {
    pub fn new(opts: StorageOptions, store: Arc<dyn ObjectStore>) -> Self {
        Tenants {
            opts,
            max_tenants: usize::MAX,
            store,
            default: OnceLock::new(),
            others: Default::default(),
            on_open: None,
        }
    }

    /// Calls `f` with each tenant's engine once it is open; the engine is served once the
    /// future `f` returns resolves (a querier: once it has caught up with the cluster).
    pub fn on_open(mut self, f: OnOpen) -> Self {
        self.on_open = Some(f);
        self
    }

    /// At most `n` tenants besides the default one (`--max-tenants`).
    pub fn with_max_tenants(mut self, n: usize) -> Self {
        self.max_tenants = n;
        self
    }

    /// Opens the default tenant and every tenant found on disk. Call once at startup.
    pub async fn open_all(&self) -> Result<(), StorageError> {
        let default = Arc::new(Storage::open(self.opts.clone(), self.store.clone()).await?);
        opened(self.on_open.as_ref(), DEFAULT_TENANT, &default).await;
        let _ = self.default.set(default);
        let dir = self.opts.data_dir.join(TENANTS_DIR);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if let Some(name) = e.file_name().to_str()
                    && valid_tenant(name)
                    && e.path().is_dir()
                {
                    self.get(name).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether the default tenant has finished replaying (a querier: caught up).
    pub fn ready(&self) -> bool {
        self.default.get().is_some()
    }

    /// A tenant's storage, opened (and its WAL replayed) on first use. `None` while the
    /// default tenant is still replaying.
    pub async fn get(&self, tenant: &str) -> Result<Arc<Storage>, StorageError> {
        if tenant == DEFAULT_TENANT {
            return self
                .default
                .get()
                .cloned()
                .ok_or_else(|| StorageError::Unavailable("WAL replay in progress".into()));
        }
        if !valid_tenant(tenant) {
            return Err(StorageError::Invalid(format!(
                "invalid tenant id {tenant:?}"
            )));
        }
        let cell = {
            let mut others = self.others.lock();
            if !others.contains_key(tenant) && others.len() >= self.max_tenants {
                return Err(StorageError::Invalid(format!(
                    "tenant {tenant:?} would exceed the limit of {} tenants (--max-tenants)",
                    self.max_tenants
                )));
            }
            others.entry(tenant.to_string()).or_default().clone()
        };
        let s = cell
            .get_or_try_init(|| async {
                let mut opts = self.opts.clone();
                opts.data_dir = self.opts.data_dir.join(TENANTS_DIR).join(tenant);
                opts.tenant = tenant.to_string();
                let store = tenant_store(&self.store, tenant);
                tracing::info!(tenant, "opening tenant storage");
                let s = Arc::new(Storage::open(opts, store).await?);
                opened(self.on_open.as_ref(), tenant, &s).await;
                Ok::<_, StorageError>(s)
            })
            .await?;
        Ok(s.clone())
    }

    /// Syncs and closes every open tenant's WAL (graceful shutdown).
    pub async fn close_all(&self) {
        for (_, s) in self.all() {
            s.close().await;
        }
    }

    /// Every open tenant's storage (for flush and compaction).
    pub fn all(&self) -> Vec<(String, Arc<Storage>)> {
        let mut out: Vec<(String, Arc<Storage>)> = self
            .default
            .get()
            .map(|s| (DEFAULT_TENANT.to_string(), s.clone()))
            .into_iter()
            .collect();
        for (name, cell) in self.others.lock().iter() {
            if let Some(s) = cell.get() {
                out.push((name.clone(), s.clone()));
            }
        }
        out
    }
}
