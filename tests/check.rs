//! `check` tells the truth, and user TQL stays inside the job's bounds: through the real binary,
//! in the order an admin meets things in the first hour.

use crate::support::{expected, held, lab};
use serde_json::{json, Map, Value};
use tanium_tr_indicators::sim::lab::Lab;
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
