//! The hop a message travels: its transport (UDP, TCP) and the far end's address.

use std::net::SocketAddr;

/// The transport a message arrived on or leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
    /// Reliable transports run with timers E/G/A at zero and short K/J/D (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}

/// The far end of a hop: where a message came from or where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}
