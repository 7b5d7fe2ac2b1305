//! Writing a group document: STIX or OpenIOC (see the module above for the shape).

use std::fmt::Write as _;

use super::{BucketKey, Member};
use crate::intel::identity::{self, derived};
use crate::intel::xml::{attr, text};
use crate::intel::Format;

pub(super) fn stix(key: &BucketKey, members: &[Member], name: &str, description: &str) -> String {
    let p = crate::intel::stix::NS_PREFIX;
    let mut x = String::with_capacity(1024 + members.len() * 1200);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        r#"<stix:STIX_Package xmlns:stix="http://stix.mitre.org/stix-1" xmlns:indicator="http://stix.mitre.org/Indicator-2" xmlns:stixVocabs="http://stix.mitre.org/default_vocabularies-1" xmlns:cybox="http://cybox.mitre.org/cybox-2" xmlns:cyboxCommon="http://cybox.mitre.org/common-2" xmlns:cyboxVocabs="http://cybox.mitre.org/default_vocabularies-2" xmlns:AddressObj="http://cybox.mitre.org/objects#AddressObject-2" xmlns:DomainNameObj="http://cybox.mitre.org/objects#DomainNameObject-1" xmlns:FileObj="http://cybox.mitre.org/objects#FileObject-2" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:{p}="{}" id="{}" version="1.2">"#,
        crate::intel::stix::NS_URI,
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
            crate::intel::stix::indicator_type(&m.observable)
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
        crate::intel::stix::write_properties(&mut x, &m.observable);
        let _ = writeln!(x, "        </cybox:Object>");
        let _ = writeln!(x, "      </indicator:Observable>");
        let _ = writeln!(x, "    </stix:Indicator>");
    }
    let _ = writeln!(x, "  </stix:Indicators>");
    x.push_str("</stix:STIX_Package>\n");
    x
}

pub(super) fn openioc(
    key: &BucketKey,
    members: &[Member],
    name: &str,
    description: &str,
) -> String {
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
        crate::intel::openioc::NS,
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
        text(crate::intel::openioc::AUTHOR)
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
        for (n, found) in crate::intel::openioc::items_of(&m.observable)
            .iter()
            .enumerate()
        {
            let item = derived(m.identity, &format!("item-{n}"));
            crate::intel::openioc::write_item(&mut x, &item, found);
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
