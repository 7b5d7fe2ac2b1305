//! Taking over a source someone else filled (the previous ThreatConnect app's default source
//! is also "ThreatConnect"): left alone by default, adopted or replaced when asked.

use serde_json::{json, Value};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::tanium::SimDoc;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;

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
            .contains("7 documents this job did not make, 6 of them cover exactly one indicator"),
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
