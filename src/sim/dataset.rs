//! Deterministic indicator datasets for the TC simulator: generated ones of any size and a set of
//! hostile fixtures (names that break naive quoting, huge fields, invalid values).

use time::{Duration, OffsetDateTime};

use crate::tc::model::Indicator;
use crate::tc::tql::format_time;

/// Owner names of generated data (ids 1..).
pub const OWNERS: [&str; 4] = [
    "Demo Organization",
    "Common Community",
    "Partner Source",
    "Vendor Feed",
];

/// Tag names of generated data.
pub const TAGS: [&str; 16] = [
    "APT",
    "Phishing",
    "Malware",
    "Botnet",
    "C2",
    "Ransomware",
    "TOR",
    "Scanner",
    "Spam",
    "Benign",
    "Targeted Attack",
    "Crimeware",
    "Exfiltration",
    "APT28",
    "Watchlist",
    "Test",
];

/// A tiny deterministic generator (splitmix64), so datasets need no extra crate and never change.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016X}", self.next_u64()));
        }
        s.truncate(len);
        s
    }
}

/// `generate_at` with "now" rounded down to the day, so one day's runs see the same data.
pub fn generate(n: usize, seed: u64) -> impl Iterator<Item = Indicator> {
    let now = OffsetDateTime::now_utc();
    let day = now.unix_timestamp() - now.unix_timestamp().rem_euclid(86_400);
    let base = OffsetDateTime::from_unix_timestamp(day).unwrap_or(now);
    generate_at(n, seed, base)
}

/// `n` indicators (ids 1..=n) fully determined by `seed` and `now`: four owners, mostly
/// Address / Host / File (valid IPv4 / IPv6, host names, 1-3 hashes) with ~2% URL indicators,
/// 0-3 tags, scores, ratings, confidences, false positives, ~5% inactive, and `lastModified`
/// spread over the 60 days before `now`.
pub fn generate_at(n: usize, seed: u64, now: OffsetDateTime) -> impl Iterator<Item = Indicator> {
    let mut rng = Rng::new(seed ^ 0x5EED_0F7C_1D1C_A7E5);
    (1..=n as i64).map(move |id| one(&mut rng, id, now))
}

fn one(rng: &mut Rng, id: i64, now: OffsetDateTime) -> Indicator {
    let owner = rng.below(OWNERS.len() as u64) as usize;
    let kind = rng.below(100);
    let mut ind = Indicator {
        id,
        owner_id: Some(owner as i64 + 1),
        owner_name: OWNERS[owner].to_string(),
        ..Indicator::default()
    };
    match kind {
        0..=39 => {
            let ip = if rng.below(5) == 0 {
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    rng.below(65536),
                    id & 0xffff,
                    id >> 16
                )
            } else {
                // Never a first octet under which the safety rails block anything (private,
                // loopback, shared, link-local ranges, public resolvers): their own tests plant
                // such values on purpose, and a generated one would be an unexpected block.
                let first = match 1 + rng.below(223) {
                    1 | 8 | 9 | 10 | 100 | 127 | 149 | 169 | 172 | 192 | 208 => 45,
                    n => n,
                };
                format!(
                    "{}.{}.{}.{}",
                    first,
                    (id >> 16) & 0xff,
                    (id >> 8) & 0xff,
                    id & 0xff
                )
            };
            ind.type_name = "Address".into();
            ind.summary = ip.clone();
            ind.ip = Some(ip);
        }
        40..=72 => {
            let tlds = ["com", "net", "org", "io", "ru", "example"];
            let host = format!(
                "h{id}-{}.{}",
                rng.hex(6).to_lowercase(),
                tlds[rng.below(tlds.len() as u64) as usize]
            );
            ind.type_name = "Host".into();
            ind.summary = host.clone();
            ind.host_name = Some(host);
        }
        73..=97 => {
            let which = 1 + rng.below(7); // bitmask of md5 / sha1 / sha256, never empty
            let mut parts = Vec::new();
            if which & 1 != 0 {
                let h = rng.hex(32);
                parts.push(h.clone());
                ind.md5 = Some(h);
            }
            if which & 2 != 0 {
                let h = rng.hex(40);
                parts.push(h.clone());
                ind.sha1 = Some(h);
            }
            if which & 4 != 0 {
                let h = rng.hex(64);
                parts.push(h.clone());
                ind.sha256 = Some(h);
            }
            ind.type_name = "File".into();
            ind.summary = parts.join(" : ");
        }
        _ => {
            ind.type_name = "URL".into();
            ind.summary = format!("http://u{id}.example/{}", rng.hex(8).to_lowercase());
        }
    }
    let ntags = rng.below(4);
    for _ in 0..ntags {
        let t = TAGS[rng.below(TAGS.len() as u64) as usize].to_string();
        if !ind.tags.contains(&t) {
            ind.tags.push(t);
        }
    }
    ind.rating = match rng.below(6) {
        0 => None,
        r => Some(r as f64),
    };
    ind.confidence = match rng.below(10) {
        0 => None,
        _ => Some(rng.below(101) as i64),
    };
    ind.threat_assess_score = Some(rng.below(1001) as i64);
    ind.false_positives = Some(match rng.below(10) {
        0..=6 => 0,
        7 | 8 => 1,
        _ => 2 + rng.below(5) as i64,
    });
    ind.active = rng.below(20) != 0;
    if rng.below(4) == 0 {
        ind.description = Some(format!("Generated indicator {id}."));
    }
    let modified = now - Duration::seconds(rng.below(60 * 86_400) as i64);
    let added = modified - Duration::seconds(rng.below(30 * 86_400) as i64);
    ind.last_modified = format_time(modified);
    ind.date_added = Some(format_time(added));
    ind
}

