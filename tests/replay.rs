//! Replay: the real binary against both simulators seen through a proxy that gives every answer
//! the shape of a recorded real answer (tests/fixtures/recorded). Fields a recording does not
//! show are dropped, a field it shows that the simulator left out fails the run loudly (so the
//! simulators cannot drift from reality either), and TC's `next` names another origin, where
//! nothing may connect. Through it the binary runs a first sync, a no-change run, a forced full
//! reconcile (neither may write) and a run where one indicator changed, one was deleted and one
//! deactivated (exactly their documents change), for STIX and OpenIOC, on TR 4.x and 3.x, with
//! HMAC and job-token auth; every route must have answered in its recorded shape.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{expected, expected_name, lab, lease_calls};
use serde_json::{json, Map, Value};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Server, SimRequest, SimResponse};
use tanium_tr_indicators::sim::tanium::SimDoc;
use tanium_tr_indicators::sim::tc_exclusions::SimExclusionList;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recorded")
}

fn fixture(file: &str) -> Value {
    let path = fixture_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

struct Route {
    name: &'static str,
    fixture: &'static str,
    /// The 3.x answer when it differs from the 4.x one without its `data` envelope.
    fixture_v3: Option<&'static str>,
}

const fn route(name: &'static str, fixture: &'static str) -> Route {
    Route {
        name,
        fixture,
        fixture_v3: None,
    }
}

const ROUTES: [Route; 21] = [
    route("tc appAuth", "tc-appauth.json"),
    route("tc indicators", "tc-indicators-page.json"),
    route("tc deleted", "tc-deleted.json"),
    route("tc owners", "tc-owners.json"),
    route("tc exclusion lists", "tc-exclusion-lists.json"),
    route("tc exclusion list", "tc-exclusion-list.json"),
    route("tanium login", "tanium-login.json"),
    route("tanium sources", "tanium-sources.json"),
    route("tanium source create", "tanium-source-create.json"),
    route("tanium source delete", "tanium-source-delete.json"),
    route("tanium intel listing", "tanium-intel-listing.json"),
    route("tanium intel get", "tanium-intel-get.json"),
    Route {
        name: "tanium intel create",
        fixture: "tanium-intel-create.json",
        fixture_v3: Some("tanium3-intel-create.json"),
    },
    route("tanium intel update", "tanium-intel-update.json"),
    route("tanium intel delete", "tanium-delete.json"),
    route("tanium deploy", "tanium-deploy.json"),
    route("tanium intel status", "tanium-intel-status.json"),
    route("tanium task", "tanium-task.json"),
    route("tanium labels", "tanium-labels.json"),
    route("tanium label create", "tanium-label-create.json"),
    route("tanium intel label add", "tanium-intel-label-add.json"),
];

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Tc,
    Tanium,
}

/// The route of a request and whether its answer is bare (TR 3.x paths).
fn route_of(side: Side, method: &str, path: &str) -> Option<(&'static str, bool)> {
    if side == Side::Tc {
        let name = match (method, path.trim_end_matches('/')) {
            ("GET", "/api/appAuth") => "tc appAuth",
            ("GET", "/api/v3/indicators") => "tc indicators",
            ("GET", "/api/v3/indicators/deleted") => "tc deleted",
            ("GET", "/api/v3/security/owners") => "tc owners",
            ("GET", "/api/v3/security/exclusionLists") => "tc exclusion lists",
            ("GET", p)
                if p.strip_prefix("/api/v3/security/exclusionLists/")
                    .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
            {
                "tc exclusion list"
            }
            _ => return None,
        };
        return Some((name, false));
    }
    if method == "POST" && path == "/api/v2/session/login" {
        return Some(("tanium login", false));
    }
    let (rest, bare) = if let Some(r) = path.strip_prefix(ApiGeneration::V4.base_path()) {
        (r, false)
    } else {
        (path.strip_prefix(ApiGeneration::V3.base_path())?, true)
    };
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let name = match (method, segs.as_slice()) {
        ("GET", ["sources"]) => "tanium sources",
        ("POST", ["sources"]) => "tanium source create",
        ("DELETE", ["sources", _]) => "tanium source delete",
        ("GET", ["intels"]) => "tanium intel listing",
        ("GET", ["intels", _]) => "tanium intel get",
        ("POST", ["sources", _, "intels"]) => "tanium intel create",
        ("PUT", ["intels", _]) => "tanium intel update",
        ("DELETE", ["intels"] | ["intels", _]) => "tanium intel delete",
        ("POST", ["intel", "deploy"]) => "tanium deploy",
        ("GET", ["intel", "status"]) => "tanium intel status",
        ("GET", ["tasks", _]) => "tanium task",
        ("GET", ["labels"]) => "tanium labels",
        ("POST", ["labels"]) => "tanium label create",
        ("PUT", ["intels", _, "labels"]) => "tanium intel label add",
        _ => return None,
    };
    Some((name, bare))
}

