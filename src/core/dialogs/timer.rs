//! Session timers (RFC 4028) as plain data: what was agreed in a leg's dialog, its absolute deadlines, and the
//! pure negotiation of the `Session-Expires` / `Min-SE` headers. No clock: every deadline is computed from the
//! `now` handed in. The flows that use it are `core::session_timers`.
//!
//! * **Who refreshes.** The `refresher` parameter names a role in the *request that negotiated* the interval
//!   (`uac` = whoever sent it). parkd keeps the outcome as [`SessionTimer::parkd_refreshes`].
//! * **When.** The refresher refreshes at half the interval (RFC 4028 §10); the other side ends the session
//!   (BYE) if no refresh came by `interval - min(32, interval / 3)` seconds (§10). parkd, when refresher, also
//!   ends the session at that point if its own refreshes failed.

use crate::sip::{Common, Method, Request, Response};
use crate::time::Time;
use std::time::Duration;

/// The smallest interval RFC 4028 allows (§4: Min-SE is never below 90 s).
pub const RFC_MIN_SE: u32 = 90;

/// parkd's settings for session timers (`[server] session_timers`, `session_min_se`, `session_expires`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerPolicy {
    /// Session timers on (honoured when a phone asks, asked for on calls parkd makes).
    pub enabled: bool,
    /// The smallest interval parkd accepts (below it: `422` with this `Min-SE`). At least 90.
    pub min_se: u32,
    /// The interval parkd asks for on calls it makes (0: it asks for none, and only offers `Supported: timer`).
    pub expires: u32,
}

impl Default for TimerPolicy {
    fn default() -> Self {
        TimerPolicy { enabled: true, min_se: RFC_MIN_SE, expires: 1800 }
    }
}

/// A parsed `Session-Expires` value: `delta-seconds[;refresher=uac|uas]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionExpires {
    pub delta: u32,
    /// `Some(true)`: `refresher=uac`; `Some(false)`: `uas`; `None`: not given.
    pub refresher_uac: Option<bool>,
}

impl SessionExpires {
    /// The header of `common`, if present and readable (an unreadable one is treated as absent).
    pub fn of(common: &Common) -> Option<SessionExpires> {
        let v = common.header("Session-Expires")?;
        let mut parts = v.split(';');
        let delta = parts.next()?.trim().parse::<u32>().ok()?;
        let mut refresher_uac = None;
        for p in parts {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            if name.trim().eq_ignore_ascii_case("refresher") {
                refresher_uac = match value.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(true),
                    "uas" => Some(false),
                    _ => None,
                };
            }
        }
        Some(SessionExpires { delta, refresher_uac })
    }

    /// The header value.
    pub fn value(self) -> String {
        match self.refresher_uac {
            Some(true) => format!("{};refresher=uac", self.delta),
            Some(false) => format!("{};refresher=uas", self.delta),
            None => self.delta.to_string(),
        }
    }
}

/// The `Min-SE` of `common` (delta-seconds), if present and readable.
pub fn min_se_of(common: &Common) -> Option<u32> {
    common.header("Min-SE")?.split(';').next()?.trim().parse().ok()
}

/// Whether `common` lists option tag `tag` in `Supported` (or `Require`).
pub fn supports(common: &Common, tag: &str) -> bool {
    ["Supported", "Require"].iter().any(|h| common.headers_named(h).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(tag)))
}

/// Whether `common`'s `Allow` lists `method` (no `Allow` at all: unknown, taken as no).
pub fn allows(common: &Common, method: &str) -> bool {
    common.headers_named("Allow").flat_map(|v| v.split(',')).any(|m| m.trim().eq_ignore_ascii_case(method))
}

/// What parkd answers to a request that may carry `Session-Expires` (an INVITE, re-INVITE or UPDATE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UasAnswer {
    /// No session timer in this dialog (none asked for, or parkd's are off).
    None,
    /// `422 Session Interval Too Small` with `Min-SE: min_se`.
    TooSmall { min_se: u32 },
    /// The 2xx carries `Session-Expires: se` (and `Require: timer` when the refresher is the UAC).
    Agreed { se: SessionExpires },
}

/// RFC 4028 §9: the UAS's answer to `req`. The interval is taken as asked (parkd never lowers it, and raising
/// it is not allowed); below `policy.min_se` it is refused. The refresher is the one the request names, else the
/// UAC when it supports timers (the phone refreshes, as Asterisk and FreeSWITCH choose), else parkd (a proxy
/// inserted the header for a phone that does not know about timers).
pub fn answer_as_uas(req: &Request, policy: &TimerPolicy) -> UasAnswer {
    if !policy.enabled {
        return UasAnswer::None;
    }
    let Some(asked) = SessionExpires::of(&req.common) else { return UasAnswer::None };
    let floor = policy.min_se.max(RFC_MIN_SE);
    if asked.delta < floor {
        return UasAnswer::TooSmall { min_se: floor };
    }
    let uac_supports = supports(&req.common, "timer");
    let refresher_uac = match asked.refresher_uac {
        Some(uac) if uac && !uac_supports => false,
        Some(uac) => uac,
        None => uac_supports,
    };
    UasAnswer::Agreed { se: SessionExpires { delta: asked.delta, refresher_uac: Some(refresher_uac) } }
}

/// Adds the session-timer headers of an agreed answer to a 2xx (RFC 4028 §9: `Require: timer` when the
/// refresher is the UAC).
pub fn decorate_2xx(resp: &mut Response, se: SessionExpires) {
    resp.common.push_header("Session-Expires", se.value());
    if se.refresher_uac == Some(true) {
        resp.common.push_header("Require", "timer");
    }
}

