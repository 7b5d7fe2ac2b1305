//! The Tanium client: session, API generation, the app's source, its intel documents, deploy.
//!
//! Every request goes through [`crate::http::call`] (so the shared retry rule applies) and
//! through [`TaniumClient::send`], which adds the `session` header and, on 401/403, logs in
//! again once and repeats the call.
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
use crate::config::TaniumSettings;
use crate::error::{Error, Result, Service};
use crate::http::{self, Request, Response, RetryPolicy};
use crate::secret::Secret;
use crate::tanium::model::{int_of, ApiGeneration, IntelDoc, Source, Upload};

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
    pub fn connect(settings: &TaniumSettings, policy: RetryPolicy) -> Result<TaniumClient> {
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
        let mut client = TaniumClient {
            agent,
            policy,
            base_url: settings.base_url.trim_end_matches('/').to_string(),
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
            generation: ApiGeneration::V4,
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
        client.generation = client.detect_generation()?;
        log::info!(
            "Tanium {}: {}, {}",
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
        let resp = self.expect_ok("GET", &path, None)?;
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
    /// are passed on; others are counted and warned about once. The listing ends at an empty
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
                    log::debug!(
                        "ignoring Tanium intel {} of source {:?}",
                        doc.id,
                        doc.source_id
                    );
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
            log::warn!(
                "ignored {foreign} Tanium intel documents of other sources in the listing (only source {source_id} is ours)"
            );
        }
        if unreadable > 0 {
            log::warn!("ignored {unreadable} unreadable rows (no id) in the Tanium intel listing");
        }
        Ok(kept)
    }

    /// One document with its description (listing rows carry none): `GET {base}/intels/{id}`.
    /// None when it is gone (404). Only for documents of the app's own source.
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
        doc_of(&resp, "GET", &path).map(Some)
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
    pub fn delete_doc(&self, doc_id: i64) -> Result<()> {
        self.ensure_owned("delete", doc_id)?;
        let base = self.generation.base_path();
        let by_path = format!("{base}/intels/{doc_id}");
        if !self.delete_by_path.load(Ordering::SeqCst) {
            let by_query = format!("{base}/intels/?id={doc_id}");
            let resp = self.send("DELETE", &by_query, None)?;
            match resp.status {
                s if (200..300).contains(&s) => {
                    // A 200 that is not JSON (a proxy's page) did not delete anything.
                    json_body(&resp, &describe("DELETE", &by_query))?;
                    self.disown(doc_id);
                    return Ok(());
                }
                404 | 405 => {}
                _ => return Err(status_error(&resp, "DELETE", &by_query)),
            }
            let resp = self.send("DELETE", &by_path, None)?;
            if (200..300).contains(&resp.status) {
                json_body(&resp, &describe("DELETE", &by_path))?;
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
                json_body(&resp, &describe("DELETE", &by_path))?;
            }
            self.disown(doc_id);
            return Ok(());
        }
        Err(status_error(&resp, "DELETE", &by_path))
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

    /// Tries the 4.x sources route, then the 3.x one when 4.x is missing (404 and kin).
    fn detect_generation(&self) -> Result<ApiGeneration> {
        let mut tried = Vec::new();
        for g in [ApiGeneration::V4, ApiGeneration::V3] {
            let path = format!("{}/sources", g.base_path());
            let resp = self.send("GET", &path, None)?;
            if http::classify(resp.status) == http::Verdict::Ok {
                return Ok(g);
            }
            if !matches!(resp.status, 400 | 404 | 405 | 501) {
                return Err(status_error(&resp, "GET", &path));
            }
            tried.push(format!(
                "{} answered {}",
                describe("GET", &path),
                resp.status
            ));
        }
        Err(Error::Other(format!(
            "Tanium has no Threat Response intel API ({}): is Threat Response installed and \
             may this user use it?",
            tried.join("; ")
        )))
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

    fn ensure_owned(&self, action: &str, doc_id: i64) -> Result<()> {
        let owned = self
            .owned
            .lock()
            .map(|o| o.contains(&doc_id))
            .unwrap_or(false);
        if owned {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "refusing to {action} Tanium intel {doc_id}: it was not listed in the app's own source"
            )))
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
            return Err(token_rejected());
        };
        let body = json!({"username": username, "password": password.expose()});
        let payload = Payload::json(&body);
        let resp = self.raw_call("POST", LOGIN_PATH, None, Some(&payload))?;
        if matches!(resp.status, 401 | 403) {
            return Err(Error::Auth {
                service: Service::Tanium,
                message: format!(
                    "login refused ({}): check the Tanium username and password (tanium_username, \
                     tanium_password), that the account is not locked, and that it may use the API",
                    resp.status
                ),
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
    fn send(&self, method: &'static str, path: &str, body: Option<&Payload>) -> Result<Response> {
        let (session, epoch) = self.current_session();
        let resp = self.raw_call(method, path, Some(&session), body)?;
        if !matches!(resp.status, 401 | 403) {
            return Ok(resp);
        }
        if matches!(self.credentials, Credentials::Token) {
            return Err(token_rejected());
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
            403 => Err(Error::Status {
                service: Service::Tanium,
                request: describe(method, path),
                status: 403,
                message: "forbidden right after a fresh login: the Tanium user lacks the Threat \
                          Response permission for this call (e.g. 'threat response intels write')"
                    .into(),
            }),
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
        let url = format!("{}{path}", self.base_url);
        http::call(&self.agent, &self.policy, Service::Tanium, &mut || {
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

fn token_rejected() -> Error {
    Error::Auth {
        service: Service::Tanium,
        message: "the API token was refused: check that it is not expired or revoked, that this \
                  machine's IP is in the token's trusted addresses, and that its user has the \
                  Threat Response permissions"
            .into(),
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

fn upload_payload(up: &Upload) -> Payload {
    let mut headers = vec![
        ("type".to_string(), header_text(up.kind, 32)),
        (
            "Content-Disposition".to_string(),
            format!("attachment; filename={}", safe_file_name(up.file_name)),
        ),
    ];
    let name = header_text(up.name, 250);
    if !name.is_empty() {
        headers.push(("name".to_string(), name));
    }
    let description = header_text(up.description, 1000);
    if !description.is_empty() {
        headers.push(("description".to_string(), description));
    }
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
    fn headers_are_safe() {
        assert_eq!(header_text("a\r\nb é", 10), "ab ?");
        assert_eq!(safe_file_name("tc/../x y.xml"), "tc_.._x_y.xml");
        assert_eq!(safe_file_name(""), "intel.xml");
    }
}
