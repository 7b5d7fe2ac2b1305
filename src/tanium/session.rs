//! Who the client is to Tanium: a username/password login (a renewable session) or an API
//! token, and the errors that say which of the two was refused and why.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::error::{Error, Result, Service};
use crate::http::{self};
use crate::secret::Secret;

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
