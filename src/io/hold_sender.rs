//! How hold music leaves the media thread: one [`HoldSend`] trait behind the four senders, one retry and
//! error policy ([`HoldOut`]) for all of them, and the `[server] rtp_sender` choice ([`open`]).
//!
//! The senders ([`super::syscall_sender`]'s `sendto` and per-port `sendmmsg`, [`super::raw_sender`]'s one raw
//! socket, [`super::uring_sender`]'s io_uring) only differ in *how* packets reach the kernel. What happens
//! to a packet the kernel refuses is decided here, once, by its errno ([`refusal`]):
//!
//! * `EINTR`: the call is repeated at once (an io_uring completion cannot be repeated in place: it is
//!   treated as a full buffer, so it is retried on the next turn).
//! * `EAGAIN`/`EWOULDBLOCK`, `ENOBUFS` (the socket's or the device's queue is full), or a `sendmmsg` that
//!   accepted nothing: **full**. The packet (and, for a batched syscall, the rest of that socket's run)
//!   is handed back and sent again at the start of the next pacer turn, before that turn's packets. If it
//!   is refused again it is dropped and counted as `would_block`.
//! * Any other errno (`ECONNREFUSED` after an ICMP unreachable, `ENETUNREACH`, `EPERM`, `EMSGSIZE`, ...),
//!   and a packet whose port has no socket: **failed**. It is dropped, counted as a `send_error`, and the
//!   next packet is sent.
//!
//! A sender that returns `Err` (only io_uring can: the ring itself failed) is replaced by the syscalls
//! sender for good, and leaked rather than dropped (sends may still be in flight into its buffers).

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

use super::raw_sender::RawSender;
use super::syscall_sender::{MmsgSender, SendtoSender};
use super::uring_sender::{self, UringSender};
use crate::config::RtpSender;
use crate::media::HoldBatch;

/// The RTP socket a hold packet leaves from: its descriptor, and its index among the sockets given to
/// [`open`] (io_uring's fixed-file number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub fd: RawFd,
    pub file: u32,
}

/// The socket bound to a local RTP port (`None`: no socket there).
pub trait PortSockets {
    fn slot(&self, port: u16) -> Option<Slot>;
}

impl<F: Fn(u16) -> Option<Slot>> PortSockets for F {
    fn slot(&self, port: u16) -> Option<Slot> {
        self(port)
    }
}

/// What a sender did with a batch, besides the packets it handed back as refused by a full buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Packets the kernel accepted.
    pub sent: u64,
    /// Packets refused for good (see the module docs), or for a port without a socket.
    pub errors: u64,
}

/// One way of handing hold packets to the kernel.
pub trait HoldSend {
    /// The `rtp_sender` name it is logged under: `raw`, `io_uring`, `sendto` or `sendmmsg`.
    fn name(&self) -> &'static str;

    /// Sends `packets` (a sender may reorder them, e.g. by port). Each packet ends in exactly one of:
    /// accepted (counted in [`Sent::sent`]), refused for good ([`Sent::errors`]), or refused by a full
    /// buffer and pushed to `full`, as [`refusal`] decides. `Err` only when the sender itself broke.
    fn send(&mut self, packets: &mut HoldBatch, sockets: &dyn PortSockets, full: &mut HoldBatch) -> io::Result<Sent>;
}

/// What to do with a packet the kernel refused (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `EINTR`: repeat the call now.
    Interrupted,
    /// A full buffer: retry on the next turn, once.
    Full,
    /// Anything else: drop and count.
    Failed,
}

/// The one classification of send errnos every sender applies.
pub fn refusal(errno: i32) -> Refusal {
    match errno {
        libc::EINTR => Refusal::Interrupted,
        libc::ENOBUFS => Refusal::Full,
        e if e == libc::EAGAIN || e == libc::EWOULDBLOCK => Refusal::Full,
        _ => Refusal::Failed,
    }
}

/// [`refusal`] of an `io::Error` (one without an errno is a failure).
pub fn refusal_of(e: &io::Error) -> Refusal {
    e.raw_os_error().map_or(Refusal::Failed, refusal)
}

/// The errno of the last failed libc call.
pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// What one pacer turn's sending did, for the io counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Turn {
    pub sent: u64,
    /// Dropped: refused for good, or no socket for the port.
    pub errors: u64,
    /// Dropped: refused by a full buffer twice (this turn, after last turn's refusal).
    pub would_block: u64,
}

/// The hold sender in use and the policy around it: last turn's full-buffer refusals go first, once.
pub struct HoldOut {
    sender: Box<dyn HoldSend>,
    /// Legs share ports: the syscalls fallback is `sendmmsg` per port rather than `sendto`.
    shared_ports: bool,
    /// Refused by a full buffer last turn: sent first this turn.
    carried: HoldBatch,
    /// Scratch: carried packets refused again.
    again: HoldBatch,
}

