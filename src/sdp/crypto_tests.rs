use super::*;
use crate::sdp::{build_answer, parse_sdp, Direction, LocalSdp};
use crate::media::Codec;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// RFC 4568 §4 and §7.1.1's keys (the RFC's lines carry an MKI, which parkd does not support).
const RFC_KEY_1: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
const RFC_KEY_2: &str = "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj";

fn offer(proto: &str, crypto: &str) -> String {
    format!("v=0\r\no=sam 2890844526 2890842807 IN IP4 10.47.16.5\r\ns=SRTP Discussion\r\nc=IN IP4 168.2.17.12\r\nt=0 0\r\nm=audio 49170 {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{crypto}a=sendrecv\r\n")
}

fn rules(policy: SrtpPolicy, over_tls: bool, over_plain_allowed: bool) -> SrtpRules {
    SrtpRules { policy, over_tls, over_plain_allowed }
}

#[test]
fn rfc4568_lines_parse_and_mki_is_refused() {
    // RFC 4568 §4's example: tag 1, 80-bit tag suite, lifetime 2^20, MKI 1 of 32 bytes.
    let rfc = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_1}|2^20|1:32");
    assert_eq!(parse_crypto(&rfc), None, "MKI is not supported: the line is skipped");
    let c = parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_1}|2^20")).unwrap();
    assert_eq!((c.tag, c.suite, c.key.expose().len()), (1, SrtpSuite::AesCm128HmacSha1_80, 30));
    let c = parse_crypto(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY_2}")).unwrap();
    assert_eq!((c.tag, c.suite), (2, SrtpSuite::AesCm128HmacSha1_32));
    // §7.1.1's F8 suite, several keys, session parameters, a wrong key length, bad base64.
    assert_eq!(parse_crypto(&format!("2 F8_128_HMAC_SHA1_80 inline:{RFC_KEY_2}")), None);
    assert_eq!(parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_1};inline:{RFC_KEY_2}")), None);
    assert_eq!(parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_1} FEC_ORDER=FEC_SRTP")), None);
    assert_eq!(parse_crypto(&format!("1 AEAD_AES_128_GCM inline:{RFC_KEY_1}")), None, "GCM wants 28 bytes");
    assert_eq!(parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:!!!"), None);
    assert_eq!(parse_crypto("x AES_CM_128_HMAC_SHA1_80"), None);
    let gcm = STANDARD.encode([7u8; 28]);
    assert_eq!(parse_crypto(&format!("5 AEAD_AES_128_GCM inline:{gcm}")).unwrap().suite, SrtpSuite::AeadAes128Gcm);
}

#[test]
fn offer_security_reads_the_audio_stream_in_order() {
    let body = offer("RTP/SAVP", &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_1}|2^20|1:32\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY_2}\r\na=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_1}\r\n"));
    let sec = offer_security(body.as_bytes());
    assert!(sec.savp);
    assert_eq!(sec.crypto.iter().map(|c| c.tag).collect::<Vec<_>>(), vec![2, 3], "the MKI line is skipped");
    // The plain SDP parser reads a SAVP offer too (address, codecs).
    let r = parse_sdp(body.as_bytes()).unwrap();
    assert_eq!(r.addr, "168.2.17.12:49170".parse().unwrap());
    let plain = offer_security(offer("RTP/AVP", "").as_bytes());
    assert_eq!(plain, OfferSecurity::default());
    // a=crypto of another stream (video) is not the audio's.
    let video = format!("{}m=video 5000 RTP/SAVP 96\r\na=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_1}\r\n", offer("RTP/AVP", ""));
    assert_eq!(offer_security(video.as_bytes()).crypto, vec![]);
}

