//! The sans-IO core: one SIP endpoint holding every dialog and parked call of a worker.
//!
//! How to drive it — inputs with `now`, outputs drained until `None`, `poll_timeout` with its reason — is the
//! engine contract, documented in one place: [`contract`].
//!
//! The core never reads a clock, spawns or touches a socket: time comes in as `now`, and everything it wants
//! done comes out as [`Output`] (bytes to send, media to start or stop, events to report).
//!
//! # Layout
//! **Rooms** own the state, as plain data, each with a small API (the directories, and `endpoint.rs`):
//! [`endpoint`] (transactions and their purposes, the message counts, ids, the output queue), [`admission`] (who may do what:
//! limits, access lists, digest, drain),
//! [`dialogs`] (call legs), [`parking`] (lots, orbits, parked calls, recall rounds, keepalives),
//! [`bridging`] (bridged pairs, the calls parkd makes, `dial_allow`) and [`blf`] (subscriptions).
//! [`Core`] holds one of each and routes inputs through them; its routing is split by flow, one file each:
//! * `inbound.rs`: a message from the network → the transaction layer → by method and dialog;
//! * `invite.rs`: a new INVITE → park or retrieve; `session.rs`: re-INVITEs, media, hang-ups;
//!   `session_timers.rs`: RFC 4028 session timers on every leg; `direct_media.rs`: the re-INVITE pair that lets a
//!   bridge's phones send RTP to each other (`direct_media = true`);
//! * `recall.rs` (+ `keepalive.rs`): the call timers, recall rounds and the recalls' outcomes;
//! * `transfer.rs`: REFER and the attended-park swap; `originate.rs`: calls parkd makes; `commands.rs`: the API;
//! * `subscribe.rs`: SUBSCRIBE checks before the BLF room; `gate.rs`, `proxy.rs`: the checks a request passes
//!   (admission, digest, proxy trust, drain);
//! * `orbit_view.rs`, `snapshot.rs`: read-only views for watchers and the HTTP API;
//! * [`persist`]: the journal's entry points (issue 17), how the rooms' records are written and restored.

pub mod admission;
pub mod blf;
pub mod bridging;
mod capacity;
pub mod cluster;
mod cluster_command;
mod cluster_fetch;
mod cluster_lend;
pub mod commands;
mod dtmf;
pub mod contract;
pub mod dialogs;
pub mod endpoint;
mod events;
mod gate;
pub mod ids;
mod inbound;
mod invite;
mod keepalive;
pub mod orbit_view;
mod originate;
pub mod parking;
pub mod persist;
mod proxy;
mod recall;
pub mod reload;
mod reply;
mod session;
mod session_timers;
pub mod direct_media;
mod shard;
mod srtp;
mod subscribe;
pub mod snapshot;
mod transfer;

pub use cluster::ClusterInput;
pub use commands::{Command, CommandError, CommandOutcome, CommandResult, CommandTicket};
pub use contract::{Output, Wake};
pub use events::ParkEvent;
pub use originate::OriginateError;
pub use persist::RestoreReport;
pub use proxy::{BRANCH_MARK, DRAIN_RETRY_AFTER};
pub use events::{ParkHow, RecallTarget};
pub use ids::{CallRef, LegId};
pub use shard::{shard_node, SHARD_LEASE};

use crate::config::{AccessConfig, LimitsConfig, LotConfig, ServerConfig};
use crate::park::port_shards::PortShards;
use crate::park::shard_plan::ShardPlan;
use crate::sip::{NameAddr, Peer};
use crate::time::Time;
use crate::txn::TimerConfig;
use endpoint::Purpose;
use rand::Rng;

/// Counts of live state, for tests and metrics: all return to zero when every call has ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub legs: usize,
    pub calls: usize,
    pub server_txns: usize,
    pub client_txns: usize,
    pub rtp_ports_in_use: usize,
    pub orbits_occupied: usize,
    /// BLF subscriptions (including ones whose final NOTIFY is unanswered).
    pub subscriptions: usize,
    /// What the admission room counts as held by sources (unconfirmed calls, occupied orbits, subscriptions).
    pub admission_holds: usize,
}

/// Counters the core keeps (exported as metrics by the io layer, which reads messages no more than this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages that could not be decoded (answered 400 or dropped).
    pub malformed: u64,
    /// Retransmissions the transaction layer sent and absorbed.
    pub retransmissions: crate::txn::TxnStats,
    /// Every decoded message received and every message sent, retransmissions included: requests by method,
    /// responses by status class and CSeq method.
    pub messages: crate::txn::SipCounts,
}

