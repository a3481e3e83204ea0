//! A phone's subscriptions (RFC 6665): SUBSCRIBE with its retransmissions, refresh and unsubscribe, and
//! the NOTIFYs received (each once: a retransmitted NOTIFY gets its cached 200, see `Phone::on_request`).

use super::{Phone, Purpose, SubId};
use crate::sim::wire::RequestHead;
use crate::sip::{Method, Request, Response};
use crate::time::Time;

/// A BLF (or other) subscription this phone holds.
#[derive(Debug)]
pub struct Subscription {
    pub call_id: String,
    local_tag: String,
    pub remote_tag: Option<String>,
    ruri: String,
    target: Option<String>,
    to: String,
    cseq: u32,
    /// Final status of the latest SUBSCRIBE.
    pub status: Option<u16>,
    /// Every NOTIFY received in this subscription (a retransmission once).
    pub notifies: Vec<Notify>,
}

/// A NOTIFY as a subscriber sees it.
#[derive(Clone, Debug)]
pub struct Notify {
    pub at: Time,
    pub cseq: u32,
    /// The Subscription-State header.
    pub state: String,
    pub body: String,
}

impl Notify {
    /// The first `<state>` of a dialog-info body (`terminated`, `confirmed`, `early`).
    pub fn dialog_state(&self) -> Option<&str> {
        self.body.split("<state>").nth(1)?.split("</state>").next()
    }
    /// The dialog-info `version` attribute.
    pub fn version(&self) -> Option<u32> {
        self.body.split("<dialog-info").nth(1)?.split(" version=\"").nth(1)?.split('"').next()?.parse().ok()
    }
}

impl Subscription {
    /// The final response to our latest SUBSCRIBE.
    pub(super) fn on_final(&mut self, resp: &Response) {
        self.status = Some(resp.status);
        if resp.is_success() {
            self.remote_tag = resp.common.to.tag().map(str::to_string);
            self.target = resp.common.contact.first().map(|c| c.uri.to_string());
        }
    }
}

impl Phone {
    /// Subscribes to `user`'s dialog state (BLF) for `expires` seconds.
    pub fn subscribe(&mut self, now: Time, user: &str, expires: u32) -> SubId {
        let idx = self.subs.len();
        let call_id = format!("{}@sim", self.fresh("sub"));
        let local_tag = self.fresh("tag");
        let ruri = format!("sip:{user}@{}", self.server);
        self.subs.push(Subscription { call_id, local_tag, remote_tag: None, to: format!("<{ruri}>"), ruri, target: None, cseq: 0, status: None, notifies: Vec::new() });
        self.send_subscribe(now, idx, expires);
        SubId(idx)
    }

    /// Refreshes the subscription, or ends it with `expires` 0.
    pub fn resubscribe(&mut self, now: Time, id: SubId, expires: u32) {
        self.send_subscribe(now, id.0, expires);
    }

    fn send_subscribe(&mut self, now: Time, idx: usize, expires: u32) {
        let branch = format!("z9hG4bK-{}", self.fresh("br"));
        let (contact, via) = (self.aor(), self.cfg.sip);
        let s = &mut self.subs[idx];
        s.cseq += 1;
        let from = format!("{};tag={}", contact, s.local_tag);
        let to = match &s.remote_tag {
            Some(t) => format!("{};tag={t}", s.to),
            None => s.to.clone(),
        };
        let ruri = s.target.clone().unwrap_or_else(|| s.ruri.clone());
        let extra = format!("Event: dialog\nAccept: application/dialog-info+xml\nExpires: {expires}\n");
        let head = RequestHead { method: "SUBSCRIBE", ruri: &ruri, via, branch: &branch, from: &from, to: &to, call_id: &s.call_id, cseq: s.cseq, contact: &contact, extra: &extra };
        let text = head.text(None);
        self.start_txn(now, Method::Subscribe, branch, &text, Purpose::Sub(idx));
    }

    /// Records a NOTIFY in its subscription (the caller answers it).
    pub(super) fn on_notify(&mut self, now: Time, req: &Request) {
        let Some(s) = self.subs.iter_mut().find(|s| s.call_id == req.common.call_id) else { return };
        if s.remote_tag.is_none() {
            s.remote_tag = req.common.from.tag().map(str::to_string);
        }
        let state = req.common.header("Subscription-State").unwrap_or("").to_string();
        s.notifies.push(Notify { at: now, cseq: req.common.cseq.seq, state, body: String::from_utf8_lossy(&req.common.body).into_owned() });
    }
}
