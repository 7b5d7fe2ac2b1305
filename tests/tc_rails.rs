//! What ThreatConnect already knows, honoured through the real binary in both layouts: its
//! Indicator Exclusion Lists (System and owner lists, fixed and variable values, a change
//! acting at the next run, lists the Api User cannot read) and each indicator's expiry (past
//! it, not sent; expiring between two runs without a modification, gone at the next), in the
//! order an admin meets them, and both params off giving back the job as it was.
//!
//! The expectations are written here from the lists' own rules (a CIDR range, a `*` pattern,
//! an owner's list for that owner only), not taken from the app's matcher.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tanium_tr_indicators::intel::group;
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::tc_exclusions::SimExclusionList;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;
use tanium_tr_indicators::tc::tql::format_time;
use time::OffsetDateTime;

use crate::support::{expected, expected_name, lab};

const ORG: &str = "Demo Organization";
const COMMUNITY: &str = "Common Community";
const SHA: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

fn run_with(lab: &mut Lab, extra: &[(&str, Value)]) -> RunResult {
    let extra: Map<String, Value> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    lab.run(&extra, &[]).unwrap()
}

fn ok(lab: &mut Lab) -> RunResult {
    let r = run_with(lab, &[]);
    assert_eq!(r.code, 0, "message: {}\nlog:\n{}", r.message, r.log);
    r
}

fn ago(days: i64) -> String {
    format_time(OffsetDateTime::now_utc() - time::Duration::days(days))
}

fn indicator(id: i64, owner: &str, type_name: &str, value: &str) -> Indicator {
    let mut i = Indicator {
        id,
        owner_id: Some(if owner == ORG { 1 } else { 2 }),
        owner_name: owner.into(),
        type_name: type_name.into(),
        summary: value.into(),
        rating: Some(3.0),
        confidence: Some(60),
        threat_assess_score: Some(500),
        last_modified: ago(2),
        ..Indicator::default()
    };
    match type_name {
        "Address" => i.ip = Some(value.into()),
        "Host" => i.host_name = Some(value.into()),
        _ => i.sha256 = Some(value.into()),
    }
    i
}

/// What the source holds, indicator by indicator (single documents by name, grouped ones by
/// their members), sorted.
fn covered(lab: &Lab) -> Vec<String> {
    let mut v = Vec::new();
    for d in lab.source_docs() {
        match group::read(&d.body).ok().filter(|g| g.key.is_some()) {
            Some(g) => v.extend(g.members.iter().map(|m| m.title())),
            None => v.push(d.name),
        }
    }
    v.sort();
    v
}

fn name(type_name: &str, value: &str) -> String {
    format!("ThreatConnect {type_name} {value}")
}

/// Every active indicator TC holds, but those named.
fn all_but(lab: &Lab, out: &[String]) -> Vec<String> {
    expected(lab, |i| expected_name(i).is_some_and(|n| !out.contains(&n)))
}

/// The values the lists will exclude, and their neighbours that no list excludes.
struct Planted {
    /// Excluded once the admin fills the lists: (type, value).
    listed: Vec<(&'static str, &'static str)>,
    /// Never excluded: the range's, the pattern's and the owner list's neighbours.
    near: Vec<(&'static str, &'static str)>,
}

/// The lab of a scenario: 40 generated indicators, the values the lists will name and their
/// neighbours, one indicator long expired, and the lists as a fresh instance has them (a
/// System list, and an owner list of another type the job does not send).
fn scenario_lab(per_document: &str) -> (tempfile::TempDir, Lab, Planted) {
    let (dir, mut lab) = lab(ApiGeneration::V4, 40, 23);
    lab.set("indicators_per_document", json!(per_document));
    let planted = Planted {
        listed: vec![
            ("Address", "203.0.113.5"),
            ("Address", "198.51.100.7"),
            ("Host", "mail.example.com"),
            ("Host", "vpn.corp.example"),
            ("File", SHA),
        ],
        near: vec![
            ("Address", "198.51.101.7"),
            ("Address", "198.51.99.255"),
            ("Host", "corp.example"),
            ("Host", "notcorp.example"),
        ],
    };
    let mut id = 1000;
    for (t, v) in planted.listed.iter().chain(&planted.near) {
        id += 1;
        lab.tc.insert(indicator(id, ORG, t, v));
    }
    // The Community's own mail.example.net: the Organization's list below names it, and an
    // owner's list applies to that owner's indicators only.
    lab.tc
        .insert(indicator(1100, COMMUNITY, "Host", "mail.example.net"));
    let mut gone = indicator(1101, ORG, "Host", "expired.example");
    gone.external_date_expires = Some(ago(1));
    lab.tc.insert(gone);
    lab.tc.add_exclusion_list(SimExclusionList::managed(
        "Indicator-Address-IPv4",
        &["192.0.2.200"],
        &[],
    ));
    lab.tc.add_exclusion_list(SimExclusionList::new(
        "Indicator-ASN-AS Number",
        Some(ORG),
        &["AS13335"],
        &[],
    ));
    (dir, lab, planted)
}

