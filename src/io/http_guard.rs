//! The HTTP API's guards, checked on every request before any handler runs (issue 15):
//!
//! 1. `Host` must be the listener's address, `localhost` or a name in `[http] hosts` → else 421 (DNS rebinding).
//! 2. A source over its failed-authentication budget → 429 with Retry-After (only for calls that need the token).
//! 3. `/v1/...` (and `/metrics`, `/healthz`, `/readyz` when `open_metrics = false`) need
//!    `Authorization: Bearer <token>` → else 401. A wrong token counts as a failed authentication.
//! 4. A mutation (POST/PUT/PATCH, or DELETE with a body) must be `Content-Type: application/json` → else 415 (a
//!    cross-site form or text/plain POST cannot set it without a CORS preflight, which parkd never grants).
//! 5. Bodies above `max_body_bytes` → 413.
//!
//! The checks on the request head are pure ([`Guard::check_head`], unit-tested with an explicit `now`); the body
//! limit and the refusal log line / counter live in the axum middleware [`guard`].

use super::http::{ApiError, ApiState, Refused};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window of `auth_failures_per_minute`.
const WINDOW: Duration = Duration::from_secs(60);
/// At most this many sources are tracked; beyond it the oldest window is forgotten (memory stays bounded).
const MAX_TRACKED: usize = 4096;

/// Why a request was refused before reaching a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No, a malformed or a wrong bearer token (401).
    Unauthorized(&'static str),
    /// `Host` names something that is not this server (421).
    ForbiddenHost(String),
    /// A mutation without `Content-Type: application/json` (415).
    UnsupportedMediaType(String),
    /// The body is larger than `max_body_bytes` (413).
    TooLarge(usize),
    /// Too many failed authentications from this source; retry after that long (429).
    RateLimited(Duration),
}

impl Refusal {
    /// The reason label in `parkd_http_refusals_total{reason}` and in the `refused http` log line.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthorized(_) => "unauthorized",
            Refusal::ForbiddenHost(_) => "forbidden_host",
            Refusal::UnsupportedMediaType(_) => "unsupported_media_type",
            Refusal::TooLarge(_) => "too_large",
            Refusal::RateLimited(_) => "rate_limited",
        }
    }

    /// The JSON error answered.
    pub fn into_api_error(self) -> ApiError {
        let reason = self.reason();
        let e = match self {
            Refusal::Unauthorized(cause) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", cause),
            Refusal::ForbiddenHost(host) => ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                format!("Host {host:?} is not this server's address, localhost or a name in [http] hosts"),
            ),
            Refusal::UnsupportedMediaType(ct) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("this call needs Content-Type: application/json (got {ct:?})"),
            ),
            Refusal::TooLarge(max) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("request body larger than {max} bytes")),
            Refusal::RateLimited(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("too many failed authentications from this address; retry in {secs} s"))
                    .retry_after(secs.max(1))
            }
        };
        e.refused(reason)
    }
}

/// What the guards check against; built once at startup.
#[derive(Debug)]
pub struct Guard {
    token: String,
    listener: SocketAddr,
    /// `[http] hosts`, lower case, without port.
    hosts: Vec<String>,
    open_metrics: bool,
    max_body: usize,
    failures: AuthFailures,
}

/// The settings of a [`Guard`] (from `[http]` plus the resolved token and the bound address).
#[derive(Clone, Debug)]
pub struct GuardConfig {
    pub token: String,
    pub listener: SocketAddr,
    pub hosts: Vec<String>,
    pub open_metrics: bool,
    pub max_body_bytes: usize,
    pub auth_failures_per_minute: u32,
}

impl Guard {
    pub fn new(cfg: GuardConfig) -> Guard {
        Guard {
            token: cfg.token,
            listener: cfg.listener,
            hosts: cfg.hosts.iter().map(|h| host_name(&h.to_ascii_lowercase()).to_string()).collect(),
            open_metrics: cfg.open_metrics,
            max_body: cfg.max_body_bytes,
            failures: AuthFailures::new(cfg.auth_failures_per_minute),
        }
    }

    /// The body limit in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Whether a request for `path` needs the bearer token.
    pub fn needs_token(&self, path: &str) -> bool {
        path == "/v1" || path.starts_with("/v1/") || (!self.open_metrics && matches!(path, "/metrics" | "/healthz" | "/readyz"))
    }

