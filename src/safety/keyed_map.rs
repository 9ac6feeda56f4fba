//! A map from string keys to shared per-key state, searched by `&str` without allocating.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

/// Sweeps start once a map holds this many keys.
const FIRST_SWEEP_AT: usize = 1024;

pub(crate) struct KeyedMap<V> {
    map: RwLock<HashMap<Box<str>, Arc<V>>>,
    /// Sweep idle entries when an insert brings the map to this size.
    sweep_at: AtomicUsize,
}

impl<V> KeyedMap<V> {
    pub(crate) fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            sweep_at: AtomicUsize::new(FIRST_SWEEP_AT),
        }
    }

    /// The entry for `key`, if there is one.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<V>> {
        self.map.read().get(key).cloned()
    }

    /// The entry for `key`, made by `make` if there is none. When the insert grows the map
    /// past its sweep mark, entries for which `keep` says false are removed first (memory
    /// stays bounded by the keys in use, not by every key ever seen).
    #[inline]
    pub(crate) fn get_or_insert_with(
        &self,
        key: &str,
        make: impl FnOnce(&str) -> V,
        keep: impl Fn(&Arc<V>) -> bool,
    ) -> Arc<V> {
        if let Some(v) = self.map.read().get(key) {
            return Arc::clone(v);
        }
        self.insert_slow(key, make, keep)
    }

    #[cold]
    fn insert_slow(
        &self,
        key: &str,
        make: impl FnOnce(&str) -> V,
        keep: impl Fn(&Arc<V>) -> bool,
    ) -> Arc<V> {
        let mut map = self.map.write();
        if let Some(v) = map.get(key) {
            return Arc::clone(v);
        }
        if map.len() + 1 >= self.sweep_at.load(Ordering::Relaxed) {
            map.retain(|_, v| keep(v));
            map.shrink_to_fit();
            let next = (map.len() * 2).max(FIRST_SWEEP_AT);
            self.sweep_at.store(next, Ordering::Relaxed);
        }
        let value = Arc::new(make(key));
        map.insert(key.into(), Arc::clone(&value));
        value
    }

    /// Keep only the entries for which `keep` says true.
    pub(crate) fn retain(&self, keep: impl Fn(&Arc<V>) -> bool) {
        self.map.write().retain(|_, v| keep(v));
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> Vec<Arc<V>> {
        self.map.read().values().cloned().collect()
    }

    /// How many keys are held.
    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_str_and_sweeps_idle_entries() {
        let map: KeyedMap<u32> = KeyedMap::new();
        let a = map.get_or_insert_with("a", |_| 1, |_| true);
        assert_eq!(*a, 1);
        assert_eq!(*map.get_or_insert_with("a", |_| 2, |_| true), 1);
        assert!(map.get("b").is_none());
        // Fill to the sweep mark; entries held only by the map are swept.
        for i in 0..FIRST_SWEEP_AT {
            let _ = map.get_or_insert_with(&format!("k{i}"), |_| 0, |v| Arc::strong_count(v) > 1);
        }
        assert!(map.len() < FIRST_SWEEP_AT);
        assert!(map.get("a").is_some(), "an entry still in use is kept");
        map.retain(|_| false);
        assert_eq!(map.len(), 0);
    }
}
