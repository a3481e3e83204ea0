//! One parking lot's configuration (`[[lot]]`): numbers, times, music, recall, access, SRTP, tenants, DTMF keys,
//! courtesy tone, direct media. Documented field by field here and in `parkd.example.toml`.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use super::lot_keys;
use super::{MusicSource, NumRange, SlotPolicy};
/// One parking lot.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LotConfig {
    pub name: String,
    /// The number dialed for an indirect park (`parkext`).
    #[serde(alias = "parkext")]
    pub park_code: String,
    /// The orbits (`parkpos`), e.g. `"701-720"`.
    #[serde(alias = "parkpos")]
    pub orbits: NumRange,
    /// Seconds before a parked call is recalled (`parkingtime`); 0 = never.
    #[serde(default = "default_parking_time", alias = "parkingtime")]
    pub parking_time: u64,
    #[serde(default, alias = "findslot")]
    pub slot_policy: SlotPolicy,
    #[serde(default, alias = "parkedmusicclass")]
    pub music: MusicSource,
    /// Seconds the recall rings the parker before the fallback applies.
    #[serde(default = "default_recall_ring_time")]
    pub recall_ring_time: u64,
    /// Upper bound on how long any call stays parked, seconds (0 = no bound).
    #[serde(default = "default_max_park_time")]
    pub max_park_time: u64,
    /// What happens when a recall is not answered (Asterisk `comebacktoorigin` = no → `fallback_uri`).
    #[serde(default)]
    pub recall_fallback: RecallFallback,
    /// With `fallback_uri`: whom to call when the parker does not answer (e.g. the operator).
    #[serde(default)]
    pub fallback_uri: Option<String>,
    /// How many recall rounds (parker, then fallback URI if any) before the call is ended politely.
    #[serde(default = "default_recall_rounds")]
    pub recall_rounds: u32,
    /// Extra Alert-Info for recalls, for phones that map a URL or `info=` to a ring
    /// (e.g. `<http://127.0.0.1/Bellcore-dr4>` or `<urn:x>;info=alert-recall`). The standard
    /// `<urn:alert:service:recall:callback>` (RFC 7462) is always sent.
    #[serde(default)]
    pub recall_alert_info: Option<String>,
    /// Refuse (403) requests to this lot's numbers unless they come from `server.trusted_proxies`
    /// (phones must then reach parkd through the PBX).
    #[serde(default)]
    pub trusted_only: bool,
    /// A number that retrieves the lot's longest-parked call (e.g. `"799"` or `"*88"`).
    #[serde(default)]
    pub retrieve_code: Option<String>,
    /// What an INVITE without Referred-By to an *empty* orbit does: `reject` (404) or `park` (park the caller
    /// there, FreeSWITCH valet style). See the README for the trade-off.
    #[serde(default)]
    pub empty_orbit: EmptyOrbit,
    /// Seconds between in-dialog OPTIONS to each parked party; a 481 or no answer ends the parked call
    /// (a phone that vanished without a BYE). 0 = off.
    #[serde(default = "default_keepalive_interval")]
    pub keepalive_interval: u64,
    /// Another lot (by name) that takes indirect parks when this one is full, instead of a refusal.
    #[serde(default)]
    pub overflow_lot: Option<String>,
    /// Say "parked on seven zero one" to a caller who parked itself (dialed the park code with no
    /// Referred-By: self-park, or the consultation leg of an attended park) before the hold music.
    #[serde(default = "default_announce_orbit")]
    pub announce_orbit: bool,
    /// The `<state>` a BLF NOTIFY shows for an occupied orbit: `confirmed` (steady lamp on most phones, the
    /// default) or `early` (blinks on most phones).
    #[serde(default)]
    pub blf_occupied_state: BlfOccupiedState,
    /// Source networks allowed to park in this lot (e.g. `["10.0.0.0/8", "127.0.0.1/32"]`); absent = everyone,
    /// `[]` = nobody. Others get `403`.
    #[serde(default)]
    pub allow_park: Option<Vec<ipnet::IpNet>>,
    /// Source networks allowed to retrieve (dial an orbit, or INVITE with Replaces); absent = everyone.
    #[serde(default)]
    pub allow_retrieve: Option<Vec<ipnet::IpNet>>,
    /// Source networks allowed to SUBSCRIBE (BLF) to this lot's orbits and park code; absent = everyone.
    #[serde(default)]
    pub allow_subscribe: Option<Vec<ipnet::IpNet>>,
    /// Optional Digest authentication (RFC 8760 SHA-256 and RFC 2617 MD5, `qop=auth`) for this lot.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// SRTP with SDES keys (RFC 4568): `optional` (default: SRTP when offered `RTP/SAVP`), `required` (a plain
    /// `RTP/AVP` offer gets 488) or `off` (an `RTP/SAVP` offer gets 488). Calls parkd starts (recalls, unparks, a
    /// cluster fetch) offer `RTP/SAVP` unless `off`, when the keys may travel (`core::srtp::OfferedSrtp`).
    #[serde(default)]
    pub srtp: crate::sdp::crypto::SrtpPolicy,
    /// Accept (and, on calls parkd starts, send) SDES keys over plain UDP/TCP (the keys are then readable on the
    /// wire); absent = `[server] srtp_over_plain`.
    #[serde(default)]
    pub srtp_over_plain: Option<bool>,
    /// Tenants (issue 21): the SIP domains this lot serves, e.g. `["a.example", "b.example"]`, matched against
    /// the Request-URI host, then the To host (case-insensitive). Two lots naming different domains may use the
    /// same numbers (both `700` / `701-720`, separate orbits, music, limits and BLF). A lot without `domains`
    /// serves every domain no other lot names (and requests to an IP address); a request for a domain some lot
    /// names but none of its lots has the number gets 404.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Direct media after a retrieve or an answered recall (default false): once bridged, parkd re-INVITEs
    /// both phones with each other's SDP so RTP flows phone to phone and parkd keeps only the signalling. Not
    /// done when either leg is SRTP or its RTP comes from another address than its SDP names (NAT); a refused
    /// re-INVITE (488, any failure) keeps parkd relaying. See `core::direct_media`.
    #[serde(default)]
    pub direct_media: bool,
    /// Keys a parked caller may press (RFC 4733 telephone-events, or SIP INFO `application/dtmf-relay` /
    /// `application/dtmf`) and what each does: a SIP URI (parkd calls it and bridges the caller on answer; music
    /// until then, back in the orbit on failure), `"recall"` (recall the parker now) or `"callback"` (a
    /// `callback_requested` event; the caller stays parked). Other keys are ignored. Default: none.
    #[serde(default)]
    pub dtmf_keys: lot_keys::DtmfKeys,
    /// Minimum time between two key actions of one parked call, milliseconds (a burst of keys acts once).
    #[serde(default = "lot_keys::default_dtmf_min_gap_ms")]
    pub dtmf_min_gap_ms: u64,
    /// Who hears a short tone when a retrieve or an answered recall bridges: `none` (default), `retriever`,
    /// `parked` or `both` (Asterisk `courtesytone` + `parkedplay`).
    #[serde(default)]
    pub courtesy_tone: lot_keys::CourtesyTone,
    /// The courtesy tone as an 8 kHz mono 16-bit WAV (like hold music files; keep it short); default: two
    /// 100 ms beeps at 440 Hz.
    #[serde(default)]
    pub courtesy_tone_file: Option<PathBuf>,
}

