//! Job parameters as TC sends them -> one validated, typed [`JobConfig`].
//!
//! Every parameter is read once, up front, with the grammar in [`value`]; errors name the
//! parameter by its install.json label, and every problem is reported at once. The sides'
//! settings are the clients' own types ([`tc::Settings`], [`tanium::Settings`], [`Filters`],
//! [`intel::Format`]): this module builds them, they know nothing of it.

mod address;
mod connect;
mod label_params;
mod rails;
mod select;
pub mod timestamp;
pub(crate) mod value;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::intel;
use crate::param_names as pn;
use crate::params::RawParams;
use crate::tanium;
use crate::tc::{self, Filters};

pub use connect::{DEFAULT_PAGE_SIZE, DEFAULT_SOURCE, MAX_HTTP_TIMEOUT_SECS, MAX_PAGE_SIZE};
use value::{scalar, shown, spec_whole, text, Problems};

/// Default full reconcile interval, hours.
pub const DEFAULT_RECONCILE_HOURS: u32 = 24;
/// Largest accepted reconcile interval (a year), hours.
pub const MAX_RECONCILE_HOURS: u32 = 8760;
/// Default parallel Tanium writes.
pub const DEFAULT_WORKERS: u32 = 8;
/// Most parallel Tanium writes.
pub const MAX_WORKERS: u32 = 32;
/// Default run lease, seconds: a killed run blocks the job for at most half an hour, and the
/// holder renews every ten minutes, so a job server's clock may be minutes off.
pub const DEFAULT_RUN_LEASE_SECS: u32 = 1800;
/// Shortest run lease, seconds (tests expire one in a moment).
pub const MIN_RUN_LEASE_SECS: u32 = 2;
/// Longest run lease (a day), seconds.
pub const MAX_RUN_LEASE_SECS: u32 = 86_400;
/// Most indicators one grouped intel document holds. Tanium publishes no document size limit;
/// a grouped member renders to about 1 KB at most (a File with three hashes and its provenance
/// line), so 1000 keeps a document near 1 MB, the size of the whole intel database a recorded
/// Threat Response status reports, and keeps quick scans of one document possible.
pub const MAX_PER_DOCUMENT: u32 = 1000;

/// The platform's working folders.
#[derive(Debug, Clone, Serialize)]
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

/// Everything a run needs, validated. Serialised, it is the redacted config `--print-config`
/// shows (every [`crate::secret::Secret`] prints as `***`), so the print cannot drift from it.
#[derive(Debug, Clone, Serialize)]
pub struct JobConfig {
    /// ThreatConnect connection.
    pub tc: tc::Settings,
    /// Tanium connection.
    pub tanium: tanium::Settings,
    /// Indicator filters.
    #[serde(serialize_with = "with_fingerprint")]
    pub filters: Filters,
    /// Document format.
    pub intel_format: intel::Format,
    /// Indicators per intel document: 1 = one document per indicator, more = grouped.
    pub per_document: u32,
    /// Safety rails.
    pub rails: crate::safety::Rails,
    /// Adopt or replace documents in the source that this job did not make.
    pub take_over_source: bool,
    /// The job's own dry run: read both sides, write nothing (the `--dry-run` flag's twin).
    pub dry_run: bool,
    /// Report Tanium Detections: alerts on the job's documents become TC observations.
    pub report_detections: bool,
    pub labels: crate::label_rules::LabelRules,
    /// Disabled Intel Label: put on the documents Threat Response disabled (None: off).
    pub disabled_label: Option<String>,
    /// How often a full reconcile runs (0 = every run).
    #[serde(rename = "reconcile_interval_hours", serialize_with = "whole_hours")]
    pub reconcile_interval: Duration,
    /// Parallel Tanium writes.
    pub workers: usize,
    /// How long a run's lease on the source lasts unless renewed.
    #[serde(rename = "run_lease_secs", serialize_with = "whole_seconds")]
    pub run_lease: Duration,
    /// Log level from `tc_log_level`.
    #[serde(serialize_with = "lower_case")]
    pub log_level: log::LevelFilter,
    /// Working folders.
    pub paths: Paths,
    /// `tc_job_id`, for log lines.
    pub job_id: Option<String>,
    /// `api_user` as chosen in the job (informational).
    pub api_user: Option<String>,
}

/// The filters as the job set them, and the fingerprint the checkpoint compares.
fn with_fingerprint<S: Serializer>(f: &Filters, s: S) -> std::result::Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Shown<'a> {
        #[serde(flatten)]
        filters: &'a Filters,
        fingerprint: String,
    }
    Shown {
        filters: f,
        fingerprint: f.fingerprint(),
    }
    .serialize(s)
}

