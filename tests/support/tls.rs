//! TLS for the tests: certificates made at test time with rcgen (a private CA, the servers it
//! signs, self-signed ones), and a TLS front that puts a plain-HTTP simulator behind HTTPS.
//!
//! Every certificate gets a name of its own: a machine's system store may hold a certificate
//! named `localhost` (this one's does), and a test certificate issued under that name would be
//! checked against it (a bad signature) instead of being of unknown issuer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// A name no other certificate on the machine has.
fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!(
        "tanium-tr-indicators test {what} {}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn params(names: &[&str], common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("certificate names");
    p.distinguished_name.push(DnType::CommonName, common_name);
    p
}

/// A server's certificate (with its chain) and key.
pub struct ServerCert {
    /// The server's certificate first, then what it sends with it.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// The server's own certificate as PEM text.
    pub pem: String,
}

fn server_cert(cert: rcgen::Certificate, key: &KeyPair) -> ServerCert {
    ServerCert {
        pem: cert.pem(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A private certificate authority, as an internal PKI has.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA with a name of its own.
    pub fn new() -> Ca {
        let mut p = params(&[], &unique("CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        Ca { issuer }
    }

    /// The CA's certificate as PEM text: what an admin pastes into CA Certificate.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (host names or IP addresses) signed by this CA.
    pub fn server(&self, names: &[&str]) -> ServerCert {
        self.server_valid(names, None)
    }

    /// [`Ca::server`], valid only from..until when given.
    pub fn server_valid(
        &self,
        names: &[&str],
        validity: Option<(OffsetDateTime, OffsetDateTime)>,
    ) -> ServerCert {
        let mut p = params(names, &unique("server"));
        if let Some((from, until)) = validity {
            p.not_before = from;
            p.not_after = until;
        }
        let key = KeyPair::generate().expect("server key");
        let cert = p.signed_by(&key, &self.issuer).expect("server certificate");
        let mut s = server_cert(cert, &key);
        s.chain.push(self.issuer.der().clone());
        s
    }
}

/// A certificate for `names` that signs itself; `as_ca` makes it a CA certificate as well (what
/// `openssl req -x509` makes by default).
pub fn self_signed(names: &[&str], as_ca: bool) -> ServerCert {
    let mut p = params(names, &unique("self-signed"));
    if as_ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed certificate");
    server_cert(cert, &key)
}

/// The rustls server config for `cert`.
pub fn server_config(cert: &ServerCert) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(cert.chain.clone(), cert.key.clone_key())
            .expect("server config"),
    )
}

/// HTTPS on 127.0.0.1 in front of a plain-HTTP server (a simulator): each connection's TLS is
/// ended here and its bytes copied to and from its own connection to `upstream`.
pub struct TlsFront {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    connections: Arc<AtomicU64>,
    handshakes: Arc<AtomicU64>,
}

impl TlsFront {
    /// Serves `cert` in front of `upstream`; lives until the test process ends.
    pub fn start(cert: &ServerCert, upstream: SocketAddr) -> TlsFront {
        let config = server_config(cert);
        let listener = TcpListener::bind("127.0.0.1:0").expect("front binds");
        let url = format!("https://{}", listener.local_addr().expect("front address"));
        let connections = Arc::new(AtomicU64::new(0));
        let handshakes = Arc::new(AtomicU64::new(0));
        let (c, h) = (connections.clone(), handshakes.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let (config, h) = (config.clone(), h.clone());
                std::thread::spawn(move || {
                    let _ = pump(tcp, config, upstream, &h);
                });
            }
        });
        TlsFront {
            url,
            connections,
            handshakes,
        }
    }

    /// `127.0.0.1:<port>`, as messages name it.
    pub fn host(&self) -> &str {
        self.url.trim_start_matches("https://")
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Handshakes the client completed (it trusted the certificate).
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::SeqCst)
    }
}

fn idle(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Copies both ways, polling each side with a short read timeout (a rustls stream is one
/// object, so it cannot be split between two threads); ends when either side closes, at the
/// latest after a minute.
fn pump(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    upstream: SocketAddr,
    handshakes: &AtomicU64,
) -> std::io::Result<()> {
    let poll = Some(Duration::from_millis(2));
    tcp.set_read_timeout(poll)?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(poll)?;
    let mut counted = false;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => up.write_all(&buf[..n])?,
            Err(e) if idle(&e) => {}
            Err(e) => return Err(e),
        }
        if !counted && !tls.conn.is_handshaking() {
            counted = true;
            handshakes.fetch_add(1, Ordering::SeqCst);
        }
        match up.read(&mut buf) {
            Ok(0) => {
                tls.conn.send_close_notify();
                return tls.flush();
            }
            Ok(n) => {
                tls.write_all(&buf[..n])?;
                tls.flush()?;
            }
            Err(e) if idle(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
