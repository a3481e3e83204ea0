//! The SIP transaction layer (RFC 3261 §17, RFC 6026 Accepted states, RFC 3581 `rport`) as a pure state
//! machine.
//!
//! [`TxnLayer`] owns every server and client transaction. It takes `now` as a parameter, never reads a
//! clock and never touches a socket: what it wants sent comes out of [`TxnLayer::poll_output`] as
//! [`TxnOutput::Transmit`], and its single next deadline is [`TxnLayer::poll_timeout`] (a heap peek).
//!
//! Drive contract: after any `on_*`, `respond`, `send_*`, `ack_received` or `handle_timeout` call, drain
//! `poll_output` until `None`, then sleep until `poll_timeout`. `handle_timeout` may be called early or
//! twice; it only acts on deadlines that are due.
//!
//! The layer removes terminated transactions itself; [`TxnLayer::live`] counts what is left.
//!
//! Files: [`key`] (typed keys), [`timer`] (timer kinds, tables, the heap, durations), [`dest`] (response
//! destination), `slab` (generational storage), `server` / `client` (the four state machines).

pub mod counts;
pub mod dest;
pub mod key;
mod slab;
pub mod timer;

mod client;
mod server;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_client;
#[cfg(test)]
mod tests_server;

use crate::sip::{Peer, Response};
use crate::time::Time;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

pub use client::ack_for_non_2xx;
pub use counts::{MsgKind, SipCounts};
pub use dest::{response_destination, stamp_top_via};
pub use key::{ClientKey, MethodClass, ServerKey};
pub use timer::TimerKind;

use client::ClientTxn;
use server::ServerTxn;
use slab::Slab;
use timer::{Side, TimerHeap};

/// Inline sizes of a server/client transaction and a server slab slot (`mem_sizes` test).
#[cfg(test)]
pub(crate) fn server_txn_size() -> usize {
    size_of::<ServerTxn>()
}
#[cfg(test)]
pub(crate) fn client_txn_size() -> usize {
    size_of::<ClientTxn>()
}
#[cfg(test)]
pub(crate) fn server_slot_size() -> usize {
    slab::slot_size::<ServerTxn>()
}

/// RFC 3261 timer base values. `Default`: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; retransmission intervals start here and timeouts are 64·T1.
    pub t1: Duration,
    /// Cap on non-INVITE request and INVITE response retransmission intervals.
    pub t2: Duration,
    /// Maximum time a message stays in the network (Timers I and K).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

/// Handle of a server transaction. Stale handles (of a removed transaction) are ignored everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ServerTxnId {
    idx: u32,
    gen: u32,
}

/// Handle of a client transaction. Stale handles are ignored everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ClientTxnId {
    idx: u32,
    gen: u32,
}

impl ClientTxnId {
    /// A handle that never names a live transaction (returned by `send_request` for an ACK).
    const DEAD: ClientTxnId = ClientTxnId { idx: u32::MAX, gen: u32::MAX };
}

/// What the layer made of a received request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerVerdict {
    /// A new request: the TU must answer it with [`TxnLayer::respond`].
    New(ServerTxnId),
    /// A retransmission, absorbed; the last response (if any) was re-sent.
    Retransmission,
    /// An ACK for a non-2xx final: absorbed (the transaction moves to Confirmed, Timer I).
    AckAbsorbed,
    /// An ACK matching no INVITE transaction in Proceeding/Completed: an ACK for a 2xx. The TU handles it
    /// (and calls [`TxnLayer::ack_received`]).
    AckForDialog,
    /// A new CANCEL (its own transaction). The TU answers `cancel` (200, or 481 if `invite` is `None`, §9.2)
    /// and answers the INVITE with 487 if it is still unanswered ([`TxnLayer::awaiting_final`]).
    Cancel { cancel: ServerTxnId, invite: Option<ServerTxnId> },
    /// No top Via: nothing can be keyed or answered; drop it.
    Malformed,
}

/// What the layer made of a received response that matched a client transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientVerdict {
    /// A 1xx.
    Provisional(Response),
    /// The first final response, or a 2xx (retransmission or another fork) in RFC 6026 Accepted: the TU must
    /// (re-)ACK it. Non-2xx finals to an INVITE were already ACKed by the layer.
    Final(Response),
}

/// Something the TU must know that is not a reply to a call it made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnEvent {
    /// Timer B/F fired (the TU treats it as a 408), or a transport error was reported.
    ClientTimeout(ClientTxnId),
    /// A 2xx to an INVITE was not ACKed within 64·T1: the TU tears the dialog down (§13.3.1.4).
    AckTimeout { txn: ServerTxnId, call_id: String, cseq: u32 },
    /// Timer H: a non-2xx final was never ACKed (informational).
    ServerTimeout(ServerTxnId),
}

