//! Taking over a source someone else filled (the previous ThreatConnect app's default source
//! is also "ThreatConnect"): left alone by default, adopted or replaced when asked.

use serde_json::{json, Value};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::tanium::SimDoc;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;

use crate::support::docs::covered;
use crate::support::{expected, expected_name, lab, lease_calls, run_with};

fn run(lab: &mut Lab, extra: &[(&str, Value)]) -> RunResult {
    let r = run_with(lab, extra);
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    r
}

/// An OpenIOC 1.0 document as an earlier integration wrote them: its own ids, one OR of items.
fn old_ioc(id: &str, items: &[(&str, &str)]) -> String {
    let items: String = items
        .iter()
        .map(|(search, v)| {
            format!(
                r#"<IndicatorItem id="{id}-i" condition="is"><Context document="X" search="{search}" type="mir"/><Content type="string">{v}</Content></IndicatorItem>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?><ioc xmlns="http://schemas.mandiant.com/2010/ioc" id="{id}"><short_description>legacy {id}</short_description><definition><Indicator operator="OR" id="{id}-or">{items}</Indicator></definition></ioc>"#
    )
}

fn search_of(i: &Indicator) -> (&'static str, String) {
    match i.type_name.as_str() {
        "Address" => ("PortItem/remoteIP", i.ip.clone().unwrap()),
        "Host" => ("Network/DNS", i.host_name.clone().unwrap()),
        _ => (
            "FileItem/Md5sum",
            i.md5
                .clone()
                .or(i.sha1.clone())
                .or(i.sha256.clone())
                .unwrap(),
        ),
    }
}

/// A lab whose "ThreatConnect" source holds documents of an earlier integration: `adoptable`
/// of them cover one indicator the job sends, one covers two, one a value TC does not have.
fn legacy_lab(adoptable: usize) -> (tempfile::TempDir, Lab, Vec<(i64, Indicator)>, Vec<i64>) {
    let (d, lab) = lab(ApiGeneration::V4, 120, 51);
    let source = lab.tanium.add_source("ThreatConnect");
    let live: Vec<Indicator> = lab
        .tc
        .snapshot()
        .into_iter()
        // (a File by its MD5, the hash an identity is keyed on first)
        .filter(|i| i.active && expected_name(i).is_some())
        .filter(|i| i.type_name != "File" || i.md5.is_some())
        .take(adoptable + 2)
        .collect();
    let mut covered = Vec::new();
    for (n, i) in live.iter().take(adoptable).enumerate() {
        let (search, v) = search_of(i);
        let id = lab.tanium.add_doc(
            source,
            &format!("legacy {n}"),
            &old_ioc(&format!("old-{n}"), &[(search, &v)]),
        );
        covered.push((id, i.clone()));
    }
    let (s1, v1) = search_of(&live[adoptable]);
    let (s2, v2) = search_of(&live[adoptable + 1]);
    let two = lab.tanium.add_doc(
        source,
        "legacy pair",
        &old_ioc("old-pair", &[(s1, &v1), (s2, &v2)]),
    );
    let stray = lab.tanium.add_doc(
        source,
        "legacy stray",
        &old_ioc("old-stray", &[("PortItem/remoteIP", "203.0.113.250")]),
    );
    (d, lab, covered, vec![two, stray])
}

fn doc(lab: &Lab, id: i64) -> Option<SimDoc> {
    lab.source_docs().into_iter().find(|d| d.id == id)
}

#[test]
fn a_source_of_someone_else_is_left_alone_by_default() {
    let (_d, mut lab, covered, others) = legacy_lab(5);
    let before: Vec<SimDoc> = covered
        .iter()
        .map(|(id, _)| *id)
        .chain(others.iter().copied())
        .map(|id| doc(&lab, id).unwrap())
        .collect();
    let r = run(&mut lab, &[]);
    assert!(
        r.message
            .contains("7 documents this job did not make left alone (see Take Over Source)"),
        "{}",
        r.message
    );
    for b in &before {
        assert_eq!(doc(&lab, b.id).as_ref(), Some(b), "untouched");
    }
    let r = run(&mut lab, &[("reconcile_interval_hours", json!("0"))]);
    assert!(r.message.contains(" 0 removed"), "{}", r.message);
    assert_eq!(
        lab.source_docs().len(),
        expected(&lab, |_| true).len() + before.len()
    );
}

#[test]
fn taking_a_source_over_adopts_in_place_and_replaces_the_rest() {
    let (_d, mut lab, covered, others) = legacy_lab(5);
    lab.set("take_over_source", json!(true));
    let r = run(&mut lab, &[]);
    assert!(r.message.contains(", 5 adopted"), "{}", r.message);
    assert!(
        r.log
            .contains("7 documents this job did not make; 6 cover exactly one indicator each"),
        "{}",
        r.log
    );
    for (id, ind) in &covered {
        let d = doc(&lab, *id).unwrap_or_else(|| panic!("{id} was adopted in place"));
        assert_eq!(d.revision_id, 2, "rewritten once, in place");
        assert!(d.intrinsic_id.starts_with("old-"), "keeps its root id");
        assert_eq!(
            lab.tanium.doc_label_names(*id),
            ["ThreatConnect"],
            "an adopted document carries the job's labels"
        );
        assert!(
            d.name.starts_with(&expected_name(ind).unwrap()) && d.name.contains("tc-sync: "),
            "{}",
            d.name
        );
    }
    for id in others {
        assert!(doc(&lab, id).is_none(), "{id} is replaced");
    }
    // Every indicator has exactly one document, and the next runs write nothing.
    let names: Vec<String> = {
        let mut v: Vec<String> = lab
            .source_docs()
            .iter()
            .map(|d| d.name.split(" (tc-sync:").next().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names, expected(&lab, |_| true));
    lab.tanium.server().reset_counters();
    let r = run(&mut lab, &[("reconcile_interval_hours", json!("0"))]);
    assert!(
        r.message.contains("0 created, 0 updated, 0 removed"),
        "{}",
        r.message
    );
    let writes = ["POST /plugin", "PUT /plugin", "DELETE /plugin"]
        .iter()
        .map(|p| lab.tanium.server().hits(p))
        .sum::<u64>()
        - lease_calls(lab.tanium.server());
    assert_eq!(writes, 0);
    // A change to an adopted indicator is written in place again.
    let (id, ind) = &covered[0];
    lab.tc.update(ind.id, |i| {
        i.confidence = Some(i.confidence.unwrap_or(0) % 100 + 1)
    });
    let r = run(&mut lab, &[]);
    assert!(
        r.message.contains("0 created, 1 updated, 0 removed"),
        "{}",
        r.message
    );
    assert_eq!(doc(&lab, *id).unwrap().revision_id, 3);
}

/// Taking over, a document of someone else that cannot be read (here a proxy's page instead
/// of the document) may cover an indicator the job sends: it stays, adopted by no one and
/// removed by no one, the run says so (exit 3), and the next run reads it and adopts it.
#[test]
fn a_document_of_someone_else_that_cannot_be_read_stays_until_it_can() {
    use tanium_tr_indicators::sim::server::{Fault, FaultRule};
    let (_d, mut lab, covered, others) = legacy_lab(3);
    lab.set("take_over_source", json!(true));
    let (unread, ind) = covered[0].clone();
    let path = format!("{}/intels/{unread}", ApiGeneration::V4.base_path());
    lab.tanium
        .server()
        .inject(FaultRule::new(Some("GET"), &path, 1, Fault::Garbage));
    let before = doc(&lab, unread).unwrap();
    let r = run_with(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(
        r.message.contains(
            "could not read 1 document this job did not make: they stay until a run can read them"
        ),
        "{}",
        r.message
    );
    assert_eq!(doc(&lab, unread).as_ref(), Some(&before), "left as it was");
    assert!(
        r.log
            .contains("taking the source over: 2 documents adopted, 2 to remove"),
        "{}",
        r.log
    );
    for id in others {
        assert!(doc(&lab, id).is_none(), "{id} is replaced");
    }
    assert!(
        r.results["last_full_reconcile"].is_empty(),
        "{:?}",
        r.results
    );

    let r = run(&mut lab, &[]);
    assert!(
        r.log
            .contains("taking the source over: 1 document adopted, 0 to remove"),
        "{}",
        r.log
    );
    let d = doc(&lab, unread).expect("adopted in place");
    assert!(
        d.name.starts_with(&expected_name(&ind).unwrap()),
        "{}",
        d.name
    );
    assert_eq!(
        covered_names(&lab),
        expected(&lab, |_| true),
        "one document per indicator"
    );
}

fn covered_names(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = lab
        .source_docs()
        .iter()
        .map(|d| d.name.split(" (tc-sync:").next().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The admin's order: a first run into the previous app's source leaves its documents alone
/// and makes its own; every later run says they are there; turning Take Over Source on acts on
/// the very next run, adopting the old document of each value the job sends (its Tanium id kept)
/// and removing the job's own copy of it.
#[test]
fn take_over_turned_on_after_the_first_run_adopts_on_the_very_next_run() {
    let (_d, mut lab, covered, others) = legacy_lab(5);
    let r = run(&mut lab, &[]);
    assert!(
        r.message
            .contains("7 documents this job did not make left alone (see Take Over Source)"),
        "{}",
        r.message
    );
    // The job made its own document for every value, the five covered ones included.
    let own: Vec<i64> = covered
        .iter()
        .map(|(_, ind)| {
            let name = expected_name(ind).unwrap();
            let docs: Vec<SimDoc> = lab
                .source_docs()
                .into_iter()
                .filter(|d| d.name.starts_with(&name) && !d.name.starts_with("legacy"))
                .collect();
            assert_eq!(docs.len(), 1, "{name}: {docs:?}");
            docs[0].id
        })
        .collect();
    // Every run while they remain says so, not only the first.
    let r = run(&mut lab, &[]);
    assert!(
        r.message
            .contains("7 documents this job did not make left alone (see Take Over Source)"),
        "second run: {}\n{}",
        r.message,
        r.log
    );

    lab.set("take_over_source", json!(true));
    let r = run(&mut lab, &[]);
    assert!(r.message.contains("(full reconcile)"), "{}", r.message);
    assert!(r.message.contains(", 5 adopted"), "{}", r.message);
    assert!(!r.message.contains("left alone"), "{}", r.message);
    for (id, ind) in &covered {
        let d = doc(&lab, *id).unwrap_or_else(|| panic!("{id} was adopted in place"));
        assert!(d.intrinsic_id.starts_with("old-"), "keeps its root id");
        assert!(
            d.name.starts_with(&expected_name(ind).unwrap()) && d.name.contains("tc-sync: "),
            "{}",
            d.name
        );
        assert_eq!(lab.tanium.doc_label_names(*id), ["ThreatConnect"]);
    }
    for id in own.iter().chain(&others) {
        assert!(doc(&lab, *id).is_none(), "{id} is removed");
    }
    // One document per indicator, and no log line calls a removed document adopted.
    let names: Vec<String> = {
        let mut v: Vec<String> = lab
            .source_docs()
            .iter()
            .map(|d| d.name.split(" (tc-sync:").next().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names, expected(&lab, |_| true));
    for id in others {
        assert!(
            !r.log
                .lines()
                .any(|l| l.contains("adopt") && l.contains(&format!("document {id} "))),
            "{}",
            r.log
        );
    }
    let r = run(&mut lab, &[]);
    assert!(
        r.message.contains("0 created, 0 updated, 0 removed"),
        "{}",
        r.message
    );
    assert!(!r.message.contains("did not make"), "{}", r.message);
}

fn writes(lab: &Lab) -> u64 {
    ["POST /plugin", "PUT /plugin", "DELETE /plugin"]
        .iter()
        .map(|p| lab.tanium.server().hits(p))
        .sum()
}

/// Threat Response's own sources (analysts' uploads in id 1, Tanium Signals in id 2) are never
/// taken over, whether the job names them as Threat Response does or the server calls them
/// otherwise; with Take Over Source off, their documents are never touched.
#[test]
fn a_built_in_source_is_never_taken_over() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 30, 52);
    let ind = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| i.active && i.type_name == "Host" && expected_name(i).is_some())
        .unwrap();
    let (search, v) = search_of(&ind);
    let uploaded = lab
        .tanium
        .add_doc(1, "analyst upload", &old_ioc("mine", &[(search, &v)]));
    let before = lab
        .tanium
        .docs_in(1)
        .into_iter()
        .find(|d| d.id == uploaded)
        .unwrap();

    // Named as Threat Response names it: refused before any request.
    lab.tanium.server().reset_counters();
    let r = run_with(
        &mut lab,
        &[
            ("tanium_source", json!("User")),
            ("take_over_source", json!(true)),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(
        r.message.starts_with(
            "Take Over Source must be off for Tanium Threat Response Source \"User\": it is Threat Response's own source for analysts' uploads"
        ),
        "{}",
        r.message
    );
    assert_eq!(lab.tanium.server().total_requests(), 0);
    assert_eq!(lab.tc.server().total_requests(), 0);

    // Named otherwise by the server: known by its id, refused before any write.
    lab.tanium.rename_source(1, "Analyst Intel");
    let r = run_with(
        &mut lab,
        &[
            ("tanium_source", json!("Analyst Intel")),
            ("take_over_source", json!(true)),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(
        r.message.contains(
            "\"Analyst Intel\": it is Threat Response's own source for analysts' uploads (id 1)"
        ) && r.message.contains("nothing was changed"),
        "{}",
        r.message
    );
    assert_eq!(writes(&lab), 0);

    // Off, the job adds its own documents there but leaves the analyst's alone, run after run.
    for extra in [json!("24"), json!("0")] {
        let r = run_with(
            &mut lab,
            &[
                ("tanium_source", json!("Analyst Intel")),
                ("reconcile_interval_hours", extra),
            ],
        );
        assert_eq!(r.code, 0, "{}", r.message);
        assert!(
            r.message
                .contains("1 document this job did not make left alone"),
            "{}",
            r.message
        );
        let now = lab.tanium.docs_in(1).into_iter().find(|d| d.id == uploaded);
        assert_eq!(
            now.as_ref(),
            Some(&before),
            "the analyst's document is untouched"
        );
    }
}

/// A source holding `strays` documents of another integration (values TC does not have).
fn stray_lab(strays: usize) -> (tempfile::TempDir, Lab, Vec<i64>) {
    let (d, lab) = lab(ApiGeneration::V4, 20, 53);
    let source = lab.tanium.add_source("ThreatConnect");
    let ids = (0..strays)
        .map(|n| {
            lab.tanium.add_doc(
                source,
                &format!("legacy stray {n}"),
                &old_ioc(
                    &format!("stray-{n}"),
                    &[("PortItem/remoteIP", &format!("198.51.100.{}", n + 1))],
                ),
            )
        })
        .collect();
    (d, lab, ids)
}

/// Taking a source over removes what the job does not adopt, and those removals are weighed by
/// Maximum Removal Percent like any other, in either layout of documents.
#[test]
fn take_over_removals_count_against_maximum_removal_percent() {
    for per_document in ["1", "10"] {
        let (_d, mut lab, strays) = stray_lab(60);
        lab.set("take_over_source", json!(true));
        lab.set("indicators_per_document", json!(per_document));
        let r = run_with(&mut lab, &[]);
        assert_eq!(r.code, 3, "{per_document}: {}\n{}", r.message, r.log);
        assert!(
            r.message
                .contains("held back 60 removals, more than Maximum Removal Percent allows"),
            "{per_document}: {}",
            r.message
        );
        for id in &strays {
            assert!(doc(&lab, *id).is_some(), "{per_document}: {id} stays");
        }
        // Held back, the run still sent every indicator.
        assert_eq!(
            job_covered(&lab),
            expected(&lab, |_| true),
            "{per_document}"
        );
        let r = run_with(&mut lab, &[("max_removal_percent", json!("100"))]);
        assert_eq!(r.code, 0, "{per_document}: {}\n{}", r.message, r.log);
        for id in &strays {
            assert!(doc(&lab, *id).is_none(), "{per_document}: {id} removed");
        }
        let r = run_with(&mut lab, &[]);
        assert_eq!(r.code, 0, "{per_document}: {}", r.message);
        assert!(!r.message.contains("did not make"), "{}", r.message);
    }
}

/// What the source holds for the job, indicator by indicator: [`covered`] without the strays
/// of [`stray_lab`].
fn job_covered(lab: &Lab) -> Vec<String> {
    covered(lab)
        .into_iter()
        .filter(|n| !n.starts_with("legacy stray "))
        .collect()
}

/// Take Over Source turned on after the job has run for a while, in a source where the other
/// integration's documents outnumber the job's: the very next run (a full reconcile) would
/// remove more than half the source, so it removes none and says how many it held back, while
/// the job's own documents stay complete; raised, the guard lets them go.
#[test]
fn a_take_over_turned_on_later_that_would_remove_most_of_the_source_is_held_back() {
    for per_document in ["1", "10"] {
        let (_d, mut lab, strays) = stray_lab(60);
        lab.set("indicators_per_document", json!(per_document));
        let r = run_with(&mut lab, &[]);
        assert_eq!(r.code, 0, "{per_document}: {}\n{}", r.message, r.log);
        assert_eq!(
            job_covered(&lab),
            expected(&lab, |_| true),
            "{per_document}"
        );
        let changed = lab
            .tc
            .snapshot()
            .into_iter()
            .find(|i| i.active && expected_name(i).is_some())
            .unwrap();
        lab.tc.update(changed.id, |i| i.confidence = Some(3));

        lab.set("take_over_source", json!(true));
        let r = run_with(&mut lab, &[]);
        assert_eq!(r.code, 3, "{per_document}: {}\n{}", r.message, r.log);
        assert!(
            r.message
                .contains("held back 60 removals, more than Maximum Removal Percent allows"),
            "{per_document}: {}",
            r.message
        );
        assert!(r.log.contains("full reconcile: "), "{per_document}");
        for id in &strays {
            assert!(doc(&lab, *id).is_some(), "{per_document}: {id} stays");
        }
        assert_eq!(
            job_covered(&lab),
            expected(&lab, |_| true),
            "{per_document}"
        );
        crate::support::docs::assert_items_match_tc(&lab);

        let r = run_with(&mut lab, &[("max_removal_percent", json!("100"))]);
        assert_eq!(r.code, 0, "{per_document}: {}\n{}", r.message, r.log);
        for id in &strays {
            assert!(doc(&lab, *id).is_none(), "{per_document}: {id} removed");
        }
        assert_eq!(covered(&lab), expected(&lab, |_| true), "{per_document}");
    }
}
