//! Which SIP shard a message belongs to (`[server] sip_threads`, README "Signalling shards"): a cheap peek at
//! the raw bytes, no parse. Pure functions, shared by the io layer's router and by the core (which makes every
//! Call-ID it invents land on its own shard).
//!
//! The stateless rule ([`route`]), in order:
//! 1. a request whose Request-URI carries `;parkd-shard=K` (parkd's Contacts and a shard's `node_sip` carry it)
//!    goes to shard `K`: the one Call-ID a cross-shard retrieve shares between two shards is told apart by it;
//! 2. a response whose top Via branch is shard `K`'s (`z9hG4bKpks<K>-…`, `Endpoint::new_branch` in
//!    `core/endpoint.rs`) goes to `K`, which sent the request: a shard may hold a dialog whose Call-ID hashes
//!    elsewhere (a retrieve routed to the orbit's shard, see `shard_router.rs`), and its BYE's answer must come home;
//! 3. a new INVITE with `Replaces` (RFC 3891) goes to the shard of the dialog it replaces;
//! 4. everything else by its Call-ID's hash ([`shard_of_call_id`]): the dialogs a peer starts hash where they
//!    hash, and the ones parkd starts are given Call-IDs that hash to the shard starting them.
//!
//! A message without a Call-ID (malformed) goes to shard 0, which answers it 400 or drops it as today. The
//! io layer's [`super::shard_router::Router`] puts two rules of its own before 3 and 4.

/// The Request-URI parameter naming the shard a request is for.
pub const SHARD_PARAM: &str = "parkd-shard";

/// The Via branch prefix of a request shard `K` sent is this, then `K`, then `-` (see `Endpoint::new_branch`).
const BRANCH_SHARD_MARK: &[u8] = b"z9hG4bKpks";

/// The shard (of `n`) owning dialogs with this Call-ID: FNV-1a of its bytes, modulo `n`.
pub fn shard_of_call_id(call_id: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in call_id.trim().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % n as u64) as usize
}

/// What the router reads of a raw SIP message: its first line and the few header values that name a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peek<'a> {
    /// A request (not a response).
    pub request: bool,
    /// The request's method (empty for a response).
    pub method: &'a [u8],
    /// `;parkd-shard=K` in the Request-URI.
    pub uri_shard: Option<usize>,
    /// The Request-URI's user part (`701` in `sip:701@host`), for a request.
    pub uri_user: Option<&'a str>,
    /// The top Via's branch names shard `K` (`z9hG4bKpks<K>-…`).
    pub via_shard: Option<usize>,
    /// The Call-ID, trimmed.
    pub call_id: Option<&'a str>,
    /// The Call-ID a `Replaces` header names, on an INVITE.
    pub replaces: Option<&'a str>,
}

impl<'a> Peek<'a> {
    /// Reads `msg`'s head (up to the blank line). Never fails: what it cannot read stays `None`.
    pub fn of(msg: &'a [u8]) -> Peek<'a> {
        let head = match find(msg, b"\r\n\r\n") {
            Some(i) => &msg[..i],
            None => msg,
        };
        let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let Some(first) = lines.next() else { return Peek::default() };
        let request = !first.starts_with(b"SIP/");
        let mut p = Peek { request, ..Peek::default() };
        if request {
            p.method = first.split(|&b| b == b' ').next().unwrap_or_default();
            p.uri_shard = uri_shard(first);
            p.uri_user = uri_user(first);
        }
        let invite = p.method == b"INVITE";
        let mut top_via = true;
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let name = trim(&line[..colon]);
            let value = trim(&line[colon + 1..]);
            if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
                if p.call_id.is_none() {
                    p.call_id = std::str::from_utf8(value).ok();
                }
            } else if (name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v")) && top_via {
                top_via = false;
                if !request {
                    p.via_shard = via_shard(value);
                }
            } else if invite && name.eq_ignore_ascii_case(b"replaces") && p.replaces.is_none() {
                let id = value.split(|&b| b == b';').next().unwrap_or(value);
                p.replaces = std::str::from_utf8(trim(id)).ok();
            }
        }
        p
    }

    /// The shard (of `n`) parkd's own mark names: a request's Request-URI `;parkd-shard=K`, a response's top Via
    /// branch (rules 1 and 2 of the module doc).
    pub fn marked(&self, n: usize) -> Option<usize> {
        let marked = if self.request { self.uri_shard } else { self.via_shard };
        marked.filter(|&k| k < n)
    }

    /// The stateless rule of the module doc, for `n` shards.
    pub fn shard(&self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        if let Some(k) = self.marked(n) {
            return k;
        }
        if let Some(r) = self.replaces {
            return shard_of_call_id(r, n);
        }
        self.call_id.map_or(0, |c| shard_of_call_id(c, n))
    }
}

