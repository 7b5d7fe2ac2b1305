//! Round 2 replays: the real binary through the shape-enforcing proxies of `replay` (every
//! answer cut to a recorded shape, a field the recording has and the simulator left out fails
//! the run) in the situations the second batch of recordings showed the job mishandled: a
//! paged label listing with the job's label past the first page, a deploy task still running
//! across a run, documents Threat Response disabled, a checkpoint older than ThreatConnect may
//! keep deletion records, and a 4.x session that expires with a 403.

use std::collections::BTreeMap;

use serde_json::json;
use tanium_tr_indicators::sim::tanium::DocHealth;
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::tql::format_time;
use time::OffsetDateTime;

use crate::replay::{by_name, deploys, tanium_writes, Replay, CONFIGS};
use crate::support::expected;

/// Label requests of each kind, as the Tanium proxy counted them in recorded shapes.
fn hits(x: &Replay, route: &str) -> u64 {
    let h: BTreeMap<&str, u64> = x.tanium.hits();
    h.get(route).copied().unwrap_or(0)
}

/// 150 labels, the job's the last made (beyond the first page of 100 that a listing without
/// parameters answers): the job finds it whether the server honours `noLimit` or not, makes no
/// second one, labels every document with it, and a rerun writes nothing.
#[test]
fn the_jobs_label_past_the_first_page_is_found_and_none_is_made() {
    for (c, no_limit) in [(CONFIGS[0], true), (CONFIGS[1], false), (CONFIGS[2], false)] {
        let mut x = Replay::start(c);
        x.lab.tanium.set_labels_no_limit(no_limit);
        for n in 0..149 {
            x.lab
                .tanium
                .add_label(&format!("Threat Response label {n:03}"));
        }
        let ours = x.lab.tanium.add_label("ThreatConnect");
        let r = x.ok("first sync");
        assert!(
            r.message.contains(" created, 0 updated"),
            "{c:?}: {}",
            r.message
        );
        assert_eq!(x.lab.tanium.labels().len(), 150, "{c:?}: no label made");
        assert_eq!(hits(&x, "tanium label create"), 0, "{c:?}");
        for d in x.lab.source_docs() {
            assert_eq!(d.label_ids, vec![ours], "{c:?}: {}", d.name);
        }
        let r = x.ok("no-change run");
        assert!(
            r.message.contains("0 created, 0 updated, 0 removed"),
            "{c:?}: {}",
            r.message
        );
        assert_eq!(
            tanium_writes(&x.lab, c.generation),
            0,
            "{c:?}: {}",
            r.message
        );
        assert!(
            hits(&x, "tanium labels") >= 2,
            "{c:?}: the listing is read to its end"
        );
    }
}

/// A deploy task that stays STARTED across a run: no second deploy is posted, the run's
/// deploy is owed and message.tc says the last one is still running; after it completes the
/// next run says when and posts the owed deploy; then nothing more.
#[test]
fn a_deploy_task_still_started_is_waited_for_and_the_owed_deploy_follows() {
    for c in [CONFIGS[0], CONFIGS[1]] {
        let g = c.generation;
        let mut x = Replay::start(c);
        x.lab.tanium.set_deploy_duration(None);
        let r = x.ok("first sync");
        assert_eq!(deploys(&x.lab, g), 1, "{c:?}");
        assert_eq!(r.results["deploy_task"], "779");

        let first = by_name(&x.lab);
        let changed = x
            .lab
            .tc
            .snapshot()
            .into_iter()
            .find(|i| {
                i.active && crate::support::expected_name(i).is_some_and(|n| first.contains_key(&n))
            })
            .unwrap();
        x.lab.tc.update(changed.id, |i| {
            i.confidence = Some((i.confidence.unwrap_or(0) + 3) % 100)
        });
        let r = x.ok("a change while the deploy runs");
        assert!(
            r.message.contains("0 created, 1 updated, 0 removed"),
            "{c:?}: {}",
            r.message
        );
        assert_eq!(deploys(&x.lab, g), 0, "{c:?}: no second deploy");
        assert_eq!(hits(&x, "tanium task"), 1, "{c:?}");
        assert!(
            r.message
                .contains("; intel deploy owed to the next run (the last one, started "),
            "{c:?}: {}",
            r.message
        );
        assert_eq!(
            (
                r.results["deploy_pending"].as_str(),
                r.results["deploy_task"].as_str()
            ),
            ("true", "779")
        );

        x.lab.tanium.finish_deploys();
        x.lab
            .tanium
            .set_deploy_duration(Some(std::time::Duration::ZERO));
        let r = x.ok("the deploy completed");
        assert_eq!(deploys(&x.lab, g), 1, "{c:?}: the owed deploy");
        assert!(
            r.message.contains("; last intel deploy completed 20"),
            "{c:?}: {}",
            r.message
        );
        assert_eq!(r.results["deploy_pending"], "");
        let r = x.ok("nothing owed");
        assert_eq!(deploys(&x.lab, g), 0, "{c:?}: {}", r.message);
        assert_eq!(tanium_writes(&x.lab, g), 0);
    }
}

