//! Reading ThreatConnect's answers: the v3 envelope, and a final error status mapped to the
//! error the run reports (TC's own message, or what came back instead).

use serde::Deserialize;

use crate::error::{Error, Result, Service};
use crate::http::Response;

pub(super) const SVC: Service = Service::ThreatConnect;

#[derive(Deserialize)]
pub(super) struct Envelope<T> {
    #[serde(default)]
    status: Option<String>,
    #[serde(default = "Vec::new")]
    pub(super) data: Vec<T>,
    #[serde(default)]
    pub(super) next: Option<String>,
    #[serde(default)]
    pub(super) count: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, rename = "errCode")]
    err_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// TC's own message from an error body, or a trimmed excerpt of whatever came back (of an
/// HTML page, its title only).
pub(super) fn tc_message(resp: &Response) -> (Option<String>, String) {
    match serde_json::from_slice::<ErrorBody>(&resp.body) {
        Ok(b) if b.message.is_some() || b.err_code.is_some() => {
            (b.err_code, b.message.unwrap_or_default())
        }
        _ if resp.is_html() => (
            None,
            match resp.html_title() {
                Some(t) => format!("an HTML page (\"{t}\")"),
                None => "an HTML page".into(),
            },
        ),
        _ => (None, resp.body_excerpt(300)),
    }
}

/// Maps a final non-2xx answer to the error the run reports.
pub(super) fn status_error(resp: &Response, request: &str) -> Error {
    if let Some(e) = resp.not_the_api(SVC, request) {
        return e;
    }
    let (code, msg) = tc_message(resp);
    match resp.status {
        400 if code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("0x2001")) =>
        {
            Error::TqlInvalid(msg)
        }
        401 => Error::Auth {
            service: SVC,
            message: format!(
                "the job's Api User was refused (401 to {request}): check the Api User is \
                 active and its secret key unchanged, the job server's clock (5-minute \
                 tolerance) and that no proxy rewrites URLs ({msg})"
            ),
        },
        403 => Error::Forbidden {
            service: SVC,
            needed: "the Api User cannot read an owner the query names; make it a member of each \
                     owner in ThreatConnect Owners (or those your TQL names)"
                .into(),
            answers: format!("403 to {request}: {msg}"),
        },
        status => Error::Status {
            service: SVC,
            host: resp.host.clone(),
            request: request.to_string(),
            status,
            message: msg,
        },
    }
}

pub(super) fn parse_envelope<T: serde::de::DeserializeOwned>(
    resp: &Response,
    request: &str,
) -> Result<Envelope<T>> {
    parse_envelope_borrowed(resp, request)
}

/// [`parse_envelope`] for records that may borrow from the body (raw JSON text).
pub(super) fn parse_envelope_borrowed<'a, T: serde::Deserialize<'a>>(
    resp: &'a Response,
    request: &str,
) -> Result<Envelope<T>> {
    let protocol = |detail: String| Error::Protocol {
        service: SVC,
        request: request.to_string(),
        detail,
    };
    if let Some(e) = resp.not_the_api(SVC, request) {
        return Err(e);
    }
    let env: Envelope<T> = serde_json::from_slice(&resp.body)
        .map_err(|e| protocol(format!("body is not the v3 JSON envelope: {e}")))?;
    if env.status.as_deref() != Some("Success") {
        return Err(protocol(format!(
            "status is {:?}, not \"Success\"",
            env.status.as_deref().unwrap_or("missing")
        )));
    }
    Ok(env)
}
