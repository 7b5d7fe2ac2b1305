//! The Tanium client: session, API generation, the app's source, its intel documents, deploy.
//!
//! Every request goes through [`crate::http::call`] (so the shared retry rule applies) and
//! through [`TaniumClient::send`], which adds the `session` header and, on 401/403, logs in
//! again once and repeats the call. A 403 that survives a fresh login (or comes with a token
//! that `GET /api/v2/session/current` still accepts) is a missing permission, and the error
//! names the permission the call needs; a token refused by the server is a credentials error.
//!
//! API generation: the `Tanium API Version` param fixes it, or (`auto`) the 4.x sources route
//! is tried and, when it answers 400/401/403/404/405 or 5xx, the 3.x one; only when both fail
//! does the run stop, with both answers in the error. A 3.x server's answer on the 4.x path is
//! unknown (404, 403 or 500 are all plausible), hence the wide fallback.
//!
//! Authentication rule (explicit, so users know which credential kind they configured):
//! the password is used as an **API token** (sent as-is in the `session` header, no login) when
//! the username is `_token` (any case, surrounding blanks ignored), or is empty, or the password
//! starts with `token-` (the prefix Tanium gives every API token it issues). Otherwise the
//! username and password are exchanged for a session through `POST /api/v2/session/login`.
//!
//! Guard: [`TaniumClient::update_doc`] and [`TaniumClient::delete_doc`] act only on ids this
//! client saw in the app's own source (returned by [`TaniumClient::list_docs`], or created or
//! replaced by this client). Anything else is refused before a request is sent, so a bug in a
//! caller can never touch another source's documents.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde_json::{json, Value};

use crate::compact::IdSet;
use crate::error::{Error, Result, Service};
use crate::http::{self, Request, Response, RetryPolicy};
use crate::secret::Secret;
use crate::tanium::model::{int_of, ApiGeneration, IntelDoc, Source, Upload};
use crate::tanium::Settings;

/// Largest page the intel listing accepts (Tanium answers 400 above 500).
pub const PAGE_LIMIT: u32 = 500;

/// Default cap on rows one listing may return before it is judged never-ending.
pub const DEFAULT_MAX_LISTED_ROWS: u64 = 20_000_000;

const LOGIN_PATH: &str = "/api/v2/session/login";
const CURRENT_PATH: &str = "/api/v2/session/current";
const SOURCE_DESCRIPTION: &str = "Address, File and Host indicators sent from ThreatConnect by \
the tanium-tr-indicators job app. Managed automatically: documents here are created, replaced \
and deleted by the app.";

/// How the client proves who it is.
enum Credentials {
    /// Username and password, exchanged for a session string (renewable).
    Login { username: String, password: Secret },
    /// An API token used directly as the session (nothing to renew).
    Token,
}

/// The current session value and how many times it was renewed, so concurrent workers
/// that all see a 401 log in only once.
struct Session {
    value: Secret,
    epoch: u64,
}

/// A request body with the headers that describe it.
struct Payload {
    content_type: &'static str,
    headers: Vec<(String, String)>,
    bytes: Vec<u8>,
}

impl Payload {
    fn json(v: &Value) -> Payload {
        Payload {
            content_type: "application/json",
            headers: Vec::new(),
            bytes: serde_json::to_vec(v).unwrap_or_default(),
        }
    }
}

/// Talks to one Tanium server; `Send + Sync`, so a worker pool can share one client.
pub struct TaniumClient {
    agent: ureq::Agent,
    policy: RetryPolicy,
    base_url: String,
    source_name: String,
    credentials: Credentials,
    session: RwLock<Session>,
    generation: ApiGeneration,
    /// The generation was set by `Tanium API Version`, not detected.
    fixed_generation: bool,
    /// The host is Tanium Cloud, where the REST API takes API tokens only.
    cloud: bool,
    requests: AtomicU64,
    relogins: AtomicU64,
    /// Ids seen in (or written to) the app's own source: the only ones we update or delete.
    owned: Mutex<IdSet>,
    /// Set once `DELETE /intels/?id=` proved unsupported (404/405 then `/intels/{id}` worked).
    delete_by_path: AtomicBool,
    max_listed_rows: AtomicU64,
}

impl std::fmt::Debug for TaniumClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaniumClient")
            .field("base_url", &self.base_url)
            .field("generation", &self.generation)
            .finish()
    }
}

/// True when `username`/`password` name an API token rather than a login (see module docs).
pub fn is_token_auth(username: &str, password: &Secret) -> bool {
    let u = username.trim();
    u.is_empty() || u.eq_ignore_ascii_case("_token") || password.expose().starts_with("token-")
}

