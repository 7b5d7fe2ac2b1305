//! The per-indicator planner: acts on each indicator's decision (see `decide`), says why in the
//! plan, hands writes to the driver as the pull goes on, and settles the removals. Its counters
//! stay on its own thread.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::intel::{self, Package};
use crate::tc::model::Indicator;

use super::decide::{decide, Decision};
use super::ops::{Op, Target};
use super::Pool;
use crate::sync::cause::Cause;
use crate::sync::doc_ops::{top_ups, DocOp};
use crate::sync::guard::RemovalGuard;
use crate::sync::index::{SourceIndex, GONE, SEEN};
use crate::sync::label_book::{LabelBook, LabelPlan, LabelSets};
use crate::sync::pull::describe;
use crate::sync::report::Counts;
use crate::sync::select::{NotSent, Selection};
use crate::sync::Run;

/// A removal waiting for the removal guard: the document, what the plan said of it, and why it
/// goes.
struct Removal {
    doc_id: i64,
    what: String,
    cause: Cause,
}

pub(super) struct Planner<'a, 'p> {
    pub run: &'a Run<'a>,
    /// None in a dry run: writes are only counted.
    pub pool: Option<&'p Pool<'p, 'a>>,
    pub counts: Counts,
    /// Why the removal check could not finish, for the run's errors.
    pub removal_error: Option<String>,
    /// Removals planned this run, sent only when the guard allows them all.
    removals: Vec<Removal>,
    pub labels: LabelBook,
}

impl AsMut<Counts> for Planner<'_, '_> {
    fn as_mut(&mut self) -> &mut Counts {
        &mut self.counts
    }
}

impl<'a, 'p> Planner<'a, 'p> {
    pub fn new(run: &'a Run<'a>, pool: Option<&'p Pool<'p, 'a>>, labels: LabelBook) -> Self {
        Planner {
            run,
            pool,
            counts: Counts::default(),
            removal_error: None,
            removals: Vec::new(),
            labels,
        }
    }

    fn dispatch(&mut self, op: Op) {
        if let Op::Write {
            to: Target::New, ..
        } = op
        {
            self.counts.creates += 1;
        }
        match self.pool {
            Some(pool) => pool.send(op),
            None => {
                let c = &mut self.counts;
                match op {
                    Op::Write {
                        to: Target::New, ..
                    } => c.would_create += 1,
                    Op::Write {
                        to: Target::Update { .. },
                        ..
                    } => c.would_update += 1,
                    Op::Write {
                        to: Target::Adopt { replaces, .. },
                        ..
                    } => {
                        c.would_update += 1;
                        c.would_remove += u64::from(replaces.is_some());
                    }
                    Op::Write {
                        to: Target::Replace { .. },
                        ..
                    } => {
                        c.would_create += 1;
                        c.would_remove += 1;
                    }
                    Op::Doc(DocOp::Delete { .. }) => c.would_remove += 1,
                    Op::Doc(DocOp::Labels { .. }) => c.would_relabel += 1,
                }
            }
        }
    }

    /// The writes stopped: removals would fail too, and must not be half done.
    pub fn stopped(&self) -> bool {
        self.pool.is_some_and(|p| p.stopped())
    }

    /// Everything the pull did not hand over once the writes stopped is undelivered.
    pub fn note_undelivered(&self, first: &Indicator) {
        if let Some(pool) = self.pool {
            let lm = first.last_modified_at().or(Some(self.run.opts.now));
            pool.note(|r| r.note_undelivered(lm));
        }
    }

    /// Plans one page; the first indicator it could not hand over when the writes stopped.
    pub fn plan_page(
        &mut self,
        page: Vec<Indicator>,
        (sel, cap): (&Selection, Option<u64>),
        index: &mut SourceIndex,
    ) -> Result<Option<Indicator>> {
        for ind in page {
            if self.stopped() {
                return Ok(Some(ind));
            }
            let decision = decide(&ind, sel, cap, index);
            self.act(&ind, decision, &index.label_sets)?;
        }
        Ok(None)
    }

