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
//!
//! RTCP on an SRTP leg is SRTCP (RFC 3711 §3.4), with the same two contexts (the session keys for RTCP are
//! derived from the same master keys, with their own labels): [`SrtpLeg::protect_rtcp`] encrypts and
//! authenticates a compound packet and appends the E flag with the 31-bit SRTCP index and the tag;
//! [`SrtpLeg::unprotect_rtcp`] checks tag and index (replay window of 128 per SSRC) before it decrypts. parkd
//! reads RTCP on the RTP port (rtcp-mux, RFC 5761) or its RTCP port (see `plane_rtcp`): SRTCP from a leg is opened with
//! the leg's peer key, relayed SRTCP is sealed again with the receiving leg's key, and the hold SR is sealed
//! like the hold music. An SRTCP packet that does not authenticate is dropped and counted with the SRTP ones.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use rtc_srtp::context::Context;
use rtc_srtp::crypto::{RTCCrypto, RTCCryptoProvider};

use super::srtp_crypto::ParkdCrypto;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
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

    /// Bytes SRTCP adds to an RTCP packet: the E flag and index (4) and the tag (80 bits for both AES-CM suites,
    /// RFC 4568 §6.2.2; GCM's 16 bytes, RFC 7714 §9).
    pub const fn rtcp_overhead(self) -> usize {
        match self {
            SrtpSuite::AeadAes128Gcm => 4 + 16,
            _ => 4 + 10,
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

/// `rtc-srtp`'s own (ring) crypto, unchanged: what [`crypto`] delegates to, and the reference in the benchmark.
pub fn ring_crypto() -> Result<&'static dyn RTCCrypto, SrtpError> {
    Ok(provider()?.crypto())
}

/// The crypto parkd's SRTP contexts use: the ring provider's, with AES-CM's key schedule kept per context
/// ([`super::srtp_crypto`]).
pub fn crypto() -> Result<&'static dyn RTCCrypto, SrtpError> {
    static C: OnceLock<Option<ParkdCrypto>> = OnceLock::new();
    let c = C.get_or_init(|| ring_crypto().ok().map(|inner| ParkdCrypto { inner }));
    c.as_ref().map(|c| c as &dyn RTCCrypto).ok_or(SrtpError::NoProvider)
}

fn context(suite: SrtpSuite, key: &MasterKey, inbound: bool) -> Result<Context, SrtpError> {
    let m = key.expose();
    let (k, salt) = m.split_at(suite.key_len().min(m.len()));
    let replay = inbound.then(|| srtp_replay_protection(128));
    let rtcp_replay = inbound.then(|| srtcp_replay_protection(128));
    Context::new(k, salt, suite.profile(), replay, rtcp_replay, crypto()?).map_err(|_| SrtpError::BadKey(suite))
}

/// One leg's SRTP state: the outbound and inbound contexts (each with its ROC; inbound with a replay window).
pub struct SrtpLeg {
    suite: SrtpSuite,
    tx: Context,
    rx: Context,
    /// The rollover counter the first protected packet must carry (a stream resumed after a restart,
    /// [`SrtpLeg::resuming`]); 0 once used or for a new stream.
    start_roc: u32,
    /// The SRTCP index the first protected RTCP packet must exceed ([`SrtpLeg::with_srtcp_floor`]); 0 once used
    /// or for a new stream.
    start_srtcp: u32,
}

/// The most throw-away SRTCP packets protected to bring a resumed stream's SRTCP index up
/// ([`SrtpLeg::with_srtcp_floor`]): the bound of a stream ~5.5 h old (`core::persist::srtp_keys::srtcp_floor`).
pub const MAX_SRTCP_PRIME: u32 = 1 << 14;

