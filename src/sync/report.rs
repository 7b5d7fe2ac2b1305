//! What a run reports: its counters (Tally), why it stopped early, what became of the deploy,
//! and the end of a run that turns both layouts' results into them, the deploy and the
//! checkpoint keys.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use crate::words::counted;

use super::checkpoint::{LabelsEnd, RunEnd};
use super::deploy;
use super::drive::Results;
use super::lists::Unread;
use super::source::Met;
use super::Run;

/// What the planning counted itself, in either layout; in a dry run also the writes it would
/// have sent.
#[derive(Debug, Default, Clone)]
pub(super) struct Counts {
    pub matched: u64,
    /// Matched indicators whose identity the pull had met already (one document serves both).
    pub repeats: u64,
    pub unchanged: u64,
    pub skipped_invalid: u64,
    pub dropped_other_types: u64,
    pub would_create: u64,
    pub would_update: u64,
    pub would_remove: u64,
    pub would_relabel: u64,
    /// Not sent: unsafe, or on the Never Send list.
    pub blocked: u64,
    /// Not sent: beyond Maximum Indicators.
    pub over_cap: u64,
    /// Not sent: on ThreatConnect's exclusion lists, by list.
    pub on_lists: BTreeMap<String, u64>,
    /// Not sent: past their expiry.
    pub expired: u64,
    /// Removals the mass-removal guard held back.
    pub held_back: u64,
    /// Documents this run sends to be created, dry or not (the guard's share counts them).
    pub creates: u64,
    /// Documents this job did not make, adopted (taking the source over).
    pub adopted: u64,
    /// Indicators TC returned that the job's filters leave out, by filter.
    pub excluded: BTreeMap<&'static str, u64>,
    /// Removals planned, by reason.
    pub removals: BTreeMap<Cow<'static, str>, u64>,
}

/// How the pull ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PullEnd {
    pub complete: bool,
    pub stop: Option<Stop>,
}

/// Counters of one run, reported in message.tc and the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Indicators received from TC that qualified (before rendering).
    pub matched: u64,
    /// Documents created.
    pub created: u64,
    /// Documents replaced because their content changed.
    pub updated: u64,
    /// Documents removed (no longer qualifying, deleted in TC, duplicates, unidentifiable).
    pub removed: u64,
    /// Documents whose labels alone changed.
    pub relabelled: u64,
    /// Indicators whose document was already identical.
    pub unchanged: u64,
    /// Indicators skipped because their value is invalid.
    pub skipped_invalid: u64,
    /// Indicators of types this app does not send (user TQL), not sent.
    pub dropped_other_types: u64,
    /// Creates or updates that failed.
    pub failed_writes: u64,
    /// Removals that failed.
    pub failed_removals: u64,
    /// Indicators not sent because a safety rail blocks them (unsafe, or Never Send).
    pub blocked: u64,
    /// Indicators not sent because of Maximum Indicators.
    pub over_cap: u64,
    /// Indicators not sent because ThreatConnect's exclusion lists exclude them.
    pub on_exclusion_lists: u64,
    /// Indicators not sent because their expiry has passed.
    pub expired: u64,
    /// Removals the mass-removal guard held back.
    pub held_back: u64,
    /// Documents this job did not make, adopted this run (taking the source over).
    pub adopted: u64,
    /// Documents this job did not make, left alone (not taking the source over).
    pub foreign_left: u64,
    /// The job's documents Threat Response has disabled (noisy intel), as listed.
    pub disabled: u64,
    /// Indicators in the disabled grouped documents.
    pub disabled_grouped_indicators: u64,
}

