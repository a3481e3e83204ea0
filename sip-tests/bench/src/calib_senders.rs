//! Ways to send the calibrator's packets (issue 20: "make the calibrator the cheapest sender you can build"): the
//! same 172-byte datagrams to the same sinks, through one UDP socket with `sendto` per packet or `sendmmsg` in
//! batches of K, through one connected UDP socket per destination (`send` per packet: no route lookup or address
//! per packet, but one syscall each), or through one raw IPv4 socket (`IPPROTO_RAW`, headers written here, as
//! parkd's `rtp_sender = "raw"` does) with `sendmmsg`. `--calib-senders` ([`crate::calib_report`]) measures each.
//!
//! Not here, and why: UDP GSO (`UDP_SEGMENT`) cuts one buffer into segments for ONE destination, and hold music
//! sends one packet per destination per 20 ms frame, so there is nothing to segment; io_uring was measured inside
//! parkd (`rtp_sender = "io_uring"`, README "How hold music is sent") at 3.65–3.89 µs per packet against 2.78–3.28
//! for the raw socket, so it cannot be the cheapest.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::net;

/// Payload bytes of one packet (an RTP header and 160 bytes of G.711, as a hold packet).
pub const PAYLOAD: usize = 172;
const IP_UDP: usize = 28;

/// How the calibrator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// One unconnected UDP socket, `sendto` per packet.
    SendTo,
    /// One unconnected UDP socket, `sendmmsg` of up to K packets (the calibrator of every other step: K = 64).
    SendMmsg(usize),
    /// One UDP socket connected to each destination, `send` per packet.
    Connected,
    /// One raw IPv4 socket (needs `CAP_NET_RAW`), IPv4/UDP headers written here, `sendmmsg` of up to K packets.
    Raw(usize),
}

impl Way {
    /// The ways `--calib-senders` measures, the reference (the calibrator's own) first.
    pub const ALL: [Way; 7] = [Way::SendMmsg(net::BATCH), Way::SendTo, Way::SendMmsg(8), Way::SendMmsg(1024), Way::Connected, Way::Raw(64), Way::Raw(1024)];

    pub fn name(&self) -> String {
        match self {
            Way::SendTo => "UDP sendto".into(),
            Way::SendMmsg(k) => format!("UDP sendmmsg ×{k}"),
            Way::Connected => "connected UDP send".into(),
            Way::Raw(k) => format!("raw IPv4 sendmmsg ×{k}"),
        }
    }
}

/// An open sender: sends `count` packets, round-robin over its destinations; returns how many the kernel took.
/// Everything a send needs is allocated when it opens (no allocation per call, as in parkd's senders).
pub enum Sender {
    SendTo { sock: UdpSocket, names: Vec<libc::sockaddr_in>, payload: Vec<u8> },
    Mmsg { fd: OwnedFd, batch: Mmsg },
    Connected { socks: Vec<UdpSocket>, payload: Vec<u8> },
}