impl fmt::Debug for SrtpLeg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpLeg").field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl SrtpLeg {
    /// Contexts for `keys`.
    pub fn new(keys: &SrtpKeys) -> Result<SrtpLeg, SrtpError> {
        Ok(SrtpLeg { suite: keys.suite, tx: context(keys.suite, &keys.local, false)?, rx: context(keys.suite, &keys.remote, true)?, start_roc: 0, start_srtcp: 0 })
    }

    /// Contexts for `keys` whose outbound stream continues one protected before (by an earlier process, issue
    /// 17): its first packet carries rollover counter `roc`, so the peer, whose context tracked the old stream,
    /// opens it. `rtc-srtp` sets no ROC from outside; the outbound context is brought there by protecting
    /// throw-away packets (never sent) along the index, about four per ROC step (see [`prime`]).
    pub fn resuming(keys: &SrtpKeys, roc: u32) -> Result<SrtpLeg, SrtpError> {
        Ok(SrtpLeg { start_roc: roc, ..SrtpLeg::new(keys)? })
    }

    /// The outbound SRTCP of a stream resumed after a restart: its first packet carries an index above `floor`
    /// (a bound on what the earlier process reached, derived by the core: `core::persist::srtp_keys`), so the
    /// peer's replay window (RFC 3711 §3.3.2), which saw the old packets, takes it. `rtc-srtp` sets no SRTCP
    /// index from outside: at the first RTCP packet the context is brought there by protecting `floor` (at most
    /// [`MAX_SRTCP_PRIME`]) throw-away packets under the stream's SSRC, never sent.
    pub fn with_srtcp_floor(self, floor: u32) -> SrtpLeg {
        SrtpLeg { start_srtcp: floor.min(MAX_SRTCP_PRIME), ..self }
    }

    /// Before the first RTCP packet `pkt` of a resumed stream: see [`SrtpLeg::with_srtcp_floor`].
    fn prime_rtcp_for(&mut self, pkt: &[u8]) {
        if self.start_srtcp == 0 {
            return;
        }
        let n = std::mem::take(&mut self.start_srtcp);
        let Some(ssrc) = pkt.get(4..8) else { return };
        let mut rr = [0x80, 201, 0, 1, 0, 0, 0, 0];
        rr[4..8].copy_from_slice(ssrc);
        for _ in 0..n {
            if self.tx.encrypt_rtcp(&rr).is_err() {
                tracing::warn!("cannot prime a resumed SRTCP stream; the peer may drop parkd's reports for a while");
                return;
            }
        }
    }

    /// The peer's key changed (a re-offer, RFC 4568 §7.1.4): a new inbound context; the outbound one (parkd's
    /// key, its rollover counter) stays.
    pub fn rekey_remote(&mut self, remote: &MasterKey) -> Result<(), SrtpError> {
        self.rx = context(self.suite, remote, true)?;
        Ok(())
    }

    /// Before the first packet of a resumed stream (`ssrc`, `seq`): the outbound context is brought to the
    /// index just before `start_roc · 2^16 + seq`.
    fn prime_for(&mut self, header: &[u8]) {
        if self.start_roc == 0 {
            return;
        }
        let roc = std::mem::take(&mut self.start_roc);
        if let (Some(seq), Some(ssrc)) = (header.get(2..4), header.get(8..12)) {
            let seq = u16::from_be_bytes([seq[0], seq[1]]);
            let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
            prime(&mut self.tx, ssrc, ((roc as u64) << 16 | seq as u64) - 1);
        }
    }

    /// Asks the CPU to bring the outbound context's own state into the cache ahead of a protect (a hint: no
    /// effect on what is computed). The media plane does this for every stream of a pacer slot before it
    /// protects any: with thousands of SRTP legs each leg's state has left the cache in the 20 ms since its last
    /// packet, and fetching the legs' states one after the other costs a memory round trip each, where the
    /// hints let them overlap.
    pub fn prefetch_tx(&self) {
        crate::media::prefetch::lines(std::ptr::from_ref(&self.tx).cast(), size_of::<Context>());
        crate::media::prefetch::lines(std::ptr::from_ref(&self.start_roc).cast(), 1);
    }

    /// The negotiated suite.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// Protects the RTP packet `buf[..len]` in place: `buf` must have room for the tag
    /// ([`SrtpSuite::overhead`]). Returns the SRTP length.
    pub fn protect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.prime_for(buf.get(..len.min(12)).unwrap_or_default());
        let plain = buf.get(..len).ok_or(SrtpError::NoRoom)?;
        let out = match fixed_header(plain) {
            Some(h) => self.tx.encrypt_rtp_with_header(plain, &h),
            None => self.tx.encrypt_rtp(plain),
        };
        let out = out.map_err(|_| SrtpError::Auth)?;
        let dst = buf.get_mut(..out.len()).ok_or(SrtpError::NoRoom)?;
        dst.copy_from_slice(&out);
        Ok(out.len())
    }

    /// Protects the RTP packet `header || payload` (a hold frame: the shared payload is only read): the SRTP
    /// packet's fixed header (the first 12 bytes, in clear) and the rest (CSRCs and extensions, none in a hold
    /// frame, the encrypted payload and the tag) as one buffer of its own, without a second allocation.
    pub fn protect_frame(&mut self, header: &[u8; 12], payload: &[u8], scratch: &mut Vec<u8>) -> Result<([u8; 12], Bytes), SrtpError> {
        self.prime_for(header);
        scratch.clear();
        scratch.extend_from_slice(header);
        scratch.extend_from_slice(payload);
        let out = match fixed_header(scratch) {
            Some(h) => self.tx.encrypt_rtp_with_header(scratch, &h),
            None => self.tx.encrypt_rtp(scratch),
        };
        let mut out = out.map_err(|_| SrtpError::Auth)?;
        let sealed: [u8; 12] = out.get(..12).and_then(|h| h.try_into().ok()).ok_or(SrtpError::Auth)?;
        // Moves the start within the same buffer (no split, no shared allocation), then hands the buffer over.
        bytes::Buf::advance(&mut out, 12);
        Ok((sealed, out.freeze()))
    }

    /// Authenticates and decrypts the SRTP packet `buf[..len]` in place. Returns the RTP length. A forged,
    /// replayed or garbled packet is an error (and leaves the contexts unchanged).
    pub fn unprotect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let sealed = buf.get(..len).ok_or(SrtpError::Auth)?;
        let out = match fixed_header(sealed) {
            Some(h) => self.rx.decrypt_rtp_with_header(sealed, &h),
            None => self.rx.decrypt_rtp(sealed),
        };
        let out = out.map_err(|_| SrtpError::Auth)?;
        let dst = buf.get_mut(..out.len()).ok_or(SrtpError::Auth)?;
        dst.copy_from_slice(&out);
        Ok(out.len())
    }
}

