//! The bucket layout of a grouped source: per label set, a prefix trie over identity hashes
//! whose leaves are the documents. Pure.
//!
//! An indicator's bucket follows from its identity and label set alone: the leaf on its path,
//! or, where no document covers it, the first node on its path below which the source has no
//! document (a gap: a new document is made there). The layout is recovered from the listing
//! (each document's name says its bucket), so nothing is kept between runs.
//!
//! Rules: a bucket over the size splits into its two halves by the next identity bit, again
//! until each half fits (an empty half makes no document); a bucket that empties goes. Two
//! sibling buckets (or a bucket and an empty sibling) that together hold at most half the size
//! merge into their parent; merges need every member of both, so only a full reconcile makes
//! them. Either way only the documents of the buckets concerned are written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;

use crate::intel::group::{BucketKey, MAX_DEPTH};

/// The leaves of one label set's trie and the nodes above them.
#[derive(Debug, Default, Clone)]
struct Trie {
    leaves: HashSet<(u8, u64)>,
    inner: HashSet<(u8, u64)>,
}

impl Trie {
    fn add(&mut self, k: &BucketKey) {
        self.leaves.insert((k.depth, k.bits));
        let mut p = k.parent();
        while let Some(q) = p {
            if !self.inner.insert((q.depth, q.bits)) {
                break;
            }
            p = q.parent();
        }
    }
}

/// Every label set's trie, as the listing shows it.
#[derive(Debug, Default, Clone)]
pub(in crate::sync) struct Layout {
    tries: BTreeMap<u32, Trie>,
}

impl Layout {
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a BucketKey>) -> Layout {
        let mut l = Layout::default();
        for k in keys {
            l.tries.entry(k.labels).or_default().add(k);
        }
        l
    }

    /// Whether a document's bucket lies inside another's (a split or merge that stopped
    /// between its create and its delete): the same indicator may then be in two documents.
    pub fn overlaps(&self) -> bool {
        self.tries
            .values()
            .any(|t| t.leaves.iter().any(|l| t.inner.contains(l)))
    }

    /// The bucket an indicator of label set `labels` belongs in.
    pub fn route(&self, labels: u32, identity: u128) -> BucketKey {
        let Some(t) = self.tries.get(&labels) else {
            return BucketKey::root(labels);
        };
        for depth in 0..=MAX_DEPTH {
            let k = BucketKey::on_path(labels, identity, depth);
            if t.leaves.contains(&(k.depth, k.bits)) || !t.inner.contains(&(k.depth, k.bits)) {
                return k;
            }
        }
        BucketKey::on_path(labels, identity, MAX_DEPTH)
    }

    /// Every document's bucket that covers `identity`, in any label set: where an indicator
    /// whose labels are not known may be.
    pub fn covering(&self, identity: u128) -> Vec<BucketKey> {
        let mut out = Vec::new();
        for (labels, t) in &self.tries {
            for depth in 0..=MAX_DEPTH {
                let k = BucketKey::on_path(*labels, identity, depth);
                if t.leaves.contains(&(k.depth, k.bits)) {
                    out.push(k);
                }
                if !t.inner.contains(&(k.depth, k.bits)) {
                    break;
                }
            }
        }
        out
    }
}

/// Sorted identities, however they are kept (a million records need no copy of their own).
pub(super) trait Ids {
    fn count(&self) -> usize;
    fn at(&self, i: usize) -> u128;
}

impl Ids for [u128] {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> u128 {
        self[i]
    }
}

impl Ids for Vec<u128> {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> u128 {
        self[i]
    }
}

