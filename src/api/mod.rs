//! HTTP API (axum): the Prometheus HTTP API v1 (query, metadata, status), ingest
//! (remote write, text import) and health/readiness. Handlers are thin: decode parameters,
//! call storage or the PromQL engine, encode.

pub mod access;
mod envelope;
pub mod error;
mod exemplars;
mod explain;
mod ingest;
mod inline_query;
pub mod json;
pub mod limits;
mod memory_metrics;
mod metadata;
pub mod metrics;
pub mod params;
mod process_metrics;
mod query;
pub mod query_runtime;
mod remote_read;
mod results_cache;
pub mod routes;
mod sql;
mod status;
pub mod ui;

pub use envelope::ApiError;
use error::{ErrorKind, Format};
pub use metadata::unescape_label_name;
pub use results_cache::{CacheConfig, ResultsCache};

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{Access, Authenticator, DEFAULT_TENANT};
use crate::storage::{Storage, Tenants};

/// Shared state of all handlers. The default tenant's storage is ready once its WAL replay
/// has finished; until then API paths answer 503, as Prometheus does during replay.
#[derive(Clone)]
pub struct AppState {
    pub tenants: Arc<Tenants>,
    pub auth: Arc<Authenticator>,
    /// Header naming the tenant (for principals allowed to choose).
    pub tenant_header: axum::http::HeaderName,
    /// With authentication off: whether the tenant header is honoured (`--multi-tenancy`).
    pub multi_tenant: bool,
    pub admission: Arc<limits::Admission>,
    pub limits: Limits,
    pub started: chrono::DateTime<chrono::Utc>,
    /// Retention as configured, for status endpoints.
    pub retention: String,
    /// Settings in force by flag name, secrets redacted (`/api/v1/status/flags`).
    pub flags: Arc<std::collections::BTreeMap<String, String>>,
    /// Origins allowed by CORS (fully anchored regex, as Prometheus's `--web.cors.origin`).
    pub cors_origin: Option<regex::Regex>,
    /// Range-query results by time extent.
    pub results_cache: Arc<ResultsCache>,
    /// Where PromQL, SQL and remote-read work runs (not on the HTTP runtime).
    pub query_rt: query_runtime::QueryRuntime,
    /// How OTLP metrics become series.
    pub otlp: Arc<crate::ingest::otlp::OtlpConfig>,
    /// What decoding request bodies may build, in flight together (`--ingest-decode-budget`).
    pub decode: Arc<crate::ingest::budget::DecodePool>,
    /// A querier's peers, which run parts of its queries' plans (`None`: this process
    /// runs them all).
    pub distribution: Option<Arc<crate::promql::Distribution>>,
}

/// Per-request limits (flags in `config`, listed in docs/operations.md).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Samples a query may load, and points (series × steps) any of its nodes may hold;
    /// also the samples a remote read may return.
    pub max_samples: usize,
    pub query_timeout_ms: u64,
    /// Memory pool of one SQL query (DataFusion), bytes.
    pub sql_memory_bytes: usize,
    /// Rows an HTTP SQL answer may carry.
    pub sql_max_rows: usize,
    /// Decompressed size of a remote-read request, bytes.
    pub remote_read_max_bytes: usize,
    /// PromQL runs lowered expressions as DataFusion plans (`--query-engine`).
    pub query_planner: bool,
    /// Vector expressions whose leaves do less work than this run in the evaluator
    /// (`--query-evaluate-below`; `QueryOptions::evaluate_below`).
    pub query_evaluate_below: usize,
    /// Remote write 2.0 created timestamps become zero samples.
    pub created_zero: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_samples: 50_000_000,
            query_timeout_ms: 120_000,
            sql_memory_bytes: 1 << 30,
            sql_max_rows: 1_000_000,
            remote_read_max_bytes: 32 << 20,
            query_planner: true,
            query_evaluate_below: 0,
            created_zero: false,
        }
    }
}

impl AppState {
    pub fn new(tenants: Arc<Tenants>) -> Self {
        AppState {
            tenants,
            auth: Arc::new(Authenticator::disabled()),
            tenant_header: axum::http::HeaderName::from_static("x-scope-orgid"),
            multi_tenant: false,
            admission: Arc::new(limits::Admission::default()),
            limits: Limits::default(),
            started: chrono::Utc::now(),
            retention: "15d".into(),
            flags: Arc::default(),
            cors_origin: None,
            results_cache: Arc::new(ResultsCache::new(CacheConfig::default())),
            query_rt: query_runtime::QueryRuntime::new(crate::cores::cores())
                .expect("query runtime"),
            otlp: Arc::default(),
            decode: Arc::new(crate::ingest::budget::DecodePool::new(Default::default())),
            distribution: None,
        }
    }

    /// Plain text on every route during replay, as Prometheus answers.
    fn not_ready() -> Response {
        ApiError::new(
            ErrorKind::Unavailable,
            "Service Unavailable: WAL replay in progress",
        )
        .respond(Format::Text)
    }
}

/// Extractor: the storage of the request's tenant (chosen by `access::authorize`) and what
/// the caller may see. Until the WAL replay has finished the request gets 503, as
/// Prometheus answers during replay.
pub(crate) struct Ready(pub Arc<Storage>, pub Access);

