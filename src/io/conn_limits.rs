//! The bounds of SIP connections as plain data, applied by the tokio tasks of [`super::tcp`]: how many TCP
//! connections one source and everyone together may hold ([`ConnCounter`]), when a connection is closed for
//! silence ([`ConnTimer`]), and the counter and log line of every refusal ([`Refusal`], [`RefusalLog`]).
//!
//! Memory per connection is bounded: a 4 KiB read buffer, the framer's buffer (at most
//! `max_message_bytes` + one read), and an outbound queue of [`OUTBOUND_QUEUE`] messages. With the defaults
//! (1024 connections, 64 KiB messages) the worst case is about 70 MiB, reached only when every connection
//! holds an almost complete maximum-size message.

use crate::config::Config;
use crate::sip::FrameLimits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Messages queued for one connection before it counts as stalled and is closed.
pub const OUTBOUND_QUEUE: usize = 64;

/// How long one write may block (the peer not reading) before the connection is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After parkd decided to close (framing error, peer's EOF), how long the last answers may take to flush.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why parkd refused a connection or a message (the `reason` label of `parkd_sip_refusals_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A new connection from a source that already holds `tcp_connections_per_source`.
    TcpPerSource,
    /// A new connection while `tcp_connections` are open in all.
    TcpTotal,
    /// Nothing read or written for `tcp_idle_timeout`.
    TcpIdle,
    /// No complete message within `tcp_first_message_timeout` of the accept.
    TcpFirstMessageTimeout,
    /// The peer does not read what parkd writes (queue full or a write blocked for [`WRITE_TIMEOUT`]).
    TcpBacklog,
    /// A stream message without (or with a malformed) Content-Length.
    Framing,
    /// A message over `max_message_bytes`.
    MessageSize,
    /// A message with more than `max_headers` header fields.
    HeaderCount,
    /// A TLS handshake not done within [`super::tls::HANDSHAKE_TIMEOUT`] (or the first-message timeout).
    TlsHandshakeTimeout,
    /// A TLS handshake that failed: not TLS, no acceptable client certificate, no common cipher.
    TlsHandshake,
}

impl Refusal {
    /// The label written to logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TcpPerSource => "tcp_per_source",
            Refusal::TcpTotal => "tcp_total",
            Refusal::TcpIdle => "tcp_idle",
            Refusal::TcpFirstMessageTimeout => "tcp_first_message_timeout",
            Refusal::TcpBacklog => "tcp_backlog",
            Refusal::Framing => "framing",
            Refusal::MessageSize => "message_size",
            Refusal::HeaderCount => "header_count",
            Refusal::TlsHandshakeTimeout => "tls_handshake_timeout",
            Refusal::TlsHandshake => "tls_handshake",
        }
    }

    /// The refusal a framing error stands for.
    pub fn of_framing(e: &crate::sip::FramingError) -> Refusal {
        match e.refusal_reason() {
            "message_size" => Refusal::MessageSize,
            "header_count" => Refusal::HeaderCount,
            _ => Refusal::Framing,
        }
    }

    /// Counts the refusal (`parkd_sip_refusals_total{reason}`) and logs it in the line a fail2ban filter matches
    /// (`refused sip source=<ip> reason=<reason>`, within the [`RefusalLog`] budget).
    pub fn record(self, source: IpAddr, now: Instant, metrics: &super::metrics::Metrics, log: &std::sync::Mutex<RefusalLog>) {
        metrics.count_refusal(self.as_str());
        let line = log.lock().map(|mut l| l.line(source, self, now)).unwrap_or(LogLine::One);
        let source = source.to_canonical();
        match line {
            LogLine::One => tracing::warn!("refused sip source={source} reason={}", self.as_str()),
            LogLine::WithSummary { reason, suppressed } => {
                tracing::warn!("refused sip source={source} reason={} suppressed={suppressed}", reason.as_str());
                tracing::warn!("refused sip source={source} reason={}", self.as_str());
            }
            LogLine::Suppressed => {}
        }
    }
}

/// Log lines per source and second; the rest are summed up in the next line that is written.
pub const LOG_LINES_PER_SECOND: u32 = 3;

/// Sources whose log budget is tracked at once (older ones are forgotten first).
const LOG_SOURCES: usize = 4096;

/// What to log for one refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLine {
    /// The refusal's line.
    One,
    /// First a summary of the refusals suppressed since the last line (`suppressed=<n>`, with the last reason),
    /// then the refusal's line.
    WithSummary { reason: Refusal, suppressed: u32 },
    /// Nothing (counted for the next summary).
    Suppressed,
}

