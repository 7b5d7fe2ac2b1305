//! Deterministic identities and value normalisation.
//!
//! An identity is SHA-256 over `owner \0 type \0 normalised value`, cut to 128 bits and written
//! as a UUID with version 8 ("custom") and the RFC 4122 variant, lower-case. The normalised
//! value is the canonical IP text for an Address, the lower-case host name without a trailing
//! dot for a Host, and for a File its first present hash in the order MD5, SHA1, SHA256 (so
//! adding a hash to a File keeps its identity). The owner is used exactly as TC spells it.
//!
//! Documents carry the identity as their root id (Tanium's `intrinsicId`) and in a marker line
//! `tc-sync: <identity> rev <rev>` at the end of their description; the functions at the
//! bottom read those back from a Tanium listing row.

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::tc::model::IndicatorType;

/// The marker that starts the machine-readable line in every description.
pub const MARKER: &str = "tc-sync:";

/// A deterministic identity: 128 bits of SHA-256, shown as a version-8 UUID (lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(u128);

impl Identity {
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The identity whose bits these are (as [`Identity::as_u128`] gave them).
    pub fn from_u128(bits: u128) -> Identity {
        Identity(bits)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// Fingerprint of everything a document renders: equal revs, equal documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rev(pub u64);

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Longest host name accepted (DNS limit, without the trailing dot).
const MAX_HOST: usize = 253;
/// Longest host label accepted.
const MAX_LABEL: usize = 63;

/// A File's hashes, lower-case hex, each checked for length and alphabet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hashes {
    /// MD5 (32 hex).
    pub md5: Option<String>,
    /// SHA1 (40 hex).
    pub sha1: Option<String>,
    /// SHA256 (64 hex).
    pub sha256: Option<String>,
}

impl Hashes {
    /// The hash the identity is derived from: the first present of MD5, SHA1, SHA256.
    pub fn key(&self) -> Option<&str> {
        self.md5
            .as_deref()
            .or(self.sha1.as_deref())
            .or(self.sha256.as_deref())
    }

    /// The present hashes as (CybOX name, value), in the order MD5, SHA1, SHA256.
    pub fn present(&self) -> Vec<(&'static str, &str)> {
        [
            ("MD5", &self.md5),
            ("SHA1", &self.sha1),
            ("SHA256", &self.sha256),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.as_deref().map(|v| (n, v)))
        .collect()
    }

    /// The hashes joined as TC writes a File summary (`A : B : C`).
    pub fn joined(&self) -> String {
        self.present()
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
            .join(" : ")
    }

    fn set(&mut self, name: &'static str, value: String) -> Result<(), String> {
        let slot = match name {
            "MD5" => &mut self.md5,
            "SHA1" => &mut self.sha1,
            _ => &mut self.sha256,
        };
        if slot.is_some() {
            return Err(format!("more than one {name} hash"));
        }
        *slot = Some(value);
        Ok(())
    }
}

/// Canonical text of an IP address: IPv4 dotted quad, IPv6 compressed lower-case (RFC 5952).
pub fn normalise_ip(raw: &str) -> Result<IpAddr, String> {
    let s = raw.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<IpAddr>()
        .map_err(|_| "not an IP address".to_string())
}

/// Lower-case host name without a trailing dot; rejects empty names and labels, white space,
/// characters that cannot be in a DNS name, labels over 63 and names over 253 characters.
pub fn normalise_host(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    let s = s.strip_suffix('.').unwrap_or(s).to_lowercase();
    if s.is_empty() {
        return Err("empty host name".into());
    }
    if s.chars().count() > MAX_HOST {
        return Err(format!("host name longer than {MAX_HOST} characters"));
    }
    if let Some(c) = s.chars().find(|&c| {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        } else {
            c.is_whitespace() || c.is_control() || !super::xml::allowed(c)
        }
    }) {
        return Err(format!(
            "host name contains {}",
            if c.is_whitespace() {
                "white space".to_string()
            } else {
                format!("the character {:?}", c)
            }
        ));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("host name has an empty label".into());
        }
        if label.chars().count() > MAX_LABEL {
            return Err(format!("host label longer than {MAX_LABEL} characters"));
        }
    }
    Ok(s)
}

