//! SIP over TLS (issue 19): the listener's handshakes, outbound TLS connections, certificate reload ([`TlsIo::reload`], run by SIGHUP with the configuration reload, `super::reload`),
//! and the connection reuse of RFC 5923 style.
//!
//! A TLS connection is a TCP connection first: it is admitted within the same caps ([`TcpContext::admit`], TCP
//! and TLS counted together), its handshake must be done within [`HANDSHAKE_TIMEOUT`] (or the first-message
//! timeout when shorter), else it is dropped and counted (`tls_handshake_timeout`; a failed handshake counts as
//! `tls_handshake`). The decrypted stream then runs the TCP connection task ([`tcp::serve`]): one framer,
//! the same limits, pings and timeouts.
//!
//! rustls on the ring provider; no OpenSSL. Outbound connections verify the server's certificate against
//! `tls_ca` when set, else the system's roots, for the IP address the target names (parkd dials IP literals).

use super::conn_limits::{Refusal, WRITE_TIMEOUT};
use super::tcp::{self, ConnId, TcpContext, TcpEvent};
use crate::config::{CertSource, TlsSettings};
use crate::sip::{Peer, Transport};
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a TLS handshake may take before the connection is dropped (and counted).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Pem { what: &'static str, path: std::path::PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{what} {path} holds no certificate")]
    NoCert { what: &'static str, path: std::path::PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls_ca: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("cannot bind the SIP TLS listener on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The ring provider (as for rediss://): aws-lc-rs would need cmake and nasm to build. rustls 0.23.48 marks it
/// deprecated because it lacks post-quantum key exchange; classical X25519/P-256 remain.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn certs(what: &'static str, path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem { what, path: path.to_path_buf(), source };
    let certs = CertificateDer::pem_file_iter(path).map_err(pem)?.collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert { what, path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The listener's identity: the PEM files, or a fresh self-signed certificate.
fn identity(settings: &TlsSettings) -> Result<Identity, TlsError> {
    match &settings.cert {
        CertSource::Files { cert, key } => {
            let chain = certs("tls_cert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem { what: "tls_key", path: key.clone(), source })?;
            Ok(Identity { chain, key })
        }
        CertSource::SelfSigned => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
            if !settings.listen.ip().is_unspecified() {
                names.push(settings.listen.ip().to_string());
            }
            let made = rcgen::generate_simple_self_signed(names)?;
            let key = PrivateKeyDer::try_from(made.key_pair.serialize_der()).map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            tracing::warn!(
                "TLS: --tls-self-signed: using a THROW-AWAY SELF-SIGNED certificate made at startup. FOR DEVELOPMENT ONLY: no phone can \
                 verify it, and it changes at every start. Use tls_cert/tls_key in production."
            );
            Ok(Identity { chain: vec![made.cert.der().clone()], key })
        }
    }
}

fn ca_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs("tls_ca", path)?);
    if added == 0 {
        return Err(TlsError::NoCert { what: "tls_ca", path: path.to_path_buf() });
    }
    Ok(roots)
}

/// The server side: parkd's identity, client certificates required with `tls_ca`.
fn server_config(settings: &TlsSettings, id: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &settings.ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(ca_roots(ca)?), provider()).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(id.chain.clone(), id.key.clone_key())?))
}

/// The client side: the server verified against `tls_ca` or the system's roots; parkd presents its own
/// certificate when the server asks (a PBX requiring mutual TLS).
fn client_config(settings: &TlsSettings, id: &Identity) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match &settings.ca {
        Some(ca) => ca_roots(ca)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "TLS: a system root certificate could not be loaded");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, "TLS: system roots for outbound connections");
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?.with_root_certificates(roots);
    Ok(Arc::new(builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?))
}

/// SIP over TLS as the io layer holds it: the configurations new handshakes use (swapped on reload).
#[derive(Clone)]
pub struct TlsIo {
    settings: Arc<TlsSettings>,
    server: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    client: Arc<RwLock<Arc<rustls::ClientConfig>>>,
}

impl TlsIo {
    /// Reads the certificate, key and CA (or makes a self-signed certificate).
    pub fn load(settings: &TlsSettings) -> Result<TlsIo, TlsError> {
        let id = identity(settings)?;
        let (server, client) = (server_config(settings, &id)?, client_config(settings, &id)?);
        Ok(TlsIo { settings: Arc::new(settings.clone()), server: Arc::new(RwLock::new(server)), client: Arc::new(RwLock::new(client)) })
    }