    fn act(&mut self, ind: &Indicator, decision: Decision, sets: &LabelSets) -> Result<()> {
        let (to, pkg, listed) = match decision {
            Decision::NotSent { why, doc_id } => {
                why.count(ind, &mut self.counts, self.run.opts.dry_run);
                if let (Some(doc_id), NotSent::Out { cause, .. }) = (doc_id, why) {
                    self.remove(doc_id, describe(ind), cause);
                }
                return Ok(());
            }
            Decision::Repeat => {
                self.counts.matched += 1;
                self.counts.repeats += 1;
                return Ok(());
            }
            Decision::Unchanged { doc_id, labels } => {
                self.counts.matched += 1;
                self.counts.unchanged += 1;
                self.relabel(ind, doc_id, sets.get(labels));
                return Ok(());
            }
            Decision::Update {
                doc_id,
                pkg,
                verify,
                labels,
            } => {
                self.counts.matched += 1;
                return self.update(ind, doc_id, pkg, verify, sets.get(labels));
            }
            Decision::Create(pkg) => {
                self.run.plan(format!("create {}: new match", pkg.name));
                (Target::New, pkg, Some(&[][..]))
            }
            Decision::Adopt {
                doc_id,
                pkg,
                replaces,
            } => {
                self.counts.adopted += 1;
                self.run.plan(format!(
                    "adopt document {doc_id}: it covers {} (updated in place, keeping its id){}",
                    pkg.name,
                    replaces.map_or(String::new(), |own| format!(
                        "; the job's own document {own} for it goes"
                    ))
                ));
                // Its labels are read before they are set: others' labels on it stay.
                (Target::Adopt { doc_id, replaces }, pkg, None)
            }
            Decision::Replace { old_doc_id, pkg } => {
                self.run.plan(format!(
                    "replace {}: the intel format changed to {}",
                    pkg.name, self.run.config.intel_format
                ));
                (Target::Replace { old_doc_id }, pkg, Some(&[][..]))
            }
        };
        self.counts.matched += 1;
        self.write_dry(&pkg)?;
        let labels = self.labels_of(ind, listed);
        self.dispatch(Op::Write {
            to,
            pkg,
            last_modified: ind.last_modified_at(),
            labels,
        });
        Ok(())
    }

    /// A dry run first reads the stored document when the listing could not tell whether it
    /// changed, so the plan names what changed (or finds nothing did).
    fn update(
        &mut self,
        ind: &Indicator,
        doc_id: i64,
        pkg: Box<Package>,
        verify: bool,
        listed_labels: Option<&[i64]>,
    ) -> Result<()> {
        if self.run.opts.dry_run {
            match self.dry_update_reason(doc_id, &pkg, verify) {
                Some(why) => self.run.plan(format!("update {}: {why}", pkg.name)),
                None => {
                    self.counts.unchanged += 1;
                    self.relabel(ind, doc_id, listed_labels);
                    return Ok(());
                }
            }
            self.write_dry(&pkg)?;
        }
        let labels = self.labels_of(ind, listed_labels);
        self.dispatch(Op::Write {
            to: Target::Update { doc_id, verify },
            pkg,
            last_modified: ind.last_modified_at(),
            labels,
        });
        Ok(())
    }

    /// Plans a removal; it is sent by [`Planner::settle_removals`], when the guard allows.
    pub fn remove(&mut self, doc_id: i64, what: String, cause: Cause) {
        self.run.plan(format!("remove {what}: {cause}"));
        *self.counts.removals.entry(cause.key()).or_default() += 1;
        self.removals.push(Removal {
            doc_id,
            what,
            cause,
        });
    }

    /// A full reconcile after a complete pull: every document the pull did not meet goes.
    pub fn sweep(&mut self, index: &mut SourceIndex, floor: Option<time::OffsetDateTime>) {
        for (key, doc_id) in index.take_unseen() {
            let what = format!("document {doc_id} ({key:032x})");
            self.remove(doc_id, what, Cause::NotSelected { floor });
        }
    }

    /// Sends the planned removals or, when those the guard weighs are more than Maximum
    /// Removal Percent allows of the `held` the source held with this run's new documents,
    /// none of those (false then). The others still go: they take no indicator with them.
    pub fn settle_removals(&mut self, held: u64) -> bool {
        let removals = std::mem::take(&mut self.removals);
        let n = removals.iter().filter(|r| r.cause.weighed()).count() as u64;
        let guard = RemovalGuard {
            rails: &self.run.config.rails,
            dry_run: self.run.opts.dry_run,
        };
        let allowed = guard.allows(n, held + self.counts.creates, removals.len() as u64 - n);
        if !allowed {
            self.counts.held_back = n;
        }
        for Removal {
            doc_id,
            what,
            cause,
        } in removals
        {
            if allowed || !cause.weighed() {
                self.dispatch(Op::Doc(delete(doc_id, what, cause)));
            }
        }
        allowed
    }