impl TaniumClient {
    /// Builds the agent, authenticates and detects the API generation once.
    pub fn connect(settings: &Settings, policy: RetryPolicy) -> Result<TaniumClient> {
        if settings.password.is_empty() {
            return Err(Error::Param(
                "Tanium Password / API Token (tanium_password) is empty".into(),
            ));
        }
        let agent = http::agent(&settings.http)?;
        let token = is_token_auth(&settings.username, &settings.password);
        let credentials = if token {
            Credentials::Token
        } else {
            Credentials::Login {
                username: settings.username.trim().to_string(),
                password: settings.password.clone(),
            }
        };
        let base_url = settings.base_url.to_string();
        let mut client = TaniumClient {
            agent,
            policy,
            cloud: is_cloud_host(&base_url),
            base_url,
            source_name: settings.source_name.clone(),
            credentials,
            session: RwLock::new(Session {
                value: if token {
                    settings.password.clone()
                } else {
                    Secret::default()
                },
                epoch: 0,
            }),
            generation: settings.api_version.unwrap_or(ApiGeneration::V4),
            fixed_generation: settings.api_version.is_some(),
            requests: AtomicU64::new(0),
            relogins: AtomicU64::new(0),
            owned: Mutex::new(IdSet::new()),
            delete_by_path: AtomicBool::new(false),
            max_listed_rows: AtomicU64::new(DEFAULT_MAX_LISTED_ROWS),
        };
        if !token {
            let s = client.login()?;
            client.set_session(s, 0);
        }
        let why = if client.fixed_generation {
            "set by Tanium API Version".to_string()
        } else {
            let (generation, why) = client.detect_generation()?;
            client.generation = generation;
            format!("detected: {why}")
        };
        log::info!(
            "Tanium {}: {} ({why}), {}",
            client.base_url,
            client.generation.label(),
            if token {
                "API token"
            } else {
                "username/password session"
            }
        );
        Ok(client)
    }

    /// The API generation detected at connect time.
    pub fn generation(&self) -> ApiGeneration {
        self.generation
    }

    /// HTTP attempts sent so far (logins and retries included), for the run summary and tests.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Logins repeated because the server rejected a session (401/403) mid-run.
    pub fn relogin_count(&self) -> u64 {
        self.relogins.load(Ordering::SeqCst)
    }

    /// Caps the rows one listing may return before it is judged never-ending (an error).
    pub fn set_max_listed_rows(&self, rows: u64) {
        self.max_listed_rows.store(rows.max(1), Ordering::SeqCst);
    }

    /// Finds the intel source with exactly this name; never writes (dry-run, check).
    pub fn find_source(&self, name: &str) -> Result<Option<Source>> {
        let path = format!("{}/sources", self.generation.base_path());
        let resp = self
            .expect_ok("GET", &path, None)
            .map_err(|e| self.fixed_generation_hint(e))?;
        let v = json_body(&resp, &describe("GET", &path))?;
        let rows = rows_of(v).ok_or_else(|| Error::Protocol {
            service: Service::Tanium,
            request: describe("GET", &path),
            detail: "the source listing is not a JSON list".into(),
        })?;
        let mut found: Vec<Source> = rows
            .into_iter()
            .filter_map(|r| serde_json::from_value::<Source>(r).ok())
            .filter(|s| s.name == name && s.id > 0)
            .collect();
        found.sort_by_key(|s| s.id);
        if found.len() > 1 {
            log::warn!(
                "Tanium has {} intel sources named {name:?} (ids {:?}); using the oldest, id {}",
                found.len(),
                found.iter().map(|s| s.id).collect::<Vec<_>>(),
                found[0].id
            );
        }
        Ok(found.into_iter().next())
    }

