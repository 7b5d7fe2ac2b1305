//! OpenIOC 1.1 document with one OR'ed Indicator.
//!
//! Shape (the 1.1 schema, namespace `http://openioc.org/schemas/OpenIOC_1.1`): root `OpenIOC`
//! (id = identity, `last-modified` and `published-date` = TC lastModified), `metadata`
//! (short_description = name, description, authored_by, authored_date, links), `criteria` with
//! one `Indicator operator="OR"` of `IndicatorItem`s, and an empty `parameters`. In 1.1 the
//! 1.0 `ioc`/`definition` pair became `OpenIOC`/`criteria`. Item ids are UUIDs derived from
//! the identity, so the same indicator renders the same bytes.
//!
//! Terms: Address -> `PortItem/remoteIP`; Host -> `Network/DNS` and `DnsEntryItem/Host`;
//! File -> `FileItem/Md5sum`, `FileItem/Sha1sum`, `FileItem/Sha256sum` (the ones present).

use std::fmt::Write as _;

use super::identity::derived;
use super::xml::{attr, text};
use super::{Doc, Observable};

/// The OpenIOC 1.1 namespace.
pub const NS: &str = "http://openioc.org/schemas/OpenIOC_1.1";
/// `authored_by` of every document.
pub const AUTHOR: &str = "ThreatConnect via tanium-tr-indicators";
/// Date used when TC's lastModified does not parse (the schema requires one).
const NO_DATE: &str = "1970-01-01T00:00:00Z";

/// One `IndicatorItem`: (Context document, Context search, Content type, value).
pub(super) type Item = (&'static str, &'static str, &'static str, String);

pub(super) fn items_of(observable: &Observable) -> Vec<Item> {
    match observable {
        Observable::Address(ip) => vec![("PortItem", "PortItem/remoteIP", "IP", ip.to_string())],
        Observable::Host(h) => vec![
            ("Network", "Network/DNS", "string", h.clone()),
            ("DnsEntryItem", "DnsEntryItem/Host", "string", h.clone()),
        ],
        Observable::File(hashes) => hashes
            .present()
            .into_iter()
            .map(|(name, v)| match name {
                "MD5" => ("FileItem", "FileItem/Md5sum", "md5", v.to_string()),
                "SHA1" => ("FileItem", "FileItem/Sha1sum", "string", v.to_string()),
                _ => ("FileItem", "FileItem/Sha256sum", "string", v.to_string()),
            })
            .collect(),
    }
}

/// Renders `doc` as an OpenIOC 1.1 document, with `rev` in the description marker.
pub(crate) fn write(doc: &Doc, rev: &str) -> String {
    let id = doc
        .root
        .as_deref()
        .map_or_else(|| attr(&doc.identity.to_string()), attr);
    let date = attr(doc.timestamp.as_deref().unwrap_or(NO_DATE));
    let mut x = String::with_capacity(2048 + doc.context.len());
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        r#"<OpenIOC xmlns="{NS}" id="{id}" last-modified="{date}" published-date="{date}">"#
    );
    write_metadata(&mut x, doc, rev, &date);
    write_criteria(&mut x, doc);
    let _ = writeln!(x, "  <parameters/>");
    x.push_str("</OpenIOC>\n");
    x
}

fn write_metadata(x: &mut String, doc: &Doc, rev: &str, date: &str) {
    let _ = writeln!(x, "  <metadata>");
    let _ = writeln!(
        x,
        "    <short_description>{}</short_description>",
        text(&doc.name)
    );
    let _ = writeln!(
        x,
        "    <description>{}</description>",
        text(&doc.description(rev))
    );
    let _ = writeln!(
        x,
        "    <authored_by>{}</authored_by>",
        text(&format!("{AUTHOR} ({})", super::one_line(&doc.owner)))
    );
    let _ = writeln!(x, "    <authored_date>{date}</authored_date>");
    match &doc.web_link {
        Some(link) => {
            let _ = writeln!(x, "    <links>");
            let _ = writeln!(
                x,
                r#"      <link rel="threatconnect" href="{}"/>"#,
                attr(link)
            );
            let _ = writeln!(x, "    </links>");
        }
        None => {
            let _ = writeln!(x, "    <links/>");
        }
    }
    let _ = writeln!(x, "  </metadata>");
}

fn write_criteria(x: &mut String, doc: &Doc) {
    let _ = writeln!(x, "  <criteria>");
    let _ = writeln!(
        x,
        r#"    <Indicator operator="OR" id="{}">"#,
        derived(doc.identity, "indicator")
    );
    for (n, item) in items_of(&doc.observable).iter().enumerate() {
        write_item(x, &derived(doc.identity, &format!("item-{n}")), item);
    }
    let _ = writeln!(x, "    </Indicator>");
    let _ = writeln!(x, "  </criteria>");
}

pub(super) fn write_item(x: &mut String, id: &str, (document, search, ctype, value): &Item) {
    let _ = writeln!(
        x,
        r#"      <IndicatorItem id="{id}" condition="is" preserve-case="false" negate="false">"#
    );
    let _ = writeln!(
        x,
        r#"        <Context document="{document}" search="{search}" type="mir"/>"#
    );
    let _ = writeln!(
        x,
        r#"        <Content type="{ctype}">{}</Content>"#,
        text(value)
    );
    let _ = writeln!(x, "      </IndicatorItem>");
}
