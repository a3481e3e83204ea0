//! SRTP in the core (issue 19): the lot's policy applied to an INVITE's offer, parkd's SDES keys for the
//! answer, and the keys handed to the media plane. The SDP side is [`crate::sdp::crypto`], the packet side
//! [`crate::media::srtp`].
//!
//! Keys come from a ChaCha RNG ([`rand::rngs::StdRng`]) owned here: seeded from the core's seed (tests are
//! reproducible), and reseeded by the binary from the OS ([`Core::seed_srtp_keys`]) so that keys cannot be
//! predicted from the (clock-derived) core seed. Nothing here logs a key.
//!
//! The calls parkd starts offer SRTP by the same rules ([`OfferedSrtp`]).

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::dialogs::LegSrtp;
use super::ids::CallRef;
use super::Core;
use crate::media::{MediaCommand, MediaLegId};
use crate::media::srtp::{MasterKey, SrtpSuite};
use crate::sdp::crypto::{self, CryptoAttr, Negotiated, SrtpPolicy, SrtpRules};
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
        let dialed = || self.lookup_request(req).map(|(lot, _)| lot);
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
        self.ep.media(MediaCommand::Srtp { leg: media_leg, keys: srtp.map(|s| Box::new(s.keys.clone())), roc, srtcp: 0 });
    }
}

/// SRTP on the calls parkd starts (recalls, fallback calls, API unparks, a cluster fetch): the `a=crypto` lines
/// parkd offered (one fresh key per suite, parkd's preference order) and the lot's policy, kept until the answer.
///
/// The rule is the inbound one seen from the other side. SDES keys travel in the INVITE's body to the next hop,
/// so they are offered only when that hop is TLS (a `sips:` or `transport=tls` target without an outbound proxy,
/// or a TLS outbound proxy), or when `srtp_over_plain` allows plain UDP/TCP; and never when the lot's `srtp` is
/// `"off"`. Then:
/// * `optional`: `RTP/SAVP` with the keys when they may be sent, else the plain `RTP/AVP` offer as before. A 488
///   to the SRTP offer is tried once more with a plain offer; a plain answer (`RTP/AVP`, no `a=crypto`) is taken
///   as plain RTP.
/// * `required`: `RTP/SAVP` with the keys when they may be sent. When they may not, no INVITE is sent at all (no
///   keys in clear, no plain call): the attempt fails before it starts, like a plain offer refused 488 inbound,
///   so a recall goes on to its next target (the fallback URI, then the next round), an API unpark is refused
///   (503) and a cluster fetch answers the retriever 488. A 488 or a plain answer is a failed attempt (a 2xx is
///   ACKed and ended with a BYE), and the recall's fallback logic applies (reported as status 488).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedSrtp {
    /// The offered lines with parkd's own key for each (the key parkd protects with if that line is chosen).
    pub lines: Vec<CryptoAttr>,
    pub policy: SrtpPolicy,
}

/// Why an outgoing call may not be started: the lot requires SRTP and the keys may not be sent to the next hop.
pub const NO_KEYS_TO_HOP: &str = "SRTP required but SDES keys may not be sent to this hop (not TLS, srtp_over_plain off)";

impl OfferedSrtp {
    /// parkd's plain offer `body` in its SRTP form: `RTP/SAVP` and every offered `a=crypto`.
    pub fn secure(&self, body: &[u8]) -> bytes::Bytes {
        let lines: String = self.lines.iter().map(|c| crypto::crypto_line(c.tag, c.suite, &c.key)).collect();
        crypto::secure_body(body, &lines, true)
    }

    /// The leg's SRTP from the 2xx's SDP `body`: `Ok(Some)` the chosen line's keys (parkd's key for that tag
    /// protects, the answer's key opens), `Ok(None)` a plain answer the `optional` policy accepts, `Err` the
    /// reason the answer cannot be used (a failed attempt).
    pub fn answered(&self, body: &[u8]) -> Result<Option<LegSrtp>, &'static str> {
        let sec = crypto::offer_security(body);
        let chosen = sec.crypto.iter().find_map(|a| self.lines.iter().find(|o| o.tag == a.tag && o.suite == a.suite).map(|o| (o, a)));
        match chosen {
            Some((ours, theirs)) => {
                let keys = crate::media::srtp::SrtpKeys { suite: ours.suite, local: ours.key.clone(), remote: theirs.key.clone() };
                Ok(Some(LegSrtp { tag: ours.tag, keys, savp: true, index: None }))
            }
            None if sec.savp || !sec.crypto.is_empty() => Err("the answer's a=crypto matches no offered suite"),
            None if self.policy == SrtpPolicy::Required => Err("SRTP required but the answer is plain RTP"),
            None => Ok(None),
        }
    }

    /// Whether a 488 to this offer is tried again with a plain one (`optional`).
    pub fn plain_retry(&self) -> bool {
        self.policy == SrtpPolicy::Optional
    }
}

impl Core {
    /// The SRTP of an outgoing call's offer for a call of `lot` sent to `hop` ([`OfferedSrtp`] says the rule):
    /// `Ok(None)` a plain offer, `Ok(Some)` an SRTP offer with fresh keys from the key RNG, `Err` the lot
    /// requires SRTP and the keys may not go to `hop` (nothing is sent). `plain` asks for a plain offer (the
    /// retry after a 488 under `optional`).
    pub(super) fn srtp_offer(&mut self, lot: Option<usize>, hop: &Peer, plain: bool) -> Result<Option<OfferedSrtp>, &'static str> {
        let rules = self.srtp_rules(lot, hop);
        let keys_allowed = rules.over_tls || rules.over_plain_allowed;
        match rules.policy {
            SrtpPolicy::Off => return Ok(None),
            SrtpPolicy::Optional if plain || !keys_allowed => return Ok(None),
            SrtpPolicy::Required if !keys_allowed => return Err(NO_KEYS_TO_HOP),
            _ => {}
        }
        let lines = SrtpSuite::ALL
            .into_iter()
            .zip(1u32..)
            .filter_map(|(suite, tag)| {
                let mut raw = vec![0u8; suite.master_len()];
                self.srtp.rng.fill_bytes(&mut raw);
                let key = MasterKey::new(suite, &raw);
                raw.fill(0);
                Some(CryptoAttr { tag, suite, key: key? })
            })
            .collect();
        Ok(Some(OfferedSrtp { lines, policy: rules.policy }))
    }
}