/// Digest authentication of a lot:
///
/// ```toml
/// [lot.auth]
/// realm = "parkd"                                  # default "parkd"
/// actions = ["park", "retrieve", "subscribe"]      # default: all three
/// users = { alice = "secret", "201" = "pw201" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default = "all_auth_actions")]
    pub actions: Vec<AuthAction>,
    /// User name → password.
    #[serde(default)]
    pub users: std::collections::BTreeMap<String, String>,
}

/// What Digest authentication guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthAction {
    Park,
    Retrieve,
    Subscribe,
}

fn default_realm() -> String {
    "parkd".into()
}
fn all_auth_actions() -> Vec<AuthAction> {
    vec![AuthAction::Park, AuthAction::Retrieve, AuthAction::Subscribe]
}

/// What an occupied orbit looks like on a BLF key (RFC 4235 dialog `<state>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlfOccupiedState {
    #[default]
    Confirmed,
    Early,
}


/// What a plain INVITE to an empty orbit does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyOrbit {
    /// 404: nothing to retrieve (the default; a retrieve can never park by accident).
    #[default]
    Reject,
    /// Park the caller in that orbit (a blind transfer to an orbit without Referred-By parks).
    Park,
}

/// What parkd does when the parker does not answer a recall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecallFallback {
    /// Leave the call parked for another parking time and recall again (up to `recall_rounds`), then hang up.
    #[default]
    Repark,
    /// Call `fallback_uri` (e.g. the operator); if that fails too, repark as above.
    FallbackUri,
    /// End the parked call politely (BYE with a Reason).
    Hangup,
}

fn default_announce_orbit() -> bool {
    true
}

fn default_keepalive_interval() -> u64 {
    60
}

fn default_recall_rounds() -> u32 {
    3
}

fn default_parking_time() -> u64 {
    45
}
fn default_recall_ring_time() -> u64 {
    30
}
fn default_max_park_time() -> u64 {
    1800
}

impl LotConfig {
    pub fn default_lot() -> LotConfig {
        LotConfig {
            name: "default".into(),
            park_code: "700".into(),
            orbits: NumRange { lo: 701, hi: 720, width: 3 },
            parking_time: default_parking_time(),
            slot_policy: SlotPolicy::First,
            music: MusicSource::Builtin,
            recall_ring_time: default_recall_ring_time(),
            max_park_time: default_max_park_time(),
            recall_fallback: RecallFallback::Repark,
            fallback_uri: None,
            recall_rounds: default_recall_rounds(),
            recall_alert_info: None,
            trusted_only: false,
            retrieve_code: None,
            empty_orbit: EmptyOrbit::Reject,
            overflow_lot: None,
            keepalive_interval: default_keepalive_interval(),
            announce_orbit: default_announce_orbit(),
            blf_occupied_state: BlfOccupiedState::Confirmed,
            allow_park: None,
            allow_retrieve: None,
            allow_subscribe: None,
            auth: None,
            srtp: Default::default(),
            srtp_over_plain: None,
            domains: Vec::new(),
            direct_media: false,
            dtmf_keys: Default::default(),
            dtmf_min_gap_ms: lot_keys::default_dtmf_min_gap_ms(),
            courtesy_tone: Default::default(),
            courtesy_tone_file: None,
        }
    }
    /// Whether this lot serves `host` when no lot claims it (no `domains`), or names it.
    pub fn serves_domain(&self, host: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(host))
    }
    pub fn parking_duration(&self) -> Option<Duration> {
        (self.parking_time > 0).then(|| Duration::from_secs(self.parking_time))
    }
}
