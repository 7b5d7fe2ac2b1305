//! The tiny HTTP/1.1 server under both simulators: loopback only, thread per connection, with
//! wire-level fault injection (status bursts, dropped connections, truncated bodies, delays).
//!
//! Hand-written on purpose. `Fault::Drop` (close without answering), `Fault::DropAfterHandling`
//! (a write whose answer is lost) and `Fault::TruncateBody` (a head that promises more body than
//! comes, then a close) need the socket itself, and the lab reads state only once
//! `open_connections()` is 0. tiny_http, the synchronous server crate that would fit, hands a
//! request only a writer into a connection it keeps open: it can neither close a connection
//! unanswered nor end one after half a body (the client would wait for its read timeout), and
//! it does not say which connections are still open. Since a fault is chosen per request on a
//! connection the server already reads, one server has to own the raw stream for every request;
//! what that costs is the request parsing below (~100 lines).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the simulator sees it, with the raw request target kept for HMAC checks.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// Method, upper case.
    pub method: String,
    /// The request target exactly as received (`/path?query`).
    pub target: String,
    /// The path, still percent-encoded.
    pub path: String,
    /// Query pairs, percent-decoded (`+` stays `+`, as TC's server does for `%2B`-less input).
    pub query: Vec<(String, String)>,
    /// Headers with lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl SimRequest {
    /// First header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let n = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }

    /// First query value by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every query value for a repeated name.
    pub fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The path, percent-decoded.
    pub fn decoded_path(&self) -> String {
        percent_encoding::percent_decode_str(&self.path)
            .decode_utf8_lossy()
            .into_owned()
    }
}

/// A simulator's answer.
#[derive(Debug, Clone)]
pub struct SimResponse {
    /// HTTP status.
    pub status: u16,
    /// Extra headers (Content-Length is added by the server).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl SimResponse {
    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        SimResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        SimResponse {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.into().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// What a fault does to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer this status (the handler is not called), optionally with `Retry-After` seconds.
    Status {
        /// Status to answer.
        status: u16,
        /// `Retry-After` header value in seconds.
        retry_after: Option<u64>,
    },
    /// Close the connection without answering (the handler is not called).
    Drop,
    /// Call the handler (so any write happens), then close the connection without answering:
    /// a write that succeeded server-side whose response was lost.
    DropAfterHandling,
    /// Call the handler, then send the head and only half the body before closing.
    TruncateBody,
    /// Wait this long before answering normally (for read timeouts).
    Delay(Duration),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Hold the request until the test opens the gate, then answer normally: what the test
    /// changes while it waits is what the answer sees.
    Hold(Gate),
}

/// Where a [`Fault::Hold`] request waits. A test waits for a request to arrive, changes what it
/// wants, opens the gate, and can then prove the answer was computed after the change.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Debug, Default)]
struct GateState {
    arrived: u32,
    /// The decoded request targets that waited here.
    held: Vec<String>,
    open: bool,
    answered_after_opening: u32,
}

/// How long a held request waits for a test that never opens its gate.
const GATE_LIMIT: Duration = Duration::from_secs(120);

impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Waits until a request is held here; false after `limit`.
    pub fn wait_arrived(&self, limit: Duration) -> bool {
        let (state, cv) = &*self.0;
        let st = state.lock().unwrap();
        let (st, _) = cv
            .wait_timeout_while(st, limit, |s| s.arrived == 0)
            .unwrap();
        st.arrived > 0
    }

    /// Lets every held request (and any later one) through.
    pub fn open(&self) {
        let (state, cv) = &*self.0;
        state.lock().unwrap().open = true;
        cv.notify_all();
    }

    /// The request targets (percent-decoded) that were held here.
    pub fn held(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().held.clone()
    }

    /// Requests the handler answered after the gate was opened.
    pub fn answered_after_opening(&self) -> u32 {
        self.0 .0.lock().unwrap().answered_after_opening
    }

    fn pass(&self, req: &SimRequest) {
        let (state, cv) = &*self.0;
        let mut st = state.lock().unwrap();
        st.arrived += 1;
        st.held.push(decode(&req.target));
        cv.notify_all();
        let _ = cv.wait_timeout_while(st, GATE_LIMIT, |s| !s.open).unwrap();
    }

    fn answered(&self) {
        let mut st = self.0 .0.lock().unwrap();
        if st.open {
            st.answered_after_opening += 1;
        }
    }
}

/// A fault armed for the next `count` requests that match `method` and `path_prefix`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Method to match, or any.
    pub method: Option<String>,
    /// Decoded path prefix to match.
    pub path_prefix: String,
    /// Requests that match but are let through before the fault fires.
    pub skip: u32,
    /// How many matching requests the fault hits.
    pub count: u32,
    /// The fault.
    pub fault: Fault,
}

