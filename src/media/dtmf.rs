//! DTMF from a parked caller, as RFC 4733 telephone-events in its RTP: parsing an event payload and telling one
//! key press from the many packets that carry it.
//!
//! A phone sends one key press as a run of packets that all carry the *same RTP timestamp* (the event's start,
//! RFC 4733 §2.5.1): the first with the marker bit, updates with a growing duration, then the end packet (E bit)
//! usually three times (§2.5.1.4). So a key press is a new timestamp carrying a key event; every other packet
//! with that timestamp — updates, end-bit retransmissions, duplicates — is the same press. [`KeyDetector`] keeps
//! the last timestamp seen per leg (no allocation, a few bytes), and reports each press once.
//!
//! What a press *does* (and the minimum gap between actions) is the core's business (`core/dtmf.rs`); the media
//! plane only reports the key as a [`super::MediaReport::Dtmf`].

/// One DTMF key: `0`–`9`, `*`, `#`, `A`–`D` (RFC 4733 §3.2 events 0–15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DtmfKey(u8);

/// The keys of events 0–15, in event order.
const KEYS: &[u8; 16] = b"0123456789*#ABCD";

impl DtmfKey {
    /// The key of RFC 4733 event code `event` (0–15); `None` for other events (tones, line events).
    pub fn from_event(event: u8) -> Option<DtmfKey> {
        KEYS.get(usize::from(event)).map(|&k| DtmfKey(k))
    }

    /// The key named by `c` (`a`–`d` are taken as `A`–`D`).
    pub fn from_char(c: char) -> Option<DtmfKey> {
        let c = c.to_ascii_uppercase();
        u8::try_from(c).ok().filter(|b| KEYS.contains(b)).map(DtmfKey)
    }

    /// The key as a character (`'0'`…`'9'`, `'*'`, `'#'`, `'A'`…`'D'`).
    pub fn as_char(self) -> char {
        char::from(self.0)
    }
}

impl std::fmt::Display for DtmfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// One RFC 4733 §2.3 event payload (4 bytes: event, E|R|volume, duration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    /// The end bit: this packet ends the event.
    pub end: bool,
    pub volume: u8,
    /// Duration so far, in timestamp units (8 kHz: 160 = 20 ms).
    pub duration: u16,
}

/// Parses an RFC 4733 payload (the first event of it; a redundant payload, §2.5.1.5, repeats older events after
/// it). `None` when shorter than 4 bytes.
pub fn parse_event(payload: &[u8]) -> Option<TelephoneEvent> {
    let [event, flags, d0, d1, ..] = *payload else { return None };
    Some(TelephoneEvent { event, end: flags & 0x80 != 0, volume: flags & 0x3F, duration: u16::from_be_bytes([d0, d1]) })
}

/// Per-leg state telling key presses apart (see the module doc): the timestamp of the last event seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyDetector {
    /// Meaningful once `seen` (two plain fields rather than an `Option`: they fit a leg's padding).
    last_ts: u32,
    seen: bool,
}

impl KeyDetector {
    /// A telephone-event packet with RTP timestamp `ts` and payload `payload` arrived: the key when it starts a
    /// new press, `None` for the rest of a press (same timestamp), a non-key event or a malformed payload.
    pub fn on_event(&mut self, ts: u32, payload: &[u8]) -> Option<DtmfKey> {
        let ev = parse_event(payload)?;
        if self.seen && self.last_ts == ts {
            return None;
        }
        let key = DtmfKey::from_event(ev.event)?;
        (self.last_ts, self.seen) = (ts, true);
        Some(key)
    }
}

