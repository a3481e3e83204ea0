//! The `application/dialog-info+xml` body (RFC 4235) parkd sends in BLF NOTIFYs.
//!
//! Pure text building, no SIP or time: the engine describes each orbit as a [`DialogEntry`] and gets the XML
//! document back. Every attribute value and text node is XML-escaped, so identities from the wire cannot
//! break the document.
//!
//! Tag placement (RFC 4235 §4.1.2): the observed entity is the orbit, i.e. parkd's side of the parked dialog.
//! So `local-tag` is **parkd's** tag and `remote-tag` is the **parked party's** tag, and `direction` is
//! `recipient` (the parked party sent the INVITE). A phone retrieving by Replaces (RFC 3891, sent to parkd)
//! therefore writes `Replaces: <call-id>;to-tag=<local-tag>;from-tag=<remote-tag>`: the to-tag names the
//! tag of the recipient of the Replaces INVITE, which is parkd. This is what Polycom and Yealink do for a
//! `recipient` dialog when they pick up by Replaces (the same convention Asterisk's dialog-info uses); phones
//! set to "dial the orbit" on a BLF press ignore the tags altogether.

use std::fmt::Write as _;

/// The XML namespace of a dialog-info document.
pub const DIALOG_INFO_NS: &str = "urn:ietf:params:xml:ns:dialog-info";
/// The MIME type of the body.
pub const DIALOG_INFO_CONTENT_TYPE: &str = "application/dialog-info+xml";

/// A dialog's `<state>` (RFC 4235 §4.1.6): what phones show on a BLF lamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogState {
    /// Ringing: most phones blink the lamp.
    Early,
    /// Established: most phones light the lamp steadily.
    Confirmed,
    /// Gone: the lamp is off.
    Terminated,
}

impl DialogState {
    pub fn as_str(self) -> &'static str {
        match self {
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated => "terminated",
        }
    }
}

/// An identity as written in `<identity display="..">uri</identity>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub display: Option<String>,
    pub uri: String,
    /// `<target uri="..">`: where the participant is reached (for the orbit: the orbit itself, which a phone
    /// may dial to retrieve). Omitted when unknown.
    pub target: Option<String>,
}

/// The dialog identifiers of a parked call, as seen from parkd (the observed UA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogIds {
    pub call_id: String,
    /// parkd's tag.
    pub local_tag: String,
    /// The parked party's tag.
    pub remote_tag: String,
}

/// One `<dialog>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogEntry {
    /// The `id` attribute, unique inside the document.
    pub id: String,
    pub state: DialogState,
    /// Present for a real dialog (a parked call); absent for an idle orbit's `terminated` placeholder.
    pub ids: Option<DialogIds>,
    /// `<local>`: the orbit (identity and target URI).
    pub local: Option<Identity>,
    /// `<remote>`: the parked party.
    pub remote: Option<Identity>,
}

impl DialogEntry {
    /// The placeholder of an empty orbit: `<dialog id=".."><state>terminated</state></dialog>` (what Asterisk
    /// sends for an idle extension, understood by every BLF phone).
    pub fn idle(id: &str) -> DialogEntry {
        DialogEntry { id: id.to_string(), state: DialogState::Terminated, ids: None, local: None, remote: None }
    }
}

/// A whole `<dialog-info>` document (always `state="full"`: parkd never sends partial state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogInfo {
    /// Increments with every NOTIFY of a subscription (RFC 4235 §4.1.1), starting at 0.
    pub version: u32,
    /// The observed resource, e.g. `sip:701@pbx.example`.
    pub entity: String,
    pub dialogs: Vec<DialogEntry>,
}

/// Escapes `s` for use in XML text or a double-quoted attribute.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0 at all: drop them.
            c if c.is_control() && c != '\t' && c != '\n' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn write_participant(out: &mut String, element: &str, who: &Identity) {
    let _ = write!(out, "<{element}><identity");
    if let Some(d) = who.display.as_deref().filter(|d| !d.is_empty()) {
        let _ = write!(out, " display=\"{}\"", xml_escape(d));
    }
    let _ = write!(out, ">{}</identity>", xml_escape(&who.uri));
    if let Some(t) = &who.target {
        let _ = write!(out, "<target uri=\"{}\"/>", xml_escape(t));
    }
    let _ = write!(out, "</{element}>");
}