/// The recorded shape an answer must have: the fixture, or for a bare 3.x answer its 3.x
/// variant or else what the 4.x envelope holds (XSOAR reads both generations that way).
fn shape_of(name: &str, bare: bool) -> Value {
    let r = ROUTES
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}"));
    let mut v = match (bare, r.fixture_v3) {
        (true, Some(f)) => fixture(f),
        _ => fixture(r.fixture),
    };
    let optional = v.get("_optional").cloned();
    if bare && r.fixture_v3.is_none() {
        if let Some(inner) = v.get("data").cloned() {
            v = inner;
        }
    }
    if let (Some(o), Value::Object(m)) = (optional, &mut v) {
        m.insert("_optional".into(), o);
    }
    v
}

/// The fields a route's fixture lists as absent from some answers (`_optional`, at any depth;
/// kept apart from the shape, which a bare 3.x list cannot carry).
fn optional_of(name: &str) -> Vec<String> {
    let r = ROUTES
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}"));
    fixture(r.fixture)
        .get("_optional")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `answer` cut to the keys of `example`, recursively; values stay the server's. Records in a
/// list are matched to the example of the same `type` when the fixture has several.
fn conform(
    example: &Value,
    answer: &Value,
    optional: &[String],
    at: &str,
) -> Result<Value, String> {
    match (example, answer) {
        (Value::Object(e), Value::Object(a)) => {
            let mut out = Map::new();
            for (k, ev) in e {
                if k.starts_with('_') {
                    continue;
                }
                match a.get(k) {
                    Some(av) => {
                        out.insert(k.clone(), conform(ev, av, optional, &format!("{at}.{k}"))?);
                    }
                    None if optional.iter().any(|o| o == k) => {}
                    None => {
                        return Err(format!(
                            "{at}.{k} is missing (recorded answers have it): {answer}"
                        ))
                    }
                }
            }
            Ok(Value::Object(out))
        }
        // Lists of plain values (label ids) have no fields to cut.
        (Value::Array(e), Value::Array(_)) if e.iter().all(|x| !x.is_object()) => {
            Ok(answer.clone())
        }
        (Value::Array(e), Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, av)| {
                let at = format!("{at}[{i}]");
                let ex = match e.as_slice() {
                    [only] => only,
                    many => many
                        .iter()
                        .find(|x| x.get("type").is_some() && x.get("type") == av.get("type"))
                        .ok_or_else(|| {
                            format!("{at}: no recorded example of type {:?}", av.get("type"))
                        })?,
                };
                conform(ex, av, optional, &at)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Value::Object(_) | Value::Array(_), other) => Err(format!(
            "{at} is {}, recorded answers have {} there",
            kind(other),
            kind(example)
        )),
        _ => Ok(answer.clone()),
    }
}

struct ProxyState {
    side: Side,
    upstream: SocketAddr,
    /// Where `next` links point instead: a listener nothing may connect to.
    next_origin: Option<String>,
    hits: Mutex<BTreeMap<&'static str, u64>>,
    nexts: AtomicU64,
    violations: Mutex<Vec<String>>,
}

