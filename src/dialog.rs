//! SIP dialogs (RFC 3261 §12): the state two user agents share, and how in-dialog requests are built from it.
//!
//! Pure data: a dialog never sends anything itself; the engine asks it for a request and hands that to the
//! transaction layer. It is serde plain data (for the journal): names and URIs are kept in their SIP text form
//! ([`text`]), so a stored dialog reads like the headers it came from.

pub use crate::ids::CallId;
use crate::sip::{CSeq, Common, Method, NameAddr, Peer, Request, Response, Uri, Via};
use std::net::SocketAddr;

/// How parkd finds a dialog for an incoming in-dialog request: the Call-ID and parkd's own tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DialogKey {
    pub call_id: CallId,
    pub local_tag: String,
}

/// One dialog. parkd holds one per call leg for as long as the call lasts, so the two name-addrs and the remote
/// target are kept as their SIP text (one string each, parsed when a request is built: a few per call) rather than
/// parsed (some 200 bytes inline and half a dozen small strings each); the tags, read for every in-dialog message,
/// are kept apart. Journaled exactly as before ([`wire`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: CallId,
    /// parkd's side (From of requests parkd sends), carrying parkd's tag, as SIP text.
    local: Box<str>,
    /// The peer's side, carrying the peer's tag, as SIP text.
    remote: Box<str>,
    local_tag: Box<str>,
    remote_tag: Box<str>,
    pub local_seq: u32,
    pub remote_seq: Option<u32>,
    /// Where in-dialog requests go (the peer's Contact), as SIP text.
    remote_target: Box<str>,
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
        let mut d = Dialog::new(req.common.call_id.as_str().into(), &local, &req.common.from, 0, Some(req.common.cseq.seq), &remote_target, route_set, source);
        d.next_hop = d.compute_next_hop(source);
        d
    }

    /// The dialog parkd holds as UAC once `resp` (a 2xx) answers its `req` (RFC 3261 §12.1.2): route set =
    /// Record-Route reversed.
    pub fn as_uac(req: &Request, resp: &Response, first_hop: Peer) -> Dialog {
        let remote_target = resp.common.contact.first().map(|c| c.uri.clone()).unwrap_or_else(|| req.uri.clone());
        let mut route_set = resp.common.record_route.clone();
        route_set.reverse();
        let mut d = Dialog::new(req.common.call_id.as_str().into(), &req.common.from, &resp.common.to, req.common.cseq.seq, None, &remote_target, route_set, first_hop);
        d.next_hop = d.compute_next_hop(first_hop);
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn new(call_id: CallId, local: &NameAddr, remote: &NameAddr, local_seq: u32, remote_seq: Option<u32>, remote_target: &Uri, route_set: Vec<NameAddr>, next_hop: Peer) -> Dialog {
        Dialog {
            call_id,
            local: local.to_string().into(),
            remote: remote.to_string().into(),
            local_tag: local.tag().unwrap_or("").into(),
            remote_tag: remote.tag().unwrap_or("").into(),
            local_seq,
            remote_seq,
            remote_target: remote_target.to_string().into(),
            route_set,
            next_hop,
        }
    }

    /// parkd's side (From of the requests parkd sends), with parkd's tag.
    pub fn local(&self) -> NameAddr {
        parse_kept_name_addr(&self.local)
    }
    /// The peer's side, with the peer's tag.
    pub fn remote(&self) -> NameAddr {
        parse_kept_name_addr(&self.remote)
    }
    /// The peer's identity: its name-addr without the tag or other parameters.
    pub fn remote_identity(&self) -> NameAddr {
        let mut na = self.remote();
        na.params = Default::default();
        na
    }
    /// Where in-dialog requests go (the peer's Contact, or its last target refresh).
    pub fn remote_target(&self) -> Uri {
        crate::sip::parse_uri(&self.remote_target).unwrap_or_else(|_| {
            debug_assert!(false, "a kept remote target does not parse: {:?}", self.remote_target);
            Uri::sip(None, "invalid", None)
        })
    }

    pub fn key(&self) -> DialogKey {
        DialogKey { call_id: self.call_id.clone(), local_tag: self.local_tag().to_string() }
    }
    pub fn local_tag(&self) -> &str {
        &self.local_tag
    }
    pub fn remote_tag(&self) -> &str {
        &self.remote_tag
    }

    /// The next hop: first Route if any, else the remote target, when either is an IP literal; else `fallback`.
    fn compute_next_hop(&self, fallback: Peer) -> Peer {
        let target;
        let uri = match self.route_set.first() {
            Some(r) => &r.uri,
            None => {
                target = self.remote_target();
                &target
            }
        };
        let transport = if uri.names_transport() { uri.transport() } else { fallback.transport };
        if transport.is_reliable() && fallback.transport == transport && self.route_set.is_empty() {
            // A TCP or TLS peer is reached over the connection it opened (RFC 3261 §18.2.2; phones rarely listen).
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
            uri: self.remote_target().without_headers(),
            common: Common {
                max_forwards: Some(70),
                contact: if with_contact { vec![contact.clone()] } else { Vec::new() },
                route: self.route_set.clone(),
                ..Common::new(
                    vec![Via::new(self.next_hop.transport, via, branch)],
                    self.local(),
                    self.remote(),
                    self.call_id.as_str().into(),
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
            self.remote_target = c.uri.to_string().into();
            self.next_hop = self.compute_next_hop(source);
        }
    }
}

/// A name-addr the dialog wrote with `Display` itself (it parses back; anything else is a bug, not input).
fn parse_kept_name_addr(text: &str) -> NameAddr {
    crate::sip::parse_name_addr(text).unwrap_or_else(|_| {
        debug_assert!(false, "a kept name-addr does not parse: {text:?}");
        NameAddr::new(Uri::sip(None, "invalid", None))
    })
}

/// The journal form of a [`Dialog`]: the fields in their old order, the name-addrs and target as text, so records
/// written before the dialog kept text read back unchanged (and the other way round). Read back, the texts are
/// parsed once to check them and take the tags.
mod wire {
    use super::{text, CallId, Dialog, NameAddr, Peer};
    use crate::sip::{parse_name_addr, parse_uri};
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Out<'a> {
        call_id: &'a CallId,
        local: &'a str,
        remote: &'a str,
        local_seq: u32,
        remote_seq: Option<u32>,
        remote_target: &'a str,
        #[serde(serialize_with = "routes")]
        route_set: &'a [NameAddr],
        next_hop: &'a Peer,
    }

    fn routes<S: Serializer>(v: &&[NameAddr], s: S) -> Result<S::Ok, S::Error> {
        text::name_addrs::serialize(v, s)
    }

    #[derive(Deserialize)]
    struct In {
        call_id: CallId,
        local: String,
        remote: String,
        local_seq: u32,
        remote_seq: Option<u32>,
        remote_target: String,
        #[serde(with = "text::name_addrs")]
        route_set: Vec<NameAddr>,
        next_hop: Peer,
    }

    impl Serialize for Dialog {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            Out {
                call_id: &self.call_id,
                local: &self.local,
                remote: &self.remote,
                local_seq: self.local_seq,
                remote_seq: self.remote_seq,
                remote_target: &self.remote_target,
                route_set: &self.route_set,
                next_hop: &self.next_hop,
            }
            .serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for Dialog {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dialog, D::Error> {
            let w = In::deserialize(d)?;
            let name = |t: &str| parse_name_addr(t).map_err(|e| D::Error::custom(format!("bad name-addr {t:?}: {e}")));
            let (local, remote) = (name(&w.local)?, name(&w.remote)?);
            let target = parse_uri(&w.remote_target).map_err(|e| D::Error::custom(format!("bad URI {:?}: {e}", w.remote_target)))?;
            Ok(Dialog::new(w.call_id, &local, &remote, w.local_seq, w.remote_seq, &target, w.route_set, w.next_hop))
        }
    }
}

/// Serde adapters that keep SIP values in their text form (`"Bob" <sip:bob@10.0.0.1>;tag=a1`,
/// `sip:700@parkd`): written with their `Display`, read back with parkd's own parsers. For
/// `#[serde(with = "...")]` on plain-data fields of the rooms.
pub mod text {
    use crate::sip::{parse_name_addr, parse_uri, NameAddr, Uri};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    /// A [`Uri`] as its text.
    pub mod uri {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Uri, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(v)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uri, D::Error> {
            let text = String::deserialize(d)?;
            parse_uri(&text).map_err(|e| D::Error::custom(format!("bad URI {text:?}: {e}")))
        }
    }

    /// A [`NameAddr`] as its text.
    pub mod name_addr {
        use super::*;
        pub fn serialize<S: Serializer>(v: &NameAddr, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(v)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NameAddr, D::Error> {
            let text = String::deserialize(d)?;
            parse_name_addr(&text).map_err(|e| D::Error::custom(format!("bad name-addr {text:?}: {e}")))
        }
    }

    /// An optional [`NameAddr`] as its text.
    pub mod opt_name_addr {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<NameAddr>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&v.to_string()),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NameAddr>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| parse_name_addr(&text).map_err(|e| D::Error::custom(format!("bad name-addr {text:?}: {e}"))))
                .transpose()
        }
    }

    /// An optional boxed [`NameAddr`]: written exactly as [`opt_name_addr`] writes the unboxed one.
    pub mod opt_boxed_name_addr {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<Box<NameAddr>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&v.to_string()),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<NameAddr>>, D::Error> {
            Ok(super::opt_name_addr::deserialize(d)?.map(Box::new))
        }
    }

    /// A list of [`NameAddr`]s (a route set), each as its text.
    pub mod name_addrs {
        use super::*;
        use serde::ser::SerializeSeq;
        pub fn serialize<S: Serializer>(v: &[NameAddr], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for na in v {
                seq.serialize_element(&na.to_string())?;
            }
            seq.end()
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NameAddr>, D::Error> {
            Vec::<String>::deserialize(d)?
                .into_iter()
                .map(|text| parse_name_addr(&text).map_err(|e| D::Error::custom(format!("bad name-addr {text:?}: {e}"))))
                .collect()
        }
    }
}

