//! The write pool: a few workers send creates, updates, deletes and label changes to Tanium in
//! parallel, so WAN latency does not serialise a first sync. Only their results cross the
//! mutex.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{mpsc, Mutex};

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::intel::{self, Package};
use crate::tanium::client::TaniumClient;
use crate::tanium::model::{IntelDoc, Upload};

use super::labels::LabelPlan;

/// After this many consecutive failed writes Tanium is treated as down and dispatch stops.
const CONSECUTIVE_FAILURES_TO_ABORT: u32 = 25;

/// How many failure descriptions are kept for the log summary and message.tc.
const KEPT_ERRORS: usize = 5;

/// One write. `labels` (None: labels are off this run) are brought to their plan right after
/// the content is written, from the labels the write's answer shows when it shows them.
pub(super) enum Op {
    Create {
        pkg: Box<Package>,
        last_modified: Option<OffsetDateTime>,
        labels: Option<LabelPlan>,
    },
    Update {
        doc_id: i64,
        pkg: Box<Package>,
        last_modified: Option<OffsetDateTime>,
        /// Read the stored marker first unless Tanium's md5 proved trustworthy this run.
        verify: bool,
        labels: Option<LabelPlan>,
    },
    Delete {
        doc_id: i64,
        what: String,
    },
    /// Taking a document over: rewritten in place under the root id it had. Should the server
    /// file the content as a new document instead, the old one goes. `replaces`: the job's own
    /// document for the same indicator, removed once the adopted one holds it.
    Adopt {
        doc_id: i64,
        pkg: Box<Package>,
        last_modified: Option<OffsetDateTime>,
        labels: Option<LabelPlan>,
        replaces: Option<i64>,
    },
    /// A format switch: create the new document first, delete the old one only once the new
    /// one exists, so a failure never leaves the indicator without a document.
    Replace {
        old_doc_id: i64,
        pkg: Box<Package>,
        last_modified: Option<OffsetDateTime>,
        labels: Option<LabelPlan>,
    },
    /// A label change alone: the content is current.
    Labels {
        doc_id: i64,
        what: String,
        labels: LabelPlan,
        last_modified: Option<OffsetDateTime>,
    },
}

/// What the workers did.
#[derive(Debug, Default)]
pub(super) struct Results {
    pub created: u64,
    pub updated: u64,
    pub removed: u64,
    /// Documents whose labels alone changed.
    pub relabelled: u64,
    /// Documents whose labels could not be brought to the rules (counted in `failed_writes`).
    pub failed_labels: u64,
    /// Updates that reading the stored document showed to be unneeded.
    pub unchanged: u64,
    pub failed_writes: u64,
    pub failed_removals: u64,
    /// The first few failures, for the log summary and message.tc.
    pub errors: Vec<String>,
    /// The oldest lastModified among indicators whose document could not be written.
    pub oldest_undelivered: Option<OffsetDateTime>,
    pub wrote_anything: bool,
    /// Writes stopped early: too many failures in a row, or a missing permission.
    pub gave_up: bool,
    /// Tanium refused a write for a missing permission (the error, which names it): writes
    /// stopped there, since every other write needs the same permission.
    pub forbidden: Option<String>,
    /// Documents of the other layout retired because their indicators have documents of this
    /// one now (grouped ones, or single ones in a grouped run): not indicators removed.
    pub replaced: u64,
}

impl Results {
    pub fn note_error(&mut self, msg: String) {
        log::error!("{msg}");
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(msg);
        }
    }

    pub fn note_undelivered(&mut self, lm: Option<OffsetDateTime>) {
        if let Some(lm) = lm {
            self.oldest_undelivered = Some(self.oldest_undelivered.map_or(lm, |o| o.min(lm)));
        }
    }

    /// Keeps the first missing permission a write met; true when `e` is one.
    pub fn note_forbidden(&mut self, e: &Error) -> bool {
        let forbidden = matches!(e, Error::Forbidden { .. });
        if forbidden && self.forbidden.is_none() {
            self.forbidden = Some(e.to_string());
        }
        forbidden
    }

    /// Counts an op that could not be attempted (Tanium is down).
    fn not_attempted(&mut self, op: Op) {
        match op {
            Op::Create { last_modified, .. }
            | Op::Update { last_modified, .. }
            | Op::Adopt { last_modified, .. }
            | Op::Replace { last_modified, .. } => {
                self.failed_writes += 1;
                self.note_undelivered(last_modified);
            }
            Op::Labels { last_modified, .. } => {
                self.failed_writes += 1;
                self.failed_labels += 1;
                self.note_undelivered(last_modified);
            }
            Op::Delete { .. } => self.failed_removals += 1,
        }
    }
}

