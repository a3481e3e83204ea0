//! parkd's configuration: a TOML file, overridden by command-line flags, validated once at startup.
//!
//! Names follow what an Asterisk admin knows from res_parking (`parkext`, `parkpos`, `parkingtime`,
//! `findslot`, `parkedmusicclass`) while reading as plain English in the file:
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:5060"        # UDP and TCP
//! rtp_ports = "10000-19999"
//!
//! [[lot]]
//! name = "default"
//! park_code = "700"                # parkext
//! orbits = "701-720"               # parkpos
//! parking_time = 45                # parkingtime, seconds; 0 = never recall
//! slot_policy = "first"            # findslot: first | next | random
//! music = "builtin"                # parkedmusicclass: "builtin" or a WAV path (8 kHz mono 16-bit)
//! announce_orbit = true           # say "parked on 701" to a caller who parked itself
//! ```

mod advertise;
mod cluster;
mod http;
mod limits;
mod lot;
pub mod reload;
pub mod lot_keys;
mod tls;

pub use advertise::{Advertise, AdvertiseError};
pub use cluster::{ClusterConfig, ClusterConfigError, RedisTarget, TlsFiles};
pub use http::{DialPattern, HttpConfig};
pub use lot_keys::{CourtesyTone, DtmfAction, DtmfKeys};
pub use lot::{AuthAction, AuthConfig, BlfOccupiedState, EmptyOrbit, LotConfig, RecallFallback};
pub use limits::{AccessConfig, LimitsConfig, SourceLimits, SourceLimitsPartial};
pub use tls::{CertSource, TlsSettings, DEFAULT_TLS_PORT};

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The most orbits one lot may have. Allocation, counts and whole-lot listings of occupied orbits do not scan
/// the lot (`src/park/free_index.rs`); what stays O(lot size) is the API's listing of every orbit, free ones
/// included.
pub const MAX_ORBITS_PER_LOT: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("session_min_se = {min_se} and session_expires = {expires}: Min-SE is at least 90 s (RFC 4028), and session_expires is 0 or at least session_min_se")]
    BadSessionTimer { min_se: u32, expires: u32 },
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML for parkd: {source}")]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("bad range {text:?}: expected LOW-HIGH with LOW <= HIGH")]
    BadRange { text: String },
    #[error("lot {lot:?}: park code {code:?} is not a dialable number")]
    BadCode { lot: String, code: String },
    #[error("lot {lot:?}: orbit range {range:?} must be numbers of equal length, at most 100000 orbits")]
    BadOrbits { lot: String, range: String },
    #[error("number {number:?} is used twice (lots {first:?} and {second:?})")]
    DuplicateNumber { number: String, first: String, second: String },
    #[error("lot name {0:?} is used twice")]
    DuplicateLot(String),
    #[error("no parking lot configured")]
    NoLots,
    #[error("RTP port range {lo}-{hi} is too small (need at least 2 ports) or outside 1024-65534")]
    BadRtpPorts { lo: u16, hi: u16 },
    #[error("sip_threads = {value}: {why}")]
    BadSipThreads { value: u16, why: &'static str },
    #[error("rtp_legs_per_port = {value}: must be between 1 and {max}")]
    BadRtpLegsPerPort { value: u16, max: u16 },
    #[error("{what}: {value:?} is not a valid address")]
    BadAddress { what: &'static str, value: String },
    #[error("lot {lot:?}: overflow_lot {overflow:?} must name another configured lot")]
    BadOverflow { lot: String, overflow: String },
    #[error("lot {lot:?}: recall_fallback = \"fallback_uri\" needs fallback_uri = \"sip:...\"")]
    MissingFallbackUri { lot: String },
    #[error("{what}: {value:?} is not a SIP URI (sip:user@host[:port])")]
    BadUri { what: &'static str, value: String },
    #[error(transparent)]
    Advertise(#[from] AdvertiseError),
    #[error(transparent)]
    MediaThreads(#[from] crate::park::shard_plan::ShardPlanError),
    #[error(transparent)]
    Cluster(#[from] ClusterConfigError),
    #[error("[server] TLS: {0}")]
    Tls(&'static str),
    #[error("lot {lot:?}: domain {domain:?} is not a host name")]
    BadDomain { lot: String, domain: String },
}

/// How the media thread sends hold music (`[server] rtp_sender`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RtpSender {
    /// `raw` when parkd may open a raw socket (`CAP_NET_RAW`), else io_uring when the kernel allows
    /// it, else `syscalls` (one log line says which and why).
    #[default]
    Auto,
    /// Every hold packet of a pacer turn through one raw IPv4 socket with one `sendmmsg`, headers
    /// written by parkd (source port = the leg's port); needs `CAP_NET_RAW`, startup fails without it.
    /// IPv6 legs use the leg's own socket.
    Raw,
    /// One io_uring submission per pacer turn for every due hold packet, on every RTP socket
    /// (Linux only); startup fails when the kernel or a seccomp profile refuses io_uring.
    #[value(name = "io_uring")]
    IoUring,
    /// One `sendto` per hold packet (one leg per port) or one `sendmmsg` per port (shared ports).
    Syscalls,
}

impl RtpSender {
    /// The name used in the config file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RtpSender::Auto => "auto",
            RtpSender::Raw => "raw",
            RtpSender::IoUring => "io_uring",
            RtpSender::Syscalls => "syscalls",
        }
    }
}

/// How a free orbit is chosen for an indirect park (res_parking `findslot`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotPolicy {
    /// Lowest free orbit.
    #[default]
    First,
    /// The free orbit after the one used last, wrapping around.
    Next,
    /// Any free orbit, chosen at random.
    Random,
}

/// Where a lot's hold music comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MusicSource {
    #[default]
    Builtin,
    Wav(PathBuf),
}

impl<'de> Deserialize<'de> for MusicSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(if s.is_empty() || s == "builtin" || s == "default" { MusicSource::Builtin } else { MusicSource::Wav(s.into()) })
    }
}