/// A shape-enforcing proxy in front of one simulator.
pub(crate) struct Proxy {
    server: Server,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(side: Side, upstream: SocketAddr, next_origin: Option<String>) -> Proxy {
        let state = Arc::new(ProxyState {
            side,
            upstream,
            next_origin,
            hits: Mutex::new(BTreeMap::new()),
            nexts: AtomicU64::new(0),
            violations: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let server = Server::start(0, Arc::new(move |r: &SimRequest| s.handle(r))).unwrap();
        Proxy { server, state }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    pub(crate) fn hits(&self) -> BTreeMap<&'static str, u64> {
        self.state.hits.lock().unwrap().clone()
    }

    fn nexts(&self) -> u64 {
        self.state.nexts.load(Ordering::SeqCst)
    }
}

impl ProxyState {
    fn handle(&self, req: &SimRequest) -> SimResponse {
        let what = format!("{} {}", req.method, req.target);
        let answer = match forward(self.upstream, req) {
            Ok(a) => a,
            Err(e) => return self.violation(format!("{what}: forwarding failed: {e}")),
        };
        // Error answers are not what the recordings show; the app meets them unchanged.
        if !(200..300).contains(&answer.status) {
            return answer;
        }
        let Some((name, bare)) = route_of(self.side, &req.method, &req.decoded_path()) else {
            return self.violation(format!("{what}: no recorded answer for this route"));
        };
        let body: Value = match serde_json::from_slice(&answer.body) {
            Ok(v) => v,
            Err(e) => return self.violation(format!("{what} ({name}): not JSON: {e}")),
        };
        let shape = shape_of(name, bare);
        let optional = optional_of(name);
        let pages = body.get("next").is_some_and(|n| !n.is_null());
        if pages && shape.get("next").is_none() {
            return self.violation(format!(
                "{what} ({name}): the answer pages with next, the recording never does"
            ));
        }
        let mut out = match conform(&shape, &body, &optional, name) {
            Ok(v) => v,
            Err(e) => return self.violation(format!("{what}: {e}")),
        };
        if let (true, Some(origin)) = (pages, &self.next_origin) {
            let next = out["next"].as_str().unwrap_or("").to_string();
            let rest = next
                .split_once("://")
                .and_then(|(_, r)| r.find('/').map(|i| r[i..].to_string()))
                .unwrap_or_default();
            out["next"] = json!(format!("{origin}{rest}"));
            self.nexts.fetch_add(1, Ordering::SeqCst);
        }
        *self.hits.lock().unwrap().entry(name).or_default() += 1;
        SimResponse::json(answer.status, &out)
    }

    /// Records the problem and answers 400, which the app does not retry.
    fn violation(&self, message: String) -> SimResponse {
        self.violations.lock().unwrap().push(message.clone());
        SimResponse::json(400, &json!({"status": "Error", "message": message}))
    }
}

/// Sends the request on to the simulator unchanged (the target byte for byte: TC's HMAC covers
/// it) and reads the whole answer.
fn forward(to: SocketAddr, req: &SimRequest) -> io::Result<SimResponse> {
    let mut s = TcpStream::connect(to)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {to}\r\nContent-Length: {}\r\n",
        req.method,
        req.target,
        req.body.len()
    );
    for (k, v) in &req.headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(&req.body)?;
    // The simulator serves a connection until the client stops sending.
    s.shutdown(Shutdown::Write)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no answer head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("no status"))?;
    let mut headers = Vec::new();
    let mut len = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            } else {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if let Some(n) = len {
        body.truncate(n);
    }
    Ok(SimResponse {
        status,
        headers,
        body,
    })
}

pub(crate) fn by_name(lab: &Lab) -> BTreeMap<String, SimDoc> {
    let docs = lab.source_docs();
    let n = docs.len();
    let map: BTreeMap<String, SimDoc> = docs.into_iter().map(|d| (d.name.clone(), d)).collect();
    assert_eq!(map.len(), n, "two documents share a name");
    map
}

pub(crate) fn held(lab: &Lab) -> Vec<String> {
    by_name(lab).into_keys().collect()
}

/// Creates, updates and deletes of intel documents and labels; deploys and the run lease's
/// requests left out.
pub(crate) fn tanium_writes(lab: &Lab, g: ApiGeneration) -> u64 {
    let s = lab.tanium.server();
    s.hits("POST /plugin") + s.hits("PUT /plugin") + s.hits("DELETE /plugin")
        - s.hits(&format!("POST {}/intel/deploy", g.base_path()))
        - lease_calls(s)
}

pub(crate) fn deploys(lab: &Lab, g: ApiGeneration) -> u64 {
    lab.tanium
        .server()
        .hits(&format!("POST {}/intel/deploy", g.base_path()))
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) generation: ApiGeneration,
    pub(crate) format: &'static str,
    /// TC job token (renewed through /appAuth) instead of HMAC.
    pub(crate) token: bool,
    pub(crate) seed: u64,
}