    /// Reads the files again; new handshakes use them, open connections keep theirs. On an error the old
    /// configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        if self.settings.cert == CertSource::SelfSigned {
            tracing::info!("TLS: --tls-self-signed: nothing to reload");
            return Ok(());
        }
        let id = identity(&self.settings)?;
        let (server, client) = (server_config(&self.settings, &id)?, client_config(&self.settings, &id)?);
        if let Ok(mut s) = self.server.write() {
            *s = server;
        }
        if let Ok(mut c) = self.client.write() {
            *c = client;
        }
        Ok(())
    }

    fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.server.read().ok().map(|c| tokio_rustls::TlsAcceptor::from(c.clone()))
    }

    fn connector(&self) -> Option<tokio_rustls::TlsConnector> {
        self.client.read().ok().map(|c| tokio_rustls::TlsConnector::from(c.clone()))
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.settings.ca.is_some()
    }
}

/// Binds the TLS listener and loads its certificate.
pub async fn bind(settings: &TlsSettings) -> Result<(TcpListener, TlsIo), TlsError> {
    let tls = TlsIo::load(settings)?;
    let addr = settings.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| TlsError::Bind { addr, source })?;
    Ok((listener, tls))
}

/// How long this listener's handshakes may take: [`HANDSHAKE_TIMEOUT`], or the first-message timeout when shorter.
fn handshake_bound(ctx: &TcpContext) -> Duration {
    ctx.limits.first_message_timeout.map_or(HANDSHAKE_TIMEOUT, |t| t.min(HANDSHAKE_TIMEOUT))
}

