//! The writes of one document per indicator, as the driver runs them: create, update, adopt,
//! replace, delete, relabel.

use std::sync::atomic::{AtomicU8, Ordering};

use time::OffsetDateTime;

use crate::error::Result;
use crate::intel::{self, Package};
use crate::tanium::client::TaniumClient;
use crate::tanium::model::{IntelDoc, Upload};

use crate::sync::doc_ops::{label_failed, DocOp};
use crate::sync::drive::{Failure, Outcome, Work};
use crate::sync::label_book::{self, LabelPlan};

/// One write. `labels` (None: labels are off this run) are brought to their plan right after
/// the content is written, from the labels the write's answer shows when it shows them.
pub(in crate::sync) enum Op {
    Write {
        to: Target,
        pkg: Box<Package>,
        last_modified: Option<OffsetDateTime>,
        labels: Option<LabelPlan>,
    },
    Doc(DocOp),
}

/// Where a document's content goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::sync) enum Target {
    New,
    /// Read the stored marker first (`verify`) unless Tanium's md5 proved trustworthy this
    /// run.
    Update {
        doc_id: i64,
        verify: bool,
    },
    /// Taking a document over: rewritten in place under the root id it had. Should the server
    /// file the content as a new document instead, the old one goes. `replaces`: the job's own
    /// document for the same indicator, removed once the adopted one holds it.
    Adopt {
        doc_id: i64,
        replaces: Option<i64>,
    },
    /// A format switch: a new document first; the old one goes only once the new one exists,
    /// so a failure never leaves the indicator without a document.
    Replace {
        old_doc_id: i64,
    },
}

/// Whether Tanium's listing `md5` is the MD5 of the bytes we upload (it is when the server
/// stores documents byte for byte, which is unconfirmed): learned from write answers.
const MD5_UNKNOWN: u8 = 0;
const MD5_TRUSTED: u8 = 1;
const MD5_UNTRUSTED: u8 = 2;

/// What every write reads.
pub(in crate::sync) struct Writer<'a> {
    pub tanium: &'a TaniumClient,
    pub source_id: i64,
    md5_trust: AtomicU8,
}

impl<'a> Writer<'a> {
    pub fn new(tanium: &'a TaniumClient, source_id: i64) -> Writer<'a> {
        Writer {
            tanium,
            source_id,
            md5_trust: AtomicU8::new(MD5_UNKNOWN),
        }
    }
}

type Out = Outcome<()>;

impl Work<Writer<'_>> for Op {
    type Kept = ();

    fn run(self, w: &Writer, out: &mut Out) {
        if w.verified_unchanged(&self) {
            out.r.unchanged += 1;
            if let Op::Write {
                to: Target::Update { doc_id, .. },
                pkg,
                last_modified,
                labels: Some(plan),
            } = self
            {
                let labels = DocOp::Labels {
                    doc_id,
                    what: pkg.name,
                    plan,
                    last_modified,
                };
                labels.run(w.tanium, false, out);
            }
            return;
        }
        w.write(self, out);
    }

    fn not_attempted(self, _: &Writer, out: &mut Out) {
        match self {
            Op::Write { last_modified, .. } => {
                out.r.failed_writes += 1;
                out.r.note_undelivered(last_modified);
            }
            Op::Doc(op) => op.not_attempted(out),
        }
    }
}

fn upload_of(pkg: &Package) -> Upload<'_> {
    Upload {
        body: &pkg.body,
        kind: pkg.type_header(),
        file_name: &pkg.file_name,
    }
}

/// The rev in a stored document's description marker (None: not there or not ours).
fn current_rev(tanium: &TaniumClient, doc_id: i64) -> Result<Option<intel::Rev>> {
    Ok(tanium
        .get_doc(doc_id)?
        .and_then(|d| intel::rev_from_doc(d.description.as_deref())))
}

