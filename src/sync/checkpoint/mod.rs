//! What a job carries from one run to the next: Last Modified, the job horizon, when the last
//! full reconcile finished, the filters' fingerprint, whether a deploy is owed, which label
//! rules the documents' labels follow, whether Tanium could delete the last run lease, what
//! ThreatConnect's exclusion lists excluded, and how far the Threat Response alerts were read
//! ([`AlertMark`]). This type alone reads those keys from the params and decides what goes back
//! to `results.tc`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::timestamp::{parse_last_modified, parse_time};
use crate::config::value::{boolean, shown, text, Problems};
use crate::detections::mark::AlertMark;
use crate::error::{Error, Result};
use crate::label_rules::{LabelRules, Managed};
use crate::param_names as pn;
use crate::params::RawParams;

/// Default of Last Modified when the job does not set it (the guide's "30 days ago").
pub const DEFAULT_LAST_MODIFIED: &str = "30 days ago";
/// How results.tc says the job has no horizon (it pulls whatever its filters select).
pub const HORIZON_NONE: &str = "none";
/// The label fingerprint of a run that could not read or make labels: it matches no rules,
/// not even none, so the next run looks at every document's labels.
pub const LABELS_UNSETTLED: &str = "unsettled";
/// The exclusion fingerprint of a run that could not read ThreatConnect's exclusion lists: it
/// matches no lists, so the first run that reads them reconciles fully.
pub const LISTS_UNREAD: &str = "unread";
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
    /// What ThreatConnect's exclusion lists excluded at the last run (see [`ListsEnd`]).
    pub exclusion_fingerprint: Option<String>,
    /// How far the alerts were read (None: reporting detections starts afresh).
    pub alerts: Option<AlertMark>,
}

/// Why the checkpoint asks for a full reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    FiltersChanged,
    /// What ThreatConnect's exclusion lists exclude changed, or a run could not read them.
    ExclusionListsChanged,
    NoRecord,
    /// Older than [`DELETED_RETENTION`].
    Stale,
    Interval,
}

impl std::fmt::Display for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Due::FiltersChanged => "the job's filters changed",
            Due::ExclusionListsChanged => {
                "ThreatConnect's exclusion lists changed (or the last run could not read them)"
            }
            Due::NoRecord => "no full reconcile on record",
            Due::Stale => STALE_CHECKPOINT,
            Due::Interval => "the reconcile interval has passed",
        })
    }
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

/// What a run made of ThreatConnect's exclusion lists, for Exclusion Fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListsEnd {
    /// Honor Exclusion Lists is off.
    Off,
    /// Read: the fingerprint of what they exclude.
    Read(u64),
    /// They could not be read: what the run sent may be on them.
    Unread,
}

impl ListsEnd {
    fn kept(self) -> String {
        match self {
            ListsEnd::Off => String::new(),
            ListsEnd::Read(f) => format!("{f:016x}"),
            ListsEnd::Unread => LISTS_UNREAD.to_string(),
        }
    }
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
    pub lists: ListsEnd,
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
        let last_modified = last_modified(raw, now, problems, notes)?;
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
            exclusion_fingerprint: text(raw, pn::EXCLUSION_FINGERPRINT).ok().flatten(),
            alerts: alert_mark(raw, notes),
        })
    }

    /// Whether what the exclusion lists exclude differs from the last run's (a run that could
    /// not read them counts as a difference); None: this run has no fingerprint (the rail is
    /// off, or the lists could not be read), and a job without one on record has nothing to
    /// compare (turning the rail on changes the filter fingerprint instead).
    pub fn exclusions_changed(&self, now: Option<u64>) -> bool {
        match (&self.exclusion_fingerprint, now) {
            (Some(kept), Some(now)) => *kept != ListsEnd::Read(now).kept(),
            _ => false,
        }
    }

    /// Whether this run must look at every document's labels (else the documents it meets
    /// are enough). Only a full pull says every indicator's tags and score.
    pub fn labels_changed(&self, rules: &LabelRules) -> bool {
        self.label_fingerprint.as_deref().unwrap_or("") != rules.fingerprint()
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
    pub fn due(&self, now: OffsetDateTime, interval: Duration, fingerprint: &str) -> Option<Due> {
        if self
            .filter_fingerprint
            .as_deref()
            .is_some_and(|f| f != fingerprint)
        {
            return Some(Due::FiltersChanged);
        }
        let stale = now - self.last_modified;
        match self.last_full_reconcile {
            None => Some(Due::NoRecord),
            Some(_) if stale.is_positive() && stale.unsigned_abs() > DELETED_RETENTION => {
                Some(Due::Stale)
            }
            Some(t) => {
                let age = now - t;
                (age.is_negative() || age.unsigned_abs() >= interval).then_some(Due::Interval)
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
            (pn::EXCLUSION_FINGERPRINT.name, Some(end.lists.kept())),
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
            "exclusion_fingerprint": self.exclusion_fingerprint,
            "alert_checkpoint": self.alerts.as_ref().map(AlertMark::render),
        })
    }
}

/// Last Modified, or its default when empty (said in `notes`).
fn last_modified(
    raw: &RawParams,
    now: OffsetDateTime,
    problems: &mut Problems,
    notes: &mut Vec<String>,
) -> Option<OffsetDateTime> {
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
    Some(last_modified)
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
mod tests;
