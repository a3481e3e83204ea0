//! The SIP codec, parkd's own (no SIP crate: `parse.rs` says why rsip was rejected). Each type sits in its own
//! module with its parser and its writer:
//!
//! * [`message`]: [`Request`], [`Response`], the [`Message`] enum, and the writer that encodes them.
//! * [`start_line`]: Request-Line / Status-Line.
//! * [`headers`]: [`Common`], the header container every message carries (typed essentials, the rest as text).
//! * [`via`], [`cseq`], [`name_addr`] (From, To, Contact, Route, Refer-To, ...), [`uri`], [`params`],
//!   [`replaces`], [`method`], [`transport`] (with [`Peer`]).
//! * [`accessors`]: headers kept as text and typed on demand (Refer-To, Referred-By, Replaces, Expires, Event).
//! * [`parse`]: bytes → [`Message`] (staged decode: broken requests whose essentials are readable come back
//!   as [`DecodeError::Answerable`] carrying a [`reply_context::ReplyContext`] for a 400/505).
//! * [`framing`]: stream framing (TCP, later TLS): Content-Length, CRLF keep-alives and pings, and the size and
//!   header-count limits of every message.
//! * `normalize`: header/body split, unfolding, compact and canonical header names, list splitting, body
//!   framing — applied before any grammar.

pub mod accessors;
pub mod cseq;
pub mod error;
pub mod framing;
pub mod headers;
pub mod ip_text;
pub mod message;
pub mod method;
pub mod name_addr;
mod normalize;
pub mod params;
pub mod parse;
pub mod replaces;
pub mod shard;
pub mod shard_router;
pub mod reply_context;
pub mod start_line;
pub mod transport;
pub mod uri;
pub mod via;

#[cfg(test)]
mod rfc4475_tests;
#[cfg(test)]
mod rfc5118_tests;

pub use cseq::CSeq;
pub use error::{DecodeError, FramingError};
pub use framing::{check_datagram, Frame, FrameLimits, StreamFramer, DEFAULT_MAX_HEADERS, DEFAULT_MAX_MESSAGE};
pub use headers::{Common, Header};
pub use message::{reason_phrase, Message, Request, Response};
pub use method::Method;
pub use name_addr::{parse_name_addr, NameAddr};
pub use params::Params;
pub use parse::parse_message;
pub use replaces::{parse_replaces, Replaces};
pub use reply_context::ReplyContext;
pub use transport::{Peer, Transport};
pub use uri::{parse_uri, Uri};
pub use via::Via;

/// The string type of a parsed message's short parts (URI scheme, user and host, parameter names and values, Via
/// transport and host): up to 24 bytes are kept inline, so most of them cost no allocation (issue 20: the
/// allocator was a quarter of the engine's instructions, a parsed string per part). It derefs to `&str`.
pub type SipStr = compact_str::CompactString;
