//! A Tanium Threat Response simulator, faithful to `reference/tanium-tr-intel-api.md` in both
//! API generations, for the tests, the benchmark and the demo.
//!
//! Routes (`{base}` is `/plugin/products/threat-response/api/v1` on 4.x, answers wrapped in
//! `{"data": ...}`; `/plugin/products/detect3/api/v1` on 3.x, bare JSON; the other generation's
//! base answers 404 unless [`TaniumSim::set_other_generation_status`] says otherwise):
//! - `POST /api/v2/session/login` `{"username","password"}` -> `{"data":{"session"}}`, 401 if wrong
//! - `GET /api/v2/session/current`, `POST /api/v2/session/validate` `{"session"}`
//! - `GET|POST {base}/sources` (rows with `indicatorCount` and `signalCount`, as Detect 3
//!   lists them; a name held already answers 409 unless
//!   [`TaniumSim::set_duplicate_source_names`]), `GET {base}/sources/{id}`,
//!   `DELETE {base}/sources/{id}` (the source and its documents; 404 when absent; documented
//!   for Detect 3 only, so [`TaniumSim::set_source_delete_status`] makes the route missing)
//! - `GET {base}/intels?limit=&offset=[&sourceId=]` (limit > 500 -> 400; `sourceId` ignored
//!   unless [`TaniumSim::set_honour_source_filter`]; rows carry no `description`, as on real
//!   servers), `GET {base}/intels/{id}` (with `description` and `contents`)
//! - `POST {base}/sources/{id}/intels` (XML checked with a real parser, else 400); the reply
//!   adds `blobId` and `contents` (and on 3.x the `funnel...`/`gather...` fields) as recorded
//! - `PUT {base}/intels/{id}`: in place (revisionId + 1) only when the intrinsic id is unchanged,
//!   otherwise a NEW document in the same source, as the real server does
//! - `DELETE {base}/intels/?id={id}` and `DELETE {base}/intels/{id}` (404 when absent)
//! - `POST {base}/intel/deploy` (4.x only, 404 on 3.x) -> `{"taskId"}`, a task that runs for
//!   [`TaniumSim::set_deploy_duration`]; while one runs another is refused with 400 (switch
//!   [`TaniumSim::set_refuse_deploy_while_running`]); `GET {base}/tasks/{id}` -> `status`
//!   `STARTED` or `COMPLETED` with start and end times; `GET {base}/intel/status` in its
//!   recorded shape (no progress field unless [`TaniumSim::set_status_reports_deploy`])
//! - `GET {base}/labels`, paged as recorded: 100 labels without parameters, `limit` (at most
//!   500) with `offset`, all with `noLimit=true` unless [`TaniumSim::set_labels_no_limit`]
//!   says the server ignores it; `POST {base}/labels` `{"name","description"}` (a name held
//!   already answers 409; compared exactly unless [`TaniumSim::set_label_names_ignore_case`])
//! - 4.x listings carry `meta.totalCount` with [`TaniumSim::set_list_meta`]
//! - `GET {base}/alerts` in the recorded shape, alerts raised by tests (see [`crate::sim::alerts`])
//! - `GET {base}/intels/{id}/labels`, `PUT {base}/intels/{id}/labels` `{"id"}` (an unknown
//!   label id answers 500, as recorded) and
//!   `DELETE {base}/intels/{id}/labels/{labelId}` (each answers the labels left on the
//!   document); documents carry `labelIds` in listings and reads unless
//!   [`TaniumSim::set_label_ids_listed`] says otherwise
//!
//! Every route but login needs a `session` header holding a live session or the API token;
//! otherwise 4.x answers 401 (403 with [`TaniumSim::set_expired_session_answers_403`]) and 3.x
//! answers 403 (so clients meet both). Routes denied with
//! [`TaniumSim::deny`] answer 403 to a valid session (a missing permission), and
//! [`TaniumSim::set_password_login`] refuses every login as Tanium Cloud does.
//!
//! Where reality is unconfirmed the simulator has a switch and tests cover both ways: where a
//! STIX document's intrinsic id comes from ([`IntrinsicFrom`]), whether content is stored as
//! uploaded ([`TaniumSim::set_reserialise`]), what a 3.x server answers on the 4.x path, and
//! whether a delete answers JSON ([`TaniumSim::set_delete_reply_text`]), whether listings carry
//! `labelIds`, whether a replaced document keeps its labels
//! ([`TaniumSim::set_update_keeps_labels`]), how label names compare, whether two sources may
//! share a name and whether sources can be deleted.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use md5::{Digest, Md5};
use serde_json::{json, Value};

use crate::sim::alerts::{AlertSpec, Alerts, SimAlert};
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
    /// Hex MD5 of the stored bytes.
    pub md5: String,
    /// 1 at creation, + 1 per in-place update.
    pub revision_id: i64,
    /// `stix`, `openioc`, ...
    pub kind: String,
    /// The document as stored (as uploaded unless [`TaniumSim::set_reserialise`]).
    pub body: String,
    /// Stored size in bytes.
    pub size: u64,
    /// Sorted.
    pub label_ids: Vec<i64>,
    /// What Threat Response's intel health says of it (4.x).
    pub health: DocHealth,
}

/// Intel health as 4.x intel objects carry it (`disabled`, `disabledEndpointCount`,
/// `throttledFindingCount`, ...): Threat Response turns noisy intel off on its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocHealth {
    /// Turned off everywhere.
    pub disabled: bool,
    /// Endpoints on which it is turned off.
    pub disabled_endpoints: u64,
    pub throttled_findings: u64,
}