pub(crate) const CONFIGS: [Config; 4] = [
    Config {
        generation: ApiGeneration::V4,
        format: "STIX",
        token: true,
        seed: 31,
    },
    Config {
        generation: ApiGeneration::V4,
        format: "OpenIOC",
        token: false,
        seed: 32,
    },
    Config {
        generation: ApiGeneration::V3,
        format: "STIX",
        token: false,
        seed: 33,
    },
    Config {
        generation: ApiGeneration::V3,
        format: "OpenIOC",
        token: true,
        seed: 34,
    },
];

/// The routes a replay of `c` must exercise, each at least once, and no others.
fn expected_routes(c: Config) -> BTreeSet<&'static str> {
    ROUTES
        .iter()
        .map(|r| r.name)
        .filter(|n| *n != "tc appAuth" || c.token)
        .filter(|n| {
            !matches!(*n, "tanium deploy" | "tanium intel status" | "tanium task")
                || c.generation == ApiGeneration::V4
        })
        .collect()
}

pub(crate) struct Replay {
    _dir: tempfile::TempDir,
    pub(crate) lab: Lab,
    pub(crate) tc: Proxy,
    pub(crate) tanium: Proxy,
    trap: TcpListener,
    pub(crate) c: Config,
}

impl Replay {
    pub(crate) fn start(c: Config) -> Replay {
        let (dir, mut lab) = lab(c.generation, 150, c.seed);
        let trap = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let tc = Proxy::start(
            Side::Tc,
            lab.tc.server().addr(),
            Some(format!("http://{}", trap.local_addr().unwrap())),
        );
        let tanium = Proxy::start(Side::Tanium, lab.tanium.server().addr(), None);
        lab.set("tc_api_path", json!(format!("{}/api", tc.url())));
        lab.set("tanium_address", json!(tanium.url()));
        lab.set("intel_format", json!(c.format));
        // Several TC pages, so answers carry `next`.
        lab.set("tc_page_size", json!("50"));
        // A System-level list and an owner's, excluding nothing the dataset holds, so every
        // run reads both routes of the exclusion lists.
        lab.tc.add_exclusion_list(SimExclusionList::managed(
            "Indicator-Host",
            &["mail.replay.example"],
            &["*.internal.replay.example"],
        ));
        lab.tc.add_exclusion_list(SimExclusionList::new(
            "Address-IPv6",
            Some("Demo Organization"),
            &["2001:500:12::d0d"],
            &["100::/64"],
        ));
        if c.token {
            lab.params.remove("tc_api_access_id");
            lab.params.remove("tc_api_secret_key");
            lab.set("tc_token", json!(lab.tc.token()));
            // About to expire: each run renews it first.
            let soon = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
            lab.set("tc_token_expires", json!(soon.to_string()));
        }
        Replay {
            _dir: dir,
            lab,
            tc,
            tanium,
            trap,
            c,
        }
    }

    /// One run that must succeed with every answer in a recorded shape.
    pub(crate) fn ok(&mut self, step: &str) -> RunResult {
        self.lab.tanium.server().reset_counters();
        let r = self.lab.run(&Map::new(), &[]).unwrap();
        let v: Vec<String> = self
            .tc
            .violations()
            .into_iter()
            .chain(self.tanium.violations())
            .collect();
        assert!(
            v.is_empty(),
            "{:?} {step}: answers not in a recorded shape:\n{}",
            self.c,
            v.join("\n")
        );
        assert_eq!(r.code, 0, "{:?} {step}: {}\n{}", self.c, r.message, r.log);
        r
    }

    fn kind(&self) -> &'static str {
        match self.c.format {
            "STIX" => "stix",
            _ => "openioc",
        }
    }
}

