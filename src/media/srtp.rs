//! SRTP (RFC 3711) for legs that negotiated SDES keys (RFC 4568, see [`crate::sdp::crypto`]).
//!
//! The transform is webrtc-rs's pure-Rust, sans-IO `rtc-srtp` over ring (AES-CM with HMAC-SHA1-80/32,
//! AEAD-AES-128-GCM of RFC 7714): parkd hand-writes no crypto. Each SRTP leg has two one-way contexts
//! ([`SrtpLeg`]): one protecting what parkd sends with parkd's own master key (the key in parkd's `a=crypto`),
//! one authenticating and decrypting what the peer sends with the peer's key. The rollover counter (ROC) and
//! the replay window live in those contexts, per leg, so hold music and relayed audio on one leg are one SRTP
//! stream (one SSRC, one sequence space: [`super::rtp::OutStream`]).
//!
//! Keys are secrets: [`MasterKey`]'s and [`SrtpKeys`]'s `Debug` print the suite only, never the bytes.
//! SRTCP is not produced (parkd sends no RTCP) and incoming SRTCP is ignored like RTCP (it never reaches
//! the RTP port, which is the only one parkd reads).

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use rtc_srtp::context::Context;
use rtc_srtp::crypto::RTCCryptoProvider;
use rtc_srtp::option::srtp_replay_protection;
use rtc_srtp::protection_profile::ProtectionProfile;

/// The SDES crypto suites parkd speaks (RFC 4568 §6.2, RFC 7714 §14.2), in parkd's preference order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// Every suite parkd accepts in an offer.
    pub const ALL: [SrtpSuite; 3] = [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AesCm128HmacSha1_32, SrtpSuite::AeadAes128Gcm];

    /// The name in `a=crypto`.
    pub const fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite named `name` (case-sensitive, as RFC 4568 registers them).
    pub fn from_name(name: &str) -> Option<SrtpSuite> {
        SrtpSuite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Master key length in bytes.
    pub const fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes (112 bits for AES-CM, 96 for GCM: RFC 7714 §12).
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Length of the `inline:` key material: key || salt.
    pub const fn master_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    /// Bytes SRTP adds to an RTP packet: the authentication tag (GCM's tag is part of the cipher text).
    pub const fn overhead(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm => 16,
        }
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        }
    }
}

/// An SRTP master key and salt (key || salt, 28 or 30 bytes). A secret: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MasterKey(Vec<u8>);

impl MasterKey {
    /// Key material for `suite`, `None` when its length is not the suite's key + salt length.
    pub fn new(suite: SrtpSuite, bytes: &[u8]) -> Option<MasterKey> {
        (bytes.len() == suite.master_len()).then(|| MasterKey(bytes.to_vec()))
    }
    /// The raw key || salt (to write into parkd's own `a=crypto`, or to key a context).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for MasterKey {
    /// Overwrites the key material before the memory is freed (volatile writes the optimiser keeps).
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into the vector.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(<{} bytes redacted>)", self.0.len())
    }
}

/// The keys of one SRTP leg: `local` protects what parkd sends (parkd's `a=crypto`), `remote` opens what the
/// peer sends (the peer's `a=crypto`).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SrtpKeys {
    pub suite: SrtpSuite,
    pub local: MasterKey,
    pub remote: MasterKey,
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys").field("suite", &self.suite).field("keys", &"<redacted>").finish()
    }
}

/// Why an SRTP context could not be made, or a packet not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("the crypto provider is unavailable")]
    NoProvider,
    #[error("bad SRTP key for {0:?}")]
    BadKey(SrtpSuite),
    #[error("SRTP authentication failed (or replayed / too short packet)")]
    Auth,
    #[error("the buffer has no room for the SRTP tag")]
    NoRoom,
}

fn provider() -> Result<&'static Arc<dyn RTCCryptoProvider>, SrtpError> {
    static P: OnceLock<Option<Arc<dyn RTCCryptoProvider>>> = OnceLock::new();
    P.get_or_init(|| rtc_srtp::crypto::default_provider().ok()).as_ref().ok_or(SrtpError::NoProvider)
}

