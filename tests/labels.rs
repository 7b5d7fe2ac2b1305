//! Tanium labels through the real binary: every document carries exactly the labels its
//! indicator earns (Tanium Labels, Tags as Labels, ThreatAssess bands), computed here from the
//! TC simulator's data with plain closures; tags moving in TC, params changing, hand-added
//! labels, other sources, failed label writes, listings without `labelIds`, label names in
//! another case, dry runs and `check`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map};
use tanium_tr_indicators::http::{HttpSettings, RecordedSleep, RetryPolicy};
use tanium_tr_indicators::secret::Secret;
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::sim::tanium::{ListingQuirk, TaniumSim, TaniumSimOptions};
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tanium::{self, TaniumClient};
use tanium_tr_indicators::tc::model::Indicator;

use crate::support::{band, expected, expected_name, held, lab, lease_calls};

const BASE: &str = "/plugin/products/threat-response/api/v1";

fn run(lab: &mut Lab, args: &[&str]) -> RunResult {
    lab.run(&Map::new(), args).unwrap()
}

fn ok(lab: &mut Lab) -> RunResult {
    let r = run(lab, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    r
}

/// A run right after one that settled everything: it must write nothing.
fn quiet(lab: &mut Lab) -> RunResult {
    lab.tanium.server().reset_counters();
    let r = ok(lab);
    assert_eq!(writes(lab), 0, "a no-change run wrote: {}", r.message);
    assert!(!r.message.contains("relabelled"), "{}", r.message);
    r
}

fn writes(lab: &Lab) -> u64 {
    let s = lab.tanium.server();
    s.hits("POST /plugin") + s.hits("PUT /plugin") + s.hits("DELETE /plugin") - lease_calls(s)
}

fn label_writes(lab: &Lab) -> u64 {
    lab.tanium.server().hits_where(|k| {
        (k.starts_with("PUT ") || k.starts_with("DELETE ")) && k.contains("/labels")
    })
}

fn doc_label_reads(lab: &Lab) -> u64 {
    lab.tanium
        .server()
        .hits_where(|k| k.starts_with("GET ") && k.contains("/intels/") && k.ends_with("/labels"))
}

/// The labels every document of the app's source carries, by document name.
fn labels_by_name(lab: &Lab) -> BTreeMap<String, Vec<String>> {
    lab.source_docs()
        .iter()
        .map(|d| (d.name.clone(), lab.tanium.doc_label_names(d.id)))
        .collect()
}

/// The labels each document must carry: `fixed`, the indicator's tags `tag` takes, and its
/// band when `bands`.
fn wanted(
    lab: &Lab,
    fixed: &[&str],
    tag: impl Fn(&str) -> bool,
    bands: bool,
) -> BTreeMap<String, Vec<String>> {
    lab.tc
        .snapshot()
        .iter()
        .filter(|i| i.active)
        .filter_map(|i| {
            let name = expected_name(i)?;
            let mut labels: Vec<String> = fixed.iter().map(|f| f.to_string()).collect();
            labels.extend(i.tags.iter().filter(|t| tag(t)).cloned());
            if bands {
                labels.extend(band(i.threat_assess_score).map(str::to_string));
            }
            labels.sort();
            labels.dedup();
            Some((name, labels))
        })
        .collect()
}

fn apt_or_malware(t: &str) -> bool {
    t.to_lowercase().starts_with("apt") || t.eq_ignore_ascii_case("malware")
}

fn live(lab: &Lab) -> Vec<Indicator> {
    lab.tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active && expected_name(i).is_some())
        .collect()
}

fn doc_id(lab: &Lab, i: &Indicator) -> i64 {
    let name = expected_name(i).unwrap();
    lab.source_docs()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no document {name}"))
        .id
}

