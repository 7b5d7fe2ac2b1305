//! The Tanium client: session, API generation, the app's source, its intel documents, deploy.
//!
//! Every request goes through [`crate::http::call`] (so the shared retry rule applies) and
//! through [`TaniumClient::send`], which adds the `session` header and, on 401/403, logs in
//! again and repeats the call. A 403 can mean an expired session (3.x answers 403 to those,
//! and other clients log in again on it) or a missing permission, so it costs at most one
//! login per session: a 403 that survives a fresh login is a missing permission, and so is a
//! 403 to a session a login after a 403 made, unless `GET /api/v2/session/current` refuses
//! that session. A 403 to a token that endpoint still accepts is one too. The error names the
//! permission the call needs; a token refused by the server is a credentials error.
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

use serde_json::Value;

use crate::compact::IdSet;
use crate::error::{Error, Result, Service};
use crate::http::{self, Request, Response, RetryPolicy, Tries};
use crate::secret::Secret;
use crate::tanium::model::ApiGeneration;
use crate::tanium::Settings;

use super::answers::{describe, forbidden, status_error};
pub use super::answers::{rows_of, unwrap_data};
pub use super::session::{is_cloud_host, is_token_auth};
use super::session::{token_refused, Credentials, Session};

/// Largest page the intel listing accepts (Tanium answers 400 above 500).
pub const PAGE_LIMIT: u32 = 500;

/// Default cap on rows one listing may return before it is judged never-ending.
pub const DEFAULT_MAX_LISTED_ROWS: u64 = 20_000_000;

/// A request body with the headers that describe it.
pub(super) struct Payload {
    pub(super) content_type: &'static str,
    pub(super) headers: Vec<(String, String)>,
    pub(super) bytes: Vec<u8>,
}

impl Payload {
    pub(super) fn json(v: &Value) -> Payload {
        Payload {
            content_type: "application/json",
            headers: Vec::new(),
            bytes: serde_json::to_vec(v).unwrap_or_default(),
        }
    }
}

/// Talks to one Tanium server; `Send + Sync`, so a worker pool can share one client.
pub struct TaniumClient {
    pub(super) agent: http::Agent,
    pub(super) policy: RetryPolicy,
    pub(super) base_url: String,
    pub(super) source_name: String,
    pub(super) credentials: Credentials,
    pub(super) session: RwLock<Session>,
    pub(super) generation: ApiGeneration,
    /// The generation was set by `Tanium API Version`, not detected.
    pub(super) fixed_generation: bool,
    /// The host is Tanium Cloud, where the REST API takes API tokens only.
    pub(super) cloud: bool,
    pub(super) requests: AtomicU64,
    pub(super) relogins: AtomicU64,
    /// The epoch + 1 of a session a login made after a 403 (0: none): a 403 to it is not
    /// worth another login.
    pub(super) renewed_on_403: AtomicU64,
    /// Ids seen in (or written to) the app's own source: the only ones we update or delete.
    pub(super) owned: Mutex<IdSet>,
    /// Set once `DELETE /intels/?id=` proved unsupported (404/405 then `/intels/{id}` worked).
    pub(super) delete_by_path: AtomicBool,
    pub(super) max_listed_rows: AtomicU64,
    /// Label ids as re-read once after an attach answered 500 (labels made since added).
    pub(super) labels_reread: Mutex<Option<std::collections::HashSet<i64>>>,
}

impl std::fmt::Debug for TaniumClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaniumClient")
            .field("base_url", &self.base_url)
            .field("generation", &self.generation)
            .finish()
    }
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
            renewed_on_403: AtomicU64::new(0),
            owned: Mutex::new(IdSet::new()),
            delete_by_path: AtomicBool::new(false),
            max_listed_rows: AtomicU64::new(DEFAULT_MAX_LISTED_ROWS),
            labels_reread: Mutex::new(None),
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
    #[cfg(any(test, feature = "sim"))]
    pub fn set_max_listed_rows(&self, rows: u64) {
        self.max_listed_rows.store(rows.max(1), Ordering::SeqCst);
    }

    pub(super) fn own(&self, id: i64) {
        if let Ok(mut o) = self.owned.lock() {
            o.insert(id);
        }
    }

    pub(super) fn disown(&self, id: i64) {
        if let Ok(mut o) = self.owned.lock() {
            o.remove(&id);
        }
    }

    pub(super) fn ensure_owned(&self, action: &'static str, doc_id: i64) -> Result<()> {
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

    pub(super) fn set_session(&self, value: Secret, epoch: u64) {
        if let Ok(mut s) = self.session.write() {
            s.value = value;
            s.epoch = epoch;
        }
    }

    pub(super) fn current_session(&self) -> (Secret, u64) {
        self.session
            .read()
            .map(|s| (s.value.clone(), s.epoch))
            .unwrap_or_default()
    }

    /// Sends with the current session; on 401/403 logs in again (see the module docs for
    /// when a 403 does not) and repeats the call. With an API token there is nothing to
    /// renew: 401 is a refused token, and 403 is a missing permission unless the token itself
    /// is refused (3.x answers 403 to both).
    pub(super) fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Payload>,
    ) -> Result<Response> {
        self.send_with(&mut Tries::default(), method, path, body)
    }

    /// [`Self::send`] as part of a call that made `tries` so far (and may pause early).
    pub(super) fn send_with(
        &self,
        tries: &mut Tries,
        method: &'static str,
        path: &str,
        body: Option<&Payload>,
    ) -> Result<Response> {
        let (session, epoch) = self.current_session();
        let resp = self.raw_call_with(tries, method, path, Some(&session), body)?;
        if !matches!(resp.status, 401 | 403) {
            return Ok(resp);
        }
        if matches!(self.credentials, Credentials::Token) {
            if resp.status == 403 && self.credentials_refused() != Some(true) {
                return Err(forbidden(method, path));
            }
            return Err(token_refused());
        }
        if resp.status == 403
            && self.renewed_on_403.load(Ordering::SeqCst) == epoch + 1
            && self.credentials_refused() != Some(true)
        {
            return Err(forbidden(method, path));
        }
        let session = self.renew(epoch, resp.status == 403)?;
        let resp = self.raw_call_with(tries, method, path, Some(&session), body)?;
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

    /// One logical call through the shared retry loop; counts every attempt.
    pub(super) fn raw_call(
        &self,
        method: &'static str,
        path: &str,
        session: Option<&Secret>,
        body: Option<&Payload>,
    ) -> Result<Response> {
        self.raw_call_with(&mut Tries::default(), method, path, session, body)
    }

    /// [`Self::raw_call`] as part of a call that made `tries` so far (and may pause early).
    pub(super) fn raw_call_with(
        &self,
        tries: &mut Tries,
        method: &'static str,
        path: &str,
        session: Option<&Secret>,
        body: Option<&Payload>,
    ) -> Result<Response> {
        let url = format!("{}{path}", self.base_url);
        http::call_on(
            &self.agent,
            &self.policy,
            Service::Tanium,
            tries,
            &mut || {
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
            },
        )
    }

    /// [`Self::send`] that turns any non-2xx answer into [`Error::Status`].
    pub(super) fn expect_ok(
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
