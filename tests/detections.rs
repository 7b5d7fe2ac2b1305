//! Report Tanium Detections, through the binary in the admin's order: turn it on, let the job
//! make its documents, let endpoints match them (alerts raised in the Tanium simulator), and
//! read what ThreatConnect counted. The expected counts come from the test's own reading of
//! the stored documents (`support::docs`), never from the app's mapping.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tanium_tr_indicators::sim::alerts::AlertSpec;
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule, Gate};
use tanium_tr_indicators::sim::tanium::SimDoc;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use time::OffsetDateTime;

use crate::support::docs::{items, Item};
use crate::support::{expire_leases, lab, run_with};

const PARAM: &str = "report_detections";
const CHECKPOINT: &str = "alert_checkpoint";

fn run(lab: &mut Lab, extra: &[(&str, Value)]) -> RunResult {
    let r = run_with(lab, extra);
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    r
}

/// A lab whose job reports detections, its documents made by a first run.
fn started(
    generation: ApiGeneration,
    n: usize,
    extra: &[(&str, Value)],
) -> (tempfile::TempDir, Lab) {
    let (dir, mut lab) = lab(generation, n, 24);
    lab.set(PARAM, json!(true));
    for (k, v) in extra {
        lab.set(k, v.clone());
    }
    let first = run(&mut lab, &[]);
    assert!(
        first.results.contains_key(CHECKPOINT),
        "{:?}",
        first.results
    );
    (dir, lab)
}

/// The job's documents and what each holds, as the test reads them.
fn job_docs(lab: &Lab) -> Vec<(SimDoc, Vec<Item>)> {
    lab.source_docs()
        .into_iter()
        .filter(|d| d.body.contains("tc-sync: "))
        .map(|d| {
            let it = items(&d.body).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            (d, it)
        })
        .collect()
}

fn raise(lab: &Lab, doc: i64, properties: Value) -> i64 {
    lab.tanium.raise_alert(AlertSpec::on(doc, properties))
}

/// What an endpoint's match reports for an item: its address, host name or first hash.
fn matched(it: &Item) -> Value {
    let v = it.values[0]
        .split_once(':')
        .map_or(it.values[0].as_str(), |(t, v)| {
            if ["MD5", "SHA1", "SHA256"].contains(&t) {
                v
            } else {
                it.values[0].as_str()
            }
        });
    match it.kind.as_str() {
        "Address" => json!({"remote_ip": v}),
        "Host" => json!({"domain": v}),
        _ => json!({"file": {"hash": {"md5": v}}, "fullpath": "C:\\x\\y.exe"}),
    }
}

/// message.tc ends with what was reported (in fewer words when the sync's message leaves no room
/// for all of them, README), and the log says it whole.
fn said(r: &RunResult, n: u64, on: &str) -> bool {
    let long = format!("; {n} detections reported to ThreatConnect ({on})");
    let short = format!("; {n} detections reported");
    (r.message.ends_with(&long)
        || (r.message.ends_with(&short)
            && r.message.chars().count() + long.len() - short.len() > 255))
        && r.log.contains(&format!(
            "; {n} reported to ThreatConnect as observations on {on};"
        ))
}

fn alert_reads(lab: &Lab) -> u64 {
    lab.tanium.server().hits_where(|k| k.ends_with("/alerts"))
}

fn observation_writes(lab: &Lab) -> u64 {
    lab.tc.server().hits("PUT /api/v3/indicators/")
}

fn observed(lab: &Lab) -> BTreeMap<i64, i64> {
    lab.tc.observed()
}