#[test]
fn the_first_sync_labels_every_document_once_and_a_rerun_writes_nothing() {
    for g in [ApiGeneration::V4, ApiGeneration::V3] {
        let (_d, mut lab) = lab(g, 300, 61);
        lab.set("tags_as_labels", json!("apt*, Malware"));
        lab.set("threatassess_labels", json!(true));
        let r = ok(&mut lab);
        let want = wanted(&lab, &["ThreatConnect"], apt_or_malware, true);
        assert_eq!(held(&lab), expected(&lab, |_| true), "{g:?}");
        assert_eq!(labels_by_name(&lab), want, "{g:?}");
        assert!(
            r.message
                .contains(&format!("{} created, 0 updated", want.len())),
            "{g:?}: {}",
            r.message
        );
        // Each label made once, and only those the documents carry.
        let mut made: Vec<String> = lab.tanium.labels().into_iter().map(|l| l.name).collect();
        made.sort();
        let mut used: Vec<String> = want.values().flatten().cloned().collect();
        used.sort();
        used.dedup();
        assert_eq!(made, used, "{g:?}");
        assert!(
            used.contains(&"APT28".to_string()) && used.len() > 5,
            "{used:?}"
        );
        assert_eq!(r.results["label_fingerprint"].len(), 16, "{:?}", r.results);

        let r = quiet(&mut lab);
        assert!(!r.message.contains("full reconcile"), "{}", r.message);
        assert_eq!(lab.tanium.deploy_count(), u64::from(g == ApiGeneration::V4));
    }
}

#[test]
fn a_tag_added_or_removed_in_tc_moves_its_label_at_the_next_run() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 200, 62);
    lab.set("tags_as_labels", json!("APT28, malware"));
    ok(&mut lab);
    let ind = live(&lab);
    let gains = ind
        .iter()
        .find(|i| !i.tags.iter().any(|t| t == "APT28"))
        .unwrap();
    let loses = ind
        .iter()
        .find(|i| i.id != gains.id && i.tags.iter().any(|t| t == "Malware"))
        .unwrap();
    lab.tc.update(gains.id, |i| i.tags.push("APT28".into()));
    lab.tc
        .update(loses.id, |i| i.tags.retain(|t| t != "Malware"));
    let r = ok(&mut lab);
    assert!(!r.message.contains("full reconcile"), "{}", r.message);
    // (Tags are in the description, so the content changes too.)
    assert!(r.message.contains("2 updated"), "{}", r.message);
    let tagged = |t: &str| t == "APT28" || t == "Malware";
    assert_eq!(
        labels_by_name(&lab),
        wanted(&lab, &["ThreatConnect"], tagged, false)
    );
    assert!(lab
        .tanium
        .doc_label_names(doc_id(&lab, gains))
        .contains(&"APT28".to_string()));
    assert!(!lab
        .tanium
        .doc_label_names(doc_id(&lab, loses))
        .contains(&"Malware".to_string()));
    quiet(&mut lab);
}

