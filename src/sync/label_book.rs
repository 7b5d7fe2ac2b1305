//! The run's side of labels: the label sets the listing shows (interned, so a million
//! documents cost no more memory), the run's book of Tanium labels (names to ids, made when
//! missing, which are the job's), and the difference a document's labels need. The rules
//! themselves (which labels a document earns) are in [`crate::label_rules`]; each layout
//! decides per document, the driver writes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::label_rules::{key, LabelRules, Managed};
use crate::tanium::client::TaniumClient;
use crate::tanium::label_api::{find, LABEL_DESCRIPTION};
use crate::tanium::Label;
use crate::tc::model::Indicator;

/// The listing did not say which labels a document has.
pub(super) const UNKNOWN: u32 = u32::MAX;

/// Distinct label-id sets (sorted), each kept once.
#[derive(Default)]
pub(super) struct LabelSets {
    sets: Vec<Arc<[i64]>>,
    index: HashMap<Arc<[i64]>, u32>,
}

impl LabelSets {
    pub fn intern(&mut self, ids: Option<Vec<i64>>) -> u32 {
        let Some(mut ids) = ids else {
            return UNKNOWN;
        };
        ids.sort_unstable();
        ids.dedup();
        let ids: Arc<[i64]> = ids.into();
        if let Some(i) = self.index.get(&ids) {
            return *i;
        }
        let i = self.sets.len() as u32;
        self.sets.push(ids.clone());
        self.index.insert(ids, i);
        i
    }

    pub fn get(&self, i: u32) -> Option<&[i64]> {
        self.sets.get(i as usize).map(|s| &s[..])
    }
}

/// What a document's labels need: `add` what it lacks, `remove` what the job manages and no
/// longer gives it; labels the job does not manage stay.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    pub add: Vec<i64>,
    pub remove: Vec<i64>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// All three sorted.
pub(super) fn diff(desired: &[i64], current: &[i64], managed: &[i64]) -> Change {
    let has = |set: &[i64], id: &i64| set.binary_search(id).is_ok();
    Change {
        add: desired
            .iter()
            .filter(|id| !has(current, id))
            .copied()
            .collect(),
        remove: current
            .iter()
            .filter(|id| has(managed, id) && !has(desired, id))
            .copied()
            .collect(),
    }
}

/// What a worker needs to bring one document's labels to the rules.
#[derive(Debug, Clone)]
pub(super) struct LabelPlan {
    pub desired: Arc<[i64]>,
    pub managed: Arc<[i64]>,
    /// What the listing showed (None: it does not say; the worker reads the labels first).
    pub current: Option<Arc<[i64]>>,
}

impl LabelPlan {
    /// The change, given what the document holds now.
    pub fn change(&self, current: &[i64]) -> Change {
        let mut current = current.to_vec();
        current.sort_unstable();
        current.dedup();
        diff(&self.desired, &current, &self.managed)
    }
}

/// Brings one document's labels to `plan` (`answered`: its labels as a write's answer showed
/// them); whether anything changed.
pub(super) fn bring(
    tanium: &TaniumClient,
    doc_id: i64,
    plan: &LabelPlan,
    answered: Option<Vec<i64>>,
) -> crate::error::Result<bool> {
    let current = match answered.or_else(|| plan.current.as_ref().map(|c| c.to_vec())) {
        Some(c) => c,
        None => tanium.doc_label_ids(doc_id)?,
    };
    let change = plan.change(&current);
    for id in &change.add {
        tanium.add_doc_label(doc_id, *id)?;
    }
    for id in &change.remove {
        tanium.remove_doc_label(doc_id, *id)?;
    }
    Ok(!change.is_empty())
}

/// The run's view of Tanium's labels.
pub(super) struct LabelBook {
    rules: LabelRules,
    managed_names: Managed,
    labels: Vec<Label>,
    /// Ids of labels whose names the job manages, sorted.
    managed: Arc<[i64]>,
    /// Desired id sets by the rule names they came from, so indicators with the same labels
    /// share one.
    desired: HashMap<Vec<String>, Arc<[i64]>>,
    dry_run: bool,
    /// Names Tanium refused to make this run, asked for once only.
    refused: HashSet<String>,
    /// Ids a dry run gives the labels it would make (negative: never sent).
    next_placeholder: i64,
    /// Off: no label work this run (no rules and none before, or the labels cannot be read).
    pub active: bool,
    /// Every document met must have its labels looked at, read from Tanium where the listing
    /// does not show them (the label rules changed, or labels were not settled last time).
    pub pass: bool,
    /// Why labels could not be read or made: the next run looks at every document's labels.
    pub error: Option<String>,
    /// The Disabled Intel Label (by key), never the rules' even when made as theirs.
    spared: Option<String>,
}

