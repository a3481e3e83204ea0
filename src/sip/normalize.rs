//! What happens to raw bytes before any grammar is applied: split the header section from the body (CRLF or
//! bare LF line ends), unfold folded header lines (RFC 3261 §7.3.1), expand compact header names and
//! canonicalize every known name to its long form, split comma-separated list headers, and frame the body by
//! Content-Length (RFC 3261 §18.3, §20.14).

use super::error::DecodeError;
use std::borrow::Cow;

/// A message cut at its header/body boundary.
#[derive(Debug)]
pub(crate) struct Split<'a> {
    /// Start line and header lines, without the terminating blank line.
    pub head: &'a [u8],
    /// Everything after the blank line (not yet framed by Content-Length).
    pub rest: &'a [u8],
    /// Whether a blank line was found at all.
    pub head_end: bool,
}

/// Leading empty lines are skipped (RFC 3261 §7.5: keep-alive CRLFs before a start line are ignored).
pub(crate) fn skip_leading_line_ends(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    bytes.get(n..).unwrap_or_default()
}

/// Where the header section ends: `(head_len, body_start)`. Accepts CRLFCRLF, LFLF and the mixed forms.
pub(crate) fn find_head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    // `memchr` finds each line end a word (or vector) at a time: this runs over every datagram twice (the
    // framing check, then the parse).
    memchr::memchr_iter(b'\n', bytes).find_map(|nl| match (bytes.get(nl + 1), bytes.get(nl + 2)) {
        (Some(b'\n'), _) => Some((nl, nl + 2)),
        (Some(b'\r'), Some(b'\n')) => Some((nl, nl + 3)),
        _ => None,
    })
}

/// Cuts a datagram (or a framed stream message) into head and rest.
pub(crate) fn split_head(bytes: &[u8]) -> Result<Split<'_>, DecodeError> {
    let bytes = skip_leading_line_ends(bytes);
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(DecodeError::Empty);
    }
    Ok(match find_head_end(bytes) {
        Some((head_len, body_start)) => Split {
            head: bytes.get(..head_len).unwrap_or_default(),
            rest: bytes.get(body_start..).unwrap_or_default(),
            head_end: true,
        },
        None => Split { head: bytes, rest: &[], head_end: false },
    })
}

/// One header field: canonical name, unfolded and trimmed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawHeader<'a> {
    pub name: &'a str,
    pub value: Cow<'a, str>,
}

/// The header section as lines: the start line, the header fields in order, and the first structural problem
/// met on the way (a line that is no header, ...). Lines with problems are skipped, so the essentials of a
/// broken request can still be read to answer it.
#[derive(Debug)]
pub(crate) struct Head<'a> {
    pub start_line: &'a str,
    pub headers: Vec<RawHeader<'a>>,
    pub problem: Option<DecodeError>,
}

impl<'a> Head<'a> {
    /// Values of every header named `name` (canonical long form).
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers.iter().filter(move |h| h.name == name).map(|h| h.value.as_ref())
    }
}

/// `s` split around the first `b`, an ASCII byte: [`str::split_once`] for one ASCII delimiter as a plain byte walk
/// (the short parts of a SIP message cost less to walk than to set up a `memchr` for).
#[inline]
pub(crate) fn split_at_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = find_byte(s, b)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Where the first `b` (an ASCII byte) is in `s`.
#[inline]
pub(crate) fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|x| x == b)
}

pub(crate) fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 3261 §25.1 `token` characters.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~')
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// `text.split('\n')`, the line ends found by `memchr` (no char searcher set up per line).
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', text.as_bytes()).chain(std::iter::once(text.len())).map(move |end| {
        // `end` is at an ASCII byte or the end: a char boundary.
        let line = text.get(start..end).unwrap_or_default();
        start = end + 1;
        line
    })
}

