//! What must never become intel: indicators that would alert on every endpoint of a fleet
//! (private and special-purpose addresses, widely used public DNS resolvers, host names that
//! are a single label or a public suffix, the hashes of the empty file), and the values the
//! job's own *Never Send* list names. Pure: values in, a reason out.
//!
//! Documentation and benchmark ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 198.18/15,
//! 2001:db8::/32) and reserved names such as `.example` or `.test` are not blocked: no endpoint
//! ever talks to them, so they alert nowhere.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Serialize, Serializer};

use crate::intel::identity::{normalise_hash, normalise_host, normalise_ip};
use crate::tc::model::IndicatorType;

/// Widely used public DNS resolvers: every endpoint talks to one of them.
const PUBLIC_RESOLVERS: &[(&str, &str)] = &[
    ("8.8.8.8", "Google"),
    ("8.8.4.4", "Google"),
    ("2001:4860:4860::8888", "Google"),
    ("2001:4860:4860::8844", "Google"),
    ("1.1.1.1", "Cloudflare"),
    ("1.0.0.1", "Cloudflare"),
    ("1.1.1.2", "Cloudflare"),
    ("1.0.0.2", "Cloudflare"),
    ("1.1.1.3", "Cloudflare"),
    ("1.0.0.3", "Cloudflare"),
    ("2606:4700:4700::1111", "Cloudflare"),
    ("2606:4700:4700::1001", "Cloudflare"),
    ("9.9.9.9", "Quad9"),
    ("149.112.112.112", "Quad9"),
    ("9.9.9.10", "Quad9"),
    ("9.9.9.11", "Quad9"),
    ("2620:fe::fe", "Quad9"),
    ("2620:fe::9", "Quad9"),
    ("208.67.222.222", "OpenDNS"),
    ("208.67.220.220", "OpenDNS"),
    ("2620:119:35::35", "OpenDNS"),
    ("2620:119:53::53", "OpenDNS"),
];

/// MD5, SHA1 and SHA256 of the empty file: present on every endpoint.
const EMPTY_FILE: &[(&str, &str)] = &[
    ("d41d8cd98f00b204e9800998ecf8427e", "MD5"),
    ("da39a3ee5e6b4b0d3255bfef95601890afd80709", "SHA1"),
    (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "SHA256",
    ),
];

/// Why a value is never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// It would alert everywhere (Block Unsafe Indicators).
    Unsafe(String),
    /// The job's Never Send list names it.
    NeverSend(String),
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Block::Unsafe(why) => write!(f, "unsafe: {why}"),
            Block::NeverSend(entry) => write!(f, "on the Never Send list ({entry})"),
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// Why an address would alert on every endpoint, if it would.
pub fn unsafe_ip(ip: IpAddr) -> Option<String> {
    let range = match ip {
        IpAddr::V4(v4) => unsafe_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => unsafe_v4(v4).map(|r| format!("IPv4-mapped {r}")),
            None => unsafe_v6(v6).map(str::to_string),
        },
    };
    range.or_else(|| {
        PUBLIC_RESOLVERS
            .iter()
            .find(|(r, _)| r.parse::<IpAddr>().ok() == Some(ip))
            .map(|(_, who)| format!("{who} public DNS resolver"))
    })
}

fn unsafe_v4(ip: Ipv4Addr) -> Option<String> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\" 0.0.0.0/8"),
        ([10, 0, 0, 0], 8, "private 10.0.0.0/8"),
        ([100, 64, 0, 0], 10, "shared address space 100.64.0.0/10"),
        ([127, 0, 0, 0], 8, "loopback 127.0.0.0/8"),
        ([169, 254, 0, 0], 16, "link-local 169.254.0.0/16"),
        ([172, 16, 0, 0], 12, "private 172.16.0.0/12"),
        ([192, 168, 0, 0], 16, "private 192.168.0.0/16"),
        ([224, 0, 0, 0], 4, "multicast 224.0.0.0/4"),
    ];
    if ip.is_broadcast() {
        return Some("broadcast 255.255.255.255".into());
    }
    if let Some((_, _, what)) = RANGES.iter().find(|(n, p, _)| in_v4(ip, *n, *p)) {
        return Some((*what).into());
    }
    in_v4(ip, [240, 0, 0, 0], 4).then(|| "reserved 240.0.0.0/4".into())
}

