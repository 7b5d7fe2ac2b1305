//! What a job carries from one run to the next: Last Modified, the job horizon, when the last
//! full reconcile finished, the filters' fingerprint, whether a deploy is owed, which label
//! rules the documents' labels follow, whether Tanium could delete the last run lease, and how
//! far the Threat Response alerts were read ([`AlertMark`]). This type alone reads those keys
//! from the params and decides what goes back to `results.tc`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::timestamp::{parse_last_modified, parse_time};
use crate::config::value::{boolean, shown, text, Problems};
use crate::detections::mark::AlertMark;
use crate::error::{Error, Result};
use crate::labels::{LabelRules, Managed};
use crate::param_names as pn;
use crate::params::RawParams;

/// Default of Last Modified when the job does not set it (the guide's "30 days ago").
pub const DEFAULT_LAST_MODIFIED: &str = "30 days ago";
/// How results.tc says the job has no horizon (it pulls whatever its filters select).
pub const HORIZON_NONE: &str = "none";
/// The label fingerprint of a run that could not read or make labels: it matches no rules,
/// not even none, so the next run looks at every document's labels.
pub const LABELS_UNSETTLED: &str = "unsettled";
/// How Deploy Pending counts the runs in a row whose deploy Tanium refused (`refused 2`).
const REFUSED: &str = "refused";
/// How long ThreatConnect is taken to keep deleted-indicator records. Its system administrator
/// sets the real figure ("the number of days for which deleted Indicators are retained is
/// configured by your System Administrator"), which the job cannot read; a week is assumed.
/// A checkpoint older than this may have outlived the records of deletions since, so the next
/// run is a full reconcile.
pub const DELETED_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// The full-reconcile reason a checkpoint older than [`DELETED_RETENTION`] gives.
pub const STALE_CHECKPOINT: &str = "Last Modified is more than 7 days old (a paused job?), longer than ThreatConnect may keep the records of deleted indicators";
/// Overlap kept between runs, so clock skew and same-second updates are never missed.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The state a run starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Only indicators modified after this are pulled incrementally.
    pub last_modified: OffsetDateTime,
    /// The earliest Last Modified the job was given: no pull reaches further back, full
    /// reconciles included. None: unbounded (the job ran before it kept a horizon).
    pub horizon: Option<OffsetDateTime>,
    /// When the last full reconcile finished (None: never, or the next run must reconcile).
    pub last_full_reconcile: Option<OffsetDateTime>,
    /// The filters' fingerprint at the last successful run; a change forces a full reconcile.
    pub filter_fingerprint: Option<String>,
    /// The last run's deploy failed or was owed: deploy this run even if nothing changes.
    pub deploy_owed: bool,
    /// Runs in a row whose deploy Tanium refused with 400.
    pub deploy_refusals: u32,
    /// The last deploy the job started, not yet seen completed (its task id).
    pub deploy_task: Option<i64>,
    /// Label rules of earlier runs whose labels may still be on documents.
    pub managed_labels: BTreeSet<String>,
    /// The label rules every document's labels were last brought to (None: never).
    pub label_fingerprint: Option<String>,
    /// Tanium could not delete a run lease source (see `tanium::lease`).
    pub lease_deletes_failed: bool,
    /// How far the alerts were read (None: reporting detections starts afresh).
    pub alerts: Option<AlertMark>,
}

/// How far a run brought the documents' labels, for the label keys of results.tc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelsEnd {
    /// Every document's labels follow the current rules (a complete full reconcile without a
    /// label failure): earlier rules no longer matter.
    Settled,
    /// The run looked at the documents it met only: where every document stands is what the
    /// kept fingerprint says.
    Kept,
    /// Tanium's labels could not be read or made: the next run looks at every document's.
    Unsettled,
}

