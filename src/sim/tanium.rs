//! A Tanium Threat Response simulator, faithful to `reference/tanium-tr-intel-api.md` in both
//! API generations, for the tests, the benchmark and the demo.
//!
//! Routes (`{base}` is `/plugin/products/threat-response/api/v1` on 4.x, answers wrapped in
//! `{"data": ...}`; `/plugin/products/detect3/api/v1` on 3.x, bare JSON; the other generation's
//! base answers 404):
//! - `POST /api/v2/session/login` `{"username","password"}` -> `{"data":{"session"}}`, 401 if wrong
//! - `GET /api/v2/session/current`, `POST /api/v2/session/validate` `{"session"}`
//! - `GET|POST {base}/sources`, `GET {base}/sources/{id}`
//! - `GET {base}/intels?limit=&offset=[&sourceId=]` (limit > 500 -> 400; `sourceId` ignored
//!   unless [`TaniumSim::set_honour_source_filter`]), `GET {base}/intels/{id}`
//! - `POST {base}/sources/{id}/intels` (XML checked with a real parser, else 400)
//! - `PUT {base}/intels/{id}`: in place (revisionId + 1) only when the intrinsic id is unchanged,
//!   otherwise a NEW document in the same source, as the real server does
//! - `DELETE {base}/intels/?id={id}` and `DELETE {base}/intels/{id}` (404 when absent)
//! - `POST {base}/intel/deploy` (4.x only, 404 on 3.x) -> `{"taskId"}`; `GET {base}/intel/status`
//!
//! Every route but login needs a `session` header holding a live session or the API token;
//! otherwise 4.x answers 401 and 3.x answers 403 (so clients meet both).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use md5::{Digest, Md5};
use serde_json::{json, Value};

use crate::sim::server::{Server, SimRequest, SimResponse};
use crate::tanium::model::ApiGeneration;

const LOGIN: &str = "/api/v2/session/login";
const CURRENT: &str = "/api/v2/session/current";
const VALIDATE: &str = "/api/v2/session/validate";
const MAX_LIMIT: usize = 500;
const DEFAULT_LIMIT: usize = 100;
const STAMP: &str = "2026-01-01T00:00:00.000Z";

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct TaniumSimOptions {
    /// Which API generation to speak.
    pub generation: ApiGeneration,
    /// Accepted login user.
    pub username: String,
    /// Accepted login password.
    pub password: String,
    /// API token accepted directly in the `session` header.
    pub api_token: Option<String>,
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
}

impl TaniumSimOptions {
    /// Defaults for tests: user `admin` / `s3cret!`, token `token-simulated`, any port.
    pub fn new(generation: ApiGeneration) -> Self {
        TaniumSimOptions {
            generation,
            username: "admin".into(),
            password: "s3cret!".into(),
            api_token: Some("token-simulated".into()),
            port: 0,
        }
    }
}

/// One stored intel document.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDoc {
    /// Tanium id.
    pub id: i64,
    /// Owning source.
    pub source_id: i64,
    /// Name (STIX Indicator Title / OpenIOC short_description / header / file name).
    pub name: String,
    /// Description (STIX Indicator Description / OpenIOC description).
    pub description: String,
    /// The root element's `id`.
    pub intrinsic_id: String,
    /// Hex MD5 of the body bytes.
    pub md5: String,
    /// 1 at creation, + 1 per in-place update.
    pub revision_id: i64,
    /// `stix`, `openioc`, ...
    pub kind: String,
    /// The document as uploaded.
    pub body: String,
    /// Body size in bytes.
    pub size: u64,
}

/// Misbehaviours of the intel listing, to prove the client's guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListingQuirk {
    /// Pages as specified.
    #[default]
    Normal,
    /// Every page starts at offset 0 (pages repeat).
    IgnoreOffset,
    /// Every page is full of fresh ids, forever.
    Endless,
}

#[derive(Debug, Clone)]
struct SimSource {
    id: i64,
    name: String,
    kind: String,
    description: String,
}