pub struct Core {
    /// parkd's SIP endpoint: transactions and their purposes, ids, its own address, the output queue.
    ep: endpoint::Endpoint,
    ports: PortShards,
    /// Call legs: one dialog each and its media (the dialogs room).
    dialogs: dialogs::Dialogs,
    /// Lots, orbits, parked calls and their deadlines (the parking room).
    parking: parking::Parking,
    /// Messages that could not be decoded.
    malformed: u64,
    /// BLF subscriptions, their NOTIFY sequencing, indexes and expiry heap (the BLF room).
    blf: blf::Blf,
    /// Bridged calls, the calls parkd makes for parked ones, `dial_allow` (the bridging room).
    bridging: bridging::Bridging,
    /// Per-source limits, scanner drops and refusal counts (the admission room).
    admission: admission::Admission,
    /// What is journaled and what waits for it (issue 17; off by default).
    journal: persist::JournalRoom,
    /// The cluster room and the parks waiting for it (issue 18; `None`: a single node).
    cluster: Option<cluster::CoreCluster>,
    /// SRTP policy inputs and the SDES key RNG (issue 19).
    srtp: srtp::SrtpRoom,
    /// The configuration running now, what a reload is compared against (issue 21; `None` in tests that do not
    /// set it: nothing is then reported as needing a restart).
    running: Option<Box<crate::config::Config>>,
    /// Session timers (RFC 4028): `[server] session_timers`, `session_min_se`, `session_expires`.
    stimer: dialogs::timer::TimerPolicy,
    /// When each parked call last acted on a key (the DTMF debounce; issue 21).
    dtmf: dtmf::DtmfRoom,
}

impl Core {
    /// A core for `lots`, with RTP ports from `server.rtp_ports` cut into media shards as `server` says
    /// ([`ShardPlan::for_server`]). `seed` feeds tags, branches and orbit choice, so a run is reproducible in
    /// tests. The binary uses [`Core::with_plan`] instead, with the plan its media threads were spawned from.
    pub fn new(server: ServerConfig, lots: Vec<LotConfig>, timers: TimerConfig, seed: u64) -> Core {
        let plan = ShardPlan::for_server(&server);
        Core::with_plan(server, lots, timers, seed, &plan)
    }

    /// As [`Core::new`], allocating RTP ports by `plan`: the one plan of media shards the io layer also spawns
    /// its media threads from, so a leg's port always belongs to the thread that serves it.
    pub fn with_plan(server: ServerConfig, lots: Vec<LotConfig>, timers: TimerConfig, seed: u64, plan: &ShardPlan) -> Core {
        let ports = PortShards::new(plan);
        let local_addr = server.advertised_sip();
        let outbound_proxy = server.outbound_proxy.as_deref().and_then(|p| crate::sip::parse_uri(p).ok()).and_then(|mut uri| {
            let addr = crate::dialog::uri_addr(&uri)?;
            let hop = Peer { transport: uri.transport(), addr };
            uri.params.set("lr", None);
            Some((NameAddr::new(uri), hop))
        });
        let mut ep = endpoint::Endpoint::new(timers, seed, (local_addr, server.listen), server.advertised_ip(), outbound_proxy);
        ep.set_other_family(server.advertised_other());
        ep.set_tls_addr(server.advertised_tls());
        let mut admission = admission::Admission::new(&LimitsConfig::default(), &AccessConfig::default(), &server.trusted_proxies);
        admission.set_nonce_key(admission::NonceKey(ep.rng().gen()));
        admission.set_draining(server.drain);
        Core {
            ep,
            ports,
            dialogs: dialogs::Dialogs::default(),
            parking: parking::Parking::new(lots),
            malformed: 0,
            blf: blf::Blf::default(),
            bridging: bridging::Bridging::default(),
            admission,
            journal: persist::JournalRoom::new(seed),
            cluster: None,
            srtp: srtp::SrtpRoom::new(server.srtp_over_plain, seed),
            running: None,
            stimer: dialogs::timer::TimerPolicy { enabled: server.session_timers, min_se: server.session_min_se, expires: server.session_expires },
            dtmf: dtmf::DtmfRoom::default(),
        }
    }

    /// Applies `[limits]` and `[access]` (a new core starts with their defaults). Call before any traffic:
    /// what the room tracked so far is forgotten.
    pub fn set_limits(&mut self, limits: &LimitsConfig, access: &AccessConfig) {
        self.admission.set_limits(limits, access);
    }

    /// The next output, if any. Drain until `None` after every `handle_*` call (see [`contract`]).
    pub fn poll_output(&mut self) -> Option<Output> {
        self.ep.poll_output()
    }

