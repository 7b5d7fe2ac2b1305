//! The grouped sync (Indicators per Intel Document above 1): indicators share documents, one
//! per bucket (see `layout`), and a run writes only the documents whose members changed.
//!
//! The listing says each document's bucket, member count and content digest (its name), so a
//! full reconcile compares the digest of the members each bucket should hold with it and reads
//! and writes only the buckets that differ; an incremental run reads the documents of the
//! buckets its changes fall in, applies them and writes those back. The pull is written to a
//! scratch file (one line a member) so a million members never sit in memory; a bucket's
//! members are read back when its document is written, a few buckets at a time.
//!
//! Never destructive on surprise: a document that cannot be read is left as it is (its bucket
//! is not written, nothing in it is removed, the checkpoint stays); documents are created
//! before the ones they replace go (splits, merges, a format or size switch), and those go
//! only when every bucket that took their members was written.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::intel::group::{self, BucketKey, Member};
use crate::intel::{self, Format};
use crate::safety::Block;
use crate::tanium::client::TaniumClient;
use crate::tanium::model::Upload;
use crate::tc::client::TcClient;
use crate::tc::model::Indicator;

use super::index::{Listed, SourceIndex};
use super::labels::{self, LabelBook, LabelPlan};
use super::layout::{self, Layout};
use super::plan::{rank, Selection};
use super::planner::{describe, Counts, Planner, PullEnd};
use super::pool::Results;
use super::{Checkpoint, SyncOptions};

/// After this many jobs failed in a row Tanium is treated as down.
const FAILURES_TO_ABORT: u32 = 25;
/// Failures kept for the log summary and message.tc.
const KEPT_ERRORS: usize = 5;

/// Why the run must compare everything, from what the listing shows of a grouped source
/// (None: nothing of the kind).
pub(super) fn full_reason(index: &SourceIndex, format: Format) -> Option<&'static str> {
    if !index.map.is_empty() || !index.duplicates.is_empty() {
        return Some("Indicators per Intel Document changed: single documents become groups");
    }
    if index
        .groups
        .iter()
        .any(|g| g.format.is_some_and(|f| f != format))
    {
        return Some("the intel format changed");
    }
    let keys: Vec<BucketKey> = index.groups.iter().map(|g| g.key).collect();
    let distinct: HashSet<&BucketKey> = keys.iter().collect();
    if distinct.len() != keys.len() || Layout::from_keys(&keys).overlaps() {
        return Some("a bucket is in two documents (a split or merge stopped half-way)");
    }
    None
}

/// One kept indicator: where its member line is in the scratch file (40 bytes: a million
/// of them are the largest thing a run holds).
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// The identity's bits, high half first (two words keep the record 8-byte aligned).
    id: [u64; 2],
    rev: u64,
    /// Scratch file offset (low 40 bits) and line length (high 24 bits).
    at: u64,
    labels: u32,
    /// lastModified, Unix seconds (0: unknown).
    modified: u32,
}

const OFFSET_BITS: u32 = 40;

impl Rec {
    fn identity(&self) -> u128 {
        (u128::from(self.id[0]) << 64) | u128::from(self.id[1])
    }

    fn off(&self) -> u64 {
        self.at & ((1 << OFFSET_BITS) - 1)
    }

    fn len(&self) -> usize {
        (self.at >> OFFSET_BITS) as usize
    }

    fn modified(&self) -> Option<OffsetDateTime> {
        (self.modified != 0)
            .then(|| OffsetDateTime::from_unix_timestamp(i64::from(self.modified)).ok())
            .flatten()
    }
}

/// Records sorted by identity, as the layout reads identities.
struct RecIds<'a>(&'a [Rec]);

impl layout::Ids for RecIds<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn at(&self, i: usize) -> u128 {
        self.0[i].identity()
    }
}

/// The pull's members, one line each, in a scratch file deleted when the run ends.
struct Spill {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    reader: Option<File>,
    len: u64,
}

impl Spill {
    fn open(dir: &Path) -> Result<Spill> {
        let dir = if std::fs::create_dir_all(dir).is_ok() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("tanium-tr-groups-{}.tmp", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Spill {
            path,
            writer: Some(BufWriter::new(file)),
            reader: None,
            len: 0,
        })
    }

    /// Appends a line; where it is, as a record keeps it.
    fn put(&mut self, line: &str) -> Result<u64> {
        let w = self.writer.as_mut().expect("spill open for writing");
        w.write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        let at = self.len;
        self.len += line.len() as u64;
        let fits = at < (1 << OFFSET_BITS) && line.len() < (1 << (64 - OFFSET_BITS));
        if !fits {
            return Err(Error::io(
                &self.path,
                std::io::Error::other("scratch file or member line too large"),
            ));
        }
        Ok(at | ((line.len() as u64) << OFFSET_BITS))
    }