/// The admin's order: a first run with the defaults; the lists filled (a System list with a
/// value and a CIDR range, an owner's host list without the `Indicator-` prefix holding a value
/// and a wildcard, an owner's SHA256 list), previewed with a dry run, then applied; an
/// indicator expiring between two runs; the Api User losing its role (403 or 401) while a list
/// grows, and getting it back; both params off.
fn scenario(per_document: &str, denial: u16) {
    let (_d, mut lab, planted) = scenario_lab(per_document);
    let expired = name("Host", "expired.example");

    // 1. The defaults: the lists exclude nothing the job holds; the expired indicator is not
    // sent.
    let r = ok(&mut lab);
    assert_eq!(covered(&lab), all_but(&lab, std::slice::from_ref(&expired)));
    assert!(r.message.contains(", 1 expired in TC"), "{}", r.message);
    assert!(
        r.log.contains("not sent: ThreatConnect Host expired.example (Demo Organization): expired in ThreatConnect on "),
        "{}",
        r.log
    );
    assert!(
        r.log.contains("exclusion lists: 1 applies to the job"),
        "{}",
        r.log
    );
    assert_eq!(
        r.results["exclusion_fingerprint"].len(),
        16,
        "{:?}",
        r.results
    );

    // 2. The admin fills the lists.
    let v4 = lab.tc.add_exclusion_list(SimExclusionList::managed(
        "Indicator-Address-IPv4",
        &["203.0.113.5"],
        &["198.51.100.0/24"],
    ));
    lab.tc.add_exclusion_list(SimExclusionList::new(
        "Host",
        Some(ORG),
        &["MAIL.example.com", "mail.example.net"],
        &["*.corp.example"],
    ));
    lab.tc.add_exclusion_list(SimExclusionList::new(
        "Indicator-File-SHA256",
        Some(ORG),
        &[&SHA.to_uppercase()],
        &[],
    ));
    let listed: Vec<String> = planted.listed.iter().map(|(t, v)| name(t, v)).collect();
    let mut out = listed.clone();
    out.push(expired.clone());

    // A dry run first: each removal with its reason, nothing changed.
    let before = covered(&lab);
    let dry = run_with(&mut lab, &[("dry_run", json!(true))]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.message, dry.log);
    assert_eq!(covered(&lab), before, "a dry run changes nothing");
    for (list, what) in [
        ("Indicator-Address-IPv4", "Address 203.0.113.5"),
        ("Indicator-Address-IPv4", "Address 198.51.100.7"),
        ("Host of Demo Organization", "Host mail.example.com"),
        ("Host of Demo Organization", "Host vpn.corp.example"),
    ] {
        let reason = format!("on a TC exclusion list ({list})");
        let said = dry
            .stdout
            .lines()
            .any(|l| l.starts_with("remove ") && l.contains(what) && l.ends_with(&reason));
        assert!(said, "{what}: {reason}\n{}", dry.stdout);
    }

    // The run after the change: a full reconcile applies the lists to what the source holds.
    let r = ok(&mut lab);
    assert!(
        r.log
            .contains("full reconcile: ThreatConnect's exclusion lists changed"),
        "{}",
        r.log
    );
    assert_eq!(covered(&lab), all_but(&lab, &out));
    for n in planted.near.iter().map(|(t, v)| name(t, v)) {
        assert!(covered(&lab).contains(&n), "{n} is on no list");
    }
    assert!(covered(&lab).contains(&name("Host", "mail.example.net")));
    assert!(
        r.log
            .contains("on a TC exclusion list (Indicator-Address-IPv4) 2")
            && r.log
                .contains("on a TC exclusion list (Host of Demo Organization) 2")
            && r.log
                .contains("on a TC exclusion list (Indicator-File-SHA256 of Demo Organization) 1"),
        "removals counted per list:\n{}",
        r.log
    );
    assert!(r.message.contains("5 removed"), "{}", r.message);

    // 3. An indicator TC has held for a day, expiring in a few seconds: sent now, gone at the
    // next run although TC does not modify it.
    let soon = OffsetDateTime::now_utc() + Duration::from_secs(6);
    let mut expiring = indicator(1200, ORG, "Host", "expiring.example");
    expiring.last_modified = ago(1);
    expiring.external_date_expires = Some(format_time(soon));
    lab.tc.insert(expiring.clone());
    lab.set("reconcile_interval_hours", json!("0"));
    let r = ok(&mut lab);
    lab.params.remove("reconcile_interval_hours");
    let expiring_name = name("Host", "expiring.example");
    assert!(
        covered(&lab).contains(&expiring_name),
        "not expired yet: {}",
        r.message
    );
    while OffsetDateTime::now_utc() <= soon + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let dry = run_with(&mut lab, &[("dry_run", json!(true))]);
    let reason = format!("expired in ThreatConnect on {}", format_time(soon));
    assert!(
        dry.stdout.lines().any(|l| l.starts_with("remove ")
            && l.contains("Host expiring.example")
            && l.ends_with(&reason)),
        "{reason}\n{}",
        dry.stdout
    );
    let r = ok(&mut lab);
    assert!(r.log.contains("incremental run"), "{}", r.log);
    assert!(r.log.contains("expired since the last run: "), "{}", r.log);
    assert!(!covered(&lab).contains(&expiring_name), "{}", r.log);
    assert_eq!(
        lab.tc.get(1200).unwrap().last_modified,
        expiring.last_modified,
        "TC did not modify it"
    );
    assert!(
        r.log
            .contains("removals planned 1 (expired in ThreatConnect 1)"),
        "{}",
        r.log
    );
    out.push(expiring_name);
    assert_eq!(covered(&lab), all_but(&lab, &out));

    // 4. The Api User loses its role while the System list grows: the run says what to grant,
    // exits 3 and removes nothing for the lists it could not read.
    lab.tc.deny_exclusion_lists(Some(denial));
    lab.tc
        .edit_exclusion_list(v4, |l| l.fixed.push("198.51.101.7".into()));
    let held = covered(&lab);
    let r = run_with(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}\n{}", r.message, r.log);
    assert!(
        r.message.starts_with(
            "Partial sync to Tanium source \"ThreatConnect\": ThreatConnect exclusion lists unreadable: the Api User needs the Organization role Standard User or above (Editor or Director in a Community or Source), or turn off Honor Exclusion Lists"
        ),
        "{}",
        r.message
    );
    assert_eq!(
        covered(&lab),
        held,
        "nothing removed for lists it could not read"
    );
    assert_eq!(r.results["exclusion_fingerprint"], "unread");
    assert!(
        r.log
            .contains(&format!("{denial} to GET /api/v3/security/exclusionLists")),
        "{}",
        r.log
    );

    // The role back: the first run that reads them reconciles fully and applies them.
    lab.tc.deny_exclusion_lists(None);
    let r = ok(&mut lab);
    assert!(
        r.log.contains("full reconcile: ThreatConnect's exclusion lists changed (or the last run could not read them)"),
        "{}",
        r.log
    );
    out.push(name("Address", "198.51.101.7"));
    assert_eq!(covered(&lab), all_but(&lab, &out));

    // 5. Both off: the job as it was before these rails, everything active sent again, and
    // neither the lists nor the expiry asked for.
    lab.set("honor_exclusion_lists", json!(false));
    lab.set("honor_expiry", json!(false));
    lab.tc.server().reset_counters();
    let r = ok(&mut lab);
    assert!(
        r.log.contains("full reconcile: the job's filters changed"),
        "{}",
        r.log
    );
    assert_eq!(covered(&lab), expected(&lab, |_| true));
    assert!(
        r.message.contains(&format!("{} created", out.len())),
        "{}",
        r.message
    );
    assert_eq!(r.results["exclusion_fingerprint"], "");
    assert_eq!(
        lab.tc.server().hits("GET /api/v3/security/exclusionLists"),
        0
    );
    let r = ok(&mut lab);
    assert!(r.log.contains("incremental run"), "{}", r.log);
    assert!(
        !r.log.contains("externalDateExpires"),
        "no expiry query: {}",
        r.log
    );
    assert_eq!(
        lab.tc.server().hits("GET /api/v3/security/exclusionLists"),
        0
    );
}

