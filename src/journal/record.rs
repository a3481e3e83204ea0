//! Records and how one is framed on disk (pure: bytes in, bytes out).
//!
//! A journal file is a 16-byte header followed by frames, one frame per group of records submitted together:
//!
//! ```text
//! header: "PARKDJNL" | version u32 LE (1) | CRC-32 of the 12 bytes before it, u32 LE
//! frame:  body length u32 LE | CRC-32 of (the 4 length bytes ‖ body), u32 LE | body
//! body:   postcard of `[Record]`: count varint, then each record:
//!         variant (0 = Put, 1 = Delete) | kind varint | id (varint length + UTF-8) | Put: value (varint length + bytes)
//! ```
//!
//! A group is all or nothing: a room's change that touches several keys (a park: the call, its dialog, its media
//! leg, its orbit) is one frame under one checksum, so a crash never restores half of it. The checksum covers the
//! length too, so a damaged length is caught instead of sending the reader into the middle of a later frame. A
//! length of 0 or above [`MAX_BODY`] is never written, so a zeroed or garbage tail is recognised before anything
//! is allocated.

use serde::{Deserialize, Serialize};

/// The 8 bytes every journal file starts with.
pub const MAGIC: &[u8; 8] = b"PARKDJNL";
/// The format this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 16;
/// Bytes before each frame's body (length and checksum).
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest body a frame may carry. A group is a call's plain data (hundreds of bytes to a few KB); anything
/// near this is a bug, and a length above it on disk is corruption.
pub const MAX_BODY: usize = 1 << 20;

/// Which room's data a record holds. The codes are on disk, so they never change meaning; a code this build does
/// not know (written by a newer parkd) is still a valid kind: it is restored and carried through compaction
/// untouched, so a downgrade and upgrade again loses nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKind(pub u16);

impl RecordKind {
    /// A parked call: orbit, parker, deadlines, recall round (the parking room), with its leg (dialog, media,
    /// stream anchor) and the recall ringing for it: one record per call (`crate::core::persist`).
    pub const PARKED_CALL: RecordKind = RecordKind(1);
    /// A bridged call: the two legs relayed after a retrieve or an answered recall (the bridging room), with both
    /// legs in the same record.
    pub const BRIDGE: RecordKind = RecordKind(2);
    /// A dialog: tags, CSeq counters, route set, remote target, transport. Reserved: the core journals a leg's
    /// dialog inside its call's record.
    pub const DIALOG: RecordKind = RecordKind(3);
    /// A media leg: local RTP port, remote address, SSRC, sequence/timestamp base, codec. Reserved (inside the
    /// call's record).
    pub const MEDIA_LEG: RecordKind = RecordKind(4);
    /// A BLF subscription with its expiry and NOTIFY version.
    pub const BLF_SUBSCRIPTION: RecordKind = RecordKind(5);
    /// A cluster node's Redis claim of the orbit a parked call holds: its fence, taken back at a restart
    /// (`crate::core::persist`, issue 18). A single node writes none (the parked call's record names its orbit).
    pub const ORBIT_CLAIM: RecordKind = RecordKind(6);
    /// An SRTP leg's SDES keys (suite, parkd's key, the peer's key, the `a=crypto` tag) and the SRTP index of
    /// its stream anchor, so that a restored leg's outbound stream continues its rollover counter: id = the
    /// leg's number, written in the same group as its call's record, deleted when the leg or call ends
    /// (`crate::core::persist`, issues 17 and 19). Key material: the journal file is private to parkd's user.
    pub const SRTP_KEYS: RecordKind = RecordKind(7);
    /// The session timers (RFC 4028) of a call's legs: interval, refresher and absolute deadlines, id = the
    /// call's number (`crate::core::persist::stimers`), written beside the call's record, deleted with it.
    pub const SESSION_TIMERS: RecordKind = RecordKind(8);

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::PARKED_CALL => "parked_call",
            Self::BRIDGE => "bridge",
            Self::DIALOG => "dialog",
            Self::MEDIA_LEG => "media_leg",
            Self::BLF_SUBSCRIPTION => "blf_subscription",
            Self::ORBIT_CLAIM => "orbit_claim",
            Self::SRTP_KEYS => "srtp_keys",
            Self::SESSION_TIMERS => "session_timers",
            _ => "unknown",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

/// What a record is about: one thing a room owns, named by the room (a Call-ID, a dialog id, an orbit number...).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    pub kind: RecordKind,
    pub id: String,
}