/// The first position whose identity is not below `x`.
fn lower_bound<I: Ids + ?Sized>(ids: &I, x: u128) -> usize {
    let (mut lo, mut hi) = (0, ids.count());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if ids.at(mid) < x {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The identities of `ids` (sorted) that fall in `k`.
pub(super) fn range<I: Ids + ?Sized>(ids: &I, k: &BucketKey) -> Range<usize> {
    let shift = 128 - u32::from(k.depth);
    let start: u128 = if k.depth == 0 {
        0
    } else {
        u128::from(k.bits) << shift
    };
    let lo = lower_bound(ids, start);
    let hi = if k.depth == 0 {
        ids.count()
    } else {
        let end = start.checked_add(1u128 << shift);
        end.map_or(ids.count(), |e| lower_bound(ids, e))
    };
    lo..hi
}

/// `k` split until every part holds at most `size` of `ids` (sorted); parts that would be
/// empty are left out.
pub(super) fn split<I: Ids + ?Sized>(k: BucketKey, ids: &I, size: u64) -> Vec<BucketKey> {
    let n = range(ids, &k).len() as u64;
    if n == 0 {
        return Vec::new();
    }
    if n <= size || k.depth >= MAX_DEPTH {
        return vec![k];
    }
    k.children()
        .into_iter()
        .flat_map(|c| split(c, ids, size))
        .collect()
}

/// The parts of `k` that no key of `leaves` reaches, largest first.
pub(super) fn uncovered(k: BucketKey, leaves: &[BucketKey]) -> Vec<BucketKey> {
    if leaves.iter().any(|l| l.contains(&k)) {
        return Vec::new();
    }
    if !leaves.iter().any(|l| k.contains(l)) {
        return vec![k];
    }
    k.children()
        .into_iter()
        .flat_map(|c| uncovered(c, leaves))
        .collect()
}

/// A full reconcile's layout of one label set: its documents' buckets `old` and the
/// identities it must hold (`ids`, sorted and distinct) -> the buckets its documents hold now.
/// Unsettled (removals held back), old buckets stay as they are: their held members are not in
/// `ids`, so a merge now would be undone by a split once they go.
pub(super) fn rebalance<I: Ids + ?Sized>(
    labels: u32,
    old: &[BucketKey],
    ids: &I,
    size: u64,
    settle: bool,
) -> Vec<BucketKey> {
    // Where documents overlap, the outer one stands (the run's writes settle the rest).
    let outer: Vec<BucketKey> = old
        .iter()
        .filter(|k| !old.iter().any(|o| o != *k && o.contains(k)))
        .copied()
        .collect();
    let layout = Layout::from_keys(&outer);
    let mut buckets: BTreeSet<BucketKey> = outer.iter().copied().collect();
    let mut i = 0;
    while i < ids.count() {
        let k = layout.route(labels, ids.at(i));
        let r = range(ids, &k);
        buckets.insert(k);
        i = r.end.max(i + 1);
    }
    if !settle {
        return buckets.into_iter().collect();
    }
    let mut leaves: BTreeMap<BucketKey, u64> = BTreeMap::new();
    for k in buckets {
        for part in split(k, ids, size) {
            leaves.insert(part, range(ids, &part).len() as u64);
        }
    }
    merge(&mut leaves, size);
    leaves.into_keys().collect()
}

/// Merges sibling leaves (or a leaf and an empty sibling) that together hold at most half the
/// size into their parent, deepest first, until none do.
fn merge(leaves: &mut BTreeMap<BucketKey, u64>, size: u64) {
    loop {
        let inner: HashSet<BucketKey> = leaves
            .keys()
            .flat_map(|k| std::iter::successors(k.parent(), |p| p.parent()))
            .collect();
        let mut by_depth: Vec<BucketKey> = leaves.keys().copied().collect();
        by_depth.sort_by_key(|k| std::cmp::Reverse(k.depth));
        let mut merged = false;
        for k in by_depth {
            let (Some(n), Some(parent)) = (leaves.get(&k).copied(), k.parent()) else {
                continue;
            };
            let [a, b] = parent.children();
            let sibling = if a == k { b } else { a };
            if inner.contains(&sibling) {
                continue;
            }
            let m = leaves.get(&sibling).copied().unwrap_or(0);
            if n + m <= size / 2 {
                leaves.remove(&k);
                leaves.remove(&sibling);
                leaves.insert(parent, n + m);
                merged = true;
                break;
            }
        }
        if !merged {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn uncovered_is_what_no_leaf_reaches() {
        let k = |depth: u8, bits: u64| BucketKey {
            labels: 9,
            depth,
            bits,
        };
        assert_eq!(uncovered(k(1, 1), &[k(1, 1)]), vec![]);
        assert_eq!(uncovered(k(2, 2), &[k(1, 1)]), vec![]);
        assert_eq!(uncovered(k(1, 0), &[k(1, 1)]), vec![k(1, 0)]);
        // A bucket split in two with one half now empty: the other half is left.
        assert_eq!(uncovered(k(1, 1), &[k(2, 2)]), vec![k(2, 3)]);
        assert_eq!(
            uncovered(k(0, 0), &[k(2, 1), k(3, 6)]),
            vec![k(2, 0), k(2, 2), k(3, 7)]
        );
    }

    fn key(depth: u8, bits: u64) -> BucketKey {
        BucketKey {
            labels: 9,
            depth,
            bits,
        }
    }

    /// An identity whose leading bits are `bits` (of `depth`), the rest from `tail`.
    fn id(depth: u8, bits: u64, tail: u128) -> u128 {
        if depth == 0 {
            return tail;
        }
        (u128::from(bits) << (128 - u32::from(depth))) | (tail >> depth)
    }

    #[test]
    fn routing_finds_the_leaf_or_the_gap_on_the_path() {
        let l = Layout::from_keys(&[key(1, 0), key(2, 0b10)]);
        assert_eq!(l.route(9, id(1, 0, 77)), key(1, 0));
        assert_eq!(l.route(9, id(2, 0b10, 77)), key(2, 0b10));
        assert_eq!(l.route(9, id(2, 0b11, 77)), key(2, 0b11), "a gap");
        assert_eq!(l.route(5, id(2, 0b11, 77)), BucketKey::root(5));
        assert!(!l.overlaps());
        assert!(Layout::from_keys(&[key(1, 0), key(2, 0b01)]).overlaps());
        assert_eq!(
            Layout::from_keys(&[key(1, 0), key(2, 0b01), BucketKey::root(3)])
                .covering(id(2, 0b01, 5)),
            vec![BucketKey::root(3), key(1, 0), key(2, 0b01)]
        );
    }

    #[test]
    fn ranges_and_splits_follow_the_bits() {
        let ids: Vec<u128> = vec![id(2, 0, 1), id(2, 0, 2), id(2, 1, 3), id(2, 3, 4)];
        assert_eq!(range(&ids, &BucketKey::root(9)), 0..4);
        assert_eq!(range(&ids, &key(1, 0)), 0..3);
        assert_eq!(range(&ids, &key(2, 2)), 3..3);
        assert_eq!(
            split(BucketKey::root(9), &ids, 2),
            vec![key(2, 0), key(2, 1), key(1, 1)]
        );
        assert!(split(key(2, 2), &ids, 2).is_empty());
    }

    #[test]
    fn siblings_under_half_merge_and_empty_buckets_go() {
        let ids: Vec<u128> = vec![id(2, 0, 1), id(2, 1, 3)];
        // Size 4: the two quarters hold 1 + 1 <= 2, then the half and its empty sibling.
        assert_eq!(
            rebalance(9, &[key(2, 0), key(2, 1), key(1, 1)], &ids, 4, true),
            vec![BucketKey::root(9)]
        );
        // Size 3: 1 + 1 > 1: nothing merges; the empty half goes.
        assert_eq!(
            rebalance(9, &[key(2, 0), key(2, 1), key(1, 1)], &ids, 3, true),
            vec![key(2, 0), key(2, 1)]
        );
    }

    /// (bucket, its members) for every document a layout makes.
    fn docs(layout: &[BucketKey], ids: &[u128]) -> BTreeMap<BucketKey, Vec<u128>> {
        layout
            .iter()
            .map(|k| (*k, ids[range(ids, k)].to_vec()))
            .collect()
    }

    proptest! {
        /// Random adds, removes and modifications (a modified indicator is one whose
        /// document must change: it counts as changed, its identity stays). After each run
        /// every identity is in exactly one bucket, no bucket is over the size, a rerun
        /// changes nothing, and the documents written or removed are those holding a changed
        /// identity, or split from or merged into one.
        #[test]
        fn only_the_buckets_concerned_change(
            size in 2u64..12,
            start in prop::collection::btree_set(any::<u128>(), 0..120),
            steps in prop::collection::vec(
                (prop::collection::vec(any::<u128>(), 0..15), prop::collection::vec(any::<prop::sample::Index>(), 0..15), prop::collection::vec(any::<prop::sample::Index>(), 0..5)),
                1..6),
        ) {
            let mut ids: BTreeSet<u128> = start;
            let mut layout = rebalance(9, &[], &ids.iter().copied().collect::<Vec<_>>(), size, true);
            for (adds, removes, modifies) in steps {
                let before: Vec<u128> = ids.iter().copied().collect();
                let mut changed: BTreeSet<u128> = BTreeSet::new();
                for ix in removes {
                    if !before.is_empty() {
                        let x = before[ix.index(before.len())];
                        ids.remove(&x);
                        changed.insert(x);
                    }
                }
                for ix in modifies {
                    if !before.is_empty() {
                        changed.insert(before[ix.index(before.len())]);
                    }
                }
                for x in adds {
                    ids.insert(x);
                    changed.insert(x);
                }
                let now: Vec<u128> = ids.iter().copied().collect();
                let next = rebalance(9, &layout, &now, size, true);
                // Exactly one bucket each, none over the size.
                for x in &now {
                    prop_assert_eq!(next.iter().filter(|k| k.covers(*x)).count(), 1);
                }
                for k in &next {
                    let n = range(&now, k).len() as u64;
                    prop_assert!(n >= 1 && (n <= size || k.depth == MAX_DEPTH));
                }
                prop_assert_eq!(&rebalance(9, &next, &now, size, true), &next, "a rerun changes nothing");
                // What changed is confined to the buckets concerned.
                let (old_docs, new_docs) = (docs(&layout, &before), docs(&next, &now));
                let near = |k: &BucketKey, other: &[BucketKey]| {
                    let related: Vec<&BucketKey> = other.iter()
                        .filter(|o| o.contains(k) || k.contains(o)).collect();
                    changed.iter().any(|x| k.covers(*x) || related.iter().any(|o| o.covers(*x)))
                };
                for (k, members) in &new_docs {
                    if old_docs.get(k) != Some(members) {
                        prop_assert!(near(k, &layout), "{k} written with no change near it");
                    }
                }
                for k in old_docs.keys() {
                    if !new_docs.contains_key(k) {
                        prop_assert!(near(k, &next), "{k} removed with no change near it");
                    }
                }
                layout = next;
            }
        }
    }
}
