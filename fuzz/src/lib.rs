//! The bodies of parkd's fuzz targets (the files in `fuzz_targets/` only call these), so an input can also be
//! replayed from a plain test or a debugger.
//!
//! * [`datagram`]: the codec on arbitrary bytes; a decoded message re-encodes to an equal message.
//! * [`stream`]: the stream framer on arbitrary bytes cut into arbitrary reads; the frames do not depend on
//!   the cuts, the buffer stays within the message limit, every framed message is parsed.
//! * [`sdp`]: SDP offer parsing, codec choice, and the answer (which must parse back).
//! * [`core`]: a whole [`Core`] fed a sequence of messages from four peers with time jumps in between (see
//!   [`core`] for the input format); at the end, after an hour of silence, no transaction is left.

use bytes::Bytes;
use parkd::config::Config;
use parkd::core::{Core, Output};
use parkd::media::Codec;
use parkd::sdp::{build_answer, build_offer, choose_codec, parse_sdp, LocalSdp};
use parkd::sip::{check_datagram, parse_message, DecodeError, Frame, FrameLimits, FramingError, Message, Peer, StreamFramer, Transport};
use parkd::time::Time;
use parkd::txn::TimerConfig;
use std::net::SocketAddr;
use std::time::Duration;

fn encode(m: &Message) -> Bytes {
    match m {
        Message::Request(r) => r.encode(),
        Message::Response(r) => r.encode(),
    }
}

/// One datagram: limits check, decode, and for a decoded message a round trip through parkd's writer.
pub fn datagram(data: &[u8]) {
    if let Err(e) = check_datagram(data, &FrameLimits::default()) {
        let _ = e.response_bytes();
    }
    match parse_message(data) {
        Ok(msg) => {
            let bytes = encode(&msg);
            match parse_message(&bytes) {
                Ok(again) => assert_eq!(again, msg, "re-encoded message differs:\n{}", String::from_utf8_lossy(&bytes)),
                Err(e) => panic!("parkd's own encoding does not parse ({e}):\n{}", String::from_utf8_lossy(&bytes)),
            }
        }
        Err(e) => {
            let _ = e.response_bytes();
        }
    }
}

/// Small limits, so the fuzzer reaches them.
const STREAM_LIMITS: FrameLimits = FrameLimits { max_message: 2048, max_headers: 24 };

fn run_framer(data: &[u8], chunk: usize) -> (Vec<Frame>, Option<FramingError>) {
    let mut f = StreamFramer::with_limits(STREAM_LIMITS);
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        f.push(piece);
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => {
                    if let Frame::Message(m) = &frame {
                        assert!(m.len() <= STREAM_LIMITS.max_message, "a framed message over the limit: {}", m.len());
                        if let Err(e) = parse_message(m) {
                            // The framer and the parser agree on where a message ends.
                            let cause = e.cause();
                            assert!(
                                !matches!(cause, DecodeError::NoHeaderEnd | DecodeError::ContentLengthMismatch { .. } | DecodeError::BadContentLength),
                                "framer and parser disagree ({cause}) on {:?}",
                                String::from_utf8_lossy(m)
                            );
                        }
                    }
                    out.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.response_bytes();
                    return (out, Some(e));
                }
            }
        }
        assert!(f.buffered() <= STREAM_LIMITS.max_message, "framer holds {} bytes", f.buffered());
    }
    (out, None)
}

/// The first byte chooses the read size (1..=64 bytes); the rest is the stream.
pub fn stream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    let whole = run_framer(stream, stream.len());
    let cut = run_framer(stream, usize::from(seed % 64) + 1);
    assert_eq!(whole, cut, "framing depends on how the stream is cut");
}

/// An SDP offer: parse, choose a codec, answer; the answer and an offer of parkd's parse back as written.
pub fn sdp(data: &[u8]) {
    let Ok(remote) = parse_sdp(data) else { return };
    let local = LocalSdp { session_id: 7, version: 1, ip: [127, 0, 0, 1].into(), port: 20_000 };
    if let Some(codec) = choose_codec(&remote, &[Codec::Pcmu, Codec::Pcma]) {
        let answer = build_answer(&local, codec, remote.dtmf_pt, remote.direction.reverse());
        let back = parse_sdp(&answer).unwrap_or_else(|e| panic!("parkd's answer does not parse ({e}):\n{}", String::from_utf8_lossy(&answer)));
        assert_eq!(choose_codec(&back, &[Codec::Pcmu, Codec::Pcma]), Some(codec), "answer:\n{}", String::from_utf8_lossy(&answer));
        assert_eq!(back.direction, remote.direction.reverse());
        assert_eq!(back.dtmf_pt, remote.dtmf_pt, "answer:\n{}", String::from_utf8_lossy(&answer));
    }
    let offer = build_offer(&local, &[Codec::Pcmu, Codec::Pcma], remote.dtmf_pt, remote.direction);
    if let Err(e) = parse_sdp(&offer) {
        panic!("parkd's offer does not parse ({e}):\n{}", String::from_utf8_lossy(&offer));
    }
}

