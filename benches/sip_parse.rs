//! Prints SIP parse throughput (not pass/fail): `cargo bench --bench sip_parse`.

use parkd::sip::{check_datagram, parse_message, FrameLimits, Message};
use std::hint::black_box;
use std::time::Instant;

/// The same typical INVITE the codec's unit tests parse.
const INVITE: &[u8] = include_bytes!("../src/sip/testdata/typical_invite.sip");

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

/// The io layer's check of a datagram's size and header count, done before every parse.
fn run_check(name: &str, bytes: &[u8], iterations: u32) {
    let limits = FrameLimits::default();
    assert!(check_datagram(bytes, &limits).is_ok(), "{name} must pass the check");
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(check_datagram(black_box(bytes), &limits).is_ok());
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{name}: framing check {:.3} µs", secs * 1e6 / f64::from(iterations));
}

fn main() {
    run_check("typical INVITE", INVITE, 1_000_000);
    run("typical INVITE", INVITE, 200_000);
    run("RFC 4475 wsinv", include_bytes!("../src/sip/testdata/rfc4475/wsinv.dat"), 100_000);
}
