//! End to end in grouped mode (Indicators per Intel Document above 1): the real binary against
//! both simulators. After each successful run every indicator the job selects is in exactly
//! one document; a run writes only the documents whose members changed.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::docs::{self, assert_items_match_tc, covered, group_mark};
use crate::support::{band, expected, lab, source_calls};
use serde_json::{json, Map, Value};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::sim::tanium::{IntrinsicFrom, SimDoc};
use tanium_tr_indicators::tanium::model::ApiGeneration;

fn none() -> Map<String, Value> {
    Map::new()
}

fn run(lab: &mut Lab) -> RunResult {
    lab.run(&none(), &[]).unwrap()
}

fn ok(lab: &mut Lab) -> RunResult {
    let r = run(lab);
    assert_eq!(r.code, 0, "message: {}\nlog:\n{}", r.message, r.log);
    r
}

/// Documents created, replaced and removed (label and deploy calls left out).
fn writes(lab: &Lab) -> (u64, u64, u64) {
    let s = lab.tanium.server();
    let both = |verb: &str, path: &str| {
        s.hits(&format!(
            "{verb} /plugin/products/threat-response/api/v1/{path}"
        )) + s.hits(&format!("{verb} /plugin/products/detect3/api/v1/{path}"))
    };
    let puts = s.hits_where(|k| k.starts_with("PUT /plugin") && !k.contains("/labels"));
    let deletes = s.hits_where(|k| k.starts_with("DELETE /plugin") && !k.contains("/labels"))
        - source_calls(s, "DELETE");
    (both("POST", "sources/"), puts, deletes)
}

/// The names of the indicators a grouped document holds (read with the tests' own parser), or
/// None for any other document.
fn members(d: &SimDoc) -> Option<Vec<String>> {
    if !docs::is_group(&d.body) {
        return None;
    }
    let items = docs::items(&d.body).unwrap_or_else(|e| panic!("{}: {e}", d.name));
    Some(items.iter().map(docs::Item::name).collect())
}

/// Grouped documents of the source, with their members' names.
fn groups(lab: &Lab) -> Vec<(SimDoc, Vec<String>)> {
    lab.source_docs()
        .into_iter()
        .filter_map(|d| {
            let names = members(&d)?;
            Some((d, names))
        })
        .collect()
}

/// Exactly the expected set, each indicator in one document only.
fn assert_exact(lab: &Lab, want: &[String]) {
    let have = covered(lab);
    let mut distinct = have.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        have.len(),
        "an indicator is in two documents"
    );
    assert_eq!(have, want);
}

fn grouped_lab(
    generation: ApiGeneration,
    n: usize,
    seed: u64,
    size: u32,
) -> (tempfile::TempDir, Lab) {
    let (d, mut lab) = lab(generation, n, seed);
    lab.set("indicators_per_document", json!(size.to_string()));
    (d, lab)
}

#[test]
fn a_first_sync_groups_exactly_the_expected_set_and_a_rerun_writes_nothing() {
    for (generation, format) in [(ApiGeneration::V4, "STIX"), (ApiGeneration::V3, "OpenIOC")] {
        let (_d, mut lab) = grouped_lab(generation, 400, 21, 50);
        lab.set("intel_format", json!(format));
        let r = ok(&mut lab);
        let want = expected(&lab, |_| true);
        assert_exact(&lab, &want);
        assert_eq!(assert_items_match_tc(&lab), want.len(), "{format}");
        let gs = groups(&lab);
        assert_eq!(gs.len(), lab.source_docs().len(), "only grouped documents");
        assert!(
            gs.len() >= want.len() / 50 && gs.len() < want.len() / 10,
            "{} documents",
            gs.len()
        );
        for (d, members) in &gs {
            assert!(members.len() <= 50, "{}: {} members", d.name, members.len());
            let m = group_mark(&d.name).expect("the name says the bucket");
            assert_eq!(m.count, members.len());
            assert!(d
                .kind
                .to_lowercase()
                .contains(if format == "STIX" { "stix" } else { "ioc" }));
        }
        assert!(
            r.message.contains(&format!("{} created", want.len())),
            "{}",
            r.message
        );
        lab.tanium.server().reset_counters();
        let deploys = lab.tanium.deploy_count();
        let r2 = ok(&mut lab);
        assert_eq!(writes(&lab), (0, 0, 0), "a rerun writes nothing");
        assert_eq!(lab.tanium.deploy_count(), deploys);
        assert!(
            r2.message.contains("0 created, 0 updated, 0 removed"),
            "{}",
            r2.message
        );
        // No document is read either: the names say every bucket is current.
        assert_eq!(
            lab.tanium
                .server()
                .hits("GET /plugin/products/threat-response/api/v1/intels/"),
            0
        );
    }
}

