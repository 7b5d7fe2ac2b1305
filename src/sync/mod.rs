//! The sync: read the app's Tanium source, pull what changed in ThreatConnect, create / update /
//! remove intel documents, deploy once, and say where the next run starts.
//!
//! Only this module knows the order of the steps (`run`); each stage has its own file: the
//! source index, planning one indicator, the planner that walks the pull, the write pool,
//! removals, labels and the checkpoint. `tc`, `tanium` and `intel` know nothing of each other;
//! this module maps between them.

pub mod checkpoint;
mod deploy;
mod grouped;
mod health;
mod index;
mod labels;
mod layout;

mod plan;
mod planner;
mod pool;
mod removals;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use time::OffsetDateTime;

use crate::config::JobConfig;
use crate::error::Result;
use crate::intel;
use crate::tanium::client::TaniumClient;
use crate::tc::client::TcClient;
use crate::tc::model::IndicatorType;
use crate::tc::tql;
use crate::words::counted;

pub use checkpoint::{Checkpoint, LabelsEnd, RunEnd};
use index::SourceIndex;
use labels::LabelBook;
use plan::Selection;
use planner::{Counts, Planner, PullEnd};
use pool::Results;

/// What the caller asks of a run besides the job config.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Read both sides, write nothing to Tanium, print the plan.
    pub dry_run: bool,
    /// Where a dry run writes the rendered documents.
    pub out_dir: Option<PathBuf>,
    /// The run's start time (injected so tests can move the clock).
    pub now: OffsetDateTime,
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
    fn new(counts: &Counts, results: &Results) -> Tally {
        Tally {
            matched: counts.matched,
            created: results.created + counts.would_create,
            updated: results.updated + counts.would_update,
            removed: results.removed + counts.would_remove,
            relabelled: results.relabelled + counts.would_relabel,
            unchanged: counts.unchanged + results.unchanged,
            skipped_invalid: counts.skipped_invalid,
            dropped_other_types: counts.dropped_other_types,
            failed_writes: results.failed_writes,
            failed_removals: results.failed_removals,
            blocked: counts.blocked,
            over_cap: counts.over_cap,
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
            "{} matched, {} created, {} updated, {} removed, {} relabelled, {} unchanged, {} skipped (invalid), {} not sent (type not Address/File/Host), {} blocked (unsafe or Never Send), {} over Maximum Indicators, {} removals held back, {} writes and {} removals failed",
            self.matched,
            self.created,
            self.updated,
            self.removed,
            self.relabelled,
            self.unchanged,
            self.skipped_invalid,
            self.dropped_other_types,
            self.blocked,
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

/// The app's source, as this run found it.
struct Source {
    name: String,
    id: Option<i64>,
    created: bool,
}

/// Refuses, before anything is written, to take over one of Threat Response's own sources.
pub fn refuse_built_in_source(config: &JobConfig, tanium: &TaniumClient) -> Result<()> {
    if !config.take_over_source {
        return Ok(());
    }
    let found = tanium
        .find_source(&config.tanium.source_name)?
        .map(|s| s.id);
    built_in_refusal(config, found).map_or(Ok(()), Err)
}

fn built_in_refusal(config: &JobConfig, found: Option<i64>) -> Option<crate::error::Error> {
    let name = &config.tanium.source_name;
    let what =
        crate::tanium::model::built_in_source(found, name).filter(|_| config.take_over_source)?;
    Some(crate::error::Error::Param(format!(
        "{} must be off for {} \"{name}\": it is {what} (id {}), whose documents are not the job's to replace; nothing was changed: give the job a source of its own",
        crate::param_names::TAKE_OVER_SOURCE.label,
        crate::param_names::TANIUM_SOURCE.label,
        found.map_or("?".to_string(), |id| id.to_string()),
    )))
}

/// Finds the source (a dry run never creates it) and lists what it holds.
fn open_source(
    config: &JobConfig,
    opts: &SyncOptions,
    tanium: &TaniumClient,
) -> Result<(Source, SourceIndex)> {
    let name = config.tanium.source_name.clone();
    let found = tanium.find_source(&name)?.map(|s| s.id);
    if let Some(e) = built_in_refusal(config, found) {
        return Err(e);
    }
    let (id, created) = match found {
        Some(id) => (Some(id), false),
        None if opts.dry_run => (None, false),
        // (the client logs the creation once, and only when it did create it)
        None => (Some(tanium.find_or_create_source(&name)?.id), true),
    };
    let mut index = SourceIndex::default();
    if let Some(id) = id {
        // Listing pages do not depend on each other: they use the write pool's width.
        tanium.list_docs_parallel(id, config.workers, &mut |doc| {
            index.add(doc, config.intel_format)
        })?;
    }
    log::info!(
        "Tanium source \"{name}\" holds {} ({} identified, {}, {} unidentified)",
        counted(index.docs, "document"),
        index.map.len(),
        counted(index.duplicates.len() as u64, "duplicate"),
        index.unidentified.len()
    );
    Ok((Source { name, id, created }, index))
}

/// Taking the source over: reads each document this job did not make, and keeps those that
/// cover exactly one indicator (and no other document covers the same) for adoption.
fn scan_foreign(tanium: &TaniumClient, index: &mut SourceIndex) {
    let mut found: BTreeMap<(IndicatorType, String), Option<(i64, String)>> = BTreeMap::new();
    let mut unread = BTreeSet::new();
    for (doc_id, name, root) in &index.unidentified {
        let covered = match tanium.get_doc(*doc_id) {
            Ok(d) => d
                .and_then(|d| d.contents)
                .and_then(|c| intel::foreign::covered(&c)),
            Err(e) => {
                log::warn!("could not read document {doc_id} \"{name}\", which this job did not make: it stays until a run can read it ({e})");
                unread.insert(*doc_id);
                None
            }
        };
        if let (Some(key), false) = (covered, root.is_empty()) {
            found
                .entry(key)
                .and_modify(|v| *v = None)
                .or_insert_with(|| Some((*doc_id, root.clone())));
        }
    }
    index.unread = unread;
    index.adoptable = found
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    log::info!(
        "taking the source over: {} this job did not make; {} cover exactly one indicator each and are kept for it if the job sends it, the rest go",
        counted(index.unidentified.len() as u64, "document"),
        index.adoptable.len()
    );
}

/// Why this run compares the whole match set with the source (None: incremental).
fn full_reconcile_reason(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    source: &Source,
    index: &SourceIndex,
    now: OffsetDateTime,
) -> Option<&'static str> {
    if (index.map.is_empty() && index.groups.is_empty()) || source.created {
        return Some("the source is empty");
    }
    // Only a full reconcile can tell which of them cover an indicator the job sends, and the
    // admin who turns the setting on expects it to act now, not at the next interval.
    if config.take_over_source && !index.unidentified.is_empty() {
        return Some("Take Over Source is on and the source holds documents this job did not make");
    }
    let layout = if config.per_document > 1 {
        grouped::full_reason(index, config.intel_format)
    } else if !index.groups.is_empty() {
        Some("Indicators per Intel Document changed: grouped documents become single ones")
    } else {
        None
    };
    if layout.is_some() {
        return layout;
    }
    let reason = checkpoint.full_reconcile_reason(
        now,
        config.reconcile_interval,
        &config.selection_fingerprint(),
    );
    // A changed Intel Format must reach every document, not only the ones TC modified since.
    let reason = match reason {
        Some("the job's filters changed") => reason,
        _ if index.other_format > 0 => Some("the intel format changed"),
        _ => reason,
    };
    // Only a full pull says every indicator's tags and score, so a change of the label rules
    // costs one; the content is compared as always (no document is uploaded again for it).
    reason.or_else(|| checkpoint.label_pass_reason(&config.labels))
}

/// The job as this run applies it, in one line of the words the admin set it with.
fn describe_job(config: &JobConfig) -> String {
    let f = &config.filters;
    let list = |v: &[String], none: &str| {
        if v.is_empty() {
            none.to_string()
        } else {
            v.join(", ")
        }
    };
    let selection = match tql::user_tql(f) {
        Some(t) => format!("TQL {t} (replaces every other filter)"),
        None => {
            let types: Vec<&str> = f.types.iter().map(|t| t.as_str()).collect();
            let min = |v: Option<u32>| v.map_or("none".to_string(), |n| n.to_string());
            format!(
                "Indicator Types {}; Owners {}; Include Tags {}; Exclude Tags {}; Minimum ThreatAssess Score {}, Confidence {}, Rating {}; Maximum False Positives {}",
                types.join(", "),
                list(&f.owners, "all the Api User can read"),
                list(&f.include_tags, "none"),
                list(&f.exclude_tags, "none"),
                min(f.min_threatassess_score),
                min(f.min_confidence),
                min(f.min_rating),
                min(f.max_false_positives)
            )
        }
    };
    let r = &config.rails;
    format!(
        "job: {selection}; Intel Format {}; Block Unsafe Indicators {}; Never Send {}; Maximum Indicators {}; Maximum Indicator Age {}",
        config.intel_format,
        if r.guard.safeguards { "on" } else { "off" },
        list(&r.guard.never_send.canonical(), "none"),
        r.max_indicators.map_or("none".to_string(), |n| n.to_string()),
        r.max_indicator_age_days
            .map_or("none".to_string(), |d| format!("{d} days"))
    )
}

/// `name count, ...` of counts by name.
fn by(m: &BTreeMap<&str, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What TC returned and where each went, in counts that add up: the matched ones split into
/// what became of them, the others by why they were not sent.
fn counts_line(counts: &Counts, tally: &Tally) -> String {
    let excluded: u64 = counts.excluded.values().sum();
    let sent =
        counts.matched + excluded + counts.blocked + counts.over_cap + counts.skipped_invalid;
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
    format!(
        "ThreatConnect sent {}: {} matched ({matched}), {excluded} left out by the filters{filters}, {} blocked (unsafe or Never Send), {} over Maximum Indicators, {} invalid values, {} of other types",
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

fn log_mode(checkpoint: &Checkpoint, full: Option<&str>) {
    match checkpoint.horizon {
        Some(h) => log::info!(
            "job horizon: indicators last modified before {} are never sent",
            tql::format_time(h)
        ),
        None => log::info!("job horizon: none (the job ran before it kept one)"),
    }
    match full {
        Some(reason) => log::info!("full reconcile: {reason}"),
        None => log::info!(
            "incremental run: indicators modified after {}",
            tql::format_time(checkpoint.last_modified)
        ),
    }
}

/// What the run pulls (the floor under it: the horizon narrowed by the age window).
fn pull_window(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    now: OffsetDateTime,
    full: bool,
) -> (tql::Window, Option<OffsetDateTime>) {
    // The age window narrows the horizon: neither is ever pulled from behind.
    let age_floor = config
        .rails
        .max_indicator_age_days
        .map(|d| now - time::Duration::days(i64::from(d)));
    let floor = match (checkpoint.horizon, age_floor) {
        (Some(h), Some(a)) => Some(h.max(a)),
        (h, a) => h.or(a),
    };
    let window = tql::Window {
        after: (!full).then_some(checkpoint.last_modified),
        horizon: floor,
        until: None,
    };
    (window, floor)
}

/// The matching query a run sends, and the window it was built for.
#[derive(Debug, Clone)]
pub struct NextPull {
    pub tql: String,
    pub window: tql::Window,
    /// Why the run reconciles fully (None: incremental).
    pub full: Option<&'static str>,
}

/// For `check`: the matching query the next run sends, built as [`reconcile`] builds it. Full
/// when the source is missing or empty or the checkpoint says so; a change of layout or format,
/// which only the source's listing reveals, is not looked for (it would only drop the
/// incremental bound, never the horizon).
pub fn next_pull(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    source_empty: bool,
    now: OffsetDateTime,
) -> NextPull {
    let full = if source_empty {
        Some("the source is empty")
    } else {
        checkpoint
            .full_reconcile_reason(
                now,
                config.reconcile_interval,
                &config.selection_fingerprint(),
            )
            .or_else(|| checkpoint.label_pass_reason(&config.labels))
    };
    let (window, _) = pull_window(config, checkpoint, now, full.is_some());
    NextPull {
        tql: tql::build(&config.filters, &window),
        window,
        full,
    }
}

/// Pulls, plans and removes with `planner`; how the pull ended and whether every removal
/// candidate was examined.
fn reconcile(
    planner: &mut Planner,
    tc: &TcClient,
    index: &mut SourceIndex,
    checkpoint: &Checkpoint,
    full: bool,
) -> Result<(PullEnd, bool)> {
    let config = planner.config;
    let (window, floor) = pull_window(config, checkpoint, planner.opts.now, full);
    let tql = tql::build(&config.filters, &window);
    log::info!("{}", describe_job(config));
    log::info!(
        "matching query ({}): {tql}",
        if full {
            "every indicator the job selects"
        } else {
            "indicators modified since the last run"
        }
    );
    let mut sel = Selection {
        filters: &config.filters,
        format: config.intel_format,
        guard: &config.rails.guard,
        cutoff: None,
        cap: (!full).then_some(config.rails.max_indicators).flatten(),
    };
    if let (true, Some(cap)) = (full, config.rails.max_indicators) {
        sel.cutoff = planner.rank_cutoff(tc, &tql, &sel, cap)?;
    }
    let pull = planner.pull(tc, &tql, &sel, index)?;
    planner.count_other_types(tc, &window);
    if !full && !planner.broken() {
        planner.sweep_labels(index);
    }
    if !pull.complete || planner.broken() {
        return Ok((pull, false));
    }
    let mut removals_complete = true;
    if full {
        removals_complete &= planner.sweep(index, floor);
    } else {
        let window = tql::Window {
            after: Some(checkpoint.last_modified),
            horizon: floor,
            until: Some(planner.opts.now),
        };
        if let Err(e) = planner.incremental_removals(tc, index, checkpoint.last_modified, &window) {
            removals_complete = false;
            let msg = format!("could not check for removals: {e}");
            log::error!("{msg}");
            planner.removal_error = Some(msg);
        }
    }
    planner.remove_duplicates(index);
    // Held back, the removals must be found again: the next run reconciles fully.
    removals_complete &= planner.settle_removals(index.docs);
    Ok((pull, removals_complete))
}

fn print_plan_summary(t: &Tally) {
    println!(
        "plan: {} to create, {} to update, {} to remove, {} to relabel; {} unchanged, {} skipped (invalid), {} not sent (other types)",
        t.created, t.updated, t.removed, t.relabelled, t.unchanged, t.skipped_invalid, t.dropped_other_types
    );
}

/// Runs one sync with already-connected clients.
// The stages in order, one call each; what is left inline is the hand-over between them
// (counts, errors, the label outcome), which helpers would only pass around again.
pub fn run(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    opts: &SyncOptions,
    tc: &TcClient,
    tanium: &TaniumClient,
) -> Result<SyncReport> {
    let started = Instant::now();
    if let (true, Some(d)) = (opts.dry_run, &opts.out_dir) {
        std::fs::create_dir_all(d).map_err(|e| crate::error::Error::io(d, e))?;
    }
    let (source, mut index) = open_source(config, opts, tanium)?;
    let full = full_reconcile_reason(config, checkpoint, &source, &index, opts.now);
    log_mode(checkpoint, full);
    let foreign = meet_foreign(
        config,
        tanium,
        &mut index,
        full.is_some() && config.per_document == 1,
    );
    let met = Met {
        foreign,
        disabled: health::report(tanium, &index),
        disabled_label: health::plan_label(tanium, config.disabled_label.as_deref(), &mut index),
    };
    let book = LabelBook::open(
        tanium,
        &config.labels,
        checkpoint.managed(&config.labels),
        checkpoint.label_pass_reason(&config.labels).is_some(),
        opts.dry_run,
    );

    if config.per_document > 1 {
        let ended = grouped::reconcile(
            config,
            checkpoint,
            opts,
            tc,
            tanium,
            (&source.name, source.id),
            index,
            full.is_some(),
            book,
        )?;
        let done = Finished {
            pull: ended.pull,
            removals_complete: ended.removals_complete,
            counts: ended.counts,
            removal_error: ended.removal_error,
            label_error: ended.label_error,
            results: ended.totals.into_results(),
            docs_after: ended.docs_after,
            grouped_indicators: Some(ended.indicators_after),
        };
        return Ok(report(
            config, checkpoint, opts, tanium, source, full, met, done, started,
        ));
    }
    let plan_with = |pool: Option<&pool::Pool>| {
        let mut p = Planner {
            config,
            opts,
            tanium,
            pool,
            counts: Counts::default(),
            removal_error: None,
            removals: Vec::new(),
            labels: book,
        };
        let r = reconcile(&mut p, tc, &mut index, checkpoint, full.is_some());
        r.map(|r| (r, p.counts, p.removal_error, p.labels.error))
    };
    let (planned, mut results) = if opts.dry_run {
        (plan_with(None), Results::default())
    } else {
        pool::with_pool(tanium, source.id.unwrap_or(0), config.workers, |pool| {
            plan_with(Some(pool))
        })
    };
    let ((pull, removals_complete), counts, removal_error, label_error) = planned?;
    if pull.complete && removals_complete && results.failed_writes == 0 {
        retire_groups(tanium, &index, opts.dry_run, &mut results);
    }
    let docs_after = (index.docs + results.created + counts.would_create)
        .saturating_sub(results.removed + results.replaced + counts.would_remove);
    let done = Finished {
        pull,
        removals_complete,
        counts,
        removal_error,
        label_error,
        docs_after,
        grouped_indicators: None,
        results,
    };
    Ok(report(
        config, checkpoint, opts, tanium, source, full, met, done, started,
    ))
}

/// Switching back to one document per indicator: once every indicator has its own document,
/// the grouped documents go.
fn retire_groups(tanium: &TaniumClient, index: &SourceIndex, dry_run: bool, results: &mut Results) {
    for g in &index.groups {
        let what = format!("grouped document {} \"{}\"", g.doc_id, g.name);
        if dry_run {
            println!("remove {what}: its indicators have documents of their own now");
            results.replaced += 1;
            continue;
        }
        match tanium.delete_doc(g.doc_id) {
            Ok(()) => {
                results.replaced += 1;
                results.wrote_anything = true;
            }
            Err(e) => {
                results.failed_removals += 1;
                results.note_error(format!("could not remove {what}: {e}"));
            }
        }
    }
}

/// What the run met in the source besides its own current documents.
struct Met {
    /// Documents this job did not make.
    foreign: u64,
    disabled: health::DisabledCount,
    /// What Disabled Intel Label asks of the run (None: off).
    disabled_label: Option<health::LabelWork>,
}

/// How the planning part of a run ended, in either mode.
struct Finished {
    pull: PullEnd,
    removals_complete: bool,
    counts: Counts,
    removal_error: Option<String>,
    label_error: Option<String>,
    results: Results,
    /// Documents the source holds after the run.
    docs_after: u64,
    /// Indicators those documents hold, when they are grouped.
    grouped_indicators: Option<u64>,
}

/// The counters, the deploy and the checkpoint of a run.
#[allow(clippy::too_many_arguments)]
fn report(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    opts: &SyncOptions,
    tanium: &TaniumClient,
    source: Source,
    full: Option<&str>,
    met: Met,
    done: Finished,
    started: Instant,
) -> SyncReport {
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
    let labels_end = settle_labels(label_error, full.is_some() && pull.complete, &mut results);
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
        }),
        deploy: deploy.outcome,
        last_deploy: deploy.last,
        errors: results.errors,
        source_docs: docs_after,
        grouped_indicators,
        replaced: results.replaced,
        tally,
        source: (source.name, source.id),
    };
    report.log_finished(started);
    report
}

/// Documents in the source this job did not make: left alone unless the job takes the source
/// over, when a full reconcile reads them for what they cover. Their count.
fn meet_foreign(
    config: &JobConfig,
    tanium: &TaniumClient,
    index: &mut SourceIndex,
    full: bool,
) -> u64 {
    let foreign = index.unidentified.len() as u64;
    if foreign > 0 && !config.take_over_source {
        log::info!(
            "the source holds {} this job did not make: they are left alone (Take Over Source is off)",
            counted(foreign, "document")
        );
    } else if foreign > 0 && full {
        scan_foreign(tanium, index);
    }
    foreign
}

/// Whether every document's labels were brought to the rules this run: only a complete full
/// pull without a label failure says so. A label book that could not be opened is a failure.
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
