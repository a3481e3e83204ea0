//! `[http]`: the HTTP API, event stream, metrics and attendant page, and who may use them.
//!
//! The security model (issue 15): every `/v1` call needs the bearer token (a generated one lives in
//! `state_dir` when none is configured); `/metrics`, `/healthz` and `/readyz` stay open unless
//! `open_metrics = false`; a `Host` that is not the listener's address or one of `hosts` gets 421; calls that make
//! parkd dial are limited to `dial_allow`.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[http]`: where the API listens and what guards it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `IP:PORT`, or `"off"` to run without the HTTP server.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Bearer token for every `/v1` call. Absent: parkd generates one at first start and keeps it in
    /// `<state_dir>/http-token` (mode 0600).
    #[serde(default)]
    pub token: Option<String>,
    /// Host names (besides the listener's own address and `localhost`) that requests may name in `Host`, e.g.
    /// `["parkd.example.com"]` behind a reverse proxy. Any other `Host` gets 421 (stops DNS rebinding). Ports
    /// are not compared; on an unspecified listener (`0.0.0.0`, `[::]`) every IP literal is accepted.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Destinations the API may make parkd dial (`POST /v1/orbits/{orbit}/unpark`), as patterns `user@host`
    /// where either side may be `*` or end in `*` (e.g. `"2*@pbx.example.com"`, `"*@10.0.0.5"`); the host is
    /// compared without case, the port is not compared, `*` as user also matches a URI without one. Always
    /// allowed besides these (what parkd already has reason to call): the parker of that very call (its
    /// Referred-By), the lot's `fallback_uri`, and the lots' own numbers (park codes, orbits, retrieve codes) at
    /// parkd's own address or at the `outbound_proxy` host. Anything else is refused with 403 and nothing is
    /// sent. `"*@*"` allows every destination (toll fraud risk: only with a trusted token holder).
    #[serde(default)]
    pub dial_allow: Vec<String>,
    /// Whether `/metrics`, `/healthz` and `/readyz` answer without the token (default true).
    #[serde(default = "default_true")]
    pub open_metrics: bool,
    /// Largest request body accepted (bytes, default 16384); larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Failed authentications (a wrong bearer token) allowed per source address (IPv6: per /64) per minute;
    /// beyond that every call needing the token gets 429 with Retry-After until the minute is over. 0 = no
    /// limit.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: u32,
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_true() -> bool {
    true
}
fn default_max_body() -> usize {
    16 * 1024
}
fn default_auth_failures() -> u32 {
    10
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            token: None,
            hosts: Vec::new(),
            dial_allow: Vec::new(),
            open_metrics: true,
            max_body_bytes: default_max_body(),
            auth_failures_per_minute: default_auth_failures(),
        }
    }
}

impl HttpConfig {
    /// Checks the listen address, `hosts` and `dial_allow` patterns.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        for h in &self.hosts {
            if h.is_empty() || h.contains(['/', '@', ' ', '*']) {
                return Err(ConfigError::BadAddress { what: "[http] hosts entry (a host name, e.g. parkd.example.com)", value: h.clone() });
            }
        }
        self.dial_patterns()?;
        Ok(())
    }

    /// `dial_allow`, parsed.
    pub fn dial_patterns(&self) -> Result<Vec<DialPattern>, ConfigError> {
        self.dial_allow
            .iter()
            .map(|p| DialPattern::parse(p).ok_or_else(|| ConfigError::BadAddress { what: "[http] dial_allow pattern (user@host, * allowed)", value: p.clone() }))
            .collect()
    }

    /// The address to serve on; `None` when the server is off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| ConfigError::BadAddress { what: "http listen (IP:PORT or off)", value: self.listen.clone() })
    }
}

/// One `[http] dial_allow` pattern: `user@host`, each side exact, `*`, or a prefix ending in `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialPattern {
    user: Glob,
    host: Glob,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Glob {
    Any,
    Prefix(String),
    Exact(String),
}

impl Glob {
    fn parse(s: &str) -> Option<Glob> {
        if s.is_empty() || s.contains(char::is_whitespace) {
            return None;
        }
        if s == "*" {
            return Some(Glob::Any);
        }
        match s.strip_suffix('*') {
            Some(p) if !p.contains('*') => Some(Glob::Prefix(p.to_string())),
            Some(_) => None,
            None if s.contains('*') => None,
            None => Some(Glob::Exact(s.to_string())),
        }
    }

    fn matches(&self, value: &str, ignore_case: bool) -> bool {
        let eq = |a: &str, b: &str| if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
        match self {
            Glob::Any => true,
            Glob::Prefix(p) => value.len() >= p.len() && value.is_char_boundary(p.len()) && eq(&value[..p.len()], p),
            Glob::Exact(e) => eq(value, e),
        }
    }
}

impl DialPattern {
    /// `user@host`; `None` when it is not of that shape.
    pub fn parse(s: &str) -> Option<DialPattern> {
        let (user, host) = s.trim().rsplit_once('@')?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        Some(DialPattern { user: Glob::parse(user)?, host: Glob::parse(&host)? })
    }

    /// Whether a destination with this user part (None: no user) and host matches. Hosts compare without case
    /// and without IPv6 brackets.
    pub fn matches(&self, user: Option<&str>, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let user_ok = match user {
            Some(u) => self.user.matches(u, false),
            None => self.user == Glob::Any,
        };
        user_ok && self.host.matches(host, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_patterns_match_user_and_host() {
        let p = DialPattern::parse("2*@PBX.example.com").unwrap();
        assert!(p.matches(Some("205"), "pbx.example.com"));
        assert!(!p.matches(Some("19005550100"), "pbx.example.com"));
        assert!(!p.matches(Some("205"), "pbx.example.com.evil"));
        assert!(!p.matches(None, "pbx.example.com"));
        let any_user = DialPattern::parse("*@10.0.0.5").unwrap();
        assert!(any_user.matches(Some("x"), "10.0.0.5") && any_user.matches(None, "10.0.0.5"));
        assert!(!any_user.matches(Some("x"), "10.0.0.50"));
        let exact = DialPattern::parse("carol@127.0.0.1").unwrap();
        assert!(exact.matches(Some("carol"), "127.0.0.1") && !exact.matches(Some("Carol"), "127.0.0.1"));
        assert!(DialPattern::parse("*@*").unwrap().matches(Some("19005550100"), "anything"));
    }

    #[test]
    fn bad_patterns_and_hosts_are_config_errors() {
        for bad in ["carol", "@host", "user@", "a*b@host", "user@h*st", "us er@host", "**@host"] {
            assert!(DialPattern::parse(bad).is_none(), "{bad:?} must be refused");
        }
        let cfg = HttpConfig { dial_allow: vec!["nope".into()], ..HttpConfig::default() };
        assert!(cfg.validate().is_err());
        let cfg = HttpConfig { hosts: vec!["http://x/".into()], ..HttpConfig::default() };
        assert!(cfg.validate().is_err());
        let ok = HttpConfig { hosts: vec!["parkd.example.com".into()], dial_allow: vec!["2*@pbx".into()], ..HttpConfig::default() };
        assert!(ok.validate().is_ok());
    }
}
