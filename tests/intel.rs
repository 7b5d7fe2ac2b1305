//! Intel rendering: golden documents, identities, invalid values, determinism, hostile values.
//!
//! `UPDATE_GOLDEN=1 cargo test --test integration intel::` rewrites tests/golden/.
//! `INTEL_SAMPLE_DIR=dir cargo test --test integration -- --ignored --exact intel::write_samples` writes every sample
//! (used by .ci/stix-validate.sh).

use std::path::PathBuf;

use proptest::prelude::*;
use tanium_tr_indicators::intel::{
    group, identity_from_doc, identity_of, render, rev_from_doc, Format, Identity, Package,
};
use tanium_tr_indicators::tc::model::{Indicator, IndicatorType};

const MD5: &str = "D41D8CD98F00B204E9800998ECF8427E";
const SHA1: &str = "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709";
const SHA256: &str = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
const STIX_NS: &str = "http://stix.mitre.org/stix-1";
const IOC_NS: &str = "http://openioc.org/schemas/OpenIOC_1.1";
const HOSTILE: &str =
    "O'Brien & \"Sons\" <Ltd> ]]> \u{0}\u{1b}\u{7f}\u{FFFE}\r\n\ttab \u{202e}rtl ünïcødé 🦀";

fn base(type_name: &str, summary: &str) -> Indicator {
    Indicator {
        id: 42,
        owner_id: Some(7),
        owner_name: "Demo Org".into(),
        type_name: type_name.into(),
        summary: summary.into(),
        last_modified: "2021-11-02T14:58:55Z".into(),
        ..Indicator::default()
    }
}

fn full(mut i: Indicator) -> Indicator {
    i.rating = Some(3.5);
    i.confidence = Some(74);
    i.threat_assess_score = Some(405);
    i.tags = vec!["Targeted Attack".into(), "APT".into(), "APT".into()];
    i.description = Some("  Seen in a phishing campaign.\nSecond line.  ".into());
    i.web_link =
        Some("https://app.threatconnect.com/auth/indicators/details/address.xhtml?address=203.0.113.7&owner=Demo%20Org".into());
    i.date_added = Some("2021-10-26T12:40:00Z".into());
    i
}

fn address(ip: &str) -> Indicator {
    let mut i = base("Address", ip);
    i.ip = Some(ip.into());
    i
}

fn host(h: &str) -> Indicator {
    let mut i = base("Host", h);
    i.host_name = Some(h.into());
    i
}

fn file(md5: Option<&str>, sha1: Option<&str>, sha256: Option<&str>) -> Indicator {
    let summary = [md5, sha1, sha256]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" : ");
    let mut i = base("File", &summary);
    i.md5 = md5.map(Into::into);
    i.sha1 = sha1.map(Into::into);
    i.sha256 = sha256.map(Into::into);
    i
}

/// Every sample: (name, indicator). Golden files exist for each, in both formats.
fn cases() -> Vec<(&'static str, Indicator)> {
    let mut hostile = full(host("Evil.Example.COM."));
    hostile.owner_name = HOSTILE.into();
    hostile.description = Some(format!("desc {HOSTILE} <script>alert(1)</script> &amp;"));
    hostile.tags = vec![HOSTILE.into(), "<tag>".into(), "a\u{0}b".into()];
    hostile.web_link = Some("https://tc.example/x?a=1&b=\"2\"<3>".into());
    let mut from_summary = file(None, None, None);
    from_summary.summary = format!("{MD5} : {SHA256}");
    let mut minimal = base("Address", "198.51.100.1");
    minimal.owner_name = "Solo".into();
    minimal.last_modified = String::new();
    vec![
        ("address_v4", full(address("203.0.113.7"))),
        (
            "address_v6",
            full(address("2001:0DB8:0000:0000:0000:0000:0000:0001")),
        ),
        ("host", full(host("Bad.Example.COM."))),
        (
            "file_all_hashes",
            full(file(Some(MD5), Some(SHA1), Some(SHA256))),
        ),
        ("file_sha256_only", full(file(None, None, Some(SHA256)))),
        ("file_md5_sha1", file(Some(MD5), Some(SHA1), None)),
        ("file_from_summary", from_summary),
        ("hostile", hostile),
        ("minimal", minimal),
    ]
}