/// An inclusive range of numbers written `LOW-HIGH` (or a single number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumRange {
    pub lo: u32,
    pub hi: u32,
    /// Digits to zero-pad to (`"0701"` has width 4).
    pub width: usize,
}

impl NumRange {
    pub fn parse(text: &str) -> Result<NumRange, ConfigError> {
        let bad = || ConfigError::BadRange { text: text.to_string() };
        let (a, b) = match text.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (text.trim(), text.trim()),
        };
        if a.is_empty() || !a.bytes().all(|c| c.is_ascii_digit()) || !b.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let lo: u32 = a.parse().map_err(|_| bad())?;
        let hi: u32 = b.parse().map_err(|_| bad())?;
        if lo > hi {
            return Err(bad());
        }
        Ok(NumRange { lo, hi, width: a.len() })
    }
    pub fn len(&self) -> usize {
        (self.hi - self.lo + 1) as usize
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn contains_number(&self, user: &str) -> Option<usize> {
        if user.len() != self.width || !user.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let n: u32 = user.parse().ok()?;
        (self.lo..=self.hi).contains(&n).then(|| (n - self.lo) as usize)
    }
    pub fn name_of(&self, index: usize) -> String {
        format!("{:0width$}", self.lo as usize + index, width = self.width)
    }
}

impl<'de> Deserialize<'de> for NumRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NumRange::parse(&s).map_err(serde::de::Error::custom)
    }
}


