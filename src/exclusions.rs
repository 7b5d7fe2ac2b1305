//! ThreatConnect's Indicator Exclusion Lists as a rail: which values the lists the Api User can
//! see exclude, matched the way TC normalises them. Pure: lists in, a verdict out.
//!
//! A list's `name` says its type (`Indicator-Address-IPv4`, `Address-IPv6`, `Indicator-Host`,
//! `Indicator-File-SHA256`...; read with or without the `Indicator-` prefix, without case, and
//! ignoring separators). Only the types the job sends matter: addresses (IPv4, IPv6), hosts and
//! the three file hashes; lists of other types (ASN, CIDR, EmailAddress, URL...) are ignored.
//! Fixed values match exactly: addresses as addresses (`::0:1` is `::1`), hosts and hashes
//! without case. Variable values are patterns: CIDR ranges for addresses, `*` wildcards
//! (any run of characters, none included) for host names and hashes. A System-level list
//! applies to every owner's indicators, an owner's list to that owner's only.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;

use crate::intel::identity::{normalise_hash, normalise_host, normalise_ip};
use crate::tc::exclusion::ExclusionList;
use crate::tc::model::IndicatorType;

/// The types of list that bear on what the job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListKind {
    Ipv4,
    Ipv6,
    Host,
    Md5,
    Sha1,
    Sha256,
}

impl ListKind {
    /// The list type a list's name says (None: a type the job never sends, or no type at all).
    pub fn parse(name: &str) -> Option<ListKind> {
        let squeezed: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let bare = squeezed.strip_prefix("indicator").unwrap_or(&squeezed);
        Some(match bare {
            "addressipv4" => ListKind::Ipv4,
            "addressipv6" => ListKind::Ipv6,
            "host" => ListKind::Host,
            "filemd5" => ListKind::Md5,
            "filesha1" => ListKind::Sha1,
            "filesha256" => ListKind::Sha256,
            _ => return None,
        })
    }

    /// The indicator type its values are.
    pub fn indicator_type(self) -> IndicatorType {
        match self {
            ListKind::Ipv4 | ListKind::Ipv6 => IndicatorType::Address,
            ListKind::Host => IndicatorType::Host,
            ListKind::Md5 | ListKind::Sha1 | ListKind::Sha256 => IndicatorType::File,
        }
    }

    fn hash_name(self) -> &'static str {
        match self {
            ListKind::Md5 => "MD5",
            ListKind::Sha1 => "SHA1",
            _ => "SHA256",
        }
    }

    fn hash_len(self) -> usize {
        match self {
            ListKind::Md5 => 32,
            ListKind::Sha1 => 40,
            _ => 64,
        }
    }
}

/// Whose indicators a list applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A System-level list (managed by TC, or a custom one without an owner): every owner's.
    System,
    /// An owner-level list: that owner's indicators only.
    Owner(String),
}

impl Scope {
    /// From a list's `owner`: present on owner-level lists only.
    pub fn of(list: &ExclusionList) -> Scope {
        match list.owner.as_deref().map(str::trim) {
            Some(o) if !o.is_empty() => Scope::Owner(o.to_string()),
            _ => Scope::System,
        }
    }

    fn covers(&self, owner: &str) -> bool {
        match self {
            Scope::System => true,
            Scope::Owner(o) => o == owner,
        }
    }
}

/// One list, ready to match.
#[derive(Debug, Clone)]
struct Compiled {
    shown: String,
    scope: Scope,
    kind: ListKind,
    ips: HashSet<IpAddr>,
    nets: Vec<(IpAddr, u8)>,
    /// Normalised host names or hashes.
    fixed: HashSet<String>,
    /// Lower-case `*` patterns.
    globs: Vec<String>,
    /// Canonical lines of its contents, for the fingerprint.
    lines: BTreeSet<String>,
}

/// What reading one list's values made of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    /// Values and patterns it matches with.
    pub used: usize,
    /// Values that are not of the list's type (a host on an address list, a broken range).
    pub ignored: Vec<String>,
}

/// The exclusion lists that bear on the job, as one matcher.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    lists: Vec<Compiled>,
}

