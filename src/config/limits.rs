//! `[limits]` and `[access]`: how much of parkd one source address may take, and what is refused unanswered.
//!
//! Every input from the network is bounded. A source beyond a limit gets `503 Service Unavailable` with
//! `Retry-After`, and once it keeps going, silence (its requests are dropped unanswered). Sources inside
//! `[server] trusted_proxies` (a PBX carries every phone's traffic from one address) get `[limits.trusted]`.
//! The SIP side is enforced by the core's admission room (`core/admission`); a source is an IPv4 address, or
//! for IPv6 its /64 (trusted proxies: the exact address). For rates and counts alike, `0` means "no limit".
//!
//! ```toml
//! [limits]
//! new_dialogs_per_second = 10     # INVITEs / SUBSCRIBEs starting a dialog, token bucket per source
//! new_dialogs_burst = 20
//! unconfirmed_per_source = 4      # 200 sent, ACK not yet received
//! parked_per_source = 10
//! subscriptions_per_source = 200
//! out_of_dialog_per_second = 20   # OPTIONS, REGISTER, MESSAGE, ... (token bucket per source)
//! out_of_dialog_burst = 40
//! in_dialog_per_second = 50       # BYE, re-INVITE, REFER... inside parkd's dialogs with this source
//! in_dialog_burst = 100
//! retry_after = 5                 # seconds, in the 503
//! refusals_per_second = 5         # 503s per source and second before silence
//! tracked_sources = 65536         # sources remembered at once (bounded memory)
//! tcp_connections_per_source = 32   # beyond it a new connection is reset at once
//! tcp_connections = 1024             # open TCP connections in all
//! tcp_first_message_timeout = 10     # seconds; 0 = off
//! tcp_idle_timeout = 300             # seconds; 0 = off
//! max_message_bytes = 65536          # UDP and TCP: 413 (513 for an endless header section)
//! max_headers = 256                  # UDP and TCP: 400 Too Many Headers
//! media_guard = true                 # refuse new parks (503) before hold music degrades
//! media_busy_max = 0.85              # a media thread this busy: refuse new parks
//! media_busy_resume = 0.75           # every thread below this again: accept
//! media_late_max_ms = 5.0            # a media thread's pacer this late (smoothed): refuse
//! media_max_parked_per_thread = 0    # static cap: parked calls per media thread; 0 = none
//! [limits.trusted]
//! new_dialogs_per_second = 500
//!
//! [access]
//! drop_user_agents = ["friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "pplsip"]
//! ```

use serde::Deserialize;

/// The bounds applied to one source address. `0` means "no limit", for the rates and the counts alike; a
/// burst below 1 counts as 1.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceLimits {
    /// New dialogs (INVITE, SUBSCRIBE outside a dialog) per second, refilled continuously (token bucket).
    pub new_dialogs_per_second: f64,
    /// How many new dialogs may come at once before the rate applies.
    pub new_dialogs_burst: u32,
    /// Calls answered 200 whose ACK has not arrived yet: a new INVITE beyond this is refused. This is what
    /// stops a source that never ACKs from filling a lot (each such park holds its orbit until the 2xx
    /// times out, 64·T1 = 32 s).
    pub unconfirmed_per_source: u32,
    /// Orbits held by calls parked from this source (by the parked party's address): a new park beyond
    /// this is refused (retrieves are not).
    pub parked_per_source: u32,
    /// BLF subscriptions held by this source.
    pub subscriptions_per_source: u32,
    /// Other requests outside a dialog (OPTIONS, REGISTER, MESSAGE, unknown methods, requests naming a
    /// dialog parkd does not hold) per second. Requests inside a dialog parkd holds are never limited.
    pub out_of_dialog_per_second: f64,
    /// How many of those may come at once.
    pub out_of_dialog_burst: u32,
    /// Requests inside dialogs parkd holds with this source (BYE, re-INVITE, REFER, subscription refreshes;
    /// ACK and CANCEL of a pending INVITE are free) per second: a phone sends a handful, a source re-INVITEing
    /// its own call in a loop would otherwise make parkd keep a transaction per request for 32 s.
    pub in_dialog_per_second: f64,
    /// How many of those may come at once.
    pub in_dialog_burst: u32,
    /// Open TCP connections from this source; a new one beyond it is reset at once (refusal `tcp_per_source`).
    pub tcp_connections_per_source: u32,
}

