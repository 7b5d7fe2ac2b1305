use super::*;
use crate::sync::{RunEnd, Tally};
use serde_json::json;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

fn config() -> (JobConfig, Checkpoint) {
    let raw: crate::params::RawParams = json!({
        "tc_api_path": "https://tc/api", "tc_token": "t:1",
        "tanium_address": "t", "tanium_username": "u", "tanium_password": "p",
        "last_modified": "2026-11-28T10:00:00Z",
    })
    .as_object()
    .unwrap()
    .clone()
    .into_iter()
    .collect();
    let c = JobConfig::from_params(&raw).unwrap();
    (c, Checkpoint::load(&raw, NOW).unwrap().0)
}

fn report(tally: Tally) -> SyncReport {
    SyncReport {
        tally,
        full_reconcile: false,
        removals_complete: true,
        pull_complete: true,
        stop: None,
        errors: Vec::new(),
        deploy: Deploy::NotNeeded,
        last_deploy: None,
        end: Some(RunEnd {
            query_started: NOW,
            oldest_undelivered: None,
            pull_complete: true,
            full_reconcile: false,
            removals_complete: true,
            deploy_owed: false,
            deploy_refusals: 0,
            deploy_task: None,
            labels: crate::sync::LabelsEnd::Kept,
            lists: crate::sync::ListsEnd::Off,
        }),
        source: ("ThreatConnect".into(), Some(7)),
        source_docs: 1159,
        grouped_indicators: None,
        replaced: 0,
        lists_unread: None,
    }
}

fn run(r: &SyncReport) -> Outcome {
    let (c, k) = config();
    outcome(&c, &k, r, false, NOW)
}

fn key<'a>(o: &'a Outcome, k: &str) -> Option<&'a Option<String>> {
    o.results.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
}

#[test]
fn a_clean_run_exits_0_with_the_counters_and_moves_the_checkpoint() {
    let r = report(Tally {
        matched: 12,
        created: 2,
        updated: 1,
        removed: 3,
        unchanged: 9,
        skipped_invalid: 1,
        dropped_other_types: 4,
        ..Tally::default()
    });
    let o = run(&r);
    assert_eq!(o.status, ExitStatus::Success);
    assert_eq!(
        o.message,
        "Synced: Tanium source \"ThreatConnect\" now holds 1159 documents; this run: 2 created, 1 updated, 3 removed, 9 unchanged, 1 skipped (invalid), 4 not sent (type not Address/File/Host)"
    );
    assert_eq!(
        key(&o, "last_modified"),
        Some(&Some("2026-11-28T11:55:00Z".into()))
    );
    assert_eq!(key(&o, "deploy_pending"), Some(&Some(String::new())));
}

#[test]
fn partial_runs_exit_3_and_say_why_first_error_stop_or_deploy() {
    let mut r = report(Tally {
        matched: 5,
        created: 3,
        failed_writes: 2,
        ..Tally::default()
    });
    r.errors = vec!["could not write X: Tanium answered 503".into()];
    let o = run(&r);
    assert_eq!(o.status, ExitStatus::Partial);
    assert!(
        o.message
            .starts_with("Partial sync to Tanium source \"ThreatConnect\": 2 failed, first error: could not write X: Tanium answered 503; now holds"),
        "{}",
        o.message
    );
    let mut stopped = report(Tally {
        matched: 5,
        unchanged: 5,
        ..Tally::default()
    });
    stopped.pull_complete = false;
    stopped.removals_complete = false;
    stopped.stop = Some(Stop::Pull("record 3 of page 2 cannot be read".into()));
    stopped.full_reconcile = true;
    let o = run(&stopped);
    assert_eq!(o.status, ExitStatus::Partial);
    assert!(
        o.message.starts_with(
            "Partial sync to Tanium source \"ThreatConnect\": ThreatConnect pull incomplete (nothing removed): record 3 of page 2 cannot be read; now holds"
        ) && o.message.ends_with(" (full reconcile)"),
        "{}",
        o.message
    );
    let mut deploy = report(Tally {
        matched: 1,
        created: 1,
        ..Tally::default()
    });
    deploy.deploy = Deploy::Failed("intel deploy failed: Tanium answered 400".into());
    if let Some(e) = deploy.end.as_mut() {
        e.deploy_owed = true;
    }
    let o = run(&deploy);
    assert_eq!(o.status, ExitStatus::Partial);
    assert!(
        o.message.starts_with(
            "Partial sync to Tanium source \"ThreatConnect\": intel deploy failed: Tanium answered 400; now holds"
        ),
        "{}",
        o.message
    );
    assert_eq!(key(&o, "deploy_pending"), Some(&Some("true".into())));
}

