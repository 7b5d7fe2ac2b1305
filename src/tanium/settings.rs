//! Where and how to reach Tanium, as the job's params say (`config` reads them).

use serde::{Serialize, Serializer};

use crate::http::{HttpSettings, Origin};
use crate::secret::Secret;
use crate::tanium::model::ApiGeneration;

/// The Tanium side of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Scheme + host [+ port] (a bare host in the param means https).
    pub base_url: Origin,
    /// `tanium_username` (`_token` means the password is an API token).
    pub username: String,
    /// `tanium_password`: a password or an API token.
    pub password: Secret,
    /// Timeouts, TLS (`verify_ssl`) and proxy (`tc_proxy_external`).
    pub http: HttpSettings,
    /// `tanium_source`: the intel source this app owns.
    pub source_name: String,
    /// `tanium_api_version`: the Threat Response API generation, or None (`auto`) to detect it.
    #[serde(serialize_with = "api_version_param")]
    pub api_version: Option<ApiGeneration>,
}

/// The value as the param spells it.
fn api_version_param<S: Serializer>(v: &Option<ApiGeneration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match v {
        None => "auto",
        Some(ApiGeneration::V4) => "4.x",
        Some(ApiGeneration::V3) => "3.x",
    })
}
