//! message.tc as the TC admin reads it in the job's history: one line of at most 255
//! characters that leads with what to do, for the longest and the credential cases, through
//! the real binary.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{lab, run_with};
use serde_json::{json, Map};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule, Server, SimRequest, SimResponse};
use tanium_tr_indicators::tanium::model::ApiGeneration;

fn run(lab: &mut Lab) -> RunResult {
    lab.run(&Map::new(), &[]).unwrap()
}

fn one_short_line(r: &RunResult) {
    assert_eq!(r.message.lines().count(), 1, "{}", r.message);
    assert!(r.message.chars().count() <= 255, "{}", r.message);
}

fn status(status: u16) -> Fault {
    Fault::Status {
        status,
        retry_after: Some(0),
    }
}

#[test]
fn a_refused_api_user_leads_with_the_api_user_and_what_to_check() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 5, 31);
    lab.set("tc_api_secret_key", json!("a-secret-that-was-regenerated"));
    let r = run(&mut lab);
    assert_eq!(r.code, 1, "{}", r.message);
    one_short_line(&r);
    assert!(
        r.message.starts_with(
            "ThreatConnect rejected the credentials: the job's Api User was refused (401 to GET \
             /api/v3/"
        ),
        "{}",
        r.message
    );
    for action in [
        "Api User is active",
        "secret key unchanged",
        "clock",
        "proxy",
    ] {
        assert!(r.message.contains(action), "{action}: {}", r.message);
    }
    assert!(!r.message.contains("a-secret-that-was-regenerated"));
    assert!(!r.log.contains("a-secret-that-was-regenerated"));
    assert!(lab.source_docs().is_empty());
}

#[test]
fn an_owner_the_api_user_cannot_read_names_the_owners_param() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 5, 32);
    lab.tc.server().inject(FaultRule::new(
        Some("GET"),
        "/api/v3/indicators",
        1,
        status(403),
    ));
    let r = run(&mut lab);
    assert_eq!(r.code, 1, "{}", r.message);
    one_short_line(&r);
    assert!(
        r.message.contains(
            "ThreatConnect permission missing: the Api User cannot read an owner the query \
             names; make it a member of each owner in ThreatConnect Owners"
        ),
        "{}",
        r.message
    );
}

#[test]
fn every_param_wrong_at_once_keeps_the_count_and_the_pointer_to_the_log() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 5, 33);
    for (name, bad) in [
        ("min_threatassess_score", "1001"),
        ("min_confidence", "high"),
        ("min_rating", "9"),
        ("max_false_positives", "-1"),
        ("max_removal_percent", "150"),
        ("max_indicators", "many"),
        ("max_indicator_age_days", "0.5"),
        ("reconcile_interval_hours", "soon"),
        ("tanium_workers", "1000"),
        ("tc_page_size", "lots"),
        ("last_modified", "yesterday-ish"),
        ("tanium_api_version", "5.x"),
        ("intel_format", "YARA"),
    ] {
        lab.set(name, json!(bad));
    }
    let r = run(&mut lab);
    assert_eq!(r.code, 1, "{}", r.message);
    one_short_line(&r);
    assert!(
        r.message.starts_with("13 invalid parameters: "),
        "{}\n{}",
        r.message,
        r.log
    );
    assert!(
        r.message.ends_with(" (details in app.log)"),
        "{}",
        r.message
    );
    for label in [
        "Minimum ThreatAssess Score",
        "Minimum Confidence Rating",
        "Intel Format",
    ] {
        assert!(r.log.contains(label), "app.log names {label}");
    }
    assert!(lab.source_docs().is_empty());
}

