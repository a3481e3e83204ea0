//! Cache hints for the media plane's hot loop: ask the CPU to start fetching memory that will be read soon,
//! so that the fetches of many streams' states overlap instead of each waiting for the one before.
//!
//! A hint changes no result: on x86-64 it is the `prefetcht0` instruction, which never faults, whatever the
//! address; elsewhere it does nothing.

/// Cache line size assumed for the hints (x86-64 and most 64-bit ARM cores).
const LINE: usize = 64;

/// Hints that the `len` bytes from `at` will be read soon (every cache line they span, at most 16).
pub fn lines(at: *const u8, len: usize) {
    let first = at as usize & !(LINE - 1);
    let end = (at as usize).saturating_add(len.max(1));
    let mut line = first;
    let mut n = 0;
    while line < end && n < 16 {
        hint(line as *const u8);
        let Some(next) = line.checked_add(LINE) else { break };
        line = next;
        n += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hint(at: *const u8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: `prefetcht0` is a hint: it reads nothing into the program, never faults (an invalid or unmapped
    // address is ignored) and needs only SSE, which every x86-64 CPU has.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn hint(_at: *const u8) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_change_nothing_and_accept_any_address() {
        let v: Vec<u8> = (0..=255).collect();
        lines(v.as_ptr(), v.len());
        lines(std::ptr::null(), 4096);
        lines(usize::MAX as *const u8, 1 << 20);
        assert_eq!(v, (0..=255).collect::<Vec<u8>>());
    }
}
