//! The ThreatConnect v3 client: signed (HMAC or token) GETs, indicator pulls (the pages are in
//! [`crate::tc::pages`]), deleted indicators, owners and a credentials check.
//!
//! Every URL is built fully percent-encoded and sent exactly as signed (crate::http does not
//! re-encode); a URL off the `tc_api_path` origin is refused before anything is signed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::http::{self, path_of, Origin, Request, Response, RetryPolicy, Tries};
use crate::secret::Secret;
use crate::tc::answer::{
    parse_envelope, parse_envelope_borrowed, status_error, tc_message, Envelope, SVC,
};
use crate::tc::auth::{hmac_authorization, path_and_query};
use crate::tc::model::DeletedIndicator;
use crate::tc::pages::Pages;
use crate::tc::tql::{encode_query_value, format_time};
use crate::tc::{Auth, Settings};

/// Renew a job token this long before it expires.
pub const TOKEN_RENEW_MARGIN_SECS: i64 = 600;

#[derive(Debug)]
struct TokenState {
    token: Secret,
    expires: Option<i64>,
    generation: u64,
}

#[derive(Debug)]
enum Signer {
    Hmac {
        access_id: String,
        secret_key: Secret,
    },
    Token(Mutex<TokenState>),
}

/// A ThreatConnect API client; `Send + Sync`, so one instance can serve several threads.
#[derive(Debug)]
pub struct TcClient {
    agent: http::Agent,
    policy: RetryPolicy,
    api_path: String,
    origin: Origin,
    signer: Signer,
    page_size: u32,
    requests: AtomicU64,
    leave_out_observed: std::sync::atomic::AtomicBool,
}

