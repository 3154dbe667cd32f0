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

use super::envelope::{ApiError, success_raw};
use super::params::Params;
use super::{AppState, Ready};

/// Most rows an HTTP SQL answer carries (use LIMIT or aggregate for more).
const MAX_ROWS: usize = 1_000_000;

#[tracing::instrument(skip_all, fields(query))]
pub(super) async fn sql(
    State(st): State<AppState>,
    Ready(storage, access): Ready,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = Params::from_request(&method, &uri, &headers, &body);
    let result = async {
        let q = p
            .get("query")
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query is required"))?;
        tracing::Span::current().record("query", q);
        let _slot = st.admission.query(&access.tenant)?;
        let allowed = access.allowed(&storage);
        let ctx = crate::sql::session_scoped(storage, allowed)
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
        let timeout = std::time::Duration::from_millis(st.limits.query_timeout_ms);
        let batches = match tokio::time::timeout(timeout, df.collect()).await {
            Ok(r) => r.map_err(|e| ApiError::execution(e.to_string()))?,
            Err(_) => {
                return Err(ApiError {
                    error_type: "timeout",
                    message: "SQL query timed out".into(),
                });
            }
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows > MAX_ROWS {
            return Err(ApiError::execution(format!(
                "{rows} rows exceed the limit of {MAX_ROWS}; add LIMIT or aggregate"
            )));
        }
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
            for b in &batches {
                w.write(b).map_err(|e| ApiError::internal(e.to_string()))?;
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
        Ok::<_, ApiError>(success_raw(&data, &[], &[]))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
