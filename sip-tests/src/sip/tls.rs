//! SIP over TLS for the e2e tests: a test PKI made with rcgen ([`TestPki`]: a CA, parkd's server certificate
//! for 127.0.0.1, client certificates), a blocking rustls client connection that frames SIP like
//! [`SipTcp`](super::tcp::SipTcp) ([`SipTls`]), a TLS server for parkd's outbound connections
//! ([`TlsServer`]), and [`TlsPhone`]: the requests and answers of one phone over one TLS connection.

use crate::sip::sipp::header;
use crate::sip::tcp::message_len;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(deprecated)] // rustls 0.23.48: ring lacks post-quantum key exchange; parkd uses ring too.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, for rustls.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

/// A test CA and what it issued, as PEM files in `dir` (for parkd's flags) and DER (for the clients).
pub struct TestPki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    /// `ca.pem`: the CA certificate.
    pub ca_pem: PathBuf,
    /// `cert.pem` / `key.pem`: parkd's certificate for 127.0.0.1 and its key.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl TestPki {
    /// A fresh CA named `name` and a server certificate for 127.0.0.1 / localhost, written to `dir`.
    pub fn new(dir: &Path, name: &str) -> TestPki {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let pki = TestPki { dir: dir.to_path_buf(), ca_pem: dir.join("ca.pem"), cert_pem: dir.join("cert.pem"), key_pem: dir.join("key.pem"), ca, ca_key };
        std::fs::write(&pki.ca_pem, pki.ca.pem()).expect("write ca.pem");
        pki.write_server_cert();
        pki
    }

    /// (Re)writes `cert.pem` / `key.pem`: a new server certificate for 127.0.0.1 issued by this CA.
    pub fn write_server_cert(&self) {
        let (cert, key) = self.issue("parkd", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(&self.cert_pem, cert.pem()).expect("write cert.pem");
        std::fs::write(&self.key_pem, key.serialize_pem()).expect("write key.pem");
    }

    fn issue(&self, cn: &str, usage: rcgen::ExtendedKeyUsagePurpose) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).expect("sign");
        (cert, key)
    }

    /// A client certificate issued by this CA.
    pub fn client_identity(&self, cn: &str) -> Identity {
        let (cert, key) = self.issue(cn, rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        Identity { chain: vec![cert.der().clone()], key: PrivateKeyDer::try_from(key.serialize_der()).expect("key DER") }
    }

    /// A server certificate for 127.0.0.1 issued by this CA (a phone that listens for TLS).
    pub fn server_identity(&self, cn: &str) -> Identity {
        let (cert, key) = self.issue(cn, rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        Identity { chain: vec![cert.der().clone()], key: PrivateKeyDer::try_from(key.serialize_der()).expect("key DER") }
    }

    /// A client configuration trusting this CA only, presenting `identity` when given.
    pub fn client_config(&self, identity: Option<Identity>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        let b = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().expect("versions").with_root_certificates(roots);
        Arc::new(match identity {
            Some(id) => b.with_client_auth_cert(id.chain, id.key).expect("client cert"),
            None => b.with_no_client_auth(),
        })
    }

    /// parkd's flags for TLS on `listen` with this CA's server certificate; `mutual`: `--tls-ca` too.
    pub fn parkd_args(&self, listen: SocketAddr, mutual: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-listen".to_string(),
            listen.to_string(),
            "--tls-cert".into(),
            self.cert_pem.display().to_string(),
            "--tls-key".into(),
            self.key_pem.display().to_string(),
        ];
        if mutual {
            args.extend(["--tls-ca".to_string(), self.ca_pem.display().to_string()]);
        }
        args
    }
}

/// A free TCP port of 127.0.0.1 for parkd's TLS listener (bound and released; the ephemeral range, which
/// the tests' port blocks stay below).
pub fn free_tls_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr")
}

/// One TLS connection carrying SIP (blocking, with read timeouts).
pub struct SipTls {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    pending: Vec<u8>,
    closed: bool,
}

