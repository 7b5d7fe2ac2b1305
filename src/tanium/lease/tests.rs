use super::*;
use time::macros::datetime;

fn name(renews: Option<i64>) -> LeaseName {
    LeaseName {
        since: datetime!(2026-11-28 12:00:00 UTC),
        until: datetime!(2026-11-28 12:30:00 UTC),
        run: "0a1b2c3d".into(),
        renews,
    }
}

#[test]
fn a_lease_name_says_its_source_start_expiry_run_and_rank() {
    let first = name(None);
    let text = first.render("ThreatConnect");
    assert_eq!(
        text,
        "ThreatConnect [tanium-tr-indicators run lease] since 2026-11-28T12:00:00Z until 2026-11-28T12:30:00Z run 0a1b2c3d"
    );
    assert_eq!(LeaseName::parse("ThreatConnect", &text), Some(first));
    let renewed = name(Some(17));
    let text = renewed.render("Feed [x] 2");
    assert!(text.ends_with(" run 0a1b2c3d renews #17"), "{text}");
    assert_eq!(LeaseName::parse("Feed [x] 2", &text), Some(renewed));
}

#[test]
fn only_leases_of_this_source_with_a_readable_expiry_are_leases() {
    let text = name(None).render("ThreatConnect");
    assert_eq!(LeaseName::parse("Threat", &text), None);
    assert_eq!(LeaseName::parse("ThreatConnect 2", &text), None);
    assert_eq!(LeaseName::parse("ThreatConnect", "ThreatConnect"), None);
    for broken in [
        "ThreatConnect [tanium-tr-indicators run lease] since 2026-11-28T12:00:00Z",
        "ThreatConnect [tanium-tr-indicators run lease] since x until 2026-11-28T12:30:00Z",
        "ThreatConnect [tanium-tr-indicators run lease]",
    ] {
        assert_eq!(LeaseName::parse("ThreatConnect", broken), None, "{broken}");
    }
}

#[test]
fn a_renewed_lease_keeps_its_first_rank() {
    let renewed = Found {
        id: 40,
        name: name(Some(12)),
    };
    let newcomer = Found {
        id: 39,
        name: name(None),
    };
    assert!(renewed.rank() < newcomer.rank());
    let now = datetime!(2026-11-28 12:30:00 UTC);
    assert!(!renewed.live(now));
    assert!(renewed.live(now - time::Duration::seconds(1)));
}