impl Tally {
    pub(super) fn new(counts: &Counts, results: &Results) -> Tally {
        // Grouped, a member that left for a document of another label set is created there:
        // one indicator, counted once, as updated.
        let moved = results.moved.min(results.created);
        Tally {
            matched: counts.matched,
            created: results.created - moved + counts.would_create,
            updated: results.updated + moved + counts.would_update,
            removed: results.removed + counts.would_remove,
            relabelled: results.relabelled + counts.would_relabel,
            unchanged: counts.unchanged + results.unchanged,
            skipped_invalid: counts.skipped_invalid,
            dropped_other_types: counts.dropped_other_types,
            failed_writes: results.failed_writes,
            failed_removals: results.failed_removals,
            blocked: counts.blocked,
            over_cap: counts.over_cap,
            on_exclusion_lists: counts.on_lists.values().sum(),
            expired: counts.expired,
            held_back: counts.held_back,
            adopted: counts.adopted,
            foreign_left: 0,
            disabled: 0,
            disabled_grouped_indicators: 0,
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} matched, {} created, {} updated, {} removed, {} relabelled, {} unchanged, {} skipped (invalid), {} not sent (type not Address/File/Host), {} blocked (unsafe or Never Send), {} on TC exclusion lists, {} expired, {} over Maximum Indicators, {} removals held back, {} writes and {} removals failed",
            self.matched,
            self.created,
            self.updated,
            self.removed,
            self.relabelled,
            self.unchanged,
            self.skipped_invalid,
            self.dropped_other_types,
            self.blocked,
            self.on_exclusion_lists,
            self.expired,
            self.over_cap,
            self.held_back,
            self.failed_writes,
            self.failed_removals
        )
    }
}

/// Why a run stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The TC pull failed after some pages, or met a record it cannot read.
    Pull(String),
    /// Tanium writes kept failing, so the run stopped sending them.
    TaniumDown,
    /// Tanium refused a write for a missing permission (the error, which names it), so the
    /// run stopped sending them.
    Forbidden(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Pull(why) => write!(f, "ThreatConnect pull incomplete (nothing removed): {why}"),
            Stop::TaniumDown => f.write_str("stopped early: Tanium writes kept failing"),
            Stop::Forbidden(e) => f.write_str(e),
        }
    }
}

/// What became of the intel deploy this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deploy {
    /// Nothing changed and no deploy was owed (or a dry run).
    NotNeeded,
    /// Started (4.x), or not a step of this server (3.x deploys on its own): `started` says.
    Done { started: bool },
    /// A deploy was already running (the job's last one, started `since`, or one the intel
    /// status reports); starting another would not help: owed to the next run.
    AlreadyRunning { since: Option<String> },
    /// Tanium refused the deploy with 400, what it answers while another deploy runs: owed.
    Refused,
    /// Deploy Intel is off: the intel waits for the admin's own deploy.
    Disabled,
    /// The deploy failed: written intel may not reach endpoints until one works.
    Failed(String),
}

impl Deploy {
    /// Whether the next run must deploy even if it changes nothing.
    pub fn owed(&self) -> bool {
        matches!(
            self,
            Deploy::AlreadyRunning { .. } | Deploy::Refused | Deploy::Disabled | Deploy::Failed(_)
        )
    }
}

/// Result of a run: what `job` turns into message.tc, results.tc and the exit code.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Counters.
    pub tally: Tally,
    /// True when this run compared the whole match set with the source.
    pub full_reconcile: bool,
    /// Whether every removal candidate was examined (false when TC failed mid-way).
    pub removals_complete: bool,
    /// Whether the TC pull finished.
    pub pull_complete: bool,
    /// Why the run stopped before the end.
    pub stop: Option<Stop>,
    /// The first few failures, for the log and message.
    pub errors: Vec<String>,
    /// What became of the intel deploy.
    pub deploy: Deploy,
    /// What became of the last deploy the job started before this run, when it asked.
    pub last_deploy: Option<crate::tanium::TaskState>,
    /// How the run ended for the checkpoint (None in a dry run).
    pub end: Option<RunEnd>,
    /// Tanium source name and id.
    pub source: (String, Option<i64>),
    /// Documents the source holds after the run (would hold, in a dry run).
    pub source_docs: u64,
    /// Indicators those documents hold, when Indicators per Intel Document groups them (None:
    /// one document per indicator).
    pub grouped_indicators: Option<u64>,
    /// Documents of the other layout retired because their indicators have documents of this
    /// one now: single ones in a grouped run, grouped ones otherwise.
    pub replaced: u64,
    /// Why ThreatConnect's exclusion lists could not be read, when Honor Exclusion Lists is on
    /// and they could not.
    pub lists_unread: Option<Unread>,
}

impl SyncReport {
    /// True when something could not be delivered or removed.
    pub fn has_failures(&self) -> bool {
        self.tally.failed_writes > 0
            || self.tally.failed_removals > 0
            || self.tally.held_back > 0
            || !self.pull_complete
            || !self.removals_complete
            || matches!(self.deploy, Deploy::Failed(_))
            || self.lists_unread.is_some()
    }

