//! `check` tells the truth, and user TQL stays inside the job's bounds: through the real binary,
//! in the order an admin meets things in the first hour.

use crate::support::{expected, held, lab};
use serde_json::{json, Map, Value};
use tanium_tr_indicators::sim::lab::{Lab, RunResult};
use tanium_tr_indicators::tanium::model::ApiGeneration;

fn with(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn requests(lab: &Lab) -> (u64, u64) {
    (
        lab.tc.server().total_requests(),
        lab.tanium.server().total_requests(),
    )
}

fn epoch(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn days_ago(d: i64) -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() - d * 86_400
}

/// The issue's TQL closed the job's parenthesis early and sent indicators of every age: it is
/// refused, naming the param and the position, before either side gets a request.
#[test]
fn a_tql_that_closes_the_jobs_parenthesis_is_refused_before_any_request() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 50, 31);
    lab.set("tql", json!("rating >= 5) OR (rating >= 99"));
    for args in [&[][..], &["check"][..], &["--dry-run"][..]] {
        let r = lab.run(&Map::new(), args).unwrap();
        assert_eq!(r.code, 1, "{args:?}: {}", r.message);
        assert!(
            r.message
                .starts_with("TQL has a ')' at position 12 with no '(' before it"),
            "{args:?}: {}",
            r.message
        );
        assert!(r.results.is_empty());
        assert_eq!(
            requests(&lab),
            (0, 0),
            "{args:?}: no request to either side"
        );
    }
    for (tql, at) in [
        ("(rating >= 5", "'(' at position 1 that is never closed"),
        (
            r#"summary = "a) OR (b"#,
            "quote (\") at position 11 that is never closed",
        ),
    ] {
        let r = lab.run(&with(&[("tql", json!(tql))]), &[]).unwrap();
        assert_eq!(r.code, 1, "{tql}: {}", r.message);
        assert!(r.message.contains(at), "{tql}: {}", r.message);
    }
    assert_eq!(requests(&lab), (0, 0));
    assert_eq!(lab.tanium.doc_count(), 0);
}

/// The same TQL with its parentheses balanced sends only what Last Modified allows: "3 days
/// ago" and "365 days ago" differ, and neither sends an indicator modified before it.
#[test]
fn a_balanced_tql_with_or_cannot_widen_the_time_bound() {
    let tql = "(rating >= 1) OR (rating < 1) OR (confidence >= 0)";
    let mut sent = Vec::new();
    for days in [3, 45] {
        let (_d, mut lab) = lab(ApiGeneration::V4, 400, 32);
        lab.set("tql", json!(tql));
        lab.set("last_modified", json!(format!("{days} days ago")));
        let r = lab.run(&Map::new(), &[]).unwrap();
        assert_eq!(r.code, 0, "{}", r.message);
        let floor = epoch(&r.results["job_horizon"]);
        assert!((floor - days_ago(days)).abs() < 600);
        let within = |i: &tanium_tr_indicators::tc::model::Indicator| {
            epoch(&i.last_modified) >= floor && (i.rating.is_some() || i.confidence.is_some())
        };
        let want = expected(&lab, within);
        assert!(!want.is_empty());
        assert_eq!(
            held(&lab),
            want,
            "{days} days: only what Last Modified allows"
        );
        sent.push(want.len());
    }
    assert!(sent[0] < sent[1], "{sent:?}");
}

fn check(lab: &mut Lab) -> RunResult {
    let r = lab.run(&Map::new(), &["check"]).unwrap();
    assert!(r.results.is_empty(), "check writes no results.tc");
    r
}

fn line<'a>(r: &'a RunResult, start: &str) -> &'a str {
    r.stdout
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?}:\n{}", r.stdout))
}

/// What a check may leave on the Tanium side: logins only.
fn nothing_written(lab: &Lab) {
    let t = lab.tanium.server();
    assert_eq!(
        t.hits("POST"),
        lab.tanium.login_count(),
        "only logins are posted"
    );
    assert_eq!(t.hits("PUT") + t.hits("DELETE") + t.hits("PATCH"), 0);
    assert_eq!(lab.tanium.doc_count(), 0);
    assert_eq!(lab.tanium.sources_named("ThreatConnect"), 0);
}

