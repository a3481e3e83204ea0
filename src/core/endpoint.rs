//! parkd's SIP endpoint: what every room uses to talk to the network, and nothing about calls.
//!
//! * the transaction layer ([`TxnLayer`]) and the **purpose table**: what each client transaction parkd started
//!   is for ([`Purpose`]), so its response or timeout reaches the room that sent it;
//! * ids, tags, branches and SDP session ids, from one seeded RNG (a test run is reproducible);
//! * parkd's own address (Via sent-by, Contact, and which Route entries and Vias are its own) and the outbound
//!   proxy;
//! * the output queue the driver drains ([`Endpoint::poll_output`]).
//!
//! Rooms answer requests with [`Endpoint::respond`] / [`Endpoint::refuse`], send requests with
//! [`Endpoint::send`] (a client transaction and its purpose), report [`ParkEvent`]s with [`Endpoint::emit`]
//! and ask the media plane for things with [`Endpoint::media`].

use super::blf::SubId;
use super::ids::{CallRef, LegId};
use super::reply::PRODUCT;
use super::{Output, ParkEvent};
use crate::dialog::Dialog;
use crate::media::MediaCommand;
use crate::sip::{reason_phrase, Method, NameAddr, Peer, Request, Response, Transport, Uri};
use crate::time::Time;
use crate::txn::{ClientTxnId, MsgKind, ServerTxnId, TimerConfig, TxnEvent, TxnLayer, TxnOutput};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// What a client transaction parkd started is for, so its outcome can be routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Purpose {
    /// A BYE that ends a leg parkd already forgot.
    Bye,
    /// A NOTIFY (REFER progress); its outcome changes nothing.
    Notify,
    /// A CANCEL of a recall parkd gave up on.
    Cancel,
    /// The recall (or unpark) INVITE of a parked call, still ringing.
    Recall(CallRef),
    /// An in-dialog OPTIONS checking that a parked party is still there.
    Keepalive(CallRef),
    /// A recall INVITE that was answered: 2xx retransmissions are re-ACKed from this leg.
    RecallAnswered { leg: LegId },
    /// A recall INVITE parkd gave up on.
    OrphanRecall,
    /// A BLF NOTIFY of that subscription.
    BlfNotify(SubId),
    /// An in-dialog OPTIONS asking the peer of a leg restored before its ACK whether it is in the call (issue 17).
    Probe { leg: LegId, last: bool },
    /// The CANCEL of a recall that was ringing when parkd stopped (issue 17), for the call it rang for.
    RestoredCancel(CallRef),
    /// The INVITE of a retrieve sent to the node holding the orbit (`cluster_fetch.rs`), under the bridge's id.
    ClusterFetch(CallRef),
    /// A session refresh (RFC 4028: UPDATE or re-INVITE) parkd sent in leg's dialog; a re-INVITE's 2xx
    /// retransmissions are re-ACKed from the leg.
    SessionRefresh(LegId),
    /// A direct-media re-INVITE (`direct_media.rs`) of that bridge (or re-parked call), sent in `leg`'s dialog
    /// (its 2xx retransmissions are re-ACKed there).
    DirectMedia { call: CallRef, leg: LegId },
}

/// The endpoint (see the module doc).
#[derive(Debug)]
pub struct Endpoint {
    pub(super) txn: TxnLayer,
    /// Keyed by handles parkd mints: the fast Fx hash is safe.
    purposes: FxHashMap<ClientTxnId, Purpose>,
    rng: SmallRng,
    next_id: u64,
    out: VecDeque<Output>,
    /// parkd's own sent-by and Contact.
    pub(super) local_addr: SocketAddr,
    /// The address parkd's SDP names.
    pub(super) media_ip: IpAddr,
    /// The outbound proxy as a Route entry and its address.
    pub(super) outbound_proxy: Option<(NameAddr, Peer)>,
    /// The address parkd listens on (a Route naming it names parkd too).
    listen: SocketAddr,
    /// parkd's address for peers of the other IP family (`listen = "[::]:5060"`, issue 19): its sent-by and
    /// Contact address, and the address its SDP names. `None`: one family only.
    other_family: Option<SocketAddr>,
    /// parkd's sent-by and Contact on TLS legs (the advertised IP, the TLS port), with TLS on.
    tls_addr: Option<SocketAddr>,
    /// This core is shard `.0` of `.1` SIP shards (`[server] sip_threads`; `(0, 1)`: not sharded): its
    /// Contacts carry `;parkd-shard=K` and the Call-IDs it invents hash to it ([`crate::sip::shard`]).
    shard: (usize, usize),
}

