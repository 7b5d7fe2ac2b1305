//! One document per indicator: the pull is planned indicator by indicator (see `plan`) and
//! the writes stream to the pool while it goes on.

use crate::error::Result;
use crate::tanium::client::TaniumClient;
use crate::tc::tql;

use super::index::SourceIndex;
use super::labels::LabelBook;
use super::plan::Selection;
use super::planner::{Counts, Planner, PullEnd};
use super::pool::{self, Results};
use super::report::Finished;
use super::window::{matching_query, pull_window};
use super::Run;

/// Pulls, plans and writes; then, once every indicator has a document of its own, retires the
/// grouped documents of the other layout.
pub(super) fn reconcile(run: &Run, mut index: SourceIndex, book: LabelBook) -> Result<Finished> {
    let (config, opts, tanium) = (run.config, run.opts, run.tanium);
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
        let r = walk(&mut p, run, &mut index);
        r.map(|r| (r, p.counts, p.removal_error, p.labels.error))
    };
    let (planned, mut results) = if opts.dry_run {
        (plan_with(None), Results::default())
    } else {
        pool::with_pool(tanium, run.source.id.unwrap_or(0), config.workers, |pool| {
            plan_with(Some(pool))
        })
    };
    let ((pull, removals_complete), counts, removal_error, label_error) = planned?;
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
