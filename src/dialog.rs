//! SIP dialogs (RFC 3261 §12): the state two user agents share, and how in-dialog requests are built from it.
//!
//! Pure data: a dialog never sends anything itself; the engine asks it for a request and hands that to the
//! transaction layer.

use crate::sip::{CSeq, Common, Method, NameAddr, Peer, Request, Response, Transport, Uri, Via};
use std::net::SocketAddr;

/// How parkd finds a dialog for an incoming in-dialog request: the Call-ID and parkd's own tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DialogKey {
    pub call_id: String,
    pub local_tag: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    /// parkd's side (From of requests parkd sends), carrying parkd's tag.
    pub local: NameAddr,
    /// The peer's side, carrying the peer's tag.
    pub remote: NameAddr,
    pub local_seq: u32,
    pub remote_seq: Option<u32>,
    /// Where in-dialog requests go (the peer's Contact).
    pub remote_target: Uri,
    /// Route headers for in-dialog requests, in the order they are sent.
    pub route_set: Vec<NameAddr>,
    /// The transport and address of the next hop for in-dialog requests.
    pub next_hop: Peer,
}

impl Dialog {
    /// The dialog parkd holds as UAS after answering `req` (RFC 3261 §12.1.1): route set = Record-Route as
    /// received, remote target = Contact. `source` is where `req` came from; it is used as the next hop when
    /// the Contact is not an IP literal parkd can reach (parkd does no DNS in the core) or when there is no route set.
    pub fn as_uas(req: &Request, source: Peer, local_tag: &str) -> Dialog {
        let remote_target = req.common.contact.first().map(|c| c.uri.clone()).unwrap_or_else(|| req.common.from.uri.clone());
        let route_set = req.common.record_route.clone();
        let mut local = req.common.to.clone();
        local.params.set("tag", Some(local_tag));
        let mut d = Dialog {
            call_id: req.common.call_id.clone(),
            local,
            remote: req.common.from.clone(),
            local_seq: 0,
            remote_seq: Some(req.common.cseq.seq),
            remote_target,
            route_set,
            next_hop: source,
        };
        d.next_hop = d.compute_next_hop(source);
        d
    }

    /// The dialog parkd holds as UAC once `resp` (a 2xx) answers its `req` (RFC 3261 §12.1.2): route set =
    /// Record-Route reversed.
    pub fn as_uac(req: &Request, resp: &Response, first_hop: Peer) -> Dialog {
        let remote_target = resp.common.contact.first().map(|c| c.uri.clone()).unwrap_or_else(|| req.uri.clone());
        let mut route_set = resp.common.record_route.clone();
        route_set.reverse();
        let mut d = Dialog {
            call_id: req.common.call_id.clone(),
            local: req.common.from.clone(),
            remote: resp.common.to.clone(),
            local_seq: req.common.cseq.seq,
            remote_seq: None,
            remote_target,
            route_set,
            next_hop: first_hop,
        };
        d.next_hop = d.compute_next_hop(first_hop);
        d
    }

    pub fn key(&self) -> DialogKey {
        DialogKey { call_id: self.call_id.clone(), local_tag: self.local_tag().to_string() }
    }
    pub fn local_tag(&self) -> &str {
        self.local.tag().unwrap_or("")
    }
    pub fn remote_tag(&self) -> &str {
        self.remote.tag().unwrap_or("")
    }

    /// The next hop: first Route if any, else the remote target, when either is an IP literal; else `fallback`.
    fn compute_next_hop(&self, fallback: Peer) -> Peer {
        let uri = self.route_set.first().map(|r| &r.uri).unwrap_or(&self.remote_target);
        let transport = if uri.params.value("transport").is_some() { uri.transport() } else { fallback.transport };
        if transport == Transport::Tcp && fallback.transport == Transport::Tcp && self.route_set.is_empty() {
            // A TCP peer is reached over the connection it opened (RFC 3261 §18.2.2; phones rarely listen).
            return fallback;
        }
        match uri_addr(uri) {
            Some(addr) => Peer { transport, addr },
            None => fallback,
        }
    }

    /// An in-dialog request (RFC 3261 §12.2.1.1), loose routing: Request-URI = remote target, Route = route set.
    /// Takes the next local CSeq. `via` is parkd's sent-by, `branch` a fresh branch.
    pub fn request(&mut self, method: Method, via: SocketAddr, branch: &str, contact: &NameAddr) -> Request {
        self.local_seq += 1;
        self.build(method, self.local_seq, via, branch, contact)
    }

    /// The ACK for a 2xx to parkd's INVITE with CSeq `seq` (RFC 3261 §13.2.2.4): same CSeq number, new branch.
    pub fn ack(&self, seq: u32, via: SocketAddr, branch: &str, contact: &NameAddr) -> Request {
        self.build(Method::Ack, seq, via, branch, contact)
    }

    fn build(&self, method: Method, seq: u32, via: SocketAddr, branch: &str, contact: &NameAddr) -> Request {
        let with_contact = matches!(method, Method::Invite | Method::Subscribe | Method::Notify | Method::Refer | Method::Update);
        Request {
            method: method.clone(),
            uri: self.remote_target.without_headers(),
            common: Common {
                max_forwards: Some(70),
                contact: if with_contact { vec![contact.clone()] } else { Vec::new() },
                route: self.route_set.clone(),
                ..Common::new(
                    vec![Via::new(self.next_hop.transport, via, branch)],
                    self.local.clone(),
                    self.remote.clone(),
                    self.call_id.clone(),
                    CSeq { seq, method },
                )
            },
        }
    }

