//! The core's side of the journal (issue 17): what the rooms write, and how a fresh core is rebuilt from it.
//!
//! The entry points are fixed (the io driver and the sim harness call them); what is written and how restore
//! works is filled in behind them. See [`crate::journal`] for the store and its guarantees, and the engine
//! contract ([`super::contract`]) for the order of calls.

use super::Core;
use crate::journal::{JournalToken, LiveSet};
use crate::time::Time;

/// What [`Core::restore`] brought back, for the startup log and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Calls back in their orbits, with hold music.
    pub parked: usize,
    /// Bridged calls relaying again.
    pub bridged: usize,
    /// BLF subscriptions still within their expiry.
    pub subscriptions: usize,
    /// Recalls that fell due while parkd was down (started at once) or were ringing at the crash (started again).
    pub recalls_restarted: usize,
    /// Records that could not be used, each with why (an unknown kind, a value that does not decode, a call
    /// whose leg is missing). Logged at startup; the rest is restored.
    pub skipped: Vec<String>,
}

impl Core {
    /// Turns journaling on or off (off by default, so unit tests and `journal = false` see no [`crate::core::Output::Journal`]).
    /// Call before any traffic.
    pub fn set_journaling(&mut self, on: bool) {
        let _ = on;
    }

    /// The journal group `token` is on stable storage (`ok`), or could not be written: release what the core held
    /// back for it, or refuse in its place. Drain outputs afterwards, as after any input.
    pub fn handle_journal_durable(&mut self, token: JournalToken, ok: bool, now: Time) {
        let _ = (token, ok, now);
    }

    /// Rebuilds a fresh core's rooms from the journal's live records (call once, after [`Core::new`] and before
    /// any traffic), then drains as after any input: the media plane is told to resume each restored stream,
    /// recalls due while parkd was down start now.
    pub fn restore(&mut self, live: &LiveSet, now: Time) -> RestoreReport {
        let _ = (live, now);
        RestoreReport::default()
    }
}
