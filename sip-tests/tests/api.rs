//! The HTTP API against the real binary: orbits as JSON, SSE events, unpark to a SIPp UAS with two-way audio,
//! parking a bridged call (directed and indirect), hang-up, auth failures, `/metrics`.

use serde_json::{json, Value};
use sip_tests::checks::{expect_hold_music, expect_peer_audio, MEDIA_WAIT};
use sip_tests::{Parkd, ParkdOptions, PayloadClass, RtpEndpoint, Sipp};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-test-token";
const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;

fn start(name: &str) -> Parkd {
    Parkd::start_with(name, ParkdOptions { http: true, extra_args: vec!["--http-token".into(), TOKEN.into()], ..Default::default() })
}

fn base(parkd: &Parkd) -> String {
    format!("http://{}", parkd.http_addr.expect("parkd started with http"))
}

/// An HTTP call: (status, JSON body or Null).
fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn get_text(url: &str) -> String {
    ureq::get(url).timeout(Duration::from_secs(10)).call().unwrap_or_else(|e| panic!("GET {url}: {e}")).into_string().unwrap_or_default()
}

fn orbit(parkd: &Parkd, n: &str) -> Value {
    let (status, orbits) = call("GET", &format!("{}/v1/lots/default/orbits", base(parkd)), None, None);
    assert_eq!(status, 200);
    orbits.as_array().and_then(|a| a.iter().find(|o| o["orbit"] == n).cloned()).unwrap_or_else(|| panic!("no orbit {n} in {orbits}"))
}