/// Whether Tanium's listing `md5` is the MD5 of the bytes we upload (it is when the server
/// stores documents byte for byte, which is unconfirmed): learned from write answers.
const MD5_UNKNOWN: u8 = 0;
const MD5_TRUSTED: u8 = 1;
const MD5_UNTRUSTED: u8 = 2;

struct State<'a> {
    tanium: &'a TaniumClient,
    source_id: i64,
    rx: Mutex<mpsc::Receiver<Op>>,
    results: Mutex<Results>,
    broken: AtomicBool,
    consecutive: AtomicU32,
    md5_trust: AtomicU8,
}

/// Where the planner sends writes.
pub(super) struct Pool<'a> {
    tx: mpsc::SyncSender<Op>,
    state: &'a State<'a>,
}

impl Pool<'_> {
    pub fn send(&self, op: Op) {
        if let Err(mpsc::SendError(op)) = self.tx.send(op) {
            // All workers are gone: count the op as failed rather than lose it.
            self.state.results().not_attempted(op);
        }
    }

    /// Tanium kept failing: nothing more is worth sending.
    pub fn broken(&self) -> bool {
        self.state.broken.load(Ordering::SeqCst)
    }

    pub fn note_undelivered(&self, lm: Option<OffsetDateTime>) {
        self.state.results().note_undelivered(lm);
    }
}

/// Runs `plan` with a pool of `workers` writing to `source_id`, waits for every write, and
/// returns what `plan` returned and what the workers did.
pub(super) fn with_pool<R>(
    tanium: &TaniumClient,
    source_id: i64,
    workers: usize,
    plan: impl FnOnce(&Pool) -> R,
) -> (R, Results) {
    let workers = workers.max(1);
    let (tx, rx) = mpsc::sync_channel::<Op>(workers * 4);
    let state = State {
        tanium,
        source_id,
        rx: Mutex::new(rx),
        results: Mutex::new(Results::default()),
        broken: AtomicBool::new(false),
        consecutive: AtomicU32::new(0),
        md5_trust: AtomicU8::new(MD5_UNKNOWN),
    };
    let planned = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| state.work());
        }
        let pool = Pool { tx, state: &state };
        plan(&pool)
        // `pool` (the sender) drops here; the workers drain the queue and the scope joins them.
    });
    let results = state
        .results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    (planned, results)
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