impl Endpoint {
    pub fn new(timers: TimerConfig, seed: u64, (local_addr, listen): (SocketAddr, SocketAddr), media_ip: IpAddr, outbound_proxy: Option<(NameAddr, Peer)>) -> Endpoint {
        Endpoint {
            txn: TxnLayer::new(timers),
            purposes: FxHashMap::default(),
            rng: SmallRng::seed_from_u64(seed),
            next_id: 1,
            out: VecDeque::new(),
            local_addr,
            media_ip,
            outbound_proxy,
            listen,
            other_family: None,
            tls_addr: None,
            shard: (0, 1),
        }
    }

    /// Makes this endpoint shard `k` of `n` (see the `shard` field).
    pub fn set_shard(&mut self, k: usize, n: usize) {
        self.shard = (k, n.max(1));
    }

    /// `(k, n)`: this is shard `k` of `n`.
    pub fn shard(&self) -> (usize, usize) {
        self.shard
    }

    /// A fresh Call-ID `<prefix>-<hex>@<host>` for a dialog parkd starts, drawn until it hashes to this shard
    /// (about `n` draws), so the answers and in-dialog requests of that dialog are routed back here.
    pub fn new_call_id(&mut self, prefix: &str, host: impl std::fmt::Display) -> String {
        let (k, n) = self.shard;
        loop {
            let id = format!("{prefix}-{:016x}@{host}", self.rng.gen::<u64>());
            if crate::sip::shard::shard_of_call_id(&id, n) == k {
                return id;
            }
        }
    }

    /// SIP over TLS is on: TLS legs name `addr` (advertised IP, TLS port) in Via and Contact.
    pub fn set_tls_addr(&mut self, addr: Option<SocketAddr>) {
        self.tls_addr = addr;
    }

    /// parkd's Via sent-by for a request to `hop`: its address in the hop's IP family, with the TLS port on TLS
    /// (when TLS is configured; the TLS address itself when it is of the hop's family).
    pub fn sent_by_to(&self, hop: Peer) -> SocketAddr {
        let local = self.local_for(hop.addr.ip());
        match (hop.transport, self.tls_addr) {
            (Transport::Tls, Some(t)) if t.is_ipv6() == local.is_ipv6() => t,
            (Transport::Tls, Some(t)) => SocketAddr::new(local.ip(), t.port()),
            _ => local,
        }
    }

    /// Gives parkd an address for peers of the other IP family (dual-stack): used in Via, Contact and SDP for
    /// them. An address of the main address's family is ignored.
    pub fn set_other_family(&mut self, ip: Option<IpAddr>) {
        self.other_family = ip.filter(|ip| ip.is_ipv6() != self.local_addr.is_ipv6()).map(|ip| SocketAddr::new(ip, self.local_addr.port()));
    }

    /// parkd's sent-by / Contact address for a peer at `peer` (its address in the peer's family when it has one).
    pub fn local_for(&self, peer: IpAddr) -> SocketAddr {
        match self.other_family {
            Some(other) if other.is_ipv6() == peer.to_canonical().is_ipv6() => other,
            _ => self.local_addr,
        }
    }

