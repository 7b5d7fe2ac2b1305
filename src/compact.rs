//! Memory-lean maps and sets for per-document bookkeeping over million-document sources.
//!
//! A `HashMap` holds its entries at a load factor between 7/8 and 7/16 and briefly holds both
//! tables while it grows, so a million 48-byte entries cost 100-200 MB at the wrong moment.
//! [`CompactMap`] keeps entries in a sorted `Vec` (exactly one slot each) and buffers recent
//! inserts in a small `HashMap` that is merged in place once it reaches a fraction of the whole.
//! Lookups are a binary search plus a hash probe; removals are tombstones applied on merge.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Inserts buffered before the first merge.
const MIN_PENDING: usize = 4096;
/// The buffer is merged once it holds more than 1/PENDING_FRACTION of the sorted entries.
const PENDING_FRACTION: usize = 16;

/// A map from small `Copy` keys to `Copy` values with about one slot of memory per entry.
#[derive(Debug, Clone)]
pub struct CompactMap<K, V> {
    sorted: Vec<(K, V)>,
    pending: HashMap<K, V>,
    /// Keys of `sorted` that were removed (applied on the next merge).
    removed: HashSet<K>,
    /// Buffer size below which no merge happens.
    min_pending: usize,
}

impl<K: Ord + Hash + Copy, V: Copy> Default for CompactMap<K, V> {
    fn default() -> Self {
        CompactMap {
            sorted: Vec::new(),
            pending: HashMap::new(),
            removed: HashSet::new(),
            min_pending: MIN_PENDING,
        }
    }
}

impl<K: Ord + Hash + Copy, V: Copy> CompactMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn sorted_pos(&self, key: &K) -> Option<usize> {
        let pos = self.sorted.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        (self.removed.is_empty() || !self.removed.contains(key)).then_some(pos)
    }

    #[cfg(test)]
    fn with_min_pending(min_pending: usize) -> Self {
        CompactMap {
            min_pending,
            ..Self::default()
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.sorted.len() - self.removed.len() + self.pending.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        match self.sorted_pos(key) {
            Some(p) => Some(&self.sorted[p].1),
            None => self.pending.get(key),
        }
    }

    /// The value of `key`, to change in place.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self.sorted_pos(key) {
            Some(p) => Some(&mut self.sorted[p].1),
            None => self.pending.get_mut(key),
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the previous value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Ok(p) = self.sorted.binary_search_by(|(k, _)| k.cmp(&key)) {
            let old = self.sorted[p].1;
            self.sorted[p].1 = value;
            let was_removed = !self.removed.is_empty() && self.removed.remove(&key);
            return (!was_removed).then_some(old);
        }
        let old = self.pending.insert(key, value);
        if self.pending.len() > self.min_pending.max(self.sorted.len() / PENDING_FRACTION) {
            self.merge();
        }
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        if let Some(v) = self.pending.remove(key) {
            return Some(v);
        }
        let p = self.sorted_pos(key)?;
        let v = self.sorted[p].1;
        self.removed.insert(*key);
        if self.removed.len() > self.min_pending.max(self.sorted.len() / PENDING_FRACTION) {
            self.merge();
        }
        Some(v)
    }

    /// Every entry in key order, values changeable in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.merge();
        self.sorted.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Every entry in key order.
    pub fn iter(&mut self) -> impl Iterator<Item = (&K, &V)> {
        self.merge();
        self.sorted.iter().map(|(k, v)| (k, v))
    }

    /// Applies tombstones and merges the insert buffer into the sorted entries, in place.
    fn merge(&mut self) {
        if !self.removed.is_empty() {
            let removed = std::mem::take(&mut self.removed);
            self.sorted.retain(|(k, _)| !removed.contains(k));
        }
        if self.pending.is_empty() {
            return;
        }
        let mut add: Vec<(K, V)> = self.pending.drain().collect();
        self.pending.shrink_to(self.min_pending);
        add.sort_unstable_by_key(|e| e.0);
        let old = self.sorted.len();
        self.sorted.reserve_exact(add.len());
        // Grow by the new entries, then merge from the back so nothing is overwritten unread.
        self.sorted.extend_from_slice(&add);
        let (mut i, mut j, mut k) = (old, add.len(), old + add.len());
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1].0 > add[j - 1].0 {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = add[j - 1];
                j -= 1;
            }
        }
    }
}

/// A set of document / indicator ids at about 8 bytes an id.
#[derive(Debug, Clone, Default)]
pub struct IdSet(CompactMap<i64, ()>);

impl IdSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `id`; true when it was not there yet.
    pub fn insert(&mut self, id: i64) -> bool {
        self.0.insert(id, ()).is_none()
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &i64) -> bool {
        self.0.contains_key(id)
    }

    /// Removes `id`; true when it was there.
    pub fn remove(&mut self, id: &i64) -> bool {
        self.0.remove(id).is_some()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Mutate(u16, u32),
        Iterate,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            30 => (0u16..2000, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            10 => (0u16..2000).prop_map(Op::Remove),
            10 => (0u16..2000, any::<u32>()).prop_map(|(k, v)| Op::Mutate(k, v)),
            1 => Just(Op::Iterate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 0..2_000)) {
            let mut m: CompactMap<u16, u32> = CompactMap::with_min_pending(8);
            let mut model: HashMap<u16, u32> = HashMap::new();
            for o in ops {
                match o {
                    Op::Insert(k, v) => prop_assert_eq!(m.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(m.remove(&k), model.remove(&k)),
                    Op::Mutate(k, v) => {
                        let a = m.get_mut(&k).map(|x| { *x ^= v; *x });
                        let b = model.get_mut(&k).map(|x| { *x ^= v; *x });
                        prop_assert_eq!(a, b);
                    }
                    Op::Iterate => {
                        let got: Vec<(u16, u32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
                        let mut want: Vec<(u16, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                        want.sort_unstable();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(m.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(m.get(k), Some(v));
            }
        }
    }

    #[test]
    fn merges_keep_order_and_memory_is_one_slot_per_entry() {
        let mut m: CompactMap<u128, u64> = CompactMap::new();
        let n = 100_000u64;
        for i in 0..n {
            // scattered keys
            let k = (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            assert_eq!(m.insert(k, i), None);
        }
        assert_eq!(m.len(), n as usize);
        let keys: Vec<u128> = m.iter().map(|(k, _)| *k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(m.pending.len(), 0);
        assert!(
            m.sorted.capacity() < n as usize * 5 / 4,
            "{}",
            m.sorted.capacity()
        );
        for (i, k) in keys.iter().enumerate().step_by(997) {
            assert!(m.get(k).is_some(), "{i}");
        }
    }

    #[test]
    fn id_set_inserts_once_and_removes() {
        let mut s = IdSet::new();
        for i in (0..50_000).rev() {
            assert!(s.insert(i * 3));
        }
        assert!(!s.insert(300));
        assert!(s.contains(&300) && !s.contains(&301));
        assert!(s.remove(&300) && !s.remove(&300) && !s.contains(&300));
        assert!(s.insert(300));
        assert_eq!(s.len(), 50_000);
        assert!(!s.is_empty());
    }
}
