//! SDP offer/answer (RFC 3264, RFC 4566) for G.711 calls.
//!
//! Parsing uses webrtc-sdp, which was checked against ordinary SIP phone SDP (SIPp, baresip,
//! linphone, pjsip with `a=X-nat`, Polycom-style static PTs without `a=rtpmap`, Cisco with an
//! `m=image ... udptl t38` line, `c=` only at media level, `c=0.0.0.0`, port 0, `s=` empty, LF-only
//! line ends, IPv6): it parses all of them, reporting unknown attributes/protocols as warnings that
//! we ignore. Known limits: it rejects SDP without a `t=` line (RFC 4566 requires it) and any
//! body shorter than 51 bytes; both come back as [`SdpError::Malformed`].
//!
//! Writing: the answer/offer is a fixed eight-to-ten line template, written directly (using
//! webrtc-sdp's builder would need its WebRTC-oriented fmtp structures for one `0-16` line);
//! tests parse every body we write back through webrtc-sdp.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use webrtc_sdp::address::ExplicitlyTypedAddress;
use webrtc_sdp::attribute_type::SdpAttribute;
use webrtc_sdp::error::SdpParserError;
use webrtc_sdp::media_type::{SdpFormatList, SdpMedia, SdpMediaValue};

use crate::media::Codec;

pub mod crypto;

/// Media direction (RFC 3264 §5.1, §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction to answer with (RFC 3264 §6.1): sendonly ↔ recvonly, the others unchanged.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// True when the side that wrote this direction wants to receive media (so we may send).
    pub fn peer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The attribute name (`a=sendrecv` ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// Why an SDP body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP has no audio stream with a non-zero port")]
    NoAudio,
    #[error("SDP has no usable IP address for the audio stream (no c= line, or a host name)")]
    NoAddress,
    #[error("SDP audio stream offers neither PCMU nor PCMA")]
    NoCommonCodec,
    #[error("malformed SDP at line {line}: {detail}")]
    Malformed { line: usize, detail: String },
}

/// What parkd needs from the remote party's SDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSdp {
    /// Where to send RTP (may be `0.0.0.0`: old-style hold, RFC 3264 §8.4).
    pub addr: SocketAddr,
    /// Formats of the audio m-line in the offerer's order; `Some` for PCMU/PCMA.
    pub codecs: Vec<(u8, Option<Codec>)>,
    /// RFC 4733 telephone-event/8000 payload type, if offered.
    pub dtmf_pt: Option<u8>,
    /// The remote side's direction (`c=0.0.0.0` turns sendrecv into sendonly, recvonly into inactive).
    pub direction: Direction,
    /// The audio stream carries `a=rtcp-mux` (or `a=rtcp-mux-only`, RFC 8858): RTCP on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// The audio stream's `a=rtcp:` port (RFC 3605): where its RTCP goes when it does not mux (an address in
    /// the attribute is ignored: RTCP goes to the stream's IP address).
    pub rtcp_port: Option<u16>,
}

impl RemoteSdp {
    /// The port of the stream's RTCP when it does not mux: its `a=rtcp:` port, else its RTP port + 1 (RFC 3550
    /// §11); 0 when the stream has no usable port.
    pub fn rtcp_peer_port(&self) -> u16 {
        match self.rtcp_port {
            Some(p) => p,
            None if self.addr.port() == 0 || self.addr.port() == u16::MAX => 0,
            None => self.addr.port() + 1,
        }
    }

    /// True when the remote side puts us on hold / does not want media from us.
    pub fn is_hold(&self) -> bool {
        !self.direction.peer_receives()
    }
}

fn malformed(e: SdpParserError) -> SdpError {
    // webrtc-sdp checks "every m-section has a c= (or the session has one)" itself and reports
    // it as a sequence error; that case is ours to type as NoAddress.
    if let SdpParserError::Sequence { message, .. } = &e {
        if message.contains("connection") {
            return SdpError::NoAddress;
        }
    }
    let line = match &e {
        SdpParserError::Line { line_number, .. }
        | SdpParserError::Unsupported { line_number, .. }
        | SdpParserError::Sequence { line_number, .. } => *line_number,
    };
    SdpError::Malformed { line: line + 1, detail: e.to_string() }
}

