//! The SIP codec: the only module that names rsip.
//!
//! * [`message`]: parkd's typed view of SIP messages and the writer that encodes them.
//! * [`parse`]: bytes → [`Message`] (normalizing what rsip gets wrong first), plus parkd's own parsers for
//!   URIs, name-addrs, Refer-To / Referred-By and Replaces.
//! * [`framing`]: Content-Length framing of a TCP byte stream.

pub mod message;

pub use message::*;