/// The admin's first hour: each thing that would make the run fail makes `check` fail first,
/// and what `check` cannot prove without writing it says it did not check.
#[test]
fn check_fails_where_the_run_would_in_the_admins_order() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 120, 33);
    let labels_before = lab.tanium.labels().len();

    // A TQL typo: TC refuses the next run's query, so check fails quoting TC.
    lab.set("tql", json!("confidence >>> 50 AND (rating > 1)"));
    let r = check(&mut lab);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let fail = line(&r, "FAIL ");
    assert!(
        fail.starts_with(
            "FAIL ThreatConnect matching query: ThreatConnect says the TQL is invalid: Syntax error"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.message.starts_with(
            "Check failed: ThreatConnect matching query: ThreatConnect says the TQL is invalid"
        ),
        "{}",
        r.message
    );
    assert!(
        !r.message.to_lowercase().contains("passed"),
        "{}",
        r.message
    );

    // An owner the Api User cannot see (and one spelt in the wrong case).
    lab.set("tql", json!(""));
    lab.set(
        "owners",
        json!(["Demo Organization", "No Such Org", "partner source"]),
    );
    let r = check(&mut lab);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let owners = line(&r, "FAIL ThreatConnect Owners: ");
    assert!(
        owners.starts_with(
            "FAIL ThreatConnect Owners: 'No Such Org', 'partner source' (did you mean 'Partner \
             Source'? names must match exactly) are not an owner the Api User can see (it sees "
        ) && owners.contains("Vendor Feed"),
        "{owners}"
    );
    assert!(r
        .message
        .starts_with("Check failed: ThreatConnect Owners: "));

    // Owners fixed; a Tanium account that may read but not write intel, make sources or deploy.
    lab.set("owners", json!(["Demo Organization", "Partner Source"]));
    let base = ApiGeneration::V4.base_path();
    lab.tanium.deny(Some("POST"), &format!("{base}/sources"));
    lab.tanium
        .deny(Some("POST"), &format!("{base}/intel/deploy"));
    lab.tanium.deny(Some("POST"), &format!("{base}/labels"));
    let r = check(&mut lab);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        line(&r, "ok   ThreatConnect Owners: "),
        "ok   ThreatConnect Owners: the Api User sees each (Demo Organization, Partner Source)"
    );
    for (p, why) in [
        ("sources write", "the first run creates the source"),
        ("intels write", "writing an intel document cannot be tried"),
        ("labels write", "making a label cannot be tried"),
        ("intel deploy", "a deploy cannot be tried"),
    ] {
        let l = line(
            &r,
            &format!("--   Tanium permission 'threat response {p}': not checked: "),
        );
        assert!(l.contains(why), "{l}");
    }
    assert_eq!(
        r.message,
        "Checks passed; not checked: 'threat response sources write', 'threat response intels \
         write', 'threat response labels write', 'threat response intel deploy' (the first run \
         shows them)"
    );
    assert!(
        line(&r, "ok   Tanium permissions: ").starts_with(
            "ok   Tanium permissions: proven by reading: 'threat response use api', 'threat \
             response sources read', 'threat response intels read', 'threat response labels read'"
        ),
        "{}",
        r.stdout
    );
    nothing_written(&lab);
    assert_eq!(lab.tanium.labels().len(), labels_before);
    // The run does meet the refusal check could not try.
    let r = lab.run(&Map::new(), &[]).unwrap();
    assert_ne!(r.code, 0, "{}", r.message);
    lab.tanium.clear_denials();

    // Everything in place: check counts what the first run then receives.
    let r = check(&mut lab);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let query = line(
        &r,
        "ok   ThreatConnect matching query, as the next run sends it (",
    );
    assert!(
        query.contains("(full reconcile, the source is empty: indicators modified since "),
        "{query}"
    );
    let counted: u64 = query
        .rsplit_once("TC counts ")
        .and_then(|(_, n)| n.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{query}"));
    let r = lab.run(&Map::new(), &[]).unwrap();
    assert_eq!(r.code, 0, "{}", r.message);
    assert!(
        r.log
            .contains(&format!("ThreatConnect sent {counted} indicators")),
        "check counted {counted}:\n{}",
        r.log
    );
    assert!(counted > 0);

    // The next run is incremental from the Last Modified the run kept.
    let r = check(&mut lab);
    let lm = lab.persisted["last_modified"].as_str().unwrap().to_string();
    assert_eq!(
        line(&r, "ok   ThreatConnect matching query"),
        format!(
            "ok   ThreatConnect matching query, as the next run sends it (indicators modified \
             after {lm}): accepted, TC counts 0 indicators"
        )
    );
}

/// The source's documents are read to prove 'threat response intels read': without it, check
/// fails naming the permission, and says the source exists so making one is not needed.
#[test]
fn check_fails_naming_a_read_permission_it_lacks() {
    let (_d, mut lab) = lab(ApiGeneration::V4, 30, 34);
    assert_eq!(lab.run(&Map::new(), &[]).unwrap().code, 0);
    let base = ApiGeneration::V4.base_path();
    lab.tanium.deny(Some("GET"), &format!("{base}/intels"));
    let r = check(&mut lab);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let fails: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{}", r.stdout);
    assert!(
        fails[0].starts_with("FAIL Tanium source \"ThreatConnect\": ")
            && fails[0].contains("'threat response intels read'"),
        "{}",
        r.stdout
    );
    assert!(
        line(&r, "ok   Tanium permissions: ")
            .contains("not needed: 'threat response sources write' (the source exists)"),
        "{}",
        r.stdout
    );
}

/// On 3.x there is no deploy step, and with Deploy Intel off none is needed.
#[test]
fn check_needs_no_deploy_on_3x_or_with_deploy_intel_off() {
    let (_d3, mut lab3) = lab(ApiGeneration::V3, 10, 35);
    let r = check(&mut lab3);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        line(&r, "ok   Tanium permissions: ")
            .contains("'threat response intel deploy' (3.x deploys intel on its own)"),
        "{}",
        r.stdout
    );
    let (_d, mut lab) = lab(ApiGeneration::V4, 10, 35);
    lab.set("deploy_intel", json!(false));
    lab.set("tanium_labels", json!(""));
    let r = check(&mut lab);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        line(&r, "ok   Tanium permissions: ")
            .contains("'threat response intel deploy' (Deploy Intel is off)"),
        "{}",
        r.stdout
    );
    assert!(!r
        .stdout
        .contains("'threat response intel deploy': not checked"));
    assert!(!r.message.contains("deploy"), "{}", r.message);
    nothing_written(&lab);
}
