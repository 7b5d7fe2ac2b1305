//! One HTTP layer for both sides: agent settings, the retry policy and the retrying call loop.
//!
//! Retry rule (same for ThreatConnect and Tanium): transport errors, 408, 429 (honouring
//! `Retry-After`) and 5xx except 501 are retried with capped exponential backoff; every other
//! status is returned to the caller at once. The caller rebuilds (and so re-signs) every attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, Service};
use crate::secret::Secret;

/// Largest response body we accept; a 10,000-indicator page is a few tens of MB at most.
pub const MAX_BODY_BYTES: u64 = 512 * 1024 * 1024;

/// Proxy to route a side's calls through (the TC platform's `tc_proxy_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Proxy host name or address.
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// Optional proxy user.
    pub username: Option<String>,
    /// Optional proxy password.
    pub password: Option<Secret>,
}

/// Connection settings for one side, so TLS and proxy choices are made once, in config.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Limit for establishing a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Limit for waiting on the response head and on each part of the body.
    pub read_timeout: Duration,
    /// Check server certificates (on unless the job says otherwise).
    pub verify_tls: bool,
    /// Route calls through this proxy.
    pub proxy: Option<ProxySettings>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
            verify_tls: true,
            proxy: None,
        }
    }
}

/// Builds the blocking agent for one side; statuses are data, not errors, so the retry loop sees them.
pub fn agent(settings: &HttpSettings) -> Result<ureq::Agent> {
    let proxy = match &settings.proxy {
        None => None,
        Some(p) => {
            let mut b = ureq::Proxy::builder(ureq::ProxyProtocol::Http)
                .host(&p.host)
                .port(p.port);
            if let Some(u) = &p.username {
                b = b.username(u);
            }
            if let Some(pw) = &p.password {
                b = b.password(pw.expose());
            }
            Some(
                b.build()
                    .map_err(|e| Error::Param(format!("proxy settings are unusable: {e}")))?,
            )
        }
    };
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(!settings.verify_tls)
        .build();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(proxy)
        .tls_config(tls)
        .max_redirects(0)
        .timeout_connect(Some(settings.connect_timeout))
        .timeout_recv_response(Some(settings.read_timeout))
        .timeout_recv_body(Some(settings.read_timeout))
        .timeout_send_body(Some(settings.read_timeout))
        .user_agent(concat!("tanium-tr-indicators/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// What to do with an answer, decided by status alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: hand it to the caller.
    Ok,
    /// Transient: try again after a delay.
    Retry,
    /// Final error: hand it to the caller, never retry.
    DontRetry,
}

/// The retry rule shared by both clients.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Ok,
        408 | 429 => Verdict::Retry,
        501 => Verdict::DontRetry,
        500..=599 => Verdict::Retry,
        _ => Verdict::DontRetry,
    }
}

/// Lets tests and the benchmark replace real sleeping, so backoff costs no wall time there.
pub trait Sleep: Send + Sync {
    /// Waits for `d` (or pretends to).
    fn sleep(&self, d: Duration);
}

/// Sleeps for real.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSleep;

impl Sleep for RealSleep {
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// Records the delays it is asked for instead of waiting, so tests see the backoff for free.
#[cfg(any(test, feature = "sim"))]
#[derive(Debug, Default)]
pub struct RecordedSleep(std::sync::Mutex<Vec<Duration>>);

#[cfg(any(test, feature = "sim"))]
impl RecordedSleep {
    /// The delays asked for so far, in order.
    pub fn delays(&self) -> Vec<Duration> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[cfg(any(test, feature = "sim"))]
impl Sleep for RecordedSleep {
    fn sleep(&self, d: Duration) {
        if let Ok(mut v) = self.0.lock() {
            v.push(d);
        }
    }
}

/// How many times and how long to wait between attempts.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles after that.
    pub base_delay: Duration,
    /// Largest delay between attempts, also the cap on `Retry-After`.
    pub max_delay: Duration,
    /// How waiting is done.
    pub sleeper: Arc<dyn Sleep>,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            sleeper: Arc::new(RealSleep),
        }
    }
}

