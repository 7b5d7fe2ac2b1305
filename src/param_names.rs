// The one list of parameter names and labels the code reads.
//
// `build.rs` includes this file and fails the build when install.json declares a param that is
// not listed in `JOB_PARAMS` (or the other way round), or when a label differs, so the messages
// the code prints always use the labels users see in the job wizard. Outer doc comments only:
// this file is `include!`d by build.rs.

/// A job parameter: its install.json `name` and the `label` error messages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// The install.json `name`, the key in the param file and the legacy `--name`.
    pub name: &'static str,
    /// The install.json `label`, as the job wizard shows it.
    pub label: &'static str,
}

/// Api User (informational: the platform chooses the user behind the token).
pub const API_USER: ParamSpec = ParamSpec {
    name: "api_user",
    label: "Api User",
};
pub const TANIUM_ADDRESS: ParamSpec = ParamSpec {
    name: "tanium_address",
    label: "Tanium Address",
};
pub const TANIUM_USERNAME: ParamSpec = ParamSpec {
    name: "tanium_username",
    label: "Tanium Username",
};
/// Tanium Password (or API token).
pub const TANIUM_PASSWORD: ParamSpec = ParamSpec {
    name: "tanium_password",
    label: "Tanium Password",
};
/// Tanium API Version: `auto` (detect), `4.x` or `3.x`.
pub const TANIUM_API_VERSION: ParamSpec = ParamSpec {
    name: "tanium_api_version",
    label: "Tanium API Version",
};
/// Verify SSL Cert (Tanium side).
pub const VERIFY_SSL: ParamSpec = ParamSpec {
    name: "verify_ssl",
    label: "Verify SSL Cert",
};
/// PEM certificates of CAs both sides also trust.
pub const CA_CERTIFICATE: ParamSpec = ParamSpec {
    name: "ca_certificate",
    label: "CA Certificate",
};
/// Tanium Threat Response Source.
pub const TANIUM_SOURCE: ParamSpec = ParamSpec {
    name: "tanium_source",
    label: "Tanium Threat Response Source",
};
/// ThreatConnect Owners.
pub const OWNERS: ParamSpec = ParamSpec {
    name: "owners",
    label: "ThreatConnect Owners",
};
pub const INDICATOR_TYPES: ParamSpec = ParamSpec {
    name: "indicator_types",
    label: "Indicator Types",
};
pub const LAST_MODIFIED: ParamSpec = ParamSpec {
    name: "last_modified",
    label: "Last Modified",
};
pub const TQL: ParamSpec = ParamSpec {
    name: "tql",
    label: "TQL",
};
pub const INCLUDE_TAGS: ParamSpec = ParamSpec {
    name: "include_tags",
    label: "Include Tags",
};
pub const EXCLUDE_TAGS: ParamSpec = ParamSpec {
    name: "exclude_tags",
    label: "Exclude Tags",
};
/// Minimum ThreatAssess Score.
pub const MIN_THREATASSESS_SCORE: ParamSpec = ParamSpec {
    name: "min_threatassess_score",
    label: "Minimum ThreatAssess Score",
};
/// Minimum Confidence Rating.
pub const MIN_CONFIDENCE: ParamSpec = ParamSpec {
    name: "min_confidence",
    label: "Minimum Confidence Rating",
};
/// Minimum Threat Rating.
pub const MIN_RATING: ParamSpec = ParamSpec {
    name: "min_rating",
    label: "Minimum Threat Rating",
};
/// Maximum False Positive Count.
pub const MAX_FALSE_POSITIVES: ParamSpec = ParamSpec {
    name: "max_false_positives",
    label: "Maximum False Positive Count",
};
pub const INTEL_FORMAT: ParamSpec = ParamSpec {
    name: "intel_format",
    label: "Intel Format",
};
/// Indicators per Intel Document: 1 = one document per indicator, more = grouped documents.
pub const INDICATORS_PER_DOCUMENT: ParamSpec = ParamSpec {
    name: "indicators_per_document",
    label: "Indicators per Intel Document",
};
/// Full Reconcile Interval (hours).
pub const RECONCILE_INTERVAL_HOURS: ParamSpec = ParamSpec {
    name: "reconcile_interval_hours",
    label: "Full Reconcile Interval (hours)",
};
/// Parallel Tanium Writes.
pub const TANIUM_WORKERS: ParamSpec = ParamSpec {
    name: "tanium_workers",
    label: "Parallel Tanium Writes",
};
/// ThreatConnect Page Size.
pub const TC_PAGE_SIZE: ParamSpec = ParamSpec {
    name: "tc_page_size",
    label: "ThreatConnect Page Size",
};
/// Logging Level.
pub const TC_LOG_LEVEL: ParamSpec = ParamSpec {
    name: "tc_log_level",
    label: "Logging Level",
};
/// Hidden: when the last full reconcile finished (written to results.tc).
pub const LAST_FULL_RECONCILE: ParamSpec = ParamSpec {
    name: "last_full_reconcile",
    label: "Last Full Reconcile",
};
/// Hidden: fingerprint of the filters of the last successful run (written to results.tc).
pub const FILTER_FINGERPRINT: ParamSpec = ParamSpec {
    name: "filter_fingerprint",
    label: "Filter Fingerprint",
};

