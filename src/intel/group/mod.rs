//! Grouped documents: many indicators in one intel document, and that document read back. Pure.
//!
//! A group holds the indicators of one bucket: one label set (the labels its document carries)
//! and one prefix of the identity hash. Each indicator is a [`Member`]: its identity, its
//! observable and a one-line provenance (type and value, owner, TC id, rating, confidence,
//! score, tags, last modified, link) whose marker `tc-sync: <identity> rev <rev>` says which
//! indicator and which content it is, so an alert on one item can be traced to TC.
//!
//! STIX: one package; the first `stix:Indicator` (id `tctr:indicator-group-…`) carries the
//! document's name and description (Tanium names a STIX document after its first indicator's
//! title, and may take its id as the intrinsic id), then one `stix:Indicator` per member, id
//! `tctr:indicator-<identity>`, as a single document would have it. OpenIOC: one `OR` of the
//! members' items (ids derived from each identity, as in single documents), each item's
//! provenance in a `parameters/param` that points at it.
//!
//! The name and description end with the marker `tc-group: <key> n <count> rev <digest>`: the
//! listing shows the name, so the bucket, its size and its content fingerprint are known
//! without reading the document. The digest covers the format, the key and every member's
//! identity and rev; the document is a function of those, so equal digests mean equal
//! documents.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::tc::model::{Indicator, IndicatorType};

mod read;
mod render;

pub use read::{read, ReadGroup};

use super::identity::{self, Identity, Rev, MARKER};
use super::{one_line, Format, Invalid, Observable};

/// The marker that starts the machine-readable part of a group document's name.
pub const GROUP_MARKER: &str = "tc-group:";
/// Most tags a provenance line lists (the rest are counted).
const LINE_TAGS: usize = 10;
/// Deepest prefix a bucket may have: the identity's first 48 bits are pure hash (the UUID
/// version nibble follows), and 2^40 buckets is more than any source needs.
pub const MAX_DEPTH: u8 = 40;

/// Which bucket a group document holds: a label set and a prefix of the identity hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    /// 32 bits of the label set's hash ([`label_set_hash`]).
    pub labels: u32,
    /// How many leading identity bits the bucket fixes (0: all identities).
    pub depth: u8,
    /// Those bits, right-aligned.
    pub bits: u64,
}

impl BucketKey {
    /// The whole identity space of one label set.
    pub fn root(labels: u32) -> BucketKey {
        BucketKey {
            labels,
            depth: 0,
            bits: 0,
        }
    }

    /// The bucket of depth `depth` on `identity`'s path.
    pub fn on_path(labels: u32, identity: u128, depth: u8) -> BucketKey {
        BucketKey {
            labels,
            depth,
            bits: prefix(identity, depth),
        }
    }

    /// Whether `identity` falls in this bucket.
    pub fn covers(&self, identity: u128) -> bool {
        prefix(identity, self.depth) == self.bits
    }

    /// Whether `other` (same label set) lies inside this bucket (or is it).
    pub fn contains(&self, other: &BucketKey) -> bool {
        self.labels == other.labels
            && other.depth >= self.depth
            && other.bits >> (other.depth - self.depth) == self.bits
    }

    /// The two halves, split by the next identity bit.
    pub fn children(&self) -> [BucketKey; 2] {
        let child = |b: u64| BucketKey {
            labels: self.labels,
            depth: self.depth + 1,
            bits: (self.bits << 1) | b,
        };
        [child(0), child(1)]
    }

    /// The bucket one level up (None for the root).
    pub fn parent(&self) -> Option<BucketKey> {
        (self.depth > 0).then(|| BucketKey {
            labels: self.labels,
            depth: self.depth - 1,
            bits: self.bits >> 1,
        })
    }

    fn bit_string(&self) -> String {
        (0..self.depth)
            .rev()
            .map(|i| if (self.bits >> i) & 1 == 1 { '1' } else { '0' })
            .collect()
    }

    /// The root id of its document: `tctr:Group-…` (STIX) / `tc-group-…` (OpenIOC).
    pub fn root_id(&self, format: Format) -> String {
        match format {
            Format::Stix => format!("{}:Group-{}", super::stix::NS_PREFIX, self.id_part()),
            Format::OpenIoc => format!("tc-group-{}", self.id_part()),
        }
    }

