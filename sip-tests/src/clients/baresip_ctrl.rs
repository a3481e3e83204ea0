//! [`CtrlClient`]: a client for baresip's `ctrl_tcp` module.
//!
//! The protocol (baresip 1.0): netstrings (`<len>:<bytes>,`) carrying JSON, both ways, over one TCP
//! connection.
//! - Command: `{"command":"dial","params":"sip:b@127.0.0.12:5060","token":"7"}`. The command names are the
//!   long names of the `menu` module (`/help` lists them; call commands such as `transfer` only while a call
//!   exists). Reply: `{"response":true,"ok":true,"data":"...","token":"7"}`.
//! - Events, pushed to every connection: `{"event":true,"type":"CALL_ESTABLISHED","class":"call",
//!   "accountaor":"sip:a@...","direction":"outgoing","peeruri":"sip:b@...","id":"<call-id>","param":"..."}`.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One event baresip pushed, with the time it arrived.
#[derive(Clone, Debug)]
pub struct PhoneEvent {
    pub at: Instant,
    /// `type`: CALL_INCOMING, CALL_RINGING, CALL_ESTABLISHED, CALL_CLOSED, TRANSFER, ...
    pub kind: String,
    /// `peeruri`: the other end of the call.
    pub peer_uri: String,
    /// `id`: the call's Call-ID.
    pub call_id: String,
    /// `param`: e.g. the close reason.
    pub param: String,
    pub raw: Value,
}

#[derive(Default)]
struct Inbox {
    events: Vec<PhoneEvent>,
    responses: Vec<Value>,
    closed: bool,
}

type Shared = Arc<(Mutex<Inbox>, Condvar)>;

fn lock(m: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connected ctrl_tcp client; a reader thread collects replies and events until it drops.
pub struct CtrlClient {
    stream: TcpStream,
    shared: Shared,
    reader: Option<JoinHandle<()>>,
    next_token: AtomicU64,
}

impl CtrlClient {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<CtrlClient> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        let mut read_half = stream.try_clone()?;
        let shared: Shared = Arc::new((Mutex::new(Inbox::default()), Condvar::new()));
        let for_reader = Arc::clone(&shared);
        let reader = std::thread::spawn(move || read_loop(&mut read_half, &for_reader));
        Ok(CtrlClient { stream, shared, reader: Some(reader), next_token: AtomicU64::new(1) })
    }

    /// Sends `command` with `params` and waits (up to `wait`) for its reply: `Ok(data)` or `Err(data)`.
    pub fn command(&self, command: &str, params: &str, wait: Duration) -> Result<String, String> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed).to_string();
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        let frame = format!("{}:{body},", body.len());
        (&self.stream).write_all(frame.as_bytes()).map_err(|e| format!("cannot send {command}: {e}"))?;
        let (lock_m, cvar) = &*self.shared;
        let deadline = Instant::now() + wait;
        let mut inbox = lock(lock_m);
        loop {
            if let Some(i) = inbox.responses.iter().position(|r| r["token"] == token.as_str()) {
                let r = inbox.responses.remove(i);
                let data = r["data"].as_str().unwrap_or_default().to_string();
                return if r["ok"] == true { Ok(data) } else { Err(data) };
            }
            let now = Instant::now();
            if inbox.closed || now >= deadline {
                return Err(format!("no reply to {command} within {wait:?} (connection closed: {})", inbox.closed));
            }
            inbox = cvar.wait_timeout(inbox, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Waits (up to `wait`) for an event of type `kind` for which `pred` holds (events already received
    /// count too).
    pub fn wait_event(&self, kind: &str, wait: Duration, pred: impl Fn(&PhoneEvent) -> bool) -> Option<PhoneEvent> {
        let (lock_m, cvar) = &*self.shared;
        let deadline = Instant::now() + wait;
        let mut inbox = lock(lock_m);
        loop {
            if let Some(ev) = inbox.events.iter().find(|e| e.kind == kind && pred(e)) {
                return Some(ev.clone());
            }
            let now = Instant::now();
            if inbox.closed || now >= deadline {
                return None;
            }
            inbox = cvar.wait_timeout(inbox, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<PhoneEvent> {
        lock(&self.shared.0).events.clone()
    }
}

impl Drop for CtrlClient {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(stream: &mut TcpStream, shared: &Shared) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        while let Some(msg) = take_netstring(&mut buf) {
            let Ok(value) = serde_json::from_slice::<Value>(&msg) else { continue };
            let (m, cvar) = &**shared;
            let mut inbox = lock(m);
            if value["response"] == true {
                inbox.responses.push(value);
            } else if value["event"] == true {
                let field = |k: &str| value[k].as_str().unwrap_or_default().to_string();
                let ev = PhoneEvent {
                    at: Instant::now(),
                    kind: field("type"),
                    peer_uri: field("peeruri"),
                    call_id: field("id"),
                    param: field("param"),
                    raw: value.clone(),
                };
                inbox.events.push(ev);
            }
            cvar.notify_all();
        }
    }
    let (m, cvar) = &**shared;
    lock(m).closed = true;
    cvar.notify_all();
}

/// Removes one complete netstring from the front of `buf` and returns its payload.
fn take_netstring(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let colon = buf.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(buf.get(..colon)?).ok()?.trim().parse().ok()?;
    let end = colon + 1 + len;
    if buf.len() <= end {
        return None;
    }
    let payload = buf.get(colon + 1..end)?.to_vec();
    buf.drain(..=end); // payload plus the trailing ','
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::take_netstring;

    #[test]
    fn netstrings_are_split_and_partial_ones_wait() {
        let mut buf = b"5:hello,3:ab".to_vec();
        assert_eq!(take_netstring(&mut buf).as_deref(), Some(&b"hello"[..]));
        assert_eq!(take_netstring(&mut buf), None);
        buf.extend_from_slice(b"c,");
        assert_eq!(take_netstring(&mut buf).as_deref(), Some(&b"abc"[..]));
        assert!(buf.is_empty());
    }
}
