//! parkd's park events (`parked`, `retrieved`, `ended`, ...) as the test sees them: the JSON objects parkd
//! logs on every orbit change (`park event event={"event":"parked","orbit":"701",...}`), read back from its
//! stderr file.

use crate::harness::parkd::Parkd;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Every park event parkd has logged so far, oldest first (across restarts: every start's log, in order).
pub fn park_events(parkd: &Parkd) -> Vec<Value> {
    let text = parkd.stderr_of_every_start();
    text.lines()
        .filter_map(|line| {
            let start = line.find("{\"event\":")?;
            let end = line.rfind('}')?;
            serde_json::from_str(line.get(start..=end)?).ok()
        })
        .collect()
}

/// Waits (up to `wait`) for a park event of kind `kind` (e.g. "parked") for which `pred` holds, and
/// returns it; panics with every event seen and parkd's log tail otherwise.
pub fn wait_park_event(parkd: &Parkd, kind: &str, wait: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let events = park_events(parkd);
        if let Some(ev) = events.iter().find(|e| e["event"] == kind && pred(e)) {
            return ev.clone();
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = events.iter().map(Value::to_string).collect();
            panic!(
                "no matching park event {kind:?} within {wait:?}; events so far:\n  {}\nparkd log tail:\n{}",
                seen.join("\n  "),
                parkd.stderr_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
