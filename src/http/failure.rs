//! Why a request got no answer, read from what ureq reports into a kind an admin can act on:
//! the host has no DNS record, the connection was refused, timed out or closed, the server's
//! certificate was refused (and why), the TLS handshake failed otherwise, the proxy failed.
//! message.tc shows the kind in words and the host, never a library's debug print.

use std::fmt;
use std::io;
use std::time::Duration;

use time::OffsetDateTime;

use crate::service::Service;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The host name has no DNS record (or the resolver failed).
    NotFound,
    /// Nothing accepted the connection (closed port, firewall reject).
    Refused,
    /// No connection (`connecting`) or no whole answer within `after`.
    TimedOut {
        /// The connection itself was not made in time.
        connecting: bool,
        /// The limit that ran out.
        after: Duration,
    },
    /// The connection was reset or closed before a whole answer came.
    Closed(String),
    /// The server's certificate was refused.
    Certificate(CertProblem),
    /// The TLS handshake failed for another reason.
    Tls(String),
    /// The proxy could not open a tunnel to the host.
    Proxy(String),
    /// Anything else the transport reported.
    Other(String),
}

/// The kind alone, for the log line of a retry.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotFound => f.write_str("host not found (DNS)"),
            Failure::Refused => f.write_str("connection refused"),
            Failure::TimedOut {
                connecting: true, ..
            } => f.write_str("no connection in time"),
            Failure::TimedOut { .. } => f.write_str("no answer in time"),
            Failure::Closed(how) => write!(f, "connection {how}"),
            Failure::Certificate(_) => f.write_str("certificate not trusted"),
            Failure::Tls(why) => write!(f, "TLS failed: {why}"),
            Failure::Proxy(why) => write!(f, "proxy: {why}"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// Why a server's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    /// No trusted CA signed it.
    UnknownIssuer,
    /// It signs itself, and is not trusted as it is.
    SelfSigned,
    /// A CA certificate presented as the server's own (what `openssl req -x509` makes).
    CaAsServer,
    /// Past its end date (the date when known).
    Expired(Option<String>),
    /// Before its start date (the date when known).
    NotYetValid(Option<String>),
    /// Not issued for the host name the job used; the names it lists.
    WrongName(Vec<String>),
    /// Revoked by its issuer.
    Revoked,
    /// A signature in the chain does not verify, or uses an algorithm rustls refuses.
    BadSignature,
    /// Not issued for TLS servers (extended key usage).
    WrongPurpose,
    /// Another reason, in words.
    Other(String),
}

impl Failure {
    /// Trying again cannot help: the same certificate or handshake comes back.
    pub fn is_final(&self) -> bool {
        matches!(self, Failure::Certificate(_) | Failure::Tls(_))
    }

    /// The server took longer than the timeout (as opposed to refusing or dropping).
    pub fn timed_out(&self) -> bool {
        matches!(self, Failure::TimedOut { .. })
    }

    /// Reads ureq's error; `limits` are the connect and the read timeout.
    pub(super) fn of(e: &ureq::Error, limits: (Duration, Duration)) -> Failure {
        let (connect, read) = limits;
        match e {
            ureq::Error::HostNotFound => Failure::NotFound,
            ureq::Error::Timeout(t) => match t {
                ureq::Timeout::Resolve | ureq::Timeout::Connect => Failure::TimedOut {
                    connecting: true,
                    after: connect,
                },
                _ => Failure::TimedOut {
                    connecting: false,
                    after: read,
                },
            },
            ureq::Error::Rustls(t) => of_rustls(t),
            ureq::Error::Tls(why) => Failure::Tls(why.to_string()),
            ureq::Error::ConnectProxyFailed(why) => Failure::Proxy(proxy_words(why)),
            ureq::Error::Io(io) => of_io(io, read),
            other => Failure::Other(other.to_string()),
        }
    }
}

/// ureq's `proxy server responded 407/407` as `it answered 407 Proxy Authentication Required`.
fn proxy_words(why: &str) -> String {
    let status = why
        .strip_prefix("proxy server responded ")
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse::<u16>().ok());
    match status {
        Some(n) => format!("it answered {n}{}", reason_phrase(n)),
        None => why.to_string(),
    }
}