    fn log_finished(&self, started: Instant) {
        log::info!(
            "run finished in {:.1} s: {}{}",
            started.elapsed().as_secs_f64(),
            self.tally,
            if self.deploy == (Deploy::Done { started: true }) {
                "; intel deployed"
            } else {
                ""
            }
        );
    }

    /// True when at least one document change went through (or nothing needed doing).
    pub fn delivered_anything(&self) -> bool {
        let t = &self.tally;
        t.created + t.updated + t.removed + t.relabelled + t.unchanged > 0
    }
}

/// How the planning part of a run ended, in either mode.
pub(super) struct Finished {
    pub pull: PullEnd,
    pub removals_complete: bool,
    pub counts: Counts,
    pub removal_error: Option<String>,
    pub label_error: Option<String>,
    pub results: Results,
    /// Documents the source holds after the run.
    pub docs_after: u64,
    /// Indicators those documents hold, when they are grouped.
    pub grouped_indicators: Option<u64>,
}

/// The counters, the deploy and the checkpoint of a run.
// The end of a run in order (label work, counters, deploy, checkpoint keys), each a call or a
// field of the report: split, the parts would only pass the same values around.
pub(super) fn report(run: &Run, met: Met, done: Finished, started: Instant) -> SyncReport {
    let Run {
        config,
        checkpoint,
        opts,
        tanium,
        source,
        full,
        lists,
        ..
    } = *run;
    let Finished {
        pull,
        removals_complete,
        counts,
        removal_error,
        label_error,
        mut results,
        docs_after,
        grouped_indicators,
    } = done;
    if let Some(e) = removal_error {
        results.note_error(e);
    }
    if let (Some(work), false) = (met.disabled_label, results.gave_up) {
        work.apply(tanium, opts.dry_run, &mut results);
    }
    // Documents the guard kept carry the labels they had: they are not settled.
    let settles = full.is_some() && pull.complete && counts.held_back == 0;
    let labels_end = settle_labels(label_error, settles, &mut results);
    let mut tally = Tally::new(&counts, &results);
    if !config.take_over_source {
        tally.foreign_left = met.foreign;
    }
    tally.disabled = met.disabled.docs;
    tally.disabled_grouped_indicators = met.disabled.grouped_indicators;
    log_counts(&counts, &tally);
    if opts.dry_run {
        print_plan_summary(&tally);
    }

    // Once if anything changed, or when an earlier run's deploy failed (its writes are not on
    // the endpoints yet).
    let deploy = if opts.dry_run {
        deploy::Step::none(checkpoint)
    } else {
        let needed = results.wrote_anything || checkpoint.deploy_owed;
        deploy::step(tanium, checkpoint, config.rails.deploy_intel, needed)
    };

    let pull_complete = pull.complete;
    let removals_complete = removals_complete && pull_complete;
    // What stopped the writes says more than the pull they cut short.
    let stop = match results.forbidden.take() {
        Some(e) => Some(Stop::Forbidden(e)),
        None if results.gave_up => Some(Stop::TaniumDown),
        None => pull.stop,
    };
    let report = SyncReport {
        full_reconcile: full.is_some(),
        removals_complete,
        pull_complete,
        stop,
        end: (!opts.dry_run).then_some(RunEnd {
            query_started: opts.now,
            oldest_undelivered: results.oldest_undelivered,
            pull_complete,
            full_reconcile: full.is_some(),
            removals_complete: removals_complete && tally.failed_removals == 0,
            deploy_owed: deploy.outcome.owed(),
            deploy_refusals: deploy.refusals,
            deploy_task: deploy.task,
            labels: labels_end,
            lists: lists.end(),
        }),
        deploy: deploy.outcome,
        last_deploy: deploy.last,
        errors: results.errors,
        source_docs: docs_after,
        grouped_indicators,
        replaced: results.replaced,
        lists_unread: lists.unread().cloned(),
        tally,
        source: (source.name.clone(), source.id),
    };
    report.log_finished(started);
    report
}