    /// Every check that the request head decides, in order: Host, rate limit, token, Content-Type, length.
    pub fn check_head(&self, method: &Method, path: &str, headers: &HeaderMap, source: IpAddr, now: Instant) -> Result<(), Refusal> {
        self.check_host(headers)?;
        if self.needs_token(path) {
            if let Some(wait) = self.failures.blocked(source, now) {
                return Err(Refusal::RateLimited(wait));
            }
            self.check_token(headers).inspect_err(|e| {
                if *e != Refusal::Unauthorized(MISSING) {
                    self.failures.record(source, now);
                }
            })?;
        }
        let has_body = content_length(headers).is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
        let mutation = matches!(*method, Method::POST | Method::PUT | Method::PATCH) || (*method == Method::DELETE && has_body);
        if mutation && !is_json(headers) {
            let ct = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_else(|| "none".into());
            return Err(Refusal::UnsupportedMediaType(ct));
        }
        if content_length(headers).is_some_and(|n| n > self.max_body as u64) {
            return Err(Refusal::TooLarge(self.max_body));
        }
        Ok(())
    }

    fn check_host(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(raw) = headers.get(header::HOST) else { return Err(Refusal::ForbiddenHost("(no Host header)".into())) };
        let host = String::from_utf8_lossy(raw.as_bytes()).to_ascii_lowercase();
        let name = host_name(&host);
        let ok = match name.parse::<IpAddr>() {
            Ok(ip) => self.listener.ip().is_unspecified() || ip == self.listener.ip(),
            Err(_) => name == "localhost" || self.hosts.iter().any(|h| h == name),
        };
        if ok {
            Ok(())
        } else {
            Err(Refusal::ForbiddenHost(host))
        }
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Err(Refusal::Unauthorized(MISSING)) };
        let given = value.to_str().ok().and_then(|v| v.split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim());
        match given {
            None => Err(Refusal::Unauthorized("the Authorization header must be Bearer <token>")),
            Some(t) if constant_time_eq(t.as_bytes(), self.token.as_bytes()) => Ok(()),
            Some(_) => Err(Refusal::Unauthorized("wrong bearer token")),
        }
    }
}

const MISSING: &str = "missing Authorization: Bearer <token> (the token is in <state_dir>/http-token, see docs/api.md)";

