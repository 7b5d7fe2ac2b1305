//! Where and how to reach ThreatConnect, as the job's params say (`config` reads them).

use serde::Serialize;

use crate::http::HttpSettings;
use crate::secret::Secret;

/// How the app authenticates to the TC API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Auth {
    /// Access id + secret key (wins when both kinds are present).
    Hmac {
        /// API access id.
        access_id: String,
        /// API secret key.
        secret_key: Secret,
    },
    /// The platform's job token, renewed through `/appAuth`.
    Token {
        /// `tc_token`.
        token: Secret,
        /// `tc_token_expires`, epoch seconds, when known.
        expires: Option<i64>,
    },
}

/// The ThreatConnect side of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `tc_api_path`, e.g. `https://host/api` (no trailing slash).
    pub api_path: String,
    /// Credentials.
    pub auth: Auth,
    /// Timeouts, TLS (`tc_verify`) and proxy (`tc_proxy_tc`).
    pub http: HttpSettings,
    /// `resultLimit` per page (1..=10000).
    pub page_size: u32,
}
