//! A whole core fed a sequence of messages from four peers, with time jumps (see parkd_fuzz::core).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| parkd_fuzz::core(data));
