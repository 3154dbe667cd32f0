//! The query page at `/`, driven in a real headless Chromium (issue 28): graph, table,
//! explain, SQL and status against the API's own answers, with authentication on and
//! under a route prefix, keyboard and narrow-window basics. Run with
//! `QUIVER_UI_SCREENSHOTS=docs/ui` to refresh the screenshots in the docs.

use std::collections::BTreeMap;

use reqwest::Client;
use serde_json::{Value, json};

use crate::cluster_kit::wait_for_async;
use crate::support::*;
use crate::webdriver::{self, ARROW_RIGHT, Browser, ENTER, ESCAPE};

const AUTH_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/quiver-auth.example.toml"
);

/// Text exposition of `ui_demo` (a gauge per job and instance) and `ui_demo_total`
/// (counters), a sample every 15 s over the last hour, the last one a minute ago: the
/// instant answer is the same for the next four minutes.
fn demo_data(extra_labels: &[(&str, &str)]) -> String {
    let now = now_ms();
    let extra: String = extra_labels
        .iter()
        .map(|(k, v)| format!(",{k}=\"{v}\""))
        .collect();
    let mut out = String::new();
    for (j, job) in ["api", "web"].iter().enumerate() {
        for inst in 0..(2 + j) {
            let labels = format!("job=\"{job}\",instance=\"host-{inst}:9100\"{extra}");
            let mut c = 0.0;
            for k in 0..240 {
                let t = now - 60_000 - (239 - k) * 15_000;
                c += (inst + 1) as f64 * 3.0 + (k % 7) as f64;
                let g = 10.0 * (j + 1) as f64 + inst as f64 + (k as f64 / 20.0).sin();
                out.push_str(&format!("ui_demo{{{labels}}} {g:.3} {t}\n"));
                out.push_str(&format!("ui_demo_total{{{labels}}} {c} {t}\n"));
            }
        }
    }
    out
}

/// Quiver with the example authentication config, serving under `prefix` (`/quiver`).
async fn with_auth_under(dir: &std::path::Path, prefix: &str) -> Server {
    let args = ["--config", AUTH_CONFIG, "--route-prefix", prefix];
    Server::start_until(dir, &args, &[], "/quiver/-/ready").await
}

async fn import(url: &str, body: String, auth: Option<(&str, &str, &str)>) {
    let mut rb = Client::new()
        .post(format!("{url}/api/v1/import/prometheus"))
        .body(body);
    if let Some((user, pass, tenant)) = auth {
        rb = rb
            .basic_auth(user, Some(pass))
            .header("X-Scope-OrgID", tenant);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
}

/// GET `path` on the API (optionally with basic auth), returning `data`.
async fn api(url: &str, path: &str, params: &[(&str, &str)], user: Option<(&str, &str)>) -> Value {
    let mut rb = Client::new().get(format!("{url}{path}")).query(params);
    if let Some((u, p)) = user {
        rb = rb.basic_auth(u, Some(p));
    }
    let v: Value = rb.send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "success", "{v}");
    v["data"].clone()
}

/// The table view's rows: labels → the value cell's text.
async fn table_rows(b: &Browser) -> BTreeMap<String, String> {
    let rows = b
        .js(
            "return [...document.querySelectorAll('#result-table tbody tr[data-metric]')]
               .map(tr => [tr.dataset.metric, tr.querySelector('td.value').textContent])",
            json!([]),
        )
        .await;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let m: Value = serde_json::from_str(r[0].as_str().unwrap()).unwrap();
            (canonical(&m), r[1].as_str().unwrap().to_string())
        })
        .collect()
}

