//! Where a URL points (scheme, host, port), read by the `http` crate's `Uri`, the parser ureq
//! sends with, plus the checks a server address needs that `Uri` leaves to its users: http(s)
//! only, a host that is a name or a bracketed IPv6 address, a port that is a number.
//!
//! One type for both uses: the Tanium Address and `tc_api_path` params are read into it, and the
//! ThreatConnect client compares every URL it is about to sign against its `tc_api_path` origin.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use ureq::http::Uri;

/// The schemes a server address may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP: only when written explicitly.
    Http,
    /// HTTPS: what a bare host name means.
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Scheme, lower-case host and port: what must match before credentials go to a URL.
///
/// The port is kept as written (shown again by `Display`), but two origins that differ only in
/// writing the scheme's default port or not are equal.
#[derive(Debug, Clone)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
}

/// Why a text is not a usable origin; the caller words it for the param it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginError {
    /// Nothing was given.
    Empty,
    /// A scheme other than http or https.
    Scheme,
    /// `user:password@` in the address.
    Credentials,
    /// No host, or one that is not a host name.
    Host,
    /// A bracketed host that is not an IPv6 address.
    Ipv6,
    /// A port that is not a number from 1 to 65535.
    Port,
}

impl Origin {
    /// The origin of an absolute http(s) URL; path, query, fragment and user info are ignored.
    pub fn of_url(url: &str) -> Result<Origin, OriginError> {
        let uri: Uri = url.trim().parse().map_err(|_| OriginError::Host)?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            _ => return Err(OriginError::Scheme),
        };
        let authority = uri.authority().ok_or(OriginError::Host)?;
        let host = checked_host(authority.host())?;
        // `Uri` reads a port it cannot parse as no port at all: what follows the host must be
        // exactly the port it did read.
        let host_and_port = authority.as_str().rsplit('@').next().unwrap_or_default();
        let port = match authority.port() {
            None if host_and_port == authority.host() => None,
            Some(p)
                if p.as_u16() > 0
                    && host_and_port == format!("{}:{}", authority.host(), p.as_str()) =>
            {
                Some(p.as_u16())
            }
            _ => return Err(OriginError::Port),
        };
        Ok(Origin { scheme, host, port })
    }

    /// A server address as users type it: a bare host (meaning https) or an http(s) URL, whose
    /// path is dropped. Credentials in it are refused rather than sent.
    pub fn of_address(address: &str) -> Result<Origin, OriginError> {
        let s = address.trim();
        if s.is_empty() {
            return Err(OriginError::Empty);
        }
        let url = if s.contains("://") {
            s.to_string()
        } else {
            format!("https://{s}")
        };
        let authority = url
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
            .unwrap_or_default();
        if authority.contains('@') {
            return Err(OriginError::Credentials);
        }
        Origin::of_url(&url)
    }

    /// The port requests go to: the one written, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }
}

/// A host name (letters, digits, `.`, `-`, `_`, not led by `.` or `-`) or a bracketed IPv6
/// address, lower-cased.
fn checked_host(host: &str) -> Result<String, OriginError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(OriginError::Ipv6)?;
        inner.parse::<Ipv6Addr>().map_err(|_| OriginError::Ipv6)?;
        return Ok(host.to_ascii_lowercase());
    }
    let name_ok = !host.is_empty()
        && !host.starts_with(['.', '-'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if name_ok {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(OriginError::Host)
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port() == other.port()
    }
}

impl Eq for Origin {}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Origin {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Origin::of_address(s)
    }
}

impl serde::Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Origin {
        Origin::of_url(s).unwrap()
    }

    #[test]
    fn urls_compare_scheme_host_and_port() {
        let a = url("https://TC.example.com/api");
        assert_eq!(a, url("https://tc.example.com:443/api/v3/x?y=1"));
        assert_ne!(a, url("http://tc.example.com/api"));
        assert_ne!(a, url("https://tc.example.com:8443/api"));
        assert_ne!(a, url("https://evil.example.com/api"));
        assert_ne!(a, url("https://tc.example.com@evil.example.com/api"));
        let v6 = url("http://[::1]:8080/api");
        assert_eq!(
            (v6.to_string(), v6.port()),
            ("http://[::1]:8080".into(), 8080)
        );
        assert_eq!(Origin::of_url("ftp://x/api"), Err(OriginError::Scheme));
        assert!(Origin::of_url("no-scheme").is_err());
    }

    #[test]
    fn addresses_forms() {
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
            let o: Origin = input.parse().unwrap();
            assert_eq!(o.to_string(), want, "{input}");
        }
        for (bad, why) in [
            ("", OriginError::Empty),
            ("ftp://x", OriginError::Scheme),
            ("https://", OriginError::Host),
            ("user:pw@host", OriginError::Credentials),
            ("host:0", OriginError::Port),
            ("host:abc", OriginError::Port),
            ("host:", OriginError::Port),
            ("t:99999", OriginError::Port),
            ("[::1]x", OriginError::Port),
            ("ho st", OriginError::Host),
            ("[::1", OriginError::Host),
            ("[zz]", OriginError::Ipv6),
            ("https://-x", OriginError::Host),
        ] {
            assert_eq!(Origin::of_address(bad), Err(why), "{bad}");
        }
    }
}
