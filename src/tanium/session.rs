//! Who the client is to Tanium: a username/password login (a renewable session) or an API
//! token, and the errors that say which of the two was refused and why.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::error::{Error, Result, Service};
use crate::http::{self, Response, Tries};
use crate::secret::Secret;
use crate::tanium::model::ApiGeneration;

use super::answers::{describe, json_body, status_error, unwrap_data};
use super::client::{Payload, TaniumClient};

pub(super) const LOGIN_PATH: &str = "/api/v2/session/login";
pub(super) const CURRENT_PATH: &str = "/api/v2/session/current";

/// How the client proves who it is.
pub(super) enum Credentials {
    /// Username and password, exchanged for a session string (renewable).
    Login { username: String, password: Secret },
    /// An API token used directly as the session (nothing to renew).
    Token,
}

/// The current session value and how many times it was renewed, so concurrent workers
/// that all see a 401 log in only once.
pub(super) struct Session {
    pub(super) value: Secret,
    pub(super) epoch: u64,
}

/// True when `username`/`password` name an API token rather than a login (see module docs).
pub fn is_token_auth(username: &str, password: &Secret) -> bool {
    let u = username.trim();
    u.is_empty() || u.eq_ignore_ascii_case("_token") || password.expose().starts_with("token-")
}

impl TaniumClient {
    /// Asks `GET /api/v2/session/current` whether the session or token itself is refused:
    /// Some(true) refused, Some(false) accepted, None when the answer says neither.
    pub(super) fn credentials_refused(&self) -> Option<bool> {
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
    pub(super) fn credentials_error(&self) -> Error {
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

    /// Exchanges username/password for a session string.
    pub(super) fn login(&self) -> Result<Secret> {
        let Credentials::Login { username, password } = &self.credentials else {
            return Err(token_refused());
        };
        let body = json!({"username": username, "password": password.expose()});
        let payload = Payload::json(&body);
        let resp = self.raw_call("POST", LOGIN_PATH, None, Some(&payload))?;
        let request = describe("POST", LOGIN_PATH);
        if let Some(e) = resp.not_the_api(Service::Tanium, &request) {
            return Err(e);
        }
        let not_tanium = |why: String| Error::NotTanium {
            host: resp.host.clone(),
            request: request.clone(),
            status: resp.status,
            why,
        };
        if matches!(resp.status, 401 | 403) {
            if let Some(why) = self.refusal_not_tanium(&resp) {
                return Err(not_tanium(why));
            }
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
        let v = json_body(&resp, &request)?;
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
            .ok_or_else(|| not_tanium(format!("{} without a session", content_type(&resp))))?;
        Ok(Secret::new(session))
    }

    /// Why a refused login's answer is not Tanium's (None: it may well be). Tanium takes its
    /// credentials in the login's body and sessions in its own header, so it asks for no HTTP
    /// authentication; and a Tanium server has a Threat Response route that answers something
    /// other than 404 (401 or 403 without a session), where another API has none.
    fn refusal_not_tanium(&self, resp: &Response) -> Option<String> {
        let what = content_type(resp);
        if let Some(challenge) = resp.header("www-authenticate") {
            let scheme: String = challenge
                .split_whitespace()
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(20)
                .collect();
            return Some(format!("{what}, asking for {scheme} authentication"));
        }
        let absent = [ApiGeneration::V4, ApiGeneration::V3].iter().all(|g| {
            let path = format!("{}/sources", g.base_path());
            let mut once = Tries::default().pausing_after(1);
            self.raw_call_with(&mut once, "GET", &path, None, None)
                .is_ok_and(|r| r.status == 404)
        });
        absent.then(|| format!("{what}; no Threat Response route there (404)"))
    }

    /// Logs in again unless another worker already did since `seen_epoch`; `on_403` says
    /// the session was refused with 403, not 401.
    pub(super) fn renew(&self, seen_epoch: u64, on_403: bool) -> Result<Secret> {
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
        if on_403 {
            self.renewed_on_403.store(guard.epoch + 1, Ordering::SeqCst);
        }
        Ok(fresh)
    }
}

/// The media type of an answer (without parameters), or that it has none, for messages.
fn content_type(resp: &Response) -> String {
    if resp.body.iter().all(u8::is_ascii_whitespace) {
        return "no body".into();
    }
    resp.header("content-type")
        .and_then(|t| t.split(';').next())
        .map(|t| {
            t.trim()
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(40)
                .collect::<String>()
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "no content type".into())
}

pub(super) fn token_refused() -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn token_rule_is_explicit() {
        let pw = Secret::new("hunter2");
        assert!(!is_token_auth("admin", &pw));
        assert!(is_token_auth("_token", &pw));
        assert!(is_token_auth(" _TOKEN ", &pw));
        assert!(is_token_auth("", &pw));
        assert!(is_token_auth("admin", &Secret::new("token-0123abcd")));
    }

    #[test]
    pub(super) fn cloud_hosts_are_recognised() {
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
}
