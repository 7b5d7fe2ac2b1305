//! The real TaniumClient against the in-repo Tanium TR simulator, in both API generations.

use std::sync::Arc;
use std::time::Duration;

use tanium_tr_indicators::error::{Error, Service};
use tanium_tr_indicators::http::{HttpSettings, RecordedSleep, RetryPolicy};
use tanium_tr_indicators::secret::Secret;
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::sim::tanium::{IntrinsicFrom, ListingQuirk, TaniumSim, TaniumSimOptions};
use tanium_tr_indicators::tanium::{
    self, ApiGeneration, DeployAnswer, IntelDoc, TaniumClient, TaskState, Upload,
};

const SOURCE: &str = "ThreatConnect Indicators";

fn policy() -> RetryPolicy {
    RetryPolicy::quick(Arc::new(RecordedSleep::default()))
}

fn sim(generation: ApiGeneration) -> TaniumSim {
    TaniumSim::start(TaniumSimOptions::new(generation)).unwrap()
}

fn settings(sim: &TaniumSim, username: &str, password: &str) -> tanium::Settings {
    tanium::Settings {
        base_url: sim.url().parse().unwrap(),
        username: username.into(),
        password: Secret::new(password),
        http: HttpSettings {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            ..HttpSettings::default()
        },
        source_name: SOURCE.into(),
        api_version: None,
    }
}

fn connect(sim: &TaniumSim) -> TaniumClient {
    TaniumClient::connect(&settings(sim, "admin", "s3cret!"), policy()).unwrap()
}

fn stix(id: &str, title: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<stix:STIX_Package xmlns:stix="http://stix.mitre.org/stix-1" xmlns:indicator="http://stix.mitre.org/Indicator-2" id="{id}" version="1.2">
  <stix:Indicators><stix:Indicator>
    <indicator:Title>{title}</indicator:Title>
    <indicator:Description>Owner: Example Org</indicator:Description>
  </stix:Indicator></stix:Indicators>
</stix:STIX_Package>"#
    )
}

fn openioc(id: &str, title: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ioc xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="{id}"><short_description>{title}</short_description><description>from TC</description><criteria/></ioc>"#
    )
}

fn up<'a>(body: &'a str, kind: &'a str) -> Upload<'a> {
    Upload {
        body,
        kind,
        file_name: "tc-doc.xml",
    }
}

fn list(client: &TaniumClient, source_id: i64) -> Vec<IntelDoc> {
    let mut docs = Vec::new();
    client.list_docs(source_id, &mut |d| docs.push(d)).unwrap();
    docs
}

/// Answers `status` to the next `count` requests matching `method` and `prefix`.
fn fail(sim: &TaniumSim, method: Option<&str>, prefix: &str, count: u32, status: u16) {
    sim.server().inject(FaultRule::new(
        method,
        prefix,
        count,
        Fault::Status {
            status,
            retry_after: None,
        },
    ));
}

/// Status of a request sent straight to the simulator with the API token.
fn raw_status(sim: &TaniumSim, method: &str, path_and_query: &str) -> u16 {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path_and_query}", sim.url()))
        .header("session", "token-simulated")
        .body(())
        .unwrap();
    agent.run(req).unwrap().status().as_u16()
}

/// A simulator, a connected client and the app's source holding `n` small documents.
fn seeded(g: ApiGeneration, n: usize) -> (TaniumSim, TaniumClient, i64) {
    let sim = sim(g);
    let client = connect(&sim);
    let mine = client.find_or_create_source(SOURCE).unwrap().id;
    for i in 0..n {
        sim.add_doc(mine, "d", &openioc(&format!("tc-{i}"), "x"));
    }
    (sim, client, mine)
}

/// Intel listing requests the simulator has seen.
fn listing_hits(sim: &TaniumSim, g: ApiGeneration) -> u64 {
    sim.server().hits(&format!("GET {}", intels(g)))
}

fn intels(g: ApiGeneration) -> String {
    format!("{}/intels", g.base_path())
}

#[test]
fn client_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TaniumClient>();
}

#[test]
fn password_login_on_4x() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    assert_eq!(client.generation(), ApiGeneration::V4);
    assert_eq!(sim.login_count(), 1);
    assert_eq!(sim.server().hits("POST /api/v2/session/login"), 1);
    // login + 4.x sources probe
    assert_eq!(client.request_count(), 2);
}

#[test]
fn api_token_is_sent_without_login_on_3x() {
    let sim = sim(ApiGeneration::V3);
    for (user, pass) in [
        ("_token", "token-simulated"),
        ("someone", "token-simulated"),
    ] {
        let client = TaniumClient::connect(&settings(&sim, user, pass), policy()).unwrap();
        assert_eq!(client.generation(), ApiGeneration::V3);
        assert!(client.find_source(SOURCE).unwrap().is_none());
    }
    assert_eq!(sim.server().hits("POST /api/v2/session/login"), 0);
    // each connect: 4.x probe (404) + 3.x probe
    assert_eq!(
        sim.server()
            .hits("GET /plugin/products/threat-response/api/v1/sources"),
        2
    );
}

#[test]
fn bad_credentials_are_an_auth_error_that_never_echoes_them() {
    let sim = sim(ApiGeneration::V4);
    let err = TaniumClient::connect(&settings(&sim, "alice.admin", "Wr0ngPassw0rd"), policy())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Auth {
                service: Service::Tanium,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("rejected the credentials"), "{text}");
    assert!(
        !text.contains("Wr0ngPassw0rd") && !text.contains("alice.admin"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains("Wr0ngPassw0rd"));
    // not retried: one login attempt
    assert_eq!(sim.server().hits("POST /api/v2/session/login"), 1);

    let err = TaniumClient::connect(&settings(&sim, "_token", "token-revoked-123"), policy())
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(
        text.contains("trusted") && !text.contains("token-revoked-123"),
        "{text}"
    );
}

#[test]
fn expired_session_is_renewed_once_in_both_generations() {
    for g in [ApiGeneration::V3, ApiGeneration::V4] {
        let sim = sim(g);
        let client = connect(&sim);
        sim.expire_sessions();
        let source = client.find_or_create_source(SOURCE).unwrap();
        assert_eq!(client.relogin_count(), 1, "{g:?}");
        assert_eq!(sim.login_count(), 2, "{g:?}");
        assert_eq!(sim.source_id(SOURCE), Some(source.id));
        // the renewed session keeps working
        client.find_source(SOURCE).unwrap();
        assert_eq!(sim.login_count(), 2);
    }
}

#[test]
fn a_call_refused_again_after_a_fresh_login_is_an_error_not_a_loop() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let sources = format!("{}/sources", ApiGeneration::V4.base_path());
    fail(&sim, Some("GET"), &sources, 2, 401);
    let err = client.find_source(SOURCE).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert_eq!(sim.login_count(), 2);
    assert_eq!(client.relogin_count(), 1);
}