impl Exclusions {
    /// Adds a list of `kind` with its values (a list read with `fields=values`); what it
    /// made of them.
    pub fn add(&mut self, list: &ExclusionList, kind: ListKind) -> Added {
        let scope = Scope::of(list);
        let shown = match &scope {
            Scope::System => list.name.trim().to_string(),
            Scope::Owner(o) => format!("{} of {o}", list.name.trim()),
        };
        let mut c = Compiled {
            shown,
            scope,
            kind,
            ips: HashSet::new(),
            nets: Vec::new(),
            fixed: HashSet::new(),
            globs: Vec::new(),
            lines: BTreeSet::new(),
        };
        let mut added = Added::default();
        let fixed = list.fixed_values.iter().flat_map(|v| v.values());
        let variable = list.variable_values.iter().flat_map(|v| v.values());
        for (raw, pattern) in fixed.map(|v| (v, false)).chain(variable.map(|v| (v, true))) {
            let v = raw.trim();
            if v.is_empty() {
                continue;
            }
            match c.take(v, pattern) {
                Some(line) => {
                    c.lines.insert(line);
                    added.used += 1;
                }
                None => added.ignored.push(v.to_string()),
            }
        }
        self.lists.push(c);
        added
    }

    /// How many lists bear on the job.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// The list that excludes an indicator of `owner`, of `kind`, whose value is `value` as
    /// rendered (normalised: a File is its hashes joined by " : "), if one does; as the log
    /// and the counts name it.
    pub fn find(&self, owner: &str, kind: IndicatorType, value: &str) -> Option<&str> {
        self.lists
            .iter()
            .find(|l| l.kind.indicator_type() == kind && l.scope.covers(owner) && l.matches(value))
            .map(|l| l.shown.as_str())
    }