/// First id of the hostile fixtures (far above generated ids).
pub const HOSTILE_BASE_ID: i64 = 9_000_000_000;

/// Owner names that break naive quoting or encoding.
pub const HOSTILE_OWNERS: [&str; 6] = [
    "Evil \"Quoted\" Owner",
    "Back\\slash Owner",
    "Ünïcödé Owner 日本",
    "<&> Owner's `tick`",
    "Ctl\u{1}\tOwner",
    "tag\") OR (1=1",
];

/// Tag names that break naive quoting or encoding.
pub const HOSTILE_TAGS: [&str; 6] = [
    "Tag \"with\" quotes",
    "Tag\\back\\slash",
    "Tägß ✓ 标签",
    "<script>&amp;</script>",
    "it's `weird`",
    "Ctl\u{7f}\u{1b}tag",
];

/// Fixtures with hostile values: odd owner and tag names, a huge description, thousands of tags,
/// and invalid values (an Address that is no IP, bad hash lengths, an empty host).
pub fn hostile() -> Vec<Indicator> {
    let stamp = "2025-06-01T12:00:00Z".to_string();
    let base = |n: i64, owner: usize, ty: &str, summary: &str| Indicator {
        id: HOSTILE_BASE_ID + n,
        owner_id: Some(100 + owner as i64),
        owner_name: HOSTILE_OWNERS[owner].to_string(),
        type_name: ty.to_string(),
        summary: summary.to_string(),
        rating: Some(5.0),
        confidence: Some(90),
        threat_assess_score: Some(900),
        false_positives: Some(0),
        last_modified: stamp.clone(),
        date_added: Some(stamp.clone()),
        ..Indicator::default()
    };
    let mut out = Vec::new();
    for (i, owner) in HOSTILE_OWNERS.iter().enumerate() {
        let ip = format!("198.51.100.{}", i + 1);
        let mut ind = base(i as i64, i, "Address", &ip);
        ind.ip = Some(ip);
        ind.tags = vec![HOSTILE_TAGS[i].to_string()];
        ind.description = Some(format!("owned by {owner}"));
        out.push(ind);
    }
    let mut huge = base(10, 2, "Host", "huge.example");
    huge.host_name = Some("huge.example".into());
    huge.description = Some("<&>\"'".repeat(50_000));
    out.push(huge);
    let mut many = base(11, 0, "Host", "many-tags.example");
    many.host_name = Some("many-tags.example".into());
    many.tags = (0..3000).map(|i| format!("bulk-tag-{i:04}")).collect();
    many.tags.push(HOSTILE_TAGS[0].to_string());
    out.push(many);
    let mut not_ip = base(12, 1, "Address", "not-an-ip");
    not_ip.ip = Some("not-an-ip".into());
    out.push(not_ip);
    let mut bad_hash = base(13, 3, "File", "ABC123 : 0123456789");
    bad_hash.md5 = Some("ABC123".into());
    bad_hash.sha256 = Some("0123456789".into());
    out.push(bad_hash);
    // A name that is empty once normalised (a bare root dot): an invalid value, not a record
    // without a value (which would be unreadable).
    let mut empty_host = base(14, 4, "Host", ".");
    empty_host.host_name = Some(".".into());
    out.push(empty_host);
    let mut uni_host = base(15, 2, "Host", "bücher.例え.jp");
    uni_host.host_name = Some("bücher.例え.jp".into());
    uni_host.tags = vec![HOSTILE_TAGS[2].to_string(), HOSTILE_TAGS[5].to_string()];
    out.push(uni_host);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn generation_is_deterministic_and_varied() {
        let now = datetime!(2026-01-01 00:00:00 UTC);
        let a: Vec<_> = generate_at(2000, 7, now).collect();
        let b: Vec<_> = generate_at(2000, 7, now).collect();
        assert_eq!(a, b);
        let c: Vec<_> = generate_at(50, 8, now).collect();
        assert_ne!(a[..50], c[..]);
        for t in ["Address", "Host", "File", "URL"] {
            assert!(a.iter().any(|i| i.type_name == t), "{t}");
        }
        assert!(a.iter().any(|i| !i.active));
        assert!(a
            .iter()
            .any(|i| i.ip.as_deref().is_some_and(|s| s.contains(':'))));
        for i in &a {
            if let Some(ip) = &i.ip {
                assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");
            }
            if i.type_name == "File" {
                assert!(i.md5.is_some() || i.sha1.is_some() || i.sha256.is_some());
            }
            let lm = time::OffsetDateTime::parse(
                &i.last_modified,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert!(lm <= now && lm > now - Duration::days(60));
        }
        let owners: std::collections::HashSet<_> = a.iter().map(|i| &i.owner_name).collect();
        assert_eq!(owners.len(), OWNERS.len());
    }

    #[test]
    fn hostile_fixtures_are_hostile() {
        let h = hostile();
        assert!(h.iter().any(|i| i.tags.len() > 1000));
        assert!(h
            .iter()
            .any(|i| i.description.as_ref().is_some_and(|d| d.len() > 100_000)));
        assert!(h.iter().any(|i| i.owner_name.contains('"')));
        assert!(h.iter().any(|i| i.host_name.as_deref() == Some(".")));
        let ids: std::collections::HashSet<_> = h.iter().map(|i| i.id).collect();
        assert_eq!(ids.len(), h.len());
    }
}
