//! Resident memory by owner: what Quiver's caches, indexes, heads and queries hold
//! (`quiver_memory_owner_bytes{owner}`) and what the allocator holds beyond it
//! (`quiver_allocator_bytes{state}`). The allocator's `allocated` minus the sum of the
//! owners is memory no owner accounts for (decoders' transient buffers, the runtime,
//! connection buffers); its `free` is what it keeps for reuse, `resident_free` the part of
//! that still resident (`--allocator-free-budget` gives it back once it grows too large:
//! `quiver_allocator_trims_total`); `quiver_resident_file_bytes` is the executable's
//! resident code and constants (`code_pages`: `quiver_code_page_releases_total`); the rest
//! of `process_resident_memory_bytes` is thread stacks.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use super::AppState;

/// The owners, in the order the dashboard stacks them.
pub(super) const OWNERS: [&str; 7] = [
    "samples_cache",
    "results_cache",
    "parquet_footers",
    "catalog",
    "block_index",
    "heads",
    "queries",
];

/// The catalog's estimate walks every series: refreshed at most this often.
const CATALOG_REFRESH: Duration = Duration::from_secs(60);

pub(super) struct MemoryMetrics {
    owners: IntGaugeVec,
    allocator: IntGaugeVec,
    trims: IntCounter,
    code: IntGauge,
    code_releases: IntCounter,
    catalog: Mutex<Option<(Instant, i64)>>,
}

impl MemoryMetrics {
    pub(super) fn register(r: &Registry) -> Self {
        let vec = |name: &str, help: &str, label: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        MemoryMetrics {
            owners: vec(
                "quiver_memory_owner_bytes",
                "Bytes held by each owner of Quiver's memory (estimates from the structures themselves; queries = reservations of the queries in flight).",
                "owner",
            ),
            allocator: vec(
                "quiver_allocator_bytes",
                "The allocator's own figures: allocated (asked for and not freed), free (kept in its arenas for reuse, resident or given back by a trim), resident_free (anonymous resident memory not allocated: the free memory still resident, and thread stacks), mapped (of allocated, large blocks mapped on their own).",
                "state",
            ),
            trims: {
                let c = IntCounter::new(
                    "quiver_allocator_trims_total",
                    "Times the allocator's free memory was given back to the system because more than --allocator-free-budget of it was resident.",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            code: {
                let g = IntGauge::new(
                    "quiver_resident_file_bytes",
                    "Resident file-backed memory (RssFile): mostly the executable's code and constant pages, which are dropped every 10 s until next used unless --keep-unused-code.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            code_releases: {
                let c = IntCounter::new(
                    "quiver_code_page_releases_total",
                    "Times the executable's resident code and constant pages were dropped from the process (mapped again from the page cache when next used).",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            catalog: Mutex::new(None),
        }
    }

    /// Reads the allocator's figures (every role).
    pub(super) fn update_allocator(&self) {
        let trims = crate::memory::trims();
        self.trims.inc_by(trims.saturating_sub(self.trims.get()));
        let releases = crate::code_pages::releases();
        self.code_releases
            .inc_by(releases.saturating_sub(self.code_releases.get()));
        if let Some(b) = crate::memory::resident_file() {
            self.code.set(b.min(i64::MAX as u64) as i64);
        }
        if let Some(s) = crate::memory::allocator_stats() {
            for (state, v) in [
                ("allocated", s.allocated),
                ("free", s.free),
                ("mapped", s.mapped),
                (
                    "resident_free",
                    crate::memory::resident_free_beside(s.allocated).unwrap_or_default(),
                ),
            ] {
                self.allocator
                    .with_label_values(&[state])
                    .set(v.min(i64::MAX as u64) as i64);
            }
        }
    }

    /// Reads each owner's bytes over every open tenant.
    pub(super) fn update_owners(&self, st: &AppState) {
        let tenants = st.tenants.all();
        let (mut blocks, mut footers) = (0usize, 0usize);
        for (_, s) in &tenants {
            let (b, f) = s.index_memory();
            blocks += b;
            footers += f;
        }
        let catalog = {
            let mut cached = self.catalog.lock();
            match *cached {
                Some((at, v)) if at.elapsed() < CATALOG_REFRESH => v,
                _ => {
                    let v: usize = tenants
                        .iter()
                        .map(|(_, s)| s.catalog().memory_bytes())
                        .sum();
                    *cached = Some((Instant::now(), v as i64));
                    v as i64
                }
            }
        };
        let heads = tenants.first().map_or(0, |(_, s)| {
            s.options()
                .head_samples
                .load(Ordering::Relaxed)
                .saturating_mul(crate::storage::HEAD_BYTES_PER_SAMPLE)
        });
        let samples_cache = st.tenants.samples_cache().map_or(0, |c| c.weighted_size());
        let values: [i64; 7] = [
            samples_cache as i64,
            st.results_cache.weighted_size() as i64,
            footers as i64,
            catalog,
            blocks as i64,
            heads as i64,
            crate::memory::query_reserved() as i64,
        ];
        for (owner, v) in OWNERS.iter().zip(values) {
            self.owners.with_label_values(&[owner]).set(v);
        }
    }
}
