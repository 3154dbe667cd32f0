use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{AppState, Ready};
use crate::ingest::text::{BatchReader, TimestampUnit};
use crate::ingest::{IngestError, WriteBatch, remote_write};
use crate::storage::{StorageError, WriteWindow};
use axum::extract::State;

fn client_error(status: StatusCode, what: &str, err: impl std::fmt::Display) -> Response {
    tracing::warn!(%status, error = %err, "{what} rejected");
    (status, format!("{what}: {err}\n")).into_response()
}

/// 429: Prometheus's remote write backs off and retries these.
fn rate_limited(what: &str) -> Response {
    client_error(
        StatusCode::TOO_MANY_REQUESTS,
        what,
        "write rate limit of this tenant exceeded; retry later",
    )
}

fn storage_error(what: &str, e: StorageError) -> Response {
    if e.is_client_error() {
        client_error(StatusCode::BAD_REQUEST, what, e)
    } else {
        tracing::error!(error = %e, "{what} failed");
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}\n")).into_response()
    }
}

fn ingest_error(what: &str, e: IngestError) -> Response {
    let status = match e {
        IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        IngestError::Unsupported { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    client_error(status, what, e)
}

/// `POST /api/v1/write`: Prometheus remote write 1.0 (snappy block + protobuf). 204 once durable.
#[tracing::instrument(skip_all, fields(bytes = body.len()))]
pub(super) async fn remote_write(
    State(st): State<AppState>,
    Ready(storage, access): Ready,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(enc) = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        && !enc.eq_ignore_ascii_case("snappy")
    {
        return ingest_error(
            "remote write",
            IngestError::Unsupported {
                what: "content encoding",
                value: enc.into(),
            },
        );
    }
    if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok())
        && ct.contains("proto=io.prometheus.write.v2")
    {
        return ingest_error(
            "remote write",
            IngestError::Unsupported {
                what: "remote write version",
                value: ct.into(),
            },
        );
    }
    let batch = match remote_write::decode(&body) {
        Ok(b) => b,
        Err(e) => return ingest_error("remote write", e),
    };
    if !st.admission.write(&access.tenant, batch.sample_count()) {
        return rate_limited("remote write");
    }
    let oldest = oldest_sample(&batch);
    match storage.append(batch, WriteWindow::Recent).await {
        Ok(_) => {
            st.results_cache
                .note_write(&access.tenant, oldest, storage.now_ms());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => storage_error("remote write", e),
    }
}

/// `POST /api/v1/import/prometheus`: exposition text, one sample per line, optional ms
/// timestamp (VictoriaMetrics' format). The whole body is parsed before anything is stored.
#[tracing::instrument(skip_all, fields(bytes = body.len()))]
pub(super) async fn import_prometheus(
    State(st): State<AppState>,
    Ready(storage, access): Ready,
    body: Bytes,
) -> Response {
    let now = storage.now_ms();
    let mut reader = BatchReader::new(&body[..], TimestampUnit::Millis, now, usize::MAX);
    let batch = match reader.next_batch() {
        Ok(b) => b.unwrap_or_else(WriteBatch::default),
        Err(e) => return ingest_error("import", e),
    };
    if batch.series.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    if !st.admission.write(&access.tenant, batch.sample_count()) {
        return rate_limited("import");
    }
    let oldest = oldest_sample(&batch);
    match storage.append(batch, WriteWindow::Backfill).await {
        Ok(_) => {
            st.results_cache
                .note_write(&access.tenant, oldest, storage.now_ms());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => storage_error("import", e),
    }
}

/// Timestamp of the oldest sample in a batch (for results-cache invalidation).
fn oldest_sample(batch: &WriteBatch) -> i64 {
    batch
        .series
        .iter()
        .flat_map(|s| s.samples.iter().map(|(t, _)| *t))
        .min()
        .unwrap_or(i64::MAX)
}
