//! One ordered queue for every parked call's deadlines (recall, maximum park time, keepalive).
//!
//! Lazy deletion: re-arming pushes a new entry and the call remembers only its current deadline, so a popped
//! entry that no longer matches is skipped. `next()` is a peek: nothing ever walks all calls.

use crate::core::ids::CallRef;
use crate::time::Time;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallTimer {
    /// The parking time ran out: call the parker back.
    Recall,
    /// The call has been parked for `max_park_time`: end it.
    MaxPark,
    /// Time to check that the parked party is still there (in-dialog OPTIONS).
    Keepalive,
}

impl CallTimer {
    /// The reason [`crate::core::Core::poll_timeout`] gives for this deadline.
    pub fn wake(self) -> crate::core::Wake {
        match self {
            CallTimer::Recall => crate::core::Wake::Recall,
            CallTimer::MaxPark => crate::core::Wake::MaxPark,
            CallTimer::Keepalive => crate::core::Wake::Keepalive,
        }
    }
}

#[derive(Debug, Default)]
pub struct CallTimers {
    heap: BinaryHeap<Reverse<(Time, CallRef, CallTimer)>>,
}

impl CallTimers {
    pub fn arm(&mut self, at: Time, call: CallRef, kind: CallTimer) {
        self.heap.push(Reverse((at, call, kind)));
    }

    /// The earliest entry's time and kind (possibly a stale one: waking early is harmless).
    pub fn next(&self) -> Option<(Time, crate::core::Wake)> {
        self.heap.peek().map(|Reverse((t, _, kind))| (*t, kind.wake()))
    }

    /// The earliest entry if it is due at `now` (not popped).
    pub fn peek_due(&self, now: Time) -> Option<(Time, CallRef, CallTimer)> {
        self.heap.peek().map(|Reverse(e)| *e).filter(|(t, _, _)| *t <= now)
    }

    /// Pops the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Time) -> Option<(Time, CallRef, CallTimer)> {
        match self.heap.peek() {
            Some(Reverse((t, _, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let mut q = CallTimers::default();
        q.arm(Time::from_secs(45), CallRef(1), CallTimer::Recall);
        q.arm(Time::from_secs(10), CallRef(2), CallTimer::Recall);
        q.arm(Time::from_secs(30), CallRef(1), CallTimer::MaxPark);
        assert_eq!(q.next(), Some((Time::from_secs(10), crate::core::Wake::Recall)));
        assert_eq!(q.pop_due(Time::from_secs(9)), None);
        assert_eq!(q.pop_due(Time::from_secs(40)), Some((Time::from_secs(10), CallRef(2), CallTimer::Recall)));
        assert_eq!(q.pop_due(Time::from_secs(40)), Some((Time::from_secs(30), CallRef(1), CallTimer::MaxPark)));
        assert_eq!(q.pop_due(Time::from_secs(40)), None);
        assert_eq!(q.next(), Some((Time::from_secs(45), crate::core::Wake::Recall)));
    }
}
