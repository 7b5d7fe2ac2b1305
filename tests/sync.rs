//! End to end: the real binary, an encrypted param file, both simulators. After each successful
//! run the app's Tanium source must hold exactly the documents of the indicators that match the
//! job — computed here independently, from the TC simulator's data, with plain closures.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use serde_json::{json, Map, Value};
use tanium_tr_indicators::sim::dataset;
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::sim::tanium::SimDoc;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;

const BIN: &str = env!("CARGO_BIN_EXE_tanium-tr-indicators");

fn lab(generation: ApiGeneration, n: usize, seed: u64) -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), BIN.as_ref(), generation).unwrap();
    lab.tc.load(dataset::generate(n, seed));
    (dir, lab)
}

fn none() -> Map<String, Value> {
    Map::new()
}

fn with(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn run(lab: &mut Lab, extra: &Map<String, Value>) -> RunResult {
    let r = lab.run(extra, &[]).unwrap();
    assert!(
        r.param_file_deleted,
        "the param file must be deleted after reading"
    );
    r
}

fn ok(lab: &mut Lab, extra: &Map<String, Value>) -> RunResult {
    let r = run(lab, extra);
    assert_eq!(r.code, 0, "message: {}\nlog:\n{}", r.message, r.log);
    r
}

/// The document name this indicator must have, written from the TC data alone.
fn expected_name(i: &Indicator) -> Option<String> {
    let value = match i.type_name.as_str() {
        "Address" => {
            let ip = i.ip.clone()?;
            match ip.parse::<Ipv6Addr>() {
                Ok(v6) => v6.to_string(),
                Err(_) => ip,
            }
        }
        "Host" => i.host_name.clone()?.to_lowercase(),
        "File" => i
            .md5
            .clone()
            .or(i.sha1.clone())
            .or(i.sha256.clone())?
            .to_lowercase(),
        _ => return None,
    };
    Some(format!("ThreatConnect {} {value}", i.type_name))
}

fn expected(lab: &Lab, keep: impl Fn(&Indicator) -> bool) -> Vec<String> {
    let mut v: Vec<String> = lab
        .tc
        .snapshot()
        .iter()
        .filter(|i| i.active && keep(i))
        .filter_map(expected_name)
        .collect();
    v.sort();
    v
}

fn held(lab: &Lab) -> Vec<String> {
    let docs = lab.source_docs();
    let mut ids: Vec<&str> = docs.iter().map(|d| d.intrinsic_id.as_str()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "two documents share an intrinsic id");
    let mut v: Vec<String> = docs.into_iter().map(|d| d.name).collect();
    v.sort();
    v
}

fn tanium_writes(lab: &Lab) -> u64 {
    let s = lab.tanium.server();
    s.hits("POST /plugin") + s.hits("PUT /plugin") + s.hits("DELETE /plugin")
}

fn by_name(docs: Vec<SimDoc>) -> BTreeMap<String, SimDoc> {
    docs.into_iter().map(|d| (d.name.clone(), d)).collect()
}

#[test]
fn first_sync_is_the_expected_set_and_a_rerun_writes_nothing() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 400, 1);
    let r1 = ok(&mut lab, &none());
    let want = expected(&lab, |_| true);
    assert!(want.len() > 300, "dataset too small: {}", want.len());
    assert_eq!(held(&lab), want);
    assert!(
        r1.message.starts_with(&format!(
            "Synced {} indicators to Tanium source \"ThreatConnect\": {} created, 0 updated, 0 removed, 0 unchanged, 0 skipped (invalid)",
            want.len(),
            want.len()
        )),
        "{}",
        r1.message
    );
    assert_eq!(lab.tanium.deploy_count(), 1, "deploy once per run");
    for key in ["last_modified", "last_full_reconcile", "filter_fingerprint"] {
        assert!(r1.results.contains_key(key), "{key} in {:?}", r1.results);
    }

    lab.tanium.server().reset_counters();
    lab.tc.server().reset_counters();
    let r2 = ok(&mut lab, &none());
    assert_eq!(tanium_writes(&lab), 0, "an immediate rerun writes nothing");
    assert_eq!(lab.tanium.deploy_count(), 1, "nothing changed: no deploy");
    assert!(
        r2.message.contains("0 created, 0 updated, 0 removed"),
        "{}",
        r2.message
    );
    // An idle incremental run: the matching query, the removal check, the owners and one
    // deleted-indicators call per owner (the endpoint covers one owner at a time).
    let tc = lab.tc.server();
    assert_eq!(tc.hits("GET /api/v3/security/owners"), 1);
    assert_eq!(
        tc.hits("GET /api/v3/indicators/deleted"),
        dataset::OWNERS.len() as u64
    );
    assert_eq!(
        tc.total_requests(),
        3 + dataset::OWNERS.len() as u64,
        "an idle incremental run costs O(owners) TC requests"
    );
    assert_eq!(held(&lab), want);
    assert!(r2.results["last_modified"] >= r1.results["last_modified"]);
}