fn of_io(e: &io::Error, read: Duration) -> Failure {
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return of_rustls(t);
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Failure::Refused,
        K::TimedOut | K::WouldBlock => Failure::TimedOut {
            connecting: false,
            after: read,
        },
        K::ConnectionReset | K::ConnectionAborted => Failure::Closed("reset by the peer".into()),
        K::UnexpectedEof | K::BrokenPipe => Failure::Closed("closed by the peer".into()),
        // std words a failed getaddrinfo so, and gives it no kind of its own.
        _ if e.to_string().contains("failed to lookup address") => Failure::NotFound,
        _ => Failure::Other(e.to_string()),
    }
}

fn of_rustls(e: &rustls::Error) -> Failure {
    match e {
        rustls::Error::InvalidCertificate(c) => Failure::Certificate(CertProblem::of(c)),
        rustls::Error::NoCertificatesPresented => {
            Failure::Certificate(CertProblem::Other("the server sent no certificate".into()))
        }
        rustls::Error::InvalidMessage(_) => Failure::Tls(
            "the server does not speak TLS on that port (is the address http://?)".into(),
        ),
        rustls::Error::AlertReceived(alert) => Failure::Tls(format!(
            "the server ended it with the alert '{}'",
            words(&format!("{alert:?}"))
        )),
        rustls::Error::PeerIncompatible(why) => Failure::Tls(format!(
            "no TLS version or cipher in common ({})",
            words(&format!("{why:?}"))
        )),
        other => Failure::Tls(words(&other.to_string())),
    }
}

impl CertProblem {
    fn of(e: &rustls::CertificateError) -> CertProblem {
        use rustls::CertificateError as C;
        match e {
            C::UnknownIssuer => CertProblem::UnknownIssuer,
            C::Expired => CertProblem::Expired(None),
            C::ExpiredContext { not_after, .. } => CertProblem::Expired(day(not_after.as_secs())),
            C::NotValidYet => CertProblem::NotYetValid(None),
            C::NotValidYetContext { not_before, .. } => {
                CertProblem::NotYetValid(day(not_before.as_secs()))
            }
            C::NotValidForName => CertProblem::WrongName(Vec::new()),
            C::NotValidForNameContext { presented, .. } => {
                CertProblem::WrongName(presented.iter().map(|p| presented_name(p)).collect())
            }
            C::Revoked => CertProblem::Revoked,
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => CertProblem::WrongPurpose,
            C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                CertProblem::BadSignature
            }
            C::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => CertProblem::CaAsServer,
                Some(w) => CertProblem::Other(words(&format!("{w:?}"))),
                None => CertProblem::Other(words(&other.to_string())),
            },
            other => CertProblem::Other(words(&format!("{other:?}"))),
        }
    }
}

/// `DnsName("a.example")` or `IpAddress(10.0.0.1)`, as webpki lists a certificate's names, as
/// the name alone.
fn presented_name(p: &str) -> String {
    let inner = p
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(p);
    inner.trim_matches('"').to_string()
}

fn day(unix: u64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp(i64::try_from(unix).ok()?).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        t.year(),
        u8::from(t.month()),
        t.day()
    ))
}

/// `CaUsedAsEndEntity` -> `ca used as end entity`: a type name in words, for the reasons no
/// branch above words better; what is not a plain name is kept as it is.
fn words(name: &str) -> String {
    if !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return name.to_string();
    }
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A request that got no answer, as an admin reads it: the side, the host, the kind, what to
/// check.
#[derive(Debug)]
pub struct NoAnswer {
    /// The side that was called.
    pub service: Service,
    /// `host[:port]` of the URL.
    pub host: String,
    /// `host:port` of the proxy the call went through, if any.
    pub proxy: Option<String>,
    /// Method and path, never the query (it may carry a token).
    pub request: String,
    /// Attempts made.
    pub attempts: u32,
    /// What went wrong.
    pub failure: Failure,
}

