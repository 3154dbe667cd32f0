//! Authentication, authorization, tenants and enforced matchers over real HTTP, with Quiver
//! started from `deploy/quiver-auth.example.toml` (the documented example config).

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use prost::Message;
use quiver::ingest::prompb;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/quiver-auth.example.toml"
);
/// The example config's HS256 secret, issuer and audience.
const SECRET: &str = "example-secret-replace-me-with-32-bytes-or-more";
const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "quiver";

fn now_s() -> i64 {
    now_ms() / 1000
}

/// A token signed with `secret`, with defaults for iss/aud/exp that `claims` may override.
fn token_with(claims: Value, secret: &str) -> String {
    let mut c = json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now_s() + 600, "sub": "test"});
    c.as_object_mut()
        .unwrap()
        .extend(claims.as_object().unwrap().clone());
    encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn token(claims: Value) -> String {
    token_with(claims, SECRET)
}

fn reader(tenant: &str) -> String {
    token(json!({"tenant": tenant, "permissions": ["read"]}))
}

fn writer(tenant: &str) -> String {
    token(json!({"tenant": tenant, "permissions": ["write"]}))
}

async fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let (tmp, dir) = tempdir();
    let mut args = vec!["--config", CONFIG];
    args.extend_from_slice(extra);
    let server = Server::start(&dir, &args, &[]).await;
    (tmp, server)
}

