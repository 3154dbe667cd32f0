//! The Prometheus response envelope: `{"status":"success","data":…}` with optional
//! `warnings`/`infos`, or `{"status":"error","errorType":…,"error":…}` with its HTTP status.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::promql::PromqlError;

/// An API error with Prometheus's `errorType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub error_type: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            error_type: "bad_data",
            message: message.into(),
        }
    }

    pub fn execution(message: impl Into<String>) -> Self {
        ApiError {
            error_type: "execution",
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            error_type: "internal",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            error_type: "not_found",
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.error_type {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "canceled" => StatusCode::from_u16(499).expect("valid status"),
            "timeout" => StatusCode::SERVICE_UNAVAILABLE,
            "not_found" => StatusCode::NOT_FOUND,
            "not_acceptable" => StatusCode::NOT_ACCEPTABLE,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "too_many_requests" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps an evaluation error; parse errors are about the `query` parameter.
    pub fn from_promql(e: PromqlError) -> Self {
        match e {
            PromqlError::Parse(m) => {
                ApiError::bad_data(format!("invalid parameter \"query\": {m}"))
            }
            PromqlError::Storage(s) => ApiError::internal(s.to_string()),
            other => ApiError {
                error_type: other.error_type(),
                message: other.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        super::metrics::METRICS
            .api_errors
            .with_label_values(&[self.error_type])
            .inc();
        if status.is_server_error() {
            tracing::error!(error_type = self.error_type, error = %self.message, "API error");
        } else {
            tracing::debug!(error_type = self.error_type, error = %self.message, "API error");
        }
        let body = serde_json::json!({"status": "error", "errorType": self.error_type, "error": self.message});
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// An error envelope with an explicit status (auth refusals, which have no Prometheus type).
pub fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({"status": "error", "errorType": error_type, "error": message});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Success with a pre-encoded `data` JSON value and optional annotations.
pub fn success_raw(data: &str, warnings: &[String], infos: &[String]) -> Response {
    let mut s = String::with_capacity(data.len() + 64);
    s.push_str(r#"{"status":"success","data":"#);
    s.push_str(data);
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if !list.is_empty() {
            s.push_str(&format!(",\"{key}\":"));
            let capped: Vec<&String> = list.iter().take(10).collect();
            s.push_str(&serde_json::to_string(&capped).expect("strings serialise"));
        }
    }
    s.push('}');
    ([(header::CONTENT_TYPE, "application/json")], s).into_response()
}

/// Success with a serde value.
pub fn success(data: serde_json::Value) -> Response {
    success_raw(&data.to_string(), &[], &[])
}

pub fn success_warn(data: serde_json::Value, warnings: &[String]) -> Response {
    success_raw(&data.to_string(), warnings, &[])
}
