//! The safety rails through the real binary: unsafe and Never Send values never reach Tanium,
//! the mass-removal guard holds back a run that would empty the source, Maximum Indicators ranks
//! and caps, the age window ages documents out, and deploys are governed.

use std::collections::BTreeSet;

use serde_json::{json, Map};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::model::Indicator;
use tanium_tr_indicators::tc::tql::format_time;
use time::OffsetDateTime;

use crate::support::docs::{assert_items_match_tc, covered, is_group};
use crate::support::{empty_lab, expected, expected_name, held, lab, run_with as run};

fn ok(lab: &mut Lab) -> RunResult {
    let r = run(lab, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    r
}

fn ago(days: i64) -> String {
    format_time(OffsetDateTime::now_utc() - time::Duration::days(days))
}

fn indicator(id: i64, type_name: &str, value: &str) -> Indicator {
    let mut i = Indicator {
        id,
        owner_id: Some(1),
        owner_name: "Demo Organization".into(),
        type_name: type_name.into(),
        summary: value.into(),
        rating: Some(3.0),
        confidence: Some(60),
        threat_assess_score: Some(500),
        last_modified: ago(1),
        ..Indicator::default()
    };
    match type_name {
        "Address" => i.ip = Some(value.into()),
        "Host" => i.host_name = Some(value.into()),
        _ if value.len() == 64 => i.sha256 = Some(value.into()),
        _ => i.md5 = Some(value.into()),
    }
    i
}

/// Every class of unsafe value (written out here, not taken from the code under test).
const UNSAFE: [(&str, &str); 25] = [
    ("Address", "10.1.2.3"),
    ("Address", "172.16.5.5"),
    ("Address", "192.168.0.10"),
    ("Address", "127.0.0.1"),
    ("Address", "169.254.169.254"),
    ("Address", "100.64.1.1"),
    ("Address", "0.0.0.0"),
    ("Address", "224.0.0.251"),
    ("Address", "240.1.1.1"),
    ("Address", "255.255.255.255"),
    ("Address", "::"),
    ("Address", "::1"),
    ("Address", "fe80::1"),
    ("Address", "fd12::1"),
    ("Address", "ff02::1"),
    ("Address", "::ffff:192.168.1.1"),
    ("Address", "8.8.8.8"),
    ("Address", "1.1.1.1"),
    ("Address", "9.9.9.9"),
    ("Address", "208.67.222.222"),
    ("Host", "intranet"),
    ("Host", "localhost"),
    ("Host", "co.uk"),
    ("File", "d41d8cd98f00b204e9800998ecf8427e"),
    (
        "File",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
];

/// Safe values that look close to unsafe ones: documentation ranges and reserved names.
const SAFE: [(&str, &str); 6] = [
    ("Address", "192.0.2.10"),
    ("Address", "198.51.100.10"),
    ("Address", "203.0.113.10"),
    ("Address", "2001:db8::10"),
    ("Host", "evil.example"),
    ("Host", "bad.test"),
];

#[test]
fn unsafe_and_never_send_values_never_reach_tanium() {
    let (_d, mut lab) = empty_lab(ApiGeneration::V4);
    let mut id = 1;
    for (t, v) in UNSAFE.iter().chain(SAFE.iter()) {
        lab.tc.insert(indicator(id, t, v));
        id += 1;
    }
    let never = [
        ("Address", "203.0.113.77"),
        ("Address", "198.18.4.4"),
        ("Host", "vpn.corp.example"),
        ("File", "0123456789abcdef0123456789abcdef"),
    ];
    for (t, v) in never {
        lab.tc.insert(indicator(id, t, v));
        id += 1;
    }
    lab.set(
        "never_send",
        json!("203.0.113.77, 198.18.0.0/15|corp.example, 0123456789ABCDEF0123456789ABCDEF"),
    );
    let r = ok(&mut lab);
    let blocked = UNSAFE.len() + never.len();
    assert!(
        r.message.contains(&format!(
            "{} created, 0 updated, 0 removed, 0 unchanged, 0 skipped (invalid), {blocked} blocked (unsafe or Never Send)",
            SAFE.len()
        )),
        "{}",
        r.message
    );
    let kept = held(&lab);
    assert_eq!(kept.len(), SAFE.len(), "{kept:?}");
    for (t, v) in SAFE {
        assert!(kept.iter().any(|n| n.ends_with(&format!("{t} {v}"))), "{v}");
    }
    assert!(r.log.contains(
        "not sent: ThreatConnect Address 10.1.2.3 (Demo Organization): unsafe: private 10.0.0.0/8"
    ));
    assert!(r.log.contains(
        "not sent: ThreatConnect Host vpn.corp.example (Demo Organization): on the Never Send list (corp.example)"
    ));
    // A check lists the rails; with them off, everything is sent, and on again, the unsafe
    // documents go at the next (full: the rails changed) run.
    let off = run(
        &mut lab,
        &[("safeguards", json!(false)), ("never_send", json!(""))],
    );
    assert_eq!(off.code, 0, "{}", off.message);
    assert_eq!(held(&lab).len(), SAFE.len() + blocked);
    // (Most of this small source goes: more than the removal guard allows by default.)
    let on = run(&mut lab, &[("max_removal_percent", json!("100"))]);
    assert_eq!(on.code, 0, "{}", on.message);
    assert!(
        on.message.contains(&format!(" {blocked} removed")),
        "{}",
        on.message
    );
    assert!(on.message.contains("(full reconcile)"), "{}", on.message);
    assert_eq!(held(&lab).len(), SAFE.len());
}

#[test]
fn a_run_that_would_empty_the_source_removes_nothing_until_the_guard_is_raised() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 130, 41);
    ok(&mut lab);
    let before = held(&lab);
    assert!(before.len() >= 100, "{}", before.len());
    // A duplicate (a create whose answer was lost, retried): it goes even when the guard holds
    // the rest, since the indicator keeps its other document.
    let copy = lab.source_docs()[0].clone();
    let source = lab.tanium.source_id("ThreatConnect").unwrap();
    let duplicate = lab.tanium.add_doc(source, &copy.name, &copy.body);
    // A TQL typo that selects nothing.
    lab.set("tql", json!("summary = \"no such indicator\""));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(
        r.message.contains(&format!(
            "held back {} removals, more than Maximum Removal Percent allows",
            before.len()
        )),
        "{}",
        r.message
    );
    assert!(r.log.contains("(1 duplicates still go)"), "{}", r.log);
    assert!(lab.source_docs().iter().all(|d| d.id != duplicate));
    assert_eq!(held(&lab), before, "nothing else was removed");
    assert_eq!(
        r.results["last_full_reconcile"], "",
        "the next run looks again"
    );
    // A dry run shows what the guard would do.
    let dry = lab.run(&Map::new(), &["--dry-run"]).unwrap();
    assert_eq!(dry.code, 3, "{}", dry.message);
    assert!(
        dry.stdout.contains("guard: held back all"),
        "{}",
        dry.stdout
    );
    // Raised, the same run removes them all.
    lab.set("max_removal_percent", json!("100"));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(r.message.contains(&format!(" {} removed", before.len())));
    assert!(held(&lab).is_empty());
}

