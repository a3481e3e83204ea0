//! The plain-syscall hold senders (`rtp_sender = "syscalls"`, and `auto`'s last choice): one `sendto` per
//! packet from its leg's socket ([`SendtoSender`], one leg per port), or one `sendmmsg(2)` per run of
//! packets leaving the same socket ([`MmsgSender`], legs sharing ports). What happens to refused packets is
//! [`super::hold_sender`]'s policy.
//!
//! `sendto` assembles each packet (12-byte header + payload) in one reused frame. `sendmmsg` gives each
//! message two iovecs, the header and the shared payload slice ([`bytes::Bytes`]), so nothing is copied;
//! its `mmsghdr`/`iovec`/`sockaddr` arrays are allocated once and reused. Nothing is allocated per packet.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::hold_sender::{last_errno, refusal, HoldSend, PortSockets, Refusal, Sent};
use crate::media::{HoldBatch, HoldPacket};

/// The most messages handed to one `sendmmsg` call.
pub const MAX_BATCH: usize = 64;
/// The largest hold packet `sendto` sends (header + payload); a larger one is a failure.
const MAX_PACKET: usize = 2048;

/// One `sendto` per packet, from the socket of the packet's port.
pub struct SendtoSender {
    frame: Box<[u8; MAX_PACKET]>,
    addr: libc::sockaddr_storage,
}

impl Default for SendtoSender {
    fn default() -> Self {
        SendtoSender::new()
    }
}

impl SendtoSender {
    pub fn new() -> SendtoSender {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        SendtoSender { frame: Box::new([0; MAX_PACKET]), addr: unsafe { zeroed() } }
    }

    /// Sends one packet; counts it in `out` or hands it to `full` (see [`super::hold_sender`]).
    pub(crate) fn send_one(&mut self, p: &HoldPacket, sockets: &dyn PortSockets, full: &mut HoldBatch, out: &mut Sent) {
        let total = p.header.len() + p.payload.len();
        let (Some(slot), Some(frame)) = (sockets.slot(p.port), self.frame.get_mut(..total)) else {
            out.errors += 1;
            return;
        };
        let (header, body) = frame.split_at_mut(p.header.len());
        header.copy_from_slice(&p.header);
        body.copy_from_slice(&p.payload);
        let namelen = write_sockaddr(&p.to, &mut self.addr);
        loop {
            // SAFETY: `frame` and `addr` are valid for the lengths given, for the duration of the call.
            let r = unsafe {
                libc::sendto(slot.fd, frame.as_ptr().cast(), total, libc::MSG_DONTWAIT, (&self.addr as *const libc::sockaddr_storage).cast(), namelen)
            };
            if r >= 0 {
                out.sent += 1;
                return;
            }
            match refusal(last_errno()) {
                Refusal::Interrupted => continue,
                Refusal::Full => full.push(p.clone()),
                Refusal::Failed => out.errors += 1,
            }
            return;
        }
    }
}

impl HoldSend for SendtoSender {
    fn name(&self) -> &'static str {
        "sendto"
    }

    fn send(&mut self, packets: &mut HoldBatch, sockets: &dyn PortSockets, full: &mut HoldBatch) -> io::Result<Sent> {
        let mut out = Sent::default();
        for p in packets.packets() {
            self.send_one(p, sockets, full, &mut out);
        }
        Ok(out)
    }
}

/// The reused `sendmmsg` argument arrays. Holds raw pointers only during a send.
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

impl HoldSend for MmsgSender {
    fn name(&self) -> &'static str {
        "sendmmsg"
    }

    /// Sorts `packets` by port and sends each port's run with `sendmmsg`; when a socket's buffer is full,
    /// the rest of its run goes to `full`.
    fn send(&mut self, packets: &mut HoldBatch, sockets: &dyn PortSockets, full: &mut HoldBatch) -> io::Result<Sent> {
        let mut out = Sent::default();
        packets.sort_by_port();
        for run in packets.port_runs(MAX_BATCH) {
            let Some(slot) = run.first().and_then(|p| sockets.slot(p.port)) else {
                out.errors += run.len() as u64;
                continue;
            };
            let done = self.send_run(slot.fd, run, &mut out);
            if let Some(tail) = run.get(done..) {
                tail.iter().for_each(|p| full.push(p.clone()));
            }
        }
        Ok(out)
    }
}

