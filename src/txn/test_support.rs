//! Test helpers: request/response builders and a virtual-time driver for [`TxnLayer`].

use super::{TxnLayer, TxnOutput};
use crate::sip::{CSeq, Common, Method, NameAddr, Params, Peer, Request, Response, Transport, Uri, Via};
use crate::time::Time;
use std::time::Duration;

/// A UA's sent-by (and source address).
pub(crate) const UA: &str = "192.0.2.10:5060";
/// Another UA.
pub(crate) const UA2: &str = "192.0.2.11:5060";

pub(crate) fn udp(addr: &str) -> Peer {
    Peer { transport: Transport::Udp, addr: addr.parse().expect("test address") }
}

pub(crate) fn tcp(addr: &str) -> Peer {
    Peer { transport: Transport::Tcp, addr: addr.parse().expect("test address") }
}

/// Start of every scenario.
pub(crate) fn t0() -> Time {
    Time::from_secs(1_000)
}

/// `t0() + ms`.
pub(crate) fn at(ms: u64) -> Time {
    t0() + Duration::from_millis(ms)
}

/// A request from `sent_by` with a top Via (UDP, given branch, no rport), tags and CSeq 1.
pub(crate) fn request(method: Method, branch: &str, sent_by: &str) -> Request {
    let addr: std::net::SocketAddr = sent_by.parse().expect("test address");
    let mut params = Params::default();
    params.set("branch", Some(branch));
    let via = Via { transport: "UDP".into(), host: addr.ip().to_string().into(), port: Some(addr.port()), params };
    let cseq_method = method.clone();
    Request {
        method,
        uri: Uri::sip(Some("700"), "parkd.example", None),
        common: Common {
            max_forwards: Some(70),
            ..Common::new(
                vec![via],
                NameAddr::new(Uri::sip(Some("alice"), "pbx.example", None)).with_tag("ftag"),
                NameAddr::new(Uri::sip(Some("700"), "parkd.example", None)),
                "call-1@pbx".into(),
                CSeq { seq: 1, method: cseq_method },
            )
        },
    }
}

/// A response to `req` with To tag `srv` (none on a 100).
pub(crate) fn response_to(req: &Request, status: u16) -> Response {
    Response::to_request(req, status, crate::sip::reason_phrase(status), Some("srv"))
}

/// Drains every pending output.
pub(crate) fn drain(layer: &mut TxnLayer) -> Vec<TxnOutput> {
    std::iter::from_fn(|| layer.poll_output()).collect()
}

/// Drives the layer in virtual time up to `end` (inclusive): returns every output with the offset (ms from
/// `t0()`) of the deadline that produced it. Outputs already pending are reported at offset 0.
pub(crate) fn run_until(layer: &mut TxnLayer, end: Time) -> Vec<(u64, TxnOutput)> {
    let mut out: Vec<(u64, TxnOutput)> = drain(layer).into_iter().map(|o| (0, o)).collect();
    while let Some(t) = layer.poll_timeout() {
        if t > end {
            break;
        }
        layer.handle_timeout(t);
        let ms = (t - t0()).as_millis() as u64;
        out.extend(drain(layer).into_iter().map(|o| (ms, o)));
    }
    out
}

/// Offsets (ms) of the transmits among `outs`.
pub(crate) fn transmit_times(outs: &[(u64, TxnOutput)]) -> Vec<u64> {
    outs.iter().filter(|(_, o)| matches!(o, TxnOutput::Transmit { .. })).map(|(t, _)| *t).collect()
}

/// Events among `outs`, with their offsets.
pub(crate) fn events(outs: &[(u64, TxnOutput)]) -> Vec<(u64, super::TxnEvent)> {
    outs.iter()
        .filter_map(|(t, o)| match o {
            TxnOutput::Event(e) => Some((*t, e.clone())),
            _ => None,
        })
        .collect()
}

/// The bytes of the single transmit in `outs`, as text, with its destination.
pub(crate) fn only_transmit(outs: &[TxnOutput]) -> (Peer, String) {
    assert_eq!(outs.len(), 1, "expected exactly one output, got {outs:?}");
    match &outs[0] {
        TxnOutput::Transmit { to, bytes } => (*to, String::from_utf8(bytes.to_vec()).expect("utf8")),
        other => panic!("expected a transmit, got {other:?}"),
    }
}

/// The retransmission schedule E/G follow with default timers up to 32 s (ms after the first send).
pub(crate) const CAPPED_SCHEDULE: [u64; 10] = [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500];
