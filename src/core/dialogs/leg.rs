//! A call leg as plain data: one SIP dialog between parkd and a phone, and the media negotiated in it.
//!
//! Everything here derives serde (the journal writes legs): ids are numbers, the dialog keeps its SIP values as
//! text, a pending INVITE is named by its transaction handle, and the tracing span every log line about the
//! dialog is emitted in is rebuilt from these fields when needed ([`Leg::span`]), not stored.

use crate::core::ids::{CallRef, LegId};
use crate::dialog::Dialog;
use crate::ids::OrbitNumber;
use crate::media::anchor::StreamAnchor;
use crate::media::{Codec, MediaLegId};
use crate::sdp::{self, Direction, LocalSdp, RemoteSdp};
use crate::sip::{Peer, Request};
use crate::txn::ServerTxnId;
use bytes::Bytes;
use std::net::SocketAddr;

/// parkd's codec preference when the offerer allows both.
pub const CODECS: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];
/// RFC 4733 telephone-event payload type parkd offers.
pub const DTMF_PT: u8 = 101;

/// Which side of a call a leg is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LegRole {
    /// The party that was parked (the transferee).
    Parked,
    /// Whoever dialed the orbit to take the call.
    Retriever,
    /// The parker (or fallback destination, or an unpark's destination) parkd called and who answered.
    Recall,
}

/// Where a leg's INVITE handshake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LegState {
    /// 2xx sent, waiting for the ACK.
    Answered { invite: ServerTxnId },
    /// ACK received (or sent, for a call parkd made): media may flow.
    Confirmed,
    /// Restored from the journal (issue 17) with its 2xx unacknowledged: the caller's retransmitted INVITE is
    /// answered from the leg, its ACK confirms it, and with neither it ends (see `core::persist`).
    Unacked,
}

/// The negotiated media of a leg.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegMedia {
    /// parkd's media leg (its RTP port is `media_leg.port()`, the port in `local_sdp`).
    pub media_leg: MediaLegId,
    /// The peer's RTP address from its SDP (None until an offer or answer names one).
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    pub dtmf_pt: Option<u8>,
    /// The peer's stated direction (`sendonly` = it holds us: parkd must not send).
    pub peer_direction: Direction,
    pub local_sdp: LocalSdp,
    /// parkd offered in its 2xx (the INVITE had no SDP); the answer comes in the ACK.
    pub awaiting_answer: bool,
    /// Where parkd's outbound RTP stream to the peer stands (journaling on only: see `core::persist`).
    pub stream: Option<StreamAnchor>,
    /// SRTP (SDES) keys when the leg negotiated `RTP/SAVP` (issue 19; see `core::srtp`). Not in the leg's own
    /// record (the journal's postcard records are not self-describing, so a new field would break reading an
    /// older journal): journaled beside it as `srtp_keys/<leg>` (`core::persist::srtp_keys`) and put back on
    /// the restored leg.
    /// Boxed: most legs are plain RTP, and the keys and index are ~100 bytes.
    #[serde(skip)]
    pub srtp: Option<Box<LegSrtp>>,
    /// RTCP multiplexed on the RTP port (RFC 5761): both offer and answer have `a=rtcp-mux` (parkd's own
    /// offers have it). Not journaled (like `srtp`, a new field would break older journals): a restored leg
    /// answers without it, and its media plane leg turns mux on again when the phone sends RTCP on the RTP port.
    #[serde(skip)]
    pub rtcp_mux: bool,
    /// parkd's RTCP port for the leg when it does not mux (its media thread's, named in `a=rtcp:`, RFC 3605);
    /// 0: none (not journaled: a restored leg gets it again from the port plan, `core::persist`).
    #[serde(skip)]
    pub rtcp_port: u16,
    /// The peer's RTCP port when it does not mux (its `a=rtcp:`, else its RTP port + 1; 0: unknown).
    #[serde(skip)]
    pub peer_rtcp: u16,
}

