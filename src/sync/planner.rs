//! The planner: walks the TC pull, decides for each indicator (see `plan`), says why in the
//! plan, and hands writes to the pool. Its counters stay on its own thread.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::intel::{self, Package};
use crate::safety::Block;
use crate::tanium::client::TaniumClient;
use crate::tc::client::TcClient;
use crate::tc::model::Indicator;
use crate::tc::tql;
use crate::words::counted;

use super::index::SourceIndex;
use super::labels::{LabelBook, LabelSets};
use super::plan::{decide, rank, Decision, Rank, Selection};
use super::pool::{Op, Pool};
use super::{Stop, SyncOptions};

/// What the planner counted itself; in a dry run also the writes it would have sent.
#[derive(Debug, Default, Clone)]
pub(super) struct Counts {
    pub matched: u64,
    /// Matched indicators whose identity the pull had met already (one document serves both).
    pub repeats: u64,
    pub unchanged: u64,
    pub skipped_invalid: u64,
    pub dropped_other_types: u64,
    pub would_create: u64,
    pub would_update: u64,
    pub would_remove: u64,
    pub would_relabel: u64,
    /// Not sent: unsafe, or on the Never Send list.
    pub blocked: u64,
    /// Not sent: beyond Maximum Indicators.
    pub over_cap: u64,
    /// Removals the mass-removal guard held back.
    pub held_back: u64,
    /// Documents this run sends to be created (dry or not).
    pub creates: u64,
    /// Documents this job did not make, adopted (taking the source over).
    pub adopted: u64,
    /// Indicators TC returned that the job's filters leave out, by filter.
    pub excluded: BTreeMap<&'static str, u64>,
    /// Removals planned, by reason.
    pub removals: BTreeMap<&'static str, u64>,
}

/// At most this many blocked indicators are logged one by one per run (then a count).
const BLOCKED_LINES: u64 = 50;

/// A removal waiting for the mass-removal guard: the document and what the plan said of it.
pub(super) struct Removal {
    doc_id: i64,
    what: String,
    /// Counts toward the mass-removal guard (a duplicate does not: its indicator keeps the
    /// other document).
    guarded: bool,
}

/// How the pull ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PullEnd {
    pub complete: bool,
    pub stop: Option<Stop>,
}

/// Plans one page of the pull; returns the first indicator it could not hand over.
pub(super) type PageFn<'f, 'a> =
    dyn FnMut(&mut Planner<'a>, Vec<Indicator>) -> Result<Option<Indicator>> + 'f;

pub(super) struct Planner<'a> {
    pub config: &'a JobConfig,
    pub opts: &'a SyncOptions,
    pub tanium: &'a TaniumClient,
    /// None in a dry run: writes are only counted.
    pub pool: Option<&'a Pool<'a>>,
    pub counts: Counts,
    /// Why the removal check could not finish, for the run's errors.
    pub removal_error: Option<String>,
    /// Removals planned this run, sent only when the guard allows them all.
    pub removals: Vec<Removal>,
    pub labels: LabelBook,
}

