//! What the transaction layer counts: every SIP message it is handed (requests by method, responses by
//! status class and CSeq method) and every message it sends, retransmissions included. The layer sees each
//! decoded message the endpoint receives and each one it sends, so these are the endpoint's message
//! counts; the io layer exports them (`parkd_sip_messages_total`) without reading a message itself.

use crate::sip::Method;

/// Methods with their own label, in [`Method`]'s order; anything else counts as `other` (the last slot),
/// which keeps the number of label values bounded whatever a peer sends.
const METHODS: [&str; 15] =
    ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "INFO", "UPDATE", "PRACK", "PUBLISH", "other"];

/// Status classes; slot 0 is "a request".
const CLASSES: [&str; 7] = ["", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// What one message is, for counting: a request's method, or a response's status class and the method of
/// its CSeq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgKind {
    method: u8,
    /// 0 for a request, 1..=6 for a response's class.
    class: u8,
}

impl MsgKind {
    /// A request of `method`.
    pub fn request(method: &Method) -> MsgKind {
        MsgKind { method: method_slot(method), class: 0 }
    }

    /// A response with `status` to a request of `method` (its CSeq method). A status outside 100..=699
    /// (which the parser does not produce) counts in the nearest class.
    pub fn response(status: u16, method: &Method) -> MsgKind {
        MsgKind { method: method_slot(method), class: (status / 100).clamp(1, 6) as u8 }
    }

    pub fn is_request(self) -> bool {
        self.class == 0
    }

    /// The method label: `INVITE`, ... or `other`.
    pub fn method_label(self) -> &'static str {
        METHODS[usize::from(self.method)]
    }

    /// The status class label: `1xx`..`6xx` for a response, empty for a request.
    pub fn class_label(self) -> &'static str {
        CLASSES[usize::from(self.class)]
    }
}

fn method_slot(m: &Method) -> u8 {
    match m {
        Method::Invite => 0,
        Method::Ack => 1,
        Method::Bye => 2,
        Method::Cancel => 3,
        Method::Options => 4,
        Method::Register => 5,
        Method::Refer => 6,
        Method::Notify => 7,
        Method::Subscribe => 8,
        Method::Message => 9,
        Method::Info => 10,
        Method::Update => 11,
        Method::Prack => 12,
        Method::Publish => 13,
        Method::Other(_) => 14,
    }
}

/// Messages received and sent, by [`MsgKind`] (monotonic totals).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SipCounts {
    received: [[u64; CLASSES.len()]; METHODS.len()],
    sent: [[u64; CLASSES.len()]; METHODS.len()],
}

impl SipCounts {
    pub fn count_received(&mut self, kind: MsgKind) {
        self.received[usize::from(kind.method)][usize::from(kind.class)] += 1;
    }

    pub fn count_sent(&mut self, kind: MsgKind) {
        self.sent[usize::from(kind.method)][usize::from(kind.class)] += 1;
    }

    /// How many messages of `kind` were received (`outgoing` false) or sent.
    pub fn get(&self, outgoing: bool, kind: MsgKind) -> u64 {
        let table = if outgoing { &self.sent } else { &self.received };
        table[usize::from(kind.method)][usize::from(kind.class)]
    }

    /// Every kind seen at least once: `(outgoing, kind, total)`.
    pub fn iter(&self) -> impl Iterator<Item = (bool, MsgKind, u64)> + '_ {
        [(false, &self.received), (true, &self.sent)].into_iter().flat_map(|(outgoing, table)| {
            table.iter().enumerate().flat_map(move |(m, row)| {
                row.iter().enumerate().filter(|(_, n)| **n > 0).map(move |(c, n)| (outgoing, MsgKind { method: m as u8, class: c as u8 }, *n))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_bounded_labels() {
        let k = MsgKind::request(&Method::Invite);
        assert_eq!((k.is_request(), k.method_label(), k.class_label()), (true, "INVITE", ""));
        let k = MsgKind::response(486, &Method::Bye);
        assert_eq!((k.is_request(), k.method_label(), k.class_label()), (false, "BYE", "4xx"));
        assert_eq!(MsgKind::request(&Method::Other("FOO".into())).method_label(), "other");
        assert_eq!(MsgKind::response(999, &Method::Ack).class_label(), "6xx");
        for (i, m) in METHODS.iter().enumerate().take(14) {
            assert_eq!(MsgKind::request(&Method::from_token(m)).method, i as u8, "{m}");
        }
    }

    #[test]
    fn counts_by_direction_and_kind() {
        let mut c = SipCounts::default();
        let inv = MsgKind::request(&Method::Invite);
        let ok = MsgKind::response(200, &Method::Invite);
        c.count_received(inv);
        c.count_received(inv);
        c.count_sent(ok);
        assert_eq!((c.get(false, inv), c.get(true, inv), c.get(true, ok)), (2, 0, 1));
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![(false, inv, 2), (true, ok, 1)]);
    }
}
