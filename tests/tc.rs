//! ThreatConnect client against the in-repo TC simulator: filters, TQL override, hostile names,
//! paging and dedupe, HMAC and token auth, the retry rule, bad TQL, deleted indicators.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tanium_tr_indicators::error::Error;
use tanium_tr_indicators::http::{HttpSettings, RecordedSleep, RetryPolicy};
use tanium_tr_indicators::secret::Secret;
use tanium_tr_indicators::sim::dataset::{self, HOSTILE_OWNERS, HOSTILE_TAGS};
use tanium_tr_indicators::sim::server::{Fault, FaultRule};
use tanium_tr_indicators::sim::tc::{TcSim, TcSimOptions};
use tanium_tr_indicators::tc::auth::{hmac_authorization, path_and_query};
use tanium_tr_indicators::tc::client::TcClient;
use tanium_tr_indicators::tc::model::{Indicator, IndicatorType};
use tanium_tr_indicators::tc::tql::{self, Window};
use tanium_tr_indicators::tc::{self, Filters};
use time::OffsetDateTime;

fn policy() -> RetryPolicy {
    RetryPolicy::quick(Arc::new(RecordedSleep::default()))
}

fn settings(sim: &TcSim, auth: tc::Auth, page_size: u32) -> tc::Settings {
    tc::Settings {
        api_path: sim.api_path(),
        auth,
        http: HttpSettings {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(20),
            ..HttpSettings::default()
        },
        page_size,
    }
}

fn hmac(opts: &TcSimOptions) -> tc::Auth {
    tc::Auth::Hmac {
        access_id: opts.access_id.clone(),
        secret_key: Secret::new(opts.secret_key.clone()),
    }
}

fn client(sim: &TcSim, page_size: u32) -> TcClient {
    TcClient::new(
        &settings(sim, hmac(&TcSimOptions::default()), page_size),
        policy(),
    )
    .unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn loaded_sim(n: usize) -> TcSim {
    let sim = TcSim::start(TcSimOptions::default()).unwrap();
    sim.load(dataset::generate_at(n, 42, now()));
    sim.load(dataset::hostile());
    sim
}

struct Pulled {
    items: Vec<Indicator>,
    dropped: u64,
    duplicates: u64,
    pages: u64,
}

fn pull(c: &TcClient, tql: &str) -> Result<Pulled, Error> {
    let mut pages = c.indicators(tql);
    let mut items = Vec::new();
    for page in pages.by_ref() {
        items.extend(page?);
    }
    Ok(Pulled {
        items,
        dropped: pages.dropped(),
        duplicates: pages.duplicates(),
        pages: pages.pages(),
    })
}

fn ids<'a>(items: impl IntoIterator<Item = &'a Indicator>) -> BTreeSet<i64> {
    items.into_iter().map(|i| i.id).collect()
}

fn lower(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_lowercase()).collect()
}

fn has_tag(i: &Indicator, tags: &[&str]) -> bool {
    let want = lower(tags);
    i.tags.iter().any(|t| want.contains(&t.to_lowercase()))
}