fn direction_of(attrs: &[SdpAttribute]) -> Option<Direction> {
    attrs.iter().find_map(|a| match a {
        SdpAttribute::Sendrecv => Some(Direction::SendRecv),
        SdpAttribute::Sendonly => Some(Direction::SendOnly),
        SdpAttribute::Recvonly => Some(Direction::RecvOnly),
        SdpAttribute::Inactive => Some(Direction::Inactive),
        _ => None,
    })
}

fn is_usable_audio(m: &SdpMedia) -> bool {
    *m.get_type() == SdpMediaValue::Audio && m.get_port() != 0
}

/// Parses the first audio m-line with a non-zero port (RFC 3264 §5.1: port 0 = stream rejected).
pub fn parse_sdp(body: &[u8]) -> Result<RemoteSdp, SdpError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| SdpError::Malformed { line: 0, detail: format!("not UTF-8 at byte {}", e.valid_up_to()) })?;
    // `a=crypto` lines carry SDES keys (read by `sdp::crypto` from the raw body): webrtc_sdp does not know the
    // attribute and logs the whole line as a warning, so they never reach it.
    let stripped;
    let text = if text.contains("a=crypto:") {
        stripped = text.split_inclusive('\n').filter(|l| !l.starts_with("a=crypto:")).collect::<String>();
        stripped.as_str()
    } else {
        text
    };
    let session = webrtc_sdp::parse_sdp(text, false).map_err(malformed)?;
    let media = session.media.iter().find(|m| is_usable_audio(m)).ok_or(SdpError::NoAudio)?;

    let conn = media.get_connection().as_ref().or(session.connection.as_ref()).ok_or(SdpError::NoAddress)?;
    let ip = match &conn.address {
        ExplicitlyTypedAddress::Ip(ip) => *ip,
        ExplicitlyTypedAddress::Fqdn { .. } => return Err(SdpError::NoAddress),
    };
    let port = u16::try_from(media.get_port()).map_err(|_| SdpError::NoAudio)?;

    let rtpmaps: Vec<_> = media
        .get_attributes()
        .iter()
        .filter_map(|a| match a {
            SdpAttribute::Rtpmap(r) => Some(r),
            _ => None,
        })
        .collect();
    let formats: &[u32] = match media.get_formats() {
        SdpFormatList::Integers(v) => v,
        _ => &[],
    };
    let mut codecs = Vec::with_capacity(formats.len());
    let mut dtmf_pt = None;
    for f in formats {
        let Ok(pt) = u8::try_from(*f) else { continue };
        if pt > 127 {
            continue;
        }
        let codec = match rtpmaps.iter().find(|r| r.payload_type == pt) {
            Some(r) => {
                let mono = r.channels.is_none_or(|c| c == 1);
                let name = r.codec_name.to_ascii_uppercase();
                if name == "TELEPHONE-EVENT" && r.frequency == 8000 && dtmf_pt.is_none() {
                    dtmf_pt = Some(pt);
                }
                match (name.as_str(), r.frequency, mono) {
                    ("PCMU", 8000, true) => Some(Codec::Pcmu),
                    ("PCMA", 8000, true) => Some(Codec::Pcma),
                    _ => None,
                }
            }
            // RFC 3551 static payload types need no rtpmap.
            None => Codec::from_payload_type(pt),
        };
        codecs.push((pt, codec));
    }
    if !codecs.iter().any(|(_, c)| c.is_some()) {
        return Err(SdpError::NoCommonCodec);
    }

    let mut direction = direction_of(media.get_attributes()).or_else(|| direction_of(&session.attribute)).unwrap_or(Direction::SendRecv);
    if ip.is_unspecified() {
        // RFC 3264 §8.4: c=0.0.0.0 is the RFC 2543 way to say "do not send to me".
        direction = match direction {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        };
    }
    let rtcp_mux = media.get_attributes().iter().any(|a| matches!(a, SdpAttribute::RtcpMux | SdpAttribute::RtcpMuxOnly));
    let rtcp_port = media.get_attributes().iter().find_map(|a| match a {
        SdpAttribute::Rtcp(r) if r.port != 0 => Some(r.port),
        _ => None,
    });
    Ok(RemoteSdp { addr: SocketAddr::new(ip, port), codecs, dtmf_pt, direction, rtcp_mux, rtcp_port })
}