    /// When [`Core::handle_timeout`] should next be called, and why: the earliest deadline of the transaction
    /// layer and the rooms (a peek of each one's queue; possibly a cancelled one, waking early is harmless).
    pub fn poll_timeout(&self) -> Option<(Time, Wake)> {
        contract::earliest([
            self.ep.txn.poll_timeout().map(|t| (t, Wake::Transaction)),
            self.parking.poll_timeout(),
            self.bridging.poll_timeout(),
            self.dialogs.next_timer().map(|t| (t, Wake::SessionTimer)),
            self.blf.next_expiry().map(|t| (t, Wake::BlfExpiry)),
            // A restored leg whose 2xx was never ACKed is given up on, as Timer H would; a held group whose store
            // does not answer is given up on.
            self.journal.next_deadline().map(|t| (t, Wake::Transaction)),
            self.cluster.as_ref().and_then(|c| c.room.poll_timeout()).map(|(t, _)| (t, Wake::Cluster)),
            // A cross-node retrieve whose owner node does not answer (cluster_fetch.rs).
            self.next_fetch_deadline().map(|t| (t, Wake::Cluster)),
        ])
    }

    /// Fires every deadline that is due at `now`. Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Time) {
        self.ep.txn.handle_timeout(now);
        self.call_timeouts(now);
        self.session_timeouts(now);
        self.direct_timeouts(now);
        let orbits = orbit_view::Orbits { parking: &self.parking, dialogs: &self.dialogs, bridging: &self.bridging, remote: self.cluster.as_ref().map(|c| c.room.view()) };
        self.blf.handle_timeout(&mut self.ep, now, &orbits);
        self.unacked_timeouts(now);
        self.stalled_journal_timeouts(now);
        if let Some(c) = self.cluster.as_mut() {
            c.room.handle_timeout(now);
        }
        self.fetch_timeouts(now);
        self.settle(now);
    }

    /// Ends every `handle_*` call: what the transaction layer queued is moved to the output queue in order, and
    /// what it reported (a client transaction timed out, a 2xx was never ACKed) is acted on now, with the
    /// input's `now`, until the layer has nothing more to say.
    fn settle(&mut self, now: Time) {
        loop {
            while let Some(ev) = self.ep.next_txn_event() {
                self.on_txn_event(now, ev);
            }
            // The cluster room's answers continue parks (which queue responses): settle again after them.
            if !self.drain_cluster(now) {
                break;
            }
        }
        self.flush_journal(now);
    }

    /// The core's counters: malformed input, and the transaction layer's retransmission and message counts.
    pub fn stats(&self) -> Stats {
        Stats { malformed: self.malformed, retransmissions: self.ep.txn.stats(), messages: self.ep.txn.counts().clone() }
    }

    /// Replaces the outbound proxy (tests build cores without a config file).
    #[cfg(test)]
    pub(crate) fn set_outbound_proxy_for_tests(&mut self, uri: &str) {
        let mut uri = crate::sip::parse_uri(uri).expect("proxy uri");
        let addr = crate::dialog::uri_addr(&uri).expect("proxy ip");
        let hop = Peer { transport: uri.transport(), addr };
        uri.params.set("lr", None);
        self.ep.outbound_proxy = Some((NameAddr::new(uri), hop));
    }

    /// Replaces a lot's `allow_park` networks.
    #[cfg(test)]
    pub(crate) fn set_allow_park_for_tests(&mut self, lot: usize, nets: Vec<ipnet::IpNet>) {
        if let Some(cfg) = self.parking.cfg_mut(lot) {
            cfg.allow_park = Some(nets);
        }
    }

    /// Live state counts (tests assert they return to zero).
    pub fn live(&self) -> Live {
        let (server_txns, client_txns) = self.ep.txn.live();
        Live {
            legs: self.dialogs.len(),
            calls: self.parking.len() + self.bridging.len(),
            server_txns,
            client_txns,
            rtp_ports_in_use: self.ports.in_use(),
            orbits_occupied: self.parking.orbits_occupied(),
            subscriptions: self.blf.len(),
            admission_holds: self.admission.holds(),
        }
    }

    /// Each lot's name, number of orbits and how many are occupied (in a cluster, those other nodes hold too).
    pub fn lot_summary(&self) -> Vec<(String, usize, usize)> {
        self.parking.lots().enumerate().map(|(i, l)| (l.name().to_string(), l.capacity(), l.occupied() + self.remote_in_lot(i))).collect()
    }

}

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod srtp_tests;
#[cfg(test)]
mod srtp_out_tests;
#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod capacity_tests;
#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod recall_tests;
#[cfg(test)]
mod dtmf_tests;
#[cfg(test)]
mod transfer_tests;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod blf_tests;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod gate_tests;
#[cfg(test)]
mod plain_data_tests;
#[cfg(test)]
mod counts_tests;
#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tls_tests;
#[cfg(test)]
mod cluster_fetch_tests;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod session_timer_tests;
#[cfg(test)]
mod direct_media_tests;
#[cfg(test)]
mod shard_tests;
