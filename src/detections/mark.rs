//! How far the job read the Threat Response alerts: the value of `alert_checkpoint` in
//! results.tc, e.g. `from 2026-11-28T12:00:00.123Z seen 4711-4720,4733`.
//!
//! The next run reads every alert Threat Response stored (`createdAt`, the server's time) at or
//! after `from`, and skips those in `seen`: the alerts from `from` on that are dealt with
//! (reported, or found not the job's to report). An alert counts as dealt with only once its
//! observation went through, so one whose write failed keeps `from` at or before it.
//!
//! `from` trails the newest alert read by [`ALERT_OVERLAP`]: a server may stamp `createdAt`
//! before an alert can be listed, so an alert listed after the read can still carry an earlier
//! time; the overlap reads the last minutes again and `seen` tells those alerts apart by id.
//!
//! While reporting is off the mark is kept, ending in ` off`: turned on again, the job reads
//! from the later of it and Last Modified (about the last run; nothing of a long pause), and
//! still skips what `seen` holds, so an alert reported before the pause is not reported again.

use std::fmt;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How far behind the newest alert read each run reads again.
pub const ALERT_OVERLAP: Duration = Duration::from_secs(5 * 60);

/// Alert ids as sorted, disjoint runs (ids are given out in order, so the alerts of a few
/// minutes are a few runs whatever their number).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdRanges(Vec<(i64, i64)>);

impl IdRanges {
    pub fn from_ids(ids: impl IntoIterator<Item = i64>) -> IdRanges {
        let mut ids: Vec<i64> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for id in ids {
            match runs.last_mut() {
                Some((_, b)) if *b + 1 == id => *b = id,
                _ => runs.push((id, id)),
            }
        }
        IdRanges(runs)
    }

    pub fn contains(&self, id: i64) -> bool {
        let i = self.0.partition_point(|(_, b)| *b < id);
        self.0.get(i).is_some_and(|(a, _)| *a <= id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many ids the runs hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(a, b)| (b - a) as u64 + 1).sum()
    }

    /// `3-5,9,11-12`; None for anything else, runs out of order or overlapping included.
    pub fn parse(s: &str) -> Option<IdRanges> {
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for part in s.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
            if b < a || runs.last().is_some_and(|(_, last)| a <= *last + 1) {
                return None;
            }
            runs.push((a, b));
        }
        Some(IdRanges(runs))
    }
}

impl fmt::Display for IdRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// Where the alerts the job read end (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMark {
    pub from: OffsetDateTime,
    pub seen: IdRanges,
    /// Kept while reporting is off.
    pub paused: bool,
}

/// One alert a run read, as the next [`AlertMark`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertRead {
    pub id: i64,
    /// `createdAt`.
    pub created: OffsetDateTime,
    /// Dealt with: in the last mark's `seen`, or reported (or found not the job's) this run.
    pub settled: bool,
}

impl AlertMark {
    /// Reading starts at `from`, nothing dealt with yet.
    pub fn starting_at(from: OffsetDateTime) -> AlertMark {
        AlertMark {
            from,
            seen: IdRanges::default(),
            paused: false,
        }
    }

    /// Where a run that reports starts, given Last Modified: this mark, or after a pause the
    /// later of it and Last Modified.
    pub fn resumed(&self, last_modified: OffsetDateTime) -> AlertMark {
        AlertMark {
            from: if self.paused {
                self.from.max(last_modified)
            } else {
                self.from
            },
            seen: self.seen.clone(),
            paused: false,
        }
    }

    /// The same mark, kept while reporting is off.
    pub fn paused(&self) -> AlertMark {
        AlertMark {
            paused: true,
            ..self.clone()
        }
    }

    /// Reads the value results.tc carried; None when it is not one (written by the app, so a
    /// damaged one only means reporting starts afresh).
    pub fn parse(s: &str) -> Option<AlertMark> {
        let mut words = s.split_whitespace();
        if words.next()? != "from" {
            return None;
        }
        let from = OffsetDateTime::parse(words.next()?, &Rfc3339).ok()?;
        let mut rest: Vec<&str> = words.collect();
        let paused = rest.last() == Some(&"off");
        if paused {
            rest.pop();
        }
        let seen = match rest[..] {
            [] => IdRanges::default(),
            ["seen", list] => IdRanges::parse(list)?,
            _ => return None,
        };
        Some(AlertMark { from, seen, paused })
    }

    /// The value for results.tc.
    pub fn render(&self) -> String {
        let from = self
            .from
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default();
        let mut out = format!("from {from}");
        if !self.seen.is_empty() {
            out.push_str(&format!(" seen {}", self.seen));
        }
        if self.paused {
            out.push_str(" off");
        }
        out
    }