impl State<'_> {
    fn results(&self) -> std::sync::MutexGuard<'_, Results> {
        self.results.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_op(&self) -> Option<Op> {
        self.rx.lock().ok()?.recv().ok()
    }

    fn work(&self) {
        while let Some(op) = self.next_op() {
            if self.broken.load(Ordering::SeqCst) {
                self.results().not_attempted(op);
                continue;
            }
            if self.verified_unchanged(&op) {
                self.results().unchanged += 1;
                if let Op::Update {
                    doc_id,
                    pkg,
                    last_modified,
                    labels: Some(labels),
                    ..
                } = op
                {
                    self.write_labels(doc_id, &pkg.name, &labels, last_modified);
                }
                continue;
            }
            self.write(op);
        }
    }

    /// For an update the listing could not decide: whether the stored document already
    /// carries this content's rev (then there is nothing to write).
    fn verified_unchanged(&self, op: &Op) -> bool {
        let Op::Update {
            doc_id,
            pkg,
            verify: true,
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

    fn label(&self, doc_id: i64, plan: &LabelPlan, answered: Option<Vec<i64>>) -> Result<bool> {
        super::labels::bring(self.tanium, doc_id, plan, answered)
    }

    /// The labels of a document just written; a failure is one more failed write of it (its
    /// indicator is pulled again next run).
    fn label_written(&self, doc: &IntelDoc, op: &Op) {
        let (Op::Create {
            labels: Some(plan),
            pkg,
            last_modified,
        }
        | Op::Update {
            labels: Some(plan),
            pkg,
            last_modified,
            ..
        }
        | Op::Replace {
            labels: Some(plan),
            pkg,
            last_modified,
            ..
        }
        | Op::Adopt {
            labels: Some(plan),
            pkg,
            last_modified,
            ..
        }) = op
        else {
            return;
        };
        if let Err(e) = self.label(doc.id, plan, doc.label_ids.clone()) {
            self.failed(|r| {
                r.failed_writes += 1;
                r.failed_labels += 1;
                r.note_undelivered(*last_modified);
                self.refused(&e, r);
                r.note_error(format!("could not label {}: {e}", pkg.name));
            });
        }
    }

    fn write_labels(
        &self,
        doc_id: i64,
        what: &str,
        plan: &LabelPlan,
        last_modified: Option<OffsetDateTime>,
    ) {
        match self.label(doc_id, plan, None) {
            Ok(true) => self.succeeded(|r| r.relabelled += 1),
            Ok(false) => {}
            Err(e) => self.failed(|r| {
                r.failed_writes += 1;
                r.failed_labels += 1;
                r.note_undelivered(last_modified);
                self.refused(&e, r);
                r.note_error(format!("could not label {what}: {e}"));
            }),
        }
    }

    fn write(&self, op: Op) {
        let tanium = self.tanium;
        // The id of the document written (an update may answer with a new one).
        let result = match &op {
            Op::Create { pkg, .. } | Op::Replace { pkg, .. } => tanium
                .create_doc(self.source_id, &upload_of(pkg))
                .inspect(|d| self.learn(d, pkg)),
            Op::Update { doc_id, pkg, .. } | Op::Adopt { doc_id, pkg, .. } => tanium
                .update_doc(*doc_id, &upload_of(pkg))
                .inspect(|d| self.learn(d, pkg)),
            Op::Delete { doc_id, .. } => tanium.delete_doc(*doc_id).map(|()| IntelDoc {
                id: *doc_id,
                ..IntelDoc::default()
            }),
            Op::Labels {
                doc_id,
                what,
                labels,
                last_modified,
            } => {
                self.write_labels(*doc_id, what, labels, *last_modified);
                return;
            }
        };
        let result = result.map(|doc| {
            self.label_written(&doc, &op);
            doc.id
        });
        match (op, result) {
            (
                Op::Replace {
                    old_doc_id, pkg, ..
                },
                Ok(_),
            ) => {
                self.succeeded(|r| r.created += 1);
                // The new document exists; only now may the old-format one go.
                self.remove_replaced(old_doc_id, &pkg.name);
            }
            (
                Op::Adopt {
                    doc_id,
                    pkg,
                    replaces,
                    ..
                },
                Ok(written),
            ) => {
                if written == doc_id {
                    self.succeeded(|r| r.updated += 1);
                } else {
                    // The server did not take the content in place: the new document replaces it.
                    self.succeeded(|r| r.created += 1);
                    self.remove_replaced(doc_id, &pkg.name);
                }
                if let Some(own) = replaces {
                    self.remove_replaced(own, &pkg.name);
                }
            }
            (Op::Create { .. }, Ok(_)) => self.succeeded(|r| r.created += 1),
            (Op::Update { .. }, Ok(_)) => self.succeeded(|r| r.updated += 1),
            (Op::Delete { .. }, Ok(_)) => self.succeeded(|r| r.removed += 1),
            (
                Op::Create {
                    pkg, last_modified, ..
                }
                | Op::Update {
                    pkg, last_modified, ..
                }
                | Op::Adopt {
                    pkg, last_modified, ..
                }
                | Op::Replace {
                    pkg, last_modified, ..
                },
                Err(e),
            ) => self.failed(|r| {
                r.failed_writes += 1;
                r.note_undelivered(last_modified);
                self.refused(&e, r);
                r.note_error(format!("could not write {}: {e}", pkg.name));
            }),
            (Op::Delete { what, .. }, Err(e)) => self.failed(|r| {
                r.failed_removals += 1;
                self.refused(&e, r);
                r.note_error(format!("could not remove {what}: {e}"));
            }),
            // (sent before the match)
            (Op::Labels { .. }, _) => {}
        }
    }

    /// Removes the document a new one replaced (format switch, or an adoption the server
    /// filed as a new document).
    fn remove_replaced(&self, old_doc_id: i64, name: &str) {
        let removed = self.tanium.delete_doc(old_doc_id);
        let mut r = self.results();
        match removed {
            Ok(()) => r.removed += 1,
            Err(e) => {
                r.failed_removals += 1;
                self.refused(&e, &mut r);
                r.note_error(format!(
                    "could not remove the document {name} replaced: {e}"
                ));
            }
        }
    }

    /// A missing permission stops the writes at once: trying the others would only meet it
    /// again.
    fn refused(&self, e: &Error, r: &mut Results) {
        if r.note_forbidden(e) && !self.broken.swap(true, Ordering::SeqCst) {
            r.gave_up = true;
            log::error!("Tanium refuses writes to this account: stopping writes for this run");
        }
    }

    fn succeeded(&self, count: impl FnOnce(&mut Results)) {
        let mut r = self.results();
        count(&mut r);
        r.wrote_anything = true;
        self.consecutive.store(0, Ordering::SeqCst);
    }

    fn failed(&self, count: impl FnOnce(&mut Results)) {
        let mut r = self.results();
        count(&mut r);
        if self.consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= CONSECUTIVE_FAILURES_TO_ABORT
            && !self.broken.swap(true, Ordering::SeqCst)
        {
            r.gave_up = true;
            r.note_error(format!(
                "{CONSECUTIVE_FAILURES_TO_ABORT} Tanium writes failed in a row; stopping writes for this run"
            ));
        }
    }
}
