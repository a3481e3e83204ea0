//! A few raw SIP datagrams the harness sends itself: the readiness OPTIONS ping and garbage.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// An OPTIONS request to `sip:700@target` from `local`, with a unique branch and Call-ID.
pub fn options_request(target: SocketAddr, local: SocketAddr, n: u32) -> String {
    let id = format!("{}-{n}", std::process::id());
    format!(
        "OPTIONS sip:700@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-probe-{id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag=probe{id}\r\n\
         To: <sip:700@{target}>\r\n\
         Call-ID: probe-{id}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The loopback address of `target`'s family (::1 for an IPv6 parkd, else 127.0.0.1).
pub fn loopback_like(target: SocketAddr) -> IpAddr {
    if target.is_ipv6() {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// Sends `request` over UDP and returns the first datagram that comes back within `wait`, if any.
pub fn udp_exchange(target: SocketAddr, request: &[u8], wait: Duration) -> std::io::Result<Option<String>> {
    let socket = UdpSocket::bind((loopback_like(target), 0))?;
    socket.send_to(request, target)?;
    socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
    let mut buf = [0u8; 65535];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => Ok(Some(String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned())),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends an OPTIONS ping and says whether a `200` came back within `wait`.
pub fn options_ping(target: SocketAddr, n: u32, wait: Duration) -> bool {
    let Ok(socket) = UdpSocket::bind((loopback_like(target), 0)) else { return false };
    let Ok(local) = socket.local_addr() else { return false };
    drop(socket); // the exchange binds its own; the address only fills Via/From.
    let request = options_request(target, local, n);
    matches!(udp_exchange(target, request.as_bytes(), wait), Ok(Some(reply)) if reply.starts_with("SIP/2.0 200"))
}

/// Datagrams that are not SIP at all, or SIP-looking but broken beyond repair; parkd must survive them all.
pub fn garbage_datagrams() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        b"hello parkd".to_vec(),
        b"INVITE".to_vec(),
        b"INVITE sip:700@127.0.0.1 SIP/2.0\r\nVia: \r\nContent-Length: 99999\r\n\r\nv=0".to_vec(),
        b"SIP/2.0 200 OK\r\nCSeq: x\r\n\r\n".to_vec(),
        b"SIP/2.0 999999999999 Nope\r\n\r\n".to_vec(),
        "OPTIONS sip:\u{1F600}@[::1 SIP/9.9\r\n\u{0}\u{0}\r\n\r\n".as_bytes().to_vec(),
    ];
    // Binary noise with a fixed seed (a tiny LCG: reproducible, no dependency).
    let mut x: u32 = 0x1234_5678;
    for len in [1usize, 12, 200, 1400, 8000] {
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.push((x >> 16) as u8);
        }
        out.push(v);
    }
    // A header section that never ends.
    out.push(format!("OPTIONS sip:700@127.0.0.1 SIP/2.0\r\n{}", "X-Long: a\r\n".repeat(500)).into_bytes());
    out
}

/// Throws every [`garbage_datagrams`] datagram at `target` from one socket.
pub fn send_garbage(target: SocketAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    for datagram in garbage_datagrams() {
        socket.send_to(&datagram, target)?;
    }
    Ok(())
}
