//! The recovery scan: a journal file's bytes in, its intact records and the first bad part out (pure).
//!
//! The scan stops at the first frame that is not a good record and reports everything from there to the end as
//! one bad part. It does not skip over damage to read records beyond it: once one frame is lost, applying later
//! ones could restore a state that never existed (a call whose `Delete` was in the lost frame would come back as
//! a ghost, recalled to a parker who already has it), and a damaged length makes every later frame boundary a
//! guess. What lies beyond is not thrown away either: the io layer copies the bad part to `journal.corrupt-<n>`
//! and the scan counts how many intact-looking frames it holds ([`BadPart::intact_after`]) so the log can say what
//! was set aside. A write cut short leaves a short tail, reported as [`FrameError::Truncated`]: power loss or a
//! kernel crash before the sync, and even `kill -9`, since the kernel copies a large `write` page by page and
//! stops at a fatal signal (the crash test sees it). Such a tail was never acknowledged: the sync comes after the
//! write. A frame is one group, so a cut never restores part of a group.

use super::record::{decode, decode_header, is_intact_frame, FrameError, HeaderError, Record, HEADER_LEN};

/// What a journal file holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// The records of the intact frames, in the order they were written.
    pub records: Vec<Record>,
    /// Intact frames (groups) read.
    pub groups: usize,
    /// Bytes at the start of the file that are the header and intact records: where the next append goes. 0 for
    /// an empty file, or one whose header is bad (a new header is needed).
    pub good_len: usize,
    /// The first bad frame and everything after it, if any.
    pub bad: Option<BadPart>,
}

/// The part of a file that is set aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPart {
    /// Where it starts (the first byte that is not part of an intact record).
    pub offset: usize,
    /// Its length: from `offset` to the end of the file.
    pub len: usize,
    pub reason: BadReason,
    /// Frames with a good length and checksum found after `offset` (groups lost with the bad part).
    pub intact_after: usize,
}

impl BadPart {
    /// A write cut short at the end of the file (a crash), as opposed to damage in what was written.
    pub fn is_torn_tail(&self) -> bool {
        matches!(self.reason, BadReason::Frame(FrameError::Truncated { .. })) && self.intact_after == 0
    }
}

/// Why the bad part is bad.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadReason {
    #[error("file header: {0}")]
    Header(HeaderError),
    #[error("record: {0}")]
    Frame(FrameError),
}

/// A journal written by a newer parkd (its format version): not damaged, so not set aside; parkd refuses to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewerFormat(pub u32);

/// Reads a whole journal file.
pub fn scan(buf: &[u8]) -> Result<Scan, NewerFormat> {
    if buf.is_empty() {
        return Ok(Scan { records: Vec::new(), groups: 0, good_len: 0, bad: None });
    }
    match decode_header(buf) {
        Ok(()) => {}
        Err(HeaderError::Newer(v)) => return Err(NewerFormat(v)),
        Err(e) => {
            let bad = BadPart { offset: 0, len: buf.len(), reason: BadReason::Header(e), intact_after: 0 };
            let bad = BadPart { intact_after: count_intact(buf, 0), ..bad };
            return Ok(Scan { records: Vec::new(), groups: 0, good_len: 0, bad: Some(bad) });
        }
    }
    let mut records = Vec::new();
    let mut groups = 0;
    let mut at = HEADER_LEN;
    while at < buf.len() {
        match decode(&buf[at..]) {
            Ok((group, n)) => {
                records.extend(group);
                groups += 1;
                at += n;
            }
            Err(e) => {
                let bad = BadPart {
                    offset: at,
                    len: buf.len() - at,
                    reason: BadReason::Frame(e),
                    intact_after: count_intact(buf, at + 1),
                };
                return Ok(Scan { records, groups, good_len: at, bad: Some(bad) });
            }
        }
    }
    Ok(Scan { records, groups, good_len: at, bad: None })
}