/// How a run ended, as far as the next run's starting point is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    /// When this run's TC query started.
    pub query_started: OffsetDateTime,
    /// The oldest lastModified among indicators whose document could not be written.
    pub oldest_undelivered: Option<OffsetDateTime>,
    /// The TC pull read every page.
    pub pull_complete: bool,
    /// This run was a full reconcile.
    pub full_reconcile: bool,
    /// Every removal candidate was examined and every removal went through.
    pub removals_complete: bool,
    /// This run's intel deploy did not happen (failed, one was running, or Deploy Intel is
    /// off): the next run deploys even if it changes nothing.
    pub deploy_owed: bool,
    /// Runs in a row, this one included, whose deploy Tanium refused with 400 (0: this run's
    /// was not refused).
    pub deploy_refusals: u32,
    /// The deploy task the next run asks about (one this run started, or one still running).
    pub deploy_task: Option<i64>,
    pub labels: LabelsEnd,
}

fn iso(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl Checkpoint {
    /// Reads the keys; a bad Last Modified (the user's param) is an error naming its label,
    /// damaged hidden params (written by the app itself) only become notes: they force a full
    /// reconcile or drop the horizon, they never stop the job.
    pub fn load(raw: &RawParams, now: OffsetDateTime) -> Result<(Checkpoint, Vec<String>)> {
        let mut problems = Problems::default();
        let mut notes = Vec::new();
        let checkpoint = Self::read(raw, now, &mut problems, &mut notes);
        match checkpoint {
            Some(c) if problems.is_empty() => Ok((c, notes)),
            _ => Err(Error::Param(problems.joined())),
        }
    }

    fn read(
        raw: &RawParams,
        now: OffsetDateTime,
        problems: &mut Problems,
        notes: &mut Vec<String>,
    ) -> Option<Checkpoint> {
        let given = text(raw, pn::LAST_MODIFIED);
        let defaulted = matches!(given, Ok(None));
        let last_modified = problems.take(
            given
                .map(|v| v.unwrap_or_else(|| DEFAULT_LAST_MODIFIED.to_string()))
                .and_then(|v| {
                    parse_last_modified(&v, now)
                        .map(Some)
                        .map_err(|e| format!("{} {e}", pn::LAST_MODIFIED.label))
                }),
        )?;
        if defaulted {
            notes.push(format!(
                "{} is empty: using the default, {DEFAULT_LAST_MODIFIED} ({})",
                pn::LAST_MODIFIED.label,
                iso(last_modified)
            ));
        }
        let mut hidden_time = |spec: pn::ParamSpec, consequence: &str| match text(raw, spec) {
            Ok(Some(s)) if s.eq_ignore_ascii_case(HORIZON_NONE) => Some(None),
            Ok(Some(s)) => match parse_time(&s, now) {
                Some(t) => Some(Some(t)),
                None => {
                    notes.push(format!(
                        "{} '{}' is not a time; {consequence}",
                        spec.name,
                        shown(&s)
                    ));
                    Some(None)
                }
            },
            _ => None,
        };
        let last_full_reconcile =
            hidden_time(pn::LAST_FULL_RECONCILE, "a full reconcile will run").flatten();
        let kept_horizon = hidden_time(pn::JOB_HORIZON, "the job keeps no horizon this run");
        // A job that ran before it kept a horizon (it has other hidden params) may hold
        // documents of indicators modified long ago: bounding it now would remove them.
        let ran_before = [
            pn::LAST_FULL_RECONCILE,
            pn::FILTER_FINGERPRINT,
            pn::DEPLOY_PENDING,
            pn::DEPLOY_TASK,
        ]
        .iter()
        .any(|p| raw.contains_key(p.name));
        let horizon = match kept_horizon {
            Some(Some(h)) => Some(h.min(last_modified)),
            Some(None) => None,
            None if ran_before => None,
            None => Some(last_modified),
        };
        let (deploy_owed, deploy_refusals) = deploy_pending(raw);
        Some(Checkpoint {
            last_modified,
            horizon,
            last_full_reconcile,
            filter_fingerprint: text(raw, pn::FILTER_FINGERPRINT).ok().flatten(),
            deploy_owed,
            deploy_refusals,
            // Written by the app itself; anything unreadable means "no task to ask about".
            deploy_task: text(raw, pn::DEPLOY_TASK)
                .ok()
                .flatten()
                .and_then(|t| t.trim().parse().ok())
                .filter(|t| *t > 0),
            managed_labels: managed_labels(raw, notes),
            label_fingerprint: text(raw, pn::LABEL_FINGERPRINT).ok().flatten(),
            lease_deletes_failed: boolean(
                raw,
                &[pn::RUN_LEASE_UNSUPPORTED.name],
                pn::RUN_LEASE_UNSUPPORTED.label,
                false,
            )
            .unwrap_or(false),
            alerts: alert_mark(raw, notes),
        })
    }

    /// Why this run must look at every document's labels (None: the documents it meets are
    /// enough). Only a full pull says every indicator's tags and score.
    pub fn label_pass_reason(&self, rules: &LabelRules) -> Option<&'static str> {
        (self.label_fingerprint.as_deref().unwrap_or("") != rules.fingerprint())
            .then_some("the label params changed")
    }

    /// The labels the job may add and remove: those of its current rules and of the rules of
    /// runs since every document's labels were last settled.
    pub fn managed(&self, rules: &LabelRules) -> Managed {
        let now = rules.tokens();
        Managed::from_tokens(self.managed_labels.iter().chain(now.iter()))
    }

    /// The label keys for results.tc.
    pub fn label_results(
        &self,
        end: &RunEnd,
        rules: &LabelRules,
    ) -> Vec<(&'static str, Option<String>)> {
        let now = rules.tokens();
        let (managed, fingerprint) = match end.labels {
            LabelsEnd::Settled => (now, rules.fingerprint()),
            kept => (
                self.managed_labels.union(&now).cloned().collect(),
                match kept {
                    LabelsEnd::Kept => self.label_fingerprint.clone().unwrap_or_default(),
                    _ => LABELS_UNSETTLED.to_string(),
                },
            ),
        };
        let managed: Vec<String> = managed.into_iter().collect();
        vec![
            (
                pn::MANAGED_LABELS.name,
                Some(serde_json::to_string(&managed).unwrap_or_default()),
            ),
            (pn::LABEL_FINGERPRINT.name, Some(fingerprint)),
        ]
    }

    /// Whether this run must compare the whole match set with the source, and why (None:
    /// an incremental run is enough).
    pub fn full_reconcile_reason(
        &self,
        now: OffsetDateTime,
        interval: Duration,
        fingerprint: &str,
    ) -> Option<&'static str> {
        if self
            .filter_fingerprint
            .as_deref()
            .is_some_and(|f| f != fingerprint)
        {
            return Some("the job's filters changed");
        }
        let stale = now - self.last_modified;
        match self.last_full_reconcile {
            None => Some("no full reconcile on record"),
            Some(_) if stale.is_positive() && stale.unsigned_abs() > DELETED_RETENTION => {
                Some(STALE_CHECKPOINT)
            }
            Some(t) => {
                let age = now - t;
                (age.is_negative() || age.unsigned_abs() >= interval)
                    .then_some("the reconcile interval has passed")
            }
        }
    }

    /// The new Last Modified: the query start minus the safety margin, never past an
    /// indicator that was not delivered, the old one when the pull did not finish (pages come
    /// in id order, so what was not reached may have any lastModified), and never behind the
    /// old one after a clean incremental run.
    pub fn next_last_modified(&self, end: &RunEnd) -> OffsetDateTime {
        let mut lm = end.query_started - SAFETY_MARGIN;
        if let Some(f) = end.oldest_undelivered {
            lm = lm.min(f - Duration::from_secs(1));
        }
        if !end.pull_complete {
            lm = lm.min(self.last_modified);
        }
        if !end.full_reconcile && end.oldest_undelivered.is_none() && end.pull_complete {
            lm = lm.max(self.last_modified);
        }
        lm
    }

    /// What goes to results.tc after a run that delivered something (None removes a key).
    pub fn results(
        &self,
        end: &RunEnd,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Vec<(&'static str, Option<String>)> {
        let mut out = vec![
            (
                pn::LAST_MODIFIED.name,
                Some(iso(self.next_last_modified(end))),
            ),
            (pn::FILTER_FINGERPRINT.name, Some(fingerprint.to_string())),
            (
                pn::JOB_HORIZON.name,
                Some(self.horizon.map_or_else(|| HORIZON_NONE.to_string(), iso)),
            ),
            // A failed deploy is owed by the next run even when that run changes nothing.
            (
                pn::DEPLOY_PENDING.name,
                Some(match (end.deploy_refusals, end.deploy_owed) {
                    (n @ 1.., _) => format!("{REFUSED} {n}"),
                    (0, true) => "true".to_string(),
                    (0, false) => String::new(),
                }),
            ),
            (
                pn::DEPLOY_TASK.name,
                Some(end.deploy_task.map(|t| t.to_string()).unwrap_or_default()),
            ),
        ];
        if end.full_reconcile && end.removals_complete && end.pull_complete {
            out.push((pn::LAST_FULL_RECONCILE.name, Some(iso(now))));
        } else if !end.removals_complete || !end.pull_complete {
            // Removal evidence may not recur: make the next run a full reconcile.
            out.push((pn::LAST_FULL_RECONCILE.name, Some(String::new())));
        }
        out
    }

    /// The run lease key for results.tc, from what a run learned of deleting sources
    /// (Some(true): Tanium deleted one; Some(false): it could not; None: nothing learned).
    pub fn lease_results(&self, deletes: Option<bool>) -> Vec<(&'static str, Option<String>)> {
        match deletes {
            Some(true) if self.lease_deletes_failed => {
                vec![(pn::RUN_LEASE_UNSUPPORTED.name, Some(String::new()))]
            }
            Some(false) => vec![(pn::RUN_LEASE_UNSUPPORTED.name, Some("true".into()))],
            _ => Vec::new(),
        }
    }

    /// The alert key for results.tc: `mark` when detections are reported (None keeps the
    /// last one); while they are not, the last one kept as paused (see `detections::mark`).
    pub fn alert_results(
        &self,
        on: bool,
        mark: Option<&AlertMark>,
    ) -> Vec<(&'static str, Option<String>)> {
        let key = pn::ALERT_CHECKPOINT.name;
        match (on, mark.or(self.alerts.as_ref())) {
            (true, Some(m)) => vec![(key, Some(m.render()))],
            (false, Some(m)) if !m.paused => vec![(key, Some(m.paused().render()))],
            _ => Vec::new(),
        }
    }

    /// The checkpoint as `--print-config` shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "last_modified": iso(self.last_modified),
            "horizon": self.horizon.map(iso),
            "last_full_reconcile": self.last_full_reconcile.map(iso),
            "filter_fingerprint": self.filter_fingerprint,
            "deploy_owed": self.deploy_owed,
            "deploy_refusals": self.deploy_refusals,
            "deploy_task": self.deploy_task,
            "managed_labels": self.managed_labels,
            "label_fingerprint": self.label_fingerprint,
            "run_lease_unsupported": self.lease_deletes_failed,
            "alert_checkpoint": self.alerts.as_ref().map(AlertMark::render),
        })
    }
}

