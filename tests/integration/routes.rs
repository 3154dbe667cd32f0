//! Acceptance (issue 23, item 1): every route has a declared permission, and the example
//! auth config's read-only and write-only users get exactly what the table says on every
//! route of the running server.

use std::io::Write as _;
use std::path::Path;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use quiver::api::routes::{self, Need};
use quiver::auth::Permission;
use quiver::ingest::{MetricMetadata, WriteBatch, remote_write_v2};
use reqwest::{Client, StatusCode};

use crate::support::*;

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/quiver-auth.example.toml"
);
/// The example config's users.
const READ_ONLY: (&str, &str) = ("grafana", "grafana-pass");
const WRITE_ONLY: (&str, &str) = ("remote-write", "remote-write-pass");

/// Source files under `src/` with `.route(`, `.nest(`, `.merge(` or `.route_service(` outside
/// `src/api/routes.rs`'s table and the one fold in `api::router` (test modules excluded).
fn routes_outside_the_table(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            routes_outside_the_table(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("api/routes.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Test modules may build routers of their own; files without a router have no
        // routes (`.merge(` is common elsewhere).
        let text = text.split("#[cfg(test)]").next().unwrap();
        if !text.contains("Router") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let fold = line.contains(".route(route.path, route.handler)");
            let adds = [
                ".route(",
                ".nest(",
                ".merge(",
                ".route_service(",
                ".nest_service(",
            ]
            .iter()
            .any(|m| line.contains(m));
            if adds && !fold {
                out.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
}

#[test]
fn every_route_is_declared_in_the_permission_table() {
    let mut stray = Vec::new();
    routes_outside_the_table(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut stray,
    );
    assert!(
        stray.is_empty(),
        "routes added outside src/api/routes.rs (declare them in routes::table() with their \
         permission):\n{}",
        stray.join("\n")
    );
}

#[test]
fn security_doc_lists_every_route_with_its_permission() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    let begin = "<!-- routes:begin (generated from src/api/routes.rs; a test checks it) -->\n";
    let end = "<!-- routes:end -->";
    let start = doc
        .find(begin)
        .expect("routes:begin marker in docs/security.md")
        + begin.len();
    let stop = doc[start..].find(end).expect("routes:end marker") + start;
    let want = routes::permission_table_markdown();
    assert_eq!(
        &doc[start..stop],
        want,
        "docs/security.md's route table is out of date; replace it with:\n{want}"
    );
}

fn request_v1() -> Vec<u8> {
    encode(&batch(vec![(
        labels(&[("__name__", "routes_probe"), ("job", "routes")]),
        vec![(now_ms() - 30_000, 1.0)],
    )]))
}

fn request_v2() -> Vec<u8> {
    let b = batch(vec![(
        labels(&[("__name__", "routes_probe_v2"), ("job", "routes")]),
        vec![(now_ms() - 30_000, 2.0)],
    )]);
    remote_write_v2::encode(&WriteBatch {
        metadata: vec![MetricMetadata {
            metric_family_name: "routes_probe_v2".into(),
            metric_type: "gauge".into(),
            help: "probe".into(),
            unit: String::new(),
            carriers: vec![],
        }],
        ..b
    })
}

fn otlp_json() -> String {
    let t = (now_ms() - 30_000) * 1_000_000;
    serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "routes"}}]},
        "scopeMetrics": [{"metrics": [{
            "name": "routes_probe_otlp",
            "gauge": {"dataPoints": [{"timeUnixNano": t.to_string(), "asDouble": 3.0}]}
        }]}]
    }]})
    .to_string()
}

fn otlp_protobuf() -> Vec<u8> {
    let req: ExportMetricsServiceRequest = serde_json::from_str(&otlp_json()).unwrap();
    req.encode_to_vec()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Every valid body a write route takes: (content type, content encoding, body).
fn write_bodies(path: &str) -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    match path {
        "/api/v1/write" => vec![
            ("application/x-protobuf", Some("snappy"), request_v1()),
            (
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                Some("snappy"),
                request_v2(),
            ),
        ],
        "/api/v1/otlp/v1/metrics" => vec![
            ("application/x-protobuf", None, otlp_protobuf()),
            ("application/json", None, otlp_json().into_bytes()),
            (
                "application/x-protobuf",
                Some("gzip"),
                gzip(&otlp_protobuf()),
            ),
        ],
        "/api/v1/import/prometheus" => vec![(
            "text/plain",
            None,
            format!(
                "routes_probe_import{{job=\"routes\"}} 4 {}\n",
                now_ms() - 30_000
            )
            .into_bytes(),
        )],
        other => panic!("no example body for the write route {other}: add one here"),
    }
}

