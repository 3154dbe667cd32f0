//! Quiver's own metrics at `/metrics`, in the Prometheus text exposition format (via the
//! `prometheus` crate): request latency by route, API errors by type, ingest, WAL, head,
//! blocks, flushes and compactions.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use super::AppState;

/// Process-wide metrics (one server per process).
pub struct Metrics {
    registry: Registry,
    pub request_duration: HistogramVec,
    pub api_errors: IntCounterVec,
    pub flush_failures: IntCounter,
    pub compaction_failures: IntCounter,
    pub results_cache_hits: IntCounter,
    pub results_cache_misses: IntCounter,
    results_cache_bytes: IntGauge,
    samples_cache_bytes: IntGauge,
    compaction_peak_bytes: IntGauge,
    pub auth_failures: IntCounterVec,
    object_store_requests: IntCounterVec,
    tenants: IntGauge,
    /// Shards this writer owns (cluster).
    pub cluster_shards_owned: IntGauge,
    /// 1 while this compactor holds the compactor lease (cluster).
    pub cluster_compactor_active: IntGauge,
    /// Samples a distributor dropped as a non-elected HA replica's.
    pub ha_dropped_samples: IntCounter,
    /// Parts of writes a distributor sent to writers, by result.
    pub cluster_pushes: IntCounterVec,
    /// Partition streams of other queriers' plan tasks running here now (issue 26).
    pub worker_streams: IntGauge,
    /// Tasks of distributed plans this querier started.
    pub worker_tasks_started: IntCounter,
    /// Plans this querier coordinated across queriers, by outcome.
    pub distributed_plans: IntCounterVec,
    /// Queriers this querier sees as live workers (itself included).
    pub cluster_workers: IntGauge,
    /// Each worker's share of a leaf relative to an even split, from its measured pace.
    pub distributed_task_weight: prometheus::GaugeVec,
    samples_appended: IntCounter,
    wal_fsyncs: IntCounter,
    wal_fsync_seconds: prometheus::Counter,
    flushes: IntCounter,
    compactions: IntCounter,
    blocks_deleted: IntCounter,
    blocks_quarantined: IntCounter,
    wal_orphan_samples: IntCounter,
    exemplars_dropped: IntCounter,
    frozen_heads: IntGauge,
    head_series: IntGauge,
    head_samples: IntGauge,
    blocks: IntGauge,
    block_bytes: IntGauge,
    series: IntGauge,
    head_memory_bytes: IntGauge,
    head_memory_limit_bytes: IntGauge,
    process: super::process_metrics::ProcessMetrics,
    memory: super::memory_metrics::MemoryMetrics,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let request_duration = HistogramVec::new(
        HistogramOpts::new(
            "quiver_http_request_duration_seconds",
            "HTTP request latency by route and status code.",
        )
        .buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        &["handler", "code"],
    )
    .expect("valid metric");
    r.register(Box::new(request_duration.clone()))
        .expect("unique metric");
    let api_errors = IntCounterVec::new(
        Opts::new(
            "quiver_api_errors_total",
            "API errors by Prometheus errorType.",
        ),
        &["error_type"],
    )
    .expect("valid metric");
    r.register(Box::new(api_errors.clone()))
        .expect("unique metric");
    Metrics {
        flush_failures: counter(
            &r,
            "quiver_head_flush_failures_total",
            "Head flushes that failed (retried).",
        ),
        compaction_failures: counter(
            &r,
            "quiver_compaction_failures_total",
            "Compaction runs that failed.",
        ),
        results_cache_hits: counter(
            &r,
            "quiver_results_cache_hits_total",
            "Range-query time extents answered from the results cache.",
        ),
        results_cache_misses: counter(
            &r,
            "quiver_results_cache_misses_total",
            "Range-query time extents evaluated (not in the results cache, or too fresh).",
        ),
        results_cache_bytes: gauge(
            &r,
            "quiver_results_cache_bytes",
            "Approximate bytes held by the results cache.",
        ),
        samples_cache_bytes: gauge(
            &r,
            "quiver_samples_cache_bytes",
            "Approximate bytes of decoded block samples held in memory.",
        ),
        compaction_peak_bytes: gauge(
            &r,
            "quiver_compaction_peak_chunk_bytes",
            "Most decoded-sample bytes one compaction chunk has held since start (bounded by --compaction-memory-limit), largest over tenants.",
        ),
        auth_failures: {
            let c = IntCounterVec::new(
                Opts::new(
                    "quiver_auth_failures_total",
                    "Requests refused by authentication or authorization, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            // Exported at 0 from the start: a rate over a missing series is "no data".
            for reason in crate::auth::AuthError::REASONS {
                c.with_label_values(&[reason]);
            }
            c
        },
        object_store_requests: {
            let c = IntCounterVec::new(
                Opts::new(
                    "quiver_object_store_requests_total",
                    "Object-store requests, by operation and by block file (samples, series, postings, meta, other).",
                ),
                &["operation", "file"],
            )
            .expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        },
        tenants: gauge(&r, "quiver_tenants", "Tenants with open storage."),
        cluster_shards_owned: gauge(
            &r,
            "quiver_cluster_shards_owned",
            "Shards this writer holds the lease of.",
        ),
        cluster_compactor_active: gauge(
            &r,
            "quiver_cluster_compactor_active",
            "1 while this compactor holds the compactor lease.",
        ),
        ha_dropped_samples: counter(
            &r,
            "quiver_ha_dropped_samples_total",
            "Samples dropped because their HA replica is not the elected one.",
        ),
        cluster_pushes: {
            let c = IntCounterVec::new(
                Opts::new(
                    "quiver_cluster_pushes_total",
                    "Shard parts of writes sent to writers, by result.",
                ),
                &["result"],
            )
            .expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        },
        worker_streams: gauge(
            &r,
            "quiver_worker_streams",
            "Partition streams of Quiver's operators in other queriers' plan tasks running here now.",
        ),
        worker_tasks_started: counter(
            &r,
            "quiver_worker_tasks_started_total",
            "Tasks of distributed plans this querier started.",
        ),
        distributed_plans: {
            let c = IntCounterVec::new(
                Opts::new(
                    "quiver_distributed_plans_total",
                    "Plans this querier ran across queriers, by outcome (ok, retried, failed).",
                ),
                &["outcome"],
            )
            .expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        },
        cluster_workers: gauge(
            &r,
            "quiver_cluster_workers",
            "Queriers this querier sees as live workers for distributed plans, itself included.",
        ),
        distributed_task_weight: {
            let g = prometheus::GaugeVec::new(
                Opts::new(
                    "quiver_distributed_task_weight",
                    "Each worker's share of a distributed leaf relative to an even split (1), from the pace its tasks were measured at.",
                ),
                &["worker"],
            )
            .expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        },
        request_duration,
        api_errors,
        samples_appended: counter(
            &r,
            "quiver_ingested_samples_total",
            "Samples made durable and visible.",
        ),
        wal_fsyncs: counter(&r, "quiver_wal_fsyncs_total", "WAL fsyncs (group commits)."),
        wal_fsync_seconds: {
            let c = prometheus::Counter::new(
                "quiver_wal_fsync_seconds_total",
                "Time spent in WAL fsyncs.",
            )
            .expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        },
        flushes: counter(&r, "quiver_head_flushes_total", "Head flushes to blocks."),
        compactions: counter(
            &r,
            "quiver_compactions_total",
            "Blocks written by compaction.",
        ),
        blocks_deleted: counter(
            &r,
            "quiver_blocks_deleted_total",
            "Blocks deleted by compaction or retention.",
        ),
        blocks_quarantined: counter(
            &r,
            "quiver_blocks_quarantined_total",
            "Blocks moved to quarantine/ at startup because they could not be read.",
        ),
        wal_orphan_samples: counter(
            &r,
            "quiver_wal_orphan_samples_total",
            "WAL samples that could not be replayed: their series declaration is missing (corruption).",
        ),
        exemplars_dropped: counter(
            &r,
            "quiver_exemplars_dropped_total",
            "Exemplars not stored (invalid labels or value, or outside the write window); their samples were.",
        ),
        frozen_heads: gauge(
            &r,
            "quiver_frozen_heads",
            "Heads cut for a flush and not yet written to the object store.",
        ),
        head_series: gauge(&r, "quiver_head_series", "Series with samples in the head."),
        head_samples: gauge(&r, "quiver_head_samples", "Samples in the head."),
        blocks: gauge(&r, "quiver_blocks", "Loaded blocks."),
        block_bytes: gauge(&r, "quiver_block_bytes", "Bytes of loaded blocks."),
        series: gauge(
            &r,
            "quiver_catalog_series",
            "Series known to the label index.",
        ),
        head_memory_bytes: gauge(
            &r,
            "quiver_head_memory_bytes",
            "Estimated memory of every tenant's unflushed samples (live and frozen heads), against quiver_head_memory_limit_bytes.",
        ),
        head_memory_limit_bytes: gauge(
            &r,
            "quiver_head_memory_limit_bytes",
            "--head-memory-limit: beyond it writes are refused (503).",
        ),
        process: super::process_metrics::ProcessMetrics::register(&r),
        memory: super::memory_metrics::MemoryMetrics::register(&r),
        registry: {
            crate::storage::telemetry::register(&r).expect("unique metrics");
            r
        },
    }
});

/// Brings a counter up to a monotonic value read from storage statistics.
fn catch_up(c: &IntCounter, value: u64) {
    let cur = c.get();
    if value > cur {
        c.inc_by(value - cur);
    }
}

/// `GET /metrics`.
pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    let m = &*METRICS;
    m.results_cache_bytes
        .set(st.results_cache.weighted_size() as i64);
    m.samples_cache_bytes
        .set(st.tenants.samples_cache().map_or(0, |c| c.weighted_size()) as i64);
    // Totals over every open tenant.
    let tenants = st.tenants.all();
    let sum = |f: &dyn Fn(&crate::storage::StorageStats) -> u64| -> u64 {
        tenants.iter().map(|(_, s)| f(s.stats())).sum()
    };
    catch_up(
        &m.samples_appended,
        sum(&|x| x.samples_appended.load(Ordering::Relaxed)),
    );
    catch_up(
        &m.wal_fsyncs,
        sum(&|x| x.wal_fsyncs.load(Ordering::Relaxed)),
    );
    let fsync_s = sum(&|x| x.wal_fsync_micros.load(Ordering::Relaxed)) as f64 / 1e6;
    if fsync_s > m.wal_fsync_seconds.get() {
        m.wal_fsync_seconds
            .inc_by(fsync_s - m.wal_fsync_seconds.get());
    }
    catch_up(&m.flushes, sum(&|x| x.flushes.load(Ordering::Relaxed)));
    m.compaction_peak_bytes.set(
        tenants
            .iter()
            .map(|(_, s)| s.stats().compaction_peak_bytes.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0) as i64,
    );
    catch_up(
        &m.compactions,
        sum(&|x| x.compactions.load(Ordering::Relaxed)),
    );
    catch_up(
        &m.blocks_deleted,
        sum(&|x| x.blocks_deleted.load(Ordering::Relaxed)),
    );
    catch_up(
        &m.blocks_quarantined,
        sum(&|x| x.blocks_quarantined.load(Ordering::Relaxed)),
    );
    catch_up(
        &m.wal_orphan_samples,
        sum(&|x| x.wal_orphan_samples.load(Ordering::Relaxed)),
    );
    catch_up(
        &m.exemplars_dropped,
        sum(&|x| x.exemplars_dropped.load(Ordering::Relaxed)),
    );
    let (mut head_series, mut head_samples, mut blocks, mut bytes, mut series) = (0, 0, 0, 0, 0);
    let mut frozen = 0;
    for (_, s) in &tenants {
        frozen += s.frozen_heads() as i64;
        let (hs, hsa, _) = s.head_stats();
        head_series += hs as i64;
        head_samples += hsa as i64;
        let b = s.blocks();
        blocks += b.len() as i64;
        bytes += b.iter().map(|b| b.bytes as i64).sum::<i64>();
        series += s.catalog().len() as i64;
    }
    m.frozen_heads.set(frozen);
    m.head_series.set(head_series);
    m.head_samples.set(head_samples);
    m.blocks.set(blocks);
    m.block_bytes.set(bytes);
    m.series.set(series);
    m.tenants.set(tenants.len() as i64);
    if let Some((_, s)) = tenants.first() {
        // One counter and one limit over all tenants (`StorageOptions::head_samples`).
        let o = s.options();
        let entries = o.head_samples.load(Ordering::Relaxed);
        m.head_memory_bytes
            .set(entries.saturating_mul(crate::storage::HEAD_BYTES_PER_SAMPLE) as i64);
        m.head_memory_limit_bytes
            .set(o.head_memory_limit.min(i64::MAX as usize) as i64);
    }
    m.memory.update_owners(&st);
    exposition()
}

/// `GET /metrics` of a cluster role without the API's state (writers, the compactor):
/// process, object-store and cluster metrics.
pub async fn plain() -> Response {
    exposition()
}

/// The process and object-store figures brought up to date, then every metric as text.
fn exposition() -> Response {
    let m = &*METRICS;
    m.memory.update_allocator();
    m.process.update();
    for (op, file, n) in crate::storage::counted::requests() {
        catch_up(&m.object_store_requests.with_label_values(&[op, file]), n);
    }
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&m.registry.gather(), &mut buf) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        buf,
    )
        .into_response()
}

/// Middleware: observes every request's latency under its route pattern.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    METRICS
        .request_duration
        .with_label_values(&[handler.as_str(), resp.status().as_str()])
        .observe(start.elapsed().as_secs_f64());
    resp
}
