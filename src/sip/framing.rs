//! Framing and size limits of SIP messages, one framer for every stream transport (TCP now, TLS later).
//!
//! On a stream, Content-Length is mandatory (RFC 3261 §18.3), CRLF keep-alives between messages are skipped
//! (RFC 3261 §7.5) and a CRLFCRLF "ping" is reported so the transport answers it with a CRLF "pong"
//! (RFC 5626 §3.5.1). Every message, on a stream or in a datagram ([`check_datagram`]), is bounded in size and in
//! header count ([`FrameLimits`]). A request that breaks a rule is answered when its Via, From, To, Call-ID and
//! CSeq can be read ([`FramingError::response_bytes`], built like the 400s of [`super::DecodeError`]).

use super::error::FramingError;
use super::normalize::{find_head_end, parse_content_length, parse_head};
use bytes::{Buf, Bytes, BytesMut};

/// Default bound on one message (header section + body).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// Default bound on the header fields of one message.
pub const DEFAULT_MAX_HEADERS: usize = 256;

/// The bounds applied to every message (`[limits] max_message_bytes`, `max_headers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest message, header section and body together, in bytes.
    pub max_message: usize,
    /// Most header field lines (folded continuation lines are part of their field).
    pub max_headers: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits { max_message: DEFAULT_MAX_MESSAGE, max_headers: DEFAULT_MAX_HEADERS }
    }
}

/// What a stream framer hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One whole message, for [`super::parse_message`].
    Message(Bytes),
    /// A CRLFCRLF keep-alive ping (RFC 5626 §3.5.1): write a single CRLF pong back.
    Ping,
}

/// Accumulates stream bytes and cuts them into [`Frame`]s. After an `Err` the stream cannot be resynchronized:
/// write the error's [`FramingError::response_bytes`] when there are some, then close the connection.
///
/// Memory is bounded by the message limit plus the size of one [`StreamFramer::push`]: an incomplete message
/// that already exceeds the limit is reported by [`StreamFramer::next_frame`].
///
/// Keep-alives: between messages, `CRLFCRLF` is a ping; a lone `CRLF` (or any other stray CR or LF) is skipped
/// without answer. The result does not depend on how the stream is cut into pushes, so a lone CRLF followed,
/// later, by another lone CRLF reads as one ping (answering it is harmless: a CRLF is itself a keep-alive).
///
/// Work per read is proportional to the bytes read, not to the bytes held: the search for the end of the header
/// section resumes where the last one stopped, and a complete header section is parsed once (a peer sending a
/// 64 KiB message one byte per segment costs 64 Ki small steps, not 2 Gi).
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    limits: FrameLimits,
    /// How much of the message in `buf` is known to hold no end of the header section.
    scanned: usize,
    /// The total length of the message in `buf`, once its header section is complete.
    total: Option<usize>,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new()
    }
}

const PING: &[u8] = b"\r\n\r\n";

/// What [`StreamFramer::next_head`] found.
enum Step {
    Ping,
    More,
    Message(usize),
}

impl StreamFramer {
    /// A framer with the default [`FrameLimits`].
    pub fn new() -> StreamFramer {
        StreamFramer::with_limits(FrameLimits::default())
    }

    /// A framer bounded at `max_message` bytes per message (default header limit).
    pub fn with_limit(max_message: usize) -> StreamFramer {
        StreamFramer::with_limits(FrameLimits { max_message, ..FrameLimits::default() })
    }

