//! Batched UDP io with `recvmmsg` / `sendmmsg` on IPv4 loopback sockets.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// Nonblocking loopback sockets with big kernel buffers (shared with the test harness).
pub use sip_tests::harness::udp::loopback_socket;

/// Datagrams per batch.
pub const BATCH: usize = 64;
const SLOT: usize = 2048;
const CTRL: usize = 64;

/// Asks the kernel to timestamp every datagram received on `sock` (SO_TIMESTAMPNS).
pub fn enable_rx_timestamps(sock: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int on our own fd.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn to_v4(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)), u16::from_be(sa.sin_port))
}

pub(crate) fn from_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sa
}

/// Reusable buffers for `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    ctrl: Vec<u64>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        // SAFETY: zeroed sockaddr_in / mmsghdr are valid; pointers are set before each call.
        unsafe {
            RecvBatch {
                bufs: vec![0; BATCH * SLOT],
                names: vec![std::mem::zeroed(); BATCH],
                iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
                hdrs: vec![std::mem::zeroed(); BATCH],
                ctrl: vec![0; BATCH * CTRL / 8],
            }
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; calls `f(from, bytes)` for each.
    /// Returns how many were received (0 when the socket is empty).
    pub fn recv(&mut self, sock: &UdpSocket, mut f: impl FnMut(SocketAddrV4, &[u8])) -> usize {
        self.recv_ts(sock, |from, pkt, _| f(from, pkt))
    }

    /// Like [`RecvBatch::recv`], also passing the kernel receive timestamp (ns, CLOCK_REALTIME)
    /// when [`enable_rx_timestamps`] was set on the socket.
    pub fn recv_ts(&mut self, sock: &UdpSocket, mut f: impl FnMut(SocketAddrV4, &[u8], Option<u64>)) -> usize {
        let base = self.bufs.as_mut_ptr();
        let cbase = self.ctrl.as_mut_ptr() as *mut u8;
        for i in 0..BATCH {
            // SAFETY: i * SLOT + SLOT <= bufs.len().
            self.iovs[i] = libc::iovec { iov_base: unsafe { base.add(i * SLOT) } as *mut libc::c_void, iov_len: SLOT };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = &mut self.names[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            // SAFETY: i * CTRL + CTRL <= ctrl's byte length.
            h.msg_control = unsafe { cbase.add(i * CTRL) } as *mut libc::c_void;
            h.msg_controllen = CTRL as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by self.
        let n = unsafe {
            libc::recvmmsg(sock.as_raw_fd(), self.hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for i in 0..n {
            let len = (self.hdrs[i].msg_len as usize).min(SLOT);
            let from = to_v4(&self.names[i]);
            let ts = rx_timestamp(&self.hdrs[i].msg_hdr);
            f(from, &self.bufs[i * SLOT..i * SLOT + len], ts);
        }
        n
    }
}

fn rx_timestamp(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk inside them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Waits up to `timeout_ms` for any of `socks` to become readable.
pub fn wait_readable(socks: &[&UdpSocket], timeout_ms: i32) {
    let mut fds: Vec<libc::pollfd> = socks.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: fds is a live array of pollfd.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
}