    /// Finds the source by exact name or creates it as type `api-client`.
    pub fn find_or_create_source(&self, name: &str) -> Result<Source> {
        if let Some(s) = self.find_source(name)? {
            return Ok(s);
        }
        let path = format!("{}/sources", self.generation.base_path());
        let body = json!({"type": "api-client", "name": name, "description": SOURCE_DESCRIPTION});
        let resp = self.send("POST", &path, Some(&Payload::json(&body)))?;
        if resp.status == 409 {
            // Someone created it between our listing and our POST.
            return self
                .find_source(name)?
                .ok_or_else(|| status_error(&resp, "POST", &path));
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "POST", &path));
        }
        let created = json_body(&resp, &describe("POST", &path))
            .ok()
            .map(unwrap_data)
            .and_then(|v| serde_json::from_value::<Source>(v).ok())
            .filter(|s| s.id > 0);
        let source = match created {
            Some(s) => s,
            // Unreadable answer to a write that succeeded: look it up instead.
            None => self.find_source(name)?.ok_or_else(|| Error::Protocol {
                service: Service::Tanium,
                request: describe("POST", &path),
                detail: format!("source {name:?} was accepted but cannot be found afterwards"),
            })?,
        };
        log::info!("created Tanium intel source {name:?} (id {})", source.id);
        Ok(source)
    }

    /// Calls `each` for every document of `source_id` and returns how many there were.
    ///
    /// Paged with `limit` = 500 and `offset` (plus a `sourceId` hint the server may ignore;
    /// dropped if the server answers 400 to it). Only rows whose `sourceId` equals `source_id`
    /// are passed on; others are counted in one debug line (no public client sends `sourceId`,
    /// so a server that ignores it is normal, not worth a warning). The listing ends at an empty
    /// page or at a page shorter than an earlier one (so a server that caps pages below 500
    /// is still read to the end). Guards against a listing that never ends: a page of only
    /// already-seen ids ends it (fine when the server sent everything in one go, an error
    /// after full pages: the server ignores `offset`), and so does the row cap (an error).
    /// Errors because acting on a partial listing would create duplicates.
    pub fn list_docs(&self, source_id: i64, each: &mut dyn FnMut(IntelDoc)) -> Result<u64> {
        let base = format!("{}/intels", self.generation.base_path());
        let max_rows = self.max_listed_rows.load(Ordering::SeqCst);
        let mut seen = IdSet::new();
        let mut offset: u64 = 0;
        let mut rows_total: u64 = 0;
        let mut largest_page = 0usize;
        let mut with_filter = true;
        let (mut kept, mut foreign, mut unreadable) = (0u64, 0u64, 0u64);
        loop {
            let path = if with_filter {
                format!("{base}?sourceId={source_id}&limit={PAGE_LIMIT}&offset={offset}")
            } else {
                format!("{base}?limit={PAGE_LIMIT}&offset={offset}")
            };
            let resp = self.send("GET", &path, None)?;
            if resp.status == 400 && with_filter && offset == 0 {
                log::info!("Tanium rejected the sourceId filter on the intel listing; filtering here instead");
                with_filter = false;
                continue;
            }
            if http::classify(resp.status) != http::Verdict::Ok {
                return Err(status_error(&resp, "GET", &path));
            }
            let what = describe("GET", &path);
            let rows = rows_of(json_body(&resp, &what)?).ok_or_else(|| Error::Protocol {
                service: Service::Tanium,
                request: what.clone(),
                detail: "the intel listing is not a JSON list".into(),
            })?;
            let n = rows.len();
            let mut fresh = 0usize;
            for row in rows {
                let doc = match serde_json::from_value::<IntelDoc>(row) {
                    Ok(d) if d.id > 0 => d,
                    _ => {
                        unreadable += 1;
                        continue;
                    }
                };
                if !seen.insert(doc.id) {
                    continue;
                }
                fresh += 1;
                if doc.source_id != Some(source_id) {
                    foreign += 1;
                    continue;
                }
                kept += 1;
                self.own(doc.id);
                each(doc);
            }
            rows_total += n as u64;
            offset += n as u64;
            if n == 0 {
                break;
            }
            if fresh == 0 {
                if largest_page != PAGE_LIMIT as usize {
                    // The server sent everything at once (ignoring limit or offset): done.
                    break;
                }
                return Err(Error::Protocol {
                    service: Service::Tanium,
                    request: describe("GET", &base),
                    detail: format!(
                        "the intel listing repeats rows already seen at offset {} (the server \
                         ignores offset?); refusing to act on a partial listing",
                        offset - n as u64
                    ),
                });
            }
            let short = n < largest_page;
            largest_page = largest_page.max(n);
            if short {
                break;
            }
            if rows_total >= max_rows {
                return Err(Error::Protocol {
                    service: Service::Tanium,
                    request: describe("GET", &base),
                    detail: format!(
                        "the intel listing did not end after {rows_total} rows; refusing to act on a partial listing"
                    ),
                });
            }
        }
        if foreign > 0 {
            log::debug!(
                "the Tanium intel listing held {foreign} documents of other sources (sourceId \
                 not applied by the server); only source {source_id} is ours"
            );
        }
        if unreadable > 0 {
            log::warn!("ignored {unreadable} unreadable rows (no id) in the Tanium intel listing");
        }
        Ok(kept)
    }

    /// Reads one document of the app's source with its `description` (listings leave it out):
    /// `GET {base}/intels/{id}`; None when it is gone (404). Only for ids the client owns.
    pub fn get_doc(&self, doc_id: i64) -> Result<Option<IntelDoc>> {
        self.ensure_owned("read", doc_id)?;
        let path = format!("{}/intels/{doc_id}", self.generation.base_path());
        let resp = self.send("GET", &path, None)?;
        if resp.status == 404 {
            return Ok(None);
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            return Err(status_error(&resp, "GET", &path));
        }
        let doc = doc_of(&resp, "GET", &path)?;
        if doc.id != doc_id {
            return Err(Error::Protocol {
                service: Service::Tanium,
                request: describe("GET", &path),
                detail: format!("asked for intel {doc_id}, got intel {}", doc.id),
            });
        }
        Ok(Some(doc))
    }

    /// Uploads a new document into the source: `POST {base}/sources/{id}/intels`.
    pub fn create_doc(&self, source_id: i64, up: &Upload) -> Result<IntelDoc> {
        let path = format!("{}/sources/{source_id}/intels", self.generation.base_path());
        let resp = self.expect_ok("POST", &path, Some(&upload_payload(up)))?;
        let doc = doc_of(&resp, "POST", &path)?;
        if doc.source_id.is_some_and(|s| s != source_id) {
            log::warn!(
                "Tanium filed new intel {} under source {:?}, not {source_id}",
                doc.id,
                doc.source_id
            );
        } else {
            self.own(doc.id);
        }
        Ok(doc)
    }

    /// Replaces a document's content: `PUT {base}/intels/{id}`.
    ///
    /// Tanium updates in place only when the new content keeps the stored intrinsic id;
    /// otherwise it creates a new document and the returned id differs from `doc_id` (the old
    /// document still exists: the caller decides whether to delete it).
    pub fn update_doc(&self, doc_id: i64, up: &Upload) -> Result<IntelDoc> {
        self.ensure_owned("update", doc_id)?;
        let path = format!("{}/intels/{doc_id}", self.generation.base_path());
        let resp = self.expect_ok("PUT", &path, Some(&upload_payload(up)))?;
        let doc = doc_of(&resp, "PUT", &path)?;
        if doc.id != doc_id {
            log::warn!(
                "Tanium stored the new content of intel {doc_id} as a new document {} (intrinsic id changed)",
                doc.id
            );
        }
        self.own(doc.id);
        Ok(doc)
    }

    /// Deletes a document: `DELETE {base}/intels/?id={id}`, falling back to
    /// `DELETE {base}/intels/{id}` when the first form is unknown (404/405). Gone already = Ok.
    ///
    /// Only `{}` answers are on record; a 2xx whose body is not JSON may be a proxy's page
    /// (nothing deleted) or a server that answers text, so the document is read back: gone
    /// (404) is Ok, still there is an error, anything else is an error saying it is unknown.
    pub fn delete_doc(&self, doc_id: i64) -> Result<()> {
        self.ensure_owned("delete", doc_id)?;
        let base = self.generation.base_path();
        let by_path = format!("{base}/intels/{doc_id}");
        if !self.delete_by_path.load(Ordering::SeqCst) {
            let by_query = format!("{base}/intels/?id={doc_id}");
            let resp = self.send("DELETE", &by_query, None)?;
            match resp.status {
                s if (200..300).contains(&s) => {
                    self.confirm_deleted(doc_id, &resp, &by_query)?;
                    self.disown(doc_id);
                    return Ok(());
                }
                404 | 405 => {}
                _ => return Err(status_error(&resp, "DELETE", &by_query)),
            }
            let resp = self.send("DELETE", &by_path, None)?;
            if (200..300).contains(&resp.status) {
                self.confirm_deleted(doc_id, &resp, &by_path)?;
                log::info!("Tanium deletes intel by path, not by ?id=; using that from now on");
                self.delete_by_path.store(true, Ordering::SeqCst);
            } else if resp.status != 404 {
                return Err(status_error(&resp, "DELETE", &by_path));
            }
            self.disown(doc_id);
            return Ok(());
        }
        let resp = self.send("DELETE", &by_path, None)?;
        if (200..300).contains(&resp.status) || resp.status == 404 {
            if resp.status != 404 {
                self.confirm_deleted(doc_id, &resp, &by_path)?;
            }
            self.disown(doc_id);
            return Ok(());
        }
        Err(status_error(&resp, "DELETE", &by_path))
    }

    /// Ok when a 2xx delete answer is JSON, or when reading the document back says it is gone.
    fn confirm_deleted(&self, doc_id: i64, resp: &Response, path: &str) -> Result<()> {
        let request = describe("DELETE", path);
        if json_body(resp, &request).is_ok() {
            return Ok(());
        }
        let get = format!("{}/intels/{doc_id}", self.generation.base_path());
        let answered = format!("{request} answered {} without JSON", resp.status);
        let message = match self.send("GET", &get, None) {
            Ok(r) if r.status == 404 => {
                log::debug!("{answered}; intel {doc_id} is gone");
                return Ok(());
            }
            Ok(r)
                if http::classify(r.status) == http::Verdict::Ok
                    && doc_of(&r, "GET", &get).is_ok_and(|d| d.id == doc_id) =>
            {
                format!("delete did not take: intel {doc_id} is still there ({answered})")
            }
            Ok(r) => format!(
                "delete of intel {doc_id} is ambiguous: {answered} and reading it back \
                 answered {}",
                r.status
            ),
            Err(e) => format!(
                "delete of intel {doc_id} is ambiguous: {answered} and reading it back \
                 failed ({e})"
            ),
        };
        Err(Error::DeleteUnconfirmed {
            service: Service::Tanium,
            detail: message,
        })
    }

    /// Deploys intel to endpoints once: 4.x `POST {base}/intel/deploy` (true); 3.x deploys on
    /// its own (false, no request). A 4.x server without the route also yields false.
    pub fn deploy(&self) -> Result<bool> {
        if self.generation == ApiGeneration::V3 {
            return Ok(false);
        }
        let path = format!("{}/intel/deploy", self.generation.base_path());
        let resp = self.send("POST", &path, None)?;
        if resp.status == 404 {
            log::warn!("Tanium has no intel deploy route; intel reaches endpoints on the server's own schedule");
            return Ok(false);
        }
        if http::classify(resp.status) != http::Verdict::Ok {
            let mut e = status_error(&resp, "POST", &path);
            if let Error::Status { message, .. } = &mut e {
                message.push_str(" (a deploy may already be running; the next run deploys again)");
            }
            return Err(e);
        }
        // A 200 that is not JSON (a proxy's page) started no deploy.
        let answer = unwrap_data(json_body(&resp, &describe("POST", &path))?);
        let task = answer.get("taskId").and_then(int_of);
        match task {
            Some(t) => log::info!("Tanium intel deploy started (task {t})"),
            None => log::info!("Tanium intel deploy started"),
        }
        Ok(true)
    }

    /// Checks connectivity, credentials and the source; a one-line summary for `check` mode.
    pub fn check(&self) -> Result<String> {
        let resp = self.send("GET", CURRENT_PATH, None)?;
        if !(200..300).contains(&resp.status) && resp.status != 404 {
            return Err(status_error(&resp, "GET", CURRENT_PATH));
        }
        let auth = match self.credentials {
            Credentials::Token => "an API token".to_string(),
            Credentials::Login { ref username, .. } => format!("user {username:?}"),
        };
        let source = match self.find_source(&self.source_name)? {
            Some(s) => format!("intel source {:?} exists (id {})", s.name, s.id),
            None => format!(
                "intel source {:?} does not exist yet (the first run creates it)",
                self.source_name
            ),
        };
        Ok(format!(
            "Tanium {} reachable: {}, signed in with {auth}; {source}",
            self.base_url,
            self.generation.label()
        ))
    }

    /// Reads what a run needs besides sources and intels, `GET {base}/intel/status` and
    /// `GET {base}/labels`, with the client's credentials: one `(what, outcome)` each, for
    /// `check` mode. A 403 is an error naming the missing permission.
    pub fn check_access(&self) -> Vec<(&'static str, Result<String>)> {
        let base = self.generation.base_path();
        let status_path = format!("{base}/intel/status");
        let status = self.send("GET", &status_path, None).and_then(|resp| {
            if resp.status == 404 && self.generation == ApiGeneration::V3 {
                return Ok("not offered (3.x deploys intel on its own)".to_string());
            }
            if http::classify(resp.status) != http::Verdict::Ok {
                return Err(status_error(&resp, "GET", &status_path));
            }
            let v = unwrap_data(json_body(&resp, &describe("GET", &status_path))?);
            let revision = v.get("currentRevision").and_then(int_of);
            let size = v.get("currentSize").and_then(int_of);
            Ok(match (revision, size) {
                (Some(r), Some(s)) => format!("readable (revision {r}, {s} bytes deployed)"),
                _ => "readable".to_string(),
            })
        });
        let labels_path = format!("{base}/labels");
        let labels = self
            .expect_ok("GET", &labels_path, None)
            .and_then(|resp| {
                let v = json_body(&resp, &describe("GET", &labels_path))?;
                rows_of(v).ok_or_else(|| Error::Protocol {
                    service: Service::Tanium,
                    request: describe("GET", &labels_path),
                    detail: "the label listing is not a JSON list".into(),
                })
            })
            .map(|rows| format!("readable ({} listed)", rows.len()));
        vec![("intel status", status), ("labels", labels)]
    }

    /// Tries the 4.x sources route, then the 3.x one when 4.x answers 400/401/403/404/405 or
    /// 5xx; returns the generation and why it was chosen. Probes go out with the session as
    /// it is (no re-login): a 401/403 on one generation's path says nothing about the
    /// credentials while the other path works.
    fn detect_generation(&self) -> Result<(ApiGeneration, String)> {
        match self.detect_once() {
            // A session can expire between the login and the probes: one more login decides.
            Err(Error::Auth { .. }) if matches!(self.credentials, Credentials::Login { .. }) => {
                let (_, epoch) = self.current_session();
                self.renew(epoch)?;
                self.detect_once()
            }
            r => r,
        }
    }

    fn detect_once(&self) -> Result<(ApiGeneration, String)> {
        let (session, _) = self.current_session();
        let probe = |g: ApiGeneration, policy: &RetryPolicy| {
            let path = format!("{}/sources", g.base_path());
            self.raw_call_with(policy, "GET", &path, Some(&session), None)
        };
        let ok = |r: &Response| http::classify(r.status) == http::Verdict::Ok;
        // One attempt first: a 3.x server may answer 5xx on the 4.x path on every run, and
        // retrying that would cost each run the whole backoff.
        let once = RetryPolicy {
            max_attempts: 1,
            ..self.policy.clone()
        };
        let mut v4 = match probe(ApiGeneration::V4, &once) {
            Ok(r) => r,
            Err(Error::Transport { .. }) => probe(ApiGeneration::V4, &self.policy)?,
            Err(e) => return Err(e),
        };
        let v4_path = format!("{}/sources", ApiGeneration::V4.base_path());
        if ok(&v4) {
            return Ok((
                ApiGeneration::V4,
                format!("{} answered {}", describe("GET", &v4_path), v4.status),
            ));
        }
        let falls_back = |s: u16| matches!(s, 400 | 401 | 403 | 404 | 405 | 408 | 429) || s >= 500;
        if !falls_back(v4.status) {
            return Err(status_error(&v4, "GET", &v4_path));
        }
        let v3_path = format!("{}/sources", ApiGeneration::V3.base_path());
        let v3 = probe(ApiGeneration::V3, &self.policy)?;
        if ok(&v3) {
            return Ok((
                ApiGeneration::V3,
                format!(
                    "the 4.x route answered {}, {} answered {}",
                    v4.status,
                    describe("GET", &v3_path),
                    v3.status
                ),
            ));
        }
        if matches!(http::classify(v4.status), http::Verdict::Retry(_)) {
            // Maybe a passing failure of a 4.x server: give it the full retries now.
            let again = probe(ApiGeneration::V4, &self.policy)?;
            if ok(&again) {
                return Ok((
                    ApiGeneration::V4,
                    format!(
                        "{} answered {} after {}",
                        describe("GET", &v4_path),
                        again.status,
                        v4.status
                    ),
                ));
            }
            v4 = again;
        }
        Err(self.no_generation(v4.status, v3.status))
    }

    /// The error when neither generation's sources route works: bad credentials, a missing
    /// permission, or no Threat Response at all, with both answers.
    fn no_generation(&self, v4: u16, v3: u16) -> Error {
        let answers = format!("sources route: 4.x answered {v4}, 3.x answered {v3}");
        let refused = |s: u16| matches!(s, 401 | 403);
        if refused(v4) || refused(v3) {
            if self.credentials_refused() == Some(true) {
                return self.credentials_error();
            }
            if v4 == 403 || v3 == 403 {
                let sources = format!("{}/sources", ApiGeneration::V4.base_path());
                return Error::Forbidden {
                    service: Service::Tanium,
                    needed: needed_for("GET", &sources),
                    answers,
                };
            }
        }
        Error::NoThreatResponse { answers }
    }

    /// Asks `GET /api/v2/session/current` whether the session or token itself is refused:
    /// Some(true) refused, Some(false) accepted, None when the answer says neither.
    fn credentials_refused(&self) -> Option<bool> {
        let (session, _) = self.current_session();
        let resp = self
            .raw_call("GET", CURRENT_PATH, Some(&session), None)
            .ok()?;
        match resp.status {
            401 | 403 => Some(true),
            s if http::classify(s) == http::Verdict::Ok => Some(false),
            _ => None,
        }
    }

    /// The credentials error for a session or token the server refuses.
    fn credentials_error(&self) -> Error {
        match self.credentials {
            Credentials::Token => token_refused(),
            Credentials::Login { .. } => Error::Auth {
                service: Service::Tanium,
                message: "the session from a login was refused; check that the account may use \
                          the API"
                    .into(),
            },
        }
    }

    /// Adds to errors on the sources route that a fixed `Tanium API Version` may be the cause.
    fn fixed_generation_hint(&self, e: Error) -> Error {
        if !self.fixed_generation {
            return e;
        }
        let version = match self.generation {
            ApiGeneration::V4 => "4.x",
            ApiGeneration::V3 => "3.x",
        };
        match e {
            Error::Status {
                service,
                request,
                status,
                message,
            } if matches!(status, 400 | 404 | 405 | 501) => Error::Status {
                service,
                request,
                status,
                message: format!(
                    "no Threat Response {version} API here, but Tanium API Version is {version}: \
                     set it to auto ({})",
                    message.chars().take(80).collect::<String>()
                ),
            },
            Error::Status {
                service,
                request,
                status,
                message,
            } => Error::Status {
                service,
                request,
                status,
                message: format!(
                    "{message} (Tanium API Version is {version}; if that is wrong, set it to auto)"
                ),
            },
            Error::Forbidden {
                service,
                needed,
                answers,
            } => Error::Forbidden {
                service,
                needed,
                answers: format!(
                    "{answers}; Tanium API Version is {version}: if that is wrong, set it to auto"
                ),
            },
            other => other,
        }
    }

    fn own(&self, id: i64) {
        if let Ok(mut o) = self.owned.lock() {
            o.insert(id);
        }
    }

    fn disown(&self, id: i64) {
        if let Ok(mut o) = self.owned.lock() {
            o.remove(&id);
        }
    }

    fn ensure_owned(&self, action: &'static str, doc_id: i64) -> Result<()> {
        let owned = self
            .owned
            .lock()
            .map(|o| o.contains(&doc_id))
            .unwrap_or(false);
        if owned {
            Ok(())
        } else {
            Err(Error::NotOwned { action, doc_id })
        }
    }

    fn set_session(&self, value: Secret, epoch: u64) {
        if let Ok(mut s) = self.session.write() {
            s.value = value;
            s.epoch = epoch;
        }
    }

    fn current_session(&self) -> (Secret, u64) {
        self.session
            .read()
            .map(|s| (s.value.clone(), s.epoch))
            .unwrap_or_default()
    }

    /// Exchanges username/password for a session string.
    fn login(&self) -> Result<Secret> {
        let Credentials::Login { username, password } = &self.credentials else {
            return Err(token_refused());
        };
        let body = json!({"username": username, "password": password.expose()});
        let payload = Payload::json(&body);
        let resp = self.raw_call("POST", LOGIN_PATH, None, Some(&payload))?;
        if matches!(resp.status, 401 | 403) {
            let message = if self.cloud {
                "Tanium Cloud accepts only API tokens for the REST API: put the token in Tanium \
                 Password and _token in Tanium Username"
                    .to_string()
            } else {
                format!(
                    "login refused ({}): check Tanium Username and Tanium Password, that the \
                     account is not locked, and that it may use the API",
                    resp.status
                )
            };
            return Err(Error::Auth {
                service: Service::Tanium,
                message,
            });
        }
        if !(200..300).contains(&resp.status) {
            return Err(status_error(&resp, "POST", LOGIN_PATH));
        }
        let v = json_body(&resp, &describe("POST", LOGIN_PATH))?;
        let session = unwrap_data(v)
            .get("session")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                // Some servers answer the session as plain text.
                let t = String::from_utf8_lossy(&resp.body).trim().to_string();
                (!t.is_empty() && !t.starts_with('{') && !t.contains(char::is_whitespace))
                    .then_some(t)
            })
            .ok_or_else(|| Error::Protocol {
                service: Service::Tanium,
                request: describe("POST", LOGIN_PATH),
                detail: "the login answer holds no session".into(),
            })?;
        Ok(Secret::new(session))
    }

    /// Sends with the current session; on 401/403 logs in again once and repeats the call.
    /// With an API token there is nothing to renew: 401 is a refused token, and 403 is a
    /// missing permission unless the token itself is refused (3.x answers 403 to both).
    fn send(&self, method: &'static str, path: &str, body: Option<&Payload>) -> Result<Response> {
        let (session, epoch) = self.current_session();
        let resp = self.raw_call(method, path, Some(&session), body)?;
        if !matches!(resp.status, 401 | 403) {
            return Ok(resp);
        }
        if matches!(self.credentials, Credentials::Token) {
            if resp.status == 403 && self.credentials_refused() != Some(true) {
                return Err(forbidden(method, path));
            }
            return Err(token_refused());
        }
        let session = self.renew(epoch)?;
        let resp = self.raw_call(method, path, Some(&session), body)?;
        match resp.status {
            401 => Err(Error::Auth {
                service: Service::Tanium,
                message: format!(
                    "{} answered 401 right after a fresh login; check the account's Threat Response permissions",
                    describe(method, path)
                ),
            }),
            403 => Err(forbidden(method, path)),
            _ => Ok(resp),
        }
    }

    /// Logs in again unless another worker already did since `seen_epoch`.
    fn renew(&self, seen_epoch: u64) -> Result<Secret> {
        let mut guard = self
            .session
            .write()
            .map_err(|_| Error::Other("Tanium session lock poisoned".into()))?;
        if guard.epoch != seen_epoch {
            return Ok(guard.value.clone());
        }
        log::info!("Tanium session rejected; logging in again");
        let fresh = self.login()?;
        self.relogins.fetch_add(1, Ordering::SeqCst);
        guard.value = fresh.clone();
        guard.epoch += 1;
        Ok(fresh)
    }

    /// One logical call through the shared retry loop; counts every attempt.
    fn raw_call(
        &self,
        method: &'static str,
        path: &str,
        session: Option<&Secret>,
        body: Option<&Payload>,
    ) -> Result<Response> {
        self.raw_call_with(&self.policy, method, path, session, body)
    }

    /// [`Self::raw_call`] with another retry policy.
    fn raw_call_with(
        &self,
        policy: &RetryPolicy,
        method: &'static str,
        path: &str,
        session: Option<&Secret>,
        body: Option<&Payload>,
    ) -> Result<Response> {
        let url = format!("{}{path}", self.base_url);
        http::call(&self.agent, policy, Service::Tanium, &mut || {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let mut req = Request::new(method, url.clone())
                .header("Accept", "application/json, text/plain, */*");
            if let Some(s) = session {
                req = req.header("session", s.expose());
            }
            if let Some(p) = body {
                req = req.header("Content-Type", p.content_type);
                for (k, v) in &p.headers {
                    req = req.header(k, v.clone());
                }
                req = req.body(p.bytes.clone());
            }
            Ok(req)
        })
    }

    /// [`Self::send`] that turns any non-2xx answer into [`Error::Status`].
    fn expect_ok(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Payload>,
    ) -> Result<Response> {
        let resp = self.send(method, path, body)?;
        if http::classify(resp.status) == http::Verdict::Ok {
            Ok(resp)
        } else {
            Err(status_error(&resp, method, path))
        }
    }
}

