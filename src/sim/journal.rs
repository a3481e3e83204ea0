//! The simulated network's journal: an in-memory store fed by the core's [`crate::core::Output::Journal`]
//! groups (issue 17). A group becomes durable [`SimJournal::sync_delay`] after it was written (group commit:
//! everything queued by then syncs together), or fails when told to; only durable groups survive
//! [`super::Net::crash_and_restart`].

use crate::journal::{JournalToken, LiveSet, Record};
use crate::time::Time;
use std::time::Duration;

/// The in-memory journal of a [`super::Net`].
#[derive(Debug)]
pub struct SimJournal {
    /// Every durable group replayed: what a restart restores.
    pub live: LiveSet,
    /// Groups written and not synced yet, in order, with when they were written.
    queued: Vec<(Time, Vec<Record>, Option<JournalToken>)>,
    /// How long a sync takes.
    pub sync_delay: Duration,
    /// The next syncs fail (a full disk): their groups are lost and their tokens reported failed.
    pub failing: bool,
    /// Groups written, synced and failed so far.
    pub groups: u64,
    pub synced: u64,
    pub failed: u64,
    /// Records written so far (puts and deletes).
    pub records: u64,
}

impl Default for SimJournal {
    fn default() -> Self {
        SimJournal { live: LiveSet::new(), queued: Vec::new(), sync_delay: Duration::from_millis(2), failing: false, groups: 0, synced: 0, failed: 0, records: 0 }
    }
}

impl SimJournal {
    /// A group the core wrote at `now`.
    pub fn write(&mut self, now: Time, records: Vec<Record>, token: Option<JournalToken>) {
        self.groups += 1;
        self.records += records.len() as u64;
        self.queued.push((now, records, token));
    }

    /// When the next sync completes, if anything is queued.
    pub fn next_sync(&self) -> Option<Time> {
        self.queued.first().map(|(at, _, _)| *at + self.sync_delay)
    }

    /// Syncs everything queued: the groups join the live set (or are lost when failing); returns their tokens
    /// and whether they are durable.
    pub fn sync(&mut self) -> (Vec<JournalToken>, bool) {
        self.sync_first(usize::MAX)
    }

    /// Syncs the first `n` groups queued only (a test's crash between two groups' syncs).
    pub fn sync_first(&mut self, n: usize) -> (Vec<JournalToken>, bool) {
        let ok = !self.failing;
        let mut tokens = Vec::new();
        let n = n.min(self.queued.len());
        for (_, records, token) in self.queued.drain(..n) {
            if ok {
                self.synced += 1;
                for r in records {
                    self.live.apply(r);
                }
            } else {
                self.failed += 1;
            }
            tokens.extend(token);
        }
        (tokens, ok)
    }

    /// A crash: what was not synced is gone.
    pub fn lose_unsynced(&mut self) -> usize {
        let n = self.queued.len();
        self.queued.clear();
        n
    }
}
