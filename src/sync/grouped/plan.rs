//! Which buckets a run writes and which documents go: a full reconcile's layout, or an
//! incremental run's changes routed to their buckets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::intel;
use crate::intel::group::{self, BucketKey};

use super::layout::{self, Layout};
use super::pull::{Gone, Kept, Rec, RecIds};
use super::write::{Job, Recs, WriteJob};
use super::Books;
use crate::sync::cause::Cause;
use crate::sync::doc_ops::{top_ups, DocOp};
use crate::sync::index::{Listed, SourceIndex};
use crate::sync::label_book::LabelPlan;
use crate::sync::Run;

/// A document to remove once the run's writes are done.
pub(super) struct Retire {
    pub(super) doc_id: i64,
    pub(super) what: String,
    pub(super) cause: Cause,
    /// Goes only when every write of the run went through (its members moved elsewhere).
    pub(super) needs_clean: bool,
    /// Indicators that leave the source when it goes (its own job counts those of a grouped
    /// document it reads).
    pub(super) members: u64,
}

#[derive(Default)]
pub(super) struct Plan {
    pub(super) jobs: Vec<Job>,
    pub(super) retire: Vec<Retire>,
    /// Documents read by jobs of other buckets (a split or merge in a full reconcile), by id.
    pub(super) readers: BTreeMap<i64, Vec<BucketKey>>,
    /// The most indicators this run may remove (for the guard).
    pub(super) removal_bound: u64,
    /// Indicators in documents retired whole (single documents, documents not made by the
    /// job): what the guard weighs of them.
    pub(super) retired_members: u64,
    /// Indicators in buckets whose document is current.
    pub(super) unchanged: u64,
}

pub(super) fn what_group(d: &Listed) -> String {
    format!("grouped document {} \"{}\"", d.doc_id, d.name)
}

/// A full reconcile: the layout from the old one and every member, then a job per bucket whose
/// digest differs from what its document's name says.
// One pass per label set, then per bucket: each bucket's decision reads and extends the
// readers map and the kept set the pass over old documents needs, which helpers would only
// pass around.
pub(super) fn plan_full(
    run: &Run,
    b: &Books,
    index: &mut SourceIndex,
    kept_recs: Kept,
    label_plans: &HashMap<u32, LabelPlan>,
    (size, settle): (u32, bool),
) -> Plan {
    let recs = kept_recs.recs;
    let format = run.config.intel_format;
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
            let overlapping: Vec<Listed> = old
                .iter()
                .filter(|g| g.key.contains(&key) || key.contains(&g.key))
                .map(|g| (*g).clone())
                .collect();
            // Current, and no other document reaches into the bucket (another one, left by a run
            // cut short, must be read: what it holds that is not sent any more is a removal).
            let same = overlapping.len() == 1
                && here.is_some_and(|g| {
                    g.marker
                        .is_some_and(|m| m.digest == digest && m.count == pairs.len() as u64)
                });
            if let (true, Some(g)) = (same, here) {
                kept.insert(g.doc_id);
                plan.unchanged += pairs.len() as u64;
                relabel(run, b, index, g, label_plans, &mut plan.jobs);
                continue;
            }
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
            let mut w = WriteJob {
                key,
                old: overlapping,
                in_place: here.map(|g| g.doc_id),
                recs: Recs::Run(base + range.start..base + range.end),
                drops: Vec::new(),
                from: HashMap::new(),
                sweep,
                labels_now: None,
            };
            w.labels_now = labels_now(index, &w);
            plan.jobs.push(Job::Write(w));
        }
        for g in old {
            if kept.contains(&g.doc_id) || plan.readers.contains_key(&g.doc_id) {
                continue;
            }
            // No bucket of the new layout overlaps it: its members are either not sent any
            // more (removed) or sent under another label set (moved, not removed). Only
            // reading it tells which, for the guard and the counts; it goes once every
            // write that may hold its members went through.
            plan.removal_bound += g.count();
            kept.insert(g.doc_id);
            plan.retire.push(Retire {
                doc_id: g.doc_id,
                what: what_group(g),
                cause: Cause::Moved,
                needs_clean: true,
                members: 0,
            });
            plan.jobs.push(Job::Write(WriteJob {
                key: g.key,
                old: vec![g.clone()],
                in_place: Some(g.doc_id),
                recs: Recs::Run(base..base),
                drops: Vec::new(),
                from: HashMap::new(),
                sweep: vec![g.key],
                labels_now: None,
            }));
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
                cause: Cause::Moved,
                needs_clean: true,
                members: 0,
            });
        }
    }
    retire_singles_and_strays(run, index, kept_recs, &mut plan);
    plan
}