impl RecordKey {
    pub fn new(kind: RecordKind, id: impl Into<String>) -> RecordKey {
        RecordKey { kind, id: id.into() }
    }
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.name(), self.id)
    }
}

/// One change: the latest value of a key (an upsert), or its end. Values are opaque bytes to the journal; the
/// rooms produce them from their own plain-data types ([`to_value`], [`from_value`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum Record {
    Put {
        key: RecordKey,
        #[serde(deserialize_with = "as_bytes::deserialize")]
        value: Vec<u8>,
    },
    Delete { key: RecordKey },
}

impl Record {
    pub fn put(key: RecordKey, value: Vec<u8>) -> Record {
        Record::Put { key, value }
    }
    pub fn delete(key: RecordKey) -> Record {
        Record::Delete { key }
    }
    pub fn key(&self) -> &RecordKey {
        match self {
            Record::Put { key, .. } | Record::Delete { key } => key,
        }
    }
    pub fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Record::Put { key, value } => RecordRef::Put { key, value },
            Record::Delete { key } => RecordRef::Delete { key },
        }
    }
}

/// A borrowed [`Record`], same encoding: what is encoded (compaction writes the live set without copying values).
#[derive(Clone, Copy, Debug, Serialize)]
pub enum RecordRef<'a> {
    Put {
        key: &'a RecordKey,
        #[serde(serialize_with = "as_bytes::serialize")]
        value: &'a [u8],
    },
    Delete { key: &'a RecordKey },
}

impl<'a> RecordRef<'a> {
    fn parts(&self) -> (&'a RecordKey, &'a [u8]) {
        match *self {
            RecordRef::Put { key, value } => (key, value),
            RecordRef::Delete { key } => (key, &[]),
        }
    }
}

/// Values as one byte string (postcard: a varint length and the bytes, copied at once) rather than serde's
/// default sequence of `u8` (the same bytes on the wire, but one call per byte: 5x slower on a 300-byte value).
mod as_bytes {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("a journal group of {records} records (the first for {first}) takes up to {len} bytes, above the {MAX_BODY}-byte limit")]
    TooLarge { records: usize, first: String, len: usize },
    #[error("cannot encode a journal record: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Why the bytes at some offset are not a record. `Truncated` is what a write cut short by a crash leaves; the
/// others are damage (or a file that is not a journal).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated: {need} bytes needed, {have} left (a write cut short)")]
    Truncated { need: usize, have: usize },
    #[error("impossible record length {0}")]
    BadLength(u32),
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("checksum good but the body is not a record: {0}")]
    Body(String),
}

/// Why a file's header is not a journal header this build can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header truncated ({0} of {HEADER_LEN} bytes)")]
    Truncated(usize),
    #[error("not a parkd journal (bad magic or header checksum)")]
    NotAJournal,
    #[error("journal format version {0} is newer than this parkd understands ({VERSION})")]
    Newer(u32),
}

/// Appends the file header to `out`.
pub fn encode_header(out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Checks a file header (the first [`HEADER_LEN`] bytes of `buf`).
pub fn decode_header(buf: &[u8]) -> Result<(), HeaderError> {
    let h = buf.get(..HEADER_LEN).ok_or(HeaderError::Truncated(buf.len()))?;
    let (body, crc) = h.split_at(12);
    if &body[..8] != MAGIC || crc32fast::hash(body).to_le_bytes() != crc {
        return Err(HeaderError::NotAJournal);
    }
    let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    if version != VERSION {
        return Err(HeaderError::Newer(version));
    }
    Ok(())
}

/// An upper bound of the body that encodes `group`: the count (≤ 5 bytes) and per record the variant (1), the
/// kind (≤ 3) and two varint lengths (≤ 5 each below 4 GiB) with their bytes.
fn body_bound<'a>(group: impl Iterator<Item = (&'a RecordKey, usize)>) -> usize {
    group.fold(5, |n, (key, value_len)| n + 1 + 3 + 5 + key.id.len() + 5 + value_len)
}

