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

pub(super) mod layout;
mod plan;
mod pull;
mod write;

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::Result;
use crate::words::counted;

use super::cause::Cause;
use super::doc_ops::DocOp;
use super::drive::{drive, Results};
use super::guard::RemovalGuard;
use super::index::{Listed, SourceIndex};
use super::label_book::{LabelBook, LabelPlan};
use super::pull::{self as tc_pull, Query};
use super::report::{Counts, Finished, PullEnd};
use super::Run;
use plan::{plan_full, plan_incremental, Plan};
use pull::{take, Gone, Kept, Pulled, Rec, Spill};
use write::{Ctx, Job, Room};

/// What a grouped run keeps while it plans: its counts, the label book, and why the removal
/// check could not finish.
pub(super) struct Books {
    pub counts: Counts,
    pub labels: LabelBook,
    pub removal_error: Option<String>,
}

impl AsMut<Counts> for Books {
    fn as_mut(&mut self) -> &mut Counts {
        &mut self.counts
    }
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
    labels: LabelBook,
) -> Result<Finished> {
    let (config, full) = (run.config, run.is_full());
    let mut b = Books {
        counts: Counts::default(),
        labels,
        removal_error: None,
    };
    let (mut pulled, pull, removals_complete) = pull(run, &mut b)?;
    let (recs, desired, repeats) = kept(&mut pulled, full);
    b.counts.repeats = repeats;
    pulled.gone.sort_by_key(|g| g.identity);
    let members = Kept {
        recs: &recs,
        desired: &desired,
        gone: &pulled.gone,
        floor: pulled.floor,
    };
    let label_plans = label_plans(run, &mut b, &pulled.names);
    let held_before: u64 =
        index.groups.iter().map(Listed::count).sum::<u64>() + index.map.len() as u64;
    let foreign = if config.take_over_source {
        index.unidentified.len() as u64
    } else {
        0
    };
    // Unsettled when removals are held back (see layout::rebalance).
    let replan = |b: &Books, index: &mut SourceIndex, settle: bool| {
        plan_full(run, b, index, members, &label_plans, (size, settle))
    };
    let mut plan = if full {
        replan(&b, &mut index, true)
    } else {
        plan_incremental(run, &mut b, &index, &recs, &pulled.gone)
    };
    for r in &plan.retire {
        if !matches!(r.cause, Cause::Moved | Cause::Relaid) {
            *b.counts.removals.entry(r.cause.key()).or_default() += 1;
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
        tanium: run.tanium,
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
            .map(|cap| Room::new(cap as i64 - held_before as i64)),
    };
    let mut write_ctx = ctx(run.opts.dry_run);
    let held_back = if broken_pull {
        0
    } else {
        guard(run, &ctx(true), &plan, held_before + foreign)
    };
    if held_back > 0 {
        write_ctx.hold = true;
        if full {
            plan = replan(&b, &mut index, false);
        }
        plan.retire.retain(|r| !r.cause.weighed());
    }
    let (totals, blocked) = write(run, &write_ctx, &mut plan, broken_pull);
    let removals_complete = removals_complete && !blocked;
    Ok(ended(
        run,
        b,
        (pull, removals_complete),
        totals,
        held_back,
        (index.docs, held_before),
    ))
}

/// How the run ended: its counts, and what the checkpoint and the removals may rely on.
fn ended(
    run: &Run,
    mut b: Books,
    (pull, removals_complete): (PullEnd, bool),
    mut totals: Results,
    held_back: u64,
    (docs_before, indicators_before): (u64, u64),
) -> Finished {
    let mut counts = std::mem::take(&mut b.counts);
    // Not added for want of room: over the cap and not matched, as per indicator.
    counts.over_cap += totals.over_cap;
    counts.matched = counts.matched.saturating_sub(totals.over_cap);
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
        totals.note_undelivered(Some(run.checkpoint.last_modified));
    }
    let removals_complete = removals_complete
        && held_back == 0
        && totals.unreadable == 0
        && totals.failed_removals == 0;
    Finished {
        removal_error: b.removal_error,
        pull,
        removals_complete,
        results: totals,
        counts,
        label_error: b.labels.error,
        docs_after,
        grouped_indicators: Some(indicators_after),
    }
}