#[test]
fn a_label_dropped_from_the_params_leaves_every_document_and_nothing_else_moves() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 150, 63);
    lab.set("tanium_labels", json!("ThreatConnect, Pilot"));
    lab.set("tags_as_labels", json!("apt*"));
    ok(&mut lab);
    let apt = |t: &str| t.to_lowercase().starts_with("apt");
    assert_eq!(
        labels_by_name(&lab),
        wanted(&lab, &["Pilot", "ThreatConnect"], apt, false)
    );
    // By hand: a label the job does not manage on one of its documents, and the job's own
    // labels on a document of another source.
    let manual = lab.tanium.add_label("Manual");
    let mine = lab.source_docs()[0].clone();
    lab.tanium.label_doc(mine.id, manual);
    let analysts = lab.tanium.add_source("Analysts");
    let theirs = lab
        .tanium
        .add_doc(analysts, "hand-made", r#"<ioc id="hand-made"/>"#);
    for name in ["Pilot", "APT", "ThreatConnect"] {
        lab.tanium
            .label_doc(theirs, lab.tanium.label_id(name).unwrap());
    }

    lab.set("tanium_labels", json!("ThreatConnect"));
    lab.set("tags_as_labels", json!(""));
    lab.tanium.server().reset_counters();
    let r = ok(&mut lab);
    assert!(
        r.message.contains("0 created, 0 updated, 0 removed") && r.message.contains(" relabelled"),
        "{}",
        r.message
    );
    assert!(r.message.contains("(full reconcile)"), "{}", r.message);
    assert!(
        r.log.contains("full reconcile: the label params changed"),
        "{}",
        r.log
    );
    assert_eq!(lab.tanium.deploy_count(), 2, "a label change is deployed");
    assert_eq!(
        lab.tanium
            .server()
            .hits(&format!("PUT {BASE}/intels/{}", mine.id)),
        0
    );
    let mut want = wanted(&lab, &["ThreatConnect"], |_| false, false);
    want.get_mut(&mine.name)
        .unwrap()
        .insert(0, "Manual".to_string());
    assert_eq!(labels_by_name(&lab), want);
    assert_eq!(
        lab.tanium.doc_label_names(theirs),
        ["APT", "Pilot", "ThreatConnect"],
        "another source's labels are not the job's"
    );
    assert!(
        lab.tanium.label_id("Pilot").is_some(),
        "a label is never deleted"
    );
    assert_eq!(r.results["managed_labels"], r#"["label:threatconnect"]"#);
    let r = quiet(&mut lab);
    assert!(!r.message.contains("full reconcile"), "{}", r.message);
}

#[test]
fn a_failed_label_write_fails_its_document_and_the_next_run_heals_it() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 120, 64);
    lab.set("tags_as_labels", json!("APT28"));
    ok(&mut lab);
    let ind = live(&lab)
        .into_iter()
        .find(|i| !i.tags.iter().any(|t| t == "APT28"))
        .unwrap();
    let id = doc_id(&lab, &ind);
    lab.tc.update(ind.id, |i| i.tags.push("APT28".into()));
    let bad = Fault::Status {
        status: 400,
        retry_after: None,
    };
    let path = format!("{BASE}/intels/{id}/labels");
    lab.tanium
        .server()
        .inject(FaultRule::new(Some("PUT"), &path, 1, bad.clone()));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(
        r.message.contains("1 failed, first error: could not label") && r.log.contains("1 updated"),
        "{}",
        r.message
    );
    assert_eq!(lab.tanium.doc_label_names(id), ["ThreatConnect"]);
    let updated = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| i.id == ind.id)
        .unwrap();
    assert!(
        r.results["last_modified"] < updated.last_modified,
        "the checkpoint stays behind: {:?}",
        r.results
    );
    let r = ok(&mut lab);
    assert!(r.message.contains("1 relabelled"), "{}", r.message);
    assert_eq!(lab.tanium.doc_label_names(id), ["APT28", "ThreatConnect"]);

    // The job's own label taken off by hand comes back, though the indicator did not change;
    // a failure there heals the same way.
    let other = live(&lab).into_iter().find(|i| i.id != ind.id).unwrap();
    let other_id = doc_id(&lab, &other);
    let tc_label = lab.tanium.label_id("ThreatConnect").unwrap();
    lab.tanium.unlabel_doc(other_id, tc_label);
    let path = format!("{BASE}/intels/{other_id}/labels");
    lab.tanium
        .server()
        .inject(FaultRule::new(Some("PUT"), &path, 1, bad));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(lab.tanium.doc_label_names(other_id).is_empty());
    let r = ok(&mut lab);
    assert!(r.message.contains("1 relabelled"), "{}", r.message);
    assert_eq!(lab.tanium.doc_label_names(other_id), ["ThreatConnect"]);
    quiet(&mut lab);
}

#[test]
fn where_listings_do_not_show_labels_only_written_documents_and_label_passes_read_them() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 100, 65);
    lab.tanium.set_label_ids_listed(false);
    lab.set("tags_as_labels", json!("apt*, malware"));
    ok(&mut lab);
    let want = wanted(&lab, &["ThreatConnect"], apt_or_malware, false);
    assert_eq!(labels_by_name(&lab), want);
    assert_eq!(
        doc_label_reads(&lab),
        0,
        "a new document has no labels to read"
    );
    quiet(&mut lab);
    assert_eq!(doc_label_reads(&lab), 0);

    // A new label: every document's labels are read once and brought to the rules.
    lab.set("tanium_labels", json!("ThreatConnect, Pilot"));
    lab.tanium.server().reset_counters();
    let r = ok(&mut lab);
    let docs = lab.source_docs().len() as u64;
    assert_eq!(doc_label_reads(&lab), docs, "{}", r.message);
    assert!(
        r.message.contains(&format!("{docs} relabelled")),
        "{}",
        r.message
    );
    assert_eq!(
        labels_by_name(&lab),
        wanted(&lab, &["Pilot", "ThreatConnect"], apt_or_malware, false)
    );
    quiet(&mut lab);
    assert_eq!(doc_label_reads(&lab), 0);
}

