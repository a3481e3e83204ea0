//! The Via header (RFC 3261 §20.42, §25.1 `via-parm`): the [`Via`] type, its writer and its parser.

use super::normalize::{is_token_char, is_wsp};
use super::params::{parse_header_params, Params};
use super::transport::Transport;
use super::uri::parse_hostport;
use super::SipStr;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One Via header field value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// Upper-case transport token: `UDP`, `TCP`, `TLS`, ...
    pub transport: SipStr,
    pub host: SipStr,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn new(transport: Transport, addr: SocketAddr, branch: &str) -> Via {
        let host = super::ip_text::host_str(addr.ip());
        let mut params = Params::default();
        params.set("branch", Some(branch));
        params.set("rport", None);
        Via { transport: SipStr::const_new(transport.as_str()), host, port: Some(addr.port()), params }
    }
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
    /// The `received` parameter as an address: bracketed (`[2001:db8::9:255]`) or bare (`2001:db8::9:255`, the
    /// RFC 3261 grammar) IPv6, or IPv4 (RFC 5118 §4.5 asks to accept both IPv6 forms).
    pub fn received(&self) -> Option<IpAddr> {
        self.params.value("received").and_then(parse_ip_literal)
    }
    /// The `maddr` parameter as an address (an IPv6 one is written bracketed, RFC 3261 §25.1 `maddr-param`);
    /// `None` for a host name.
    pub fn maddr(&self) -> Option<IpAddr> {
        self.params.value("maddr").and_then(parse_ip_literal)
    }
    /// The sent-by host as an address (`None` for a host name).
    pub fn host_ip(&self) -> Option<IpAddr> {
        parse_ip_literal(&self.host)
    }
    /// `host:port` as a comparable key (the RFC 3261 §17.2.3 "sent-by").
    pub fn sent_by(&self) -> SipStr {
        let mut out = self.host.clone();
        out.make_ascii_lowercase();
        if let Some(p) = self.port {
            out.push(':');
            out.push_str(itoa::Buffer::new().format(p));
        }
        out
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        self.write_to(&mut s);
        f.write_str(&s)
    }
}

impl Via {
    /// Appends the Via as [`fmt::Display`] writes it (the encoder's path: no temporary string).
    pub(crate) fn write_to(&self, s: &mut String) {
        s.push_str("SIP/2.0/");
        s.push_str(&self.transport);
        s.push(' ');
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push(':');
            s.push_str(itoa::Buffer::new().format(p));
        }
        self.params.write(s);
    }
}

/// An IPv4 address, or an IPv6 address with or without its brackets.
pub fn parse_ip_literal(s: &str) -> Option<IpAddr> {
    match s.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => s.parse().ok(),
    }
}

/// Parses one via-parm: `SIP / 2.0 / UDP host:port ;params` (LWS allowed around the slashes, RFC 3261 §25.1).
pub(crate) fn parse_via(s: &str) -> Result<Via, ()> {
    let mut parts = s.splitn(3, '/');
    let (proto, version, rest) = (parts.next().ok_or(())?, parts.next().ok_or(())?, parts.next().ok_or(())?);
    if !proto.trim_matches(is_wsp).eq_ignore_ascii_case("SIP") || version.trim_matches(is_wsp) != "2.0" {
        return Err(());
    }
    let rest = rest.trim_start_matches(is_wsp);
    let n = rest.find(|c| !is_token_char(c)).unwrap_or(rest.len());
    let (transport, rest) = rest.split_at(n);
    if transport.is_empty() || !rest.starts_with(is_wsp) {
        return Err(());
    }
    let rest = rest.trim_start_matches(is_wsp);
    let n = rest.find(|c| c == ';' || is_wsp(c)).unwrap_or(rest.len());
    let (sent_by, params) = rest.split_at(n);
    let (host, port) = parse_hostport(sent_by).ok_or(())?;
    let mut transport = SipStr::from(transport);
    transport.make_ascii_uppercase();
    Ok(Via { transport, host: SipStr::from(host), port, params: parse_header_params(params)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_everywhere_rfc4475_3_1_1_1() {
        let v = parse_via("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!((v.transport.as_str(), v.host.as_str(), v.port, v.branch()), ("TCP", "spindle.example.com", None, Some("z9hG4bK9ikj8")));
        let v = parse_via("SIP/2.0/udp [::1]:5070;rport;received=[::2];branch=z9hG4bK1").unwrap();
        assert_eq!((v.transport.as_str(), v.host.as_str(), v.port), ("UDP", "[::1]", Some(5070)));
        assert_eq!(v.params.get("rport"), Some(None));
        assert_eq!(v.params.value("received"), Some("[::2]"));
        for bad in ["SIP/7.0/UDP h", "SIP/2.0/UDP", "SIP/2.0 UDP h", "SIP/2.0/UDP 192.0.2.15;;", "SIP/2.0/UDP h:x", "SIP/2.0/UDPh"] {
            assert!(parse_via(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_via_writes_branch_and_rport() {
        let v = Via::new(Transport::Udp, "[::1]:5060".parse().unwrap(), "z9hG4bK7");
        assert_eq!(v.to_string(), "SIP/2.0/UDP [::1]:5060;branch=z9hG4bK7;rport");
        let tls = Via::new(Transport::Tls, "127.0.0.1:5061".parse().unwrap(), "z9hG4bK8");
        assert!(tls.to_string().starts_with("SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK8"), "{tls}");
        assert_eq!(parse_via(&v.to_string()).unwrap(), v);
        assert_eq!(v.sent_by(), "[::1]:5060");
        assert_eq!(v.host_ip(), Some("::1".parse().unwrap()));
    }

    #[test]
    fn ipv6_received_and_maddr_are_read_bracketed_or_bare_rfc5118_4_5() {
        let v = parse_via("SIP/2.0/UDP [2001:db8::9:1]:5060;maddr=[2001:db8::7];received=2001:db8::9:255;branch=z9hG4bK1").unwrap();
        assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(v.maddr(), Some("2001:db8::7".parse().unwrap()));
        assert_eq!(v.host_ip(), Some("2001:db8::9:1".parse().unwrap()));
        let v = parse_via("SIP/2.0/TCP pbx.example;received=[2001:db8::9:255];maddr=239.1.1.1").unwrap();
        assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(v.maddr(), Some("239.1.1.1".parse().unwrap()));
        assert_eq!(v.host_ip(), None);
        assert_eq!(v.to_string(), "SIP/2.0/TCP pbx.example;received=[2001:db8::9:255];maddr=239.1.1.1", "printed as read");
        for bad in ["[2001:db8:::1]", "[2001:db8::1", "2001:zz::1", "[1.2.3.4]"] {
            assert_eq!(parse_ip_literal(bad), None, "{bad}");
        }
    }
}
