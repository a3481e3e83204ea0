//! The local journal: `<state_dir>/journal`, the embedded default [`Store`] (format and reasons in
//! [`crate::journal`]). This file does the file IO: open and recover, append + `fdatasync`, compact by
//! write-temp / sync / rename / sync-directory. What the bytes mean is decided by the pure code in
//! `crate::journal`.
//!
//! Files in the state directory:
//! * `journal` — the log (mode 0600).
//! * `journal.lock` — held with an exclusive `flock` while parkd runs: one parkd per directory.
//! * `journal.tmp` — a compaction in progress; a leftover one (crash mid-compaction) is deleted at open.
//! * `journal.corrupt-<n>` — a torn or damaged part found at open, copied out as it was, for a person to look at.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::io::http_token::{ensure_state_dir, StateError};
use crate::journal::record::{self, encode_header, RecordRef};
use crate::journal::{
    scan, CompactionPolicy, Compacted, LiveSet, NewerFormat, Record, RecoveryReport, Restored, SetAside, Store, StoreError,
};

/// The log, inside the state directory.
pub const JOURNAL_FILE: &str = "journal";
/// Locked while a parkd uses the directory.
pub const LOCK_FILE: &str = "journal.lock";
/// A compaction being written.
pub const TMP_FILE: &str = "journal.tmp";
/// Set-aside bad parts are `journal.corrupt-1`, `-2`, ...
pub const CORRUPT_PREFIX: &str = "journal.corrupt-";

/// Why the journal could not be opened (a startup error: parkd does not start without its journal).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    StateDir(#[from] StateError),
    #[error(
        "the state directory {dir} is in use by another parkd (it holds the lock on {}); give each parkd its own \
         [server] state_dir / --state-dir",
        dir.join(LOCK_FILE).display()
    )]
    InUse { dir: PathBuf },
    #[error("cannot {op} {path} in the state directory ([server] state_dir / --state-dir): {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "{file} was written by a newer parkd (journal format {version}, this one reads {}); run that version, or \
         move the file away to start with no calls",
        record::VERSION
    )]
    Newer { file: PathBuf, version: u32 },
    #[error("cannot write a fresh journal: {0}")]
    Store(#[from] StoreError),
}

/// The journal file, its live set and the lock, owned by the writer thread once open.
#[derive(Debug)]
pub struct LocalJournal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Holds the `flock`; released when dropped (or when the process dies).
    _lock: File,
    /// Bytes in `file`.
    len: u64,
    live: LiveSet,
    policy: CompactionPolicy,
    /// A write or sync failed, so what the file holds is unknown (after a failed `fsync` Linux may drop the dirty
    /// pages and report success next time): the next commit rewrites the whole live set instead of appending.
    broken: bool,
    /// The file's length when a compaction last failed: the next try waits for another `floor_bytes` (at least
    /// 1 MiB) of appends rather than rewriting the live set after every commit of a full disk.
    compact_failed_at: Option<u64>,
    /// Reused for encoding each group.
    buf: Vec<u8>,
    /// Appended by a lazy commit and not synced yet.
    unsynced: bool,
}