impl FaultRule {
    /// A fault for the next `count` matching requests.
    pub fn new(method: Option<&str>, path_prefix: &str, count: u32, fault: Fault) -> Self {
        FaultRule {
            method: method.map(str::to_string),
            path_prefix: path_prefix.into(),
            skip: 0,
            count,
            fault,
        }
    }

    /// Lets `skip` matching requests through first.
    pub fn after(mut self, skip: u32) -> Self {
        self.skip = skip;
        self
    }
}

/// Request handler of a simulator.
pub type Handler = Arc<dyn Fn(&SimRequest) -> SimResponse + Send + Sync>;

struct Shared {
    handler: Handler,
    faults: Mutex<Vec<FaultRule>>,
    hits: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
    bytes_in: AtomicU64,
    latency: Mutex<Duration>,
    stop: AtomicBool,
    connections: AtomicUsize,
    accepted: AtomicU64,
}

/// A running simulator server on 127.0.0.1; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1 on `port` (0 = any free port) and serves `handler`.
    pub fn start(port: u16, handler: Handler) -> io::Result<Server> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            handler,
            faults: Mutex::new(Vec::new()),
            hits: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            latency: Mutex::new(Duration::ZERO),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
        });
        let s2 = shared.clone();
        let accept = thread::Builder::new()
            .name(format!("sim-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if s2.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = conn {
                        let s3 = s2.clone();
                        s3.connections.fetch_add(1, Ordering::SeqCst);
                        s3.accepted.fetch_add(1, Ordering::SeqCst);
                        let spawned =
                            thread::Builder::new()
                                .name("sim-conn".into())
                                .spawn(move || {
                                    serve_connection(stream, &s3);
                                    s3.connections.fetch_sub(1, Ordering::SeqCst);
                                });
                        if spawned.is_err() {
                            s2.connections.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                }
            })?;
        Ok(Server {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Arms a fault.
    pub fn inject(&self, rule: FaultRule) {
        self.shared.faults.lock().unwrap().push(rule);
    }

    /// Faults still armed (a rule disappears once it has fired `count` times).
    pub fn armed_faults(&self) -> Vec<FaultRule> {
        self.shared.faults.lock().unwrap().clone()
    }

    /// Connections still being served: 0 once every client has gone and every request it
    /// sent (including delayed ones) has been handled, so a test can check state without racing.
    pub fn open_connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections accepted since the start (or the last counter reset): with keep-alive, about
    /// one per parallel client, not one per request.
    pub fn accepted_connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Adds this delay before every answer (a WAN-like latency for the benchmark).
    pub fn set_latency(&self, d: Duration) {
        *self.shared.latency.lock().unwrap() = d;
    }

    /// Requests seen whose `METHOD decoded-path` starts with `method_path_prefix` (e.g. `"GET /api/v3"`).
    pub fn hits(&self, method_path_prefix: &str) -> u64 {
        self.shared
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(method_path_prefix))
            .map(|(_, v)| *v)
            .sum()
    }

    /// Requests seen whose `METHOD decoded-path` satisfies `pred` (e.g. label writes, whose
    /// paths share a prefix with document writes).
    pub fn hits_where(&self, pred: impl Fn(&str) -> bool) -> u64 {
        self.shared
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, v)| *v)
            .sum()
    }

    /// All requests seen.
    pub fn total_requests(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// All request bytes received (head and body).
    pub fn bytes_received(&self) -> u64 {
        self.shared.bytes_in.load(Ordering::SeqCst)
    }

    /// Forgets the counters.
    pub fn reset_counters(&self) {
        self.shared.hits.lock().unwrap().clear();
        self.shared.total.store(0, Ordering::SeqCst);
        self.shared.bytes_in.store(0, Ordering::SeqCst);
        self.shared.accepted.store(0, Ordering::SeqCst);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn take_fault(shared: &Shared, req: &SimRequest) -> Option<Fault> {
    let path = req.decoded_path();
    let mut faults = shared.faults.lock().unwrap();
    let idx = faults.iter().position(|r| {
        r.count > 0
            && r.method.as_deref().is_none_or(|m| m == req.method)
            && path.starts_with(&r.path_prefix)
    })?;
    let rule = &mut faults[idx];
    if rule.skip > 0 {
        rule.skip -= 1;
        return None;
    }
    rule.count -= 1;
    let f = rule.fault.clone();
    if rule.count == 0 {
        faults.remove(idx);
    }
    Some(f)
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    // Answers go out as head + body writes: without this, Nagle holds the body back until the
    // client's delayed ACK of the head (~40 ms per request on Linux loopback).
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            _ => return,
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        shared.total.fetch_add(1, Ordering::SeqCst);
        shared.bytes_in.fetch_add(
            (req.target.len() + req.body.len() + 64) as u64,
            Ordering::SeqCst,
        );
        *shared
            .hits
            .lock()
            .unwrap()
            .entry(format!("{} {}", req.method, req.decoded_path()))
            .or_default() += 1;
        let latency = *shared.latency.lock().unwrap();
        if !latency.is_zero() {
            thread::sleep(latency);
        }
        let resp = match take_fault(shared, &req) {
            None => (shared.handler)(&req),
            Some(Fault::Status {
                status,
                retry_after,
            }) => {
                let mut r = SimResponse::json(
                    status,
                    &serde_json::json!({"status": "Error", "message": format!("injected {status}")}),
                );
                if let Some(s) = retry_after {
                    r = r.with_header("Retry-After", &s.to_string());
                }
                r
            }
            Some(Fault::Drop) => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::DropAfterHandling) => {
                let _ = (shared.handler)(&req);
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::TruncateBody) => {
                let r = (shared.handler)(&req);
                let half = r.body.len() / 2;
                let _ = write_head(&mut writer, &r, r.body.len().max(1));
                let _ = writer.write_all(&r.body[..half]);
                let _ = writer.flush();
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Delay(d)) => {
                thread::sleep(d);
                (shared.handler)(&req)
            }
            Some(Fault::Garbage) => SimResponse {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: b"<html>\xff\xfe not json".to_vec(),
            },
            Some(Fault::Hold(gate)) => {
                gate.pass(&req);
                let r = (shared.handler)(&req);
                gate.answered();
                r
            }
        };
        if write_head(&mut writer, &resp, resp.body.len()).is_err()
            || writer.write_all(&resp.body).is_err()
            || writer.flush().is_err()
        {
            return;
        }
    }
}

