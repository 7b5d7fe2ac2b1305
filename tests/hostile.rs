//! Hostile data, end to end through the real binary (what tests/tc.rs, tests/tanium.rs and
//! tests/intel.rs cover at the client or renderer level is not repeated here):
//! - from ThreatConnect: huge descriptions and thousands of tags, a record that is not an
//!   indicator, absurd and negative numbers, the same id on two pages, a page that is not
//!   UTF-8 / not JSON, a `next` link to another host;
//! - from Tanium: a listing that never ends (offset ignored), 200 answers that are not JSON
//!   (to the listing and to a write that went through), documents of another source that claim
//!   the app's identities.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::{empty_lab, expected_name};
use serde_json::{json, Map, Value};
use tanium_tr_indicators::intel;
use tanium_tr_indicators::sim::dataset;
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::sim::server::{Fault, FaultRule, Server, SimRequest, SimResponse};
use tanium_tr_indicators::sim::tanium::{ListingQuirk, SimDoc};
use tanium_tr_indicators::tanium::model::ApiGeneration;
use tanium_tr_indicators::tc::tql::format_time;
use time::OffsetDateTime;

fn run(lab: &mut Lab) -> RunResult {
    lab.run(&Map::new(), &[]).expect("binary runs")
}

fn well_formed(docs: &[SimDoc]) {
    for d in docs {
        roxmltree::Document::parse(&d.body)
            .unwrap_or_else(|e| panic!("{} is not well-formed: {e}", d.name));
    }
}

fn names(docs: &[SimDoc]) -> Vec<String> {
    let mut n: Vec<String> = docs.iter().map(|d| d.name.clone()).collect();
    n.sort();
    n
}

fn ago(secs: i64) -> String {
    format_time(OffsetDateTime::now_utc() - time::Duration::seconds(secs))
}

/// A ThreatConnect stand-in serving hand-made pages (auth is not checked: the point is what
/// the app does with what comes back). Page n answers `?page=n`; the first page has no `page`.
struct FakeTc {
    server: Server,
}

impl FakeTc {
    fn api(&self) -> String {
        format!("{}/api", self.server.url())
    }
}

fn page(data: Value, next: Option<String>) -> Vec<u8> {
    let mut v = json!({"status": "Success", "data": data});
    if let Some(n) = next {
        v["next"] = json!(n);
    }
    serde_json::to_vec(&v).unwrap()
}

fn address(id: i64, ip: &str, lm: &str) -> Value {
    json!({"id": id, "ownerName": "Hostile Org", "type": "Address", "summary": ip, "ip": ip,
           "lastModified": lm, "active": true, "threatAssessScore": 500})
}

