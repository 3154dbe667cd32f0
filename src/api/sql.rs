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
        let q = statement(&p)?;
        tracing::Span::current().record("query", q.as_str());
        let slot = st.admission.query(&access.tenant)?;
        let limits = st.limits;
        let timeout = std::time::Duration::from_millis(limits.query_timeout_ms);
        let distribution = st.distribution.clone();
        st.query_rt
            .run(timeout, move |cancel| async move {
                let _slot = slot;
                run(storage, access, &q, limits, cancel, distribution).await
            })
            .await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The request's statement, within the bounds SQL's planner can take.
pub(super) fn statement(p: &Params) -> Result<String, ApiError> {
    let q = p
        .get("query")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query is required"))?
        .to_string();
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
    Ok(q)
}

/// The session a statement of `access` runs in: its series, its limits and, when
/// `distribution` has other queriers live, the cluster.
pub(super) async fn session_for(
    storage: &std::sync::Arc<crate::storage::Storage>,
    access: &crate::auth::Access,
    limits: super::Limits,
    cancel: crate::promql::Cancel,
    distribution: Option<std::sync::Arc<crate::promql::Distribution>>,
) -> Result<datafusion::prelude::SessionContext, ApiError> {
    let spread = distribution
        .filter(|d| d.spread().is_some())
        .map(|distribution| crate::sql::Spread {
            distribution,
            caller: access.clone(),
        });
    let sql_limits = crate::sql::SqlLimits {
        memory_bytes: limits.sql_memory_bytes,
        max_samples: limits.max_samples,
        cancel,
        spread,
    };
    crate::sql::session_scoped(storage.clone(), access.allowed(storage), Some(sql_limits))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A statement that failed before or while running: one that does not plan is the
/// caller's bad data, a failed run is an execution error.
pub(super) fn statement_error(e: datafusion::error::DataFusionError) -> ApiError {
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::Plan(_) | E::SQL(..) | E::SchemaError(..) | E::NotImplemented(_) => {
            ApiError::bad_data(format!("invalid parameter \"query\": {e}"))
        }
        _ => execution_error(e),
    }
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

/// How a statement failed: an answer for the client, or its plan's execution (which a
/// statement spread over the cluster may retry).
enum Failed {
    Api(ApiError),
    Exec(datafusion::error::DataFusionError),
}

impl From<ApiError> for Failed {
    fn from(e: ApiError) -> Self {
        Failed::Api(e)
    }
}

impl From<Failed> for ApiError {
    fn from(f: Failed) -> Self {
        match f {
            Failed::Api(e) => e,
            Failed::Exec(e) => execution_error(e),
        }
    }
}

/// Runs one statement: across the cluster's queriers when others are live (once more
/// here alone, with a warning, if a querier failed), else in this process.
async fn run(
    storage: std::sync::Arc<crate::storage::Storage>,
    access: crate::auth::Access,
    q: &str,
    limits: super::Limits,
    cancel: crate::promql::Cancel,
    distribution: Option<std::sync::Arc<crate::promql::Distribution>>,
) -> Result<Response, ApiError> {
    let Some(d) = distribution.filter(|d| d.spread().is_some()) else {
        let data = answer(&storage, &access, q, limits, cancel, None).await?;
        return Ok(success_raw(&data, &[], &[]));
    };
    let m = &super::metrics::METRICS;
    d.count_run();
    let first = answer(&storage, &access, q, limits, cancel.clone(), Some(d)).await;
    let e = match first {
        Ok(data) => {
            m.distributed_plans.with_label_values(&["ok"]).inc();
            return Ok(success_raw(&data, &[], &[]));
        }
        Err(Failed::Exec(e)) if crate::promql::worth_retrying(&e) => e,
        Err(e) => {
            m.distributed_plans.with_label_values(&["failed"]).inc();
            return Err(e.into());
        }
    };
    tracing::warn!(error = %e, "a distributed SQL plan failed; running it here");
    let again = answer(&storage, &access, q, limits, cancel, None).await;
    let outcome = if again.is_ok() { "retried" } else { "failed" };
    m.distributed_plans.with_label_values(&[outcome]).inc();
    let data = match again {
        Ok(data) => data,
        Err(Failed::Exec(e2)) if e2.to_string() == e.to_string() => {
            return Err(execution_error(e2));
        }
        Err(f) => return Err(f.into()),
    };
    let warning = format!(
        "a querier failed while running part of this query ({e}); the query was run again on this querier"
    );
    Ok(success_raw(&data, &[warning], &[]))
}

/// Plans and runs one statement into its answer's `data`; stops reading once the answer
/// exceeds `sql_max_rows`.
async fn answer(
    storage: &std::sync::Arc<crate::storage::Storage>,
    access: &crate::auth::Access,
    q: &str,
    limits: super::Limits,
    cancel: crate::promql::Cancel,
    distribution: Option<std::sync::Arc<crate::promql::Distribution>>,
) -> Result<String, Failed> {
    let ctx = session_for(storage, access, limits, cancel, distribution).await?;
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
    let mut stream = df.execute_stream().await.map_err(Failed::Exec)?;
    let mut buf = Vec::new();
    let mut rows = 0usize;
    {
        let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
        while let Some(b) = stream.next().await {
            let b = b.map_err(Failed::Exec)?;
            rows += b.num_rows();
            if rows > limits.sql_max_rows {
                return Err(ApiError::execution(format!(
                    "the answer has more than {} rows (--sql-max-rows); add LIMIT or aggregate",
                    limits.sql_max_rows
                ))
                .into());
            }
            w.write(&b).map_err(|e| ApiError::internal(e.to_string()))?;
            if w.get_ref().len() > MAX_ANSWER_BYTES {
                return Err(ApiError::execution(format!(
                    "the answer exceeds {MAX_ANSWER_BYTES} bytes; add LIMIT or aggregate"
                ))
                .into());
            }
        }
        w.finish().map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let rows_json = if buf.is_empty() {
        "[]".to_string()
    } else {
        String::from_utf8(buf).map_err(|e| ApiError::internal(e.to_string()))?
    };
    Ok(format!(
        r#"{{"columns":{},"rows":{rows_json}}}"#,
        serde_json::to_string(&columns).expect("strings serialise")
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use datafusion::error::{DataFusionError, Result as DfResult};
    use datafusion_distributed::{ChannelResolver, WorkerChannel, WorkerResolver};
    use url::Url;

    use crate::ingest::{SeriesSamples, WriteBatch};
    use crate::model::Labels;
    use crate::storage::{Storage, WriteWindow};

    /// Two queriers that are listed but cannot be reached (they died).
    struct Gone;

    impl WorkerResolver for Gone {
        fn get_urls(&self) -> DfResult<Vec<Url>> {
            Ok(["http://gone-1", "http://gone-2"]
                .into_iter()
                .map(|u| Url::parse(u).unwrap())
                .collect())
        }
    }

    #[async_trait]
    impl ChannelResolver for Gone {
        async fn get_worker_client_for_url(&self, url: &Url) -> DfResult<Box<dyn WorkerChannel>> {
            Err(DataFusionError::Execution(format!(
                "connection refused: {url}"
            )))
        }
    }

    /// A statement whose tasks cannot reach their queriers runs again here and answers,
    /// saying so; without a cluster the same statement answers with no warning.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_whose_queriers_fail_runs_here_with_a_warning() {
        let storage = Arc::new(Storage::in_memory().await.unwrap());
        let series = (0..6)
            .map(|i| SeriesSamples {
                labels: Labels::new(vec![
                    ("__name__".into(), "m".into()),
                    ("i".into(), i.to_string()),
                ])
                .unwrap(),
                samples: (0..10).map(|k| (k * 1_000, k as f64)).collect(),
            })
            .collect();
        storage
            .append(
                WriteBatch {
                    series,
                    ..Default::default()
                },
                WriteWindow::Any,
            )
            .await
            .unwrap();
        let access = crate::auth::Access::unrestricted("default");
        let q = "SELECT count(*) AS n, sum(value) AS total FROM samples";
        let answer = |d: Option<Arc<crate::promql::Distribution>>| {
            let (storage, access) = (storage.clone(), access.clone());
            async move {
                let r = super::run(
                    storage,
                    access,
                    q,
                    Default::default(),
                    Default::default(),
                    d,
                )
                .await
                .unwrap_or_else(|e| panic!("{}", e.message));
                let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
                serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            }
        };
        let here = answer(None).await;
        assert_eq!(here["data"]["rows"][0]["n"], 60, "{here}");
        assert!(here.get("warnings").is_none(), "{here}");
        let d = Arc::new(crate::promql::Distribution::new(
            Arc::new(Gone),
            Arc::new(Gone),
            None,
        ));
        let retried = answer(Some(d)).await;
        assert_eq!(retried["data"], here["data"]);
        let warning = retried["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("run again"), "{retried}");
    }
}