impl LabelBook {
    /// Reads Tanium's labels unless the job has none to manage.
    pub fn open(
        tanium: &TaniumClient,
        rules: &LabelRules,
        managed_names: Managed,
        spared: Option<&str>,
        pass: bool,
        dry_run: bool,
    ) -> LabelBook {
        let mut book = LabelBook {
            rules: rules.clone(),
            managed_names,
            labels: Vec::new(),
            managed: Arc::from(Vec::new()),
            desired: HashMap::new(),
            dry_run,
            refused: HashSet::new(),
            next_placeholder: -1,
            active: false,
            pass,
            error: None,
            spared: spared.map(key),
        };
        if rules.is_empty() && !pass {
            return book;
        }
        match tanium.list_labels() {
            Ok(labels) => {
                book.labels = labels;
                book.refresh_managed();
                book.active = true;
                log::info!(
                    "Tanium labels: {} listed, {} of them the job's{}",
                    book.labels.len(),
                    book.managed.len(),
                    if pass {
                        "; every document's labels are looked at this run"
                    } else {
                        ""
                    }
                );
            }
            Err(e) => {
                let msg = format!("could not read the Tanium labels (no label changed): {e}");
                log::error!("{msg}");
                book.error = Some(msg);
            }
        }
        book
    }

    /// The job's labels: those its rules give or gave (as results.tc carries them), and those
    /// it made, known by their description, so that a run killed before its results.tc was
    /// written leaves the next run no label it does not know as its own.
    fn refresh_managed(&mut self) {
        let mut ids: Vec<i64> = self
            .labels
            .iter()
            .filter(|l| {
                self.managed_names.manages(&l.name)
                    || (l.description.trim() == LABEL_DESCRIPTION
                        && self.spared.as_deref() != Some(key(&l.name).as_str()))
            })
            .map(|l| l.id)
            .collect();
        ids.sort_unstable();
        self.managed = ids.into();
    }

    pub fn managed(&self) -> Arc<[i64]> {
        self.managed.clone()
    }

    pub fn name(&self, id: i64) -> String {
        self.labels
            .iter()
            .find(|l| l.id == id)
            .map_or_else(|| format!("label {id}"), |l| l.name.clone())
    }

    /// A label change in the plan's words.
    pub fn describe(&self, what: &str, change: &Change) -> String {
        let mut parts = Vec::new();
        if !change.add.is_empty() {
            parts.push(format!("add {}", self.names(&change.add)));
        }
        if !change.remove.is_empty() {
            parts.push(format!("remove {}", self.names(&change.remove)));
        }
        format!("labels {what}: {}", parts.join("; "))
    }