fn token_refused() -> Error {
    Error::Auth {
        service: Service::Tanium,
        message: "the API token is expired or revoked, or this job server's IP is not in the \
                  token's trusted IP list"
            .into(),
    }
}

/// True for Tanium Cloud API hosts (`<tenant>-api.cloud.tanium.com`, `*.titankube.com`).
pub fn is_cloud_host(base_url: &str) -> bool {
    let after_scheme = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    let host_port = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
    let host = host_port
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host_port, |(h, _)| h)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    host.ends_with(".cloud.tanium.com") || host.ends_with(".titankube.com")
}

/// What a call needs the server's permission to do, and the permission's name. Only
/// "threat response intels write" is a name on record (Splunk SOAR's Tanium TR README); the
/// others follow its pattern.
fn permission_for(method: &str, path: &str) -> Option<(&'static str, &'static str)> {
    let p = http::path_of(path);
    let rest = [ApiGeneration::V4, ApiGeneration::V3]
        .into_iter()
        .find_map(|g| p.strip_prefix(g.base_path()))?;
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let read = method == "GET";
    Some(match (segs.as_slice(), read) {
        (["sources", _, "intels", ..], false) | (["intels", ..], false) => {
            ("write intel documents", "threat response intels write")
        }
        (["sources", _, "intels", ..], true) | (["intels", ..], true) => {
            ("read intel documents", "threat response intels read")
        }
        (["sources", ..], true) => ("read intel sources", "threat response sources read"),
        (["sources", ..], false) => ("create intel sources", "threat response sources write"),
        (["labels", ..], true) => ("read labels", "threat response labels read"),
        (["labels", ..], false) => ("write labels", "threat response labels write"),
        (["intel", "deploy"], _) => ("deploy intel", "threat response intel deploy"),
        (["intel", "status"], _) => ("read intel status", "threat response intels read"),
        _ => return None,
    })
}

