//! Job parameters as TC sends them -> one validated, typed `JobConfig`.
//!
//! Every parameter is checked once, up front; errors name the parameter by its install.json label.

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use serde::{Serialize, Serializer};

use crate::http::HttpSettings;
use crate::intel;
use crate::secret::Secret;
use crate::tanium::{self, ApiGeneration};
use crate::tc::{self, model::IndicatorType, Filters};

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
/// shows (every [`Secret`] prints as `***`), so the print cannot drift from the config.
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
    /// How often a full reconcile runs (0 = every run).
    #[serde(rename = "reconcile_interval_hours", serialize_with = "whole_hours")]
    pub reconcile_interval: Duration,
    /// Parallel Tanium writes.
    pub workers: usize,
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

fn whole_hours<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs() / 3600)
}

fn lower_case<S: Serializer>(l: &log::LevelFilter, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&l.to_string().to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------
// Raw params -> JobConfig
// ---------------------------------------------------------------------------------------------

use serde_json::Value;

use crate::error::{Error, Result};
use crate::http::{Origin, OriginError, ProxySettings};
use crate::param_names::{self as pn, ParamSpec};
use crate::params::RawParams;

/// Default Tanium Threat Response source name.
pub const DEFAULT_SOURCE: &str = "ThreatConnect";
/// Default full reconcile interval, hours.
pub const DEFAULT_RECONCILE_HOURS: u32 = 24;
/// Largest accepted reconcile interval (a year), hours.
pub const MAX_RECONCILE_HOURS: u32 = 8760;
/// Default parallel Tanium writes.
pub const DEFAULT_WORKERS: u32 = 8;
/// Most parallel Tanium writes.
pub const MAX_WORKERS: u32 = 32;
/// Default and largest TC page size.
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// Default TC page size: the top of what production clients use (100 to 1,000; TC's docs warn
/// that large TQL queries time out), ten requests per 10,000 indicators. A page TC still cannot
/// serve in time is asked for again at half the size (see `tc::client::Pages`).
pub const DEFAULT_PAGE_SIZE: u32 = 1_000;
/// Largest accepted HTTP timeout (an hour), seconds.
pub const MAX_HTTP_TIMEOUT_SECS: u32 = 3600;

/// Both sides' connection settings with the `http_timeout_secs` hidden param applied: the
/// read timeout is the param, the connect timeout the smaller of it and the default.
fn http_settings(timeout_secs: Option<u32>, verify_tls: bool) -> HttpSettings {
    let defaults = HttpSettings::default();
    let read = timeout_secs
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(defaults.read_timeout);
    HttpSettings {
        verify_tls,
        connect_timeout: defaults.connect_timeout.min(read),
        read_timeout: read,
        ..defaults
    }
}

/// Collects every problem so one run reports all bad params at once.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn take<T: Default>(&mut self, r: std::result::Result<T, String>) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            T::default()
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn joined(&self) -> String {
        self.0.join("; ")
    }
}

/// Shows a user value in a message, shortened so message.tc stays readable.
pub(crate) fn shown(v: &str) -> String {
    let v = v.trim();
    if v.chars().count() > 60 {
        format!("{}...", v.chars().take(57).collect::<String>())
    } else {
        v.to_string()
    }
}

/// The first of `names` present with a non-null value.
fn lookup<'a>(raw: &'a RawParams, names: &[&'a str]) -> Option<(&'a str, &'a Value)> {
    #[cfg(test)]
    tests::READ.with(|r| r.borrow_mut().extend(names.iter().map(|n| n.to_string())));
    names
        .iter()
        .find_map(|n| raw.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
}

/// One value as text; `trim` is off for credentials. Empty means absent.
fn scalar(
    raw: &RawParams,
    names: &[&str],
    label: &str,
    trim: bool,
) -> std::result::Result<Option<String>, String> {
    let Some((_, v)) = lookup(raw, names) else {
        return Ok(None);
    };
    scalar_value(v, label, trim)
}

fn scalar_value(v: &Value, label: &str, trim: bool) -> std::result::Result<Option<String>, String> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let items: Vec<&Value> = items.iter().filter(|i| !i.is_null()).collect();
            return match items.as_slice() {
                [] => Ok(None),
                [one] => scalar_value(one, label, trim),
                _ => Err(format!("{label} was given more than once")),
            };
        }
        Value::Object(_) => return Err(format!("{label} must be text, not a JSON object")),
    };
    let s = if trim { s.trim().to_string() } else { s };
    Ok((!s.trim().is_empty()).then_some(s))
}

pub(crate) fn text(
    raw: &RawParams,
    spec: ParamSpec,
) -> std::result::Result<Option<String>, String> {
    scalar(raw, &[spec.name], spec.label, true)
}