    fn seal(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let f = w
                .into_inner()
                .map_err(|e| Error::io(&self.path, e.into_error()))?;
            self.reader = Some(f);
        }
        Ok(())
    }

    fn member(&self, r: &Rec) -> std::result::Result<Member, String> {
        let f = self.reader.as_ref().ok_or("scratch file not sealed")?;
        let mut buf = vec![0u8; r.len()];
        f.read_exact_at(&mut buf, r.off())
            .map_err(|e| format!("scratch file unreadable: {e}"))?;
        let line = String::from_utf8(buf).map_err(|_| "scratch file damaged".to_string())?;
        Member::from_line(&line).ok_or_else(|| "scratch file damaged".to_string())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An indicator that no longer qualifies (incremental runs), with what the plan says of it.
struct Gone {
    identity: u128,
    what: String,
    why: String,
}

/// What the pull kept.
struct Pulled {
    recs: Vec<Rec>,
    spill: Spill,
    /// Label names by label-set hash.
    names: HashMap<u32, Vec<String>>,
    gone: Vec<Gone>,
}

/// Plans one indicator of the pull: kept as a member, or counted (and, when it may be in a
/// document, noted as gone).
fn take(p: &mut Planner, ind: &Indicator, sel: &Selection, pulled: &mut Pulled) -> Result<()> {
    let Some(kind) = ind.kind() else {
        p.counts.dropped_other_types += 1;
        return Ok(());
    };
    let gone = |list: &mut Vec<Gone>, why: String| {
        if let Ok(id) = intel::identity_of(&ind.owner_name, kind, &ind.summary) {
            list.push(Gone {
                identity: id.as_u128(),
                what: describe(ind),
                why,
            });
        }
    };
    if let Some(why) = p.config.filters.rejection(ind) {
        *p.counts.excluded.entry(why.filter).or_default() += 1;
        gone(&mut pulled.gone, why.detail);
        return Ok(());
    }
    let member = match group::member(ind) {
        Ok(m) => m,
        Err(invalid) => {
            log::warn!("{invalid}");
            p.counts.skipped_invalid += 1;
            return Ok(());
        }
    };
    if let Some(block) = sel.guard.check(kind, &member.value()) {
        p.counts.blocked += 1;
        if p.counts.blocked <= 50 {
            log::info!("not sent: {} ({}): {block}", member.title(), ind.owner_name);
        }
        let kind_of = match block {
            Block::Unsafe(_) => "unsafe",
            Block::NeverSend(_) => "on the Never Send list",
        };
        gone(&mut pulled.gone, format!("{kind_of}: {block}"));
        return Ok(());
    }
    if sel.cutoff.is_some_and(|c| rank(ind) > c) {
        p.counts.over_cap += 1;
        gone(&mut pulled.gone, "ranked beyond Maximum Indicators".into());
        return Ok(());
    }
    p.counts.matched += 1;
    let names = p.config.labels.for_indicator(ind);
    let labels = group::label_set_hash(&names);
    pulled.names.entry(labels).or_insert(names);
    let at = pulled.spill.put(&member.to_line())?;
    let id = member.identity.as_u128();
    pulled.recs.push(Rec {
        id: [(id >> 64) as u64, id as u64],
        labels,
        rev: member.rev.0,
        at,
        modified: ind
            .last_modified_at()
            .and_then(|t| u32::try_from(t.unix_timestamp()).ok())
            .unwrap_or(0),
    });
    Ok(())
}

/// A bucket document to write (or to read, apply and write back).
struct WriteJob {
    key: BucketKey,
    /// Documents whose members it reads: the one in place (same bucket, current format) and,
    /// in a full reconcile, those it takes members from (a split, a merge, a format switch).
    old: Vec<Listed>,
    /// The document kept in place, when there is one.
    in_place: Option<i64>,
    /// Full reconcile: every member the bucket holds; incremental: the members to add or change.
    recs: Recs,
    /// Incremental: identities to take out when present, with what a removal is (None: it moved
    /// to another label set's bucket, which is not a removal).
    drops: Vec<(u128, Option<usize>)>,
    /// Full reconcile: parts of the old documents it reads that no bucket of the new layout
    /// reaches; their members are not selected any more, and this job (the first reader of the
    /// document) counts their removal.
    sweep: Vec<BucketKey>,
}

/// Positions in the run's records: a full reconcile's bucket is one run of them.
#[derive(Debug, Clone)]
enum Recs {
    Run(std::ops::Range<usize>),
    Some(Vec<usize>),
}

impl Recs {
    fn iter(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match self {
            Recs::Run(r) => Box::new(r.clone()),
            Recs::Some(v) => Box::new(v.iter().copied()),
        }
    }
}

enum Job {
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
    },
}

