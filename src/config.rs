//! Job parameters as TC sends them -> one validated, typed `JobConfig`.
//!
//! Every parameter is checked once, up front; errors name the parameter by its install.json label.

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use crate::http::HttpSettings;
use crate::secret::Secret;
use crate::tc::model::IndicatorType;

/// How the app authenticates to the TC API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcAuth {
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

/// Where and how to reach ThreatConnect.
#[derive(Debug, Clone)]
pub struct TcSettings {
    /// `tc_api_path`, e.g. `https://host/api` (no trailing slash).
    pub api_path: String,
    /// Credentials.
    pub auth: TcAuth,
    /// Timeouts, TLS (`tc_verify`) and proxy (`tc_proxy_tc`).
    pub http: HttpSettings,
    /// `resultLimit` per page (1..=10000).
    pub page_size: u32,
}

/// Where and how to reach Tanium.
#[derive(Debug, Clone)]
pub struct TaniumSettings {
    /// Normalised base URL: scheme + host [+ port], no trailing slash (bare host means https).
    pub base_url: String,
    /// `tanium_username` (`_token` means the password is an API token).
    pub username: String,
    /// `tanium_password`: a password or an API token.
    pub password: Secret,
    /// Timeouts, TLS (`verify_ssl`) and proxy (`tc_proxy_external`).
    pub http: HttpSettings,
    /// `tanium_source`: the intel source this app owns.
    pub source_name: String,
}

/// The job's indicator filters (ignored, except types, when `tql` is set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Owner names; empty means every owner the API user can read.
    pub owners: Vec<String>,
    /// Types to send; never empty (defaults to all three).
    pub types: Vec<IndicatorType>,
    /// Send only indicators with at least one of these tags (empty: no restriction).
    pub include_tags: Vec<String>,
    /// Never send indicators with any of these tags.
    pub exclude_tags: Vec<String>,
    /// Minimum ThreatAssess score, 0..=1000.
    pub min_threatassess_score: Option<u32>,
    /// Minimum confidence, 0..=100.
    pub min_confidence: Option<u32>,
    /// Minimum threat rating, 0..=5.
    pub min_rating: Option<u32>,
    /// Maximum false positive count.
    pub max_false_positives: Option<u32>,
    /// User TQL that replaces all of the above except the type restriction.
    pub tql: Option<String>,
}

/// The intel document format sent to Tanium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntelFormat {
    /// STIX 1.2 with CybOX 2.1 observables (default).
    #[default]
    Stix,
    /// OpenIOC 1.1.
    OpenIoc,
}

/// The platform's working folders.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `tc_log_path`: app.log goes here.
    pub log: PathBuf,
    /// `tc_out_path`: results.tc and message.tc go here.
    pub out: PathBuf,
    /// `tc_temp_path`.
    pub temp: PathBuf,
    /// `tc_in_path`, when given.
    pub input: Option<PathBuf>,
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// ThreatConnect connection.
    pub tc: TcSettings,
    /// Tanium connection.
    pub tanium: TaniumSettings,
    /// Indicator filters.
    pub filters: Filters,
    /// Only indicators modified after this instant are pulled incrementally.
    pub last_modified: OffsetDateTime,
    /// Document format.
    pub intel_format: IntelFormat,
    /// How often a full reconcile runs (0 = every run).
    pub reconcile_interval: Duration,
    /// When the last full reconcile finished (hidden param kept through results.tc).
    pub last_reconcile: Option<OffsetDateTime>,
    /// Fingerprint of the filters at the last successful run (hidden param); a change forces a full reconcile.
    pub last_filter_hash: Option<String>,
    /// Parallel Tanium writes.
    pub workers: usize,
    /// Log level from `tc_log_level`.
    pub log_level: log::LevelFilter,
    /// Working folders.
    pub paths: Paths,
    /// `tc_job_id`, for log lines.
    pub job_id: Option<String>,
    /// `api_user` as chosen in the job (informational).
    pub api_user: Option<String>,
}
