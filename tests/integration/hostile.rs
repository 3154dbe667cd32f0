//! Hostile requests against a real `quiver serve`: absurd time ranges and steps, subqueries
//! that would load billions of points, deeply nested and huge expressions, pathological
//! regexes, oversized metadata requests, runaway SQL, remote-read and remote-write bodies
//! that lie about their size, and garbage imports.
//!
//! The suite proves that for every one of them the server
//! 1. answers within the query timeout plus a small margin (nothing hangs),
//! 2. answers 2xx or one of 400, 413, 422, 429, 503 — never 500, never a dropped
//!    connection — and, under `/api/v1/` (except the protobuf and text ingest/read paths),
//!    a refusal is the Prometheus error envelope whose `errorType` fits the status,
//! 3. is still running and healthy afterwards,
//!
//! and that over the whole run its peak RSS stays below 2 GiB and its log shows no panic
//! and no stack overflow. `timeout_stops_cpu_work` proves that a timed-out query stops
//! burning CPU instead of running on in the background.
//!
//! Each case lists the statuses it may get, so a failure names the case and what went
//! wrong; all cases run and every failure is reported together at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use quiver::ingest::prompb;
use reqwest::Method;
use serde_json::Value;

use crate::support::*;

/// `--query-timeout` of the server under test.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on top of the query timeout for an answer (parsing, encoding, a loaded CI box).
const MARGIN: Duration = Duration::from_secs(8);
/// Per-request client timeout: a hung server is a failure, not a hung test.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `/-/healthy` may take after a hostile request.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Peak resident memory the server may reach over the whole run, in kB (2 GiB).
const MAX_PEAK_RSS_KB: u64 = 2 * 1024 * 1024;
/// Parameters longer than this go in a POST form body instead of the URL.
const MAX_URL_PARAMS: usize = 8 * 1024;
/// Statuses any hostile request may get besides 2xx.
const ACCEPTABLE: &[u16] = &[400, 413, 422, 429, 503];

const SERVER_ARGS: &[&str] = &["--query-timeout", "10s", "--query-max-samples", "5000000"];

/// Seed: `quiver_hostile{i="0".."199", job="j"}`, a sample every 15 s over the last 30 min.
const SERIES: usize = 200;
const SAMPLES_PER_SERIES: i64 = 120;

const QUERY: &str = "/api/v1/query";
const QUERY_RANGE: &str = "/api/v1/query_range";
const SQL: &str = "/api/v1/sql";
const READ: &str = "/api/v1/read";
const WRITE: &str = "/api/v1/write";
const IMPORT: &str = "/api/v1/import/prometheus";

const REMOTE_READ_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Read-Version", "0.1.0"),
];
const REMOTE_WRITE_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

/// Extra check of a 2xx answer's body.
type Check = fn(&[u8]) -> Result<(), String>;

/// What a request carries.
enum Payload {
    /// Form parameters: in the URL for GET, as an `application/x-www-form-urlencoded`
    /// body for POST.
    Params(Vec<(String, String)>),
    /// A raw POST body, sent with the case's content type and headers.
    Bytes(Vec<u8>),
}

/// One hostile request and the statuses it may get.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    payload: Payload,
    content_type: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    /// The statuses this request may get (each also 2xx or in [`ACCEPTABLE`]).
    allowed: &'static [u16],
    /// Run on a 2xx body.
    check: Option<Check>,
}

impl Case {
    fn new(
        name: &'static str,
        method: Method,
        path: &'static str,
        payload: Payload,
        allowed: &'static [u16],
    ) -> Case {
        Case {
            name,
            method,
            path,
            payload,
            content_type: None,
            headers: &[],
            allowed,
            check: None,
        }
    }

    /// GET with the parameters in the URL, or a POST form when they are too long for one.
    fn params(
        name: &'static str,
        path: &'static str,
        params: &[(&str, &str)],
        allowed: &'static [u16],
    ) -> Case {
        let len: usize = params.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        let method = if len > MAX_URL_PARAMS {
            Method::POST
        } else {
            Method::GET
        };
        Case::new(name, method, path, Payload::Params(owned(params)), allowed)
    }

    /// GET with the parameters in the URL, however long (endpoints that have no POST).
    fn get(
        name: &'static str,
        path: &'static str,
        params: &[(&str, &str)],
        allowed: &'static [u16],
    ) -> Case {
        Case::new(
            name,
            Method::GET,
            path,
            Payload::Params(owned(params)),
            allowed,
        )
    }

    /// POST with the parameters as a form body, however short.
    fn form(
        name: &'static str,
        path: &'static str,
        params: &[(&str, &str)],
        allowed: &'static [u16],
    ) -> Case {
        Case::new(
            name,
            Method::POST,
            path,
            Payload::Params(owned(params)),
            allowed,
        )
    }

