//! `/api/v1/sql`: SQL (DataFusion) over the caller's tenant, read-only. Answers
//! `{"status":"success","data":{"columns":[…],"rows":[{…},…]}}`.
//!
//! Only queries run: DDL (e.g. `CREATE EXTERNAL TABLE`, which could read server files),
//! DML (`INSERT`, `COPY`) and other statements are refused. Enforced matchers restrict
//! the `series` and `samples` tables themselves, so views and joins cannot reach past them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use datafusion::execution::context::SQLOptions;
use futures::StreamExt;

use super::envelope::{ApiError, success_raw};
use super::params::Params;
use super::{AppState, Ready};

#[tracing::instrument(skip_all, fields(query))]
pub(super) async fn sql(
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
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query is required"))?
            .to_string();
        tracing::Span::current().record("query", q.as_str());
        // DataFusion's planner and optimizer recurse once per expression level (a chain of
        // `1+1+…` included): the same text bounds as PromQL keep them within the stack.
        crate::promql::guard::check(&q)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
        // Some of its passes are quadratic in the depth and cannot be interrupted: SQL gets
        // a tighter bound than PromQL.
        let depth = crate::promql::guard::depth_bound(&q);
        if depth > SQL_MAX_DEPTH {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"query\": expression nests up to {depth} levels; SQL allows {SQL_MAX_DEPTH}"
            )));
        }
        let slot = st.admission.query(&access.tenant)?;
        let limits = st.limits;
        let timeout = std::time::Duration::from_millis(limits.query_timeout_ms);
        st.query_rt
            .run(timeout, move |cancel| async move {
                let _slot = slot;
                run(storage, access, &q, limits, cancel).await
            })
            .await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A failed execution: the query's own timeout or cancellation (raised by `CancelExec`
/// inside the plan) keeps its Prometheus error type; anything else is `execution`.
fn execution_error(e: datafusion::error::DataFusionError) -> ApiError {
    use crate::promql::PromqlError;
    if let datafusion::error::DataFusionError::External(inner) = e.find_root()
        && let Some(p @ (PromqlError::Timeout | PromqlError::Canceled)) =
            inner.downcast_ref::<PromqlError>()
    {
        return ApiError::of(p, None);
    }
    ApiError::execution(e.to_string())
}

/// Deepest SQL expression (operators and brackets, as `promql::guard` counts them).
const SQL_MAX_DEPTH: usize = 1_000;

/// Largest HTTP SQL answer (JSON text), whatever its row count.
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Plans and runs one statement; stops reading once the answer exceeds `sql_max_rows`.
async fn run(
    storage: std::sync::Arc<crate::storage::Storage>,
    access: crate::auth::Access,
    q: &str,
    limits: super::Limits,
    cancel: crate::promql::Cancel,
) -> Result<Response, ApiError> {
    let allowed = access.allowed(&storage);
    let sql_limits = crate::sql::SqlLimits {
        memory_bytes: limits.sql_memory_bytes,
        max_samples: limits.max_samples,
        cancel,
    };
    let ctx = crate::sql::session_scoped(storage, allowed, Some(sql_limits))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx
        .sql_with_options(q, options)
        .await
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    let columns: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut stream = df.execute_stream().await.map_err(execution_error)?;
    let mut buf = Vec::new();
    let mut rows = 0usize;
    {
        let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
        while let Some(b) = stream.next().await {
            let b = b.map_err(execution_error)?;
            rows += b.num_rows();
            if rows > limits.sql_max_rows {
                return Err(ApiError::execution(format!(
                    "the answer has more than {} rows (--sql-max-rows); add LIMIT or aggregate",
                    limits.sql_max_rows
                )));
            }
            w.write(&b).map_err(|e| ApiError::internal(e.to_string()))?;
            if w.get_ref().len() > MAX_ANSWER_BYTES {
                return Err(ApiError::execution(format!(
                    "the answer exceeds {MAX_ANSWER_BYTES} bytes; add LIMIT or aggregate"
                )));
            }
        }
        w.finish().map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let rows_json = if buf.is_empty() {
        "[]".to_string()
    } else {
        String::from_utf8(buf).map_err(|e| ApiError::internal(e.to_string()))?
    };
    let data = format!(
        r#"{{"columns":{},"rows":{rows_json}}}"#,
        serde_json::to_string(&columns).expect("strings serialise")
    );
    Ok(success_raw(&data, &[], &[]))
}