fn unsafe_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let net = |s: &str| s.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED);
    if ip.is_unspecified() {
        Some("unspecified ::")
    } else if ip.is_loopback() {
        Some("loopback ::1")
    } else if in_v6(ip, net("fe80::"), 10) {
        Some("link-local fe80::/10")
    } else if in_v6(ip, net("fc00::"), 7) {
        Some("unique local fc00::/7")
    } else if in_v6(ip, net("ff00::"), 8) {
        Some("multicast ff00::/8")
    } else {
        None
    }
}

/// Why a (normalised) host name would alert on every endpoint, if it would.
pub fn unsafe_host(host: &str) -> Option<String> {
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("localhost".into());
    }
    if !host.contains('.') {
        return Some("a single-label host name".into());
    }
    let suffix = psl::suffix(host.as_bytes())?;
    (suffix.is_known() && suffix.as_bytes() == host.as_bytes())
        .then(|| format!("the public suffix {host} itself"))
}

/// Why a (normalised) hash would alert on every endpoint, if it would.
pub fn unsafe_hash(hash: &str) -> Option<String> {
    EMPTY_FILE
        .iter()
        .find(|(h, _)| *h == hash)
        .map(|(_, kind)| format!("the {kind} of the empty file"))
}

/// One entry of *Never Send*.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// An address or a range: network, prefix length.
    Net(IpAddr, u8),
    /// A host name and all its subdomains.
    Host(String),
    Hash(String),
}

/// The job's *Never Send* list, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeverSend(Vec<(Entry, String)>);

impl Serialize for NeverSend {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(_, shown)| shown))
    }
}