impl HoldOut {
    pub fn new(sender: Box<dyn HoldSend>, shared_ports: bool) -> HoldOut {
        HoldOut { sender, shared_ports, carried: HoldBatch::with_capacity(64), again: HoldBatch::with_capacity(64) }
    }

    /// The sender's name.
    pub fn name(&self) -> &'static str {
        self.sender.name()
    }

    /// Sends last turn's full-buffer refusals (dropped and counted if refused again), then `batch`
    /// (whose full-buffer refusals are kept for the next turn).
    pub fn send_turn(&mut self, batch: &mut HoldBatch, sockets: &dyn PortSockets) -> Turn {
        let mut turn = Turn::default();
        let mut carried = std::mem::take(&mut self.carried);
        if !carried.is_empty() {
            self.again.clear();
            let r = self.sender.send(&mut carried, sockets, &mut self.again);
            self.add(&mut turn, r);
            turn.would_block += self.again.len() as u64;
            self.again.clear();
        }
        carried.clear();
        self.carried = carried;
        let r = self.sender.send(batch, sockets, &mut self.carried);
        if self.add(&mut turn, r) {
            // The sender broke while sending this turn: its fallback sends the batch.
            self.carried.clear();
            let r = self.sender.send(batch, sockets, &mut self.carried);
            self.add(&mut turn, r);
        }
        turn
    }

    /// Adds a send's counts; on `Err`, swaps in the syscalls sender (leaking the broken one) and says so.
    fn add(&mut self, turn: &mut Turn, r: io::Result<Sent>) -> bool {
        match r {
            Ok(s) => {
                turn.sent += s.sent;
                turn.errors += s.errors;
                false
            }
            Err(e) => {
                let fallback = syscalls_sender(self.shared_ports);
                tracing::error!(sender = self.sender.name(), error = %e, fallback = fallback.name(), "hold music sender failed; hold music falls back to sendto/sendmmsg");
                // Sends may still be in flight and point into the broken sender's buffers: never free them.
                std::mem::forget(std::mem::replace(&mut self.sender, fallback));
                true
            }
        }
    }
}

/// `sendmmsg` per port when legs share ports, else `sendto` per packet.
fn syscalls_sender(shared_ports: bool) -> Box<dyn HoldSend> {
    match shared_ports {
        true => Box::new(MmsgSender::new()),
        false => Box::new(SendtoSender::new()),
    }
}

/// Why the chosen hold sender cannot be used.
#[derive(Debug)]
pub enum OpenError {
    /// `raw` was asked for and the raw socket could not be opened.
    Raw(io::Error),
    /// `io_uring` was asked for and the kernel refused it.
    IoUring(io::Error),
}

