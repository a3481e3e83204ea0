//! parkd: a SIP call-park server.
//!
//! Layers, from the wire inwards (only `io` reads the clock, spawns tasks or touches sockets):
//! * [`sip`] — codec: the only module that names rsip; parkd's own typed message view.
//! * [`txn`] — RFC 3261 §17 transactions (+ RFC 6026), pure state machines with absolute deadlines.
//! * [`sdp`] — offer/answer for G.711 calls.
//! * [`media`] — G.711, shared pre-encoded hold frames, the pacer, RTP relay: the media plane state machine.
//! * [`park`] — lots, orbits and the park engine (the B2BUA), driven by `(input, now)`.
//! * [`config`] — TOML + flags.
//! * [`io`] — the thin tokio/mio layer.

pub mod config;
pub mod sip;
pub mod time;

pub use time::Time;
pub mod io;
pub mod media;
pub mod sdp;
