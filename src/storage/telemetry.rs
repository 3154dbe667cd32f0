//! Latency histograms and error counts of the storage engine, observed where the work
//! happens and exported by `/metrics` (which registers them): object-store requests by
//! operation, WAL fsyncs, flushes and compactions. Process-wide, as the rest of `/metrics`.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// 0.5 ms … ~65 s, doubling: an fsync on a fast disk to a slow multipart upload.
fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 18).expect("valid buckets")
}

fn histogram(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets())).expect("valid metric")
}

pub static OBJECT_STORE_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "quiver_object_store_request_duration_seconds",
            "Object-store request latency by operation (to the response; a get's body streams after).",
        )
        .buckets(buckets()),
        &["operation"],
    )
    .expect("valid metric")
});

pub static OBJECT_STORE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "quiver_object_store_request_errors_total",
            "Object-store requests that failed, by operation (not found is not counted: readers probe for files).",
        ),
        &["operation"],
    )
    .expect("valid metric")
});

pub static WAL_FSYNC_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "quiver_wal_fsync_duration_seconds",
        "WAL fsync latency (one per group commit).",
    )
});

pub static FLUSH_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "quiver_flush_duration_seconds",
        "Head flushes to blocks, from cutting the head to truncating the WAL (successful ones).",
    )
});

pub static COMPACTION_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "quiver_compaction_duration_seconds",
        "Compaction passes (merges and retention) that did some work.",
    )
});

/// Adds every metric here to `r`.
pub fn register(r: &Registry) -> prometheus::Result<()> {
    r.register(Box::new(OBJECT_STORE_DURATION.clone()))?;
    r.register(Box::new(OBJECT_STORE_ERRORS.clone()))?;
    // Exported at 0 from the start: a rate over a missing series is "no data".
    for op in super::counted::OPERATIONS {
        OBJECT_STORE_ERRORS.with_label_values(&[op]);
    }
    r.register(Box::new(WAL_FSYNC_DURATION.clone()))?;
    r.register(Box::new(FLUSH_DURATION.clone()))?;
    r.register(Box::new(COMPACTION_DURATION.clone()))?;
    Ok(())
}

/// Observes an object-store request's latency and failure.
pub(super) fn observe<T>(operation: &str, start: std::time::Instant, r: &object_store::Result<T>) {
    OBJECT_STORE_DURATION
        .with_label_values(&[operation])
        .observe(start.elapsed().as_secs_f64());
    if let Err(e) = r
        && !matches!(e, object_store::Error::NotFound { .. })
    {
        OBJECT_STORE_ERRORS.with_label_values(&[operation]).inc();
    }
}
