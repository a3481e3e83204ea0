//! Loopback UDP sockets for load: nonblocking, with big kernel buffers so a burst of answers is not dropped
//! before the reader gets to it. Used by the SIP [`Ua`](crate::sip::ua::Ua) and the benchmark's RTP sinks.

use std::io;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

/// A nonblocking UDP socket on 127.0.0.1 (any port) with `bufsize`-byte kernel buffers (see [`set_buffers`]).
pub fn loopback_socket(bufsize: usize) -> io::Result<UdpSocket> {
    loopback_socket_on(Ipv4Addr::LOCALHOST, bufsize)
}

/// [`loopback_socket`] on another loopback address (e.g. 127.0.0.2, a second source).
pub fn loopback_socket_on(ip: Ipv4Addr, bufsize: usize) -> io::Result<UdpSocket> {
    socket_on(IpAddr::V4(ip), bufsize)
}

/// [`loopback_socket`] on any local address, IPv6 too (`::1`).
pub fn socket_on(ip: IpAddr, bufsize: usize) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind((ip, 0))?;
    s.set_nonblocking(true)?;
    set_buffers(&s, bufsize);
    Ok(s)
}

/// Sets the socket's receive and send buffers to `bufsize` bytes: forced past `net.core.*mem_max` when root
/// (`SO_RCVBUFFORCE`), capped by it otherwise.
pub fn set_buffers(sock: &UdpSocket, bufsize: usize) {
    let fd = sock.as_raw_fd();
    let v = libc::c_int::try_from(bufsize).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        // SAFETY: setsockopt with a c_int value on our own fd.
        unsafe {
            let p = &v as *const libc::c_int as *const libc::c_void;
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, p, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, p, len);
            }
        }
    }
}
