//! An SRTP leg's keys in the journal (issues 17 and 19): `srtp_keys/<leg>` ([`SrtpRecord`]) holds the leg's
//! SDES keys (suite, parkd's key, the peer's key, the `a=crypto` tag) and the SRTP index of its stream anchor,
//! written in the same group as the call's record (so a park's `200 OK` waits for it too), rewritten when the
//! anchor or the peer's key moves, deleted when the leg leaves the call or the call ends. The leg's own record
//! is unchanged: an older parkd reads the journal (and carries the unknown kind through compaction).
//!
//! # The rollover counter
//! SRTP encrypts each packet under its index, ROC · 2^16 + seq; the phone's context follows parkd's ROC from the
//! sequence numbers it saw. A restored leg's stream continues the old sequence ([`StreamAnchor::resume`]), so
//! its first packet must carry the ROC the old stream had reached there, or the phone cannot open anything. The
//! core follows the index beside the anchor without the media plane reporting it ([`follow_index`]: the
//! anchor's prediction counts every wrap, [`StreamAnchor::index_of`]); the resumed stream's ROC goes to the
//! plane with the keys ([`crate::media::MediaCommand::Srtp`]), before its hold music or relay.
//!
//! The keys are secrets: the journal file is created `0600` in a `0700` state directory (`io::journal_file`),
//! and nothing here logs them.

use crate::core::dialogs::{LegMedia, LegSrtp};
use crate::core::ids::{CallRef, LegId};
use crate::core::Core;
use crate::journal::{from_value, to_value, LiveSet, Record, RecordKey, RecordKind};
use crate::media::anchor::StreamAnchor;
use crate::media::srtp::SrtpKeys;
use crate::media::MediaCommand;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// `RecordKind::SRTP_KEYS`, id = the leg's number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrtpRecord {
    /// The call the leg belongs to (a record whose call was not restored is dropped).
    pub call: CallRef,
    pub tag: u32,
    pub keys: SrtpKeys,
    /// The stream anchor `index` refers to (the one in the call's record of the same group), if any.
    pub anchor: Option<StreamAnchor>,
    /// The SRTP index (ROC · 2^16 + seq) of `anchor.seq`.
    pub index: u64,
    /// The leg's SDP profile is `RTP/SAVP` (false: a best-effort `RTP/AVP` with `a=crypto`).
    pub savp: bool,
}

/// Brings a leg's SRTP index up to its current stream anchor; returns the rollover counter of the stream's next
/// packet (0 for a leg without SRTP or anchor: a new stream).
pub fn follow_index(media: &mut LegMedia) -> u32 {
    let (Some(s), Some(a)) = (media.srtp.as_mut(), media.stream) else { return 0 };
    let index = match s.index {
        Some((b, i)) if b == a => i,
        Some((b, i)) => b.index_of(i, &a),
        None => a.seq as u64,
    };
    s.index = Some((a, index));
    (index >> 16) as u32
}

