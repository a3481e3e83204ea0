//! When the SIP thread must wake the media thread, and when it need not.
//!
//! The media thread sleeps in `epoll_wait` until its pacer's next slot (every millisecond or so while
//! calls are on hold). Waking it through its eventfd costs a `write` syscall and a cross-core wake-up,
//! several µs each, for every batch of media commands (3 per park → retrieve → hang-up cycle). When the
//! thread is going to wake within [`WakeGate::SLACK`] (one frame) anyway, the commands can wait for that wake.
//!
//! Protocol (a Dekker pair, both sides `SeqCst`):
//! - media thread, before sleeping: publish the planned wake time, then read `pending`; if set, do not
//!   sleep. After waking: clear `pending`, then drain the command queue.
//! - SIP thread, after queueing commands: set `pending`, then read the planned wake time; wake the
//!   thread only when it is more than `SLACK` away.
//!
//! Either the media thread sees `pending` (and does not sleep) or the SIP thread sees the planned wake
//! time published before the sleep (and wakes the thread if it is far), so a command never waits
//! longer than `SLACK` past the moment it was queued.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared between the SIP thread (producer of media commands) and the media thread.
#[derive(Debug)]
pub struct WakeGate {
    origin: Instant,
    /// Nanoseconds after `origin` at which the media thread plans to wake. 0 before its first sleep
    /// (a time in the past: "awake, will look at the queue").
    planned_wake_ns: AtomicU64,
    pending: AtomicBool,
}

impl Default for WakeGate {
    fn default() -> Self {
        WakeGate::new()
    }
}

impl WakeGate {
    /// How late a queued command may be applied when the thread would not otherwise wake: one 20 ms frame.
    ///
    /// While any hold stream plays, the pacer wakes the thread at least once per frame, and the thread applies
    /// every queued command first on each wake (a pacer slot, an RTP packet arriving on any leg). So a bridge
    /// is in force before the next hold packet of either leg and before the first packet it relays: no hold
    /// packet follows a bridge, and the switch waits for no timer. What may wait up to a frame is the start
    /// of a new call's music (its first packet is a frame late at most) and the teardown of a leg that hung up.
    /// Sleeping longer than this (no hold stream: up to `IDLE_WAKE`), the thread is woken at once.
    /// At 500 park → retrieve → hang-up cycles/s a 2 ms slack still cost 1.3 wake-ups (an eventfd `write` and
    /// a preemption of the SIP thread on a shared core) per cycle: the pacer packs streams into shared slots,
    /// so the thread often sleeps longer than 2 ms while music plays.
    pub const SLACK: Duration = Duration::from_millis(20);

    pub fn new() -> WakeGate {
        WakeGate { origin: Instant::now(), planned_wake_ns: AtomicU64::new(0), pending: AtomicBool::new(false) }
    }

    fn ns_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos().min(u64::MAX as u128) as u64
    }

    /// Media thread, before sleeping until `wake_at`: publishes it. Returns false when commands are
    /// pending, in which case the thread must not sleep.
    pub fn before_sleep(&self, wake_at: Instant) -> bool {
        self.planned_wake_ns.store(self.ns_at(wake_at).max(1), Ordering::SeqCst);
        !self.pending.load(Ordering::SeqCst)
    }

    /// Media thread, after waking and before draining the command queue.
    pub fn after_wake(&self) {
        self.pending.store(false, Ordering::SeqCst);
    }

    /// SIP thread, after queueing commands at `now`: true when the media thread must be woken (its
    /// planned wake is more than [`WakeGate::SLACK`] away).
    pub fn must_wake(&self, now: Instant) -> bool {
        self.pending.store(true, Ordering::SeqCst);
        let planned = self.planned_wake_ns.load(Ordering::SeqCst);
        planned > self.ns_at(now + Self::SLACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_wakes_soon_is_not_woken() {
        let g = WakeGate::new();
        let now = Instant::now();
        assert!(g.before_sleep(now + Duration::from_millis(1)));
        assert!(!g.must_wake(now), "it wakes within the slack on its own");
    }

    #[test]
    fn a_thread_sleeping_long_is_woken() {
        let g = WakeGate::new();
        let now = Instant::now();
        assert!(g.before_sleep(now + Duration::from_millis(500)));
        assert!(g.must_wake(now));
    }

    #[test]
    fn commands_queued_before_the_sleep_keep_the_thread_awake() {
        let g = WakeGate::new();
        let now = Instant::now();
        // The thread is awake (published nothing far): the producer does not wake it...
        assert!(!g.must_wake(now));
        // ...and the thread, about to sleep long, sees the pending commands instead.
        assert!(!g.before_sleep(now + Duration::from_millis(500)));
        g.after_wake();
        assert!(g.before_sleep(now + Duration::from_millis(500)), "drained: free to sleep");
    }
}
