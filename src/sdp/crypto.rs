//! SDES: SRTP keys in SDP (RFC 4568), and the lot's SRTP policy.
//!
//! An offer's audio stream is `RTP/SAVP` with one or more `a=crypto:<tag> <suite> inline:<key||salt>[|lifetime][|MKI:len]`
//! lines, in the offerer's preference order. parkd takes the first line whose suite it speaks
//! ([`SrtpSuite::ALL`]), with one key and no MKI nor session parameters, and answers `RTP/SAVP` with one
//! `a=crypto` with the same tag, the same suite and parkd's own fresh key (RFC 4568 §7.1.2). The key comes from
//! the RNG the caller passes (the core's key RNG: sans-IO, seeded from the OS at start).
//!
//! A best-effort offer (RFC 8643, "opportunistic SRTP": `RTP/AVP` with `a=crypto`, what a desk phone's "SRTP
//! optional" sends) is taken the same way when the keys may be taken, and answered `RTP/AVP` with parkd's
//! `a=crypto`; when they may not, it is plain RTP (the offerer accepts that).
//!
//! Whether SRTP is used at all is the lot's `srtp` policy ([`SrtpPolicy`]); SDES keys travel in the SIP body, so
//! they are only accepted from a request that came over TLS unless the admin sets `srtp_over_plain = true`
//! ([`SrtpRules`]). Every refusal is a `488 Not Acceptable Here` with the reason ([`negotiate`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use rand::RngCore;

use crate::media::srtp::{MasterKey, SrtpKeys, SrtpSuite};

/// A lot's use of SRTP (`[[lot]] srtp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    /// SRTP when offered (`RTP/SAVP`), plain RTP when not.
    #[default]
    Optional,
    /// Only SRTP: a plain `RTP/AVP` offer gets 488.
    Required,
    /// Only plain RTP: an `RTP/SAVP` offer gets 488.
    Off,
}

/// What decides whether an offer's SRTP is acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtpRules {
    pub policy: SrtpPolicy,
    /// The request came over TLS (SDES keys are then not readable on the wire).
    pub over_tls: bool,
    /// The admin allows SDES keys over plain UDP/TCP (`srtp_over_plain = true`).
    pub over_plain_allowed: bool,
}

/// One usable `a=crypto` line of an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttr {
    pub tag: u32,
    pub suite: SrtpSuite,
    pub key: MasterKey,
}

/// The security of an offer's audio stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferSecurity {
    /// The stream's transport is `RTP/SAVP` (or `RTP/SAVPF`).
    pub savp: bool,
    /// Its usable `a=crypto` lines, in the offerer's order (unknown suites, MKI, several keys or session
    /// parameters are left out).
    pub crypto: Vec<CryptoAttr>,
}

/// What was agreed for a leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Negotiated {
    Plain,
    /// SRTP; `savp`: the answer's profile is `RTP/SAVP` (false: a best-effort offer's `RTP/AVP`, RFC 8643).
    Srtp { tag: u32, keys: SrtpKeys, savp: bool },
}

/// Parses one `a=crypto` value (after `a=crypto:`); `None` when parkd cannot use it.
pub fn parse_crypto(value: &str) -> Option<CryptoAttr> {
    let mut parts = value.split_ascii_whitespace();
    let tag: u32 = parts.next()?.parse().ok().filter(|t| *t <= 999_999_999)?;
    let suite = SrtpSuite::from_name(parts.next()?)?;
    let key_params = parts.next()?;
    if parts.next().is_some() || key_params.contains(';') {
        return None; // session parameters, or several keys (RFC 4568 §6.1): not supported
    }
    let inline = key_params.strip_prefix("inline:")?;
    let mut fields = inline.split('|');
    let b64 = fields.next()?;
    for f in fields {
        if f.contains(':') {
            return None; // MKI: not supported
        }
        // A lifetime (`2^31` or a number) is accepted: parkd's calls never reach it.
    }
    let raw = STANDARD.decode(b64).ok()?;
    let key = MasterKey::new(suite, &raw)?;
    Some(CryptoAttr { tag, suite, key })
}