#[test]
fn a_change_rewrites_the_one_document_that_holds_it() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 300, 22, 40);
    ok(&mut lab);
    let before: BTreeMap<i64, i64> = lab
        .source_docs()
        .iter()
        .map(|d| (d.id, d.revision_id))
        .collect();
    let target = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| i.active && i.type_name == "Host")
        .unwrap();
    lab.tc.update(target.id, |i| i.confidence = Some(7));
    lab.tanium.server().reset_counters();
    let r = ok(&mut lab);
    assert_eq!(writes(&lab), (0, 1, 0), "one document replaced in place");
    assert!(r.message.contains("1 updated"), "{}", r.message);
    assert_exact(&lab, &expected(&lab, |_| true));
    assert_items_match_tc(&lab);
    let after = lab.source_docs();
    let bumped: Vec<&SimDoc> = after
        .iter()
        .filter(|d| before[&d.id] != d.revision_id)
        .collect();
    assert_eq!(bumped.len(), 1);
    assert!(
        bumped[0].body.contains("confidence 7 / 100"),
        "{}",
        bumped[0].name
    );
}

#[test]
fn each_removal_cause_takes_the_indicator_out_of_its_document() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 300, 23, 40);
    lab.set("exclude_tags", json!("Benign"));
    ok(&mut lab);
    let live: Vec<i64> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active && i.type_name != "URL" && !i.tags.iter().any(|t| t == "Benign"))
        .map(|i| i.id)
        .collect();
    lab.tc.delete(live[0]);
    lab.tc.set_active(live[1], false);
    lab.tc.update(live[2], |i| i.tags.push("Benign".into()));
    let r = ok(&mut lab);
    assert!(r.message.contains("3 removed"), "{}", r.message);
    let want = expected(&lab, |i| !i.tags.iter().any(|t| t == "Benign"));
    assert_exact(&lab, &want);
    assert_items_match_tc(&lab);
    // A full reconcile agrees and changes nothing more.
    lab.set("reconcile_interval_hours", json!("0"));
    lab.tanium.server().reset_counters();
    ok(&mut lab);
    assert_eq!(writes(&lab), (0, 0, 0));
    assert_exact(&lab, &want);
}

#[test]
fn a_failed_write_keeps_the_checkpoint_and_the_next_run_heals() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 200, 24, 30);
    lab.set("tanium_workers", json!("1"));
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
        .after(2),
    );
    let r1 = run(&mut lab);
    assert_eq!(r1.code, 3, "{}\n{}", r1.message, r1.log);
    let want = expected(&lab, |_| true);
    let have = covered(&lab);
    assert!(have.len() < want.len() && have.iter().all(|n| want.contains(n)));
    ok(&mut lab);
    assert_exact(&lab, &want);
}