/// The hold sender `choice` asks for, set up on the calling thread (the media thread: the io_uring ring
/// is single-issuer) over `fds` (socket `i` is fixed file `i`). `auto`: a raw socket when parkd may open
/// one, else io_uring when the kernel allows it, else syscalls. Logs one line: which sender and why.
pub fn open(choice: RtpSender, bind_ip: IpAddr, fds: &[RawFd], shared_ports: bool) -> Result<HoldOut, OpenError> {
    if choice == RtpSender::Syscalls {
        tracing::info!(sender = "syscalls", ipv6_legs = "same sender", "hold music sender: sendto/sendmmsg (rtp_sender = \"syscalls\")");
        return Ok(HoldOut::new(syscalls_sender(shared_ports), shared_ports));
    }
    let mut raw_refused = None;
    if matches!(choice, RtpSender::Raw | RtpSender::Auto) {
        // Dual-stack RTP sockets (`[::]`): IPv4 legs take the raw socket (the kernel fills the source address),
        // IPv6 legs leave from their own sockets.
        let src = match bind_ip {
            IpAddr::V4(ip) => Ok(ip),
            IpAddr::V6(ip) if ip.is_unspecified() => Ok(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "RTP is bound to an IPv6-only address; raw sending is IPv4 only")),
        };
        match src.and_then(RawSender::new) {
            Ok(raw) => {
                let ipv6_legs = if bind_ip.is_ipv6() { "sendto from the leg's socket" } else { "none (RTP is IPv4)" };
                tracing::info!(sender = "raw", ipv6_legs, "hold music sender: one raw socket, one sendmmsg per pacer turn, IPv4 legs (rtp_sender = \"{}\")", choice.name());
                return Ok(HoldOut::new(Box::new(raw), shared_ports));
            }
            Err(e) if choice == RtpSender::Raw => return Err(OpenError::Raw(e)),
            Err(e) => raw_refused = Some(e),
        }
    }
    match UringSender::new(uring_sender::RING_ENTRIES, fds) {
        Ok(ring) => {
            tracing::info!(sender = "io_uring", ipv6_legs = "same sender", sockets = fds.len(), raw_refused = ?raw_refused.map(|e| e.to_string()), "hold music sender: io_uring, one submission per pacer turn (rtp_sender = \"{}\")", choice.name());
            Ok(HoldOut::new(Box::new(ring), shared_ports))
        }
        Err(e) if choice == RtpSender::IoUring => Err(OpenError::IoUring(e)),
        Err(e) => {
            tracing::info!(sender = "syscalls", ipv6_legs = "same sender", error = %e, raw_refused = ?raw_refused.map(|e| e.to_string()), "hold music sender: sendto/sendmmsg, neither a raw socket nor io_uring is available (rtp_sender = \"auto\")");
            Ok(HoldOut::new(syscalls_sender(shared_ports), shared_ports))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::HoldPacket;
    use bytes::Bytes;
    use std::collections::VecDeque;

    fn packet(tag: u8) -> HoldPacket {
        HoldPacket { port: 20_000, to: "127.0.0.1:4000".parse().unwrap(), header: [tag; 12], payload: Bytes::from_static(&[0; 160]) }
    }

    fn batch(tags: &[u8]) -> HoldBatch {
        let mut b = HoldBatch::with_capacity(tags.len());
        tags.iter().for_each(|t| b.push(packet(*t)));
        b
    }

    /// A sender that answers each packet from a script (by errno, 0 = accepted) and records what it saw.
    struct Scripted {
        answers: VecDeque<i32>,
        broken: bool,
    }

    impl HoldSend for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn send(&mut self, packets: &mut HoldBatch, _: &dyn PortSockets, full: &mut HoldBatch) -> io::Result<Sent> {
            if self.broken {
                return Err(io::Error::other("ring failed"));
            }
            let mut out = Sent::default();
            for p in packets.packets() {
                loop {
                    match self.answers.pop_front().unwrap_or(0) {
                        0 => out.sent += 1,
                        e => match refusal(e) {
                            Refusal::Interrupted => continue,
                            Refusal::Full => full.push(p.clone()),
                            Refusal::Failed => out.errors += 1,
                        },
                    }
                    break;
                }
            }
            Ok(out)
        }
    }

    fn no_sockets(_: u16) -> Option<Slot> {
        None
    }

    #[test]
    fn errnos_are_classified_once_for_every_sender() {
        assert_eq!(refusal(libc::EINTR), Refusal::Interrupted);
        for full in [libc::EAGAIN, libc::EWOULDBLOCK, libc::ENOBUFS] {
            assert_eq!(refusal(full), Refusal::Full, "errno {full}");
        }
        for failed in [libc::ECONNREFUSED, libc::ENETUNREACH, libc::EHOSTUNREACH, libc::EPERM, libc::EMSGSIZE, libc::EINVAL, libc::EBADF] {
            assert_eq!(refusal(failed), Refusal::Failed, "errno {failed}");
        }
        assert_eq!(refusal_of(&io::Error::from_raw_os_error(libc::ENOBUFS)), Refusal::Full);
        assert_eq!(refusal_of(&io::Error::other("no errno")), Refusal::Failed);
    }

    #[test]
    fn a_full_buffer_refusal_is_retried_first_next_turn_then_dropped_and_counted() {
        // Turn 1: packet 2 full, packet 3 failed, packet 4 interrupted then sent.
        let s = Scripted { answers: [0, libc::EAGAIN, libc::ECONNREFUSED, libc::EINTR, 0].into(), broken: false };
        let mut out = HoldOut::new(Box::new(s), false);
        let t1 = out.send_turn(&mut batch(&[1, 2, 3, 4]), &no_sockets);
        assert_eq!(t1, Turn { sent: 2, errors: 1, would_block: 0 }, "the full one waits for the next turn");
        // Turn 2: the carried packet 2 goes first and is refused again (dropped, counted); 5 is full (carried);
        // 6 is sent. (Sent in another order, the same answers would give other counts.)
        out.sender = Box::new(Scripted { answers: [libc::ENOBUFS, libc::EAGAIN, 0].into(), broken: false });
        let t2 = out.send_turn(&mut batch(&[5, 6]), &no_sockets);
        assert_eq!(t2, Turn { sent: 1, errors: 0, would_block: 1 });
        // Turn 3: packet 5 retried first and accepted.
        out.sender = Box::new(Scripted { answers: VecDeque::new(), broken: false });
        let t3 = out.send_turn(&mut batch(&[7]), &no_sockets);
        assert_eq!(t3, Turn { sent: 2, errors: 0, would_block: 0 });
        assert!(out.carried.is_empty());
    }

    #[test]
    fn a_broken_sender_is_replaced_and_the_turn_still_goes_out() {
        let mut out = HoldOut::new(Box::new(Scripted { answers: VecDeque::new(), broken: true }), false);
        // The fallback (sendto) finds no socket for the port: the packet is counted as an error, not lost silently.
        let t = out.send_turn(&mut batch(&[1]), &no_sockets);
        assert_eq!((out.name(), t), ("sendto", Turn { sent: 0, errors: 1, would_block: 0 }));
        let mut out = HoldOut::new(Box::new(Scripted { answers: VecDeque::new(), broken: true }), true);
        out.send_turn(&mut batch(&[1]), &no_sockets);
        assert_eq!(out.name(), "sendmmsg");
    }
}