#[derive(Clone, Copy, Debug)]
struct LogBudget {
    second: Instant,
    lines: u32,
    suppressed: u32,
    last: Refusal,
}

/// Keeps a flood from one source from flooding the log: at most [`LOG_LINES_PER_SECOND`] refusal lines per
/// source and second (fail2ban counts lines, so a banning threshold is reached all the same); the refusals
/// in between are reported as `suppressed=<n>` on the source's next line. Every refusal is counted in the
/// metrics regardless.
#[derive(Debug, Default)]
pub struct RefusalLog {
    sources: HashMap<IpAddr, LogBudget>,
}

impl RefusalLog {
    /// What to log for a refusal of `why` from `ip` at `now`.
    pub fn line(&mut self, ip: IpAddr, why: Refusal, now: Instant) -> LogLine {
        if self.sources.len() >= LOG_SOURCES && !self.sources.contains_key(&ip) {
            // Forget sources whose second is over and that owe no summary; if none, log untracked.
            self.sources.retain(|_, b| now.duration_since(b.second) < Duration::from_secs(1) || b.suppressed > 0);
            if self.sources.len() >= LOG_SOURCES {
                return LogLine::One;
            }
        }
        let b = self.sources.entry(ip).or_insert(LogBudget { second: now, lines: 0, suppressed: 0, last: why });
        if now.duration_since(b.second) >= Duration::from_secs(1) {
            b.second = now;
            b.lines = 0;
        }
        if b.lines >= LOG_LINES_PER_SECOND {
            b.suppressed = b.suppressed.saturating_add(1);
            b.last = why;
            return LogLine::Suppressed;
        }
        b.lines += 1;
        let owed = std::mem::take(&mut b.suppressed);
        let reason = std::mem::replace(&mut b.last, why);
        match owed {
            0 => LogLine::One,
            suppressed => LogLine::WithSummary { reason, suppressed },
        }
    }
}

/// The limits of SIP transports, from `[limits]` and `[server] trusted_proxies`.
#[derive(Clone, Debug, PartialEq)]
pub struct SipLimits {
    /// Message size and header count, on every transport.
    pub frame: FrameLimits,
    /// Open TCP connections per ordinary source (0 = no limit).
    pub tcp_per_source: u32,
    /// Open TCP connections per `trusted_proxies` source (0 = no limit).
    pub tcp_per_trusted_source: u32,
    /// Open TCP connections in all (0 = no limit).
    pub tcp_total: u32,
    /// `None` = off.
    pub first_message_timeout: Option<Duration>,
    /// `None` = off.
    pub idle_timeout: Option<Duration>,
    pub trusted: Vec<ipnet::IpNet>,
}

impl Default for SipLimits {
    fn default() -> Self {
        SipLimits::from_config(&Config::default())
    }
}

fn seconds(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

impl SipLimits {
    pub fn from_config(cfg: &Config) -> SipLimits {
        let l = &cfg.limits;
        SipLimits {
            frame: FrameLimits { max_message: l.max_message_bytes, max_headers: l.max_headers },
            tcp_per_source: l.untrusted().tcp_connections_per_source,
            tcp_per_trusted_source: l.trusted().tcp_connections_per_source,
            tcp_total: l.tcp_connections,
            first_message_timeout: seconds(l.tcp_first_message_timeout),
            idle_timeout: seconds(l.tcp_idle_timeout),
            trusted: cfg.server.trusted_proxies.clone(),
        }
    }

    fn per_source_cap(&self, ip: IpAddr) -> u32 {
        match self.trusted.iter().any(|n| n.contains(&ip)) {
            true => self.tcp_per_trusted_source,
            false => self.tcp_per_source,
        }
    }
}

/// Open accepted connections per source and in all.
#[derive(Debug)]
pub struct ConnCounter {
    limits: SipLimits,
    per_source: HashMap<IpAddr, u32>,
    total: u32,
}

impl ConnCounter {
    pub fn new(limits: SipLimits) -> ConnCounter {
        ConnCounter { limits, per_source: HashMap::new(), total: 0 }
    }

    /// Takes a slot for a new connection from `ip`, or says why not (the connection is then closed at once).
    /// An IPv4 peer seen on an IPv6 listener (`::ffff:192.0.2.1`) counts as its IPv4 address.
    pub fn try_open(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        let cap = self.limits.per_source_cap(ip);
        let held = self.per_source.get(&ip).copied().unwrap_or(0);
        if cap > 0 && held >= cap {
            return Err(Refusal::TcpPerSource);
        }
        if self.limits.tcp_total > 0 && self.total >= self.limits.tcp_total {
            return Err(Refusal::TcpTotal);
        }
        self.per_source.insert(ip, held + 1);
        self.total += 1;
        Ok(())
    }

    /// Gives back the slot of a connection from `ip` that ended.
    pub fn close(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        match self.per_source.get_mut(&ip) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.per_source.remove(&ip);
            }
            None => return,
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Connections open from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.per_source.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Connections open in all.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Sources holding a connection (the map never outgrows the connections).
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }
}

