//! Reading a document this job did not make (e.g. one the previous ThreatConnect app left in the
//! source), to know whether it covers exactly one indicator the job could adopt it for. Pure.
//!
//! Understood: STIX 1.x / CybOX address values, domain names and hashes; OpenIOC 1.0 / 1.1
//! items on remote IPs, DNS names and file hashes. A document that also holds anything else (a
//! file name, a registry key, a URL...) covers more than one value the job sends, so it is not
//! adoptable and is replaced.

use std::collections::BTreeSet;

use crate::tc::model::IndicatorType;

use super::identity::{normalise_hash, normalise_host, normalise_ip};

/// What one value in a foreign document is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Address(String),
    Host(String),
    /// (algorithm, hex)
    Hash(&'static str, String),
}

fn hash_of(text: &str) -> Option<Value> {
    let name = match text.trim().len() {
        32 => "MD5",
        40 => "SHA1",
        64 => "SHA256",
        _ => return None,
    };
    normalise_hash(name, text)
        .ok()
        .map(|h| Value::Hash(name, h))
}

/// The values of an OpenIOC `IndicatorItem`, by its Context `search` (None: a term the job
/// never sends).
fn ioc_item(search: &str, content: &str) -> Option<Value> {
    let s = search.to_ascii_lowercase();
    if s.ends_with("/remoteip") || s.ends_with("/localip") || s == "network/ip" {
        normalise_ip(content)
            .ok()
            .map(|ip| Value::Address(ip.to_string()))
    } else if s == "network/dns" || s.ends_with("/host") || s == "urlhistoryitem/hostname" {
        normalise_host(content).ok().map(Value::Host)
    } else if s.ends_with("/md5sum") || s.ends_with("/sha1sum") || s.ends_with("/sha256sum") {
        hash_of(content)
    } else {
        None
    }
}

/// Every value the document names, or None when it names something the job never sends (or
/// is not XML of a known kind).
fn values(xml: &str) -> Option<BTreeSet<Value>> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let root = doc.root_element().tag_name().name();
    let text = |n: roxmltree::Node| n.text().unwrap_or("").trim().to_string();
    let mut out = BTreeSet::new();
    match root {
        "STIX_Package" | "Observables" => {
            for n in doc.descendants().filter(|n| n.is_element()) {
                let value = match n.tag_name().name() {
                    "Address_Value" => normalise_ip(&text(n))
                        .ok()
                        .map(|ip| Value::Address(ip.to_string())),
                    "Value" if parent_type(n).contains("DomainName") => {
                        normalise_host(&text(n)).ok().map(Value::Host)
                    }
                    "Simple_Hash_Value" => hash_of(&text(n)),
                    "Properties" if !known_object(n) => return None,
                    _ => continue,
                };
                out.insert(value?);
            }
        }
        "ioc" | "OpenIOC" => {
            for item in doc
                .descendants()
                .filter(|n| n.is_element() && n.tag_name().name() == "IndicatorItem")
            {
                let search = item
                    .children()
                    .find(|c| c.tag_name().name() == "Context")
                    .and_then(|c| c.attribute("search"))?;
                let content = item
                    .children()
                    .find(|c| c.tag_name().name() == "Content")
                    .map(text)?;
                out.insert(ioc_item(search, &content)?);
            }
        }
        _ => return None,
    }
    Some(out)
}

/// The `xsi:type` of the CybOX `Properties` element a value sits in.
fn parent_type<'a>(n: roxmltree::Node<'a, '_>) -> &'a str {
    n.ancestors()
        .find(|a| a.tag_name().name() == "Properties")
        .and_then(|p| {
            p.attributes()
                .find(|a| a.name() == "type")
                .map(|a| a.value())
        })
        .unwrap_or("")
}

/// Whether a CybOX object is one the job sends (address, domain name, file by its hashes).
fn known_object(properties: roxmltree::Node) -> bool {
    let t = properties
        .attributes()
        .find(|a| a.name() == "type")
        .map_or("", |a| a.value());
    let file_only_hashes = t.contains("FileObjectType")
        && properties
            .descendants()
            .filter(|d| d.is_element())
            .all(|d| {
                matches!(
                    d.tag_name().name(),
                    "Properties" | "Hashes" | "Hash" | "Type" | "Simple_Hash_Value"
                )
            });
    t.contains("AddressObjectType") || t.contains("DomainNameObjectType") || file_only_hashes
}