#[test]
fn buckets_split_as_they_fill_and_only_the_buckets_concerned_are_written() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 120, 25, 20);
    ok(&mut lab);
    let before: BTreeMap<i64, (i64, Vec<String>)> = groups(&lab)
        .into_iter()
        .map(|(d, m)| (d.id, (d.revision_id, m)))
        .collect();
    // Many new indicators at once: buckets fill past the size and split.
    let extra: Vec<_> = tanium_tr_indicators::sim::dataset::generate(400, 26)
        .map(|mut i| {
            i.id += 1_000_000;
            i
        })
        .collect();
    let added: BTreeSet<String> = extra
        .iter()
        .filter_map(crate::support::expected_name)
        .collect();
    let ids: Vec<i64> = extra.iter().map(|i| i.id).collect();
    lab.tc.load(extra);
    for id in ids {
        lab.tc.update(id, |_| {});
    }
    ok(&mut lab);
    assert_exact(&lab, &expected(&lab, |_| true));
    let after = groups(&lab);
    assert!(after.len() > before.len(), "buckets split");
    for (d, members) in &after {
        assert!(members.len() <= 20, "{}", d.name);
        // A document kept as it was holds none of the new indicators.
        if let Some((rev, old)) = before.get(&d.id) {
            if *rev == d.revision_id {
                assert_eq!(old, members);
                assert!(members.iter().all(|m| !added.contains(m)));
            }
        }
    }
    // A full reconcile settles the layout and then finds nothing to do.
    lab.set("reconcile_interval_hours", json!("0"));
    ok(&mut lab);
    lab.tanium.server().reset_counters();
    ok(&mut lab);
    assert_eq!(writes(&lab), (0, 0, 0));
}

#[test]
fn size_and_format_switches_create_before_they_delete() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 150, 27);
    ok(&mut lab);
    let want = expected(&lab, |_| true);
    // To groups, with every delete failing: the indicators are in both kinds of document.
    let deletes = |lab: &Lab| {
        lab.tanium.server().inject(FaultRule::new(
            Some("DELETE"),
            "/plugin/products/threat-response/api/v1/intels",
            100_000,
            Fault::Status {
                status: 503,
                retry_after: Some(0),
            },
        ));
    };
    for (param, value) in [
        ("indicators_per_document", "25"),
        ("intel_format", "OpenIOC"),
        ("indicators_per_document", "1"),
    ] {
        lab.set(param, json!(value));
        deletes(&lab);
        let r = run(&mut lab);
        assert_eq!(r.code, 3, "{param} {value}: {}", r.message);
        let mut have = covered(&lab);
        have.dedup();
        assert_eq!(have, want, "{param} {value}: nothing is without a document");
        lab.tanium.server().clear_faults();
        ok(&mut lab);
        assert_exact(&lab, &want);
        assert_eq!(assert_items_match_tc(&lab), want.len(), "{param} {value}");
        let grouped = !groups(&lab).is_empty();
        assert_eq!(
            grouped,
            value != "1" || param == "intel_format",
            "{param} {value}"
        );
    }
}

#[test]
fn an_unreadable_document_is_left_alone_and_removes_nothing() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 200, 28, 40);
    let r1 = ok(&mut lab);
    let victim = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| i.active && i.type_name == "Host")
        .unwrap();
    let name = crate::support::expected_name(&victim).unwrap();
    let (doc, _) = groups(&lab)
        .into_iter()
        .find(|(_, m)| m.contains(&name))
        .unwrap();
    lab.tanium
        .tamper(doc.id, |d| d.body = "<not a document".into());
    lab.tc.delete(victim.id);
    lab.tanium.server().reset_counters();
    let r2 = run(&mut lab);
    // Nothing else changed, so nothing was delivered: exit 1, and results.tc is not written.
    assert_eq!(r2.code, 1, "{}", r2.message);
    assert!(r2.message.contains("cannot be read"), "{}", r2.message);
    assert_eq!(writes(&lab), (0, 0, 0), "nothing written, nothing removed");
    let kept = lab
        .source_docs()
        .into_iter()
        .find(|d| d.id == doc.id)
        .unwrap();
    assert_eq!(kept.body, "<not a document");
    assert!(
        r2.results
            .get("last_modified")
            .is_none_or(|lm| *lm == r1.results["last_modified"]),
        "checkpoint kept"
    );
    // Once the document is readable again, the removal goes through.
    lab.tanium.tamper(doc.id, |d| d.body = doc.body.clone());
    ok(&mut lab);
    assert_exact(&lab, &expected(&lab, |_| true));
}

