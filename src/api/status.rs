//! Status and discovery endpoints that clients probe. Quiver has no scrape targets, rules or
//! alertmanagers, so those answer valid empty lists.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::envelope::success;
use super::{AppState, Ready};

pub(super) async fn buildinfo() -> Response {
    // No `features` map: Grafana would then take us for Mimir with a ruler.
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "quiver",
        "buildDate": "",
        "goVersion": concat!("rust (quiver ", env!("CARGO_PKG_VERSION"), ")"),
    }))
}

pub(super) async fn runtimeinfo(State(st): State<AppState>) -> Response {
    // Exactly the fields of Prometheus's RuntimeInfo schema (it allows no others).
    success(json!({
        "startTime": st.started.to_rfc3339(),
        "CWD": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "hostname": std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
        "serverTime": chrono::Utc::now().to_rfc3339(),
        "reloadConfigSuccess": true,
        "lastConfigTime": st.started.to_rfc3339(),
        "corruptionCount": 0,
        "goroutineCount": 0,
        "GOMAXPROCS": crate::cores::cores(),
        "GOMEMLIMIT": i64::MAX,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": st.retention.clone(),
    }))
}

/// Every flag in force by name (secrets redacted), plus Prometheus's name for the
/// retention, which tools probe.
pub(super) async fn flags(State(st): State<AppState>) -> Response {
    let mut m: serde_json::Map<String, serde_json::Value> = st
        .flags
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    m.insert("storage.tsdb.retention.time".into(), json!(st.retention));
    success(serde_json::Value::Object(m))
}

/// The limits a request meets, from the flags: what a user may ask before it is refused.
pub(super) async fn limits(State(st): State<AppState>) -> Response {
    let l = &st.limits;
    let (max_depth, max_length) = crate::promql::guard::limits();
    success(json!({
        "queryMaxSamples": l.max_samples,
        "queryMaxPointsPerSeries": super::query::MAX_POINTS,
        "queryTimeoutMs": l.query_timeout_ms,
        "queryMaxDepth": max_depth,
        "queryMaxLength": max_length,
        "maxConcurrentQueriesPerTenant": st.admission.max_queries(),
        "writeSamplesPerSecondPerTenant": st.admission.write_rate(),
        "sqlMemoryBytes": l.sql_memory_bytes,
        "sqlMaxRows": l.sql_max_rows,
        "remoteReadMaxBytes": l.remote_read_max_bytes,
    }))
}

/// The caller's tenant's blocks, newest first: what a compaction made of the data.
pub(super) async fn blocks(Ready(storage, _): Ready) -> Response {
    let mut blocks = storage.blocks();
    blocks.sort_by(|a, b| b.min_t.cmp(&a.min_t).then_with(|| b.id.cmp(&a.id)));
    let list: Vec<_> = blocks
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "minTime": b.min_t,
                "maxTime": b.max_t,
                "level": b.level,
                "numSeries": b.num_series,
                "numSamples": b.num_samples,
                "numHistograms": b.num_histograms,
                "numExemplars": b.num_exemplars,
                "bytes": b.bytes,
            })
        })
        .collect();
    success(json!({ "blocks": list }))
}

pub(super) async fn config() -> Response {
    success(json!({ "yaml": "" }))
}

pub(super) async fn tsdb(Ready(storage, access): Ready) -> Response {
    let (mut num_series, _samples, range) = storage.head_stats();
    let mut all = storage.series_ids(&[], i64::MIN / 2, i64::MAX / 2);
    if let Some(allowed) = access.allowed(&storage) {
        // Counts of series the caller cannot see would leak them.
        all &= allowed;
        num_series = num_series.min(all.len() as usize);
    }
    let card = storage.catalog().cardinality(&all, 10);
    let top = |v: Vec<(String, u64)>| {
        v.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect::<Vec<_>>()
    };
    success(json!({
        "headStats": {
            "numSeries": num_series,
            "numLabelPairs": card.label_pairs,
            "chunkCount": 0,
            "minTime": range.map_or(0, |r| r.0),
            "maxTime": range.map_or(0, |r| r.1),
        },
        "seriesCountByMetricName": top(card.series_by_metric),
        "labelValueCountByLabelName": top(card.values_by_label),
        "memoryInBytesByLabelName": top(card.bytes_by_label),
        "seriesCountByLabelValuePair": top(card.series_by_pair),
    }))
}

pub(super) async fn targets() -> Response {
    success(json!({"activeTargets": [], "droppedTargets": [], "droppedTargetCounts": {}}))
}

pub(super) async fn rules() -> Response {
    success(json!({"groups": []}))
}

pub(super) async fn alerts() -> Response {
    success(json!({"alerts": []}))
}

pub(super) async fn alertmanagers() -> Response {
    success(json!({"activeAlertmanagers": [], "droppedAlertmanagers": []}))
}

pub(super) async fn walreplay(State(st): State<AppState>) -> Response {
    let done = st.tenants.ready();
    success(json!({"min": 0, "max": 0, "current": if done { 0 } else { -1 }}))
}

/// Prometheus's own text for an unknown path.
pub(super) async fn not_found() -> Response {
    super::ApiError::not_found("404 page not found").respond(super::error::Format::Text)
}
