//! SIP over TLS against the real binary (issue 19): park and retrieve over TLS with RTP checked, BLF
//! SUBSCRIBE/NOTIFY over TLS, a recall over the parker's own TLS connection (RFC 5923-style reuse) and over a
//! new outbound TLS connection verified against `tls_ca`, mutual TLS (no client certificate → refused), garbage
//! and a handshake that never completes (dropped within a bound, counted), and SIGHUP reloading the certificate.
//! The phones are the project's TLS test phone ([`TlsPhone`]) trusting a test CA made with rcgen.

use sip_tests::checks::{expect_hold_music, expect_peer_audio};
use sip_tests::sip::sipp::header;
use sip_tests::sip::tls::{self, answer, expect, sdp, sdp_port, start_line, SipTls, TestPki, TlsPhone, TlsServer};
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const BOB: u8 = 0xb0;
const ALICE: u8 = 0xa1;

struct TlsParkd {
    parkd: Parkd,
    pki: TestPki,
    tls: SocketAddr,
    _dir: tempfile::TempDir,
}

fn start(name: &str, mutual: bool, parking_time: u32) -> TlsParkd {
    start_with_config(name, mutual, parking_time, None)
}

fn start_with_config(name: &str, mutual: bool, parking_time: u32, config: Option<&str>) -> TlsParkd {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), &format!("parkd test CA {name}"));
    let tls = tls::free_tls_addr();
    let options = ParkdOptions { extra_args: pki.parkd_args(tls, mutual), parking_time, config: config.map(str::to_string), ..Default::default() };
    let parkd = Parkd::start_with(name, options);
    TlsParkd { parkd, pki, tls, _dir: dir }
}

impl TlsParkd {
    fn phone(&self, user: &str, identity: Option<tls::Identity>) -> TlsPhone {
        let conn = SipTls::connect(self.tls, self.pki.client_config(identity)).unwrap_or_else(|e| panic!("TLS connect to {}: {e}\n{}", self.tls, self.parkd.stderr_tail(30)));
        TlsPhone::new(conn, user, self.tls)
    }

    fn refusal_lines(&self, reason: &str) -> usize {
        let needle = format!("refused sip source=127.0.0.1 reason={reason}");
        self.parkd.stderr_tail(100_000).lines().filter(|l| l.contains(&needle)).count()
    }
}

