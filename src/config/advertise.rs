//! `[server] advertise`: the addresses parkd names itself by in Via, Contact, Record-Route and SDP, at most one
//! per IP family (issue 19), and which one a peer is given.
//!
//! ```toml
//! advertise = "192.0.2.10"                      # one address
//! advertise = ["192.0.2.10", "2001:db8::10"]    # dual-stack: IPv4 peers get the first, IPv6 peers the second
//! ```

use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// At most one advertised address per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Advertise {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// Why an `advertise` value is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    #[error("advertise: {0:?} is not an IP address")]
    NotAnAddress(String),
    #[error("advertise: two {0} addresses (give at most one IPv4 and one IPv6 address)")]
    TwoOfAFamily(&'static str),
    #[error("advertise: no address given")]
    Empty,
    #[error("advertise: {family} address {ip} but listen = {listen} takes no {family} peers (listen on [::] for both)")]
    FamilyNotServed { family: &'static str, ip: IpAddr, listen: SocketAddr },
}

impl Advertise {
    /// From a list of addresses, at most one per family (an IPv6 one may be written bracketed).
    pub fn from_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Advertise, AdvertiseError> {
        let mut a = Advertise::default();
        for item in items {
            let item = item.trim();
            let bare = item.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(item);
            match bare.parse::<IpAddr>().map_err(|_| AdvertiseError::NotAnAddress(item.to_string()))? {
                IpAddr::V4(ip) if a.v4.is_none() => a.v4 = Some(ip),
                IpAddr::V6(ip) if a.v6.is_none() => a.v6 = Some(ip),
                IpAddr::V4(_) => return Err(AdvertiseError::TwoOfAFamily("IPv4")),
                IpAddr::V6(_) => return Err(AdvertiseError::TwoOfAFamily("IPv6")),
            }
        }
        if a == Advertise::default() {
            return Err(AdvertiseError::Empty);
        }
        Ok(a)
    }

    /// The address parkd names itself by to peers of one family, listening on `listen` (`None`: parkd has
    /// no address in that family). Without `advertise`: the listen address when it is a specific one of that
    /// family, the family's loopback when `listen` is a wildcard serving the family (`0.0.0.0` serves IPv4,
    /// `[::]` both). With `advertise`: its address of that family, else the listen address of that family.
    pub fn for_family(advertise: Option<Advertise>, listen: IpAddr, v6: bool) -> Option<IpAddr> {
        let given = advertise.and_then(|a| if v6 { a.v6.map(IpAddr::V6) } else { a.v4.map(IpAddr::V4) });
        if given.is_some() {
            return given;
        }
        let same_family = listen.is_ipv6() == v6;
        match listen {
            _ if same_family && !listen.is_unspecified() => Some(listen),
            _ if advertise.is_some() => None,
            IpAddr::V4(ip) if ip.is_unspecified() && !v6 => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpAddr::V6(ip) if ip.is_unspecified() => Some(if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) }),
            _ => None,
        }
    }

    /// Refuses an advertised address of a family the listen socket cannot serve (an IPv6 address with an IPv4
    /// `listen`, an IPv4 one with a specific IPv6 `listen`: `[::]` serves both).
    pub fn check_served(&self, listen: SocketAddr) -> Result<(), AdvertiseError> {
        let ip = listen.ip();
        if let (Some(v6), IpAddr::V4(_)) = (self.v6, ip) {
            return Err(AdvertiseError::FamilyNotServed { family: "IPv6", ip: IpAddr::V6(v6), listen });
        }
        match (self.v4, ip) {
            (Some(v4), IpAddr::V6(l)) if !l.is_unspecified() => Err(AdvertiseError::FamilyNotServed { family: "IPv4", ip: IpAddr::V4(v4), listen }),
            _ => Ok(()),
        }
    }

    /// parkd's main address (the listen address's family first; IPv4 first on `[::]`), and its address in the
    /// other family if it has one.
    pub fn pair(advertise: Option<Advertise>, listen: SocketAddr) -> (IpAddr, Option<IpAddr>) {
        let ip = listen.ip();
        let prefer_v6 = ip.is_ipv6() && !ip.is_unspecified();
        let first = Advertise::for_family(advertise, ip, prefer_v6);
        let second = Advertise::for_family(advertise, ip, !prefer_v6);
        match (first, second) {
            (Some(a), b) => (a, b),
            (None, Some(b)) => (b, None),
            (None, None) => (IpAddr::V4(Ipv4Addr::LOCALHOST), None),
        }
    }
}

impl From<IpAddr> for Advertise {
    fn from(ip: IpAddr) -> Advertise {
        match ip {
            IpAddr::V4(v4) => Advertise { v4: Some(v4), v6: None },
            IpAddr::V6(v6) => Advertise { v4: None, v6: Some(v6) },
        }
    }
}

