//! SRTP in the core (issue 19): the lot's policy applied to an INVITE's offer, parkd's SDES keys for the
//! answer, and the keys handed to the media plane. The SDP side is [`crate::sdp::crypto`], the packet side
//! [`crate::media::srtp`].
//!
//! Keys come from a ChaCha RNG ([`rand::rngs::StdRng`]) owned here: seeded from the core's seed (tests are
//! reproducible), and reseeded by the binary from the OS ([`Core::seed_srtp_keys`]) so that keys cannot be
//! predicted from the (clock-derived) core seed. Nothing here logs a key.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::dialogs::LegSrtp;
use super::ids::CallRef;
use super::Core;
use crate::media::{MediaCommand, MediaLegId};
use crate::sdp::crypto::{self, Negotiated, SrtpRules};
use crate::sip::{Peer, Request};

/// The SRTP room: `[server] srtp_over_plain` and the key RNG.
#[derive(Debug)]
pub struct SrtpRoom {
    over_plain: bool,
    rng: StdRng,
}

impl SrtpRoom {
    pub fn new(over_plain: bool, seed: u64) -> SrtpRoom {
        SrtpRoom { over_plain, rng: StdRng::seed_from_u64(seed ^ 0x5352_5450) }
    }
}

/// Whether `from` is a TLS connection (SDES keys travel in the SIP body: only TLS keeps them secret).
fn over_tls(from: &Peer) -> bool {
    from.transport == crate::sip::Transport::Tls
}

impl Core {
    /// Reseeds the SDES key RNG (the binary gives it 32 bytes from the OS at start).
    pub fn seed_srtp_keys(&mut self, seed: [u8; 32]) {
        self.srtp.rng = StdRng::from_seed(seed);
    }

    fn srtp_rules(&self, lot: Option<usize>, from: &Peer) -> SrtpRules {
        let cfg = lot.and_then(|l| self.parking.cfg(l));
        SrtpRules {
            policy: cfg.map(|c| c.srtp).unwrap_or_default(),
            over_tls: over_tls(from),
            over_plain_allowed: cfg.and_then(|c| c.srtp_over_plain).unwrap_or(self.srtp.over_plain),
        }
    }

    /// The 488 reason phrase when `req`'s offer breaks `lot`'s SRTP policy; `None` when it may be answered.
    pub(super) fn srtp_refusal(&self, req: &Request, from: &Peer, lot: usize) -> Option<&'static str> {
        if req.common.body.is_empty() {
            return None;
        }
        let sec = crypto::offer_security(&req.common.body);
        crypto::check(&sec, self.srtp_rules(Some(lot), from)).err()
    }

    /// The lot of call `call` (parked or bridged).
    fn lot_of(&self, call: CallRef) -> Option<usize> {
        self.parking.get(call).map(|c| c.lot).or_else(|| self.bridging.get(call).map(|b| b.lot))
    }

    /// parkd's SRTP for a leg answering `req` in `call` (a fresh key), when its offer is `RTP/SAVP` and allowed.
    /// An offer refused by the policy was refused before ([`Core::srtp_refusal`]); one that reaches here anyway
    /// (a path without a lot) is answered plain and logged.
    pub(super) fn srtp_answer(&mut self, req: &Request, from: &Peer, call: CallRef) -> Option<LegSrtp> {
        if req.common.body.is_empty() {
            return None;
        }
        let sec = crypto::offer_security(&req.common.body);
        // A park's call is not in the lot yet when its leg is answered: the lot the request dialed then.
        let dialed = || req.uri.user.as_deref().and_then(|u| self.parking.lookup(u)).map(|(lot, _)| lot);
        let rules = self.srtp_rules(self.lot_of(call).or_else(dialed), from);
        match crypto::negotiate(&sec, rules, &mut self.srtp.rng) {
            Ok(Negotiated::Srtp { tag, keys, savp }) => {
                tracing::info!(suite = keys.suite.name(), best_effort = !savp, "SRTP (SDES) negotiated");
                Some(LegSrtp { tag, keys, savp, index: None })
            }
            Ok(Negotiated::Plain) => None,
            Err(why) => {
                tracing::warn!(reason = why, "SRTP offer not taken; answering plain RTP");
                None
            }
        }
    }

    /// Gives the media plane a leg's SRTP keys (`None`: plain RTP) and the rollover counter of its stream's next
    /// packet (used only when the keys are new to the plane). Sent before the leg's Hold/Update.
    pub(super) fn srtp_media(&mut self, media_leg: MediaLegId, srtp: Option<&LegSrtp>, roc: u32) {
        self.ep.media(MediaCommand::Srtp { leg: media_leg, keys: srtp.map(|s| Box::new(s.keys.clone())), roc });
    }
}