/// Where the last listing page ended, so sequential paging over a million docs stays linear.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    filter: Option<i64>,
    next_offset: usize,
    next_id: i64,
    mutations: u64,
}

#[derive(Debug, Default)]
struct State {
    sources: Vec<SimSource>,
    docs: BTreeMap<i64, SimDoc>,
    next_source: i64,
    next_doc: i64,
    sessions: HashSet<String>,
    logins: u64,
    deploys: u64,
    fail_writes: u32,
    mutations: u64,
    cursor: Option<Cursor>,
    quirk: ListingQuirk,
    ids_as_strings: bool,
    honour_source_filter: bool,
    /// Bodies are not kept (md5 and size still are): a million documents fit in memory.
    drop_bodies: bool,
}

struct Inner {
    opts: TaniumSimOptions,
    state: Mutex<State>,
}

/// A running Tanium TR simulator; stops when dropped.
pub struct TaniumSim {
    inner: Arc<Inner>,
    server: Server,
}

impl TaniumSim {
    /// Starts the simulator on 127.0.0.1 with one built-in source ("Tanium Signals", id 1).
    pub fn start(opts: TaniumSimOptions) -> std::io::Result<TaniumSim> {
        let state = State {
            sources: vec![SimSource {
                id: 1,
                name: "Tanium Signals".into(),
                kind: "tanium-signal".into(),
                description: "Built-in signals".into(),
            }],
            next_source: 2,
            next_doc: 1,
            ..State::default()
        };
        let port = opts.port;
        let inner = Arc::new(Inner {
            opts,
            state: Mutex::new(state),
        });
        let h = inner.clone();
        let server = Server::start(port, Arc::new(move |r: &SimRequest| h.handle(r)))?;
        Ok(TaniumSim { inner, server })
    }

    /// Base URL (`http://127.0.0.1:<port>`), as `tanium_address` would be normalised.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The HTTP server, for fault injection, latency and hit counters.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Invalidates every issued session (the next call with one gets 401 on 4.x, 403 on 3.x).
    pub fn expire_sessions(&self) {
        self.inner.lock().sessions.clear();
    }

    /// Successful logins so far.
    pub fn login_count(&self) -> u64 {
        self.inner.lock().logins
    }

    /// All documents of all sources, by id.
    pub fn docs(&self) -> Vec<SimDoc> {
        self.inner.lock().docs.values().cloned().collect()
    }

    /// The documents of one source, by id.
    pub fn docs_in(&self, source_id: i64) -> Vec<SimDoc> {
        self.inner
            .lock()
            .docs
            .values()
            .filter(|d| d.source_id == source_id)
            .cloned()
            .collect()
    }

    /// Number of documents of all sources (cheap, for large benchmarks).
    pub fn doc_count(&self) -> usize {
        self.inner.lock().docs.len()
    }

