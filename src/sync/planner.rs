//! The planner: walks the TC pull, decides for each indicator (see `plan`), says why in the
//! plan, and hands writes to the pool. Its counters stay on its own thread.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::intel::{self, Package};
use crate::tanium::client::TaniumClient;
use crate::tc::client::TcClient;
use crate::tc::model::Indicator;
use crate::tc::tql;
use crate::words::counted;

use super::cause::Cause;
use super::index::SourceIndex;
use super::labels::{LabelBook, LabelSets};
use super::per_indicator::ops::Op;
use super::per_indicator::Pool;
use super::plan::{decide, Decision};
use super::report::{Counts, PullEnd};
use super::select::{log_blocked_rest, rank, select, NotSent, Rank, Selection, Verdict};
use super::{Stop, SyncOptions};

/// A removal waiting for the mass-removal guard: the document, what the plan said of it, and
/// why it goes.
pub(super) struct Removal {
    doc_id: i64,
    what: String,
    cause: Cause,
}

/// Plans one page of the pull; returns the first indicator it could not hand over.
pub(super) type PageFn<'f, 'a, 'p> =
    dyn FnMut(&mut Planner<'a, 'p>, Vec<Indicator>) -> Result<Option<Indicator>> + 'f;

pub(super) struct Planner<'a, 'p> {
    pub config: &'a JobConfig,
    pub opts: &'a SyncOptions,
    pub tanium: &'a TaniumClient,
    /// None in a dry run: writes are only counted.
    pub pool: Option<&'p Pool<'p, 'a>>,
    pub counts: Counts,
    /// Why the removal check could not finish, for the run's errors.
    pub removal_error: Option<String>,
    /// Removals planned this run, sent only when the guard allows them all.
    pub removals: Vec<Removal>,
    pub labels: LabelBook,
}

impl<'a, 'p> Planner<'a, 'p> {
    /// One plan line: printed (and logged) in a dry run, logged at debug otherwise.
    pub fn plan(&self, line: String) {
        if self.opts.dry_run {
            log::info!("plan: {line}");
            println!("{line}");
        } else {
            log::debug!("{line}");
        }
    }

    pub fn dispatch(&mut self, op: Op) {
        match self.pool {
            Some(pool) => pool.send(op),
            None => match op {
                Op::Create { .. } => self.counts.would_create += 1,
                Op::Update { .. } => self.counts.would_update += 1,
                Op::Adopt { replaces, .. } => {
                    self.counts.would_update += 1;
                    self.counts.would_remove += u64::from(replaces.is_some());
                }
                Op::Delete { .. } => self.counts.would_remove += 1,
                Op::Labels { .. } => self.counts.would_relabel += 1,
                Op::Replace { .. } => {
                    self.counts.would_create += 1;
                    self.counts.would_remove += 1;
                }
            },
        }
    }

    /// Tanium writes kept failing: removals would fail too, and must not be half done.
    pub fn broken(&self) -> bool {
        self.pool.is_some_and(|p| p.stopped())
    }

    /// Pulls `tql` page by page and plans every indicator. An error before the first page is
    /// the run's error (bad TQL, credentials, TC down); a later one ends the pull incomplete.
    pub fn pull(
        &mut self,
        tc: &TcClient,
        tql: &str,
        (sel, cap): (&Selection, Option<u64>),
        index: &mut SourceIndex,
    ) -> Result<PullEnd> {
        self.pull_with(tc, tql, &mut |p, page| p.plan_page(page, (sel, cap), index))
    }

    /// [`Planner::pull`] with `each` planning a page (it returns the first indicator it could
    /// not hand over when Tanium is down).
    pub fn pull_with(
        &mut self,
        tc: &TcClient,
        tql: &str,
        each: &mut PageFn<'_, 'a, 'p>,
    ) -> Result<PullEnd> {
        let started = Instant::now();
        let mut seen = 0u64;
        let mut pages = tc.indicators(tql);
        let mut end = PullEnd {
            complete: true,
            stop: None,
        };
        while let Some(page) = pages.next() {
            let page = match page {
                Ok(p) => p,
                Err(e) if pages.pages() == 0 => return Err(e),
                Err(e) => {
                    log::error!("ThreatConnect pull stopped: {e}");
                    end = PullEnd {
                        complete: false,
                        stop: Some(Stop::Pull(stop_reason(&e))),
                    };
                    break;
                }
            };
            seen += page.len() as u64;
            if let Some(undelivered) = each(self, page)? {
                // Tanium is down: everything from here on is undelivered.
                if let Some(pool) = self.pool {
                    let lm = undelivered.last_modified_at().or(Some(self.opts.now));
                    pool.note(|r| r.note_undelivered(lm));
                }
                end = PullEnd {
                    complete: false,
                    stop: Some(Stop::TaniumDown),
                };
                break;
            }
            let secs = started.elapsed().as_secs_f64().max(0.001);
            log::info!(
                "page {}: {} so far ({:.0}/s); {} matched, {} unchanged, {} skipped",
                pages.pages(),
                counted(seen, "indicator"),
                seen as f64 / secs,
                self.counts.matched,
                self.counts.unchanged,
                self.counts.skipped_invalid
            );
        }
        self.counts.dropped_other_types += pages.dropped();
        log_blocked_rest(&self.counts);
        Ok(end)
    }

