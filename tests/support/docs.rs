//! The tests' own reading of the intel documents the app stores, written from the document
//! formats (STIX 1.2 with CybOX objects, OpenIOC 1.1) with roxmltree and nothing of the app's
//! renderer or readers, so an oracle built on it cannot share a bug with the product.
//!
//! A document holds items: one for a single document, one per member of a grouped document.
//! Each item is an observable (type and values, read from the CybOX object or the OpenIOC
//! terms) and the provenance the app wrote beside it (owner, TC id, scores, tags), which
//! [`assert_items_match_tc`] compares with the TC record it names.

use std::collections::BTreeMap;

use roxmltree::{Document, Node};
use tanium_tr_indicators::sim::lab::Lab;
use tanium_tr_indicators::sim::tanium::SimDoc;
use tanium_tr_indicators::tc::model::Indicator;

use super::expected_name;

/// Most tags a provenance lists by name; the rest are counted ("(and N more)").
const LISTED_TAGS: usize = 10;

/// One indicator as a document shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `Address`, `Host` or `File`.
    pub kind: String,
    /// The observable's values: the address, the host name, or `MD5`/`SHA1`/`SHA256` hashes as
    /// `TYPE:value`.
    pub values: Vec<String>,
    pub owner: String,
    pub tc_id: i64,
    pub rating: Option<f64>,
    pub confidence: Option<i64>,
    pub threat_assess: Option<i64>,
    /// The tags listed by name, and how many more the provenance counts.
    pub tags: Vec<String>,
    pub more_tags: usize,
}

impl Item {
    /// `ThreatConnect <Type> <value>`: a File by its MD5, else SHA1, else SHA256.
    pub fn name(&self) -> String {
        let value = if self.kind == "File" {
            ["MD5:", "SHA1:", "SHA256:"]
                .iter()
                .find_map(|t| self.values.iter().find_map(|v| v.strip_prefix(t)))
                .unwrap_or_default()
                .to_string()
        } else {
            self.values.first().cloned().unwrap_or_default()
        };
        format!("ThreatConnect {} {value}", self.kind)
    }
}

/// What a grouped document's name says: `… (tc-group: <key> n <count> rev <digest>)`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMark {
    pub key: String,
    pub count: usize,
}

/// The group marker in a document's name, if it is a grouped document of the app.
pub fn group_mark(name: &str) -> Option<GroupMark> {
    let at = name.rfind("tc-group: ")?;
    let mut w = name[at + "tc-group: ".len()..].split_whitespace();
    let key = w.next()?.to_string();
    (w.next()? == "n").then_some(())?;
    let count = w.next()?.parse().ok()?;
    Some(GroupMark { key, count })
}

/// Whether a body is a grouped document of the app: its root id is `tctr:Group-…` (STIX) or
/// `tc-group-…` (OpenIOC), whatever its name says now.
pub fn is_group(body: &str) -> bool {
    Document::parse(body).is_ok_and(|doc| {
        doc.root_element().attribute("id").is_some_and(|id| {
            let id = id.to_ascii_lowercase();
            id.starts_with("tctr:group-") || id.starts_with("tc-group-")
        })
    })
}

/// The items of a document of the app, in document order; an error says what is not as the
/// formats and the app's layout have it.
pub fn items(body: &str) -> Result<Vec<Item>, String> {
    let doc = Document::parse(body).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    match root.tag_name().name() {
        "STIX_Package" => stix_items(root),
        "OpenIOC" => openioc_items(root),
        other => Err(format!("root element {other}")),
    }
}

fn is(n: &Node, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| is(c, name))
}

fn text(n: Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect()
}