#[test]
fn documents_share_only_indicators_with_the_same_labels() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 300, 29, 100);
    lab.set("tags_as_labels", json!("APT*, Malware"));
    lab.set("threatassess_labels", json!(true));
    ok(&mut lab);
    assert_exact(&lab, &expected(&lab, |_| true));
    assert_items_match_tc(&lab);
    let labels: BTreeMap<i64, String> = lab
        .tanium
        .labels()
        .into_iter()
        .map(|l| (l.id, l.name))
        .collect();
    let by_name: BTreeMap<String, _> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter_map(|i| crate::support::expected_name(&i).map(|n| (n, i)))
        .collect();
    let gs = groups(&lab);
    assert!(gs.len() > 3, "several label sets");
    for (d, members) in gs {
        let mut on_doc: Vec<String> = d.label_ids.iter().map(|id| labels[id].clone()).collect();
        on_doc.sort();
        for m in members {
            let i = &by_name[&m];
            let mut want: Vec<String> = vec!["ThreatConnect".to_string()];
            want.extend(
                i.tags
                    .iter()
                    .filter(|t| t.starts_with("APT") || *t == "Malware")
                    .cloned(),
            );
            if let Some(b) = band(i.threat_assess_score) {
                want.push(b.to_string());
            }
            want.sort();
            assert_eq!(on_doc, want, "{m} in {}", d.name);
        }
    }
}

#[test]
fn a_dry_run_says_what_it_would_group_and_writes_nothing() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 100, 30, 40);
    let r = lab.run(&none(), &["--dry-run"]).unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    assert!(r.stdout.contains("create group "), "{}", r.stdout);
    assert!(lab.source_docs().is_empty());
}

#[test]
fn a_job_edit_that_would_empty_the_source_is_held_back_then_performed_when_allowed() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 300, 31, 40);
    ok(&mut lab);
    let before = covered(&lab);
    // A typo-like edit: only Hosts any more, most of the source would go.
    lab.set("indicator_types", json!("Host"));
    lab.tanium.server().reset_counters();
    let r = run(&mut lab);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(r.message.contains("held back"), "{}", r.message);
    assert_eq!(covered(&lab), before, "nothing removed");
    let (_, _, deletes) = writes(&lab);
    assert_eq!(deletes, 0);
    // Allowed, the next run (a full reconcile: the last one held removals back) removes them.
    lab.set("max_removal_percent", json!("100"));
    ok(&mut lab);
    assert_exact(&lab, &expected(&lab, |i| i.type_name == "Host"));
    lab.tanium.server().reset_counters();
    ok(&mut lab);
    assert_eq!(writes(&lab), (0, 0, 0));
}

#[test]
fn never_send_and_a_raised_minimum_take_indicators_out_of_their_documents() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V3, 250, 32, 30);
    ok(&mut lab);
    let host = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| i.active && i.type_name == "Host")
        .unwrap();
    let value = host.host_name.clone().unwrap_or(host.summary.clone());
    lab.set("never_send", json!(value));
    lab.set("min_confidence", json!("30"));
    ok(&mut lab);
    let blocked = crate::support::expected_name(&host);
    let want = expected(&lab, |i| {
        i.confidence.is_some_and(|c| c >= 30) && crate::support::expected_name(i) != blocked
    });
    assert_exact(&lab, &want);
}

#[test]
fn foreign_documents_are_left_alone_or_replaced_when_taking_the_source_over() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 120, 33, 50);
    let source = lab.tanium.add_source("ThreatConnect");
    let foreign = lab.tanium.add_doc(
        source,
        "legacy",
        r#"<?xml version="1.0"?><ioc xmlns="http://schemas.mandiant.com/2010/ioc" id="legacy-1"><short_description>legacy</short_description><definition><Indicator operator="OR" id="i"><IndicatorItem id="a" condition="is"><Context document="PortItem" search="PortItem/remoteIP" type="mir"/><Content type="IP">203.0.113.250</Content></IndicatorItem></Indicator></definition></ioc>"#,
    );
    ok(&mut lab);
    assert!(
        lab.source_docs().iter().any(|d| d.id == foreign),
        "left alone"
    );
    let mut want = expected(&lab, |_| true);
    want.push("legacy".into());
    want.sort();
    assert_eq!(covered(&lab), want);
    lab.set("take_over_source", json!(true));
    lab.set("reconcile_interval_hours", json!("0"));
    ok(&mut lab);
    assert!(
        !lab.source_docs().iter().any(|d| d.id == foreign),
        "replaced"
    );
    assert_exact(&lab, &expected(&lab, |_| true));
}