#[test]
fn a_partial_run_into_a_long_named_source_leads_with_the_failure() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 60, 34);
    let source = "Threat Response intel for the EMEA production fleet, fed by ThreatConnect \
                  (owners: Acme Corp, Common Community, Partner Feeds)";
    lab.set("tanium_source", json!(source));
    lab.set("tanium_workers", json!("1"));
    lab.tanium.server().inject(
        FaultRule::new(
            Some("POST"),
            "/plugin/products/threat-response/api/v1/sources/",
            5,
            status(503),
        )
        .after(10),
    );
    let r = run(&mut lab);
    assert_eq!(r.code, 3, "{}", r.message);
    one_short_line(&r);
    assert!(
        r.message
            .starts_with("Partial sync to Tanium source \"Threat Response intel fo…"),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("\": 1 failed, first error: "),
        "{}",
        r.message
    );
    assert!(r.message.contains("503"), "{}", r.message);
    assert!(r.log.contains(source), "app.log names the source in full");
}

/// Documents written to the app's source (creates, replacements, deletes; labels left out).
fn document_writes(lab: &Lab, generation: ApiGeneration) -> u64 {
    let base = generation.base_path();
    lab.tanium.server().hits_where(|k| {
        (k.starts_with(&format!("POST {base}/sources/"))
            || k.starts_with(&format!("PUT {base}/intels"))
            || k.starts_with(&format!("DELETE {base}/intels")))
            && !k.contains("/labels")
    })
}

#[test]
fn an_account_that_may_not_write_intel_is_named_and_stops_the_writes_at_once() {
    for (generation, per_document, workers) in [
        (ApiGeneration::V4, "1", "1"),
        (ApiGeneration::V3, "1", "1"),
        (ApiGeneration::V4, "1", "8"),
        (ApiGeneration::V4, "10", "4"),
    ] {
        let case = format!("{generation:?}, {per_document} per document, {workers} workers");
        let (_d, mut lab) = lab(generation, 300, 35);
        lab.set("tc_page_size", json!("50"));
        lab.set("indicators_per_document", json!(per_document));
        lab.set("tanium_workers", json!(workers));
        let base = generation.base_path();
        lab.tanium.deny(Some("POST"), &format!("{base}/sources/"));
        lab.tanium.deny(Some("PUT"), &format!("{base}/intels"));
        lab.tanium.deny(Some("DELETE"), &format!("{base}/intels"));
        let r = run(&mut lab);
        assert_eq!(r.code, 1, "{case}: {}\n{}", r.message, r.log);
        one_short_line(&r);
        assert!(
            r.message.starts_with(
                "Sync to Tanium source \"ThreatConnect\" failed: Tanium permission missing: the \
                 account or API token needs 'threat response intels write' to write intel documents"
            ),
            "{case}: {}",
            r.message
        );
        assert!(!r.message.contains("kept failing"), "{case}: {}", r.message);
        // One login to start, one more that proved the 403 is not about the session.
        assert_eq!(lab.tanium.login_count(), 2, "{case}\n{}", r.log);
        assert_eq!(
            r.log.matches("logging in again").count(),
            1,
            "{case}\n{}",
            r.log
        );
        let writes = document_writes(&lab, generation);
        if workers == "1" {
            assert_eq!(
                writes, 2,
                "{case}: the write, and once more after the login"
            );
        } else {
            // Each worker meets the 403 once or twice; 25 failures in a row would cost 50.
            assert!(writes <= 3 * 8, "{case}: {writes} writes\n{}", r.log);
        }
        assert!(lab.source_docs().is_empty(), "{case}");
        assert!(!r.results.contains_key("last_modified"), "{case}");
    }
}

#[test]
fn a_first_run_with_a_refused_tc_credential_writes_nothing_to_tanium() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 20, 37);
    lab.set("tc_api_secret_key", json!("a-secret-that-was-regenerated"));
    let r = run(&mut lab);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(
        r.message.starts_with(
            "ThreatConnect rejected the credentials: the job's Api User was refused (401 to GET \
             /api/v3/security/owners"
        ),
        "{}",
        r.message
    );
    assert_eq!(
        lab.tanium.source_id("ThreatConnect"),
        None,
        "no source made"
    );
    assert_eq!(
        lab.tanium.server().total_requests(),
        0,
        "Tanium not even asked"
    );
    assert!(r.results.is_empty());
}