/// A leg's SRTP: the `a=crypto` tag agreed on and both keys (`Debug` redacts them).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegSrtp {
    pub tag: u32,
    pub keys: crate::media::srtp::SrtpKeys,
    /// The SDP profile is `RTP/SAVP` (false: `RTP/AVP` with `a=crypto`, a best-effort offer's, RFC 8643).
    pub savp: bool,
    /// The outbound stream's anchor last seen and the SRTP index (ROC · 2^16 + seq) of its `seq`: how the
    /// rollover counter is followed without the media plane reporting it (`core::persist::srtp_keys`).
    /// `None` until the leg has an anchor (journaling on).
    #[serde(skip)]
    pub index: Option<(StreamAnchor, u64)>,
}

impl LegSrtp {
    /// parkd's SDP `body` in its SRTP form (RTP/SAVP and parkd's `a=crypto`).
    fn secure(&self, body: Bytes) -> Bytes {
        let line = sdp::crypto::crypto_line(self.tag, self.keys.suite, &self.keys.local);
        sdp::crypto::secure_body(&body, &line, self.savp)
    }
}

/// A usable RTP address from an SDP (not `0.0.0.0`, not port 0).
fn usable(addr: SocketAddr) -> Option<SocketAddr> {
    Some(addr).filter(|a| !a.ip().is_unspecified() && a.port() != 0)
}

impl LegMedia {
    /// Whether parkd may send RTP to the peer (RFC 3264 §5.1 / §6.1).
    pub fn may_send(&self) -> bool {
        matches!(self.peer_direction, Direction::SendRecv | Direction::RecvOnly) && self.remote.is_some()
    }

    /// The media of a leg parkd answers: with the peer's `offer` (an answer with one codec), or parkd's own
    /// offer in the 2xx when the INVITE had none. Returns the media and the SDP body of the 2xx.
    /// With `srtp` (negotiated from the offer), the answer is `RTP/SAVP` with parkd's `a=crypto`. RTCP: an
    /// offer with `a=rtcp-mux` is answered with it, one without with `a=rtcp:` parkd's `rtcp_port`; parkd's own
    /// offer has both.
    pub fn answering(media_leg: MediaLegId, local_sdp: LocalSdp, rtcp_port: u16, offer: Option<&RemoteSdp>, srtp: Option<LegSrtp>) -> (LegMedia, Bytes) {
        let (mut media, body) = Self::answering_plain(media_leg, local_sdp, offer);
        media.rtcp_port = rtcp_port;
        if let Some(o) = offer {
            media.rtcp_mux = o.rtcp_mux;
            media.peer_rtcp = o.rtcp_peer_port();
        }
        let body = media.with_rtcp(&body, offer.is_none());
        match srtp.filter(|_| offer.is_some()) {
            Some(s) => {
                let body = s.secure(body);
                media.srtp = Some(Box::new(s));
                (media, body)
            }
            None => (media, body),
        }
    }

    fn answering_plain(media_leg: MediaLegId, local_sdp: LocalSdp, offer: Option<&RemoteSdp>) -> (LegMedia, Bytes) {
        match offer {
            Some(remote) => {
                let codec = sdp::choose_codec(remote, &CODECS).unwrap_or(Codec::Pcmu);
                let body = sdp::build_answer(&local_sdp, codec, remote.dtmf_pt, remote.direction.reverse());
                let media = LegMedia {
                    media_leg,
                    remote: usable(remote.addr),
                    codec,
                    dtmf_pt: remote.dtmf_pt,
                    peer_direction: remote.direction,
                    local_sdp,
                    awaiting_answer: false,
                    stream: None,
                    srtp: None,
                    rtcp_mux: false,
                    rtcp_port: 0,
                    peer_rtcp: 0,
                };
                (media, body)
            }
            None => {
                let body = sdp::build_offer(&local_sdp, &CODECS, Some(DTMF_PT), Direction::SendRecv);
                let media = LegMedia {
                    media_leg,
                    remote: None,
                    codec: Codec::Pcmu,
                    dtmf_pt: None,
                    peer_direction: Direction::SendRecv,
                    local_sdp,
                    awaiting_answer: true,
                    stream: None,
                    srtp: None,
                    rtcp_mux: false,
                    rtcp_port: 0,
                    peer_rtcp: 0,
                };
                (media, body)
            }
        }
    }

