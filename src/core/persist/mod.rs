//! The core's side of the journal (issue 17): what the rooms write, when, what waits for it, and how a fresh
//! core is rebuilt from it. See [`crate::journal`] for the store and its guarantees, and the engine contract
//! ([`super::contract`]) for the order of calls. Off by default ([`Core::set_journaling`]): a core without it
//! behaves exactly as before and emits no [`crate::core::Output::Journal`].
//!
//! # What is journaled
//! The rooms' own plain data (serde, postcard), one record per thing that must come back:
//! * `parked_call/<call>` ([`records::ParkedRecord`]): the [`crate::core::parking::ParkedCall`] (lot, orbit,
//!   parker, how, parking time, absolute recall and maximum-park deadlines, rounds, media mode), its leg
//!   ([`crate::core::dialogs::Leg`]: dialog with tags, CSeq ceiling, route set, remote target, next hop and
//!   transport; media with the local [`crate::media::MediaLegId`] (= RTP port), remote address, codec, DTMF
//!   payload type, local SDP and the stream anchor), and the recall ringing for it, if any (the INVITE's
//!   Request-URI, Call-ID, tags, CSeq, branch, route and next hop: enough to CANCEL it).
//! * `bridge/<call>` ([`records::BridgeRecord`]): a bridge and both its legs. A parked call taken into a
//!   bridge keeps its id: the group deletes `parked_call/<call>` and puts `bridge/<call>`.
//! * `blf_subscription/<id>` ([`records::SubRecord`]): a subscription with its dialog, entity, expiry and
//!   NOTIFY version ceiling.
//! * `orbit_claim/<call>` (a cluster node, [`claims::ClaimRecord`]): the fence of the Redis claim of a parked
//!   call's orbit, taken back at a restart (`claims.rs`).
//! * `srtp_keys/<leg>` (an SRTP leg, [`srtp_keys::SrtpRecord`]): its SDES keys and the SRTP index of its stream
//!   anchor, put back on the restored leg so that its stream continues with the same keys and rollover counter
//!   (`srtp_keys.rs`). Key material: the journal file is private to parkd's user (0600 in a 0700 directory).
//! * `session_timers/<call>` (a call whose legs have RFC 4028 session timers, [`stimers::StimerRecord`]): each
//!   leg's interval, refresher and absolute deadlines, put back on the restored legs (`stimers.rs`).
//!
//! Deletes when things end (a hang-up, a call ended by parkd, a subscription that ends).
//!
//! # When
//! The rooms' flows `touch` the calls they change; at the end of every input (`settle`) the touched calls'
//! records are rebuilt and compared (by a hash of the value with the peer's CSeq blanked) with what was last
//! written, and those that differ go out as **one group** for the input ([`crate::core::Output::Journal`]).
//! Keepalive deadlines are not journaled, RTP never is, and in-dialog counters only move the record when they
//! cross a reserved block (below): a park costs two small groups (the INVITE, then the ACK with the hold
//! music's anchor), a keepalive or a phone's OPTIONS none.
//!
//! # Durable before acknowledged
//! With journaling on, the `200 OK` to a park INVITE (a park, an empty-orbit park, an attended-park swap) is
//! not handed to the transaction layer: the response is held in an
//! [`crate::journal::AckGate`] under the token of the input's group, with the `Parked` event and, for a
//! REFER, its final NOTIFY. [`Core::handle_journal_durable`]`(token, true)` lets them out; nothing of the 2xx,
//! not even a retransmission, leaves before (the transaction layer has never seen it). No `100 Trying` is
//! sent meanwhile: a sync takes milliseconds, and should parkd die before the 200 goes out, the caller's
//! retransmitted INVITE (which a 100 would have stopped) is what the restored call answers. With `ok = false` the
//! park is answered `500` (`Retry-After: 5`; a REFER's NOTIFY says `500` and the call is bridged again) and
//! undone: orbit freed, leg forgotten, its deletes written. A park INVITE CANCELled while its group was
//! syncing is undone the same way once the group is durable (it was answered 487).
//!
//! # CSeq and NOTIFY version reservation
//! A dialog's local CSeq is journaled as a ceiling ([`records::ceiling`]): at least one block of
//! [`records::RESERVE_BLOCK`] above the counter, moving only when the counter crosses a block boundary. A
//! restored dialog continues from the ceiling, so every request parkd sends afterwards (keepalive OPTIONS,
//! BYE, re-INVITE, NOTIFY) carries a CSeq above every one sent before. The same holds for a BLF
//! subscription's NOTIFY `version`. The peer's CSeq is written as it is whenever the record is written.
//!
//! # The stream anchor
//! With journaling on, the core picks each outbound stream's identity (SSRC, first sequence number and
//! timestamp, from its own seeded RNG) and gives it to the media plane ([`crate::media::MediaCommand::Stream`])
//! before the leg starts sending, and keeps a [`crate::media::anchor::StreamAnchor`] in the leg: the stream's
//! position at the last change of what it does (hold, paused by a sendonly peer, relayed). Hold sends exactly
//! one packet per 20 ms, so the anchor predicts the stream without the media plane reporting anything.
//!
//! # Restore
//! [`Core::restore`] on a fresh core, before any traffic:
//! * every parked call goes back into **its orbit** (claimed first, so no new park can get it) and **its RTP
//!   port**; a call whose lot, orbit or port is not in the configuration any more is hung up (BYE) and
//!   reported. Ids minted afterwards are above every restored one (calls, legs, subscriptions).
//! * the media plane is told to resume each stream from its anchor ([`crate::media::anchor::StreamAnchor::resume`]):
//!   hold music from the same port to the same address, same SSRC, sequence continuing after every packet the
//!   old process can have sent, timestamp advanced by the time that passed, no re-INVITE. Bridges relay both
//!   ways again on the same ports (sequence with a margin, never going backwards). These media commands come
//!   out of the core's output queue: the driver must hand them to the media threads before the SIP socket
//!   answers anything, and the media sockets must be bound by then.
//! * deadlines are absolute: a recall falls at its original time, or at once if it passed while parkd was
//!   down; an expired maximum park time ends the call (BYE) at once; each fires once (a fired recall is
//!   journaled as no longer scheduled, with the ringing INVITE). A recall that was ringing at the crash is
//!   CANCELled (its journaled branch; the new process has no transaction for it) and rung again once that
//!   INVITE is over: its final response (the 487, or a 2xx that crossed the CANCEL) arrives and is ACKed
//!   (RFC 3261 §17.1.1.3; a 2xx also gets a BYE), or the CANCEL is refused (481: nothing rings there), or after
//!   [`CANCEL_WAIT`]. The parker never has two of parkd's calls ringing at once. Until then the call's record
//!   keeps the old INVITE, so a second crash CANCELs it again. Keepalives restart one interval after the
//!   restore.
//! * BLF subscriptions come back with their expiry and NOTIFY version ceiling; one that expired while parkd
//!   was down is dropped (and deleted). Watchers get NOTIFYs for later changes.
//! * **A park whose 200 was never ACKed** (a crash between the sync and the ACK, or before the 200 went out):
//!   the leg comes back [`crate::core::dialogs::LegState::Unacked`]. The party may be in the call all the same
//!   (its ACK came, but the group recording it was lost in the crash), so parkd asks at once with an in-dialog
//!   OPTIONS (`Purpose::Probe`): an answer confirms the leg and starts its media (hold music, or the bridge of a
//!   retriever's leg; a new stream: its anchor was in the lost group). A caller that never had the 200 answers
//!   481 and retransmits its INVITE (same Call-ID and From tag), which is answered `200` from the restored leg
//!   (same tag, SDP and orbit); its ACK confirms it. A retransmitted INVITE is answered so even after the first
//!   OPTIONS confirmed the leg (a phone that answers OPTIONS for a dialog it does not have), so it is never
//!   parked twice. With neither an ACK nor an answer within 32 s (Timer H; the caller's INVITE has given up by
//!   then) parkd asks once more; 481 or no answer then ends the leg as an unacknowledged 2xx would.
//! * an attended-park swap whose write fails ends the parked call: the replaced party was already released.
//! * a record that does not decode, or that names what this configuration does not have, is skipped and
//!   listed in [`RestoreReport::skipped`] (never a panic); its delete is written. A kind this parkd does not
//!   know (a newer one's) is listed but left in the journal.
//!
//! Transactions in flight are not restored: retransmissions on both sides take over.
//!
//! # Known limits
//! * Only what a **durable** group holds comes back. A crash in the milliseconds between an input and the
//!   sync of its group loses that change: a recall INVITE sent just before (its branch not yet durable) cannot
//!   be CANCELled and the restored call rings the parker again (for a moment, twice); a recall answered just
//!   before is CANCELled by its old branch and rung again (the first answer gets no media and is ended by the
//!   parker's phone).
//! * The media plane's latched source (symmetric RTP: where the phone's packets come from, behind a NAT) is not
//!   journaled: hold music resumes to the SDP address until the phone's next packet latches again.
//! * A dialog over TCP lost its connection with the process: in-dialog requests after the restore need a
//!   new connection to the phone (the io layer's business).
//! * Deadlines and anchors are wall-clock times: a clock set back across the restart shortens nothing and can
//!   make a resumed stream repeat sequence numbers sent before.

