//! The journal: what parked and bridged calls need to survive a crash, a restart or an upgrade (issue 17).
//!
//! # The model
//! The rooms of the core (parking, bridging, dialogs, media, BLF) own their state as plain data. What they must
//! get back after a restart they write as [`Record`]s: keyed upserts (`Put { key, value }`) and deletes
//! (`Delete { key }`). A [`RecordKey`] names one thing a room owns ([`RecordKind`] + an id such as a Call-ID); the
//! value is opaque bytes the room makes from its own type with [`to_value`]. A room submits the records of one
//! change together, as a group (a park: the call, its dialog, its media leg, its orbit), and a group is restored
//! whole or not at all. Restoring is replaying: the result is a [`LiveSet`], each key's latest value, which each
//! room reads back with [`LiveSet::of_kind`].
//!
//! # The format, and why a log and not a database
//! An append-only file of checksummed frames, one per group (`<state_dir>/journal`, layout in [`record`]),
//! rewritten to its live records when it grows (compaction). The access pattern decides it:
//! * **Write-mostly, read once.** Every park, update and hang-up appends a few hundred bytes; the file is read
//!   once, whole, at startup. parkd never looks a call up on disk: the rooms hold everything in memory. A log is
//!   exactly that: one sequential `write` + one `fdatasync` per group of records, one sequential read at start.
//! * **Group commit is ours to do in any store.** 500 parks/s must not mean 500 syncs/s. With a log the writer
//!   thread appends everything queued while the previous sync ran and syncs once ([`crate::io::journal_writer`]).
//!   redb or SQLite would need the same batching into one transaction, and then sync more per commit: redb's
//!   copy-on-write B-tree writes whole 4 KiB pages plus its commit slot per transaction, SQLite's WAL writes
//!   page images and needs a C build (rusqlite + bundled libsqlite3); fjall is an LSM tree with its own journal,
//!   memtables and background compaction threads, built for data larger than memory — ours is a few MB.
//! * **Damage must not stop a start.** The issue wants intact records restored and the bad part reported and set
//!   aside. An embedded database reports a damaged file as an error (or offers an offline repair); with our own
//!   frames the rule is a pure function ([`scan()`]) tested at every byte offset.
//! * **Small.** About 1,300 lines with their docs (as many again in tests) on top of two well-kept crates:
//!   `crc32fast` (SIMD CRC-32 of each frame) and `postcard` (serde's compact binary format with a stable 1.0 wire
//!   spec) for record bodies; the rooms will use it for their values too.
//!
//! # Guarantees
//! * **Durable before acknowledged.** [`Store::commit`] returns once the records are on stable storage
//!   (`fdatasync`); the writer thread reports each group's [`JournalToken`]s in a [`Durable`] only after that.
//! * **Groups nobody waits for are durable within a bound.** A group without a token (a park's ACK, a retrieve's
//!   bridge, a hang-up's deletes) is committed with the next group that has one, or appended on its own after
//!   [`crate::io::journal_writer::WriterConfig::lazy_write`] (5 ms: what `kill -9` can lose of it) and synced
//!   [`lazy_sync`](crate::io::journal_writer::WriterConfig::lazy_sync) (50 ms) later (what a power loss can lose).
//!   Nothing was acknowledged for it, and the order below still holds.
//! * **In order, each group whole.** Groups are committed in submission order and each is one checksummed frame,
//!   so a restart restores exactly the state after some group — at or after the last one acknowledged. It may be
//!   *after*: a crash between the sync and the acknowledgement restores groups whose ack never went out. The rooms
//!   must allow for it (a restored park whose `200 OK` was never sent has no ACK journaled: end it, or wait for the
//!   caller's retransmitted INVITE, which the new process answers).
//! * **Recovery.** A torn or damaged tail never stops parkd from starting: the groups before the first bad frame
//!   are restored, the bad part (to the end of the file) is copied to `journal.corrupt-<n>`, reported
//!   ([`RecoveryReport`]) and cut off so new records follow the intact ones. Why the scan stops at the first bad
//!   frame rather than skipping over it: see [`mod@scan`]. A file from a newer parkd (format version above ours) is
//!   refused, not set aside: it is not damaged.
//! * **Compaction** ([`CompactionPolicy`]) rewrites the live records into `journal.tmp`, syncs it, renames it over
//!   `journal` and syncs the directory: a crash at any point leaves either the old or the new file, each whole.
//! * **What the tests prove.** A child process killed with SIGKILL while writing flat out (mid-write, mid-sync,
//!   mid-compaction) restores every acknowledged group; `kill -9` can even cut a large `write` short, and the torn
//!   tail is set aside. Power loss cannot be simulated here: against it the design relies on `fdatasync` before
//!   any acknowledgement, `fsync` of a compacted file before its rename, and of the directory after it.
//! * **One parkd per directory.** The journal holds an exclusive `flock` on `journal.lock`; a second parkd on
//!   the same `state_dir` is a startup error naming the directory, as is a directory that cannot be created or
//!   written.
//!
//! # The handshake with the engine (sans-IO)
//! The SIP engine never waits on a disk:
//! 1. A room changes state and returns the records; a change that must be durable before the peer hears of it
//!    (a park's `200 OK`, a REFER's final NOTIFY) is held in an [`AckGate`] under a fresh token. The core emits
//!    `Output::Journal { records, token }` and keeps the held outputs (`src/core/persist/`).
//! 2. The io driver passes it to [`crate::io::journal_writer::JournalWriter::submit`] (`src/io/sip_driver.rs`).
//!    The writer thread takes everything queued, appends it, syncs once, and calls the completion hook with the
//!    group's tokens; the hook sends the [`Durable`] to the driver's channel (a tokio `mpsc`), which wakes its
//!    `select!`.
//! 3. The driver calls `core.handle_journal_durable(token, ok, now)` for each token and drains outputs as after
//!    any input: the core releases the held 200 from the gate. Retransmitted INVITEs meanwhile meet the server
//!    transaction (100 Trying), as before. A group the writer refuses at `submit` counts as failed at once.
//! 4. On an error (disk full) the token comes back in a failed [`Durable`]: the core answers the park `500`
//!    (the transferor's phone keeps the call; nothing is lost) and deletes its records. The store rewrites the
//!    whole live set at its next commit, so a transient error heals without a restart.
//! 5. At startup (`main.rs`), before any socket is read: `LocalJournal::open(state_dir)` (errors end the start,
//!    naming the directory; a bad tail is set aside and logged), the media threads bind the RTP range,
//!    `Core::restore` rebuilds the rooms from the [`LiveSet`], the writer thread starts with the opened store,
//!    and the driver's first drain, before it reads any socket, hands each restored stream to its media thread.
//!    SIGTERM stops the driver and `JournalWriter::shutdown` commits what is queued (no BYE is sent).