fn formats() -> [(Format, &'static str); 2] {
    [(Format::Stix, "stix.xml"), (Format::OpenIoc, "openioc.xml")]
}

fn ok(i: &Indicator, f: Format) -> Package {
    render(i, f).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn golden_documents() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatched = Vec::new();
    for (name, ind) in cases() {
        for (f, ext) in formats() {
            let p = ok(&ind, f);
            let path = dir.join(format!("{name}.{ext}"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &p.body).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
            if want != p.body {
                mismatched.push(path.display().to_string());
            }
        }
    }
    assert!(
        mismatched.is_empty(),
        "documents differ from golden files: {mismatched:?}"
    );
}

#[test]
#[ignore = "writes sample documents for .ci/stix-validate.sh"]
fn write_samples() {
    let dir = PathBuf::from(std::env::var("INTEL_SAMPLE_DIR").expect("INTEL_SAMPLE_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut all = cases();
    all.push(("huge_description", huge()));
    all.push(("many_tags", many_tags()));
    for (name, ind) in &all {
        for (f, ext) in formats() {
            std::fs::write(dir.join(format!("{name}.{ext}")), ok(ind, f).body).unwrap();
        }
    }
    // Grouped documents: every case in one, and one at the upper bound of the size.
    let inds: Vec<Indicator> = all.into_iter().map(|(_, i)| i).collect();
    for (f, ext) in formats() {
        let doc = grouped(&inds, f);
        std::fs::write(dir.join(format!("grouped_cases.{ext}")), doc.body).unwrap();
        let doc = grouped(
            &many(tanium_tr_indicators::config::MAX_PER_DOCUMENT as usize),
            f,
        );
        std::fs::write(dir.join(format!("grouped_largest.{ext}")), doc.body).unwrap();
    }
}

fn grouped(inds: &[Indicator], f: Format) -> group::GroupDoc {
    let mut members: Vec<group::Member> = inds
        .iter()
        .map(|i| group::member(i).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    // (some cases are the same indicator in other shapes)
    members.sort_by_key(|m| m.identity);
    members.dedup_by_key(|m| m.identity);
    let labels = vec!["ThreatConnect".to_string(), HOSTILE.to_string()];
    let key = group::BucketKey::root(group::label_set_hash(&labels));
    group::render(f, &key, &mut members, HOSTILE, &labels)
}

/// `n` indicators of every type, each with the full context.
fn many(n: usize) -> Vec<Indicator> {
    (0..n)
        .map(|k| {
            let mut i = match k % 3 {
                0 => full(address(&format!("198.51.{}.{}", k / 250 % 250, k % 250))),
                1 => full(host(&format!("h{k}.example"))),
                _ => {
                    let hex = |len: usize| format!("{k:0len$x}");
                    full(file(Some(&hex(32)), Some(&hex(40)), Some(&hex(64))))
                }
            };
            i.id = k as i64;
            i
        })
        .collect()
}

#[test]
fn grouped_documents_hold_hostile_values_and_read_back() {
    let mut inds: Vec<Indicator> = cases().into_iter().map(|(_, i)| i).collect();
    inds.push(many_tags());
    for (f, _) in formats() {
        let doc = grouped(&inds, f);
        roxmltree::Document::parse(&doc.body).unwrap_or_else(|e| panic!("{e}"));
        let back = group::read(&doc.body).unwrap();
        assert_eq!(back.members.len() as u64, doc.count);
        let mut again = back.members.clone();
        let key = back.key.unwrap();
        let labels = vec!["ThreatConnect".to_string(), HOSTILE.to_string()];
        assert_eq!(
            group::render(f, &key, &mut again, HOSTILE, &labels).body,
            doc.body,
            "what is read back renders the same bytes"
        );
        assert_eq!(back.key, Some(doc.key));
        for ind in &inds {
            let m = group::member(ind).unwrap();
            assert!(
                back.members.iter().any(|b| b.identity == m.identity),
                "{f}: {}",
                m.line
            );
            // Each item carries an id derived from the indicator's identity.
            assert!(doc.body.contains(&m.identity.to_string()));
        }
        assert!(!doc.body.contains('\u{0}') && !doc.body.contains("<script>"));
    }
}

fn huge() -> Indicator {
    let mut i = full(address("192.0.2.55"));
    i.description = Some("<&>\"' ".repeat(200_000));
    i
}

fn many_tags() -> Indicator {
    let mut i = full(file(Some(MD5), None, None));
    i.tags = (0..5000).map(|n| format!("tag <{n}> & \"q\"")).collect();
    i
}

// ---- well-formedness and round trip ----

fn child<'a>(n: roxmltree::Node<'a, 'a>, ns: &str, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    n.descendants()
        .filter(|d| {
            d.is_element() && d.tag_name().name() == name && d.tag_name().namespace() == Some(ns)
        })
        .collect()
}

fn one_text(n: roxmltree::Node, ns: &str, name: &str) -> String {
    let found = child(n, ns, name);
    assert_eq!(found.len(), 1, "one {name}");
    found[0].text().unwrap_or_default().to_string()
}

/// Parses a package and checks what every document must hold; returns (root id, description).
fn check(p: &Package) -> (String, String) {
    assert!(p
        .body
        .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
    let doc = roxmltree::Document::parse(&p.body).unwrap_or_else(|e| panic!("{e}\n{}", p.body));
    let root = doc.root_element();
    let (id, title, description) = match p.format {
        Format::Stix => {
            assert_eq!(root.tag_name().name(), "STIX_Package");
            assert_eq!(root.tag_name().namespace(), Some(STIX_NS));
            assert_eq!(root.attribute("version"), Some("1.2"));
            let ind_ns = "http://stix.mitre.org/Indicator-2";
            let inds = child(root, STIX_NS, "Indicator");
            assert_eq!(inds.len(), 1);
            assert_eq!(
                inds[0].attribute("id"),
                Some(format!("tctr:indicator-{}", p.identity).as_str())
            );
            let title = one_text(root, ind_ns, "Title");
            assert_eq!(one_text(root, STIX_NS, "Title"), title);
            let d = one_text(root, ind_ns, "Description");
            assert_eq!(one_text(root, STIX_NS, "Description"), d);
            assert_eq!(
                child(root, "http://cybox.mitre.org/cybox-2", "Object").len(),
                1
            );
            (root.attribute("id").unwrap().to_string(), title, d)
        }
        Format::OpenIoc => {
            assert_eq!(root.tag_name().name(), "OpenIOC");
            assert_eq!(root.tag_name().namespace(), Some(IOC_NS));
            let crit = child(root, IOC_NS, "criteria");
            assert_eq!(crit.len(), 1);
            let ors = child(crit[0], IOC_NS, "Indicator");
            assert_eq!(ors.len(), 1);
            assert_eq!(ors[0].attribute("operator"), Some("OR"));
            let mut ids: Vec<&str> = child(root, IOC_NS, "IndicatorItem")
                .iter()
                .map(|n| n.attribute("id").unwrap())
                .collect();
            ids.push(ors[0].attribute("id").unwrap());
            let n = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), n, "item ids are unique");
            assert!(ids
                .iter()
                .all(|i| i.len() == 36 && *i != p.identity.to_string()));
            for d in ["last-modified", "published-date"] {
                assert!(root.attribute(d).unwrap().ends_with('Z'));
            }
            (
                root.attribute("id").unwrap().to_string(),
                one_text(root, IOC_NS, "short_description"),
                one_text(root, IOC_NS, "description"),
            )
        }
    };
    assert_eq!(title, p.name);
    let marker = format!("tc-sync: {} rev {}", p.identity, p.rev);
    assert!(description.ends_with(&marker), "{description}");
    assert_eq!(p.rev.to_string().len(), 16);
    assert!(p
        .rev
        .to_string()
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    (id, description)
}

#[test]
fn every_sample_is_well_formed_and_points_back_to_its_identity() {
    let mut all = cases();
    all.push(("huge", huge()));
    all.push(("many_tags", many_tags()));
    for (name, ind) in all {
        for (f, _) in formats() {
            let p = ok(&ind, f);
            let (id, description) = check(&p);
            assert_eq!(
                identity_from_doc(Some(&id), &p.name, None),
                Some(p.identity),
                "{name}"
            );
            assert_eq!(
                identity_from_doc(None, &p.name, Some(&description)),
                Some(p.identity)
            );
            assert_eq!(rev_from_doc(Some(&description)), Some(p.rev));
            assert!(p.file_name.starts_with(&p.identity.to_string()));
            assert!(p.body.len() < 16_000, "{name}: {} bytes", p.body.len());
        }
    }
}

#[test]
fn hostile_values_round_trip_after_unescaping() {
    let cleaned: String = HOSTILE
        .chars()
        .filter(|c| !matches!(*c, '\u{0}' | '\u{1b}' | '\u{FFFE}'))
        .collect();
    let mut i = full(address("203.0.113.9"));
    i.description = Some(format!("x {HOSTILE} y"));
    for (f, _) in formats() {
        let p = ok(&i, f);
        assert!(
            !p.body.contains('\u{0}') && !p.body.contains('\u{1b}') && !p.body.contains('\u{FFFE}')
        );
        let (_, description) = check(&p);
        // \r survives as &#13;, U+007F and the RTL override are legal XML and are kept.
        assert!(
            description.contains(&format!("Description: x {cleaned} y")),
            "{description:?}"
        );
    }
    // single-line fields (owner, tags) fold white space but keep every legal character
    let mut h = host("a.example");
    h.owner_name = HOSTILE.into();
    h.tags = vec!["<b>&\"'".into()];
    let p = ok(&h, Format::Stix);
    let (_, d) = check(&p);
    let folded = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(d.contains(&format!("Owner: {folded}\n")), "{d:?}");
    assert!(d.contains("Tags: <b>&\"'\n"));
    assert_eq!(
        p.owner, HOSTILE,
        "the package keeps the owner as TC sent it"
    );
}

#[test]
fn huge_descriptions_and_thousands_of_tags_are_trimmed() {
    let p = ok(&huge(), Format::Stix);
    let (_, d) = check(&p);
    let tc = d
        .split("Description: ")
        .nth(1)
        .unwrap()
        .split("\ntc-sync:")
        .next()
        .unwrap();
    assert_eq!(tc.chars().count(), 1000);
    assert!(tc.ends_with('…'));
    let p = ok(&many_tags(), Format::OpenIoc);
    let (_, d) = check(&p);
    assert!(d.contains("(and 4950 more)"), "{d}");
    let mut sorted = many_tags().tags;
    sorted.sort();
    let line = format!("Tags: {} (and 4950 more)\n", sorted[..50].join(", "));
    assert!(d.contains(&line), "{d}");
}

// ---- shapes per type ----

fn parse(p: &Package) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(&p.body).unwrap()
}

#[test]
fn stix_objects_per_type() {
    let cyc = "http://cybox.mitre.org/common-2";
    let p = ok(&address("2001:0DB8:0:0::0001"), Format::Stix);
    assert_eq!(p.value, "2001:db8::1");
    assert_eq!(p.name, "ThreatConnect Address 2001:db8::1");
    let d = parse(&p);
    let v = child(
        d.root_element(),
        "http://cybox.mitre.org/objects#AddressObject-2",
        "Address_Value",
    );
    assert_eq!(v[0].text(), Some("2001:db8::1"));
    assert_eq!(
        v[0].parent().unwrap().attribute("category"),
        Some("ipv6-addr")
    );
    let p = ok(&address(" 203.0.113.7 "), Format::Stix);
    assert!(p.body.contains(r#"category="ipv4-addr""#));

    let p = ok(&host("Bad.Example.COM."), Format::Stix);
    assert_eq!(p.value, "bad.example.com");
    let d = parse(&p);
    let v = child(
        d.root_element(),
        "http://cybox.mitre.org/objects#DomainNameObject-1",
        "Value",
    );
    assert_eq!(v[0].text(), Some("bad.example.com"));
    let plain_type = v[0]
        .parent()
        .unwrap()
        .attributes()
        .find(|a| a.name() == "type" && a.namespace().is_none())
        .map(|a| a.value());
    assert_eq!(plain_type, Some("FQDN"));

    let p = ok(&file(Some(MD5), None, Some(SHA256)), Format::Stix);
    assert_eq!(p.name, format!("ThreatConnect File {}", MD5.to_lowercase()));
    assert_eq!(
        p.value,
        format!("{} : {}", MD5.to_lowercase(), SHA256.to_lowercase())
    );
    let d = parse(&p);
    let types: Vec<_> = child(d.root_element(), cyc, "Type")
        .iter()
        .map(|n| n.text().unwrap())
        .collect();
    let values: Vec<_> = child(d.root_element(), cyc, "Simple_Hash_Value")
        .iter()
        .map(|n| n.text().unwrap())
        .collect();
    assert_eq!(types, ["MD5", "SHA256"]);
    assert_eq!(values, [MD5.to_lowercase(), SHA256.to_lowercase()]);
}

#[test]
fn openioc_terms_per_type() {
    let terms = |p: &Package| -> Vec<(String, String, String)> {
        let d = parse(p);
        child(d.root_element(), IOC_NS, "IndicatorItem")
            .iter()
            .map(|item| {
                assert_eq!(item.attribute("condition"), Some("is"));
                let ctx = child(*item, IOC_NS, "Context")[0];
                let content = child(*item, IOC_NS, "Content")[0];
                (
                    ctx.attribute("search").unwrap().to_string(),
                    content.attribute("type").unwrap().to_string(),
                    content.text().unwrap().to_string(),
                )
            })
            .collect()
    };
    let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        terms(&ok(&address("203.0.113.7"), Format::OpenIoc)),
        [t("PortItem/remoteIP", "IP", "203.0.113.7")]
    );
    assert_eq!(
        terms(&ok(&host("BAD.example.com"), Format::OpenIoc)),
        [
            t("Network/DNS", "string", "bad.example.com"),
            t("DnsEntryItem/Host", "string", "bad.example.com")
        ]
    );
    let (m, s1, s2) = (
        MD5.to_lowercase(),
        SHA1.to_lowercase(),
        SHA256.to_lowercase(),
    );
    assert_eq!(
        terms(&ok(
            &file(Some(MD5), Some(SHA1), Some(SHA256)),
            Format::OpenIoc
        )),
        [
            t("FileItem/Md5sum", "md5", &m),
            t("FileItem/Sha1sum", "string", &s1),
            t("FileItem/Sha256sum", "string", &s2)
        ]
    );
    let p = ok(&full(address("203.0.113.7")), Format::OpenIoc);
    assert_eq!(p.file_name, format!("{}.ioc", p.identity));
    assert_eq!(p.type_header(), "openioc");
    let d = parse(&p);
    assert_eq!(
        d.root_element().attribute("id"),
        Some(p.identity.to_string().as_str())
    );
    assert_eq!(
        d.root_element().attribute("last-modified"),
        Some("2021-11-02T14:58:55Z")
    );
    assert_eq!(
        one_text(d.root_element(), IOC_NS, "authored_date"),
        "2021-11-02T14:58:55Z"
    );
    let link = child(d.root_element(), IOC_NS, "link")[0];
    assert_eq!(
        link.attribute("href"),
        full(address("x")).web_link.as_deref()
    );
}

#[test]
fn description_carries_the_tc_context() {
    let p = ok(&full(address("203.0.113.7")), Format::Stix);
    let (_, d) = check(&p);
    let want = format!(
        "ThreatConnect Address 203.0.113.7\nOwner: Demo Org\nThreatConnect id: 42\nRating: 3.5 / 5\n\
         Confidence: 74 / 100\nThreatAssess score: 405 / 1000\nTags: APT, Targeted Attack\n\
         Last modified: 2021-11-02T14:58:55Z\nLink: {}\nDescription: Seen in a phishing campaign.\nSecond line.\n\
         tc-sync: {} rev {}",
        full(address("x")).web_link.unwrap(),
        p.identity,
        p.rev
    );
    assert_eq!(d, want);
    assert_eq!(p.file_name, format!("{}.stix", p.identity));
    assert_eq!(p.type_header(), "stix");
    assert_eq!(p.content_type(), "application/xml");
}

#[test]
fn md5_is_of_the_body() {
    use md5::{Digest, Md5};
    let p = ok(&address("203.0.113.7"), Format::Stix);
    let want: String = Md5::digest(p.body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(p.md5_hex(), want);
}

// ---- determinism and rev ----

#[test]
fn rendering_is_deterministic_and_rev_tracks_every_change() {
    for (_, ind) in cases() {
        for (f, _) in formats() {
            assert_eq!(ok(&ind, f), ok(&ind, f));
        }
    }
    let a = full(address("203.0.113.7"));
    let mut reordered = a.clone();
    reordered.tags.reverse();
    assert_eq!(ok(&a, Format::Stix).body, ok(&reordered, Format::Stix).body);

    type Change = fn(&mut Indicator);
    let changes: [Change; 8] = [
        |i| i.rating = Some(4.0),
        |i| i.confidence = None,
        |i| i.threat_assess_score = Some(1),
        |i| i.tags.push("new".into()),
        |i| i.description = Some("other".into()),
        |i| i.web_link = None,
        |i| i.last_modified = "2022-01-01T00:00:00Z".into(),
        |i| i.id = 43,
    ];
    for (f, _) in formats() {
        let before = ok(&a, f);
        for (n, change) in changes.iter().enumerate() {
            let mut b = a.clone();
            change(&mut b);
            let after = ok(&b, f);
            assert_eq!(
                after.identity, before.identity,
                "change {n} keeps the identity"
            );
            assert_ne!(after.rev, before.rev, "change {n} changes the rev");
            assert_ne!(after.md5_hex(), before.md5_hex());
        }
    }
    assert_ne!(ok(&a, Format::Stix).rev, ok(&a, Format::OpenIoc).rev);
}

// ---- identity ----

#[test]
fn identity_matches_identity_of_the_summary() {
    for (name, ind) in cases() {
        let kind = ind.kind().unwrap();
        let p = ok(&ind, Format::Stix);
        assert_eq!(
            identity_of(&ind.owner_name, kind, &ind.summary),
            Ok(p.identity),
            "{name}"
        );
        assert_eq!(
            ok(&ind, Format::OpenIoc).identity,
            p.identity,
            "format does not change identity"
        );
    }
    let f = file(Some(MD5), Some(SHA1), Some(SHA256));
    let id = ok(&f, Format::Stix).identity;
    // TC's summary order and case do not matter; the first of md5, sha1, sha256 keys it
    for summary in [
        format!("{MD5} : {SHA1} : {SHA256}"),
        format!("{} : {}", SHA256.to_lowercase(), MD5.to_lowercase()),
        format!(" {MD5} "),
    ] {
        assert_eq!(
            identity_of("Demo Org", IndicatorType::File, &summary),
            Ok(id),
            "{summary}"
        );
    }
    // adding a hash to an md5 file keeps its identity
    assert_eq!(ok(&file(Some(MD5), None, None), Format::Stix).identity, id);
    assert_eq!(
        ok(&file(Some(MD5), None, Some(SHA256)), Format::Stix).identity,
        id
    );
    assert_ne!(
        ok(&file(None, Some(SHA1), Some(SHA256)), Format::Stix).identity,
        id
    );
    // equivalent spellings of one value
    let v6 = identity_of("o", IndicatorType::Address, "2001:db8::1").unwrap();
    assert_eq!(
        identity_of("o", IndicatorType::Address, "2001:0DB8:0:0:0:0:0:1"),
        Ok(v6)
    );
    let h = identity_of("o", IndicatorType::Host, "bad.example.com").unwrap();
    assert_eq!(
        identity_of("o", IndicatorType::Host, " BAD.Example.com. "),
        Ok(h)
    );
    assert!(identity_of("o", IndicatorType::Address, "nope").is_err());
    assert!(identity_of("o", IndicatorType::File, "abc : def").is_err());
}

fn kind_strategy() -> impl Strategy<Value = IndicatorType> {
    prop_oneof![
        Just(IndicatorType::Address),
        Just(IndicatorType::File),
        Just(IndicatorType::Host)
    ]
}

fn value_for(kind: IndicatorType, n: u32) -> String {
    match kind {
        IndicatorType::Address => std::net::Ipv4Addr::from(n).to_string(),
        IndicatorType::Host => format!("h{n}.example.com"),
        IndicatorType::File => format!("{n:032x}"),
    }
}

proptest! {
    #[test]
    fn identities_are_stable_and_distinct(
        owner_a in "\\PC{0,20}", owner_b in "\\PC{0,20}",
        kind_a in kind_strategy(), kind_b in kind_strategy(),
        n_a in any::<u32>(), n_b in any::<u32>(),
    ) {
        let a = identity_of(&owner_a, kind_a, &value_for(kind_a, n_a)).unwrap();
        let b = identity_of(&owner_b, kind_b, &value_for(kind_b, n_b)).unwrap();
        prop_assert_eq!(&a, &identity_of(&owner_a, kind_a, &value_for(kind_a, n_a)).unwrap());
        let same = owner_a == owner_b && kind_a == kind_b && n_a == n_b;
        prop_assert_eq!(a == b, same);
        prop_assert_eq!(identity_from_doc(Some(&a.to_string()), "", None), Some(a));
    }

    #[test]
    fn render_agrees_with_identity_of(owner in "\\PC{0,30}", n in any::<u32>(), kind in kind_strategy()) {
        let v = value_for(kind, n);
        let mut i = match kind {
            IndicatorType::Address => address(&v),
            IndicatorType::Host => host(&v),
            IndicatorType::File => file(Some(&v), None, None),
        };
        i.owner_name = owner.clone();
        let p = render(&i, Format::OpenIoc).unwrap();
        prop_assert_eq!(Ok(p.identity), identity_of(&owner, kind, &v));
        let d = roxmltree::Document::parse(&p.body).unwrap();
        let id = p.identity.to_string();
        prop_assert_eq!(d.root_element().attribute("id"), Some(id.as_str()));
    }

    #[test]
    fn any_text_renders_well_formed(desc in "\\PC*|[\\x00-\\x7f]*", tag in ".*") {
        let mut i = full(host("a.example"));
        i.description = Some(desc);
        i.tags = vec![tag];
        for (f, _) in formats() {
            let p = render(&i, f).unwrap();
            check(&p);
        }
    }
}

// ---- invalid values ----

#[test]
fn invalid_values_are_skipped_with_a_reason() {
    let cases: Vec<(Indicator, &str)> = vec![
        (address("abc"), "not an IP address"),
        (address("1.2.3"), "not an IP address"),
        (address("256.1.1.1"), "not an IP address"),
        (address("1.2.3.4/24"), "not an IP address"),
        (address(""), "not an IP address"),
        (host(""), "empty host name"),
        (host("  . "), "empty host name"),
        (host("bad host.com"), "white space"),
        (host("a..b.com"), "empty label"),
        (host(".a.com"), "empty label"),
        (host("bad<host>.com"), "the character '<'"),
        (host("http://x.com/"), "the character ':'"),
        (
            host(&format!("{}.com", "a".repeat(64))),
            "label longer than 63",
        ),
        (host(&["abcdefghi"; 26].join(".")), "longer than 253"),
        (file(Some("abc"), None, None), "MD5 hash has 3 characters"),
        (file(Some(&"g".repeat(32)), None, None), "non-hex"),
        (file(Some(SHA1), None, None), "MD5 hash has 40 characters"),
        (
            file(Some(MD5), Some("zz"), Some(SHA256)),
            "SHA1 hash has 2 characters",
        ),
        (file(None, None, None), "file has no hash"),
        (base("URL", "http://x"), "type 'URL' is not sent"),
        (
            base("EmailAddress", "a@b"),
            "type 'EmailAddress' is not sent",
        ),
    ];
    for (ind, why) in cases {
        for (f, _) in formats() {
            let e = render(&ind, f).expect_err(why);
            assert!(e.reason.contains(why), "{e} should say {why}");
            assert_eq!((e.indicator_id, e.owner.as_str()), (42, "Demo Org"));
            assert_eq!(e.summary, ind.summary);
        }
    }
    // a File summary with an unknown hash length is invalid too
    let mut f = file(None, None, None);
    f.summary = format!("{MD5} : 1234");
    assert!(render(&f, Format::Stix)
        .unwrap_err()
        .reason
        .contains("4 characters"));
}

#[test]
fn invalid_names_the_indicator_on_one_line() {
    let e = render(&address("abc"), Format::Stix).unwrap_err();
    assert_eq!(
        e.to_string(),
        "skipped Address 'abc' (id 42, owner 'Demo Org'): not an IP address"
    );
    let mut i = address("a\nb");
    i.summary = "a\nforged log line".into();
    assert!(!render(&i, Format::Stix)
        .unwrap_err()
        .to_string()
        .contains('\n'));
}

// ---- reading identities back from Tanium listings ----

#[test]
fn identity_from_doc_tolerates_every_intrinsic_id_shape() {
    let p = ok(&full(host("a.example")), Format::Stix);
    let (_, description) = check(&p);
    let id = p.identity;
    let some = Some::<Identity>;
    for intrinsic in [
        format!("tctr:Package-{id}"),
        format!("tctr:indicator-{id}"),
        id.to_string(),
        id.to_string().to_uppercase(),
        format!("  {id} "),
    ] {
        assert_eq!(
            identity_from_doc(Some(&intrinsic), "whatever", None),
            some(id),
            "{intrinsic}"
        );
    }
    // absent or foreign intrinsicId: the description marker decides
    let foreign = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"; // a v4 uuid somebody else made
    for intrinsic in [None, Some(foreign), Some("file.yara"), Some("")] {
        assert_eq!(
            identity_from_doc(intrinsic, &p.name, Some(&description)),
            some(id)
        );
        assert_eq!(identity_from_doc(intrinsic, &p.name, None), None);
    }
    // Tanium may fold the description onto one line
    let folded = description.replace('\n', " ");
    assert_eq!(identity_from_doc(None, "", Some(&folded)), some(id));
    assert_eq!(rev_from_doc(Some(&folded)), Some(p.rev));
    // a marker in the name is the last resort
    assert_eq!(
        identity_from_doc(None, &format!("x tc-sync: {id}"), None),
        some(id)
    );
    // the marker we append wins over one planted in the TC description
    let mut planted = full(host("a.example"));
    let other = identity_of("Demo Org", IndicatorType::Host, "b.example").unwrap();
    planted.description = Some(format!("tc-sync: {other} rev 0000000000000000"));
    let q = ok(&planted, Format::OpenIoc);
    let (_, d) = check(&q);
    assert_eq!(identity_from_doc(None, "", Some(&d)), some(q.identity));
    assert_eq!(rev_from_doc(Some(&d)), Some(q.rev));
    assert_eq!(rev_from_doc(None), None);
    assert_eq!(rev_from_doc(Some("no marker")), None);
    assert_eq!(rev_from_doc(Some(&format!("tc-sync: {id}"))), None);
}
