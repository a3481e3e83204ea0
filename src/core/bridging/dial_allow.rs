//! Which destinations an application may make parkd dial (the HTTP API's unpark): toll-fraud protection.
//!
//! A destination is allowed when it matches one of `[http] dial_allow`, or when it is something parkd already
//! has reason to call for that parked call: its parker (Referred-By, the one a recall rings), its lot's
//! `fallback_uri`, or one of the lots' own numbers (park code, orbit, retrieve code) at parkd's own address or at
//! the outbound proxy. Anything else is refused before a single byte is sent. The SIP side has the same rule for
//! REFER (only park codes and orbits, see transfer.rs).
//!
//! [`check`] is pure (the rule, unit-tested below); `Core::dial_check` gathers the facts for one call.

use crate::core::ids::CallRef;
use crate::core::{CommandError, Core};
use crate::config::DialPattern;
use crate::sip::Uri;
use std::net::IpAddr;

/// Why a destination was allowed (logged with the unpark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// It matched a `[http] dial_allow` pattern.
    Pattern,
    /// It is the parker of that very call.
    Parker,
    /// It is the lot's `fallback_uri`.
    FallbackUri,
    /// It is one of the lots' own numbers, at parkd or at the outbound proxy.
    LotNumber,
}

/// What parkd already has reason to call, for one parked call.
pub struct DialContext<'a> {
    /// `[http] dial_allow`.
    pub patterns: &'a [DialPattern],
    /// The parker of the call (its Referred-By), if known.
    pub parker: Option<&'a Uri>,
    /// The lot's `fallback_uri`, if any.
    pub fallback: Option<&'a Uri>,
    /// Hosts that are parkd itself or the outbound proxy (IP literals or names, as written).
    pub own_hosts: &'a [String],
    /// Whether a user part is one of the lots' numbers.
    pub is_lot_number: &'a dyn Fn(&str) -> bool,
}

/// Whether `to` may be dialed; `Err` carries the reason shown to the application.
pub fn check(to: &Uri, ctx: &DialContext<'_>) -> Result<Allowed, String> {
    if ctx.patterns.iter().any(|p| p.matches(to.user.as_deref(), bare_host(&to.host))) {
        return Ok(Allowed::Pattern);
    }
    if ctx.parker.is_some_and(|p| same_party(to, p)) {
        return Ok(Allowed::Parker);
    }
    if ctx.fallback.is_some_and(|f| same_party(to, f)) {
        return Ok(Allowed::FallbackUri);
    }
    let own_host = ctx.own_hosts.iter().any(|h| same_host(h, &to.host));
    if own_host && to.user.as_deref().is_some_and(|u| (ctx.is_lot_number)(u)) {
        return Ok(Allowed::LotNumber);
    }
    Err(format!(
        "{} is not in [http] dial_allow and is not the parker of this call, the lot's fallback_uri or a lot number \
         at parkd or its outbound proxy",
        to.without_headers()
    ))
}

/// The same SIP party: scheme, user, host (without case, IPs by value) and port (default 5060 / 5061 for sips).
fn same_party(a: &Uri, b: &Uri) -> bool {
    let port = |u: &Uri| u.port.unwrap_or(if u.scheme == "sips" { 5061 } else { 5060 });
    a.scheme == b.scheme && a.user == b.user && same_host(&a.host, &b.host) && port(a) == port(b)
}

fn bare_host(h: &str) -> &str {
    h.trim_start_matches('[').trim_end_matches(']')
}

fn same_host(a: &str, b: &str) -> bool {
    let (a, b) = (bare_host(a), bare_host(b));
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.')),
    }
}

impl Core {
    /// Sets the `[http] dial_allow` patterns (empty by default: only what parkd already has reason to call).
    pub fn set_dial_allow(&mut self, patterns: Vec<DialPattern>) {
        self.bridging.set_dial_allow(patterns);
    }