fn stix_items(root: Node) -> Result<Vec<Item>, String> {
    let indicators = child(root, "Indicators").ok_or("no stix:Indicators")?;
    let mut out = Vec::new();
    for ind in indicators.children().filter(|c| is(c, "Indicator")) {
        let Some(observable) = child(ind, "Observable") else {
            // The first indicator of a grouped document names and describes it.
            continue;
        };
        let props = child(observable, "Object")
            .and_then(|o| child(o, "Properties"))
            .ok_or("an observable without an object")?;
        let xsi_type = props
            .attributes()
            .find(|a| a.name() == "type")
            .map(|a| a.value().to_string())
            .unwrap_or_default();
        let (kind, values) = match xsi_type.split(':').nth(1) {
            Some("AddressObjectType") => (
                "Address",
                vec![child(props, "Address_Value")
                    .map(text)
                    .ok_or("no Address_Value")?],
            ),
            Some("DomainNameObjectType") => (
                "Host",
                vec![child(props, "Value").map(text).ok_or("no domain Value")?],
            ),
            Some("FileObjectType") => {
                let hashes = child(props, "Hashes").ok_or("a file without Hashes")?;
                let values = hashes
                    .children()
                    .filter(|h| is(h, "Hash"))
                    .map(|h| {
                        let t = child(h, "Type").map(text).unwrap_or_default();
                        let v = child(h, "Simple_Hash_Value").map(text).unwrap_or_default();
                        format!("{t}:{v}")
                    })
                    .collect();
                ("File", values)
            }
            _ => return Err(format!("an object of type {xsi_type}")),
        };
        // A member's description is its provenance line; a single document's indicator
        // carries the whole description.
        let provenance = child(ind, "Description").map(text).unwrap_or_default();
        out.push(item(kind, values, &provenance)?);
    }
    Ok(out)
}

