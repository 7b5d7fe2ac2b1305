//! STIX 1.2 package with one Indicator and one CybOX 2.1 object.
//!
//! Shape: `stix:STIX_Package` (id `tctr:Package-<identity>`, version 1.2) whose `STIX_Header`
//! repeats the Indicator's Title and Description (so Tanium picks the same name and
//! description whichever it reads), and one `stix:Indicator` (id `tctr:indicator-<identity>`,
//! `timestamp` = TC lastModified) with Title, Type (IndicatorTypeVocab-1.1), Description and an
//! `indicator:Observable` holding an AddressObj, DomainNameObj (FQDN) or FileObj with Hashes.

use std::fmt::Write as _;

use super::xml::{attr, text};
use super::{Doc, Observable};

/// Namespace prefix for the app's ids.
pub const NS_PREFIX: &str = "tctr";
/// Namespace URI bound to [`NS_PREFIX`].
pub const NS_URI: &str = "https://github.com/tanium-tr-indicators";

/// Renders `doc` as a STIX 1.2 package, with `rev` in the description marker.
pub(crate) fn write(doc: &Doc, rev: &str) -> String {
    let id = attr(&doc.identity.to_string());
    let root = doc
        .root
        .as_deref()
        .map_or_else(|| format!("{NS_PREFIX}:Package-{id}"), attr);
    let title = text(&doc.name);
    let description = text(&doc.description(rev));
    let indicator_type = indicator_type(&doc.observable);
    let obj_ns = match doc.observable {
        Observable::Address(_) => {
            r#"xmlns:AddressObj="http://cybox.mitre.org/objects#AddressObject-2""#
        }
        Observable::Host(_) => {
            r#"xmlns:DomainNameObj="http://cybox.mitre.org/objects#DomainNameObject-1""#
        }
        Observable::File(_) => r#"xmlns:FileObj="http://cybox.mitre.org/objects#FileObject-2""#,
    };
    let timestamp = doc
        .timestamp
        .as_deref()
        .map(|t| format!(r#" timestamp="{}""#, attr(t)))
        .unwrap_or_default();

    let mut x = String::with_capacity(2048 + 2 * description.len());
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        r#"<stix:STIX_Package xmlns:stix="http://stix.mitre.org/stix-1" xmlns:indicator="http://stix.mitre.org/Indicator-2" xmlns:stixVocabs="http://stix.mitre.org/default_vocabularies-1" xmlns:cybox="http://cybox.mitre.org/cybox-2" xmlns:cyboxCommon="http://cybox.mitre.org/common-2" xmlns:cyboxVocabs="http://cybox.mitre.org/default_vocabularies-2" {obj_ns} xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:{NS_PREFIX}="{NS_URI}" id="{root}" version="1.2">"#
    );
    let _ = writeln!(x, "  <stix:STIX_Header>");
    let _ = writeln!(x, "    <stix:Title>{title}</stix:Title>");
    let _ = writeln!(x, "    <stix:Description>{description}</stix:Description>");
    let _ = writeln!(x, "  </stix:STIX_Header>");
    let _ = writeln!(x, "  <stix:Indicators>");
    let _ = writeln!(
        x,
        r#"    <stix:Indicator xsi:type="indicator:IndicatorType" id="{NS_PREFIX}:indicator-{id}"{timestamp}>"#
    );
    let _ = writeln!(x, "      <indicator:Title>{title}</indicator:Title>");
    let _ = writeln!(
        x,
        r#"      <indicator:Type xsi:type="stixVocabs:IndicatorTypeVocab-1.1">{indicator_type}</indicator:Type>"#
    );
    let _ = writeln!(
        x,
        "      <indicator:Description>{description}</indicator:Description>"
    );
    let _ = writeln!(
        x,
        r#"      <indicator:Observable id="{NS_PREFIX}:Observable-{id}">"#
    );
    let _ = writeln!(x, r#"        <cybox:Object id="{NS_PREFIX}:Object-{id}">"#);
    write_properties(&mut x, &doc.observable);
    let _ = writeln!(x, "        </cybox:Object>");
    let _ = writeln!(x, "      </indicator:Observable>");
    let _ = writeln!(x, "    </stix:Indicator>");
    let _ = writeln!(x, "  </stix:Indicators>");
    x.push_str("</stix:STIX_Package>\n");
    x
}

/// The IndicatorTypeVocab-1.1 term for the observable.
pub(super) fn indicator_type(observable: &Observable) -> &'static str {
    match observable {
        Observable::Address(_) => "IP Watchlist",
        Observable::Host(_) => "Domain Watchlist",
        Observable::File(_) => "File Hash Watchlist",
    }
}

/// The CybOX object's properties for the observable.
pub(super) fn write_properties(x: &mut String, observable: &Observable) {
    match observable {
        Observable::Address(ip) => {
            let category = if ip.is_ipv4() {
                "ipv4-addr"
            } else {
                "ipv6-addr"
            };
            let _ = writeln!(
                x,
                r#"          <cybox:Properties xsi:type="AddressObj:AddressObjectType" category="{category}">"#
            );
            let _ = writeln!(
                x,
                r#"            <AddressObj:Address_Value condition="Equals">{}</AddressObj:Address_Value>"#,
                text(&ip.to_string())
            );
        }
        Observable::Host(h) => {
            let _ = writeln!(
                x,
                r#"          <cybox:Properties xsi:type="DomainNameObj:DomainNameObjectType" type="FQDN">"#
            );
            let _ = writeln!(
                x,
                r#"            <DomainNameObj:Value condition="Equals">{}</DomainNameObj:Value>"#,
                text(h)
            );
        }
        Observable::File(hashes) => {
            let _ = writeln!(
                x,
                r#"          <cybox:Properties xsi:type="FileObj:FileObjectType">"#
            );
            let _ = writeln!(x, "            <FileObj:Hashes>");
            for (name, value) in hashes.present() {
                let _ = writeln!(x, "              <cyboxCommon:Hash>");
                let _ = writeln!(
                    x,
                    r#"                <cyboxCommon:Type xsi:type="cyboxVocabs:HashNameVocab-1.0">{name}</cyboxCommon:Type>"#
                );
                let _ = writeln!(
                    x,
                    r#"                <cyboxCommon:Simple_Hash_Value condition="Equals">{}</cyboxCommon:Simple_Hash_Value>"#,
                    text(value)
                );
                let _ = writeln!(x, "              </cyboxCommon:Hash>");
            }
            let _ = writeln!(x, "            </FileObj:Hashes>");
        }
    }
    let _ = writeln!(x, "          </cybox:Properties>");
}