/// Hidden, advanced: seconds to wait for an answer before a call is retried (both sides).
pub const HTTP_TIMEOUT_SECS: ParamSpec = ParamSpec {
    name: "http_timeout_secs",
    label: "HTTP Timeout (seconds)",
};

/// Hidden: "true" when the last run's intel deploy failed or was owed, so the next run deploys
/// again; "refused N" after N runs in a row whose deploy Tanium refused with 400.
pub const DEPLOY_PENDING: ParamSpec = ParamSpec {
    name: "deploy_pending",
    label: "Deploy Pending",
};

/// Hidden: the earliest Last Modified the job was given; no pull reaches further back.
pub const JOB_HORIZON: ParamSpec = ParamSpec {
    name: "job_horizon",
    label: "Job Horizon",
};

pub const SAFEGUARDS: ParamSpec = ParamSpec {
    name: "safeguards",
    label: "Block Unsafe Indicators",
};
pub const NEVER_SEND: ParamSpec = ParamSpec {
    name: "never_send",
    label: "Never Send",
};
pub const MAX_REMOVAL_PERCENT: ParamSpec = ParamSpec {
    name: "max_removal_percent",
    label: "Maximum Removal Percent",
};
pub const MAX_INDICATORS: ParamSpec = ParamSpec {
    name: "max_indicators",
    label: "Maximum Indicators",
};
pub const MAX_INDICATOR_AGE_DAYS: ParamSpec = ParamSpec {
    name: "max_indicator_age_days",
    label: "Maximum Indicator Age (days)",
};
pub const DEPLOY_INTEL: ParamSpec = ParamSpec {
    name: "deploy_intel",
    label: "Deploy Intel",
};
/// Never send what ThreatConnect's Indicator Exclusion Lists exclude.
pub const HONOR_EXCLUSION_LISTS: ParamSpec = ParamSpec {
    name: "honor_exclusion_lists",
    label: "Honor Exclusion Lists",
};
/// Never send an indicator past its `externalDateExpires`.
pub const HONOR_EXPIRY: ParamSpec = ParamSpec {
    name: "honor_expiry",
    label: "Honor Expiry",
};
/// Hidden: a hash of what the exclusion lists excluded at the last run ("unread" when they
/// could not be read); a change makes the next run a full reconcile.
pub const EXCLUSION_FINGERPRINT: ParamSpec = ParamSpec {
    name: "exclusion_fingerprint",
    label: "Exclusion Fingerprint",
};
/// Report each Threat Response alert on the job's documents to ThreatConnect as an observation.
pub const REPORT_DETECTIONS: ParamSpec = ParamSpec {
    name: "report_detections",
    label: "Report Tanium Detections",
};
/// Hidden: where the alerts read so far end (see `sync::checkpoint::AlertMark`).
pub const ALERT_CHECKPOINT: ParamSpec = ParamSpec {
    name: "alert_checkpoint",
    label: "Alert Checkpoint",
};