#[test]
fn a_document_renamed_by_hand_is_still_known_by_its_root_id_and_not_rewritten() {
    for from in [IntrinsicFrom::PackageRoot, IntrinsicFrom::FirstIndicator] {
        let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 150, 34, 40);
        lab.tanium.set_intrinsic_from(from);
        lab.tanium.set_reserialise(true);
        ok(&mut lab);
        let docs = lab.source_docs();
        lab.tanium
            .tamper(docs[0].id, |d| d.name = "renamed by an analyst".into());
        lab.set("reconcile_interval_hours", json!("0"));
        lab.tanium.server().reset_counters();
        ok(&mut lab);
        assert_eq!(
            writes(&lab),
            (0, 0, 0),
            "{from:?}: its content says it is current"
        );
        assert_exact(&lab, &expected(&lab, |_| true));
        assert_items_match_tc(&lab);
    }
}

/// Every third indicator tagged Retired and excluded, the guard off, and documents of 3 (from
/// 20): buckets split, and parts of them hold only what goes.
fn retire_a_third_and_shrink(lab: &mut Lab) {
    let live: Vec<i64> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active)
        .map(|i| i.id)
        .collect();
    for id in live.iter().step_by(3) {
        lab.tc.update(*id, |i| i.tags.push("Retired".into()));
    }
    lab.set("exclude_tags", json!("Retired"));
    lab.set("max_removal_percent", json!("100"));
    lab.set("indicators_per_document", json!("3"));
}

fn not_retired(i: &tanium_tr_indicators::tc::model::Indicator) -> bool {
    !i.tags.iter().any(|t| t == "Retired")
}

/// The removals a full reconcile reports (and the guard weighs) are every member that left the
/// source, also those in the part of a split bucket that no indicator holds any more.
#[test]
fn a_full_reconcile_counts_every_member_it_removes() {
    for seed in 40..46 {
        let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 160, seed, 20);
        ok(&mut lab);
        let before = covered(&lab).len();
        retire_a_third_and_shrink(&mut lab);
        let r = ok(&mut lab);
        assert_exact(&lab, &expected(&lab, not_retired));
        let gone = before - covered(&lab).len();
        assert!(
            r.message.contains(&format!(" {gone} removed")),
            "seed {seed}: {gone} left the source; {}",
            r.message
        );
    }
}

/// A run cut short after writing the new layout leaves old documents behind that overlap
/// current ones; the next run reads them, so what they hold that is not sent any more is counted
/// as removed (and weighed by the guard), never dropped silently.
#[test]
fn documents_left_behind_by_a_failed_run_are_read_before_they_go() {
    let (_d, mut lab) = grouped_lab(ApiGeneration::V4, 160, 47, 20);
    ok(&mut lab);
    retire_a_third_and_shrink(&mut lab);
    lab.tanium.server().inject(FaultRule::new(
        Some("DELETE"),
        "/plugin/products/threat-response/api/v1/intels",
        100_000,
        Fault::Status {
            status: 503,
            retry_after: Some(0),
        },
    ));
    let r = run(&mut lab);
    assert_eq!(r.code, 3, "{}", r.message);
    lab.tanium.server().clear_faults();
    // As if the run had been killed between writing documents and labelling them.
    let label = lab.tanium.label_id("ThreatConnect").unwrap();
    for d in lab.source_docs() {
        lab.tanium.unlabel_doc(d.id, label);
    }
    let distinct = |lab: &Lab| {
        let mut v = covered(lab);
        v.dedup();
        v.len()
    };
    let before = distinct(&lab);
    let r = ok(&mut lab);
    assert_exact(&lab, &expected(&lab, not_retired));
    let gone = before - distinct(&lab);
    assert!(gone > 0);
    for d in lab.source_docs() {
        assert!(
            lab.tanium
                .doc_label_names(d.id)
                .contains(&"ThreatConnect".to_string()),
            "{}",
            d.name
        );
    }
    assert!(
        r.message.contains(&format!(" {gone} removed")),
        "{gone} left the source; {}",
        r.message
    );
}