/// A full reconcile in grouped mode retires every per-indicator document (its indicator now
/// in a group, or not selected any more) and the strays (see [`SourceIndex::strays`]), once
/// every write went through.
fn retire_singles_and_strays(run: &Run, index: &mut SourceIndex, kept: Kept, plan: &mut Plan) {
    let strays = index.strays(run.config.take_over_source);
    // A single document whose indicator is sent goes once its group is written; one not sent
    // any more goes whatever the writes did.
    let singles = index.map.iter().map(|(key, e)| {
        let what = format!("document {} ({key:032x})", e.doc_id);
        match kept.sent(*key) {
            true => (e.doc_id, what, Cause::Relaid, true),
            false => (e.doc_id, what, kept.cause_of(*key), false),
        }
    });
    let strays = strays
        .into_iter()
        .map(|(id, what, cause)| (id, what, cause, true));
    for (doc_id, what, cause, needs_clean) in singles.chain(strays) {
        // Weighed ones take an indicator with them (a foreign one: not known to be sent).
        let members = u64::from(cause.weighed());
        plan.removal_bound += members;
        plan.retired_members += members;
        plan.retire.push(Retire {
            doc_id,
            what,
            cause,
            needs_clean,
            members,
        });
    }
}

/// The labels the listing shows on the document a job keeps in place (None: not shown).
fn labels_now(index: &SourceIndex, w: &WriteJob) -> Option<Arc<[i64]>> {
    let d = w.old.iter().find(|d| Some(d.doc_id) == w.in_place)?;
    index.label_sets.get(d.labels).map(Arc::from)
}

/// A label change for a document whose content is current, when its listed labels differ.
pub(super) fn relabel(
    run: &Run,
    b: &Books,
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
            run.plan(b.labels.describe(&what_group(g), &change));
            plan.current = Some(Arc::from(current));
        }
        None if b.labels.pass => plan.current = None,
        None => return,
    }
    jobs.push(Job::Doc(DocOp::Labels {
        doc_id: g.doc_id,
        what: what_group(g),
        plan,
        last_modified: None,
    }));
}

