//! Optional per-lot Digest authentication (RFC 3261 §22, RFC 2617 MD5, RFC 8760 SHA-256, `qop=auth`) of park,
//! retrieve and subscribe requests.
//!
//! * A request without valid credentials gets `401` with two `WWW-Authenticate` challenges, SHA-256 first
//!   (RFC 8760 §2.4: the most preferred first) and MD5 second, both `qop="auth"`.
//! * Nonces are stateless: `<issued secs hex>.<random hex>.<tag>`, where the tag is the first 64 bits of
//!   SHA-256(key ‖ issued ‖ "." ‖ random) and the key is drawn from the core's RNG at start. parkd therefore
//!   recognises its own nonces without storing them, and refuses them after [`NONCE_LIFETIME`] with
//!   `stale=true` (the phone retries with the new nonce without asking the user). This is a keyed hash, not an
//!   HMAC (fine for a fixed-format message), and there is no nonce-count tracking: a captured request can be
//!   replayed within the nonce's lifetime, to the same Request-URI user. Use TLS or source lists
//!   ([`super::acl`]) where that matters.
//!
//! The admission room keeps the key and checks credentials ([`super::Admission::digest`]); which lot and action
//! ask for it, and the `401` that carries a [`Challenge`], are `Core`'s (`gate.rs`).
//! * The `uri` of the credentials must name the same user (number) as the Request-URI.
//! * Without `qop` (RFC 2069 clients) the response is checked as `H(HA1:nonce:HA2)`.

use crate::config::AuthConfig;
use crate::sip::Request;
use crate::time::Time;
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::time::Duration;

/// How long a nonce parkd issued stays valid.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// A Digest hash algorithm parkd offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The `algorithm=` token (case-insensitive on input; absent means MD5, RFC 2617 §3.2.1).
    pub fn parse(s: Option<&str>) -> Option<Algorithm> {
        match s {
            None => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
    /// Lower-case hex of the hash of `data`.
    pub fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => to_hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => to_hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The parameters of a `Digest` credentials header value (RFC 2617 §3.2.2), names lower-cased.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials(pub Vec<(String, String)>);

impl Credentials {
    /// Parses `Digest name=value, name="quoted", ...`; `None` for another scheme or broken syntax.
    pub fn parse(header: &str) -> Option<Credentials> {
        let h = header.trim_start();
        let (scheme, mut rest) = h.split_at(h.find(|c: char| c.is_whitespace()).unwrap_or(h.len()));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
            if rest.is_empty() {
                break;
            }
            let eq = rest.find('=')?;
            let name = rest[..eq].trim().to_ascii_lowercase();
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') {
                return None;
            }
            rest = rest[eq + 1..].trim_start();
            let value = if let Some(q) = rest.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => v.push(chars.next()?.1),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => v.push(c),
                    }
                }
                rest = &q[end?..];
                v
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                let v = rest[..end].trim().to_string();
                rest = &rest[end..];
                v
            };
            params.push((name, value));
        }
        Some(Credentials(params))
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Makes and checks parkd's stateless nonces.
#[derive(Clone, Debug)]
pub struct NonceKey(pub [u8; 16]);

/// Why a nonce was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceError {
    /// Not one of parkd's nonces.
    Forged,
    /// parkd's, but older than [`NONCE_LIFETIME`]: challenge again with `stale=true`.
    Stale,
}

