//! The hop a message travels: its transport (UDP, TCP) and the far end's address.

use std::net::SocketAddr;

/// The transport a message arrived on or leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS over TCP (RFC 3261 §26.2; `sips:` URIs, `transport=tls`, Via `SIP/2.0/TLS`).
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    /// Reliable transports run with timers E/G/A at zero and short K/J/D (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
    /// The `transport=` URI parameter naming it.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
    /// The port a URI without one means (RFC 3261 §19.1.2): 5061 for TLS, 5060 otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }
}

/// The far end of a hop: where a message came from or where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}