/// Two documents Threat Response disabled (one everywhere, one on some endpoints): reported
/// with their values, TC links and endpoints, not rewritten by a no-change run nor by a full
/// reconcile.
#[test]
fn two_documents_threat_response_disabled_are_reported_and_not_rewritten() {
    for c in [CONFIGS[0], CONFIGS[1]] {
        let g = c.generation;
        let mut x = Replay::start(c);
        x.ok("first sync");
        let before = by_name(&x.lab);
        let docs: Vec<_> = before.values().cloned().collect();
        let (a, b) = (&docs[5], &docs[40]);
        x.lab.tanium.set_doc_health(
            a.id,
            DocHealth {
                disabled: true,
                disabled_endpoints: 812,
                throttled_findings: 40,
            },
        );
        x.lab.tanium.set_doc_health(
            b.id,
            DocHealth {
                disabled: false,
                disabled_endpoints: 3,
                throttled_findings: 0,
            },
        );
        for step in ["no-change run", "full reconcile"] {
            if step == "full reconcile" {
                x.lab.set("reconcile_interval_hours", json!("0"));
            }
            let r = x.ok(step);
            x.lab.params.remove("reconcile_interval_hours");
            assert!(
                r.message.starts_with(&format!(
                    "Synced: Tanium source \"ThreatConnect\": 2 documents disabled by Threat Response as noisy (see app.log); now holds {}",
                    before.len()
                )),
                "{c:?} {step}: {}",
                r.message
            );
            assert_eq!(tanium_writes(&x.lab, g), 0, "{c:?} {step}: {}", r.message);
            for (d, what) in [
                (a, "turned off on 812 endpoints"),
                (b, "turned off on 3 endpoints"),
            ] {
                let line = r
                    .log
                    .lines()
                    .find(|l| l.contains("disabled by Threat Response: ") && l.contains(&d.name))
                    .unwrap_or_else(|| panic!("{c:?} {step}: {} not named:\n{}", d.name, r.log));
                assert!(line.contains(what) && line.contains("): http"), "{line}");
            }
        }
        assert_eq!(
            by_name(&x.lab).keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>()
        );
        let now = by_name(&x.lab);
        assert_eq!(now[&a.name].revision_id, a.revision_id, "not re-uploaded");
        assert_eq!(now[&b.name].revision_id, b.revision_id, "not re-uploaded");
    }
}

/// A checkpoint older than ThreatConnect may keep the records of deleted indicators (a job
/// paused for ten days, with a monthly full reconcile): the next run is a full reconcile, the
/// log says why, and an indicator deleted meanwhile (its record gone) still loses its document.
#[test]
fn a_stale_checkpoint_makes_a_full_reconcile_and_the_log_says_why() {
    for c in [CONFIGS[1], CONFIGS[2]] {
        let mut x = Replay::start(c);
        x.lab.set("reconcile_interval_hours", json!("720"));
        x.ok("first sync");
        let r = x.ok("no-change run");
        assert!(
            !r.message.contains("full reconcile"),
            "{c:?}: {}",
            r.message
        );
        // The deletion happened more than a week ago: TC no longer has its record.
        let gone = x
            .lab
            .tc
            .snapshot()
            .into_iter()
            .find(|i| i.active && crate::support::expected_name(i).is_some())
            .unwrap();
        x.lab.tc.delete(gone.id);
        x.lab.tc.forget_deletions();
        let ten_days_ago = format_time(OffsetDateTime::now_utc() - time::Duration::days(10));
        x.lab
            .persisted
            .insert("last_modified".into(), json!(ten_days_ago));
        let r = x.ok("after a pause");
        assert!(
            r.message.contains("(full reconcile)"),
            "{c:?}: {}",
            r.message
        );
        assert!(r.message.contains(", 1 removed,"), "{c:?}: {}", r.message);
        assert!(
            r.log.contains(
                "full reconcile: Last Modified is more than 7 days old (a paused job?), longer than ThreatConnect may keep the records of deleted indicators"
            ),
            "{c:?}: {}",
            r.log
        );
        assert_eq!(crate::replay::held(&x.lab), expected(&x.lab, |_| true));
    }
}

/// A 4.x server may answer 403, not 401, to an expired session (XSOAR and Splunk SOAR log in
/// again on a 403): one new login and the run goes on.
#[test]
fn a_4x_session_that_expires_with_a_403_is_renewed_once() {
    let c = CONFIGS[1];
    let mut x = Replay::start(c);
    x.lab.set("tanium_api_version", json!("4.x"));
    x.ok("first sync");
    x.lab.tanium.set_expired_session_answers_403(true);
    x.lab.tanium.expire_next_session_at_once();
    let logins = x.lab.tanium.login_count();
    let r = x.ok("a session expired at once");
    assert_eq!(
        x.lab.tanium.login_count(),
        logins + 2,
        "one login, then one more"
    );
    assert!(
        r.message.contains("0 created, 0 updated, 0 removed"),
        "{}",
        r.message
    );
    assert_eq!(ApiGeneration::V4, c.generation);
}
