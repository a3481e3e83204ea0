//! The SIP codec, parkd's own (no SIP crate: `parse.rs` says why rsip was rejected).
//!
//! * [`message`]: parkd's typed view of SIP messages and the writer that encodes them.
//! * [`parse`]: bytes → [`Message`] (staged decode: broken requests whose essentials are readable come back
//!   as [`DecodeError::Answerable`] for a 400/505).
//! * [`uri`], [`name_addr`], [`accessors`]: parkd's own parsers for URIs, name-addrs (From, To, Contact,
//!   Refer-To, Referred-By, ...), Replaces, Expires and Event.
//! * [`framing`]: stream framing (TCP, later TLS): Content-Length, CRLF keep-alives and pings, and the size and
//!   header-count limits of every message.
//! * `normalize`: header/body split, unfolding, compact and canonical header names, list splitting, body
//!   framing — applied before any grammar.

pub mod accessors;
pub mod error;
pub mod framing;
pub mod message;
pub mod name_addr;
mod normalize;
pub mod parse;
pub mod uri;

#[cfg(test)]
mod rfc4475_tests;

pub use accessors::parse_replaces;
pub use error::{DecodeError, FramingError};
pub use framing::{check_datagram, Frame, FrameLimits, StreamFramer, DEFAULT_MAX_HEADERS, DEFAULT_MAX_MESSAGE};
pub use message::*;
pub use name_addr::parse_name_addr;
pub use parse::parse_message;
pub use uri::parse_uri;