pub const TANIUM_LABELS: ParamSpec = ParamSpec {
    name: "tanium_labels",
    label: "Tanium Labels",
};
pub const TAGS_AS_LABELS: ParamSpec = ParamSpec {
    name: "tags_as_labels",
    label: "Tags as Labels",
};
pub const THREATASSESS_LABELS: ParamSpec = ParamSpec {
    name: "threatassess_labels",
    label: "ThreatAssess Labels",
};
/// A label for the job's documents Threat Response disabled as noisy (empty: none).
pub const DISABLED_INTEL_LABEL: ParamSpec = ParamSpec {
    name: "disabled_intel_label",
    label: "Disabled Intel Label",
};
/// Hidden: the label rules of earlier runs whose labels may still be on documents.
pub const MANAGED_LABELS: ParamSpec = ParamSpec {
    name: "managed_labels",
    label: "Managed Labels",
};
/// Hidden: the label rules every document's labels were last brought to.
pub const LABEL_FINGERPRINT: ParamSpec = ParamSpec {
    name: "label_fingerprint",
    label: "Label Fingerprint",
};
/// Hidden, advanced: how long a run's lease on the source lasts unless renewed, seconds.
pub const RUN_LEASE_SECS: ParamSpec = ParamSpec {
    name: "run_lease_secs",
    label: "Run Lease (seconds)",
};
/// Hidden: "true" when Tanium could not delete a run lease source.
pub const RUN_LEASE_UNSUPPORTED: ParamSpec = ParamSpec {
    name: "run_lease_unsupported",
    label: "Run Lease Unsupported",
};
/// Hidden: the task id of the last intel deploy the job started, until it is seen completed.
pub const DEPLOY_TASK: ParamSpec = ParamSpec {
    name: "deploy_task",
    label: "Deploy Task",
};
pub const TAKE_OVER_SOURCE: ParamSpec = ParamSpec {
    name: "take_over_source",
    label: "Take Over Source",
};
pub const DRY_RUN: ParamSpec = ParamSpec {
    name: "dry_run",
    label: "Dry Run",
};

/// Every param install.json declares, in install.json order; build.rs checks both ways.
pub const JOB_PARAMS: &[ParamSpec] = &[
    API_USER,
    TANIUM_ADDRESS,
    TANIUM_USERNAME,
    TANIUM_PASSWORD,
    VERIFY_SSL,
    CA_CERTIFICATE,
    TANIUM_SOURCE,
    TAKE_OVER_SOURCE,
    TANIUM_API_VERSION,
    OWNERS,
    INDICATOR_TYPES,
    LAST_MODIFIED,
    TQL,
    INCLUDE_TAGS,
    EXCLUDE_TAGS,
    MIN_THREATASSESS_SCORE,
    MIN_CONFIDENCE,
    MIN_RATING,
    MAX_FALSE_POSITIVES,
    SAFEGUARDS,
    NEVER_SEND,
    MAX_REMOVAL_PERCENT,
    MAX_INDICATORS,
    MAX_INDICATOR_AGE_DAYS,
    HONOR_EXCLUSION_LISTS,
    HONOR_EXPIRY,
    DEPLOY_INTEL,
    REPORT_DETECTIONS,
    TANIUM_LABELS,
    TAGS_AS_LABELS,
    THREATASSESS_LABELS,
    DISABLED_INTEL_LABEL,
    DRY_RUN,
    INTEL_FORMAT,
    INDICATORS_PER_DOCUMENT,
    RECONCILE_INTERVAL_HOURS,
    TANIUM_WORKERS,
    TC_PAGE_SIZE,
    TC_LOG_LEVEL,
    LAST_FULL_RECONCILE,
    FILTER_FINGERPRINT,
    HTTP_TIMEOUT_SECS,
    DEPLOY_PENDING,
    JOB_HORIZON,
    MANAGED_LABELS,
    LABEL_FINGERPRINT,
    RUN_LEASE_SECS,
    RUN_LEASE_UNSUPPORTED,
    DEPLOY_TASK,
    EXCLUSION_FINGERPRINT,
    ALERT_CHECKPOINT,
];

