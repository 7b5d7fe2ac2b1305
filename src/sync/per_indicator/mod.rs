//! One document per indicator: the pull is planned indicator by indicator (see `decide`) and
//! the writes stream to the driver while it goes on.

mod decide;
pub(super) mod ops;
mod planner;

use crate::error::Result;
use crate::words::counted;

use super::cause::Cause;
use super::doc_ops::DocOp;
use super::drive::{drive, Driver, Results};
use super::index::SourceIndex;
use super::label_book::LabelBook;
use super::pull::{self, Query};
use super::report::{Counts, Finished, PullEnd};
use super::Run;
use ops::{Op, Writer};
use planner::Planner;

/// Where the planner sends writes.
pub(super) type Pool<'p, 'w> = Driver<'p, Writer<'w>, Op, ()>;

/// Pulls, plans and writes; then, once every indicator has a document of its own, retires the
/// grouped documents of the other layout.
pub(super) fn reconcile(run: &Run, mut index: SourceIndex, book: LabelBook) -> Result<Finished> {
    let (config, opts) = (run.config, run.opts);
    let writer = Writer::new(run.tanium, run.source.id.unwrap_or(0));
    let (planned, mut results) = if opts.dry_run {
        (plan(run, None, &mut index, book), Results::default())
    } else {
        let (planned, results, _) = drive(&writer, config.workers, Results::default(), |pool| {
            plan(run, Some(pool), &mut index, book)
        });
        (planned, results)
    };
    let (pull, removals_complete, counts, removal_error, label_error) = planned?;
    let relaid = !index.groups.is_empty();
    if relaid && pull.complete && removals_complete && results.failed_writes == 0 {
        results = retire_groups(run, &writer, &index, results);
    } else if relaid && !opts.dry_run {
        // Each grouped document stays until every indicator has a document of its own.
        results.failed_removals += index.groups.len() as u64;
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
    run: &'a Run<'a>,
    pool: Option<&Pool<'_, 'a>>,
    index: &mut SourceIndex,
    book: LabelBook,
) -> Result<Planned> {
    let mut p = Planner::new(run, pool, book);
    let (pull, complete) = walk(&mut p, index)?;
    Ok((pull, complete, p.counts, p.removal_error, p.labels.error))
}

/// Pulls, plans and removes; how the pull ended and whether every removal candidate was
/// examined.
fn walk(p: &mut Planner, index: &mut SourceIndex) -> Result<(PullEnd, bool)> {
    let run = p.run;
    let (config, full) = (run.config, run.is_full());
    let q = Query::start(run)?;
    // Under a cap, an incremental run adds documents only while the source holds fewer.
    let cap = (!full).then_some(config.rails.max_indicators).flatten();
    let (pull, undelivered) = pull::pages(run, &q, p, |p, page| {
        p.plan_page(page, (&q.sel, cap), index)
    })?;
    if let Some(first) = undelivered {
        p.note_undelivered(&first);
    }
    if !full && !p.stopped() {
        p.sweep_labels(index);
    }
    if !pull.complete || p.stopped() {
        return Ok((pull, false));
    }
    let mut removals_complete = true;
    if full {
        p.sweep(index, q.floor);
    } else {
        let error = pull::removal_evidence(run, &q, |key, what, cause| {
            if let Some(doc_id) = index.take_for_removal(key) {
                p.remove(doc_id, what, cause);
            }
        });
        removals_complete = error.is_none();
        p.removal_error = error;
    }
    for (doc_id, what, cause) in index.strays(full && config.take_over_source) {
        p.remove(doc_id, what, cause);
    }
    // Another integration's documents a take-over could not read stay: the next run, a full
    // reconcile again, reads them.
    if !index.unread.is_empty() {
        removals_complete = false;
        p.removal_error.get_or_insert_with(|| {
            format!(
                "could not read {} this job did not make: they stay until a run can read them",
                counted(index.unread.len() as u64, "document")
            )
        });
    }
    // Held back, the removals must be found again: the next run reconciles fully.
    removals_complete &= p.settle_removals(index.docs);
    Ok((pull, removals_complete))
}

/// Switching back to one document per indicator: once every indicator has a document of its
/// own, the grouped documents go.
fn retire_groups(run: &Run, writer: &Writer, index: &SourceIndex, before: Results) -> Results {
    let retire = index.groups.iter().map(|g| {
        let what = format!("grouped document {} \"{}\"", g.doc_id, g.name);
        planner::delete(g.doc_id, what, Cause::Relaid)
    });
    if run.opts.dry_run {
        let mut results = before;
        for op in retire {
            if let DocOp::Delete { what, cause, .. } = op {
                run.plan(format!("remove {what}: {cause}"));
                results.replaced += 1;
            }
        }
        return results;
    }
    let (_, results, _) = drive(writer, run.config.workers, before, |pool: &Pool| {
        retire.for_each(|op| pool.send(Op::Doc(op)))
    });
    results
}