fn openioc_items(root: Node) -> Result<Vec<Item>, String> {
    let description = child(root, "metadata")
        .and_then(|m| child(m, "description"))
        .map(text)
        .unwrap_or_default();
    let top = child(root, "criteria")
        .and_then(|c| child(c, "Indicator"))
        .ok_or("no criteria/Indicator")?;
    let mut terms: Vec<(String, String, String)> = Vec::new();
    for it in top.children().filter(|c| is(c, "IndicatorItem")) {
        let search = child(it, "Context")
            .and_then(|c| c.attribute("search"))
            .unwrap_or_default()
            .to_string();
        let content = child(it, "Content").map(text).unwrap_or_default();
        terms.push((
            it.attribute("id").unwrap_or_default().to_string(),
            search,
            content,
        ));
    }
    let params: BTreeMap<String, String> = child(root, "parameters")
        .map(|p| {
            p.children()
                .filter(|c| is(c, "param"))
                .map(|p| {
                    let r = p.attribute("ref-id").unwrap_or_default().to_string();
                    (r, child(p, "value").map(text).unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default();
    // Terms of one indicator follow each other and share its provenance (a grouped document's
    // params point at every term; a single document's description covers all of them).
    let mut out: Vec<Item> = Vec::new();
    let mut last: Option<String> = None;
    for (id, search, content) in terms {
        let provenance = if params.is_empty() {
            description.clone()
        } else {
            params
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("term {id} has no provenance"))?
        };
        let (kind, value) = match search.as_str() {
            "PortItem/remoteIP" => ("Address", content),
            "Network/DNS" | "DnsEntryItem/Host" => ("Host", content),
            "FileItem/Md5sum" => ("File", format!("MD5:{content}")),
            "FileItem/Sha1sum" => ("File", format!("SHA1:{content}")),
            "FileItem/Sha256sum" => ("File", format!("SHA256:{content}")),
            other => return Err(format!("an OpenIOC term {other}")),
        };
        if last.as_deref() == Some(provenance.as_str()) {
            let item = out.last_mut().expect("a previous item");
            if item.kind != kind {
                return Err(format!("one provenance for a {} and a {kind}", item.kind));
            }
            if !item.values.contains(&value) {
                item.values.push(value);
            }
            continue;
        }
        out.push(item(kind, vec![value], &provenance)?);
        last = Some(provenance);
    }
    Ok(out)
}

/// Reads the provenance: a member's line (`Host h; owner O; id 1; rating 3 / 5; confidence 60 /
/// 100; ThreatAssess 500 / 1000; tags A, B; modified …; link tc-sync: …`) or a single document's
/// description (`Owner: O`, `ThreatConnect id: 1`, `Rating: 3 / 5`, …, one per line).
fn item(kind: &str, values: Vec<String>, provenance: &str) -> Result<Item, String> {
    let mut it = Item {
        kind: kind.to_string(),
        values,
        owner: String::new(),
        tc_id: 0,
        rating: None,
        confidence: None,
        threat_assess: None,
        tags: Vec::new(),
        more_tags: 0,
    };
    let out_of = |v: &str, of: &str| -> Result<String, String> {
        v.strip_suffix(of)
            .map(|n| n.trim().to_string())
            .ok_or_else(|| format!("'{v}' is not out of{of}"))
    };
    let fields: Vec<(String, String)> = if provenance.contains("\nOwner: ") {
        provenance
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    } else {
        let line = provenance
            .rsplit_once(" tc-sync: ")
            .map_or(provenance, |(l, _)| l);
        line.split("; ")
            .filter_map(|f| f.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // The first of each field is the app's; TC's free-text description, which follows, may
    // hold anything.
    let mut seen = std::collections::BTreeSet::new();
    let mut found_id = false;
    for (k, v) in fields {
        if !seen.insert(k.to_lowercase()) {
            continue;
        }
        match k.as_str() {
            "Owner" | "owner" => it.owner = v,
            "ThreatConnect id" | "id" => {
                it.tc_id = v.parse().map_err(|_| format!("TC id '{v}'"))?;
                found_id = true;
            }
            "Rating" | "rating" => {
                it.rating = Some(out_of(&v, " / 5")?.parse().map_err(|_| v.clone())?)
            }
            "Confidence" | "confidence" => {
                it.confidence = Some(out_of(&v, " / 100")?.parse().map_err(|_| v.clone())?)
            }
            "ThreatAssess score" | "ThreatAssess" => {
                it.threat_assess = Some(out_of(&v, " / 1000")?.parse().map_err(|_| v.clone())?)
            }
            "Tags" | "tags" => {
                let (names, more) = match v.rsplit_once(" (and ") {
                    Some((names, more)) => (
                        names.to_string(),
                        more.trim_end_matches(" more)").parse().unwrap_or(0),
                    ),
                    None => (v.clone(), 0),
                };
                it.tags = names.split(", ").map(str::to_string).collect();
                it.more_tags = more;
            }
            _ => {}
        }
    }
    if !found_id || it.owner.is_empty() {
        return Err(format!("no owner or TC id in '{provenance}'"));
    }
    Ok(it)
}

/// What the lab's source holds, indicator by indicator: grouped documents by their members (read
/// here), other documents by name; sorted, every repeat kept.
pub fn covered(lab: &Lab) -> Vec<String> {
    let mut v = Vec::new();
    for d in lab.source_docs() {
        if is_group(&d.body) {
            let items = items(&d.body).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            v.extend(items.iter().map(Item::name));
        } else {
            v.push(d.name);
        }
    }
    v.sort();
    v
}

/// Every item of every document of the app in the lab's source (those carrying its `tc-sync:`
/// marker; documents of another integration are left out), with the document it is in.
pub fn source_items(lab: &Lab) -> Vec<(SimDoc, Item)> {
    let mut out = Vec::new();
    for d in lab.source_docs() {
        if !d.body.contains("tc-sync: ") {
            continue;
        }
        let items = items(&d.body).unwrap_or_else(|e| panic!("{}: {e}", d.name));
        for i in items {
            out.push((d.clone(), i));
        }
    }
    out
}

/// Each item of the source's documents says what the TC record it names says: the type, the
/// observable (as the test's own [`expected_name`] has it), the owner, the scores and the tags
/// (at most ten listed, sorted, without repeats, the rest counted). Returns how many items were
/// compared.
pub fn assert_items_match_tc(lab: &Lab) -> usize {
    let records: BTreeMap<i64, Indicator> =
        lab.tc.snapshot().into_iter().map(|i| (i.id, i)).collect();
    let items = source_items(lab);
    for (d, it) in &items {
        let where_ = format!("{} in {}", it.name(), d.name);
        let r = records
            .get(&it.tc_id)
            .unwrap_or_else(|| panic!("{where_}: TC has no indicator {}", it.tc_id));
        assert_eq!(it.kind, r.type_name, "{where_}");
        assert_eq!(
            Some(it.name()),
            expected_name(r),
            "{where_}: the observable"
        );
        assert_eq!(it.owner, r.owner_name, "{where_}");
        assert_eq!(it.rating, r.rating, "{where_}: rating");
        assert_eq!(it.confidence, r.confidence, "{where_}: confidence");
        assert_eq!(
            it.threat_assess, r.threat_assess_score,
            "{where_}: ThreatAssess"
        );
        let mut tags: Vec<String> = r.tags.iter().map(|t| t.trim().to_string()).collect();
        tags.sort();
        tags.dedup();
        tags.retain(|t| !t.is_empty());
        let more = tags.len().saturating_sub(LISTED_TAGS);
        tags.truncate(LISTED_TAGS);
        assert_eq!((&it.tags, it.more_tags), (&tags, more), "{where_}: tags");
    }
    items.len()
}
