//! Why a document, or an indicator in a grouped one, leaves the source: one type for both
//! layouts, which knows whether Maximum Removal Percent weighs it and what the plan, the log
//! and the counts by reason call it.

use std::borrow::Cow;
use std::fmt;

use time::OffsetDateTime;

use crate::safety::Block;
use crate::tc::filter::Rejection;
use crate::tc::tql;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cause {
    /// A full reconcile did not meet it: deleted, inactive, filtered out, or last modified
    /// before `floor` (the horizon or Maximum Indicator Age).
    NotSelected {
        floor: Option<OffsetDateTime>,
    },
    /// Modified since the last run (deactivated, say) and no longer returned by the job's
    /// query.
    NoLongerSelected,
    /// ThreatConnect returned it and one of the job's filters leaves it out.
    Rejected(Rejection),
    /// A safety rail: unsafe, or on the Never Send list.
    Blocked(Block),
    /// Ranked beyond Maximum Indicators.
    OverCap,
    /// On one of ThreatConnect's Indicator Exclusion Lists (Honor Exclusion Lists): the list,
    /// as the counts name it.
    Excluded(String),
    /// Its `externalDateExpires` has passed (Honor Expiry).
    Expired(OffsetDateTime),
    DeletedInTc,
    /// Another document holds the same indicator.
    Duplicate,
    /// Take Over Source is on: a document this job did not make and adopts for no indicator.
    Foreign,
    /// Indicators per Intel Document changed: its indicators have documents of the other
    /// layout now.
    Relaid,
    /// Its indicators are in other documents of the same layout now (a split, a merge, a
    /// change of the label set they share).
    Moved,
}

impl Cause {
    /// Whether the removal guard weighs it: an indicator leaves the source. A duplicate, or a
    /// document whose indicators have other documents now, takes none with it.
    pub fn weighed(&self) -> bool {
        !matches!(self, Cause::Duplicate | Cause::Relaid | Cause::Moved)
    }

    /// Its name among the removals by reason: each exclusion list is a reason of its own.
    pub fn key(&self) -> Cow<'static, str> {
        if let Cause::Excluded(_) = self {
            return Cow::Owned(self.to_string());
        }
        Cow::Borrowed(match self {
            Cause::NotSelected { .. } => "not selected any more",
            Cause::NoLongerSelected => "no longer selected",
            Cause::Rejected(r) => r.filter,
            Cause::Blocked(Block::Unsafe(_)) => "unsafe",
            Cause::Blocked(Block::NeverSend(_)) => "Never Send",
            Cause::OverCap => "Maximum Indicators",
            Cause::DeletedInTc => "deleted in ThreatConnect",
            Cause::Duplicate => "duplicate",
            Cause::Foreign => "not made by this job",
            Cause::Relaid => "Indicators per Intel Document changed",
            Cause::Moved => "moved to other documents",
            Cause::Excluded(_) => "on a TC exclusion list",
            Cause::Expired(_) => "expired in ThreatConnect",
        })
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NotSelected { floor: Some(h) } => write!(
                f,
                "not selected any more (deleted, inactive, filtered out, or last modified before {}: the horizon or Maximum Indicator Age)",
                tql::format_time(*h)
            ),
            Cause::NotSelected { floor: None } => {
                f.write_str("not selected any more (deleted, inactive or filtered out)")
            }
            Cause::NoLongerSelected => f.write_str("no longer selected by the job's query"),
            Cause::Rejected(r) => f.write_str(&r.detail),
            Cause::Blocked(b) => b.fmt(f),
            Cause::OverCap => f.write_str("ranked beyond Maximum Indicators"),
            Cause::Excluded(list) => write!(f, "on a TC exclusion list ({list})"),
            Cause::Expired(at) => {
                write!(f, "expired in ThreatConnect on {}", tql::format_time(*at))
            }
            Cause::DeletedInTc => f.write_str("deleted in ThreatConnect"),
            Cause::Duplicate => f.write_str("another document holds the same indicator"),
            Cause::Foreign => f.write_str(
                "Take Over Source is on and the job adopts it for no indicator it sends",
            ),
            Cause::Relaid => {
                f.write_str("its indicators have documents of the other layout now")
            }
            Cause::Moved => f.write_str("its indicators are in other documents now"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::Block;

    #[test]
    fn the_guard_weighs_only_indicators_that_leave_the_source() {
        let leave = [
            Cause::NotSelected { floor: None },
            Cause::NoLongerSelected,
            Cause::Rejected(Rejection {
                filter: "Exclude Tags",
                detail: "has the exclude tag X".into(),
            }),
            Cause::Blocked(Block::NeverSend("x.example".into())),
            Cause::OverCap,
            Cause::DeletedInTc,
            Cause::Foreign,
            Cause::Excluded("Indicator-Host".into()),
            Cause::Expired(OffsetDateTime::UNIX_EPOCH),
        ];
        assert!(leave.iter().all(Cause::weighed));
        for stay in [Cause::Duplicate, Cause::Relaid, Cause::Moved] {
            assert!(!stay.weighed(), "{stay}");
        }
    }

    #[test]
    fn one_wording_names_the_reason_and_says_why() {
        let r = Cause::Rejected(Rejection {
            filter: "Exclude Tags",
            detail: "has the exclude tag APT".into(),
        });
        assert_eq!(
            (r.key().as_ref(), r.to_string().as_str()),
            ("Exclude Tags", "has the exclude tag APT")
        );
        let b = Cause::Blocked(Block::NeverSend("corp.example".into()));
        assert_eq!(b.key(), "Never Send");
        assert_eq!(b.to_string(), "on the Never Send list (corp.example)");
        // Counted per list: the key names it.
        let x = Cause::Excluded("Indicator-Address-IPv4".into());
        assert_eq!(x.key(), "on a TC exclusion list (Indicator-Address-IPv4)");
        assert_eq!(x.to_string(), x.key());
        let e = Cause::Expired(time::macros::datetime!(2026-11-02 08:00:00 UTC));
        assert_eq!(e.key(), "expired in ThreatConnect");
        assert_eq!(
            e.to_string(),
            "expired in ThreatConnect on 2026-11-02T08:00:00Z"
        );
    }
}