#[test]
fn maximum_indicators_keeps_the_best_ranked_and_never_evicts_between_reconciles() {
    let (_d, mut lab) = empty_lab(ApiGeneration::V4);
    let scores = [900, 100, 500, 500, 700, 300, 800, 500];
    for (n, s) in scores.iter().enumerate() {
        let mut i = indicator(n as i64 + 1, "Host", &format!("h{n}.example"));
        i.threat_assess_score = Some(*s);
        // Among the three 500s: rating decides, then confidence, then the lower id.
        i.rating = Some(if n == 2 { 2.0 } else { 4.0 });
        i.confidence = Some(if n == 7 { 90 } else { 60 });
        lab.tc.insert(i);
    }
    lab.set("max_indicators", json!("5"));
    let r = ok(&mut lab);
    assert!(
        r.message.contains("3 over Maximum Indicators"),
        "{}",
        r.message
    );
    let names = |ns: &[usize]| {
        let mut v: Vec<String> = ns
            .iter()
            .map(|n| format!("ThreatConnect Host h{n}.example"))
            .collect();
        v.sort();
        v
    };
    // 900 (h0), 800 (h6), 700 (h4), then the 500s: h7 (confidence 90), h3 (rating 4).
    assert_eq!(held(&lab), names(&[0, 6, 4, 7, 3]));
    // Incremental: a better new indicator is not added while the source is full, nothing goes.
    let mut better = indicator(100, "Host", "h100.example");
    better.threat_assess_score = Some(1000);
    better.last_modified = format_time(OffsetDateTime::now_utc());
    lab.tc.insert(better);
    let r = ok(&mut lab);
    assert!(!r.message.contains("full reconcile"), "{}", r.message);
    assert!(
        r.message.contains("1 over Maximum Indicators"),
        "{}",
        r.message
    );
    assert_eq!(held(&lab), names(&[0, 6, 4, 7, 3]));
    // The next full reconcile is exact again: it takes the new one and drops the last.
    lab.set("reconcile_interval_hours", json!("0"));
    let r = ok(&mut lab);
    assert!(
        r.message.contains("1 created") && r.message.contains("1 removed"),
        "{}",
        r.message
    );
    assert_eq!(held(&lab), names(&[100, 0, 6, 4, 7]));
}