/// Picks our codec: the first of the remote's formats (its preference order, RFC 3264 §6.1)
/// that is in `prefer`.
pub fn choose_codec(remote: &RemoteSdp, prefer: &[Codec]) -> Option<Codec> {
    remote.codecs.iter().filter_map(|(_, c)| *c).find(|c| prefer.contains(c))
}

/// Our side of the session: `o=` identifiers and where we receive RTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalSdp {
    pub session_id: u64,
    /// `o=` session version: increment for every new offer/answer in the dialog (RFC 3264 §8).
    pub version: u64,
    pub ip: IpAddr,
    pub port: u16,
}

fn write_sdp(local: &LocalSdp, codecs: &[Codec], dtmf_pt: Option<u8>, dir: Direction) -> Bytes {
    let family = if local.ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = String::with_capacity(320);
    // `write!` to a String cannot fail.
    let mut n = itoa::Buffer::new();
    s.push_str("v=0\r\no=parkd ");
    s.push_str(n.format(local.session_id));
    s.push(' ');
    s.push_str(n.format(local.version));
    for line in [" IN ", "\r\ns=parkd\r\nc=IN "] {
        s.push_str(line);
        s.push_str(family);
        s.push(' ');
        crate::sip::ip_text::push_ip(&mut s, local.ip);
    }
    s.push_str("\r\nt=0 0\r\nm=audio ");
    s.push_str(n.format(local.port));
    s.push_str(" RTP/AVP");
    for c in codecs {
        let _ = write!(s, " {}", c.payload_type());
    }
    if let Some(pt) = dtmf_pt {
        let _ = write!(s, " {pt}");
    }
    s.push_str("\r\n");
    for c in codecs {
        let _ = write!(s, "a=rtpmap:{} {}/{}\r\n", c.payload_type(), c.encoding_name(), c.clock_rate());
    }
    if let Some(pt) = dtmf_pt {
        // RFC 4733 §7.1.1: events 0-15 are the DTMF digits, 16 is flash.
        let _ = write!(s, "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n");
    }
    let _ = write!(s, "a=ptime:20\r\na={}\r\n", dir.as_str());
    Bytes::from(s)
}

/// An answer with exactly one codec (RFC 3264 §6.1), optional telephone-event and `dir`
/// (use `remote.direction.reverse()`).
pub fn build_answer(local: &LocalSdp, codec: Codec, dtmf_pt: Option<u8>, dir: Direction) -> Bytes {
    write_sdp(local, &[codec], dtmf_pt, dir)
}

/// One of parkd's answers ([`build_answer`], possibly with its `a=crypto`) accepting the offer's `a=rtcp-mux`
/// (RFC 5761 §5.1.1): the attribute at the end of the (only) audio stream.
pub fn with_rtcp_mux(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(body);
    out.extend_from_slice(b"a=rtcp-mux\r\n");
    Bytes::from(out)
}

/// One of parkd's SDP bodies with its RTCP attributes at the end of the (only) audio stream: `a=rtcp:PORT`
/// (RFC 3605: parkd's RTCP port for a phone that does not mux; omitted when `rtcp_port` is 0) when `separate`,
/// then `a=rtcp-mux` (RFC 5761) when `mux`. An offer has both (the answerer chooses, RFC 5761 §5.1.3); an
/// answer one or the other.
pub fn with_rtcp(body: &[u8], rtcp_port: u16, separate: bool, mux: bool) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 30);
    out.extend_from_slice(body);
    if separate && rtcp_port != 0 {
        out.extend_from_slice(format!("a=rtcp:{rtcp_port}\r\n").as_bytes());
    }
    if mux {
        out.extend_from_slice(b"a=rtcp-mux\r\n");
    }
    Bytes::from(out)
}