#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Accept SRTP SDES keys (RFC 4568) from requests that did not come over TLS, and offer them on calls parkd
    /// starts over plain UDP/TCP (default false: such an `RTP/SAVP` offer gets 488, and the calls parkd starts
    /// offer keys only over TLS). A lot's `srtp_over_plain` overrides it.
    #[serde(default)]
    pub srtp_over_plain: bool,
    /// SIP address, UDP and TCP; the RTP sockets bind to its IP too. `"[::]:5060"` serves IPv4 and IPv6
    /// (one dual-stack socket), `"[::1]:5060"` or another IPv6 address IPv6 only, `"0.0.0.0:5060"` IPv4 only.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address put in Via, Contact, Record-Route and SDP `c=` when `listen` is a wildcard or behind NAT: one
    /// address, or one per family (`["192.0.2.10", "2001:db8::10"]`: IPv4 peers get the first, IPv6 peers the
    /// second). Default: the listen address; on `0.0.0.0` 127.0.0.1, on `[::]` 127.0.0.1 and ::1.
    #[serde(default)]
    pub advertise: Option<Advertise>,
    /// RTP ports: every even port is bound at startup (one per call leg), and each media thread binds the odd
    /// port above its block's first even port as its RTCP port (RFC 3605 `a=rtcp:`, for phones that do not
    /// multiplex RTCP: see `media::plane_rtcp`).
    #[serde(default = "default_rtp_ports")]
    pub rtp_ports: NumRange,
    /// How many call legs may share one RTP port (1 = one port per leg, the default). Above 1, the
    /// media thread sends each pacer slot's hold packets with one `sendmmsg` per port and tells the
    /// legs of a port apart by source address; see the README's Performance section. 1..=64.
    #[serde(default = "default_rtp_legs_per_port")]
    pub rtp_legs_per_port: u16,
    /// How hold music is sent: `auto` (default: `raw` with CAP_NET_RAW, else io_uring if available, else
    /// syscalls), `raw`, `io_uring` (required; startup fails without it) or `syscalls`.
    #[serde(default)]
    pub rtp_sender: RtpSender,
    /// Media threads. Each owns a contiguous block of `rtp_ports` (its sockets, hold music pacing and
    /// relaying); new parked calls go to the thread with the fewest legs, a retriever's leg to its
    /// parked party's thread. 0 (the default) = one per CPU core parkd may run on (at most 64 and at most
    /// one per even port of `rtp_ports`); otherwise 1..=64 and at most the number of even ports, else
    /// startup fails. The core treats 0 as 1. See [`crate::park::shard_plan`].
    #[serde(default)]
    pub media_threads: u16,
    /// SIP threads ("shards", README "Signalling shards"). 1 (the default): one thread runs the whole SIP engine,
    /// as always. N in 2..=16: N engines, each owning the dialogs whose Call-ID hashes to it, sharing one orbit
    /// table (parks on any shard never take one orbit twice; BLF and the API of every shard show every orbit; a
    /// retrieve of a call another shard holds is fetched from it and relayed). `rtp_ports` is cut into N blocks,
    /// one per shard, each with its share of `media_threads`. Needs `journal = false` and no `[cluster]` (not
    /// sharded yet: startup fails otherwise). `--sip-threads`.
    #[serde(default = "default_sip_threads")]
    pub sip_threads: u16,
    /// Every request parkd starts (recalls, fallback calls) goes through this proxy (the PBX), as a loose
    /// route. Written as a SIP URI with an IP address, e.g. `sip:127.0.0.1:5080;transport=udp`.
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    /// Networks whose requests are trusted (the PBX/proxy): their P-Asserted-Identity (RFC 3325) is believed,
    /// and lots with `trusted_only` accept requests only from them. E.g. `["127.0.0.1/32", "10.0.0.0/24"]`.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Start in drain mode: new parks get 503 + Retry-After; parked calls, retrieves and recalls go on.
    /// SIGUSR1 toggles it at run time.
    #[serde(default)]
    pub drain: bool,
    /// Where parkd keeps what must outlive the process: the journal of parked and bridged calls
    /// (`<state_dir>/journal`, locked by one parkd at a time) and the generated HTTP API token. Created mode 0700
    /// at startup. Relative paths are relative to the working directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Journal parked and bridged calls in `<state_dir>/journal`, so they survive a crash, `kill -9`, a restart
    /// and an upgrade (default `true`). `false` (or `--no-journal`): calls live only in memory and a restart
    /// drops them all; for benchmarks and throwaway test instances. A park is answered only once its record is
    /// on disk (group commit: one `fdatasync` for everything queued meanwhile).
    #[serde(default = "default_true")]
    pub journal: bool,
    /// SIP over TLS (issue 19): the address of the TLS listener (`--tls-listen`). Default: `listen`'s IP, port
    /// 5061, whenever `tls_cert`/`tls_key` are set. Without any `tls_*` key there is no TLS listener.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// The TLS certificate chain, PEM, leaf first (`--tls-cert`). Read again on SIGHUP: new handshakes use the
    /// new certificate, open connections and calls are untouched.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert`, PEM: PKCS#8, PKCS#1 or SEC1 (`--tls-key`). Read again on SIGHUP.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s), PEM (`--tls-ca`): when set, every TLS client must present a certificate issued by one
    /// of them (mutual TLS, e.g. only the PBX may connect), and parkd's outbound TLS connections verify the
    /// server against them instead of the system's roots.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// `--tls-self-signed` only (no config key): a throw-away certificate for development.
    #[serde(skip)]
    pub tls_self_signed: bool,
    /// Session timers (RFC 4028, default true): a phone's `Session-Expires` is honoured (parkd refreshes when
    /// it is the refresher, and ends a leg whose session expires), and calls parkd makes offer
    /// `Supported: timer`. false: the headers are ignored (no 422, no refreshes).
    #[serde(default = "default_true")]
    pub session_timers: bool,
    /// The smallest session interval parkd accepts, seconds (`Min-SE`, at least 90): a `Session-Expires` below it
    /// gets `422` with this `Min-SE`.
    #[serde(default = "default_session_min_se")]
    pub session_min_se: u32,
    /// The session interval parkd asks for on calls it makes (recalls, fallback calls, API unparks), seconds;
    /// 0 = it asks for none (it still offers `Supported: timer` and follows the answer).
    #[serde(default = "default_session_expires")]
    pub session_expires: u32,
}

