//! Which SIP shard a message belongs to (`[server] sip_threads`, README "Signalling shards"): a cheap peek at
//! the raw bytes, no parse. Pure functions, shared by the io layer's router and by the core (which makes every
//! Call-ID it invents land on its own shard).
//!
//! The rule, in order:
//! 1. a request whose Request-URI carries `;parkd-shard=K` (parkd's Contacts and a shard's `node_sip` carry it)
//!    goes to shard `K`: the one Call-ID a cross-shard retrieve shares between two shards is told apart by it;
//! 2. a new INVITE with `Replaces` (RFC 3891) goes to the shard of the dialog it replaces;
//! 3. everything else by its Call-ID's hash ([`shard_of_call_id`]): the dialogs a peer starts hash where they
//!    hash, and the ones parkd starts are given Call-IDs that hash to the shard starting them.
//!
//! A message without a Call-ID (malformed) goes to shard 0, which answers it 400 or drops it as today.

/// The Request-URI parameter naming the shard a request is for.
pub const SHARD_PARAM: &str = "parkd-shard";

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

/// The shard (of `n`) a raw SIP message (one datagram or one framed stream message) goes to.
pub fn route(msg: &[u8], n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let head = match find(msg, b"\r\n\r\n") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(first) = lines.next() else { return 0 };
    let request = !first.starts_with(b"SIP/");
    if request {
        if let Some(k) = uri_shard(first) {
            if k < n {
                return k;
            }
        }
    }
    let mut call_id: Option<&[u8]> = None;
    let mut replaces: Option<&[u8]> = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = trim(&line[..colon]);
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            call_id.get_or_insert(value);
        } else if request && name.eq_ignore_ascii_case(b"replaces") && first.starts_with(b"INVITE ") {
            replaces.get_or_insert(value);
        }
    }
    if let Some(r) = replaces {
        let id = r.split(|&b| b == b';').next().unwrap_or(r);
        if let Ok(s) = std::str::from_utf8(trim(id)) {
            return shard_of_call_id(s, n);
        }
    }
    match call_id.and_then(|c| std::str::from_utf8(c).ok()) {
        Some(c) => shard_of_call_id(c, n),
        None => 0,
    }
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
    fn garbage_goes_to_shard_0() {
        assert_eq!(route(b"", 2), 0);
        assert_eq!(route(b"\xff\xfe nonsense", 2), 0);
        assert_eq!(route(b"OPTIONS sip:x SIP/2.0\r\n\r\n", 2), 0);
    }
}
