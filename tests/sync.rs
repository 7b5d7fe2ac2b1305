//! End to end: the real binary, an encrypted param file, both simulators. After each successful
//! run the app's Tanium source must hold exactly the documents of the indicators that match the
//! job — computed here independently, from the TC simulator's data, with plain closures.

use std::collections::BTreeMap;

use crate::support::{expected, expected_name, held, lab, lease_calls};
use serde_json::{json, Map, Value};
use tanium_tr_indicators::sim::dataset;
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::sim::tanium::SimDoc;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;

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

/// Writes of documents, labels and deploys: the run lease's requests left out.
fn tanium_writes(lab: &Lab) -> u64 {
    let s = lab.tanium.server();
    s.hits("POST /plugin") + s.hits("PUT /plugin") + s.hits("DELETE /plugin") - lease_calls(s)
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
            "Synced: Tanium source \"ThreatConnect\" now holds {} documents; this run: {} created, 0 updated, 0 removed, 0 unchanged, 0 skipped (invalid)",
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
    // An idle incremental run: the credentials check (one owner), the exclusion lists (none
    // here, so no list's values), the matching query, the removal check, the expiry check, the
    // owners and one deleted-indicators call per owner (the endpoint covers one owner at a
    // time).
    let tc = lab.tc.server();
    assert_eq!(tc.hits("GET /api/v3/security/owners"), 2);
    assert_eq!(tc.hits("GET /api/v3/security/exclusionLists"), 1);
    assert_eq!(
        tc.hits("GET /api/v3/indicators/deleted"),
        dataset::OWNERS.len() as u64
    );
    assert_eq!(
        tc.total_requests(),
        6 + dataset::OWNERS.len() as u64,
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
    // Half the owners go: more than the mass-removal guard allows by default.
    lab.set("owners", json!("Demo Organization|Vendor Feed"));
    lab.set("max_removal_percent", json!("100"));
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
fn user_tql_replaces_every_filter_indicator_types_included() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 500, 5);
    let tql = |i: &Indicator| i.owner_name == "Partner Source" && i.confidence.unwrap_or(-1) >= 50;
    lab.set(
        "tql",
        json!("ownerName = \"Partner Source\" AND confidence >= 50"),
    );
    lab.set("min_rating", json!("5")); // ignored in TQL mode
    lab.set("indicator_types", json!("Host")); // ignored too: the guide says all filters
    let r = ok(&mut lab, &none());
    let want = expected(&lab, tql);
    assert_eq!(held(&lab), want);
    for t in ["Address", "File", "Host"] {
        let prefix = format!("ThreatConnect {t} ");
        assert!(want.iter().any(|n| n.starts_with(&prefix)), "{t}");
    }
    assert!(!held(&lab).iter().any(|n| n.contains(" URL ")));
    // Other types the TQL selects are counted, in the summary and the log.
    let urls = lab
        .tc
        .snapshot()
        .iter()
        .filter(|i| i.active && i.type_name == "URL" && tql(i))
        .count();
    assert!(urls > 0, "the dataset has URL indicators for this TQL");
    let counted = format!("{urls} not sent (type not Address/File/Host)");
    assert!(r.message.contains(&counted), "{}", r.message);
    assert!(r.log.contains(&counted), "{}", r.log);
}

fn epoch(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn last_modified_bounds_the_first_run_and_every_full_reconcile_after_it() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 600, 21);
    lab.set("last_modified", json!("30 days ago"));
    let r1 = ok(&mut lab, &none());
    let horizon = r1.results["job_horizon"].clone();
    let h = epoch(&horizon);
    assert!((now_secs() - 30 * 86_400 - h).abs() < 600, "{horizon}");
    let want = expected(&lab, |i| epoch(&i.last_modified) >= h);
    let all = expected(&lab, |_| true);
    assert!(
        want.len() > all.len() / 4 && want.len() < all.len() * 3 / 4,
        "the data spans 60 days: {} of {}",
        want.len(),
        all.len()
    );
    assert_eq!(
        held(&lab),
        want,
        "the first run sends exactly the last 30 days"
    );

    lab.set("reconcile_interval_hours", json!("0"));
    let r2 = ok(&mut lab, &none());
    assert!(r2.message.contains("(full reconcile)"), "{}", r2.message);
    assert_eq!(held(&lab), want, "a full reconcile does not add older ones");
    assert_eq!(r2.results["job_horizon"], horizon, "the horizon stays");

    // An admin who sets Last Modified earlier backfills from there.
    lab.persisted
        .insert("last_modified".into(), json!("50 days ago"));
    let r3 = ok(&mut lab, &none());
    let h3 = epoch(&r3.results["job_horizon"]);
    assert!((now_secs() - 50 * 86_400 - h3).abs() < 600);
    let backfilled = expected(&lab, |i| epoch(&i.last_modified) >= h3);
    assert!(backfilled.len() > want.len());
    assert_eq!(held(&lab), backfilled);
}