impl SourceLimits {
    /// Limits for an ordinary source (a phone, or anyone on the internet).
    pub fn untrusted() -> SourceLimits {
        SourceLimits {
            new_dialogs_per_second: 10.0,
            new_dialogs_burst: 20,
            unconfirmed_per_source: 4,
            parked_per_source: 10,
            subscriptions_per_source: 200,
            out_of_dialog_per_second: 20.0,
            out_of_dialog_burst: 40,
            in_dialog_per_second: 50.0,
            in_dialog_burst: 100,
            tcp_connections_per_source: 32,
        }
    }

    /// Limits for a `trusted_proxies` source: every phone behind the PBX shares its address.
    pub fn trusted() -> SourceLimits {
        SourceLimits {
            new_dialogs_per_second: 1000.0,
            new_dialogs_burst: 2000,
            unconfirmed_per_source: 1000,
            parked_per_source: 0,
            subscriptions_per_source: 20_000,
            out_of_dialog_per_second: 1000.0,
            out_of_dialog_burst: 2000,
            in_dialog_per_second: 4000.0,
            in_dialog_burst: 8000,
            tcp_connections_per_source: 1024,
        }
    }
}

/// `[limits]`: per-source bounds (ordinary sources, flat keys; trusted proxies under `[limits.trusted]`) plus the
/// process-wide ones.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub new_dialogs_per_second: f64,
    pub new_dialogs_burst: u32,
    pub unconfirmed_per_source: u32,
    pub parked_per_source: u32,
    pub subscriptions_per_source: u32,
    pub out_of_dialog_per_second: f64,
    pub out_of_dialog_burst: u32,
    pub in_dialog_per_second: f64,
    pub in_dialog_burst: u32,
    pub tcp_connections_per_source: u32,
    /// Overrides for `trusted_proxies` sources; unset keys take [`SourceLimits::trusted`].
    pub trusted: SourceLimitsPartial,
    /// Seconds in `Retry-After` of a 503 for a source over a limit.
    pub retry_after: u32,
    /// 503s sent to one source per second before it is answered with silence (0: silence at once).
    pub refusals_per_second: u32,
    /// Open TCP connections in all (`0` = no limit); a new one beyond it is reset at once (`tcp_total`). Each
    /// costs at most a 4 KiB read buffer, one message being framed (`max_message_bytes`) and 64 queued
    /// outbound messages: the default bounds TCP memory to about 70 MiB in the worst case.
    pub tcp_connections: u32,
    /// A TCP connection that has not delivered a whole message this many seconds after it was accepted is
    /// closed (`tcp_first_message_timeout`; `0` = off). Keep-alives do not count as a message.
    pub tcp_first_message_timeout: u64,
    /// A TCP connection idle (nothing read, nothing written) this many seconds is closed (`tcp_idle`; `0` = off).
    /// parkd's keepalive OPTIONS to parked parties (every `keepalive_interval`) keep their connections busy.
    pub tcp_idle_timeout: u64,
    /// Largest SIP message (header section + body), bytes, on UDP and TCP: answered `413 Request Entity Too
    /// Large` (`513 Message Too Large` when the header section does not end within it); a TCP connection is
    /// then closed (`message_size`).
    pub max_message_bytes: usize,
    /// Most header fields in one SIP message, on UDP and TCP: answered `400 Too Many Headers` (`header_count`).
    pub max_headers: usize,
    /// Source addresses tracked at once (about 200 bytes each: 13 MiB at the default); beyond this the least recently seen source
    /// holding nothing is forgotten, and idle sources are forgotten as traffic goes on. A new source when
    /// every tracked one holds a call or subscription is dropped (counted as `sources_full`).
    pub tracked_sources: usize,
    /// The capacity guard (`core/admission/capacity.rs`): while on, new parks (INVITE to a park code or orbit,
    /// REFER, API park) are refused `503` + `Retry-After` (`retry_after`) once a media thread's measured
    /// headroom runs out (`media_busy_max`, `media_late_max_ms`), until every thread is back below
    /// `media_busy_resume` (and at least 2 s passed). Parked calls, retrieves,
    /// recalls and hang-ups are never refused. Counted as `parkd_sip_refusals_total{reason="media_capacity"}`.
    pub media_guard: bool,
    /// Share of wall time (0–1, smoothed over about half a second) a media thread spends working rather than
    /// waiting for its next pacer slot, at or above which new parks are refused.
    pub media_busy_max: f64,
    /// New parks are accepted again once every media thread's busy share is below this (hysteresis).
    pub media_busy_resume: f64,
    /// Smoothed lateness of a media thread's pacer slots (ms) at or above which new parks are refused, once the
    /// thread is at least `media_busy_resume` busy (on a lighter thread lateness is the machine's noise, which
    /// refusing parks would not cure). `0` = lateness is not looked at.
    pub media_late_max_ms: f64,
    /// Static cap: at this many parked calls per media thread (× `media_threads`) new parks are refused,
    /// whatever the measured load (and whether `media_guard` is on or not). `0` = no cap.
    pub media_max_parked_per_thread: u32,
}

