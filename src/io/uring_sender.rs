//! Hold music through io_uring: one submission per pacer turn for every due hold packet, on every
//! RTP socket at once (`[server] rtp_sender = "io_uring"`, or `"auto"` when the kernel allows it).
//!
//! `sendmmsg` batches only packets leaving one socket; with one RTP port per call leg a pacer turn
//! touches hundreds of sockets, so it paid one `sendto` per packet. Here each packet is one
//! operation on a *registered* socket (fixed file: no fd-table lookup), and the whole turn is handed
//! to the kernel with one `io_uring_enter`.
//!
//! The operation is `IORING_OP_SEND` with a destination address (kernel 6.0+) of the packet
//! assembled in a per-entry frame of the arena (a 172-byte copy for a G.711 frame): measured ~10 %
//! cheaper per packet than `IORING_OP_SENDMSG`, whose `msghdr` and two iovecs the kernel must copy
//! and import for every packet. Packets larger than a frame, or kernels without `SEND` to an
//! address, use `SENDMSG` with two iovecs (the 12-byte header and the shared payload slice, not
//! copied). The frame/`msghdr`/`iovec`/`sockaddr` arenas are allocated once, sized to the ring,
//! and reused: nothing is allocated per packet.
//!
//! Every send carries `MSG_DONTWAIT`, so the kernel never parks one to wait for buffer space: it
//! completes inline during the submit, with the byte count or `-EAGAIN` (full socket buffer).
//! [`UringSender::send`] still waits for every completion of a chunk before it reuses the arena or
//! returns (the packets' header and payload must stay valid until then). Batches larger than the
//! ring go out in ring-sized chunks, in order.

use std::io;
use std::os::fd::RawFd;

use super::hold_sender::{HoldSend, PortSockets, Sent};
use crate::media::{HoldBatch, HoldPacket};

/// Submission-queue entries of the media thread's ring: far more than one pacer turn's packets
/// (a 1 ms slot of 10,000 streams is 500 packets); larger batches are sent in chunks.
pub const RING_ENTRIES: u32 = 4096;

