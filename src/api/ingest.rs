use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorKind, Format, Kinded};
use super::{AppState, Ready};
use crate::ingest::text::{BatchReader, TimestampUnit};
use crate::ingest::{IngestError, WriteBatch, otlp, remote_write, remote_write_v2};
use crate::storage::{StorageError, WriteWindow};
use axum::extract::State;

/// Every error of the ingest routes, in plain text (what remote-write, OTLP and import
/// clients read): `what: why`, with the status of its kind.
fn fail(what: &str, e: &(impl Kinded + std::fmt::Display)) -> Response {
    let err = ApiError::of(e, Some(what));
    if err.status().is_client_error() {
        tracing::warn!(status = %err.status(), error = %err.message, "{what} rejected");
    }
    err.respond(Format::Text)
}

fn fail_with(what: &str, kind: ErrorKind, why: impl std::fmt::Display) -> Response {
    ApiError::new(kind, format!("{what}: {why}")).respond(Format::Text)
}

/// 429: Prometheus's remote write backs off and retries these.
fn rate_limited(what: &str) -> Response {
    fail_with(
        what,
        ErrorKind::TooManyRequests,
        "write rate limit of this tenant exceeded; retry later",
    )
}

/// The first series of `batch` outside the caller's enforced matchers (its first 200
/// characters), which refuses the batch whole.
fn outside(access: &crate::auth::Access, batch: &WriteBatch) -> Option<String> {
    if access.matchers.is_empty() {
        return None;
    }
    let refused = batch.first_refused(|l| access.may_write(l))?;
    Some(refused.to_string().chars().take(200).collect())
}

/// 403 when a principal with enforced matchers writes a series outside them.
fn outside_matchers(
    what: &str,
    access: &crate::auth::Access,
    batch: &WriteBatch,
) -> Option<Response> {
    let series = outside(access, batch)?;
    Some(fail_with(
        what,
        ErrorKind::Forbidden,
        format!(
            "series {series} is outside this principal's enforced matchers; nothing was written"
        ),
    ))
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
        return fail(
            "remote write",
            &IngestError::Unsupported {
                what: "content encoding",
                value: enc.into(),
            },
        );
    }
    // Content negotiation by `proto=` (remote write 2.0 spec): 1.0 when absent.
    let proto = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| {
            ct.split(';')
                .filter_map(|p| p.trim().strip_prefix("proto="))
                .next()
                .map(|p| p.trim_matches('"').to_string())
        });
    // Everything decoding builds is charged here first; held until the batch is stored.
    let mut meter = st.decode.meter().within_head_room(storage.head_room());
    let (mut batch, written) = match proto.as_deref() {
        None | Some("prometheus.WriteRequest") => match remote_write::decode(&body, &mut meter) {
            Ok(b) => (b, None),
            Err(e) => return fail("remote write", &e),
        },
        Some(remote_write_v2::PROTO) => {
            let oldest = st
                .limits
                .created_zero
                .then(|| storage.write_bounds(WriteWindow::Recent).0);
            match remote_write_v2::decode(&body, oldest, &mut meter) {
                Ok((b, w)) => (b, Some(w)),
                Err(e) => return fail("remote write", &e),
            }
        }
        Some(other) => {
            return fail(
                "remote write",
                &IngestError::Unsupported {
                    what: "remote write protobuf message (proto=prometheus.WriteRequest or io.prometheus.write.v2.Request)",
                    value: other.into(),
                },
            );
        }
    };
    if let Some(r) = outside_matchers("remote write", &access, &batch) {
        return r;
    }
    if !st.admission.write(&access.tenant, batch.admission_weight()) {
        return rate_limited("remote write");
    }
    // Exemplars outside the write window are dropped here, so 2.0's written count is exact.
    let (min_ok, max_ok) = storage.write_bounds(WriteWindow::Recent);
    batch.retain_exemplars_within(min_ok, max_ok);
    let written = written.map(|w| remote_write_v2::Written {
        exemplars: batch.exemplar_count(),
        ..w
    });
    let oldest = oldest_sample(&batch);
    match storage.append(batch, WriteWindow::Recent).await {
        Ok(_) => {
            st.results_cache
                .note_write(&access.tenant, oldest, storage.now_ms());
            match written {
                // 2.0 says what was written (all of it: a request is stored whole).
                Some(w) => (
                    StatusCode::NO_CONTENT,
                    [
                        (WRITTEN_SAMPLES, w.samples.to_string()),
                        (WRITTEN_HISTOGRAMS, w.histograms.to_string()),
                        (WRITTEN_EXEMPLARS, w.exemplars.to_string()),
                    ],
                )
                    .into_response(),
                None => StatusCode::NO_CONTENT.into_response(),
            }
        }
        Err(e) => fail("remote write", &e),
    }
}