/// The one indicator a foreign document covers, as (type, identity key: the canonical IP, the
/// lower-case host, or a File's first hash of MD5, SHA1, SHA256), when it covers exactly one.
pub fn covered(xml: &str) -> Option<(IndicatorType, String)> {
    let values = values(xml)?;
    let mut hashes: Vec<(&str, &str)> = Vec::new();
    let mut others = Vec::new();
    for v in &values {
        match v {
            Value::Hash(name, h) => hashes.push((name, h)),
            other => others.push(other),
        }
    }
    // One file may come with one hash of each kind; two of a kind are two files.
    let one_file = {
        let mut kinds: Vec<&str> = hashes.iter().map(|(n, _)| *n).collect();
        kinds.dedup();
        kinds.len() == hashes.len()
    };
    match (others.as_slice(), hashes.is_empty()) {
        ([Value::Address(ip)], true) => Some((IndicatorType::Address, ip.clone())),
        ([Value::Host(h)], true) => Some((IndicatorType::Host, h.clone())),
        ([], false) if one_file => {
            let key = ["MD5", "SHA1", "SHA256"]
                .iter()
                .find_map(|k| hashes.iter().find(|(n, _)| n == k))
                .map(|(_, h)| h.to_string())?;
            Some((IndicatorType::File, key))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openioc_with_one_value_is_adoptable_and_with_more_is_not() {
        let ioc = |items: &str| {
            format!(
                r#"<ioc xmlns="http://schemas.mandiant.com/2010/ioc" id="old-1"><definition><Indicator operator="OR" id="i">{items}</Indicator></definition></ioc>"#
            )
        };
        let item = |search: &str, value: &str| {
            format!(
                r#"<IndicatorItem id="x" condition="is"><Context document="D" search="{search}" type="mir"/><Content type="string">{value}</Content></IndicatorItem>"#
            )
        };
        assert_eq!(
            covered(&ioc(&item("PortItem/remoteIP", "203.0.113.7"))),
            Some((IndicatorType::Address, "203.0.113.7".into()))
        );
        let host = item("Network/DNS", "Evil.Example") + &item("DnsEntryItem/Host", "evil.example");
        assert_eq!(
            covered(&ioc(&host)),
            Some((IndicatorType::Host, "evil.example".into()))
        );
        let file =
            item("FileItem/Sha1sum", &"b".repeat(40)) + &item("FileItem/Md5sum", &"A".repeat(32));
        assert_eq!(
            covered(&ioc(&file)),
            Some((IndicatorType::File, "a".repeat(32)))
        );
        let two =
            item("PortItem/remoteIP", "203.0.113.7") + &item("PortItem/remoteIP", "203.0.113.8");
        assert_eq!(covered(&ioc(&two)), None);
        let other = item("FileItem/FileName", "evil.exe");
        assert_eq!(covered(&ioc(&other)), None);
        let two_md5 =
            item("FileItem/Md5sum", &"a".repeat(32)) + &item("FileItem/Md5sum", &"b".repeat(32));
        assert_eq!(covered(&ioc(&two_md5)), None);
    }

    #[test]
    fn stix_address_domain_and_file_hashes() {
        let stix = |props: &str| {
            format!(
                r#"<stix:STIX_Package xmlns:stix="http://stix.mitre.org/stix-1" xmlns:cybox="http://cybox.mitre.org/cybox-2" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:AddressObj="a" xmlns:DomainNameObj="d" xmlns:FileObj="f" xmlns:cyboxCommon="c" id="vendor:pkg-9"><stix:Indicators><stix:Indicator><cybox:Object>{props}</cybox:Object></stix:Indicator></stix:Indicators></stix:STIX_Package>"#
            )
        };
        let addr = r#"<cybox:Properties xsi:type="AddressObj:AddressObjectType"><AddressObj:Address_Value>2001:DB8::1</AddressObj:Address_Value></cybox:Properties>"#;
        assert_eq!(
            covered(&stix(addr)),
            Some((IndicatorType::Address, "2001:db8::1".into()))
        );
        let dom = r#"<cybox:Properties xsi:type="DomainNameObj:DomainNameObjectType"><DomainNameObj:Value>Bad.Example.</DomainNameObj:Value></cybox:Properties>"#;
        assert_eq!(
            covered(&stix(dom)),
            Some((IndicatorType::Host, "bad.example".into()))
        );
        let file = format!(
            r#"<cybox:Properties xsi:type="FileObj:FileObjectType"><FileObj:Hashes><cyboxCommon:Hash><cyboxCommon:Type>SHA256</cyboxCommon:Type><cyboxCommon:Simple_Hash_Value>{}</cyboxCommon:Simple_Hash_Value></cyboxCommon:Hash></FileObj:Hashes></cybox:Properties>"#,
            "c".repeat(64)
        );
        assert_eq!(
            covered(&stix(&file)),
            Some((IndicatorType::File, "c".repeat(64)))
        );
        let named = r#"<cybox:Properties xsi:type="FileObj:FileObjectType"><FileObj:File_Name>x.exe</FileObj:File_Name></cybox:Properties>"#;
        assert_eq!(covered(&stix(named)), None);
        assert_eq!(covered("rule yara { condition: true }"), None);
    }

    #[test]
    fn the_job_s_own_documents_are_read_too() {
        let ind = crate::tc::model::Indicator {
            id: 1,
            owner_name: "O".into(),
            type_name: "Host".into(),
            summary: "c2.example".into(),
            last_modified: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        };
        for f in [super::super::Format::Stix, super::super::Format::OpenIoc] {
            let p = super::super::render(&ind, f).unwrap();
            assert_eq!(
                covered(&p.body),
                Some((IndicatorType::Host, "c2.example".into())),
                "{f}"
            );
        }
    }
}