/// Huge values, absurd numbers, the same id on two pages and finally a page that is neither
/// UTF-8 nor JSON: the good records are delivered, every document is well-formed and bounded,
/// the run says what broke (exit 3) and Last Modified stays before the first record it never saw.
#[test]
fn hostile_tc_pages_are_survived_end_to_end() {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V4);
    let (t1, t2, t3) = (ago(3000), ago(2000), ago(1000));
    let tags: Vec<Value> = (0..3000)
        .map(|i| json!({"name": format!("tag-{i} <&>\"")}))
        .collect();
    let absurd = json!({
        "id": 2, "ownerName": "Hostile Org", "type": "Host", "summary": "absurd.example",
        "hostName": "absurd.example", "lastModified": t1, "active": true,
        "rating": 1e308, "confidence": -5, "threatAssessScore": 1e20, "falsePositives": -3,
        "description": "<&>\"']]>\u{1}".repeat(40_000), "tags": {"data": tags},
    });
    let pages_for = |url: &str| {
        vec![
            page(
                json!([address(1, "203.0.113.1", &t1), absurd]),
                Some(format!("{url}/api/v3/indicators?page=1")),
            ),
            // (the fake serves the page after id N at index N: none ends at id 1)
            page(json!([]), None),
            page(
                json!([
                    // id 1 again, with another value: the copy from page 1 wins
                    address(1, "203.0.113.99", &t2),
                    address(3, "203.0.113.2", &t2),
                ]),
                Some(format!("{url}/api/v3/indicators?page=2")),
            ),
            {
                let mut bad = page(json!([address(4, "203.0.113.3", &t3)]), None);
                let at = bad.len() / 2;
                bad.splice(at..at, [0xff, 0xfe, b'"']);
                bad
            },
        ]
    };
    let fake = start_self_linked(pages_for);
    lab.set("tc_api_path", json!(fake.api()));
    let r = run(&mut lab);
    assert_eq!(r.code, 3, "{}\n{}", r.message, r.log);
    assert!(
        r.message
            .contains("ThreatConnect pull incomplete (nothing removed)"),
        "{}",
        r.message
    );
    assert!(r.log.contains("not the v3 JSON envelope"), "{}", r.log);
    let docs = lab.source_docs();
    assert_eq!(
        names(&docs),
        [
            "ThreatConnect Address 203.0.113.1",
            "ThreatConnect Address 203.0.113.2",
            "ThreatConnect Host absurd.example"
        ]
    );
    well_formed(&docs);
    let huge = docs
        .iter()
        .find(|d| d.name.ends_with("absurd.example"))
        .unwrap();
    assert!(
        huge.size < 16 * 1024,
        "a 200 KB description and 3000 tags are trimmed: {}",
        huge.size
    );
    assert!(huge.description.contains("(and 2950 more)"));
    // Last Modified stays before the first indicator never seen (203.0.113.3 at t3).
    let lm = r.results.get("last_modified").expect("persisted on exit 3");
    assert!(lm.as_str() < t3.as_str(), "{lm} must be before {t3}");
    assert_eq!(
        r.results.get("last_full_reconcile").map(String::as_str),
        Some(""),
        "removals were not checked: the next run reconciles fully"
    );
}

/// A fake TC whose pages may link to itself: `pages_for(url)` builds the pages once the
/// server's own URL is known.
fn start_self_linked(pages_for: impl Fn(&str) -> Vec<Vec<u8>>) -> FakeTc {
    let pages: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let p2 = pages.clone();
    let server = Server::start(
        0,
        Arc::new(move |r: &SimRequest| {
            // Nothing deleted, no exclusion list, nothing expired.
            let empty = r.decoded_path().ends_with("/v3/indicators/deleted")
                || r.decoded_path().ends_with("/v3/security/exclusionLists")
                || r.param("tql")
                    .is_some_and(|t| t.contains("externalDateExpires"));
            if empty {
                return SimResponse::json(200, &json!({"status": "Success", "data": []}));
            }
            // The client pages by key (`... AND id > N`): these fakes' page k starts after id k.
            let after = r
                .param("tql")
                .and_then(|t| t.rsplit_once(" AND id > ").map(|(_, n)| n.to_string()));
            let n: usize = after
                .or_else(|| r.param("page").map(str::to_string))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            match p2.lock().unwrap().get(n) {
                Some(body) => SimResponse {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body: body.clone(),
                },
                None => SimResponse::json(404, &json!({"status": "Error"})),
            }
        }),
    )
    .expect("fake TC");
    *pages.lock().unwrap() = pages_for(&server.url());
    FakeTc { server }
}

/// A `next` link to another host (a proxy, an internal name) only says more pages exist: it is
/// never fetched, so no request (and no credential) reaches it, and the pull goes on by key.
#[test]
fn a_next_link_to_another_host_is_never_followed() {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V3);
    let evil_hits = Arc::new(AtomicU64::new(0));
    let seen = evil_hits.clone();
    let evil = Server::start(
        0,
        Arc::new(move |_r: &SimRequest| {
            seen.fetch_add(1, Ordering::SeqCst);
            SimResponse::json(200, &json!({"status": "Success", "data": []}))
        }),
    )
    .unwrap();
    let evil_url = evil.url();
    let fake = start_self_linked(|_| {
        vec![
            page(
                json!([address(1, "203.0.113.1", &ago(100))]),
                Some(format!("{evil_url}/api/v3/indicators?page=1&token=leak-me")),
            ),
            page(
                json!([address(2, "203.0.113.2", &ago(90))]),
                Some(format!("{evil_url}/api/v3/indicators?page=2&token=leak-me")),
            ),
            page(json!([]), None),
        ]
    });
    lab.set("tc_api_path", json!(fake.api()));
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    assert_eq!(
        evil_hits.load(Ordering::SeqCst),
        0,
        "no request to the other host"
    );
    assert!(!r.message.contains("leak-me") && !r.log.contains("leak-me"));
    assert_eq!(
        names(&lab.source_docs()),
        [
            "ThreatConnect Address 203.0.113.1",
            "ThreatConnect Address 203.0.113.2"
        ]
    );
}

