//! Typed decode and framing errors of the SIP codec.
//!
//! Decoding is staged (hickory-dns style): when a *request* is broken but its top Via, From, To, Call-ID and
//! CSeq can be read as text, the error is wrapped in [`DecodeError::Answerable`] with a [`ReplyContext`] so
//! the core can answer it (400, or 505 for a bad version). Anything else, and every broken *response*, is
//! simply dropped by the caller.

use super::reply_context::ReplyContext;

/// Why bytes could not be decoded into a [`super::Message`] (or a part of one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Nothing but whitespace / keep-alive line ends.
    #[error("empty message")]
    Empty,
    /// No blank line ends the header section.
    #[error("no blank line ends the header section")]
    NoHeaderEnd,
    /// The header section is not valid UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// The request line or status line is malformed (RFC 3261 §7.1, §7.2).
    #[error("malformed start line")]
    BadStartLine,
    /// The Request-URI is malformed, in angle brackets (RFC 4475 §3.1.2.7) or carries headers (§3.1.2.11).
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// A SIP-Version other than SIP/2.0 (answered with 505, RFC 3261 §21.5.7; RFC 4475 §3.1.2.16).
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// A status code outside 100..=699.
    #[error("bad status code")]
    BadStatusCode,
    /// A header line with no colon or a name that is not a token.
    #[error("malformed header line")]
    BadHeaderLine,
    /// A mandatory header is absent (RFC 3261 §8.1.1).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A single-valued header appears more than once (RFC 4475 §3.3.8).
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    /// A typed header's value does not parse.
    #[error("malformed {name} header")]
    BadHeader { name: &'static str },
    /// CSeq method differs from the request method (RFC 4475 §3.1.2.17).
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// Content-Length is not a number, negative, or conflicting (RFC 4475 §3.1.2.3, §3.3.9).
    #[error("malformed Content-Length")]
    BadContentLength,
    /// Content-Length claims more bytes than arrived (RFC 4475 §3.1.2.2).
    #[error("Content-Length {declared} but only {available} body bytes")]
    ContentLengthMismatch { declared: usize, available: usize },
    /// A URI does not parse.
    #[error("malformed URI")]
    BadUri,
    /// A name-addr / addr-spec does not parse (RFC 3261 §20.10, §25.1).
    #[error("malformed name-addr")]
    BadNameAddr,
    /// A Replaces value does not parse (RFC 3891 §6.1).
    #[error("malformed Replaces")]
    BadReplaces,
    /// A malformed request whose essentials were readable: answer it with `reply`.
    #[error("{cause}")]
    Answerable { cause: Box<DecodeError>, reply: Box<ReplyContext> },
}

