//! The grouped sync (Indicators per Intel Document above 1): indicators share documents, one
//! per bucket (see `layout`), and a run writes only the documents whose members changed.
//!
//! The listing says each document's bucket, member count and content digest (its name), so a
//! full reconcile compares the digest of the members each bucket should hold with it and reads
//! and writes only the buckets that differ; an incremental run reads the documents of the
//! buckets its changes fall in, applies them and writes those back. The pull is written to a
//! scratch file (one line a member) so a million members never sit in memory; a bucket's
//! members are read back when its document is written, a few buckets at a time.
//!
//! Never destructive on surprise: a document that cannot be read is left as it is (its bucket
//! is not written, nothing in it is removed, the checkpoint stays); documents are created
//! before the ones they replace go (splits, merges, a format or size switch), and those go
//! only when every bucket that took their members was written.

mod plan;
mod pull;
mod write;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use time::OffsetDateTime;

use crate::config::JobConfig;
use crate::error::Result;
use crate::intel::group::BucketKey;
use crate::intel::Format;
use crate::tanium::client::TaniumClient;
use crate::tc::client::TcClient;
use crate::words::counted;

use super::index::{Listed, SourceIndex};
use super::labels::{LabelBook, LabelPlan};
use super::layout::Layout;
use super::plan::Selection;
use super::planner::{Counts, Planner, PullEnd};
use super::pool::Results;
use super::{Checkpoint, SyncOptions};
use plan::{plan_full, plan_incremental, Plan};
use pull::{take, Gone, Pulled, Rec, Spill};
use write::{parallel, Ctx, Job, Outcome};

/// After this many jobs failed in a row Tanium is treated as down.
const FAILURES_TO_ABORT: u32 = 25;
/// Failures kept for the log summary and message.tc.
const KEPT_ERRORS: usize = 5;

/// Why the run must compare everything, from what the listing shows of a grouped source
/// (None: nothing of the kind).
pub(super) fn full_reason(index: &SourceIndex, format: Format) -> Option<&'static str> {
    if !index.map.is_empty() || !index.duplicates.is_empty() {
        return Some("Indicators per Intel Document changed: single documents become groups");
    }
    if index
        .groups
        .iter()
        .any(|g| g.format.is_some_and(|f| f != format))
    {
        return Some("the intel format changed");
    }
    let keys: Vec<BucketKey> = index.groups.iter().map(|g| g.key).collect();
    let distinct: HashSet<&BucketKey> = keys.iter().collect();
    if distinct.len() != keys.len() || Layout::from_keys(&keys).overlaps() {
        return Some("a bucket is in two documents (a split or merge stopped half-way)");
    }
    None
}

/// The grouped run's totals.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub created: u64,
    pub updated: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub moved: u64,
    pub held: u64,
    pub over_cap: u64,
    pub relabelled: u64,
    pub docs_created: u64,
    pub docs_removed: u64,
    pub singles_replaced: u64,
    pub failed_writes: u64,
    pub failed_removals: u64,
    pub unreadable: u64,
    pub wrote: bool,
    pub undelivered: Option<OffsetDateTime>,
    pub errors: Vec<String>,
    pub forbidden: Option<String>,
    /// Writes stopped early (too many failures in a row, or a missing permission).
    pub gave_up: bool,
}

impl Totals {
    fn log(&self) {
        log::info!(
            "grouped: documents {} created, {} removed ({} of them single documents replaced); indicators {} created, {} updated, {} removed, {} unchanged",
            self.docs_created,
            self.docs_removed,
            self.singles_replaced,
            self.created,
            self.updated,
            self.removed,
            self.unchanged
        );
    }

    fn add(&mut self, o: &Outcome) {
        self.created += o.created;
        self.updated += o.updated;
        self.removed += o.removed;
        self.unchanged += o.unchanged;
        self.moved += o.moved;
        self.held += o.held;
        self.over_cap += o.over_cap;
        self.relabelled += o.relabelled;
        self.docs_created += o.docs_created;
        self.docs_removed += o.docs_removed;
        self.singles_replaced += o.singles_replaced;
        self.failed_writes += o.failed_writes;
        self.failed_removals += o.failed_removals;
        self.unreadable += u64::from(o.unreadable);
        self.wrote |= o.wrote;
        if self.forbidden.is_none() {
            self.forbidden.clone_from(&o.forbidden);
        }
        if let Some(t) = o.undelivered {
            self.undelivered = Some(self.undelivered.map_or(t, |u| u.min(t)));
        }
        for e in &o.errors {
            log::error!("{e}");
            if self.errors.len() < KEPT_ERRORS {
                self.errors.push(e.clone());
            }
        }
    }
}