/// Which element's `id` a STIX document's `intrinsicId` is read from (OpenIOC: always the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntrinsicFrom {
    /// The `STIX_Package` root's `id`.
    #[default]
    PackageRoot,
    /// The first `stix:Indicator`'s `id` (the root's when there is none).
    FirstIndicator,
}

/// A label as `GET {base}/labels` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimLabel {
    /// Label id.
    pub id: i64,
    /// Label name.
    pub name: String,
    /// Label description.
    pub description: String,
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
    /// The source's newest document is never listed (a listing that ends short).
    DropsLast,
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
    /// Every session a login handed out, live or not, in order.
    issued: Vec<String>,
    logins: u64,
    /// The next session issued is already expired (as if it timed out before its first use).
    next_session_stale: bool,
    deploys: Deploys,
    fail_writes: u32,
    mutations: u64,
    cursor: Option<Cursor>,
    quirk: ListingQuirk,
    ids_as_strings: bool,
    honour_source_filter: bool,
    /// Bodies are not kept (md5 and size still are): a million documents fit in memory.
    drop_bodies: bool,
    intrinsic_from: IntrinsicFrom,
    reserialise: bool,
    other_generation_status: u16,
    denied: Vec<(Option<String>, String)>,
    delete_reply_text: bool,
    password_login: bool,
    labels: Vec<SimLabel>,
    next_label: i64,
    label_ids_unlisted: bool,
    update_drops_labels: bool,
    label_names_ignore_case: bool,
    last_upload_headers: Vec<(String, String)>,
    duplicate_source_names: bool,
    /// What `DELETE {base}/sources/{id}` answers when the server has no such route.
    source_delete_missing: Option<u16>,
    /// `noLimit=true` on the label listing is ignored (the default page comes back).
    labels_no_limit_ignored: bool,
    /// Listings carry `meta.totalCount` (4.x).
    list_meta: bool,
    /// 4.x listing rows leave the intel health fields out.
    health_unlisted: bool,
    label_quirk: ListingQuirk,
    /// A label deleted right after the next label listing.
    label_vanishes: Option<String>,
    /// 4.x answers 403, not 401, to a session it does not know (an expired one).
    refused_session_403: bool,
    alerts: Alerts,
}

/// Intel deploys, each a task as recorded (`POST {base}/intel/deploy` answers its id).
#[derive(Debug)]
struct Deploys {
    tasks: BTreeMap<i64, SimTask>,
    next_task: i64,
    /// Deploys the job started (accepted `POST`s).
    accepted: u64,
    /// How long a deploy the job starts runs; None: until finished by hand.
    duration: Option<std::time::Duration>,
    refuse_while_running: bool,
    status_field: bool,
}

impl Default for Deploys {
    fn default() -> Self {
        Deploys {
            tasks: BTreeMap::new(),
            next_task: 779,
            accepted: 0,
            duration: Some(std::time::Duration::ZERO),
            refuse_while_running: true,
            status_field: false,
        }
    }
}

impl Deploys {
    fn start(&mut self, by_job: bool, duration: Option<std::time::Duration>) -> i64 {
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.insert(
            id,
            SimTask {
                id,
                by_job,
                started: std::time::Instant::now(),
                started_at: time::OffsetDateTime::now_utc(),
                duration,
                finished_at: None,
            },
        );
        id
    }

    fn running(&self) -> Option<&SimTask> {
        self.tasks.values().find(|t| t.running())
    }

    fn completed(&self) -> usize {
        self.tasks.values().filter(|t| !t.running()).count()
    }

    fn finish_all(&mut self) {
        let now = time::OffsetDateTime::now_utc();
        for t in self.tasks.values_mut().filter(|t| t.running()) {
            t.finished_at = Some(now);
        }
    }
}

#[derive(Debug)]
struct SimTask {
    id: i64,
    /// Started by the job's `POST` (else by hand, as in the console).
    by_job: bool,
    started: std::time::Instant,
    started_at: time::OffsetDateTime,
    duration: Option<std::time::Duration>,
    finished_at: Option<time::OffsetDateTime>,
}

impl SimTask {
    fn running(&self) -> bool {
        self.finished_at.is_none() && self.duration.is_none_or(|d| self.started.elapsed() < d)
    }

