//! Which indicators a run sends: one verdict for each indicator of the pull, the same in both
//! layouts. Its type, the job's filters, a value that cannot be sent, the safety rails (the
//! job's own, then ThreatConnect's exclusion lists and the indicator's expiry) and Maximum
//! Indicators decide, in that order; what a layout makes of a sent indicator (a package, a
//! member of a grouped document) is its own affair.

use time::OffsetDateTime;

use crate::exclusions::Exclusions;
use crate::intel::{self, Format, Invalid, Package};
use crate::safety::Guard;
use crate::tc::model::Indicator;
use crate::tc::Filters;

use super::cause::Cause;
use super::report::Counts;

/// At most this many indicators not sent for a safety rail are logged one by one per run
/// (then a count).
pub(super) const BLOCKED_LINES: u64 = 50;

/// Where an indicator ranks for Maximum Indicators: the highest ThreatAssess score first, then
/// the highest rating, the highest confidence, the lowest (oldest) id; unset values rank below
/// any set one. Smaller is better, and ids make it a total order.
pub(super) type Rank = (i64, i64, i64, i64);

pub(super) fn rank(ind: &Indicator) -> Rank {
    let rating = ind.rating.map_or(-1, |r| (r * 100.0).round() as i64);
    (
        -ind.threat_assess_score.unwrap_or(0),
        -rating,
        -ind.confidence.unwrap_or(-1),
        ind.id,
    )
}

/// What decides, besides the indicator, whether it is sent.
pub(super) struct Selection<'a> {
    pub filters: &'a Filters,
    pub format: Format,
    pub guard: &'a Guard,
    /// ThreatConnect's exclusion lists, when Honor Exclusion Lists is on and they were read.
    pub exclusions: Option<&'a Exclusions>,
    /// Honor Expiry: an indicator whose expiry is at or before this (the run's start) is out.
    pub expired_by: Option<OffsetDateTime>,
    /// A full reconcile under a cap: the rank of the last indicator that fits.
    pub cutoff: Option<Rank>,
}

/// What a layout renders a sent indicator to, as the selection reads it.
pub(super) trait Rendered {
    /// The value the safety rails check.
    fn value(&self) -> String;
    fn identity(&self) -> u128;
    /// How the log names it.
    fn title(&self) -> String;
}

impl Rendered for Package {
    fn value(&self) -> String {
        self.value.clone()
    }
    fn identity(&self) -> u128 {
        self.identity.as_u128()
    }
    fn title(&self) -> String {
        self.name.clone()
    }
}

impl Rendered for intel::group::Member {
    fn value(&self) -> String {
        intel::group::Member::value(self)
    }
    fn identity(&self) -> u128 {
        self.identity.as_u128()
    }
    fn title(&self) -> String {
        intel::group::Member::title(self)
    }
}

/// Why an indicator of the pull is not sent.
#[derive(Debug)]
pub(super) enum NotSent {
    /// Not an Address, File or Host (user TQL): never sent.
    OtherType,
    /// Its value cannot be sent (not an IP, a malformed hash...).
    Invalid(Box<Invalid>),
    /// Left out for `cause` (a filter, a safety rail, Maximum Indicators): the document the
    /// source may hold for `identity` goes.
    Out {
        identity: Option<u128>,
        title: String,
        cause: Cause,
    },
}

/// The verdict on one indicator: sent, rendered as `T`, or not and why.
pub(super) enum Verdict<T> {
    Sent(T),
    NotSent(NotSent),
}

/// Decides for one indicator; `render` makes what the layout sends of it.
pub(super) fn select<T: Rendered>(
    ind: &Indicator,
    sel: &Selection,
    render: impl FnOnce(&Indicator) -> Result<T, Invalid>,
) -> Verdict<T> {
    let out = |identity, title, cause| {
        Verdict::NotSent(NotSent::Out {
            identity,
            title,
            cause,
        })
    };
    let Some(kind) = ind.kind() else {
        return Verdict::NotSent(NotSent::OtherType);
    };
    if let Some(why) = sel.filters.rejection(ind) {
        let identity = intel::identity_of(&ind.owner_name, kind, &ind.summary)
            .ok()
            .map(intel::Identity::as_u128);
        return out(identity, ind.summary.clone(), Cause::Rejected(why));
    }
    let sent = match render(ind) {
        Ok(t) => t,
        Err(invalid) => return Verdict::NotSent(NotSent::Invalid(Box::new(invalid))),
    };
    if let Some(block) = sel.guard.check(kind, &sent.value()) {
        return out(Some(sent.identity()), sent.title(), Cause::Blocked(block));
    }
    if let Some(list) = sel
        .exclusions
        .and_then(|e| e.find(&ind.owner_name, kind, &sent.value()))
    {
        let cause = Cause::Excluded(list.to_string());
        return out(Some(sent.identity()), sent.title(), cause);
    }
    if let (Some(by), Some(at)) = (sel.expired_by, ind.expires_at()) {
        if at <= by {
            return out(Some(sent.identity()), sent.title(), Cause::Expired(at));
        }
    }
    if sel.cutoff.is_some_and(|c| rank(ind) > c) {
        return out(Some(sent.identity()), sent.title(), Cause::OverCap);
    }
    Verdict::Sent(sent)
}

