//! Hold music through ONE raw IPv4 socket (`[server] rtp_sender = "raw"`, or `"auto"` when parkd
//! has `CAP_NET_RAW`): every hold packet of a pacer turn, whatever its leg's port, in one `sendmmsg`.
//!
//! Why: with one RTP port per call leg, each hold packet otherwise leaves through its own socket,
//! and the kernel's per-socket work (a cold `struct sock` per packet, the wake-up of the socket's
//! epoll wait queue on every `sock_wfree`) keeps parkd at ~1.3–1.5× the cost of a raw `sendmmsg`
//! of the same packets from one socket (see bench-results/PROFILE.md). A raw socket sends the same
//! datagram — IPv4 + UDP header written here, source port = the leg's port, so the phone sees
//! exactly what the leg's own socket would send (symmetric RTP) — at the one-socket price.
//! Receiving is unchanged: each leg's UDP socket still gets the phone's RTP.
//!
//! The kernel fills the IP total length, header checksum, packet id and (for an unspecified bind
//! address) the source address (raw(7), `IP_HDRINCL`); the UDP checksum is computed here. DSCP is
//! EF (46), as for voice. IPv6 packets are left to the caller (returned, not sent).
//!
//! Per packet, nothing is allocated: frames, addresses, iovecs and message headers live in arenas
//! allocated once and reused; a packet is copied whole (~200 bytes) into its frame so the kernel
//! imports one iovec per message instead of three.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use super::hold_sender::{HoldSend, PortSockets, Sent};
use crate::media::{HoldBatch, HoldPacket};

/// Messages handed to one `sendmmsg` (a 1 ms slot of 10,000 streams is 500 packets).
pub const BATCH: usize = 512;
/// IPv4 header (20) + UDP header (8).
const IP_UDP_LEN: usize = 28;
/// Bytes of one arena frame: IP + UDP + RTP headers and up to 244 bytes of payload (a 20 ms G.711
/// frame is 160). Packets are copied whole into a frame so each message is ONE iovec: the kernel's
/// per-message iovec import is measurably cheaper than for three. Larger packets go out uncopied
/// as three iovecs.
const FRAME: usize = 296;
/// DSCP EF (46) in the IPv4 TOS byte: voice (RFC 4594).
pub const TOS_EF: u8 = 46 << 2;

/// The UDP checksum (RFC 768) of a datagram from `src:sport` to `dst:dport` whose payload is
/// `parts` concatenated; 0 is sent as 0xFFFF.
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, parts: &[&[u8]]) -> u16 {
    let len: usize = 8 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut sum: u32 = 0;
    for w in [src.octets(), dst.octets()] {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]])) + u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    sum += 17 + len as u32 * 2 + u32::from(sport) + u32::from(dport); // pseudo-header proto + length; UDP length again
    // Sum the parts as one byte stream (a part may end on an odd byte).
    let mut odd: Option<u8> = None;
    for part in parts {
        let mut bytes = part.iter();
        if let Some(hi) = odd.take() {
            match bytes.next() {
                Some(lo) => sum += u32::from(u16::from_be_bytes([hi, *lo])),
                None => {
                    odd = Some(hi);
                    continue;
                }
            }
        }
        let rest = bytes.as_slice();
        let mut chunks = rest.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        odd = chunks.remainder().first().copied();
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xFFFF,
        c => c,
    }
}