    /// Id of the source with exactly this name.
    pub fn source_id(&self, name: &str) -> Option<i64> {
        self.inner
            .lock()
            .sources
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.id)
    }

    /// Number of sources with exactly this name (duplicates are a client bug).
    pub fn sources_named(&self, name: &str) -> usize {
        self.inner
            .lock()
            .sources
            .iter()
            .filter(|s| s.name == name)
            .count()
    }

    /// Creates a source as a console user would (type `user`).
    pub fn add_source(&self, name: &str) -> i64 {
        let mut st = self.inner.lock();
        add_source(&mut st, name, "user", "")
    }

    /// Stores a hand-made document (XML is parsed when it is XML; anything else is kept as is).
    pub fn add_doc(&self, source_id: i64, name: &str, body: &str) -> i64 {
        let mut st = self.inner.lock();
        let mut parsed =
            parse_upload(body.as_bytes(), None, Some(name), None, None).unwrap_or(Parsed {
                kind: "yara".into(),
                intrinsic_id: name.into(),
                name: String::new(),
                description: String::new(),
            });
        // the console user's name wins over the one inside the document
        parsed.name = name.into();
        insert_doc(&mut st, source_id, parsed, body).id
    }

    /// Deletes a document as a console user would.
    pub fn delete_doc(&self, id: i64) {
        let mut st = self.inner.lock();
        st.docs.remove(&id);
        st.mutations += 1;
    }

    /// `POST /intel/deploy` calls accepted.
    pub fn deploy_count(&self) -> u64 {
        self.inner.lock().deploys
    }

    /// Answers 500 to the next `n` writes on intel documents (create, replace, delete).
    pub fn fail_next_writes(&self, n: u32) {
        self.inner.lock().fail_writes = n;
    }

    /// Makes the intel listing misbehave.
    pub fn set_listing_quirk(&self, q: ListingQuirk) {
        self.inner.lock().quirk = q;
    }

    /// Sends ids (`id`, `sourceId`) as numeric strings instead of numbers.
    pub fn set_ids_as_strings(&self, on: bool) {
        self.inner.lock().ids_as_strings = on;
    }

    /// Keeps only md5, size and metadata of uploads, not their bodies (for large benchmarks:
    /// a million documents would otherwise hold gigabytes); `contents` then reads empty.
    pub fn set_keep_bodies(&self, on: bool) {
        self.inner.lock().drop_bodies = !on;
    }

    /// Applies the listing's `sourceId` parameter (off by default: all sources are listed).
    pub fn set_honour_source_filter(&self, on: bool) {
        self.inner.lock().honour_source_filter = on;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gen(&self) -> ApiGeneration {
        self.opts.generation
    }

    /// The generation's envelope: `{"data": v}` on 4.x, bare on 3.x.
    fn reply(&self, status: u16, v: Value) -> SimResponse {
        match self.gen() {
            ApiGeneration::V4 => SimResponse::json(status, &json!({ "data": v })),
            ApiGeneration::V3 => SimResponse::json(status, &v),
        }
    }

    fn handle(&self, req: &SimRequest) -> SimResponse {
        let path = req.decoded_path();
        if path == LOGIN {
            return self.login(req);
        }
        let session = req.header("session").unwrap_or("");
        let authorised = !session.is_empty()
            && (self.opts.api_token.as_deref() == Some(session)
                || self.lock().sessions.contains(session));
        if !authorised {
            let status = match self.gen() {
                ApiGeneration::V4 => 401,
                ApiGeneration::V3 => 403,
            };
            return error(status, "not authorized");
        }
        if path == CURRENT && req.method == "GET" {
            return SimResponse::json(
                200,
                &json!({"data": {"id": 1, "user_id": 1, "user_name": self.opts.username}}),
            );
        }
        if path == VALIDATE && req.method == "POST" {
            return SimResponse::json(200, &json!({"data": {"session": "valid"}}));
        }
        let Some(rest) = path.strip_prefix(self.gen().base_path()) else {
            return error(404, "not found");
        };
        let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let write = matches!(
            (req.method.as_str(), segs.as_slice()),
            ("POST", ["sources", _, "intels"])
                | ("PUT", ["intels", _])
                | ("DELETE", ["intels", ..])
        );
        if write {
            let mut st = self.lock();
            if st.fail_writes > 0 {
                st.fail_writes -= 1;
                return error(500, "injected write failure");
            }
        }
        match (req.method.as_str(), segs.as_slice()) {
            ("GET", ["sources"]) => {
                let st = self.lock();
                let rows: Vec<Value> = st
                    .sources
                    .iter()
                    .map(|s| self.source_json(&st, s))
                    .collect();
                self.reply(200, Value::Array(rows))
            }
            ("POST", ["sources"]) => self.create_source(req),
            ("GET", ["sources", id]) => {
                let st = self.lock();
                match id_of(id).and_then(|id| st.sources.iter().find(|s| s.id == id)) {
                    Some(s) => self.reply(200, self.source_json(&st, s)),
                    None => error(404, "source not found"),
                }
            }
            ("POST", ["sources", id, "intels"]) => self.create_doc(req, id),
            ("GET", ["intels"]) => self.list(req),
            ("GET", ["intels", id]) => {
                let st = self.lock();
                match id_of(id).and_then(|id| st.docs.get(&id)) {
                    Some(d) => {
                        let mut v = doc_json(d, st.ids_as_strings);
                        v["contents"] = Value::String(d.body.clone());
                        self.reply(200, v)
                    }
                    None => error(404, "intel not found"),
                }
            }
            ("PUT", ["intels", id]) => self.replace_doc(req, id),
            ("DELETE", ["intels"]) => match req.param("id") {
                Some(id) => self.delete(id),
                None => error(400, "id is required"),
            },
            ("DELETE", ["intels", id]) => self.delete(id),
            ("POST", ["intel", "deploy"]) if self.gen() == ApiGeneration::V4 => {
                let mut st = self.lock();
                st.deploys += 1;
                let task = 700 + st.deploys;
                self.reply(200, json!({ "taskId": task }))
            }
            ("GET", ["intel", "status"]) => {
                let st = self.lock();
                let size: u64 = st.docs.values().map(|d| d.size).sum();
                self.reply(
                    200,
                    json!({"createdAt": STAMP, "modifiedAt": STAMP,
                           "currentRevision": st.deploys, "currentSize": size}),
                )
            }
            _ => error(404, "not found"),
        }
    }

    fn login(&self, req: &SimRequest) -> SimResponse {
        if req.method != "POST" {
            return error(405, "method not allowed");
        }
        let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
            return error(400, "body must be JSON");
        };
        let ok = v.get("username").and_then(Value::as_str) == Some(self.opts.username.as_str())
            && v.get("password").and_then(Value::as_str) == Some(self.opts.password.as_str());
        if !ok {
            return error(401, "invalid username or password");
        }
        let mut st = self.lock();
        st.logins += 1;
        let session = format!("1-{}-{:016x}", st.logins, md5_u64(st.logins));
        st.sessions.insert(session.clone());
        SimResponse::json(200, &json!({"data": {"session": session}}))
    }

    fn source_json(&self, st: &State, s: &SimSource) -> Value {
        json!({"id": id_value(s.id, st.ids_as_strings), "name": s.name, "type": s.kind,
               "description": s.description, "enabled": true,
               "createdAt": STAMP, "updatedAt": STAMP})
    }

    fn create_source(&self, req: &SimRequest) -> SimResponse {
        let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
            return error(400, "body must be JSON");
        };
        let name = v.get("name").and_then(Value::as_str).unwrap_or("").trim();
        if name.is_empty() {
            return error(400, "name is required");
        }
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("api-client");
        let description = v.get("description").and_then(Value::as_str).unwrap_or("");
        let mut st = self.lock();
        if st.sources.iter().any(|s| s.name == name) {
            return error(409, "a source with this name exists");
        }
        let id = add_source(&mut st, name, kind, description);
        let s = st.sources.iter().find(|s| s.id == id).cloned();
        match s {
            Some(s) => self.reply(200, self.source_json(&st, &s)),
            None => error(500, "source vanished"),
        }
    }

    fn list(&self, req: &SimRequest) -> SimResponse {
        let limit = match req.param("limit").map(str::parse::<usize>) {
            None => DEFAULT_LIMIT,
            Some(Ok(l)) if l <= MAX_LIMIT => l,
            Some(_) => return error(400, "limit must be a number no greater than 500"),
        };
        let offset = match req.param("offset").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(o)) => o,
            Some(Err(_)) => return error(400, "offset must be a number"),
        };
        let filter_param = req.param("sourceId").and_then(id_of);
        let mut st = self.lock();
        let filter = if st.honour_source_filter {
            filter_param
        } else {
            None
        };
        let strings = st.ids_as_strings;
        let rows: Vec<Value> = match st.quirk {
            ListingQuirk::Endless => {
                let start = st.next_doc;
                st.next_doc += limit as i64;
                (start..start + limit as i64)
                    .map(|id| {
                        json!({"id": id_value(id, strings), "sourceId": id_value(filter_param.unwrap_or(1), strings),
                               "name": format!("endless {id}"), "intrinsicId": format!("endless-{id}"),
                               "revisionId": 1, "type": "openioc"})
                    })
                    .collect()
            }
            quirk => {
                let offset = if quirk == ListingQuirk::IgnoreOffset {
                    0
                } else {
                    offset
                };
                let keep = |d: &&SimDoc| filter.is_none_or(|f| d.source_id == f);
                let page: Vec<&SimDoc> = match st.cursor {
                    Some(c)
                        if c.filter == filter
                            && c.next_offset == offset
                            && c.mutations == st.mutations =>
                    {
                        st.docs
                            .range(c.next_id..)
                            .map(|(_, d)| d)
                            .filter(keep)
                            .take(limit)
                            .collect()
                    }
                    _ => st
                        .docs
                        .values()
                        .filter(keep)
                        .skip(offset)
                        .take(limit)
                        .collect(),
                };
                let rows = page.iter().map(|d| doc_json(d, strings)).collect();
                let next_id = page.last().map(|d| d.id + 1);
                let cursor = next_id.map(|next_id| Cursor {
                    filter,
                    next_offset: offset + page.len(),
                    next_id,
                    mutations: st.mutations,
                });
                st.cursor = cursor;
                rows
            }
        };
        self.reply(200, Value::Array(rows))
    }

    fn create_doc(&self, req: &SimRequest, source: &str) -> SimResponse {
        let Some(source_id) = id_of(source) else {
            return error(400, "bad source id");
        };
        if !self.lock().sources.iter().any(|s| s.id == source_id) {
            return error(404, "source not found");
        }
        let (parsed, body) = match parse_request(req) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let mut st = self.lock();
        let strings = st.ids_as_strings;
        let doc = insert_doc(&mut st, source_id, parsed, &body);
        self.reply(200, doc_json(&doc, strings))
    }

    fn replace_doc(&self, req: &SimRequest, id: &str) -> SimResponse {
        let Some(id) = id_of(id) else {
            return error(400, "bad intel id");
        };
        let (parsed, body) = match parse_request(req) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let mut st = self.lock();
        let strings = st.ids_as_strings;
        let Some(existing) = st
            .docs
            .get(&id)
            .map(|d| (d.source_id, d.intrinsic_id.clone()))
        else {
            return error(404, "intel not found");
        };
        let (source_id, intrinsic) = existing;
        if parsed.intrinsic_id != intrinsic {
            // The real server keeps the old document and files the content as a new one.
            let doc = insert_doc(&mut st, source_id, parsed, &body);
            return self.reply(200, doc_json(&doc, strings));
        }
        st.mutations += 1;
        let drop_bodies = st.drop_bodies;
        let Some(d) = st.docs.get_mut(&id) else {
            return error(404, "intel not found");
        };
        d.revision_id += 1;
        d.md5 = md5_hex(body.as_bytes());
        d.size = body.len() as u64;
        d.name = parsed.name;
        d.description = parsed.description;
        d.kind = parsed.kind;
        d.body = if drop_bodies { String::new() } else { body };
        let v = doc_json(d, strings);
        self.reply(200, v)
    }

    fn delete(&self, id: &str) -> SimResponse {
        let Some(id) = id_of(id) else {
            return error(400, "bad intel id");
        };
        let mut st = self.lock();
        if st.docs.remove(&id).is_none() {
            return error(404, "intel not found");
        }
        st.mutations += 1;
        self.reply(200, json!({}))
    }
}

