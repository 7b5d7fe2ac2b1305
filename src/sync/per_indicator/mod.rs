//! One document per indicator: the pull is planned indicator by indicator (see `plan`) and
//! the writes stream to the driver while it goes on.

pub(super) mod ops;

use crate::error::Result;
use crate::tanium::client::TaniumClient;
use crate::tc::tql;

use super::cause::Cause;
use super::drive::{drive, Driver, Results};
use super::index::SourceIndex;
use super::labels::LabelBook;
use super::planner::Planner;
use super::report::Finished;
use super::report::{Counts, PullEnd};
use super::select::Selection;
use super::window::{matching_query, pull_window};
use super::Run;
use ops::{Op, Writer};

/// Where the planner sends writes.
pub(super) type Pool<'p, 'w> = Driver<'p, Writer<'w>, Op>;

/// Pulls, plans and writes; then, once every indicator has a document of its own, retires the
/// grouped documents of the other layout.
pub(super) fn reconcile(run: &Run, mut index: SourceIndex, book: LabelBook) -> Result<Finished> {
    let (config, opts, tanium) = (run.config, run.opts, run.tanium);
    let writer = Writer::new(tanium, run.source.id.unwrap_or(0));
    let (planned, mut results) = if opts.dry_run {
        (plan(run, None, &mut index, book), Results::default())
    } else {
        let (planned, results, _) = drive(&writer, config.workers, Results::default(), |pool| {
            plan(run, Some(pool), &mut index, book)
        });
        (planned, results)
    };
    let (pull, removals_complete, counts, removal_error, label_error) = planned?;
    if pull.complete && removals_complete && results.failed_writes == 0 {
        retire_groups(tanium, &index, opts.dry_run, &mut results);
    }
    let docs_after = (index.docs + results.created + counts.would_create)
        .saturating_sub(results.removed + results.replaced + counts.would_remove);
    Ok(Finished {
        pull,
        removals_complete,
        counts,
        removal_error,
        label_error,
        docs_after,
        grouped_indicators: None,
        results,
    })
}

type Planned = (PullEnd, bool, Counts, Option<String>, Option<String>);

/// Plans the run with the writes going to `pool` (None: a dry run); how the pull ended,
/// whether every removal candidate was examined, the counts, and why removals or labels could
/// not be checked.
fn plan<'a>(
    run: &Run<'a>,
    pool: Option<&Pool<'_, 'a>>,
    index: &mut SourceIndex,
    book: LabelBook,
) -> Result<Planned> {
    let mut p = Planner {
        config: run.config,
        opts: run.opts,
        tanium: run.tanium,
        pool,
        counts: Counts::default(),
        removal_error: None,
        removals: Vec::new(),
        labels: book,
    };
    let (pull, complete) = walk(&mut p, run, index)?;
    Ok((pull, complete, p.counts, p.removal_error, p.labels.error))
}

/// Pulls, plans and removes with `planner`; how the pull ended and whether every removal
/// candidate was examined.
fn walk(planner: &mut Planner, run: &Run, index: &mut SourceIndex) -> Result<(PullEnd, bool)> {
    let (config, checkpoint, tc, full) = (run.config, run.checkpoint, run.tc, run.is_full());
    let (window, floor) = pull_window(config, checkpoint, planner.opts.now, full);
    let tql = matching_query(config, &window, full);
    let mut sel = Selection {
        filters: &config.filters,
        format: config.intel_format,
        guard: &config.rails.guard,
        cutoff: None,
    };
    let cap = (!full).then_some(config.rails.max_indicators).flatten();
    if let (true, Some(cap)) = (full, config.rails.max_indicators) {
        sel.cutoff = planner.rank_cutoff(tc, &tql, &sel, cap)?;
    }
    let pull = planner.pull(tc, &tql, (&sel, cap), index)?;
    planner.count_other_types(tc, &window);
    if !full && !planner.broken() {
        planner.sweep_labels(index);
    }
    if !pull.complete || planner.broken() {
        return Ok((pull, false));
    }
    let mut removals_complete = true;
    if full {
        planner.sweep(index, floor);
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

/// Switching back to one document per indicator: once every indicator has its own document,
/// the grouped documents go.
fn retire_groups(tanium: &TaniumClient, index: &SourceIndex, dry_run: bool, results: &mut Results) {
    for g in &index.groups {
        let what = format!("grouped document {} \"{}\"", g.doc_id, g.name);
        if dry_run {
            println!("remove {what}: {}", Cause::Relaid);
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