/// The security of the first audio stream with a non-zero port (the one [`super::parse_sdp`] reads).
pub fn offer_security(body: &[u8]) -> OfferSecurity {
    let mut sec = OfferSecurity::default();
    // Most offers are plain RTP: without `RTP/SAVP` (or `RTP/SAVPF`) and `a=crypto:` anywhere, the walk below
    // would find nothing, and it costs ~15 times this search (it runs two or three times per offer).
    static SAVP: std::sync::LazyLock<memchr::memmem::Finder<'static>> = std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"RTP/SAVP"));
    static CRYPTO: std::sync::LazyLock<memchr::memmem::Finder<'static>> = std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"a=crypto:"));
    if SAVP.find(body).is_none() && CRYPTO.find(body).is_none() {
        return sec;
    }
    let text = String::from_utf8_lossy(body);
    let mut in_stream = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if in_stream {
                break;
            }
            let f: Vec<&str> = m.split_ascii_whitespace().collect();
            in_stream = f.len() >= 3 && f[0] == "audio" && f[1].split('/').next() != Some("0");
            if in_stream {
                sec.savp = matches!(f[2], "RTP/SAVP" | "RTP/SAVPF");
            }
        } else if in_stream {
            if let Some(c) = line.strip_prefix("a=crypto:").and_then(parse_crypto) {
                sec.crypto.push(c);
            }
        }
    }
    sec
}

/// Decides an offer's media security under `rules`, drawing parkd's key from `rng`. `Err` is the reason
/// phrase of a 488.
pub fn negotiate(sec: &OfferSecurity, rules: SrtpRules, rng: &mut impl RngCore) -> Result<Negotiated, &'static str> {
    let Some(offer) = check(sec, rules)? else { return Ok(Negotiated::Plain) };
    let mut raw = vec![0u8; offer.suite.master_len()];
    rng.fill_bytes(&mut raw);
    let local = MasterKey::new(offer.suite, &raw).ok_or("Not Acceptable Here: no supported crypto suite")?;
    Ok(Negotiated::Srtp { tag: offer.tag, keys: SrtpKeys { suite: offer.suite, local, remote: offer.key.clone() }, savp: sec.savp })
}

/// [`negotiate`] without drawing a key: `Ok(None)` for plain RTP, `Ok(Some(line))` for the offer's line parkd
/// takes, `Err` the reason phrase of a 488.
pub fn check(sec: &OfferSecurity, rules: SrtpRules) -> Result<Option<&CryptoAttr>, &'static str> {
    let keys_allowed = rules.over_tls || rules.over_plain_allowed;
    if !sec.savp {
        // RFC 8643 best effort: SRTP when the keys may be taken, else plain RTP (never a refusal of its own).
        if let Some(first) = sec.crypto.first().filter(|_| keys_allowed && rules.policy != SrtpPolicy::Off) {
            return Ok(Some(first));
        }
        return match rules.policy {
            SrtpPolicy::Required if !sec.crypto.is_empty() && !keys_allowed => Err("Not Acceptable Here: SDES keys only over TLS"),
            SrtpPolicy::Required => Err("Not Acceptable Here: SRTP (RTP/SAVP) required"),
            _ => Ok(None),
        };
    }
    if rules.policy == SrtpPolicy::Off {
        return Err("Not Acceptable Here: SRTP disabled");
    }
    if !keys_allowed {
        return Err("Not Acceptable Here: SDES keys only over TLS");
    }
    sec.crypto.first().map(Some).ok_or("Not Acceptable Here: no supported crypto suite")
}

/// parkd's `a=crypto` line (with CRLF) for `tag` and its own key.
pub fn crypto_line(tag: u32, suite: SrtpSuite, local: &MasterKey) -> String {
    format!("a=crypto:{tag} {} inline:{}\r\n", suite.name(), STANDARD.encode(local.expose()))
}

/// Turns one of parkd's SDP bodies ([`super::build_answer`], [`super::build_offer`]) into its SRTP form: `line`
/// ([`crypto_line`]) after the m-line's rtpmaps, and the audio stream `RTP/SAVP` when `savp` (else it stays
/// `RTP/AVP`: the answer to a best-effort offer, RFC 8643).
pub fn secure_body(body: &[u8], line: &str, savp: bool) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + line.len() + 8);
    let mut placed = false;
    for l in text.split_inclusive("\r\n") {
        if !placed && (l.starts_with("a=ptime:") || l.starts_with("a=sendrecv") || l.starts_with("a=sendonly") || l.starts_with("a=recvonly") || l.starts_with("a=inactive")) {
            out.push_str(line);
            placed = true;
        }
        match l.strip_prefix("m=audio ") {
            Some(rest) if savp => {
                out.push_str("m=audio ");
                out.push_str(&rest.replacen(" RTP/AVP", " RTP/SAVP", 1));
            }
            Some(_) => out.push_str(l),
            None => out.push_str(l),
        }
    }
    if !placed {
        out.push_str(line);
    }
    Bytes::from(out)
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