    /// POST of raw bytes.
    fn raw(
        name: &'static str,
        path: &'static str,
        body: Vec<u8>,
        content_type: &'static str,
        headers: &'static [(&'static str, &'static str)],
        allowed: &'static [u16],
    ) -> Case {
        Case {
            content_type: Some(content_type),
            headers,
            ..Case::new(name, Method::POST, path, Payload::Bytes(body), allowed)
        }
    }

    fn with_check(mut self, check: Check) -> Case {
        self.check = Some(check);
        self
    }
}

fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `depth` copies of `open`, then `inner`, then `depth` copies of `close`.
fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    let mut s = String::with_capacity(depth * (open.len() + close.len()) + inner.len());
    for _ in 0..depth {
        s.push_str(open);
    }
    s.push_str(inner);
    for _ in 0..depth {
        s.push_str(close);
    }
    s
}

/// Parameters of a range query.
fn range<'a>(
    query: &'a str,
    start: &'a str,
    end: &'a str,
    step: &'a str,
) -> [(&'a str, &'a str); 4] {
    [
        ("query", query),
        ("start", start),
        ("end", end),
        ("step", step),
    ]
}

/// A snappy block whose header claims 0xFFFF_FFF0 (4 GiB) decompressed bytes, followed by a
/// 4-byte literal: a decoder that trusts the header allocates 4 GiB.
fn snappy_claiming_4gib() -> Vec<u8> {
    // Varint 0xFFFF_FFF0, then literal tag (len - 1) << 2 for 4 bytes.
    vec![0xF0, 0xFF, 0xFF, 0xFF, 0x0F, 0x0C, b'a', b'b', b'c', b'd']
}

/// A snappy-compressed `ReadRequest` of `n` queries `{__name__=~".+"}` over all time.
fn read_everything(n: usize) -> Vec<u8> {
    let query = prompb::Query {
        start_timestamp_ms: i64::MIN / 2,
        end_timestamp_ms: i64::MAX / 2,
        matchers: vec![prompb::LabelMatcher {
            r#type: prompb::MatcherType::Re as i32,
            name: "__name__".into(),
            value: ".+".into(),
        }],
        hints: None,
    };
    let req = prompb::ReadRequest {
        queries: vec![query; n],
        accepted_response_types: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

/// The answer to `read_everything(1)` decompresses, decodes and holds exactly the seed.
fn read_response_holds_the_seed(body: &[u8]) -> Result<(), String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("answer is not snappy: {e}"))?;
    let resp = prompb::ReadResponse::decode(raw.as_slice())
        .map_err(|e| format!("answer is not a ReadResponse: {e}"))?;
    let series: usize = resp.results.iter().map(|r| r.timeseries.len()).sum();
    let samples: usize = resp
        .results
        .iter()
        .flat_map(|r| &r.timeseries)
        .map(|t| t.samples.len())
        .sum();
    let want_samples = SERIES * SAMPLES_PER_SERIES as usize;
    if resp.results.len() != 1 || series != SERIES || samples != want_samples {
        return Err(format!(
            "remote read returned {} results, {series} series, {samples} samples; \
             want 1, {SERIES}, {want_samples}",
            resp.results.len()
        ));
    }
    Ok(())
}