/// A leg's session timer: the interval agreed, who refreshes, and the absolute deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionTimer {
    /// The session interval, seconds.
    pub interval: u32,
    /// parkd sends the refreshes (else the phone does and parkd watches for them).
    pub parkd_refreshes: bool,
    /// The peer listed UPDATE in its Allow: parkd refreshes with UPDATE, else with re-INVITE.
    pub peer_update: bool,
    /// When parkd ends the session (BYE) unless a refresh succeeded by then.
    pub expires_at: Time,
    /// When parkd sends its next refresh (`None`: it is not the refresher, or a refresh is in flight).
    pub refresh_at: Option<Time>,
    /// A refresh parkd sent is waiting for its answer.
    pub in_flight: bool,
}

impl SessionTimer {
    /// A timer agreed at `now`: `interval` seconds, refreshed by parkd or by the peer.
    pub fn agreed(now: Time, interval: u32, parkd_refreshes: bool, peer_update: bool) -> SessionTimer {
        let mut t = SessionTimer { interval, parkd_refreshes, peer_update, expires_at: now, refresh_at: None, in_flight: false };
        t.refreshed(now, interval, parkd_refreshes);
        t
    }

    /// A refresh succeeded at `now` (either way) with `interval` and refresher as agreed in it: deadlines re-armed.
    pub fn refreshed(&mut self, now: Time, interval: u32, parkd_refreshes: bool) {
        self.interval = interval.max(1);
        self.parkd_refreshes = parkd_refreshes;
        self.in_flight = false;
        let secs = u64::from(self.interval);
        // RFC 4028 §10: the BYE goes out min(32, interval/3) seconds before the session would expire.
        self.expires_at = now + Duration::from_secs(secs - secs.div_euclid(3).min(32));
        self.refresh_at = parkd_refreshes.then(|| now + Duration::from_millis(secs * 500));
    }

    /// The next deadline of this timer (the refresh if parkd sends one, else the expiry).
    pub fn next_deadline(&self) -> Time {
        match self.refresh_at {
            Some(r) if r < self.expires_at => r,
            _ => self.expires_at,
        }
    }

    /// The `Session-Expires` parkd puts in a refresh it sends: parkd (the UAC of the refresh) stays refresher.
    pub fn refresh_header(&self) -> String {
        SessionExpires { delta: self.interval, refresher_uac: Some(true) }.value()
    }

    /// The method of parkd's refresh: UPDATE when the peer allows it, else re-INVITE (RFC 4028 §7.4, §9).
    pub fn refresh_method(&self) -> Method {
        if self.peer_update {
            Method::Update
        } else {
            Method::Invite
        }
    }
}

/// The outcome of an INVITE parkd sent with `Supported: timer` (a call it makes), from its 2xx (RFC 4028 §7.2:
/// no `Session-Expires` in the 2xx means no session expiration). The 2xx's `refresher=uac` names parkd.
pub fn from_uac_2xx(now: Time, resp: &Response) -> Option<SessionTimer> {
    let se = SessionExpires::of(&resp.common)?;
    let parkd_refreshes = se.refresher_uac.unwrap_or(true);
    Some(SessionTimer::agreed(now, se.delta.max(RFC_MIN_SE), parkd_refreshes, allows(&resp.common, "UPDATE")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:700@parkd SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:700@parkd>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_message(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn below_the_minimum_is_422_with_min_se() {
        let p = TimerPolicy { min_se: 120, ..TimerPolicy::default() };
        assert_eq!(answer_as_uas(&invite("Session-Expires: 90\r\nSupported: timer\r\n"), &p), UasAnswer::TooSmall { min_se: 120 });
        assert_eq!(answer_as_uas(&invite("x: 60\r\n"), &TimerPolicy::default()), UasAnswer::TooSmall { min_se: 90 });
    }

    #[test]
    fn the_refresher_is_the_one_asked_for_else_the_uac_when_it_supports_timers() {
        let p = TimerPolicy::default();
        let agreed = |r: &Request| match answer_as_uas(r, &p) {
            UasAnswer::Agreed { se } => (se.delta, se.refresher_uac),
            other => panic!("{other:?}"),
        };
        assert_eq!(agreed(&invite("Session-Expires: 90\r\nSupported: timer\r\n")), (90, Some(true)));
        assert_eq!(agreed(&invite("Session-Expires: 1800;refresher=uas\r\nSupported: timer\r\n")), (1800, Some(false)));
        // A proxy inserted it for a phone without timers: parkd refreshes.
        assert_eq!(agreed(&invite("Session-Expires: 600\r\n")), (600, Some(false)));
        assert_eq!(agreed(&invite("Session-Expires: 600;refresher=uac\r\n")), (600, Some(false)));
        assert_eq!(answer_as_uas(&invite("Supported: timer\r\n"), &p), UasAnswer::None);
        assert_eq!(answer_as_uas(&invite("Session-Expires: 600\r\n"), &TimerPolicy { enabled: false, ..p }), UasAnswer::None);
    }

    #[test]
    fn deadlines_are_absolute_half_interval_refresh_and_bye_before_expiry() {
        let t0 = Time::from_secs(1000);
        let t = SessionTimer::agreed(t0, 90, true, true);
        assert_eq!(t.refresh_at, Some(Time::from_secs(1045)));
        assert_eq!(t.expires_at, Time::from_secs(1000 + 90 - 30));
        assert_eq!(t.next_deadline(), Time::from_secs(1045));
        let w = SessionTimer::agreed(t0, 1800, false, false);
        assert_eq!((w.refresh_at, w.expires_at), (None, Time::from_secs(1000 + 1800 - 32)));
        assert_eq!(w.refresh_method(), Method::Invite);
        assert_eq!(t.refresh_method(), Method::Update);
        assert_eq!(t.refresh_header(), "90;refresher=uac");
    }
}
