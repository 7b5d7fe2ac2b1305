//! The writes both layouts make alike: a document removed, or its labels alone brought to the
//! rules (its content is current).

use time::OffsetDateTime;

use crate::error::Error;
use crate::tanium::client::TaniumClient;

use super::cause::Cause;
use super::drive::{Failure, Outcome};
use super::label_book::{self, fixed_top_up, LabelBook, LabelPlan};
use super::Run;

pub(super) enum DocOp {
    Delete {
        doc_id: i64,
        what: String,
        cause: Cause,
        /// Indicators that leave the source with it.
        members: u64,
    },
    Labels {
        doc_id: i64,
        what: String,
        plan: LabelPlan,
        /// Of the indicator it holds, when it holds one (its label failure keeps the
        /// checkpoint before it).
        last_modified: Option<OffsetDateTime>,
    },
}

impl DocOp {
    /// `dry`: counted as done, nothing sent.
    pub fn run<K>(self, tanium: &TaniumClient, dry: bool, out: &mut Outcome<K>) {
        match self {
            DocOp::Delete {
                doc_id,
                what,
                cause,
                members,
            } => {
                if !dry {
                    if let Err(e) = tanium.delete_doc(doc_id) {
                        out.r.failed_removals += 1;
                        let msg = format!("could not remove {what}: {e}");
                        return out.fail(Failure::Tanium(Box::new(e)), msg);
                    }
                    out.r.wrote_anything = true;
                }
                out.r.removed += members;
                out.r.docs_removed += 1;
                // A document of the other layout: its indicators have documents of this one.
                out.r.replaced += u64::from(cause == Cause::Relaid);
            }
            DocOp::Labels {
                doc_id,
                what,
                plan,
                last_modified,
            } => {
                if dry {
                    out.r.relabelled += 1;
                    return;
                }
                match label_book::bring(tanium, doc_id, &plan, None) {
                    Ok(changed) => {
                        out.r.relabelled += u64::from(changed);
                        out.r.wrote_anything |= changed;
                    }
                    Err(e) => label_failed(
                        out,
                        last_modified,
                        format!("could not label {what}: {e}"),
                        e,
                    ),
                }
            }
        }
    }

    pub fn not_attempted<K>(self, out: &mut Outcome<K>) {
        match self {
            DocOp::Delete { .. } => out.r.failed_removals += 1,
            DocOp::Labels { last_modified, .. } => {
                out.r.failed_writes += 1;
                out.r.failed_labels += 1;
                out.r.note_undelivered(last_modified);
            }
        }
    }
}

/// A document's labels could not be brought to the rules: a failed write of it (what it holds
/// is pulled again next run, and the run does not settle the labels).
pub(super) fn label_failed<K>(
    out: &mut Outcome<K>,
    last_modified: Option<OffsetDateTime>,
    msg: String,
    e: Error,
) {
    out.r.failed_writes += 1;
    out.r.failed_labels += 1;
    out.r.note_undelivered(last_modified);
    out.fail(Failure::Tanium(Box::new(e)), msg);
}

/// The label writes of documents that lack one of the job's own labels (see
/// [`fixed_top_up`]), each said in the plan.
pub(super) fn top_ups<'x>(
    run: &Run,
    book: &mut LabelBook,
    docs: impl Iterator<Item = (i64, String, Option<&'x [i64]>)>,
) -> Vec<DocOp> {
    let found = fixed_top_up(book, run.tanium, docs);
    found
        .into_iter()
        .map(|(doc_id, what, plan)| {
            if let Some(current) = &plan.current {
                run.plan(book.describe(&what, &plan.change(current)));
            }
            DocOp::Labels {
                doc_id,
                what,
                plan,
                last_modified: None,
            }
        })
        .collect()
}