#[test]
fn a_refused_token_is_reported_without_a_login() {
    let sim = sim(ApiGeneration::V4);
    let client =
        TaniumClient::connect(&settings(&sim, "_token", "token-simulated"), policy()).unwrap();
    fail(&sim, None, "/plugin", 1, 401);
    let err = client.find_source(SOURCE).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("expired or revoked") && text.contains("trusted IP list"),
        "{text}"
    );
    assert_eq!(sim.server().hits("POST /api/v2/session/login"), 0);
}

#[test]
fn a_403_to_a_token_the_server_still_accepts_is_a_missing_permission() {
    let sim = sim(ApiGeneration::V4);
    let client =
        TaniumClient::connect(&settings(&sim, "_token", "token-simulated"), policy()).unwrap();
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    sim.deny(
        Some("POST"),
        &format!("{}/sources/", ApiGeneration::V4.base_path()),
    );
    let body = stix("tc:Package-p", "p");
    let err = client.create_doc(source, &up(&body, "stix")).unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "Tanium permission missing: the account or API token needs 'threat response intels \
             write' to write intel documents (POST "
        ),
        "{text}"
    );
    assert!(!text.contains("rejected the credentials"), "{text}");
    // a 403 on 3.x can also mean a refused token: the session check tells them apart
    let sim3 = self::sim(ApiGeneration::V3);
    let err =
        TaniumClient::connect(&settings(&sim3, "_token", "token-revoked"), policy()).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("expired or revoked"), "{err}");
}

#[test]
fn a_403_after_a_fresh_login_names_the_permission() {
    let sim = sim(ApiGeneration::V3);
    let client = connect(&sim);
    sim.deny(Some("GET"), &intels(ApiGeneration::V3));
    let err = client.list_docs(7, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    assert!(err.to_string().contains("to read intel documents"), "{err}");
    assert_eq!(
        client.relogin_count(),
        1,
        "3.x answers 403 to expired sessions too"
    );
    // The session that login made is accepted: its 403s are permissions, not worth a login.
    for _ in 0..3 {
        let err = client.list_docs(7, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    }
    assert_eq!(client.relogin_count(), 1);
    // Until the server refuses that session itself: then a login it is.
    sim.expire_sessions();
    let err = client.list_docs(7, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    assert_eq!(client.relogin_count(), 2);
}

#[test]
fn workers_sharing_a_client_renew_an_expired_session_once() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap();
    sim.expire_sessions();
    let bodies: Vec<String> = (0..24)
        .map(|i| stix(&format!("tc:Package-{i}"), "t"))
        .collect();
    std::thread::scope(|s| {
        for chunk in bodies.chunks(6) {
            let client = &client;
            s.spawn(move || {
                for b in chunk {
                    client.create_doc(source.id, &up(b, "stix")).unwrap();
                }
            });
        }
    });
    assert_eq!(sim.docs_in(source.id).len(), 24);
    assert_eq!(client.relogin_count(), 1);
    assert_eq!(sim.login_count(), 2);
}

#[test]
fn find_or_create_source_creates_once() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    assert_eq!(client.find_source(SOURCE).unwrap(), None);
    let a = client.find_or_create_source(SOURCE).unwrap();
    let b = client.find_or_create_source(SOURCE).unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(a.name, SOURCE);
    assert_eq!(a.kind.as_deref(), Some("api-client"));
    assert_eq!(sim.sources_named(SOURCE), 1);
    let sources = format!("{}/sources", ApiGeneration::V4.base_path());
    assert_eq!(sim.server().hits(&format!("POST {sources}")), 1);
    // a name that differs only in case is another source
    assert_eq!(client.find_source(&SOURCE.to_uppercase()).unwrap(), None);
}

/// A Tanium that lets sources share a name would take a create sent again after a lost answer
/// as a second source: the client looks for it before each retry.
#[test]
fn a_source_create_whose_answer_is_lost_is_not_sent_again() {
    let sim = sim(ApiGeneration::V4);
    sim.set_duplicate_source_names(true);
    let sources = format!("{}/sources", ApiGeneration::V4.base_path());
    for (fault, posts) in [(Fault::DropAfterHandling, 1), (Fault::Drop, 2)] {
        let name = format!("{SOURCE} {posts}");
        let before = sim.server().hits(&format!("POST {sources}"));
        sim.server()
            .inject(FaultRule::new(Some("POST"), &sources, 1, fault.clone()));
        let client = connect(&sim);
        let s = client.find_or_create_source(&name).unwrap();
        assert_eq!(sim.sources_named(&name), 1, "{fault:?}");
        assert_eq!(s.name, name);
        assert_eq!(
            sim.server().hits(&format!("POST {sources}")) - before,
            posts,
            "{fault:?}: made and lost, found; or never made, sent again"
        );
    }
}

fn create_update_delete(g: ApiGeneration) {
    let sim = sim(g);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    let v1 = stix("tc:Package-aaa", "ThreatConnect Address 203.0.113.7");
    let created = client.create_doc(source, &up(&v1, "stix")).unwrap();
    let stored = &sim.docs_in(source)[0];
    assert_eq!(stored.id, created.id);
    assert_eq!(created.source_id, Some(source));
    assert_eq!(created.intrinsic_id.as_deref(), Some("tc:Package-aaa"));
    assert_eq!(created.revision_id, Some(1));
    assert_eq!(stored.name, "ThreatConnect Address 203.0.113.7");
    assert_eq!(stored.kind, "stix");
    assert_eq!(stored.body, v1);
    assert_eq!(stored.size, v1.len() as u64);
    assert_eq!(created.md5.as_deref(), Some(stored.md5.as_str()));
    assert_eq!(stored.md5.len(), 32);

    // the listing is what the sync compares against: the upload answer minus description,
    // plus on 4.x the intel health fields
    let listed = list(&client, source);
    assert_eq!(created.description.as_deref(), Some("Owner: Example Org"));
    let v4 = g == ApiGeneration::V4;
    let row = IntelDoc {
        description: None,
        contents: None,
        disabled: v4.then_some(false),
        disabled_endpoint_count: v4.then_some(0),
        throttled_finding_count: v4.then_some(0),
        status: v4.then(|| "HIGH_FIDELITY".to_string()),
        ..created.clone()
    };
    assert_eq!(listed, vec![row]);

    // same intrinsic id: replaced in place
    let v2 = stix(
        "tc:Package-aaa",
        "ThreatConnect Address 203.0.113.7 (rating 5)",
    );
    let updated = client.update_doc(created.id, &up(&v2, "stix")).unwrap();
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.revision_id, Some(2));
    assert_ne!(updated.md5, created.md5);
    let docs = sim.docs();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].body, v2);
    assert_eq!(docs[0].name, "ThreatConnect Address 203.0.113.7 (rating 5)");

    // OpenIOC is accepted too
    let ioc = openioc("tc-ioc-1", "ThreatConnect Host evil.example");
    let ioc_doc = client.create_doc(source, &up(&ioc, "openioc")).unwrap();
    assert_eq!(ioc_doc.kind.as_deref(), Some("openioc"));
    assert_eq!(ioc_doc.name, "ThreatConnect Host evil.example");

    // delete
    client.delete_doc(created.id).unwrap();
    client.delete_doc(ioc_doc.id).unwrap();
    assert!(sim.docs().is_empty());
}