/// Whether every document's labels were brought to the rules this run: only a complete full
/// pull that held no removal back, without a label failure, says so. A label book that could not be opened is a failure.
fn settle_labels(
    error: Option<String>,
    complete_full_pull: bool,
    results: &mut Results,
) -> LabelsEnd {
    if let Some(e) = error {
        results.failed_writes += 1;
        results.note_error(e);
        LabelsEnd::Unsettled
    } else if complete_full_pull && results.failed_labels == 0 && !results.gave_up {
        LabelsEnd::Settled
    } else {
        LabelsEnd::Kept
    }
}

/// `name count, ...` of counts by name.
fn by<K: AsRef<str>>(m: &BTreeMap<K, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{} {v}", k.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What TC returned and where each went, in counts that add up: the matched ones split into
/// what became of them, the others by why they were not sent.
fn counts_line(counts: &Counts, tally: &Tally) -> String {
    let excluded: u64 = counts.excluded.values().sum();
    let listed: u64 = counts.on_lists.values().sum();
    let sent = counts.matched
        + excluded
        + counts.blocked
        + listed
        + counts.expired
        + counts.over_cap
        + counts.skipped_invalid;
    let mut matched = format!(
        "{} created, {} updated, {} unchanged",
        tally.created, tally.updated, tally.unchanged
    );
    if counts.repeats > 0 {
        matched.push_str(&format!(", {} met twice", counts.repeats));
    }
    let rest = counts
        .matched
        .saturating_sub(tally.created + tally.updated + tally.unchanged + counts.repeats);
    if rest > 0 {
        matched.push_str(&format!(", {rest} not written"));
    }
    let filters = if excluded > 0 {
        format!(" ({})", by(&counts.excluded))
    } else {
        String::new()
    };
    // The rails of ThreatConnect's own knowledge, said only when they left something out.
    let mut tc_rails = String::new();
    if listed > 0 {
        tc_rails.push_str(&format!(
            ", {listed} on TC exclusion lists ({})",
            by(&counts.on_lists)
        ));
    }
    if counts.expired > 0 {
        tc_rails.push_str(&format!(", {} expired", counts.expired));
    }
    format!(
        "ThreatConnect sent {}: {} matched ({matched}), {excluded} left out by the filters{filters}, {} blocked (unsafe or Never Send){tc_rails}, {} over Maximum Indicators, {} invalid values, {} of other types",
        counted(sent, "indicator"),
        counts.matched,
        counts.blocked,
        counts.over_cap,
        counts.skipped_invalid,
        counts.dropped_other_types
    )
}

/// What the run did, in counts that add up, and the removals by reason.
fn log_counts(counts: &Counts, tally: &Tally) {
    log::info!("{}", counts_line(counts, tally));
    let planned: u64 = counts.removals.values().sum();
    if planned > 0 {
        log::info!(
            "removals planned {planned} ({}); removed {}, failed {}, held back {}",
            by(&counts.removals),
            tally.removed,
            tally.failed_removals,
            tally.held_back
        );
    }
}

fn print_plan_summary(t: &Tally) {
    println!(
        "plan: {} to create, {} to update, {} to remove, {} to relabel; {} unchanged, {} skipped (invalid), {} not sent (other types)",
        t.created, t.updated, t.removed, t.relabelled, t.unchanged, t.skipped_invalid, t.dropped_other_types
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_line_says_only_what_happened() {
        let quiet = Counts {
            matched: 3,
            ..Counts::default()
        };
        let tally = Tally {
            created: 2,
            unchanged: 1,
            ..Tally::default()
        };
        assert_eq!(
            counts_line(&quiet, &tally),
            "ThreatConnect sent 3 indicators: 3 matched (2 created, 0 updated, 1 unchanged), 0 left out by the filters, 0 blocked (unsafe or Never Send), 0 over Maximum Indicators, 0 invalid values, 0 of other types"
        );
        let mut busy = Counts {
            matched: 6,
            repeats: 1,
            ..Counts::default()
        };
        busy.excluded.insert("Minimum Confidence Rating", 2);
        let line = counts_line(&busy, &tally);
        assert!(
            line.starts_with(
                "ThreatConnect sent 8 indicators: 6 matched (2 created, 0 updated, 1 unchanged, 1 met twice, 2 not written), 2 left out by the filters (Minimum Confidence Rating 2),"
            ),
            "{line}"
        );
        let one = Counts {
            matched: 1,
            ..Counts::default()
        };
        assert!(
            counts_line(&one, &Tally::default()).starts_with("ThreatConnect sent 1 indicator: ")
        );
    }
}
