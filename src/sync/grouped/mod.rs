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
use std::sync::atomic::AtomicI64;

use crate::config::JobConfig;
use crate::error::Result;
use crate::intel::group::BucketKey;
use crate::intel::Format;
use crate::tc::client::TcClient;
use crate::words::counted;

use super::cause::Cause;
use super::drive::{drive, Results};
use super::index::{Listed, SourceIndex};
use super::labels::{LabelBook, LabelPlan};
use super::layout::Layout;
use super::planner::Planner;
use super::report::Finished;
use super::report::{Counts, PullEnd};
use super::select::Selection;
use super::window::{matching_query, pull_window, Full};
use super::{Checkpoint, Run, SyncOptions};
use plan::{plan_full, plan_incremental, Plan};
use pull::{take, Gone, Kept, Pulled, Rec, Spill};
use write::{Ctx, Job};

/// Why the run must compare everything, from what the listing shows of a grouped source
/// (None: nothing of the kind).
pub(super) fn full_reason(index: &SourceIndex, format: Format) -> Option<Full> {
    if !index.map.is_empty() || !index.duplicates.is_empty() {
        return Some(Full::ToGroups);
    }
    if index
        .groups
        .iter()
        .any(|g| g.format.is_some_and(|f| f != format))
    {
        return Some(Full::FormatChanged);
    }
    let keys: Vec<BucketKey> = index.groups.iter().map(|g| g.key).collect();
    let distinct: HashSet<&BucketKey> = keys.iter().collect();
    if distinct.len() != keys.len() || Layout::from_keys(&keys).overlaps() {
        return Some(Full::BucketOverlap);
    }
    None
}

fn log_grouped(r: &Results) {
    log::info!(
        "grouped: documents {} created, {} removed ({} of them single documents replaced); indicators {} created, {} updated, {} removed, {} unchanged",
        r.docs_created,
        r.docs_removed,
        r.replaced,
        r.created,
        r.updated,
        r.removed,
        r.unchanged
    );
}

