//! The Prometheus response envelope: `{"status":"success","data":…}` with optional
//! `warnings`/`infos`, or `{"status":"error","errorType":…,"error":…}` with its HTTP status.

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};

pub use super::error::ApiError;

/// Success with a pre-encoded `data` JSON value and optional annotations.
pub fn success_raw(data: &str, warnings: &[String], infos: &[String]) -> Response {
    let mut s = String::with_capacity(data.len() + 64);
    s.push_str(r#"{"status":"success","data":"#);
    s.push_str(data);
    annotations(&mut s, warnings, infos);
    s.push('}');
    ([(header::CONTENT_TYPE, "application/json")], s).into_response()
}

/// Success with `data` written a piece at a time: one body when it is a single piece,
/// otherwise sent as the pieces are written (chunked), so a large answer is never held
/// whole besides the value it is written from.
pub fn success_pieces<I>(mut data: I, warnings: &[String], infos: &[String]) -> Response
where
    I: Iterator<Item = String> + Send + 'static,
{
    let mut head = String::from(r#"{"status":"success","data":"#);
    head.push_str(&data.next().unwrap_or_default());
    let mut tail = String::new();
    annotations(&mut tail, warnings, infos);
    tail.push('}');
    let body = match data.next() {
        None => {
            head.push_str(&tail);
            axum::body::Body::from(head)
        }
        Some(second) => {
            let pieces = [head, second].into_iter().chain(data).chain([tail]);
            axum::body::Body::from_stream(futures::stream::iter(
                pieces.map(|p| Ok::<_, std::convert::Infallible>(Bytes::from(p))),
            ))
        }
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `,"warnings":[…]` and `,"infos":[…]` where there are any, at most 10 of each.
fn annotations(s: &mut String, warnings: &[String], infos: &[String]) {
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if !list.is_empty() {
            s.push_str(&format!(",\"{key}\":"));
            let capped: Vec<&String> = list.iter().take(10).collect();
            s.push_str(&serde_json::to_string(&capped).expect("strings serialise"));
        }
    }
}

/// Success with a serde value.
pub fn success(data: serde_json::Value) -> Response {
    success_raw(&data.to_string(), &[], &[])
}

pub fn success_warn(data: serde_json::Value, warnings: &[String]) -> Response {
    success_raw(&data.to_string(), warnings, &[])
}