/// Says which permission a 403 to this call means is missing.
fn needed_for(method: &str, path: &str) -> String {
    match permission_for(method, path) {
        Some((action, name)) => format!("the account or API token needs '{name}' to {action}"),
        None => "the account or API token lacks a Threat Response permission this call needs"
            .to_string(),
    }
}

/// A 403 that is not about the credentials themselves: a missing permission.
fn forbidden(method: &str, path: &str) -> Error {
    Error::Forbidden {
        service: Service::Tanium,
        needed: needed_for(method, path),
        answers: format!("{} answered 403", describe(method, path)),
    }
}

/// `METHOD /path` without the query.
fn describe(method: &str, path: &str) -> String {
    format!("{method} {}", http::path_of(path))
}

fn status_error(resp: &Response, method: &str, path: &str) -> Error {
    let mut message = resp.body_excerpt(300);
    if message.is_empty() {
        message = "(no details)".into();
    }
    Error::Status {
        service: Service::Tanium,
        request: describe(method, path),
        status: resp.status,
        message,
    }
}

/// Parses a JSON body; an empty body is `null`. A non-JSON body is a protocol error that
/// names the content type (Tanium answers text or XML on some routes).
fn json_body(resp: &Response, request: &str) -> Result<Value> {
    if resp.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&resp.body).map_err(|e| Error::Protocol {
        service: Service::Tanium,
        request: request.to_string(),
        detail: format!(
            "expected JSON, got {} ({e})",
            resp.header("content-type").unwrap_or("no content type")
        ),
    })
}

