//! Live reload and tenants end to end (issue 21), against the real binary:
//!
//! * a reload during parked calls, by SIGHUP and by `POST /v1/reload`: the parked calls keep their hold music, a
//!   new lot parks at once, a removed lot refuses new parks (404) while its call stays, an invalid file is refused
//!   with the reason (HTTP 422, a log line on SIGHUP) and the running configuration stays, and a BLF subscription
//!   taken before the reload keeps getting NOTIFYs after it;
//! * two tenants (lots naming `domains`) parking into 701 at the same time: separate orbits, music and BLF.
//!
//! The phones here are a few lines of raw SIP over UDP (Request-URI and To hosts are the point of the tenant
//! test), parsed with parkd's own codec.

use parkd::sip::{parse_message, Message, Method, Request, Response};
use serde_json::Value;
use sip_tests::checks::expect_hold_music;
use sip_tests::harness::park_events::{park_events, wait_park_event};
use sip_tests::{Parkd, ParkdOptions, PayloadClass, RtpEndpoint};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const TOKEN: &str = "reload-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(10);

/// One phone: a UDP socket speaking raw SIP to parkd, with its RTP endpoint.
struct Phone {
    sock: UdpSocket,
    local: SocketAddr,
    server: SocketAddr,
    name: String,
    call_id: String,
    to_tag: Option<String>,
    /// The Request-URI (and To) of its INVITE or SUBSCRIBE.
    target: String,
    rtp: RtpEndpoint,
    /// Requests parkd sent it (NOTIFYs, BYE), answered 200 as they came.
    requests: Vec<Request>,
}

impl Phone {
    fn new(parkd: &Parkd, name: &str) -> Phone {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a phone");
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let local = sock.local_addr().unwrap();
        Phone { sock, local, server: parkd.sip_addr(), name: name.into(), call_id: format!("{name}-{}@reload-test", local.port()), to_tag: None, target: String::new(), rtp: RtpEndpoint::bind(name), requests: Vec::new() }
    }

    fn head(&self, method: &str, cseq: u32, branch: &str) -> String {
        let tt = self.to_tag.as_deref().map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} {t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{b}-{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{n}@{l}>;tag={n}-tag\r\nTo: <{t}>{tt}\r\nCall-ID: {c}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{n}@{l}>\r\n",
            t = self.target,
            l = self.local,
            n = self.name,
            c = self.call_id,
            b = self.local.port(),
        )
    }

    fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.server).expect("send to parkd");
    }

    /// Receives one message (answering parkd's requests with 200), or None after 100 ms.
    fn recv(&mut self) -> Option<Message> {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        let msg = parse_message(&buf[..n]).ok()?;
        if let Message::Request(r) = &msg {
            self.ok_to(r);
            self.requests.push(r.clone());
        }
        Some(msg)
    }

    fn ok_to(&self, req: &Request) {
        let mut text = String::from("SIP/2.0 200 OK\r\n");
        for v in &req.common.via {
            text.push_str(&format!("Via: {v}\r\n"));
        }
        text.push_str(&format!("From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContent-Length: 0\r\n\r\n", req.common.from, req.common.to, req.common.call_id, req.common.cseq.seq, req.common.cseq.method));
        self.send(&text);
    }

    /// The final response to the request with CSeq method `method`.
    fn final_response(&mut self, method: Method) -> Response {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(Message::Response(r)) = self.recv() {
                if r.status >= 200 && r.common.cseq.method == method {
                    return r;
                }
            }
        }
        panic!("{}: no final response to {method:?} within {WAIT:?}", self.name);
    }

    /// Sends an INVITE to `user@host` (a park when `parked_by` is set), without waiting.
    fn send_invite(&mut self, user: &str, host: &str, parked_by: Option<&str>) {
        self.target = format!("sip:{user}@{host}");
        let sdp = format!(
            "v=0\r\no={n} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {p} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
            n = self.name,
            p = self.rtp.port()
        );
        let rb = parked_by.map(|p| format!("Referred-By: <sip:{p}@127.0.0.1:5999>\r\n")).unwrap_or_default();
        let head = self.head("INVITE", 1, "inv");
        self.send(&format!("{head}{rb}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()));
    }

    /// Reads the INVITE's final response and ACKs it: (status, Park-Orbit, Park-Lot).
    fn invite_outcome(&mut self) -> (u16, String, String) {
        let r = self.final_response(Method::Invite);
        let branch = if r.status == 200 { "ack" } else { "inv" };
        if r.status == 200 {
            self.to_tag = r.common.to.tag().map(str::to_string);
        }
        let mut ack = self.head("ACK", 1, branch);
        ack.push_str("Content-Length: 0\r\n\r\n");
        self.send(&ack);
        (r.status, r.common.header("Park-Orbit").unwrap_or("").to_string(), r.common.header("Park-Lot").unwrap_or("").to_string())
    }

    fn invite(&mut self, user: &str, host: &str, parked_by: Option<&str>) -> (u16, String, String) {
        self.send_invite(user, host, parked_by);
        self.invite_outcome()
    }

    fn bye(&mut self) {
        let mut bye = self.head("BYE", 2, "bye");
        bye.push_str("Content-Length: 0\r\n\r\n");
        self.send(&bye);
        assert_eq!(self.final_response(Method::Bye).status, 200, "{}: BYE answered", self.name);
    }

    /// SUBSCRIBEs to `user@host` for the dialog package: 200 expected; the first NOTIFY's body.
    fn subscribe(&mut self, user: &str, host: &str) -> String {
        self.target = format!("sip:{user}@{host}");
        let mut sub = self.head("SUBSCRIBE", 1, "sub");
        sub.push_str("Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n");
        self.send(&sub);
        assert_eq!(self.final_response(Method::Subscribe).status, 200, "{}: SUBSCRIBE to {user}@{host}", self.name);
        self.next_notify(|_| true)
    }

    /// Waits for a NOTIFY whose body satisfies `pred` (earlier ones included); its body.
    fn next_notify(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((b, seq)) = self.requests.iter().find(|r| r.method == Method::Notify && pred(&body(r))).map(|r| (body(r), r.common.cseq.seq)) {
                self.requests.retain(|x| x.common.cseq.seq > seq || x.method != Method::Notify);
                return b;
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = self.requests.iter().map(body).collect();
                panic!("{}: no matching NOTIFY within {WAIT:?}; seen: {seen:#?}", self.name);
            }
            self.recv();
        }
    }

    /// Reads (and answers) whatever parkd sends for `d`.
    fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.recv();
        }
    }
}

fn body(r: &Request) -> String {
    String::from_utf8_lossy(&r.common.body).into_owned()
}