#[test]
fn per_indicator_exclusion_lists_and_expiry_in_the_admins_order() {
    scenario("1", 403);
}

#[test]
fn grouped_exclusion_lists_and_expiry_in_the_admins_order() {
    scenario("5", 401);
}

/// User TQL replaces the filters, never the rails: a listed value and an expired indicator the
/// TQL selects are not sent.
#[test]
fn with_tql_the_lists_and_the_expiry_still_apply() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    lab.tc.insert(indicator(1, ORG, "Host", "kept.example"));
    lab.tc.insert(indicator(2, ORG, "Host", "listed.example"));
    let mut old = indicator(3, ORG, "Host", "old.example");
    old.external_date_expires = Some(ago(3));
    lab.tc.insert(old);
    lab.tc.insert(indicator(4, ORG, "Host", "other.test"));
    lab.tc.add_exclusion_list(SimExclusionList::managed(
        "Indicator-Host",
        &[],
        &["listed.*"],
    ));
    lab.set("tql", json!(r#"summary ENDSWITH ".example""#));
    let r = ok(&mut lab);
    assert_eq!(covered(&lab), vec![name("Host", "kept.example")]);
    assert!(
        r.message
            .contains(", 1 on TC exclusion lists, 1 expired in TC"),
        "{}",
        r.message
    );
    assert!(
        r.log
            .contains("1 on TC exclusion lists (Indicator-Host 1), 1 expired"),
        "{}",
        r.log
    );
}

/// `check` reads the lists as a run does: refused, it fails naming the role to grant; with the
/// param off it does not ask.
#[test]
fn check_proves_the_lists_can_be_read_or_names_the_role() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 5, 3);
    lab.tc.add_exclusion_list(SimExclusionList::managed(
        "Indicator-Host",
        &["a.example"],
        &[],
    ));
    let none = Map::new();
    let r = lab.run(&none, &["check"]).unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.stdout);
    assert!(
        r.stdout.lines().any(|l| l
            == "ok   ThreatConnect exclusion lists (Honor Exclusion Lists): readable; 1 list applies to the job"),
        "{}",
        r.stdout
    );
    lab.tc.deny_exclusion_lists(Some(403));
    let r = lab.run(&none, &["check"]).unwrap();
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.message.starts_with(
            "Check failed: ThreatConnect exclusion lists unreadable: the Api User needs the Organization role Standard User or above (Editor or Director in a Community or Source), or turn off Honor Exclusion Lists"
        ),
        "{}",
        r.message
    );
    assert!(
        r.stdout.lines().any(
            |l| l.starts_with("FAIL ThreatConnect exclusion lists unreadable")
                && l.contains("403 to GET /api/v3/security/exclusionLists")
        ),
        "{}",
        r.stdout
    );
    lab.tc.server().reset_counters();
    let off = json!({"honor_exclusion_lists": false});
    let r = lab.run(off.as_object().unwrap(), &["check"]).unwrap();
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        lab.tc.server().hits("GET /api/v3/security/exclusionLists"),
        0
    );
}