fn write_head(w: &mut TcpStream, r: &SimResponse, len: usize) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    w.write_all(head.as_bytes())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 256 * 1024 * 1024;

fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<SimRequest>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    let mut head_len = line.len();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        head_len += h.len();
        if head_len > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk"))?;
            if size == 0 {
                let mut crlf = String::new();
                r.read_line(&mut crlf)?;
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if len > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    }
    let (path, qs) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let query = qs
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect();
    Ok(Some(SimRequest {
        method,
        target,
        path,
        query,
        headers,
        body,
    }))
}

/// Percent-decodes a query component; `+` means space, as form encoding and TC's server agree.
pub fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> Handler {
        Arc::new(|r: &SimRequest| {
            SimResponse::json(
                200,
                &serde_json::json!({"path": r.decoded_path(), "q": r.param("q"), "len": r.body.len()}),
            )
        })
    }

    #[test]
    fn serves_and_injects_faults() {
        let s = Server::start(0, echo()).unwrap();
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build(),
        );
        let url = format!("{}/a%20b?q=x%20y", s.url());
        let mut r = agent.get(&url).call().unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
        assert_eq!(v["path"], "/a b");
        assert_eq!(v["q"], "x y");
        s.inject(FaultRule::new(
            Some("GET"),
            "/a",
            1,
            Fault::Status {
                status: 503,
                retry_after: Some(2),
            },
        ));
        let r = agent.get(&url).call().unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers().get("retry-after").unwrap(), "2");
        s.inject(FaultRule::new(None, "/", 1, Fault::Drop));
        assert!(agent.get(&url).call().is_err());
        assert_eq!(agent.get(&url).call().unwrap().status().as_u16(), 200);
        assert_eq!(s.hits("GET /a b"), 4);
    }

    #[test]
    fn a_held_request_is_answered_only_after_its_gate_opens() {
        let s = Server::start(0, echo()).unwrap();
        let gate = Gate::new();
        s.inject(FaultRule::new(None, "/a", 1, Fault::Hold(gate.clone())));
        let url = format!("{}/a?q=1", s.url());
        let client = thread::spawn(move || ureq::get(&url).call().map(|r| r.status().as_u16()));
        assert!(gate.wait_arrived(Duration::from_secs(30)));
        thread::sleep(Duration::from_millis(50));
        assert!(!client.is_finished(), "held");
        assert_eq!(gate.answered_after_opening(), 0);
        gate.open();
        assert_eq!(client.join().unwrap().unwrap(), 200);
        assert_eq!(gate.answered_after_opening(), 1);
        assert_eq!(gate.held(), ["/a?q=1"]);
    }
}