const WRITTEN_SAMPLES: &str = "X-Prometheus-Remote-Write-Samples-Written";
const WRITTEN_HISTOGRAMS: &str = "X-Prometheus-Remote-Write-Histograms-Written";
const WRITTEN_EXEMPLARS: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

/// `POST /api/v1/otlp/v1/metrics`: OTLP metrics over HTTP (`application/x-protobuf` or
/// `application/json`, optionally gzip), translated as Prometheus 3 does (`ingest::otlp`).
/// 200 with an empty body once durable; a request that cannot be translated whole is
/// refused with 400 and nothing is written.
#[tracing::instrument(skip_all, fields(bytes = body.len()))]
pub(super) async fn otlp_metrics(
    State(st): State<AppState>,
    Ready(storage, access): Ready,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let what = "OTLP metrics";
    let format = match headers.get("content-type").and_then(|v| v.to_str().ok()) {
        Some(ct) if ct.split(';').next().map(str::trim) == Some("application/x-protobuf") => {
            otlp::Format::Protobuf
        }
        Some(ct) if ct.split(';').next().map(str::trim) == Some("application/json") => {
            otlp::Format::Json
        }
        other => {
            return fail_with(
                what,
                ErrorKind::UnsupportedMediaType,
                format!(
                    "unsupported content type {:?}, supported: application/x-protobuf, application/json",
                    other.unwrap_or("")
                ),
            );
        }
    };
    let gzip = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        None | Some("") | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            return fail(
                what,
                &IngestError::Unsupported {
                    what: "content encoding (gzip or none)",
                    value: other.into(),
                },
            );
        }
    };
    let mut meter = st.decode.meter().within_head_room(storage.head_room());
    let batch = match otlp::decode(&body, gzip, format, &mut meter)
        .and_then(|r| otlp::translate(r, &st.otlp, &mut meter))
    {
        Ok(b) => b,
        Err(e) => return fail(what, &e),
    };
    if let Some(r) = outside_matchers(what, &access, &batch) {
        return r;
    }
    if !st.admission.write(&access.tenant, batch.admission_weight()) {
        return rate_limited(what);
    }
    let oldest = oldest_sample(&batch);
    match storage.append(batch, WriteWindow::Recent).await {
        Ok(_) => {
            st.results_cache
                .note_write(&access.tenant, oldest, storage.now_ms());
            StatusCode::OK.into_response()
        }
        Err(e) => fail(what, &e),
    }
}

/// Samples committed (WAL-durable) per import batch, and the text bytes one batch may
/// hold (long label sets), so a batch stays small in memory and in the WAL.
const IMPORT_BATCH_SAMPLES: usize = 50_000;
const IMPORT_BATCH_BYTES: usize = 16 << 20;
/// After a refused import, how much more of the body is read (and dropped) before answering.
const IMPORT_DRAIN_BYTES: usize = 64 << 20;

