//! Optional TLS: with a certificate and key Quiver serves HTTPS (rustls), and a client that
//! trusts the certificate gets answers. The certificate is made by the `openssl` command.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_a_configured_certificate() {
    let (tmp, dir) = tempdir();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // webpki refuses a CA certificate as a server's own, which openssl makes by default.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: the `openssl` command is not available to make a test certificate");
        return;
    }
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _guard = ChildGuard(child);
    let url = line
        .trim()
        .strip_prefix("quiver listening on ")
        .unwrap()
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "HTTPS server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .get(format!("{url}/api/v1/query?query=1%2B1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("\"2\""));
    // A client that does not trust the certificate is refused, and plain HTTP gets nothing.
    assert!(reqwest::get(format!("{url}/-/ready")).await.is_err());
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        reqwest::get(format!("{plain}/-/ready"))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );
}