    /// The address parkd's SDP names for media exchanged with `peer` (its address in the peer's family).
    pub fn media_ip_for(&self, peer: IpAddr) -> IpAddr {
        match self.other_family {
            Some(other) if other.is_ipv6() == peer.to_canonical().is_ipv6() => other.ip(),
            _ => self.media_ip,
        }
    }

    /// True when `addr` is one of parkd's own sent-by / Contact addresses.
    fn is_local(&self, addr: SocketAddr) -> bool {
        addr == self.local_addr || Some(addr) == self.other_family
    }

    /// True when one of the request's Vias is parkd's own sent-by with a branch parkd made (it looped back).
    pub fn looped(&self, req: &Request) -> bool {
        req.common.via.iter().any(|v| {
            let port = v.port.unwrap_or(5060);
            v.branch().is_some_and(|b| self.own_branch(b))
                && v.host_ip().is_some_and(|ip| {
                    let a = SocketAddr::new(ip, port);
                    self.is_local(a) || self.tls_addr.is_some_and(|t| t.port() == port && (t.ip() == ip || self.is_local(SocketAddr::new(ip, self.local_addr.port()))))
                })
        })
    }

    /// Whether a Route entry names parkd (its advertised or listening address and port).
    pub fn names_me(&self, route: &NameAddr) -> bool {
        crate::dialog::uri_addr(&route.uri).is_some_and(|a| {
            self.is_local(a) || (a.port() == self.listen.port() && a.ip() == self.listen.ip()) || self.tls_addr == Some(a)
        })
    }

    /// Removes the Route entries naming parkd from the top of `req`'s Route list (RFC 3261 §16.4).
    pub fn consume_own_routes(&self, req: &mut Request) {
        let own = req.common.route.iter().take_while(|r| self.names_me(r)).count();
        req.common.route.drain(..own);
    }

    /// Proxy-related checks on a new request, before it is dispatched (RFC 3261 §16.3, §16.4): one that looped
    /// back to parkd is answered 482; parkd's own Route entries are consumed. Returns false when the request
    /// was answered here.
    pub fn accept_routed(&mut self, now: Time, txn: ServerTxnId, req: &mut Request) -> bool {
        if self.looped(req) {
            tracing::warn!(call_id = %req.common.call_id, "request looped back to parkd");
            self.respond(now, txn, req, 482, None, None, |_| {});
            return false;
        }
        self.consume_own_routes(req);
        if !req.common.route.is_empty() {
            // parkd is a UA, not a proxy: it does not forward, it serves the request it was sent.
            tracing::debug!(routes = req.common.route.len(), "request still carries Route entries for other hops; ignored");
        }
        true
    }

    /// The hosts that name parkd or its way out: its advertised address, the address it listens on (unless
    /// unspecified), the outbound proxy's host and address (for `dial_allow`: numbers of parkd's lots there).
    pub fn own_hosts(&self) -> Vec<String> {
        let mut hosts = vec![self.local_addr.ip().to_string()];
        if let Some(other) = self.other_family {
            hosts.push(other.ip().to_string());
        }
        if !self.listen.ip().is_unspecified() {
            hosts.push(self.listen.ip().to_string());
        }
        if let Some((route, hop)) = &self.outbound_proxy {
            hosts.push(route.uri.host.to_string());
            hosts.push(hop.addr.ip().to_string());
        }
        hosts
    }