/// The configuration of the fuzzed core: two lots, the second with Digest auth and a retrieve code, a trusted
/// proxy (peer 3).
const CORE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:5060"
rtp_ports = "20000-20099"
trusted_proxies = ["127.0.0.4/32"]

[[lot]]
name = "default"
park_code = "700"
orbits = "701-705"
retrieve_code = "799"

[[lot]]
name = "vip"
park_code = "800"
orbits = "801-802"
slot_policy = "random"
recall_fallback = "hangup"
empty_orbit = "park"
[lot.auth]
users = { alice = "secret" }
"#;

/// The peers a core input speaks as: three phones and a trusted proxy.
const PEERS: [&str; 4] = ["127.0.0.1:5070", "127.0.0.1:5071", "127.0.0.1:5072", "127.0.0.4:5060"];

/// Time jumps before a record, by its control byte's top 5 bits: none, sub-second steps, and the timers that
/// matter (transaction timers, 45 s parking time, 30 s ring, 60 s keepalive, 1800 s max park, 3600 s expiry).
const JUMPS_MS: [u64; 32] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 10, 100, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 31_000, 32_000, 33_000, 45_000, 46_000, 60_000, 61_000,
    90_000, 120_000, 300_000, 600_000, 1_800_000, 1_801_000, 3_600_000, 7_200_000,
];

/// What the harness remembers per peer: the last message parkd sent it, and the dialog tag of the last
/// response that had one (for SIPp-style keywords).
#[derive(Default)]
struct PeerState {
    last: Option<String>,
    /// The last request parkd sent this peer (the recall INVITE, a NOTIFY, a BYE...).
    last_request: Option<String>,
    dialog_tag: Option<String>,
}

/// A core driven in virtual time.
pub struct CoreRun {
    core: Core,
    now: Time,
    peers: [PeerState; 4],
    /// Print every message in and out (for `examples/replay.rs`).
    pub trace: bool,
    /// Drain outputs without remembering them (the final hour of silence: nobody answers any more).
    silent: bool,
}

/// The record separator of a core input.
pub const SEPARATOR: &[u8] = b"\n%%\n";

impl Default for CoreRun {
    fn default() -> Self {
        CoreRun::new()
    }
}

impl CoreRun {
    pub fn new() -> CoreRun {
        static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        let cfg = CONFIG.get_or_init(|| Config::from_toml(std::path::Path::new("fuzz.toml"), CORE_CONFIG).expect("fuzz config parses")).clone();
        CoreRun { core: Core::new(cfg.server, cfg.lots, TimerConfig::default(), 42), now: Time::from_secs(1_000_000), peers: Default::default(), trace: false, silent: false }
    }

