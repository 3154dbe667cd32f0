//! `/api/v1/explain`: a PromQL query's DataFusion plans as JSON (the query page's Explain
//! view), for a range (`start`, `end`, `step`) or an instant (`time`). With `analyze=1`
//! the plan runs, like a query (admission, timeout, sample limit, the caller's enforced
//! matchers), and every operator carries its rows and compute time.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

use super::envelope::{ApiError, success_raw};
use super::params::Params;
use super::query::{options, range_window, timeout_ms};
use super::{AppState, Ready};
use crate::promql::Engine;

#[tracing::instrument(skip_all, fields(query))]
pub(super) async fn explain(
    State(st): State<AppState>,
    Ready(storage, access): Ready,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match Params::from_request(&method, &uri, &headers, &body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if p.get("lang") == Some("sql") {
        return explain_sql(st, storage, access, &p)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    let result = async {
        let q = p
            .get("query")
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query is required"))?
            .to_string();
        tracing::Span::current().record("query", q.as_str());
        let (start, end, step) = window(&p, storage.now_ms())?;
        let analyze = p.get("analyze").is_some_and(|v| v == "1" || v == "true");
        let timeout = Duration::from_millis(timeout_ms(&p, &st)?);
        let mut opts = options(&p, &st)?;
        let slot = st.admission.query(&access.tenant)?;
        st.query_rt
            .run(timeout, move |cancel| async move {
                let _slot = slot;
                opts.cancel = cancel;
                let expr = Engine::parse(&q).map_err(ApiError::from_promql)?;
                let allowed = access.allowed(&storage);
                let engine = Engine::new(storage.clone(), opts)
                    .restrict(allowed)
                    .caller(&access);
                let mut explained = engine
                    .explain_report(&expr, start, end, step, analyze)
                    .await
                    .map_err(ApiError::from_promql)?;
                // The answer encoded as the query endpoints would: the last phase.
                if let Some(series) = explained.result.take() {
                    let t = std::time::Instant::now();
                    let v = crate::promql::Value::Vector(series);
                    let json = if start == end {
                        crate::api::json::instant(&v, start)
                    } else {
                        crate::api::json::range(&v, crate::promql::Steps { start, end, step })
                    };
                    std::hint::black_box(json);
                    explained.add_phase("json", t.elapsed().as_secs_f64() * 1e3);
                }
                // Analyze runs the plan: its warnings and infos are the query's.
                let ann = engine.take_annotations();
                let data = serde_json::to_string(&explained)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(success_raw(&data, &ann.warnings, &ann.infos))
            })
            .await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A SQL statement explained (`lang=sql`): as `/api/v1/sql` would run it, across the
/// cluster's queriers when others are live.
async fn explain_sql(
    st: AppState,
    storage: std::sync::Arc<crate::storage::Storage>,
    access: crate::auth::Access,
    p: &Params,
) -> Result<Response, ApiError> {
    let q = super::sql::statement(p)?;
    tracing::Span::current().record("query", q.as_str());
    let analyze = p.get("analyze").is_some_and(|v| v == "1" || v == "true");
    let slot = st.admission.query(&access.tenant)?;
    let limits = st.limits;
    let timeout = Duration::from_millis(limits.query_timeout_ms);
    let distribution = st.distribution.clone();
    st.query_rt
        .run(timeout, move |cancel| async move {
            let _slot = slot;
            let ctx =
                super::sql::session_for(&storage, &access, limits, cancel, distribution).await?;
            let explained = crate::sql::explain(&ctx, &q, analyze)
                .await
                .map_err(super::sql::statement_error)?;
            let data =
                serde_json::to_string(&explained).map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(success_raw(&data, &[], &[]))
        })
        .await
}

/// `(start, end, step)`: the range's when `start` is given, else one step at `time`
/// (default now).
fn window(p: &Params, now: i64) -> Result<(i64, i64, i64), ApiError> {
    if p.get("start").is_some() {
        return range_window(p);
    }
    let t = p.time("time", Some(now))?.expect("default");
    Ok((t, t, 1))
}