/// A list param: JSON list, `|`-delimited (and comma-delimited when `commas`), trimmed,
/// empties dropped, duplicates dropped keeping the first.
fn list(
    raw: &RawParams,
    spec: ParamSpec,
    commas: bool,
) -> std::result::Result<Vec<String>, String> {
    let Some((_, v)) = lookup(raw, &[spec.name]) else {
        return Ok(Vec::new());
    };
    let mut pieces: Vec<String> = Vec::new();
    let push_str = |s: &str, pieces: &mut Vec<String>| {
        // A JSON list inside a string (e.g. from argv) is accepted too.
        if s.trim_start().starts_with('[') {
            if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(s) {
                for i in items {
                    if let Some(t) = i.as_str() {
                        pieces.push(t.to_string());
                    } else if !i.is_null() {
                        pieces.push(i.to_string());
                    }
                }
                return;
            }
        }
        for part in s.split('|') {
            if commas {
                pieces.extend(part.split(',').map(str::to_string));
            } else {
                pieces.push(part.to_string());
            }
        }
    };
    match v {
        Value::Array(items) => {
            for i in items {
                match i {
                    Value::Null => {}
                    Value::String(s) => push_str(s, &mut pieces),
                    Value::Object(_) | Value::Array(_) => {
                        return Err(format!("{} must be a list of names", spec.label))
                    }
                    other => pieces.push(other.to_string()),
                }
            }
        }
        Value::String(s) => push_str(s, &mut pieces),
        Value::Object(_) => return Err(format!("{} must be a list of names", spec.label)),
        other => pieces.push(other.to_string()),
    }
    let mut out: Vec<String> = Vec::new();
    for p in pieces {
        let p = p.trim();
        if !p.is_empty() && !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    Ok(out)
}

/// A Boolean: true/false (JSON or text, any case), 1/0, yes/no; a bare legacy flag is true.
pub(crate) fn boolean(
    raw: &RawParams,
    names: &[&str],
    label: &str,
    default: bool,
) -> std::result::Result<bool, String> {
    match scalar(raw, names, label, true)? {
        None => Ok(default),
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!(
                "{label} must be true or false, got '{}'",
                shown(&s)
            )),
        },
    }
}

/// A whole number in `lo..=hi` (`hi == u32::MAX` means no upper bound).
fn whole(
    raw: &RawParams,
    names: &[&str],
    label: &str,
    lo: u32,
    hi: u32,
) -> std::result::Result<Option<u32>, String> {
    let Some(s) = scalar(raw, names, label, true)? else {
        return Ok(None);
    };
    let range = if hi == u32::MAX {
        format!("a whole number, {lo} or more")
    } else {
        format!("a whole number from {lo} to {hi}")
    };
    match s.parse::<u32>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(format!("{label} must be {range}, got '{}'", shown(&s))),
    }
}

fn spec_whole(
    raw: &RawParams,
    spec: ParamSpec,
    lo: u32,
    hi: u32,
) -> std::result::Result<Option<u32>, String> {
    whole(raw, &[spec.name], spec.label, lo, hi)
}

/// Normalises Tanium Address to `scheme://host[:port]`: a bare host means https, http only
/// when written explicitly, any path is dropped.
pub fn normalize_tanium_address(input: &str) -> std::result::Result<Origin, String> {
    let label = pn::TANIUM_ADDRESS.label;
    let why = match Origin::of_address(input) {
        Ok(origin) => return Ok(origin),
        Err(OriginError::Empty) => return Err(format!("{label} is required")),
        Err(OriginError::Scheme) => "must be an https:// or http:// URL or a host name",
        Err(OriginError::Credentials) => "must not contain credentials",
        Err(OriginError::Host) => "must be a URL or host name",
        Err(OriginError::Ipv6) => "has an invalid IPv6 address",
        Err(OriginError::Port) => "has an invalid port",
    };
    Err(format!("{label} {why}, got '{}'", shown(input)))
}

/// `tc_api_path`: an http(s) URL, kept with its path, without a trailing slash.
fn api_path(raw: &RawParams) -> std::result::Result<String, String> {
    let name = pn::TC_API_PATH;
    let s = scalar(raw, &[name], name, true)?
        .ok_or_else(|| format!("{name} (the ThreatConnect API URL) is missing"))?;
    match Origin::of_url(&s) {
        Ok(_) => Ok(s.trim_end_matches('/').to_string()),
        Err(_) => Err(format!(
            "{name} must be an http(s) URL such as https://host/api, got '{}'",
            shown(&s)
        )),
    }
}