/// A SIP INFO body carrying a key: `application/dtmf-relay` (`Signal=5\r\nDuration=160`, the de-facto format of
/// Cisco and most phones) or `application/dtmf` (the key alone, or an event code `0`–`15`). `content_type` is the
/// header's value (parameters allowed). `None` for any other body or a key that is not a DTMF key.
pub fn parse_info(content_type: &str, body: &[u8]) -> Option<DtmfKey> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let text = std::str::from_utf8(body).ok()?;
    if mime.eq_ignore_ascii_case("application/dtmf-relay") {
        let value = text.lines().find_map(|l| {
            let (name, value) = l.split_once('=')?;
            name.trim().eq_ignore_ascii_case("signal").then(|| value.trim())
        })?;
        return single_key(value);
    }
    if mime.eq_ignore_ascii_case("application/dtmf") {
        return single_key(text.trim());
    }
    None
}

/// `"5"`, `"*"`, `"a"`, or an event code `"10"`–`"15"` (as some phones write `*`/`#`).
fn single_key(value: &str) -> Option<DtmfKey> {
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => DtmfKey::from_char(c),
        _ => value.parse::<u8>().ok().and_then(DtmfKey::from_event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_map_to_keys() {
        let keys: String = (0..16).filter_map(DtmfKey::from_event).map(DtmfKey::as_char).collect();
        assert_eq!(keys, "0123456789*#ABCD");
        assert_eq!(DtmfKey::from_event(16), None, "flash is not a key");
        assert_eq!(DtmfKey::from_char('b').map(DtmfKey::as_char), Some('B'));
        assert_eq!(DtmfKey::from_char('x'), None);
    }

    #[test]
    fn parses_rfc4733_payload() {
        // RFC 4733 §2.3: event 5, E bit set, volume 10, duration 800.
        let ev = parse_event(&[5, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(ev, TelephoneEvent { event: 5, end: true, volume: 10, duration: 800 });
        assert_eq!(parse_event(&[5, 0x0A, 0]), None, "short payload");
    }

    /// A press as phones send it: start (marker), two updates, three end packets — all one timestamp — counts once;
    /// the same key pressed again has a new timestamp and counts again.
    #[test]
    fn one_press_with_updates_and_end_retransmits_is_one_key() {
        let mut d = KeyDetector::default();
        let press = |d: &mut KeyDetector, ts: u32, ev: u8| -> Vec<DtmfKey> {
            let mut keys = Vec::new();
            for (flags, dur) in [(0x0A, 160u16), (0x0A, 320), (0x0A, 480), (0x8A, 640), (0x8A, 640), (0x8A, 640)] {
                let [d0, d1] = dur.to_be_bytes();
                keys.extend(d.on_event(ts, &[ev, flags, d0, d1]));
            }
            keys
        };
        assert_eq!(press(&mut d, 1000, 0), vec![DtmfKey::from_char('0').unwrap()]);
        assert_eq!(press(&mut d, 1000, 0), vec![], "a late duplicate of the same press");
        assert_eq!(press(&mut d, 5000, 0), vec![DtmfKey::from_char('0').unwrap()], "pressed again");
        assert_eq!(press(&mut d, 9000, 11), vec![DtmfKey::from_char('#').unwrap()]);
        assert_eq!(d.on_event(12_000, &[16, 0x0A, 0, 160]), None, "flash: not a key");
        assert_eq!(d.on_event(13_000, &[1]), None, "malformed");
    }

    #[test]
    fn parses_sip_info_bodies() {
        let relay = b"Signal=5\r\nDuration=160\r\n";
        assert_eq!(parse_info("application/dtmf-relay", relay), DtmfKey::from_char('5'));
        assert_eq!(parse_info("Application/DTMF-Relay; charset=x", b"signal= *\nDuration= 250\n"), DtmfKey::from_char('*'));
        assert_eq!(parse_info("application/dtmf-relay", b"Signal=11\r\n"), DtmfKey::from_char('#'));
        assert_eq!(parse_info("application/dtmf", b"3"), DtmfKey::from_char('3'));
        assert_eq!(parse_info("application/dtmf", b"10\r\n"), DtmfKey::from_char('*'));
        assert_eq!(parse_info("application/dtmf-relay", b"Duration=160\r\n"), None);
        assert_eq!(parse_info("application/sdp", b"Signal=5"), None);
        assert_eq!(parse_info("application/dtmf", b"99"), None);
    }
}