fn whole_seconds<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn whole_hours<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs() / 3600)
}

fn lower_case<S: Serializer>(l: &log::LevelFilter, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&l.to_string().to_ascii_lowercase())
}

/// The params, read in the order a run needs them (ripgrep's low-level args become high-level
/// ones in stages): [`Loader::new`] reads the platform's own params, the working folders and
/// the log level (so that even a failure is logged and reported in the right folder), the job
/// id and the ThreatConnect side, whose client resolves the `&{TC:...}` variables other params
/// may hold; [`Loader::finish`] reads everything else, from the params with their variables
/// resolved. The platform fills its own params in itself, never with variables.
///
/// Each param is read once, and the problems of both stages are reported together.
pub struct Loader {
    problems: Problems,
    notes: Vec<String>,
    paths: Paths,
    log_level: std::result::Result<log::LevelFilter, String>,
    job_id: std::result::Result<Option<String>, String>,
    tc: Option<tc::Settings>,
    shared: connect::Shared,
}

impl Loader {
    /// Reads the platform's params and the ThreatConnect side.
    pub fn new(raw: &RawParams) -> Loader {
        let mut problems = Problems::default();
        let mut notes = Vec::new();
        let paths = paths(raw);
        let log_level = log_level(raw);
        let job_id = scalar(raw, &[pn::TC_JOB_ID], pn::TC_JOB_ID, true);
        let (tc, shared) = connect::tc_side(raw, &mut problems, &mut notes);
        Loader {
            problems,
            notes,
            paths,
            log_level,
            job_id,
            tc,
            shared,
        }
    }

    /// The working folders (local defaults for any missing or unreadable one).
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The log level; info while `tc_log_level` is unreadable (`finish` reports it).
    pub fn log_level(&self) -> log::LevelFilter {
        self.log_level
            .as_ref()
            .copied()
            .unwrap_or(log::LevelFilter::Info)
    }

    /// `tc_job_id`, when readable.
    pub fn job_id(&self) -> Option<&str> {
        self.job_id.as_ref().ok().and_then(Option::as_deref)
    }

    /// The ThreatConnect side, or everything wrong with it.
    pub fn tc(&self) -> Result<&tc::Settings> {
        match &self.tc {
            Some(tc) if self.problems.is_empty() => Ok(tc),
            _ => Err(Error::Param(self.problems.joined())),
        }
    }

    /// Reads the rest and validates the whole; `raw` holds the params with their variables
    /// resolved. Also returns notes worth a log line once logging is up (which TC credentials
    /// were chosen, say).
    // One read per param, each problem collected so that one message names them all: its
    // length is the param list's.
    pub fn finish(self, raw: &RawParams) -> Result<(JobConfig, Vec<String>)> {
        let Loader {
            mut problems,
            notes,
            paths,
            log_level,
            job_id,
            tc,
            shared,
        } = self;
        let p = &mut problems;
        let tanium = connect::tanium_side(raw, p, shared);
        let filters = select::filters(raw, p);
        let intel_format = p.take(select::intel_format(raw));
        let per_document = p
            .take(spec_whole(
                raw,
                pn::INDICATORS_PER_DOCUMENT,
                1,
                MAX_PER_DOCUMENT,
            ))
            .unwrap_or(1);
        let rails = rails::rails(raw, p);
        let flag = |spec: pn::ParamSpec| value::boolean(raw, &[spec.name], spec.label, false);
        let take_over_source = p.take(flag(pn::TAKE_OVER_SOURCE));
        if let (true, Some(t)) = (take_over_source, &tanium) {
            if let Some(what) = crate::tanium::model::built_in_source(None, &t.source_name) {
                p.take::<()>(Err(format!(
                    "{} must be off for {} \"{}\": it is {what}, whose documents are not the job's to replace; give the job a source of its own",
                    pn::TAKE_OVER_SOURCE.label,
                    pn::TANIUM_SOURCE.label,
                    t.source_name
                )));
            }
        }
        let dry_run = p.take(flag(pn::DRY_RUN));
        let report_detections = p.take(flag(pn::REPORT_DETECTIONS));
        let labels = label_params::labels(raw, p);
        let disabled_label = label_params::disabled_label(raw, &labels, p);
        let reconcile_hours = p
            .take(spec_whole(
                raw,
                pn::RECONCILE_INTERVAL_HOURS,
                0,
                MAX_RECONCILE_HOURS,
            ))
            .unwrap_or(DEFAULT_RECONCILE_HOURS);
        let workers = p
            .take(spec_whole(raw, pn::TANIUM_WORKERS, 1, MAX_WORKERS))
            .unwrap_or(DEFAULT_WORKERS);
        let run_lease = p
            .take(spec_whole(
                raw,
                pn::RUN_LEASE_SECS,
                MIN_RUN_LEASE_SECS,
                MAX_RUN_LEASE_SECS,
            ))
            .unwrap_or(DEFAULT_RUN_LEASE_SECS);
        let log_level = p.take(log_level.map(Some));
        let job_id = p.take(job_id);
        let api_user = p.take(text(raw, pn::API_USER));
        if !p.is_empty() {
            return Err(Error::Param(p.joined()));
        }
        let (Some(tc), Some(tanium), Some(log_level)) = (tc, tanium, log_level) else {
            return Err(Error::Param("job parameters are incomplete".into()));
        };
        let config = JobConfig {
            tc,
            tanium,
            filters,
            intel_format,
            per_document,
            rails,
            take_over_source,
            dry_run,
            report_detections,
            labels,
            disabled_label,
            reconcile_interval: Duration::from_secs(u64::from(reconcile_hours) * 3600),
            workers: workers as usize,
            run_lease: Duration::from_secs(u64::from(run_lease)),
            log_level,
            paths,
            job_id,
            api_user,
        };
        Ok((config, notes))
    }
}

