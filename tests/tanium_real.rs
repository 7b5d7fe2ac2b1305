//! The Tanium side against what real servers do (reference/recorded-responses.md), end to end
//! through the real binary: which API generation a run uses and why, the messages an admin acts
//! on (Cloud login, refused token, missing permission, `check`), deletes answered without JSON,
//! identities under either intrinsicId source, other sources' documents in the listing.

use crate::support::{lab, run_with as run, ConnectProxy};
use serde_json::{json, Map};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::sim::tanium::IntrinsicFrom;
use tanium_tr_indicators::tanium::model::ApiGeneration;

/// What the platform shows of message.tc.
const MESSAGE_LIMIT: usize = 255;

fn check(lab: &mut Lab) -> RunResult {
    lab.run(&Map::new(), &["check"]).unwrap()
}

/// The part of message.tc the platform keeps.
fn shown(r: &RunResult) -> String {
    r.message.chars().take(MESSAGE_LIMIT).collect()
}

fn use_token(lab: &mut Lab, token: &str) {
    lab.set("tanium_username", json!("_token"));
    lab.set("tanium_password", json!(token));
}

fn sources_hits(lab: &Lab, g: ApiGeneration) -> u64 {
    lab.tanium
        .server()
        .hits(&format!("GET {}/sources", g.base_path()))
}

#[test]
fn auto_detects_4x_and_logs_why() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 20, 1);
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(
        r.log.contains(
            "Threat Response 4.x (threat-response API) (detected: GET \
             /plugin/products/threat-response/api/v1/sources answered 200)"
        ),
        "{}",
        r.log
    );
    assert_eq!(sources_hits(&lab, ApiGeneration::V3), 0);
}

/// What a 3.x server answers on the 4.x path is unknown; 403 and 500 must not end the run
/// (nor be taken for bad credentials), whichever credential kind the job uses.
#[test]
fn auto_finds_3x_behind_a_403_or_500_on_the_4x_path() {
    for status in [403, 500] {
        for token in [false, true] {
            let (_d, mut lab) = lab(ApiGeneration::V3, 20, 2);
            lab.tanium.set_other_generation_status(status);
            if token {
                use_token(&mut lab, "token-simulated");
            }
            let r = run(&mut lab, &[]);
            assert_eq!(r.code, 0, "{status} token={token}: {}", r.message);
            assert!(r.message.starts_with("Synced: "), "{}", r.message);
            assert!(!lab.source_docs().is_empty());
            assert!(
                r.log.contains(&format!(
                    "(detected: the 4.x route answered {status}, GET \
                     /plugin/products/detect3/api/v1/sources answered 200)"
                )),
                "{}",
                r.log
            );
            assert_eq!(
                sources_hits(&lab, ApiGeneration::V4),
                1,
                "one probe, no retry"
            );
            let logins = lab.tanium.server().hits("POST /api/v2/session/login");
            assert_eq!(
                logins,
                u64::from(!token),
                "no re-login for the probe's {status}"
            );
        }
    }
}

#[test]
fn a_fixed_api_version_skips_detection() {
    for (g, version) in [(ApiGeneration::V3, "3.x"), (ApiGeneration::V4, "4.x")] {
        let (_d, mut lab) = lab(g, 20, 3);
        lab.tanium.set_other_generation_status(500);
        lab.set("tanium_api_version", json!(version));
        let r = run(&mut lab, &[]);
        assert_eq!(r.code, 0, "{version}: {}", r.message);
        assert!(r.log.contains("(set by Tanium API Version)"), "{}", r.log);
        let other = match g {
            ApiGeneration::V3 => ApiGeneration::V4,
            ApiGeneration::V4 => ApiGeneration::V3,
        };
        let other_hits = lab
            .tanium
            .server()
            .hits(&format!("GET {}", other.base_path()));
        assert_eq!(other_hits, 0, "{version}: no probe");
        assert!(!lab.source_docs().is_empty());
    }
}

#[test]
fn a_wrong_fixed_api_version_stops_the_run_suggesting_auto() {
    for (server, version) in [(ApiGeneration::V3, "4.x"), (ApiGeneration::V4, "3.x")] {
        let (_d, mut lab) = lab(server, 20, 4);
        lab.set("tanium_api_version", json!(version));
        let r = run(&mut lab, &[]);
        assert_eq!(r.code, 1, "{}", r.message);
        assert!(
            shown(&r).contains(&format!("Tanium API Version is {version}: set it to auto")),
            "{}",
            r.message
        );
        assert!(lab.tanium.docs().is_empty());
        assert_eq!(lab.tanium.source_id("ThreatConnect"), None);
    }
}