#[test]
fn the_age_window_ages_documents_out_at_the_next_full_reconcile() {
    let (_d, mut lab) = empty_lab(ApiGeneration::V4);
    let mut old = indicator(1, "Host", "old.example");
    old.last_modified = ago(20);
    lab.tc.insert(old);
    lab.tc.insert(indicator(2, "Host", "fresh.example"));
    ok(&mut lab);
    assert_eq!(held(&lab).len(), 2);
    lab.set("max_indicator_age_days", json!("10"));
    let r = ok(&mut lab);
    assert!(
        r.message.contains("(full reconcile)"),
        "the window selects: {}",
        r.message
    );
    assert_eq!(
        held(&lab),
        vec!["ThreatConnect Host fresh.example".to_string()]
    );
    assert!(r.log.contains("lastModified >= "), "{}", r.log);
}

/// A deploy someone else started (an admin in the console) is running: where the intel status
/// says so (a field no recorded status has) the job posts none; where it does not (the recorded
/// shape), Tanium refuses the job's deploy with 400, and that is "a deploy is already running",
/// owed, not a failure. Once it is done the next run deploys what it owes.
#[test]
fn a_running_deploy_is_not_doubled_and_deploys_can_be_left_to_the_admin() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 40, 42);
    let post = "POST /plugin/products/threat-response/api/v1/intel/deploy";
    lab.tanium.set_deploy_running(true);
    lab.tanium.set_status_reports_deploy(true);
    let r = ok(&mut lab);
    assert_eq!(lab.tanium.deploy_count(), 0);
    assert_eq!(lab.tanium.server().hits(post), 0);
    assert!(
        r.message
            .contains("intel deploy owed to the next run (one was already running)"),
        "{}",
        r.message
    );
    assert_eq!(r.results["deploy_pending"], "true");
    lab.tanium.set_status_reports_deploy(false);
    let r = ok(&mut lab);
    assert_eq!(lab.tanium.server().hits(post), 1);
    assert_eq!(lab.tanium.deploy_count(), 0);
    assert!(
        r.message.contains(
            "intel deploy owed to the next run (a deploy is already running: Tanium answered 400)"
        ),
        "{}",
        r.message
    );
    assert_eq!(r.results["deploy_pending"], "refused 1");
    // Done running: the next run deploys what it owes, though nothing changed.
    lab.tanium.set_deploy_running(false);
    let r = ok(&mut lab);
    assert!(r.message.contains("0 created, 0 updated"), "{}", r.message);
    assert_eq!(lab.tanium.deploy_count(), 1);
    assert_eq!(r.results["deploy_pending"], "");
    assert_eq!(r.results["deploy_task"], "780", "the console's was 779");
    // Deploy Intel off: never deployed, and the summary says the intel waits.
    lab.set("deploy_intel", json!(false));
    let id = lab.tc.snapshot().into_iter().find(|i| i.active).unwrap().id;
    lab.tc.update(id, |i| i.confidence = Some(77));
    let r = ok(&mut lab);
    assert_eq!(lab.tanium.deploy_count(), 1);
    assert!(
        r.message
            .contains("intel awaits a deploy (Deploy Intel is off)"),
        "{}",
        r.message
    );
    let want = expected(&lab, |_| true);
    assert_eq!(held(&lab), want);
}

fn task_reads(lab: &Lab) -> u64 {
    lab.tanium
        .server()
        .hits("GET /plugin/products/threat-response/api/v1/tasks/")
}