impl JobConfig {
    /// A short stable hash of everything that decides which indicators the job sends (the
    /// filters and the rails that select); a change forces a full reconcile.
    pub fn selection_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut canonical = serde_json::json!({
            "filters": self.filters.fingerprint(),
            "rails": self.rails.selection(),
        });
        // Only when grouped, so jobs that never group keep the fingerprint they had.
        if self.per_document > 1 {
            canonical["per_document"] = self.per_document.into();
        }
        // Documents leave out lastModified and the ThreatAssess score while detections are
        // reported (an observation may move them): switching brings every document to the new
        // content at once.
        if self.report_detections {
            canonical["detections"] = true.into();
        }
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Validates every param once, up front, into the typed config; errors name each bad
    /// param by its install.json label (all problems at once, joined by "; ").
    pub fn from_params(raw: &RawParams) -> Result<JobConfig> {
        Self::load(raw).map(|(config, _)| config)
    }

    /// Like [`JobConfig::from_params`], with the notes of [`Loader::finish`]: both stages at
    /// once, for params without variables.
    pub fn load(raw: &RawParams) -> Result<(JobConfig, Vec<String>)> {
        Loader::new(raw).finish(raw)
    }

    /// The typed config as JSON with every secret printed as `***`, for `--print-config`
    /// and the debug log line.
    pub fn redacted_json(&self) -> Value {
        // Plain structs with string keys always serialise; the message only marks a bug.
        serde_json::to_value(self)
            .unwrap_or_else(|e| Value::String(format!("the config cannot be shown: {e}")))
    }
}

fn log_level(raw: &RawParams) -> std::result::Result<log::LevelFilter, String> {
    let spec = pn::TC_LOG_LEVEL;
    match text(raw, spec)? {
        None => Ok(log::LevelFilter::Info),
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(log::LevelFilter::Trace),
            "debug" => Ok(log::LevelFilter::Debug),
            "info" => Ok(log::LevelFilter::Info),
            "warning" | "warn" => Ok(log::LevelFilter::Warn),
            "error" | "critical" => Ok(log::LevelFilter::Error),
            _ => Err(format!(
                "{} must be one of trace, debug, info, warning, error, critical, got '{}'",
                spec.label,
                shown(&s)
            )),
        },
    }
}

fn path_param(raw: &RawParams, name: &str) -> std::result::Result<Option<PathBuf>, String> {
    Ok(scalar(raw, &[name], name, true)?.map(PathBuf::from))
}

