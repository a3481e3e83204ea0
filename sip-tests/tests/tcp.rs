//! SIP over TCP against the real binary: stream framing by the book (back-to-back messages, keep-alives,
//! CRLFCRLF ping → CRLF pong, 400 before the close, RFC 4475 dblreq / inv2543) and the connection limits (per
//! source cap, first-message and idle timeouts), each refusal logged and counted in `/metrics`.

use sip_tests::checks::{expect_hold_music, response_header};
use sip_tests::paths::workspace_dir;
use sip_tests::sip::sipp::header;
use sip_tests::sip::tcp::{self as sip_tcp, Read2, SipTcp};
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

fn connect(parkd: &Parkd) -> SipTcp {
    SipTcp::connect(parkd.sip_addr()).unwrap_or_else(|e| panic!("TCP connect to {}: {e}", parkd.sip_addr()))
}

fn rfc4475(name: &str) -> Vec<u8> {
    let path = workspace_dir().join("src/sip/testdata/rfc4475").join(format!("{name}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn status_line(m: &str) -> &str {
    m.lines().next().unwrap_or_default().trim()
}

fn with_http(name: &str, config: Option<&str>) -> Parkd {
    Parkd::start_with(name, ParkdOptions { http: true, config: config.map(str::to_string), ..Default::default() })
}

/// `GET /metrics` (open by default).
fn metrics(parkd: &Parkd) -> String {
    let url = format!("http://{}/metrics", parkd.http_addr.expect("parkd started with http"));
    ureq::get(&url).timeout(WAIT).call().unwrap_or_else(|e| panic!("GET {url}: {e}")).into_string().unwrap_or_default()
}

/// `parkd_sip_refusals_total{reason="<reason>"}` (0 when absent).
fn refusals(parkd: &Parkd, reason: &str) -> u64 {
    let prefix = format!("parkd_sip_refusals_total{{reason=\"{reason}\"}} ");
    metrics(parkd).lines().find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// How many `refused sip source=<ip> reason=<reason>` lines parkd logged (a summary line, which adds
/// `suppressed=<n>`, included; at most 3 lines per source and second are written).
fn refusal_lines(parkd: &Parkd, ip: &str, reason: &str) -> usize {
    let needle = format!("refused sip source={ip} reason={reason}");
    parkd.stderr_tail(100_000).lines().filter(|l| l.contains(&needle)).count()
}

/// Three OPTIONS in one write, with CRLF keep-alives before and between them, are each answered 200 in order,
/// and no keep-alive gets a pong.
#[test]
fn back_to_back_messages_are_each_answered() {
    let parkd = Parkd::start("tcp_back_to_back");
    let mut c = connect(&parkd);
    let local = c.local_addr();
    let mut stream = b"\r\n".to_vec();
    for cseq in 1..=3 {
        stream.extend_from_slice(sip_tcp::options(parkd.sip_addr(), local, cseq, true).as_bytes());
        if cseq != 2 {
            stream.extend_from_slice(b"\r\n");
        }
    }
    c.send(&stream).unwrap_or_else(|e| panic!("send: {e}"));
    for cseq in 1..=3 {
        let m = c.read_message(WAIT).unwrap_or_else(|| panic!("no answer to CSeq {cseq}; stderr:\n{}", parkd.stderr_tail(30)));
        assert_eq!(status_line(&m), "SIP/2.0 200 OK", "{m}");
        assert_eq!(header(&m, "CSeq"), Some(format!("{cseq} OPTIONS").as_str()), "answers come in order: {m}");
    }
    assert_eq!(c.skipped_line_ends, 0, "a lone CRLF is no ping: no pong");
    // The connection stays open for more.
    c.send(sip_tcp::options(parkd.sip_addr(), local, 4, true).as_bytes()).unwrap_or_else(|e| panic!("send: {e}"));
    let m = c.read_message(WAIT).unwrap_or_else(|| panic!("no answer to CSeq 4"));
    assert_eq!(header(&m, "CSeq"), Some("4 OPTIONS"));
}

/// RFC 5626 §3.5.1: a CRLFCRLF ping gets a single CRLF pong; a lone CRLF gets nothing.
#[test]
fn crlfcrlf_ping_gets_a_crlf_pong() {
    let parkd = Parkd::start("tcp_ping_pong");
    let mut c = connect(&parkd);
    c.send(b"\r\n\r\n").unwrap_or_else(|e| panic!("send: {e}"));
    assert_eq!(c.read_some(WAIT), Read2::Bytes(b"\r\n".to_vec()), "the pong");
    // Two pings in one write: two pongs.
    c.send(b"\r\n\r\n\r\n\r\n").unwrap_or_else(|e| panic!("send: {e}"));
    let mut got = Vec::new();
    while got.len() < 4 {
        match c.read_some(WAIT) {
            Read2::Bytes(b) => got.extend(b),
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    assert_eq!(got, b"\r\n\r\n");
    // A lone CRLF, then an OPTIONS: the first bytes back are the 200, not a pong.
    let local = c.local_addr();
    c.send(b"\r\n").unwrap_or_else(|e| panic!("send: {e}"));
    std::thread::sleep(Duration::from_millis(200));
    c.send(sip_tcp::options(parkd.sip_addr(), local, 1, true).as_bytes()).unwrap_or_else(|e| panic!("send: {e}"));
    match c.read_some(WAIT) {
        Read2::Bytes(b) => assert!(b.starts_with(b"SIP/2.0 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&b)),
        other => panic!("no answer: {other:?}"),
    }
}

/// A request without Content-Length gets `400 Missing Content-Length` echoing its Via, From, To, Call-ID and
/// CSeq, then the close; the refusal is logged in the fail2ban line and counted.
#[test]
fn no_content_length_gets_400_then_close() {
    let parkd = with_http("tcp_no_content_length", None);
    let mut c = connect(&parkd);
    let local = c.local_addr();
    // A complete request first: its answer must come before the 400.
    let mut stream = sip_tcp::options(parkd.sip_addr(), local, 1, true).into_bytes();
    stream.extend_from_slice(sip_tcp::options(parkd.sip_addr(), local, 2, false).as_bytes());
    c.send(&stream).unwrap_or_else(|e| panic!("send: {e}"));
    let first = c.read_message(WAIT).unwrap_or_else(|| panic!("no answer to CSeq 1"));
    assert_eq!((status_line(&first), header(&first, "CSeq")), ("SIP/2.0 200 OK", Some("1 OPTIONS")));
    let bad = c.read_message(WAIT).unwrap_or_else(|| panic!("no 400; stderr:\n{}", parkd.stderr_tail(30)));
    assert_eq!(status_line(&bad), "SIP/2.0 400 Missing Content-Length", "{bad}");
    assert_eq!(header(&bad, "CSeq"), Some("2 OPTIONS"));
    assert!(header(&bad, "Via").is_some_and(|v| v.contains(&format!("{local}"))), "Via echoed: {bad}");
    assert!(header(&bad, "Call-ID").is_some_and(|v| v.starts_with("tcp-")), "Call-ID echoed: {bad}");
    let rest = c.read_until_closed(WAIT).unwrap_or_else(|| panic!("parkd kept the connection open after the 400"));
    assert!(rest.is_empty(), "nothing after the 400: {:?}", String::from_utf8_lossy(&rest));
    assert_eq!(refusals(&parkd, "framing"), 1);
    assert_eq!(refusal_lines(&parkd, "127.0.0.1", "framing"), 1);
    assert!(parkd.answers_options(WAIT), "parkd still serves");
}

/// RFC 4475 §3.1.1.9 dblreq over TCP: the REGISTER, complete, gets its final answer (parkd is no registrar);
/// §3.1.2.x inv2543 (no Content-Length) gets a 400 before the close.
#[test]
fn rfc4475_dblreq_and_inv2543_over_tcp() {
    let parkd = Parkd::start("tcp_rfc4475");
    let mut c = connect(&parkd);
    c.send(&rfc4475("dblreq")).unwrap_or_else(|e| panic!("send: {e}"));
    let first = c.read_message(WAIT).unwrap_or_else(|| panic!("no answer to dblreq's REGISTER; stderr:\n{}", parkd.stderr_tail(30)));
    let code: u16 = status_line(&first).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    assert!(code >= 200, "a final answer: {first}");
    assert_eq!(header(&first, "CSeq"), Some("8 REGISTER"), "{first}");
    assert_eq!(header(&first, "Call-ID"), Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
    eprintln!("dblreq over TCP: REGISTER answered {:?}", status_line(&first));
    // The INVITE after it declares 150 of its 155 body bytes: the 5 left over break the stream, which is closed.
    let rest = c.read_until_closed(WAIT).unwrap_or_else(|| panic!("dblreq: connection left open"));
    eprintln!("dblreq over TCP: then {} more bytes before the close", rest.len());

    let mut c = connect(&parkd);
    c.send(&rfc4475("inv2543")).unwrap_or_else(|e| panic!("send: {e}"));
    let bad = c.read_message(WAIT).unwrap_or_else(|| panic!("no answer to inv2543; stderr:\n{}", parkd.stderr_tail(30)));
    assert_eq!(status_line(&bad), "SIP/2.0 400 Missing Content-Length", "{bad}");
    assert_eq!(header(&bad, "Call-ID"), Some("inv2543.1717@ift.client.example.com"));
    assert_eq!(header(&bad, "CSeq"), Some("56 INVITE"));
    assert!(c.read_until_closed(WAIT).is_some(), "inv2543: connection left open after the 400");
}

/// 300 connections from 127.0.0.2 that never send anything: 32 (the per-source cap) are held, the other 268
/// are closed at once, counted and logged; meanwhile 127.0.0.1 completes an OPTIONS and a park over TCP.
#[test]
fn idle_connections_from_one_address_do_not_stop_another() {
    // A long first-message timeout, so the 32 held connections keep their slots for the whole test.
    let parkd = with_http("tcp_idle_flood", Some("[limits]\ntcp_first_message_timeout = 120\n"));
    let flooder = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let rss_before = rss_kib(&parkd);
    let started = Instant::now();
    let mut flood = Vec::with_capacity(300);
    // A refusal can reset a connection before the client has finished connecting.
    let mut reset_while_connecting = 0;
    for i in 0..300 {
        match SipTcp::connect_from(flooder, parkd.sip_addr()) {
            Ok(c) => flood.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset_while_connecting += 1,
            Err(e) => panic!("connection {i} from {flooder}: {e}"),
        }
    }
    eprintln!("300 connections from {flooder} opened in {:?}", started.elapsed());
    // Wait until parkd has accepted (or refused) all of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while refusals(&parkd, "tcp_per_source") < 268 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(refusals(&parkd, "tcp_per_source"), 268, "300 - the cap of 32");
    let lines = refusal_lines(&parkd, "127.0.0.2", "tcp_per_source");
    assert!((1..=268).contains(&lines), "{lines} log lines for 268 refusals");
    eprintln!("268 refusals logged in {lines} lines (at most 3 per source and second)");
    let (mut closed, mut open) = (0, 0);
    for c in flood.iter_mut() {
        match c.read_some(Duration::from_millis(20)) {
            Read2::Closed => closed += 1,
            Read2::Nothing => open += 1,
            Read2::Bytes(b) => panic!("parkd wrote to a silent connection: {:?}", String::from_utf8_lossy(&b)),
        }
    }
    eprintln!("from {flooder}: {closed} closed by parkd, {reset_while_connecting} reset while connecting, {open} still open");
    assert_eq!(closed + reset_while_connecting, 268);
    assert_eq!(open, 32);

    // The other address is served, over TCP, while the flooder holds its 32.
    Sipp::new("options").service("700").tcp().run(&parkd).assert_passed(&parkd, "OPTIONS over TCP from 127.0.0.1");
    let bob = RtpEndpoint::bind("bob");
    let run = Sipp::new("park_indirect_uac").service("700").rtp_port(bob.port()).hold_ms(1500).tcp().spawn(&parkd);
    expect_hold_music(&bob, 25);
    let out = run.wait();
    out.assert_passed(&parkd, "park over TCP from 127.0.0.1");
    assert_eq!(response_header(&out, 200, "Park-Orbit"), "701");
    assert_eq!(refusals(&parkd, "tcp_total"), 0);
    eprintln!("parkd RSS: {rss_before} KiB before the flood, {} KiB with 32 held and 268 refused", rss_kib(&parkd));
    drop(flood);
}

/// parkd's resident memory in KiB (Linux `/proc`), for reports.
fn rss_kib(parkd: &Parkd) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", parkd.pid())).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// Connections sending garbage: 32 send 70 KB with no line end (over `max_message_bytes`: closed at once, nothing
/// to answer), 32 more send 60 KB of a header section that never ends (held, bounded, until the first-message
/// timeout closes them). parkd keeps serving another address over TCP; its RSS growth is reported.
#[test]
fn garbage_connections_are_bounded_and_closed() {
    let parkd = with_http("tcp_garbage", Some("[limits]\ntcp_first_message_timeout = 3\n"));
    let before = rss_kib(&parkd);
    let garbage = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let slow = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
    let mut oversize = Vec::new();
    for _ in 0..32 {
        let mut c = SipTcp::connect_from(garbage, parkd.sip_addr()).unwrap_or_else(|e| panic!("connect: {e}"));
        let _ = c.send(&vec![b'A'; 70_000]); // parkd may reset before all of it is written
        oversize.push(c);
    }
    let mut unfinished = Vec::new();
    for i in 0..32 {
        let mut c = SipTcp::connect_from(slow, parkd.sip_addr()).unwrap_or_else(|e| panic!("connect: {e}"));
        let head = format!("OPTIONS sip:700@x SIP/2.0\r\nVia: SIP/2.0/TCP {slow};branch=z9hG4bK{i}\r\n");
        let mut bytes = head.into_bytes();
        while bytes.len() < 60_000 {
            bytes.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        c.send(&bytes).unwrap_or_else(|e| panic!("send: {e}"));
        unfinished.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let holding = rss_kib(&parkd);
    Sipp::new("options").service("700").tcp().run(&parkd).assert_passed(&parkd, "OPTIONS over TCP from 127.0.0.1");
    for c in oversize.iter_mut() {
        assert!(c.read_until_closed(Duration::from_secs(10)).is_some_and(|b| b.is_empty()), "oversize garbage: closed, no answer");
    }
    assert_eq!(refusals(&parkd, "message_size"), 32);
    assert!(refusal_lines(&parkd, "127.0.0.3", "message_size") >= 1);
    for c in unfinished.iter_mut() {
        assert!(c.read_until_closed(Duration::from_secs(20)).is_some(), "an unfinished message is closed by the first-message timeout");
    }
    assert_eq!(refusals(&parkd, "tcp_first_message_timeout"), 32);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(&parkd);
    eprintln!(
        "parkd RSS: {before} KiB before, {holding} KiB holding 32 × 60 KB unfinished messages (+{} KiB), {after} KiB after all were closed",
        holding.saturating_sub(before)
    );
    assert!(parkd.answers_options(WAIT));
}

/// A connection that sends nothing is closed after `tcp_first_message_timeout`; one that sent a message and
/// then nothing, after `tcp_idle_timeout`. Both counted and logged. (The times are reported, not asserted.)
#[test]
fn silent_and_idle_connections_are_closed() {
    let parkd = with_http("tcp_idle_timeout", Some("[limits]\ntcp_first_message_timeout = 1\ntcp_idle_timeout = 2\n"));
    let t0 = Instant::now();
    let mut silent = connect(&parkd);
    let mut talker = connect(&parkd);
    let local = talker.local_addr();
    talker.send(sip_tcp::options(parkd.sip_addr(), local, 1, true).as_bytes()).unwrap_or_else(|e| panic!("send: {e}"));
    let ok = talker.read_message(WAIT).unwrap_or_else(|| panic!("no answer"));
    assert_eq!(status_line(&ok), "SIP/2.0 200 OK");
    let answered = Instant::now();
    assert_eq!(silent.read_until_closed(Duration::from_secs(20)), Some(Vec::new()), "the silent connection is closed");
    eprintln!("silent connection closed after {:?} (tcp_first_message_timeout = 1 s)", t0.elapsed());
    assert_eq!(talker.read_until_closed(Duration::from_secs(20)), Some(Vec::new()), "the idle connection is closed");
    eprintln!("idle connection closed {:?} after its last answer (tcp_idle_timeout = 2 s)", answered.elapsed());
    assert_eq!(refusals(&parkd, "tcp_first_message_timeout"), 1);
    assert_eq!(refusals(&parkd, "tcp_idle"), 1);
    assert_eq!(refusal_lines(&parkd, "127.0.0.1", "tcp_idle"), 1);
    assert_eq!(refusal_lines(&parkd, "127.0.0.1", "tcp_first_message_timeout"), 1);
}
