//! Pure rendering: one TC indicator -> one intel document (STIX 1.2 or OpenIOC 1.1). No I/O here.
//!
//! Every document carries a deterministic identity (see [`identity`]) as its root id, a readable
//! name (`ThreatConnect Address 203.0.113.7`) and a description with the TC context that ends
//! with the marker line `tc-sync: <identity> rev <rev>`. The `rev` fingerprints everything
//! rendered (the document is rendered once with a placeholder rev, hashed, then rendered with
//! the real rev), so "has this indicator changed?" is a string compare.
//!
//! Determinism: the output depends only on the indicator. Tags are trimmed, de-duplicated and
//! sorted (TC's order is not stable), at most [`MAX_TAGS`] are listed; the TC description is
//! cut to [`MAX_DESCRIPTION`] characters; timestamps come from the indicator's `lastModified`,
//! never from the clock. While detections are reported (`leave_out_observed`), the timestamps
//! and the ThreatAssess score are left out: an observation may move them.

pub mod foreign;
pub mod group;
pub mod identity;
pub mod openioc;
pub mod stix;
pub mod xml;

use std::fmt;
use std::net::IpAddr;

use md5::{Digest, Md5};
use sha2::Sha256;

use crate::tc::model::{Indicator, IndicatorType};
pub use identity::{identity_from_doc, identity_of, rev_from_doc, Hashes, Identity, Rev};

/// The intel document format sent to Tanium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Format {
    /// STIX 1.2 with CybOX 2.1 observables (default).
    #[default]
    #[serde(rename = "STIX")]
    Stix,
    /// OpenIOC 1.1.
    #[serde(rename = "OpenIOC")]
    OpenIoc,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Stix => "STIX",
            Format::OpenIoc => "OpenIOC",
        })
    }
}

/// Longest TC description copied into a document, in characters.
pub const MAX_DESCRIPTION: usize = 1000;
/// Most tags listed in a document's description (the rest are counted).
pub const MAX_TAGS: usize = 50;
/// Longest tag listed, in characters.
const MAX_TAG: usize = 100;
/// Used in place of the rev while fingerprinting; not hex, so it never equals a real rev.
const REV_PLACEHOLDER: &str = "rev-placeholder!";

/// One rendered intel document, ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Deterministic id (lower-case UUID) from (owner, type, normalised value); the root id.
    pub identity: Identity,
    /// Indicator type.
    pub kind: IndicatorType,
    /// The normalised value the identity is derived from (a File's first hash).
    pub key: String,
    /// Normalised value for logs and plan output (File: present hashes joined by " : ").
    pub value: String,
    /// TC owner name.
    pub owner: String,
    /// Readable name, e.g. `ThreatConnect Address 203.0.113.7` (Tanium shows it as the intel name).
    pub name: String,
    /// Document format.
    pub format: Format,
    /// The UTF-8 XML document.
    pub body: String,
    /// 16 hex chars fingerprinting everything rendered; also written in the description marker.
    pub rev: Rev,
    /// The description the document carries (TC context, then the marker line).
    pub description: String,
    /// File name for the upload's Content-Disposition (`<identity>.stix` / `<identity>.ioc`).
    pub file_name: String,
}

impl Package {
    /// MD5 of the body, lower-case hex: comparable with the md5 Tanium reports for a document.
    pub fn md5_hex(&self) -> String {
        hex(&Md5::digest(self.body.as_bytes()))
    }

    /// The first 64 bits of the body's MD5: enough to tell content apart, and small to keep.
    pub fn md5_prefix(&self) -> u64 {
        let d = Md5::digest(self.body.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        u64::from_be_bytes(first)
    }

    /// The `type` header value Tanium expects for this document (`stix` / `openioc`).
    pub fn type_header(&self) -> &'static str {
        match self.format {
            Format::Stix => "stix",
            Format::OpenIoc => "openioc",
        }
    }

    /// Content-Type of the body.
    pub fn content_type(&self) -> &'static str {
        "application/xml"
    }
}

