//! Command-line flags and how they combine with the TOML file: flags override the file; flags that describe a
//! lot (`--park-code`, `--orbits`, `--parking-time`, `--slot-policy`, `--music`) apply to the first lot.

use crate::config::{Config, ConfigError, LotConfig, MusicSource, NumRange, RtpSender, SlotPolicy};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// parkd — a SIP call-park server: park, hold music, retrieve, recall.
///
/// Without a config file it runs one lot: park code 700, orbits 701-720, 45 s parking time, built-in music,
/// listening on 127.0.0.1:5060 (UDP and TCP).
#[derive(Clone, Debug, Parser)]
#[command(name = "parkd", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (see README / parkd.example.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration (and hold music files) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// SIP address to listen on, UDP and TCP.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address to put in Contact, Via and SDP (when listening on 0.0.0.0 / [::] or behind NAT); one per IP
    /// family for dual-stack: `192.0.2.10,2001:db8::10`.
    #[arg(long, value_name = "IP[,IP]")]
    pub advertise: Option<crate::config::Advertise>,
    /// RTP port range, e.g. 10000-19999 (one even port per call leg).
    #[arg(long, value_name = "LO-HI")]
    pub rtp_ports: Option<String>,
    /// Call legs sharing one RTP port (default 1: one port per leg); 1-64.
    #[arg(long, value_name = "N")]
    pub rtp_legs_per_port: Option<u16>,
    /// How hold music is sent: auto (raw with CAP_NET_RAW, else io_uring if the kernel allows it, else syscalls), raw, io_uring or syscalls.
    #[arg(long, value_name = "SENDER", value_enum)]
    pub rtp_sender: Option<RtpSender>,
    /// Media threads, each with a block of the RTP ports (default 0: one per CPU core).
    #[arg(long, value_name = "N")]
    pub media_threads: Option<u16>,
    /// SIP threads (shards by Call-ID sharing one orbit table; default 1). More than 1 needs --no-journal.
    #[arg(long, value_name = "N")]
    pub sip_threads: Option<u16>,
    /// Park code of the first lot (indirect park), e.g. 700.
    #[arg(long, value_name = "NUMBER")]
    pub park_code: Option<String>,
    /// Orbits of the first lot, e.g. 701-720.
    #[arg(long, value_name = "LO-HI")]
    pub orbits: Option<String>,
    /// Seconds before a parked call is recalled (first lot); 0 = never.
    #[arg(long, value_name = "SECONDS")]
    pub parking_time: Option<u64>,
    /// How the first lot picks a free orbit: first, next or random.
    #[arg(long, value_name = "POLICY")]
    pub slot_policy: Option<String>,
    /// Hold music of the first lot: "builtin" or a WAV file (8 kHz mono 16-bit).
    #[arg(long, value_name = "FILE")]
    pub music: Option<String>,
    /// HTTP API / events / metrics / attendant page address, or `off`.
    #[arg(long, value_name = "IP:PORT|off")]
    pub http: Option<String>,
    /// Bearer token for every /v1 call of the HTTP API (prefer `[http] token` in the config file; absent: one is
    /// generated in the state directory).
    #[arg(long, value_name = "TOKEN")]
    pub http_token: Option<String>,
    /// Send every request parkd starts (recalls) through this proxy, e.g. sip:127.0.0.1:5080 (the PBX).
    #[arg(long, value_name = "URI")]
    pub outbound_proxy: Option<String>,
    /// Trust this network (the PBX/proxy) for P-Asserted-Identity and `trusted_only` lots; repeatable.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Start in drain mode: new parks get 503 (SIGUSR1 toggles it).
    #[arg(long)]
    pub drain: bool,
    /// Directory for state that outlives the process (generated API token, journal); default ./parkd-state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep calls only in memory: no journal in the state directory, so a restart drops every call (`[server]
    /// journal = false`; for benchmarks and throwaway instances).
    #[arg(long)]
    pub no_journal: bool,
    /// Health check: send one SIP OPTIONS to IP:PORT over UDP and exit 0 if it is answered 200 within 2 s.
    #[arg(long, value_name = "IP:PORT")]
    pub probe: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_name = "FORMAT")]
    pub log_format: String,
    /// Log filter (tracing EnvFilter syntax), e.g. info or parkd=debug. RUST_LOG overrides it.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log: String,
    /// Join a cluster of parkd nodes sharing one orbit space through this Redis: redis://host:port[/db],
    /// rediss://host:port[/db] or redis+sentinel://host:port[,host:port...]/master[/db]. Needs --node.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// This node's name in the cluster (unique; A-Z a-z 0-9 . _ -). Needs --redis.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Seconds a node's orbit claims outlive it in the cluster (default 10; renewed every third of it).
    #[arg(long, value_name = "SECONDS")]
    pub lease: Option<u64>,
    /// SIP over TLS: the TLS listener's address (default: the --listen IP, port 5061). Needs a certificate.
    #[arg(long, value_name = "IP:PORT")]
    pub tls_listen: Option<SocketAddr>,
    /// SIP over TLS: certificate chain, PEM (reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// SIP over TLS: private key of --tls-cert, PEM (reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// SIP over TLS: require client certificates from these CAs (mutual TLS); also the roots for outbound TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// SIP over TLS with a throw-away self-signed certificate made at startup. For development only.
    #[arg(long)]
    pub tls_self_signed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--slot-policy must be first, next or random, not {0:?}")]
    SlotPolicy(String),
}

