//! An SDP offer: parse, choose a codec, answer; parkd's answer and offer parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| parkd_fuzz::sdp(data));
