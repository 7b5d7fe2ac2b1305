//! One reconcile engine, two layouts: what the per-indicator and the grouped layout must agree
//! on, through the real binary against both simulators (label bookkeeping after a failed label
//! write, removals the writes never reached, what the removal guard weighs, the document size).

use std::collections::BTreeSet;

use serde_json::{json, Map};
use tanium_tr_indicators::intel::group;
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::tanium::model::ApiGeneration;

use crate::support::{expected, lab};

const BASE: &str = "/plugin/products/threat-response/api/v1";

fn run(lab: &mut Lab) -> RunResult {
    lab.run(&Map::new(), &[]).unwrap()
}

fn ok(lab: &mut Lab) -> RunResult {
    let r = run(lab);
    assert_eq!(r.code, 0, "message: {}\nlog:\n{}", r.message, r.log);
    r
}

/// Every label name any document of the source carries.
fn labels_on_docs(lab: &Lab) -> BTreeSet<String> {
    lab.source_docs()
        .iter()
        .flat_map(|d| lab.tanium.doc_label_names(d.id))
        .collect()
}

/// The members of each grouped document, by document.
fn group_sizes(lab: &Lab) -> Vec<(String, usize)> {
    lab.source_docs()
        .into_iter()
        .filter_map(|d| {
            let g = group::read(&d.body).ok().filter(|g| g.key.is_some())?;
            Some((d.name, g.members.len()))
        })
        .collect()
}

/// What the grouped documents hold, indicator by indicator, sorted, repeats kept.
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

/// The label rules change and one grouped document's label attach fails during the full
/// reconcile that follows: the run that heals it leaves no label of the old rules on any
/// document, and every document carries the new ones.
#[test]
fn a_failed_grouped_label_attach_after_a_label_change_heals_without_the_old_label() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 200, 2201);
    lab.set("indicators_per_document", json!("20"));
    lab.set("tanium_labels", json!("ThreatConnect|Extra"));
    lab.set("max_removal_percent", json!("100"));
    ok(&mut lab);
    lab.set("tanium_labels", json!("ThreatConnect"));
    let bad = Fault::Status {
        status: 400,
        retry_after: None,
    };
    lab.tanium
        .server()
        .inject(FaultRule::new(Some("PUT"), &format!("{BASE}/intels/"), 1, bad).after(2));
    let r = run(&mut lab);
    assert_eq!(r.code, 3, "{}\n{}", r.message, r.log);
    lab.tanium.server().clear_faults();
    ok(&mut lab);
    for d in lab.source_docs() {
        assert_eq!(
            lab.tanium.doc_label_names(d.id),
            ["ThreatConnect"],
            "{}",
            d.name
        );
    }
    assert_eq!(covered(&lab), expected(&lab, |_| true));
}

/// Removals held back keep their documents, labels and all; should the admin undo the edit
/// that held them back, those documents are the job's again, and the labels of the old rules
/// on them must still be the job's to remove. A run that held removals back therefore does
/// not settle the labels, in either layout.
#[test]
fn labels_on_documents_kept_by_the_guard_stay_managed_until_they_are_settled() {
    for size in ["1", "20"] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 120, 2204);
        lab.set("indicators_per_document", json!(size));
        lab.set("tanium_labels", json!("ThreatConnect|Extra"));
        ok(&mut lab);
        // A typo-like edit held back by the guard, and a label change in the same save.
        lab.set("indicator_types", json!("Host"));
        lab.set("tanium_labels", json!("ThreatConnect"));
        let r = run(&mut lab);
        assert_eq!(r.code, 3, "size {size}: {}", r.message);
        assert!(
            r.message.contains("held back"),
            "size {size}: {}",
            r.message
        );
        // Undone: every indicator is the job's again.
        lab.set("indicator_types", json!("Address|File|Host"));
        ok(&mut lab);
        assert_eq!(covered(&lab), expected(&lab, |_| true), "size {size}");
        let left = labels_on_docs(&lab);
        assert_eq!(
            left,
            BTreeSet::from(["ThreatConnect".to_string()]),
            "size {size}: the old rules' label is gone"
        );
    }
}

/// Indicators per Intel Document 20, Tanium Labels `ThreatConnect|Extra`, then `ThreatConnect`:
/// every document moves to the new label set. Moving indicators between documents removes none
/// of them, so the guard holds nothing back, and no document holds more than 20.
#[test]
fn a_label_change_moves_indicators_between_documents_without_the_guard_and_keeps_the_size() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 100, 2202);
    lab.set("indicators_per_document", json!("20"));
    lab.set("tanium_labels", json!("ThreatConnect|Extra"));
    ok(&mut lab);
    let want = expected(&lab, |_| true);
    assert_eq!(covered(&lab), want);
    lab.set("tanium_labels", json!("ThreatConnect"));
    let r = ok(&mut lab);
    assert!(!r.log.contains("held back all"), "{}", r.log);
    assert_eq!(covered(&lab), want, "every indicator in one document");
    for (name, n) in group_sizes(&lab) {
        assert!(n <= 20, "{name}: {n} members");
    }
    assert!(r.message.contains(" 0 removed"), "{}", r.message);
    assert_eq!(
        labels_on_docs(&lab),
        BTreeSet::from(["ThreatConnect".to_string()])
    );
    ok(&mut lab);
}