/// `sendmmsg` state: packet for destination `d` is `bufs[d]` to `names[d]`; the headers and iovecs are reused.
pub struct Mmsg {
    names: Vec<libc::sockaddr_in>,
    /// One buffer per destination (the same payload for a UDP socket, a whole frame for the raw socket).
    bufs: Vec<Vec<u8>>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Sender {
    pub fn open(way: Way, dests: &[SocketAddrV4]) -> std::io::Result<Sender> {
        let mut payload = vec![0u8; PAYLOAD];
        payload[0] = 0x80;
        let names: Vec<libc::sockaddr_in> = dests.iter().map(|d| net::from_v4(*d)).collect();
        Ok(match way {
            Way::SendTo => Sender::SendTo { sock: net::loopback_socket(4 << 20)?, names, payload },
            Way::SendMmsg(k) => {
                let fd = OwnedFd::from(net::loopback_socket(4 << 20)?);
                let bufs = vec![payload; names.len()];
                Sender::Mmsg { fd, batch: Mmsg::new(names, bufs, k) }
            }
            Way::Connected => {
                let socks = dests
                    .iter()
                    .map(|d| {
                        let s = net::loopback_socket(4 << 20)?;
                        s.connect(d)?;
                        Ok(s)
                    })
                    .collect::<std::io::Result<Vec<_>>>()?;
                Sender::Connected { socks, payload }
            }
            Way::Raw(k) => {
                // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: fd is a fresh descriptor nobody else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let size: libc::c_int = 4 << 20;
                // SAFETY: a c_int option value of the right size.
                unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, (&size as *const libc::c_int).cast(), 4) };
                let frames = dests.iter().map(|d| frame(*d, &payload)).collect();
                Sender::Mmsg { fd, batch: Mmsg::new(names, frames, k) }
            }
        })
    }

    /// Sends `count` packets starting at destination `*next` (advanced); returns how many were sent.
    pub fn send(&mut self, count: usize, next: &mut usize) -> usize {
        match self {
            Sender::SendTo { sock, names, payload } => send_each(count, names.len(), next, |i| {
                let d = &names[i];
                // SAFETY: payload and d are live for the call.
                unsafe { libc::sendto(sock.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0, (d as *const libc::sockaddr_in).cast(), size_of_sin()) }
            }),
            Sender::Connected { socks, payload } => send_each(count, socks.len(), next, |i| {
                // SAFETY: payload is live for the call.
                unsafe { libc::send(socks[i].as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0) }
            }),
            Sender::Mmsg { fd, batch } => batch.send(fd.as_raw_fd(), count, next),
        }
    }
}

fn size_of_sin() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
}

/// One syscall per packet.
fn send_each(count: usize, n: usize, next: &mut usize, mut one: impl FnMut(usize) -> isize) -> usize {
    if n == 0 {
        return 0;
    }
    let mut sent = 0;
    while sent < count {
        if one(*next % n) < 0 {
            break;
        }
        *next += 1;
        sent += 1;
    }
    sent
}

impl Mmsg {
    fn new(names: Vec<libc::sockaddr_in>, bufs: Vec<Vec<u8>>, batch: usize) -> Mmsg {
        let batch = batch.max(1);
        let iov = (0..batch).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect();
        // SAFETY: an all-zero mmsghdr is valid (null name and iov, zero lengths).
        let hdrs = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
        Mmsg { names, bufs, iov, hdrs }
    }

    /// `sendmmsg` of up to a batch per call until `count` are sent or the kernel refuses.
    fn send(&mut self, fd: i32, count: usize, next: &mut usize) -> usize {
        let n = self.names.len();
        if n == 0 {
            return 0;
        }
        let mut sent = 0;
        while sent < count {
            let k = (count - sent).min(self.hdrs.len());
            for j in 0..k {
                let d = (*next + j) % n;
                self.iov[j] = libc::iovec { iov_base: self.bufs[d].as_ptr() as *mut libc::c_void, iov_len: self.bufs[d].len() };
                let h = &mut self.hdrs[j].msg_hdr;
                h.msg_name = (&self.names[d] as *const libc::sockaddr_in).cast_mut().cast();
                h.msg_namelen = size_of_sin();
                h.msg_iov = &mut self.iov[j];
                h.msg_iovlen = 1;
            }
            // SAFETY: k headers are initialised and point at live data owned by self.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), k as libc::c_uint, 0) };
            if r <= 0 {
                break;
            }
            *next += r as usize;
            sent += r as usize;
        }
        sent
    }
}

/// An IPv4 + UDP frame from 127.0.0.1:40000 to `to` carrying `payload`, DSCP EF as parkd's hold packets. The kernel
/// fills the IP checksum and id (`IPPROTO_RAW` implies `IP_HDRINCL`); the UDP checksum is 0 (none, allowed on IPv4).
fn frame(to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = IP_UDP + payload.len();
    let mut f = Vec::with_capacity(total);
    f.extend_from_slice(&[0x45, 0xb8]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[127, 0, 0, 1]);
    f.extend_from_slice(&to.ip().octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&to.port().to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}