/// Waits (bounded) until parkd logged a refusal for `reason`.
fn wait_refusal(p: &TlsParkd, reason: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if p.refusal_lines(reason) > 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Bob parks over TLS (sips: Request-URI), hears hold music; alice retrieves 701 over TLS; they hear each
/// other; alice hangs up and parkd's BYE reaches bob over bob's own TLS connection. parkd's Contact names its
/// TLS address (sips: for the sips: request, transport=tls for the other).
#[test]
fn park_and_retrieve_over_tls() {
    let p = start("tls_park_retrieve", false, 600);
    let bob_rtp = RtpEndpoint::bind("bob");
    let mut bob = p.phone("bob", None);
    bob.scheme = "sips";
    let (mut bob_call, ok) = bob.invite("700", bob_rtp.port(), "", WAIT).unwrap_or_else(|e| panic!("park over TLS: {e}"));
    assert_eq!(header(&ok, "Park-Orbit"), Some("701"), "{ok}");
    let contact = header(&ok, "Contact").unwrap_or_default();
    assert!(contact.contains(&format!("sips:parkd@{}", p.tls)), "Contact of a sips: dialog is sips: at the TLS address: {contact}");
    bob_rtp.start_talking(BOB);
    expect_hold_music(&bob_rtp, 50);

    let alice_rtp = RtpEndpoint::bind("alice");
    alice_rtp.start_talking(ALICE);
    let mut alice = p.phone("alice", None);
    let (mut alice_call, ok) = alice.invite("701", alice_rtp.port(), "", WAIT).unwrap_or_else(|e| panic!("retrieve over TLS: {e}"));
    let contact = header(&ok, "Contact").unwrap_or_default();
    assert!(contact.contains(&format!("sip:parkd@{};transport=tls", p.tls)), "Contact names the TLS address and transport: {contact}");
    assert!(sdp_port(&ok).is_some(), "200 carries SDP: {ok}");
    expect_peer_audio(&alice_rtp, BOB, 100);
    expect_peer_audio(&bob_rtp, ALICE, 100);

    alice.bye(&mut alice_call, WAIT);
    let bye = expect(&mut bob.conn, WAIT, "parkd's BYE to bob over bob's TLS connection", |m| start_line(m).starts_with("BYE "));
    let via = header(&bye, "Via").unwrap_or_default();
    assert!(via.starts_with(&format!("SIP/2.0/TLS {}", p.tls)), "parkd's Via on TLS: {via}");
    bob.conn.send(answer(&bye, 200, "", "").as_bytes()).expect("200 to BYE");
    bob_call.cseq += 1;
    assert_eq!(p.parkd.stderr_tail(200).matches("panicked").count(), 0);
}

/// BLF over TLS: SUBSCRIBE to 701 (200 + NOTIFY terminated on the same connection), then bob parks there and
/// the next NOTIFY, over the subscriber's TLS connection, shows it confirmed.
#[test]
fn blf_subscribe_and_notify_over_tls() {
    let p = start("tls_blf", false, 600);
    let mut watcher = p.phone("watcher", None);
    let (_sub, ok) = watcher.subscribe("701", 300, WAIT);
    assert!(start_line(&ok).starts_with("SIP/2.0 200"), "{ok}");
    let first = expect(&mut watcher.conn, WAIT, "first NOTIFY", |m| start_line(m).starts_with("NOTIFY "));
    assert!(first.contains("<state>terminated</state>") || !first.contains("<state>"), "empty orbit: {first}");
    assert!(header(&first, "Via").unwrap_or_default().starts_with("SIP/2.0/TLS"), "{first}");
    watcher.conn.send(answer(&first, 200, "", "").as_bytes()).expect("200 to NOTIFY");

    let bob_rtp = RtpEndpoint::bind("bob");
    let mut bob = p.phone("bob", None);
    bob.invite("700", bob_rtp.port(), "", WAIT).unwrap_or_else(|e| panic!("park over TLS: {e}"));
    let busy = expect(&mut watcher.conn, WAIT, "NOTIFY confirmed", |m| start_line(m).starts_with("NOTIFY ") && m.contains("<state>confirmed</state>"));
    assert!(busy.contains("sip:bob@"), "the parked party is named: {busy}");
    watcher.conn.send(answer(&busy, 200, "", "").as_bytes()).expect("200 to NOTIFY");
    expect_hold_music(&bob_rtp, 20);
}

/// The recall goes over the parker's own TLS connection: alice's Via and Referred-By name 127.0.0.1:<a port
/// nobody listens on>, so only the reuse of her connection (RFC 5923 style) can reach her. She answers; bob and
/// alice are bridged with audio both ways.
#[test]
fn recall_over_the_parkers_tls_connection() {
    let p = start("tls_recall_reuse", false, 2);
    let mut alice = p.phone("alice", None);
    let unreachable = tls::free_tls_addr();
    alice.sent_by = unreachable;
    let opt = alice.options(WAIT).unwrap_or_else(|| panic!("no answer to alice's OPTIONS\n{}", p.parkd.stderr_tail(30)));
    assert!(start_line(&opt).starts_with("SIP/2.0 200"), "{opt}");

    let bob_rtp = RtpEndpoint::bind("bob");
    bob_rtp.start_talking(BOB);
    let mut bob = p.phone("bob", None);
    let referred_by = format!("Referred-By: <sip:alice@{unreachable};transport=tls>\r\n");
    bob.invite("700", bob_rtp.port(), &referred_by, WAIT).unwrap_or_else(|e| panic!("park over TLS: {e}"));
    expect_hold_music(&bob_rtp, 20);

    let t0 = Instant::now();
    let invite = expect(&mut alice.conn, Duration::from_secs(15), "the recall INVITE on alice's connection", |m| start_line(m).starts_with("INVITE "));
    eprintln!("recall INVITE reached alice {:.1} s after bob parked (parking_time 2 s)", t0.elapsed().as_secs_f64());
    let via = header(&invite, "Via").unwrap_or_default();
    assert!(via.starts_with(&format!("SIP/2.0/TLS {}", p.tls)), "recall Via: {via}");
    assert!(header(&invite, "Contact").unwrap_or_default().contains("transport=tls"), "{invite}");
    let alice_rtp = RtpEndpoint::bind("alice");
    alice_rtp.start_talking(ALICE);
    let body = sdp(alice_rtp.port());
    let extra = format!("Contact: {}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", alice.contact(), body.len());
    alice.conn.send(answer(&invite, 200, "alicetag", &extra).as_bytes()).expect("200 to the recall");
    expect(&mut alice.conn, WAIT, "parkd's ACK", |m| start_line(m).starts_with("ACK "));
    expect_peer_audio(&alice_rtp, BOB, 100);
    expect_peer_audio(&bob_rtp, ALICE, 100);
}

/// Mutual TLS and an outbound connection: with `tls_ca`, a client without a certificate is refused (counted),
/// one with a certificate from the CA parks; its recall goes to alice, who listens for TLS: parkd connects,
/// verifies her certificate against `tls_ca`, and the call is bridged.
#[test]
fn mutual_tls_refuses_clients_without_a_certificate_and_recalls_over_a_new_verified_connection() {
    let p = start("tls_mutual", true, 2);
    // No client certificate: the handshake fails at parkd (TLS 1.3 clients learn it on their first read).
    match SipTls::connect(p.tls, p.pki.client_config(None)) {
        Err(e) => eprintln!("client without a certificate: handshake refused at once ({e})"),
        Ok(conn) => {
            let mut anon = TlsPhone::new(conn, "anon", p.tls);
            let got = anon.options(Duration::from_secs(3));
            assert!(got.is_none(), "a client without a certificate was answered: {got:?}");
            assert!(anon.conn.closed_within(WAIT), "parkd closes the connection");
        }
    }
    assert!(wait_refusal(&p, "tls_handshake", WAIT), "refusal logged\n{}", p.parkd.stderr_tail(30));

    let alice_srv = TlsServer::bind(p.pki.server_identity("alice"));
    let bob_rtp = RtpEndpoint::bind("bob");
    bob_rtp.start_talking(BOB);
    let mut bob = p.phone("bob", Some(p.pki.client_identity("bob")));
    let referred_by = format!("Referred-By: <sip:alice@{};transport=tls>\r\n", alice_srv.addr());
    bob.invite("700", bob_rtp.port(), &referred_by, WAIT).unwrap_or_else(|e| panic!("park with a client certificate: {e}"));
    expect_hold_music(&bob_rtp, 20);

    let mut alice = alice_srv.accept(Duration::from_secs(15)).unwrap_or_else(|| panic!("parkd did not connect to alice over TLS\n{}", p.parkd.stderr_tail(30)));
    let invite = expect(&mut alice, WAIT, "the recall INVITE over parkd's new TLS connection", |m| start_line(m).starts_with("INVITE "));
    assert!(header(&invite, "Via").unwrap_or_default().starts_with("SIP/2.0/TLS"), "{invite}");
    let alice_rtp = RtpEndpoint::bind("alice");
    alice_rtp.start_talking(ALICE);
    let body = sdp(alice_rtp.port());
    let extra = format!("Contact: <sip:alice@{};transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", alice_srv.addr(), body.len());
    alice.send(answer(&invite, 200, "alicetag", &extra).as_bytes()).expect("200 to the recall");
    expect(&mut alice, WAIT, "parkd's ACK", |m| start_line(m).starts_with("ACK "));
    expect_peer_audio(&alice_rtp, BOB, 100);
    expect_peer_audio(&bob_rtp, ALICE, 100);
}

/// Plain bytes on the TLS port are a failed handshake (closed, counted); a connection that never starts its
/// handshake is dropped within the 5 s bound (counted); parkd still serves TLS afterwards.
#[test]
fn garbage_and_a_stalled_handshake_are_dropped_within_a_bound() {
    let p = start("tls_garbage", false, 600);
    let mut garbage = TcpStream::connect(p.tls).expect("connect");
    garbage.write_all(b"OPTIONS sip:700@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n").expect("write");
    let t0 = Instant::now();
    assert!(closed_within(&mut garbage, WAIT), "parkd kept a connection speaking plain SIP on its TLS port");
    eprintln!("garbage: closed after {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
    assert!(wait_refusal(&p, "tls_handshake", WAIT));

    let mut stalled = TcpStream::connect(p.tls).expect("connect");
    let t0 = Instant::now();
    assert!(closed_within(&mut stalled, Duration::from_secs(15)), "a silent connection was kept beyond 15 s");
    eprintln!("silent connection: closed after {:.1} s (bound: 5 s handshake timeout)", t0.elapsed().as_secs_f64());
    assert!(wait_refusal(&p, "tls_handshake_timeout", WAIT), "{}", p.parkd.stderr_tail(20));

    let mut phone = p.phone("after", None);
    let ok = phone.options(WAIT).unwrap_or_else(|| panic!("parkd no longer answers over TLS"));
    assert!(start_line(&ok).starts_with("SIP/2.0 200"), "{ok}");
}

/// SIGHUP reloads the certificate: a connection opened before keeps working, and new handshakes present the new
/// certificate (issued by a second CA: a client trusting only the first one now fails, one trusting the second
/// succeeds).
#[test]
fn sighup_reloads_the_certificate_without_touching_open_connections() {
    let mut p = start("tls_sighup", false, 600);
    let mut before = p.phone("before", None);
    assert!(before.options(WAIT).is_some_and(|m| start_line(&m).starts_with("SIP/2.0 200")));

    let second = TestPki::new(&p.pki.dir.join("second"), "parkd test CA 2");
    std::fs::copy(&second.cert_pem, &p.pki.cert_pem).expect("replace cert");
    std::fs::copy(&second.key_pem, &p.pki.key_pem).expect("replace key");
    assert!(p.parkd.signal_and_wait(libc::SIGHUP, Duration::from_millis(300)).is_none(), "SIGHUP must not stop parkd");
    let deadline = Instant::now() + WAIT;
    while !p.parkd.stderr_tail(50).contains("TLS certificate and key reloaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(p.parkd.stderr_tail(50).contains("TLS certificate and key reloaded"), "{}", p.parkd.stderr_tail(20));

    let old_trust = SipTls::connect(p.tls, p.pki.client_config(None));
    assert!(old_trust.is_err(), "a client trusting only the first CA still completed a handshake");
    let conn = SipTls::connect(p.tls, second.client_config(None)).unwrap_or_else(|e| panic!("handshake with the new certificate: {e}"));
    let mut after = TlsPhone::new(conn, "after", p.tls);
    assert!(after.options(WAIT).is_some_and(|m| start_line(&m).starts_with("SIP/2.0 200")));
    assert!(before.options(WAIT).is_some_and(|m| start_line(&m).starts_with("SIP/2.0 200")), "the connection opened before the reload still works");
    p.parkd.assert_alive();
}

fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
}

/// `--tls-self-signed`: a development certificate made at startup, announced by a WARN; it is served (a client
/// trusting only the test CA rejects it as unknown) and `--check-config` reads real certificate files.
#[test]
fn self_signed_development_mode_says_so_and_check_config_reads_the_files() {
    let tls = tls::free_tls_addr();
    let parkd = Parkd::start_with("tls_self_signed", ParkdOptions { extra_args: vec!["--tls-self-signed".into(), "--tls-listen".into(), tls.to_string()], ..Default::default() });
    let log = parkd.stderr_tail(200);
    assert!(log.contains("WARN") && log.contains("SELF-SIGNED") && log.contains("FOR DEVELOPMENT ONLY"), "{log}");
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), "other CA");
    let err = SipTls::connect(tls, pki.client_config(None)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("UnknownIssuer") || err.contains("invalid peer certificate"), "the self-signed certificate is served: {err:?}");

    let check = |args: &[String]| std::process::Command::new(sip_tests::harness::parkd::binary_path()).args(args).arg("--check-config").output().expect("run parkd");
    let good = check(&pki.parkd_args(tls, true));
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    std::fs::write(&pki.key_pem, "not a key").expect("write");
    let bad = check(&pki.parkd_args(tls, false));
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("tls_key"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// parkd's CPU time (user + system) in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12) // utime, stime (fields 14 and 15 of the whole line)
}

/// Figures, not assertions: parkd's CPU per TLS handshake (+ one OPTIONS) and memory per open TLS connection,
/// 60 handshakes in sequence and 30 connections held at once (within the per-source cap of 32).
#[test]
fn tls_handshake_cost_and_memory_figures() {
    // Sixty OPTIONS in a row are above the default out-of-dialog rate of one source.
    let limits = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n[limits]\nout_of_dialog_per_second = 1000.0\nout_of_dialog_burst = 1000\n";
    let p = start_with_config("tls_figures", false, 600, Some(limits));
    let config = p.pki.client_config(None);
    let n = 60;
    let (cpu0, t0) = (cpu_ticks(p.parkd.pid()), Instant::now());
    for i in 0..n {
        let conn = SipTls::connect(p.tls, config.clone()).unwrap_or_else(|e| panic!("handshake {i}: {e}"));
        let mut phone = TlsPhone::new(conn, "fig", p.tls);
        assert!(phone.options(WAIT).is_some_and(|m| start_line(&m).starts_with("SIP/2.0 200")), "OPTIONS {i}");
    }
    let (cpu, wall) = (cpu_ticks(p.parkd.pid()) - cpu0, t0.elapsed());
    eprintln!(
        "TLS: {n} handshakes + OPTIONS: parkd CPU {:.2} ms each (10 ms clock ticks; the build $PARKD_BIN names, debug by default), wall {:.1} ms each (client included)",
        cpu as f64 * 10.0 / n as f64,
        wall.as_secs_f64() * 1e3 / n as f64
    );
    let rss0 = p.parkd.rss_kib().unwrap_or(0);
    let held: Vec<TlsPhone> = (0..30)
        .map(|i| {
            let mut phone = TlsPhone::new(SipTls::connect(p.tls, config.clone()).unwrap_or_else(|e| panic!("connection {i}: {e}")), "held", p.tls);
            assert!(phone.options(WAIT).is_some(), "OPTIONS on held connection {i}");
            phone
        })
        .collect();
    let rss1 = p.parkd.rss_kib().unwrap_or(0);
    eprintln!("TLS: {} connections held: parkd RSS {rss0} -> {rss1} KiB ({:.1} KiB each)", held.len(), (rss1.saturating_sub(rss0)) as f64 / held.len() as f64);
}

/// Outbound verification is real: without `tls_ca` parkd trusts only the system's roots, so a recall to a
/// parker whose certificate comes from the test CA is not sent (the handshake fails at parkd, logged).
#[test]
fn outbound_tls_refuses_a_server_certificate_it_cannot_verify() {
    let p = start("tls_outbound_unverified", false, 2);
    let alice_srv = TlsServer::bind(p.pki.server_identity("alice"));
    let bob_rtp = RtpEndpoint::bind("bob");
    let mut bob = p.phone("bob", None);
    let referred_by = format!("Referred-By: <sip:alice@{};transport=tls>\r\n", alice_srv.addr());
    bob.invite("700", bob_rtp.port(), &referred_by, WAIT).unwrap_or_else(|e| panic!("park over TLS: {e}"));
    let got = alice_srv.accept(Duration::from_secs(15)).and_then(|mut c| c.read_message(Duration::from_secs(3)));
    assert!(got.is_none(), "parkd sent the recall over a connection it could not verify: {got:?}");
    let deadline = Instant::now() + WAIT;
    while !p.parkd.stderr_tail(200).contains("TLS connect failed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = p.parkd.stderr_tail(200);
    let line = log.lines().find(|l| l.contains("TLS connect failed")).unwrap_or_else(|| panic!("no failed TLS connect logged:\n{log}"));
    eprintln!("{line}");
}
