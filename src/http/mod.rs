//! One HTTP layer for both sides: agent settings, origins, the retry policy and the retrying
//! call loop. The caller rebuilds (and so re-signs) every attempt.

pub mod failure;
mod origin;
mod retry;
mod trust;

use std::time::{Duration, Instant};

pub use failure::{CertProblem, Failure, NoAnswer};
pub use origin::{Origin, OriginError, Scheme};
#[cfg(any(test, feature = "sim"))]
pub use retry::RecordedSleep;
pub use retry::{
    classify, FullJitter, Jitter, NoJitter, RealSleep, Reason, RetryPolicy, Sleep, Tries, Verdict,
};
pub use trust::CaCertificates;

use crate::error::{Error, Result, Service};
use crate::secret::Secret;

/// Largest response body we accept; a 10,000-indicator page is a few tens of MB at most.
pub const MAX_BODY_BYTES: u64 = 512 * 1024 * 1024;

/// Idle connections kept per host: the most parallel Tanium writes a job may use, and the
/// listing pages read at that width.
const MAX_IDLE_PER_HOST: usize = 32;

/// How long opening a connection (TCP, TLS, a proxy's tunnel) may take. A reachable server
/// opens one within a second or two even across a WAN; 15 s leaves room for that and keeps an
/// address whose packets are dropped from costing a scheduled run minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a side's answer may take to begin, and then to arrive whole. Tanium answers one
/// document, a label or a listing page of 500 rows; ThreatConnect runs the TQL query of a
/// page of up to 10,000 indicators first (its docs warn that large queries are slow), and a
/// page it cannot serve in time is asked for again at half the size.
pub fn answer_timeout(service: Service) -> Duration {
    match service {
        Service::ThreatConnect => Duration::from_secs(120),
        Service::Tanium => Duration::from_secs(60),
    }
}

/// Proxy to route a side's calls through (the TC platform's `tc_proxy_*` settings).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpSettings {
    /// Limit for establishing a TCP/TLS connection.
    #[serde(rename = "connect_timeout_secs", serialize_with = "whole_seconds")]
    pub connect_timeout: Duration,
    /// Limit for the answer to begin (from the request sent), and again for its whole body
    /// (and for sending a request's body).
    #[serde(rename = "read_timeout_secs", serialize_with = "whole_seconds")]
    pub read_timeout: Duration,
    /// Check server certificates (on unless the job says otherwise).
    pub verify_tls: bool,
    /// Certificate authorities trusted on top of Mozilla's list and the system store.
    #[serde(rename = "ca_certificates", serialize_with = "how_many")]
    pub ca_certificates: CaCertificates,
    /// Route calls through this proxy.
    pub proxy: Option<ProxySettings>,
}

impl HttpSettings {
    /// The defaults for one side: its timeouts, certificates checked, no proxy.
    pub fn for_service(service: Service) -> HttpSettings {
        HttpSettings {
            connect_timeout: CONNECT_TIMEOUT,
            read_timeout: answer_timeout(service),
            verify_tls: true,
            ca_certificates: CaCertificates::default(),
            proxy: None,
        }
    }
}

/// Tanium's defaults.
impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings::for_service(Service::Tanium)
    }
}

fn how_many<S: serde::Serializer>(
    c: &CaCertificates,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(c.len() as u64)
}

fn whole_seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// One side's blocking agent, with what its failures are worded with.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: ureq::Agent,
    /// `host:port` of the proxy, when calls go through one.
    proxy: Option<String>,
    /// The connect and the read timeout.
    limits: (Duration, Duration),
}