#[test]
fn a_refused_login_on_tanium_cloud_says_it_takes_api_tokens_only() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 20, 5);
    lab.tanium.set_password_login(false);
    // On premises: the usual advice, nothing about Cloud.
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(shown(&r).contains("login refused (401)"), "{}", r.message);
    assert!(!r.message.contains("Cloud"), "{}", r.message);

    let proxy = ConnectProxy::to_loopback();
    let port = lab.tanium.server().addr().port();
    lab.set(
        "tanium_address",
        json!(format!("http://acme-api.cloud.tanium.com:{port}")),
    );
    lab.set("tc_proxy_host", json!("127.0.0.1"));
    lab.set("tc_proxy_port", json!(proxy.addr.port().to_string()));
    lab.set("tc_proxy_external", json!(true));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 1, "{}", r.message);
    let shown = shown(&r);
    assert!(
        shown.contains("Tanium Cloud accepts only API tokens for the REST API")
            && shown.contains("token in Tanium Password and _token in Tanium Username"),
        "{}",
        r.message
    );
    assert!(!r.message.contains("s3cret!"));
    // the same host with a token works: the message came from the Cloud host, not the proxy
    use_token(&mut lab, "token-simulated");
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 0, "{}", r.message);
}

#[test]
fn a_refused_api_token_is_reported_as_expired_revoked_or_untrusted_ip() {
    for g in [ApiGeneration::V4, ApiGeneration::V3] {
        let (_d, mut lab) = lab(g, 20, 6);
        use_token(&mut lab, "token-0badc0ffee");
        let r = run(&mut lab, &[]);
        assert_eq!(r.code, 1, "{}", r.message);
        let shown = shown(&r);
        assert!(
            shown.contains("Tanium rejected the credentials: the API token is expired or revoked")
                && shown.contains("trusted IP list"),
            "{g:?}: {}",
            r.message
        );
        assert!(!r.message.contains("0badc0ffee") && !r.log.contains("0badc0ffee"));
    }
}

#[test]
fn a_missing_permission_is_named_not_taken_for_bad_credentials() {
    // Writes refused to an API token the server accepts.
    let (_d, mut lab) = lab(ApiGeneration::V4, 20, 7);
    use_token(&mut lab, "token-simulated");
    let base = ApiGeneration::V4.base_path();
    lab.tanium.deny(Some("POST"), &format!("{base}/sources/"));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(
        shown(&r).contains("Tanium permission missing: the account or API token needs 'threat response intels write'"),
        "{}",
        r.message
    );
    assert!(
        !r.message.contains("rejected the credentials"),
        "{}",
        r.message
    );
    assert!(lab.source_docs().is_empty());

    // Sources unreadable on 3.x after a login (3.x answers 403 to expired sessions too).
    let (_d, mut lab) = self::lab(ApiGeneration::V3, 20, 7);
    let base = ApiGeneration::V3.base_path();
    lab.tanium.deny(Some("GET"), &format!("{base}/sources"));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 1, "{}", r.message);
    let shown = shown(&r);
    assert!(
        shown.contains("4.x answered 404, 3.x answered 403")
            && shown.contains("needs 'threat response sources read' to read intel sources"),
        "{}",
        r.message
    );
}

#[test]
fn check_names_a_missing_permission() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 10, 8);
    lab.tanium.add_label("Alpha");
    let r = check(&mut lab);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.message);
    let ok = r.stdout.lines().filter(|l| l.starts_with("ok ")).count();
    // (ThreatConnect, the matching query, its exclusion lists, the rails, Tanium, the source,
    // the labels)
    assert_eq!(ok, 8, "{}", r.stdout);
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    assert!(
        r.stdout.contains("intel status readable")
            && r.stdout.contains("labels: readable (1 listed)"),
        "{}",
        r.stdout
    );

    let base = ApiGeneration::V4.base_path();
    for (path, what, permission) in [
        (
            "labels",
            "labels",
            "'threat response labels read' to read labels",
        ),
        ("intel/status", "intel status", "to read intel status"),
    ] {
        lab.tanium.clear_denials();
        lab.tanium.deny(Some("GET"), &format!("{base}/{path}"));
        let r = check(&mut lab);
        assert_eq!(r.code, 1, "{}", r.stdout);
        let fail: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
        assert_eq!(fail.len(), 1, "{}", r.stdout);
        assert!(
            fail[0].starts_with(&format!("FAIL Tanium {what}: ")) && fail[0].contains(permission),
            "{}",
            r.stdout
        );
        assert!(
            shown(&r).starts_with(&format!("Check failed: Tanium {what}: ")),
            "{}",
            r.message
        );
    }
}

fn held(lab: &Lab, summary: &str) -> bool {
    lab.source_docs()
        .iter()
        .any(|d| d.name.ends_with(&summary.to_lowercase()))
}

/// An indicator the first run delivered (so a TC deletion makes the next run remove it).
fn delivered(lab: &Lab, skip: usize) -> tanium_tr_indicators::tc::model::Indicator {
    lab.tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active && held(lab, &i.summary))
        .nth(skip)
        .unwrap()
}