/// The hostile fixtures of the TC simulator (quotes, backslashes, controls and Unicode in owner
/// and tag names, a 300 KB description, 3001 tags, invalid values) through the real binary:
/// valid ones delivered as well-formed documents, invalid ones skipped by name, exit 0.
#[test]
fn hostile_fixtures_sync_cleanly() {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V4);
    lab.tc.load(dataset::hostile());
    // The fixtures were last modified in mid 2025.
    lab.set("last_modified", json!("2025-01-01"));
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(
        r.message.contains("9 created") && r.message.contains("3 skipped (invalid)"),
        "{}",
        r.message
    );
    let docs = lab.source_docs();
    assert_eq!(docs.len(), 9);
    well_formed(&docs);
    assert!(docs.iter().all(|d| d.size < 16 * 1024));
    for skipped in ["not-an-ip", "ABC123 : 0123456789", "Host '.'"] {
        assert!(r.log.contains(skipped), "{skipped} is named in the log");
    }
    // A second full run finds all of it unchanged (hostile names do not break change detection).
    lab.set("reconcile_interval_hours", json!("0"));
    let again = run(&mut lab);
    assert!(
        again
            .message
            .contains("0 created, 0 updated, 0 removed, 9 unchanged"),
        "{}",
        again.message
    );
}

fn foreign_docs(lab: &Lab, app: i64) -> Vec<SimDoc> {
    lab.tanium
        .docs()
        .into_iter()
        .filter(|d| d.source_id != app)
        .collect()
}

/// Tanium pages that never end (offset ignored, more than a page of documents): the run stops
/// with a clear error before writing anything, instead of acting on a partial listing.
#[test]
fn a_tanium_listing_that_never_ends_stops_the_run_before_any_write() {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V4);
    lab.tc.load(dataset::generate(30, 3));
    let other = lab.tanium.add_source("Other");
    for n in 0..600 {
        lab.tanium
            .add_doc(other, &format!("r{n}"), &format!("rule r{n} {{}}"));
    }
    lab.tanium.set_listing_quirk(ListingQuirk::IgnoreOffset);
    let r = run(&mut lab);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(r.message.contains("repeats rows"), "{}", r.message);
    assert!(r.results.is_empty());
    let base = ApiGeneration::V4.base_path();
    assert_eq!(
        lab.tanium.server().hits(&format!("POST {base}/sources/")),
        0
    );
    assert_eq!(lab.tanium.deploy_count(), 0);
}

/// 200 answers that are not JSON: to the listing, the run stops (exit 1, nothing written);
/// to a create, the write counts as failed (exit 3, Last Modified held back) and the next run
/// delivers exactly that document, once.
#[test]
fn tanium_answers_that_are_not_json() {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V3);
    lab.tc.load(dataset::generate(30, 4));
    let base = ApiGeneration::V3.base_path();
    lab.tanium.server().inject(FaultRule::new(
        Some("GET"),
        &format!("{base}/intels"),
        1,
        Fault::Garbage,
    ));
    let r = run(&mut lab);
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(r.message.contains("Tanium"), "{}", r.message);
    assert!(lab.source_docs().is_empty());

    lab.tanium.server().inject(FaultRule::new(
        Some("POST"),
        &format!("{base}/sources/"),
        1,
        Fault::Garbage,
    ));
    let r = run(&mut lab);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(r.message.contains("1 failed"), "{}", r.message);
    let held = lab.source_docs().len();
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(r.message.contains(" 1 created"), "{}", r.message);
    let docs = lab.source_docs();
    let mut ids: Vec<String> = docs.iter().map(|d| d.intrinsic_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), docs.len(), "one document per identity");
    assert_eq!(docs.len(), held + 1);
}