    fn id_part(&self) -> String {
        format!("{:08x}-b{}", self.labels, self.bit_string())
    }

    /// Reads the key from a root id or indicator id of ours (`…group-<hex8>-b<bits>`).
    pub fn from_id(id: &str) -> Option<BucketKey> {
        let lower = id.trim().to_ascii_lowercase();
        let ours = ["tctr:group-", "tctr:indicator-group-", "tc-group-"];
        if !ours.iter().any(|p| lower.starts_with(p)) {
            return None;
        }
        let at = lower.rfind("group-")?;
        let rest = &lower[at + "group-".len()..];
        let (labels, bits) = rest.split_once("-b")?;
        parse_key(labels, bits)
    }
}

impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}/{}*", self.labels, self.bit_string())
    }
}

fn parse_key(labels: &str, bits: &str) -> Option<BucketKey> {
    if labels.len() != 8 || bits.len() > usize::from(MAX_DEPTH) {
        return None;
    }
    let labels = u32::from_str_radix(labels, 16).ok()?;
    let mut value = 0u64;
    for c in bits.chars() {
        value = (value << 1)
            | match c {
                '0' => 0,
                '1' => 1,
                _ => return None,
            };
    }
    Some(BucketKey {
        labels,
        depth: bits.len() as u8,
        bits: value,
    })
}

/// The first `depth` bits of an identity, right-aligned.
pub fn prefix(identity: u128, depth: u8) -> u64 {
    if depth == 0 {
        return 0;
    }
    (identity >> (128 - u32::from(depth))) as u64
}

/// 32 bits naming a label set (names compared without case, order and repeats ignored).
pub fn label_set_hash(names: &[String]) -> u32 {
    let mut keys: Vec<String> = names.iter().map(|n| crate::label_rules::key(n)).collect();
    keys.sort();
    keys.dedup();
    let mut d = Sha256::new();
    for k in &keys {
        d.update(k.as_bytes());
        d.update([0]);
    }
    let h = d.finalize();
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// What a group document's name or description marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub key: BucketKey,
    pub count: u64,
    pub digest: Rev,
}

/// The last well-formed group marker in `text` (a listing row's name, or a description).
pub fn marker(text: &str) -> Option<Marker> {
    text.rmatch_indices(GROUP_MARKER).find_map(|(i, _)| {
        let mut w = text[i + GROUP_MARKER.len()..].split_whitespace();
        let key = w.next()?;
        let (labels, bits) = key.split_once('/')?;
        let key = parse_key(labels, bits.strip_suffix('*')?)?;
        let (Some("n"), Some(count), Some("rev"), Some(digest)) =
            (w.next(), w.next(), w.next(), w.next())
        else {
            return None;
        };
        let digest: String = digest.chars().take(16).collect();
        Some(Marker {
            key,
            count: count.parse().ok()?,
            digest: Rev(u64::from_str_radix(&digest, 16)
                .ok()
                .filter(|_| digest.len() == 16)?),
        })
    })
}

/// One indicator in a group document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub identity: Identity,
    pub kind: IndicatorType,
    pub(crate) observable: Observable,
    /// The provenance line (one line, no marker).
    pub line: String,
    /// Fingerprint of the observable and the line.
    pub rev: Rev,
}

impl Member {
    fn new(identity: Identity, observable: Observable, line: String) -> Member {
        let kind = match observable {
            Observable::Address(_) => IndicatorType::Address,
            Observable::Host(_) => IndicatorType::Host,
            Observable::File(_) => IndicatorType::File,
        };
        let value = value_text(&observable);
        let mut d = Sha256::new();
        for part in [
            identity.to_string().as_str(),
            kind.as_str(),
            value.as_str(),
            line.as_str(),
        ] {
            d.update(part.as_bytes());
            d.update([0]);
        }
        let h = d.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        Member {
            identity,
            kind,
            observable,
            line,
            rev: Rev(u64::from_be_bytes(first)),
        }
    }

    /// `ThreatConnect <Type> <value>`, as a single document would be named.
    pub fn title(&self) -> String {
        format!("ThreatConnect {} {}", self.kind.as_str(), self.key())
    }

    /// The value the identity is derived from.
    pub fn key(&self) -> String {
        match &self.observable {
            Observable::File(h) => h.key().unwrap_or_default().to_string(),
            o => value_text(o),
        }
    }