/// A list that would take most of the source with it is weighed by Maximum Removal Percent like
/// any rail: held back, then performed when the admin allows it.
#[test]
fn the_removal_guard_weighs_what_the_lists_remove_in_both_layouts() {
    for per_document in ["1", "5"] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
        lab.set("indicators_per_document", json!(per_document));
        for id in 1..=24 {
            lab.tc
                .insert(indicator(id, ORG, "Host", &format!("h{id}.fleet.example")));
        }
        ok(&mut lab);
        lab.tc.add_exclusion_list(SimExclusionList::managed(
            "Indicator-Host",
            &[],
            &["h1*.fleet.example", "h2*.fleet.example"],
        ));
        // h1, h10-h19, h2, h20-h24: 17 of 24.
        let r = run_with(&mut lab, &[]);
        assert_eq!(r.code, 3, "{per_document}: {}", r.message);
        assert!(
            r.message.contains("held back 17 removals"),
            "{per_document}: {}",
            r.message
        );
        assert_eq!(covered(&lab).len(), 24, "{per_document}");
        let r = run_with(&mut lab, &[("max_removal_percent", json!("100"))]);
        assert_eq!(r.code, 0, "{per_document}: {}", r.message);
        assert_eq!(covered(&lab).len(), 7, "{per_document}");
    }
}