/// Every hostile request, in the order of the issue's list. `now` is the seed's end (ms).
fn cases(now: i64) -> Vec<Case> {
    let now_s = format!("{:.3}", now as f64 / 1000.0);
    let hour_ago = format!("{:.3}", (now - 3_600_000) as f64 / 1000.0);
    // Prometheus's own "all time" bounds (i64 ms limits / 2), as the Go client sends them.
    let min_time = "-292273086-05-16T16:47:06Z";
    let max_time = "292277025-08-18T07:12:54.999999999Z";

    let parens_5k = nested("(", "1", ")", 5_000);
    let minus_5k = format!("{}1", "- ".repeat(5_000));
    let abs_5k = nested("abs(", "vector(1)", ")", 5_000);
    // Just under --query-max-depth, with a selector (the storage scan) at the bottom.
    let abs_selector_limit = nested("abs(", "quiver_hostile", ")", 9_990);
    let parens_100k = nested("(", "1", ")", 100_000);
    let sum_50k = format!("{}1", "1+".repeat(49_999));
    let or_2mib = {
        let term = "vector(1) or ";
        let mut s = term.repeat((2 << 20) / term.len());
        s.push_str("vector(1)");
        s
    };
    let matchers_5k = format!(
        "quiver_hostile{{{}}}",
        (0..5_000)
            .map(|k| format!("a{k}=\"x\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let replace_1mib = format!(
        "label_replace(quiver_hostile{{i=\"0\"}}, \"dst\", \"{}\", \"i\", \".*\")",
        "x".repeat(1 << 20)
    );
    let alternation_1mib = {
        let mut re = String::new();
        let mut k = 0;
        while re.len() < (1 << 20) {
            if k > 0 {
                re.push('|');
            }
            re.push_str(&format!("a{k}"));
            k += 1;
        }
        format!("quiver_hostile{{i=~\"{re}\"}}")
    };
    let match_10k: Vec<String> = (0..10_000)
        .map(|n| format!("quiver_hostile{{i=\"{n}\"}}"))
        .collect();
    let match_10k: Vec<(&str, &str)> = match_10k.iter().map(|m| ("match[]", m.as_str())).collect();
    let nested_match = nested("(", "quiver_hostile", ")", 5_000);
    let garbage_import = "a{".repeat(5_000_000).into_bytes();
    let sql_900 = format!("SELECT {}1", "1+".repeat(899));
    let sql_5k = format!("SELECT {}1", "1+".repeat(4_999));
    let sql_500k = format!("SELECT {}1", "1+".repeat(499_999));

    vec![
        // --- Ranges and steps ---------------------------------------------------------
        Case::params(
            "01 range 0..9223372036854775 s, step 1 s",
            QUERY_RANGE,
            &range("vector(1)", "0", "9223372036854775", "1"),
            &[400],
        ),
        Case::params(
            "02 range -9223372036854775..9223372036854775 s, step 1e9 s",
            QUERY_RANGE,
            &range(
                "vector(1)",
                "-9223372036854775",
                "9223372036854775",
                "1000000000",
            ),
            &[400],
        ),
        Case::params(
            "03a range -9.2e15..9.2e15 s (end - start overflows i64 ms), step 1 ms",
            QUERY_RANGE,
            &range("vector(1)", "-9.2e15", "9.2e15", "0.001"),
            &[400],
        ),
        Case::params(
            "03b range over Prometheus's min..max time (RFC 3339), step 1 s",
            QUERY_RANGE,
            &range("vector(1)", min_time, max_time, "1"),
            &[400],
        ),
        Case::params(
            "03c range over min..max time with a 9e15 s step (next step overflows i64)",
            QUERY_RANGE,
            &range("quiver_hostile", min_time, max_time, "9e15"),
            &[200, 400],
        ),
        Case::params(
            "04 range step 1e-9 s",
            QUERY_RANGE,
            &range("vector(1)", &hour_ago, &now_s, "1e-9"),
            &[400],
        ),
        Case::params(
            "05 range step -1",
            QUERY_RANGE,
            &range("vector(1)", &hour_ago, &now_s, "-1"),
            &[400],
        ),
        Case::params(
            "06 range end before start",
            QUERY_RANGE,
            &range("vector(1)", &now_s, &hour_ago, "15"),
            &[400],
        ),
        Case::params(
            "07 instant time()=1e300",
            QUERY,
            &[("query", "time()"), ("time", "1e300")],
            &[400],
        ),
        // Prometheus refuses a range vector in a range query with 400 bad_data (the
        // envelope check ties 400 to errorType "bad_data").
        Case::params(
            "08 range query of a range vector up[5m]",
            QUERY_RANGE,
            &range("up[5m]", &hour_ago, &now_s, "15"),
            &[400],
        ),
        // --- Subqueries ---------------------------------------------------------------
        Case::params(
            "09 vector(1)[30d:1ms] (2.6e9 points)",
            QUERY,
            &[("query", "max_over_time(vector(1)[30d:1ms])")],
            &[422],
        ),
        Case::params(
            "10 vector(1)[36500d:1s] (3.2e9 points)",
            QUERY,
            &[("query", "max_over_time(vector(1)[36500d:1s])")],
            &[422],
        ),
        Case::params(
            "11 quiver_hostile[1d:1ms] (200 series x 8.6e7 points)",
            QUERY,
            &[("query", "max_over_time(quiver_hostile[1d:1ms])")],
            &[422],
        ),
        Case::params(
            "12 three nested [1d:1s] subqueries",
            QUERY,
            &[(
                "query",
                "max_over_time(max_over_time(max_over_time(vector(1)[1d:1s])[1d:1s])[1d:1s])",
            )],
            &[422, 503],
        ),
        Case::params(
            "13 range query (1h, step 15s) of quiver_hostile[1h:1ms]",
            QUERY_RANGE,
            &range(
                "sum_over_time(quiver_hostile[1h:1ms])",
                &hour_ago,
                &now_s,
                "15",
            ),
            &[422, 503],
        ),
        Case::params(
            "14a subquery offset 292y",
            QUERY,
            &[("query", "max_over_time(vector(1)[5m:1m] offset 292y)")],
            &[200, 400, 422],
        ),
        Case::params(
            "14b vector(1) offset 292y",
            QUERY,
            &[("query", "vector(1) offset 292y")],
            &[200, 400, 422],
        ),
        Case::params(
            "14c quiver_hostile offset -100000y",
            QUERY,
            &[("query", "quiver_hostile offset -100000y")],
            &[200, 400, 422],
        ),
        // --- Nesting and size (long ones go as POST forms) ----------------------------
        Case::params(
            "15 5000 nested parentheses",
            QUERY,
            &[("query", parens_5k.as_str())],
            &[200, 400],
        ),
        Case::params(
            "16 5000 nested unary minus",
            QUERY,
            &[("query", minus_5k.as_str())],
            &[200, 400],
        ),
        Case::params(
            "17 5000 nested abs() calls",
            QUERY,
            &[("query", abs_5k.as_str())],
            &[200, 400],
        ),
        Case::form(
            "17b 9990 nested abs() of a selector",
            QUERY,
            &[("query", abs_selector_limit.as_str())],
            &[200, 400],
        ),
        Case::params(
            "18 100000 nested parentheses",
            QUERY,
            &[("query", parens_100k.as_str())],
            &[400, 413],
        ),
        Case::form(
            "19 binary chain 1+1+... of 50000 terms",
            QUERY,
            &[("query", sum_50k.as_str())],
            &[200, 400, 413],
        ),
        Case::form(
            "20 2 MiB of `vector(1) or ...`",
            QUERY,
            &[("query", or_2mib.as_str())],
            &[400, 413],
        ),
        Case::params(
            "21 selector with 5000 matchers",
            QUERY,
            &[("query", matchers_5k.as_str())],
            &[200, 400],
        ),
        Case::params(
            "22 label_replace with a 1 MiB replacement",
            QUERY,
            &[("query", replace_1mib.as_str())],
            &[200, 400, 413, 422],
        ),
        Case::params(
            "22b format_query of 5000 nested abs() calls",
            "/api/v1/format_query",
            &[("query", abs_5k.as_str())],
            &[200, 400],
        ),
        Case::params(
            "22c parse_query (AST as JSON) of 5000 nested abs() calls",
            "/api/v1/parse_query",
            &[("query", abs_5k.as_str())],
            &[200, 400],
        ),
        // --- Regexes --------------------------------------------------------------------
        Case::params(
            "23 regex (a|aa)*b",
            QUERY,
            &[("query", r#"quiver_hostile{i=~"(a|aa)*b"}"#)],
            &[200],
        ),
        Case::params(
            "24 regex ((((.*)*)*)*)*x",
            QUERY,
            &[("query", r#"quiver_hostile{i=~"((((.*)*)*)*)*x"}"#)],
            &[200, 400],
        ),
        Case::params(
            "25 regex x{1000}{1000}",
            QUERY,
            &[("query", r#"quiver_hostile{i=~"x{1000}{1000}"}"#)],
            &[400, 422],
        ),
        Case::form(
            "26 1 MiB alternation regex",
            QUERY,
            &[("query", alternation_1mib.as_str())],
            &[200, 400, 413],
        ),
        // --- Metadata endpoints ---------------------------------------------------------
        Case::form(
            "27 series with 10000 match[]",
            "/api/v1/series",
            &match_10k,
            &[200, 400, 413, 422],
        ),
        Case::params(
            "28 series of everything over -9e15..9e15 s",
            "/api/v1/series",
            &[
                ("match[]", r#"{__name__=~".+"}"#),
                ("start", "-9e15"),
                ("end", "9e15"),
            ],
            &[200, 400],
        ),
        // GET only: this endpoint has no POST, so 5000 parentheses go in the URL.
        Case::get(
            "29 label values with match[] in 5000 nested parentheses",
            "/api/v1/label/i/values",
            &[("match[]", nested_match.as_str())],
            &[400],
        ),
        Case::params(
            "30 labels with limit=-1",
            "/api/v1/labels",
            &[("limit", "-1")],
            &[400],
        ),
        // --- SQL --------------------------------------------------------------------------
        Case::params(
            "31 SQL endless recursive CTE",
            SQL,
            &[(
                "query",
                "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM t) \
                 SELECT count(*) FROM t",
            )],
            &[400, 422, 503],
        ),
        Case::params(
            "32 SQL count of a triple cross join",
            SQL,
            &[(
                "query",
                "SELECT count(*) FROM samples a, samples b, samples c",
            )],
            // DataFusion may answer from row counts without joining anything.
            &[200, 422, 503],
        ),
        Case::params(
            "33 SQL all rows of a cross join",
            SQL,
            &[("query", "SELECT * FROM samples a CROSS JOIN samples b")],
            &[422, 503, 413],
        ),
        Case::params(
            "34 SQL repeat('x', 2000000000)",
            SQL,
            &[("query", "SELECT repeat('x', 2000000000)")],
            &[400, 422, 503],
        ),
        Case::params(
            "35a SQL generate_series(1, 1e10)",
            SQL,
            &[("query", "SELECT * FROM generate_series(1, 10000000000)")],
            &[400, 422, 503],
        ),
        Case::params(
            "35b SQL range(1e10)",
            SQL,
            &[("query", "SELECT * FROM range(10000000000)")],
            &[400, 422, 503],
        ),
        Case::form(
            "35c SQL expression of 900 terms 1+1+…",
            SQL,
            &[("query", sql_900.as_str())],
            &[200],
        ),
        Case::form(
            "35c2 SQL expression of 5000 terms 1+1+…",
            SQL,
            &[("query", sql_5k.as_str())],
            &[400],
        ),
        Case::form(
            "35d SQL expression of 500000 terms 1+1+…",
            SQL,
            &[("query", sql_500k.as_str())],
            &[400, 413],
        ),
        Case::params(
            "35e SQL repeat of a 1 MiB string 2047 times",
            SQL,
            &[("query", "SELECT length(repeat(repeat('x', 1048576), 2047))")],
            &[400, 422],
        ),
        Case::params(
            "35f SQL array_repeat of a 1 Mi-element array 2047 times",
            SQL,
            &[(
                "query",
                "SELECT cardinality(array_repeat(range(1048576), 2047))",
            )],
            &[400, 422],
        ),
        Case::params(
            "35g SQL 1 MiB strings on every one of 100000 rows",
            SQL,
            &[(
                "query",
                // Not a constant (DataFusion folds those once): a value on every row.
                "SELECT max(length(repeat('x', 1000000 + value - value))) FROM range(100000)",
            )],
            &[400, 422, 503],
        ),
        Case::params(
            "35h count_values over many distinct values",
            QUERY_RANGE,
            &range(
                r#"count_values("v", quiver_hostile * 0 + timestamp(quiver_hostile))"#,
                &hour_ago,
                &now_s,
                "1",
            ),
            &[200, 422],
        ),
        Case::params(
            "36 SQL DDL reading /etc/passwd",
            SQL,
            &[(
                "query",
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            )],
            &[400],
        ),
        // --- Remote read ----------------------------------------------------------------
        Case::raw(
            "37 remote read, snappy header claiming 4 GiB",
            READ,
            snappy_claiming_4gib(),
            "application/x-protobuf",
            REMOTE_READ_HEADERS,
            &[400, 413],
        ),
        Case::raw(
            "38 remote read of everything, 10000 times in one request",
            READ,
            read_everything(10_000),
            "application/x-protobuf",
            REMOTE_READ_HEADERS,
            &[200, 400, 413, 422],
        ),
        // The seed (24,000 samples) is under any cap: this one must work.
        Case::raw(
            "39 remote read of everything, once",
            READ,
            read_everything(1),
            "application/x-protobuf",
            REMOTE_READ_HEADERS,
            &[200],
        )
        .with_check(read_response_holds_the_seed),
        // --- Remote write and import ----------------------------------------------------
        Case::raw(
            "40 remote write, snappy header claiming 4 GiB",
            WRITE,
            snappy_claiming_4gib(),
            "application/x-protobuf",
            REMOTE_WRITE_HEADERS,
            &[400, 413],
        ),
        Case::raw(
            "41 import of 10,000,000 characters of `a{`",
            IMPORT,
            garbage_import,
            "text/plain",
            &[],
            &[400],
        ),
    ]
}

/// Sends a case; the status and the whole body, or why there is none.
async fn send(client: &reqwest::Client, url: &str, case: &Case) -> Result<(u16, Vec<u8>), String> {
    let mut rb = client.request(case.method.clone(), format!("{url}{}", case.path));
    match &case.payload {
        Payload::Params(p) if case.method == Method::GET => rb = rb.query(p),
        Payload::Params(p) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in p {
                form.append_pair(k, v);
            }
            rb = rb
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.finish());
        }
        Payload::Bytes(b) => rb = rb.body(b.clone()),
    }
    if let Some(ct) = case.content_type {
        rb = rb.header("Content-Type", ct);
    }
    for (k, v) in case.headers {
        rb = rb.header(*k, *v);
    }
    let r = rb
        .send()
        .await
        .map_err(|e| format!("no answer (dropped connection or client timeout): {e:?}"))?;
    let status = r.status().as_u16();
    let body = r
        .bytes()
        .await
        .map_err(|e| format!("status {status}, but reading the body failed: {e:?}"))?;
    Ok((status, body.to_vec()))
}

/// Paths whose answers are Prometheus JSON envelopes (the protobuf and text ingest/read
/// paths answer plain text or protobuf).
fn needs_envelope(path: &str) -> bool {
    path.starts_with("/api/v1/") && !matches!(path, WRITE | READ | IMPORT)
}

/// Whether an envelope's `errorType` fits its status, as Prometheus maps them.
fn error_type_fits(status: u16, error_type: &str) -> bool {
    match status {
        400 => error_type == "bad_data",
        422 => error_type == "execution",
        429 => error_type == "too_many_requests",
        503 => error_type == "timeout" || error_type == "unavailable",
        _ => true,
    }
}

/// The start of a body, for messages.
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if body.len() > 300 {
        format!("{s}… ({} bytes)", body.len())
    } else {
        s
    }
}

/// What is wrong with an answer (empty: nothing).
fn judge(case: &Case, status: u16, body: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let ok = (200..300).contains(&status);
    if !ok && !ACCEPTABLE.contains(&status) {
        problems.push(format!(
            "status {status} is never acceptable (2xx or {ACCEPTABLE:?}): {}",
            snippet(body)
        ));
    } else if !case.allowed.contains(&status) {
        problems.push(format!(
            "status {status}, expected one of {:?}: {}",
            case.allowed,
            snippet(body)
        ));
    }
    if needs_envelope(case.path) {
        match serde_json::from_slice::<Value>(body) {
            // Deeper than serde_json's reader allows (an AST of 5,000 levels): check the
            // envelope's opening instead.
            Err(e)
                if e.to_string().contains("recursion limit")
                    && ok
                    && body.starts_with(br#"{"status":"success","data":"#) => {}
            Err(e) => problems.push(format!(
                "status {status}: body is not JSON ({e}): {}",
                snippet(body)
            )),
            Ok(v) if ok => {
                if v["status"] != "success" {
                    problems.push(format!(
                        "status {status} without a success envelope: {}",
                        snippet(body)
                    ));
                }
            }
            Ok(v) => {
                let error_type = v["errorType"].as_str();
                if v["status"] != "error" || error_type.is_none() || !v["error"].is_string() {
                    problems.push(format!(
                        "status {status} without the error envelope \
                         {{\"status\":\"error\",\"errorType\":…,\"error\":…}}: {}",
                        snippet(body)
                    ));
                } else if let Some(t) = error_type
                    && !error_type_fits(status, t)
                {
                    problems.push(format!(
                        "status {status} with errorType {t:?}: {}",
                        snippet(body)
                    ));
                }
            }
        }
    }
    if ok
        && let Some(check) = case.check
        && let Err(e) = check(body)
    {
        problems.push(e);
    }
    problems
}

/// `/-/healthy` answers 200 in time.
async fn healthy(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client
        .get(format!("{url}/-/healthy"))
        .timeout(HEALTH_TIMEOUT)
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => Ok(()),
        Ok(r) => Err(format!("/-/healthy answered {} afterwards", r.status())),
        Err(e) => Err(format!("/-/healthy did not answer afterwards: {e:?}")),
    }
}

/// Peak resident set size of a process (`VmHWM` of `/proc/<pid>/status`), in kB.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU time of a process (fields 14 and 15 of `/proc/<pid>/stat`), in
/// clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (the command) is parenthesised and may hold spaces; fields from 3 on follow
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Lines of the server's log (stderr) that show a panic or a stack overflow.
fn log_problems(dir: &Path) -> Vec<String> {
    let path = dir.with_extension("log");
    let log = std::fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    ["panicked", "stack overflow"]
        .iter()
        .filter_map(|needle| {
            log.lines().find(|l| l.contains(*needle)).map(|l| {
                format!(
                    "server log {} contains {needle:?}: {}",
                    path.display(),
                    l.chars().take(400).collect::<String>()
                )
            })
        })
        .collect()
}

/// Writes the seed; `now` is its end (ms).
async fn seed(client: &reqwest::Client, url: &str, now: i64) {
    let t0 = now - SAMPLES_PER_SERIES * 15_000;
    let series: Vec<(quiver::model::Labels, Vec<(i64, f64)>)> = (0..SERIES)
        .map(|i| {
            let i = i.to_string();
            (
                labels(&[
                    ("__name__", "quiver_hostile"),
                    ("i", i.as_str()),
                    ("job", "j"),
                ]),
                (0..SAMPLES_PER_SERIES)
                    .map(|k| (t0 + k * 15_000, k as f64))
                    .collect(),
            )
        })
        .collect();
    let r = post_write(client, url, encode(&batch(series))).await;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(status, 204, "seeding failed: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_answered_in_time_and_never_take_the_server_down() {
    let (_tmp, dir) = tempdir();
    let mut server = Server::start(&dir, SERVER_ARGS, &[]).await;
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("client");
    let now = now_ms();
    seed(&client, &server.url, now).await;

    let cases = cases(now);
    assert!(cases.len() >= 35, "only {} cases", cases.len());
    for case in &cases {
        assert!(
            case.allowed
                .iter()
                .all(|s| (200..300).contains(s) || ACCEPTABLE.contains(s)),
            "{}: allowed statuses {:?} outside 2xx and {ACCEPTABLE:?}",
            case.name,
            case.allowed
        );
    }

    let mut failures: Vec<String> = Vec::new();
    let mut peak_kb = 0u64;
    let mut rss_exceeded_after: Option<&str> = None;
    for case in &cases {
        let started = Instant::now();
        let outcome = send(&client, &server.url, case).await;
        let elapsed = started.elapsed();
        let mut problems = Vec::new();
        if elapsed > QUERY_TIMEOUT + MARGIN {
            problems.push(format!(
                "answered after {elapsed:.1?}, more than {:?}",
                QUERY_TIMEOUT + MARGIN
            ));
        }
        match &outcome {
            Ok((status, body)) => {
                eprintln!("hostile {}: {status} in {elapsed:.1?}", case.name);
                problems.extend(judge(case, *status, body));
            }
            Err(e) => {
                eprintln!("hostile {}: no answer after {elapsed:.1?}", case.name);
                problems.push(e.clone());
            }
        }
        drop(outcome);

        // Still alive and healthy? If not, note it and start a fresh server on the same
        // data, so the remaining cases still run and report.
        let mut restart = false;
        match server.child.try_wait() {
            Ok(None) => {
                if let Some(kb) = peak_rss_kb(server.child.id()) {
                    peak_kb = peak_kb.max(kb);
                    if kb >= MAX_PEAK_RSS_KB && rss_exceeded_after.is_none() {
                        rss_exceeded_after = Some(case.name);
                    }
                }
                if let Err(e) = healthy(&client, &server.url).await {
                    problems.push(e);
                    restart = true;
                }
            }
            Ok(Some(exit)) => {
                problems.push(format!("the server exited ({exit}); restarted it"));
                restart = true;
            }
            Err(e) => {
                problems.push(format!("cannot tell whether the server runs: {e}"));
                restart = true;
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
        if restart {
            server.kill();
            server = Server::start(&dir, SERVER_ARGS, &[]).await;
        }
    }

    if let Some(kb) = peak_rss_kb(server.child.id()) {
        peak_kb = peak_kb.max(kb);
    }
    if peak_kb >= MAX_PEAK_RSS_KB {
        failures.push(format!(
            "peak RSS {} MiB, limit {} MiB (first exceeded after case {:?})",
            peak_kb / 1024,
            MAX_PEAK_RSS_KB / 1024,
            rss_exceeded_after.unwrap_or("?")
        ));
    }
    eprintln!("hostile: server peak RSS {} MiB", peak_kb / 1024);
    server.stop();
    failures.extend(log_problems(&dir));

    assert!(
        failures.is_empty(),
        "{} problem(s) over {} hostile requests:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A query stopped by the timeout must stop using CPU: the answer comes at the timeout,
/// the query threads are free again right after, and the process's CPU time stands still.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stops_cpu_work() {
    let timeout = Duration::from_secs(2);
    let (_tmp, dir) = tempdir();
    // The samples cap is out of the way, so only the timeout can stop the query.
    let mut server = Server::start(
        &dir,
        &["--query-timeout", "2s", "--query-max-samples", "2000000000"],
        &[],
    )
    .await;
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("client");
    let pid = server.child.id();

    // CPU-heavy, little memory: the innermost subquery is 3 days at 1 s (259,200 points),
    // and each outer max_over_time scans an 86,400-point window per step, ~2e10 steps of
    // work in all — far beyond 2 s. The SQL one is a recursive CTE that never ends.
    let heavy = "max_over_time(max_over_time(max_over_time(vector(1)[1d:1s])[1d:1s])[1d:1s])";
    let endless_cte =
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM t) SELECT count(*) FROM t";
    // A cross join, which DataFusion runs in a loop that never awaits (with a filter its
    // nested-loop join yields on its own).
    seed(&client, &server.url, now_ms()).await;
    let cross_join = "SELECT count(*) FROM samples a, samples b, samples c";
    for (path, query) in [
        ("/api/v1/query", heavy),
        ("/api/v1/sql", endless_cte),
        ("/api/v1/sql", cross_join),
    ] {
        stops_after_timeout(&client, &server.url, pid, timeout, path, query).await;
    }

    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "the server exited"
    );
    server.stop();
    let problems = log_problems(&dir);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Sends a query that only the timeout can stop; checks it is refused in time, that the
/// query threads are free right after, and that no CPU is burnt on it afterwards.
async fn stops_after_timeout(
    client: &reqwest::Client,
    url: &str,
    pid: u32,
    timeout: Duration,
    path: &str,
    query: &str,
) {
    let started = Instant::now();
    let r = client
        .get(format!("{url}{path}"))
        .query(&[("query", query)])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: no answer to the heavy query: {e:?}"));
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    let answered = Instant::now();
    let elapsed = answered - started;
    assert!(
        status != 200,
        "the heavy query finished in {elapsed:.1?} before the 2 s timeout; \
         this test needs a heavier query"
    );
    assert!(
        elapsed < timeout + MARGIN,
        "timed-out query answered after {elapsed:.1?}"
    );
    assert!(
        status == 503 || status == 422,
        "status {status}, want 503 (timeout) or 422: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["status"], "error", "{body}");
    let want_type = if status == 503 {
        "timeout"
    } else {
        "execution"
    };
    assert_eq!(v["errorType"], want_type, "{body}");

    // The query threads are free: a trivial query answers at once.
    let started = Instant::now();
    let r = client
        .get(format!("{url}/api/v1/query"))
        .query(&[("query", "vector(1)")])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("vector(1) got no answer within 5 s after the timeout: {e:?}"));
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "vector(1) after the timeout: {body}");
    assert!(
        elapsed < Duration::from_secs(5),
        "vector(1) took {elapsed:.1?}"
    );

    // The work stopped: from 3 s after the timed-out answer, 3 more seconds cost under
    // 1 s of CPU (100 ticks at 100 ticks/s).
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(answered.elapsed())).await;
    let before = cpu_ticks(pid).expect("read /proc/<pid>/stat");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = cpu_ticks(pid).expect("read /proc/<pid>/stat");
    assert!(
        after.saturating_sub(before) < 100,
        "{path}: the server used {} ticks (1/100 s) of CPU in 3 s after the query timed out: \
         the work runs on in the background",
        after.saturating_sub(before)
    );
}

/// A client that gives up takes its query with it, and writes are acknowledged at once
/// while heavy queries occupy every query thread (they run on their own runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_going_away_stops_the_query_and_writes_are_not_delayed() {
    let (_tmp, dir) = tempdir();
    // Only the client going away can stop these queries (timeout 1 h, no samples cap).
    let mut server = Server::start(
        &dir,
        &["--query-timeout", "1h", "--query-max-samples", "2000000000"],
        &[],
    )
    .await;
    let pid = server.child.id();
    let heavy = "max_over_time(max_over_time(max_over_time(vector(1)[1d:1s])[1d:1s])[1d:1s])";
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let queries: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (impatient.clone(), server.url.clone());
            tokio::spawn(async move {
                c.get(format!("{url}/api/v1/query"))
                    .query(&[("query", heavy)])
                    .send()
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Both query threads are busy now; remote writes must not wait for them.
    let client = reqwest::Client::new();
    let now = now_ms();
    let mut slowest = Duration::ZERO;
    for k in 0..5 {
        let body = encode(&batch(vec![(
            labels(&[("__name__", "quiver_busy"), ("k", &k.to_string())]),
            vec![(now, 1.0)],
        )]));
        let started = Instant::now();
        let r = post_write(&client, &server.url, body).await;
        assert_eq!(r.status(), 204);
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest remote write during heavy queries: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a remote write took {slowest:?} while queries ran"
    );
    for q in queries {
        assert!(
            q.await.unwrap().is_err(),
            "the heavy query answered before the client gave up"
        );
    }
    // The clients went away 2 s in; from 3 s later, 3 s cost under 1 s of CPU.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = cpu_ticks(pid).expect("read /proc/<pid>/stat");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = cpu_ticks(pid).expect("read /proc/<pid>/stat");
    assert!(
        after.saturating_sub(before) < 100,
        "{} ticks of CPU in 3 s after the clients went away: the queries run on",
        after.saturating_sub(before)
    );
    server.stop();
}

/// Every configurable bound, set low, answers as documented in docs/operations.md and
/// names its flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_are_enforced_and_named() {
    let (_tmp, dir) = tempdir();
    let mut server = Server::start(
        &dir,
        &[
            "--query-max-samples",
            "1000",
            "--query-max-length",
            "200",
            "--query-max-depth",
            "8",
            "--sql-memory-limit",
            "200000",
            "--sql-max-rows",
            "10",
            "--remote-read-max-bytes",
            "200",
        ],
        &[],
    )
    .await;
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("client");
    let now = now_ms();
    seed(&client, &server.url, now).await;
    let get = |path: &'static str, q: String| {
        let (c, url) = (client.clone(), server.url.clone());
        async move {
            let r = c
                .get(format!("{url}{path}"))
                .query(&[("query", q.as_str())])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "length",
            QUERY,
            format!("vector({})", "1".repeat(200)),
            400,
            "--query-max-length",
        ),
        (
            "depth",
            QUERY,
            nested("(", "1", ")", 9),
            400,
            "--query-max-depth",
        ),
        ("depth ok", QUERY, nested("(", "1", ")", 6), 200, ""),
        // 200 series × 120 samples loaded.
        (
            "samples",
            QUERY,
            "count_over_time(quiver_hostile[1h])".into(),
            422,
            "too many samples",
        ),
        // Nothing loaded, but 3,600 points at the subquery's steps.
        (
            "points",
            QUERY,
            "max_over_time(vector(1)[1h:1s])".into(),
            422,
            "too many samples",
        ),
        (
            "points ok",
            QUERY,
            "max_over_time(vector(1)[10m:1s])".into(),
            200,
            "",
        ),
        (
            "sql samples",
            SQL,
            "SELECT count(*) FROM samples".into(),
            422,
            "--query-max-samples",
        ),
        (
            "sql rows",
            SQL,
            "SELECT * FROM samples WHERE series_id = 1".into(),
            422,
            "--sql-max-rows",
        ),
        (
            "sql memory",
            SQL,
            "SELECT count(DISTINCT value) FROM range(1000000)".into(),
            422,
            "Resources exhausted",
        ),
    ];
    let mut problems = Vec::new();
    for (name, path, q, want, needle) in cases {
        let (status, body) = get(path, q).await;
        if status != want || !body.contains(needle) {
            problems.push(format!("{name}: {status} {body}"));
        }
    }
    // Remote read: a request over --remote-read-max-bytes, and one over the samples cap.
    for (name, body, want, needle) in [
        (
            "read bytes",
            read_everything(40),
            413,
            "--remote-read-max-bytes",
        ),
        ("read samples", read_everything(1), 400, "sample limit"),
    ] {
        let r = client
            .post(format!("{}{READ}", server.url))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        if status != want || !text.contains(needle) {
            problems.push(format!("{name}: {status} {text}"));
        }
    }
    server.stop();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