    /// A full reconcile under Maximum Indicators reads the match set once more first, to know
    /// the rank of the last indicator that fits (None: all of them fit).
    pub fn rank_cutoff(
        &self,
        tc: &TcClient,
        tql: &str,
        sel: &Selection,
        cap: u64,
    ) -> Result<Option<Rank>> {
        log::info!("ranking pass for Maximum Indicators: {tql}");
        let mut ranks: Vec<Rank> = Vec::new();
        for page in tc.indicators(tql) {
            for ind in page? {
                let sent = select(&ind, sel, |i| intel::render(i, sel.format));
                if let Verdict::Sent(_) = sent {
                    ranks.push(rank(&ind));
                }
            }
        }
        ranks.sort_unstable();
        ranks.dedup_by_key(|r| r.3);
        log::info!(
            "Maximum Indicators {cap}: {} qualify{}",
            counted(ranks.len() as u64, "indicator"),
            if ranks.len() as u64 > cap {
                ", the best ranked are kept"
            } else {
                ""
            }
        );
        Ok(usize::try_from(cap)
            .ok()
            .and_then(|c| ranks.get(c.saturating_sub(1)).copied())
            .filter(|_| ranks.len() as u64 > cap))
    }

    /// Plans one page; the first indicator it could not hand over when Tanium is down.
    fn plan_page(
        &mut self,
        page: Vec<Indicator>,
        (sel, cap): (&Selection, Option<u64>),
        index: &mut SourceIndex,
    ) -> Result<Option<Indicator>> {
        for ind in page {
            if self.broken() {
                return Ok(Some(ind));
            }
            let decision = decide(&ind, sel, cap, index);
            self.act(&ind, decision, &index.label_sets)?;
        }
        Ok(None)
    }

    // One arm per decision, each short; the long arms live in their own methods.
    fn act(&mut self, ind: &Indicator, decision: Decision, sets: &LabelSets) -> Result<()> {
        let last_modified = ind.last_modified_at();
        match decision {
            Decision::NotSent { why, doc_id } => {
                why.count(ind, &mut self.counts, self.opts.dry_run);
                if let (Some(doc_id), NotSent::Out { cause, .. }) = (doc_id, why) {
                    self.remove(doc_id, describe(ind), cause);
                }
            }
            Decision::Repeat => {
                self.counts.matched += 1;
                self.counts.repeats += 1;
            }
            Decision::Unchanged { doc_id, labels } => {
                self.counts.matched += 1;
                self.counts.unchanged += 1;
                self.relabel(ind, doc_id, sets.get(labels));
            }
            Decision::Create(pkg) => {
                self.counts.matched += 1;
                self.plan(format!("create {}: new match", pkg.name));
                self.write_dry(&pkg)?;
                let labels = self.labels_of(ind, Some(&[]));
                self.dispatch(Op::Create {
                    pkg,
                    last_modified,
                    labels,
                });
            }
            Decision::Adopt {
                doc_id,
                pkg,
                replaces,
            } => {
                self.counts.matched += 1;
                self.counts.adopted += 1;
                self.plan(format!(
                    "adopt document {doc_id}: it covers {} (updated in place, keeping its id){}",
                    pkg.name,
                    replaces.map_or(String::new(), |own| format!(
                        "; the job's own document {own} for it goes"
                    ))
                ));
                self.write_dry(&pkg)?;
                // Its labels are read before they are set: others' labels on it stay.
                let labels = self.labels_of(ind, None);
                self.dispatch(Op::Adopt {
                    doc_id,
                    pkg,
                    last_modified,
                    labels,
                    replaces,
                });
            }
            Decision::Replace { old_doc_id, pkg } => {
                self.counts.matched += 1;
                self.plan(format!(
                    "replace {}: the intel format changed to {}",
                    pkg.name, self.config.intel_format
                ));
                self.write_dry(&pkg)?;
                let labels = self.labels_of(ind, Some(&[]));
                self.dispatch(Op::Replace {
                    old_doc_id,
                    pkg,
                    last_modified,
                    labels,
                });
            }
            Decision::Update {
                doc_id,
                pkg,
                verify,
                labels,
            } => {
                self.counts.matched += 1;
                self.update(ind, doc_id, pkg, verify, sets.get(labels))?;
            }
        }
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
        if self.opts.dry_run {
            match self.dry_update_reason(doc_id, &pkg, verify) {
                Some(why) => self.plan(format!("update {}: {why}", pkg.name)),
                None => {
                    self.counts.unchanged += 1;
                    self.relabel(ind, doc_id, listed_labels);
                    return Ok(());
                }
            }
            self.write_dry(&pkg)?;
        }
        let labels = self.labels_of(ind, listed_labels);
        self.dispatch(Op::Update {
            doc_id,
            pkg,
            last_modified: ind.last_modified_at(),
            verify,
            labels,
        });
        Ok(())
    }

