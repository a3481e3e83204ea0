//! An IP address as text, as `Display` writes it, without `core::fmt`: an IPv4 address's four octets are written
//! with `itoa`. `Ipv4Addr`'s `Display` supports width and padding, so it formats into a buffer first and then
//! pads: about a thousand instructions per address, and parkd writes several per message (`received=`, the
//! Contact and Request-URIs it builds from addresses, its SDP's `o=` and `c=` lines). IPv6 keeps `Display`.

use std::net::IpAddr;

/// Appends `ip` to `out` exactly as `ip.to_string()` would read.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(buf.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            // `write!` to a String cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ip` as a [`super::SipStr`] (inline: an IPv4 address is at most 15 bytes).
pub fn ip_str(ip: IpAddr) -> super::SipStr {
    match ip {
        IpAddr::V4(_) => {
            let mut s = String::with_capacity(15);
            push_ip(&mut s, ip);
            super::SipStr::from(s.as_str())
        }
        IpAddr::V6(v6) => compact_str::ToCompactString::to_compact_string(&v6),
    }
}

/// `ip` as the host part of a URI or Via (RFC 3261 §25.1 `host`): an IPv6 address in brackets.
pub fn host_str(ip: IpAddr) -> super::SipStr {
    match ip {
        IpAddr::V4(_) => ip_str(ip),
        IpAddr::V6(v6) => compact_str::format_compact!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_display_does() {
        for text in ["0.0.0.0", "127.0.0.1", "10.0.0.2", "192.0.2.255", "255.255.255.255", "::", "::1", "2001:db8::9", "::ffff:192.0.2.7", "fe80::1:2:3:4"] {
            let ip: IpAddr = text.parse().unwrap();
            let mut s = String::from("x=");
            push_ip(&mut s, ip);
            assert_eq!(s, format!("x={ip}"), "{text}");
            assert_eq!(ip_str(ip).as_str(), ip.to_string(), "{text}");
            let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
            assert_eq!(host_str(ip).as_str(), host, "{text}");
        }
    }
}
