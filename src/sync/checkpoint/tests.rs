use super::*;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

fn raw(pairs: &[(&str, &str)]) -> RawParams {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

/// A Last Modified the admin gave (an empty one is a note of its own).
const GIVEN: (&str, &str) = ("last_modified", "30 days ago");

fn load(pairs: &[(&str, &str)]) -> (Checkpoint, Vec<String>) {
    Checkpoint::load(&raw(pairs), NOW).unwrap()
}

fn end() -> RunEnd {
    RunEnd {
        query_started: NOW,
        oldest_undelivered: None,
        pull_complete: true,
        full_reconcile: false,
        removals_complete: true,
        deploy_owed: false,
        deploy_refusals: 0,
        deploy_task: None,
        labels: LabelsEnd::Kept,
        lists: ListsEnd::Off,
    }
}

#[test]
fn a_first_run_starts_at_last_modified_and_takes_it_as_horizon() {
    let (c, notes) = load(&[]);
    assert_eq!(
        notes,
        ["Last Modified is empty: using the default, 30 days ago (2026-10-29T12:00:00Z)"]
    );
    assert_eq!(load(&[("last_modified", " ")]).1, notes);
    assert!(load(&[("last_modified", "30 days ago")]).1.is_empty());
    assert_eq!(c.last_modified, datetime!(2026-10-29 12:00:00 UTC));
    assert_eq!(c.horizon, Some(c.last_modified));
    assert_eq!(c.last_full_reconcile, None);
    assert!(!c.deploy_owed);
    for (bad, want) in [
        ("soon", "Last Modified must be a time such as"),
        ("yesterday", "Last Modified must be a time such as"),
        ("2099-01-01", "Last Modified is in the future"),
    ] {
        let e = Checkpoint::load(&raw(&[("last_modified", bad)]), NOW).unwrap_err();
        assert!(e.to_string().starts_with(want), "{e}");
    }
}

#[test]
fn the_horizon_is_the_earliest_last_modified_ever_given() {
    let kept = [
        ("last_modified", "2026-11-20T00:00:00Z"),
        ("job_horizon", "2026-10-01T00:00:00Z"),
    ];
    assert_eq!(
        load(&kept).0.horizon,
        Some(datetime!(2026-10-01 00:00:00 UTC))
    );
    let earlier = [
        ("last_modified", "2026-09-01T00:00:00Z"),
        ("job_horizon", "2026-10-01T00:00:00Z"),
    ];
    assert_eq!(
        load(&earlier).0.horizon,
        Some(datetime!(2026-09-01 00:00:00 UTC))
    );
    // A job from before horizons: unbounded, and said so in results.tc.
    let old = [
        ("last_modified", "2026-11-20T00:00:00Z"),
        ("filter_fingerprint", "abc"),
    ];
    let (c, _) = load(&old);
    assert_eq!(c.horizon, None);
    let results = c.results(&end(), "abc", NOW);
    assert!(results.contains(&("job_horizon", Some("none".into()))));
    // A damaged horizon drops it for the run (never narrows what is sent) and says so.
    let (c, notes) = load(&[("job_horizon", "garbage"), GIVEN]);
    assert_eq!((c.horizon, notes.len()), (None, 1));
}

#[test]
fn full_reconcile_when_filters_change_or_the_interval_passes() {
    let day = Duration::from_secs(86_400);
    let (c, _) = load(&[
        ("last_modified", "2026-11-28T06:00:00Z"),
        ("last_full_reconcile", "2026-11-28T00:00:00Z"),
        ("filter_fingerprint", "f1"),
    ]);
    assert_eq!(c.due(NOW, day, "f1"), None);
    assert_eq!(c.due(NOW, day, "f2"), Some(Due::FiltersChanged));
    assert_eq!(
        c.due(NOW, Duration::from_secs(3600), "f1"),
        Some(Due::Interval)
    );
    assert_eq!(
        c.due(NOW - time::Duration::days(1), day, "f1"),
        Some(Due::Interval),
        "a clock that went backwards reconciles"
    );
    // Older than ThreatConnect may keep deletion records: full, whatever the interval.
    let month = Duration::from_secs(30 * 86_400);
    let (paused, _) = load(&[
        ("last_modified", "2026-11-20T11:00:00Z"),
        ("last_full_reconcile", "2026-11-27T00:00:00Z"),
        ("filter_fingerprint", "f1"),
    ]);
    assert_eq!(paused.due(NOW, month, "f1"), Some(Due::Stale));
    let (week, _) = load(&[
        ("last_modified", "2026-11-21T13:00:00Z"),
        ("last_full_reconcile", "2026-11-27T00:00:00Z"),
        ("filter_fingerprint", "f1"),
    ]);
    assert_eq!(week.due(NOW, month, "f1"), None);
    let (damaged, notes) = load(&[("last_full_reconcile", "garbage"), GIVEN]);
    assert_eq!(notes.len(), 1);
    assert!(damaged.due(NOW, day, "f1").is_some());
}

#[test]
fn last_modified_never_passes_what_was_not_delivered() {
    let (c, _) = load(&[("last_modified", "2026-11-28T10:00:00Z")]);
    let margin = NOW - SAFETY_MARGIN;
    assert_eq!(c.next_last_modified(&end()), margin);
    let failed = datetime!(2026-11-28 11:00:00 UTC);
    let e = RunEnd {
        oldest_undelivered: Some(failed),
        ..end()
    };
    assert_eq!(c.next_last_modified(&e), failed - Duration::from_secs(1));
    let stopped = RunEnd {
        pull_complete: false,
        ..end()
    };
    assert_eq!(c.next_last_modified(&stopped), c.last_modified);
    // A clean incremental run never moves it backwards (a clock behind TC's).
    let (ahead, _) = load(&[("last_modified", "2026-11-28T11:58:00Z")]);
    assert_eq!(ahead.next_last_modified(&end()), ahead.last_modified);
    let full = RunEnd {
        full_reconcile: true,
        ..end()
    };
    assert_eq!(ahead.next_last_modified(&full), margin);
}

#[test]
fn results_force_a_full_reconcile_after_incomplete_evidence() {
    let (c, _) = load(&[]);
    let key = |r: &[(&str, Option<String>)]| {
        r.iter()
            .find(|(k, _)| *k == "last_full_reconcile")
            .map(|(_, v)| v.clone())
    };
    let full = RunEnd {
        full_reconcile: true,
        ..end()
    };
    assert_eq!(
        key(&c.results(&full, "f", NOW)),
        Some(Some("2026-11-28T12:00:00Z".into()))
    );
    assert_eq!(
        key(&c.results(&end(), "f", NOW)),
        None,
        "incremental: unchanged"
    );
    for broken in [
        RunEnd {
            removals_complete: false,
            ..full
        },
        RunEnd {
            pull_complete: false,
            ..end()
        },
    ] {
        assert_eq!(
            key(&c.results(&broken, "f", NOW)),
            Some(Some(String::new()))
        );
    }
    let owed = RunEnd {
        deploy_owed: true,
        ..end()
    };
    assert!(c
        .results(&owed, "f", NOW)
        .contains(&("deploy_pending", Some("true".into()))));
    let (k, _) = load(&[("deploy_pending", "true")]);
    assert!(k.deploy_owed);
}

#[test]
fn deploy_refusals_and_the_deploy_task_are_carried_to_the_next_run() {
    let (c, _) = load(&[]);
    let value = |r: &[(&str, Option<String>)], k: &str| {
        r.iter().find(|(n, _)| *n == k).and_then(|(_, v)| v.clone())
    };
    let refused = RunEnd {
        deploy_owed: true,
        deploy_refusals: 2,
        deploy_task: Some(779),
        ..end()
    };
    let r = c.results(&refused, "f", NOW);
    assert_eq!(value(&r, "deploy_pending").as_deref(), Some("refused 2"));
    assert_eq!(value(&r, "deploy_task").as_deref(), Some("779"));
    let (k, notes) = load(&[
        ("deploy_pending", "refused 2"),
        ("deploy_task", "779"),
        GIVEN,
    ]);
    assert!(notes.is_empty());
    assert_eq!(
        (k.deploy_owed, k.deploy_refusals, k.deploy_task),
        (true, 2, Some(779))
    );
    let r = c.results(&end(), "f", NOW);
    assert_eq!(value(&r, "deploy_pending").as_deref(), Some(""));
    assert_eq!(value(&r, "deploy_task").as_deref(), Some(""));
    for damaged in ["refused", "refused x", "garbage"] {
        let (k, _) = load(&[("deploy_pending", damaged), ("deploy_task", "task 7")]);
        assert_eq!(
            (k.deploy_owed, k.deploy_refusals, k.deploy_task),
            (false, 0, None),
            "{damaged}"
        );
    }
}

fn rules(fixed: &[&str], tags: &[&str]) -> LabelRules {
    LabelRules {
        fixed: fixed.iter().map(|f| f.to_string()).collect(),
        tags: tags
            .iter()
            .map(|t| crate::label_rules::TagRule::parse(t).unwrap())
            .collect(),
        threatassess: false,
    }
}

fn label_keys(
    c: &Checkpoint,
    labels: LabelsEnd,
    r: &LabelRules,
) -> Vec<(&'static str, Option<String>)> {
    c.label_results(&RunEnd { labels, ..end() }, r)
}

#[test]
fn the_run_lease_key_is_set_when_deletes_fail_and_cleared_once_one_works() {
    let (fresh, _) = load(&[]);
    assert!(!fresh.lease_deletes_failed);
    assert_eq!(fresh.lease_results(Some(true)), Vec::new());
    assert_eq!(fresh.lease_results(None), Vec::new());
    let set = vec![("run_lease_unsupported", Some("true".to_string()))];
    assert_eq!(fresh.lease_results(Some(false)), set);
    let (failed, _) = load(&[("run_lease_unsupported", "true")]);
    assert!(failed.lease_deletes_failed);
    assert_eq!(failed.lease_results(None), Vec::new());
    assert_eq!(failed.lease_results(Some(false)), set);
    assert_eq!(
        failed.lease_results(Some(true)),
        vec![("run_lease_unsupported", Some(String::new()))]
    );
    let (damaged, _) = load(&[("run_lease_unsupported", "perhaps")]);
    assert!(!damaged.lease_deletes_failed);
}

#[test]
fn a_change_of_the_label_rules_asks_for_a_pass_until_one_settles_them() {
    let old = rules(&["ThreatConnect", "Old"], &["crime*"]);
    let new = rules(&["ThreatConnect"], &[]);
    // A job from before labels: its documents have none yet.
    let (first, _) = load(&[]);
    assert!(first.labels_changed(&new));
    assert!(!first.labels_changed(&LabelRules::default()));
    let settled = label_keys(&first, LabelsEnd::Settled, &old);
    let carried: Vec<(&str, &str)> = settled
        .iter()
        .map(|(k, v)| (*k, v.as_deref().unwrap()))
        .collect();
    let (after, _) = load(&carried);
    assert!(!after.labels_changed(&old));
    // The params change: a pass, and the old rules stay managed until one settles.
    assert!(after.labels_changed(&new));
    let m = after.managed(&new);
    assert!(m.manages("old") && m.manages("Crimeware") && m.manages("threatconnect"));
    assert!(!m.manages("Pilot"));
    let kept = label_keys(&after, LabelsEnd::Kept, &new);
    assert_eq!(
        kept[0].1.as_deref(),
        Some(r#"["label:old","label:threatconnect","tag:crime*"]"#)
    );
    assert_eq!(kept[1].1, Some(old.fingerprint()), "still owes the pass");
    let unsettled = label_keys(&after, LabelsEnd::Unsettled, &old);
    assert_eq!(unsettled[1].1.as_deref(), Some("unsettled"));
    let (after_unsettled, _) = load(&[("label_fingerprint", "unsettled")]);
    assert!(
        after_unsettled.labels_changed(&LabelRules::default()),
        "even a job left without label params passes over the documents"
    );
    let done = label_keys(&after, LabelsEnd::Settled, &new);
    assert_eq!(done[0].1.as_deref(), Some(r#"["label:threatconnect"]"#));
    assert_eq!(done[1].1, Some(new.fingerprint()));
    // Damaged, it is a note; the current rules still manage their own labels.
    let (damaged, notes) = load(&[("managed_labels", "{oops"), GIVEN]);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(damaged.managed(&new).manages("ThreatConnect"));
}

#[test]
fn a_change_of_what_the_lists_exclude_or_an_unread_run_makes_the_next_one_full() {
    let key = |c: &Checkpoint, lists| {
        c.results(&RunEnd { lists, ..end() }, "f", NOW)
            .into_iter()
            .find(|(k, _)| *k == "exclusion_fingerprint")
            .and_then(|(_, v)| v)
    };
    let (fresh, _) = load(&[GIVEN]);
    assert!(!fresh.exclusions_changed(Some(7)), "nothing on record");
    assert_eq!(
        key(&fresh, ListsEnd::Read(7)).as_deref(),
        Some("0000000000000007")
    );
    assert_eq!(key(&fresh, ListsEnd::Unread).as_deref(), Some("unread"));
    assert_eq!(key(&fresh, ListsEnd::Off).as_deref(), Some(""));
    let (read, _) = load(&[GIVEN, ("exclusion_fingerprint", "0000000000000007")]);
    assert!(!read.exclusions_changed(Some(7)));
    assert!(read.exclusions_changed(Some(8)));
    assert!(
        !read.exclusions_changed(None),
        "unread now: nothing to compare"
    );
    let (unread, _) = load(&[GIVEN, ("exclusion_fingerprint", "unread")]);
    assert!(unread.exclusions_changed(Some(7)));
    assert_eq!(unread.to_json()["exclusion_fingerprint"], json!("unread"));
}
