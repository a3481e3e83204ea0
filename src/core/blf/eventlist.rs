//! Whole-lot subscriptions as RFC 4662 resource lists, for phones and attendant consoles that ask for them
//! (`Supported: eventlist` and an `Accept` admitting `multipart/related`): each NOTIFY carries a
//! `multipart/related` body whose root is an RLMI document (`application/rlmi+xml`) listing the lot's orbits as
//! resources, followed by one `application/dialog-info+xml` part per orbit it reports — the same document a
//! subscription to that one orbit gets. The first NOTIFY (and the one after each refresh, and the final one) is
//! **full state**: every orbit of the lot; the others are **partial state**: only the orbits that changed since the
//! previous NOTIFY. Each resource's dialog-info `version` counts that resource's own documents (RFC 4235 §4.1), the
//! RLMI `version` the list's. Phones that do not ask keep the one-body form (one dialog-info listing the occupied
//! orbits).
//!
//! A full state lists every orbit, so the list form is offered only for lots up to [`MAX_LIST_ORBITS`] orbits (a
//! bigger lot answers with the one-body form, whose size follows the occupied orbits only).
//!
//! Pure text building; the BLF room decides when and what.

use crate::park::dialog_info::{xml_escape, DIALOG_INFO_CONTENT_TYPE};
use crate::sip::Request;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The option tag (RFC 4662 §4.1).
pub const EVENTLIST: &str = "eventlist";
/// The RLMI document's MIME type.
pub const RLMI_CONTENT_TYPE: &str = "application/rlmi+xml";
/// The RLMI namespace.
pub const RLMI_NS: &str = "urn:ietf:params:xml:ns:rlmi";
/// Lots with more orbits than this answer list subscriptions with the one-body form: a full state names every
/// orbit (about 400 bytes each), and 200 orbits already make an 80 KB NOTIFY.
pub const MAX_LIST_ORBITS: usize = 200;

/// Whether a SUBSCRIBE asks for a resource list: `Supported: eventlist` and an `Accept` naming
/// `multipart/related` (RFC 4662 §4.1, §4.3).
pub fn wants_list(req: &Request) -> bool {
    let supported = req.common.headers_named("Supported").flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(EVENTLIST));
    let multipart = req
        .common
        .headers_named("Accept")
        .flat_map(|v| v.split(','))
        .any(|m| m.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("multipart/related"));
    supported && multipart
}

/// A list subscription's own state, plain data (journaled with its subscription).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListState {
    /// The version the next dialog-info document of each orbit carries (indexed by orbit).
    pub versions: Vec<u32>,
    /// Orbits changed since the last NOTIFY (reported in the next partial state).
    pub changed: BTreeSet<usize>,
    /// The next NOTIFY carries the full state (the first one, after a refresh, the final one).
    pub full_due: bool,
}

impl ListState {
    pub fn new(orbits: usize) -> ListState {
        ListState { versions: vec![0; orbits], changed: BTreeSet::new(), full_due: true }
    }

    /// The orbits the next NOTIFY reports, and whether that is the full state; clears what it takes.
    pub fn take_due(&mut self, ending: bool) -> (Vec<usize>, bool) {
        let full = self.full_due || ending;
        self.full_due = false;
        let changed = std::mem::take(&mut self.changed);
        if full {
            ((0..self.versions.len()).collect(), true)
        } else {
            (changed.into_iter().filter(|&i| i < self.versions.len()).collect(), false)
        }
    }

    /// The version for orbit `i`'s next document (then counted).
    pub fn next_version(&mut self, i: usize) -> u32 {
        let v = self.versions.get(i).copied().unwrap_or(0);
        if let Some(slot) = self.versions.get_mut(i) {
            *slot += 1;
        }
        v
    }
}

/// One resource of a list NOTIFY: the orbit's URI, its name, and its dialog-info document.
pub struct Part {
    pub uri: String,
    pub name: String,
    pub dialog_info: String,
}

/// A list NOTIFY's body and its `Content-Type`.
pub struct ListBody {
    pub content_type: String,
    pub body: String,
}