impl SipTls {
    /// Connects and completes the handshake (verifying parkd's certificate for 127.0.0.1).
    pub fn connect(target: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<SipTls> {
        let tcp = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
        let name = ServerName::IpAddress(target.ip().into());
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(SipTls { stream, pending: Vec::new(), closed: false })
    }

    /// From an accepted server-side stream (see [`TlsServer`]).
    fn local_addr_of(&self) -> SocketAddr {
        self.stream.sock.local_addr().expect("local_addr")
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr_of()
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The next whole SIP message (leading CRLFs skipped), or `None` when the connection closed or nothing
    /// complete came within `wait`.
    pub fn read_message(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let skip = self.pending.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            self.pending.drain(..skip);
            if let Some(len) = message_len(&self.pending) {
                let msg: Vec<u8> = self.pending.drain(..len).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.closed || left.is_zero() || !self.fill(left) {
                return None;
            }
        }
    }

    /// Whether parkd closed the connection (or it failed) within `wait`, with nothing readable before.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.fill(left);
        }
        true
    }

    fn fill(&mut self, wait: Duration) -> bool {
        let _ = self.stream.sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => false,
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }
}

/// A TLS server on 127.0.0.1 (a phone that listens for parkd's outbound TLS), serving one connection.
pub struct TlsServer {
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
}

/// The server side of one accepted TLS connection.
pub struct TlsServerConn {
    stream: rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
    pending: Vec<u8>,
}

impl TlsServer {
    pub fn bind(identity: Identity) -> TlsServer {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .expect("server cert");
        TlsServer { listener: TcpListener::bind("127.0.0.1:0").expect("bind"), config: Arc::new(config) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("local_addr")
    }

    /// Accepts one connection within `wait` and completes its handshake.
    pub fn accept(&self, wait: Duration) -> Option<TlsServerConn> {
        self.listener.set_nonblocking(true).ok()?;
        let deadline = Instant::now() + wait;
        let tcp = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        };
        tcp.set_nonblocking(false).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let conn = rustls::ServerConnection::new(self.config.clone()).ok()?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).ok()?;
        }
        Some(TlsServerConn { stream, pending: Vec::new() })
    }
}

impl TlsServerConn {
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn read_message(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let skip = self.pending.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            self.pending.drain(..skip);
            if let Some(len) = message_len(&self.pending) {
                let msg: Vec<u8> = self.pending.drain(..len).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self.stream.sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut buf = [0u8; 16 * 1024];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => return None,
            }
        }
    }
}

/// Something that carries SIP messages both ways (a client or a server TLS connection).
pub trait SipLink {
    fn send_text(&mut self, text: &str);
    fn next_message(&mut self, wait: Duration) -> Option<String>;
}

impl SipLink for SipTls {
    fn send_text(&mut self, text: &str) {
        self.send(text.as_bytes()).unwrap_or_else(|e| panic!("TLS send: {e}"));
    }
    fn next_message(&mut self, wait: Duration) -> Option<String> {
        self.read_message(wait)
    }
}

impl SipLink for TlsServerConn {
    fn send_text(&mut self, text: &str) {
        self.send(text.as_bytes()).unwrap_or_else(|e| panic!("TLS send: {e}"));
    }
    fn next_message(&mut self, wait: Duration) -> Option<String> {
        self.read_message(wait)
    }
}

/// The first line of a message.
pub fn start_line(m: &str) -> &str {
    m.lines().next().unwrap_or_default().trim()
}

/// Reads messages until one satisfies `pred` (panics after `wait`); requests from parkd met on the way that
/// are not wanted (OPTIONS keepalives) are answered 200.
pub fn expect<L: SipLink>(link: &mut L, wait: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = link.next_message(left) else { panic!("{what}: not within {wait:?}; saw:\n{}", seen.join("\n---\n")) };
        if pred(&m) {
            return m;
        }
        if start_line(&m).starts_with("OPTIONS ") {
            link.send_text(&answer(&m, 200, "", ""));
        }
        seen.push(m);
    }
}