impl MmsgSender {
    /// Arrays for [`MAX_BATCH`] messages.
    pub fn new() -> MmsgSender {
        // SAFETY: these are plain C structs for which all-zero bytes are a valid value.
        let (hdr, iov, addr) = unsafe { (zeroed::<libc::mmsghdr>(), zeroed::<libc::iovec>(), zeroed::<libc::sockaddr_storage>()) };
        MmsgSender { hdrs: vec![hdr; MAX_BATCH], iovs: vec![[iov, iov]; MAX_BATCH], addrs: vec![addr; MAX_BATCH] }
    }

    /// Sends `run` (packets for one socket `fd`) in `sendmmsg` calls of up to [`MAX_BATCH`], continuing
    /// after partial sends and past failed messages, until everything is done or the buffer is full.
    /// Returns how many packets were done (sent or failed): `run[done..]` was refused by a full buffer.
    pub fn send_run(&mut self, fd: RawFd, run: &[HoldPacket], out: &mut Sent) -> usize {
        let mut done = 0;
        loop {
            let Some(rest) = run.get(done..).filter(|r| !r.is_empty()) else { return done };
            let n = self.fill(rest);
            // SAFETY: `hdrs[..n]` point into `iovs`, `addrs` (owned, never reallocated) and into
            // `rest`'s headers and payloads, all alive and unmodified for the duration of the call.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
            if r > 0 {
                out.sent += r as u64;
                done += r as usize;
                continue;
            }
            // Nothing accepted without an error is a full buffer too.
            let errno = if r == 0 { libc::EAGAIN } else { last_errno() };
            match refusal(errno) {
                Refusal::Interrupted => continue,
                Refusal::Full => return done,
                // The first message failed (e.g. an unreachable address): skip it, go on.
                Refusal::Failed => {
                    out.errors += 1;
                    done += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hold_sender::Slot;
    use bytes::Bytes;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn slot_of(sock: &UdpSocket) -> impl Fn(u16) -> Option<Slot> + '_ {
        let port = sock.local_addr().unwrap().port();
        move |p| (p == port).then_some(Slot { fd: sock.as_raw_fd(), file: 0 })
    }

    #[test]
    fn one_sendmmsg_run_delivers_header_and_shared_payload_to_each_destination() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rxs: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let payload = Bytes::from(vec![0x55u8; 160]);
        let port = tx.local_addr().unwrap().port();
        let mut batch = HoldBatch::with_capacity(4);
        for (i, r) in rxs.iter().enumerate() {
            batch.push(HoldPacket { port, to: r.local_addr().unwrap(), header: [i as u8; 12], payload: payload.slice(..) });
        }
        // A packet for a port without a socket fails alone.
        batch.push(HoldPacket { port: port ^ 2, to: rxs[0].local_addr().unwrap(), header: [9; 12], payload: payload.slice(..) });
        let mut full = HoldBatch::default();
        let out = MmsgSender::new().send(&mut batch, &slot_of(&tx), &mut full).unwrap();
        assert_eq!((out, full.len()), (Sent { sent: 3, errors: 1 }, 0));
        let mut buf = [0u8; 256];
        for (i, r) in rxs.iter().enumerate() {
            r.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let (n, from) = r.recv_from(&mut buf).unwrap();
            assert_eq!((n, from.port()), (172, port));
            assert_eq!(&buf[..12], &[i as u8; 12]);
            assert!(buf[12..172].iter().all(|b| *b == 0x55));
        }
    }

    #[test]
    fn sendto_assembles_each_packet_and_fails_what_it_cannot_send() {
        let (tx, rx) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        let port = tx.local_addr().unwrap().port();
        let to = rx.local_addr().unwrap();
        let mut batch = HoldBatch::with_capacity(3);
        batch.push(HoldPacket { port, to, header: [1; 12], payload: Bytes::from(vec![0x55u8; 160]) });
        batch.push(HoldPacket { port, to, header: [2; 12], payload: Bytes::from(vec![0; MAX_PACKET]) }); // too large
        batch.push(HoldPacket { port: port ^ 2, to, header: [3; 12], payload: Bytes::from(vec![0; 160]) }); // no socket
        let mut full = HoldBatch::default();
        let out = SendtoSender::new().send(&mut batch, &slot_of(&tx), &mut full).unwrap();
        assert_eq!((out, full.len()), (Sent { sent: 1, errors: 2 }, 0));
        rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 256];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!((n, from.port(), buf[0], buf[12]), (172, port, 1, 0x55));
    }
}
