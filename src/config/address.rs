//! The two server addresses the job is given, read into [`Origin`]s: the Tanium Address (a
//! host or URL, normalised to `scheme://host[:port]`) and `tc_api_path` (a URL kept with its
//! path), with messages that name the param.

use crate::http::{Origin, OriginError};
use crate::param_names as pn;
use crate::params::RawParams;

use super::value::{scalar, shown, text};

/// Tanium Address: a bare host means https, http only when written explicitly, any path is
/// dropped.
pub(super) fn tanium_address(raw: &RawParams) -> Result<Option<Origin>, String> {
    let address = text(raw, pn::TANIUM_ADDRESS)?.unwrap_or_default();
    tanium_origin(&address).map(Some)
}

fn tanium_origin(address: &str) -> Result<Origin, String> {
    let label = pn::TANIUM_ADDRESS.label;
    let why = match Origin::of_address(address) {
        Ok(origin) => return Ok(origin),
        Err(OriginError::Empty) => return Err(format!("{label} is required")),
        // Not shown: the text holds a password.
        Err(OriginError::Credentials) => {
            return Err(format!("{label} must not contain credentials"))
        }
        Err(OriginError::Scheme) => "must be an https:// or http:// URL or a host name",
        Err(OriginError::Host) => "must be a URL or host name",
        Err(OriginError::Ipv6) => "has an invalid IPv6 address",
        Err(OriginError::Port) => "has an invalid port",
    };
    Err(format!("{label} {why}, got '{}'", shown(address)))
}

/// `tc_api_path`: an http(s) URL, kept with its path, without a trailing slash.
pub(super) fn api_path(raw: &RawParams) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    // The forms themselves are pinned in http::origin; here, what each refusal says.
    #[test]
    fn tanium_address_messages_name_the_param() {
        assert_eq!(
            tanium_origin(" Tanium.Example.com:8443/ui ")
                .unwrap()
                .to_string(),
            "https://tanium.example.com:8443"
        );
        for (bad, want) in [
            ("", "Tanium Address is required"),
            (
                "ftp://x",
                "Tanium Address must be an https:// or http:// URL or a host name, got 'ftp://x'",
            ),
            (
                "user:pw@host",
                "Tanium Address must not contain credentials",
            ),
            (
                "ho st",
                "Tanium Address must be a URL or host name, got 'ho st'",
            ),
            (
                "[zz]",
                "Tanium Address has an invalid IPv6 address, got '[zz]'",
            ),
            ("host:0", "Tanium Address has an invalid port, got 'host:0'"),
        ] {
            assert_eq!(tanium_origin(bad).unwrap_err(), want, "{bad}");
        }
    }
}
