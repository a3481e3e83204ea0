//! SIP over TLS settings (issue 19): the `[server] tls_*` keys and the `--tls-*` flags, resolved to one
//! [`TlsSettings`] (or none: no TLS listener, as before).
//!
//! ```toml
//! [server]
//! tls_listen = "0.0.0.0:5061"          # default: listen's IP, port 5061
//! tls_cert = "/etc/parkd/cert.pem"     # certificate chain, PEM (leaf first)
//! tls_key = "/etc/parkd/key.pem"       # its private key, PEM (PKCS#8, PKCS#1 or SEC1)
//! tls_ca = "/etc/parkd/clients-ca.pem" # optional: client certificates required (mutual TLS), and the
//!                                      # roots outbound TLS connections are verified against
//! ```

use super::{ConfigError, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The default port of SIP over TLS (RFC 3261 §19.1.2).
pub const DEFAULT_TLS_PORT: u16 = 5061;

/// Where the TLS listener's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// `tls_cert` and `tls_key`, PEM files (read again on SIGHUP).
    Files { cert: PathBuf, key: PathBuf },
    /// `--tls-self-signed`: a throw-away certificate made at startup (development only).
    SelfSigned,
}

/// SIP over TLS as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The address the TLS listener binds.
    pub listen: SocketAddr,
    pub cert: CertSource,
    /// With it, every client must present a certificate issued by one of these CAs (mutual TLS), and outbound
    /// connections verify the server against them instead of the system's roots.
    pub ca: Option<PathBuf>,
}

impl ServerConfig {
    /// The TLS settings, `None` when no `tls_*` key (and no `--tls-*` flag) is set.
    pub fn tls(&self) -> Result<Option<TlsSettings>, ConfigError> {
        let any = self.tls_listen.is_some() || self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_ca.is_some() || self.tls_self_signed;
        if !any {
            return Ok(None);
        }
        let cert = match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
            (Some(cert), Some(key), false) => CertSource::Files { cert: cert.clone(), key: key.clone() },
            (None, None, true) => CertSource::SelfSigned,
            (Some(_), Some(_), true) => return Err(ConfigError::Tls("--tls-self-signed and tls_cert/tls_key exclude each other")),
            (Some(_), None, _) => return Err(ConfigError::Tls("tls_cert needs tls_key")),
            (None, Some(_), _) => return Err(ConfigError::Tls("tls_key needs tls_cert")),
            (None, None, false) => return Err(ConfigError::Tls("TLS needs tls_cert and tls_key (or --tls-self-signed for development)")),
        };
        let listen = self.tls_listen.unwrap_or_else(|| SocketAddr::new(self.listen.ip(), DEFAULT_TLS_PORT));
        Ok(Some(TlsSettings { listen, cert, ca: self.tls_ca.clone() }))
    }

    /// parkd's own address on TLS (Via sent-by and Contact of a TLS leg): the advertised IP, the TLS port.
    pub fn advertised_tls(&self) -> Option<SocketAddr> {
        let listen = self.tls().ok().flatten()?.listen;
        Some(SocketAddr::new(self.advertised_ip(), listen.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn server(toml: &str) -> ServerConfig {
        Config::from_toml(std::path::Path::new("x.toml"), &format!("[server]\n{toml}\n")).unwrap().server
    }

    #[test]
    fn no_tls_key_means_no_tls() {
        assert_eq!(server("").tls().unwrap(), None);
        assert_eq!(server("").advertised_tls(), None);
    }

    #[test]
    fn cert_and_key_default_to_port_5061_on_the_listen_ip() {
        let s = server("listen = \"127.0.0.1:5070\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"");
        let t = s.tls().unwrap().unwrap();
        assert_eq!(t.listen, "127.0.0.1:5061".parse().unwrap());
        assert_eq!(t.cert, CertSource::Files { cert: "c.pem".into(), key: "k.pem".into() });
        assert_eq!(t.ca, None);
        assert_eq!(s.advertised_tls(), Some("127.0.0.1:5061".parse().unwrap()));
    }

    #[test]
    fn explicit_listen_and_ca() {
        let s = server("advertise = \"192.0.2.7\"\ntls_listen = \"0.0.0.0:5161\"\ntls_cert = \"c\"\ntls_key = \"k\"\ntls_ca = \"ca.pem\"");
        let t = s.tls().unwrap().unwrap();
        assert_eq!((t.listen, t.ca), ("0.0.0.0:5161".parse().unwrap(), Some("ca.pem".into())));
        assert_eq!(s.advertised_tls(), Some("192.0.2.7:5161".parse().unwrap()));
    }

    #[test]
    fn incomplete_or_contradictory_settings_are_refused() {
        for bad in ["tls_cert = \"c\"", "tls_key = \"k\"", "tls_listen = \"127.0.0.1:5061\"", "tls_ca = \"ca\""] {
            assert!(matches!(server(bad).tls(), Err(ConfigError::Tls(_))), "{bad}");
        }
        let mut s = server("tls_cert = \"c\"\ntls_key = \"k\"");
        s.tls_self_signed = true;
        assert!(s.tls().is_err());
        let mut s = server("");
        s.tls_self_signed = true;
        assert_eq!(s.tls().unwrap().unwrap().cert, CertSource::SelfSigned);
    }

    #[test]
    fn self_signed_is_no_config_key() {
        assert!(Config::from_toml(std::path::Path::new("x"), "[server]\ntls_self_signed = true\n").is_err());
    }
}