    /// The media of a call parkd made, from the SDP answer in the peer's 2xx (`body`, possibly unusable), its
    /// offer having named `rtcp_port` and offered rtcp-mux: mux when the answer has it.
    pub fn answered(media_leg: MediaLegId, local_sdp: LocalSdp, rtcp_port: u16, body: &[u8]) -> LegMedia {
        let remote = sdp::parse_sdp(body).ok();
        let codec = remote.as_ref().and_then(|s| sdp::choose_codec(s, &CODECS)).unwrap_or(Codec::Pcmu);
        LegMedia {
            media_leg,
            remote: remote.as_ref().and_then(|s| usable(s.addr)),
            codec,
            dtmf_pt: remote.as_ref().and_then(|s| s.dtmf_pt),
            peer_direction: remote.as_ref().map(|s| s.direction).unwrap_or(Direction::SendRecv),
            local_sdp,
            awaiting_answer: false,
            stream: None,
            srtp: None,
            rtcp_mux: remote.as_ref().is_some_and(|s| s.rtcp_mux),
            rtcp_port,
            peer_rtcp: remote.as_ref().map_or(0, RemoteSdp::rtcp_peer_port),
        }
    }

    /// `body` (parkd's SDP, before its `a=crypto`) with its RTCP attributes: an offer (`offering`) has parkd's
    /// `a=rtcp:` port and `a=rtcp-mux`, an answer `a=rtcp-mux` when the leg muxes, else the port.
    fn with_rtcp(&self, body: &[u8], offering: bool) -> Bytes {
        let mux = offering || self.rtcp_mux;
        sdp::with_rtcp(body, self.rtcp_port, offering || !self.rtcp_mux, mux)
    }

    /// Takes an SDP body from the peer (an answer in an ACK, or an offer in a re-INVITE): codec (the current
    /// one preferred), telephone-event, direction, address. False when it cannot be used (nothing changes).
    pub fn apply_remote(&mut self, body: &[u8]) -> bool {
        let Ok(remote) = sdp::parse_sdp(body) else { return false };
        let prefer: [Codec; 2] = if self.codec == Codec::Pcma { [Codec::Pcma, Codec::Pcmu] } else { [Codec::Pcmu, Codec::Pcma] };
        let Some(codec) = sdp::choose_codec(&remote, &prefer) else { return false };
        if let Some(s) = &mut self.srtp {
            // A re-offer may carry a new key for the same suite (RFC 4568 §7.1.4): parkd opens its packets with it.
            let sec = sdp::crypto::offer_security(body);
            let same = |c: &&sdp::crypto::CryptoAttr| c.suite == s.keys.suite;
            if let Some(c) = sec.crypto.iter().filter(same).find(|c| c.tag == s.tag).or_else(|| sec.crypto.iter().find(same)) {
                s.keys.remote = c.key.clone();
            }
        }
        // An offer turns mux on or off (RFC 5761 §5.1.3), and so does the answer to parkd's offer (which has it).
        self.rtcp_mux = remote.rtcp_mux;
        self.peer_rtcp = remote.rtcp_peer_port();
        self.codec = codec;
        self.dtmf_pt = remote.dtmf_pt;
        self.peer_direction = remote.direction;
        if let Some(addr) = usable(remote.addr) {
            self.remote = Some(addr);
        }
        self.awaiting_answer = false;
        true
    }

    /// parkd's SDP in a 2xx sent again for the current state (a restored leg answering a retransmitted INVITE):
    /// the answer to the peer's offer, or the offer when the peer had none.
    pub fn current_body(&self) -> Bytes {
        let body = self.with_rtcp(&self.current_body_plain(), self.awaiting_answer);
        match &self.srtp {
            Some(s) if !self.awaiting_answer => s.secure(body),
            _ => body,
        }
    }