/// Documents of another source that claim the app's identities (a copy of its document, one
/// with its marker in the description) are listed alongside (the server ignores the source
/// filter) but never touched, and do not stop the app from keeping its own copy.
#[test]
fn documents_of_another_source_that_claim_our_identities_are_left_alone() {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V4);
    lab.tc.load(dataset::generate(40, 5));
    let ours: Vec<_> = lab
        .tc
        .snapshot()
        .into_iter()
        .filter(|i| i.active && i.type_name != "URL")
        .take(3)
        .collect();
    let other = lab.tanium.add_source("Copied Intel");
    for i in &ours {
        let p = intel::render(i, intel::Format::Stix).unwrap();
        lab.tanium.add_doc(other, &p.name, &p.body);
    }
    let p = intel::render(&ours[0], intel::Format::OpenIoc).unwrap();
    let marker_only = p.body.replace(
        &p.identity.to_string(),
        "00000000-0000-4000-8000-000000000000",
    );
    lab.tanium
        .add_doc(other, "marker in description", &marker_only);
    let first = run(&mut lab);
    assert_eq!(first.code, 0, "{}", first.message);
    let app = lab.tanium.source_id("ThreatConnect").unwrap();
    let before = foreign_docs(&lab, app);
    assert_eq!(before.len(), 4);
    let mine = lab.source_docs();
    for i in &ours {
        let name = expected_name(i).unwrap();
        assert!(
            mine.iter().any(|d| d.name == name),
            "{name} is in the app's source"
        );
    }
    let id = ours[1].id;
    lab.tc.delete(id);
    let second = run(&mut lab);
    assert_eq!(second.code, 0, "{}", second.message);
    assert!(second.message.contains("1 removed"), "{}", second.message);
    assert_eq!(
        foreign_docs(&lab, app),
        before,
        "the copies stay, byte for byte"
    );
}

/// Found by chaos: a DELETE answered 200 with a body that is not JSON (a proxy's page; nothing
/// was deleted) counted as removed and the run exited 0, leaving the document for good. The
/// same for a deploy. Both are failures now, and the next run finishes the job.
#[test]
fn a_delete_or_deploy_answered_with_a_non_json_200_is_not_success() {
    let (_dir, mut lab) = empty_lab(ApiGeneration::V4);
    lab.tc.load(dataset::generate(30, 6));
    assert_eq!(run(&mut lab).code, 0);
    let base = ApiGeneration::V4.base_path();
    let victim = lab
        .tc
        .snapshot()
        .into_iter()
        .find(|i| {
            i.active
                && lab
                    .source_docs()
                    .iter()
                    .any(|d| d.name.ends_with(&i.summary.to_lowercase()))
        })
        .unwrap();
    lab.tc.delete(victim.id);
    lab.tanium.server().inject(FaultRule::new(
        Some("DELETE"),
        &format!("{base}/intels"),
        1,
        Fault::Garbage,
    ));
    let r = run(&mut lab);
    // 1: the removal was all this run had to do (3 when something else went through).
    assert_eq!(r.code, 1, "{}", r.message);
    assert!(
        r.message.contains("failed: could not remove"),
        "{}",
        r.message
    );
    let held = |lab: &Lab| {
        lab.source_docs()
            .iter()
            .any(|d| d.name.ends_with(&victim.summary.to_lowercase()))
    };
    assert!(held(&lab));

    let deploys = lab.tanium.deploy_count();
    lab.tanium.server().inject(FaultRule::new(
        Some("POST"),
        &format!("{base}/intel/deploy"),
        1,
        Fault::Garbage,
    ));
    let r = run(&mut lab);
    assert_eq!(r.code, 3, "{}", r.message);
    assert!(r.message.contains("intel deploy failed"), "{}", r.message);
    assert!(
        !held(&lab),
        "the removal is retried: its evidence is still after Last Modified"
    );
    assert_eq!(lab.tanium.deploy_count(), deploys);
    let r = run(&mut lab);
    assert_eq!(r.code, 0, "{}", r.message);
    assert_eq!(lab.tanium.deploy_count(), deploys + 1, "the owed deploy");
}
