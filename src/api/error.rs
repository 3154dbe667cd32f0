//! The one error edge: every failure an HTTP request meets becomes an [`ApiError`] (a
//! [`ErrorKind`] and a message), and [`ApiError::respond`] turns it into the status, the
//! Prometheus `errorType`, and a body in the route's format — the JSON envelope on the
//! Prometheus API, plain text on the protobuf/text ingest routes, remote read and the
//! operational paths (`api::routes` says which) — and logs and counts it. Nothing else
//! builds an error response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use crate::error_kind::{ErrorKind, Kinded};

/// How a route answers errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"status":"error","errorType":…,"error":…}` (the Prometheus HTTP API).
    Json,
    /// The message and a newline, as Prometheus answers remote write and read.
    Text,
}

/// An error on its way to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    /// An error that knows its kind, with `what` failed in front of its text (`what: err`)
    /// when given.
    pub fn of(e: &(impl Kinded + std::fmt::Display), what: Option<&str>) -> Self {
        let message = match what {
            Some(w) => format!("{w}: {e}"),
            None => e.to_string(),
        };
        ApiError::new(e.kind(), message)
    }

    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::BadData, message)
    }

    pub fn execution(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Execution, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Internal, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::NotFound, message)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.status()).expect("valid status")
    }

    /// A query's error; parse errors are about the `query` parameter.
    pub fn from_promql(e: crate::promql::PromqlError) -> Self {
        match e {
            crate::promql::PromqlError::Parse(m) => {
                ApiError::bad_data(format!("invalid parameter \"query\": {m}"))
            }
            crate::promql::PromqlError::Storage(s) => ApiError::of(&s, None),
            other => ApiError::of(&other, None),
        }
    }

    /// The response: status, body in `format`, `Retry-After` when the client should retry;
    /// logged (server errors as errors) and counted in `quiver_api_errors_total`.
    pub fn respond(self, format: Format) -> Response {
        let status = self.status();
        let error_type = self.kind.error_type();
        super::metrics::METRICS
            .api_errors
            .with_label_values(&[error_type])
            .inc();
        if status.is_server_error() {
            tracing::error!(error_type, error = %self.message, "API error");
        } else {
            tracing::debug!(error_type, error = %self.message, "API error");
        }
        let mut resp = match format {
            Format::Json => {
                let body = serde_json::json!({"status": "error", "errorType": error_type, "error": self.message});
                (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }
            Format::Text => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{}\n", self.message),
            )
                .into_response(),
        };
        if self.kind.retry_later() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// The Prometheus API's default: the JSON envelope.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(Format::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> (StatusCode, Option<String>, String, Option<String>) {
        let status = r.status();
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, ct, String::from_utf8(b.to_vec()).unwrap(), retry)
    }

    /// Every kind, on a JSON route and on a text route: its status, its `errorType`, the
    /// body format, and `Retry-After` exactly for the kinds a client should retry.
    #[tokio::test]
    async fn every_kind_answers_its_status_type_and_format() {
        let mut types = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(
                types.insert(kind.error_type()),
                "{kind:?} shares its errorType"
            );
            let e = ApiError::new(kind, "what went wrong");
            let (s, ct, b, retry) = body(e.clone().respond(Format::Json)).await;
            assert_eq!(s.as_u16(), kind.status(), "{kind:?}");
            assert_eq!(ct.as_deref(), Some("application/json"));
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            assert_eq!(v["status"], "error");
            assert_eq!(v["errorType"], kind.error_type());
            assert_eq!(v["error"], "what went wrong");
            assert_eq!(retry.is_some(), kind.retry_later(), "{kind:?}");
            let (s, ct, b, retry) = body(e.respond(Format::Text)).await;
            assert_eq!(s.as_u16(), kind.status(), "{kind:?}");
            assert!(ct.unwrap().starts_with("text/plain"));
            assert_eq!(b, "what went wrong\n");
            assert_eq!(retry.is_some(), kind.retry_later(), "{kind:?}");
        }
        assert_eq!(types.len(), ErrorKind::ALL.len());
    }

    /// Storage errors map once: overloaded is 503 on every route, a client's bad sample 400.
    #[test]
    fn storage_errors_map_once() {
        use crate::storage::StorageError;
        let over = StorageError::Overloaded("full".into());
        assert_eq!(ApiError::of(&over, None).kind, ErrorKind::Unavailable);
        let via_query = crate::promql::PromqlError::Storage(StorageError::Overloaded("x".into()));
        assert_eq!(
            ApiError::from_promql(via_query).kind,
            ErrorKind::Unavailable
        );
        let bad = StorageError::Invalid("x".into());
        assert_eq!(ApiError::of(&bad, Some("remote write")).status(), 400);
        assert_eq!(
            ApiError::of(&bad, Some("remote write")).message,
            "remote write: invalid request: x"
        );
    }
}
