//! A real browser for the status page tests: one headless Chromium driven through
//! ChromeDriver's WebDriver API (Debian's chromium and chromium-driver, as `.ci/run`
//! installs them).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};

use super::http::{http_exchange, http_request};

/// A ChromeDriver with one headless Chromium session, ended on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run chromedriver (Debian packages chromium and chromium-driver)");
        let stdout = driver.stdout.take().expect("stdout");
        let port: u16 = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("started successfully on port ")
                    .nth(1)?
                    .trim_end_matches('.')
                    .parse()
                    .ok()
            })
            .expect("chromedriver says its port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let (status, body) = http_request(addr, "POST", "/session", Some(&caps)).await;
        assert_eq!(status, 200, "new session: {body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let path = format!("/session/{}/{what}", self.session);
        let (status, text) = http_request(self.addr, method, &path, body.as_ref()).await;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(text)
        }
    }

    pub async fn open(&self, url: &str) {
        self.call("POST", "url", Some(json!({ "url": url })))
            .await
            .expect("navigate");
    }

    /// Runs `script` in the page; `Err` while the page is between loads.
    pub async fn run(&self, script: &str) -> Result<Value, String> {
        self.call(
            "POST",
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session stops Chromium; then the driver.
        let (host, path) = (self.addr.to_string(), format!("/session/{}", self.session));
        let _ = http_exchange(self.addr, "DELETE", &path, &[("Host", &host)], b"");
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// A PNG of the viewport as it is now.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self
            .call("GET", "screenshot", None)
            .await
            .expect("take a screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("the screenshot is base64")
    }
}
