//! Framing of SIP messages on a byte stream (TCP): Content-Length is mandatory there (RFC 3261 §18.3), CRLF
//! keep-alives between messages are skipped (RFC 3261 §7.5, RFC 5626 §3.5.1), and the buffer is bounded.

use super::error::FramingError;
use super::normalize::{find_head_end, parse_content_length, parse_head};
use bytes::{Buf, Bytes, BytesMut};

/// Default bound on one message (header section + body).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// Accumulates stream bytes and cuts them into whole SIP messages, each to be handed to
/// [`super::parse_message`]. After an `Err` the stream cannot be resynchronized: close the connection.
///
/// Memory is bounded by the message limit plus the size of one [`StreamFramer::push`]: an incomplete message
/// that already exceeds the limit is reported by [`StreamFramer::next_message`].
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_message: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new()
    }
}

impl StreamFramer {
    /// A framer bounded at [`DEFAULT_MAX_MESSAGE`].
    pub fn new() -> StreamFramer {
        StreamFramer::with_limit(DEFAULT_MAX_MESSAGE)
    }

    /// A framer bounded at `max_message` bytes per message.
    pub fn with_limit(max_message: usize) -> StreamFramer {
        StreamFramer { buf: BytesMut::with_capacity(4096), max_message }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet part of a returned message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FramingError> {
        let keepalive = self.buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        self.buf.advance(keepalive);
        if self.buf.is_empty() {
            return Ok(None);
        }
        let oversize = FramingError::Oversize { limit: self.max_message };
        let Some((head_len, body_start)) = find_head_end(&self.buf) else {
            return if self.buf.len() > self.max_message { Err(oversize) } else { Ok(None) };
        };
        let head_text = String::from_utf8_lossy(self.buf.get(..head_len).unwrap_or_default());
        let head = parse_head(&head_text);
        let mut declared: Option<usize> = None;
        for v in head.all("Content-Length") {
            let n = parse_content_length(v).ok_or(FramingError::BadContentLength)?;
            if declared.is_some_and(|d| d != n) {
                return Err(FramingError::BadContentLength);
            }
            declared = Some(n);
        }
        let total = body_start.checked_add(declared.ok_or(FramingError::MissingContentLength)?).ok_or(oversize.clone())?;
        if total > self.max_message {
            return Err(oversize);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(total).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MESSAGE sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    fn drain(f: &mut StreamFramer) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(m) = f.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn split_deliveries_are_reassembled_byte_by_byte() {
        let mut f = StreamFramer::new();
        let mut got = Vec::new();
        for b in MSG {
            f.push(&[*b]);
            got.extend(drain(&mut f));
        }
        assert_eq!(got, vec![Bytes::from_static(MSG)]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn two_messages_in_one_push_and_keepalives_rfc5626_3_5_1() {
        let mut f = StreamFramer::new();
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(&MSG[..10]);
        f.push(&stream);
        assert_eq!(drain(&mut f), vec![Bytes::from_static(MSG), Bytes::from_static(MSG)]);
        assert_eq!(f.buffered(), 10);
        f.push(&MSG[10..]);
        assert_eq!(drain(&mut f), vec![Bytes::from_static(MSG)]);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_message(), Ok(None));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn framed_message_parses_and_bare_lf_frames_too() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@h SIP/2.0\nVia: SIP/2.0/TCP h\nFrom: <sip:b@h>;tag=1\nTo: <sip:a@h>\nCall-ID: x\nCSeq: 1 OPTIONS\nContent-Length: 2\n\nokNEXT");
        let m = f.next_message().unwrap().unwrap();
        let parsed = crate::sip::parse_message(&m).unwrap();
        assert_eq!(&parsed.common().body[..], b"ok");
        assert_eq!(f.buffered(), 4);
    }

    #[test]
    fn content_length_is_required_on_streams_rfc3261_18_3() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::MissingContentLength));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@h SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::BadContentLength));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@h SIP/2.0\r\nl: 13\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::BadContentLength));
    }

    #[test]
    fn oversize_is_an_error_not_growth() {
        let mut f = StreamFramer::with_limit(64);
        f.push(&[b'A'; 65]);
        assert_eq!(f.next_message(), Err(FramingError::Oversize { limit: 64 }));
        let mut f = StreamFramer::with_limit(64);
        f.push(&[b'A'; 64]);
        assert_eq!(f.next_message(), Ok(None));
        let mut f = StreamFramer::with_limit(100);
        f.push(b"OPTIONS sip:a@h SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::Oversize { limit: 100 }));
    }
}
