//! Prints SIP parse throughput (not pass/fail): `cargo bench --bench sip_parse`.

use parkd::sip::{parse_message, Message};
use std::hint::black_box;
use std::time::Instant;

const INVITE: &[u8] = b"INVITE sip:700@10.0.0.5:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-524287-1---8bd7f2b1c1e0a2f3;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:201@10.0.0.2:5060>\r\n\
To: <sip:700@10.0.0.5>\r\n\
From: \"Front Desk\" <sip:201@10.0.0.5>;tag=9f2c1a7e\r\n\
Call-ID: 5b1d0c6a-7e2f-4a8b-9c3d-1e0f2a3b4c5d@10.0.0.2\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, UPDATE\r\n\
Content-Type: application/sdp\r\n\
Supported: replaces, timer\r\n\
User-Agent: Example Phone 1.0\r\n\
Content-Length: 218\r\n\
\r\n\
v=0\r\n\
o=- 1234567890 1234567890 IN IP4 10.0.0.2\r\n\
s=-\r\n\
c=IN IP4 10.0.0.2\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=sendrecv\r\n";

fn run(name: &str, bytes: &[u8], iterations: u32) {
    assert!(parse_message(bytes).is_ok(), "{name} must parse");
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(parse_message(black_box(bytes)).ok().map(|m| matches!(m, Message::Request(_))));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: {} bytes, {:.0} parses/s, {:.2} µs/parse",
        bytes.len(),
        f64::from(iterations) / secs,
        secs * 1e6 / f64::from(iterations)
    );
}

fn main() {
    run("typical INVITE", INVITE, 200_000);
    run("RFC 4475 wsinv", include_bytes!("../src/sip/testdata/rfc4475/wsinv.dat"), 100_000);
}
