//! What parkd says about itself in the responses and requests it writes (answering them is
//! [`super::endpoint::Endpoint::respond`]).

/// Methods parkd accepts, advertised in `Allow` (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, SUBSCRIBE";
/// Event packages parkd serves, advertised in `Allow-Events` (RFC 6665 §8.2.2).
pub const ALLOW_EVENTS: &str = "dialog";
/// parkd's product token for `Server`/`User-Agent`.
pub const PRODUCT: &str = concat!("parkd/", env!("CARGO_PKG_VERSION"));
