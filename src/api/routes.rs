//! Every route the server answers, with the permission it needs, declared in one table.
//!
//! The router is built from [`table`] and nothing else, and the access layer looks the
//! matched path up in the same table, so a route cannot exist without a declared
//! permission: a path that matched but is missing from the table is refused (fail closed),
//! and `tests/integration/routes.rs` fails on any `.route(` outside this file.
//! docs/security.md's permission table is checked against [`permission_table_markdown`].

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post};

use super::error::Format;
use super::{
    AppState, exemplars, explain, ingest, metadata, metrics, query, remote_read, sql, status, ui,
};
use crate::auth::Permission;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No principal needed: health, readiness and Quiver's own metrics (orchestrators and
    /// scrapers call them without credentials).
    Open,
    Needs(Permission),
}

/// One route: its path (axum syntax), the methods it answers, what it needs, what it does.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub need: Need,
    /// One line for docs/security.md.
    pub what: &'static str,
    pub handler: MethodRouter<AppState>,
}

const READ: Need = Need::Needs(Permission::Read);
const WRITE: Need = Need::Needs(Permission::Write);
const ADMIN: Need = Need::Needs(Permission::Admin);
const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const GET_POST: &[&str] = &["GET", "POST"];

fn route(
    path: &'static str,
    methods: &'static [&'static str],
    need: Need,
    what: &'static str,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        path,
        methods,
        need,
        what,
        handler,
    }
}

/// Every route. Ingest paths (anything that stores data) need `write`; paths that reveal
/// the server's configuration need `admin`; everything that reads series needs `read`.
pub fn table() -> Vec<Route> {
    vec![
        // Reads.
        route(
            "/api/v1/query",
            GET_POST,
            READ,
            "PromQL instant query",
            get(query::query).post(query::query),
        ),
        route(
            "/api/v1/query_range",
            GET_POST,
            READ,
            "PromQL range query",
            get(query::query_range).post(query::query_range),
        ),
        route(
            "/api/v1/query_exemplars",
            GET_POST,
            READ,
            "exemplars of a query's selectors",
            get(exemplars::query_exemplars).post(exemplars::query_exemplars),
        ),
        route(
            "/api/v1/explain",
            GET_POST,
            READ,
            "a PromQL query's DataFusion plan; analyze=1 runs it",
            get(explain::explain).post(explain::explain),
        ),
        route(
            "/api/v1/format_query",
            GET_POST,
            READ,
            "PromQL pretty-printer",
            get(query::format_query).post(query::format_query),
        ),
        route(
            "/api/v1/parse_query",
            GET_POST,
            READ,
            "PromQL syntax tree",
            get(query::parse_query).post(query::parse_query),
        ),
        route(
            "/api/v1/series",
            GET_POST,
            READ,
            "series by match[]",
            get(metadata::series).post(metadata::series),
        ),
        route(
            "/api/v1/labels",
            GET_POST,
            READ,
            "label names",
            get(metadata::labels).post(metadata::labels),
        ),
        route(
            "/api/v1/label/{name}/values",
            GET,
            READ,
            "label values",
            get(metadata::label_values),
        ),
        route(
            "/api/v1/metadata",
            GET,
            READ,
            "metric metadata of visible series",
            get(metadata::metadata),
        ),
        route(
            "/api/v1/read",
            POST,
            READ,
            "Prometheus remote read",
            post(remote_read::read),
        ),
        route(
            "/api/v1/sql",
            GET_POST,
            READ,
            "SQL over samples, series, histograms, exemplars",
            get(sql::sql).post(sql::sql),
        ),
        route(
            "/api/v1/status/tsdb",
            GET,
            READ,
            "cardinality of visible series",
            get(status::tsdb),
        ),
        route(
            "/api/v1/status/limits",
            GET,
            READ,
            "the limits a request meets",
            get(status::limits),
        ),
        route(
            "/api/v1/status/buildinfo",
            GET,
            READ,
            "version",
            get(status::buildinfo),
        ),
        route(
            "/api/v1/targets",
            GET,
            READ,
            "empty (no scraping)",
            get(status::targets),
        ),
        route(
            "/api/v1/rules",
            GET,
            READ,
            "empty (no rules)",
            get(status::rules),
        ),
        route(
            "/api/v1/alerts",
            GET,
            READ,
            "empty (no alerts)",
            get(status::alerts),
        ),
        route(
            "/api/v1/alertmanagers",
            GET,
            READ,
            "empty",
            get(status::alertmanagers),
        ),
        // Writes: everything that stores samples, histograms, exemplars or metadata.
        route(
            "/api/v1/write",
            POST,
            WRITE,
            "remote write 1.0 and 2.0",
            post(ingest::remote_write),
        ),
        route(
            "/api/v1/otlp/v1/metrics",
            POST,
            WRITE,
            "OTLP/HTTP metrics (protobuf, JSON)",
            post(ingest::otlp_metrics),
        ),
        // Streamed and committed in batches: no body limit (see ingest.rs).
        route(
            "/api/v1/import/prometheus",
            POST,
            WRITE,
            "text and OpenMetrics import (streamed)",
            post(ingest::import_prometheus).layer(DefaultBodyLimit::disable()),
        ),
        // Configuration.
        route(
            "/api/v1/status/config",
            GET,
            ADMIN,
            "configuration",
            get(status::config),
        ),
        route(
            "/api/v1/status/flags",
            GET,
            ADMIN,
            "flags in force",
            get(status::flags),
        ),
        route(
            "/api/v1/status/runtimeinfo",
            GET,
            ADMIN,
            "process and storage facts",
            get(status::runtimeinfo),
        ),
        route(
            "/api/v1/status/blocks",
            GET,
            ADMIN,
            "the tenant's blocks: time ranges, sizes, levels",
            get(status::blocks),
        ),
        route(
            "/api/v1/status/walreplay",
            GET,
            ADMIN,
            "WAL replay progress",
            get(status::walreplay),
        ),
        // Open.
        route(
            "/",
            GET,
            Need::Open,
            "the query page (no data; it calls the API with the visitor's credentials)",
            get(ui::index),
        ),
        route(
            "/ui/{*path}",
            GET,
            Need::Open,
            "the query page's scripts and styles",
            get(ui::asset),
        ),
        route(
            "/-/healthy",
            GET,
            Need::Open,
            "liveness",
            get(|| async { "Quiver is Healthy.\n" }),
        ),
        route("/-/ready", GET, Need::Open, "readiness", get(super::ready)),
        route(
            "/metrics",
            GET,
            Need::Open,
            "Quiver's own metrics",
            get(metrics::metrics),
        ),
    ]
}