/// Percent-encodes the bytes a URI may not carry raw (space, quotes, non-ASCII...), leaving
/// everything already encoded or legal alone, so a `next` link is sent and signed as one string.
pub(super) fn wire_safe(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        let ok = b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b);
        if ok {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// An owner as `/v3/security/owners` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Owner {
    /// Owner name, as TQL and `owner=` take it.
    #[serde(default)]
    pub name: String,
    /// `Organization`, `Community` or `Source`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenewBody {
    /// A boolean that some servers send as a string.
    #[serde(default)]
    success: Option<serde_json::Value>,
    #[serde(default)]
    api_token: Option<String>,
    #[serde(default)]
    api_token_expires: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

impl TcClient {
    /// Builds a client from validated settings; fails on an unusable URL or missing credentials.
    pub fn new(settings: &Settings, policy: RetryPolicy) -> Result<TcClient> {
        let api_path = settings.api_path.trim().trim_end_matches('/').to_string();
        let origin = Origin::of_url(&api_path).map_err(|_| {
            Error::Param(format!(
                "tc_api_path must be an http(s) URL such as https://host/api, got {:?}",
                path_of(&api_path)
            ))
        })?;
        let signer = match &settings.auth {
            Auth::Hmac {
                access_id,
                secret_key,
            } => {
                if access_id.trim().is_empty() || secret_key.is_empty() {
                    return Err(Error::Param(
                        "ThreatConnect API access id and secret key must both be set".into(),
                    ));
                }
                Signer::Hmac {
                    access_id: access_id.trim().to_string(),
                    secret_key: secret_key.clone(),
                }
            }
            Auth::Token { token, expires } => {
                if token.is_empty() {
                    return Err(Error::Param(
                        "ThreatConnect credentials missing: no tc_token and no API access id / secret key"
                            .into(),
                    ));
                }
                Signer::Token(Mutex::new(TokenState {
                    token: token.clone(),
                    expires: *expires,
                    generation: 0,
                }))
            }
        };
        Ok(TcClient {
            agent: http::agent(&settings.http)?,
            policy,
            api_path,
            origin,
            signer,
            page_size: settings.page_size.clamp(1, 10_000),
            requests: AtomicU64::new(0),
            leave_out_observed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Marks every indicator pulled from now on as one whose document leaves out what an
    /// observation may change (see [`crate::tc::model::Indicator::leave_out_observed`]).
    pub fn leave_out_observed(&self, on: bool) {
        self.leave_out_observed.store(on, Ordering::SeqCst);
    }

    pub(super) fn leaves_out_observed(&self) -> bool {
        self.leave_out_observed.load(Ordering::SeqCst)
    }

    /// HTTP attempts sent so far (retries and token renewals included).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn token_state(&self) -> Option<std::sync::MutexGuard<'_, TokenState>> {
        match &self.signer {
            Signer::Token(m) => Some(m.lock().unwrap_or_else(|e| e.into_inner())),
            Signer::Hmac { .. } => None,
        }
    }

    /// One signed attempt; called again for every retry so the timestamp is fresh.
    fn build(&self, url: &str) -> Result<Request> {
        self.build_with("GET", url, None)
    }

    /// [`Self::build`] for any method, with a JSON body.
    pub(super) fn build_with(
        &self,
        method: &'static str,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<Request> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut req = Request::new(method, url).header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_vec());
        }
        Ok(match &self.signer {
            Signer::Hmac {
                access_id,
                secret_key,
            } => {
                let ts = now();
                let value =
                    hmac_authorization(access_id, secret_key, path_and_query(url), method, ts);
                req.header("Authorization", value)
                    .header("Timestamp", ts.to_string())
            }
            Signer::Token(m) => {
                let t = m.lock().unwrap_or_else(|e| e.into_inner());
                req.header("Authorization", format!("TC-Token {}", t.token.expose()))
            }
        })
    }

    /// Trades the job token for a fresh one through `/appAuth` (no-op if another thread already did).
    pub(super) fn renew(&self, seen_generation: u64) -> Result<()> {
        let Some(mut t) = self.token_state() else {
            return Ok(());
        };
        if t.generation != seen_generation {
            return Ok(());
        }
        let url = format!(
            "{}/appAuth?expiredToken={}",
            self.api_path,
            encode_query_value(t.token.expose())
        );
        let what = format!("GET {}", path_of(&url));
        let fail = |m: String| Error::Auth {
            service: SVC,
            message: format!("renewing the job token through /appAuth failed: {m}"),
        };
        let resp = http::call(&self.agent, &self.policy, SVC, &mut || {
            self.requests.fetch_add(1, Ordering::SeqCst);
            Ok(Request::new("GET", url.clone()).header("Accept", "application/json"))
        })?;
        if !(200..300).contains(&resp.status) {
            let (_, msg) = tc_message(&resp);
            return Err(fail(format!("{} to {what}: {msg}", resp.status)));
        }
        let body: RenewBody = serde_json::from_slice(&resp.body)
            .map_err(|e| fail(format!("unreadable answer: {e}")))?;
        let refused = match &body.success {
            Some(serde_json::Value::Bool(b)) => !b,
            Some(serde_json::Value::String(s)) => s.trim().eq_ignore_ascii_case("false"),
            _ => false,
        };
        let token = match (refused, body.api_token) {
            (true, _) | (_, None) => {
                return Err(fail(
                    body.message
                        .unwrap_or_else(|| "no apiToken returned".into()),
                ))
            }
            (_, Some(tok)) if tok.is_empty() => return Err(fail("empty apiToken returned".into())),
            (_, Some(tok)) => tok,
        };
        let expires = match body.api_token_expires {
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            Some(serde_json::Value::String(s)) => s.trim().parse::<i64>().ok(),
            _ => None,
        }
        .map(|e| if e > 100_000_000_000 { e / 1000 } else { e });
        t.token = Secret::new(token);
        t.expires = expires;
        t.generation += 1;
        log::info!("renewed the ThreatConnect job token");
        Ok(())
    }

    /// Renews ahead of time when the token is within [`TOKEN_RENEW_MARGIN_SECS`] of expiry.
    pub(super) fn renew_if_due(&self) -> Result<()> {
        let due = match self.token_state() {
            Some(t) => t
                .expires
                .filter(|e| now() + TOKEN_RENEW_MARGIN_SECS >= *e)
                .map(|e| (t.generation, e)),
            None => None,
        };
        let Some((generation, expires)) = due else {
            return Ok(());
        };
        match self.renew(generation) {
            Ok(()) => Ok(()),
            Err(e) if now() < expires => {
                log::warn!("{e}; using the current token until it expires");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.token_state().map(|t| t.generation).unwrap_or(0)
    }

    /// GETs `url` (signed per attempt, retried per the shared rule, renewing a token once on
    /// 401) and returns the 2xx answer, or the mapped error.
    pub(super) fn get(&self, url: &str) -> Result<Response> {
        self.get_with(url, &self.policy, &mut Tries::default())
    }

    /// [`Self::get`] with its own retry policy, as part of a call that made `tries` so far.
    pub(super) fn get_with(
        &self,
        url: &str,
        policy: &RetryPolicy,
        tries: &mut Tries,
    ) -> Result<Response> {
        let resp = self.answer_with(url, policy, tries)?;
        if (200..300).contains(&resp.status) {
            Ok(resp)
        } else {
            Err(status_error(
                &resp,
                &format!("GET {}", path_of(&wire_safe(url))),
            ))
        }
    }

    /// TC's final answer to a GET of `url`, whatever its status: signed per attempt, retried per
    /// the shared rule, a job token renewed ahead of expiry and once on 401. Refused before
    /// anything is sent when `url` is not on the `tc_api_path` origin.
    pub(super) fn answer(&self, url: &str) -> Result<Response> {
        self.answer_with(url, &self.policy, &mut Tries::default())
    }

    fn answer_with(&self, url: &str, policy: &RetryPolicy, tries: &mut Tries) -> Result<Response> {
        let url = wire_safe(url);
        let what = format!("GET {}", path_of(&url));
        if Origin::of_url(&url).ok().as_ref() != Some(&self.origin) {
            return Err(Error::Protocol {
                service: SVC,
                request: what,
                detail: format!(
                    "a link points outside tc_api_path ({}); credentials are not sent there",
                    url.split(['?', '#']).next().unwrap_or("")
                ),
            });
        }
        self.renew_if_due()?;
        let mut renewed = false;
        loop {
            let generation = self.generation();
            let resp = http::call_on(&self.agent, policy, SVC, tries, &mut || self.build(&url))?;
            if resp.status == 401 && !renewed && matches!(self.signer, Signer::Token(_)) {
                renewed = true;
                log::info!("ThreatConnect answered 401 to {what}; renewing the job token");
                self.renew(generation)?;
                continue;
            }
            return Ok(resp);
        }
    }

    /// One attempt of a signed PUT of a JSON body, whatever the answer: never retried here,
    /// since a write whose answer was lost may have been made (the caller decides). Refused
    /// before anything is sent when `url` is not on the `tc_api_path` origin.
    pub(super) fn put_once(&self, url: &str, body: &[u8]) -> Result<Response> {
        let url = wire_safe(url);
        if Origin::of_url(&url).ok().as_ref() != Some(&self.origin) {
            return Err(Error::Protocol {
                service: SVC,
                request: format!("PUT {}", path_of(&url)),
                detail: "the URL is outside tc_api_path; credentials are not sent there".into(),
            });
        }
        self.renew_if_due()?;
        let once = RetryPolicy {
            max_attempts: 1,
            max_timeouts: 1,
            ..self.policy.clone()
        };
        http::call_on(&self.agent, &once, SVC, &mut Tries::default(), &mut || {
            self.build_with("PUT", &url, Some(body))
        })
    }

    /// Whether the client signs with a job token (which a 401 may ask to renew).
    pub(super) fn uses_token(&self) -> bool {
        matches!(self.signer, Signer::Token(_))
    }

    /// `tc_api_path` without a trailing slash.
    pub(super) fn api_path(&self) -> &str {
        &self.api_path
    }

    /// The retry policy every call follows.
    pub(super) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// `resultLimit` of a pull's first page.
    pub(super) fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Streams the indicators `tql` selects, one page at a time (see [`Pages`]).
    ///
    /// Sorted by id and paged by key (`(<tql>) AND id > <last id of the page>`), never by
    /// following `next`: offsets shift when TC modifies, deletes or deactivates indicators while
    /// the pull runs, and a record sliding back across a page edge would be skipped. `next` only
    /// says that more pages exist; it is never fetched, whatever origin it names (real servers
    /// may name a proxy or an internal host there), so credentials never go to it either.
    pub fn indicators(&self, tql: &str) -> Pages<'_> {
        log::debug!("ThreatConnect TQL: {tql}");
        Pages::new(self, tql)
    }

    /// How many indicators `tql` selects (one request, `count=true`; no records are read).
    pub fn count(&self, tql: &str) -> Result<u64> {
        let url = format!(
            "{}/v3/indicators?tql={}&resultLimit=1&count=true",
            self.api_path,
            encode_query_value(tql)
        );
        let what = "GET /api/v3/indicators";
        let resp = self.get(&url)?;
        let env: Envelope<&serde_json::value::RawValue> = parse_envelope_borrowed(&resp, what)?;
        env.count.ok_or_else(|| Error::Protocol {
            service: SVC,
            request: what.into(),
            detail: "the answer to count=true holds no count".into(),
        })
    }

    /// For `check`: the first page a pull of `tql` asks for, one record long and with TC's count
    /// of what the query selects (None when the answer carries no count).
    pub fn try_query(&self, tql: &str) -> Result<Option<u64>> {
        let url = format!("{}&count=true", self.page_url(tql, 1));
        let what = "GET /api/v3/indicators";
        let resp = self.get(&url)?;
        let env: Envelope<&serde_json::value::RawValue> = parse_envelope_borrowed(&resp, what)?;
        Ok(env.count)
    }

    /// The URL of one page of `tql`, exactly as it goes on the wire.
    pub(super) fn page_url(&self, tql: &str, size: u32) -> String {
        format!(
            "{}/v3/indicators?tql={}&fields=tags&fields=threatAssess&fields=falsePositives&fields=externalDates&resultLimit={size}&sorting=id%20asc",
            self.api_path,
            encode_query_value(tql),
        )
    }

    /// Every record of a v3 list, page by page with `resultStart` (never following `next`, which
    /// only says more exist); `url` carries the other query parameters.
    pub(super) fn each_record(
        &self,
        url: &str,
        limit: u32,
        each: &mut dyn FnMut(&serde_json::value::RawValue),
    ) -> Result<()> {
        let mut start: u64 = 0;
        let mut previous: Option<Vec<u8>> = None;
        loop {
            let page_url = format!("{url}&resultStart={start}&resultLimit={limit}");
            let what = format!("GET {}", path_of(&page_url));
            let resp = self.get(&page_url)?;
            if previous.as_deref() == Some(resp.body.as_slice()) {
                return Err(Error::Protocol {
                    service: SVC,
                    request: what,
                    detail: format!(
                        "the page at resultStart={start} repeats the one before it (resultStart ignored?)"
                    ),
                });
            }
            let env: Envelope<&serde_json::value::RawValue> =
                parse_envelope_borrowed(&resp, &what)?;
            let n = env.data.len() as u64;
            for r in env.data {
                each(r);
            }
            if n == 0 || env.next.as_deref().is_none_or(str::is_empty) {
                return Ok(());
            }
            start += n;
            previous = Some(resp.body.clone());
        }
    }

    /// Calls `each` for every indicator TC reports deleted since `since` in `owner` (None: the
    /// API user's Organization, the endpoint's default scope); returns how many.
    ///
    /// A record that cannot be read is an error once the readable ones are passed on: a missed
    /// deletion must make the caller's removal evidence incomplete, not silently shorter.
    pub fn deleted_since(
        &self,
        since: OffsetDateTime,
        owner: Option<&str>,
        each: &mut dyn FnMut(DeletedIndicator),
    ) -> Result<u64> {
        let mut url = format!(
            "{}/v3/indicators/deleted?deletedSince={}",
            self.api_path,
            encode_query_value(&format_time(since))
        );
        if let Some(o) = owner {
            url.push_str(&format!("&owner={}", encode_query_value(o)));
        }
        let (mut count, mut unreadable) = (0u64, None);
        self.each_record(
            &url,
            self.page_size,
            &mut |r| match serde_json::from_str::<DeletedIndicator>(r.get()) {
                Ok(d) if !d.type_name.trim().is_empty() && !d.summary.trim().is_empty() => {
                    count += 1;
                    each(d);
                }
                Ok(_) => {
                    unreadable.get_or_insert_with(|| "a record without type or summary".into());
                }
                Err(e) => {
                    unreadable.get_or_insert_with(|| e.to_string());
                }
            },
        )?;
        match unreadable {
            None => Ok(count),
            Some(why) => Err(Error::Protocol {
                service: SVC,
                request: "GET /api/v3/indicators/deleted".into(),
                detail: format!("an unreadable deleted-indicator record ({why})"),
            }),
        }
    }

    /// Every owner the API user can see (`/v3/security/owners`).
    pub fn owners(&self) -> Result<Vec<Owner>> {
        let url = format!("{}/v3/security/owners?", self.api_path);
        let mut out = Vec::new();
        let mut unreadable = None;
        self.each_record(
            &url,
            500,
            &mut |r| match serde_json::from_str::<Owner>(r.get()) {
                Ok(o) if !o.name.trim().is_empty() => out.push(o),
                Ok(_) => {
                    unreadable.get_or_insert_with(|| "an owner without a name".to_string());
                }
                Err(e) => {
                    unreadable.get_or_insert_with(|| e.to_string());
                }
            },
        )?;
        match unreadable {
            None => Ok(out),
            Some(why) => Err(Error::Protocol {
                service: SVC,
                request: "GET /api/v3/security/owners".into(),
                detail: format!("an unreadable owner record ({why})"),
            }),
        }
    }

    /// A cheap authenticated call (the first page of owners) proving the URL and credentials
    /// work.
    pub fn check(&self) -> Result<String> {
        let url = format!("{}/v3/security/owners", self.api_path);
        let resp = self.get(&url)?;
        let env: Envelope<serde_json::Value> =
            parse_envelope(&resp, "GET /api/v3/security/owners")?;
        let kind = match self.signer {
            Signer::Hmac { .. } => "API access id / secret key",
            Signer::Token(_) => "job token",
        };
        let owner = env
            .data
            .first()
            .and_then(|o| o.get("name"))
            .and_then(|n| n.as_str())
            .map(|n| format!("; first visible owner: {n}"))
            .unwrap_or_default();
        Ok(format!(
            "ThreatConnect at {} accepted the {kind}{owner}",
            self.api_path.split('?').next().unwrap_or("")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_safe_only_touches_illegal_bytes() {
        assert_eq!(
            wire_safe("http://h/a?x=%22a%22&y=1+2"),
            "http://h/a?x=%22a%22&y=1+2"
        );
        assert_eq!(
            wire_safe("http://h/a?x=\"a b\"&é"),
            "http://h/a?x=%22a%20b%22&%C3%A9"
        );
    }
}
