//! Crash safety of the journal as a whole (writer thread, group commit, compaction, recovery): a child process —
//! this test binary, re-run on the ignored test [`crash_child`] — writes as fast as it can through the real
//! writer and prints `ACK <token>` for each group once it is reported durable; the parent kills it with SIGKILL
//! at a random moment (mid-write, mid-sync or mid-compaction: the child does nothing else), reopens the journal
//! and checks that every acknowledged record is there with its value. Three rounds on the same directory, so
//! each child also starts from the journal its killed predecessor left.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::io::journal_file::LocalJournal;
use crate::io::journal_writer::{JournalWriter, WriterConfig};
use crate::journal::{CompactionPolicy, Durable, JournalToken, Record, RecordKey, RecordKind};

const ENV_DIR: &str = "PARKD_JOURNAL_CRASH_DIR";
const ENV_ROUND: &str = "PARKD_JOURNAL_CRASH_ROUND";
/// Small, so the child compacts every few hundred milliseconds and some kills land in a compaction.
const POLICY: CompactionPolicy = CompactionPolicy { ratio: 2, floor_bytes: 64 << 10 };

/// Keys per round: groups overwrite and delete them over and over, so the journal compacts as it goes.
const KEYS: u64 = 500;

fn key(round: u32, i: u64) -> RecordKey {
    RecordKey::new(RecordKind::PARKED_CALL, format!("r{round}-{}", i % KEYS))
}

/// Each group's value names the group, so a restored value tells which write it came from.
fn value(round: u32, i: u64) -> Vec<u8> {
    format!("round {round} group {i};").repeat(1 + (i % 13) as usize).into_bytes()
}

/// Group `i`: a put of key `i % KEYS`; every fourth group also deletes the key of group `i - 2` and puts the next
/// key, so groups of one to three records are all or nothing.
fn group(round: u32, i: u64) -> Vec<Record> {
    let mut g = vec![Record::put(key(round, i), value(round, i))];
    if i % 4 == 3 {
        g.push(Record::delete(key(round, i - 2)));
        g.push(Record::put(key(round, i + 1), value(round, i)));
    }
    g
}

#[test]
#[ignore = "the child process of every_acknowledged_record_survives_kill_9, which runs it"]
fn crash_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else { return };
    let round: u32 = std::env::var(ENV_ROUND).ok().and_then(|r| r.parse().ok()).expect("round");
    let (journal, _) = LocalJournal::open(Path::new(&dir), POLICY).expect("open the journal");
    let (tx, rx) = channel::<Durable>();
    let writer = JournalWriter::spawn(journal, WriterConfig::default(), move |d| {
        let _ = tx.send(d);
    })
    .expect("spawn the writer");
    let mut out = std::io::stdout().lock();
    // libtest has printed "test <name> ... " without a newline: end that line so the first ACK has its own.
    writeln!(out).expect("stdout");
    let (mut next, mut outstanding, mut compactions) = (0u64, 0usize, 0);
    // Stops by itself should the parent never kill it.
    let give_up = Instant::now() + Duration::from_secs(30);
    while Instant::now() < give_up {
        while outstanding < 64 {
            writer.submit(group(round, next), JournalToken(next)).expect("submit");
            next += 1;
            outstanding += 1;
        }
        let d = rx.recv().expect("the writer reports");
        assert!(d.result.is_ok(), "commit failed: {:?}", d.result);
        for t in &d.tokens {
            writeln!(out, "ACK {}", t.0).expect("stdout");
        }
        outstanding -= d.tokens.len();
        let c = writer.stats().compactions.load(std::sync::atomic::Ordering::Relaxed);
        if c != compactions {
            compactions = c;
            writeln!(out, "COMPACTIONS {c}").expect("stdout");
        }
        out.flush().expect("stdout");
    }
}

/// What one round's child acknowledged, read from its stdout until it died.
struct Round {
    acked: BTreeSet<u64>,
    compactions: u64,
}

