//! `/api/v1/query`, `/api/v1/query_range`, `/api/v1/format_query`, `/api/v1/parse_query`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

use super::envelope::{ApiError, success, success_pieces, success_raw};
use super::inline_query;
use super::json;
use super::params::Params;
use super::{AppState, Ready};
use std::time::Duration;

use promql_parser::parser::value::ValueType;

use crate::promql::{Annotations, Engine, PromqlError, QueryOptions, Steps};

/// Prometheus's cap on points per series of a range query.
pub(super) const MAX_POINTS: i64 = 11_000;

pub(super) fn options(p: &Params, st: &AppState) -> Result<QueryOptions, ApiError> {
    let mut o = QueryOptions {
        max_samples: st.limits.max_samples,
        planner: st.limits.query_planner,
        evaluate_below: st.limits.query_evaluate_below,
        distribution: st.distribution.clone(),
        ..QueryOptions::default()
    };
    if let Some(lb) = p.duration("lookback_delta")? {
        if lb < 0 {
            return Err(ApiError::bad_data(
                "invalid parameter \"lookback_delta\": lookback delta must be positive",
            ));
        }
        if lb > 0 {
            o.lookback_ms = lb;
        }
    }
    Ok(o)
}

pub(super) fn timeout_ms(p: &Params, st: &AppState) -> Result<u64, ApiError> {
    let t = p
        .duration("timeout")?
        .filter(|t| *t > 0)
        .map(|t| t as u64)
        .unwrap_or(st.limits.query_timeout_ms);
    Ok(t.min(st.limits.query_timeout_ms))
}