#[test]
fn documents_threat_response_disabled_are_a_notice_not_a_failure() {
    let mut r = report(Tally {
        unchanged: 40,
        disabled: 2,
        ..Tally::default()
    });
    let o = run(&r);
    assert_eq!(o.status, ExitStatus::Success);
    assert!(
        o.message.starts_with(
            "Synced: Tanium source \"ThreatConnect\": 2 documents disabled by Threat Response as noisy (see app.log); now holds"
        ),
        "{}",
        o.message
    );
    r.tally.disabled_grouped_indicators = 730;
    r.tally.foreign_left = 3;
    let o = run(&r);
    assert!(
        o.message.contains(
            ": 3 documents this job did not make left alone (see Take Over Source); 2 documents (730 indicators) disabled by Threat Response as noisy (see app.log); now holds"
        ),
        "{}",
        o.message
    );
}

#[test]
fn the_message_says_what_became_of_the_last_deploy_and_why_this_one_is_owed() {
    let said = |deploy: Deploy, last: Option<TaskState>| {
        let mut r = report(Tally {
            created: 1,
            ..Tally::default()
        });
        r.deploy = deploy;
        r.last_deploy = last;
        let o = run(&r);
        assert_eq!(o.status, ExitStatus::Success, "{}", o.message);
        o.message
    };
    let m = said(
        Deploy::Done { started: true },
        Some(TaskState::Completed {
            ended: Some("2026-11-28T11:04:05.906Z".into()),
        }),
    );
    assert!(
        m.ends_with("; last intel deploy completed 2026-11-28T11:04:05Z"),
        "{m}"
    );
    let m = said(
        Deploy::AlreadyRunning {
            since: Some("2026-11-28T11:58:00.000Z".into()),
        },
        Some(TaskState::Running {
            started: Some("2026-11-28T11:58:00.000Z".into()),
        }),
    );
    assert!(
        m.ends_with(
            "; intel deploy owed to the next run (the last one, started 2026-11-28T11:58:00Z, is still running)"
        ),
        "{m}"
    );
    let m = said(
        Deploy::NotNeeded,
        Some(TaskState::Running {
            started: Some("not a time\n".into()),
        }),
    );
    assert!(
        m.ends_with("; last intel deploy still running (started not a time)"),
        "{m}"
    );
    let m = said(Deploy::Refused, None);
    assert!(
        m.ends_with(
            "; intel deploy owed to the next run (a deploy is already running: Tanium answered 400)"
        ),
        "{m}"
    );
    let m = said(
        Deploy::NotNeeded,
        Some(TaskState::Ended {
            status: "FAILED".into(),
            error: Some("compile error".into()),
            ended: None,
        }),
    );
    assert!(
        m.ends_with("; last intel deploy ended FAILED: compile error"),
        "{m}"
    );
}

#[test]
fn the_longest_messages_keep_what_to_do_within_255_characters() {
    let mut r = report(Tally {
        matched: 9_999_999,
        created: 1_234_567,
        updated: 1_234_567,
        removed: 1_234_567,
        unchanged: 9_999_999,
        skipped_invalid: 99_999,
        dropped_other_types: 99_999,
        blocked: 99_999,
        over_cap: 99_999,
        adopted: 99_999,
        foreign_left: 99_999,
        held_back: 1_234_567,
        failed_writes: 99_999,
        ..Tally::default()
    });
    r.source = (
        "Threat Response intel for the EMEA production fleet, fed by ThreatConnect".repeat(3),
        Some(7),
    );
    r.errors = vec!["could not write 1.2.3.4: Tanium answered 503 Service Unavailable".into()];
    r.deploy = Deploy::Failed("intel deploy failed: Tanium answered 400".into());
    r.full_reconcile = true;
    let o = run(&r);
    assert_eq!(o.status, ExitStatus::Partial);
    let shown = crate::platform::one_line(&o.message);
    assert!(shown.chars().count() <= 255, "{shown}");
    assert!(
        shown.starts_with(
            "Partial sync to Tanium source \"Threat Response intel fo…et, fed by ThreatConnect\": held back"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "held back 1234567 removals, more than Maximum Removal Percent allows: raise it to perform them; 99999 failed, first error: could not write 1.2.3.4"
        ),
        "{shown}"
    );

    let mut clean = report(Tally {
        created: 1_234_567,
        updated: 1_234_567,
        removed: 1_234_567,
        unchanged: 9_999_999,
        skipped_invalid: 99_999,
        ..Tally::default()
    });
    clean.source = r.source.clone();
    clean.source_docs = 12_345_678;
    let shown = crate::platform::one_line(&run(&clean).message);
    assert!(shown.chars().count() <= 255, "{shown}");
    assert!(shown.ends_with("99999 skipped (invalid)"), "{shown}");
}

#[test]
fn documents_left_alone_lead_the_message_so_the_cut_keeps_them() {
    let mut r = report(Tally {
        created: 1_234_567,
        updated: 1_234_567,
        removed: 1_234_567,
        unchanged: 9_999_999,
        skipped_invalid: 99_999,
        dropped_other_types: 99_999,
        blocked: 99_999,
        over_cap: 99_999,
        relabelled: 99_999,
        foreign_left: 12,
        ..Tally::default()
    });
    r.source = ("x".repeat(80), Some(7));
    r.deploy = Deploy::Disabled;
    let o = run(&r);
    assert_eq!(o.status, ExitStatus::Success);
    let shown = crate::platform::one_line(&o.message);
    assert!(
        shown.starts_with(&format!(
            "Synced: Tanium source \"{}…{}\": 12 documents this job did not make left alone (see Take Over Source); now holds",
            "x".repeat(24),
            "x".repeat(24)
        )),
        "{shown}"
    );
}