fn context(suite: SrtpSuite, key: &MasterKey, inbound: bool) -> Result<Context, SrtpError> {
    let m = key.expose();
    let (k, salt) = m.split_at(suite.key_len().min(m.len()));
    let replay = inbound.then(|| srtp_replay_protection(128));
    Context::new(k, salt, suite.profile(), replay, None, provider()?.crypto()).map_err(|_| SrtpError::BadKey(suite))
}

/// One leg's SRTP state: the outbound and inbound contexts (each with its ROC; inbound with a replay window).
pub struct SrtpLeg {
    suite: SrtpSuite,
    tx: Context,
    rx: Context,
}

impl fmt::Debug for SrtpLeg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpLeg").field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl SrtpLeg {
    /// Contexts for `keys`.
    pub fn new(keys: &SrtpKeys) -> Result<SrtpLeg, SrtpError> {
        Ok(SrtpLeg { suite: keys.suite, tx: context(keys.suite, &keys.local, false)?, rx: context(keys.suite, &keys.remote, true)? })
    }

    /// The negotiated suite.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// Protects the RTP packet `buf[..len]` in place: `buf` must have room for the tag
    /// ([`SrtpSuite::overhead`]). Returns the SRTP length.
    pub fn protect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let plain = buf.get(..len).ok_or(SrtpError::NoRoom)?;
        let out = self.tx.encrypt_rtp(plain).map_err(|_| SrtpError::Auth)?;
        let dst = buf.get_mut(..out.len()).ok_or(SrtpError::NoRoom)?;
        dst.copy_from_slice(&out);
        Ok(out.len())
    }

    /// Protects the RTP packet `header || payload` (a hold frame: the shared payload is only read) into
    /// the SRTP packet's bytes.
    pub fn protect_frame(&mut self, header: &[u8], payload: &[u8], scratch: &mut Vec<u8>) -> Result<Bytes, SrtpError> {
        scratch.clear();
        scratch.extend_from_slice(header);
        scratch.extend_from_slice(payload);
        let out = self.tx.encrypt_rtp(scratch).map_err(|_| SrtpError::Auth)?;
        Ok(out.freeze())
    }

    /// Authenticates and decrypts the SRTP packet `buf[..len]` in place. Returns the RTP length. A forged,
    /// replayed or garbled packet is an error (and leaves the contexts unchanged).
    pub fn unprotect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let sealed = buf.get(..len).ok_or(SrtpError::Auth)?;
        let out = self.rx.decrypt_rtp(sealed).map_err(|_| SrtpError::Auth)?;
        let dst = buf.get_mut(..out.len()).ok_or(SrtpError::Auth)?;
        dst.copy_from_slice(&out);
        Ok(out.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{parse, write_header, Pt, SeqNo, Ssrc};
    use crate::media::Codec;

    fn keys(suite: SrtpSuite, a: u8, b: u8) -> SrtpKeys {
        let m = |x: u8| MasterKey::new(suite, &vec![x; suite.master_len()]).unwrap();
        SrtpKeys { suite, local: m(a), remote: m(b) }
    }

    fn packet(seq: u16) -> Vec<u8> {
        let mut p = write_header(Pt::from(Codec::Pcmu), false, SeqNo(seq), 160 * seq as u32, Ssrc(0xABCD)).to_vec();
        p.extend((0..160u8).map(|i| i.wrapping_mul(3)));
        p
    }

    #[test]
    fn round_trip_per_suite_and_leg_with_seq_wrap() {
        for suite in SrtpSuite::ALL {
            // parkd's leg and the phone's view of it: the phone's local key is parkd's remote one.
            let mut parkd = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
            let mut phone = SrtpLeg::new(&keys(suite, 2, 1)).unwrap();
            for seq in [65_534u16, 65_535, 0, 1] {
                let plain = packet(seq);
                let mut buf = plain.clone();
                buf.resize(plain.len() + 64, 0);
                let n = parkd.protect(&mut buf, plain.len()).unwrap();
                assert_eq!(n, plain.len() + suite.overhead(), "{suite:?}");
                assert_eq!(&buf[..12], &plain[..12], "the header stays clear");
                assert_ne!(&buf[12..172], &plain[12..], "the payload is encrypted");
                let m = phone.unprotect(&mut buf, n).unwrap();
                assert_eq!(&buf[..m], &plain[..], "{suite:?} seq {seq} (ROC carries over the wrap)");
                // The other direction with the other key.
                let mut back = plain.clone();
                back.resize(plain.len() + 64, 0);
                let n = phone.protect(&mut back, plain.len()).unwrap();
                assert_eq!(parkd.unprotect(&mut back, n).unwrap(), plain.len());
                assert_eq!(parse(&back[..plain.len()]).unwrap().seq, SeqNo(seq));
            }
        }
    }

    #[test]
    fn forged_replayed_and_wrong_key_packets_are_refused() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let mut parkd = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
        let mut phone = SrtpLeg::new(&keys(suite, 2, 1)).unwrap();
        let plain = packet(7);
        let mut buf = plain.clone();
        buf.resize(200, 0);
        let n = phone.protect(&mut buf, plain.len()).unwrap();
        let sealed = buf[..n].to_vec();
        let mut forged = sealed.clone();
        forged[20] ^= 1;
        assert_eq!(parkd.unprotect(&mut forged, n), Err(SrtpError::Auth), "a flipped bit fails authentication");
        let mut ok = sealed.clone();
        assert!(parkd.unprotect(&mut ok, n).is_ok());
        let mut again = sealed.clone();
        assert_eq!(parkd.unprotect(&mut again, n), Err(SrtpError::Auth), "a replay is refused");
        let mut stranger = SrtpLeg::new(&keys(suite, 9, 9)).unwrap();
        let mut other = sealed.clone();
        assert_eq!(stranger.unprotect(&mut other, n), Err(SrtpError::Auth));
        let mut tight = plain.clone();
        assert_eq!(parkd.protect(&mut tight, plain.len()), Err(SrtpError::NoRoom));
        let mut short = [0x80u8; 14];
        assert_eq!(parkd.unprotect(&mut short, 14), Err(SrtpError::Auth));
    }

    #[test]
    fn protect_frame_matches_protect_in_place() {
        let suite = SrtpSuite::AesCm128HmacSha1_32;
        let mut a = SrtpLeg::new(&keys(suite, 3, 4)).unwrap();
        let mut b = SrtpLeg::new(&keys(suite, 3, 4)).unwrap();
        let plain = packet(100);
        let mut scratch = Vec::new();
        let framed = a.protect_frame(&plain[..12], &plain[12..], &mut scratch).unwrap();
        let mut buf = plain.clone();
        buf.resize(200, 0);
        let n = b.protect(&mut buf, plain.len()).unwrap();
        assert_eq!(&framed[..], &buf[..n]);
    }

    #[test]
    fn keys_are_never_in_debug_output() {
        let k = keys(SrtpSuite::AeadAes128Gcm, 0x41, 0x42);
        let text = format!("{k:?} {:?} {:?}", k.local, SrtpLeg::new(&k).unwrap());
        assert!(!text.contains("65") && !text.contains("0x41") && !text.contains("[65"), "{text}");
        assert!(text.contains("redacted"), "{text}");
        assert_eq!(MasterKey::new(SrtpSuite::AeadAes128Gcm, &[0; 30]), None, "GCM key||salt is 28 bytes");
        assert_eq!(SrtpSuite::from_name("AES_CM_128_HMAC_SHA1_32"), Some(SrtpSuite::AesCm128HmacSha1_32));
        assert_eq!(SrtpSuite::from_name("F8_128_HMAC_SHA1_80"), None);
    }
}