#[test]
fn alerts_on_single_documents_credit_exactly_their_indicators_and_a_rerun_reports_nothing() {
    for generation in [ApiGeneration::V4, ApiGeneration::V3] {
        let (_d, mut lab) = started(generation, 24, &[]);
        let docs = job_docs(&lab);
        assert!(docs.len() >= 4, "{}", docs.len());
        // Three alerts on one document, one on each of two others.
        let mut want: BTreeMap<i64, i64> = BTreeMap::new();
        let mut guids = Vec::new();
        for (k, times) in [(0usize, 3), (1, 1), (2, 1)] {
            let (doc, it) = (&docs[k].0, &docs[k].1[0]);
            for _ in 0..times {
                raise(&lab, doc.id, matched(it));
            }
            *want.entry(it.tc_id).or_default() += times;
        }
        for a in lab.tanium.alerts() {
            guids.push(a.guid);
        }
        // Alerts the job must not credit: another source's document, a document that is not
        // there at all.
        let other = lab.tanium.add_source("Analysts");
        let foreign = lab.tanium.add_doc(other, "theirs", &docs[3].0.body);
        raise(&lab, foreign, matched(&docs[3].1[0]));
        raise(&lab, 987_654, json!({"remote_ip": "203.0.113.9"}));

        let r = run(&mut lab, &[]);
        assert_eq!(observed(&lab), want, "{generation:?}\n{}", r.log);
        assert!(said(&r, 5, "3 indicators"), "{}", r.message);
        assert_eq!(observation_writes(&lab), 3, "one write per indicator");
        for g in &guids {
            assert!(
                r.log
                    .contains(&format!("/ui/threatresponse/alerts?guid={g}")),
                "{g} not linked in the log:\n{}",
                r.log
            );
        }
        for id in want.keys() {
            assert!(r.log.contains(&format!("(TC id {id}, ")), "{}", r.log);
        }
        assert!(
            r.log.contains("; 2 on documents of other sources;"),
            "{}",
            r.log
        );

        // A rerun reads the alerts again and reports nothing.
        let again = run(&mut lab, &[]);
        assert_eq!(observed(&lab), want, "{}", again.log);
        assert!(!again.message.contains("detections"), "{}", again.message);
        assert_eq!(observation_writes(&lab), 3);
        assert_eq!(
            again
                .results
                .get(CHECKPOINT)
                .map(|s| s.starts_with("from ")),
            Some(true),
            "{:?}",
            again.results
        );
    }
}

#[test]
fn off_by_default_no_alert_is_read() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 12, 5);
    run(&mut lab, &[]);
    let doc = lab.source_docs()[0].id;
    raise(&lab, doc, json!({"remote_ip": "203.0.113.9"}));
    let r = run(&mut lab, &[]);
    assert_eq!(alert_reads(&lab), 0);
    assert_eq!(observation_writes(&lab), 0);
    assert!(!r.results.contains_key(CHECKPOINT), "{:?}", r.results);
    assert!(observed(&lab).is_empty());
}

#[test]
fn an_alert_on_a_grouped_document_credits_only_the_member_it_names() {
    let (_d, mut lab) = started(
        ApiGeneration::V4,
        40,
        &[("indicators_per_document", json!("10"))],
    );
    let docs = job_docs(&lab);
    let (doc, members) = docs
        .iter()
        .find(|(_, it)| it.len() >= 3)
        .expect("a grouped document of three or more");
    let named = &members[1];
    let other = &members[2];
    raise(&lab, doc.id, matched(named));
    raise(&lab, doc.id, matched(named));
    // A numeric element id as real servers give (not one of the document's own ids): the
    // matched value decides.
    lab.tanium.raise_alert(AlertSpec {
        intra_ids: vec![json!({"id_v2": "901388892329936882"})],
        ..AlertSpec::on(doc.id, matched(other))
    });
    // Names no member (a value the document does not hold): counted, never credited.
    raise(&lab, doc.id, json!({"remote_ip": "198.51.100.254"}));
    // Unreadable details.
    lab.tanium.raise_alert(AlertSpec {
        raw_details: Some("not json".into()),
        ..AlertSpec::on(doc.id, json!({}))
    });
    let r = run(&mut lab, &[]);
    let want: BTreeMap<i64, i64> = [(named.tc_id, 2), (other.tc_id, 1)].into_iter().collect();
    assert_eq!(observed(&lab), want, "{}", r.log);
    assert!(said(&r, 3, "2 indicators"), "{}", r.message);
    assert!(
        r.log
            .contains("; 2 on the job's documents could not be mapped;"),
        "{}",
        r.log
    );
    assert!(
        r.log.contains("name no member of the grouped document"),
        "{}",
        r.log
    );
    assert!(r.log.contains("its details cannot be read"), "{}", r.log);
    let again = run(&mut lab, &[]);
    assert_eq!(observed(&lab), want, "{}", again.log);
}