/// Hidden params: kept between runs through results.tc, never shown in the job wizard.
pub const HIDDEN_PARAMS: &[&str] = &[
    "last_full_reconcile",
    "filter_fingerprint",
    "http_timeout_secs",
    "deploy_pending",
    "job_horizon",
    "managed_labels",
    "label_fingerprint",
    "run_lease_secs",
    "run_lease_unsupported",
    "deploy_task",
    "exclusion_fingerprint",
    "alert_checkpoint",
];

/// `tc_api_path`: the TC API base URL.
pub const TC_API_PATH: &str = "tc_api_path";
/// `tc_token`: the job's API token.
pub const TC_TOKEN: &str = "tc_token";
/// `tc_token_expires`: epoch seconds.
pub const TC_TOKEN_EXPIRES: &str = "tc_token_expires";
/// HMAC access id (current name).
pub const TC_API_ACCESS_ID: &str = "tc_api_access_id";
/// HMAC secret key (current name).
pub const TC_API_SECRET_KEY: &str = "tc_api_secret_key";
/// HMAC access id (legacy name).
pub const API_ACCESS_ID: &str = "api_access_id";
/// HMAC secret key (legacy name).
pub const API_SECRET_KEY: &str = "api_secret_key";
/// `tc_verify`: check the TC server's certificate.
pub const TC_VERIFY: &str = "tc_verify";
/// `tc_log_path`: app.log folder.
pub const TC_LOG_PATH: &str = "tc_log_path";
/// `tc_out_path`: results.tc / message.tc folder.
pub const TC_OUT_PATH: &str = "tc_out_path";
/// `tc_temp_path`: scratch folder.
pub const TC_TEMP_PATH: &str = "tc_temp_path";
/// `tc_in_path`: input folder.
pub const TC_IN_PATH: &str = "tc_in_path";
/// `tc_job_id`: the job's id, for log lines.
pub const TC_JOB_ID: &str = "tc_job_id";
pub const TC_PROXY_HOST: &str = "tc_proxy_host";
pub const TC_PROXY_PORT: &str = "tc_proxy_port";
/// Proxy user.
pub const TC_PROXY_USERNAME: &str = "tc_proxy_username";
pub const TC_PROXY_PASSWORD: &str = "tc_proxy_password";
/// Use the proxy for TC calls.
pub const TC_PROXY_TC: &str = "tc_proxy_tc";
/// Use the proxy for external (Tanium) calls.
pub const TC_PROXY_EXTERNAL: &str = "tc_proxy_external";
/// Legacy alias of `tc_proxy_tc`.
pub const APPLY_PROXY_TC: &str = "apply_proxy_tc";
/// Legacy alias of `tc_proxy_external`.
pub const APPLY_PROXY_EXT: &str = "apply_proxy_ext";
/// Legacy alias of `tc_proxy_external`.
pub const APPLY_PROXY_EXTERNAL: &str = "apply_proxy_external";

/// Runtime params the platform adds on its own; install.json must not declare them.
pub const PLATFORM_PARAMS: &[&str] = &[
    TC_API_PATH,
    TC_TOKEN,
    TC_TOKEN_EXPIRES,
    TC_API_ACCESS_ID,
    TC_API_SECRET_KEY,
    API_ACCESS_ID,
    API_SECRET_KEY,
    TC_VERIFY,
    TC_LOG_PATH,
    TC_OUT_PATH,
    TC_TEMP_PATH,
    TC_IN_PATH,
    TC_JOB_ID,
    TC_PROXY_HOST,
    TC_PROXY_PORT,
    TC_PROXY_USERNAME,
    TC_PROXY_PASSWORD,
    TC_PROXY_TC,
    TC_PROXY_EXTERNAL,
    APPLY_PROXY_TC,
    APPLY_PROXY_EXT,
    APPLY_PROXY_EXTERNAL,
];

/// Params whose values are credentials: never printed, never logged.
pub const SECRET_PARAMS: &[&str] = &[
    "tanium_password",
    TC_TOKEN,
    TC_API_SECRET_KEY,
    API_SECRET_KEY,
    TC_PROXY_PASSWORD,
];