/// The working folders, with local defaults (`./log`, `./out`, `./tmp`) for any that is missing
/// or unreadable: they are where a failure is reported, so they cannot fail themselves.
fn paths(raw: &RawParams) -> Paths {
    let p = |name: &str, default: &str| {
        path_param(raw, name)
            .ok()
            .flatten()
            .unwrap_or_else(|| PathBuf::from(default))
    };
    Paths {
        log: p(pn::TC_LOG_PATH, "./log"),
        out: p(pn::TC_OUT_PATH, "./out"),
        temp: p(pn::TC_TEMP_PATH, "./tmp"),
        input: path_param(raw, pn::TC_IN_PATH).ok().flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;
    use time::macros::datetime;
    use time::OffsetDateTime;

    use crate::tc::model::IndicatorType;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

    pub(super) fn raw(v: serde_json::Value) -> RawParams {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    pub(super) fn good() -> RawParams {
        raw(json!({
            "tc_api_path": "https://tc.example.com/api/",
            "tc_api_access_id": "12345",
            "tc_api_secret_key": "tc-secret",
            "tanium_address": "tanium.example.com",
            "tanium_username": "svc",
            "tanium_password": " pw with spaces ",
            "tc_log_level": "warning",
        }))
    }

    pub(super) fn with(mut r: RawParams, k: &str, v: serde_json::Value) -> RawParams {
        r.insert(k.into(), v);
        r
    }

    pub(super) fn err(r: &RawParams) -> String {
        JobConfig::from_params(r).unwrap_err().to_string()
    }

    #[test]
    fn defaults_for_a_minimal_job() {
        let c = JobConfig::from_params(&good()).unwrap();
        assert_eq!(c.tc.api_path, "https://tc.example.com/api");
        assert!(
            matches!(&c.tc.auth, tc::Auth::Hmac { access_id, secret_key } if access_id == "12345" && secret_key.expose() == "tc-secret")
        );
        assert_eq!(c.tanium.base_url.to_string(), "https://tanium.example.com");
        assert_eq!(c.tanium.password.expose(), " pw with spaces ");
        assert_eq!(c.tanium.source_name, "ThreatConnect");
        assert!(c.tanium.http.verify_tls && c.tc.http.verify_tls);
        assert_eq!(c.filters.types, IndicatorType::ALL.to_vec());
        assert_eq!(c.intel_format, intel::Format::Stix);
        assert_eq!(c.reconcile_interval, Duration::from_secs(24 * 3600));
        assert_eq!((c.workers, c.tc.page_size), (8, 1_000));
        assert_eq!(c.log_level, log::LevelFilter::Warn);
        assert_eq!(c.paths.out, PathBuf::from("./out"));
        assert_eq!(c.paths.log, PathBuf::from("./log"));
        assert_eq!(c.paths.temp, PathBuf::from("./tmp"));
    }

    #[test]
    fn every_declared_param_is_read_and_nothing_else() {
        value::READ.with(|r| r.borrow_mut().clear());
        JobConfig::from_params(&good()).unwrap();
        // The proxy details are read only when a side asks for the proxy.
        let proxied = with(
            with(
                with(good(), "tc_proxy_tc", json!(true)),
                "tc_proxy_host",
                json!("p"),
            ),
            "tc_proxy_port",
            json!(1),
        );
        JobConfig::from_params(&proxied).unwrap();
        // The checkpoint's keys are read by the sync's checkpoint, through the same grammar.
        crate::sync::Checkpoint::load(&good(), NOW).unwrap();
        let read = value::READ.with(|r| r.borrow().clone());
        let mut expected: BTreeSet<String> =
            pn::JOB_PARAMS.iter().map(|p| p.name.to_string()).collect();
        expected.extend(pn::PLATFORM_PARAMS.iter().map(|p| p.to_string()));
        assert_eq!(read, expected);
    }

    #[test]
    fn messages_name_the_param_by_label() {
        let cases = [
            ("min_confidence", json!("abc"), "Minimum Confidence Rating must be a whole number from 0 to 100, got 'abc'"),
            ("min_confidence", json!("101"), "Minimum Confidence Rating must be a whole number from 0 to 100, got '101'"),
            ("min_threatassess_score", json!("1001"), "Minimum ThreatAssess Score must be a whole number from 0 to 1000"),
            ("min_rating", json!("2.5"), "Minimum Threat Rating must be a whole number from 0 to 5, got '2.5'"),
            ("max_false_positives", json!("-1"), "Maximum False Positive Count must be a whole number, 0 or more, got '-1'"),
            ("verify_ssl", json!("maybe"), "Verify SSL Cert must be true or false, got 'maybe'"),
            ("indicators_per_document", json!("1001"), "Indicators per Intel Document must be a whole number from 1 to 1000, got '1001'"),
            ("indicators_per_document", json!("0"), "Indicators per Intel Document must be a whole number from 1 to 1000, got '0'"),
            ("indicator_types", json!(["Address", "Email"]), "Indicator Types must be among Address, File, Host, got 'Email'"),
            ("tanium_address", json!("ftp://t"), "Tanium Address must be an https:// or http:// URL"),
            ("tanium_address", json!("t:99999"), "Tanium Address has an invalid port, got 't:99999'"),
            ("tanium_username", json!(""), "Tanium Username is required"),
            ("tanium_password", json!(null), "Tanium Password is required"),
            ("intel_format", json!("csv"), "Intel Format must be STIX or OpenIOC, got 'csv'"),
            ("tanium_api_version", json!("5.x"), "Tanium API Version must be auto, 4.x or 3.x, got '5.x'"),
            ("reconcile_interval_hours", json!("x"), "Full Reconcile Interval (hours) must be a whole number from 0 to 8760"),
            ("tanium_workers", json!("0"), "Parallel Tanium Writes must be a whole number from 1 to 32, got '0'"),
            ("tc_page_size", json!("10001"), "ThreatConnect Page Size must be a whole number from 1 to 10000"),
            ("tc_log_level", json!("loud"), "Logging Level must be one of trace, debug, info, warning, error, critical, got 'loud'"),
            ("tanium_source", json!(["a", "b"]), "Tanium Threat Response Source was given more than once"),
            ("tc_api_path", json!("tc.example.com"), "tc_api_path must be an http(s) URL"),
            ("tc_token_expires", json!("soon"), "tc_token_expires must be epoch seconds, got 'soon'"),
        ];
        for (k, v, want) in cases {
            let e = err(&with(good(), k, v.clone()));
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        // Every problem is reported at once.
        let e = err(&with(
            with(good(), "min_rating", json!("9")),
            "tanium_workers",
            json!("99"),
        ));
        assert!(
            e.contains("Minimum Threat Rating") && e.contains("Parallel Tanium Writes"),
            "{e}"
        );
        // Secrets never appear in messages.
        let e = err(&with(good(), "min_rating", json!("9")));
        assert!(
            !e.contains("tc-secret") && !e.contains("pw with spaces"),
            "{e}"
        );
    }

    #[test]
    fn extras_hidden_params_and_paths() {
        let r = raw(json!({
            "intel_format": "openioc",
            "reconcile_interval_hours": "0",
            "tanium_workers": "32",
            "tc_page_size": "500",
            "last_full_reconcile": "2026-11-27T00:00:00Z",
            "filter_fingerprint": "abc123",
            "tc_out_path": "/o", "tc_log_path": "/l", "tc_temp_path": "/t", "tc_in_path": "/i",
            "tc_job_id": 42,
            "api_user": "svc-api",
            "tc_log_level": "critical",
        }));
        let mut full = good();
        full.extend(r);
        let (c, notes) = JobConfig::load(&full).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(c.intel_format, intel::Format::OpenIoc);
        assert_eq!(c.reconcile_interval, Duration::ZERO);
        assert_eq!((c.workers, c.tc.page_size), (32, 500));
        assert_eq!(c.paths.input, Some(PathBuf::from("/i")));
        assert_eq!(c.paths.out, PathBuf::from("/o"));
        assert_eq!(c.job_id.as_deref(), Some("42"));
        assert_eq!(c.api_user.as_deref(), Some("svc-api"));
        assert_eq!(c.log_level, log::LevelFilter::Error);
    }

    #[test]
    fn redacted_json_hides_every_secret() {
        let r = with(
            with(
                with(
                    with(
                        with(good(), "tc_proxy_host", json!("p")),
                        "tc_proxy_port",
                        json!(8080),
                    ),
                    "tc_proxy_password",
                    json!("proxy-secret"),
                ),
                "tc_proxy_tc",
                json!(true),
            ),
            "tc_proxy_external",
            json!(true),
        );
        let c = JobConfig::from_params(&r).unwrap();
        let text = c.redacted_json().to_string();
        for s in ["tc-secret", "pw with spaces", "proxy-secret"] {
            assert!(!text.contains(s), "{s} leaked: {text}");
        }
        let j = c.redacted_json();
        assert_eq!(j["tc"]["auth"]["secret_key"], "***");
        assert_eq!(j["tanium"]["password"], "***");
        assert_eq!(j["tanium"]["http"]["proxy"]["password"], "***");
        assert_eq!(j["tanium"]["base_url"], "https://tanium.example.com");
        let t = with(good(), "tc_token", json!("tok-secret"));
        let mut t = t;
        t.remove("tc_api_secret_key");
        let j = JobConfig::from_params(&t).unwrap().redacted_json();
        assert_eq!(j["tc"]["auth"]["token"], "***");
        assert!(!j.to_string().contains("tok-secret"));
    }
}
