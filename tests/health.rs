//! Intel Threat Response turned off: 4.x intel objects carry `disabled`,
//! `disabledEndpointCount`, `throttledFindingCount` and `status`, and TR disables noisy intel on
//! its own. Through the real binary: the job reports such documents (message.tc counts them,
//! app.log names each with its value, TC link and endpoints), never rewrites one because it is
//! disabled (a real content change still updates it), tolerates listings without the fields, and
//! does the same for grouped documents (named by bucket, their members counted).

use serde_json::{json, Map};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::tanium::DocHealth;
use tanium_tr_indicators::tanium::model::ApiGeneration;

use crate::support::{expected, expected_name, held, lab};

fn ok(lab: &mut Lab) -> RunResult {
    lab.tanium.server().reset_counters();
    let r = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    r
}

/// Documents created, replaced or removed (labels and deploys left out).
fn doc_writes(lab: &Lab) -> u64 {
    let s = lab.tanium.server();
    s.hits_where(|k| {
        (k.starts_with("POST /plugin") && k.contains("/sources/"))
            || ((k.starts_with("PUT /plugin") || k.starts_with("DELETE /plugin"))
                && !k.contains("/labels")
                // (a run lease's source, not a document)
                && (!k.contains("/sources/") || k.contains("/intels")))
    })
}

fn off(endpoints: u64) -> DocHealth {
    DocHealth {
        disabled: true,
        disabled_endpoints: endpoints,
        throttled_findings: 7,
    }
}

fn on_some(endpoints: u64) -> DocHealth {
    DocHealth {
        disabled: false,
        disabled_endpoints: endpoints,
        throttled_findings: 0,
    }
}

#[test]
fn documents_threat_response_disabled_are_reported_and_never_rewritten_for_it() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 40, 81);
    ok(&mut lab);
    let want = expected(&lab, |_| true);
    let docs = lab.source_docs();
    let (a, b) = (&docs[3], &docs[11]);
    assert!(lab.tanium.set_doc_health(a.id, off(40)));
    assert!(lab.tanium.set_doc_health(b.id, on_some(3)));

    let r = ok(&mut lab);
    assert!(
        r.message.starts_with(
            "Synced: Tanium source \"ThreatConnect\": 2 documents disabled by Threat Response as noisy (see app.log); now holds"
        ),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("0 created, 0 updated, 0 removed"),
        "{}",
        r.message
    );
    assert_eq!(doc_writes(&lab), 0);
    let line = |d: &tanium_tr_indicators::sim::tanium::SimDoc| {
        r.log
            .lines()
            .find(|l| l.contains("disabled by Threat Response: ") && l.contains(&d.name))
            .unwrap_or_else(|| panic!("{} not named:\n{}", d.name, r.log))
            .to_string()
    };
    let la = line(a);
    assert!(
        la.contains(&format!("(document {}, turned off everywhere, turned off on 40 endpoints, 7 findings throttled, status DISABLED): http", a.id)),
        "{la}"
    );
    assert!(la.contains("/#/details/indicators/"), "the TC link: {la}");
    assert!(line(b).contains("turned off on 3 endpoints"), "{}", line(b));
    assert!(r
        .log
        .contains("Threat Response has disabled 2 of this job's documents"));

    // A full reconcile rewrites none of them either, and says the same.
    lab.set("reconcile_interval_hours", json!("0"));
    let r = ok(&mut lab);
    lab.params.remove("reconcile_interval_hours");
    assert!(r.message.contains("(full reconcile)"), "{}", r.message);
    assert!(
        r.message
            .contains("2 documents disabled by Threat Response"),
        "{}",
        r.message
    );
    assert_eq!(doc_writes(&lab), 0);
    assert_eq!(held(&lab), want);
    let after = lab.source_docs();
    let same = |d: &tanium_tr_indicators::sim::tanium::SimDoc| {
        after.iter().find(|x| x.id == d.id).map(|x| x.revision_id) == Some(d.revision_id)
    };
    assert!(same(a) && same(b), "not re-uploaded");

    // A real change of the indicator still updates its document.
    let changed = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| expected_name(i).as_deref() == Some(a.name.as_str()))
        .unwrap();
    lab.tc.update(changed.id, |i| {
        i.confidence = Some((i.confidence.unwrap_or(0) + 9) % 100)
    });
    let r = ok(&mut lab);
    assert!(
        r.message.contains("0 created, 1 updated, 0 removed"),
        "{}",
        r.message
    );
    let now = lab
        .source_docs()
        .into_iter()
        .find(|x| x.id == a.id)
        .unwrap();
    assert_eq!(now.revision_id, a.revision_id + 1);

    // Turned on again in Threat Response: nothing to report.
    lab.tanium.set_doc_health(a.id, DocHealth::default());
    lab.tanium.set_doc_health(b.id, DocHealth::default());
    let r = ok(&mut lab);
    assert!(!r.message.contains("disabled"), "{}", r.message);
}