#[test]
fn a_job_that_ran_before_it_kept_a_horizon_keeps_what_it_sends() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 300, 22);
    ok(&mut lab, &none());
    let all = expected(&lab, |_| true);
    assert_eq!(held(&lab), all);
    // What an earlier version left in results.tc: a recent checkpoint and no horizon.
    lab.persisted.remove("job_horizon");
    lab.persisted
        .insert("last_modified".into(), json!("1 hour ago"));
    lab.set("reconcile_interval_hours", json!("0"));
    let r = ok(&mut lab, &none());
    assert!(r.message.contains("(full reconcile)"), "{}", r.message);
    assert!(r.message.contains(" 0 removed"), "{}", r.message);
    assert_eq!(held(&lab), all);
    assert_eq!(r.results["job_horizon"], "none");
    assert!(r.log.contains("job horizon: none"), "{}", r.log);
}

#[test]
fn deletions_in_every_owner_leave_tanium_in_the_next_incremental_run() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 400, 23);
    ok(&mut lab, &none());
    let mut gone = Vec::new();
    for owner in dataset::OWNERS {
        let victim = lab
            .tc
            .snapshot()
            .into_iter()
            .find(|i| i.owner_name == owner && i.active && expected_name(i).is_some())
            .unwrap();
        gone.push(expected_name(&victim).unwrap());
        lab.tc.delete(victim.id);
    }
    let r = ok(&mut lab, &none());
    assert!(!r.message.contains("full reconcile"), "{}", r.message);
    assert!(r.message.contains(" 4 removed"), "{}", r.message);
    let held = held(&lab);
    for name in &gone {
        assert!(!held.contains(name), "{name} was deleted in TC");
    }
    assert_eq!(held, expected(&lab, |_| true));
}

#[test]
fn ids_sent_as_strings_are_read_and_an_unreadable_record_removes_nothing() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 300, 24);
    ok(&mut lab, &none());
    let all = expected(&lab, |_| true);
    lab.set("reconcile_interval_hours", json!("0"));

    lab.tc.set_ids_as_strings(true);
    lab.tanium.server().reset_counters();
    let r = ok(&mut lab, &none());
    assert!(r.message.contains("(full reconcile)"), "{}", r.message);
    assert_eq!(tanium_writes(&lab), 0, "{}", r.message);
    assert_eq!(held(&lab), all);

    // Schema drift on one record: the full reconcile cannot be sure what TC holds.
    let victim = lab.tc.snapshot()[10].id;
    for patch in [
        json!({"type": null}),
        json!({"id": "x-1"}),
        json!({"summary": null, "ip": null, "hostName": null, "md5": null, "sha1": null, "sha256": null}),
    ] {
        lab.tc.set_record_patch(Some((victim, patch.clone())));
        let before = lab.persisted.get("last_modified").cloned();
        let r = run(&mut lab, &none());
        assert_eq!(r.code, 3, "{patch}: {}", r.message);
        assert!(
            r.message
                .contains("ThreatConnect pull incomplete (nothing removed)")
                && r.message.contains("cannot be read"),
            "{}",
            r.message
        );
        assert!(r.message.contains(" 0 removed"), "{}", r.message);
        assert_eq!(held(&lab), all, "{patch}");
        assert_eq!(
            lab.persisted.get("last_modified"),
            before.as_ref(),
            "the checkpoint stays"
        );
        assert_eq!(
            r.results["last_full_reconcile"], "",
            "next run reconciles fully"
        );
    }
    lab.tc.set_record_patch(None);
    assert_eq!(ok(&mut lab, &none()).code, 0);
    assert_eq!(held(&lab), all);
}