/// Alert Checkpoint; damaged, only a note: reporting starts afresh from the newest alert.
fn alert_mark(raw: &RawParams, notes: &mut Vec<String>) -> Option<AlertMark> {
    let s = text(raw, pn::ALERT_CHECKPOINT).ok().flatten()?;
    let mark = AlertMark::parse(&s);
    if mark.is_none() {
        notes.push(format!(
            "{} '{}' is not an alert checkpoint; reporting detections starts afresh from Last Modified",
            pn::ALERT_CHECKPOINT.name,
            shown(&s)
        ));
    }
    mark
}

/// Deploy Pending: whether a deploy is owed, and after how many refused runs in a row
/// (`refused N`). Written by the app itself: anything unreadable means "no deploy owed".
fn deploy_pending(raw: &RawParams) -> (bool, u32) {
    let refused = text(raw, pn::DEPLOY_PENDING)
        .ok()
        .flatten()
        .and_then(|v| v.trim().strip_prefix(REFUSED)?.trim().parse::<u32>().ok());
    match refused {
        Some(n) => (true, n),
        None => (
            boolean(
                raw,
                &[pn::DEPLOY_PENDING.name],
                pn::DEPLOY_PENDING.label,
                false,
            )
            .unwrap_or(false),
            0,
        ),
    }
}