#[test]
fn late_alerts_ties_and_alerts_during_a_run_are_each_reported_once() {
    let (_d, mut lab) = started(ApiGeneration::V4, 12, &[]);
    let docs = job_docs(&lab);
    let now = OffsetDateTime::now_utc();
    let at = |doc: &SimDoc, created: OffsetDateTime, alerted: OffsetDateTime| AlertSpec {
        created_at: Some(created),
        alerted_at: Some(alerted),
        ..AlertSpec::on(doc.id, json!({}))
    };
    // An alert an endpoint raised two days ago that reached Threat Response just now, and one
    // of a pair stored in the same millisecond.
    let tie = now + time::Duration::seconds(1);
    lab.tanium
        .raise_alert(at(&docs[0].0, now, now - time::Duration::days(2)));
    lab.tanium.raise_alert(at(&docs[1].0, tie, tie));
    // The run is held at its first observation write while two more alerts arrive: one
    // stored now, and the other of the pair, stored (createdAt) with its twin but listed only
    // now.
    let gate = Gate::new();
    lab.tc.server().inject(FaultRule::new(
        Some("PUT"),
        "/api/v3/indicators/",
        1,
        Fault::Hold(gate.clone()),
    ));
    let running = lab.start_run(&Default::default(), &[]).unwrap();
    assert!(gate.wait_arrived(Duration::from_secs(60)));
    lab.tanium
        .raise_alert(at(&docs[2].0, OffsetDateTime::now_utc(), now));
    lab.tanium.raise_alert(at(&docs[3].0, tie, tie));
    gate.open();
    let r = lab.finish(running).unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    let tc_id = |k: usize| docs[k].1[0].tc_id;
    let first: BTreeMap<i64, i64> = [(tc_id(0), 1), (tc_id(1), 1)].into_iter().collect();
    assert_eq!(observed(&lab), first, "{}", r.log);
    let next = run(&mut lab, &[]);
    let all: BTreeMap<i64, i64> = (0..4).map(|k| (tc_id(k), 1)).collect();
    assert_eq!(observed(&lab), all, "{}", next.log);
    run(&mut lab, &[]);
    assert_eq!(observed(&lab), all);
}

#[test]
fn a_run_killed_after_its_writes_reports_those_alerts_again_and_no_others() {
    let (_d, mut lab) = started(ApiGeneration::V4, 12, &[]);
    let docs = job_docs(&lab);
    raise(&lab, docs[0].0.id, json!({}));
    raise(&lab, docs[1].0.id, json!({}));
    // The run writes its observations, then is killed while its lease is being deleted:
    // after the TC writes, before results.tc.
    let gate = Gate::new();
    lab.tanium.server().inject(FaultRule::new(
        Some("DELETE"),
        &format!("{}/sources/", ApiGeneration::V4.base_path()),
        1,
        Fault::Hold(gate.clone()),
    ));
    let mut running = lab.start_run(&Default::default(), &[]).unwrap();
    assert!(gate.wait_arrived(Duration::from_secs(60)));
    running.kill().unwrap();
    let killed = lab.finish(running).unwrap();
    gate.open();
    assert!(lab.quiesce(Duration::from_secs(30)));
    assert_eq!(killed.code, -1);
    let (a, b) = (docs[0].1[0].tc_id, docs[1].1[0].tc_id);
    assert_eq!(observed(&lab), [(a, 1), (b, 1)].into_iter().collect());
    // An alert after the kill: reported once. The killed run's two: again (the documented
    // window), and never a third time.
    raise(&lab, docs[2].0.id, json!({}));
    expire_leases(&lab);
    let r = run(&mut lab, &[]);
    let c = docs[2].1[0].tc_id;
    let want: BTreeMap<i64, i64> = [(a, 2), (b, 2), (c, 1)].into_iter().collect();
    assert_eq!(observed(&lab), want, "{}", r.log);
    run(&mut lab, &[]);
    assert_eq!(observed(&lab), want);
}

