//! The two sides' connections: where each server is, the credentials, TLS, the platform proxy
//! and the timeouts, read into [`tc::Settings`] and [`tanium::Settings`].

use std::time::Duration;

use crate::error::Service;
use crate::http::{CaCertificates, HttpSettings, ProxySettings};
use crate::param_names as pn;
use crate::params::RawParams;
use crate::secret::Secret;
use crate::tanium::{self, ApiGeneration};
use crate::tc;

use super::address::{api_path, tanium_address};
use super::value::{boolean, scalar, shown, spec_whole, text, whole, Problems};

/// Default Tanium Threat Response source name.
pub const DEFAULT_SOURCE: &str = "ThreatConnect";
/// Default and largest TC page size.
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// Default TC page size: the top of what production clients use (100 to 1,000; TC's docs warn
/// that large TQL queries time out), ten requests per 10,000 indicators. A page TC still cannot
/// serve in time is asked for again at half the size (see `tc::pages::Pages`).
pub const DEFAULT_PAGE_SIZE: u32 = 1_000;
/// Largest accepted HTTP timeout (an hour), seconds.
pub const MAX_HTTP_TIMEOUT_SECS: u32 = 3600;

/// What the Tanium side takes from params read with the ThreatConnect side.
pub(super) struct Shared {
    proxy: Option<ProxySettings>,
    for_tanium: bool,
    timeout_secs: Option<u32>,
    ca_certificates: CaCertificates,
}

/// One side's connection settings with the `http_timeout_secs` hidden param applied: the
/// answer timeout is the param, the connect timeout the smaller of it and the default.
fn http_settings(
    service: Service,
    timeout_secs: Option<u32>,
    verify_tls: bool,
    ca_certificates: &CaCertificates,
) -> HttpSettings {
    let defaults = HttpSettings::for_service(service);
    let read = timeout_secs
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(defaults.read_timeout);
    HttpSettings {
        verify_tls,
        ca_certificates: ca_certificates.clone(),
        connect_timeout: defaults.connect_timeout.min(read),
        read_timeout: read,
        ..defaults
    }
}

/// The ThreatConnect side (URL, credentials, TLS, proxy, page size, timeout), and what the
/// Tanium side shares with it. None when a problem was recorded.
pub(super) fn tc_side(
    raw: &RawParams,
    problems: &mut Problems,
    notes: &mut Vec<String>,
) -> (Option<tc::Settings>, Shared) {
    let api_path = problems.take(api_path(raw).map(Some));
    let auth = problems.take(tc_auth(raw, notes).map(Some));
    let verify_tls = problems.take(boolean(raw, &[pn::TC_VERIFY], pn::TC_VERIFY, true).map(Some));
    let (proxy, for_tc, for_tanium) = problems.take(proxy(raw));
    let page_size = problems
        .take(spec_whole(raw, pn::TC_PAGE_SIZE, 1, MAX_PAGE_SIZE))
        .unwrap_or(DEFAULT_PAGE_SIZE);
    let timeout_secs = problems.take(spec_whole(
        raw,
        pn::HTTP_TIMEOUT_SECS,
        1,
        MAX_HTTP_TIMEOUT_SECS,
    ));
    let ca_certificates = problems.take(ca_certificates(raw));
    let settings = match (api_path, auth, verify_tls) {
        (Some(api_path), Some(auth), Some(verify_tls)) => Some(tc::Settings {
            api_path,
            auth,
            http: HttpSettings {
                proxy: if for_tc { proxy.clone() } else { None },
                ..http_settings(
                    Service::ThreatConnect,
                    timeout_secs,
                    verify_tls,
                    &ca_certificates,
                )
            },
            page_size,
        }),
        _ => None,
    };
    let shared = Shared {
        proxy,
        for_tanium,
        timeout_secs,
        ca_certificates,
    };
    (settings, shared)
}