#[test]
fn labels_survive_an_update_whether_or_not_tanium_keeps_them() {
    for (generation, listed, keeps) in [
        (ApiGeneration::V4, true, true),
        (ApiGeneration::V4, true, false),
        (ApiGeneration::V3, true, false),
        (ApiGeneration::V4, false, false),
        (ApiGeneration::V3, false, false),
    ] {
        let (_d, mut lab) = lab(generation, 60, 66);
        lab.tanium.set_update_keeps_labels(keeps);
        lab.tanium.set_label_ids_listed(listed);
        lab.set("threatassess_labels", json!(true));
        ok(&mut lab);
        for i in live(&lab).iter().take(3) {
            lab.tc.update(i.id, |x| {
                x.confidence = Some((x.confidence.unwrap_or(0) + 1) % 100)
            });
        }
        lab.tanium.server().reset_counters();
        let r = ok(&mut lab);
        assert!(r.message.contains("3 updated"), "{}", r.message);
        let case = format!("{generation:?}, labels listed {listed}, kept {keeps}");
        assert_eq!(
            labels_by_name(&lab),
            wanted(&lab, &["ThreatConnect"], |_| false, true),
            "{case}"
        );
        // Kept: nothing to put back; dropped: the update's answer says so, and they return.
        assert_eq!(label_writes(&lab), if keeps { 0 } else { 6 }, "{case}");
    }
}

#[test]
fn a_label_in_another_case_is_the_same_label_and_none_is_made_twice() {
    for ignore_case in [false, true] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 40, 67);
        lab.tanium.set_label_names_ignore_case(ignore_case);
        let existing = lab.tanium.add_label("threatconnect");
        ok(&mut lab);
        assert_eq!(held(&lab), expected(&lab, |_| true), "{ignore_case}");
        assert_eq!(lab.tanium.labels().len(), 1, "{ignore_case}");
        for d in lab.source_docs() {
            assert_eq!(lab.tanium.doc_label_names(d.id), ["threatconnect"]);
        }
        assert!(lab.tanium.label_id("threatconnect") == Some(existing));
    }
    // Made meanwhile by someone else: the server refuses the name, and the label is found.
    let sim = TaniumSim::start(TaniumSimOptions::new(ApiGeneration::V4)).unwrap();
    sim.set_label_names_ignore_case(true);
    let client = client(&sim);
    let made = client.create_label("ThreatConnect").unwrap();
    let again = client.create_label("THREATCONNECT").unwrap();
    assert_eq!((made.id, again.id), (1, 1));
    assert_eq!(sim.labels().len(), 1);
}

fn client(sim: &TaniumSim) -> TaniumClient {
    let settings = tanium::Settings {
        base_url: sim.url().parse().unwrap(),
        username: "admin".into(),
        password: Secret::new("s3cret!"),
        http: HttpSettings {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            ..HttpSettings::default()
        },
        source_name: "ThreatConnect".into(),
        api_version: None,
    };
    let policy = RetryPolicy::quick(Arc::new(RecordedSleep::default()));
    TaniumClient::connect(&settings, policy).unwrap()
}

#[test]
fn a_dry_run_shows_label_additions_and_removals_and_writes_none() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 80, 68);
    lab.set("tanium_labels", json!("ThreatConnect, Pilot"));
    ok(&mut lab);
    assert_eq!(held(&lab), expected(&lab, |_| true));
    let before = labels_by_name(&lab);
    lab.set("tanium_labels", json!("ThreatConnect, Endpoints"));
    lab.tanium.server().reset_counters();
    let r = run(&mut lab, &["--dry-run"]);
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    let docs = before.len();
    assert!(
        r.stdout.contains("new label Endpoints: not in Tanium yet"),
        "{}",
        r.stdout
    );
    let moves = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("labels ") && l.ends_with(": add Endpoints; remove Pilot"))
        .count();
    assert_eq!(moves, docs, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "plan: 0 to create, 0 to update, 0 to remove, {docs} to relabel"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.message.contains(&format!("relabel {docs}")),
        "{}",
        r.message
    );
    assert_eq!(writes(&lab), 0);
    assert_eq!(lab.tanium.label_id("Endpoints"), None);
    assert_eq!(labels_by_name(&lab), before);
}