fn default_session_min_se() -> u32 {
    90
}
fn default_session_expires() -> u32 {
    1800
}

fn default_true() -> bool {
    true
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("parkd-state")
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5060))
}
fn default_rtp_legs_per_port() -> u16 {
    1
}
fn default_rtp_ports() -> NumRange {
    NumRange { lo: 10000, hi: 10999, width: 5 }
}

/// The most SIP threads (`sip_threads`).
pub const MAX_SIP_THREADS: u16 = 16;

fn default_sip_threads() -> u16 {
    1
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            advertise: None,
            rtp_ports: default_rtp_ports(),
            rtp_legs_per_port: default_rtp_legs_per_port(),
            rtp_sender: RtpSender::Auto,
            media_threads: 0,
            sip_threads: default_sip_threads(),
            outbound_proxy: None,
            trusted_proxies: Vec::new(),
            drain: false,
            state_dir: default_state_dir(),
            journal: true,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_self_signed: false,
            srtp_over_plain: false,
            session_timers: true,
            session_min_se: default_session_min_se(),
            session_expires: default_session_expires(),
        }
    }
}

impl ServerConfig {
    /// parkd's main address, written into Contact, Via and SDP for peers of its family (see [`Advertise::pair`]).
    pub fn advertised_ip(&self) -> IpAddr {
        Advertise::pair(self.advertise, self.listen).0
    }
    /// parkd's address for peers of the other IP family, when it serves both (`listen = "[::]:5060"`).
    pub fn advertised_other(&self) -> Option<IpAddr> {
        Advertise::pair(self.advertise, self.listen).1
    }
    pub fn advertised_sip(&self) -> SocketAddr {
        SocketAddr::new(self.advertised_ip(), self.listen.port())
    }
    /// Whether `ip` is inside one of `trusted_proxies`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// The whole configuration as read from TOML.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default, rename = "lot")]
    pub lots: Vec<LotConfig>,
    /// The HTTP API, event stream, metrics and attendant page.
    #[serde(default)]
    pub http: HttpConfig,
    /// Per-source bounds on what the network may make parkd hold (`[limits]`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Requests parkd refuses outright (`[access]`).
    #[serde(default)]
    pub access: AccessConfig,
    /// Several nodes sharing one orbit space over Redis (`[cluster]`, issue 18); off unless `redis` is set.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

impl Config {
    /// The configuration parkd runs with when given nothing: one lot `700` / `701-720`, 45 s.
    pub fn with_defaults() -> Config {
        Config { lots: vec![LotConfig::default_lot()], ..Config::default() }
    }