    /// The endpoint's RNG (orbit choice, nonces, SDP session ids).
    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }

    /// A fresh number for a leg, a call or a bridge (never reused).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Makes sure no id handed out from now on is at or below `used` (ids restored from the journal).
    pub fn reserve_ids(&mut self, used: u64) {
        self.next_id = self.next_id.max(used.saturating_add(1));
    }

    /// A fresh From/To tag.
    pub fn new_tag(&mut self) -> String {
        format!("{:016x}", self.rng.gen::<u64>())
    }

    /// A fresh Via branch, marked as parkd's (see `proxy.rs`).
    pub fn new_branch(&mut self) -> String {
        let x = self.rng.gen::<u64>();
        match self.shard {
            (_, 1) => format!("{}{x:016x}", super::proxy::BRANCH_MARK),
            // Sharded, each shard marks its own branches: a request one shard sends another (a cross-shard
            // retrieve, to the same address) is not a loop, one coming back to its sender is.
            (k, _) => format!("{}s{k}-{x:016x}", super::proxy::BRANCH_MARK),
        }
    }

    /// Whether `branch` is one this endpoint made ([`Endpoint::new_branch`]).
    fn own_branch(&self, branch: &str) -> bool {
        let Some(rest) = branch.strip_prefix(super::proxy::BRANCH_MARK) else { return false };
        match self.shard {
            (_, 1) => true,
            (k, _) => rest.strip_prefix('s').and_then(|r| r.split_once('-')).is_some_and(|(n, _)| n.parse() == Ok(k)),
        }
    }

    /// parkd's Contact for a dialog with `hop`: its address in the hop's IP family (the TLS port on TLS),
    /// `transport=tcp` / `transport=tls` on streams.
    pub fn contact_to(&self, hop: Peer) -> NameAddr {
        let mut c = Self::contact_at(self.sent_by_to(hop), hop.transport);
        if self.shard.1 > 1 {
            c.uri.params.set(crate::sip::shard::SHARD_PARAM, Some(&self.shard.0.to_string()));
        }
        c
    }

    fn contact_at(addr: SocketAddr, transport: Transport) -> NameAddr {
        let mut uri = Uri::from_addr(Some("parkd"), addr);
        if transport != Transport::Udp {
            uri.params.set("transport", Some(transport.param()));
        }
        NameAddr::new(uri)
    }

    /// parkd's Contact in a dialog with `uri` (the request's Request-URI, or the target parkd calls) through
    /// `hop`: `sips:` when `uri` is and the hop is TLS (RFC 3261 §12.1.1), else as [`Endpoint::contact_to`].
    pub fn contact_for(&self, uri: &Uri, hop: Peer) -> NameAddr {
        let mut c = self.contact_to(hop);
        if uri.is_sips() && hop.transport == Transport::Tls {
            c.uri.scheme = "sips".into();
            c.uri.params.remove("transport");
        }
        c
    }

    /// The next in-dialog request `method` of `dialog` (next local CSeq, fresh branch, parkd's Contact and
    /// sent-by in the family of the dialog's next hop, the TLS address on TLS).
    pub fn request_in(&mut self, dialog: &mut Dialog, method: Method) -> Request {
        let branch = self.new_branch();
        let contact = self.contact_for(&dialog.remote_target(), dialog.next_hop);
        dialog.request(method, self.sent_by_to(dialog.next_hop), &branch, &contact)
    }

    /// Answers server transaction `txn` (opened by `req`) with `status`. A To tag is added to any non-100
    /// response to a request without one (a fresh tag unless `to_tag` names the dialog's). `build` adds
    /// headers and body.
    #[allow(clippy::too_many_arguments)]
    pub fn respond(&mut self, now: Time, txn: ServerTxnId, req: &Request, status: u16, reason: Option<&str>, to_tag: Option<&str>, build: impl FnOnce(&mut Response)) {
        let resp = self.response(req, status, reason, to_tag, build);
        self.txn.respond(now, txn, &resp);
    }

    /// The response [`Endpoint::respond`] would send, not sent (a park's 2xx held until its journal group is
    /// durable, issue 17).
    pub fn response(&mut self, req: &Request, status: u16, reason: Option<&str>, to_tag: Option<&str>, build: impl FnOnce(&mut Response)) -> Response {
        let fresh;
        let to_tag = match to_tag {
            Some(t) => Some(t),
            None if status > 100 && req.common.to.tag().is_none() => {
                fresh = self.new_tag();
                Some(fresh.as_str())
            }
            None => None,
        };
        let mut resp = Response::to_request(req, status, reason.unwrap_or(reason_phrase(status)), to_tag);
        resp.common.push_header("Server", PRODUCT);
        if status == 405 || status == 501 {
            resp.common.push_header("Allow", super::reply::ALLOW);
        }
        build(&mut resp);
        resp
    }

    /// A final refusal of a request outside any dialog, reported as an event.
    pub fn refuse(&mut self, now: Time, txn: ServerTxnId, req: &Request, status: u16, reason: &str) {
        tracing::info!(status, reason, number = req.uri.user.as_deref().unwrap_or(""), "refused");
        self.emit(ParkEvent::Refused {
            number: req.uri.user.as_deref().unwrap_or_default().to_string(),
            status,
            reason: reason.to_string(),
            call_id: req.common.call_id.as_str().into(),
        });
        self.respond(now, txn, req, status, Some(reason), None, |_| {});
    }

    /// Sends `req` to `hop` in a client transaction whose outcome is routed by `purpose`.
    pub fn send(&mut self, now: Time, hop: Peer, req: &Request, purpose: Purpose) -> ClientTxnId {
        let id = self.txn.send_request(now, hop, req);
        self.purposes.insert(id, purpose);
        id
    }

    /// Sends bytes outside any transaction (a stateless reply); `kind` says what they are, for the counts.
    pub fn send_stateless(&mut self, to: Peer, bytes: Bytes, kind: MsgKind) {
        self.txn.send_stateless(to, bytes, kind);
    }

    /// Sends the ACK for a 2xx (outside any transaction, RFC 3261 §13.2.2.4).
    pub fn send_ack(&mut self, to: Peer, ack: Bytes) {
        self.txn.send_stateless(to, ack, MsgKind::request(&Method::Ack));
    }

    /// What client transaction `id` is for (`None` once its outcome was handled).
    pub fn purpose(&self, id: ClientTxnId) -> Option<Purpose> {
        self.purposes.get(&id).copied()
    }

    /// Routes the rest of client transaction `id`'s outcome by `purpose` from now on.
    pub fn repurpose(&mut self, id: ClientTxnId, purpose: Purpose) {
        self.purposes.insert(id, purpose);
    }

    /// Forgets what client transaction `id` was for (its outcome is handled); returns it.
    pub fn finish(&mut self, id: ClientTxnId) -> Option<Purpose> {
        self.purposes.remove(&id)
    }

    /// Reports an event.
    pub fn emit(&mut self, ev: ParkEvent) {
        self.out.push_back(Output::Event(ev));
    }

    /// Asks the media plane for something.
    pub fn media(&mut self, cmd: MediaCommand) {
        self.out.push_back(Output::Media(cmd));
    }

    /// Answers a command taken with `ticket` and not answered at once.
    pub fn command_done(&mut self, ticket: super::commands::CommandTicket, result: super::CommandResult) {
        self.out.push_back(Output::CommandDone { ticket, result });
    }

    /// Hands a group of journal records to the driver (issue 17).
    pub fn journal(&mut self, records: Vec<crate::journal::Record>, token: Option<crate::journal::JournalToken>) {
        self.out.push_back(Output::Journal { records, token });
    }

    /// Hands a cluster operation to the driver (issue 18).
    pub fn cluster(&mut self, op: crate::cluster::OpId, cmd: crate::cluster::RedisOp) {
        self.out.push_back(Output::Cluster { op, cmd });
    }

    /// Moves what the transaction layer queued to the output queue, in order, up to the next thing it reports;
    /// `None` when it has nothing more.
    pub fn next_txn_event(&mut self) -> Option<TxnEvent> {
        while let Some(t) = self.txn.poll_output() {
            match t {
                TxnOutput::Transmit { to, bytes } => self.out.push_back(Output::Sip { to, bytes }),
                TxnOutput::Event(ev) => return Some(ev),
            }
        }
        None
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}
