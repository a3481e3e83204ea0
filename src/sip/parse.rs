//! Bytes → [`Message`]: staged decode of one SIP message (a UDP datagram, or one message framed off a stream by
//! [`super::framing::StreamFramer`]).
//!
//! Stages: `normalize` cuts, unfolds and names the header fields; the start line and the typed headers
//! are then parsed by parkd's own grammar code. When a request fails after its top Via, From, To, Call-ID and
//! CSeq were found as text, the error is [`DecodeError::Answerable`] and carries what is needed for a 400 (or
//! 505). A broken response is never answerable.
//!
//! rsip 0.4 is not used for parsing; probed against these cases it gets each wrong: it fails to tokenize RFC 4475
//! §3.1.1.2 (intmeth) at all, turns `invite` into `Method::Invite` (methods are case-sensitive) and has no
//! unknown-method variant, puts `?Replaces=...` into the *host* of a URI (its `Uri.headers` is always empty),
//! and fails on `sip:a@[2001:db8::1]:5070`.

use super::error::DecodeError;
use super::message::{CSeq, Common, Header, Message, Method, NameAddr, ReplyContext, Request, Response, Uri, Via};
use super::name_addr::{parse_cseq, parse_name_addr, parse_via};
use super::normalize::{frame_body, is_token, parse_head, split_head, split_list, Head};
use super::uri::parse_uri_strict;
use bytes::Bytes;
use std::borrow::Cow;

/// Decodes one SIP message. Leading CRLFs are skipped; the body is framed by Content-Length (extra bytes are
/// discarded, missing Content-Length means "the rest"). Never panics on any input.
pub fn parse_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let split = split_head(bytes)?;
    let text = String::from_utf8_lossy(split.head);
    let head = parse_head(&text);
    let is_request = !head.start_line.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
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
        let start = parse_start_line(head.start_line)?;
        let body = frame_body(&head, split.rest)?;
        let common = build_common(&head, Bytes::copy_from_slice(body))?;
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
    decoded.map_err(|e| if is_request { e.answerable(reply_context(&head).as_ref()) } else { e })
}

/// What is needed to answer a broken request: the Via values and the first From, To, Call-ID and CSeq, as text.
pub(crate) fn reply_context(head: &Head<'_>) -> Option<ReplyContext> {
    let first = |name| head.all(name).next().filter(|v| !v.is_empty()).map(str::to_string);
    let via: Vec<String> = head.all("Via").filter(|v| !v.is_empty()).map(str::to_string).collect();
    if via.is_empty() {
        return None;
    }
    Some(ReplyContext { via, from: first("From")?, to: first("To")?, call_id: first("Call-ID")?, cseq: first("CSeq")? })
}

enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

fn check_version(v: &str) -> Result<(), DecodeError> {
    match v.eq_ignore_ascii_case("SIP/2.0") {
        true => Ok(()),
        false if v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) => Err(DecodeError::UnsupportedVersion),
        false => Err(DecodeError::BadStartLine),
    }
}

/// Request-Line (RFC 3261 §7.1) or Status-Line (§7.2). Extra SP between or after the Request-Line elements is
/// accepted, as RFC 4475 §3.1.2.9 and §3.1.2.10 allow a liberal parser to.
fn parse_start_line(line: &str) -> Result<StartLine, DecodeError> {
    if line.contains(|c: char| c.is_control() && c != '\t') {
        return Err(DecodeError::BadStartLine);
    }
    if line.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) {
        let (version, rest) = line.split_once(' ').ok_or(DecodeError::BadStartLine)?;
        check_version(version)?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::BadStatusCode);
        }
        let status: u16 = code.parse().map_err(|_| DecodeError::BadStatusCode)?;
        if !(100..=699).contains(&status) {
            return Err(DecodeError::BadStatusCode);
        }
        return Ok(StartLine::Response(status, reason.trim_end_matches([' ', '\t']).to_string()));
    }
    let mut it = line.split([' ', '\t']).filter(|t| !t.is_empty());
    let (method, uri, version) = match (it.next(), it.next(), it.next(), it.next()) {
        (Some(m), Some(u), Some(v), None) => (m, u, v),
        _ => return Err(DecodeError::BadStartLine),
    };
    if !is_token(method) {
        return Err(DecodeError::BadStartLine);
    }
    check_version(version)?;
    // `<sip:...>` (RFC 4475 §3.1.2.7) and URI headers (§3.1.2.11, RFC 3261 §19.1.1) are not allowed here.
    let uri = parse_uri_strict(uri).map_err(|_| DecodeError::BadRequestUri)?;
    if !uri.headers.is_empty() {
        return Err(DecodeError::BadRequestUri);
    }
    Ok(StartLine::Request(Method::from_token(method), uri))
}