impl Writer<'_> {
    /// For an update the listing could not decide: whether the stored document already
    /// carries this content's rev (then there is nothing to write).
    fn verified_unchanged(&self, op: &Op) -> bool {
        let Op::Write {
            to: Target::Update {
                doc_id,
                verify: true,
            },
            pkg,
            ..
        } = op
        else {
            return false;
        };
        if self.md5_trust.load(Ordering::SeqCst) == MD5_TRUSTED {
            return false;
        }
        match current_rev(self.tanium, *doc_id) {
            Ok(Some(rev)) if rev == pkg.rev => {
                if self.md5_trust.swap(MD5_UNTRUSTED, Ordering::SeqCst) != MD5_UNTRUSTED {
                    log::info!("Tanium's md5 differs from the uploaded bytes; documents are compared by the rev in their description instead");
                }
                true
            }
            Ok(_) => false,
            Err(e) => {
                log::debug!("could not read intel {doc_id} before updating it: {e}");
                false
            }
        }
    }

    /// A write answer tells whether Tanium's md5 is that of the bytes sent.
    fn learn(&self, doc: &IntelDoc, pkg: &Package) {
        if let Some(md5) = doc.md5.as_deref() {
            let trusted = md5.eq_ignore_ascii_case(&pkg.md5_hex());
            let _ = self.md5_trust.compare_exchange(
                MD5_UNKNOWN,
                if trusted { MD5_TRUSTED } else { MD5_UNTRUSTED },
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// The labels of a document just written; a failure is one more failed write of it (its
    /// indicator is pulled again next run).
    fn label_written(&self, doc: &IntelDoc, op: &Op, out: &mut Out) {
        let Op::Write {
            labels: Some(plan),
            pkg,
            last_modified,
            ..
        } = op
        else {
            return;
        };
        if let Err(e) = label_book::bring(self.tanium, doc.id, plan, doc.label_ids.clone()) {
            label_failed(
                out,
                *last_modified,
                format!("could not label {}: {e}", pkg.name),
                e,
            );
        }
    }

    fn write(&self, op: Op, out: &mut Out) {
        let (to, pkg, last_modified) = match op {
            Op::Write {
                to,
                ref pkg,
                last_modified,
                ..
            } => (to, pkg, last_modified),
            Op::Doc(op) => return op.run(self.tanium, false, out),
        };
        // The id of the document written (an update may answer with a new one).
        let written = match to {
            Target::New | Target::Replace { .. } => {
                self.tanium.create_doc(self.source_id, &upload_of(pkg))
            }
            Target::Update { doc_id, .. } | Target::Adopt { doc_id, .. } => {
                self.tanium.update_doc(doc_id, &upload_of(pkg))
            }
        };
        let written = match written {
            Ok(doc) => {
                self.learn(&doc, pkg);
                out.r.wrote_anything = true;
                self.label_written(&doc, &op, out);
                doc.id
            }
            Err(e) => {
                out.r.failed_writes += 1;
                out.r.note_undelivered(last_modified);
                let msg = format!("could not write {}: {e}", pkg.name);
                return out.fail(Failure::Tanium(Box::new(e)), msg);
            }
        };
        match to {
            Target::New => out.r.created += 1,
            Target::Update { .. } => out.r.updated += 1,
            Target::Replace { old_doc_id } => {
                out.r.created += 1;
                // The new document exists; only now may the old-format one go.
                self.remove_replaced(old_doc_id, &pkg.name, out);
            }
            Target::Adopt { doc_id, replaces } => {
                if written == doc_id {
                    out.r.updated += 1;
                } else {
                    // The server did not take the content in place: the new document replaces it.
                    out.r.created += 1;
                    self.remove_replaced(doc_id, &pkg.name, out);
                }
                if let Some(own) = replaces {
                    self.remove_replaced(own, &pkg.name, out);
                }
            }
        }
    }

    /// Removes the document a new one replaced (format switch, or an adoption the server
    /// filed as a new document).
    fn remove_replaced(&self, old_doc_id: i64, name: &str, out: &mut Out) {
        match self.tanium.delete_doc(old_doc_id) {
            Ok(()) => out.r.removed += 1,
            Err(e) => {
                out.r.failed_removals += 1;
                let msg = format!("could not remove the document {name} replaced: {e}");
                out.fail(Failure::Tanium(Box::new(e)), msg);
            }
        }
    }
}