/// Builds the `multipart/related` body: the RLMI root (list `uri`, `version`, `full_state`), then one part per
/// resource. `tag` makes the Content-IDs and the boundary unique to this subscription and NOTIFY.
pub fn list_body(list_uri: &str, version: u32, full_state: bool, parts: &[Part], tag: &str) -> ListBody {
    let boundary = format!("parkd-rlmi-{tag}-{version}");
    let root_cid = format!("list.{tag}.{version}@parkd");
    let cid = |p: &Part| format!("{}.{tag}.{version}@parkd", p.name);
    let mut rlmi = String::with_capacity(200 + 120 * parts.len());
    rlmi.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(rlmi, "<list xmlns=\"{RLMI_NS}\" uri=\"{}\" version=\"{version}\" fullState=\"{full_state}\">", xml_escape(list_uri));
    for p in parts {
        let _ = writeln!(
            rlmi,
            "<resource uri=\"{}\"><name>{}</name><instance id=\"{}\" state=\"active\" cid=\"{}\"/></resource>",
            xml_escape(&p.uri),
            xml_escape(&p.name),
            xml_escape(&p.name),
            xml_escape(&cid(p))
        );
    }
    rlmi.push_str("</list>\n");
    let mut body = String::with_capacity(rlmi.len() + parts.iter().map(|p| p.dialog_info.len() + 160).sum::<usize>());
    let mut part = |cid: &str, ctype: &str, text: &str| {
        let _ = write!(body, "--{boundary}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\nContent-Type: {ctype};charset=\"UTF-8\"\r\n\r\n{text}\r\n");
    };
    part(&root_cid, RLMI_CONTENT_TYPE, &rlmi);
    for p in parts {
        part(&cid(p), DIALOG_INFO_CONTENT_TYPE, &p.dialog_info);
    }
    let _ = write!(body, "--{boundary}--\r\n");
    ListBody { content_type: format!("multipart/related;type=\"{RLMI_CONTENT_TYPE}\";start=\"<{root_cid}>\";boundary=\"{boundary}\""), body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: &str) -> Part {
        Part { uri: format!("sip:{n}@pbx"), name: n.into(), dialog_info: format!("<dialog-info version=\"0\">{n}</dialog-info>\n") }
    }

    #[test]
    fn the_body_is_a_multipart_related_with_the_rlmi_root_first() {
        let b = list_body("sip:700@pbx", 3, false, &[part("701"), part("705")], "s7");
        assert_eq!(b.content_type, "multipart/related;type=\"application/rlmi+xml\";start=\"<list.s7.3@parkd>\";boundary=\"parkd-rlmi-s7-3\"");
        let sections: Vec<&str> = b.body.split("--parkd-rlmi-s7-3").collect();
        assert_eq!(sections.len(), 5, "preamble, root, two parts, the closing delimiter: {}", b.body);
        assert_eq!(sections[4], "--\r\n");
        assert!(sections[1].starts_with("\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <list.s7.3@parkd>\r\nContent-Type: application/rlmi+xml"));
        assert!(sections[1].contains("<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"sip:700@pbx\" version=\"3\" fullState=\"false\">"));
        assert!(sections[1].contains("<resource uri=\"sip:701@pbx\"><name>701</name><instance id=\"701\" state=\"active\" cid=\"701.s7.3@parkd\"/></resource>"));
        // Each instance's cid names a part carrying that orbit's document.
        assert!(sections[3].contains("Content-ID: <705.s7.3@parkd>\r\nContent-Type: application/dialog-info+xml;charset=\"UTF-8\"\r\n\r\n<dialog-info version=\"0\">705"));
    }

    #[test]
    fn full_state_first_then_only_what_changed_with_per_resource_versions() {
        let mut l = ListState::new(4);
        let (due, full) = l.take_due(false);
        assert_eq!((due, full), (vec![0, 1, 2, 3], true));
        for i in 0..4 {
            assert_eq!(l.next_version(i), 0);
        }
        l.changed.insert(2);
        l.changed.insert(2);
        let (due, full) = l.take_due(false);
        assert_eq!((due.clone(), full), (vec![2], false));
        assert_eq!(l.next_version(2), 1, "orbit 2's second document");
        assert_eq!(l.next_version(1), 1, "orbit 1 was sent once");
        // A refresh (or the end) brings the full state back.
        l.full_due = true;
        assert_eq!(l.take_due(false), (vec![0, 1, 2, 3], true));
        assert!(l.take_due(true).1, "the final NOTIFY is full state");
        assert!(l.take_due(false).0.is_empty(), "nothing changed: an empty partial state");
    }

    #[test]
    fn a_list_is_what_the_subscribe_asks_for() {
        let req = |extra: &str| {
            let text = format!(
                "SUBSCRIBE sip:700@p SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nFrom: <sip:a@p>;tag=1\r\nTo: <sip:700@p>\r\n\
                 Call-ID: c\r\nCSeq: 1 SUBSCRIBE\r\nEvent: dialog\r\n{extra}Content-Length: 0\r\n\r\n"
            );
            match crate::sip::parse_message(text.as_bytes()).expect("parses") {
                crate::sip::Message::Request(r) => r,
                _ => unreachable!(),
            }
        };
        assert!(wants_list(&req("Supported: replaces, EventList\r\nAccept: application/dialog-info+xml, application/rlmi+xml, multipart/related\r\n")));
        assert!(!wants_list(&req("Supported: eventlist\r\nAccept: application/dialog-info+xml\r\n")), "cannot take multipart");
        assert!(!wants_list(&req("Accept: multipart/related\r\n")), "did not ask");
    }
}