/// The host part of a `Host` value (`name`, `name:port`, `1.2.3.4:80`, `[::1]:80`), without a trailing dot.
fn host_name(host: &str) -> &str {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        },
    };
    name.trim_end_matches('.')
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Failed authentications per source in fixed one-minute windows (IPv6 sources by /64).
#[derive(Debug)]
struct AuthFailures {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    fn new(per_minute: u32) -> AuthFailures {
        AuthFailures { per_minute, windows: Mutex::new(HashMap::new()) }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        }
    }

    /// How long `ip` must wait when it used up its failures of the current window.
    fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.per_minute == 0 {
            return None;
        }
        let windows = self.windows.lock().ok()?;
        let (start, n) = windows.get(&Self::key(ip))?;
        let elapsed = now.saturating_duration_since(*start);
        (elapsed < WINDOW && *n >= self.per_minute).then(|| WINDOW - elapsed)
    }

    fn record(&self, ip: IpAddr, now: Instant) {
        if self.per_minute == 0 {
            return;
        }
        let Ok(mut windows) = self.windows.lock() else { return };
        let key = Self::key(ip);
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if windows.len() >= MAX_TRACKED {
                let oldest = windows.iter().min_by_key(|(_, (start, _))| *start).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    windows.remove(&k);
                }
            }
        }
        let w = windows.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(w.0) >= WINDOW {
            *w = (now, 0);
        }
        w.1 += 1;
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// The axum middleware: the head checks, the body limit (the body is read here, at most `max_body_bytes`), and
/// one log line plus a counter for every refusal — the guards' own and the handlers' (marked [`Refused`]).
pub async fn guard(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let head = s.guard.check_head(req.method(), req.uri().path(), req.headers(), source, Instant::now());
    let resp = match head {
        Err(refusal) => refusal.into_api_error().into_response(),
        Ok(()) => {
            let (parts, body) = req.into_parts();
            match axum::body::to_bytes(body, s.guard.max_body()).await {
                Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
                Err(_) => Refusal::TooLarge(s.guard.max_body()).into_api_error().into_response(),
            }
        }
    };
    if let Some(Refused(reason)) = resp.extensions().get::<Refused>() {
        // One line per refusal, stable for fail2ban: `refused http source=<ip> reason=<reason>`.
        tracing::warn!("refused http source={source} reason={reason}");
        s.metrics.http_refusal(reason);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const T: &str = "0123456789abcdef0123456789abcdef";

    fn guard_on(listener: &str) -> Guard {
        Guard::new(GuardConfig {
            token: T.into(),
            listener: listener.parse().unwrap(),
            hosts: vec!["parkd.example.com".into(), "Proxy.Example:8443".into()],
            open_metrics: true,
            max_body_bytes: 100,
            auth_failures_per_minute: 3,
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_must_be_the_listener_localhost_or_a_configured_name() {
        let g = guard_on("127.0.0.1:8080");
        for ok in ["127.0.0.1:8080", "127.0.0.1", "localhost:8080", "LOCALHOST", "localhost.:9000", "parkd.example.com", "proxy.example", "PARKD.example.com:443"] {
            assert_eq!(g.check_host(&headers(&[("host", ok)])), Ok(()), "{ok}");
        }
        for bad in ["rebind.attacker.example", "rebind.attacker.example:8080", "127.0.0.2:8080", "[::1]:8080", "localhost.attacker.example", "parkd.example.com.evil"] {
            assert!(matches!(g.check_host(&headers(&[("host", bad)])), Err(Refusal::ForbiddenHost(_))), "{bad}");
        }
        assert!(g.check_host(&HeaderMap::new()).is_err(), "no Host at all");
        let any = guard_on("0.0.0.0:8080");
        assert_eq!(any.check_host(&headers(&[("host", "192.0.2.10:8080")])), Ok(()), "any IP literal on an unspecified listener");
        assert!(any.check_host(&headers(&[("host", "evil.example")])).is_err());
        let v6 = guard_on("[::1]:8080");
        assert_eq!(v6.check_host(&headers(&[("host", "[::1]:8080")])), Ok(()));
    }

    #[test]
    fn v1_needs_the_bearer_token_reads_included_and_metrics_are_open_by_default() {
        let g = guard_on("127.0.0.1:8080");
        let now = Instant::now();
        let host = ("host", "127.0.0.1:8080");
        let src = ip("127.0.0.1");
        for path in ["/v1/lots", "/v1/events", "/v1/calls", "/v1/nope", "/v1"] {
            assert_eq!(g.check_head(&Method::GET, path, &headers(&[host]), src, now), Err(Refusal::Unauthorized(MISSING)), "{path}");
            assert_eq!(g.check_head(&Method::GET, path, &headers(&[host, ("authorization", &format!("Bearer {T}"))]), src, now), Ok(()));
        }
        assert_eq!(g.check_head(&Method::GET, "/v1/lots", &headers(&[host, ("authorization", &format!("bearer {T}"))]), src, now), Ok(()), "scheme without case");
        for open in ["/", "/metrics", "/healthz", "/readyz", "/v10", "/favicon.ico"] {
            assert_eq!(g.check_head(&Method::GET, open, &headers(&[host]), src, now), Ok(()), "{open}");
        }
        let wrong = g.check_head(&Method::GET, "/v1/lots", &headers(&[host, ("authorization", "Bearer nope")]), src, now);
        assert_eq!(wrong, Err(Refusal::Unauthorized("wrong bearer token")));
        let basic = g.check_head(&Method::GET, "/v1/lots", &headers(&[host, ("authorization", &format!("Basic {T}"))]), src, now);
        assert!(matches!(basic, Err(Refusal::Unauthorized(_))), "only Bearer");
        let closed = Guard::new(GuardConfig { open_metrics: false, ..cfg_of(&g) });
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert!(closed.check_head(&Method::GET, path, &headers(&[host]), src, now).is_err(), "{path} with open_metrics = false");
        }
        assert_eq!(closed.check_head(&Method::GET, "/", &headers(&[host]), src, now), Ok(()), "the page holds no data");
    }

    fn cfg_of(g: &Guard) -> GuardConfig {
        GuardConfig {
            token: g.token.clone(),
            listener: g.listener,
            hosts: g.hosts.clone(),
            open_metrics: g.open_metrics,
            max_body_bytes: g.max_body,
            auth_failures_per_minute: g.failures.per_minute,
        }
    }

    #[test]
    fn mutations_need_json_and_bodies_are_capped() {
        let g = guard_on("127.0.0.1:8080");
        let now = Instant::now();
        let auth = format!("Bearer {T}");
        let base = [("host", "127.0.0.1:8080"), ("authorization", auth.as_str())];
        let with = |extra: &[(&'static str, &str)]| headers(&[&base[..], extra].concat());
        let src = ip("127.0.0.1");
        let post = |h: HeaderMap| g.check_head(&Method::POST, "/v1/orbits/701/unpark", &h, src, now);
        assert!(matches!(post(with(&[("content-type", "text/plain"), ("content-length", "10")])), Err(Refusal::UnsupportedMediaType(ct)) if ct == "text/plain"));
        assert!(matches!(post(with(&[])), Err(Refusal::UnsupportedMediaType(_))), "a POST without body needs it too");
        assert!(matches!(post(with(&[("content-type", "application/x-www-form-urlencoded")])), Err(Refusal::UnsupportedMediaType(_))));
        assert_eq!(post(with(&[("content-type", "application/json; charset=utf-8"), ("content-length", "10")])), Ok(()));
        assert_eq!(post(with(&[("content-type", "Application/JSON")])), Ok(()));
        let delete = |h: HeaderMap| g.check_head(&Method::DELETE, "/v1/orbits/701", &h, src, now);
        assert_eq!(delete(with(&[])), Ok(()), "DELETE without body needs no Content-Type");
        assert_eq!(delete(with(&[("content-length", "0")])), Ok(()));
        assert!(matches!(delete(with(&[("content-length", "2"), ("content-type", "text/plain")])), Err(Refusal::UnsupportedMediaType(_))));
        assert_eq!(post(with(&[("content-type", "application/json"), ("content-length", "101")])), Err(Refusal::TooLarge(100)));
        assert_eq!(post(with(&[("content-type", "application/json"), ("content-length", "100")])), Ok(()));
    }

    #[test]
    fn failed_authentications_are_limited_per_source_for_a_minute() {
        let g = guard_on("127.0.0.1:8080");
        let t0 = Instant::now();
        let h = |auth: &str| headers(&[("host", "127.0.0.1:8080"), ("authorization", auth)]);
        let good = format!("Bearer {T}");
        let (a, b) = (ip("127.0.0.1"), ip("127.0.0.2"));
        for i in 0..3 {
            assert!(matches!(g.check_head(&Method::GET, "/v1/lots", &h("Bearer guess"), a, t0), Err(Refusal::Unauthorized(_))), "failure {i}");
        }
        let limited = g.check_head(&Method::GET, "/v1/lots", &h("Bearer guess"), a, t0 + Duration::from_secs(10));
        assert_eq!(limited, Err(Refusal::RateLimited(Duration::from_secs(50))));
        assert!(matches!(g.check_head(&Method::GET, "/v1/lots", &h(&good), a, t0 + Duration::from_secs(10)), Err(Refusal::RateLimited(_))), "even the right token waits");
        assert_eq!(g.check_head(&Method::GET, "/healthz", &h("Bearer guess"), a, t0), Ok(()), "open endpoints stay open");
        assert_eq!(g.check_head(&Method::GET, "/v1/lots", &h(&good), b, t0), Ok(()), "another source is not affected");
        assert_eq!(g.check_head(&Method::GET, "/v1/lots", &h(&good), a, t0 + WINDOW), Ok(()), "the next minute starts afresh");
        // A missing token is no guess: a page opened without its link does not lock its user out.
        let none = headers(&[("host", "127.0.0.1:8080")]);
        for _ in 0..10 {
            assert_eq!(g.check_head(&Method::GET, "/v1/lots", &none, b, t0), Err(Refusal::Unauthorized(MISSING)));
        }
        let e = Refusal::RateLimited(Duration::from_millis(49_100)).into_api_error().into_response();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("50"));
    }

    #[test]
    fn ipv6_sources_share_a_budget_per_64_and_the_table_stays_bounded() {
        let f = AuthFailures::new(2);
        let t0 = Instant::now();
        f.record(ip("2001:db8:1:2::1"), t0);
        f.record(ip("2001:db8:1:2::ffff"), t0);
        assert!(f.blocked(ip("2001:db8:1:2::42"), t0).is_some(), "same /64");
        assert!(f.blocked(ip("2001:db8:1:3::1"), t0).is_none());
        for i in 0..(MAX_TRACKED as u32 + 100) {
            f.record(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()), t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(f.tracked() <= MAX_TRACKED, "{} sources tracked", f.tracked());
        assert_eq!(AuthFailures::key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }
}
