//! Reading a group document back: its members and its own marker, in either format.

use std::collections::BTreeMap;

use roxmltree::Node;

use super::{marker, BucketKey, Marker, Member};
use crate::intel::identity::{self, Identity, MARKER};
use crate::intel::{one_line, Observable};

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
    let (mut members, marker_text) = match root.tag_name().name() {
        "STIX_Package" => read_stix(root)?,
        "OpenIOC" | "ioc" => read_openioc(root)?,
        other => return Err(format!("a <{other}> document is not a group document")),
    };
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

/// The text in an element and everything under it.
fn texts(n: Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<String>()
}

fn named(n: &Node, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name
}

/// The members of a STIX group, and the group's own marker text.
fn read_stix(root: Node) -> Result<(Vec<Member>, String), String> {
    let mut members = Vec::new();
    let mut marker_text = String::new();
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
        let (identity, line) =
            split_described(&description).ok_or("an indicator carries no tc-sync marker")?;
        let observable = stix_observable(ind)?;
        members.push(Member::new(identity, observable, line));
    }
    Ok((members, marker_text))
}

/// The members of an OpenIOC group (each item's provenance in a parameter that points at
/// it), and the group's own marker text.
fn read_openioc(root: Node) -> Result<(Vec<Member>, String), String> {
    let marker_text = root
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
    let mut by_member: BTreeMap<Identity, (String, Vec<(String, String)>)> = BTreeMap::new();
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
    let mut members = Vec::new();
    for (identity, (line, items)) in by_member {
        members.push(Member::new(identity, ioc_observable(&items)?, line));
    }
    Ok((members, marker_text))
}

fn stix_observable(ind: Node) -> Result<Observable, String> {
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