impl fmt::Display for NoAnswer {
    // One arm per case: every message's words in one place, next to each other.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NoAnswer {
            service,
            ref host,
            ref proxy,
            ref request,
            attempts,
            ref failure,
        } = *self;
        let proxy = proxy.as_deref();
        let address = service.address_param();
        let tries = if attempts > 1 {
            format!(" ({attempts} attempts)")
        } else {
            String::new()
        };
        match (failure, proxy) {
            (Failure::NotFound, Some(p)) => write!(
                f,
                "{service} proxy host not found: {p} has no DNS record; check the platform's proxy \
                 settings"
            ),
            (Failure::NotFound, None) => write!(
                f,
                "{service} host not found: {} has no DNS record; check {address} and the job \
                 server's DNS",
                bare_host(host)
            ),
            (Failure::Refused, Some(p)) => write!(
                f,
                "{service} connection refused by the proxy {p}; check the platform's proxy settings"
            ),
            (Failure::Refused, None) => write!(
                f,
                "{service} connection refused by {host}: nothing accepts connections on that \
                 port; check the port in {address} and firewalls"
            ),
            (
                Failure::TimedOut {
                    connecting: true,
                    after,
                },
                _,
            ) => write!(
                f,
                "{service} timed out: no connection to {host} within {} s{tries}; check \
                 {address}, firewalls and the proxy",
                after.as_secs()
            ),
            (
                Failure::TimedOut {
                    connecting: false,
                    after,
                },
                _,
            ) => write!(
                f,
                "{service} timed out: {host} did not answer {request} within {} s{tries}",
                after.as_secs()
            ),
            (Failure::Closed(how), _) => write!(
                f,
                "{service} connection to {host} {how} before an answer to {request}{tries}"
            ),
            (Failure::Certificate(problem), _) => write!(
                f,
                "{service} certificate of {host} not trusted: {}",
                CertWords(service, host, problem)
            ),
            (Failure::Tls(why), _) => {
                write!(f, "{service} TLS handshake with {host} failed: {why}")
            }
            (Failure::Proxy(why), p) => write!(
                f,
                "{service} proxy {} opened no tunnel to {host}: {why}; check the platform's proxy \
                 settings",
                p.unwrap_or("")
            ),
            (Failure::Other(why), _) => {
                write!(
                    f,
                    "{service} unreachable at {host} ({request}{tries}): {why}"
                )
            }
        }
    }
}

struct CertWords<'a>(Service, &'a str, &'a CertProblem);

impl fmt::Display for CertWords<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CertWords(service, host, problem) = *self;
        match problem {
            CertProblem::UnknownIssuer => f.write_str(
                "unknown issuer: the server's certificate is not signed by a trusted CA; add it \
                 to CA Certificate or the system store",
            ),
            CertProblem::SelfSigned => f.write_str(
                "self-signed: the server's certificate signs itself; add it to CA Certificate or \
                 the system store",
            ),
            CertProblem::CaAsServer => {
                f.write_str(
                    "self-signed CA certificate, never trusted as a server's own: issue the \
                     server one signed by a CA (in CA Certificate)",
                )?;
                match service.verify_param() {
                    Some(p) => write!(f, ", or turn {p} off"),
                    None => Ok(()),
                }
            }
            CertProblem::Expired(when) => write!(
                f,
                "expired{}: renew the server's certificate",
                when.as_ref()
                    .map(|d| format!(" on {d}"))
                    .unwrap_or_default()
            ),
            CertProblem::NotYetValid(when) => write!(
                f,
                "not yet valid{}: check the clocks of the server and the job server",
                when.as_ref()
                    .map(|d| format!(" (valid from {d})"))
                    .unwrap_or_default()
            ),
            CertProblem::WrongName(names) => {
                write!(
                    f,
                    "wrong host name: not issued for {}; use a name it lists in {}, or reissue it",
                    bare_host(host),
                    service.address_param()
                )?;
                match names.as_slice() {
                    [] => f.write_str(" (it lists none)"),
                    _ => write!(f, " (it lists {})", names.join(", ")),
                }
            }
            CertProblem::Revoked => f.write_str("revoked: replace the server's certificate"),
            CertProblem::BadSignature => f.write_str(
                "bad signature: a signature in the server's certificate chain does not verify",
            ),
            CertProblem::WrongPurpose => {
                f.write_str("wrong purpose: the server's certificate is not for TLS servers")
            }
            CertProblem::Other(why) => f.write_str(why),
        }
    }
}

/// `host:port` -> `host`; `[::1]:8443` -> `[::1]`.
fn bare_host(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    }
}

