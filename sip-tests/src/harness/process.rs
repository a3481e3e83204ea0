//! The processes a test started: stopping one (SIGTERM to the child's own PID, a chance to flush logs, then
//! SIGKILL once `grace` has passed, and reap it; never any other process) and reading its memory.

use std::process::Child;
use std::time::{Duration, Instant};

/// Stops `child`: SIGTERM, up to `grace` to exit, then SIGKILL; reaps it.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The resident set size (`VmRSS` of `/proc/<pid>/status`) of process `pid`, KiB; `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}
