//! A bounded memory of answers per address. Mail traffic repeats its addresses (a handful of
//! relays, the big providers), so most look-ups are answered here instead of walking the
//! database tree and decoding the record again.
//!
//! Two generations approximate least-recently-used eviction without per-entry bookkeeping: new
//! answers go into the young map; when it is full the old map is dropped and the young one takes
//! its place. An address found in the old map is moved to the young one, so what is in use
//! survives and memory never exceeds two generations.

use ahash::AHashMap;
use std::hash::Hash;

/// The two-generation cache.
pub struct TwoGenCache<K, V> {
    young: AHashMap<K, V>,
    old: AHashMap<K, V>,
    per_generation: usize,
}

impl<K: Eq + Hash + Copy, V: Clone> TwoGenCache<K, V> {
    /// A cache holding at most `2 * per_generation` entries; 0 disables it.
    pub fn new(per_generation: usize) -> Self {
        TwoGenCache {
            young: AHashMap::new(),
            old: AHashMap::new(),
            per_generation,
        }
    }

    /// The remembered answer for `key`, if any.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        if self.young.contains_key(key) {
            return self.young.get(key);
        }
        let v = self.old.remove(key)?;
        self.insert(*key, v);
        self.young.get(key)
    }

    /// Remembers an answer.
    pub fn insert(&mut self, key: K, value: V) {
        if self.per_generation == 0 {
            return;
        }
        if self.young.len() >= self.per_generation {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_what_is_used() {
        let mut c = TwoGenCache::new(4);
        for i in 0..100u32 {
            c.insert(i, i * 2);
            // Key 0 is used all the time: it must survive every rotation.
            assert_eq!(c.get(&0).copied(), Some(0));
            assert!(c.len() <= 8);
        }
        assert_eq!(c.get(&99).copied(), Some(198));
        assert_eq!(c.get(&10).copied(), None);
    }

    #[test]
    fn zero_disables() {
        let mut c = TwoGenCache::new(0);
        c.insert(1u8, 1u8);
        assert!(c.is_empty());
        assert_eq!(c.get(&1), None);
    }
}