/// The Tanium side (address, credentials, TLS, source, API version). None when a problem was
/// recorded.
pub(super) fn tanium_side(
    raw: &RawParams,
    problems: &mut Problems,
    shared: Shared,
) -> Option<tanium::Settings> {
    let base_url = problems.take(tanium_address(raw));
    let username = problems.take(text(raw, pn::TANIUM_USERNAME).and_then(|u| {
        u.ok_or_else(|| format!("{} is required", pn::TANIUM_USERNAME.label))
            .map(Some)
    }));
    let label = pn::TANIUM_PASSWORD.label;
    let password = problems.take(
        scalar(raw, &[pn::TANIUM_PASSWORD.name], label, false)
            .and_then(|pw| pw.ok_or_else(|| format!("{label} is required")).map(Some)),
    );
    let verify_tls =
        problems.take(boolean(raw, &[pn::VERIFY_SSL.name], pn::VERIFY_SSL.label, true).map(Some));
    let source_name = problems
        .take(text(raw, pn::TANIUM_SOURCE))
        .unwrap_or_else(|| DEFAULT_SOURCE.to_string());
    let api_version = problems.take(api_version(raw));
    Some(tanium::Settings {
        base_url: base_url?,
        username: username?,
        password: Secret::new(password?),
        http: HttpSettings {
            proxy: if shared.for_tanium {
                shared.proxy
            } else {
                None
            },
            ..http_settings(
                Service::Tanium,
                shared.timeout_secs,
                verify_tls?,
                &shared.ca_certificates,
            )
        },
        source_name,
        api_version,
    })
}

/// The CA Certificate param, read with the ThreatConnect side: the client that resolves
/// `&{TC:...}` variables needs it first, so it cannot be one.
fn ca_certificates(raw: &RawParams) -> Result<CaCertificates, String> {
    let label = pn::CA_CERTIFICATE.label;
    match text(raw, pn::CA_CERTIFICATE)? {
        None => Ok(CaCertificates::default()),
        Some(t) if t.starts_with("&{") => Err(format!(
            "{label} cannot be a ThreatConnect variable: the job needs it to reach \
             ThreatConnect, which resolves variables; paste the PEM text itself"
        )),
        Some(t) => CaCertificates::parse(&t).map_err(|e| format!("{label} {e}")),
    }
}

fn tc_auth(raw: &RawParams, notes: &mut Vec<String>) -> Result<tc::Auth, String> {
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
fn proxy(raw: &RawParams) -> Result<(Option<ProxySettings>, bool, bool), String> {
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

/// `auto` (None), `4.x` or `3.x`; `4`, `v4`, `TR 4.x` and the like are read the same way.
fn api_version(raw: &RawParams) -> Result<Option<ApiGeneration>, String> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::config::tests::{err, good, with};
    use crate::config::JobConfig;
    use crate::tanium::ApiGeneration;
    use crate::tc;

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
    fn http_timeout_is_a_hidden_param_for_both_sides() {
        let c = JobConfig::from_params(&good()).unwrap();
        assert_eq!(c.tc.http.read_timeout, Duration::from_secs(120));
        assert_eq!(c.tanium.http.read_timeout, Duration::from_secs(60));
        for h in [&c.tc.http, &c.tanium.http] {
            assert_eq!(h.connect_timeout, Duration::from_secs(15));
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

    #[test]
    fn ca_certificate_is_trusted_by_both_sides_and_checked_up_front() {
        use base64::Engine;
        let der = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        // Pasted into a one-line field: the line breaks became spaces.
        let pem = format!("-----BEGIN CERTIFICATE----- {b64} -----END CERTIFICATE-----");
        let c = JobConfig::from_params(&with(good(), "ca_certificate", json!(pem))).unwrap();
        for h in [&c.tc.http, &c.tanium.http] {
            assert_eq!(h.ca_certificates.len(), 1);
        }
        assert_eq!(
            c.redacted_json()["tanium"]["http"]["ca_certificates"],
            json!(1)
        );
        let c = JobConfig::from_params(&good()).unwrap();
        assert!(c.tc.http.ca_certificates.is_empty() && c.tanium.http.ca_certificates.is_empty());
        let e = err(&with(good(), "ca_certificate", json!("not a certificate")));
        assert!(e.starts_with("CA Certificate holds no certificate"), "{e}");
        let e = err(&with(good(), "ca_certificate", json!("&{TC:TEXT:corp_ca}")));
        assert!(
            e.starts_with("CA Certificate cannot be a ThreatConnect variable"),
            "{e}"
        );
    }
}