impl SrtpLeg {
    /// Protects the compound RTCP packet `buf[..len]` in place (SRTCP: `buf` must have room for the index and
    /// the tag, [`SrtpSuite::rtcp_overhead`]). Returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.prime_rtcp_for(buf.get(..len).ok_or(SrtpError::NoRoom)?);
        let plain = buf.get(..len).ok_or(SrtpError::NoRoom)?;
        let out = self.tx.encrypt_rtcp(plain).map_err(|_| SrtpError::Auth)?;
        let dst = buf.get_mut(..out.len()).ok_or(SrtpError::NoRoom)?;
        dst.copy_from_slice(&out);
        Ok(out.len())
    }

    /// Protects the compound RTCP packet `pkt` (parkd's hold report) into the SRTCP packet's bytes.
    pub fn protect_rtcp_frame(&mut self, pkt: &[u8]) -> Result<Bytes, SrtpError> {
        self.prime_rtcp_for(pkt);
        Ok(self.tx.encrypt_rtcp(pkt).map_err(|_| SrtpError::Auth)?.freeze())
    }

    /// Authenticates and decrypts the SRTCP packet `buf[..len]` in place. Returns the RTCP length. A forged,
    /// replayed, unencrypted (a plain RTCP packet has no valid tag) or too short packet is an error.
    ///
    /// The E flag must be set: parkd never agrees to unencrypted SRTCP (it takes no `UNENCRYPTED_SRTCP` session
    /// parameter, RFC 4568 §6.3.2), and `rtc-srtp` 0.21 returns an AES-CM packet whose E flag is clear *without
    /// checking its tag* (RFC 3711 §3.4 makes SRTCP authentication mandatory either way): without this check
    /// anyone could inject RTCP by clearing the bit.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let sealed = buf.get(..len).ok_or(SrtpError::Auth)?;
        let e_at = match self.suite {
            SrtpSuite::AeadAes128Gcm => len.checked_sub(4),
            _ => len.checked_sub(self.suite.rtcp_overhead()),
        };
        if e_at.and_then(|i| sealed.get(i)).is_none_or(|e| e & 0x80 == 0) || len < 8 + self.suite.rtcp_overhead() {
            return Err(SrtpError::Auth);
        }
        let out = self.rx.decrypt_rtcp(sealed).map_err(|_| SrtpError::Auth)?;
        let dst = buf.get_mut(..out.len()).ok_or(SrtpError::Auth)?;
        dst.copy_from_slice(&out);
        Ok(out.len())
    }
}