/// An indicator that cannot be sent: skipped with a warning that names it, and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// TC id.
    pub indicator_id: i64,
    /// TC owner name.
    pub owner: String,
    /// TC type name as received.
    pub type_name: String,
    /// TC summary as received.
    pub summary: String,
    /// Why it was skipped.
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped {} '{}' (id {}, owner '{}'): {}",
            xml::for_log(&self.type_name, 40),
            xml::for_log(&self.summary, 200),
            self.indicator_id,
            xml::for_log(&self.owner, 100),
            self.reason
        )
    }
}

impl std::error::Error for Invalid {}

/// The observable a document describes, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observable {
    Address(IpAddr),
    Host(String),
    File(Hashes),
}

/// Everything a renderer needs, prepared once; strings are raw (renderers escape them).
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    pub identity: Identity,
    /// The root id to write instead of the identity's: an adopted document keeps the id it
    /// had, since Tanium replaces in place only when the root id stays.
    pub root: Option<String>,
    pub name: String,
    /// Description without the marker line (renderers append it with the rev).
    pub context: String,
    pub observable: Observable,
    /// `lastModified` as `YYYY-MM-DDTHH:MM:SSZ`, when it parses.
    pub timestamp: Option<String>,
    pub web_link: Option<String>,
    pub owner: String,
}

impl Doc {
    /// The full description: context, then the marker line.
    pub fn description(&self, rev: &str) -> String {
        format!(
            "{}\n{} {} rev {}",
            self.context,
            identity::MARKER,
            self.identity,
            rev
        )
    }
}

/// The observable of an indicator of `kind`, its identity key and its value for logs; the
/// type's own field (ip, hostName, hashes) wins over the summary.
fn observable_of(
    ind: &Indicator,
    kind: IndicatorType,
) -> Result<(Observable, String, String), String> {
    let pick = |field: &Option<String>| {
        field
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or(&ind.summary)
            .to_string()
    };
    Ok(match kind {
        IndicatorType::Address => {
            let ip = identity::normalise_ip(&pick(&ind.ip))?;
            (Observable::Address(ip), ip.to_string(), ip.to_string())
        }
        IndicatorType::Host => {
            let h = identity::normalise_host(&pick(&ind.host_name))?;
            (Observable::Host(h.clone()), h.clone(), h)
        }
        IndicatorType::File => {
            let fields = [&ind.md5, &ind.sha1, &ind.sha256];
            let hashes = if fields
                .iter()
                .any(|f| f.as_deref().is_some_and(|v| !v.trim().is_empty()))
            {
                identity::hashes_from_fields(
                    ind.md5.as_deref(),
                    ind.sha1.as_deref(),
                    ind.sha256.as_deref(),
                )
            } else {
                identity::hashes_from_summary(&ind.summary)
            }?;
            let key = hashes.key().unwrap_or_default().to_string();
            let value = hashes.joined();
            (Observable::File(hashes), key, value)
        }
    })
}

/// Renders one indicator in `format`, or says why it cannot be sent.
pub fn render(ind: &Indicator, format: Format) -> Result<Package, Invalid> {
    render_doc(ind, format, None)
}

/// Renders one indicator for a document this job adopts: the document keeps its root id (so
/// Tanium replaces it in place), and its name carries the identity marker, since the listing
/// shows the root id and the name but no description.
pub fn render_adopted(ind: &Indicator, format: Format, root: &str) -> Result<Package, Invalid> {
    render_doc(ind, format, Some(root))
}

