//! The one error type of the app: every variant says which request, parameter or record failed.

use std::fmt;
use std::path::PathBuf;

use crate::http::failure::{reason_phrase, NoAnswer};
pub use crate::service::Service;

/// Everything that can stop a run or a single item; `main` maps it to an exit code.
#[derive(Debug)]
pub enum Error {
    /// A job parameter is missing or malformed; the message names the parameter by its label.
    Param(String),
    /// The encrypted param file, its key, or the local params file is unusable.
    ParamFile(String),
    /// A request got no answer (after retries, unless the failure is final): the host has no
    /// DNS record, refused, timed out or dropped the connection, or TLS failed (a refused
    /// certificate among them).
    Transport(NoAnswer),
    /// The server answered with an error status (after retries, or one that is never retried).
    Status {
        /// The side that was called.
        service: Service,
        /// `host[:port]` that answered.
        host: String,
        /// Method and path, never the query.
        request: String,
        /// HTTP status code.
        status: u16,
        /// The server's own message, trimmed, or a hint at the cause.
        message: String,
    },
    /// The server refused the credentials; the message hints at causes but never echoes them.
    Auth {
        /// The side that refused.
        service: Service,
        /// Causes to check.
        message: String,
    },
    /// The server accepts the credentials but refused a call (403): a missing permission.
    /// The permission leads the message: the platform shows only 255 characters of it.
    Forbidden {
        /// The side that refused.
        service: Service,
        /// Which permission is needed, for what.
        needed: String,
        /// What answered 403 (method and path, or the routes that were tried).
        answers: String,
    },
    /// An HTML page answered where the API should have (a login page, a proxy's page): the
    /// address leads somewhere else. Only the page's title is kept, never its text.
    NotTheApi {
        /// The side that was called.
        service: Service,
        /// `host[:port]` that answered.
        host: String,
        /// Method and path.
        request: String,
        /// HTTP status of the page.
        status: u16,
        /// The page's `<title>`, shortened, when it has one.
        title: Option<String>,
    },
    /// The answer to the Tanium login is not one Tanium gives (an HTTP authentication
    /// challenge, no Threat Response route, a 2xx without a session): the address may lead
    /// to another server. Says what gave it away, never the body.
    NotTanium {
        /// `host[:port]` that answered.
        host: String,
        /// Method and path.
        request: String,
        /// HTTP status of the answer.
        status: u16,
        /// What gave it away: the content type and the sign.
        why: String,
    },
    /// ThreatConnect could not parse the TQL (errCode 0x2001); carries TC's reason.
    TqlInvalid(String),
    /// The server answered 2xx with a body we could not understand.
    Protocol {
        /// The side that was called.
        service: Service,
        /// Method and path.
        request: String,
        /// What was wrong with the body.
        detail: String,
    },
    /// A delete the server answered, whose effect reading the document back does not confirm:
    /// it is still there, or the answers are ambiguous. Leads with the verdict.
    DeleteUnconfirmed {
        /// The side that was asked.
        service: Service,
        /// The verdict, then the answers that led to it.
        detail: String,
    },
    /// A source create that got no clear answer and that a look did not find: a slow server
    /// may still make it, so it is not sent again.
    CreateUnconfirmed {
        /// The source's name.
        name: String,
        /// What the create got instead of an answer.
        answer: String,
    },
    /// Neither Threat Response API generation answered as a working API.
    NoThreatResponse {
        /// What each generation's route answered.
        answers: String,
    },
    /// A write or read refused before it was sent: the document is not one the app listed in
    /// its own source, and only those are ever touched.
    NotOwned {
        /// What was refused (`read`, `update`, `delete`).
        action: &'static str,
        /// Tanium's document id.
        doc_id: i64,
    },
    /// Putting a label on a document answered 500 and the label is not among Tanium's labels
    /// any more (deleted while the job ran): what Threat Response answers for an unknown label.
    LabelGone {
        /// The label's id.
        label_id: i64,
    },
    /// A local file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A failure outside the job's own work that no caller handles differently, worth a
    /// sentence: the tooling around the job (demo, packaging, logging setup), or an invariant a
    /// bug broke (a lock poisoned by a panicked worker).
    ///
    /// Never for the job's work itself (a request, a parameter, a record, a document): such a
    /// failure gets a variant that names what failed, so callers and tests match on the
    /// variant, not on the text.
    Other(String),
}

impl fmt::Display for Error {
    // One arm per case: every message's words in one place, next to each other.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Param(m) => f.write_str(m),
            Error::ParamFile(m) => write!(f, "job parameters unusable: {m}"),
            Error::Transport(e) => e.fmt(f),
            Error::Status {
                service,
                host,
                request,
                status,
                message,
            } => write!(
                f,
                "{service} at {host} answered {status}{} to {request}: {message}",
                reason_phrase(*status)
            ),
            Error::NotTheApi {
                service,
                host,
                request,
                status,
                title,
            } => {
                write!(
                    f,
                    "{host} is not the {service} API: {request} answered {status} with an HTML \
                     page (a login or proxy page); check {} and the proxy",
                    service.address_param()
                )?;
                match title {
                    Some(t) => write!(f, " (page title \"{t}\")"),
                    None => Ok(()),
                }
            }
            Error::NotTanium {
                host,
                request,
                status,
                why,
            } => write!(
                f,
                "{host} may not be a Tanium server: check Tanium Address, then Tanium Username \
                 and Tanium Password; {request} answered {status}{} ({why})",
                reason_phrase(*status)
            ),
            Error::Auth { service, message } => {
                write!(f, "{service} rejected the credentials: {message}")
            }
            Error::Forbidden {
                service,
                needed,
                answers,
            } => write!(f, "{service} permission missing: {needed} ({answers})"),
            Error::TqlInvalid(reason) => {
                write!(f, "ThreatConnect says the TQL is invalid: {reason}")
            }
            Error::Protocol {
                service,
                request,
                detail,
            } => write!(
                f,
                "{service} sent an unexpected answer to {request}: {detail}"
            ),
            Error::DeleteUnconfirmed { service, detail } => write!(f, "{service} {detail}"),
            Error::CreateUnconfirmed { name, answer } => write!(
                f,
                "the creation of Tanium source {name:?} got no clear answer ({answer}) and the source is not there yet; a slow Tanium may still make it, so this run does not ask again: the next run looks for it first"
            ),
            Error::NoThreatResponse { answers } => write!(
                f,
                "no Tanium Threat Response API found ({answers}): is Threat Response installed \
                 and running?"
            ),
            Error::NotOwned { action, doc_id } => write!(
                f,
                "refusing to {action} Tanium intel {doc_id}: it was not listed in the app's own \
                 source"
            ),
            Error::LabelGone { label_id } => write!(
                f,
                "Tanium label {label_id} no longer exists (deleted while the job ran?); the next \
                 run finds or makes the label again"
            ),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// Builds an I/O error that names the file, since a bare OS error does not.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Short alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