/// ` Bad Gateway` for 502: the status's standard reason, led by a space (none when unknown).
pub(crate) fn reason_phrase(status: u16) -> String {
    ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_become_words() {
        assert_eq!(words("CaUsedAsEndEntity"), "ca used as end entity");
        assert_eq!(words("HandshakeFailure"), "handshake failure");
        assert_eq!(words("not a name: x"), "not a name: x");
        assert_eq!(presented_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(presented_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(day(0).as_deref(), Some("1970-01-01"));
        assert_eq!(bare_host("h.example:8443"), "h.example");
        assert_eq!(bare_host("[::1]:8443"), "[::1]");
        assert_eq!(bare_host("h.example"), "h.example");
    }

    #[test]
    fn certificate_errors_are_read_into_problems() {
        use rustls::CertificateError as C;
        let of = |c: C| Failure::of(&ureq::Error::Rustls(c.into()), Default::default());
        assert_eq!(
            of(C::UnknownIssuer),
            Failure::Certificate(CertProblem::UnknownIssuer)
        );
        let other = rustls::OtherError(std::sync::Arc::new(webpki::Error::CaUsedAsEndEntity));
        assert_eq!(
            of(C::Other(other)),
            Failure::Certificate(CertProblem::CaAsServer)
        );
        let other = rustls::OtherError(std::sync::Arc::new(
            webpki::Error::PathLenConstraintViolated,
        ));
        assert_eq!(
            of(C::Other(other)),
            Failure::Certificate(CertProblem::Other("path len constraint violated".into()))
        );
        assert!(of(C::Revoked).is_final());
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(C::BadSignature),
        );
        assert_eq!(
            Failure::of(&ureq::Error::Io(wrapped), Default::default()),
            Failure::Certificate(CertProblem::BadSignature)
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let f = Failure::of(&ureq::Error::Io(refused), Default::default());
        assert_eq!(f, Failure::Refused);
        assert!(!f.is_final());
    }

    /// The longest messages of each kind, for a 45-character host and behind the longest
    /// prefix the job puts before them (`check`'s), still fit message.tc's 255 characters
    /// with what to do intact.
    #[test]
    fn the_longest_messages_keep_what_to_do_within_255_characters() {
        use crate::error::Error;
        let host = "tanium-prod-01.security.corp.example.com:8443";
        assert_eq!(host.len(), 45);
        let transport = |failure: Failure| {
            Error::Transport(NoAnswer {
                service: Service::Tanium,
                host: host.into(),
                proxy: None,
                request: "GET /plugin/products/threat-response/api/v1/sources".into(),
                attempts: 5,
                failure,
            })
        };
        let cert = |p: CertProblem| transport(Failure::Certificate(p));
        let cases = [
            (
                cert(CertProblem::UnknownIssuer),
                "add it to CA Certificate or the system store",
            ),
            (
                cert(CertProblem::SelfSigned),
                "add it to CA Certificate or the system store",
            ),
            (
                cert(CertProblem::CaAsServer),
                "issue the server one signed by a CA (in CA Certificate), or turn Verify SSL \
                 Cert off",
            ),
            (
                cert(CertProblem::Expired(Some("2021-01-01".into()))),
                "renew the server's certificate",
            ),
            (
                cert(CertProblem::NotYetValid(Some("2027-01-01".into()))),
                "check the clocks of the server and the job server",
            ),
            (
                cert(CertProblem::WrongName(vec!["a.example".into()])),
                "use a name it lists in Tanium Address, or reissue it",
            ),
            (
                transport(Failure::NotFound),
                "check Tanium Address and the job server's DNS",
            ),
            (
                transport(Failure::Refused),
                "check the port in Tanium Address and firewalls",
            ),
            (
                transport(Failure::TimedOut {
                    connecting: true,
                    after: Duration::from_secs(30),
                }),
                "check Tanium Address, firewalls and the proxy",
            ),
            (
                transport(Failure::TimedOut {
                    connecting: false,
                    after: Duration::from_secs(3600),
                }),
                "within 3600 s (5 attempts)",
            ),
            (
                Error::NotTheApi {
                    service: Service::Tanium,
                    host: host.into(),
                    request: "GET /plugin/products/threat-response/api/v1/sources".into(),
                    status: 200,
                    title: Some("x".repeat(60)),
                },
                "check Tanium Address and the proxy",
            ),
            (
                Error::NotTanium {
                    host: host.into(),
                    request: "POST /api/v2/session/login".into(),
                    status: 401,
                    why: "application/problem+json; no Threat Response route there (404)".into(),
                },
                "check Tanium Address, then Tanium Username and Tanium Password",
            ),
        ];
        for (e, action) in cases {
            let shown = crate::platform::one_line(&format!("Check failed: {e}"));
            assert!(shown.contains(action), "{shown}");
            assert!(shown.chars().count() <= 255, "{shown}");
            assert!(!shown.contains("unreachable"), "{shown}");
        }
    }
}