mod ack;
mod claims;
mod flush;
pub mod records;
mod restore;
mod room;
mod srtp_keys;
mod stimers;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod srtp_tests;

pub use ack::NOT_STORED;
pub use restore::{RestoreError, CANCEL_WAIT, UNACKED_WAIT};
pub use room::{Held, JournalRoom, ReferDone};
pub use srtp_keys::{follow_index, SrtpRecord};

use super::Core;
use crate::journal::{JournalToken, LiveSet};
use crate::time::Time;

/// What [`Core::restore`] brought back, for the startup log and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Calls back in their orbits, with hold music.
    pub parked: usize,
    /// Bridged calls relaying again.
    pub bridged: usize,
    /// BLF subscriptions still within their expiry.
    pub subscriptions: usize,
    /// BLF subscriptions that expired while parkd was down (dropped).
    pub subscriptions_expired: usize,
    /// Recalls that fell due while parkd was down (started at once) or were ringing at the crash (started again).
    pub recalls_restarted: usize,
    /// Records that could not be used, each with why (an unknown kind, a value that does not decode, a call
    /// whose leg is missing). Logged at startup; the rest is restored.
    pub skipped: Vec<String>,
}

impl Core {
    /// Turns journaling on or off (off by default, so unit tests and `journal = false` see no [`crate::core::Output::Journal`]).
    /// Call before any traffic.
    pub fn set_journaling(&mut self, on: bool) {
        self.journal.on = on;
        self.blf.set_journaling(on);
    }