#[test]
fn every_removal_cause_is_applied_incrementally() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 600, 2);
    let include = ["APT", "Malware", "Phishing", "C2", "Botnet", "Ransomware"];
    lab.set("include_tags", json!(include.join(",")));
    lab.set("exclude_tags", json!("Benign"));
    lab.set("min_confidence", json!("10"));
    lab.set("min_rating", json!("1"));
    lab.set("min_threatassess_score", json!("50"));
    lab.set("max_false_positives", json!("3"));
    let matches = |i: &Indicator| {
        i.tags.iter().any(|t| include.contains(&t.as_str()))
            && !i.tags.iter().any(|t| t == "Benign")
            && i.confidence.unwrap_or(0) >= 10
            && i.rating.unwrap_or(0.0) >= 1.0
            && i.threat_assess_score.unwrap_or(0) >= 50
            && i.false_positives.unwrap_or(0) <= 3
    };
    ok(&mut lab, &none());
    assert_eq!(held(&lab), expected(&lab, matches));

    let live: Vec<Indicator> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active && matches(i) && expected_name(i).is_some())
        .collect();
    assert!(live.len() >= 8);
    lab.tc.delete(live[0].id);
    lab.tc.set_active(live[1].id, false);
    lab.tc.update(live[2].id, |i| i.tags = vec!["Spam".into()]);
    lab.tc.update(live[3].id, |i| i.tags.push("Benign".into()));
    lab.tc.update(live[4].id, |i| i.confidence = Some(5));
    lab.tc.update(live[5].id, |i| i.rating = Some(0.0));
    lab.tc
        .update(live[6].id, |i| i.threat_assess_score = Some(10));
    lab.tc.update(live[7].id, |i| i.false_positives = Some(9));

    let r = ok(&mut lab, &none());
    assert!(!r.message.contains("full reconcile"), "{}", r.message);
    assert!(r.message.contains("8 removed"), "{}", r.message);
    assert_eq!(held(&lab), expected(&lab, matches));
    lab.tanium.server().reset_counters();
    ok(&mut lab, &none());
    assert_eq!(tanium_writes(&lab), 0);
}

#[test]
fn deselected_types_and_owners_are_removed_by_a_full_reconcile() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 400, 3);
    ok(&mut lab, &none());
    lab.set("indicator_types", json!(["Address", "Host"]));
    let r = ok(&mut lab, &none());
    assert!(r.message.contains("full reconcile"), "{}", r.message);
    assert_eq!(
        held(&lab),
        expected(&lab, |i| i.type_name == "Address" || i.type_name == "Host")
    );
    lab.set("owners", json!("Demo Organization|Vendor Feed"));
    ok(&mut lab, &none());
    assert_eq!(
        held(&lab),
        expected(&lab, |i| {
            (i.type_name == "Address" || i.type_name == "Host")
                && (i.owner_name == "Demo Organization" || i.owner_name == "Vendor Feed")
        })
    );
}

#[test]
fn changed_indicators_are_updated_in_place() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 300, 4);
    ok(&mut lab, &none());
    let before = by_name(lab.source_docs());
    let changed: Vec<Indicator> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active && expected_name(i).is_some())
        .take(5)
        .collect();
    for i in &changed {
        lab.tc.update(i.id, |x| {
            x.confidence = Some((x.confidence.unwrap_or(0) + 1) % 100)
        });
    }
    let r = ok(&mut lab, &none());
    assert!(r.message.contains("5 updated"), "{}", r.message);
    let after = by_name(lab.source_docs());
    assert_eq!(before.len(), after.len(), "no duplicates, nothing lost");
    for i in &changed {
        let name = expected_name(i).unwrap();
        let (b, a) = (&before[&name], &after[&name]);
        assert_eq!(a.id, b.id, "same Tanium id for {name}");
        assert_eq!(a.revision_id, b.revision_id + 1, "{name} updated in place");
        assert_ne!(a.md5, b.md5);
    }
    let untouched = after.values().filter(|d| d.revision_id == 1).count();
    assert_eq!(untouched, after.len() - changed.len());
}