impl LocalJournal {
    /// Opens (or creates) `<dir>/journal`: creates `dir` mode 0700 if needed, takes the lock, reads and replays
    /// the file, sets a bad part aside, and compacts when the file has grown past `policy`.
    pub fn open(dir: &Path, policy: CompactionPolicy) -> Result<(LocalJournal, Restored), OpenError> {
        ensure_state_dir(dir)?;
        let lock = lock_dir(dir)?;
        let path = dir.join(JOURNAL_FILE);
        match fs::remove_file(dir.join(TMP_FILE)) {
            Ok(()) => tracing::info!(dir = %dir.display(), "removed an unfinished journal compaction"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(OpenError::Io { op: "remove", path: dir.join(TMP_FILE), source }),
        }
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| OpenError::Io { op, path, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("open"))?;
        make_private(&file, &path).map_err(io("chmod 600"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        let found = match scan(&bytes) {
            Ok(s) => s,
            Err(NewerFormat(version)) => return Err(OpenError::Newer { file: path, version }),
        };
        let set_aside = match &found.bad {
            Some(bad) => {
                let copy = set_aside(dir, &bytes[bad.offset..])?;
                if found.good_len > 0 {
                    file.set_len(found.good_len as u64).map_err(io("truncate"))?;
                    file.sync_data().map_err(io("sync"))?;
                }
                Some(SetAside { bad: bad.clone(), copy })
            }
            None => None,
        };
        drop(bytes);
        let (records_read, groups_read) = (found.records.len(), found.groups);
        let live = LiveSet::replay(found.records);
        file.seek(SeekFrom::Start(found.good_len as u64)).map_err(io("seek"))?;
        let mut journal = LocalJournal {
            dir: dir.to_path_buf(),
            path: path.clone(),
            file,
            _lock: lock,
            len: found.good_len as u64,
            live,
            policy,
            broken: false,
            compact_failed_at: None,
            buf: Vec::new(),
            unsynced: false,
        };
        let mut compacted = None;
        if found.good_len == 0 {
            // New, or its header was bad: write a whole file (header + what survived, i.e. nothing) atomically.
            journal.compact()?;
        } else if policy.should_compact(journal.len, journal.live.compacted_len()) {
            compacted = Some(journal.compact()?);
        }
        let report = RecoveryReport { file: path, records_read, groups_read, set_aside, compacted };
        let restored = Restored { live: journal.live.clone(), report };
        Ok((journal, restored))
    }

    /// The live records as the journal holds them (what a restart would restore, once committed).
    pub fn live(&self) -> &LiveSet {
        &self.live
    }

    /// Bytes in the journal file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encodes and appends `groups` (see [`Store::commit`]); `sync`: `fdatasync` them (and every earlier
    /// unsynced append) before returning.
    fn append(&mut self, groups: Vec<Vec<Record>>, sync: bool) -> Result<(), StoreError> {
        self.buf.clear();
        let mut refs = Vec::new();
        for g in groups.iter().filter(|g| !g.is_empty()) {
            refs.clear();
            refs.extend(g.iter().map(Record::as_ref));
            if let Err(e) = record::encode(&refs, &mut self.buf) {
                self.buf.clear();
                return Err(e.into());
            }
        }
        drop(refs);
        for r in groups.into_iter().flatten() {
            self.live.apply(r);
        }
        if self.broken {
            self.compact()?;
            return Ok(());
        }
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        let mut result = if self.buf.is_empty() { Ok(()) } else { self.file.write_all(&self.buf).map_err(io("append to", &self.path)) };
        if result.is_ok() {
            self.len += self.buf.len() as u64;
            self.unsynced |= !self.buf.is_empty();
            if sync && self.unsynced {
                result = self.file.sync_data().map_err(io("sync", &self.path));
                self.unsynced = false;
            }
        }
        if result.is_err() {
            self.broken = true;
        }
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new(); // a burst's buffer is not kept
        }
        result
    }

    /// Rewrites the journal to its live records: `journal.tmp` is written and synced, renamed over `journal`, and
    /// the directory synced. Appends continue on the new file.
    pub fn compact(&mut self) -> Result<Compacted, StoreError> {
        let started = Instant::now();
        let tmp = self.dir.join(TMP_FILE);
        let mut buf = Vec::with_capacity(self.live.compacted_len() as usize);
        encode_header(&mut buf);
        for (key, value) in self.live.iter() {
            record::encode(&[RecordRef::Put { key, value }], &mut buf)?;
        }
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        let write = || -> Result<File, StoreError> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(&buf).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("sync", &tmp))?;
            fs::rename(&tmp, &self.path).map_err(io("rename into place", &self.path))?;
            sync_dir(&self.dir).map_err(io("sync the directory", &self.dir))?;
            Ok(f)
        };
        let file = write().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        let before = self.len;
        self.file = file;
        self.len = buf.len() as u64;
        self.broken = false;
        self.unsynced = false;
        Ok(Compacted { live_records: self.live.len(), bytes_before: before, bytes_after: self.len, took: started.elapsed() })
    }
}

impl Store for LocalJournal {
    fn describe(&self) -> String {
        format!("journal {}", self.path.display())
    }

    /// Encodes each group as one frame, applies them to the live set, appends them with one `write` and syncs
    /// once (`fdatasync`; this also makes every earlier lazy append durable). After an earlier failure the whole
    /// live set is rewritten instead. An encoding error (a group above the size limit, which the writer checks at
    /// submit time) refuses the commit before anything is written or applied; after an IO error the groups stay
    /// applied to the live set, so the rewrite that heals the file includes them.
    fn commit(&mut self, groups: Vec<Vec<Record>>) -> Result<(), StoreError> {
        self.append(groups, true)
    }