/// A `[limits]` / `[limits.trusted]` table as written: every key optional, falling back to the defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceLimitsPartial {
    pub new_dialogs_per_second: Option<f64>,
    pub new_dialogs_burst: Option<u32>,
    pub unconfirmed_per_source: Option<u32>,
    pub parked_per_source: Option<u32>,
    pub subscriptions_per_source: Option<u32>,
    pub out_of_dialog_per_second: Option<f64>,
    pub out_of_dialog_burst: Option<u32>,
    pub in_dialog_per_second: Option<f64>,
    pub in_dialog_burst: Option<u32>,
    pub tcp_connections_per_source: Option<u32>,
}

impl SourceLimitsPartial {
    fn over(&self, base: SourceLimits) -> SourceLimits {
        SourceLimits {
            new_dialogs_per_second: self.new_dialogs_per_second.unwrap_or(base.new_dialogs_per_second),
            new_dialogs_burst: self.new_dialogs_burst.unwrap_or(base.new_dialogs_burst),
            unconfirmed_per_source: self.unconfirmed_per_source.unwrap_or(base.unconfirmed_per_source),
            parked_per_source: self.parked_per_source.unwrap_or(base.parked_per_source),
            subscriptions_per_source: self.subscriptions_per_source.unwrap_or(base.subscriptions_per_source),
            out_of_dialog_per_second: self.out_of_dialog_per_second.unwrap_or(base.out_of_dialog_per_second),
            out_of_dialog_burst: self.out_of_dialog_burst.unwrap_or(base.out_of_dialog_burst),
            in_dialog_per_second: self.in_dialog_per_second.unwrap_or(base.in_dialog_per_second),
            in_dialog_burst: self.in_dialog_burst.unwrap_or(base.in_dialog_burst),
            tcp_connections_per_source: self.tcp_connections_per_source.unwrap_or(base.tcp_connections_per_source),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let u = SourceLimits::untrusted();
        LimitsConfig {
            new_dialogs_per_second: u.new_dialogs_per_second,
            new_dialogs_burst: u.new_dialogs_burst,
            unconfirmed_per_source: u.unconfirmed_per_source,
            parked_per_source: u.parked_per_source,
            subscriptions_per_source: u.subscriptions_per_source,
            out_of_dialog_per_second: u.out_of_dialog_per_second,
            out_of_dialog_burst: u.out_of_dialog_burst,
            in_dialog_per_second: u.in_dialog_per_second,
            in_dialog_burst: u.in_dialog_burst,
            tcp_connections_per_source: u.tcp_connections_per_source,
            trusted: SourceLimitsPartial::default(),
            retry_after: 5,
            refusals_per_second: 5,
            tcp_connections: 1024,
            tcp_first_message_timeout: 10,
            tcp_idle_timeout: 300,
            max_message_bytes: 64 * 1024,
            max_headers: 256,
            tracked_sources: 65_536,
            media_guard: true,
            media_busy_max: 0.85,
            media_busy_resume: 0.75,
            media_late_max_ms: 5.0,
            media_max_parked_per_thread: 0,
        }
    }
}

impl LimitsConfig {
    /// The limits of an ordinary source.
    pub fn untrusted(&self) -> SourceLimits {
        SourceLimits {
            new_dialogs_per_second: self.new_dialogs_per_second,
            new_dialogs_burst: self.new_dialogs_burst,
            unconfirmed_per_source: self.unconfirmed_per_source,
            parked_per_source: self.parked_per_source,
            subscriptions_per_source: self.subscriptions_per_source,
            out_of_dialog_per_second: self.out_of_dialog_per_second,
            out_of_dialog_burst: self.out_of_dialog_burst,
            in_dialog_per_second: self.in_dialog_per_second,
            in_dialog_burst: self.in_dialog_burst,
            tcp_connections_per_source: self.tcp_connections_per_source,
        }
    }