/// Remote write with metadata, as `who` (a bearer token).
async fn write(
    url: &str,
    who: &str,
    series: &[(&[(&str, &str)], f64)],
    family: &str,
) -> StatusCode {
    let t = now_ms() - 60_000;
    let req = prompb::WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, v)| prompb::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| prompb::Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: (0..4)
                    .map(|k| prompb::Sample {
                        value: v + k as f64,
                        timestamp: t + k * 15_000,
                    })
                    .collect(),
                exemplars: vec![],
                histograms: vec![],
            })
            .collect(),
        metadata: vec![prompb::MetricMetadata {
            r#type: prompb::MetricType::Gauge as i32,
            metric_family_name: family.into(),
            help: format!("{family} help"),
            unit: String::new(),
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    Client::new()
        .post(format!("{url}/api/v1/write"))
        .bearer_auth(who)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// Tenants "a" and "b", each with its own metric, label name and metadata.
async fn two_tenants() -> (tempfile::TempDir, Server) {
    let (tmp, server) = start(&[]).await;
    let a: &[(&str, &str)] = &[("__name__", "tenant_a_metric"), ("job", "a")];
    let b: &[(&str, &str)] = &[
        ("__name__", "tenant_b_secret"),
        ("job", "b"),
        ("b_only_label", "x"),
    ];
    assert_eq!(
        write(&server.url, &writer("a"), &[(a, 1.0)], "tenant_a_metric").await,
        204
    );
    assert_eq!(
        write(&server.url, &writer("b"), &[(b, 2.0)], "tenant_b_secret").await,
        204
    );
    (tmp, server)
}

async fn get(rb: RequestBuilder) -> (StatusCode, String) {
    let r = rb.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// GET `path` with `query` parameters as a bearer `who`; asserts 200 and returns the body.
async fn read_ok(url: &str, who: &str, path: &str, query: &[(&str, &str)]) -> String {
    let (s, body) = get(Client::new()
        .get(format!("{url}{path}"))
        .query(query)
        .bearer_auth(who))
    .await;
    assert_eq!(s, 200, "{path}: {body}");
    body
}

/// Tenant a's reader sees its own data and none of b's through `path`; b's reader sees b's
/// (so the check would notice if the endpoint showed nothing at all).
async fn isolated(path: &str, query: &[(&str, &str)]) {
    let (_tmp, server) = two_tenants().await;
    let as_a = read_ok(&server.url, &reader("a"), path, query).await;
    assert!(
        as_a.contains("tenant_a_metric") || path.contains("exemplars"),
        "{path}: {as_a}"
    );
    assert!(!as_a.contains("tenant_b"), "{path} leaks tenant b: {as_a}");
    assert!(
        !as_a.contains("b_only_label"),
        "{path} leaks tenant b: {as_a}"
    );
    let as_b = read_ok(&server.url, &reader("b"), path, query).await;
    assert!(!as_b.contains("tenant_a"), "{path} leaks tenant a: {as_b}");
    if !path.contains("exemplars") {
        assert!(
            as_b.contains("tenant_b_secret") || as_b.contains("b_only_label"),
            "{path}: {as_b}"
        );
    }
}

const ALL: &str = r#"{__name__=~".+"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_query() {
    isolated("/api/v1/query", &[("query", ALL)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_query_range() {
    let (end, start) = (now_s().to_string(), (now_s() - 600).to_string());
    isolated(
        "/api/v1/query_range",
        &[
            ("query", ALL),
            ("start", &start),
            ("end", &end),
            ("step", "15"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_series() {
    isolated("/api/v1/series", &[("match[]", ALL)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_labels() {
    // Label names: b's unique label must not show; a's reader sees `job` and `__name__`.
    let (_tmp, server) = two_tenants().await;
    let as_a = read_ok(&server.url, &reader("a"), "/api/v1/labels", &[]).await;
    assert!(
        as_a.contains("job") && !as_a.contains("b_only_label"),
        "{as_a}"
    );
    let as_b = read_ok(&server.url, &reader("b"), "/api/v1/labels", &[]).await;
    assert!(as_b.contains("b_only_label"), "{as_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_label_values() {
    isolated("/api/v1/label/__name__/values", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_metadata() {
    isolated("/api/v1/metadata", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_exemplars() {
    isolated("/api/v1/query_exemplars", &[("query", "tenant_b_secret")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_status_tsdb() {
    isolated("/api/v1/status/tsdb", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_sql() {
    isolated(
        "/api/v1/sql",
        &[(
            "query",
            "SELECT DISTINCT metric FROM series ORDER BY metric",
        )],
    )
    .await;
}

/// Remote read of everything, as `who`; the metric names returned.
async fn remote_read_names(url: &str, who: &str, matchers: &[(i32, &str, &str)]) -> Vec<String> {
    let req = prompb::ReadRequest {
        queries: vec![prompb::Query {
            start_timestamp_ms: now_ms() - 3_600_000,
            end_timestamp_ms: now_ms() + 60_000,
            matchers: matchers
                .iter()
                .map(|(t, n, v)| prompb::LabelMatcher {
                    r#type: *t,
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let r = Client::new()
        .post(format!("{url}/api/v1/read"))
        .bearer_auth(who)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&r.bytes().await.unwrap())
        .unwrap();
    let resp = prompb::ReadResponse::decode(raw.as_slice()).unwrap();
    let mut names: Vec<String> = resp.results[0]
        .timeseries
        .iter()
        .flat_map(|ts| ts.labels.iter())
        .map(|l| format!("{}={}", l.name, l.value))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_remote_read() {
    let (_tmp, server) = two_tenants().await;
    let re = prompb::MatcherType::Re as i32;
    let a = remote_read_names(&server.url, &reader("a"), &[(re, "__name__", ".+")]).await;
    assert!(a.contains(&"__name__=tenant_a_metric".to_string()), "{a:?}");
    assert!(!a.iter().any(|l| l.contains("tenant_b")), "{a:?}");
    let b = remote_read_names(&server.url, &reader("b"), &[(re, "__name__", ".+")]).await;
    assert!(b.contains(&"__name__=tenant_b_secret".to_string()), "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_get_401_on_read_and_write_paths() {
    let (_tmp, server) = start(&[]).await;
    let c = Client::new();
    for (method, path) in [
        ("GET", "/api/v1/query?query=up"),
        ("GET", "/api/v1/series?match[]=up"),
        ("GET", "/api/v1/labels"),
        ("POST", "/api/v1/sql"),
        ("POST", "/api/v1/read"),
        ("POST", "/api/v1/write"),
        ("POST", "/api/v1/import/prometheus"),
    ] {
        let r = c
            .request(method.parse().unwrap(), format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
        assert!(challenges.len() == 2, "{path}: {challenges:?}");
        // In the route's error format: the envelope on the query API, text on remote
        // read, remote write and import (what their clients read).
        let route = path.split('?').next().unwrap();
        let text = r.text().await.unwrap();
        match quiver::api::routes::error_format(route) {
            quiver::api::error::Format::Json => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["status"], "error");
                assert_eq!(v["errorType"], "unauthorized");
            }
            quiver::api::error::Format::Text => {
                assert_eq!(text, "authentication required\n", "{path}")
            }
        }
    }
    // Health and readiness stay open (load balancers, orchestrators).
    let r = c
        .get(format!("{}/-/ready", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401() {
    let (_tmp, server) = start(&[]).await;
    let good = json!({"tenant": "a", "permissions": ["read"]});
    let with = |extra: Value| {
        let mut c = good.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    for (name, t) in [
        ("expired", token(with(json!({"exp": now_s() - 3600})))),
        (
            "wrong audience",
            token(with(json!({"aud": "someone-else"}))),
        ),
        (
            "wrong issuer",
            token(with(json!({"iss": "https://evil.example.com/"}))),
        ),
        ("not yet valid", token(with(json!({"nbf": now_s() + 3600})))),
        (
            "badly signed",
            token_with(good.clone(), "another-secret-that-is-also-32-bytes-long"),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let (s, body) = get(Client::new()
            .get(format!("{}/api/v1/query", server.url))
            .query(&[("query", "1")])
            .bearer_auth(&t))
        .await;
        assert_eq!(s, 401, "{name}: {body}");
    }
    // The same claims, well signed, pass.
    let (s, _) = get(Client::new()
        .get(format!("{}/api/v1/query", server.url))
        .query(&[("query", "1")])
        .bearer_auth(token(good)))
    .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_enforced() {
    let (_tmp, server) = start(&[]).await;
    let m: &[(&str, &str)] = &[("__name__", "perm_metric")];
    // A read-only token cannot write; a write-only token cannot read.
    assert_eq!(
        write(&server.url, &reader("a"), &[(m, 1.0)], "perm_metric").await,
        403
    );
    assert_eq!(
        write(&server.url, &writer("a"), &[(m, 1.0)], "perm_metric").await,
        204
    );
    let (s, body) = get(Client::new()
        .get(format!("{}/api/v1/query", server.url))
        .query(&[("query", "perm_metric")])
        .bearer_auth(writer("a")))
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("\"errorType\":\"forbidden\""), "{body}");
    // Admin-only status endpoints.
    let url = format!("{}/api/v1/status/config", server.url);
    let (s, _) = get(Client::new().get(&url).bearer_auth(reader("a"))).await;
    assert_eq!(s, 403);
    let admin = token(json!({"permissions": ["read", "admin"]}));
    let (s, _) = get(Client::new().get(&url).bearer_auth(admin)).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_users_and_the_tenant_header() {
    let (_tmp, server) = start(&[]).await;
    let c = Client::new();
    let text = format!("basic_metric{{job=\"x\"}} 1 {}\n", now_ms() - 60_000);
    let import = |user: &str, pass: &str, tenant: Option<&str>| {
        let mut rb = c
            .post(format!("{}/api/v1/import/prometheus", server.url))
            .basic_auth(user, Some(pass))
            .body(text.clone());
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        rb
    };
    let (s, _) = get(import("remote-write", "wrong", None)).await;
    assert_eq!(s, 401);
    // The remote-write user may choose any tenant.
    let (s, body) = get(import("remote-write", "remote-write-pass", Some("team-a"))).await;
    assert_eq!(s, 204, "{body}");
    // Tenant a's reader may not switch to team-a with the header.
    let (s, _) = get(c
        .get(format!("{}/api/v1/query", server.url))
        .query(&[("query", "basic_metric")])
        .header("X-Scope-OrgID", "team-a")
        .bearer_auth(reader("a")))
    .await;
    assert_eq!(s, 403);
    // The admin may; and the grafana user (tenant team-a) sees nothing: its enforced
    // matchers require a team-a-* namespace, which this series lacks.
    let q = |rb: RequestBuilder| rb.query(&[("query", "count(basic_metric)")]);
    let (s, body) = get(q(c
        .get(format!("{}/api/v1/query", server.url))
        .header("X-Scope-OrgID", "team-a")
        .basic_auth("admin", Some("admin-pass"))))
    .await;
    assert_eq!(s, 200);
    assert!(body.contains("\"1\""), "{body}");
    let (s, body) = get(q(c
        .get(format!("{}/api/v1/query", server.url))
        .basic_auth("grafana", Some("grafana-pass"))))
    .await;
    assert_eq!(s, 200);
    assert!(body.contains("\"result\":[]"), "{body}");
}

/// Tenant "t" with series in namespaces team-a-x and team-b-y.
async fn namespaces() -> (tempfile::TempDir, Server) {
    let (tmp, server) = start(&[]).await;
    let a: &[(&str, &str)] = &[("__name__", "team_metric"), ("namespace", "team-a-x")];
    let b: &[(&str, &str)] = &[("__name__", "team_metric"), ("namespace", "team-b-y")];
    let b2: &[(&str, &str)] = &[("__name__", "team_b_only"), ("namespace", "team-b-y")];
    assert_eq!(
        write(
            &server.url,
            &writer("t"),
            &[(a, 1.0), (b, 100.0), (b2, 7.0)],
            "team_metric"
        )
        .await,
        204
    );
    (tmp, server)
}

fn team_a_token() -> String {
    token(
        json!({"tenant": "t", "permissions": ["read"], "matchers": [r#"{namespace=~"team-a-.*"}"#]}),
    )
}

async fn instant(url: &str, who: &str, q: &str) -> Value {
    let body = read_ok(url, who, "/api/v1/query", &[("query", q)]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_matchers_cannot_be_escaped_in_promql() {
    let (_tmp, server) = namespaces().await;
    let (url, t) = (&server.url, team_a_token());
    let unrestricted = reader("t");
    // Sanity: without enforced matchers the team-b series are there.
    assert_eq!(
        instant(url, &unrestricted, ALL)
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
    for q in [
        ALL,
        r#"team_metric{namespace="team-b-y"} or team_metric"#,
        r#"team_b_only or on() vector(0)"#,
        r#"label_replace(team_metric, "namespace", "team-a-fake", "namespace", ".*")"#,
        r#"sum by (namespace) ({__name__=~"team_.*"})"#,
        r#"max_over_time({namespace=~".+"}[10m])"#,
        r#"team_metric + on() group_left sum(team_b_only)"#,
        r#"rate(team_metric[5m]) or team_b_only offset 1m"#,
    ] {
        let r = instant(url, &t, q).await.to_string();
        assert!(!r.contains("team-b-y"), "{q} escaped: {r}");
        assert!(!r.contains("\"100"), "{q} shows team-b's value: {r}");
        assert!(!r.contains("team_b_only"), "{q} escaped: {r}");
        assert!(!r.contains("\"7\""), "{q} shows team_b_only's value: {r}");
    }
    // absent() cannot probe for team-b's series: they look absent, as for any name.
    let probe = r#"absent(team_metric{namespace="team-b-y"})"#;
    assert_eq!(instant(url, &unrestricted, probe).await, json!([]));
    assert_eq!(instant(url, &t, probe).await.as_array().unwrap().len(), 1);
    assert_eq!(
        instant(url, &unrestricted, "absent(team_b_only)").await,
        json!([])
    );
    assert_eq!(
        instant(url, &t, "absent(team_b_only)")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_matchers_cannot_be_escaped_with_match_params() {
    let (_tmp, server) = namespaces().await;
    let (url, t) = (&server.url, team_a_token());
    for (path, query) in [
        (
            "/api/v1/series",
            vec![("match[]", r#"{namespace="team-b-y"}"#)],
        ),
        ("/api/v1/series", vec![("match[]", ALL)]),
        ("/api/v1/labels", vec![("match[]", r#"{namespace=~".+"}"#)]),
        ("/api/v1/label/namespace/values", vec![]),
        ("/api/v1/label/__name__/values", vec![("match[]", ALL)]),
        ("/api/v1/metadata", vec![]),
        ("/api/v1/status/tsdb", vec![]),
    ] {
        let body = read_ok(url, &t, path, &query).await;
        assert!(
            !body.contains("team-b-y") && !body.contains("team_b_only"),
            "{path} {query:?}: {body}"
        );
    }
    let values = read_ok(url, &t, "/api/v1/label/namespace/values", &[]).await;
    assert!(values.contains("team-a-x"), "{values}");
    let re = prompb::MatcherType::Re as i32;
    let names = remote_read_names(url, &t, &[(re, "namespace", ".+")]).await;
    assert_eq!(names, vec!["__name__=team_metric", "namespace=team-a-x"]);
}

/// `/api/v1/explain?analyze=1` runs the plan: under the caller's enforced matchers, like
/// any query (the plan's leaves name only the series the caller may read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_matchers_bound_explain_analyze() {
    let (_tmp, server) = namespaces().await;
    let url = &server.url;
    let series = |who: String| async move {
        let body = read_ok(
            url,
            &who,
            "/api/v1/explain",
            &[
                ("query", "sum by (namespace) (team_metric)"),
                ("analyze", "1"),
            ],
        )
        .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["planned"], true, "{body}");
        let text = v["data"]["text"].as_str().unwrap();
        // The leaf itself selects only what the caller may read.
        let leaf = text.contains("VectorSelectExec: team_metric, series=1,");
        // The server times the answer's JSON encoding as the last phase.
        let phases = v["data"]["run"]["phases"].as_array().unwrap();
        assert_eq!(phases.last().unwrap()["name"], "json", "{body}");
        assert!(text.contains(", json "), "{text}");
        (v["data"]["run"]["series"].as_u64().unwrap(), leaf)
    };
    assert_eq!(series(reader("t")).await, (2, false));
    assert_eq!(series(team_a_token()).await, (1, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_matchers_cannot_be_escaped_in_sql() {
    let (_tmp, server) = namespaces().await;
    let (url, t) = (&server.url, team_a_token());
    for q in [
        "SELECT * FROM series",
        "SELECT count(*) AS n, max(value) AS top FROM samples",
        "SELECT s.labels['namespace'] AS ns, v.value FROM samples v JOIN series s ON s.series_id = v.series_id",
        "SELECT * FROM samples_labeled",
        "SELECT * FROM samples WHERE series_id IN (0, 1, 2, 3)",
    ] {
        let body = read_ok(url, &t, "/api/v1/sql", &[("query", q)]).await;
        assert!(
            !body.contains("team-b-y") && !body.contains("team_b_only"),
            "{q}: {body}"
        );
        assert!(
            !body.contains("100.0") && !body.contains("\"top\":100"),
            "{q}: {body}"
        );
    }
    let body = read_ok(
        url,
        &t,
        "/api/v1/sql",
        &[("query", "SELECT count(*) AS n FROM samples")],
    )
    .await;
    assert!(body.contains("\"n\":4"), "team-a-x has 4 samples: {body}");
    // Only queries: no DDL that could read server files, no writes.
    for q in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE VIEW v AS SELECT * FROM samples",
        "COPY (SELECT 1) TO '/tmp/quiver-sql-escape.csv'",
    ] {
        let (s, body) = get(Client::new()
            .get(format!("{url}/api/v1/sql"))
            .query(&[("query", q)])
            .bearer_auth(&t))
        .await;
        assert_eq!(s, 400, "{q}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_fail_with_the_error_envelope_and_the_server_keeps_serving() {
    let (_tmp, server) = start(&[
        "--query-max-samples",
        "100",
        "--max-concurrent-queries",
        "1",
    ])
    .await;
    let url = &server.url;
    let w = writer("t");
    let t = reader("t");
    let series: Vec<Vec<(&str, String)>> = (0..40)
        .map(|i| {
            vec![
                ("__name__", "load_metric".to_string()),
                ("i", i.to_string()),
            ]
        })
        .collect();
    let refs: Vec<Vec<(&str, &str)>> = series
        .iter()
        .map(|s| s.iter().map(|(n, v)| (*n, v.as_str())).collect())
        .collect();
    let payload: Vec<(&[(&str, &str)], f64)> = refs.iter().map(|s| (s.as_slice(), 1.0)).collect();
    assert_eq!(write(url, &w, &payload, "load_metric").await, 204);

    // 40 series × 4 samples > 100: the samples limit.
    let (s, body) = get(Client::new()
        .get(format!("{url}/api/v1/query"))
        .query(&[("query", "sum(count_over_time(load_metric[10m]))")])
        .bearer_auth(&t))
    .await;
    assert_eq!(s, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errorType"], "execution", "{body}");

    // A flood beyond the concurrency limit (1): some get 429, none anything else but 200.
    // Its own server: every range query holds more than 100 points (series × steps), which
    // the first one refuses, as Prometheus counts them.
    let (_tmp2, server) = start(&["--max-concurrent-queries", "1"]).await;
    let url = &server.url;
    assert_eq!(write(url, &w, &payload, "load_metric").await, 204);
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (url, t) = (url.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let r = Client::new()
                .get(format!("{url}/api/v1/query_range"))
                .query(&[
                    ("query", r#"count(load_metric{i=~"1.?"})"#),
                    ("start", &(now_s() - 3600).to_string()),
                    ("end", &now_s().to_string()),
                    ("step", "1"),
                    ("nocache", "1"),
                ])
                .bearer_auth(&t)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.text().await.unwrap())
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for task in tasks {
        let (s, body) = task.await.unwrap();
        if s == 429 {
            assert!(
                body.contains("\"errorType\":\"too_many_requests\""),
                "{body}"
            );
        }
        *counts.entry(s).or_insert(0) += 1;
    }
    assert!(counts.keys().all(|s| *s == 200 || *s == 429), "{counts:?}");
    assert!(
        counts.contains_key(&429),
        "no request was limited: {counts:?}"
    );
    // Still serving.
    let r = instant(url, &t, r#"count(load_metric{i=~"1.?"})"#).await;
    assert_eq!(r[0]["value"][1], "11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_rate_limit_answers_429() {
    let (_tmp, server) = start(&["--write-samples-per-second", "10"]).await;
    let m: Vec<Vec<(&str, String)>> = (0..50)
        .map(|i| vec![("__name__", "rated".to_string()), ("i", i.to_string())])
        .collect();
    let refs: Vec<Vec<(&str, &str)>> = m
        .iter()
        .map(|s| s.iter().map(|(n, v)| (*n, v.as_str())).collect())
        .collect();
    let payload: Vec<(&[(&str, &str)], f64)> = refs.iter().map(|s| (s.as_slice(), 1.0)).collect();
    // 200 samples against a burst of 100.
    assert_eq!(
        write(&server.url, &writer("t"), &payload, "rated").await,
        429
    );
    // Another tenant has its own bucket.
    assert_eq!(
        write(&server.url, &writer("u"), &payload[..20], "rated").await,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_security_headers_and_a_request_id() {
    let (_tmp, server) = start(&[]).await;
    let r = Client::new()
        .get(format!("{}/api/v1/query", server.url))
        .query(&[("query", "1")])
        .bearer_auth(reader("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert!(!h["x-request-id"].is_empty());
}

/// Issue 23: a principal's enforced matchers bound what it writes as well as what it
/// reads, on every ingest path — a request with one series outside them is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_matchers_bound_writes_on_every_ingest_path() {
    let (_tmp, server) = start(&[]).await;
    let c = Client::new();
    let team_a = token(json!({
        "tenant": "a",
        "permissions": ["read", "write"],
        "matchers": ["{namespace=~\"team-a-.*\"}"],
    }));
    let inside: &[(&str, &str)] = &[("__name__", "scoped_write"), ("namespace", "team-a-web")];
    let outside: &[(&str, &str)] = &[("__name__", "scoped_write"), ("namespace", "team-b")];
    // Remote write: one series outside refuses the request whole.
    assert_eq!(
        write(
            &server.url,
            &team_a,
            &[(inside, 1.0), (outside, 2.0)],
            "scoped_write"
        )
        .await,
        403
    );
    assert_eq!(
        write(&server.url, &team_a, &[(inside, 1.0)], "scoped_write").await,
        204
    );
    // OTLP/JSON: the data point's attributes become the labels.
    let otlp = |ns: &str| {
        json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
            "name": "scoped_otlp",
            "gauge": {"dataPoints": [{
                "timeUnixNano": ((now_ms() - 30_000) * 1_000_000).to_string(),
                "asDouble": 1.0,
                "attributes": [{"key": "namespace", "value": {"stringValue": ns}}]
            }]}
        }]}]}]})
        .to_string()
    };
    for (ns, want) in [("team-b", 403), ("team-a-web", 200)] {
        let r = c
            .post(format!("{}/api/v1/otlp/v1/metrics", server.url))
            .bearer_auth(&team_a)
            .header("Content-Type", "application/json")
            .body(otlp(ns))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "OTLP {ns}: {}", r.text().await.unwrap());
    }
    // Import.
    for (ns, want) in [("team-b", 403), ("team-a-web", 204)] {
        let r = c
            .post(format!("{}/api/v1/import/prometheus", server.url))
            .bearer_auth(&team_a)
            .body(format!(
                "scoped_import{{namespace=\"{ns}\"}} 1 {}\n",
                now_ms() - 30_000
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "import {ns}: {}", r.text().await.unwrap());
    }
    // Nothing outside was stored: an unrestricted reader of tenant "a" sees only team-a.
    let (s, body) = get(c
        .get(format!("{}/api/v1/series", server.url))
        .query(&[("match[]", "{__name__=~\"scoped_.*\"}")])
        .bearer_auth(reader("a")))
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(!body.contains("team-b"), "{body}");
    assert_eq!(body.matches("team-a-web").count(), 3, "{body}");
}