#[test]
fn create_update_in_place_and_delete_on_4x() {
    create_update_delete(ApiGeneration::V4);
}

#[test]
fn create_update_in_place_and_delete_on_3x() {
    create_update_delete(ApiGeneration::V3);
}

#[test]
fn put_with_another_intrinsic_id_creates_a_new_document() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    let v1 = stix("tc:Package-one", "one");
    let first = client.create_doc(source, &up(&v1, "stix")).unwrap();
    let other = stix("tc:Package-two", "two");
    let second = client.update_doc(first.id, &up(&other, "stix")).unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(second.revision_id, Some(1));
    let docs = sim.docs_in(source);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].body, v1, "the old document is left untouched");
    assert_eq!(docs[0].revision_id, 1);
    assert_eq!(docs[1].intrinsic_id, "tc:Package-two");
    // the client owns the new document too
    client.delete_doc(second.id).unwrap();
}

#[test]
fn uploads_send_type_and_file_name_but_no_name_or_description_headers() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    // no root id and no title: the sim falls back to the Content-Disposition file name;
    // the type header wins over sniffing
    let body = "<ioc xmlns=\"http://openioc.org/schemas/OpenIOC_1.1\"><criteria/></ioc>";
    let doc = client
        .create_doc(
            source,
            &Upload {
                body,
                kind: "openioc",
                file_name: "tc host/evil.xml",
            },
        )
        .unwrap();
    assert_eq!(doc.intrinsic_id.as_deref(), Some("tc_host_evil.xml"));
    assert_eq!(doc.name, "tc_host_evil.xml");
    assert_eq!(doc.kind.as_deref(), Some("openioc"));
    let sent = |name: &str| {
        sim.last_upload_headers()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    };
    assert_eq!(sent("type").as_deref(), Some("openioc"));
    assert_eq!(
        sent("content-disposition").as_deref(),
        Some("attachment; filename=tc_host_evil.xml")
    );
    let stix_body = stix("tc:Package-h", "ThreatConnect Host evil.example");
    let doc = client.create_doc(source, &up(&stix_body, "stix")).unwrap();
    client.update_doc(doc.id, &up(&stix_body, "stix")).unwrap();
    assert_eq!((sent("name"), sent("description")), (None, None));
    assert_eq!(
        sim.docs_in(source)[1].description,
        "Owner: Example Org",
        "the description comes from the XML"
    );
}

#[test]
fn malformed_xml_is_refused_with_400_and_not_retried() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    let err = client
        .create_doc(
            source,
            &up("<stix:STIX_Package><oops></stix:STIX_Package>", "stix"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("malformed XML"), "{err}");
    let path = format!(
        "POST {}/sources/{source}/intels",
        ApiGeneration::V4.base_path()
    );
    assert_eq!(sim.server().hits(&path), 1);
    assert!(sim.docs().is_empty());
}

#[test]
fn documents_of_other_sources_are_never_touched() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let mine = client.find_or_create_source(SOURCE).unwrap().id;
    let theirs = sim.add_source("Someone else");
    let foreign = sim.add_doc(theirs, "theirs", &stix("x:Package-1", "theirs"));
    let own = sim.add_doc(mine, "mine", &stix("tc:Package-1", "mine"));
    let listed = list(&client, mine);
    assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), vec![own]);
    let body = stix("x:Package-1", "changed");
    let err = client.update_doc(foreign, &up(&body, "stix")).unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    assert!(client.delete_doc(foreign).is_err());
    assert_eq!(sim.docs_in(theirs)[0].revision_id, 1);
    assert_eq!(sim.server().hits("PUT"), 0);
    assert_eq!(sim.server().hits("DELETE"), 0);
}

#[test]
fn a_document_deleted_in_the_console_counts_as_deleted() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    let id = sim.add_doc(source, "hand-made", &openioc("hand-1", "hand-made"));
    assert_eq!(list(&client, source).len(), 1);
    sim.delete_doc(id);
    client.delete_doc(id).unwrap();
}