/// Only `{}` answers to DELETE are on record: a 2xx that is not JSON is checked by reading
/// the document back. Gone: removed. Still there: a failure (exit 3 when the run delivered
/// something else), and the next run tries again.
#[test]
fn a_delete_answered_without_json_is_verified() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 30, 9);
    assert_eq!(run(&mut lab, &[]).code, 0);
    let base = ApiGeneration::V4.base_path();

    lab.tanium.set_delete_reply_text(true);
    let gone = delivered(&lab, 0);
    lab.tc.delete(gone.id);
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(r.message.contains("1 removed"), "{}", r.message);
    assert!(!held(&lab, &gone.summary));
    lab.tanium.set_delete_reply_text(false);

    let stays = delivered(&lab, 0);
    let changed = delivered(&lab, 1);
    lab.tc.delete(stays.id);
    lab.tc.update(changed.id, |x| {
        x.confidence = Some((x.confidence.unwrap_or(0) + 1) % 100)
    });
    lab.tanium.server().inject(FaultRule::new(
        Some("DELETE"),
        &format!("{base}/intels"),
        1,
        Fault::Garbage,
    ));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(r.message.contains("could not remove"), "{}", r.message);
    assert!(
        r.log.contains("finished with failures: ") && r.log.contains("1 updated"),
        "the whole summary is in app.log: {}",
        r.log
    );
    assert!(r.log.contains("Tanium delete did not take"), "{}", r.log);
    assert!(held(&lab, &stays.summary));
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(!held(&lab, &stays.summary));
}

/// The reference has only indirect evidence that a STIX document's intrinsicId is the package
/// id: with either source, reruns write nothing and changes update the same documents.
#[test]
fn identities_survive_either_intrinsic_id_source() {
    for from in [IntrinsicFrom::PackageRoot, IntrinsicFrom::FirstIndicator] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 40, 10);
        lab.tanium.set_intrinsic_from(from);
        assert_eq!(run(&mut lab, &[]).code, 0);
        let prefix = match from {
            IntrinsicFrom::PackageRoot => "tctr:Package-",
            IntrinsicFrom::FirstIndicator => "tctr:indicator-",
        };
        let before = lab.source_docs();
        assert!(
            before.iter().all(|d| d.intrinsic_id.starts_with(prefix)),
            "{from:?}"
        );
        let r = run(&mut lab, &[]);
        assert!(
            r.message.contains("0 created, 0 updated, 0 removed"),
            "{from:?}: {}",
            r.message
        );
        let changed = delivered(&lab, 2);
        lab.tc.update(changed.id, |x| {
            x.confidence = Some((x.confidence.unwrap_or(0) + 1) % 100)
        });
        let r = run(&mut lab, &[]);
        assert!(
            r.message.contains("0 created, 1 updated"),
            "{from:?}: {}",
            r.message
        );
        let after = lab.source_docs();
        let ids = |docs: &[tanium_tr_indicators::sim::tanium::SimDoc]| {
            docs.iter().map(|d| d.id).collect::<Vec<_>>()
        };
        assert_eq!(ids(&after), ids(&before), "{from:?}: same documents");
    }
}

/// No public client sends `sourceId`, so a server that ignores it is normal: other sources'
/// documents are skipped with one debug line per listing, not a warning every run.
#[test]
fn other_sources_in_the_listing_are_one_debug_line() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 20, 11);
    let other = lab.tanium.add_source("Someone else");
    for n in 0..3 {
        lab.tanium
            .add_doc(other, &format!("r{n}"), &format!("rule r{n} {{}}"));
    }
    let r = run(&mut lab, &[("tc_log_level", json!("debug"))]);
    assert_eq!(r.code, 0, "{}", r.message);
    let lines: Vec<&str> = r
        .log
        .lines()
        .filter(|l| l.contains("documents of other sources"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", r.log);
    assert!(
        lines[0].contains("DEBUG") && lines[0].contains("held 3 documents"),
        "{}",
        lines[0]
    );
    let r = run(&mut lab, &[]);
    assert!(!r.log.contains("other sources"), "{}", r.log);
}

/// 4.x list answers may carry `meta.totalCount`: a listing of the source that ends short of it
/// is incomplete, and the run acts on none of it (nothing created, nothing removed, the
/// checkpoint kept); with the listing whole again the next run syncs.
#[test]
fn a_listing_short_of_its_total_count_writes_and_removes_nothing() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 40, 9);
    lab.tanium.set_list_meta(true);
    let first = run(&mut lab, &[]);
    assert_eq!(first.code, 0, "{}", first.message);
    let before = lab.source_docs();
    lab.set("reconcile_interval_hours", json!("0"));
    lab.tanium.server().reset_counters();
    lab.tanium
        .set_listing_quirk(tanium_tr_indicators::sim::tanium::ListingQuirk::DropsLast);
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(r.message.contains("but Tanium counts"), "{}", r.message);
    assert!(r.results.is_empty(), "the checkpoint stays");
    let s = lab.tanium.server();
    assert_eq!(
        s.hits("POST /plugin") + s.hits("PUT /plugin") + s.hits("DELETE /plugin")
            - crate::support::lease_calls(s),
        0
    );
    assert_eq!(lab.source_docs(), before);
    lab.tanium
        .set_listing_quirk(tanium_tr_indicators::sim::tanium::ListingQuirk::Normal);
    let r = run(&mut lab, &[]);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(
        r.message.contains("0 created, 0 updated, 0 removed"),
        "{}",
        r.message
    );
}
