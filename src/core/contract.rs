//! The engine contract: how a driver runs parkd's two sans-IO state machines, the SIP engine [`Core`] and the
//! media plane [`MediaPlane`]. Every driver follows it: the io layer (`io/sip_driver.rs`, `io/media_thread.rs`),
//! the simulated network (`sim`), the engine tests (`core/testkit.rs`), the fuzz harness and the benchmark.
//!
//! # Inputs carry `now`
//! Nothing in either machine reads a clock. Every input is a `handle_*` call that carries the time it happens
//! at, as a [`Time`]:
//!
//! | input | [`Core`] | [`MediaPlane`] |
//! |---|---|---|
//! | a message from the network | [`Core::handle_sip`]`(now, from, bytes)` | [`MediaPlane::on_rtp`]`(now, port, from, packet)` |
//! | a command from an application / the core | [`Core::handle_command`]`(now, cmd)` | [`MediaPlane::apply`]`(now, cmd)` |
//! | a deadline has come | [`Core::handle_timeout`]`(now)` | [`MediaPlane::poll_hold`]`(now, batch)` |
//! | a report of the media plane (a parked caller's key press) | [`Core::handle_media_report`]`(now, report)` | — |
//!
//! All the work an input causes is done inside its `handle_*` call, with its `now`: what the transaction layer
//! reports while handling it (a retransmission timer ran out, a 2xx was never ACKed) is acted on there and
//! then. Nothing is left for the output side to compute, and neither machine keeps a "last `now` seen" to
//! stand in for a time it was not given. A `now` older than an earlier one does not move time back: deadlines
//! compare against it, and what is not yet due stays pending.
//!
//! # Outputs are drained until `None`
//! After every `handle_*` call the driver drains [`Core::poll_output`] until it returns `None`, carrying each
//! [`Output`] out (SIP bytes to a peer, a [`MediaCommand`] to the media plane, a [`ParkEvent`] to logs,
//! metrics and the API) in the order given. Outputs are queued, so draining after several inputs is not
//! wrong, but it delays what the first input produced: drain after each one. The media plane's outputs are
//! returned directly, because they are per packet and must not be queued: [`MediaPlane::on_rtp`] returns
//! where to forward the packet it rewrote in place, and [`MediaPlane::poll_hold`] fills the caller's batch
//! with the hold packets due (headers written, payloads shared, nothing copied). The few things the media plane
//! has to tell the core (a parked caller pressed a key: [`crate::media::MediaReport`]) are drained with
//! [`MediaPlane::poll_report`] after each received batch, carried to the core's driver and handed in with
//! [`Core::handle_media_report`], an input like any other.
//!
//! # The journal (issue 17)
//! With journaling on ([`Core::set_journaling`]), the rooms' changes come out as [`Output::Journal`] groups. The
//! driver hands them to the journal writer in order and, for a group with a token, calls
//! [`Core::handle_journal_durable`]`(token, ok, now)` when the writer reports it synced (`ok`) or failed; the
//! core then releases (or, on failure, replaces with a refusal) what it held back, and the driver drains as
//! after any input. At startup, before the SIP socket answers anything, the driver reads the journal's live set
//! and calls [`Core::restore`]`(live, now)` on a fresh core, then drains its outputs (the media plane gets the
//! restored calls' streams, late recalls start).
//!
//! # The cluster (issue 18)
//! With [`Core::enable_cluster`] the core is a node of a cluster sharing one orbit space through Redis, and
//! parks wait for the cluster room's claim (see `core/cluster.rs`). The room's Redis operations come out as
//! [`Output::Cluster`]`{ op, cmd }`: the driver runs each (in the order given) and brings every outcome back
//! with [`Core::handle_cluster`]`(ClusterInput::Reply { op, result }, now)`; it also hands in each message of
//! the change channel (`ClusterInput::Change`) and whether Redis is reachable (`ClusterInput::Link`, which
//! starts `false`: parks answer 503 until the driver says the link is up). Drain after each, as after any
//! input. The room's deadlines come through [`Core::poll_timeout`] as [`Wake::Cluster`].
//!
//! # `poll_timeout` says when, and why
//! [`Core::poll_timeout`] returns the earliest deadline *and* the reason for it, a [`Wake`] (as str0m's
//! `Output::Timeout` and `last_timeout_reason`): a transaction timer, a recall, a recall that rang long enough,
//! the maximum park time, a keepalive, a BLF subscription's expiry. Each room keeps its deadlines in its own
//! ordered queue, so the answer is a peek of a few queues, O(1) whatever the number of calls; it can name a
//! deadline that was since cancelled (waking early is harmless). [`MediaPlane::poll_timeout`] answers the
//! same way ([`MediaWake::HoldFrame`]: the next 1 ms pacer slot with hold packets due; [`MediaWake::RtcpReport`]:
//! the soonest report of a paused stream, a heap peek).
//!
//! `handle_timeout(now)` fires every deadline due at `now`: the transaction layer's, then the call deadlines
//! of the parking and bridging rooms in one order of time, then BLF expiries. Calling it early, late or twice
//! is safe: it only acts on what is due, and a stale entry is skipped.
//!
//! # The drive loop
//! ```text
//! loop {
//!     while let Some(out) = core.poll_output() { carry(out) }        // SIP to sockets, media commands, events
//!     let deadline = core.poll_timeout();                             // Option<(Time, Wake)>
//!     wait for: a datagram | a command | the deadline
//!     now = clock.now()
//!     on a datagram:  core.handle_sip(now, from, bytes)
//!     on a command:   core.handle_command(now, cmd)
//!     if deadline <= now (check the clock, not only the timer): core.handle_timeout(now)
//! }
//! ```
//!
//! # The rooms behind `Core`
//! Each room owns its state as plain data (no spans, no whole messages, no clock readings: deadlines are
//! absolute [`Time`]s) with a small API; `Core` routes each input to the rooms it concerns and carries their
//! outputs:
//!
//! * [`super::endpoint`]: parkd's SIP endpoint: the transaction layer, the table of what each client
//!   transaction is for, ids/tags/branches from the seeded RNG, parkd's own address, the output queue.
//! * [`super::admission`]: who may make parkd do or hold something (per-source limits, scanners, access lists,
//!   Digest authentication, drain mode).
//! * [`super::dialogs`]: call legs: one dialog each (tags, CSeq counters, route set, remote target, transport)
//!   and the media negotiated in it.
//! * [`super::parking`]: lots, orbits, parked calls, recall rounds, keepalives and the call timers.
//! * [`super::bridging`]: the bridged pairs (a parked call taken by a retriever or by whoever answered its
//!   recall), the calls parkd originates for parked calls (recall, unpark) while they ring and after it gives up
//!   on them, and where an application may make parkd dial.
//! * [`super::blf`]: BLF subscriptions, NOTIFY sequencing (one in flight, the latest state next), dialog-info.
//!
//! [`MediaPlane`]: crate::media::MediaPlane
//! [`MediaPlane::on_rtp`]: crate::media::MediaPlane::on_rtp
//! [`MediaPlane::apply`]: crate::media::MediaPlane::apply
//! [`MediaPlane::poll_hold`]: crate::media::MediaPlane::poll_hold
//! [`MediaPlane::poll_timeout`]: crate::media::MediaPlane::poll_timeout
//! [`MediaWake::HoldFrame`]: crate::media::MediaWake::HoldFrame
//! [`MediaWake::RtcpReport`]: crate::media::MediaWake::RtcpReport
//! [`Core`]: super::Core
//! [`Core::handle_sip`]: super::Core::handle_sip
//! [`Core::handle_command`]: super::Core::handle_command
//! [`Core::handle_media_report`]: super::Core::handle_media_report
//! [`MediaPlane::poll_report`]: crate::media::MediaPlane::poll_report
//! [`Core::handle_timeout`]: super::Core::handle_timeout
//! [`Core::poll_output`]: super::Core::poll_output
//! [`Core::poll_timeout`]: super::Core::poll_timeout
//! [`Core::set_journaling`]: super::Core::set_journaling
//! [`Core::handle_journal_durable`]: super::Core::handle_journal_durable
//! [`Core::restore`]: super::Core::restore
//! [`Core::enable_cluster`]: super::Core::enable_cluster
//! [`Core::handle_cluster`]: super::Core::handle_cluster
//! [`MediaCommand`]: crate::media::MediaCommand
//! [`ParkEvent`]: super::ParkEvent
//! [`Time`]: crate::time::Time