/// Deploys are tasks: the job keeps the task id of the deploy it started and asks about it on
/// the next run. While it is STARTED no second deploy is posted, the run's deploy is owed and
/// message.tc says the last one is still running; once it is COMPLETED the next run says when
/// it completed and deploys what it owes; a task seen completed is not asked about again.
#[test]
fn a_deploy_still_running_is_waited_for_and_the_owed_deploy_follows_it() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 30, 43);
    let post = "POST /plugin/products/threat-response/api/v1/intel/deploy";
    lab.tanium.set_deploy_duration(None);
    let r = ok(&mut lab);
    assert_eq!(lab.tanium.deploy_count(), 1);
    assert_eq!(r.results["deploy_task"], "779");
    assert_eq!(
        (r.results["deploy_pending"].as_str(), task_reads(&lab)),
        ("", 0)
    );

    let id = lab.tc.snapshot().into_iter().find(|i| i.active).unwrap().id;
    lab.tc.update(id, |i| i.confidence = Some(71));
    for step in ["a change", "nothing to do"] {
        lab.tanium.server().reset_counters();
        let r = ok(&mut lab);
        assert_eq!(
            lab.tanium.server().hits(post),
            0,
            "{step}: no second deploy"
        );
        assert_eq!(task_reads(&lab), 1, "{step}");
        assert!(
            r.message
                .contains("; intel deploy owed to the next run (the last one, started ")
                && r.message.contains(", is still running)"),
            "{step}: {}",
            r.message
        );
        assert_eq!(r.results["deploy_pending"], "true", "{step}");
        assert_eq!(r.results["deploy_task"], "779", "{step}");
    }

    lab.tanium
        .set_deploy_duration(Some(std::time::Duration::ZERO));
    lab.tanium.finish_deploys();
    lab.tanium.server().reset_counters();
    let r = ok(&mut lab);
    assert_eq!(lab.tanium.server().hits(post), 1, "the owed deploy");
    assert!(
        r.message.contains("0 created, 0 updated, 0 removed")
            && r.message.contains("; last intel deploy completed 20"),
        "{}",
        r.message
    );
    assert!(
        r.log.contains("the last intel deploy (task 779) completed"),
        "{}",
        r.log
    );
    assert_eq!(r.results["deploy_pending"], "");
    assert_eq!(r.results["deploy_task"], "780");

    lab.tanium.server().reset_counters();
    let r = ok(&mut lab);
    assert_eq!((lab.tanium.server().hits(post), task_reads(&lab)), (0, 1));
    assert!(
        r.message.contains("; last intel deploy completed"),
        "{}",
        r.message
    );
    assert_eq!(r.results["deploy_task"], "");
    lab.tanium.server().reset_counters();
    let r = ok(&mut lab);
    assert_eq!((lab.tanium.server().hits(post), task_reads(&lab)), (0, 0));
    assert!(!r.message.contains("deploy"), "{}", r.message);
}

/// A 400 to the deploy is what Threat Response answers while another deploy runs, so it is
/// owed, not failed; three runs in a row refused mean something else is wrong: the third exits
/// 3 and says so. The next deploy that goes through clears the count.
#[test]
fn a_deploy_refused_three_runs_in_a_row_is_a_failure() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 20, 44);
    lab.tanium.start_console_deploy();
    for n in 1..=2 {
        let r = ok(&mut lab);
        assert!(
            r.message
                .contains("a deploy is already running: Tanium answered 400"),
            "{}",
            r.message
        );
        assert_eq!(r.results["deploy_pending"], format!("refused {n}"));
    }
    // With nothing else to do the run fails outright (exit 1, the count stays); with a change
    // it is partial (exit 3).
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(r.results.is_empty());
    lab.tc.insert(Indicator {
        last_modified: format_time(OffsetDateTime::now_utc()),
        ..indicator(900_001, "Host", "refused.example")
    });
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(
        r.message.starts_with(
            "Partial sync to Tanium source \"ThreatConnect\": intel deploy failed: refused with 400 3 runs in a row, as Tanium does while a deploy runs; check the deploys in Threat Response"
        ),
        "{}",
        r.message
    );
    assert_eq!(r.results["deploy_pending"], "refused 3");
    assert_eq!(lab.tanium.deploy_count(), 0);
    lab.tanium.finish_deploys();
    let r = ok(&mut lab);
    assert_eq!(lab.tanium.deploy_count(), 1);
    assert_eq!(r.results["deploy_pending"], "");
}