pub async fn accept_loop(listener: TcpListener, ctx: TcpContext, tls: TlsIo) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let addr = super::dual_stack::canonical(addr);
                let Some(slot) = ctx.admit(&stream, addr) else { continue };
                let _ = stream.set_nodelay(true);
                let Some(acceptor) = tls.acceptor() else { continue };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let bound = handshake_bound(&ctx);
                    let stream = match tokio::time::timeout(bound, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                            return ctx.refuse(Refusal::TlsHandshake, addr.ip());
                        }
                        Err(_) => return ctx.refuse(Refusal::TlsHandshakeTimeout, addr.ip()),
                    };
                    let peer = Peer { transport: Transport::Tls, addr };
                    let conn = ConnId::next();
                    let (w, r) = tcp::outbound_queue();
                    if ctx.events.send(TcpEvent::Opened { peer, conn, writer: w }).await.is_ok() {
                        tcp::serve(stream, peer, conn, r, ctx, Some(slot)).await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens a TLS connection to `addr` (the server's certificate must name its IP address), then serves it like
/// an accepted one.
pub async fn connect(addr: SocketAddr, conn: ConnId, outbound: mpsc::Receiver<Bytes>, ctx: TcpContext, tls: TlsIo) {
    let peer = Peer { transport: Transport::Tls, addr };
    let open = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let connector = tls.connector().ok_or("no TLS client configuration")?;
        connector.connect(ServerName::IpAddress(addr.ip().into()), stream).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, open).await {
        Ok(Ok(stream)) => tcp::serve(stream, peer, conn, outbound, ctx, None).await,
        Ok(Err(e)) => {
            tracing::warn!(peer = %addr, error = %e, "TLS connect failed");
            let _ = ctx.events.send(TcpEvent::Closed { peer, conn, last_words: None }).await;
        }
        Err(_) => {
            tracing::warn!(peer = %addr, "TLS connect timed out");
            let _ = ctx.events.send(TcpEvent::Closed { peer, conn, last_words: None }).await;
        }
    }
}

/// Connection reuse (RFC 5923 style): the address a TLS peer's top Via names (its sent-by, e.g. the phone's
/// own port in its Contact) maps to the connection it opened, so a request parkd sends to that address (a
/// recall) goes over that connection instead of a new one. Only a sent-by on the connection's own IP counts.
#[derive(Debug, Default)]
pub struct Aliases {
    /// Sent-by address → the connection's peer address.
    to_conn: HashMap<SocketAddr, SocketAddr>,
    /// Connection's peer address → its sent-by (one per connection: the map is bounded by the connections).
    of_conn: HashMap<SocketAddr, SocketAddr>,
}

impl Aliases {
    /// A message came on the TLS connection from `conn`: remember its request's sent-by.
    pub fn learn(&mut self, conn: SocketAddr, message: &[u8]) {
        let Some(alias) = top_via_sent_by(message) else { return };
        if alias == conn || alias.ip().to_canonical() != conn.ip().to_canonical() {
            return;
        }
        if let Some(old) = self.of_conn.insert(conn, alias) {
            if old != alias && self.to_conn.get(&old) == Some(&conn) {
                self.to_conn.remove(&old);
            }
        }
        self.to_conn.insert(alias, conn);
    }

    /// The connection to use for `addr`, when one was opened under that alias.
    pub fn resolve(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.to_conn.get(&addr).copied()
    }

    /// The connection from `conn` closed.
    pub fn forget(&mut self, conn: SocketAddr) {
        if let Some(alias) = self.of_conn.remove(&conn) {
            if self.to_conn.get(&alias) == Some(&conn) {
                self.to_conn.remove(&alias);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.to_conn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.to_conn.is_empty()
    }
}

/// The sent-by of a request's top Via as an IP address and port (5061 when absent); `None` for a response or
/// a Via naming a host name.
fn top_via_sent_by(message: &[u8]) -> Option<SocketAddr> {
    let head_end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(message.len());
    let head = std::str::from_utf8(message.get(..head_end)?).ok()?;
    let mut lines = head.split("\r\n");
    if lines.next()?.starts_with("SIP/") {
        return None;
    }
    let value = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("via") || name.eq_ignore_ascii_case("v")).then_some(value)
    })?;
    let first = value.split(',').next()?;
    let via = crate::sip::via::parse_via(first).ok()?;
    let ip: std::net::IpAddr = via.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, via.port.unwrap_or(crate::config::DEFAULT_TLS_PORT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn request(via: &str) -> Vec<u8> {
        format!("OPTIONS sip:700@127.0.0.1 SIP/2.0\r\nv: {via}\r\nVia: SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bK2\r\nCSeq: 1 OPTIONS\r\n\r\n").into_bytes()
    }

    #[test]
    fn the_top_via_sent_by_of_a_request() {
        assert_eq!(top_via_sent_by(&request("SIP/2.0/TLS 127.0.0.1:5071;branch=z9hG4bK1;alias")), Some(addr("127.0.0.1:5071")));
        assert_eq!(top_via_sent_by(&request("SIP/2.0/TLS [::1];branch=z9hG4bK1, SIP/2.0/TLS 10.0.0.1:5099")), Some(addr("[::1]:5061")));
        assert_eq!(top_via_sent_by(&request("SIP/2.0/TLS phone.example.com:5061;branch=z9hG4bK1")), None, "a host name names no address");
        assert_eq!(top_via_sent_by(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:5071;branch=z9hG4bK1\r\n\r\n"), None, "responses teach nothing");
        assert_eq!(top_via_sent_by(b"\xff\xfe garbage"), None);
    }

    #[test]
    fn aliases_map_a_sent_by_to_the_connection_and_are_forgotten_with_it() {
        let mut a = Aliases::default();
        let conn = addr("127.0.0.1:40000");
        a.learn(conn, &request("SIP/2.0/TLS 127.0.0.1:5071;branch=z9hG4bK1"));
        assert_eq!(a.resolve(addr("127.0.0.1:5071")), Some(conn));
        a.learn(addr("127.0.0.1:40001"), &request("SIP/2.0/TLS 192.0.2.1:5071;branch=z9hG4bK1"));
        assert_eq!(a.resolve(addr("192.0.2.1:5071")), None, "a sent-by on another IP is no alias");
        a.learn(conn, &request("SIP/2.0/TLS 127.0.0.1:5072;branch=z9hG4bK1"));
        assert_eq!((a.resolve(addr("127.0.0.1:5071")), a.len()), (None, 1), "one alias per connection");
        a.forget(conn);
        assert!(a.is_empty());
    }

    fn pem_pair(dir: &std::path::Path, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let made = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("parkd-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_pem_files_reloads_and_refuses_bad_ones() {
        let dir = tmp("load");
        let (cert, key) = pem_pair(&dir, &["127.0.0.1"]);
        let settings = TlsSettings { listen: addr("127.0.0.1:0"), cert: CertSource::Files { cert: cert.clone(), key: key.clone() }, ca: None };
        let tls = TlsIo::load(&settings).unwrap();
        assert!(!tls.mutual());
        let before = tls.server.read().unwrap().clone();
        pem_pair(&dir, &["127.0.0.1"]);
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.server.read().unwrap()), "new handshakes get the new configuration");
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::NoCert { .. })), "a bad file keeps the old certificate");
        let with_ca = TlsSettings { ca: Some(dir.join("missing.pem")), ..settings };
        assert!(TlsIo::load(&with_ca).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn self_signed_needs_no_files() {
        let settings = TlsSettings { listen: addr("127.0.0.1:0"), cert: CertSource::SelfSigned, ca: None };
        let tls = TlsIo::load(&settings).unwrap();
        tls.reload().unwrap();
    }
}