#[test]
fn a_tc_refusal_and_a_tanium_refusal_each_name_their_part_and_keep_the_syncs_result() {
    let (_d, mut lab) = started(ApiGeneration::V4, 12, &[]);
    let docs = job_docs(&lab);
    for (doc, _) in &docs[..2] {
        raise(&lab, doc.id, json!({}));
    }
    // The sync has work too: one indicator changed in TC.
    let changed = docs[5].1[0].tc_id;
    lab.tc.update(changed, |i| i.confidence = Some(97));
    lab.tc.set_observations_refused(true);
    let refused = run_with(&mut lab, &[]);
    assert_eq!(refused.code, 3, "{}\n{}", refused.message, refused.log);
    assert!(
        refused.message.starts_with(
            "detections: TC refused the observation write: the Api User needs 'Include in Observations and False Positives'"
        ),
        "{}",
        refused.message
    );
    assert!(
        refused
            .message
            .contains("; Synced: Tanium source \"ThreatConnect\" now holds"),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains(" 1 updated,"),
        "{}",
        refused.message
    );
    assert!(observed(&lab).is_empty());
    // The sync delivered and wrote its checkpoint as a clean run does.
    let confidence = job_docs(&lab)
        .into_iter()
        .find_map(|(_, it)| it.into_iter().find(|i| i.tc_id == changed))
        .and_then(|i| i.confidence);
    assert_eq!(confidence, Some(97));
    for key in [
        "last_modified",
        "filter_fingerprint",
        "job_horizon",
        "deploy_pending",
        CHECKPOINT,
    ] {
        assert!(
            refused.results.contains_key(key),
            "{key}: {:?}",
            refused.results
        );
    }
    lab.tc.set_observations_refused(false);

    let base = ApiGeneration::V4.base_path();
    lab.tanium.deny(Some("GET"), &format!("{base}/alerts"));
    raise(&lab, docs[2].0.id, json!({}));
    let denied = run_with(&mut lab, &[]);
    assert_eq!(denied.code, 3, "{}\n{}", denied.message, denied.log);
    assert!(
        denied.message.starts_with(
            "detections: Tanium refused the alerts read: the account or API token needs 'threat response alerts read' to read alerts; Synced: Tanium source"
        ),
        "{}",
        denied.message
    );
    assert!(observed(&lab).is_empty());
    assert_eq!(
        denied.results.get(CHECKPOINT),
        refused.results.get(CHECKPOINT)
    );
    lab.tanium.clear_denials();

    // Both fixed: each alert reported once.
    let fixed = run(&mut lab, &[]);
    let want: BTreeMap<i64, i64> = (0..3).map(|k| (docs[k].1[0].tc_id, 1)).collect();
    assert_eq!(observed(&lab), want, "{}", fixed.log);
}

#[test]
fn the_jobs_own_observation_rewrites_and_deploys_nothing() {
    for per_document in ["1", "10"] {
        let (_d, mut lab) = started(
            ApiGeneration::V4,
            24,
            &[("indicators_per_document", json!(per_document))],
        );
        // TC moves lastModified and raises the ThreatAssess score when it counts an observation.
        lab.tc.set_observation_moves_last_modified(true);
        lab.tc.set_observation_raises_score(true);
        let docs = job_docs(&lab);
        for (doc, its) in docs.iter().take(3) {
            raise(&lab, doc.id, matched(&its[0]));
        }
        let reported = run(&mut lab, &[]);
        assert!(
            reported.message.contains("3 detections reported"),
            "{}",
            reported.message
        );
        let bodies: Vec<(i64, String)> = lab
            .source_docs()
            .into_iter()
            .map(|d| (d.id, d.body))
            .collect();
        lab.tanium.server().reset_counters();
        let next = run(&mut lab, &[]);
        let tanium = lab.tanium.server();
        let writes = tanium.hits_where(|k| {
            (k.starts_with("PUT ") || k.starts_with("POST ")) && k.contains("/intels")
        });
        assert_eq!(writes, 0, "{per_document}: {}\n{}", next.message, next.log);
        assert_eq!(
            tanium.hits("POST /plugin/products/threat-response/api/v1/intel/deploy"),
            0
        );
        let after: Vec<(i64, String)> = lab
            .source_docs()
            .into_iter()
            .map(|d| (d.id, d.body))
            .collect();
        assert_eq!(after, bodies, "{per_document}");
        assert!(next.message.contains(" 0 updated,"), "{}", next.message);
    }
}