/// What one job did.
#[derive(Debug, Default)]
struct Outcome {
    created: u64,
    updated: u64,
    removed: u64,
    unchanged: u64,
    /// Members taken out because they now belong to another label set's bucket (where they
    /// count as created: counted once, as updated, in the totals).
    moved: u64,
    held: u64,
    over_cap: u64,
    docs_created: u64,
    docs_removed: u64,
    relabelled: u64,
    failed_writes: u64,
    failed_removals: u64,
    /// A document that could not be read: its bucket was left as it is.
    unreadable: bool,
    /// The job did not finish: the documents it read stay.
    failed: bool,
    wrote: bool,
    /// Documents it read that its own writes do not keep.
    replaced: Vec<i64>,
    /// Documents it read (kept as they are when it fails).
    read: Vec<i64>,
    undelivered: Option<OffsetDateTime>,
    errors: Vec<String>,
    plan: Vec<String>,
}

impl Outcome {
    fn fail(&mut self, msg: String) {
        self.failed = true;
        self.errors.push(msg);
    }
}

/// The members the documents a job read hold, and what the one kept in place says of itself.
type Stored = (BTreeMap<u128, Member>, Option<group::Marker>);

/// What every job reads.
struct Ctx<'a> {
    tanium: &'a TaniumClient,
    source_id: i64,
    source_name: &'a str,
    format: Format,
    size: u64,
    full: bool,
    dry: bool,
    /// Removals are held back (Maximum Removal Percent): members that would go stay.
    hold: bool,
    recs: &'a [Rec],
    spill: &'a Spill,
    /// Every identity the job sends this run, sorted (full reconcile with several label sets;
    /// empty: `recs` are in identity order and say it): a member missing from its bucket but
    /// sent moved; one not sent is removed.
    desired: &'a [u128],
    gone: &'a [Gone],
    names: &'a HashMap<u32, Vec<String>>,
    label_plans: &'a HashMap<u32, LabelPlan>,
    /// Incremental runs under Maximum Indicators: how many more the source may hold.
    room: Option<AtomicI64>,
    broken: AtomicBool,
    consecutive: AtomicU32,
}

