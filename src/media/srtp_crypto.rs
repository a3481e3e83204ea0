//! The crypto under parkd's SRTP contexts: `rtc-srtp`'s own ring provider, except that AES counter mode keeps
//! its key schedule.
//!
//! `rtc-srtp` takes its primitives from a caller-supplied [`RTCCrypto`] (that is what the trait is for). Its ring
//! provider's AES-CTR keeps the raw session key and expands the AES key schedule again for every packet
//! (`ctr::Ctr128BE::new` per call): for a 160-byte hold frame that setup is a large part of an AES-CM protect.
//! [`ParkdCrypto`] expands it once per context, with the same RustCrypto `aes` and `ctr` crates the provider
//! uses (no crypto is written here: the key is an [`aes::Aes128Enc`], the keystream is `ctr`'s `Ctr128BE` over a
//! reference to it). Everything else (HMAC-SHA1, ring's AES-GCM, the key derivation's AES block) is delegated
//! to the ring provider unchanged.

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher as _, StreamCipherCoreWrapper};
use rtc_srtp::crypto::{
    AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CryptoAlgorithm, CryptoError, HmacAlgorithm, Mac, RTCCrypto,
    StreamCipher, StreamCipherAlgorithm,
};

/// [`RTCCrypto`] for SRTP: `inner` (the ring provider's) with AES-128-CTR keyed once.
pub struct ParkdCrypto {
    pub inner: &'static dyn RTCCrypto,
}

impl RTCCrypto for ParkdCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.supports(algorithm)
    }

    fn block_encrypt(&self, algorithm: BlockCipherAlgorithm, key: &[u8], block: &mut [u8]) -> Result<(), CryptoError> {
        self.inner.block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.new_hmac(algorithm, key)
    }

    fn new_stream_cipher(&self, algorithm: StreamCipherAlgorithm, key: &[u8]) -> Result<Box<dyn StreamCipher>, CryptoError> {
        match algorithm {
            StreamCipherAlgorithm::Aes128Ctr => match aes::Aes128Enc::new_from_slice(key) {
                Ok(key) => Ok(Box::new(Aes128Ctr { key })),
                Err(_) => Err(CryptoError::InvalidKeyLength { expected: 16, actual: key.len() }),
            },
            // parkd negotiates no AES-256 suite; whatever else is asked goes to the provider as before.
            other => self.inner.new_stream_cipher(other, key),
        }
    }

    fn new_aead(&self, algorithm: AeadAlgorithm, key: &[u8]) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.new_aead(algorithm, key)
    }
}

/// AES-128 in counter mode with a 128-bit big-endian counter (SRTP's AES-CM, RFC 3711 §4.1.1), the key
/// schedule expanded once (the `zeroize` feature of `aes` clears it on drop, as the provider clears its raw key).
struct Aes128Ctr {
    key: aes::Aes128Enc,
}

impl StreamCipher for Aes128Ctr {
    fn apply_keystream(&mut self, iv: &[u8], data: &mut [u8]) -> Result<(), CryptoError> {
        let iv: &[u8; 16] = iv.try_into().map_err(|_| CryptoError::InvalidNonceLength { expected: 16, actual: iv.len() })?;
        let core = ctr::CtrCore::<&aes::Aes128Enc, ctr::flavors::Ctr128BE>::inner_iv_init(&self.key, iv.into());
        StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3711 Appendix B.2: the AES-CM keystream for a session key and IV.
    #[test]
    fn aes_cm_keystream_matches_rfc3711_b2() {
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let iv = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000");
        let want = hex("E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB41E95B3BB0A2E8DD477901E4FCA894C0");
        let crypto = ParkdCrypto { inner: super::super::srtp::ring_crypto().unwrap() };
        let mut c = crypto.new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &key).unwrap();
        let mut data = vec![0u8; want.len()];
        c.apply_keystream(&iv, &mut data).unwrap();
        assert_eq!(data, want);
        // The same cipher again from the start (the counter is per call, not carried over).
        let mut again = vec![0u8; 16];
        c.apply_keystream(&iv, &mut again).unwrap();
        assert_eq!(again, want[..16]);
        // The provider's own AES-CTR agrees.
        let mut theirs = crypto.inner.new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &key).unwrap();
        let mut data2 = vec![0u8; 100];
        theirs.apply_keystream(&iv, &mut data2).unwrap();
        let mut data3 = vec![0u8; 100];
        c.apply_keystream(&iv, &mut data3).unwrap();
        assert_eq!(data2, data3);
        assert!(c.apply_keystream(&iv[..12], &mut data3).is_err());
        assert!(crypto.new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &key[..15]).is_err());
    }

    /// Whole SRTP and SRTCP packets of every suite are byte for byte those of `rtc-srtp`'s own provider.
    #[test]
    fn packets_are_those_of_the_stock_provider() {
        use super::super::srtp::SrtpSuite;
        use rtc_srtp::context::Context;
        use rtc_srtp::protection_profile::ProtectionProfile;
        let ours = ParkdCrypto { inner: super::super::srtp::ring_crypto().unwrap() };
        for (suite, profile) in [
            (SrtpSuite::AesCm128HmacSha1_80, ProtectionProfile::Aes128CmHmacSha1_80),
            (SrtpSuite::AesCm128HmacSha1_32, ProtectionProfile::Aes128CmHmacSha1_32),
            (SrtpSuite::AeadAes128Gcm, ProtectionProfile::AeadAes128Gcm),
        ] {
            let key: Vec<u8> = (0..16u8).map(|i| i * 11 + 3).collect();
            let salt: Vec<u8> = (0..suite.salt_len() as u8).map(|i| i * 7 + 1).collect();
            let mut a = Context::new(&key, &salt, profile, None, None, &ours).unwrap();
            let mut b = Context::new(&key, &salt, profile, None, None, ours.inner).unwrap();
            for seq in [65_530u16, 65_535, 0, 3] {
                let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                p.extend((0..160u8).map(|i| i.wrapping_mul(5)));
                assert_eq!(a.encrypt_rtp(&p).unwrap(), b.encrypt_rtp(&p).unwrap(), "{suite:?} seq {seq}");
            }
            let mut rr = vec![0x81, 201, 0, 7, 0x12, 0x34, 0x56, 0x78];
            rr.extend((0..24u8).map(|i| i * 9));
            assert_eq!(a.encrypt_rtcp(&rr).unwrap(), b.encrypt_rtcp(&rr).unwrap(), "{suite:?}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