/// `/api/v1/query`'s vector: labels → value string.
fn vector_rows(data: &Value) -> BTreeMap<String, String> {
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                canonical(&s["metric"]),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn canonical(metric: &Value) -> String {
    let m: BTreeMap<String, String> = serde_json::from_value(metric.clone()).unwrap();
    format!("{m:?}")
}

/// Runs `expr` in the Graph view and waits for the chart: the number of series drawn
/// (uPlot's legend has one row per series besides time).
async fn graph(b: &Browser, expr: &str) -> usize {
    b.click("#view-graph").await;
    b.type_into("#expr", expr).await;
    b.js(
        "document.querySelector('#chart').dataset.series = 'pending'",
        json!([]),
    )
    .await;
    b.keys("#expr", ENTER).await;
    b.wait(
        "the graph",
        "const c = document.querySelector('#chart');
         return c.dataset.series !== 'pending' && document.querySelector('#run').disabled === false
           && (c.dataset.series === '0' || c.querySelector('canvas') !== null)",
    )
    .await;
    let drawn = b
        .js(
            "return document.querySelectorAll('#chart .u-legend tr.u-series').length",
            json!([]),
        )
        .await
        .as_u64()
        .unwrap() as usize;
    let said = b
        .js(
            "return document.querySelector('#chart').dataset.series",
            json!([]),
        )
        .await;
    assert_eq!(said, json!(drawn.saturating_sub(1).to_string()));
    drawn.saturating_sub(1)
}

/// Runs the current expression in the Table view and waits for it.
async fn table(b: &Browser) -> BTreeMap<String, String> {
    // Escape calls off the completion the expression's typing fetched: arriving later, its
    // list would cover the tab (a click there chooses a completion).
    b.keys("#expr", ESCAPE).await;
    b.js(
        "document.querySelector('#result-table tbody').replaceChildren()",
        json!([]),
    )
    .await;
    b.click("#view-table").await;
    b.wait(
        "the table",
        "return document.querySelector('#run').disabled === false
           && document.querySelectorAll('#result-table tbody tr').length > 0",
    )
    .await;
    table_rows(b).await
}

/// Runs `sql` on the SQL tab and returns the table (header, rows as text).
async fn sql_table(b: &Browser) -> (Vec<String>, Vec<Vec<String>>) {
    let v = b
        .wait(
            "the SQL answer",
            "if (document.querySelector('#sql-run').disabled) return null;
             const t = document.querySelector('#sql-table');
             const head = [...t.querySelectorAll('thead th')].map(th => th.textContent);
             const rows = [...t.querySelectorAll('tbody tr')].map(tr => [...tr.children].map(td => td.textContent));
             return head.length ? [head, rows] : null",
        )
        .await;
    let head = serde_json::from_value(v[0].clone()).unwrap();
    let rows = serde_json::from_value(v[1].clone()).unwrap();
    (head, rows)
}

/// The API's SQL answer in the page's text form.
fn sql_as_text(data: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let cols: Vec<String> = serde_json::from_value(data["columns"].clone()).unwrap();
    let rows = data["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| match &r[c] {
                    Value::Null => "NULL".to_string(),
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect()
        })
        .collect();
    (cols, rows)
}