/// `POST /api/v1/import/prometheus`: exposition text, one sample per line, optional
/// timestamp (VictoriaMetrics' format; ms, or OpenMetrics float seconds — `timestamps=auto`
/// by default, `ms` or `s` to force). The body is streamed through the parser and committed
/// in batches, each durable before the next is read, so any size imports in bounded memory.
/// A bad line stops the import with 400, saying how many samples were stored before it.
#[tracing::instrument(skip_all)]
pub(super) async fn import_prometheus(
    State(st): State<AppState>,
    Ready(storage, access): Ready,
    uri: axum::http::Uri,
    body: axum::body::Body,
) -> Response {
    let unit = match uri
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "timestamps"))
        .map(|(_, v)| v.into_owned())
        .as_deref()
    {
        None | Some("auto") => TimestampUnit::Auto,
        Some("ms") => TimestampUnit::Millis,
        Some("s") => TimestampUnit::Seconds,
        Some(other) => {
            return fail_with(
                "import",
                ErrorKind::BadData,
                format!("timestamps must be auto, ms or s, not {other:?}"),
            );
        }
    };
    let Some(slot) = st.admission.import() else {
        return fail_with(
            "import",
            ErrorKind::TooManyRequests,
            format!(
                "{} imports are already running; retry later",
                super::limits::MAX_CONCURRENT_IMPORTS
            ),
        );
    };
    // Body chunks cross to the parsing thread through a small channel: back-pressure, not
    // buffering, when parsing and committing are slower than the client.
    // `Ok(None)` marks the end: a channel closed without it is a body cut short (the client
    // went away), whose last line must not be committed.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Option<Bytes>>>(4);
    let forward = async move {
        let mut stream = body.into_data_stream();
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map(Some).map_err(std::io::Error::other);
            let stop = chunk.is_err();
            if stop {
                let _ = tx.send(chunk).await;
                return;
            }
            if tx.send(chunk).await.is_err() {
                // The parser stopped (bad line, refusal). Read on, up to a bound, so the
                // client is still listening when the answer comes instead of seeing its
                // upload cut off.
                let mut drained = 0usize;
                while let Some(Ok(c)) = stream.next().await {
                    drained += c.len();
                    if drained > IMPORT_DRAIN_BYTES {
                        break;
                    }
                }
                return;
            }
        }
        let _ = tx.send(Ok(None)).await;
    };
    let rt = tokio::runtime::Handle::current();
    let now = storage.now_ms();
    let parse = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let reader = std::io::BufReader::new(ChannelReader {
            rx,
            cur: Bytes::new(),
            ended: false,
        });
        let mut reader = BatchReader::new(reader, unit, now, IMPORT_BATCH_SAMPLES)
            .with_batch_bytes(IMPORT_BATCH_BYTES);
        let mut stored = 0usize;
        loop {
            let batch = match reader.next_batch() {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(stored),
                Err(e) => return Err((ImportStop::Ingest(e), stored)),
            };
            if let Some(series) = outside(&access, &batch) {
                return Err((ImportStop::Outside(series), stored));
            }
            if !st.admission.write(&access.tenant, batch.admission_weight()) {
                return Err((ImportStop::RateLimited, stored));
            }
            let oldest = oldest_sample(&batch);
            match rt.block_on(storage.append(batch, WriteWindow::Backfill)) {
                Ok(n) => {
                    stored += n;
                    st.results_cache
                        .note_write(&access.tenant, oldest, storage.now_ms());
                }
                Err(e) => return Err((ImportStop::Storage(e), stored)),
            }
        }
    });
    let (_, parsed) = tokio::join!(forward, parse);
    match parsed {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err((stop, stored))) => {
            let what = format!("import ({stored} samples stored before this)");
            match stop {
                ImportStop::Ingest(e) => fail(&what, &e),
                ImportStop::RateLimited => rate_limited(&what),
                ImportStop::Outside(series) => fail_with(
                    &what,
                    ErrorKind::Forbidden,
                    format!("series {series} is outside this principal's enforced matchers"),
                ),
                ImportStop::Storage(e) => fail(&what, &e),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "import task failed");
            fail_with("import", ErrorKind::Internal, e)
        }
    }
}

enum ImportStop {
    Ingest(IngestError),
    /// A series outside the principal's enforced matchers.
    Outside(String),
    RateLimited,
    Storage(StorageError),
}

/// A blocking reader over body chunks sent from the async side.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Option<Bytes>>>,
    cur: Bytes,
    ended: bool,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(Some(b))) => self.cur = b,
                Some(Ok(None)) => self.ended = true,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the request body ended early",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// Timestamp of the oldest sample in a batch (for results-cache invalidation).
fn oldest_sample(batch: &WriteBatch) -> i64 {
    let floats = batch
        .series
        .iter()
        .flat_map(|s| s.samples.iter().map(|(t, _)| *t));
    let hists = batch
        .histograms
        .iter()
        .flat_map(|s| s.samples.iter().map(|(t, _)| *t));
    floats.chain(hists).min().unwrap_or(i64::MAX)
}