#[test]
fn switching_rewrites_the_documents_once_and_a_pause_reports_nothing_twice() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 12, 3);
    run(&mut lab, &[]);
    let with_score = job_docs(&lab);
    assert!(with_score
        .iter()
        .any(|(_, it)| it[0].threat_assess.is_some()));
    lab.set(PARAM, json!(true));
    let on = run(&mut lab, &[]);
    assert!(on.message.ends_with(" (full reconcile)"), "{}", on.message);
    for (d, it) in job_docs(&lab) {
        assert_eq!(it[0].threat_assess, None, "{}", d.name);
        assert!(!d.body.contains("Last modified:"), "{}", d.body);
    }
    let again = run(&mut lab, &[]);
    assert!(again.message.contains(" 0 updated,"), "{}", again.message);
    // Off: the checkpoint is kept, marked off. Turned on again a few minutes later (within Last
    // Modified's margin), the alert reported just before is not reported again; a new one is.
    let docs = job_docs(&lab);
    raise(&lab, docs[0].0.id, json!({}));
    run(&mut lab, &[]);
    let id = |k: usize| docs[k].1[0].tc_id;
    assert_eq!(observed(&lab), [(id(0), 1)].into_iter().collect());
    lab.set(PARAM, json!(false));
    let off = run(&mut lab, &[]);
    let kept = off.results.get(CHECKPOINT).cloned().unwrap_or_default();
    assert!(
        kept.starts_with("from ") && kept.ends_with(" off"),
        "{kept}"
    );
    assert_eq!(
        run(&mut lab, &[]).results.get(CHECKPOINT),
        None,
        "written once"
    );
    lab.set(PARAM, json!(true));
    raise(&lab, docs[1].0.id, json!({}));
    let back = run(&mut lab, &[]);
    let want: BTreeMap<i64, i64> = [(id(0), 1), (id(1), 1)].into_iter().collect();
    assert_eq!(observed(&lab), want, "{}", back.log);
    assert!(!back.results[CHECKPOINT].ends_with(" off"));
}

#[test]
fn the_dry_run_lists_the_observations_it_would_write_and_writes_none() {
    let (_d, mut lab) = started(ApiGeneration::V4, 12, &[]);
    let docs = job_docs(&lab);
    raise(&lab, docs[0].0.id, json!({}));
    raise(&lab, docs[0].0.id, json!({}));
    let checkpoint = lab.persisted.get(CHECKPOINT).cloned();
    let dry = run(&mut lab, &[("dry_run", json!(true))]);
    assert!(
        dry.message
            .ends_with("; would report 2 detections to ThreatConnect (1 indicator)"),
        "{}",
        dry.message
    );
    assert!(
        dry.log
            .contains("detections: would report 2 observations on ThreatConnect ")
            && dry
                .log
                .contains(&format!("(TC id {}, ", docs[0].1[0].tc_id)),
        "{}",
        dry.log
    );
    assert_eq!(observation_writes(&lab), 0);
    assert!(dry.results.is_empty(), "{:?}", dry.results);
    assert_eq!(lab.persisted.get(CHECKPOINT).cloned(), checkpoint);
    run(&mut lab, &[]);
    assert_eq!(observed(&lab).get(&docs[0].1[0].tc_id), Some(&2));
}

#[test]
fn a_write_whose_answer_was_lost_is_counted_once() {
    let (_d, mut lab) = started(ApiGeneration::V4, 12, &[]);
    let docs = job_docs(&lab);
    raise(&lab, docs[0].0.id, json!({}));
    // TC counts the observation and the connection drops before the answer.
    lab.tc.server().inject(FaultRule::new(
        Some("PUT"),
        "/api/v3/indicators/",
        1,
        Fault::DropAfterHandling,
    ));
    let r = run(&mut lab, &[]);
    assert!(r.log.contains("the count read again shows it"), "{}", r.log);
    let id = docs[0].1[0].tc_id;
    assert_eq!(observed(&lab), [(id, 1)].into_iter().collect());
    run(&mut lab, &[]);
    assert_eq!(observed(&lab), [(id, 1)].into_iter().collect());
    // Dropped before TC acted: the count read again shows it did not count, so it is sent
    // again at once (up to four times). Dropped every time, the last answer is lost too: the
    // run says so, and the next run sends it, once.
    let put = |n| FaultRule::new(Some("PUT"), "/api/v3/indicators/", n, Fault::Drop);
    raise(&lab, docs[1].0.id, json!({}));
    lab.tc.server().inject(put(1));
    let dropped = run(&mut lab, &[]);
    assert!(
        dropped
            .log
            .contains("(sent again: the first write got no answer and did not count)"),
        "{}",
        dropped.log
    );
    let mut want: BTreeMap<i64, i64> = [(id, 1), (docs[1].1[0].tc_id, 1)].into_iter().collect();
    assert_eq!(observed(&lab), want, "{}", dropped.log);
    raise(&lab, docs[2].0.id, json!({}));
    lab.tc.server().inject(put(5));
    let lost = run_with(&mut lab, &[]);
    assert_eq!(lost.code, 3, "{}\n{}", lost.message, lost.log);
    assert!(
        lost.message.starts_with(
            "detections: 1 observation write got no answer; the next run sends it again (they may count twice)"
        ),
        "{}",
        lost.message
    );
    assert_eq!(lab.tc.server().hits("PUT /api/v3/indicators/"), 3 + 5);
    assert_eq!(observed(&lab), want);
    let next = run(&mut lab, &[]);
    want.insert(docs[2].1[0].tc_id, 1);
    assert_eq!(observed(&lab), want, "{}", next.log);
}