/// The socket address a URI names when its host is an IP literal (default port 5060).
pub fn uri_addr(uri: &Uri) -> Option<SocketAddr> {
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, uri.port.unwrap_or_else(|| uri.transport().default_port())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Params, Transport};

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
    fn remote_identity_is_the_peer_without_its_tag() {
        let mut req = invite();
        req.common.from.display = Some("Bob".into());
        let d = Dialog::as_uas(&req, peer(), "lt");
        assert_eq!(d.remote().tag(), Some("ft"));
        let id = d.remote_identity();
        assert_eq!((id.display.as_deref(), id.uri.to_string(), id.tag()), (Some("Bob"), "sip:bob@pbx.example".to_string(), None));
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
    fn a_dialog_is_plain_data_that_survives_a_round_trip() {
        // What the journal will do with it: postcard bytes, then the same dialog back.
        let mut req = invite();
        req.common.from.display = Some("Bob \"the\" Builder".into());
        req.common.contact[0].uri.params.set("transport", Some("tcp"));
        let mut d = Dialog::as_uas(&req, peer(), "lt");
        d.accept_remote_cseq(9, &Method::Invite);
        let bytes = postcard::to_allocvec(&d).unwrap();
        let back: Dialog = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, d);
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains(r#""remote":"\"Bob \\\"the\\\" Builder\" <sip:bob@pbx.example>;tag=ft""#), "{json}");
    }

    /// The dialog as it was journaled before it kept text: parsed fields, each written as its text.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct ParsedDialog {
        call_id: CallId,
        #[serde(with = "text::name_addr")]
        local: NameAddr,
        #[serde(with = "text::name_addr")]
        remote: NameAddr,
        local_seq: u32,
        remote_seq: Option<u32>,
        #[serde(with = "text::uri")]
        remote_target: Uri,
        #[serde(with = "text::name_addrs")]
        route_set: Vec<NameAddr>,
        next_hop: Peer,
    }

    /// Journal records written by the parsed dialog read back into the text-keeping one and the other way round,
    /// byte for byte, and the accessors give what the parsed fields held.
    #[test]
    fn the_journal_form_is_the_parsed_dialogs() {
        let mut req = invite();
        req.common.from.display = Some("Bob \"the\" Builder".into());
        let d = Dialog::as_uas(&req, peer(), "lt");
        let mut local = req.common.to.clone();
        local.params.set("tag", Some("lt"));
        let old = ParsedDialog {
            call_id: d.call_id.clone(),
            local: local.clone(),
            remote: req.common.from.clone(),
            local_seq: d.local_seq,
            remote_seq: d.remote_seq,
            remote_target: req.common.contact[0].uri.clone(),
            route_set: d.route_set.clone(),
            next_hop: d.next_hop,
        };
        let old_bytes = postcard::to_allocvec(&old).unwrap();
        assert_eq!(postcard::to_allocvec(&d).unwrap(), old_bytes, "same record bytes");
        let back: Dialog = postcard::from_bytes(&old_bytes).unwrap();
        assert_eq!(back, d);
        assert_eq!((back.local(), back.remote(), back.remote_target()), (local, req.common.from.clone(), req.common.contact[0].uri.clone()));
        assert_eq!((back.local_tag(), back.remote_tag()), ("lt", "ft"));
        // A record whose name-addr does not parse is refused (as before), not kept.
        let mut bad = old_bytes.clone();
        let at = bad.windows(4).position(|w| w == b"<sip").unwrap();
        bad[at] = b'>';
        assert!(postcard::from_bytes::<Dialog>(&bad).is_err());
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
