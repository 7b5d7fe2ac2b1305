//! Writing bucket documents: read what they hold, apply the run, write them back.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Result;
use crate::intel::group::{self, BucketKey, Member};
use crate::intel::Format;
use crate::tanium::client::TaniumClient;
use crate::tanium::model::Upload;

use super::layout;
use super::pull::{Kept, Spill};
use crate::sync::doc_ops::{label_failed, DocOp};
use crate::sync::drive::{Failure, Outcome, Work};
use crate::sync::index::Listed;
use crate::sync::label_book::{self, LabelPlan};
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
    /// Incremental: of the members it adds, those another label set's documents may hold
    /// (they may be moving here), with those documents.
    pub(super) from: HashMap<u128, Vec<Listed>>,
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
    Doc(DocOp),
}

/// What the run keeps of one job besides its counts: what it read and left behind, and its
/// plan lines.
#[derive(Debug, Default)]
pub(super) struct Trace {
    /// Documents it read that its own writes do not keep.
    pub(super) retired: Vec<i64>,
    /// Documents it read (kept as they are when it fails).
    pub(super) read: Vec<i64>,
    pub(super) plan: Vec<String>,
}

type Out = Outcome<Trace>;

/// Members by identity.
type Members = BTreeMap<u128, Member>;

/// The members the documents a job read hold, and what the one kept in place says of itself.
pub(super) type Stored = (Members, Option<group::Marker>);

/// What reading a job's documents or records gives, or why it could not (for the log).
type Read<T> = std::result::Result<T, (Failure, String)>;

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
    /// A member missing from its bucket but sent moved; one not sent is removed.
    pub(super) kept: Kept<'a>,
    pub(super) spill: &'a Spill,
    pub(super) names: &'a HashMap<u32, Vec<String>>,
    pub(super) label_plans: &'a HashMap<u32, LabelPlan>,
    /// Incremental runs under Maximum Indicators: how many more the source may hold.
    pub(super) room: Option<Room>,
}

/// How many more indicators an incremental run under Maximum Indicators may add. A member that
/// moves from another label set's document adds none, so it takes no room, whichever of the two
/// documents is written first: nothing is evicted between full reconciles.
pub(super) struct Room(Mutex<Ledger>);

#[derive(Default)]
struct Ledger {
    left: i64,
    /// Members taken out of a document for another label set's this run.
    moved_out: HashSet<u128>,
    /// Members that took room this run (one that turns out to have moved gives it back).
    took: HashSet<u128>,
}