/// A response to request `req` (its Via, From, To, Call-ID, CSeq), with `to_tag` added when To has none.
pub fn answer(req: &str, status: u16, to_tag: &str, extra: &str) -> String {
    let mut text = format!("SIP/2.0 {status} {}\r\n", if status == 200 { "OK" } else { "Answer" });
    for line in req.lines().skip(1).take_while(|l| !l.trim().is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if ["via", "v"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            text.push_str(line);
            text.push_str("\r\n");
        }
    }
    let to = header(req, "To").unwrap_or_default();
    let to = if to.contains("tag=") || to_tag.is_empty() { to.to_string() } else { format!("{to};tag={to_tag}") };
    text.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}",
        header(req, "From").unwrap_or_default(),
        header(req, "Call-ID").unwrap_or_default(),
        header(req, "CSeq").unwrap_or_default()
    ));
    if !extra.contains("Content-Length") {
        text.push_str("Content-Length: 0\r\n\r\n");
    }
    text
}

/// A PCMU offer or answer for RTP on 127.0.0.1:`port`.
pub fn sdp(port: u16) -> String {
    format!("v=0\r\no=tls 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
}

/// The RTP port of an SDP body in `m`.
pub fn sdp_port(m: &str) -> Option<u16> {
    m.lines().find_map(|l| l.strip_prefix("m=audio ")).and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok())
}

/// The tag parameter of header `name`.
pub fn tag_of(m: &str, name: &str) -> Option<String> {
    let v = header(m, name)?;
    let i = v.find(";tag=")?;
    Some(v[i + 5..].split([';', ' ', '>']).next().unwrap_or_default().to_string())
}

/// The URI inside `<...>` of header `name`.
pub fn uri_of(m: &str, name: &str) -> Option<String> {
    let v = header(m, name)?;
    let (a, b) = (v.find('<')?, v.find('>')?);
    Some(v.get(a + 1..b)?.to_string())
}

/// One dialog a [`TlsPhone`] started.
#[derive(Clone, Debug)]
pub struct Call {
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    /// The Request-URI of in-dialog requests (parkd's Contact).
    pub target: String,
    pub to: String,
    pub cseq: u32,
}

/// A phone speaking SIP over one TLS connection to parkd, naming `sent_by` in its Via and Contact.
pub struct TlsPhone {
    pub conn: SipTls,
    pub user: String,
    pub sent_by: SocketAddr,
    /// parkd's TLS address.
    pub parkd: SocketAddr,
    /// `sip` or `sips`.
    pub scheme: &'static str,
    n: u32,
}

impl TlsPhone {
    /// A phone on `conn` whose Via/Contact name its own connection's address.
    pub fn new(conn: SipTls, user: &str, parkd: SocketAddr) -> TlsPhone {
        let sent_by = conn.local_addr();
        TlsPhone { conn, user: user.into(), sent_by, parkd, scheme: "sip", n: 0 }
    }

    fn uri(&self, user: &str) -> String {
        match self.scheme {
            "sips" => format!("sips:{user}@{}", self.parkd),
            _ => format!("sip:{user}@{};transport=tls", self.parkd),
        }
    }

    pub fn contact(&self) -> String {
        match self.scheme {
            "sips" => format!("<sips:{}@{}>", self.user, self.sent_by),
            _ => format!("<sip:{}@{};transport=tls>", self.user, self.sent_by),
        }
    }

    fn next(&mut self) -> u32 {
        self.n += 1;
        self.n
    }