impl Cli {
    /// The effective configuration: file (or defaults), then flags, then validation.
    pub fn config(&self) -> Result<Config, CliError> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::with_defaults(),
        };
        if cfg.lots.is_empty() {
            cfg.lots.push(LotConfig::default_lot());
        }
        if let Some(l) = self.listen {
            cfg.server.listen = l;
        }
        if let Some(a) = self.advertise {
            cfg.server.advertise = Some(a);
        }
        if let Some(p) = &self.outbound_proxy {
            cfg.server.outbound_proxy = Some(p.clone());
        }
        cfg.server.trusted_proxies.extend(self.trusted_proxies.iter().copied());
        if self.drain {
            cfg.server.drain = true;
        }
        if let Some(d) = &self.state_dir {
            cfg.server.state_dir = d.clone();
        }
        if self.no_journal {
            cfg.server.journal = false;
        }
        if let Some(a) = self.tls_listen {
            cfg.server.tls_listen = Some(a);
        }
        if let Some(f) = &self.tls_cert {
            cfg.server.tls_cert = Some(f.clone());
        }
        if let Some(f) = &self.tls_key {
            cfg.server.tls_key = Some(f.clone());
        }
        if let Some(f) = &self.tls_ca {
            cfg.server.tls_ca = Some(f.clone());
        }
        if self.tls_self_signed {
            cfg.server.tls_self_signed = true;
        }
        if let Some(r) = &self.rtp_ports {
            cfg.server.rtp_ports = NumRange::parse(r)?;
        }
        if let Some(k) = self.rtp_legs_per_port {
            cfg.server.rtp_legs_per_port = k;
        }
        if let Some(s) = self.rtp_sender {
            cfg.server.rtp_sender = s;
        }
        if let Some(n) = self.media_threads {
            cfg.server.media_threads = n;
        }
        if let Some(n) = self.sip_threads {
            cfg.server.sip_threads = n;
        }
        if let Some(h) = &self.http {
            cfg.http.listen = h.clone();
        }
        if let Some(t) = &self.http_token {
            cfg.http.token = Some(t.clone());
        }
        if let Some(r) = &self.redis {
            cfg.cluster.redis = Some(r.clone());
        }
        if let Some(n) = &self.node {
            cfg.cluster.node = Some(n.clone());
        }
        if let Some(l) = self.lease {
            cfg.cluster.lease = l;
        }
        let lot = &mut cfg.lots[0];
        if let Some(c) = &self.park_code {
            lot.park_code = c.clone();
        }
        if let Some(o) = &self.orbits {
            lot.orbits = NumRange::parse(o)?;
        }
        if let Some(t) = self.parking_time {
            lot.parking_time = t;
        }
        if let Some(p) = &self.slot_policy {
            lot.slot_policy = match p.as_str() {
                "first" => SlotPolicy::First,
                "next" => SlotPolicy::Next,
                "random" => SlotPolicy::Random,
                other => return Err(CliError::SlotPolicy(other.to_string())),
            };
        }
        if let Some(m) = &self.music {
            lot.music = if m == "builtin" { MusicSource::Builtin } else { MusicSource::Wav(m.into()) };
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults_for_the_first_lot() {
        let cli = Cli::parse_from([
            "parkd", "--listen", "127.0.0.1:5070", "--rtp-ports", "30000-30100", "--park-code", "800", "--orbits", "801-810",
            "--parking-time", "5",
        ]);
        let cfg = cli.config().unwrap();
        assert_eq!(cfg.server.listen.port(), 5070);
        assert_eq!(cfg.server.rtp_ports.lo, 30000);
        assert_eq!(cfg.lots[0].park_code, "800");
        assert_eq!(cfg.lots[0].orbits.len(), 10);
        assert_eq!(cfg.lots[0].parking_time, 5);
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        let cfg = Cli::parse_from(["parkd"]).config().unwrap();
        assert_eq!(cfg.server.listen, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(cfg.lots[0].park_code, "700");
        assert_eq!((cfg.lots[0].orbits.lo, cfg.lots[0].orbits.hi), (701, 720));
        assert_eq!(cfg.lots[0].parking_time, 45);
    }

    #[test]
    fn proxy_flags_reach_the_server_config() {
        let cli = Cli::parse_from([
            "parkd", "--outbound-proxy", "sip:127.0.0.2:5080", "--trusted-proxy", "127.0.0.2/32", "--trusted-proxy", "10.0.0.0/8", "--drain",
        ]);
        let cfg = cli.config().unwrap();
        assert_eq!(cfg.server.outbound_proxy.as_deref(), Some("sip:127.0.0.2:5080"));
        assert!(cfg.server.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(!cfg.server.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(cfg.server.drain);
        assert!(Cli::parse_from(["parkd", "--outbound-proxy", "sip:pbx.example"]).config().is_err(), "needs an IP address");
    }

    #[test]
    fn rtp_sender_flag_reaches_the_server_config() {
        assert_eq!(Cli::parse_from(["parkd"]).config().unwrap().server.rtp_sender, RtpSender::Auto);
        assert_eq!(Cli::parse_from(["parkd", "--rtp-sender", "io_uring"]).config().unwrap().server.rtp_sender, RtpSender::IoUring);
        assert_eq!(Cli::parse_from(["parkd", "--rtp-sender", "syscalls"]).config().unwrap().server.rtp_sender, RtpSender::Syscalls);
        assert_eq!(Cli::parse_from(["parkd", "--rtp-sender", "raw"]).config().unwrap().server.rtp_sender, RtpSender::Raw);
        assert!(Cli::try_parse_from(["parkd", "--rtp-sender", "uring"]).is_err());
    }

    #[test]
    fn rtp_legs_per_port_flag_reaches_the_server_config() {
        assert_eq!(Cli::parse_from(["parkd"]).config().unwrap().server.rtp_legs_per_port, 1);
        let cfg = Cli::parse_from(["parkd", "--rtp-legs-per-port", "8"]).config().unwrap();
        assert_eq!(cfg.server.rtp_legs_per_port, 8);
        assert!(Cli::parse_from(["parkd", "--rtp-legs-per-port", "0"]).config().is_err());
    }

    #[test]
    fn media_threads_flag_reaches_the_server_config() {
        assert_eq!(Cli::parse_from(["parkd"]).config().unwrap().server.media_threads, 0, "0 = one per core");
        assert_eq!(Cli::parse_from(["parkd", "--media-threads", "3"]).config().unwrap().server.media_threads, 3);
    }

    #[test]
    fn sip_threads_flag_reaches_the_server_config() {
        assert_eq!(Cli::parse_from(["parkd"]).config().unwrap().server.sip_threads, 1);
        assert_eq!(Cli::parse_from(["parkd", "--sip-threads", "2", "--no-journal"]).config().unwrap().server.sip_threads, 2);
    }

    #[test]
    fn journal_is_on_by_default_and_no_journal_turns_it_off() {
        assert!(Cli::parse_from(["parkd"]).config().unwrap().server.journal);
        assert!(!Cli::parse_from(["parkd", "--no-journal"]).config().unwrap().server.journal);
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        assert!(Cli::parse_from(["parkd", "--orbits", "720-701"]).config().is_err());
        assert!(matches!(Cli::parse_from(["parkd", "--slot-policy", "best"]).config(), Err(CliError::SlotPolicy(_))));
    }

    #[test]
    fn cluster_flags_reach_the_cluster_config_and_are_checked() {
        let cfg = Cli::parse_from(["parkd"]).config().unwrap();
        assert!(!cfg.cluster.enabled(), "a single node unless asked");
        let cfg = Cli::parse_from(["parkd", "--redis", "redis://127.0.0.1:6379/1", "--node", "park-a"]).config().unwrap();
        assert!(cfg.cluster.enabled());
        assert_eq!((cfg.cluster.node.as_deref(), cfg.cluster.lease), (Some("park-a"), 10));
        let cfg = Cli::parse_from(["parkd", "--redis", "redis+sentinel://127.0.0.1:26379/m", "--node", "b", "--lease", "30"]).config().unwrap();
        assert_eq!(cfg.cluster.lease, 30);
        assert!(matches!(cfg.cluster.target(), Ok(Some(crate::config::RedisTarget::Sentinel { .. }))));
        for bad in [
            &["parkd", "--redis", "redis://127.0.0.1:6379"][..],
            &["parkd", "--node", "a"],
            &["parkd", "--redis", "127.0.0.1:6379", "--node", "a"],
            &["parkd", "--redis", "redis://127.0.0.1:6379", "--node", "a", "--lease", "1"],
            &["parkd", "--redis", "redis://127.0.0.1:6379", "--node", "a:b"],
        ] {
            let e = Cli::parse_from(bad).config().unwrap_err();
            assert!(e.to_string().contains("[cluster]"), "{bad:?}: {e}");
        }
    }
}
