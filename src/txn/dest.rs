//! Where a server transaction sends its responses (RFC 3261 §18.2.1/§18.2.2, RFC 3581 `rport`).
//!
//! On receipt the top Via of the request is stamped: `received` = the source IP when it differs from the
//! sent-by host (always when `rport` is present, RFC 3581 §4), and an empty `rport` filled with the source
//! port. Responses copy that Via, so they echo both. The destination then is:
//! * reliable transport: the connection (peer) the request came on;
//! * UDP with `rport`: the source IP and source port;
//! * UDP without: the source IP (what `received` holds) and the sent-by port, 5060 by default.
//!
//! `maddr` is not honoured (parkd answers unicast only).

use crate::sip::{Peer, Transport, Via};
use std::net::{IpAddr, SocketAddr};

/// The default SIP port for UDP and TCP (§18.2.2, §19.1.2).
pub const DEFAULT_SIP_PORT: u16 = 5060;

fn via_host_ip(via: &Via) -> Option<IpAddr> {
    via.host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Stamps `received` and `rport` on a received request's top Via (§18.2.1, RFC 3581 §4).
pub fn stamp_top_via(via: &mut Via, source: Peer) {
    let ip = source.addr.ip();
    let has_rport = via.params.has("rport");
    if has_rport || via_host_ip(via) != Some(ip) {
        via.params.set("received", Some(&crate::sip::ip_text::ip_str(ip)));
    }
    if has_rport {
        via.params.set("rport", Some(itoa::Buffer::new().format(source.addr.port())));
    }
}

/// Where responses to a request received from `source` with this top Via go (§18.2.2, RFC 3581 §4).
pub fn response_destination(source: Peer, top_via: Option<&Via>) -> Peer {
    match source.transport {
        Transport::Tcp | Transport::Tls => source,
        Transport::Udp => {
            let Some(via) = top_via else { return source };
            if via.params.has("rport") {
                return source;
            }
            let port = via.port.unwrap_or(DEFAULT_SIP_PORT);
            Peer { transport: Transport::Udp, addr: SocketAddr::new(source.addr.ip(), port) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Params;

    fn via(host: &str, port: Option<u16>, rport: bool) -> Via {
        let mut params = Params::default();
        params.set("branch", Some("z9hG4bK1"));
        if rport {
            params.set("rport", None);
        }
        Via { transport: "UDP".into(), host: host.into(), port, params }
    }

    fn udp(a: &str) -> Peer {
        Peer { transport: Transport::Udp, addr: a.parse().unwrap() }
    }

    #[test]
    fn rfc3581_rport_sends_to_source_ip_and_port_and_fills_params() {
        let src = udp("192.0.2.7:40001");
        let mut v = via("10.0.0.2", Some(5060), true);
        stamp_top_via(&mut v, src);
        assert_eq!(v.params.value("rport"), Some("40001"));
        assert_eq!(v.params.value("received"), Some("192.0.2.7"));
        assert_eq!(response_destination(src, Some(&v)), src);
        assert_eq!(v.to_string(), "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;rport=40001;received=192.0.2.7");
    }

    #[test]
    fn rfc3261_18_2_2_udp_without_rport_uses_source_ip_and_sent_by_port() {
        let src = udp("192.0.2.7:40001");
        let mut v = via("pbx.example", Some(5070), false);
        stamp_top_via(&mut v, src);
        assert_eq!(v.params.value("received"), Some("192.0.2.7"), "sent-by host differs from source");
        assert!(!v.params.has("rport"));
        assert_eq!(response_destination(src, Some(&v)), udp("192.0.2.7:5070"));
        let v = via("192.0.2.7", None, false);
        assert_eq!(response_destination(src, Some(&v)), udp("192.0.2.7:5060"), "default port 5060");
    }

    #[test]
    fn rfc3261_18_2_1_no_received_when_host_is_the_source_ip() {
        let src = udp("192.0.2.7:5060");
        let mut v = via("192.0.2.7", Some(5060), false);
        stamp_top_via(&mut v, src);
        assert!(!v.params.has("received"));
        let src6 = udp("[2001:db8::1]:5060");
        let mut v6 = via("[2001:db8::1]", Some(5060), false);
        stamp_top_via(&mut v6, src6);
        assert!(!v6.params.has("received"), "bracketed IPv6 host compares equal to the source");
    }

    #[test]
    fn ipv6_source_is_stamped_bare_and_answered_at_its_address_rfc3581_rfc5118() {
        let src = udp("[2001:db8::9]:40002");
        let mut v = via("[2001:db8::5]", Some(5070), true);
        stamp_top_via(&mut v, src);
        assert_eq!(v.to_string(), "SIP/2.0/UDP [2001:db8::5]:5070;branch=z9hG4bK1;rport=40002;received=2001:db8::9");
        assert_eq!(v.received(), Some("2001:db8::9".parse().unwrap()));
        assert_eq!(response_destination(src, Some(&v)), src, "rport: back to the IPv6 source");
        let mut v = via("[2001:db8::5]", None, false);
        stamp_top_via(&mut v, src);
        assert_eq!(response_destination(src, Some(&v)), udp("[2001:db8::9]:5060"), "no rport: source IP, sent-by port");
    }

    #[test]
    fn rfc3261_18_2_2_tcp_answers_on_the_connection() {
        let src = Peer { transport: Transport::Tcp, addr: "192.0.2.9:51000".parse().unwrap() };
        let v = via("192.0.2.9", Some(5060), false);
        assert_eq!(response_destination(src, Some(&v)), src);
    }
}