/// Whether `group` fits one frame ([`MAX_BODY`], counted by the bound above so that the check needs no encoding):
/// the writer checks it at submit time, so the caller hears of a too-large group and no commit fails for it.
pub fn check_size(group: &[Record]) -> Result<(), EncodeError> {
    let bound = body_bound(group.iter().map(|r| match r {
        Record::Put { key, value } => (key, value.len()),
        Record::Delete { key } => (key, 0),
    }));
    match group.first() {
        Some(first) if bound > MAX_BODY => {
            Err(EncodeError::TooLarge { records: group.len(), first: first.key().to_string(), len: bound })
        }
        _ => Ok(()),
    }
}

/// Appends one frame holding `group` to `out`; returns the frame's length. On error `out` is left as it was.
pub fn encode(group: &[RecordRef<'_>], out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let bound = body_bound(group.iter().map(|r| (r.parts().0, r.parts().1.len())));
    if bound > MAX_BODY {
        let first = group.first().map(|r| r.parts().0.to_string()).unwrap_or_default();
        return Err(EncodeError::TooLarge { records: group.len(), first, len: bound });
    }
    let start = out.len();
    let body_at = start + FRAME_HEADER_LEN;
    out.resize(body_at + bound, 0);
    let body_len = match postcard::to_slice(group, &mut out[body_at..]) {
        Ok(body) => body.len(),
        Err(e) => {
            out.truncate(start);
            return Err(EncodeError::Postcard(e));
        }
    };
    out.truncate(body_at + body_len);
    let len = (body_len as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&out[body_at..]);
    let crc = h.finalize().to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..body_at].copy_from_slice(&crc);
    Ok(FRAME_HEADER_LEN + body_len)
}

/// The frame at the start of `buf`: its group of records and the frame's length.
pub fn decode(buf: &[u8]) -> Result<(Vec<Record>, usize), FrameError> {
    let (body, frame_len) = checked_body(buf)?;
    match postcard::take_from_bytes::<Vec<Record>>(body) {
        Ok((group, [])) => Ok((group, frame_len)),
        Ok((_, rest)) => Err(FrameError::Body(format!("{} bytes left over after the records", rest.len()))),
        Err(e) => Err(FrameError::Body(e.to_string())),
    }
}

/// The body of the frame at the start of `buf` once its length and checksum hold, and the frame's length.
fn checked_body(buf: &[u8]) -> Result<(&[u8], usize), FrameError> {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        return Err(FrameError::Truncated { need: FRAME_HEADER_LEN, have: buf.len() });
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let stored = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len as usize > MAX_BODY {
        return Err(FrameError::BadLength(len));
    }
    let frame_len = FRAME_HEADER_LEN + len as usize;
    let Some(body) = buf.get(FRAME_HEADER_LEN..frame_len) else {
        return Err(FrameError::Truncated { need: frame_len, have: buf.len() });
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..4]);
    h.update(body);
    let computed = h.finalize();
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok((body, frame_len))
}

/// Whether a frame with a good length and checksum starts at the start of `buf` (its body is not decoded).
pub(crate) fn is_intact_frame(buf: &[u8]) -> Option<usize> {
    checked_body(buf).ok().map(|(_, n)| n)
}

/// Encodes a room's plain data as a record value.
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(v)
}

