//! Which certificate authorities the job trusts: Mozilla's list (compiled in), the job
//! executor's system store, and the certificates of the CA Certificate param, all at once.
//!
//! The system store is what OpenSSL on that machine would use: the file in `SSL_CERT_FILE`
//! and the folder in `SSL_CERT_DIR` when either is set, else the distribution's CA bundle
//! (found the way OpenSSL finds it; read by rustls-native-certs, no OpenSSL linked). An
//! on-prem server behind an internal CA is trusted once that CA is in the bundle, or in the
//! param.

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// The certificates of the CA Certificate param, checked; empty when the param is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CaCertificates(Arc<Vec<CertificateDer<'static>>>);

impl fmt::Debug for CaCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaCertificates({})", self.0.len())
    }
}

impl CaCertificates {
    /// Reads PEM text holding one or more certificates. Line breaks may have become spaces or
    /// vanished (a one-line text field); anything but CERTIFICATE blocks is refused, a private
    /// key above all. The message says what is wrong without the label (the caller adds it).
    pub fn parse(text: &str) -> Result<CaCertificates, String> {
        const BEGIN: &str = "-----BEGIN ";
        let mut certs = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start + BEGIN.len()..];
            let Some(label_end) = after.find("-----") else {
                return Err("holds a damaged -----BEGIN line".into());
            };
            let label = after[..label_end].trim();
            if label.contains("PRIVATE KEY") {
                return Err(
                    "holds a private key: paste only certificates (and keep keys secret)".into(),
                );
            }
            let n = certs.len() + 1;
            if label != "CERTIFICATE" {
                return Err(format!(
                    "block {n} is a {label}, not a CERTIFICATE: paste only certificates"
                ));
            }
            let body = &after[label_end + 5..];
            let end_marker = "-----END CERTIFICATE-----";
            let Some(end) = body.find(end_marker) else {
                return Err(format!("certificate {n} has no {end_marker} line"));
            };
            let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| format!("certificate {n} is damaged (its text is not base64)"))?;
            let der = CertificateDer::from(der);
            if webpki::anchor_from_trusted_cert(&der).is_err() {
                return Err(format!("certificate {n} is not an X.509 certificate"));
            }
            certs.push(der);
            rest = &body[end + end_marker.len()..];
        }
        if certs.is_empty() {
            return Err(
                "holds no certificate: paste the PEM text, from -----BEGIN CERTIFICATE----- \
                 to -----END CERTIFICATE-----"
                    .into(),
            );
        }
        Ok(CaCertificates(Arc::new(certs)))
    }

    /// How many certificates the param holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the param is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The executor's system store, read once per process; a file that cannot be read costs a
/// warning, not the run (Mozilla's list and the param still apply).
fn system_store() -> &'static [CertificateDer<'static>] {
    static STORE: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    STORE.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::warn!("system CA store: {e}");
        }
        log::debug!(
            "system CA store: {} certificate(s) (SSL_CERT_FILE / SSL_CERT_DIR or the system bundle)",
            found.certs.len()
        );
        found.certs
    })
}

/// Every trust anchor for one side: Mozilla's list, the system store and the param's
/// certificates. Certificates rustls cannot use as an anchor are skipped when the agent is
/// built (a system bundle may hold a few).
pub fn root_certs(extra: &CaCertificates) -> ureq::tls::RootCerts {
    let mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()));
    let system = system_store()
        .iter()
        .chain(extra.0.iter())
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned());
    mozilla.chain(system).collect::<Vec<_>>().into()
}

/// Keeps the certificate a server presents and refuses it, so a handshake ends right there.
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<CertificateDer<'static>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.clone().into_owned());
        }
        Err(CertificateError::UnknownIssuer.into())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(CertificateError::UnknownIssuer.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Whether the server at `url` presents a certificate that signs itself: one more handshake,
/// ended as soon as the certificate arrives (no request is sent), so that an unknown issuer
/// can be told apart from a self-signed certificate. False when that cannot be told.
pub(super) fn signs_itself(url: &str, timeout: Duration) -> bool {
    let look = || -> Option<bool> {
        let uri = url.parse::<ureq::http::Uri>().ok()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.to_string()).ok()?;
        let addr = (host, port).to_socket_addrs().ok()?.next()?;
        let mut tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
        tcp.set_read_timeout(Some(timeout)).ok()?;
        tcp.set_write_timeout(Some(timeout)).ok()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let recorder = Arc::new(Recorder {
            seen: Mutex::new(None),
            schemes: provider
                .signature_verification_algorithms
                .supported_schemes(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
        // Ends in the recorder's refusal, by design.
        let _ = conn.complete_io(&mut tcp);
        let der = recorder.seen.lock().ok()?.take()?;
        let cert = webpki::EndEntityCert::try_from(&der).ok()?;
        Some(cert.issuer() == cert.subject())
    };
    look().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real certificate (Mozilla's first root), as PEM text with lines of 64.
    fn pem() -> String {
        let der = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn pem_is_read_also_when_line_breaks_became_spaces_or_vanished() {
        let one = pem();
        assert_eq!(CaCertificates::parse(&one).unwrap().len(), 1);
        let two = format!("subject=CN x\n{one}\r\n{one}");
        assert_eq!(CaCertificates::parse(&two).unwrap().len(), 2);
        let spaced = one.replace('\n', " ");
        assert_eq!(
            CaCertificates::parse(&spaced).unwrap(),
            CaCertificates::parse(&one).unwrap()
        );
        let joined = one.replace('\n', "");
        assert_eq!(CaCertificates::parse(&joined).unwrap().len(), 1);
    }

    #[test]
    fn what_is_not_a_certificate_is_refused_with_the_reason() {
        let err = |t: &str| CaCertificates::parse(t).unwrap_err();
        assert!(err("").starts_with("holds no certificate"));
        assert!(err("MIIB...").starts_with("holds no certificate"));
        let key =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----";
        let e = err(&format!("{}{key}", pem()));
        assert!(e.starts_with("holds a private key"), "{e}");
        assert!(!e.contains("MC4CAQ"), "{e}");
        assert!(err("-----BEGIN RSA PRIVATE KEY-----").starts_with("holds a private key"));
        assert_eq!(
            err("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"),
            "block 1 is a CERTIFICATE REQUEST, not a CERTIFICATE: paste only certificates"
        );
        let cut = pem().replace("-----END CERTIFICATE-----", "");
        assert_eq!(
            err(&cut),
            "certificate 1 has no -----END CERTIFICATE----- line"
        );
        let second_bad = format!(
            "{}-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----",
            pem()
        );
        assert_eq!(
            err(&second_bad),
            "certificate 2 is damaged (its text is not base64)"
        );
        assert_eq!(
            err("-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----"),
            "certificate 1 is not an X.509 certificate"
        );
    }

    #[test]
    fn the_roots_hold_mozilla_the_system_store_and_the_param() {
        let base = match root_certs(&CaCertificates::default()) {
            ureq::tls::RootCerts::Specific(c) => c.len(),
            _ => panic!("specific roots expected"),
        };
        assert!(base >= webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        let extra = CaCertificates::parse(&format!("{}{}", pem(), pem())).unwrap();
        match root_certs(&extra) {
            ureq::tls::RootCerts::Specific(c) => assert_eq!(c.len(), base + 2),
            _ => panic!("specific roots expected"),
        }
    }
}
