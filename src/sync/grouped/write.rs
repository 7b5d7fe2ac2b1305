//! Writing bucket documents: read what they hold, apply the run, write them back.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::intel::group::{self, BucketKey, Member};
use crate::intel::Format;
use crate::tanium::client::TaniumClient;
use crate::tanium::model::Upload;

use super::pull::{Gone, Rec, Spill};
use super::FAILURES_TO_ABORT;
use crate::sync::index::Listed;
use crate::sync::labels::{self, LabelPlan};
use crate::sync::layout;
use crate::words::counted;

/// A bucket document to write (or to read, apply and write back).
#[derive(Clone)]
pub(super) struct WriteJob {
    pub(super) key: BucketKey,
    /// Documents whose members it reads: the one in place (same bucket, current format) and,
    /// in a full reconcile, those it takes members from (a split, a merge, a format switch).
    pub(super) old: Vec<Listed>,
    /// The document kept in place, when there is one.
    pub(super) in_place: Option<i64>,
    /// Full reconcile: every member the bucket holds; incremental: the members to add or change.
    pub(super) recs: Recs,
    /// Incremental: identities to take out when present, with what a removal is (None: it moved
    /// to another label set's bucket, which is not a removal).
    pub(super) drops: Vec<(u128, Option<usize>)>,
    /// Full reconcile: parts of the old documents it reads that no bucket of the new layout
    /// reaches; their members are not selected any more, and this job (the first reader of the
    /// document) counts their removal.
    pub(super) sweep: Vec<BucketKey>,
    /// The labels the listing shows on the document kept in place (None: not shown).
    pub(super) labels_now: Option<Arc<[i64]>>,
}

/// Positions in the run's records: a full reconcile's bucket is one run of them.
#[derive(Debug, Clone)]
pub(super) enum Recs {
    Run(std::ops::Range<usize>),
    Some(Vec<usize>),
}

impl Recs {
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match self {
            Recs::Run(r) => Box::new(r.clone()),
            Recs::Some(v) => Box::new(v.iter().copied()),
        }
    }
}

pub(super) enum Job {
    Write(WriteJob),
    /// A label change alone.
    Labels {
        doc_id: i64,
        what: String,
        plan: LabelPlan,
    },
    Delete {
        doc_id: i64,
        what: String,
        /// A single document whose indicator is in a grouped one now.
        single: bool,
        /// Indicators that leave the source with it.
        members: u64,
    },
}

/// What one job did.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) created: u64,
    pub(super) updated: u64,
    pub(super) removed: u64,
    pub(super) unchanged: u64,
    /// Members taken out because they now belong to another label set's bucket (where they
    /// count as created: counted once, as updated, in the totals).
    pub(super) moved: u64,
    pub(super) held: u64,
    pub(super) over_cap: u64,
    pub(super) docs_created: u64,
    pub(super) docs_removed: u64,
    /// Of `docs_removed`, single documents whose indicator is in a grouped one now.
    pub(super) singles_replaced: u64,
    pub(super) relabelled: u64,
    pub(super) failed_writes: u64,
    /// Of `failed_writes`, documents whose labels could not be brought to the rules.
    pub(super) failed_labels: u64,
    pub(super) failed_removals: u64,
    /// A document that could not be read: its bucket was left as it is.
    pub(super) unreadable: bool,
    /// The job did not finish: the documents it read stay.
    pub(super) failed: bool,
    pub(super) wrote: bool,
    /// Documents it read that its own writes do not keep.
    pub(super) replaced: Vec<i64>,
    /// Documents it read (kept as they are when it fails).
    pub(super) read: Vec<i64>,
    pub(super) undelivered: Option<OffsetDateTime>,
    pub(super) errors: Vec<String>,
    pub(super) plan: Vec<String>,
    /// Tanium refused a write for a missing permission: the error, which names it.
    pub(super) forbidden: Option<String>,
}

impl Outcome {
    fn fail(&mut self, msg: String) {
        self.failed = true;
        self.errors.push(msg);
    }

    /// [`Outcome::fail`] for a write Tanium refused, keeping a missing permission apart.
    fn refused(&mut self, e: &Error, msg: String) {
        if let Error::Forbidden { .. } = e {
            self.forbidden.get_or_insert_with(|| e.to_string());
        }
        self.fail(msg);
    }
}

/// The members the documents a job read hold, and what the one kept in place says of itself.
pub(super) type Stored = (BTreeMap<u128, Member>, Option<group::Marker>);

