//! Which Threat Response API generation the server speaks: fixed by `Tanium API Version`, or
//! detected from the sources route of each (see the client's module docs).

use crate::error::{Error, Result, Service};
use crate::http::{self, Response, Tries};
use crate::tanium::model::ApiGeneration;

use super::answers::{describe, needed_for, status_error};
use super::client::TaniumClient;
use super::session::Credentials;

impl TaniumClient {
    /// Tries the 4.x sources route, then the 3.x one when 4.x answers 400/401/403/404/405 or
    /// 5xx; returns the generation and why it was chosen. Probes go out with the session as
    /// it is (no re-login): a 401/403 on one generation's path says nothing about the
    /// credentials while the other path works.
    pub(super) fn detect_generation(&self) -> Result<(ApiGeneration, String)> {
        match self.detect_once() {
            // A session can expire between the login and the probes: one more login decides.
            Err(Error::Auth { .. }) if matches!(self.credentials, Credentials::Login { .. }) => {
                let (_, epoch) = self.current_session();
                self.renew(epoch, false)?;
                self.detect_once()
            }
            r => r,
        }
    }

    pub(super) fn detect_once(&self) -> Result<(ApiGeneration, String)> {
        let (session, _) = self.current_session();
        let probe = |g: ApiGeneration, tries: &mut Tries| {
            let path = format!("{}/sources", g.base_path());
            self.raw_call_with(tries, "GET", &path, Some(&session), None)
        };
        let ok = |r: &Response| http::classify(r.status) == http::Verdict::Ok;
        // One attempt first: a 3.x server may answer 5xx on the 4.x path on every run, and
        // retrying that would cost each run the whole backoff. The rest of the call follows
        // when it got no answer, or when 3.x does not answer either.
        let mut v4_tries = Tries::default().pausing_after(1);
        let mut v4 = match probe(ApiGeneration::V4, &mut v4_tries) {
            Ok(r) => r,
            Err(Error::Transport(_)) => {
                v4_tries.resume();
                probe(ApiGeneration::V4, &mut v4_tries)?
            }
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
        let v3 = probe(ApiGeneration::V3, &mut Tries::default())?;
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
            v4_tries.resume();
            let again = probe(ApiGeneration::V4, &mut v4_tries)?;
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
    pub(super) fn no_generation(&self, v4: u16, v3: u16) -> Error {
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

    /// Adds to errors on the sources route that a fixed `Tanium API Version` may be the cause.
    pub(super) fn fixed_generation_hint(&self, mut e: Error) -> Error {
        if !self.fixed_generation {
            return e;
        }
        let version = match self.generation {
            ApiGeneration::V4 => "4.x",
            ApiGeneration::V3 => "3.x",
        };
        match &mut e {
            Error::Status {
                status, message, ..
            } => {
                *message = if matches!(status, 400 | 404 | 405 | 501) {
                    format!(
                        "no Threat Response {version} API here, but Tanium API Version is \
                         {version}: set it to auto ({})",
                        message.chars().take(80).collect::<String>()
                    )
                } else {
                    format!(
                        "{message} (Tanium API Version is {version}; if that is wrong, set it to \
                         auto)"
                    )
                };
            }
            Error::Forbidden { answers, .. } => answers.push_str(&format!(
                "; Tanium API Version is {version}: if that is wrong, set it to auto"
            )),
            _ => {}
        }
        e
    }
}
