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

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use sha2::{Digest, Sha256};

use crate::tc::model::{Indicator, IndicatorType};

use super::identity::{self, derived, Identity, Rev, MARKER};
use super::xml::{attr, text};
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
    let mut keys: Vec<String> = names.iter().map(|n| crate::labels::key(n)).collect();
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
                identity::parse_identity(&derived(self.identity, &format!("item-{n}")))
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
        Format::Stix => stix(key, members, &name, &description),
        Format::OpenIoc => openioc(key, members, &name, &description),
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

fn stix(key: &BucketKey, members: &[Member], name: &str, description: &str) -> String {
    let p = super::stix::NS_PREFIX;
    let mut x = String::with_capacity(1024 + members.len() * 1200);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        r#"<stix:STIX_Package xmlns:stix="http://stix.mitre.org/stix-1" xmlns:indicator="http://stix.mitre.org/Indicator-2" xmlns:stixVocabs="http://stix.mitre.org/default_vocabularies-1" xmlns:cybox="http://cybox.mitre.org/cybox-2" xmlns:cyboxCommon="http://cybox.mitre.org/common-2" xmlns:cyboxVocabs="http://cybox.mitre.org/default_vocabularies-2" xmlns:AddressObj="http://cybox.mitre.org/objects#AddressObject-2" xmlns:DomainNameObj="http://cybox.mitre.org/objects#DomainNameObject-1" xmlns:FileObj="http://cybox.mitre.org/objects#FileObject-2" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:{p}="{}" id="{}" version="1.2">"#,
        super::stix::NS_URI,
        attr(&key.root_id(Format::Stix))
    );
    let (name, description) = (text(name), text(description));
    let _ = writeln!(x, "  <stix:STIX_Header>");
    let _ = writeln!(x, "    <stix:Title>{name}</stix:Title>");
    let _ = writeln!(x, "    <stix:Description>{description}</stix:Description>");
    let _ = writeln!(x, "  </stix:STIX_Header>");
    let _ = writeln!(x, "  <stix:Indicators>");
    let _ = writeln!(
        x,
        r#"    <stix:Indicator xsi:type="indicator:IndicatorType" id="{p}:indicator-group-{}">"#,
        key.id_part()
    );
    let _ = writeln!(x, "      <indicator:Title>{name}</indicator:Title>");
    let _ = writeln!(
        x,
        "      <indicator:Description>{description}</indicator:Description>"
    );
    let _ = writeln!(x, "    </stix:Indicator>");
    for m in members {
        let id = m.identity;
        let timestamp = m
            .timestamp()
            .map(|t| format!(r#" timestamp="{}""#, attr(t)))
            .unwrap_or_default();
        let _ = writeln!(
            x,
            r#"    <stix:Indicator xsi:type="indicator:IndicatorType" id="{p}:indicator-{id}"{timestamp}>"#
        );
        let _ = writeln!(
            x,
            "      <indicator:Title>{}</indicator:Title>",
            text(&m.title())
        );
        let _ = writeln!(
            x,
            r#"      <indicator:Type xsi:type="stixVocabs:IndicatorTypeVocab-1.1">{}</indicator:Type>"#,
            super::stix::indicator_type(&m.observable)
        );
        let _ = writeln!(
            x,
            "      <indicator:Description>{}</indicator:Description>",
            text(&m.described())
        );
        let _ = writeln!(
            x,
            r#"      <indicator:Observable id="{p}:Observable-{id}">"#
        );
        let _ = writeln!(x, r#"        <cybox:Object id="{p}:Object-{id}">"#);
        super::stix::write_properties(&mut x, &m.observable);
        let _ = writeln!(x, "        </cybox:Object>");
        let _ = writeln!(x, "      </indicator:Observable>");
        let _ = writeln!(x, "    </stix:Indicator>");
    }
    let _ = writeln!(x, "  </stix:Indicators>");
    x.push_str("</stix:STIX_Package>\n");
    x
}

fn openioc(key: &BucketKey, members: &[Member], name: &str, description: &str) -> String {
    const NO_DATE: &str = "1970-01-01T00:00:00Z";
    let date = members
        .iter()
        .filter_map(Member::timestamp)
        .max()
        .unwrap_or(NO_DATE)
        .to_string();
    let date = attr(&date);
    let root = key.root_id(Format::OpenIoc);
    let mut x = String::with_capacity(1024 + members.len() * 1200);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        r#"<OpenIOC xmlns="{}" id="{}" last-modified="{date}" published-date="{date}">"#,
        super::openioc::NS,
        attr(&root)
    );
    let _ = writeln!(x, "  <metadata>");
    let _ = writeln!(
        x,
        "    <short_description>{}</short_description>",
        text(name)
    );
    let _ = writeln!(x, "    <description>{}</description>", text(description));
    let _ = writeln!(
        x,
        "    <authored_by>{}</authored_by>",
        text(super::openioc::AUTHOR)
    );
    let _ = writeln!(x, "    <authored_date>{date}</authored_date>");
    let _ = writeln!(x, "    <links/>");
    let _ = writeln!(x, "  </metadata>");
    let _ = writeln!(x, "  <criteria>");
    let _ = writeln!(
        x,
        r#"    <Indicator operator="OR" id="{}">"#,
        identity::derived_from(&root, "indicator")
    );
    let mut params = String::new();
    for m in members {
        let described = text(&m.described());
        for (n, found) in super::openioc::items_of(&m.observable).iter().enumerate() {
            let item = derived(m.identity, &format!("item-{n}"));
            super::openioc::write_item(&mut x, &item, found);
            let _ = writeln!(
                params,
                r#"    <param id="{}" ref-id="{item}" name="comment">"#,
                derived(m.identity, &format!("param-{n}"))
            );
            let _ = writeln!(params, r#"      <value type="string">{described}</value>"#);
            let _ = writeln!(params, "    </param>");
        }
    }
    let _ = writeln!(x, "    </Indicator>");
    let _ = writeln!(x, "  </criteria>");
    if params.is_empty() {
        let _ = writeln!(x, "  <parameters/>");
    } else {
        let _ = writeln!(x, "  <parameters>");
        x.push_str(&params);
        let _ = writeln!(x, "  </parameters>");
    }
    x.push_str("</OpenIOC>\n");
    x
}

/// A group document as read back from Tanium.
#[derive(Debug, Clone)]
pub struct ReadGroup {
    pub key: Option<BucketKey>,
    /// What its own marker says (None: no marker found).
    pub marker: Option<Marker>,
    pub members: Vec<Member>,
}

/// `<provenance> tc-sync: <identity> rev <rev>` -> (identity, line).
fn split_described(s: &str) -> Option<(Identity, String)> {
    let at = s.rfind(MARKER)?;
    let line = one_line(&s[..at]);
    let mut w = s[at + MARKER.len()..].split_whitespace();
    let identity = identity::parse_identity(w.next()?)?;
    Some((identity, line))
}

/// Reads a group document this job wrote (in either format, stored byte for byte or
/// re-serialised); an error says what is wrong, and then nothing in it may be acted on.
pub fn read(xml: &str) -> Result<ReadGroup, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    let texts = |n: roxmltree::Node| -> String {
        n.descendants()
            .filter(|d| d.is_text())
            .filter_map(|d| d.text())
            .collect::<String>()
    };
    let named = |n: &roxmltree::Node, name: &str| n.is_element() && n.tag_name().name() == name;
    let mut members = Vec::new();
    let mut marker_text = String::new();
    match root.tag_name().name() {
        "STIX_Package" => {
            for ind in root.descendants().filter(|n| {
                named(n, "Indicator") && n.parent_element().is_some_and(|p| named(&p, "Indicators"))
            }) {
                let description = ind
                    .children()
                    .find(|c| named(c, "Description"))
                    .map(texts)
                    .unwrap_or_default();
                if ind.attribute("id").is_some_and(|id| id.contains("group-")) {
                    marker_text = description;
                    continue;
                }
                let (identity, line) = split_described(&description)
                    .ok_or("an indicator carries no tc-sync marker")?;
                let observable = stix_observable(ind, &named, &texts)?;
                members.push(Member::new(identity, observable, line));
            }
        }
        "OpenIOC" | "ioc" => {
            marker_text = root
                .descendants()
                .find(|n| named(n, "description"))
                .map(texts)
                .unwrap_or_default();
            let mut items: BTreeMap<String, (String, String)> = BTreeMap::new();
            for item in root.descendants().filter(|n| named(n, "IndicatorItem")) {
                let id = item.attribute("id").unwrap_or("").to_string();
                let search = item
                    .children()
                    .find(|c| named(c, "Context"))
                    .and_then(|c| c.attribute("search"))
                    .unwrap_or("")
                    .to_string();
                let content = item
                    .children()
                    .find(|c| named(c, "Content"))
                    .map(texts)
                    .unwrap_or_default();
                items.insert(id, (search, content.trim().to_string()));
            }
            let mut by_member: BTreeMap<Identity, (String, Vec<(String, String)>)> =
                BTreeMap::new();
            for param in root.descendants().filter(|n| named(n, "param")) {
                let item = items
                    .remove(param.attribute("ref-id").unwrap_or(""))
                    .ok_or("a parameter points at no item")?;
                let value = param
                    .children()
                    .find(|c| named(c, "value"))
                    .map(texts)
                    .unwrap_or_default();
                let (identity, line) =
                    split_described(&value).ok_or("a parameter carries no tc-sync marker")?;
                by_member
                    .entry(identity)
                    .or_insert_with(|| (line, Vec::new()))
                    .1
                    .push(item);
            }
            if !items.is_empty() {
                return Err(format!("{} items without provenance", items.len()));
            }
            for (identity, (line, items)) in by_member {
                let observable = ioc_observable(&items)?;
                members.push(Member::new(identity, observable, line));
            }
        }
        other => return Err(format!("a <{other}> document is not a group document")),
    }
    let marker = marker(&marker_text);
    let key = root
        .attribute("id")
        .and_then(BucketKey::from_id)
        .or(marker.map(|m| m.key));
    members.sort_unstable_by_key(|m| m.identity);
    if members.windows(2).any(|w| w[0].identity == w[1].identity) {
        return Err("an indicator is in it twice".into());
    }
    Ok(ReadGroup {
        key,
        marker,
        members,
    })
}

fn stix_observable(
    ind: roxmltree::Node,
    named: &dyn Fn(&roxmltree::Node, &str) -> bool,
    texts: &dyn Fn(roxmltree::Node) -> String,
) -> Result<Observable, String> {
    let props = ind
        .descendants()
        .find(|n| named(n, "Properties"))
        .ok_or("an indicator has no observable")?;
    let value = |name: &str| {
        props
            .descendants()
            .find(|n| named(n, name))
            .map(|n| texts(n).trim().to_string())
    };
    if let Some(ip) = value("Address_Value") {
        return identity::normalise_ip(&ip).map(Observable::Address);
    }
    let hashes: Vec<String> = props
        .descendants()
        .filter(|n| named(n, "Simple_Hash_Value"))
        .map(|n| texts(n).trim().to_string())
        .collect();
    if !hashes.is_empty() {
        return identity::hashes_from_summary(&hashes.join(" : ")).map(Observable::File);
    }
    if let Some(host) = value("Value") {
        return identity::normalise_host(&host).map(Observable::Host);
    }
    Err("an indicator's observable is not an address, domain or file".into())
}

fn ioc_observable(items: &[(String, String)]) -> Result<Observable, String> {
    let first = items.first().ok_or("a member has no items")?;
    match first.0.as_str() {
        "PortItem/remoteIP" => identity::normalise_ip(&first.1).map(Observable::Address),
        "Network/DNS" | "DnsEntryItem/Host" => {
            identity::normalise_host(&first.1).map(Observable::Host)
        }
        s if s.starts_with("FileItem/") => {
            let joined: Vec<&str> = items.iter().map(|(_, v)| v.as_str()).collect();
            identity::hashes_from_summary(&joined.join(" : ")).map(Observable::File)
        }
        other => Err(format!(
            "an item searches {other}, which this job never writes"
        )),
    }
}

#[cfg(test)]
mod member_tests {
    use super::*;

    fn member(kind: &str, value: &str) -> Member {
        let ind = Indicator {
            id: 4711,
            owner_name: "Demo; Org".into(),
            type_name: kind.into(),
            summary: value.into(),
            last_modified: "2026-11-01T08:00:00Z".into(),
            ..Indicator::default()
        };
        super::member(&ind).unwrap()
    }

    #[test]
    fn a_member_says_its_tc_id_and_which_matched_values_and_elements_are_its_own() {
        let names = |m: &Member, v: &str| {
            let own = m.match_values();
            match_value_forms(v).iter().any(|f| own.contains(f))
        };
        let host = member("Host", "Evil.Example.");
        assert_eq!(host.tc_id(), Some(4711));
        assert!(names(&host, "evil.example") && names(&host, "EVIL.example."));
        assert!(!names(&host, "sub.evil.example") && !names(&host, "1.2.3.4"));
        let ip = member("Address", "2001:db8::1");
        assert!(names(&ip, "2001:DB8:0::1") && !names(&ip, "2001:db8::2"));
        let md5 = "d193ea4b8d102d020c02dc45af23ff0d";
        let sha1 = "469e259b884043aedac879a96356fb741f82daa8";
        let file = member("File", &format!("{md5} : {sha1}"));
        assert!(names(&file, &sha1.to_uppercase()) && names(&file, md5));
        assert!(!names(&file, "469e259b"));
        let own = |m: &Member, id: &str| {
            element_identity(id).is_some_and(|i| m.element_identities().contains(&i))
        };
        let id = file.identity.to_string();
        assert!(own(&file, &format!("tctr:indicator-{id}")));
        assert!(own(
            &file,
            &format!("tctr:Observable-{}", id.to_uppercase())
        ));
        assert!(own(&file, &derived(file.identity, "item-1")));
        assert!(!own(&file, &derived(file.identity, "item-9")));
        assert!(!own(&file, "901388892329936882"));
        assert!(!own(&host, &format!("tctr:indicator-{id}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(id: i64, kind: &str, summary: &str) -> Indicator {
        Indicator {
            id,
            owner_name: "Demo; Org".into(),
            type_name: kind.into(),
            summary: summary.into(),
            rating: Some(3.0),
            confidence: Some(60),
            threat_assess_score: Some(512),
            tags: vec!["APT".into(), "C2 <x>".into()],
            last_modified: "2026-11-01T08:00:00Z".into(),
            web_link: Some("https://tc.example/auth/indicators/details?id=1&o=2".into()),
            ..Indicator::default()
        }
    }

    fn members() -> Vec<Member> {
        [
            ind(1, "Host", "Evil.Example."),
            ind(2, "Address", "2001:DB8::1"),
            ind(3, "Address", "203.0.113.7"),
            ind(
                4,
                "File",
                "d41d8cd98f00b204e9800998ecf8427e : da39a3ee5e6b4b0d3255bfef95601890afd80709",
            ),
        ]
        .iter()
        .map(|i| member(i).unwrap())
        .collect()
    }

    #[test]
    fn keys_read_back_from_their_text_and_ids() {
        let k = BucketKey {
            labels: 0x1f3a_9c2e,
            depth: 5,
            bits: 0b01101,
        };
        assert_eq!(k.to_string(), "1f3a9c2e/01101*");
        for f in [Format::Stix, Format::OpenIoc] {
            assert_eq!(BucketKey::from_id(&k.root_id(f)), Some(k));
        }
        assert_eq!(
            BucketKey::from_id(&BucketKey::root(7).root_id(Format::Stix)),
            Some(BucketKey::root(7))
        );
        assert!(k
            .children()
            .iter()
            .all(|c| k.contains(c) && c.parent() == Some(k)));
        assert!(!k.children()[0].contains(&k.children()[1]));
        let id: u128 = 0b01101 << 123;
        assert!(k.covers(id) && !k.covers(id ^ (1 << 124)));
        assert_eq!(prefix(u128::MAX, 40), (1 << 40) - 1);
    }

    #[test]
    fn a_group_reads_back_as_it_was_written_in_both_formats() {
        let key = BucketKey::on_path(label_set_hash(&["ThreatConnect".into()]), 1 << 127, 1);
        for format in [Format::Stix, Format::OpenIoc] {
            let mut ms = members();
            let doc = render(format, &key, &mut ms, "Src", &["ThreatConnect".into()]);
            let m = marker(&doc.name).unwrap();
            assert_eq!((m.key, m.count, m.digest), (key, 4, doc.digest));
            let back = read(&doc.body).unwrap();
            assert_eq!(back.key, Some(key));
            assert_eq!(back.marker, Some(m));
            assert_eq!(back.members, ms, "{format}");
            // Rendering what was read gives the same bytes.
            let mut again = back.members.clone();
            assert_eq!(
                render(format, &key, &mut again, "Src", &["ThreatConnect".into()]).body,
                doc.body
            );
        }
    }

    #[test]
    fn members_survive_their_text_line_and_changes_change_the_rev() {
        for m in members() {
            assert_eq!(Member::from_line(&m.to_line()), Some(m.clone()));
        }
        let a = member(&ind(1, "Host", "a.example")).unwrap();
        let b = member(&Indicator {
            confidence: Some(61),
            ..ind(1, "Host", "a.example")
        })
        .unwrap();
        assert_eq!(a.identity, b.identity);
        assert_ne!(a.rev, b.rev);
        assert!(a.line.contains("owner Demo, Org; id 1;"), "{}", a.line);
        assert_eq!(a.timestamp(), Some("2026-11-01T08:00:00Z"));
    }

    #[test]
    fn the_digest_ignores_order_and_sees_every_member() {
        let key = BucketKey::root(1);
        let ms = members();
        let pairs: Vec<(Identity, Rev)> = ms.iter().map(|m| (m.identity, m.rev)).collect();
        let mut rev = pairs.clone();
        rev.reverse();
        assert_eq!(
            digest(Format::Stix, &key, &pairs),
            digest(Format::Stix, &key, &rev)
        );
        assert_ne!(
            digest(Format::Stix, &key, &pairs),
            digest(Format::OpenIoc, &key, &pairs)
        );
        assert_ne!(
            digest(Format::Stix, &key, &pairs),
            digest(Format::Stix, &key, &pairs[1..])
        );
    }

    #[test]
    fn a_damaged_group_is_unreadable() {
        let key = BucketKey::root(1);
        let doc = render(Format::OpenIoc, &key, &mut members(), "S", &[]);
        assert!(read(&doc.body.replace("tc-sync:", "tc-snyc:")).is_err());
        assert!(read(&doc.body[..doc.body.len() / 2]).is_err());
        let doc = render(Format::Stix, &key, &mut members(), "S", &[]);
        assert!(read(&doc.body.replace("Address_Value", "Other_Value")).is_err());
    }
}
