//! Two runs of one job at once, through the real binary: the run lease. Whichever run takes it
//! writes, the other stands down and says so; killed runs, dry runs, `check`, a server that lets
//! two sources share a name and a server that cannot delete sources.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tanium_tr_indicators::sim::dataset;
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::tanium::model::ApiGeneration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::support::docs::covered;
use crate::support::{
    empty_lab, expected, expire_leases, held, lab, run_leases, run_with, source_calls, LEASE_MARK,
};

const SOURCE: &str = "ThreatConnect";
const STOOD_DOWN: &str =
    "Another run of this job is writing to Tanium source \"ThreatConnect\" (since ";

/// The time after `word` in a lease name or a message.
fn time_after(text: &str, word: &str) -> OffsetDateTime {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {text}"));
    let t: String = text[at + word.len()..]
        .chars()
        .take_while(|c| !matches!(c, ' ' | ',' | ')'))
        .collect();
    OffsetDateTime::parse(&t, &Rfc3339).unwrap_or_else(|e| panic!("{t}: {e}"))
}

fn stamp(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap()
}

fn stood_down(r: &RunResult) -> bool {
    r.message.starts_with(STOOD_DOWN)
}

/// Two runs started together: one synced, the other stood down, said so, wrote no results
/// and left nothing behind; the source holds one document per indicator and is the only one
/// of its name.
fn assert_one_wrote(lab: &Lab, runs: &[RunResult]) {
    assert_eq!(lab.tanium.sources_named(SOURCE), 1);
    assert_eq!(held(lab), expected(lab, |_| true));
    assert_eq!(
        run_leases(lab),
        Vec::new(),
        "every lease is deleted at the end"
    );
    for r in runs {
        assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    }
    let (down, wrote): (Vec<&RunResult>, Vec<&RunResult>) =
        runs.iter().partition(|r| stood_down(r));
    assert_eq!(
        (down.len(), wrote.len()),
        (1, 1),
        "{:?}",
        runs.iter().map(|r| &r.message).collect::<Vec<_>>()
    );
    let down = down[0];
    assert!(
        down.message
            .ends_with("): this run stood down; nothing changed"),
        "{}",
        down.message
    );
    assert!(
        time_after(&down.message, "lease until ") > time_after(&down.message, "(since "),
        "{}",
        down.message
    );
    assert!(
        !down.results.contains_key("last_modified"),
        "{:?}",
        down.results
    );
    assert!(
        wrote[0].message.starts_with("Synced: "),
        "{}",
        wrote[0].message
    );
}

#[test]
fn two_runs_started_together_on_a_fresh_source_write_once() {
    // Whether Tanium lets two sources share a name is unconfirmed: both ways.
    for duplicates in [false, true] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 94, 20);
        lab.tanium.set_duplicate_source_names(duplicates);
        lab.tanium.server().set_latency(Duration::from_millis(10));
        let runs = lab.run_together(&[Map::new(), Map::new()]).unwrap();
        assert_one_wrote(&lab, &runs);
        assert!(expected(&lab, |_| true).len() > 80);

        lab.tanium.server().reset_counters();
        let later = run_with(&mut lab, &[]);
        assert_eq!(later.code, 0, "{}", later.message);
        assert!(
            later.message.contains(" 0 created, 0 updated, 0 removed"),
            "duplicates {duplicates}: {}",
            later.message
        );
        assert_eq!(run_leases(&lab), Vec::new());
        // The lease's cost, as the README gives it: 3 source listings, a create and a delete
        // on top of the generation probe's and the sync's listing.
        let s = lab.tanium.server();
        let sources = format!("{}/sources", ApiGeneration::V4.base_path());
        assert_eq!(
            (
                s.hits_where(|k| k == format!("GET {sources}")),
                source_calls(s, "POST"),
                source_calls(s, "DELETE")
            ),
            (5, 1, 1)
        );
    }
}

#[test]
fn two_grouped_runs_started_together_write_once() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 300, 27);
    lab.set("indicators_per_document", json!("10"));
    lab.tanium.server().set_latency(Duration::from_millis(10));
    let runs = lab.run_together(&[Map::new(), Map::new()]).unwrap();
    assert_eq!(lab.tanium.sources_named(SOURCE), 1);
    assert_eq!(
        covered(&lab),
        expected(&lab, |_| true),
        "each indicator once"
    );
    assert_eq!(run_leases(&lab), Vec::new());
    let down = runs.iter().filter(|r| stood_down(r)).count();
    assert_eq!(
        down,
        1,
        "{:?}",
        runs.iter().map(|r| &r.message).collect::<Vec<_>>()
    );
    let later = run_with(&mut lab, &[]);
    assert!(
        later.message.contains(" 0 created, 0 updated, 0 removed"),
        "{}",
        later.message
    );
}