#[test]
fn delete_falls_back_to_the_path_form_and_remembers_it() {
    let sim = sim(ApiGeneration::V3);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    let a = sim.add_doc(source, "a", &openioc("a", "a"));
    let b = sim.add_doc(source, "b", &openioc("b", "b"));
    list(&client, source);
    let base = intels(ApiGeneration::V3);
    fail(&sim, Some("DELETE"), &format!("{base}/"), 1, 405);
    client.delete_doc(a).unwrap();
    client.delete_doc(b).unwrap();
    assert!(sim.docs().is_empty());
    assert_eq!(sim.server().hits(&format!("DELETE {base}/")), 3);
    assert_eq!(sim.server().hits(&format!("DELETE {base}/{b}")), 1);
}

#[test]
fn listing_pages_by_500_and_ignores_other_sources() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let mine = client.find_or_create_source(SOURCE).unwrap().id;
    let theirs = sim.add_source("Other feed");
    for i in 0..1234 {
        sim.add_doc(mine, &format!("d{i}"), &openioc(&format!("tc-{i}"), "x"));
        if i % 100 == 0 {
            sim.add_doc(theirs, "other", &openioc(&format!("o-{i}"), "o"));
        }
    }
    let path = format!("GET {}", intels(ApiGeneration::V4));
    // the sim lists all sources (1247 rows): pages of 500, 500, 247
    let docs = list(&client, mine);
    assert_eq!(docs.len(), 1234);
    assert!(docs.iter().all(|d| d.source_id == Some(mine)));
    let mut ids: Vec<i64> = docs.iter().map(|d| d.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 1234);
    assert_eq!(sim.server().hits(&path), 3);

    // a server that honours sourceId and sends ids as strings gives the same answer
    sim.set_honour_source_filter(true);
    sim.set_ids_as_strings(true);
    sim.server().reset_counters();
    let n = client.list_docs(mine, &mut |_| {}).unwrap();
    assert_eq!(n, 1234);
    assert_eq!(sim.server().hits(&path), 3);
}

#[test]
fn a_listing_shorter_than_one_page_costs_one_extra_request() {
    let (sim, client, mine) = seeded(ApiGeneration::V3, 7);
    assert_eq!(client.list_docs(mine, &mut |_| {}).unwrap(), 7);
    assert_eq!(listing_hits(&sim, ApiGeneration::V3), 2);
}

#[test]
fn a_listing_that_repeats_pages_is_cut_off() {
    let (sim, client, mine) = seeded(ApiGeneration::V4, 600);
    sim.set_listing_quirk(ListingQuirk::IgnoreOffset);
    let err = client.list_docs(mine, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("repeats"), "{err}");
    assert_eq!(listing_hits(&sim, ApiGeneration::V4), 2);
}

#[test]
fn a_small_listing_from_a_server_that_ignores_offset_is_complete() {
    let (sim, client, mine) = seeded(ApiGeneration::V4, 30);
    sim.set_listing_quirk(ListingQuirk::IgnoreOffset);
    assert_eq!(client.list_docs(mine, &mut |_| {}).unwrap(), 30);
}

/// Where the answers carry `meta.totalCount` (recorded on 4.x lists), a listing that ends
/// short of it is refused; one that reaches it is complete, whether or not the server applies
/// the `sourceId` hint (the total then counts every source's documents).
#[test]
fn a_listing_short_of_its_total_count_is_refused() {
    for honour in [false, true] {
        let (sim, client, mine) = seeded(ApiGeneration::V4, 1_200);
        let other = sim.add_source("Analyst Intel");
        sim.add_doc(other, "analyst rule", "rule analyst { condition: true }");
        sim.set_honour_source_filter(honour);
        sim.set_list_meta(true);
        assert_eq!(client.list_docs(mine, &mut |_| {}).unwrap(), 1_200);
        sim.set_listing_quirk(ListingQuirk::DropsLast);
        let err = client.list_docs(mine, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
        let total = if honour { 1_200 } else { 1_201 };
        assert!(
            err.to_string().contains(&format!(
                "ended after {} documents but Tanium counts {total}",
                total - 1
            )),
            "{err}"
        );
        // Without a total the listing cannot tell (the one it misses is not there for it).
        sim.set_list_meta(false);
        assert_eq!(
            client.list_docs(mine, &mut |_| {}).unwrap(),
            1_200 - u64::from(honour)
        );
    }
}

#[test]
fn a_listing_that_never_ends_hits_the_row_cap() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let mine = client.find_or_create_source(SOURCE).unwrap().id;
    sim.set_honour_source_filter(true);
    sim.set_listing_quirk(ListingQuirk::Endless);
    client.set_max_listed_rows(5_000);
    let mut seen = 0;
    let err = client.list_docs(mine, &mut |_| seen += 1).unwrap_err();
    assert!(err.to_string().contains("did not end"), "{err}");
    assert_eq!(seen, 5_000);
    assert_eq!(listing_hits(&sim, ApiGeneration::V4), 10);
}

#[test]
fn the_simulator_refuses_pages_over_500() {
    let sim = sim(ApiGeneration::V4);
    let base = intels(ApiGeneration::V4);
    let status = |q: &str| raw_status(&sim, "GET", &format!("{base}?{q}"));
    assert_eq!(status("limit=501&offset=0"), 400);
    assert_eq!(status("limit=500&offset=0"), 200);
}

#[test]
fn deploy_once_on_4x_and_not_at_all_on_3x() {
    let sim4 = sim(ApiGeneration::V4);
    let client = connect(&sim4);
    assert_eq!(client.deploy().unwrap(), DeployAnswer::Started(Some(779)));
    assert_eq!(sim4.deploy_count(), 1);

    let sim3 = sim(ApiGeneration::V3);
    let client = connect(&sim3);
    let before = client.request_count();
    assert_eq!(client.deploy().unwrap(), DeployAnswer::NotAStep);
    assert_eq!(client.request_count(), before);
    assert_eq!(sim3.deploy_count(), 0);
    assert_eq!(sim3.server().hits("POST /plugin"), 0);
    // the 3.x simulator has no deploy route at all
    let deploy = format!("{}/intel/deploy", ApiGeneration::V3.base_path());
    assert_eq!(raw_status(&sim3, "POST", &deploy), 404);
}