/// Builds the blocking agent for one side; statuses are data, not errors, so the retry loop sees them.
pub fn agent(settings: &HttpSettings) -> Result<Agent> {
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
    let mut tls = ureq::tls::TlsConfig::builder().disable_verification(!settings.verify_tls);
    if settings.verify_tls {
        tls = tls.root_certs(trust::root_certs(&settings.ca_certificates));
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(proxy)
        .tls_config(tls.build())
        .max_redirects(0)
        // Every parallel writer keeps its connection between requests: ureq keeps 3 a host by
        // default, so most of 8 writers would open (and TLS-handshake) one per request.
        .max_idle_connections_per_host(MAX_IDLE_PER_HOST)
        .max_idle_connections(2 * MAX_IDLE_PER_HOST)
        // No resolve timeout: with one, ureq resolves on a thread of its own for every
        // request, which took twice the CPU of a whole first sync; a lookup that hangs is
        // bounded by the system resolver's own timeout and attempts.
        .timeout_connect(Some(settings.connect_timeout))
        .timeout_recv_response(Some(settings.read_timeout))
        .timeout_recv_body(Some(settings.read_timeout))
        .timeout_send_body(Some(settings.read_timeout))
        .user_agent(concat!("tanium-tr-indicators/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(Agent {
        inner: ureq::Agent::new_with_config(config),
        proxy: settings
            .proxy
            .as_ref()
            .map(|p| format!("{}:{}", p.host, p.port)),
        limits: (settings.connect_timeout, settings.read_timeout),
    })
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
    path_and_query(url).split('?').next().unwrap_or("/")
}

/// `path?query` of an absolute URL exactly as written (no decoding, no re-encoding): what the
/// request line carries, and what TC's HMAC signs.
pub fn path_and_query(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| &url[i + 3..]).unwrap_or(url);
    let pq = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("/");
    pq.split('#').next().unwrap_or(pq)
}

/// `host[:port]` of a URL as written, for messages (no user info: addresses never carry any).
pub fn host_of(url: &str) -> String {
    url.parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| {
            u.authority()
                .map(|a| a.as_str().rsplit('@').next().unwrap_or("").to_string())
        })
        .unwrap_or_default()
}

/// A fully read answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// `host[:port]` that answered.
    pub host: String,
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

    /// An HTML page (a login page, a proxy's error page) rather than an API answer: by its
    /// content type, or a body that opens like one.
    pub fn is_html(&self) -> bool {
        if self
            .header("content-type")
            .is_some_and(|t| t.to_ascii_lowercase().contains("text/html"))
        {
            return true;
        }
        let head: Vec<u8> = self
            .body
            .iter()
            .take(1024)
            .map(u8::to_ascii_lowercase)
            .collect();
        let head = String::from_utf8_lossy(&head);
        let head = head.trim_start_matches('\u{feff}').trim_start();
        head.starts_with('<')
            && ["<!doctype html", "<html", "<head", "<body"]
                .iter()
                .any(|tag| head.contains(tag))
    }

    /// The `<title>` of an HTML page, entities decoded, blanks folded, at most 60 characters;
    /// the rest of the page never reaches a message.
    pub fn html_title(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let lower = text.to_ascii_lowercase();
        let open = lower.find("<title")?;
        let start = open + lower[open..].find('>')? + 1;
        let end = start + lower[start..].find("</title")?;
        let raw = text[start..end]
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'");
        let title: String = raw
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        match title.chars().count() {
            0 => None,
            n if n > 60 => Some(format!("{}...", title.chars().take(57).collect::<String>())),
            _ => Some(title),
        }
    }

    /// [`Error::NotTheApi`] when this answer is an HTML page.
    pub fn not_the_api(&self, service: Service, request: &str) -> Option<Error> {
        self.is_html().then(|| Error::NotTheApi {
            service,
            host: self.host.clone(),
            request: request.to_string(),
            status: self.status,
            title: self.html_title(),
        })
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

/// The retry rule for an attempt that got no answer.
fn classify_transport(e: &ureq::Error, failure: &Failure) -> Verdict {
    let final_ = failure.is_final()
        || matches!(
            e,
            ureq::Error::BadUri(_)
                | ureq::Error::Http(_)
                | ureq::Error::InvalidProxyUrl
                | ureq::Error::RequireHttpsOnly(_)
                | ureq::Error::TlsRequired
                | ureq::Error::BodyExceedsLimit(_)
        );
    if final_ {
        Verdict::DontRetry
    } else if failure.timed_out() {
        Verdict::Retry(Reason::Timeout)
    } else {
        Verdict::Retry(Reason::Transport)
    }
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
        host: host_of(&req.url),
        status,
        headers,
        body,
    })
}

/// Sends a request built by `build` (called once per attempt), retrying per [`classify`] and
/// `classify_transport`, each retry logged with its reason.
///
/// Returns the first non-retryable answer, or the last retryable one when attempts run out.
/// Transport failures that outlast the attempts become [`Error::Transport`].
pub fn call(
    agent: &Agent,
    policy: &RetryPolicy,
    service: Service,
    build: &mut dyn FnMut() -> Result<Request>,
) -> Result<Response> {
    call_on(agent, policy, service, &mut Tries::default(), build)
}