/// Which labels exist is read; whether the missing ones can be made is not tried (a label made
/// to find out would stay), so `check` says it was not checked, whatever the account may do.
#[test]
fn check_says_which_labels_exist_and_leaves_making_the_missing_ones_unchecked() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 5, 69);
    lab.tanium.add_label("Pilot");
    lab.set("tanium_labels", json!("ThreatConnect, Pilot"));
    lab.set("threatassess_labels", json!(true));
    let not_checked =
        "--   Tanium permission 'threat response labels write': not checked: making a \
                       label cannot be tried without leaving one behind";
    for denied in [false, true] {
        if denied {
            lab.tanium.deny(Some("POST"), &format!("{BASE}/labels"));
        }
        let r = run(&mut lab, &["check"]);
        assert_eq!(r.code, 0, "{}", r.stdout);
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains("Tanium labels"))
            .unwrap_or_else(|| panic!("{}", r.stdout));
        assert_eq!(
            line,
            "ok   Tanium labels: readable (1 listed); Pilot exists (id 1); ThreatConnect, \
             ThreatAssess Low, ThreatAssess Medium, ThreatAssess High, ThreatAssess Critical \
             missing, made by the first run that needs them"
        );
        assert!(r.stdout.lines().any(|l| l == not_checked), "{}", r.stdout);
        assert!(
            r.message.contains("'threat response labels write'"),
            "{}",
            r.message
        );
        assert_eq!(
            lab.tanium.server().hits("POST"),
            lab.tanium.login_count(),
            "check posts nothing but logins"
        );
    }
    assert_eq!(lab.tanium.labels().len(), 1, "check makes no label");
}

#[test]
fn unreadable_labels_leave_the_sync_alone_and_the_next_run_labels_every_document() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 60, 70);
    lab.tanium.deny(Some("GET"), &format!("{BASE}/labels"));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(
        r.message.contains("could not read the Tanium labels"),
        "{}",
        r.message
    );
    assert_eq!(held(&lab), expected(&lab, |_| true));
    assert_eq!(r.results["label_fingerprint"], "unsettled");
    lab.tanium.clear_denials();
    let r = ok(&mut lab);
    assert!(r.message.contains("(full reconcile)"), "{}", r.message);
    assert_eq!(
        labels_by_name(&lab),
        wanted(&lab, &["ThreatConnect"], |_| false, false)
    );
}

#[test]
fn a_label_tanium_refuses_to_make_is_asked_for_once_and_the_next_run_makes_it() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 80, 71);
    lab.set("tags_as_labels", json!("APT28"));
    lab.tanium.deny(Some("POST"), &format!("{BASE}/labels"));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(
        r.message.contains("could not create the Tanium label"),
        "{}",
        r.message
    );
    assert_eq!(held(&lab), expected(&lab, |_| true));
    // ThreatConnect and APT28, each once; the first 403 is asked again after a fresh login,
    // a 403 to the session that login made is not.
    assert_eq!(lab.tanium.server().hits(&format!("POST {BASE}/labels")), 3);
    assert_eq!(lab.tanium.login_count(), 2);
    assert!(lab.tanium.labels().is_empty());
    assert_eq!(r.results["label_fingerprint"], "unsettled");
    lab.tanium.clear_denials();
    let r = ok(&mut lab);
    assert!(r.message.contains("(full reconcile)"), "{}", r.message);
    assert_eq!(
        labels_by_name(&lab),
        wanted(&lab, &["ThreatConnect"], |t| t == "APT28", false)
    );
    quiet(&mut lab);
}