    fn json(&self) -> Value {
        let stamp = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let ended = self
            .finished_at
            .or_else(|| {
                let d = self.duration?;
                (self.started.elapsed() >= d).then(|| self.started_at + d)
            })
            .map(stamp);
        json!({
            "id": self.id, "type": if self.by_job { "intelDeploy" } else { "intelDeployConsole" },
            "status": if ended.is_some() { "COMPLETED" } else { "STARTED" },
            "metadata": {}, "results": {}, "error": null,
            "startTime": stamp(self.started_at), "endTime": ended,
            "createdAt": stamp(self.started_at),
            "updatedAt": ended.clone().unwrap_or_else(|| stamp(self.started_at)),
        })
    }
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
    /// Starts the simulator on 127.0.0.1 with Threat Response's built-in sources as recorded:
    /// id 1 where documents posted without a source land (analysts' uploads), id 2 Tanium
    /// Signals. Their `type` values are not recorded.
    pub fn start(opts: TaniumSimOptions) -> std::io::Result<TaniumSim> {
        let state = State {
            sources: vec![
                SimSource {
                    id: 1,
                    name: "User".into(),
                    kind: "user".into(),
                    description: "Intel uploaded by users".into(),
                },
                SimSource {
                    id: 2,
                    name: "Tanium Signals".into(),
                    kind: "tanium-signal".into(),
                    description: "Built-in signals".into(),
                },
            ],
            next_source: 3,
            next_doc: 1,
            next_label: 1,
            other_generation_status: 404,
            password_login: true,
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

    /// Issues the next login's session already expired, as when it times out between the
    /// login and the first call.
    pub fn expire_next_session_at_once(&self) {
        self.inner.lock().next_session_stale = true;
    }

    /// Whether 4.x answers 403 rather than 401 to an expired (or unknown) session, as XSOAR and
    /// Splunk SOAR expect of it (they log in again on a 403); 3.x always answers 403.
    pub fn set_expired_session_answers_403(&self, on: bool) {
        self.inner.lock().refused_session_403 = on;
    }

    /// Successful logins so far.
    pub fn login_count(&self) -> u64 {
        self.inner.lock().logins
    }

    /// Every session token a login handed out (expired ones too): secrets the app must never
    /// write anywhere.
    pub fn issued_sessions(&self) -> Vec<String> {
        self.inner.lock().issued.clone()
    }

    /// Changes a stored document behind the app's back (an admin's edit, a damaged store).
    pub fn tamper(&self, doc_id: i64, f: impl FnOnce(&mut SimDoc)) -> bool {
        let mut st = self.inner.lock();
        match st.docs.get_mut(&doc_id) {
            Some(d) => {
                f(d);
                true
            }
            None => false,
        }
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

    /// Every source as (id, name), by id.
    pub fn sources(&self) -> Vec<(i64, String)> {
        self.inner
            .lock()
            .sources
            .iter()
            .map(|s| (s.id, s.name.clone()))
            .collect()
    }

    /// Renames a source behind the app's back (a console user's edit, or a test moving a
    /// lease's expiry into the past).
    pub fn rename_source(&self, id: i64, name: &str) -> bool {
        let mut st = self.inner.lock();
        match st.sources.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.name = name.to_string();
                true
            }
            None => false,
        }
    }

    /// Whether a second source may take a name held already (off by default: 409, as the
    /// label route answers; what a real server does is unconfirmed).
    pub fn set_duplicate_source_names(&self, on: bool) {
        self.inner.lock().duplicate_source_names = on;
    }

    /// `Some(404)` or `Some(405)`: `DELETE {base}/sources/{id}` is not a route of this server
    /// and answers that; None (the default): sources can be deleted.
    pub fn set_source_delete_status(&self, status: Option<u16>) {
        self.inner.lock().source_delete_missing = status;
    }

    /// Stores a hand-made document (XML is parsed when it is XML; anything else is kept as is).
    pub fn add_doc(&self, source_id: i64, name: &str, body: &str) -> i64 {
        let mut st = self.inner.lock();
        let from = st.intrinsic_from;
        let mut parsed = parse_upload(body.as_bytes(), None, Some(name), None, None, from)
            .unwrap_or(Parsed {
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

    /// Starts a deploy outside the job (an admin's, or another integration's), running until
    /// [`TaniumSim::finish_deploys`]; off finishes every running deploy.
    pub fn set_deploy_running(&self, on: bool) {
        if on {
            self.start_console_deploy();
        } else {
            self.finish_deploys();
        }
    }

    /// Starts a deploy outside the job, running until [`TaniumSim::finish_deploys`]; its task id.
    pub fn start_console_deploy(&self) -> i64 {
        self.inner.lock().deploys.start(false, None)
    }

    /// How long each deploy the job starts runs (STARTED until then, COMPLETED after); None:
    /// until [`TaniumSim::finish_deploys`]. Zero by default.
    pub fn set_deploy_duration(&self, d: Option<std::time::Duration>) {
        self.inner.lock().deploys.duration = d;
    }

    /// Completes every running deploy now.
    pub fn finish_deploys(&self) {
        self.inner.lock().deploys.finish_all();
    }

    /// Whether a deploy is running.
    pub fn deploy_running(&self) -> bool {
        self.inner.lock().deploys.running().is_some()
    }

    /// Whether `POST {base}/intel/deploy` answers 400 while a deploy runs (on by default: what
    /// a Cloud tenant answered to deploys in quick succession is most plausibly that, OpenCTI
    /// connectors issue 3593; the cause is unconfirmed). Off, deploys run side by side.
    pub fn set_refuse_deploy_while_running(&self, on: bool) {
        self.inner.lock().deploys.refuse_while_running = on;
    }

    /// Whether the intel status says a deploy is running (`"status": "Deploy in progress"`),
    /// a field no recorded status has (off by default: the recorded shape).
    pub fn set_status_reports_deploy(&self, on: bool) {
        self.inner.lock().deploys.status_field = on;
    }

    /// `POST /intel/deploy` calls accepted.
    pub fn deploy_count(&self) -> u64 {
        self.inner.lock().deploys.accepted
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

    /// Where STIX documents' intrinsic ids come from, for uploads and in-place PUTs from now on.
    pub fn set_intrinsic_from(&self, from: IntrinsicFrom) {
        self.inner.lock().intrinsic_from = from;
    }

    /// Stores uploads re-serialised (no XML declaration, no whitespace between elements, LF
    /// line endings) instead of byte for byte, so the listed `md5` and `size` are not those
    /// of the uploaded bytes.
    pub fn set_reserialise(&self, on: bool) {
        self.inner.lock().reserialise = on;
    }

    /// What the other generation's base path answers to a valid session (404 by default; a
    /// real 3.x server's answer on the 4.x path is unknown: 403 and 500 are plausible).
    pub fn set_other_generation_status(&self, status: u16) {
        self.inner.lock().other_generation_status = status;
    }

    /// Answers 403 to valid sessions on `method` (any when None) and paths starting with
    /// `path_prefix` (decoded, full path), as for an account without that permission.
    pub fn deny(&self, method: Option<&str>, path_prefix: &str) {
        self.inner
            .lock()
            .denied
            .push((method.map(str::to_string), path_prefix.to_string()));
    }

    /// Lifts every [`TaniumSim::deny`].
    pub fn clear_denials(&self) {
        self.inner.lock().denied.clear();
    }

    /// Deletes answer 200 with a plain-text body instead of JSON (the document is deleted).
    pub fn set_delete_reply_text(&self, on: bool) {
        self.inner.lock().delete_reply_text = on;
    }

    /// Whether username/password logins are accepted (off: every login answers 401, as Tanium
    /// Cloud does for the REST API; API tokens still work).
    pub fn set_password_login(&self, on: bool) {
        self.inner.lock().password_login = on;
    }

    /// Creates a label as a console user would.
    pub fn add_label(&self, name: &str) -> i64 {
        add_label(&mut self.inner.lock(), name, "")
    }

    /// All labels, by id.
    pub fn labels(&self) -> Vec<SimLabel> {
        self.inner.lock().labels.clone()
    }

    /// Puts a label on a document as a console user would.
    pub fn label_doc(&self, doc_id: i64, label_id: i64) {
        if let Some(d) = self.inner.lock().docs.get_mut(&doc_id) {
            add_label_id(d, label_id);
        }
    }

    /// Takes a label off a document as a console user would.
    pub fn unlabel_doc(&self, doc_id: i64, label_id: i64) {
        if let Some(d) = self.inner.lock().docs.get_mut(&doc_id) {
            d.label_ids.retain(|l| *l != label_id);
        }
    }

    /// The id of the label with exactly this name.
    pub fn label_id(&self, name: &str) -> Option<i64> {
        self.inner
            .lock()
            .labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.id)
    }

    /// The names of the labels on a document, sorted.
    pub fn doc_label_names(&self, doc_id: i64) -> Vec<String> {
        let st = self.inner.lock();
        let mut names: Vec<String> = st
            .docs
            .get(&doc_id)
            .map(|d| d.label_ids.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|id| st.labels.iter().find(|l| l.id == *id))
            .map(|l| l.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Whether listing rows carry `labelIds` (on by default, as recorded); off, a client must
    /// read each document's labels on their own route.
    pub fn set_label_ids_listed(&self, on: bool) {
        self.inner.lock().label_ids_unlisted = !on;
    }

    /// Whether a document replaced in place keeps its labels (on by default; unconfirmed).
    pub fn set_update_keeps_labels(&self, on: bool) {
        self.inner.lock().update_drops_labels = !on;
    }

    /// Whether a label name held already in another case is refused as a duplicate (off by
    /// default: names compare exactly; unconfirmed).
    pub fn set_label_names_ignore_case(&self, on: bool) {
        self.inner.lock().label_names_ignore_case = on;
    }

    /// Whether `GET {base}/labels?noLimit=true` answers every label (on by default, as the
    /// OpenCTI connector relies on); off, the server answers its default page of 100, as it
    /// does to a listing without parameters.
    pub fn set_labels_no_limit(&self, honoured: bool) {
        self.inner.lock().labels_no_limit_ignored = !honoured;
    }

    /// Whether 4.x listing rows carry the intel health fields (`disabled`,
    /// `disabledEndpointCount`, ...); on by default. Recorded on a 4.x intel object (inside an
    /// alert); whether the `/intels` listing carries them is unconfirmed. Reads by id always do.
    pub fn set_health_listed(&self, on: bool) {
        self.inner.lock().health_unlisted = !on;
    }

    /// Sets what Threat Response's intel health says of a document (as when it turns noisy
    /// intel off); whether it was there.
    pub fn set_doc_health(&self, doc_id: i64, health: DocHealth) -> bool {
        self.tamper(doc_id, |d| d.health = health)
    }

    /// Deletes the label named `name` right after the next label listing answers, as an admin
    /// deleting it while a run works would.
    pub fn delete_label_after_next_listing(&self, name: &str) {
        self.inner.lock().label_vanishes = Some(name.to_string());
    }

    /// Makes the label listing misbehave (`IgnoreOffset`, `DropsLast`; `Endless` is not
    /// simulated there).
    pub fn set_label_listing_quirk(&self, q: ListingQuirk) {
        self.inner.lock().label_quirk = q;
    }

    /// Whether 4.x listings (intels, labels) carry `meta.totalCount` next to `data` (off by
    /// default; recorded for 4.x alert lists, unconfirmed for these).
    pub fn set_list_meta(&self, on: bool) {
        self.inner.lock().list_meta = on;
    }

    /// Raises an alert on a document (at its current revision, 1 when it is gone), as an
    /// endpoint's match would; the alert's id.
    pub fn raise_alert(&self, spec: AlertSpec) -> i64 {
        let mut st = self.inner.lock();
        let revision = st.docs.get(&spec.doc_id).map_or(1, |d| d.revision_id);
        st.alerts.raise(spec, revision)
    }

    /// Every alert raised, in order.
    pub fn alerts(&self) -> Vec<SimAlert> {
        self.inner.lock().alerts.all()
    }

    /// Deletes an alert; false when there is none.
    pub fn delete_alert(&self, id: i64) -> bool {
        self.inner.lock().alerts.delete(id)
    }

    /// The alerts route ignores `sort` (rows in id order).
    pub fn set_alert_sort_ignored(&self, on: bool) {
        self.inner.lock().alerts.sort_ignored = on;
    }

    /// The alerts route answers 400 to a `sort` of more than one column.
    pub fn set_alert_compound_sort_refused(&self, on: bool) {
        self.inner.lock().alerts.compound_sort_refused = on;
    }

    /// Headers (lower-case names) of the last intel upload (create or replace).
    pub fn last_upload_headers(&self) -> Vec<(String, String)> {
        self.inner.lock().last_upload_headers.clone()
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
                ApiGeneration::V4 if !self.lock().refused_session_403 => 401,
                ApiGeneration::V4 | ApiGeneration::V3 => 403,
            };
            return error(status, "not authorized");
        }
        if path == CURRENT && req.method == "GET" {
            return SimResponse::json(
                200,
                &json!({"data": {"id": 1, "user_id": 1, "user_name": self.opts.username}}),
            );
        }
        let denied = self.lock().denied.iter().any(|(m, prefix)| {
            m.as_deref().is_none_or(|m| m == req.method) && path.starts_with(prefix.as_str())
        });
        if denied {
            return error(403, "forbidden: missing permission");
        }
        if path == VALIDATE && req.method == "POST" {
            return SimResponse::json(200, &json!({"data": {"session": "valid"}}));
        }
        let other = match self.gen() {
            ApiGeneration::V4 => ApiGeneration::V3,
            ApiGeneration::V3 => ApiGeneration::V4,
        };
        if path.starts_with(other.base_path()) {
            let status = self.lock().other_generation_status;
            return error(status, "no such plugin");
        }
        let Some(rest) = path.strip_prefix(self.gen().base_path()) else {
            return error(404, "not found");
        };
        let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let write = matches!(
            (req.method.as_str(), segs.as_slice()),
            ("POST", ["sources", _, "intels"])
                | ("PUT", ["intels", _])
                | ("DELETE", ["intels"] | ["intels", _])
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
            ("DELETE", ["sources", id]) => self.delete_source(id),
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
                        v["description"] = Value::String(d.description.clone());
                        v["contents"] = Value::String(d.body.clone());
                        if self.gen() == ApiGeneration::V4 {
                            add_health(&mut v, d);
                        }
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
            ("GET", ["intels", id, "labels"]) => self.doc_labels(id, |_| Ok(())),
            ("PUT", ["intels", id, "labels"]) => {
                let label = serde_json::from_slice::<Value>(&req.body)
                    .ok()
                    .and_then(|v| v.get("id").and_then(crate::tanium::model::int_of));
                let Some(label) = label else {
                    return error(400, "body must be {\"id\": <label id>}");
                };
                let known = self.lock().labels.iter().any(|l| l.id == label);
                if !known {
                    // As recorded: an unknown label id answers 500, not 404.
                    return error(500, "Internal Server Error");
                }
                self.doc_labels(id, |d| {
                    add_label_id(d, label);
                    Ok(())
                })
            }
            ("DELETE", ["intels", id, "labels", label]) => {
                let label = id_of(label);
                self.doc_labels(id, |d| {
                    match d.label_ids.iter().position(|l| Some(*l) == label) {
                        Some(i) => {
                            d.label_ids.remove(i);
                            Ok(())
                        }
                        None => Err(error(404, "label not on this intel")),
                    }
                })
            }
            ("POST", ["intel", "deploy"]) if self.gen() == ApiGeneration::V4 => self.deploy(),
            ("GET", ["tasks", id]) if self.gen() == ApiGeneration::V4 => self.task(id),
            ("GET", ["labels"]) => self.list_labels(req),
            ("POST", ["labels"]) => self.create_label(req),
            ("GET", ["intel", "status"]) => self.intel_status(),
            ("GET", ["alerts"]) => self
                .lock()
                .alerts
                .answer(req, self.gen() == ApiGeneration::V4),
            _ => error(404, "not found"),
        }
    }

    /// `POST {base}/intel/deploy` -> `{"taskId"}`. The recorded client sends no body and no
    /// content type; a harmless `{}` is accepted as well (the cause of the 400 a Cloud tenant
    /// answered is not recorded). While a deploy runs, another is refused with 400 unless
    /// [`TaniumSim::set_refuse_deploy_while_running`] is off.
    fn deploy(&self) -> SimResponse {
        let mut st = self.lock();
        let d = &mut st.deploys;
        if d.refuse_while_running && d.running().is_some() {
            return error(400, "Bad Request: an intel deploy is in progress");
        }
        d.accepted += 1;
        let duration = d.duration;
        let task = d.start(true, duration);
        self.reply(200, json!({ "taskId": task }))
    }

    /// `GET {base}/tasks/{id}`, as recorded: `{id, type, status: STARTED | COMPLETED, metadata,
    /// results, error, startTime, endTime, createdAt, updatedAt}`.
    fn task(&self, id: &str) -> SimResponse {
        let st = self.lock();
        match id_of(id).and_then(|id| st.deploys.tasks.get(&id)) {
            Some(t) => self.reply(200, t.json()),
            None => error(404, "task not found"),
        }
    }

    /// `GET {base}/intel/status` in its recorded shape (createdAt, modifiedAt, currentRevision,
    /// currentSize), plus the progress field of [`TaniumSim::set_status_reports_deploy`].
    fn intel_status(&self) -> SimResponse {
        let st = self.lock();
        let size: u64 = st.docs.values().map(|d| d.size).sum();
        let mut status = json!({"createdAt": STAMP, "modifiedAt": STAMP,
               "currentRevision": st.deploys.completed(), "currentSize": size});
        if st.deploys.status_field && st.deploys.running().is_some() {
            status["status"] = json!("Deploy in progress");
        }
        self.reply(200, status)
    }

    fn login(&self, req: &SimRequest) -> SimResponse {
        if req.method != "POST" {
            return error(405, "method not allowed");
        }
        let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
            return error(400, "body must be JSON");
        };
        if !self.lock().password_login {
            return error(401, "username/password authentication is not available");
        }
        let ok = v.get("username").and_then(Value::as_str) == Some(self.opts.username.as_str())
            && v.get("password").and_then(Value::as_str) == Some(self.opts.password.as_str());
        if !ok {
            return error(401, "invalid username or password");
        }
        let mut st = self.lock();
        st.logins += 1;
        let session = format!("1-{}-{:016x}", st.logins, md5_u64(st.logins));
        st.issued.push(session.clone());
        if !std::mem::take(&mut st.next_session_stale) {
            st.sessions.insert(session.clone());
        }
        SimResponse::json(200, &json!({"data": {"session": session}}))
    }

    fn source_json(&self, st: &State, s: &SimSource) -> Value {
        let (signals, indicators) =
            st.docs
                .values()
                .filter(|d| d.source_id == s.id)
                .fold((0u64, 0u64), |(sig, ind), d| {
                    if d.kind == "tanium-signal" {
                        (sig + 1, ind)
                    } else {
                        (sig, ind + 1)
                    }
                });
        json!({"id": id_value(s.id, st.ids_as_strings), "name": s.name, "type": s.kind,
               "description": s.description, "enabled": true,
               "createdAt": STAMP, "updatedAt": STAMP,
               "indicatorCount": indicators, "signalCount": signals})
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
        if !st.duplicate_source_names && st.sources.iter().any(|s| s.name == name) {
            return error(409, "a source with this name exists");
        }
        let id = add_source(&mut st, name, kind, description);
        let s = st.sources.iter().find(|s| s.id == id).cloned();
        match s {
            Some(s) => self.reply(200, self.source_json(&st, &s)),
            None => error(500, "source vanished"),
        }
    }

    fn delete_source(&self, id: &str) -> SimResponse {
        let mut st = self.lock();
        if let Some(status) = st.source_delete_missing {
            return error(status, "not found");
        }
        let Some(id) = id_of(id) else {
            return error(400, "bad source id");
        };
        let before = st.sources.len();
        st.sources.retain(|s| s.id != id);
        if st.sources.len() == before {
            return error(404, "source not found");
        }
        st.docs.retain(|_, d| d.source_id != id);
        st.mutations += 1;
        self.reply(200, json!({}))
    }

    fn create_label(&self, req: &SimRequest) -> SimResponse {
        let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
            return error(400, "body must be JSON");
        };
        let name = v.get("name").and_then(Value::as_str).unwrap_or("").trim();
        if name.is_empty() {
            return error(400, "name is required");
        }
        let description = v.get("description").and_then(Value::as_str).unwrap_or("");
        let mut st = self.lock();
        // What a real server does with a duplicate name is UNCONFIRMED; sources answer 409.
        let ignore_case = st.label_names_ignore_case;
        let same = |l: &SimLabel| {
            l.name == name || (ignore_case && l.name.to_lowercase() == name.to_lowercase())
        };
        if st.labels.iter().any(same) {
            return error(409, "a label with this name exists");
        }
        let id = add_label(&mut st, name, description);
        match st.labels.iter().find(|l| l.id == id) {
            Some(l) => self.reply(200, label_json(l, st.ids_as_strings)),
            None => error(500, "label vanished"),
        }
    }

    /// Applies `change` to a document's labels and answers the labels left on it.
    fn doc_labels(
        &self,
        id: &str,
        change: impl FnOnce(&mut SimDoc) -> Result<(), SimResponse>,
    ) -> SimResponse {
        let mut st = self.lock();
        let Some(d) = id_of(id).and_then(|id| st.docs.get_mut(&id)) else {
            return error(404, "intel not found");
        };
        if let Err(r) = change(d) {
            return r;
        }
        let ids = d.label_ids.clone();
        let rows: Vec<Value> = st
            .labels
            .iter()
            .filter(|l| ids.contains(&l.id))
            .map(|l| label_json(l, st.ids_as_strings))
            .collect();
        self.reply(200, Value::Array(rows))
    }

    /// `GET {base}/labels`, paged as the Detect API pages: 100 labels without parameters,
    /// `limit` up to 500 with `offset`, all of them with `noLimit=true` (unless the switch says
    /// the server ignores it).
    fn list_labels(&self, req: &SimRequest) -> SimResponse {
        let mut st = self.lock();
        let no_limit = ["noLimit", "nolimit"]
            .iter()
            .any(|k| req.param(k).is_some_and(|v| v.eq_ignore_ascii_case("true")));
        let limit = match req.param("limit").map(str::parse::<usize>) {
            _ if no_limit && !st.labels_no_limit_ignored => usize::MAX,
            None => DEFAULT_LIMIT,
            Some(Ok(l)) if l <= MAX_LIMIT => l,
            Some(_) => return error(400, "limit must be a number no greater than 500"),
        };
        let offset = match (req.param("offset").map(str::parse::<usize>), st.label_quirk) {
            (_, ListingQuirk::IgnoreOffset) | (None, _) => 0,
            (Some(Ok(o)), _) => o,
            (Some(Err(_)), _) => return error(400, "offset must be a number"),
        };
        let dropped = match st.label_quirk {
            ListingQuirk::DropsLast => st.labels.last().map(|l| l.id),
            _ => None,
        };
        let rows: Vec<Value> = st
            .labels
            .iter()
            .filter(|l| Some(l.id) != dropped)
            .skip(offset)
            .take(limit)
            .map(|l| label_json(l, st.ids_as_strings))
            .collect();
        let answer = self.list_reply(&st, rows, st.labels.len());
        if let Some(name) = st.label_vanishes.take() {
            st.labels.retain(|l| l.name != name);
        }
        answer
    }

    /// A listing answer; on 4.x with [`TaniumSim::set_list_meta`] it also carries
    /// `meta.totalCount`, as 4.x alert lists are recorded to.
    fn list_reply(&self, st: &State, rows: Vec<Value>, total: usize) -> SimResponse {
        if st.list_meta && self.gen() == ApiGeneration::V4 {
            let body = json!({"data": rows, "meta": {"totalCount": total, "filteredCount": total}});
            return SimResponse::json(200, &body);
        }
        self.reply(200, Value::Array(rows))
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
        let keep = |d: &&SimDoc| filter.is_none_or(|f| d.source_id == f);
        let total = if st.list_meta {
            st.docs.values().filter(keep).count()
        } else {
            0
        };
        let dropped = match st.quirk {
            ListingQuirk::DropsLast => st.docs.values().filter(keep).map(|d| d.id).max(),
            _ => None,
        };
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
                let unlisted = st.label_ids_unlisted;
                let health = !st.health_unlisted && self.gen() == ApiGeneration::V4;
                let rows = page
                    .iter()
                    .filter(|d| Some(d.id) != dropped)
                    .map(|d| {
                        let mut row = row_json(d, strings);
                        if health {
                            add_health(&mut row, d);
                        }
                        if unlisted {
                            if let Some(m) = row.as_object_mut() {
                                m.remove("labelIds");
                            }
                        }
                        row
                    })
                    .collect();
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
        let total = match st.quirk {
            ListingQuirk::Endless => offset + 2 * limit,
            _ => total,
        };
        self.list_reply(&st, rows, total)
    }

    fn create_doc(&self, req: &SimRequest, source: &str) -> SimResponse {
        let Some(source_id) = id_of(source) else {
            return error(400, "bad source id");
        };
        if !self.lock().sources.iter().any(|s| s.id == source_id) {
            return error(404, "source not found");
        }
        let (parsed, body) = match self.parse_request(req) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let mut st = self.lock();
        let strings = st.ids_as_strings;
        let doc = insert_doc(&mut st, source_id, parsed, &body);
        let mut v = doc_json(&doc, strings);
        v["blobId"] = Value::String(blob_id(&doc.md5));
        v["contents"] = Value::String(doc.body.clone());
        if self.gen() == ApiGeneration::V3 {
            for k in [
                "funnelAllFindingsToConnectSetAt",
                "funnelAllFindingsToConnectSetBy",
                "gatherDegenerateFindingsSetAt",
                "gatherDegenerateFindingsSetBy",
            ] {
                v[k] = Value::Null;
            }
        }
        self.reply(200, v)
    }

    fn replace_doc(&self, req: &SimRequest, id: &str) -> SimResponse {
        let Some(id) = id_of(id) else {
            return error(400, "bad intel id");
        };
        let (parsed, body) = match self.parse_request(req) {
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
        let drop_labels = st.update_drops_labels;
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
        if drop_labels {
            d.label_ids.clear();
        }
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
        if st.delete_reply_text {
            return SimResponse::text(200, "Intel doc deleted");
        }
        self.reply(200, json!({}))
    }

    /// The upload's metadata and the body as it will be stored, or the 400 answer for a body
    /// that is not XML.
    fn parse_request(&self, req: &SimRequest) -> Result<(Parsed, String), SimResponse> {
        let file_name = req
            .header("content-disposition")
            .and_then(disposition_file_name);
        let (from, reserialise) = {
            let mut st = self.lock();
            st.last_upload_headers = req.headers.clone();
            (st.intrinsic_from, st.reserialise)
        };
        let parsed = parse_upload(
            &req.body,
            req.header("type"),
            req.header("name"),
            req.header("description"),
            file_name.as_deref(),
            from,
        )
        .map_err(|m| error(400, &m))?;
        let text = String::from_utf8_lossy(&req.body).into_owned();
        let stored = if reserialise {
            reserialised(&text)
        } else {
            text
        };
        Ok((parsed, stored))
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
        label_ids: Vec::new(),
        health: DocHealth::default(),
    };
    st.docs.insert(id, doc.clone());
    doc
}

fn add_label(st: &mut State, name: &str, description: &str) -> i64 {
    let id = st.next_label;
    st.next_label += 1;
    st.labels.push(SimLabel {
        id,
        name: name.into(),
        description: description.into(),
    });
    id
}

fn add_label_id(d: &mut SimDoc, label: i64) {
    if let Err(i) = d.label_ids.binary_search(&label) {
        d.label_ids.insert(i, label);
    }
}

fn label_json(l: &SimLabel, strings: bool) -> Value {
    json!({"id": id_value(l.id, strings), "name": l.name, "description": l.description,
           "indicatorCount": 0, "signalCount": 0, "createdAt": STAMP, "updatedAt": STAMP})
}

/// The intel health fields of a 4.x intel object, as recorded (stix-shifter's Tanium sample).
fn add_health(v: &mut Value, d: &SimDoc) {
    let h = &d.health;
    let fields = json!({
        "disabled": h.disabled, "allowAutoDisable": true,
        "disabledEndpointCount": h.disabled_endpoints,
        "throttledFindingCount": h.throttled_findings,
        "status": if h.disabled || h.disabled_endpoints > 0 { "DISABLED" } else { "HIGH_FIDELITY" },
        "firstDeploymentTimestamp": STAMP, "lastDeploymentTimestamp": STAMP,
        "customHash": null,
    });
    if let (Some(m), Value::Object(f)) = (v.as_object_mut(), fields) {
        m.extend(f);
    }
}

/// A listing row: the document without `description`, as real servers list them.
fn row_json(d: &SimDoc, strings: bool) -> Value {
    let mut v = doc_json(d, strings);
    if let Some(m) = v.as_object_mut() {
        m.remove("description");
    }
    v
}

/// The stored form when re-serialising: no XML declaration, LF line endings, and no
/// whitespace-only text between elements.
fn reserialised(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut body = text.trim_start();
    if body.starts_with("<?xml") {
        body = body.find("?>").map_or(body, |i| &body[i + 2..]);
    }
    let mut out = String::with_capacity(body.len());
    let mut rest = body.trim();
    while let Some(i) = rest.find('>') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let gap = rest.len() - rest.trim_start().len();
        if rest[gap..].starts_with('<') {
            rest = &rest[gap..];
        }
    }
    out.push_str(rest);
    out
}

fn doc_json(d: &SimDoc, strings: bool) -> Value {
    json!({
        "id": id_value(d.id, strings), "revisionId": d.revision_id, "type": d.kind,
        "typeVersion": if d.kind == "stix" { "1.2" } else { "1.1" }, "isSchemaValid": true,
        "intrinsicId": d.intrinsic_id, "md5": d.md5, "name": d.name, "description": d.description,
        "size": d.size, "alertCount": 0, "unresolvedAlertCount": 0, "compiled": null,
        "labelIds": d.label_ids.iter().map(|id| id_value(*id, strings)).collect::<Vec<_>>(), "sourceId": id_value(d.source_id, strings), "mitreAttack": null,
        "platforms": null, "createdAt": STAMP, "updatedAt": STAMP
    })
}

/// A GUID-shaped blob id (what real servers put there is opaque).
fn blob_id(md5: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &md5[..8],
        &md5[8..12],
        &md5[12..16],
        &md5[16..20],
        &md5[20..32]
    )
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
    from: IntrinsicFrom,
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
    let first_indicator = || {
        root.descendants()
            .find(|n| {
                n.is_element()
                    && n.tag_name().name() == "Indicator"
                    && n.parent_element()
                        .is_some_and(|p| p.tag_name().name() == "Indicators")
            })
            .and_then(|n| n.attribute("id"))
    };
    let claimed = match (sniffed, from) {
        (Some("stix"), IntrinsicFrom::FirstIndicator) => {
            first_indicator().or_else(|| root.attribute("id"))
        }
        _ => root.attribute("id"),
    };
    let intrinsic_id = claimed
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
        let p = parse_upload(
            stix.as_bytes(),
            None,
            None,
            None,
            Some("f.xml"),
            IntrinsicFrom::PackageRoot,
        )
        .unwrap();
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
        let p = parse_upload(
            ioc.as_bytes(),
            Some("OpenIOC"),
            None,
            None,
            None,
            IntrinsicFrom::PackageRoot,
        )
        .unwrap();
        assert_eq!(
            (p.kind.as_str(), p.intrinsic_id.as_str(), p.name.as_str()),
            ("openioc", "abc", "S")
        );
        let ioc11 = r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="x"><metadata><short_description>Bücher 例え</short_description><description>D</description></metadata></OpenIOC>"#;
        let p = parse_upload(
            ioc11.as_bytes(),
            None,
            Some("B?cher ??"),
            None,
            None,
            IntrinsicFrom::PackageRoot,
        )
        .unwrap();
        assert_eq!(
            (p.name.as_str(), p.description.as_str()),
            ("Bücher 例え", "D")
        );
        assert!(parse_upload(
            b"<a><b></a>",
            Some("stix"),
            None,
            None,
            None,
            IntrinsicFrom::PackageRoot
        )
        .is_err());
        assert!(parse_upload(
            b"<unknown/>",
            None,
            None,
            None,
            None,
            IntrinsicFrom::PackageRoot
        )
        .is_err());
        let p = parse_upload(
            b"<x/>",
            Some("stix"),
            Some("hdr"),
            None,
            Some("f.xml"),
            IntrinsicFrom::PackageRoot,
        )
        .unwrap();
        assert_eq!((p.name.as_str(), p.intrinsic_id.as_str()), ("hdr", "f.xml"));
    }