/// The permission of each routed path, from [`table`].
static NEEDS: LazyLock<HashMap<&'static str, Need>> =
    LazyLock::new(|| table().into_iter().map(|r| (r.path, r.need)).collect());

/// What a matched route path needs. `None` for a path missing from the table: the access
/// layer refuses it rather than guessing.
pub fn need(path: &str) -> Option<Need> {
    NEEDS.get(path).copied()
}

/// How errors on `path` are answered: plain text on the ingest routes (what remote-write,
/// OTLP and import clients read), remote read and the operational paths; the JSON envelope
/// on the rest of the Prometheus API (and on `/api/` paths that match no route).
pub fn error_format(path: &str) -> Format {
    let text = match need(path) {
        Some(Need::Needs(Permission::Write)) => true,
        _ => path == "/api/v1/read" || !path.starts_with("/api/"),
    };
    if text { Format::Text } else { Format::Json }
}

/// docs/security.md's route table: one row per route, with its methods and permission.
pub fn permission_table_markdown() -> String {
    let mut out = String::from("| route | methods | permission | what |\n|---|---|---|---|\n");
    for r in table() {
        let need = match r.need {
            Need::Open => "none".to_string(),
            Need::Needs(p) => format!("`{}`", p.as_str()),
        };
        out.push_str(&format!(
            "| `{}` | {} | {need} | {} |\n",
            r.path,
            r.methods.join(", "),
            r.what
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_permissions() {
        assert_eq!(need("/api/v1/query"), Some(READ));
        assert_eq!(need("/api/v1/read"), Some(READ));
        assert_eq!(need("/api/v1/sql"), Some(READ));
        assert_eq!(need("/api/v1/write"), Some(WRITE));
        assert_eq!(need("/api/v1/otlp/v1/metrics"), Some(WRITE));
        assert_eq!(need("/api/v1/import/prometheus"), Some(WRITE));
        assert_eq!(need("/api/v1/status/config"), Some(ADMIN));
        assert_eq!(need("/-/ready"), Some(Need::Open));
        assert_eq!(need("/api/v1/not-a-route"), None);
    }

    #[test]
    fn paths_are_declared_once() {
        let t = table();
        let mut seen = std::collections::HashSet::new();
        for r in &t {
            assert!(seen.insert(r.path), "{} declared twice", r.path);
            assert!(!r.methods.is_empty(), "{} has no methods", r.path);
        }
    }
}