#[test]
fn two_runs_started_together_on_a_populated_source_write_once() {
    for g in [ApiGeneration::V4, ApiGeneration::V3] {
        let (_d, mut lab) = empty_lab(g);
        lab.tc.load(dataset::generate(150, 21).take(100));
        let first = run_with(&mut lab, &[]);
        assert_eq!(first.code, 0, "{}", first.message);

        // New indicators, changed ones and one no longer active: every kind of write.
        lab.tc.load(dataset::generate(150, 21).skip(100));
        for id in 101..=150 {
            lab.tc.update(id, |_| {});
        }
        for id in [3, 7, 11] {
            lab.tc
                .update(id, |i| i.description = Some("changed".into()));
        }
        let gone = lab.tc.snapshot().into_iter().find(|i| i.active).unwrap().id;
        lab.tc.set_active(gone, false);
        lab.tanium.server().set_latency(Duration::from_millis(10));
        let runs = lab.run_together(&[Map::new(), Map::new()]).unwrap();
        assert_one_wrote(&lab, &runs);

        let later = run_with(&mut lab, &[]);
        assert_eq!(later.code, 0, "{}", later.message);
        assert!(later.message.starts_with("Synced: "), "{}", later.message);
        assert_eq!(held(&lab), expected(&lab, |_| true));
    }
}

/// Waits until `cond` holds, for at most a minute.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_killed_run_blocks_the_job_only_until_its_lease_expires() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 200, 22);
    lab.set("run_lease_secs", json!("4"));
    lab.set("tanium_workers", json!("1"));
    lab.tanium.server().set_latency(Duration::from_millis(20));
    let mut killed = lab.start_run(&Map::new(), &[]).unwrap();
    wait_for("the first run writes", || {
        !run_leases(&lab).is_empty() && !lab.source_docs().is_empty()
    });
    killed.kill().unwrap();
    let killed = lab.finish(killed).unwrap();
    assert_eq!(killed.code, -1);
    assert!(lab.quiesce(Duration::from_secs(30)));
    lab.tanium.server().set_latency(Duration::ZERO);
    let left = run_leases(&lab);
    assert!(!left.is_empty(), "a killed run cannot delete its lease");
    let until = left
        .iter()
        .map(|(_, n)| time_after(n, " until "))
        .max()
        .unwrap();

    let blocked = run_with(&mut lab, &[]);
    assert_eq!(blocked.code, 0, "{}", blocked.message);
    assert!(stood_down(&blocked), "{}", blocked.message);
    assert!(
        blocked
            .message
            .contains(&format!(", lease until {}): ", stamp(until))),
        "{}",
        blocked.message
    );

    wait_for("the lease expires", || OffsetDateTime::now_utc() > until);
    let after = run_with(&mut lab, &[]);
    assert_eq!(after.code, 0, "{}\n{}", after.message, after.log);
    assert!(after.message.starts_with("Synced: "), "{}", after.message);
    assert!(
        after.log.contains("removed the expired run lease"),
        "{}",
        after.log
    );
    assert_eq!(run_leases(&lab), Vec::new());
    assert_eq!(held(&lab), expected(&lab, |_| true));
}

#[test]
fn a_long_run_renews_its_lease_so_a_run_started_after_its_first_expiry_stands_down() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 40, 23);
    lab.set("run_lease_secs", json!("2"));
    lab.tanium.server().inject(FaultRule::new(
        Some("GET"),
        &format!("{}/intels", ApiGeneration::V4.base_path()),
        1,
        Fault::Delay(Duration::from_millis(4500)),
    ));
    let long = lab.start_run(&Map::new(), &[]).unwrap();
    wait_for("the long run takes its lease", || {
        !run_leases(&lab).is_empty()
    });
    let first = run_leases(&lab)[0].1.clone();
    let first_until = time_after(&first, " until ");
    wait_for("the first lease's expiry passes", || {
        OffsetDateTime::now_utc() > first_until + time::Duration::seconds(1)
    });
    let late = run_with(&mut lab, &[]);
    let long = lab.finish(long).unwrap();
    assert_eq!(long.code, 0, "{}\n{}", long.message, long.log);
    assert!(long.message.starts_with("Synced: "), "{}", long.message);
    assert_eq!(late.code, 0, "{}", late.message);
    assert!(stood_down(&late), "{}", late.message);
    assert_eq!(
        time_after(&late.message, "(since "),
        time_after(&first, " since "),
        "a renewed lease keeps its run's start: {}",
        late.message
    );
    assert!(
        time_after(&late.message, "lease until ") > first_until,
        "{}",
        late.message
    );
    assert_eq!(run_leases(&lab), Vec::new());
    assert_eq!(held(&lab), expected(&lab, |_| true));
}

/// A lease of another run of the job, planted as that run would have made it.
fn plant_lease(lab: &Lab, since: OffsetDateTime, until: OffsetDateTime) -> i64 {
    lab.tanium.add_source(&format!(
        "{LEASE_MARK}since {} until {} run feedbeef",
        stamp(since),
        stamp(until)
    ))
}