async fn clear_sql_table(b: &Browser) {
    b.js(
        "document.querySelector('#sql-table thead').replaceChildren();
         document.querySelector('#sql-table tbody').replaceChildren()",
        json!([]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_page_in_a_real_browser() {
    if !webdriver::available("query_page_in_a_real_browser") {
        return;
    }
    let (_tmp, dir) = tempdir();
    // Heads flush within seconds, so the status page has blocks to list.
    let server = Server::start(&dir, &["--head-flush-interval", "1s"], &[]).await;
    import(&server.url, demo_data(&[]), None).await;
    let url = &server.url;
    let blocks = || async { api(url, "/api/v1/status/blocks", &[], None).await["blocks"].clone() };
    wait_for_async("a flushed block", 60, || async {
        !blocks().await.as_array().unwrap().is_empty()
    })
    .await;
    let blocks = blocks().await;
    let b = Browser::start(1280, 800).await;
    b.goto(&format!("{url}/")).await;
    b.wait(
        "the page",
        "return window.uPlot && document.querySelector('#expr')",
    )
    .await;

    // Completion offers metric names from the API.
    b.type_into("#expr", "ui_de").await;
    let offered = b
        .wait(
            "completions",
            "const s = document.querySelector('#suggest');
             return !s.hidden && [...s.querySelectorAll('li')].map(li => li.firstChild.textContent)",
        )
        .await;
    assert!(
        offered.as_array().unwrap().contains(&json!("ui_demo")),
        "{offered}"
    );
    assert!(
        offered
            .as_array()
            .unwrap()
            .contains(&json!("ui_demo_total")),
        "{offered}"
    );
    b.keys("#expr", ESCAPE).await;

    // Graph: one line per series of the range query.
    assert_eq!(graph(&b, "ui_demo").await, 5);
    b.screenshot("graph").await;
    assert_eq!(graph(&b, "sum by (job) (rate(ui_demo_total[5m]))").await, 2);
    // Stacked draws the same series.
    b.click("#stacked").await;
    assert_eq!(graph(&b, "ui_demo").await, 5);
    b.click("#stacked").await;

    // Table: the values of /api/v1/query.
    b.type_into("#expr", "ui_demo").await;
    let shown = table(&b).await;
    let want = vector_rows(&api(url, "/api/v1/query", &[("query", "ui_demo")], None).await);
    assert_eq!(shown.len(), 5);
    assert_eq!(shown, want);
    b.screenshot("table").await;

    // Labels are text, never markup: a hostile label value is shown as written and runs
    // nothing, in the legend and in the table.
    let hostile = r#"<img src=x onerror="window.__pwned=1">"#;
    let line = format!(
        "ui_hostile{{v={}}} 1 {}\n",
        serde_json::to_string(hostile).unwrap(),
        now_ms() - 60_000
    );
    import(url, line, None).await;
    assert_eq!(graph(&b, "ui_hostile").await, 1);
    let legend = b
        .text("#chart .u-legend tr.u-series:nth-child(2) .u-label")
        .await;
    // As Prometheus prints labels: the value quoted, its quotes escaped.
    assert!(
        legend.contains(r#"v="<img src=x onerror=\"window.__pwned=1\">""#),
        "{legend}"
    );
    let shown = table(&b).await;
    assert_eq!(shown.len(), 1);
    let pwned = b
        .js(
            "return window.__pwned === undefined && document.querySelectorAll('img').length",
            json!([]),
        )
        .await;
    assert_eq!(pwned, json!(0), "markup from a label reached the page");
    b.click("#view-graph").await;

    // Warnings and infos of the answer are shown (rate of a name that is not a counter).
    b.type_into("#expr", "rate(ui_demo[5m])").await;
    b.keys("#expr", ENTER).await;
    let note = b
        .wait(
            "an info note",
            "return [...document.querySelectorAll('#notes p')].map(p => p.textContent).join(' | ')",
        )
        .await;
    assert!(note.as_str().unwrap().starts_with("Info: "), "{note}");

    // Explain, with analyze: the plan's operators, with rows.
    let q = "sum by (job) (rate(ui_demo_total[5m]))";
    b.type_into("#expr", q).await;
    b.click("#view-explain").await;
    b.click("#analyze").await;
    let ops = b
        .wait(
            "the analyzed plan",
            "const rows = [...document.querySelectorAll('#plan-table tbody tr')];
             return rows.length && rows[0].children[2].textContent !== ''
               && rows.map(tr => [tr.children[0].textContent, tr.children[2].textContent])",
        )
        .await;
    let ops: Vec<(String, String)> = serde_json::from_value(ops).unwrap();
    let names: Vec<&str> = ops.iter().map(|(n, _)| n.as_str()).collect();
    for op in ["StepAggExec", "RangeFnSelectExec"] {
        assert!(names.contains(&op), "{op} not in {names:?}");
    }
    // Every operator shows its rows but DataFusion's `CooperativeExec`, which passes its
    // input's batches through and keeps no metrics.
    assert!(
        ops.iter()
            .all(|(op, rows)| rows.parse::<u64>().is_ok() || op == "CooperativeExec"),
        "{ops:?}"
    );
    let summary = b.text("#explain-summary").await;
    assert!(summary.starts_with("Ran in"), "{summary}");
    b.screenshot("explain").await;

    // The link reproduces the view: a fresh load of it shows the same plan.
    let link = b
        .js(
            "return document.querySelector('#permalink').href",
            json!([]),
        )
        .await;
    b.goto("about:blank").await;
    b.goto(link.as_str().unwrap()).await;
    b.wait(
        "the linked explain view",
        "return document.querySelector('#view-explain').getAttribute('aria-selected') === 'true'
           && document.querySelectorAll('#plan-table tbody tr').length > 0",
    )
    .await;
    let expr = b
        .js("return document.querySelector('#expr').value", json!([]))
        .await;
    assert_eq!(expr, json!(q));

    // Keyboard: arrows move between the page tabs.
    b.js("document.querySelector('#tab-query').focus()", json!([]))
        .await;
    b.keys("#tab-query", ARROW_RIGHT).await;
    b.wait(
        "the SQL tab",
        "return document.activeElement.id === 'tab-sql' && !document.querySelector('#page-sql').hidden",
    )
    .await;

    // SQL: an example one click away, and a typed query; both as /api/v1/sql answers.
    b.wait(
        "the examples",
        "return document.querySelectorAll('#sql-examples button').length",
    )
    .await;
    clear_sql_table(&b).await;
    b.click("#sql-examples button[data-example='02_samples_per_metric.sql']")
        .await;
    let shown = sql_table(&b).await;
    let example = include_str!("../../sql/examples/02_samples_per_metric.sql");
    let want = sql_as_text(&api(url, "/api/v1/sql", &[("query", example.trim())], None).await);
    assert_eq!(shown, want);
    assert_eq!(shown.1.len(), 3, "{shown:?}");
    let typed = "SELECT metric, count(DISTINCT series_id) AS series, count(*) AS samples \
                 FROM samples_labeled GROUP BY metric ORDER BY metric";
    clear_sql_table(&b).await;
    b.type_into("#sql", typed).await;
    b.click("#sql-run").await;
    let shown = sql_table(&b).await;
    assert_eq!(
        shown,
        sql_as_text(&api(url, "/api/v1/sql", &[("query", typed)], None).await)
    );
    assert_eq!(shown.1[0][1], "5");
    b.screenshot("sql").await;

    // Status: cardinality, limits, flags and the blocks the API lists.
    b.click("#tab-status").await;
    b.wait(
        "the status page",
        "return document.querySelector('#st-tsdb').textContent.includes('ui_demo')
           && document.querySelector('#st-flags').textContent.includes('--query-max-samples')
           && document.querySelector('#st-limits').textContent.includes('queryMaxSamples')
           && document.querySelector('#st-blocks table')",
    )
    .await;
    let listed = b.text("#st-blocks").await;
    let first = blocks[0]["id"].as_str().unwrap();
    assert!(listed.contains(first), "block {first} not in {listed}");
    b.screenshot("status").await;
    b.js(
        "document.querySelector('#st-blocks').closest('.card').scrollIntoView()",
        json!([]),
    )
    .await;
    b.screenshot("status-blocks").await;

    // A narrow window: nothing wider than the window on the graph.
    b.resize(420, 800).await;
    b.click("#tab-query").await;
    assert_eq!(graph(&b, "ui_demo").await, 5);
    let overflow = b
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page wider than the window by {overflow}px"
    );
    b.screenshot("narrow").await;
}

/// With authentication on, under a route prefix: the page asks for credentials, a user
/// with enforced matchers sees only its series in every view, admin-only status stays
/// closed, and the password is kept for the tab only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_page_with_authentication_under_a_prefix() {
    if !webdriver::available("query_page_with_authentication_under_a_prefix") {
        return;
    }
    let (_tmp, dir) = tempdir();
    let server = with_auth_under(&dir, "/quiver").await;
    let url = format!("{}/quiver", server.url);
    let rw = ("remote-write", "remote-write-pass", "team-a");
    import(&url, demo_data(&[("namespace", "team-a-x")]), Some(rw)).await;
    import(&url, demo_data(&[("namespace", "team-b-y")]), Some(rw)).await;
    let grafana = Some(("grafana", "grafana-pass"));
    let admin = Some(("admin", "admin-pass"));

    let b = Browser::start(1280, 800).await;
    // Without the trailing slash the page redirects to it (its URLs are relative).
    b.goto(&url).await;
    b.wait(
        "the page",
        "return window.uPlot && document.querySelector('#expr')",
    )
    .await;
    let at = b.js("return location.pathname", json!([])).await;
    assert_eq!(at, json!("/quiver/"));

    // The first query meets a 401: the page's own form asks, then the query runs.
    b.type_into("#expr", "ui_demo").await;
    b.keys("#expr", ENTER).await;
    b.wait(
        "the sign-in form",
        "return !document.querySelector('#login').hidden",
    )
    .await;
    b.screenshot("sign-in").await;
    b.type_into("#login-user", "grafana").await;
    b.type_into("#login-pass", "wrong").await;
    b.click("#login-submit").await;
    b.wait(
        "the refusal",
        "return document.querySelector('#login-error').textContent.includes('refused')",
    )
    .await;
    b.type_into("#login-pass", "grafana-pass").await;
    b.click("#login-submit").await;
    b.wait(
        "the graph after signing in",
        "return document.querySelector('#login').hidden && document.querySelector('#chart canvas')",
    )
    .await;
    // grafana's enforced matchers: only namespace team-a-*.
    let drawn = b
        .js(
            "return document.querySelectorAll('#chart .u-legend tr.u-series').length - 1",
            json!([]),
        )
        .await;
    assert_eq!(drawn, json!(5));
    let labels = b
        .js(
            "return [...document.querySelectorAll('#chart .u-legend tr.u-series .u-label')].map(l => l.textContent).join(' ')",
            json!([]),
        )
        .await;
    assert!(!labels.as_str().unwrap().contains("team-b"), "{labels}");
    assert_eq!(graph(&b, "ui_demo").await, 5);
    let who = b.text("#who-name").await;
    assert_eq!(who, "Signed in as grafana");

    // Table: as the API answers grafana, and only team-a.
    let shown = table(&b).await;
    let want = vector_rows(&api(&url, "/api/v1/query", &[("query", "ui_demo")], grafana).await);
    assert_eq!(shown, want);
    assert_eq!(shown.len(), 5);
    assert!(shown.keys().all(|k| k.contains("team-a-x")), "{shown:?}");

    // Explain under the enforced matchers: one namespace of the two.
    b.type_into("#expr", "sum by (namespace) (rate(ui_demo_total[5m]))")
        .await;
    b.click("#view-explain").await;
    b.click("#analyze").await;
    let summary = b
        .wait(
            "the analyzed plan",
            "const s = document.querySelector('#explain-summary').textContent;
             return s.startsWith('Ran in') && s",
        )
        .await;
    assert!(summary.as_str().unwrap().contains(" 1 series"), "{summary}");

    // SQL sees the same series.
    b.click("#tab-sql").await;
    let typed = "SELECT count(DISTINCT series_id) AS n FROM samples";
    clear_sql_table(&b).await;
    b.type_into("#sql", typed).await;
    b.click("#sql-run").await;
    let shown = sql_table(&b).await;
    assert_eq!(
        shown,
        sql_as_text(&api(&url, "/api/v1/sql", &[("query", typed)], grafana).await)
    );
    assert_eq!(shown.1, vec![vec!["10".to_string()]]);

    // Status: grafana reads the cardinality of its own series only; flags and blocks need
    // admin.
    b.click("#tab-status").await;
    b.wait(
        "the status page",
        "return document.querySelector('#st-flags').textContent.includes('needs the admin permission')
           && document.querySelector('#st-blocks').textContent.includes('needs the admin permission')
           && document.querySelector('#st-tsdb').textContent.includes('ui_demo')",
    )
    .await;
    let tsdb = api(&url, "/api/v1/status/tsdb", &[], grafana).await;
    assert_eq!(tsdb["headStats"]["numSeries"], json!(10));
    assert!(
        !b.text("#st-tsdb").await.contains("team-b"),
        "another namespace's label pair is listed"
    );
    // The admin sees the flags, and the page never shows a secret.
    let flags = api(&url, "/api/v1/status/flags", &[], admin).await;
    assert_eq!(flags["route-prefix"], json!("/quiver"));

    // Credentials: in this tab's session storage only.
    let stored = b
        .js(
            "return [JSON.stringify(localStorage), sessionStorage.getItem('quiver.auth')]",
            json!([]),
        )
        .await;
    assert!(!stored[0].as_str().unwrap().contains("Basic"), "{stored}");
    assert!(
        stored[1].as_str().unwrap().starts_with("Basic "),
        "{stored}"
    );
}

/// The page's routes: open files, a strict content security policy, the prefix's
/// redirects, and 401s that spare scripts the browser's own dialog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_routes_prefix_and_challenges() {
    let (_tmp, dir) = tempdir();
    // A trailing slash on the flag means the same prefix.
    let server = with_auth_under(&dir, "/quiver/").await;
    let c = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |p: &str| c.get(format!("{}{p}", server.url)).send();
    for (path, location) in [("/", "/quiver/"), ("/quiver", "/quiver/")] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 302, "{path}");
        assert_eq!(r.headers()["location"], location);
    }
    let r = get("/quiver/").await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(r.text().await.unwrap().contains("ui/app.js"));
    for asset in [
        "app.js",
        "app.css",
        "vendor/uPlot.iife.min.js",
        "sql-examples.json",
    ] {
        let r = get(&format!("/quiver/ui/{asset}")).await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
    assert_eq!(get("/quiver/ui/nope.js").await.unwrap().status(), 404);
    assert_eq!(
        get("/quiver/ui/../../etc/passwd").await.unwrap().status(),
        404
    );
    // Outside the prefix nothing is served.
    assert_eq!(get("/api/v1/query?query=1").await.unwrap().status(), 404);
    assert_eq!(get("/quiverx/").await.unwrap().status(), 404);
    // Under it, permissions hold as without a prefix.
    let status = |rb: reqwest::RequestBuilder| async move { rb.send().await.unwrap().status() };
    let flags = format!("{}/quiver/api/v1/status/flags", server.url);
    assert_eq!(
        status(c.get(&flags).basic_auth("grafana", Some("grafana-pass"))).await,
        403
    );
    assert_eq!(
        status(c.get(&flags).basic_auth("admin", Some("admin-pass"))).await,
        200
    );
    // A 401 offers basic auth to browsers' navigation, not to the page's scripts.
    let q = format!("{}/quiver/api/v1/query?query=1", server.url);
    let r = c.get(&q).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert!(
        challenges
            .iter()
            .any(|h| h.to_str().unwrap().starts_with("Basic"))
    );
    let r = c
        .get(&q)
        .header("X-Requested-With", "XMLHttpRequest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert!(!challenges.is_empty());
    assert!(
        challenges
            .iter()
            .all(|h| !h.to_str().unwrap().starts_with("Basic"))
    );
}