impl NotSent {
    /// Counts it, and says why where the log names it (a blocked indicator, up to
    /// [`BLOCKED_LINES`] a run, also in a dry run's plan).
    pub fn count(&self, ind: &Indicator, counts: &mut Counts, dry_run: bool) {
        match self {
            NotSent::OtherType => counts.dropped_other_types += 1,
            NotSent::Invalid(invalid) => {
                log::warn!("{invalid}");
                counts.skipped_invalid += 1;
            }
            NotSent::Out {
                cause: Cause::Rejected(why),
                ..
            } => *counts.excluded.entry(why.filter).or_default() += 1,
            NotSent::Out {
                cause: cause @ (Cause::Blocked(_) | Cause::Excluded(_) | Cause::Expired(_)),
                title,
                ..
            } => {
                let seen = match cause {
                    Cause::Excluded(list) => {
                        let n = counts.on_lists.entry(list.clone()).or_default();
                        *n += 1;
                        counts.on_lists.values().sum()
                    }
                    Cause::Expired(_) => {
                        counts.expired += 1;
                        counts.expired
                    }
                    _ => {
                        counts.blocked += 1;
                        counts.blocked
                    }
                };
                if seen <= BLOCKED_LINES {
                    log::info!("not sent: {title} ({}): {cause}", ind.owner_name);
                    if dry_run {
                        println!("not sent {title} ({}): {cause}", ind.owner_name);
                    }
                }
            }
            NotSent::Out { title, cause, .. } => {
                counts.over_cap += 1;
                log::debug!("not sent: {title}: {cause}");
            }
        }
    }
}

