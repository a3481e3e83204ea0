//! Demultiplexing: which leg a datagram received on a local port belongs to.
//!
//! With one leg per port (the default) the port alone names the leg. When several legs share a
//! port (`[server] rtp_legs_per_port > 1`), a packet on port P from source S goes to:
//! 1. the leg on P latched to S (symmetric RTP, RFC 4961: a leg latches to the source of the
//!    first packet it accepts, until its next `Update`);
//! 2. else the not-yet-latched leg on P whose SDP address is S (it latches to S);
//! 3. else, if exactly one leg on P is not latched yet, that leg (it latches to S): a phone behind
//!    NAT sends from another address than its SDP names, and the single unlatched leg is the only
//!    one it can be;
//! 4. else nobody: [`Route::Foreign`] when every leg on P is latched elsewhere,
//!    [`Route::Ambiguous`] when two or more unlatched legs could claim it.
//!
//! With one leg on a port these rules are exactly the one-port-per-leg behaviour: an unlatched
//! leg latches to any source, a latched leg ignores other sources. Every lookup is O(1) (hash
//! maps keyed by `(port, source)`; the single unlatched leg of a port is the XOR of the ids of
//! its unlatched legs when their count is 1), and routing a packet allocates nothing.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::MediaLegId;

/// Where a received packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To this leg, already latched to the packet's source.
    Latched(MediaLegId),
    /// To this leg, which has just latched to the packet's source.
    NewlyLatched(MediaLegId),
    /// No leg on the port.
    NoLeg,
    /// Every leg on the port is latched to another source.
    Foreign,
    /// Several unlatched legs on the port, none with this source as its SDP address.
    Ambiguous,
}

/// What the index knows of one leg.
#[derive(Clone, Copy, Debug)]
struct Entry {
    sdp: SocketAddr,
    latched: Option<SocketAddr>,
}

/// Per-port census of legs.
#[derive(Clone, Copy, Debug, Default)]
struct PortLegs {
    legs: u32,
    unlatched: u32,
    /// XOR of the ids of the unlatched legs: the id itself when `unlatched == 1`.
    unlatched_xor: u32,
}

/// The index from `(local port, source)` to leg. Pure bookkeeping, see the module doc.
#[derive(Debug, Default)]
pub struct Demux {
    legs: HashMap<MediaLegId, Entry>,
    latched: HashMap<(u16, SocketAddr), MediaLegId>,
    by_sdp: HashMap<(u16, SocketAddr), MediaLegId>,
    ports: HashMap<u16, PortLegs>,
}

impl Demux {
    /// An empty index.
    pub fn new() -> Demux {
        Demux::default()
    }

    /// Adds `id` with SDP address `sdp`, or gives an existing leg a new SDP address. Either way the
    /// leg is unlatched afterwards (RFC 3264 re-offer: learn the source again).
    pub fn set_remote(&mut self, id: MediaLegId, sdp: SocketAddr) {
        self.remove(id);
        let port = id.port();
        self.legs.insert(id, Entry { sdp, latched: None });
        self.by_sdp.insert((port, sdp), id);
        let p = self.ports.entry(port).or_default();
        p.legs += 1;
        p.unlatched += 1;
        p.unlatched_xor ^= id.0;
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: MediaLegId) {
        let Some(e) = self.legs.remove(&id) else { return };
        let port = id.port();
        if self.by_sdp.get(&(port, e.sdp)) == Some(&id) {
            self.by_sdp.remove(&(port, e.sdp));
        }
        match e.latched {
            Some(src) => {
                if self.latched.get(&(port, src)) == Some(&id) {
                    self.latched.remove(&(port, src));
                }
            }
            None => {
                if let Some(p) = self.ports.get_mut(&port) {
                    p.unlatched = p.unlatched.saturating_sub(1);
                    p.unlatched_xor ^= id.0;
                }
            }
        }
        if let Some(p) = self.ports.get_mut(&port) {
            p.legs = p.legs.saturating_sub(1);
            if p.legs == 0 {
                self.ports.remove(&port);
            }
        }
    }

    /// The source `id` is latched to, if any.
    pub fn latched_source(&self, id: MediaLegId) -> Option<SocketAddr> {
        self.legs.get(&id).and_then(|e| e.latched)
    }

    /// Routes a packet received on local `port` from `from`, latching a leg if the rules say so.
    pub fn route(&mut self, port: u16, from: SocketAddr) -> Route {
        if let Some(id) = self.latched.get(&(port, from)) {
            return Route::Latched(*id);
        }
        let Some(p) = self.ports.get(&port).copied() else { return Route::NoLeg };
        if let Some(&id) = self.by_sdp.get(&(port, from)) {
            if self.latch(id, from) {
                return Route::NewlyLatched(id);
            }
        }
        match p.unlatched {
            0 => Route::Foreign,
            1 => {
                let id = MediaLegId(p.unlatched_xor);
                if self.latch(id, from) {
                    Route::NewlyLatched(id)
                } else {
                    Route::Ambiguous // unreachable while the census is consistent
                }
            }
            _ => Route::Ambiguous,
        }
    }