#[test]
fn user_tql_replaces_the_filters_but_keeps_the_types() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 500, 5);
    lab.set(
        "tql",
        json!("ownerName = \"Partner Source\" AND confidence >= 50"),
    );
    lab.set("min_rating", json!("5")); // ignored in TQL mode
    ok(&mut lab, &none());
    assert_eq!(
        held(&lab),
        expected(&lab, |i| i.owner_name == "Partner Source"
            && i.confidence.unwrap_or(-1) >= 50)
    );
    assert!(!held(&lab).iter().any(|n| n.contains(" URL ")));
}

#[test]
fn a_tanium_outage_on_some_writes_gives_exit_3_and_the_next_run_heals_it() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 200, 6);
    lab.set("tanium_workers", json!("1"));
    // The 21st create fails on every attempt (5 x 503, no wait), all others go through.
    lab.tanium.server().inject(
        FaultRule::new(
            Some("POST"),
            "/plugin/products/threat-response/api/v1/sources/",
            5,
            Fault::Status {
                status: 503,
                retry_after: Some(0),
            },
        )
        .after(20),
    );
    let r1 = run(&mut lab, &none());
    assert_eq!(r1.code, 3, "{}\n{}", r1.message, r1.log);
    assert!(r1.message.contains("1 failed"), "{}", r1.message);
    let want = expected(&lab, |_| true);
    assert_eq!(held(&lab).len(), want.len() - 1);
    // Last Modified must not pass the undelivered indicator.
    let have = held(&lab);
    let missing: Vec<Indicator> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active && expected_name(i).is_some_and(|n| !have.contains(&n)))
        .collect();
    assert_eq!(missing.len(), 1);
    let lm = &r1.results["last_modified"];
    assert!(
        lm.as_str() < missing[0].last_modified.as_str(),
        "checkpoint {lm} passed the undelivered {}",
        missing[0].last_modified
    );

    let r2 = ok(&mut lab, &none());
    assert!(r2.message.contains("1 created"), "{}", r2.message);
    assert_eq!(held(&lab), want);
}

#[test]
fn unreachable_tanium_or_tc_exits_1_and_leaves_last_modified_untouched() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 50, 7);
    let r = ok(&mut lab, &none());
    let lm = r.results["last_modified"].clone();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead_tanium = with(&[(
        "tanium_address",
        json!(format!("http://127.0.0.1:{closed}")),
    )]);
    let r = run(&mut lab, &dead_tanium);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(r.message.contains("Tanium"), "{}", r.message);
    assert!(r.results.is_empty(), "no results.tc on failure");
    let dead_tc = with(&[(
        "tc_api_path",
        json!(format!("http://127.0.0.1:{closed}/api")),
    )]);
    let r = run(&mut lab, &dead_tc);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(r.message.contains("ThreatConnect"), "{}", r.message);
    assert!(r.results.is_empty());
    assert_eq!(lab.persisted["last_modified"], json!(lm));
}

#[test]
fn a_document_deleted_by_hand_returns_at_the_next_full_reconcile() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 120, 8);
    ok(&mut lab, &none());
    let want = expected(&lab, |_| true);
    let victim = lab.source_docs()[3].clone();
    lab.tanium.delete_doc(victim.id);
    ok(&mut lab, &none());
    assert_eq!(
        held(&lab).len(),
        want.len() - 1,
        "an incremental run has no evidence yet"
    );
    let r = ok(&mut lab, &with(&[("reconcile_interval_hours", json!("0"))]));
    assert!(r.message.contains("1 created"), "{}", r.message);
    assert_eq!(held(&lab), want);
}