#[cfg(target_os = "linux")]
pub use linux::UringSender;

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use crate::io::hold_sender::{refusal, Refusal};
    use crate::io::syscall_sender::write_sockaddr;
    use io_uring::{opcode, register::Probe, types, IoUring};
    use std::mem::zeroed;

    /// Bytes of one arena frame: an RTP header plus up to 244 bytes of payload (a 20 ms G.711
    /// frame is 160). Larger packets go out with `SENDMSG`, uncopied.
    pub const FRAME_BYTES: usize = 256;

    /// An io_uring with the RTP sockets registered as fixed files, and the reused per-entry
    /// frame/`msghdr`/`iovec`/`sockaddr` arenas. Must be created on the thread that sends (the
    /// ring is set up single-issuer when the kernel supports it).
    pub struct UringSender {
        // Declared first so it is dropped (closed) before the arenas it may point into.
        ring: IoUring,
        hdrs: Vec<libc::msghdr>,
        iovs: Vec<[libc::iovec; 2]>,
        addrs: Vec<libc::sockaddr_storage>,
        frames: Vec<[u8; FRAME_BYTES]>,
        /// The kernel's `IORING_OP_SEND` takes a destination address (6.0+, with `SEND_ZC`).
        send_to: bool,
    }

    impl UringSender {
        /// Sets up a ring of `entries` (rounded up to a power of two by the kernel) and registers
        /// `fds` as fixed files: file `i` of a send is `fds[i]`. Fails when the kernel refuses
        /// io_uring (`kernel.io_uring_disabled`, a seccomp profile, a kernel without it) or lacks
        /// `IORING_OP_SENDMSG`.
        pub fn new(entries: u32, fds: &[RawFd]) -> io::Result<UringSender> {
            // Fewer wake-ups and no cross-thread completion work when the kernel has these (6.1+);
            // plain ring otherwise.
            let ring = match IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_submit_all().build(entries) {
                Ok(r) => r,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(entries)?,
                Err(e) => return Err(e),
            };
            let mut probe = Probe::new();
            ring.submitter().register_probe(&mut probe)?;
            if !probe.is_supported(opcode::SendMsg::CODE) {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "the kernel's io_uring lacks IORING_OP_SENDMSG"));
            }
            // `SEND` with a destination address came with `SEND_ZC` (6.0); before, it is EINVAL.
            let send_to = probe.is_supported(opcode::Send::CODE) && probe.is_supported(opcode::SendZc::CODE);
            if !fds.is_empty() {
                ring.submitter().register_files(fds)?;
            }
            let n = ring.params().sq_entries() as usize;
            // SAFETY: plain C structs for which all-zero bytes are a valid value.
            let (hdr, iov, addr) = unsafe { (zeroed::<libc::msghdr>(), zeroed::<libc::iovec>(), zeroed::<libc::sockaddr_storage>()) };
            Ok(UringSender { ring, hdrs: vec![hdr; n], iovs: vec![[iov, iov]; n], addrs: vec![addr; n], frames: vec![[0; FRAME_BYTES]; n], send_to })
        }

        /// Entries of one submission (the chunk size of [`UringSender::send`]).
        pub fn capacity(&self) -> usize {
            self.hdrs.len()
        }

        /// Sends `packets` in order, one `SEND` (or `SENDMSG`) each on the fixed file of the packet's port,
        /// one `io_uring_enter` per ring-sized chunk, and reaps every completion before returning. Packets
        /// refused by a full socket buffer (or interrupted) go to `full`.
        ///
        /// An `Err` means the ring itself failed (not a packet): the caller must stop using this
        /// sender and must not drop it (sends may still be in flight; leak it).
        fn send_packets(&mut self, packets: &[HoldPacket], sockets: &dyn PortSockets, full: &mut HoldBatch) -> io::Result<Sent> {
            let mut out = Sent::default();
            for chunk in packets.chunks(self.capacity().max(1)) {
                let pushed = self.push_chunk(chunk, sockets, &mut out);
                let mut reaped = 0;
                let mut want = 0; // first pass: submit, then reap what completed inline
                while reaped < pushed {
                    match self.ring.submit_and_wait(want) {
                        Ok(_) => {}
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                        Err(e) => return Err(e),
                    }
                    for cqe in self.ring.completion() {
                        reaped += 1;
                        let r = cqe.result();
                        if r >= 0 {
                            out.sent += 1;
                            continue;
                        }
                        // A completion cannot be repeated in place: an interrupted send waits for the next turn too.
                        match (refusal(-r), chunk.get(cqe.user_data() as usize)) {
                            (Refusal::Full | Refusal::Interrupted, Some(p)) => full.push(p.clone()),
                            _ => out.errors += 1,
                        }
                    }
                    want = 1;
                }
            }
            Ok(out)
        }

        /// Fills arena entry `i` for `chunk[i]` and queues its `SEND` or `SENDMSG` (user data `i`). Packets
        /// whose port has no registered socket are counted as errors. Returns how many were queued.
        fn push_chunk(&mut self, chunk: &[HoldPacket], sockets: &dyn PortSockets, out: &mut Sent) -> usize {
            let mut sq = self.ring.submission();
            let mut pushed = 0;
            let arena = self.hdrs.iter_mut().zip(self.iovs.iter_mut()).zip(self.addrs.iter_mut()).zip(self.frames.iter_mut());
            for (i, (p, (((hdr, iov), addr), frame))) in chunk.iter().zip(arena).enumerate() {
                let Some(file) = sockets.slot(p.port).map(|s| s.file) else {
                    out.errors += 1;
                    continue;
                };
                let namelen = write_sockaddr(&p.to, addr);
                let (hlen, total) = (p.header.len(), p.header.len() + p.payload.len());
                let entry = match frame.get_mut(..total).filter(|_| self.send_to).map(|f| f.split_at_mut(hlen)) {
                    Some((h, body)) => {
                        h.copy_from_slice(&p.header);
                        body.copy_from_slice(&p.payload);
                        opcode::Send::new(types::Fixed(file), frame.as_ptr(), total as u32)
                            .flags(libc::MSG_DONTWAIT)
                            .dest_addr(addr as *const libc::sockaddr_storage as *const libc::sockaddr)
                            .dest_addr_len(namelen)
                            .build()
                    }
                    None => Self::sendmsg_entry(file, p, hdr, iov, addr, namelen),
                };
                // SAFETY: the frame, msghdr, iovecs and sockaddr live in arenas that are neither
                // moved nor rewritten until this chunk's completions are reaped in `send`; the
                // header and payload a `SENDMSG` points at belong to `chunk`, borrowed for the
                // whole of `send`.
                match unsafe { sq.push(&entry.user_data(i as u64)) } {
                    Ok(()) => pushed += 1,
                    // Cannot happen: the queue is empty at the start of a chunk and a chunk is at
                    // most the ring's size. Counted rather than trusted.
                    Err(_) => out.errors += 1,
                }
            }
            pushed
        }

        /// A `SENDMSG` of `p` with two iovecs (header, payload slice: no copy) to `addr`.
        fn sendmsg_entry(file: u32, p: &HoldPacket, hdr: &mut libc::msghdr, iov: &mut [libc::iovec; 2], addr: &mut libc::sockaddr_storage, namelen: libc::socklen_t) -> io_uring::squeue::Entry {
            iov[0] = libc::iovec { iov_base: p.header.as_ptr() as *mut libc::c_void, iov_len: p.header.len() };
            iov[1] = libc::iovec { iov_base: p.payload.as_ptr() as *mut libc::c_void, iov_len: p.payload.len() };
            // SAFETY: all-zero is a valid msghdr; the fields set below are the ones sendmsg reads.
            *hdr = unsafe { zeroed() };
            hdr.msg_name = addr as *mut libc::sockaddr_storage as *mut libc::c_void;
            hdr.msg_namelen = namelen;
            hdr.msg_iov = iov.as_mut_ptr();
            hdr.msg_iovlen = 2;
            opcode::SendMsg::new(types::Fixed(file), hdr as *const libc::msghdr).flags(libc::MSG_DONTWAIT as u32).build()
        }
    }

    impl HoldSend for UringSender {
        fn name(&self) -> &'static str {
            "io_uring"
        }
        fn send(&mut self, packets: &mut HoldBatch, sockets: &dyn PortSockets, full: &mut HoldBatch) -> io::Result<Sent> {
            self.send_packets(packets.packets(), sockets, full)
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub use elsewhere::UringSender;

#[cfg(not(target_os = "linux"))]
mod elsewhere {
    use super::*;

    /// io_uring exists on Linux only: [`UringSender::new`] always fails here.
    pub struct UringSender {
        never: std::convert::Infallible,
    }

    impl UringSender {
        /// Always `Unsupported` outside Linux.
        pub fn new(_entries: u32, _fds: &[RawFd]) -> io::Result<UringSender> {
            Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring exists on Linux only"))
        }
    }

    impl HoldSend for UringSender {
        fn name(&self) -> &'static str {
            "io_uring"
        }
        /// Never called: no value of this type exists.
        fn send(&mut self, _: &mut HoldBatch, _: &dyn PortSockets, _: &mut HoldBatch) -> io::Result<Sent> {
            match self.never {}
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::io::hold_sender::Slot;
    use bytes::Bytes;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A ring over `socks`, or `None` (with the reason printed) when the kernel refuses io_uring.
    fn ring_or_skip(entries: u32, socks: &[UdpSocket]) -> Option<UringSender> {
        let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
        match UringSender::new(entries, &fds) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("SKIPPED: io_uring unavailable on this kernel: {e}");
                None
            }
        }
    }

    fn bound(n: usize) -> Vec<UdpSocket> {
        (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect()
    }

    fn hold_batch(packets: impl IntoIterator<Item = HoldPacket>) -> HoldBatch {
        let mut b = HoldBatch::default();
        packets.into_iter().for_each(|p| b.push(p));
        b
    }

    /// Fixed file `i` is the socket of `ports[i]` (the descriptor is not used by io_uring).
    fn files(ports: &[u16]) -> impl Fn(u16) -> Option<Slot> + '_ {
        |port| ports.iter().position(|p| *p == port).map(|i| Slot { fd: -1, file: i as u32 })
    }

    #[test]
    fn a_batch_larger_than_the_ring_is_sent_completely_and_in_order_per_stream() {
        // Three sending sockets (legs), one phone each; 3 × 30 packets interleaved like a pacer
        // batch, through a ring of 8 entries: 12 chunks.
        let (legs, phones) = (bound(3), bound(3));
        let Some(mut ring) = ring_or_skip(8, &legs) else { return };
        assert_eq!(ring.capacity(), 8);
        let ports: Vec<u16> = legs.iter().map(|s| s.local_addr().unwrap().port()).collect();
        let payload = Bytes::from(vec![0x55u8; 160]);
        let mut batch = HoldBatch::default();
        for seq in 0..30u8 {
            for (leg, phone) in phones.iter().enumerate() {
                let mut header = [leg as u8; 12];
                header[2] = seq;
                batch.push(HoldPacket { port: ports[leg], to: phone.local_addr().unwrap(), header, payload: payload.slice(..) });
            }
        }
        let mut full = HoldBatch::default();
        let out = ring.send(&mut batch, &files(&ports), &mut full).unwrap();
        assert_eq!((out, full.len()), (Sent { sent: 90, errors: 0 }, 0));
        let mut buf = [0u8; 256];
        for (leg, phone) in phones.iter().enumerate() {
            phone.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            for seq in 0..30u8 {
                let (n, from) = phone.recv_from(&mut buf).expect("every packet arrives");
                assert_eq!((n, from.port()), (172, ports[leg]), "from the leg's own socket (symmetric RTP)");
                assert_eq!((buf[0], buf[2]), (leg as u8, seq), "in order within the stream");
                assert!(buf[12..172].iter().all(|b| *b == 0x55), "shared payload follows the header");
            }
        }
    }

    #[test]
    fn a_packet_larger_than_a_frame_goes_out_uncopied_between_small_ones_in_order() {
        let (legs, phones) = (bound(1), bound(1));
        let Some(mut ring) = ring_or_skip(4, &legs) else { return };
        let port = legs[0].local_addr().unwrap().port();
        let to = phones[0].local_addr().unwrap();
        let sizes = [160usize, linux::FRAME_BYTES, 160, 1000, 160];
        let mut batch =
            hold_batch(sizes.iter().enumerate().map(|(i, n)| HoldPacket { port, to, header: [i as u8; 12], payload: Bytes::from(vec![i as u8 + 1; *n]) }));
        let mut full = HoldBatch::default();
        assert_eq!(ring.send(&mut batch, &files(&[port]), &mut full).unwrap(), Sent { sent: 5, errors: 0 });
        phones[0].set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 2048];
        for (i, size) in sizes.iter().enumerate() {
            let (n, _) = phones[0].recv_from(&mut buf).unwrap();
            assert_eq!(n, 12 + size);
            assert_eq!(&buf[..12], &[i as u8; 12]);
            assert!(buf[12..n].iter().all(|b| *b == i as u8 + 1));
        }
    }

    #[test]
    fn a_port_without_a_socket_is_counted_and_the_rest_still_go_out() {
        let (legs, phones) = (bound(1), bound(1));
        let Some(mut ring) = ring_or_skip(4, &legs) else { return };
        let port = legs[0].local_addr().unwrap().port();
        let to = phones[0].local_addr().unwrap();
        let p = |port: u16, tag: u8| HoldPacket { port, to, header: [tag; 12], payload: Bytes::from_static(&[1; 160]) };
        let mut batch = hold_batch([p(port, 1), p(port.wrapping_add(2), 2), p(port, 3)]);
        let mut full = HoldBatch::default();
        let out = ring.send(&mut batch, &files(&[port]), &mut full).unwrap();
        assert_eq!((out, full.len()), (Sent { sent: 2, errors: 1 }, 0));
        phones[0].set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 256];
        for tag in [1, 3] {
            let (n, _) = phones[0].recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0]), (172, tag));
        }
    }
}
