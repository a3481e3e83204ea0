//! IPv6 and dual-stack sockets (issue 19): binding `[::]` for both families, and the two address forms a
//! dual-stack socket deals in.
//!
//! A socket bound to `[::]` (the unspecified IPv6 address) is opened with `IPV6_V6ONLY` off, whatever the
//! system default (`net.ipv6.bindv6only`), so `listen = "[::]:5060"` serves IPv4 and IPv6 peers on one
//! socket. Such a socket reports an IPv4 peer as an IPv4-mapped address (`::ffff:192.0.2.1`) and can only
//! send to addresses of its own family. The rest of parkd names IPv4 peers as IPv4: sources are made
//! [`canonical`] as they come in, destinations are put in the socket's form ([`for_socket`]) as they go out.
//! A socket bound to a specific IPv6 address (`[::1]:5060`) is IPv6 only.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};

/// IPv4-mapped IPv6 sources (`[::ffff:192.0.2.1]:5060`) as IPv4 (`192.0.2.1:5060`); any other unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `to` as a socket bound to an address of `local`'s family can send to it: an IPv4 destination becomes
/// IPv4-mapped for an IPv6 socket.
pub fn for_socket(to: SocketAddr, local: IpAddr) -> SocketAddr {
    match (to, local) {
        (SocketAddr::V4(a), IpAddr::V6(_)) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        _ => to,
    }
}

/// True when a socket bound to `ip` takes IPv4 peers too (the unspecified IPv6 address, `[::]`).
pub fn is_dual_stack(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.is_unspecified())
}

/// What a socket bound to `ip` serves, for the log: `IPv4`, `IPv6` or `IPv4+IPv6`.
pub fn families(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        _ if is_dual_stack(ip) => "IPv4+IPv6",
        IpAddr::V6(_) => "IPv6",
    }
}

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        sock.set_only_v6(!is_dual_stack(addr.ip()))?;
    }
    Ok(sock)
}

/// A blocking-mode std UDP socket bound to `addr` (dual-stack for `[::]`).
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let sock = socket(addr, Type::DGRAM, Protocol::UDP)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// A non-blocking std TCP listener on `addr` (dual-stack for `[::]`), with `SO_REUSEADDR` as tokio sets it.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = socket(addr, Type::STREAM, Protocol::TCP)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_ipv6_loopback() -> bool {
        std::net::UdpSocket::bind("[::1]:0").is_ok()
    }

    #[test]
    fn mapped_sources_become_ipv4_and_ipv4_destinations_become_mapped_for_ipv6_sockets() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5060".parse().unwrap();
        let v4: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v6), v6);
        assert_eq!(for_socket(v4, "::".parse().unwrap()), mapped);
        assert_eq!(for_socket(v4, "0.0.0.0".parse().unwrap()), v4);
        assert_eq!(for_socket(v6, "::".parse().unwrap()), v6);
        assert_eq!(families("::".parse().unwrap()), "IPv4+IPv6");
        assert_eq!(families("::1".parse().unwrap()), "IPv6");
        assert_eq!(families("127.0.0.1".parse().unwrap()), "IPv4");
    }

    #[test]
    fn a_wildcard_ipv6_socket_serves_ipv4_and_ipv6_peers() {
        if !has_ipv6_loopback() {
            eprintln!("SKIPPED: this machine has no ::1");
            return;
        }
        let server = bind_udp("[::]:0".parse().unwrap()).unwrap();
        server.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let port = server.local_addr().unwrap().port();
        let local = server.local_addr().unwrap().ip();
        let mut buf = [0u8; 16];
        for peer in ["127.0.0.1:0", "[::1]:0"] {
            let client = std::net::UdpSocket::bind(peer).unwrap();
            client.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            let to = SocketAddr::new(client.local_addr().unwrap().ip(), port);
            client.send_to(b"ping", to).unwrap();
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let from = canonical(from);
            assert_eq!((&buf[..n], from), (&b"ping"[..], client.local_addr().unwrap()), "{peer}");
            server.send_to(b"pong", for_socket(from, local)).unwrap();
            assert_eq!(client.recv(&mut buf).unwrap(), 4, "{peer}: the answer goes back");
        }
        let tcp = bind_tcp("[::]:0".parse().unwrap()).unwrap();
        let port = tcp.local_addr().unwrap().port();
        tcp.set_nonblocking(false).unwrap();
        for peer in ["127.0.0.1", "::1"] {
            let ip: IpAddr = peer.parse().unwrap();
            let _c = std::net::TcpStream::connect((ip, port)).unwrap();
            let (_, from) = tcp.accept().unwrap();
            assert_eq!(canonical(from).ip(), ip);
        }
        let v6_only = bind_udp("[::1]:0".parse().unwrap()).unwrap();
        let to = SocketAddr::new("127.0.0.1".parse().unwrap(), 9);
        assert!(v6_only.send_to(b"x", for_socket(to, v6_only.local_addr().unwrap().ip())).is_err(), "[::1] is IPv6 only");
    }
}
