//! A lot's DTMF key map and courtesy tone (issue 21): the types behind `[[lot]] dtmf_keys`, `dtmf_min_gap_ms`,
//! `courtesy_tone` and `courtesy_tone_file` (documented on [`super::LotConfig`] and in `parkd.example.toml`).
//!
//! ```toml
//! [[lot]]
//! dtmf_keys = { "0" = "sip:operator@pbx.example", "*" = "recall", "5" = "callback" }
//! dtmf_min_gap_ms = 1000
//! courtesy_tone = "retriever"          # "retriever" | "parked" | "both" | "none"
//! courtesy_tone_file = "/usr/share/parkd/beep.wav"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::media::dtmf::DtmfKey;

/// What a key pressed by a parked caller does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtmfAction {
    /// parkd calls this SIP URI and bridges the caller to it on answer (music until then; the call stays parked
    /// in its orbit if nobody answers).
    Dial(String),
    /// Recall the parker now, as if the parking time had run out.
    Recall,
    /// Leave a callback request: an event (`callback_requested`) for an attendant or application; the caller
    /// stays parked.
    Callback,
}

impl TryFrom<String> for DtmfAction {
    type Error = String;
    fn try_from(s: String) -> Result<DtmfAction, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "recall" => return Ok(DtmfAction::Recall),
            "callback" => return Ok(DtmfAction::Callback),
            _ => {}
        }
        match crate::sip::parse_uri(t) {
            Ok(_) => Ok(DtmfAction::Dial(t.to_string())),
            Err(_) => Err(format!("dtmf_keys: {s:?} is neither \"recall\", \"callback\" nor a SIP URI")),
        }
    }
}

/// A lot's key map: which key does what (keys not in it are ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct DtmfKeys {
    keys: Vec<(DtmfKey, DtmfAction)>,
}

impl DtmfKeys {
    /// What `key` does in this lot, if anything.
    pub fn get(&self, key: DtmfKey) -> Option<&DtmfAction> {
        self.keys.iter().find(|(k, _)| *k == key).map(|(_, a)| a)
    }

    /// True when no key does anything.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl TryFrom<BTreeMap<String, String>> for DtmfKeys {
    type Error = String;
    fn try_from(map: BTreeMap<String, String>) -> Result<DtmfKeys, String> {
        let mut keys = Vec::with_capacity(map.len());
        for (k, v) in map {
            let mut chars = k.trim().chars();
            let key = match (chars.next(), chars.next()) {
                (Some(c), None) => DtmfKey::from_char(c),
                _ => None,
            };
            let Some(key) = key else { return Err(format!("dtmf_keys: {k:?} is not a DTMF key (0-9, *, #, A-D)")) };
            if keys.iter().any(|(seen, _)| *seen == key) {
                return Err(format!("dtmf_keys: key {key} is given twice"));
            }
            keys.push((key, DtmfAction::try_from(v)?));
        }
        Ok(DtmfKeys { keys })
    }
}

/// Who hears the courtesy tone when a retrieve or an answered recall bridges (Asterisk `courtesytone` with
/// `parkedplay`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CourtesyTone {
    /// Nobody (the default).
    #[default]
    None,
    /// Whoever takes the call: the retriever, or the party that answered a recall or a key's call.
    Retriever,
    /// The parked caller.
    Parked,
    /// Both.
    Both,
}

impl CourtesyTone {
    /// (to the parked caller, to the other party).
    pub fn parties(self) -> (bool, bool) {
        match self {
            CourtesyTone::None => (false, false),
            CourtesyTone::Retriever => (false, true),
            CourtesyTone::Parked => (true, false),
            CourtesyTone::Both => (true, true),
        }
    }
}

/// Default `dtmf_min_gap_ms`: one action per second at most.
pub fn default_dtmf_min_gap_ms() -> u64 {
    1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Lot {
        dtmf_keys: DtmfKeys,
        #[serde(default)]
        courtesy_tone: CourtesyTone,
    }

    fn key(c: char) -> DtmfKey {
        DtmfKey::from_char(c).unwrap()
    }

    #[test]
    fn key_map_parses_and_rejects_what_it_cannot_do() {
        let lot: Lot = toml::from_str(r#"dtmf_keys = { "0" = "sip:operator@pbx", "*" = "recall", "5" = "Callback" }
courtesy_tone = "both""#)
        .unwrap();
        assert_eq!(lot.dtmf_keys.get(key('0')), Some(&DtmfAction::Dial("sip:operator@pbx".into())));
        assert_eq!(lot.dtmf_keys.get(key('*')), Some(&DtmfAction::Recall));
        assert_eq!(lot.dtmf_keys.get(key('5')), Some(&DtmfAction::Callback));
        assert_eq!(lot.dtmf_keys.get(key('1')), None);
        assert_eq!(lot.courtesy_tone.parties(), (true, true));
        for bad in [r#"dtmf_keys = { "12" = "recall" }"#, r#"dtmf_keys = { "x" = "recall" }"#, r#"dtmf_keys = { "1" = "operator" }"#, r#"dtmf_keys = { "a" = "recall", "A" = "callback" }"#] {
            let e = toml::from_str::<Lot>(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("dtmf_keys"), "{bad}: {e}");
        }
        assert!(toml::from_str::<Lot>("dtmf_keys = {}\ncourtesy_tone = \"loud\"").is_err());
    }
}
