//! The query page at `/`: static files compiled into the binary (`web/`), so serving it
//! needs no Node.js and no files beside the binary. The page holds no data and asks the
//! API for everything with the visitor's own credentials, so its files are open to all
//! (like `/-/healthy`); every answer it shows went through the API's authorization and the
//! caller's enforced matchers. Relative URLs throughout let it work under any prefix.

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

/// One embedded file.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../../web/index.html");

/// Everything under `/ui/`. Vendored libraries keep their licence beside them
/// (`web/vendor/`; docs/ui.md says which and why).
const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        path: "app.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../web/app.css"),
    },
    Asset {
        path: "vendor/uPlot.iife.min.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uPlot.min.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../web/vendor/uPlot.min.css"),
    },
    Asset {
        path: "vendor/LICENSE.uPlot",
        mime: "text/plain; charset=utf-8",
        body: include_bytes!("../../web/vendor/LICENSE.uPlot"),
    },
];

/// `sql/examples/`, one click away on the SQL tab (a unit test keeps the list complete).
const SQL_EXAMPLES: &[(&str, &str)] = &[
    (
        "01_count_samples.sql",
        include_str!("../../sql/examples/01_count_samples.sql"),
    ),
    (
        "02_samples_per_metric.sql",
        include_str!("../../sql/examples/02_samples_per_metric.sql"),
    ),
    (
        "03_label_filter.sql",
        include_str!("../../sql/examples/03_label_filter.sql"),
    ),
    (
        "04_label_names.sql",
        include_str!("../../sql/examples/04_label_names.sql"),
    ),
    (
        "05_hourly_rollup.sql",
        include_str!("../../sql/examples/05_hourly_rollup.sql"),
    ),
    (
        "06_native_histograms.sql",
        include_str!("../../sql/examples/06_native_histograms.sql"),
    ),
    (
        "07_exemplars.sql",
        include_str!("../../sql/examples/07_exemplars.sql"),
    ),
];

/// Scripts only from this origin, no inline script, no framing, answers only from this
/// origin: a query result rendered into the page cannot run code or leave the page.
/// Inline styles are allowed because the chart library positions its elements with them.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'none'";

fn respond(mime: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut r = (StatusCode::OK, body.into()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Small files: revalidate each load so an upgraded binary's page is never mixed with
    // an old script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `/`: the page. Under a prefix, `/prefix` becomes `/prefix/` first, so the page's
/// relative URLs resolve below the prefix.
pub(super) async fn index(OriginalUri(uri): OriginalUri) -> Response {
    if !uri.path().ends_with('/') {
        return found(&format!("{}/", uri.path()));
    }
    respond("text/html; charset=utf-8", INDEX)
}

/// `/ui/{*path}`: the page's scripts, styles and the SQL examples.
pub(super) async fn asset(Path(path): Path<String>) -> Response {
    if path == "sql-examples.json" {
        let list: Vec<_> = SQL_EXAMPLES
            .iter()
            .map(|(name, text)| serde_json::json!({"name": name, "sql": text}))
            .collect();
        return respond(
            "application/json",
            serde_json::Value::Array(list).to_string(),
        );
    }
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => respond(a.mime, a.body),
        None => super::status::not_found().await,
    }
}

/// The page's own routes (a role that answers no queries leaves them out).
pub fn is_page_route(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

fn found(location: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The whole router under `prefix` (`--route-prefix`; `""` leaves it as is). The path is
/// rewritten before routing, so the route table, its permissions and the metrics see the
/// same paths with or without a prefix. `/` redirects to the page under the prefix, as
/// Prometheus does; other paths outside it answer 404.
pub fn under_prefix(app: Router, prefix: &str) -> Router {
    if prefix.is_empty() {
        return app;
    }
    let prefix: Arc<str> = prefix.into();
    Router::new().fallback_service(tower::service_fn(move |mut req: Request| {
        let (app, prefix) = (app.clone(), prefix.clone());
        async move {
            let path = req.uri().path();
            let rest = match path.strip_prefix(&*prefix) {
                Some("") => "/".to_string(),
                Some(r) if r.starts_with('/') => r.to_string(),
                _ if path == "/" => return Ok(found(&format!("{prefix}/"))),
                _ => return Ok(super::status::not_found().await),
            };
            let rewritten = match req.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest,
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = rewritten.parse().ok();
            match axum::http::Uri::from_parts(parts) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return Ok(super::status::not_found().await),
            }
            app.oneshot(req).await
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in sql/examples/ is offered on the page.
    #[test]
    fn every_sql_example_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/examples");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = SQL_EXAMPLES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, embedded);
    }

    /// The page and its assets stay small (issue 28: under 300 KB added to the binary).
    #[test]
    fn assets_stay_small() {
        let total: usize = INDEX.len()
            + ASSETS.iter().map(|a| a.body.len()).sum::<usize>()
            + SQL_EXAMPLES.iter().map(|(_, s)| s.len()).sum::<usize>();
        assert!(total < 300 << 10, "{total} bytes");
    }
}