/// The shard (of `n`) a raw SIP message (one datagram or one framed stream message) goes to, by the stateless rule.
pub fn route(msg: &[u8], n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    Peek::of(msg).shard(n)
}

/// The user part of a request line's URI (`METHOD sip:user@host SIP/2.0`), without a password or parameters.
fn uri_user(first: &[u8]) -> Option<&str> {
    let uri = first.split(|&b| b == b' ').nth(1)?;
    let colon = uri.iter().position(|&b| b == b':')?;
    let (scheme, rest) = (&uri[..colon], &uri[colon + 1..]);
    if !(scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")) {
        return None;
    }
    let at = rest.iter().position(|&b| b == b'@')?;
    let user = &rest[..at];
    let user = &user[..user.iter().position(|&b| b == b':' || b == b';').unwrap_or(user.len())];
    std::str::from_utf8(user).ok().filter(|u| !u.is_empty())
}

/// The shard a top Via's branch names (`…;branch=z9hG4bKpks<K>-…`), the first via-parm of a comma list.
fn via_shard(value: &[u8]) -> Option<usize> {
    let first = value.split(|&b| b == b',').next().unwrap_or(value);
    let at = find(first, b"branch=")?;
    let branch = trim(&first[at + b"branch=".len()..]);
    let rest = branch.strip_prefix(BRANCH_SHARD_MARK)?;
    let digits = &rest[..rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len())];
    if digits.is_empty() || rest.get(digits.len()) != Some(&b'-') {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `;parkd-shard=K` in a request line's URI (`METHOD uri SIP/2.0`).
fn uri_shard(first: &[u8]) -> Option<usize> {
    let uri = first.split(|&b| b == b' ').nth(1)?;
    let at = find(uri, SHARD_PARAM.as_bytes())?;
    if at == 0 || uri[at - 1] != b';' {
        return None;
    }
    let rest = uri.get(at + SHARD_PARAM.len()..)?.strip_prefix(b"=")?;
    let digits: &[u8] = &rest[..rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len())];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str, call_id: &str, extra: &str) -> Vec<u8> {
        format!("{line}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nCall-ID: {call_id}\r\n{extra}Content-Length: 0\r\n\r\n").into_bytes()
    }

    #[test]
    fn call_ids_spread_over_the_shards_and_one_shard_takes_everything() {
        let mut hits = [0usize; 2];
        for i in 0..1000 {
            hits[shard_of_call_id(&format!("call-{i}@10.0.0.1"), 2)] += 1;
        }
        assert!(hits[0] > 400 && hits[1] > 400, "{hits:?}");
        assert_eq!(route(&req("INVITE sip:700@x SIP/2.0", "a", ""), 1), 0);
    }

    #[test]
    fn a_request_and_its_response_go_to_the_call_ids_shard_compact_form_too() {
        for i in 0..50 {
            let id = format!("c{i}@h");
            let want = shard_of_call_id(&id, 2);
            assert_eq!(route(&req("INVITE sip:700@127.0.0.1 SIP/2.0", &id, ""), 2), want);
            let resp = format!("SIP/2.0 200 OK\r\ni:  {id} \r\nContent-Length: 0\r\n\r\n");
            assert_eq!(route(resp.as_bytes(), 2), want);
        }
    }

    #[test]
    fn the_uri_mark_wins_for_requests_only() {
        let id = (0..).map(|i| format!("m{i}")).find(|c| shard_of_call_id(c, 2) == 0).unwrap();
        assert_eq!(route(&req("BYE sip:parkd@127.0.0.1:5060;parkd-shard=1 SIP/2.0", &id, ""), 2), 1);
        assert_eq!(route(&req("INVITE sip:703@127.0.0.1:5060;transport=udp;parkd-shard=1 SIP/2.0", &id, ""), 2), 1);
        // Out of range or not a parameter: ignored.
        assert_eq!(route(&req("BYE sip:parkd@127.0.0.1:5060;parkd-shard=7 SIP/2.0", &id, ""), 2), 0);
        assert_eq!(route(&req("BYE sip:parkd-shard=1@127.0.0.1 SIP/2.0", &id, ""), 2), 0);
        // A response is never routed by a URI (its Call-ID is the requester's).
        let resp = format!("SIP/2.0 200 OK\r\nContact: <sip:parkd@127.0.0.1;parkd-shard=1>\r\nCall-ID: {id}\r\n\r\n");
        assert_eq!(route(resp.as_bytes(), 2), 0);
    }

    #[test]
    fn an_invite_with_replaces_goes_to_the_replaced_dialogs_shard() {
        let parked = (0..).map(|i| format!("p{i}")).find(|c| shard_of_call_id(c, 2) == 1).unwrap();
        let new = (0..).map(|i| format!("n{i}")).find(|c| shard_of_call_id(c, 2) == 0).unwrap();
        let r = req("INVITE sip:703@127.0.0.1 SIP/2.0", &new, &format!("Replaces: {parked};to-tag=a;from-tag=b\r\n"));
        assert_eq!(route(&r, 2), 1);
    }

    #[test]
    fn a_response_goes_to_the_shard_its_top_via_names() {
        let id = (0..).map(|i| format!("v{i}")).find(|c| shard_of_call_id(c, 2) == 0).unwrap();
        let resp = |vias: &str| format!("SIP/2.0 200 OK\r\n{vias}Call-ID: {id}\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(route(resp("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKpks1-00ff;rport=5060\r\n").as_bytes(), 2), 1);
        assert_eq!(route(resp("v: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKpks1-00ff, SIP/2.0/UDP p;branch=z9hG4bKpks0-1\r\n").as_bytes(), 2), 1);
        // Only the top Via counts; not a shard's mark (no shard number, no dash, out of range): the Call-ID.
        for via in [
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKpks1-2\r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bKpks1, SIP/2.0/UDP b;branch=z9hG4bKpks1-2\r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bKpk00ff\r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bKpks-1\r\n",
            "Via: SIP/2.0/UDP a;branch=z9hG4bKpks7-1\r\n",
        ] {
            assert_eq!(route(resp(via).as_bytes(), 2), 0, "{via}");
        }
        // A request is never routed by its Via (a peer's).
        let r = format!("BYE sip:parkd@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKpks1-2\r\nCall-ID: {id}\r\n\r\n");
        assert_eq!(route(r.as_bytes(), 2), 0);
    }

    #[test]
    fn the_request_uris_user_part_is_read_without_password_or_parameters() {
        let user = |line: &str| Peek::of(format!("{line}\r\nCall-ID: c\r\n\r\n").as_bytes()).uri_user.map(str::to_string);
        assert_eq!(user("INVITE sip:701@10.0.0.1:5060;transport=udp SIP/2.0").as_deref(), Some("701"));
        assert_eq!(user("INVITE SIPS:701;x=y@h SIP/2.0").as_deref(), Some("701"));
        assert_eq!(user("INVITE sip:701:secret@h SIP/2.0").as_deref(), Some("701"));
        assert_eq!(user("INVITE sip:h SIP/2.0"), None);
        assert_eq!(user("INVITE tel:701 SIP/2.0"), None);
        assert_eq!(user("INVITE sip:@h SIP/2.0"), None);
        assert_eq!(user("SIP/2.0 200 OK"), None);
    }

    #[test]
    fn garbage_goes_to_shard_0() {
        assert_eq!(route(b"", 2), 0);
        assert_eq!(route(b"\xff\xfe nonsense", 2), 0);
        assert_eq!(route(b"OPTIONS sip:x SIP/2.0\r\n\r\n", 2), 0);
    }
}