fn render_doc(ind: &Indicator, format: Format, root: Option<&str>) -> Result<Package, Invalid> {
    let invalid = |reason: String| Invalid {
        indicator_id: ind.id,
        owner: ind.owner_name.clone(),
        type_name: ind.type_name.clone(),
        summary: ind.summary.clone(),
        reason,
    };
    let kind = ind.kind().ok_or_else(|| {
        invalid(format!(
            "type '{}' is not sent to Tanium (only Address, File and Host)",
            xml::for_log(&ind.type_name, 40)
        ))
    })?;
    let (observable, key, value) = observable_of(ind, kind).map_err(invalid)?;
    let id = identity::identity(&ind.owner_name, kind, &key);
    let name = format!("ThreatConnect {} {}", kind.as_str(), key);
    let timestamp = if ind.leave_out_observed {
        None
    } else {
        canonical_time(&ind.last_modified)
    };
    let name = match root {
        Some(_) => format!("{name} ({} {id})", identity::MARKER),
        None => name,
    };
    let doc = Doc {
        context: context(ind, &name, timestamp.as_deref()),
        identity: id,
        root: root.map(str::to_string),
        name,
        observable,
        timestamp,
        web_link: ind
            .web_link
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string),
        owner: ind.owner_name.clone(),
    };
    let (write, ext): (fn(&Doc, &str) -> String, &str) = match format {
        Format::Stix => (stix::write, "stix"),
        Format::OpenIoc => (openioc::write, "ioc"),
    };
    let digest = Sha256::digest(write(&doc, REV_PLACEHOLDER).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let rev = Rev(u64::from_be_bytes(first));
    let body = write(&doc, &rev.to_string());
    Ok(Package {
        description: doc.description(&rev.to_string()),
        file_name: format!("{}.{ext}", doc.identity),
        identity: doc.identity,
        kind,
        key,
        value,
        owner: doc.owner,
        name: doc.name,
        format,
        body,
        rev,
    })
}