    /// Latches `id` to `from` if it is not latched yet. False if it already was (or is unknown).
    fn latch(&mut self, id: MediaLegId, from: SocketAddr) -> bool {
        let Some(e) = self.legs.get_mut(&id) else { return false };
        if e.latched.is_some() {
            return false;
        }
        e.latched = Some(from);
        let port = id.port();
        self.latched.insert((port, from), id);
        if let Some(p) = self.ports.get_mut(&port) {
            p.unlatched = p.unlatched.saturating_sub(1);
            p.unlatched_xor ^= id.0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    const P: u16 = 20_000;

    #[test]
    fn one_leg_per_port_latches_to_any_first_source_then_ignores_others() {
        // RFC 4961 symmetric RTP, as with one port per leg.
        let mut d = Demux::new();
        let id = MediaLegId::solo(P);
        d.set_remote(id, a("10.0.0.1:4000"));
        assert_eq!(d.route(P, a("192.0.2.9:7000")), Route::NewlyLatched(id), "NAT: source differs from SDP");
        assert_eq!(d.route(P, a("192.0.2.9:7000")), Route::Latched(id));
        assert_eq!(d.route(P, a("10.0.0.1:4000")), Route::Foreign);
        assert_eq!(d.route(P + 2, a("10.0.0.1:4000")), Route::NoLeg);
        assert_eq!(d.latched_source(id), Some(a("192.0.2.9:7000")));
    }

    #[test]
    fn shared_port_routes_by_latch_then_sdp_address() {
        let mut d = Demux::new();
        let (x, y, z) = (MediaLegId::new(P, 0), MediaLegId::new(P, 1), MediaLegId::new(P, 2));
        d.set_remote(x, a("10.0.0.1:4000"));
        d.set_remote(y, a("10.0.0.2:4000"));
        d.set_remote(z, a("10.0.0.3:4000"));
        assert_eq!(d.route(P, a("10.0.0.2:4000")), Route::NewlyLatched(y), "SDP match");
        assert_eq!(d.route(P, a("10.0.0.2:4000")), Route::Latched(y));
        assert_eq!(d.route(P, a("10.0.0.1:4000")), Route::NewlyLatched(x));
        assert_eq!(d.route(P, a("10.0.0.3:4000")), Route::NewlyLatched(z));
        assert_eq!(d.route(P, a("10.0.0.9:4000")), Route::Foreign, "all latched elsewhere");
    }

    #[test]
    fn the_single_unlatched_leg_takes_an_unknown_source() {
        let mut d = Demux::new();
        let (x, y) = (MediaLegId::new(P, 0), MediaLegId::new(P, 1));
        d.set_remote(x, a("10.0.0.1:4000"));
        d.set_remote(y, a("10.0.0.2:4000"));
        d.route(P, a("10.0.0.1:4000"));
        // y's phone is behind NAT: its packets come from elsewhere. It is the only unlatched leg.
        assert_eq!(d.route(P, a("198.51.100.7:31000")), Route::NewlyLatched(y));
        assert_eq!(d.route(P, a("198.51.100.7:31000")), Route::Latched(y));
    }

    #[test]
    fn an_unknown_source_with_two_unlatched_legs_is_ambiguous() {
        let mut d = Demux::new();
        let (x, y) = (MediaLegId::new(P, 0), MediaLegId::new(P, 1));
        d.set_remote(x, a("10.0.0.1:4000"));
        d.set_remote(y, a("10.0.0.2:4000"));
        assert_eq!(d.route(P, a("198.51.100.7:31000")), Route::Ambiguous);
        assert_eq!(d.latched_source(x), None);
        assert_eq!(d.latched_source(y), None);
        // A leg whose SDP address matches still latches.
        assert_eq!(d.route(P, a("10.0.0.1:4000")), Route::NewlyLatched(x));
        assert_eq!(d.route(P, a("198.51.100.7:31000")), Route::NewlyLatched(y), "now the only unlatched one");
    }

    #[test]
    fn update_unlatches_and_the_leg_relatches() {
        // RFC 3264 §8: a re-offer may move the peer; the leg learns its source again.
        let mut d = Demux::new();
        let (x, y) = (MediaLegId::new(P, 0), MediaLegId::new(P, 1));
        d.set_remote(x, a("10.0.0.1:4000"));
        d.set_remote(y, a("10.0.0.2:4000"));
        d.route(P, a("10.0.0.1:4000"));
        d.route(P, a("10.0.0.2:4000"));
        d.set_remote(x, a("10.0.0.5:6000"));
        assert_eq!(d.latched_source(x), None);
        assert_eq!(d.route(P, a("10.0.0.1:4000")), Route::NewlyLatched(x), "old source: x is the only unlatched leg");
        d.set_remote(x, a("10.0.0.5:6000"));
        d.set_remote(y, a("10.0.0.6:6000"));
        assert_eq!(d.route(P, a("10.0.0.1:4000")), Route::Ambiguous);
        assert_eq!(d.route(P, a("10.0.0.6:6000")), Route::NewlyLatched(y));
    }

    #[test]
    fn removing_legs_keeps_the_census_consistent() {
        let mut d = Demux::new();
        let (x, y) = (MediaLegId::new(P, 0), MediaLegId::new(P, 1));
        d.set_remote(x, a("10.0.0.1:4000"));
        d.set_remote(y, a("10.0.0.2:4000"));
        d.remove(x);
        assert_eq!(d.route(P, a("198.51.100.7:31000")), Route::NewlyLatched(y));
        d.remove(y);
        assert_eq!(d.route(P, a("198.51.100.7:31000")), Route::NoLeg);
        assert!(d.legs.is_empty() && d.latched.is_empty() && d.by_sdp.is_empty() && d.ports.is_empty());
    }
}