/// When a connection is closed for silence: the first-message timeout until a whole message arrived (accepted
/// connections only: on a connection parkd opened, parkd speaks first), then the idle timeout, counted from the
/// last byte read or written.
#[derive(Clone, Debug)]
pub struct ConnTimer {
    opened: Instant,
    last_activity: Instant,
    awaiting_first: bool,
    first_message_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
}

impl ConnTimer {
    /// A timer for a connection accepted (`accepted`) or opened by parkd at `now`.
    pub fn new(now: Instant, accepted: bool, limits: &SipLimits) -> ConnTimer {
        ConnTimer {
            opened: now,
            last_activity: now,
            awaiting_first: accepted,
            first_message_timeout: limits.first_message_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Bytes were read or written at `now` (a keep-alive counts).
    pub fn activity(&mut self, now: Instant) {
        self.last_activity = self.last_activity.max(now);
    }

    /// A whole message arrived.
    pub fn message(&mut self, now: Instant) {
        self.awaiting_first = false;
        self.activity(now);
    }

    /// The next deadline and what passing it means; `None` when no timeout applies.
    pub fn deadline(&self) -> Option<(Instant, Refusal)> {
        let idle = self.idle_timeout.map(|d| (self.last_activity + d, Refusal::TcpIdle));
        let first = self.first_message_timeout.filter(|_| self.awaiting_first).map(|d| (self.opened + d, Refusal::TcpFirstMessageTimeout));
        match (first, idle) {
            (Some(f), Some(i)) => Some(if f.0 <= i.0 { f } else { i }),
            (f, i) => f.or(i),
        }
    }

    /// Whether the connection must be closed at `now`, and why.
    pub fn expired(&self, now: Instant) -> Option<Refusal> {
        self.deadline().filter(|(at, _)| *at <= now).map(|(_, why)| why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SipLimits {
        SipLimits {
            tcp_per_source: 2,
            tcp_per_trusted_source: 3,
            tcp_total: 4,
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
            first_message_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(300)),
            ..SipLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_cap_then_total_cap_and_slots_come_back() {
        let mut c = ConnCounter::new(limits());
        let a = ip("192.0.2.1");
        assert_eq!(c.try_open(a), Ok(()));
        assert_eq!(c.try_open(a), Ok(()));
        assert_eq!(c.try_open(a), Err(Refusal::TcpPerSource));
        assert_eq!(c.open_from(a), 2, "a refusal takes no slot");
        let pbx = ip("10.1.1.1");
        assert_eq!(c.try_open(pbx), Ok(()));
        assert_eq!(c.try_open(pbx), Ok(()));
        assert_eq!(c.try_open(pbx), Err(Refusal::TcpTotal), "trusted cap is 3 but only 4 in all");
        assert_eq!(c.try_open(ip("192.0.2.9")), Err(Refusal::TcpTotal));
        c.close(a);
        assert_eq!(c.try_open(pbx), Ok(()), "a closed slot is free again");
        assert_eq!(c.try_open(ip("192.0.2.9")), Err(Refusal::TcpTotal));
        c.close(a);
        assert_eq!(c.try_open(pbx), Err(Refusal::TcpPerSource), "trusted source at its own cap of 3");
        assert_eq!((c.total(), c.open_from(a), c.sources()), (3, 0, 1), "an empty source is forgotten");
        c.close(a);
        assert_eq!(c.total(), 3, "closing a source with nothing open changes nothing");
    }

    #[test]
    fn ipv4_mapped_peers_count_and_are_trusted_as_ipv4() {
        let mut c = ConnCounter::new(limits());
        let mapped = ip("::ffff:10.1.1.1");
        for _ in 0..3 {
            assert_eq!(c.try_open(mapped), Ok(()), "10.0.0.0/8 is trusted (cap 3)");
        }
        assert_eq!(c.open_from(ip("10.1.1.1")), 3);
        c.close(ip("10.1.1.1"));
        assert_eq!(c.open_from(mapped), 2);
    }

    #[test]
    fn zero_means_no_limit() {
        let mut c = ConnCounter::new(SipLimits { tcp_per_source: 0, tcp_total: 0, ..limits() });
        for _ in 0..1000 {
            assert_eq!(c.try_open(ip("192.0.2.1")), Ok(()));
        }
        assert_eq!(c.total(), 1000);
    }

    #[test]
    fn defaults_come_from_the_config() {
        let l = SipLimits::default();
        assert_eq!((l.tcp_per_source, l.tcp_per_trusted_source, l.tcp_total), (32, 1024, 1024));
        assert_eq!(l.first_message_timeout, Some(Duration::from_secs(10)));
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(l.frame, FrameLimits::default());
    }

    #[test]
    fn first_message_timeout_then_idle_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = ConnTimer::new(t0, true, &limits());
        assert_eq!(t.deadline(), Some((t0 + s(10), Refusal::TcpFirstMessageTimeout)));
        t.activity(t0 + s(5)); // a ping or a partial message does not count as the first message
        assert_eq!(t.expired(t0 + s(9)), None);
        assert_eq!(t.expired(t0 + s(10)), Some(Refusal::TcpFirstMessageTimeout));
        t.message(t0 + s(8));
        assert_eq!(t.deadline(), Some((t0 + s(308), Refusal::TcpIdle)));
        t.activity(t0 + s(100));
        t.activity(t0 + s(50)); // out of order: time does not go back
        assert_eq!(t.expired(t0 + s(399)), None);
        assert_eq!(t.expired(t0 + s(400)), Some(Refusal::TcpIdle));
    }

    #[test]
    fn parkd_opened_connections_have_no_first_message_timeout_and_zero_turns_timeouts_off() {
        let t0 = Instant::now();
        let t = ConnTimer::new(t0, false, &limits());
        assert_eq!(t.deadline(), Some((t0 + Duration::from_secs(300), Refusal::TcpIdle)));
        let off = SipLimits { first_message_timeout: None, idle_timeout: None, ..limits() };
        assert_eq!(ConnTimer::new(t0, true, &off).deadline(), None);
        // The shorter one wins when the idle timeout is below the first-message timeout.
        let short = SipLimits { idle_timeout: Some(Duration::from_secs(2)), ..limits() };
        assert_eq!(ConnTimer::new(t0, true, &short).deadline(), Some((t0 + Duration::from_secs(2), Refusal::TcpIdle)));
    }

    #[test]
    fn log_lines_are_bounded_per_source_and_second_with_a_summary() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let lines: Vec<LogLine> = (0..10).map(|_| log.line(a, Refusal::TcpPerSource, t0)).collect();
        assert_eq!(lines[..3], [LogLine::One; 3]);
        assert!(lines[3..].iter().all(|l| *l == LogLine::Suppressed));
        assert_eq!(log.line(ip("192.0.2.2"), Refusal::TcpIdle, t0), LogLine::One, "another source has its own budget");
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(log.line(a, Refusal::Framing, later), LogLine::WithSummary { reason: Refusal::TcpPerSource, suppressed: 7 });
        assert_eq!(log.line(a, Refusal::Framing, later), LogLine::One);
    }

    #[test]
    fn the_log_budget_table_is_bounded() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        for i in 0..(LOG_SOURCES as u32 + 100) {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(log.line(source, Refusal::TcpIdle, t0), LogLine::One);
        }
        assert!(log.sources.len() <= LOG_SOURCES);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(log.line(ip("192.0.2.99"), Refusal::TcpIdle, later), LogLine::One);
        assert!(log.sources.len() <= LOG_SOURCES, "old seconds are forgotten to make room");
    }

    #[test]
    fn labels_are_stable() {
        let all = [
            Refusal::TcpPerSource,
            Refusal::TcpTotal,
            Refusal::TcpIdle,
            Refusal::TcpFirstMessageTimeout,
            Refusal::TcpBacklog,
            Refusal::Framing,
            Refusal::MessageSize,
            Refusal::HeaderCount,
            Refusal::TlsHandshakeTimeout,
            Refusal::TlsHandshake,
        ];
        let labels: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "tcp_per_source",
                "tcp_total",
                "tcp_idle",
                "tcp_first_message_timeout",
                "tcp_backlog",
                "framing",
                "message_size",
                "header_count",
                "tls_handshake_timeout",
                "tls_handshake"
            ]
        );
        assert_eq!(Refusal::of_framing(&crate::sip::FramingError::MissingContentLength), Refusal::Framing);
        assert_eq!(Refusal::of_framing(&crate::sip::FramingError::Oversize { limit: 1 }), Refusal::MessageSize);
    }
}
