//! `parkd --probe IP:PORT`: one SIP OPTIONS over UDP, for container health checks and monitoring scripts.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot send OPTIONS to {to}: {source}")]
    Send { to: SocketAddr, source: std::io::Error },
    #[error("no answer from {0} in time")]
    Timeout(SocketAddr),
    #[error("{to} answered {status_line:?}")]
    NotOk { to: SocketAddr, status_line: String },
}

/// Sends one OPTIONS to `to` and waits up to `wait` for its final response; Ok with the status line on 200.
pub fn options(to: SocketAddr, wait: Duration) -> Result<String, ProbeError> {
    let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse().unwrap_or(to) } else { "[::]:0".parse().unwrap_or(to) };
    let sock = UdpSocket::bind(bind).map_err(ProbeError::Socket)?;
    sock.connect(to).map_err(|source| ProbeError::Send { to, source })?;
    let local = sock.local_addr().map_err(ProbeError::Socket)?;
    let nonce = std::process::id();
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe{nonce};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag=probe{nonce}\r\nTo: <sip:{to}>\r\nCall-ID: probe-{nonce}@{local}\r\n\
         CSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send(msg.as_bytes()).map_err(|source| ProbeError::Send { to, source })?;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeError::Timeout(to));
        }
        sock.set_read_timeout(Some(left)).map_err(ProbeError::Socket)?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => return Err(ProbeError::Timeout(to)),
        };
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or(&[]));
        let status_line = text.lines().next().unwrap_or("").to_string();
        let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
        match code {
            100..=199 => continue,
            200 => return Ok(status_line),
            _ => return Err(ProbeError::NotOk { to, status_line }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_200_and_timeouts() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("OPTIONS sip:"));
            server.send_to(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", from).unwrap();
        });
        assert_eq!(options(addr, Duration::from_secs(2)).unwrap(), "SIP/2.0 200 OK");
        t.join().unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(matches!(options(silent.local_addr().unwrap(), Duration::from_millis(100)), Err(ProbeError::Timeout(_))));
    }
}