/// A bound on the SRTCP index parkd can have reached on a stream whose SRTP index is `index` (ROC · 2^16 + seq
/// of its next packet), derived rather than journaled: SRTCP to a leg is a hold Sender Report (at least 2.5 s
/// apart, and only while hold packets flow) or a bridge peer's relayed SR/RR (RFC 3550 §6.2: at least 2.5 s
/// apart, while the relayed stream is predicted at 50 packets/s), so at most one per 125 packets of the
/// stream; the index counts those packets plus the stream's random first sequence number (< 2^16), which only
/// raises the bound. Twice that rate and 64 more leave room for a peer reporting faster.
pub fn srtcp_floor(index: u64) -> u32 {
    u32::try_from(index / 62 + 64).unwrap_or(u32::MAX)
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Core {
    /// The legs of `call` (parked or bridged) as journaled.
    fn journaled_legs(&self, call: CallRef) -> Vec<LegId> {
        if let Some(c) = self.parking.get(call) {
            return vec![c.parked];
        }
        self.bridging.get(call).map(|b| vec![b.parked, b.other]).unwrap_or_default()
    }

    /// The media plane's [`MediaCommand::Srtp`] for leg `leg_id` resumed after a restart: its keys (or none), the
    /// rollover counter of its stream's next packet, and a bound on the SRTCP index reached ([`srtcp_floor`]).
    pub(in crate::core) fn srtp_command(&mut self, leg_id: LegId) -> Option<MediaCommand> {
        let m = &mut self.dialogs.get_mut(leg_id)?.media;
        let roc = follow_index(m);
        let srtcp = m.srtp.as_ref().and_then(|s| s.index).map_or(0, |(_, index)| srtcp_floor(index));
        Some(MediaCommand::Srtp { leg: m.media_leg, keys: m.srtp.as_ref().map(|s| Box::new(s.keys.clone())), roc, srtcp })
    }

    /// The SRTP records of `call`'s legs as they should be now: written, rewritten or deleted (journaling on).
    pub(super) fn journal_srtp(&mut self, call: CallRef, out: &mut Vec<Record>) {
        let legs = self.journaled_legs(call);
        for &leg_id in &legs {
            let Some(m) = self.dialogs.get_mut(leg_id).map(|l| &mut l.media) else { continue };
            follow_index(m);
            let key = RecordKey::new(RecordKind::SRTP_KEYS, leg_id.0.to_string());
            let Some(s) = &m.srtp else {
                if self.journal.srtp_remove(leg_id) {
                    out.push(Record::delete(key));
                }
                continue;
            };
            let (anchor, index) = s.index.map_or((None, 0), |(a, i)| (Some(a), i));
            let record = SrtpRecord { call, tag: s.tag, keys: s.keys.clone(), anchor, index, savp: s.savp };
            match to_value(&record) {
                Ok(value) => {
                    let h = hash_of(&value);
                    if self.journal.srtp_get(leg_id) != Some((call, h)) {
                        out.push(Record::put(key, value));
                        self.journal.srtp_put(leg_id, call, h);
                    }
                }
                Err(e) => tracing::error!(%e, "cannot encode an SRTP record; not written"),
            }
        }
        // By the per-call index: O(this call's legs), not every SRTP leg journaled.
        let gone: Vec<LegId> = self.journal.srtp_legs_of(call).into_iter().filter(|l| !legs.contains(l)).collect();
        for leg_id in gone {
            self.journal.srtp_remove(leg_id);
            out.push(Record::delete(RecordKey::new(RecordKind::SRTP_KEYS, leg_id.0.to_string())));
        }
    }

    /// Puts the journal's SRTP keys back on the restored legs (before their media resumes) and gives them to the
    /// media plane; records of legs not restored are deleted.
    pub(super) fn restore_srtp(&mut self, live: &LiveSet) {
        for (id, bytes) in live.of_kind(RecordKind::SRTP_KEYS) {
            let key = RecordKey::new(RecordKind::SRTP_KEYS, id);
            let record = id.parse::<u64>().ok().map(LegId).zip(from_value::<SrtpRecord>(bytes).ok());
            let restored = record.and_then(|(leg_id, r)| {
                let leg = self.dialogs.get_mut(leg_id).filter(|l| l.call == r.call)?;
                let index = r.anchor.map(|a| (a, r.index));
                leg.media.srtp = Some(Box::new(LegSrtp { tag: r.tag, keys: r.keys, savp: r.savp, index }));
                Some((leg_id, r.call))
            });
            match restored {
                Some((leg_id, call)) => {
                    self.journal.srtp_put(leg_id, call, hash_of(bytes));
                    if let Some(cmd) = self.srtp_command(leg_id) {
                        self.ep.media(cmd);
                    }
                }
                None => self.journal.extra.push(Record::delete(key)),
            }
        }
    }
}