#[test]
fn documents_in_other_sources_are_never_touched() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 150, 9);
    let other = lab.tanium.add_source("Analyst Uploads");
    let stix = |id: &str, title: &str| {
        format!(
            "<stix:STIX_Package xmlns:stix=\"http://stix.mitre.org/stix-1\" xmlns:indicator=\"http://stix.mitre.org/Indicator-2\" id=\"x:{id}\" version=\"1.2\"><stix:Indicators><stix:Indicator><indicator:Title>{title}</indicator:Title></stix:Indicator></stix:Indicators></stix:STIX_Package>"
        )
    };
    // One of them even carries the name of a document the app will create.
    let first =
        lab.tc
            .snapshot()
            .into_iter()
            .find_map(|i| if i.active { expected_name(&i) } else { None });
    lab.tanium
        .add_doc(other, &first.clone().unwrap(), &stix("a", &first.unwrap()));
    lab.tanium
        .add_doc(other, "Hand-made", &stix("b", "Hand-made"));
    let before = lab.tanium.docs_in(other);
    ok(&mut lab, &none());
    for i in lab.tc.snapshot().iter().take(20) {
        lab.tc.delete(i.id);
    }
    ok(&mut lab, &with(&[("reconcile_interval_hours", json!("0"))]));
    assert_eq!(lab.tanium.docs_in(other), before);
    assert_eq!(held(&lab), expected(&lab, |_| true));
}

#[test]
fn threat_response_3x_with_openioc() {
    let (_d, mut lab) = lab(ApiGeneration::V3, 200, 10);
    lab.set("intel_format", json!("OpenIOC"));
    ok(&mut lab, &none());
    assert_eq!(held(&lab), expected(&lab, |_| true));
    assert!(lab.source_docs().iter().all(|d| d.kind == "openioc"));
    assert_eq!(lab.tanium.deploy_count(), 0, "3.x has no deploy step");
    lab.tanium.server().reset_counters();
    ok(&mut lab, &none());
    assert_eq!(tanium_writes(&lab), 0);
}

#[test]
fn switching_the_format_replaces_every_document_once() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 150, 11);
    ok(&mut lab, &none());
    assert!(lab.source_docs().iter().all(|d| d.kind == "stix"));
    lab.set("intel_format", json!("OpenIOC"));
    ok(&mut lab, &none());
    assert_eq!(held(&lab), expected(&lab, |_| true));
    assert!(lab.source_docs().iter().all(|d| d.kind == "openioc"));
    lab.tanium.server().reset_counters();
    ok(&mut lab, &none());
    assert_eq!(tanium_writes(&lab), 0);
}

#[test]
fn dry_run_prints_the_plan_writes_the_documents_and_changes_nothing() {
    let (d, mut lab) = lab(ApiGeneration::V4, 100, 12);
    let plan = d.path().join("plan");
    let plan_s = plan.display().to_string();
    let r = lab
        .run(&none(), &["--dry-run", "--out", plan_s.as_str()])
        .unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    let want = expected(&lab, |_| true);
    let creates = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("create "))
        .count();
    assert_eq!(creates, want.len(), "{}", r.stdout);
    assert_eq!(std::fs::read_dir(&plan).unwrap().count(), want.len());
    assert!(r.message.starts_with("Dry run"), "{}", r.message);
    assert!(r.results.is_empty(), "a dry run writes no results.tc");
    assert_eq!(lab.tanium.doc_count(), 0);
    assert_eq!(lab.tanium.source_id("ThreatConnect"), None);
}

#[test]
fn check_reports_each_side_and_fails_on_bad_credentials() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 10, 13);
    let r = lab.run(&none(), &["check"]).unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.log);
    assert_eq!(r.stdout.lines().filter(|l| l.starts_with("ok ")).count(), 3);
    let r = lab
        .run(&with(&[("tanium_password", json!("wrong"))]), &["check"])
        .unwrap();
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("FAIL Tanium"), "{}", r.stdout);
    assert!(r.message.contains("Tanium"), "{}", r.message);
    assert!(!r.stdout.contains("wrong") && !r.log.contains("wrong"));
}

#[test]
fn invalid_tql_exits_1_quoting_tcs_reason() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 20, 14);
    ok(&mut lab, &none());
    let lm = lab.persisted["last_modified"].clone();
    let r = run(&mut lab, &with(&[("tql", json!("confidence >>> 5 AND ("))]));
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(
        r.message.starts_with(
            "ThreatConnect says the TQL is invalid: Syntax error(s) found with your TQL query."
        ),
        "{}",
        r.message
    );
    assert!(r.results.is_empty());
    assert_eq!(lab.persisted["last_modified"], lm);
}
