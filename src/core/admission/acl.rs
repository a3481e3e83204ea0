//! Who may do what in a lot (issue 4, item 6): per-lot lists of source networks for park, retrieve and
//! subscribe. A request from elsewhere is answered `403` with a reason phrase naming the action.
//!
//! The source is the packet's source address (UDP datagram or TCP peer), never a header: behind a PBX that
//! means the PBX's address, so list the PBX (and the phones that reach parkd directly) as trusted networks.
//! A missing list lets everyone in; an empty list (`allow_park = []`) lets nobody in.
//!
//! Pure functions of a lot's configuration; the core applies them in `Core::gate` (core/gate.rs).

use crate::config::LotConfig;
use ipnet::IpNet;
use std::net::IpAddr;

/// An action a lot guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Park,
    Retrieve,
    Subscribe,
}

/// A refused action: the 403 reason phrase says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub struct Forbidden(pub Action);

impl Forbidden {
    /// The reason phrase of the 403.
    pub fn reason(&self) -> &'static str {
        match self.0 {
            Action::Park => "Forbidden: Park Not Allowed From This Address",
            Action::Retrieve => "Forbidden: Retrieve Not Allowed From This Address",
            Action::Subscribe => "Forbidden: Subscribe Not Allowed From This Address",
        }
    }
}

/// Whether `source` may perform `action` in the lot configured by `lot`.
pub fn check(lot: &LotConfig, action: Action, source: IpAddr) -> Result<(), Forbidden> {
    let list = match action {
        Action::Park => &lot.allow_park,
        Action::Retrieve => &lot.allow_retrieve,
        Action::Subscribe => &lot.allow_subscribe,
    };
    match list {
        None => Ok(()),
        Some(nets) if allowed(nets, source) => Ok(()),
        Some(_) => Err(Forbidden(action)),
    }
}

/// Whether `source` lies in one of `nets`. An IPv4-mapped IPv6 source (`::ffff:10.0.0.1`, as a dual-stack
/// socket reports it) is compared as the IPv4 address it carries.
fn allowed(nets: &[IpNet], source: IpAddr) -> bool {
    let source = source.to_canonical();
    nets.iter().any(|n| n.contains(&source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(park: Option<&[&str]>) -> LotConfig {
        let mut l = LotConfig::default_lot();
        l.allow_park = park.map(|ns| ns.iter().map(|n| n.parse().unwrap()).collect());
        l
    }

    #[test]
    fn absent_list_allows_everyone_empty_list_nobody() {
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(check(&lot(None), Action::Park, ip), Ok(()));
        assert_eq!(check(&lot(Some(&[])), Action::Park, ip), Err(Forbidden(Action::Park)));
    }

    #[test]
    fn networks_match_by_prefix_and_mapped_v6_counts_as_v4() {
        let l = lot(Some(&["10.0.0.0/8", "2001:db8::/32"]));
        for ok in ["10.1.2.3", "::ffff:10.9.9.9", "2001:db8::5"] {
            assert_eq!(check(&l, Action::Park, ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for bad in ["11.0.0.1", "2001:db9::1", "::ffff:11.0.0.1"] {
            let err = check(&l, Action::Park, bad.parse().unwrap()).unwrap_err();
            assert!(err.reason().contains("Park"), "{bad}");
        }
        // Other actions have their own lists.
        assert_eq!(check(&l, Action::Retrieve, "11.0.0.1".parse().unwrap()), Ok(()));
    }

    #[test]
    fn config_keys_parse_from_toml() {
        let text = "[[lot]]\nname='a'\npark_code='700'\norbits='701-702'\nallow_retrieve=['127.0.0.0/8']\nallow_subscribe=[]\nblf_occupied_state='early'\n";
        let cfg = crate::config::Config::from_toml(std::path::Path::new("x"), text).unwrap();
        let l = &cfg.lots[0];
        assert_eq!(l.allow_park, None);
        assert_eq!(l.allow_retrieve.as_ref().map(Vec::len), Some(1));
        assert_eq!(l.allow_subscribe, Some(vec![]));
        assert_eq!(l.blf_occupied_state, crate::config::BlfOccupiedState::Early);
        assert_eq!(check(l, Action::Retrieve, "127.0.0.1".parse().unwrap()), Ok(()));
        assert!(check(l, Action::Subscribe, "127.0.0.1".parse().unwrap()).is_err());
    }
}