#[test]
fn servers_that_ignore_sort_or_refuse_two_columns_and_alerts_on_many_pages_are_read_whole() {
    for (ignored, refused) in [(true, false), (false, true)] {
        let (_d, mut lab) = started(ApiGeneration::V4, 12, &[]);
        lab.tanium.set_alert_sort_ignored(ignored);
        lab.tanium.set_alert_compound_sort_refused(refused);
        let docs = job_docs(&lab);
        let other = lab.tanium.add_source("Analysts");
        let foreign = lab.tanium.add_doc(other, "theirs", &docs[0].0.body);
        // 1,201 alerts of another source around 7 of the job's: three pages and more.
        for k in 0..1208 {
            let doc = if k % 200 == 7 {
                docs[k % 5].0.id
            } else {
                foreign
            };
            raise(&lab, doc, json!({}));
        }
        let r = run(&mut lab, &[]);
        assert_eq!(observed(&lab).values().sum::<i64>(), 7, "{}", r.log);
        if ignored {
            assert!(r.log.contains("sort ignored"), "{}", r.log);
        }
        run(&mut lab, &[]);
        assert_eq!(observed(&lab).values().sum::<i64>(), 7);
    }
}

#[test]
fn check_reads_the_alerts_and_names_the_api_user_option_it_cannot_prove() {
    let (_d, mut lab) = started(ApiGeneration::V4, 6, &[]);
    let r = lab.run(&Default::default(), &["check"]).unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.stdout);
    assert!(
        r.stdout
            .contains("ok   Threat Response alerts (Report Tanium Detections): readable"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("'threat response alerts read'"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("--   ThreatConnect Api User option 'Include in Observations and False Positives': not checked"),
        "{}",
        r.stdout
    );
    assert!(
        r.message
            .contains("'Include in Observations and False Positives'"),
        "{}",
        r.message
    );
    assert_eq!(observation_writes(&lab), 0);
    lab.tanium.deny(
        Some("GET"),
        &format!("{}/alerts", ApiGeneration::V4.base_path()),
    );
    let denied = lab.run(&Default::default(), &["check"]).unwrap();
    assert_eq!(denied.code, 1, "{}", denied.stdout);
    assert!(
        denied.stdout.contains("FAIL Threat Response alerts (Report Tanium Detections): Tanium permission missing: the account or API token needs 'threat response alerts read'"),
        "{}",
        denied.stdout
    );
    // Off, neither is looked at.
    lab.tanium.clear_denials();
    lab.set(PARAM, json!(false));
    lab.tanium.server().reset_counters();
    let off = lab.run(&Default::default(), &["check"]).unwrap();
    assert!(
        !off.stdout.contains("Report Tanium Detections"),
        "{}",
        off.stdout
    );
    assert_eq!(alert_reads(&lab), 0);
}

#[test]
fn after_a_failed_sync_no_alert_is_read_and_the_next_run_reports_them() {
    let (_d, mut lab) = started(ApiGeneration::V4, 12, &[]);
    let docs = job_docs(&lab);
    raise(&lab, docs[0].0.id, json!({}));
    // ThreatConnect cannot answer the pull: nothing is delivered, the run fails (exit 1) and
    // its results are not kept, so what it reported would be reported again.
    lab.tc.server().inject(FaultRule::new(
        Some("GET"),
        "/api/v3/indicators",
        50,
        Fault::Status {
            status: 503,
            retry_after: Some(0),
        },
    ));
    lab.tanium.server().reset_counters();
    let failed = run_with(&mut lab, &[]);
    assert_eq!(failed.code, 1, "{}\n{}", failed.message, failed.log);
    assert_eq!(alert_reads(&lab), 0);
    lab.tc.server().clear_faults();
    let next = run(&mut lab, &[]);
    assert_eq!(
        observed(&lab),
        [(docs[0].1[0].tc_id, 1)].into_iter().collect(),
        "{}",
        next.log
    );
}