    /// Whether an application may make parkd dial `to` for parked call `call` of lot `lot`.
    pub(in crate::core) fn dial_check(&self, call: CallRef, lot: usize, to: &Uri) -> Result<Allowed, CommandError> {
        let parker = self.parking.get(call).and_then(|c| c.parker.as_ref()).map(|p| &p.uri);
        let fallback = self.parking.lot(lot).and_then(|l| l.cfg.fallback_uri.as_deref()).and_then(|u| crate::sip::parse_uri(u).ok());
        let own_hosts = self.ep.own_hosts();
        let is_lot_number = |u: &str| self.parking.is_lot_number(u);
        let ctx = DialContext { patterns: self.bridging.dial_allow(), parker, fallback: fallback.as_ref(), own_hosts: &own_hosts, is_lot_number: &is_lot_number };
        check(to, &ctx).map_err(|reason| CommandError::DialNotAllowed { to: to.without_headers().to_string(), reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse_uri;

    fn uri(s: &str) -> Uri {
        parse_uri(s).unwrap()
    }

    fn ctx<'a>(patterns: &'a [DialPattern], parker: Option<&'a Uri>, fallback: Option<&'a Uri>, hosts: &'a [String]) -> DialContext<'a> {
        static LOT: fn(&str) -> bool = |u| u == "700" || (u.len() == 3 && ("701"..="720").contains(&u));
        DialContext { patterns, parker, fallback, own_hosts: hosts, is_lot_number: &LOT }
    }

    #[test]
    fn by_default_only_what_parkd_already_calls_is_allowed() {
        let parker = uri("sip:alice@127.0.0.1:5999");
        let fallback = uri("sip:operator@10.0.0.9");
        let hosts = vec!["127.0.0.1".to_string(), "10.0.0.5".to_string(), "pbx.example".to_string()];
        let c = ctx(&[], Some(&parker), Some(&fallback), &hosts);
        assert_eq!(check(&uri("sip:alice@127.0.0.1:5999"), &c), Ok(Allowed::Parker));
        assert_eq!(check(&uri("sip:alice@127.0.0.1:5999;transport=udp"), &c), Ok(Allowed::Parker), "params do not matter");
        assert!(check(&uri("sip:alice@127.0.0.1:6000"), &c).is_err(), "another port is another party");
        assert!(check(&uri("sip:alice@127.0.0.1"), &c).is_err(), "the default port is 5060, not 5999");
        assert_eq!(check(&uri("sip:operator@10.0.0.9:5060"), &c), Ok(Allowed::FallbackUri));
        assert_eq!(check(&uri("sip:705@127.0.0.1:5070"), &c), Ok(Allowed::LotNumber));
        assert_eq!(check(&uri("sip:700@PBX.example"), &c), Ok(Allowed::LotNumber), "the outbound proxy host, any case");
        assert_eq!(check(&uri("sip:700@10.0.0.5"), &c), Ok(Allowed::LotNumber));
        // The toll-fraud attempts: a premium number anywhere, a lot number on a foreign host, the PBX's users.
        let e = check(&uri("sip:19005550100@127.0.0.3:5060"), &c).unwrap_err();
        assert!(e.contains("sip:19005550100@127.0.0.3:5060") && e.contains("dial_allow"), "{e}");
        assert!(check(&uri("sip:701@evil.example"), &c).is_err());
        assert!(check(&uri("sip:19005550100@pbx.example"), &c).is_err(), "the PBX's other numbers need dial_allow");
        assert!(check(&uri("sip:alice@127.0.0.1:5999"), &ctx(&[], None, None, &hosts)).is_err(), "no parker known");
    }

    #[test]
    fn dial_allow_patterns_open_more() {
        let patterns = vec![DialPattern::parse("2*@pbx.example").unwrap(), DialPattern::parse("*@[::1]").unwrap()];
        let c = ctx(&patterns, None, None, &[]);
        assert_eq!(check(&uri("sip:205@pbx.example"), &c), Ok(Allowed::Pattern));
        assert_eq!(check(&uri("sip:205@PBX.EXAMPLE:5080"), &c), Ok(Allowed::Pattern), "host without case, port not compared");
        assert!(check(&uri("sip:305@pbx.example"), &c).is_err());
        assert_eq!(check(&uri("sip:anyone@[::1]:5062"), &c), Ok(Allowed::Pattern), "IPv6 hosts with or without brackets");
    }

    #[test]
    fn hosts_compare_ips_by_value() {
        assert!(same_host("[::1]", "::1") && same_host("[0:0::1]", "::1"));
        assert!(same_host("pbx.example.", "PBX.example"));
        assert!(!same_host("127.0.0.1", "127.0.0.2"));
    }
}
