//! Batched IO on the SIP UDP socket: every datagram already queued in one `recvmmsg(2)`, and every UDP output of a
//! batch in one `sendmmsg(2)` (issue 20).
//!
//! At a few hundred cycles per second each datagram arrives alone, and what this saves is the second receive call
//! that used to find the queue empty (`EAGAIN`) after each one: [`RecvBatch::recv`] tells the driver whether it
//! emptied the queue (fewer than [`BATCH`] returned), so the driver can clear the socket's readiness without
//! asking the kernel again. Under load, one call takes up to [`BATCH`] datagrams and one call sends the answers.
//! The argument arrays and buffers are allocated once and reused; nothing is allocated per datagram.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use bytes::Bytes;

use super::syscall_sender::write_sockaddr;

/// The most datagrams taken (or sent) by one call.
pub const BATCH: usize = 32;
/// The largest datagram received whole (a larger one is truncated, flagged and refused by the size check).
const MAX_DATAGRAM: usize = 65_535;

/// Reused `recvmmsg` buffers: [`BATCH`] slots of [`MAX_DATAGRAM`] bytes (touched only as far as datagrams fill
/// them), their addresses and headers.
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![0; BATCH * MAX_DATAGRAM],
            // SAFETY: all-zero bytes are valid for these plain C structs (null pointers are overwritten before use).
            addrs: vec![unsafe { zeroed() }; BATCH],
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            hdrs: vec![unsafe { zeroed() }; BATCH],
            len: 0,
        }
    }

    /// Takes every datagram queued on `fd` (non-blocking), up to [`BATCH`]. `Ok(true)`: the queue is empty now
    /// (fewer than [`BATCH`] were there, or none: `WouldBlock` is `Ok(true)` with [`len`](Self::len) 0).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<bool> {
        self.len = 0;
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            let (Some(iov), Some(addr), Some(hdr)) = (self.iovs.get_mut(i), self.addrs.get_mut(i), self.hdrs.get_mut(i)) else { break };
            // SAFETY: `i * MAX_DATAGRAM` is within `bufs` (BATCH * MAX_DATAGRAM bytes).
            *iov = libc::iovec { iov_base: unsafe { base.add(i * MAX_DATAGRAM) }.cast(), iov_len: MAX_DATAGRAM };
            hdr.msg_hdr = libc::msghdr {
                msg_name: (addr as *mut libc::sockaddr_storage).cast(),
                msg_namelen: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                msg_iov: iov,
                msg_iovlen: 1,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            };
            hdr.msg_len = 0;
        }
        loop {
            // SAFETY: every header points into this struct's own arrays, valid and unaliased for the call.
            let r = unsafe { libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            if r >= 0 {
                self.len = r as usize;
                return Ok(self.len < BATCH);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(true),
                _ => return Err(e),
            }
        }
    }

    /// Forgets the last receive's datagrams (before a receive that may not run: see the SIP driver).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Datagrams taken by the last [`recv`](Self::recv).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i` of the last receive: its sender and bytes (a truncated one is cut at [`MAX_DATAGRAM`]).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.len {
            return None;
        }
        let hdr = self.hdrs.get(i)?;
        let from = read_sockaddr(self.addrs.get(i)?)?;
        let start = i * MAX_DATAGRAM;
        let bytes = self.bufs.get(start..start + (hdr.msg_len as usize).min(MAX_DATAGRAM))?;
        Some((from, bytes))
    }
}

