//! Where the journal lives for a number of SIP threads (`[server] sip_threads`, README "Signalling shards" and
//! "Surviving restarts"), and the check that a start finds every call the last run journaled.
//!
//! * `sip_threads = 1`: `<state_dir>/journal`, as always.
//! * `sip_threads = N > 1`: one journal per shard, `<state_dir>/sip-threads-N/shard-K/journal`, each with its own
//!   writer thread and lock. A shard's calls are restored into the same shard at the next start: their RTP
//!   ports lie in that shard's block of `rtp_ports`, their Contacts carry `;parkd-shard=K` and the Call-IDs parkd
//!   invented hash to it, so the next start must cut the range the same way (same `sip_threads`, same
//!   `rtp_ports`). `<state_dir>/journal.lock` is held as well, so a one-thread and a sharded parkd never share a
//!   state directory.
//! * A start with another `sip_threads` than the run that journaled calls would not find them (another directory,
//!   other port blocks). It is refused, naming the directory, the number of calls and the `sip_threads` that
//!   brings them back ([`LayoutError::OtherThreads`]); journals of another layout holding no call are left as
//!   they are and ignored.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::http_token::ensure_state_dir;
use super::journal_file::{lock_dir, LocalJournal, OpenError, JOURNAL_FILE};
use crate::journal::{scan, CompactionPolicy, LiveSet, RecordKind, Restored};

/// The sharded layouts' directories are `sip-threads-<N>`.
const THREADS_DIR_PREFIX: &str = "sip-threads-";

/// Why the journals could not be opened (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(
        "{dir} holds {calls} call(s) journaled by a parkd running with sip_threads = {then}, and this one has \
         sip_threads = {now}: start with sip_threads = {then} (--sip-threads {then}) to bring them back, or move \
         {dir} away to start without them"
    )]
    OtherThreads { dir: PathBuf, calls: usize, then: u16, now: u16 },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// The directory of shard `shard`'s journal when parkd runs `threads` SIP threads.
pub fn journal_dir(state_dir: &Path, threads: u16, shard: usize) -> PathBuf {
    if threads <= 1 {
        state_dir.to_path_buf()
    } else {
        state_dir.join(format!("{THREADS_DIR_PREFIX}{threads}")).join(format!("shard-{shard}"))
    }
}

/// Every shard's journal, open and locked, with what each holds.
#[derive(Debug)]
pub struct Journals {
    /// Shard `k`'s journal (one entry with one SIP thread).
    pub shards: Vec<(LocalJournal, Restored)>,
    /// `<state_dir>/journal.lock`, held while parkd runs sharded (one thread: the journal holds it).
    pub state_lock: Option<File>,
}

/// Opens the journals of `threads` SIP threads in `state_dir` (creating what is missing), after checking that no
/// journal of another `sip_threads` holds a call.
pub fn open(state_dir: &Path, threads: u16, policy: CompactionPolicy) -> Result<Journals, LayoutError> {
    let threads = threads.max(1);
    let state_lock = if threads > 1 {
        ensure_state_dir(state_dir).map_err(OpenError::from)?;
        Some(lock_dir(state_dir)?)
    } else {
        None
    };
    let mut shards = Vec::with_capacity(usize::from(threads));
    for k in 0..usize::from(threads) {
        shards.push(LocalJournal::open(&journal_dir(state_dir, threads, k), policy)?);
    }
    // With this directory locked (by the state lock, or shard 0's journal): no other parkd writes the others.
    for (then, dirs) in other_layouts(state_dir, threads)? {
        let mut calls = 0;
        for dir in &dirs {
            calls += calls_in(&dir.join(JOURNAL_FILE))?;
        }
        if calls > 0 {
            let dir = if then == 1 { state_dir.join(JOURNAL_FILE) } else { state_dir.join(format!("{THREADS_DIR_PREFIX}{then}")) };
            return Err(LayoutError::OtherThreads { dir, calls, then, now: threads });
        }
    }
    Ok(Journals { shards, state_lock })
}

/// The journal directories of the layouts other than `threads`'s that exist in `state_dir`.
fn other_layouts(state_dir: &Path, threads: u16) -> Result<Vec<(u16, Vec<PathBuf>)>, LayoutError> {
    let mut out = Vec::new();
    if threads > 1 && state_dir.join(JOURNAL_FILE).is_file() {
        out.push((1, vec![state_dir.to_path_buf()]));
    }
    let read = |path: &Path| std::fs::read_dir(path).map_err(|source| LayoutError::Read { path: path.to_path_buf(), source });
    for entry in read(state_dir)?.flatten() {
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|s| s.strip_prefix(THREADS_DIR_PREFIX)).and_then(|s| s.parse::<u16>().ok()) else { continue };
        if n == threads || !entry.path().is_dir() {
            continue;
        }
        let dirs = read(&entry.path())?.flatten().map(|e| e.path()).filter(|p| p.join(JOURNAL_FILE).is_file()).collect();
        out.push((n, dirs));
    }
    Ok(out)
}