/// Decodes a record value written by [`to_value`].
pub fn from_value<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> RecordKey {
        RecordKey::new(RecordKind::PARKED_CALL, id)
    }

    fn frame(group: &[Record], out: &mut Vec<u8>) -> usize {
        let refs: Vec<RecordRef<'_>> = group.iter().map(Record::as_ref).collect();
        encode(&refs, out).unwrap()
    }

    #[test]
    fn groups_round_trip_and_the_frame_is_compact() {
        let groups = [
            vec![Record::put(key("a84b4c76e66710@pc33"), b"orbit 701, parker alice".to_vec())],
            vec![
                Record::put(RecordKey::new(RecordKind(999), ""), Vec::new()),
                Record::delete(RecordKey::new(RecordKind::BLF_SUBSCRIPTION, "sub-1")),
            ],
            vec![],
        ];
        let mut buf = Vec::new();
        let lens: Vec<usize> = groups.iter().map(|g| frame(g, &mut buf)).collect();
        assert_eq!(lens[0], 8 + 1 + 1 + 1 + 1 + 19 + 1 + 23, "count, variant, kind, id, value: no padding");
        let mut at = 0;
        for (g, len) in groups.iter().zip(&lens) {
            let (got, n) = decode(&buf[at..]).unwrap();
            assert_eq!((&got, n), (g, *len));
            at += n;
        }
        assert_eq!(at, buf.len());
        assert_eq!(RecordKind(999).to_string(), "unknown(999)", "an unknown kind survives decoding");
    }

    #[test]
    fn the_header_is_checked() {
        let mut h = Vec::new();
        encode_header(&mut h);
        assert_eq!(h.len(), HEADER_LEN);
        assert_eq!(decode_header(&h), Ok(()));
        assert_eq!(decode_header(&h[..10]), Err(HeaderError::Truncated(10)));
        let mut bad = h.clone();
        bad[0] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderError::NotAJournal));
        let mut newer = Vec::from(&MAGIC[..]);
        newer.extend_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&newer);
        newer.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_header(&newer), Err(HeaderError::Newer(2)));
    }

    #[test]
    fn every_damage_is_named_and_a_group_is_all_or_nothing() {
        let mut buf = Vec::new();
        frame(&[Record::put(key("x"), vec![7; 40]), Record::delete(key("y"))], &mut buf);
        for cut in 0..buf.len() {
            assert!(matches!(decode(&buf[..cut]), Err(FrameError::Truncated { .. })), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x20;
            match decode(&b) {
                Err(FrameError::Checksum { .. } | FrameError::BadLength(_) | FrameError::Truncated { .. }) => {}
                other => panic!("flipped byte {i}: {other:?}"),
            }
        }
        assert_eq!(decode(&[0; 64]), Err(FrameError::BadLength(0)), "a zeroed tail");
        assert!(matches!(decode(&[0xff; 64]), Err(FrameError::BadLength(_))), "never allocates 4 GiB");
        // A good checksum over a body that is not a group (what a newer format's record would look like).
        let body = [1u8, 9, 1, 2];
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        let mut h = crc32fast::Hasher::new();
        h.update(&f);
        h.update(&body);
        f.extend_from_slice(&h.finalize().to_le_bytes());
        f.extend_from_slice(&body);
        assert!(matches!(decode(&f), Err(FrameError::Body(_))));
    }

    #[test]
    fn an_oversized_group_is_refused_and_leaves_the_buffer_alone() {
        let mut buf = vec![1, 2, 3];
        let big = [Record::put(key("big"), vec![0; MAX_BODY / 2]), Record::put(key("big2"), vec![0; MAX_BODY / 2])];
        let refs: Vec<RecordRef<'_>> = big.iter().map(Record::as_ref).collect();
        let e = encode(&refs, &mut buf).unwrap_err();
        assert!(matches!(e, EncodeError::TooLarge { records: 2, .. }), "{e}");
        assert!(e.to_string().contains("parked_call/big"), "{e}");
        assert_eq!(buf, [1, 2, 3]);
        assert!(matches!(check_size(&big), Err(EncodeError::TooLarge { records: 2, .. })));
        // At the limit, counted with the bound of the encoding's own bytes.
        let fits = [Record::put(key(""), vec![0; MAX_BODY - 19])];
        assert!(check_size(&fits).is_ok());
        let refs: Vec<RecordRef<'_>> = fits.iter().map(Record::as_ref).collect();
        assert_eq!(encode(&refs, &mut buf).unwrap(), FRAME_HEADER_LEN + 1 + 1 + 1 + 1 + 3 + MAX_BODY - 19);
        let over = [Record::put(key(""), vec![0; MAX_BODY - 18])];
        assert!(check_size(&over).is_err());
        let refs: Vec<RecordRef<'_>> = over.iter().map(Record::as_ref).collect();
        assert!(matches!(encode(&refs, &mut buf), Err(EncodeError::TooLarge { .. })));
        assert!(check_size(&[]).is_ok());
    }

    #[test]
    fn values_round_trip_through_serde() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Parked {
            orbit: u16,
            parker: Option<String>,
            deadline_us: u64,
        }
        let p = Parked { orbit: 701, parker: Some("sip:alice@pbx".into()), deadline_us: 1_700_000_000_000_000 };
        let v = to_value(&p).unwrap();
        assert_eq!(from_value::<Parked>(&v).unwrap(), p);
        assert!(v.len() < 30, "compact: {} bytes", v.len());
    }
}
