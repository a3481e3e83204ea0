//! Keys pressed by a parked caller (issue 21): what each key of the lot's `dtmf_keys` does.
//!
//! Keys come in two ways: the media plane's report of an RFC 4733 telephone-event on the parked leg (one report
//! per press, see `media::dtmf`), handed in with [`Core::handle_media_report`], and an in-dialog SIP INFO with an
//! `application/dtmf-relay` or `application/dtmf` body. Either way a key the lot maps acts at most once per
//! `dtmf_min_gap_ms` per call (a burst of keys, or a phone sending both RFC 4733 and INFO for one press, acts
//! once); a key the lot does not map is ignored (and does not use up the gap).
//!
//! * a SIP URI: parkd calls it like an API unpark (`RecallTarget::DtmfKey`): music until it answers, then the two
//!   are bridged; no answer or a failure leaves the call parked in its orbit, music on;
//! * `recall`: the recall round starts now, exactly as when the parking time runs out;
//! * `callback`: a `callback_requested` event; the caller stays parked.
//!
//! The debounce state is a small room of its own ([`DtmfRoom`]): the time of each call's last action, forgotten
//! once older than any gap can be.

use std::time::Duration;

use rustc_hash::FxHashMap;

use super::events::RecallTarget;
use super::ids::{CallRef, LegId};
use super::{Core, ParkEvent};
use crate::config::DtmfAction;
use crate::media::dtmf::{self, DtmfKey};
use crate::media::{MediaLegId, MediaReport};
use crate::sip::Request;
use crate::time::Time;
use crate::txn::ServerTxnId;

/// The longest `dtmf_min_gap_ms` honoured (a larger one acts as this): entries older than it are dropped.
const MAX_GAP: Duration = Duration::from_secs(60);
/// Above this many remembered calls, the stale ones are dropped on the next action.
const PRUNE_AT: usize = 256;

/// How a key reached parkd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyVia {
    /// An RFC 4733 telephone-event in the caller's RTP.
    Rtp,
    /// A SIP INFO.
    Info,
}

impl KeyVia {
    fn as_str(self) -> &'static str {
        match self {
            KeyVia::Rtp => "rfc4733",
            KeyVia::Info => "info",
        }
    }
}

/// The debounce room: when each parked call last acted on a key.
#[derive(Debug, Default)]
pub(super) struct DtmfRoom {
    last_action: FxHashMap<CallRef, Time>,
}

impl DtmfRoom {
    /// True when `call` may act at `now` (its last action is at least `gap` old); the action is then recorded.
    pub(super) fn admit(&mut self, call: CallRef, now: Time, gap: Duration) -> bool {
        let gap = gap.min(MAX_GAP);
        if let Some(last) = self.last_action.get(&call) {
            if now.saturating_since(*last) < gap {
                return false;
            }
        }
        if self.last_action.len() >= PRUNE_AT {
            self.last_action.retain(|_, t| now.saturating_since(*t) < MAX_GAP);
        }
        self.last_action.insert(call, now);
        true
    }

    /// Calls remembered (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.last_action.len()
    }
}

impl Core {
    /// A report of the media plane ([`MediaReport`]) at `now`: a parked caller's key press, a leg latched behind a NAT. Drain
    /// [`Core::poll_output`] afterwards, as after any input. A report for a leg that is no longer parked (taken,
    /// hung up meanwhile) is ignored.
    pub fn handle_media_report(&mut self, now: Time, report: MediaReport) {
        match report {
            MediaReport::Dtmf { leg, key } => {
                if let Some(call) = self.parked_on_media(leg) {
                    self.on_key(now, call, key, KeyVia::Rtp);
                }
            }
            MediaReport::Latched { leg, source } => self.media_latched(leg, source),
        }
        self.settle(now);
    }

    /// The parked call whose parked leg is media leg `media` (two lookups, whatever the number of calls).
    fn parked_on_media(&self, media: MediaLegId) -> Option<CallRef> {
        let leg = self.dialogs.by_media(media)?;
        let call = self.dialogs.get(leg)?.call;
        self.parking.get(call).filter(|c| c.parked == leg).map(|c| c.id)
    }

    /// An in-dialog INFO on leg `leg_id`: answered 200; a DTMF body on a parked leg is a key press.
    pub(super) fn on_info(&mut self, now: Time, id: ServerTxnId, req: &Request, leg_id: LegId) {
        self.ep.respond(now, id, req, 200, None, None, |_| {});
        let Some(key) = req.common.content_type.as_deref().and_then(|ct| dtmf::parse_info(ct, &req.common.body)) else { return };
        let Some(call) = self.dialogs.get(leg_id).map(|l| l.call) else { return };
        if self.parking.get(call).is_some_and(|c| c.parked == leg_id) {
            self.on_key(now, call, key, KeyVia::Info);
        }
    }

    /// Parked call `call` pressed `key`: the lot's action for it, if any and not too soon after the last one.
    pub(super) fn on_key(&mut self, now: Time, call: CallRef, key: DtmfKey, via: KeyVia) {
        let Some(c) = self.parking.get(call) else { return };
        let (lot, orbit, parked) = (c.lot, c.orbit_name.clone(), c.parked);
        let Some(cfg) = self.parking.cfg(lot) else { return };
        let Some(action) = cfg.dtmf_keys.get(key).cloned() else {
            tracing::debug!(%orbit, %key, via = via.as_str(), "key not in the lot's dtmf_keys; ignored");
            return;
        };
        let (gap, lot_name) = (Duration::from_millis(cfg.dtmf_min_gap_ms), cfg.name.clone());
        if !self.dtmf.admit(call, now, gap) {
            tracing::debug!(%orbit, %key, "key within dtmf_min_gap_ms of the last action; ignored");
            return;
        }
        self.touch(call);
        let call_id = self.dialogs.get(parked).map(|l| l.dialog.call_id.clone()).unwrap_or_default();
        let (name, to) = match &action {
            DtmfAction::Dial(uri) => ("dial", Some(uri.clone())),
            DtmfAction::Recall => ("recall", None),
            DtmfAction::Callback => ("callback", None),
        };
        tracing::info!(%orbit, %key, action = name, via = via.as_str(), "parked caller pressed a key");
        self.ep.emit(ParkEvent::DtmfKey { lot: lot_name.clone(), orbit: orbit.clone(), call_id: call_id.clone(), key: key.to_string(), action: name.into(), to, via: via.as_str().into() });
        match action {
            DtmfAction::Dial(to) => {
                let Ok(uri) = crate::sip::parse_uri(&to) else { return };
                if let Err(e) = self.unpark_to(now, call, lot, &orbit, &uri, RecallTarget::DtmfKey) {
                    // Nothing rings (another call for it rings already, no route): the caller stays parked.
                    tracing::warn!(%orbit, %to, "key's call not started: {e}");
                }
            }
            DtmfAction::Recall => {
                if self.bridging.ringing(call).is_some() {
                    tracing::info!(%orbit, "recall key: a call for it rings already");
                } else if self.parking.recall_now(now, call) {
                    self.call_timeouts(now);
                }
            }
            DtmfAction::Callback => {
                let caller = self.parked_identity(call).map(|p| p.uri.to_string()).unwrap_or_default();
                self.ep.emit(ParkEvent::CallbackRequested { lot: lot_name, orbit, call_id, caller, key: key.to_string() });
            }
        }
    }
}
