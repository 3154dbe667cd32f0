//! `/api/v1/query_exemplars`: the exemplars of every series the query's selectors match in
//! `[start, end]`, grouped by series, narrowed to what the caller may read — the same
//! tenant and enforced matchers as every other read.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use promql_parser::parser::{Expr, VectorSelector};
use roaring::RoaringBitmap;

use super::envelope::{ApiError, success_raw};
use super::json;
use super::params::{MAX_TIME, MIN_TIME, Params};
use super::{AppState, Ready};

/// Every vector selector of `e` (matrix selectors' included).
fn selectors<'a>(e: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match e {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

pub(super) async fn query_exemplars(
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
    let timeout = std::time::Duration::from_millis(st.limits.query_timeout_ms);
    let max = st.limits.max_samples;
    st.query_rt
        .run(timeout, move |cancel| async move {
            let start = p.time("start", Some(MIN_TIME))?.expect("default");
            let end = p.time("end", Some(MAX_TIME))?.expect("default");
            if end < start {
                return Err(ApiError::bad_data(
                    "invalid parameter \"end\": end timestamp must not be before start time",
                ));
            }
            let expr = super::query::parsed_query(&p)?;
            let mut sels = Vec::new();
            selectors(&expr, &mut sels);
            let mut ids = RoaringBitmap::new();
            for vs in sels {
                let sets = crate::promql::selector_matchers(vs)
                    .map_err(|e| ApiError::bad_data(e.to_string()))?;
                for set in sets {
                    ids |= storage.catalog().select(&set);
                }
            }
            if let Some(allowed) = access.allowed(&storage) {
                ids &= allowed;
            }
            let found = storage
                .snapshot()
                .exemplars(&ids, start, end)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            cancel.check().map_err(ApiError::from_promql)?;
            let total: usize = found.iter().map(|(_, es)| es.len()).sum();
            if total > max {
                return Err(ApiError::from_promql(
                    crate::promql::PromqlError::TooManySamples,
                ));
            }
            let labels = storage
                .catalog()
                .labels_many(found.iter().map(|(id, _)| *id));
            let mut series: Vec<_> = found
                .into_iter()
                .zip(labels)
                .filter_map(|((_, es), l)| Some((l?, es)))
                .collect();
            series.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = String::from("[");
            for (k, (l, es)) in series.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                out.push_str("{\"seriesLabels\":");
                out.push_str(&json::labels_json(l));
                out.push_str(",\"exemplars\":[");
                for (j, e) in es.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push_str("{\"labels\":");
                    out.push_str(&json::labels_json(&e.labels));
                    out.push_str(",\"value\":\"");
                    json::fmt_value(e.value, &mut out);
                    out.push_str("\",\"timestamp\":");
                    json::fmt_ts(e.ts, &mut out);
                    out.push('}');
                }
                out.push_str("]}");
            }
            out.push(']');
            Ok(success_raw(&out, &[], &[]))
        })
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
