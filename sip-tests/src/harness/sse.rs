//! A reader of parkd's events stream (`GET /v1/events`, SSE) on a thread of its own, for tests that check what an
//! application watching the stream sees.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Reads `GET /v1/events` (SSE) on a thread and keeps everything received.
pub struct SseTap {
    text: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl SseTap {
    pub fn connect(addr: SocketAddr, token: &str, last_event_id: Option<u64>) -> SseTap {
        let text = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut s = TcpStream::connect(addr).expect("connect to the HTTP API");
        let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        write!(s, "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n{resume}\r\n").expect("send");
        s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let (t, st) = (text.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => t.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        });
        let tap = SseTap { text, stop };
        assert!(tap.wait_for("text/event-stream", Duration::from_secs(5)), "SSE response: {}", tap.text());
        tap
    }

    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    pub fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for SseTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
