//! The local journal against a real file system: recovery, compaction, the lock, errors.

use super::*;
use crate::journal::record::HEADER_LEN;
use crate::journal::{BadReason, RecordKey, RecordKind};
use std::os::unix::fs::PermissionsExt;

fn tempdir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("parkd-journal-test-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn key(id: &str) -> RecordKey {
    RecordKey::new(RecordKind::PARKED_CALL, id)
}

fn put(id: &str, v: &str) -> Record {
    Record::put(key(id), v.as_bytes().to_vec())
}

fn open(dir: &Path) -> (LocalJournal, Restored) {
    LocalJournal::open(dir, CompactionPolicy::default()).unwrap()
}

fn live_of(r: &Restored) -> Vec<(String, String)> {
    r.live.iter().map(|(k, v)| (k.id.clone(), String::from_utf8_lossy(v).into_owned())).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// A journal holding `n` puts (`call-i` = `value-i`), closed; returns the file's bytes and each frame's start.
fn journal_of(dir: &Path, n: usize) -> (Vec<u8>, Vec<usize>) {
    let (mut j, _) = open(dir);
    let mut starts = Vec::new();
    for i in 0..n {
        starts.push(j.len() as usize);
        j.commit(vec![vec![put(&format!("call-{i}"), &format!("value-{i}"))]]).unwrap();
    }
    drop(j);
    (fs::read(dir.join(JOURNAL_FILE)).unwrap(), starts)
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_journal_is_private_and_what_was_committed_is_restored() {
    let tmp = tempdir();
    let dir = tmp.join("state");
    let (mut j, r) = open(&dir);
    assert!(r.live.is_empty());
    assert_eq!((r.report.records_read, r.report.set_aside.clone()), (0, None));
    assert_eq!((mode(&dir), mode(&dir.join(JOURNAL_FILE))), (0o700, 0o600));
    assert_eq!(j.len(), HEADER_LEN as u64);
    j.commit(vec![vec![put("a", "1"), put("b", "1")]]).unwrap();
    j.commit(vec![vec![put("a", "2")], vec![], vec![Record::delete(key("b")), put("c", "3")]]).unwrap();
    assert_eq!(j.describe(), format!("journal {}", dir.join(JOURNAL_FILE).display()));
    drop(j);
    let (_j, r) = open(&dir);
    assert_eq!(live_of(&r), pairs(&[("a", "2"), ("c", "3")]));
    assert_eq!((r.report.records_read, r.report.groups_read), (5, 3), "one frame per group, none for an empty one");
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_journal_file_open_to_others_is_made_private() {
    let tmp = tempdir();
    let dir = tmp.join("state");
    drop(open(&dir));
    fs::set_permissions(dir.join(JOURNAL_FILE), fs::Permissions::from_mode(0o644)).unwrap();
    let (_j, _) = open(&dir);
    assert_eq!(mode(&dir.join(JOURNAL_FILE)), 0o600, "it holds SRTP keys");
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_second_parkd_on_the_same_directory_is_refused_by_name() {
    let tmp = tempdir();
    let (_held, _) = open(&tmp);
    let e = LocalJournal::open(&tmp, CompactionPolicy::default()).unwrap_err();
    assert!(matches!(e, OpenError::InUse { .. }), "{e}");
    assert!(e.to_string().contains(&tmp.display().to_string()), "{e}");
    drop(_held);
    assert!(LocalJournal::open(&tmp, CompactionPolicy::default()).is_ok(), "the lock goes with the first");
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn an_unusable_state_dir_is_an_error_naming_it() {
    let tmp = tempdir();
    let blocker = tmp.join("a-file");
    fs::write(&blocker, "x").unwrap();
    let dir = blocker.join("state"); // root ignores modes; a path under a regular file fails for everyone
    let e = LocalJournal::open(&dir, CompactionPolicy::default()).unwrap_err();
    assert!(matches!(e, OpenError::StateDir(StateError::CreateDir { .. })), "{e}");
    assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
    assert!(e.to_string().contains("state_dir"), "says which setting: {e}");
    // A state_dir that is itself a file.
    let e = LocalJournal::open(&blocker, CompactionPolicy::default()).unwrap_err();
    assert!(e.to_string().contains(&blocker.display().to_string()), "{e}");
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_torn_tail_at_every_byte_of_the_last_record_restores_the_rest_and_sets_the_tail_aside() {
    let tmp = tempdir();
    let (bytes, starts) = journal_of(&tmp.join("orig"), 4);
    let last = *starts.last().unwrap();
    for cut in last + 1..bytes.len() {
        let dir = tmp.join(format!("cut-{cut}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(JOURNAL_FILE), &bytes[..cut]).unwrap();
        let (mut j, r) = open(&dir);
        assert_eq!(live_of(&r), pairs(&[("call-0", "value-0"), ("call-1", "value-1"), ("call-2", "value-2")]));
        let s = r.report.set_aside.clone().expect("the tail is set aside");
        assert!(s.bad.is_torn_tail(), "cut {cut}: {:?}", s.bad);
        assert_eq!((s.bad.offset, s.bad.len), (last, cut - last));
        assert_eq!(s.copy, dir.join("journal.corrupt-1"));
        assert_eq!(fs::read(&s.copy).unwrap(), &bytes[last..cut], "the bad bytes, as they were");
        assert_eq!(fs::metadata(dir.join(JOURNAL_FILE)).unwrap().len(), last as u64, "cut off");
        // New records follow the intact ones, and a restart reads them all without complaint.
        j.commit(vec![vec![put("call-9", "after")]]).unwrap();
        drop(j);
        let (_j, r) = open(&dir);
        assert_eq!(r.live.len(), 4);
        assert_eq!(r.live.get(&key("call-9")), Some(&b"after"[..]));
        assert_eq!(r.report.set_aside, None);
        drop(_j);
        let _ = fs::remove_dir_all(&dir);
    }
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_damaged_byte_in_the_middle_keeps_the_records_before_it_and_sets_the_rest_aside() {
    let tmp = tempdir();
    let (mut bytes, starts) = journal_of(&tmp, 6);
    bytes[starts[2] + 10] ^= 0x01;
    fs::write(tmp.join(JOURNAL_FILE), &bytes).unwrap();
    fs::write(tmp.join("journal.corrupt-1"), "an earlier one").unwrap();
    let (_j, r) = open(&tmp);
    assert_eq!(live_of(&r), pairs(&[("call-0", "value-0"), ("call-1", "value-1")]));
    let s = r.report.set_aside.clone().unwrap();
    assert!(matches!(s.bad.reason, BadReason::Frame(record::FrameError::Checksum { .. })), "{:?}", s.bad.reason);
    assert!(!s.bad.is_torn_tail());
    assert_eq!(s.bad.intact_after, 3, "the three records after the damaged one are counted as lost");
    assert_eq!(s.copy, tmp.join("journal.corrupt-2"), "an earlier set-aside file is kept");
    assert_eq!(fs::read(&s.copy).unwrap(), &bytes[starts[2]..]);
    log_recovery(&r);
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_file_that_is_not_a_journal_is_set_aside_whole_and_a_newer_one_is_refused_untouched() {
    let tmp = tempdir();
    let junk = b"this is not a journal at all, but it is long enough to have a header".to_vec();
    fs::write(tmp.join(JOURNAL_FILE), &junk).unwrap();
    let (mut j, r) = open(&tmp);
    assert!(r.live.is_empty());
    let s = r.report.set_aside.clone().unwrap();
    assert_eq!((s.bad.offset, s.bad.len), (0, junk.len()));
    assert_eq!(fs::read(&s.copy).unwrap(), junk);
    j.commit(vec![vec![put("a", "1")]]).unwrap();
    drop(j);
    assert_eq!(live_of(&open(&tmp).1), pairs(&[("a", "1")]), "a fresh journal replaced it");

    let newer_dir = tmp.join("newer");
    fs::create_dir_all(&newer_dir).unwrap();
    let mut newer = record::MAGIC.to_vec();
    newer.extend_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&newer);
    newer.extend_from_slice(&crc.to_le_bytes());
    newer.extend_from_slice(b"records in a format from the future");
    fs::write(newer_dir.join(JOURNAL_FILE), &newer).unwrap();
    let e = LocalJournal::open(&newer_dir, CompactionPolicy::default()).unwrap_err();
    assert!(matches!(e, OpenError::Newer { version: 2, .. }), "{e}");
    assert!(e.to_string().contains(&newer_dir.join(JOURNAL_FILE).display().to_string()), "{e}");
    assert_eq!(fs::read(newer_dir.join(JOURNAL_FILE)).unwrap(), newer, "left as it was");
    assert!(!newer_dir.join("journal.corrupt-1").exists());
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn compaction_keeps_the_latest_values_drops_deletes_and_survives_a_reopen() {
    let tmp = tempdir();
    let (mut j, _) = open(&tmp);
    let other = RecordKey::new(RecordKind(4242), "from-a-newer-parkd");
    j.commit(vec![vec![Record::put(other.clone(), b"kept as is".to_vec())]]).unwrap();
    for round in 0..50 {
        let recs = (0..20).map(|i| put(&format!("call-{i:02}"), &format!("round-{round}"))).collect();
        j.commit(vec![recs]).unwrap();
    }
    j.commit(vec![(10..20).map(|i| Record::delete(key(&format!("call-{i:02}")))).collect()]).unwrap();
    let before = j.len();
    let c = j.compact().unwrap();
    assert_eq!((c.live_records, c.bytes_before, c.bytes_after), (11, before, j.live().compacted_len()));
    assert!(c.bytes_after * 10 < before, "{} -> {}", before, c.bytes_after);
    assert_eq!(fs::metadata(tmp.join(JOURNAL_FILE)).unwrap().len(), c.bytes_after);
    assert!(!tmp.join(TMP_FILE).exists());
    assert_eq!(mode(&tmp.join(JOURNAL_FILE)), 0o600);
    // Appends after a compaction land in the new file.
    j.commit(vec![vec![put("call-00", "after"), Record::delete(key("call-01"))]]).unwrap();
    drop(j);
    let (_j, r) = open(&tmp);
    assert_eq!((r.report.records_read, r.report.groups_read), (11 + 2, 11 + 1));
    assert_eq!(r.live.len(), 10);
    assert_eq!(r.live.get(&key("call-00")), Some(&b"after"[..]));
    assert_eq!(r.live.get(&key("call-01")), None);
    assert_eq!(r.live.get(&key("call-09")), Some(&b"round-49"[..]));
    assert_eq!(r.live.get(&key("call-10")), None, "deleted before the compaction");
    assert_eq!(r.live.get(&other), Some(&b"kept as is"[..]), "an unknown kind is carried through");
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn maintain_compacts_by_the_policy_and_open_compacts_a_grown_file() {
    let tmp = tempdir();
    let policy = CompactionPolicy { ratio: 2, floor_bytes: 4096 };
    let (mut j, _) = LocalJournal::open(&tmp, policy).unwrap();
    let mut compactions = 0;
    for i in 0..400 {
        j.commit(vec![vec![put("the-one-call", &format!("update {i}"))]]).unwrap();
        if j.maintain().unwrap().is_some() {
            compactions += 1;
        }
        assert!(j.len() <= 4096 + 2 * j.live().compacted_len() + 100, "bounded: {}", j.len());
    }
    assert!(compactions >= 3, "{compactions}");
    drop(j);
    // A file grown past the policy (written with a lax one) is compacted when opened.
    let (mut j, _) = LocalJournal::open(&tmp, CompactionPolicy { ratio: 2, floor_bytes: 1 << 30 }).unwrap();
    for i in 0..400 {
        j.commit(vec![vec![put("the-one-call", &format!("update {i}"))]]).unwrap();
    }
    drop(j);
    let (j, r) = LocalJournal::open(&tmp, policy).unwrap();
    let c = r.report.compacted.clone().expect("compacted at open");
    assert!(c.bytes_after < c.bytes_before);
    assert_eq!(j.len(), c.bytes_after);
    assert_eq!(live_of(&r), pairs(&[("the-one-call", "update 399")]));
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_leftover_compaction_file_is_removed_and_the_journal_used() {
    let tmp = tempdir();
    journal_of(&tmp, 2);
    fs::write(tmp.join(TMP_FILE), b"half a compaction").unwrap();
    let (_j, r) = open(&tmp);
    assert_eq!(r.live.len(), 2);
    assert!(!tmp.join(TMP_FILE).exists());
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn after_a_failed_write_the_next_commit_rewrites_everything_including_the_failed_group() {
    let tmp = tempdir();
    let (mut j, _) = open(&tmp);
    j.commit(vec![vec![put("a", "1")]]).unwrap();
    // Swap the file for a read-only descriptor of it: the next append fails with a real IO error.
    j.file = File::open(tmp.join(JOURNAL_FILE)).unwrap();
    let e = j.commit(vec![vec![put("b", "2")]]).unwrap_err();
    assert!(e.to_string().contains(&tmp.join(JOURNAL_FILE).display().to_string()), "{e}");
    assert!(j.broken);
    j.commit(vec![vec![put("c", "3")]]).unwrap();
    assert!(!j.broken, "healed by a rewrite");
    drop(j);
    let (_j, r) = open(&tmp);
    assert_eq!(live_of(&r), pairs(&[("a", "1"), ("b", "2"), ("c", "3")]));
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn an_oversized_record_refuses_its_group_and_changes_nothing() {
    let tmp = tempdir();
    let (mut j, _) = open(&tmp);
    let huge = Record::put(key("huge"), vec![0; record::MAX_BODY + 1]);
    assert!(matches!(j.commit(vec![vec![put("a", "1"), huge]]), Err(StoreError::Encode(_))));
    assert!(j.live().is_empty());
    assert_eq!(j.len(), HEADER_LEN as u64);
    assert!(!j.broken);
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_failed_compaction_leaves_the_journal_working_and_is_not_retried_after_every_commit() {
    let tmp = tempdir();
    let policy = CompactionPolicy { ratio: 2, floor_bytes: 4096 };
    let (mut j, _) = LocalJournal::open(&tmp, policy).unwrap();
    let real_dir = j.dir.clone();
    j.dir = tmp.join("gone/away"); // where `journal.tmp` cannot be created: the compaction fails
    let mut i = 0;
    let value = |i: u32| format!("update {i} {}", "x".repeat(8000)); // 1 MiB in ~130 commits
    let mut commit = |j: &mut LocalJournal| {
        i += 1;
        j.commit(vec![vec![put("one", &value(i))]]).unwrap();
    };
    while !j.policy.should_compact(j.len(), j.live().compacted_len()) {
        commit(&mut j);
    }
    assert!(j.maintain().is_err());
    let failed_at = j.len();
    commit(&mut j);
    assert!(matches!(j.maintain(), Ok(None)), "backs off");
    while j.len() < failed_at + (1 << 20) {
        commit(&mut j);
    }
    j.dir = real_dir;
    let c = j.maintain().unwrap().expect("tried again after another MiB");
    assert_eq!(c.live_records, 1);
    drop(j);
    let (_j, r) = open(&tmp);
    assert_eq!(live_of(&r), pairs(&[("one", &value(i))]));
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_lazy_commit_is_in_the_file_at_once_in_order_and_a_later_commit_or_sync_covers_it() {
    let tmp = tempdir();
    let dir = tmp.join("state");
    let (mut j, _) = open(&dir);
    j.commit(vec![vec![put("a", "1")]]).unwrap();
    j.commit_lazy(vec![vec![put("b", "2")], vec![Record::delete(key("a"))]]).unwrap();
    assert!(j.unsynced, "appended, not synced");
    // What a killed process leaves: the lazy groups are in the file (the page cache), in order.
    let found = scan(&fs::read(dir.join(JOURNAL_FILE)).unwrap()).unwrap();
    assert!(found.bad.is_none());
    let live: Vec<(String, String)> =
        LiveSet::replay(found.records).iter().map(|(k, v)| (k.id.clone(), String::from_utf8_lossy(v).into_owned())).collect();
    assert_eq!(live, pairs(&[("b", "2")]));
    j.sync().unwrap();
    assert!(!j.unsynced);
    j.commit_lazy(vec![vec![put("c", "3")]]).unwrap();
    j.commit(vec![vec![put("d", "4")]]).unwrap();
    assert!(!j.unsynced, "a synced commit covers the lazy append before it");
    drop(j);
    let (_, r) = open(&dir);
    assert_eq!(live_of(&r), pairs(&[("b", "2"), ("c", "3"), ("d", "4")]));
}