impl RetryPolicy {
    /// Four attempts, 100 ms doubling, with `sleeper` doing (or recording) the waits: what the
    /// client tests use to check the backoff without spending it.
    #[cfg(any(test, feature = "sim"))]
    pub fn quick(sleeper: Arc<dyn Sleep>) -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(60),
            sleeper,
        }
    }

    /// Delay before attempt `attempt + 1`, where `attempt` (1-based) just failed.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_delay);
        }
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// One request, built fresh for every attempt so signatures and timestamps are current.
#[derive(Clone)]
pub struct Request {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Full URL exactly as it must go on the wire (already percent-encoded).
    pub url: String,
    /// Header pairs; may hold credentials, so this type is never logged.
    pub headers: Vec<(String, String)>,
    /// Optional body.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// A bodiless request, the common case.
    pub fn new(method: &'static str, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    /// `METHOD /path` without scheme, host or query, safe for logs and error messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, path_of(&self.url))
    }
}

/// The path of a URL without its query (queries may carry tokens and never reach logs).
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| &url[i + 3..]).unwrap_or(url);
    let path_and_query = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("/");
    path_and_query.split(['?', '#']).next().unwrap_or("/")
}

/// A fully read answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers with lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in seconds, when the server sent one we can read.
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    }

    /// The body as lossy UTF-8, trimmed to `max` characters, for error messages.
    pub fn body_excerpt(&self, max: usize) -> String {
        let s = String::from_utf8_lossy(&self.body);
        let s = s.trim();
        if s.chars().count() > max {
            let cut: String = s.chars().take(max).collect();
            format!("{cut}...")
        } else {
            s.to_string()
        }
    }
}

/// A server certificate the TLS layer refused: trying again cannot help.
fn certificate_rejected(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|t| {
            matches!(
                t,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

fn timed_out(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        _ => false,
    }
}

/// Why a transport attempt failed, and whether another attempt could help.
fn transport_retryable(e: &ureq::Error) -> bool {
    if let ureq::Error::Io(io) = e {
        return !certificate_rejected(io);
    }
    !matches!(
        e,
        ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::TlsRequired
            | ureq::Error::BodyExceedsLimit(_)
    )
}

fn send_once(agent: &ureq::Agent, req: &Request) -> std::result::Result<Response, ureq::Error> {
    let mut builder = ureq::http::Request::builder()
        .method(req.method)
        .uri(req.url.as_str());
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = req.body.clone().unwrap_or_default();
    let http_req = builder.body(body).map_err(ureq::Error::Http)?;
    let resp = agent.run(http_req)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .into_body()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends a request built by `build` (called once per attempt), retrying per [`classify`].
///
/// Returns the first non-retryable answer, or the last retryable one when attempts run out.
/// Transport failures that outlast the attempts become [`Error::Transport`].
pub fn call(
    agent: &ureq::Agent,
    policy: &RetryPolicy,
    service: Service,
    build: &mut dyn FnMut() -> Result<Request>,
) -> Result<Response> {
    let max = policy.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let req = build()?;
        let what = req.describe();
        let started = Instant::now();
        match send_once(agent, &req) {
            Ok(resp) => {
                log::debug!(
                    "{what} -> {} in {} ms",
                    resp.status,
                    started.elapsed().as_millis()
                );
                if classify(resp.status) == Verdict::Retry && attempt < max {
                    let d = policy.delay(attempt, resp.retry_after());
                    log::warn!(
                        "{service} answered {} to {what}; retrying in {:.1} s (attempt {}/{max})",
                        resp.status,
                        d.as_secs_f64(),
                        attempt + 1
                    );
                    policy.sleeper.sleep(d);
                    continue;
                }
                return Ok(resp);
            }
            Err(e) => {
                let detail = e.to_string();
                if transport_retryable(&e) && attempt < max {
                    let d = policy.delay(attempt, None);
                    log::warn!(
                        "{what} to {service} failed: {detail}; retrying in {:.1} s (attempt {}/{max})",
                        d.as_secs_f64(),
                        attempt + 1
                    );
                    policy.sleeper.sleep(d);
                    continue;
                }
                return Err(Error::Transport {
                    service,
                    request: what,
                    detail,
                    timed_out: timed_out(&e),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_follows_the_retry_rule() {
        for s in [200, 201, 204] {
            assert_eq!(classify(s), Verdict::Ok);
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(s), Verdict::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422, 501] {
            assert_eq!(classify(s), Verdict::DontRetry, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            sleeper: Arc::new(RealSleep),
        };
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(p.delay(3, None), Duration::from_millis(400));
        assert_eq!(p.delay(9, None), Duration::from_secs(1));
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(120))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn describe_never_shows_the_query() {
        let r = Request::new("GET", "https://h:8443/api/appAuth?expiredToken=SECRET");
        assert_eq!(r.describe(), "GET /api/appAuth");
        assert_eq!(path_of("http://h"), "/");
    }
}