fn run_child(dir: &Path, round: u32, kill_after: Duration) -> Round {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["io::journal_crash_tests::crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ENV_DIR, dir)
        .env(ENV_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        // Only whole lines count: a line cut by the kill was never acknowledged to anyone.
        while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if line.ends_with(b"\n") && tx.send(String::from_utf8_lossy(&line).trim().to_string()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let mut acked = BTreeSet::new();
    let mut compactions = 0;
    let mut take = |l: String| {
        if let Some(t) = l.strip_prefix("ACK ") {
            acked.insert(t.parse::<u64>().unwrap());
        } else if let Some(c) = l.strip_prefix("COMPACTIONS ") {
            compactions = c.parse().unwrap();
        }
    };
    // Let it get going (at least 200 groups acknowledged), then let it run on for `kill_after`.
    let started = Instant::now();
    let mut seen = 0;
    while seen < 200 {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                seen += usize::from(l.starts_with("ACK "));
                take(l);
            }
            Err(RecvTimeoutError::Timeout) if started.elapsed() < Duration::from_secs(20) => {}
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("the child did not get going: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "killed, not exited: {status:?}");
    reader.join().unwrap();
    for l in rx.try_iter() {
        take(l);
    }
    Round { acked, compactions }
}

/// Checks round `round`'s keys in the restored journal: they must be exactly the state after groups `0..=b` for
/// some `b` at or after the last acknowledged group (acknowledgements come in order, so they are a prefix): every
/// acknowledged change is there, and nothing after a lost change is. Returns `b - last acknowledged`: groups that
/// were durable but not yet acknowledged when the kill came.
fn check(restored: &crate::journal::LiveSet, round: u32, acked: &BTreeSet<u64>) -> u64 {
    let last = acked.last().copied().expect("something was acknowledged");
    assert_eq!(acked.len() as u64, last + 1, "round {round}: acknowledgements are a prefix 0..={last}");
    let prefix = format!("r{round}-");
    let got: Vec<(&str, &[u8])> =
        restored.of_kind(RecordKind::PARKED_CALL).filter(|(k, _)| k.starts_with(&prefix)).collect();
    let mut expect = crate::journal::LiveSet::replay((0..=last).flat_map(|i| group(round, i)));
    // The child has at most 64 groups in flight: the durable state is within that of the acknowledged one.
    for b in last..=last + 64 {
        if b > last {
            for r in group(round, b) {
                expect.apply(r);
            }
        }
        let want: Vec<(&str, &[u8])> = expect.of_kind(RecordKind::PARKED_CALL).collect();
        if want == got {
            return b - last;
        }
    }
    panic!("round {round}: the restored records are not the state after any group from the acknowledged {last} on");
}

#[test]
fn every_acknowledged_record_survives_kill_9() {
    let dir = std::env::temp_dir().join(format!("parkd-journal-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut rng = rand::thread_rng();
    let mut rounds = Vec::new();
    let mut torn = 0;
    for round in 0..3u32 {
        let r = run_child(&dir, round, Duration::from_millis(rng.gen_range(50..400)));
        let (_journal, restored) = LocalJournal::open(&dir, POLICY).expect("reopen after kill -9");
        // kill -9 can cut a write short (the kernel stops copying at a fatal signal): only ever at the end.
        if let Some(s) = &restored.report.set_aside {
            assert!(s.bad.is_torn_tail(), "round {round}: only a torn tail, never damage: {s:?}");
            torn += 1;
        }
        for (earlier, (acked, extra)) in rounds.iter().enumerate() {
            let again = check(&restored.live, earlier as u32, acked);
            assert_eq!(again, *extra, "round {earlier}'s records are as the restart after it found them");
        }
        let extra = check(&restored.live, round, &r.acked);
        eprintln!(
            "round {round}: {} groups acknowledged, {} compactions, {} live records restored, {extra} durable but \
             not yet acknowledged",
            r.acked.len(),
            r.compactions,
            restored.live.len()
        );
        assert!(r.acked.len() >= 200);
        rounds.push((r.acked, extra));
    }
    eprintln!("{torn} of 3 kills cut a write short (set aside, never acknowledged)");
    let _ = std::fs::remove_dir_all(&dir);
}