impl axum::extract::FromRequestParts<AppState> for Ready {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &AppState,
    ) -> Result<Self, Response> {
        if !st.tenants.ready() {
            return Err(AppState::not_ready());
        }
        let access = parts
            .extensions
            .get::<Access>()
            .cloned()
            .unwrap_or_else(|| Access::unrestricted(DEFAULT_TENANT));
        let format = routes::error_format(
            parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map_or(parts.uri.path(), |p| p.as_str()),
        );
        match st.tenants.get(&access.tenant).await {
            Ok(s) => Ok(Ready(s, access)),
            Err(e) => {
                let client = error::Kinded::kind(&e) == ErrorKind::BadData;
                let what = (!client).then_some("opening tenant storage");
                Err(ApiError::of(&e, what).respond(format))
            }
        }
    }
}

/// Builds the router. Layers, outermost first: tracing of each request, gzip when the
/// client asks, CORS, then the body limit (413 beyond `max_body_bytes`).
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    router_with(state, max_body_bytes, |_| true)
}

/// Answers of at least this many bytes are gzipped when the client asks (Grafana and
/// Prometheus's Go clients always do); smaller ones would gain a few bytes and cost a
/// compressor's setup.
pub const COMPRESS_MIN_BYTES: u16 = 1024;

/// gzip at its fastest level, as VictoriaMetrics serves its API. The default level (6)
/// took longer than evaluating the query for range answers of tens of thousands of points
/// of random-looking floats (docs/benchmarks.md, "Session 24"); level 1's output is up to
/// 1.6 times as large, which costs less than the time saved on a local network.
fn compression()
-> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
    tower_http::compression::CompressionLayer::new()
        .quality(tower_http::CompressionLevel::Fastest)
        .compress_when(
            SizeAbove::new(COMPRESS_MIN_BYTES)
                .and(NotForContentType::GRPC)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::SSE),
        )
}

/// The router with only the routes `keep` accepts (a cluster role serves part of the
/// API: distributors the writes, queriers the reads); the rest answer 404.
pub fn router_with(
    state: AppState,
    max_body_bytes: usize,
    keep: impl Fn(&routes::Route) -> bool,
) -> Router {
    // Every route comes from the one table that also declares its permission.
    let api = routes::table()
        .into_iter()
        .filter(|r| keep(r))
        .fold(Router::new(), |r, route| r.route(route.path, route.handler))
        .fallback(status::not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .route_layer(axum::middleware::from_fn(metrics::track));
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    api.layer(DefaultBodyLimit::max(max_body_bytes))
        // Innermost: a panic in any handler answers 500 in the route's error format; the
        // process stays.
        .layer(axum::middleware::from_fn(catch_panics))
        .layer(cors(state.cors_origin.clone()))
        .layer(compression())
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = id,
                        principal = tracing::field::Empty,
                    )
                },
            ),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Middleware: a panicking handler answers 500 in its route's error format (the envelope
/// on the query API, plain text on the ingest routes) instead of dropping the connection.
async fn catch_panics(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures::FutureExt;
    let format = routes::error_format(req.uri().path());
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(panic) => {
            let why = crate::panic_message(panic.as_ref()).unwrap_or("unknown panic");
            tracing::error!(panic = why, "handler panicked");
            ApiError::internal(format!("request failed: {why}")).respond(format)
        }
    }
}

/// CORS: any origin unless a regex is configured, then only matching origins.
fn cors(origin: Option<regex::Regex>) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let layer = CorsLayer::new().allow_methods(Any).allow_headers(Any);
    match origin {
        None => layer.allow_origin(Any),
        Some(re) => layer.allow_origin(AllowOrigin::predicate(move |o, _| {
            o.to_str().is_ok_and(|o| re.is_match(o))
        })),
    }
}

/// `/-/ready`: 200 once the WAL is replayed and the blocks are loaded. With the object
/// store unreachable the API already serves the WAL and head, but this says why it is not
/// ready, so a load balancer keeps queries away.
async fn ready(State(st): State<AppState>) -> Response {
    if !st.tenants.ready() {
        return AppState::not_ready();
    }
    match st
        .tenants
        .get(DEFAULT_TENANT)
        .await
        .ok()
        .and_then(|s| s.blocks_unavailable())
    {
        None => "Quiver is Ready.\n".into_response(),
        Some(why) => ApiError::new(
            ErrorKind::Unavailable,
            format!("Service Unavailable: blocks not loaded, object store unreachable: {why}"),
        )
        .respond(Format::Text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    /// The layer `router` installs: a panicking handler answers 500 in its route's error
    /// format (the envelope on the query API, text on remote write) and the server keeps
    /// answering.
    #[tokio::test]
    async fn handler_panics_answer_500_in_the_routes_format() {
        async fn boom() -> &'static str {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            "unreachable"
        }
        let app: Router = Router::new()
            .route("/api/v1/query", get(boom))
            .route("/api/v1/write", get(boom))
            .route("/ok", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(catch_panics));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let r = reqwest::get(format!("{url}/api/v1/query")).await.unwrap();
        assert_eq!(r.status(), 500);
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], "internal");
        assert!(v["error"].as_str().unwrap().contains("boom"));
        let r = reqwest::get(format!("{url}/api/v1/write")).await.unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(r.text().await.unwrap(), "request failed: boom\n");
        let r = reqwest::get(format!("{url}/ok")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
}