/// An incremental run: each changed indicator goes to the bucket on its path (and out of any
/// other label set's bucket it may have been in); each indicator gone comes out of every bucket
/// that may hold it.
// Routing changes and removals to buckets shares the job map; the two loops stay together.
pub(super) fn plan_incremental(
    run: &Run,
    b: &mut Books,
    index: &SourceIndex,
    recs: &[Rec],
    gone: &[Gone],
) -> Plan {
    let format = run.config.intel_format;
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
                from: HashMap::new(),
                sweep: Vec::new(),
                labels_now: None,
            }
        })
    }
    let mut plan = Plan::default();
    let upserted: HashSet<u128> = recs.iter().map(Rec::identity).collect();
    for (i, r) in recs.iter().enumerate() {
        let mut from = Vec::new();
        for k in layout.covering(r.identity()) {
            if k.labels != r.labels {
                job(&mut jobs, &docs, k).drops.push((r.identity(), None));
                from.extend(docs.get(&k).map(|d| (*d).clone()));
            }
        }
        let to = job(&mut jobs, &docs, layout.route(r.labels, r.identity()));
        if let Recs::Some(v) = &mut to.recs {
            v.push(i);
        }
        if !from.is_empty() {
            to.from.insert(r.identity(), from);
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
    plan.jobs = jobs
        .into_values()
        .map(|mut w| {
            w.labels_now = labels_now(index, &w);
            Job::Write(w)
        })
        .collect();
    // Documents no change fell in keep the job's own labels (Tanium Labels).
    let untouched = index
        .groups
        .iter()
        .filter(|g| !touched.contains(&g.doc_id))
        .map(|g| (g.doc_id, what_group(g), index.label_sets.get(g.labels)));
    plan.jobs.extend(
        top_ups(run, &mut b.labels, untouched)
            .into_iter()
            .map(Job::Doc),
    );
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intel::group::label_set_hash;
    use crate::intel::Format;
    use crate::sync::grouped::pull::{take, Pulled, Spill};
    use crate::sync::grouped::{kept, Books};
    use crate::sync::report::Counts;
    use crate::sync::testkit::{host, Kit};
    use crate::tanium::model::IntelDoc;
    use crate::tc::model::Indicator;
    use serde_json::json;

    fn hosts(ids: std::ops::Range<i64>) -> Vec<Indicator> {
        ids.map(|i| host(i, &format!("h{i}.example"))).collect()
    }

    /// The source holding `inds` in one grouped document of label set `labels`, as `doc_id`.
    fn grouped(index: &mut SourceIndex, doc_id: i64, inds: &[Indicator], labels: &[&str]) {
        let names: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let key = BucketKey::root(label_set_hash(&names));
        let mut members: Vec<_> = inds.iter().map(|i| group::member(i).unwrap()).collect();
        let doc = group::render(Format::Stix, &key, &mut members, "ThreatConnect", &names);
        let listed = IntelDoc {
            id: doc_id,
            source_id: Some(1),
            name: doc.name.clone(),
            intrinsic_id: Some(key.root_id(Format::Stix)),
            kind: Some(doc.type_header().into()),
            ..IntelDoc::default()
        };
        index.add(listed, Format::Stix);
    }

    /// What the pull of `inds` keeps, and the books of the run.
    fn pulled(kit: &Kit, inds: &[Indicator], full: bool) -> (Pulled, Vec<Rec>, Vec<u128>, Books) {
        let run = kit.run(full);
        let mut pulled = Pulled {
            floor: None,
            recs: Vec::new(),
            spill: Spill::open(&kit.config.paths.temp).unwrap(),
            names: HashMap::new(),
            gone: Vec::new(),
        };
        let sel = crate::sync::select::Selection {
            filters: &kit.config.filters,
            format: kit.config.intel_format,
            guard: &kit.config.rails.guard,
            exclusions: None,
            expired_by: None,
            cutoff: None,
        };
        let mut counts = Counts::default();
        for ind in inds {
            take(&run, &mut counts, ind, &sel, &mut pulled).unwrap();
        }
        pulled.spill.seal().unwrap();
        let (recs, desired, _) = kept(&mut pulled, full);
        let books = Books {
            counts,
            labels: kit.book(),
            removal_error: None,
        };
        (pulled, recs, desired, books)
    }

    fn kit() -> Kit {
        Kit::new(
            Vec::new(),
            json!({ "indicators_per_document": "20", "tanium_labels": "ThreatConnect" }),
        )
    }

    #[test]
    fn a_label_change_reads_the_old_documents_and_counts_their_indicators_as_moving() {
        let kit = kit();
        let inds = hosts(1..6);
        let mut index = SourceIndex::default();
        grouped(&mut index, 500, &inds, &["ThreatConnect", "Extra"]);
        let (p, recs, desired, b) = pulled(&kit, &inds, true);
        let members = Kept {
            recs: &recs,
            desired: &desired,
            gone: &p.gone,
            floor: None,
        };
        let run = kit.run(true);
        let plan = plan_full(&run, &b, &mut index, members, &HashMap::new(), (20, true));
        let writes: Vec<&WriteJob> = plan
            .jobs
            .iter()
            .filter_map(|j| match j {
                Job::Write(w) => Some(w),
                _ => None,
            })
            .collect();
        assert_eq!(writes.len(), 2, "the new bucket, and the old document read");
        let old = writes.iter().find(|w| w.in_place == Some(500)).unwrap();
        assert_eq!(old.old.len(), 1);
        assert_eq!(
            old.recs.iter().count(),
            0,
            "none of its indicators stays there"
        );
        let retire: Vec<_> = plan.retire.iter().map(|r| (r.doc_id, &r.cause)).collect();
        assert_eq!(retire, [(500, &Cause::Moved)]);
        assert!(
            plan.retire[0].needs_clean,
            "it goes once the new documents are written"
        );
        assert_eq!((plan.removal_bound, plan.retired_members), (5, 0));
    }

    #[test]
    fn single_documents_go_once_grouped_or_whatever_the_writes_did_when_not_sent() {
        let kit = kit();
        let (sent, gone) = (host(1, "sent.example"), host(2, "gone.example"));
        let mut index = SourceIndex::default();
        for (id, ind) in [(101, &sent), (102, &gone)] {
            let p = crate::intel::render(ind, Format::Stix).unwrap();
            let doc = IntelDoc {
                id,
                source_id: Some(1),
                name: p.name.clone(),
                intrinsic_id: Some(p.identity.to_string()),
                kind: Some(p.type_header().into()),
                ..IntelDoc::default()
            };
            index.add(doc, Format::Stix);
        }
        let (p, recs, desired, b) = pulled(&kit, std::slice::from_ref(&sent), true);
        let members = Kept {
            recs: &recs,
            desired: &desired,
            gone: &p.gone,
            floor: None,
        };
        let run = kit.run(true);
        let plan = plan_full(&run, &b, &mut index, members, &HashMap::new(), (20, true));
        let mut retire: Vec<_> = plan
            .retire
            .iter()
            .map(|r| {
                (
                    r.doc_id,
                    r.cause.key().into_owned(),
                    r.needs_clean,
                    r.members,
                )
            })
            .collect();
        retire.sort();
        assert_eq!(
            retire,
            [
                (101, "Indicators per Intel Document changed".into(), true, 0),
                (102, "not selected any more".into(), false, 1)
            ]
        );
        assert_eq!((plan.removal_bound, plan.retired_members), (1, 1));
    }

    #[test]
    fn an_incremental_change_and_removal_go_to_the_document_that_holds_them() {
        let kit = kit();
        let inds = hosts(1..4);
        let mut index = SourceIndex::default();
        grouped(&mut index, 500, &inds, &["ThreatConnect"]);
        let changed = Indicator {
            confidence: Some(5),
            ..inds[0].clone()
        };
        let (mut p, recs, _, mut b) = pulled(&kit, &[changed], false);
        let id = group::member(&inds[1]).unwrap().identity.as_u128();
        p.gone.push(Gone {
            identity: id,
            what: "Host h2.example (Org)".into(),
            cause: Cause::DeletedInTc,
        });
        let run = kit.run(false);
        let plan = plan_incremental(&run, &mut b, &index, &recs, &p.gone);
        let [Job::Write(w)] = &plan.jobs[..] else {
            panic!("one job for the one document");
        };
        assert_eq!(w.in_place, Some(500));
        assert_eq!(w.recs.iter().count(), 1);
        assert_eq!(w.drops, [(id, Some(0))]);
        assert_eq!(plan.removal_bound, 1);
        assert!(plan.retire.is_empty());
    }
}