/// The count of blocked indicators not named one by one.
pub(super) fn log_blocked_rest(counts: &Counts) {
    let listed: u64 = counts.on_lists.values().sum();
    for (n, why) in [
        (counts.blocked, "unsafe or on the Never Send list"),
        (listed, "on TC exclusion lists"),
        (counts.expired, "expired in ThreatConnect"),
    ] {
        if n > BLOCKED_LINES {
            log::info!(
                "... and {} more indicators not sent ({why})",
                n - BLOCKED_LINES
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tc::model::IndicatorType;

    fn host(id: i64, name: &str) -> Indicator {
        Indicator {
            tags: vec!["APT".into()],
            ..crate::sync::testkit::host(id, name)
        }
    }

    fn all() -> Filters {
        Filters {
            types: IndicatorType::ALL.to_vec(),
            ..Filters::default()
        }
    }

    /// The verdict in both layouts: a package per indicator, a member of a grouped document.
    fn both(ind: &Indicator, sel: &Selection) -> (Verdict<Package>, Verdict<intel::group::Member>) {
        (
            select(ind, sel, |i| intel::render(i, sel.format)),
            select(ind, sel, intel::group::member),
        )
    }

    fn cause<T>(v: &Verdict<T>) -> Option<&Cause> {
        match v {
            Verdict::NotSent(NotSent::Out { cause, .. }) => Some(cause),
            _ => None,
        }
    }

    #[test]
    fn both_layouts_get_one_verdict_with_one_cause() {
        let guard = Guard {
            safeguards: true,
            ..Guard::default()
        };
        let filters = Filters {
            exclude_tags: vec!["apt".into()],
            ..all()
        };
        let sel = Selection {
            filters: &filters,
            format: Format::Stix,
            guard: &guard,
            exclusions: None,
            expired_by: None,
            cutoff: None,
        };
        let (a, b) = both(&host(1, "a.example"), &sel);
        assert_eq!(cause(&a), cause(&b));
        assert_eq!(cause(&a).unwrap().to_string(), "has the exclude tag APT");
        let private = Indicator {
            type_name: "Address".into(),
            summary: "10.0.0.1".into(),
            ip: Some("10.0.0.1".into()),
            host_name: None,
            tags: Vec::new(),
            ..host(5, "x")
        };
        let (a, b) = both(&private, &sel);
        assert_eq!(cause(&a), cause(&b));
        assert_eq!(cause(&a).unwrap().to_string(), "unsafe: private 10.0.0.0/8");
        let url = Indicator {
            type_name: "URL".into(),
            ..host(2, "http://x")
        };
        assert!(matches!(
            both(&url, &sel),
            (
                Verdict::NotSent(NotSent::OtherType),
                Verdict::NotSent(NotSent::OtherType)
            )
        ));
        let bad = Indicator {
            type_name: "Address".into(),
            ip: Some("not-an-ip".into()),
            tags: Vec::new(),
            ..host(3, "not-an-ip")
        };
        assert!(matches!(
            both(&bad, &sel),
            (
                Verdict::NotSent(NotSent::Invalid(_)),
                Verdict::NotSent(NotSent::Invalid(_))
            )
        ));
    }

    #[test]
    fn the_tc_rails_give_one_verdict_in_both_layouts_after_the_jobs_own() {
        use crate::tc::exclusion::{ExclusionList, Value, Values};
        let mut lists = Exclusions::default();
        let hosts = ExclusionList {
            id: Some(1),
            name: "Indicator-Host".into(),
            fixed_values: Some(Values {
                data: vec![Value {
                    value: "mail.example".into(),
                }],
                count: Some(1),
            }),
            ..ExclusionList::default()
        };
        lists.add(&hosts, crate::exclusions::ListKind::Host);
        let now = time::macros::datetime!(2026-11-28 12:00:00 UTC);
        let guard = Guard {
            never_send: crate::safety::NeverSend::parse(&["gone.example".into()]).unwrap(),
            ..Guard::default()
        };
        let filters = all();
        let sel = Selection {
            filters: &filters,
            format: Format::Stix,
            guard: &guard,
            exclusions: Some(&lists),
            expired_by: Some(now),
            cutoff: None,
        };
        let (a, b) = both(&host(1, "Mail.Example"), &sel);
        assert_eq!(cause(&a), cause(&b));
        assert_eq!(
            cause(&a).unwrap().to_string(),
            "on a TC exclusion list (Indicator-Host)"
        );
        let expiring = |id, at: &str| Indicator {
            external_date_expires: Some(at.into()),
            ..host(id, &format!("h{id}.example"))
        };
        let (a, b) = both(&expiring(2, "2026-11-28T12:00:00Z"), &sel);
        assert_eq!(cause(&a), cause(&b));
        assert_eq!(
            cause(&a).unwrap().to_string(),
            "expired in ThreatConnect on 2026-11-28T12:00:00Z"
        );
        assert!(matches!(
            both(&expiring(3, "2026-11-28T12:00:01Z"), &sel),
            (Verdict::Sent(_), Verdict::Sent(_))
        ));
        // The job's own rail says it first; with the TC rails off, only that one is left.
        let both_ways = Indicator {
            external_date_expires: Some("2020-01-01T00:00:00Z".into()),
            ..host(4, "gone.example")
        };
        assert!(matches!(
            cause(&both(&both_ways, &sel).0),
            Some(Cause::Blocked(_))
        ));
        let off = Selection {
            exclusions: None,
            expired_by: None,
            ..sel
        };
        assert!(matches!(
            both(&host(1, "mail.example"), &off),
            (Verdict::Sent(_), Verdict::Sent(_))
        ));
        assert!(matches!(
            both(&expiring(2, "2020-01-01T00:00:00Z"), &off).0,
            Verdict::Sent(_)
        ));
    }

    #[test]
    fn counting_a_verdict_sorts_it_by_why() {
        let mut counts = Counts::default();
        let ind = host(1, "a.example");
        let out = |cause| NotSent::Out {
            identity: None,
            title: "t".into(),
            cause,
        };
        for n in [
            NotSent::OtherType,
            out(Cause::OverCap),
            out(Cause::Excluded("Indicator-Host".into())),
            out(Cause::Excluded("Indicator-Host".into())),
            out(Cause::Excluded("Host of Org".into())),
            out(Cause::Expired(time::OffsetDateTime::UNIX_EPOCH)),
            out(Cause::Blocked(crate::safety::Block::Unsafe("x".into()))),
            out(Cause::Rejected(crate::tc::filter::Rejection {
                filter: "Include Tags",
                detail: "d".into(),
            })),
        ] {
            n.count(&ind, &mut counts, false);
        }
        assert_eq!(
            (counts.dropped_other_types, counts.over_cap, counts.blocked),
            (1, 1, 1)
        );
        assert_eq!(counts.excluded.get("Include Tags"), Some(&1));
        assert_eq!(counts.on_lists.get("Indicator-Host"), Some(&2));
        assert_eq!(counts.on_lists.get("Host of Org"), Some(&1));
        assert_eq!(counts.expired, 1);
    }

    #[test]
    fn the_cap_ranks_by_score_rating_confidence_then_id() {
        let scored = |id: i64, score: i64, rating: Option<f64>, conf: Option<i64>| Indicator {
            threat_assess_score: Some(score),
            rating,
            confidence: conf,
            ..host(id, &format!("h{id}.example"))
        };
        let mut ranked = [
            scored(1, 500, Some(3.0), Some(50)),
            scored(2, 900, None, None),
            scored(3, 500, Some(4.0), Some(10)),
            scored(4, 500, Some(4.0), Some(90)),
            scored(5, 500, Some(4.0), Some(90)),
            scored(6, 500, None, Some(99)),
        ]
        .to_vec();
        ranked.sort_by_key(rank);
        let order: Vec<i64> = ranked.iter().map(|i| i.id).collect();
        assert_eq!(order, vec![2, 4, 5, 3, 1, 6]);
        let guard = Guard::default();
        let sel = Selection {
            filters: &all(),
            format: Format::Stix,
            guard: &guard,
            exclusions: None,
            expired_by: None,
            cutoff: Some(rank(&ranked[2])),
        };
        let (a, b) = both(&ranked[3], &sel);
        assert_eq!(cause(&a), Some(&Cause::OverCap));
        assert_eq!(cause(&b), Some(&Cause::OverCap));
        assert!(matches!(
            select(&ranked[0], &sel, intel::group::member),
            Verdict::Sent(_)
        ));
    }
}