/// Removes the 4.x `{"data": ...}` envelope when present (3.x answers bare JSON).
pub fn unwrap_data(v: Value) -> Value {
    match v {
        Value::Object(mut m) if m.contains_key("data") => m.remove("data").unwrap_or(Value::Null),
        other => other,
    }
}

/// The rows of a listing in any of the shapes seen or guessed: a bare array, `{"data": [...]}`,
/// `{"data": {"intels"|"sources"|"items"|...: [...]}}`, or an object with one array field.
pub fn rows_of(v: Value) -> Option<Vec<Value>> {
    match unwrap_data(v) {
        Value::Array(a) => Some(a),
        Value::Null => Some(Vec::new()),
        Value::Object(mut m) => {
            for key in ["intels", "sources", "items", "results", "docs", "rows"] {
                if let Some(Value::Array(a)) = m.remove(key) {
                    return Some(a);
                }
            }
            let mut arrays = m.into_iter().filter_map(|(_, v)| match v {
                Value::Array(a) => Some(a),
                _ => None,
            });
            match (arrays.next(), arrays.next()) {
                (Some(a), None) => Some(a),
                _ => None,
            }
        }
        _ => None,
    }
}

fn doc_of(resp: &Response, method: &str, path: &str) -> Result<IntelDoc> {
    let request = describe(method, path);
    let v = unwrap_data(json_body(resp, &request)?);
    let doc: IntelDoc = serde_json::from_value(v).map_err(|e| Error::Protocol {
        service: Service::Tanium,
        request: request.clone(),
        detail: format!("not an intel document: {e}"),
    })?;
    if doc.id <= 0 {
        return Err(Error::Protocol {
            service: Service::Tanium,
            request,
            detail: "the answer names no intel id".into(),
        });
    }
    Ok(doc)
}