/// Threat Response pages its label listing (100 without parameters, as recorded): with 150
/// labels and the job's beyond the first 100, the job finds its label however the server
/// answers `noLimit` and whether it counts its labels (`meta.totalCount`), makes no second
/// one, and a rerun writes nothing.
#[test]
fn the_jobs_label_beyond_the_first_page_of_labels_is_found() {
    for (no_limit, meta) in [(true, false), (false, false), (false, true), (true, true)] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 30, 71);
        lab.tanium.set_labels_no_limit(no_limit);
        lab.tanium.set_list_meta(meta);
        for n in 0..149 {
            lab.tanium.add_label(&format!("Tanium label {n:03}"));
        }
        let ours = lab.tanium.add_label("ThreatConnect");
        let case = format!("noLimit honoured {no_limit}, meta {meta}");
        ok(&mut lab);
        assert_eq!(held(&lab), expected(&lab, |_| true), "{case}");
        assert_eq!(lab.tanium.labels().len(), 150, "{case}: no label made");
        for d in lab.source_docs() {
            assert_eq!(
                lab.tanium.doc_label_names(d.id),
                ["ThreatConnect"],
                "{case}"
            );
            assert_eq!(d.label_ids, vec![ours], "{case}");
        }
        let r = quiet(&mut lab);
        assert!(
            r.message.contains("0 created, 0 updated"),
            "{case}: {}",
            r.message
        );
        let listings = lab.tanium.server().hits(&format!("GET {BASE}/labels"));
        assert!(listings <= 2, "{case}: {listings} label listing requests");
    }
}

/// A label listing that ends short of the total it claims is not taken for all the labels:
/// no label is made on its word, the documents still sync, and the run says why (exit 3).
/// Without a total the job cannot tell: making the label it did not see answers 409, and the
/// run says the label cannot be found rather than make another.
#[test]
fn a_label_listing_short_of_its_total_makes_no_label() {
    for (quirk, meta) in [
        (ListingQuirk::DropsLast, true),
        (ListingQuirk::DropsLast, false),
    ] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 20, 72);
        lab.tanium.set_list_meta(meta);
        lab.tanium.set_labels_no_limit(false);
        lab.tanium.set_label_listing_quirk(quirk);
        for n in 0..120 {
            lab.tanium.add_label(&format!("Tanium label {n:03}"));
        }
        lab.tanium.add_label("ThreatConnect");
        let r = run(&mut lab, &[]);
        assert_eq!(r.code, 3, "{quirk:?}: {}", r.message);
        let why = if meta {
            "could not read the Tanium labels"
        } else {
            "could not create the Tanium label \"ThreatConnect\""
        };
        assert!(r.message.contains(why), "{quirk:?}: {}", r.message);
        if meta {
            assert!(r.log.contains("but Tanium counts 121"), "{}", r.log);
        }
        assert_eq!(lab.tanium.labels().len(), 121, "{quirk:?}: no label made");
        assert_eq!(held(&lab), expected(&lab, |_| true));
    }
}

/// A label deleted while the run works: putting it on a document answers 500 (as recorded for
/// an unknown label id, not 404). The labels are read again once, the label writes that need it
/// fail (exit 3, Last Modified held), and the next run makes the label again and labels every
/// document.
#[test]
fn a_label_deleted_during_the_run_fails_its_label_writes_once_and_the_next_run_heals() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 12, 73);
    lab.set("tanium_workers", json!("1"));
    let old = lab.tanium.add_label("ThreatConnect");
    lab.tanium.delete_label_after_next_listing("ThreatConnect");
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(
        r.message.contains("could not label ThreatConnect "),
        "{}",
        r.message
    );
    assert!(
        r.message
            .contains(&format!("Tanium label {old} no longer exists")),
        "{}",
        r.message
    );
    let attaches = lab
        .tanium
        .server()
        .hits_where(|k| k.starts_with("PUT ") && k.ends_with("/labels"));
    assert_eq!(
        attaches, 5,
        "one attach tried (five attempts at its 500), the rest known gone"
    );
    assert_eq!(
        lab.tanium.server().hits(&format!("GET {BASE}/labels")),
        4,
        "listed once at the start (two requests) and once again (two)"
    );
    assert_eq!(
        held(&lab),
        expected(&lab, |_| true),
        "the documents are written"
    );
    let r = ok(&mut lab);
    assert_eq!(held(&lab), expected(&lab, |_| true));
    let made = lab.tanium.label_id("ThreatConnect").unwrap();
    assert_ne!(made, old);
    for d in lab.source_docs() {
        assert_eq!(
            lab.tanium.doc_label_names(d.id),
            ["ThreatConnect"],
            "{}",
            r.message
        );
    }
    quiet(&mut lab);
}
