//! Request parameters as Prometheus reads them: URL query and form body merged (POST),
//! times as float Unix seconds or RFC 3339, durations as float seconds or `1h30m`.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};

use super::envelope::ApiError;
use crate::duration::parse_duration_ms;

/// All `key=value` pairs of a request, in order (repeated keys such as `match[]` kept).
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

/// Most `key=value` pairs one request may carry (URL and form body together). A form body
/// decodes to ~80 bytes per pair however short the pair (`a&a&…`: 40× its size), so the
/// count is bounded before anything is decoded; `match[]` alone may be 1,000.
pub const MAX_PARAMS: usize = 10_000;

impl Params {
    /// The request's parameters; 400 when it carries more than [`MAX_PARAMS`] pairs.
    pub fn from_request(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Self, ApiError> {
        let is_form = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let form: &[u8] = if method == Method::POST && is_form {
            body
        } else {
            &[]
        };
        let query = uri.query().unwrap_or("").as_bytes();
        // Counted on the raw bytes, as the parser splits them (on `&`, skipping empty
        // pieces), before any pair is decoded.
        let pairs = |b: &[u8]| b.split(|&c| c == b'&').filter(|p| !p.is_empty()).count();
        let n = pairs(query) + pairs(form);
        if n > MAX_PARAMS {
            return Err(ApiError::bad_data(format!(
                "{n} parameters in one request; the limit is {MAX_PARAMS}"
            )));
        }
        let mut out: Vec<(String, String)> =
            url::form_urlencoded::parse(query).into_owned().collect();
        out.extend(url::form_urlencoded::parse(form).into_owned());
        Ok(Params(out))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter in ms; `default` when absent.
    pub fn time(&self, key: &str, default: Option<i64>) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => parse_time(v)
                .map(Some)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{key}\": {e}"))),
        }
    }

    pub fn duration(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => parse_duration(v)
                .map(Some)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{key}\": {e}"))),
        }
    }

    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None | Some("") => Ok(0),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    ApiError::bad_data(format!(
                        "invalid parameter \"limit\": cannot parse \"{v}\" to a valid limit"
                    ))
                }),
        }
    }
}

/// Prometheus's time bounds used when `start`/`end` are omitted on metadata endpoints.
pub const MIN_TIME: i64 = i64::MIN / 2;
pub const MAX_TIME: i64 = i64::MAX / 2;

/// Float Unix seconds (rounded to ms) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        let secs = f.trunc();
        let ms = ((f - secs) * 1000.0).round();
        let total = secs * 1000.0 + ms;
        if total.abs() > 9.2e18 {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        return Ok(total as i64);
    }
    // Prometheus's own min/max time strings (Go client sends these for "all time").
    match s {
        "-292273086-05-16T16:47:06Z" => return Ok(MIN_TIME),
        "292277025-08-18T07:12:54.999999999Z" => return Ok(MAX_TIME),
        _ => {}
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// Float seconds or a Prometheus duration, in ms.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if !ms.is_finite() || ms.abs() > 9.2e18 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ms.round() as i64);
    }
    parse_duration_ms(s).map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_is_bounded_before_decoding() {
        let form = |n: usize| {
            let mut h = HeaderMap::new();
            h.insert(
                "content-type",
                "application/x-www-form-urlencoded".parse().unwrap(),
            );
            let body = Bytes::from("a&&".repeat(n));
            Params::from_request(&Method::POST, &"/q?x=1".parse().unwrap(), &h, &body)
        };
        assert_eq!(form(MAX_PARAMS - 1).unwrap().0.len(), MAX_PARAMS);
        let err = form(MAX_PARAMS).unwrap_err();
        assert!(
            err.message.contains("the limit is 10000"),
            "{}",
            err.message
        );
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1435781451"), Ok(1_435_781_451_000));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert!(parse_duration("1x").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = parse_time(&s);
            let _ = parse_duration(&s);
            let p = Params(vec![("limit".into(), s.clone()), ("time".into(), s.clone()), ("step".into(), s)]);
            let _ = p.limit();
            let _ = p.time("time", None);
            let _ = p.duration("step");
        }

        #[test]
        fn numeric_edge_cases_never_panic(f in proptest::num::f64::ANY) {
            let _ = parse_time(&f.to_string());
            let _ = parse_duration(&f.to_string());
            let _ = parse_time(&format!("{f:e}"));
        }
    }
}