    /// Why a dry run would update this document, from the stored copy's description (None:
    /// the stored copy is current after all).
    fn dry_update_reason(&self, doc_id: i64, pkg: &Package, verify: bool) -> Option<String> {
        let changed = || Some("changed in ThreatConnect".to_string());
        let description = match self.run.tanium.get_doc(doc_id) {
            Ok(Some(d)) => d.description,
            Ok(None) => None,
            Err(e) => {
                log::debug!("could not read intel {doc_id} for the plan: {e}");
                None
            }
        };
        let Some(description) = description else {
            return changed();
        };
        if verify && intel::rev_from_doc(Some(&description)) == Some(pkg.rev) {
            return None;
        }
        let fields = intel::changed_fields(&description, &pkg.description);
        Some(if fields.is_empty() {
            "the document's content changed".into()
        } else {
            format!("{} changed", fields.join(", "))
        })
    }

    fn write_dry(&self, pkg: &Package) -> Result<()> {
        let opts = self.run.opts;
        if let (true, Some(d)) = (opts.dry_run, opts.out_dir.as_ref()) {
            let path: PathBuf = d.join(&pkg.file_name);
            fs::write(&path, pkg.body.as_bytes()).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    fn label_plan(&mut self, ind: &Indicator, current: Option<&[i64]>) -> Option<LabelPlan> {
        let desired = self.labels.desired(self.run.tanium, ind)?;
        Some(LabelPlan {
            desired,
            managed: self.labels.managed(),
            current: current.map(Arc::from),
        })
    }

    /// The label plan of a document being written (`current`: its labels as listed, none for
    /// a new one), with its plan line when the change is known.
    pub fn labels_of(&mut self, ind: &Indicator, current: Option<&[i64]>) -> Option<LabelPlan> {
        let plan = self.label_plan(ind, current)?;
        if let Some(current) = current {
            let change = plan.change(current);
            if !change.is_empty() {
                self.run.plan(self.labels.describe(&describe(ind), &change));
            }
        }
        Some(plan)
    }

    /// A document whose content is current gets a label change of its own when its listed
    /// labels differ from the rules, or, when the listing does not show them, during a pass
    /// over every document's labels (the worker reads them first).
    pub fn relabel(&mut self, ind: &Indicator, doc_id: i64, current: Option<&[i64]>) {
        let Some(plan) = self.label_plan(ind, current) else {
            return;
        };
        let what = describe(ind);
        match current {
            Some(current) => {
                let change = plan.change(current);
                if change.is_empty() {
                    return;
                }
                self.run.plan(self.labels.describe(&what, &change));
            }
            None if self.labels.pass => self.run.plan(format!(
                "labels {what}: read from Tanium, then brought to {}",
                self.labels.names(&plan.desired)
            )),
            None => return,
        }
        self.dispatch(Op::Doc(DocOp::Labels {
            doc_id,
            what,
            plan,
            last_modified: ind.last_modified_at(),
        }));
    }

    /// Documents the pull did not meet keep the job's own labels (see [`top_ups`]).
    pub fn sweep_labels(&mut self, index: &mut SourceIndex) {
        let sets = &index.label_sets;
        let unseen = index
            .map
            .iter()
            .filter(|(_, e)| e.flags & (SEEN | GONE) == 0 && e.doc_id >= 0)
            .map(|(_, e)| {
                (
                    e.doc_id,
                    format!("document {}", e.doc_id),
                    sets.get(e.labels),
                )
            });
        for op in top_ups(self.run, &mut self.labels, unseen) {
            self.dispatch(Op::Doc(op));
        }
    }
}

/// A document's removal; per indicator, one indicator goes with it unless its indicators
/// have documents of this layout now.
pub(super) fn delete(doc_id: i64, what: String, cause: Cause) -> DocOp {
    DocOp::Delete {
        doc_id,
        what,
        members: u64::from(cause != Cause::Relaid),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intel::Format;
    use crate::sync::testkit::{host, Kit};
    use crate::tanium::model::IntelDoc;
    use serde_json::json;

    /// The source holding `ind` as rendered now, as document `doc_id` (listed without its
    /// description, as real listings are).
    fn list(index: &mut SourceIndex, doc_id: i64, ind: &Indicator) {
        let p = intel::render(ind, Format::Stix).unwrap();
        let doc = IntelDoc {
            id: doc_id,
            source_id: Some(1),
            name: p.name.clone(),
            intrinsic_id: Some(p.identity.to_string()),
            md5: Some(p.md5_hex()),
            kind: Some(p.type_header().into()),
            ..IntelDoc::default()
        };
        index.add(doc, Format::Stix);
    }

    fn selection(kit: &Kit) -> Selection<'_> {
        Selection {
            filters: &kit.config.filters,
            format: kit.config.intel_format,
            guard: &kit.config.rails.guard,
            exclusions: kit.lists.exclusions(),
            expired_by: kit.config.rails.honor_expiry.then_some(kit.opts.now),
            cutoff: None,
        }
    }

    #[test]
    fn a_page_becomes_counts_writes_and_removals_by_cause() {
        let kit = Kit::new(Vec::new(), json!({ "exclude_tags": "Retired" }));
        let (a, b, x) = (
            host(1, "a.example"),
            host(2, "b.example"),
            host(3, "x.example"),
        );
        let mut index = SourceIndex::default();
        list(&mut index, 101, &a);
        list(&mut index, 102, &b);
        list(&mut index, 103, &x);
        let changed = Indicator {
            confidence: Some(90),
            ..b.clone()
        };
        let retired = Indicator {
            tags: vec!["Retired".into()],
            ..x.clone()
        };
        let page = vec![a.clone(), changed, host(4, "c.example"), retired, a];
        let run = kit.run(false);
        let mut p = Planner::new(&run, None, kit.book());
        let sel = selection(&kit);
        assert!(p
            .plan_page(page, (&sel, None), &mut index)
            .unwrap()
            .is_none());
        let c = &p.counts;
        assert_eq!((c.matched, c.unchanged, c.repeats), (4, 1, 1));
        assert_eq!((c.would_create, c.would_update), (1, 1));
        assert_eq!(c.excluded.get("Exclude Tags"), Some(&1));
        assert_eq!(c.removals.get("Exclude Tags"), Some(&1));
        assert_eq!(c.would_remove, 0, "removals wait for the guard");
        assert!(p.settle_removals(index.docs));
        assert_eq!((p.counts.would_remove, p.counts.held_back), (1, 0));
    }

    #[test]
    fn a_full_sweep_removes_what_the_pull_did_not_meet() {
        let kit = Kit::new(Vec::new(), json!({}));
        let (a, gone) = (host(1, "a.example"), host(2, "gone.example"));
        let mut index = SourceIndex::default();
        list(&mut index, 101, &a);
        list(&mut index, 102, &gone);
        let run = kit.run(true);
        let mut p = Planner::new(&run, None, kit.book());
        let sel = selection(&kit);
        p.plan_page(vec![a], (&sel, None), &mut index).unwrap();
        p.sweep(&mut index, None);
        assert_eq!(p.counts.removals.get("not selected any more"), Some(&1));
        assert!(p.settle_removals(index.docs));
        assert_eq!(p.counts.would_remove, 1);
    }

    #[test]
    fn the_guard_holds_back_what_leaves_the_source_and_lets_duplicates_go() {
        let kit = Kit::new(Vec::new(), json!({}));
        let run = kit.run(true);
        let mut p = Planner::new(&run, None, kit.book());
        for doc_id in 0..15 {
            let cause = Cause::NotSelected { floor: None };
            p.remove(doc_id, format!("document {doc_id}"), cause);
        }
        p.remove(99, "duplicate document 99".into(), Cause::Duplicate);
        assert!(!p.settle_removals(20), "15 of 20 is over 50%");
        assert_eq!((p.counts.held_back, p.counts.would_remove), (15, 1));
        let mut p = Planner::new(&run, None, kit.book());
        for doc_id in 0..10 {
            let cause = Cause::NotSelected { floor: None };
            p.remove(doc_id, format!("document {doc_id}"), cause);
        }
        assert!(p.settle_removals(20), "10 of 20 is not");
        assert_eq!((p.counts.held_back, p.counts.would_remove), (0, 10));
    }
}