/// [`call`] as one part of a logical call: the count of attempts (and of timeouts) goes on
/// from `tries`, and the call hands back early when `tries` says to pause.
///
/// At most `max_attempts` attempts, of which `max_timeouts` may time out: a call that gets no
/// answer takes at most `max_timeouts` x (connect + answer limit) plus the waits between.
pub fn call_on(
    agent: &Agent,
    policy: &RetryPolicy,
    service: Service,
    tries: &mut Tries,
    build: &mut dyn FnMut() -> Result<Request>,
) -> Result<Response> {
    let max = policy.max_attempts.max(1);
    loop {
        if let Some((d, line)) = tries.next.take() {
            log::warn!("{line}");
            policy.sleeper.sleep(d);
        }
        tries.made += 1;
        let attempt = tries.made;
        let req = build()?;
        let what = req.describe();
        let started = Instant::now();
        let outcome = send_once(&agent.inner, &req).map_err(|e| {
            let failure = Failure::of(&e, agent.limits);
            (classify_transport(&e, &failure), failure)
        });
        let verdict = match &outcome {
            Ok(resp) => {
                log::debug!(
                    "{what} -> {} in {} ms",
                    resp.status,
                    started.elapsed().as_millis()
                );
                classify(resp.status)
            }
            Err((verdict, _)) => *verdict,
        };
        if verdict == Verdict::Retry(Reason::Timeout) {
            tries.timed_out += 1;
        }
        let more = attempt < max
            && !(verdict == Verdict::Retry(Reason::Timeout)
                && tries.timed_out >= policy.max_timeouts);
        if let (Verdict::Retry(reason), true) = (verdict, more) {
            let retry_after = outcome.as_ref().ok().and_then(Response::retry_after);
            let d = policy.delay(attempt, retry_after);
            let detail = match &outcome {
                Err((_, failure)) => format!(" ({failure})"),
                Ok(_) => String::new(),
            };
            let line = format!(
                "{what} to {service} at {}: {reason}{detail}; retrying in {:.1} s (attempt {}/{max})",
                host_of(&req.url),
                d.as_secs_f64(),
                attempt + 1
            );
            tries.next = Some((d, line));
            // Paused, the caller decides whether the call goes on (and the wait with it).
            if tries.pause_after.is_none_or(|n| attempt < n) {
                continue;
            }
        }
        return outcome.map_err(|(_, mut failure)| {
            // Through a proxy the look would go elsewhere than the call did.
            if failure == Failure::Certificate(CertProblem::UnknownIssuer)
                && agent.proxy.is_none()
                && trust::signs_itself(&req.url, agent.limits.0)
            {
                failure = Failure::Certificate(CertProblem::SelfSigned);
            }
            Error::Transport(NoAnswer {
                service,
                host: host_of(&req.url),
                proxy: agent.proxy.clone(),
                request: what,
                attempts: attempt,
                failure,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_never_shows_the_query() {
        let r = Request::new("GET", "https://h:8443/api/appAuth?expiredToken=SECRET");
        assert_eq!(r.describe(), "GET /api/appAuth");
        assert_eq!(path_of("http://h"), "/");
    }

    fn answer(content_type: &str, body: &str) -> Response {
        Response {
            host: host_of("https://h.example:8443/x?token=SECRET"),
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn an_html_page_is_known_by_its_type_or_its_opening_and_shows_only_its_title() {
        let page = answer(
            "text/plain",
            "\u{feff}  <!DOCTYPE html><HTML><head><TITLE>\n Sign in &amp; go\t</title>",
        );
        assert!(page.is_html());
        assert_eq!(page.html_title().as_deref(), Some("Sign in & go"));
        assert_eq!(page.host, "h.example:8443");
        let long = answer("text/html", &format!("<title>{}</title>", "é".repeat(80)));
        assert_eq!(long.html_title().unwrap().chars().count(), 60);
        assert!(answer("text/html; charset=utf-8", "oops").is_html());
        assert_eq!(answer("text/html", "no title").html_title(), None);
        for api in [r#"{"data": "<html>"}"#, "<?xml version=\"1.0\"?><ioc/>", ""] {
            assert!(!answer("application/json", api).is_html(), "{api}");
        }
    }
}