use super::ParkEvent;
use crate::media::MediaCommand;
use crate::sip::Peer;
use bytes::Bytes;

/// What the core asks its driver to do.
#[derive(Debug)]
pub enum Output {
    /// Send these bytes to that peer (UDP datagram, or on/over a TCP connection to it).
    Sip { to: Peer, bytes: Bytes },
    /// Start, change or stop media on the media plane.
    Media(MediaCommand),
    /// Something a person or an application may want to know (logged, counted, streamed).
    Event(ParkEvent),
    /// Write these records to the journal as one group (restored whole or not at all; issue 17). With a
    /// `token`, the core is holding back outputs until the group is durable (a park's `200 OK`, a REFER's final
    /// NOTIFY): the driver calls [`super::Core::handle_journal_durable`] with the token once the store has
    /// synced it (or failed to). Without one, nothing waits on it. Never emitted while journaling is off
    /// ([`super::Core::set_journaling`]).
    Journal { records: Vec<crate::journal::Record>, token: Option<crate::journal::JournalToken> },
    /// Run this Redis operation of the cluster room (issue 18) and bring its outcome back with
    /// [`super::Core::handle_cluster`]`(ClusterInput::Reply { op, .. })`, exactly once, within about a second
    /// (a timeout or a lost connection is an `Err`). Operations must be written to Redis in the order given.
    /// Never emitted without [`super::Core::enable_cluster`].
    Cluster { op: crate::cluster::OpId, cmd: crate::cluster::RedisOp },
    /// The answer to the command [`super::Core::submit_command`] took with `ticket` and did not answer at once
    /// (a re-park in a cluster, after its orbit's claim). Every such command gets exactly one.
    CommandDone { ticket: super::commands::CommandTicket, result: super::CommandResult },
}

