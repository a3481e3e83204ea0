//! A `timerfd` in the media thread's poll, so that a pacer slot wakes the thread within microseconds of its due
//! time. mio hands `epoll_wait` whole milliseconds, rounded up: a slot due 0.3 ms after the last turn ended woke
//! the thread 1 ms later, 0.7 ms late, and how late depended on how long the turn before had taken. Near the
//! density ceiling (turns of ~0.9 ms every 1 ms) that varied each stream's send time by up to a millisecond,
//! half the jitter budget (p99 inter-arrival ≤ 22 ms). A timerfd expires on an hrtimer with no slack.
//!
//! The timer is armed only when the deadline moves; it is never read: each expiry wakes the edge-triggered
//! registration again, and re-arming resets its count.

use crate::time::Time;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A one-shot monotonic timer registered for reading in a mio poll.
pub struct DeadlineTimer {
    fd: OwnedFd,
    /// The deadline the timer is set for (`None`: not set, or set for one already passed).
    armed: Option<Time>,
}

impl DeadlineTimer {
    /// A disarmed timer, registered in `registry` under `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<DeadlineTimer> {
        // SAFETY: plain syscall; the result is checked and a valid descriptor is owned from here on.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(DeadlineTimer { fd, armed: None })
    }

    /// Makes the timer fire at `due`, which is `after` from now (> 0), unless it is already set for `due`.
    pub fn arm(&mut self, due: Time, after: Duration) -> io::Result<()> {
        if self.armed == Some(due) {
            return Ok(());
        }
        // A zero value would disarm the timer instead: the caller polls without sleeping then.
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: after.as_secs() as libc::time_t, tv_nsec: after.subsec_nanos() as libc::c_long },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            self.armed = None;
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(due);
        Ok(())
    }

    /// The poll reported an expiry: the next [`arm`](Self::arm) sets the timer whatever the deadline.
    pub fn fired(&mut self) {
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    const TIMER: Token = Token(7);

    /// Polls until the timer's token is reported (or `limit` passes); how long that took.
    fn wait_for_timer(poll: &mut Poll, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut events = Events::with_capacity(4);
        while start.elapsed() < limit {
            poll.poll(&mut events, Some(limit)).unwrap();
            if events.iter().any(|e| e.token() == TIMER) {
                return Some(start.elapsed());
            }
        }
        None
    }

    #[test]
    fn fires_again_after_each_arming_without_being_read() {
        let mut poll = Poll::new().unwrap();
        let mut timer = DeadlineTimer::new(poll.registry(), TIMER).unwrap();
        for (i, ms) in [3u64, 2, 4].into_iter().enumerate() {
            let due = Time::from_millis(100 + i as u64);
            timer.arm(due, Duration::from_millis(ms)).unwrap();
            let took = wait_for_timer(&mut poll, Duration::from_secs(2)).unwrap_or_else(|| panic!("expiry {i} never reported"));
            assert!(took >= Duration::from_millis(ms), "expiry {i} fired early: {took:?}");
        }
    }

    #[test]
    fn the_same_deadline_is_not_set_twice_and_a_moved_one_is() {
        let mut poll = Poll::new().unwrap();
        let mut timer = DeadlineTimer::new(poll.registry(), TIMER).unwrap();
        let due = Time::from_millis(50);
        timer.arm(due, Duration::from_secs(30)).unwrap();
        // Same deadline, another delay: kept as set (30 s away), so nothing fires soon.
        timer.arm(due, Duration::from_millis(1)).unwrap();
        assert_eq!(wait_for_timer(&mut poll, Duration::from_millis(50)), None);
        // A new deadline moves it.
        timer.arm(Time::from_millis(51), Duration::from_millis(1)).unwrap();
        assert!(wait_for_timer(&mut poll, Duration::from_secs(2)).is_some());
    }
}