/// One address, or two separated by a comma (`--advertise 192.0.2.10,2001:db8::10`).
impl FromStr for Advertise {
    type Err = AdvertiseError;
    fn from_str(s: &str) -> Result<Advertise, AdvertiseError> {
        Advertise::from_list(s.split(','))
    }
}

impl fmt::Display for Advertise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.v4, self.v6) {
            (Some(a), Some(b)) => write!(f, "{a},{b}"),
            (Some(a), None) => write!(f, "{a}"),
            (None, Some(b)) => write!(f, "{b}"),
            (None, None) => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for Advertise {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        match Form::deserialize(d)? {
            Form::One(s) => s.parse(),
            Form::Many(v) => Advertise::from_list(v.iter().map(String::as_str)),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_or_one_per_family() {
        assert_eq!("192.0.2.10".parse(), Ok(Advertise { v4: Some("192.0.2.10".parse().unwrap()), v6: None }));
        assert_eq!("[2001:db8::10]".parse(), Ok(Advertise { v4: None, v6: Some("2001:db8::10".parse().unwrap()) }));
        let both: Advertise = "2001:db8::10, 192.0.2.10".parse().unwrap();
        assert_eq!(both.to_string(), "192.0.2.10,2001:db8::10");
        assert_eq!("192.0.2.1,192.0.2.2".parse::<Advertise>(), Err(AdvertiseError::TwoOfAFamily("IPv4")));
        assert!(matches!("pbx.example".parse::<Advertise>(), Err(AdvertiseError::NotAnAddress(_))));
        #[derive(Deserialize)]
        struct T {
            advertise: Advertise,
        }
        let t: T = toml::from_str("advertise = [\"192.0.2.10\", \"2001:db8::10\"]").unwrap();
        assert_eq!(t.advertise, both);
        let t: T = toml::from_str("advertise = \"::1\"").unwrap();
        assert_eq!(t.advertise.v6, Some(Ipv6Addr::LOCALHOST));
        assert!(toml::from_str::<T>("advertise = [\"::1\", \"::2\"]").is_err());
    }

    #[test]
    fn each_family_gets_an_address_the_listen_socket_serves() {
        let (l4, lany4, l6, lany6) = (ip("127.0.0.1"), ip("0.0.0.0"), ip("::1"), ip("::"));
        let f = Advertise::for_family;
        // Without advertise.
        assert_eq!((f(None, l4, false), f(None, l4, true)), (Some(l4), None));
        assert_eq!((f(None, lany4, false), f(None, lany4, true)), (Some(l4), None));
        assert_eq!((f(None, l6, false), f(None, l6, true)), (None, Some(l6)));
        assert_eq!((f(None, lany6, false), f(None, lany6, true)), (Some(l4), Some(l6)), "[::] is dual-stack");
        // With advertise.
        let both = Some("192.0.2.10,2001:db8::10".parse().unwrap());
        assert_eq!((f(both, lany6, false), f(both, lany6, true)), (Some(ip("192.0.2.10")), Some(ip("2001:db8::10"))));
        let only6 = Some("2001:db8::10".parse().unwrap());
        assert_eq!((f(only6, lany6, false), f(only6, lany6, true)), (None, Some(ip("2001:db8::10"))), "only what was given");
        assert_eq!(f(only6, l4, false), Some(l4), "a specific listen address of the family still counts");
    }

    #[test]
    fn an_address_of_a_family_the_socket_does_not_serve_is_refused() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let both: Advertise = "192.0.2.10,2001:db8::10".parse().unwrap();
        assert_eq!(both.check_served(sa("[::]:5060")), Ok(()));
        assert!(matches!(both.check_served(sa("0.0.0.0:5060")), Err(AdvertiseError::FamilyNotServed { family: "IPv6", .. })));
        let v4: Advertise = "192.0.2.10".parse().unwrap();
        let e = v4.check_served(sa("[::1]:5060")).unwrap_err();
        assert_eq!(e.to_string(), "advertise: IPv4 address 192.0.2.10 but listen = [::1]:5060 takes no IPv4 peers (listen on [::] for both)");
        assert_eq!(v4.check_served(sa("10.0.0.1:5060")), Ok(()));
    }

    #[test]
    fn the_main_address_follows_the_listen_family() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(Advertise::pair(None, sa("127.0.0.1:5060")), (ip("127.0.0.1"), None));
        assert_eq!(Advertise::pair(None, sa("[::1]:5060")), (ip("::1"), None));
        assert_eq!(Advertise::pair(None, sa("[::]:5060")), (ip("127.0.0.1"), Some(ip("::1"))));
        let only6 = Some("2001:db8::10".parse().unwrap());
        assert_eq!(Advertise::pair(only6, sa("[::]:5060")), (ip("2001:db8::10"), None));
        assert_eq!(Advertise::pair(Some(ip("192.0.2.10").into()), sa("0.0.0.0:5060")), (ip("192.0.2.10"), None));
    }
}
