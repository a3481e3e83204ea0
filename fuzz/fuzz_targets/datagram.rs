//! One SIP datagram: limits, decode, re-encode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| parkd_fuzz::datagram(data));