    pub fn names(&self, ids: &[i64]) -> String {
        ids.iter()
            .map(|id| self.name(*id))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The ids of the labels `ind`'s document must carry; None when labels are off this run.
    pub fn desired(&mut self, tanium: &TaniumClient, ind: &Indicator) -> Option<Arc<[i64]>> {
        if !self.active {
            return None;
        }
        let names = self.rules.for_indicator(ind);
        Some(self.ids_of(tanium, names))
    }

    /// The ids of the labels named `names` (a grouped document's label set); None when labels
    /// are off this run.
    pub fn ids_for(&mut self, tanium: &TaniumClient, names: &[String]) -> Option<Arc<[i64]>> {
        self.active.then(|| self.ids_of(tanium, names.to_vec()))
    }

    /// The ids of the job's own labels (Tanium Labels), for documents the pull did not meet.
    pub fn fixed(&mut self, tanium: &TaniumClient) -> Option<Arc<[i64]>> {
        if !self.active || self.rules.fixed.is_empty() {
            return None;
        }
        let names = self.rules.fixed.clone();
        Some(self.ids_of(tanium, names))
    }

    fn ids_of(&mut self, tanium: &TaniumClient, names: Vec<String>) -> Arc<[i64]> {
        if let Some(ids) = self.desired.get(&names) {
            return ids.clone();
        }
        let mut ids: Vec<i64> = names.iter().filter_map(|n| self.id(tanium, n)).collect();
        ids.sort_unstable();
        ids.dedup();
        let ids: Arc<[i64]> = ids.into();
        self.desired.insert(names, ids.clone());
        ids
    }

    /// The id of the label named `name`, made when missing (a dry run says it would be);
    /// None when it cannot be made.
    fn id(&mut self, tanium: &TaniumClient, name: &str) -> Option<i64> {
        if let Some(l) = find(&self.labels, name) {
            return Some(l.id);
        }
        if self.refused.contains(&key(name)) {
            return None;
        }
        let made = if self.dry_run {
            println!("new label {name}: not in Tanium yet");
            log::info!("plan: new label {name}: not in Tanium yet");
            let id = self.next_placeholder;
            self.next_placeholder -= 1;
            Label {
                id,
                name: name.to_string(),
                description: LABEL_DESCRIPTION.to_string(),
            }
        } else {
            match tanium.create_label(name) {
                Ok(l) => l,
                Err(e) => {
                    self.refused.insert(key(name));
                    let msg = format!("could not create the Tanium label {name:?}: {e}");
                    log::error!("{msg}");
                    self.error.get_or_insert(msg);
                    return None;
                }
            }
        };
        let id = made.id;
        self.labels.push(made);
        self.refresh_managed();
        Some(id)
    }
}

/// Documents the pull did not meet keep the job's own labels (Tanium Labels): one taken off by
/// hand comes back. Their other labels follow the indicators, which the run did not read; the
/// next full reconcile looks at them. `docs`: each document, what the plan calls it, and its
/// labels as listed (None: the listing does not say; left for a label pass). The label plan of
/// each document that lacks one of them.
pub(super) fn fixed_top_up<'x>(
    book: &mut LabelBook,
    tanium: &TaniumClient,
    docs: impl Iterator<Item = (i64, String, Option<&'x [i64]>)>,
) -> Vec<(i64, String, LabelPlan)> {
    let Some(fixed) = book.fixed(tanium) else {
        return Vec::new();
    };
    let managed = book.managed();
    docs.filter_map(|(doc_id, what, current)| {
        let current = current?;
        if fixed.iter().all(|id| current.binary_search(id).is_ok()) {
            return None;
        }
        let mut desired: Vec<i64> = current.iter().chain(fixed.iter()).copied().collect();
        desired.sort_unstable();
        desired.dedup();
        let plan = LabelPlan {
            desired: desired.into(),
            managed: managed.clone(),
            current: Some(Arc::from(current)),
        };
        Some((doc_id, what, plan))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_adds_what_is_missing_and_removes_only_managed_labels_no_longer_given() {
        // 1, 2 the job's; 7 added by hand; 3 the job's but no longer given.
        let c = diff(&[1, 2, 4], &[1, 3, 7], &[1, 2, 3, 4]);
        assert_eq!(
            c,
            Change {
                add: vec![2, 4],
                remove: vec![3]
            }
        );
        assert!(diff(&[1, 2], &[1, 2, 9], &[1, 2]).is_empty());
        assert_eq!(diff(&[], &[1, 9], &[1]).remove, vec![1]);
        let plan = LabelPlan {
            desired: Arc::from(vec![5]),
            managed: Arc::from(vec![5, 6]),
            current: None,
        };
        assert_eq!(
            plan.change(&[6, 6, 2]),
            Change {
                add: vec![5],
                remove: vec![6]
            }
        );
    }

    #[test]
    fn label_sets_are_kept_once_and_unknown_is_not_empty() {
        let mut sets = LabelSets::default();
        let a = sets.intern(Some(vec![3, 1, 3]));
        let b = sets.intern(Some(vec![1, 3]));
        let empty = sets.intern(Some(vec![]));
        assert_eq!(a, b);
        assert_ne!(a, empty);
        assert_eq!(sets.get(a), Some(&[1, 3][..]));
        assert_eq!(sets.get(empty), Some(&[][..]));
        assert_eq!(sets.intern(None), UNKNOWN);
        assert_eq!(sets.get(UNKNOWN), None);
    }
}