impl Totals {
    /// As the per-indicator pool would have counted it (indicators, not documents).
    pub fn into_results(self) -> Results {
        let moved = self.moved.min(self.created);
        Results {
            created: self.created - moved,
            updated: self.updated + moved,
            removed: self.removed,
            relabelled: self.relabelled,
            failed_labels: 0,
            unchanged: self.unchanged,
            failed_writes: self.failed_writes,
            failed_removals: self.failed_removals,
            errors: self.errors,
            oldest_undelivered: self.undelivered,
            wrote_anything: self.wrote,
            gave_up: self.gave_up,
            forbidden: self.forbidden,
            replaced: self.singles_replaced,
        }
    }
}

/// How the grouped part of a run ended.
pub(super) struct Ended {
    pub removal_error: Option<String>,
    pub pull: PullEnd,
    pub removals_complete: bool,
    pub totals: Totals,
    pub counts: Counts,
    pub label_error: Option<String>,
    pub docs_after: u64,
    /// Indicators the documents hold after the run.
    pub indicators_after: u64,
}

/// Pulls, plans per bucket, writes, and retires what was replaced.
// The stages in order, one call each; what stays inline is the hand-over between them (the
// records and label plans the Ctx borrows, the plan made again when removals are held back).
#[allow(clippy::too_many_arguments)]
pub(super) fn reconcile(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    opts: &SyncOptions,
    tc: &TcClient,
    tanium: &TaniumClient,
    source: (&str, Option<i64>),
    mut index: SourceIndex,
    full: bool,
    book: LabelBook,
) -> Result<Ended> {
    let mut p = Planner {
        config,
        opts,
        tanium,
        pool: None,
        counts: Counts::default(),
        removal_error: None,
        removals: Vec::new(),
        labels: book,
    };
    let (mut pulled, pull, removals_complete) = pull(&mut p, tc, checkpoint, full)?;
    let (recs, desired, repeats) = kept(&mut pulled, full);
    p.counts.repeats = repeats;
    let label_plans = label_plans(&mut p, &pulled.names);
    let held_before: u64 =
        index.groups.iter().map(Listed::count).sum::<u64>() + index.map.len() as u64;
    // Unsettled when removals are held back (see layout::rebalance).
    let replan = |p: &Planner, index: &mut SourceIndex, settle: bool| {
        plan_full(
            p,
            index,
            &recs,
            &desired,
            &label_plans,
            config.per_document,
            settle,
        )
    };
    let mut plan = if full {
        replan(&p, &mut index, true)
    } else {
        plan_incremental(&mut p, &index, &recs, &pulled.gone)
    };
    let broken_pull = !pull.complete;
    if broken_pull {
        // An incomplete pull removes nothing: only the buckets it adds to or changes are written.
        plan.retire.clear();
        for j in &mut plan.jobs {
            if let Job::Write(w) = j {
                w.drops.retain(|d| d.1.is_none());
            }
        }
    }
    let ctx = |dry: bool| Ctx {
        tanium,
        source_id: source.1.unwrap_or(0),
        source_name: source.0,
        format: config.intel_format,
        size: u64::from(config.per_document),
        full,
        dry,
        hold: false,
        recs: &recs,
        spill: &pulled.spill,
        desired: &desired,
        gone: &pulled.gone,
        names: &pulled.names,
        label_plans: &label_plans,
        room: (!full)
            .then_some(config.rails.max_indicators)
            .flatten()
            .map(|cap| AtomicI64::new(cap as i64 - held_before as i64)),
        broken: AtomicBool::new(false),
        consecutive: AtomicU32::new(0),
    };
    let mut run = ctx(opts.dry_run);
    let held_back = if broken_pull {
        0
    } else {
        let foreign = if config.take_over_source {
            index.unidentified.len() as u64
        } else {
            0
        };
        guard(config, opts, &ctx(true), &plan, held_before + foreign)
    };
    if held_back > 0 {
        run.hold = true;
        if full {
            plan = replan(&p, &mut index, false);
        }
        plan.retire.retain(|r| !r.guarded);
    }
    let (mut totals, blocked) = write(&mut p, &run, &mut plan, broken_pull);
    totals.gave_up = run.broken.load(Ordering::SeqCst);
    let removals_complete = removals_complete && !blocked;
    Ok(ended(
        p,
        pull,
        removals_complete,
        totals,
        held_back,
        (index.docs, held_before),
        checkpoint,
    ))
}

