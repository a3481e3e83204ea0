//! Bytes → [`Message`]: staged decode of one SIP message (a UDP datagram, or one message framed off a stream by
//! [`super::framing::StreamFramer`]).
//!
//! Stages: `normalize` cuts, unfolds and names the header fields; the start line ([`super::start_line`]) and
//! the typed headers (`Common::parse` in [`super::headers`], which calls the Via, CSeq and name-addr parsers) are then parsed by
//! parkd's own grammar code. When a request fails after its top Via, From, To, Call-ID and
//! CSeq were found as text, the error is [`DecodeError::Answerable`] and carries what is needed for a 400 (or
//! 505). A broken response is never answerable.
//!
//! rsip 0.4 is not used for parsing; probed against these cases it gets each wrong: it fails to tokenize RFC 4475
//! §3.1.1.2 (intmeth) at all, turns `invite` into `Method::Invite` (methods are case-sensitive) and has no
//! unknown-method variant, puts `?Replaces=...` into the *host* of a URI (its `Uri.headers` is always empty),
//! and fails on `sip:a@[2001:db8::1]:5070`.

use super::error::DecodeError;
use super::headers::Common;
use super::message::{Message, Request, Response};
use super::normalize::{frame_body, parse_head, split_head};
use super::reply_context::ReplyContext;
use super::start_line::{is_status_line, StartLine};
use bytes::Bytes;
use std::borrow::Cow;

/// Decodes one SIP message. Leading CRLFs are skipped; the body is framed by Content-Length (extra bytes are
/// discarded, missing Content-Length means "the rest"). Never panics on any input.
pub fn parse_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let split = split_head(bytes)?;
    // `from_utf8` checks ASCII a word at a time; the lossy decode (a 400 still needs the head's fields) only
    // for a head that is not UTF-8.
    let text = match std::str::from_utf8(split.head) {
        Ok(t) => Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(split.head),
    };
    let head = parse_head(&text);
    let is_request = !is_status_line(head.start_line);
    let decoded = (|| {
        if !split.head_end {
            return Err(DecodeError::NoHeaderEnd);
        }
        if matches!(text, Cow::Owned(_)) {
            return Err(DecodeError::NotUtf8);
        }
        if let Some(p) = &head.problem {
            return Err(p.clone());
        }
        let start = StartLine::parse(head.start_line)?;
        let body = frame_body(&head, split.rest)?;
        let common = Common::parse(&head, Bytes::copy_from_slice(body))?;
        Ok(match start {
            StartLine::Request(method, uri) => {
                // The CSeq method must equal the Request-Line method (RFC 3261 §8.1.1.5, RFC 4475 §3.1.2.17).
                if common.cseq.method != method {
                    return Err(DecodeError::CSeqMethodMismatch);
                }
                Message::Request(Request { method, uri, common })
            }
            StartLine::Response(status, reason) => Message::Response(Response { status, reason, common }),
        })
    })();
    decoded.map_err(|e| if is_request { e.answerable(ReplyContext::from_head(&head).as_ref()) } else { e })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