/// A range query's `start`, `end` and `step`, checked as Prometheus checks them (at most
/// 11,000 points per series).
pub(super) fn range_window(p: &Params) -> Result<(i64, i64, i64), ApiError> {
    let start = p.time("start", None)?.ok_or_else(|| {
        ApiError::bad_data("invalid parameter \"start\": cannot parse \"\" to a valid timestamp")
    })?;
    let end = p.time("end", None)?.ok_or_else(|| {
        ApiError::bad_data("invalid parameter \"end\": cannot parse \"\" to a valid timestamp")
    })?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = p.duration("step")?.ok_or_else(|| {
        ApiError::bad_data("invalid parameter \"step\": cannot parse \"\" to a valid duration")
    })?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // i128: `end - start` overflows i64 for timestamps near its limits.
    if (end as i128 - start as i128) / step as i128 > MAX_POINTS as i128 {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    Ok((start, end, step))
}

/// Applies the `limit` parameter: at most that many series (by label order), with a warning.
fn apply_limit(v: &mut crate::promql::Value, limit: usize, warnings: &mut Vec<String>) {
    use crate::promql::Value;
    if limit == 0 {
        return;
    }
    let truncated = match v {
        Value::Vector(s) => {
            s.retain(|x| !x.is_empty());
            if s.len() > limit {
                s.sort_by(|a, b| a.labels.cmp(&b.labels));
                s.truncate(limit);
                true
            } else {
                false
            }
        }
        Value::Matrix(m) if m.len() > limit => {
            m.truncate(limit);
            true
        }
        _ => false,
    };
    if truncated {
        warnings.push("results truncated due to limit".into());
    }
}

/// While the object store is unreachable at startup only the WAL and head are served: say
/// so, as Prometheus warns about partial data.
fn partial_data_warning(storage: &crate::storage::Storage, warnings: &mut Vec<String>) {
    if let Some(why) = storage.blocks_unavailable() {
        warnings.push(format!(
            "blocks are not loaded (object store unreachable: {why}); results hold only recent samples from the WAL"
        ));
    }
}

#[tracing::instrument(skip_all, fields(query))]
pub(super) async fn query(
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
    let result = async {
        let q = p
            .get("query")
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query is required"))?
            .to_string();
        tracing::Span::current().record("query", q.as_str());
        let t = p.time("time", Some(storage.now_ms()))?.expect("default");
        let timeout = Duration::from_millis(timeout_ms(&p, &st)?);
        let mut opts = options(&p, &st)?;
        let limit = p.limit()?;
        let slot = st.admission.query(&access.tenant)?;
        run_parsed(&st, q, timeout, move |cancel, expr| async move {
            let _slot = slot;
            opts.cancel = cancel;
            let allowed = access.allowed(&storage);
            let engine = Engine::new(storage.clone(), opts)
                .restrict(allowed)
                .caller(&access);
            let mut v = engine
                .instant(&expr, t)
                .await
                .map_err(ApiError::from_promql)?;
            let mut ann = engine.take_annotations();
            partial_data_warning(&storage, &mut ann.warnings);
            apply_limit(&mut v, limit, &mut ann.warnings);
            Ok(success_raw(
                &json::instant(&v, t),
                &ann.warnings,
                &ann.infos,
            ))
        })
        .await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[tracing::instrument(skip_all, fields(query))]
pub(super) async fn query_range(
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
    let result = async {
        let q = p.get("query").ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query is required"))?.to_string();
        tracing::Span::current().record("query", q.as_str());
        let (start, end, step) = range_window(&p)?;
        let timeout = Duration::from_millis(timeout_ms(&p, &st)?);
        let mut opts = options(&p, &st)?;
        let limit = p.limit()?;
        let slot = st.admission.query(&access.tenant)?;
        let state = st.clone();
        run_parsed(&st, q, timeout, move |cancel, expr| async move {
            let _slot = slot;
            opts.cancel = cancel;
            // Prometheus refuses these as bad_data before evaluating anything.
            if let t @ (ValueType::Matrix | ValueType::String) = expr.value_type() {
                return Err(ApiError::bad_data(format!(
                    "invalid parameter \"query\": invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    if t == ValueType::Matrix { "range vector" } else { "string" }
                )));
            }
            let steps = Steps::new(start, end, step);
            let (mut v, mut ann) = cached_range(&state, &storage, &access, &p, &expr, opts, steps)
                .await
                .map_err(ApiError::from_promql)?;
            partial_data_warning(&storage, &mut ann.warnings);
            apply_limit(&mut v, limit, &mut ann.warnings);
            Ok(success_pieces(
                json::RangePieces::new(v, steps),
                &ann.warnings,
                &ann.infos,
            ))
        })
        .await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Runs `work` on query `q` parsed, with the query timeout and cancellation: on this
/// thread when the query reads nothing (`inline_query`), otherwise on a query thread,
/// which also parses it unless it is short and shallow (deep ASTs need that thread's
/// stack, and are dropped there too).
async fn run_parsed<T, Fut>(
    st: &AppState,
    q: String,
    timeout: Duration,
    work: impl FnOnce(crate::promql::Cancel, promql_parser::parser::Expr) -> Fut + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
{
    let small = inline_query::parse_small(&q)
        .transpose()
        .map_err(ApiError::from_promql)?;
    match small {
        Some(expr) if inline_query::reads_nothing(&expr) => {
            st.query_rt
                .run_here(timeout, move |cancel| work(cancel, expr))
                .await
        }
        small => {
            st.query_rt
                .run(timeout, move |cancel| async move {
                    let expr = match small {
                        Some(expr) => expr,
                        None => Engine::parse(&q).map_err(ApiError::from_promql)?,
                    };
                    work(cancel, expr).await
                })
                .await
        }
    }
}

/// Evaluates a range query through the results cache, unless the cache is off, the client
/// sent `nocache=1` (as VictoriaMetrics accepts), or the query cannot be cached (`@`,
/// negative offsets, `start()`/`end()`).
async fn cached_range(
    st: &AppState,
    storage: &std::sync::Arc<crate::storage::Storage>,
    access: &crate::auth::Access,
    p: &Params,
    expr: &promql_parser::parser::Expr,
    opts: QueryOptions,
    steps: Steps,
) -> Result<(crate::promql::Value, Annotations), PromqlError> {
    // Resolved once per request, so every extent sees the same series.
    let allowed = access.allowed(storage);
    let eval = |s: Steps| {
        let engine = Engine::new(storage.clone(), opts.clone())
            .restrict(allowed.clone())
            .caller(access);
        async move {
            let v = engine.range(expr, s.start, s.end, s.step).await?;
            Ok::<_, PromqlError>((v, engine.take_annotations()))
        }
    };
    let nocache = p.get("nocache").is_some_and(|v| v == "1" || v == "true");
    // Extent arithmetic is for real time ranges: far-off times or huge steps bypass it.
    const SANE_MS: i64 = 1 << 50;
    let sane = steps.start.abs() < SANE_MS && steps.end.abs() < SANE_MS && steps.step < SANE_MS;
    // Without the blocks (object store down at startup) answers are partial: never cache
    // them. Blocks never go away once loaded, so checking before evaluating is enough.
    let partial = storage.blocks_unavailable().is_some();
    if nocache
        || !sane
        || partial
        || !st.results_cache.enabled()
        || !super::results_cache::cacheable(expr)
    {
        return eval(steps).await;
    }
    let key = super::results_cache::QueryKey {
        tenant: access.tenant.clone(),
        scope: access.cache_scope(),
        query: expr.to_string(),
        step: steps.step,
        lookback: opts.lookback_ms,
    };
    let (v, ann, outcome) = st
        .results_cache
        .range(key, steps, storage.now_ms(), eval)
        .await?;
    let m = &super::metrics::METRICS;
    m.results_cache_hits.inc_by(outcome.hits);
    m.results_cache_misses.inc_by(outcome.misses);
    Ok((v, ann))
}

/// The `query` parameter, parsed (bad_data when missing or invalid).
pub(super) fn parsed_query(p: &Params) -> Result<promql_parser::parser::Expr, ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query is required"))?;
    Engine::parse(q).map_err(ApiError::from_promql)
}

/// Parses (quadratic in the nesting for some shapes) and renders on the query runtime,
/// with the query timeout, like any other query work.
async fn on_query_runtime(
    st: &AppState,
    p: Params,
    render: impl FnOnce(promql_parser::parser::Expr) -> Result<Response, ApiError> + Send + 'static,
) -> Response {
    let timeout = Duration::from_millis(st.limits.query_timeout_ms);
    st.query_rt
        .run(timeout, |_| async move { render(parsed_query(&p)?) })
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn format_query(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match Params::from_request(&method, &uri, &headers, &body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    on_query_runtime(&st, p, |expr| {
        Ok(success(serde_json::Value::String(expr.to_string())))
    })
    .await
}

/// `/api/v1/parse_query`: the AST as JSON, in the shape Prometheus's UI tree view reads.
pub(super) async fn parse_query(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match Params::from_request(&method, &uri, &headers, &body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    on_query_runtime(&st, p, |expr| {
        serde_json::to_value(&expr)
            .map(success)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
}