fn lm(i: &Indicator) -> OffsetDateTime {
    OffsetDateTime::parse(
        &i.last_modified,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// The expected set, by plain closures over the snapshot, independent of the app's filter code.
fn expected(sim: &TcSim, pred: impl Fn(&Indicator) -> bool) -> BTreeSet<i64> {
    ids(sim
        .snapshot()
        .iter()
        .filter(|i| i.active && ["Address", "File", "Host"].contains(&i.type_name.as_str()))
        .filter(|i| pred(i)))
}

/// Pulls with the app's TQL, applies the app's client-side filter, and compares with `want`.
fn check_filter(c: &TcClient, f: &Filters, want: &BTreeSet<i64>, label: &str) {
    let got = pull(c, &tql::build(f, &Window::default())).unwrap();
    let kept: BTreeSet<i64> = got
        .items
        .iter()
        .filter(|i| f.matches(i))
        .map(|i| i.id)
        .collect();
    assert_eq!(
        &kept,
        want,
        "{label}: {}",
        tql::build(f, &Window::default())
    );
    assert!(!want.is_empty(), "{label} selects nothing");
}

/// The tcex HMAC vectors (tests/fixtures/tcex/known-answer-vectors.json, `hmac`).
fn tcex_hmac_vectors() -> Vec<serde_json::Value> {
    let text = include_str!("fixtures/tcex/known-answer-vectors.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["hmac"].as_array().unwrap().clone()
}

#[test]
fn hmac_signature_matches_tcex_known_answers() {
    let vectors = tcex_hmac_vectors();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        let (url, method) = (v["url"].as_str().unwrap(), v["method"].as_str().unwrap());
        let pq = path_and_query(url);
        assert!(pq.starts_with("/api/"), "{pq}");
        let ts = v["timestamp"].as_i64().unwrap();
        assert_eq!(
            v["signed_string"].as_str().unwrap(),
            format!("{pq}:{method}:{ts}"),
            "{url}: tcex signs the path and query as sent"
        );
        assert_eq!(
            hmac_authorization(
                v["access_id"].as_str().unwrap(),
                &Secret::new(v["secret_key"].as_str().unwrap()),
                pq,
                method,
                ts
            ),
            v["authorization"].as_str().unwrap(),
            "{url}"
        );
    }
    // The vectors' URLs are tcex's inputs, not the app's requests: the app's pull asks for more
    // fields and sorts by id. What the first one shares with the app is the encoding of a TQL
    // query the app's builder makes, so a change to that encoding shows here.
    let f = Filters {
        types: vec![IndicatorType::Address],
        ..Filters::default()
    };
    let t = tql::build(
        &f,
        &Window {
            after: Some(time::macros::datetime!(2026-10-29 00:00:00 UTC)),
            ..Window::default()
        },
    );
    assert!(vectors[0]["url"]
        .as_str()
        .unwrap()
        .contains(&format!("tql={}&", tql::encode_query_value(&t))));
}

type Pred = Box<dyn Fn(&Indicator) -> bool>;

#[test]
fn each_filter_alone_and_combined() {
    let sim = loaded_sim(3000);
    let c = client(&sim, 700);
    let all = Filters::default();
    check_filter(&c, &all, &expected(&sim, |_| true), "default");
    let cases: Vec<(&str, Filters, Pred)> = vec![
        (
            "types",
            Filters {
                types: vec![IndicatorType::File, IndicatorType::Host],
                ..all.clone()
            },
            Box::new(|i| i.type_name == "File" || i.type_name == "Host"),
        ),
        (
            "owners",
            Filters {
                owners: vec!["Common Community".into(), "Vendor Feed".into()],
                ..all.clone()
            },
            Box::new(|i| i.owner_name == "Common Community" || i.owner_name == "Vendor Feed"),
        ),
        (
            "include tags",
            Filters {
                include_tags: vec!["apt".into(), "C2".into()],
                ..all.clone()
            },
            Box::new(|i| has_tag(i, &["APT", "C2"])),
        ),
        (
            "exclude tags",
            Filters {
                exclude_tags: vec!["Benign".into(), "TEST".into()],
                ..all.clone()
            },
            Box::new(|i| !has_tag(i, &["benign", "test"])),
        ),
        (
            "threatassess",
            Filters {
                min_threatassess_score: Some(700),
                ..all.clone()
            },
            Box::new(|i| i.threat_assess_score.unwrap_or(0) >= 700),
        ),
        (
            "confidence",
            Filters {
                min_confidence: Some(50),
                ..all.clone()
            },
            Box::new(|i| i.confidence.is_some_and(|c| c >= 50)),
        ),
        (
            "rating",
            Filters {
                min_rating: Some(4),
                ..all.clone()
            },
            Box::new(|i| i.rating.is_some_and(|r| r >= 4.0)),
        ),
        (
            "false positives",
            Filters {
                max_false_positives: Some(0),
                ..all.clone()
            },
            Box::new(|i| i.false_positives.unwrap_or(0) == 0),
        ),
    ];
    for (label, f, pred) in &cases {
        let want = expected(&sim, pred);
        assert!(
            want.len() < expected(&sim, |_| true).len(),
            "{label} restricts"
        );
        check_filter(&c, f, &want, label);
    }
    let combined = Filters {
        types: vec![IndicatorType::Address, IndicatorType::Host],
        owners: vec!["Demo Organization".into(), "Partner Source".into()],
        include_tags: vec!["Malware".into(), "botnet".into(), "APT".into()],
        exclude_tags: vec!["Spam".into()],
        min_threatassess_score: Some(200),
        min_confidence: Some(20),
        min_rating: Some(2),
        max_false_positives: Some(1),
        tql: None,
    };
    let want = expected(&sim, |i| {
        (i.type_name == "Address" || i.type_name == "Host")
            && (i.owner_name == "Demo Organization" || i.owner_name == "Partner Source")
            && has_tag(i, &["malware", "BOTNET", "apt"])
            && !has_tag(i, &["spam"])
            && i.threat_assess_score.unwrap_or(0) >= 200
            && i.confidence.is_some_and(|c| c >= 20)
            && i.rating.is_some_and(|r| r >= 2.0)
            && i.false_positives.unwrap_or(0) <= 1
    });
    check_filter(&c, &combined, &want, "combined");
}

#[test]
fn since_selects_only_later_modifications_and_sees_updates() {
    let sim = loaded_sim(1500);
    let c = client(&sim, 400);
    let since = now() - time::Duration::days(20);
    let f = Filters::default();
    let got = pull(
        &c,
        &tql::build(
            &f,
            &Window {
                after: Some(since),
                ..Window::default()
            },
        ),
    )
    .unwrap();
    assert_eq!(
        ids(&got.items),
        expected(&sim, |i| lm(i) > since),
        "lastModified > since"
    );
    // id order: stable while TC changes during the pull (see TcClient::indicators).
    let sorted: Vec<_> = got.items.iter().map(|i| i.id).collect();
    assert!(sorted.windows(2).all(|w| w[0] < w[1]), "id asc");
    // An update bumps lastModified to now; a deactivation hides the indicator.
    let old = sim
        .snapshot()
        .into_iter()
        .find(|i| i.active && i.type_name == "Host" && lm(i) < since)
        .unwrap();
    let gone = got.items[0].id;
    assert!(sim.update(old.id, |i| i.rating = Some(5.0)));
    assert!(sim.set_active(gone, false));
    let just_now = now() - time::Duration::minutes(1);
    let again = pull(
        &c,
        &tql::build(
            &f,
            &Window {
                after: Some(just_now),
                ..Window::default()
            },
        ),
    )
    .unwrap();
    assert_eq!(ids(&again.items), BTreeSet::from([old.id]));
    assert_eq!(again.items[0].rating, Some(5.0));
}

#[test]
fn user_tql_override_keeps_types_and_counts_dropped_types() {
    let sim = loaded_sim(2000);
    let c = client(&sim, 300);
    let f = Filters {
        owners: vec!["Nobody".into()],
        types: vec![IndicatorType::Host, IndicatorType::Address],
        tql: Some(r#"typeName IN ("URL", "Host") AND rating >= 3"#.into()),
        ..Filters::default()
    };
    let got = pull(&c, &tql::build(&f, &Window::default())).unwrap();
    let want = expected(&sim, |i| {
        i.type_name == "Host" && i.rating.is_some_and(|r| r >= 3.0)
    });
    assert_eq!(ids(&got.items), want);
    assert_eq!(got.dropped, 0);
    // Raw user TQL that reaches other types: they are dropped and counted, never returned.
    let raw = pull(&c, r#"typeName IN ("URL", "Host") OR hasTag(name = "APT")"#).unwrap();
    let urls = sim
        .snapshot()
        .iter()
        .filter(|i| i.active && i.type_name == "URL")
        .count() as u64;
    assert!(urls > 0);
    assert_eq!(raw.dropped, urls);
    assert!(raw.items.iter().all(|i| i.type_name != "URL"));
    assert_eq!(
        ids(&raw.items),
        expected(&sim, |i| i.type_name == "Host"
            || i.tags.iter().any(|t| t == "APT"))
    );
}

#[test]
fn hostile_owner_and_tag_names_round_trip() {
    let sim = TcSim::start(TcSimOptions::default()).unwrap();
    sim.load(dataset::hostile());
    sim.load(dataset::generate_at(200, 3, now()));
    let c = client(&sim, 5);
    for (n, owner) in HOSTILE_OWNERS.iter().enumerate() {
        let f = Filters {
            owners: vec![owner.to_string()],
            ..Filters::default()
        };
        let want = expected(&sim, |i| i.owner_name == *owner);
        assert!(!want.is_empty(), "{n}");
        check_filter(&c, &f, &want, owner);
    }
    for tag in HOSTILE_TAGS {
        let f = Filters {
            include_tags: vec![tag.to_lowercase()],
            ..Filters::default()
        };
        check_filter(&c, &f, &expected(&sim, |i| has_tag(i, &[tag])), tag);
    }
    // Every hostile record comes back field for field (webLink is the server's own).
    let f = Filters {
        owners: HOSTILE_OWNERS.iter().map(|s| s.to_string()).collect(),
        ..Filters::default()
    };
    let got = pull(&c, &tql::build(&f, &Window::default())).unwrap();
    let mut served = got.items;
    served.sort_by_key(|i| i.id);
    let mut stored: Vec<_> = sim
        .snapshot()
        .into_iter()
        .filter(|i| i.id >= dataset::HOSTILE_BASE_ID)
        .collect();
    for i in served.iter_mut() {
        assert!(i.web_link.as_deref().unwrap().contains(&i.id.to_string()));
        i.web_link = None;
    }
    stored.iter_mut().for_each(|i| i.web_link = None);
    assert_eq!(served, stored);
    assert!(served.iter().any(|i| i.tags.len() > 3000));
}

#[test]
fn tricky_tql_is_signed_as_sent() {
    let sim = loaded_sim(50);
    let id = dataset::HOSTILE_BASE_ID + 1;
    assert!(sim.update(id, |i| i.description = Some("a+b&c=d%20#?é\\\"'`/".into())));
    let c = client(&sim, 100);
    let q = format!(
        "description = {} AND summary != \"x y+z%2B\"",
        tql::quote("a+b&c=d%20#?é\\\"'`/")
    );
    let got = pull(&c, &q).unwrap();
    assert_eq!(ids(&got.items), BTreeSet::from([id]));
    assert_eq!(sim.server().hits("GET /api/v3/indicators"), 1);
}

#[test]
fn pages_are_fetched_lazily_by_id_and_survive_deletions_mid_pull() {
    let sim = TcSim::start(TcSimOptions::default()).unwrap();
    sim.load(dataset::generate_at(2500, 9, now()));
    let c = client(&sim, 1000);
    let want = expected(&sim, |_| true);
    let pages_needed = want.len().div_ceil(1000) as u64;
    assert!(pages_needed >= 3);
    let got = pull(&c, &tql::build(&Filters::default(), &Window::default())).unwrap();
    assert_eq!(got.items.len(), want.len());
    assert_eq!(ids(&got.items), want);
    assert_eq!(got.duplicates, 0);
    assert_eq!(got.pages, pages_needed);

    // Lazy: one request per page, only when asked for; later pages ask for the ids after the
    // last one delivered.
    sim.server().reset_counters();
    let mut pages = c.indicators(&tql::build(&Filters::default(), &Window::default()));
    let first = pages.next().unwrap().unwrap();
    assert_eq!(first.len(), 1000, "URLs are excluded server-side");
    assert_eq!(sim.server().hits("GET /api/v3/indicators"), 1, "lazy");
    // TC deletes and deactivates indicators already delivered while the pull runs: with offset
    // paging the records behind them would slide back across the page edge and be skipped.
    let delivered: Vec<i64> = first.iter().map(|i| i.id).collect();
    for id in delivered.iter().take(40) {
        sim.delete(*id);
    }
    for id in delivered.iter().skip(40).take(20) {
        sim.set_active(*id, false);
    }
    let mut rest = Vec::new();
    for p in pages.by_ref() {
        rest.extend(p.unwrap());
    }
    let after_first: BTreeSet<i64> = want
        .iter()
        .copied()
        .filter(|id| !delivered.contains(id))
        .collect();
    assert_eq!(ids(&rest), after_first, "nothing skipped, nothing repeated");
    assert_eq!(
        sim.server().hits("GET /api/v3/indicators"),
        pages_needed,
        "one request per page"
    );
}

#[test]
fn hmac_failures_are_auth_errors_with_hints_and_not_retried() {
    let sim = loaded_sim(10);
    let bad = TcClient::new(
        &settings(
            &sim,
            tc::Auth::Hmac {
                access_id: "12345678901234567890".into(),
                secret_key: Secret::new("wrong-secret"),
            },
            100,
        ),
        policy(),
    )
    .unwrap();
    let err = pull(&bad, "id > 0").err().unwrap();
    let Error::Auth { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("Signature"), "{message}");
    assert!(message.contains("clock") && message.contains("secret key"));
    assert!(!err.to_string().contains("wrong-secret"));
    assert_eq!(sim.server().hits("GET /api/v3"), 1);
    sim.set_clock_skew(600);
    let err = client(&sim, 100).check().unwrap_err();
    assert!(
        err.to_string().contains("Timestamp Out of Acceptable"),
        "{err}"
    );
    sim.set_clock_skew(-200);
    assert!(client(&sim, 100).check().unwrap().contains("accepted"));
}

#[test]
fn token_auth_renews_ahead_of_expiry_and_once_on_401() {
    let opts = TcSimOptions {
        token_ttl_secs: 300,
        ..TcSimOptions::default()
    };
    let sim = TcSim::start(opts.clone()).unwrap();
    sim.load(dataset::generate_at(30, 1, now()));
    let tok = |sim: &TcSim| tc::Auth::Token {
        token: Secret::new(sim.token()),
        expires: Some(sim.token_expires()),
    };
    // Within 10 minutes of expiry: renewed before the first call.
    let c = TcClient::new(&settings(&sim, tok(&sim), 100), policy()).unwrap();
    let first_token = sim.token();
    assert!(c.check().is_ok());
    assert_eq!(sim.renewals(), 1);
    assert_ne!(sim.token(), first_token);
    assert_eq!(sim.server().hits("GET /api/appAuth"), 1);
    // Long-lived token revoked server-side: one 401, one renewal, the request succeeds.
    let sim = TcSim::start(TcSimOptions {
        token_ttl_secs: 4 * 3600,
        ..opts
    })
    .unwrap();
    sim.load(dataset::generate_at(30, 1, now()));
    let c = TcClient::new(&settings(&sim, tok(&sim), 100), policy()).unwrap();
    assert_eq!(
        pull(&c, "id > 0").unwrap().items.len(),
        expected(&sim, |_| true).len()
    );
    assert_eq!(sim.renewals(), 0);
    sim.expire_token();
    assert!(pull(&c, "id > 0").is_ok());
    assert_eq!(sim.renewals(), 1);
    assert_eq!(sim.server().hits("GET /api/v3/indicators"), 3);
    // A token TC never issued cannot be renewed: an auth error that never shows the token.
    let stranger = TcClient::new(
        &settings(
            &sim,
            tc::Auth::Token {
                token: Secret::new("APIV2:stolen:token"),
                expires: None,
            },
            100,
        ),
        policy(),
    )
    .unwrap();
    let err = stranger.check().unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("stolen"));
}

#[test]
fn retryable_statuses_are_retried_with_backoff_and_retry_after() {
    let sim = loaded_sim(20);
    for (status, retry_after) in [
        (500, None),
        (502, None),
        (503, None),
        (504, None),
        (408, None),
        (429, Some(7)),
    ] {
        let rec = Arc::new(RecordedSleep::default());
        let c = TcClient::new(
            &settings(&sim, hmac(&TcSimOptions::default()), 100),
            RetryPolicy::quick(rec.clone()),
        )
        .unwrap();
        sim.server().reset_counters();
        sim.server().inject(FaultRule::new(
            Some("GET"),
            "/api/v3/indicators",
            2,
            Fault::Status {
                status,
                retry_after,
            },
        ));
        let got = pull(&c, "id > 0").unwrap();
        assert_eq!(ids(&got.items), expected(&sim, |_| true), "{status}");
        assert_eq!(sim.server().hits("GET /api/v3/indicators"), 3, "{status}");
        assert_eq!(c.request_count(), 3);
        let slept = rec.delays();
        match retry_after {
            Some(s) => assert_eq!(slept, vec![Duration::from_secs(s); 2]),
            None => assert_eq!(
                slept,
                vec![Duration::from_millis(100), Duration::from_millis(200)]
            ),
        }
    }
    // A dropped connection is retried too.
    sim.server().reset_counters();
    sim.server()
        .inject(FaultRule::new(None, "/api/v3/indicators", 1, Fault::Drop));
    assert!(pull(&client(&sim, 100), "id > 0").is_ok());
    assert_eq!(sim.server().hits("GET /api/v3/indicators"), 2);
    // Attempts run out: the last status is reported.
    sim.server().reset_counters();
    sim.server().inject(FaultRule::new(
        None,
        "/api/v3/indicators",
        10,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let err = pull(&client(&sim, 100), "id > 0").err().unwrap();
    assert!(matches!(err, Error::Status { status: 503, .. }), "{err:?}");
    assert_eq!(sim.server().hits("GET /api/v3/indicators"), 4);
    sim.server().clear_faults();
}

#[test]
fn final_statuses_are_not_retried_and_are_mapped() {
    let sim = loaded_sim(20);
    for status in [400, 401, 403, 404, 501] {
        sim.server().reset_counters();
        sim.server().inject(FaultRule::new(
            None,
            "/api/v3/indicators",
            1,
            Fault::Status {
                status,
                retry_after: None,
            },
        ));
        let err = pull(&client(&sim, 100), "id > 0").err().unwrap();
        assert_eq!(sim.server().hits("GET /api/v3/indicators"), 1, "{status}");
        match (status, &err) {
            (401, Error::Auth { message, .. }) => assert!(message.contains("injected 401")),
            (
                403,
                Error::Forbidden {
                    needed, answers, ..
                },
            ) => {
                assert!(needed.starts_with("the Api User cannot read an owner"));
                assert!(answers.contains("injected 403"));
            }
            (
                s,
                Error::Status {
                    status, message, ..
                },
            ) => {
                assert_eq!(*status, s);
                assert!(message.contains(&format!("injected {s}")));
            }
            _ => panic!("{status}: {err:?}"),
        }
    }
    sim.server().inject(FaultRule::new(
        None,
        "/api/v3/indicators",
        1,
        Fault::Garbage,
    ));
    let err = pull(&client(&sim, 100), "id > 0").err().unwrap();
    // The simulator's garbage opens like an HTML page: a page, not the API, answered.
    assert!(
        matches!(err, Error::NotTheApi { status: 200, .. }),
        "{err:?}"
    );
}

/// Margins for a loaded 2-core machine: the delayed answer comes long after the timeout, and the
/// timeout is long enough for any answer that is not delayed.
#[test]
fn read_timeouts_are_retried() {
    let sim = loaded_sim(5);
    let mut s = settings(&sim, hmac(&TcSimOptions::default()), 100);
    s.http.read_timeout = Duration::from_secs(2);
    let c = TcClient::new(&s, policy()).unwrap();
    sim.server().inject(FaultRule::new(
        None,
        "/api/v3/indicators",
        1,
        Fault::Delay(Duration::from_secs(6)),
    ));
    let got = pull(&c, "id > 0").unwrap();
    assert_eq!(ids(&got.items), expected(&sim, |_| true));
    assert!(sim.server().armed_faults().is_empty(), "the delay was met");
    // The delayed attempt and its retry; more only if the machine stalled past 2 s.
    assert!(sim.server().hits("GET /api/v3/indicators") >= 2);
}

#[test]
fn bad_tql_is_tql_invalid_with_tcs_reason() {
    let sim = loaded_sim(5);
    let c = client(&sim, 100);
    for bad in [r#"typeName IN ("Host""#, "active = true", "rating >= "] {
        let f = Filters {
            tql: Some(bad.into()),
            ..Filters::default()
        };
        let err = pull(&c, &tql::build(&f, &Window::default())).err().unwrap();
        let Error::TqlInvalid(reason) = &err else {
            panic!("{err:?}")
        };
        assert!(
            reason.starts_with("Syntax error(s) found with your TQL query."),
            "{reason}"
        );
        assert!(err.to_string().contains("TQL is invalid"));
    }
    assert_eq!(
        sim.server().hits("GET /api/v3/indicators"),
        3,
        "never retried"
    );
}

#[test]
fn deleted_indicators_are_per_owner_and_read_across_pages() {
    let sim = TcSim::start(TcSimOptions::default()).unwrap();
    sim.load(dataset::generate_at(400, 5, now()));
    let before = now() - time::Duration::seconds(5);
    let gone: Vec<i64> = (1..=150).map(|i| i * 2).collect();
    let mut owner_of = std::collections::BTreeMap::new();
    for id in &gone {
        owner_of.insert(*id, sim.get(*id).unwrap().owner_name);
        assert!(sim.delete(*id));
    }
    assert!(!sim.delete(2), "already gone");
    let c = client(&sim, 20);
    // Without owner= the endpoint covers the API user's Organization only.
    let mut org = Vec::new();
    let n = c.deleted_since(before, None, &mut |d| org.push(d)).unwrap();
    let in_org = owner_of
        .values()
        .filter(|o| *o == dataset::OWNERS[0])
        .count();
    assert_eq!(n as usize, in_org);
    assert!(org.iter().all(|d| d.owner_name == dataset::OWNERS[0]));
    // Owner by owner, every deletion is found, in the documented record shape.
    let owners = c.owners().unwrap();
    assert_eq!(
        owners.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        dataset::OWNERS.to_vec()
    );
    assert_eq!(owners[0].kind.as_deref(), Some("Organization"));
    assert_eq!(owners[1].kind.as_deref(), Some("Community"));
    let mut seen = Vec::new();
    for o in &owners {
        c.deleted_since(before, Some(&o.name), &mut |d| seen.push(d))
            .unwrap();
    }
    assert_eq!(seen.len(), gone.len());
    let mut want: Vec<&String> = owner_of.values().collect();
    let mut got: Vec<&String> = seen.iter().map(|d| &d.owner_name).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(seen
        .iter()
        .all(|d| !d.summary.is_empty() && !d.type_name.is_empty() && d.date_added.is_some()));
    assert!(
        sim.server().hits("GET /api/v3/indicators/deleted") >= 2 + owners.len() as u64,
        "paged"
    );
    let later = c
        .deleted_since(now() + time::Duration::minutes(1), None, &mut |_| {
            panic!("none")
        })
        .unwrap();
    assert_eq!(later, 0);
    let got = pull(&c, "id > 0").unwrap();
    assert!(ids(&got.items).is_disjoint(&gone.iter().copied().collect()));
}

#[test]
fn a_next_link_on_another_origin_is_only_a_signal_and_never_fetched() {
    let sim = loaded_sim(300);
    // A proxy or internal host name in `next`, as real deployments may send.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    sim.set_next_base(Some(&format!("http://{}", other.local_addr().unwrap())));
    let c = client(&sim, 100);
    let got = pull(&c, "id > 0").unwrap();
    assert_eq!(ids(&got.items), expected(&sim, |_| true));
    assert!(got.pages >= 3, "{}", got.pages);
    assert!(
        other.accept().is_err(),
        "nothing connected to the other origin"
    );
    // The deleted list and the owners are paged without it too.
    assert!(c.owners().is_ok());
    assert!(c.deleted_since(now(), None, &mut |_| {}).is_ok());
    assert!(
        other.accept().is_err(),
        "nothing connected to the other origin"
    );
}

#[test]
fn a_page_tc_cannot_serve_in_time_is_asked_for_again_at_half_the_size() {
    use tanium_tr_indicators::sim::tc::HeavyPages;
    let sim = loaded_sim(900);
    let want = expected(&sim, |_| true);
    for (heavy, size) in [
        (HeavyPages::Status(200, 504), 125),
        (HeavyPages::Status(200, 500), 125),
        // A timeout is not asked for again at the same size: two timeouts, then 250 answers.
        // Pages over 300 stall 6 s, three times the timeout; 2 s is ample for a page of 250.
        (HeavyPages::Stall(300, Duration::from_secs(6)), 250),
    ] {
        sim.set_heavy_pages(Some(heavy));
        sim.server().reset_counters();
        let mut s = settings(&sim, hmac(&TcSimOptions::default()), 1000);
        s.http.read_timeout = Duration::from_secs(2);
        let c = TcClient::new(&s, policy()).unwrap();
        let mut pages = c.indicators("id > 0");
        let mut items = Vec::new();
        for p in pages.by_ref() {
            items.extend(p.unwrap());
        }
        assert_eq!(ids(&items), want, "{heavy:?}");
        assert_eq!(pages.page_size(), size, "1000 -> 500 -> 250 ...");
        if let HeavyPages::Stall(..) = heavy {
            // 1000 and 500 time out, then 250 a page; a retry may add hits.
            let pages = 2 + 900_u64.div_ceil(250);
            assert!(sim.server().hits("GET /api/v3/indicators") >= pages);
        }
    }
    // A TC that stops answering ends the pull after three timeouts of one page, not one (or
    // two) per size down to 100.
    sim.set_heavy_pages(Some(HeavyPages::Stall(0, Duration::from_millis(1500))));
    sim.server().reset_counters();
    let mut s = settings(&sim, hmac(&TcSimOptions::default()), 1000);
    s.http.read_timeout = Duration::from_millis(300);
    let c = TcClient::new(&s, policy()).unwrap();
    let err = pull(&c, "id > 0").err().unwrap();
    assert!(
        matches!(&err, Error::Transport(e) if e.failure.timed_out()),
        "{err:?}"
    );
    assert_eq!(
        sim.server().hits("GET /api/v3/indicators"),
        3,
        "1000, 500, 250"
    );
    // Never below 100: at the floor the shared retry rule decides, and the error is TC's.
    sim.set_heavy_pages(Some(HeavyPages::Status(50, 503)));
    let err = pull(&client(&sim, 150), "id > 0").err().unwrap();
    assert!(matches!(err, Error::Status { status: 503, .. }), "{err:?}");
}

#[test]
fn an_unreadable_record_ends_the_pull_with_an_error_that_names_it() {
    let sim = loaded_sim(50);
    let c = client(&sim, 10);
    let pulled = pull(&c, "id > 0").unwrap();
    assert!(!pulled.items.is_empty());
    // Schema drift on one record: its id arrives as a word.
    let bad_id = pulled.items[13].id;
    let drifted = TcSim::start(TcSimOptions::default()).unwrap();
    drifted.load(sim.snapshot());
    drifted.set_record_patch(Some((bad_id, serde_json::json!({"id": "x-13"}))));
    let c = client(&drifted, 10);
    let mut pages = c.indicators("id > 0");
    let mut items = Vec::new();
    let mut err = None;
    for p in pages.by_ref() {
        match p {
            Ok(v) => items.extend(v),
            Err(e) => err = Some(e),
        }
    }
    let err = err.expect("the pull must fail");
    let text = err.to_string();
    assert!(
        text.contains("record") && text.contains("page 2") && text.contains("cannot be read"),
        "{text}"
    );
    assert!(items.len() < pulled.items.len(), "the pull stopped");
    assert!(items.iter().all(|i| i.id != bad_id));
}

#[test]
fn app_auth_success_may_be_a_string() {
    let sim = TcSim::start(TcSimOptions {
        token_ttl_secs: 300,
        ..TcSimOptions::default()
    })
    .unwrap();
    sim.set_renew_success_as_string(true);
    let c = TcClient::new(
        &settings(
            &sim,
            tc::Auth::Token {
                token: Secret::new(sim.token()),
                expires: Some(sim.token_expires()),
            },
            100,
        ),
        policy(),
    )
    .unwrap();
    assert!(c.check().is_ok());
    assert_eq!(sim.renewals(), 1);
}

#[test]
fn check_and_missing_credentials() {
    let sim = loaded_sim(3);
    let msg = client(&sim, 10).check().unwrap();
    assert!(
        msg.contains("accepted") && msg.contains(&sim.api_path()),
        "{msg}"
    );
    let missing = TcClient::new(
        &settings(
            &sim,
            tc::Auth::Hmac {
                access_id: String::new(),
                secret_key: Secret::new(""),
            },
            10,
        ),
        policy(),
    );
    assert!(matches!(missing, Err(Error::Param(_))));
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

/// Scale check, run on demand: `cargo test --release --test integration -- --ignored --exact tc::million_indicators_scale --nocapture`.
#[test]
#[ignore]
fn million_indicators_scale() {
    let n: usize = std::env::var("TC_SIM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let base = rss_mib();
    let t = std::time::Instant::now();
    let sim = TcSim::start(TcSimOptions::default()).unwrap();
    sim.load(dataset::generate_at(n, 1, now()));
    let loaded = rss_mib();
    eprintln!(
        "loaded {n} in {:.1} s, sim RSS +{} MiB",
        t.elapsed().as_secs_f64(),
        loaded - base
    );
    let c = client(&sim, 10_000);
    let t = std::time::Instant::now();
    let f = Filters {
        min_rating: Some(2),
        ..Filters::default()
    };
    let mut pages = c.indicators(&tql::build(&f, &Window::default()));
    let mut count = 0usize;
    let mut first = None;
    for p in pages.by_ref() {
        count += p.unwrap().len();
        first.get_or_insert(t.elapsed());
    }
    eprintln!(
        "pulled {count} in {} pages: first page {:.2} s, total {:.1} s, peak-ish RSS {} MiB",
        pages.pages(),
        first.unwrap_or_default().as_secs_f64(),
        t.elapsed().as_secs_f64(),
        rss_mib() - base
    );
    assert_eq!(
        count,
        expected(&sim, |i| i.rating.is_some_and(|r| r >= 2.0)).len()
    );
}

#[test]
fn sim_serves_runtime_variables_and_owners_to_signed_requests() {
    use tanium_tr_indicators::error::Service;
    use tanium_tr_indicators::http::{agent, call, Request};
    let sim = loaded_sim(10);
    sim.set_variable("TC", "tanium_password", "s3cr3t \"value\"");
    let opts = TcSimOptions::default();
    let a = agent(&HttpSettings::default()).unwrap();
    let get = |path: &str| {
        let url = format!("{}{path}", sim.server().url());
        call(&a, &policy(), Service::ThreatConnect, &mut || {
            let ts = now().unix_timestamp();
            let auth = hmac_authorization(
                &opts.access_id,
                &Secret::new(opts.secret_key.clone()),
                path_and_query(&url),
                "GET",
                ts,
            );
            Ok(Request::new("GET", url.clone())
                .header("Authorization", auth)
                .header("Timestamp", ts.to_string()))
        })
        .unwrap()
    };
    let r = get("/api/internal/variable/runtime/TC/tanium_password");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["data"], "s3cr3t \"value\"");
    assert_eq!(get("/api/internal/variable/runtime/TC/nope").status, 404);
    let r = get("/api/v3/security/owners?resultLimit=2");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "Success");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(v["next"].as_str().unwrap().contains("resultStart=2"));
    let r = get("/api/v3/indicators?resultLimit=10001");
    assert_eq!(r.status, 400);
}
