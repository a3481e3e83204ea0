//! Stopping the processes a test started: SIGTERM to the child's own PID (a chance to flush logs), then
//! SIGKILL once `grace` has passed, and reap it. Never touches any other process.

use std::process::Child;
use std::time::{Duration, Instant};

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
