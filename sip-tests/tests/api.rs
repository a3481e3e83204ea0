//! The HTTP API against the real binary: orbits as JSON, SSE events, unpark to a SIPp UAS with two-way audio,
//! parking a bridged call (directed and indirect), hang-up, `/metrics`, and the security model of issue 15: the
//! generated token in the state directory, 401 / 403 / 413 / 415 / 421 / 429, the dial allow-list.

use serde_json::{json, Value};
use sip_tests::checks::{expect_hold_music, expect_peer_audio, MEDIA_WAIT};
use sip_tests::harness::sse::SseTap;
use sip_tests::{Parkd, ParkdOptions, PayloadClass, RtpEndpoint, Sipp};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-test-token";
const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;

/// parkd with the HTTP API, the token [`TOKEN`] and `dial_allow` letting unparks ring carol on 127.0.0.1.
fn start(name: &str) -> Parkd {
    Parkd::start_with(
        name,
        ParkdOptions {
            http: true,
            extra_args: vec!["--http-token".into(), TOKEN.into()],
            config: Some("[http]\ndial_allow = [\"carol@127.0.0.1\"]\n".into()),
            ..Default::default()
        },
    )
}

fn base(parkd: &Parkd) -> String {
    format!("http://{}", parkd.http_addr.expect("parkd started with http"))
}

/// An HTTP call: (status, JSON body or Null). A POST always says `Content-Type: application/json`.
fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None if method == "POST" => req.set("Content-Type", "application/json").call(),
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
    orbit_with(parkd, n, TOKEN)
}

fn orbit_with(parkd: &Parkd, n: &str, token: &str) -> Value {
    let (status, orbits) = call("GET", &format!("{}/v1/lots/default/orbits", base(parkd)), Some(token), None);
    assert_eq!(status, 200);
    orbits.as_array().and_then(|a| a.iter().find(|o| o["orbit"] == n).cloned()).unwrap_or_else(|| panic!("no orbit {n} in {orbits}"))
}

/// The value of a metric line `name value` in the Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}


/// Bob is parked by SIP; the API shows him in 701 and the SSE stream says `parked`; an application unparks
/// 701 to Carol (a SIPp UAS): parkd calls her, bridges on answer (audio both ways), the stream says
/// `recall_answered` with target `api_unpark`; Carol hangs up and parkd BYEs Bob. /metrics reflects it all.
#[test]
fn park_by_sip_shows_in_api_and_sse_then_unpark_to_uas_bridges_audio() {
    let parkd = start("api_unpark");
    let sse = SseTap::connect(parkd.http_addr.unwrap(), TOKEN, None);
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
    let (_, calls) = call("GET", &format!("{}/v1/calls", base(&parkd)), Some(TOKEN), None);
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
    assert!(m("parkd_sip_retransmissions_total{kind=\"response\"}") >= 0.0, "{text}");
    assert!(m("parkd_pacer_lateness_seconds_count") >= 1.0, "hold music was paced: {text}");
}

