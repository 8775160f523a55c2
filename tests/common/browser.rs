//! Headless Chromium driven over WebDriver, for the console's tests.
//!
//! Debian's `chromium` and `chromium-driver` are used. When they are not
//! on the machine the first test installs them with apt-get (as promtool
//! is fetched), so the test command needs nothing installed by hand.
//! Chromium runs with a fresh profile and without the background
//! networking that this machine's closed network would refuse. WebDriver
//! is plain JSON over HTTP/1.1, spoken here over a TCP socket.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One install at a time, and once per test binary.
static INSTALL: Mutex<bool> = Mutex::new(false);

/// Installs chromium and chromedriver with apt-get unless they are there.
fn ensure_installed() {
    let mut done = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *done || (Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()) {
        *done = true;
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "chromium",
                "chromium-driver",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        // A fresh machine may have no package lists, or stale ones.
        let updated = Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(updated, "apt-get update failed");
        assert!(install(), "apt-get install chromium chromium-driver failed");
    }
    *done = true;
}

/// A browser: chromedriver and the Chromium session it drives.
pub struct Browser {
    driver: tokio::process::Child,
    port: u16,
    session: String,
    profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(ensure_installed).await.unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let profile = TempDir::new("chromium-profile");
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            profile,
        };
        super::eventually("chromedriver to listen", || async {
            TcpStream::connect(("127.0.0.1", port)).await.ok()
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // A confirmation stays open until the test answers it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", browser.profile.0.display()),
                ],
            },
        }}});
        let answer = browser.call("POST", "/session", capabilities).await;
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; its `value`, or a panic saying what failed.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let value = self.try_call(method, path, body).await;
        match value {
            Ok(value) => value,
            Err(error) => panic!("WebDriver {method} {path}: {error}"),
        }
    }

    async fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, Value> {
        // GET and DELETE carry no body.
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.write_all(request.as_bytes()).await?;
            // chromedriver keeps the connection open whatever the request
            // says: read the head, then exactly Content-Length bytes.
            let mut response = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                response.extend_from_slice(&chunk[..n]);
                if let Some(end) = find(&response, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if response.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .map_err(|_| json!("no answer within 60 s"))?
            .map_err(|e| json!(e.to_string()))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").ok_or(json!("no HTTP body"))?;
        let parsed: Value =
            serde_json::from_str(body).map_err(|e| json!(format!("{e}: {body}")))?;
        if head.starts_with("HTTP/1.1 200") {
            Ok(parsed["value"].clone())
        } else {
            Err(parsed["value"].clone())
        }
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `return` a value or a promise).
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Runs `script` until it returns something truthy; that value.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        super::eventually(what, || async {
            let value = self
                .try_call(
                    "POST",
                    &self.at("/execute/sync"),
                    json!({ "script": script, "args": [] }),
                )
                .await
                .ok()?;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            truthy.then_some(value)
        })
        .await
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                &self.at("/element"),
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Clicks the element `css` finds, as a person would. The page redraws
    /// when what it shows changes, so an element found may be replaced
    /// before the click lands: it is found again then.
    pub async fn click(&self, css: &str) {
        super::eventually_explained(&format!("a click on {css}"), || async {
            let id = self.element(css).await;
            self.try_call("POST", &self.at(&format!("/element/{id}/click")), json!({}))
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        })
        .await;
    }

    /// Types `text` into the element `css` finds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/value")),
            json!({ "text": text }),
        )
        .await;
    }

    /// The open dialog's text, once one is open; then accepts it.
    pub async fn confirm_dialog(&self) -> String {
        let text = super::eventually("a dialog to open", || async {
            self.try_call("GET", &self.at("/alert/text"), Value::Null)
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        })
        .await;
        self.call("POST", &self.at("/alert/accept"), json!({}))
            .await;
        text
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", &self.at("/screenshot"), Value::Null).await;
        decode_base64(encoded.as_str().unwrap_or_default())
    }

    /// Ends the session (chromedriver quits Chromium), then the driver.
    pub async fn close(self) {
        drop(self);
    }
}

impl Drop for Browser {
    /// Also on a failed test: a Chromium left behind would outlive it.
    fn drop(&mut self) {
        use std::io::{Read as _, Write as _};
        if self.session.is_empty() {
            return;
        }
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.session, self.port
        );
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.write_all(request.as_bytes());
            // The answer comes once Chromium has quit.
            let _ = stream.read(&mut [0u8; 512]);
        }
        let _ = self.driver.start_kill();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64, as WebDriver sends screenshots.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for sextet in text.bytes().filter_map(value) {
        bits = (bits << 6) | u32::from(sextet);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// Where the README's screenshots go.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console")
}