    /// A short stable hash of what the lists exclude (not of their names or ids): a change
    /// makes the next run a full reconcile.
    pub fn fingerprint(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let mut lines: BTreeSet<String> = BTreeSet::new();
        for l in &self.lists {
            let scope = match &l.scope {
                Scope::System => "*".to_string(),
                Scope::Owner(o) => format!("owner {o}"),
            };
            for line in &l.lines {
                lines.insert(format!("{scope}\t{:?}\t{line}", l.kind));
            }
        }
        let mut h = Sha256::new();
        for line in &lines {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        let d = h.finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
}

impl Compiled {
    /// Takes one value of the list; its canonical line, or None when it is not of the list's
    /// type.
    fn take(&mut self, v: &str, pattern: bool) -> Option<String> {
        match self.kind {
            ListKind::Ipv4 | ListKind::Ipv6 => self.take_address(v, pattern),
            ListKind::Host => {
                if pattern && v.contains('*') {
                    let g = v.trim_end_matches('.').to_lowercase();
                    let line = format!("~{g}");
                    self.globs.push(g);
                    return Some(line);
                }
                let h = normalise_host(v).ok()?;
                let line = format!("={h}");
                self.fixed.insert(h);
                Some(line)
            }
            ListKind::Md5 | ListKind::Sha1 | ListKind::Sha256 => {
                if pattern && v.contains('*') {
                    let g = v.to_ascii_lowercase();
                    let line = format!("~{g}");
                    self.globs.push(g);
                    return Some(line);
                }
                let h = normalise_hash(self.kind.hash_name(), v).ok()?;
                let line = format!("={h}");
                self.fixed.insert(h);
                Some(line)
            }
        }
    }

    fn take_address(&mut self, v: &str, pattern: bool) -> Option<String> {
        let v4 = self.kind == ListKind::Ipv4;
        let family = |ip: &IpAddr| ip.is_ipv4() == v4;
        if let Some((addr, prefix)) = v.split_once('/') {
            let net = normalise_ip(addr).ok().filter(family)?;
            let prefix: u8 = prefix.trim().parse().ok()?;
            if prefix > if v4 { 32 } else { 128 } {
                return None;
            }
            self.nets.push((net, prefix));
            return Some(format!("{net}/{prefix}"));
        }
        if let Ok(ip) = normalise_ip(v) {
            if !family(&ip) {
                return None;
            }
            self.ips.insert(ip);
            return Some(format!("={ip}"));
        }
        if pattern && v.contains('*') {
            let g = v.to_ascii_lowercase();
            let line = format!("~{g}");
            self.globs.push(g);
            return Some(line);
        }
        None
    }

    fn matches(&self, value: &str) -> bool {
        match self.kind {
            ListKind::Ipv4 | ListKind::Ipv6 => {
                let Ok(ip) = value.parse::<IpAddr>() else {
                    return false;
                };
                self.ips.contains(&ip)
                    || self.nets.iter().any(|(n, p)| in_net(ip, *n, *p))
                    || self.globs.iter().any(|g| glob(g, &ip.to_string()))
            }
            ListKind::Host => {
                self.fixed.contains(value) || self.globs.iter().any(|g| glob(g, value))
            }
            kind => value
                .split(" : ")
                .filter(|h| h.len() == kind.hash_len())
                .any(|h| self.fixed.contains(h) || self.globs.iter().any(|g| glob(g, h))),
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListKind::Ipv4 => "Address-IPv4",
            ListKind::Ipv6 => "Address-IPv6",
            ListKind::Host => "Host",
            ListKind::Md5 => "File-MD5",
            ListKind::Sha1 => "File-SHA1",
            ListKind::Sha256 => "File-SHA256",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tc::exclusion::{Value, Values};

    fn values(v: &[&str]) -> Option<Values> {
        Some(Values {
            data: v
                .iter()
                .map(|s| Value {
                    value: s.to_string(),
                })
                .collect(),
            count: Some(v.len() as u64),
        })
    }

    fn list(name: &str, owner: Option<&str>, fixed: &[&str], variable: &[&str]) -> ExclusionList {
        ExclusionList {
            id: Some(1),
            name: name.into(),
            owner: owner.map(str::to_string),
            active: true,
            fixed_values: values(fixed),
            variable_values: values(variable),
            ..ExclusionList::default()
        }
    }

    fn of(lists: &[ExclusionList]) -> Exclusions {
        let mut e = Exclusions::default();
        for l in lists {
            e.add(l, ListKind::parse(&l.name).unwrap());
        }
        e
    }

    const ORG: &str = "Demo Organization";

    #[test]
    fn list_types_read_with_or_without_the_prefix_and_others_are_ignored() {
        for (name, kind) in [
            ("Indicator-Address-IPv4", ListKind::Ipv4),
            ("Address-IPv6", ListKind::Ipv6),
            ("indicator-host", ListKind::Host),
            ("Indicator - File - SHA256", ListKind::Sha256),
            ("File-MD5", ListKind::Md5),
            ("Indicator-File-SHA1", ListKind::Sha1),
        ] {
            assert_eq!(ListKind::parse(name), Some(kind), "{name}");
        }
        for other in [
            "Indicator-ASN-AS Number",
            "Indicator-EmailAddress",
            "Indicator-URL",
            "Indicator-CIDR",
            "Hostname",
            "",
        ] {
            assert_eq!(ListKind::parse(other), None, "{other}");
        }
    }

    #[test]
    fn fixed_values_match_exactly_with_tcs_normalisation() {
        let e = of(&[
            list("Indicator-Address-IPv4", None, &["192.0.2.7"], &[]),
            list("Address-IPv6", None, &["2001:500:12::d0d"], &[]),
            list("Indicator-Host", None, &["Mail.Example.COM."], &[]),
            list(
                "Indicator-File-MD5",
                None,
                &["0123456789ABCDEF0123456789ABCDEF"],
                &[],
            ),
        ]);
        use IndicatorType::*;
        assert_eq!(
            e.find(ORG, Address, "192.0.2.7"),
            Some("Indicator-Address-IPv4")
        );
        assert_eq!(e.find(ORG, Address, "192.0.2.70"), None);
        assert_eq!(
            e.find(ORG, Address, "2001:500:12::d0d"),
            Some("Address-IPv6")
        );
        assert_eq!(
            e.find(ORG, Host, "mail.example.com"),
            Some("Indicator-Host")
        );
        assert_eq!(
            e.find(ORG, Host, "smtp.mail.example.com"),
            None,
            "no subdomains"
        );
        let md5 = "0123456789abcdef0123456789abcdef";
        assert!(e.find(ORG, File, md5).is_some());
        let two = format!("{md5} : da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert!(e.find(ORG, File, &two).is_some(), "any of a File's hashes");
        assert_eq!(e.find(ORG, Host, "192.0.2.7"), None, "types do not cross");
    }

    #[test]
    fn cidr_and_wildcards_match_what_they_should_and_nothing_else() {
        let e = of(&[
            list("Indicator-Address-IPv4", None, &[], &["198.51.100.0/24"]),
            list("Address-IPv6", None, &[], &["100::/64"]),
            list(
                "Indicator-Host",
                None,
                &[],
                &["*.corp.example", "cdn*.example.net"],
            ),
        ]);
        use IndicatorType::*;
        assert!(e.find(ORG, Address, "198.51.100.0").is_some());
        assert!(e.find(ORG, Address, "198.51.100.255").is_some());
        assert!(e.find(ORG, Address, "198.51.101.0").is_none());
        assert!(e.find(ORG, Address, "198.51.99.255").is_none());
        assert!(e.find(ORG, Address, "100::ffff:1").is_some());
        assert!(e.find(ORG, Address, "100:0:0:1::1").is_none());
        assert!(e.find(ORG, Host, "vpn.corp.example").is_some());
        assert!(e.find(ORG, Host, "a.b.corp.example").is_some());
        assert!(
            e.find(ORG, Host, "corp.example").is_none(),
            "*. needs a label"
        );
        assert!(e.find(ORG, Host, "notcorp.example").is_none());
        assert!(e.find(ORG, Host, "cdn.example.net").is_some());
        assert!(e.find(ORG, Host, "cdn7.example.net").is_some());
        assert!(e.find(ORG, Host, "xcdn.example.net").is_none());
        assert!(e.find(ORG, Host, "cdn.example.network").is_none());
    }

    #[test]
    fn an_owners_list_applies_to_its_owner_only_and_system_lists_to_all() {
        let e = of(&[
            list("Host", Some(ORG), &["gw.example"], &[]),
            list("Indicator-Host", None, &["all.example"], &[]),
        ]);
        use IndicatorType::Host;
        assert_eq!(
            e.find(ORG, Host, "gw.example"),
            Some("Host of Demo Organization")
        );
        assert_eq!(e.find("Common Community", Host, "gw.example"), None);
        assert_eq!(
            e.find("Common Community", Host, "all.example"),
            Some("Indicator-Host")
        );
    }

    #[test]
    fn values_of_another_type_are_ignored_and_said() {
        let mut e = Exclusions::default();
        let added = e.add(
            &list(
                "Indicator-Address-IPv4",
                None,
                &["192.0.2.1", "2001:db8::1", "host.example", " "],
                &["10.0.0.0/33", "10.0.0.0/8"],
            ),
            ListKind::Ipv4,
        );
        assert_eq!(added.used, 2);
        assert_eq!(
            added.ignored,
            vec!["2001:db8::1", "host.example", "10.0.0.0/33"]
        );
    }

    #[test]
    fn the_fingerprint_follows_contents_not_order_names_or_case() {
        let a = of(&[
            list(
                "Indicator-Host",
                None,
                &["A.example", "b.example"],
                &["*.c.example"],
            ),
            list("Indicator-Address-IPv4", Some(ORG), &["192.0.2.1"], &[]),
        ]);
        let b = of(&[
            list("Indicator-Address-IPv4", Some(ORG), &["192.0.2.1"], &[]),
            list("Host", None, &["b.example", "a.example"], &["*.C.example"]),
        ]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = of(&[
            list(
                "Indicator-Host",
                None,
                &["a.example", "b.example"],
                &["*.c.example"],
            ),
            list("Indicator-Address-IPv4", None, &["192.0.2.1"], &[]),
        ]);
        assert_ne!(a.fingerprint(), c.fingerprint(), "the scope counts");
        let d = of(&[list("Indicator-Host", None, &["a.example"], &[])]);
        assert_ne!(a.fingerprint(), d.fingerprint());
        assert_ne!(
            Exclusions::default().fingerprint(),
            d.fingerprint(),
            "no list is a state too"
        );
    }

    #[test]
    fn stars_match_any_run_of_characters() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "abc"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("*.x", "a.b.x"));
        assert!(!glob("*.x", "x"));
        assert!(glob("ab", "ab") && !glob("ab", "abc"));
    }
}