//! # One trait for every store
//! The writer thread drives a [`Store`]: the local journal ([`crate::io::journal_file::LocalJournal`]) is the
//! embedded default; the Redis store of issue 18 takes the same records (`Put` → `SET`, `Delete` → `DEL`, a group
//! in one `MULTI`/`EXEC`) behind the same trait and the same writer.

mod ack;
pub mod live;
pub mod record;
pub mod scan;

pub use ack::{AckGate, Durable, JournalToken};
pub use live::{CompactionPolicy, LiveSet};
pub use record::{check_size, from_value, to_value, EncodeError, Record, RecordKey, RecordKind, RecordRef};
pub use scan::{scan, BadPart, BadReason, NewerFormat, Scan};

use std::path::PathBuf;
use std::time::Duration;

/// A place that makes groups of records durable: the local journal, later Redis. Driven by one writer thread.
pub trait Store: Send {
    /// What and where, for logs (`journal /var/lib/parkd/journal`).
    fn describe(&self) -> String;
    /// Makes `groups` durable, in order: when this returns `Ok`, every record survives a crash. Each group is
    /// atomic (after a crash during the commit, a group is there whole or not at all); groups submitted before
    /// it are there whenever it is.
    fn commit(&mut self, groups: Vec<Vec<Record>>) -> Result<(), StoreError>;
    /// Like [`commit`](Self::commit) for groups nobody waits on: the store may hand them to the OS without making
    /// them durable yet (the local journal appends them without `fdatasync`), in order with every other group.
    /// The next [`commit`](Self::commit) or [`sync`](Self::sync) makes them durable. The default is a full commit.
    fn commit_lazy(&mut self, groups: Vec<Vec<Record>>) -> Result<(), StoreError> {
        self.commit(groups)
    }
    /// Makes every group written by [`commit_lazy`](Self::commit_lazy) durable.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Housekeeping between groups, run when no waiter is blocked on it (the local journal compacts here).
    fn maintain(&mut self) -> Result<Option<Compacted>, StoreError>;
}

/// Why a store could not make records durable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// A compaction that ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compacted {
    pub live_records: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub took: Duration,
}

/// What opening a store found: the live records and how the file was.
#[derive(Debug)]
pub struct Restored {
    pub live: LiveSet,
    pub report: RecoveryReport,
}

/// How the journal was found at startup (logged by the io layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub file: PathBuf,
    /// Intact records read (puts and deletes, before replay).
    pub records_read: usize,
    /// The groups (frames) they came in.
    pub groups_read: usize,
    /// The damaged or torn part, if any, and where it was copied.
    pub set_aside: Option<SetAside>,
    /// A compaction run at open because the file had grown past the policy.
    pub compacted: Option<Compacted>,
}

/// A bad part of the journal, copied out and cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    pub bad: BadPart,
    /// `journal.corrupt-<n>`: the bad bytes, as they were.
    pub copy: PathBuf,
}