/// Splits the header section into the start line and unfolded, canonically named header fields.
pub(crate) fn parse_head(head: &str) -> Head<'_> {
    let mut lines = split_lines(head).map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default();
    let mut headers: Vec<RawHeader<'_>> = Vec::with_capacity(16);
    let mut problem = None;
    // Whether the last field line was kept (a continuation of a skipped line is skipped too).
    let mut kept = false;
    for line in lines {
        if find_byte(line, b'\r').is_some() {
            // A bare CR inside a line would end the line for some peers if written back: refuse it.
            problem.get_or_insert(DecodeError::BadHeaderLine);
            kept = false;
            continue;
        }
        if line.starts_with(is_wsp) {
            // RFC 3261 §7.3.1: a line starting with whitespace continues the previous field; the folding LWS
            // counts as a single SP.
            let cont = line.trim_matches(is_wsp);
            match headers.last_mut() {
                _ if cont.is_empty() => {}
                Some(h) if kept && h.value.is_empty() => h.value = Cow::Borrowed(cont),
                Some(h) if kept => {
                    let v = h.value.to_mut();
                    v.push(' ');
                    v.push_str(cont);
                }
                _ => {
                    problem.get_or_insert(DecodeError::BadHeaderLine);
                }
            }
            continue;
        }
        match split_at_byte(line, b':') {
            Some((name, value)) if is_token(name.trim_end_matches(is_wsp)) => {
                headers.push(RawHeader {
                    name: canonical_name(name.trim_end_matches(is_wsp)),
                    value: Cow::Borrowed(value.trim_matches(is_wsp)),
                });
                kept = true;
            }
            _ => {
                problem.get_or_insert(DecodeError::BadHeaderLine);
                kept = false;
            }
        }
    }
    Head { start_line, headers, problem }
}

/// Compact forms (RFC 3261 §7.3.3 and the IANA registry).
fn compact(c: u8) -> Option<&'static str> {
    Some(match c.to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'f' => "From",
        b't' => "To",
        b'v' => "Via",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'e' => "Content-Encoding",
        b'k' => "Supported",
        b's' => "Subject",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'o' => "Event",
        b'u' => "Allow-Events",
        b'x' => "Session-Expires",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        b'n' => "Identity-Info",
        _ => return None,
    })
}

/// Defines [`KNOWN`] and [`spelled_as_known`] from one list.
macro_rules! known_names {
    ($($name:literal),* $(,)?) => {
        /// Long forms parkd knows, as they are conventionally spelled.
        const KNOWN: &[&str] = &[$($name),*];

        /// Whether `name` is spelled exactly as in [`KNOWN`] (as nearly every peer writes them): one `match`,
        /// not a case-insensitive walk of the list.
        fn spelled_as_known(name: &str) -> bool {
            matches!(name, $($name)|*)
        }
    };
}

known_names![
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Route", "Record-Route", "Content-Type",
    "Content-Length", "Content-Encoding", "Content-Disposition", "Content-Language", "Supported", "Require",
    "Proxy-Require", "Unsupported", "Allow", "Allow-Events", "Accept", "Accept-Encoding", "Accept-Language",
    "Accept-Contact", "Reject-Contact", "Request-Disposition", "Subject", "Refer-To", "Referred-By", "Replaces",
    "Event", "Subscription-State", "Session-Expires", "Min-SE", "Expires", "Min-Expires", "User-Agent", "Server",
    "Date", "Timestamp", "Authorization", "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate",
    "Authentication-Info", "Warning", "Retry-After", "Organization", "Priority", "Reply-To", "In-Reply-To",
    "Alert-Info", "Call-Info", "Error-Info", "MIME-Version", "Identity", "Identity-Info", "P-Asserted-Identity",
    "P-Preferred-Identity", "Privacy", "RAck", "RSeq", "Path", "Service-Route", "Reason", "Refer-Sub",
    "Target-Dialog", "Join", "Diversion", "History-Info", "Remote-Party-ID",
];

/// The canonical long form of a header name: compact forms expanded, known names re-spelled
/// (`cAlL-iD` → `Call-ID`), unknown names kept as written.
pub(crate) fn canonical_name(name: &str) -> &str {
    if let [c] = name.as_bytes() {
        if let Some(long) = compact(*c) {
            return long;
        }
    }
    if spelled_as_known(name) {
        return name;
    }
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)).copied().unwrap_or(name)
}