/// Whether the listing carries the health fields is unconfirmed: without them nothing is
/// reported and nothing else changes; on 3.x (which has none) the same.
#[test]
fn listings_without_health_fields_report_nothing_and_change_nothing() {
    for g in [ApiGeneration::V4, ApiGeneration::V3] {
        let (_d, mut lab) = lab(g, 30, 82);
        lab.tanium.set_health_listed(false);
        ok(&mut lab);
        let doc = lab.source_docs()[2].clone();
        lab.tanium.set_doc_health(doc.id, off(5));
        let r = ok(&mut lab);
        assert!(!r.message.contains("disabled"), "{g:?}: {}", r.message);
        assert!(
            r.message.contains("0 created, 0 updated, 0 removed"),
            "{}",
            r.message
        );
        assert_eq!(doc_writes(&lab), 0);
    }
}

/// A grouped document TR disabled is reported by its bucket, its members counted; it is not
/// rewritten for it.
#[test]
fn a_disabled_grouped_document_is_named_by_bucket_and_its_members_counted() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 120, 83);
    lab.set("indicators_per_document", json!("50"));
    ok(&mut lab);
    let doc = lab
        .source_docs()
        .into_iter()
        .find(|d| crate::support::docs::is_group(&d.body))
        .unwrap();
    let members = crate::support::docs::items(&doc.body).unwrap().len();
    lab.tanium.set_doc_health(doc.id, on_some(12));
    let r = ok(&mut lab);
    assert!(
        r.message.contains(&format!(
            ": 1 document ({members} indicators) disabled by Threat Response as noisy (see app.log); now holds"
        )),
        "{}",
        r.message
    );
    assert!(
        r.log.contains(&format!(
            "(document {}, turned off on 12 endpoints, status DISABLED, grouped document of bucket ",
        doc.id)) && r.log.contains(&format!(", {members} indicators)")),
        "{}",
        r.log
    );
    assert_eq!(doc_writes(&lab), 0);
}

fn label_writes(lab: &Lab) -> u64 {
    lab.tanium.server().hits_where(|k| {
        (k.starts_with("PUT ") || k.starts_with("DELETE "))
            && k.contains("/intels/")
            && k.contains("/labels")
    })
}

/// Disabled Intel Label (off by default): the job's documents TR disabled get the label (made
/// when missing), lose it once TR enables them again, and keep every other label; a document is
/// never rewritten for it, a rerun writes nothing, a full reconcile leaves it, and the grouped
/// layout does the same.
#[test]
fn disabled_intel_label_marks_what_threat_response_disabled_and_only_that() {
    for per_document in ["1", "40"] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 90, 84);
        lab.set("indicators_per_document", json!(per_document));
        lab.set("disabled_intel_label", json!("Noisy Intel"));
        let r = ok(&mut lab);
        assert!(
            !r.message.contains("relabelled"),
            "{per_document}: {}",
            r.message
        );
        assert_eq!(
            lab.tanium.label_id("Noisy Intel"),
            None,
            "not made before it is needed"
        );
        let docs = lab.source_docs();
        let (a, b) = (docs[0].clone(), docs[1].clone());
        lab.tanium.set_doc_health(a.id, off(9));
        lab.tanium.set_doc_health(b.id, on_some(2));

        let r = ok(&mut lab);
        assert!(
            r.message.contains("2 relabelled"),
            "{per_document}: {}",
            r.message
        );
        assert_eq!(doc_writes(&lab), 0, "{per_document}");
        let names = |id: i64, lab: &Lab| lab.tanium.doc_label_names(id);
        assert_eq!(names(a.id, &lab), ["Noisy Intel", "ThreatConnect"]);
        assert_eq!(names(b.id, &lab), ["Noisy Intel", "ThreatConnect"]);
        for d in lab
            .source_docs()
            .iter()
            .filter(|d| d.id != a.id && d.id != b.id)
        {
            assert_eq!(
                names(d.id, &lab),
                ["ThreatConnect"],
                "{per_document}: {}",
                d.name
            );
        }
        let r = ok(&mut lab);
        assert_eq!(label_writes(&lab), 0, "{per_document}: {}", r.message);
        lab.set("reconcile_interval_hours", json!("0"));
        let r = ok(&mut lab);
        lab.params.remove("reconcile_interval_hours");
        assert_eq!(
            label_writes(&lab) + doc_writes(&lab),
            0,
            "{per_document}: {}",
            r.message
        );

        // Enabled again: the label goes, the document's other labels stay.
        lab.tanium.set_doc_health(a.id, DocHealth::default());
        let r = ok(&mut lab);
        assert!(
            r.message.contains("1 relabelled"),
            "{per_document}: {}",
            r.message
        );
        assert_eq!(names(a.id, &lab), ["ThreatConnect"]);
        assert_eq!(names(b.id, &lab), ["Noisy Intel", "ThreatConnect"]);
        assert_eq!(lab.tanium.labels().len(), 2, "no label made twice");

        // A dry run says what it would do and writes nothing.
        lab.tanium.set_doc_health(b.id, DocHealth::default());
        lab.tanium.server().reset_counters();
        let r = lab.run(&Map::new(), &["--dry-run"]).unwrap();
        assert_eq!(r.code, 0, "{}", r.message);
        assert!(
            r.stdout.contains(" remove Noisy Intel (enabled again)"),
            "{per_document}: {}",
            r.stdout
        );
        assert_eq!(label_writes(&lab) + doc_writes(&lab), 0);
    }
}