async fn send(
    c: &Client,
    url: &str,
    method: &str,
    path: &str,
    who: (&str, &str),
    body: Option<(&str, Option<&str>, Vec<u8>)>,
) -> (StatusCode, String) {
    let path = path.replace("{name}", "job").replace("{*path}", "app.js");
    let mut r = match method {
        "GET" => c.get(format!("{url}{path}")),
        "POST" => c.post(format!("{url}{path}")),
        m => panic!("method {m}"),
    }
    .basic_auth(who.0, Some(who.1));
    if let Some((ct, enc, b)) = body {
        r = r.header("Content-Type", ct).body(b);
        if let Some(e) = enc {
            r = r.header("Content-Encoding", e);
        }
    }
    let resp = r.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// A read-only token as the example config's issuer would sign it.
fn read_only_jwt() -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let claims = serde_json::json!({
        "iss": "https://idp.example.com/",
        "aud": "quiver",
        "exp": now_ms() / 1000 + 600,
        "sub": "reader",
        "permissions": ["read"],
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"example-secret-replace-me-with-32-bytes-or-more"),
    )
    .unwrap()
}

async fn send_bearer(
    c: &Client,
    url: &str,
    method: &str,
    path: &str,
    token: &str,
    (ct, enc, b): (&str, Option<&str>, Vec<u8>),
) -> (StatusCode, String) {
    assert_eq!(method, "POST", "write routes are POST");
    let mut r = c
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .header("Content-Type", ct)
        .body(b);
    if let Some(e) = enc {
        r = r.header("Content-Encoding", e);
    }
    let resp = r.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_write_only_users_get_what_the_table_says() {
    let (_tmp, dir) = tempdir();
    let server = Server::start(&dir, &["--config", CONFIG], &[]).await;
    let c = Client::new();
    let url = &server.url;
    let mut checked = 0;
    for route in routes::table() {
        for method in route.methods {
            match route.need {
                Need::Open => {
                    let (s, _) = send(&c, url, method, route.path, READ_ONLY, None).await;
                    assert_eq!(s, 200, "{method} {} is open", route.path);
                }
                Need::Needs(Permission::Write) => {
                    for body in write_bodies(route.path) {
                        // A read-only bearer token is refused too.
                        let (s, text) = send_bearer(
                            &c,
                            url,
                            method,
                            route.path,
                            &read_only_jwt(),
                            body.clone(),
                        )
                        .await;
                        assert_eq!(s, 403, "read-only JWT on {method} {}: {text}", route.path);
                        let what = format!("{method} {} ({} {:?})", route.path, body.0, body.1);
                        let (s, text) =
                            send(&c, url, method, route.path, READ_ONLY, Some(body.clone())).await;
                        assert_eq!(s, 403, "read-only user on {what}: {text}");
                        let (s, text) =
                            send(&c, url, method, route.path, WRITE_ONLY, Some(body)).await;
                        assert!(s.is_success(), "write-only user on {what}: {s} {text}");
                        checked += 1;
                    }
                }
                Need::Needs(p) => {
                    let (s, text) = send(&c, url, method, route.path, WRITE_ONLY, None).await;
                    assert_eq!(s, 403, "write-only user on {method} {}: {text}", route.path);
                    let (s, text) = send(&c, url, method, route.path, READ_ONLY, None).await;
                    if p == Permission::Admin {
                        assert_eq!(s, 403, "read-only user on {method} {}: {text}", route.path);
                    } else {
                        assert!(
                            s != 401 && s != 403,
                            "read-only user on {method} {}: {s} {text}",
                            route.path
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} route checks ran");
    // What the write-only user sent through every write path is stored (read as admin).
    for name in [
        "routes_probe",
        "routes_probe_v2",
        "routes_probe_otlp",
        "routes_probe_import",
    ] {
        let r = c
            .get(format!("{url}/api/v1/series"))
            .query(&[("match[]", name)])
            .basic_auth("admin", Some("admin-pass"))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            v["data"].as_array().map(Vec::len),
            Some(1),
            "{name} stored once by the write-only user: {v}"
        );
    }
}