fn set_once<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), DecodeError> {
    match slot {
        Some(_) => Err(DecodeError::DuplicateHeader(name)),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn name_addr_list(value: &str, name: &'static str, out: &mut Vec<NameAddr>) -> Result<(), DecodeError> {
    let bad = || DecodeError::BadHeader { name };
    for element in split_list(value).map_err(|_| bad())? {
        out.push(parse_name_addr(element).map_err(|_| bad())?);
    }
    Ok(())
}

/// Types the headers parkd reads on every message; the rest are kept as text in arrival order.
fn build_common(head: &Head<'_>, body: Bytes) -> Result<Common, DecodeError> {
    let mut via: Vec<Via> = Vec::with_capacity(2);
    let (mut from, mut to, mut call_id, mut cseq): (Option<NameAddr>, Option<NameAddr>, Option<String>, Option<CSeq>) =
        (None, None, None, None);
    let (mut max_forwards, mut content_type) = (None, None);
    let (mut contact, mut route, mut record_route) = (Vec::new(), Vec::new(), Vec::new());
    let mut headers = Vec::with_capacity(head.headers.len());
    for h in &head.headers {
        let v = h.value.as_ref();
        match h.name {
            "Via" => {
                let bad = || DecodeError::BadHeader { name: "Via" };
                for element in split_list(v).map_err(|_| bad())? {
                    via.push(parse_via(element).map_err(|_| bad())?);
                }
            }
            "From" => set_once(&mut from, "From", parse_name_addr(v).map_err(|_| DecodeError::BadHeader { name: "From" })?)?,
            "To" => set_once(&mut to, "To", parse_name_addr(v).map_err(|_| DecodeError::BadHeader { name: "To" })?)?,
            "Call-ID" => {
                if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c.is_control()) {
                    return Err(DecodeError::BadHeader { name: "Call-ID" });
                }
                set_once(&mut call_id, "Call-ID", v.to_string())?
            }
            "CSeq" => set_once(&mut cseq, "CSeq", parse_cseq(v).map_err(|_| DecodeError::BadHeader { name: "CSeq" })?)?,
            "Max-Forwards" => {
                // 0..=255 (RFC 3261 §20.22; RFC 4475 §3.1.2.4 has 300 as invalid).
                let mf = Some(v)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|&n| n <= 255)
                    .ok_or(DecodeError::BadHeader { name: "Max-Forwards" })?;
                set_once(&mut max_forwards, "Max-Forwards", mf)?
            }
            "Contact" if v == "*" => headers.push(Header { name: "Contact".into(), value: "*".into() }),
            "Contact" => name_addr_list(v, "Contact", &mut contact)?,
            "Route" => name_addr_list(v, "Route", &mut route)?,
            "Record-Route" => name_addr_list(v, "Record-Route", &mut record_route)?,
            "Content-Type" => set_once(&mut content_type, "Content-Type", v.to_string())?,
            "Content-Length" => {} // applied by framing; the writer recomputes it
            name => headers.push(Header { name: name.to_string(), value: v.to_string() }),
        }
    }
    if via.is_empty() {
        return Err(DecodeError::MissingHeader("Via"));
    }
    Ok(Common {
        via,
        from: from.ok_or(DecodeError::MissingHeader("From"))?,
        to: to.ok_or(DecodeError::MissingHeader("To"))?,
        call_id: call_id.ok_or(DecodeError::MissingHeader("Call-ID"))?,
        cseq: cseq.ok_or(DecodeError::MissingHeader("CSeq"))?,
        max_forwards,
        contact,
        route,
        record_route,
        content_type,
        headers,
        body,
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