/// The header of the RTP packet `pkt` for `rtc-srtp`'s `*_with_header` calls when it is the 12-byte fixed header
/// alone (version 2, no CSRC, no extension: every hold frame, and most relayed packets), read from its bytes;
/// `None` for anything else, which goes through the library's own parse (`encrypt_rtp` / `decrypt_rtp`).
/// Giving the header saves that parse per packet (≈ 50 ns of a ≈ 400 ns AES-CM protect, `--srtp-micro`).
fn fixed_header(pkt: &[u8]) -> Option<rtc_rtp::header::Header> {
    let b: &[u8; 12] = pkt.get(..12)?.try_into().ok()?;
    if b[0] & 0xC0 != 0x80 || b[0] & 0x1F != 0 {
        return None;
    }
    Some(rtc_rtp::header::Header {
        version: 2,
        padding: b[0] & 0x20 != 0,
        marker: b[1] & 0x80 != 0,
        payload_type: b[1] & 0x7F,
        sequence_number: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        ..Default::default()
    })
}

/// Walks the outbound context `tx` of stream `ssrc` (new to it) to the extended index `target` by protecting
/// empty packets whose indexes step by 2^14 (a step below 2^15 is always read forward by the RFC 3711 §3.3.1
/// estimate `rtc-srtp` applies to its own packets), ending at `target` itself. Indexes below 2^16 need nothing
/// (a new stream starts at ROC 0).
fn prime(tx: &mut Context, ssrc: u32, target: u64) {
    const STEP: u64 = 1 << 14;
    if target < 1 << 16 {
        return;
    }
    let mut at = 1u64 << 15;
    let mut header = [0u8; 12];
    header[0] = 0x80;
    header[8..12].copy_from_slice(&ssrc.to_be_bytes());
    loop {
        header[2..4].copy_from_slice(&(at as u16).to_be_bytes());
        if tx.encrypt_rtp(&header).is_err() {
            tracing::warn!("cannot prime a resumed SRTP stream; the peer may not open it");
            return;
        }
        if at == target {
            return;
        }
        at = (at + STEP).min(target);
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

    /// `sender` protects RTP packet `seq` (SSRC 0xABCD); `phone` opens it.
    fn send(sender: &mut SrtpLeg, phone: &mut SrtpLeg, seq: u16) -> Result<usize, SrtpError> {
        let plain = packet(seq);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 64, 0);
        let n = sender.protect(&mut buf, plain.len())?;
        phone.unprotect(&mut buf, n)
    }

    #[test]
    fn a_resumed_sender_continues_the_rollover_counter_the_phone_tracked() {
        for suite in SrtpSuite::ALL {
            for roc in [1u32, 2, 7] {
                // The old process: a stream the phone followed through `roc` wraps (steps of 5000: read forward).
                let mut old = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
                let mut phone = SrtpLeg::new(&keys(suite, 2, 1)).unwrap();
                let last = (roc as u64) << 16 | 100;
                let mut i = 60_000u64;
                loop {
                    assert!(send(&mut old, &mut phone, i as u16).is_ok(), "{suite:?} index {i}");
                    if i == last {
                        break;
                    }
                    i = (i + 5_000).min(last);
                }
                // A restart: the new process resumes at seq 151 (a gap) with the journaled ROC.
                let mut resumed = SrtpLeg::resuming(&keys(suite, 1, 2), roc).unwrap();
                for seq in [151u16, 152, 153] {
                    assert_eq!(send(&mut resumed, &mut phone, seq), Ok(packet(seq).len()), "{suite:?} roc {roc} seq {seq}");
                }
                // Without it (ROC 0) the phone cannot open the stream: what the journal's ROC is for.
                let mut naive = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
                assert_eq!(send(&mut naive, &mut phone, 200), Err(SrtpError::Auth), "{suite:?} roc {roc}");
            }
        }
    }

    #[test]
    fn a_remote_rekey_keeps_the_outbound_rollover_counter() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let mut parkd = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
        let mut phone = SrtpLeg::new(&keys(suite, 2, 1)).unwrap();
        for seq in [65_000u16, 65_535, 0, 10] {
            assert!(send(&mut parkd, &mut phone, seq).is_ok());
        }
        parkd.rekey_remote(&keys(suite, 9, 9).local).unwrap();
        assert!(send(&mut parkd, &mut phone, 11).is_ok(), "still ROC 1 after the peer's new key");
        let mut phone2 = SrtpLeg::new(&keys(suite, 9, 1)).unwrap();
        assert!(send(&mut phone2, &mut parkd, 5).is_ok(), "the peer's new key opens its packets");
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

    /// A restart starts a new SRTCP context: without a floor its first index (1) is a replay to the phone,
    /// which saw the old process's; with the core's floor it is above them and taken. Each suite; the priming
    /// cost is printed (`-- --nocapture`), not asserted.
    #[test]
    fn a_resumed_srtcp_stream_starts_above_the_floor_the_phones_replay_window_saw() {
        for suite in SrtpSuite::ALL {
            let mut old = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
            let mut phone = SrtpLeg::new(&keys(suite, 2, 1)).unwrap();
            // One SR (28 bytes) of parkd's stream, protected.
            let sr = |leg: &mut SrtpLeg| {
                let mut buf = vec![0x80, 200, 0, 6, 0, 0, 0x12, 0x34];
                buf.resize(128, 7);
                let n = leg.protect_rtcp(&mut buf, 28).unwrap();
                buf.truncate(n);
                buf
            };
            // The old process sent 600 reports; the phone took them all.
            for _ in 0..600 {
                let mut p = sr(&mut old);
                let len = p.len();
                phone.unprotect_rtcp(&mut p, len).unwrap();
            }
            let mut fresh = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
            let mut p = sr(&mut fresh);
            let len = p.len();
            assert_eq!(phone.unprotect_rtcp(&mut p, len), Err(SrtpError::Auth), "{suite:?}: index 1 again is a replay");
            let started = std::time::Instant::now();
            let mut resumed = SrtpLeg::new(&keys(suite, 1, 2)).unwrap().with_srtcp_floor(600);
            let mut p = sr(&mut resumed);
            let took = started.elapsed();
            let len = p.len();
            assert_eq!(phone.unprotect_rtcp(&mut p, len), Ok(28), "{suite:?}: above the floor, taken");
            eprintln!("{suite:?}: priming 600 SRTCP indexes took {took:?}");
        }
    }

    #[test]
    fn srtcp_round_trip_and_an_unauthenticated_packet_is_refused() {
        for suite in SrtpSuite::ALL {
            let mut parkd = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
            let mut phone = SrtpLeg::new(&keys(suite, 2, 1)).unwrap();
            // An RR with one report block.
            let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0xAB, 0xCD];
            rr.extend((0..24u8).map(|i| i * 7));
            let mut buf = rr.clone();
            buf.resize(128, 0);
            let n = phone.protect_rtcp(&mut buf, rr.len()).unwrap();
            assert_eq!(n, rr.len() + suite.rtcp_overhead(), "{suite:?}");
            assert_eq!(&buf[..8], &rr[..8], "header and SSRC stay clear");
            assert_ne!(&buf[8..32], &rr[8..], "the reports are encrypted");
            let sealed = buf[..n].to_vec();
            let mut forged = sealed.clone();
            forged[12] ^= 1;
            assert_eq!(parkd.unprotect_rtcp(&mut forged, n), Err(SrtpError::Auth), "{suite:?}");
            // The E flag cleared (claims "unencrypted, authenticated"): refused, the tag is not the point.
            let mut clear = sealed.clone();
            let e = if suite == SrtpSuite::AeadAes128Gcm { n - 4 } else { n - suite.rtcp_overhead() };
            clear[e] &= 0x7F;
            assert_eq!(parkd.unprotect_rtcp(&mut clear, n), Err(SrtpError::Auth), "{suite:?}");
            // A plain RTCP packet with a made-up trailer (E clear, zero tag): refused.
            let mut plain = rr.clone();
            plain.resize(rr.len() + suite.rtcp_overhead(), 0);
            assert_eq!(parkd.unprotect_rtcp(&mut plain, rr.len() + suite.rtcp_overhead()), Err(SrtpError::Auth), "{suite:?}");
            let mut ok = sealed.clone();
            assert_eq!(parkd.unprotect_rtcp(&mut ok, n), Ok(rr.len()));
            assert_eq!(&ok[..rr.len()], &rr[..]);
            let mut again = sealed.clone();
            assert_eq!(parkd.unprotect_rtcp(&mut again, n), Err(SrtpError::Auth), "a replayed SRTCP index is refused");
        }
    }

    #[test]
    fn protect_frame_matches_protect_in_place() {
        let suite = SrtpSuite::AesCm128HmacSha1_32;
        let mut a = SrtpLeg::new(&keys(suite, 3, 4)).unwrap();
        let mut b = SrtpLeg::new(&keys(suite, 3, 4)).unwrap();
        let plain = packet(100);
        let mut scratch = Vec::new();
        let (h, rest) = a.protect_frame(plain[..12].try_into().unwrap(), &plain[12..], &mut scratch).unwrap();
        let mut buf = plain.clone();
        buf.resize(200, 0);
        let n = b.protect(&mut buf, plain.len()).unwrap();
        assert_eq!(h[..], buf[..12]);
        assert_eq!(&rest[..], &buf[12..n]);
    }

    #[test]
    fn the_fixed_header_is_the_librarys_parse_and_other_headers_take_its_path() {
        // Marker, payload type and padding bit as the library reads them: the same SRTP packets (protected
        // with the header given, and with the library's own parse) and the same opened packets.
        for suite in SrtpSuite::ALL {
            let k = keys(suite, 5, 6);
            let (mut given, mut parsed) = (context(suite, &k.local, false).unwrap(), context(suite, &k.local, false).unwrap());
            let (mut open_given, mut open_parsed) = (context(suite, &k.local, true).unwrap(), context(suite, &k.local, true).unwrap());
            for (seq, b0, b1) in [(4321u16, 0x80u8, 0x00u8), (4322, 0x80, 0x80 | 96), (4323, 0xA0, 8)] {
                let mut p = packet(seq);
                p[0] = b0;
                p[1] = b1;
                let h = fixed_header(&p).unwrap();
                assert_eq!((h.marker, h.payload_type, h.padding, h.sequence_number, h.ssrc), (b1 & 0x80 != 0, b1 & 0x7F, b0 & 0x20 != 0, seq, 0xABCD));
                let a = given.encrypt_rtp_with_header(&p, &h).unwrap();
                assert_eq!(a, parsed.encrypt_rtp(&p).unwrap(), "{suite:?} {b0:#x} {b1:#x}");
                assert_eq!(open_given.decrypt_rtp_with_header(&a, &fixed_header(&a).unwrap()).unwrap(), open_parsed.decrypt_rtp(&a).unwrap());
            }
        }
        let mut csrc = packet(9);
        csrc[0] = 0x81; // one CSRC: not a fixed header, the library parses it
        assert_eq!(fixed_header(&csrc), None);
        assert_eq!(fixed_header(&[0x80; 11]), None);
        assert_eq!(fixed_header(&packet(1)[..12].iter().map(|b| b | 0x40).collect::<Vec<_>>()), None, "version 3");
        // A packet with a CSRC round-trips through the library's own parse.
        for suite in SrtpSuite::ALL {
            let mut parkd = SrtpLeg::new(&keys(suite, 1, 2)).unwrap();
            let mut phone = SrtpLeg::new(&keys(suite, 2, 1)).unwrap();
            let mut buf = csrc.clone();
            buf.resize(csrc.len() + 64, 0);
            let n = parkd.protect(&mut buf, csrc.len()).unwrap();
            assert_eq!(&buf[..16], &csrc[..16], "header and CSRC stay clear");
            assert_eq!(phone.unprotect(&mut buf, n), Ok(csrc.len()), "{suite:?}");
            assert_eq!(&buf[..csrc.len()], &csrc[..]);
        }
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