    /// The value for logs and plans (a File's hashes joined).
    pub fn value(&self) -> String {
        value_text(&self.observable)
    }

    /// The last-modified time the provenance line names.
    pub fn timestamp(&self) -> Option<&str> {
        self.line
            .split("; ")
            .find_map(|f| f.strip_prefix("modified "))
    }

    /// The ThreatConnect id the provenance line names (`id N`).
    pub fn tc_id(&self) -> Option<i64> {
        self.line
            .split("; ")
            .find_map(|f| f.strip_prefix("id ")?.trim().parse().ok())
    }

    /// The values an endpoint's match may report for this member, as [`match_value_forms`]
    /// writes them: its address, its host name, or each of its file's hashes.
    pub fn match_values(&self) -> Vec<String> {
        match &self.observable {
            Observable::Address(ip) => vec![ip.to_string()],
            Observable::Host(h) => vec![h.clone()],
            Observable::File(hashes) => hashes
                .present()
                .iter()
                .map(|(_, h)| h.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The ids of the elements that stand for this member in its document, as identities:
    /// its own (STIX ids end with it) and its OpenIOC items' (derived from it).
    pub fn element_identities(&self) -> Vec<Identity> {
        let items = super::openioc::items_of(&self.observable).len();
        std::iter::once(self.identity)
            .chain((0..items).filter_map(|n| {
                identity::parse_identity(&identity::derived(self.identity, &format!("item-{n}")))
            }))
            .collect()
    }

    fn described(&self) -> String {
        format!("{} {MARKER} {} rev {}", self.line, self.identity, self.rev)
    }

    /// One line of text that [`Member::from_line`] reads back (tabs never occur in a field).
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}",
            self.identity,
            self.kind.as_str(),
            self.value(),
            self.line
        )
    }

    pub fn from_line(s: &str) -> Option<Member> {
        let mut f = s.splitn(4, '\t');
        let (id, kind, value, line) = (f.next()?, f.next()?, f.next()?, f.next()?);
        let identity = identity::parse_identity(id)?;
        let kind = IndicatorType::parse(kind)?;
        let observable = observable_from(kind, value)?;
        Some(Member::new(identity, observable, line.to_string()))
    }
}

/// The forms a value an endpoint matched may take among [`Member::match_values`]: as an
/// address, as a host name, and lower-cased (a hash).
pub fn match_value_forms(value: &str) -> Vec<String> {
    let v = value.trim();
    let mut out = Vec::with_capacity(3);
    if let Ok(ip) = identity::normalise_ip(v) {
        out.push(ip.to_string());
    }
    if let Ok(h) = identity::normalise_host(v) {
        out.push(h);
    }
    out.push(v.to_ascii_lowercase());
    out
}

/// The identity an element id of a document names when it ends with one of ours (STIX ids
/// `tctr:indicator-<uuid>`, `tctr:Observable-<uuid>`, a bare OpenIOC item id).
pub fn element_identity(id: &str) -> Option<Identity> {
    let id = id.trim();
    let tail = id.get(id.len().checked_sub(36)?..)?;
    identity::parse_identity(tail)
}

fn value_text(o: &Observable) -> String {
    match o {
        Observable::Address(ip) => ip.to_string(),
        Observable::Host(h) => h.clone(),
        Observable::File(h) => h.joined(),
    }
}

fn observable_from(kind: IndicatorType, value: &str) -> Option<Observable> {
    Some(match kind {
        IndicatorType::Address => Observable::Address(identity::normalise_ip(value).ok()?),
        IndicatorType::Host => Observable::Host(identity::normalise_host(value).ok()?),
        IndicatorType::File => Observable::File(identity::hashes_from_summary(value).ok()?),
    })
}

/// One indicator as a member of a group document, or why it cannot be sent.
pub fn member(ind: &Indicator) -> Result<Member, Invalid> {
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
            super::xml::for_log(&ind.type_name, 40)
        ))
    })?;
    let (observable, key, _) = super::observable_of(ind, kind).map_err(invalid)?;
    let id = identity::identity(&ind.owner_name, kind, &key);
    let line = provenance(ind, kind, &key);
    Ok(Member::new(id, observable, line))
}

