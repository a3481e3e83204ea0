//! The journal's writer thread: group commit for any [`Store`].
//!
//! The engine submits groups of records with a token ([`JournalWriter::submit`], never blocks). One dedicated
//! thread takes everything queued, commits it with one [`Store::commit`] (one append + one `fdatasync` for the
//! local journal), then reports every token of that commit in one [`Durable`] through the completion hook, and
//! only then runs the store's housekeeping (compaction), so no waiter pays for it. While one sync runs, the next
//! submissions queue up and become the next group, so an idle server syncs each park at once and a busy one syncs
//! about once per sync time, whatever the rate.
//!
//! **Lazy groups.** Only some groups have someone waiting for them (a park's `200 OK`); a park's ACK, a retrieve's
//! bridge and a hang-up's deletes have a token-less group. Submitting one does not wake the thread: it waits in
//! the queue for the next group that has a waiter and is committed with it (one `write`, one `fdatasync`), or, if
//! none comes, it is appended after [`WriterConfig::lazy_write`] without its own sync ([`Store::commit_lazy`]: in
//! the page cache, so it survives parkd being killed) and synced after [`WriterConfig::lazy_sync`]
//! ([`Store::sync`]). Order is unchanged: a synced group makes every group before it durable too. So a cycle
//! costs one hand-off to this thread and one `fdatasync` (its park's) instead of one per group; a token-less group
//! survives `kill -9` once `lazy_write` has passed and a power loss once `lazy_sync` has, at the latest.
//!
//! The hook runs on the writer thread and must not block: the SIP driver's hook sends the `Durable` to a tokio
//! channel that its `select!` waits on (see [`crate::journal`] for the whole handshake).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::journal::{check_size, Durable, JournalToken, Record, Store};

/// How the writer groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// The most submissions one commit takes. 1 turns group commit off (one sync per submission: the benchmark's
    /// baseline).
    pub max_group: usize,
    /// How long a token-less group may wait in the queue for a group with a waiter to ride with before it is
    /// appended on its own (without a sync). Zero: at once.
    pub lazy_write: Duration,
    /// How long a token-less group may stay appended but not synced (durable against a power loss only at the
    /// next commit with a waiter, or after this long). Zero: every commit syncs.
    pub lazy_sync: Duration,
}

impl WriterConfig {
    /// The default bound on a token-less group's write (what `kill -9` may lose of it).
    pub const LAZY_WRITE: Duration = Duration::from_millis(5);
    /// The default bound on a token-less group's sync after its write.
    pub const LAZY_SYNC: Duration = Duration::from_millis(50);
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { max_group: 4096, lazy_write: Self::LAZY_WRITE, lazy_sync: Self::LAZY_SYNC }
    }
}

/// Why a group was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The writer is gone (its thread ended): nothing more can be made durable.
    #[error("the journal writer has stopped")]
    Stopped,
    /// The group does not fit one frame (a bug in the room that made it): refused here, so that no commit
    /// shared with other groups fails for it.
    #[error(transparent)]
    TooLarge(#[from] crate::journal::EncodeError),
}

/// Counters, for metrics and the benchmark.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Syncs done (group commits, and the deferred syncs of lazy appends), failed ones included.
    pub commits: AtomicU64,
    /// Appends of token-less groups without their own sync (see the module doc).
    pub lazy_commits: AtomicU64,
    /// Commits that failed.
    pub failures: AtomicU64,
    /// Submissions committed.
    pub groups: AtomicU64,
    /// Records committed.
    pub records: AtomicU64,
    /// Compactions run.
    pub compactions: AtomicU64,
}

struct Submission {
    records: Vec<Record>,
    /// `None`: nothing waits on this group (it is committed in order all the same, and not reported).
    token: Option<JournalToken>,
    /// When it was queued.
    at: Instant,
}

/// The queue between the engine and the writer thread.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