fn tc_auth(raw: &RawParams, notes: &mut Vec<String>) -> std::result::Result<tc::Auth, String> {
    let id = scalar(
        raw,
        &[pn::TC_API_ACCESS_ID, pn::API_ACCESS_ID],
        pn::TC_API_ACCESS_ID,
        true,
    )?;
    let key = scalar(
        raw,
        &[pn::TC_API_SECRET_KEY, pn::API_SECRET_KEY],
        pn::TC_API_SECRET_KEY,
        false,
    )?;
    let token = scalar(raw, &[pn::TC_TOKEN], pn::TC_TOKEN, true)?;
    let expires = match scalar(raw, &[pn::TC_TOKEN_EXPIRES], pn::TC_TOKEN_EXPIRES, true)? {
        None => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            format!(
                "{} must be epoch seconds, got '{}'",
                pn::TC_TOKEN_EXPIRES,
                shown(&s)
            )
        })?),
    };
    match (id, key, token) {
        (Some(access_id), Some(secret_key), token) => {
            if token.is_some() {
                notes.push("both HMAC credentials and tc_token are present; using HMAC".into());
            }
            Ok(tc::Auth::Hmac {
                access_id,
                secret_key: Secret::new(secret_key),
            })
        }
        (id, key, Some(token)) => {
            if id.is_some() || key.is_some() {
                notes.push("only half of the HMAC credentials is present; using tc_token".into());
            }
            Ok(tc::Auth::Token {
                token: Secret::new(token),
                expires,
            })
        }
        (Some(_), None, None) => Err(format!(
            "ThreatConnect credentials are incomplete: {} is set but {} is missing",
            pn::TC_API_ACCESS_ID,
            pn::TC_API_SECRET_KEY
        )),
        (None, Some(_), None) => Err(format!(
            "ThreatConnect credentials are incomplete: {} is set but {} is missing",
            pn::TC_API_SECRET_KEY,
            pn::TC_API_ACCESS_ID
        )),
        (None, None, None) => Err(format!(
            "ThreatConnect credentials are missing: the job needs {} and {}, or {}",
            pn::TC_API_ACCESS_ID,
            pn::TC_API_SECRET_KEY,
            pn::TC_TOKEN
        )),
    }
}

/// The platform proxy and which sides use it: (proxy, for TC calls, for Tanium calls).
fn proxy(raw: &RawParams) -> std::result::Result<(Option<ProxySettings>, bool, bool), String> {
    let for_tc = boolean(
        raw,
        &[pn::TC_PROXY_TC, pn::APPLY_PROXY_TC],
        pn::TC_PROXY_TC,
        false,
    )?;
    let for_ext = boolean(
        raw,
        &[
            pn::TC_PROXY_EXTERNAL,
            pn::APPLY_PROXY_EXT,
            pn::APPLY_PROXY_EXTERNAL,
        ],
        pn::TC_PROXY_EXTERNAL,
        false,
    )?;
    if !for_tc && !for_ext {
        return Ok((None, false, false));
    }
    let which = if for_tc {
        pn::TC_PROXY_TC
    } else {
        pn::TC_PROXY_EXTERNAL
    };
    let host = scalar(raw, &[pn::TC_PROXY_HOST], pn::TC_PROXY_HOST, true)?
        .ok_or_else(|| format!("{which} is set but {} is missing", pn::TC_PROXY_HOST))?;
    let host = host
        .strip_prefix("http://")
        .or_else(|| host.strip_prefix("https://"))
        .unwrap_or(&host)
        .trim_end_matches('/')
        .to_string();
    let port = whole(raw, &[pn::TC_PROXY_PORT], pn::TC_PROXY_PORT, 1, 65_535)?
        .ok_or_else(|| format!("{which} is set but {} is missing", pn::TC_PROXY_PORT))?;
    let username = scalar(raw, &[pn::TC_PROXY_USERNAME], pn::TC_PROXY_USERNAME, true)?;
    let password =
        scalar(raw, &[pn::TC_PROXY_PASSWORD], pn::TC_PROXY_PASSWORD, false)?.map(Secret::new);
    Ok((
        Some(ProxySettings {
            host,
            port: port as u16,
            username,
            password,
        }),
        for_tc,
        for_ext,
    ))
}

/// Reads only the ThreatConnect side (URL, credentials, TLS, proxy, page size), so TC
/// variables in other params can be resolved before the full validation.
pub fn tc_settings(raw: &RawParams) -> Result<tc::Settings> {
    let mut problems = Problems::default();
    let mut notes = Vec::new();
    let tc = read_tc(raw, &mut problems, &mut notes);
    match tc {
        Some(tc) if problems.0.is_empty() => Ok(tc),
        _ => Err(Error::Param(problems.0.join("; "))),
    }
}