/// The rule tokens kept in Managed Labels (a JSON list); damaged, only a note: the labels of
/// earlier rules may then stay on documents, nothing else goes wrong.
fn managed_labels(raw: &RawParams, notes: &mut Vec<String>) -> BTreeSet<String> {
    let Ok(Some(s)) = text(raw, pn::MANAGED_LABELS) else {
        return BTreeSet::new();
    };
    match serde_json::from_str::<Vec<String>>(&s) {
        Ok(tokens) => tokens.into_iter().collect(),
        Err(_) => {
            notes.push(format!(
                "{} '{}' is not a list of label rules; labels earlier params gave may stay on documents",
                pn::MANAGED_LABELS.name,
                shown(&s)
            ));
            BTreeSet::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

    fn raw(pairs: &[(&str, &str)]) -> RawParams {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    }

    /// A Last Modified the admin gave (an empty one is a note of its own).
    const GIVEN: (&str, &str) = ("last_modified", "30 days ago");

    fn load(pairs: &[(&str, &str)]) -> (Checkpoint, Vec<String>) {
        Checkpoint::load(&raw(pairs), NOW).unwrap()
    }

    fn end() -> RunEnd {
        RunEnd {
            query_started: NOW,
            oldest_undelivered: None,
            pull_complete: true,
            full_reconcile: false,
            removals_complete: true,
            deploy_owed: false,
            deploy_refusals: 0,
            deploy_task: None,
            labels: LabelsEnd::Kept,
        }
    }

    #[test]
    fn a_first_run_starts_at_last_modified_and_takes_it_as_horizon() {
        let (c, notes) = load(&[]);
        assert_eq!(
            notes,
            ["Last Modified is empty: using the default, 30 days ago (2026-10-29T12:00:00Z)"]
        );
        assert_eq!(load(&[("last_modified", " ")]).1, notes);
        assert!(load(&[("last_modified", "30 days ago")]).1.is_empty());
        assert_eq!(c.last_modified, datetime!(2026-10-29 12:00:00 UTC));
        assert_eq!(c.horizon, Some(c.last_modified));
        assert_eq!(c.last_full_reconcile, None);
        assert!(!c.deploy_owed);
        for (bad, want) in [
            ("soon", "Last Modified must be a time such as"),
            ("yesterday", "Last Modified must be a time such as"),
            ("2099-01-01", "Last Modified is in the future"),
        ] {
            let e = Checkpoint::load(&raw(&[("last_modified", bad)]), NOW).unwrap_err();
            assert!(e.to_string().starts_with(want), "{e}");
        }
    }

    #[test]
    fn the_horizon_is_the_earliest_last_modified_ever_given() {
        let kept = [
            ("last_modified", "2026-11-20T00:00:00Z"),
            ("job_horizon", "2026-10-01T00:00:00Z"),
        ];
        assert_eq!(
            load(&kept).0.horizon,
            Some(datetime!(2026-10-01 00:00:00 UTC))
        );
        let earlier = [
            ("last_modified", "2026-09-01T00:00:00Z"),
            ("job_horizon", "2026-10-01T00:00:00Z"),
        ];
        assert_eq!(
            load(&earlier).0.horizon,
            Some(datetime!(2026-09-01 00:00:00 UTC))
        );
        // A job from before horizons: unbounded, and said so in results.tc.
        let old = [
            ("last_modified", "2026-11-20T00:00:00Z"),
            ("filter_fingerprint", "abc"),
        ];
        let (c, _) = load(&old);
        assert_eq!(c.horizon, None);
        let results = c.results(&end(), "abc", NOW);
        assert!(results.contains(&("job_horizon", Some("none".into()))));
        // A damaged horizon drops it for the run (never narrows what is sent) and says so.
        let (c, notes) = load(&[("job_horizon", "garbage"), GIVEN]);
        assert_eq!((c.horizon, notes.len()), (None, 1));
    }

    #[test]
    fn full_reconcile_when_filters_change_or_the_interval_passes() {
        let day = Duration::from_secs(86_400);
        let (c, _) = load(&[
            ("last_modified", "2026-11-28T06:00:00Z"),
            ("last_full_reconcile", "2026-11-28T00:00:00Z"),
            ("filter_fingerprint", "f1"),
        ]);
        assert_eq!(c.full_reconcile_reason(NOW, day, "f1"), None);
        assert_eq!(
            c.full_reconcile_reason(NOW, day, "f2"),
            Some("the job's filters changed")
        );
        assert_eq!(
            c.full_reconcile_reason(NOW, Duration::from_secs(3600), "f1"),
            Some("the reconcile interval has passed")
        );
        assert_eq!(
            c.full_reconcile_reason(NOW - time::Duration::days(1), day, "f1"),
            Some("the reconcile interval has passed"),
            "a clock that went backwards reconciles"
        );
        // Older than ThreatConnect may keep deletion records: full, whatever the interval.
        let month = Duration::from_secs(30 * 86_400);
        let (paused, _) = load(&[
            ("last_modified", "2026-11-20T11:00:00Z"),
            ("last_full_reconcile", "2026-11-27T00:00:00Z"),
            ("filter_fingerprint", "f1"),
        ]);
        assert_eq!(
            paused.full_reconcile_reason(NOW, month, "f1"),
            Some(STALE_CHECKPOINT)
        );
        let (week, _) = load(&[
            ("last_modified", "2026-11-21T13:00:00Z"),
            ("last_full_reconcile", "2026-11-27T00:00:00Z"),
            ("filter_fingerprint", "f1"),
        ]);
        assert_eq!(week.full_reconcile_reason(NOW, month, "f1"), None);
        let (damaged, notes) = load(&[("last_full_reconcile", "garbage"), GIVEN]);
        assert_eq!(notes.len(), 1);
        assert!(damaged.full_reconcile_reason(NOW, day, "f1").is_some());
    }

    #[test]
    fn last_modified_never_passes_what_was_not_delivered() {
        let (c, _) = load(&[("last_modified", "2026-11-28T10:00:00Z")]);
        let margin = NOW - SAFETY_MARGIN;
        assert_eq!(c.next_last_modified(&end()), margin);
        let failed = datetime!(2026-11-28 11:00:00 UTC);
        let e = RunEnd {
            oldest_undelivered: Some(failed),
            ..end()
        };
        assert_eq!(c.next_last_modified(&e), failed - Duration::from_secs(1));
        let stopped = RunEnd {
            pull_complete: false,
            ..end()
        };
        assert_eq!(c.next_last_modified(&stopped), c.last_modified);
        // A clean incremental run never moves it backwards (a clock behind TC's).
        let (ahead, _) = load(&[("last_modified", "2026-11-28T11:58:00Z")]);
        assert_eq!(ahead.next_last_modified(&end()), ahead.last_modified);
        let full = RunEnd {
            full_reconcile: true,
            ..end()
        };
        assert_eq!(ahead.next_last_modified(&full), margin);
    }

    #[test]
    fn results_force_a_full_reconcile_after_incomplete_evidence() {
        let (c, _) = load(&[]);
        let key = |r: &[(&str, Option<String>)]| {
            r.iter()
                .find(|(k, _)| *k == "last_full_reconcile")
                .map(|(_, v)| v.clone())
        };
        let full = RunEnd {
            full_reconcile: true,
            ..end()
        };
        assert_eq!(
            key(&c.results(&full, "f", NOW)),
            Some(Some("2026-11-28T12:00:00Z".into()))
        );
        assert_eq!(
            key(&c.results(&end(), "f", NOW)),
            None,
            "incremental: unchanged"
        );
        for broken in [
            RunEnd {
                removals_complete: false,
                ..full
            },
            RunEnd {
                pull_complete: false,
                ..end()
            },
        ] {
            assert_eq!(
                key(&c.results(&broken, "f", NOW)),
                Some(Some(String::new()))
            );
        }
        let owed = RunEnd {
            deploy_owed: true,
            ..end()
        };
        assert!(c
            .results(&owed, "f", NOW)
            .contains(&("deploy_pending", Some("true".into()))));
        let (k, _) = load(&[("deploy_pending", "true")]);
        assert!(k.deploy_owed);
    }

    #[test]
    fn deploy_refusals_and_the_deploy_task_are_carried_to_the_next_run() {
        let (c, _) = load(&[]);
        let value = |r: &[(&str, Option<String>)], k: &str| {
            r.iter().find(|(n, _)| *n == k).and_then(|(_, v)| v.clone())
        };
        let refused = RunEnd {
            deploy_owed: true,
            deploy_refusals: 2,
            deploy_task: Some(779),
            ..end()
        };
        let r = c.results(&refused, "f", NOW);
        assert_eq!(value(&r, "deploy_pending").as_deref(), Some("refused 2"));
        assert_eq!(value(&r, "deploy_task").as_deref(), Some("779"));
        let (k, notes) = load(&[
            ("deploy_pending", "refused 2"),
            ("deploy_task", "779"),
            GIVEN,
        ]);
        assert!(notes.is_empty());
        assert_eq!(
            (k.deploy_owed, k.deploy_refusals, k.deploy_task),
            (true, 2, Some(779))
        );
        let r = c.results(&end(), "f", NOW);
        assert_eq!(value(&r, "deploy_pending").as_deref(), Some(""));
        assert_eq!(value(&r, "deploy_task").as_deref(), Some(""));
        for damaged in ["refused", "refused x", "garbage"] {
            let (k, _) = load(&[("deploy_pending", damaged), ("deploy_task", "task 7")]);
            assert_eq!(
                (k.deploy_owed, k.deploy_refusals, k.deploy_task),
                (false, 0, None),
                "{damaged}"
            );
        }
    }

    fn rules(fixed: &[&str], tags: &[&str]) -> LabelRules {
        LabelRules {
            fixed: fixed.iter().map(|f| f.to_string()).collect(),
            tags: tags
                .iter()
                .map(|t| crate::labels::TagRule::parse(t).unwrap())
                .collect(),
            threatassess: false,
        }
    }

    fn label_keys(
        c: &Checkpoint,
        labels: LabelsEnd,
        r: &LabelRules,
    ) -> Vec<(&'static str, Option<String>)> {
        c.label_results(&RunEnd { labels, ..end() }, r)
    }

    #[test]
    fn the_run_lease_key_is_set_when_deletes_fail_and_cleared_once_one_works() {
        let (fresh, _) = load(&[]);
        assert!(!fresh.lease_deletes_failed);
        assert_eq!(fresh.lease_results(Some(true)), Vec::new());
        assert_eq!(fresh.lease_results(None), Vec::new());
        let set = vec![("run_lease_unsupported", Some("true".to_string()))];
        assert_eq!(fresh.lease_results(Some(false)), set);
        let (failed, _) = load(&[("run_lease_unsupported", "true")]);
        assert!(failed.lease_deletes_failed);
        assert_eq!(failed.lease_results(None), Vec::new());
        assert_eq!(failed.lease_results(Some(false)), set);
        assert_eq!(
            failed.lease_results(Some(true)),
            vec![("run_lease_unsupported", Some(String::new()))]
        );
        let (damaged, _) = load(&[("run_lease_unsupported", "perhaps")]);
        assert!(!damaged.lease_deletes_failed);
    }

    #[test]
    fn the_alert_checkpoint_is_carried_kept_paused_when_off_and_damage_is_a_note() {
        let (c, notes) = load(&[
            ("alert_checkpoint", "from 2026-11-28T12:00:00Z seen 7"),
            GIVEN,
        ]);
        assert!(notes.is_empty());
        assert_eq!(c.alerts.as_ref().map(|m| m.seen.count()), Some(1));
        let kept = vec![(
            "alert_checkpoint",
            Some("from 2026-11-28T12:00:00Z seen 7".into()),
        )];
        assert_eq!(c.alert_results(true, None), kept);
        let moved = AlertMark::parse("from 2026-11-28T13:00:00Z").unwrap();
        assert_eq!(
            c.alert_results(true, Some(&moved)),
            vec![("alert_checkpoint", Some("from 2026-11-28T13:00:00Z".into()))]
        );
        assert_eq!(
            c.alert_results(false, None),
            vec![(
                "alert_checkpoint",
                Some("from 2026-11-28T12:00:00Z seen 7 off".into())
            )]
        );
        let (paused, _) = load(&[("alert_checkpoint", "from 2026-11-28T12:00:00Z off"), GIVEN]);
        assert!(paused.alert_results(false, None).is_empty());
        let (damaged, notes) = load(&[("alert_checkpoint", "garbage"), GIVEN]);
        assert_eq!((damaged.alerts, notes.len()), (None, 1));
        assert!(
            notes[0].contains("starts afresh from Last Modified"),
            "{notes:?}"
        );
        let (off, _) = load(&[("alert_checkpoint", ""), GIVEN]);
        assert_eq!(off.alerts, None);
        assert!(off.alert_results(false, None).is_empty());
    }

    #[test]
    fn a_change_of_the_label_rules_asks_for_a_pass_until_one_settles_them() {
        let old = rules(&["ThreatConnect", "Old"], &["crime*"]);
        let new = rules(&["ThreatConnect"], &[]);
        // A job from before labels: its documents have none yet.
        let (first, _) = load(&[]);
        assert_eq!(
            first.label_pass_reason(&new),
            Some("the label params changed")
        );
        assert_eq!(first.label_pass_reason(&LabelRules::default()), None);
        let settled = label_keys(&first, LabelsEnd::Settled, &old);
        let carried: Vec<(&str, &str)> = settled
            .iter()
            .map(|(k, v)| (*k, v.as_deref().unwrap()))
            .collect();
        let (after, _) = load(&carried);
        assert_eq!(after.label_pass_reason(&old), None);
        // The params change: a pass, and the old rules stay managed until one settles.
        assert_eq!(
            after.label_pass_reason(&new),
            Some("the label params changed")
        );
        let m = after.managed(&new);
        assert!(m.manages("old") && m.manages("Crimeware") && m.manages("threatconnect"));
        assert!(!m.manages("Pilot"));
        let kept = label_keys(&after, LabelsEnd::Kept, &new);
        assert_eq!(
            kept[0].1.as_deref(),
            Some(r#"["label:old","label:threatconnect","tag:crime*"]"#)
        );
        assert_eq!(kept[1].1, Some(old.fingerprint()), "still owes the pass");
        let unsettled = label_keys(&after, LabelsEnd::Unsettled, &old);
        assert_eq!(unsettled[1].1.as_deref(), Some("unsettled"));
        let (after_unsettled, _) = load(&[("label_fingerprint", "unsettled")]);
        assert_eq!(
            after_unsettled.label_pass_reason(&LabelRules::default()),
            Some("the label params changed"),
            "even a job left without label params passes over the documents"
        );
        let done = label_keys(&after, LabelsEnd::Settled, &new);
        assert_eq!(done[0].1.as_deref(), Some(r#"["label:threatconnect"]"#));
        assert_eq!(done[1].1, Some(new.fingerprint()));
        // Damaged, it is a note; the current rules still manage their own labels.
        let (damaged, notes) = load(&[("managed_labels", "{oops"), GIVEN]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(damaged.managed(&new).manages("ThreatConnect"));
    }
}