/// Header-safe text: printable ASCII only (others become `?`), no longer than `max`.
fn header_text(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c.is_ascii() { c } else { '?' })
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A file name safe inside `filename="..."`.
fn safe_file_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if n.is_empty() {
        "intel.xml".into()
    } else {
        n
    }
}

/// No `name` / `description` headers: the XML carries both, and the server reads them there
/// (only YARA uploads, which have no such fields, are known to send them).
fn upload_payload(up: &Upload) -> Payload {
    let headers = vec![
        ("type".to_string(), header_text(up.kind, 32)),
        (
            "Content-Disposition".to_string(),
            format!("attachment; filename={}", safe_file_name(up.file_name)),
        ),
    ];
    Payload {
        content_type: "application/xml",
        headers,
        bytes: up.body.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_shapes_are_all_understood() {
        let one = json!([{"id": 1}]);
        assert_eq!(rows_of(one.clone()).unwrap().len(), 1);
        assert_eq!(rows_of(json!({"data": one.clone()})).unwrap().len(), 1);
        assert_eq!(
            rows_of(json!({"data": {"intels": one.clone(), "total": 1}}))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            rows_of(json!({"data": {"whatever": one.clone()}}))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(rows_of(json!({"data": null})).unwrap().len(), 0);
        assert!(rows_of(json!({"data": {"a": [], "b": []}})).is_none());
        assert!(rows_of(json!("text")).is_none());
    }

    #[test]
    fn envelope_is_removed_only_when_present() {
        assert_eq!(unwrap_data(json!({"data": {"id": 3}})), json!({"id": 3}));
        assert_eq!(unwrap_data(json!({"id": 3})), json!({"id": 3}));
    }

    #[test]
    fn token_rule_is_explicit() {
        let pw = Secret::new("hunter2");
        assert!(!is_token_auth("admin", &pw));
        assert!(is_token_auth("_token", &pw));
        assert!(is_token_auth(" _TOKEN ", &pw));
        assert!(is_token_auth("", &pw));
        assert!(is_token_auth("admin", &Secret::new("token-0123abcd")));
    }

    #[test]
    fn cloud_hosts_are_recognised() {
        for url in [
            "https://acme-api.cloud.tanium.com",
            "https://ACME-API.Cloud.Tanium.com:443/",
            "https://acme-api.titankube.com",
            "http://acme.cloud.tanium.com.:8080/x",
        ] {
            assert!(is_cloud_host(url), "{url}");
        }
        for url in [
            "https://tanium.example.com",
            "https://cloud.tanium.com.example.com",
            "https://notcloud.tanium.com",
            "http://127.0.0.1:8443",
        ] {
            assert!(!is_cloud_host(url), "{url}");
        }
    }

    #[test]
    fn a_403_names_the_permission_of_the_call() {
        let base = ApiGeneration::V4.base_path();
        let hint = |m: &str, p: &str| needed_for(m, &format!("{base}{p}"));
        assert_eq!(
            hint("POST", "/sources/3/intels"),
            "the account or API token needs 'threat response intels write' to write intel documents"
        );
        assert!(hint("PUT", "/intels/9").ends_with("to write intel documents"));
        assert!(hint("DELETE", "/intels/?id=9").ends_with("to write intel documents"));
        assert!(hint("GET", "/intels?limit=500").ends_with("to read intel documents"));
        assert!(hint("GET", "/sources").ends_with("to read intel sources"));
        assert!(hint("POST", "/sources").ends_with("to create intel sources"));
        assert!(hint("GET", "/labels").ends_with("to read labels"));
        assert!(hint("POST", "/intel/deploy").ends_with("to deploy intel"));
        assert!(hint("GET", "/intel/status").ends_with("to read intel status"));
        let v3 = ApiGeneration::V3.base_path();
        assert!(needed_for("GET", &format!("{v3}/labels")).ends_with("to read labels"));
        assert!(needed_for("GET", "/api/v2/other").contains("lacks a Threat Response"));
    }

    #[test]
    fn headers_are_safe() {
        assert_eq!(header_text("a\r\nb é", 10), "ab ?");
        assert_eq!(safe_file_name("tc/../x y.xml"), "tc_.._x_y.xml");
        assert_eq!(safe_file_name(""), "intel.xml");
    }
}