fn replay(c: Config) {
    let mut x = Replay::start(c);
    let g = c.generation;

    let r = x.ok("first sync");
    let want = expected(&x.lab, |_| true);
    assert!(want.len() > 100, "{c:?}: dataset too small: {}", want.len());
    assert_eq!(held(&x.lab), want, "{c:?}: first sync");
    assert!(
        r.message
            .contains(&format!("{} created, 0 updated, 0 removed", want.len())),
        "{c:?}: {}",
        r.message
    );
    for d in x.lab.source_docs() {
        assert_eq!(d.kind, x.kind(), "{c:?}: {}", d.name);
    }
    assert_eq!(deploys(&x.lab, g), u64::from(g == ApiGeneration::V4));
    let first = by_name(&x.lab);

    let r = x.ok("no-change run");
    assert!(
        !r.message.contains("full reconcile"),
        "{c:?}: {}",
        r.message
    );
    assert!(
        r.message.contains("0 created, 0 updated, 0 removed"),
        "{c:?}: {}",
        r.message
    );
    assert_eq!(tanium_writes(&x.lab, g), 0, "{c:?}: no-change run wrote");
    assert_eq!(deploys(&x.lab, g), 0, "{c:?}: no-change run deployed");

    x.lab.set("reconcile_interval_hours", json!("0"));
    let r = x.ok("forced full reconcile");
    x.lab.params.remove("reconcile_interval_hours");
    assert!(
        r.message.contains("(full reconcile)"),
        "{c:?}: {}",
        r.message
    );
    assert!(
        r.message.contains(&format!(
            "0 created, 0 updated, 0 removed, {} unchanged",
            want.len()
        )),
        "{c:?}: {}",
        r.message
    );
    assert_eq!(tanium_writes(&x.lab, g), 0, "{c:?}: full reconcile wrote");
    assert_eq!(deploys(&x.lab, g), 0, "{c:?}: full reconcile deployed");
    assert_eq!(by_name(&x.lab), first, "{c:?}: nothing may change");

    // One indicator changed, one deleted in a Source owner (not the Organization, which the
    // deleted-indicators endpoint covers by default) and one deactivated.
    let live: Vec<Indicator> = x
        .lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active && expected_name(i).is_some())
        .collect();
    let deleted = live
        .iter()
        .find(|i| i.owner_name == "Partner Source")
        .unwrap()
        .clone();
    let others: Vec<&Indicator> = live.iter().filter(|i| i.id != deleted.id).collect();
    let (changed, deactivated) = (others[0].clone(), others[1].clone());
    x.lab.tc.update(changed.id, |i| {
        i.confidence = Some((i.confidence.unwrap_or(0) + 7) % 100)
    });
    assert!(x.lab.tc.delete(deleted.id));
    assert!(x.lab.tc.set_active(deactivated.id, false));
    let r = x.ok("changes");
    assert!(
        !r.message.contains("full reconcile"),
        "{c:?}: {}",
        r.message
    );
    assert!(
        r.message.contains("0 created, 1 updated, 2 removed"),
        "{c:?}: {}",
        r.message
    );
    let after = by_name(&x.lab);
    let name = |i: &Indicator| expected_name(i).unwrap();
    let mut want_after = first.clone();
    want_after.remove(&name(&deleted));
    want_after.remove(&name(&deactivated));
    let (b, a) = (&first[&name(&changed)], &after[&name(&changed)]);
    assert_eq!(
        (a.id, a.revision_id),
        (b.id, b.revision_id + 1),
        "{c:?}: updated in place"
    );
    assert_ne!(a.md5, b.md5, "{c:?}: new content");
    want_after.insert(name(&changed), a.clone());
    assert_eq!(after, want_after, "{c:?}: exactly those three changed");
    assert_eq!(held(&x.lab), expected(&x.lab, |_| true));
    assert_eq!(deploys(&x.lab, g), u64::from(g == ApiGeneration::V4));

    let r = x.ok("no-change run after changes");
    assert_eq!(tanium_writes(&x.lab, g), 0, "{c:?}: {}", r.message);
    assert_eq!(by_name(&x.lab), after);

    let hit: BTreeMap<&str, u64> = x.tc.hits().into_iter().chain(x.tanium.hits()).collect();
    assert_eq!(
        hit.keys().copied().collect::<BTreeSet<_>>(),
        expected_routes(c),
        "{c:?}: routes answered in a recorded shape: {hit:?}"
    );
    // The app's source once; each run's lease made and deleted.
    assert_eq!(
        hit["tanium source create"],
        hit["tanium source delete"] + 1,
        "{c:?}"
    );
    assert_eq!(x.lab.tanium.sources_named("ThreatConnect"), 1, "{c:?}");
    assert_eq!(
        x.lab.tanium.sources().len(),
        3,
        "{c:?}: the two built-in and the app's"
    );
    assert!(x.tc.nexts() > 0, "{c:?}: no page carried a next link");
    x.trap.set_nonblocking(true).unwrap();
    match x.trap.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("{c:?}: something connected to the next links' origin: {other:?}"),
    }
}