/// Why the core wants [`super::Core::handle_timeout`] called: the reason next to the deadline of
/// [`super::Core::poll_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Wake {
    /// A transaction timer (retransmission, timeout, the end of a wait state: RFC 3261 §17, RFC 6026).
    Transaction,
    /// A parked call's parking time ran out: call the parker back.
    Recall,
    /// A recall (or unpark) has rung long enough: give up on it.
    RecallRing,
    /// A call has been parked for `max_park_time`: end it.
    MaxPark,
    /// Time to check that a parked party is still there (in-dialog OPTIONS).
    Keepalive,
    /// A BLF subscription expires.
    BlfExpiry,
    /// The cluster room's deadline: a claim waited too long for Redis, a lease renewal, a remote claim's
    /// expiry, a resync; or a cross-node retrieve whose owner node has not answered within 2 s.
    Cluster,
    /// A session timer (RFC 4028): parkd's refresh is due, or a leg's session expires.
    SessionTimer,
    /// A direct-media re-INVITE is due: the settle delay after a bridge, or a 491's back-off.
    DirectMedia,
}

impl Wake {
    /// A short name for logs and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Wake::Transaction => "transaction",
            Wake::Recall => "recall",
            Wake::RecallRing => "recall_ring",
            Wake::MaxPark => "max_park",
            Wake::Keepalive => "keepalive",
            Wake::BlfExpiry => "blf_expiry",
            Wake::Cluster => "cluster",
            Wake::SessionTimer => "session_timer",
            Wake::DirectMedia => "direct_media",
        }
    }
}

/// The earliest of several `(deadline, reason)` pairs (ties go to the first given).
pub(super) fn earliest(candidates: impl IntoIterator<Item = Option<(crate::time::Time, Wake)>>) -> Option<(crate::time::Time, Wake)> {
    candidates.into_iter().flatten().fold(None, |best: Option<(crate::time::Time, Wake)>, c| match best {
        Some(b) if b.0 <= c.0 => Some(b),
        _ => Some(c),
    })
}
