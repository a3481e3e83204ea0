//! What a live reload (SIGHUP, `POST /v1/reload`; issue 21) may not change: the settings bound or spawned at
//! startup. [`needs_restart`] names each one that differs between the running and the reloaded configuration;
//! the running value stays in force until the next start.

use super::Config;

/// The keys that differ between `running` and `new` and only take effect at the next start (`"server.listen"`,
/// `"[limits]"`, …). Everything else (the lots, `[http] dial_allow`) is applied live by the core.
pub fn needs_restart(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&running.server, &new.server);
    let mut field = |name: &str, differs: bool| {
        if differs {
            out.push(name.to_string());
        }
    };
    field("server.listen", a.listen != b.listen);
    field("server.advertise", a.advertise != b.advertise);
    field("server.rtp_ports", a.rtp_ports != b.rtp_ports);
    field("server.rtp_legs_per_port", a.rtp_legs_per_port != b.rtp_legs_per_port);
    field("server.rtp_sender", a.rtp_sender != b.rtp_sender);
    field("server.media_threads", a.media_threads != b.media_threads);
    field("server.sip_threads", a.sip_threads != b.sip_threads);
    field("server.outbound_proxy", a.outbound_proxy != b.outbound_proxy);
    field("server.trusted_proxies", a.trusted_proxies != b.trusted_proxies);
    field("server.drain", a.drain != b.drain);
    field("server.state_dir", a.state_dir != b.state_dir);
    field("server.journal", a.journal != b.journal);
    field("server.tls_listen", a.tls_listen != b.tls_listen);
    field("server.tls_cert", a.tls_cert != b.tls_cert);
    field("server.tls_key", a.tls_key != b.tls_key);
    field("server.tls_ca", a.tls_ca != b.tls_ca);
    field("server.srtp_over_plain", a.srtp_over_plain != b.srtp_over_plain);
    let mut http_a = running.http.clone();
    http_a.dial_allow = new.http.dial_allow.clone();
    field("[http] (except dial_allow)", format!("{http_a:?}") != format!("{:?}", new.http));
    field("[limits]", format!("{:?}", running.limits) != format!("{:?}", new.limits));
    field("[access]", format!("{:?}", running.access) != format!("{:?}", new.access));
    field("[cluster]", format!("{:?}", running.cluster) != format!("{:?}", new.cluster));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_settings_are_reported_and_lots_are_not() {
        let running = Config::with_defaults();
        let mut new = running.clone();
        assert!(needs_restart(&running, &new).is_empty());
        new.lots[0].parking_time = 5;
        new.http.dial_allow = vec!["^sip:2[0-9]{2}@".into()];
        assert!(needs_restart(&running, &new).is_empty(), "lots and dial_allow are applied live");
        new.server.listen = "127.0.0.1:5999".parse().unwrap();
        new.server.rtp_ports = crate::config::NumRange::parse("30000-30999").unwrap();
        new.server.state_dir = "/elsewhere".into();
        new.limits.parked_per_source = 1234;
        assert_eq!(needs_restart(&running, &new), vec!["server.listen", "server.rtp_ports", "server.state_dir", "[limits]"]);
    }
}
