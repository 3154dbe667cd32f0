//! The Prometheus response envelope: `{"status":"success","data":…}` with optional
//! `warnings`/`infos`, or `{"status":"error","errorType":…,"error":…}` with its HTTP status.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub use super::error::ApiError;

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
