//! parkd: a SIP call-park server.
//!
//! Layers, from the wire inwards (only `io` reads the clock, spawns tasks or touches sockets):
//! * [`sip`] — parkd's own codec (rsip rejected, see `sip/parse.rs`) and typed message view.
//! * [`txn`] — RFC 3261 §17 transactions (+ RFC 6026), pure state machines with absolute deadlines.
//! * [`dialog`] — RFC 3261 §12 dialog state and in-dialog request building.
//! * [`ids`] — typed values that cross layers and rooms (Call-ID, orbit index and number).
//! * [`sdp`] — offer/answer for G.711 calls.
//! * [`media`] — G.711, shared pre-encoded hold frames, the pacer, RTP relay: the media plane state machine.
//! * [`park`] — lots, orbits and RTP port bookkeeping.
//! * [`core`] — the park engine (a B2BUA): rooms that own their state as plain data (endpoint, admission,
//!   dialogs, parking, bridging, BLF), routed by `Core` under one engine contract ([`core::contract`]).
//! * [`journal`] — what survives a restart: records, their frames, the recovery scan, compaction (sans-IO).
//! * [`cluster`] — several nodes sharing one orbit space over Redis (issue 18): the cluster room (sans-IO).
//! * [`config`], [`cli`] — TOML + flags.
//! * [`io`] — the thin tokio/mio layer: it moves bytes (its metrics read the core's counts and events).
//! * [`time`] — `Time`, the `now` every state machine is given.
//! * `sim` (tests only) — a simulated network: core + media plane + reactive phones over seeded lossy links.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod core;
pub mod dialog;
pub mod ids;
pub mod io;
pub mod journal;
pub mod media;
#[cfg(test)]
mod mem_sizes;
pub mod park;
pub mod sdp;
#[cfg(test)]
pub mod sim;
pub mod sip;
pub mod time;
pub mod txn;

pub use time::Time;