/// `Host evil.example; owner Demo Org; id 12; rating 3 / 5; confidence 60 / 100; ThreatAssess
/// 500 / 1000; tags APT, C2; modified 2026-11-01T00:00:00Z; <link>` (absent fields left out).
fn provenance(ind: &Indicator, kind: IndicatorType, key: &str) -> String {
    let mut f = vec![
        format!("{} {key}", kind.as_str()),
        format!("owner {}", one_line(&ind.owner_name).replace(';', ",")),
        format!("id {}", ind.id),
    ];
    if let Some(r) = ind.rating {
        f.push(format!("rating {r} / 5"));
    }
    if let Some(c) = ind.confidence {
        f.push(format!("confidence {c} / 100"));
    }
    if let Some(s) = ind.threat_assess_score.filter(|_| !ind.leave_out_observed) {
        f.push(format!("ThreatAssess {s} / 1000"));
    }
    let mut tags: Vec<String> = ind
        .tags
        .iter()
        .map(|t| super::xml::truncate(&one_line(t).replace(';', ","), 60).0)
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    if !tags.is_empty() {
        let more = tags.len().saturating_sub(LINE_TAGS);
        tags.truncate(LINE_TAGS);
        let mut t = format!("tags {}", tags.join(", "));
        if more > 0 {
            t.push_str(&format!(" (and {more} more)"));
        }
        f.push(t);
    }
    let shown = (!ind.leave_out_observed)
        .then(|| super::canonical_time(&ind.last_modified))
        .flatten();
    if let Some(ts) = shown {
        f.push(format!("modified {ts}"));
    }
    if let Some(l) = ind.web_link.as_deref().map(one_line) {
        if !l.is_empty() {
            f.push(l.replace(';', "%3B"));
        }
    }
    one_line(&f.join("; ")).replace('\t', " ")
}

/// The fingerprint of a group: its format, key and members (any order).
pub fn digest(format: Format, key: &BucketKey, members: &[(Identity, Rev)]) -> Rev {
    let mut sorted = members.to_vec();
    sorted.sort_unstable_by_key(|m| m.0);
    let mut d = Sha256::new();
    d.update(format.to_string().as_bytes());
    d.update(key.to_string().as_bytes());
    for (id, rev) in &sorted {
        d.update(id.as_u128().to_be_bytes());
        d.update(rev.0.to_be_bytes());
    }
    let h = d.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    Rev(u64::from_be_bytes(first))
}

/// One rendered group document.
#[derive(Debug, Clone)]
pub struct GroupDoc {
    pub key: BucketKey,
    pub name: String,
    pub body: String,
    pub digest: Rev,
    pub count: u64,
    pub format: Format,
    pub file_name: String,
}

impl GroupDoc {
    pub fn type_header(&self) -> &'static str {
        match self.format {
            Format::Stix => "stix",
            Format::OpenIoc => "openioc",
        }
    }
}

/// Renders the group `key` of `members` (sorted here by identity) for the source `source`;
/// `labels` are the label names its document carries, for the description.
pub fn render(
    format: Format,
    key: &BucketKey,
    members: &mut [Member],
    source: &str,
    labels: &[String],
) -> GroupDoc {
    members.sort_unstable_by_key(|m| m.identity);
    let pairs: Vec<(Identity, Rev)> = members.iter().map(|m| (m.identity, m.rev)).collect();
    let digest = digest(format, key, &pairs);
    let count = members.len() as u64;
    let mark = format!("{GROUP_MARKER} {key} n {count} rev {digest}");
    let name = format!(
        "ThreatConnect to {}: group {key}, {count} indicators ({mark})",
        one_line(source)
    );
    let label_text = if labels.is_empty() {
        "none".to_string()
    } else {
        labels.join(", ")
    };
    let description = format!(
        "{name}\nLabels: {label_text}\nEach indicator is one item, whose provenance names its ThreatConnect owner, id and link.\n{mark}"
    );
    let body = match format {
        Format::Stix => render::stix(key, members, &name, &description),
        Format::OpenIoc => render::openioc(key, members, &name, &description),
    };
    let ext = match format {
        Format::Stix => "stix",
        Format::OpenIoc => "ioc",
    };
    GroupDoc {
        key: *key,
        file_name: format!("{}.{ext}", key.root_id(Format::OpenIoc)),
        name,
        body,
        digest,
        count,
        format,
    }
}

#[cfg(test)]
mod tests;