/// What the layer hands to the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutput {
    /// Send `bytes` to `to` (already encoded; UDP datagram or TCP write on that connection).
    Transmit { to: Peer, bytes: Bytes },
    /// Tell the TU.
    Event(TxnEvent),
}

/// Retransmission counters of a [`TxnLayer`] (monotonic, for metrics), from [`TxnLayer::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnStats {
    /// Requests sent again: Timer A (INVITE) and E (non-INVITE) re-sends, and the ACK re-sent for a
    /// retransmitted non-2xx final (§17.1.1.2).
    pub retransmitted_requests: u64,
    /// Responses sent again: Timer G re-sends of 2xx and non-2xx finals to an INVITE, and the last response
    /// re-sent on a retransmitted request (§17.2.1, §17.2.2, RFC 6026 Accepted).
    pub retransmitted_responses: u64,
    /// Retransmitted requests absorbed by a server transaction (including a repeated ACK for a non-2xx
    /// final in Confirmed).
    pub absorbed_retransmissions: u64,
}

/// All transactions of one endpoint, their keys and their timers.
#[derive(Debug)]
pub struct TxnLayer {
    cfg: TimerConfig,
    servers: Slab<ServerTxn>,
    server_index: HashMap<ServerKey, ServerTxnId>,
    /// `(Call-ID, CSeq)` of INVITEs answered 2xx and not yet ACKed (RFC 6026 Accepted).
    awaiting_ack: HashMap<(String, u32), ServerTxnId>,
    clients: Slab<ClientTxn>,
    client_index: HashMap<ClientKey, ClientTxnId>,
    timers: TimerHeap,
    out: VecDeque<TxnOutput>,
    stats: TxnStats,
    /// Messages handed to the layer and sent by it, by kind.
    counts: SipCounts,
}

impl TxnLayer {
    /// An empty layer. T1/T2/T4 below 1 ms are raised to 1 ms.
    pub fn new(cfg: TimerConfig) -> Self {
        TxnLayer {
            cfg: cfg.sanitized(),
            servers: Slab::default(),
            server_index: HashMap::new(),
            awaiting_ack: HashMap::new(),
            clients: Slab::default(),
            client_index: HashMap::new(),
            timers: TimerHeap::default(),
            out: VecDeque::new(),
            stats: TxnStats::default(),
            counts: SipCounts::default(),
        }
    }

    /// Sends bytes outside any transaction: the ACK for a 2xx, stateless replies (a 400 to junk). `kind`
    /// says what they are, for the message counts.
    pub fn send_stateless(&mut self, to: Peer, bytes: Bytes, kind: MsgKind) {
        self.transmit(to, bytes, kind);
    }

    /// Fires every timer due at `now`. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some((at, r)) = self.timers.pop_due(now) {
            match r.side {
                Side::Server => {
                    let id = ServerTxnId { idx: r.idx, gen: r.gen };
                    let Some(t) = self.servers.get_mut(r.idx, r.gen) else { continue };
                    if t.timers.get(r.kind) != Some(at) {
                        continue;
                    }
                    t.timers.clear(r.kind);
                    self.fire_server(id, r.kind, at);
                }
                Side::Client => {
                    let id = ClientTxnId { idx: r.idx, gen: r.gen };
                    let Some(t) = self.clients.get_mut(r.idx, r.gen) else { continue };
                    if t.timers.get(r.kind) != Some(at) {
                        continue;
                    }
                    t.timers.clear(r.kind);
                    self.fire_client(id, r.kind, at);
                }
            }
        }
    }

    /// The earliest deadline, a peek of the timer heap (O(1)). It can be earlier than any live timer (a
    /// cancelled one): `handle_timeout` at that time then just drops the stale entry.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.peek()
    }

    /// The next thing to send or report.
    pub fn poll_output(&mut self) -> Option<TxnOutput> {
        self.out.pop_front()
    }

    /// `(server, client)` transactions alive.
    pub fn live(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// Retransmissions sent and absorbed so far.
    pub fn stats(&self) -> TxnStats {
        self.stats
    }

    /// Messages received and sent so far, by kind.
    pub fn counts(&self) -> &SipCounts {
        &self.counts
    }

    fn transmit(&mut self, to: Peer, bytes: Bytes, kind: MsgKind) {
        self.counts.count_sent(kind);
        self.out.push_back(TxnOutput::Transmit { to, bytes });
    }

    fn event(&mut self, e: TxnEvent) {
        self.out.push_back(TxnOutput::Event(e));
    }
}
