//! A TCP byte stream cut into reads: framing, pings, limits; every framed message parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| parkd_fuzz::stream(data));
