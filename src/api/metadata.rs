//! `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`, `/api/v1/metadata`,
//! all from the label index — no samples are read.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use promql_parser::parser::Expr;
use roaring::RoaringBitmap;

use super::Ready;
use super::envelope::{ApiError, success_raw, success_warn};
use super::json;
use super::params::{MAX_TIME, MIN_TIME, Params};
use crate::auth::Access;
use crate::model::Matcher;
use crate::storage::Storage;

const TRUNCATED: &str = "results truncated due to limit";

/// Most `match[]` parameters one request may carry (each is a catalog lookup).
pub const MAX_MATCH_PARAMS: usize = 1_000;

/// Parses every `match[]` into matcher sets (one selector can expand to several via `or`).
fn match_sets(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut out = Vec::new();
    let all = p.all("match[]");
    if all.len() > MAX_MATCH_PARAMS {
        return Err(ApiError::bad_data(format!(
            "invalid parameter \"match[]\": {} selectors, the limit is {MAX_MATCH_PARAMS}",
            all.len()
        )));
    }
    for m in all {
        // A selector nests at most a brace deep; refuse anything deeper before the parser
        // (whose type checks are quadratic in the depth) runs on an HTTP thread.
        if crate::promql::guard::depth_bound(m) > 3 {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"match[]\": {:?} is not a series selector",
                m.chars().take(100).collect::<String>()
            )));
        }
        let expr = crate::promql::parse(m)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        let Expr::VectorSelector(vs) = expr else {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"match[]\": {m:?} is not a series selector"
            )));
        };
        let sets =
            crate::promql::selector_matchers(&vs).map_err(|e| ApiError::bad_data(e.to_string()))?;
        for set in sets {
            if set.iter().all(Matcher::matches_empty) {
                return Err(ApiError::bad_data(
                    "match[] must contain at least one non-empty matcher".to_string(),
                ));
            }
            out.push(set);
        }
    }
    Ok(out)
}

fn range(p: &Params) -> Result<(i64, i64), ApiError> {
    Ok((
        p.time("start", Some(MIN_TIME))?.expect("default"),
        p.time("end", Some(MAX_TIME))?.expect("default"),
    ))
}

/// Series in range matching any `match[]` set (all when none), narrowed to what the caller
/// may see.
fn selected(
    storage: &Storage,
    access: &Access,
    sets: &[Vec<Matcher>],
    min_t: i64,
    max_t: i64,
) -> RoaringBitmap {
    let mut ids = if sets.is_empty() {
        storage.series_ids(&[], min_t, max_t)
    } else {
        let mut ids = RoaringBitmap::new();
        for set in sets {
            ids |= storage.series_ids(set, min_t, max_t);
        }
        ids
    };
    if let Some(allowed) = access.allowed(storage) {
        ids &= allowed;
    }
    ids
}

fn request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Params, ApiError> {
    Params::from_request(method, uri, headers, body)
}

pub(super) async fn series(
    Ready(storage, access): Ready,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match request(&method, &uri, &headers, &body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = (|| -> Result<Response, ApiError> {
        let sets = match_sets(&p)?;
        if sets.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let (a, b) = range(&p)?;
        let limit = p.limit()?;
        let ids = selected(&storage, &access, &sets, a, b);
        let mut labels: Vec<_> = storage
            .catalog()
            .labels_many(ids.iter())
            .into_iter()
            .flatten()
            .collect();
        labels.sort();
        let mut warnings = vec![];
        if limit > 0 && labels.len() > limit {
            labels.truncate(limit);
            warnings.push(TRUNCATED.to_string());
        }
        let items: Vec<String> = labels.iter().map(json::labels_json).collect();
        Ok(success_raw(
            &format!("[{}]", items.join(",")),
            &warnings,
            &[],
        ))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn labels(
    Ready(storage, access): Ready,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match request(&method, &uri, &headers, &body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = (|| -> Result<Response, ApiError> {
        let sets = match_sets(&p)?;
        let (a, b) = range(&p)?;
        let limit = p.limit()?;
        let ids = selected(&storage, &access, &sets, a, b);
        let mut names = storage.catalog().label_names(&ids);
        let mut warnings = vec![];
        if limit > 0 && names.len() > limit {
            names.truncate(limit);
            warnings.push(TRUNCATED.to_string());
        }
        Ok(success_warn(serde_json::json!(names), &warnings))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Prometheus 3 escapes UTF-8 label names in paths as `U__` + `_`-delimited code points.
pub fn unescape_label_name(s: &str) -> Option<String> {
    let Some(rest) = s.strip_prefix("U__") else {
        return Some(s.to_string());
    };
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let mut hex = String::new();
        loop {
            match chars.next() {
                Some('_') => break,
                Some(h) if h.is_ascii_hexdigit() => hex.push(h),
                _ => return None,
            }
        }
        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
    }
    Some(out)
}

pub(super) async fn label_values(
    Ready(storage, access): Ready,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let p = match request(&Method::GET, &uri, &headers, &Bytes::new()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = (|| -> Result<Response, ApiError> {
        let name = unescape_label_name(&name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_data(format!("invalid label name: {name:?}")))?;
        let sets = match_sets(&p)?;
        let (a, b) = range(&p)?;
        let limit = p.limit()?;
        let ids = selected(&storage, &access, &sets, a, b);
        let mut values = storage.catalog().label_values(&name, &ids);
        let mut warnings = vec![];
        if limit > 0 && values.len() > limit {
            values.truncate(limit);
            warnings.push(TRUNCATED.to_string());
        }
        Ok(success_warn(serde_json::json!(values), &warnings))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn metadata(
    Ready(storage, access): Ready,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let p = match request(&Method::GET, &uri, &headers, &Bytes::new()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = (|| -> Result<Response, ApiError> {
        let limit = p.limit()?;
        let per_metric = match p.get("limit_per_metric") {
            None | Some("") => 0,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| ApiError::bad_data("invalid parameter \"limit_per_metric\""))?,
        };
        let metric = p.get("metric").filter(|m| !m.is_empty());
        // Only metadata carried by series this caller may see (`storage::metadata`).
        let allowed = access.allowed(&storage);
        let mut out = serde_json::Map::new();
        for (name, metas) in storage.metadata(allowed.as_ref()) {
            if metric.is_some_and(|m| m != name) {
                continue;
            }
            if limit > 0 && out.len() >= limit {
                break;
            }
            let take = if per_metric > 0 {
                per_metric
            } else {
                usize::MAX
            };
            let list: Vec<serde_json::Value> = metas
                .iter()
                .take(take)
                .map(|md| serde_json::json!({"type": md.metric_type, "help": md.help, "unit": md.unit}))
                .collect();
            out.insert(name, serde_json::Value::Array(list));
        }
        Ok(success_warn(serde_json::Value::Object(out), &[]))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::unescape_label_name;

    #[test]
    fn u_escaping() {
        assert_eq!(unescape_label_name("job").as_deref(), Some("job"));
        assert_eq!(
            unescape_label_name("U__my_2e_label").as_deref(),
            Some("my.label")
        );
        assert_eq!(unescape_label_name("U__a__b").as_deref(), Some("a_b"));
        assert_eq!(unescape_label_name("U__bad_zz_"), None);
    }
}