    /// Plans a removal; it is sent by [`Planner::settle_removals`], when the guard allows.
    pub fn remove(&mut self, doc_id: i64, what: String, cause: Cause) {
        self.plan(format!("remove {what}: {cause}"));
        *self.counts.removals.entry(cause.key()).or_default() += 1;
        self.removals.push(Removal {
            doc_id,
            what,
            cause,
        });
    }

    /// Sends the planned removals, or, when those of indicators that left the selection would
    /// take more of the source (which held `docs` documents) than Maximum Removal Percent
    /// allows, none of those; false then. Duplicates still go: removing them leaves no
    /// indicator without a document.
    pub fn settle_removals(&mut self, docs: u64) -> bool {
        let removals = std::mem::take(&mut self.removals);
        let n = removals.iter().filter(|r| r.cause.weighed()).count() as u64;
        let rails = &self.config.rails;
        let hold = rails.too_many_removals(n, docs);
        if hold {
            self.counts.held_back = n;
            let others = removals.len() as u64 - n;
            let line = format!(
                "held back all {}: more than {}% of the {} in the source (Maximum Removal Percent); none of them was made{}",
                counted(n, "removal"),
                rails.max_removal_percent,
                counted(docs, "document"),
                if others > 0 {
                    format!(" ({others} duplicates still go)")
                } else {
                    String::new()
                }
            );
            log::warn!("{line}");
            if self.opts.dry_run {
                println!("guard: {line}");
            }
        }
        for Removal {
            doc_id,
            what,
            cause,
        } in removals
        {
            if !(hold && cause.weighed()) {
                self.dispatch(Op::Delete { doc_id, what });
            }
        }
        !hold
    }

    /// Why a dry run would update this document, from the stored copy's description (None:
    /// the stored copy is current after all).
    fn dry_update_reason(&self, doc_id: i64, pkg: &Package, verify: bool) -> Option<String> {
        let changed = || Some("changed in ThreatConnect".to_string());
        let description = match self.tanium.get_doc(doc_id) {
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
        if let (true, Some(d)) = (self.opts.dry_run, self.opts.out_dir.as_ref()) {
            let path: PathBuf = d.join(&pkg.file_name);
            fs::write(&path, pkg.body.as_bytes()).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// Counts the indicators user TQL selects that are of no type the job can send: the
    /// job's query leaves them out, so TC says how many there were.
    pub fn count_other_types(&mut self, tc: &TcClient, window: &tql::Window) {
        if let Some(q) = tql::other_types(&self.config.filters, window) {
            log::info!("count of the other types the TQL selects: {q}");
            match tc.count(&q) {
                Ok(n) => self.counts.dropped_other_types += n,
                Err(e) => log::warn!("could not count the indicators of other types: {e}"),
            }
        }
        if self.counts.dropped_other_types > 0 {
            log::info!(
                "{} not sent (type not Address/File/Host)",
                self.counts.dropped_other_types
            );
        }
    }
}

/// message.tc is short: an unreadable answer is said by what was wrong, not by the request.
fn stop_reason(e: &Error) -> String {
    match e {
        Error::Protocol { detail, .. } => detail.clone(),
        e => e.to_string(),
    }
}

pub(super) fn describe(ind: &Indicator) -> String {
    format!("{} {} ({})", ind.type_name, ind.summary, ind.owner_name)
}