/// Writes that give up (every create refused) never reach the removals of the run: none of
/// them is counted as made, in either layout, and the documents stay for the next run.
#[test]
fn removals_the_writes_never_reached_are_not_counted_as_made_in_either_layout() {
    for size in ["1", "25"] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 150, 2203);
        lab.set("indicators_per_document", json!(size));
        lab.set("tanium_workers", json!("1"));
        lab.set("take_over_source", json!(true));
        lab.set("max_removal_percent", json!("100"));
        let source = lab.tanium.add_source("ThreatConnect");
        let legacy = [
            lab.tanium.add_doc(source, "legacy one", "<not ours/>"),
            lab.tanium.add_doc(source, "legacy two", "<not ours/>"),
        ];
        lab.tanium.server().inject(FaultRule::new(
            Some("POST"),
            &format!("{BASE}/sources/"),
            100_000,
            Fault::Status {
                status: 503,
                retry_after: Some(0),
            },
        ));
        let r = run(&mut lab);
        let kept: Vec<i64> = lab.source_docs().iter().map(|d| d.id).collect();
        assert_eq!(
            kept, legacy,
            "size {size}: nothing written, nothing removed"
        );
        assert_eq!(
            r.code, 1,
            "size {size}: nothing was delivered: {}\n{}",
            r.message, r.log
        );
        assert!(!r.log.contains("2 removed"), "size {size}: {}", r.log);
        lab.tanium.server().clear_faults();
        ok(&mut lab);
        assert!(lab.source_docs().iter().all(|d| !legacy.contains(&d.id)));
    }
}

/// The same removals, for the same reasons, in the same words, whatever the layout: one
/// deleted in ThreatConnect, one deactivated, one retagged with an excluded tag (an
/// incremental run); then one put on the Never Send list (a full reconcile).
#[test]
fn both_layouts_count_removals_by_reason_in_the_same_words() {
    let planned = |r: &RunResult| {
        r.log
            .lines()
            .find_map(|l| {
                l.split_once("removals planned ")
                    .map(|(_, rest)| rest.to_string())
            })
            .unwrap_or_else(|| panic!("no removals line:\n{}", r.log))
    };
    let mut lines = Vec::new();
    for size in ["1", "20"] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 150, 2205);
        lab.set("indicators_per_document", json!(size));
        lab.set("exclude_tags", json!("Benign"));
        ok(&mut lab);
        let live: Vec<_> = lab
            .tc
            .snapshot()
            .into_iter()
            .filter(|i| i.active && i.type_name == "Host" && !i.tags.iter().any(|t| t == "Benign"))
            .collect();
        lab.tc.delete(live[0].id);
        lab.tc.set_active(live[1].id, false);
        lab.tc.update(live[2].id, |i| i.tags.push("Benign".into()));
        let incremental = planned(&ok(&mut lab));
        assert!(
            incremental.starts_with(
                "3 (Exclude Tags 1, deleted in ThreatConnect 1, inactive 1); removed 3, failed 0"
            ),
            "size {size}: {incremental}"
        );
        let never = live[3].host_name.clone().unwrap_or(live[3].summary.clone());
        lab.set("never_send", json!(never));
        let full = planned(&ok(&mut lab));
        assert!(
            full.starts_with("1 (Never Send 1); removed 1, failed 0"),
            "size {size}: {full}"
        );
        lines.push((incremental, full));
    }
    assert_eq!(lines[0], lines[1]);
}

/// Maximum Indicators reached, grouped: an incremental run moves an indicator whose tags
/// changed to a document of its new label set. A move adds nothing to the source, so it needs
/// no room: the indicator keeps a document (with its new labels), and nothing is counted over
/// the cap.
#[test]
fn a_grouped_move_at_maximum_indicators_keeps_the_indicator() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 120, 2206);
    lab.set("indicators_per_document", json!("20"));
    lab.set("tags_as_labels", json!("APT*"));
    let want = expected(&lab, |_| true);
    lab.set("max_indicators", json!(want.len().to_string()));
    ok(&mut lab);
    assert_eq!(covered(&lab), want, "the source is full");
    let names: BTreeSet<String> = want.iter().cloned().collect();
    let movers: Vec<_> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| {
            i.active
                && !i.tags.iter().any(|t| t.to_lowercase().starts_with("apt"))
                && crate::support::expected_name(i).is_some_and(|n| names.contains(&n))
        })
        .take(3)
        .collect();
    assert_eq!(movers.len(), 3);
    for m in &movers {
        lab.tc.update(m.id, |i| i.tags.push("APT99".into()));
    }
    let r = ok(&mut lab);
    assert!(!r.message.contains("full reconcile"), "{}", r.message);
    assert!(
        !r.log.contains(" 1 over Maximum")
            && !r.log.contains(" 2 over Maximum")
            && !r.log.contains(" 3 over Maximum"),
        "{}",
        r.log
    );
    assert_eq!(covered(&lab), want, "no indicator lost its document");
    for m in &movers {
        let name = crate::support::expected_name(m).unwrap();
        let holder = lab
            .source_docs()
            .into_iter()
            .find(|d| {
                group::read(&d.body).is_ok_and(|g| g.members.iter().any(|x| x.title() == name))
            })
            .unwrap_or_else(|| panic!("{name} is in no document"));
        assert!(
            lab.tanium
                .doc_label_names(holder.id)
                .iter()
                .any(|l| l == "APT99"),
            "{name} is in a document of its new label set"
        );
    }
}