impl NeverSend {
    /// Parses entries: an IP, a CIDR range, an MD5 / SHA1 / SHA256, or a host name; the error
    /// names the entry that is none of these.
    pub fn parse(entries: &[String]) -> Result<NeverSend, String> {
        let mut out = Vec::new();
        for raw in entries {
            let e = raw.trim();
            let entry = parse_entry(e).ok_or_else(|| {
                format!("'{e}' is not an IP address, a CIDR range, a host name or an MD5/SHA1/SHA256 hash")
            })?;
            out.push((entry, e.to_string()));
        }
        Ok(NeverSend(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as given, sorted: what the job's selection depends on.
    pub fn canonical(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.iter().map(|(_, s)| s.to_ascii_lowercase()).collect();
        v.sort();
        v.dedup();
        v
    }

    fn find(&self, kind: IndicatorType, value: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(entry, _)| matches_entry(entry, kind, value))
            .map(|(_, shown)| shown.as_str())
    }
}

fn parse_entry(e: &str) -> Option<Entry> {
    if let Some((addr, prefix)) = e.split_once('/') {
        let ip = normalise_ip(addr).ok()?;
        let prefix: u8 = prefix.trim().parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then_some(Entry::Net(ip, prefix));
    }
    if let Ok(ip) = normalise_ip(e) {
        return Some(Entry::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    let name = match e.len() {
        32 => "MD5",
        40 => "SHA1",
        64 => "SHA256",
        _ => "",
    };
    if let Ok(h) = normalise_hash(name, e) {
        return Some(Entry::Hash(h));
    }
    normalise_host(e).ok().map(Entry::Host)
}

fn matches_entry(entry: &Entry, kind: IndicatorType, value: &str) -> bool {
    match (entry, kind) {
        (Entry::Net(net, prefix), IndicatorType::Address) => match (value.parse::<IpAddr>(), net) {
            (Ok(IpAddr::V4(ip)), IpAddr::V4(n)) => in_v4(ip, n.octets(), u32::from(*prefix)),
            (Ok(IpAddr::V6(ip)), IpAddr::V6(n)) => in_v6(ip, *n, u32::from(*prefix)),
            _ => false,
        },
        (Entry::Host(h), IndicatorType::Host) => {
            value == h
                || value
                    .strip_suffix(h.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        }
        (Entry::Hash(h), IndicatorType::File) => value.split(" : ").any(|v| v == h),
        _ => false,
    }
}

/// The rails the job applies to every indicator it would send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Guard {
    /// Block Unsafe Indicators.
    pub safeguards: bool,
    pub never_send: NeverSend,
}

impl Guard {
    /// Why `value` (normalised, as rendered: a File is its hashes joined by " : ") must not be
    /// sent, if it must not.
    pub fn check(&self, kind: IndicatorType, value: &str) -> Option<Block> {
        if let Some(entry) = self.never_send.find(kind, value) {
            return Some(Block::NeverSend(entry.to_string()));
        }
        if !self.safeguards {
            return None;
        }
        match kind {
            IndicatorType::Address => value.parse().ok().and_then(unsafe_ip),
            IndicatorType::Host => unsafe_host(value),
            IndicatorType::File => value.split(" : ").find_map(unsafe_hash),
        }
        .map(Block::Unsafe)
    }
}

/// Default of Maximum Removal Percent.
pub const DEFAULT_MAX_REMOVAL_PERCENT: u32 = 50;
/// Below this many documents in the source the mass-removal guard does not apply: a handful
/// of removals there is a large share and still no disaster.
pub const REMOVAL_GUARD_MIN_DOCS: u64 = 20;

/// Every safety rail of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rails {
    #[serde(flatten)]
    pub guard: Guard,
    /// A run that would remove more than this share of the source removes nothing.
    pub max_removal_percent: u32,
    /// Keep at most this many documents, the best ranked first.
    pub max_indicators: Option<u64>,
    /// Indicators last modified longer ago than this are not sent.
    pub max_indicator_age_days: Option<u32>,
    /// What ThreatConnect's Indicator Exclusion Lists exclude is not sent.
    pub honor_exclusion_lists: bool,
    /// An indicator past its `externalDateExpires` is not sent.
    pub honor_expiry: bool,
    pub deploy_intel: bool,
}

impl Default for Rails {
    fn default() -> Self {
        Rails {
            guard: Guard {
                safeguards: true,
                never_send: NeverSend::default(),
            },
            max_removal_percent: DEFAULT_MAX_REMOVAL_PERCENT,
            max_indicators: None,
            max_indicator_age_days: None,
            honor_exclusion_lists: true,
            honor_expiry: true,
            deploy_intel: true,
        }
    }
}

impl Rails {
    /// Whether removing `removals` of a source holding `docs` documents is more than the job
    /// allows (then the run removes none of them).
    pub fn too_many_removals(&self, removals: u64, docs: u64) -> bool {
        docs >= REMOVAL_GUARD_MIN_DOCS
            && removals.saturating_mul(100)
                > docs.saturating_mul(u64::from(self.max_removal_percent))
    }

    /// What of the rails decides which indicators the job sends (a change forces a full
    /// reconcile, as a change of filters does).
    pub fn selection(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "safeguards": self.guard.safeguards,
            "never_send": self.guard.never_send.canonical(),
            "max_indicators": self.max_indicators,
            "max_indicator_age_days": self.max_indicator_age_days,
        });
        // Only when on, so a job with both off keeps the fingerprint it had before they
        // existed; a job that gains them reconciles fully once, which applies them.
        for (key, on) in [
            ("honor_exclusion_lists", self.honor_exclusion_lists),
            ("honor_expiry", self.honor_expiry),
        ] {
            if on {
                v[key] = true.into();
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_removal_guard_needs_a_share_over_the_limit_of_a_source_of_twenty() {
        let r = Rails::default();
        assert!(
            !r.too_many_removals(19, 19),
            "small sources are not guarded"
        );
        assert!(!r.too_many_removals(10, 20), "exactly half is allowed");
        assert!(r.too_many_removals(11, 20));
        let all = Rails {
            max_removal_percent: 100,
            ..Rails::default()
        };
        assert!(!all.too_many_removals(100, 100));
        let none = Rails {
            max_removal_percent: 0,
            ..Rails::default()
        };
        assert!(none.too_many_removals(1, 20));
    }

    #[test]
    fn the_tc_rails_enter_the_selection_only_when_on() {
        let off = Rails {
            honor_exclusion_lists: false,
            honor_expiry: false,
            ..Rails::default()
        };
        assert_eq!(
            off.selection(),
            serde_json::json!({"safeguards": true, "never_send": [], "max_indicators": null,
                               "max_indicator_age_days": null}),
            "the selection jobs had before these rails existed"
        );
        let on = Rails::default().selection();
        assert_eq!(on["honor_exclusion_lists"], true);
        assert_eq!(on["honor_expiry"], true);
    }

    fn on() -> Guard {
        Guard {
            safeguards: true,
            never_send: NeverSend::default(),
        }
    }

    fn blocked(kind: IndicatorType, v: &str) -> Option<String> {
        on().check(kind, v).map(|b| b.to_string())
    }

    #[test]
    fn every_class_of_unsafe_address_is_blocked_with_its_reason() {
        let a = IndicatorType::Address;
        for (ip, why) in [
            ("10.1.2.3", "private 10.0.0.0/8"),
            ("172.20.0.1", "private 172.16.0.0/12"),
            ("192.168.1.1", "private 192.168.0.0/16"),
            ("127.0.0.1", "loopback 127.0.0.0/8"),
            ("169.254.169.254", "link-local 169.254.0.0/16"),
            ("100.64.0.1", "shared address space 100.64.0.0/10"),
            ("0.0.0.0", "\"this network\" 0.0.0.0/8"),
            ("224.0.0.251", "multicast 224.0.0.0/4"),
            ("240.0.0.1", "reserved 240.0.0.0/4"),
            ("255.255.255.255", "broadcast 255.255.255.255"),
            ("::", "unspecified ::"),
            ("::1", "loopback ::1"),
            ("fe80::1", "link-local fe80::/10"),
            ("fd00::1", "unique local fc00::/7"),
            ("ff02::1", "multicast ff00::/8"),
            ("::ffff:10.0.0.1", "IPv4-mapped private 10.0.0.0/8"),
            ("8.8.8.8", "Google public DNS resolver"),
            ("1.1.1.1", "Cloudflare public DNS resolver"),
            ("9.9.9.9", "Quad9 public DNS resolver"),
            ("208.67.222.222", "OpenDNS public DNS resolver"),
            ("2001:4860:4860::8888", "Google public DNS resolver"),
        ] {
            assert_eq!(blocked(a, ip), Some(format!("unsafe: {why}")), "{ip}");
        }
        for fine in [
            "192.0.2.7",
            "198.51.100.1",
            "203.0.113.9",
            "198.18.0.1",
            "2001:db8::1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert_eq!(blocked(a, fine), None, "{fine}");
        }
    }

    #[test]
    fn bare_local_and_public_suffix_names_and_empty_file_hashes_are_blocked() {
        let h = IndicatorType::Host;
        assert_eq!(
            blocked(h, "intranet"),
            Some("unsafe: a single-label host name".into())
        );
        assert_eq!(blocked(h, "localhost"), Some("unsafe: localhost".into()));
        assert_eq!(
            blocked(h, "com"),
            Some("unsafe: a single-label host name".into())
        );
        assert_eq!(
            blocked(h, "co.uk"),
            Some("unsafe: the public suffix co.uk itself".into())
        );
        assert_eq!(
            blocked(h, "github.io"),
            Some("unsafe: the public suffix github.io itself".into())
        );
        for fine in [
            "evil.example",
            "a.test",
            "bad.co.uk",
            "x.github.io",
            "c2.example.com",
        ] {
            assert_eq!(blocked(h, fine), None, "{fine}");
        }
        let f = IndicatorType::File;
        assert_eq!(
            blocked(f, "d41d8cd98f00b204e9800998ecf8427e"),
            Some("unsafe: the MD5 of the empty file".into())
        );
        assert_eq!(
            blocked(
                f,
                "0123456789abcdef0123456789abcdef : da39a3ee5e6b4b0d3255bfef95601890afd80709"
            ),
            Some("unsafe: the SHA1 of the empty file".into())
        );
        assert_eq!(blocked(f, "0123456789abcdef0123456789abcdef"), None);
        let off = Guard::default();
        assert_eq!(off.check(IndicatorType::Address, "10.0.0.1"), None);
    }

    #[test]
    fn never_send_covers_addresses_ranges_subdomains_and_hashes() {
        let list: Vec<String> = [
            "203.0.113.7",
            "198.51.100.0/24",
            "2001:db8::/32",
            "Corp.Example",
            "0123456789ABCDEF0123456789ABCDEF",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let g = Guard {
            safeguards: false,
            never_send: NeverSend::parse(&list).unwrap(),
        };
        let hit = |k, v: &str| g.check(k, v).map(|b| b.to_string());
        use IndicatorType::*;
        assert_eq!(
            hit(Address, "203.0.113.7"),
            Some("on the Never Send list (203.0.113.7)".into())
        );
        assert!(hit(Address, "203.0.113.8").is_none());
        assert!(hit(Address, "198.51.100.200").is_some());
        assert!(hit(Address, "2001:db8:5::1").is_some());
        assert!(hit(Host, "corp.example").is_some());
        assert!(hit(Host, "vpn.corp.example").is_some());
        assert!(hit(Host, "notcorp.example").is_none());
        let two = "0123456789abcdef0123456789abcdef : da39a3ee5e6b4b0d3255bfef95601890afd80709";
        assert!(hit(File, two).is_some(), "any of a File's hashes");
        assert!(hit(Host, "203.0.113.7").is_none(), "types do not cross");
        let bad = NeverSend::parse(&["10.0.0.0/33".to_string()]).unwrap_err();
        assert!(bad.contains("'10.0.0.0/33'"), "{bad}");
        assert!(NeverSend::parse(&["not a host!".to_string()]).is_err());
    }

    proptest! {
        #[test]
        fn addresses_are_blocked_exactly_when_std_calls_them_special(bits in any::<u32>()) {
            let ip = Ipv4Addr::from(bits);
            let o = ip.octets();
            let shared = o[0] == 100 && (64..128).contains(&o[1]);
            let special = ip.is_private() || ip.is_loopback() || ip.is_link_local()
                || ip.is_multicast() || ip.is_broadcast() || o[0] == 0 || o[0] >= 240 || shared;
            let resolver = PUBLIC_RESOLVERS.iter().any(|(r, _)| r.parse::<IpAddr>().ok() == Some(IpAddr::V4(ip)));
            prop_assert_eq!(unsafe_ip(IpAddr::V4(ip)).is_some(), special || resolver, "{}", ip);
            if ip.is_documentation() {
                prop_assert!(unsafe_ip(IpAddr::V4(ip)).is_none());
            }
            let mapped = IpAddr::V6(ip.to_ipv6_mapped());
            prop_assert_eq!(unsafe_ip(mapped).is_some(), special, "{}", mapped);
        }

        #[test]
        fn v6_addresses_follow_std(bits in any::<u128>(), pick in 0u8..4) {
            // Bias towards the special ranges, which uniform bits almost never hit.
            let prefix: u128 = match pick { 0 => 0xfe80 << 112, 1 => 0xfc00 << 112, 2 => 0xff00 << 112, _ => 0 };
            let mask: u128 = if pick == 3 { u128::MAX } else { u128::MAX >> 16 };
            let ip = Ipv6Addr::from(prefix | (bits & mask));
            if ip.to_ipv4_mapped().is_some() || PUBLIC_RESOLVERS.iter().any(|(r, _)| r.parse::<IpAddr>().ok() == Some(IpAddr::V6(ip))) {
                return Ok(());
            }
            let special = ip.is_unspecified() || ip.is_loopback() || ip.is_unicast_link_local()
                || ip.is_unique_local() || ip.is_multicast();
            prop_assert_eq!(unsafe_ip(IpAddr::V6(ip)).is_some(), special, "{}", ip);
        }

        #[test]
        fn host_names_are_blocked_exactly_when_bare_or_a_public_suffix(labels in prop::collection::vec("[a-z]{1,6}|com|uk|co|io|github|example|test", 1..4)) {
            let host = labels.join(".");
            let suffix = psl::suffix(host.as_bytes());
            let is_suffix = suffix.is_some_and(|s| s.is_known() && s.as_bytes() == host.as_bytes());
            let want = labels.len() == 1 || is_suffix || host == "localhost" || host.ends_with(".localhost");
            prop_assert_eq!(unsafe_host(&host).is_some(), want, "{}", host);
        }
    }
}