/// Deploys are tasks (`POST {base}/intel/deploy` -> `taskId`; `GET {base}/tasks/{id}` ->
/// `STARTED` until the deploy is done, `COMPLETED` with its end time after); while one runs
/// the simulator refuses another with 400 (unless switched off), which the client reports as
/// refused, not failed. A harmless `{}` body is not what makes a deploy fail.
#[test]
fn a_deploy_is_a_task_and_a_second_one_is_refused_while_it_runs() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    sim.set_deploy_duration(None);
    let DeployAnswer::Started(Some(task)) = client.deploy().unwrap() else {
        panic!("no task")
    };
    assert!(matches!(
        client.deploy_task(task).unwrap(),
        Some(TaskState::Running { started: Some(_) })
    ));
    assert!(
        matches!(client.deploy().unwrap(), DeployAnswer::Refused(m) if m.contains("in progress"))
    );
    assert_eq!(sim.deploy_count(), 1);
    sim.finish_deploys();
    assert!(matches!(
        client.deploy_task(task).unwrap(),
        Some(TaskState::Completed { ended: Some(_) })
    ));
    assert_eq!(
        client.deploy_task(task + 100).unwrap(),
        None,
        "unknown task"
    );
    // Side by side when the server does not refuse; a deploy of a given length completes.
    sim.set_refuse_deploy_while_running(false);
    sim.set_deploy_duration(Some(Duration::from_millis(150)));
    let DeployAnswer::Started(Some(a)) = client.deploy().unwrap() else {
        panic!()
    };
    assert!(matches!(client.deploy().unwrap(), DeployAnswer::Started(Some(b)) if b == a + 1));
    assert!(matches!(
        client.deploy_task(a).unwrap(),
        Some(TaskState::Running { .. })
    ));
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(
        client.deploy_task(a).unwrap(),
        Some(TaskState::Completed { .. })
    ));
    let deploy = format!("{}/intel/deploy", ApiGeneration::V4.base_path());
    let with_body = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
    .post(format!("{}{deploy}", sim.url()))
    .header("session", "token-simulated")
    .header("Content-Type", "application/json")
    .send("{}")
    .unwrap();
    assert_eq!(with_body.status().as_u16(), 200);
    // 3.x has no tasks.
    let sim3 = self::sim(ApiGeneration::V3);
    let tasks = format!("{}/tasks/779", ApiGeneration::V3.base_path());
    assert_eq!(raw_status(&sim3, "GET", &tasks), 404);
}

/// Injects `count` answers of `status` into the sources listing; returns the outcome and
/// how many times the listing was requested.
fn listing_with_faults(status: u16, count: u32) -> (tanium_tr_indicators::Result<()>, u64) {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let path = format!("{}/sources", ApiGeneration::V4.base_path());
    sim.server().reset_counters();
    fail(&sim, Some("GET"), &path, count, status);
    let outcome = client.find_source(SOURCE).map(|s| assert_eq!(s, None));
    (outcome, sim.server().hits(&format!("GET {path}")))
}

#[test]
fn retryable_statuses_are_retried() {
    for status in [500, 502, 503, 408, 429] {
        let (outcome, hits) = listing_with_faults(status, 2);
        assert!(outcome.is_ok(), "{status}: {outcome:?}");
        assert_eq!(hits, 3, "{status}");
    }
}

#[test]
fn final_statuses_are_not_retried() {
    for status in [400, 404, 409, 501] {
        let (outcome, hits) = listing_with_faults(status, 1);
        assert!(
            matches!(outcome, Err(Error::Status { status: s, .. }) if s == status),
            "{status}: {outcome:?}"
        );
        assert_eq!(hits, 1, "{status}");
    }
}

#[test]
fn retry_after_is_honoured_without_sleeping() {
    let sim = sim(ApiGeneration::V4);
    let sleeper = Arc::new(RecordedSleep::default());
    let client = TaniumClient::connect(
        &settings(&sim, "admin", "s3cret!"),
        RetryPolicy::quick(sleeper.clone()),
    )
    .unwrap();
    sim.server().inject(FaultRule::new(
        Some("POST"),
        "/plugin",
        1,
        Fault::Status {
            status: 429,
            retry_after: Some(7),
        },
    ));
    client.find_or_create_source(SOURCE).unwrap();
    assert_eq!(sleeper.delays(), vec![Duration::from_secs(7)]);
}

#[test]
fn dropped_and_truncated_answers_are_retried() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let path = format!("{}/sources", ApiGeneration::V4.base_path());
    sim.server().reset_counters();
    sim.server()
        .inject(FaultRule::new(Some("GET"), &path, 1, Fault::Drop));
    sim.server()
        .inject(FaultRule::new(Some("GET"), &path, 1, Fault::TruncateBody));
    assert_eq!(client.find_source(SOURCE).unwrap(), None);
    assert_eq!(sim.server().hits(&format!("GET {path}")), 3);
}

#[test]
fn failed_writes_are_retried_and_give_up_after_the_attempts() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    let body = stix("tc:Package-r", "r");
    sim.fail_next_writes(3);
    client.create_doc(source, &up(&body, "stix")).unwrap();
    assert_eq!(sim.docs().len(), 1);

    sim.fail_next_writes(4);
    let other = stix("tc:Package-s", "s");
    let err = client.create_doc(source, &up(&other, "stix")).unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err:?}");
    assert_eq!(sim.docs().len(), 1);
}

#[test]
fn a_body_that_is_not_json_is_an_error() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    sim.server()
        .inject(FaultRule::new(Some("GET"), "/plugin", 1, Fault::Garbage));
    let err = client.find_source(SOURCE).unwrap_err();
    // The simulator's garbage opens like an HTML page: a page, not the API, answered.
    assert!(
        matches!(err, Error::NotTheApi { status: 200, .. }),
        "{err:?}"
    );
}

#[test]
fn check_summarises_connection_and_source() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let before = client.check().unwrap();
    assert!(
        before.contains("4.x") && before.contains("does not exist yet"),
        "{before}"
    );
    assert!(!before.contains("s3cret!"));
    let id = client.find_or_create_source(SOURCE).unwrap().id;
    let after = client.check().unwrap();
    assert!(after.contains(&format!("exists (id {id})")), "{after}");
}

