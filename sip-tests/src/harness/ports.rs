//! Free-port allocation so e2e tests can run in parallel.
//!
//! Each test takes a block of 32 consecutive ports between 20000 and 31999 (below Linux's ephemeral range
//! 32768+, so sockets bound to port 0 never collide with it): the first is parkd's SIP port (UDP and TCP),
//! the next 11 are for SIPp instances (`-p` local SIP port, `-cp` control port), the last 20 are parkd's
//! RTP range. Blocks are handed out by a process-wide counter starting at a pid-derived offset, and a block
//! is only used if every one of its ports can be bound right now (other processes, other worktrees).
//! The Rust RTP endpoints bind port 0 (ephemeral range).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

const FIRST_PORT: u32 = 20000;
const BLOCK: u32 = 32;
const BLOCKS: u32 = 375; // 20000 .. 32000
const AUX_PORTS: u16 = 11;

/// The ports one test uses.
#[derive(Debug)]
pub struct PortPlan {
    /// parkd's SIP port (UDP and TCP) on 127.0.0.1.
    pub sip: u16,
    /// parkd's RTP range, inclusive.
    pub rtp_lo: u16,
    pub rtp_hi: u16,
    aux_base: u16,
    aux_next: AtomicU16,
}

impl PortPlan {
    /// Reserve a free block of ports (panics after trying every block).
    pub fn allocate() -> PortPlan {
        static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
        let _ = NEXT.compare_exchange(u32::MAX, std::process::id().wrapping_mul(7919) % BLOCKS, Ordering::SeqCst, Ordering::SeqCst);
        for _ in 0..BLOCKS {
            let block = NEXT.fetch_add(1, Ordering::SeqCst) % BLOCKS;
            let base = FIRST_PORT + block * BLOCK;
            if (0..BLOCK).all(|i| port_is_free(base + i, i <= u32::from(AUX_PORTS))) {
                let base = base as u16;
                return PortPlan {
                    sip: base,
                    rtp_lo: base + 1 + AUX_PORTS,
                    rtp_hi: base + BLOCK as u16 - 1,
                    aux_base: base + 1,
                    aux_next: AtomicU16::new(0),
                };
            }
        }
        panic!("no free block of {BLOCK} ports between {FIRST_PORT} and {}", FIRST_PORT + BLOCK * BLOCKS);
    }

    /// parkd's SIP address.
    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.sip))
    }

    /// One more port of this block for a SIPp instance (its SIP port or its control port).
    pub fn aux_port(&self) -> u16 {
        let n = self.aux_next.fetch_add(1, Ordering::SeqCst);
        assert!(n < AUX_PORTS, "test used more than {AUX_PORTS} auxiliary ports (at most 5 SIPp runs per parkd)");
        self.aux_base + n
    }
}

fn port_is_free(port: u32, also_tcp: bool) -> bool {
    let Ok(port) = u16::try_from(port) else { return false };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    UdpSocket::bind(addr).is_ok() && (!also_tcp || TcpListener::bind(addr).is_ok())
}