/// How the run ended: its counts, and what the checkpoint and the removals may rely on.
fn ended(
    mut p: Planner,
    pull: PullEnd,
    removals_complete: bool,
    mut totals: Totals,
    held_back: u64,
    (docs_before, indicators_before): (u64, u64),
    checkpoint: &Checkpoint,
) -> Ended {
    let mut counts = std::mem::take(&mut p.counts);
    counts.over_cap += totals.over_cap;
    counts.held_back = held_back;
    let docs_after = (docs_before + totals.docs_created).saturating_sub(totals.docs_removed);
    // A member that moved to another label set's bucket is created there and gone here; the
    // indicator of a single document replaced is created in its bucket.
    let indicators_after = (indicators_before + totals.created)
        .saturating_sub(totals.moved + totals.removed + totals.singles_replaced);
    totals.log();
    if totals.unreadable > 0 {
        // What the unreadable documents hold is unknown: the next run starts where this one did.
        let keep = checkpoint.last_modified;
        totals.undelivered = Some(totals.undelivered.map_or(keep, |u| u.min(keep)));
    }
    let removals_complete = removals_complete
        && held_back == 0
        && totals.unreadable == 0
        && totals.failed_removals == 0;
    Ended {
        removal_error: p.removal_error,
        pull,
        removals_complete,
        totals,
        counts,
        label_error: p.labels.error.clone(),
        docs_after,
        indicators_after,
    }
}

/// Pulls what the job selects to records and the scratch file and, in an incremental run,
/// what left the selection; whether that removal evidence is complete.
fn pull(
    p: &mut Planner,
    tc: &TcClient,
    checkpoint: &Checkpoint,
    full: bool,
) -> Result<(Pulled, PullEnd, bool)> {
    let (config, opts) = (p.config, p.opts);
    let (window, floor) = super::pull_window(config, checkpoint, opts.now, full);
    let query = crate::tc::tql::build(&config.filters, &window);
    log::info!("{}", super::describe_job(config));
    log::info!(
        "matching query ({}): {query}; grouped, {} indicators per document",
        if full {
            "every indicator the job selects"
        } else {
            "indicators modified since the last run"
        },
        config.per_document
    );
    let mut sel = Selection {
        filters: &config.filters,
        format: config.intel_format,
        guard: &config.rails.guard,
        cutoff: None,
        cap: None,
    };
    if let (true, Some(cap)) = (full, config.rails.max_indicators) {
        sel.cutoff = p.rank_cutoff(tc, &query, &sel, cap)?;
    }
    let mut pulled = Pulled {
        recs: Vec::new(),
        spill: Spill::open(&config.paths.temp)?,
        names: HashMap::new(),
        gone: Vec::new(),
    };
    let pull = p.pull_with(tc, &query, &mut |p, page| {
        for ind in &page {
            take(p, ind, &sel, &mut pulled)?;
        }
        Ok(None)
    })?;
    p.count_other_types(tc, &window);
    pulled.spill.seal()?;
    let mut removals_complete = pull.complete;
    if !full && pull.complete {
        let window = crate::tc::tql::Window {
            after: Some(checkpoint.last_modified),
            horizon: floor,
            until: Some(opts.now),
        };
        let gone = &mut pulled.gone;
        let found = p.removal_evidence(
            tc,
            checkpoint.last_modified,
            &window,
            &mut |_, identity, what, why, _| {
                gone.push(Gone {
                    identity,
                    what,
                    why: why.to_string(),
                });
            },
        );
        if let Err(e) = found {
            removals_complete = false;
            let msg = format!("could not check for removals: {e}");
            log::error!("{msg}");
            p.removal_error = Some(msg);
        }
    }
    Ok((pulled, pull, removals_complete))
}

/// One record per identity (the first the pull met), by label set then identity; in a full
/// reconcile with several label sets, every identity sent, sorted; and how many repeats went.
fn kept(pulled: &mut Pulled, full: bool) -> (Vec<Rec>, Vec<u128>, u64) {
    // Scratch offsets grow with the pull, so the lowest is the first met.
    let mut recs = std::mem::take(&mut pulled.recs);
    let met = recs.len();
    recs.sort_unstable_by_key(|r| (r.identity(), r.off()));
    recs.dedup_by_key(|r| r.identity());
    let repeats = met - recs.len();
    // With one label set the records stay in identity order and answer "is it sent?" alone.
    let desired: Vec<u128> = if full && pulled.names.len() > 1 {
        recs.iter().map(Rec::identity).collect()
    } else {
        Vec::new()
    };
    recs.sort_unstable_by_key(|r| (r.labels, r.identity()));
    log::info!(
        "pull: {} kept for {} ({repeats} met twice)",
        counted(recs.len() as u64, "indicator"),
        counted(pulled.names.len() as u64, "label set")
    );
    (recs, desired, repeats as u64)
}

