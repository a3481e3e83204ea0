//! The live set (replayed records: each key's latest value) and when to compact (pure).

use std::collections::BTreeMap;

use super::record::{Record, RecordKey, RecordKind, FRAME_HEADER_LEN, HEADER_LEN};

/// Every key's latest value: what a replay of the journal gives and what a compaction writes. Ordered by key, so
/// a compacted file and a restore are the same from run to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveSet {
    map: BTreeMap<RecordKey, Vec<u8>>,
    /// Bytes the frames of these records take on disk (without the file header).
    bytes: u64,
}

impl LiveSet {
    pub fn new() -> LiveSet {
        LiveSet::default()
    }

    /// Replays `records` in order.
    pub fn replay(records: impl IntoIterator<Item = Record>) -> LiveSet {
        let mut live = LiveSet::new();
        for r in records {
            live.apply(r);
        }
        live
    }

    /// Applies one change: a put replaces the key's value, a delete removes the key (a delete of an absent key is
    /// a no-op, which makes replaying a record twice harmless).
    pub fn apply(&mut self, rec: Record) {
        match rec {
            Record::Put { key, value } => {
                let new = put_frame_len(&key, &value);
                if let Some(old) = self.map.get(&key) {
                    self.bytes -= put_frame_len(&key, old);
                }
                self.bytes += new;
                self.map.insert(key, value);
            }
            Record::Delete { key } => {
                if let Some(old) = self.map.remove(&key) {
                    self.bytes -= put_frame_len(&key, &old);
                }
            }
        }
    }

    pub fn get(&self, key: &RecordKey) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The size of a journal holding exactly this set (header and one put per key): what compaction writes.
    pub fn compacted_len(&self) -> u64 {
        HEADER_LEN as u64 + self.bytes
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&RecordKey, &[u8])> {
        self.map.iter().map(|(k, v)| (k, v.as_slice()))
    }

    /// The ids and values of one kind (one room's records), in id order.
    pub fn of_kind(&self, kind: RecordKind) -> impl Iterator<Item = (&str, &[u8])> {
        let from = RecordKey { kind, id: String::new() };
        self.map.range(from..).take_while(move |(k, _)| k.kind == kind).map(|(k, v)| (k.id.as_str(), v.as_slice()))
    }

    pub fn into_map(self) -> BTreeMap<RecordKey, Vec<u8>> {
        self.map
    }
}

/// The length of a frame holding only `Put { key, value }` (what compaction writes per live key): the frame
/// header, the group's count (1 byte), postcard's variant index (1 byte), the kind's varint, then id and value
/// each as a varint length and bytes.
pub fn put_frame_len(key: &RecordKey, value: &[u8]) -> u64 {
    let n = FRAME_HEADER_LEN
        + 1
        + 1
        + varint_len(u64::from(key.kind.0))
        + varint_len(key.id.len() as u64)
        + key.id.len()
        + varint_len(value.len() as u64)
        + value.len();
    n as u64
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// When the journal is rewritten to its live records: once it holds more than `ratio` times what a compacted file
/// would, plus `floor_bytes`. The floor keeps a small journal from being rewritten every few parks (a busy
/// server's log grows by ~1 KB per call's life); the ratio bounds the dead weight a restart reads to
/// `ratio - 1` times the live data, and makes the rewrite cost, amortised, at most one live-set write per
/// `ratio - 1` live-set's worth of appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    pub ratio: u64,
    pub floor_bytes: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy { ratio: 2, floor_bytes: 8 << 20 }
    }
}

impl CompactionPolicy {
    /// Whether a journal of `log_len` bytes whose live records would compact to `compacted_len` bytes should be
    /// rewritten now.
    pub fn should_compact(&self, log_len: u64, compacted_len: u64) -> bool {
        log_len > compacted_len.saturating_mul(self.ratio).saturating_add(self.floor_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::encode;
    use super::*;

    fn key(kind: RecordKind, id: &str) -> RecordKey {
        RecordKey::new(kind, id)
    }

    #[test]
    fn replay_keeps_the_latest_value_and_honours_deletes() {
        let a = key(RecordKind::PARKED_CALL, "a");
        let b = key(RecordKind::PARKED_CALL, "b");
        let d = key(RecordKind::DIALOG, "a");
        let live = LiveSet::replay([
            Record::put(a.clone(), b"1".to_vec()),
            Record::put(b.clone(), b"1".to_vec()),
            Record::put(d.clone(), b"dialog".to_vec()),
            Record::put(a.clone(), b"2".to_vec()),
            Record::delete(b.clone()),
            Record::delete(key(RecordKind::PARKED_CALL, "never-put")),
        ]);
        assert_eq!(live.get(&a), Some(&b"2"[..]));
        assert_eq!(live.get(&b), None);
        assert_eq!(live.len(), 2);
        let parked: Vec<_> = live.of_kind(RecordKind::PARKED_CALL).collect();
        assert_eq!(parked, [("a", &b"2"[..])], "same id, other kind, kept apart");
        assert_eq!(live.of_kind(RecordKind::DIALOG).count(), 1);
        assert_eq!(live.of_kind(RecordKind::BRIDGE).count(), 0);
    }

    #[test]
    fn the_byte_count_is_the_exact_size_of_a_compacted_file() {
        let mut live = LiveSet::new();
        for (i, len) in [0usize, 1, 127, 128, 300, 20_000].into_iter().enumerate() {
            let id = "x".repeat(i * 60);
            live.apply(Record::put(key(RecordKind(200 + i as u16 * 100), &id), vec![3; len]));
        }
        live.apply(Record::put(key(RecordKind(200), ""), vec![1; 5])); // replaces one
        live.apply(Record::delete(key(RecordKind(300), &"x".repeat(60))));
        let mut buf = Vec::new();
        super::super::record::encode_header(&mut buf);
        for (k, v) in live.iter() {
            encode(&[super::super::record::RecordRef::Put { key: k, value: v }], &mut buf).unwrap();
        }
        assert_eq!(live.compacted_len(), buf.len() as u64);
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            assert_eq!(varint_len(v), postcard::to_stdvec(&v).unwrap().len(), "{v}");
        }
        live.apply(Record::delete(key(RecordKind(200), "")));
        let all: Vec<_> = live.iter().map(|(k, _)| k.clone()).collect();
        for k in all {
            live.apply(Record::delete(k));
        }
        assert_eq!((live.len(), live.compacted_len()), (0, HEADER_LEN as u64));
    }

    #[test]
    fn compaction_waits_for_the_floor_then_for_the_ratio() {
        let p = CompactionPolicy { ratio: 2, floor_bytes: 1000 };
        assert!(!p.should_compact(1000, 0));
        assert!(p.should_compact(1001, 0), "all dead, above the floor");
        assert!(!p.should_compact(3000, 1000), "2x live + floor is still fine");
        assert!(p.should_compact(3001, 1000));
        assert!(!p.should_compact(u64::MAX, u64::MAX), "no overflow");
        assert_eq!(CompactionPolicy::default(), CompactionPolicy { ratio: 2, floor_bytes: 8 << 20 });
    }
}