/// UDP datagrams queued while the driver drains the core, sent together by [`SendBatch::flush`].
pub struct SendBatch {
    queued: Vec<(Bytes, SocketAddr)>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

/// What a flush did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    /// Datagrams the kernel refused (buffer full, unreachable): dropped, as a failed `sendto` was; SIP
    /// retransmission covers them. The first refusal's error, for the log.
    pub failed: usize,
    pub first_error: Option<(SocketAddr, io::ErrorKind)>,
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            queued: Vec::with_capacity(BATCH),
            // SAFETY: as in RecvBatch::new.
            addrs: vec![unsafe { zeroed() }; BATCH],
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            hdrs: vec![unsafe { zeroed() }; BATCH],
        }
    }

    /// Queues `bytes` for `to` (already in the form the socket sends to).
    pub fn push(&mut self, bytes: Bytes, to: SocketAddr) {
        self.queued.push((bytes, to));
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends everything queued on `fd`, in order, [`BATCH`] per `sendmmsg`; a datagram the kernel refuses is
    /// dropped and the rest still go.
    pub fn flush(&mut self, fd: RawFd) -> Flushed {
        let mut out = Flushed::default();
        let mut done = 0;
        while done < self.queued.len() {
            let chunk = self.queued.get(done..).unwrap_or_default();
            let n = chunk.len().min(BATCH);
            for (i, (bytes, to)) in chunk.iter().take(n).enumerate() {
                let (Some(iov), Some(addr), Some(hdr)) = (self.iovs.get_mut(i), self.addrs.get_mut(i), self.hdrs.get_mut(i)) else { break };
                let namelen = write_sockaddr(to, addr);
                *iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
                hdr.msg_hdr = libc::msghdr {
                    msg_name: (addr as *mut libc::sockaddr_storage).cast(),
                    msg_namelen: namelen,
                    msg_iov: iov,
                    msg_iovlen: 1,
                    msg_control: std::ptr::null_mut(),
                    msg_controllen: 0,
                    msg_flags: 0,
                };
                hdr.msg_len = 0;
            }
            // SAFETY: the first `n` headers point at this struct's arrays and at `queued`'s bytes, all alive and
            // unchanged for the call; the kernel only reads them.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
            if r > 0 {
                out.sent += r as usize;
                done += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first message of the chunk was refused: drop it and go on with the rest.
            out.failed += 1;
            if out.first_error.is_none() {
                out.first_error = chunk.first().map(|(_, to)| (*to, e.kind()));
            }
            done += 1;
        }
        self.queued.clear();
        out
    }
}

/// The address in `s`, IPv4 or IPv6 (`None` for another family).
fn read_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is large enough and aligned.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn every_queued_datagram_comes_in_one_call_with_its_sender_and_answers_leave_in_one_call_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut rb = RecvBatch::new();
        assert!(rb.recv(server.as_raw_fd()).unwrap(), "nothing queued: empty");
        assert!(rb.is_empty());
        for i in 0..5u8 {
            client.send_to(&vec![i; 100 + i as usize], server.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rb.recv(server.as_raw_fd()).unwrap(), "fewer than a batch: the queue is empty");
        assert_eq!(rb.len(), 5);
        let mut sb = SendBatch::new();
        for i in 0..5 {
            let (from, bytes) = rb.get(i).unwrap();
            assert_eq!(from, client.local_addr().unwrap());
            assert_eq!(bytes, vec![i as u8; 100 + i].as_slice());
            sb.push(Bytes::copy_from_slice(bytes), from);
        }
        assert!(rb.get(5).is_none());
        assert_eq!(sb.flush(server.as_raw_fd()), Flushed { sent: 5, failed: 0, first_error: None });
        assert!(sb.is_empty());
        let mut buf = [0u8; 256];
        for i in 0..5u8 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], vec![i; 100 + i as usize].as_slice(), "in order");
        }
    }

    #[test]
    fn a_full_queue_says_so_and_a_refused_datagram_does_not_stop_the_others() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..BATCH + 3 {
            client.send_to(b"x", server.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut rb = RecvBatch::new();
        assert!(!rb.recv(server.as_raw_fd()).unwrap(), "a whole batch: more may be queued");
        assert_eq!(rb.len(), BATCH);
        assert!(rb.recv(server.as_raw_fd()).unwrap());
        assert_eq!(rb.len(), 3);
        // An IPv6 destination from an IPv4 socket is refused; the datagrams around it still go.
        let mut sb = SendBatch::new();
        let to = client.local_addr().unwrap();
        sb.push(Bytes::from_static(b"a"), to);
        sb.push(Bytes::from_static(b"b"), "[::1]:9".parse().unwrap());
        sb.push(Bytes::from_static(b"c"), to);
        let f = sb.flush(server.as_raw_fd());
        assert_eq!((f.sent, f.failed), (2, 1));
        assert_eq!(f.first_error.map(|(a, _)| a), Some("[::1]:9".parse().unwrap()));
        client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'a');
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'c');
    }
}