/// Writes the IPv4 + UDP header of a hold packet into `h`. `src` unspecified = let the kernel choose.
fn write_headers(h: &mut [u8; IP_UDP_LEN], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, rtp_header: &[u8], payload: &[u8]) {
    let udp_len = (8 + rtp_header.len() + payload.len()) as u16;
    *h = [0; IP_UDP_LEN];
    h[0] = 0x45; // IPv4, 5-word header
    h[1] = TOS_EF;
    // [2..4] total length, [4..6] id, [10..12] checksum: filled by the kernel.
    h[6] = 0x40; // don't fragment
    h[8] = 64; // TTL
    h[9] = 17; // UDP
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h[20..22].copy_from_slice(&sport.to_be_bytes());
    h[22..24].copy_from_slice(&dport.to_be_bytes());
    h[24..26].copy_from_slice(&udp_len.to_be_bytes());
    // With an unspecified source the kernel picks it after we checksum: leave the checksum 0 (none).
    if !src.is_unspecified() {
        let c = udp_checksum(src, dst, sport, dport, &[rtp_header, payload]);
        h[26..28].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(target_os = "linux")]
pub use linux::RawSender;

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use crate::io::hold_sender::{last_errno, refusal, Refusal};
    use crate::io::syscall_sender::SendtoSender;
    use std::mem::zeroed;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// The raw socket and its reused arenas.
    pub struct RawSender {
        fd: OwnedFd,
        src: Ipv4Addr,
        headers: Vec<[u8; IP_UDP_LEN]>,
        frames: Vec<[u8; FRAME]>,
        addrs: Vec<libc::sockaddr_in>,
        iovs: Vec<[libc::iovec; 3]>,
        msgs: Vec<libc::mmsghdr>,
        /// The index in the batch of the packet in each arena entry.
        which: Vec<usize>,
        /// IPv6 packets leave from their legs' own sockets.
        v6: SendtoSender,
    }

    // SAFETY: the raw pointers in the arenas point into the arenas themselves or into packets borrowed
    // for the duration of one `send`; nothing is shared between threads while a send runs.
    unsafe impl Send for RawSender {}

    impl RawSender {
        /// Opens the raw socket (needs `CAP_NET_RAW`). `src` is the source address written into the
        /// packets: the address the RTP sockets are bound to (unspecified: the kernel chooses).
        pub fn new(src: Ipv4Addr) -> io::Result<RawSender> {
            // SAFETY: plain socket(2) call; the result is checked before use.
            let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh, owned descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let size: libc::c_int = 4 << 20;
            // SAFETY: setsockopt with a valid c_int option value. A smaller buffer is not fatal.
            unsafe {
                libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, &size as *const _ as *const libc::c_void, std::mem::size_of::<libc::c_int>() as u32);
            }
            // SAFETY: zeroed sockaddr_in / iovec / mmsghdr are valid "empty" values; pointers are set before each send.
            let (addrs, iovs, msgs) = unsafe { (vec![zeroed(); BATCH], vec![[zeroed(); 3]; BATCH], vec![zeroed(); BATCH]) };
            let (headers, frames, which) = (vec![[0; IP_UDP_LEN]; BATCH], vec![[0; FRAME]; BATCH], vec![0; BATCH]);
            Ok(RawSender { fd, src, headers, frames, addrs, iovs, msgs, which, v6: SendtoSender::new() })
        }

        /// Sends every IPv4 packet of `packets` in order, `BATCH` per `sendmmsg`; once the raw socket's
        /// buffer is full, the rest go to `full`. IPv6 packets leave from their legs' sockets (`sendto`).
        fn send_packets(&mut self, packets: &[HoldPacket], sockets: &dyn PortSockets, full: &mut HoldBatch) -> Sent {
            let mut out = Sent::default();
            let (mut n, mut blocked) = (0, false);
            for (i, p) in packets.iter().enumerate() {
                // IPv4 destinations, also as a dual-stack leg names them (IPv4-mapped), take the raw socket.
                let to = match p.to {
                    SocketAddr::V4(to) => to,
                    SocketAddr::V6(to6) => match to6.ip().to_ipv4_mapped() {
                        Some(ip) => std::net::SocketAddrV4::new(ip, to6.port()),
                        None => {
                            self.v6.send_one(p, sockets, full, &mut out);
                            continue;
                        }
                    },
                };
                if blocked {
                    full.push(p.clone());
                    continue;
                }
                let (Some(h), Some(f), Some(a), Some(iov), Some(m), Some(w)) = (
                    self.headers.get_mut(n),
                    self.frames.get_mut(n),
                    self.addrs.get_mut(n),
                    self.iovs.get_mut(n),
                    self.msgs.get_mut(n),
                    self.which.get_mut(n),
                ) else {
                    break;
                };
                *w = i;
                write_headers(h, self.src, *to.ip(), p.port, to.port(), &p.header, &p.payload);
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = 0; // ignored for raw sockets
                a.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
                let len = IP_UDP_LEN + p.header.len() + p.payload.len();
                match f.get_mut(..len) {
                    Some(frame) => {
                        let (ip_udp, rest) = frame.split_at_mut(IP_UDP_LEN);
                        let (rtp, body) = rest.split_at_mut(p.header.len());
                        ip_udp.copy_from_slice(h);
                        rtp.copy_from_slice(&p.header);
                        body.copy_from_slice(&p.payload);
                        iov[0] = libc::iovec { iov_base: frame.as_mut_ptr().cast(), iov_len: len };
                        m.msg_hdr.msg_iovlen = 1;
                    }
                    None => {
                        iov[0] = libc::iovec { iov_base: h.as_mut_ptr().cast(), iov_len: IP_UDP_LEN };
                        iov[1] = libc::iovec { iov_base: p.header.as_ptr() as *mut libc::c_void, iov_len: p.header.len() };
                        iov[2] = libc::iovec { iov_base: p.payload.as_ptr() as *mut libc::c_void, iov_len: p.payload.len() };
                        m.msg_hdr.msg_iovlen = 3;
                    }
                }
                m.msg_hdr.msg_name = (a as *mut libc::sockaddr_in).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = iov.as_mut_ptr();
                m.msg_len = 0;
                n += 1;
                if n == BATCH {
                    blocked = self.flush(n, packets, full, &mut out);
                    n = 0;
                }
            }
            if n > 0 {
                self.flush(n, packets, full, &mut out);
            }
            out
        }

        /// Sends messages `0..n` of the arena; a failed message is counted and skipped. When the socket's
        /// buffer is full, the packets of the messages not sent go to `full` and this returns true.
        fn flush(&mut self, n: usize, packets: &[HoldPacket], full: &mut HoldBatch, out: &mut Sent) -> bool {
            let mut at = 0;
            while at < n {
                let Some(rest) = self.msgs.get_mut(at..n) else { break };
                // SAFETY: `rest` holds `rest.len()` initialised mmsghdr whose pointers point into the
                // arenas and into packets borrowed by `send` for this call.
                let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), rest.as_mut_ptr(), rest.len() as u32, libc::MSG_DONTWAIT) };
                if r > 0 {
                    out.sent += r as u64;
                    at += r as usize;
                    continue;
                }
                // Nothing accepted without an error is a full buffer too.
                match refusal(if r == 0 { libc::EAGAIN } else { last_errno() }) {
                    Refusal::Interrupted => continue,
                    Refusal::Full => {
                        let unsent = self.which.get(at..n).unwrap_or_default();
                        unsent.iter().filter_map(|&i| packets.get(i)).for_each(|p| full.push(p.clone()));
                        return true;
                    }
                    Refusal::Failed => {
                        out.errors += 1;
                        at += 1; // skip the refused message, go on with the rest
                    }
                }
            }
            false
        }
    }

    impl HoldSend for RawSender {
        fn name(&self) -> &'static str {
            "raw"
        }
        fn send(&mut self, packets: &mut HoldBatch, sockets: &dyn PortSockets, full: &mut HoldBatch) -> io::Result<Sent> {
            Ok(self.send_packets(packets.packets(), sockets, full))
        }
    }
}