/// One hash, lower-cased, checked for the length its algorithm needs and for hex digits.
pub fn normalise_hash(name: &str, raw: &str) -> Result<String, String> {
    let want = match name {
        "MD5" => 32,
        "SHA1" => 40,
        _ => 64,
    };
    let s = raw.trim().to_ascii_lowercase();
    if s.len() != want {
        return Err(format!(
            "{name} hash has {} characters, expected {want}",
            s.chars().count()
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{name} hash has non-hex characters"));
    }
    Ok(s)
}

/// Hashes from the three File fields; a present (non-blank) but malformed hash makes the whole
/// File invalid, so a half-broken indicator never reaches Tanium looking complete.
pub fn hashes_from_fields(
    md5: Option<&str>,
    sha1: Option<&str>,
    sha256: Option<&str>,
) -> Result<Hashes, String> {
    let mut h = Hashes::default();
    for (name, v) in [("MD5", md5), ("SHA1", sha1), ("SHA256", sha256)] {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            h.set(name, normalise_hash(name, v)?)?;
        }
    }
    if h.key().is_none() {
        return Err("file has no hash".into());
    }
    Ok(h)
}

/// Hashes from a TC File summary (`MD5 : SHA1 : SHA256`, any subset, any order): each part is
/// classified by its length; an unknown length, a non-hex part or a repeated kind is an error.
pub fn hashes_from_summary(summary: &str) -> Result<Hashes, String> {
    let mut h = Hashes::default();
    for part in summary.split(':').map(str::trim).filter(|p| !p.is_empty()) {
        let name = match part.len() {
            32 => "MD5",
            40 => "SHA1",
            64 => "SHA256",
            n => return Err(format!("hash has {n} characters, expected 32, 40 or 64")),
        };
        h.set(name, normalise_hash(name, part)?)?;
    }
    if h.key().is_none() {
        return Err("file has no hash".into());
    }
    Ok(h)
}

/// The identity for an already-normalised value.
pub fn identity(owner: &str, kind: IndicatorType, normalised: &str) -> Identity {
    let mut d = Sha256::new();
    d.update(owner.as_bytes());
    d.update([0]);
    d.update(kind.as_str().as_bytes());
    d.update([0]);
    d.update(normalised.as_bytes());
    uuid_from(&d.finalize())
}

/// A second deterministic UUID derived from an identity (OpenIOC Indicator / IndicatorItem ids).
pub fn derived(identity: Identity, label: &str) -> String {
    derived_from(&identity.to_string(), label)
}

/// A deterministic UUID derived from any text (a group document's root id, say) and a label.
pub fn derived_from(seed: &str, label: &str) -> String {
    let mut d = Sha256::new();
    d.update(seed.as_bytes());
    d.update([0]);
    d.update(label.as_bytes());
    uuid_from(&d.finalize()).to_string()
}

fn uuid_from(digest: &[u8]) -> Identity {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    Identity(u128::from_be_bytes(b))
}

/// The normalised value that keys an identity: canonical IP, lower-case host, or (File) the
/// first present hash of a TC summary.
pub fn key_of(kind: IndicatorType, summary_or_value: &str) -> Result<String, String> {
    Ok(match kind {
        IndicatorType::Address => normalise_ip(summary_or_value)?.to_string(),
        IndicatorType::Host => normalise_host(summary_or_value)?,
        IndicatorType::File => hashes_from_summary(summary_or_value)?
            .key()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Identity of (owner, type, summary): what `render` would give the same indicator. Works on
/// TC's deleted-indicator records too (File summaries are `HASH : HASH : HASH`).
pub fn identity_of(
    owner: &str,
    kind: IndicatorType,
    summary_or_value: &str,
) -> Result<Identity, String> {
    Ok(identity(owner, kind, &key_of(kind, summary_or_value)?))
}

/// `s` as one of our identities (lower-cased), when it is a version-8 UUID, optionally after a
/// namespace prefix (`tctr:`) and `Package-` / `indicator-`.
fn our_uuid(s: &str) -> Option<Identity> {
    let s = s.trim();
    let s = s.rsplit(':').next().unwrap_or(s);
    let lower = s.to_ascii_lowercase();
    let u = lower
        .strip_prefix("package-")
        .or_else(|| lower.strip_prefix("indicator-"))
        .unwrap_or(&lower);
    let b = u.as_bytes();
    let shape = b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if !(shape && b[14] == b'8' && matches!(b[19], b'8' | b'9' | b'a' | b'b')) {
        return None;
    }
    let hex: String = u.chars().filter(|c| *c != '-').collect();
    u128::from_str_radix(&hex, 16).ok().map(Identity)
}

/// One of our identities written as a UUID (optionally after `tctr:indicator-` and the like).
pub fn parse_identity(s: &str) -> Option<Identity> {
    our_uuid(s)
}

/// The (identity, rev) of the last well-formed marker in `text`. Newlines are not required:
/// Tanium may fold the description onto one line.
fn marker(text: &str) -> Option<(Identity, Option<Rev>)> {
    text.rmatch_indices(MARKER).find_map(|(i, _)| {
        let mut words = text[i + MARKER.len()..].split_whitespace();
        // An adopted document's name carries the marker in parentheses.
        let id = our_uuid(words.next()?.trim_end_matches(')'))?;
        let rev = match (words.next(), words.next()) {
            (Some("rev"), Some(r)) => {
                let r: String = r.chars().take(16).collect();
                (r.len() == 16)
                    .then(|| u64::from_str_radix(&r, 16).ok())
                    .flatten()
                    .map(Rev)
            }
            _ => None,
        };
        Some((id, rev))
    })
}

/// Our identity in a Tanium listing row: from `intrinsicId` when it is the package id, the
/// indicator id or the bare UUID; else from the description marker; else from a marker in the
/// name. `None` for documents that are not ours.
pub fn identity_from_doc(
    intrinsic_id: Option<&str>,
    name: &str,
    description: Option<&str>,
) -> Option<Identity> {
    intrinsic_id
        .and_then(our_uuid)
        .or_else(|| description.and_then(marker).map(|m| m.0))
        .or_else(|| marker(name).map(|m| m.0))
}

/// The rev in a listing row's description marker, to tell whether the document is current.
pub fn rev_from_doc(description: Option<&str>) -> Option<Rev> {
    description.and_then(marker).and_then(|m| m.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_a_version_8_uuid() {
        let id = identity("Demo Org", IndicatorType::Address, "203.0.113.7");
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "8");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(our_uuid(&id.to_string()), Some(id));
        assert_eq!(
            our_uuid(&format!("tctr:Package-{}", id.to_string().to_uppercase())),
            Some(id)
        );
    }

    #[test]
    fn foreign_uuids_are_not_ours() {
        assert_eq!(our_uuid("9f1c0c1e-1b2a-4c3d-8e4f-0123456789ab"), None); // v4
        assert_eq!(our_uuid("not-a-uuid"), None);
    }

    #[test]
    fn marker_takes_the_last_well_formed_one() {
        let id = identity("o", IndicatorType::Host, "a.b");
        let other = identity("o", IndicatorType::Host, "c.d");
        let d = format!("tc-sync: {other} rev 0123456789abcdef\nctx tc-sync: {id} rev ABCDEF0123456789 tc-sync: junk");
        assert_eq!(marker(&d), Some((id, Some(Rev(0xabcdef0123456789)))));
    }
}