    /// The mark after a run that read every alert stored since `self.from`: `from` moves up to
    /// [`ALERT_OVERLAP`] behind the newest alert read, never past an alert not dealt with, and
    /// never back; `seen` keeps the dealt-with alerts from there on.
    pub fn next(&self, read: &[AlertRead]) -> AlertMark {
        let Some(newest) = read.iter().map(|a| a.created).max() else {
            return AlertMark::starting_at(self.from);
        };
        let mut from = newest - ALERT_OVERLAP;
        if let Some(oldest_open) = read.iter().filter(|a| !a.settled).map(|a| a.created).min() {
            from = from.min(oldest_open);
        }
        let from = from.max(self.from);
        AlertMark {
            from,
            seen: IdRanges::from_ids(
                read.iter()
                    .filter(|a| a.settled && a.created >= from)
                    .map(|a| a.id),
            ),
            paused: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_alert_mark_reads_back_what_it_writes() {
        let mark = AlertMark {
            from: datetime!(2026-11-28 12:00:00.123 UTC),
            seen: IdRanges::from_ids([12, 3, 4, 5, 9, 11, 4]),
            paused: false,
        };
        let text = mark.render();
        assert_eq!(text, "from 2026-11-28T12:00:00.123Z seen 3-5,9,11-12");
        assert_eq!(AlertMark::parse(&text), Some(mark.clone()));
        assert_eq!(mark.seen.count(), 6);
        assert!(mark.seen.contains(4) && mark.seen.contains(12) && mark.seen.contains(9));
        assert!(!mark.seen.contains(2) && !mark.seen.contains(10) && !mark.seen.contains(13));
        let bare = AlertMark::starting_at(datetime!(2026-11-28 12:00 UTC));
        assert_eq!(bare.render(), "from 2026-11-28T12:00:00Z");
        assert_eq!(AlertMark::parse(&bare.render()), Some(bare));
        for bad in [
            "",
            "since x",
            "from yesterday",
            "from start",
            "from 2026-11-28T12:00:00Z seen 5-3",
            "from 2026-11-28T12:00:00Z seen 5,4",
            "from 2026-11-28T12:00:00Z seen 3-5,5",
            "from 2026-11-28T12:00:00Z seen",
            "from 2026-11-28T12:00:00Z seen 1 2",
        ] {
            assert_eq!(AlertMark::parse(bad), None, "{bad}");
        }
        // Kept while reporting is off; turned on again, from the later of it and Last Modified.
        let off = mark.paused();
        assert_eq!(off.render(), format!("{text} off"));
        assert_eq!(AlertMark::parse(&off.render()), Some(off.clone()));
        let later = datetime!(2026-11-28 13:00 UTC);
        let back = off.resumed(later);
        assert_eq!(
            (back.from, back.seen.clone(), back.paused),
            (later, mark.seen.clone(), false)
        );
        assert_eq!(off.resumed(datetime!(2026-11-28 11:00 UTC)).from, mark.from);
        assert_eq!(
            mark.resumed(later),
            mark,
            "a mark in use is not moved by Last Modified"
        );
        assert_eq!(AlertMark::parse("from 2026-11-28T12:00:00Z off off"), None);
        // A run of ten million ids is a few bytes, in results.tc and in memory.
        let wide = IdRanges::parse("1-10000000").unwrap();
        assert_eq!((wide.count(), wide.contains(5_000_000)), (10_000_000, true));
    }

    #[test]
    fn the_alert_mark_moves_only_past_what_was_dealt_with() {
        let t = datetime!(2026-11-28 12:00:00 UTC);
        let at = |s: i64| t + time::Duration::seconds(s);
        let read = |id, s, settled| AlertRead {
            id,
            created: at(s),
            settled,
        };
        let ids = |m: &AlertMark| -> Vec<i64> { (0..20).filter(|i| m.seen.contains(*i)).collect() };
        let start = AlertMark::starting_at(at(-1000));
        // From the overlap behind the newest, everything then dealt with seen.
        let first = start.next(&[read(1, -900, true), read(2, 0, true), read(3, -60, true)]);
        assert_eq!((first.from, ids(&first)), (at(-300), vec![2, 3]));
        assert_eq!(start.next(&[]), start);
        // One write failed: from stays at it, and the alerts after it dealt with stay seen.
        let next = first.next(&[
            read(2, 0, true),
            read(3, -60, true),
            read(4, 600, true),
            read(5, 200, false),
            read(6, 900, true),
        ]);
        assert_eq!((next.from, ids(&next)), (at(200), vec![4, 6]));
        // Never back behind the last from; a read of nothing keeps it.
        let quiet = next.next(&[read(6, 900, true)]);
        assert_eq!((quiet.from, ids(&quiet)), (at(600), vec![6]));
        let gone = quiet.next(&[]);
        assert_eq!((gone.from, ids(&gone)), (at(600), vec![]));
        // Two alerts of one instant, one dealt with: the other is read again next time.
        let tie = gone.next(&[read(7, 1000, true), read(8, 1000, false)]);
        assert_eq!((tie.from, ids(&tie)), (at(700), vec![7]));
        let late = tie.next(&[
            read(7, 1000, true),
            read(8, 1000, true),
            read(9, 1001, true),
        ]);
        assert_eq!((late.from, ids(&late)), (at(701), vec![7, 8, 9]));
    }
}