/// The ThreatConnect id a single document names in its `ThreatConnect id: N` context line
/// (its description, or the whole document, which carries the description); None when it
/// names none, or two different ones.
pub fn indicator_id_in(text: &str) -> Option<i64> {
    const LINE: &str = "ThreatConnect id: ";
    let mut found = None;
    for (at, _) in text.match_indices(LINE) {
        let digits: String = text[at + LINE.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let id: i64 = digits.parse().ok()?;
        if found.is_some_and(|f| f != id) {
            return None;
        }
        found = Some(id);
    }
    found
}

/// The first 64 bits of an MD5 Tanium reports in hex (None when it is not one).
pub fn md5_prefix(hex: &str) -> Option<u64> {
    if hex.len() != 32 {
        return None;
    }
    u64::from_str_radix(&hex[..16], 16).ok()
}

/// What differs between two document descriptions, by context line (`Rating`, `Tags`, ...), in
/// lower case for a plan line; the marker line is not context. Empty when the context is the
/// same (the difference, if any, is elsewhere in the document).
pub fn changed_fields(old: &str, new: &str) -> Vec<String> {
    fn fields(d: &str) -> Vec<(&str, &str)> {
        d.lines()
            .filter(|l| !l.trim_start().starts_with(identity::MARKER))
            .filter_map(|l| l.split_once(": "))
            .collect()
    }
    let (old, new) = (fields(old), fields(new));
    let mut keys: Vec<&str> = new.iter().chain(old.iter()).map(|(k, _)| *k).collect();
    keys.dedup();
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        let value =
            |f: &[(&str, &str)]| f.iter().find(|(x, _)| *x == k).map(|(_, v)| v.to_string());
        let key = k.to_lowercase();
        if value(&old) != value(&new) && !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// The TC context as plain text lines (absent fields are left out).
fn context(ind: &Indicator, name: &str, timestamp: Option<&str>) -> String {
    let mut lines = vec![name.to_string()];
    lines.push(format!("Owner: {}", one_line(&ind.owner_name)));
    lines.push(format!("ThreatConnect id: {}", ind.id));
    if let Some(r) = ind.rating {
        lines.push(format!("Rating: {r} / 5"));
    }
    if let Some(c) = ind.confidence {
        lines.push(format!("Confidence: {c} / 100"));
    }
    if let Some(s) = ind.threat_assess_score.filter(|_| !ind.leave_out_observed) {
        lines.push(format!("ThreatAssess score: {s} / 1000"));
    }
    let mut tags: Vec<String> = ind
        .tags
        .iter()
        .map(|t| xml::truncate(&one_line(t), MAX_TAG).0)
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    if !tags.is_empty() {
        let more = tags.len().saturating_sub(MAX_TAGS);
        tags.truncate(MAX_TAGS);
        let mut line = format!("Tags: {}", tags.join(", "));
        if more > 0 {
            line.push_str(&format!(" (and {more} more)"));
        }
        lines.push(line);
    }
    let modified = match timestamp {
        Some(t) => t.to_string(),
        None if ind.leave_out_observed => String::new(),
        None => one_line(&ind.last_modified),
    };
    if !modified.is_empty() {
        lines.push(format!("Last modified: {modified}"));
    }
    if let Some(l) = ind.web_link.as_deref().map(one_line) {
        if !l.is_empty() {
            lines.push(format!("Link: {l}"));
        }
    }
    if let Some(d) = ind.description.as_deref() {
        let d = xml::clean(d);
        let d = d.trim();
        if !d.is_empty() {
            lines.push(format!(
                "Description: {}",
                xml::truncate(d, MAX_DESCRIPTION).0
            ));
        }
    }
    lines.join("\n")
}

/// A field that belongs on one line: forbidden characters dropped, white space runs folded.
pub(crate) fn one_line(s: &str) -> String {
    xml::clean(s)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// TC's `lastModified` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds), when it parses.
pub(crate) fn canonical_time(raw: &str) -> Option<String> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let raw = raw.trim();
    let t = time::OffsetDateTime::parse(raw, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(raw, &Iso8601::DEFAULT))
        .ok()?
        .to_offset(time::UtcOffset::UTC);
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_name_the_context_lines_that_differ() {
        let old =
            "ThreatConnect Host a.example\nOwner: O\nRating: 3 / 5\nTags: APT\ntc-sync: x rev 1";
        let new = "ThreatConnect Host a.example\nOwner: O\nRating: 4 / 5\nTags: APT, C2\nConfidence: 50 / 100\ntc-sync: x rev 2";
        assert_eq!(
            changed_fields(old, new),
            vec!["rating", "tags", "confidence"]
        );
        assert!(changed_fields(old, old).is_empty());
    }

    #[test]
    fn a_document_names_its_tc_id_once_and_can_leave_out_what_an_observation_moves() {
        let mut ind = Indicator {
            id: 12,
            owner_name: "Demo Org".into(),
            type_name: "Host".into(),
            summary: "evil.example".into(),
            last_modified: "2026-11-01T08:00:00Z".into(),
            threat_assess_score: Some(412),
            ..Indicator::default()
        };
        for format in [Format::Stix, Format::OpenIoc] {
            let shown = render(&ind, format).unwrap();
            assert_eq!(indicator_id_in(&shown.description), Some(12));
            assert_eq!(indicator_id_in(&shown.body), Some(12));
            assert!(shown.body.contains("2026-11-01T08:00:00Z") && shown.body.contains("412"));
            ind.leave_out_observed = true;
            let hidden = render(&ind, format).unwrap();
            assert!(!hidden.body.contains("2026-11-01"), "{}", hidden.body);
            assert!(!hidden.body.contains("412"), "{}", hidden.body);
            // An observation that moves lastModified and the score changes nothing in the
            // document, single or grouped.
            let mut moved = ind.clone();
            moved.last_modified = "2026-11-28T12:00:00Z".into();
            moved.threat_assess_score = Some(530);
            assert_eq!(render(&moved, format).unwrap().body, hidden.body);
            let (a, b) = (group::member(&ind).unwrap(), group::member(&moved).unwrap());
            assert_eq!((a.timestamp(), &a.line, a.rev), (None, &b.line, b.rev));
            ind.leave_out_observed = false;
        }
        assert_eq!(
            indicator_id_in("ThreatConnect id: 3 … ThreatConnect id: 4"),
            None
        );
        assert_eq!(indicator_id_in("ThreatConnect id: x"), None);
        assert_eq!(indicator_id_in("no id"), None);
    }

    #[test]
    fn canonical_time_accepts_tc_shapes() {
        assert_eq!(
            canonical_time("2021-11-02T14:58:55Z").as_deref(),
            Some("2021-11-02T14:58:55Z")
        );
        assert_eq!(
            canonical_time("2021-11-02T16:58:55.123+02:00").as_deref(),
            Some("2021-11-02T14:58:55Z")
        );
        assert_eq!(
            canonical_time("2021-11-02T16:58:55+0200").as_deref(),
            Some("2021-11-02T14:58:55Z")
        );
        assert_eq!(canonical_time("yesterday"), None);
        assert_eq!(canonical_time(""), None);
    }
}