fn with_version(s: tanium::Settings, v: Option<ApiGeneration>) -> tanium::Settings {
    tanium::Settings {
        api_version: v,
        ..s
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A STIX package shaped like the renderer's: package and indicator ids differ.
fn stix_pkg(package_id: &str, indicator_id: &str, title: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<stix:STIX_Package xmlns:stix="http://stix.mitre.org/stix-1" xmlns:indicator="http://stix.mitre.org/Indicator-2" id="{package_id}" version="1.2">
  <stix:Indicators>
    <stix:Indicator id="{indicator_id}">
      <indicator:Title>{title}</indicator:Title>
      <indicator:Description>marker for {title}</indicator:Description>
    </stix:Indicator>
  </stix:Indicators>
</stix:STIX_Package>"#
    )
}

#[test]
fn listing_rows_carry_no_description_and_get_doc_reads_it() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap().id;
    let body = stix("tc:Package-d", "described");
    let created = client.create_doc(source, &up(&body, "stix")).unwrap();
    let listed = list(&client, source);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].description, None);
    let got = client.get_doc(created.id).unwrap().unwrap();
    assert_eq!(got.description.as_deref(), Some("Owner: Example Org"));
    assert_eq!((got.id, got.md5.clone()), (created.id, created.md5.clone()));

    sim.delete_doc(created.id);
    assert_eq!(client.get_doc(created.id).unwrap(), None);

    let theirs = sim.add_source("Other");
    let foreign = sim.add_doc(theirs, "theirs", &stix("x:Package-9", "theirs"));
    sim.server().reset_counters();
    let err = client.get_doc(foreign).unwrap_err();
    assert!(
        matches!(err, Error::NotOwned { action: "read", doc_id } if doc_id == foreign),
        "{err:?}"
    );
    assert!(err.to_string().contains("refusing to read"), "{err}");
    assert_eq!(sim.server().total_requests(), 0);
}

#[test]
fn the_intrinsic_id_may_come_from_the_package_or_the_first_indicator() {
    let (p1, i1) = ("tctr:Package-aaa", "tctr:indicator-aaa");
    for (from, claimed) in [
        (IntrinsicFrom::PackageRoot, p1),
        (IntrinsicFrom::FirstIndicator, i1),
    ] {
        let sim = sim(ApiGeneration::V4);
        sim.set_intrinsic_from(from);
        let client = connect(&sim);
        let source = client.find_or_create_source(SOURCE).unwrap().id;
        let doc = client
            .create_doc(source, &up(&stix_pkg(p1, i1, "v1"), "stix"))
            .unwrap();
        assert_eq!(doc.intrinsic_id.as_deref(), Some(claimed), "{from:?}");
        // same ids: in place
        let same = client
            .update_doc(doc.id, &up(&stix_pkg(p1, i1, "v2"), "stix"))
            .unwrap();
        assert_eq!((same.id, same.revision_id), (doc.id, Some(2)), "{from:?}");
        // only the element the switch does not read changes: still in place
        let (p, i) = match from {
            IntrinsicFrom::PackageRoot => (p1, "tctr:indicator-bbb"),
            IntrinsicFrom::FirstIndicator => ("tctr:Package-bbb", i1),
        };
        let kept = client
            .update_doc(doc.id, &up(&stix_pkg(p, i, "v3"), "stix"))
            .unwrap();
        assert_eq!(kept.id, doc.id, "{from:?}");
        // the element it reads changes: a new document, the old one stays
        let (p, i) = match from {
            IntrinsicFrom::PackageRoot => ("tctr:Package-ccc", i1),
            IntrinsicFrom::FirstIndicator => (p1, "tctr:indicator-ccc"),
        };
        let moved = client
            .update_doc(doc.id, &up(&stix_pkg(p, i, "v4"), "stix"))
            .unwrap();
        assert_ne!(moved.id, doc.id, "{from:?}");
        assert_eq!(sim.docs_in(source).len(), 2, "{from:?}");
    }
}

#[test]
fn content_is_stored_as_uploaded_or_reserialised() {
    let body = stix_pkg("tctr:Package-r", "tctr:indicator-r", "reserialised");
    for reserialise in [false, true] {
        let sim = sim(ApiGeneration::V3);
        sim.set_reserialise(reserialise);
        let client = connect(&sim);
        let source = client.find_or_create_source(SOURCE).unwrap().id;
        let created = client.create_doc(source, &up(&body, "stix")).unwrap();
        let listed = list(&client, source).remove(0);
        let stored = sim.docs_in(source).remove(0);
        assert_eq!(
            listed.md5.as_deref(),
            Some(md5_hex(stored.body.as_bytes()).as_str())
        );
        assert_eq!(listed.md5, created.md5);
        let same = listed.md5.as_deref() == Some(md5_hex(body.as_bytes()).as_str());
        assert_eq!(same, !reserialise, "reserialise = {reserialise}");
        assert_eq!(listed.size == Some(body.len() as i64), !reserialise);
        assert_eq!(stored.body == body, !reserialise);
        // the description survives either way
        let got = client.get_doc(created.id).unwrap().unwrap();
        assert_eq!(got.description.as_deref(), Some("marker for reserialised"));
    }
}