/// The label ids each label set of the pull stands for (made where missing).
fn label_plans(p: &mut Planner, names: &HashMap<u32, Vec<String>>) -> HashMap<u32, LabelPlan> {
    let mut plans = HashMap::new();
    if p.opts.dry_run && p.labels.error.is_some() {
        return plans;
    }
    for (hash, names) in names {
        if let Some(ids) = p.labels.ids_for(p.tanium, names) {
            plans.insert(
                *hash,
                LabelPlan {
                    desired: ids,
                    managed: p.labels.managed(),
                    current: None,
                },
            );
        }
    }
    plans
}

/// The removal guard: when the most this run could remove is too many, the write jobs are run
/// dry to count what they would remove. The number held back (0: none).
fn guard(
    config: &JobConfig,
    opts: &SyncOptions,
    assess: &Ctx,
    plan: &Plan,
    held_before: u64,
) -> u64 {
    let rails = &config.rails;
    if !rails.too_many_removals(plan.removal_bound, held_before) {
        return 0;
    }
    let jobs: Vec<Job> = plan
        .jobs
        .iter()
        .filter_map(|j| match j {
            Job::Write(w) => Some(Job::Write(w.clone())),
            _ => None,
        })
        .collect();
    let outcomes = parallel(assess, config.workers, jobs);
    let would: u64 = outcomes.iter().map(|o| o.removed).sum::<u64>() + plan.retired_members;
    // The share is of the source with the indicators this run adds: a run held back still
    // adds them, and measured without them the next run would find the same removals a
    // smaller share and make them with nobody raising the guard.
    let entering = outcomes
        .iter()
        .map(|o| o.created)
        .sum::<u64>()
        .saturating_sub(outcomes.iter().map(|o| o.moved).sum());
    let base = held_before + entering;
    if !rails.too_many_removals(would, base) {
        return 0;
    }
    let line = format!(
        "held back all {would} removals: more than {}% of the {base} indicators in the source with this run's new ones (Maximum Removal Percent); nothing was removed",
        rails.max_removal_percent
    );
    log::warn!("{line}");
    if opts.dry_run {
        println!("guard: {line}");
    }
    would
}

/// Runs the bucket jobs, then removes the documents they replaced (only once every write that
/// took their members went through) and those retired whole. Whether a failed job blocked any.
fn write(p: &mut Planner, ctx: &Ctx, plan: &mut Plan, broken_pull: bool) -> (Totals, bool) {
    let workers = p.config.workers;
    let mut totals = Totals::default();
    let mut blocked: HashSet<i64> = HashSet::new();
    let mut replaced: BTreeSet<i64> = BTreeSet::new();
    for o in &parallel(ctx, workers, std::mem::take(&mut plan.jobs)) {
        for line in &o.plan {
            p.plan(line.clone());
        }
        totals.add(o);
        if o.failed {
            blocked.extend(o.read.iter().copied());
        } else {
            replaced.extend(o.replaced.iter().copied());
        }
    }
    let clean = totals.failed_writes == 0 && !broken_pull;
    let mut retire: Vec<Job> = Vec::new();
    let mut seen: HashSet<i64> = HashSet::new();
    for r in std::mem::take(&mut plan.retire) {
        if (r.needs_clean && !clean) || blocked.contains(&r.doc_id) || !seen.insert(r.doc_id) {
            continue;
        }
        p.plan(format!("remove {}: {}", r.what, r.why));
        retire.push(Job::Delete {
            doc_id: r.doc_id,
            what: r.what,
            single: r.single,
        });
    }
    for doc_id in replaced {
        if blocked.contains(&doc_id) || !seen.insert(doc_id) {
            continue;
        }
        retire.push(Job::Delete {
            doc_id,
            what: format!("document {doc_id}"),
            single: false,
        });
    }
    for o in &parallel(ctx, workers, retire) {
        totals.add(o);
    }
    if !ctx.hold {
        totals.removed += plan.retired_members;
    }
    totals.unchanged += plan.unchanged;
    (totals, !blocked.is_empty())
}