#[derive(Default)]
struct QueueState {
    items: Vec<Submission>,
    /// When the oldest token-less submission in `items` was queued.
    lazy_since: Option<Instant>,
    /// The handle is gone: commit what is queued and end.
    closed: bool,
    /// The writer thread sleeps: `Some(None)` until woken, `Some(Some(t))` until `t` at the latest. `None`: awake
    /// (it looks at the queue before it sleeps again).
    asleep: Option<Option<Instant>>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic on the writer thread while holding the lock leaves plain data behind: go on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle to the writer thread. Dropping it (or [`shutdown`](Self::shutdown)) commits what is queued,
/// then ends the thread and closes the store.
pub struct JournalWriter {
    queue: Arc<Queue>,
    lazy_write: Duration,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
}

impl JournalWriter {
    /// Starts the thread (`parkd-journal`) that owns `store`. `on_durable` is called on that thread after each
    /// commit.
    pub fn spawn<S, F>(store: S, cfg: WriterConfig, on_durable: F) -> std::io::Result<JournalWriter>
    where
        S: Store + 'static,
        F: FnMut(Durable) + Send + 'static,
    {
        Self::spawn_counting(store, cfg, Arc::default(), on_durable)
    }

    /// As [`spawn`](Self::spawn), counting into `stats` (which several writers may share: one `/metrics`
    /// family for the journals of every SIP shard).
    pub fn spawn_counting<S, F>(store: S, cfg: WriterConfig, stats: Arc<WriterStats>, on_durable: F) -> std::io::Result<JournalWriter>
    where
        S: Store + 'static,
        F: FnMut(Durable) + Send + 'static,
    {
        let queue = Arc::new(Queue::default());
        let (thread_queue, thread_stats) = (queue.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("parkd-journal".into())
            .spawn(move || run(store, cfg, &thread_queue, on_durable, &thread_stats))?;
        Ok(JournalWriter { queue, lazy_write: cfg.lazy_write, thread: Some(thread), stats })
    }

    /// Queues a group (all or nothing after a crash); its token, if it has one, comes back through `on_durable`
    /// once the group is durable (or failed). A group without a token (nothing waits on it: a hang-up's delete,
    /// a CSeq bump) is committed in the same order and not reported; it wakes the writer thread only when the
    /// thread would otherwise miss its [`WriterConfig::lazy_write`] bound.
    pub fn submit(&self, records: Vec<Record>, token: impl Into<Option<JournalToken>>) -> Result<(), SubmitError> {
        check_size(&records)?;
        let token = token.into();
        let mut st = self.queue.lock();
        if st.closed {
            return Err(SubmitError::Stopped);
        }
        let now = Instant::now();
        if token.is_none() {
            st.lazy_since.get_or_insert(now);
        }
        st.items.push(Submission { records, token, at: now });
        let wake = match st.asleep {
            None => false,
            Some(None) => true,
            Some(Some(until)) => token.is_some() || now + self.lazy_write < until,
        };
        if wake {
            st.asleep = None;
            drop(st);
            self.queue.wake.notify_one();
        }
        Ok(())
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// The counters, shared (for `/metrics`).
    pub fn stats_handle(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    /// Commits everything queued, then stops the thread and closes the store (its lock is released).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the journal writer thread panicked");
            }
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the writer thread does next.
enum Step {
    /// Commit these submissions: with a sync, or appended only (token-less, nothing waiting).
    Commit(Vec<Submission>, bool),
    /// The deferred sync of earlier lazy appends.
    Sync,
    Exit,
}

fn run<S: Store, F: FnMut(Durable)>(mut store: S, cfg: WriterConfig, queue: &Queue, mut on_durable: F, stats: &WriterStats) {
    let max_group = cfg.max_group.max(1);
    // Set while lazy appends wait for a sync: the instant by which they must have one.
    let mut sync_by: Option<Instant> = None;
    loop {
        let step = next_step(queue, &cfg, max_group, sync_by);
        let (group, sync) = match step {
            Step::Exit => break,
            Step::Sync => {
                sync_by = None;
                deferred_sync(&mut store, stats);
                continue;
            }
            Step::Commit(group, sync) => (group, sync),
        };
        let tokens: Vec<JournalToken> = group.iter().filter_map(|s| s.token).collect();
        let submissions = group.len();
        let groups: Vec<Vec<Record>> = group.into_iter().map(|s| s.records).collect();
        let n = groups.iter().map(Vec::len).sum::<usize>() as u64;
        let result = if sync { store.commit(groups) } else { store.commit_lazy(groups) }.map_err(Arc::new);
        if sync {
            sync_by = None;
            stats.commits.fetch_add(1, Ordering::Relaxed);
        } else {
            sync_by.get_or_insert_with(|| Instant::now() + cfg.lazy_sync);
            stats.lazy_commits.fetch_add(1, Ordering::Relaxed);
        }
        match &result {
            Ok(()) => {
                stats.groups.fetch_add(submissions as u64, Ordering::Relaxed);
                stats.records.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(store = %store.describe(), error = %e, groups = submissions,
                    "journal commit failed: these changes are not durable");
            }
        }
        if !tokens.is_empty() {
            on_durable(Durable { tokens, result });
        }
        maintain(&mut store, stats);
    }
    if sync_by.is_some() {
        deferred_sync(&mut store, stats);
    }
}

/// Waits for the next thing to do: a group with a waiter (commit everything queued up to it, synced), a
/// token-less group whose `lazy_write` is up (appended), a deferred sync that is due, or the end.
fn next_step(queue: &Queue, cfg: &WriterConfig, max_group: usize, sync_by: Option<Instant>) -> Step {
    let mut st = queue.lock();
    loop {
        let now = Instant::now();
        let waiter = st.items.iter().any(|s| s.token.is_some());
        let write_by = st.lazy_since.map(|t| t + cfg.lazy_write);
        if waiter || (st.closed && !st.items.is_empty()) || write_by.is_some_and(|w| w <= now) {
            let take = st.items.len().min(max_group);
            let group: Vec<Submission> = st.items.drain(..take).collect();
            st.lazy_since = st.items.iter().find(|s| s.token.is_none()).map(|s| s.at);
            let sync = waiter || st.closed || cfg.lazy_sync.is_zero();
            return Step::Commit(group, sync);
        }
        if sync_by.is_some_and(|s| s <= now) {
            return Step::Sync;
        }
        if st.closed {
            return Step::Exit;
        }
        let until = match (write_by, sync_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        st.asleep = Some(until);
        st = match until {
            None => queue.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(u) => queue.wake.wait_timeout(st, u.saturating_duration_since(now)).unwrap_or_else(|e| e.into_inner()).0,
        };
        st.asleep = None;
    }
}

/// The sync a lazy commit was waiting for.
fn deferred_sync<S: Store>(store: &mut S, stats: &WriterStats) {
    stats.commits.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = store.sync() {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(store = %store.describe(), error = %e, "journal sync failed: the last changes are not durable");
    }
    // A failed sync leaves the store broken: heal it now (rewrite the live set), not only at the next commit.
    maintain(store, stats);
}

fn maintain<S: Store>(store: &mut S, stats: &WriterStats) {
    match store.maintain() {
        Ok(Some(c)) => {
            stats.compactions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(store = %store.describe(), live = c.live_records, bytes_before = c.bytes_before,
                bytes_after = c.bytes_after, took_ms = c.took.as_secs_f64() * 1e3, "journal compacted");
        }
        Ok(None) => {}
        Err(e) => tracing::error!(store = %store.describe(), error = %e, "journal compaction failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use crate::journal::{Compacted, RecordKey, RecordKind, StoreError};
    use std::sync::Mutex;
    use std::time::Duration;

    /// A store that records each commit's size, takes `delay` per commit, and fails commits whose number is in
    /// `fail`.
    struct Fake {
        commits: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
        fail: Vec<usize>,
    }

    impl Store for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        fn commit(&mut self, groups: Vec<Vec<Record>>) -> Result<(), StoreError> {
            std::thread::sleep(self.delay);
            let mut c = self.commits.lock().unwrap();
            c.push(groups.iter().map(Vec::len).sum());
            if self.fail.contains(&(c.len() - 1)) {
                let source = std::io::Error::other("disk full");
                return Err(StoreError::Io { op: "append to", path: "fake".into(), source });
            }
            Ok(())
        }
        fn maintain(&mut self) -> Result<Option<Compacted>, StoreError> {
            Ok(None)
        }
    }

    fn rec(i: u64) -> Record {
        Record::put(RecordKey::new(RecordKind::PARKED_CALL, i.to_string()), vec![1; 10])
    }

    fn run_writer(max_group: usize, n: u64, fail: Vec<usize>) -> (Vec<Durable>, Vec<usize>) {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let store = Fake { commits: commits.clone(), delay: Duration::from_millis(2), fail };
        let (tx, rx) = channel();
        let w = JournalWriter::spawn(store, WriterConfig { max_group, ..Default::default() }, move |d| tx.send(d).unwrap()).unwrap();
        for i in 0..n {
            w.submit(vec![rec(i), rec(i + 1000)], JournalToken(i)).unwrap();
        }
        w.shutdown();
        let done: Vec<Durable> = rx.iter().collect();
        let c = commits.lock().unwrap().clone();
        (done, c)
    }

    #[test]
    fn submissions_queued_during_a_sync_share_the_next_one_and_every_token_comes_back_once_in_order() {
        let (done, commits) = run_writer(4096, 200, vec![]);
        let tokens: Vec<u64> = done.iter().flat_map(|d| d.tokens.iter().map(|t| t.0)).collect();
        assert_eq!(tokens, (0..200).collect::<Vec<_>>());
        assert!(done.iter().all(|d| d.result.is_ok()));
        assert_eq!(commits.iter().sum::<usize>(), 400, "every record committed");
        assert!(commits.len() < 50, "grouped: {} commits for 200 submissions", commits.len());
        assert_eq!(done.len(), commits.len(), "one report per commit");
    }

    #[test]
    fn groups_without_a_token_are_committed_in_order_and_not_reported() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let store = Fake { commits: commits.clone(), delay: Duration::ZERO, fail: vec![] };
        let (tx, rx) = channel();
        let w = JournalWriter::spawn(store, WriterConfig { max_group: 1, ..Default::default() }, move |d| tx.send(d).unwrap()).unwrap();
        w.submit(vec![rec(1)], None).unwrap();
        w.submit(vec![rec(2), rec(3)], JournalToken(7)).unwrap();
        w.submit(vec![rec(4)], None).unwrap();
        w.shutdown();
        let done: Vec<Durable> = rx.iter().collect();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].tokens, [JournalToken(7)]);
        assert_eq!(*commits.lock().unwrap(), [1, 2, 1], "every group committed, in order");
    }

    /// A store that logs what the writer asked of it: `C<n>` a synced commit of n records, `L<n>` a lazy one,
    /// `S` a deferred sync.
    struct Logged(Arc<Mutex<Vec<String>>>);

    impl Store for Logged {
        fn describe(&self) -> String {
            "logged".into()
        }
        fn commit(&mut self, groups: Vec<Vec<Record>>) -> Result<(), StoreError> {
            self.0.lock().unwrap().push(format!("C{}", groups.iter().map(Vec::len).sum::<usize>()));
            Ok(())
        }
        fn commit_lazy(&mut self, groups: Vec<Vec<Record>>) -> Result<(), StoreError> {
            self.0.lock().unwrap().push(format!("L{}", groups.iter().map(Vec::len).sum::<usize>()));
            Ok(())
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            self.0.lock().unwrap().push("S".into());
            Ok(())
        }
        fn maintain(&mut self) -> Result<Option<Compacted>, StoreError> {
            Ok(None)
        }
    }

    fn wait_for(log: &Mutex<Vec<String>>, len: usize) -> Vec<String> {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            let l = log.lock().unwrap().clone();
            if l.len() >= len || Instant::now() > give_up {
                return l;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn token_less_groups_ride_with_the_next_waiter_or_are_appended_then_synced_by_the_timers() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let cfg = WriterConfig { max_group: 4096, lazy_write: Duration::from_millis(100), lazy_sync: Duration::from_millis(300) };
        let (tx, rx) = std::sync::mpsc::channel();
        let w = JournalWriter::spawn(Logged(log.clone()), cfg, move |d| tx.send(d).unwrap()).unwrap();
        // A token-less group, then one with a waiter: one synced commit of both, reported.
        w.submit(vec![rec(1)], None).unwrap();
        w.submit(vec![rec(2), rec(3)], JournalToken(9)).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().tokens, [JournalToken(9)]);
        assert_eq!(wait_for(&log, 1), ["C3"]);
        // Nothing more for it: no timer is pending after a synced commit.
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(*log.lock().unwrap(), ["C3"]);
        // A token-less group alone: appended after lazy_write (not sooner), synced lazy_sync after that.
        let t = Instant::now();
        w.submit(vec![rec(4)], None).unwrap();
        assert_eq!(wait_for(&log, 2), ["C3", "L1"]);
        assert!(t.elapsed() >= Duration::from_millis(90), "appended after {:?}", t.elapsed());
        assert_eq!(wait_for(&log, 3), ["C3", "L1", "S"]);
        assert!(t.elapsed() >= Duration::from_millis(380), "synced after {:?}", t.elapsed());
        // One more, then shutdown: committed and synced on the way out.
        w.submit(vec![rec(5)], None).unwrap();
        w.shutdown();
        assert_eq!(*log.lock().unwrap(), ["C3", "L1", "S", "C1"]);
        assert!(rx.try_recv().is_err(), "token-less groups are not reported");
    }

    #[test]
    fn with_lazy_sync_zero_every_commit_syncs() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let cfg = WriterConfig { max_group: 4096, lazy_write: Duration::ZERO, lazy_sync: Duration::ZERO };
        let w = JournalWriter::spawn(Logged(log.clone()), cfg, |_| {}).unwrap();
        w.submit(vec![rec(1)], None).unwrap();
        assert_eq!(wait_for(&log, 1), ["C1"]);
        w.shutdown();
        assert_eq!(*log.lock().unwrap(), ["C1"]);
    }

    #[test]
    fn without_group_commit_each_submission_is_its_own_sync() {
        let (done, commits) = run_writer(1, 20, vec![]);
        assert_eq!(commits, vec![2; 20]);
        assert_eq!(done.len(), 20);
    }

    #[test]
    fn a_failed_commit_reports_its_tokens_as_failed_and_the_writer_goes_on() {
        let (done, _) = run_writer(1, 5, vec![1, 3]);
        let results: Vec<(u64, bool)> = done.iter().map(|d| (d.tokens[0].0, d.result.is_ok())).collect();
        assert_eq!(results, [(0, true), (1, false), (2, true), (3, false), (4, true)]);
        let e = done[1].result.as_ref().unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
    }

    #[test]
    fn a_too_large_group_and_a_stopped_writer_are_refused_at_submit() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let store = Fake { commits, delay: Duration::ZERO, fail: vec![] };
        let mut w = JournalWriter::spawn(store, WriterConfig::default(), |_| {}).unwrap();
        let big = Record::put(RecordKey::new(RecordKind::PARKED_CALL, "big"), vec![0; 2 << 20]);
        assert!(matches!(w.submit(vec![rec(1), big], JournalToken(0)), Err(SubmitError::TooLarge(_))));
        w.stop();
        assert!(matches!(w.submit(vec![rec(1)], JournalToken(1)), Err(SubmitError::Stopped)));
    }
}