fn error(status: u16, message: &str) -> SimResponse {
    SimResponse::json(status, &json!({ "text": message }))
}

fn id_of(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

fn id_value(id: i64, as_string: bool) -> Value {
    if as_string {
        Value::String(id.to_string())
    } else {
        json!(id)
    }
}

fn add_source(st: &mut State, name: &str, kind: &str, description: &str) -> i64 {
    let id = st.next_source;
    st.next_source += 1;
    st.sources.push(SimSource {
        id,
        name: name.into(),
        kind: kind.into(),
        description: description.into(),
    });
    id
}

fn insert_doc(st: &mut State, source_id: i64, p: Parsed, body: &str) -> SimDoc {
    let id = st.next_doc;
    st.next_doc += 1;
    st.mutations += 1;
    let doc = SimDoc {
        id,
        source_id,
        name: p.name,
        description: p.description,
        intrinsic_id: p.intrinsic_id,
        md5: md5_hex(body.as_bytes()),
        revision_id: 1,
        kind: p.kind,
        body: if st.drop_bodies {
            String::new()
        } else {
            body.to_string()
        },
        size: body.len() as u64,
    };
    st.docs.insert(id, doc.clone());
    doc
}

fn doc_json(d: &SimDoc, strings: bool) -> Value {
    json!({
        "id": id_value(d.id, strings), "revisionId": d.revision_id, "type": d.kind,
        "typeVersion": if d.kind == "stix" { "1.2" } else { "1.1" }, "isSchemaValid": true,
        "intrinsicId": d.intrinsic_id, "md5": d.md5, "name": d.name, "description": d.description,
        "size": d.size, "alertCount": 0, "unresolvedAlertCount": 0, "compiled": null,
        "labelIds": [], "sourceId": id_value(d.source_id, strings), "mitreAttack": null,
        "platforms": null, "createdAt": STAMP, "updatedAt": STAMP
    })
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn md5_u64(n: u64) -> u64 {
    let d = Md5::digest(n.to_le_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// What the server reads out of an upload.
#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    kind: String,
    intrinsic_id: String,
    name: String,
    description: String,
}

/// The upload's metadata and body text, or the 400 answer for a body that is not XML.
fn parse_request(req: &SimRequest) -> Result<(Parsed, String), SimResponse> {
    let file_name = req
        .header("content-disposition")
        .and_then(disposition_file_name);
    let parsed = parse_upload(
        &req.body,
        req.header("type"),
        req.header("name"),
        req.header("description"),
        file_name.as_deref(),
    )
    .map_err(|m| error(400, &m))?;
    Ok((parsed, String::from_utf8_lossy(&req.body).into_owned()))
}

/// `attachment; filename="x.xml"` (or `filename = x.xml`) -> `x.xml`.
fn disposition_file_name(v: &str) -> Option<String> {
    let i = v.to_ascii_lowercase().find("filename")?;
    let rest = v[i + "filename".len()..].trim_start().strip_prefix('=')?;
    let name = rest.split(';').next()?.trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Checks well-formedness and reads type, intrinsic id, name and description from the XML.
fn parse_upload(
    body: &[u8],
    type_header: Option<&str>,
    name_header: Option<&str>,
    description_header: Option<&str>,
    file_name: Option<&str>,
) -> Result<Parsed, String> {
    let text = std::str::from_utf8(body).map_err(|_| "intel document is not UTF-8".to_string())?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("malformed XML: {e}"))?;
    let root = doc.root_element();
    let sniffed = match root.tag_name().name() {
        "STIX_Package" => Some("stix"),
        "ioc" | "OpenIOC" => Some("openioc"),
        _ => None,
    };
    let kind = type_header
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .or_else(|| sniffed.map(str::to_string))
        .ok_or_else(|| "unknown intel type: send a type header".to_string())?;
    let text_of = |n: roxmltree::Node| -> String {
        n.descendants()
            .filter(|d| d.is_text())
            .filter_map(|d| d.text())
            .collect::<String>()
            .trim()
            .to_string()
    };
    let child_of = |parent: &str, child: &str| {
        root.descendants()
            .find(|n| {
                n.is_element()
                    && n.tag_name().name() == child
                    && n.parent_element()
                        .is_some_and(|p| p.tag_name().name() == parent)
            })
            .map(text_of)
            .filter(|t| !t.is_empty())
    };
    let (name, description) = match sniffed {
        Some("stix") => (
            child_of("Indicator", "Title").or_else(|| child_of("STIX_Header", "Title")),
            child_of("Indicator", "Description").or_else(|| child_of("STIX_Header", "Description")),
        ),
        // OpenIOC 1.0 (`ioc`) keeps them under the root, 1.1 (`OpenIOC`) under `metadata`.
        Some(_) => (
            child_of(root.tag_name().name(), "short_description")
                .or_else(|| child_of("metadata", "short_description")),
            child_of(root.tag_name().name(), "description")
                .or_else(|| child_of("metadata", "description")),
        ),
        None => (None, None),
    };
    let fallback_name = name_header
        .or(file_name)
        .map(str::to_string)
        .unwrap_or_default();
    let intrinsic_id = root
        .attribute("id")
        .map(str::to_string)
        .or_else(|| file_name.map(str::to_string))
        .unwrap_or_else(|| fallback_name.clone());
    Ok(Parsed {
        kind,
        name: name.unwrap_or_else(|| {
            if fallback_name.is_empty() {
                intrinsic_id.clone()
            } else {
                fallback_name.clone()
            }
        }),
        description: description
            .or_else(|| description_header.map(str::to_string))
            .unwrap_or_default(),
        intrinsic_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stix_and_openioc_metadata() {
        let stix = r#"<stix:STIX_Package xmlns:stix="http://stix.mitre.org/stix-1" xmlns:indicator="http://stix.mitre.org/Indicator-2" id="tc:Package-1" version="1.2"><stix:Indicators><stix:Indicator><indicator:Title>T &amp; 1</indicator:Title><indicator:Description>D</indicator:Description></stix:Indicator></stix:Indicators></stix:STIX_Package>"#;
        let p = parse_upload(stix.as_bytes(), None, None, None, Some("f.xml")).unwrap();
        assert_eq!(
            p,
            Parsed {
                kind: "stix".into(),
                intrinsic_id: "tc:Package-1".into(),
                name: "T & 1".into(),
                description: "D".into()
            }
        );
        let ioc = r#"<ioc xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="abc"><short_description>S</short_description><description>Desc</description></ioc>"#;
        let p = parse_upload(ioc.as_bytes(), Some("OpenIOC"), None, None, None).unwrap();
        assert_eq!(
            (p.kind.as_str(), p.intrinsic_id.as_str(), p.name.as_str()),
            ("openioc", "abc", "S")
        );
        let ioc11 = r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="x"><metadata><short_description>Bücher 例え</short_description><description>D</description></metadata></OpenIOC>"#;
        let p = parse_upload(ioc11.as_bytes(), None, Some("B?cher ??"), None, None).unwrap();
        assert_eq!(
            (p.name.as_str(), p.description.as_str()),
            ("Bücher 例え", "D")
        );
        assert!(parse_upload(b"<a><b></a>", Some("stix"), None, None, None).is_err());
        assert!(parse_upload(b"<unknown/>", None, None, None, None).is_err());
        let p = parse_upload(b"<x/>", Some("stix"), Some("hdr"), None, Some("f.xml")).unwrap();
        assert_eq!((p.name.as_str(), p.intrinsic_id.as_str()), ("hdr", "f.xml"));
    }

    #[test]
    fn content_disposition_file_names() {
        assert_eq!(
            disposition_file_name("attachment; filename=a.xml").as_deref(),
            Some("a.xml")
        );
        assert_eq!(
            disposition_file_name("attachment; filename = \"b c.ioc\"; x=1").as_deref(),
            Some("b c.ioc")
        );
        assert_eq!(disposition_file_name("attachment"), None);
    }
}
