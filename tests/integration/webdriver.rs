//! A small W3C WebDriver client over HTTP, enough to drive Debian's headless Chromium
//! through `chromedriver`: open pages, find elements, type, click, run scripts, take
//! screenshots. Both programs are started on 127.0.0.1 and stopped by PID.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{ChildGuard, free_port};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The WebDriver key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const ENTER: &str = "\u{E007}";
pub const ESCAPE: &str = "\u{E00C}";
pub const ARROW_RIGHT: &str = "\u{E014}";

/// Whether the browser can run here; says why not (CI installs both, see .ci/run).
pub fn available(test: &str) -> bool {
    for p in [CHROMIUM, CHROMEDRIVER] {
        if !std::path::Path::new(p).exists() {
            eprintln!("SKIP {test}: {p} is missing (apt-get install chromium chromium-driver)");
            return false;
        }
    }
    true
}

pub struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: ChildGuard,
    _profile: tempfile::TempDir,
}

#[derive(Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile at `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = ChildGuard(driver);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags keep Chromium off the network (this machine's is closed) and out of
        // the sandbox it cannot have as root in a container.
        let args = json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        let b = Browser {
            http,
            base: format!("{base}/session/{id}"),
            _driver: driver,
            _profile: profile,
        };
        b.resize(width, height).await;
        b
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        if let Some(err) = v["value"]["error"].as_str() {
            panic!("WebDriver {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Waits until `script` returns something truthy (not false, null, 0 or ""), and
    /// returns it; panics with `what` after 30 s.
    pub async fn wait(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script, json!([])).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let notes = self
                    .js(
                        "return [...document.querySelectorAll('#notes p, #sql-notes p, #login-error')].map(p => p.textContent).join(' | ')",
                        json!([]),
                    )
                    .await;
                panic!("timed out waiting for {what}; the page says: {notes}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn find(&self, css: &str) -> Element {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        Element(v[ELEMENT].as_str().expect("element id").to_string())
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.post(&format!("/element/{}/click", e.0), json!({}))
            .await;
    }

    /// Clears the field at `css` and types `text` into it (keys, as a user would).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.post(&format!("/element/{}/clear", e.0), json!({}))
            .await;
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }))
            .await;
    }

    /// Sends keys to the element at `css` without clearing it.
    pub async fn keys(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }))
            .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/text", e.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// A PNG of the window, written under `$QUIVER_UI_SCREENSHOTS/<name>.png` when that is
    /// set (how docs/ui/ is made).
    pub async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("QUIVER_UI_SCREENSHOTS") else {
            return;
        };
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session so chromedriver stops its Chromium; the guard then kills the
        // driver itself.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = reqwest::Client::new()
                    .delete(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
            });
        })
        .join();
    }
}