/// Pulls what the job selects to records and the scratch file and, in an incremental run,
/// what left the selection; whether that removal evidence is complete.
fn pull(run: &Run, b: &mut Books) -> Result<(Pulled, PullEnd, bool)> {
    let q = Query::start(run)?;
    let mut pulled = Pulled {
        floor: q.floor,
        recs: Vec::new(),
        spill: Spill::open(&run.config.paths.temp)?,
        names: HashMap::new(),
        gone: Vec::new(),
    };
    let (pull, _) = tc_pull::pages(run, &q, b, |b, page| {
        for ind in &page {
            take(run, &mut b.counts, ind, &q.sel, &mut pulled)?;
        }
        Ok(None)
    })?;
    pulled.spill.seal()?;
    let mut removals_complete = pull.complete;
    if !run.is_full() && pull.complete {
        let gone = &mut pulled.gone;
        b.removal_error = tc_pull::removal_evidence(run, &q, |identity, what, cause| {
            gone.push(Gone {
                identity,
                what,
                cause,
            })
        });
        removals_complete = b.removal_error.is_none();
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
fn label_plans(
    run: &Run,
    b: &mut Books,
    names: &HashMap<u32, Vec<String>>,
) -> HashMap<u32, LabelPlan> {
    let mut plans = HashMap::new();
    if run.opts.dry_run && b.labels.error.is_some() {
        return plans;
    }
    for (hash, names) in names {
        if let Some(ids) = b.labels.ids_for(run.tanium, names) {
            plans.insert(
                *hash,
                LabelPlan {
                    desired: ids,
                    managed: b.labels.managed(),
                    current: None,
                },
            );
        }
    }
    plans
}

/// The removal guard: when the most this run could remove is too many, the write jobs are run
/// dry to count what they would remove. The number held back (0: none).
fn guard(run: &Run, assess: &Ctx, plan: &Plan, held: u64) -> u64 {
    let guard = RemovalGuard {
        rails: &run.config.rails,
        dry_run: run.opts.dry_run,
    };
    if guard.clearly_allows(plan.removal_bound, held) {
        return 0;
    }
    let jobs = plan.jobs.iter().filter_map(|j| match j {
        Job::Write(w) => Some(Job::Write(w.clone())),
        _ => None,
    });
    let (_, assessed, _) = drive(assess, run.config.workers, Results::default(), |d| {
        jobs.for_each(|j| d.send(j))
    });
    let would = assessed.removed + plan.retired_members;
    // Members new to the source; one that moved from another label set's bucket is not.
    let entering = assessed.created.saturating_sub(assessed.moved);
    if guard.allows(would, held + entering, 0) {
        0
    } else {
        would
    }
}

/// Runs the bucket jobs, then removes the documents they replaced (only once every write that
/// took their members went through) and those retired whole. Whether a failed job blocked any.
fn write(run: &Run, ctx: &Ctx, plan: &mut Plan, broken_pull: bool) -> (Results, bool) {
    // A dry run's plan lines come in the order of the plan.
    let workers = if ctx.dry { 1 } else { run.config.workers };
    let jobs = std::mem::take(&mut plan.jobs);
    let (_, mut totals, done) = drive(ctx, workers, Results::default(), |d| {
        jobs.into_iter().for_each(|j| d.send(j))
    });
    let mut blocked: HashSet<i64> = HashSet::new();
    let mut replaced: BTreeSet<i64> = BTreeSet::new();
    for o in done {
        for line in o.kept.plan {
            run.plan(line);
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
        run.plan(format!("remove {}: {}", r.what, r.cause));
        retire.push(Job::Doc(DocOp::Delete {
            doc_id: r.doc_id,
            what: r.what,
            cause: r.cause,
            members: r.members,
        }));
    }
    for doc_id in replaced {
        if blocked.contains(&doc_id) || !seen.insert(doc_id) {
            continue;
        }
        retire.push(Job::Doc(DocOp::Delete {
            doc_id,
            what: format!("document {doc_id}"),
            cause: Cause::Moved,
            members: 0,
        }));
    }
    let (_, mut totals, _) = drive(ctx, workers, totals, |d| {
        retire.into_iter().for_each(|j| d.send(j))
    });
    totals.unchanged += plan.unchanged;
    (totals, !blocked.is_empty())
}