    /// Checks an incoming in-dialog request's CSeq (RFC 3261 §12.2.2): lower than the last one → the request
    /// must be answered 500. Records it otherwise.
    pub fn accept_remote_cseq(&mut self, seq: u32, method: &Method) -> bool {
        if *method == Method::Ack || *method == Method::Cancel {
            return true;
        }
        match self.remote_seq {
            Some(last) if seq < last => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// A target refresh (re-INVITE, UPDATE) replaces the remote target with its Contact (RFC 3261 §12.2.2).
    pub fn refresh_target(&mut self, req: &Request, source: Peer) {
        if let Some(c) = req.common.contact.first() {
            self.remote_target = c.uri.clone();
            self.next_hop = self.compute_next_hop(source);
        }
    }
}

/// The socket address a URI names when its host is an IP literal (default port 5060).
pub fn uri_addr(uri: &Uri) -> Option<SocketAddr> {
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, uri.port.unwrap_or(5060)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Params;

    fn invite() -> Request {
        let mut rr1 = NameAddr::new(Uri::sip(None, "10.0.0.1", Some(5060)));
        rr1.uri.params.set("lr", None);
        let rr2 = NameAddr::new(Uri::sip(None, "10.0.0.2", Some(5060)));
        Request {
            method: Method::Invite,
            uri: Uri::sip(Some("700"), "pbx.example", None),
            common: Common {
                max_forwards: Some(70),
                contact: vec![NameAddr { display: None, uri: Uri::sip(Some("bob"), "127.0.0.1", Some(5070)), params: Params::default() }],
                record_route: vec![rr1, rr2],
                ..Common::new(
                    vec![Via::new(Transport::Udp, "127.0.0.1:5070".parse().unwrap(), "z9hG4bKa")],
                    NameAddr::new(Uri::sip(Some("bob"), "pbx.example", None)).with_tag("ft"),
                    NameAddr::new(Uri::sip(Some("700"), "pbx.example", None)),
                    "cid".into(),
                    CSeq { seq: 5, method: Method::Invite },
                )
            },
        }
    }

    fn peer() -> Peer {
        Peer { transport: Transport::Udp, addr: "127.0.0.1:5070".parse().unwrap() }
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_sends_to_first_route() {
        // RFC 3261 §12.1.1: the UAS's route set is the Record-Route list in order.
        let d = Dialog::as_uas(&invite(), peer(), "lt");
        assert_eq!(d.route_set[0].uri.host, "10.0.0.1");
        assert_eq!(d.next_hop.addr, "10.0.0.1:5060".parse().unwrap());
        assert_eq!(d.local_tag(), "lt");
        assert_eq!(d.remote_tag(), "ft");
    }

    #[test]
    fn bye_uses_remote_target_route_set_and_next_cseq() {
        // RFC 3261 §12.2.1.1: Request-URI = remote target, Route = route set (loose routing), CSeq increments.
        let mut d = Dialog::as_uas(&invite(), peer(), "lt");
        let contact = NameAddr::new(Uri::sip(Some("parkd"), "127.0.0.1", Some(5060)));
        let bye = d.request(Method::Bye, "127.0.0.1:5060".parse().unwrap(), "z9hG4bKb", &contact);
        assert_eq!(bye.uri.to_string(), "sip:bob@127.0.0.1:5070");
        assert_eq!(bye.common.route.len(), 2);
        assert_eq!(bye.common.from.tag(), Some("lt"));
        assert_eq!(bye.common.to.tag(), Some("ft"));
        assert_eq!(bye.common.cseq.seq, 1);
        assert!(bye.common.contact.is_empty());
        let bye2 = d.request(Method::Bye, "127.0.0.1:5060".parse().unwrap(), "z9hG4bKc", &contact);
        assert_eq!(bye2.common.cseq.seq, 2);
    }

    #[test]
    fn lower_remote_cseq_is_refused() {
        // RFC 3261 §12.2.2: a CSeq lower than the remote sequence number → 500.
        let mut d = Dialog::as_uas(&invite(), peer(), "lt");
        assert!(!d.accept_remote_cseq(4, &Method::Bye));
        assert!(d.accept_remote_cseq(6, &Method::Invite));
        assert!(d.accept_remote_cseq(6, &Method::Ack));
    }

    #[test]
    fn without_route_set_next_hop_is_contact() {
        let mut req = invite();
        req.common.record_route.clear();
        let d = Dialog::as_uas(&req, peer(), "lt");
        assert_eq!(d.next_hop.addr, "127.0.0.1:5070".parse().unwrap());
        let mut req2 = invite();
        req2.common.record_route.clear();
        req2.common.contact[0].uri.host = "phone.example".into();
        let d2 = Dialog::as_uas(&req2, peer(), "lt");
        assert_eq!(d2.next_hop, peer(), "a hostname falls back to the request's source");
    }
}