impl Room {
    pub(super) fn new(left: i64) -> Room {
        Room(Mutex::new(Ledger {
            left,
            ..Ledger::default()
        }))
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id`, new to its bucket, may be added: it moved out of another label set's
    /// document, or there is room, or, short of room, `held_elsewhere` finds it in one.
    fn admits(&self, id: u128, held_elsewhere: impl FnOnce() -> Read<bool>) -> Read<bool> {
        {
            let mut l = self.ledger();
            if l.moved_out.contains(&id) {
                return Ok(true);
            }
            if l.left > 0 {
                l.left -= 1;
                l.took.insert(id);
                return Ok(true);
            }
        }
        // Checked again after the read: the other document may have been written meanwhile.
        Ok(held_elsewhere()? || self.ledger().moved_out.contains(&id))
    }

    /// `id` left its document for another label set's: where it went, it took no room.
    fn moved_out(&self, id: u128) {
        let mut l = self.ledger();
        l.moved_out.insert(id);
        if l.took.remove(&id) {
            l.left += 1;
        }
    }
}

impl Work<Ctx<'_>> for Job {
    type Kept = Trace;

    fn run(self, ctx: &Ctx, out: &mut Out) {
        match self {
            Job::Write(w) => ctx.write(&w, out),
            Job::Doc(op) => op.run(ctx.tanium, ctx.dry, out),
        }
    }

    fn not_attempted(self, ctx: &Ctx, out: &mut Out) {
        match self {
            Job::Write(w) => {
                out.r.failed_writes += 1;
                ctx.undelivered(&w, out);
                // What it would have read stays as it is.
                out.kept.read = w.old.iter().map(|d| d.doc_id).collect();
            }
            Job::Doc(op) => op.not_attempted(out),
        }
    }
}

impl Ctx<'_> {
    fn undelivered(&self, w: &WriteJob, out: &mut Out) {
        for r in w.recs.iter() {
            out.r.note_undelivered(self.kept.recs[r].modified());
        }
    }

    /// The members the old documents hold, by identity; Err when one cannot be read.
    /// Also what the document kept in place says of itself (its content, not the listing).
    fn stored(&self, w: &WriteJob) -> Read<Stored> {
        let mut stored = BTreeMap::new();
        let mut in_place = None;
        for d in &w.old {
            let Some(read) = self.read(d)? else {
                continue;
            };
            if Some(d.doc_id) == w.in_place {
                in_place = read.marker;
            }
            for m in read.members {
                stored.insert(m.identity.as_u128(), m);
            }
        }
        Ok((stored, in_place))
    }

    /// A grouped document as stored (None: it has no content).
    fn read(&self, d: &Listed) -> Read<Option<group::ReadGroup>> {
        let doc = match self.tanium.get_doc(d.doc_id) {
            Ok(doc) => doc,
            Err(e) => {
                let msg = format!("could not read {}: {e}", d.name);
                return Err((Failure::Tanium(Box::new(e)), msg));
            }
        };
        let Some(contents) = doc.and_then(|d| d.contents) else {
            return Ok(None);
        };
        group::read(&contents).map(Some).map_err(|why| {
            let msg = format!(
                "grouped document {} \"{}\" cannot be read ({why}): nothing in it was changed",
                d.doc_id, d.name
            );
            (Failure::Unreadable, msg)
        })
    }

    /// Whether one of the documents of other label sets `id` may be moving from holds it
    /// (`read`: what those documents hold, read once a job).
    fn held_elsewhere(
        &self,
        w: &WriteJob,
        id: u128,
        read: &mut HashMap<i64, HashSet<u128>>,
    ) -> Read<bool> {
        for d in w.from.get(&id).into_iter().flatten() {
            let ids = match read.entry(d.doc_id) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.read(d)?.map_or_else(HashSet::new, |g| {
                    g.members.iter().map(|m| m.identity.as_u128()).collect()
                })),
            };
            if ids.contains(&id) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn write(&self, w: &WriteJob, out: &mut Out) {
        out.kept.read = w.old.iter().map(|d| d.doc_id).collect();
        let read = self
            .stored(w)
            .and_then(|(stored, marker)| Ok((self.members(w, stored, out)?, marker)));
        let (members, marker) = match read {
            Ok(m) => m,
            Err((failure, msg)) => {
                out.r.unreadable += u64::from(matches!(failure, Failure::Unreadable));
                out.r.failed_writes += 1;
                out.fail(failure, msg);
                self.undelivered(w, out);
                return;
            }
        };
        let ids: Vec<u128> = members.keys().copied().collect();
        // Held members count toward the size like any other: it holds after every run.
        let parts = layout::split(w.key, &ids, self.size);
        if parts.len() > 1 {
            out.kept.plan.push(format!(
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
                (out.r.created, out.r.updated, out.r.removed, out.r.moved) = (0, 0, 0, 0);
                out.r.failed_writes += 1;
                let msg = format!("could not write group {}: {e}", doc.key);
                out.fail(Failure::Tanium(Box::new(e)), msg);
                self.undelivered(w, out);
                return;
            }
        }
        if parts.is_empty() && !w.old.is_empty() {
            out.kept
                .plan
                .push(format!("remove group {}: it holds no indicator now", w.key));
        }
        out.kept.retired = w
            .old
            .iter()
            .map(|d| d.doc_id)
            .filter(|id| !(Some(*id) == w.in_place && parts.contains(&w.key)))
            .collect();
    }

    /// The members the bucket holds after this run, counting what changed.
    fn members(&self, w: &WriteJob, stored: Members, out: &mut Out) -> Read<Members> {
        if self.full {
            self.members_full(w, stored, out)
        } else {
            self.members_incremental(w, stored, out)
        }
    }

    fn member(&self, r: usize) -> Read<Member> {
        self.spill
            .member(&self.kept.recs[r])
            .map_err(|m| (Failure::Local, m))
    }

    /// A full reconcile: the bucket's records, and of what its documents held besides, what
    /// moved to another label set's bucket and what is not sent any more (removed, or held).
    fn members_full(&self, w: &WriteJob, mut stored: Members, out: &mut Out) -> Read<Members> {
        let mut next = Members::new();
        for r in w.recs.iter() {
            let m = self.member(r)?;
            match stored.remove(&m.identity.as_u128()) {
                Some(s) if s.rev == m.rev => out.r.unchanged += 1,
                Some(_) => out.r.updated += 1,
                None => out.r.created += 1,
            }
            next.insert(m.identity.as_u128(), m);
        }
        for (id, m) in stored {
            if !w.key.covers(id) && !w.sweep.iter().any(|k| k.covers(id)) {
                // (a document this bucket was split from: the other halves' jobs count it)
                continue;
            }
            if self.kept.sent(id) {
                out.r.moved += 1;
                continue;
            }
            let cause = self.kept.cause_of(id);
            *out.r.removals.entry(cause.key()).or_default() += 1;
            if self.hold {
                out.r.held += 1;
                next.insert(id, m);
            } else {
                out.r.removed += 1;
                out.kept.plan.push(format!(
                    "remove {} {} from group {}: {cause}",
                    m.kind.as_str(),
                    m.value(),
                    w.key
                ));
            }
        }
        Ok(next)
    }

    /// An incremental run: what the documents hold, with the changes added and the drops
    /// taken out.
    fn members_incremental(&self, w: &WriteJob, mut next: Members, out: &mut Out) -> Read<Members> {
        let mut elsewhere = HashMap::new();
        for r in w.recs.iter() {
            let m = self.member(r)?;
            let id = m.identity.as_u128();
            match next.get(&id) {
                Some(s) if s.rev == m.rev => {
                    out.r.unchanged += 1;
                    continue;
                }
                Some(_) => out.r.updated += 1,
                None => {
                    if let Some(room) = &self.room {
                        if !room.admits(id, || self.held_elsewhere(w, id, &mut elsewhere))? {
                            out.r.over_cap += 1;
                            continue;
                        }
                    }
                    out.r.created += 1;
                }
            }
            next.insert(id, m);
        }
        for (id, why) in &w.drops {
            let Some(why) = why else {
                if next.remove(id).is_some() {
                    out.r.moved += 1;
                    if let Some(room) = &self.room {
                        room.moved_out(*id);
                    }
                }
                continue;
            };
            if !next.contains_key(id) {
                continue;
            }
            let g = &self.kept.gone[*why];
            *out.r.removals.entry(g.cause.key()).or_default() += 1;
            if self.hold {
                out.r.held += 1;
                continue;
            }
            next.remove(id);
            out.r.removed += 1;
            out.kept.plan.push(format!(
                "remove {} from group {}: {}",
                g.what, w.key, g.cause
            ));
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
        out: &mut Out,
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
                    out.r.relabelled += u64::from(changed);
                    out.r.wrote_anything |= changed;
                }
            }
            return Ok(());
        }
        let verb = if in_place.is_some() {
            "update"
        } else {
            "create"
        };
        out.kept.plan.push(format!(
            "{verb} group {}: {} ({})",
            doc.key,
            counted(doc.count, "indicator"),
            doc.name
        ));
        if self.dry {
            out.r.docs_created += u64::from(in_place.is_none());
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
        out.r.wrote_anything = true;
        if in_place.is_some_and(|id| id != written.id) {
            // The server filed the content as a new document: the old one goes with the rest.
            out.r.docs_created += 1;
        }
        out.r.docs_created += u64::from(in_place.is_none());
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
        out: &mut Out,
    ) -> Option<bool> {
        match label_book::bring(self.tanium, doc_id, plan, answered) {
            Ok(changed) => Some(changed),
            Err(e) => {
                label_failed(out, None, format!("could not label {name}: {e}"), e);
                self.undelivered(w, out);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no() -> Read<bool> {
        Ok(false)
    }

    #[test]
    fn a_move_takes_no_room_whichever_document_is_written_first() {
        // The old document first: the member is known to have moved.
        let room = Room::new(0);
        room.moved_out(7);
        assert!(room.admits(7, no).unwrap());
        assert!(!room.admits(8, no).unwrap(), "a newcomer needs room");
        // The new document first, short of room: the old document still holds it.
        let room = Room::new(0);
        assert!(room.admits(7, || Ok(true)).unwrap());
        room.moved_out(7);
        assert!(!room.admits(8, no).unwrap(), "the move gave no room away");
        // The new document first, with room: the move gives the room back to a newcomer.
        let room = Room::new(1);
        assert!(room.admits(7, no).unwrap());
        assert!(!room.admits(8, no).unwrap());
        room.moved_out(7);
        assert!(room.admits(8, no).unwrap());
        assert!(!room.admits(9, no).unwrap(), "the cap holds");
    }

    #[test]
    fn short_of_room_an_unreadable_document_fails_the_job() {
        let room = Room::new(0);
        let read = room.admits(7, || Err((Failure::Unreadable, "cannot be read".into())));
        assert!(read.is_err());
    }
}