#[test]
fn dry_runs_and_check_take_no_lease_and_are_not_blocked() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 60, 24);
    let now = OffsetDateTime::now_utc();
    let (since, until) = (
        now - time::Duration::minutes(5),
        now + time::Duration::hours(1),
    );
    plant_lease(&lab, since, until);
    let sources = lab.tanium.sources();

    let dry = run_with(&mut lab, &[("dry_run", json!(true))]);
    assert_eq!(dry.code, 0, "{}", dry.message);
    assert!(
        dry.message.starts_with("Dry run for Tanium source"),
        "{}",
        dry.message
    );
    let check = lab.run(&Map::new(), &["check"]).unwrap();
    assert_eq!(check.code, 0, "{}", check.message);
    assert!(
        check.message.starts_with("Checks passed"),
        "{}",
        check.message
    );
    assert_eq!(lab.tanium.sources(), sources, "neither took a lease");

    let real = run_with(&mut lab, &[]);
    assert_eq!(real.code, 0, "{}", real.message);
    assert_eq!(
        real.message,
        format!(
            "{STOOD_DOWN}{}, lease until {}): this run stood down; nothing changed",
            stamp(since),
            stamp(until)
        )
    );
    assert!(real.results.is_empty(), "{:?}", real.results);
    assert!(lab.source_docs().is_empty());
    assert_eq!(lab.tanium.sources(), sources, "its own lease is gone");

    // That run ended: the next one proceeds.
    assert_eq!(expire_leases(&lab), 1);
    let next = run_with(&mut lab, &[]);
    assert!(next.message.starts_with("Synced: "), "{}", next.message);
    assert_eq!(held(&lab), expected(&lab, |_| true));
    assert_eq!(run_leases(&lab), Vec::new(), "the expired lease is removed");
}

#[test]
fn leases_of_other_sources_and_unreadable_ones_are_left_alone() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 20, 25);
    let now = OffsetDateTime::now_utc();
    let other_job = lab.tanium.add_source(&format!(
        "Other feed [tanium-tr-indicators run lease] since {} until {} run 00000001",
        stamp(now),
        stamp(now + time::Duration::hours(1))
    ));
    let unreadable = lab
        .tanium
        .add_source(&format!("{LEASE_MARK}since yesterday"));
    let r = run_with(&mut lab, &[]);
    assert!(r.message.starts_with("Synced: "), "{}", r.message);
    let ids: Vec<i64> = lab.tanium.sources().into_iter().map(|(id, _)| id).collect();
    assert!(
        ids.contains(&other_job) && ids.contains(&unreadable),
        "{ids:?}"
    );
}

#[test]
fn where_tanium_cannot_delete_sources_one_lease_stays_and_later_runs_take_none() {
    for status in [404, 405] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 30, 26);
        lab.tanium.set_source_delete_status(Some(status));
        let first = run_with(&mut lab, &[]);
        assert_eq!(first.code, 0, "{status}: {}", first.message);
        assert!(first.message.starts_with("Synced: "), "{}", first.message);
        assert_eq!(
            first
                .results
                .get("run_lease_unsupported")
                .map(String::as_str),
            Some("true"),
            "{status}: {:?}",
            first.results
        );
        assert!(
            first.log.contains("Tanium cannot delete sources"),
            "{}",
            first.log
        );
        let left = run_leases(&lab);
        assert_eq!(left.len(), 1, "{status}: {left:?}");
        let id = left[0].0;

        // Later runs add no source, whether the leftover is still live or expired.
        for _ in 0..2 {
            let r = run_with(&mut lab, &[]);
            assert!(r.message.starts_with("Synced: "), "{status}: {}", r.message);
            assert!(r.log.contains("takes no run lease"), "{}", r.log);
            let now_left: Vec<i64> = run_leases(&lab).into_iter().map(|(i, _)| i).collect();
            assert_eq!(now_left, vec![id]);
            assert_eq!(expire_leases(&lab), 1);
        }

        // Tanium learns to delete sources: the leftover goes and leases are back.
        lab.tanium.set_source_delete_status(None);
        let back = run_with(&mut lab, &[]);
        assert!(back.message.starts_with("Synced: "), "{}", back.message);
        assert_eq!(
            back.results
                .get("run_lease_unsupported")
                .map(String::as_str),
            Some(""),
            "{:?}",
            back.results
        );
        assert!(back.log.contains("run lease taken"), "{}", back.log);
        assert_eq!(run_leases(&lab), Vec::new());
        let next = run_with(&mut lab, &[]);
        assert!(next.log.contains("run lease taken"), "{}", next.log);
        assert!(!next.results.contains_key("run_lease_unsupported"));
        assert_eq!(held(&lab), expected(&lab, |_| true));
    }
}

#[test]
fn a_run_lease_outside_its_range_is_refused_by_label() {
    let (_d, mut lab) = empty_lab(ApiGeneration::V4);
    for bad in ["1", "86401", "soon"] {
        let r = run_with(&mut lab, &[("run_lease_secs", Value::from(bad))]);
        assert_eq!(r.code, 1, "{bad}");
        assert!(
            r.message
                .starts_with("Run Lease (seconds) must be a whole number from 2 to 86400"),
            "{}",
            r.message
        );
    }
}