impl DialogInfo {
    /// The XML text of the document.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(256 + 400 * self.dialogs.len());
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<dialog-info xmlns=\"{DIALOG_INFO_NS}\" version=\"{}\" state=\"full\" entity=\"{}\">",
            self.version,
            xml_escape(&self.entity)
        );
        for d in &self.dialogs {
            let _ = write!(out, "<dialog id=\"{}\"", xml_escape(&d.id));
            if let Some(ids) = &d.ids {
                let _ = write!(
                    out,
                    " call-id=\"{}\" local-tag=\"{}\" remote-tag=\"{}\" direction=\"recipient\"",
                    xml_escape(&ids.call_id),
                    xml_escape(&ids.local_tag),
                    xml_escape(&ids.remote_tag)
                );
            }
            let _ = write!(out, "><state>{}</state>", d.state.as_str());
            if let Some(l) = &d.local {
                write_participant(&mut out, "local", l);
            }
            if let Some(r) = &d.remote {
                write_participant(&mut out, "remote", r);
            }
            out.push_str("</dialog>\n");
        }
        out.push_str("</dialog-info>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> DialogEntry {
        DialogEntry {
            id: "c1@h".into(),
            state: DialogState::Confirmed,
            ids: Some(DialogIds { call_id: "c1@h".into(), local_tag: "parkd-tag".into(), remote_tag: "bob-tag".into() }),
            local: Some(Identity { display: None, uri: "sip:701@pbx".into(), target: Some("sip:701@pbx".into()) }),
            remote: Some(Identity { display: Some("Bob".into()), uri: "sip:bob@10.0.0.5".into(), target: None }),
        }
    }

    #[test]
    fn occupied_orbit_document_rfc4235_4_1() {
        let doc = DialogInfo { version: 3, entity: "sip:701@pbx".into(), dialogs: vec![parked()] };
        let x = doc.to_xml();
        assert!(x.contains(r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" entity="sip:701@pbx">"#), "{x}");
        // RFC 4235 §4.1.2: tags as seen by the observed UA (parkd): local = parkd's, remote = the parked party's.
        assert!(x.contains(r#"<dialog id="c1@h" call-id="c1@h" local-tag="parkd-tag" remote-tag="bob-tag" direction="recipient"><state>confirmed</state>"#), "{x}");
        assert!(x.contains(r#"<local><identity>sip:701@pbx</identity><target uri="sip:701@pbx"/></local>"#), "{x}");
        assert!(x.contains(r#"<remote><identity display="Bob">sip:bob@10.0.0.5</identity></remote>"#), "{x}");
        assert!(x.trim_end().ends_with("</dialog-info>"));
    }

    #[test]
    fn idle_orbit_is_a_terminated_placeholder_and_empty_lot_has_no_dialog() {
        let x = DialogInfo { version: 0, entity: "sip:701@h".into(), dialogs: vec![DialogEntry::idle("701")] }.to_xml();
        assert!(x.contains(r#"<dialog id="701"><state>terminated</state></dialog>"#), "{x}");
        assert!(!x.contains("call-id"));
        let x = DialogInfo { version: 0, entity: "sip:700@h".into(), dialogs: vec![] }.to_xml();
        assert!(!x.contains("<dialog "), "{x}");
    }

    #[test]
    fn hostile_identities_are_escaped() {
        let mut d = parked();
        d.remote = Some(Identity { display: Some("\"Eve\" <x> & 'co'\u{1}".into()), uri: "sip:e\"ve@h?a=1&b=2".into(), target: None });
        d.ids.as_mut().unwrap().call_id = "a<b>&\"".into();
        let x = DialogInfo { version: 1, entity: "sip:7&01@h".into(), dialogs: vec![d] }.to_xml();
        assert!(x.contains(r#"display="&quot;Eve&quot; &lt;x&gt; &amp; &apos;co&apos;""#), "{x}");
        assert!(x.contains("sip:e&quot;ve@h?a=1&amp;b=2</identity>"), "{x}");
        assert!(x.contains(r#"call-id="a&lt;b&gt;&amp;&quot;""#), "{x}");
        assert!(x.contains(r#"entity="sip:7&amp;01@h""#));
        assert!(!x.contains('\u{1}'));
        // Every '&' in the document starts an entity reference.
        for (i, _) in x.match_indices('&') {
            let rest = &x[i..];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| rest.starts_with(e)), "{rest}");
        }
    }

    #[test]
    fn early_state_is_written_as_early() {
        let mut d = parked();
        d.state = DialogState::Early;
        assert!(DialogInfo { version: 0, entity: "e".into(), dialogs: vec![d] }.to_xml().contains("<state>early</state>"));
    }
}