/// What every job reads.
pub(super) struct Ctx<'a> {
    pub(super) tanium: &'a TaniumClient,
    pub(super) source_id: i64,
    pub(super) source_name: &'a str,
    pub(super) format: Format,
    pub(super) size: u64,
    pub(super) full: bool,
    pub(super) dry: bool,
    /// Removals are held back (Maximum Removal Percent): members that would go stay.
    pub(super) hold: bool,
    pub(super) recs: &'a [Rec],
    pub(super) spill: &'a Spill,
    /// Every identity the job sends this run, sorted (full reconcile with several label sets;
    /// empty: `recs` are in identity order and say it): a member missing from its bucket but
    /// sent moved; one not sent is removed.
    pub(super) desired: &'a [u128],
    pub(super) gone: &'a [Gone],
    pub(super) names: &'a HashMap<u32, Vec<String>>,
    pub(super) label_plans: &'a HashMap<u32, LabelPlan>,
    /// Incremental runs under Maximum Indicators: how many more the source may hold.
    pub(super) room: Option<AtomicI64>,
    pub(super) broken: AtomicBool,
    pub(super) consecutive: AtomicU32,
}

impl Ctx<'_> {
    /// Whether this run sends `id` (a full reconcile's records are every identity it sends).
    pub(super) fn sent(&self, id: u128) -> bool {
        if self.desired.is_empty() {
            self.recs.binary_search_by_key(&id, Rec::identity).is_ok()
        } else {
            self.desired.binary_search(&id).is_ok()
        }
    }

    pub(super) fn run(&self, job: Job) -> Outcome {
        let mut out = Outcome::default();
        if self.broken.load(Ordering::SeqCst) {
            // Not attempted: failed, without an error of its own (the one that stopped the
            // writes was logged).
            out.failed = true;
            match &job {
                Job::Write(w) => {
                    out.failed_writes += 1;
                    self.undelivered(w, &mut out);
                }
                Job::Labels { .. } => out.failed_writes += 1,
                Job::Delete { .. } => out.failed_removals += 1,
            }
            return out;
        }
        match job {
            Job::Write(w) => self.write(&w, &mut out),
            Job::Labels { doc_id, what, plan } => {
                if self.dry {
                    out.relabelled += 1;
                } else {
                    match labels::bring(self.tanium, doc_id, &plan, None) {
                        Ok(changed) => {
                            out.relabelled += u64::from(changed);
                            out.wrote |= changed;
                        }
                        Err(e) => {
                            out.failed_writes += 1;
                            out.failed_labels += 1;
                            out.refused(&e, format!("could not label {what}: {e}"));
                        }
                    }
                }
            }
            Job::Delete {
                doc_id,
                what,
                single,
                members,
            } => {
                if !self.dry {
                    if let Err(e) = self.tanium.delete_doc(doc_id) {
                        out.failed_removals += 1;
                        out.refused(&e, format!("could not remove {what}: {e}"));
                        return self.settled(out);
                    }
                    out.wrote = true;
                }
                out.removed += members;
                out.docs_removed += 1;
                out.singles_replaced += u64::from(single);
            }
        }
        self.settled(out)
    }

    fn settled(&self, out: Outcome) -> Outcome {
        if out.forbidden.is_some() {
            // Every other write needs the same permission: none is sent after this one.
            if !self.broken.swap(true, Ordering::SeqCst) {
                log::error!("Tanium refuses writes to this account: stopping writes for this run");
            }
        } else if out.failed && !out.unreadable {
            if self.consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= FAILURES_TO_ABORT
                && !self.broken.swap(true, Ordering::SeqCst)
            {
                log::error!(
                    "{FAILURES_TO_ABORT} Tanium writes failed in a row; stopping writes for this run"
                );
            }
        } else {
            self.consecutive.store(0, Ordering::SeqCst);
        }
        out
    }

    fn undelivered(&self, w: &WriteJob, out: &mut Outcome) {
        for r in w.recs.iter() {
            if let Some(t) = self.recs[r].modified() {
                out.undelivered = Some(out.undelivered.map_or(t, |o: OffsetDateTime| o.min(t)));
            }
        }
    }

    /// The members the old documents hold, by identity; Err when one cannot be read.
    /// Also what the document kept in place says of itself (its content, not the listing).
    fn stored(&self, w: &WriteJob) -> std::result::Result<Stored, String> {
        let mut stored = BTreeMap::new();
        let mut in_place = None;
        for d in &w.old {
            let doc = self
                .tanium
                .get_doc(d.doc_id)
                .map_err(|e| format!("could not read {}: {e}", d.name))?;
            let Some(contents) = doc.and_then(|d| d.contents) else {
                continue;
            };
            let read = group::read(&contents).map_err(|why| {
                format!(
                    "grouped document {} \"{}\" cannot be read ({why}): nothing in it was changed",
                    d.doc_id, d.name
                )
            })?;
            if Some(d.doc_id) == w.in_place {
                in_place = read.marker;
            }
            for m in read.members {
                stored.insert(m.identity.as_u128(), m);
            }
        }
        Ok((stored, in_place))
    }

    fn write(&self, w: &WriteJob, out: &mut Outcome) {
        out.read = w.old.iter().map(|d| d.doc_id).collect();
        let (stored, marker) = match self.stored(w) {
            Ok(s) => s,
            Err(msg) => {
                out.unreadable = msg.contains("cannot be read");
                out.failed_writes += 1;
                out.fail(msg);
                self.undelivered(w, out);
                return;
            }
        };
        let members = match self.members(w, stored, out) {
            Ok(m) => m,
            Err(msg) => {
                out.failed_writes += 1;
                out.fail(msg);
                self.undelivered(w, out);
                return;
            }
        };
        let ids: Vec<u128> = members.keys().copied().collect();
        // Held members count toward the size like any other: it holds after every run.
        let parts = layout::split(w.key, &ids, self.size);
        if parts.len() > 1 {
            out.plan.push(format!(
                "split group {} into {}",
                w.key,
                parts
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let names = self.names.get(&w.key.labels).cloned().unwrap_or_default();
        let mut members = members;
        for part in &parts {
            let mut chunk: Vec<Member> = ids[layout::range(&ids, part)]
                .iter()
                .filter_map(|id| members.remove(id))
                .collect();
            let doc = group::render(self.format, part, &mut chunk, self.source_name, &names);
            let in_place = w.in_place.filter(|_| *part == w.key);
            if let Err(e) = self.put(w, &doc, in_place, marker, out) {
                // The documents it read stay as they are: nothing it counted happened.
                (out.created, out.updated, out.removed, out.moved) = (0, 0, 0, 0);
                out.failed_writes += 1;
                out.refused(&e, format!("could not write group {}: {e}", doc.key));
                self.undelivered(w, out);
                return;
            }
        }
        if parts.is_empty() && !w.old.is_empty() {
            out.plan
                .push(format!("remove group {}: it holds no indicator now", w.key));
        }
        out.replaced = w
            .old
            .iter()
            .map(|d| d.doc_id)
            .filter(|id| !(Some(*id) == w.in_place && parts.contains(&w.key)))
            .collect();
    }

    /// The members the bucket holds after this run, counting what changed.
    fn members(
        &self,
        w: &WriteJob,
        mut stored: BTreeMap<u128, Member>,
        out: &mut Outcome,
    ) -> std::result::Result<BTreeMap<u128, Member>, String> {
        let mut next: BTreeMap<u128, Member> = BTreeMap::new();
        if self.full {
            for r in w.recs.iter() {
                let m = self.spill.member(&self.recs[r])?;
                match stored.remove(&m.identity.as_u128()) {
                    Some(s) if s.rev == m.rev => out.unchanged += 1,
                    Some(_) => out.updated += 1,
                    None => out.created += 1,
                }
                next.insert(m.identity.as_u128(), m);
            }
            for (id, m) in stored {
                if !w.key.covers(id) && !w.sweep.iter().any(|k| k.covers(id)) {
                    // (a document this bucket was split from: the other halves' jobs count it)
                    continue;
                }
                if self.sent(id) {
                    out.moved += 1;
                    continue;
                }
                if self.hold {
                    out.held += 1;
                    next.insert(id, m);
                } else {
                    out.removed += 1;
                    out.plan.push(format!(
                        "remove {} {} from group {}: not selected any more",
                        m.kind.as_str(),
                        m.value(),
                        w.key
                    ));
                }
            }
            return Ok(next);
        }
        next = stored;
        for r in w.recs.iter() {
            let m = self.spill.member(&self.recs[r])?;
            let id = m.identity.as_u128();
            match next.get(&id) {
                Some(s) if s.rev == m.rev => {
                    out.unchanged += 1;
                    continue;
                }
                Some(_) => out.updated += 1,
                None => {
                    if let Some(room) = &self.room {
                        if room.fetch_sub(1, Ordering::SeqCst) <= 0 {
                            out.over_cap += 1;
                            continue;
                        }
                    }
                    out.created += 1;
                }
            }
            next.insert(id, m);
        }
        for (id, why) in &w.drops {
            let Some(why) = why else {
                out.moved += u64::from(next.remove(id).is_some());
                continue;
            };
            if !next.contains_key(id) {
                continue;
            }
            if self.hold {
                out.held += 1;
                continue;
            }
            next.remove(id);
            out.removed += 1;
            let g = &self.gone[*why];
            out.plan
                .push(format!("remove {} from group {}: {}", g.what, w.key, g.why));
        }
        Ok(next)
    }

    /// Writes one document of the bucket (in place when it has one), then its labels.
    fn put(
        &self,
        w: &WriteJob,
        doc: &group::GroupDoc,
        in_place: Option<i64>,
        stored: Option<group::Marker>,
        out: &mut Outcome,
    ) -> Result<()> {
        let listed = w.old.iter().find(|d| Some(d.doc_id) == in_place);
        let current = in_place.and(stored).or(listed.and_then(|d| d.marker));
        if current.is_some_and(|m| m.digest == doc.digest && m.count == doc.count) {
            // The content is current; its labels may not be (a document read only because
            // another one reached into its bucket, or one renamed by hand).
            if let (Some(id), Some(plan), false) =
                (in_place, self.label_plans.get(&doc.key.labels), self.dry)
            {
                let mut plan = plan.clone();
                plan.current = w.labels_now.clone();
                if let Some(changed) = self.label(w, id, &plan, None, &doc.name, out) {
                    out.relabelled += u64::from(changed);
                    out.wrote |= changed;
                }
            }
            return Ok(());
        }
        let verb = if in_place.is_some() {
            "update"
        } else {
            "create"
        };
        out.plan.push(format!(
            "{verb} group {}: {} ({})",
            doc.key,
            counted(doc.count, "indicator"),
            doc.name
        ));
        if self.dry {
            out.docs_created += u64::from(in_place.is_none());
            return Ok(());
        }
        let up = Upload {
            body: &doc.body,
            kind: doc.type_header(),
            file_name: &doc.file_name,
        };
        let written = match in_place {
            Some(id) => self.tanium.update_doc(id, &up)?,
            None => self.tanium.create_doc(self.source_id, &up)?,
        };
        out.wrote = true;
        if in_place.is_some_and(|id| id != written.id) {
            // The server filed the content as a new document: the old one goes with the rest.
            out.docs_created += 1;
        }
        out.docs_created += u64::from(in_place.is_none());
        if let Some(plan) = self.label_plans.get(&doc.key.labels) {
            let mut plan = plan.clone();
            plan.current = match in_place {
                Some(_) => None,
                None => Some(Arc::from(Vec::new())),
            };
            self.label(w, written.id, &plan, written.label_ids, &doc.name, out);
        }
        Ok(())
    }

    /// Brings a written document's labels to `plan`; whether any changed. A failure is a
    /// failed write of the document's labels: its members are pulled again next run, and the
    /// run does not settle the labels.
    fn label(
        &self,
        w: &WriteJob,
        doc_id: i64,
        plan: &LabelPlan,
        answered: Option<Vec<i64>>,
        name: &str,
        out: &mut Outcome,
    ) -> Option<bool> {
        match labels::bring(self.tanium, doc_id, plan, answered) {
            Ok(changed) => Some(changed),
            Err(e) => {
                out.failed_writes += 1;
                out.failed_labels += 1;
                out.refused(&e, format!("could not label {name}: {e}"));
                self.undelivered(w, out);
                None
            }
        }
    }
}

/// Runs `jobs` on `workers` threads; their outcomes in no particular order.
pub(super) fn parallel(ctx: &Ctx, workers: usize, jobs: Vec<Job>) -> Vec<Outcome> {
    if ctx.dry || workers <= 1 {
        return jobs.into_iter().map(|j| ctx.run(j)).collect();
    }
    let queue = Mutex::new(jobs.into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).ok().flatten();
                let Some(job) = next else { break };
                let out = ctx.run(job);
                if let Ok(mut r) = results.lock() {
                    r.push(out);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}