/// The calls (parked or bridged) a journal file holds, read without changing it.
fn calls_in(path: &Path) -> Result<usize, LayoutError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(LayoutError::Read { path: path.to_path_buf(), source }),
    };
    // A newer parkd's journal: its records are unknown here, so count it as holding calls if it is not empty.
    let Ok(found) = scan(&bytes) else { return Ok(usize::from(!bytes.is_empty())) };
    let live = LiveSet::replay(found.records);
    Ok(live.of_kind(RecordKind::PARKED_CALL).count() + live.of_kind(RecordKind::BRIDGE).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Record, RecordKey, Store};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("parkd-layout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Journals one parked-call record in `dir` (as a run's shard would).
    fn park_one(dir: &Path, id: &str) {
        let (mut j, _) = LocalJournal::open(dir, CompactionPolicy::default()).unwrap();
        j.commit(vec![vec![Record::put(RecordKey::new(RecordKind::PARKED_CALL, id), vec![1, 2, 3])]]).unwrap();
    }

    #[test]
    fn one_thread_keeps_the_state_dir_and_shards_get_a_directory_each() {
        let d = Path::new("/var/lib/parkd");
        assert_eq!(journal_dir(d, 1, 0), d);
        assert_eq!(journal_dir(d, 2, 1), d.join("sip-threads-2/shard-1"));
    }

    #[test]
    fn each_shard_reopens_its_own_calls_with_the_same_thread_count() {
        let d = dir("same");
        let opened = open(&d, 2, CompactionPolicy::default()).unwrap();
        assert_eq!(opened.shards.len(), 2);
        assert!(opened.state_lock.is_some());
        drop(opened);
        park_one(&journal_dir(&d, 2, 1), "7");
        let opened = open(&d, 2, CompactionPolicy::default()).unwrap();
        assert!(opened.shards[0].1.live.is_empty());
        assert_eq!(opened.shards[1].1.live.of_kind(RecordKind::PARKED_CALL).count(), 1, "shard 1's call comes back to shard 1");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_start_with_another_thread_count_is_refused_while_the_old_layout_holds_calls() {
        let d = dir("other");
        park_one(&journal_dir(&d, 2, 0), "1");
        park_one(&journal_dir(&d, 2, 1), "2");
        match open(&d, 1, CompactionPolicy::default()) {
            Err(e @ LayoutError::OtherThreads { calls: 2, then: 2, now: 1, .. }) => {
                let text = e.to_string();
                assert!(text.contains("--sip-threads 2") && text.contains("sip-threads-2"), "{text}");
            }
            other => panic!("one thread over two shards' calls: {other:?}"),
        }
        match open(&d, 3, CompactionPolicy::default()) {
            Err(LayoutError::OtherThreads { calls: 2, then: 2, now: 3, .. }) => {}
            other => panic!("three threads over two shards' calls: {other:?}"),
        }
        // The one-thread journal the refused start created holds nothing: two threads start again.
        assert!(open(&d, 2, CompactionPolicy::default()).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_sharded_start_is_refused_over_a_one_thread_journal_with_calls_and_takes_the_state_lock() {
        let d = dir("one");
        park_one(&d, "9");
        match open(&d, 2, CompactionPolicy::default()) {
            Err(LayoutError::OtherThreads { calls: 1, then: 1, now: 2, dir }) => assert_eq!(dir, d.join("journal")),
            other => panic!("{other:?}"),
        }
        // An emptied journal (the call ended) is no obstacle.
        let (mut j, _) = LocalJournal::open(&d, CompactionPolicy::default()).unwrap();
        j.commit(vec![vec![Record::delete(RecordKey::new(RecordKind::PARKED_CALL, "9"))]]).unwrap();
        let held = j;
        // A one-thread parkd running here holds the state lock: a sharded one cannot start beside it.
        assert!(matches!(open(&d, 2, CompactionPolicy::default()), Err(LayoutError::Open(OpenError::InUse { .. }))));
        drop(held);
        assert!(open(&d, 2, CompactionPolicy::default()).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