impl DecodeError {
    /// The context to answer the offending request with, when there is one.
    pub fn reply(&self) -> Option<&ReplyContext> {
        match self {
            DecodeError::Answerable { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// The underlying error (unwraps [`DecodeError::Answerable`]).
    pub fn cause(&self) -> &DecodeError {
        match self {
            DecodeError::Answerable { cause, .. } => cause.cause(),
            other => other,
        }
    }

    /// The status to answer with when [`Self::reply`] is `Some`: 505 for a bad version, else 400.
    pub fn status(&self) -> u16 {
        match self.cause() {
            DecodeError::UnsupportedVersion => 505,
            _ => 400,
        }
    }

    /// The complete error response (400 or 505) to send back, when the request can be answered.
    pub fn response_bytes(&self) -> Option<bytes::Bytes> {
        let reply = self.reply()?;
        let reason = match self.status() {
            505 => "Version Not Supported".to_string(),
            _ => format!("Bad Request ({})", self.cause()),
        };
        Some(reply.error_response(self.status(), &reason))
    }

    pub(crate) fn answerable(self, reply: Option<&ReplyContext>) -> DecodeError {
        match (self, reply) {
            (e @ DecodeError::Answerable { .. }, _) => e,
            (e, Some(r)) => DecodeError::Answerable { cause: Box::new(e), reply: Box::new(r.clone()) },
            (e, None) => e,
        }
    }
}

/// Why a message breaks the framing rules or the limits ([`super::framing`]). On a stream, the stream cannot be
/// resynchronized after one: answer (when [`Self::response_bytes`] has an answer), then close the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The message (header section + Content-Length) exceeds the limit (answered 413).
    #[error("message exceeds {limit} bytes")]
    Oversize { limit: usize },
    /// No blank line ends the header section within the limit (answered 513).
    #[error("header section exceeds {limit} bytes")]
    HeadTooLarge { limit: usize },
    /// More header fields than the limit (answered 400).
    #[error("more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    /// Content-Length is mandatory on streams (RFC 3261 §18.3, §20.14; answered 400).
    #[error("no Content-Length on a stream")]
    MissingContentLength,
    /// Content-Length is not a number, or two differ (answered 400).
    #[error("malformed Content-Length")]
    BadContentLength,
    /// A request whose essentials were readable: answer it with `reply`.
    #[error("{cause}")]
    Answerable { cause: Box<FramingError>, reply: Box<ReplyContext> },
}

impl FramingError {
    /// The context to answer the offending request with, when there is one.
    pub fn reply(&self) -> Option<&ReplyContext> {
        match self {
            FramingError::Answerable { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// The underlying error (unwraps [`FramingError::Answerable`]).
    pub fn cause(&self) -> &FramingError {
        match self {
            FramingError::Answerable { cause, .. } => cause.cause(),
            other => other,
        }
    }

    /// The status and reason phrase of the answer.
    pub fn status(&self) -> (u16, &'static str) {
        match self.cause() {
            FramingError::Oversize { .. } => (413, "Request Entity Too Large"),
            FramingError::HeadTooLarge { .. } => (513, "Message Too Large"),
            FramingError::TooManyHeaders { .. } => (400, "Too Many Headers"),
            FramingError::MissingContentLength => (400, "Missing Content-Length"),
            FramingError::BadContentLength | FramingError::Answerable { .. } => (400, "Bad Content-Length"),
        }
    }

    /// The complete error response to send back, when the request can be answered (the same builder as the
    /// 400s of [`DecodeError::response_bytes`]).
    pub fn response_bytes(&self) -> Option<bytes::Bytes> {
        let (status, reason) = self.status();
        Some(self.reply()?.error_response(status, reason))
    }

    /// A short label for logs and metrics: `message_size`, `header_count` or `framing`.
    pub fn refusal_reason(&self) -> &'static str {
        match self.cause() {
            FramingError::Oversize { .. } | FramingError::HeadTooLarge { .. } => "message_size",
            FramingError::TooManyHeaders { .. } => "header_count",
            _ => "framing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_error_stays_small() {
        assert!(std::mem::size_of::<DecodeError>() <= 24, "{}", std::mem::size_of::<DecodeError>());
    }

    #[test]
    fn answerable_reports_cause_status_and_response() {
        let ctx = ReplyContext {
            via: vec!["SIP/2.0/UDP h;branch=z9hG4bK1".into()],
            from: "<sip:a@h>;tag=1".into(),
            to: "<sip:b@h>".into(),
            call_id: "c".into(),
            cseq: "1 OPTIONS".into(),
        };
        let e = DecodeError::UnsupportedVersion.answerable(Some(&ctx));
        assert_eq!(e.cause(), &DecodeError::UnsupportedVersion);
        assert_eq!(e.status(), 505);
        let bytes = e.response_bytes().unwrap();
        assert!(bytes.starts_with(b"SIP/2.0 505 Version Not Supported\r\n"));
        let e = DecodeError::CSeqMethodMismatch.answerable(Some(&ctx));
        assert_eq!(e.status(), 400);
        assert!(e.response_bytes().unwrap().starts_with(b"SIP/2.0 400 Bad Request"));
        assert_eq!(DecodeError::BadUri.answerable(None), DecodeError::BadUri);
        assert!(DecodeError::BadUri.response_bytes().is_none());
    }

    #[test]
    fn framing_errors_answer_with_their_own_status_and_reason() {
        let ctx = ReplyContext {
            via: vec!["SIP/2.0/TCP h;branch=z9hG4bK1".into()],
            from: "<sip:a@h>;tag=1".into(),
            to: "<sip:b@h>".into(),
            call_id: "c".into(),
            cseq: "1 OPTIONS".into(),
        };
        let answer = |e: FramingError| {
            let e = FramingError::Answerable { cause: Box::new(e), reply: Box::new(ctx.clone()) };
            String::from_utf8(e.response_bytes().unwrap().to_vec()).unwrap()
        };
        let missing = answer(FramingError::MissingContentLength);
        assert!(missing.starts_with("SIP/2.0 400 Missing Content-Length\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"), "{missing}");
        assert!(missing.contains("\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"), "{missing}");
        assert!(answer(FramingError::BadContentLength).starts_with("SIP/2.0 400 Bad Content-Length\r\n"));
        assert!(answer(FramingError::Oversize { limit: 9 }).starts_with("SIP/2.0 413 Request Entity Too Large\r\n"));
        assert!(answer(FramingError::HeadTooLarge { limit: 9 }).starts_with("SIP/2.0 513 Message Too Large\r\n"));
        assert!(answer(FramingError::TooManyHeaders { limit: 9 }).starts_with("SIP/2.0 400 Too Many Headers\r\n"));
        assert!(FramingError::MissingContentLength.response_bytes().is_none(), "nothing to answer without a context");
        assert_eq!(FramingError::TooManyHeaders { limit: 1 }.refusal_reason(), "header_count");
        assert_eq!(FramingError::HeadTooLarge { limit: 1 }.refusal_reason(), "message_size");
        assert_eq!(FramingError::BadContentLength.refusal_reason(), "framing");
    }
}