    #[test]
    fn a_stix_intrinsic_id_may_come_from_the_first_indicator() {
        let stix = r#"<stix:STIX_Package xmlns:stix="http://stix.mitre.org/stix-1" id="tctr:Package-1" version="1.2"><stix:Indicators><stix:Indicator id="tctr:indicator-1"/><stix:Indicator id="tctr:indicator-2"/></stix:Indicators></stix:STIX_Package>"#;
        let id = |from| {
            parse_upload(stix.as_bytes(), None, None, None, None, from)
                .unwrap()
                .intrinsic_id
        };
        assert_eq!(id(IntrinsicFrom::PackageRoot), "tctr:Package-1");
        assert_eq!(id(IntrinsicFrom::FirstIndicator), "tctr:indicator-1");
        let ioc = r#"<ioc id="root"><Indicators><Indicator id="i"/></Indicators></ioc>"#;
        let p = parse_upload(
            ioc.as_bytes(),
            None,
            None,
            None,
            None,
            IntrinsicFrom::FirstIndicator,
        );
        assert_eq!(p.unwrap().intrinsic_id, "root");
    }

    #[test]
    fn reserialising_drops_the_declaration_and_whitespace_between_elements() {
        let text = "<?xml version=\"1.0\"?>\r\n<a id=\"x\">\r\n  <b> keep  me </b>\n  <c/>\n</a>\n";
        assert_eq!(reserialised(text), "<a id=\"x\"><b> keep  me </b><c/></a>");
        assert_eq!(reserialised("<a/>"), "<a/>");
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