/// Every `/v1` call needs the bearer token: none or wrong → 401; errors are JSON with a cause; /healthz and
/// /readyz are open. DELETE ends a parked call politely; a new SSE client with Last-Event-ID gets the kept events
/// replayed.
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
    assert_eq!((s, e["error"].as_str(), e["cause"].as_str()), (401, Some("unauthorized"), Some("wrong bearer token")), "{e}");
    let (s, e) = call("GET", &format!("{b}/v1/lots"), None, None);
    assert_eq!((s, e["error"].as_str()), (401, Some("unauthorized")), "reads need the token too: {e}");
    let (s, e) = call("DELETE", &format!("{b}/v1/orbits/701"), Some(TOKEN), None);
    assert_eq!((s, e["error"].as_str()), (404, Some("not_found")), "{e}");
    assert!(e["cause"].as_str().unwrap_or("").contains("701"));
    let (s, _) = call("DELETE", &format!("{b}/v1/orbits/999"), Some(TOKEN), None);
    assert_eq!(s, 404);
    let (s, _) = call("GET", &format!("{b}/v1/lots/nope/orbits"), Some(TOKEN), None);
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

    let sse = SseTap::connect(parkd.http_addr.unwrap(), TOKEN, Some(0));
    assert!(sse.wait_for("event: hung_up", Duration::from_secs(3)), "replayed: {}", sse.text());
    let t = sse.text();
    assert!(t.contains("id: 1\n") && t.contains("event: parked") && t.contains("id: 2\n"), "{t}");
    let sse2 = SseTap::connect(parkd.http_addr.unwrap(), TOKEN, Some(1));
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

    let (_, calls) = call("GET", &format!("{b}/v1/calls"), Some(TOKEN), None);
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
    let (_, calls) = call("GET", &format!("{b}/v1/calls"), Some(TOKEN), None);
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
    // The Parked event of an API park (and so its count) comes once its journal group is durable, which a loaded
    // machine's disk can delay past the HTTP answer: wait for it a little.
    let mut text = get_text(&format!("{b}/metrics"));
    for _ in 0..50 {
        if metric(&text, "parkd_parks_total{outcome=\"indirect\"}") == Some(2.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        text = get_text(&format!("{b}/metrics"));
    }
    assert_eq!(metric(&text, "parkd_parks_total{outcome=\"directed\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "parkd_parks_total{outcome=\"indirect\"}"), Some(2.0), "{text}");
    assert_eq!(metric(&text, "parkd_retrieves_total{outcome=\"dialed\"}"), Some(2.0), "{text}");
}

/// A raw HTTP/1.1 exchange (any Host, any headers), optionally from another loopback source address:
/// (status, head, body). The connection is closed after one answer.
fn raw(addr: SocketAddr, from: Option<IpAddr>, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = match from {
        None => TcpStream::connect(addr).expect("connect"),
        Some(ip) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
            let stream = rt.block_on(async {
                let sock = tokio::net::TcpSocket::new_v4().expect("socket");
                sock.bind(SocketAddr::new(ip, 0)).expect("bind the source address");
                sock.connect(addr).await.expect("connect")
            });
            let std = stream.into_std().expect("std stream");
            std.set_nonblocking(false).expect("blocking");
            std
        }
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(req.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, head.to_string(), body.to_string())
}

/// The JSON `error` of a raw answer (panics when the body is not JSON with an `error` and a `cause`).
fn json_error(status: u16, head: &str, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{status} without a JSON body ({e}): {head}\n{body}"));
    assert!(v["cause"].as_str().is_some_and(|c| !c.is_empty()), "a cause: {v}");
    assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "no CORS grant: {head}");
    v["error"].as_str().unwrap_or_else(|| panic!("no error in {v}")).to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// The default configuration (no token anywhere): parkd generates one at first start, keeps it in its state
/// directory (0700, token file 0600), writes the page link beside it, logs the paths but never the token, and
/// reuses it after a restart. Every `/v1` call — reads and the event stream included — needs it; `/`, `/healthz`,
/// `/readyz` and `/metrics` stay open. The issue's cross-site unpark gets 421 / 401 / 415, never 202.
#[test]
fn default_config_generates_a_token_in_the_state_dir_and_every_v1_call_needs_it() {
    let state = sip_tests::paths::fresh_log_dir("api_default_token").join("parkd-state");
    let options = ParkdOptions { http: true, state_dir: Some(state.clone()), ..Default::default() };
    let parkd = Parkd::start_with("api_default_token", options.clone());
    let addr = parkd.http_addr.expect("http");
    let b = base(&parkd);
    let token = parkd.http_token();
    assert!(token.len() >= 32 && token.bytes().all(|c| c.is_ascii_hexdigit()), "a random hex token: {token:?}");
    assert_eq!(mode(&state), 0o700, "state dir");
    assert_eq!(mode(&state.join("http-token")), 0o600, "token file");
    let link = std::fs::read_to_string(state.join("attendant-link")).expect("attendant-link");
    assert_eq!(link.trim(), format!("http://{addr}/#token={token}"));
    assert_eq!(mode(&state.join("attendant-link")), 0o600, "link file");
    let log = parkd.stderr_tail(400);
    assert!(log.contains(&state.join("http-token").display().to_string()), "the token file's path is logged:\n{log}");
    assert!(log.contains(&state.join("attendant-link").display().to_string()), "the link file's path is logged:\n{log}");
    assert!(!log.contains(&token), "the token itself is never logged");

    for path in ["/v1/lots", "/v1/lots/default/orbits", "/v1/calls", "/v1/events"] {
        let (s, head, body) = raw(addr, None, "GET", path, &[], "");
        assert_eq!((s, json_error(s, &head, &body).as_str()), (401, "unauthorized"), "{path}: {head}");
        assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    }
    let (s, _, _) = raw(addr, None, "DELETE", "/v1/orbits/701", &[], "");
    assert_eq!(s, 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(raw(addr, None, "GET", open, &[], "").0, 200, "{open} stays open (open_metrics = true)");
    }
    let (s, _, page) = raw(addr, None, "GET", "/", &[], "");
    assert!(s == 200 && page.contains("parkd attendant"), "the page itself is served without a token");
    let (s, lots) = call("GET", &format!("{b}/v1/lots"), Some(&token), None);
    assert_eq!(s, 200, "{lots}");
    assert_eq!(lots[0]["name"], "default");

    // The issue's attack: text/plain, a foreign Origin, no Authorization; with a rebinding Host, then without.
    let attack = [("Content-Type", "text/plain"), ("Origin", "http://attacker.example")];
    let to = r#"{"to":"sip:19005550100@127.0.0.3"}"#;
    let rebound = [attack[0], attack[1], ("Host", "rebind.attacker.example:8080")];
    let (s, head, body) = raw(addr, None, "POST", "/v1/orbits/701/unpark", &rebound, to);
    assert_eq!((s, json_error(s, &head, &body).as_str()), (421, "misdirected_request"), "{head}");
    let (s, head, body) = raw(addr, None, "POST", "/v1/orbits/701/unpark", &attack, to);
    assert_eq!((s, json_error(s, &head, &body).as_str()), (401, "unauthorized"));
    let auth = format!("Bearer {token}");
    let (s, head, body) = raw(addr, None, "POST", "/v1/orbits/701/unpark", &[attack[0], attack[1], ("Authorization", &auth)], to);
    assert_eq!((s, json_error(s, &head, &body).as_str()), (415, "unsupported_media_type"), "even with the token");
    let log = parkd.stderr_tail(400);
    assert!(log.contains("refused http source=127.0.0.1 reason=forbidden_host"), "one fail2ban-able line per refusal:\n{log}");
    assert!(log.contains("refused http source=127.0.0.1 reason=unsupported_media_type"));
    let text = get_text(&format!("{b}/metrics"));
    assert_eq!(metric(&text, "parkd_http_refusals_total{reason=\"forbidden_host\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "parkd_http_refusals_total{reason=\"unauthorized\"}"), Some(6.0), "{text}");
    assert_eq!(metric(&text, "parkd_http_refusals_total{reason=\"unsupported_media_type\"}"), Some(1.0), "{text}");

    // A restart on the same state directory keeps the token.
    drop(parkd);
    let again = Parkd::start_with("api_default_token_restart", options);
    assert_eq!(again.http_token(), token, "the token file is reused");
    assert_eq!(mode(&state.join("http-token")), 0o600);
    let (s, _) = call("GET", &format!("{}/v1/lots", base(&again)), Some(&token), None);
    assert_eq!(s, 200, "the old link keeps working");
    assert!(!again.stderr_tail(400).contains(&token), "not logged after a restart either");
}

/// The guards with a configured `[http]`: 415 for a mutation that is not JSON, 421 for a foreign Host (a name
/// in `hosts` and localhost pass), 413 above `max_body_bytes`, `open_metrics = false` closing /metrics, and the
/// per-source failed-authentication limit (429 with Retry-After; another source is not affected).
#[test]
fn guards_answer_415_421_413_and_429_with_json() {
    let config = "[http]\nhosts = [\"parkd.test\"]\nopen_metrics = false\nmax_body_bytes = 1024\nauth_failures_per_minute = 5\n";
    let parkd = Parkd::start_with(
        "api_guards",
        ParkdOptions { http: true, config: Some(config.into()), extra_args: vec!["--http-token".into(), TOKEN.into()], ..Default::default() },
    );
    let addr = parkd.http_addr.expect("http");
    let auth = format!("Bearer {TOKEN}");
    let a = ("Authorization", auth.as_str());
    let json = ("Content-Type", "application/json");

    let (s, head, body) = raw(addr, None, "POST", "/v1/orbits/701/unpark", &[a, ("Content-Type", "text/plain")], r#"{"to":"sip:x@127.0.0.1"}"#);
    assert_eq!((s, json_error(s, &head, &body).as_str()), (415, "unsupported_media_type"));
    let (s, head, body) = raw(addr, None, "POST", "/v1/calls/none/park", &[a], "");
    assert_eq!((s, json_error(s, &head, &body).as_str()), (415, "unsupported_media_type"), "a POST without body needs it too");
    let (s, head, body) = raw(addr, None, "POST", "/v1/calls/none/park", &[a, ("Content-Type", "application/json; charset=utf-8")], "");
    assert_eq!((s, json_error(s, &head, &body).as_str()), (404, "not_found"), "JSON with parameters passes");
    let (s, head, body) = raw(addr, None, "DELETE", "/v1/orbits/701", &[a], "");
    assert_eq!((s, json_error(s, &head, &body).as_str()), (404, "not_found"), "a DELETE without body needs no Content-Type");

    for host in ["rebind.attacker.example", "127.0.0.2", "parkd.test.attacker.example"] {
        let (s, head, body) = raw(addr, None, "GET", "/v1/lots", &[a, ("Host", host)], "");
        assert_eq!((s, json_error(s, &head, &body).as_str()), (421, "misdirected_request"), "{host}");
    }
    let (s, head, _) = raw(addr, None, "GET", "/", &[("Host", "rebind.attacker.example")], "");
    assert_eq!(s, 421, "the page too: {head}");
    let localhost = format!("localhost:{}", addr.port());
    for host in ["parkd.test", "PARKD.test:443", localhost.as_str()] {
        assert_eq!(raw(addr, None, "GET", "/v1/lots", &[a, ("Host", host)], "").0, 200, "{host}");
    }

    let big = format!(r#"{{"to":"sip:{}@127.0.0.1"}}"#, "1".repeat(2000));
    let (s, head, body) = raw(addr, None, "POST", "/v1/orbits/701/unpark", &[a, json], &big);
    assert_eq!((s, json_error(s, &head, &body).as_str()), (413, "too_large"));

    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(raw(addr, None, "GET", path, &[], "").0, 401, "{path} with open_metrics = false");
    }
    assert_eq!(raw(addr, None, "GET", "/healthz", &[a], "").0, 200);

    for i in 0..5 {
        let (s, head, body) = raw(addr, None, "GET", "/v1/lots", &[("Authorization", "Bearer guess")], "");
        assert_eq!((s, json_error(s, &head, &body).as_str()), (401, "unauthorized"), "guess {i}");
    }
    let (s, head, body) = raw(addr, None, "GET", "/v1/lots", &[("Authorization", "Bearer guess")], "");
    assert_eq!((s, json_error(s, &head, &body).as_str()), (429, "rate_limited"), "{head}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in {head}"));
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(raw(addr, None, "GET", "/v1/lots", &[a], "").0, 429, "the source waits, right token or not");
    assert_eq!(raw(addr, None, "GET", "/", &[], "").0, 200, "what needs no token stays available");
    let other = Some(IpAddr::from([127, 0, 0, 2]));
    assert_eq!(raw(addr, other, "GET", "/v1/lots", &[a], "").0, 200, "another source is not limited");
    let (_, _, text) = raw(addr, other, "GET", "/metrics", &[a], "");
    for (reason, n) in [("unsupported_media_type", 2.0), ("forbidden_host", 4.0), ("too_large", 1.0), ("unauthorized", 8.0), ("rate_limited", 2.0)] {
        assert_eq!(metric(&text, &format!("parkd_http_refusals_total{{reason=\"{reason}\"}}")), Some(n), "{reason}: {text}");
    }
    assert!(parkd.stderr_tail(400).contains("refused http source=127.0.0.1 reason=rate_limited"));
}

/// Toll fraud: with the default `dial_allow` (empty), an unpark to a premium number — a UDP listener on
/// 127.0.0.3 stands for it — or to a lot number on a foreign host gets 403 with a JSON reason and nothing reaches
/// the listener; the call stays parked. An unpark to the call's parker (its Referred-By) rings the parker, who
/// answers and talks to the parked party.
#[test]
fn unpark_to_a_number_not_allowed_is_refused_and_nothing_is_sent_but_the_parker_rings() {
    let parkd = Parkd::start_with("api_dial_allow", ParkdOptions { http: true, extra_args: vec!["--http-token".into(), TOKEN.into()], ..Default::default() });
    let b = base(&parkd);
    let premium = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    let premium_port = premium.local_addr().expect("addr").port();
    let alice = RtpEndpoint::bind("alice (parker)");
    alice.start_talking(CAROL);
    let alice_run = Sipp::new("unpark_uas").rtp_port(alice.port()).hold_ms(3000).timeout(Duration::from_secs(60)).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::parked_recallable(bob.port(), alice_run.local_port).timeout(Duration::from_secs(60)).spawn(&parkd);
    expect_hold_music(&bob, 10);

    for to in [format!("sip:19005550100@127.0.0.3:{premium_port}"), format!("sip:701@127.0.0.3:{premium_port}")] {
        let (s, e) = call("POST", &format!("{b}/v1/orbits/701/unpark"), Some(TOKEN), Some(json!({ "to": to })));
        assert_eq!((s, e["error"].as_str()), (403, Some("dial_not_allowed")), "{to}: {e}");
        assert!(e["cause"].as_str().is_some_and(|c| c.contains("dial_allow") && c.contains("127.0.0.3")), "{e}");
    }
    let o = orbit(&parkd, "701");
    assert_eq!((o["state"].as_str(), o.get("recalling")), (Some("parked"), None), "still parked, nothing rings: {o}");

    let parker = format!("sip:alice@127.0.0.1:{}", alice_run.local_port);
    let (s, body) = call("POST", &format!("{b}/v1/orbits/701/unpark"), Some(TOKEN), Some(json!({ "to": parker })));
    assert_eq!(s, 202, "the parker may be rung: {body}");
    expect_peer_audio(&alice, BOB, 25);
    expect_peer_audio(&bob, CAROL, 25);
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "the parker answers the unpark and hangs up");
    assert!(alice_out.received().iter().any(|m| m.starts_with(&format!("INVITE {parker}"))), "the INVITE went to the parker");
    bob_run.wait().assert_passed(&parkd, "bob is hung up after the parker's BYE");

    // Everything parkd did is done by now: the premium listener got nothing at all.
    premium.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let mut buf = [0u8; 2048];
    match premium.recv_from(&mut buf) {
        Ok((n, from)) => panic!("parkd sent {n} bytes to the refused number from {from}: {}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}"),
    }
    let text = get_text(&format!("{b}/metrics"));
    assert_eq!(metric(&text, "parkd_http_refusals_total{reason=\"dial_not_allowed\"}"), Some(2.0), "{text}");
    assert_eq!(metric(&text, "parkd_recalls_total{target=\"api_unpark\",outcome=\"started\"}"), Some(1.0), "only the parker was called: {text}");
    assert!(parkd.stderr_tail(600).contains("refused http source=127.0.0.1 reason=dial_not_allowed"));
}

/// A state directory parkd cannot create is a startup error that names it (here its parent is a file), before
/// anything is bound.
#[test]
fn an_unusable_state_dir_stops_parkd_with_its_name() {
    let dir = sip_tests::paths::fresh_log_dir("api_bad_state_dir");
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "x").expect("write");
    let state = blocker.join("parkd-state");
    let mut child = std::process::Command::new(sip_tests::harness::parkd::binary_path())
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start parkd");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("parkd kept running with an unusable state directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read");
    assert!(!status.success(), "{status}");
    assert!(err.contains(&state.display().to_string()) && err.contains("state directory"), "the error names the directory: {err}");
}