    fn current_body_plain(&self) -> Bytes {
        if self.awaiting_answer {
            sdp::build_offer(&self.local_sdp, &CODECS, Some(DTMF_PT), Direction::SendRecv)
        } else {
            sdp::build_answer(&self.local_sdp, self.codec, self.dtmf_pt, self.peer_direction.reverse())
        }
    }

    /// parkd's SDP in the 2xx to a re-INVITE (or UPDATE): the answer to the offer just applied (direction
    /// mirrored), or a new offer when the request had none (RFC 3264 §5; the answer then comes in the ACK).
    /// Increments the session version (RFC 3264 §8).
    /// An SRTP leg answers with its `a=crypto` again (same tag and key: RFC 4568 §7.1.4 allows keeping them).
    pub fn reanswer(&mut self, had_offer: bool) -> Bytes {
        let plain = self.reanswer_plain(had_offer);
        let body = self.with_rtcp(&plain, !had_offer);
        match &self.srtp {
            Some(s) if had_offer => s.secure(body),
            _ => body,
        }
    }

    fn reanswer_plain(&mut self, had_offer: bool) -> Bytes {
        self.local_sdp.version += 1;
        if had_offer {
            sdp::build_answer(&self.local_sdp, self.codec, self.dtmf_pt, self.peer_direction.reverse())
        } else {
            self.awaiting_answer = true;
            sdp::build_offer(&self.local_sdp, &CODECS, self.dtmf_pt, Direction::SendRecv)
        }
    }
}

/// The SDP offer of an INVITE: `Ok(None)` when it has none (parkd then offers in its 2xx); an error status when
/// it cannot be used.
pub fn read_offer(req: &Request) -> Result<Option<RemoteSdp>, (u16, &'static str)> {
    if req.common.body.is_empty() {
        return Ok(None);
    }
    let is_sdp = req.common.content_type.as_deref().is_none_or(|ct| ct.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !is_sdp {
        return Err((415, "Unsupported Media Type"));
    }
    let remote = sdp::parse_sdp(&req.common.body).map_err(|_| (488u16, "Not Acceptable Here"))?;
    if sdp::choose_codec(&remote, &CODECS).is_none() {
        return Err((488, "Not Acceptable Here: PCMU or PCMA required"));
    }
    Ok(Some(remote))
}

/// A call leg: one dialog between parkd and a phone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Leg {
    pub id: LegId,
    /// The call the leg belongs to (a parked call, or the bridge it became).
    pub call: CallRef,
    pub role: LegRole,
    pub state: LegState,
    pub dialog: Dialog,
    /// Where the dialog-creating request came from (or went to).
    pub source: Peer,
    pub media: LegMedia,
    /// The orbit the call was parked in (its number, for logs).
    pub orbit: OrbitNumber,
    /// For a dialog parkd started: the ACK it sent and where (re-sent when the 2xx is retransmitted). Boxed:
    /// most legs are answered, not started, by parkd (serde writes a box as its content).
    pub uac_ack: Option<Box<(Peer, Vec<u8>)>>,
    /// The session timer agreed in this dialog (RFC 4028; `core::session_timers`), if any. Not in the leg's own
    /// record (a new field would break reading an older journal): journaled beside it as
    /// `session_timers/<call>` (`core::persist::stimers`).
    /// Boxed: most legs have none, and a leg's size is per-call memory (`mem_sizes.rs`).
    #[serde(skip)]
    pub timer: Option<Box<super::timer::SessionTimer>>,
}

impl Leg {
    /// The span every log line about this dialog is emitted in (call-id, orbit, role), built from the leg's
    /// fields when it is needed (a span is not plain data; the leg is).
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("dialog", call_id = %self.dialog.call_id, orbit = %self.orbit, role = ?self.role)
    }

    /// The ACK to re-send for a retransmitted 2xx, if parkd started this dialog.
    pub fn ack_again(&self) -> Option<(Peer, Bytes)> {
        self.uac_ack.as_deref().map(|(to, ack)| (*to, Bytes::copy_from_slice(ack)))
    }
}