fn read_tc(
    raw: &RawParams,
    problems: &mut Problems,
    notes: &mut Vec<String>,
) -> Option<tc::Settings> {
    let api_path = problems.take(api_path(raw).map(Some));
    let auth = problems.take(tc_auth(raw, notes).map(Some));
    let verify_tls = problems.take(boolean(raw, &[pn::TC_VERIFY], pn::TC_VERIFY, true).map(Some));
    let (proxy, for_tc, _) = problems.take(proxy(raw));
    let page_size = problems
        .take(spec_whole(raw, pn::TC_PAGE_SIZE, 1, MAX_PAGE_SIZE))
        .unwrap_or(DEFAULT_PAGE_SIZE);
    let timeout = problems.take(spec_whole(
        raw,
        pn::HTTP_TIMEOUT_SECS,
        1,
        MAX_HTTP_TIMEOUT_SECS,
    ));
    Some(tc::Settings {
        api_path: api_path?,
        auth: auth?,
        http: HttpSettings {
            proxy: if for_tc { proxy } else { None },
            ..http_settings(timeout, verify_tls?)
        },
        page_size,
    })
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

/// The working folders from raw params, with local defaults (`./log`, `./out`, `./tmp`); also
/// used before validation, to know where to report a failure.
pub fn paths_from_raw(raw: &RawParams) -> Paths {
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

fn indicator_types(raw: &RawParams) -> std::result::Result<Vec<IndicatorType>, String> {
    let spec = pn::INDICATOR_TYPES;
    let names = list(raw, spec, true)?;
    let mut chosen = Vec::new();
    for n in &names {
        match IndicatorType::parse(n) {
            Some(t) => chosen.push(t),
            None => {
                return Err(format!(
                    "{} must be among Address, File, Host, got '{}'",
                    spec.label,
                    shown(n)
                ))
            }
        }
    }
    if chosen.is_empty() {
        return Ok(IndicatorType::ALL.to_vec());
    }
    Ok(IndicatorType::ALL
        .into_iter()
        .filter(|t| chosen.contains(t))
        .collect())
}

/// `auto` (None), `4.x` or `3.x`; `4`, `v4`, `TR 4.x` and the like are read the same way.
fn api_version(raw: &RawParams) -> std::result::Result<Option<ApiGeneration>, String> {
    let spec = pn::TANIUM_API_VERSION;
    let Some(s) = text(raw, spec)? else {
        return Ok(None);
    };
    let k: String = s
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    match k.trim_start_matches("tr").trim_start_matches('v') {
        "auto" => Ok(None),
        "4" | "4x" => Ok(Some(ApiGeneration::V4)),
        "3" | "3x" => Ok(Some(ApiGeneration::V3)),
        _ => Err(format!(
            "{} must be auto, 4.x or 3.x, got '{}'",
            spec.label,
            shown(&s)
        )),
    }
}

fn intel_format(raw: &RawParams) -> std::result::Result<intel::Format, String> {
    let spec = pn::INTEL_FORMAT;
    match text(raw, spec)? {
        None => Ok(intel::Format::Stix),
        Some(s) => {
            let k: String = s
                .to_ascii_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            match k.as_str() {
                "stix" | "stix12" => Ok(intel::Format::Stix),
                "openioc" | "openioc11" | "ioc" => Ok(intel::Format::OpenIoc),
                _ => Err(format!(
                    "{} must be STIX or OpenIOC, got '{}'",
                    spec.label,
                    shown(&s)
                )),
            }
        }
    }
}

/// Parses what users type into Last Modified.
///
/// Accepts `N minutes|hours|days|weeks ago` (singular or plural, `ago` optional), `now`, an
/// ISO-8601 date or datetime with or without zone (UTC when none), `YYYY-MM-DD HH:MM:SS`, and
/// epoch seconds (or milliseconds). More than a day in the future is refused (a typo would
/// otherwise silently select nothing). The error reads after the label: "must be ..., got '..'".
pub fn parse_last_modified(
    s: &str,
    now: OffsetDateTime,
) -> std::result::Result<OffsetDateTime, String> {
    let input = s.trim();
    let fail = || {
        format!(
            "must be a time such as '30 days ago', 'now', '2024-01-31', '2024-01-31T08:00:00Z' or epoch seconds, got '{}'",
            shown(input)
        )
    };
    let t = parse_time(input, now).ok_or_else(fail)?;
    // Relative times and `now` carry the clock's nanoseconds; whole seconds read better.
    let t = t.replace_nanosecond(0).unwrap_or(t);
    if t > now + time::Duration::days(1) {
        return Err(format!("is in the future, got '{}'", shown(input)));
    }
    Ok(t)
}

/// `now`, a relative time, epoch seconds (or milliseconds) or an ISO date / datetime.
pub(crate) fn parse_time(input: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let lower = input.to_ascii_lowercase();
    if lower == "now" {
        return Some(now);
    }
    if let Some(t) = parse_relative(&lower, now) {
        return Some(t);
    }
    if !input.is_empty() && input.chars().all(|c| c.is_ascii_digit()) {
        let n: i64 = input.parse().ok()?;
        // 13+ digits: milliseconds.
        let secs = if n >= 100_000_000_000 { n / 1000 } else { n };
        return OffsetDateTime::from_unix_timestamp(secs).ok();
    }
    parse_iso(input)
}

fn parse_relative(lower: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let words: Vec<&str> = lower.split_whitespace().collect();
    let (n, unit) = match words.as_slice() {
        [n, unit] | [n, unit, "ago"] => (*n, *unit),
        _ => return None,
    };
    let n: i64 = n.parse().ok()?;
    if !(0..=100_000).contains(&n) {
        return None;
    }
    let d = match unit.strip_suffix('s').unwrap_or(unit) {
        "second" | "sec" => time::Duration::seconds(n),
        "minute" | "min" => time::Duration::minutes(n),
        "hour" | "hr" => time::Duration::hours(n),
        "day" => time::Duration::days(n),
        "week" => time::Duration::weeks(n),
        _ => return None,
    };
    now.checked_sub(d)
}

fn parse_iso(input: &str) -> Option<OffsetDateTime> {
    use time::macros::format_description;
    let mut s = input.trim().to_string();
    if s.len() == 10 {
        let d = time::Date::parse(&s, format_description!("[year]-[month]-[day]")).ok()?;
        return Some(d.midnight().assume_utc());
    }
    // Normalise: date/time separator, zone spellings.
    if s.len() > 10 && (s.as_bytes()[10] == b' ' || s.as_bytes()[10] == b't') {
        s.replace_range(10..11, "T");
    }
    for suffix in [" UTC", " utc", " GMT", " Z", "Z", "z"] {
        if let Some(stripped) = s.strip_suffix(suffix) {
            s = format!("{stripped}+00:00");
            break;
        }
    }
    let (dt, offset) = split_offset(&s)?;
    let pdt = time::PrimitiveDateTime::parse(
        dt,
        format_description!(
            "[year]-[month]-[day]T[hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
        ),
    )
    .ok()?;
    match offset {
        None => Some(pdt.assume_utc()),
        Some(off) => Some(pdt.assume_offset(off)),
    }
}

/// Splits a trailing `+HH:MM`, `+HHMM` or `+HH` zone (or its `-` twin) off a datetime.
fn split_offset(s: &str) -> Option<(&str, Option<time::UtcOffset>)> {
    let time_part_start = 11.min(s.len());
    // Byte 11 may fall inside a multi-byte character of a typo: that is no datetime (found by
    // tests/fuzz.rs; slicing there used to panic).
    let tail = s.get(time_part_start..)?;
    let Some(rel) = tail.rfind(['+', '-']) else {
        return Some((s, None));
    };
    let at = time_part_start + rel;
    let (dt, zone) = s.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let h: i8 = digits[..2].parse().ok()?;
    let m: i8 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    if h > 18 || m > 59 {
        return None;
    }
    let off = time::UtcOffset::from_hms(sign * h, sign * m, 0).ok()?;
    Some((dt, Some(off)))
}

impl JobConfig {
    /// Validates every param once, up front, into the typed config; errors name each bad
    /// param by its install.json label (all problems at once, joined by "; ").
    pub fn from_params(raw: &RawParams) -> Result<JobConfig> {
        Self::load(raw).map(|(config, _)| config)
    }

    /// Like [`JobConfig::from_params`], and also returns notes worth a log line once logging
    /// is up (e.g. which TC credentials were chosen, an unreadable hidden param).
    pub fn load(raw: &RawParams) -> Result<(JobConfig, Vec<String>)> {
        let mut p = Problems::default();
        let mut notes = Vec::new();
        let tc = read_tc(raw, &mut p, &mut notes);
        let (proxy, _, for_ext) = proxy(raw).unwrap_or((None, false, false));

        let base_url = p.take(text(raw, pn::TANIUM_ADDRESS).and_then(|a| match a {
            None => Err(format!("{} is required", pn::TANIUM_ADDRESS.label)),
            Some(a) => normalize_tanium_address(&a).map(Some),
        }));
        let username =
            p.take(text(raw, pn::TANIUM_USERNAME).and_then(|u| {
                u.ok_or_else(|| format!("{} is required", pn::TANIUM_USERNAME.label))
            }));
        let password = p.take(
            scalar(
                raw,
                &[pn::TANIUM_PASSWORD.name],
                pn::TANIUM_PASSWORD.label,
                false,
            )
            .and_then(|pw| pw.ok_or_else(|| format!("{} is required", pn::TANIUM_PASSWORD.label))),
        );
        let verify_ssl =
            p.take(boolean(raw, &[pn::VERIFY_SSL.name], pn::VERIFY_SSL.label, true).map(Some));
        let source_name = p
            .take(text(raw, pn::TANIUM_SOURCE))
            .unwrap_or_else(|| DEFAULT_SOURCE.to_string());
        let api_version = p.take(api_version(raw));

        let filters = Filters {
            owners: p.take(list(raw, pn::OWNERS, false)),
            types: p.take(indicator_types(raw)),
            include_tags: p.take(list(raw, pn::INCLUDE_TAGS, true)),
            exclude_tags: p.take(list(raw, pn::EXCLUDE_TAGS, true)),
            min_threatassess_score: p.take(spec_whole(raw, pn::MIN_THREATASSESS_SCORE, 0, 1000)),
            min_confidence: p.take(spec_whole(raw, pn::MIN_CONFIDENCE, 0, 100)),
            min_rating: p.take(spec_whole(raw, pn::MIN_RATING, 0, 5)),
            max_false_positives: p.take(spec_whole(raw, pn::MAX_FALSE_POSITIVES, 0, u32::MAX)),
            tql: p.take(text(raw, pn::TQL)),
        };

        let intel_format = p.take(intel_format(raw));
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
        let log_level = p.take(log_level(raw).map(Some));

        let job_id = p.take(scalar(raw, &[pn::TC_JOB_ID], pn::TC_JOB_ID, true));
        let api_user = p.take(text(raw, pn::API_USER));
        let paths = paths_from_raw(raw);

        if !p.0.is_empty() {
            return Err(Error::Param(p.0.join("; ")));
        }
        let (Some(tc), Some(base_url), Some(verify_ssl), Some(log_level)) =
            (tc, base_url, verify_ssl, log_level)
        else {
            return Err(Error::Param("job parameters are incomplete".into()));
        };
        let config = JobConfig {
            tc,
            tanium: tanium::Settings {
                base_url,
                username,
                password: Secret::new(password),
                http: HttpSettings {
                    proxy: if for_ext { proxy } else { None },
                    // read_tc reported a bad value already
                    ..http_settings(
                        spec_whole(raw, pn::HTTP_TIMEOUT_SECS, 1, MAX_HTTP_TIMEOUT_SECS)
                            .ok()
                            .flatten(),
                        verify_ssl,
                    )
                },
                source_name,
                api_version,
            },
            filters,
            intel_format,
            reconcile_interval: Duration::from_secs(u64::from(reconcile_hours) * 3600),
            workers: workers as usize,
            log_level,
            paths,
            job_id,
            api_user,
        };
        Ok((config, notes))
    }

    /// The typed config as JSON with every secret printed as `***`, for `--print-config`
    /// and the debug log line.
    pub fn redacted_json(&self) -> Value {
        // Plain structs with string keys always serialise; the message only marks a bug.
        serde_json::to_value(self)
            .unwrap_or_else(|e| Value::String(format!("the config cannot be shown: {e}")))
    }
}

/// `tc_log_level` read leniently (info when missing or unreadable), so logging can start
/// before validation and record a validation failure too.
pub fn log_level_from_raw(raw: &RawParams) -> log::LevelFilter {
    log_level(raw).unwrap_or(log::LevelFilter::Info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use time::macros::datetime;

    thread_local! {
        /// Every param name the validation looked up (filled by `lookup`).
        pub(super) static READ: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
    }

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

    fn raw(v: serde_json::Value) -> RawParams {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    fn good() -> RawParams {
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

    fn with(mut r: RawParams, k: &str, v: serde_json::Value) -> RawParams {
        r.insert(k.into(), v);
        r
    }

    fn err(r: &RawParams) -> String {
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
        READ.with(|r| r.borrow_mut().clear());
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
        let read = READ.with(|r| r.borrow().clone());
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
    fn credentials_hmac_wins_legacy_names_and_missing() {
        let mut r = good();
        r.insert("tc_token".into(), json!("TOKEN:1"));
        assert!(matches!(
            JobConfig::from_params(&r).unwrap().tc.auth,
            tc::Auth::Hmac { .. }
        ));
        r.remove("tc_api_access_id");
        r.insert("tc_token_expires".into(), json!(1_800_000_000));
        match JobConfig::from_params(&r).unwrap().tc.auth {
            tc::Auth::Token { token, expires } => {
                assert_eq!(token.expose(), "TOKEN:1");
                assert_eq!(expires, Some(1_800_000_000));
            }
            other => panic!("{other:?}"),
        }
        let mut legacy = good();
        legacy.remove("tc_api_access_id");
        legacy.remove("tc_api_secret_key");
        legacy.insert("api_access_id".into(), json!("old-id"));
        legacy.insert("api_secret_key".into(), json!("old-key"));
        assert!(
            matches!(JobConfig::from_params(&legacy).unwrap().tc.auth, tc::Auth::Hmac { access_id, .. } if access_id == "old-id")
        );
        let mut none = good();
        none.remove("tc_api_access_id");
        none.remove("tc_api_secret_key");
        assert!(err(&none).contains("ThreatConnect credentials are missing"));
        let half = with(none, "tc_api_access_id", json!("id"));
        assert!(err(&half).contains("tc_api_secret_key is missing"));
    }

    #[test]
    fn tanium_address_forms() {
        for (input, want) in [
            ("tanium.example.com", "https://tanium.example.com"),
            ("Tanium.Example.com:8443", "https://tanium.example.com:8443"),
            ("https://t.example.com/", "https://t.example.com"),
            (
                "https://t.example.com:443/ui/console?x=1",
                "https://t.example.com:443",
            ),
            ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
            ("HTTP://host", "http://host"),
            ("[::1]:8443", "https://[::1]:8443"),
            (" https://[FE80::1] ", "https://[fe80::1]"),
        ] {
            assert_eq!(
                normalize_tanium_address(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        for bad in [
            "",
            "ftp://x",
            "https://",
            "user:pw@host",
            "host:0",
            "host:abc",
            "ho st",
            "[::1",
            "https://-x",
        ] {
            assert!(normalize_tanium_address(bad).is_err(), "{bad}");
        }
        let e = normalize_tanium_address("user:pw@host").unwrap_err();
        assert!(e.contains("credentials"), "{e}");
    }

    #[test]
    fn last_modified_forms() {
        let ok = |s: &str| parse_last_modified(s, NOW).unwrap();
        assert_eq!(ok("30 days ago"), datetime!(2026-10-29 12:00:00 UTC));
        assert_eq!(ok("1 day ago"), datetime!(2026-11-27 12:00:00 UTC));
        assert_eq!(ok("90 Minutes Ago"), datetime!(2026-11-28 10:30:00 UTC));
        assert_eq!(ok("1 hour ago"), datetime!(2026-11-28 11:00:00 UTC));
        assert_eq!(ok("2 weeks ago"), datetime!(2026-11-14 12:00:00 UTC));
        assert_eq!(ok("12 hours"), datetime!(2026-11-28 00:00:00 UTC));
        assert_eq!(ok("now"), NOW);
        assert_eq!(ok("2024-01-31"), datetime!(2024-01-31 00:00:00 UTC));
        assert_eq!(
            ok("2024-01-31T08:00:00Z"),
            datetime!(2024-01-31 08:00:00 UTC)
        );
        assert_eq!(
            ok("2024-01-31T08:00:00"),
            datetime!(2024-01-31 08:00:00 UTC)
        );
        assert_eq!(ok("2024-01-31T08:00"), datetime!(2024-01-31 08:00:00 UTC));
        assert_eq!(
            ok("2024-01-31 08:00:00"),
            datetime!(2024-01-31 08:00:00 UTC)
        );
        assert_eq!(
            ok("2024-01-31 08:00:00 UTC"),
            datetime!(2024-01-31 08:00:00 UTC)
        );
        assert_eq!(
            ok("2024-01-31T10:00:00+02:00"),
            datetime!(2024-01-31 08:00:00 UTC)
        );
        assert_eq!(
            ok("2024-01-31T03:00:00-0500"),
            datetime!(2024-01-31 08:00:00 UTC)
        );
        assert_eq!(
            ok("2024-01-31T08:00:00.250Z"),
            datetime!(2024-01-31 08:00:00 UTC)
        );
        assert_eq!(ok("1706688000"), datetime!(2024-01-31 08:00:00 UTC));
        assert_eq!(ok("1706688000000"), datetime!(2024-01-31 08:00:00 UTC));
        for bad in [
            "yesterday",
            "30 fortnights ago",
            "-3 days ago",
            "2024-13-01",
            "2024-01-31T25:00:00",
            "2024-01-31T08:00:00+25:00",
            "",
            "2099-01-01",
        ] {
            let e = parse_last_modified(bad, NOW).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }

    #[test]
    fn lists_tags_booleans_and_numbers() {
        let r = with(
            with(
                with(
                    with(
                        with(
                            with(good(), "owners", json!("Org A|Org, B| |Org A")),
                            "include_tags",
                            json!(["x, y", "z|x", " "]),
                        ),
                        "exclude_tags",
                        json!("bad,worse"),
                    ),
                    "indicator_types",
                    json!("host|ADDRESS"),
                ),
                "verify_ssl",
                json!(false),
            ),
            "min_confidence",
            json!(50),
        );
        let c = JobConfig::from_params(&r).unwrap();
        assert_eq!(c.filters.owners, vec!["Org A", "Org, B"]);
        assert_eq!(c.filters.include_tags, vec!["x", "y", "z"]);
        assert_eq!(c.filters.exclude_tags, vec!["bad", "worse"]);
        assert_eq!(
            c.filters.types,
            vec![IndicatorType::Address, IndicatorType::Host]
        );
        assert!(!c.tanium.http.verify_tls);
        assert_eq!(c.filters.min_confidence, Some(50));
        let r = with(
            with(good(), "owners", json!("[\"A|1\", \"B\"]")),
            "verify_ssl",
            json!(true),
        );
        let c = JobConfig::from_params(&r).unwrap();
        assert_eq!(c.filters.owners, vec!["A|1", "B"]);
        assert!(c.tanium.http.verify_tls);
        for (v, want) in [
            (json!("TRUE"), true),
            (json!("false"), false),
            (json!(["true"]), true),
        ] {
            let c = JobConfig::from_params(&with(good(), "tc_verify", v)).unwrap();
            assert_eq!(c.tc.http.verify_tls, want);
        }
    }

    #[test]
    fn proxy_goes_to_the_side_that_asked_for_it() {
        let base = with(
            with(
                with(
                    with(good(), "tc_proxy_host", json!("proxy.local")),
                    "tc_proxy_port",
                    json!("3128"),
                ),
                "tc_proxy_username",
                json!("pu"),
            ),
            "tc_proxy_password",
            json!("proxy-secret"),
        );
        let c = JobConfig::from_params(&base).unwrap();
        assert!(c.tc.http.proxy.is_none() && c.tanium.http.proxy.is_none());
        let c = JobConfig::from_params(&with(base.clone(), "tc_proxy_tc", json!(true))).unwrap();
        let p = c.tc.http.proxy.unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.username.as_deref()),
            ("proxy.local", 3128, Some("pu"))
        );
        assert_eq!(p.password.unwrap().expose(), "proxy-secret");
        assert!(c.tanium.http.proxy.is_none());
        let c =
            JobConfig::from_params(&with(base.clone(), "apply_proxy_ext", json!("true"))).unwrap();
        assert!(c.tc.http.proxy.is_none() && c.tanium.http.proxy.is_some());
        let no_port = with(
            with(good(), "tc_proxy_external", json!(true)),
            "tc_proxy_host",
            json!("p"),
        );
        assert!(err(&no_port).contains("tc_proxy_port is missing"));
        let bad_port = with(
            with(base, "tc_proxy_tc", json!(true)),
            "tc_proxy_port",
            json!("70000"),
        );
        assert!(err(&bad_port).contains("tc_proxy_port must be a whole number from 1 to 65535"));
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

    #[test]
    fn tanium_api_version_is_auto_unless_set() {
        let version = |v: Option<serde_json::Value>| {
            let r = match v {
                Some(v) => with(good(), "tanium_api_version", v),
                None => good(),
            };
            let c = JobConfig::from_params(&r).unwrap();
            (
                c.tanium.api_version,
                c.redacted_json()["tanium"]["api_version"].clone(),
            )
        };
        assert_eq!(version(None), (None, json!("auto")));
        assert_eq!(version(Some(json!(""))), (None, json!("auto")));
        assert_eq!(version(Some(json!("auto"))), (None, json!("auto")));
        assert_eq!(
            version(Some(json!("4.x"))),
            (Some(ApiGeneration::V4), json!("4.x"))
        );
        assert_eq!(
            version(Some(json!("3.x"))),
            (Some(ApiGeneration::V3), json!("3.x"))
        );
        assert_eq!(version(Some(json!("TR 3"))).0, Some(ApiGeneration::V3));
        assert_eq!(version(Some(json!("v4"))).0, Some(ApiGeneration::V4));
    }

    #[test]
    fn last_modified_with_a_multi_byte_character_at_byte_11_is_an_error_not_a_panic() {
        for s in ["2024-01-01é", "0aA𛱰A𑰀", "2024-01-01\u{fffe}x"] {
            assert!(parse_last_modified(s, NOW).is_err(), "{s}");
        }
    }

    #[test]
    fn http_timeout_is_a_hidden_param_for_both_sides() {
        let c = JobConfig::from_params(&good()).unwrap();
        for h in [&c.tc.http, &c.tanium.http] {
            assert_eq!(h.read_timeout, Duration::from_secs(300));
            assert_eq!(h.connect_timeout, Duration::from_secs(30));
        }
        let c = JobConfig::from_params(&with(good(), "http_timeout_secs", json!("2"))).unwrap();
        for h in [&c.tc.http, &c.tanium.http] {
            assert_eq!(h.read_timeout, Duration::from_secs(2));
            assert_eq!(h.connect_timeout, Duration::from_secs(2));
        }
        assert_eq!(
            c.redacted_json()["tanium"]["http"]["read_timeout_secs"],
            json!(2)
        );
        let e = err(&with(good(), "http_timeout_secs", json!("0")));
        assert_eq!(
            e.matches("HTTP Timeout (seconds) must be a whole number from 1 to 3600")
                .count(),
            1,
            "{e}"
        );
    }
}