/// An offer listing `codecs` in our preference order (RFC 3264 §5).
pub fn build_offer(local: &LocalSdp, codecs: &[Codec], dtmf_pt: Option<u8>, dir: Direction) -> Bytes {
    write_sdp(local, codecs, dtmf_pt, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    const BARESIP: &str = "v=0\r\no=- 1234 5678 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 10000 RTP/AVP 8 0 101\r\nb=AS:64\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\na=label:1\r\na=ssrc:12345 cname:foo\r\na=rtcp-rsize\r\na=ptime:20\r\n";
    const LINPHONE: &str = "v=0\r\no=bob 3012 2164 IN IP4 192.168.1.20\r\ns=Talk\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\na=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\na=record:off\r\nm=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\na=rtpmap:97 speex/16000\r\na=fmtp:97 vbr=on\r\na=rtpmap:98 speex/8000\r\na=fmtp:98 vbr=on\r\na=fmtp:18 annexb=yes\r\na=rtpmap:101 telephone-event/48000\r\na=rtpmap:99 telephone-event/16000\r\na=rtpmap:100 telephone-event/8000\r\na=rtcp-fb:* trr-int 1000\r\na=rtcp-fb:* ccm tmmbr\r\n";
    const POLYCOM: &str = "v=0\r\no=- 1234567 1234567 IN IP4 10.0.0.5\r\ns=Polycom IP Phone\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\na=sendrecv\r\nm=audio 2222 RTP/AVP 9 0 8 18 127\r\na=rtpmap:127 telephone-event/8000\r\n";
    const HOLD_SENDONLY: &str = "v=0\r\no=- 1 2 IN IP4 10.0.0.5\r\ns=-\r\nt=0 0\r\nm=audio 2222 RTP/AVP 0\r\nc=IN IP4 10.0.0.5\r\na=sendonly\r\n";
    const HOLD_ZERO: &str = "v=0\r\no=- 1 3 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 2222 RTP/AVP 0\r\n";
    const CISCO: &str = "v=0\r\no=CiscoSystemsSIP-GW-UserAgent 4567 8901 IN IP4 10.1.1.1\r\ns=SIP Call\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\nm=image 0 udptl t38\r\nm=audio 18000 RTP/AVP 8 0 101\r\nc=IN IP4 10.1.1.2\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n";
    const PJSIP: &str = "v=0\r\no=- 3900000000 3900000000 IN IP4 192.168.0.3\r\ns=pjmedia\r\nb=AS:84\r\nt=0 0\r\na=X-nat:0\r\nm=audio 4000 RTP/AVP 8 0 101\r\nc=IN IP4 192.168.0.3\r\nb=TIAS:64000\r\na=rtcp:4001 IN IP4 192.168.0.3\r\na=sendrecv\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n";
    const PORT0: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
    const IPV6_LF: &str = "v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 ::1\nt=0 0\nm=audio 5000 RTP/AVP 0\na=inactive\n";

    fn parse(s: &str) -> Result<RemoteSdp, SdpError> {
        parse_sdp(s.as_bytes())
    }

    #[test]
    fn sipp_default_offer() {
        let r = parse(SIPP).unwrap();
        assert_eq!(r.addr, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(r.codecs, vec![(0, Some(Codec::Pcmu))]);
        assert_eq!((r.dtmf_pt, r.direction), (None, Direction::SendRecv));
    }

    #[test]
    fn baresip_offer_order_and_dtmf_rfc3264_6_1() {
        let r = parse(BARESIP).unwrap();
        assert_eq!(r.codecs, vec![(8, Some(Codec::Pcma)), (0, Some(Codec::Pcmu)), (101, None)]);
        assert_eq!(r.dtmf_pt, Some(101));
        assert_eq!(choose_codec(&r, &[Codec::Pcmu, Codec::Pcma]), Some(Codec::Pcma), "offerer's order wins");
        assert_eq!(choose_codec(&r, &[Codec::Pcmu]), Some(Codec::Pcmu));
        assert_eq!(choose_codec(&r, &[]), None);
    }

    #[test]
    fn linphone_with_many_codecs_picks_8k_telephone_event() {
        let r = parse(LINPHONE).unwrap();
        assert_eq!(r.addr, "192.168.1.20:7078".parse().unwrap());
        assert_eq!(r.dtmf_pt, Some(100));
        assert_eq!(choose_codec(&r, &[Codec::Pcma, Codec::Pcmu]), Some(Codec::Pcmu));
        assert_eq!(r.codecs.len(), 9);
    }

    #[test]
    fn polycom_static_pts_without_rtpmap_rfc3551() {
        let r = parse(POLYCOM).unwrap();
        assert_eq!(r.codecs, vec![(9, None), (0, Some(Codec::Pcmu)), (8, Some(Codec::Pcma)), (18, None), (127, None)]);
        assert_eq!(r.dtmf_pt, Some(127));
        assert_eq!(r.direction, Direction::SendRecv, "session-level a=sendrecv");
    }

    #[test]
    fn hold_offers_rfc3264_8_4() {
        let r = parse(HOLD_SENDONLY).unwrap();
        assert_eq!(r.direction, Direction::SendOnly);
        assert_eq!(r.direction.reverse(), Direction::RecvOnly);
        assert!(r.is_hold());
        assert_eq!(r.addr, "10.0.0.5:2222".parse().unwrap(), "media-level c=");
        let r = parse(HOLD_ZERO).unwrap();
        assert!(r.addr.ip().is_unspecified());
        assert_eq!(r.direction, Direction::SendOnly, "c=0.0.0.0 means do not send to me");
        assert!(r.is_hold());
        let r = parse(IPV6_LF).unwrap();
        assert_eq!(r.addr, "[::1]:5000".parse().unwrap());
        assert_eq!(r.direction, Direction::Inactive);
        assert!(r.is_hold());
    }

    #[test]
    fn cisco_skips_rejected_t38_and_uses_media_level_c() {
        let r = parse(CISCO).unwrap();
        assert_eq!(r.addr, "10.1.1.2:18000".parse().unwrap());
        assert_eq!(choose_codec(&r, &[Codec::Pcmu, Codec::Pcma]), Some(Codec::Pcma));
        let r = parse(PJSIP).unwrap();
        assert_eq!(r.addr, "192.168.0.3:4000".parse().unwrap());
        assert_eq!(r.dtmf_pt, Some(101));
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(parse(PORT0), Err(SdpError::NoAudio), "port 0 = rejected stream (RFC 3264 §5.1)");
        let no_c = SIPP.replace("c=IN IP4 127.0.0.1\r\n", "");
        assert_eq!(parse(&no_c), Err(SdpError::NoAddress));
        let g729 = SIPP.replace("RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/AVP 18\r\na=rtpmap:18 G729/8000");
        assert_eq!(parse(&g729), Err(SdpError::NoCommonCodec));
        let video = SIPP.replace("m=audio", "m=video");
        assert_eq!(parse(&video), Err(SdpError::NoAudio));
        assert!(matches!(parse("hello"), Err(SdpError::Malformed { .. })));
        assert!(matches!(parse_sdp(&[0xFF, 0xFE, 0x00]), Err(SdpError::Malformed { .. })));
        let no_t = SIPP.replace("t=0 0\r\n", "");
        assert!(matches!(parse(&no_t), Err(SdpError::Malformed { .. })));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 0xC0FF_EE11;
        for sample in [SIPP, BARESIP, LINPHONE, POLYCOM, CISCO, PJSIP] {
            let b = sample.as_bytes();
            for cut in 0..b.len() {
                let _ = parse_sdp(&b[..cut]);
            }
            for _ in 0..300 {
                let mut m = b.to_vec();
                for _ in 0..4 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let i = x as usize % m.len();
                    let alphabet = b"0123456789 :/=\r\naAcmIP.-";
                    m[i] = alphabet[(x >> 8) as usize % alphabet.len()];
                }
                let _ = parse_sdp(&m);
            }
        }
    }

    fn local() -> LocalSdp {
        LocalSdp { session_id: 42, version: 7, ip: "192.0.2.10".parse().unwrap(), port: 20_000 }
    }

    #[test]
    fn answer_has_one_codec_dtmf_and_reversed_direction() {
        let remote = parse(HOLD_SENDONLY).unwrap();
        let body = build_answer(&local(), Codec::Pcmu, Some(101), remote.direction.reverse());
        let text = std::str::from_utf8(&body).unwrap();
        for line in [
            "v=0\r\n",
            "o=parkd 42 7 IN IP4 192.0.2.10\r\n",
            "c=IN IP4 192.0.2.10\r\n",
            "t=0 0\r\n",
            "m=audio 20000 RTP/AVP 0 101\r\n",
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:101 telephone-event/8000\r\n",
            "a=fmtp:101 0-16\r\n",
            "a=ptime:20\r\n",
            "a=recvonly\r\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.starts_with("v=0\r\n"));
        // What we write, we (and webrtc-sdp) can read.
        let back = parse_sdp(&body).unwrap();
        assert_eq!(back.addr, "192.0.2.10:20000".parse().unwrap());
        assert_eq!(back.codecs, vec![(0, Some(Codec::Pcmu)), (101, None)]);
        assert_eq!((back.dtmf_pt, back.direction), (Some(101), Direction::RecvOnly));
    }

    #[test]
    fn rtcp_mux_is_read_and_answered_rfc5761() {
        assert!(!parse(BARESIP).unwrap().rtcp_mux && !parse(PJSIP).unwrap().rtcp_mux, "a=rtcp:PORT is not mux");
        let muxed = format!("{SIPP}a=rtcp-mux\r\n");
        assert!(parse(&muxed).unwrap().rtcp_mux);
        let only = format!("{SIPP}a=rtcp-mux-only\r\na=rtcp-mux\r\n");
        assert!(parse(&only).unwrap().rtcp_mux, "RFC 8858");
        let body = with_rtcp_mux(&build_answer(&local(), Codec::Pcmu, None, Direction::SendRecv));
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.ends_with("a=sendrecv\r\na=rtcp-mux\r\n"), "{text}");
        assert!(parse(text).unwrap().rtcp_mux);
    }

    #[test]
    fn rtcp_port_is_read_rfc3605_and_written() {
        let pjsip = parse(PJSIP).unwrap();
        let implicit = parse(SIPP).unwrap();
        assert_eq!(implicit.rtcp_port, None);
        assert_eq!(implicit.rtcp_peer_port(), implicit.addr.port() + 1, "RFC 3550 §11: RTP port + 1");
        let explicit = parse(&format!("{SIPP}a=rtcp:7001 IN IP4 10.0.0.9\r\n")).unwrap();
        assert_eq!((explicit.rtcp_port, explicit.rtcp_peer_port()), (Some(7001), 7001));
        assert_eq!((pjsip.rtcp_port, pjsip.rtcp_mux), (Some(4001), false));
        let body = build_answer(&local(), Codec::Pcmu, None, Direction::SendRecv);
        let answer = with_rtcp(&body, 30_001, true, false);
        let text = std::str::from_utf8(&answer).unwrap();
        assert!(text.ends_with("a=sendrecv\r\na=rtcp:30001\r\n"), "{text}");
        assert_eq!(parse(text).unwrap().rtcp_port, Some(30_001));
        let offer = with_rtcp(&body, 30_001, true, true);
        let offer = parse(std::str::from_utf8(&offer).unwrap()).unwrap();
        assert!(offer.rtcp_mux && offer.rtcp_port == Some(30_001));
        assert_eq!(&with_rtcp(&body, 0, true, false)[..], &body[..], "no RTCP port: nothing");
    }

    #[test]
    fn offer_lists_codecs_in_order_ipv6() {
        let l = LocalSdp { ip: "2001:db8::5".parse().unwrap(), ..local() };
        let body = build_offer(&l, &[Codec::Pcma, Codec::Pcmu], None, Direction::SendRecv);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains("c=IN IP6 2001:db8::5\r\n"), "{text}");
        assert!(text.contains("m=audio 20000 RTP/AVP 8 0\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"), "{text}");
        assert!(text.contains("a=sendrecv\r\n") && !text.contains("telephone-event"));
        let back = parse_sdp(&body).unwrap();
        assert_eq!(choose_codec(&back, &[Codec::Pcmu, Codec::Pcma]), Some(Codec::Pcma));
    }
}