    /// The journal group `token` is on stable storage (`ok`), or could not be written: release what the core held
    /// back for it, or refuse in its place. Drain outputs afterwards, as after any input.
    pub fn handle_journal_durable(&mut self, token: JournalToken, ok: bool, now: Time) {
        let held = if ok { self.journal.gate.release(token) } else { self.journal.gate.fail(token) };
        if !ok {
            tracing::error!(token = token.0, held = held.len(), "journal group not durable; refusing what waited for it");
        }
        self.release_held(now, held, ok);
        self.settle(now);
    }

    /// Rebuilds a fresh core's rooms from the journal's live records (call once, after [`Core::new`] and
    /// [`Core::set_journaling`]`(true)`, before any traffic), then drains as after any input: the media plane is
    /// told to resume each restored stream, recalls due while parkd was down start now, and the restored
    /// records are written again (new stream anchors and CSeq ceilings) in one or a few groups without a token.
    /// Carry every output in order; the media commands must reach the media threads (sockets bound) before the
    /// SIP socket answers anything.
    pub fn restore(&mut self, live: &LiveSet, now: Time) -> RestoreReport {
        // The driver logs the report (with how long the restore took).
        self.restore_live(live, now)
    }

    /// Groups whose held outputs still wait for their durable report.
    pub fn journal_waiting(&self) -> usize {
        self.journal.gate.waiting()
    }
}