#[test]
fn a_grouped_run_names_indicators_and_documents_apart() {
    let mut r = report(Tally {
        matched: 94,
        created: 94,
        ..Tally::default()
    });
    r.grouped_indicators = Some(94);
    r.source_docs = 8;
    r.replaced = 94;
    r.full_reconcile = true;
    assert_eq!(
        run(&r).message,
        "Synced: Tanium source \"ThreatConnect\" now holds 94 indicators in 8 documents; this run: 94 created, 0 updated, 0 removed, 0 unchanged, 0 skipped (invalid); 94 single documents replaced (full reconcile)"
    );
    r.tally.failed_writes = 2;
    r.errors = vec!["could not write group 1f/0*: Tanium answered 503".into()];
    assert!(
        run(&r).message.starts_with(
            "Partial sync to Tanium source \"ThreatConnect\": 2 document writes failed, first error: could not write group 1f/0*"
        ),
        "{}",
        run(&r).message
    );
    // Back to one document per indicator: the grouped documents are replaced, not removed.
    let mut back = report(Tally {
        created: 1,
        ..Tally::default()
    });
    back.source_docs = 1;
    back.replaced = 1;
    assert_eq!(
        run(&back).message,
        "Synced: Tanium source \"ThreatConnect\" now holds 1 document; this run: 1 created, 0 updated, 0 removed, 0 unchanged, 0 skipped (invalid); 1 grouped document replaced"
    );
    let (c, k) = config();
    back.end = None;
    assert!(outcome(&c, &k, &back, true, NOW)
        .message
        .ends_with("; would replace 1 grouped document"));
}

#[test]
fn a_million_indicator_switch_to_groups_keeps_its_counters_within_255_characters() {
    let mut r = report(Tally {
        matched: 1_234_567,
        created: 1_234_567,
        removed: 99_999,
        skipped_invalid: 99_999,
        ..Tally::default()
    });
    r.source = (
        "Threat Response intel for the EMEA production fleet, fed by ThreatConnect".repeat(3),
        Some(7),
    );
    r.grouped_indicators = Some(1_234_567);
    r.source_docs = 2_470;
    r.replaced = 1_234_567;
    r.full_reconcile = true;
    let shown = crate::platform::one_line(&run(&r).message);
    assert!(shown.chars().count() <= 255, "{shown}");
    assert!(
        shown.ends_with("; 1234567 single documents replaced (full reconcile)"),
        "{shown}"
    );
    assert!(
        shown.starts_with("Synced: Tanium source \"Threat Respo…hreatConnect\" now holds"),
        "{shown}"
    );
}

#[test]
fn nothing_delivered_exits_1_leading_with_why_and_keeps_every_key() {
    let mut r = report(Tally::default());
    r.pull_complete = false;
    r.removals_complete = false;
    r.stop = Some(Stop::Pull("record 1 of page 1 cannot be read".into()));
    let o = run(&r);
    assert_eq!(o.status, ExitStatus::Failure);
    assert_eq!(
        o.message,
        "Sync to Tanium source \"ThreatConnect\" failed: ThreatConnect pull incomplete (nothing removed): record 1 of page 1 cannot be read"
    );
    assert!(o.results.is_empty());

    // Writes that kept failing say how, not only that they did.
    let mut down = report(Tally {
        matched: 40,
        failed_writes: 40,
        ..Tally::default()
    });
    down.stop = Some(Stop::TaniumDown);
    down.errors = vec!["could not write X: Tanium at t answered 502 Bad Gateway".into()];
    assert_eq!(
        run(&down).message,
        "Sync to Tanium source \"ThreatConnect\" failed: stopped early: Tanium writes kept failing; first error: could not write X: Tanium at t answered 502 Bad Gateway"
    );
    // A missing permission is the whole story.
    down.stop = Some(Stop::Forbidden(
        "Tanium permission missing: the account or API token needs 'threat response intels write' to write intel documents".into(),
    ));
    assert_eq!(
        run(&down).message,
        "Sync to Tanium source \"ThreatConnect\" failed: Tanium permission missing: the account or API token needs 'threat response intels write' to write intel documents"
    );
}

#[test]
fn a_dry_run_says_what_it_would_do_and_writes_no_results() {
    let mut r = report(Tally {
        created: 2,
        removed: 1,
        unchanged: 4,
        ..Tally::default()
    });
    r.end = None;
    let (c, k) = config();
    let o = outcome(&c, &k, &r, true, NOW);
    assert_eq!(o.status, ExitStatus::Success);
    assert_eq!(
        o.message,
        "Dry run for Tanium source \"ThreatConnect\": would create 2, update 0, remove 1; 4 unchanged, 0 skipped (invalid)"
    );
    assert!(o.results.is_empty());
}