#[test]
fn a_delete_answered_without_json_is_checked_by_reading_the_document_back() {
    let g = ApiGeneration::V4;
    let (sim, client, mine) = seeded(g, 3);
    let ids: Vec<i64> = list(&client, mine).iter().map(|d| d.id).collect();
    let get_hits = |id: i64| sim.server().hits(&format!("GET {}/{id}", intels(g)));

    // gone: Ok
    sim.set_delete_reply_text(true);
    client.delete_doc(ids[0]).unwrap();
    assert_eq!(get_hits(ids[0]), 1);
    sim.set_delete_reply_text(false);

    // a non-JSON 200 that deleted nothing: the delete did not take
    sim.server().inject(FaultRule::new(
        Some("DELETE"),
        &intels(g),
        1,
        Fault::Garbage,
    ));
    let err = client.delete_doc(ids[1]).unwrap_err();
    assert!(matches!(err, Error::DeleteUnconfirmed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("Tanium delete did not take"),
        "{err}"
    );
    assert_eq!(sim.docs_in(mine).len(), 2);

    // a non-JSON 200 and a read-back that fails: unknown, not guessed
    sim.server().inject(FaultRule::new(
        Some("DELETE"),
        &intels(g),
        1,
        Fault::Garbage,
    ));
    fail(
        &sim,
        Some("GET"),
        &format!("{}/{}", intels(g), ids[2]),
        4,
        503,
    );
    let err = client.delete_doc(ids[2]).unwrap_err();
    assert!(
        err.to_string().contains("is ambiguous") && err.to_string().contains("503"),
        "{err}"
    );

    // a JSON answer needs no read-back
    sim.server().reset_counters();
    client.delete_doc(ids[1]).unwrap();
    assert_eq!(get_hits(ids[1]), 0);
    assert_eq!(sim.docs_in(mine).len(), 1);
}

#[test]
fn auto_falls_back_to_3x_whatever_the_4x_path_answers() {
    let v4_sources = format!("GET {}/sources", ApiGeneration::V4.base_path());
    for status in [400, 403, 404, 405, 500, 503] {
        for (user, pass) in [("admin", "s3cret!"), ("_token", "token-simulated")] {
            let sim = sim(ApiGeneration::V3);
            sim.set_other_generation_status(status);
            let client = TaniumClient::connect(&settings(&sim, user, pass), policy()).unwrap();
            assert_eq!(client.generation(), ApiGeneration::V3, "{status} {user}");
            assert_eq!(client.relogin_count(), 0, "{status} {user}");
            // one probe, no retries of a 5xx that every run would pay for
            assert_eq!(sim.server().hits(&v4_sources), 1, "{status} {user}");
            client.find_or_create_source(SOURCE).unwrap();
        }
    }
}

#[test]
fn a_passing_5xx_on_a_4x_server_does_not_make_it_3x() {
    let sim = sim(ApiGeneration::V4);
    let path = format!("{}/sources", ApiGeneration::V4.base_path());
    fail(&sim, Some("GET"), &path, 2, 503);
    let client = connect(&sim);
    assert_eq!(client.generation(), ApiGeneration::V4);
    assert_eq!(sim.server().hits(&format!("GET {path}")), 3);
}

#[test]
fn when_neither_generation_answers_the_error_names_both() {
    let sim = sim(ApiGeneration::V3);
    sim.set_other_generation_status(500);
    fail(
        &sim,
        Some("GET"),
        &format!("{}/sources", ApiGeneration::V3.base_path()),
        1,
        404,
    );
    let err = TaniumClient::connect(&settings(&sim, "admin", "s3cret!"), policy()).unwrap_err();
    assert!(matches!(err, Error::NoThreatResponse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("4.x answered 500, 3.x answered 404"),
        "{text}"
    );
    assert!(!text.contains("credentials"), "{text}");

    // both refused for a token the server accepts: a missing permission, not bad credentials
    let sim = self::sim(ApiGeneration::V4);
    for g in [ApiGeneration::V4, ApiGeneration::V3] {
        sim.deny(Some("GET"), &format!("{}/sources", g.base_path()));
    }
    let err =
        TaniumClient::connect(&settings(&sim, "_token", "token-simulated"), policy()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("4.x answered 403, 3.x answered 403")
            && text.contains("needs 'threat response sources read' to read intel sources"),
        "{text}"
    );
    assert!(!matches!(err, Error::Auth { .. }), "{err:?}");
}

#[test]
fn a_fixed_api_version_skips_detection() {
    for g in [ApiGeneration::V4, ApiGeneration::V3] {
        let sim = sim(g);
        let s = with_version(settings(&sim, "_token", "token-simulated"), Some(g));
        let client = TaniumClient::connect(&s, policy()).unwrap();
        assert_eq!(client.generation(), g);
        assert_eq!(client.request_count(), 0, "{g:?}: no probe");
        client.find_or_create_source(SOURCE).unwrap();
        assert_eq!(sim.server().hits("GET /plugin"), 1, "{g:?}");
    }
}

#[test]
fn a_wrong_fixed_api_version_suggests_auto() {
    for (server, fixed, status) in [
        (ApiGeneration::V3, ApiGeneration::V4, 404),
        (ApiGeneration::V4, ApiGeneration::V3, 404),
        (ApiGeneration::V3, ApiGeneration::V4, 500),
    ] {
        let sim = sim(server);
        sim.set_other_generation_status(status);
        let s = with_version(settings(&sim, "admin", "s3cret!"), Some(fixed));
        let client = TaniumClient::connect(&s, policy()).unwrap();
        let err = client.find_or_create_source(SOURCE).unwrap_err();
        assert!(err.to_string().contains("set it to auto"), "{err}");
        assert_eq!(sim.sources_named(SOURCE), 0);
    }
}

#[test]
fn check_intel_status_names_what_cannot_be_read() {
    for g in [ApiGeneration::V4, ApiGeneration::V3] {
        let sim = sim(g);
        let client = connect(&sim);
        let status = client.check_intel_status().unwrap();
        assert!(
            status.as_deref().is_some_and(|s| s.starts_with("readable")),
            "{g:?}: {status:?}"
        );
        sim.deny(Some("GET"), &format!("{}/labels", g.base_path()));
        assert!(
            client.check_intel_status().is_ok(),
            "labels are another permission"
        );
        sim.clear_denials();
        sim.deny(None, &format!("{}/intel/status", g.base_path()));
        let err = client.check_intel_status().unwrap_err();
        assert!(
            matches!(err, Error::Forbidden { .. })
                && err.to_string().contains("to read intel status"),
            "{err}"
        );
    }
}

/// Tanium answers a label attach with the labels now on the document; a 200 that is not JSON
/// (a proxy's page) proves nothing, so the client reads the document's labels before it says
/// the label is on.
#[test]
fn a_label_attach_answered_with_a_page_that_is_not_json_is_checked_on_the_document() {
    let sim = sim(ApiGeneration::V4);
    let client = connect(&sim);
    let source = client.find_or_create_source(SOURCE).unwrap();
    let doc = client
        .create_doc(source.id, &up(&stix("tc:Package-1", "t"), "stix"))
        .unwrap();
    let label = client.create_label("ThreatConnect").unwrap();
    let attach = format!("{}/intels/{}/labels", ApiGeneration::V4.base_path(), doc.id);
    let garbage = || FaultRule::new(Some("PUT"), &attach, 1, Fault::Garbage);

    sim.server().inject(garbage());
    let err = client.add_doc_label(doc.id, label.id).unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
    assert!(sim.doc_label_names(doc.id).is_empty());

    client.add_doc_label(doc.id, label.id).unwrap();
    sim.server().inject(garbage());
    client.add_doc_label(doc.id, label.id).unwrap();
    assert_eq!(
        sim.doc_label_names(doc.id),
        vec!["ThreatConnect".to_string()]
    );
}

#[test]
fn the_simulator_lists_and_creates_labels() {
    let sim = sim(ApiGeneration::V4);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let url = format!("{}{}/labels", sim.url(), ApiGeneration::V4.base_path());
    let post = |name: &str| {
        agent
            .post(&url)
            .header("session", "token-simulated")
            .header("Content-Type", "application/json")
            .send(serde_json::json!({"name": name, "description": "from TC"}).to_string())
            .unwrap()
    };
    let mut created = post("Alpha");
    assert_eq!(created.status().as_u16(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&created.body_mut().read_to_vec().unwrap()).unwrap();
    assert_eq!(v["data"]["name"], "Alpha");
    assert_eq!(v["data"]["description"], "from TC");
    assert_eq!(post("Alpha").status().as_u16(), 409);
    let mut listed = agent
        .get(&url)
        .header("session", "token-simulated")
        .call()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&listed.body_mut().read_to_vec().unwrap()).unwrap();
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    for k in [
        "id",
        "name",
        "description",
        "indicatorCount",
        "signalCount",
        "createdAt",
        "updatedAt",
    ] {
        assert!(rows[0].get(k).is_some(), "{k}");
    }
    assert_eq!(sim.labels()[0].name, "Alpha");
}

#[test]
fn a_session_that_expires_before_detection_gets_one_more_login() {
    let sim = TaniumSim::start(TaniumSimOptions::new(ApiGeneration::V4)).unwrap();
    sim.expire_next_session_at_once();
    let c = TaniumClient::connect(&settings(&sim, "admin", "s3cret!"), policy()).unwrap();
    assert_eq!(c.generation(), ApiGeneration::V4);
    assert_eq!(sim.login_count(), 2);
}

#[test]
fn a_listing_asked_for_in_parallel_reads_the_same_rows_and_stops_at_the_end() {
    let (sim, client, mine) = seeded(ApiGeneration::V4, 1234);
    let mut one = Vec::new();
    client.list_docs(mine, &mut |d| one.push(d.id)).unwrap();
    sim.server().reset_counters();
    let mut many = Vec::new();
    let n = client
        .list_docs_parallel(mine, 8, &mut |d| many.push(d.id))
        .unwrap();
    assert_eq!((n, &many), (1234, &one), "the same rows in the same order");
    // The first page, then one batch of eight: the end is in it; the rest are past the end.
    assert_eq!(listing_hits(&sim, ApiGeneration::V4), 9);

    sim.set_listing_quirk(ListingQuirk::IgnoreOffset);
    let err = client.list_docs_parallel(mine, 8, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("repeats"), "{err}");
    sim.set_honour_source_filter(true);
    sim.set_listing_quirk(ListingQuirk::Endless);
    client.set_max_listed_rows(5_000);
    let mut seen = 0;
    let err = client
        .list_docs_parallel(mine, 8, &mut |_| seen += 1)
        .unwrap_err();
    assert!(err.to_string().contains("did not end"), "{err}");
    assert_eq!(seen, 5_000);
}

/// What asking for listing pages in parallel buys: a 100k-document source listed with 50 ms of
/// latency on every answer, one page at a time and eight at a time. Prints the figures the
/// README quotes: `cargo test --release --test integration -- --ignored --exact
/// tanium::listing_pages_in_parallel_measured --nocapture`.
#[test]
#[ignore]
fn listing_pages_in_parallel_measured() {
    let docs = 100_000;
    let (sim, client, mine) = seeded(ApiGeneration::V4, docs);
    sim.server()
        .set_latency(std::time::Duration::from_millis(50));
    for parallel in [1, 8] {
        sim.server().reset_counters();
        let started = std::time::Instant::now();
        let n = client
            .list_docs_parallel(mine, parallel, &mut |_| {})
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        let pages = listing_hits(&sim, ApiGeneration::V4);
        assert_eq!(n as usize, docs);
        println!(
            "listing {docs} documents at 50 ms, {parallel} at a time: {secs:.2} s, {pages} requests (limit {:.2} s)",
            pages as f64 * 0.05 / parallel as f64
        );
    }
}

/// The label listing pages as recorded (100 without parameters, `limit` up to 500 with
/// `offset`, everything with `noLimit=true`); the client reads every label whichever the
/// server honours, in two requests at most for 250 labels, one when `meta.totalCount` proves
/// the first answer complete.
#[test]
fn every_label_is_read_however_the_server_pages_them() {
    for g in [ApiGeneration::V4, ApiGeneration::V3] {
        let sim = sim(g);
        for n in 0..250 {
            sim.add_label(&format!("label {n}"));
        }
        let labels = format!("{}/labels", g.base_path());
        assert_eq!(raw_status(&sim, "GET", &format!("{labels}?limit=501")), 400);
        let client = connect(&sim);
        for (no_limit, meta, requests) in [
            (true, false, 2),
            (false, false, 2),
            (true, true, if g == ApiGeneration::V4 { 1 } else { 2 }),
            (false, true, 2),
        ] {
            sim.set_labels_no_limit(no_limit);
            sim.set_list_meta(meta);
            let before = client.request_count();
            let read = client.list_labels().unwrap();
            assert_eq!(read.len(), 250, "{g:?} noLimit {no_limit} meta {meta}");
            assert_eq!(
                client.request_count() - before,
                requests,
                "{g:?} noLimit {no_limit} meta {meta}"
            );
        }
    }
}
