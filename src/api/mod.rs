//! HTTP API (axum). Today: ingest (remote write, text import) and health/readiness.
//! Handlers are thin: decode, call storage, encode.

mod ingest;

use std::sync::Arc;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::storage::Storage;

/// Shared state of all handlers. Storage is set once WAL replay has finished; until then
/// API paths answer 503, as Prometheus does during replay.
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<OnceLock<Arc<Storage>>>,
}

impl AppState {
    pub fn new() -> Self {
        AppState {
            storage: Arc::new(OnceLock::new()),
        }
    }

    #[allow(clippy::result_large_err)] // Response is the natural early-return type of a handler.
    pub(crate) fn ready(&self) -> Result<&Arc<Storage>, Response> {
        self.storage.get().ok_or_else(|| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable: WAL replay in progress\n",
            )
                .into_response()
        })
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds the router. Layers, outermost first: tracing of each request, then the body limit
/// (413 beyond `max_body_bytes`).
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/write", post(ingest::remote_write))
        .route("/api/v1/import/prometheus", post(ingest::import_prometheus))
        .route("/-/healthy", get(|| async { "Quiver is Healthy.\n" }))
        .route("/-/ready", get(ready))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn ready(State(st): State<AppState>) -> Response {
    match st.ready() {
        Ok(_) => "Quiver is Ready.\n".into_response(),
        Err(r) => r,
    }
}