/// Another API where Tanium Address points: `login` answers the login, 404 everything else.
fn other_api(login: SimResponse) -> Server {
    Server::start(
        0,
        Arc::new(move |r: &SimRequest| {
            if r.path == "/api/v2/session/login" {
                login.clone()
            } else {
                SimResponse::json(404, &json!({"detail": "Not Found"}))
            }
        }),
    )
    .unwrap()
}

#[test]
fn a_login_answer_tanium_would_not_give_says_the_address_may_not_be_tanium() {
    let secret = "detail-with-a-token-abc123";
    let challenge = SimResponse::json(401, &json!({ "detail": secret })).with_header(
        "WWW-Authenticate",
        "Bearer realm=\"api\", error=\"invalid_token\"",
    );
    let no_challenge = SimResponse::json(401, &json!({ "detail": secret }));
    let no_session = SimResponse::json(200, &json!({ "data": {"user": secret} }));
    for (login, says) in [
        (
            challenge,
            "answered 401 Unauthorized (application/json, asking for Bearer authentication)",
        ),
        (
            no_challenge,
            "answered 401 Unauthorized (application/json; no Threat Response route there (404))",
        ),
        (
            no_session,
            "answered 200 OK (application/json without a session)",
        ),
    ] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 5, 38);
        let other = other_api(login);
        let r = run_with(&mut lab, &[("tanium_address", json!(other.url()))]);
        assert_eq!(r.code, 1, "{}", r.message);
        one_short_line(&r);
        assert!(
            r.message.starts_with(&format!(
                "{} may not be a Tanium server: check Tanium Address, then Tanium Username and \
                 Tanium Password; POST /api/v2/session/login {says}",
                other.addr()
            )),
            "{}",
            r.message
        );
        assert!(!r.message.contains(secret) && !r.log.contains(secret));
    }

    // Tanium itself refusing the password: the credentials, not the address.
    let (_d, mut lab) = lab(ApiGeneration::V4, 5, 38);
    let r = run_with(&mut lab, &[("tanium_password", json!("not-the-password"))]);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(
        r.message
            .starts_with("Tanium rejected the credentials: login refused (401): check Tanium Username and Tanium Password"),
        "{}",
        r.message
    );
}

#[test]
fn a_server_that_takes_requests_and_never_answers_fails_the_run_within_the_logged_bound() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 0, 0);
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(
        r.log.contains(
            "timeouts: ThreatConnect 15 s to connect, 120 s for an answer; Tanium 15 s to \
             connect, 60 s for an answer; a request gives up after 2 timeouts, so one a server \
             never answers fails within 270 s (ThreatConnect), 150 s (Tanium)"
        ),
        "{}",
        r.log
    );

    let stalling = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = stalling.local_addr().unwrap();
    // Accepts and holds every connection without a word, until the test process ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in stalling.incoming() {
            held.push(c);
        }
    });
    lab.set("http_timeout_secs", json!("1"));
    for (param, value, says) in [
        (
            "tanium_address",
            format!("http://{addr}"),
            format!("Tanium timed out: {addr} did not answer POST /api/v2/session/login"),
        ),
        (
            "tc_api_path",
            format!("http://{addr}/api"),
            format!("ThreatConnect timed out: {addr} did not answer GET /api/v3/security/owners"),
        ),
    ] {
        lab.tanium.server().reset_counters();
        let r = run_with(&mut lab, &[(param, json!(value))]);
        assert_eq!(r.code, 1, "{}", r.message);
        assert!(
            r.message
                .starts_with(&format!("{says} within 1 s (2 attempts)")),
            "{}",
            r.message
        );
        assert!(
            r.log.contains("a request gives up after 2 timeouts, so one a server never answers fails within 4 s (ThreatConnect), 4 s (Tanium)"),
            "{}",
            r.log
        );
        // Two attempts of 1 s, the wait between them (0.5 s at most), starting the binary.
        assert!(
            r.elapsed < Duration::from_millis(2 * 1000 + 500 + 2500),
            "{param}: {:?}",
            r.elapsed
        );
        if param == "tc_api_path" {
            assert_eq!(lab.tanium.server().total_requests(), 0, "Tanium not asked");
        }
    }
}