/// TC deactivates 60% of what the job sends between two runs, nothing else changed: the
/// incremental run that would remove them removes none (in either layout, the guard counting
/// indicators), still delivers a new indicator and an update, exits 3 saying how many it held
/// back, and leaves the next run a full reconcile, which holds them back again until the guard
/// is raised.
#[test]
fn an_incremental_run_that_would_remove_most_of_the_source_is_held_back() {
    for per_document in ["1", "20"] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 200, 44);
        lab.set("indicators_per_document", json!(per_document));
        let first = ok(&mut lab);
        let before = covered(&lab);
        assert_eq!(before, expected(&lab, |_| true), "{per_document}");
        let live: Vec<Indicator> = lab
            .tc
            .snapshot()
            .into_iter()
            .filter(|i| i.active && expected_name(i).is_some())
            .collect();
        let gone: BTreeSet<String> = live[..live.len() * 6 / 10]
            .iter()
            .filter_map(expected_name)
            .collect();
        for i in &live[..live.len() * 6 / 10] {
            lab.tc.set_active(i.id, false);
        }
        let kept = &live[live.len() * 6 / 10];
        lab.tc.update(kept.id, |i| {
            i.confidence = Some((i.confidence.unwrap_or(0) + 1) % 101)
        });
        let new = indicator(10_000, "Host", "new-during-the-hold.example");
        lab.tc.insert(new.clone());
        lab.tc.update(new.id, |_| {});

        let r = run(&mut lab, &[]);
        let case = format!("{per_document} per document: {}", r.message);
        assert_eq!(r.code, 3, "{case}");
        assert!(r.log.contains("incremental run: "), "{case}");
        assert!(
            r.message.contains(&format!(
                "held back {} removals, more than Maximum Removal Percent allows",
                gone.len()
            )),
            "{case}"
        );
        let mut want = before.clone();
        want.push(expected_name(&new).unwrap());
        want.sort();
        assert_eq!(
            covered(&lab),
            want,
            "{case}: nothing removed, the new one sent"
        );
        assert_items_match_tc(&lab);
        assert_eq!(r.results["last_full_reconcile"], "", "{case}");
        assert!(
            r.results["last_modified"] >= first.results["last_modified"],
            "{case}"
        );

        let again = run(&mut lab, &[]);
        assert_eq!(again.code, 3, "{per_document}: {}", again.message);
        assert!(
            again
                .message
                .contains(&format!("held back {} removals", gone.len()))
                && again.log.contains("full reconcile: "),
            "{per_document}: {}",
            again.message
        );
        assert_eq!(covered(&lab), want, "{per_document}");

        let raised = run(&mut lab, &[("max_removal_percent", json!("100"))]);
        assert_eq!(raised.code, 0, "{per_document}: {}", raised.message);
        assert!(
            raised.message.contains(&format!(" {} removed", gone.len())),
            "{per_document}: {}",
            raised.message
        );
        assert_eq!(covered(&lab), expected(&lab, |_| true), "{per_document}");
        assert!(covered(&lab).iter().all(|n| !gone.contains(n)));
    }
}

/// Maximum Removal Percent measures a run's removals against the source with the documents
/// the same run creates (a held-back run still creates). TC replaces 55% of what the job sends
/// with new indicators worth 30% more: that is 42% of the source the run ends up having held, so
/// it goes through at once (measured against the old source alone it was held back, and the next
/// run, finding the same removals a smaller share of a source grown by the held run's creates,
/// made them with nobody raising the guard). A deactivation of 80% with the same newcomers is
/// held back, and the next run, nothing changed, holds it back again: the documents stay until
/// the guard is raised.
#[test]
fn the_removal_guard_judges_the_same_removals_the_same_on_the_next_run() {
    for per_document in ["1", "20"] {
        for (share, held) in [(55, false), (80, true)] {
            let case = format!("{per_document} per document, {share}% deactivated");
            let (_d, mut lab) = lab(ApiGeneration::V4, 200, 45);
            lab.set("indicators_per_document", json!(per_document));
            ok(&mut lab);
            let before = covered(&lab);
            let live: Vec<Indicator> = lab
                .tc
                .snapshot()
                .into_iter()
                .filter(|i| i.active && expected_name(i).is_some())
                .collect();
            let n_gone = live.len() * share / 100;
            let gone: BTreeSet<String> = live[..n_gone].iter().filter_map(expected_name).collect();
            for i in &live[..n_gone] {
                lab.tc.set_active(i.id, false);
            }
            let newcomers = live.len() * 30 / 100;
            for k in 0..newcomers {
                let new = indicator(20_000 + k as i64, "Host", &format!("newcomer-{k}.example"));
                lab.tc.insert(new.clone());
                lab.tc.update(new.id, |_| {});
            }

            let r = run(&mut lab, &[]);
            let remaining = covered(&lab).iter().filter(|n| gone.contains(*n)).count();
            if !held {
                assert_eq!(r.code, 0, "{case}: {}", r.message);
                assert_eq!(remaining, 0, "{case}: {}", r.message);
                assert_eq!(covered(&lab), expected(&lab, |_| true), "{case}");
                continue;
            }
            assert_eq!(r.code, 3, "{case}: {}", r.message);
            assert!(
                r.message.contains(&format!(
                    "held back {} removals, more than Maximum Removal Percent allows",
                    gone.len()
                )),
                "{case}: {}",
                r.message
            );
            assert_eq!(remaining, gone.len(), "{case}: nothing removed");
            let with_new = covered(&lab);
            assert_eq!(
                with_new.len(),
                before.len() + newcomers,
                "{case}: newcomers sent"
            );

            let again = run(&mut lab, &[]);
            assert_eq!(again.code, 3, "{case}, next run: {}", again.message);
            assert!(
                again
                    .message
                    .contains(&format!("held back {} removals", gone.len())),
                "{case}, next run: {}",
                again.message
            );
            assert_eq!(covered(&lab), with_new, "{case}: the documents stay");

            let raised = run(&mut lab, &[("max_removal_percent", json!("100"))]);
            assert_eq!(raised.code, 0, "{case}: {}", raised.message);
            assert_eq!(covered(&lab), expected(&lab, |_| true), "{case}");
        }
    }
}

