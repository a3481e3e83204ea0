//! Calls parkd makes for a parked call (a recall round, an API unpark) as plain data: what it keeps of the
//! INVITE, the call while it rings, and one it gave up on whose INVITE may still be answered.

use crate::core::events::RecallTarget;
use crate::core::originate::OriginateSpec;
use crate::core::srtp::OfferedSrtp;
use crate::dialog::text;
use crate::media::MediaLegId;
use crate::sdp::LocalSdp;
use crate::sip::{CSeq, Common, Method, NameAddr, Peer, Request, Transport, Uri, Via};
use crate::time::Time;
use crate::txn::ClientTxnId;
use std::net::SocketAddr;

/// What parkd keeps of an INVITE it sent: enough to CANCEL it (RFC 3261 §9.1: same Request-URI, Call-ID,
/// From, To, CSeq number, top Via and Route) and to form the dialog from its 2xx (§12.1.2). Plain data, not the
/// whole request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutgoingInvite {
    #[serde(with = "text::uri")]
    pub uri: Uri,
    #[serde(with = "text::name_addr")]
    pub from: NameAddr,
    #[serde(with = "text::name_addr")]
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: u32,
    /// The top (and only) Via: parkd's sent-by, the transport and the branch.
    pub sent_by: SocketAddr,
    pub transport: Transport,
    pub branch: String,
    #[serde(with = "text::name_addrs")]
    pub route: Vec<NameAddr>,
}

impl OutgoingInvite {
    /// What to keep of `invite`, sent from `sent_by` over `transport` with top-Via branch `branch`.
    pub fn of(invite: Request, sent_by: SocketAddr, transport: Transport, branch: String) -> OutgoingInvite {
        let Common { from, to, call_id, cseq, route, .. } = invite.common;
        OutgoingInvite { uri: invite.uri, from, to, call_id: call_id.into(), cseq: cseq.seq, sent_by, transport, branch, route }
    }

    /// The INVITE's identifying fields as a request of `method` (no Contact, other headers or body): the
    /// dialog is formed from it, and its CANCEL is exactly this with method CANCEL.
    pub fn shape(&self, method: Method) -> Request {
        let via = Via::new(self.transport, self.sent_by, &self.branch);
        let cseq = CSeq { seq: self.cseq, method: method.clone() };
        Request {
            method,
            uri: self.uri.clone(),
            common: Common {
                max_forwards: Some(70),
                route: self.route.clone(),
                ..Common::new(vec![via], self.from.clone(), self.to.clone(), self.call_id.as_str().into(), cseq)
            },
        }
    }
}

/// An outgoing call ringing for a parked call (a recall round or an API unpark) and what is known of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recall {
    pub txn: ClientTxnId,
    pub invite: OutgoingInvite,
    pub next_hop: Peer,
    pub target: RecallTarget,
    /// The media leg offered in the INVITE (its port is in `local_sdp`).
    pub media_leg: MediaLegId,
    pub local_sdp: LocalSdp,
    pub ring_until: Time,
    /// A provisional response arrived (a CANCEL may be sent, RFC 3261 §9.1).
    pub provisional: bool,
    /// The SRTP offered in the INVITE (issue 19, [`OfferedSrtp`]: parkd's keys, secret). Not journaled: a recall
    /// ringing at a crash is CANCELled and started again, with fresh keys.
    #[serde(skip)]
    pub srtp: Option<OfferedSrtp>,
    /// What to call again with a plain offer when the SRTP offer gets 488 (`srtp = "optional"`; once).
    #[serde(skip)]
    pub(in crate::core) plain_retry: Option<OriginateSpec>,
}

/// A call parkd gave up on (retrieved meanwhile, parked party gone, rang too long) whose INVITE may still be
/// answered: it is CANCELled once that is allowed, and a late 2xx is ACKed and BYEd (RFC 3261 §9.1, §15).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Orphan {
    pub invite: OutgoingInvite,
    pub next_hop: Peer,
    pub cancel_sent: bool,
    /// Someone else took the call (a retrieve, a swap): the CANCEL / BYE say so with
    /// `Reason: SIP;cause=200;text="Call completed elsewhere"` (RFC 3326), so the parker's phone does not log a
    /// missed call. Not for a recall that simply went unanswered or a call that ended.
    pub completed_elsewhere: bool,
}