/// Where raw sockets do not exist: never opens.
#[cfg(not(target_os = "linux"))]
pub struct RawSender;

#[cfg(not(target_os = "linux"))]
impl RawSender {
    pub fn new(_src: Ipv4Addr) -> io::Result<RawSender> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "raw RTP sending needs Linux"))
    }
}

#[cfg(not(target_os = "linux"))]
impl HoldSend for RawSender {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn send(&mut self, _: &mut HoldBatch, _: &dyn PortSockets, _: &mut HoldBatch) -> io::Result<Sent> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "raw RTP sending needs Linux"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_checksum_matches_rfc_768_example_and_split_parts() {
        // A known datagram: 127.0.0.1:20000 → 127.0.0.1:30000, payload "abc" (odd length).
        let whole = udp_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 20000, 30000, &[b"abc"]);
        // Computed by hand: pseudo header 7f00+0001+7f00+0001 + 0011 + 000b, UDP header 4e20+7530+000b+0000,
        // data 6162+6300.
        let mut s: u32 = 0x7f00 + 0x0001 + 0x7f00 + 0x0001 + 0x0011 + 0x000b + 0x4e20 + 0x7530 + 0x000b + 0x6162 + 0x6300;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(whole, !(s as u16));
        // Split anywhere (odd boundaries included), same sum.
        assert_eq!(udp_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 20000, 30000, &[b"a", b"bc"]), whole);
        assert_eq!(udp_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 20000, 30000, &[b"ab", b"", b"c"]), whole);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn raw_hold_packets_arrive_as_udp_from_the_legs_port() {
        use crate::io::hold_sender::Slot;
        use crate::media::rtp::{write_header, Pt, SeqNo, Ssrc};
        use crate::media::Codec;
        use bytes::Bytes;
        use std::net::UdpSocket;
        let mut sender = match RawSender::new(Ipv4Addr::LOCALHOST) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("SKIPPED the raw-socket run: {e} (needs CAP_NET_RAW)");
                return;
            }
        };
        // Five phones, so each one's share of the batch fits its default receive buffer.
        let phones: Vec<UdpSocket> = (0..5).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for p in &phones {
            p.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
        }
        // The "leg" port: any port number; nothing needs to be bound there to send from it.
        let leg_port = 47_000 + (std::process::id() % 1000) as u16;
        let payload = Bytes::from(vec![0x55u8; 160]);
        let mut pkts = HoldBatch::with_capacity(BATCH + 10);
        for i in 0..(BATCH as u16 + 10) {
            pkts.push(HoldPacket {
                port: leg_port,
                to: phones[usize::from(i) % phones.len()].local_addr().unwrap(),
                header: write_header(Pt::from(Codec::Pcmu), false, SeqNo(i), u32::from(i) * 160, Ssrc(7)),
                payload: payload.clone(),
            });
        }
        // Only IPv6 packets use the legs' sockets: here a socket bound to [::1], when the machine has one.
        let v6_leg = UdpSocket::bind("[::1]:0").ok();
        let v6_slot = v6_leg.as_ref().map(|s| (s.local_addr().unwrap().port(), Slot { fd: std::os::fd::AsRawFd::as_raw_fd(s), file: 0 }));
        let sockets = move |p: u16| v6_slot.filter(|(port, _)| *port == p).map(|(_, s)| s);
        let mut full = HoldBatch::default();
        let out = sender.send(&mut pkts, &sockets, &mut full).unwrap();
        assert_eq!((out, full.len()), (Sent { sent: pkts.len() as u64, errors: 0 }, 0), "two sendmmsg chunks, all accepted");
        let pkts = pkts.packets();
        let mut buf = [0u8; 2048];
        for (k, phone) in phones.iter().enumerate() {
            for i in (k..pkts.len()).step_by(phones.len()) {
                let (n, from) = phone.recv_from(&mut buf).unwrap_or_else(|e| panic!("packet {i}: {e} (the kernel drops a bad UDP checksum)"));
                assert_eq!((n, from), (172, SocketAddr::from((Ipv4Addr::LOCALHOST, leg_port))), "a plain UDP datagram from the leg's port");
                assert_eq!(crate::media::rtp::parse(&buf[..n]).map(|r| r.seq.0), Some(i as u16), "in order");
                assert!(buf[12..172].iter().all(|b| *b == 0x55));
            }
        }
        // A packet larger than a frame goes out uncopied (three iovecs), just as intact.
        let big = HoldPacket { port: leg_port, to: phones[0].local_addr().unwrap(), header: write_header(Pt::from(Codec::Pcmu), false, SeqNo(9), 9, Ssrc(7)), payload: Bytes::from(vec![0x66u8; 400]) };
        assert_eq!(sender.send(&mut one(big), &sockets, &mut full).unwrap().sent, 1);
        let (n, _) = phones[0].recv_from(&mut buf).expect("the large packet arrives");
        assert_eq!(n, 412);
        assert!(buf[12..412].iter().all(|b| *b == 0x66));
        // An IPv6 destination leaves from its leg's own socket (a failure when the leg has none).
        let Some(v6_leg) = v6_leg else { return };
        let v6_phone = UdpSocket::bind("[::1]:0").unwrap();
        v6_phone.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
        let v6_port = v6_leg.local_addr().unwrap().port();
        let v6pkt = |port| HoldPacket { port, to: v6_phone.local_addr().unwrap(), header: [0; 12], payload: payload.clone() };
        assert_eq!(sender.send(&mut one(v6pkt(v6_port)), &sockets, &mut full).unwrap(), Sent { sent: 1, errors: 0 });
        assert_eq!(v6_phone.recv_from(&mut buf).map(|(n, from)| (n, from.port())).unwrap(), (172, v6_port));
        assert_eq!(sender.send(&mut one(v6pkt(leg_port)), &sockets, &mut full).unwrap(), Sent { sent: 0, errors: 1 });
    }

    #[cfg(target_os = "linux")]
    fn one(p: HoldPacket) -> HoldBatch {
        let mut b = HoldBatch::with_capacity(1);
        b.push(p);
        b
    }
}