    /// A framer with these limits. It allocates nothing until bytes arrive.
    pub fn with_limits(limits: FrameLimits) -> StreamFramer {
        StreamFramer { buf: BytesMut::new(), limits, scanned: 0, total: None }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        let total = match self.total {
            Some(total) => total,
            None => match self.next_head()? {
                Step::Ping => return Ok(Some(Frame::Ping)),
                Step::More => return Ok(None),
                Step::Message(total) => total,
            },
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        self.total = None;
        self.scanned = 0;
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }

    /// Skips keep-alives up to a ping, or finds and checks the header section of the next message (its total
    /// length, once complete).
    fn next_head(&mut self) -> Result<Step, FramingError> {
        // Keep-alives between messages (a message in progress starts with another byte).
        loop {
            if self.buf.starts_with(PING) {
                self.buf.advance(PING.len());
                return Ok(Step::Ping);
            }
            match self.buf.first() {
                None => return Ok(Step::More),
                Some(b'\r' | b'\n') if PING.starts_with(&self.buf) => return Ok(Step::More), // maybe the start of a ping
                Some(b'\r' | b'\n') => self.buf.advance(1),
                Some(_) => break,
            }
        }
        let limit = self.limits.max_message;
        // A head end may straddle the last search's end: resume 3 bytes before it.
        let from = self.scanned.saturating_sub(3);
        let found = find_head_end(self.buf.get(from..).unwrap_or_default()).map(|(h, b)| (from + h, from + b));
        let Some((head_len, body_start)) = found else {
            self.scanned = self.buf.len();
            return match self.buf.len() <= limit {
                true => Ok(Step::More),
                false => Err(self.head_too_large()),
            };
        };
        if body_start > limit {
            // The same error whether the end of the header section arrived in this read or not (yet).
            return Err(self.head_too_large());
        }
        let head = self.buf.get(..head_len).unwrap_or_default();
        let error = |e: FramingError| answerable(e, head);
        if count_headers(head) > self.limits.max_headers {
            return Err(error(FramingError::TooManyHeaders { limit: self.limits.max_headers }));
        }
        let declared = declared_content_length(head).map_err(error)?.ok_or_else(|| error(FramingError::MissingContentLength))?;
        let total = body_start.saturating_add(declared);
        if total > limit {
            return Err(error(FramingError::Oversize { limit }));
        }
        self.total = Some(total);
        Ok(Step::Message(total))
    }

    /// A header section longer than the limit, answered from the complete lines among its first `limit` bytes
    /// (if the essentials are there): what was read beyond the limit does not matter, so the answer does not
    /// depend on how the stream was cut into reads.
    fn head_too_large(&self) -> FramingError {
        let limit = self.limits.max_message;
        let seen = self.buf.get(..limit).unwrap_or_default();
        let lines = seen.iter().rposition(|&b| b == b'\n').map_or(&seen[..0], |i| &seen[..i]);
        answerable(FramingError::HeadTooLarge { limit }, lines)
    }
}

/// Checks a datagram against `limits` before it is parsed (a datagram needs no Content-Length).
pub fn check_datagram(bytes: &[u8], limits: &FrameLimits) -> Result<(), FramingError> {
    let head = match find_head_end(bytes) {
        Some((head_len, _)) => bytes.get(..head_len).unwrap_or_default(),
        None => bytes,
    };
    if bytes.len() > limits.max_message {
        return Err(answerable(FramingError::Oversize { limit: limits.max_message }, head));
    }
    if count_headers(head) > limits.max_headers {
        return Err(answerable(FramingError::TooManyHeaders { limit: limits.max_headers }, head));
    }
    Ok(())
}

/// Header field lines of a header section (start line excluded; a line starting with SP or HT continues the
/// field before it, RFC 3261 §7.3.1). Leading line ends are skipped as the parser does.
fn count_headers(head: &[u8]) -> usize {
    let head = super::normalize::skip_leading_line_ends(head);
    memchr::memchr_iter(b'\n', head).filter(|&i| !matches!(head.get(i + 1), Some(b' ' | b'\t') | None)).count()
}

/// The Content-Length of a header section: `None` when absent, an error when malformed or conflicting.
fn declared_content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    let text = String::from_utf8_lossy(head);
    let head = parse_head(&text);
    let mut declared: Option<usize> = None;
    for v in head.all("Content-Length") {
        let n = parse_content_length(v).ok_or(FramingError::BadContentLength)?;
        if declared.is_some_and(|d| d != n) {
            return Err(FramingError::BadContentLength);
        }
        declared = Some(n);
    }
    Ok(declared)
}

/// Wraps `e` with what is needed to answer it, when `head` is a request whose essentials can be read.
fn answerable(e: FramingError, head: &[u8]) -> FramingError {
    let text = String::from_utf8_lossy(super::normalize::skip_leading_line_ends(head));
    let head = parse_head(&text);
    if super::start_line::is_status_line(head.start_line) {
        return e; // a response is never answered
    }
    match super::reply_context::ReplyContext::from_head(&head) {
        Some(reply) => FramingError::Answerable { cause: Box::new(e), reply: Box::new(reply) },
        None => e,
    }
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