/// Real listings carry no description, so change detection has only the md5, which is the
/// MD5 of the bytes as uploaded only if Tanium stores them as sent (unconfirmed): either way a
/// full reconcile of unchanged data writes nothing, and a changed indicator is rewritten.
#[test]
fn unchanged_documents_are_not_rewritten_however_tanium_stores_them() {
    use tanium_tr_indicators::sim::tanium::IntrinsicFrom;
    for format in ["STIX", "OpenIOC"] {
        for from in [IntrinsicFrom::PackageRoot, IntrinsicFrom::FirstIndicator] {
            for reserialise in [false, true] {
                let case = format!("{format} {from:?} reserialise={reserialise}");
                let (_d, mut lab) = lab(ApiGeneration::V4, 120, 25);
                lab.set("intel_format", json!(format));
                lab.set("reconcile_interval_hours", json!("0"));
                lab.tanium.set_intrinsic_from(from);
                lab.tanium.set_reserialise(reserialise);
                ok(&mut lab, &none());
                let want = expected(&lab, |_| true);
                assert_eq!(held(&lab), want, "{case}");
                lab.tanium.server().reset_counters();
                let r = ok(&mut lab, &none());
                assert!(r.message.contains("(full reconcile)"), "{case}");
                assert_eq!(tanium_writes(&lab), 0, "{case}: {}", r.message);
                assert!(
                    r.message.contains(&format!(
                        "0 created, 0 updated, 0 removed, {} unchanged",
                        want.len()
                    )),
                    "{case}: {}",
                    r.message
                );
                let changed = lab
                    .tc
                    .snapshot()
                    .into_iter()
                    .find(|i| i.active && expected_name(i).is_some())
                    .unwrap();
                lab.tc.update(changed.id, |i| {
                    i.rating = Some(if i.rating == Some(5.0) { 1.0 } else { 5.0 })
                });
                lab.tanium.server().reset_counters();
                let r = ok(&mut lab, &none());
                assert!(
                    r.message.contains("0 created, 1 updated, 0 removed"),
                    "{case}: {}",
                    r.message
                );
                assert_eq!(lab.tanium.server().hits("PUT /plugin"), 1, "{case}");
            }
        }
    }
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
    assert!(r
        .stdout
        .lines()
        .any(|l| l.starts_with("create ") && l.ends_with(": new match")));
    assert!(r.stdout.contains(&format!(
        "plan: {} to create, 0 to update, 0 to remove",
        want.len()
    )));
}

/// Each planned action says why, the way `terraform plan` does.
#[test]
fn the_dry_run_plan_gives_each_action_its_reason() {
    let (d, mut lab) = lab(ApiGeneration::V4, 200, 13);
    lab.set("exclude_tags", json!("Benign"));
    lab.set("min_confidence", json!("20"));
    ok(&mut lab, &none());
    let live: Vec<Indicator> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| {
            i.active
                && expected_name(i).is_some()
                && !i.tags.iter().any(|t| t == "Benign")
                && i.confidence.unwrap_or(0) >= 20
        })
        .collect();
    let name = |i: &Indicator| expected_name(i).unwrap();
    lab.tc.update(live[0].id, |i| {
        i.rating = Some(if i.rating == Some(5.0) { 1.0 } else { 5.0 });
        i.tags.push("Fresh".into());
    });
    lab.tc.update(live[1].id, |i| i.tags.push("Benign".into()));
    lab.tc.update(live[2].id, |i| i.confidence = Some(5));
    lab.tc.set_active(live[3].id, false);
    lab.tc.delete(live[4].id);
    let plan = d.path().join("plan");
    let plan_s = plan.display().to_string();
    let r = lab
        .run(&none(), &["--dry-run", "--out", plan_s.as_str()])
        .unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    let line = |prefix: &str| {
        r.stdout
            .lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no line for {prefix}:\n{}", r.stdout))
            .to_string()
    };
    assert_eq!(
        line(&name(&live[0])),
        format!(
            "update {}: rating, tags, last modified changed",
            name(&live[0])
        )
    );
    assert!(line(&live[1].summary).ends_with(": has the exclude tag Benign"));
    assert!(line(&live[2].summary).ends_with(": confidence 5 is below the minimum 20"));
    assert!(line(&live[3].summary).ends_with(": inactive in ThreatConnect"));
    assert!(line(&live[4].summary).ends_with(": deleted in ThreatConnect"));
    assert!(
        r.stdout
            .contains("plan: 0 to create, 1 to update, 4 to remove"),
        "{}",
        r.stdout
    );
    assert!(r.log.contains("plan: update"), "the log has the plan too");
}

#[test]
fn check_reports_each_side_and_fails_on_bad_credentials() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 10, 13);
    let r = lab.run(&none(), &["check"]).unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.log);
    // (ThreatConnect, the matching query, its exclusion lists, the rails, Tanium, the source,
    // the labels)
    assert_eq!(r.stdout.lines().filter(|l| l.starts_with("ok ")).count(), 8);
    assert!(
        r.message.starts_with("Checks passed; not checked: "),
        "{}",
        r.message
    );
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
    let r = run(
        &mut lab,
        &with(&[("tql", json!("confidence >>> 5 AND (rating > 1)"))]),
    );
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