    fn request(&mut self, method: &str, ruri: &str, call: &Call, cseq: u32, extra: &str, body: &str) -> String {
        let n = self.next();
        let to_tag = if call.to_tag.is_empty() { String::new() } else { format!(";tag={}", call.to_tag) };
        let ctype = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\r\n".into() };
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS {sb};branch=z9hG4bK-tls-{u}-{n}-{pid}\r\nMax-Forwards: 70\r\n\
             From: <{s}:{u}@{sb}>;tag={ft}\r\nTo: <{to}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: {c}\r\n\
             {extra}{ctype}Content-Length: {len}\r\n\r\n{body}",
            sb = self.sent_by,
            u = self.user,
            pid = std::process::id(),
            s = self.scheme,
            ft = call.from_tag,
            to = call.to,
            cid = call.call_id,
            c = self.contact(),
            len = body.len(),
        )
    }

    /// INVITE `user` (a park code or an orbit) offering RTP on `rtp_port`; waits for the final answer. A 2xx is
    /// ACKed and returns the dialog; otherwise the failure's status line is the error.
    pub fn invite(&mut self, user: &str, rtp_port: u16, extra: &str, wait: Duration) -> Result<(Call, String), String> {
        let to = self.uri(user);
        let n = self.next();
        let mut call = Call { call_id: format!("tls-{}-{n}-{}", self.user, std::process::id()), from_tag: format!("ft{n}"), to_tag: String::new(), target: to.clone(), to, cseq: 1 };
        let text = self.request("INVITE", &call.target.clone(), &call, 1, extra, &sdp(rtp_port));
        self.conn.send_text(&text);
        let ok = expect(&mut self.conn, wait, &format!("final answer to {}'s INVITE {user}", self.user), |m| {
            start_line(m).starts_with("SIP/2.0 ") && !start_line(m).starts_with("SIP/2.0 1") && header(m, "CSeq").is_some_and(|c| c.ends_with("INVITE"))
        });
        if !start_line(&ok).starts_with("SIP/2.0 2") {
            return Err(start_line(&ok).to_string());
        }
        call.to_tag = tag_of(&ok, "To").unwrap_or_default();
        call.target = uri_of(&ok, "Contact").unwrap_or(call.target);
        let ack = self.request("ACK", &call.target.clone(), &call, 1, "", "");
        self.conn.send_text(&ack);
        Ok((call, ok))
    }

    /// BYE in `call`; waits for its 200.
    pub fn bye(&mut self, call: &mut Call, wait: Duration) -> String {
        call.cseq += 1;
        let text = self.request("BYE", &call.target.clone(), call, call.cseq, "", "");
        self.conn.send_text(&text);
        expect(&mut self.conn, wait, "200 to BYE", |m| start_line(m).starts_with("SIP/2.0 200") && header(m, "CSeq").is_some_and(|c| c.ends_with("BYE")))
    }

    /// SUBSCRIBE to `user`'s dialog state (BLF); returns the 200 and the dialog.
    pub fn subscribe(&mut self, user: &str, expires: u32, wait: Duration) -> (Call, String) {
        let to = self.uri(user);
        let n = self.next();
        let mut call = Call { call_id: format!("tls-sub-{}-{n}-{}", self.user, std::process::id()), from_tag: format!("st{n}"), to_tag: String::new(), target: to.clone(), to, cseq: 1 };
        let extra = format!("Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: {expires}\r\n");
        let text = self.request("SUBSCRIBE", &call.target.clone(), &call, 1, &extra, "");
        self.conn.send_text(&text);
        let ok = expect(&mut self.conn, wait, "answer to SUBSCRIBE", |m| header(m, "CSeq").is_some_and(|c| c.ends_with("SUBSCRIBE")) && start_line(m).starts_with("SIP/2.0 "));
        call.to_tag = tag_of(&ok, "To").unwrap_or_default();
        call.target = uri_of(&ok, "Contact").unwrap_or(call.target);
        (call, ok)
    }

    /// OPTIONS to parkd; its answer.
    pub fn options(&mut self, wait: Duration) -> Option<String> {
        let n = self.next();
        let call = Call { call_id: format!("tls-opt-{}-{n}-{}", self.user, std::process::id()), from_tag: format!("o{n}"), to_tag: String::new(), target: String::new(), to: self.uri("700"), cseq: 1 };
        let text = self.request("OPTIONS", &self.uri("700"), &call, 1, "", "");
        self.conn.send(text.as_bytes()).ok()?;
        self.conn.read_message(wait)
    }
}
