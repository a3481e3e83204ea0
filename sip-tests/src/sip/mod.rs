//! Speaking SIP to parkd.
//!
//! * [`sipp`] — the [`Sipp`](sipp::Sipp) driver: runs one scenario of `<workspace>/scenarios/*.xml` against a
//!   [`Parkd`](crate::Parkd), bounded in time, and reads back its message trace ([`SippOutcome`](sipp::SippOutcome):
//!   which requests and responses arrived, when, with which headers). Most tests play their phones with it.
//! * [`ua`] — a tiny SIP UA in Rust that speaks for many calls over one UDP socket (the flood test's phone,
//!   the benchmark).
//! * [`phones`] — many parked callers on one UA with a background thread that answers parkd (keepalives, BYE,
//!   NOTIFY) and logs what it sent, across parkd restarts; BLF subscriptions.
//! * [`flood`] — an INVITE flood that never ACKs, from its own loopback address, and a legitimate phone that
//!   parks and retrieves meanwhile.
//! * [`probe`] — raw datagrams: the readiness OPTIONS ping, garbage parkd must survive.
//! * [`tcp`] — a raw SIP-over-TCP client for framing and connection-limit tests.
//! * [`tls`] — SIP over TLS: a test PKI (rcgen), a TLS client and server, a phone speaking over one connection.

pub mod flood;
pub mod phones;
pub mod probe;
pub mod sipp;
pub mod tcp;
pub mod tls;
pub mod ua;
