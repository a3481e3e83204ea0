//! Batched hold-music sends: one `sendmmsg(2)` per run of packets leaving the same socket.
//!
//! Used when call legs share RTP ports (`rtp_legs_per_port > 1`): a pacer slot's packets are
//! sorted by port ([`HoldBatch::sort_by_port`]) and each run of up to [`MAX_BATCH`] packets goes
//! out in one syscall. Each message has two iovecs, the 12-byte RTP header and the shared payload
//! slice ([`bytes::Bytes`]), so nothing is copied; the `mmsghdr`/`iovec`/`sockaddr` arrays are
//! allocated once and reused, so nothing is allocated per packet either.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::media::{HoldBatch, HoldPacket};

/// The most messages handed to one `sendmmsg` call.
pub const MAX_BATCH: usize = 64;

/// What one [`MmsgSender::send`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOutcome {
    /// Packets the kernel accepted.
    pub sent: usize,
    /// Packets the kernel refused with an error other than a full buffer (skipped).
    pub errors: usize,
    /// The socket buffer was full: `run[sent + errors..]` was not sent.
    pub would_block: bool,
}

/// The reused `sendmmsg` argument arrays. Holds raw pointers only during [`MmsgSender::send`].
pub struct MmsgSender {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 2]>,
    addrs: Vec<libc::sockaddr_storage>,
}

impl Default for MmsgSender {
    fn default() -> Self {
        MmsgSender::new()
    }
}

impl MmsgSender {
    /// Arrays for [`MAX_BATCH`] messages.
    pub fn new() -> MmsgSender {
        // SAFETY: these are plain C structs for which all-zero bytes are a valid value.
        let (hdr, iov, addr) = unsafe { (zeroed::<libc::mmsghdr>(), zeroed::<libc::iovec>(), zeroed::<libc::sockaddr_storage>()) };
        MmsgSender { hdrs: vec![hdr; MAX_BATCH], iovs: vec![[iov, iov]; MAX_BATCH], addrs: vec![addr; MAX_BATCH] }
    }

    /// Sends `run` (packets for one socket `fd`) in `sendmmsg` calls of up to [`MAX_BATCH`],
    /// continuing after partial sends, until everything is sent or the socket buffer is full.
    pub fn send(&mut self, fd: RawFd, run: &[HoldPacket]) -> RunOutcome {
        let mut out = RunOutcome::default();
        loop {
            let Some(rest) = run.get(out.sent + out.errors..) else { return out };
            if rest.is_empty() {
                return out;
            }
            let n = self.fill(rest);
            // SAFETY: `hdrs[..n]` point into `iovs`, `addrs` (owned, never reallocated) and into
            // `rest`'s headers and payloads, all alive and unmodified for the duration of the call.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        out.would_block = true;
                        return out;
                    }
                    // The first message failed (e.g. an unreachable address): skip it, go on.
                    _ => out.errors += 1,
                }
            } else {
                out.sent += r as usize;
                if r == 0 {
                    out.would_block = true;
                    return out;
                }
            }
        }
    }

    /// Points the first `min(run.len(), MAX_BATCH)` messages at `run`'s packets. Returns how many.
    fn fill(&mut self, run: &[HoldPacket]) -> usize {
        let mut n = 0;
        for (((p, hdr), iov), addr) in run.iter().zip(self.hdrs.iter_mut()).zip(self.iovs.iter_mut()).zip(self.addrs.iter_mut()) {
            let namelen = write_sockaddr(&p.to, addr);
            iov[0] = libc::iovec { iov_base: p.header.as_ptr() as *mut libc::c_void, iov_len: p.header.len() };
            iov[1] = libc::iovec { iov_base: p.payload.as_ptr() as *mut libc::c_void, iov_len: p.payload.len() };
            // SAFETY: all-zero is a valid msghdr; the fields set below are the ones sendmmsg reads.
            hdr.msg_hdr = unsafe { zeroed() };
            hdr.msg_hdr.msg_name = addr as *mut libc::sockaddr_storage as *mut libc::c_void;
            hdr.msg_hdr.msg_namelen = namelen;
            hdr.msg_hdr.msg_iov = iov.as_mut_ptr();
            hdr.msg_hdr.msg_iovlen = 2;
            hdr.msg_len = 0;
            n += 1;
        }
        n
    }
}

/// Writes `addr` as a C socket address; returns its length.
pub(crate) fn write_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned for any sockaddr.
            unsafe { std::ptr::write(out as *mut libc::sockaddr_storage as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: as above.
            unsafe { std::ptr::write(out as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Sends a sorted hold batch run by run with `sender`, looking sockets up with `fd_of(port)`.
/// Packets refused because a socket buffer is full are appended to `unsent` (when given) for the
/// next turn. Returns (errors, packets not sent because of a full buffer or an unknown port).
pub fn send_batch(
    sender: &mut MmsgSender,
    batch: &HoldBatch,
    fd_of: impl Fn(u16) -> Option<RawFd>,
    mut unsent: Option<&mut HoldBatch>,
) -> (u64, u64) {
    let (mut errors, mut blocked) = (0u64, 0u64);
    for run in batch.port_runs(MAX_BATCH) {
        let Some(fd) = run.first().and_then(|p| fd_of(p.port)) else {
            errors += run.len() as u64;
            continue;
        };
        let o = sender.send(fd, run);
        errors += o.errors as u64;
        if o.would_block {
            let tail = run.get(o.sent + o.errors..).unwrap_or_default();
            match unsent.as_deref_mut() {
                Some(u) => tail.iter().for_each(|p| u.push(p.clone())),
                None => blocked += tail.len() as u64,
            }
        }
    }
    (errors, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn one_sendmmsg_run_delivers_header_and_shared_payload_to_each_destination() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rxs: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let payload = Bytes::from(vec![0x55u8; 160]);
        let port = tx.local_addr().unwrap().port();
        let run: Vec<HoldPacket> = rxs
            .iter()
            .enumerate()
            .map(|(i, r)| HoldPacket { port, to: r.local_addr().unwrap(), header: [i as u8; 12], payload: payload.slice(..) })
            .collect();
        let mut s = MmsgSender::new();
        assert_eq!(s.send(tx.as_raw_fd(), &run), RunOutcome { sent: 3, errors: 0, would_block: false });
        let mut buf = [0u8; 256];
        for (i, r) in rxs.iter().enumerate() {
            r.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let (n, from) = r.recv_from(&mut buf).unwrap();
            assert_eq!((n, from.port()), (172, port));
            assert_eq!(&buf[..12], &[i as u8; 12]);
            assert!(buf[12..172].iter().all(|b| *b == 0x55));
        }
    }
}
