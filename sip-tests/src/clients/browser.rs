//! [`Chromium`]: a headless Chromium (Debian package `chromium`) driven over the DevTools protocol — evaluate
//! JavaScript in the page, wait for a condition, take a screenshot. Killed by PID when the guard drops.

use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A running headless Chromium with one page open.
pub struct Chromium {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: PathBuf,
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` on PATH (None when neither exists).
pub fn chromium_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("chromium")).find(|p| p.is_file())
}

impl Chromium {
    /// Starts Chromium headless on `url` (1280x900), its stderr in `log_dir/chromium.stderr`, and attaches
    /// to the page over the DevTools protocol.
    pub fn open(url: &str, log_dir: &Path) -> Chromium {
        let bin = chromium_binary().expect("chromium not found: apt-get install chromium (scripts/test.sh does)");
        let profile = log_dir.join("chromium-profile");
        let mut child = Command::new(&bin)
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--hide-scrollbars"])
            .args(["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel::<u16>();
        let log_path = log_dir.join("chromium.stderr");
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(&log_path).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    if let Some(port) = rest.split('/').next().and_then(|p| p.parse().ok()) {
                        let _ = tx.send(port);
                    }
                }
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!("chromium did not print its DevTools address within 30 s (see {})", log_dir.display());
            }
        };
        let ws_url = page_ws_url(port, url);
        let (ws, _) = tungstenite::connect(ws_url.as_str()).unwrap_or_else(|e| panic!("DevTools websocket {ws_url}: {e}"));
        Chromium { child, ws, next_id: 1, _profile: profile }
    }

    /// Sends one DevTools command and returns its `result`.
    pub fn send(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).unwrap_or_else(|e| panic!("DevTools send {method}: {e}"));
        loop {
            let m = self.ws.read().unwrap_or_else(|e| panic!("DevTools read ({method}): {e}"));
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("DevTools {method} failed: {err}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page and returns its value (promises are awaited).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.send("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }));
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is `true`; returns how long that took, or None after `within`.
    pub fn wait_for(&mut self, expr: &str, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.eval(expr) == Value::Bool(true) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.send("Page.captureScreenshot", json!({ "format": "png" }));
        let data = r["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD.decode(data).expect("base64 PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DevTools websocket of the page showing `url` (its fragment aside: a page may drop it, e.g. the attendant
/// page's `#token=`), from `/json/list` on the debugging port.
fn page_ws_url(port: u16, url: &str) -> String {
    let url = url.split('#').next().unwrap_or(url);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(ws) = list_targets(port).and_then(|targets| {
            targets.as_array()?.iter().find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))).and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
        }) {
            return ws;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no DevTools page target for {url} on port {port}");
}

fn list_targets(port: u16) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    // The DevTools server keeps the connection open: read the headers, then Content-Length bytes.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
            })?;
            if body.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}