    pub fn from_toml(path: &std::path::Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Toml { path: path.to_path_buf(), source })?;
        Ok(cfg)
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(path, &text)
    }

    /// Checks what serde cannot: numbers are unique across lots, ranges sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lots.is_empty() {
            return Err(ConfigError::NoLots);
        }
        self.http.validate()?;
        self.cluster.validate(&self.lots)?;
        if let Some(a) = self.server.advertise {
            a.check_served(self.server.listen)?;
        }
        self.server.tls()?;
        let r = self.server.rtp_ports;
        if r.lo < 1024 || r.hi > 65534 || r.hi - r.lo < 1 {
            return Err(ConfigError::BadRtpPorts { lo: r.lo as u16, hi: r.hi as u16 });
        }
        let (min_se, expires) = (self.server.session_min_se, self.server.session_expires);
        if min_se < 90 || (expires != 0 && expires < min_se) {
            return Err(ConfigError::BadSessionTimer { min_se, expires });
        }
        let k = self.server.rtp_legs_per_port;
        if !(1..=crate::park::ports::MAX_LEGS_PER_PORT).contains(&k) {
            return Err(ConfigError::BadRtpLegsPerPort { value: k, max: crate::park::ports::MAX_LEGS_PER_PORT });
        }
        let n = self.server.sip_threads;
        if !(1..=MAX_SIP_THREADS).contains(&n) {
            return Err(ConfigError::BadSipThreads { value: n, why: "must be between 1 and 16" });
        }
        if n > 1 && self.cluster.redis.is_some() {
            return Err(ConfigError::BadSipThreads { value: n, why: "more than one SIP thread cannot be a [cluster] node yet" });
        }
        if n > 1 && (r.hi - r.lo + 1) / u32::from(n) < 2 {
            return Err(ConfigError::BadSipThreads { value: n, why: "rtp_ports is too small for one block of ports per SIP thread" });
        }
        if self.server.media_threads != 0 {
            // The media threads must fit the range: at most 64, at least one port pair each.
            crate::park::shard_plan::ShardPlan::new(r.lo as u16, r.hi as u16, k, self.server.media_threads)?;
        }
        if let Some(p) = &self.server.outbound_proxy {
            match crate::sip::parse_uri(p) {
                Ok(u) if crate::dialog::uri_addr(&u).is_some() => {}
                _ => return Err(ConfigError::BadAddress { what: "outbound_proxy (a sip: URI with an IP address)", value: p.clone() }),
            }
        }
        // Numbers are unique per domain scope: a lot's `domains`, or "" for the lots without (they share one).
        let mut seen: std::collections::HashMap<(String, String), String> = std::collections::HashMap::new();
        let mut names = std::collections::HashSet::new();
        for lot in &self.lots {
            if !names.insert(lot.name.clone()) {
                return Err(ConfigError::DuplicateLot(lot.name.clone()));
            }
            if lot.park_code.is_empty() || !lot.park_code.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'*' || c == b'#') {
                return Err(ConfigError::BadCode { lot: lot.name.clone(), code: lot.park_code.clone() });
            }
            if lot.orbits.len() > MAX_ORBITS_PER_LOT {
                return Err(ConfigError::BadOrbits { lot: lot.name.clone(), range: format!("{}-{}", lot.orbits.lo, lot.orbits.hi) });
            }
            if lot.recall_fallback == RecallFallback::FallbackUri && lot.fallback_uri.is_none() {
                return Err(ConfigError::MissingFallbackUri { lot: lot.name.clone() });
            }
            if let Some(u) = &lot.fallback_uri {
                if crate::sip::parse_uri(u).is_err() {
                    return Err(ConfigError::BadUri { what: "fallback_uri", value: u.clone() });
                }
            }
            if let Some(o) = &lot.overflow_lot {
                if o == &lot.name || !self.lots.iter().any(|l| &l.name == o) {
                    return Err(ConfigError::BadOverflow { lot: lot.name.clone(), overflow: o.clone() });
                }
            }
            for d in &lot.domains {
                let ok = !d.is_empty() && d.len() <= 253 && d.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_');
                if !ok {
                    return Err(ConfigError::BadDomain { lot: lot.name.clone(), domain: d.clone() });
                }
            }
            let scopes: Vec<String> = if lot.domains.is_empty() { vec![String::new()] } else { lot.domains.iter().map(|d| d.to_ascii_lowercase()).collect() };
            let numbers = std::iter::once(lot.park_code.clone())
                .chain(lot.retrieve_code.iter().cloned()).chain((0..lot.orbits.len()).map(|i| lot.orbits.name_of(i)));
            for n in numbers {
                for scope in &scopes {
                    if let Some(first) = seen.insert((scope.clone(), n.clone()), lot.name.clone()) {
                        if first == lot.name {
                            continue; // the same domain listed twice in one lot
                        }
                        let number = if scope.is_empty() { n } else { format!("{n}@{scope}") };
                        return Err(ConfigError::DuplicateNumber { number, first, second: lot.name.clone() });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_lots_with_asterisk_names() {
        let text = r#"
            [server]
            listen = "127.0.0.1:5070"
            rtp_ports = "20000-20100"

            [[lot]]
            name = "sales"
            parkext = "700"
            parkpos = "701-720"
            parkingtime = 60
            findslot = "next"

            [[lot]]
            name = "support"
            park_code = "800"
            orbits = "801-805"
            parking_time = 0
            slot_policy = "random"
            music = "/srv/music/support.wav"
        "#;
        let cfg = Config::from_toml(std::path::Path::new("x.toml"), text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.lots.len(), 2);
        assert_eq!(cfg.lots[0].slot_policy, SlotPolicy::Next);
        assert_eq!(cfg.lots[0].parking_time, 60);
        assert_eq!(cfg.lots[1].parking_duration(), None);
        assert_eq!(cfg.lots[1].music, MusicSource::Wav("/srv/music/support.wav".into()));
        assert_eq!(cfg.server.rtp_ports.lo, 20000);
    }

    #[test]
    fn rtp_sender_defaults_to_auto_and_parses_its_three_names() {
        assert_eq!(Config::with_defaults().server.rtp_sender, RtpSender::Auto);
        for (name, want) in [("auto", RtpSender::Auto), ("raw", RtpSender::Raw), ("io_uring", RtpSender::IoUring), ("syscalls", RtpSender::Syscalls)] {
            let text = format!("[server]\nrtp_sender = \"{name}\"\n[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n");
            assert_eq!(Config::from_toml(std::path::Path::new("x.toml"), &text).unwrap().server.rtp_sender, want);
        }
        let bad = "[server]\nrtp_sender = \"uring\"\n[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n";
        assert!(Config::from_toml(std::path::Path::new("x.toml"), bad).is_err());
    }

    #[test]
    fn sip_threads_default_to_one_and_more_need_no_cluster() {
        assert_eq!(Config::with_defaults().server.sip_threads, 1, "one SIP thread unless asked");
        let lot = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n";
        let parse = |server: &str| Config::from_toml(std::path::Path::new("x.toml"), &format!("[server]\n{server}{lot}")).and_then(|c| c.validate().map(|()| c));
        assert_eq!(parse("sip_threads = 2\njournal = false\n").unwrap().server.sip_threads, 2);
        assert_eq!(parse("sip_threads = 2\n").unwrap().server.sip_threads, 2, "with the journal: one per shard");
        assert!(matches!(parse("sip_threads = 0\njournal = false\n"), Err(ConfigError::BadSipThreads { value: 0, .. })));
        assert!(matches!(parse("sip_threads = 17\njournal = false\n"), Err(ConfigError::BadSipThreads { value: 17, .. })));
        let clustered = format!("[server]\nsip_threads = 2\njournal = false\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnode = \"a\"\n{lot}");
        assert!(matches!(Config::from_toml(std::path::Path::new("x.toml"), &clustered).unwrap().validate(), Err(ConfigError::BadSipThreads { value: 2, .. })));
    }

    #[test]
    fn rtp_legs_per_port_defaults_to_one_and_is_bounded() {
        let cfg = Config::with_defaults();
        assert_eq!(cfg.server.rtp_legs_per_port, 1, "one port per leg unless asked");
        let text = "[server]\nrtp_legs_per_port = 16\n[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n";
        let cfg = Config::from_toml(std::path::Path::new("x.toml"), text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.server.rtp_legs_per_port, 16);
        for bad in [0, 65] {
            let mut cfg = Config::with_defaults();
            cfg.server.rtp_legs_per_port = bad;
            assert!(matches!(cfg.validate(), Err(ConfigError::BadRtpLegsPerPort { value, max: 64 }) if value == bad));
        }
    }

    #[test]
    fn media_threads_must_fit_the_rtp_range() {
        use crate::park::shard_plan::ShardPlanError;
        let with = |threads: u16, ports: &str| {
            let mut cfg = Config::with_defaults();
            cfg.server.media_threads = threads;
            cfg.server.rtp_ports = NumRange::parse(ports).unwrap();
            cfg.validate()
        };
        assert!(with(0, "20000-20003").is_ok(), "0 = one per core, fitted to the range at startup");
        assert!(with(2, "20000-20003").is_ok());
        let e = with(3, "20000-20003").unwrap_err();
        assert!(matches!(e, ConfigError::MediaThreads(ShardPlanError::MoreThreadsThanPorts { threads: 3, pairs: 2, .. })), "{e}");
        assert!(e.to_string().contains("media_threads = 3 but rtp_ports 20000-20003 has only 2 RTP port pairs"), "{e}");
        assert!(matches!(with(65, "20000-29999"), Err(ConfigError::MediaThreads(ShardPlanError::TooManyThreads { threads: 65, max: 64 }))));
    }

    #[test]
    fn overlapping_numbers_are_refused() {
        let mut cfg = Config::with_defaults();
        let mut second = LotConfig::default_lot();
        second.name = "b".into();
        second.park_code = "710".into();
        second.orbits = NumRange::parse("790-799").unwrap();
        cfg.lots.push(second);
        assert!(matches!(cfg.validate(), Err(ConfigError::DuplicateNumber { .. })));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml(std::path::Path::new("x"), "[[lot]]\nname='a'\npark_code='1'\norbits='2-3'\nbogus=1\n");
        assert!(err.is_err());
    }

    #[test]
    fn ranges_keep_zero_padding() {
        let r = NumRange::parse("0701-0720").unwrap();
        assert_eq!(r.contains_number("0705"), Some(4));
        assert_eq!(r.contains_number("705"), None);
        assert_eq!(r.name_of(19), "0720");
        assert!(NumRange::parse("9-1").is_err());
    }
}