#[test]
fn the_log_counts_in_plain_words() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 1, 39);
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(
        r.message
            .contains("now holds 1 document; this run: 1 created"),
        "{}",
        r.message
    );

    // Last Modified emptied, and the next matching query's connection dropped three times.
    lab.params.remove("last_modified");
    lab.persisted.remove("last_modified");
    lab.tc.server().inject(FaultRule::new(
        Some("GET"),
        "/api/v3/indicators",
        3,
        Fault::Drop,
    ));
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}\n{}", r.message, r.log);
    assert!(
        r.log
            .contains("Last Modified is empty: using the default, 30 days ago (20"),
        "{}",
        r.log
    );
    assert!(
        r.log.contains(
            "Tanium source \"ThreatConnect\" holds 1 document (1 identified, 0 duplicates, 0 \
             unidentified)"
        ),
        "{}",
        r.log
    );
    // One call's retries count to one N.
    for n in 2..=4 {
        assert!(
            r.log.contains(&format!("(attempt {n}/5)")),
            "attempt {n}: {}",
            r.log
        );
    }
    assert!(!r.log.contains("/2)"), "{}", r.log);
    // Nothing said that did not happen.
    assert!(!r.log.contains("()"), "{}", r.log);
    assert!(!r.log.contains("met twice"), "{}", r.log);
    for plural_of_one in [
        " 1 documents",
        " 1 indicators",
        " 1 owners",
        " 1 label sets",
    ] {
        assert!(!r.log.contains(plural_of_one), "{plural_of_one}: {}", r.log);
    }
}

#[test]
fn a_grouped_run_names_indicators_documents_and_the_single_documents_it_replaced() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 100, 36);
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    let singles = lab.source_docs().len();

    lab.set("indicators_per_document", json!("12"));
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    one_short_line(&r);
    let groups = lab.source_docs().len();
    assert!(groups < singles, "{groups} documents");
    // (the first run's deploy, seen completed, is said between the counters and the mode)
    let (counters, deploy) = r
        .message
        .split_once("; last intel deploy completed ")
        .unwrap();
    assert_eq!(
        counters,
        format!(
            "Synced: Tanium source \"ThreatConnect\" now holds {singles} indicators in {groups} \
             documents; this run: {singles} created, 0 updated, 0 removed, 0 unchanged, 0 \
             skipped (invalid); {singles} single documents replaced"
        )
    );
    assert!(deploy.ends_with("Z (full reconcile)"), "{}", r.message);
    assert!(
        r.log.contains(&format!(
            "grouped: documents {groups} created, {singles} removed ({singles} of them single \
             documents replaced)"
        )),
        "{}",
        r.log
    );
    let r = run(&mut lab);
    assert!(
        r.message.starts_with(&format!(
            "Synced: Tanium source \"ThreatConnect\" now holds {singles} indicators in {groups} \
             documents; this run: 0 created"
        )),
        "{}",
        r.message
    );

    lab.set("indicators_per_document", json!("1"));
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    assert_eq!(
        r.message,
        format!(
            "Synced: Tanium source \"ThreatConnect\" now holds {singles} documents; this run: \
             {singles} created, 0 updated, 0 removed, 0 unchanged, 0 skipped (invalid); {groups} \
             grouped documents replaced (full reconcile)"
        )
    );
    assert_eq!(lab.source_docs().len(), singles);
}