/// An HTTP call to parkd's API: (status, JSON body).
fn api(parkd: &Parkd, method: &str, path: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", parkd.http_addr.expect("http on"));
    let req = ureq::request(method, &url).timeout(WAIT).set("Authorization", &format!("Bearer {TOKEN}"));
    let res = if method == "POST" { req.set("Content-Type", "application/json").call() } else { req.call() };
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Waits until `ep` has received `n` more hold-music packets than `before` (the music goes on).
fn music_goes_on(ep: &RtpEndpoint, n: usize, what: &str) {
    let before = ep.packets().iter().filter(|p| p.class == PayloadClass::Other).count();
    let ok = ep.wait_for_class(PayloadClass::Other, before + n, WAIT);
    assert!(ok, "{what}: hold music goes on ({before} packets before, waited for {n} more)");
}

fn write_config(parkd: &Parkd, toml: &str) {
    std::fs::write(parkd.log_dir.join("parkd.toml"), toml).expect("rewrite the config file");
}

fn sighup(parkd: &Parkd) {
    // SAFETY: kill(2) on the pid of the child this test started.
    let rc = unsafe { libc::kill(parkd.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "SIGHUP sent");
}

/// The flags give the first lot 700 / 701-720 (ParkdOptions); the file's other lots change between reloads.
const LOTS_BEFORE: &str = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n\n[[lot]]\nname = \"support\"\npark_code = \"800\"\norbits = \"801-805\"\n";
const LOTS_AFTER_HUP: &str = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nannounce_orbit = false\n\n[[lot]]\nname = \"billing\"\npark_code = \"900\"\norbits = \"901-905\"\n";
const LOTS_INVALID: &str = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n\n[[lot]]\nname = \"billing\"\npark_code = \"705\"\norbits = \"901-905\"\n";
const LOTS_AFTER_API: &str = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nannounce_orbit = false\n\n[[lot]]\nname = \"billing\"\npark_code = \"900\"\norbits = \"901-905\"\n\n[[lot]]\nname = \"support\"\npark_code = \"800\"\norbits = \"801-805\"\n\n[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n";

#[test]
fn reload_by_sighup_and_by_the_api_during_parked_calls() {
    let options = ParkdOptions { http: true, extra_args: vec!["--http-token".into(), TOKEN.into()], config: Some(LOTS_BEFORE.into()), ..ParkdOptions::default() };
    let mut parkd = Parkd::start_with("reload_live", options);
    let host = parkd.sip_addr().to_string();
    let (mut bob, mut carol) = (Phone::new(&parkd, "bob"), Phone::new(&parkd, "carol"));
    assert_eq!(bob.invite("700", &host, Some("alice")).0, 200);
    assert_eq!(carol.invite("800", &host, Some("alice")), (200, "801".into(), "support".into()));
    expect_hold_music(&bob.rtp, 10);
    expect_hold_music(&carol.rtp, 10);
    let mut watcher = Phone::new(&parkd, "watcher");
    assert!(watcher.subscribe("701", &host).contains("confirmed"), "the watcher sees bob in 701");

    // SIGHUP: "support" removed (Carol stays), "billing" added, "default" changed.
    write_config(&parkd, LOTS_AFTER_HUP);
    let t0 = Instant::now();
    sighup(&parkd);
    let ev = wait_park_event(&parkd, "config_reloaded", WAIT, |_| true);
    eprintln!("figures: SIGHUP to config_reloaded event seen by the test: {:?}", t0.elapsed());
    assert_eq!(ev["lots_added"], serde_json::json!(["billing"]), "{ev}");
    assert_eq!(ev["lots_changed"], serde_json::json!(["default"]), "{ev}");
    assert_eq!(ev["lots_removed"], serde_json::json!(["support"]), "{ev}");
    music_goes_on(&bob.rtp, 25, "bob after SIGHUP");
    music_goes_on(&carol.rtp, 25, "carol (in the removed lot) after SIGHUP");
    // The new lot parks at once; the removed one refuses new parks.
    let mut dave = Phone::new(&parkd, "dave");
    assert_eq!(dave.invite("900", &host, Some("alice")), (200, "901".into(), "billing".into()));
    expect_hold_music(&dave.rtp, 10);
    let mut erin = Phone::new(&parkd, "erin");
    assert_eq!(erin.invite("800", &host, Some("alice")).0, 404, "a removed lot takes no new park");
    let (_, lots) = api(&parkd, "GET", "/v1/lots");
    let support = lots.as_array().unwrap().iter().find(|l| l["name"] == "support").cloned().unwrap_or_default();
    assert_eq!(support["removed"], true, "{lots}");
    assert!(support["orbits"].as_array().unwrap().iter().any(|o| o["orbit"] == "801" && o["state"] == "parked"), "{support}");

    // The subscription taken before the reload still gets NOTIFYs: Bob leaves 701.
    bob.bye();
    let n = watcher.next_notify(|b| !b.contains("confirmed"));
    assert!(n.contains("701"), "701 shown free after the reload: {n}");

    // An invalid file: refused with the reason, by the API (422) and on SIGHUP (log); nothing changes.
    write_config(&parkd, LOTS_INVALID);
    let (status, v) = api(&parkd, "POST", "/v1/reload");
    assert_eq!(status, 422, "{v}");
    assert!(v["cause"].as_str().unwrap_or("").contains("used twice"), "{v}");
    sighup(&parkd);
    let deadline = Instant::now() + WAIT;
    while !parkd.stderr_all().contains("SIGHUP: configuration not reloaded") {
        assert!(Instant::now() < deadline, "SIGHUP with a bad file is logged: {}", parkd.stderr_tail(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut fred = Phone::new(&parkd, "fred");
    assert_eq!(fred.invite("705", &host, Some("alice")), (200, "705".into(), "default".into()), "705 is still an orbit of default");
    parkd.assert_alive();

    // The API: "support" comes back, and a changed RTP range is reported as needing a restart.
    write_config(&parkd, LOTS_AFTER_API);
    let (status, v) = api(&parkd, "POST", "/v1/reload");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["lots_added"], serde_json::json!(["support"]), "{v}");
    assert_eq!(v["needs_restart"], serde_json::json!(["server.trusted_proxies"]), "{v}");
    let mut gina = Phone::new(&parkd, "gina");
    assert_eq!(gina.invite("800", &host, Some("alice")), (200, "802".into(), "support".into()), "801 still holds carol");
    expect_hold_music(&gina.rtp, 10);
    music_goes_on(&carol.rtp, 25, "carol after the API reload");
    assert_eq!(park_events(&parkd).iter().filter(|e| e["event"] == "config_reloaded").count(), 2, "two reloads applied, the invalid ones not");
    for p in [&mut watcher, &mut carol, &mut dave, &mut fred, &mut gina] {
        p.pump(Duration::from_millis(10));
    }
}

#[test]
fn two_tenants_park_into_701_at_the_same_time_with_separate_orbits_and_blf() {
    let config = "[[lot]]\nname = \"a\"\npark_code = \"700\"\norbits = \"701-720\"\ndomains = [\"a.example\"]\n\n[[lot]]\nname = \"b\"\npark_code = \"700\"\norbits = \"701-705\"\ndomains = [\"b.example\"]\n";
    let options = ParkdOptions { http: true, extra_args: vec!["--http-token".into(), TOKEN.into()], config: Some(config.into()), ..ParkdOptions::default() };
    let parkd = Parkd::start_with("tenants", options);
    let (mut wa, mut wb) = (Phone::new(&parkd, "watch-a"), Phone::new(&parkd, "watch-b"));
    wa.subscribe("701", "a.example");
    wb.subscribe("701", "b.example");
    let (mut bob, mut carol) = (Phone::new(&parkd, "bob"), Phone::new(&parkd, "carol"));
    // Both park at the same time, one per tenant.
    bob.send_invite("700", "a.example", Some("alice"));
    carol.send_invite("700", "b.example", Some("anna"));
    assert_eq!(bob.invite_outcome(), (200, "701".into(), "a".into()));
    assert_eq!(carol.invite_outcome(), (200, "701".into(), "b".into()));
    expect_hold_music(&bob.rtp, 10);
    expect_hold_music(&carol.rtp, 10);
    let na = wa.next_notify(|b| b.contains("confirmed"));
    let nb = wb.next_notify(|b| b.contains("confirmed"));
    assert!(na.contains("bob") && !na.contains("carol"), "a's watcher sees only a's 701: {na}");
    assert!(nb.contains("carol") && !nb.contains("bob"), "b's watcher sees only b's 701: {nb}");
    // A domain no lot serves: 404.
    let mut erin = Phone::new(&parkd, "erin");
    assert_eq!(erin.invite("700", "c.example", Some("alice")).0, 404);
    // The API lists each tenant's lot with its domain and its own 701; the events carry lot and domain.
    let (_, lots) = api(&parkd, "GET", "/v1/lots");
    let lot = |name: &str| lots.as_array().unwrap().iter().find(|l| l["name"] == name).cloned().unwrap();
    assert_eq!(lot("a")["domains"], serde_json::json!(["a.example"]));
    assert_eq!(lot("b")["orbits"][0]["call_id"], Value::String(carol.call_id.clone()));
    assert_eq!(lot("a")["orbits"][0]["call_id"], Value::String(bob.call_id.clone()));
    wait_park_event(&parkd, "parked", WAIT, |e| e["lot"] == "b" && e["domain"] == "b.example");
    // Retrieving 701 at b's domain takes carol, not bob.
    let mut dave = Phone::new(&parkd, "dave");
    assert_eq!(dave.invite("701", "b.example", None).0, 200);
    let (_, lots) = api(&parkd, "GET", "/v1/lots");
    let occupied: Vec<(String, u64)> = lots.as_array().unwrap().iter().map(|l| (l["name"].as_str().unwrap().to_string(), l["occupied"].as_u64().unwrap())).collect();
    assert_eq!(occupied, vec![("a".to_string(), 1), ("b".to_string(), 0)], "b's 701 retrieved, a's still parked");
    for p in [&mut wa, &mut wb, &mut bob, &mut carol, &mut dave] {
        p.pump(Duration::from_millis(10));
    }
}