impl NonceKey {
    fn tag(&self, issued: &str, random: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(issued.as_bytes());
        h.update(b".");
        h.update(random.as_bytes());
        to_hex(&h.finalize()[..8])
    }
    /// A fresh nonce issued at `now` with randomness `random`.
    pub fn make(&self, now: Time, random: u64) -> String {
        let (issued, random) = (format!("{:x}", now.as_secs()), format!("{random:016x}"));
        let tag = self.tag(&issued, &random);
        format!("{issued}.{random}.{tag}")
    }
    /// Checks a nonce parkd issued: its tag, then its age.
    pub fn check(&self, nonce: &str, now: Time) -> Result<(), NonceError> {
        let mut parts = nonce.split('.');
        let (Some(issued), Some(random), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(NonceError::Forged);
        };
        if !constant_time_eq(tag.as_bytes(), self.tag(issued, random).as_bytes()) {
            return Err(NonceError::Forged);
        }
        let issued = u64::from_str_radix(issued, 16).map_err(|_| NonceError::Forged)?;
        if now.as_secs() >= issued.saturating_add(NONCE_LIFETIME.as_secs()) || issued > now.as_secs() + 1 {
            return Err(NonceError::Stale);
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The response a client with `password` must compute for `creds` (RFC 2617 §3.2.2.1, RFC 8760 §3).
pub fn expected_response(alg: Algorithm, creds: &Credentials, method: &str, password: &str) -> Option<String> {
    let (user, realm, nonce, uri) = (creds.get("username")?, creds.get("realm")?, creds.get("nonce")?, creds.get("uri")?);
    let ha1 = alg.hex(&format!("{user}:{realm}:{password}"));
    let ha2 = alg.hex(&format!("{method}:{uri}"));
    Some(match creds.get("qop") {
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let (nc, cnonce) = (creds.get("nc")?, creds.get("cnonce")?);
            alg.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
        }
        Some(_) => return None,
        None => alg.hex(&format!("{ha1}:{nonce}:{ha2}")),
    })
}

/// What an unknown user name is checked against: the work and the answer are those of a wrong password.
const NO_SUCH_USER_PASSWORD: &str = "\u{0}parkd: no such user\u{0}";

/// Whether `creds` prove knowledge of a configured user's password for `req`. An unknown user name goes
/// through the same steps (nonce check, response computed and compared) as a known one with a wrong
/// password and fails the same way, so neither the answer nor the time taken tells them apart.
fn verify(cfg: &AuthConfig, key: &NonceKey, now: Time, req: &Request, creds: &Credentials) -> Result<(), Option<NonceError>> {
    let alg = Algorithm::parse(creds.get("algorithm")).ok_or(None)?;
    if creds.get("realm") != Some(cfg.realm.as_str()) {
        return Err(None);
    }
    // The nonce before the user: `stale=true` is then answered the same for every user name.
    key.check(creds.get("nonce").ok_or(None)?, now).map_err(Some)?;
    let user = creds.get("username").and_then(|u| cfg.users.get(u));
    let uri_user = creds.get("uri").and_then(|u| crate::sip::parse_uri(u).ok()).and_then(|u| u.user);
    let want = expected_response(alg, creds, req.method.as_str(), user.map_or(NO_SUCH_USER_PASSWORD, String::as_str)).ok_or(None)?;
    let got = creds.get("response").ok_or(None)?.to_ascii_lowercase();
    let matches = constant_time_eq(want.as_bytes(), got.as_bytes());
    if matches & user.is_some() & (uri_user == req.uri.user) {
        Ok(())
    } else {
        Err(None)
    }
}

/// Why credentials were not accepted, and what the `401` must say: `WWW-Authenticate` challenges in `realm`
/// with a fresh `nonce`, `stale=true` when the credentials were right but their nonce too old.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub stale: bool,
}

impl Challenge {
    /// The `WWW-Authenticate` values, SHA-256 first (RFC 8760 §2.4: the most preferred first), then MD5.
    pub fn headers(&self) -> impl Iterator<Item = String> + '_ {
        let stale = if self.stale { ", stale=true" } else { "" };
        let realm = self.realm.replace(['"', '\\'], "");
        [Algorithm::Sha256, Algorithm::Md5]
            .into_iter()
            .map(move |alg| format!("Digest realm=\"{realm}\", nonce=\"{}\", qop=\"auth\", algorithm={}{stale}", self.nonce, alg.as_str()))
    }
}

/// Checks the `Authorization` headers of `req` against `cfg` at `now`: `Ok` when one verifies; otherwise the
/// challenge to answer with (a fresh nonce, its randomness drawn from `rng` only then), and whether credentials
/// were presented that did not verify (not merely stale: a wrong password or an unknown user, not told apart).
pub(super) fn check(key: &NonceKey, now: Time, req: &Request, cfg: &AuthConfig, rng: &mut impl rand::Rng) -> Result<(), (Challenge, bool)> {
    let (mut stale, mut presented) = (false, false);
    for header in req.common.headers_named("Authorization") {
        presented = true;
        let Some(creds) = Credentials::parse(header) else { continue };
        match verify(cfg, key, now, req, &creds) {
            Ok(()) => {
                tracing::info!(user = creds.get("username").unwrap_or(""), number = req.uri.user.as_deref().unwrap_or(""), "digest authenticated");
                return Ok(());
            }
            Err(Some(NonceError::Stale)) => stale = true,
            Err(_) => {}
        }
    }
    let challenge = Challenge { realm: cfg.realm.clone(), nonce: key.make(now, rng.gen()), stale };
    Err((challenge, presented && !stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_3_5_example_response() {
        // RFC 2617 §3.5 (HTTP, MD5, qop=auth): the published response value.
        let creds = Credentials::parse(
            r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let r = expected_response(Algorithm::Md5, &creds, "GET", "Circle Of Life").unwrap();
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_3_9_1_sha256_example_response() {
        // RFC 7616 §3.9.1 (the SHA-256 example RFC 8760 relies on).
        let creds = Credentials::parse(
            r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth"#,
        )
        .unwrap();
        let r = expected_response(Algorithm::Sha256, &creds, "GET", "Circle of Life").unwrap();
        assert_eq!(r, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    }

    #[test]
    fn credentials_parser_handles_escapes_and_rejects_garbage() {
        let c = Credentials::parse(r#"digest  username="a\"b", realm=x ,nonce="n,1""#).unwrap();
        assert_eq!((c.get("username"), c.get("realm"), c.get("nonce")), (Some("a\"b"), Some("x"), Some("n,1")));
        assert!(Credentials::parse("Basic abc").is_none());
        assert!(Credentials::parse(r#"Digest username="unterminated"#).is_none());
        assert!(Credentials::parse("Digest novalue").is_none());
    }

    #[test]
    fn nonces_are_recognised_expire_and_cannot_be_forged() {
        let key = NonceKey([7; 16]);
        let t = Time::from_secs(1_000_000);
        let n = key.make(t, 42);
        assert_eq!(key.check(&n, t + Duration::from_secs(299)), Ok(()));
        assert_eq!(key.check(&n, t + NONCE_LIFETIME), Err(NonceError::Stale));
        let forged = n.replacen(&format!("{:x}", t.as_secs()), &format!("{:x}", t.as_secs() + 500), 1);
        assert_eq!(key.check(&forged, t + Duration::from_secs(400)), Err(NonceError::Forged));
        assert_eq!(NonceKey([8; 16]).check(&n, t), Err(NonceError::Forged));
        assert_eq!(key.check("junk", t), Err(NonceError::Forged));
    }
}