    /// Moves the clock forward by `d`, firing every deadline on the way at its own time.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        let mut fired = 0u32;
        while let Some((t, _)) = self.core.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.drain();
            fired += 1;
            assert!(fired < 1_000_000, "timers fire without end at {:?}", self.now);
        }
        self.now = end;
    }

    fn drain(&mut self) {
        while let Some(out) = self.core.poll_output() {
            let Output::Sip { to, bytes } = out else { continue };
            if self.silent {
                continue;
            }
            let Some(i) = PEERS.iter().position(|p| p.parse::<SocketAddr>().ok() == Some(to.addr)) else { continue };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if self.trace {
                println!("---- parkd -> peer {i} at {:?}\n{text}", self.now);
            }
            match parse_message(&bytes) {
                Ok(Message::Response(r)) => {
                    if let Some(tag) = r.common.to.tag() {
                        self.peers[i].dialog_tag = Some(tag.to_string());
                    }
                }
                Ok(Message::Request(_)) => self.peers[i].last_request = Some(text.clone()),
                Err(_) => {}
            }
            self.peers[i].last = Some(text);
        }
    }

    /// Delivers one record: control byte (bits 0-1 peer, bit 2 TCP, bits 3-7 the time jump before it), then the
    /// message, with SIPp keywords filled in from what parkd last sent that peer.
    pub fn record(&mut self, record: &[u8]) {
        let Some((&control, message)) = record.split_first() else { return };
        let peer = usize::from(control & 3);
        let jump = JUMPS_MS[usize::from(control >> 3)];
        if jump > 0 {
            self.advance(Duration::from_millis(jump));
        }
        let transport = if control & 4 != 0 { Transport::Tcp } else { Transport::Udp };
        let bytes = self.fill_keywords(peer, message);
        let Ok(addr) = PEERS[peer].parse::<SocketAddr>() else { return };
        if self.trace {
            println!("---- peer {peer} ({transport:?}) -> parkd at {:?}\n{}", self.now, String::from_utf8_lossy(&bytes));
        }
        self.core.handle_sip(self.now, Peer { transport, addr }, &bytes);
        self.drain();
    }

    /// SIPp keywords that depend on parkd's messages: `[last_<Header>:]`, `[peer_tag_param]`, `[$dialog_tag]`,
    /// `[$to_tag_param]`, `[$parkd_tag]`, `[next_url]`, `[routes]`, `[call_id]` (of a call parkd started), the
    /// values the UAS scenarios take from parkd's last request (`[$parkd_from]`, `[$remote_from]`,
    /// `[$local_to]`, `[$invite_via]`, `[$invite_cseq]`), and `[len]` (the body length, computed last).
    fn fill_keywords(&self, peer: usize, message: &[u8]) -> Vec<u8> {
        if !message.contains(&b'[') {
            return message.to_vec();
        }
        let state = &self.peers[peer];
        let tag = state.dialog_tag.as_deref().unwrap_or("none");
        let mut out: Vec<u8> = Vec::with_capacity(message.len() + 256);
        let mut rest = message;
        let mut len_at: Vec<usize> = Vec::new();
        while let Some(open) = rest.iter().position(|&b| b == b'[') {
            out.extend_from_slice(&rest[..open]);
            let after = &rest[open..];
            let Some(close) = after.iter().take(64).position(|&b| b == b']') else {
                out.push(b'[');
                rest = &after[1..];
                continue;
            };
            let key = String::from_utf8_lossy(&after[1..close]);
            match key.as_ref() {
                "len" => len_at.push(out.len()),
                "peer_tag_param" => out.extend_from_slice(format!(";tag={tag}").as_bytes()),
                "$dialog_tag" | "$to_tag_param" | "$parkd_tag" => out.extend_from_slice(tag.as_bytes()),
                "call_id" => out.extend_from_slice(last_value(&state.last, "Call-ID").unwrap_or("none").as_bytes()),
                "$parkd_from" | "$remote_from" => out.extend_from_slice(last_value(&state.last_request, "From").unwrap_or("<sip:x@h>").as_bytes()),
                "$local_to" => out.extend_from_slice(last_value(&state.last_request, "To").unwrap_or("<sip:x@h>").as_bytes()),
                "$invite_via" => out.extend_from_slice(last_value(&state.last_request, "Via").unwrap_or("SIP/2.0/UDP h").as_bytes()),
                "$invite_cseq" => {
                    let cseq = last_value(&state.last_request, "CSeq").and_then(|c| c.split_whitespace().next()).unwrap_or("1");
                    out.extend_from_slice(cseq.as_bytes())
                }
                "routes" => {}
                "next_url" => out.extend_from_slice(state.last.as_deref().and_then(contact_uri).unwrap_or("sip:700@127.0.0.1:5060").as_bytes()),
                k if k.starts_with("last_") && k.ends_with(':') => {
                    let name = &k[5..k.len() - 1];
                    let lines = state.last.as_deref().map(|m| header_lines(m, name)).unwrap_or_default();
                    out.extend_from_slice(lines.as_bytes());
                }
                _ => out.extend_from_slice(&after[..=close]),
            }
            rest = &after[close + 1..];
        }
        out.extend_from_slice(rest);
        if len_at.is_empty() {
            return out;
        }
        let body_len = out.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| out.len() - i - 4);
        let digits = body_len.to_string();
        // [len] is in the head, so writing it does not change the body's length.
        let mut filled = Vec::with_capacity(out.len() + 8 * len_at.len());
        let mut last = 0;
        for at in len_at {
            filled.extend_from_slice(&out[last..at]);
            filled.extend_from_slice(digits.as_bytes());
            last = at;
        }
        filled.extend_from_slice(&out[last..]);
        filled
    }

    /// Live transactions (for the end-of-input check).
    pub fn transactions(&self) -> (usize, usize) {
        let live = self.core.live();
        (live.server_txns, live.client_txns)
    }
}

/// Every `Name: value` line of header `name` in a message (CRLF-joined, no trailing CRLF).
fn header_lines(message: &str, name: &str) -> String {
    let head = message.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .skip(1)
        .filter(|l| l.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name)))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// The value of the first `name` header of a remembered message.
fn last_value<'a>(message: &'a Option<String>, name: &str) -> Option<&'a str> {
    let head = message.as_deref()?.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// The URI inside the Contact of a message.
fn contact_uri(message: &str) -> Option<&str> {
    let head = message.split("\r\n\r\n").next()?;
    let line = head.split("\r\n").find(|l| l.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("contact")))?;
    let start = line.find('<')? + 1;
    let end = start + line.get(start..)?.find('>')?;
    line.get(start..end)
}

/// A core input: records separated by [`SEPARATOR`], each delivered in order (see [`CoreRun::record`]); then an
/// hour of silence, after which no transaction may be left.
pub fn core(data: &[u8]) {
    core_traced(data, false)
}

/// [`core`], printing the exchange when `trace`.
pub fn core_traced(data: &[u8], trace: bool) {
    let mut run = CoreRun::new();
    run.trace = trace;
    let mut rest = data;
    let mut records = 0;
    loop {
        let (record, next) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => (&rest[..i], Some(&rest[i + SEPARATOR.len()..])),
            None => (rest, None),
        };
        run.record(record);
        records += 1;
        match next {
            Some(n) if records < 64 => rest = n,
            _ => break,
        }
    }
    run.silent = !trace;
    run.advance(Duration::from_secs(3_600));
    assert_eq!(run.transactions(), (0, 0), "transactions left behind after an hour of silence");
}
