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
    /// `["parkd.example.com"]` behind a reverse proxy. Any other `Host` gets 421 (stops DNS rebinding).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Destinations the API may make parkd dial (unpark to, park on behalf of), as patterns `user@host` where
    /// either side may be `*` or end in `*` (e.g. `"2*@pbx.example.com"`, `"*@10.0.0.5"`). Always allowed
    /// besides these: the lots' own numbers, the `outbound_proxy` host, and the parker of that very call.
    #[serde(default)]
    pub dial_allow: Vec<String>,
    /// Whether `/metrics`, `/healthz` and `/readyz` answer without the token (default true).
    #[serde(default = "default_true")]
    pub open_metrics: bool,
    /// Largest request body accepted (bytes); larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Failed authentications allowed per source address per minute; beyond that, 429 until the minute is over.
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
    /// The address to serve on; `None` when the server is off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| ConfigError::BadAddress { what: "http listen (IP:PORT or off)", value: self.listen.clone() })
    }
}