#[test]
fn policy_answers_or_refuses_488() {
    let mut rng = StdRng::seed_from_u64(1);
    let savp = offer_security(offer("RTP/SAVP", &format!("a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY_2}\r\n")).as_bytes());
    let avp = offer_security(offer("RTP/AVP", "").as_bytes());
    let savp_no_suite = offer_security(offer("RTP/SAVP", &format!("a=crypto:1 F8_128_HMAC_SHA1_80 inline:{RFC_KEY_2}\r\n")).as_bytes());
    // Optional: SRTP when offered (over TLS, or plain when allowed), RTP when not.
    for r in [rules(SrtpPolicy::Optional, true, false), rules(SrtpPolicy::Optional, false, true), rules(SrtpPolicy::Required, true, false)] {
        let Ok(Negotiated::Srtp { tag, keys, savp: true }) = negotiate(&savp, r, &mut rng) else { panic!("{r:?}") };
        assert_eq!((tag, keys.suite), (4, SrtpSuite::AesCm128HmacSha1_32));
        assert_eq!(keys.remote.expose(), STANDARD.decode(RFC_KEY_2).unwrap().as_slice());
        assert_ne!(keys.local, keys.remote, "parkd's own fresh key");
    }
    assert_eq!(negotiate(&avp, rules(SrtpPolicy::Optional, false, false), &mut rng), Ok(Negotiated::Plain));
    assert_eq!(negotiate(&avp, rules(SrtpPolicy::Off, false, false), &mut rng), Ok(Negotiated::Plain));
    // 488s.
    assert_eq!(negotiate(&avp, rules(SrtpPolicy::Required, true, true), &mut rng), Err("Not Acceptable Here: SRTP (RTP/SAVP) required"));
    assert_eq!(negotiate(&savp, rules(SrtpPolicy::Off, true, true), &mut rng), Err("Not Acceptable Here: SRTP disabled"));
    assert_eq!(negotiate(&savp, rules(SrtpPolicy::Optional, false, false), &mut rng), Err("Not Acceptable Here: SDES keys only over TLS"));
    assert_eq!(negotiate(&savp_no_suite, rules(SrtpPolicy::Optional, true, false), &mut rng), Err("Not Acceptable Here: no supported crypto suite"));
    // Two negotiations draw two keys.
    let k = |rng: &mut StdRng| match negotiate(&savp, rules(SrtpPolicy::Optional, true, false), rng) {
        Ok(Negotiated::Srtp { keys, .. }) => keys.local,
        other => panic!("{other:?}"),
    };
    assert_ne!(k(&mut rng), k(&mut rng));
}

#[test]
fn answer_is_savp_with_one_crypto_line_that_reads_back() {
    let local = LocalSdp { session_id: 1, version: 1, ip: "192.0.2.10".parse().unwrap(), port: 20_000 };
    let key = MasterKey::new(SrtpSuite::AesCm128HmacSha1_80, &[0x5A; 30]).unwrap();
    let line = crypto_line(7, SrtpSuite::AesCm128HmacSha1_80, &key);
    let body = secure_body(&build_answer(&local, Codec::Pcmu, Some(101), Direction::SendRecv), &line, true);
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("m=audio 20000 RTP/SAVP 0 101\r\n"), "{text}");
    assert_eq!(text.matches("a=crypto:").count(), 1);
    assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:"), "{text}");
    let sec = offer_security(&body);
    assert!(sec.savp);
    assert_eq!((sec.crypto[0].tag, &sec.crypto[0].key), (7, &key));
    let back = parse_sdp(&body).unwrap();
    assert_eq!((back.addr.port(), back.dtmf_pt, back.direction), (20_000, Some(101), Direction::SendRecv));
}

#[test]
fn a_best_effort_offer_rfc_8643_is_srtp_when_the_keys_may_be_taken_and_plain_otherwise() {
    let mut rng = StdRng::seed_from_u64(2);
    let osrtp = offer_security(offer("RTP/AVP", &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_2}\r\n")).as_bytes());
    assert!(!osrtp.savp && osrtp.crypto.len() == 1);
    // Over TLS (or allowed over plain): SRTP, answered in the offer's RTP/AVP profile; also on a `required` lot.
    for r in [rules(SrtpPolicy::Optional, true, false), rules(SrtpPolicy::Optional, false, true), rules(SrtpPolicy::Required, true, false)] {
        assert!(matches!(negotiate(&osrtp, r, &mut rng), Ok(Negotiated::Srtp { tag: 1, savp: false, .. })), "{r:?}");
    }
    // Keys not allowed, or SRTP off: plain RTP (the offerer accepts it); a `required` lot says why it refuses.
    assert_eq!(negotiate(&osrtp, rules(SrtpPolicy::Optional, false, false), &mut rng), Ok(Negotiated::Plain));
    assert_eq!(negotiate(&osrtp, rules(SrtpPolicy::Off, true, true), &mut rng), Ok(Negotiated::Plain));
    assert_eq!(negotiate(&osrtp, rules(SrtpPolicy::Required, false, false), &mut rng), Err("Not Acceptable Here: SDES keys only over TLS"));
    // The answer keeps RTP/AVP and carries parkd's a=crypto.
    let local = LocalSdp { session_id: 1, version: 1, ip: "192.0.2.10".parse().unwrap(), port: 20_000 };
    let key = MasterKey::new(SrtpSuite::AesCm128HmacSha1_80, &[0x33; 30]).unwrap();
    let body = secure_body(&build_answer(&local, Codec::Pcmu, Some(101), Direction::SendRecv), &crypto_line(1, SrtpSuite::AesCm128HmacSha1_80, &key), false);
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n") && text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"), "{text}");
}