    /// The same append without the `fdatasync`: the frames are in the page cache (they survive the process
    /// being killed, not a power loss) until the next [`commit`](Store::commit) or [`sync`](Store::sync).
    fn commit_lazy(&mut self, groups: Vec<Vec<Record>>) -> Result<(), StoreError> {
        self.append(groups, false)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if !self.unsynced || self.broken {
            return Ok(());
        }
        self.unsynced = false;
        self.file.sync_data().map_err(|source| {
            self.broken = true;
            StoreError::Io { op: "sync", path: self.path.clone(), source }
        })
    }

    /// Heals a broken file, else compacts when the policy says so (after a failed compaction, once the file has
    /// grown by another `floor_bytes`).
    fn maintain(&mut self) -> Result<Option<Compacted>, StoreError> {
        let backing_off = self
            .compact_failed_at
            .is_some_and(|at| self.len < at.saturating_add(self.policy.floor_bytes.max(1 << 20)));
        let due = self.policy.should_compact(self.len, self.live.compacted_len()) && !backing_off;
        if !self.broken && !due {
            return Ok(None);
        }
        match self.compact() {
            Ok(c) => {
                self.compact_failed_at = None;
                Ok(Some(c))
            }
            Err(e) => {
                self.compact_failed_at = Some(self.len);
                Err(e)
            }
        }
    }
}

/// Logs what opening the journal found: one info line, plus a warning (torn tail) or an error (damage).
pub fn log_recovery(restored: &Restored) {
    let r = &restored.report;
    tracing::info!(
        file = %r.file.display(),
        records_read = r.records_read,
        groups_read = r.groups_read,
        live = restored.live.len(),
        "journal opened"
    );
    if let Some(c) = &r.compacted {
        tracing::info!(bytes_before = c.bytes_before, bytes_after = c.bytes_after, "journal compacted at open");
    }
    if let Some(s) = &r.set_aside {
        let (offset, len, lost) = (s.bad.offset, s.bad.len, s.bad.intact_after);
        if s.bad.is_torn_tail() {
            tracing::warn!(offset, len, copy = %s.copy.display(), reason = %s.bad.reason,
                "journal ended in a write cut short (a crash): the records before it are restored, the tail set aside");
        } else {
            tracing::error!(offset, len, records_lost = lost, copy = %s.copy.display(), reason = %s.bad.reason,
                "journal damaged: the records before the damage are restored, the rest set aside");
        }
    }
}

/// The journal holds secrets (SRTP keys, issue 19): a journal file others may read (an older parkd's, a copied
/// one) is made 0600, with a warning.
fn make_private(file: &File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), mode = %format!("{mode:o}"), "the journal was readable by others (it holds SRTP keys): made 0600");
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Takes the directory's lock (`flock`, exclusive, non-blocking): held until the returned file is dropped.
pub(super) fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|source| OpenError::Io { op: "create", path: path.clone(), source })?;
    // A lock is held by an open file description, which a process being spawned (between its fork and its exec)
    // shares for a moment: a busy lock is tried again for a while before it counts as another parkd's.
    for attempt in 0.. {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::WouldBlock {
            return Err(OpenError::Io { op: "lock", path, source: e });
        }
        if attempt == 50 {
            return Err(OpenError::InUse { dir: dir.to_path_buf() });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(file)
}

/// Copies `bad` to the first free `journal.corrupt-<n>` (0600) and syncs it; returns its path.
fn set_aside(dir: &Path, bad: &[u8]) -> Result<PathBuf, OpenError> {
    for n in 1..=MAX_SET_ASIDE {
        let path = dir.join(format!("{CORRUPT_PREFIX}{n}"));
        let err = |op, source| OpenError::Io { op, path: path.clone(), source };
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut f) => {
                f.write_all(bad).map_err(|e| err("write", e))?;
                f.sync_all().map_err(|e| err("sync", e))?;
                sync_dir(dir).map_err(|e| err("sync the directory of", e))?;
                return Ok(path);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err("create", e)),
        }
    }
    let source = std::io::Error::other(format!("{MAX_SET_ASIDE} set-aside files already there; clear them out"));
    Err(OpenError::Io { op: "create", path: dir.join(format!("{CORRUPT_PREFIX}{}", MAX_SET_ASIDE + 1)), source })
}

/// How many `journal.corrupt-<n>` files may pile up before opening fails (each start that finds damage adds one).
const MAX_SET_ASIDE: u32 = 1000;

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[path = "journal_file_tests.rs"]
mod tests;