/// Pulls, plans per bucket, writes, and retires what was replaced.
// The stages in order, one call each; what stays inline is the hand-over between them (the
// records and label plans the Ctx borrows, the plan made again when removals are held back).
pub(super) fn reconcile(
    run: &Run,
    size: u32,
    mut index: SourceIndex,
    book: LabelBook,
) -> Result<Finished> {
    let (config, checkpoint, opts, tc, tanium) =
        (run.config, run.checkpoint, run.opts, run.tc, run.tanium);
    let full = run.is_full();
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
    pulled.gone.sort_by_key(|g| g.identity);
    let members = Kept {
        recs: &recs,
        desired: &desired,
        gone: &pulled.gone,
        floor: pulled.floor,
    };
    let label_plans = label_plans(&mut p, &pulled.names);
    let held_before: u64 =
        index.groups.iter().map(Listed::count).sum::<u64>() + index.map.len() as u64;
    // Unsettled when removals are held back (see layout::rebalance).
    let replan = |p: &Planner, index: &mut SourceIndex, settle: bool| {
        plan_full(p, index, members, &label_plans, size, settle)
    };
    let mut plan = if full {
        replan(&p, &mut index, true)
    } else {
        plan_incremental(&mut p, &index, &recs, &pulled.gone)
    };
    for r in &plan.retire {
        if !matches!(r.cause, Cause::Moved | Cause::Relaid) {
            *p.counts.removals.entry(r.cause.key()).or_default() += 1;
        }
    }
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
        source_id: run.source.id.unwrap_or(0),
        source_name: &run.source.name,
        format: config.intel_format,
        size: u64::from(size),
        full,
        dry,
        hold: false,
        kept: members,
        spill: &pulled.spill,
        names: &pulled.names,
        label_plans: &label_plans,
        room: (!full)
            .then_some(config.rails.max_indicators)
            .flatten()
            .map(|cap| AtomicI64::new(cap as i64 - held_before as i64)),
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
        plan.retire.retain(|r| !r.cause.weighed());
    }
    let (totals, blocked) = write(&mut p, &run, &mut plan, broken_pull);
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
    mut totals: Results,
    held_back: u64,
    (docs_before, indicators_before): (u64, u64),
    checkpoint: &Checkpoint,
) -> Finished {
    let mut counts = std::mem::take(&mut p.counts);
    counts.over_cap += totals.over_cap;
    for (k, n) in std::mem::take(&mut totals.removals) {
        *counts.removals.entry(k).or_default() += n;
    }
    counts.held_back = held_back;
    let docs_after = (docs_before + totals.docs_created).saturating_sub(totals.docs_removed);
    // A member that moved to another label set's bucket is created there and gone here; the
    // indicator of a single document replaced is created in its bucket.
    let indicators_after = (indicators_before + totals.created)
        .saturating_sub(totals.moved + totals.removed + totals.replaced);
    log_grouped(&totals);
    if totals.unreadable > 0 {
        // What the unreadable documents hold is unknown: the next run starts where this one did.
        totals.note_undelivered(Some(checkpoint.last_modified));
    }
    let removals_complete = removals_complete
        && held_back == 0
        && totals.unreadable == 0
        && totals.failed_removals == 0;
    Finished {
        removal_error: p.removal_error,
        pull,
        removals_complete,
        results: totals,
        counts,
        label_error: p.labels.error.clone(),
        docs_after,
        grouped_indicators: Some(indicators_after),
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
    let (window, floor) = pull_window(config, checkpoint, opts.now, full);
    let query = matching_query(config, &window, full);
    let mut sel = Selection {
        filters: &config.filters,
        format: config.intel_format,
        guard: &config.rails.guard,
        cutoff: None,
    };
    if let (true, Some(cap)) = (full, config.rails.max_indicators) {
        sel.cutoff = p.rank_cutoff(tc, &query, &sel, cap)?;
    }
    let mut pulled = Pulled {
        floor,
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
            &mut |_, identity, what, cause| {
                gone.push(Gone {
                    identity,
                    what,
                    cause,
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
    let (_, assessed, _) = drive(assess, config.workers, Results::default(), |d| {
        jobs.into_iter().for_each(|j| d.send(j))
    });
    let would = assessed.removed + plan.retired_members;
    if !rails.too_many_removals(would, held_before) {
        return 0;
    }
    let line = format!(
        "held back all {would} removals: more than {}% of the {held_before} indicators in the source (Maximum Removal Percent); nothing was removed",
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
fn write(p: &mut Planner, ctx: &Ctx, plan: &mut Plan, broken_pull: bool) -> (Results, bool) {
    // A dry run's plan lines come in the order of the plan.
    let workers = if ctx.dry { 1 } else { p.config.workers };
    let jobs = std::mem::take(&mut plan.jobs);
    let (_, mut totals, done) = drive(ctx, workers, Results::default(), |d| {
        jobs.into_iter().for_each(|j| d.send(j))
    });
    let mut blocked: HashSet<i64> = HashSet::new();
    let mut replaced: BTreeSet<i64> = BTreeSet::new();
    for o in done {
        for line in o.kept.plan {
            p.plan(line);
        }
        if o.failed {
            blocked.extend(o.kept.read);
        } else {
            replaced.extend(o.kept.retired);
        }
    }
    let clean = totals.failed_writes == 0 && !broken_pull;
    let mut retire: Vec<Job> = Vec::new();
    let mut seen: HashSet<i64> = HashSet::new();
    for r in std::mem::take(&mut plan.retire) {
        if blocked.contains(&r.doc_id) || !seen.insert(r.doc_id) {
            continue;
        }
        if r.needs_clean && !clean {
            // A write it waits on failed: it stays, a removal not made.
            totals.failed_removals += 1;
            blocked.insert(r.doc_id);
            continue;
        }
        p.plan(format!("remove {}: {}", r.what, r.cause));
        retire.push(Job::Delete {
            doc_id: r.doc_id,
            what: r.what,
            single: r.cause == Cause::Relaid,
            members: r.members,
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
            members: 0,
        });
    }
    let (_, mut totals, _) = drive(ctx, workers, totals, |d| {
        retire.into_iter().for_each(|j| d.send(j))
    });
    totals.unchanged += plan.unchanged;
    (totals, !blocked.is_empty())
}