/// Calls `f` with each element of a list header value, split at top-level commas (respecting quoted strings with
/// `\` escapes, and `<...>`), trimmed. An empty element (`Via: a,,b`) is an error; `f`'s error stops the walk.
/// Byte by byte: every delimiter is ASCII, so no byte of a multi-byte character can match one.
pub(crate) fn each_list_element<'a>(value: &'a str, mut f: impl FnMut(&'a str) -> Result<(), ()>) -> Result<(), ()> {
    let mut element = |e: &'a str| {
        let e = e.trim_matches(is_wsp);
        if e.is_empty() {
            return Err(());
        }
        f(e)
    };
    let (mut start, mut quoted, mut escaped, mut angle) = (0usize, false, false, false);
    for (i, b) in value.bytes().enumerate() {
        if quoted {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b'<' => angle = true,
            b'>' => angle = false,
            b',' if !angle => {
                element(value.get(start..i).ok_or(())?)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    element(value.get(start..).ok_or(())?)
}

/// `Content-Length` as a number: digits only (a sign, as in RFC 4475 §3.1.2.3, is an error).
pub(crate) fn parse_content_length(v: &str) -> Option<usize> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Applies Content-Length framing to what followed the blank line: the body is exactly Content-Length bytes
/// (extra datagram bytes are discarded, RFC 3261 §18.3); a larger Content-Length than arrived is an error; with
/// no Content-Length the rest of the datagram is the body. Conflicting values are an error (RFC 4475 §3.3.9).
pub(crate) fn frame_body<'b>(head: &Head<'_>, rest: &'b [u8]) -> Result<&'b [u8], DecodeError> {
    let mut declared: Option<usize> = None;
    for v in head.all("Content-Length") {
        let n = parse_content_length(v).ok_or(DecodeError::BadContentLength)?;
        if declared.is_some_and(|d| d != n) {
            return Err(DecodeError::BadContentLength);
        }
        declared = Some(n);
    }
    match declared {
        None => Ok(rest),
        Some(n) => rest.get(..n).ok_or(DecodeError::ContentLengthMismatch { declared: n, available: rest.len() }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_lines_reads_as_str_split() {
        for text in ["", "\n", "a", "a\n", "a\nb", "\n\na\r\nb\n", "é\nü\r\n\n"] {
            assert_eq!(super::split_lines(text).collect::<Vec<_>>(), text.split('\n').collect::<Vec<_>>(), "{text:?}");
        }
    }

    use super::*;

    /// The byte-wise split agrees with `str::split_once` for every ASCII delimiter, around multi-byte text too.
    #[test]
    fn split_at_byte_is_split_once_for_ascii_delimiters() {
        for s in ["sip:701@10.0.0.1:5060;transport=tcp", "", ":", "é:ü;x", "\"Zoë\" <sip:z@h>;tag=1", "a\r\nb", "noseparator"] {
            for b in [b':', b';', b'@', b'<', b'>', b'\n', b'\r', b'='] {
                assert_eq!(split_at_byte(s, b), s.split_once(char::from(b)), "{s:?} at {:?}", char::from(b));
                assert_eq!(find_byte(s, b), s.find(char::from(b)), "{s:?} at {:?}", char::from(b));
            }
        }
    }

    #[test]
    fn head_end_accepts_crlf_bare_lf_and_mixed() {
        assert_eq!(find_head_end(b"A\r\nB: c\r\n\r\nbody"), Some((8, 11)));
        assert_eq!(find_head_end(b"A\nB: c\n\nbody"), Some((6, 8)));
        assert_eq!(find_head_end(b"A\r\nB: c\n\nbody"), Some((7, 9)));
        assert_eq!(find_head_end(b"A\r\nB: c\r\n"), None);
        let s = split_head(b"\r\n\r\nOPTIONS x SIP/2.0\n\nbody").unwrap();
        assert_eq!(s.head, b"OPTIONS x SIP/2.0");
        assert_eq!(s.rest, b"body");
        assert_eq!(split_head(b"\r\n\r\n").unwrap_err(), DecodeError::Empty);
    }

    #[test]
    fn folded_lines_unfold_to_single_space_rfc3261_7_3_1() {
        let h = parse_head("INVITE x SIP/2.0\r\nSubject: I know you're there,\r\n   pick up the phone\r\n\tand talk\r\nTO :\r\n sip:a@b");
        assert_eq!(h.headers[0].value, "I know you're there, pick up the phone and talk");
        assert_eq!(h.headers[1], RawHeader { name: "To", value: Cow::Borrowed("sip:a@b") });
        assert!(h.problem.is_none());
    }

    #[test]
    fn compact_and_odd_case_names_are_canonical_rfc3261_7_3_3() {
        let h = parse_head("X\r\ni: a\r\nm: b\r\nF: c\r\nt: d\r\nv: e\r\nl: 0\r\nc: f\r\nk: g\r\nr: h\r\nb: i\r\no: j\r\nu: k\r\nx: l\r\ncAlL-iD: m\r\nCSEQ: 1 X\r\nNewFangled: n");
        let names: Vec<&str> = h.headers.iter().map(|h| h.name).collect();
        assert_eq!(
            names,
            ["Call-ID", "Contact", "From", "To", "Via", "Content-Length", "Content-Type", "Supported", "Refer-To", "Referred-By", "Event", "Allow-Events", "Session-Expires", "Call-ID", "CSeq", "NewFangled"]
        );
        for (c, long) in [("e", "Content-Encoding"), ("s", "Subject"), ("a", "Accept-Contact"), ("j", "Reject-Contact"), ("d", "Request-Disposition"), ("y", "Identity"), ("n", "Identity-Info")] {
            assert_eq!(canonical_name(c), long);
        }
    }

    #[test]
    fn a_line_without_colon_is_a_problem_but_others_survive() {
        let h = parse_head("X\r\nCall-ID: a\r\ngarbage\r\n bad name: v\r\nCSeq: 1 X");
        assert_eq!(h.problem, Some(DecodeError::BadHeaderLine));
        // " bad name: v" continues the skipped line and is skipped with it
        assert_eq!(h.all("Call-ID").collect::<Vec<_>>(), ["a"]);
        assert_eq!(h.all("CSeq").collect::<Vec<_>>(), ["1 X"]);
        let h = parse_head("X\r\nBad Name: v");
        assert_eq!(h.problem, Some(DecodeError::BadHeaderLine));
        let h = parse_head("X\r\n folded-first: v");
        assert_eq!(h.problem, Some(DecodeError::BadHeaderLine));
        let h = parse_head("X\r\nSubject: a\rInjected: b\r\nCSeq: 1 X");
        assert_eq!(h.problem, Some(DecodeError::BadHeaderLine));
        assert_eq!(h.headers.len(), 1);
    }

    /// The elements [`each_list_element`] walks, collected.
    fn split_list(value: &str) -> Result<Vec<&str>, ()> {
        let mut out = Vec::new();
        each_list_element(value, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        assert_eq!(split_list(r#""a, \"b" <sip:x@h;p=1,2>;q=1 , <sip:y@h>"#).unwrap(), [r#""a, \"b" <sip:x@h;p=1,2>;q=1"#, "<sip:y@h>"]);
        assert_eq!(split_list("SIP/2.0/UDP a;branch=1,SIP/2.0/UDP b").unwrap(), ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b"]);
        assert!(split_list("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
    }

    #[test]
    fn content_length_frames_the_body_rfc3261_18_3() {
        let head = parse_head("X\r\nContent-Length: 4");
        assert_eq!(frame_body(&head, b"bodyEXTRA").unwrap(), b"body");
        assert_eq!(frame_body(&head, b"bo").unwrap_err(), DecodeError::ContentLengthMismatch { declared: 4, available: 2 });
        let head = parse_head("X\r\nVia: v");
        assert_eq!(frame_body(&head, b"all of it").unwrap(), b"all of it");
        let head = parse_head("X\r\nl: -999");
        assert_eq!(frame_body(&head, b"x").unwrap_err(), DecodeError::BadContentLength);
        let head = parse_head("X\r\nl: 13\r\nContent-Length: 5");
        assert_eq!(frame_body(&head, b"0123456789abcdef").unwrap_err(), DecodeError::BadContentLength);
        let head = parse_head("X\r\nl: 2\r\nContent-Length: 2");
        assert_eq!(frame_body(&head, b"0123").unwrap(), b"01");
        assert_eq!(parse_content_length("99999999999999999999999"), None);
    }
}
