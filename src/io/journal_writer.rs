//! The journal's writer thread: group commit for any [`Store`].
//!
//! The engine submits groups of records with a token ([`JournalWriter::submit`], never blocks). One dedicated
//! thread takes everything queued, commits it with one [`Store::commit`] (one append + one `fdatasync` for the
//! local journal), then reports every token of that commit in one [`Durable`] through the completion hook, and
//! only then runs the store's housekeeping (compaction), so no waiter pays for it. There is no timer: while one
//! sync runs, the next submissions queue up and become the next group, so an idle server syncs each park at
//! once and a busy one syncs about once per sync time, whatever the rate.
//!
//! The hook runs on the writer thread and must not block: the SIP driver's hook sends the `Durable` to a tokio
//! channel that its `select!` waits on (see [`crate::journal`] for the whole handshake).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::journal::{check_size, Durable, JournalToken, Record, Store};

/// How the writer groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// The most submissions one commit takes. 1 turns group commit off (one sync per submission: the benchmark's
    /// baseline).
    pub max_group: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { max_group: 4096 }
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
    /// Commits (syncs) done, failed ones included.
    pub commits: AtomicU64,
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
}

/// The handle to the writer thread. Dropping it (or [`shutdown`](Self::shutdown)) commits what is queued,
/// then ends the thread and closes the store.
pub struct JournalWriter {
    tx: Option<Sender<Submission>>,
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
        let (tx, rx) = channel();
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("parkd-journal".into())
            .spawn(move || run(store, cfg, rx, on_durable, &thread_stats))?;
        Ok(JournalWriter { tx: Some(tx), thread: Some(thread), stats })
    }

    /// Queues a group (all or nothing after a crash); its token, if it has one, comes back through `on_durable`
    /// once the group is durable (or failed). A group without a token (nothing waits on it: a hang-up's delete,
    /// a CSeq bump) is committed in the same order and not reported.
    pub fn submit(&self, records: Vec<Record>, token: impl Into<Option<JournalToken>>) -> Result<(), SubmitError> {
        check_size(&records)?;
        let tx = self.tx.as_ref().ok_or(SubmitError::Stopped)?;
        tx.send(Submission { records, token: token.into() }).map_err(|_| SubmitError::Stopped)
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
        self.tx = None;
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

fn run<S: Store, F: FnMut(Durable)>(
    mut store: S,
    cfg: WriterConfig,
    rx: Receiver<Submission>,
    mut on_durable: F,
    stats: &WriterStats,
) {
    let max_group = cfg.max_group.max(1);
    let mut group: Vec<Submission> = Vec::new();
    // `recv` fails only when every sender is gone and the queue is empty: all submissions are committed first.
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(s) => group.push(s),
                Err(_) => break,
            }
        }
        let tokens: Vec<JournalToken> = group.iter().filter_map(|s| s.token).collect();
        let submissions = group.len();
        let groups: Vec<Vec<Record>> = group.drain(..).map(|s| s.records).collect();
        let n = groups.iter().map(Vec::len).sum::<usize>() as u64;
        let result = store.commit(groups).map_err(Arc::new);
        stats.commits.fetch_add(1, Ordering::Relaxed);
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let w = JournalWriter::spawn(store, WriterConfig { max_group }, move |d| tx.send(d).unwrap()).unwrap();
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
        let w = JournalWriter::spawn(store, WriterConfig { max_group: 1 }, move |d| tx.send(d).unwrap()).unwrap();
        w.submit(vec![rec(1)], None).unwrap();
        w.submit(vec![rec(2), rec(3)], JournalToken(7)).unwrap();
        w.submit(vec![rec(4)], None).unwrap();
        w.shutdown();
        let done: Vec<Durable> = rx.iter().collect();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].tokens, [JournalToken(7)]);
        assert_eq!(*commits.lock().unwrap(), [1, 2, 1], "every group committed, in order");
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