/// The Dry Run param, for admins without a shell: the same plan as `--dry-run`, nothing
/// written, the checkpoint kept.
#[test]
fn the_dry_run_param_previews_from_the_job_ui() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 60, 15);
    lab.set("dry_run", json!(true));
    let r = run(&mut lab, &none());
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(
        r.message.starts_with("Dry run for Tanium source"),
        "{}",
        r.message
    );
    let want = expected(&lab, |_| true);
    assert!(
        r.message.contains(&format!("would create {}", want.len())),
        "{}",
        r.message
    );
    assert!(r.log.contains("plan: create "), "{}", r.log);
    assert!(r.results.is_empty(), "no results.tc");
    assert_eq!(lab.tanium.doc_count(), 0);
    assert_eq!(lab.tanium.source_id("ThreatConnect"), None);
    assert_eq!(lab.tanium.deploy_count(), 0);
    lab.set("dry_run", json!(false));
    ok(&mut lab, &none());
    assert_eq!(held(&lab), want);
}

/// Parallel writers keep their connections between requests: a first sync of hundreds of
/// documents over 8 writers opens a handful of connections to Tanium, not one per request (over
/// TLS each new one is a handshake, two round trips to a Tanium across a WAN).
#[test]
fn parallel_writes_reuse_their_connections() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 400, 2);
    lab.tanium.server().reset_counters();
    let r = ok(&mut lab, &with(&[("tanium_workers", json!("8"))]));
    let requests = lab.tanium.server().total_requests();
    let opened = lab.tanium.server().accepted_connections();
    assert!(requests > 600, "{requests}: {}", r.message);
    assert!(
        opened <= 8 + 4,
        "{opened} connections for {requests} requests"
    );
}

/// An analyst changes TC while a full pull is between pages: pages are asked for by id, so an
/// indicator modified or deleted on a page already read costs no other indicator its document
/// (with offset paging, the records behind it slid across the page edge and one was skipped,
/// then removed by the full reconcile). The second page is held at the server until the change
/// is made, so the change provably precedes that page's answer.
#[test]
fn an_indicator_modified_during_a_full_pull_does_not_cost_another_its_document() {
    pull_with_a_change_mid_way(|lab| {
        lab.tc
            .update(1, |i| i.description = Some("edited mid-pull".into()));
    });
}

/// As above, with the indicator deleted.
#[test]
fn an_indicator_deleted_during_a_full_pull_does_not_cost_another_its_document() {
    pull_with_a_change_mid_way(|lab| {
        lab.tc.delete(1);
    });
}

fn pull_with_a_change_mid_way(change: impl FnOnce(&Lab)) {
    use tanium_tr_indicators::sim::server::Gate;
    use tanium_tr_indicators::tc::tql::format_time;
    let (_dir, mut lab) = lab(ApiGeneration::V4, 0, 0);
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    for n in 0..30i64 {
        let ip = format!("203.0.113.{}", n + 1);
        lab.tc.insert(Indicator {
            id: n + 1,
            owner_name: "Demo Org".into(),
            type_name: "Address".into(),
            summary: ip.clone(),
            ip: Some(ip),
            threat_assess_score: Some(500),
            last_modified: format_time(t0 + time::Duration::minutes(n)),
            ..Indicator::default()
        });
    }
    lab.set("tc_page_size", json!("10"));
    lab.set("reconcile_interval_hours", json!("0"));
    ok(&mut lab, &none());
    assert_eq!(held(&lab).len(), 30);

    // Hold the pull's second page at the server; meanwhile an analyst changes an indicator
    // that the first page delivered.
    let gate = Gate::new();
    lab.tc.server().inject(
        FaultRule::new(
            Some("GET"),
            "/api/v3/indicators",
            1,
            Fault::Hold(gate.clone()),
        )
        .after(1),
    );
    let running = lab.start_run(&none(), &[]).unwrap();
    assert!(
        gate.wait_arrived(std::time::Duration::from_secs(60)),
        "page 2 never asked for"
    );
    change(&lab);
    gate.open();
    let second = lab.finish(running).unwrap();
    assert!(lab.quiesce(std::time::Duration::from_secs(30)));
    assert_eq!(second.code, 0, "{}\n{}", second.message, second.log);
    let names = held(&lab);
    for n in 2..=30 {
        let name = format!("ThreatConnect Address 203.0.113.{n}");
        assert!(
            names.contains(&name),
            "{name} lost its document: {}",
            second.message
        );
    }
    let held_targets = gate.held();
    assert!(
        held_targets.len() == 1 && held_targets[0].contains("id > 10"),
        "the held request is the page after the first ten: {held_targets:?}"
    );
    assert_eq!(
        gate.answered_after_opening(),
        1,
        "the held page was answered after the change"
    );
}