/// Maximum Indicators with grouped documents: a full reconcile keeps exactly the best ranked
/// indicators, whatever documents they share; between full reconciles nothing is added to a full
/// source and nothing evicted; the next full reconcile takes the better newcomer and drops the
/// last.
#[test]
fn maximum_indicators_caps_indicators_in_grouped_documents() {
    let (_d, mut lab) = empty_lab(ApiGeneration::V4);
    let scores = [900, 100, 500, 500, 700, 300, 800, 500, 50, 650, 20, 400];
    for (n, s) in scores.iter().enumerate() {
        let mut i = indicator(n as i64 + 1, "Host", &format!("h{n}.example"));
        i.threat_assess_score = Some(*s);
        // Among the three 500s: rating decides, then confidence.
        i.rating = Some(if n == 2 { 2.0 } else { 4.0 });
        i.confidence = Some(if n == 7 { 90 } else { 60 });
        lab.tc.insert(i);
    }
    lab.set("indicators_per_document", json!("3"));
    lab.set("max_indicators", json!("7"));
    let names = |ns: &[usize]| {
        let mut v: Vec<String> = ns
            .iter()
            .map(|n| format!("ThreatConnect Host h{n}.example"))
            .collect();
        v.sort();
        v
    };
    let r = ok(&mut lab);
    assert!(
        r.message.contains("5 over Maximum Indicators"),
        "{}",
        r.message
    );
    // 900 (h0), 800 (h6), 700 (h4), 650 (h9), then the 500s: h7 (confidence 90), h3 (rating
    // 4), h2.
    let best = names(&[0, 6, 4, 9, 7, 3, 2]);
    assert_eq!(covered(&lab), best);
    assert!(
        lab.source_docs().iter().all(|d| is_group(&d.body)),
        "grouped documents only"
    );
    assert!(lab.source_docs().len() >= 3, "several documents");
    assert_items_match_tc(&lab);
    // Incremental: a better new indicator is not added while the source is full, nothing goes.
    let mut better = indicator(100, "Host", "h100.example");
    better.threat_assess_score = Some(1000);
    better.last_modified = format_time(OffsetDateTime::now_utc());
    lab.tc.insert(better);
    let r = ok(&mut lab);
    assert!(!r.message.contains("full reconcile"), "{}", r.message);
    assert!(
        r.message.contains("1 over Maximum Indicators"),
        "{}",
        r.message
    );
    assert_eq!(covered(&lab), best);
    // The next full reconcile is exact again: it takes the new one and drops the last (h2).
    lab.set("reconcile_interval_hours", json!("0"));
    let r = ok(&mut lab);
    assert!(
        r.message.contains("1 created") && r.message.contains("1 removed"),
        "{}",
        r.message
    );
    assert_eq!(covered(&lab), names(&[100, 0, 6, 4, 9, 7, 3]));
    assert_items_match_tc(&lab);
}