impl Ctx<'_> {
    /// Whether this run sends `id` (a full reconcile's records are every identity it sends).
    fn sent(&self, id: u128) -> bool {
        if self.desired.is_empty() {
            self.recs.binary_search_by_key(&id, Rec::identity).is_ok()
        } else {
            self.desired.binary_search(&id).is_ok()
        }
    }

    fn run(&self, job: Job) -> Outcome {
        let mut out = Outcome::default();
        if self.broken.load(Ordering::SeqCst) {
            out.fail("not attempted: Tanium writes kept failing".into());
            if let Job::Write(w) = &job {
                out.failed_writes += 1;
                self.undelivered(w, &mut out);
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
                            out.fail(format!("could not label {what}: {e}"));
                        }
                    }
                }
            }
            Job::Delete { doc_id, what } => {
                if !self.dry {
                    if let Err(e) = self.tanium.delete_doc(doc_id) {
                        out.failed_removals += 1;
                        out.fail(format!("could not remove {what}: {e}"));
                        return self.settled(out);
                    }
                    out.wrote = true;
                }
                out.docs_removed += 1;
            }
        }
        self.settled(out)
    }

    fn settled(&self, out: Outcome) -> Outcome {
        if out.failed && !out.unreadable {
            if self.consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= FAILURES_TO_ABORT {
                self.broken.store(true, Ordering::SeqCst);
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
        // Held back, members that should have gone stay: the bucket keeps its place rather
        // than split over them (a split now and a merge once they go would write every run).
        let parts = if ids.is_empty() {
            Vec::new()
        } else if self.hold {
            vec![w.key]
        } else {
            layout::split(w.key, &ids, self.size)
        };
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
                out.failed_writes += 1;
                out.fail(format!("could not write group {}: {e}", doc.key));
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
            return Ok(());
        }
        let verb = if in_place.is_some() {
            "update"
        } else {
            "create"
        };
        out.plan.push(format!(
            "{verb} group {}: {} indicators ({})",
            doc.key, doc.count, doc.name
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
            labels::bring(self.tanium, written.id, &plan, written.label_ids)?;
        }
        Ok(())
    }
}

/// Runs `jobs` on `workers` threads; their outcomes in no particular order.
fn parallel(ctx: &Ctx, workers: usize, jobs: Vec<Job>) -> Vec<Outcome> {
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

/// The grouped run's totals.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub created: u64,
    pub updated: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub moved: u64,
    pub held: u64,
    pub over_cap: u64,
    pub relabelled: u64,
    pub docs_created: u64,
    pub docs_removed: u64,
    pub failed_writes: u64,
    pub failed_removals: u64,
    pub unreadable: u64,
    pub wrote: bool,
    pub undelivered: Option<OffsetDateTime>,
    pub errors: Vec<String>,
}

impl Totals {
    fn add(&mut self, o: &Outcome) {
        self.created += o.created;
        self.updated += o.updated;
        self.removed += o.removed;
        self.unchanged += o.unchanged;
        self.moved += o.moved;
        self.held += o.held;
        self.over_cap += o.over_cap;
        self.relabelled += o.relabelled;
        self.docs_created += o.docs_created;
        self.docs_removed += o.docs_removed;
        self.failed_writes += o.failed_writes;
        self.failed_removals += o.failed_removals;
        self.unreadable += u64::from(o.unreadable);
        self.wrote |= o.wrote;
        if let Some(t) = o.undelivered {
            self.undelivered = Some(self.undelivered.map_or(t, |u| u.min(t)));
        }
        for e in &o.errors {
            log::error!("{e}");
            if self.errors.len() < KEPT_ERRORS {
                self.errors.push(e.clone());
            }
        }
    }
}

impl Totals {
    /// As the per-indicator pool would have counted it (indicators, not documents).
    pub fn into_results(self) -> Results {
        let moved = self.moved.min(self.created);
        Results {
            created: self.created - moved,
            updated: self.updated + moved,
            removed: self.removed,
            relabelled: self.relabelled,
            failed_labels: 0,
            unchanged: self.unchanged,
            failed_writes: self.failed_writes,
            failed_removals: self.failed_removals,
            errors: self.errors,
            oldest_undelivered: self.undelivered,
            wrote_anything: self.wrote,
            gave_up: false,
        }
    }
}

/// How the grouped part of a run ended.
pub(super) struct Ended {
    pub removal_error: Option<String>,
    pub pull: PullEnd,
    pub removals_complete: bool,
    pub totals: Totals,
    pub counts: Counts,
    pub label_error: Option<String>,
    pub docs_after: u64,
}

/// Pulls, plans per bucket, writes, and retires what was replaced.
#[allow(clippy::too_many_arguments)]
pub(super) fn reconcile(
    config: &JobConfig,
    checkpoint: &Checkpoint,
    opts: &SyncOptions,
    tc: &TcClient,
    tanium: &TaniumClient,
    source: (&str, Option<i64>),
    mut index: SourceIndex,
    full: bool,
    book: LabelBook,
) -> Result<Ended> {
    let mut p = Planner {
        config,
        opts,
        tanium,
        pool: None,
        counts: Counts::default(),
        removal_error: None,
        removals: Vec::new(),
        labels: book,
    };
    let (window, floor) = super::pull_window(config, checkpoint, opts.now, full);
    let query = crate::tc::tql::build(&config.filters, &window);
    log::info!("{}", super::describe_job(config));
    log::info!(
        "matching query ({}): {query}; grouped, {} indicators per document",
        if full {
            "every indicator the job selects"
        } else {
            "indicators modified since the last run"
        },
        config.per_document
    );
    let mut sel = Selection {
        filters: &config.filters,
        format: config.intel_format,
        guard: &config.rails.guard,
        cutoff: None,
        cap: None,
    };
    if let (true, Some(cap)) = (full, config.rails.max_indicators) {
        sel.cutoff = p.rank_cutoff(tc, &query, &sel, cap)?;
    }
    let mut pulled = Pulled {
        recs: Vec::new(),
        spill: Spill::open(&config.paths.temp)?,
        names: HashMap::new(),
        gone: Vec::new(),
    };
    let pull = p.pull_with(tc, &query, &mut |p, page| {
        for ind in &page {
            take(p, ind, &sel, &mut pulled)?;
        }
        Ok(None)
    })?;
    p.count_other_types(tc, &window);
    pulled.spill.seal()?;
    let mut removals_complete = pull.complete;
    if !full && pull.complete {
        let window = crate::tc::tql::Window {
            after: Some(checkpoint.last_modified),
            horizon: floor,
            until: Some(opts.now),
        };
        let gone = &mut pulled.gone;
        let found = p.removal_evidence(
            tc,
            checkpoint.last_modified,
            &window,
            &mut |_, identity, what, why, _| {
                gone.push(Gone {
                    identity,
                    what,
                    why: why.to_string(),
                });
            },
        );
        if let Err(e) = found {
            removals_complete = false;
            let msg = format!("could not check for removals: {e}");
            log::error!("{msg}");
            p.removal_error = Some(msg);
        }
    }
    // One record per identity, the first the pull met (scratch offsets grow with the pull).
    let mut recs = std::mem::take(&mut pulled.recs);
    let met = recs.len();
    recs.sort_unstable_by_key(|r| (r.identity(), r.off()));
    recs.dedup_by_key(|r| r.identity());
    let repeats = met - recs.len();
    // With one label set the records stay in identity order and answer "is it sent?" alone.
    let desired: Vec<u128> = if full && pulled.names.len() > 1 {
        recs.iter().map(Rec::identity).collect()
    } else {
        Vec::new()
    };
    recs.sort_unstable_by_key(|r| (r.labels, r.identity()));
    log::info!(
        "pull: {} indicators kept for {} label sets ({repeats} met twice)",
        recs.len(),
        pulled.names.len()
    );

    let mut label_plans = HashMap::new();
    if !(opts.dry_run && p.labels.error.is_some()) {
        for (hash, names) in &pulled.names {
            if let Some(ids) = p.labels.ids_for(tanium, names) {
                label_plans.insert(
                    *hash,
                    LabelPlan {
                        desired: ids,
                        managed: p.labels.managed(),
                        current: None,
                    },
                );
            }
        }
    }
    let held_before: u64 =
        index.groups.iter().map(Listed::count).sum::<u64>() + index.map.len() as u64;
    // Unsettled when removals are held back (see layout::rebalance).
    let replan = |p: &Planner, index: &mut SourceIndex, settle: bool| {
        plan_full(
            p,
            index,
            &recs,
            &desired,
            &label_plans,
            config.per_document,
            settle,
        )
    };
    let mut plan = if full {
        replan(&p, &mut index, true)
    } else {
        plan_incremental(&mut p, &index, &recs, &pulled.gone)
    };
    let broken_pull = !pull.complete;
    if broken_pull {
        // An incomplete pull removes nothing: only the buckets it adds to or changes are written.
        plan.retire.clear();
        for j in &mut plan.jobs {
            if let Job::Write(w) = j {
                w.drops.retain(|d| d.1.is_none());
            }
        }
    }
    let room = || {
        (!full)
            .then_some(config.rails.max_indicators)
            .flatten()
            .map(|cap| AtomicI64::new(cap as i64 - held_before as i64))
    };
    let ctx = Ctx {
        tanium,
        source_id: source.1.unwrap_or(0),
        source_name: source.0,
        format: config.intel_format,
        size: u64::from(config.per_document),
        full,
        dry: opts.dry_run,
        hold: false,
        recs: &recs,
        spill: &pulled.spill,
        desired: &desired,
        gone: &pulled.gone,
        names: &pulled.names,
        label_plans: &label_plans,
        room: room(),
        broken: AtomicBool::new(false),
        consecutive: AtomicU32::new(0),
    };
    // The removal guard: the most this run could remove; read what it would, when that much
    // would be too many.
    let mut ctx = ctx;
    let rails = &config.rails;
    let mut held_back = 0;
    if !broken_pull && rails.too_many_removals(plan.removal_bound, held_before) {
        let assess = Ctx { dry: true, ..ctx };
        let jobs: Vec<Job> = plan
            .jobs
            .iter()
            .filter_map(|j| match j {
                Job::Write(w) => Some(Job::Write(WriteJob {
                    key: w.key,
                    old: w.old.clone(),
                    in_place: w.in_place,
                    recs: w.recs.clone(),
                    drops: w.drops.clone(),
                    sweep: w.sweep.clone(),
                })),
                _ => None,
            })
            .collect();
        let would: u64 = parallel(&assess, config.workers, jobs)
            .iter()
            .map(|o| o.removed)
            .sum::<u64>()
            + plan.retired_members;
        ctx = Ctx {
            dry: opts.dry_run,
            room: room(),
            broken: AtomicBool::new(false),
            consecutive: AtomicU32::new(0),
            ..assess
        };
        if rails.too_many_removals(would, held_before) {
            held_back = would;
            ctx.hold = true;
            if full {
                plan = replan(&p, &mut index, false);
            }
            plan.retire.retain(|r| !r.guarded);
            let line = format!(
                "held back all {would} removals: more than {}% of the {held_before} indicators in the source (Maximum Removal Percent); nothing was removed",
                rails.max_removal_percent
            );
            log::warn!("{line}");
            if opts.dry_run {
                println!("guard: {line}");
            }
        }
    }
    let mut totals = Totals::default();
    let mut blocked: HashSet<i64> = HashSet::new();
    let mut replaced: BTreeSet<i64> = BTreeSet::new();
    let written = parallel(&ctx, config.workers, std::mem::take(&mut plan.jobs));
    for o in &written {
        for line in &o.plan {
            p.plan(line.clone());
        }
        totals.add(o);
        if o.failed {
            blocked.extend(o.read.iter().copied());
        } else {
            replaced.extend(o.replaced.iter().copied());
        }
    }
    // Documents replaced go only once every write that took their members went through.
    let clean = totals.failed_writes == 0 && !broken_pull;
    let mut retire: Vec<Job> = Vec::new();
    let mut seen: HashSet<i64> = HashSet::new();
    for r in std::mem::take(&mut plan.retire) {
        if (r.needs_clean && !clean) || blocked.contains(&r.doc_id) || !seen.insert(r.doc_id) {
            continue;
        }
        p.plan(format!("remove {}: {}", r.what, r.why));
        retire.push(Job::Delete {
            doc_id: r.doc_id,
            what: r.what,
        });
    }
    for doc_id in replaced {
        if blocked.contains(&doc_id) || !seen.insert(doc_id) {
            continue;
        }
        retire.push(Job::Delete {
            doc_id,
            what: format!("document {doc_id}"),
        });
    }
    let retired = parallel(&ctx, config.workers, retire);
    for o in &retired {
        totals.add(o);
    }
    if !ctx.hold {
        totals.removed += plan.retired_members;
    }
    totals.unchanged += plan.unchanged;
    let mut counts = p.counts;
    counts.over_cap += totals.over_cap;
    counts.held_back = held_back;
    let label_error = p.labels.error.clone();
    let docs_after = (index.docs + totals.docs_created).saturating_sub(totals.docs_removed);
    log::info!(
        "grouped: {} documents created, {} removed; {} indicators created, {} updated, {} removed, {} unchanged",
        totals.docs_created,
        totals.docs_removed,
        totals.created,
        totals.updated,
        totals.removed,
        totals.unchanged
    );
    if totals.unreadable > 0 {
        // What the unreadable documents hold is unknown: the next run starts where this one did.
        let keep = checkpoint.last_modified;
        totals.undelivered = Some(totals.undelivered.map_or(keep, |u| u.min(keep)));
    }
    let removals_complete = removals_complete
        && held_back == 0
        && totals.unreadable == 0
        && totals.failed_removals == 0
        && blocked.is_empty();
    Ok(Ended {
        removal_error: p.removal_error,
        pull,
        removals_complete,
        totals,
        counts,
        label_error,
        docs_after,
    })
}

/// A document to remove once the run's writes are done.
struct Retire {
    doc_id: i64,
    what: String,
    why: String,
    /// Counts toward the removal guard (its members are not sent any more).
    guarded: bool,
    /// Goes only when every write of the run went through (its members moved elsewhere).
    needs_clean: bool,
}

#[derive(Default)]
struct Plan {
    jobs: Vec<Job>,
    retire: Vec<Retire>,
    /// Documents read by jobs of other buckets (a split or merge in a full reconcile), by id.
    readers: BTreeMap<i64, Vec<BucketKey>>,
    /// The most indicators this run may remove (for the guard).
    removal_bound: u64,
    /// Indicators in documents retired whole (singles and groups no bucket takes).
    retired_members: u64,
    /// Indicators in buckets whose document is current.
    unchanged: u64,
}

fn what_group(d: &Listed) -> String {
    format!("grouped document {} \"{}\"", d.doc_id, d.name)
}

/// A full reconcile: the layout from the old one and every member, then a job per bucket whose
/// digest differs from what its document's name says.
fn plan_full(
    p: &Planner,
    index: &mut SourceIndex,
    recs: &[Rec],
    desired: &[u128],
    label_plans: &HashMap<u32, LabelPlan>,
    size: u32,
    settle: bool,
) -> Plan {
    let format = p.config.intel_format;
    let mut plan = Plan::default();
    let mut by_labels: BTreeMap<u32, Vec<&Listed>> = BTreeMap::new();
    for g in &index.groups {
        by_labels.entry(g.key.labels).or_default().push(g);
    }
    let mut label_sets: BTreeSet<u32> = by_labels.keys().copied().collect();
    label_sets.extend(recs.iter().map(|r| r.labels));
    let mut kept: HashSet<i64> = HashSet::new();
    let mut start = 0;
    for labels in label_sets {
        let end = start + recs[start..].partition_point(|r| r.labels == labels);
        let slice = &recs[start..end];
        let base = start;
        start = end;
        let ids = RecIds(slice);
        let old = by_labels.remove(&labels).unwrap_or_default();
        let old_keys: Vec<BucketKey> = old.iter().map(|g| g.key).collect();
        let leaves = layout::rebalance(labels, &old_keys, &ids, u64::from(size), settle);
        for key in leaves.iter().copied() {
            let range = layout::range(&ids, &key);
            let pairs: Vec<(intel::Identity, intel::Rev)> = slice[range.clone()]
                .iter()
                .map(|r| (intel::Identity::from_u128(r.identity()), intel::Rev(r.rev)))
                .collect();
            let digest = group::digest(format, &key, &pairs);
            let here = old
                .iter()
                .filter(|g| g.key == key && g.format.is_none_or(|f| f == format))
                .min_by_key(|g| g.doc_id);
            let same = here.is_some_and(|g| {
                g.marker
                    .is_some_and(|m| m.digest == digest && m.count == pairs.len() as u64)
            });
            if let (true, Some(g)) = (same, here) {
                kept.insert(g.doc_id);
                plan.unchanged += pairs.len() as u64;
                relabel(p, index, g, label_plans, &mut plan.jobs);
                continue;
            }
            let overlapping: Vec<Listed> = old
                .iter()
                .filter(|g| g.key.contains(&key) || key.contains(&g.key))
                .map(|g| (*g).clone())
                .collect();
            let mut sweep = Vec::new();
            for g in &overlapping {
                let readers = plan.readers.entry(g.doc_id).or_default();
                if readers.is_empty() {
                    sweep.extend(layout::uncovered(g.key, &leaves));
                }
                readers.push(key);
                plan.removal_bound += g.count();
            }
            if let Some(g) = here {
                kept.insert(g.doc_id);
            }
            plan.jobs.push(Job::Write(WriteJob {
                key,
                old: overlapping,
                in_place: here.map(|g| g.doc_id),
                recs: Recs::Run(base + range.start..base + range.end),
                drops: Vec::new(),
                sweep,
            }));
        }
        for g in old {
            if kept.contains(&g.doc_id) || plan.readers.contains_key(&g.doc_id) {
                continue;
            }
            if leaves
                .iter()
                .any(|k| k.contains(&g.key) || g.key.contains(k))
            {
                // A stale copy of a bucket whose document is current.
                plan.retire.push(Retire {
                    doc_id: g.doc_id,
                    what: what_group(g),
                    why: "another document holds its bucket".into(),
                    guarded: false,
                    needs_clean: true,
                });
                continue;
            }
            // No bucket of the new layout overlaps it: none of its members is sent any more.
            plan.removal_bound += g.count();
            plan.retired_members += g.count();
            plan.retire.push(Retire {
                doc_id: g.doc_id,
                what: what_group(g),
                why: "none of its indicators is selected any more".into(),
                guarded: true,
                needs_clean: false,
            });
        }
    }
    // Documents read by a job but not kept in place go once their readers wrote.
    for doc_id in plan.readers.keys() {
        if kept.contains(doc_id) {
            continue;
        }
        if let Some(g) = index.groups.iter().find(|g| g.doc_id == *doc_id) {
            plan.retire.push(Retire {
                doc_id: *doc_id,
                what: what_group(g),
                why: "its indicators are in the documents of the new layout".into(),
                guarded: false,
                needs_clean: true,
            });
        }
    }
    for (key, e) in index.map.iter() {
        let sent = if desired.is_empty() {
            recs.binary_search_by_key(key, Rec::identity).is_ok()
        } else {
            desired.binary_search(key).is_ok()
        };
        if !sent {
            plan.removal_bound += 1;
            plan.retired_members += 1;
        }
        plan.retire.push(Retire {
            doc_id: e.doc_id,
            what: format!("document {} ({key:032x})", e.doc_id),
            why: if sent {
                "its indicator is in a grouped document now".into()
            } else {
                "not selected any more".into()
            },
            guarded: !sent,
            needs_clean: sent,
        });
    }
    for (doc_id, name) in &index.duplicates {
        plan.retire.push(Retire {
            doc_id: *doc_id,
            what: format!("duplicate document {doc_id} \"{name}\""),
            why: "another document holds the same indicator".into(),
            guarded: false,
            needs_clean: true,
        });
    }
    if p.config.take_over_source {
        for (doc_id, name, _) in &index.unidentified {
            plan.retire.push(Retire {
                doc_id: *doc_id,
                what: format!("document {doc_id} \"{name}\" (not made by this job)"),
                why: "replaced: Take Over Source is on".into(),
                guarded: false,
                needs_clean: true,
            });
        }
    }
    plan
}

/// A label change for a document whose content is current, when its listed labels differ.
fn relabel(
    p: &Planner,
    index: &SourceIndex,
    g: &Listed,
    label_plans: &HashMap<u32, LabelPlan>,
    jobs: &mut Vec<Job>,
) {
    let Some(plan) = label_plans.get(&g.key.labels) else {
        return;
    };
    let mut plan = plan.clone();
    match index.label_sets.get(g.labels) {
        Some(current) => {
            let change = plan.change(current);
            if change.is_empty() {
                return;
            }
            p.plan_change(&what_group(g), &change);
            plan.current = Some(Arc::from(current));
        }
        None if p.labels.pass => plan.current = None,
        None => return,
    }
    jobs.push(Job::Labels {
        doc_id: g.doc_id,
        what: what_group(g),
        plan,
    });
}

/// An incremental run: each changed indicator goes to the bucket on its path (and out of any
/// other label set's bucket it may have been in); each indicator gone comes out of every bucket
/// that may hold it.
fn plan_incremental(p: &mut Planner, index: &SourceIndex, recs: &[Rec], gone: &[Gone]) -> Plan {
    let format = p.config.intel_format;
    let keys: Vec<BucketKey> = index.groups.iter().map(|g| g.key).collect();
    let layout = Layout::from_keys(&keys);
    let docs: HashMap<BucketKey, &Listed> = index
        .groups
        .iter()
        .filter(|g| g.format.is_none_or(|f| f == format))
        .map(|g| (g.key, g))
        .collect();
    let mut jobs: BTreeMap<BucketKey, WriteJob> = BTreeMap::new();
    fn job<'j>(
        jobs: &'j mut BTreeMap<BucketKey, WriteJob>,
        docs: &HashMap<BucketKey, &Listed>,
        key: BucketKey,
    ) -> &'j mut WriteJob {
        jobs.entry(key).or_insert_with(|| {
            let doc = docs.get(&key);
            WriteJob {
                key,
                old: doc.map(|d| vec![(*d).clone()]).unwrap_or_default(),
                in_place: doc.map(|d| d.doc_id),
                recs: Recs::Some(Vec::new()),
                drops: Vec::new(),
                sweep: Vec::new(),
            }
        })
    }
    let mut plan = Plan::default();
    let upserted: HashSet<u128> = recs.iter().map(Rec::identity).collect();
    for (i, r) in recs.iter().enumerate() {
        if let Recs::Some(v) = &mut job(&mut jobs, &docs, layout.route(r.labels, r.identity())).recs
        {
            v.push(i);
        }
        for k in layout.covering(r.identity()) {
            if k.labels != r.labels {
                job(&mut jobs, &docs, k).drops.push((r.identity(), None));
            }
        }
    }
    for (i, g) in gone.iter().enumerate() {
        if upserted.contains(&g.identity) {
            continue;
        }
        for k in layout.covering(g.identity) {
            plan.removal_bound += 1;
            job(&mut jobs, &docs, k).drops.push((g.identity, Some(i)));
        }
    }
    let touched: HashSet<i64> = jobs.values().filter_map(|j| j.in_place).collect();
    plan.jobs = jobs.into_values().map(Job::Write).collect();
    // Documents no change fell in keep the job's own labels (Tanium Labels).
    if let Some(fixed) = p.labels.fixed(p.tanium) {
        let managed = p.labels.managed();
        for g in &index.groups {
            if touched.contains(&g.doc_id) {
                continue;
            }
            let Some(current) = index.label_sets.get(g.labels) else {
                continue;
            };
            if fixed.iter().all(|id| current.binary_search(id).is_ok()) {
                continue;
            }
            let mut want: Vec<i64> = current.iter().chain(fixed.iter()).copied().collect();
            want.sort_unstable();
            want.dedup();
            let plan_l = LabelPlan {
                desired: want.into(),
                managed: managed.clone(),
                current: Some(Arc::from(current)),
            };
            p.plan_change(&what_group(g), &plan_l.change(current));
            plan.jobs.push(Job::Labels {
                doc_id: g.doc_id,
                what: what_group(g),
                plan: plan_l,
            });
        }
    }
    plan
}