#[test]
fn replay_stix_on_tr4_with_a_job_token() {
    replay(CONFIGS[0]);
}

#[test]
fn replay_openioc_on_tr4_with_hmac() {
    replay(CONFIGS[1]);
}

#[test]
fn replay_stix_on_tr3_with_hmac() {
    replay(CONFIGS[2]);
}

#[test]
fn replay_openioc_on_tr3_with_a_job_token() {
    replay(CONFIGS[3]);
}

#[test]
fn every_fixture_is_a_route_with_its_evidence_and_every_route_is_replayed() {
    let mut files: BTreeSet<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json"))
        .collect();
    for r in &ROUTES {
        for f in std::iter::once(r.fixture).chain(r.fixture_v3) {
            assert!(files.remove(f), "{}: fixture {f} missing", r.name);
            let source = fixture(f)["_source"].as_str().unwrap_or("").to_string();
            assert!(source.len() > 20, "{f}: _source must name the evidence");
        }
    }
    assert!(files.is_empty(), "fixtures no route uses: {files:?}");
    let replayed: BTreeSet<&str> = CONFIGS.iter().flat_map(|c| expected_routes(*c)).collect();
    let all: BTreeSet<&str> = ROUTES.iter().map(|r| r.name).collect();
    assert_eq!(replayed, all);
}

#[test]
fn conforming_drops_unrecorded_fields_and_refuses_missing_ones() {
    let listing = shape_of("tanium intel listing", false);
    let row = json!({"id": 7, "revisionId": 1, "type": "stix", "typeVersion": "1.2",
        "isSchemaValid": true, "intrinsicId": "x", "md5": "m", "name": "n", "size": 3,
        "alertCount": 0, "compiled": null, "unresolvedAlertCount": 0, "labelIds": [],
        "sourceId": 2, "mitreAttack": null, "platforms": null, "createdAt": "c",
        "updatedAt": "u", "description": "listings have none"});
    let optional = optional_of("tanium intel listing");
    let out = conform(&listing, &json!({"data": [row.clone()]}), &optional, "t").unwrap();
    let mut without = row.clone();
    without.as_object_mut().unwrap().remove("description");
    assert_eq!(out, json!({"data": [without]}));
    let mut no_md5 = row.clone();
    no_md5.as_object_mut().unwrap().remove("md5");
    let e = conform(&listing, &json!({"data": [no_md5]}), &optional, "t").unwrap_err();
    assert!(e.contains("t.data[0].md5 is missing"), "{e}");
    let e = conform(&listing, &json!([row]), &[], "t").unwrap_err();
    assert!(e.contains("recorded answers have an object"), "{e}");

    let page = shape_of("tc indicators", false);
    let optional: Vec<String> = page["_optional"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut file = page["data"][2].clone();
    file.as_object_mut().unwrap().remove("sha256");
    file["extra"] = json!(1);
    let out = conform(
        &page,
        &json!({"data": [file], "status": "Success"}),
        &optional,
        "t",
    )
    .unwrap();
    assert_eq!(out["data"][0].get("extra"), None);
    assert_eq!(out["data"][0]["type"], "File");
    let mut host = page["data"][1].clone();
    host.as_object_mut().unwrap().remove("dnsActive");
    let e = conform(
        &page,
        &json!({"data": [host], "status": "Success"}),
        &optional,
        "t",
    );
    assert!(e.unwrap_err().contains("dnsActive is missing"));
    let url = json!({"data": [{"type": "URL", "text": "http://x"}], "status": "Success"});
    let e = conform(&page, &url, &optional, "t").unwrap_err();
    assert!(e.contains("no recorded example of type"), "{e}");

    let bare = shape_of("tanium intel listing", true);
    assert!(bare.is_array(), "3.x answers are bare");
    assert!(shape_of("tanium intel create", true)
        .get("funnelAllFindingsToConnectSetAt")
        .is_some());
}