    /// The limits of a `trusted_proxies` source.
    pub fn trusted(&self) -> SourceLimits {
        self.trusted.over(SourceLimits::trusted())
    }
}

/// `[access]`: requests refused before anything else looks at them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Requests whose `User-Agent` contains one of these (case-insensitive) are dropped unanswered (counted
    /// and logged as `scanner_user_agent`): scanners learn nothing, not even that a SIP server is there.
    /// `[]` turns this off.
    pub drop_user_agents: Vec<String>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            drop_user_agents: ["friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "pplsip"].map(String::from).to_vec(),
        }
    }
}

impl AccessConfig {
    /// Whether a request with this `User-Agent` is dropped unanswered.
    pub fn drops(&self, user_agent: &str) -> bool {
        self.drop_user_agents.iter().any(|p| !p.is_empty() && contains_ignore_case(user_agent, p))
    }
}

fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_and_partial_overrides() {
        let cfg = Config::from_toml(std::path::Path::new("x"), "[limits]\nparked_per_source = 3\n[limits.trusted]\nnew_dialogs_burst = 7\n").unwrap();
        assert_eq!(cfg.limits.untrusted().parked_per_source, 3);
        assert_eq!(cfg.limits.untrusted().new_dialogs_burst, SourceLimits::untrusted().new_dialogs_burst);
        assert_eq!(cfg.limits.trusted().new_dialogs_burst, 7);
        assert_eq!(cfg.limits.trusted().parked_per_source, 0);
        assert!(Config::from_toml(std::path::Path::new("x"), "[limits]\nbogus = 1\n").is_err());
    }

    #[test]
    fn the_example_file_shows_the_defaults() {
        let cfg = Config::from_toml(std::path::Path::new("parkd.example.toml"), include_str!("../../parkd.example.toml")).unwrap();
        let d = LimitsConfig::default();
        assert_eq!(cfg.limits.untrusted(), d.untrusted());
        assert_eq!(cfg.limits.trusted(), SourceLimits::trusted());
        assert_eq!((cfg.limits.retry_after, cfg.limits.refusals_per_second, cfg.limits.tracked_sources), (d.retry_after, d.refusals_per_second, d.tracked_sources));
        assert_eq!(cfg.access, AccessConfig::default());
    }

    #[test]
    fn scanner_user_agents_are_dropped_case_insensitively() {
        let a = AccessConfig::default();
        assert!(a.drops("friendly-scanner"));
        assert!(a.drops("SIPVicious 0.3.4"));
        assert!(!a.drops("Yealink SIP-T46S 66.86.0.15"));
        assert!(!AccessConfig { drop_user_agents: vec![] }.drops("friendly-scanner"));
    }
}