/// Intact-looking frames from `from` on, found by trying every byte offset (a damaged length loses the frame
/// boundaries). A random 8 bytes pass the length and checksum tests with odds below 2^-32.
fn count_intact(buf: &[u8], from: usize) -> usize {
    let mut n = 0;
    let mut at = from;
    while at + super::record::FRAME_HEADER_LEN < buf.len() {
        match is_intact_frame(&buf[at..]) {
            Some(len) => {
                n += 1;
                at += len;
            }
            None => at += 1,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::super::record::{encode, encode_header, RecordKey, RecordKind, RecordRef};
    use super::*;

    fn key(i: usize) -> RecordKey {
        RecordKey::new(RecordKind::PARKED_CALL, format!("call-{i}"))
    }

    /// A file of `n` one-put frames and a last frame of two records (a put and a delete); returns it, the frames
    /// and each frame's start.
    fn file(n: usize) -> (Vec<u8>, Vec<Vec<Record>>, Vec<usize>) {
        let mut buf = Vec::new();
        encode_header(&mut buf);
        let mut frames: Vec<Vec<Record>> = (0..n).map(|i| vec![Record::put(key(i), vec![i as u8; 20 + i])]).collect();
        frames.push(vec![Record::put(key(n), b"last".to_vec()), Record::delete(key(0))]);
        let mut starts = Vec::new();
        for f in &frames {
            starts.push(buf.len());
            let refs: Vec<RecordRef<'_>> = f.iter().map(Record::as_ref).collect();
            encode(&refs, &mut buf).unwrap();
        }
        (buf, frames, starts)
    }

    fn records(frames: &[Vec<Record>]) -> Vec<Record> {
        frames.concat()
    }

    #[test]
    fn an_intact_file_is_read_whole() {
        let (buf, frames, _) = file(5);
        let want = Scan { records: records(&frames), groups: 6, good_len: buf.len(), bad: None };
        assert_eq!(scan(&buf).unwrap(), want);
        assert_eq!(scan(&[]).unwrap(), Scan { records: vec![], groups: 0, good_len: 0, bad: None }, "a new file");
        let mut header = Vec::new();
        encode_header(&mut header);
        assert_eq!(scan(&header).unwrap(), Scan { records: vec![], groups: 0, good_len: HEADER_LEN, bad: None });
    }

    #[test]
    fn a_torn_tail_at_every_byte_of_the_last_group_keeps_all_before_it_and_none_of_it() {
        let (buf, frames, starts) = file(4);
        let last = *starts.last().unwrap();
        for cut in last + 1..buf.len() {
            let s = scan(&buf[..cut]).unwrap();
            assert_eq!(s.records, records(&frames[..4]), "cut at {cut}: the last group is all or nothing");
            assert_eq!((s.groups, s.good_len), (4, last));
            let bad = s.bad.unwrap();
            assert_eq!((bad.offset, bad.len), (last, cut - last));
            assert!(bad.is_torn_tail(), "cut at {cut}: {:?}", bad.reason);
        }
        // Cut exactly at a frame boundary: nothing is bad.
        let s = scan(&buf[..last]).unwrap();
        assert_eq!((s.records.len(), s.good_len, s.bad), (4, last, None));
    }

    #[test]
    fn a_corrupt_byte_in_the_middle_stops_the_scan_and_counts_what_follows() {
        let (buf, frames, starts) = file(6);
        // Damage the third frame's body, then its length.
        for (at, what) in [(starts[2] + 12, "body"), (starts[2] + 1, "length")] {
            let mut b = buf.clone();
            b[at] ^= 0x55;
            let s = scan(&b).unwrap();
            assert_eq!(s.records, records(&frames[..2]), "{what}");
            assert_eq!(s.good_len, starts[2]);
            let bad = s.bad.unwrap();
            assert_eq!((bad.offset, bad.len), (starts[2], buf.len() - starts[2]));
            assert!(!bad.is_torn_tail());
            assert_eq!(bad.intact_after, frames.len() - 3, "{what}: the groups lost with the bad part");
            // A damaged length may point past the end of the file: it reads as truncated, but the intact frames
            // after it tell it from a torn tail.
            assert!(matches!(
                bad.reason,
                BadReason::Frame(FrameError::Checksum { .. } | FrameError::BadLength(_) | FrameError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn a_bad_header_sets_the_whole_file_aside_and_a_newer_one_is_refused() {
        let (buf, frames, _) = file(2);
        let mut b = buf.clone();
        b[3] = b'x';
        let s = scan(&b).unwrap();
        assert_eq!((s.records.len(), s.good_len), (0, 0));
        let bad = s.bad.unwrap();
        assert_eq!((bad.offset, bad.len, bad.intact_after), (0, buf.len(), frames.len()));
        assert_eq!(bad.reason, BadReason::Header(HeaderError::NotAJournal));
        let s = scan(&buf[..7]).unwrap();
        assert_eq!(s.bad.unwrap().reason, BadReason::Header(HeaderError::Truncated(7)));
        let mut newer = b"PARKDJNL".to_vec();
        newer.extend_from_slice(&7u32.to_le_bytes());
        let crc = crc32fast::hash(&newer);
        newer.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(scan(&newer), Err(NewerFormat(7)));
    }

    #[test]
    fn garbage_after_good_records_is_set_aside() {
        let (mut buf, frames, _) = file(3);
        let good = buf.len();
        buf.extend_from_slice(&[0u8; 4096]); // a zero-filled tail (a file extended but never written)
        let s = scan(&buf).unwrap();
        assert_eq!((s.records, s.good_len), (records(&frames), good));
        let bad = s.bad.unwrap();
        assert_eq!((bad.offset, bad.len, bad.intact_after), (good, 4096, 0));
        assert_eq!(bad.reason, BadReason::Frame(FrameError::BadLength(0)));
    }
}