impl<'a> Planner<'a> {
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
        if matches!(op, Op::Create { .. }) {
            self.counts.creates += 1;
        }
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
        self.pool.is_some_and(|p| p.broken())
    }

    /// Pulls `tql` page by page and plans every indicator. An error before the first page is
    /// the run's error (bad TQL, credentials, TC down); a later one ends the pull incomplete.
    pub fn pull(
        &mut self,
        tc: &TcClient,
        tql: &str,
        sel: &Selection,
        index: &mut SourceIndex,
    ) -> Result<PullEnd> {
        self.pull_with(tc, tql, &mut |p, page| p.plan_page(page, sel, index))
    }

    /// [`Planner::pull`] with `each` planning a page (it returns the first indicator it could
    /// not hand over when Tanium is down).
    pub fn pull_with(
        &mut self,
        tc: &TcClient,
        tql: &str,
        each: &mut PageFn<'_, 'a>,
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
                    pool.note_undelivered(undelivered.last_modified_at().or(Some(self.opts.now)));
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
        if self.counts.blocked > BLOCKED_LINES {
            log::info!(
                "... and {} more indicators not sent (unsafe or on the Never Send list)",
                self.counts.blocked - BLOCKED_LINES
            );
        }
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
                let Some(kind) = ind.kind() else { continue };
                if !sel.filters.matches(&ind) {
                    continue;
                }
                let sendable = intel::render(&ind, sel.format)
                    .is_ok_and(|p| sel.guard.check(kind, &p.value).is_none());
                if sendable {
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
        sel: &Selection,
        index: &mut SourceIndex,
    ) -> Result<Option<Indicator>> {
        for ind in page {
            if self.broken() {
                return Ok(Some(ind));
            }
            let decision = decide(&ind, sel, index);
            self.act(&ind, decision, &index.label_sets)?;
        }
        Ok(None)
    }

    // One arm per decision, each short; the long arms live in their own methods.
    fn act(&mut self, ind: &Indicator, decision: Decision, sets: &LabelSets) -> Result<()> {
        let last_modified = ind.last_modified_at();
        match decision {
            Decision::OtherType => self.counts.dropped_other_types += 1,
            Decision::Rejected { doc_id, why } => {
                *self.counts.excluded.entry(why.filter).or_default() += 1;
                if let Some(doc_id) = doc_id {
                    self.remove(doc_id, describe(ind), &why.detail, why.filter);
                }
            }
            Decision::Invalid(invalid) => {
                log::warn!("{invalid}");
                self.counts.skipped_invalid += 1;
            }
            Decision::Blocked {
                doc_id,
                name,
                block,
            } => self.blocked(ind, doc_id, &name, &block),
            Decision::OverCap { doc_id, name } => {
                self.counts.over_cap += 1;
                log::debug!("not sent: {name}: beyond Maximum Indicators");
                if let Some(doc_id) = doc_id {
                    let why = "ranked beyond Maximum Indicators";
                    self.remove(doc_id, describe(ind), why, "Maximum Indicators");
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

    fn blocked(&mut self, ind: &Indicator, doc_id: Option<i64>, name: &str, block: &Block) {
        self.counts.blocked += 1;
        if self.counts.blocked <= BLOCKED_LINES {
            log::info!("not sent: {name} ({}): {block}", ind.owner_name);
            if self.opts.dry_run {
                println!("not sent {name} ({}): {block}", ind.owner_name);
            }
        }
        if let Some(doc_id) = doc_id {
            let kind = match block {
                Block::Unsafe(_) => "unsafe",
                Block::NeverSend(_) => "Never Send",
            };
            self.remove(doc_id, describe(ind), &block.to_string(), kind);
        }
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
    pub fn remove(&mut self, doc_id: i64, what: String, why: &str, reason: &'static str) {
        self.plan(format!("remove {what}: {why}"));
        *self.counts.removals.entry(reason).or_default() += 1;
        let guarded = reason != "duplicate";
        self.removals.push(Removal {
            doc_id,
            what,
            guarded,
        });
    }

    /// Sends the planned removals, or, when those of indicators that left the selection would
    /// take more of the source (which held `docs` documents) than Maximum Removal Percent
    /// allows, none of those; false then. Duplicates still go: removing them leaves no
    /// indicator without a document.
    pub fn settle_removals(&mut self, docs: u64) -> bool {
        let removals = std::mem::take(&mut self.removals);
        let n = removals.iter().filter(|r| r.guarded).count() as u64;
        // The share is of the source with this run's new documents: a run held back still
        // creates, and measured without them the next run would find the same removals a
        // smaller share and make them with nobody raising the guard.
        let docs = docs + self.counts.creates;
        let rails = &self.config.rails;
        let hold = rails.too_many_removals(n, docs);
        if hold {
            self.counts.held_back = n;
            let others = removals.len() as u64 - n;
            let line = format!(
                "held back all {}: more than {}% of the {} in the source with this run's new ones (Maximum Removal Percent); none of them was made{}",
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
            guarded,
        } in removals
        {
            if !(hold && guarded) {
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