/// The value of a metric line `name value` in the Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// Reads `GET /v1/events` (SSE) on a thread and keeps everything received.
struct SseTap {
    text: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl SseTap {
    fn connect(addr: SocketAddr, last_event_id: Option<u64>) -> SseTap {
        let text = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut s = TcpStream::connect(addr).expect("connect to the HTTP API");
        let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        write!(s, "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n").expect("send");
        s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let (t, st) = (text.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => t.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        });
        let tap = SseTap { text, stop };
        assert!(tap.wait_for("text/event-stream", Duration::from_secs(5)), "SSE response: {}", tap.text());
        tap
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for SseTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Bob is parked by SIP; the API shows him in 701 and the SSE stream says `parked`; an application unparks
/// 701 to Carol (a SIPp UAS): parkd calls her, bridges on answer (audio both ways), the stream says
/// `recall_answered` with target `api_unpark`; Carol hangs up and parkd BYEs Bob. /metrics reflects it all.
#[test]
fn park_by_sip_shows_in_api_and_sse_then_unpark_to_uas_bridges_audio() {
    let parkd = start("api_unpark");
    let sse = SseTap::connect(parkd.http_addr.unwrap(), None);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(Duration::from_secs(90)).spawn(&parkd);
    let bob_port = bob_run.local_port;
    expect_hold_music(&bob, 20);

    let o = orbit(&parkd, "701");
    assert_eq!(o["state"], "parked", "{o}");
    assert!(o["parked"].as_str().unwrap_or("").contains(&format!("sip:bob@127.0.0.1:{bob_port}")), "{o}");
    assert!(o["parker"].as_str().unwrap_or("").contains("alice"), "{o}");
    assert!(o["parked_since_ms"].as_u64().is_some() && o["recall_at_ms"].as_u64().is_some(), "{o}");
    assert!(sse.wait_for("event: parked", Duration::from_secs(2)), "SSE: {}", sse.text());
    assert!(sse.text().contains("\"orbit\":\"701\"") && sse.text().contains("id: 1"), "SSE: {}", sse.text());

    let carol = RtpEndpoint::bind("carol (unpark destination)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("unpark_uas").rtp_port(carol.port()).hold_ms(3000).timeout(Duration::from_secs(60)).spawn(&parkd);
    std::thread::sleep(Duration::from_millis(500));
    let to = format!("sip:carol@127.0.0.1:{}", carol_run.local_port);
    let (status, body) = call("POST", &format!("{}/v1/orbits/701/unpark", base(&parkd)), Some(TOKEN), Some(json!({ "to": to })));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["result"], "unparking");
    assert_eq!(body["ring_secs"], 30);

    expect_peer_audio(&carol, BOB, 50);
    expect_peer_audio(&bob, CAROL, 50);
    assert!(sse.wait_for("event: recall_answered", MEDIA_WAIT), "SSE: {}", sse.text());
    assert!(sse.text().contains("\"target\":\"api_unpark\""));
    assert_eq!(orbit(&parkd, "701")["state"], "free");
    let (_, calls) = call("GET", &format!("{}/v1/calls", base(&parkd)), None, None);
    assert_eq!(calls.as_array().map(Vec::len), Some(1), "one bridged call: {calls}");

    let carol_out = carol_run.wait();
    carol_out.assert_passed(&parkd, "carol answers the unpark and hangs up");
    let invite = carol_out.received().into_iter().find(|m| m.starts_with("INVITE")).expect("carol got an INVITE");
    let pai = invite.lines().find(|l| l.starts_with("P-Asserted-Identity:")).unwrap_or_default();
    assert!(pai.contains(&format!("<sip:bob@127.0.0.1:{bob_port}>")), "carol sees the parked party: {invite}");
    bob_run.wait().assert_passed(&parkd, "bob is hung up after carol's BYE");

    let text = get_text(&format!("{}/metrics", base(&parkd)));
    let m = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"));
    assert_eq!(m("parkd_parks_total{outcome=\"indirect\"}"), 1.0);
    assert_eq!(m("parkd_retrieves_total{outcome=\"api_unpark\"}"), 1.0);
    assert_eq!(m("parkd_recalls_total{target=\"api_unpark\",outcome=\"answered\"}"), 1.0);
    assert_eq!(m("parkd_dwell_seconds_count"), 1.0);
    assert_eq!(m("parkd_orbits_occupied{lot=\"default\"}"), 0.0);
    assert!(m("parkd_sip_messages_total{direction=\"in\",kind=\"request\",method=\"INVITE\",class=\"\"}") >= 1.0);
    assert!(m("parkd_sip_messages_total{direction=\"out\",kind=\"request\",method=\"INVITE\",class=\"\"}") >= 1.0);
    assert!(m("parkd_sip_messages_total{direction=\"out\",kind=\"response\",method=\"INVITE\",class=\"2xx\"}") >= 1.0);
    assert!(m("parkd_rtp_hold_packets_sent_total") >= 20.0, "{text}");
    assert_eq!(m("parkd_rtp_send_errors_total"), 0.0);
}

/// Mutating calls need the bearer token: none → 401, wrong → 403; errors are JSON with a cause; reads,
/// /healthz and /readyz are open. DELETE ends a parked call politely; a new SSE client with Last-Event-ID
/// gets the kept events replayed.
#[test]
fn auth_failures_json_errors_hangup_and_event_resume() {
    let parkd = start("api_auth");
    let b = base(&parkd);
    assert_eq!(get_text(&format!("{b}/healthz")).trim(), "ok");
    assert_eq!(get_text(&format!("{b}/readyz")).trim(), "ready");

    let (s, e) = call("DELETE", &format!("{b}/v1/orbits/701"), None, None);
    assert_eq!(s, 401, "{e}");
    assert_eq!(e["error"], "unauthorized");
    assert!(e["cause"].as_str().unwrap_or("").contains("Bearer"), "{e}");
    let (s, e) = call("POST", &format!("{b}/v1/orbits/701/unpark"), Some("wrong"), Some(json!({"to": "sip:x@127.0.0.1"})));
    assert_eq!((s, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    let (s, e) = call("DELETE", &format!("{b}/v1/orbits/701"), Some(TOKEN), None);
    assert_eq!((s, e["error"].as_str()), (404, Some("not_found")), "{e}");
    assert!(e["cause"].as_str().unwrap_or("").contains("701"));
    let (s, _) = call("DELETE", &format!("{b}/v1/orbits/999"), Some(TOKEN), None);
    assert_eq!(s, 404);
    let (s, _) = call("GET", &format!("{b}/v1/lots/nope/orbits"), None, None);
    assert_eq!(s, 404);
    let (s, e) = call("POST", &format!("{b}/v1/calls/none/park"), Some(TOKEN), Some(json!({"orbit": 5})));
    assert_eq!(s, 400, "{e}");

    let bob = RtpEndpoint::bind("bob");
    let bob_run = Sipp::new("parked_waits_for_bye").service("705").rtp_port(bob.port()).timeout(Duration::from_secs(60)).spawn(&parkd);
    expect_hold_music(&bob, 10);
    let (s, e) = call("POST", &format!("{b}/v1/orbits/705/unpark"), Some(TOKEN), Some(json!({"to": "not a uri"})));
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (s, e) = call("DELETE", &format!("{b}/v1/orbits/705"), Some(TOKEN), None);
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["result"], "hung_up");
    let out = bob_run.wait();
    out.assert_passed(&parkd, "bob gets parkd's BYE");
    let bye = out.received().into_iter().find(|m| m.starts_with("BYE")).expect("BYE");
    assert!(bye.contains("Reason: SIP;cause=200"), "BYE carries a Reason (RFC 3326): {bye}");
    assert_eq!(orbit(&parkd, "705")["state"], "free");

    let sse = SseTap::connect(parkd.http_addr.unwrap(), Some(0));
    assert!(sse.wait_for("event: hung_up", Duration::from_secs(3)), "replayed: {}", sse.text());
    let t = sse.text();
    assert!(t.contains("id: 1\n") && t.contains("event: parked") && t.contains("id: 2\n"), "{t}");
    let sse2 = SseTap::connect(parkd.http_addr.unwrap(), Some(1));
    assert!(sse2.wait_for("event: hung_up", Duration::from_secs(3)));
    assert!(!sse2.text().contains("event: parked"), "resume starts after Last-Event-ID");
}

/// Bob parked, Carol retrieves; the application parks the call again directed to 705 naming Carol's leg:
/// Carol is released with BYE, Bob hears music again. Dave retrieves 705; an indirect park (`{}`) of
/// Dave's leg puts Bob in 701. DELETE ends Bob's call.
#[test]
fn park_a_bridged_call_directed_and_indirect() {
    let parkd = start("api_park_call");
    let b = base(&parkd);
    let bob = RtpEndpoint::bind("bob");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(Duration::from_secs(90)).spawn(&parkd);
    expect_hold_music(&bob, 10);
    let carol = RtpEndpoint::bind("carol");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_waits_for_bye").service("701").rtp_port(carol.port()).timeout(Duration::from_secs(60)).spawn(&parkd);
    expect_peer_audio(&carol, BOB, 20);

    let (_, calls) = call("GET", &format!("{b}/v1/calls"), None, None);
    let carol_call = calls[0]["other_call_id"].as_str().unwrap_or_else(|| panic!("{calls}")).to_string();
    let (s, _) = call("POST", &format!("{b}/v1/calls/nope/park"), Some(TOKEN), Some(json!({})));
    assert_eq!(s, 404);
    let (s, e) = call("POST", &format!("{b}/v1/calls/{carol_call}/park"), Some(TOKEN), Some(json!({"orbit": "799"})));
    assert_eq!(s, 404, "{e}");
    let (s, body) = call("POST", &format!("{b}/v1/calls/{carol_call}/park"), Some(TOKEN), Some(json!({"orbit": "705"})));
    assert_eq!(s, 200, "{body}");
    assert_eq!((body["orbit"].as_str(), body["how"].as_str()), (Some("705"), Some("directed")));
    carol_run.wait().assert_passed(&parkd, "carol's leg is released with BYE");
    let music_before = bob.report(PayloadClass::Other).count;
    assert!(
        bob.wait_until(MEDIA_WAIT, |p| p.iter().filter(|p| p.class == PayloadClass::Other).count() >= music_before + 25),
        "bob hears hold music again"
    );
    let o = orbit(&parkd, "705");
    assert_eq!(o["state"], "parked", "{o}");
    assert!(o["parker"].as_str().unwrap_or("").contains("carol"), "the releasing party is the parker: {o}");

    let dave = RtpEndpoint::bind("dave");
    let dave_run = Sipp::new("retrieve_waits_for_bye").service("705").rtp_port(dave.port()).timeout(Duration::from_secs(60)).spawn(&parkd);
    expect_peer_audio(&dave, BOB, 10);
    let (_, calls) = call("GET", &format!("{b}/v1/calls"), None, None);
    let dave_call = calls[0]["other_call_id"].as_str().unwrap_or_else(|| panic!("{calls}")).to_string();
    // Indirect: parkd picks the lowest free orbit (701, freed when Carol took the call).
    let (s, body) = call("POST", &format!("{b}/v1/calls/{dave_call}/park"), Some(TOKEN), None);
    assert_eq!(s, 200, "{body}");
    assert_eq!((body["orbit"].as_str(), body["how"].as_str()), (Some("701"), Some("indirect")));
    dave_run.wait().assert_passed(&parkd, "dave's leg is released with BYE");
    assert_eq!(orbit(&parkd, "701")["state"], "parked");

    let (s, _) = call("DELETE", &format!("{b}/v1/orbits/701"), Some(TOKEN), None);
    assert_eq!(s, 200);
    bob_run.wait().assert_passed(&parkd, "bob is hung up");
    let text = get_text(&format!("{b}/metrics"));
    assert_eq!(metric(&text, "parkd_parks_total{outcome=\"directed\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "parkd_parks_total{outcome=\"indirect\"}"), Some(2.0), "{text}");
    assert_eq!(metric(&text, "parkd_retrieves_total{outcome=\"dialed\"}"), Some(2.0), "{text}");
}
